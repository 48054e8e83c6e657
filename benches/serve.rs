//! Service benchmarks (issue 7), over loopback, in one run:
//!
//! 1. online: a Rust load generator (tonic clients, one HTTP/2 connection each) sends
//!    `GetOnlineFeatures` for one random patient x 20 features of the `readmission` set (labels
//!    excluded) to a `ward serve` child process, with 1, 8 and 32 concurrent clients, each
//!    sending its next request when the last one returned: p50, p99, lookups/s;
//! 2. the same request pattern against Feast 0.67's Python feature server (`feast serve`,
//!    SQLite online store; benches/feast_online.py) holding the same 20 values per patient
//!    (Ward's own answers at "now"), over its HTTP API with keep-alive connections;
//! 3. a historical lookup of ENTITY_ROWS rows over gRPC (entity rows as Arrow IPC, training
//!    set streamed back) and an Arrow Flight DoGet of the resulting training set: rows/s and
//!    MB/s.
//! 4. that training set into pandas with the Python client over Flight
//!    (`Client.dataset(hash).to_pandas()`) against `pq.read_table` of the same rows from a
//!    local Parquet file (`benches/flight_pandas.py`, `WARD_BENCH_PANDAS_PYTHON`, default
//!    `python3` with pyarrow, pandas and `pip install ./python`).
//!
//! `cargo bench --bench serve -- [PATIENTS [SECONDS [ENTITY_ROWS]]]` (defaults 2,000, 5,
//! 1,000,000). `WARD_BENCH_FEAST_PYTHON` names a Python with Feast 0.67 (default the peers'
//! venv, /tmp/ward-peers/venv/bin/python: `../shared/peers/run_bench.sh` makes it); without
//! it part 2 is skipped with a message. `WARD_BENCH_CLIENT_THREADS` sets the load generator's
//! worker threads (default 1); it shares the cores with the server, so on 2 cores one thread
//! leaves the server the other (BENCHMARKS.md has runs with 1 and 2). Part 1 runs against a
//! server with its default worker threads (one per core) and again against one started with
//! each count in `WARD_BENCH_SERVER_THREADS` (comma-separated, default `1`; empty for none):
//! the config's `threads`. Each client is tonic's generated stub over its own bare HTTP/2
//! connection (hyper), which costs the shared cores less than a `tonic::transport::Channel`
//! with its request queue.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{TimeZone, Utc};
use futures::StreamExt;
use rand::{Rng, SeedableRng};

use crate::grpc_common::proto::features_client::FeaturesClient;
use crate::grpc_common::proto::{
    historical_request, historical_response, HistoricalRequest, OnlineRequest,
};

mod grpc_common;

use grpc_common::{
    arg, drive, own_group, pct, readmission, start_ward, H2Channel, HttpClient, Proc,
};

