//! Stateless replicas (issue 35, `docs/deploy.md`), over loopback, in one run:
//!
//! 1. throughput and latency: 8 clients (a Rust load generator, tonic stubs over bare HTTP/2
//!    connections, as `benches/serve.rs`) send `GetOnlineFeatures` for one random patient x
//!    20 features of the `readmission` set, each its next request when the last returned,
//!    with client-side round robin over 1 replica, then over 3 (`ward serve` child processes
//!    over one store): p50, p99, lookups/s. On a 2-core machine the three replicas and the
//!    load generator share the same two cores, so this shows what replication costs, not how
//!    it scales;
//! 2. a replica killed mid-run: the same load over 3 replicas, and halfway through one
//!    replica is killed with SIGKILL. A request that fails is retried against the next
//!    replica (the client ejects the replica that failed, as a client-side balancer does);
//!    counted: requests sent, answered at the first try, answered after a retry, lost (no
//!    replica answered). Then the replica is restarted over the same store (time until it
//!    listens) and must answer as the others;
//! 3. the pick-up delay: a new timeline of the set is published into the store by this
//!    process (as a `ward materialize` would), and each of the 3 replicas is asked (every
//!    2 ms) until it answers from it; the delay runs from the head's move (`head.at`) to the
//!    first answer from the new timeline. Median and max over PUBLISHES publishes x 3
//!    replicas, with the replicas' `[reload] timelines_secs` (the default, 2 s, unless
//!    `WARD_BENCH_REFRESH_SECS` says otherwise).
//!
//! `cargo bench --bench replicas -- [PATIENTS [SECONDS [PUBLISHES]]]` (defaults 2,000, 5, 5).
//! `WARD_BENCH_CLIENT_THREADS` sets the load generator's worker threads (default 1);
//! `WARD_BENCH_ROUNDS` how many times part 1 alternates 1 and 3 replicas (default 3).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::grpc_common::proto::features_client::FeaturesClient;
use crate::grpc_common::proto::OnlineRequest;

mod grpc_common;

use grpc_common::{arg, drive, pct, readmission, start_ward, H2Channel, Proc};

/// Concurrent clients.
const CLIENTS: usize = 8;
const SET: &str = "readmission";

type Client = FeaturesClient<H2Channel>;

