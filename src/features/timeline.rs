//! The timeline table (change points), its in-memory index, and the one lookup function that
//! historical and online lookups share.
//!
//! A timeline row says: from `effective_at` on, until the next row of the same
//! `(patient_id, feature)`, the feature's state is this. Values that go stale are never
//! stored: `days_since` and `age` are computed by [`lookup`] at the lookup time from
//! `value_time`. `docs/features.md` documents every column.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, UInt64Type,
};
use chrono::{DateTime, Duration, Utc};

use super::definition::{FeatureSet, DAY_US};
use super::kind::FeatureKind;
use crate::error::{Error, Result};
use crate::keys::KeyTable;
use crate::pit;

/// The timeline's Arrow schema (`docs/features.md`, "Timeline schema").
pub fn timeline_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("feature", DataType::Utf8, false),
        Field::new("effective_at", ts(), false),
        Field::new("value_num", DataType::Float64, true),
        Field::new("value_text", DataType::Utf8, true),
        Field::new("value_time", ts(), true),
        Field::new("count", DataType::UInt64, false),
    ]))
}

/// The Arrow schema of a timeline keyed by person (`--entity person`): [`timeline_schema`]
/// with `person_id` in place of `patient_id`, so that it is never the same version as a
/// patient-keyed timeline of the same rows (`docs/features.md`, "Timeline schema").
pub fn person_timeline_schema() -> SchemaRef {
    let plain = timeline_schema();
    let fields: Vec<Field> = plain
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "patient_id" => Field::new("person_id", DataType::Utf8, false),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The key column of timeline batch `b`: `patient_id`, or `person_id` in a person-keyed
/// timeline.
fn key_column(b: &RecordBatch) -> Option<&arrow::array::ArrayRef> {
    b.column_by_name("patient_id")
        .or_else(|| b.column_by_name("person_id"))
}

/// One change point: the state of a (patient, feature) from `effective_at` on.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePoint {
    /// Microseconds since the epoch, UTC: from this instant on the state holds.
    pub effective_at: i64,
    /// Numeric value (count, sum, mean, min, max, last/first of a number, exists, labels).
    pub value_num: Option<f64>,
    /// Text value (last/first of a string column).
    pub value_text: Option<String>,
    /// The event time the state derives from (microseconds): the last event for
    /// `days_since`, the chosen row for last/first/min/max, the birth date for `age`, the
    /// index stay's discharge for `score`.
    pub value_time: Option<i64>,
    /// Rows in the state (in the window); 0 means no data.
    pub count: u64,
}

impl ChangePoint {
    /// Same state, ignoring when it took effect (floats compared bit for bit).
    pub(crate) fn same_state(&self, other: &ChangePoint) -> bool {
        self.value_num.map(f64::to_bits) == other.value_num.map(f64::to_bits)
            && self.value_text == other.value_text
            && self.value_time == other.value_time
            && self.count == other.count
    }
}

/// Rows of a timeline in memory: `(patient, feature, change point)` in table order.
pub(crate) type Rows = Vec<(Arc<str>, Arc<str>, ChangePoint)>;

