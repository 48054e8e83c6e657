//! Encounter classes, one vocabulary across sources.

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
