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

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, RecordBatch, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use chrono::{DateTime, NaiveDate, Utc};

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
}

impl Table {
    /// All tables, in the fixed order used for output.
    pub const ALL: [Table; 8] = [
        Table::Patients,
        Table::Encounters,
        Table::Observations,
        Table::Conditions,
        Table::Procedures,
        Table::Medications,
        Table::CareTeam,
        Table::Consent,
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
        }
    }
}

/// The `consent` table's vocabulary, and the rule that says what a patient decided about
/// research as known at a time (`docs/curated-tables.md`, "consent"; `docs/security.md`,
/// "Consent").
///
/// The rule, at time `t`:
/// 1. Only rows known by `t` (`known_at <= t`) are read.
/// 2. Of each consent record (`consent_id`), the version known last (greatest `known_at`,
///    then the last by `source_id`) is its state: a later version (a withdrawal, an
///    `entered-in-error`) replaces the earlier ones even when they came in another ingest.
/// 3. That version is in force if it is not retracted by `t` (`retracted_at` null or `> t`)
///    and its period covers `t` (`period_start` null or `<= t`, `period_end` null or `> t`).
/// 4. Of a patient's records in force with scope `research`, the latest decision
///    (`decided_at`, else `known_at`; then `known_at`; then `consent_id`) is the patient's:
///    `deny` opts the patient out of research, `permit` (a withdrawn opt-out) keeps them in.
///    A patient with no research record in force is in (Ward follows an opt-out model).
pub mod consent {
    use std::collections::{BTreeMap, BTreeSet};

    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::TimestampMicrosecondType;
    use chrono::{DateTime, Utc};

    /// The FHIR code system of `Consent.scope` (R4).
    pub const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
    /// Scope: use of the patient's data for research.
    pub const RESEARCH: &str = "research";
    /// Scope: consent to treatment.
    pub const TREATMENT: &str = "treatment";
    /// Scope: privacy consent (who may see the record).
    pub const PATIENT_PRIVACY: &str = "patient-privacy";
    /// Scope: advance directive.
    pub const ADR: &str = "adr";
    /// The scopes a row may hold.
    pub const SCOPES: [&str; 4] = [RESEARCH, TREATMENT, PATIENT_PRIVACY, ADR];
    /// Decision: the scope's use is permitted.
    pub const PERMIT: &str = "permit";
    /// Decision: the scope's use is refused (for research: an opt-out).
    pub const DENY: &str = "deny";

