//! `ward ingest` of what exports hold beyond the first seven resource types: a FHIR Bundle
//! (DiagnosticReport, AllergyIntolerance, Immunization), Bulk NDJSON (MedicationAdministration,
//! Immunization) and HL7 v2 ADT messages with DG1 and PR1, all written by hand after the
//! published specs (tests/fixtures/resources/), into one store; the curated rows read back,
//! and Charlson reads the DG1 diagnoses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use ward::clock::ManualClock;
use ward::curated::Table;
use ward::scores::charlson;
use ward::store::Store;

use crate::common::crate_dir;

fn fixtures() -> PathBuf {
    crate_dir().join("tests/fixtures/resources")
}

fn ingest(store: &Path, format: &str, paths: &[PathBuf]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(store)
        .args(["ingest", "--format", format, "--max-bad", "0"])
        .args(paths)
        .output()
        .expect("ward runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ward ingest --format {format}: {stderr}"
    );
}

/// The rows of the head version of `table`, each column as text (null: `None`).
struct Rows(RecordBatch);

impl Rows {
    async fn of(store: &Store, table: Table) -> Rows {
        let head = store
            .head(table.name())
            .expect("head reads")
            .unwrap_or_else(|| panic!("no {} version", table.name()));
        let (schema, batches) = store.read(&head.hash).await.expect("version reads");
        Rows(arrow::compute::concat_batches(&schema, &batches).expect("one batch"))
    }

    fn len(&self) -> usize {
        self.0.num_rows()
    }

    fn col(&self, name: &str) -> Vec<Option<String>> {
        let col = self
            .0
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"));
        let text = cast(col, &DataType::Utf8).expect("as text");
        let text = text.as_string::<i32>();
        (0..text.len())
            .map(|i| text.is_valid(i).then(|| text.value(i).to_string()))
            .collect()
    }

    fn one(&self, name: &str) -> Option<String> {
        assert_eq!(self.len(), 1, "one row expected");
        self.col(name).remove(0)
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[tokio::test]
async fn bundle_ndjson_and_adt_with_dg1_pr1_through_ward_ingest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("store");
    let f = fixtures();
    ingest(&root, "fhir", &[f.join("bundle.json")]);
    ingest(
        &root,
        "fhir-ndjson",
        &[
            f.join("Immunization.ndjson"),
            f.join("MedicationAdministration.ndjson"),
        ],
    );
    ingest(&root, "hl7v2", &[f.join("adt.hl7")]);
    let clock = Arc::new(ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap()));
    let store = Store::open_existing(&root, clock).expect("store opens");
    let patient = "0a1b2c3d-0000-4000-8000-000000000001";
    let encounter = "0a1b2c3d-0000-4000-8000-0000000000e1";

    let r = Rows::of(&store, Table::DiagnosticReports).await;
    assert_eq!(r.one("patient_id"), s(patient));
    assert_eq!(r.one("encounter_id"), s(encounter));
    assert_eq!(r.one("category"), s("LAB"));
    assert_eq!(
        (r.one("code_system"), r.one("code")),
        (s("LOINC"), s("51990-0"))
    );
    assert_eq!(r.one("effective_time"), s("2021-03-01T09:00:00Z"));
    assert_eq!(r.one("issued_time"), s("2021-03-01T11:30:00Z"));
    assert_eq!(r.one("status"), s("final"));
    assert_eq!(
        r.one("result_ids"),
        s("0a1b2c3d-0000-4000-8000-0000000000b1")
    );
    assert_eq!(r.one("known_at"), s("2021-03-06T00:00:00Z"));

    let a = Rows::of(&store, Table::Allergies).await;
    assert_eq!(a.one("patient_id"), s(patient));
    assert_eq!(
        (a.one("code_system"), a.one("code")),
        (s("SNOMED"), s("91936005"))
    );
    assert_eq!(a.one("category"), s("medication"));
    assert_eq!(a.one("criticality"), s("high"));
    assert_eq!(a.one("clinical_status"), s("active"));
    assert_eq!(a.one("verification_status"), s("confirmed"));
    assert_eq!(a.one("onset_time"), s("2021-03-01T08:30:00Z"));

