//! Features per person (`ward materialize --entity person`, docs/mpi.md "Features per
//! person"): a timeline keyed by the person of the master patient index as known at each
//! time, and lookups by any of a person's source ids.
//!
//! The cohort is hand-written HL7 v2 ADT (MSH-7 is each row's `known_at`) from two sources:
//! the hospital's ADT (`A100`, `A300`, PID-3 under authority `ADT`) and a clinic
//! (`E200` under `CLINIC`). `A100` and `E200` are one woman, registered under her married
//! and maiden names, so no rule links them; a user links them at `T2` (`ward mpi relink`)
//! and unlinks them at `T3`. Every command runs in process through `ward::cli::run`, with a
//! manual clock.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use chrono::{DateTime, TimeZone, Utc};
use clap::Parser as _;

use ward::clock::{ManualClock, SharedClock};
use ward::features::{self, ChangePoint};
use ward::hash::ContentHash;
use ward::lookup::Online;
use ward::store::Store;

const SET: &str = "adm";

const FEATURES: &str = r#"
[[feature_set]]
name = "adm"
entity = "patient"
online = true

[[feature_set.features]]
name = "admissions_365d"
kind = "count"
table = "encounters"
filter = { class = "inpatient" }
window = "365d"

[[feature_set.features]]
name = "days_since_discharge"
kind = "days_since"
table = "encounters"
filter = { class = "inpatient" }
time = "discharge_time"
ttl = "none"
"#;

fn at(m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, m, d, 0, 0, 0).unwrap()
}

/// When the user links the two records.
fn t2() -> DateTime<Utc> {
    at(6, 1)
}

/// When the user unlinks them again.
fn t3() -> DateTime<Utc> {
    at(8, 1)
}

/// One ADT message: MSH-7 `ts`, the patient (PID-3 under `authority`), an inpatient stay
/// admitted at `admit` and, for an A03, discharged at `discharge`.
#[allow(clippy::too_many_arguments)]
fn adt(
    app: &str,
    authority: &str,
    ctl: &str,
    ts: &str,
    id: &str,
    name: &str,
    visit: &str,
    admit: &str,
    discharge: Option<&str>,
) -> String {
    let event = if discharge.is_some() { "A03" } else { "A01" };
    let mut pv1 = vec![String::new(); 46];
    pv1[0] = "PV1".into();
    pv1[1] = "1".into();
    pv1[2] = "I".into();
    pv1[3] = "4E^1^A".into();
    pv1[10] = "MED".into();
    pv1[19] = format!("{visit}^^^{authority}^VN");
    pv1[44] = admit.into();
    if let Some(d) = discharge {
        pv1[36] = "01".into();
        pv1[45] = d.into();
    }
    [
        format!(
            "MSH|^~\\&|{app}|{authority}|WARD|WARD|{ts}||ADT^{event}^ADT_{event}|{ctl}|P|2.5.1"
        ),
        format!("EVN|{event}|{ts}"),
        format!("PID|1||{id}^^^{authority}^MR||{name}||19600412|F"),
        pv1.join("|"),
    ]
    .join("\r")
        + "\r"
}

/// The two sources' files.
fn write_sources(dir: &Path) {
    let adt_msgs = [
        // A100: stays in January and March.
        adt(
            "ADT",
            "ADT",
            "a1",
            "20240110080000",
            "A100",
            "Doe^Jane",
            "V1",
            "20240110070000",
            None,
        ),
        adt(
            "ADT",
            "ADT",
            "a2",
            "20240115120000",
            "A100",
            "Doe^Jane",
            "V1",
            "20240110070000",
            Some("20240115110000"),
        ),
        adt(
            "ADT",
            "ADT",
            "a3",
            "20240310080000",
            "A100",
            "Doe^Jane",
            "V3",
            "20240310070000",
            None,
        ),
        adt(
            "ADT",
            "ADT",
            "a4",
            "20240312120000",
            "A100",
            "Doe^Jane",
            "V3",
            "20240310070000",
            Some("20240312110000"),
        ),
        // A300: someone else.
        adt(
            "ADT",
            "ADT",
            "a5",
            "20240120080000",
            "A300",
            "Roe^Ann",
            "V5",
            "20240120070000",
            None,
        ),
        adt(
            "ADT",
            "ADT",
            "a6",
            "20240122120000",
            "A300",
            "Roe^Ann",
            "V5",
            "20240120070000",
            Some("20240122110000"),
        ),
    ];
    // E200 (the clinic): one stay in February, under her maiden name.
    let clinic_msgs = [
        adt(
            "CLIN",
            "CLINIC",
            "c1",
            "20240201080000",
            "E200",
            "Smith^Janet",
            "W2",
            "20240201070000",
            None,
        ),
        adt(
            "CLIN",
            "CLINIC",
            "c2",
            "20240205120000",
            "E200",
            "Smith^Janet",
            "W2",
            "20240201070000",
            Some("20240205110000"),
        ),
    ];
    std::fs::create_dir_all(dir.join("adt")).unwrap();
    std::fs::create_dir_all(dir.join("clinic")).unwrap();
    std::fs::write(dir.join("adt/adt.hl7"), adt_msgs.concat()).unwrap();
    std::fs::write(dir.join("clinic/clinic.hl7"), clinic_msgs.concat()).unwrap();
}