    /// A scope as written (`research`, `Research`, `consentscope|research`, the system URI
    /// then `|` then the code) as one of [`SCOPES`]; `None` for anything else.
    pub fn scope(value: &str) -> Option<&'static str> {
        let v = value.trim();
        let code = match v.rsplit_once('|') {
            Some((system, code)) => {
                let system = system.trim();
                if !(system.eq_ignore_ascii_case(SCOPE_SYSTEM)
                    || system.eq_ignore_ascii_case("consentscope"))
                {
                    return None;
                }
                code.trim()
            }
            None => v,
        };
        SCOPES.into_iter().find(|s| s.eq_ignore_ascii_case(code))
    }

    /// A decision as written (`permit`/`deny`, any case; also `opt-in`/`opt-out`, `yes`/`no`
    /// as consent forms export them) as [`PERMIT`] or [`DENY`]; `None` for anything else.
    pub fn decision(value: &str) -> Option<&'static str> {
        match value.trim().to_ascii_lowercase().as_str() {
            "permit" | "opt-in" | "optin" | "yes" | "y" => Some(PERMIT),
            "deny" | "opt-out" | "optout" | "no" | "n" => Some(DENY),
            _ => None,
        }
    }

    /// What the `consent` table says about research at one time.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct ResearchConsent {
        /// Patients whose research decision in force is `deny`.
        pub opted_out: BTreeSet<String>,
        /// Patients whose research decision in force is `permit`.
        pub permitted: BTreeSet<String>,
    }

    /// One row as the rule reads it.
    struct Row<'a> {
        consent_id: &'a str,
        patient_id: &'a str,
        scope: &'a str,
        decision: &'a str,
        period_start: Option<i64>,
        period_end: Option<i64>,
        decided_at: Option<i64>,
        source_id: &'a str,
        known_at: i64,
        retracted_at: Option<i64>,
    }

    /// The research decisions in force at `at` in `consent` batches (the table's schema), by
    /// the rule of this module.
    ///
    /// # Errors
    /// A message naming the column that is missing or of the wrong type, or the row whose
    /// required value is null.
    pub fn research_at(
        batches: &[RecordBatch],
        at: DateTime<Utc>,
    ) -> Result<ResearchConsent, String> {
        let t = at.timestamp_micros();
        // Step 2: per record, the version known last by `t`.
        let mut latest: BTreeMap<&str, Row<'_>> = BTreeMap::new();
        for (bi, b) in batches.iter().enumerate() {
            let text = |name: &str| {
                b.column_by_name(name)
                    .and_then(|c| c.as_string_opt::<i32>())
                    .ok_or_else(|| format!("consent batch {bi}: no utf8 column {name}"))
            };
            let time = |name: &str| {
                b.column_by_name(name)
                    .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
                    .ok_or_else(|| format!("consent batch {bi}: no timestamp[us] column {name}"))
            };
            let (cid, pid, scope, decision, source_id) = (
                text("consent_id")?,
                text("patient_id")?,
                text("scope")?,
                text("decision")?,
                text("source_id")?,
            );
            let (start, end, decided, known, retracted) = (
                time("period_start")?,
                time("period_end")?,
                time("decided_at")?,
                time("known_at")?,
                time("retracted_at")?,
            );
            let opt = |a: &arrow::array::TimestampMicrosecondArray, i: usize| {
                a.is_valid(i).then(|| a.value(i))
            };
            for i in 0..b.num_rows() {
                let required = [
                    ("consent_id", cid.is_valid(i)),
                    ("patient_id", pid.is_valid(i)),
                    ("scope", scope.is_valid(i)),
                    ("decision", decision.is_valid(i)),
                    ("known_at", known.is_valid(i)),
                ];
                if let Some((name, _)) = required.iter().find(|(_, ok)| !ok) {
                    return Err(format!("consent batch {bi} row {i}: {name} is null"));
                }
                let row = Row {
                    consent_id: cid.value(i),
                    patient_id: pid.value(i),
                    scope: scope.value(i),
                    decision: decision.value(i),
                    period_start: opt(start, i),
                    period_end: opt(end, i),
                    decided_at: opt(decided, i),
                    source_id: if source_id.is_valid(i) {
                        source_id.value(i)
                    } else {
                        ""
                    },
                    known_at: known.value(i),
                    retracted_at: opt(retracted, i),
                };
                if row.known_at > t {
                    continue;
                }
                match latest.get(row.consent_id) {
                    Some(seen)
                        if (seen.known_at, seen.source_id) > (row.known_at, row.source_id) => {}
                    _ => {
                        latest.insert(row.consent_id, row);
                    }
                }
            }
        }
        // Steps 3 and 4.
        let mut decided: BTreeMap<&str, (i64, i64, &str, &str)> = BTreeMap::new();
        for row in latest.values() {
            let in_force = row.retracted_at.is_none_or(|r| r > t)
                && row.period_start.is_none_or(|s| s <= t)
                && row.period_end.is_none_or(|e| e > t);
            if !in_force || scope(row.scope) != Some(RESEARCH) {
                continue;
            }
            let rank = (
                row.decided_at.unwrap_or(row.known_at),
                row.known_at,
                row.consent_id,
                row.decision,
            );
            match decided.get(row.patient_id) {
                Some(seen) if (seen.0, seen.1, seen.2) >= (rank.0, rank.1, rank.2) => {}
                _ => {
                    decided.insert(row.patient_id, rank);
                }
            }
        }
        let mut out = ResearchConsent::default();
        for (patient, (.., d)) in decided {
            if decision(d) == Some(DENY) {
                out.opted_out.insert(patient.to_string());
            } else {
                out.permitted.insert(patient.to_string());
            }
        }
        Ok(out)
    }
}

/// Normalized code systems. Recognizable URIs and OIDs map to these names; anything else is
/// kept as written (a local system) so nothing is lost.
pub mod code_system {
    /// LOINC (labs, vitals).
    pub const LOINC: &str = "LOINC";
    /// SNOMED CT.
    pub const SNOMED: &str = "SNOMED";
    /// ICD-10-CM.
    pub const ICD10CM: &str = "ICD10CM";
    /// ICD-9-CM.
    pub const ICD9CM: &str = "ICD9CM";
    /// RxNorm.
    pub const RXNORM: &str = "RXNORM";
    /// CPT.
    pub const CPT: &str = "CPT";

    /// Normalizes a code system as written in a source (FHIR URI, HL7 v2 coding system name,
    /// OID, or a short name) to one of the constants above; an unrecognized system is
    /// returned trimmed, unchanged.
    pub fn normalize(system: &str) -> String {
        let s = system.trim();
        let lower = s.to_ascii_lowercase();
        let known = match lower.as_str() {
            "http://loinc.org"
            | "loinc"
            | "ln"
            | "lnc"
            | "2.16.840.1.113883.6.1"
            | "urn:oid:2.16.840.1.113883.6.1" => Some(LOINC),
            "http://snomed.info/sct"
            | "snomed"
            | "snomedct"
            | "snomed ct"
            | "sct"
            | "sno"
            | "snm"
            | "2.16.840.1.113883.6.96"
            | "urn:oid:2.16.840.1.113883.6.96" => Some(SNOMED),
            "http://hl7.org/fhir/sid/icd-10-cm"
            | "http://hl7.org/fhir/sid/icd-10"
            | "icd10cm"
            | "icd-10-cm"
            | "icd10"
            | "icd-10"
            | "i10"
            | "i10c"
            | "2.16.840.1.113883.6.90"
            | "urn:oid:2.16.840.1.113883.6.90" => Some(ICD10CM),
            "http://hl7.org/fhir/sid/icd-9-cm"
            | "icd9cm"
            | "icd-9-cm"
            | "icd9"
            | "icd-9"
            | "i9"
            | "i9c"
            | "2.16.840.1.113883.6.103"
            | "urn:oid:2.16.840.1.113883.6.103" => Some(ICD9CM),
            "http://www.nlm.nih.gov/research/umls/rxnorm"
            | "rxnorm"
            | "rxn"
            | "rx"
            | "2.16.840.1.113883.6.88"
            | "urn:oid:2.16.840.1.113883.6.88" => Some(RXNORM),
            "http://www.ama-assn.org/go/cpt"
            | "cpt"
            | "cpt4"
            | "cpt-4"
            | "c4"
            | "2.16.840.1.113883.6.12"
            | "urn:oid:2.16.840.1.113883.6.12" => Some(CPT),
            _ => None,
        };
        known.map(str::to_string).unwrap_or_else(|| s.to_string())
    }

