//! Live feeds under load (issue 33, "Benchmarks"): a `ward serve` child at its default
//! settings with a live feed (`[live] seal_interval_secs` set, so the server seals and brings
//! its online set up to date on its own), over a store holding the first half of a `ward
//! synth --format hl7v2` cohort (ingested with `ward ingest` and materialized with `ward
//! materialize` before the clock starts). Each round has two phases of `SECONDS`:
//!
//! 1. **idle**: 8 online clients send `GetOnlineFeatures` (one random patient, every feature
//!    of `readmission_online`) in closed loops;
//! 2. **load**: the same 8 clients, while `CONNECTIONS` senders stream the second half of the
//!    cohort (in time order, each patient's messages on one sender, in order) at `RATE`
//!    messages per second in all, each sender paced and waiting for each acknowledgement as an
//!    interface engine does; and one **probe** sender that, one probe at a time, sends a lab
//!    result (ORU, hemoglobin `718-7` with a value no other message has) for a patient of the
//!    store with no streamed message, timed "now", and polls the online lookup of that patient
//!    until it answers the new value: the probe's **freshness** is the time from its
//!    acknowledgement to that answer.
//!
//! `WARD_BENCH_VIA` picks the feed:
//! - `mllp` (default): HL7 v2 over MLLP; the acknowledgement is the ACK (sent once logged);
//! - `http`: FHIR pushed to `POST /fhir`, each lab message (ORU) as a `collection` Bundle of
//!   its Observations (ADT messages are not sent: the rate counts lab messages only); the
//!   acknowledgement is the 200 (sent once logged);
//! - `kafka`: the HL7 v2 messages produced to a new topic with `CONNECTIONS` partitions on
//!   the broker of `WARD_KAFKA_BROKERS` (`eval "$(.ci/kafka.sh start)"`), which Ward consumes;
//!   the acknowledgement is the broker's answer to the produce request.
//!
//! Then the same phases against Feast 0.67's push path (benches/feast_push.py: `POST /push`
//! with `"to": "online"` into a SQLite online store, lookups by `POST
//! /get-online-features`), one row per message (its patient, time and hemoglobin result),
//! when the peers' venv is there (`WARD_BENCH_FEAST_PYTHON`, default
//! `/tmp/ward-peers/venv/bin/python`, made by `../shared/peers/run_bench.sh`).
//!
//! Reported per round and as medians over rounds, Ward and Feast side by side: records
//! acknowledged per second (sustained over the phase), acknowledgement latency p50/p99 (from
//! the send to its acknowledgement), freshness p50/p99 (probes), online lookup p50/p99 and
//! lookups/s idle and under load. The targets of issue 33: >= 5,000 messages/s sustained,
//! freshness p99 <= 1 s, online p99 <= 2 ms.
//!
//! `cargo bench --bench live -- [PATIENTS [SECONDS [RATE [ROUNDS [CONNECTIONS]]]]]`
//! (defaults 4,000 patients, 5 s phases, 5,000 messages/s, 3 rounds, 8 connections).
//! `WARD_BENCH_SEAL_SECS` sets the server's seal interval (default 0.25 s);
//! `WARD_BENCH_KEEP=1` keeps the store; `WARD_BENCH_VERBOSE=1` shows the server's log.
//! The streamed half of the cohort is used once: when it runs out, a load phase ends early
//! and says so (a larger cohort gives longer phases).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::grpc_common::proto::features_client::FeaturesClient;
use crate::grpc_common::proto::{feature_value, OnlineRequest};

mod grpc_common;
mod hl7_common;

use grpc_common::{arg, own_group, pct, H2Channel, HttpClient, Proc};
use hl7_common::{contains, field, patient, probe_message};

const CLIENTS: usize = 8;
const SET: &str = "readmission_online";
const REPO: &str = include_str!("../examples/features/readmission.toml");

