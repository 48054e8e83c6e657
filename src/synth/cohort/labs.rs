//! Lab values: an analyte's value given the patient's conditions and the acute state,
//! and the draws (with corrections) of a visit or a stay.

use rand::Rng;

use super::{normal, round_to, ts, Enc, Gen, DAY, HOUR, MINUTE};
use crate::curated::{code_system, Coding, Observation};
use crate::synth::vocab;
use crate::synth::vocab::{Analyte, Family, LabEffect};

impl Gen {
    /// One lab value of `analyte` at time `t`, for acute intensity `acute` (1 on
    /// admission, recovering towards discharge).
    pub(super) fn lab_value(
        &mut self,
        analyte: Analyte,
        t: i64,
        acute: f64,
        effect: LabEffect,
    ) -> f64 {
        let b = self.burden(t);
        let z = normal(&mut self.rng);
        let stage = self.ckd_stage(t);
        let v = match analyte {
            Analyte::Hemoglobin => {
                let mut v = self.hb0 - 0.25 * b.min(8.0) + 0.4 * z;
                if stage >= 4 {
                    v -= 1.2;
                }
                if self.has(t, Family::Cancer) {
                    v -= 0.8;
                }
                v - acute
                    * (0.8
                        + if effect == LabEffect::Bleeding {
                            2.5
                        } else {
                            0.0
                        })
            }
            Analyte::Leukocytes => {
                self.wbc0 * (0.15 * z).exp()
                    + acute
                        * if effect == LabEffect::Infection {
                            8.0
                        } else {
                            1.5
                        }
            }
            Analyte::Platelets => {
                self.plt0 * (0.1 * z).exp()
                    - acute
                        * if effect == LabEffect::Bleeding {
                            60.0
                        } else {
                            0.0
                        }
            }
            Analyte::Sodium => {
                let chf = if self.has(t, Family::HeartFailure) {
                    2.0
                } else {
                    0.0
                };
                self.na0 - 0.5 * b.min(8.0) - chf + 1.5 * z
                    - acute
                        * if effect == LabEffect::FluidOverload {
                            5.0
                        } else {
                            2.0
                        }
            }
            Analyte::Potassium => {
                let ckd = if stage >= 4 { 0.5 } else { 0.0 };
                self.k0
                    + ckd
                    + 0.25 * z
                    + acute
                        * if effect == LabEffect::KidneyInjury {
                            1.0
                        } else {
                            0.0
                        }
            }
            Analyte::Creatinine => {
                let ckd = match stage {
                    0 => 1.0,
                    3 => 1.9,
                    4 => 3.0,
                    5 => 4.5,
                    _ => 7.0,
                };
                self.creat0
                    * ckd
                    * (0.08 * z).exp()
                    * (1.0
                        + acute
                            * if effect == LabEffect::KidneyInjury {
                                1.5
                            } else {
                                0.15
                            })
            }
            Analyte::Glucose => {
                let base = if self.has(t, Family::Diabetes) {
                    150.0
                } else {
                    self.glu0
                };
                base * (0.12 * z).exp()
                    + acute
                        * if effect == LabEffect::Hyperglycemia {
                            250.0
                        } else {
                            20.0
                        }
            }
        };
        let lab = &vocab::LABS[analyte as usize];
        round_to(v.clamp(lab.range.0, lab.range.1), lab.decimals)
    }

    /// One draw (a panel of results sharing a sample time and a result time). Results
    /// arrive after a turnaround; 8% of draws arrive late (hours to days); 1.5% of results
    /// are corrected later (the original retracted, the corrected value known at the
    /// correction). Returns the (first-reported) values.
    pub(super) fn draw(
        &mut self,
        enc: &mut Enc,
        t: i64,
        panel: &[Analyte],
        acute: f64,
        effect: LabEffect,
        turnaround: f64,
    ) -> Vec<(Analyte, f64)> {
        let draw_id = format!("{}-L{:02}", enc.id, Enc::next(&mut enc.draws));
        let mut known = t + self.lognormal(turnaround, 0.5).max(5 * MINUTE);
        if self.rng.random_bool(0.08) {
            known += self.uniform(6 * HOUR, 72 * HOUR);
        }
        let mut values = Vec::with_capacity(panel.len());
        for &analyte in panel {
            let value = self.lab_value(analyte, t, acute, effect);
            values.push((analyte, value));
            let lab = &vocab::LABS[analyte as usize];
            let id = format!("{draw_id}-{}", lab.code.0);
            let correction = self
                .rng
                .random_bool(0.015)
                .then(|| known + self.uniform(HOUR, 5 * DAY));
            let row = |g: &Gen,
                       value: f64,
                       status: &str,
                       version: u32,
                       known: i64,
                       retracted: Option<i64>| {
                Observation {
                    observation_id: id.clone(),
                    patient_id: g.pid.clone(),
                    encounter_id: Some(enc.id.clone()),
                    category: Some("laboratory".into()),
                    code: Coding {
                        system: code_system::LOINC.into(),
                        code: lab.code.0.into(),
                        display: Some(lab.code.1.into()),
                    },
                    value_num: Some(value),
                    value_text: None,
                    unit: Some(lab.unit.into()),
                    value_original: None,
                    unit_original: None,
                    effective_time: ts(t),
                    status: Some(status.into()),
                    meta: g.meta("observations", &id, version, known, retracted),
                }
            };
            let original = row(self, value, "final", 1, known, correction);
            self.out.observations.push(original);
            if let Some(at) = correction {
                let step = 10f64.powi(-lab.decimals);
                let mut fixed =
                    round_to(value * (1.0 + 0.06 * normal(&mut self.rng)), lab.decimals);
                if fixed == value {
                    fixed = value + step;
                }
                let fixed = round_to(fixed.clamp(lab.range.0, lab.range.1), lab.decimals);
                let fixed = if fixed == value {
                    round_to(value - step, lab.decimals)
                } else {
                    fixed
                };
                let corrected = row(self, fixed, "corrected", 2, at, None);
                self.out.observations.push(corrected);
            }
        }
        values
    }
}
