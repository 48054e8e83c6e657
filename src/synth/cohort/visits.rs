//! Visits: clinic and ED visits, the reason for an admission, and the stay itself
//! (length, labs, procedures, discharge, readmission).

use rand::Rng;

use super::{pick, Gen, StayOutcome, DAY, HOUR, MINUTE};
use crate::curated::encounter_class;
use crate::synth::vocab;
use crate::synth::vocab::{Analyte, Code, Family, LabEffect, Reason, Service};

impl Gen {
    /// A clinic visit during opening hours at or after `t`; records every condition whose
    /// onset has passed and was not yet on the problem list (with its long-term drug).
    /// Returns the end of the visit.
    pub(super) fn clinic_visit(&mut self, t: i64, code: Code, lab_p: f64) -> i64 {
        let day = t.div_euclid(DAY) * DAY;
        let mut start = day + 8 * HOUR + self.uniform(0, 9 * HOUR);
        if start < t {
            start += DAY;
        }
        let end = start + self.uniform(15 * MINUTE, 45 * MINUTE);
        let mut enc = self.new_encounter();
        self.encounter_rows(
            &enc,
            encounter_class::AMBULATORY,
            start,
            end,
            None,
            None,
            None,
            code,
            None,
        );
        let chronic_lab = self.has(start, Family::Diabetes) || self.has(start, Family::Ckd);
        let p = (lab_p + if chronic_lab { 0.2 } else { 0.0 }).min(1.0);
        if self.rng.random_bool(p) {
            let at = start + self.uniform(5 * MINUTE, 15 * MINUTE);
            self.draw(
                &mut enc,
                at,
                vocab::CLINIC_PANEL,
                0.0,
                LabEffect::None,
                4.0 * HOUR as f64,
            );
        }
        let coded = end + self.uniform(0, DAY);
        let mut new = Vec::new();
        for c in self
            .conds
            .iter_mut()
            .filter(|c| !c.recorded && c.onset <= end)
        {
            c.recorded = true;
            new.push((c.code, c.onset, c.drug));
        }
        for (code, onset, drug) in new {
            self.condition_row(&mut enc, code, onset, None, coded);
            if let Some(drug) = drug {
                self.medication_row(&mut enc, drug, end, None);
            }
        }
        end
    }

    /// An ED visit, treated and released. Returns the departure time.
    pub(super) fn ed_visit(&mut self, t: i64) -> i64 {
        let end = t + self
            .lognormal(4.0 * HOUR as f64, 0.5)
            .clamp(HOUR, 16 * HOUR);
        let mut enc = self.new_encounter();
        let md = self
            .rng
            .random_range(vocab::EMERGENCY_MDS.0..vocab::EMERGENCY_MDS.1);
        self.encounter_rows(
            &enc,
            encounter_class::EMERGENCY,
            t,
            end,
            None,
            Some("home"),
            None,
            vocab::ENC_EMERGENCY,
            Some(vocab::clinician_id(md)),
        );
        if self.rng.random_bool(0.6) {
            let at = t + self.uniform(15 * MINUTE, 45 * MINUTE);
            self.draw(
                &mut enc,
                at,
                vocab::HOSPITAL_PANEL,
                0.3,
                LabEffect::None,
                HOUR as f64,
            );
        }
        let dx = *pick(&mut self.rng, vocab::ED_REASONS);
        let coded = end + self.uniform(HOUR, 2 * DAY);
        self.condition_row(&mut enc, dx, t, Some(end), coded);
        end
    }

    pub(super) fn choose_reason(&mut self, t: i64, elective: bool) -> Reason {
        if elective {
            let has_colon = self.active(t).any(|c| c.code.0 == "C18.9");
            let n = if has_colon {
                vocab::ELECTIVE_REASONS.len()
            } else {
                vocab::ELECTIVE_REASONS.len() - 1
            };
            let r = &vocab::ELECTIVE_REASONS[self.rng.random_range(0..n)];
            return *r;
        }
        let families: Vec<Family> = self
            .active(t)
            .map(|c| c.family)
            .filter(|f| vocab::chronic_reason(*f).is_some())
            .collect();
        if !families.is_empty() && self.rng.random_bool(0.55) {
            let f = *pick(&mut self.rng, &families);
            if let Some(r) = vocab::chronic_reason(f) {
                return r;
            }
        }
        *pick(&mut self.rng, vocab::GENERAL_REASONS)
    }

