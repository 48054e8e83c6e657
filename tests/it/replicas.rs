//! Stateless replicas (issue 35, `docs/deploy.md`): several `ward serve` child processes over
//! one store directory answer the same; a timeline a CLI `ward materialize` publishes into the
//! store is served by every replica within `[reload] timelines_secs` (plus the time to load
//! it), hot-swapped under a storm of lookups that sees no error; a replica killed (-9) and
//! restarted needs nothing but the store; the replicas share one valid audit trail.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::common::proto::{features_client::FeaturesClient, OnlineRequest, OnlineResponse};
use ward::demo::READMISSION_FEATURES;
use ward::store::Store;
use ward::synth::{generate_cohort, SynthOptions};

/// The refresh interval the replicas run with (`[reload] timelines_secs`).
const INTERVAL: Duration = Duration::from_millis(500);
/// What the pick-up delay may exceed the interval by: loading the new timeline (a few
/// milliseconds for this cohort) on a debug build, on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(5);
const SET: &str = "readmission_online";
const PATIENTS: u64 = 30;
/// A fixed time, so answers of different calls compare equal.
const AS_OF: &str = "2031-01-01T00:00:00Z";

/// A store with a cohort, its `readmission_online` timeline, and a serve configuration.
struct Fixture {
    _dir: tempfile::TempDir,
    store_dir: PathBuf,
    store: Store,
    repo: PathBuf,
    config: PathBuf,
    ids: Vec<String>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let store = Store::open(&store_dir, ward::clock::system()).expect("store");
    let ids = put_cohort(&store, 1).await;
    let repo = dir.path().join("readmission.toml");
    std::fs::write(&repo, READMISSION_FEATURES).expect("repo");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "features = [{:?}]\n[reload]\ntimelines_secs = {}\n",
            repo.display().to_string(),
            INTERVAL.as_secs_f64()
        ),
    )
    .expect("config");
    let f = Fixture {
        _dir: dir,
        store_dir,
        store,
        repo,
        config,
        ids,
    };
    f.materialize();
    f
}

/// Stores a synthetic cohort (seed `seed`) as the curated tables' new heads; its ids.
async fn put_cohort(store: &Store, seed: u64) -> Vec<String> {
    let tables = generate_cohort(&SynthOptions {
        patients: PATIENTS,
        seed,
        ..SynthOptions::default()
    });
    crate::common::put_curated(store, &tables).await;
    tables
        .patients
        .iter()
        .map(|p| p.patient_id.clone())
        .collect()
}

impl Fixture {
    /// `ward materialize` of the online set, as an operator would run it: its hash.
    fn materialize(&self) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
            .arg("--store")
            .arg(&self.store_dir)
            .args(["materialize", "--set", SET, "--features"])
            .arg(&self.repo)
            .output()
            .expect("ward materialize");
        assert!(
            out.status.success(),
            "ward materialize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(hash.starts_with("b3:"), "printed {hash:?}");
        hash
    }

    /// A replica: `ward serve --config` over the store; killed when dropped.
    fn replica(&self) -> Replica {
        let (child, addr) = crate::common::spawn_ward_serve(
            &self.store_dir,
            &["--config".as_ref(), self.config.as_os_str()],
            "listening on ",
        );
        Replica { child, addr }
    }

    fn request(&self) -> OnlineRequest {
        OnlineRequest {
            feature_set: SET.into(),
            patient_ids: self.ids.clone(),
            as_of: AS_OF.into(),
            features: vec![],
        }
    }
}

struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Replica {
    async fn client(&self) -> FeaturesClient<Channel> {
        FeaturesClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn lookup(c: &mut FeaturesClient<Channel>, req: &OnlineRequest) -> OnlineResponse {
    c.get_online_features(req.clone())
        .await
        .expect("online lookup")
        .into_inner()
}

/// Waits until every client answers from `timeline`; the time each first did, measured from
/// when the timeline's head moved in the store (`head.at`, the store's clock: the system's).
async fn pick_up(
    f: &Fixture,
    clients: &mut [FeaturesClient<Channel>],
    timeline: &str,
) -> Vec<Duration> {
    let name = ward::features::timeline_name(SET);
    let head = f.store.head(&name).expect("head").expect("a head");
    assert_eq!(head.hash.to_string(), timeline);
    let req = f.request();
    let give_up = Instant::now() + INTERVAL + SLACK + Duration::from_secs(30);
    let mut delays = Vec::new();
    for c in clients.iter_mut() {
        loop {
            if lookup(c, &req).await.timeline == timeline {
                let d = (chrono::Utc::now() - head.at).to_std().unwrap_or_default();
                delays.push(d);
                break;
            }
            assert!(
                Instant::now() < give_up,
                "a replica still serves the old timeline long after {timeline} was published"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    delays
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_answer_the_same_and_pick_up_a_cli_materialize_within_the_bound() {
    let f = fixture().await;
    let first = f
        .store
        .head(&ward::features::timeline_name(SET))
        .expect("head")
        .expect("a head")
        .hash
        .to_string();
    let (a, b) = (f.replica(), f.replica());
    let mut clients = vec![a.client().await, b.client().await];
    let req = f.request();
    let (ra, rb) = (
        lookup(&mut clients[0], &req).await,
        lookup(&mut clients[1], &req).await,
    );
    assert_eq!(ra.timeline, first);
    assert_eq!(ra, rb, "two replicas over one store answer the same");

    // New data, and a timeline published by the command line, not by either server.
    put_cohort(&f.store, 2).await;
    let second = f.materialize();
    assert_ne!(second, first);
    let delays = pick_up(&f, &mut clients, &second).await;
    eprintln!("pick-up delays after `ward materialize`: {delays:?} (interval {INTERVAL:?})");
    for d in &delays {
        assert!(
            *d <= INTERVAL + SLACK,
            "picked up after {d:?}: more than the interval {INTERVAL:?} + {SLACK:?}"
        );
    }
    let (ra2, rb2) = (
        lookup(&mut clients[0], &req).await,
        lookup(&mut clients[1], &req).await,
    );
    assert_eq!(ra2, rb2, "the replicas answer the same after the swap");
    assert_ne!(
        ra2.patients, ra.patients,
        "the new cohort's values are served"
    );
    // The same answer the library gives from the store.
    let online = ward::lookup::Online::new(f.store.clone());
    let at = chrono::DateTime::parse_from_rfc3339(AS_OF)
        .expect("time")
        .with_timezone(&chrono::Utc);
    let lib = online
        .get(SET, &f.ids, &[], Some(at))
        .await
        .expect("lookup");
    assert_eq!(lib.timeline.to_string(), second);

    // A replica killed with -9 and restarted needs nothing but the store.
    let mut a = a;
    a.child.kill().expect("kill -9");
    a.child.wait().expect("reaped");
    drop(a);
    let a = f.replica();
    let mut restarted = a.client().await;
    assert_eq!(
        lookup(&mut restarted, &req).await,
        rb2,
        "a restarted replica answers as the others"
    );
    drop((a, b, clients, restarted));

    // Both replicas (and the restarted one) wrote one audit trail: the chain holds, and
    // each replica recorded its swap.
    let audit = f.store_dir.join("audit");
    let report = ward::security::audit::verify(&audit).expect("verify");
    assert!(report.ok(), "the shared audit trail verifies: {report:?}");
    let swaps = audit_lines(&audit, "store:refresh");
    assert_eq!(swaps.len(), 2, "one swap audited per replica: {swaps:?}");
    assert!(swaps.iter().all(|l| l.contains(&second)), "{swaps:?}");
}

/// The audit trail's lines (system records included) naming `rpc`.
fn audit_lines(dir: &Path, rpc: &str) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("audit dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let needle = format!("\"rpc\":\"{rpc}\"");
    files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("read")
                .lines()
                .filter(|l| l.contains(&needle))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_storm_during_the_swaps_sees_no_error() {
    let f = fixture().await;
    let (a, b) = (f.replica(), f.replica());
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut storm = Vec::new();
    for r in [&a, &b] {
        for _ in 0..3 {
            let mut c = r.client().await;
            let req = f.request();
            let (stop, answered, failed, seen) =
                (stop.clone(), answered.clone(), failed.clone(), seen.clone());
            storm.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match c.get_online_features(req.clone()).await {
                        Ok(r) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            let t = r.into_inner().timeline;
                            seen.lock().expect("lock").insert(t);
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("lookup failed during the swap: {e}");
                        }
                    }
                }
            }));
        }
    }
    // Three publishes, each picked up by both replicas under the storm.
    let mut clients = vec![a.client().await, b.client().await];
    let mut published = Vec::new();
    for seed in [2, 3, 4] {
        put_cohort(&f.store, seed).await;
        let t = f.materialize();
        let delays = pick_up(&f, &mut clients, &t).await;
        eprintln!("seed {seed}: {t} picked up after {delays:?}");
        published.push(t);
    }
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        t.await.expect("storm task");
    }
    let (answered, failed) = (
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    eprintln!("storm: {answered} lookups answered, {failed} failed");
    assert_eq!(failed, 0, "no lookup fails during a swap");
    assert!(answered > 0);
    let seen = seen.lock().expect("lock").clone();
    for t in &published {
        assert!(seen.contains(t), "the storm saw {t} served: {seen:?}");
    }
}
