//! What each column becomes: the output schema, date shifts, years, capped ages and ZIP3.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Date64Array, Float64Array, Int32Array, PrimitiveArray,
    StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowPrimitiveType, ArrowTimestampType, DataType, Field, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use chrono::{DateTime, Datelike, Utc};

use super::policy::*;
use crate::error::{Error, Result};
use crate::hash::ContentHash;

/// One export: the identified version it de-identifies (the salt of a policy that is not
/// `stable`) and the time it is made (from the injected clock; Safe Harbor removes birth
/// years showing an age over 89 at that time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    /// The identified version.
    pub identified: ContentHash,
    /// The export time.
    pub at: DateTime<Utc>,
}

/// The schema [`deidentify`] produces for `schema`.
///
/// # Errors
/// [`Error::BadInput`] when no patient id column is present, or a column the policy names
/// has a type it cannot handle.
pub fn output_schema(schema: &Schema, policy: &DeidPolicy) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    let mut has_patient = false;
    for f in schema.fields() {
        let rule = policy.rule(f)?;
        match rule {
            Rule::Drop => continue,
            Rule::Patient | Rule::Token => {
                has_patient |= rule == Rule::Patient;
                fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
            }
            Rule::Zip | Rule::Status => {
                fields.push(Field::new(f.name(), DataType::Utf8, true));
            }
            Rule::Year { birth } => {
                fields.push(Field::new(
                    f.name(),
                    DataType::Int32,
                    f.is_nullable() || birth,
                ));
            }
            Rule::Age | Rule::Shift | Rule::Keep => {
                fields.push(Field::new(f.name(), f.data_type().clone(), f.is_nullable()));
            }
        }
    }
    if !has_patient {
        return Err(Error::BadInput {
            location: "training set schema".into(),
            field: policy.patient_id_columns.join("|"),
            reason: "no patient id column: de-identification needs one to tokenize ids, order \
                     the rows and shift dates per patient"
                .into(),
        });
    }
    Ok(Arc::new(Schema::new(fields)))
}

pub(super) fn to_strings(col: &ArrayRef) -> Result<StringArray> {
    let c = cast(col, &DataType::Utf8)?;
    Ok(c.as_string::<i32>().clone())
}

pub(super) fn shift_primitive<T: ArrowPrimitiveType<Native = i64>>(
    col: &ArrayRef,
    offsets: &[i64],
    per_day: i64,
    name: &str,
    batch: usize,
) -> Result<PrimitiveArray<T>> {
    let a = col.as_primitive::<T>();
    let mut out = Vec::with_capacity(a.len());
    for (i, v) in a.iter().enumerate() {
        out.push(match v {
            None => None,
            Some(x) => Some(
                offsets[i]
                    .checked_mul(per_day)
                    .and_then(|d| x.checked_add(d))
                    .ok_or_else(|| Error::BadInput {
                        location: format!("batch {batch} row {i}"),
                        field: name.into(),
                        reason: "the shifted time is out of range".into(),
                    })?,
            ),
        });
    }
    Ok(out.into_iter().collect::<PrimitiveArray<T>>())
}

/// What shifting one timestamp column needs: the per-row day offsets, the column's unit per
/// day, where it is (for errors) and its time zone.
struct ShiftAt<'a> {
    offsets: &'a [i64],
    per_day: i64,
    name: &'a str,
    batch: usize,
    tz: &'a Option<Arc<str>>,
}

/// A timestamp column of unit `T` shifted by whole days, its time zone kept.
fn shift_timestamps<T: ArrowTimestampType>(col: &ArrayRef, at: &ShiftAt<'_>) -> Result<ArrayRef> {
    Ok(Arc::new(
        shift_primitive::<T>(col, at.offsets, at.per_day, at.name, at.batch)?
            .with_timezone_opt(at.tz.clone()),
    ))
}

