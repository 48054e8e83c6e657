//! State across runs: what the replay of earlier runs left open, so that a message of a
//! later run changes the row an earlier run wrote exactly as it would have in one run.
//!
//! The replay ([`super::replay::Assembler`]) keys its state on patients, encounters
//! (with their care team and the state an A12 restores), observation keys and DG1/PR1
//! records. After a run, every such record whose state changed is written as one entry:
//! a key (a JSON array naming the record) and a value (a JSON object with the replay's state
//! and the record's current rows, exactly as stored). The pipeline keeps the entries as the
//! dataset `hl7v2_state` (`docs/curated-tables.md`, "Runs that follow runs"). The next run
//! reads an entry when a message first names its record ("recalls" it: only the records the
//! run touches are decoded), pushing its current rows into the output; at the end, a
//! recalled row that a message retracted is reported with the row as it was stored
//! ([`Carry::replaced`]) so that the pipeline swaps the two, and recalled rows that did not
//! change are left out (they are stored already).
//!
//! # Buckets, and the replay that loads only what it recalls
//! The stored entries fall into buckets by their [`bucket_key`]: the patient's for the
//! records of one patient (the patient, its encounters, their diagnoses and procedures), the
//! entry's own key for a result (an observation key does not name its patient). So an ADT
//! message names one bucket, and an encounter's diagnoses are in the bucket of the encounter
//! (they are found by a key prefix when the encounter is recalled, which needs all of them).
//!
//! A run replays after a [`StateView`]: the entries of the buckets loaded so far. A recall of
//! a key whose bucket is not loaded answers "not found" and notes the bucket as missing
//! ([`Carry::missing`]). The pipeline then loads the missing buckets (adding to those it
//! has) and replays the whole run again, until a replay misses no bucket. That last replay
//! is exactly the replay after the whole state: each of its recalls was answered from a
//! loaded bucket, which holds every stored entry of that bucket, so each answered what the
//! whole state would have; and a replay's recalls depend only on the messages and the
//! answers of the earlier recalls. Each round loads strictly more buckets, so the rounds
//! end (in practice after two: the first learns the buckets the messages name).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use super::replay::Assembler;
use super::state::{EncKey, EncState, EncTrack, ObsTrack, PatientState};
use crate::curated::{
    encounter_class, CareTeamMember, Condition, CuratedTables, Encounter, Observation, Patient,
    Procedure, Table,
};
use crate::hash::bucketed::bucket_of;

/// State entries by key, as stored (the value is JSON text).
pub type StateEntries = BTreeMap<String, String>;

/// Which of the stored entries a [`StateView`] holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// No earlier run left state: every record is new.
    #[default]
    Nothing,
    /// Every stored entry (a state version read whole).
    All,
    /// Every stored entry of the buckets `have`, of `count` buckets (by [`bucket_key`]).
    Buckets {
        /// The bucket count of the stored version.
        count: u32,
        /// The buckets loaded.
        have: BTreeSet<u32>,
    },
}

/// The earlier runs' state as far as a run has loaded it.
#[derive(Debug, Default, Clone)]
pub struct StateView {
    /// The loaded entries: all the stored entries of what [`StateView::loaded`] names.
    pub entries: StateEntries,
    /// Which entries those are.
    pub loaded: Loaded,
}

impl StateView {
    /// The whole state `entries` (an empty one: no state).
    pub fn whole(entries: StateEntries) -> StateView {
        let loaded = if entries.is_empty() {
            Loaded::Nothing
        } else {
            Loaded::All
        };
        StateView { entries, loaded }
    }

    /// `Ok` when the entry of `key`, if stored, is loaded; else the bucket to load.
    fn holds(&self, key: &str) -> Result<(), u32> {
        match &self.loaded {
            Loaded::Nothing | Loaded::All => Ok(()),
            Loaded::Buckets { count, have } => {
                let b = bucket_of(Some(bucket_key(key).as_bytes()), *count);
                if have.contains(&b) {
                    Ok(())
                } else {
                    Err(b)
                }
            }
        }
    }
}

