//! ORU^R01: OBR orders and OBX results → `observations`, with corrections and deletions.

use std::collections::HashMap;

use super::fields::{map_result_status, obx_code, obx_value, visit_number};
use super::replay::Assembler;
use super::segment::{Msg, Seg};
use super::state::{ObsTrack, Order, OruPatient};
use super::time::parse_ts;
use super::VITAL_SIGNS_LOINC;
use crate::curated::{code_system, units, Observation, Table};

impl Assembler {
    pub(super) fn oru(&mut self, m: &Msg<'_>) {
        let mut patient = OruPatient::NotYet;
        let mut visit: Option<String> = None;
        let mut order: Option<Order<'_, '_>> = None;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for seg in &m.segs {
            match seg.name {
                "PID" => {
                    patient = match self.patient(m, seg) {
                        Some(id) => OruPatient::Id(id),
                        None => OruPatient::Bad,
                    };
                    visit = visit_number(m, None, Some(seg));
                    order = None;
                }
                "PV1" => {
                    if let Some(v) = visit_number(m, Some(seg), None) {
                        visit = Some(v);
                    }
                }
                "OBR" => {
                    let ei = |f: usize| {
                        let id = m.get(seg, f, 1)?;
                        Some(match m.get(seg, f, 2) {
                            Some(ns) => format!("{id}^{ns}"),
                            None => id,
                        })
                    };
                    let key = ei(3)
                        .or_else(|| ei(2).map(|p| format!("placer:{p}")))
                        .unwrap_or_else(|| format!("{}/OBR-{}", m.control_id, seg.ordinal));
                    let number = m.get(seg, 3, 1).or_else(|| m.get(seg, 2, 1));
                    order = Some(Order { key, number, seg });
                }
                "OBX" => match &patient {
                    OruPatient::NotYet => {
                        self.bad(
                            m,
                            None,
                            Some(Table::Observations),
                            "PID-3",
                            "missing_field",
                            "ORU^R01 has results before any PID segment: no patient".into(),
                        );
                        patient = OruPatient::Bad;
                    }
                    OruPatient::Bad => {}
                    OruPatient::Id(p) => {
                        let p = p.clone();
                        self.obx(m, seg, &p, visit.as_deref(), order.as_ref(), &mut seen);
                    }
                },
                _ => {}
            }
        }
        if matches!(patient, OruPatient::NotYet) {
            self.bad(
                m,
                None,
                Some(Table::Observations),
                "PID-3",
                "missing_field",
                "ORU^R01 has no PID segment".into(),
            );
        }
    }

    pub(super) fn obx(
        &mut self,
        m: &Msg<'_>,
        seg: &Seg<'_>,
        patient: &str,
        visit: Option<&str>,
        order: Option<&Order<'_, '_>>,
        seen: &mut HashMap<String, usize>,
    ) {
        let table = Some(Table::Observations);
        let Some(code) = obx_code(m, seg) else {
            self.bad(
                m,
                Some(seg),
                table,
                "OBX-3",
                "missing_field",
                "OBX-3 (observation identifier) has no code".into(),
            );
            return;
        };
        let status = m.get(seg, 11, 1).map(|s| s.to_ascii_uppercase());
        let mut effective = None;
        for (s, field, name) in [
            (Some(seg), 14, "OBX-14"),
            (order.map(|o| o.seg), 7, "OBR-7"),
        ] {
            let Some(s) = s else { continue };
            if let Some(raw) = m.get(s, field, 1) {
                match parse_ts(&raw, m.offset) {
                    Ok(t) => {
                        effective = Some(t);
                        break;
                    }
                    Err(e) => {
                        self.bad(m, Some(s), table, name, "bad_date", e);
                        return;
                    }
                }
            }
        }
        let effective_time = effective.unwrap_or(m.known_at);
        // `id` keys the result across messages (a correction supersedes the row with the
        // same key); `observation_id` is its readable form: order number, `-`, OBX-3.1, and
        // `-` OBX-4 when there is a sub-id (`E0000123-004-L02-718-7`).
        let order_key = order.map_or_else(|| m.control_id.clone(), |o| o.key.clone());
        let order_number = order
            .and_then(|o| o.number.clone())
            .unwrap_or_else(|| m.control_id.clone());
        let mut id = format!("{order_key}/{}|{}", code.system, code.code);
        let mut observation_id = format!("{order_number}-{}", code.code);
        if let Some(sub) = m.get(seg, 4, 1) {
            id.push('/');
            id.push_str(&sub);
            observation_id.push('-');
            observation_id.push_str(&sub);
        }
        let n = seen.entry(id.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            id = format!("{id}#{n}");
            observation_id = format!("{observation_id}#{n}");
        }
        let from = (m.control_id.clone(), m.first_line, m.file.to_string());
        self.recall_observation(&id);
        let prior = self
            .observations
            .get(&id)
            .filter(|t| t.from != from)
            .and_then(|t| t.row);

        if matches!(status.as_deref(), Some("D" | "W")) {
            match prior {
                Some(r) => {
                    if let Some(row) = self.out.tables.observations.get_mut(r) {
                        row.meta.retracted_at = Some(m.known_at);
                    }
                    self.changed = true;
                    self.observations.insert(id, ObsTrack { row: None, from });
                }
                None => self.bad(
                    m,
                    Some(seg),
                    table,
                    "OBX-11",
                    "dangling_reference",
                    format!(
                        "OBX-11 = {} retracts result {id}, which this run does not hold",
                        status.as_deref().unwrap_or_default()
                    ),
                ),
            }
            return;
        }

        let (value_num, value_text) = obx_value(m, seg);
        let mut row = Observation {
            observation_id,
            patient_id: patient.to_string(),
            encounter_id: visit.map(str::to_string),
            category: Some(
                if code.system == code_system::LOINC
                    && VITAL_SIGNS_LOINC.contains(&code.code.as_str())
                {
                    "vital-signs"
                } else {
                    "laboratory"
                }
                .to_string(),
            ),
            code,
            value_num,
            value_text,
            unit: m.get(seg, 6, 1).or_else(|| m.get(seg, 6, 2)),
            value_original: None,
            unit_original: None,
            effective_time,
            status: status.as_deref().map(map_result_status),
            meta: m.meta(seg),
        };
        if let Err(e) = units::normalize(&mut row) {
            self.bad(
                m,
                Some(seg),
                table,
                "OBX-6",
                "unconvertible_unit",
                e.to_string(),
            );
            return;
        }
        if row.value_num.is_none() && row.value_text.is_none() {
            // "Final, values already sent as preliminary": finalize the earlier row.
            let earlier = prior.and_then(|r| self.out.tables.observations.get(r));
            match (status.as_deref(), earlier) {
                (Some("U"), Some(e)) => {
                    let mut e = e.clone();
                    e.status = Some("final".into());
                    e.meta = row.meta.clone();
                    row = e;
                }
                _ => {
                    self.skip(
                        m,
                        seg.line,
                        format!(
                            "OBX without a value (OBX-5 empty, OBX-11 = {})",
                            status.as_deref().unwrap_or("none")
                        ),
                    );
                    return;
                }
            }
        }
        if let Some(r) = prior {
            if let Some(old) = self.out.tables.observations.get_mut(r) {
                let mut cmp = old.clone();
                cmp.meta = row.meta.clone();
                if cmp == row {
                    return;
                }
                old.meta.retracted_at = Some(m.known_at);
                self.changed = true;
            }
        }
        self.observations.insert(
            id,
            ObsTrack {
                row: Some(self.out.tables.observations.len()),
                from,
            },
        );
        self.out.tables.observations.push(row);
    }
}
