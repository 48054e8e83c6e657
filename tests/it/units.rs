//! Lab units through the whole ingest (`ward::curated::units`): an HL7 v2 ORU, a FHIR Bulk
//! NDJSON export and a CSV in the curated layout, each with glucose in mmol/L and in mg/dL,
//! give equal canonical values in mg/dL with the value and unit as sent kept beside them; a
//! unit that cannot be converted for its code is quarantined naming the code, the unit, the
//! accepted units and where it was.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::DataType;
use ward::clock::ManualClock;
use ward::curated::Table;
use ward::ingest::pipeline::{self, Format, IngestOptions, IngestReport};
use ward::ingest::Context;
use ward::store::Store;

const NOW: &str = "2026-06-01T00:00:00Z";

fn store(dir: &Path) -> Store {
    let clock = Arc::new(ManualClock::new(NOW.parse().unwrap()));
    Store::open(dir.join("store"), clock).expect("store opens")
}

async fn ingest(store: &Store, dir: &Path, name: &str, body: &str, format: Format) -> IngestReport {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("fixture written");
    let opts = IngestOptions {
        format,
        mapping: None,
        mapping_text: None,
        max_bad: None,
        context: Context::new(NOW.parse().unwrap()),
        read: Default::default(),
    };
    pipeline::ingest(store, &[path], &opts, None)
        .await
        .expect("ingest runs")
}

async fn head(store: &Store, name: &str) -> RecordBatch {
    let head = store
        .head(name)
        .expect("head reads")
        .unwrap_or_else(|| panic!("no {name} version"));
    let (schema, batches) = store.read(&head.hash).await.expect("version reads");
    concat_batches(&schema, &batches).expect("one batch")
}

/// Column `name` of `b` as text, by row.
fn col(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let t = cast(c, &DataType::Utf8).expect("as text");
    let t = t.as_string::<i32>();
    (0..t.len())
        .map(|i| t.is_valid(i).then(|| t.value(i).to_string()))
        .collect()
}

/// `(observation_id, code, value_num, unit, value_original, unit_original)` of every row,
/// sorted by id.
fn observations(b: &RecordBatch) -> Vec<[Option<String>; 6]> {
    let cols: Vec<_> = [
        "observation_id",
        "code",
        "value_num",
        "unit",
        "value_original",
        "unit_original",
    ]
    .iter()
    .map(|n| col(b, n))
    .collect();
    let mut rows: Vec<[Option<String>; 6]> = (0..b.num_rows())
        .map(|i| std::array::from_fn(|c| cols[c][i].clone()))
        .collect();
    rows.sort();
    rows
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// The one quarantined record: `(file, record, table, field, reason, detail)`.
fn only_quarantined(b: &RecordBatch) -> [Option<String>; 6] {
    assert_eq!(b.num_rows(), 1, "one quarantined record");
    let cols: Vec<_> = ["file", "record", "table", "field", "reason", "detail"]
        .iter()
        .map(|n| col(b, n).remove(0))
        .collect();
    std::array::from_fn(|c| cols[c].clone())
}

#[track_caller]
fn assert_sodium_refused(q: [Option<String>; 6], file: &str, record: &str, field: &str) {
    assert_eq!(q[0].as_deref(), Some(file));
    assert_eq!(q[1].as_deref(), Some(record));
    assert_eq!(q[2].as_deref(), Some("observations"));
    assert_eq!(q[3].as_deref(), Some(field));
    assert_eq!(q[4].as_deref(), Some("unconvertible_unit"));
    assert_eq!(
        q[5].as_deref(),
        Some(
            "unit \"mg/dL\" cannot be converted for LOINC 2951-2 (sodium): accepted units are \
             mmol/L, mEq/L"
        )
    );
}

#[tokio::test]
async fn hl7v2_oru_glucose_in_mmol_l_and_mg_dl_and_a_refused_sodium() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store(tmp.path());
    let oru = [
        "MSH|^~\\&|LAB|HOSP|||20240101120000+0000||ORU^R01|C1|P|2.5",
        "PID|1||P1^^^HOSP^MR||Doe^Jane||19800101|F",
        "OBR|1|PL1|FI1|24323-8^CMP^LN|||20240101110000+0000",
        "OBX|1|NM|2345-7^Glucose^LN|1|5|mmol/L|||||F",
        "OBX|2|NM|2345-7^Glucose^LN|2|90.08|mg/dL|||||F",
        "OBX|3|NM|2160-0^Creatinine^LN||88.42|umol/L|||||F",
        "OBX|4|NM|2951-2^Sodium^LN||140|mg/dL|||||F",
        "OBX|5|NM|8867-4^Heart rate^LN||72|/min|||||F",
    ]
    .join("\r");
    let report = ingest(&store, tmp.path(), "labs.hl7", &oru, Format::Hl7v2).await;
    assert_eq!(
        report.bad.get("observations/unconvertible_unit"),
        Some(&1),
        "{:?}",
        report.bad
    );
    let obs = observations(&head(&store, Table::Observations.name()).await);
    assert_eq!(
        obs,
        vec![
            [
                s("FI1-2160-0"),
                s("2160-0"),
                s("1.0"),
                s("mg/dL"),
                s("88.42"),
                s("umol/L")
            ],
            [
                s("FI1-2345-7-1"),
                s("2345-7"),
                s("90.08"),
                s("mg/dL"),
                s("5.0"),
                s("mmol/L")
            ],
            [
                s("FI1-2345-7-2"),
                s("2345-7"),
                s("90.08"),
                s("mg/dL"),
                None,
                None
            ],
            [
                s("FI1-8867-4"),
                s("8867-4"),
                s("72.0"),
                s("/min"),
                None,
                None
            ],
        ]
    );
    // The sodium in mg/dL: quarantined at its OBX segment (line 7 of the file), OBX-6.
    let q = only_quarantined(&head(&store, "quarantine").await);
    assert_sodium_refused(q, "labs.hl7", "7", "OBX-6");
}

