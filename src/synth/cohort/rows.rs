//! The curated rows a simulated patient writes: patient, encounters, conditions,
//! medications, procedures.

use chrono::NaiveDate;
use rand::Rng;

use super::{pick, ts, Enc, Gen, DAY, HOUR, MINUTE};
use crate::curated::{
    code_system, CareTeamMember, Coding, Condition, Encounter, Medication, Patient, Procedure,
};
use crate::synth::vocab;
use crate::synth::vocab::Code;

impl Gen {
    pub(super) fn patient_rows(&mut self, registered: i64) {
        let given = if self.female {
            *pick(&mut self.rng, vocab::GIVEN_FEMALE)
        } else {
            *pick(&mut self.rng, vocab::GIVEN_MALE)
        };
        let family = *pick(&mut self.rng, vocab::FAMILY);
        let zip = format!(
            "{}{:02}",
            pick(&mut self.rng, vocab::ZIP3),
            self.rng.random_range(0..100)
        );
        let birth_date = NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|e| e.checked_add_signed(chrono::Duration::days(self.birth.div_euclid(DAY))));
        // An in-hospital death is known at discharge; a death elsewhere reaches the
        // hospital days later (registry, family call).
        let death_known = self.death.map(|d| {
            let in_hospital = self
                .out
                .encounters
                .iter()
                .any(|e| e.discharge_disposition.as_deref() == Some(vocab::EXPIRED));
            if in_hospital {
                d
            } else {
                d + self.uniform(DAY, 10 * DAY)
            }
        });
        let row =
            |g: &Gen, version: u32, known: i64, retracted: Option<i64>, death: Option<i64>| {
                Patient {
                    patient_id: g.pid.clone(),
                    birth_date,
                    sex: Some(if g.female { "female" } else { "male" }.into()),
                    death_time: death.map(ts),
                    zip: Some(zip.clone()),
                    given_name: Some(given.into()),
                    family_name: Some(family.into()),
                    meta: g.meta("patients", &g.pid, version, known, retracted),
                }
            };
        let first = row(self, 1, registered, death_known, None);
        self.out.patients.push(first);
        if let (Some(death), Some(known)) = (self.death, death_known) {
            let second = row(self, 2, known, None, Some(death));
            self.out.patients.push(second);
        }
    }

    pub(super) fn new_encounter(&mut self) -> Enc {
        self.enc_count += 1;
        Enc {
            id: format!("E{}-{:03}", &self.pid[1..], self.enc_count),
            draws: 0,
            conditions: 0,
            procedures: 0,
            medications: 0,
        }
    }

    /// Writes an encounter as two versions: as known on arrival (no discharge yet),
    /// retracted at discharge, and as known at discharge. The attending's care-team row
    /// follows the same pattern, so nothing about the discharge is visible before it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn encounter_rows(
        &mut self,
        enc: &Enc,
        class: &str,
        admit: i64,
        discharge: i64,
        admission_type: Option<&str>,
        disposition: Option<&str>,
        service: Option<&str>,
        code: Code,
        attending: Option<String>,
    ) {
        let row =
            |g: &Gen, version: u32, known: i64, retracted: Option<i64>, done: bool| Encounter {
                encounter_id: enc.id.clone(),
                patient_id: g.pid.clone(),
                class: class.to_string(),
                admit_time: ts(admit),
                discharge_time: done.then(|| ts(discharge)),
                admission_type: admission_type.map(str::to_string),
                discharge_disposition: if done {
                    disposition.map(str::to_string)
                } else {
                    None
                },
                service: service.map(str::to_string),
                code: Some(Coding {
                    system: code_system::SNOMED.into(),
                    code: code.0.into(),
                    display: Some(code.1.into()),
                }),
                meta: g.meta("encounters", &enc.id, version, known, retracted),
            };
        let arrival = row(self, 1, admit, Some(discharge), false);
        let fin = row(self, 2, discharge, None, true);
        self.out.encounters.push(arrival);
        self.out.encounters.push(fin);
        if let Some(clinician) = attending {
            for (version, known, retracted, valid_to) in [
                (1, admit, Some(discharge), None),
                (2, discharge, None, Some(discharge)),
            ] {
                let meta = self.meta("care_team", &enc.id, version, known, retracted);
                self.out.care_team.push(CareTeamMember {
                    patient_id: self.pid.clone(),
                    clinician_id: clinician.clone(),
                    role: Some("attending".into()),
                    valid_from: ts(admit),
                    valid_to: valid_to.map(ts),
                    meta,
                });
            }
        }
    }

    pub(super) fn condition_row(
        &mut self,
        enc: &mut Enc,
        code: Code,
        onset: i64,
        abatement: Option<i64>,
        known: i64,
    ) {
        let id = format!("{}-C{:02}", enc.id, Enc::next(&mut enc.conditions));
        let meta = self.meta("conditions", &id, 1, known, None);
        self.out.conditions.push(Condition {
            condition_id: id,
            patient_id: self.pid.clone(),
            encounter_id: Some(enc.id.clone()),
            code: Coding {
                system: code_system::ICD10CM.into(),
                code: code.0.into(),
                display: Some(code.1.into()),
            },
            onset_time: ts(onset),
            abatement_time: abatement.map(ts),
            diagnosis_type: None,
            meta,
        });
    }

    /// A medication order, known when placed; `end` is the planned end of the course
    /// (known at ordering), `None` for a long-term drug.
    pub(super) fn medication_row(
        &mut self,
        enc: &mut Enc,
        code: Code,
        start: i64,
        end: Option<i64>,
    ) {
        let id = format!("{}-M{:02}", enc.id, Enc::next(&mut enc.medications));
        let meta = self.meta("medications", &id, 1, start, None);
        self.out.medications.push(Medication {
            medication_id: id,
            patient_id: self.pid.clone(),
            encounter_id: Some(enc.id.clone()),
            code: Coding {
                system: code_system::RXNORM.into(),
                code: code.0.into(),
                display: Some(code.1.into()),
            },
            start_time: ts(start),
            end_time: end.map(ts),
            status: Some("active".into()),
            meta,
        });
    }

    pub(super) fn procedure_row(&mut self, enc: &mut Enc, code: Code, start: i64, end: i64) {
        let id = format!("{}-P{:02}", enc.id, Enc::next(&mut enc.procedures));
        let known = end + self.uniform(10 * MINUTE, 2 * HOUR);
        let meta = self.meta("procedures", &id, 1, known, None);
        self.out.procedures.push(Procedure {
            procedure_id: id,
            patient_id: self.pid.clone(),
            encounter_id: Some(enc.id.clone()),
            code: Coding {
                system: code_system::SNOMED.into(),
                code: code.0.into(),
                display: Some(code.1.into()),
            },
            performed_time: ts(start),
            performed_end: Some(ts(end)),
            meta,
        });
    }
}
