//! Patient → `patients`.

use super::codes::{preferred, string};
use super::curate::Head;
use super::outcome::{Fault, Fx};
use super::time::{parse_date, time};
use crate::curated::{Patient, PatientIdentifier};
use crate::ingest::json::{Kind, Value};
use crate::ingest::Context;

pub(super) fn patient(res: Value<'_>, head: &Head, ctx: &Context) -> Fx<Patient> {
    let Some(patient_id) = head.id.clone() else {
        return Err(Fault::missing("Patient.id"));
    };
    let birth_date = match res.get("birthDate").map(Value::kind) {
        None | Some(Kind::Null) => None,
        Some(Kind::String(s)) => Some(parse_date(s).ok_or_else(|| {
            Fault::new(
                "Patient.birthDate",
                "bad_date",
                format!("{s:?} is not a FHIR date"),
            )
        })?),
        Some(_) => return Err(Fault::new("Patient.birthDate", "bad_date", "not a string")),
    };
    let death_time = time(res, "deceasedDateTime", &["Patient"], ctx)?;
    let address = preferred(res.get("address"), "home");
    let name = preferred(res.get("name"), "official");
    let given = name
        .and_then(|n| n.get("given"))
        .and_then(Value::as_array)
        .map(|g| g.filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
        .filter(|g| !g.is_empty());
    let family = name.and_then(|n| match n.get("family").map(Value::kind) {
        Some(Kind::String(s)) => Some(s.to_string()),
        // DSTU2 wrote family as a list of strings.
        Some(Kind::Array(parts)) => {
            let joined: Vec<&str> = parts.filter_map(Value::as_str).collect();
            (!joined.is_empty()).then(|| joined.join(" "))
        }
        _ => None,
    });
    Ok(Patient {
        patient_id,
        birth_date,
        sex: string(res, "gender"),
        death_time,
        zip: address.and_then(|a| string(a, "postalCode")),
        given_name: given,
        family_name: family,
        meta: head.meta.clone(),
    })
}

/// A Patient's identifiers (`Patient.identifier`: system and value, with `type`'s first
/// code) and links (`Patient.link`: `other` as a reference to another Patient, or as a
/// logical reference by identifier), as `patient_identifiers` rows for the master patient
/// index. An identifier without a system is left out: without its namespace a value would be
/// matched against every other source's numbers (FHIR R4 2.24.0.1: `system` scopes `value`).
/// A Patient without an id has no rows (nothing to attach them to).
pub(super) fn identifiers(res: Value<'_>, head: &Head) -> Vec<PatientIdentifier> {
    let Some(patient_id) = head.id.clone() else {
        return Vec::new();
    };
    let row =
        |kind: &str, system: String, value: String, type_code: Option<String>| PatientIdentifier {
            patient_id: patient_id.clone(),
            kind: kind.to_string(),
            system,
            value,
            type_code,
            meta: head.meta.clone(),
        };
    let system_value = |ident: Value<'_>| -> Option<(String, String)> {
        let system = string(ident, "system").filter(|s| !s.trim().is_empty())?;
        let value = string(ident, "value").filter(|s| !s.trim().is_empty())?;
        Some((system.trim().to_string(), value.trim().to_string()))
    };
    let mut out = Vec::new();
    if let Some(list) = res.get("identifier").and_then(Value::as_array) {
        for ident in list {
            let Some((system, value)) = system_value(ident) else {
                continue;
            };
            let type_code = ident
                .get("type")
                .and_then(|t| t.get("coding"))
                .and_then(Value::as_array)
                .and_then(|mut c| c.find_map(|c| string(c, "code")));
            out.push(row("identifier", system, value, type_code));
        }
    }
    if let Some(list) = res.get("link").and_then(Value::as_array) {
        for link in list {
            let Some(other) = link.get("other") else {
                continue;
            };
            let kind = string(link, "type");
            let by_ref = string(other, "reference").and_then(|r| patient_ref(&r));
            if let Some(id) = by_ref {
                out.push(row("link", "Patient".to_string(), id, kind));
            } else if let Some((system, value)) = other.get("identifier").and_then(system_value) {
                out.push(row("link", system, value, kind));
            }
        }
    }
    out
}

/// The Patient id a reference names: `Patient/123`, `http://host/fhir/Patient/123`,
/// `Patient/123/_history/2`, or `urn:uuid:...` (a Bundle entry's fullUrl). Other resource
/// types (a link to a RelatedPerson) give `None`.
fn patient_ref(reference: &str) -> Option<String> {
    let r = reference.trim();
    if let Some(uuid) = r.strip_prefix("urn:uuid:") {
        return (!uuid.is_empty()).then(|| uuid.to_string());
    }
    let parts: Vec<&str> = r.split('/').collect();
    let at = parts.iter().rposition(|p| *p == "Patient")?;
    parts
        .get(at + 1)
        .filter(|id| !id.is_empty())
        .map(|id| id.to_string())
}
