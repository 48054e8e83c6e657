//! Materialization in memory: curated rows and a feature set in, timeline rows out.
//!
//! 1. Derived tables are computed (DataFusion).
//! 2. For each feature, the matching rows of its table become events (event time,
//!    `known_at`, `retracted_at`, `source_id`, value), grouped by patient and sorted in the
//!    tie order: event time, then `known_at`, then `source_id` (then the rest of the row).
//! 3. Each patient is computed alone, in parallel: a row is visible on an interval
//!    `[enter, leave)`; a sweep over the interval ends gives every instant where the state
//!    can change, and the state is recomputed from the visible rows there, in tie order, so
//!    sums and means add in one fixed order.
//! 4. Patients are assembled in id order, features in name order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use rayon::prelude::*;

use super::definition::{FeatureDef, FeatureKind, FeatureSet, ValueClass, DAY_US};
use super::derived;
use super::score::{self, ClinicalRows};
use super::timeline::{self, ChangePoint, Rows};
use crate::curated::{CuratedTables, Table};
use crate::error::{Error, Result};

/// Curated rows given to materialization, per table.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The batches of each table (a table without batches has no rows).
    pub tables: BTreeMap<Table, Vec<RecordBatch>>,
}

impl Inputs {
    /// The batches of in-memory curated tables (for tests and the generator).
    ///
    /// # Errors
    /// [`Error::Arrow`] only if a table does not convert, which would be a bug.
    pub fn from_curated(tables: &CuratedTables) -> Result<Inputs> {
        let mut out = BTreeMap::new();
        for t in Table::ALL {
            out.insert(t, vec![tables.to_batch(t)?]);
        }
        Ok(Inputs { tables: out })
    }
}

/// Which knowledge a timeline reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Knowledge {
    /// As known at t (the default): a row counts from `max(event_time, known_at)` until
    /// `retracted_at`.
    #[default]
    AsKnown,
    /// As occurred (`--as-occurred`): the final record, back-dated: rows never retracted
    /// count from their event time; retracted rows (superseded or cancelled) never count.
    AsOccurred,
}

/// How to materialize.
#[derive(Debug, Clone)]
pub struct MaterializeOptions {
    /// As known at t (default) or as occurred.
    pub knowledge: Knowledge,
    /// Threads computing patients (default: rayon's global pool). The result does not
    /// depend on it.
    pub threads: Option<usize>,
    /// Rows per timeline batch (default 65,536). The result's hash does not depend on it.
    pub batch_size: usize,
}

impl Default for MaterializeOptions {
    fn default() -> Self {
        MaterializeOptions {
            knowledge: Knowledge::AsKnown,
            threads: None,
            batch_size: 65_536,
        }
    }
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    None,
    Num(f64),
    Text(String),
    Time(i64),
}

/// One matching row of a feature's table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ev {
    pub(crate) e: i64,
    pub(crate) k: i64,
    pub(crate) x: Option<i64>,
    pub(crate) sid: String,
    pub(crate) val: Val,
}

fn val_cmp(a: &Val, b: &Val) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let rank = |v: &Val| match v {
        Val::None => 0,
        Val::Num(_) => 1,
        Val::Text(_) => 2,
        Val::Time(_) => 3,
    };
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.total_cmp(y),
        (Val::Text(x), Val::Text(y)) => x.cmp(y),
        (Val::Time(x), Val::Time(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)).then(Ordering::Equal),
    }
}

/// The tie order: event time, `known_at`, `source_id`, then the rest (so the order is total).
pub(crate) fn ev_cmp(a: &Ev, b: &Ev) -> std::cmp::Ordering {
    (a.e, a.k, &a.sid, a.x)
        .cmp(&(b.e, b.k, &b.sid, b.x))
        .then_with(|| val_cmp(&a.val, &b.val))
}

/// Per patient, per feature (in set order), the events (none for `score` features).
pub(crate) type PatientEvents = BTreeMap<String, Vec<Vec<Ev>>>;

/// What materialization reads per patient: the events of every feature, and the rows the
/// `score` features read (only when the set has some).
#[derive(Debug, Clone, Default)]
pub(crate) struct Extracted {
    /// Every patient with an event or a score row has an entry.
    pub(crate) events: PatientEvents,
    pub(crate) clinical: BTreeMap<String, ClinicalRows>,
}

