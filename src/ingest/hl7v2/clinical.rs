//! DG1 (diagnoses) and PR1 (procedures) of ADT messages → `conditions` and `procedures`,
//! linked to the message's encounter (PV1-19).
//!
//! A diagnosis or procedure is one record per encounter: its identifier (DG1-20, PR1-19)
//! when the sender gives one, else its code. A later message that sends it again with the
//! same content adds nothing (ADT senders repeat the whole list on every update); with
//! other content it supersedes the earlier row (which gets `retracted_at` = the message's
//! `known_at`). The action code (DG1-21, PR1-20) `D` retracts it; a cancelled admission
//! (A11) retracts every diagnosis and procedure of the encounter. DG1-6 (diagnosis type:
//! admitting, working, final) is kept in `conditions.diagnosis_type`; a diagnosis sent again
//! with another type (admitting on A01, final on A03) is a new version of it.

use chrono::{DateTime, Duration, Utc};

use super::fields::parse_num;
use super::replay::Assembler;
use super::segment::{Msg, Seg};
use super::state::EncKey;
use super::time::parse_ts;
use crate::curated::{code_system, Coding, Condition, Procedure, Table};

/// The fields of the two segments that differ.
struct Layout {
    seg: &'static str,
    table: Table,
    /// The identifier (EI) and action code (table 0206) fields.
    ident: usize,
    action: usize,
}

const DG1: Layout = Layout {
    seg: "DG1",
    table: Table::Conditions,
    ident: 20,
    action: 21,
};

const PR1: Layout = Layout {
    seg: "PR1",
    table: Table::Procedures,
    ident: 19,
    action: 20,
};

/// (table, patient, encounter, diagnosis or procedure key).
pub(super) type ClinicalKey = (Table, String, String, String);

impl Assembler {
    /// Curates the DG1 and PR1 segments of an ADT message about encounter `key`, which the
    /// message has just admitted or updated.
    pub(super) fn diagnoses_and_procedures(&mut self, m: &Msg<'_>, key: &EncKey) {
        let Some(admit) = self
            .encounters
            .get(key)
            .and_then(|t| t.state.as_ref())
            .map(|s| s.admit)
        else {
            // The encounter was refused (reported already) or cancelled: nothing to link to.
            return;
        };
        for seg in &m.segs {
            match seg.name {
                "DG1" => self.clinical(m, seg, &DG1, key, admit),
                "PR1" => self.clinical(m, seg, &PR1, key, admit),
                _ => {}
            }
        }
    }

    /// A11: the admission did not happen, so neither did what was recorded in it.
    pub(super) fn retract_clinical(&mut self, m: &Msg<'_>, key: &EncKey) {
        let rows: Vec<(Table, usize)> = self
            .clinical
            .iter_mut()
            .filter(|((_, p, e, _), _)| *p == key.0 && *e == key.1)
            .filter_map(|((t, ..), row)| row.take().map(|r| (*t, r)))
            .collect();
        for (table, r) in rows {
            self.retract_row(table, r, m.known_at);
        }
    }

    fn retract_row(&mut self, table: Table, r: usize, at: DateTime<Utc>) {
        let meta = match table {
            Table::Conditions => self.out.tables.conditions.get_mut(r).map(|x| &mut x.meta),
            _ => self.out.tables.procedures.get_mut(r).map(|x| &mut x.meta),
        };
        if let Some(meta) = meta {
            meta.retracted_at = Some(meta.retracted_at.map_or(at, |t| t.min(at)));
            self.changed = true;
        }
    }

