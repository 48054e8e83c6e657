//! The timeline table (change points), its in-memory index, and the one lookup function that
//! historical and online lookups share.
//!
//! A timeline row says: from `effective_at` on, until the next row of the same
//! `(patient_id, feature)`, the feature's state is this. Values that go stale are never
//! stored: `days_since` and `age` are computed by [`lookup`] at the lookup time from
//! `value_time`. `docs/features.md` documents every column.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, UInt64Type,
};
use chrono::{DateTime, Datelike, Duration, Utc};

use super::definition::{FeatureKind, FeatureSet, DAY_US};
use crate::error::{Error, Result};

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
/// most `batch_size` rows.
pub(crate) fn encode(rows: &Rows, batch_size: usize) -> Result<Vec<RecordBatch>> {
    let schema = timeline_schema();
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
        let p = col("patient_id")?
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
}

/// A timeline in memory: per (patient, feature) the change points sorted by time, found by
/// binary search. Shared by historical (as-of join) and online lookups.
#[derive(Debug, Clone, Default)]
pub struct TimelineIndex {
    features: HashMap<String, (u32, FeatureInfo)>,
    series: HashMap<(Arc<str>, u32), Vec<ChangePoint>>,
    change_points: usize,
}

impl TimelineIndex {
    /// Builds the index of a timeline made from `set`.
    ///
    /// # Errors
    /// [`Error::BadInput`] when the batches are not a timeline of this set (wrong schema, a
    /// feature the set does not define, change points out of order).
    pub fn build(set: &FeatureSet, batches: &[RecordBatch]) -> Result<TimelineIndex> {
        let features: HashMap<String, (u32, FeatureInfo)> = set
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let info = FeatureInfo {
                    kind: f.kind,
                    ttl: f.ttl_us.map(Duration::microseconds),
                    is_label: f.kind.is_label(),
                };
                (f.name.clone(), (i as u32, info))
            })
            .collect();
        let mut series: HashMap<(Arc<str>, u32), Vec<ChangePoint>> = HashMap::new();
        let rows = decode(batches)?;
        let change_points = rows.len();
        for (patient, feature, cp) in rows {
            let Some((fi, _)) = features.get(&*feature) else {
                return Err(Error::BadInput {
                    location: "timeline".into(),
                    field: format!("feature {feature}"),
                    reason: format!("not a feature of set {}", set.name),
                });
            };
            let s = series.entry((patient, *fi)).or_default();
            if s.last().is_some_and(|l| l.effective_at >= cp.effective_at) {
                return Err(Error::BadInput {
                    location: "timeline".into(),
                    field: format!("feature {feature}"),
                    reason: "change points out of order".into(),
                });
            }
            s.push(cp);
        }
        Ok(TimelineIndex {
            features,
            series,
            change_points,
        })
    }

    /// What the index knows about a feature.
    pub fn feature_info(&self, feature: &str) -> Option<&FeatureInfo> {
        self.features.get(feature).map(|(_, i)| i)
    }

    /// Number of change points held.
    pub fn len(&self) -> usize {
        self.change_points
    }

    /// True when the timeline has no change point.
    pub fn is_empty(&self) -> bool {
        self.change_points == 0
    }

    /// The change points of one (patient, feature), in time order.
    pub fn series(&self, patient: &str, feature: &str) -> &[ChangePoint] {
        let Some((fi, _)) = self.features.get(feature) else {
            return &[];
        };
        self.series
            .get(&(Arc::from(patient), *fi))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The value of `feature` for `patient` at `t`: the state of the last change point with
/// `effective_at <= t`, made into a value at `t` (days since, age), checked against `ttl`.
///
/// TTL applies to kinds whose value comes from one row (`days_since`, `last`, `first`,
/// `min`, `max`) and to `score` (from the index stay's discharge): the value is outside TTL when `t - value_time >= ttl` (an event exactly
/// `ttl` before `t` is out, one at `t` is in). `count`, `exists` and labels are 0 (present)
/// when nothing is visible; every other kind is then [`Status::NoData`]. An unknown feature
/// or patient is [`Status::NoData`].
pub fn lookup(
    timeline: &TimelineIndex,
    patient: &str,
    feature: &str,
    t: DateTime<Utc>,
    ttl: Option<Duration>,
) -> FeatureValue {
    let no_data = FeatureValue {
        value: None,
        status: Status::NoData,
    };
    let Some(info) = timeline.feature_info(feature) else {
        return no_data;
    };
    let t_us = t.timestamp_micros();
    let series = timeline.series(patient, feature);
    let n = series.partition_point(|cp| cp.effective_at <= t_us);
    let state = n.checked_sub(1).map(|i| &series[i]);
    let present = |v: Value| FeatureValue {
        value: Some(v),
        status: Status::Present,
    };
    let Some(cp) = state.filter(|cp| cp.count > 0) else {
        return if info.kind.zero_when_empty() {
            present(Value::Num(0.0))
        } else {
            no_data
        };
    };
    if info.kind.uses_ttl() {
        if let (Some(ttl), Some(vt)) = (ttl, cp.value_time) {
            let limit = ttl.num_microseconds().unwrap_or(i64::MAX);
            if t_us.saturating_sub(vt) >= limit {
                return FeatureValue {
                    value: None,
                    status: Status::OutsideTtl,
                };
            }
        }
    }
    let value = match info.kind {
        FeatureKind::DaysSince => cp
            .value_time
            .map(|vt| Value::Num((t_us - vt) as f64 / DAY_US as f64)),
        FeatureKind::Age => cp
            .value_time
            .and_then(DateTime::from_timestamp_micros)
            .and_then(|birth| whole_years(birth, t))
            .map(|y| Value::Num(y as f64)),
        _ => match (&cp.value_text, cp.value_num) {
            (Some(s), _) => Some(Value::Text(s.clone())),
            (None, Some(v)) => Some(Value::Num(v)),
            (None, None) => None,
        },
    };
    match value {
        Some(v) => present(v),
        None => no_data,
    }
}

/// Whole years from `birth` to `t` (a birthday counts from its start, UTC; someone born on
/// 29 February turns a year older on 1 March in common years); `None` before birth.
pub fn whole_years(birth: DateTime<Utc>, t: DateTime<Utc>) -> Option<i32> {
    if t < birth {
        return None;
    }
    let (b, d) = (birth.date_naive(), t.date_naive());
    let mut years = d.year() - b.year();
    if (d.month(), d.day()) < (b.month(), b.day()) {
        years -= 1;
    }
    Some(years)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
        let batches = encode(&rows, 7).unwrap();
        assert_eq!(decode(&batches).unwrap(), rows);
    }
}
