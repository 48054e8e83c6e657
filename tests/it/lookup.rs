//! Point-in-time lookups: the wide as-of join against a brute-force reference; historical
//! training sets through the store (lineage, rebuild, labels); online equals historical; the
//! online index swapped while requests run.

mod historical_reference;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};
use chrono::{DateTime, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ward::clock::{ManualClock, SharedClock};
use ward::curated::CuratedTables;
use ward::error::Error;
use ward::features::{self, FeatureRepo, MaterializeOptions, Value};
use ward::lookup::asof::{asof_join, AsofColumns, Untimed};
use ward::lookup::{self, Entities, HistoricalRequest, Online};
use ward::store::{Kind, Store, VersionRef};
use ward::synth::{generate_cohort, SynthOptions};

const EXAMPLE: &str = include_str!("../../examples/features/readmission.toml");
const DAY: i64 = 86_400_000_000;

// ---------------------------------------------------------------------------------------
// The wide as-of join (`ward asof`) against brute force
// ---------------------------------------------------------------------------------------

struct Wide {
    pid: Vec<String>,
    ev: Vec<i64>,
    cr: Vec<i64>,
    hr: Vec<Option<f64>>,
    n: Vec<i64>,
}

/// Random feature rows with ties on the event time (created earlier or later), nulls, and
/// patients without rows; entity rows at exact event times, at TTL boundaries (and 1 us
/// either side), before all data, duplicated, and for unknown patients.
fn wide_data(seed: u64, ttl: i64) -> (Wide, Vec<(String, i64)>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let base = Utc
        .with_ymd_and_hms(2023, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp_micros();
    let mut w = Wide {
        pid: vec![],
        ev: vec![],
        cr: vec![],
        hr: vec![],
        n: vec![],
    };
    for i in 0..600 {
        let p = format!("p{:03}", rng.random_range(0..40));
        let ev = base + rng.random_range(0..200) * DAY / 4;
        w.pid.push(p.clone());
        w.ev.push(ev);
        w.cr.push(ev + rng.random_range(0..DAY));
        w.hr.push((rng.random_range(0..20) != 0).then(|| rng.random_range(40.0..160.0)));
        w.n.push(i);
        if rng.random_range(0..10) == 0 {
            // A tie: same patient and event time, created earlier or later.
            w.pid.push(p);
            w.ev.push(ev);
            w.cr.push(ev + rng.random_range(0..DAY));
            w.hr.push(Some(rng.random_range(40.0..160.0)));
            w.n.push(10_000 + i);
        }
    }
    let mut ent = Vec::new();
    for _ in 0..400 {
        let p = format!("p{:03}", rng.random_range(0..45)); // 40..45 have no rows
        let k = rng.random_range(0..w.ev.len());
        let t = match rng.random_range(0..7) {
            0 => w.ev[k],
            1 => w.ev[k] + ttl,
            2 => w.ev[k] + ttl - 1,
            3 => w.ev[k] + ttl + 1,
            4 => base - 365 * DAY,
            _ => base + rng.random_range(0..60 * DAY),
        };
        let p = if rng.random_range(0..2) == 0 {
            w.pid[k].clone()
        } else {
            p
        };
        ent.push((p.clone(), t));
        if rng.random_range(0..8) == 0 {
            ent.push((p, t));
        }
    }
    (w, ent)
}

fn write_parquet(path: &Path, batch: &RecordBatch, row_group: usize) {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .build();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn ts(v: impl IntoIterator<Item = i64>) -> Arc<TimestampMicrosecondArray> {
    Arc::new(TimestampMicrosecondArray::from_iter_values(v).with_timezone("UTC"))
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn wide_files(dir: &Path, w: &Wide, ent: &[(String, i64)], row_group: usize) {
    let fschema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("created_timestamp", ts_type(), false),
        Field::new("heart_rate", DataType::Float64, true),
        Field::new("n", DataType::Int64, false),
    ]));
    let fb = RecordBatch::try_new(
        fschema,
        vec![
            Arc::new(StringArray::from_iter_values(&w.pid)),
            ts(w.ev.iter().copied()),
            ts(w.cr.iter().copied()),
            Arc::new(Float64Array::from(w.hr.clone())),
            Arc::new(Int64Array::from(w.n.clone())),
        ],
    )
    .unwrap();
    write_parquet(&dir.join("features.parquet"), &fb, row_group);
    let eschema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("event_timestamp", ts_type(), false),
    ]));
    let eb = RecordBatch::try_new(
        eschema,
        vec![
            Arc::new(StringArray::from_iter_values(
                ent.iter().map(|e| e.0.as_str()),
            )),
            ts(ent.iter().map(|e| e.1)),
        ],
    )
    .unwrap();
    write_parquet(&dir.join("entities.parquet"), &eb, row_group);
}

