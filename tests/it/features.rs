//! Features: definitions, timelines against a plain reference, determinism, incremental,
//! rebuild, the readmission set.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Float64Type, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ward::clock::{ManualClock, SharedClock};
use ward::curated::{Condition, CuratedTables, Encounter, Observation, Procedure, Table};
use ward::error::Error;
use ward::features::{
    self, compute, compute_incremental, lookup, whole_years, FeatureDef, FeatureKind, FeatureRepo,
    FeatureSet, FeatureValue, Inputs, Knowledge, MaterializeOptions, SourceIdReader, Status,
    TimelineIndex, Value, DAY_US,
};
use ward::hash::hash_batches;
use ward::scores::{self, PatientRows, ScoreComponent, View};
use ward::store::{Kind, Store};
use ward::synth::{generate_cohort, SynthOptions};

const EXAMPLE: &str = include_str!("../../examples/features/readmission.toml");

/// Every kind, with windows short enough that their edges fall inside the sampled times.
const ALL_KINDS: &str = r#"
[[feature_set]]
name = "all"
ttl = "90d"

[[feature_set.features]]
name = "days_since_discharge"
kind = "days_since"
table = "encounters"
filter = { class = "inpatient" }
time = "discharge_time"

[[feature_set.features]]
name = "admissions_180d"
kind = "count"
table = "encounters"
filter = { class = ["inpatient"] }
window = "180d"

[[feature_set.features]]
name = "visits_7d"
kind = "count"
table = "encounters"
filter = { class = { in = ["emergency", "ambulatory"] } }
window = "7d"

[[feature_set.features]]
name = "creatinine_sum_2d"
kind = "sum"
table = "observations"
filter = { code = "2160-0" }
column = "value_num"
window = "2d"

[[feature_set.features]]
name = "sodium_mean_3d"
kind = "mean"
table = "observations"
filter = { code = "2951-2", code_system = "LOINC" }
column = "value_num"
window = "3d"

[[feature_set.features]]
name = "hb_min_12h"
kind = "min"
table = "observations"
filter = { code = "718-7" }
column = "value_num"
window = "12h"

[[feature_set.features]]
name = "glucose_max"
kind = "max"
table = "observations"
filter = { code = "2345-7" }
column = "value_num"

[[feature_set.features]]
name = "hb_last"
kind = "last"
table = "observations"
filter = { code = "718-7" }
column = "value_num"

[[feature_set.features]]
name = "hb_first_1d"
kind = "first"
table = "observations"
filter = { code = "718-7" }
column = "value_num"
window = "1d"
ttl = "6h"

[[feature_set.features]]
name = "status_last"
kind = "last"
table = "observations"
column = "status"
ttl = "none"

[[feature_set.features]]
name = "heart_failure"
kind = "exists"
table = "conditions"
filter = { code = { prefix = ["I50", "I11"] } }

[[feature_set.features]]
name = "age"
kind = "age"

[[feature_set.features]]
name = "sex"
kind = "last"
table = "patients"
column = "sex"

[[feature_set.features]]
name = "readmit_30d"
kind = "readmitted_within"
horizon = "30d"

[[feature_set.features]]
name = "death_90d"
kind = "died_within"
horizon = "90d"
"#;

fn cohort(patients: u64, seed: u64) -> CuratedTables {
    let opts = SynthOptions {
        patients,
        seed,
        ..SynthOptions::default()
    };
    generate_cohort(&opts)
}

fn index(set: &FeatureSet, batches: &[RecordBatch]) -> TimelineIndex {
    TimelineIndex::build(set, batches).unwrap()
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn at(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap()
}

// ---------------------------------------------------------------------------------------
// The reference: for one (patient, feature, t), scan the table's rows, keep the visible
// ones, sort them in the tie order, compute. No change points, no intervals.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct RefRow {
    e: i64,
    k: i64,
    x: Option<i64>,
    sid: String,
    num: Option<f64>,
    text: Option<String>,
    birth: Option<i64>,
}

/// The rows of a feature's table that pass its filter, by patient.
fn ref_rows(f: &FeatureDef, batch: &RecordBatch) -> BTreeMap<String, Vec<RefRow>> {
    let ts = |name: &str| -> Option<Vec<Option<i64>>> {
        let c = batch.column_by_name(name)?;
        let c = cast(
            c,
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )
        .unwrap();
        let a = c.as_primitive::<TimestampMicrosecondType>();
        Some(
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i)))
                .collect(),
        )
    };
    let st = |name: &str| -> Option<Vec<Option<String>>> {
        let c = batch.column_by_name(name)?;
        let c = cast(c, &DataType::Utf8).unwrap();
        let a = c.as_string::<i32>();
        Some(
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
                .collect(),
        )
    };
    let pid = st("patient_id").unwrap();
    let e = ts(&f.time).unwrap();
    let k = ts("known_at").unwrap();
    let x = ts("retracted_at");
    let sid = st("source_id");
    let filters: Vec<_> = f
        .filter
        .iter()
        .map(|(c, cond)| (st(c).unwrap(), cond))
        .collect();
    let col = f
        .column
        .as_ref()
        .map(|c| batch.column_by_name(c).unwrap().clone());
    let mut out: BTreeMap<String, Vec<RefRow>> = BTreeMap::new();
    for i in 0..batch.num_rows() {
        let (Some(p), Some(e), Some(k)) = (pid[i].clone(), e[i], k[i]) else {
            continue;
        };
        if !filters
            .iter()
            .all(|(v, c)| v[i].as_deref().is_some_and(|s| c.matches(s)))
        {
            continue;
        }
        let mut row = RefRow {
            e,
            k,
            x: x.as_ref().and_then(|x| x[i]),
            sid: sid.as_ref().and_then(|s| s[i].clone()).unwrap_or_default(),
            num: None,
            text: None,
            birth: None,
        };
        if let Some(c) = &col {
            if c.is_null(i) {
                continue;
            }
            match c.data_type() {
                DataType::Float64 => row.num = Some(c.as_primitive::<Float64Type>().value(i)),
                DataType::Utf8 => row.text = Some(c.as_string::<i32>().value(i).to_string()),
                DataType::Date32 => {
                    row.birth = Some(c.as_primitive::<Date32Type>().value(i) as i64 * DAY_US)
                }
                DataType::Duration(TimeUnit::Microsecond) => {
                    let v = c
                        .as_primitive::<arrow::datatypes::DurationMicrosecondType>()
                        .value(i);
                    row.num = Some(v as f64 / DAY_US as f64)
                }
                other => panic!("reference does not read {other}"),
            }
        }
        out.entry(p).or_default().push(row);
    }
    out
}

fn reference(f: &FeatureDef, rows: &[RefRow], t: i64, knowledge: Knowledge) -> FeatureValue {
    let mut vis: Vec<&RefRow> = rows
        .iter()
        .filter(|r| {
            if f.kind.is_label() {
                let h = f.horizon_us.unwrap();
                return r.x.is_none() && t < r.e && r.e <= t + h;
            }
            let in_window = f.window_us.is_none_or(|w| r.e > t - w);
            let known = match knowledge {
                Knowledge::AsKnown => r.e <= t && r.k <= t && r.x.is_none_or(|x| x > t),
                Knowledge::AsOccurred => r.e <= t && r.x.is_none(),
            };
            known && in_window
        })
        .collect();
    vis.sort_by(|a, b| (a.e, a.k, &a.sid).cmp(&(b.e, b.k, &b.sid)));
    let present = |v: Value| FeatureValue {
        value: Some(v),
        status: Status::Present,
    };
    let no_data = FeatureValue {
        value: None,
        status: Status::NoData,
    };
    if vis.is_empty() {
        return if matches!(f.kind, FeatureKind::Count | FeatureKind::Exists) || f.kind.is_label() {
            present(Value::Num(0.0))
        } else {
            no_data
        };
    }
    let ttl_check = |vt: i64| -> bool { f.ttl_us.is_some_and(|ttl| t - vt >= ttl) };
    let outside = FeatureValue {
        value: None,
        status: Status::OutsideTtl,
    };
    let one = |r: &RefRow| -> FeatureValue {
        if ttl_check(r.e) {
            return outside.clone();
        }
        match (&r.text, r.num) {
            (Some(s), _) => present(Value::Text(s.clone())),
            (None, Some(v)) => present(Value::Num(v)),
            _ => no_data.clone(),
        }
    };
    let nums: Vec<f64> = vis.iter().map(|r| r.num.unwrap_or(0.0)).collect();
    match f.kind {
        FeatureKind::Count => present(Value::Num(vis.len() as f64)),
        FeatureKind::Exists | FeatureKind::ReadmittedWithin | FeatureKind::DiedWithin => {
            present(Value::Num(1.0))
        }
        FeatureKind::Sum => present(Value::Num(nums.iter().fold(0.0, |s, v| s + v))),
        FeatureKind::Mean => present(Value::Num(
            nums.iter().fold(0.0, |s, v| s + v) / nums.len() as f64,
        )),
        FeatureKind::Min | FeatureKind::Max => {
            let mut best = 0;
            for i in 1..nums.len() {
                let better = if f.kind == FeatureKind::Min {
                    nums[i] < nums[best]
                } else {
                    nums[i] > nums[best]
                };
                if better {
                    best = i;
                }
            }
            one(vis[best])
        }
        FeatureKind::Last => one(vis[vis.len() - 1]),
        FeatureKind::First => one(vis[0]),
        FeatureKind::DaysSince => {
            let last = vis[vis.len() - 1];
            if ttl_check(last.e) {
                return outside;
            }
            present(Value::Num((t - last.e) as f64 / DAY_US as f64))
        }
        FeatureKind::Age => {
            let birth = vis[vis.len() - 1].birth.unwrap();
            match whole_years(at(birth), at(t)) {
                Some(y) => present(Value::Num(y as f64)),
                None => no_data,
            }
        }
        FeatureKind::Score => panic!("score features have their own reference (score_reference)"),
    }
}

