//! Column readers: curated columns cast once and borrowed in place (text, times, values,
//! text filters), never copied into owned strings.

use super::definition::{FeatureDef, DAY_US};
use super::filter::Condition;
use super::kind::ValueClass;
use crate::error::{Error, Result};
use arrow::array::{
    Array, AsArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};

/// A value read from a row, borrowed from the input arrays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Val<'a> {
    None,
    Num(f64),
    Text(&'a str),
    Time(i64),
}

/// A column cast to UTF-8 (`None` when the batch has no such column).
pub(crate) fn utf8_array(
    batch: &RecordBatch,
    name: &str,
    feature: &str,
) -> Result<Option<StringArray>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let arr = if col.data_type() == &DataType::Utf8 {
        col.clone()
    } else {
        cast(col, &DataType::Utf8).map_err(|e| {
            Error::invalid(format!("feature {feature}: column {name}"), e.to_string())
        })?
    };
    Ok(Some(arr.as_string::<i32>().clone()))
}

/// A text column as read: plain UTF-8, or dictionary-encoded (as Parquet readers can give
/// low-cardinality columns such as `patient_id` or `code`), read through its keys so that each
/// distinct value is looked at once.
#[derive(Debug, Clone)]
pub(crate) enum TextCol {
    Plain(StringArray),
    Dict(Int32Array, StringArray),
}

/// A text column (`None` when the batch has no such column): a dictionary of 32-bit keys
/// over text stays one, anything else is cast to UTF-8.
pub(crate) fn text_col(batch: &RecordBatch, name: &str, feature: &str) -> Result<Option<TextCol>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    if let Some(d) = col.as_dictionary_opt::<Int32Type>() {
        if let Some(values) = d.values().as_string_opt::<i32>() {
            return Ok(Some(TextCol::Dict(d.keys().clone(), values.clone())));
        }
    }
    Ok(utf8_array(batch, name, feature)?.map(TextCol::Plain))
}

/// A text condition of a feature over one batch's column: per row, or per distinct value of
/// a dictionary.
pub(super) struct TextFilter {
    pub(super) col: TextCol,
    pub(super) cond: Condition,
    /// For a dictionary: whether each distinct value passes.
    pub(super) by_value: Vec<bool>,
}

impl TextFilter {
    pub(super) fn new(col: TextCol, cond: Condition) -> TextFilter {
        let by_value = match &col {
            TextCol::Dict(_, values) => (0..values.len())
                .map(|i| str_at(values, i).is_some_and(|v| cond.matches(v)))
                .collect(),
            TextCol::Plain(_) => Vec::new(),
        };
        TextFilter {
            col,
            cond,
            by_value,
        }
    }

    /// Whether row `i` passes (a null never does).
    pub(super) fn holds(&self, i: usize) -> bool {
        match &self.col {
            TextCol::Plain(a) => str_at(a, i).is_some_and(|v| self.cond.matches(v)),
            TextCol::Dict(k, _) => {
                !k.is_null(i)
                    && self
                        .by_value
                        .get(k.value(i) as usize)
                        .copied()
                        .unwrap_or(false)
            }
        }
    }
}

/// A timestamp column cast to microseconds, UTC (`None` when the batch has no such column).
pub(crate) fn ts_array(
    batch: &RecordBatch,
    name: &str,
    feature: &str,
) -> Result<Option<TimestampMicrosecondArray>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let target = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let arr = if col.data_type() == &target {
        col.clone()
    } else {
        cast(col, &target).map_err(|e| {
            Error::invalid(format!("feature {feature}: column {name}"), e.to_string())
        })?
    };
    Ok(Some(arr.as_primitive::<TimestampMicrosecondType>().clone()))
}

/// Value `i` of a string column, `None` when null.
pub(crate) fn str_at(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// Value `i` of a timestamp column, `None` when null.
pub(crate) fn ts_at(a: &TimestampMicrosecondArray, i: usize) -> Option<i64> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// A value column, typed once per batch.
#[derive(Debug, Clone)]
pub(super) enum ValArray {
    Num(Float64Array),
    /// A duration as integers of its unit, and the unit's count per day.
    Duration(Int64Array, f64),
    Text(StringArray),
    Date(Date32Array),
    Time(TimestampMicrosecondArray),
}

impl ValArray {
    pub(super) fn read(batch: &RecordBatch, name: &str, feature: &str) -> Result<ValArray> {
        let bad = |e: String| Error::invalid(format!("feature {feature}: column {name}"), e);
        let col = batch
            .column_by_name(name)
            .ok_or_else(|| bad("missing from the table".into()))?;
        let dt = col.data_type().clone();
        Ok(match (ValueClass::of(&dt), &dt) {
            (Some(ValueClass::Num), DataType::Duration(unit)) => {
                let per_day = match unit {
                    TimeUnit::Second => DAY_US as f64 / 1e6,
                    TimeUnit::Millisecond => DAY_US as f64 / 1e3,
                    TimeUnit::Microsecond => DAY_US as f64,
                    TimeUnit::Nanosecond => DAY_US as f64 * 1e3,
                };
                let arr = cast(col, &DataType::Int64).map_err(|e| bad(e.to_string()))?;
                ValArray::Duration(arr.as_primitive::<Int64Type>().clone(), per_day)
            }
            (Some(ValueClass::Num), _) => {
                let arr = cast(col, &DataType::Float64).map_err(|e| bad(e.to_string()))?;
                ValArray::Num(arr.as_primitive::<Float64Type>().clone())
            }
            (Some(ValueClass::Text), _) => ValArray::Text(
                utf8_array(batch, name, feature)?
                    .ok_or_else(|| bad("missing from the table".into()))?,
            ),
            (Some(ValueClass::Time), DataType::Date32) => {
                ValArray::Date(col.as_primitive::<Date32Type>().clone())
            }
            (Some(ValueClass::Time), _) => ValArray::Time(
                ts_array(batch, name, feature)?
                    .ok_or_else(|| bad("missing from the table".into()))?,
            ),
            (None, _) => return Err(bad(format!("type {dt} is not readable as a value"))),
        })
    }

    pub(super) fn get(&self, i: usize) -> Val<'_> {
        match self {
            ValArray::Num(a) => match a.is_null(i) {
                true => Val::None,
                false => Val::Num(a.value(i)),
            },
            ValArray::Duration(a, per_day) => match a.is_null(i) {
                true => Val::None,
                false => Val::Num(a.value(i) as f64 / per_day),
            },
            ValArray::Text(a) => str_at(a, i).map_or(Val::None, Val::Text),
            ValArray::Date(a) => match a.is_null(i) {
                true => Val::None,
                false => Val::Time(a.value(i) as i64 * DAY_US),
            },
            ValArray::Time(a) => ts_at(a, i).map_or(Val::None, Val::Time),
        }
    }
}

/// Features reading the same rows share a stream: same table, filter, time and value column.
pub(super) fn same_rows(a: &FeatureDef, b: &FeatureDef) -> bool {
    a.table == b.table && a.filter == b.filter && a.time == b.time && a.column == b.column
}
