//! State across runs: what the replay of earlier runs left open, so that a message of a
//! later run changes the row an earlier run wrote exactly as it would have in one run.
//!
//! The replay ([`super::replay::Assembler`]) keys its state on patients, encounters
//! (with their care team and the state an A12 restores), observation keys and DG1/PR1
//! records. After a run, every such record whose state changed is written as one entry:
//! a key (a JSON array naming the record) and a value (a JSON object with the replay's state
//! and the record's current rows, exactly as stored). The pipeline keeps the entries as the
//! dataset `hl7v2_state` (`docs/curated-tables.md`, "Runs"). The next run pushes the current
//! rows back into its output before replaying ("carried" rows); at the end, a carried row
//! that a message retracted is reported with the row as it was stored
//! ([`Carry::replaced`]) so that the pipeline swaps the two, and carried rows that did not
//! change are left out (they are stored already).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::replay::Assembler;
use super::state::{EncState, EncTrack, ObsTrack, PatientState};
use crate::curated::{
    encounter_class, CareTeamMember, Condition, CuratedTables, Encounter, Observation, Patient,
    Procedure, Table,
};

/// State entries by key, as stored (the value is JSON text).
pub type StateEntries = BTreeMap<String, String>;

/// What a run leaves for the next ones.
#[derive(Debug, Default)]
pub struct Carry {
    /// Stored rows that this run changed (a later message retracted them), as stored.
    pub replaced: CuratedTables,
    /// State entries this run added or changed: (key, value), by key.
    pub delta: Vec<(String, String)>,
}

/// An encounter's state, with the class and roles spelled out.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EncSer {
    patient_id: String,
    class: String,
    admit: chrono::DateTime<chrono::Utc>,
    discharge: Option<chrono::DateTime<chrono::Utc>>,
    admission_type: Option<String>,
    disposition: Option<String>,
    service: Option<String>,
    care: Vec<(String, String)>,
}

/// One record's entry. Entries live one at a time (read, or written), so their size does not
/// matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Entry {
    Patient {
        state: PatientState,
        row: Option<Patient>,
    },
    Encounter {
        state: Option<EncSer>,
        before_transfer: Option<EncSer>,
        row: Option<Encounter>,
        care: Vec<(String, String, CareTeamMember)>,
    },
    Observation {
        row: Option<Observation>,
    },
    Condition {
        row: Option<Condition>,
    },
    Procedure {
        row: Option<Procedure>,
    },
}

const CLASSES: [&str; 9] = [
    encounter_class::INPATIENT,
    encounter_class::EMERGENCY,
    encounter_class::AMBULATORY,
    encounter_class::OBSERVATION,
    encounter_class::HOME,
    encounter_class::VIRTUAL,
    encounter_class::SNF,
    encounter_class::HOSPICE,
    encounter_class::OTHER,
];

fn class_of(s: &str) -> Result<&'static str, String> {
    CLASSES
        .iter()
        .copied()
        .find(|c| *c == s)
        .ok_or_else(|| format!("unknown encounter class {s:?}"))
}

fn role_of(s: &str) -> Result<&'static str, String> {
    match s {
        "attending" => Ok("attending"),
        "admitting" => Ok("admitting"),
        _ => Err(format!("unknown care-team role {s:?}")),
    }
}

impl EncSer {
    fn of(st: &EncState) -> EncSer {
        EncSer {
            patient_id: st.patient_id.clone(),
            class: st.class.to_string(),
            admit: st.admit,
            discharge: st.discharge,
            admission_type: st.admission_type.clone(),
            disposition: st.disposition.clone(),
            service: st.service.clone(),
            care: st
                .care
                .iter()
                .map(|(r, c)| ((*r).to_string(), c.clone()))
                .collect(),
        }
    }

    fn state(self) -> Result<EncState, String> {
        Ok(EncState {
            patient_id: self.patient_id,
            class: class_of(&self.class)?,
            admit: self.admit,
            discharge: self.discharge,
            admission_type: self.admission_type,
            disposition: self.disposition,
            service: self.service,
            care: self
                .care
                .into_iter()
                .map(|(r, c)| Ok((role_of(&r)?, c)))
                .collect::<Result<_, String>>()?,
        })
    }
}

fn key(parts: &[&str]) -> String {
    serde_json::to_string(parts).unwrap_or_default()
}

/// The `from` of a carried observation: no message of a run has it, so a result of the run
/// with the same key is always a later message (as it would be in one run).
fn carried_from() -> (String, u64, String) {
    (String::new(), u64::MAX, "\u{0}carried".into())
}

fn push<T>(rows: &mut Vec<T>, row: Option<T>) -> Option<usize> {
    row.map(|r| {
        rows.push(r);
        rows.len() - 1
    })
}

