//! The plain reference (scan, filter, sort, compute; no change points) against the
//! timeline of every kind, on random cohorts and hand-built edges.

use super::*;

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

/// A run of the reference against the timeline: the cohort of `seed`, every kind of
/// [`ALL_KINDS`], each probe's value from the timeline index compared with the reference's.
/// What the lookup tests check the historical joins against.
pub(crate) struct Run {
    pub(crate) repo: FeatureRepo,
    pub(crate) inputs: Inputs,
    pub(crate) opts: MaterializeOptions,
    pub(crate) idx: TimelineIndex,
    /// Every probe (patient, time) with the reference's value of each feature, in set order.
    pub(crate) cases: Vec<(String, i64, Vec<FeatureValue>)>,
    /// Lookups compared, by (kind, status).
    by_status: BTreeMap<(FeatureKind, String), u64>,
    checked: u64,
}

impl Run {
    pub(crate) fn set(&self) -> &FeatureSet {
        self.repo.set("all").unwrap()
    }
}

/// Computes the timeline of [`ALL_KINDS`] over the cohort of `seed` and checks every probe
/// against the reference.
pub(crate) async fn reference_run(knowledge: Knowledge, seed: u64) -> Run {
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
    // Every probe with the reference's answers, for the historical joins.
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
    Run {
        repo,
        inputs,
        opts,
        idx,
        cases,
        by_status,
        checked,
    }
}

async fn differential(knowledge: Knowledge, seed: u64) {
    let run = reference_run(knowledge, seed).await;
    let (set, by_status, checked) = (run.set(), &run.by_status, run.checked);
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
pub(super) fn hgb(
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
        value_original: None,
        unit_original: None,
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
