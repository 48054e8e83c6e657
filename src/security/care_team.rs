//! Care-team index: "is patient `p` on clinician `c`'s care team at time `t`".
//!
//! Built from the curated `care_team` table (`docs/curated-tables.md`). An assignment holds
//! at `t` when `valid_from <= t`, `valid_to` is null or `t < valid_to`, the row was known at
//! `t` (`known_at <= t`) and not retracted by then (`retracted_at` null or `> t`): the same
//! point-in-time rule as every lookup, so access follows what the hospital knew at the time.

use std::collections::HashMap;

use arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, Utc};

use crate::curated::CareTeamMember;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Assignment {
    from: i64,
    to: Option<i64>,
    known_at: i64,
    retracted_at: Option<i64>,
}

impl Assignment {
    fn holds_at(&self, t: i64) -> bool {
        self.from <= t
            && self.to.is_none_or(|to| t < to)
            && self.known_at <= t
            && self.retracted_at.is_none_or(|r| r > t)
    }
}

/// The care teams, indexed by clinician then patient.
#[derive(Debug, Clone, Default)]
pub struct CareTeamIndex {
    by_clinician: HashMap<String, HashMap<String, Vec<Assignment>>>,
    rows: usize,
}

impl CareTeamIndex {
    /// An index with no assignment (every care-team check is denied).
    pub fn empty() -> Self {
        CareTeamIndex::default()
    }