/// Encodes rows (already in `(patient_id, feature, effective_at)` order) as batches of at
/// most `batch_size` rows of `schema` ([`timeline_schema`] or [`person_timeline_schema`]).
/// Materialization builds its batches directly; person-keyed materialization (`person`)
/// encodes the rows it merged, and the tests round-trip [`decode`].
pub(crate) fn encode(
    rows: &Rows,
    batch_size: usize,
    schema: SchemaRef,
) -> Result<Vec<RecordBatch>> {
    use arrow::array::{
        ArrayRef, Float64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
    };
    let mut out = Vec::new();
    for chunk in rows.chunks(batch_size.max(1)) {
        let mut p = StringBuilder::new();
        let mut f = StringBuilder::new();
        let mut e = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut vn = Float64Builder::new();
        let mut vt = StringBuilder::new();
        let mut vtime = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut c = UInt64Builder::new();
        for (patient, feature, cp) in chunk {
            p.append_value(patient);
            f.append_value(feature);
            e.append_value(cp.effective_at);
            vn.append_option(cp.value_num);
            vt.append_option(cp.value_text.as_deref());
            vtime.append_option(cp.value_time);
            c.append_value(cp.count);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(p.finish()),
            Arc::new(f.finish()),
            Arc::new(e.finish()),
            Arc::new(vn.finish()),
            Arc::new(vt.finish()),
            Arc::new(vtime.finish()),
            Arc::new(c.finish()),
        ];
        out.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    if out.is_empty() {
        out.push(RecordBatch::new_empty(schema));
    }
    Ok(out)
}

/// Decodes timeline batches into rows.
///
/// # Errors
/// [`Error::BadInput`] when a batch does not have the timeline schema.
pub(crate) fn decode(batches: &[RecordBatch]) -> Result<Rows> {
    let mut rows = Vec::new();
    let mut last_p: Option<Arc<str>> = None;
    let mut last_f: Option<Arc<str>> = None;
    for b in batches {
        let bad = |what: &str| Error::BadInput {
            location: "timeline".into(),
            field: what.to_string(),
            reason: "not a timeline: missing column or wrong type".into(),
        };
        let col = |name: &str| b.column_by_name(name).ok_or_else(|| bad(name));
        let p = key_column(b)
            .ok_or_else(|| bad("patient_id"))?
            .as_string_opt::<i32>()
            .ok_or_else(|| bad("patient_id"))?;
        let f = col("feature")?
            .as_string_opt::<i32>()
            .ok_or_else(|| bad("feature"))?;
        let e = col("effective_at")?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| bad("effective_at"))?;
        let vn = col("value_num")?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| bad("value_num"))?;
        let vt = col("value_text")?
            .as_string_opt::<i32>()
            .ok_or_else(|| bad("value_text"))?;
        let vtime = col("value_time")?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| bad("value_time"))?;
        let c = col("count")?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| bad("count"))?;
        for i in 0..b.num_rows() {
            let pid = p.value(i);
            let patient = match &last_p {
                Some(x) if &**x == pid => x.clone(),
                _ => {
                    let x: Arc<str> = Arc::from(pid);
                    last_p = Some(x.clone());
                    x
                }
            };
            let fid = f.value(i);
            let feature = match &last_f {
                Some(x) if &**x == fid => x.clone(),
                _ => {
                    let x: Arc<str> = Arc::from(fid);
                    last_f = Some(x.clone());
                    x
                }
            };
            rows.push((
                patient,
                feature,
                ChangePoint {
                    effective_at: e.value(i),
                    value_num: (!vn.is_null(i)).then(|| vn.value(i)),
                    value_text: (!vt.is_null(i)).then(|| vt.value(i).to_string()),
                    value_time: (!vtime.is_null(i)).then(|| vtime.value(i)),
                    count: c.value(i),
                },
            ));
        }
    }
    Ok(rows)
}

/// What a lookup says about a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The value holds at t.
    Present,
    /// Nothing known at t (no matching row visible, no birth date, an unknown patient).
    NoData,
    /// The last value is too old: `t - value_time >= ttl`.
    OutsideTtl,
}

/// A feature value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A number (also counts, flags, labels, days, years).
    Num(f64),
    /// A string.
    Text(String),
}

/// A lookup's answer: the value (when present) and its status.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FeatureValue {
    /// The value; `None` unless the status is [`Status::Present`].
    pub value: Option<Value>,
    /// Present, no data, or outside TTL.
    pub status: Status,
}

/// What the index knows about each feature of its set.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureInfo {
    /// The feature's kind (decides how a state becomes a value at t).
    pub kind: FeatureKind,
    /// The TTL from the definition (after the set's default), if any.
    pub ttl: Option<Duration>,
    /// A label (forward-looking; refused online).
    pub is_label: bool,
    /// The feature's values are text (some change point holds `value_text`); otherwise
    /// numbers.
    pub is_text: bool,
}