    /// True when `system` (already normalized) is one of the standard systems.
    pub fn is_standard(system: &str) -> bool {
        [LOINC, SNOMED, ICD10CM, ICD9CM, RXNORM, CPT].contains(&system)
    }
}

/// Encounter classes, one vocabulary across sources.
pub mod encounter_class {
    /// An inpatient stay.
    pub const INPATIENT: &str = "inpatient";
    /// An emergency department visit.
    pub const EMERGENCY: &str = "emergency";
    /// An ambulatory (outpatient clinic, wellness) visit.
    pub const AMBULATORY: &str = "ambulatory";
    /// Observation stay.
    pub const OBSERVATION: &str = "observation";
    /// Home health.
    pub const HOME: &str = "home";
    /// Virtual (telehealth) visit.
    pub const VIRTUAL: &str = "virtual";
    /// A skilled nursing facility stay: post-acute, so not [`INPATIENT`] (an SNF stay after
    /// a discharge is not a readmission).
    pub const SNF: &str = "snf";
    /// Hospice care (at home or in a facility).
    pub const HOSPICE: &str = "hospice";
    /// Anything else.
    pub const OTHER: &str = "other";

    /// Maps a source's class (FHIR v3 ActCode, HL7 v2 PV1-2 patient class, Synthea
    /// ENCOUNTERCLASS — `wellness`, `ambulatory`, `outpatient`, `urgentcare`, `emergency`,
    /// `inpatient`, `home`, `virtual`, `snf`, `hospice` — or a word) to the vocabulary;
    /// `None` when unrecognized.
    pub fn normalize(class: &str) -> Option<&'static str> {
        Some(match class.trim().to_ascii_lowercase().as_str() {
            "snf" | "skilled nursing" | "skilled nursing facility" => SNF,
            "hospice" => HOSPICE,
            "imp" | "inpatient" | "acute" | "nonac" | "i" | "inpatient encounter" => INPATIENT,
            "emer" | "emergency" | "e" | "ed" | "urgentcare" | "urgent care" => EMERGENCY,
            "amb" | "ambulatory" | "outpatient" | "o" | "wellness" | "fld" | "r" => AMBULATORY,
            "obsenc" | "observation" | "obs" => OBSERVATION,
            "hh" | "home" | "home health" | "homehealth" => HOME,
            "vr" | "virtual" | "telehealth" => VIRTUAL,
            "other" | "prenc" | "ss" | "b" | "c" | "n" | "u" => OTHER,
            _ => return None,
        })
    }
}

/// Admission types (how urgent the admission was), one vocabulary across sources.
pub mod admission_type {
    /// Emergency admission.
    pub const EMERGENCY: &str = "emergency";
    /// Urgent admission.
    pub const URGENT: &str = "urgent";
    /// Elective (planned) admission.
    pub const ELECTIVE: &str = "elective";
    /// Newborn, trauma and anything else.
    pub const OTHER: &str = "other";

    /// Maps HL7 v2 PV1-4 (table 0007), FHIR `hospitalization.admitSource`/priority words, or
    /// MIMIC-style words to the vocabulary; `None` when unrecognized.
    pub fn normalize(kind: &str) -> Option<&'static str> {
        let k = kind.trim().to_ascii_lowercase();
        Some(match k.as_str() {
            "e" | "emergency" | "emer" | "em" | "ew emer." | "direct emer." | "emr" => EMERGENCY,
            "u" | "urgent" | "ur" => URGENT,
            "r" | "c" | "elective" | "el" | "routine" | "surgical same day admission" => ELECTIVE,
            "n" | "newborn" | "t" | "trauma" | "other" => OTHER,
            _ if k.contains("emer") => EMERGENCY,
            _ if k.contains("urgent") => URGENT,
            _ if k.contains("elective") => ELECTIVE,
            _ => return None,
        })
    }
}

