//! Normalized code systems. Recognizable URIs and OIDs map to these names; anything else is
//! kept as written (a local system) so nothing is lost.

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
/// CVX (CDC vaccine codes, HL7 table 0292).
pub const CVX: &str = "CVX";

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
        "http://hl7.org/fhir/sid/cvx"
        | "cvx"
        | "2.16.840.1.113883.12.292"
        | "urn:oid:2.16.840.1.113883.12.292" => Some(CVX),
        _ => None,
    };
    known.map(str::to_string).unwrap_or_else(|| s.to_string())
}

/// True when `system` (already normalized) is one of the standard systems.
pub fn is_standard(system: &str) -> bool {
    [LOINC, SNOMED, ICD10CM, ICD9CM, RXNORM, CPT, CVX].contains(&system)
}