/// The rows of every table a set reads, derived tables computed.
async fn sources(set: &FeatureSet, inputs: &Inputs) -> Result<BTreeMap<String, RecordBatch>> {
    let mut out = BTreeMap::new();
    for t in set.curated_tables() {
        let batches = inputs.tables.get(&t).cloned().unwrap_or_default();
        let schema = batches
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| t.schema());
        out.insert(t.name().to_string(), concat_batches(&schema, &batches)?);
    }
    for d in &set.derived {
        let q = derived::parse(&d.sql)
            .map_err(|r| Error::invalid(format!("derived table {}", d.name), r))?;
        out.insert(
            d.name.clone(),
            derived::run(&d.name, &q, &inputs.tables).await?,
        );
    }
    Ok(out)
}

/// Extracts every feature's events, grouped by patient and sorted in tie order, and the
/// rows of `score` features.
pub(crate) async fn extract(set: &FeatureSet, inputs: &Inputs) -> Result<Extracted> {
    let sources = sources(set, inputs).await?;
    let nf = set.features.len();
    let mut by_patient: PatientEvents = BTreeMap::new();
    for (fi, f) in set.features.iter().enumerate() {
        if f.kind == FeatureKind::Score {
            continue;
        }
        let batch = sources.get(&f.table).ok_or_else(|| {
            Error::Internal(format!(
                "table {} of feature {} was not loaded",
                f.table, f.name
            ))
        })?;
        for (patient, ev) in feature_events(f, batch, &f.time)? {
            by_patient
                .entry(patient)
                .or_insert_with(|| vec![Vec::new(); nf])[fi]
                .push(ev);
        }
    }
    by_patient
        .par_iter_mut()
        .for_each(|(_, fs)| fs.iter_mut().for_each(|evs| evs.sort_by(ev_cmp)));
    let clinical = if set.features.iter().any(|f| f.kind == FeatureKind::Score) {
        score::decode(inputs)?
    } else {
        BTreeMap::new()
    };
    for p in clinical.keys() {
        if !by_patient.contains_key(p) {
            by_patient.insert(p.clone(), vec![Vec::new(); nf]);
        }
    }
    Ok(Extracted {
        events: by_patient,
        clinical,
    })
}

pub(crate) fn ts_column(
    batch: &RecordBatch,
    name: &str,
    feature: &str,
) -> Result<Option<Vec<Option<i64>>>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let target = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let arr = cast(col, &target)
        .map_err(|e| Error::invalid(format!("feature {feature}: column {name}"), e.to_string()))?;
    let a = arr.as_primitive::<TimestampMicrosecondType>();
    Ok(Some(
        (0..a.len())
            .map(|i| (!a.is_null(i)).then(|| a.value(i)))
            .collect(),
    ))
}

pub(crate) fn str_column(
    batch: &RecordBatch,
    name: &str,
    feature: &str,
) -> Result<Option<Vec<Option<String>>>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let arr = cast(col, &DataType::Utf8)
        .map_err(|e| Error::invalid(format!("feature {feature}: column {name}"), e.to_string()))?;
    let a = arr.as_string::<i32>();
    Ok(Some(
        (0..a.len())
            .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
            .collect(),
    ))
}

fn value_column(batch: &RecordBatch, name: &str, feature: &str) -> Result<Vec<Val>> {
    let bad = |e: String| Error::invalid(format!("feature {feature}: column {name}"), e);
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| bad("missing from the table".into()))?;
    let dt = col.data_type().clone();
    let n = col.len();
    Ok(match (ValueClass::of(&dt), &dt) {
        (Some(ValueClass::Num), DataType::Duration(unit)) => {
            let per_day = match unit {
                TimeUnit::Second => DAY_US as f64 / 1e6,
                TimeUnit::Millisecond => DAY_US as f64 / 1e3,
                TimeUnit::Microsecond => DAY_US as f64,
                TimeUnit::Nanosecond => DAY_US as f64 * 1e3,
            };
            let arr = cast(col, &DataType::Int64).map_err(|e| bad(e.to_string()))?;
            let a = arr.as_primitive::<Int64Type>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Val::None
                    } else {
                        Val::Num(a.value(i) as f64 / per_day)
                    }
                })
                .collect()
        }
        (Some(ValueClass::Num), _) => {
            let arr = cast(col, &DataType::Float64).map_err(|e| bad(e.to_string()))?;
            let a = arr.as_primitive::<Float64Type>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Val::None
                    } else {
                        Val::Num(a.value(i))
                    }
                })
                .collect()
        }
        (Some(ValueClass::Text), _) => str_column(batch, name, feature)?
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.map(Val::Text).unwrap_or(Val::None))
            .collect(),
        (Some(ValueClass::Time), DataType::Date32) => {
            let a = col.as_primitive::<arrow::datatypes::Date32Type>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Val::None
                    } else {
                        Val::Time(a.value(i) as i64 * DAY_US)
                    }
                })
                .collect()
        }
        (Some(ValueClass::Time), _) => ts_column(batch, name, feature)?
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.map(Val::Time).unwrap_or(Val::None))
            .collect(),
        (None, _) => return Err(bad(format!("type {dt} is not readable as a value"))),
    })
}

