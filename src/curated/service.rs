//! Hospital services, one vocabulary across sources: lower-case words.

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
