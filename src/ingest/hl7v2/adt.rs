//! ADT replay: the encounter state machine (admit, transfer, discharge, updates, cancels)
//! and the care team of each version.

use super::fields::{
    implied_class, map_disposition, map_service, map_upd, ub04_admission_type, visit_number,
};
use super::replay::Assembler;
use super::segment::{Msg, Seg};
use super::state::{EncKey, EncState, EncUpdate, Upd};
use super::time::parse_ts;
use crate::curated::{admission_type, encounter_class, CareTeamMember, Encounter, Table};

impl Assembler {
    pub(super) fn adt(&mut self, m: &Msg<'_>) {
        let Some(pid) = m.seg("PID") else {
            self.bad(
                m,
                None,
                Some(Table::Patients),
                "PID-3",
                "missing_field",
                format!("{} has no PID segment", m.kind()),
            );
            return;
        };
        let Some(patient) = self.patient(m, pid) else {
            return;
        };
        let Some(pv1) = m.seg("PV1") else {
            self.bad(
                m,
                None,
                Some(Table::Encounters),
                "PV1",
                "missing_field",
                format!("{} has no PV1 segment: no encounter to record", m.kind()),
            );
            return;
        };
        let Some(upd) = self.pv1_update(m, pv1) else {
            return;
        };
        let visit = visit_number(m, Some(pv1), Some(pid));
        let id = match (visit, &upd.admit) {
            (Some(v), _) => v,
            (None, Upd::Set(t)) => format!("{patient}/{}", t.format("%Y%m%dT%H%M%SZ")),
            (None, _) => {
                self.bad(
                    m,
                    Some(pv1),
                    Some(Table::Encounters),
                    "PV1-44",
                    "missing_field",
                    "no admit time (PV1-44) and no visit number (PV1-19) to identify the \
                     encounter"
                        .into(),
                );
                return;
            }
        };
        let key = (patient.clone(), id);
        self.recall_encounter(&key);
        let trigger = m.trigger.clone();
        match trigger.as_str() {
            "A11" => {
                self.cancel_admit(m, pv1, &key);
                self.retract_clinical(m, &key);
                return;
            }
            "A12" => self.cancel_transfer(m, pv1, &key),
            "A13" => self.cancel_discharge(m, pv1, &key, upd),
            t => self.upsert_encounter(m, pv1, t, &key, &patient, upd),
        }
        self.diagnoses_and_procedures(m, &key);
    }

    /// Reads a PV1; reports (and returns `None` for) a bad admit or discharge time, since
    /// an encounter with a wrong time is worse than none.
    pub(super) fn pv1_update(&mut self, m: &Msg<'_>, pv1: &Seg<'_>) -> Option<EncUpdate> {
        let mut times = [Upd::Keep, Upd::Keep];
        for (slot, field) in times.iter_mut().zip([44usize, 45]) {
            *slot = match m.raw_upd(pv1, field) {
                Upd::Keep => Upd::Keep,
                Upd::Clear => Upd::Clear,
                Upd::Set(_) => match m.get(pv1, field, 1) {
                    None => Upd::Keep,
                    Some(s) => match parse_ts(&s, m.offset) {
                        Ok(t) => Upd::Set(t),
                        Err(e) => {
                            self.bad(
                                m,
                                Some(pv1),
                                Some(Table::Encounters),
                                &format!("PV1-{field}"),
                                "bad_date",
                                e,
                            );
                            return None;
                        }
                    },
                },
            };
        }
        let [admit, discharge] = times;
        let admission_type = match m.upd(pv1, 4, 1) {
            Upd::Set(s) => {
                match ub04_admission_type(&s).or_else(|| admission_type::normalize(&s)) {
                    Some(t) => Upd::Set(t.to_string()),
                    None => {
                        self.bad(
                            m,
                            Some(pv1),
                            Some(Table::Encounters),
                            "PV1-4",
                            "bad_value",
                            format!(
                                "admission type `{s}` is neither in HL7 table 0007 nor a UB-04 \
                             priority code; left empty"
                            ),
                        );
                        Upd::Keep
                    }
                }
            }
            other => other,
        };
        let clinicians = |field: usize| -> Upd<Vec<String>> {
            match m.raw_upd(pv1, field) {
                Upd::Keep => Upd::Keep,
                Upd::Clear => Upd::Clear,
                Upd::Set(f) => {
                    let ids: Vec<String> = m
                        .enc
                        .reps(f)
                        .filter_map(|r| m.enc.text(m.enc.sub(m.enc.comp(r, 1), 1)))
                        .collect();
                    if ids.is_empty() {
                        Upd::Keep
                    } else {
                        Upd::Set(ids)
                    }
                }
            }
        };
        Some(EncUpdate {
            class: m
                .get(pv1, 2, 1)
                .and_then(|c| encounter_class::normalize(&c)),
            admit,
            discharge,
            admission_type,
            disposition: map_upd(m.upd(pv1, 36, 1), map_disposition),
            service: map_upd(m.upd(pv1, 10, 1), map_service),
            attending: clinicians(7),
            admitting: clinicians(17),
        })
    }

