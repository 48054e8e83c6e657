//! MedicationRequest → `medications`, with the code of a contained or referenced Medication.

use super::codes::{pick_coding, string};
use super::curate::Head;
use super::outcome::{Fault, Fx};
use super::resolve::{encounter_ref, patient_ref, Ref, Resolver, Target};
use super::time::time;
use crate::curated::{code_system, Coding, Medication};
use crate::ingest::json::Value;
use crate::ingest::Context;

/// The drug codes of a Medication: its `code`, or, for a compound without one (a mixture
/// prepared by the pharmacy), the code of each ingredient.
pub(super) type DrugCodes = Vec<Coding>;

pub(super) fn medication_code(med: Value<'_>) -> Fx<DrugCodes> {
    let prefer = [code_system::RXNORM];
    if let Some(code) = med.get("code") {
        return pick_coding(code, "Medication.code", &prefer).map(|c| vec![c]);
    }
    let ingredients = med.get("ingredient").and_then(Value::as_array);
    let codes: Vec<Coding> = ingredients
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("itemCodeableConcept"))
        .map(|cc| pick_coding(cc, "Medication.ingredient.itemCodeableConcept", &prefer))
        .collect::<Fx<_>>()?;
    if codes.is_empty() {
        return Err(Fault::missing("Medication.code"));
    }
    Ok(codes)
}

/// One row per order; a compound drug without a code of its own gives one row per
/// ingredient (`id.ingredient[i]`), as observation components do, so that a feature looking
/// for a drug finds it.
pub(super) fn medication(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
) -> Fx<Vec<Medication>> {
    let patient_id = patient_ref(res, "MedicationRequest", rz)?;
    let encounter_id = encounter_ref(res, "MedicationRequest", rz)?;
    let codes = drug_codes(res, "MedicationRequest", rz)?;
    let validity = res
        .get("dispenseRequest")
        .and_then(|d| d.get("validityPeriod"));
    let start = match time(res, "authoredOn", &["MedicationRequest"], ctx)? {
        Some(t) => Some(t),
        None => match validity {
            Some(p) => time(
                p,
                "start",
                &["MedicationRequest.dispenseRequest.validityPeriod"],
                ctx,
            )?,
            None => None,
        },
    };
    let start_time = start.ok_or_else(|| Fault::missing("MedicationRequest.authoredOn"))?;
    // The end of the course: the dispense validity period, else the dosage's bounds
    // (`dosageInstruction[0].timing.repeat.boundsPeriod`).
    let bounds = res
        .get("dosageInstruction")
        .and_then(|d| d.get(0))
        .and_then(|d| d.get("timing"))
        .and_then(|t| t.get("repeat"))
        .and_then(|r| r.get("boundsPeriod"));
    let end_time = match validity {
        Some(p) => time(
            p,
            "end",
            &["MedicationRequest.dispenseRequest.validityPeriod"],
            ctx,
        )?,
        None => None,
    };
    let end_time = match (end_time, bounds) {
        (None, Some(p)) => time(
            p,
            "end",
            &["MedicationRequest.dosageInstruction[0].timing.repeat.boundsPeriod"],
            ctx,
        )?,
        (t, _) => t,
    };
    let status = string(res, "status");
    let several = codes.len() > 1;
    let rows = codes
        .into_iter()
        .enumerate()
        .map(|(i, code)| Medication {
            medication_id: if several {
                format!("{}.ingredient[{i}]", head.row_id)
            } else {
                head.row_id.clone()
            },
            patient_id: patient_id.clone(),
            encounter_id: encounter_id.clone(),
            code,
            start_time,
            end_time,
            status: status.clone(),
            meta: head.meta.clone(),
        })
        .collect();
    Ok(rows)
}

/// The drug codes of `medication[x]` of a MedicationRequest or MedicationAdministration
/// (`rtype`): its `medicationCodeableConcept`, else the code of the Medication its
/// `medicationReference` names (contained, or anywhere in the input).
pub(super) fn drug_codes(res: Value<'_>, rtype: &str, rz: &Resolver<'_, '_>) -> Fx<DrugCodes> {
    let prefer = [code_system::RXNORM];
    if let Some(cc) = res.get("medicationCodeableConcept") {
        let field = format!("{rtype}.medicationCodeableConcept");
        Ok(vec![pick_coding(cc, &field, &prefer)?])
    } else if let Some(r) = res.get("medicationReference") {
        let field = format!("{rtype}.medicationReference");
        let reference = r
            .get("reference")
            .and_then(Value::as_str)
            .ok_or_else(|| Fault::missing(format!("{field}.reference")))?;
        let found = match rz.resolve(reference) {
            Ref::Contained(id) => res
                .get("contained")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| {
                    c.get("id").and_then(Value::as_str) == Some(id)
                        && c.get("resourceType").and_then(Value::as_str) == Some("Medication")
                })
                .map(medication_code),
            Ref::To(Target {
                rtype: "Medication",
                id,
            }) => rz.medication(id).cloned(),
            Ref::To(t) => {
                let detail = format!("{reference:?} refers to a {}, not a Medication", t.rtype);
                return Err(Fault::new(field, "bad_value", detail));
            }
            Ref::Dangling | Ref::Unparseable => None,
        };
        match found {
            Some(Ok(c)) => Ok(c),
            Some(Err(f)) => {
                let detail = format!(
                    "the Medication {reference:?} has no usable code: {}",
                    f.detail
                );
                Err(Fault::new(field, f.reason, detail))
            }
            None => {
                let detail = format!(
                    "{reference:?} is not in the input, and without it the {} has no drug code",
                    if rtype == "MedicationRequest" {
                        "order"
                    } else {
                        rtype
                    }
                );
                Err(Fault::new(field, "dangling_reference", detail))
            }
        }
    } else {
        Err(Fault::missing(format!("{rtype}.medication[x]")))
    }
}
