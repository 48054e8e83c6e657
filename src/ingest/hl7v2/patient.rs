//! PID → `patients`: the patient of a message, versioned.

use super::fields::map_sex;
use super::replay::Assembler;
use super::segment::{Msg, Seg};
use super::state::Upd;
use super::time::{parse_date, parse_ts};
use crate::curated::{Patient, PatientIdentifier, Table};

impl Assembler {
    /// The patient id of a PID (PID-3: the MR identifier, else the first).
    pub(super) fn patient_id(m: &Msg<'_>, pid: &Seg<'_>) -> Option<String> {
        let enc = &m.enc;
        let ids: Vec<(Option<String>, Option<String>)> = enc
            .reps(pid.field(3))
            .map(|rep| {
                let id = enc.text(enc.sub(enc.comp(rep, 1), 1));
                let kind = enc.text(enc.sub(enc.comp(rep, 5), 1));
                (id, kind)
            })
            .filter(|(id, _)| id.is_some())
            .collect();
        ids.iter()
            .find(|(_, k)| k.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("MR")))
            .or_else(|| ids.first())
            .and_then(|(id, _)| id.clone())
    }

    /// Reads a PID into a patients row version; returns the patient id, or `None` (after
    /// reporting it) when there is none.
    pub(super) fn patient(&mut self, m: &Msg<'_>, pid: &Seg<'_>) -> Option<String> {
        let Some(id) = Self::patient_id(m, pid) else {
            self.bad(
                m,
                None,
                Some(Table::Patients),
                "PID-3",
                "missing_field",
                "PID-3 holds no patient identifier; the message cannot be attributed".into(),
            );
            return None;
        };
        self.recall_patient(&id);
        self.patient_row(m, pid, &id);
        self.identifiers(m, pid, &id);
        Some(id)
    }

    /// The patients row version a PID makes, if it changes anything.
    fn patient_row(&mut self, m: &Msg<'_>, pid: &Seg<'_>, id: &str) {
        let id = id.to_string();
        let enc = &m.enc;
        let mut st = self
            .patients
            .get(&id)
            .map(|(s, _)| s.clone())
            .unwrap_or_default();
        let old = self.patients.get(&id).map(|(s, _)| s.clone());

        match m.raw_upd(pid, 7) {
            Upd::Keep => {}
            Upd::Clear => st.birth_date = None,
            Upd::Set(_) => match m.get(pid, 7, 1).map(|s| parse_date(&s)) {
                Some(Ok(d)) => st.birth_date = Some(d),
                Some(Err(e)) => {
                    self.bad(m, Some(pid), Some(Table::Patients), "PID-7", "bad_date", e)
                }
                None => {}
            },
        }
        match m.upd(pid, 8, 1) {
            Upd::Keep => {}
            Upd::Clear => st.sex = None,
            Upd::Set(s) => match map_sex(&s) {
                Some(x) => st.sex = Some(x.to_string()),
                None => self.bad(
                    m,
                    Some(pid),
                    Some(Table::Patients),
                    "PID-8",
                    "bad_value",
                    format!("administrative sex `{s}` is not one of F, M, O, A, X, U, N"),
                ),
            },
        }
        match m.raw_upd(pid, 29) {
            Upd::Keep => {}
            Upd::Clear => st.death_time = None,
            Upd::Set(_) => match m.get(pid, 29, 1).map(|s| parse_ts(&s, m.offset)) {
                Some(Ok(t)) => st.death_time = Some(t),
                Some(Err(e)) => {
                    self.bad(m, Some(pid), Some(Table::Patients), "PID-29", "bad_date", e)
                }
                None => {}
            },
        }
        match m.raw_upd(pid, 5) {
            Upd::Keep => {}
            Upd::Clear => {
                st.given_name = None;
                st.family_name = None;
            }
            Upd::Set(f) => {
                let reps: Vec<&str> = enc.reps(f).filter(|r| !r.trim().is_empty()).collect();
                let chosen = reps
                    .iter()
                    .find(|r| enc.comp(r, 7).trim().eq_ignore_ascii_case("L"))
                    .or_else(|| reps.first());
                if let Some(r) = chosen {
                    st.family_name = enc.text(enc.sub(enc.comp(r, 1), 1));
                    let given = [2, 3]
                        .iter()
                        .filter_map(|&c| enc.text(enc.sub(enc.comp(r, c), 1)))
                        .collect::<Vec<_>>();
                    st.given_name = (!given.is_empty()).then(|| given.join(" "));
                }
            }
        }
        match m.raw_upd(pid, 11) {
            Upd::Keep => {}
            Upd::Clear => st.zip = None,
            Upd::Set(f) => {
                let with_zip: Vec<(Option<String>, String)> = enc
                    .reps(f)
                    .filter_map(|r| {
                        let zip = enc.text(enc.sub(enc.comp(r, 5), 1))?;
                        Some((enc.text(enc.comp(r, 7)), zip))
                    })
                    .collect();
                let chosen = with_zip
                    .iter()
                    .find(|(kind, _)| kind.as_deref() == Some("H"))
                    .or_else(|| with_zip.first());
                if let Some((_, zip)) = chosen {
                    st.zip = Some(zip.clone());
                }
            }
        }

        if old.as_ref() == Some(&st) {
            return;
        }
        let known_at = m.known_at;
        if let Some((_, row)) = self.patients.get(&id) {
            if let Some(r) = self.out.tables.patients.get_mut(*row) {
                r.meta.retracted_at = Some(known_at);
            }
        }
        let row = self.out.tables.patients.len();
        self.out.tables.patients.push(Patient {
            patient_id: id.clone(),
            birth_date: st.birth_date,
            sex: st.sex.clone(),
            death_time: st.death_time,
            zip: st.zip.clone(),
            given_name: st.given_name.clone(),
            family_name: st.family_name.clone(),
            meta: m.meta(pid),
        });
        self.patients.insert(id, (st, row));
    }

    /// PID-3 (CX, every repetition) → `patient_identifiers`: CX.1 the value, CX.4 the
    /// assigning authority (HD: its namespace id, else its universal id) the system, CX.5
    /// the identifier type code (table 0203: `MR`, `SS`, `PI`, ...). An identifier without
    /// an assigning authority is read as assigned by the sending facility (MSH-4, else
    /// MSH-3): an MRN is only unique within the authority that issued it. Each identifier
    /// is curated once (ADT senders repeat PID-3 in every message; the patient's replay
    /// state remembers it across runs); its `known_at` is that of the first message that
    /// carried it.
    fn identifiers(&mut self, m: &Msg<'_>, pid: &Seg<'_>, id: &str) {
        let enc = &m.enc;
        let fallback = m
            .seg("MSH")
            .and_then(|msh| m.get(msh, 4, 1).or_else(|| m.get(msh, 3, 1)));
        for rep in enc.reps(pid.field(3)) {
            let Some(value) = enc.text(enc.sub(enc.comp(rep, 1), 1)) else {
                continue;
            };
            let hd = enc.comp(rep, 4);
            let authority = enc
                .text(enc.sub(hd, 1))
                .or_else(|| enc.text(enc.sub(hd, 2)))
                .or_else(|| fallback.clone());
            let Some(system) = authority else {
                continue;
            };
            let type_code = enc.text(enc.sub(enc.comp(rep, 5), 1));
            let Some((state, _)) = self.patients.get_mut(id) else {
                continue;
            };
            let key = (system.clone(), value.clone());
            if state.idents.contains(&key) {
                continue;
            }
            state.idents.push(key);
            self.out.tables.patient_identifiers.push(PatientIdentifier {
                patient_id: id.to_string(),
                kind: "identifier".to_string(),
                system,
                value,
                type_code,
                meta: m.meta(pid),
            });
        }
    }
}
