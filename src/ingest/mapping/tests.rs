//! Unit tests of mappings end to end: TOML in, curated rows and quarantine out: the helpers they share; the tests by topic below.

mod exprs;
mod loading;
mod parquet_inputs;
mod rows;

use crate::ingest::test_support::inputs;
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::array::{TimestampMicrosecondArray, TimestampMillisecondArray};
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use proptest::prelude::*;

use super::*;
use crate::curated::Table;
use crate::error::Error;
use crate::ingest::{BadRecord, Context, Input, Parsed};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn ctx() -> Context {
    Context::new(utc("2030-01-01T00:00:00Z"))
}

fn run(toml: &str, files: &[(&str, &str)]) -> Parsed {
    let m = Mapping::from_toml(toml, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    let inputs = inputs(files);
    parse(&m, &inputs, &ctx())
}

fn load_err(toml: &str) -> (String, String, String) {
    match Mapping::from_toml(toml, "m.toml") {
        Err(Error::BadInput {
            location,
            field,
            reason,
        }) => (location, field, reason),
        other => panic!("expected BadInput, got {other:?}"),
    }
}

fn only_bad(p: &Parsed) -> &BadRecord {
    assert_eq!(p.bad.len(), 1, "{:#?}", p.bad);
    &p.bad[0]
}

const PATIENTS: &str = r#"
[[file]]
match = "pat*.csv"
[[file.target]]
table = "patients"
[file.target.columns]
patient_id = "id"
"#;

/// Lines at which the `csv` crate starts a record, as `read` would see them.
fn record_lines(bytes: &[u8]) -> Vec<u64> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut rec = csv::ByteRecord::new();
    let mut lines = Vec::new();
    while let Ok(true) = r.read_byte_record(&mut rec) {
        lines.push(rec.position().map(|p| p.line()).unwrap_or(0));
    }
    lines
}

/// Every record line of `input` is a row, a bad record or a skipped record.
pub(crate) fn assert_accounted(p: &Parsed, name: &str, bytes: &[u8]) {
    let mut seen = std::collections::BTreeSet::new();
    let ids = p
        .tables
        .encounters
        .iter()
        .map(|r| &r.meta)
        .chain(p.tables.patients.iter().map(|r| &r.meta))
        .chain(p.tables.care_team.iter().map(|r| &r.meta))
        .chain(p.tables.observations.iter().map(|r| &r.meta))
        .chain(p.tables.conditions.iter().map(|r| &r.meta))
        .chain(p.tables.procedures.iter().map(|r| &r.meta))
        .chain(p.tables.medications.iter().map(|r| &r.meta));
    for m in ids {
        let line = m
            .source_id
            .rsplit(':')
            .next()
            .and_then(|l| l.parse::<u64>().ok());
        seen.extend(line);
    }
    seen.extend(
        p.bad
            .iter()
            .filter(|b| b.location.file == name)
            .map(|b| b.location.record),
    );
    seen.extend(
        p.skipped
            .iter()
            .filter(|s| s.location.file == name)
            .map(|s| s.location.record),
    );
    for line in record_lines(bytes).into_iter().skip(1) {
        assert!(
            seen.contains(&line),
            "{name}: line {line} not accounted for"
        );
    }
}