/// The text a state entry with key `key` is bucketed by: `["patient",ID]` for the records of
/// patient ID (`["patient",ID]`, `["encounter",ID,VISIT]`, `["condition",ID,VISIT,..]`,
/// `["procedure",ID,VISIT,..]`), the key itself for any other (a result,
/// `["observation",KEY]`).
pub fn bucket_key(key: &str) -> String {
    let parts: Option<Vec<String>> = [
        "[\"patient\",",
        "[\"encounter\",",
        "[\"condition\",",
        "[\"procedure\",",
    ]
    .iter()
    .any(|p| key.starts_with(p))
    .then(|| serde_json::from_str(key).ok())
    .flatten();
    match parts.as_deref() {
        Some([_, patient, ..]) => self::key(&["patient", patient]),
        _ => key.to_string(),
    }
}

/// What a run leaves for the next ones.
#[derive(Debug, Default)]
pub struct Carry {
    /// Stored rows that this run changed (a later message retracted them), as stored.
    pub replaced: CuratedTables,
    /// State entries this run added or changed: (key, value), by key.
    pub delta: Vec<(String, String)>,
    /// Buckets the replay needed and did not have: when not empty, the replay's output is
    /// not the run's, and it must be replayed after these buckets are loaded too (the other
    /// fields are then empty).
    pub missing: BTreeSet<u32>,
    /// The state the replay was given, handed back (to add buckets to).
    pub state: StateView,
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

/// The earlier runs' state as one run uses it: entries are read when a message first names
/// their record ("recalled"), and their rows are pushed into the output then.
#[derive(Debug, Default)]
pub(super) struct Carried {
    /// The stored entries loaded.
    pub(super) state: StateView,
    /// Buckets of entries recalled that are not loaded.
    missing: BTreeSet<u32>,
    /// Keys recalled already (found or not).
    recalled: HashSet<String>,
    /// The stored forms of the rows pushed from the state, per table in push order...
    rows: CuratedTables,
    /// ...and their indices in the output: patients, encounters, care_team, observations,
    /// conditions, procedures.
    idx: [Vec<usize>; 6],
    /// The first entry that could not be read.
    pub(super) error: Option<String>,
}

/// Pushes a stored row into the output and remembers it; returns its index.
fn carry<T: Clone>(out: &mut Vec<T>, stored: &mut Vec<T>, idx: &mut Vec<usize>, row: T) -> usize {
    out.push(row.clone());
    stored.push(row);
    idx.push(out.len() - 1);
    out.len() - 1
}

impl Assembler {
    /// The stored entry of `k`, the first time it is asked for.
    /// Answers "not found" when no earlier run left state, and when the entry's bucket is
    /// not loaded (noting the bucket as missing: this replay is then done again).
    fn recall(&mut self, k: String) -> Option<Entry> {
        if self.carried.state.loaded == Loaded::Nothing {
            return None;
        }
        if let Err(b) = self.carried.state.holds(&k) {
            self.carried.missing.insert(b);
            return None;
        }
        if !self.carried.recalled.insert(k.clone()) {
            return None;
        }
        let v = self.carried.state.entries.get(&k)?;
        match serde_json::from_str(v) {
            Ok(e) => Some(e),
            Err(e) => {
                self.carried
                    .error
                    .get_or_insert_with(|| format!("state entry {k}: {e}"));
                None
            }
        }
    }

    fn bad_entry(&mut self, k: &str) {
        self.carried
            .error
            .get_or_insert_with(|| format!("state entry {k}: the entry does not fit its key"));
    }

    /// Loads patient `id` from the earlier runs' state, if they left it.
    pub(super) fn recall_patient(&mut self, id: &str) {
        let k = key(&["patient", id]);
        match self.recall(k.clone()) {
            None => {}
            Some(Entry::Patient {
                state,
                row: Some(row),
            }) => {
                let c = &mut self.carried;
                let r = carry(
                    &mut self.out.tables.patients,
                    &mut c.rows.patients,
                    &mut c.idx[0],
                    row,
                );
                self.patients.insert(id.to_string(), (state, r));
            }
            Some(_) => self.bad_entry(&k),
        }
    }

