//! Observation → `observations` (one row per component, plus the parent when it has a
//! value itself).

use super::codes::{codings, first_code, pick_coding, string};
use super::curate::Head;
use super::outcome::{Fault, Fx};
use super::resolve::{encounter_ref, patient_ref, Resolver};
use super::time::time;
use crate::curated::{code_system, units, Coding, Observation};
use crate::ingest::json::{Kind, Value};
use crate::ingest::Context;

pub(super) fn observation(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
) -> Fx<Vec<Observation>> {
    let patient_id = patient_ref(res, "Observation", rz)?;
    let encounter_id = encounter_ref(res, "Observation", rz)?;
    let code_cc = res
        .get("code")
        .ok_or_else(|| Fault::missing("Observation.code"))?;
    let code = pick_coding(code_cc, "Observation.code", &[code_system::LOINC])?;
    let effective = match time(res, "effectiveDateTime", &["Observation"], ctx)? {
        Some(t) => Some(t),
        None => match res.get("effectivePeriod") {
            Some(p) => time(p, "start", &["Observation.effectivePeriod"], ctx)?,
            None => None,
        },
    };
    let effective = match effective {
        Some(t) => Some(t),
        None => time(res, "effectiveInstant", &["Observation"], ctx)?,
    };
    let effective_time = match effective {
        Some(t) => t,
        None => time(res, "issued", &["Observation"], ctx)?
            .ok_or_else(|| Fault::missing("Observation.effective[x]"))?,
    };
    let category = res
        .get("category")
        .and_then(|c| c.get(0))
        .and_then(|cc| first_code(cc).or_else(|| string(cc, "text")));
    let status = string(res, "status");
    let components = res.get("component").and_then(Value::as_array);
    let own_value = value(res, "Observation")?;
    let n_components = components.clone().map_or(0, Iterator::count);
    let mut rows = Vec::with_capacity(1 + n_components);
    // The columns every row shares are filled in below.
    let row = |id: String, code: Coding, v: Value3| Observation {
        observation_id: id,
        patient_id: String::new(),
        encounter_id: None,
        category: None,
        code,
        value_num: v.num,
        value_text: v.text,
        unit: v.unit,
        value_original: None,
        unit_original: None,
        effective_time,
        status: None,
        meta: head.meta.clone(),
    };
    if own_value.is_some() || n_components == 0 {
        let mut r = row(head.row_id.clone(), code, own_value.unwrap_or_default());
        to_canonical_unit(&mut r, "Observation.valueQuantity.unit")?;
        rows.push(r);
    }
    for (i, comp) in components.into_iter().flatten().enumerate() {
        let field = format!("Observation.component[{i}].code");
        let cc = comp
            .get("code")
            .ok_or_else(|| Fault::missing(field.clone()))?;
        let ccode = pick_coding(cc, &field, &[code_system::LOINC])?;
        let v = value(comp, "Observation.component")?.unwrap_or_default();
        let mut r = row(format!("{}.component[{i}]", head.row_id), ccode, v);
        to_canonical_unit(
            &mut r,
            &format!("Observation.component[{i}].valueQuantity.unit"),
        )?;
        rows.push(r);
    }
    // Every row but the last gets copies of the shared columns; the last (most often the
    // only one) takes them.
    if let Some((last, others)) = rows.split_last_mut() {
        for r in others {
            r.patient_id.clone_from(&patient_id);
            r.encounter_id.clone_from(&encounter_id);
            r.category.clone_from(&category);
            r.status.clone_from(&status);
        }
        last.patient_id = patient_id;
        last.encounter_id = encounter_id;
        last.category = category;
        last.status = status;
    }
    Ok(rows)
}

/// Converts the row's value to its LOINC code's canonical unit ([`units::normalize`]); a unit
/// the code does not accept is a fault at `field`.
fn to_canonical_unit(row: &mut Observation, field: &str) -> Fx<()> {
    units::normalize(row).map_err(|e| Fault::new(field, "unconvertible_unit", e.to_string()))
}

/// An observation value as the curated columns hold it.
#[derive(Default)]
pub(super) struct Value3 {
    pub(super) num: Option<f64>,
    pub(super) text: Option<String>,
    pub(super) unit: Option<String>,
}

/// Reads `value[x]` of an Observation or a component; `None` when it has none.
pub(super) fn value(v: Value<'_>, at: &str) -> Fx<Option<Value3>> {
    if let Some(q) = v.get("valueQuantity") {
        let num = match q.get("value").map(|v| (v, v.kind())) {
            None | Some((_, Kind::Null)) => None,
            Some((_, Kind::Number(n))) => n.as_f64(),
            Some((other, _)) => {
                return Err(Fault::new(
                    format!("{at}.valueQuantity.value"),
                    "bad_value",
                    format!("expected a number, found {other}"),
                ))
            }
        };
        let unit = string(q, "unit").or_else(|| string(q, "code"));
        // "<5": the number is kept for features; the comparator is kept in the text.
        let text = string(q, "comparator").and_then(|c| num.map(|n| format!("{c}{n}")));
        return Ok(Some(Value3 { num, text, unit }));
    }
    if let Some(cc) = v.get("valueCodeableConcept") {
        let text = codings(cc)
            .find_map(|c| string(c, "display"))
            .or_else(|| string(cc, "text"))
            .or_else(|| first_code(cc));
        return Ok(Some(Value3 {
            text,
            ..Value3::default()
        }));
    }
    if let Some(s) = v.get("valueString") {
        return Ok(Some(Value3 {
            text: s.as_str().map(str::to_string),
            ..Value3::default()
        }));
    }
    if let Some(n) = v.get("valueInteger") {
        let num = n.as_f64().ok_or_else(|| {
            Fault::new(
                format!("{at}.valueInteger"),
                "bad_value",
                format!("expected an integer, found {n}"),
            )
        })?;
        return Ok(Some(Value3 {
            num: Some(num),
            ..Value3::default()
        }));
    }
    if let Some(b) = v.get("valueBoolean") {
        return Ok(Some(Value3 {
            text: b.as_bool().map(|b| b.to_string()),
            ..Value3::default()
        }));
    }
    for key in ["valueDateTime", "valueTime"] {
        if let Some(s) = v.get(key) {
            return Ok(Some(Value3 {
                text: s.as_str().map(str::to_string),
                ..Value3::default()
            }));
        }
    }
    Ok(None)
}