/// The reference: scan every feature row for each entity row.
fn brute(w: &Wide, p: &str, t: i64, ttl: Option<i64>) -> Option<usize> {
    let mut best: Option<usize> = None;
    for k in 0..w.pid.len() {
        let inside = w.pid[k] == p && w.ev[k] <= t && ttl.is_none_or(|ttl| w.ev[k] > t - ttl);
        if inside {
            let better = match best {
                None => true,
                Some(b) => (w.ev[k], w.cr[k], k) > (w.ev[b], w.cr[b], b),
            };
            if better {
                best = Some(k);
            }
        }
    }
    best
}

#[test]
fn asof_join_matches_brute_force_at_every_row_group_size() {
    let ttl = 90 * DAY;
    let (w, all) = wide_data(3, ttl);
    let mut statuses = [0usize; 2];
    // All entity rows (winners dense in every row group: whole pages decoded and filtered),
    // and the first 6 (winners sparse in large groups: Parquet row selection).
    for ent in [&all[..], &all[..6]] {
        for row_group in [1usize, 2, 7, 49, 50, 51, 100, 100_000] {
            for ttl in [Some(ttl), None] {
                let dir = tempfile::tempdir().unwrap();
                wide_files(dir.path(), &w, ent, row_group);
                let (out, stats) = asof_join(
                    &dir.path().join("features.parquet"),
                    &dir.path().join("entities.parquet"),
                    ttl,
                    &AsofColumns::default(),
                    &Untimed,
                )
                .unwrap();
                assert_eq!(out.num_rows(), ent.len(), "one row per entity row");
                assert_eq!(stats.feature_rows, w.pid.len());
                let row_id = out.column(0).as_primitive::<Int64Type>();
                let pid = out.column(1).as_string::<i32>();
                let t = out
                    .column(2)
                    .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                let hr = out
                    .column_by_name("heart_rate")
                    .unwrap()
                    .as_primitive::<Float64Type>();
                let n = out.column_by_name("n").unwrap().as_primitive::<Int64Type>();
                let mut seen = vec![false; ent.len()];
                for i in 0..out.num_rows() {
                    let r = row_id.value(i) as usize;
                    assert!(!seen[r], "row {r} twice");
                    seen[r] = true;
                    assert_eq!((pid.value(i), t.value(i)), (ent[r].0.as_str(), ent[r].1));
                    if i > 0 {
                        let prev = (pid.value(i - 1), t.value(i - 1), row_id.value(i - 1));
                        assert!(prev < (pid.value(i), t.value(i), row_id.value(i)), "sorted");
                    }
                    let want = brute(&w, &ent[r].0, ent[r].1, ttl);
                    let ctx = format!("row group {row_group} ttl {ttl:?} entity {:?}", ent[r]);
                    match want {
                        Some(k) => {
                            assert_eq!(n.value(i), w.n[k], "{ctx}");
                            assert!(!n.is_null(i), "{ctx}");
                            assert_eq!(hr.is_null(i), w.hr[k].is_none(), "{ctx}");
                            if let Some(v) = w.hr[k] {
                                assert_eq!(hr.value(i), v, "{ctx}");
                            }
                            statuses[0] += 1;
                        }
                        None => {
                            assert!(n.is_null(i) && hr.is_null(i), "{ctx}: expected no match");
                            statuses[1] += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(statuses[0] > 1000 && statuses[1] > 200, "{statuses:?}");
}

#[test]
fn asof_join_names_a_missing_column_and_a_null_key() {
    let dir = tempfile::tempdir().unwrap();
    let (w, ent) = wide_data(5, 90 * DAY);
    wide_files(dir.path(), &w, &ent, 100);
    let cols = AsofColumns {
        created: "known".into(),
        ..AsofColumns::default()
    };
    let err = asof_join(
        &dir.path().join("features.parquet"),
        &dir.path().join("entities.parquet"),
        None,
        &cols,
        &Untimed,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("features.parquet") && err.contains("known"),
        "{err}"
    );

    let eschema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, true),
        Field::new("event_timestamp", ts_type(), false),
    ]));
    let eb = RecordBatch::try_new(
        eschema,
        vec![
            Arc::new(StringArray::from(vec![Some("p001"), None])),
            ts([1, 2]),
        ],
    )
    .unwrap();
    write_parquet(&dir.path().join("entities.parquet"), &eb, 10);
    let err = asof_join(
        &dir.path().join("features.parquet"),
        &dir.path().join("entities.parquet"),
        None,
        &AsofColumns::default(),
        &Untimed,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("entities.parquet row 1") && err.contains("patient_id"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Historical and online through the store
// ---------------------------------------------------------------------------------------

fn store_at(dir: &Path, clock: SharedClock) -> Store {
    Store::open(dir.join("store"), clock).unwrap()
}

async fn put_cohort(store: &Store, patients: u64, seed: u64) -> CuratedTables {
    let opts = SynthOptions {
        patients,
        seed,
        ..SynthOptions::default()
    };
    let tables = generate_cohort(&opts);
    crate::common::put_curated(store, &tables).await;
    tables
}

/// Entity rows: inpatient discharges of the cohort plus random times, some duplicated,
/// some for unknown patients, with a passthrough column.
fn entity_rows(tables: &CuratedTables, seed: u64) -> (RecordBatch, Vec<(String, i64)>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows: Vec<(String, i64)> = tables
        .encounters
        .iter()
        .filter_map(|e| Some((e.patient_id.clone(), e.discharge_time?.timestamp_micros())))
        .take(300)
        .collect();
    let lo = Utc
        .with_ymd_and_hms(2015, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp_micros();
    let hi = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp_micros();
    for i in 0..200 {
        let p = if i % 20 == 0 {
            "nobody".to_string()
        } else {
            tables.patients[rng.random_range(0..tables.patients.len())]
                .patient_id
                .clone()
        };
        rows.push((p, rng.random_range(lo..hi)));
    }
    let dups: Vec<_> = rows.iter().step_by(25).cloned().collect();
    rows.extend(dups);
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("timestamp", ts_type(), false),
        Field::new("split", DataType::Utf8, false),
    ]));
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_str()),
            )),
            ts(rows.iter().map(|r| r.1)),
            Arc::new(StringArray::from_iter_values((0..rows.len()).map(|i| {
                if i % 4 == 0 {
                    "test"
                } else {
                    "train"
                }
            }))),
        ],
    )
    .unwrap();
    (b, rows)
}