struct Fx {
    _tmp: tempfile::TempDir,
    store_dir: std::path::PathBuf,
    features: std::path::PathBuf,
    clock: Arc<ManualClock>,
}

impl Fx {
    /// A store with both sources ingested and linked by the rules (which link nothing).
    fn new() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        write_sources(&src);
        let features = tmp.path().join("features.toml");
        std::fs::write(&features, FEATURES).unwrap();
        let fx = Fx {
            store_dir: tmp.path().join("store"),
            features,
            clock: Arc::new(ManualClock::new(at(5, 1))),
            _tmp: tmp,
        };
        fx.ward(&["init"]);
        let adt = src.join("adt");
        let clinic = src.join("clinic");
        fx.ward(&[
            "ingest",
            "--format",
            "hl7v2",
            adt.to_str().unwrap(),
            clinic.to_str().unwrap(),
        ]);
        fx.ward(&["mpi", "link"]);
        fx
    }

    /// Runs `ward ARGS` in process on the store, with the fixture's clock.
    fn ward(&self, args: &[&str]) {
        self.try_ward(args)
            .unwrap_or_else(|e| panic!("ward {args:?}: {e:#}"));
    }

    fn try_ward(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut argv = vec!["ward", "--store", self.store_dir.to_str().unwrap()];
        argv.extend_from_slice(args);
        let cli = ward::cli::Cli::try_parse_from(argv)?;
        let clock: SharedClock = self.clock.clone();
        ward::cli::run(cli, clock)
    }

    fn store(&self) -> Store {
        let clock: SharedClock = self.clock.clone();
        Store::open_existing(&self.store_dir, clock).unwrap()
    }

    fn materialize(&self, extra: &[&str]) -> ContentHash {
        let f = self.features.to_str().unwrap().to_string();
        let mut args = vec!["materialize", "--features", &f, "--set", SET];
        args.extend_from_slice(extra);
        self.ward(&args);
        self.store()
            .head(&features::timeline_name(SET))
            .unwrap()
            .expect("a timeline")
            .hash
    }

    fn series(&self, timeline: &ContentHash, id: &str, feature: &str) -> Vec<ChangePoint> {
        let store = self.store();
        let (_, index) = rt()
            .block_on(features::load_index(&store, timeline))
            .unwrap();
        index.series(id, feature).to_vec()
    }

    /// `ward historical` of `rows` (patient id, time) against `timeline`: the training rows
    /// as (patient id, person id, admissions, days since discharge or `None`).
    fn historical(&self, timeline: &ContentHash, rows: &[(&str, DateTime<Utc>)]) -> Vec<Row> {
        let csv = self._tmp.path().join("entities.csv");
        let mut text = "patient_id,timestamp\n".to_string();
        for (p, t) in rows {
            text += &format!("{p},{}\n", t.to_rfc3339());
        }
        std::fs::write(&csv, text).unwrap();
        let tl = timeline.to_string();
        self.ward(&[
            "historical",
            "--set",
            SET,
            "--entities",
            csv.to_str().unwrap(),
            "--timeline",
            &tl,
        ]);
        let store = self.store();
        let head = store.head("training-adm").unwrap().expect("a training set");
        let (_, batches) = rt().block_on(store.read(&head.hash)).unwrap();
        read_rows(&batches)
    }
}