/// Discharge dispositions, one vocabulary across sources: the codes of the FHIR R4 code
/// system `http://terminology.hl7.org/CodeSystem/discharge-disposition`, the one standard
/// list that every source can be mapped onto.
pub mod discharge_disposition {
    /// Home.
    pub const HOME: &str = "home";
    /// Alternative home (another home than the patient's own).
    pub const ALT_HOME: &str = "alt-home";
    /// Other healthcare facility (including another acute hospital).
    pub const OTHER_HCF: &str = "other-hcf";
    /// Hospice.
    pub const HOSPICE: &str = "hosp";
    /// Long-term care.
    pub const LONG_TERM: &str = "long";
    /// Left against medical advice.
    pub const AGAINST_ADVICE: &str = "aadvice";
    /// Expired (died).
    pub const EXPIRED: &str = "exp";
    /// Psychiatric hospital.
    pub const PSYCHIATRIC: &str = "psy";
    /// Rehabilitation facility.
    pub const REHAB: &str = "rehab";
    /// Skilled nursing facility.
    pub const SNF: &str = "snf";
    /// Other.
    pub const OTHER: &str = "oth";

    /// Maps a FHIR `discharge-disposition` code, a UB-04 patient status code (HL7 v2 PV1-36,
    /// table 0112 as used in the US) or a common word to the vocabulary; `None` when
    /// unrecognized. UB-04 codes the FHIR list has no place for go to the nearest one: home
    /// health care (`06`) is `home`, transfers to another hospital or facility (`02`,
    /// `04`, `05`, `43`, `66`, `70`) are `other-hcf`, swing beds and Medicaid nursing
    /// facilities (`61`, `64`) are `snf`.
    pub fn normalize(value: &str) -> Option<&'static str> {
        let v = value.trim().to_ascii_lowercase();
        Some(match v.as_str() {
            "home" | "01" | "1" | "06" | "6" | "home health" | "home_health" => HOME,
            "alt-home" => ALT_HOME,
            "other-hcf" | "02" | "2" | "04" | "4" | "05" | "5" | "43" | "66" | "70"
            | "hospital" | "icf" | "other-facility" => OTHER_HCF,
            "hosp" | "50" | "51" | "hospice" => HOSPICE,
            "long" | "63" | "long-term-care" | "ltc" => LONG_TERM,
            "aadvice" | "07" | "7" | "ama" | "against advice" => AGAINST_ADVICE,
            "exp" | "20" | "40" | "41" | "42" | "expired" | "died" | "dead" => EXPIRED,
            "psy" | "65" | "psych" | "psychiatric" => PSYCHIATRIC,
            "rehab" | "62" => REHAB,
            "snf" | "03" | "3" | "61" | "64" => SNF,
            "oth" | "other" => OTHER,
            _ => return None,
        })
    }
}

/// Hospital services, one vocabulary across sources: lower-case words.
pub mod service {
    /// Maps an HL7 table 0069 (hospital service) code, as HL7 v2 PV1-10 and FHIR
    /// `Encounter.serviceType` codings from that table carry it, to its word (`MED` →
    /// `medicine`); `None` when the code is not one of the table's common codes.
    pub fn from_hl7_0069(code: &str) -> Option<&'static str> {
        Some(match code.trim().to_ascii_uppercase().as_str() {
            "MED" => "medicine",
            "SUR" => "surgery",
            "CAR" => "cardiology",
            "PUL" => "pulmonary",
            "URO" => "urology",
            "ONC" | "HON" | "HEM" => "oncology",
            "OBS" | "OB" | "OBG" => "obstetrics",
            "PED" => "pediatrics",
            "PSY" => "psychiatry",
            "NEU" | "NEUR" => "neurology",
            "ORT" | "ORTH" => "orthopedics",
            _ => return None,
        })
    }
}

/// Provenance and knowledge-time columns shared by every curated row.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Coding {
    /// Normalized code system.
    pub system: String,
    /// The code.
    pub code: String,
    /// Human-readable text, if the source had it.
    pub display: Option<String>,
}

/// A row of `patients`.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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
    pub value_num: Option<f64>,
    /// Text value (when not numeric).
    pub value_text: Option<String>,
    /// Unit of `value_num` (UCUM where the source says so).
    pub unit: Option<String>,
    /// When the sample was taken / the observation made.
    pub effective_time: DateTime<Utc>,
    /// `final`, `preliminary`, `corrected`, ...
    pub status: Option<String>,
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `conditions` (diagnoses).
#[derive(Debug, Clone, PartialEq)]
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
    /// Provenance and knowledge time.
    pub meta: RowMeta,
}

/// A row of `procedures`.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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

/// The rows of every curated table, as produced by one ingest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CuratedTables {
    /// `patients` rows.
    pub patients: Vec<Patient>,
    /// `encounters` rows.
    pub encounters: Vec<Encounter>,
    /// `observations` rows.
    pub observations: Vec<Observation>,
    /// `conditions` rows.
    pub conditions: Vec<Condition>,
    /// `procedures` rows.
    pub procedures: Vec<Procedure>,
    /// `medications` rows.
    pub medications: Vec<Medication>,
    /// `care_team` rows.
    pub care_team: Vec<CareTeamMember>,
    /// `consent` rows.
    pub consent: Vec<Consent>,
}

