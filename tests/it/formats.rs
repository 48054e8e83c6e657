//! The same synthetic cohort through every format gives the same curated tables.
//!
//! One cohort (fixed seed) is written by `ward synth` in every format, each copy is ingested
//! through `pipeline::ingest` into its own store, and every curated version read back is
//! compared with the generator's own rows (`generate_range`), by content hash, on the
//! projection of columns and rows the format can carry (docs/synth.md, "What each format
//! cannot carry"). Parquet and CSV in Ward's curated layout carry everything: their curated
//! versions must have exactly the hash of the generator's tables after the pipeline's
//! canonical order. On a mismatch the test prints the rows only one side has.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{Schema, TimestampMicrosecondType};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, Utc};
use ward::clock::ManualClock;
use ward::curated::{CuratedTables, Table};
use ward::hash::ContentHash;
use ward::ingest::pipeline::{self, Format, IngestOptions, IngestReport};
use ward::ingest::Context;
use ward::store::{Store, VersionRef};
use ward::synth::{self, SynthFormat, SynthOptions};

/// The cohort: small enough for a debug build, large enough to hold inpatient stays,
/// readmissions, deaths, late and corrected labs (checked below).
fn options() -> SynthOptions {
    SynthOptions {
        patients: 60,
        seed: 20_240_601,
        chunk_size: 25,
        ..SynthOptions::default()
    }
}

/// The ingestion time: `known_at` of rows whose format has no knowledge time (Synthea).
fn ingested_at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
        .expect("test time")
        .with_timezone(&Utc)
}

/// Which rows of a table a format carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Every row version.
    All,
    /// Only rows still true at the end (`retracted_at` null).
    Current,
    /// Only current rows whose `role` is `attending` (care team).
    CurrentAttending,
}

/// The projection of one curated table that a format carries.
#[derive(Debug, Clone)]
struct View {
    rows: Rows,
    /// Columns left out (the format cannot carry them).
    drop: Vec<&'static str>,
    /// Timestamp columns the format holds as a date only: truncated to 00:00 UTC.
    dates: Vec<&'static str>,
}

impl View {
    fn all() -> View {
        View {
            rows: Rows::All,
            drop: Vec::new(),
            dates: Vec::new(),
        }
    }