fn main() {
    let patients = arg(1, 4_000);
    let secs = arg(2, 5);
    let rate = arg(3, 5_000);
    let rounds = arg(4, 3).max(1) as usize;
    let conns = arg(5, 8).max(1) as usize;
    let seal_secs: f64 = std::env::var("WARD_BENCH_SEAL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.25);

    let dir = tempfile::Builder::new()
        .prefix("ward-live-bench")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let (history, streamed, probe_template) = cohort(patients, &dir.path().join("cohort"));
    eprintln!(
        "cohort of {patients} patients: {} messages ingested before, {} to stream",
        history.len(),
        streamed.len()
    );
    let store = dir.path().join("store");
    let file = dir.path().join("history.hl7");
    std::fs::write(
        &file,
        ward::live::seal::batch_bytes(history.iter().map(|m| m.as_slice())),
    )
    .expect("write history");
    let repo = dir.path().join("readmission.toml");
    std::fs::write(&repo, REPO).expect("repo");
    ward_cli(&store, &["ingest", "--format", "hl7v2"], &file);
    ward_cli(&store, &["materialize", "--set", SET, "--features"], &repo);
    let ids: Vec<String> = {
        let mut ids: Vec<String> = history.iter().map(|m| patient(m)).collect();
        ids.sort();
        ids.dedup();
        ids
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let via = std::env::var("WARD_BENCH_VIA").unwrap_or_else(|_| "mllp".into());
    let (listen, kafka) = match via.as_str() {
        "mllp" => ("mllp = \"127.0.0.1:0\"\n".to_string(), None),
        "http" => ("http = \"127.0.0.1:0\"\n".to_string(), None),
        "kafka" => {
            let brokers: Vec<String> = std::env::var("WARD_KAFKA_BROKERS")
                .expect("WARD_BENCH_VIA=kafka needs a broker: eval \"$(.ci/kafka.sh start)\"")
                .split(',')
                .map(str::to_string)
                .collect();
            let topic = format!("ward-bench-live-{}", std::process::id());
            rt.block_on(ward::live::kafka_wire::create_topic(
                &brokers,
                "ward-bench",
                &topic,
                conns as i32,
            ))
            .expect("create topic");
            let tables = format!(
                "[kafka]\nbrokers = {brokers:?}\nstart = \"earliest\"\n[[kafka.topic]]\nname = \"{topic}\"\nformat = \"hl7v2\"\n"
            );
            (
                String::new(),
                Some((
                    tables,
                    Feed::Kafka {
                        brokers,
                        topic,
                        partitions: conns as i32,
                    },
                )),
            )
        }
        other => panic!("WARD_BENCH_VIA={other}: mllp, http or kafka"),
    };
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "features = [{repo:?}]\n{listen}[live]\nseal_interval_secs = {seal_secs}\n{}",
            kafka.as_ref().map(|k| k.0.as_str()).unwrap_or_default()
        ),
    )
    .expect("config");
    let (server, grpc, feed) = match (via.as_str(), kafka) {
        ("mllp", _) => {
            let (p, g, a) = start(&store, &config, Some("mllp listening on "));
            (p, g, Feed::Mllp(a.expect("mllp address")))
        }
        ("http", _) => {
            let (p, g, a) = start(&store, &config, Some("http listening on "));
            (p, g, Feed::Http(a.expect("http address")))
        }
        (_, Some((_, feed))) => {
            let (p, g, _) = start(&store, &config, None);
            (p, g, feed)
        }
        _ => unreachable!("checked above"),
    };

    let streamed = deal(streamed, conns);
    let ids = Arc::new(ids);
    let run = |target: Target, label: &str| {
        let mut results = Vec::new();
        let mut cursors = vec![0usize; conns];
        for round in 0..rounds {
            let idle = rt.block_on(online_phase(target.clone(), ids.clone(), secs, None));
            let load = rt.block_on(load_phase(LoadPhase {
                target: target.clone(),
                ids: ids.clone(),
                secs,
                rate,
                streamed: &streamed,
                cursors: &mut cursors,
                probe: &probe_template,
                round,
            }));
            eprintln!("{label}, round {round}: {}", load.line(&idle));
            results.push((idle, load));
        }
        results
    };
    let ward = run(Target::Ward { grpc, feed }, "ward");
    drop(server);

    // Feast's push path, when its Python is there (the peers' venv, `../shared/peers`).
    let python = std::env::var("WARD_BENCH_FEAST_PYTHON")
        .unwrap_or_else(|_| "/tmp/ward-peers/venv/bin/python".into());
    let feast_ok = Command::new(&python)
        .args(["-c", "import feast"])
        .status()
        .is_ok_and(|s| s.success());
    let feast = if feast_ok {
        let (proc, http) = start_feast(&python, dir.path(), &ids);
        let r = run(Target::Feast { http }, "feast");
        drop(proc);
        Some(r)
    } else {
        eprintln!(
            "Feast not measured: no `import feast` in {python} (set WARD_BENCH_FEAST_PYTHON)"
        );
        None
    };

    println!(
        "\n{via} into Ward vs Feast's /push: {patients} patients, {conns} senders at {rate}/s in all, \
         Ward sealing every {seal_secs} s, {CLIENTS} online clients, medians of {rounds} rounds\n"
    );
    println!("| | Ward | Feast | Ward / Feast |");
    println!("| --- | --- | --- | --- |");
    let med = |rs: &[(Online, Load)], f: &dyn Fn(&(Online, Load)) -> f64| {
        let mut v: Vec<f64> = rs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    type Metric<'a> = (&'a str, Box<dyn Fn(&(Online, Load)) -> f64>);
    let metrics: Vec<Metric> = vec![
        ("records/s sustained", Box::new(|r| r.1.per_sec())),
        ("ACK p50 (us)", Box::new(|r| pct(&r.1.ack_lat, 0.5))),
        ("ACK p99 (us)", Box::new(|r| pct(&r.1.ack_lat, 0.99))),
        (
            "freshness p50 (ms)",
            Box::new(|r| pct(&r.1.fresh, 0.5) / 1e3),
        ),
        (
            "freshness p99 (ms)",
            Box::new(|r| pct(&r.1.fresh, 0.99) / 1e3),
        ),
        ("online idle p99 (us)", Box::new(|r| pct(&r.0.lat, 0.99))),
        ("online idle lookups/s", Box::new(|r| r.0.per_sec())),
        (
            "online under load p50 (us)",
            Box::new(|r| pct(&r.1.online.lat, 0.5)),
        ),
        (
            "online under load p99 (us)",
            Box::new(|r| pct(&r.1.online.lat, 0.99)),
        ),
        (
            "online under load lookups/s",
            Box::new(|r| r.1.online.per_sec()),
        ),
        (
            "probes refused or timed out (30 s)",
            Box::new(|r| r.1.probe_timeouts as f64),
        ),
        (
            "errors",
            Box::new(|r| (r.0.errors + r.1.errors + r.1.online.errors) as f64),
        ),
    ];
    for (name, f) in &metrics {
        let w = med(&ward, f.as_ref());
        match &feast {
            Some(fr) => {
                let fv = med(fr, f.as_ref());
                println!("| {name} | {w:.0} | {fv:.0} | {:.2} |", w / fv);
            }
            None => println!("| {name} | {w:.0} | - | - |"),
        }
    }
    if std::env::var_os("WARD_BENCH_KEEP").is_some() {
        eprintln!("kept {}", dir.keep().display());
    }
}

