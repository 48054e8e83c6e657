//! Patient → `patients`.

use super::codes::{preferred, string};
use super::curate::Head;
use super::outcome::{Fault, Fx};
use super::time::{parse_date, time};
use crate::curated::Patient;
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
