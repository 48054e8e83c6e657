//! Consent → `consent`: scope, decision of the provision tree, period, status.

use super::codes::codings;
use super::curate::Head;
use super::outcome::{Fault, Fx};
use super::resolve::{patient_ref, Resolver};
use super::time::time;
use crate::curated::Consent;
use crate::ingest::json::Value;
use crate::ingest::Context;

/// The `Consent.status` values of FHIR R4.
pub(super) const CONSENT_STATUSES: [&str; 6] = [
    "draft",
    "proposed",
    "active",
    "rejected",
    "inactive",
    "entered-in-error",
];

/// One `consent` row (module docs, "Consent").
pub(super) fn consent(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
) -> Fx<Consent> {
    if res.get("patient").is_none() && res.get("subject").is_none() {
        return Err(Fault::missing("Consent.patient"));
    }
    let patient_id = patient_ref(res, "Consent", rz)?;
    match res.get("status").map(|v| (v, v.as_str())) {
        None => return Err(Fault::missing("Consent.status")),
        Some((_, Some(s))) if CONSENT_STATUSES.contains(&s) => {}
        Some((v, _)) => {
            return Err(Fault::new(
                "Consent.status",
                "bad_value",
                format!(
                    "{v} is not a Consent status ({})",
                    CONSENT_STATUSES.join(", ")
                ),
            ))
        }
    }
    let cc = res
        .get("scope")
        .ok_or_else(|| Fault::missing("Consent.scope"))?;
    let scope = codings(cc)
        .filter(|c| {
            c.get("system")
                .and_then(Value::as_str)
                .is_some_and(|s| s == crate::curated::consent::SCOPE_SYSTEM)
        })
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .find_map(crate::curated::consent::scope)
        .ok_or_else(|| {
            Fault::new(
                "Consent.scope",
                "bad_value",
                format!(
                    "{cc} has no coding of {} with code {}",
                    crate::curated::consent::SCOPE_SYSTEM,
                    crate::curated::consent::SCOPES.join(", ")
                ),
            )
        })?;
    let provision = res
        .get("provision")
        .ok_or_else(|| Fault::missing("Consent.provision"))?;
    let decision = provision_decision(provision, "Consent.provision", 0)?
        .ok_or_else(|| Fault::missing("Consent.provision.type"))?;
    let (period_start, period_end) = match provision.get("period") {
        Some(p) => (
            time(p, "start", &["Consent.provision.period"], ctx)?,
            time(p, "end", &["Consent.provision.period"], ctx)?,
        ),
        None => (None, None),
    };
    if let (Some(s), Some(e)) = (period_start, period_end) {
        if e < s {
            return Err(Fault::new(
                "Consent.provision.period.end",
                "bad_value",
                format!("ends ({e}) before it starts ({s})"),
            ));
        }
    }
    Ok(Consent {
        consent_id: head.row_id.clone(),
        patient_id,
        scope: scope.to_string(),
        decision: decision.to_string(),
        period_start,
        period_end,
        decided_at: time(res, "dateTime", &["Consent"], ctx)?,
        meta: head.meta.clone(),
    })
}

/// Nested provisions deeper than this are refused (FHIR sets no limit; real ones nest once
/// or twice).
pub(super) const MAX_PROVISION_DEPTH: usize = 16;

/// The decision of a provision tree: `deny` if any provision in it denies, else `permit` if
/// the top one permits; `None` when the top one has no `type` (and nothing in it denies).
pub(super) fn provision_decision(
    p: Value<'_>,
    field: &str,
    depth: usize,
) -> Fx<Option<&'static str>> {
    use crate::curated::consent::{DENY, PERMIT};
    if depth > MAX_PROVISION_DEPTH {
        return Err(Fault::new(
            field,
            "bad_value",
            format!("provisions nest deeper than {MAX_PROVISION_DEPTH}"),
        ));
    }
    let own = match p.get("type").map(|v| (v, v.as_str())) {
        None => None,
        Some((_, Some("deny"))) => Some(DENY),
        Some((_, Some("permit"))) => Some(PERMIT),
        Some((v, _)) => {
            return Err(Fault::new(
                format!("{field}.type"),
                "bad_value",
                format!("{v} is neither deny nor permit"),
            ))
        }
    };
    let mut nested_deny = false;
    if let Some(list) = p.get("provision").and_then(Value::as_array) {
        for (i, n) in list.enumerate() {
            let f = format!("{field}.provision[{i}]");
            if provision_decision(n, &f, depth + 1)? == Some(DENY) {
                nested_deny = true;
            }
        }
    }
    Ok(if nested_deny { Some(DENY) } else { own })
}
