//! Encounter → `encounters`, and its participants → `care_team`.

use super::codes::{codings, first_code, pick_coding, string};
use super::curate::Head;
use super::index::conditional_reference;
use super::outcome::{Fault, Fx, Rows};
use super::resolve::{patient_ref, Ref, Resolver, Target};
use super::time::time;
use crate::curated::{
    admission_type, discharge_disposition, encounter_class, service, CareTeamMember, Encounter,
};
use crate::ingest::json::{Kind, Value};
use crate::ingest::Context;

pub(super) fn encounter(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
    extra: &mut Vec<Fault>,
) -> Fx<Rows> {
    let patient_id = patient_ref(res, "Encounter", rz)?;
    let period = res.get("period");
    let admit_time = match period {
        Some(p) => time(p, "start", &["Encounter.period"], ctx)?,
        None => None,
    }
    .ok_or_else(|| Fault::missing("Encounter.period.start"))?;
    let discharge_time = match period {
        Some(p) => time(p, "end", &["Encounter.period"], ctx)?,
        None => None,
    };
    // R4 `class` is a Coding; R5 made it a list of CodeableConcepts.
    let class = res.get("class");
    let class_code = match class.map(Value::kind) {
        Some(Kind::Array(mut list)) => list
            .next()
            .and_then(|cc| cc.get("coding"))
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("code"))
            .and_then(Value::as_str),
        Some(_) => class.and_then(|c| c.get("code")).and_then(Value::as_str),
        None => None,
    };
    let class = class_code
        .and_then(encounter_class::normalize)
        .unwrap_or(encounter_class::OTHER);
    let hosp = res.get("hospitalization");
    let admission = admission_kind(res.get("priority"))
        .or_else(|| admission_kind(hosp.and_then(|h| h.get("admitSource"))));
    // Dispositions into the curated vocabulary (the discharge-disposition codes; UB-04
    // codes and common words mapped); anything else kept as written.
    let disposition = hosp
        .and_then(|h| h.get("dischargeDisposition"))
        .and_then(|cc| first_code(cc).or_else(|| string(cc, "text")))
        .map(|d| discharge_disposition::normalize(&d).map_or(d, str::to_string));
    // A v2 table 0069 coding gives the curated word (`MED` → `medicine`); otherwise the
    // concept's text, else a coding's display or code.
    let service = res.get("serviceType").and_then(|cc| {
        codings(cc)
            .find_map(|c| {
                let from_0069 = string(c, "system").is_some_and(|s| s.ends_with("/v2-0069"));
                from_0069
                    .then(|| string(c, "code"))
                    .flatten()
                    .and_then(|code| service::from_hl7_0069(&code))
                    .map(str::to_string)
            })
            .or_else(|| string(cc, "text"))
            .or_else(|| {
                codings(cc).find_map(|c| string(c, "display").or_else(|| string(c, "code")))
            })
    });
    let code = res
        .get("type")
        .and_then(|t| t.get(0))
        .and_then(|cc| pick_coding(cc, "Encounter.type", &[]).ok());
    let encounter_id = head.row_id.clone();

    let mut team = Vec::new();
    let participants = res.get("participant").and_then(Value::as_array);
    for (i, p) in participants.into_iter().flatten().enumerate() {
        let field = || format!("Encounter.participant[{i}].individual");
        let individual = p.get("individual");
        let reference = individual
            .and_then(|x| x.get("reference"))
            .and_then(Value::as_str);
        let clinician: String = match reference {
            // A logical reference: `Reference.identifier` (and perhaps `type`) alone.
            None => match individual.map(logical_practitioner) {
                None | Some(Ok(None)) => continue,
                Some(Ok(Some((system, value)))) => clinician_of(rz, system, value),
                Some(Err(detail)) => {
                    let f = format!("{}.identifier", field());
                    extra.push(Fault::new(f, "bad_value", detail));
                    continue;
                }
            },
            Some(reference) => match conditional_reference(reference) {
                Some(Ok(("Practitioner", system, value))) => clinician_of(rz, &system, &value),
                // RelatedPerson, PractitionerRole: not a clinician Ward authenticates.
                Some(Ok(_)) => continue,
                Some(Err(detail)) => {
                    extra.push(Fault::new(field(), "bad_value", detail));
                    continue;
                }
                None => match rz.resolve(reference) {
                    Ref::To(Target {
                        rtype: "Practitioner",
                        id,
                    }) => id.to_string(),
                    // RelatedPerson, PractitionerRole: not a clinician Ward authenticates.
                    Ref::To(_) => continue,
                    Ref::Dangling => {
                        let detail = format!("{reference:?} resolves to nothing in the input");
                        extra.push(Fault::new(field(), "dangling_reference", detail));
                        continue;
                    }
                    Ref::Contained(_) | Ref::Unparseable => {
                        let detail = format!("{reference:?} does not name a Practitioner");
                        extra.push(Fault::new(field(), "bad_value", detail));
                        continue;
                    }
                },
            },
        };
        let pp = p.get("period");
        let bounds = pp.map_or(Ok((None, None)), |pp| {
            let path = format!("Encounter.participant[{i}].period");
            let from = time(pp, "start", &[&path], ctx)?;
            let to = time(pp, "end", &[&path], ctx)?;
            Ok((from, to))
        });
        let (from, to) = match bounds {
            Ok(b) => b,
            Err(f) => {
                extra.push(f);
                continue;
            }
        };
        let role = p
            .get("type")
            .and_then(|t| t.get(0))
            .and_then(first_code)
            .map(|c| participant_role(&c));
        team.push(CareTeamMember {
            patient_id: patient_id.clone(),
            clinician_id: clinician,
            role,
            valid_from: from.unwrap_or(admit_time),
            valid_to: if from.is_some() || to.is_some() {
                to
            } else {
                discharge_time
            },
            meta: head.meta.clone(),
        });
    }
    Ok(Rows::Encounter(
        Box::new(Encounter {
            encounter_id,
            patient_id,
            class: class.to_string(),
            admit_time,
            discharge_time,
            admission_type: admission.map(str::to_string),
            discharge_disposition: disposition,
            service,
            code,
            meta: head.meta.clone(),
        }),
        team,
    ))
}