    /// An inpatient stay from `t`, with its labs, procedures, drugs, diagnoses and care
    /// team; then the readmission draw. Returns the discharge time.
    pub(super) fn admission(
        &mut self,
        t: i64,
        elective: bool,
        readmission: bool,
        readmit: &mut Option<i64>,
    ) -> i64 {
        let admit = if elective {
            let day = t.div_euclid(DAY) * DAY;
            let a = day + 7 * HOUR + self.uniform(0, 3 * HOUR);
            if a < t {
                a + DAY
            } else {
                a
            }
        } else {
            t
        };
        let outcome = self.stay(admit, elective, readmission);
        if outcome.died {
            self.death = Some(outcome.discharge);
            return outcome.discharge;
        }
        let prior = self
            .admissions
            .iter()
            .filter(|&&a| a < admit && a >= admit - 365 * DAY)
            .count();
        let b = self.burden(admit).min(8.0);
        let x = -2.4
            + 0.17 * b
            + if outcome.low_hb { 0.5 } else { 0.0 }
            + if outcome.low_na { 0.35 } else { 0.0 }
            + if outcome.oncology { 0.4 } else { 0.0 }
            + if outcome.los_days >= 5.0 { 0.3 } else { 0.0 }
            + if outcome.procedure { 0.15 } else { 0.0 }
            + if prior >= 2 { 0.35 } else { 0.0 }
            + if outcome.elective { -0.8 } else { 0.0 };
        let p = 1.0 / (1.0 + (-x).exp());
        if self.rng.random_bool(p) {
            let u: f64 = self.rng.random();
            let days = 1.0 + 28.5 * u.powf(1.6);
            *readmit = Some(outcome.discharge + (days * DAY as f64) as i64);
        }
        outcome.discharge
    }

