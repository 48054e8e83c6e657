//! The ingest pipeline end to end against the shared samples: every folder of
//! `../shared/data` through `pipeline::ingest`, checked through the versions read back from
//! the store (never through the parser's in-memory output), plus the raw and quarantine
//! versions, lineage, determinism, cumulative versions, `--max-bad`, input errors, the
//! curated-layout round trip and the CLI.
//!
//! Hand-checked values come from the sample files themselves (the CSV rows, the Bundle JSON,
//! the `.hl7` messages); each assertion names where.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Float64Array, LargeBinaryArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow::compute::concat_batches;
use chrono::{DateTime, Duration, Utc};
use ward::clock::{ManualClock, SharedClock};
use ward::curated::{CuratedTables, Table};
use ward::hash::ContentHash;
use ward::ingest::pipeline::{self, canonical_merge, Format, IngestOptions, IngestReport, MaxBad};
use ward::ingest::Context;
use ward::store::{Kind, ListFilter, Store, VersionRef};
use ward::synth::{self, SynthFormat, SynthOptions};

use crate::common::shared_data;

/// The ingestion time of every run here (the injected clock's reading).
fn t0() -> DateTime<Utc> {
    utc("2030-01-01T00:00:00Z")
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

/// A fresh store in `dir` whose clock stands at [`t0`], and the clock.
fn store_at(dir: &Path) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let shared: SharedClock = clock.clone();
    let store = Store::open(dir, shared).expect("store opens");
    (store, clock)
}

fn opts(format: Format) -> IngestOptions {
    IngestOptions {
        format,
        mapping: None,
        mapping_text: None,
        max_bad: None,
        context: Context::new(t0()),
        read: Default::default(),
    }
}

async fn ingest(store: &Store, paths: &[PathBuf], o: &IngestOptions) -> IngestReport {
    pipeline::ingest(store, paths, o, None)
        .await
        .unwrap_or_else(|e| panic!("ingest of {paths:?} failed: {e}"))
}

/// A stored version read back as one batch.
async fn read(store: &Store, hash: &ContentHash) -> RecordBatch {
    let (schema, batches) = store.read(hash).await.expect("version reads back");
    concat_batches(&schema, &batches).expect("batches concatenate")
}

/// The version a run wrote for `table`.
fn curated_hash(report: &IngestReport, table: &str) -> ContentHash {
    report
        .curated
        .iter()
        .find(|c| c.table == table)
        .unwrap_or_else(|| panic!("no {table} version in {:?}", report.curated))
        .hash
}

/// Rows written per table by a run (the whole new version).
fn totals(report: &IngestReport) -> BTreeMap<String, u64> {
    report
        .curated
        .iter()
        .map(|c| (c.table.clone(), c.total_rows))
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Column access by name on a read-back batch.
struct Rows<'a>(&'a RecordBatch);

impl Rows<'_> {
    fn len(&self) -> usize {
        self.0.num_rows()
    }

    fn col(&self, name: &str) -> &dyn Array {
        self.0
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .as_ref()
    }

    fn str(&self, name: &str, i: usize) -> Option<&str> {
        let a = self
            .col(name)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap_or_else(|| panic!("{name} is text"));
        a.is_valid(i).then(|| a.value(i))
    }

    fn ts(&self, name: &str, i: usize) -> Option<DateTime<Utc>> {
        let a = self
            .col(name)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap_or_else(|| panic!("{name} is a timestamp"));
        a.is_valid(i)
            .then(|| DateTime::from_timestamp_micros(a.value(i)).expect("valid time"))
    }

    fn f64(&self, name: &str, i: usize) -> Option<f64> {
        let a = self
            .col(name)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap_or_else(|| panic!("{name} is a float"));
        a.is_valid(i).then(|| a.value(i))
    }

    /// Indices of the rows where `name` equals `value`.
    fn find(&self, name: &str, value: &str) -> Vec<usize> {
        (0..self.len())
            .filter(|i| self.str(name, *i) == Some(value))
            .collect()
    }

    /// Visible at `t` as a point-in-time lookup sees it: event time, known_at, retracted_at.
    fn visible(&self, event: &str, i: usize, t: DateTime<Utc>) -> bool {
        self.ts(event, i).is_some_and(|e| e <= t)
            && self.ts("known_at", i).is_some_and(|k| k <= t)
            && self.ts("retracted_at", i).is_none_or(|r| r > t)
    }
}

/// The files of a raw version, reassembled from their chunks in chunk order.
async fn raw_files(store: &Store, raw: &ContentHash) -> BTreeMap<String, Vec<u8>> {
    let b = read(store, raw).await;
    let file = b.column(0).as_string::<i32>();
    let chunk = b
        .column(1)
        .as_any()
        .downcast_ref::<UInt32Array>()
        .expect("chunk is u32");
    let bytes = b
        .column(2)
        .as_any()
        .downcast_ref::<LargeBinaryArray>()
        .expect("bytes are binary");
    let mut pieces: BTreeMap<String, Vec<(u32, Vec<u8>)>> = BTreeMap::new();
    for i in 0..b.num_rows() {
        pieces
            .entry(file.value(i).to_string())
            .or_default()
            .push((chunk.value(i), bytes.value(i).to_vec()));
    }
    pieces
        .into_iter()
        .map(|(name, mut ps)| {
            ps.sort_by_key(|(c, _)| *c);
            let chunks: Vec<u32> = ps.iter().map(|(c, _)| *c).collect();
            assert_eq!(chunks, (0..ps.len() as u32).collect::<Vec<_>>(), "{name}");
            (name, ps.into_iter().flat_map(|(_, b)| b).collect())
        })
        .collect()
}

/// Every file of `dir` (not recursive), by name.
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("readable folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().to_string();
            (name, std::fs::read(&p).expect("readable file"))
        })
        .collect()
}

/// Checks that `raw` holds every file of `dir` byte for byte, and nothing else.
async fn assert_raw_is_verbatim(store: &Store, raw: &ContentHash, dir: &Path) {
    let m = store.manifest(raw).expect("raw manifest");
    assert_eq!(m.kind, Kind::Raw);
    let stored = raw_files(store, raw).await;
    let on_disk = files_of(dir);
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        on_disk.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &on_disk {
        assert!(stored[name] == *bytes, "{name} is not kept byte for byte");
    }
}

