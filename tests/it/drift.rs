//! Monitoring (`docs/monitoring.md`): a server over a demo store with `[online_log]` on logs
//! the online lookups it answers; the log is flushed into versions chained by `previous`;
//! drift between a training set of the same patients at the same time and the log is about
//! 0, and large against a log whose values are shifted; the skew check replays every logged
//! lookup and finds nothing differing, and finds the one value tampered in a log built by
//! hand. The same through the `Monitoring` RPC, the command line (exit codes) and the web UI
//! (pages, JSON, an alert when skew is not 0, refusals by role).

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use tokio::sync::oneshot;

use crate::common::proto::{
    self, features_client::FeaturesClient, monitoring_client::MonitoringClient,
};
use ward::clock::ManualClock;
use ward::demo::{DemoOptions, READMISSION_FEATURES};
use ward::features::{FeatureRepo, Status, Value};
use ward::monitoring::log::{self, LoggedValue};
use ward::monitoring::{DriftRequest, LogConfig};
use ward::service::{ServeConfig, Server};
use ward::store::{Kind, PutOptions, Store, VersionRef};

const AS_OF: &str = "2024-01-01";

fn patients(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("P{i:07}")).collect()
}

/// Puts `rows` as a hand-built log version named `name` (no `previous`: read alone).
async fn put_log(store: &Store, name: &str, rows: &[LoggedValue]) -> ward::hash::ContentHash {
    let batch = log::to_batch(rows).expect("batch");
    store
        .put_batches(
            log::schema(),
            vec![batch],
            PutOptions::new(name, Kind::Other),
        )
        .await
        .expect("put log")
        .manifest
        .hash
}

fn ward_cmd(store: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run ward")
}