    fn clinical(
        &mut self,
        m: &Msg<'_>,
        seg: &Seg<'_>,
        l: &Layout,
        key: &EncKey,
        admit: DateTime<Utc>,
    ) {
        let table = Some(l.table);
        let name = |f: usize| format!("{}-{f}", l.seg);
        let Some(code) = code_of(m, seg) else {
            let what = if l.table == Table::Conditions {
                "diagnosis"
            } else {
                "procedure"
            };
            let detail = format!("{} (the {what} code) has no code", name(3));
            self.bad(m, Some(seg), table, &name(3), "missing_field", detail);
            return;
        };
        let ident = m
            .get(seg, l.ident, 1)
            .unwrap_or_else(|| format!("{}|{}", code.system, code.code));
        let row_id = format!(
            "{}/{}",
            key.1,
            m.get(seg, l.ident, 1).unwrap_or_else(|| code.code.clone())
        );
        let track = (l.table, key.0.clone(), key.1.clone(), ident.clone());
        let prior = self.clinical.get(&track).copied().flatten();
        let action = m.get(seg, l.action, 1).map(|a| a.to_ascii_uppercase());
        if action.as_deref() == Some("D") {
            match prior {
                Some(r) => {
                    self.retract_row(l.table, r, m.known_at);
                    self.clinical.insert(track, None);
                }
                None => self.bad(
                    m,
                    Some(seg),
                    table,
                    &name(l.action),
                    "dangling_reference",
                    format!(
                        "{} = D deletes {ident} of encounter {}, which this run does not hold",
                        name(l.action),
                        key.1
                    ),
                ),
            }
            return;
        }
        // DG1-5 / PR1-5: when it was diagnosed or performed.
        let time = match m.get(seg, 5, 1).map(|s| parse_ts(&s, m.offset)) {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                self.bad(m, Some(seg), table, &name(5), "bad_date", e);
                return;
            }
            None => None,
        };
        let meta = m.meta(seg);
        let encounter_id = Some(key.1.clone());
        let pushed = if l.table == Table::Conditions {
            // A diagnosis without a time held during the encounter: from its admission.
            let row = Condition {
                condition_id: row_id,
                patient_id: key.0.clone(),
                encounter_id,
                code,
                onset_time: time.unwrap_or(admit),
                abatement_time: None,
                diagnosis_type: m.get(seg, 6, 1).map(|t| diagnosis_type(&t)),
                meta,
            };
            let same = prior
                .and_then(|r| self.out.tables.conditions.get(r))
                .is_some_and(|old| {
                    Condition {
                        meta: row.meta.clone(),
                        ..old.clone()
                    } == row
                });
            if same {
                return;
            }
            self.out.tables.conditions.push(row);
            self.out.tables.conditions.len() - 1
        } else {
            let Some(performed_time) = time else {
                let detail = "PR1-5 (procedure date/time) is required and absent".to_string();
                self.bad(m, Some(seg), table, "PR1-5", "missing_field", detail);
                return;
            };
            // PR1-7: procedure minutes.
            let performed_end = match m.get(seg, 7, 1) {
                None => None,
                Some(s) => match parse_num(&s).filter(|n| *n >= 0.0 && *n < 1e6) {
                    Some(n) => Some(performed_time + Duration::seconds((n * 60.0).round() as i64)),
                    None => {
                        let detail =
                            format!("procedure minutes `{s}` is not a number of minutes; no end");
                        self.bad(m, Some(seg), table, "PR1-7", "bad_value", detail);
                        None
                    }
                },
            };
            let row = Procedure {
                procedure_id: row_id,
                patient_id: key.0.clone(),
                encounter_id,
                code,
                performed_time,
                performed_end,
                meta,
            };
            let same = prior
                .and_then(|r| self.out.tables.procedures.get(r))
                .is_some_and(|old| {
                    Procedure {
                        meta: row.meta.clone(),
                        ..old.clone()
                    } == row
                });
            if same {
                return;
            }
            self.out.tables.procedures.push(row);
            self.out.tables.procedures.len() - 1
        };
        if let Some(r) = prior {
            self.retract_row(l.table, r, m.known_at);
        }
        self.clinical.insert(track, Some(pushed));
    }
}

/// DG1-6 (diagnosis type, HL7 table 0052) as a word: `A` admitting, `W` working, `F` final;
/// any other code is kept as written (a local extension of the table is not a reason to lose
/// the diagnosis).
pub(crate) fn diagnosis_type(code: &str) -> String {
    match code.trim().to_ascii_uppercase().as_str() {
        "A" => "admitting".to_string(),
        "W" => "working".to_string(),
        "F" => "final".to_string(),
        _ => code.trim().to_string(),
    }
}

/// DG1-3 / PR1-3 (CWE): the primary triplet, or the alternate one when only it is in a
/// standard system. The coding system is component 3, else the deprecated coding method
/// (DG1-2 / PR1-2, which v2.3 senders fill); the display is component 2, else the
/// deprecated description (DG1-4 / PR1-4).
fn code_of(m: &Msg<'_>, seg: &Seg<'_>) -> Option<Coding> {
    let triplet = |c: usize| -> Option<Coding> {
        let code = m.get(seg, 3, c)?;
        let system = m
            .get(seg, 3, c + 2)
            .or_else(|| (c == 1).then(|| m.get(seg, 2, 1)).flatten());
        Some(Coding {
            system: system
                .map(|s| code_system::normalize(&s))
                .unwrap_or_else(|| "local".to_string()),
            code,
            display: m
                .get(seg, 3, c + 1)
                .or_else(|| (c == 1).then(|| m.get(seg, 4, 1)).flatten()),
        })
    };
    match (triplet(1), triplet(4)) {
        (Some(p), Some(a))
            if !code_system::is_standard(&p.system) && code_system::is_standard(&a.system) =>
        {
            Some(a)
        }
        (Some(p), _) => Some(p),
        (None, a) => a,
    }
}