/// Every curated version of `report` names the raw (and its previous version, if any) as
/// inputs and the mapping's hash (if any) as definition.
fn assert_lineage(
    store: &Store,
    report: &IngestReport,
    previous: &BTreeMap<String, ContentHash>,
    definition: Option<&str>,
) {
    for c in &report.curated {
        let m = store.manifest(&c.hash).expect("curated manifest");
        assert_eq!(m.kind, Kind::Curated, "{}", c.table);
        assert_eq!(m.name, c.table);
        assert_eq!(m.rows, c.total_rows);
        let mut want: Vec<ContentHash> = previous.get(&c.table).copied().into_iter().collect();
        want.push(report.raw);
        assert_eq!(m.lineage.inputs, want, "{} inputs", c.table);
        let def = definition.map(|t| ContentHash(*blake3::hash(t.as_bytes()).as_bytes()));
        assert_eq!(m.lineage.definition, def, "{} definition", c.table);
    }
}

fn hashes(report: &IngestReport) -> BTreeMap<String, ContentHash> {
    report
        .curated
        .iter()
        .map(|c| (c.table.clone(), c.hash))
        .collect()
}

// -------------------------------------------------------------------------------------
// Every sample folder.
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn synthea_csv_through_the_pipeline() {
    let Some(dir) = shared_data("synthea-csv") else {
        return;
    };
    let csv = dir.join("csv");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_at(tmp.path());
    let report = ingest(&store, std::slice::from_ref(&csv), &opts(Format::Synthea)).await;

    // STATS.txt: 27 patients, 604 encounters (each with a provider, hence 604 care-team
    // rows), 990 observations, 438 conditions, 249 procedures, 663 medications.
    assert_eq!(
        totals(&report),
        counts(&[
            ("patients", 27),
            ("encounters", 604),
            ("observations", 990),
            ("conditions", 438),
            ("procedures", 249),
            ("medications", 663),
            ("care_team", 604),
        ])
    );
    assert!(report.quarantine.is_none(), "{:?}", report.bad);
    // 18 files, 6 mapped: the other 12 (claims, payers, ...) are skipped whole.
    assert_eq!(report.files, 18);
    assert_eq!(report.skipped.values().sum::<u64>(), 12);

    assert_raw_is_verbatim(&store, &report.raw, &csv).await;
    assert_lineage(
        &store,
        &report,
        &BTreeMap::new(),
        Some(include_str!("../../mappings/synthea.toml")),
    );

    // encounters.csv: Eugena417 Prohaska837 (61cd0a27-...) has four inpatient stays, each a
    // day long, all with provider 84871f55-....
    let enc = read(&store, &curated_hash(&report, "encounters")).await;
    let enc = Rows(&enc);
    let patient = "61cd0a27-0dc6-dab3-1432-93e5f02bf3a3";
    let mut stays: Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> = enc
        .find("patient_id", patient)
        .into_iter()
        .filter(|i| enc.str("class", *i) == Some("inpatient"))
        .map(|i| {
            (
                enc.str("encounter_id", i).expect("id").to_string(),
                enc.ts("admit_time", i).expect("admit"),
                enc.ts("discharge_time", i),
            )
        })
        .collect();
    stays.sort_by_key(|s| s.1);
    let want = [
        (
            "f1a2bec2-80b5-d7d0-f2bf-18dd46a2380d",
            "1996-07-23T01:29:06Z",
            "1996-07-24T01:29:06Z",
        ),
        (
            "30144ca3-e9be-8c3e-8501-16ce2f3e3dd5",
            "1996-12-04T01:29:06Z",
            "1996-12-05T01:29:06Z",
        ),
        (
            "751d2c56-d43f-a7bf-12d8-62277333fc96",
            "2006-09-17T01:29:06Z",
            "2006-09-18T01:29:06Z",
        ),
        (
            "68fcf120-ac75-b498-880a-ee52e694b7bb",
            "2018-11-19T01:29:06Z",
            "2018-11-20T01:29:06Z",
        ),
    ];
    assert_eq!(stays.len(), want.len());
    for (got, (id, admit, discharge)) in stays.iter().zip(want) {
        assert_eq!(got.0, id);
        assert_eq!(got.1, utc(admit));
        assert_eq!(got.2, Some(utc(discharge)));
    }
    let pat = read(&store, &curated_hash(&report, "patients")).await;
    let pat = Rows(&pat);
    let i = pat.find("patient_id", patient);
    assert_eq!(i.len(), 1);
    assert_eq!(pat.str("given_name", i[0]), Some("Eugena417"));
    assert_eq!(pat.str("sex", i[0]), Some("female"));
    assert_eq!(
        pat.ts("known_at", i[0]),
        Some(t0()),
        "Synthea has no knowledge time"
    );

    // observations.csv: hemoglobin 14.4 g/dL (LOINC 718-7) of 2023-08-05T19:09:58Z.
    let obs = read(&store, &curated_hash(&report, "observations")).await;
    let obs = Rows(&obs);
    let hb: Vec<usize> = obs
        .find("patient_id", "38ddd8f0-92c9-be23-af25-de672103903b")
        .into_iter()
        .filter(|i| obs.str("code", *i) == Some("718-7"))
        .filter(|i| obs.ts("effective_time", *i) == Some(utc("2023-08-05T19:09:58Z")))
        .collect();
    assert_eq!(hb.len(), 1);
    let hb = hb[0];
    assert_eq!(obs.str("code_system", hb), Some("LOINC"));
    assert_eq!(obs.f64("value_num", hb), Some(14.4));
    assert_eq!(obs.str("unit", hb), Some("g/dL"));
    assert_eq!(
        obs.str("encounter_id", hb),
        Some("4dc18f03-0e60-a21a-d816-8d6deef696b9")
    );
    assert_eq!(obs.str("category", hb), Some("laboratory"));
}