pub(super) fn shift_dates(
    col: &ArrayRef,
    offsets: &[i64],
    name: &str,
    batch: usize,
) -> Result<ArrayRef> {
    const DAY_S: i64 = 86_400;
    Ok(match col.data_type() {
        DataType::Date32 => {
            let a = col.as_primitive::<arrow::datatypes::Date32Type>();
            let out: Date32Array = a
                .iter()
                .enumerate()
                .map(|(i, v)| v.map(|d| d.saturating_add(offsets[i] as i32)))
                .collect();
            Arc::new(out)
        }
        DataType::Date64 => {
            let a = col.as_primitive::<arrow::datatypes::Date64Type>();
            let out: Date64Array = a
                .iter()
                .enumerate()
                .map(|(i, v)| v.map(|d| d.saturating_add(offsets[i] * DAY_S * 1000)))
                .collect();
            Arc::new(out)
        }
        DataType::Timestamp(unit, tz) => {
            let per_day = DAY_S
                * match unit {
                    TimeUnit::Second => 1,
                    TimeUnit::Millisecond => 1_000,
                    TimeUnit::Microsecond => 1_000_000,
                    TimeUnit::Nanosecond => 1_000_000_000,
                };
            let at = ShiftAt {
                offsets,
                per_day,
                name,
                batch,
                tz,
            };
            match unit {
                TimeUnit::Second => shift_timestamps::<TimestampSecondType>(col, &at)?,
                TimeUnit::Millisecond => shift_timestamps::<TimestampMillisecondType>(col, &at)?,
                TimeUnit::Microsecond => shift_timestamps::<TimestampMicrosecondType>(col, &at)?,
                TimeUnit::Nanosecond => shift_timestamps::<TimestampNanosecondType>(col, &at)?,
            }
        }
        other => {
            return Err(Error::Internal(format!(
                "shift_dates called on {other} column {name}"
            )))
        }
    })
}

/// The UTC year of every value of a date or timestamp column; `birth`: removed when the
/// year shows an age over 89 at `at` (a birth year 90 or more years before the export's).
pub(super) fn years(col: &ArrayRef, birth: bool, at: DateTime<Utc>) -> Result<ArrayRef> {
    fn each<T: ArrowPrimitiveType>(col: &ArrayRef) -> Vec<Option<i32>>
    where
        T::Native: Into<i64>,
    {
        col.as_primitive::<T>()
            .iter()
            .map(|v| {
                v.and_then(|v| arrow::temporal_conversions::as_datetime::<T>(v.into()))
                    .map(|d| d.year())
            })
            .collect()
    }
    use arrow::datatypes::{Date32Type, Date64Type};
    let ys = match col.data_type() {
        DataType::Date32 => each::<Date32Type>(col),
        DataType::Date64 => each::<Date64Type>(col),
        DataType::Timestamp(TimeUnit::Second, _) => each::<TimestampSecondType>(col),
        DataType::Timestamp(TimeUnit::Millisecond, _) => each::<TimestampMillisecondType>(col),
        DataType::Timestamp(TimeUnit::Microsecond, _) => each::<TimestampMicrosecondType>(col),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => each::<TimestampNanosecondType>(col),
        other => return Err(Error::Internal(format!("years called on a {other} column"))),
    };
    let now = at.year();
    let out: Int32Array = ys
        .into_iter()
        .map(|y| y.filter(|y| !(birth && now - y >= 90)))
        .collect();
    Ok(Arc::new(out))
}

pub(super) fn cap_ages(col: &ArrayRef, max_age: u32) -> Result<ArrayRef> {
    let f = cast(col, &DataType::Float64)?;
    let cap = f64::from(max_age);
    let out: Float64Array = f
        .as_primitive::<arrow::datatypes::Float64Type>()
        .iter()
        .map(|v| v.map(|x| if x > cap { cap + 1.0 } else { x }))
        .collect();
    Ok(cast(&(Arc::new(out) as ArrayRef), col.data_type())?)
}

pub(super) fn zip3(v: &str, restricted: &[String]) -> Option<String> {
    let t = v.trim();
    let p = t.get(..3)?;
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if restricted.iter().any(|r| r == p) {
        Some("000".into())
    } else {
        Some(p.to_string())
    }
}