/// Starts Feast's feature server with a push source (benches/feast_push.py) holding a value
/// for every patient: the process and its address, once it answers.
fn start_feast(python: &str, dir: &Path, ids: &[String]) -> (Proc, SocketAddr) {
    use arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let values = dir.join("feast_values.parquet");
    let now = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("hemoglobin_last", DataType::Float64, true),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(ids.iter())),
            Arc::new(TimestampMicrosecondArray::from(vec![now; ids.len()]).with_timezone("UTC")),
            Arc::new(Float64Array::from(vec![13.5; ids.len()])),
        ],
    )
    .expect("values");
    let f = std::fs::File::create(&values).expect("values file");
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut proc = Proc(
        own_group(
            Command::new(python)
                .arg("benches/feast_push.py")
                .arg("--values")
                .arg(&values)
                .arg("--repo")
                .arg(dir.join("feast_repo"))
                .args(["--port", &port.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )
        .spawn()
        .expect("feast_push.py"),
    );
    let out = proc.0.stdout.take().expect("stdout");
    let ready = BufReader::new(out)
        .lines()
        .any(|l| l.is_ok_and(|l| l == "ready"));
    assert!(ready, "feast_push.py did not get ready");
    let http: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(120);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        loop {
            if let Ok(mut c) = HttpClient::connect(http).await {
                if c.post("/get-online-features", &feast_lookup(&ids[0]))
                    .await
                    .is_ok()
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "feast serve did not answer");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    (proc, http)
}

/// Runs the `ward` binary on `store` with `args` and then `path`; panics with its output on
/// failure.
fn ward_cli(store: &Path, args: &[&str], path: &Path) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(store)
        .args(args)
        .arg(path)
        .output()
        .expect("run ward");
    assert!(
        out.status.success(),
        "ward {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("ward {} took {:.1} s", args[0], t.elapsed().as_secs_f64());
}

/// The cohort's messages: the first half in time order (the history), the second half (to
/// stream), and an ORU of the history holding a hemoglobin result (the probes' template).
fn cohort(patients: u64, dir: &Path) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<u8>) {
    let opts = ward::synth::SynthOptions {
        patients,
        seed: 7,
        ..Default::default()
    };
    let summary =
        ward::synth::write(&opts, ward::synth::SynthFormat::Hl7v2, dir, None).expect("synth");
    let mut msgs = Vec::new();
    for f in &summary.files {
        let text = std::fs::read_to_string(f).expect("read cohort");
        for m in text.split("MSH|").filter(|m| !m.is_empty()) {
            msgs.push(format!("MSH|{m}").into_bytes());
        }
    }
    // Time order (stable: a patient's messages of one second keep their order).
    msgs.sort_by_cached_key(|m| field(m, "MSH", 7).chars().take(14).collect::<String>());
    let streamed = msgs.split_off(msgs.len() / 2);
    // A patient with no streamed message, so that nothing streamed can be newer than a probe
    // (Feast's online store keeps the last row pushed, whatever its time).
    let later: std::collections::HashSet<String> = streamed.iter().map(|m| patient(m)).collect();
    let template = msgs
        .iter()
        .rev()
        .find(|m| {
            field(m, "MSH", 9).starts_with("ORU")
                && contains(m, b"|718-7^")
                && !later.contains(&patient(m))
        })
        .expect("an ORU with a hemoglobin result in the history")
        .clone();
    (msgs, streamed, template)
}

/// The messages dealt to `n` senders by patient, each patient's messages in order.
fn deal(msgs: Vec<Vec<u8>>, n: usize) -> Vec<Vec<Vec<u8>>> {
    let mut out = vec![Vec::new(); n];
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in msgs {
        let next = seen.len();
        let k = *seen.entry(patient(&m)).or_insert(next % n);
        out[k].push(m);
    }
    out
}

/// Starts `ward serve` on `store` with `config`: the gRPC address it printed and, with
/// `feed`, the address on the line starting with `feed` (`mllp listening on `, ...).
fn start(
    store: &Path,
    config: &Path,
    feed: Option<&str>,
) -> (Proc, SocketAddr, Option<SocketAddr>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(store)
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("ward serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let (mut grpc, mut other) = (None, None);
    let addr_after = |line: &str, prefix: &str| -> Option<SocketAddr> {
        line.strip_prefix(prefix)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    while grpc.is_none() || (feed.is_some() && other.is_none()) {
        let line = lines
            .next()
            .expect("ward serve exited before listening")
            .expect("stderr");
        if let Some(a) = addr_after(&line, "listening on ") {
            grpc = Some(a);
        }
        if let Some(a) = feed.and_then(|f| addr_after(&line, f)) {
            other = Some(a);
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe; seal failures show
    // (everything with `WARD_BENCH_VERBOSE=1`).
    let verbose = std::env::var_os("WARD_BENCH_VERBOSE").is_some();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if verbose || l.contains("error") || l.contains("fail") {
                eprintln!("ward serve: {l}");
            }
        }
    });
    (Proc(child), grpc.expect("grpc address"), other)
}

/// The lab results of an ORU message as a FHIR `collection` Bundle of Observations (what a
/// FHIR-speaking lab system would push): one per numeric OBX, its LOINC code, value and
/// UCUM unit, the patient of PID-3 and the time of OBX-14.
fn fhir_bundle(msg: &[u8]) -> String {
    let iso = |t: &str| {
        if t.len() >= 14 {
            format!(
                "{}-{}-{}T{}:{}:{}Z",
                &t[0..4],
                &t[4..6],
                &t[6..8],
                &t[8..10],
                &t[10..12],
                &t[12..14]
            )
        } else {
            t.to_string()
        }
    };
    let control = field(msg, "MSH", 10);
    let pid = patient(msg);
    let text = String::from_utf8_lossy(msg);
    let entries: Vec<serde_json::Value> = text
        .split('\r')
        .filter(|seg| seg.starts_with("OBX|"))
        .filter_map(|seg| {
            let f: Vec<&str> = seg.split('|').collect();
            if f.get(2) != Some(&"NM") {
                return None;
            }
            let mut code = f.get(3)?.split('^');
            let (code, display) = (code.next()?, code.next().unwrap_or_default());
            let value: f64 = f.get(5)?.parse().ok()?;
            let unit = f.get(6)?.split('^').next().unwrap_or_default();
            Some(serde_json::json!({ "resource": {
                "resourceType": "Observation",
                "id": format!("{control}-{}", f.get(1).unwrap_or(&"0")),
                "status": "final",
                "category": [{ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory" }] }],
                "code": { "coding": [{ "system": "http://loinc.org", "code": code,
                                       "display": display }] },
                "subject": { "reference": format!("Patient/{pid}") },
                "effectiveDateTime": iso(f.get(14).unwrap_or(&"")),
                "valueQuantity": { "value": value, "unit": unit,
                                   "system": "http://unitsofmeasure.org", "code": unit },
            }}))
        })
        .collect();
    serde_json::json!({ "resourceType": "Bundle", "type": "collection", "entry": entries })
        .to_string()
}

/// What is measured: Ward (gRPC lookups, MLLP messages) or Feast (HTTP lookups, `/push`).
#[derive(Clone)]
enum Target {
    Ward { grpc: SocketAddr, feed: Feed },
    Feast { http: SocketAddr },
}

/// How messages reach Ward (`WARD_BENCH_VIA`).
#[derive(Clone)]
enum Feed {
    /// HL7 v2 over MLLP, one ACK per message.
    Mllp(SocketAddr),
    /// FHIR pushed to `POST /fhir`: each lab message as a `collection` Bundle of its
    /// Observations, answered once logged.
    Http(SocketAddr),
    /// HL7 v2 messages produced to a topic of `partitions` partitions (sender `i` to
    /// partition `i % partitions`), acknowledged by the broker; Ward consumes them.
    Kafka {
        brokers: Vec<String>,
        topic: String,
        partitions: i32,
    },
}

/// One online client.
enum Reader {
    Ward(FeaturesClient<H2Channel>),
    Feast(HttpClient, SocketAddr),
}

/// Posts `body` over `c`, reconnecting when the request failed (Feast's server may
/// close a connection, and a client whose connection is gone would only count errors).
async fn post_reconnecting(
    c: &mut HttpClient,
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> std::io::Result<String> {
    let r = c.post(path, body).await;
    if r.is_ok() {
        return r;
    }
    // A keep-alive connection the server closed while it was idle (uvicorn closes them
    // after 5 s): send again once on a new one, as HTTP clients do.
    *c = HttpClient::connect(addr).await?;
    c.post(path, body).await
}

impl Reader {
    async fn connect(t: &Target) -> Reader {
        match *t {
            Target::Ward { grpc, .. } => {
                let ch = H2Channel::connect(grpc).await.expect("connect gRPC");
                Reader::Ward(FeaturesClient::with_origin(ch, H2Channel::origin(grpc)))
            }
            Target::Feast { http } => Reader::Feast(
                HttpClient::connect(http).await.expect("connect Feast"),
                http,
            ),
        }
    }

    /// Every online feature of `patient` (Ward: the whole `readmission_online` set; Feast:
    /// its one feature view).
    async fn all(&mut self, patient: String) -> Result<(), String> {
        match self {
            Reader::Ward(c) => c
                .get_online_features(OnlineRequest {
                    feature_set: SET.into(),
                    patient_ids: vec![patient],
                    as_of: String::new(),
                    features: vec![],
                })
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Reader::Feast(c, addr) => {
                post_reconnecting(c, *addr, "/get-online-features", &feast_lookup(&patient))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The patient's `hemoglobin_last` now.
    async fn hemoglobin(&mut self, patient: &str) -> Option<f64> {
        match self {
            Reader::Ward(c) => {
                let r = c
                    .get_online_features(OnlineRequest {
                        feature_set: SET.into(),
                        patient_ids: vec![patient.to_string()],
                        as_of: String::new(),
                        features: vec!["hemoglobin_last".into()],
                    })
                    .await
                    .ok()?;
                let v = r.into_inner().patients.into_iter().next()?.values;
                match v.into_iter().next()?.value? {
                    feature_value::Value::Num(x) => Some(x),
                    feature_value::Value::Text(_) => None,
                }
            }
            Reader::Feast(c, addr) => {
                let body =
                    post_reconnecting(c, *addr, "/get-online-features", &feast_lookup(patient))
                        .await
                        .ok()?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                // `results`: the entity column first, then the feature.
                v["results"][1]["values"][0].as_f64()
            }
        }
    }
}

fn feast_lookup(patient: &str) -> String {
    format!(
        "{{\"features\":[\"labs:hemoglobin_last\"],\"entities\":{{\"patient_id\":[\"{patient}\"]}}}}"
    )
}

/// One sender: an MLLP connection to Ward, an HTTP connection to Feast's `/push`.
enum Writer {
    Mllp(Mllp),
    Http(HttpClient, SocketAddr),
    Kafka(ward::live::kafka_wire::PartitionClient),
    Feast(HttpClient, SocketAddr),
}

impl Writer {
    async fn connect(t: &Target, i: usize) -> Writer {
        match t {
            Target::Ward {
                feed: Feed::Mllp(addr),
                ..
            } => Writer::Mllp(Mllp::connect(*addr).await),
            Target::Ward {
                feed: Feed::Http(addr),
                ..
            } => Writer::Http(
                HttpClient::connect(*addr)
                    .await
                    .expect("connect Ward's HTTP"),
                *addr,
            ),
            Target::Ward {
                feed:
                    Feed::Kafka {
                        brokers,
                        topic,
                        partitions,
                    },
                ..
            } => Writer::Kafka(ward::live::kafka_wire::PartitionClient::new(
                brokers,
                "ward-bench",
                topic,
                (i % *partitions as usize) as i32,
            )),
            &Target::Feast { http } => Writer::Feast(
                HttpClient::connect(http).await.expect("connect Feast"),
                http,
            ),
        }
    }

    /// Whether this writer sends `msg` at all (Ward's HTTP push sends lab results only).
    fn takes(&self, msg: &[u8]) -> bool {
        !matches!(self, Writer::Http(..)) || field(msg, "MSH", 9).starts_with("ORU")
    }

    /// Sends one message (MLLP and Kafka: as is; HTTP: its Observations as a Bundle; Feast:
    /// the row it carries, pushed to the online store): whether it was accepted.
    async fn send(&mut self, msg: &[u8]) -> bool {
        match self {
            Writer::Mllp(c) => matches!(c.send(msg).await.as_str(), "AA" | "AE"),
            Writer::Http(c, addr) => post_reconnecting(c, *addr, "/fhir", &fhir_bundle(msg))
                .await
                .is_ok(),
            Writer::Kafka(c) => c.produce(&[(Some(msg.to_vec()), Vec::new())]).await.is_ok(),
            Writer::Feast(c, addr) => post_reconnecting(c, *addr, "/push", &feast_push(msg))
                .await
                .is_ok(),
        }
    }
}

/// The Feast push of one message: its patient, its time and its hemoglobin result (null
/// when it has none): one row, the shape of the streamed record.
fn feast_push(msg: &[u8]) -> String {
    let t = field(msg, "MSH", 7);
    let ts = if t.len() >= 14 {
        format!(
            "{}-{}-{}T{}:{}:{}Z",
            &t[0..4],
            &t[4..6],
            &t[6..8],
            &t[8..10],
            &t[10..12],
            &t[12..14]
        )
    } else {
        "2020-01-01T00:00:00Z".into()
    };
    let value = String::from_utf8_lossy(msg)
        .split('\r')
        .find(|s| s.starts_with("OBX|") && s.contains("|718-7^"))
        .and_then(|s| s.split('|').nth(5).map(str::to_string))
        .filter(|v| v.parse::<f64>().is_ok())
        .unwrap_or_else(|| "null".into());
    format!(
        "{{\"push_source_name\":\"labs_push\",\"to\":\"online\",\"df\":{{\"patient_id\":[\"{}\"],\"event_timestamp\":[\"{ts}\"],\"hemoglobin_last\":[{value}]}}}}",
        patient(msg)
    )
}

/// Online lookups of one phase.
struct Online {
    lat: Vec<Duration>,
    secs: f64,
    errors: usize,
}

impl Online {
    fn per_sec(&self) -> f64 {
        self.lat.len() as f64 / self.secs
    }
}

/// `CLIENTS` closed loops of online lookups for `secs` (or until `stop` is set).
async fn online_phase(
    target: Target,
    ids: Arc<Vec<String>>,
    secs: u64,
    stop: Option<Arc<AtomicBool>>,
) -> Online {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let ids = ids.clone();
            let stop = stop.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let mut client = Reader::connect(&target).await;
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c as u64);
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline
                    && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
                {
                    let id = ids[rng.random_range(0..ids.len())].clone();
                    let t = Instant::now();
                    match client.all(id).await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        lat.extend(l);
        errors += e;
    }
    lat.sort_unstable();
    Online {
        lat,
        secs: started.elapsed().as_secs_f64(),
        errors,
    }
}

struct LoadPhase<'a> {
    target: Target,
    ids: Arc<Vec<String>>,
    secs: u64,
    rate: u64,
    streamed: &'a [Vec<Vec<u8>>],
    cursors: &'a mut [usize],
    probe: &'a [u8],
    round: usize,
}

struct Load {
    acked: usize,
    elapsed: f64,
    ran_out: bool,
    ack_lat: Vec<Duration>,
    fresh: Vec<Duration>,
    probe_timeouts: usize,
    errors: usize,
    online: Online,
}

impl Load {
    fn per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed
    }

    fn line(&self, idle: &Online) -> String {
        format!(
            "{:.0} records/s ({} acknowledged in {:.2} s{}), ACK p50/p99 {:.0}/{:.0} us, \
             freshness p50/p99 {:.0}/{:.0} ms ({} probes, {} refused or timed out), online idle \
             p50/p99 {:.0}/{:.0} us {:.0}/s, under load {:.0}/{:.0} us {:.0}/s, errors {}",
            self.per_sec(),
            self.acked,
            self.elapsed,
            if self.ran_out {
                ", ran out of messages"
            } else {
                ""
            },
            pct(&self.ack_lat, 0.5),
            pct(&self.ack_lat, 0.99),
            pct(&self.fresh, 0.5) / 1e3,
            pct(&self.fresh, 0.99) / 1e3,
            self.fresh.len(),
            self.probe_timeouts,
            pct(&idle.lat, 0.5),
            pct(&idle.lat, 0.99),
            idle.per_sec(),
            pct(&self.online.lat, 0.5),
            pct(&self.online.lat, 0.99),
            self.online.per_sec(),
            self.errors + self.online.errors + idle.errors,
        )
    }
}

/// One MLLP connection.
struct Mllp {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Mllp {
    async fn connect(addr: SocketAddr) -> Mllp {
        let tcp = TcpStream::connect(addr).await.expect("connect MLLP");
        tcp.set_nodelay(true).expect("nodelay");
        Mllp {
            tcp,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one message and waits for its ACK: the MSA-1 code.
    async fn send(&mut self, msg: &[u8]) -> String {
        let mut frame = Vec::with_capacity(msg.len() + 3);
        frame.push(0x0b);
        frame.extend_from_slice(msg);
        frame.extend_from_slice(&[0x1c, 0x0d]);
        self.tcp.write_all(&frame).await.expect("send frame");
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == [0x1c, 0x0d]) {
                let ack: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&ack);
                return text
                    .split('\r')
                    .find(|s| s.trim_start_matches('\u{b}').starts_with("MSA|"))
                    .and_then(|s| s.split('|').nth(1))
                    .unwrap_or("?")
                    .to_string();
            }
            let mut chunk = [0u8; 4096];
            let n = self.tcp.read(&mut chunk).await.expect("read ACK");
            assert!(n > 0, "the server closed the MLLP connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn load_phase(p: LoadPhase<'_>) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let online = tokio::spawn(online_phase(
        p.target.clone(),
        p.ids.clone(),
        p.secs,
        Some(stop.clone()),
    ));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(p.secs);
    let per_conn = Duration::from_secs_f64(p.streamed.len() as f64 / p.rate as f64);
    let senders: Vec<_> = p
        .streamed
        .iter()
        .zip(p.cursors.iter())
        .enumerate()
        .map(|(i, (msgs, &from))| {
            let msgs: Vec<Vec<u8>> = msgs[from.min(msgs.len())..].to_vec();
            let target = p.target.clone();
            tokio::spawn(async move {
                let mut conn = Writer::connect(&target, i).await;
                let (mut lat, mut errors, mut sent) = (Vec::new(), 0usize, 0usize);
                let mut next = Instant::now();
                for m in &msgs {
                    if Instant::now() >= deadline {
                        break;
                    }
                    sent += 1;
                    if !conn.takes(m) {
                        continue;
                    }
                    tokio::time::sleep_until(next.into()).await;
                    next += per_conn;
                    let t = Instant::now();
                    let ok = conn.send(m).await;
                    lat.push(t.elapsed());
                    if !ok {
                        errors += 1;
                    }
                }
                let ran_out = sent == msgs.len();
                // Taken: the messages this writer sent (HTTP: lab results only).
                (lat.len(), lat, errors, sent, ran_out)
            })
        })
        .collect();
    let probe = {
        let template = p.probe.to_vec();
        let ids_patient = patient(&template);
        let (target, round) = (p.target.clone(), p.round);
        tokio::spawn(async move {
            let mut conn = Writer::connect(&target, 0).await;
            let mut client = Reader::connect(&target).await;
            let (mut fresh, mut timeouts) = (Vec::new(), 0usize);
            let mut k = 0u32;
            while Instant::now() < deadline {
                k += 1;
                // 5.000 to 9.999 g/dL: no synthetic result is this low, and each probe of
                // the round differs.
                let value = format!("{}.{:03}", 5 + (k / 1000) % 5, k % 1000);
                let now = chrono::Utc::now().format("%Y%m%d%H%M%S+0000").to_string();
                let msg = probe_message(&template, &format!("PROBE-{round}-{k}"), &now, &value);
                if !conn.send(&msg).await {
                    // Not accepted (the target refused or dropped it): counted, not timed.
                    timeouts += 1;
                    continue;
                }
                let acked = Instant::now();
                let want: f64 = value.parse().expect("value");
                let give_up = acked + Duration::from_secs(30);
                loop {
                    let seen = client.hemoglobin(&ids_patient).await;
                    if seen.is_some_and(|x| (x - want).abs() < 1e-9) {
                        fresh.push(acked.elapsed());
                        break;
                    }
                    if Instant::now() > give_up {
                        timeouts += 1;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            fresh.sort_unstable();
            (fresh, timeouts)
        })
    };
    let mut ack_lat = Vec::new();
    let (mut errors, mut acked, mut ran_out) = (0, 0, false);
    for (i, s) in senders.into_iter().enumerate() {
        let (taken, lat, e, sent, all) = s.await.expect("sender");
        ack_lat.extend(lat);
        errors += e;
        acked += taken;
        p.cursors[i] += sent;
        ran_out |= all;
    }
    let elapsed = started.elapsed().as_secs_f64();
    ack_lat.sort_unstable();
    let (fresh, probe_timeouts) = probe.await.expect("probe");
    stop.store(true, Ordering::Relaxed);
    let online = online.await.expect("online");
    Load {
        acked,
        elapsed,
        ran_out,
        ack_lat,
        fresh,
        probe_timeouts,
        errors,
        online,
    }
}
