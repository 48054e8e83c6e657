//! The shape of a historical lookup over a feature set: its entity rows' keys (patient ids
//! and lookup times, checked), and the training set's schema (the entity columns, then each
//! feature's value and status). Timelines (`lookup`) and curated rows ([`super::direct`])
//! are both looked up into it.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::timeline::{FeatureInfo, Status};
use crate::error::{Error, Result};

/// Suffix of the status column of each feature in a training set.
pub const STATUS_SUFFIX: &str = "__status";

/// The patient ids and lookup times (microseconds, UTC) of entity rows, checked.
pub(crate) struct EntityKeys {
    pub(crate) patients: Vec<StringArray>,
    pub(crate) times: Vec<Vec<i64>>,
}

pub(crate) fn entity_keys(
    batches: &[RecordBatch],
    patient_col: &str,
    time_col: &str,
) -> Result<EntityKeys> {
    let mut out = EntityKeys {
        patients: Vec::with_capacity(batches.len()),
        times: Vec::with_capacity(batches.len()),
    };
    let mut row0 = 0usize;
    for b in batches {
        let names = || {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let p = b.column_by_name(patient_col).ok_or_else(|| {
            Error::invalid(
                "entity rows",
                format!("no column {patient_col:?} (columns: {})", names()),
            )
        })?;
        let t = b.column_by_name(time_col).ok_or_else(|| {
            Error::invalid(
                "entity rows",
                format!("no column {time_col:?} (columns: {})", names()),
            )
        })?;
        let p = arrow::compute::cast(p, &DataType::Utf8).map_err(|e| {
            Error::invalid(
                format!("entity column {patient_col:?}"),
                format!("cannot be read as text: {e}"),
            )
        })?;
        let p = p.as_string::<i32>().clone();
        if let Some(i) = (0..p.len()).find(|&i| p.is_null(i)) {
            return Err(Error::invalid(
                format!("entity row {}", row0 + i),
                format!("{patient_col} is null"),
            ));
        }
        out.times.push(times_us(t, time_col, row0)?);
        out.patients.push(p);
        row0 += b.num_rows();
    }
    Ok(out)
}

/// A time column as microseconds since the epoch, UTC.
fn times_us(col: &ArrayRef, name: &str, row0: usize) -> Result<Vec<i64>> {
    let null_at = |i: usize| {
        Error::invalid(
            format!("entity row {}", row0 + i),
            format!("{name} is null"),
        )
    };
    let mut out = Vec::with_capacity(col.len());
    match col.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let us = arrow::compute::cast(
                col,
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            )
            .map_err(|e| Error::invalid(format!("entity column {name:?}"), format!("{e}")))?;
            let us = us.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            for i in 0..us.len() {
                if us.is_null(i) {
                    return Err(null_at(i));
                }
                out.push(us.value(i));
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = arrow::compute::cast(col, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            for i in 0..s.len() {
                if s.is_null(i) {
                    return Err(null_at(i));
                }
                let v = s.value(i);
                let t = crate::store::manifest::parse_time(v.trim()).ok_or_else(|| {
                    Error::invalid(
                        format!("entity row {}", row0 + i),
                        format!("{name} {v:?} is not a time (use RFC 3339 or YYYY-MM-DD)"),
                    )
                })?;
                out.push(t.timestamp_micros());
            }
        }
        other => {
            return Err(Error::invalid(
                format!("entity column {name:?}"),
                format!("type {other} is not a time (use a timestamp, a date or RFC 3339 text)"),
            ))
        }
    }
    Ok(out)
}

/// [`training_schema`] of the features `infos`, in their order.
pub(crate) fn training_schema_of(
    entity: &Schema,
    infos: &[(String, FeatureInfo)],
) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = entity.fields().iter().map(|f| (**f).clone()).collect();
    for (name, info) in infos {
        let status = format!("{name}{STATUS_SUFFIX}");
        for n in [name.as_str(), status.as_str()] {
            if entity.field_with_name(n).is_ok() {
                return Err(Error::invalid(
                    format!("entity column {n:?}"),
                    "has the name of a feature (or its status) of the set; rename it",
                ));
            }
        }
        let dt = if info.is_text {
            DataType::Utf8
        } else {
            DataType::Float64
        };
        fields.push(Field::new(name, dt, true));
        fields.push(Field::new(status, DataType::Utf8, false));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The text of a status, as training sets and the CLI write it.
pub fn status_str(s: Status) -> &'static str {
    match s {
        Status::Present => "present",
        Status::NoData => "no_data",
        Status::OutsideTtl => "outside_ttl",
    }
}

/// The schema the entity batches share.
pub(crate) fn entity_schema(entities: &[RecordBatch]) -> Result<SchemaRef> {
    let schema = match entities.first() {
        Some(b) => b.schema(),
        None => {
            return Err(Error::invalid(
                "entity rows",
                "no batches (not even an empty one)",
            ));
        }
    };
    if let Some(b) = entities.iter().find(|b| b.schema() != schema) {
        return Err(Error::invalid(
            "entity rows",
            format!(
                "batches have different schemas: {} vs {}",
                schema,
                b.schema()
            ),
        ));
    }
    Ok(schema)
}
