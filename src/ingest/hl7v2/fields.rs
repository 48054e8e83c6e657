//! Field mappings: HL7 v2 fields and tables into the curated vocabularies (classes,
//! admission types, dispositions, services, sexes, result statuses, OBX codes and values).

use super::segment::{Msg, Seg};
use super::state::Upd;
use crate::curated::{
    admission_type, code_system, discharge_disposition, encounter_class, service, Coding,
};

/// The visit number: PV1-19, else PID-18 when it is typed `VN` (visit number); written
/// `number^authority` when the assigning authority (CX.4) is given, since visit numbers are
/// only unique within their authority.
pub(super) fn visit_number(
    m: &Msg<'_>,
    pv1: Option<&Seg<'_>>,
    pid: Option<&Seg<'_>>,
) -> Option<String> {
    let cx = |seg: &Seg<'_>, field: usize| -> Option<String> {
        let id = m.get(seg, field, 1)?;
        Some(match m.get(seg, field, 4) {
            Some(authority) => format!("{id}^{authority}"),
            None => id,
        })
    };
    pv1.and_then(|s| cx(s, 19)).or_else(|| {
        let pid = pid?;
        let kind = m.get(pid, 18, 5)?;
        kind.eq_ignore_ascii_case("VN")
            .then(|| cx(pid, 18))
            .flatten()
    })
}

/// The class an event implies when PV1-2 cannot be mapped (e.g. `P`, pre-admit): an A01
/// admits an inpatient, an A04 registers an outpatient.
pub(super) fn implied_class(trigger: &str) -> &'static str {
    match trigger {
        "A01" | "A02" | "A03" | "A06" => encounter_class::INPATIENT,
        "A04" | "A07" => encounter_class::AMBULATORY,
        _ => encounter_class::OTHER,
    }
}

pub(super) fn map_upd(u: Upd<String>, f: fn(&str) -> String) -> Upd<String> {
    match u {
        Upd::Set(s) => Upd::Set(f(&s)),
        Upd::Keep => Upd::Keep,
        Upd::Clear => Upd::Clear,
    }
}

/// UB-04 admission priority codes, which many HL7 v2.3 senders put in PV1-4.
pub(super) fn ub04_admission_type(s: &str) -> Option<&'static str> {
    Some(match s.trim() {
        "1" => admission_type::EMERGENCY,
        "2" => admission_type::URGENT,
        "3" => admission_type::ELECTIVE,
        "4" | "5" => admission_type::OTHER,
        _ => return None,
    })
}

/// HL7 table 0001 to the curated vocabulary.
pub(super) fn map_sex(s: &str) -> Option<&'static str> {
    Some(match s.trim().to_ascii_uppercase().as_str() {
        "F" => "female",
        "M" => "male",
        "O" | "A" | "X" => "other",
        "U" | "N" => "unknown",
        _ => return None,
    })
}

/// PV1-36 (UB-04 patient status, table 0112) to the curated vocabulary
/// ([`discharge_disposition`]); other values kept as written.
pub(super) fn map_disposition(s: &str) -> String {
    discharge_disposition::normalize(s).map_or_else(|| s.trim().to_string(), str::to_string)
}

/// PV1-10 (hospital service, table 0069) to the curated words ([`service`]); other values
/// kept as written.
pub(super) fn map_service(s: &str) -> String {
    service::from_hl7_0069(s).map_or_else(|| s.trim().to_string(), str::to_string)
}

/// HL7 table 0085 (observation result status) to the FHIR-style words curated rows use.
pub(super) fn map_result_status(s: &str) -> String {
    match s {
        "F" | "U" => "final",
        "C" => "corrected",
        "P" | "R" | "S" => "preliminary",
        "I" | "O" => "registered",
        "X" | "N" => "cancelled",
        "D" | "W" => "entered-in-error",
        other => other,
    }
    .to_string()
}

/// OBX-3 as a coding: the primary triplet, or the alternate one when only it is LOINC.
pub(super) fn obx_code(m: &Msg<'_>, seg: &Seg<'_>) -> Option<Coding> {
    let triplet = |c: usize| -> Option<Coding> {
        let code = m.get(seg, 3, c)?;
        Some(Coding {
            system: m
                .get(seg, 3, c + 2)
                .map(|s| code_system::normalize(&s))
                .unwrap_or_else(|| "local".to_string()),
            code,
            display: m.get(seg, 3, c + 1),
        })
    };
    let primary = triplet(1);
    let alternate = triplet(4);
    match (primary, alternate) {
        (Some(p), Some(a)) if p.system != code_system::LOINC && a.system == code_system::LOINC => {
            Some(a)
        }
        (Some(p), _) => Some(p),
        (None, a) => a,
    }
}

/// A decimal number as HL7 NM writes it (no exponent, no `inf`).
pub(super) fn parse_num(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty()
        || !s.bytes().any(|b| b.is_ascii_digit())
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// OBX-5 by OBX-2: a number for NM and plain SN, text otherwise (a number that does not
/// parse is kept as text rather than lost).
pub(super) fn obx_value(m: &Msg<'_>, seg: &Seg<'_>) -> (Option<f64>, Option<String>) {
    let enc = &m.enc;
    let vtype = m
        .get(seg, 2, 1)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    let reps: Vec<&str> = enc
        .reps(seg.field(5))
        .filter(|r| !r.trim().is_empty() && r.trim() != "\"\"")
        .collect();
    let Some(first) = reps.first() else {
        return (None, None);
    };
    let joined = |f: &dyn Fn(&str) -> Option<String>| -> Option<String> {
        let v: Vec<String> = reps.iter().filter_map(|r| f(r)).collect();
        (!v.is_empty()).then(|| v.join("\n"))
    };
    match vtype.as_str() {
        "NM" => {
            let text = enc.text(first);
            match text.as_deref().and_then(parse_num) {
                Some(v) if reps.len() == 1 => (Some(v), None),
                Some(v) => (Some(v), joined(&|r| enc.text(r))),
                None => (None, joined(&|r| enc.text(r))),
            }
        }
        "SN" => {
            let part = |n: usize| enc.text(enc.comp(first, n));
            let (cmp, n1, sep, n2) = (part(1), part(2), part(3), part(4));
            let plain = matches!(cmp.as_deref(), None | Some("=")) && sep.is_none() && n2.is_none();
            match n1.as_deref().and_then(parse_num) {
                Some(v) if plain => (Some(v), None),
                _ => {
                    let s: String = [cmp, n1, sep, n2].into_iter().flatten().collect();
                    (None, (!s.is_empty()).then_some(s))
                }
            }
        }
        "CE" | "CWE" | "CNE" | "CF" => (
            None,
            joined(&|r| {
                enc.text(enc.sub(enc.comp(r, 2), 1))
                    .or_else(|| enc.text(enc.sub(enc.comp(r, 1), 1)))
            }),
        ),
        _ => {
            let v = joined(&|r| enc.text(r));
            (None, v)
        }
    }
}