/// The `(system, value)` of a logical reference (`Reference.identifier`, no `reference`) to
/// a Practitioner: `None` when there is no identifier or `Reference.type` names another
/// type; an error (its detail) when the identifier lacks a system or a value. Without a
/// `type`, an `Encounter.participant.individual` identifier is read as a Practitioner's.
pub(super) fn logical_practitioner(individual: Value<'_>) -> Result<Option<(&str, &str)>, String> {
    let Some(ident) = individual.get("identifier") else {
        return Ok(None);
    };
    let rtype = individual.get("type").and_then(Value::as_str);
    if rtype.is_some_and(|t| t.rsplit('/').next() != Some("Practitioner")) {
        return Ok(None);
    }
    let system = ident.get("system").and_then(Value::as_str).map(str::trim);
    let value = ident.get("value").and_then(Value::as_str).map(str::trim);
    match (system, value) {
        (Some(s), Some(v)) if !s.is_empty() && !v.is_empty() => Ok(Some((s, v))),
        _ => Err(
            "a logical reference needs an identifier with both a system and a value: \
                  a value alone could be read as another clinician's id"
                .to_string(),
        ),
    }
}

/// The clinician id of the Practitioner with the identifier `system|value`: the id of the
/// Practitioner of the input that has it, else `system|value` itself, which can never be a
/// FHIR id (an id has no `|`), so it never names another clinician.
pub(super) fn clinician_of(rz: &Resolver<'_, '_>, system: &str, value: &str) -> String {
    rz.by_identifier("Practitioner", system, value)
        .map_or_else(|| format!("{system}|{value}"), str::to_string)
}

/// Admission type from `priority` (v3 ActPriority) or `hospitalization.admitSource`.
pub(super) fn admission_kind(cc: Option<Value<'_>>) -> Option<&'static str> {
    let cc = cc?;
    codings(cc)
        .find_map(|c| {
            let code = c.get("code").and_then(Value::as_str);
            // admitSource "emd": from the accident and emergency department.
            let code = if code == Some("emd") {
                Some("emergency")
            } else {
                code
            };
            code.and_then(admission_type::normalize).or_else(|| {
                c.get("display")
                    .and_then(Value::as_str)
                    .and_then(admission_type::normalize)
            })
        })
        .or_else(|| {
            cc.get("text")
                .and_then(Value::as_str)
                .and_then(admission_type::normalize)
        })
}

/// v3 ParticipationType codes as the words `care_team.role` uses.
pub(super) fn participant_role(code: &str) -> String {
    match code {
        "ATND" => "attending",
        "ADM" => "admitting",
        "DIS" => "discharger",
        "CON" => "consultant",
        "REF" => "referrer",
        "PPRF" => "primary",
        "SPRF" => "secondary",
        "PART" => "participant",
        "translator" => "translator",
        "emergency" => "emergency",
        other => other,
    }
    .to_string()
}
