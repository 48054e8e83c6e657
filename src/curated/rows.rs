//! The row structs of the curated tables.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Numbers serialized as their IEEE 754 bits, so that a row read back (an HL7 v2 run's
/// state, `ingest::hl7v2`) is bit for bit the row written, whatever the float parser does.
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(f64::to_bits).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(f64::from_bits))
    }
}

/// Provenance and knowledge-time columns shared by every curated row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowMeta {
    /// The source system or file the row came from.
    pub source_system: String,
    /// The record id in the source (resource id, message control id and segment, line).
    pub source_id: String,
    /// When the information became available.
    pub known_at: DateTime<Utc>,
    /// When the row stopped being true (cancelled, corrected), if it did.
    pub retracted_at: Option<DateTime<Utc>>,
}

/// A code with its system (normalized by [`code_system::normalize`]) and display text.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Coding {
    /// Normalized code system.
    pub system: String,
    /// The code.
    pub code: String,
    /// Human-readable text, if the source had it.
    pub display: Option<String>,
}

/// A row of `patients`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    /// Patient id (the source's identifier, stable across files of one source).
    pub patient_id: String,
    /// Date of birth.
    pub birth_date: Option<NaiveDate>,
    /// `female`, `male`, `other` or `unknown`.
    pub sex: Option<String>,
    /// Time of death.
    pub death_time: Option<DateTime<Utc>>,
    /// ZIP or postal code.
    pub zip: Option<String>,
    /// Given name(s) (an identifier under HIPAA; dropped on de-identification).
    pub given_name: Option<String>,
    /// Family name (an identifier under HIPAA; dropped on de-identification).
    pub family_name: Option<String>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `encounters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encounter {
    /// Encounter (visit) id.
    pub encounter_id: String,
    /// The patient.
    pub patient_id: String,
    /// One of [`encounter_class`].
    pub class: String,
    /// Start of the encounter (admission).
    pub admit_time: DateTime<Utc>,
    /// End of the encounter (discharge); null while in progress.
    pub discharge_time: Option<DateTime<Utc>>,
    /// One of [`admission_type`].
    pub admission_type: Option<String>,
    /// Discharge disposition as coded by the source (e.g. `home`, `snf`, `expired`).
    pub discharge_disposition: Option<String>,
    /// Hospital service (e.g. `medicine`, `surgery`, `oncology`).
    pub service: Option<String>,
    /// Encounter type code, if any.
    pub code: Option<Coding>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `observations` (labs and vitals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Observation id.
    pub observation_id: String,
    /// The patient.
    pub patient_id: String,
    /// The encounter it belongs to, if known.
    pub encounter_id: Option<String>,
    /// `laboratory`, `vital-signs`, ...
    pub category: Option<String>,
    /// What was measured (LOINC where coded).
    pub code: Coding,
    /// Numeric value.
    #[serde(with = "f64_bits")]
    pub value_num: Option<f64>,
    /// Text value (when not numeric).
    pub value_text: Option<String>,
    /// Unit of `value_num` (UCUM where the source says so; the canonical UCUM unit for a
    /// LOINC code in [`units::TABLE`](super::units::TABLE)).
    pub unit: Option<String>,
    /// The value as the source sent it, when [`units::normalize`](super::units::normalize)
    /// converted it (null otherwise).
    #[serde(with = "f64_bits")]
    pub value_original: Option<f64>,
    /// The unit as the source sent it, when [`units::normalize`](super::units::normalize)
    /// changed it (null otherwise).
    pub unit_original: Option<String>,
    /// When the sample was taken / the observation made.
    pub effective_time: DateTime<Utc>,
    /// `final`, `preliminary`, `corrected`, ...
    pub status: Option<String>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `conditions` (diagnoses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// Condition id.
    pub condition_id: String,
    /// The patient.
    pub patient_id: String,
    /// The encounter it was recorded in, if known.
    pub encounter_id: Option<String>,
    /// Diagnosis code (ICD-10-CM, SNOMED CT, ...).
    pub code: Coding,
    /// Onset (or recorded) time.
    pub onset_time: DateTime<Utc>,
    /// When it resolved, if it did.
    pub abatement_time: Option<DateTime<Utc>>,
    /// The diagnosis type: HL7 v2 DG1-6 (table 0052: `admitting`, `working`, `final`; any
    /// other code as written); null when the source does not say.
    #[serde(default)]
    pub diagnosis_type: Option<String>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `procedures`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Procedure {
    /// Procedure id.
    pub procedure_id: String,
    /// The patient.
    pub patient_id: String,
    /// The encounter it was performed in, if known.
    pub encounter_id: Option<String>,
    /// Procedure code (SNOMED CT, CPT, ICD-10-PCS as written, ...).
    pub code: Coding,
    /// When it was performed (start).
    pub performed_time: DateTime<Utc>,
    /// When it ended, if known.
    pub performed_end: Option<DateTime<Utc>>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `medications` (orders).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Medication {
    /// Medication order id.
    pub medication_id: String,
    /// The patient.
    pub patient_id: String,
    /// The encounter it was ordered in, if known.
    pub encounter_id: Option<String>,
    /// Drug code (RxNorm where coded).
    pub code: Coding,
    /// Start of the order.
    pub start_time: DateTime<Utc>,
    /// End of the order, if known.
    pub end_time: Option<DateTime<Utc>>,
    /// `active`, `completed`, `stopped`, ...
    pub status: Option<String>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `care_team`: a clinician assigned to a patient for a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CareTeamMember {
    /// The patient.
    pub patient_id: String,
    /// The clinician (practitioner id, as authentication names them).
    pub clinician_id: String,
    /// `attending`, `admitting`, `primary`, ...
    pub role: Option<String>,
    /// Start of the assignment.
    pub valid_from: DateTime<Utc>,
    /// End of the assignment, if it ended.
    pub valid_to: Option<DateTime<Utc>>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `consent`: one consent decision of a patient (a FHIR `Consent` resource version,
/// or a mapped record). [`consent`] says how a row counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    /// The consent record's id (FHIR `Consent.id`); its versions share it.
    pub consent_id: String,
    /// The patient it is about.
    pub patient_id: String,
    /// What it governs: [`consent::RESEARCH`], [`consent::TREATMENT`],
    /// [`consent::PATIENT_PRIVACY`] or [`consent::ADR`].
    pub scope: String,
    /// [`consent::PERMIT`] or [`consent::DENY`].
    pub decision: String,
    /// Start of the period the decision covers, if bounded.
    pub period_start: Option<DateTime<Utc>>,
    /// End of the period the decision covers, if bounded.
    pub period_end: Option<DateTime<Utc>>,
    /// When the patient made the decision (FHIR `Consent.dateTime`).
    pub decided_at: Option<DateTime<Utc>>,
    /// Provenance and knowledge time; `retracted_at` for a withdrawn or erroneous record.
    pub meta: RowMeta,
}

/// A row of `immunizations`: a vaccine given (FHIR `Immunization`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Immunization {
    /// Immunization id.
    pub immunization_id: String,
    /// The patient.
    pub patient_id: String,
    /// The encounter it was given in, if known.
    pub encounter_id: Option<String>,
    /// The vaccine (CVX where coded).
    pub code: Coding,
    /// When it was given.
    pub occurrence_time: DateTime<Utc>,
    /// `completed`, `entered-in-error` (never `not-done`: those are skipped).
    pub status: Option<String>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `allergies`: an allergy or intolerance (FHIR `AllergyIntolerance`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allergy {
    /// Allergy id.
    pub allergy_id: String,
    /// The patient.
    pub patient_id: String,
    /// The encounter it was recorded in, if known.
    pub encounter_id: Option<String>,
    /// The substance or the allergy (SNOMED CT, RxNorm, ...).
    pub code: Coding,
    /// `food`, `medication`, `environment`, `biologic`.
    pub category: Option<String>,
    /// `low`, `high`, `unable-to-assess`.
    pub criticality: Option<String>,
    /// `active`, `inactive`, `resolved`.
    pub clinical_status: Option<String>,
    /// `unconfirmed`, `confirmed`, `refuted`, `entered-in-error`.
    pub verification_status: Option<String>,
    /// Onset, else the recorded date.
    pub onset_time: DateTime<Utc>,
    /// When it was recorded, if the source says.
    pub recorded_time: Option<DateTime<Utc>>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `diagnostic_reports`: a report over results (FHIR `DiagnosticReport`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagnosticReport {
    /// Report id.
    pub report_id: String,
    /// The patient.
    pub patient_id: String,
    /// The encounter it belongs to, if known.
    pub encounter_id: Option<String>,
    /// Service category (`LAB`, `RAD`, ...), the first coding's code.
    pub category: Option<String>,
    /// What the report is (LOINC where coded).
    pub code: Coding,
    /// The clinically relevant time (specimen collection, imaging).
    pub effective_time: DateTime<Utc>,
    /// When the report was released.
    pub issued_time: Option<DateTime<Utc>>,
    /// `registered`, `partial`, `preliminary`, `final`, `amended`, ...
    pub status: Option<String>,
    /// The clinical conclusion, as text.
    pub conclusion: Option<String>,
    /// The ids of its result Observations (their `observations.observation_id`), separated
    /// by spaces (FHIR ids have none).
    pub result_ids: Option<String>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `medication_administrations`: a drug given (FHIR `MedicationAdministration`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MedicationAdministration {
    /// Administration id.
    pub administration_id: String,
    /// The patient.
    pub patient_id: String,
    /// The encounter it was given in, if known.
    pub encounter_id: Option<String>,
    /// The order it fulfils (`medications.medication_id`), if known.
    pub request_id: Option<String>,
    /// Drug code (RxNorm where coded).
    pub code: Coding,
    /// When it was given (start).
    pub start_time: DateTime<Utc>,
    /// When it ended, for an infusion.
    pub end_time: Option<DateTime<Utc>>,
    /// `in-progress`, `completed`, `stopped`, `on-hold`, ... (never `not-done`).
    pub status: Option<String>,
    /// Dose given (`dosage.dose.value`).
    #[serde(with = "f64_bits")]
    pub dose_value: Option<f64>,
    /// Unit of the dose (UCUM where the source says so).
    pub dose_unit: Option<String>,
    /// Route (the first coding's display, else code, else text).
    pub route: Option<String>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `patient_identifiers`: one identifier of a patient record (HL7 v2 PID-3, FHIR
/// `Patient.identifier`), or one link of it to another patient record (FHIR `Patient.link`),
/// which the master patient index (`crate::mpi`) links records by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientIdentifier {
    /// The patient record (the `patients.patient_id` of the same source).
    pub patient_id: String,
    /// `identifier` or `link`.
    pub kind: String,
    /// The identifier's namespace: FHIR `identifier.system`, HL7 v2 the assigning authority
    /// (PID-3 CX.4). For a link, the resource type it points to (`Patient`).
    pub system: String,
    /// The identifier's value (PID-3 CX.1, `identifier.value`); for a link, the other
    /// patient's id.
    pub value: String,
    /// The identifier's type code (CX.5, `identifier.type` coding: `MR`, `SS`, ...), or the
    /// link's type (`seealso`, `refer`, `replaces`, `replaced-by`).
    pub type_code: Option<String>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}