fn main() {
    let patients = arg(1, 2_000);
    let secs = arg(2, 5);
    let entity_rows = arg(3, 1_000_000) as usize;
    // The load generator shares the 2 cores with the server: `WARD_BENCH_CLIENT_THREADS`
    // (default 1) sets its runtime's worker threads.
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(
        std::env::var("WARD_BENCH_CLIENT_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    );
    let rt = rt.enable_all().build().expect("runtime");
    rt.block_on(run(patients, secs, entity_rows));
}

async fn run(patients: u64, secs: u64, entity_rows: usize) {
    let r = readmission("ward-serve-bench", patients).await;
    let (dir, store_dir, store, repo_path) = (&r.dir, &r.store_dir, &r.store, &r.repo_path);
    let (ids, feats) = (r.ids.clone(), r.features.clone());
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "features = [{:?}]\n[limits]\nmax_decoding_message_bytes = 1073741824\nrequest_timeout_secs = 600\n",
            repo_path.display().to_string()
        ),
    )
    .expect("config");
    let (_ward, addr) = start_ward(store_dir, &config);
    let url = format!("http://{addr}");
    eprintln!("ward serve on {addr}, timeline {}", r.timeline);

    // 1. Ward online, once per server worker-thread setting: the server's default (one per
    // core) and each count in WARD_BENCH_SERVER_THREADS (default "1"; the load generator
    // shares the cores, so a server that leaves it one core may queue less).
    let ids = Arc::new(ids);
    let feats = Arc::new(feats);
    let mut settings: Vec<Option<usize>> = vec![None];
    settings.extend(
        std::env::var("WARD_BENCH_SERVER_THREADS")
            .unwrap_or_else(|_| "1".into())
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .map(Some),
    );
    // Every setting's server is started first and stays up; rounds then go through the
    // settings in turn (WARD_BENCH_ROUNDS, default 3), so that a slow minute on this shared
    // machine falls on all of them alike. Part 3 uses the default server.
    let rounds = std::env::var("WARD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize)
        .max(1);
    let mut servers = Vec::new();
    for threads in settings {
        match threads {
            None => servers.push((
                "ward (gRPC), server threads: default".to_string(),
                addr,
                None,
            )),
            Some(n) => {
                let cfg = dir.path().join(format!("serve-{n}.toml"));
                let text = std::fs::read_to_string(&config).expect("config");
                std::fs::write(&cfg, format!("threads = {n}\n{text}")).expect("config");
                let (proc, a) = start_ward(store_dir, &cfg);
                servers.push((format!("ward (gRPC), server threads: {n}"), a, Some(proc)));
            }
        }
    }
    // (label, round, run)
    let mut ward_runs: Vec<(String, usize, grpc_common::Run)> = Vec::new();
    for round in 1..=rounds {
        for (label, addr, _) in &servers {
            let addr = *addr;
            for clients in [1usize, 8, 32] {
                let (ids, feats) = (ids.clone(), feats.clone());
                let r = drive(clients, secs, move |c| {
                    let (ids, feats) = (ids.clone(), feats.clone());
                    async move {
                        let channel = H2Channel::connect(addr).await.expect("connect");
                        let mut client =
                            FeaturesClient::with_origin(channel, H2Channel::origin(addr));
                        let mut rng =
                            rand_chacha::ChaCha8Rng::seed_from_u64((round * 1000 + c) as u64);
                        let mut lat = Vec::new();
                        let mut errors = 0;
                        let warm = Instant::now() + Duration::from_secs(1);
                        let end = warm + Duration::from_secs(secs);
                        loop {
                            let now = Instant::now();
                            if now >= end {
                                break;
                            }
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
                .await;
                eprintln!("round {round}: {}", r.row(label));
                ward_runs.push((label.clone(), round, r));
            }
        }
    }
    let labels: Vec<String> = servers.iter().map(|(label, _, _)| label.clone()).collect();
    drop(servers);

    // 2. Feast.
    let python = std::env::var("WARD_BENCH_FEAST_PYTHON")
        .unwrap_or_else(|_| "/tmp/ward-peers/venv/bin/python".into());
    let feast_ok = Command::new(&python)
        .args(["-c", "import feast"])
        .status()
        .is_ok_and(|s| s.success());
    let mut feast_runs = Vec::new();
    if feast_ok {
        // Ward's answers at now for every patient: the values Feast will serve.
        let online = ward::lookup::Online::new(store.clone());
        let ans = online
            .get("readmission", &ids, &feats, None)
            .await
            .expect("online answers");
        let values_path = dir.path().join("feast_values.parquet");
        write_values(&values_path, &ans);
        let port = free_port();
        let mut feast = Proc(
            own_group(&mut Command::new(&python))
                .arg("benches/feast_online.py")
                .arg("--values")
                .arg(&values_path)
                .arg("--repo")
                .arg(dir.path().join("feast_repo"))
                .args(["--port", &port.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("feast"),
        );
        let out = feast.0.stdout.take().expect("stdout");
        let ready = BufReader::new(out)
            .lines()
            .any(|l| l.is_ok_and(|l| l == "ready"));
        assert!(ready, "feast_online.py did not get ready");
        let feast_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let body_for = |p: &str, feats: &[String]| {
            let fs: Vec<String> = feats
                .iter()
                .map(|f| format!("\"readmission:{f}\""))
                .collect();
            format!(
                "{{\"features\":[{}],\"entities\":{{\"patient_id\":[\"{p}\"]}}}}",
                fs.join(",")
            )
        };
        // Wait until it answers.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(mut c) = HttpClient::connect(feast_addr).await {
                if let Ok(r) = c
                    .post("/get-online-features", &body_for(&ids[0], &feats))
                    .await
                {
                    assert!(r.contains("\"results\""), "feast answered {r}");
                    break;
                }
            }
            assert!(Instant::now() < deadline, "feast serve did not answer");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for clients in [1usize, 8, 32] {
            let (ids, feats) = (ids.clone(), feats.clone());
            let r = drive(clients, secs, move |c| {
                let (ids, feats) = (ids.clone(), feats.clone());
                async move {
                    let mut client = HttpClient::connect(feast_addr).await.expect("connect");
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c as u64);
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    let warm = Instant::now() + Duration::from_secs(1);
                    let end = warm + Duration::from_secs(secs);
                    loop {
                        if Instant::now() >= end {
                            break;
                        }
                        let p = &ids[rng.random_range(0..ids.len())];
                        let body = body_for(p, &feats);
                        let s = Instant::now();
                        let ok = match client.post("/get-online-features", &body).await {
                            Ok(r) => r.contains("\"results\""),
                            Err(_) => {
                                client = HttpClient::connect(feast_addr).await.expect("reconnect");
                                false
                            }
                        };
                        if s >= warm {
                            lat.push(s.elapsed());
                            errors += usize::from(!ok);
                        }
                    }
                    (lat, errors)
                }
            })
            .await;
            eprintln!("{}", r.row("feast"));
            feast_runs.push(r);
        }
    } else {
        eprintln!("SKIP Feast: {python} cannot import feast (set WARD_BENCH_FEAST_PYTHON)");
    }

    // 3. Historical over gRPC, then Flight DoGet of the training set.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let lo = Utc
        .with_ymd_and_hms(2018, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp_micros();
    let hi = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp_micros();
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let entities = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..entity_rows).map(|_| ids[rng.random_range(0..ids.len())].as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    (0..entity_rows).map(|_| rng.random_range(lo..hi)),
                )
                .with_timezone("UTC"),
            ),
        ],
    )
    .expect("entities");
    let mut ipc = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &schema).expect("ipc");
        w.write(&entities).expect("ipc");
        w.finish().expect("ipc");
    }
    let mut client = FeaturesClient::connect(url.clone())
        .await
        .expect("connect")
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(1 << 30);
    let s = Instant::now();
    let mut stream = client
        .get_historical_features(HistoricalRequest {
            feature_set: "readmission".into(),
            entities: Some(historical_request::Entities::EntitiesIpc(ipc)),
            timeline: String::new(),
            as_occurred: false,
            name: String::new(),
        })
        .await
        .expect("historical")
        .into_inner();
    let mut hist_bytes = 0usize;
    let mut training = String::new();
    while let Some(msg) = stream.next().await {
        match msg.expect("stream").part {
            Some(historical_response::Part::Header(h)) => training = h.training_set,
            Some(historical_response::Part::BatchIpc(b)) => hist_bytes += b.len(),
            None => {}
        }
    }
    let hist_s = s.elapsed().as_secs_f64();

    let mut flight = arrow_flight::FlightClient::new(
        tonic::transport::Channel::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect"),
    );
    let s = Instant::now();
    let mut got = flight
        .do_get(arrow_flight::Ticket::new(training.clone()))
        .await
        .expect("do_get");
    let (mut rows, mut bytes) = (0usize, 0usize);
    let mut fetched = Vec::new();
    while let Some(b) = got.next().await {
        let b = b.expect("batch");
        rows += b.num_rows();
        // The data the batch holds (decoded batches share their message's buffer, which
        // get_array_memory_size would count once per column).
        bytes += b
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().expect("size"))
            .sum::<usize>();
        fetched.push(b);
    }
    let flight_s = s.elapsed().as_secs_f64();
    assert_eq!(rows, entity_rows);
    let pandas = flight_into_pandas(&url, &training, &fetched);
    drop(fetched);

    println!(
        "## Service over loopback: {patients} patients, 20 features per lookup, {secs} s per run"
    );
    println!();
    println!("Ward, every round:");
    println!();
    println!("| server | round | clients | p50 us | p99 us | lookups/s | errors |");
    println!("|---|---|---|---|---|---|---|");
    for (label, round, r) in &ward_runs {
        println!("{}", r.row(&format!("{label} | {round}")));
    }
    println!();
    println!("Medians over the {rounds} rounds (each column's own median), and Feast's run:");
    println!();
    println!("| server | clients | p50 us | p99 us | lookups/s | errors |");
    println!("|---|---|---|---|---|---|");
    let mut medians: Vec<(String, usize, f64, f64, f64, usize)> = Vec::new();
    for label in &labels {
        for clients in [1usize, 8, 32] {
            let runs: Vec<&grpc_common::Run> = ward_runs
                .iter()
                .filter(|(l, _, r)| l == label && r.clients == clients)
                .map(|(_, _, r)| r)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let med = |f: &dyn Fn(&grpc_common::Run) -> f64| {
                let mut v: Vec<f64> = runs.iter().map(|r| f(r)).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            medians.push((
                label.clone(),
                clients,
                med(&|r| pct(&r.lat, 0.5)),
                med(&|r| pct(&r.lat, 0.99)),
                med(&|r| r.lat.len() as f64 / r.secs),
                runs.iter().map(|r| r.errors).sum(),
            ));
        }
    }
    for (label, clients, p50, p99, tput, errors) in &medians {
        println!("| {label} | {clients} | {p50:.0} | {p99:.0} | {tput:.0} | {errors} |");
    }
    for r in &feast_runs {
        println!("{}", r.row("feast 0.67 (HTTP)"));
    }
    if !feast_runs.is_empty() {
        println!();
        println!("| ward (medians) | clients | throughput ward / feast | p99 feast / ward |");
        println!("|---|---|---|---|");
        for (label, clients, _, p99, tput, _) in &medians {
            let Some(f) = feast_runs.iter().find(|f| f.clients == *clients) else {
                continue;
            };
            println!(
                "| {label} | {clients} | {:.1}x | {:.1}x |",
                tput / (f.lat.len() as f64 / f.secs),
                pct(&f.lat, 0.99) / p99
            );
        }
    }
    println!();
    println!("| bulk | rows | seconds | rows/s | MB/s |");
    println!("|---|---|---|---|---|");
    println!(
        "| historical lookup over gRPC ({} features + status, Arrow IPC out) | {entity_rows} | {hist_s:.2} | {:.0} | {:.1} |",
        r.set_size,
        entity_rows as f64 / hist_s,
        hist_bytes as f64 / hist_s / 1e6
    );
    println!(
        "| Flight DoGet of the training set ({training}) | {rows} | {flight_s:.2} | {:.0} | {:.1} |",
        rows as f64 / flight_s,
        bytes as f64 / flight_s / 1e6
    );
    if let Some(p) = pandas {
        println!();
        println!(
            "Into pandas (issue 37; `benches/flight_pandas.py`, median of 5 alternating runs): `Client.dataset(hash).to_pandas()` over Flight {:.2} s ({:.0} rows/s) vs `pq.read_table(local Parquet).to_pandas()` {:.2} s ({:.0} rows/s), {} rows x {} columns: Flight takes **{:.2}x** the local read (target <= 2x)",
            p["flight_s"], p["flight_rows_per_s"], p["parquet_s"], p["parquet_rows_per_s"],
            p["rows"], p["columns"], p["ratio"]
        );
    }
}