#[tokio::test]
async fn synthea_fhir_bundles_through_the_pipeline() {
    let Some(dir) = shared_data("synthea-fhir-r4-bundles") else {
        return;
    };
    let bundles = dir.join("R4_SYNTHEA");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_at(tmp.path());
    let report = ingest(&store, std::slice::from_ref(&bundles), &opts(Format::Fhir)).await;

    // STATS.txt resource counts; observations add 111 rows for multi-component
    // observations (blood pressure and panels: one row per component), care_team one row
    // per encounter participant (tests/it/fhir.rs checks the parser's side).
    assert_eq!(
        totals(&report),
        counts(&[
            ("patients", 20),
            ("encounters", 636),
            ("observations", 2174 + 111),
            ("conditions", 142),
            ("procedures", 346),
            ("medications", 547),
            ("care_team", 631),
            ("immunizations", 153),
            ("diagnostic_reports", 160),
            // Patient.identifier: SSN, driver's licence, passport, MRN, Synthea id (98 of
            // the 20 patients' 100 identifiers carry a system and a value).
            ("patient_identifiers", 98),
        ])
    );
    assert!(report.quarantine.is_none(), "{:?}", report.bad);
    assert_eq!(report.files, 22);
    // The raw keeps the .json.gz files as they are (compressed), byte for byte.
    assert_raw_is_verbatim(&store, &report.raw, &bundles).await;
    assert_lineage(&store, &report, &BTreeMap::new(), None);

    // Liz Conn: one inpatient stay, 2012-09-29T20:37:06Z to 2012-09-30T22:37:06Z.
    let liz = "ee9f8dd8-72d2-4769-8020-89e504b1504b";
    let enc = read(&store, &curated_hash(&report, "encounters")).await;
    let enc = Rows(&enc);
    let stays: Vec<usize> = enc
        .find("patient_id", liz)
        .into_iter()
        .filter(|i| enc.str("class", *i) == Some("inpatient"))
        .collect();
    assert_eq!(stays.len(), 1);
    let s = stays[0];
    assert_eq!(
        enc.str("encounter_id", s),
        Some("b262dced-d5e7-40e1-995b-57149e439e0d")
    );
    assert_eq!(enc.ts("admit_time", s), Some(utc("2012-09-29T20:37:06Z")));
    assert_eq!(
        enc.ts("discharge_time", s),
        Some(utc("2012-09-30T22:37:06Z"))
    );
    // source_system is the file name the parser saw: the .gz is gone with the gzip.
    assert_eq!(
        enc.str("source_system", s),
        Some("Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json")
    );

    // Her hemoglobin of 2015-08-14: 16.556943642517894 g/dL, LOINC 718-7.
    let obs = read(&store, &curated_hash(&report, "observations")).await;
    let obs = Rows(&obs);
    let hb = obs.find("observation_id", "f69df8a9-3376-4a77-bae6-708c8fbe25be");
    assert_eq!(hb.len(), 1);
    let hb = hb[0];
    assert_eq!(obs.str("patient_id", hb), Some(liz));
    assert_eq!(
        (obs.str("code_system", hb), obs.str("code", hb)),
        (Some("LOINC"), Some("718-7"))
    );
    assert_eq!(obs.f64("value_num", hb), Some(16.556943642517894));
    assert_eq!(obs.str("unit", hb), Some("g/dL"));
    assert_eq!(
        obs.ts("effective_time", hb),
        Some(utc("2015-08-14T20:37:06Z"))
    );
}

#[tokio::test]
async fn fhir_examples_through_the_pipeline_with_quarantine() {
    let Some(dir) = shared_data("fhir-r4-examples") else {
        return;
    };
    let json = dir.join("json");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_at(tmp.path());
    let report = ingest(&store, std::slice::from_ref(&json), &opts(Format::Fhir)).await;
    assert_eq!(report.files, 190);
    assert_eq!(
        totals(&report),
        counts(&[
            ("patients", 259),
            ("encounters", 3),
            ("observations", 101),
            ("conditions", 10),
            ("procedures", 10),
            ("medications", 47),
            ("care_team", 2),
            ("allergies", 6),
            ("diagnostic_reports", 18),
            // Patient.identifier and Patient.link rows of the 259 Patient versions.
            ("patient_identifiers", 260),
        ])
    );
    assert_raw_is_verbatim(&store, &report.raw, &json).await;

    // Quarantine: a version of its own, with the raw in its lineage, one row per bad
    // record, each naming file, record, field and reason.
    let q = report.quarantine.expect("the examples have bad records");
    let m = store.manifest(&q).expect("quarantine manifest");
    assert_eq!(m.kind, Kind::Quarantine);
    assert_eq!(m.name, "quarantine");
    assert_eq!(m.lineage.inputs, vec![report.raw]);
    assert_eq!(m.rows, report.bad_total());
    assert_eq!(report.bad.get("encounters/missing_field"), Some(&7));
    assert_eq!(report.bad.get("medications/dangling_reference"), Some(&1));
    let qb = read(&store, &q).await;
    let rows = Rows(&qb);
    assert_eq!(rows.len() as u64, report.bad_total());
    let record = qb
        .column_by_name("record")
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>().cloned())
        .expect("record is u64");
    for i in 0..rows.len() {
        assert!(rows.str("file", i).is_some_and(|f| !f.is_empty()));
        assert!(rows.str("reason", i).is_some_and(|r| !r.is_empty()));
        assert!(rows.str("field", i).is_some_and(|r| !r.is_empty()));
        assert!(rows.str("detail", i).is_some_and(|r| !r.is_empty()));
    }
    // medicationrequestexample2.json, entry 1: its medicationReference is not in the input.
    let med = rows.find("file", "medicationrequestexample2.json");
    assert_eq!(med.len(), 1);
    let med = med[0];
    assert_eq!(record.value(med), 1);
    assert_eq!(rows.str("table", med), Some("medications"));
    assert_eq!(
        rows.str("field", med),
        Some("MedicationRequest.medicationReference")
    );
    assert_eq!(rows.str("reason", med), Some("dangling_reference"));
    assert!(rows
        .str("detail", med)
        .is_some_and(|d| d.contains("Medication/med0316")));
    assert!(rows.str("raw", med).is_some_and(|r| r.contains("med0316")));
    // encounter-example.json has no period.start.
    let enc = rows.find("file", "encounter-example.json");
    assert_eq!(enc.len(), 1);
    assert_eq!(rows.str("field", enc[0]), Some("Encounter.period.start"));
    assert_eq!(rows.str("reason", enc[0]), Some("missing_field"));
    // Skipped resource types are counted, not quarantined; AllergyIntolerance is curated now.
    assert!(!report.skipped.is_empty());
    assert_eq!(report.skipped.get("AllergyIntolerance"), None);
}