/// A timeline in memory, shared by historical (as-of join) and online lookups.
///
/// Layout: patient ids interned to dense numbers; the change points of one patient are
/// contiguous, ordered by feature then time, so a lookup is a hash probe for the patient, a
/// binary search for the feature's run and one for the time: no allocation. Memory: about
/// 82 bytes per change point plus the text of text values, and 64-128 bytes per patient
/// (`docs/lookups.md`).
#[derive(Debug, Clone, Default)]
pub struct TimelineIndex {
    /// Feature name → position in the set.
    by_name: HashMap<String, usize>,
    /// In set order.
    infos: Vec<(String, FeatureInfo)>,
    /// Patient id → dense number.
    patients: KeyTable,
    /// Patient i's change points are `points[starts[i]..starts[i + 1]]`.
    starts: Vec<u32>,
    /// Per change point: the feature's position in the set (runs ordered by it).
    feature_of: Vec<u16>,
    /// Per change point: its `effective_at`, apart so that a binary search over a patient's
    /// times reads a few cache lines, not every change point.
    at: Vec<i64>,
    points: Vec<ChangePoint>,
}

/// A value as a lookup resolves it, borrowing text from the index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved<'a> {
    /// The value holds at t.
    Num(f64),
    /// A text value that holds at t.
    Text(&'a str),
    /// No value: nothing known, or too old.
    Missing(Status),
}

impl Resolved<'_> {
    /// The status of this value.
    pub fn status(&self) -> Status {
        match self {
            Resolved::Missing(s) => *s,
            _ => Status::Present,
        }
    }

    /// As an owned [`FeatureValue`].
    pub fn to_value(self) -> FeatureValue {
        match self {
            Resolved::Num(v) => FeatureValue {
                value: Some(Value::Num(v)),
                status: Status::Present,
            },
            Resolved::Text(s) => FeatureValue {
                value: Some(Value::Text(s.to_string())),
                status: Status::Present,
            },
            Resolved::Missing(status) => FeatureValue {
                value: None,
                status,
            },
        }
    }
}

impl TimelineIndex {
    /// Builds the index of a timeline made from `set`.
    ///
    /// # Errors
    /// [`Error::BadInput`] when the batches are not a timeline of this set (wrong schema, a
    /// feature the set does not define, rows out of `(patient_id, feature, effective_at)`
    /// order).
    pub fn build(set: &FeatureSet, batches: &[RecordBatch]) -> Result<TimelineIndex> {
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        TimelineIndex::build_from(set, rows, batches.iter().cloned())
    }

    /// [`TimelineIndex::build`] from batches it owns, each dropped once indexed: the
    /// timeline and its index are never held whole at the same time.
    ///
    /// # Errors
    /// As [`TimelineIndex::build`].
    pub fn build_owned(set: &FeatureSet, batches: Vec<RecordBatch>) -> Result<TimelineIndex> {
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        TimelineIndex::build_from(set, rows, batches.into_iter())
    }