/// The instants worth probing for one patient: every event, knowledge, retraction, window
/// and horizon edge, a microsecond either side, and random times.
fn probe_times(
    set: &FeatureSet,
    rows: &BTreeMap<String, Vec<RefRow>>,
    rng: &mut ChaCha8Rng,
) -> Vec<i64> {
    let mut ts = Vec::new();
    for f in &set.features {
        for r in rows.get(&f.name).into_iter().flatten() {
            let mut base = vec![r.e, r.k];
            base.extend(r.x);
            if let Some(w) = f.window_us {
                base.push(r.e + w);
            }
            if let Some(h) = f.horizon_us {
                base.push(r.e - h);
            }
            if let Some(ttl) = f.ttl_us {
                base.push(r.e + ttl);
            }
            for b in base {
                ts.extend([b - 1, b, b + 1]);
            }
        }
    }
    ts.sort_unstable();
    ts.dedup();
    let lo = us(Utc.with_ymd_and_hms(2014, 1, 1, 0, 0, 0).unwrap());
    let hi = us(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
    let mut out: Vec<i64> = (0..10).map(|_| rng.random_range(lo..hi)).collect();
    let take = 60.min(ts.len());
    for _ in 0..take {
        out.push(ts[rng.random_range(0..ts.len())]);
    }
    out
}

async fn differential(knowledge: Knowledge, seed: u64) {
    let repo = FeatureRepo::parse(ALL_KINDS, "all.toml").unwrap();
    let set = repo.set("all").unwrap();
    let tables = cohort(300, seed);
    let inputs = Inputs::from_curated(&tables).unwrap();
    let opts = MaterializeOptions {
        knowledge,
        ..Default::default()
    };
    let tl = compute(set, &inputs, &opts).await.unwrap();
    let idx = index(set, &tl.batches);

    // Reference rows per feature, per patient.
    let mut per_feature: BTreeMap<String, BTreeMap<String, Vec<RefRow>>> = BTreeMap::new();
    for f in &set.features {
        let table = Table::from_name(&f.table).unwrap();
        per_feature.insert(
            f.name.clone(),
            ref_rows(f, &tables.to_batch(table).unwrap()),
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Patients of the cohort, and some that have no rows at all.
    let mut patients: Vec<String> = tables
        .patients
        .iter()
        .map(|p| p.patient_id.clone())
        .collect();
    patients.dedup();
    patients.extend(["P9999999".to_string(), "nobody".to_string()]);
    let mut checked = 0u64;
    let mut by_status: BTreeMap<(FeatureKind, String), u64> = BTreeMap::new();
    // Every probe with the reference's answers, for the historical join below.
    let mut cases: Vec<(String, i64, Vec<FeatureValue>)> = Vec::new();
    let before_all = us(Utc.with_ymd_and_hms(1990, 1, 1, 0, 0, 0).unwrap());
    for p in &patients {
        let rows: BTreeMap<String, Vec<RefRow>> = per_feature
            .iter()
            .map(|(f, m)| (f.clone(), m.get(p).cloned().unwrap_or_default()))
            .collect();
        let mut times = probe_times(set, &rows, &mut rng);
        times.push(before_all);
        for t in times {
            let mut wants = Vec::new();
            for f in &set.features {
                let want = reference(f, &rows[&f.name], t, knowledge);
                wants.push(want.clone());
                let ttl = idx.feature_info(&f.name).unwrap().ttl;
                let got = lookup(&idx, p, &f.name, at(t), ttl);
                assert_eq!(
                    got,
                    want,
                    "patient {p} feature {} t {} ({t})",
                    f.name,
                    at(t)
                );
                *by_status
                    .entry((f.kind, format!("{:?}", got.status)))
                    .or_default() += 1;
                checked += 1;
            }
            cases.push((p.clone(), t, wants));
        }
    }
    historical_matches(set, &idx, (&inputs, &opts), &cases, seed).await;
    // The probes reached every kind with data, and the statuses that kind can have.
    for f in &set.features {
        assert!(
            by_status
                .get(&(f.kind, "Present".into()))
                .is_some_and(|n| *n > 0),
            "{} never present",
            f.name
        );
    }
    for k in [
        FeatureKind::Last,
        FeatureKind::DaysSince,
        FeatureKind::First,
    ] {
        assert!(
            by_status.contains_key(&(k, "OutsideTtl".into())),
            "{k:?} never outside TTL"
        );
    }
    assert!(checked > 100_000, "only {checked} lookups compared");
}

/// The historical join (`ward::lookup::historical_batches`) of entity rows made from the
/// probes (shuffled, some duplicated, with a passthrough column) at batch sizes 1, 2, 7, 49,
/// 50, 51, 100 gives, row for row in input order, the reference's values and statuses; so
/// does the lookup straight from the curated rows (`features::historical_direct`), with one
/// and with four threads.
async fn historical_matches(
    set: &FeatureSet,
    idx: &TimelineIndex,
    (inputs, opts): (&Inputs, &MaterializeOptions),
    cases: &[(String, i64, Vec<FeatureValue>)],
    seed: u64,
) {
    use arrow::array::{StringArray, TimestampMicrosecondArray};
    use rand::seq::SliceRandom;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut order: Vec<usize> = (0..cases.len()).collect();
    // Duplicate entity rows: every 10th case twice more.
    order.extend((0..cases.len()).step_by(10));
    order.shuffle(&mut rng);
    // Keep the work bounded: the reference comparison above covers every probe.
    order.truncate(12_000);
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("cohort", DataType::Utf8, false),
        arrow::datatypes::Field::new("patient_id", DataType::Utf8, false),
        arrow::datatypes::Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let cohort: Vec<String> = order.iter().map(|i| format!("c{}", i % 5)).collect();
    let all = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(cohort.iter())),
            Arc::new(StringArray::from_iter_values(
                order.iter().map(|&i| cases[i].0.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(order.iter().map(|&i| cases[i].1))
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    for size in [1usize, 2, 7, 49, 50, 51, 100] {
        // Batch sizes 1 and 2 on a prefix (every row its own unit of work is slow, not
        // different); the others on everything.
        let n = if size <= 2 {
            600.min(all.num_rows())
        } else {
            all.num_rows()
        };
        let input: Vec<RecordBatch> = (0..n)
            .step_by(size)
            .map(|o| all.slice(o, size.min(n - o)))
            .collect();
        let mut results = vec![(
            "index".to_string(),
            ward::lookup::historical_batches(idx, &input, "patient_id", "timestamp").unwrap(),
        )];
        for threads in [1, 4] {
            let opts = MaterializeOptions {
                threads: Some(threads),
                ..opts.clone()
            };
            let direct = features::historical_direct(
                set,
                inputs.clone(),
                &input,
                "patient_id",
                "timestamp",
                &opts,
            )
            .await
            .unwrap();
            results.push((format!("direct, {threads} threads"), direct));
        }
        for (how, (schema, out)) in results {
            let what = format!("{how}, size {size}");
            assert_eq!(
                out.len(),
                input.len(),
                "one output batch per entity batch ({what})"
            );
            let out = arrow::compute::concat_batches(&schema, &out).unwrap();
            check_training_rows(set, &all, &order[..n], cases, &out, &what);
        }
    }
}

/// Checks the output of a historical join of the first `order.len()` rows of `all` against
/// the reference's answers `cases`.
fn check_training_rows(
    set: &FeatureSet,
    all: &RecordBatch,
    order: &[usize],
    cases: &[(String, i64, Vec<FeatureValue>)],
    out: &RecordBatch,
    what: &str,
) {
    let n = order.len();
    assert_eq!(out.num_rows(), n, "one output row per entity row ({what})");
    for c in ["cohort", "patient_id", "timestamp"] {
        assert_eq!(
            out.column_by_name(c).unwrap().as_ref(),
            all.slice(0, n).column_by_name(c).unwrap().as_ref(),
            "{c} passed through in input order ({what})"
        );
    }
    for (fi, f) in set.features.iter().enumerate() {
        let v = out.column_by_name(&f.name).unwrap();
        let st = out
            .column_by_name(&format!("{}__status", f.name))
            .unwrap()
            .as_string::<i32>()
            .clone();
        for (row, &ci) in order.iter().enumerate() {
            let want = &cases[ci].2[fi];
            let status = match want.status {
                Status::Present => "present",
                Status::NoData => "no_data",
                Status::OutsideTtl => "outside_ttl",
            };
            let ctx = || {
                format!(
                    "{what} row {row} feature {} case {:?}",
                    f.name,
                    (&cases[ci].0, cases[ci].1)
                )
            };
            assert_eq!(st.value(row), status, "{}", ctx());
            let got = if v.is_null(row) {
                None
            } else if let Some(a) = v.as_primitive_opt::<Float64Type>() {
                Some(Value::Num(a.value(row)))
            } else {
                Some(Value::Text(v.as_string::<i32>().value(row).to_string()))
            };
            assert_eq!(got, want.value, "{}", ctx());
        }
    }
}

#[tokio::test]
async fn every_kind_matches_the_reference_as_known() {
    differential(Knowledge::AsKnown, 7).await;
}

#[tokio::test]
async fn every_kind_matches_the_reference_as_occurred() {
    differential(Knowledge::AsOccurred, 11).await;
}

/// The cohort has what point-in-time code can get wrong: late results, corrections,
/// encounters known in two versions. Make sure the differential above saw them.
#[test]
fn cohort_has_late_and_corrected_rows() {
    let t = cohort(300, 7);
    assert!(t.observations.iter().any(|o| o.meta.retracted_at.is_some()));
    assert!(t
        .observations
        .iter()
        .any(|o| o.meta.known_at - o.effective_time > Duration::hours(6)));
    assert!(t.encounters.iter().any(|e| e.meta.retracted_at.is_some()));
}

// ---------------------------------------------------------------------------------------
// Hand-built edges
// ---------------------------------------------------------------------------------------

/// A hemoglobin result (LOINC 718-7) of patient `pid`, its source id `id`: event time `e`,
/// known at `k`, retracted at `x`, value `v`.
fn hgb(
    pid: &str,
    id: &str,
    e: DateTime<Utc>,
    k: DateTime<Utc>,
    x: Option<DateTime<Utc>>,
    v: f64,
) -> Observation {
    use ward::curated::{Coding, RowMeta};
    Observation {
        observation_id: id.into(),
        patient_id: pid.into(),
        encounter_id: None,
        category: None,
        code: Coding {
            system: "LOINC".into(),
            code: "718-7".into(),
            display: None,
        },
        value_num: Some(v),
        value_text: None,
        unit: None,
        effective_time: e,
        status: None,
        meta: RowMeta {
            source_system: "s".into(),
            source_id: id.into(),
            known_at: k,
            retracted_at: x,
        },
    }
}

#[tokio::test]
async fn window_edges_ties_and_retractions_by_hand() {
    let t0 = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    let obs = |id: &str, e, k, x, v| hgb("p", id, e, k, x, v);
    let h = Duration::hours;
    let tables = CuratedTables {
        observations: vec![
            // Same event time and known_at: the source id breaks the tie (b after a).
            obs("b", t0, t0 + h(1), None, 11.0),
            obs("a", t0, t0 + h(1), None, 10.0),
            // Known late, then corrected.
            obs("c", t0 + h(5), t0 + h(8), Some(t0 + h(9)), 8.0),
            obs("d", t0 + h(5), t0 + h(9), None, 9.0),
        ],
        ..Default::default()
    };
    let toml = r#"
[[feature_set]]
name = "s"
[[feature_set.features]]
name = "hb"
kind = "last"
table = "observations"
column = "value_num"
ttl = "24h"
[[feature_set.features]]
name = "n"
kind = "count"
table = "observations"
window = "12h"
"#;
    let repo = FeatureRepo::parse(toml, "s.toml").unwrap();
    let set = repo.set("s").unwrap();
    let tl = compute(
        set,
        &Inputs::from_curated(&tables).unwrap(),
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    let idx = index(set, &tl.batches);
    let get = |f: &str, t: DateTime<Utc>| lookup(&idx, "p", f, t, idx.feature_info(f).unwrap().ttl);
    let num = |v: f64| FeatureValue {
        value: Some(Value::Num(v)),
        status: Status::Present,
    };
    assert_eq!(get("hb", t0).status, Status::NoData, "not known yet");
    assert_eq!(get("hb", t0 + h(1)), num(11.0), "tie broken by source id");
    assert_eq!(get("hb", t0 + h(8) - Duration::microseconds(1)), num(11.0));
    assert_eq!(
        get("hb", t0 + h(8)),
        num(8.0),
        "late row counts from known_at"
    );
    assert_eq!(
        get("hb", t0 + h(9)),
        num(9.0),
        "correction replaces at retraction"
    );
    assert_eq!(
        get("hb", t0 + h(5) + h(24) - Duration::microseconds(1)),
        num(9.0)
    );
    assert_eq!(
        get("hb", t0 + h(5) + h(24)).status,
        Status::OutsideTtl,
        "exactly t - ttl is out"
    );
    assert_eq!(get("n", t0 + h(8)), num(3.0));
    assert_eq!(get("n", t0 + h(12) - Duration::microseconds(1)), num(3.0));
    assert_eq!(
        get("n", t0 + h(12)),
        num(1.0),
        "at exactly e + w the row is out"
    );
    assert_eq!(get("n", t0 + h(17)), num(0.0));
    assert_eq!(get("n", t0 - h(1)), num(0.0), "count before any data is 0");
    assert_eq!(
        lookup(&idx, "q", "hb", t0 + h(9), None).status,
        Status::NoData
    );
}

// ---------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------

fn err_of(toml: &str) -> String {
    match FeatureRepo::parse(toml, "repo.toml") {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(e @ Error::BadInput { .. }) => e.to_string(),
        Err(e) => panic!("wrong error kind: {e}"),
    }
}

fn one_feature(set_extra: &str, body: &str) -> String {
    format!("[[feature_set]]\nname = \"s\"\n{set_extra}\n[[feature_set.features]]\nname = \"f1\"\n{body}\n")
}

#[test]
fn validation_errors_name_file_line_and_feature() {
    let cases = [
        (
            "",
            "kind = \"count\"\ntable = \"nowhere\"",
            7,
            "unknown table",
        ),
        (
            "",
            "kind = \"last\"\ntable = \"observations\"\ncolumn = \"valu\"",
            8,
            "unknown column",
        ),
        (
            "",
            "kind = \"average\"\ntable = \"observations\"",
            6,
            "unknown kind",
        ),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\nwindow = \"6 months\"",
            8,
            "bad duration",
        ),
        (
            "",
            "kind = \"sum\"\ntable = \"observations\"\ncolumn = \"code\"",
            8,
            "type mismatch",
        ),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\nfilter = { nope = \"x\" }",
            8,
            "unknown column",
        ),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\nfilter = { admit_time = \"x\" }",
            8,
            "string columns",
        ),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\ntime = \"class\"",
            8,
            "not a timestamp",
        ),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\nwindw = \"1d\"",
            8,
            "unknown field",
        ),
        (
            "online = true",
            "kind = \"readmitted_within\"\nhorizon = \"30d\"",
            6,
            "label",
        ),
        ("", "kind = \"readmitted_within\"", 6, "horizon"),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\nttl = \"1d\"",
            8,
            "no TTL",
        ),
        (
            "",
            "kind = \"score\"\ncomponent = \"lace_totl\"",
            7,
            "unknown score component \"lace_totl\"",
        ),
        ("", "kind = \"score\"", 6, "needs a component"),
        (
            "",
            "kind = \"score\"\ncomponent = \"lace_total\"\ntable = \"encounters\"",
            8,
            "takes no table",
        ),
        (
            "",
            "kind = \"score\"\ncomponent = \"lace_total\"\nwindow = \"30d\"",
            8,
            "takes no window",
        ),
        (
            "",
            "kind = \"last\"\ntable = \"observations\"\ncolumn = \"value_num\"\ncomponent = \"lace_total\"",
            9,
            "only kind score",
        ),
        (
            "",
            "kind = \"score\"\ncomponent = \"lace_total\"\nttl = \"1 year\"",
            8,
            "bad duration",
        ),
    ];
    for (set_extra, body, line, what) in cases {
        let text = one_feature(set_extra, body);
        let msg = err_of(&text);
        assert!(
            msg.contains(&format!("repo.toml:{line}:")),
            "{msg}\n--\n{text}"
        );
        assert!(msg.contains("feature f1"), "{msg}");
        assert!(msg.contains(what), "{msg}");
    }
    // Mistakes outside features name their set or derived table.
    let msg = err_of("[[derived]]\nname = \"d\"\ntime = \"admit_time\"\nsql = \"SELECT admit_time FROM encounters\"\n");
    assert!(
        msg.contains("repo.toml:4:") && msg.contains("derived d") && msg.contains("patient_id"),
        "{msg}"
    );
    let msg = err_of("[[feature_set]]\nname = \"s\"\nentity = \"visit\"\n");
    assert!(
        msg.contains("repo.toml:3:") && msg.contains("feature_set s"),
        "{msg}"
    );
}

#[test]
fn definition_hash_ignores_formatting_comments_and_key_order() {
    let a = r#"
[[derived]]
name = "stays"
time = "discharge_time"
sql = "SELECT patient_id, known_at, discharge_time FROM encounters WHERE class = 'inpatient'"

[[feature_set]]
name = "s"
ttl = "30d"
[[feature_set.features]]
name = "hb"
kind = "last"
table = "observations"
filter = { code = "718-7", code_system = "LOINC" }
column = "value_num"
[[feature_set.features]]
name = "since"
kind = "days_since"
table = "stays"
"#;
    let b = r#"
# The same, written differently.
[[feature_set]]
ttl   = "720h"      # 30 days
name  = "s"

  [[feature_set.features]]
  table = "stays"
  kind = "days_since"
  name = "since"

  [[feature_set.features]]
  column = "value_num"
  filter.code_system = "LOINC"
  filter.code = { eq = "718-7" }
  kind = "last"
  name = "hb"
  table = "observations"

[[derived]]
sql = """
select patient_id, known_at, discharge_time
  from encounters   -- inpatient only
 where class = 'inpatient'
"""
time = "discharge_time"
name = "stays"
"#;
    let ha = FeatureRepo::parse(a, "a.toml")
        .unwrap()
        .set("s")
        .unwrap()
        .definition_hash();
    let hb = FeatureRepo::parse(b, "b.toml")
        .unwrap()
        .set("s")
        .unwrap()
        .definition_hash();
    assert_eq!(ha, hb);
    let changed = a.replace("718-7", "718-8");
    let hc = FeatureRepo::parse(&changed, "a.toml")
        .unwrap()
        .set("s")
        .unwrap()
        .definition_hash();
    assert_ne!(ha, hc);
    let changed = a.replace("class = 'inpatient'", "class = 'emergency'");
    let hd = FeatureRepo::parse(&changed, "a.toml")
        .unwrap()
        .set("s")
        .unwrap()
        .definition_hash();
    assert_ne!(ha, hd);
    // The canonical form reads back to the same set.
    let set = FeatureRepo::parse(a, "a.toml")
        .unwrap()
        .set("s")
        .unwrap()
        .clone();
    let back = FeatureSet::from_canonical_json(&set.canonical_json(), "lineage").unwrap();
    assert_eq!(back, set);
}

#[test]
fn example_repository_loads() {
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let online = repo.set("readmission_online").unwrap();
    let offline = repo.set("readmission").unwrap();
    assert!(online.online && online.labels().is_empty());
    assert_eq!(offline.labels(), vec!["readmitted_30d"]);
    assert_eq!(offline.features.len(), online.features.len() + 1);
    assert_eq!(offline.derived.len(), 1);
    // The issue's ready set: every score component is a feature of both sets, with the TTL
    // of the set.
    for set in [online, offline] {
        for c in ScoreComponent::ALL {
            let f = set
                .features
                .iter()
                .find(|f| f.score_component() == Some(c))
                .unwrap_or_else(|| panic!("{} lacks {}", set.name, c.name()));
            assert_eq!(f.kind, FeatureKind::Score);
            assert_eq!(f.ttl_us, set.ttl_us, "{}", f.name);
        }
    }
}

#[test]
fn score_features_in_the_definition_hash() {
    let base = "[[feature_set]]\nname = \"s\"\nttl = \"30d\"\n[[feature_set.features]]\nname = \"hb\"\nkind = \"last\"\ntable = \"observations\"\ncolumn = \"value_num\"\n";
    let with = |c: &str| {
        format!("{base}[[feature_set.features]]\nname = \"lace\"\nkind = \"score\"\ncomponent = \"{c}\"\n")
    };
    let parse = |t: &str| {
        FeatureRepo::parse(t, "s.toml")
            .unwrap()
            .set("s")
            .unwrap()
            .clone()
    };
    let plain = parse(base);
    // Sets without score features keep their canonical form (no `component` key).
    assert!(!plain.canonical_json().contains("component"));
    let a = parse(&with("lace_total"));
    let b = parse(&with("lace_l"));
    assert_ne!(a.definition_hash(), b.definition_hash());
    assert_ne!(a.definition_hash(), plain.definition_hash());
    let back = FeatureSet::from_canonical_json(&a.canonical_json(), "lineage").unwrap();
    assert_eq!(back, a);
    assert_eq!(
        back.feature("lace").unwrap().score_component(),
        Some(ScoreComponent::LaceTotal)
    );
    assert_eq!(back.feature("lace").unwrap().ttl_us, Some(30 * DAY_US));
    // A canonical form naming an unknown component does not load.
    let bad = a
        .canonical_json()
        .replace("\"lace_total\"", "\"lace_totl\"");
    assert!(FeatureSet::from_canonical_json(&bad, "lineage").is_err());
    // The scores read these tables, which materialization must load.
    let tables: Vec<&str> = a.curated_tables().iter().map(|t| t.name()).collect();
    assert_eq!(
        tables,
        ["encounters", "observations", "conditions", "procedures"]
    );
    assert_eq!(
        a.score_only_tables(),
        vec![Table::Conditions, Table::Procedures]
    );
}

// ---------------------------------------------------------------------------------------
// Derived tables, determinism, incremental
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn derived_length_of_stay_matches_the_encounters() {
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let set = repo.set("readmission").unwrap();
    let tables = cohort(150, 3);
    let tl = compute(
        set,
        &Inputs::from_curated(&tables).unwrap(),
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    let idx = index(set, &tl.batches);
    let mut seen = 0;
    for e in tables
        .encounters
        .iter()
        .filter(|e| e.class == "inpatient" && e.meta.retracted_at.is_none())
    {
        let Some(d) = e.discharge_time else { continue };
        let t = d.max(e.meta.known_at);
        let got = lookup(&idx, &e.patient_id, "los_last_stay_days", t, None);
        let want = (d - e.admit_time).num_microseconds().unwrap() as f64 / DAY_US as f64;
        assert_eq!(got.value, Some(Value::Num(want)), "{}", e.encounter_id);
        seen += 1;
    }
    assert!(seen > 10, "only {seen} stays");
}

fn table_hash(batches: &[RecordBatch]) -> ward::hash::ContentHash {
    hash_batches(&features::timeline_schema(), batches).unwrap()
}

/// Text columns read as dictionaries (as a Parquet reader gives `patient_id` or `code` when
/// asked to) give the same row filter, the same timeline and the same direct lookups as plain
/// text, for the readmission set (derived table, scores) and every kind.
#[tokio::test]
async fn dictionary_encoded_text_columns_give_the_same_results() {
    use arrow::array::{StringArray, TimestampMicrosecondArray};
    let tables = cohort(200, 3);
    let inputs = Inputs::from_curated(&tables).unwrap();
    let dict_type = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let as_dict = |b: &RecordBatch, cols: &[&str]| -> RecordBatch {
        let fields: Vec<arrow::datatypes::Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| match cols.contains(&f.name().as_str()) {
                true => arrow::datatypes::Field::new(f.name(), dict_type.clone(), f.is_nullable()),
                false => (**f).clone(),
            })
            .collect();
        let arrays = b
            .columns()
            .iter()
            .zip(&fields)
            .map(|(a, f)| cast(a, f.data_type()).unwrap())
            .collect();
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), arrays).unwrap()
    };
    let keys = ["patient_id", "code", "code_system", "class"];
    let dict = Inputs {
        tables: inputs
            .tables
            .iter()
            .map(|(t, bs)| (*t, bs.iter().map(|b| as_dict(b, &keys)).collect()))
            .collect(),
        late_source_ids: None,
    };
    assert!(dict.tables[&Table::Observations][0]
        .column_by_name("code")
        .unwrap()
        .as_dictionary_opt::<arrow::datatypes::Int32Type>()
        .is_some());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut ids: Vec<&str> = tables
        .patients
        .iter()
        .map(|p| p.patient_id.as_str())
        .collect();
    ids.push("nobody");
    let n = 3_000;
    let entities = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("patient_id", DataType::Utf8, false),
            arrow::datatypes::Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ])),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| ids[rng.random_range(0..ids.len())]),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..n).map(|_| {
                    us(Utc.with_ymd_and_hms(2012, 1, 1, 0, 0, 0).unwrap())
                        + rng.random_range(0..14 * 365 * DAY_US)
                }))
                .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let all = FeatureRepo::parse(ALL_KINDS, "all.toml").unwrap();
    let readmission = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    for set in [
        all.set("all").unwrap(),
        readmission.set("readmission").unwrap(),
    ] {
        for (table, filter) in set.row_filters() {
            for (plain, dict) in inputs.tables[&table].iter().zip(&dict.tables[&table]) {
                assert_eq!(
                    filter.keep(plain, "plain").unwrap(),
                    filter.keep(dict, "dict").unwrap(),
                    "{} row filter of {table:?}",
                    set.name
                );
            }
        }
        let opts = MaterializeOptions::default();
        let plain_tl = compute(set, &inputs, &opts).await.unwrap();
        let dict_tl = compute(set, &dict, &opts).await.unwrap();
        assert!(plain_tl.rows > 1000);
        assert_eq!(
            table_hash(&plain_tl.batches),
            table_hash(&dict_tl.batches),
            "{} timeline",
            set.name
        );
        let mut direct = Vec::new();
        for given in [&inputs, &dict] {
            let entities = std::slice::from_ref(&entities);
            let (_, out) = features::historical_direct(
                set,
                given.clone(),
                entities,
                "patient_id",
                "timestamp",
                &opts,
            )
            .await
            .unwrap();
            direct.push(out);
        }
        assert_eq!(direct[0], direct[1], "{} direct lookups", set.name);
    }
}

