//! Feature kinds: what each kind computes, the columns it reads and the value classes it
//! accepts; the score components a `kind = "score"` feature names and the tables it reads.

use crate::curated::Table;
use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};

/// The columns of each score table that `score` features decode (besides provenance).
pub(crate) const SCORE_COLUMNS: [(Table, &[&str]); 4] = [
    (
        Table::Encounters,
        &[
            "encounter_id",
            "class",
            "admit_time",
            "discharge_time",
            "admission_type",
            "service",
        ],
    ),
    (
        Table::Conditions,
        &["condition_id", "code_system", "code", "onset_time"],
    ),
    (
        Table::Observations,
        &[
            "observation_id",
            "code_system",
            "code",
            "effective_time",
            "value_num",
            "unit",
            "status",
        ],
    ),
    (Table::Procedures, &["procedure_id", "performed_time"]),
];

/// The curated tables a `score` feature reads (the scores' inputs).
pub(crate) const SCORE_TABLES: [Table; 4] = [
    Table::Encounters,
    Table::Observations,
    Table::Conditions,
    Table::Procedures,
];

/// What a feature computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// Days from the last matching event to the lookup time (computed at lookup).
    DaysSince,
    /// Number of matching events in the window.
    Count,
    /// Sum of a numeric column over the window.
    Sum,
    /// Mean of a numeric column over the window.
    Mean,
    /// Minimum of a numeric column over the window.
    Min,
    /// Maximum of a numeric column over the window.
    Max,
    /// The column's value in the latest matching row.
    Last,
    /// The column's value in the earliest matching row.
    First,
    /// 1 when a matching event is in the window, else 0.
    Exists,
    /// Whole years from the birth date to the lookup time (computed at lookup).
    Age,
    /// Label: 1 when a matching admission starts in `(t, t + horizon]`.
    ReadmittedWithin,
    /// Label: 1 when the patient dies in `(t, t + horizon]`.
    DiedWithin,
    /// A clinical score component (LACE, HOSPITAL, Charlson) of the patient's most recent
    /// inpatient stay discharged at or before the lookup time, as known then.
    Score,
}

impl FeatureKind {
    /// Every kind, in the order of the docs.
    pub const ALL: [FeatureKind; 13] = [
        FeatureKind::DaysSince,
        FeatureKind::Count,
        FeatureKind::Sum,
        FeatureKind::Mean,
        FeatureKind::Min,
        FeatureKind::Max,
        FeatureKind::Last,
        FeatureKind::First,
        FeatureKind::Exists,
        FeatureKind::Age,
        FeatureKind::ReadmittedWithin,
        FeatureKind::DiedWithin,
        FeatureKind::Score,
    ];

    /// The name as written in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::DaysSince => "days_since",
            FeatureKind::Count => "count",
            FeatureKind::Sum => "sum",
            FeatureKind::Mean => "mean",
            FeatureKind::Min => "min",
            FeatureKind::Max => "max",
            FeatureKind::Last => "last",
            FeatureKind::First => "first",
            FeatureKind::Exists => "exists",
            FeatureKind::Age => "age",
            FeatureKind::ReadmittedWithin => "readmitted_within",
            FeatureKind::DiedWithin => "died_within",
            FeatureKind::Score => "score",
        }
    }

    /// Parses a name as written by [`FeatureKind::as_str`].
    pub fn from_name(s: &str) -> Option<FeatureKind> {
        FeatureKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Labels look forward in time: allowed in training sets, refused online.
    pub fn is_label(self) -> bool {
        matches!(
            self,
            FeatureKind::ReadmittedWithin | FeatureKind::DiedWithin
        )
    }

    /// Whether a TTL bounds the age of the value (kinds whose value comes from one row).
    pub fn uses_ttl(self) -> bool {
        matches!(
            self,
            FeatureKind::DaysSince
                | FeatureKind::Last
                | FeatureKind::First
                | FeatureKind::Min
                | FeatureKind::Max
                | FeatureKind::Score
        )
    }

    /// Kinds whose value over no rows is 0 (a count of nothing), not "no data".
    pub fn zero_when_empty(self) -> bool {
        matches!(self, FeatureKind::Count | FeatureKind::Exists) || self.is_label()
    }

    /// Kinds that read a value column.
    pub(super) fn column_rule(self) -> ColumnRule {
        match self {
            FeatureKind::Sum | FeatureKind::Mean | FeatureKind::Min | FeatureKind::Max => {
                ColumnRule::Required(&[ValueClass::Num])
            }
            FeatureKind::Last | FeatureKind::First => {
                ColumnRule::Required(&[ValueClass::Num, ValueClass::Text])
            }
            FeatureKind::Age => ColumnRule::Required(&[ValueClass::Time]),
            _ => ColumnRule::None,
        }
    }
}

pub(super) enum ColumnRule {
    None,
    Required(&'static [ValueClass]),
}

/// How a column's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueClass {
    /// Numbers (floats, integers, decimals; durations as days).
    Num,
    /// Strings.
    Text,
    /// Dates and timestamps.
    Time,
}

impl ValueClass {
    pub(crate) fn of(dt: &DataType) -> Option<ValueClass> {
        Some(match dt {
            DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
            | DataType::Duration(_) => ValueClass::Num,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ValueClass::Text,
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => ValueClass::Time,
            _ => return None,
        })
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            ValueClass::Num => "numeric",
            ValueClass::Text => "string",
            ValueClass::Time => "date or timestamp",
        }
    }
}