    /// Loads encounter `key` with its diagnoses and procedures from the earlier runs' state.
    pub(super) fn recall_encounter(&mut self, enc: &EncKey) {
        let (p, e) = (enc.0.as_str(), enc.1.as_str());
        let k = key(&["encounter", p, e]);
        match self.recall(k.clone()) {
            None => {}
            Some(Entry::Encounter {
                state,
                before_transfer,
                row,
                care,
            }) => {
                let (state, before_transfer) = match (
                    state.map(EncSer::state).transpose(),
                    before_transfer.map(EncSer::state).transpose(),
                ) {
                    (Ok(s), Ok(b)) => (s, b),
                    (Err(err), _) | (_, Err(err)) => {
                        self.carried
                            .error
                            .get_or_insert_with(|| format!("state entry {k}: {err}"));
                        return;
                    }
                };
                let c = &mut self.carried;
                let t = &mut self.out.tables;
                let mut care_rows = Vec::with_capacity(care.len());
                for (role, clinician, row) in care {
                    let r = carry(&mut t.care_team, &mut c.rows.care_team, &mut c.idx[2], row);
                    care_rows.push((role_of(&role).unwrap_or("attending"), clinician, r));
                }
                let row =
                    row.map(|r| carry(&mut t.encounters, &mut c.rows.encounters, &mut c.idx[1], r));
                let track = EncTrack {
                    state,
                    row,
                    care_rows,
                    before_transfer,
                };
                self.encounters.insert(enc.clone(), track);
            }
            Some(_) => self.bad_entry(&k),
        }
        // The encounter's diagnoses and procedures, found by key prefix: they are in the
        // bucket of the encounter's key (its patient's), so when that is loaded all of them
        // are (and when it is not, the recall above noted it missing).
        for (kind, table) in [
            ("condition", Table::Conditions),
            ("procedure", Table::Procedures),
        ] {
            let whole = key(&[kind, p, e]);
            let prefix = format!("{},", &whole[..whole.len() - 1]);
            let keys: Vec<String> = self
                .carried
                .state
                .entries
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                let Ok(parts) = serde_json::from_str::<Vec<String>>(&k) else {
                    self.bad_entry(&k);
                    continue;
                };
                let Some(ident) = parts.get(3).cloned() else {
                    self.bad_entry(&k);
                    continue;
                };
                let row = match (self.recall(k.clone()), table) {
                    (None, _) => continue,
                    (Some(Entry::Condition { row }), Table::Conditions) => row.map(|r| {
                        let c = &mut self.carried;
                        carry(
                            &mut self.out.tables.conditions,
                            &mut c.rows.conditions,
                            &mut c.idx[4],
                            r,
                        )
                    }),
                    (Some(Entry::Procedure { row }), Table::Procedures) => row.map(|r| {
                        let c = &mut self.carried;
                        carry(
                            &mut self.out.tables.procedures,
                            &mut c.rows.procedures,
                            &mut c.idx[5],
                            r,
                        )
                    }),
                    _ => {
                        self.bad_entry(&k);
                        continue;
                    }
                };
                self.clinical
                    .insert((table, p.to_string(), e.to_string(), ident), row);
            }
        }
    }