#[test]
fn online_lookups_are_logged_and_drift_and_skew_read_the_log() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let clock = Arc::new(ManualClock::new(
        "2026-06-01T00:00:00Z".parse().expect("time"),
    ));
    let store = Store::open(&store_dir, clock.clone()).expect("store");
    rt.block_on(ward::demo::run(
        &store,
        &dir.path().join("work"),
        &DemoOptions {
            patients: 60,
            seed: 5,
        },
        None,
    ))
    .expect("demo");
    let repo = FeatureRepo::parse(READMISSION_FEATURES, "readmission.toml").expect("repo");
    let cfg = ServeConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        // No flush by time in this test: it flushes by hand, and on shutdown.
        online_log: LogConfig {
            enabled: true,
            flush_secs: 3600.0,
            ..LogConfig::default()
        },
        ..ServeConfig::default()
    };
    let server = rt
        .block_on(Server::bind(&cfg, store.clone(), repo))
        .expect("bind");
    let online_log = server.online_log().expect("the log is on");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = rt.spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let ids = patients(60);
    let first = rt.block_on(async {
        let mut c = FeaturesClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        // Two requests (30 patients each), then a flush: one version.
        for chunk in ids.chunks(30) {
            c.get_online_features(proto::OnlineRequest {
                feature_set: "readmission_online".into(),
                patient_ids: chunk.to_vec(),
                as_of: AS_OF.into(),
                features: vec![],
            })
            .await
            .expect("online lookup");
        }
        assert!(online_log.buffered() > 0);
        let first = online_log.flush().await.expect("flush").expect("a version");
        assert_eq!(online_log.buffered(), 0);
        assert_eq!(
            online_log.flush().await.expect("flush"),
            None,
            "nothing left"
        );
        clock.advance(chrono::Duration::hours(1));
        // One more lookup, flushed when the server stops.
        c.get_online_features(proto::OnlineRequest {
            feature_set: "readmission_online".into(),
            patient_ids: vec!["P0000001".into()],
            as_of: AS_OF.into(),
            features: vec!["age".into(), "lace_total".into()],
        })
        .await
        .expect("online lookup");
        first
    });

    // The Monitoring RPC, on the running server (before the last flush: the first batch).
    let (rpc_drift, rpc_skew) = rt.block_on(async {
        let mut m = MonitoringClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let d = m
            .drift(proto::DriftRequest {
                training: String::new(),
                online: "online_log".into(),
                since: String::new(),
                feature_set: String::new(),
            })
            .await
            .expect_err("no training set named");
        assert_eq!(d.code(), tonic::Code::InvalidArgument, "{d:?}");
        let s = m
            .skew(proto::SkewRequest {
                online: "online_log".into(),
                since: String::new(),
            })
            .await
            .expect("skew")
            .into_inner();
        (d, s)
    });
    let _ = rpc_drift;
    assert!(rpc_skew.ok, "{rpc_skew:?}");
    assert_eq!(rpc_skew.differing, 0);
    assert_eq!(rpc_skew.lookups, 60);
    let _ = stop.send(());
    rt.block_on(served).expect("join").expect("served");

    // The log: two versions chained, lineage input = the timeline served.
    let head = store.head("online_log").expect("head").expect("a head");
    assert_ne!(head.hash, first);
    let m = store.manifest(&head.hash).expect("manifest");
    let p = log::Params::of(&m).expect("log params");
    assert_eq!(p.previous, Some(first));
    let online_timeline = store
        .resolve(&"timeline-readmission_online".parse().expect("ref"))
        .expect("timeline")
        .hash;
    assert_eq!(m.lineage.inputs, vec![online_timeline]);
    assert_eq!(
        m.labels.get(log::LABEL_KEY).map(String::as_str),
        Some(log::OP)
    );
    let whole = rt
        .block_on(log::read(
            &store,
            &VersionRef::Latest("online_log".into()),
            None,
        ))
        .expect("read log");
    assert_eq!(whole.versions, vec![head.hash, first]);
    assert_eq!(whole.lookups(), 61);
    let seqs: Vec<i64> = whole.rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..whole.rows.len() as i64).collect::<Vec<_>>());
    let last = whole.rows.last().expect("rows");
    assert_eq!(
        last.requested_at,
        "2026-06-01T01:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .expect("t")
    );
    assert_eq!(last.feature, "lace_total");
    // --since: only the last lookup.
    let recent = rt
        .block_on(log::read(
            &store,
            &VersionRef::Latest("online_log".into()),
            Some("2026-06-01T00:30:00Z".parse().expect("t")),
        ))
        .expect("read log");
    assert_eq!(recent.lookups(), 1);
    assert_eq!(
        recent.versions,
        vec![head.hash],
        "the walk stops before older batches"
    );

    // A training set of the same patients at the same time, from the same set (a training
    // set leaves out research opt-outs: the distributions are nearly, not exactly, equal).
    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("patient_id", DataType::Utf8, false),
            Field::new("timestamp", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(StringArray::from(ids.clone())),
            Arc::new(StringArray::from(vec![AS_OF; ids.len()])),
        ],
    )
    .expect("entities");
    let training = rt
        .block_on(ward::lookup::historical(
            &store,
            ward::lookup::HistoricalRequest::new(
                "readmission_online",
                ward::lookup::Entities::Batches(vec![entities]),
            ),
        ))
        .expect("training set")
        .hash;
    let same = rt
        .block_on(ward::monitoring::drift(
            &store,
            &DriftRequest {
                training: VersionRef::Hash(training),
                online: VersionRef::Hash(first),
                since: None,
                feature_set: None,
            },
        ))
        .expect("drift");
    assert!(same.features.len() >= 10, "{:?}", same.features);
    for f in &same.features {
        let psi = f.psi.expect("psi");
        assert!(
            psi < 0.1,
            "{}: PSI {psi} for the same distribution",
            f.feature
        );
        assert_eq!(f.level, ward::monitoring::drift::Level::Stable);
        assert_eq!(f.online_values, 60, "{}", f.feature);
        assert_eq!(f.bins.last().expect("bins").label, "no value");
    }
    assert!(same.not_served.is_empty(), "{:?}", same.not_served);

    // A shifted log: the same lookups, every number tripled and moved up by 100.
    let shifted: Vec<LoggedValue> = whole
        .rows
        .iter()
        .map(|r| LoggedValue {
            value: match &r.value {
                Some(Value::Num(x)) => Some(Value::Num(x * 3.0 + 100.0)),
                v => v.clone(),
            },
            ..r.clone()
        })
        .collect();
    let shifted_hash = rt.block_on(put_log(&store, "online_log_shifted", &shifted));
    let moved = rt
        .block_on(ward::monitoring::drift(
            &store,
            &DriftRequest {
                training: VersionRef::Hash(training),
                online: VersionRef::Hash(shifted_hash),
                since: None,
                feature_set: Some("readmission_online".into()),
            },
        ))
        .expect("drift");
    let age = moved
        .features
        .iter()
        .find(|f| f.feature == "age")
        .expect("age");
    assert!(age.psi.expect("psi") > 0.25, "{age:?}");
    assert!(moved.max_psi.expect("max") > 1.0, "{:?}", moved.max_psi);

    // Skew: 0 over the whole log.
    let skew = rt
        .block_on(ward::monitoring::skew(
            &store,
            &VersionRef::Latest("online_log".into()),
            None,
        ))
        .expect("skew");
    assert!(skew.ok(), "{:?}", skew.examples);
    assert_eq!(skew.values, whole.rows.len() as u64);
    assert_eq!(skew.timelines, vec![online_timeline.to_string()]);

    // One value tampered in a copy of the log: found, with its patient.
    let mut tampered = whole.rows.clone();
    let i = tampered
        .iter()
        .position(|r| r.status == Status::Present && matches!(r.value, Some(Value::Num(_))))
        .expect("a numeric value");
    if let Some(Value::Num(x)) = &mut tampered[i].value {
        *x += 1.0;
    }
    let victim = tampered[i].clone();
    rt.block_on(put_log(&store, "online_log_tampered", &tampered));
    let bad = rt
        .block_on(ward::monitoring::skew(
            &store,
            &VersionRef::Latest("online_log_tampered".into()),
            None,
        ))
        .expect("skew");
    assert!(!bad.ok());
    assert_eq!(bad.differing, 1);
    assert_eq!(bad.examples[0].patient_id, victim.patient_id);
    assert_eq!(bad.examples[0].feature, victim.feature);
    let f = bad
        .features
        .iter()
        .find(|f| f.feature == victim.feature)
        .expect("feature");
    assert_eq!(f.differing, 1);

    // The command line: exit status 0 without skew, 1 with; --fail-above for drift.
    let ok = ward_cmd(&store_dir, &["skew", "online_log", "--json"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("json");
    assert_eq!(v["differing"], 0);
    let no = ward_cmd(&store_dir, &["skew", "online_log_tampered"]);
    assert_eq!(no.status.code(), Some(1));
    let err = String::from_utf8_lossy(&no.stderr);
    assert!(err.contains("1 of") && err.contains("differ"), "{err}");
    let text = String::from_utf8_lossy(&no.stdout);
    assert!(text.contains(&victim.patient_id), "{text}");
    let t = training.to_string();
    let calm = ward_cmd(
        &store_dir,
        &[
            "drift",
            "--training",
            &t,
            "--online",
            &first.to_string(),
            "--fail-above",
            "0.25",
        ],
    );
    assert!(
        calm.status.success(),
        "{}",
        String::from_utf8_lossy(&calm.stderr)
    );
    assert!(String::from_utf8_lossy(&calm.stdout).contains("stable"));
    let alarm = ward_cmd(
        &store_dir,
        &[
            "drift",
            "--training",
            &t,
            "--online",
            "online_log_shifted",
            "--fail-above",
            "0.25",
        ],
    );
    assert_eq!(alarm.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&alarm.stderr).contains("age"));
    let unknown = ward_cmd(&store_dir, &["skew", "no_such_log"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no_such_log"));

    // The web UI (no authentication here): the drift page draws both histograms per
    // feature; the skew page says there is none, or raises the alarm.
    let running = rt
        .block_on(ward::live::serve_http(
            "127.0.0.1:0".parse().expect("addr"),
            &store,
            &ward::live::LiveConfig::default(),
            None,
            None,
            None,
        ))
        .expect("listener");
    let get = |target: &str| crate::ui::get(running.addr, target, &[]);
    let page = get(&format!("/ui/drift?training={t}&online=online_log_shifted"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<svg") && page.body.contains("class=\"bar online\""));
    assert!(page.body.contains("Significant drift"), "{}", page.body);
    let api = get(&format!("/api/drift?training={t}&online={first}"));
    assert_eq!(api.status, 200, "{}", api.body);
    assert!(api.json()["max_psi"].as_f64().expect("max") < 0.1);
    let calm = get("/ui/skew?online=online_log");
    assert_eq!(calm.status, 200, "{}", calm.body);
    assert!(calm.body.contains("No skew") && !calm.body.contains("role=\"alert\""));
    let loud = get("/ui/skew?online=online_log_tampered");
    assert_eq!(loud.status, 200, "{}", loud.body);
    assert!(loud.body.contains("role=\"alert\""), "{}", loud.body);
    assert!(loud.body.contains(&victim.patient_id));
    let json = get("/api/skew?online=online_log_tampered").json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["differing"], 1);
    let bad = get("/api/drift?training=&online=online_log");
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[test]
fn with_authentication_drift_needs_datasets_read_and_skew_historical_identified() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store_dir = tmp.path().join("store");
    {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let clock = Arc::new(ManualClock::new(
            "2026-06-01T00:00:00Z".parse().expect("time"),
        ));
        let store = Store::open(&store_dir, clock).expect("store");
        // A training set and a log built by hand; the log names a timeline that is not in
        // the store, so its lookups cannot be replayed: the skew check raises the alarm.
        let schema = Arc::new(Schema::new(vec![
            Field::new("patient_id", DataType::Utf8, false),
            Field::new("score", DataType::Float64, true),
            Field::new("score__status", DataType::Utf8, false),
        ]));
        let n = 50;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(patients(n))),
                Arc::new(Float64Array::from(
                    (0..n).map(|i| Some(i as f64)).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(vec!["present"; n])),
            ],
        )
        .expect("batch");
        rt.block_on(store.put_batches(
            schema,
            vec![batch],
            PutOptions::new("training-score", Kind::Training),
        ))
        .expect("training");
        let rows: Vec<LoggedValue> = (0..n)
            .map(|i| LoggedValue {
                seq: i as i64,
                lookup: i as i64,
                requested_at: "2026-05-31T00:00:00Z".parse().expect("t"),
                as_of: "2026-05-31T00:00:00Z".parse().expect("t"),
                feature_set: "score_online".into(),
                timeline: format!("b3:{}", "0".repeat(64)),
                patient_id: format!("P{:07}", i + 1),
                feature: "score".into(),
                value: Some(Value::Num(i as f64 + 1000.0)),
                status: Status::Present,
            })
            .collect();
        rt.block_on(put_log(&store, "online_log", &rows));
    }
    let conf = tmp.path().join("conf");
    let config = crate::common::token_config(
        &conf,
        &[
            ("analyst", "reader-token-0123456789", "data-scientist"),
            ("nurse", "clinic-token-0123456789", "clinician"),
            ("steward", "steward-token-0123456789", "steward"),
        ],
    );
    let (mut child, addr) = crate::common::spawn_ward_serve(
        &store_dir,
        &[
            "--http".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        "http listening on ",
    );
    let reader = [("Authorization", "Bearer reader-token-0123456789")];
    let clinic = [("Authorization", "Bearer clinic-token-0123456789")];
    let steward = [("Authorization", "Bearer steward-token-0123456789")];
    let drift = "/ui/drift?training=training-score&online=online_log";
    let skew = "/ui/skew?online=online_log";
    let get = |t: &str, h: &[(&str, &str)]| crate::ui::get(addr, t, h);
    let answers = [
        get(drift, &[]),
        get(drift, &clinic),
        get(drift, &reader),
        get(skew, &reader),
        get(skew, &steward),
        get("/api/skew?online=online_log", &clinic),
    ];
    child.kill().expect("kill");
    child.wait().expect("wait");
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![401, 403, 200, 403, 200, 403]);
    assert!(answers[1].body.contains("<h1>403"), "{}", answers[1].body);
    let page = &answers[2].body;
    assert!(
        page.contains("<svg") && page.contains("significant"),
        "{page}"
    );
    let skew_page = &answers[4].body;
    assert!(skew_page.contains("role=\"alert\""), "{skew_page}");
    assert!(skew_page.contains("cannot be replayed"), "{skew_page}");
    assert_eq!(answers[5].json()["error"]["code"], "permission_denied");
    // Each request audited with its action.
    let records: Vec<serde_json::Value> = crate::common::audit_records(&conf.join("audit"))
        .into_iter()
        .filter(|r| {
            r["rpc"]
                .as_str()
                .is_some_and(|x| x.contains("/drift") || x.contains("/skew"))
        })
        .collect();
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or(""),
                r["decision"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("datasets_read", "denied"),
            ("datasets_read", "denied"),
            ("datasets_read", "allowed"),
            ("historical_identified", "denied"),
            ("historical_identified", "allowed"),
            ("historical_identified", "denied"),
        ]
    );
}