#[tokio::test]
async fn same_timeline_for_any_thread_count_and_batch_size() {
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let set = repo.set("readmission").unwrap();
    let tables = cohort(200, 5);
    let inputs = Inputs::from_curated(&tables).unwrap();
    // Input order does not matter either: reverse every table.
    let mut reversed = tables.clone();
    reversed.observations.reverse();
    reversed.encounters.reverse();
    reversed.patients.reverse();
    reversed.conditions.reverse();
    reversed.procedures.reverse();
    let reversed = Inputs::from_curated(&reversed).unwrap();
    let mut hashes = Vec::new();
    for (threads, batch_size, inputs) in [
        (1, 7, &inputs),
        (4, 65_536, &inputs),
        (4, 50, &reversed),
        (2, 1, &inputs),
    ] {
        let opts = MaterializeOptions {
            threads: Some(threads),
            batch_size,
            ..Default::default()
        };
        let tl = compute(set, inputs, &opts).await.unwrap();
        assert!(tl.batches.iter().all(|b| b.num_rows() <= batch_size));
        hashes.push(table_hash(&tl.batches));
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
}

/// The cohort as it was known at `cutoff`: rows known later are dropped, later retractions
/// not yet made.
fn known_by(tables: &CuratedTables, cutoff: DateTime<Utc>) -> CuratedTables {
    fn keep<T: Clone>(
        rows: &[T],
        meta: impl Fn(&mut T) -> &mut ward::curated::RowMeta,
        cutoff: DateTime<Utc>,
    ) -> Vec<T> {
        rows.iter()
            .filter_map(|r| {
                let mut r = r.clone();
                let m = meta(&mut r);
                if m.known_at > cutoff {
                    return None;
                }
                if m.retracted_at.is_some_and(|x| x > cutoff) {
                    m.retracted_at = None;
                }
                Some(r)
            })
            .collect()
    }
    CuratedTables {
        patients: keep(&tables.patients, |r| &mut r.meta, cutoff),
        encounters: keep(&tables.encounters, |r| &mut r.meta, cutoff),
        observations: keep(&tables.observations, |r| &mut r.meta, cutoff),
        conditions: keep(&tables.conditions, |r| &mut r.meta, cutoff),
        procedures: keep(&tables.procedures, |r| &mut r.meta, cutoff),
        medications: keep(&tables.medications, |r| &mut r.meta, cutoff),
        care_team: keep(&tables.care_team, |r| &mut r.meta, cutoff),
        consent: keep(&tables.consent, |r| &mut r.meta, cutoff),
        immunizations: keep(&tables.immunizations, |r| &mut r.meta, cutoff),
        allergies: keep(&tables.allergies, |r| &mut r.meta, cutoff),
        diagnostic_reports: keep(&tables.diagnostic_reports, |r| &mut r.meta, cutoff),
        medication_administrations: keep(
            &tables.medication_administrations,
            |r| &mut r.meta,
            cutoff,
        ),
    }
}

#[tokio::test]
async fn incremental_equals_full_rebuild() {
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let set = repo.set("readmission").unwrap();
    let full = cohort(200, 9);
    let before = known_by(&full, Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap());
    let opts = MaterializeOptions {
        batch_size: 1000,
        ..Default::default()
    };
    let old_inputs = Inputs::from_curated(&before).unwrap();
    let new_inputs = Inputs::from_curated(&full).unwrap();
    let previous = compute(set, &old_inputs, &opts).await.unwrap();
    let inc = compute_incremental(set, &previous.batches, &old_inputs, &new_inputs, &opts)
        .await
        .unwrap();
    let fresh = compute(set, &new_inputs, &opts).await.unwrap();
    assert_eq!(table_hash(&inc.batches), table_hash(&fresh.batches));
    assert!(
        inc.reused > 0 && inc.recomputed > 0,
        "reused {} recomputed {}",
        inc.reused,
        inc.recomputed
    );
    assert_ne!(table_hash(&previous.batches), table_hash(&fresh.batches));
}

// ---------------------------------------------------------------------------------------
// Through the store: materialize, rebuild, incremental, Synthea
// ---------------------------------------------------------------------------------------

fn store_at(dir: &Path) -> Store {
    let clock: SharedClock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap(),
    ));
    Store::open(dir.join("store"), clock).unwrap()
}