    // One immunization from the Bundle, then one from NDJSON (each run's rows after the
    // earlier runs').
    let i = Rows::of(&store, Table::Immunizations).await;
    assert_eq!(i.len(), 2);
    assert_eq!(i.col("code"), [s("140"), s("33")]);
    assert_eq!(i.col("code_system"), [s("CVX"), s("CVX")]);
    assert_eq!(
        i.col("occurrence_time"),
        [s("2021-03-04T10:00:00Z"), s("2019-10-01T00:00:00Z")]
    );
    assert_eq!(i.col("encounter_id"), [s(encounter), None]);
    assert_eq!(
        i.col("known_at"),
        [s("2021-03-06T00:00:00Z"), s("2019-10-01T12:00:00Z")]
    );

    // The not-done administration is not a row.
    let m = Rows::of(&store, Table::MedicationAdministrations).await;
    assert_eq!(m.one("administration_id"), s("ma-1"));
    assert_eq!(m.one("encounter_id"), s(encounter));
    assert_eq!(
        (m.one("code_system"), m.one("code")),
        (s("RXNORM"), s("1719286"))
    );
    assert_eq!(m.one("start_time"), s("2021-03-01T10:00:00Z"));
    assert_eq!(m.one("status"), s("completed"));
    assert_eq!(m.one("dose_value"), s("40.0"));
    assert_eq!(m.one("dose_unit"), s("mg"));
    assert_eq!(m.one("route"), s("Intravenous route"));
    assert_eq!(m.one("known_at"), s("2021-03-01T10:05:00Z"));
    assert!(
        store.head(Table::Medications.name()).unwrap().is_none(),
        "administrations are not orders"
    );

    // DG1: the A03 repeats the A01's diagnosis (no second row) and adds one; PR1 likewise.
    let c = Rows::of(&store, Table::Conditions).await;
    assert_eq!(c.len(), 2);
    // In the store's order (by record id).
    assert_eq!(
        c.col("condition_id"),
        [s("V4242^HOSP/25000"), s("V4242^HOSP/I50.9")]
    );
    assert_eq!(c.col("patient_id"), [s("MRN4242"), s("MRN4242")]);
    assert_eq!(c.col("encounter_id"), [s("V4242^HOSP"), s("V4242^HOSP")]);
    assert_eq!(c.col("code_system"), [s("ICD9CM"), s("ICD10CM")]);
    assert_eq!(c.col("code"), [s("25000"), s("I50.9")]);
    assert_eq!(
        c.col("onset_time"),
        [s("2021-03-02T09:00:00Z"), s("2021-03-01T08:30:00Z")]
    );
    // Each known from the message that first sent it (the A03's repeat added nothing).
    assert_eq!(
        c.col("known_at"),
        [s("2021-03-05T12:10:00Z"), s("2021-03-01T08:05:00Z")]
    );
    assert_eq!(c.col("retracted_at"), [None, None]);
    let p = Rows::of(&store, Table::Procedures).await;
    assert_eq!(p.one("code"), s("5A1955Z"));
    assert_eq!(p.one("encounter_id"), s("V4242^HOSP"));
    assert_eq!(p.one("performed_time"), s("2021-03-02T10:00:00Z"));
    assert_eq!(p.one("performed_end"), s("2021-03-02T10:30:00Z"));

    // Charlson reads the diagnoses as curated: heart failure (ICD-10-CM) and diabetes
    // without complications (ICD-9-CM), 1 point each.
    let systems = c.col("code_system");
    let codes = c.col("code");
    let pairs: Vec<(&str, &str)> = systems
        .iter()
        .zip(&codes)
        .filter_map(|(s, c)| Some((s.as_deref()?, c.as_deref()?)))
        .collect();
    let score = charlson::charlson(pairs);
    assert!(score.contains(charlson::CharlsonCategory::CongestiveHeartFailure));
    assert!(score.contains(charlson::CharlsonCategory::DiabetesWithoutComplications));
    assert_eq!(score.index(), 2);
}