fn at(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap()
}

#[tokio::test]
async fn historical_training_set_lineage_rebuild_and_online_agree() {
    let dir = tempfile::tempdir().unwrap();
    let clock: SharedClock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap(),
    ));
    let store = store_at(dir.path(), clock);
    let tables = put_cohort(&store, 150, 9).await;
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let opts = MaterializeOptions::default();
    let tl = features::materialize(&store, &repo, "readmission", &opts)
        .await
        .unwrap();
    let online_tl = features::materialize(&store, &repo, "readmission_online", &opts)
        .await
        .unwrap();
    let (entities, rows) = entity_rows(&tables, 4);

    // Historical with labels: allowed.
    let req = HistoricalRequest::new("readmission", Entities::Batches(vec![entities.clone()]));
    let out = lookup::historical(&store, req).await.unwrap();
    assert_eq!(out.rows, rows.len());
    assert_eq!(out.timeline, Some(tl.hash));
    let m = store.manifest(&out.hash).unwrap();
    assert_eq!(m.kind, Kind::Training);
    assert_eq!(m.name, "training-readmission");
    assert_eq!(m.lineage.inputs, vec![tl.hash, out.entities]);
    assert_eq!(
        m.lineage.definition,
        Some(repo.set("readmission").unwrap().definition_hash())
    );
    assert_eq!(m.lineage.params["op"], "historical");
    let (_, training) = store.read(&out.hash).await.unwrap();
    let training = arrow::compute::concat_batches(&training[0].schema(), &training).unwrap();
    assert_eq!(
        training.column_by_name("split").unwrap().as_ref(),
        entities.column_by_name("split").unwrap().as_ref(),
        "extra columns pass through in input order"
    );
    let label = training.column_by_name("readmitted_30d").unwrap();
    assert!(label
        .as_primitive::<Float64Type>()
        .iter()
        .flatten()
        .any(|v| v == 1.0));

    // Rebuild from lineage: the same hash; the same request again: the same version.
    assert_eq!(lookup::rebuild(&store, &out.hash).await.unwrap(), out.hash);
    let again = lookup::historical(
        &store,
        HistoricalRequest::new(
            "readmission",
            Entities::Stored(VersionRef::Hash(out.entities)),
        ),
    )
    .await
    .unwrap();
    assert_eq!(again.hash, out.hash);
    assert!(!again.created);

    // Online (p, t) equals the historical row (p, t) for every feature of the online set.
    let online = Online::new(store.clone());
    let hist = lookup::historical(
        &store,
        HistoricalRequest::new(
            "readmission_online",
            Entities::Stored(VersionRef::Hash(out.entities)),
        ),
    )
    .await
    .unwrap();
    assert_eq!(hist.timeline, Some(online_tl.hash));
    let (_, hb) = store.read(&hist.hash).await.unwrap();
    let hb = arrow::compute::concat_batches(&hb[0].schema(), &hb).unwrap();
    let mut compared = 0;
    for (i, (p, t)) in rows.iter().enumerate().step_by(3) {
        let ans = online
            .get(
                "readmission_online",
                std::slice::from_ref(p),
                &[],
                Some(at(*t)),
            )
            .await
            .unwrap();
        assert_eq!(
            ans.timeline, online_tl.hash,
            "the answer names its timeline"
        );
        for (name, v) in &ans.patients[0].values {
            let col = hb.column_by_name(name).unwrap();
            let st = hb
                .column_by_name(&format!("{name}__status"))
                .unwrap()
                .as_string::<i32>()
                .value(i)
                .to_string();
            assert_eq!(st, features::status_str(v.status), "{p} {t} {name}");
            let hv = if col.is_null(i) {
                None
            } else if let Some(a) = col.as_primitive_opt::<Float64Type>() {
                Some(Value::Num(a.value(i)))
            } else {
                Some(Value::Text(col.as_string::<i32>().value(i).to_string()))
            };
            assert_eq!(hv, v.value, "{p} {t} {name}");
            compared += 1;
        }
    }
    assert!(compared > 1000, "{compared}");

    // Labels are refused online, naming them.
    let err = online
        .get("readmission", &["x".to_string()], &[], None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition { reason, .. } if reason.contains("readmitted_30d")),
        "{err}"
    );
    // Unknown feature and unknown set.
    let err = online
        .get("readmission_online", &["x".into()], &["nope".into()], None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = online
        .get("nope", &["x".into()], &[], None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

/// A training set computed straight from the curated versions (`lookup::historical_direct`,
/// `ward historical --features`) has the same content, so the same hash, as the one read
/// from a timeline materialized from the same versions; it stores no timeline, records the
/// curated versions and the definition in its lineage, and rebuilds to the same hash.
#[tokio::test]
async fn historical_from_curated_equals_the_timeline_path_and_rebuilds() {
    let clock = || -> SharedClock {
        Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap(),
        ))
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        store_at(dir_a.path(), clock()),
        store_at(dir_b.path(), clock()),
    );
    let tables = put_cohort(&a, 120, 5).await;
    put_cohort(&b, 120, 5).await;
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let (entities, rows) = entity_rows(&tables, 6);
    for knowledge in [
        features::Knowledge::AsKnown,
        features::Knowledge::AsOccurred,
    ] {
        let opts = MaterializeOptions {
            knowledge,
            ..MaterializeOptions::default()
        };
        features::materialize(&a, &repo, "readmission", &opts)
            .await
            .unwrap();
        let mut req =
            HistoricalRequest::new("readmission", Entities::Batches(vec![entities.clone()]));
        req.knowledge = knowledge;
        let via_timeline = lookup::historical(&a, req.clone()).await.unwrap();
        let direct = lookup::historical_direct(&b, &repo, req).await.unwrap();
        assert_eq!(
            direct.hash, via_timeline.hash,
            "{knowledge:?}: same content"
        );
        assert_eq!(direct.rows, rows.len());
        assert_eq!(direct.timeline, None);
        assert!(via_timeline.curated.is_empty());
        let m = b.manifest(&direct.hash).unwrap();
        assert_eq!(m.kind, Kind::Training);
        assert_eq!(m.lineage.params["op"], "historical_direct");
        let curated: Vec<_> = direct.curated.iter().map(|(_, h)| *h).collect();
        assert!(!curated.is_empty());
        let mut inputs = curated.clone();
        inputs.push(direct.entities);
        assert_eq!(m.lineage.inputs, inputs);
        assert_eq!(
            m.lineage.definition,
            Some(repo.set("readmission").unwrap().definition_hash())
        );
        assert_eq!(
            lookup::rebuild(&b, &direct.hash).await.unwrap(),
            direct.hash,
            "{knowledge:?}: rebuilt from its lineage"
        );
    }
    let timelines = b
        .list(&ward::store::ListFilter {
            kind: Some(Kind::Timeline),
            name: None,
        })
        .unwrap();
    assert!(timelines.is_empty(), "no timeline stored: {timelines:?}");
    // A timeline and --features exclude each other.
    let mut req = HistoricalRequest::new("readmission", Entities::Batches(vec![entities]));
    req.timeline = Some(VersionRef::Latest("timeline-readmission".into()));
    let err = lookup::historical_direct(&b, &repo, req).await.unwrap_err();
    assert!(err.to_string().contains("reads no timeline"), "{err}");
}