use crate::common::put_curated;

#[tokio::test]
async fn materialize_rebuild_and_incremental_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let full = cohort(120, 21);
    put_curated(
        &store,
        &known_by(&full, Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap()),
    )
    .await;
    let opts = MaterializeOptions::default();
    let first = features::materialize(&store, &repo, "readmission", &opts)
        .await
        .unwrap();
    let m = store.manifest(&first.hash).unwrap();
    assert_eq!(m.kind, Kind::Timeline);
    assert_eq!(
        m.lineage.definition,
        Some(repo.set("readmission").unwrap().definition_hash())
    );
    let tables: Vec<&str> = first.inputs.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        tables,
        [
            "patients",
            "encounters",
            "observations",
            "conditions",
            "procedures"
        ]
    );
    assert_eq!(
        m.lineage.inputs,
        first.inputs.iter().map(|(_, h)| *h).collect::<Vec<_>>()
    );
    assert_eq!(
        m.labels.get(features::LABELS_KEY).map(String::as_str),
        Some("readmitted_30d")
    );
    assert_eq!(
        features::rebuild(&store, &first.hash).await.unwrap(),
        first.hash
    );

    // The stored index answers like the in-memory one.
    let (set, idx) = features::load_index(&store, &first.hash).await.unwrap();
    assert_eq!(set.name, "readmission");
    assert_eq!(idx.len(), first.rows);

    // New data, incremental == full.
    put_curated(&store, &full).await;
    let inc = features::materialize_incremental(&store, &repo, "readmission", &first.hash, &opts)
        .await
        .unwrap();
    assert!(inc.reused > 0 && inc.recomputed > 0);
    let fresh = features::materialize(&store, &repo, "readmission", &opts)
        .await
        .unwrap();
    assert_eq!(inc.hash, fresh.hash);
    assert!(!fresh.created);
    assert_ne!(inc.hash, first.hash);
    assert_eq!(
        features::rebuild(&store, &inc.hash).await.unwrap(),
        inc.hash
    );
}

