//! Code choice: the preferred coding system of a field, else a standard one; and small
//! JSON field readers.

use super::outcome::{Fault, Fx};
use crate::curated::{code_system, Coding};
use crate::ingest::json::Value;

pub(super) fn string(v: Value<'_>, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The `coding` entries of a CodeableConcept.
pub(super) fn codings(cc: Value<'_>) -> impl Iterator<Item = Value<'_>> {
    cc.get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The codes of a CodeableConcept, as written.
pub(super) fn codes(cc: Option<Value<'_>>) -> impl Iterator<Item = &str> {
    cc.into_iter()
        .flat_map(codings)
        .filter_map(|c| c.get("code").and_then(Value::as_str))
}

pub(super) fn first_code(cc: Value<'_>) -> Option<String> {
    codes(Some(cc)).find(|c| !c.is_empty()).map(str::to_string)
}

/// The element of a list whose `use` is `wanted`, else the first.
pub(super) fn preferred<'v>(list: Option<Value<'v>>, wanted: &str) -> Option<Value<'v>> {
    let mut list = list?.as_array()?;
    list.clone()
        .find(|x| x.get("use").and_then(Value::as_str) == Some(wanted))
        .or_else(|| list.next())
}

/// Picks the coding of a CodeableConcept to keep: the first in `prefer` order, else a standard
/// system, else the first with a system.
pub(super) fn pick_coding(cc: Value<'_>, field: &str, prefer: &[&str]) -> Fx<Coding> {
    let mut best: Option<(usize, Coding)> = None;
    let mut systemless = false;
    for c in codings(cc) {
        let Some(code) = c.get("code").and_then(Value::as_str).map(str::trim) else {
            continue;
        };
        if code.is_empty() {
            continue;
        }
        let Some(system) = c
            .get("system")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
        else {
            systemless = true;
            continue;
        };
        let system = code_system::normalize(system);
        let rank = prefer
            .iter()
            .position(|p| *p == system)
            .unwrap_or(prefer.len() + usize::from(!code_system::is_standard(&system)));
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            let display = c
                .get("display")
                .or_else(|| cc.get("text"))
                .and_then(Value::as_str)
                .map(str::to_string);
            best = Some((
                rank,
                Coding {
                    system,
                    code: code.to_string(),
                    display,
                },
            ));
            if rank == 0 {
                break;
            }
        }
    }
    match best {
        Some((_, coding)) => Ok(coding),
        None if systemless => Err(Fault::new(
            format!("{field}.coding.system"),
            "unknown_code_system",
            format!("{field} has codes but none says its code system"),
        )),
        None => Err(Fault::new(
            format!("{field}.coding"),
            "missing_field",
            format!("{field} has no coding with a code"),
        )),
    }
}
