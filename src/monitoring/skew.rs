//! The training/serving skew check (`docs/monitoring.md`, "Skew"): each logged online
//! lookup replayed as a historical lookup (same patient, same time, same timeline) through
//! the as-of join training sets are made with ([`crate::lookup::historical_batches`] over
//! the timeline loaded whole from the store), and each logged value compared with the
//! replayed one (value and status; numbers bit for bit). Ward answers both lookups by one
//! rule over one timeline, so nothing differs; a count above zero means the online path
//! served something a training set would not hold (a bug, a store changed under the log,
//! or a log edited), and is an alarm. Lookups whose timeline is no longer in the store
//! cannot be replayed and are counted apart (also an alarm).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::log::{self, parse_status, LoggedValue};
use crate::error::{Error, Result};
use crate::features::{status_str, Status, Value, STATUS_SUFFIX};
use crate::hash::ContentHash;
use crate::store::{Store, VersionRef};

/// Differing values listed in a report (the counts are complete).
pub const EXAMPLES: usize = 20;

/// One feature's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureSkew {
    /// The feature.
    pub feature: String,
    /// Values replayed and compared.
    pub compared: u64,
    /// Values that differ.
    pub differing: u64,
}

/// A value served online that the replay does not give.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    /// The log row.
    pub seq: i64,
    /// The patient.
    pub patient_id: String,
    /// The time the value held at.
    pub as_of: DateTime<Utc>,
    /// The timeline.
    pub timeline: String,
    /// The feature.
    pub feature: String,
    /// What was served (value or status).
    pub logged: String,
    /// What the historical lookup gives.
    pub replayed: String,
}

/// What [`skew`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkewReport {
    /// The log version read back from.
    pub online: ContentHash,
    /// The log versions read.
    pub online_versions: usize,
    /// Only lookups requested at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Lookups replayed.
    pub lookups: usize,
    /// Values compared.
    pub values: u64,
    /// Values that differ.
    pub differing: u64,
    /// Values whose timeline is not in the store (not replayed).
    pub unreplayable: u64,
    /// The timelines replayed.
    pub timelines: Vec<String>,
    /// Per feature.
    pub features: Vec<FeatureSkew>,
    /// The first differing values.
    pub examples: Vec<Mismatch>,
    /// Notes on what could not be replayed.
    pub notes: Vec<String>,
}

impl SkewReport {
    /// True when every value was replayed and none differs.
    pub fn ok(&self) -> bool {
        self.differing == 0 && self.unreplayable == 0
    }

    /// The report as lines for a terminal.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "online log {} ({} versions): {} lookups, {} values replayed over {} timeline(s): {} differ{}",
            self.online,
            self.online_versions,
            self.lookups,
            self.values,
            self.timelines.len(),
            self.differing,
            if self.unreplayable > 0 {
                format!(", {} not replayable", self.unreplayable)
            } else {
                String::new()
            }
        )];
        out.push(format!(
            "{:<32} {:>9} {:>9}",
            "feature", "compared", "differing"
        ));
        for f in &self.features {
            out.push(format!(
                "{:<32} {:>9} {:>9}",
                f.feature, f.compared, f.differing
            ));
        }
        for m in &self.examples {
            out.push(format!(
                "  seq {} patient {} at {} feature {}: served {}, replayed {}",
                m.seq,
                m.patient_id,
                m.as_of.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                m.feature,
                m.logged,
                m.replayed
            ));
        }
        out.extend(self.notes.iter().cloned());
        out
    }
}

/// A value and status as a report shows it.
fn show(v: Option<&Value>, s: Status) -> String {
    match (v, s) {
        (Some(Value::Num(x)), Status::Present) => format!("{x}"),
        (Some(Value::Text(t)), Status::Present) => format!("{t:?}"),
        (Some(Value::Num(x)), s) => format!("{x} ({})", status_str(s)),
        (Some(Value::Text(t)), s) => format!("{t:?} ({})", status_str(s)),
        (None, s) => status_str(s).to_string(),
    }
}

/// Whether two values are the same (numbers bit for bit, NaN equal to NaN).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Value::Num(x)), Some(Value::Num(y))) => x.to_bits() == y.to_bits() || x == y,
        (Some(Value::Text(x)), Some(Value::Text(y))) => x == y,
        _ => false,
    }
}