/// The HL7 v2 sample files (one message each).
fn hl7_dir() -> Option<PathBuf> {
    shared_data("hl7v2-samples").map(|d| d.join("Hl7v2"))
}

#[tokio::test]
async fn hl7v2_samples_through_the_pipeline() {
    let Some(dir) = hl7_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_at(tmp.path());
    let report = ingest(&store, std::slice::from_ref(&dir), &opts(Format::Hl7v2)).await;
    assert_eq!(report.files, 139);
    assert_raw_is_verbatim(&store, &report.raw, &dir).await;
    assert_lineage(&store, &report, &BTreeMap::new(), None);
    // tests/it/hl7v2.rs checks these six by hand in the .hl7 files.
    assert_eq!(
        report.bad,
        counts(&[
            ("encounters/dangling_reference", 3),
            ("encounters/missing_field", 1),
            ("observations/missing_field", 1),
            ("observations/unconvertible_unit", 1),
        ])
    );
    // Unsupported message types are skipped, not bad.
    assert_eq!(report.skipped.get("SIU^S12"), Some(&3));
    assert!(report.skipped.contains_key("ADT^A09"));
    let q = read(&store, &report.quarantine.expect("quarantine")).await;
    let q = Rows(&q);
    let oru = q.find("file", "ORU-R01-01.hl7");
    assert_eq!(oru.len(), 1);
    assert_eq!(q.str("field", oru[0]), Some("OBX-3"));
    assert_eq!(q.str("reason", oru[0]), Some("missing_field"));

    // ADT-A01/A03: visit 40007716, admitted 20150208113419+0110, discharged a day later.
    let enc = read(&store, &curated_hash(&report, "encounters")).await;
    let enc = Rows(&enc);
    let stay: Vec<usize> = enc
        .find("encounter_id", "40007716^AccMng")
        .into_iter()
        .filter(|i| enc.ts("discharge_time", *i).is_some())
        .collect();
    assert!(!stay.is_empty());
    assert_eq!(enc.str("patient_id", stay[0]), Some("PATID1234"));
    assert_eq!(enc.str("class", stay[0]), Some("inpatient"));
    assert_eq!(
        enc.ts("admit_time", stay[0]),
        Some(utc("2015-02-08T10:24:19Z"))
    );
    assert_eq!(
        enc.ts("discharge_time", stay[0]),
        Some(utc("2015-02-09T10:24:19Z"))
    );

    // LRI_2.0-NG_CBC: hemoglobin, LOINC 718-7, 12.5 g/mL: a unit hemoglobin does not accept,
    // so quarantined, not curated.
    let obs = read(&store, &curated_hash(&report, "observations")).await;
    let obs = Rows(&obs);
    let hb: Vec<usize> = obs
        .find("code", "718-7")
        .into_iter()
        .filter(|i| obs.str("code_system", *i) == Some("LOINC"))
        .collect();
    assert!(hb.is_empty());
    let nist = q.find("file", "LRI_2.0-NG_CBC_Typ_Message.hl7");
    assert_eq!(nist.len(), 1);
    assert_eq!(q.str("field", nist[0]), Some("OBX-6"));
    assert_eq!(q.str("reason", nist[0]), Some("unconvertible_unit"));
}

/// `ADT-A11-01.hl7` with its MSH-7 moved to 2015-02-10, a day after the admission it
/// cancels (as shipped, both messages carry the same MSH-7).
fn later_cancel(dir: &Path) -> Vec<u8> {
    let a11 = std::fs::read(dir.join("ADT-A11-01.hl7")).expect("A11 sample");
    String::from_utf8(a11)
        .expect("utf-8 sample")
        .replacen("198908181126+0215", "20150210000000+0000", 1)
        .into_bytes()
}

#[tokio::test]
async fn a_cancelled_admission_is_gone_from_the_stored_version() {
    let Some(dir) = hl7_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).expect("mkdir");
    std::fs::copy(dir.join("ADT-A01-01.hl7"), input.join("a01.hl7")).expect("copy");
    std::fs::write(input.join("a11.hl7"), later_cancel(&dir)).expect("write");
    let (store, _) = store_at(&tmp.path().join("store"));
    let report = ingest(&store, &[input], &opts(Format::Hl7v2)).await;
    assert!(report.quarantine.is_none(), "{:?}", report.bad);
    let enc = read(&store, &curated_hash(&report, "encounters")).await;
    let enc = Rows(&enc);
    let visible = |t: &str| -> Vec<usize> {
        (0..enc.len())
            .filter(|i| enc.visible("admit_time", *i, utc(t)))
            .collect()
    };
    // Admitted 2015-02-08, visible the next day, gone once the cancel is known.
    let before = visible("2015-02-09T00:00:00Z");
    assert_eq!(before.len(), 1);
    assert_eq!(enc.str("encounter_id", before[0]), Some("40007716^AccMng"));
    assert!(visible("2015-02-10T00:00:00Z").is_empty());
    assert!(visible("2030-01-01T00:00:00Z").is_empty());
    // Retracted, not deleted: the row stays for lookups before the cancel.
    assert_eq!(
        enc.ts("retracted_at", before[0]),
        Some(utc("2015-02-10T00:00:00Z"))
    );
}

