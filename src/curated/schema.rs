//! The curated tables and their fixed Arrow schemas.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The curated tables Ward knows, in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per patient.
    Patients,
    /// Visits: inpatient stays, ED visits, ambulatory visits.
    Encounters,
    /// Labs and vitals.
    Observations,
    /// Diagnoses and problems.
    Conditions,
    /// Procedures performed.
    Procedures,
    /// Medication orders.
    Medications,
    /// Clinician-to-patient assignments with validity periods.
    CareTeam,
    /// Patients' consent decisions (research opt-outs), as [`consent`] reads them.
    Consent,
    /// Vaccines given.
    Immunizations,
    /// Allergies and intolerances.
    Allergies,
    /// Diagnostic reports (lab panels, imaging reports) and their results.
    DiagnosticReports,
    /// Drugs given (administrations, as opposed to the orders of `medications`).
    MedicationAdministrations,
    /// Patient records' identifiers and links, which the master patient index reads.
    PatientIdentifiers,
}

impl Table {
    /// All tables, in the fixed order used for output.
    pub const ALL: [Table; 13] = [
        Table::Patients,
        Table::Encounters,
        Table::Observations,
        Table::Conditions,
        Table::Procedures,
        Table::Medications,
        Table::CareTeam,
        Table::Consent,
        Table::Immunizations,
        Table::Allergies,
        Table::DiagnosticReports,
        Table::MedicationAdministrations,
        Table::PatientIdentifiers,
    ];

    /// The table's name as used in dataset names and feature definitions.
    pub fn name(self) -> &'static str {
        match self {
            Table::Patients => "patients",
            Table::Encounters => "encounters",
            Table::Observations => "observations",
            Table::Conditions => "conditions",
            Table::Procedures => "procedures",
            Table::Medications => "medications",
            Table::CareTeam => "care_team",
            Table::Consent => "consent",
            Table::Immunizations => "immunizations",
            Table::Allergies => "allergies",
            Table::DiagnosticReports => "diagnostic_reports",
            Table::MedicationAdministrations => "medication_administrations",
            Table::PatientIdentifiers => "patient_identifiers",
        }
    }

    /// Parses a table name as written by [`Table::name`].
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The Arrow schema of the table.
    pub fn schema(self) -> SchemaRef {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let s = |n: &str, nullable: bool| Field::new(n, DataType::Utf8, nullable);
        let t = |n: &str, nullable: bool| Field::new(n, ts(), nullable);
        let f = |n: &str| Field::new(n, DataType::Float64, true);
        let mut fields = match self {
            Table::Patients => vec![
                s("patient_id", false),
                Field::new("birth_date", DataType::Date32, true),
                s("sex", true),
                t("death_time", true),
                s("zip", true),
                s("given_name", true),
                s("family_name", true),
            ],
            Table::Encounters => vec![
                s("encounter_id", false),
                s("patient_id", false),
                s("class", false),
                t("admit_time", false),
                t("discharge_time", true),
                s("admission_type", true),
                s("discharge_disposition", true),
                s("service", true),
                s("code_system", true),
                s("code", true),
                s("display", true),
            ],
            Table::Observations => vec![
                s("observation_id", false),
                s("patient_id", false),
                s("encounter_id", true),
                s("category", true),
                s("code_system", false),
                s("code", false),
                s("display", true),
                f("value_num"),
                s("value_text", true),
                s("unit", true),
                f("value_original"),
                s("unit_original", true),
                t("effective_time", false),
                s("status", true),
            ],
            Table::Conditions => vec![
                s("condition_id", false),
                s("patient_id", false),
                s("encounter_id", true),
                s("code_system", false),
                s("code", false),
                s("display", true),
                t("onset_time", false),
                t("abatement_time", true),
                s("diagnosis_type", true),
            ],
            Table::Procedures => vec![
                s("procedure_id", false),
                s("patient_id", false),
                s("encounter_id", true),
                s("code_system", false),
                s("code", false),
                s("display", true),
                t("performed_time", false),
                t("performed_end", true),
            ],
            Table::Medications => vec![
                s("medication_id", false),
                s("patient_id", false),
                s("encounter_id", true),
                s("code_system", false),
                s("code", false),
                s("display", true),
                t("start_time", false),
                t("end_time", true),
                s("status", true),
            ],
            Table::CareTeam => vec![
                s("patient_id", false),
                s("clinician_id", false),
                s("role", true),
                t("valid_from", false),
                t("valid_to", true),
            ],
            Table::Consent => vec![
                s("consent_id", false),
                s("patient_id", false),
                s("scope", false),
                s("decision", false),
                t("period_start", true),
                t("period_end", true),
                t("decided_at", true),
            ],
            Table::Immunizations => vec![
                s("immunization_id", false),
                s("patient_id", false),
                s("encounter_id", true),
                s("code_system", false),
                s("code", false),
                s("display", true),
                t("occurrence_time", false),
                s("status", true),
            ],
            Table::Allergies => vec![
                s("allergy_id", false),
                s("patient_id", false),
                s("encounter_id", true),
                s("code_system", false),
                s("code", false),
                s("display", true),
                s("category", true),
                s("criticality", true),
                s("clinical_status", true),
                s("verification_status", true),
                t("onset_time", false),
                t("recorded_time", true),
            ],
            Table::DiagnosticReports => vec![
                s("report_id", false),
                s("patient_id", false),
                s("encounter_id", true),
                s("category", true),
                s("code_system", false),
                s("code", false),
                s("display", true),
                t("effective_time", false),
                t("issued_time", true),
                s("status", true),
                s("conclusion", true),
                s("result_ids", true),
            ],
            Table::MedicationAdministrations => vec![
                s("administration_id", false),
                s("patient_id", false),
                s("encounter_id", true),
                s("request_id", true),
                s("code_system", false),
                s("code", false),
                s("display", true),
                t("start_time", false),
                t("end_time", true),
                s("status", true),
                f("dose_value"),
                s("dose_unit", true),
                s("route", true),
            ],
            Table::PatientIdentifiers => vec![
                s("patient_id", false),
                s("kind", false),
                s("system", false),
                s("value", false),
                s("type", true),
            ],
        };
        fields.extend([
            s("source_system", false),
            s("source_id", false),
            t("known_at", false),
            t("retracted_at", true),
        ]);
        Arc::new(Schema::new(fields))
    }

    /// The column holding the table's event time (the time a lookup compares with `t`).
    pub fn event_time_column(self) -> &'static str {
        match self {
            Table::Patients => "known_at",
            Table::Encounters => "admit_time",
            Table::Observations => "effective_time",
            Table::Conditions => "onset_time",
            Table::Procedures => "performed_time",
            Table::Medications => "start_time",
            Table::CareTeam => "valid_from",
            // A decision holds from when it is known (its `decided_at` may be absent).
            Table::Consent => "known_at",
            Table::Immunizations => "occurrence_time",
            Table::Allergies => "onset_time",
            Table::DiagnosticReports => "effective_time",
            Table::MedicationAdministrations => "start_time",
            Table::PatientIdentifiers => "known_at",
        }
    }
}