/// Replays every lookup of the log `online` names (requested at or after `since`) as a
/// historical lookup and counts the values that differ.
///
/// # Errors
/// [`Error::NotFound`] for an unknown log reference; [`Error::BadInput`] naming the log
/// version, row and column that is not a log; errors loading a timeline other than its
/// absence.
pub async fn skew(
    store: &Store,
    online: &VersionRef,
    since: Option<DateTime<Utc>>,
) -> Result<SkewReport> {
    let log = log::read(store, online, since).await?;
    let mut by_timeline: BTreeMap<&str, Vec<&LoggedValue>> = BTreeMap::new();
    for r in &log.rows {
        by_timeline.entry(r.timeline.as_str()).or_default().push(r);
    }
    let mut features: BTreeMap<String, FeatureSkew> = BTreeMap::new();
    let mut examples = Vec::new();
    let mut notes = Vec::new();
    let (mut values, mut differing, mut unreplayable) = (0u64, 0u64, 0u64);
    let mut timelines = Vec::new();
    for (timeline, rows) in by_timeline {
        let loaded = match timeline.parse::<ContentHash>() {
            Ok(h) => match crate::features::load_index(store, &h).await {
                Ok((_, index)) => Some(index),
                Err(Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            },
            Err(_) => None,
        };
        let Some(index) = loaded else {
            unreplayable += rows.len() as u64;
            notes.push(format!(
                "timeline {timeline}: not in the store; its {} logged values cannot be replayed",
                rows.len()
            ));
            continue;
        };
        timelines.push(timeline.to_string());
        // One entity row per distinct (patient, time).
        let mut keys: HashMap<(&str, i64), usize> = HashMap::new();
        let mut patients = Vec::new();
        let mut times = Vec::new();
        for r in &rows {
            let k = (r.patient_id.as_str(), r.as_of.timestamp_micros());
            keys.entry(k).or_insert_with(|| {
                patients.push(k.0.to_string());
                times.push(k.1);
                patients.len() - 1
            });
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("patient_id", DataType::Utf8, false),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let entities = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(patients)),
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
            ],
        )?;
        let (_, out) =
            crate::lookup::historical_batches(&index, &[entities], "patient_id", "timestamp")?;
        let replayed = arrow::compute::concat_batches(&out[0].schema(), &out)?;
        // Per feature: its value column (as text or numbers) and status column.
        let mut columns: HashMap<&str, (arrow::array::ArrayRef, StringArray)> = HashMap::new();
        for r in &rows {
            let f = r.feature.as_str();
            if columns.contains_key(f) {
                continue;
            }
            let (Some(v), Some(s)) = (
                replayed.column_by_name(f),
                replayed.column_by_name(&format!("{f}{STATUS_SUFFIX}")),
            ) else {
                continue;
            };
            let s = arrow::compute::cast(s, &DataType::Utf8)?;
            columns.insert(f, (v.clone(), s.as_string::<i32>().clone()));
        }
        for r in rows {
            values += 1;
            let entry = features
                .entry(r.feature.clone())
                .or_insert_with(|| FeatureSkew {
                    feature: r.feature.clone(),
                    compared: 0,
                    differing: 0,
                });
            entry.compared += 1;
            let i = keys[&(r.patient_id.as_str(), r.as_of.timestamp_micros())];
            let got = columns.get(r.feature.as_str()).map(|(v, s)| {
                let value = if v.is_null(i) {
                    None
                } else {
                    match v.data_type() {
                        DataType::Utf8 => Some(Value::Text(v.as_string::<i32>().value(i).into())),
                        _ => arrow::compute::cast(v, &DataType::Float64).ok().map(|c| {
                            Value::Num(c.as_primitive::<arrow::datatypes::Float64Type>().value(i))
                        }),
                    }
                };
                (value, parse_status(s.value(i)))
            });
            let replayed = match got {
                Some((value, Some(status))) => {
                    if same(value.as_ref(), r.value.as_ref()) && status == r.status {
                        continue;
                    }
                    show(value.as_ref(), status)
                }
                Some((_, None)) => "an unknown status".to_string(),
                None => format!("no feature {} in the timeline", r.feature),
            };
            differing += 1;
            entry.differing += 1;
            if examples.len() < EXAMPLES {
                examples.push(Mismatch {
                    seq: r.seq,
                    patient_id: r.patient_id.clone(),
                    as_of: r.as_of,
                    timeline: r.timeline.clone(),
                    feature: r.feature.clone(),
                    logged: show(r.value.as_ref(), r.status),
                    replayed,
                });
            }
        }
    }
    Ok(SkewReport {
        online: log.head,
        online_versions: log.versions.len(),
        since,
        lookups: log.lookups(),
        values,
        differing,
        unreplayable,
        timelines,
        features: features.into_values().collect(),
        examples,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_bit_for_bit_and_by_kind() {
        assert!(same(Some(&Value::Num(1.0)), Some(&Value::Num(1.0))));
        assert!(same(
            Some(&Value::Num(f64::NAN)),
            Some(&Value::Num(f64::NAN))
        ));
        assert!(!same(
            Some(&Value::Num(1.0)),
            Some(&Value::Num(1.0 + 1e-15))
        ));
        assert!(!same(
            Some(&Value::Num(1.0)),
            Some(&Value::Text("1".into()))
        ));
        assert!(!same(None, Some(&Value::Num(0.0))));
        assert!(same(None, None));
        assert_eq!(show(None, Status::NoData), "no_data");
        assert_eq!(show(Some(&Value::Num(2.5)), Status::Present), "2.5");
    }
}