impl CuratedTables {
    /// Number of rows of one table.
    pub fn len(&self, table: Table) -> usize {
        match table {
            Table::Patients => self.patients.len(),
            Table::Encounters => self.encounters.len(),
            Table::Observations => self.observations.len(),
            Table::Conditions => self.conditions.len(),
            Table::Procedures => self.procedures.len(),
            Table::Medications => self.medications.len(),
            Table::CareTeam => self.care_team.len(),
            Table::Consent => self.consent.len(),
        }
    }

    /// True when no table has a row.
    pub fn is_empty(&self) -> bool {
        Table::ALL.iter().all(|t| self.len(*t) == 0)
    }

    /// Appends the rows of `other`.
    pub fn extend(&mut self, other: CuratedTables) {
        self.patients.extend(other.patients);
        self.encounters.extend(other.encounters);
        self.observations.extend(other.observations);
        self.conditions.extend(other.conditions);
        self.procedures.extend(other.procedures);
        self.medications.extend(other.medications);
        self.care_team.extend(other.care_team);
        self.consent.extend(other.consent);
    }

    /// The parts' rows one after the other, table by table, each table allocated once at
    /// its final size (appending part by part would copy the rows of large tables as they
    /// grow); the tables are joined in parallel.
    pub fn concat(parts: Vec<CuratedTables>) -> CuratedTables {
        fn join<T: Send>(lists: Vec<Vec<T>>) -> Vec<T> {
            let mut all = Vec::with_capacity(lists.iter().map(Vec::len).sum());
            for mut list in lists {
                all.append(&mut list);
            }
            all
        }
        let n = parts.len();
        let (mut pa, mut en, mut ob, mut co, mut pr, mut me, mut ct, mut cs) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for p in parts {
            pa.push(p.patients);
            en.push(p.encounters);
            ob.push(p.observations);
            co.push(p.conditions);
            pr.push(p.procedures);
            me.push(p.medications);
            ct.push(p.care_team);
            cs.push(p.consent);
        }
        // Observations are usually most of the rows: one task, the rest in the other.
        let (
            observations,
            (((patients, encounters), (conditions, procedures)), (medications, care_team)),
        ) = rayon::join(
            || join(ob),
            || {
                rayon::join(
                    || rayon::join(|| (join(pa), join(en)), || (join(co), join(pr))),
                    || (join(me), join(ct)),
                )
            },
        );
        CuratedTables {
            patients,
            encounters,
            observations,
            conditions,
            procedures,
            medications,
            care_team,
            consent: join(cs),
        }
    }

    /// Sorts every table into its canonical order (by id, then source, then knowledge time),
    /// so that the same rows give the same dataset hash whatever order the sources listed
    /// them in.
    pub fn sort_canonical(&mut self) {
        fn key(m: &RowMeta) -> (&str, &str, i64) {
            (
                &m.source_system,
                &m.source_id,
                m.known_at.timestamp_micros(),
            )
        }
        self.patients
            .sort_by(|a, b| (&a.patient_id, key(&a.meta)).cmp(&(&b.patient_id, key(&b.meta))));
        self.encounters.sort_by(|a, b| {
            (&a.patient_id, a.admit_time, &a.encounter_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                b.admit_time,
                &b.encounter_id,
                key(&b.meta),
            ))
        });
        self.observations.sort_by(|a, b| {
            (
                &a.patient_id,
                a.effective_time,
                &a.observation_id,
                key(&a.meta),
            )
                .cmp(&(
                    &b.patient_id,
                    b.effective_time,
                    &b.observation_id,
                    key(&b.meta),
                ))
        });
        self.conditions.sort_by(|a, b| {
            (&a.patient_id, a.onset_time, &a.condition_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                b.onset_time,
                &b.condition_id,
                key(&b.meta),
            ))
        });
        self.procedures.sort_by(|a, b| {
            (
                &a.patient_id,
                a.performed_time,
                &a.procedure_id,
                key(&a.meta),
            )
                .cmp(&(
                    &b.patient_id,
                    b.performed_time,
                    &b.procedure_id,
                    key(&b.meta),
                ))
        });
        self.medications.sort_by(|a, b| {
            (&a.patient_id, a.start_time, &a.medication_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                b.start_time,
                &b.medication_id,
                key(&b.meta),
            ))
        });
        self.care_team.sort_by(|a, b| {
            (&a.patient_id, a.valid_from, &a.clinician_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                b.valid_from,
                &b.clinician_id,
                key(&b.meta),
            ))
        });
        self.consent.sort_by(|a, b| {
            (&a.patient_id, &a.consent_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                &b.consent_id,
                key(&b.meta),
            ))
        });
    }

    /// Every non-empty table's record batch, in [`Table::ALL`] order, built in parallel
    /// (one table a task).
    ///
    /// # Errors
    /// An Arrow error building a batch.
    pub fn to_batches(&self) -> Result<Vec<(Table, RecordBatch)>, ArrowError> {
        use rayon::prelude::*;
        Table::ALL
            .as_slice()
            .par_iter()
            .filter(|t| self.len(**t) > 0)
            .map(|t| self.to_batch(*t).map(|b| (*t, b)))
            .collect()
    }

    /// Builds the record batch of one table, in the current row order.
    ///
    /// # Errors
    /// Only if the builders disagree with the schema, which would be a bug in this module.
    pub fn to_batch(&self, table: Table) -> Result<RecordBatch, ArrowError> {
        let mut b = Columns::new(self.len(table));
        match table {
            Table::Patients => self.patients.iter().for_each(|r| b.patient(r)),
            Table::Encounters => self.encounters.iter().for_each(|r| b.encounter(r)),
            Table::Observations => self.observations.iter().for_each(|r| b.observation(r)),
            Table::Conditions => self.conditions.iter().for_each(|r| b.condition(r)),
            Table::Procedures => self.procedures.iter().for_each(|r| b.procedure(r)),
            Table::Medications => self.medications.iter().for_each(|r| b.medication(r)),
            Table::CareTeam => self.care_team.iter().for_each(|r| b.care_team(r)),
            Table::Consent => self.consent.iter().for_each(|r| b.consent(r)),
        }
        b.finish(table.schema())
    }
}

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
    /// Sets `retracted_at` of row `row` of `table` to `at`, or keeps the earlier time it
    /// already has. A row that does not exist is left alone.
    fn retract(&mut self, table: Table, row: usize, at: DateTime<Utc>);
    /// A hint: about `rows` rows are coming for each table that gets any, so storage can be
    /// sized once rather than grown.
    fn expect_rows(&mut self, rows: usize) {
        let _ = rows;
    }
}

