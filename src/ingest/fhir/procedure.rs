//! Procedure → `procedures` (performed ones only).

use super::codes::pick_coding;
use super::curate::Head;
use super::outcome::{Fault, Fx};
use super::resolve::{encounter_ref, patient_ref, Resolver};
use super::time::time;
use crate::curated::{code_system, Procedure};
use crate::ingest::json::Value;
use crate::ingest::Context;

pub(super) fn procedure(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
) -> Fx<Procedure> {
    let patient_id = patient_ref(res, "Procedure", rz)?;
    let encounter_id = encounter_ref(res, "Procedure", rz)?;
    let cc = res
        .get("code")
        .ok_or_else(|| Fault::missing("Procedure.code"))?;
    let prefer = [code_system::SNOMED, code_system::CPT];
    let code = pick_coding(cc, "Procedure.code", &prefer)?;
    let (start, end) = match time(res, "performedDateTime", &["Procedure"], ctx)? {
        Some(t) => (Some(t), None),
        None => match res.get("performedPeriod") {
            Some(p) => (
                time(p, "start", &["Procedure.performedPeriod"], ctx)?,
                time(p, "end", &["Procedure.performedPeriod"], ctx)?,
            ),
            None => (None, None),
        },
    };
    let performed_time = start.ok_or_else(|| Fault::missing("Procedure.performed[x]"))?;
    Ok(Procedure {
        procedure_id: head.row_id.clone(),
        patient_id,
        encounter_id,
        code,
        performed_time,
        performed_end: end,
        meta: head.meta.clone(),
    })
}
