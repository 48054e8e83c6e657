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

mod labs;
mod rows;
#[cfg(test)]
mod tests;
mod visits;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Exp1, StandardNormal};

use super::vocab::{Code, Family};
use super::{vocab, SynthOptions};
use crate::curated::{CareTeamMember, CuratedTables, RowMeta};

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
}
