//! Curated tables: the typed, source-independent tables that features read.
//!
//! Every source (generic CSV/Parquet with a mapping, Synthea, FHIR R4, HL7 v2) is parsed into
//! the row structs of this module, handed to a [`RowSink`]: [`CuratedTables`] keeps them
//! ([`CuratedTables::to_batches`] then builds the Arrow record batches), [`CuratedColumns`]
//! appends each to Arrow column builders at once (the FHIR ingest path). Both give the fixed
//! schemas below. `docs/curated-tables.md` documents every column.
//!
//! Point-in-time columns shared by every table:
//! - the table's event time(s), `timestamp[us, UTC]`;
//! - `known_at`: when the information became available (FHIR `meta.lastUpdated` or the
//!   Bundle timestamp, HL7 MSH-7, a mapped column, else the ingestion time from the clock);
//! - `retracted_at`: when the row stopped being true (an HL7 cancel, a corrected lab), null
//!   while it still holds. A lookup at `t` sees a row only if its event time `<= t`,
//!   `known_at <= t`, and `retracted_at` is null or `> t`.
//! - `source_system` and `source_id`: where the row came from (file or system, record id).

pub mod admission_type;
pub mod code_system;
pub mod consent;
pub mod discharge_disposition;
pub mod encounter_class;
pub mod service;
pub mod units;

mod columns;
mod rows;
mod schema;
mod tables;

pub use self::columns::CuratedColumns;
pub use self::rows::{
    Allergy, CareTeamMember, Coding, Condition, Consent, DiagnosticReport, Encounter, Immunization,
    Medication, MedicationAdministration, Observation, Patient, PatientIdentifier, Procedure,
    RowMeta,
};
pub use self::schema::Table;
pub use self::tables::CuratedTables;

use chrono::{DateTime, NaiveDate, Utc};

/// Where a parser puts curated rows: [`CuratedTables`] keeps the row structs (for callers
/// that read rows), [`CuratedColumns`] appends each row to Arrow column builders at once (for
/// callers that only want the record batches, without holding every row as structs first).
pub trait RowSink {
    /// Rows of `table` so far.
    fn rows(&self, table: Table) -> usize;
    /// Appends a `patients` row.
    fn patient(&mut self, r: Patient);
    /// Appends an `encounters` row.
    fn encounter(&mut self, r: Encounter);
    /// Appends an `observations` row.
    fn observation(&mut self, r: Observation);
    /// Appends a `conditions` row.
    fn condition(&mut self, r: Condition);
    /// Appends a `procedures` row.
    fn procedure(&mut self, r: Procedure);
    /// Appends a `medications` row.
    fn medication(&mut self, r: Medication);
    /// Appends a `care_team` row.
    fn care_team(&mut self, r: CareTeamMember);
    /// Appends a `consent` row.
    fn consent(&mut self, r: Consent);
    /// Appends an `immunizations` row.
    fn immunization(&mut self, r: Immunization);
    /// Appends an `allergies` row.
    fn allergy(&mut self, r: Allergy);
    /// Appends a `diagnostic_reports` row.
    fn diagnostic_report(&mut self, r: DiagnosticReport);
    /// Appends a `medication_administrations` row.
    fn medication_administration(&mut self, r: MedicationAdministration);
    /// Appends a `patient_identifiers` row.
    fn patient_identifier(&mut self, r: PatientIdentifier);
    /// Sets `retracted_at` of row `row` of `table` to `at`, or keeps the earlier time it
    /// already has. A row that does not exist is left alone.
    fn retract(&mut self, table: Table, row: usize, at: DateTime<Utc>);
    /// A hint: about `rows` rows are coming for each table that gets any, so storage can be
    /// sized once rather than grown.
    fn expect_rows(&mut self, rows: usize) {
        let _ = rows;
    }
}

/// Days since 1970-01-01, the Arrow `date32` value of a date.
pub fn date_to_days(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid epoch")).num_days() as i32
}
