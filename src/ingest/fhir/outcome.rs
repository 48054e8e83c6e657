//! What curating a resource gives: its rows, or the faults that sank it.

use chrono::{DateTime, Utc};

use crate::curated::{
    Allergy, CareTeamMember, Condition, Consent, DiagnosticReport, Encounter, Immunization,
    Medication, MedicationAdministration, Observation, Patient, PatientIdentifier, Procedure,
    RowSink, Table,
};
use crate::ingest::{BadRecord, Skipped};

/// Why a resource (or one of its parts) could not be curated.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Fault {
    pub(super) field: String,
    pub(super) reason: &'static str,
    pub(super) detail: String,
}

impl Fault {
    pub(super) fn new(
        field: impl Into<String>,
        reason: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Fault {
            field: field.into(),
            reason,
            detail: detail.into(),
        }
    }

    pub(super) fn missing(field: impl Into<String>) -> Self {
        let field = field.into();
        let detail = format!("{field} is required and absent");
        Fault::new(field, "missing_field", detail)
    }
}

pub(super) type Fx<T> = Result<T, Fault>;

/// The rows one resource version produced. The single rows are boxed, so that an outcome
/// (one per resource) stays small.
#[derive(Debug)]
pub(super) enum Rows {
    Patient(Box<Patient>, Vec<PatientIdentifier>),
    Encounter(Box<Encounter>, Vec<CareTeamMember>),
    Observations(Vec<Observation>),
    Condition(Box<Condition>),
    Procedure(Box<Procedure>),
    Medications(Vec<Medication>),
    Consent(Box<Consent>),
    Immunization(Box<Immunization>),
    Allergy(Box<Allergy>),
    Report(Box<DiagnosticReport>),
    Administrations(Vec<MedicationAdministration>),
}

impl Rows {
    /// The table of the resource's own rows.
    pub(super) fn table(&self) -> Table {
        match self {
            Rows::Patient(..) => Table::Patients,
            Rows::Encounter(..) => Table::Encounters,
            Rows::Observations(_) => Table::Observations,
            Rows::Condition(_) => Table::Conditions,
            Rows::Procedure(_) => Table::Procedures,
            Rows::Medications(_) => Table::Medications,
            Rows::Consent(_) => Table::Consent,
            Rows::Immunization(_) => Table::Immunizations,
            Rows::Allergy(_) => Table::Allergies,
            Rows::Report(_) => Table::DiagnosticReports,
            Rows::Administrations(_) => Table::MedicationAdministrations,
        }
    }

    pub(super) fn into_sink(self, sink: &mut impl RowSink) {
        match self {
            Rows::Patient(r, ids) => {
                sink.patient(*r);
                ids.into_iter().for_each(|i| sink.patient_identifier(i));
            }
            Rows::Encounter(r, team) => {
                sink.encounter(*r);
                team.into_iter().for_each(|m| sink.care_team(m));
            }
            Rows::Observations(rows) => rows.into_iter().for_each(|r| sink.observation(r)),
            Rows::Condition(r) => sink.condition(*r),
            Rows::Procedure(r) => sink.procedure(*r),
            Rows::Medications(rows) => rows.into_iter().for_each(|r| sink.medication(r)),
            Rows::Consent(r) => sink.consent(*r),
            Rows::Immunization(r) => sink.immunization(*r),
            Rows::Allergy(r) => sink.allergy(*r),
            Rows::Report(r) => sink.diagnostic_report(*r),
            Rows::Administrations(rows) => rows
                .into_iter()
                .for_each(|r| sink.medication_administration(r)),
        }
    }
}

/// A curated resource version, with what the version pass needs.
#[derive(Debug)]
pub(super) struct Curated {
    /// `(table, id)`: versions of one resource share it. `None` when the resource has no id.
    pub(super) key: Option<(Table, String)>,
    /// The rows' `source_id` (`ResourceType/id`), which names the resource across runs.
    pub(super) source_id: String,
    pub(super) version: Option<u64>,
    pub(super) known_at: DateTime<Utc>,
    pub(super) rows: Rows,
}

/// What one resource (or one unreadable document) became.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) curated: Option<Curated>,
    pub(super) bad: Vec<BadRecord>,
    pub(super) skipped: Option<Skipped>,
}