/// `retracted_at` after a retraction at `at`: the earlier of the two.
fn retracted(current: Option<DateTime<Utc>>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(current.map_or(at, |r| r.min(at)))
}

impl RowSink for CuratedTables {
    fn rows(&self, table: Table) -> usize {
        self.len(table)
    }
    fn patient(&mut self, r: Patient) {
        self.patients.push(r);
    }
    fn encounter(&mut self, r: Encounter) {
        self.encounters.push(r);
    }
    fn observation(&mut self, r: Observation) {
        self.observations.push(r);
    }
    fn condition(&mut self, r: Condition) {
        self.conditions.push(r);
    }
    fn procedure(&mut self, r: Procedure) {
        self.procedures.push(r);
    }
    fn medication(&mut self, r: Medication) {
        self.medications.push(r);
    }
    fn care_team(&mut self, r: CareTeamMember) {
        self.care_team.push(r);
    }
    fn consent(&mut self, r: Consent) {
        self.consent.push(r);
    }
    fn retract(&mut self, table: Table, row: usize, at: DateTime<Utc>) {
        let meta = match table {
            Table::Patients => self.patients.get_mut(row).map(|r| &mut r.meta),
            Table::Encounters => self.encounters.get_mut(row).map(|r| &mut r.meta),
            Table::Observations => self.observations.get_mut(row).map(|r| &mut r.meta),
            Table::Conditions => self.conditions.get_mut(row).map(|r| &mut r.meta),
            Table::Procedures => self.procedures.get_mut(row).map(|r| &mut r.meta),
            Table::Medications => self.medications.get_mut(row).map(|r| &mut r.meta),
            Table::CareTeam => self.care_team.get_mut(row).map(|r| &mut r.meta),
            Table::Consent => self.consent.get_mut(row).map(|r| &mut r.meta),
        };
        if let Some(m) = meta {
            m.retracted_at = retracted(m.retracted_at, at);
        }
    }
}

/// Curated rows held as Arrow column builders, one set per table: a row costs its bytes in
/// the columns, not a struct and a heap string per field. Parsers fill one per run of input
/// in parallel; [`CuratedColumns::concat`] joins them into one record batch per table.
pub struct CuratedColumns {
    /// One per table, in [`Table::ALL`] order.
    tables: Vec<Columns>,
}

impl Default for CuratedColumns {
    fn default() -> Self {
        CuratedColumns {
            tables: Table::ALL.iter().map(|_| Columns::new(0)).collect(),
        }
    }
}

impl CuratedColumns {
    fn table(&mut self, table: Table) -> Option<&mut Columns> {
        self.tables.get_mut(table as usize)
    }

    /// The parts' rows one after the other, one record batch per non-empty table, in
    /// [`Table::ALL`] order. The columns are joined one after the other: on two cores,
    /// joining them in parallel measured twice as slow (both threads fault in fresh pages
    /// for the output at once).
    ///
    /// # Errors
    /// Only if the builders disagree with the schema, which would be a bug in this module.
    pub fn concat(parts: Vec<CuratedColumns>) -> Result<Vec<(Table, RecordBatch)>, ArrowError> {
        // Per table, the parts' builders, to be finished into arrays (a list per column).
        let mut per_table: Vec<Vec<Columns>> = Table::ALL.iter().map(|_| Vec::new()).collect();
        for part in parts {
            for (list, cols) in per_table.iter_mut().zip(part.tables) {
                if cols.len() > 0 {
                    list.push(cols);
                }
            }
        }
        Table::ALL
            .iter()
            .zip(per_table)
            .filter(|(_, list)| !list.is_empty())
            .map(|(table, list)| {
                let schema = table.schema();
                let parts: Vec<Vec<ArrayRef>> =
                    list.into_iter().map(|cols| cols.arrays(&schema)).collect();
                let columns: Vec<ArrayRef> = match <[_; 1]>::try_from(parts) {
                    // One part: its arrays are the table's.
                    Ok([one]) => one,
                    Err(parts) => (0..schema.fields().len())
                        .map(|c| {
                            let arrays: Vec<&dyn arrow::array::Array> = parts
                                .iter()
                                .filter_map(|p| p.get(c))
                                .map(|a| a.as_ref())
                                .collect();
                            arrow::compute::concat(&arrays)
                        })
                        .collect::<Result<_, _>>()?,
                };
                Ok((*table, RecordBatch::try_new(schema, columns)?))
            })
            .collect()
    }
}

