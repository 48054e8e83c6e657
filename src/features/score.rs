//! `kind = "score"`: clinical score components (LACE, HOSPITAL, Charlson) as features.
//!
//! The value at `t` is the component of the patient's most recent inpatient stay discharged
//! at or before `t`, computed by [`scores::stay_scores`] over the patient's rows as known at
//! `t` (`View::AsKnownAt(t)`; as occurred: `View::Final`), with `value_time` = the stay's
//! discharge time (so a TTL bounds how old the stay may be). No such stay: no data.
//!
//! The answer can only change where one of the patient's encounter, condition, observation
//! or procedure rows enters or leaves visibility, or where a known stay's discharge time is
//! reached. The sweep evaluates the scores at each such instant (once per patient for every
//! score feature of the set) and keeps, per component, the instants where the value changes.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use chrono::{DateTime, Utc};

use super::compute::{str_column, ts_column, Inputs, Knowledge};
use super::timeline::ChangePoint;
use crate::curated::{
    encounter_class, Coding, Condition, Encounter, Observation, Procedure, RowMeta, Table,
};
use crate::error::{Error, Result};
use crate::scores::{self, hospital, PatientRows, ScoreComponent, View};

/// What the error messages name.
const WHAT: &str = "score";

/// One patient's rows the scores read. Only the fields the scores read are decoded; each
/// table is sorted in a total order of those fields, so nothing depends on input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ClinicalRows {
    pub(crate) encounters: Vec<Encounter>,
    pub(crate) conditions: Vec<Condition>,
    pub(crate) observations: Vec<Observation>,
    pub(crate) procedures: Vec<Procedure>,
}

/// The state of every component at one instant: the stay's discharge time (µs) and the
/// component values in [`ScoreComponent::ALL`] order; `None` when there is no stay.
pub(crate) type ScoreState = Option<(i64, [i64; ScoreComponent::ALL.len()])>;

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Column readers over one batch; a missing required column is an error naming it.
struct Cols<'a> {
    batch: &'a RecordBatch,
    table: Table,
}

impl Cols<'_> {
    fn missing(&self, c: &str) -> Error {
        Error::invalid(
            format!("{WHAT} features"),
            format!("table {} has no column {c}", self.table.name()),
        )
    }
    fn s(&self, c: &str) -> Result<Vec<Option<String>>> {
        str_column(self.batch, c, WHAT)?.ok_or_else(|| self.missing(c))
    }
    fn s_opt(&self, c: &str) -> Result<Vec<Option<String>>> {
        Ok(str_column(self.batch, c, WHAT)?.unwrap_or_else(|| vec![None; self.batch.num_rows()]))
    }
    fn t(&self, c: &str) -> Result<Vec<Option<i64>>> {
        ts_column(self.batch, c, WHAT)?.ok_or_else(|| self.missing(c))
    }
    fn t_opt(&self, c: &str) -> Result<Vec<Option<i64>>> {
        Ok(ts_column(self.batch, c, WHAT)?.unwrap_or_else(|| vec![None; self.batch.num_rows()]))
    }
    fn f_opt(&self, c: &str) -> Result<Vec<Option<f64>>> {
        let Some(col) = self.batch.column_by_name(c) else {
            return Ok(vec![None; self.batch.num_rows()]);
        };
        let arr = cast(col, &DataType::Float64).map_err(|e| {
            Error::invalid(
                format!("{WHAT} features: column {c}"),
                format!("table {}: {e}", self.table.name()),
            )
        })?;
        let a = arr.as_primitive::<Float64Type>();
        Ok((0..a.len())
            .map(|i| (!a.is_null(i)).then(|| a.value(i)))
            .collect())
    }
}

/// The provenance columns of every curated table, and the patient.
struct Common {
    patient: Vec<Option<String>>,
    source_id: Vec<Option<String>>,
    known: Vec<Option<i64>>,
    retracted: Vec<Option<i64>>,
}