impl Assembler {
    /// Loads the state of earlier runs: the replay's state, with each record's current rows
    /// pushed into the output (they come first, so their indices are below the counts that
    /// [`Assembler::finish`] gets back). Returns the output as seeded.
    pub(super) fn seed(&mut self, entries: &StateEntries) -> Result<CuratedTables, String> {
        for (k, v) in entries {
            let parts: Vec<String> =
                serde_json::from_str(k).map_err(|e| format!("state key {k}: {e}"))?;
            let entry: Entry =
                serde_json::from_str(v).map_err(|e| format!("state entry {k}: {e}"))?;
            let t = &mut self.out.tables;
            match (entry, parts.as_slice()) {
                (Entry::Patient { state, row }, [_, id]) => {
                    // A patient entry always has its row (a patient is never retracted).
                    let Some(r) = push(&mut t.patients, row) else {
                        return Err(format!("state entry {k}: no row"));
                    };
                    self.patients.insert(id.clone(), (state, r));
                }
                (
                    Entry::Encounter {
                        state,
                        before_transfer,
                        row,
                        care,
                    },
                    [_, p, e],
                ) => {
                    let mut care_rows = Vec::with_capacity(care.len());
                    for (role, clinician, row) in care {
                        t.care_team.push(row);
                        care_rows.push((role_of(&role)?, clinician, t.care_team.len() - 1));
                    }
                    let track = EncTrack {
                        state: state.map(EncSer::state).transpose()?,
                        row: push(&mut t.encounters, row),
                        care_rows,
                        before_transfer: before_transfer.map(EncSer::state).transpose()?,
                    };
                    self.encounters.insert((p.clone(), e.clone()), track);
                }
                (Entry::Observation { row }, [_, id]) => {
                    let row = push(&mut t.observations, row);
                    self.observations.insert(
                        id.clone(),
                        ObsTrack {
                            row,
                            from: carried_from(),
                        },
                    );
                }
                (Entry::Condition { row }, [_, p, e, ident]) => {
                    let row = push(&mut t.conditions, row);
                    let k = (Table::Conditions, p.clone(), e.clone(), ident.clone());
                    self.clinical.insert(k, row);
                }
                (Entry::Procedure { row }, [_, p, e, ident]) => {
                    let row = push(&mut t.procedures, row);
                    let k = (Table::Procedures, p.clone(), e.clone(), ident.clone());
                    self.clinical.insert(k, row);
                }
                _ => return Err(format!("state entry {k}: the key does not fit the entry")),
            }
        }
        Ok(self.out.tables.clone())
    }

    /// The state entries of every record the replay holds.
    fn entries(&self) -> Vec<(String, String)> {
        let t = &self.out.tables;
        let mut out = Vec::new();
        let mut put = |k: String, e: Entry| {
            if let Ok(v) = serde_json::to_string(&e) {
                out.push((k, v));
            }
        };
        for (id, (state, r)) in &self.patients {
            let row = t.patients.get(*r).cloned();
            put(
                key(&["patient", id]),
                Entry::Patient {
                    state: state.clone(),
                    row,
                },
            );
        }
        for ((p, e), track) in &self.encounters {
            put(
                key(&["encounter", p, e]),
                Entry::Encounter {
                    state: track.state.as_ref().map(EncSer::of),
                    before_transfer: track.before_transfer.as_ref().map(EncSer::of),
                    row: track.row.and_then(|r| t.encounters.get(r).cloned()),
                    care: track
                        .care_rows
                        .iter()
                        .filter_map(|(role, c, r)| {
                            Some(((*role).to_string(), c.clone(), t.care_team.get(*r)?.clone()))
                        })
                        .collect(),
                },
            );
        }
        for (id, track) in &self.observations {
            let row = track.row.and_then(|r| t.observations.get(r).cloned());
            put(key(&["observation", id]), Entry::Observation { row });
        }
        for ((table, p, e, ident), row) in &self.clinical {
            let (k, entry) = if *table == Table::Conditions {
                let row = row.and_then(|r| t.conditions.get(r).cloned());
                ("condition", Entry::Condition { row })
            } else {
                let row = row.and_then(|r| t.procedures.get(r).cloned());
                ("procedure", Entry::Procedure { row })
            };
            put(key(&[k, p, e, ident]), entry);
        }
        out.sort_unstable();
        out
    }

    /// Ends a run that [`Assembler::seed`] began: the state entries that changed, and the
    /// output without the carried rows that stayed as stored (a carried row that changed
    /// stays, and its stored form goes into [`Carry::replaced`]).
    pub(super) fn finish(&mut self, seeded: CuratedTables, before: &StateEntries) -> Carry {
        let delta = self
            .entries()
            .into_iter()
            .filter(|(k, v)| before.get(k) != Some(v))
            .collect();
        let mut replaced = CuratedTables::default();
        let t = &mut self.out.tables;
        split(&mut t.patients, seeded.patients, &mut replaced.patients);
        split(
            &mut t.encounters,
            seeded.encounters,
            &mut replaced.encounters,
        );
        split(&mut t.care_team, seeded.care_team, &mut replaced.care_team);
        split(
            &mut t.observations,
            seeded.observations,
            &mut replaced.observations,
        );
        split(
            &mut t.conditions,
            seeded.conditions,
            &mut replaced.conditions,
        );
        split(
            &mut t.procedures,
            seeded.procedures,
            &mut replaced.procedures,
        );
        Carry { replaced, delta }
    }
}

/// Keeps of `rows` the carried rows (the first `seeded.len()`) that changed, and the new
/// ones; the changed rows' stored forms go to `replaced`.
fn split<T: PartialEq>(rows: &mut Vec<T>, seeded: Vec<T>, replaced: &mut Vec<T>) {
    let n = seeded.len().min(rows.len());
    let new = rows.split_off(n);
    let carried = std::mem::take(rows);
    for (now, was) in carried.into_iter().zip(seeded) {
        if now != was {
            rows.push(now);
            replaced.push(was);
        }
    }
    rows.extend(new);
}
