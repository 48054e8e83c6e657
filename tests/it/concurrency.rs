//! Concurrent writers never lose rows: 8 ingests of disjoint cohorts at once, through the
//! service and through `ward ingest` processes on one store, end with curated tables that
//! hold exactly the union: the same hashes as one ingest of everything. Materializations
//! racing with ingests never leave a timeline head older than the curated heads.
//!
//! `WARD_CONCURRENCY_TRIALS=50 cargo test --test it concurrency` runs the full count (the
//! suite runs 2 trials of each).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::common::proto::{self, ingest_client::IngestClient, ingest_upload_request::Part};
use tokio::sync::oneshot;
use ward::clock::ManualClock;
use ward::curated::Table;
use ward::features::FeatureRepo;
use ward::ingest::pipeline::{self, Format, IngestOptions};
use ward::ingest::Context;
use ward::service::{ServeConfig, Server};
use ward::store::{Store, VersionRef};
use ward::synth::{SynthFormat, SynthOptions};

const WRITERS: usize = 8;

fn trials() -> usize {
    std::env::var("WARD_CONCURRENCY_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap()))
}

/// A cohort of `WRITERS` disjoint parts: HL7 v2 files of 12 patients each (one file per
/// chunk, so no patient spans two files).
fn cohort(dir: &Path) -> Vec<PathBuf> {
    let opts = SynthOptions {
        patients: (WRITERS * 12) as u64,
        seed: 7,
        chunk_size: 12,
        ..SynthOptions::default()
    };
    let summary = ward::synth::write(&opts, SynthFormat::Hl7v2, &dir.join("cohort"), None).unwrap();
    assert_eq!(summary.files.len(), WRITERS);
    summary.files
}

fn hl7_options() -> IngestOptions {
    IngestOptions {
        format: Format::Hl7v2,
        mapping: None,
        mapping_text: None,
        max_bad: None,
        context: Context::new("2026-06-01T00:00:00Z".parse().unwrap()),
        read: Default::default(),
    }
}

/// The head of every curated table (and quarantine) of a store.
fn heads(store: &Store) -> BTreeMap<String, String> {
    Table::ALL
        .iter()
        .map(|t| t.name().to_string())
        .chain(["quarantine".to_string()])
        .filter_map(|name| {
            store
                .resolve(&VersionRef::Latest(name.clone()))
                .ok()
                .map(|m| (name, m.hash.to_string()))
        })
        .collect()
}

/// The curated heads after one ingest of every file.
async fn one_ingest_of_everything(dir: &Path, files: &[PathBuf]) -> BTreeMap<String, String> {
    let store = Store::open(dir.join("reference"), clock()).unwrap();
    pipeline::ingest(&store, files, &hl7_options(), None)
        .await
        .unwrap();
    let h = heads(&store);
    assert!(h.len() >= 3, "the cohort fills several tables: {h:?}");
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_service_ingests_keep_the_union() {
    let dir = tempfile::tempdir().unwrap();
    let files = cohort(dir.path());
    let want = one_ingest_of_everything(dir.path(), &files).await;
    let repo = FeatureRepo::parse(ward::demo::READMISSION_FEATURES, "readmission.toml").unwrap();
    for trial in 0..trials() {
        let store = Store::open(dir.path().join(format!("served-{trial}")), clock()).unwrap();
        let cfg = ServeConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..ServeConfig::default()
        };
        let server = Server::bind(&cfg, store.clone(), repo.clone())
            .await
            .unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        let uploads = files.iter().map(|f| {
            let bytes = std::fs::read(f).unwrap();
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            async move {
                let mut c = IngestClient::connect(format!("http://{addr}")).await?;
                let msgs = vec![
                    proto::IngestUploadRequest {
                        part: Some(Part::Header(proto::UploadHeader {
                            options: Some(proto::IngestOptions {
                                format: "hl7v2".into(),
                                ..Default::default()
                            }),
                            file_name: name,
                        })),
                    },
                    proto::IngestUploadRequest {
                        part: Some(Part::Chunk(bytes)),
                    },
                ];
                c.ingest_upload(futures::stream::iter(msgs))
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| -> Box<dyn std::error::Error + Send + Sync> { Box::new(s) })
            }
        });
        let results = futures::future::join_all(uploads).await;
        for r in results {
            r.unwrap();
        }
        assert_eq!(heads(&store), want, "trial {trial}: rows lost or added");
        let _ = stop.send(());
        served.await.unwrap().unwrap();
    }
}