/// docs/curated-tables.md, "Runs that follow runs": an A11 arriving in a later run than its
/// A01 retracts the earlier run's row, as it does within one run (the test above): the
/// second run starts from the replay state the first left.
#[tokio::test]
async fn a_cancel_in_a_later_run_retracts_the_earlier_row() {
    let Some(dir) = hl7_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = tmp.path().join("a01.hl7");
    let second = tmp.path().join("a11.hl7");
    std::fs::copy(dir.join("ADT-A01-01.hl7"), &first).expect("copy");
    std::fs::write(&second, later_cancel(&dir)).expect("write");
    let (store, _) = store_at(&tmp.path().join("store"));
    ingest(&store, &[first], &opts(Format::Hl7v2)).await;
    let two = ingest(&store, &[second], &opts(Format::Hl7v2)).await;
    assert!(two.quarantine.is_none(), "{:?}", two.bad);
    let enc = read(&store, &curated_hash(&two, "encounters")).await;
    let enc = Rows(&enc);
    let visit = enc.find("encounter_id", "40007716^AccMng");
    assert_eq!(visit.len(), 1, "the stored row is replaced, not joined");
    assert_eq!(
        enc.ts("retracted_at", visit[0]),
        Some(utc("2015-02-10T00:00:00Z"))
    );
}

// -------------------------------------------------------------------------------------
// Versions: determinism, cumulative runs, immutability.
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn the_same_input_twice_gives_the_same_hashes() {
    let Some(dir) = hl7_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, _) = store_at(&tmp.path().join("a"));
    let (b, clock_b) = store_at(&tmp.path().join("b"));
    let paths = [dir];
    let ra = ingest(&a, &paths, &opts(Format::Hl7v2)).await;
    let rb = ingest(&b, &paths, &opts(Format::Hl7v2)).await;
    assert_eq!(ra.raw, rb.raw);
    assert_eq!(hashes(&ra), hashes(&rb));
    assert_eq!(ra.quarantine, rb.quarantine);

    // Again into the same store, later: nothing new (merging a version with itself gives
    // the same rows), and the store holds each version once.
    clock_b.advance(Duration::hours(1));
    let again = ingest(&b, &paths, &opts(Format::Hl7v2)).await;
    assert_eq!(hashes(&again), hashes(&rb));
    let curated = b
        .list(&ListFilter {
            kind: Some(Kind::Curated),
            name: None,
        })
        .expect("list");
    assert_eq!(curated.len(), rb.curated.len());
}

#[tokio::test]
async fn a_second_batch_makes_new_versions_and_keeps_the_old() {
    let Some(dir) = shared_data("synthea-fhir-r4-bundles") else {
        return;
    };
    let mut bundles: Vec<PathBuf> = std::fs::read_dir(dir.join("R4_SYNTHEA"))
        .expect("folder")
        .map(|e| e.expect("entry").path())
        .collect();
    bundles.sort();
    let (first, second) = bundles.split_at(11);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, clock) = store_at(tmp.path());
    let one = ingest(&store, first, &opts(Format::Fhir)).await;
    let one_rows: BTreeMap<String, RecordBatch> = {
        let mut m = BTreeMap::new();
        for c in &one.curated {
            m.insert(c.table.clone(), read(&store, &c.hash).await);
        }
        m
    };
    clock.advance(Duration::minutes(5));
    let two = ingest(&store, second, &opts(Format::Fhir)).await;
    assert_ne!(one.raw, two.raw);

    // Together: what one run over all 22 bundles gives (cumulative, canonical order).
    let tmp_all = tempfile::tempdir().expect("tempdir");
    let (all_store, _) = store_at(tmp_all.path());
    let all = ingest(&all_store, &bundles, &opts(Format::Fhir)).await;
    assert_eq!(hashes(&two), hashes(&all));
    assert_eq!(totals(&all)["patients"], 20);

    let prev = hashes(&one);
    assert_lineage(&store, &two, &prev, None);
    for c in &two.curated {
        assert_ne!(c.hash, prev[&c.table], "{} got a new version", c.table);
        let old = one_rows[&c.table].num_rows() as u64;
        assert_eq!(c.total_rows, old + c.parsed_rows, "{}", c.table);
        // The old version is still there, unchanged: same rows, and its hash verifies.
        assert_eq!(read(&store, &prev[&c.table]).await, one_rows[&c.table]);
        let v = store
            .verify(&prev[&c.table])
            .await
            .expect("old version verifies");
        assert_eq!(v.hash, prev[&c.table]);
        store.verify(&c.hash).await.expect("new version verifies");
        // The latest is the new one, and name@time before the second run the old one.
        let latest = store
            .resolve(&VersionRef::Latest(c.table.clone()))
            .expect("latest");
        assert_eq!(latest.hash, c.hash);
        let then = store
            .resolve(&VersionRef::AsOf(c.table.clone(), t0()))
            .expect("as of t0");
        assert_eq!(then.hash, prev[&c.table]);
    }
}

// -------------------------------------------------------------------------------------
// --max-bad and input errors.
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn max_bad_fails_the_run_but_keeps_the_quarantine() {
    let Some(dir) = shared_data("fhir-r4-examples") else {
        return;
    };
    let json = dir.join("json");
    for (limit, text) in [
        (MaxBad::Count(10), "10"),
        (MaxBad::Fraction(0.05), "0.05"),
        (MaxBad::Fraction(0.05), "5%"),
    ] {
        assert_eq!(text.parse::<MaxBad>().expect("parses"), limit);
        let tmp = tempfile::tempdir().expect("tempdir");
        let (store, _) = store_at(tmp.path());
        let mut o = opts(Format::Fhir);
        o.max_bad = Some(limit);
        let err = pipeline::ingest(&store, std::slice::from_ref(&json), &o, None)
            .await
            .expect_err("too many bad records");
        let msg = err.to_string();
        assert!(msg.contains("exceed --max-bad"), "{msg}");
        // 15 of them DiagnosticReports (tests/it/fhir.rs names them).
        assert!(msg.contains("510 bad records"), "{msg}");
        assert!(msg.contains("no curated version written"), "{msg}");
        let list = |kind| {
            store
                .list(&ListFilter {
                    kind: Some(kind),
                    name: None,
                })
                .expect("list")
        };
        assert!(list(Kind::Curated).is_empty(), "{text}: no curated version");
        let q = list(Kind::Quarantine);
        assert_eq!(q.len(), 1, "{text}: the quarantine is written");
        assert_eq!(q[0].rows, 510);
        assert!(msg.contains(&q[0].hash.to_string()), "{msg}");
        assert_eq!(list(Kind::Raw).len(), 1);
    }
    // Within the limit the run succeeds.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_at(tmp.path());
    let mut o = opts(Format::Fhir);
    o.max_bad = Some(MaxBad::Count(510));
    let r = ingest(&store, std::slice::from_ref(&json), &o).await;
    assert_eq!(r.bad_total(), 510);
    assert!(!r.curated.is_empty());
    for bad in ["-1", "1.5", "150%", "many"] {
        let err = bad.parse::<MaxBad>().expect_err("refused");
        assert!(err.to_string().contains("--max-bad"), "{err}");
    }
}