fn main() {
    let patients = arg(1, 2_000);
    let secs = arg(2, 5);
    let publishes = arg(3, 5) as usize;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(
        std::env::var("WARD_BENCH_CLIENT_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    );
    let rt = rt.enable_all().build().expect("runtime");
    rt.block_on(run(patients, secs, publishes));
}

async fn connect(addr: SocketAddr) -> Client {
    let channel = H2Channel::connect(addr).await.expect("connect");
    FeaturesClient::with_origin(channel, H2Channel::origin(addr))
}

fn request(ids: &[String], feats: &[String], rng: &mut impl Rng) -> OnlineRequest {
    OnlineRequest {
        feature_set: SET.into(),
        patient_ids: vec![ids[rng.random_range(0..ids.len())].clone()],
        as_of: String::new(),
        features: feats.to_vec(),
    }
}

async fn run(patients: u64, secs: u64, publishes: usize) {
    let r = readmission("ward-replicas-bench", patients).await;
    let refresh: f64 = std::env::var("WARD_BENCH_REFRESH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let config = r.dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "features = [{:?}]\n[reload]\ntimelines_secs = {refresh}\n",
            r.repo_path.display().to_string()
        ),
    )
    .expect("config");
    let mut replicas: Vec<(Proc, SocketAddr)> =
        (0..3).map(|_| start_ward(&r.store_dir, &config)).collect();
    let addrs: Vec<SocketAddr> = replicas.iter().map(|(_, a)| *a).collect();
    eprintln!(
        "3 replicas over {}: {addrs:?}; timeline {}",
        r.store_dir.display(),
        r.timeline
    );
    let ids = Arc::new(r.ids.clone());
    let feats = Arc::new(r.features.clone());
    // Load the set in every replica (it is not declared online: loaded on first use).
    for a in &addrs {
        let mut c = connect(*a).await;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        c.get_online_features(request(&ids, &feats, &mut rng))
            .await
            .expect("first lookup");
    }

    // 1. 1 replica vs 3, alternating, so a slow minute on this shared machine falls on both.
    let rounds = std::env::var("WARD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize)
        .max(1);
    let mut rows = Vec::new();
    for round in 1..=rounds {
        for n in [1usize, 3] {
            let run = load(
                Arc::new(addrs[..n].to_vec()),
                ids.clone(),
                feats.clone(),
                secs,
                round as u64,
            )
            .await;
            let row = run.row(&format!("{n} replica{}", if n == 1 { "" } else { "s" }));
            eprintln!("round {round}: {row}");
            rows.push(row);
        }
    }
    println!("\n## Replicas: client-side round robin, {CLIENTS} clients, {secs} s per run");
    println!(
        "(on a 2-core machine the replicas and the load generator share the same cores: this shows the overhead of replication, not its scaling)\n"
    );
    println!("| replicas | clients | p50 µs | p99 µs | lookups/s | errors |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for row in &rows {
        println!("{row}");
    }

    // 2. A replica killed mid-run.
    let (victim, _) = replicas.remove(1);
    let k = kill_run(addrs.clone(), 1, victim, ids.clone(), feats.clone(), secs).await;
    println!("\n## A replica killed (SIGKILL) halfway through a {secs} s run over 3 replicas\n");
    println!(
        "| sent | answered at once | answered after a retry | lost | p50 µs | p99 µs | max µs |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} |",
        k.sent,
        k.first,
        k.retried,
        k.lost,
        pct(&k.lat, 0.5),
        pct(&k.lat, 0.99),
        pct(&k.lat, 1.0)
    );
    println!(
        "{}",
        if k.lost == 0 {
            "every request was answered (a retry against the next replica recovered each failure)"
        } else {
            "REQUESTS LOST: no replica answered them"
        }
    );
    let started = Instant::now();
    let (proc, addr) = start_ward(&r.store_dir, &config);
    let restart = started.elapsed();
    replicas.insert(1, (proc, addr));
    let addrs: Vec<SocketAddr> = replicas.iter().map(|(_, a)| *a).collect();
    let probe = OnlineRequest {
        feature_set: SET.into(),
        patient_ids: ids.iter().take(50).cloned().collect(),
        as_of: "2031-01-01T00:00:00Z".into(),
        features: feats.to_vec(),
    };
    let mut answers = Vec::new();
    for a in &addrs {
        let mut c = connect(*a).await;
        answers.push(
            c.get_online_features(probe.clone())
                .await
                .expect("lookup")
                .into_inner(),
        );
    }
    let same = answers.windows(2).all(|w| w[0] == w[1]);
    println!(
        "restarted over the same store: listening after {:.2} s; answers as the others: {same}",
        restart.as_secs_f64()
    );

    // 3. Pick-up delay of a new timeline.
    let mut delays = Vec::new();
    for i in 0..publishes {
        let seed = 100 + i as u64;
        put_cohort(&r.store, patients, seed).await;
        let repo = ward::features::FeatureRepo::parse(
            &std::fs::read_to_string(&r.repo_path).expect("repo"),
            "readmission.toml",
        )
        .expect("repo");
        let out = ward::features::materialize_latest(
            &r.store,
            &repo,
            SET,
            &ward::features::MaterializeOptions::default(),
            false,
        )
        .await
        .expect("materialize");
        let head = r
            .store
            .head(&ward::features::timeline_name(SET))
            .expect("head")
            .expect("a head");
        assert_eq!(head.hash, out.hash);
        let want = out.hash.to_string();
        let waits: Vec<_> = addrs
            .iter()
            .map(|a| {
                let (a, want, ids, feats) = (*a, want.clone(), ids.clone(), feats.clone());
                tokio::spawn(async move {
                    let mut c = connect(a).await;
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                    let give_up = Instant::now() + Duration::from_secs(120);
                    loop {
                        let r = c
                            .get_online_features(request(&ids, &feats, &mut rng))
                            .await
                            .expect("lookup")
                            .into_inner();
                        if r.timeline == want {
                            return (chrono::Utc::now() - head.at).to_std().unwrap_or_default();
                        }
                        assert!(Instant::now() < give_up, "{a} never served {want}");
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        let mut these = Vec::new();
        for w in waits {
            these.push(w.await.expect("waiter"));
        }
        eprintln!("publish {}: {want} picked up after {these:?}", i + 1);
        delays.extend(these);
    }
    delays.sort_unstable();
    println!(
        "\n## Pick-up delay of a new timeline ([reload] timelines_secs = {refresh}; {publishes} publishes x 3 replicas)\n"
    );
    println!("| publishes | replicas | median ms | max ms |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| {publishes} | 3 | {:.0} | {:.0} |",
        pct(&delays, 0.5) / 1000.0,
        pct(&delays, 1.0) / 1000.0
    );
    drop(replicas);
}

/// `CLIENTS` clients for `secs` s (after a 1 s warm-up), each sending its requests to the
/// replicas of `addrs` in turn.
async fn load(
    addrs: Arc<Vec<SocketAddr>>,
    ids: Arc<Vec<String>>,
    feats: Arc<Vec<String>>,
    secs: u64,
    round: u64,
) -> grpc_common::Run {
    drive(CLIENTS, secs, move |c| {
        let (addrs, ids, feats) = (addrs.clone(), ids.clone(), feats.clone());
        async move {
            let mut clients = Vec::new();
            for a in addrs.iter() {
                clients.push(connect(*a).await);
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(round * 1000 + c as u64);
            let (mut lat, mut errors) = (Vec::new(), 0);
            // Clients start at different replicas.
            let mut next = c;
            let warm = Instant::now() + Duration::from_secs(1);
            let end = warm + Duration::from_secs(secs);
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let req = request(&ids, &feats, &mut rng);
                let n = clients.len();
                let client = &mut clients[next % n];
                next += 1;
                let s = Instant::now();
                let ok = client.get_online_features(req).await.is_ok();
                if s >= warm {
                    lat.push(s.elapsed());
                    errors += usize::from(!ok);
                }
            }
            (lat, errors)
        }
    })
    .await
}

/// What the run with a killed replica counted.
struct Killed {
    sent: usize,
    first: usize,
    retried: usize,
    lost: usize,
    /// Every answered request's latency, retries included, sorted.
    lat: Vec<Duration>,
}

/// The load of [`load`] over `addrs` for `secs` s; halfway through `victim` (serving
/// `addrs[victim_at]`) is killed. A failed request is retried against the next replica the
/// client has not ejected; a replica that failed a request is ejected by that client.
async fn kill_run(
    addrs: Vec<SocketAddr>,
    victim_at: usize,
    victim: Proc,
    ids: Arc<Vec<String>>,
    feats: Arc<Vec<String>>,
    secs: u64,
) -> Killed {
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, first, retried, lost) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let addrs = Arc::new(addrs);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (addrs, ids, feats, stop) = (addrs.clone(), ids.clone(), feats.clone(), stop.clone());
        let (sent, first, retried, lost) =
            (sent.clone(), first.clone(), retried.clone(), lost.clone());
        tasks.push(tokio::spawn(async move {
            let mut clients = Vec::new();
            for a in addrs.iter() {
                clients.push(connect(*a).await);
            }
            let mut up = vec![true; clients.len()];
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7000 + c as u64);
            let mut next = c;
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let req = request(&ids, &feats, &mut rng);
                sent.fetch_add(1, Ordering::Relaxed);
                let s = Instant::now();
                let n = clients.len();
                let mut tries = 0;
                let mut answered = false;
                for k in 0..n {
                    let i = (next + k) % n;
                    if !up[i] {
                        continue;
                    }
                    tries += 1;
                    match clients[i].get_online_features(req.clone()).await {
                        Ok(_) => {
                            answered = true;
                            break;
                        }
                        Err(e) => {
                            eprintln!(
                                "client {c}: replica {} failed ({}); ejected, retrying on the next",
                                addrs[i],
                                e.code()
                            );
                            up[i] = false;
                        }
                    }
                }
                next += 1;
                if answered {
                    lat.push(s.elapsed());
                    if tries == 1 { &first } else { &retried }.fetch_add(1, Ordering::Relaxed);
                } else {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs) / 2).await;
    eprintln!("killing replica {} (SIGKILL)", addrs[victim_at]);
    drop(victim);
    tokio::time::sleep(Duration::from_secs(secs) / 2).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client"));
    }
    lat.sort_unstable();
    Killed {
        sent: sent.load(Ordering::Relaxed),
        first: first.load(Ordering::Relaxed),
        retried: retried.load(Ordering::Relaxed),
        lost: lost.load(Ordering::Relaxed),
        lat,
    }
}

/// A synthetic cohort of `patients` (seed `seed`) as the curated tables' new heads.
async fn put_cohort(store: &ward::store::Store, patients: u64, seed: u64) {
    use ward::store::{Kind, PutOptions};
    let tables = ward::synth::generate_cohort(&ward::synth::SynthOptions {
        patients,
        seed,
        ..ward::synth::SynthOptions::default()
    });
    for t in ward::curated::Table::ALL {
        let b = tables.to_batch(t).expect("batch");
        store
            .put_batches(
                b.schema(),
                vec![b],
                PutOptions::new(t.name(), Kind::Curated),
            )
            .await
            .expect("put");
    }
}
