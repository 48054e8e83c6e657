//! Reading the two Parquet inputs: the entity rows, the feature rows' key columns a batch at
//! a time, and the feature columns of the winning rows; each error names the file, the
//! column and the row.

use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, UInt32Array};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, Schema, TimeUnit, TimestampMicrosecondType};
use parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::ProjectionMask;

use super::{AsofColumns, Stopwatch};
use crate::error::{Error, Result};

/// Reads the entity rows' patient ids (one array per batch) and times.
pub(super) fn read_entities(
    entities: &Path,
    cols: &AsofColumns,
) -> Result<(Vec<StringArray>, Vec<i64>)> {
    let eb = open_builder(entities)?;
    let eschema = eb.schema().clone();
    let pi = column_index(&eschema, &cols.patient, entities)?;
    let ti = column_index(&eschema, &cols.time, entities)?;
    let mask = ProjectionMask::roots(eb.parquet_schema(), [pi, ti]);
    let reader = eb
        .with_projection(mask)
        .with_batch_size(1 << 20)
        .build()
        .map_err(parquet_err(entities))?;
    let mut pid_parts: Vec<StringArray> = Vec::new();
    let mut times: Vec<i64> = Vec::new();
    for b in reader {
        let b = b?;
        let row0 = times.len() as u64;
        pid_parts.push(patient_ids(
            projected(&b, &cols.patient)?,
            entities,
            &cols.patient,
            row0,
        )?);
        times.extend_from_slice(&micros(
            projected(&b, &cols.time)?,
            entities,
            &cols.time,
            row0,
        )?);
    }
    Ok((pid_parts, times))
}

pub(super) fn parquet_err(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::Parquet {
        path: path.to_path_buf(),
        source: e,
    }
}

pub(super) fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(f).map_err(parquet_err(path))
}

pub(super) fn column_index(schema: &Schema, name: &str, path: &Path) -> Result<usize> {
    schema.index_of(name).map_err(|_| Error::BadInput {
        location: path.display().to_string(),
        field: name.to_string(),
        reason: format!(
            "no such column (columns: {})",
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// A timestamp column as microseconds (UTC), refusing nulls; the column's own buffer when
/// it is in microseconds already (no copy).
pub(super) fn micros(
    col: &ArrayRef,
    path: &Path,
    field: &str,
    row0: u64,
) -> Result<ScalarBuffer<i64>> {
    let us = match col.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => col.clone(),
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => arrow::compute::cast(
            col,
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )?,
        other => {
            return Err(Error::BadInput {
                location: path.display().to_string(),
                field: field.to_string(),
                reason: format!("type {other} is not a timestamp"),
            })
        }
    };
    let us = us.as_primitive::<TimestampMicrosecondType>();
    refuse_nulls(us, path, field, row0)?;
    Ok(us.values().clone())
}

/// An error naming the file row of the first null of `col` (whose first row is file row
/// `row0`), if it has one.
pub(super) fn refuse_nulls(col: &dyn Array, path: &Path, field: &str, row0: u64) -> Result<()> {
    if col.null_count() == 0 {
        return Ok(());
    }
    let i = (0..col.len()).find(|&i| col.is_null(i)).unwrap_or(0);
    Err(Error::BadInput {
        location: format!("{} row {}", path.display(), row0 + i as u64),
        field: field.to_string(),
        reason: "null".into(),
    })
}

/// A column of a batch read with a projection that includes it.
pub(super) fn projected<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("projection lost column {name}")))
}

/// A patient id column as text; `row0` is the file row of its first row (for the error
/// naming a null id).
pub(super) fn patient_ids(
    col: &ArrayRef,
    path: &Path,
    field: &str,
    row0: u64,
) -> Result<StringArray> {
    refuse_nulls(col.as_ref(), path, field, row0)?;
    let s = arrow::compute::cast(col, &DataType::Utf8).map_err(|e| Error::BadInput {
        location: path.display().to_string(),
        field: field.to_string(),
        reason: format!("cannot be read as text: {e}"),
    })?;
    Ok(s.as_string::<i32>().clone())
}

/// Runs `reader` to its end a batch at a time: `decode` turns each batch into what `each`
/// takes, and `each` handles it before the next batch is decoded (so one decoded batch per
/// task is alive, its memory reused by the next). Returns the seconds spent decoding (in the
/// reader and in `decode`) and the seconds in `each`.
pub(super) fn timed_batches<T>(
    mut reader: ParquetRecordBatchReader,
    sw: &dyn Stopwatch,
    mut decode: impl FnMut(RecordBatch) -> Result<T>,
    mut each: impl FnMut(T) -> Result<()>,
) -> Result<(f64, f64)> {
    let (mut decode_s, mut each_s) = (0.0, 0.0);
    loop {
        let t = sw.seconds();
        let Some(batch) = reader.next().transpose()? else {
            return Ok((decode_s + sw.seconds() - t, each_s));
        };
        let item = decode(batch)?;
        decode_s += sw.seconds() - t;
        let t = sw.seconds();
        each(item)?;
        each_s += sw.seconds() - t;
    }
}