    /// Number of assignments indexed.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no assignment is indexed.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn insert(&mut self, clinician: &str, patient: &str, a: Assignment) {
        self.by_clinician
            .entry(clinician.to_string())
            .or_default()
            .entry(patient.to_string())
            .or_default()
            .push(a);
        self.rows += 1;
    }

    /// An index of curated rows.
    pub fn from_members(rows: &[CareTeamMember]) -> Self {
        let mut idx = CareTeamIndex::default();
        for r in rows {
            idx.insert(
                &r.clinician_id,
                &r.patient_id,
                Assignment {
                    from: r.valid_from.timestamp_micros(),
                    to: r.valid_to.map(|t| t.timestamp_micros()),
                    known_at: r.meta.known_at.timestamp_micros(),
                    retracted_at: r.meta.retracted_at.map(|t| t.timestamp_micros()),
                },
            );
        }
        idx
    }

    /// An index of `care_team` record batches (a stored curated version). `known_at` and
    /// `retracted_at` are used when present.
    ///
    /// # Errors
    /// [`Error::BadInput`] naming the batch, row and column when a required column is missing,
    /// has the wrong type, or holds a null.
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Self> {
        let mut idx = CareTeamIndex::default();
        for (bi, batch) in batches.iter().enumerate() {
            let loc = |row: Option<usize>| match row {
                Some(r) => format!("care_team batch {bi} row {r}"),
                None => format!("care_team batch {bi}"),
            };
            let text = |name: &str| -> Result<StringArray> {
                let col = batch.column_by_name(name).ok_or_else(|| Error::BadInput {
                    location: loc(None),
                    field: name.into(),
                    reason: "required column is missing".into(),
                })?;
                let c = cast(col, &DataType::Utf8).map_err(|e| Error::BadInput {
                    location: loc(None),
                    field: name.into(),
                    reason: format!("not text: {e}"),
                })?;
                c.as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .ok_or_else(|| Error::Internal(format!("cast of {name} to utf8")))
            };
            let time = |name: &str, required: bool| -> Result<Option<TimestampMicrosecondArray>> {
                let Some(col) = batch.column_by_name(name) else {
                    return if required {
                        Err(Error::BadInput {
                            location: loc(None),
                            field: name.into(),
                            reason: "required column is missing".into(),
                        })
                    } else {
                        Ok(None)
                    };
                };
                if !matches!(col.data_type(), DataType::Timestamp(_, _)) {
                    return Err(Error::BadInput {
                        location: loc(None),
                        field: name.into(),
                        reason: format!("expected a timestamp, found {}", col.data_type()),
                    });
                }
                let c = cast(
                    col,
                    &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                )?;
                Ok(c.as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .cloned())
            };
            let patients = text("patient_id")?;
            let clinicians = text("clinician_id")?;
            let from = time("valid_from", true)?
                .ok_or_else(|| Error::Internal("valid_from cast".into()))?;
            let to = time("valid_to", false)?;
            let known = time("known_at", false)?;
            let retracted = time("retracted_at", false)?;
            let opt = |a: &Option<TimestampMicrosecondArray>, i: usize| {
                a.as_ref().and_then(|a| (!a.is_null(i)).then(|| a.value(i)))
            };
            for i in 0..batch.num_rows() {
                for (name, nulls) in [
                    ("patient_id", patients.is_null(i)),
                    ("clinician_id", clinicians.is_null(i)),
                    ("valid_from", from.is_null(i)),
                ] {
                    if nulls {
                        return Err(Error::BadInput {
                            location: loc(Some(i)),
                            field: name.into(),
                            reason: "null in a required column".into(),
                        });
                    }
                }
                let from_t = from.value(i);
                idx.insert(
                    clinicians.value(i),
                    patients.value(i),
                    Assignment {
                        from: from_t,
                        to: opt(&to, i),
                        // Without a knowledge time the assignment is known from its start.
                        known_at: opt(&known, i).unwrap_or(i64::MIN),
                        retracted_at: opt(&retracted, i),
                    },
                );
            }
        }
        Ok(idx)
    }

    /// Whether `patient` is on `clinician`'s care team at `t`.
    pub fn on_team(&self, clinician: &str, patient: &str, t: DateTime<Utc>) -> bool {
        let t = t.timestamp_micros();
        self.by_clinician
            .get(clinician)
            .and_then(|p| p.get(patient))
            .is_some_and(|v| v.iter().any(|a| a.holds_at(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curated::{CuratedTables, RowMeta, Table};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn member(c: &str, p: &str, from: &str, to: Option<&str>, known: &str) -> CareTeamMember {
        CareTeamMember {
            patient_id: p.into(),
            clinician_id: c.into(),
            role: Some("attending".into()),
            valid_from: t(from),
            valid_to: to.map(t),
            meta: RowMeta {
                source_system: "test".into(),
                source_id: format!("{c}/{p}"),
                known_at: t(known),
                retracted_at: None,
            },
        }
    }

    fn rows() -> Vec<CareTeamMember> {
        let mut retracted = member(
            "dr-b",
            "p2",
            "2026-01-01T00:00:00Z",
            None,
            "2026-01-01T00:00:00Z",
        );
        retracted.meta.retracted_at = Some(t("2026-02-01T00:00:00Z"));
        vec![
            member(
                "dr-a",
                "p1",
                "2026-01-01T00:00:00Z",
                Some("2026-01-10T00:00:00Z"),
                "2026-01-01T00:00:00Z",
            ),
            // Known only a day after it started.
            member(
                "dr-a",
                "p2",
                "2026-01-05T00:00:00Z",
                None,
                "2026-01-06T00:00:00Z",
            ),
            retracted,
        ]
    }

    fn check(idx: &CareTeamIndex) {
        assert!(idx.on_team("dr-a", "p1", t("2026-01-01T00:00:00Z")));
        assert!(idx.on_team("dr-a", "p1", t("2026-01-09T23:59:59Z")));
        assert!(
            !idx.on_team("dr-a", "p1", t("2026-01-10T00:00:00Z")),
            "end is exclusive"
        );
        assert!(!idx.on_team("dr-a", "p1", t("2025-12-31T23:59:59Z")));
        assert!(
            !idx.on_team("dr-a", "p2", t("2026-01-05T12:00:00Z")),
            "not yet known"
        );
        assert!(
            idx.on_team("dr-a", "p2", t("2026-03-01T00:00:00Z")),
            "open-ended"
        );
        assert!(idx.on_team("dr-b", "p2", t("2026-01-15T00:00:00Z")));
        assert!(
            !idx.on_team("dr-b", "p2", t("2026-02-01T00:00:00Z")),
            "retracted"
        );
        assert!(!idx.on_team("dr-b", "p1", t("2026-01-02T00:00:00Z")));
        assert!(!idx.on_team("nobody", "p1", t("2026-01-02T00:00:00Z")));
        assert_eq!(idx.len(), 3);
    }

    #[test]
    fn members_and_batches_give_the_same_answers() {
        let rows = rows();
        check(&CareTeamIndex::from_members(&rows));
        let tables = CuratedTables {
            care_team: rows,
            ..CuratedTables::default()
        };
        let batch = tables.to_batch(Table::CareTeam).unwrap();
        check(&CareTeamIndex::from_batches(&[batch]).unwrap());
    }

    #[test]
    fn missing_column_and_null_are_named() {
        let tables = CuratedTables {
            care_team: rows(),
            ..CuratedTables::default()
        };
        let batch = tables.to_batch(Table::CareTeam).unwrap();
        let without = batch.project(&[0, 2, 3, 4]).unwrap();
        let err = CareTeamIndex::from_batches(&[without])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clinician_id") && err.contains("batch 0"),
            "{err}"
        );
    }
}