#[tokio::test]
async fn unreadable_inputs_give_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_at(&tmp.path().join("store"));

    // A path that does not exist: named in the message, nothing written.
    let missing = tmp.path().join("no-such-file.hl7");
    let err = pipeline::ingest(&store, &[missing], &opts(Format::Hl7v2), None)
        .await
        .expect_err("missing path");
    assert!(err.to_string().contains("no-such-file.hl7"), "{err}");

    // A .gz file that is not gzip.
    let gz = tmp.path().join("bundle.json.gz");
    std::fs::write(&gz, b"{\"resourceType\": \"Bundle\"} (not gzip)").expect("write");
    let err = pipeline::ingest(&store, &[gz], &opts(Format::Fhir), None)
        .await
        .expect_err("bad gzip");
    let msg = err.to_string();
    assert!(
        msg.contains("bundle.json.gz") && msg.contains("gzip"),
        "{msg}"
    );

    // An empty folder.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let err = pipeline::ingest(&store, &[empty], &opts(Format::Hl7v2), None)
        .await
        .expect_err("no files");
    assert!(err.to_string().contains("no input files"), "{err}");

    // None of it left a version behind.
    assert!(store.list(&ListFilter::default()).expect("list").is_empty());
}

#[tokio::test]
async fn csv_without_a_mapping_must_be_the_curated_layout() {
    let Some(dir) = shared_data("synthea-csv") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_at(tmp.path());
    // A Synthea export is not Ward's curated layout: `--format csv` alone refuses it.
    for format in [Format::Csv, Format::Parquet] {
        let err = pipeline::ingest(&store, &[dir.join("csv")], &opts(format), None)
            .await
            .expect_err("not the curated layout");
        let msg = err.to_string();
        assert!(msg.contains("--mapping"), "{msg}");
        assert!(msg.contains("curated layout"), "{msg}");
    }
    assert!(store.list(&ListFilter::default()).expect("list").is_empty());
    // With the Synthea mapping given explicitly, it is read (and its text is the definition).
    let text = include_str!("../../mappings/synthea.toml");
    let mut o = opts(Format::Csv);
    o.mapping = Some(ward::ingest::mapping::Mapping::from_toml(text, "synthea.toml").expect("ok"));
    o.mapping_text = Some(text.to_string());
    let r = ingest(&store, &[dir.join("csv").join("patients.csv")], &o).await;
    assert_eq!(totals(&r), counts(&[("patients", 27)]));
    assert_lineage(&store, &r, &BTreeMap::new(), Some(text));
}

// -------------------------------------------------------------------------------------
// The curated layout round trip (mappings/curated.toml).
// -------------------------------------------------------------------------------------

/// The generator's cohort as the canonical batches a cumulative version holds.
fn expected_tables(o: &SynthOptions) -> BTreeMap<Table, RecordBatch> {
    let mut all = CuratedTables::default();
    for p in synth::generate_range(o, 0..o.patients) {
        all.extend(p);
    }
    Table::ALL
        .into_iter()
        .map(|t| {
            let b = all.to_batch(t).expect("batch");
            (t, canonical_merge(&[b]).expect("merge"))
        })
        .collect()
}

/// gzips every file of `dir` in place (`x.csv` → `x.csv.gz`).
fn gzip_all(dir: &Path) {
    use std::io::Write;
    for (name, bytes) in files_of(dir) {
        let path = dir.join(&name);
        let out = std::fs::File::create(dir.join(format!("{name}.gz"))).expect("create");
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        enc.write_all(&bytes).expect("gzip");
        enc.finish().expect("gzip");
        std::fs::remove_file(path).expect("remove");
    }
}

#[tokio::test]
async fn the_curated_layout_round_trips_exactly() {
    let o = SynthOptions {
        patients: 40,
        seed: 7,
        ..SynthOptions::default()
    };
    let want = expected_tables(&o);
    // Late and corrected results make retracted rows: the round trip must carry them.
    let retracted: usize = want
        .values()
        .map(|b| {
            b.column_by_name("retracted_at").expect("col").len() - {
                b.column_by_name("retracted_at").expect("col").null_count()
            }
        })
        .sum();
    assert!(retracted > 0, "the cohort has retracted rows");

    let tmp = tempfile::tempdir().expect("tempdir");
    let mut results = Vec::new();
    for (label, synth_format, format, gz) in [
        ("parquet", SynthFormat::Parquet, Format::Parquet, false),
        ("csv", SynthFormat::Csv, Format::Csv, false),
        ("csv.gz", SynthFormat::Csv, Format::Csv, true),
    ] {
        let out = tmp.path().join(label);
        synth::write(&o, synth_format, &out, None).expect("synth writes");
        if gz {
            gzip_all(&out);
        }
        let (store, _) = store_at(&tmp.path().join(format!("store-{label}")));
        let report = ingest(&store, std::slice::from_ref(&out), &opts(format)).await;
        assert!(report.quarantine.is_none(), "{label}: {:?}", report.bad);
        assert!(report.skipped.is_empty(), "{label}: {:?}", report.skipped);
        assert_lineage(
            &store,
            &report,
            &BTreeMap::new(),
            Some(include_str!("../../mappings/curated.toml")),
        );
        // The generator makes no consent decisions; an empty table makes no version.
        for (table, batch) in want.iter().filter(|(_, b)| b.num_rows() > 0) {
            // Stored in bucket order (by patient, docs/store.md): sorted canonically again.
            let got = read(&store, &curated_hash(&report, table.name())).await;
            let got = canonical_merge(&[got]).expect("canonical order");
            assert_eq!(got.schema(), table.schema(), "{label} {}", table.name());
            assert!(
                got == *batch,
                "{label}: {} does not round trip ({} rows read, {} generated)",
                table.name(),
                got.num_rows(),
                batch.num_rows()
            );
        }
        results.push(hashes(&report));
    }
    // Parquet, CSV and gzipped CSV give the same versions.
    assert_eq!(results[0], results[1]);
    assert_eq!(results[1], results[2]);
}

