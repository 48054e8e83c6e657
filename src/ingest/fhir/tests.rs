//! Tests of FHIR ingest: the helpers they share; the tests by topic below.

mod clinical;
mod ndjson;
mod resources;

use crate::ingest::test_support::inputs;
use arrow::error::ArrowError;
use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};

use super::framing::LINES_PER_TASK;
use super::index::{conditional_reference, percent_decode};
use super::resolve::{literal_reference, Target};
use super::scan::{self, scan_head, IdOnly};
use super::time::{parse_date, parse_instant};
use super::{parse, parse_batches, Framing};
use crate::curated::{Observation, Table};
use crate::ingest::{Context, Input, Location, Parsed, ParsedBatches};

use proptest::prelude::*;
use serde_json::{json, Value};

fn ctx() -> Context {
    Context::new(utc(2024, 1, 1, 0, 0, 0))
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid test time")
}

fn bundles(docs: &[(&str, Value)]) -> Parsed {
    let texts: Vec<(String, String)> = docs
        .iter()
        .map(|(name, v)| (name.to_string(), v.to_string()))
        .collect();
    let inputs = inputs(&texts);
    both_paths(
        parse(&inputs, Framing::Bundle, &ctx()),
        parse_batches(&inputs, Framing::Bundle, &ctx()),
    )
}

/// The row path's result, after checking that the column path gives the same batches,
/// bad records and skipped records.
fn both_paths(rows: Parsed, columns: Result<ParsedBatches, ArrowError>) -> Parsed {
    let expected = rows.clone().into_batches().expect("row path");
    assert!(
        expected == columns.expect("column path"),
        "the column path differs from the row path"
    );
    rows
}

fn one_bundle(entries: Value) -> Parsed {
    bundles(&[(
        "b.json",
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
    )])
}

fn ndjson(files: &[(&str, &str)]) -> Parsed {
    let inputs = inputs(files);
    both_paths(
        parse(&inputs, Framing::Ndjson, &ctx()),
        parse_batches(&inputs, Framing::Ndjson, &ctx()),
    )
}

fn patient_entry() -> Value {
    json!({"fullUrl": "urn:uuid:p-1", "resource": {
        "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-05",
        "name": [{"use": "nickname", "given": ["Jo"]},
                 {"use": "official", "family": "Doe", "given": ["Jane", "Q"]}],
        "address": [{"use": "work", "postalCode": "99999"}, {"use": "home", "postalCode": "02115"}],
        "deceasedDateTime": "2020-02-03T04:05:06Z"}})
}

fn sample() -> String {
    json!({"resourceType": "Bundle", "type": "collection", "timestamp": "2020-01-01T00:00:00Z",
        "entry": [
            patient_entry(),
            {"fullUrl": "urn:uuid:e", "resource": {"resourceType": "Encounter", "id": "e",
                "class": {"code": "EMER"}, "subject": {"reference": "urn:uuid:p-1"},
                "period": {"start": "2019-12-31T23:00:00-05:00"}}},
            {"resource": {"resourceType": "Observation", "id": "o",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2947-0"}]},
                "subject": {"reference": "urn:uuid:p-1"}, "encounter": {"reference": "urn:uuid:e"},
                "effectiveDateTime": "2020-01-01T01:00:00Z", "valueQuantity": {"value": 140, "unit": "mmol/L"}}},
            {"resource": {"resourceType": "Claim", "id": "cl"}}
        ]})
    .to_string()
}

/// Every NDJSON line (or, for a Bundle, every entry) ends up as rows, a bad record or a
/// skipped record: `(rows' source ids, bad locations, skipped locations)`.
fn accounted(parsed: &Parsed) -> usize {
    let t = &parsed.tables;
    let mut ids: Vec<&str> = t
        .patients
        .iter()
        .map(|r| r.meta.source_id.as_str())
        .chain(t.encounters.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.observations.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.conditions.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.procedures.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.medications.iter().map(|r| r.meta.source_id.as_str()))
        .collect();
    ids.dedup();
    let mut bad: Vec<&Location> = parsed
        .bad
        .iter()
        .filter(|b| b.table != Some(Table::CareTeam))
        .map(|b| &b.location)
        .collect();
    bad.dedup();
    ids.len() + bad.len() + parsed.skipped.len()
}