    fn without(mut self, cols: &[&'static str]) -> View {
        self.drop.extend_from_slice(cols);
        self
    }

    fn rows(mut self, rows: Rows) -> View {
        self.rows = rows;
        self
    }

    fn dates(mut self, cols: &[&'static str]) -> View {
        self.dates.extend_from_slice(cols);
        self
    }
}

/// Set by ingest in every format except Ward's own layout.
const SOURCE: [&str; 2] = ["source_system", "source_id"];
/// Knowledge time and versions, which Synthea CSV has not.
const VERSIONS: [&str; 2] = ["known_at", "retracted_at"];

/// What `format` carries of `table`; `None` when it carries none of it. This is the table
/// "What each format cannot carry" of docs/synth.md, as code.
fn view(format: SynthFormat, table: Table) -> Option<View> {
    let source_and_versions: Vec<&'static str> = SOURCE.iter().chain(&VERSIONS).copied().collect();
    if !matches!(
        table,
        Table::Patients
            | Table::Encounters
            | Table::Observations
            | Table::Conditions
            | Table::Procedures
            | Table::Medications
            | Table::CareTeam
    ) {
        // The generator makes no consent decisions, immunizations, allergies, reports or
        // administrations: no format carries any.
        return None;
    }
    Some(match format {
        SynthFormat::Parquet | SynthFormat::Csv => View::all(),
        SynthFormat::FhirNdjson => match table {
            // The primary-care clinician travels as Patient.generalPractitioner, which has
            // no period: only the attendings (Encounter.participant) come back as rows.
            Table::CareTeam => View::all()
                .without(&SOURCE)
                .rows(Rows::CurrentAttending)
                .without(&VERSIONS),
            _ => View::all().without(&SOURCE),
        },
        SynthFormat::Hl7v2 => match table {
            Table::Conditions | Table::Procedures | Table::Medications => return None,
            Table::Encounters => {
                View::all()
                    .without(&SOURCE)
                    .without(&["code_system", "code", "display"])
            }
            Table::CareTeam => View::all()
                .without(&SOURCE)
                .rows(Rows::CurrentAttending)
                .without(&VERSIONS),
            _ => View::all().without(&SOURCE),
        },
        SynthFormat::Synthea => {
            let v = View::all()
                .rows(Rows::Current)
                .without(&source_and_versions);
            match table {
                Table::Patients => v.dates(&["death_time"]),
                Table::Encounters => {
                    v.without(&["admission_type", "discharge_disposition", "service"])
                }
                Table::Observations => v.without(&["observation_id", "status"]),
                Table::Conditions => v
                    .without(&["condition_id"])
                    .dates(&["onset_time", "abatement_time"]),
                Table::Procedures => v.without(&["procedure_id"]),
                Table::Medications => v.without(&["medication_id", "status"]),
                Table::CareTeam => v.rows(Rows::CurrentAttending),
                _ => return None,
            }
        }
    })
}

/// Applies a view to a full curated batch, then puts it in the pipeline's canonical order.
fn project(batch: &RecordBatch, v: &View) -> RecordBatch {
    let batch = match v.rows {
        Rows::All => batch.clone(),
        Rows::Current | Rows::CurrentAttending => {
            let retracted = batch.column_by_name("retracted_at").expect("retracted_at");
            let mut keep: Vec<bool> = (0..batch.num_rows())
                .map(|i| retracted.is_null(i))
                .collect();
            if v.rows == Rows::CurrentAttending {
                let role = batch
                    .column_by_name("role")
                    .expect("role")
                    .as_string::<i32>();
                for (i, k) in keep.iter_mut().enumerate() {
                    *k &= role.is_valid(i) && role.value(i) == "attending";
                }
            }
            filter_record_batch(batch, &keep.into()).expect("filter")
        }
    };
    let schema = batch.schema();
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (field, col) in schema.fields().iter().zip(batch.columns()) {
        if v.drop.contains(&field.name().as_str()) {
            continue;
        }
        let col = if v.dates.contains(&field.name().as_str()) {
            let t = col.as_primitive::<TimestampMicrosecondType>();
            const DAY: i64 = 86_400_000_000;
            let days: TimestampMicrosecondArray = t.unary(|us| us - us.rem_euclid(DAY));
            Arc::new(days.with_timezone("UTC")) as ArrayRef
        } else {
            col.clone()
        };
        fields.push(field.clone());
        cols.push(col);
    }
    let projected = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("project");
    pipeline::canonical_merge(&[projected]).expect("canonical order")
}

/// A curated table's content hash: the bucketed encoding curated versions are stored with
/// (by `patient_id`, docs/hashing.md).
fn hash(batch: &RecordBatch) -> ContentHash {
    let bucketing = pipeline::curated_bucketing().expect("bucketing");
    ward::hash::bucketed::hash_bucketed(&batch.schema(), std::slice::from_ref(batch), bucketing)
        .expect("hash")
        .0
}

/// Every row as one line of text, for the mismatch report.
fn lines(batch: &RecordBatch) -> BTreeSet<String> {
    let opts = FormatOptions::default().with_null("∅");
    let fmts: Vec<ArrayFormatter<'_>> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("formatter"))
        .collect();
    (0..batch.num_rows())
        .map(|i| {
            fmts.iter()
                .map(|f| f.value(i).to_string())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// Compares two projected batches; returns a report of the difference, empty when equal.
fn compare(what: &str, expected: &RecordBatch, actual: &RecordBatch) -> String {
    if expected.schema().fields() != actual.schema().fields() {
        return format!(
            "{what}: schemas differ\n  expected {:?}\n  actual   {:?}\n",
            expected.schema(),
            actual.schema()
        );
    }
    if hash(expected) == hash(actual) {
        return String::new();
    }
    let (e, a) = (lines(expected), lines(actual));
    let names: Vec<String> = expected
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut out = format!(
        "{what}: {} rows expected, {} ingested; columns {}\n",
        expected.num_rows(),
        actual.num_rows(),
        names.join("|")
    );
    for l in e.difference(&a).take(4) {
        out.push_str(&format!("  only expected: {l}\n"));
    }
    for l in a.difference(&e).take(4) {
        out.push_str(&format!("  only ingested: {l}\n"));
    }
    if e == a {
        out.push_str("  same rows as text, different multiplicity or values\n");
    }
    out
}

/// The generator's tables for the cohort, one batch a table, in canonical order.
fn generated(opts: &SynthOptions) -> Vec<(Table, RecordBatch)> {
    let mut all = CuratedTables::default();
    for p in synth::generate_range(opts, 0..opts.patients) {
        all.extend(p);
    }
    Table::ALL
        .into_iter()
        .map(|t| {
            let b = all.to_batch(t).expect("batch");
            (t, pipeline::canonical_merge(&[b]).expect("canonical order"))
        })
        .collect()
}

fn pipeline_format(f: SynthFormat) -> Format {
    match f {
        SynthFormat::Parquet => Format::Parquet,
        SynthFormat::Csv => Format::Csv,
        SynthFormat::Synthea => Format::Synthea,
        SynthFormat::FhirNdjson => Format::FhirNdjson,
        SynthFormat::Hl7v2 => Format::Hl7v2,
    }
}

/// Writes the cohort in `format` under `dir/out`, ingests it into a store under
/// `dir/store`; returns the report and the store.
async fn synth_and_ingest(
    opts: &SynthOptions,
    format: SynthFormat,
    dir: &Path,
) -> (IngestReport, Store) {
    let out = dir.join("out");
    synth::write(opts, format, &out, None).expect("synth write");
    let store =
        Store::open(dir.join("store"), Arc::new(ManualClock::new(ingested_at()))).expect("store");
    let ingest = IngestOptions {
        format: pipeline_format(format),
        // Parquet and CSV go through the built-in curated-layout mapping (no --mapping).
        mapping: None,
        mapping_text: None,
        max_bad: None,
        context: Context::new(ingested_at()),
        read: Default::default(),
    };
    let report = pipeline::ingest(&store, &[out], &ingest, None)
        .await
        .expect("ingest");
    (report, store)
}

async fn latest(store: &Store, table: Table) -> Option<RecordBatch> {
    let m = store
        .resolve(&VersionRef::Latest(table.name().into()))
        .ok()?;
    let (schema, batches) = store.read(&m.hash).await.expect("read version");
    Some(concat_batches(&schema, &batches).expect("concat"))
}

/// The cohort must hold what the formats disagree on most easily, or the test proves little.
fn assert_cohort_is_interesting(expected: &[(Table, RecordBatch)]) {
    let batch = |t: Table| &expected.iter().find(|e| e.0 == t).expect("table").1;
    let text = |t: Table, col: &str, i: usize| -> Option<String> {
        let c = batch(t).column_by_name(col).expect("column");
        c.is_valid(i)
            .then(|| c.as_string::<i32>().value(i).to_string())
    };
    let rows = |t: Table| batch(t).num_rows();
    let count = |t: Table, col: &str, pred: &dyn Fn(Option<String>) -> bool| {
        (0..rows(t)).filter(|i| pred(text(t, col, *i))).count()
    };
    let retracted = |t: Table| {
        batch(t)
            .column_by_name("retracted_at")
            .expect("col")
            .null_count()
    };
    assert!(
        count(Table::Encounters, "class", &|c| c.as_deref()
            == Some("inpatient"))
            >= 10,
        "inpatient stays"
    );
    assert!(
        count(Table::Encounters, "discharge_disposition", &|c| c
            .is_some_and(|d| d != "home"))
            >= 2,
        "dispositions other than home"
    );
    assert!(
        count(Table::Observations, "status", &|c| c.as_deref()
            == Some("corrected"))
            >= 1,
        "a corrected lab"
    );
    assert!(
        rows(Table::Patients) - retracted(Table::Patients) >= 1,
        "a death (a retracted patient version)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cohort_gives_the_same_curated_tables_in_every_format() {
    let opts = options();
    let expected = generated(&opts);
    assert_cohort_is_interesting(&expected);
    let mut problems = String::new();
    for format in SynthFormat::ALL {
        let dir = tempfile::tempdir().expect("tempdir");
        let (report, store) = synth_and_ingest(&opts, format, dir.path()).await;
        if report.bad_total() > 0 || !report.skipped.is_empty() {
            problems.push_str(&format!(
                "{format}: bad {:?}, skipped {:?}\n",
                report.bad, report.skipped
            ));
        }
        // The source formats carry each patient's MRN (HL7 v2 PID-3 `^^^WARD^MR`, FHIR
        // `Patient.identifier` `urn:ward:synth:mrn`): one current identifier row per patient, which
        // the generator's own tables have no table for.
        let idents = latest(&store, Table::PatientIdentifiers).await;
        let patients = opts.patients as usize;
        match format {
            SynthFormat::FhirNdjson | SynthFormat::Hl7v2 => {
                // Current rows: FHIR repeats the identifiers with each Patient version (a
                // death is a second version) and retracts the earlier version's.
                let n = idents.as_ref().map_or(0, |b| {
                    b.column_by_name("retracted_at")
                        .map_or(0, |c| c.null_count())
                });
                if n != patients {
                    problems.push_str(&format!(
                        "{format}/patient_identifiers: {n} rows for {patients} patients\n"
                    ));
                }
            }
            _ => {
                if idents.is_some() {
                    problems.push_str(&format!("{format}: patient_identifiers rows\n"));
                }
            }
        }
        for (table, full) in &expected {
            if *table == Table::PatientIdentifiers {
                continue;
            }
            let what = format!("{format}/{}", table.name());
            let actual = latest(&store, *table).await;
            match (view(format, *table), actual) {
                (None, None) => {}
                (None, Some(b)) => problems.push_str(&format!(
                    "{what}: the format carries no {} but ingest made {} rows\n",
                    table.name(),
                    b.num_rows()
                )),
                (Some(_), None) => problems.push_str(&format!("{what}: no curated version\n")),
                (Some(v), Some(actual)) => {
                    if v.drop.is_empty() && v.dates.is_empty() && v.rows == Rows::All {
                        // Ward's own layout: the stored version is the generator's table.
                        let stored = store
                            .resolve(&VersionRef::Latest(table.name().into()))
                            .expect("version")
                            .hash;
                        if stored != hash(full) {
                            problems.push_str(&format!(
                                "{what}: version {stored} is not the generator's {}\n",
                                hash(full)
                            ));
                        }
                    }
                    problems.push_str(&compare(&what, &project(full, &v), &project(&actual, &v)));
                }
            }
        }
    }
    assert!(problems.is_empty(), "formats disagree:\n{problems}");
}
