//! Online lookups while the same server ingests (issue 30, "blocking work on the async
//! runtime"): a `ward serve` child at its default settings, 8 clients sending
//! `GetOnlineFeatures` (one random patient x 20 features of `readmission`), measured idle and
//! then while another client uploads an HL7 v2 cohort through `IngestUpload` over and over
//! (each upload a full ingest: parse, merge onto the curated heads, write, hash). Reports
//! p50, p99 and lookups/s of both phases and the ratio of the p99s; the target is <= 2x.
//!
//! `cargo bench --bench online_under_ingest -- [PATIENTS [SECONDS [INGEST_PATIENTS [ROUNDS]]]]`
//! (defaults 2,000 patients in the timeline, 5 s per phase, 2,000 patients per upload, 3
//! rounds; idle and loaded phases alternate, and the medians are reported).
//! `WARD_BENCH_SERVER_THREADS=N` starts the server with `threads = N` instead of the default.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::grpc_common::proto::features_client::FeaturesClient;
use crate::grpc_common::proto::ingest_client::IngestClient;
use crate::grpc_common::proto::{self, ingest_upload_request::Part, OnlineRequest};
use rand::{Rng, SeedableRng};

mod grpc_common;

use grpc_common::{arg, drive, pct, readmission, start_ward, H2Channel, Run};

const CLIENTS: usize = 8;

fn main() {
    let patients = arg(1, 2_000);
    let secs = arg(2, 5);
    let ingest_patients = arg(3, 2_000);
    let rounds = arg(4, 3).max(1) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(patients, secs, ingest_patients, rounds));
}

async fn lookups(
    addr: std::net::SocketAddr,
    ids: Arc<Vec<String>>,
    feats: Arc<Vec<String>>,
    secs: u64,
    seed: usize,
) -> Run {
    drive(CLIENTS, secs, move |c| {
        let (ids, feats) = (ids.clone(), feats.clone());
        async move {
            let channel = H2Channel::connect(addr).await.expect("connect");
            let mut client = FeaturesClient::with_origin(channel, H2Channel::origin(addr));
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64((seed * 1000 + c) as u64);
            let mut lat = Vec::new();
            let mut errors = 0;
            let warm = Instant::now() + Duration::from_secs(1);
            let end = warm + Duration::from_secs(secs);
            while Instant::now() < end {
                let req = OnlineRequest {
                    feature_set: "readmission".into(),
                    patient_ids: vec![ids[rng.random_range(0..ids.len())].clone()],
                    as_of: String::new(),
                    features: feats.to_vec(),
                };
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

async fn run(patients: u64, secs: u64, ingest_patients: u64, rounds: usize) {
    let r = readmission("ward-online-ingest-bench", patients).await;
    let config = r.dir.path().join("serve.toml");
    let threads = std::env::var("WARD_BENCH_SERVER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map(|n| format!("threads = {n}\n"))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "{threads}features = [{:?}]\n[limits]\nmax_decoding_message_bytes = 1073741824\nrequest_timeout_secs = 600\n",
            r.repo_path.display().to_string()
        ),
    )
    .expect("config");
    // The upload: an HL7 v2 cohort of other patients (ids are P0000000 upwards in both, so
    // the ingest merges onto the curated tables the timeline was made from).
    let hl7_dir = r.dir.path().join("hl7");
    let synth = ward::synth::SynthOptions {
        patients: ingest_patients,
        seed: 99,
        chunk_size: ingest_patients as usize,
        ..Default::default()
    };
    let files = ward::synth::write(&synth, ward::synth::SynthFormat::Hl7v2, &hl7_dir, None)
        .expect("synth")
        .files;
    let upload = Arc::new(std::fs::read(&files[0]).expect("hl7 file"));
    eprintln!(
        "upload: {} patients of HL7 v2, {} bytes",
        ingest_patients,
        upload.len()
    );
    let (_ward, addr) = start_ward(&r.store_dir, &config);
    let ids = Arc::new(r.ids.clone());
    let feats = Arc::new(r.features.clone());

    let mut idle_runs = Vec::new();
    let mut loaded_runs = Vec::new();
    let mut ingests_done = Vec::new();
    for round in 0..rounds {
        let idle = lookups(addr, ids.clone(), feats.clone(), secs, round * 2).await;
        eprintln!("round {round} idle:   {}", idle.row("ward"));
        idle_runs.push(idle);

        // Uploads back to back until the lookups are done.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ingester = {
            let (stop, upload) = (stop.clone(), upload.clone());
            tokio::spawn(async move {
                let mut c = IngestClient::connect(format!("http://{addr}"))
                    .await
                    .expect("connect")
                    .max_decoding_message_size(1 << 30)
                    .max_encoding_message_size(1 << 30);
                let mut done = 0usize;
                let mut times = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let msgs = vec![
                        proto::IngestUploadRequest {
                            part: Some(Part::Header(proto::UploadHeader {
                                options: Some(proto::IngestOptions {
                                    format: "hl7v2".into(),
                                    ..Default::default()
                                }),
                                // The same name each time: the same rows, so every upload
                                // does the same work (a full merge that ends deduplicated).
                                file_name: "adt.hl7".into(),
                            })),
                        },
                        proto::IngestUploadRequest {
                            part: Some(Part::Chunk(upload.to_vec())),
                        },
                    ];
                    let s = Instant::now();
                    c.ingest_upload(futures::stream::iter(msgs))
                        .await
                        .expect("ingest upload");
                    times.push(s.elapsed());
                    done += 1;
                }
                (done, times)
            })
        };
        // Let the first ingest get going before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loaded = lookups(addr, ids.clone(), feats.clone(), secs, round * 2 + 1).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (done, times) = ingester.await.expect("ingester");
        eprintln!(
            "round {round} ingest: {}  ({done} uploads, each {:.2} s median)",
            loaded.row("ward"),
            median_secs(times)
        );
        loaded_runs.push(loaded);
        ingests_done.push(done);
    }
    let med = |runs: &[Run], f: &dyn Fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let p50 = |r: &Run| pct(&r.lat, 0.5);
    let p99 = |r: &Run| pct(&r.lat, 0.99);
    let rate = |r: &Run| r.lat.len() as f64 / r.secs;
    let (idle99, loaded99) = (med(&idle_runs, &p99), med(&loaded_runs, &p99));
    println!("| phase | clients | p50 us | p99 us | lookups/s |");
    println!("|---|---|---|---|---|");
    println!(
        "| idle | {CLIENTS} | {:.0} | {idle99:.0} | {:.0} |",
        med(&idle_runs, &p50),
        med(&idle_runs, &rate)
    );
    println!(
        "| during ingest | {CLIENTS} | {:.0} | {loaded99:.0} | {:.0} |",
        med(&loaded_runs, &p50),
        med(&loaded_runs, &rate)
    );
    println!(
        "p99 during ingest / idle: {:.2}x (medians of {rounds} rounds; uploads completed per round: {ingests_done:?})",
        loaded99 / idle99
    );
}

fn median_secs(mut t: Vec<Duration>) -> f64 {
    if t.is_empty() {
        return f64::NAN;
    }
    t.sort_unstable();
    t[t.len() / 2].as_secs_f64()
}