/// The events of one feature in a source batch: `(patient, event)`, unsorted.
fn feature_events(
    f: &FeatureDef,
    batch: &RecordBatch,
    time_col: &str,
) -> Result<Vec<(String, Ev)>> {
    let missing = |c: &str| {
        Error::invalid(
            format!("feature {}", f.name),
            format!("table {} has no column {c}", f.table),
        )
    };
    let patients =
        str_column(batch, "patient_id", &f.name)?.ok_or_else(|| missing("patient_id"))?;
    let times = ts_column(batch, time_col, &f.name)?.ok_or_else(|| missing(time_col))?;
    let known = ts_column(batch, "known_at", &f.name)?.ok_or_else(|| missing("known_at"))?;
    let retracted = ts_column(batch, "retracted_at", &f.name)?;
    let sids = str_column(batch, "source_id", &f.name)?;
    let values = match &f.column {
        Some(c) => Some(value_column(batch, c, &f.name)?),
        None => None,
    };
    let mut filters = Vec::new();
    for (col, cond) in &f.filter {
        filters.push((
            str_column(batch, col, &f.name)?.ok_or_else(|| missing(col))?,
            cond,
        ));
    }
    let mut out = Vec::new();
    for i in 0..batch.num_rows() {
        let (Some(p), Some(e), Some(k)) = (&patients[i], times[i], known[i]) else {
            continue;
        };
        if !filters
            .iter()
            .all(|(vals, cond)| vals[i].as_deref().is_some_and(|v| cond.matches(v)))
        {
            continue;
        }
        let val = match &values {
            Some(v) if v[i] == Val::None => continue,
            Some(v) => v[i].clone(),
            None => Val::None,
        };
        out.push((
            p.clone(),
            Ev {
                e,
                k,
                x: retracted.as_ref().and_then(|r| r[i]),
                sid: sids.as_ref().and_then(|s| s[i].clone()).unwrap_or_default(),
                val,
            },
        ));
    }
    Ok(out)
}

/// The interval `[enter, leave)` on which an event is visible (`i64::MAX`: never leaves).
pub(crate) fn interval(f: &FeatureDef, ev: &Ev, knowledge: Knowledge) -> Option<(i64, i64)> {
    let window_end = |e: i64| f.window_us.map(|w| e.saturating_add(w)).unwrap_or(i64::MAX);
    let (a, b) = if f.kind.is_label() {
        // Labels use eventual knowledge: the final record; an event at `a` makes the label 1
        // for t in [a - h, a), i.e. a in (t, t + h].
        if ev.x.is_some() {
            return None;
        }
        (ev.e.saturating_sub(f.horizon_us.unwrap_or(0)), ev.e)
    } else {
        match knowledge {
            Knowledge::AsKnown => {
                let b = ev.x.unwrap_or(i64::MAX).min(window_end(ev.e));
                (ev.e.max(ev.k), b)
            }
            Knowledge::AsOccurred => {
                if ev.x.is_some() {
                    return None;
                }
                (ev.e, window_end(ev.e))
            }
        }
    };
    (a < b).then_some((a, b))
}