#[tokio::test]
async fn historical_refuses_bad_entity_rows_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock: SharedClock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap(),
    ));
    let store = store_at(dir.path(), clock);
    put_cohort(&store, 20, 1).await;
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    features::materialize(
        &store,
        &repo,
        "readmission_online",
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    let csv = dir.path().join("entities.csv");
    std::fs::write(
        &csv,
        "patient_id,timestamp\nP0000001,2020-01-01T00:00:00Z\nP0000002,yesterday\n",
    )
    .unwrap();
    let batches = lookup::read_entities(&csv).unwrap();
    let before = store.list(&Default::default()).unwrap().len();
    let err = lookup::historical(
        &store,
        HistoricalRequest::new("readmission_online", Entities::Batches(batches)),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("entity row 1") && err.contains("yesterday"),
        "{err}"
    );
    assert_eq!(
        store.list(&Default::default()).unwrap().len(),
        before,
        "nothing stored"
    );

    // A column named like a feature.
    std::fs::write(&csv, "patient_id,timestamp,age\nP0000001,2020-01-01,3\n").unwrap();
    let err = lookup::historical(
        &store,
        HistoricalRequest::new(
            "readmission_online",
            Entities::Batches(lookup::read_entities(&csv).unwrap()),
        ),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("\"age\""), "{err}");

    // No timeline materialized as occurred.
    let mut req = HistoricalRequest::new(
        "readmission_online",
        Entities::Batches(lookup::read_entities(&csv).unwrap()),
    );
    req.knowledge = features::Knowledge::AsOccurred;
    let err = lookup::historical(&store, req).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_swaps_a_new_timeline_without_failing_requests() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap(),
    ));
    let store = store_at(dir.path(), clock.clone());
    let tables = put_cohort(&store, 60, 2).await;
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let first = features::materialize(
        &store,
        &repo,
        "readmission_online",
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    let online = Online::new(store.clone());
    assert_eq!(
        online.refresh("readmission_online").await.unwrap(),
        first.hash
    );
    let patients: Vec<String> = tables
        .patients
        .iter()
        .map(|p| p.patient_id.clone())
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (online, patients, stop) = (online.clone(), patients.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 10 {
                let ans = online
                    .get("readmission_online", &patients[..5], &[], None)
                    .await
                    .expect("no request fails during the swap");
                assert_eq!(ans.patients.len(), 5);
                seen.insert(ans.timeline);
                n += 1;
                tokio::task::yield_now().await;
            }
            seen
        }));
    }
    // New data: another cohort's rows for the same patients' ids range, then materialize.
    clock.advance(chrono::Duration::days(1));
    put_cohort(&store, 80, 3).await;
    let second = features::materialize(
        &store,
        &repo,
        "readmission_online",
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    assert_ne!(second.hash, first.hash);
    assert_eq!(
        online.refresh("readmission_online").await.unwrap(),
        second.hash
    );
    let after = online
        .get("readmission_online", &patients[..1], &[], None)
        .await
        .unwrap();
    assert_eq!(after.timeline, second.hash);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        let seen = r.await.unwrap();
        assert!(seen.iter().all(|h| *h == first.hash || *h == second.hash));
    }
}