    /// Indexes `rows` change points of `set` from `batches`, in order.
    fn build_from(
        set: &FeatureSet,
        rows: usize,
        batches: impl Iterator<Item = RecordBatch>,
    ) -> Result<TimelineIndex> {
        if set.features.len() > usize::from(u16::MAX) {
            return Err(Error::invalid(
                format!("feature set {}", set.name),
                "more than 65535 features",
            ));
        }
        let mut infos: Vec<(String, FeatureInfo)> = set
            .features
            .iter()
            .map(|f| {
                let info = FeatureInfo {
                    kind: f.kind,
                    ttl: f.ttl_us.map(Duration::microseconds),
                    is_label: f.kind.is_label(),
                    is_text: false,
                };
                (f.name.clone(), info)
            })
            .collect();
        let by_name: HashMap<String, usize> = infos
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        let mut patients = KeyTable::default();
        let mut starts: Vec<u32> = Vec::new();
        let mut feature_of: Vec<u16> = Vec::with_capacity(rows);
        let mut points: Vec<ChangePoint> = Vec::with_capacity(rows);
        let mut prev_patient: Option<String> = None;
        // Rows come in runs of one feature: the name is looked up once a run.
        let mut prev_feature: Option<(String, usize)> = None;
        for b in batches {
            let cols = Columns::of(&b)?;
            for i in 0..b.num_rows() {
                let (pid, fname) = (cols.p.value(i), cols.f.value(i));
                let fi = match &prev_feature {
                    Some((name, fi)) if name == fname => *fi,
                    _ => {
                        let Some(&fi) = by_name.get(fname) else {
                            return Err(Error::BadInput {
                                location: "timeline".into(),
                                field: format!("feature {fname}"),
                                reason: format!("not a feature of set {}", set.name),
                            });
                        };
                        prev_feature = Some((fname.to_string(), fi));
                        fi
                    }
                };
                if prev_patient.as_deref() != Some(pid) {
                    let n = u32::try_from(starts.len())
                        .map_err(|_| Error::invalid("timeline", "more than 2^32 patients"))?;
                    if patients.insert(pid) != n {
                        return Err(Error::BadInput {
                            location: "timeline".into(),
                            field: format!("patient {pid}"),
                            reason: "the patient's rows are not contiguous".into(),
                        });
                    }
                    starts.push(points.len() as u32);
                    prev_patient = Some(pid.to_string());
                }
                let value_text = (!cols.vt.is_null(i)).then(|| cols.vt.value(i).to_string());
                if value_text.is_some() {
                    infos[fi].1.is_text = true;
                }
                feature_of.push(fi as u16);
                points.push(ChangePoint {
                    effective_at: cols.e.value(i),
                    value_num: (!cols.vn.is_null(i)).then(|| cols.vn.value(i)),
                    value_text,
                    value_time: (!cols.vtime.is_null(i)).then(|| cols.vtime.value(i)),
                    count: cols.c.value(i),
                });
            }
        }
        if points.len() > u32::MAX as usize {
            return Err(Error::invalid("timeline", "more than 2^32 change points"));
        }
        starts.push(points.len() as u32);
        let at = points.iter().map(|cp| cp.effective_at).collect();
        let mut index = TimelineIndex {
            by_name,
            infos,
            patients,
            starts,
            feature_of,
            at,
            points,
        };
        index.order_runs()?;
        Ok(index)
    }

