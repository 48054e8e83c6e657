//! Shared by the bench binaries: a realistic wide table and peak-memory reading.

// Each bench binary includes this file and uses part of it.
#![allow(dead_code)]

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The schema of the benchmark table: 10 columns shaped like curated observations.
pub(crate) fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("observation_id", DataType::Utf8, false),
        Field::new("code", DataType::Utf8, false),
        Field::new("value_num", DataType::Float64, true),
        Field::new("unit", DataType::Utf8, true),
        Field::new("effective_time", ts.clone(), false),
        Field::new("known_at", ts, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("flags", DataType::Int32, true),
        Field::new("abnormal", DataType::Boolean, true),
    ]))
}

/// Rows `start..start+len` of the benchmark table (deterministic).
pub(crate) fn batch(start: u64, len: usize) -> RecordBatch {
    let codes = ["718-7", "2951-2", "2160-0", "2823-3", "2345-7"];
    let units = ["g/dL", "mmol/L", "mg/dL", "mmol/L", "mg/dL"];
    let idx = |i: u64| (i.wrapping_mul(2654435761) >> 7) as usize % codes.len();
    let rows = start..start + len as u64;
    let base = 1_577_836_800_000_000i64; // 2020-01-01
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.clone().map(|i| format!("P{:07}", i / 10)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.clone().map(|i| format!("O{i:09}")),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.clone().map(|i| codes[idx(i)]),
        )),
        Arc::new(Float64Array::from_iter(rows.clone().map(|i| {
            (i % 97 != 0).then(|| 100.0 + (i % 1000) as f64 / 10.0)
        }))),
        Arc::new(StringArray::from_iter(
            rows.clone().map(|i| Some(units[idx(i)])),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.clone().map(|i| base + i as i64 * 60_000_000),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.clone()
                    .map(|i| base + i as i64 * 60_000_000 + 3_600_000_000),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter_values(rows.clone().map(|i| i as i64))),
        Arc::new(Int32Array::from_iter(
            rows.clone()
                .map(|i| (i % 13 != 0).then_some((i % 7) as i32)),
        )),
        Arc::new(BooleanArray::from_iter(rows.map(|i| Some(i % 5 == 0)))),
    ];
    RecordBatch::try_new(schema(), cols).expect("columns match the schema")
}

/// Bytes of logical data in a batch: the Arrow buffers' sizes (values, offsets, validity).
pub(crate) fn logical_bytes(b: &RecordBatch) -> usize {
    b.columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

/// This process's peak resident memory in bytes (Linux `VmHWM`), if readable.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The median of some measurements.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
