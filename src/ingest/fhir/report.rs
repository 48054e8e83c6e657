//! DiagnosticReport → `diagnostic_reports`, with the ids of its result Observations.

use super::codes::{first_code, pick_coding, string};
use super::curate::Head;
use super::outcome::{Fault, Fx};
use super::resolve::{encounter_ref, patient_ref, Ref, Resolver, Target};
use super::time::time;
use crate::curated::{code_system, DiagnosticReport};
use crate::ingest::json::Value;
use crate::ingest::Context;

/// R4: `code` (1..1, LOINC where coded), `category`, `effective[x]` (a dateTime or a
/// Period), `issued` (an instant: when it was released), `status`, `conclusion`, `result`
/// (references to Observations). The effective time is `effectiveDateTime`, else
/// `effectivePeriod.start`, else `issued`.
pub(super) fn report(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
) -> Fx<DiagnosticReport> {
    let patient_id = patient_ref(res, "DiagnosticReport", rz)?;
    let encounter_id = encounter_ref(res, "DiagnosticReport", rz)?;
    let cc = res
        .get("code")
        .ok_or_else(|| Fault::missing("DiagnosticReport.code"))?;
    let code = pick_coding(cc, "DiagnosticReport.code", &[code_system::LOINC])?;
    let issued_time = time(res, "issued", &["DiagnosticReport"], ctx)?;
    let effective = match time(res, "effectiveDateTime", &["DiagnosticReport"], ctx)? {
        Some(t) => Some(t),
        None => match res.get("effectivePeriod") {
            Some(p) => time(p, "start", &["DiagnosticReport.effectivePeriod"], ctx)?,
            None => None,
        },
    };
    let effective_time = effective
        .or(issued_time)
        .ok_or_else(|| Fault::missing("DiagnosticReport.effective[x]"))?;
    let category = res
        .get("category")
        .and_then(|c| c.get(0))
        .and_then(|cc| first_code(cc).or_else(|| string(cc, "text")));
    let mut results = Vec::new();
    for (i, r) in res
        .get("result")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(reference) = r.get("reference").and_then(Value::as_str) else {
            continue;
        };
        let field = || format!("DiagnosticReport.result[{i}]");
        match rz.resolve(reference) {
            Ref::To(Target {
                rtype: "Observation",
                id,
            }) => results.push(id.to_string()),
            Ref::To(t) => {
                let detail = format!("{reference:?} refers to a {}, not an Observation", t.rtype);
                return Err(Fault::new(field(), "bad_value", detail));
            }
            Ref::Dangling => {
                let detail = format!("{reference:?} resolves to nothing in the input");
                return Err(Fault::new(field(), "dangling_reference", detail));
            }
            Ref::Contained(_) | Ref::Unparseable => {
                let detail = format!("{reference:?} is not a reference to an Observation");
                return Err(Fault::new(field(), "bad_value", detail));
            }
        }
    }
    Ok(DiagnosticReport {
        report_id: head.row_id.clone(),
        patient_id,
        encounter_id,
        category,
        code,
        effective_time,
        issued_time,
        status: string(res, "status"),
        conclusion: string(res, "conclusion"),
        result_ids: (!results.is_empty()).then(|| results.join(" ")),
        meta: head.meta.clone(),
    })
}