/// One decoded batch of a feature row group's key columns.
pub(super) struct KeyBatch {
    /// The file row of its first row.
    pub(super) row: u64,
    pub(super) patients: StringArray,
    pub(super) events: ScalarBuffer<i64>,
    pub(super) created: ScalarBuffer<i64>,
}

/// Decodes the key columns (`[patient, event time, created time]` at `key_cols`) of row
/// group `g` of `features`, whose first row is file row `row0`, a batch at a time, and hands
/// each batch to `each` before decoding the next (so that one batch per task is alive, its
/// memory reused by the next). Returns the seconds spent decoding and the seconds in `each`.
pub(super) fn each_key_batch(
    features: &Path,
    g: usize,
    row0: u64,
    key_cols: [usize; 3],
    cols: &AsofColumns,
    sw: &dyn Stopwatch,
    mut each: impl FnMut(KeyBatch),
) -> Result<(f64, f64)> {
    let t = sw.seconds();
    let b = open_builder(features)?;
    let mask = ProjectionMask::roots(b.parquet_schema(), key_cols);
    let reader = b
        .with_row_groups(vec![g])
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(parquet_err(features))?;
    let open_s = sw.seconds() - t;
    let mut row = row0;
    let decode = |batch: RecordBatch| -> Result<KeyBatch> {
        let patients = patient_ids(
            projected(&batch, &cols.patient)?,
            features,
            &cols.patient,
            row,
        )?;
        let events = micros(projected(&batch, &cols.time)?, features, &cols.time, row)?;
        let created = micros(
            projected(&batch, &cols.created)?,
            features,
            &cols.created,
            row,
        )?;
        let kb = KeyBatch {
            row,
            patients,
            events,
            created,
        };
        row += batch.num_rows() as u64;
        Ok(kb)
    };
    let (decode_s, each_s) = timed_batches(reader, sw, decode, |kb| {
        each(kb);
        Ok(())
    })?;
    Ok((open_s + decode_s, each_s))
}

/// The winners of one row group: their feature columns, and the seconds spent decoding and
/// taking them.
pub(super) struct Winners {
    pub(super) batches: Vec<RecordBatch>,
    pub(super) decode_s: f64,
    pub(super) take_s: f64,
}

/// Decodes the feature columns `value_cols` of row group `g` of `features` (`group_len`
/// rows) and keeps the winning rows `rows` (local to the group, sorted, distinct), in row
/// order. Where winners are dense, whole pages are decoded a batch at a time and each batch
/// is cut down to its winners at once, so that no more than one decoded batch per task is
/// alive (and its memory is reused by the next). Where they are sparse, a Parquet row
/// selection decodes the winners alone.
pub(super) fn read_winners(
    features: &Path,
    g: usize,
    group_len: u64,
    rows: &[u64],
    value_cols: &[usize],
    sw: &dyn Stopwatch,
) -> Result<Winners> {
    let t = sw.seconds();
    let b = open_builder(features)?;
    let mask = ProjectionMask::roots(b.parquet_schema(), value_cols.iter().copied());
    let b = b.with_row_groups(vec![g]).with_projection(mask);
    // Winners denser than one row in DENSE: decoding whole pages and keeping the winners is
    // cheaper than skipping between them (every page is read anyway).
    pub(super) const DENSE: u64 = 64;
    if rows.len() as u64 * DENSE >= group_len {
        let reader = b
            .with_batch_size(65_536)
            .build()
            .map_err(parquet_err(features))?;
        let open_s = sw.seconds() - t;
        let mut out = Vec::new();
        let (mut start, mut k) = (0u64, 0usize);
        let (decode_s, take_s) = timed_batches(reader, sw, Ok, |batch| {
            let end = start + batch.num_rows() as u64;
            let from = k;
            while k < rows.len() && rows[k] < end {
                k += 1;
            }
            let idx =
                UInt32Array::from_iter_values(rows[from..k].iter().map(|&r| (r - start) as u32));
            out.push(arrow::compute::take_record_batch(&batch, &idx)?);
            start = end;
            Ok(())
        })?;
        let decode_s = open_s + decode_s;
        return Ok(Winners {
            batches: out,
            decode_s,
            take_s,
        });
    }
    let mut selectors = Vec::new();
    let mut at = 0u64;
    for &r in rows {
        if r > at {
            selectors.push(RowSelector::skip((r - at) as usize));
        }
        selectors.push(RowSelector::select(1));
        at = r + 1;
    }
    let batches = b
        .with_row_selection(RowSelection::from(selectors))
        .with_batch_size(1 << 20)
        .build()
        .map_err(parquet_err(features))?
        .collect::<std::result::Result<_, _>>()?;
    Ok(Winners {
        batches,
        decode_s: sw.seconds() - t,
        take_s: 0.0,
    })
}
