//! The clinical model: one patient's whole record, simulated from a per-patient ChaCha8
//! stream so a patient depends only on `(seed, index)`.
//!
//! A patient gets an age and sex, a set of chronic conditions with onset times, and then a
//! continuous-time walk through the period: clinic visits, ED visits, unplanned and elective
//! admissions and death arrive as competing exponential clocks whose rates depend on age and
//! on the conditions active at that moment (a latent Charlson-like burden). After each
//! discharge a 30-day readmission is drawn from a logistic model of the burden and of the
//! HOSPITAL score's components (discharge hemoglobin and sodium, oncology, procedure, length
//! of stay, prior admissions), so that the scores Ward computes predict the label.
//! docs/synth.md lists the parameters.

use chrono::{DateTime, NaiveDate, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Exp1, StandardNormal};

use super::vocab::{self, Analyte, Code, Family, LabEffect, Reason, Service};
use super::SynthOptions;
use crate::curated::{
    code_system, encounter_class, CareTeamMember, Coding, Condition, CuratedTables, Encounter,
    Medication, Observation, Patient, Procedure, RowMeta,
};

/// `source_system` of every generated row.
pub const SOURCE_SYSTEM: &str = "ward-synth";

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const YEAR: f64 = 365.25 * 86_400.0;

/// The ChaCha8 key of patient `index`: the seed, the index and a domain tag, so patients
/// are independent streams and any patient can be generated alone.
fn patient_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..32].copy_from_slice(b"ward-synth-v1\0\0\0");
    ChaCha8Rng::from_seed(key)
}

/// The curated id of patient `index`; fixed width so ids sort in index order (up to 10^7).
pub(crate) fn patient_id(index: u64) -> String {
    format!("P{index:07}")
}

/// Seconds to a UTC time. Generated times stay far inside chrono's range.
pub(crate) fn ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// A chronic condition the patient has (or will have within the period).
struct Cond {
    family: Family,
    code: Code,
    weight: u8,
    onset: i64,
    drug: Option<Code>,
    recorded: bool,
}

/// Counters of the rows attached to one encounter, for their ids.
struct Enc {
    id: String,
    draws: u32,
    conditions: u32,
    procedures: u32,
    medications: u32,
}

impl Enc {
    fn next(counter: &mut u32) -> u32 {
        *counter += 1;
        *counter
    }
}

/// What the readmission model needs to know about a finished stay.
struct StayOutcome {
    discharge: i64,
    died: bool,
    elective: bool,
    low_hb: bool,
    low_na: bool,
    oncology: bool,
    procedure: bool,
    los_days: f64,
}

struct Gen {
    rng: ChaCha8Rng,
    start: i64,
    end: i64,
    pid: String,
    female: bool,
    birth: i64,
    conds: Vec<Cond>,
    pcp: String,
    enc_count: u32,
    admissions: Vec<i64>,
    death: Option<i64>,
    hb0: f64,
    na0: f64,
    k0: f64,
    creat0: f64,
    glu0: f64,
    wbc0: f64,
    plt0: f64,
    out: CuratedTables,
}

/// One patient's full record: every curated row of patient `index` under `opts.seed`,
/// sorted canonically. A pure function of `(opts.seed, opts.start, opts.end, index)`.
pub(crate) fn generate(opts: &SynthOptions, index: u64) -> CuratedTables {
    let mut rng = patient_rng(opts.seed, index);
    let start = opts.start.timestamp();
    let end = opts.end.timestamp().max(start + DAY);
    let female = rng.random_bool(0.51);
    let age_years = sample_age(&mut rng);
    let birth_secs = start - (age_years * YEAR) as i64;
    let birth = birth_secs.div_euclid(DAY) * DAY;
    let pcp = vocab::clinician_id(rng.random_range(vocab::PRIMARY_CARE.0..vocab::PRIMARY_CARE.1));
    let hb0 = if female { 13.3 } else { 14.8 } + 0.9 * normal(&mut rng);
    let na0 = 140.0 + 1.5 * normal(&mut rng);
    let k0 = 4.2 + 0.2 * normal(&mut rng);
    let creat0 = if female { 0.75 } else { 0.95 } * (0.15 * normal(&mut rng)).exp();
    let glu0 = 95.0 * (0.08 * normal(&mut rng)).exp();
    let wbc0 = 7.0 * (0.2 * normal(&mut rng)).exp();
    let plt0 = 250.0 * (0.2 * normal(&mut rng)).exp();
    let mut g = Gen {
        rng,
        start,
        end,
        pid: patient_id(index),
        female,
        birth,
        conds: Vec::new(),
        pcp,
        enc_count: 0,
        admissions: Vec::new(),
        death: None,
        hb0,
        na0,
        k0,
        creat0,
        glu0,
        wbc0,
        plt0,
        out: CuratedTables::default(),
    };
    g.draw_conditions();
    g.simulate();
    g.out.sort_canonical();
    g.out
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample::<f64, _>(StandardNormal)
}