    /// Orders each patient's change points by feature position in the set (stable: time
    /// order within a run is kept), so a binary search finds a feature's run, and checks that
    /// times strictly increase within each run.
    fn order_runs(&mut self) -> Result<()> {
        for p in 0..self.starts.len() - 1 {
            let (a, b) = (self.starts[p] as usize, self.starts[p + 1] as usize);
            if !self.feature_of[a..b].windows(2).all(|w| w[0] <= w[1]) {
                let mut idx: Vec<usize> = (a..b).collect();
                idx.sort_by_key(|&i| self.feature_of[i]);
                let f: Vec<u16> = idx.iter().map(|&i| self.feature_of[i]).collect();
                let pts: Vec<ChangePoint> = idx.iter().map(|&i| self.points[i].clone()).collect();
                self.feature_of[a..b].copy_from_slice(&f);
                for (k, cp) in pts.into_iter().enumerate() {
                    self.at[a + k] = cp.effective_at;
                    self.points[a + k] = cp;
                }
            }
            for i in a + 1..b {
                if self.feature_of[i] == self.feature_of[i - 1]
                    && self.points[i].effective_at <= self.points[i - 1].effective_at
                {
                    return Err(Error::BadInput {
                        location: "timeline".into(),
                        field: format!("feature {}", self.infos[self.feature_of[i] as usize].0),
                        reason: "change points out of order".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// What the index knows about a feature.
    pub fn feature_info(&self, feature: &str) -> Option<&FeatureInfo> {
        self.by_name.get(feature).map(|&i| &self.infos[i].1)
    }

    /// The features, in set order, with what the index knows about each.
    pub fn features(&self) -> &[(String, FeatureInfo)] {
        &self.infos
    }

    /// The position of a feature in the set.
    pub fn feature_position(&self, feature: &str) -> Option<usize> {
        self.by_name.get(feature).copied()
    }

    /// The dense number of a patient, when the timeline holds any row of it.
    pub fn patient(&self, patient: &str) -> Option<u32> {
        self.patients.get(patient)
    }

    /// Number of patients with at least one change point.
    pub fn patients(&self) -> usize {
        self.patients.len()
    }

    /// Number of change points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when the timeline has no change point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The change points of one (patient, feature) by dense numbers, in time order.
    pub fn series_at(&self, patient: Option<u32>, feature: usize) -> &[ChangePoint] {
        &self.points[self.run(patient, feature)]
    }

    /// The positions of the change points of one (patient, feature).
    fn run(&self, patient: Option<u32>, feature: usize) -> std::ops::Range<usize> {
        let Some(p) = patient else {
            return 0..0;
        };
        let (a, b) = (
            self.starts[p as usize] as usize,
            self.starts[p as usize + 1] as usize,
        );
        let fo = &self.feature_of[a..b];
        let f = feature as u16;
        let lo = fo.partition_point(|&x| x < f);
        let hi = lo + fo[lo..].partition_point(|&x| x == f);
        a + lo..a + hi
    }

    /// The state of one (patient, feature) at `t_us`: its last change point with
    /// `effective_at <= t_us`.
    fn state_at(&self, patient: Option<u32>, feature: usize, t_us: i64) -> Option<&ChangePoint> {
        let r = self.run(patient, feature);
        pit::at_or_before(&self.at[r.clone()], t_us).map(|i| &self.points[r.start + i])
    }

    /// The change points of one (patient, feature), in time order.
    pub fn series(&self, patient: &str, feature: &str) -> &[ChangePoint] {
        match self.by_name.get(feature) {
            Some(&fi) => self.series_at(self.patient(patient), fi),
            None => &[],
        }
    }

    /// The value of the feature at position `feature` for a patient (by dense number;
    /// `None` for a patient the timeline does not hold) at `t_us`: the one rule behind
    /// [`lookup`], historical and online lookups. The TTL is the feature's own.
    pub fn resolve(&self, patient: Option<u32>, feature: usize, t_us: i64) -> Resolved<'_> {
        let info = &self.infos[feature].1;
        resolve(info, self.state_at(patient, feature, t_us), t_us, info.ttl)
    }
}

/// The timeline columns of one batch.
struct Columns<'a> {
    p: &'a arrow::array::StringArray,
    f: &'a arrow::array::StringArray,
    e: &'a arrow::array::TimestampMicrosecondArray,
    vn: &'a arrow::array::Float64Array,
    vt: &'a arrow::array::StringArray,
    vtime: &'a arrow::array::TimestampMicrosecondArray,
    c: &'a arrow::array::UInt64Array,
}

impl<'a> Columns<'a> {
    fn of(b: &'a RecordBatch) -> Result<Columns<'a>> {
        let bad = |what: &str| Error::BadInput {
            location: "timeline".into(),
            field: what.to_string(),
            reason: "not a timeline: missing column or wrong type".into(),
        };
        let col = |name: &str| b.column_by_name(name).ok_or_else(|| bad(name));
        Ok(Columns {
            p: key_column(b)
                .ok_or_else(|| bad("patient_id"))?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad("patient_id"))?,
            f: col("feature")?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad("feature"))?,
            e: col("effective_at")?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| bad("effective_at"))?,
            vn: col("value_num")?
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(|| bad("value_num"))?,
            vt: col("value_text")?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad("value_text"))?,
            vtime: col("value_time")?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| bad("value_time"))?,
            c: col("count")?
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| bad("count"))?,
        })
    }
}