    pub(super) fn upsert_encounter(
        &mut self,
        m: &Msg<'_>,
        pv1: &Seg<'_>,
        trigger: &str,
        key: &EncKey,
        patient: &str,
        upd: EncUpdate,
    ) {
        let id = &key.1;
        let cur = self.encounters.get(key).and_then(|t| t.state.clone());
        let mut st = match &cur {
            Some(s) => s.clone(),
            None => {
                let admit = match &upd.admit {
                    Upd::Set(t) => Some(*t),
                    // A pre-admission may only know the expected admit time (PV2-8).
                    _ if trigger == "A05" => m
                        .seg("PV2")
                        .and_then(|pv2| m.get(pv2, 8, 1))
                        .and_then(|s| parse_ts(&s, m.offset).ok()),
                    _ => None,
                };
                let Some(admit) = admit else {
                    self.bad(
                        m,
                        Some(pv1),
                        Some(Table::Encounters),
                        "PV1-44",
                        "missing_field",
                        format!(
                            "{} for new encounter {id} has no admit time (PV1-44)",
                            m.kind()
                        ),
                    );
                    return;
                };
                EncState {
                    patient_id: patient.to_string(),
                    class: implied_class(trigger),
                    admit,
                    discharge: None,
                    admission_type: None,
                    disposition: None,
                    service: None,
                    care: Vec::new(),
                }
            }
        };
        st.patient_id = patient.to_string();
        let class = upd.class;
        upd.apply(&mut st);
        st.class = match (class, trigger) {
            (Some(c), _) => c,
            // A06/A07 change the class even when PV1-2 says something we cannot map.
            (None, "A06") => encounter_class::INPATIENT,
            (None, "A07") => encounter_class::AMBULATORY,
            (None, _) => st.class,
        };
        if trigger == "A03" && st.discharge.is_none() {
            // PV1-45 is the discharge time; the event time (EVN-6, then EVN-2) stands in.
            st.discharge = m.seg("EVN").and_then(|evn| {
                [6, 2]
                    .iter()
                    .filter_map(|&f| m.get(evn, f, 1))
                    .find_map(|s| parse_ts(&s, m.offset).ok())
            });
            if st.discharge.is_none() {
                self.bad(
                    m,
                    Some(pv1),
                    Some(Table::Encounters),
                    "PV1-45",
                    "missing_field",
                    format!("ADT^A03 for encounter {id} has no discharge time (PV1-45, EVN-6)"),
                );
                return;
            }
        }
        if let Some(d) = st.discharge {
            if d < st.admit {
                self.bad(
                    m,
                    Some(pv1),
                    Some(Table::Encounters),
                    "PV1-45",
                    "bad_value",
                    format!("discharge {d} is before admission {}", st.admit),
                );
                return;
            }
        }
        self.set_encounter(m, pv1, key, Some(st));
        if let Some(track) = self.encounters.get_mut(key) {
            track.before_transfer = if trigger == "A02" { cur } else { None };
        }
    }

    pub(super) fn dangling(&mut self, m: &Msg<'_>, pv1: &Seg<'_>, detail: String) {
        self.bad(
            m,
            Some(pv1),
            Some(Table::Encounters),
            "PV1-19",
            "dangling_reference",
            detail,
        );
    }

    pub(super) fn cancel_admit(&mut self, m: &Msg<'_>, pv1: &Seg<'_>, key: &EncKey) {
        let id = &key.1;
        if self.encounters.get(key).is_some_and(|t| t.state.is_some()) {
            self.set_encounter(m, pv1, key, None);
        } else {
            self.dangling(
                m,
                pv1,
                format!("ADT^A11 cancels the admission of encounter {id}, which is not open"),
            );
        }
    }