/// Age at the start of the period: a hospital catchment, older than the general population.
fn sample_age(rng: &mut ChaCha8Rng) -> f64 {
    const BANDS: [(f64, f64, f64); 5] = [
        (0.12, 0.0, 18.0),
        (0.22, 18.0, 40.0),
        (0.33, 40.0, 65.0),
        (0.23, 65.0, 80.0),
        (0.10, 80.0, 100.0),
    ];
    let mut u: f64 = rng.random();
    for (p, lo, hi) in BANDS {
        if u < p {
            return lo + (hi - lo) * (u / p);
        }
        u -= p;
    }
    50.0
}

/// Picks a variant by its relative frequency.
fn pick_weighted<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
    let total: u32 = items.iter().map(&weight).sum();
    let mut r = rng.random_range(0..total.max(1));
    for it in items {
        let w = weight(it);
        if r < w {
            return it;
        }
        r -= w;
    }
    &items[0]
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

impl Gen {
    fn age_at(&self, t: i64) -> f64 {
        (t - self.birth) as f64 / YEAR
    }

    fn uniform(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            lo
        } else {
            self.rng.random_range(lo..hi)
        }
    }

    /// Median times `exp(sigma * z)`, in seconds.
    fn lognormal(&mut self, median: f64, sigma: f64) -> i64 {
        (median * (sigma * normal(&mut self.rng)).exp()) as i64
    }

    fn draw_conditions(&mut self) {
        let mid_age = self.age_at((self.start + self.end) / 2);
        let band = if mid_age < 40.0 {
            0
        } else if mid_age < 65.0 {
            1
        } else {
            2
        };
        let adult = self.birth + (18.0 * YEAR) as i64;
        for def in vocab::CHRONIC {
            let mut p = def.prevalence[band];
            if def.family == Family::Dementia && mid_age >= 80.0 {
                p *= 3.0;
            }
            if !self.rng.random_bool(p.min(1.0)) {
                continue;
            }
            let variants: Vec<_> = def
                .variants
                .iter()
                .filter(|v| self.female || v.0 != "C50.919")
                .copied()
                .collect();
            let (code, display, weight, _) = *pick_weighted(&mut self.rng, &variants, |v| v.3);
            let pre_from = adult
                .max(self.birth + DAY)
                .max(self.start - (15.0 * YEAR) as i64);
            let onset = if pre_from < self.start && self.rng.random_bool(0.7) {
                self.uniform(pre_from, self.start)
            } else {
                self.uniform(self.start, self.end)
            };
            self.conds.push(Cond {
                family: def.family,
                code: (code, display),
                weight,
                onset,
                drug: def.drug,
                recorded: false,
            });
            if def.family == Family::Cancer && self.rng.random_bool(0.25) {
                let m = *pick(&mut self.rng, vocab::METASTASIS);
                let onset = onset + self.uniform((0.2 * YEAR) as i64, (4.0 * YEAR) as i64);
                if onset < self.end {
                    self.conds.push(Cond {
                        family: Family::Cancer,
                        code: m,
                        weight: 6,
                        onset,
                        drug: None,
                        recorded: false,
                    });
                }
            }
        }
        self.conds.sort_by_key(|c| c.onset);
    }

    fn active(&self, t: i64) -> impl Iterator<Item = &Cond> {
        self.conds.iter().filter(move |c| c.onset <= t)
    }

    fn has(&self, t: i64, family: Family) -> bool {
        self.active(t).any(|c| c.family == family)
    }

    /// The latent burden: Charlson weights of the active conditions, with a metastasis
    /// replacing its primary cancer's weight and severe liver disease replacing mild.
    fn burden(&self, t: i64) -> f64 {
        let mut sum = 0i32;
        let (mut cancer, mut meta, mut mild, mut severe) = (false, false, false, false);
        for c in self.active(t) {
            sum += i32::from(c.weight);
            match (c.family, c.weight) {
                (Family::Cancer, 6) => meta = true,
                (Family::Cancer, _) => cancer = true,
                (Family::MildLiver, _) => mild = true,
                (Family::SevereLiver, _) => severe = true,
                _ => {}
            }
        }
        if cancer && meta {
            sum -= 2;
        }
        if mild && severe {
            sum -= 1;
        }
        f64::from(sum.max(0))
    }

    fn ckd_stage(&self, t: i64) -> u8 {
        self.active(t)
            .filter(|c| c.family == Family::Ckd)
            .map(|c| match c.code.0 {
                "N18.4" => 4,
                "N18.5" => 5,
                "N18.6" => 6,
                _ => 3,
            })
            .max()
            .unwrap_or(0)
    }

    fn meta(
        &self,
        table: &str,
        id: &str,
        version: u32,
        known: i64,
        retracted: Option<i64>,
    ) -> RowMeta {
        RowMeta {
            source_system: SOURCE_SYSTEM.to_string(),
            source_id: format!("{table}/{id}/{version}"),
            known_at: ts(known),
            retracted_at: retracted.map(ts),
        }
    }

    /// The walk through the period. Competing exponential clocks: at each step the next
    /// event is the earliest of a scheduled readmission, the onset of a not yet diagnosed
    /// condition, or a random event drawn from the current rates (memorylessness makes
    /// redrawing after every event exact).
    fn simulate(&mut self) {
        let first = self.start + self.uniform(0, 365 * DAY);
        let first_end = self.clinic_visit(first, vocab::ENC_CHECKUP, 0.5);
        let mut t = first_end;
        let mut readmit: Option<i64> = None;
        while t < self.end && self.death.is_none() {
            let next_dx = self
                .conds
                .iter()
                .filter(|c| !c.recorded)
                .map(|c| c.onset)
                .min();
            let age = self.age_at(t);
            let b = self.burden(t);
            let amb = if age < 18.0 {
                1.0
            } else {
                (0.6 + 0.015 * (age - 30.0).max(0.0) + 0.35 * b).min(6.0)
            };
            let ed_age = if age >= 75.0 {
                1.5
            } else if age < 18.0 {
                1.2
            } else {
                1.0
            };
            let ed = 0.10 * ed_age * (0.2 * b).exp();
            let adm_age = if age < 18.0 {
                0.5
            } else if age < 50.0 {
                1.0
            } else if age < 70.0 {
                1.8
            } else {
                3.2
            };
            let adm = 0.025 * adm_age * (0.33 * b).exp();
            let elective = if age < 18.0 {
                0.002
            } else if age < 50.0 {
                0.01
            } else {
                0.02
            };
            let death = ((-10.3 + 0.085 * age).exp() * (0.25 * b).exp()).min(1.0);
            let rates = [amb, ed, adm, elective, death];
            let total: f64 = rates.iter().sum();
            let wait = (self.rng.sample::<f64, _>(Exp1) / total * YEAR) as i64;
            let random_at = t.saturating_add(wait.max(1));
            let mut at = random_at;
            let mut which = 0usize; // 0 random, 1 diagnosis, 2 readmission
            if let Some(d) = next_dx {
                let d = d.max(t);
                if d < at {
                    at = d;
                    which = 1;
                }
            }
            if let Some(r) = readmit {
                if r <= at {
                    at = r;
                    which = 2;
                }
            }
            if at >= self.end {
                break;
            }
            match which {
                1 => {
                    t = self.clinic_visit(at, vocab::ENC_FOLLOWUP, 0.5);
                }
                2 => {
                    readmit = None;
                    t = self.admission(at, false, true, &mut readmit);
                }
                _ => {
                    let mut u = self.rng.random::<f64>() * total;
                    let mut kind = 0;
                    while kind < rates.len() - 1 && u >= rates[kind] {
                        u -= rates[kind];
                        kind += 1;
                    }
                    t = match kind {
                        0 => {
                            let code = if self.rng.random_bool(0.5) {
                                vocab::ENC_FOLLOWUP
                            } else {
                                vocab::ENC_SYMPTOM
                            };
                            self.clinic_visit(at, code, 0.2)
                        }
                        1 => self.ed_visit(at),
                        2 => {
                            readmit = None;
                            self.admission(at, false, false, &mut readmit)
                        }
                        3 => {
                            readmit = None;
                            self.admission(at, true, false, &mut readmit)
                        }
                        _ => {
                            self.death = Some(at);
                            at
                        }
                    };
                }
            }
        }
        // The patient is registered when they arrive for the first visit: the row and the
        // primary-care assignment are known from the first encounter's admission, the
        // first message any source holds about the patient.
        let registered = self
            .out
            .encounters
            .first()
            .map_or(first, |e| e.admit_time.timestamp());
        let first = registered;
        self.patient_rows(first);
        let primary_id = format!("{}/primary", self.pid);
        let meta = self.meta("care_team", &primary_id, 1, first, None);
        self.out.care_team.push(CareTeamMember {
            patient_id: self.pid.clone(),
            clinician_id: self.pcp.clone(),
            role: Some("primary".into()),
            valid_from: ts(first),
            valid_to: None,
            meta,
        });
    }

    fn patient_rows(&mut self, registered: i64) {
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

    fn new_encounter(&mut self) -> Enc {
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
    fn encounter_rows(
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

    fn condition_row(
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
            meta,
        });
    }

    /// A medication order, known when placed; `end` is the planned end of the course
    /// (known at ordering), `None` for a long-term drug.
    fn medication_row(&mut self, enc: &mut Enc, code: Code, start: i64, end: Option<i64>) {
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

    fn procedure_row(&mut self, enc: &mut Enc, code: Code, start: i64, end: i64) {
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

    /// One lab value of `analyte` at time `t`, for acute intensity `acute` (1 on
    /// admission, recovering towards discharge).
    fn lab_value(&mut self, analyte: Analyte, t: i64, acute: f64, effect: LabEffect) -> f64 {
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
    fn draw(
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

    /// A clinic visit during opening hours at or after `t`; records every condition whose
    /// onset has passed and was not yet on the problem list (with its long-term drug).
    /// Returns the end of the visit.
    fn clinic_visit(&mut self, t: i64, code: Code, lab_p: f64) -> i64 {
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
    fn ed_visit(&mut self, t: i64) -> i64 {
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

    fn choose_reason(&mut self, t: i64, elective: bool) -> Reason {
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
    fn admission(
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

    fn stay(&mut self, admit: i64, elective: bool, readmission: bool) -> StayOutcome {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patient_is_a_pure_function_of_seed_and_index() {
        let opts = SynthOptions::default();
        assert_eq!(generate(&opts, 7), generate(&opts, 7));
        assert_ne!(generate(&opts, 7), generate(&opts, 8));
        let other = SynthOptions {
            seed: opts.seed + 1,
            ..opts.clone()
        };
        assert_ne!(generate(&opts, 7), generate(&other, 7));
    }

    #[test]
    fn ids_sort_in_index_order() {
        assert!(patient_id(9) < patient_id(10));
        assert!(patient_id(999_999) < patient_id(1_000_000));
    }

    #[test]
    fn timestamps_are_whole_seconds_and_inside_the_knowledge_rules() {
        let opts = SynthOptions::default();
        for i in 0..200 {
            let t = generate(&opts, i);
            for e in &t.encounters {
                assert_eq!(e.admit_time.timestamp_subsec_micros(), 0);
                assert!(e.meta.known_at >= e.admit_time);
                if let Some(d) = e.discharge_time {
                    assert!(d > e.admit_time);
                    assert!(e.meta.known_at >= d, "discharge known before it happened");
                }
            }
            for o in &t.observations {
                assert!(o.meta.known_at > o.effective_time);
                if let Some(r) = o.meta.retracted_at {
                    assert!(r > o.meta.known_at);
                }
            }
            for c in &t.conditions {
                if let Some(a) = c.abatement_time {
                    assert!(c.meta.known_at >= a, "abatement known before it happened");
                }
            }
            for m in &t.care_team {
                if let Some(to) = m.valid_to {
                    assert!(m.meta.known_at >= to);
                }
            }
        }
    }

    #[test]
    fn every_retracted_observation_has_its_correction() {
        let opts = SynthOptions::default();
        let mut corrections = 0;
        for i in 0..300 {
            let t = generate(&opts, i);
            for o in t
                .observations
                .iter()
                .filter(|o| o.meta.retracted_at.is_some())
            {
                let fix = t
                    .observations
                    .iter()
                    .find(|c| {
                        c.observation_id == o.observation_id
                            && c.status.as_deref() == Some("corrected")
                    })
                    .expect("a corrected row");
                assert_eq!(Some(fix.meta.known_at), o.meta.retracted_at);
                assert_ne!(fix.value_num, o.value_num);
                corrections += 1;
            }
        }
        assert!(corrections > 0);
    }
}
