//! Condition → `conditions`.

use super::codes::pick_coding;
use super::curate::Head;
use super::outcome::{Fault, Fx};
use super::resolve::{encounter_ref, patient_ref, Resolver};
use super::time::time;
use crate::curated::{code_system, Condition};
use crate::ingest::json::Value;
use crate::ingest::Context;

pub(super) fn condition(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
) -> Fx<Condition> {
    let patient_id = patient_ref(res, "Condition", rz)?;
    let encounter_id = encounter_ref(res, "Condition", rz)?;
    let cc = res
        .get("code")
        .ok_or_else(|| Fault::missing("Condition.code"))?;
    let prefer = [
        code_system::ICD10CM,
        code_system::SNOMED,
        code_system::ICD9CM,
    ];
    let code = pick_coding(cc, "Condition.code", &prefer)?;
    let onset = match time(res, "onsetDateTime", &["Condition"], ctx)? {
        Some(t) => Some(t),
        None => match res.get("onsetPeriod") {
            Some(p) => time(p, "start", &["Condition.onsetPeriod"], ctx)?,
            None => None,
        },
    };
    let onset_time = match onset {
        Some(t) => t,
        None => time(res, "recordedDate", &["Condition"], ctx)?
            .ok_or_else(|| Fault::missing("Condition.onset[x]"))?,
    };
    let abatement_time = match time(res, "abatementDateTime", &["Condition"], ctx)? {
        Some(t) => Some(t),
        None => match res.get("abatementPeriod") {
            Some(p) => match time(p, "end", &["Condition.abatementPeriod"], ctx)? {
                Some(t) => Some(t),
                None => time(p, "start", &["Condition.abatementPeriod"], ctx)?,
            },
            None => None,
        },
    };
    Ok(Condition {
        condition_id: head.row_id.clone(),
        patient_id,
        encounter_id,
        code,
        onset_time,
        abatement_time,
        diagnosis_type: None,
        meta: head.meta.clone(),
    })
}