/// The state of a feature given its visible events (indices into `evs`, in tie order).
pub(crate) fn state(f: &FeatureDef, evs: &[Ev], visible: &BTreeSet<u32>) -> ChangePoint {
    let mut cp = ChangePoint {
        effective_at: 0,
        value_num: None,
        value_text: None,
        value_time: None,
        count: visible.len() as u64,
    };
    let (Some(&first), Some(&last)) = (visible.first(), visible.last()) else {
        if f.kind.zero_when_empty() {
            cp.value_num = Some(0.0);
        }
        return cp;
    };
    let (first, last) = (&evs[first as usize], &evs[last as usize]);
    let num = |v: &Val| match v {
        Val::Num(x) => *x,
        _ => 0.0,
    };
    let set_value = |cp: &mut ChangePoint, ev: &Ev| {
        match &ev.val {
            Val::Num(x) => cp.value_num = Some(*x),
            Val::Text(s) => cp.value_text = Some(s.clone()),
            _ => {}
        }
        cp.value_time = Some(ev.e);
    };
    match f.kind {
        FeatureKind::Count => cp.value_num = Some(visible.len() as f64),
        FeatureKind::Exists | FeatureKind::ReadmittedWithin | FeatureKind::DiedWithin => {
            cp.value_num = Some(1.0)
        }
        FeatureKind::DaysSince => cp.value_time = Some(last.e),
        FeatureKind::Last => set_value(&mut cp, last),
        FeatureKind::First => set_value(&mut cp, first),
        FeatureKind::Age => {
            if let Val::Time(b) = last.val {
                cp.value_time = Some(b);
            }
        }
        FeatureKind::Sum | FeatureKind::Mean => {
            let sum = visible
                .iter()
                .fold(0.0, |s, i| s + num(&evs[*i as usize].val));
            cp.value_num = Some(if f.kind == FeatureKind::Sum {
                sum
            } else {
                sum / visible.len() as f64
            });
        }
        // Computed from the patient's clinical rows (`score::change_points`), never here.
        FeatureKind::Score => {}
        FeatureKind::Min | FeatureKind::Max => {
            let mut best = first;
            for i in visible.iter().skip(1) {
                let ev = &evs[*i as usize];
                let better = match f.kind {
                    FeatureKind::Min => num(&ev.val).total_cmp(&num(&best.val)).is_lt(),
                    _ => num(&ev.val).total_cmp(&num(&best.val)).is_gt(),
                };
                if better {
                    best = ev;
                }
            }
            set_value(&mut cp, best);
        }
    }
    cp
}

/// The change points of one feature of one patient.
pub(crate) fn change_points(f: &FeatureDef, evs: &[Ev], knowledge: Knowledge) -> Vec<ChangePoint> {
    let mut bounds: Vec<(i64, bool, u32)> = Vec::with_capacity(evs.len() * 2);
    for (i, ev) in evs.iter().enumerate() {
        if let Some((a, b)) = interval(f, ev, knowledge) {
            bounds.push((a, true, i as u32));
            if b != i64::MAX {
                bounds.push((b, false, i as u32));
            }
        }
    }
    bounds.sort_unstable();
    let mut visible = BTreeSet::new();
    let mut out: Vec<ChangePoint> = Vec::new();
    let mut j = 0;
    while j < bounds.len() {
        let at = bounds[j].0;
        while j < bounds.len() && bounds[j].0 == at {
            let (_, enter, i) = bounds[j];
            if enter {
                visible.insert(i);
            } else {
                visible.remove(&i);
            }
            j += 1;
        }
        let mut st = state(f, evs, &visible);
        let unchanged = match out.last() {
            Some(prev) => prev.same_state(&st),
            None => st.count == 0,
        };
        if !unchanged {
            st.effective_at = at;
            out.push(st);
        }
    }
    out
}

/// Per patient, the digest of its events and score rows (what incremental materialization
/// compares).
pub(crate) fn patient_digest(events: &[Vec<Ev>], clinical: Option<&ClinicalRows>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    if let Some(c) = clinical {
        c.digest_into(&mut h);
    }
    for (fi, evs) in events.iter().enumerate() {
        h.update(&(fi as u64).to_le_bytes());
        h.update(&(evs.len() as u64).to_le_bytes());
        for ev in evs {
            h.update(&ev.e.to_le_bytes());
            h.update(&ev.k.to_le_bytes());
            h.update(&ev.x.map_or([0xff; 9], |x| {
                let mut b = [0u8; 9];
                b[1..].copy_from_slice(&x.to_le_bytes());
                b
            }));
            h.update(&(ev.sid.len() as u64).to_le_bytes());
            h.update(ev.sid.as_bytes());
            match &ev.val {
                Val::None => h.update(&[0]),
                Val::Num(x) => h.update(&[1]).update(&x.to_bits().to_le_bytes()),
                Val::Text(s) => h
                    .update(&[2])
                    .update(&(s.len() as u64).to_le_bytes())
                    .update(s.as_bytes()),
                Val::Time(t) => h.update(&[3]).update(&t.to_le_bytes()),
            };
        }
    }
    *h.finalize().as_bytes()
}

/// Every feature's change points for one patient, as rows.
fn patient_rows(
    set: &FeatureSet,
    names: &[Arc<str>],
    patient: &str,
    events: &[Vec<Ev>],
    clinical: Option<&ClinicalRows>,
    knowledge: Knowledge,
) -> Rows {
    let p: Arc<str> = Arc::from(patient);
    let mut rows = Vec::new();
    // The scores at every instant, once for all score features of the patient.
    let mut score_series = None;
    for (fi, f) in set.features.iter().enumerate() {
        let cps = match f.score_component() {
            Some(component) => {
                let series = score_series.get_or_insert_with(|| {
                    clinical.map(|c| c.series(knowledge)).unwrap_or_default()
                });
                score::change_points(component, series)
            }
            None => change_points(f, &events[fi], knowledge),
        };
        for cp in cps {
            rows.push((p.clone(), names[fi].clone(), cp));
        }
    }
    rows
}