impl Common {
    fn read(c: &Cols<'_>) -> Result<Common> {
        Ok(Common {
            patient: c.s("patient_id")?,
            source_id: c.s_opt("source_id")?,
            known: c.t("known_at")?,
            retracted: c.t_opt("retracted_at")?,
        })
    }

    /// The patient and provenance of row `i`; `None` when the patient or `known_at` is null.
    fn row(&self, i: usize) -> Option<(&str, RowMeta)> {
        let p = self.patient[i].as_deref()?;
        let k = self.known[i]?;
        Some((
            p,
            RowMeta {
                source_system: String::new(),
                source_id: self.source_id[i].clone().unwrap_or_default(),
                known_at: time(k),
                retracted_at: self.retracted[i].map(time),
            },
        ))
    }
}

fn coding(system: &[Option<String>], code: &[Option<String>], i: usize) -> Coding {
    Coding {
        system: system[i].clone().unwrap_or_default(),
        code: code[i].clone().unwrap_or_default(),
        display: None,
    }
}

/// Decodes the patients' rows of the score tables from `inputs` (a table without batches
/// has no rows). Observations are kept only when some version of the same observation id
/// is a hemoglobin or sodium result (the only results the scores read): dropping every
/// version of the others changes no score.
///
/// # Errors
/// [`Error::InvalidArgument`] naming a missing column or a column of the wrong type.
pub(crate) fn decode(inputs: &Inputs) -> Result<BTreeMap<String, ClinicalRows>> {
    let mut out: BTreeMap<String, ClinicalRows> = BTreeMap::new();
    let batches = |t: Table| inputs.tables.get(&t).into_iter().flatten();
    for batch in batches(Table::Encounters) {
        let c = Cols {
            batch,
            table: Table::Encounters,
        };
        let common = Common::read(&c)?;
        let (id, class, admit, discharge) = (
            c.s("encounter_id")?,
            c.s("class")?,
            c.t("admit_time")?,
            c.t_opt("discharge_time")?,
        );
        let (admission_type, service) = (c.s_opt("admission_type")?, c.s_opt("service")?);
        for i in 0..batch.num_rows() {
            let (Some((p, meta)), Some(id), Some(admit)) = (common.row(i), &id[i], admit[i]) else {
                continue;
            };
            out.entry(p.to_string())
                .or_default()
                .encounters
                .push(Encounter {
                    encounter_id: id.clone(),
                    patient_id: p.to_string(),
                    class: class[i].clone().unwrap_or_default(),
                    admit_time: time(admit),
                    discharge_time: discharge[i].map(time),
                    admission_type: admission_type[i].clone(),
                    discharge_disposition: None,
                    service: service[i].clone(),
                    code: None,
                    meta,
                });
        }
    }
    for batch in batches(Table::Conditions) {
        let c = Cols {
            batch,
            table: Table::Conditions,
        };
        let common = Common::read(&c)?;
        let (id, system, code, onset) = (
            c.s("condition_id")?,
            c.s_opt("code_system")?,
            c.s("code")?,
            c.t("onset_time")?,
        );
        for i in 0..batch.num_rows() {
            let (Some((p, meta)), Some(id), Some(onset)) = (common.row(i), &id[i], onset[i]) else {
                continue;
            };
            out.entry(p.to_string())
                .or_default()
                .conditions
                .push(Condition {
                    condition_id: id.clone(),
                    patient_id: p.to_string(),
                    encounter_id: None,
                    code: coding(&system, &code, i),
                    onset_time: time(onset),
                    abatement_time: None,
                    meta,
                });
        }
    }
    for batch in batches(Table::Observations) {
        let c = Cols {
            batch,
            table: Table::Observations,
        };
        let common = Common::read(&c)?;
        let (id, system, code, effective) = (
            c.s("observation_id")?,
            c.s_opt("code_system")?,
            c.s("code")?,
            c.t("effective_time")?,
        );
        let (value, unit, status) = (c.f_opt("value_num")?, c.s_opt("unit")?, c.s_opt("status")?);
        for i in 0..batch.num_rows() {
            let (Some((p, meta)), Some(id), Some(effective)) =
                (common.row(i), &id[i], effective[i])
            else {
                continue;
            };
            out.entry(p.to_string())
                .or_default()
                .observations
                .push(Observation {
                    observation_id: id.clone(),
                    patient_id: p.to_string(),
                    encounter_id: None,
                    category: None,
                    code: coding(&system, &code, i),
                    value_num: value[i],
                    value_text: None,
                    unit: unit[i].clone(),
                    effective_time: time(effective),
                    status: status[i].clone(),
                    meta,
                });
        }
    }
    for batch in batches(Table::Procedures) {
        let c = Cols {
            batch,
            table: Table::Procedures,
        };
        let common = Common::read(&c)?;
        let (id, performed) = (c.s("procedure_id")?, c.t("performed_time")?);
        for i in 0..batch.num_rows() {
            let (Some((p, meta)), Some(id), Some(performed)) =
                (common.row(i), &id[i], performed[i])
            else {
                continue;
            };
            out.entry(p.to_string())
                .or_default()
                .procedures
                .push(Procedure {
                    procedure_id: id.clone(),
                    patient_id: p.to_string(),
                    encounter_id: None,
                    code: Coding::default(),
                    performed_time: time(performed),
                    performed_end: None,
                    meta,
                });
        }
    }
    for rows in out.values_mut() {
        rows.normalize();
    }
    out.retain(|_, r| !r.is_empty());
    Ok(out)
}