    pub(super) fn cancel_transfer(&mut self, m: &Msg<'_>, pv1: &Seg<'_>, key: &EncKey) {
        let id = &key.1;
        let track = self.encounters.get_mut(key);
        match track.and_then(|t| t.state.as_ref().and(t.before_transfer.take())) {
            Some(prev) => self.set_encounter(m, pv1, key, Some(prev)),
            None => self.dangling(
                m,
                pv1,
                format!("ADT^A12 cancels a transfer of encounter {id}, which has none to cancel"),
            ),
        }
    }

    pub(super) fn cancel_discharge(
        &mut self,
        m: &Msg<'_>,
        pv1: &Seg<'_>,
        key: &EncKey,
        mut upd: EncUpdate,
    ) {
        let id = &key.1;
        let cur = self.encounters.get(key).and_then(|t| t.state.clone());
        match cur {
            Some(mut st) if st.discharge.is_some() => {
                upd.discharge = Upd::Clear;
                upd.disposition = Upd::Clear;
                let class = upd.class;
                upd.apply(&mut st);
                if let Some(c) = class {
                    st.class = c;
                }
                self.set_encounter(m, pv1, key, Some(st));
            }
            _ => self.dangling(
                m,
                pv1,
                format!("ADT^A13 cancels the discharge of encounter {id}, which is not discharged"),
            ),
        }
    }

    /// Makes `new` the current version of encounter `id` (`None`: no version), retracting
    /// the current rows as of the message's `known_at` and keeping the care team in step.
    pub(super) fn set_encounter(
        &mut self,
        m: &Msg<'_>,
        pv1: &Seg<'_>,
        key: &EncKey,
        new: Option<EncState>,
    ) {
        let id = &key.1;
        let known_at = m.known_at;
        let track = self.encounters.entry(key.clone()).or_default();
        if track.state == new {
            return;
        }
        if let Some(r) = track.row.take() {
            if let Some(row) = self.out.tables.encounters.get_mut(r) {
                row.meta.retracted_at = Some(known_at);
                self.changed = true;
            }
        }
        if let Some(st) = &new {
            track.row = Some(self.out.tables.encounters.len());
            self.out.tables.encounters.push(Encounter {
                encounter_id: id.clone(),
                patient_id: st.patient_id.clone(),
                class: st.class.to_string(),
                admit_time: st.admit,
                discharge_time: st.discharge,
                admission_type: st.admission_type.clone(),
                discharge_disposition: st.disposition.clone(),
                service: st.service.clone(),
                code: None,
                meta: m.meta(pv1),
            });
        }
        // Care team: keep rows that still hold, retract the others, add the new ones.
        let wanted: Vec<CareTeamMember> = new
            .iter()
            .flat_map(|st| {
                st.care.iter().map(|(role, clinician)| CareTeamMember {
                    patient_id: st.patient_id.clone(),
                    clinician_id: clinician.clone(),
                    role: Some((*role).to_string()),
                    valid_from: st.admit,
                    valid_to: st.discharge,
                    meta: m.meta(pv1),
                })
            })
            .collect();
        let same = |a: &CareTeamMember, b: &CareTeamMember| {
            a.patient_id == b.patient_id
                && a.clinician_id == b.clinician_id
                && a.role == b.role
                && a.valid_from == b.valid_from
                && a.valid_to == b.valid_to
        };
        let mut kept = Vec::new();
        for (role, clinician, r) in std::mem::take(&mut track.care_rows) {
            let still = self
                .out
                .tables
                .care_team
                .get(r)
                .is_some_and(|row| wanted.iter().any(|w| same(w, row)));
            if still {
                kept.push((role, clinician, r));
            } else if let Some(row) = self.out.tables.care_team.get_mut(r) {
                row.meta.retracted_at = Some(known_at);
            }
        }
        for w in wanted {
            let exists = kept.iter().any(|(_, _, r)| {
                self.out
                    .tables
                    .care_team
                    .get(*r)
                    .is_some_and(|row| same(&w, row))
            });
            if !exists {
                let role = if w.role.as_deref() == Some("admitting") {
                    "admitting"
                } else {
                    "attending"
                };
                kept.push((
                    role,
                    w.clinician_id.clone(),
                    self.out.tables.care_team.len(),
                ));
                self.out.tables.care_team.push(w);
            }
        }
        track.care_rows = kept;
        track.state = new;
    }
}
