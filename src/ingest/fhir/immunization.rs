//! Immunization → `immunizations` (a vaccine given; `not-done` ones are skipped by
//! [`curate`](super::curate::curate), as Procedures are).

use super::codes::{pick_coding, string};
use super::curate::Head;
use super::outcome::{Fault, Fx};
use super::resolve::{encounter_ref, patient_ref, Resolver};
use super::time::time;
use crate::curated::{code_system, Immunization};
use crate::ingest::json::Value;
use crate::ingest::Context;

/// R4: `vaccineCode` (1..1, CVX where coded), `occurrence[x]` (1..1, a dateTime or a
/// string); `recorded` stands in for an `occurrenceString`, which gives no time.
pub(super) fn immunization(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
) -> Fx<Immunization> {
    let patient_id = patient_ref(res, "Immunization", rz)?;
    let encounter_id = encounter_ref(res, "Immunization", rz)?;
    let cc = res
        .get("vaccineCode")
        .ok_or_else(|| Fault::missing("Immunization.vaccineCode"))?;
    let prefer = [code_system::CVX, code_system::SNOMED];
    let code = pick_coding(cc, "Immunization.vaccineCode", &prefer)?;
    let occurrence_time = match time(res, "occurrenceDateTime", &["Immunization"], ctx)? {
        Some(t) => t,
        None => match time(res, "recorded", &["Immunization"], ctx)? {
            Some(t) => t,
            None if res.get("occurrenceString").is_some() => {
                return Err(Fault::new(
                    "Immunization.occurrenceString",
                    "bad_date",
                    "occurrenceString gives no time and there is no recorded date",
                ))
            }
            None => return Err(Fault::missing("Immunization.occurrence[x]")),
        },
    };
    Ok(Immunization {
        immunization_id: head.row_id.clone(),
        patient_id,
        encounter_id,
        code,
        occurrence_time,
        status: string(res, "status"),
        meta: head.meta.clone(),
    })
}