#[tokio::test]
async fn curated_layout_files_may_leave_out_optional_columns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("encounters.csv");
    std::fs::write(
        &input,
        "encounter_id,patient_id,class,admit_time,discharge_time\n\
         E1,P1,IMP,2024-01-02T03:04:05Z,2024-01-05T00:00:00+01:00\n\
         E2,P1,ambulatory,2024-02-01 10:00,\n",
    )
    .expect("write");
    let (store, _) = store_at(&tmp.path().join("store"));
    let r = ingest(&store, &[input], &opts(Format::Csv)).await;
    // E2's admit time has no zone: refused, not guessed.
    assert_eq!(r.bad, counts(&[("encounters/bad_date", 1)]));
    let enc = read(&store, &curated_hash(&r, "encounters")).await;
    let enc = Rows(&enc);
    assert_eq!(enc.len(), 1);
    assert_eq!(
        enc.str("class", 0),
        Some("inpatient"),
        "the vocabulary applies"
    );
    assert_eq!(enc.ts("admit_time", 0), Some(utc("2024-01-02T03:04:05Z")));
    assert_eq!(
        enc.ts("discharge_time", 0),
        Some(utc("2024-01-04T23:00:00Z"))
    );
    assert_eq!(enc.str("service", 0), None);
    assert_eq!(enc.str("source_system", 0), Some("encounters.csv"));
    assert_eq!(enc.str("source_id", 0), Some("encounters.csv:2"));
    assert_eq!(enc.ts("known_at", 0), Some(t0()));
    assert_eq!(enc.ts("retracted_at", 0), None);
}

// -------------------------------------------------------------------------------------
// Raw chunks and the CLI.
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn a_large_file_is_kept_in_chunks_that_reassemble() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).expect("mkdir");
    std::fs::write(input.join("patients.csv"), "patient_id,sex\nP1,female\n").expect("write");
    // 17 MiB + 5 bytes of varied content: three chunks of at most 8 MiB; matches no table,
    // so it is kept and reported as skipped.
    let big: Vec<u8> = (0..(17u32 << 20) + 5)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(input.join("attachments.bin"), &big).expect("write");
    std::fs::write(input.join("empty.csv"), b"").expect("write");
    let (store, _) = store_at(&tmp.path().join("store"));
    let r = ingest(&store, std::slice::from_ref(&input), &opts(Format::Csv)).await;
    assert_eq!(r.skipped.values().sum::<u64>(), 2);
    let raw = read(&store, &r.raw).await;
    let chunks: BTreeSet<(String, u32)> = (0..raw.num_rows())
        .map(|i| {
            (
                raw.column(0).as_string::<i32>().value(i).to_string(),
                raw.column(1)
                    .as_any()
                    .downcast_ref::<UInt32Array>()
                    .expect("u32")
                    .value(i),
            )
        })
        .collect();
    assert!(chunks.contains(&("attachments.bin".into(), 2)));
    assert!(!chunks.contains(&("attachments.bin".into(), 3)));
    assert!(
        chunks.contains(&("empty.csv".into(), 0)),
        "an empty file is one empty chunk"
    );
    assert_raw_is_verbatim(&store, &r.raw, &input).await;
}

#[test]
fn the_cli_ingests_and_prints_hashes() {
    let Some(dir) = hl7_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(tmp.path().join("store"))
        .args(["ingest", "--format", "hl7v2", "--max-bad", "10"])
        .arg(&dir)
        .output()
        .expect("ward runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let last = stdout.lines().last().expect("a hash on stdout");
    assert!(last.starts_with("b3:") && last.len() == 67, "{last}");
    assert!(last.parse::<ContentHash>().is_ok(), "{last}");
    // Every stdout line is a curated hash; the summary is on stderr.
    assert!(
        stdout.lines().all(|l| l.parse::<ContentHash>().is_ok()),
        "{stdout}"
    );
    assert!(stderr.contains("ingested 139 files"), "{stderr}");
    assert!(stderr.contains("raw kept as b3:"), "{stderr}");
    assert!(stderr.contains("quarantined 6 bad records"), "{stderr}");
    assert!(stderr.contains("encounters/dangling_reference"), "{stderr}");

    // Too many bad records: non-zero exit, a message naming the limit, no hash printed.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(tmp.path().join("store2"))
        .args(["ingest", "--format", "hl7v2", "--max-bad", "2"])
        .arg(&dir)
        .output()
        .expect("ward runs");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exceed --max-bad"), "{stderr}");
}

// -------------------------------------------------------------------------------------
// The stable stand-in for cargo-fuzz (docs/fuzzing.md).
// -------------------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), so a failing soak is replayable from its
/// seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `seed`: bit flips, byte runs cut out, duplicated or overwritten with
/// separators, truncation, or pure noise.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    const SPICE: &[&[u8]] = &[
        b"|",
        b"^",
        b"~",
        b"\\",
        b"&",
        b"\r",
        b"\n",
        b"\r\n",
        b"\x0b",
        b"\x1c",
        b"\xef\xbb\xbf",
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b"null",
        b"1e999",
        b"-0",
        b"\xff\xfe",
        b"MSH|^~\\&|",
        b"\"resourceType\":\"Bundle\"",
        b"urn:uuid:",
        b"2024-02-30T25:61:61Z",
    ];
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = v.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                v.drain(a..b);
            }
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(256)).min(len);
                let piece = v[a..b].to_vec();
                let at = rng.below(len);
                v.splice(at..at, piece);
            }
            3 => {
                let s = SPICE[rng.below(SPICE.len())];
                let at = rng.below(len + 1);
                v.splice(at..at, s.iter().copied());
            }
            4 => v.truncate(rng.below(len + 1)),
            _ => v = (0..rng.below(512)).map(|_| rng.next() as u8).collect(),
        }
    }
    v
}