#[tokio::test]
async fn fhir_ndjson_glucose_in_mmol_l_and_mg_dl_and_a_refused_sodium() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store(tmp.path());
    let obs = |id: &str, code: &str, value: f64, unit: &str| {
        format!(
            r#"{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"{code}"}}]}},"subject":{{"reference":"Patient/p1"}},"effectiveDateTime":"2024-01-01T11:00:00Z","valueQuantity":{{"value":{value},"unit":"{unit}","system":"http://unitsofmeasure.org"}}}}"#
        )
    };
    let lines = [
        r#"{"resourceType":"Patient","id":"p1","gender":"female","birthDate":"1980-01-01"}"#
            .to_string(),
        obs("g1", "2345-7", 5.0, "mmol/L"),
        obs("g2", "2345-7", 90.08, "mg/dL"),
        obs("hb", "718-7", 135.0, "g/L"),
        obs("na", "2951-2", 140.0, "mg/dL"),
    ]
    .join("\n");
    let report = ingest(
        &store,
        tmp.path(),
        "export.ndjson",
        &lines,
        Format::FhirNdjson,
    )
    .await;
    assert_eq!(report.bad_total(), 1, "{:?}", report.bad);
    let obs = observations(&head(&store, Table::Observations.name()).await);
    assert_eq!(
        obs,
        vec![
            [
                s("g1"),
                s("2345-7"),
                s("90.08"),
                s("mg/dL"),
                s("5.0"),
                s("mmol/L")
            ],
            [s("g2"), s("2345-7"), s("90.08"), s("mg/dL"), None, None],
            [
                s("hb"),
                s("718-7"),
                s("13.5"),
                s("g/dL"),
                s("135.0"),
                s("g/L")
            ],
        ]
    );
    let q = only_quarantined(&head(&store, "quarantine").await);
    assert_sodium_refused(q, "export.ndjson", "5", "Observation.valueQuantity.unit");
}

#[tokio::test]
async fn curated_csv_converts_and_keeps_the_originals_it_is_given() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store(tmp.path());
    // o1 as a source sends it; o2 as Ward exports o1 (already converted, with its originals):
    // both read back the same.
    let csv = "observation_id,patient_id,code_system,code,value_num,unit,value_original,\
               unit_original,effective_time\n\
               o1,p1,LOINC,2345-7,5,mmol/L,,,2024-01-01T11:00:00Z\n\
               o2,p1,LOINC,2345-7,90.08,mg/dL,5,mmol/L,2024-01-01T11:00:00Z\n\
               o3,p1,LOINC,2951-2,140,mg/dL,,,2024-01-01T11:00:00Z\n";
    let report = ingest(&store, tmp.path(), "observations.csv", csv, Format::Csv).await;
    assert_eq!(report.bad_total(), 1, "{:?}", report.bad);
    let obs = observations(&head(&store, Table::Observations.name()).await);
    assert_eq!(
        obs,
        vec![
            [
                s("o1"),
                s("2345-7"),
                s("90.08"),
                s("mg/dL"),
                s("5.0"),
                s("mmol/L")
            ],
            [
                s("o2"),
                s("2345-7"),
                s("90.08"),
                s("mg/dL"),
                s("5.0"),
                s("mmol/L")
            ],
        ]
    );
    let q = only_quarantined(&head(&store, "quarantine").await);
    assert_sodium_refused(q, "observations.csv", "4", "unit");
}