    /// Loads result `id` from the earlier runs' state, if they left it.
    pub(super) fn recall_observation(&mut self, id: &str) {
        let k = key(&["observation", id]);
        match self.recall(k.clone()) {
            None => {}
            Some(Entry::Observation { row }) => {
                let row = row.map(|r| {
                    let c = &mut self.carried;
                    carry(
                        &mut self.out.tables.observations,
                        &mut c.rows.observations,
                        &mut c.idx[3],
                        r,
                    )
                });
                self.observations.insert(
                    id.to_string(),
                    ObsTrack {
                        row,
                        from: carried_from(),
                    },
                );
            }
            Some(_) => self.bad_entry(&k),
        }
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

    /// Ends a run: the state entries that changed, and the output without the recalled rows
    /// that stayed as stored (a recalled row that changed stays, and its stored form goes
    /// into [`Carry::replaced`]).
    ///
    /// # Errors
    /// A state entry that could not be read.
    pub(super) fn finish(&mut self) -> Result<Carry, String> {
        if let Some(e) = self.carried.error.take() {
            return Err(e);
        }
        if !self.carried.missing.is_empty() {
            let c = std::mem::take(&mut self.carried);
            return Ok(Carry {
                missing: c.missing,
                state: c.state,
                ..Carry::default()
            });
        }
        let before = &self.carried.state.entries;
        let delta = self
            .entries()
            .into_iter()
            .filter(|(k, v)| before.get(k) != Some(v))
            .collect();
        let mut replaced = CuratedTables::default();
        let c = std::mem::take(&mut self.carried);
        let t = &mut self.out.tables;
        let [i0, i1, i2, i3, i4, i5] = c.idx;
        split(
            &mut t.patients,
            &i0,
            c.rows.patients,
            &mut replaced.patients,
        );
        split(
            &mut t.encounters,
            &i1,
            c.rows.encounters,
            &mut replaced.encounters,
        );
        split(
            &mut t.care_team,
            &i2,
            c.rows.care_team,
            &mut replaced.care_team,
        );
        split(
            &mut t.observations,
            &i3,
            c.rows.observations,
            &mut replaced.observations,
        );
        split(
            &mut t.conditions,
            &i4,
            c.rows.conditions,
            &mut replaced.conditions,
        );
        split(
            &mut t.procedures,
            &i5,
            c.rows.procedures,
            &mut replaced.procedures,
        );
        Ok(Carry {
            replaced,
            delta,
            missing: BTreeSet::new(),
            state: c.state,
        })
    }
}

/// Keeps of `rows` the recalled ones (at `idx`, stored forms `stored`) that changed, and
/// all the others; the changed rows' stored forms go to `replaced`.
fn split<T: PartialEq>(rows: &mut Vec<T>, idx: &[usize], stored: Vec<T>, replaced: &mut Vec<T>) {
    if idx.is_empty() {
        return;
    }
    let mut at: Vec<Option<usize>> = vec![None; rows.len()];
    for (pos, &i) in idx.iter().enumerate() {
        if let Some(slot) = at.get_mut(i) {
            *slot = Some(pos);
        }
    }
    let mut stored: Vec<Option<T>> = stored.into_iter().map(Some).collect();
    for (i, now) in std::mem::take(rows).into_iter().enumerate() {
        match at[i].and_then(|pos| stored.get_mut(pos).and_then(Option::take)) {
            None => rows.push(now),
            Some(was) if was != now => {
                rows.push(now);
                replaced.push(was);
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod bucket_tests {
    use super::*;

    #[test]
    fn a_patients_records_share_its_bucket_key_and_results_keep_their_own() {
        let p = key(&["patient", "P1"]);
        assert_eq!(bucket_key(&p), p);
        for k in [
            key(&["encounter", "P1", "V1"]),
            key(&["condition", "P1", "V1", "I10"]),
            key(&["procedure", "P1", "V1", "0DT"]),
        ] {
            assert_eq!(bucket_key(&k), p, "{k}");
        }
        // A visit number of another patient is that patient's.
        assert_eq!(
            bucket_key(&key(&["encounter", "P2", "V1"])),
            key(&["patient", "P2"])
        );
        let obs = key(&["observation", "ORD1/http://loinc.org|2823-3"]);
        assert_eq!(bucket_key(&obs), obs);
        // What is not a key of these kinds is its own bucket key (never a panic).
        for odd in ["", "[", "[\"patient\"]", "[\"encounter\",1]", "x"] {
            assert_eq!(bucket_key(odd), odd);
        }
    }

    #[test]
    fn a_view_of_some_buckets_holds_only_their_keys() {
        let k = key(&["encounter", "P1", "V1"]);
        let b = bucket_of(Some(key(&["patient", "P1"]).as_bytes()), 1024);
        let mut view = StateView {
            entries: StateEntries::new(),
            loaded: Loaded::Buckets {
                count: 1024,
                have: BTreeSet::new(),
            },
        };
        assert_eq!(view.holds(&k), Err(b));
        view.loaded = Loaded::Buckets {
            count: 1024,
            have: [b].into(),
        };
        assert_eq!(view.holds(&k), Ok(()));
        assert_eq!(
            StateView::whole(StateEntries::new()).loaded,
            Loaded::Nothing
        );
    }
}