/// Feeds mutated copies of every sample to every parser for `WARD_SOAK_SECS` seconds
/// (default 60): no panic, every row buildable as Arrow, every bad record named. Run with
/// `cargo test --release --test it parser_soak -- --ignored --nocapture`; the proptest
/// suites of the parsers cover the same in CI at a smaller scale.
#[test]
#[ignore = "long random-input soak; run by hand (docs/fuzzing.md)"]
fn parser_soak() {
    use ward::ingest::mapping::{self, Mapping};
    use ward::ingest::{fhir, hl7v2, Input};
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut add = |kind: &'static str, dir: Option<PathBuf>| {
        let Some(dir) = dir else { return };
        for (name, bytes) in files_of(&dir) {
            let bytes = if name.ends_with(".gz") {
                use std::io::Read;
                let mut out = Vec::new();
                let _ = flate2::read::MultiGzDecoder::new(bytes.as_slice()).read_to_end(&mut out);
                out
            } else {
                bytes
            };
            // Large files slow the soak down without finding more.
            if bytes.len() <= 256 << 10 {
                seeds.push((kind, bytes));
            }
        }
    };
    add("hl7v2", hl7_dir());
    add(
        "fhir",
        shared_data("fhir-r4-examples").map(|d| d.join("json")),
    );
    add(
        "fhir",
        shared_data("synthea-fhir-r4-bundles").map(|d| d.join("R4_SYNTHEA")),
    );
    add("csv", shared_data("synthea-csv").map(|d| d.join("csv")));
    if seeds.is_empty() {
        return;
    }
    let secs: u64 = std::env::var("WARD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("WARD_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng(seed | 1);
    let ctx = Context::new(t0());
    let (synthea, curated) = (Mapping::synthea(), Mapping::curated());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut cases = 0u64;
    while std::time::Instant::now() < deadline {
        let (kind, base) = &seeds[rng.below(seeds.len())];
        let input = mutate(base, &mut rng);
        let one = [Input {
            name: "soak",
            bytes: &input,
        }];
        let outputs = match *kind {
            "hl7v2" => vec![hl7v2::parse(&one, &ctx)],
            "fhir" => {
                // The same bytes as a Bundle document and as NDJSON lines.
                vec![
                    fhir::parse(&one, fhir::Framing::Bundle, &ctx),
                    fhir::parse(&one, fhir::Framing::Ndjson, &ctx),
                ]
            }
            _ => ["patients.csv", "encounters.csv", "observations.csv"]
                .into_iter()
                .flat_map(|name| {
                    let i = [Input {
                        name,
                        bytes: &input,
                    }];
                    [
                        mapping::parse(&synthea, &i, &ctx),
                        mapping::parse(&curated, &i, &ctx),
                    ]
                })
                .collect(),
        };
        for p in outputs {
            for t in Table::ALL {
                p.tables
                    .to_batch(t)
                    .unwrap_or_else(|e| panic!("seed {seed}, case {cases}: {e}"));
            }
            for b in &p.bad {
                assert!(!b.reason.is_empty() && b.raw.len() <= 4096, "{b:?}");
            }
        }
        cases += 1;
    }
    eprintln!("parser soak: {cases} cases in {secs} s (seed {seed}), no panic");
    assert!(cases > 0);
}

/// A nightly full export without knowledge times of its own (Synthea CSV: `known_at` is the
/// ingestion time) ingested again unchanged adds nothing; before, every record was kept a
/// second time with only `known_at` differing, doubling the curated tables each night.
#[tokio::test]
async fn a_re_sent_export_adds_nothing() {
    let Some(dir) = shared_data("synthea-csv") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_at(tmp.path());
    let paths = [dir.join("csv")];
    let first = ingest(&store, &paths, &opts(Format::Synthea)).await;
    let mut later = opts(Format::Synthea);
    later.context = Context::new(t0() + Duration::days(1));
    let second = ingest(&store, &paths, &later).await;
    assert_eq!(hashes(&second), hashes(&first), "the tables did not change");
    for c in &second.curated {
        assert_eq!(
            c.unchanged_rows, c.parsed_rows,
            "{}: every row of the second run repeats its record",
            c.table
        );
    }
}

/// A record whose content changed is a new version, and so is a change back: only a row that
/// repeats its record's current version is dropped.
#[tokio::test]
async fn a_changed_record_is_a_new_version_and_a_repeat_is_not() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_at(&tmp.path().join("store"));
    let run = |day: i64, sex: &str| {
        let dir = tmp.path().join(format!("day{day}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("patients.csv"),
            format!("patient_id,sex\nP1,{sex}\nP2,female\n"),
        )
        .unwrap();
        let mut o = opts(Format::Csv);
        o.context = Context::new(t0() + Duration::days(day));
        (dir, o)
    };
    let mut totals = Vec::new();
    for (day, sex) in [
        (0, "male"),
        (1, "male"),
        (2, "female"),
        (3, "female"),
        (4, "male"),
    ] {
        let (dir, o) = run(day, sex);
        let r = ingest(&store, &[dir], &o).await;
        let p = r.curated.iter().find(|c| c.table == "patients").unwrap();
        totals.push((p.total_rows, p.unchanged_rows));
    }
    // Day 0: P1 and P2. Day 1: both repeat. Day 2: P1 changed (new version), P2 repeats.
    // Day 3: both repeat. Day 4: P1 changed back (a new version: it is not the current one).
    assert_eq!(totals, vec![(2, 0), (2, 2), (3, 1), (3, 2), (4, 1)]);
}