#[tokio::test]
async fn cli_historical_rebuild_get_and_asof() {
    let dir = tempfile::tempdir().unwrap();
    let clock: SharedClock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap(),
    ));
    let store = store_at(dir.path(), clock);
    let tables = put_cohort(&store, 30, 5).await;
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    features::materialize(&store, &repo, "readmission", &MaterializeOptions::default())
        .await
        .unwrap();
    let p = &tables.patients[0].patient_id;
    let csv = dir.path().join("rows.csv");
    std::fs::write(
        &csv,
        format!("patient_id,timestamp,split\n{p},2021-03-01T12:00:00Z,train\n{p},2024-01-01,test\nnobody,2020-01-01,train\n"),
    )
    .unwrap();
    let ward = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
            .arg("--store")
            .arg(dir.path().join("store"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let parquet = dir.path().join("train.parquet");
    let (ok, stdout, stderr) = ward(&[
        "historical",
        "--set",
        "readmission",
        "--entities",
        csv.to_str().unwrap(),
        "--out",
        parquet.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let hash = stdout.lines().last().unwrap().to_string();
    assert!(hash.starts_with("b3:") && hash.len() == 67, "{stdout}");
    let file = std::fs::File::open(&parquet).unwrap();
    let rows: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, 3);
    let (ok, stdout, stderr) = ward(&["rebuild", &hash]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().last(), Some(hash.as_str()));
    // The stored entity rows can be used again by name.
    let (ok, stdout, stderr) = ward(&[
        "historical",
        "--set",
        "readmission",
        "--entities",
        "entities-readmission",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().last(), Some(hash.as_str()));
    // Straight from the curated versions: the same training set (same hash), which names
    // the curated versions it read and not a timeline.
    let features_toml = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/features/readmission.toml"
    );
    let (ok, stdout, stderr) = ward(&[
        "historical",
        "--set",
        "readmission",
        "--features",
        features_toml,
        "--entities",
        csv.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().last(), Some(hash.as_str()), "{stderr}");
    assert!(
        stderr.contains("observations") && !stderr.contains("timeline"),
        "{stderr}"
    );
    let (ok, _, stderr) = ward(&[
        "historical",
        "--set",
        "readmission",
        "--features",
        features_toml,
        "--timeline",
        "timeline-readmission",
        "--entities",
        csv.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("--timeline"), "{stderr}");
    // A label set online: refused, naming the label.
    let (ok, _, stderr) = ward(&["get", "--set", "readmission", "--patient", p]);
    assert!(!ok && stderr.contains("readmitted_30d"), "{stderr}");

    // `ward asof` on the peers' layout prints the lines their script reads.
    let (w, ent) = wide_data(8, 90 * DAY);
    wide_files(dir.path(), &w, &ent, 64);
    let out = dir.path().join("out/ward.parquet");
    let (ok, stdout, stderr) = ward(&[
        "asof",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--ttl-days",
        "90",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("join seconds: ") && stdout.contains("peak RSS MiB: "),
        "{stdout}"
    );
    // The peers' summarize.py reads the RESULT line's JSON.
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line: {stdout}"));
    let r: serde_json::Value = serde_json::from_str(result).unwrap();
    assert_eq!(r["tool"], "ward");
    assert_eq!(r["ttl_days"], 90.0);
    assert!(r["join_s"].as_f64().unwrap() >= 0.0, "{r}");
    assert!(out.is_file());
    let rows = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&out).unwrap())
        .map(|f| {
            parquet::file::reader::FileReader::metadata(&f)
                .file_metadata()
                .num_rows()
        })
        .unwrap();
    assert_eq!(r["rows_out"].as_i64(), Some(rows));
}
