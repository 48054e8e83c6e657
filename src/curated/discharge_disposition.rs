//! Discharge dispositions, one vocabulary across sources: the codes of the FHIR R4 code
//! system `http://terminology.hl7.org/CodeSystem/discharge-disposition`, the one standard
//! list that every source can be mapped onto.

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
        "other-hcf" | "02" | "2" | "04" | "4" | "05" | "5" | "43" | "66" | "70" | "hospital"
        | "icf" | "other-facility" => OTHER_HCF,
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
