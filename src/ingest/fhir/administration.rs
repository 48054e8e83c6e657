//! MedicationAdministration → `medication_administrations` (a drug given; `not-done` ones
//! are skipped by [`curate`](super::curate::curate)).

use super::codes::{codings, string};
use super::curate::Head;
use super::medication::drug_codes;
use super::outcome::{Fault, Fx};
use super::resolve::{encounter_ref, patient_ref, Ref, Resolver, Target};
use super::time::time;
use crate::curated::MedicationAdministration;
use crate::ingest::json::{Kind, Value};
use crate::ingest::Context;

const RTYPE: &str = "MedicationAdministration";

/// R4: `medication[x]` (as a MedicationRequest's), `effective[x]` (1..1, a dateTime or a
/// Period), `request` (the order), `dosage.dose` (a Quantity), `dosage.route`. One row per
/// drug code, as for orders: a compound without a code of its own gives one row per
/// ingredient (`id.ingredient[i]`).
pub(super) fn administration(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
) -> Fx<Vec<MedicationAdministration>> {
    let patient_id = patient_ref(res, RTYPE, rz)?;
    // R4 names the encounter `context`, which `encounter_ref` reads.
    let encounter_id = encounter_ref(res, RTYPE, rz)?;
    let codes = drug_codes(res, RTYPE, rz)?;
    let (start, end_time) = match time(res, "effectiveDateTime", &[RTYPE], ctx)? {
        Some(t) => (Some(t), None),
        None => match res.get("effectivePeriod") {
            Some(p) => (
                time(
                    p,
                    "start",
                    &["MedicationAdministration.effectivePeriod"],
                    ctx,
                )?,
                time(p, "end", &["MedicationAdministration.effectivePeriod"], ctx)?,
            ),
            None => (None, None),
        },
    };
    let start_time =
        start.ok_or_else(|| Fault::missing("MedicationAdministration.effective[x]"))?;
    let request_id = match res
        .get("request")
        .and_then(|r| r.get("reference"))
        .and_then(Value::as_str)
    {
        None => None,
        Some(reference) => match rz.resolve(reference) {
            Ref::To(Target {
                rtype: "MedicationRequest",
                id,
            }) => Some(id.to_string()),
            Ref::To(t) => {
                let detail = format!(
                    "{reference:?} refers to a {}, not a MedicationRequest",
                    t.rtype
                );
                return Err(Fault::new(
                    "MedicationAdministration.request",
                    "bad_value",
                    detail,
                ));
            }
            Ref::Dangling => {
                let detail = format!("{reference:?} resolves to nothing in the input");
                return Err(Fault::new(
                    "MedicationAdministration.request",
                    "dangling_reference",
                    detail,
                ));
            }
            Ref::Contained(_) | Ref::Unparseable => None,
        },
    };
    let dosage = res.get("dosage");
    let dose = dosage.and_then(|d| d.get("dose"));
    let dose_value = match dose.and_then(|q| q.get("value")).map(|v| (v, v.kind())) {
        None | Some((_, Kind::Null)) => None,
        Some((_, Kind::Number(n))) => n.as_f64(),
        Some((other, _)) => {
            return Err(Fault::new(
                "MedicationAdministration.dosage.dose.value",
                "bad_value",
                format!("expected a number, found {other}"),
            ))
        }
    };
    let dose_unit = dose.and_then(|q| string(q, "unit").or_else(|| string(q, "code")));
    let route = dosage.and_then(|d| d.get("route")).and_then(|cc| {
        codings(cc)
            .find_map(|c| string(c, "display").or_else(|| string(c, "code")))
            .or_else(|| string(cc, "text"))
    });
    let status = string(res, "status");
    let several = codes.len() > 1;
    Ok(codes
        .into_iter()
        .enumerate()
        .map(|(i, code)| MedicationAdministration {
            administration_id: if several {
                format!("{}.ingredient[{i}]", head.row_id)
            } else {
                head.row_id.clone()
            },
            patient_id: patient_id.clone(),
            encounter_id: encounter_id.clone(),
            request_id: request_id.clone(),
            code,
            start_time,
            end_time,
            status: status.clone(),
            dose_value,
            dose_unit: dose_unit.clone(),
            route: route.clone(),
            meta: head.meta.clone(),
        })
        .collect())
}