fn in_pool<T: Send>(threads: Option<usize>, work: impl FnOnce() -> T + Send) -> Result<T> {
    match threads {
        None => Ok(work()),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| Error::invalid("threads", e.to_string()))?;
            Ok(pool.install(work))
        }
    }
}

/// A timeline computed in memory.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The rows, in batches of at most `batch_size`, sorted by (patient, feature, time).
    pub batches: Vec<RecordBatch>,
    /// Number of change points.
    pub rows: usize,
    /// Patients computed (the others were reused from a previous timeline).
    pub recomputed: usize,
    /// Patients whose rows were copied from a previous timeline.
    pub reused: usize,
}

/// Computes a set's timeline from curated rows.
///
/// # Errors
/// [`Error::InvalidArgument`] when a derived query fails or a column is missing from the
/// inputs; [`Error::Arrow`] on a cast failure.
pub async fn compute(
    set: &FeatureSet,
    inputs: &Inputs,
    opts: &MaterializeOptions,
) -> Result<Timeline> {
    let extracted = extract(set, inputs).await?;
    let names: Vec<Arc<str>> = set
        .features
        .iter()
        .map(|f| Arc::from(f.name.as_str()))
        .collect();
    let knowledge = opts.knowledge;
    let list: Vec<(&String, &Vec<Vec<Ev>>)> = extracted.events.iter().collect();
    let per_patient: Vec<Rows> = in_pool(opts.threads, || {
        list.par_iter()
            .map(|(p, evs)| {
                let clinical = extracted.clinical.get(*p);
                patient_rows(set, &names, p, evs, clinical, knowledge)
            })
            .collect()
    })?;
    let rows: Rows = per_patient.into_iter().flatten().collect();
    Ok(Timeline {
        batches: timeline::encode(&rows, opts.batch_size)?,
        rows: rows.len(),
        recomputed: list.len(),
        reused: 0,
    })
}

/// Recomputes a timeline after new curated data: patients whose events are unchanged keep
/// their rows from `previous` (the timeline computed from `previous_inputs` with the same set
/// and options); the others are recomputed. The result equals [`compute`] on `new_inputs`.
///
/// # Errors
/// As [`compute`]; [`Error::BadInput`] when `previous` is not a timeline.
pub async fn compute_incremental(
    set: &FeatureSet,
    previous: &[RecordBatch],
    previous_inputs: &Inputs,
    new_inputs: &Inputs,
    opts: &MaterializeOptions,
) -> Result<Timeline> {
    let old = extract(set, previous_inputs).await?;
    let new = extract(set, new_inputs).await?;
    let mut prev_rows: BTreeMap<Arc<str>, Rows> = BTreeMap::new();
    for row in timeline::decode(previous)? {
        prev_rows.entry(row.0.clone()).or_default().push(row);
    }
    let names: Vec<Arc<str>> = set
        .features
        .iter()
        .map(|f| Arc::from(f.name.as_str()))
        .collect();
    let knowledge = opts.knowledge;
    let list: Vec<(&String, &Vec<Vec<Ev>>)> = new.events.iter().collect();
    let per_patient: Vec<(bool, Rows)> = in_pool(opts.threads, || {
        list.par_iter()
            .map(|(p, evs)| {
                let clinical = new.clinical.get(*p);
                let same = old.events.get(*p).is_some_and(|o| {
                    patient_digest(o, old.clinical.get(*p)) == patient_digest(evs, clinical)
                });
                match (same, prev_rows.get(p.as_str())) {
                    (true, Some(rows)) => (true, rows.clone()),
                    // Unchanged events and no previous rows: the patient has no change point.
                    (true, None) => (true, Vec::new()),
                    _ => (
                        false,
                        patient_rows(set, &names, p, evs, clinical, knowledge),
                    ),
                }
            })
            .collect()
    })?;
    let reused = per_patient.iter().filter(|(r, _)| *r).count();
    let recomputed = per_patient.len() - reused;
    let rows: Rows = per_patient.into_iter().flat_map(|(_, r)| r).collect();
    Ok(Timeline {
        batches: timeline::encode(&rows, opts.batch_size)?,
        rows: rows.len(),
        recomputed,
        reused,
    })
}