/// Writes the training set fetched over Flight to a local Parquet file and runs
/// `benches/flight_pandas.py` with `WARD_BENCH_PANDAS_PYTHON` (default `python3`; it needs
/// pyarrow, pandas and the Python client, `pip install ./python`): its `key=value` report,
/// or `None` (with the reason) where it cannot run.
fn flight_into_pandas(
    url: &str,
    training: &str,
    batches: &[RecordBatch],
) -> Option<std::collections::BTreeMap<String, f64>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("training.parquet");
    let file = std::fs::File::create(&path).expect("parquet file");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), None)
        .expect("parquet writer");
    for b in batches {
        w.write(b).expect("write");
    }
    w.close().expect("close");
    let python = std::env::var("WARD_BENCH_PANDAS_PYTHON").unwrap_or_else(|_| "python3".into());
    let addr = url.trim_start_matches("http://");
    let out = std::process::Command::new(&python)
        .args(["benches/flight_pandas.py", addr, training])
        .arg(&path)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
                .collect(),
        ),
        Ok(o) => {
            eprintln!(
                "flight_pandas.py failed (skipped): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("{python}: {e} (the pandas comparison is skipped)");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Ward's answers as Feast's source table: patient_id, event_timestamp, 20 float64 columns.
fn write_values(path: &Path, ans: &ward::lookup::OnlineAnswer) {
    let now = Utc::now().timestamp_micros() - 3_600_000_000;
    let mut fields = vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    let mut cols: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            ans.patients.iter().map(|p| p.patient_id.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(ans.patients.iter().map(|_| now))
                .with_timezone("UTC"),
        ),
    ];
    for (k, f) in ans.features.iter().enumerate() {
        fields.push(Field::new(f, DataType::Float64, true));
        cols.push(Arc::new(arrow::array::Float64Array::from_iter(
            ans.patients.iter().map(|p| match &p.values[k].1.value {
                Some(ward::features::Value::Num(v)) => Some(*v),
                // Text features (sex) as a code, so every column is float64 for Feast.
                Some(ward::features::Value::Text(s)) => Some(s.len() as f64),
                None => None,
            }),
        )));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("values");
    let f = std::fs::File::create(path).expect("values file");
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}