/// Materializing in ranges of patients (a small `partition_rows`) stores the same timeline
/// as materializing at once: the derived table, the score features and the label included.
#[tokio::test]
async fn partitioned_materialization_equals_one_piece() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    put_curated(&store, &cohort(80, 5)).await;
    let whole = features::materialize(&store, &repo, "readmission", &MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(whole.partitions, 1);
    for partition_rows in [1, 700] {
        let other = tempfile::tempdir().unwrap();
        let s2 = store_at(other.path());
        put_curated(&s2, &cohort(80, 5)).await;
        let opts = MaterializeOptions {
            partition_rows,
            ..Default::default()
        };
        let parts = features::materialize(&s2, &repo, "readmission", &opts)
            .await
            .unwrap();
        assert!(
            parts.partitions > 1,
            "{partition_rows}: {}",
            parts.partitions
        );
        if partition_rows == 1 {
            // One patient a range.
            assert_eq!(parts.partitions, parts.recomputed);
        }
        assert_eq!(parts.hash, whole.hash, "partition_rows {partition_rows}");
        assert_eq!(
            (parts.rows, parts.recomputed),
            (whole.rows, whole.recomputed)
        );
        // The temporary Parquet file is gone; rebuild (which partitions by default only
        // above 8M rows) arrives at the same hash.
        let leftovers: Vec<_> = std::fs::read_dir(other.path().join("store/tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("timeline-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(
            features::rebuild(&s2, &parts.hash).await.unwrap(),
            whole.hash
        );
    }
}

#[tokio::test]
async fn readmission_set_from_synthea_csv() {
    let Some(dir) = crate::common::shared_data("synthea-csv") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    let opts = ward::ingest::pipeline::IngestOptions {
        format: ward::ingest::pipeline::Format::Synthea,
        mapping: None,
        mapping_text: None,
        max_bad: None,
        context: ward::ingest::Context::new(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()),
        read: Default::default(),
    };
    ward::ingest::pipeline::ingest(&store, &[dir], &opts, None)
        .await
        .unwrap();
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let out = features::materialize(&store, &repo, "readmission", &MaterializeOptions::default())
        .await
        .unwrap();
    assert!(out.rows > 0);
    assert_eq!(
        features::rebuild(&store, &out.hash).await.unwrap(),
        out.hash
    );
}

// ---------------------------------------------------------------------------------------
// Score features against `scores::stay_scores` called directly at t
// ---------------------------------------------------------------------------------------

/// Every score component; `lace_total` with a short TTL, `charlson_index` without one.
fn score_set_toml() -> String {
    let mut t = String::from("[[feature_set]]\nname = \"scores\"\nttl = \"365d\"\n");
    for c in ScoreComponent::ALL {
        t.push_str(&format!(
            "[[feature_set.features]]\nname = \"{0}\"\nkind = \"score\"\ncomponent = \"{0}\"\n",
            c.name()
        ));
        match c {
            ScoreComponent::LaceTotal => t.push_str("ttl = \"30d\"\n"),
            ScoreComponent::CharlsonIndex => t.push_str("ttl = \"none\"\n"),
            _ => {}
        }
    }
    t
}

/// One patient's rows of the tables the scores read, as the generator made them.
#[derive(Default)]
struct ScoreRows {
    encounters: Vec<Encounter>,
    conditions: Vec<Condition>,
    observations: Vec<Observation>,
    procedures: Vec<Procedure>,
}

impl ScoreRows {
    fn rows(&self) -> PatientRows<'_> {
        PatientRows {
            encounters: &self.encounters,
            conditions: &self.conditions,
            observations: &self.observations,
            procedures: &self.procedures,
        }
    }
}

fn score_rows_by_patient(tables: &CuratedTables) -> BTreeMap<String, ScoreRows> {
    let mut out: BTreeMap<String, ScoreRows> = BTreeMap::new();
    for e in &tables.encounters {
        out.entry(e.patient_id.clone())
            .or_default()
            .encounters
            .push(e.clone());
    }
    for c in &tables.conditions {
        out.entry(c.patient_id.clone())
            .or_default()
            .conditions
            .push(c.clone());
    }
    for o in &tables.observations {
        out.entry(o.patient_id.clone())
            .or_default()
            .observations
            .push(o.clone());
    }
    for p in &tables.procedures {
        out.entry(p.patient_id.clone())
            .or_default()
            .procedures
            .push(p.clone());
    }
    out
}

/// The plain reference: the encounters seen at `t` (latest version of each id), the
/// inpatient one discharged last at or before `t`, and `stay_scores` on every row of the
/// patient in the same view. Returns the stay's discharge time and its scores.
fn score_reference(
    rows: &ScoreRows,
    t: DateTime<Utc>,
    knowledge: Knowledge,
) -> Option<(DateTime<Utc>, scores::StayScores)> {
    let view = match knowledge {
        Knowledge::AsKnown => View::AsKnownAt(t),
        Knowledge::AsOccurred => View::Final,
    };
    let seen = |e: &&Encounter| match view {
        View::AsKnownAt(t) => {
            e.admit_time <= t && e.meta.known_at <= t && e.meta.retracted_at.is_none_or(|x| x > t)
        }
        View::Final => e.meta.retracted_at.is_none(),
    };
    let mut latest: BTreeMap<&str, &Encounter> = BTreeMap::new();
    for e in rows.encounters.iter().filter(seen) {
        let keep_old = latest.get(e.encounter_id.as_str()).is_some_and(|l| {
            (l.meta.known_at, &l.meta.source_id) >= (e.meta.known_at, &e.meta.source_id)
        });
        if !keep_old {
            latest.insert(&e.encounter_id, e);
        }
    }
    let stay = latest
        .values()
        .filter(|e| e.class == "inpatient")
        .filter(|e| {
            e.discharge_time
                .is_some_and(|d| d <= t && d >= e.admit_time)
        })
        .max_by_key(|e| (e.discharge_time, e.admit_time, e.encounter_id.clone()))?;
    let s = scores::stay_scores(rows.rows(), &stay.encounter_id, view).ok()?;
    Some((stay.discharge_time?, s))
}

/// Instants worth probing: every row's event time, `known_at`, entry and retraction, every
/// discharge and discharge + TTL, a microsecond either side; all of them for encounters,
/// conditions (late coding) and retracted observations (corrections), a sample of the rest.
fn score_probe_times(rows: &ScoreRows, rng: &mut ChaCha8Rng) -> Vec<i64> {
    let mut must: Vec<i64> = Vec::new();
    let mut other: Vec<i64> = Vec::new();
    let edges = |e: DateTime<Utc>, m: &ward::curated::RowMeta| {
        let mut v = vec![us(e), us(m.known_at), us(e.max(m.known_at))];
        v.extend(m.retracted_at.map(us));
        v
    };
    for e in &rows.encounters {
        must.extend(edges(e.admit_time, &e.meta));
        if let Some(d) = e.discharge_time {
            must.extend([us(d), us(d) + 30 * DAY_US, us(d) + 365 * DAY_US]);
        }
    }
    for c in &rows.conditions {
        must.extend(edges(c.onset_time, &c.meta));
    }
    for o in &rows.observations {
        if o.meta.retracted_at.is_some() {
            must.extend(edges(o.effective_time, &o.meta));
        } else {
            other.extend(edges(o.effective_time, &o.meta));
        }
    }
    for p in &rows.procedures {
        other.extend(edges(p.performed_time, &p.meta));
    }
    let lo = us(Utc.with_ymd_and_hms(2014, 1, 1, 0, 0, 0).unwrap());
    let hi = us(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
    let mut base: Vec<i64> = (0..8).map(|_| rng.random_range(lo..hi)).collect();
    for _ in 0..20.min(other.len()) {
        base.push(other[rng.random_range(0..other.len())]);
    }
    // Cap the must-probe edges of very busy patients.
    must.sort_unstable();
    must.dedup();
    if must.len() > 150 {
        let keep: Vec<i64> = (0..150)
            .map(|_| must[rng.random_range(0..must.len())])
            .collect();
        must = keep;
    }
    base.extend(must);
    let mut out: Vec<i64> = base.iter().flat_map(|b| [b - 1, *b, b + 1]).collect();
    out.sort_unstable();
    out.dedup();
    out
}

async fn score_differential(knowledge: Knowledge, seed: u64) {
    let toml = score_set_toml();
    let repo = FeatureRepo::parse(&toml, "scores.toml").unwrap();
    let set = repo.set("scores").unwrap();
    let tables = cohort(120, seed);
    let opts = MaterializeOptions {
        knowledge,
        ..Default::default()
    };
    let tl = compute(set, &Inputs::from_curated(&tables).unwrap(), &opts)
        .await
        .unwrap();
    let idx = index(set, &tl.batches);
    let by_patient = score_rows_by_patient(&tables);
    let mut patients: Vec<String> = tables
        .patients
        .iter()
        .map(|p| p.patient_id.clone())
        .collect();
    patients.sort();
    patients.dedup();
    patients.push("nobody".into());
    let empty = ScoreRows::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_status: std::collections::HashMap<(String, Status), u64> =
        std::collections::HashMap::new();
    let (mut late_coded, mut corrected_lab, mut checked) = (0u64, 0u64, 0u64);
    for p in &patients {
        let rows = by_patient.get(p).unwrap_or(&empty);
        for t in score_probe_times(rows, &mut rng) {
            let want = score_reference(rows, at(t), knowledge);
            if let Some((d, s)) = &want {
                // What the probes exercised: a diagnosis of the stay coded after t, and a
                // corrected hemoglobin or sodium result inside the stay.
                if let Some((_, fin)) = score_reference(rows, at(t), Knowledge::AsOccurred) {
                    if fin.stay == s.stay && fin.charlson.index() > s.charlson.index() {
                        late_coded += 1;
                    }
                }
                let in_stay = |o: &&Observation| {
                    o.effective_time >= s.stay.admit
                        && o.effective_time <= *d
                        && ["718-7", "2951-2"].contains(&o.code.code.as_str())
                };
                if rows
                    .observations
                    .iter()
                    .filter(in_stay)
                    .any(|o| o.meta.retracted_at.is_some())
                {
                    corrected_lab += 1;
                }
            }
            for c in ScoreComponent::ALL {
                let f = set.feature(c.name()).unwrap();
                let expected = match &want {
                    None => FeatureValue {
                        value: None,
                        status: Status::NoData,
                    },
                    Some((d, _)) if f.ttl_us.is_some_and(|ttl| t - us(*d) >= ttl) => FeatureValue {
                        value: None,
                        status: Status::OutsideTtl,
                    },
                    Some((_, s)) => FeatureValue {
                        value: Some(Value::Num(s.value(c) as f64)),
                        status: Status::Present,
                    },
                };
                let ttl = idx.feature_info(c.name()).unwrap().ttl;
                let got = lookup(&idx, p, c.name(), at(t), ttl);
                assert_eq!(got, expected, "patient {p} {} t {} ({t})", c.name(), at(t));
                *by_status
                    .entry((c.name().to_string(), got.status))
                    .or_default() += 1;
                checked += 1;
            }
        }
    }
    for c in ScoreComponent::ALL {
        assert!(
            by_status.contains_key(&(c.name().to_string(), Status::Present)),
            "{} never present",
            c.name()
        );
        assert!(
            by_status.contains_key(&(c.name().to_string(), Status::NoData)),
            "{} never without data",
            c.name()
        );
    }
    assert!(by_status.contains_key(&("lace_total".to_string(), Status::OutsideTtl)));
    assert!(!by_status.contains_key(&("charlson_index".to_string(), Status::OutsideTtl)));
    // Some score component takes a non-zero value somewhere.
    for c in [
        ScoreComponent::CharlsonIndex,
        ScoreComponent::LaceTotal,
        ScoreComponent::HospitalTotal,
    ] {
        let nonzero = idx
            .series("P0000001", c.name())
            .iter()
            .chain(patients.iter().flat_map(|p| idx.series(p, c.name())))
            .any(|cp| cp.value_num.is_some_and(|v| v > 0.0));
        assert!(nonzero, "{} is 0 everywhere", c.name());
    }
    assert!(corrected_lab > 0, "no probe saw a corrected lab in a stay");
    if knowledge == Knowledge::AsKnown {
        assert!(late_coded > 0, "no probe saw a diagnosis coded after t");
    }
    assert!(checked > 50_000, "only {checked} lookups compared");
}

#[tokio::test]
async fn score_features_match_stay_scores_as_known() {
    score_differential(Knowledge::AsKnown, 13).await;
}

#[tokio::test]
async fn score_features_match_stay_scores_as_occurred() {
    score_differential(Knowledge::AsOccurred, 17).await;
}

/// Hand-built: a late-coded diagnosis and a corrected hemoglobin change the score at the
/// instant they become known, not before; a second stay replaces the first at its discharge;
/// TTL counts from the discharge.
#[tokio::test]
async fn score_changes_at_coding_correction_and_next_discharge() {
    use ward::curated::{Coding, RowMeta};
    let t0 = Utc.with_ymd_and_hms(2021, 5, 1, 8, 0, 0).unwrap();
    let h = Duration::hours;
    let meta = |id: &str, k: DateTime<Utc>, x: Option<DateTime<Utc>>| RowMeta {
        source_system: "s".into(),
        source_id: id.into(),
        known_at: k,
        retracted_at: x,
    };
    let enc = |id: &str, admit: DateTime<Utc>, dis: DateTime<Utc>, m: RowMeta| Encounter {
        encounter_id: id.into(),
        patient_id: "p".into(),
        class: "inpatient".into(),
        admit_time: admit,
        discharge_time: Some(dis),
        admission_type: Some("emergency".into()),
        discharge_disposition: None,
        service: Some("medicine".into()),
        code: None,
        meta: m,
    };
    let hb = |id: &str, v: f64, e: DateTime<Utc>, m: RowMeta| Observation {
        observation_id: id.into(),
        patient_id: "p".into(),
        encounter_id: None,
        category: None,
        code: Coding {
            system: "LOINC".into(),
            code: "718-7".into(),
            display: None,
        },
        value_num: Some(v),
        value_text: None,
        unit: Some("g/dL".into()),
        effective_time: e,
        status: Some("final".into()),
        meta: m,
    };
    // Stay 1: 3 days, emergency; known at discharge (t0 + 72h).
    let d1 = t0 + h(72);
    // Stay 2: 1 day, 60 days later.
    let a2 = t0 + Duration::days(60);
    let d2 = a2 + h(24);
    let tables = CuratedTables {
        encounters: vec![
            enc("E1", t0, d1, meta("E1/2", d1, None)),
            enc("E2", a2, d2, meta("E2/2", d2, None)),
        ],
        conditions: vec![Condition {
            condition_id: "C1".into(),
            patient_id: "p".into(),
            encounter_id: Some("E1".into()),
            code: Coding {
                system: "ICD10CM".into(),
                code: "I50.9".into(),
                display: None,
            },
            onset_time: t0,
            abatement_time: None,
            // Coded two days after discharge.
            meta: meta("C1", d1 + h(48), None),
        }],
        observations: vec![
            // 11 g/dL at discharge, corrected to 12.5 a day later.
            hb(
                "O1",
                11.0,
                d1 - h(2),
                meta("O1/1", d1 - h(1), Some(d1 + h(24))),
            ),
            hb("O1", 12.5, d1 - h(2), meta("O1/2", d1 + h(24), None)),
        ],
        ..Default::default()
    };
    let toml = r#"
[[feature_set]]
name = "s"
ttl = "90d"
[[feature_set.features]]
name = "charlson"
kind = "score"
component = "charlson_index"
[[feature_set.features]]
name = "hb"
kind = "score"
component = "hospital_hemoglobin"
[[feature_set.features]]
name = "lace_l"
kind = "score"
component = "lace_l"
"#;
    let repo = FeatureRepo::parse(toml, "s.toml").unwrap();
    let set = repo.set("s").unwrap();
    let tl = compute(
        set,
        &Inputs::from_curated(&tables).unwrap(),
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    let idx = index(set, &tl.batches);
    let get = |f: &str, t: DateTime<Utc>| lookup(&idx, "p", f, t, idx.feature_info(f).unwrap().ttl);
    let num = |v: f64| FeatureValue {
        value: Some(Value::Num(v)),
        status: Status::Present,
    };
    let eps = Duration::microseconds(1);
    assert_eq!(
        get("lace_l", d1 - eps).status,
        Status::NoData,
        "in progress"
    );
    assert_eq!(get("lace_l", d1), num(3.0), "3 days: L = 3");
    assert_eq!(get("charlson", d1), num(0.0), "heart failure not coded yet");
    assert_eq!(get("charlson", d1 + h(48) - eps), num(0.0));
    assert_eq!(get("charlson", d1 + h(48)), num(1.0), "coded: CHF");
    assert_eq!(get("hb", d1), num(1.0), "11 g/dL < 12");
    assert_eq!(get("hb", d1 + h(24) - eps), num(1.0));
    assert_eq!(get("hb", d1 + h(24)), num(0.0), "corrected to 12.5");
    // Stay 2 replaces stay 1 at its discharge; its hemoglobin is unknown, CHF is history.
    assert_eq!(get("lace_l", d2 - eps), num(3.0));
    assert_eq!(get("lace_l", d2), num(1.0));
    assert_eq!(get("hb", d2), num(0.0));
    assert_eq!(get("charlson", d2), num(1.0));
    // TTL (90 days, the set's) counts from stay 2's discharge.
    assert_eq!(get("lace_l", d2 + Duration::days(90) - eps), num(1.0));
    assert_eq!(
        get("lace_l", d2 + Duration::days(90)).status,
        Status::OutsideTtl
    );
    // As occurred: the final record from the discharge on.
    let occurred = compute(
        set,
        &Inputs::from_curated(&tables).unwrap(),
        &MaterializeOptions {
            knowledge: Knowledge::AsOccurred,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let idx = index(set, &occurred.batches);
    let get = |f: &str, t: DateTime<Utc>| lookup(&idx, "p", f, t, None);
    assert_eq!(get("charlson", d1), num(1.0));
    assert_eq!(get("hb", d1), num(0.0));
    assert_eq!(get("lace_l", d1 - eps).status, Status::NoData);
}

/// Features that read part of three tables: lab codes, encounter classes (the label's too),
/// condition families, and prefixes with LIKE's special characters (`_`, `%`, `\`), which
/// must match themselves only.
const PART_ROWS: &str = r#"
[[derived]]
name = "stays"
time = "discharge_time"
sql = """
SELECT patient_id, encounter_id, admit_time, discharge_time,
       (discharge_time - admit_time) AS los, known_at, retracted_at, source_id
FROM encounters
WHERE class IN ('inpatient') AND discharge_time IS NOT NULL
"""

[[feature_set]]
name = "part"
ttl = "90d"

[[feature_set.features]]
name = "admissions_180d"
kind = "count"
table = "encounters"
filter = { class = "inpatient" }
window = "180d"

[[feature_set.features]]
name = "visits_7d"
kind = "count"
table = "encounters"
filter = { class = { in = ["emergency", "urgent_care"] } }
window = "7d"

[[feature_set.features]]
name = "hb_last"
kind = "last"
table = "observations"
filter = { code = "718-7", code_system = "LOINC" }
column = "value_num"

[[feature_set.features]]
name = "sodium_mean_3d"
kind = "mean"
table = "observations"
filter = { code = "2951-2" }
column = "value_num"
window = "3d"

[[feature_set.features]]
name = "heart_failure"
kind = "exists"
table = "conditions"
filter = { code = { prefix = ["I50", "I11"] } }

[[feature_set.features]]
name = "wildcards"
kind = "exists"
table = "conditions"
filter = { code = { prefix = ["I_0", "E1%", "\\"] } }

[[feature_set.features]]
name = "age"
kind = "age"

[[feature_set.features]]
name = "los_last"
kind = "last"
table = "stays"
column = "los"

[[feature_set.features]]
name = "readmit_30d"
kind = "readmitted_within"
horizon = "30d"
"#;

/// `inputs` with only the rows `set.row_filters()` keeps.
fn pruned(set: &FeatureSet, inputs: &Inputs) -> Inputs {
    let filters = set.row_filters();
    let mut out = inputs.clone();
    for (t, batches) in &mut out.tables {
        if let Some(f) = filters.get(t) {
            for b in batches.iter_mut() {
                let keep = f.keep(b, t.name()).unwrap();
                *b = arrow::compute::filter_record_batch(b, &keep).unwrap();
            }
        }
    }
    out
}

fn rows_of(inputs: &Inputs, t: Table) -> usize {
    inputs.tables[&t].iter().map(RecordBatch::num_rows).sum()
}

/// Materialization reads only the rows some feature's filter passes, and the timeline is the
/// one computed from every row, as known and as occurred. Tables read by a derived query or
/// a score are read whole.
#[tokio::test]
async fn reading_only_the_rows_features_filter_gives_the_same_timeline() {
    let repo = FeatureRepo::parse(PART_ROWS, "part.toml").unwrap();
    let set = repo.set("part").unwrap();
    let filters = set.row_filters();
    assert_eq!(
        filters.keys().copied().collect::<Vec<_>>(),
        [Table::Encounters, Table::Observations, Table::Conditions]
    );
    // The label's filter and the 180-day count's are the same condition, kept once; the
    // derived query's WHERE adds its own.
    assert_eq!(filters[&Table::Encounters].any_of.len(), 3);
    assert_eq!(filters[&Table::Observations].any_of.len(), 2);
    // Scores read their tables whole, and so does a derived query with a subquery.
    let example = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    assert!(example.set("readmission").unwrap().row_filters().is_empty());
    let joined = PART_ROWS.replace(
        "AND discharge_time IS NOT NULL",
        "AND patient_id IN (SELECT patient_id FROM encounters WHERE class = 'emergency')",
    );
    assert_ne!(joined, PART_ROWS);
    let joined = FeatureRepo::parse(&joined, "joined.toml").unwrap();
    assert_eq!(
        joined
            .set("part")
            .unwrap()
            .row_filters()
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [Table::Observations, Table::Conditions]
    );

    let tables = cohort(150, 9);
    let full = Inputs::from_curated(&tables).unwrap();
    let part = pruned(set, &full);
    for t in [Table::Encounters, Table::Observations, Table::Conditions] {
        let (a, b) = (rows_of(&full, t), rows_of(&part, t));
        assert!(0 < b && b < a, "{}: {b} of {a} rows kept", t.name());
    }
    assert_eq!(
        rows_of(&part, Table::Patients),
        rows_of(&full, Table::Patients)
    );
    for knowledge in [Knowledge::AsKnown, Knowledge::AsOccurred] {
        let opts = MaterializeOptions {
            knowledge,
            ..Default::default()
        };
        let a = compute(set, &full, &opts).await.unwrap();
        let b = compute(set, &part, &opts).await.unwrap();
        assert!(!a.batches.is_empty());
        assert_eq!(
            table_hash(&a.batches),
            table_hash(&b.batches),
            "{knowledge:?}"
        );
        // An index built from owned batches (each dropped once read) answers like one built
        // from borrowed ones.
        let borrowed = index(set, &a.batches);
        let owned = TimelineIndex::build_owned(set, a.batches).unwrap();
        assert_eq!(
            (owned.len(), owned.patients()),
            (borrowed.len(), borrowed.patients())
        );
        for p in tables.patients.iter().map(|p| p.patient_id.as_str()) {
            for f in &set.features {
                for t in [
                    Utc.with_ymd_and_hms(2021, 6, 1, 0, 0, 0).unwrap(),
                    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
                ] {
                    assert_eq!(
                        lookup(&owned, p, &f.name, t, None),
                        lookup(&borrowed, p, &f.name, t, None),
                        "{p} {} {t}",
                        f.name
                    );
                }
            }
        }
    }
}

/// Through the store the filter is evaluated by the scan (Lance), alone and with the patient
/// ranges of partitioned materialization: the stored timeline is the one computed in memory
/// from every row.
#[tokio::test]
async fn stored_materialization_reads_the_filtered_rows_to_the_same_timeline() {
    let repo = FeatureRepo::parse(PART_ROWS, "part.toml").unwrap();
    let set = repo.set("part").unwrap();
    let tables = cohort(90, 13);
    let want = compute(
        set,
        &Inputs::from_curated(&tables).unwrap(),
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    for partition_rows in [usize::MAX, 900] {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        put_curated(&store, &tables).await;
        let opts = MaterializeOptions {
            partition_rows,
            ..Default::default()
        };
        let got = features::materialize(&store, &repo, "part", &opts)
            .await
            .unwrap();
        assert_eq!(got.partitions > 1, partition_rows == 900);
        let (_, batches) = store.read(&got.hash).await.unwrap();
        assert_eq!(
            table_hash(&batches),
            table_hash(&want.batches),
            "partition_rows {partition_rows}"
        );
    }
}

/// The filter's expression (what the store's scan evaluates) keeps exactly the rows
/// `RowFilter::keep` keeps: nulls, both columns of a two-column condition, prefixes with
/// LIKE's wildcards and escape character taken literally.
#[tokio::test]
async fn row_filter_expression_keeps_what_keep_keeps() {
    use arrow::array::StringArray;
    use arrow::datatypes::{Field, Schema};
    let repo = FeatureRepo::parse(PART_ROWS, "part.toml").unwrap();
    let filters = repo.set("part").unwrap().row_filters();
    let codes: Vec<Option<&str>> = vec![
        Some("I50.9"),
        Some("I11"),
        Some("I_0"),
        Some("I_01"),
        Some("IX0"),
        Some("E1%x"),
        Some("E10"),
        Some("\\x"),
        Some("x\\"),
        Some("i50"),
        None,
        Some("718-7"),
        Some("718-7"),
        Some("2951-2"),
        Some("718-7x"),
    ];
    let systems: Vec<Option<&str>> = (0..codes.len())
        .map(|i| match i % 3 {
            0 => Some("LOINC"),
            1 => None,
            _ => Some("SNOMED"),
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("row", DataType::Int64, false),
        Field::new("code", DataType::Utf8, true),
        Field::new("code_system", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(arrow::array::Int64Array::from_iter_values(
                0..codes.len() as i64,
            )),
            Arc::new(StringArray::from(codes.clone())),
            Arc::new(StringArray::from(systems)),
        ],
    )
    .unwrap();
    for t in [Table::Observations, Table::Conditions] {
        let f = &filters[&t];
        let keep = f.keep(&batch, "test batch").unwrap();
        // keep (column kernels) against the conditions row by row.
        for i in 0..batch.num_rows() {
            let value = |c: &str| {
                let a = batch.column_by_name(c).unwrap().as_string::<i32>();
                (!a.is_null(i)).then(|| a.value(i))
            };
            let want = f.any_of.iter().any(|conds| {
                conds
                    .iter()
                    .all(|(c, k)| value(c).is_some_and(|v| k.matches(v)))
            });
            assert_eq!(keep.value(i), want, "{} row {i}", t.name());
            assert!(!keep.is_null(i));
        }
        let want: Vec<i64> = (0..batch.num_rows())
            .filter(|&i| keep.value(i))
            .map(|i| i as i64)
            .collect();
        let ctx = datafusion::prelude::SessionContext::new();
        let got: Vec<i64> = ctx
            .read_batch(batch.clone())
            .unwrap()
            .filter(f.expr())
            .unwrap()
            .collect()
            .await
            .unwrap()
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(got, want, "{}", t.name());
        assert!(!want.is_empty(), "{}", t.name());
    }
    // Conditions: I50.9, I11, I_0 and I_01 (prefix "I_0" taken literally), E1%x, \x.
    let f = &filters[&Table::Conditions];
    let keep = f.keep(&batch, "test batch").unwrap();
    let kept: Vec<&str> = (0..batch.num_rows())
        .filter(|&i| keep.value(i))
        .filter_map(|i| codes[i])
        .collect();
    assert_eq!(kept, ["I50.9", "I11", "I_0", "I_01", "E1%x", "\\x"]);
    // A batch without the filter's column is an error naming it.
    let err = f
        .keep(&batch.project(&[0]).unwrap(), "conditions batch")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conditions batch") && err.contains("code"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Curated tables from Parquet files
// ---------------------------------------------------------------------------------------

/// Writes every curated table of `tables` to `dir/<table>.parquet`, in row groups of
/// `group_rows` rows (so a table spans several).
fn write_curated_parquet(dir: &Path, tables: &CuratedTables, group_rows: usize) {
    for t in Table::ALL {
        let batch = tables.to_batch(t).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(group_rows))
            .build();
        let f = std::fs::File::create(dir.join(format!("{}.parquet", t.name()))).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}

/// Sets read from Parquet files (only the columns and rows they need, `source_id` of
/// feature-only tables left for ties) give the timeline the in-memory tables give: every
/// kind, row filters with a derived query, and the readmission set (scores), as known and as
/// occurred.
#[tokio::test]
async fn sets_from_parquet_files_give_the_in_memory_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let tables = cohort(200, 5);
    write_curated_parquet(dir.path(), &tables, 700);
    let inputs = Inputs::from_curated(&tables).unwrap();
    for (toml, name) in [
        (ALL_KINDS, "all"),
        (PART_ROWS, "part"),
        (EXAMPLE, "readmission"),
    ] {
        let repo = FeatureRepo::parse(toml, "set.toml").unwrap();
        let set = repo.set(name).unwrap();
        let files = features::read_parquet_inputs(dir.path(), set).unwrap();
        // Observations are read by features only: their source ids wait for a tie.
        if name != "readmission" {
            let obs = &files.tables[&Table::Observations];
            assert!(obs.len() > 1, "{name}: several row groups");
            assert!(obs.iter().all(|b| b.column_by_name("source_id").is_none()));
            assert!(files.late_source_ids.is_some());
        }
        // The derived query of "part" passes `source_id` through, and no feature reads its
        // `encounter_id`: neither is read.
        if name == "part" {
            for b in &files.tables[&Table::Encounters] {
                assert!(b.column_by_name("source_id").is_none());
                assert!(b.column_by_name("encounter_id").is_none());
                assert!(b.column_by_name("admit_time").is_some());
            }
        }
        for knowledge in [Knowledge::AsKnown, Knowledge::AsOccurred] {
            let opts = MaterializeOptions {
                knowledge,
                ..Default::default()
            };
            let want = compute(set, &inputs, &opts).await.unwrap();
            let got = compute(set, &files, &opts).await.unwrap();
            assert_eq!(
                table_hash(&got.batches),
                table_hash(&want.batches),
                "{name} {knowledge:?}"
            );
        }
    }
    let repo = FeatureRepo::parse(ALL_KINDS, "all.toml").unwrap();
    let err = features::read_parquet_inputs(&dir.path().join("missing"), repo.set("all").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing/") && err.contains(".parquet"),
        "{err}"
    );
}

/// Entity rows (`patient_id`, `ts`) for the direct lookup.
fn entity_rows(rows: &[(&str, i64)]) -> RecordBatch {
    use arrow::array::{StringArray, TimestampMicrosecondArray};
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("patient_id", DataType::Utf8, false),
        arrow::datatypes::Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let (ids, ts): (Vec<&str>, Vec<i64>) = rows.iter().copied().unzip();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        ],
    )
    .unwrap()
}

/// Counts the calls of a [`SourceIdReader`] it wraps.
struct Counting(Arc<dyn SourceIdReader>, std::sync::atomic::AtomicUsize);

impl Counting {
    fn reads(&self) -> usize {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `tables` written as curated Parquet files in `dir` (row groups of `group_rows`) and read
/// for `set`, their late source ids read through a [`Counting`] reader.
fn counted_files(
    dir: &Path,
    tables: &CuratedTables,
    group_rows: usize,
    set: &FeatureSet,
) -> (Inputs, Arc<Counting>) {
    write_curated_parquet(dir, tables, group_rows);
    let mut files = features::read_parquet_inputs(dir, set).unwrap();
    let counting = Arc::new(Counting(
        files.late_source_ids.clone().expect("a late reader"),
        Default::default(),
    ));
    files.late_source_ids = Some(counting.clone());
    (files, counting)
}

/// `set` materialized from `files` gives the timeline it gives from `eager`.
async fn assert_same_timeline(set: &FeatureSet, eager: &Inputs, files: &Inputs) {
    let opts = MaterializeOptions::default();
    let want = compute(set, eager, &opts).await.unwrap();
    let got = compute(set, files, &opts).await.unwrap();
    assert_eq!(table_hash(&got.batches), table_hash(&want.batches));
}

impl SourceIdReader for Counting {
    fn read(&self, table: Table) -> ward::error::Result<Vec<arrow::array::ArrayRef>> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.read(table)
    }
}

/// A derived query that passes `source_id` through runs on row numbers in its place when its
/// input comes without the column: the ids are looked up by those numbers only when the
/// derived table's events tie, and the result is the one with the column read up front. A
/// query that uses `source_id` otherwise gets the ids read before it runs.
#[tokio::test]
async fn derived_tables_pass_late_source_ids_through() {
    use ward::curated::RowMeta;
    let t0 = Utc.with_ymd_and_hms(2021, 3, 1, 8, 0, 0).unwrap();
    let d = Duration::days;
    let enc =
        |pid: &str, id: &str, class: &str, admit: DateTime<Utc>, dis: DateTime<Utc>| Encounter {
            encounter_id: format!("e-{id}"),
            patient_id: pid.into(),
            class: class.into(),
            admit_time: admit,
            discharge_time: Some(dis),
            admission_type: None,
            discharge_disposition: None,
            service: None,
            code: None,
            meta: RowMeta {
                source_system: "s".into(),
                source_id: id.into(),
                known_at: dis,
                retracted_at: None,
            },
        };
    let dis = t0 + d(10);
    // Patient p's stays tie on discharge time and `known_at`: "s2" (2 days) sorts after "s1"
    // (5 days) by source id, so its length is the last one; by value it would be s1's. The
    // file's order is not the derived table's (sorted by admission), so row numbers that
    // went to the wrong rows would swap the ids.
    let rows = vec![
        enc("a", "x1", "ambulatory", t0, t0),
        enc("p", "s2", "inpatient", dis - d(2), dis),
        enc("q", "x2", "emergency", t0, t0 + d(1)),
        enc("a", "x3", "ambulatory", t0, t0),
        enc("p", "s1", "inpatient", dis - d(5), dis),
        enc("q", "x4", "inpatient", t0 + d(3), t0 + d(4)),
    ];
    let set_toml = |condition: &str| {
        format!(
            r#"
[[derived]]
name = "stays"
time = "discharge_time"
sql = """
SELECT patient_id, encounter_id, admit_time, discharge_time,
       (discharge_time - admit_time) AS los, known_at, retracted_at, source_id
FROM encounters
WHERE class = 'inpatient' AND discharge_time IS NOT NULL{condition}
"""

[[feature_set]]
name = "s"
entity = "patient"

[[feature_set.features]]
name = "los_last"
kind = "last"
table = "stays"
column = "los"
ttl = "none"

[[feature_set.features]]
name = "visits"
kind = "count"
table = "encounters"
filter = {{ class = {{ in = ["inpatient", "emergency"] }} }}
window = "365d"
"#
        )
    };
    let through_repo = FeatureRepo::parse(&set_toml(""), "s.toml").unwrap();
    let through = through_repo.set("s").unwrap();
    let other_repo = FeatureRepo::parse(&set_toml(" AND source_id <> ''"), "o.toml").unwrap();
    let other = other_repo.set("s").unwrap();
    let opts = MaterializeOptions::default();
    let entities = entity_rows(&[("p", us(dis + d(1))), ("q", us(dis + d(1)))]);
    let los_of_p = |out: &[RecordBatch]| {
        out[0]
            .column_by_name("los_last")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0)
    };
    // The answer for p is s2's length: the one of a table with s2 only.
    let only_s2 = CuratedTables {
        encounters: vec![rows[1].clone()],
        ..Default::default()
    };
    let (_, s2_out) = features::historical_direct(
        through,
        Inputs::from_curated(&only_s2).unwrap(),
        std::slice::from_ref(&entities),
        "patient_id",
        "ts",
        &opts,
    )
    .await
    .unwrap();
    let s2_los = los_of_p(&s2_out);
    let without_s1: Vec<Encounter> = rows
        .iter()
        .filter(|e| e.meta.source_id != "s1")
        .cloned()
        .collect();
    for (rows, reads) in [(rows.clone(), 1), (without_s1, 0)] {
        let tables = CuratedTables {
            encounters: rows,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let (files, counting) = counted_files(dir.path(), &tables, 2, through);
        assert!(files.tables[&Table::Encounters]
            .iter()
            .all(|b| b.column_by_name("source_id").is_none()));
        let eager = Inputs::from_curated(&tables).unwrap();
        assert_same_timeline(through, &eager, &files).await;
        assert_eq!(counting.reads(), reads);
        let (_, out) = features::historical_direct(
            through,
            files.clone(),
            std::slice::from_ref(&entities),
            "patient_id",
            "ts",
            &opts,
        )
        .await
        .unwrap();
        assert_eq!(los_of_p(&out), s2_los);
        assert_eq!(counting.reads(), 2 * reads);
        // The same inputs for a query that compares `source_id`: read before it runs.
        assert_same_timeline(other, &eager, &files).await;
    }
}

/// A tie on event time and `known_at` is ordered by the source ids, read late from the file
/// only when a tie needs them: the same value as with the column read up front, through
/// materialization and the direct lookup. Without a tie they are never read; a reader that
/// gives the wrong number of rows is an error naming the table.
#[tokio::test]
async fn late_source_ids_are_read_for_ties_only() {
    let t0 = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    let obs = |pid: &str, id: &str, e: DateTime<Utc>, v: f64| hgb(pid, id, e, e, None, v);
    let toml = r#"
[[feature_set]]
name = "hgb"
entity = "patient"
[[feature_set.features]]
name = "hgb_last"
kind = "last"
table = "observations"
filter = { code = "718-7" }
column = "value_num"
ttl = "none"
"#;
    let repo = FeatureRepo::parse(toml, "hgb.toml").unwrap();
    let set = repo.set("hgb").unwrap();
    let h = Duration::hours;
    // Patient p: "b" and "a" tie; "b" sorts last, so its 10.0 is the value (ordering by
    // value instead, as without source ids, would give 11.0). Patient q: no tie.
    let tied = vec![
        obs("p", "b", t0, 10.0),
        obs("p", "a", t0, 11.0),
        obs("q", "c", t0, 7.0),
        obs("q", "d", t0 + h(1), 8.0),
    ];
    let entities = entity_rows(&[("p", us(t0 + h(2))), ("q", us(t0 + h(2)))]);
    let opts = MaterializeOptions::default();
    for (rows, reads, want_p) in [(tied.clone(), 1, 10.0), (tied[2..].to_vec(), 0, f64::NAN)] {
        let tables = CuratedTables {
            observations: rows,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let (files, counting) = counted_files(dir.path(), &tables, 1000, set);
        let eager = Inputs::from_curated(&tables).unwrap();
        assert_same_timeline(set, &eager, &files).await;
        assert_eq!(counting.reads(), reads);
        let (_, out) = features::historical_direct(
            set,
            files.clone(),
            std::slice::from_ref(&entities),
            "patient_id",
            "ts",
            &opts,
        )
        .await
        .unwrap();
        let hgb = out[0]
            .column_by_name("hgb_last")
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone();
        assert_eq!(hgb.value(1), 8.0);
        if want_p.is_nan() {
            assert!(hgb.is_null(0));
        } else {
            assert_eq!(hgb.value(0), want_p);
        }
        assert_eq!(counting.reads(), 2 * reads);
    }

    /// Gives one row too few.
    struct Short(Arc<dyn SourceIdReader>);
    impl SourceIdReader for Short {
        fn read(&self, table: Table) -> ward::error::Result<Vec<arrow::array::ArrayRef>> {
            let mut ids = self.0.read(table)?;
            let last = ids.pop().unwrap();
            ids.push(last.slice(0, last.len() - 1));
            Ok(ids)
        }
    }
    let tables = CuratedTables {
        observations: tied,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    write_curated_parquet(dir.path(), &tables, 1000);
    let mut files = features::read_parquet_inputs(dir.path(), set).unwrap();
    files.late_source_ids = Some(Arc::new(Short(files.late_source_ids.clone().unwrap())));
    let err = compute(set, &files, &opts).await.unwrap_err().to_string();
    assert!(
        err.contains("source_id of table observations") && err.contains("read 3 rows"),
        "{err}"
    );
}