type Row = (String, Option<String>, f64, Option<f64>);

fn read_rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let text = |name: &str| b.column_by_name(name).map(|c| c.as_string::<i32>().clone());
        let num = |name: &str| {
            b.column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"))
                .as_primitive::<Float64Type>()
                .clone()
        };
        let (p, person) = (text("patient_id").unwrap(), text("person_id"));
        let (n, d) = (num("admissions_365d"), num("days_since_discharge"));
        for i in 0..b.num_rows() {
            out.push((
                p.value(i).to_string(),
                person.as_ref().map(|c| c.value(i).to_string()),
                n.value(i),
                (!d.is_null(i)).then(|| d.value(i)),
            ));
        }
    }
    out
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn days(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (from - to).num_microseconds().unwrap() as f64 / 86_400e6
}

/// The person-keyed timeline counts the admissions of both sources from the link on, and
/// not before (a link learned at T2 changes no training row at T1 < T2); lookups by either
/// source id answer the person's features and say which person; an unlink splits them
/// again; an unknown id is an unknown entity.
#[test]
fn features_per_person_as_known_at_t() {
    let fx = Fx::new();
    // The rules link nothing here: two people as far as the index knows.
    let before_link = fx.materialize(&["--entity", "person"]);
    let patient_keyed = fx.materialize(&[]);
    assert_ne!(before_link, patient_keyed);

    fx.clock.set(t2());
    fx.ward(&[
        "mpi",
        "relink",
        "A100",
        "E200",
        "--reason",
        "one woman: married and maiden names",
    ]);
    fx.clock.set(at(6, 15));
    let linked = fx.materialize(&["--entity", "person"]);
    assert_ne!(linked, before_link, "the new link changes the timeline");

    // Lineage: keyed by person, the mpi_links version read is an input.
    let store = fx.store();
    let m = store.manifest(&linked).unwrap();
    let links = store.head("mpi_links").unwrap().unwrap().hash;
    assert_eq!(m.lineage.inputs.last(), Some(&links));
    assert_eq!(m.lineage.params["entity"], "person");
    assert_eq!(
        m.lineage.params["tables"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        "mpi_links"
    );
    // The patient-keyed lineage is as before: no entity, no links.
    let pm = store.manifest(&patient_keyed).unwrap();
    assert!(pm.lineage.params.get("entity").is_none());
    assert!(!pm.lineage.inputs.contains(&links));

    // Before T2 the person A100 is A100's records only; from T2 on, both sources'
    // admissions (February's E200 stay included: known by then, and now hers).
    let t1 = at(4, 1);
    let later = at(7, 1);
    let rows = fx.historical(
        &linked,
        &[
            ("A100", t1),
            ("E200", t1),
            ("A100", later),
            ("E200", later),
            ("A300", later),
            ("Z999", later),
        ],
    );
    let dsd_a100 = days(t1, Utc.with_ymd_and_hms(2024, 3, 12, 11, 0, 0).unwrap());
    let dsd_e200 = days(t1, Utc.with_ymd_and_hms(2024, 2, 5, 11, 0, 0).unwrap());
    let dsd_later = days(later, Utc.with_ymd_and_hms(2024, 3, 12, 11, 0, 0).unwrap());
    let dsd_a300 = days(later, Utc.with_ymd_and_hms(2024, 1, 22, 11, 0, 0).unwrap());
    let s = |x: &str| x.to_string();
    assert_eq!(
        rows,
        vec![
            (s("A100"), Some(s("A100")), 2.0, Some(dsd_a100)),
            (s("E200"), Some(s("E200")), 1.0, Some(dsd_e200)),
            (s("A100"), Some(s("A100")), 3.0, Some(dsd_later)),
            (s("E200"), Some(s("A100")), 3.0, Some(dsd_later)),
            (s("A300"), Some(s("A300")), 1.0, Some(dsd_a300)),
            // Unknown: as an unknown patient (count 0, no discharge), its own person.
            (s("Z999"), Some(s("Z999")), 0.0, None),
        ]
    );
    // The rows at T1 are what the timeline made before the link says (no leakage).
    let early = fx.historical(&before_link, &[("A100", t1), ("E200", t1)]);
    assert_eq!(early, rows[..2].to_vec());
    // The timeline itself: A100's admissions change at T2 (to 3), not before.
    let a100 = fx.series(&linked, "A100", "admissions_365d");
    let t2_us = t2().timestamp_micros();
    assert!(a100
        .iter()
        .filter(|c| c.effective_at < t2_us)
        .all(|c| c.value_num != Some(3.0)));
    let at_t2 = a100
        .iter()
        .find(|c| c.effective_at == t2_us)
        .expect("a change at T2");
    assert_eq!((at_t2.value_num, at_t2.count), (Some(3.0), 3));
    // E200 is no person of its own from T2 on: its series empties there.
    let e200 = fx.series(&linked, "E200", "admissions_365d");
    assert_eq!(
        e200.last().map(|c| (c.effective_at, c.count)),
        Some((t2_us, 0))
    );

    // An unlinked record's change points are the patient-keyed timeline's.
    for f in ["admissions_365d", "days_since_discharge"] {
        assert_eq!(
            fx.series(&linked, "A300", f),
            fx.series(&patient_keyed, "A300", f),
            "{f}"
        );
    }

    // Online: either source id answers the person's values, now from the injected clock.
    let online_at = |hash: &ContentHash, ids: &[&str]| {
        let store = fx.store();
        rt().block_on(async {
            let online = Online::new(store);
            let a = online
                .get(
                    SET,
                    &ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    &[],
                    None,
                )
                .await
                .unwrap();
            assert_eq!(&a.timeline, hash);
            a.patients
                .into_iter()
                .map(|p| {
                    let v: Vec<_> = p.values.into_iter().map(|(_, v)| v).collect();
                    (p.patient_id, p.person_id, v)
                })
                .collect::<Vec<_>>()
        })
    };
    fx.clock.set(later);
    let got = online_at(&linked, &["A100", "E200", "Z999"]);
    assert_eq!(got[0].1.as_deref(), Some("A100"));
    assert_eq!(got[1].1.as_deref(), Some("A100"));
    assert_eq!(got[0].2, got[1].2, "the same values by either source id");
    assert_eq!(got[0].2[0].value, Some(ward::features::Value::Num(3.0)));
    assert_eq!(got[2].1.as_deref(), Some("Z999"));
    assert_eq!(got[2].2[1].status, ward::features::Status::NoData);

    // Deterministic: the same inputs give the same version; rebuilt from its lineage too.
    assert_eq!(fx.materialize(&["--entity", "person", "--full"]), linked);
    fx.ward(&["rebuild", &linked.to_string()]);

    // The unlink at T3, then a new materialization: two people again from T3 on; as known
    // before T3 they were one.
    fx.clock.set(t3());
    fx.ward(&[
        "mpi",
        "unlink",
        "A100",
        "E200",
        "--reason",
        "checked: two women after all",
    ]);
    fx.clock.set(at(8, 15));
    let split = fx.materialize(&["--entity", "person"]);
    assert_ne!(split, linked);
    let after = at(9, 1);
    let rows = fx.historical(&split, &[("A100", after), ("E200", after), ("E200", later)]);
    assert_eq!(
        rows.iter()
            .map(|r| (r.0.as_str(), r.1.as_deref(), r.2))
            .collect::<Vec<_>>(),
        [
            ("A100", Some("A100"), 2.0),
            ("E200", Some("E200"), 1.0),
            ("E200", Some("A100"), 3.0),
        ]
    );
    fx.clock.set(after);
    let got = online_at(&split, &["A100", "E200"]);
    assert_eq!(got[1].1.as_deref(), Some("E200"));
    assert_eq!(got[1].2[0].value, Some(ward::features::Value::Num(1.0)));

    // Back to the default: keyed by patient, the very version made before any of this
    // (the person-keyed head is not built on).
    assert_eq!(fx.materialize(&[]), patient_keyed);
    let rows = fx.historical(&patient_keyed, &[("E200", later)]);
    assert_eq!(
        rows,
        vec![(
            s("E200"),
            None,
            1.0,
            Some(days(
                later,
                Utc.with_ymd_and_hms(2024, 2, 5, 11, 0, 0).unwrap()
            ))
        )]
    );
}

/// Bad requests are refused with the reason: an unknown entity, person keys without links,
/// and person keys "as occurred".
#[test]
fn person_keys_need_links_and_knowledge_as_known() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_sources(&src);
    let features_path = tmp.path().join("features.toml");
    std::fs::write(&features_path, FEATURES).unwrap();
    let fx = Fx {
        store_dir: tmp.path().join("store"),
        features: features_path,
        clock: Arc::new(ManualClock::new(at(5, 1))),
        _tmp: tmp,
    };
    fx.ward(&["init"]);
    fx.ward(&[
        "ingest",
        "--format",
        "hl7v2",
        src.join("adt").to_str().unwrap(),
    ]);
    let f = fx.features.to_str().unwrap().to_string();
    let err = |extra: &[&str]| {
        let mut args = vec!["materialize", "--features", &f, "--set", SET];
        args.extend_from_slice(extra);
        format!("{:#}", fx.try_ward(&args).unwrap_err())
    };
    let e = err(&["--entity", "household"]);
    assert!(e.contains("--entity") && e.contains("household"), "{e}");
    let e = err(&["--entity", "person"]);
    assert!(
        e.contains("mpi_links") && e.contains("ward mpi link"),
        "{e}"
    );
    fx.ward(&["mpi", "link"]);
    let e = err(&["--entity", "person", "--as-occurred"]);
    assert!(e.contains("as known"), "{e}");
}