/// The value at `t_us` of a series whose last change point at or before `t_us` is `state`,
/// made into a value at `t` (days since, age), checked against `ttl`.
fn resolve<'a>(
    info: &FeatureInfo,
    state: Option<&'a ChangePoint>,
    t_us: i64,
    ttl: Option<Duration>,
) -> Resolved<'a> {
    resolve_state(info, state.map(StateRef::of), t_us, ttl)
}

/// The state of a change point, its text borrowed (from an index, or from the curated rows
/// a direct lookup computes it from).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StateRef<'a> {
    pub(crate) value_num: Option<f64>,
    pub(crate) value_text: Option<&'a str>,
    pub(crate) value_time: Option<i64>,
    pub(crate) count: u64,
}

impl<'a> StateRef<'a> {
    fn of(cp: &'a ChangePoint) -> StateRef<'a> {
        StateRef {
            value_num: cp.value_num,
            value_text: cp.value_text.as_deref(),
            value_time: cp.value_time,
            count: cp.count,
        }
    }
}

/// [`resolve`] of a borrowed state: the one rule every lookup applies.
pub(crate) fn resolve_state<'a>(
    info: &FeatureInfo,
    state: Option<StateRef<'a>>,
    t_us: i64,
    ttl: Option<Duration>,
) -> Resolved<'a> {
    let Some(cp) = state.filter(|cp| cp.count > 0) else {
        return if info.kind.zero_when_empty() {
            Resolved::Num(0.0)
        } else {
            Resolved::Missing(Status::NoData)
        };
    };
    if info.kind.uses_ttl() {
        if let (Some(ttl), Some(vt)) = (ttl, cp.value_time) {
            let limit = ttl.num_microseconds().unwrap_or(i64::MAX);
            if !pit::within_ttl(t_us, vt, limit) {
                return Resolved::Missing(Status::OutsideTtl);
            }
        }
    }
    let value = match info.kind {
        FeatureKind::DaysSince => cp
            .value_time
            .map(|vt| Resolved::Num((t_us - vt) as f64 / DAY_US as f64)),
        FeatureKind::Age => cp
            .value_time
            .and_then(|birth| whole_years_us(birth, t_us))
            .map(|y| Resolved::Num(f64::from(y))),
        _ => match (cp.value_text, cp.value_num) {
            (Some(s), _) => Some(Resolved::Text(s)),
            (None, Some(v)) => Some(Resolved::Num(v)),
            (None, None) => None,
        },
    };
    value.unwrap_or(Resolved::Missing(Status::NoData))
}

/// The value of `feature` for `patient` at `t`: the state of the last change point with
/// `effective_at <= t`, made into a value at `t` (days since, age), checked against `ttl`.
///
/// TTL applies to kinds whose value comes from one row (`days_since`, `last`, `first`,
/// `min`, `max`) and to `score` (from the index stay's discharge): the value is outside TTL
/// when `t - value_time >= ttl` (an event exactly `ttl` before `t` is out, one at `t` is in).
/// `count`, `exists` and labels are 0 (present) when nothing is visible; every other kind is
/// then [`Status::NoData`]. An unknown feature or patient is [`Status::NoData`].
pub fn lookup(
    timeline: &TimelineIndex,
    patient: &str,
    feature: &str,
    t: DateTime<Utc>,
    ttl: Option<Duration>,
) -> FeatureValue {
    let Some(&fi) = timeline.by_name.get(feature) else {
        return FeatureValue {
            value: None,
            status: Status::NoData,
        };
    };
    let info = &timeline.infos[fi].1;
    let t_us = t.timestamp_micros();
    let state = timeline.state_at(timeline.patient(patient), fi, t_us);
    resolve(info, state, t_us, ttl).to_value()
}

/// Whole years from `birth` to `t` (a birthday counts from its start, UTC; someone born on
/// 29 February turns a year older on 1 March in common years); `None` before birth.
pub fn whole_years(birth: DateTime<Utc>, t: DateTime<Utc>) -> Option<i32> {
    whole_years_us(birth.timestamp_micros(), t.timestamp_micros())
}