fn meta_cmp(a: &RowMeta, b: &RowMeta) -> Ordering {
    (a.known_at, &a.source_id, a.retracted_at).cmp(&(b.known_at, &b.source_id, b.retracted_at))
}

fn coding_cmp(a: &Coding, b: &Coding) -> Ordering {
    (&a.system, &a.code).cmp(&(&b.system, &b.code))
}

fn is_score_lab(code: &str) -> bool {
    code == hospital::LOINC_HEMOGLOBIN || hospital::LOINC_SODIUM.contains(&code)
}

impl ClinicalRows {
    fn is_empty(&self) -> bool {
        self.encounters.is_empty()
            && self.conditions.is_empty()
            && self.observations.is_empty()
            && self.procedures.is_empty()
    }

    /// Drops the observations no score reads and sorts every table in a total order of the
    /// decoded fields (id, `known_at`, source id, then the rest).
    fn normalize(&mut self) {
        let keep: std::collections::BTreeSet<String> = self
            .observations
            .iter()
            .filter(|o| is_score_lab(&o.code.code))
            .map(|o| o.observation_id.clone())
            .collect();
        self.observations
            .retain(|o| keep.contains(&o.observation_id));
        self.encounters.sort_by(|a, b| {
            a.encounter_id
                .cmp(&b.encounter_id)
                .then_with(|| meta_cmp(&a.meta, &b.meta))
                .then_with(|| {
                    (
                        a.admit_time,
                        a.discharge_time,
                        &a.class,
                        &a.admission_type,
                        &a.service,
                    )
                        .cmp(&(
                            b.admit_time,
                            b.discharge_time,
                            &b.class,
                            &b.admission_type,
                            &b.service,
                        ))
                })
        });
        self.conditions.sort_by(|a, b| {
            a.condition_id
                .cmp(&b.condition_id)
                .then_with(|| meta_cmp(&a.meta, &b.meta))
                .then_with(|| a.onset_time.cmp(&b.onset_time))
                .then_with(|| coding_cmp(&a.code, &b.code))
        });
        self.observations.sort_by(|a, b| {
            a.observation_id
                .cmp(&b.observation_id)
                .then_with(|| meta_cmp(&a.meta, &b.meta))
                .then_with(|| a.effective_time.cmp(&b.effective_time))
                .then_with(|| coding_cmp(&a.code, &b.code))
                .then_with(|| match (a.value_num, b.value_num) {
                    (Some(x), Some(y)) => x.total_cmp(&y),
                    (x, y) => x.is_some().cmp(&y.is_some()),
                })
                .then_with(|| (&a.unit, &a.status).cmp(&(&b.unit, &b.status)))
        });
        self.procedures.sort_by(|a, b| {
            a.procedure_id
                .cmp(&b.procedure_id)
                .then_with(|| meta_cmp(&a.meta, &b.meta))
                .then_with(|| a.performed_time.cmp(&b.performed_time))
        });
    }