#[test]
fn concurrent_cli_ingests_keep_the_union() {
    let dir = tempfile::tempdir().unwrap();
    let files = cohort(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let want = rt.block_on(one_ingest_of_everything(dir.path(), &files));
    let bin = env!("CARGO_BIN_EXE_ward");
    for trial in 0..trials() {
        let store_dir = dir.path().join(format!("cli-{trial}"));
        let init = Command::new(bin)
            .arg("--store")
            .arg(&store_dir)
            .arg("init")
            .output()
            .unwrap();
        assert!(init.status.success(), "{init:?}");
        let children: Vec<_> = files
            .iter()
            .map(|f| {
                Command::new(bin)
                    .arg("--store")
                    .arg(&store_dir)
                    .args(["ingest", "--format", "hl7v2"])
                    .arg(f)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "trial {trial}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let store = Store::open_existing(&store_dir, ward::clock::system()).unwrap();
        assert_eq!(heads(&store), want, "trial {trial}: rows lost or added");
    }
}

/// `--no-retry` turns a lost race into a clear failure instead of a merge onto the new
/// head: with 8 writers racing (on a store none of them created first, so concurrent first
/// opens are exercised too), every run either succeeds or fails naming the moved head, and
/// at least one fails so.
#[test]
fn no_retry_fails_clearly_on_a_moved_head() {
    let dir = tempfile::tempdir().unwrap();
    let files = cohort(dir.path());
    let bin = env!("CARGO_BIN_EXE_ward");
    let mut conflicts = 0;
    for trial in 0..trials().max(3) {
        let store_dir = dir.path().join(format!("no-retry-{trial}"));
        let children: Vec<_> = files
            .iter()
            .map(|f| {
                Command::new(bin)
                    .arg("--store")
                    .arg(&store_dir)
                    .args(["ingest", "--no-retry", "--format", "hl7v2"])
                    .arg(f)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("the head moved while this write was built on it"),
                    "{err}"
                );
                conflicts += 1;
            }
        }
        if conflicts > 0 {
            break;
        }
    }
    assert!(conflicts > 0, "8 racing writers never conflicted");
}

/// Ingests and materializations racing: after all of them finish, the timeline head was made
/// from the curated heads (a materialization that read older curated versions never
/// replaces a newer timeline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materializations_racing_ingests_leave_a_current_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let files = cohort(dir.path());
    let repo = FeatureRepo::parse(ward::demo::READMISSION_FEATURES, "readmission.toml").unwrap();
    for trial in 0..trials() {
        let store = Store::open(dir.path().join(format!("mat-{trial}")), clock()).unwrap();
        let tasks = files.iter().cloned().map(|f| {
            let store = store.clone();
            let repo = repo.clone();
            tokio::spawn(async move {
                pipeline::ingest(&store, &[f], &hl7_options(), None)
                    .await
                    .unwrap();
                ward::features::materialize(
                    &store,
                    &repo,
                    "readmission_online",
                    &Default::default(),
                )
                .await
                .unwrap()
            })
        });
        for t in futures::future::join_all(tasks).await {
            t.unwrap();
        }
        let head = store
            .resolve(&VersionRef::Latest(ward::features::timeline_name(
                "readmission_online",
            )))
            .unwrap();
        let current: Vec<_> = head
            .lineage
            .inputs
            .iter()
            .map(|h| {
                let m = store.manifest(h).unwrap();
                let latest = store.resolve(&VersionRef::Latest(m.name.clone())).unwrap();
                (m.name, *h == latest.hash)
            })
            .collect();
        assert!(
            current.iter().all(|(_, c)| *c),
            "trial {trial}: the timeline head read stale curated versions: {current:?}"
        );
    }
}

/// The threads of a `ward serve` process that compute heavy requests (the job runtime,
/// rayon's pool, Lance's CPU pool) run at a lower priority than the request workers, so an
/// online lookup is scheduled ahead of an ingest on a busy machine (issue 30; the effect is
/// measured by `cargo bench --bench online_under_ingest`).
#[cfg(target_os = "linux")]
#[test]
fn ward_serve_computes_jobs_below_the_request_workers() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("serve.toml");
    std::fs::write(
        &cfg,
        "addr = \"127.0.0.1:0\"\nstore = \"store\"\nfeatures = []\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("ward serve printed `listening on`")
            .unwrap();
        if line.starts_with("listening on ") {
            break;
        }
    }
    // name -> nice values of the process's threads (/proc/PID/task/TID/stat: the command
    // name in parentheses, then the nice value as the 17th field after it). A thread is named
    // when it starts and lowers itself just after, so on a busy machine look again until
    // every pool has appeared and its threads are lowered (or 20 s have passed: then the
    // asserts below say what was seen).
    let listing = || {
        let mut threads: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap() {
            let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
                continue; // a thread that just ended
            };
            let (head, rest) = stat.rsplit_once(')').unwrap();
            let name = head.split_once('(').unwrap().1.to_string();
            let nice: i32 = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
            threads.entry(name).or_default().push(nice);
        }
        threads
    };
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let threads = loop {
        let threads = listing();
        let all = ["ward-job", "ward-rayon", "lance-cpu", "tokio-r"]
            .iter()
            .all(|p| threads.keys().any(|n| n.starts_with(p)));
        let lowered = threads
            .iter()
            .filter(|(n, _)| {
                ["ward-job", "ward-rayon", "lance-cpu"]
                    .iter()
                    .any(|p| n.starts_with(p))
            })
            .all(|(_, nices)| nices.iter().all(|&v| v >= 10));
        if (all && lowered) || std::time::Instant::now() > give_up {
            break threads;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let ours = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let ours: i32 = ours
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap();
    let of = |prefix: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .flat_map(|(_, n)| n.clone())
            .collect()
    };
    for pool in ["ward-job", "ward-rayon", "lance-cpu"] {
        let nices = of(pool);
        assert!(!nices.is_empty(), "no {pool} thread in {threads:?}");
        assert!(
            nices.iter().all(|&n| n >= 10.max(ours)),
            "{pool} threads at normal priority: {threads:?}"
        );
    }
    let workers = of("tokio-r");
    assert!(!workers.is_empty(), "no request worker in {threads:?}");
    assert!(
        workers.iter().all(|&n| n == ours),
        "request workers lowered: {threads:?}"
    );
}