/// The microseconds since the epoch of chrono's first and last instants: outside them an
/// instant has no date (`None`, as `DateTime::from_timestamp_micros` gives).
const FIRST_US: i64 = -8_334_601_228_800_000_000;
const LAST_US: i64 = 8_210_266_876_799_999_999;

/// [`whole_years`] of two instants in microseconds since the epoch, in integer arithmetic
/// (a lookup computes one per row with an age feature).
pub(crate) fn whole_years_us(birth_us: i64, t_us: i64) -> Option<i32> {
    let dated = FIRST_US..=LAST_US;
    if t_us < birth_us || !dated.contains(&birth_us) || !dated.contains(&t_us) {
        return None;
    }
    let (b, d) = (civil(birth_us), civil(t_us));
    let mut years = d.0 - b.0;
    if (d.1, d.2) < (b.1, b.2) {
        years -= 1;
    }
    i32::try_from(years).ok()
}

/// The UTC (year, month, day) of an instant in microseconds since the epoch: days since
/// the epoch to the proleptic Gregorian calendar by whole 400-year eras (Howard Hinnant's
/// `civil_from_days`, public domain).
fn civil(us: i64) -> (i64, u32, u32) {
    let z = us.div_euclid(DAY_US) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone};

    /// The integer calendar gives chrono's dates and ages, at random instants over 600
    /// years and at chrono's first and last instants.
    #[test]
    fn integer_calendar_matches_chrono() {
        use rand::{Rng, SeedableRng};
        assert_eq!(DateTime::<Utc>::MIN_UTC.timestamp_micros(), FIRST_US);
        assert_eq!(DateTime::<Utc>::MAX_UTC.timestamp_micros(), LAST_US);
        let chrono_years = |b: i64, t: i64| {
            let (b, t) = (
                DateTime::from_timestamp_micros(b)?,
                DateTime::from_timestamp_micros(t)?,
            );
            if t < b {
                return None;
            }
            let (b, d) = (b.date_naive(), t.date_naive());
            let mut years = d.year() - b.year();
            if (d.month(), d.day()) < (b.month(), b.day()) {
                years -= 1;
            }
            Some(years)
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let span = 300 * 366 * DAY_US;
        for i in 0..200_000 {
            let t = rng.random_range(-span..span);
            // Births near t (birthdays, leap days) and far from it.
            let b = match i % 2 {
                0 => t - rng.random_range(-2 * DAY_US..80 * 366 * DAY_US),
                _ => rng.random_range(-span..span),
            };
            let d = DateTime::from_timestamp_micros(t).unwrap().date_naive();
            assert_eq!(civil(t), (i64::from(d.year()), d.month(), d.day()), "{t}");
            assert_eq!(whole_years_us(b, t), chrono_years(b, t), "{b} {t}");
        }
        for (b, t) in [
            (FIRST_US, LAST_US),
            (FIRST_US, FIRST_US),
            (LAST_US, LAST_US),
            (FIRST_US - 1, 0),
            (0, LAST_US + 1),
        ] {
            assert_eq!(whole_years_us(b, t), chrono_years(b, t), "{b} {t}");
        }
    }

    #[test]
    fn years_at_birthdays() {
        let b = Utc.with_ymd_and_hms(2000, 2, 29, 0, 0, 0).unwrap();
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap();
        assert_eq!(whole_years(b, at(2001, 2, 28)), Some(0));
        assert_eq!(whole_years(b, at(2001, 3, 1)), Some(1));
        assert_eq!(whole_years(b, at(2004, 2, 29)), Some(4));
        assert_eq!(whole_years(b, at(1999, 1, 1)), None);
    }

    #[test]
    fn encode_decode_round_trip() {
        let rows: Rows = vec![(
            Arc::from("p"),
            Arc::from("f"),
            ChangePoint {
                effective_at: 5,
                value_num: Some(1.5),
                value_text: None,
                value_time: Some(3),
                count: 2,
            },
        )];
        let batches = encode(&rows, 7, timeline_schema()).unwrap();
        assert_eq!(decode(&batches).unwrap(), rows);
    }
}