    pub(super) fn stay(&mut self, admit: i64, elective: bool, readmission: bool) -> StayOutcome {
        let reason = self.choose_reason(admit, elective);
        let b = self.burden(admit);
        let age = self.age_at(admit);
        let cancer = self.has(admit, Family::Cancer);
        let service = if reason.service == Service::Medicine && cancer && self.rng.random_bool(0.3)
        {
            Service::Oncology
        } else {
            reason.service
        };
        let admission_type = if elective {
            "elective"
        } else if self.rng.random_bool(if readmission { 0.85 } else { 0.78 }) {
            "emergency"
        } else {
            "urgent"
        };
        let median_h = if elective {
            72.0
        } else {
            96.0 * (1.0 + 0.06 * b.min(8.0))
        } * if service == Service::Oncology {
            1.2
        } else {
            1.0
        };
        let los = self
            .lognormal(median_h * HOUR as f64, 0.65)
            .clamp(8 * HOUR, 40 * DAY);
        let discharge = admit + los;
        let metastatic = self
            .active(admit)
            .any(|c| c.weight == 6 && c.family == Family::Cancer);
        let p_die = (0.005
            + 0.004 * b
            + if age >= 80.0 { 0.02 } else { 0.0 }
            + if metastatic { 0.05 } else { 0.0 })
        .min(0.3);
        let died = self.rng.random_bool(p_die);
        let disposition = if died {
            vocab::EXPIRED
        } else {
            let old = age >= 65.0;
            let table: [(&str, f64); 7] = [
                ("snf", if old { 0.2 } else { 0.04 }),
                (
                    "rehab",
                    if service == Service::Orthopedics {
                        0.2
                    } else {
                        0.04
                    },
                ),
                ("hosp", if metastatic { 0.1 } else { 0.01 }),
                ("other-hcf", 0.02),
                ("long", if age >= 80.0 { 0.04 } else { 0.01 }),
                ("aadvice", 0.015),
                ("home", 1.0),
            ];
            let mut u: f64 = self.rng.random();
            let mut chosen = "home";
            for (d, p) in table {
                if u < p {
                    chosen = d;
                    break;
                }
                u -= p;
            }
            chosen
        };
        let pool = vocab::SERVICE_MDS[service as usize];
        let attending = vocab::clinician_id(self.rng.random_range(pool.0..pool.1));
        let code = if elective {
            vocab::ENC_ELECTIVE
        } else {
            vocab::ENC_INPATIENT
        };
        let mut enc = self.new_encounter();
        self.encounter_rows(
            &enc,
            encounter_class::INPATIENT,
            admit,
            discharge,
            Some(admission_type),
            Some(disposition),
            Some(service.name()),
            code,
            Some(attending),
        );
        self.admissions.push(admit);

        // Labs: on admission, most mornings (at most four), and before discharge.
        let acute0 = if elective {
            0.2
        } else {
            0.6 + 0.4 * self.rng.random::<f64>()
        };
        let first_draw = admit + self.uniform(30 * MINUTE, 2 * HOUR);
        let mut last = self.draw(
            &mut enc,
            first_draw,
            vocab::HOSPITAL_PANEL,
            acute0,
            reason.effect,
            HOUR as f64,
        );
        let mut morning = (admit.div_euclid(DAY) + 1) * DAY + 5 * HOUR;
        let mut mornings = 0;
        while morning + self.uniform(0, 2 * HOUR) < discharge - 8 * HOUR && mornings < 4 {
            let frac = (morning - admit) as f64 / los as f64;
            let at = morning + self.uniform(0, 2 * HOUR);
            last = self.draw(
                &mut enc,
                at,
                vocab::HOSPITAL_PANEL,
                acute0 * (1.0 - 0.7 * frac),
                reason.effect,
                2.0 * HOUR as f64,
            );
            morning += if los > 6 * DAY { 2 * DAY } else { DAY };
            mornings += 1;
        }
        if los > 12 * HOUR {
            let at = discharge - self.uniform(2 * HOUR, 6 * HOUR);
            let acute = acute0 * 0.3 + if died { 0.5 } else { 0.0 };
            last = self.draw(
                &mut enc,
                at,
                vocab::HOSPITAL_PANEL,
                acute,
                reason.effect,
                HOUR as f64,
            );
        }
        let value = |a: Analyte| last.iter().find(|(x, _)| *x == a).map(|(_, v)| *v);
        let low_hb = value(Analyte::Hemoglobin).is_some_and(|v| v < 12.0);
        let low_na = value(Analyte::Sodium).is_some_and(|v| v < 135.0);

        // Procedure and drugs.
        let mut procedure = false;
        if let Some(code) = reason.procedure {
            if elective || self.rng.random_bool(0.6) {
                let latest = (admit + los / 2).min(admit + 48 * HOUR);
                let start = self.uniform(admit + 2 * HOUR, latest.max(admit + 3 * HOUR));
                let end = (start + self.uniform(30 * MINUTE, 4 * HOUR)).min(discharge - HOUR);
                self.procedure_row(&mut enc, code, start, end.max(start + 10 * MINUTE));
                procedure = true;
            }
        }
        if let Some(drug) = reason.drug {
            let start = admit + self.uniform(HOUR, 3 * HOUR);
            self.medication_row(&mut enc, drug, start, Some(start + 5 * DAY));
        }
        if !died && self.rng.random_bool(0.4) {
            let drug = *pick(&mut self.rng, vocab::DISCHARGE_DRUGS);
            self.medication_row(&mut enc, drug, discharge, Some(discharge + 30 * DAY));
        }

        // Diagnoses, coded after discharge: the principal and every active chronic one.
        let coded = discharge + self.lognormal(2.0 * DAY as f64, 0.8).clamp(HOUR, 30 * DAY);
        self.condition_row(&mut enc, reason.dx, admit, Some(discharge), coded);
        let secondary: Vec<Code> = self
            .active(admit)
            .map(|c| c.code)
            .filter(|c| c.0 != reason.dx.0)
            .collect();
        for code in secondary {
            self.condition_row(&mut enc, code, admit, None, coded);
        }
        StayOutcome {
            discharge,
            died,
            elective,
            low_hb,
            low_na,
            oncology: service == Service::Oncology,
            procedure,
            los_days: los as f64 / DAY as f64,
        }
    }
}
