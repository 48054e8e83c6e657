//! Admission types (how urgent the admission was), one vocabulary across sources.

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