impl RowSink for CuratedColumns {
    fn rows(&self, table: Table) -> usize {
        self.tables.get(table as usize).map_or(0, Columns::len)
    }
    fn patient(&mut self, r: Patient) {
        if let Some(b) = self.table(Table::Patients) {
            b.patient(&r);
        }
    }
    fn encounter(&mut self, r: Encounter) {
        if let Some(b) = self.table(Table::Encounters) {
            b.encounter(&r);
        }
    }
    fn observation(&mut self, r: Observation) {
        if let Some(b) = self.table(Table::Observations) {
            b.observation(&r);
        }
    }
    fn condition(&mut self, r: Condition) {
        if let Some(b) = self.table(Table::Conditions) {
            b.condition(&r);
        }
    }
    fn procedure(&mut self, r: Procedure) {
        if let Some(b) = self.table(Table::Procedures) {
            b.procedure(&r);
        }
    }
    fn medication(&mut self, r: Medication) {
        if let Some(b) = self.table(Table::Medications) {
            b.medication(&r);
        }
    }
    fn care_team(&mut self, r: CareTeamMember) {
        if let Some(b) = self.table(Table::CareTeam) {
            b.care_team(&r);
        }
    }
    fn consent(&mut self, r: Consent) {
        if let Some(b) = self.table(Table::Consent) {
            b.consent(&r);
        }
    }
    fn expect_rows(&mut self, rows: usize) {
        for t in &mut self.tables {
            t.rows = t.rows.max(rows);
        }
    }
    fn retract(&mut self, table: Table, row: usize, at: DateTime<Utc>) {
        let cell = self.table(table).and_then(|b| b.retracted.get_mut(row));
        if let Some(cell) = cell {
            let current = cell.and_then(DateTime::from_timestamp_micros);
            *cell = retracted(current, at).map(|t| t.timestamp_micros());
        }
    }
}

/// Column builders addressed by position, so each table's row method below stays one line a
/// column. A builder is created on first use with the type that use implies, sized for the
/// expected rows (and a guess at their text), so that it is not grown and copied row by row.
/// `retracted_at`, always the last column, is kept as plain values until the end so that a
/// later version can still retract a row.
struct Columns {
    rows: usize,
    cols: Vec<Option<Col>>,
    retracted: Vec<Option<i64>>,
}

enum Col {
    Str(StringBuilder),
    Ts(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    F64(Float64Builder),
}

/// Bytes of text a string column reserves per row up front (ids are 36, codes fewer); past
/// that the builder grows as usual.
const TEXT_BYTES_PER_ROW: usize = 16;

impl Columns {
    /// Builders for about `rows` rows.
    fn new(rows: usize) -> Self {
        Columns {
            rows,
            cols: Vec::new(),
            retracted: Vec::new(),
        }
    }

    /// Rows appended so far (each row ends with its `meta`).
    fn len(&self) -> usize {
        self.retracted.len()
    }

    fn patient(&mut self, r: &Patient) {
        self.str(0, Some(&r.patient_id));
        self.date(1, r.birth_date);
        self.str(2, r.sex.as_deref());
        self.ts(3, r.death_time);
        self.str(4, r.zip.as_deref());
        self.str(5, r.given_name.as_deref());
        self.str(6, r.family_name.as_deref());
        self.meta(7, &r.meta);
    }