    fn patient_rows(&self) -> PatientRows<'_> {
        PatientRows {
            encounters: &self.encounters,
            conditions: &self.conditions,
            observations: &self.observations,
            procedures: &self.procedures,
        }
    }

    /// Feeds every decoded field to `h` (what incremental materialization compares).
    pub(crate) fn digest_into(&self, h: &mut blake3::Hasher) {
        fn s(h: &mut blake3::Hasher, v: &str) {
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v.as_bytes());
        }
        fn os(h: &mut blake3::Hasher, v: Option<&str>) {
            match v {
                None => h.update(&[0]),
                Some(v) => {
                    h.update(&[1]);
                    s(h, v);
                    h
                }
            };
        }
        fn t(h: &mut blake3::Hasher, v: Option<DateTime<Utc>>) {
            match v {
                None => h.update(&[0]),
                Some(v) => h.update(&[1]).update(&v.timestamp_micros().to_le_bytes()),
            };
        }
        fn meta(h: &mut blake3::Hasher, m: &RowMeta) {
            s(h, &m.source_id);
            t(h, Some(m.known_at));
            t(h, m.retracted_at);
        }
        h.update(b"score-rows");
        h.update(&(self.encounters.len() as u64).to_le_bytes());
        for e in &self.encounters {
            s(h, &e.encounter_id);
            s(h, &e.class);
            t(h, Some(e.admit_time));
            t(h, e.discharge_time);
            os(h, e.admission_type.as_deref());
            os(h, e.service.as_deref());
            meta(h, &e.meta);
        }
        h.update(&(self.conditions.len() as u64).to_le_bytes());
        for c in &self.conditions {
            s(h, &c.condition_id);
            s(h, &c.code.system);
            s(h, &c.code.code);
            t(h, Some(c.onset_time));
            meta(h, &c.meta);
        }
        h.update(&(self.observations.len() as u64).to_le_bytes());
        for o in &self.observations {
            s(h, &o.observation_id);
            s(h, &o.code.system);
            s(h, &o.code.code);
            match o.value_num {
                None => h.update(&[0]),
                Some(v) => h.update(&[1]).update(&v.to_bits().to_le_bytes()),
            };
            os(h, o.unit.as_deref());
            os(h, o.status.as_deref());
            t(h, Some(o.effective_time));
            meta(h, &o.meta);
        }
        h.update(&(self.procedures.len() as u64).to_le_bytes());
        for p in &self.procedures {
            s(h, &p.procedure_id);
            t(h, Some(p.performed_time));
            meta(h, &p.meta);
        }
    }

    /// Every instant where the answer can change, sorted, without duplicates.
    fn instants(&self, knowledge: Knowledge) -> Vec<i64> {
        let mut out = Vec::new();
        match knowledge {
            Knowledge::AsKnown => {
                let mut row = |event: DateTime<Utc>, m: &RowMeta| {
                    out.push(event.max(m.known_at).timestamp_micros());
                    out.extend(m.retracted_at.map(|x| x.timestamp_micros()));
                };
                for e in &self.encounters {
                    row(e.admit_time, &e.meta);
                }
                for c in &self.conditions {
                    row(c.onset_time, &c.meta);
                }
                for o in &self.observations {
                    row(o.effective_time, &o.meta);
                }
                for p in &self.procedures {
                    row(p.performed_time, &p.meta);
                }
                // A stay known before its discharge time becomes the latest stay at it.
                out.extend(
                    self.encounters
                        .iter()
                        .filter_map(|e| e.discharge_time.map(|d| d.timestamp_micros())),
                );
            }
            // The final record does not depend on t; only which stays are discharged does.
            Knowledge::AsOccurred => out.extend(
                self.encounters
                    .iter()
                    .filter(|e| e.meta.retracted_at.is_none())
                    .filter_map(|e| e.discharge_time.map(|d| d.timestamp_micros())),
            ),
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The index stay at `t`: of the latest version of each encounter seen in `view`
    /// (latest `known_at`, then the larger source id, as the scores choose), the inpatient
    /// one with the latest discharge at or before `t` (ties: the later admission, then the
    /// larger encounter id). Discharges before their admission (bad data) are not stays.
    fn index_stay(&self, t: DateTime<Utc>, view: View) -> Option<(&str, DateTime<Utc>)> {
        let mut latest: BTreeMap<&str, &Encounter> = BTreeMap::new();
        for e in &self.encounters {
            let seen = match view {
                View::AsKnownAt(t) => {
                    e.admit_time <= t
                        && e.meta.known_at <= t
                        && e.meta.retracted_at.is_none_or(|x| x > t)
                }
                View::Final => e.meta.retracted_at.is_none(),
            };
            if !seen {
                continue;
            }
            let newer = latest.get(e.encounter_id.as_str()).is_none_or(|l| {
                (e.meta.known_at, &e.meta.source_id) > (l.meta.known_at, &l.meta.source_id)
            });
            if newer {
                latest.insert(&e.encounter_id, e);
            }
        }
        latest
            .into_values()
            .filter(|e| {
                e.class == encounter_class::INPATIENT
                    || encounter_class::normalize(&e.class) == Some(encounter_class::INPATIENT)
            })
            .filter_map(|e| {
                let d = e.discharge_time?;
                (d <= t && d >= e.admit_time).then_some((d, e.admit_time, e))
            })
            .max_by(|a, b| (a.0, a.1, &a.2.encounter_id).cmp(&(b.0, b.1, &b.2.encounter_id)))
            .map(|(d, _, e)| (e.encounter_id.as_str(), d))
    }

    /// Every component's state at `t`.
    fn state_at(&self, t: DateTime<Utc>, knowledge: Knowledge) -> ScoreState {
        let view = match knowledge {
            Knowledge::AsKnown => View::AsKnownAt(t),
            Knowledge::AsOccurred => View::Final,
        };
        let (id, discharge) = self.index_stay(t, view)?;
        let s = scores::stay_scores(self.patient_rows(), id, view).ok()?;
        Some((
            discharge.timestamp_micros(),
            ScoreComponent::ALL.map(|c| s.value(c)),
        ))
    }

    /// The states at every instant where one can change, the unchanged ones dropped.
    pub(crate) fn series(&self, knowledge: Knowledge) -> Vec<(i64, ScoreState)> {
        let mut out: Vec<(i64, ScoreState)> = Vec::new();
        for at in self.instants(knowledge) {
            let st = self.state_at(time(at), knowledge);
            let unchanged = match out.last() {
                Some((_, prev)) => *prev == st,
                None => st.is_none(),
            };
            if !unchanged {
                out.push((at, st));
            }
        }
        out
    }
}

/// The change points of one component, from the states of [`ClinicalRows::series`].
pub(crate) fn change_points(
    component: ScoreComponent,
    series: &[(i64, ScoreState)],
) -> Vec<ChangePoint> {
    let Some(ci) = ScoreComponent::ALL.iter().position(|c| *c == component) else {
        return Vec::new();
    };
    let mut out: Vec<ChangePoint> = Vec::new();
    for (at, st) in series {
        let cp = ChangePoint {
            effective_at: *at,
            value_num: st.map(|(_, v)| v[ci] as f64),
            value_text: None,
            value_time: st.map(|(d, _)| d),
            count: u64::from(st.is_some()),
        };
        let unchanged = match out.last() {
            Some(prev) => prev.same_state(&cp),
            None => cp.count == 0,
        };
        if !unchanged {
            out.push(cp);
        }
    }
    out
}