/// The gRPC contract: Materialize with `entity = "person"` names the links version used;
/// GetOnlineFeatures by either source id answers the person's values and names the person;
/// an unknown entity is InvalidArgument.
#[test]
fn the_service_materializes_and_answers_per_person() {
    use crate::common::proto::{self, features_client::FeaturesClient};
    use ward::service::{ServeConfig, Server};

    let fx = Fx::new();
    fx.clock.set(t2());
    fx.ward(&["mpi", "relink", "A100", "E200", "--reason", "one woman"]);
    fx.clock.set(at(6, 15));
    let links = fx.store().head("mpi_links").unwrap().unwrap().hash;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let repo = features::FeatureRepo::parse(FEATURES, "features.toml").unwrap();
        let cfg = ServeConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..ServeConfig::default()
        };
        let server = Server::bind(&cfg, fx.store(), repo).await.unwrap();
        let addr = server.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        let mut c = FeaturesClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let m = c
            .materialize(proto::MaterializeRequest {
                feature_set: SET.into(),
                as_occurred: false,
                full: false,
                entity: "person".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(m.mpi_links, links.to_string());
        assert!(m.full_reason.contains("person"), "{}", m.full_reason);
        let online = c
            .get_online_features(proto::OnlineRequest {
                feature_set: SET.into(),
                patient_ids: vec!["A100".into(), "E200".into(), "A300".into()],
                as_of: "2024-07-01T00:00:00Z".into(),
                features: vec!["admissions_365d".into()],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(online.timeline, m.timeline);
        let got: Vec<(&str, &str, Option<&proto::feature_value::Value>)> = online
            .patients
            .iter()
            .map(|p| {
                (
                    p.patient_id.as_str(),
                    p.person_id.as_str(),
                    p.values[0].value.as_ref(),
                )
            })
            .collect();
        let three = proto::feature_value::Value::Num(3.0);
        let one = proto::feature_value::Value::Num(1.0);
        assert_eq!(
            got,
            [
                ("A100", "A100", Some(&three)),
                ("E200", "A100", Some(&three)),
                ("A300", "A300", Some(&one)),
            ]
        );
        // Before the link was known, E200 is a person of her own.
        let before = c
            .get_online_features(proto::OnlineRequest {
                feature_set: SET.into(),
                patient_ids: vec!["E200".into()],
                as_of: "2024-04-01T00:00:00Z".into(),
                features: vec!["admissions_365d".into()],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(before.patients[0].person_id, "E200");
        assert_eq!(before.patients[0].values[0].value, Some(one.clone()));
        let err = c
            .materialize(proto::MaterializeRequest {
                feature_set: SET.into(),
                as_occurred: false,
                full: false,
                entity: "household".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("household"), "{}", err.message());
        let _ = tx.send(());
        served.await.unwrap().unwrap();
    });
}