    fn encounter(&mut self, r: &Encounter) {
        self.str(0, Some(&r.encounter_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, Some(&r.class));
        self.ts(3, Some(r.admit_time));
        self.ts(4, r.discharge_time);
        self.str(5, r.admission_type.as_deref());
        self.str(6, r.discharge_disposition.as_deref());
        self.str(7, r.service.as_deref());
        self.str(8, r.code.as_ref().map(|c| c.system.as_str()));
        self.str(9, r.code.as_ref().map(|c| c.code.as_str()));
        self.str(10, r.code.as_ref().and_then(|c| c.display.as_deref()));
        self.meta(11, &r.meta);
    }

    fn observation(&mut self, r: &Observation) {
        self.str(0, Some(&r.observation_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.str(3, r.category.as_deref());
        self.coding(4, &r.code);
        self.f64(7, r.value_num);
        self.str(8, r.value_text.as_deref());
        self.str(9, r.unit.as_deref());
        self.ts(10, Some(r.effective_time));
        self.str(11, r.status.as_deref());
        self.meta(12, &r.meta);
    }

    fn condition(&mut self, r: &Condition) {
        self.str(0, Some(&r.condition_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.coding(3, &r.code);
        self.ts(6, Some(r.onset_time));
        self.ts(7, r.abatement_time);
        self.meta(8, &r.meta);
    }

    fn procedure(&mut self, r: &Procedure) {
        self.str(0, Some(&r.procedure_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.coding(3, &r.code);
        self.ts(6, Some(r.performed_time));
        self.ts(7, r.performed_end);
        self.meta(8, &r.meta);
    }

    fn medication(&mut self, r: &Medication) {
        self.str(0, Some(&r.medication_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.coding(3, &r.code);
        self.ts(6, Some(r.start_time));
        self.ts(7, r.end_time);
        self.str(8, r.status.as_deref());
        self.meta(9, &r.meta);
    }

    fn care_team(&mut self, r: &CareTeamMember) {
        self.str(0, Some(&r.patient_id));
        self.str(1, Some(&r.clinician_id));
        self.str(2, r.role.as_deref());
        self.ts(3, Some(r.valid_from));
        self.ts(4, r.valid_to);
        self.meta(5, &r.meta);
    }

    fn consent(&mut self, r: &Consent) {
        self.str(0, Some(&r.consent_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, Some(&r.scope));
        self.str(3, Some(&r.decision));
        self.ts(4, r.period_start);
        self.ts(5, r.period_end);
        self.ts(6, r.decided_at);
        self.meta(7, &r.meta);
    }

    fn slot(&mut self, i: usize, make: impl FnOnce(usize) -> Col) -> &mut Col {
        if self.cols.len() <= i {
            self.cols.resize_with(i + 1, || None);
        }
        let rows = self.rows;
        self.cols[i].get_or_insert_with(|| make(rows))
    }

    fn str(&mut self, i: usize, v: Option<&str>) {
        let make = |n| Col::Str(StringBuilder::with_capacity(n, n * TEXT_BYTES_PER_ROW));
        if let Col::Str(b) = self.slot(i, make) {
            b.append_option(v);
        }
    }

    fn ts(&mut self, i: usize, v: Option<DateTime<Utc>>) {
        let make = |n| Col::Ts(TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"));
        if let Col::Ts(b) = self.slot(i, make) {
            b.append_option(v.map(|t| t.timestamp_micros()));
        }
    }

    fn date(&mut self, i: usize, v: Option<NaiveDate>) {
        if let Col::Date(b) = self.slot(i, |n| Col::Date(Date32Builder::with_capacity(n))) {
            b.append_option(v.map(date_to_days));
        }
    }

    fn f64(&mut self, i: usize, v: Option<f64>) {
        if let Col::F64(b) = self.slot(i, |n| Col::F64(Float64Builder::with_capacity(n))) {
            b.append_option(v);
        }
    }

    fn coding(&mut self, i: usize, c: &Coding) {
        self.str(i, Some(&c.system));
        self.str(i + 1, Some(&c.code));
        self.str(i + 2, c.display.as_deref());
    }

    /// The four shared columns from `i`; `retracted_at` (`i + 3`) is kept aside.
    fn meta(&mut self, i: usize, m: &RowMeta) {
        self.str(i, Some(&m.source_system));
        self.str(i + 1, Some(&m.source_id));
        self.ts(i + 2, Some(m.known_at));
        if self.retracted.capacity() == 0 {
            self.retracted.reserve(self.rows);
        }
        self.retracted
            .push(m.retracted_at.map(|t| t.timestamp_micros()));
    }

    /// The columns as arrays of `schema`'s types (a column never appended to is empty).
    fn arrays(self, schema: &SchemaRef) -> Vec<ArrayRef> {
        let n = schema.fields().len();
        let mut cols = self.cols;
        cols.resize_with(n.saturating_sub(1), || None);
        let mut arrays: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .zip(cols)
            .map(|(field, col)| match col {
                None => arrow::array::new_empty_array(field.data_type()),
                Some(Col::Str(mut b)) => Arc::new(b.finish()) as ArrayRef,
                Some(Col::Ts(mut b)) => Arc::new(b.finish()) as ArrayRef,
                Some(Col::Date(mut b)) => Arc::new(b.finish()) as ArrayRef,
                Some(Col::F64(mut b)) => Arc::new(b.finish()) as ArrayRef,
            })
            .collect();
        let retracted = TimestampMicrosecondArray::from(self.retracted).with_timezone("UTC");
        arrays.push(Arc::new(retracted));
        arrays
    }

    fn finish(self, schema: SchemaRef) -> Result<RecordBatch, ArrowError> {
        let arrays = self.arrays(&schema);
        RecordBatch::try_new(schema, arrays)
    }
}

/// Days since 1970-01-01, the Arrow `date32` value of a date.
pub fn date_to_days(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid epoch")).num_days() as i32
}
