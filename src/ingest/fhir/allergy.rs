//! AllergyIntolerance → `allergies`.

use super::codes::{first_code, pick_coding, string};
use super::curate::Head;
use super::outcome::{Fault, Fx};
use super::resolve::{encounter_ref, patient_ref, Resolver};
use super::time::time;
use crate::curated::{code_system, Allergy};
use crate::ingest::json::Value;
use crate::ingest::Context;

/// R4: `code` (the substance or the allergy), `category` (a list of codes), `criticality`,
/// `clinicalStatus` and `verificationStatus` (CodeableConcepts), `onset[x]`, `recordedDate`.
/// The onset is `onsetDateTime`, else `onsetPeriod.start`, else `recordedDate`.
pub(super) fn allergy(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
) -> Fx<Allergy> {
    let patient_id = patient_ref(res, "AllergyIntolerance", rz)?;
    let encounter_id = encounter_ref(res, "AllergyIntolerance", rz)?;
    let cc = res
        .get("code")
        .ok_or_else(|| Fault::missing("AllergyIntolerance.code"))?;
    let prefer = [code_system::SNOMED, code_system::RXNORM];
    let code = pick_coding(cc, "AllergyIntolerance.code", &prefer)?;
    let recorded_time = time(res, "recordedDate", &["AllergyIntolerance"], ctx)?;
    let onset = match time(res, "onsetDateTime", &["AllergyIntolerance"], ctx)? {
        Some(t) => Some(t),
        None => match res.get("onsetPeriod") {
            Some(p) => time(p, "start", &["AllergyIntolerance.onsetPeriod"], ctx)?,
            None => None,
        },
    };
    let onset_time = onset
        .or(recorded_time)
        .ok_or_else(|| Fault::missing("AllergyIntolerance.onset[x]"))?;
    let category = res
        .get("category")
        .and_then(|c| c.get(0))
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let status = |key: &str| res.get(key).and_then(first_code);
    Ok(Allergy {
        allergy_id: head.row_id.clone(),
        patient_id,
        encounter_id,
        code,
        category,
        criticality: string(res, "criticality"),
        clinical_status: status("clinicalStatus"),
        verification_status: status("verificationStatus"),
        onset_time,
        recorded_time,
        meta: head.meta.clone(),
    })
}