/// Not a check: the cost of the log on the online path. Two servers over one demo store,
/// the log off and on (flushing every 50 ms, so flushes run during the measurement), each
/// asked the same lookups in turn (`WARD_DRIFT_LOOKUPS`, default 400, of 20 patients x all
/// features) by one client; the median and 99th percentile of each are printed (run with
/// `--nocapture`). No timing is asserted: the machine is shared.
#[test]
fn online_lookup_latency_with_and_without_the_log_is_timed() {
    let n: usize = std::env::var("WARD_DRIFT_LOOKUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(
        "2026-06-01T00:00:00Z".parse().expect("time"),
    ));
    let store = Store::open(dir.path().join("store"), clock).expect("store");
    rt.block_on(ward::demo::run(
        &store,
        &dir.path().join("work"),
        &DemoOptions {
            patients: 60,
            seed: 5,
        },
        None,
    ))
    .expect("demo");
    let mut stops = Vec::new();
    let mut addrs = Vec::new();
    let mut logs = Vec::new();
    for enabled in [false, true] {
        let repo = FeatureRepo::parse(READMISSION_FEATURES, "readmission.toml").expect("repo");
        let cfg = ServeConfig {
            addr: "127.0.0.1:0".parse().expect("addr"),
            online_log: LogConfig {
                enabled,
                flush_secs: 0.05,
                ..LogConfig::default()
            },
            ..ServeConfig::default()
        };
        let server = rt
            .block_on(Server::bind(&cfg, store.clone(), repo))
            .expect("bind");
        addrs.push(server.local_addr());
        logs.push(server.online_log());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = rt.spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        stops.push((stop, served));
    }
    let ids = patients(20);
    let times = rt.block_on(async {
        let mut clients = Vec::new();
        for a in &addrs {
            clients.push(
                FeaturesClient::connect(format!("http://{a}"))
                    .await
                    .expect("connect"),
            );
        }
        let mut times = vec![Vec::with_capacity(n), Vec::with_capacity(n)];
        for i in 0..n + 20 {
            for (k, c) in clients.iter_mut().enumerate() {
                let t = std::time::Instant::now();
                c.get_online_features(proto::OnlineRequest {
                    feature_set: "readmission_online".into(),
                    patient_ids: ids.clone(),
                    as_of: AS_OF.into(),
                    features: vec![],
                })
                .await
                .expect("online lookup");
                // The first 20 of each warm up.
                if i >= 20 {
                    times[k].push(t.elapsed());
                }
            }
        }
        times
    });
    for (stop, served) in stops {
        let _ = stop.send(());
        rt.block_on(served).expect("join").expect("served");
    }
    let logged = rt
        .block_on(log::read(
            &store,
            &VersionRef::Latest("online_log".into()),
            None,
        ))
        .expect("the log");
    assert_eq!(logged.lookups(), (n + 20) * ids.len());
    for (name, mut t) in ["log off", "log on"].into_iter().zip(times) {
        t.sort();
        println!(
            "online lookup, 20 patients, {name}: p50 {:?}, p99 {:?} ({} lookups)",
            t[t.len() / 2],
            t[t.len() * 99 / 100],
            t.len()
        );
    }
    println!(
        "the log: {} versions, {} values",
        logged.versions.len(),
        logged.rows.len()
    );
    let _ = logs;
}
