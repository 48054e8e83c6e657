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
use std::collections::HashSet;

use arrow::array::{
    Array, AsArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use chrono::{DateTime, Utc};
use rayon::prelude::*;

use super::columns::{str_at, ts_array, ts_at, utf8_array};
use super::events::Grouped;
use super::inputs::Inputs;
use super::intern::{renumber, Interner, NO_PATIENT};
use super::timeline::ChangePoint;
use crate::curated::{
    encounter_class, Coding, Condition, Encounter, Observation, Procedure, RowMeta, Table,
};
use crate::error::{Error, Result};
use crate::pit::Knowledge;
use crate::scores::{self, hospital, PatientRows, ScoreComponent, View};

/// What the error messages name.
const WHAT: &str = "score";

/// One patient's rows the scores read. Only the fields the scores read are decoded (not the
/// patient id either: the rows are already grouped by patient); each table is sorted in a
/// total order of those fields, so nothing depends on input order.
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
    fn s(&self, c: &str) -> Result<StringArray> {
        utf8_array(self.batch, c, WHAT)?.ok_or_else(|| self.missing(c))
    }
    fn s_opt(&self, c: &str) -> Result<Option<StringArray>> {
        utf8_array(self.batch, c, WHAT)
    }
    fn t(&self, c: &str) -> Result<TimestampMicrosecondArray> {
        ts_array(self.batch, c, WHAT)?.ok_or_else(|| self.missing(c))
    }
    fn t_opt(&self, c: &str) -> Result<Option<TimestampMicrosecondArray>> {
        ts_array(self.batch, c, WHAT)
    }
    fn f_opt(&self, c: &str) -> Result<Option<Float64Array>> {
        let Some(col) = self.batch.column_by_name(c) else {
            return Ok(None);
        };
        let arr = cast(col, &DataType::Float64).map_err(|e| {
            Error::invalid(
                format!("{WHAT} features: column {c}"),
                format!("table {}: {e}", self.table.name()),
            )
        })?;
        Ok(Some(arr.as_primitive::<Float64Type>().clone()))
    }
}

fn opt_str(a: &Option<StringArray>, i: usize) -> Option<&str> {
    a.as_ref().and_then(|a| str_at(a, i))
}

fn opt_ts(a: &Option<TimestampMicrosecondArray>, i: usize) -> Option<i64> {
    a.as_ref().and_then(|a| ts_at(a, i))
}

/// The provenance columns of every curated table, and the patient.
struct Common {
    patient: StringArray,
    source_id: Option<StringArray>,
    known: TimestampMicrosecondArray,
    retracted: Option<TimestampMicrosecondArray>,
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

    /// Whether row `i` has a patient and a `known_at` (rows without are skipped).
    fn usable(&self, i: usize) -> bool {
        !self.patient.is_null(i) && !self.known.is_null(i)
    }

    /// The provenance of row `i`; `None` when the patient or `known_at` is null.
    fn row(&self, i: usize) -> Option<RowMeta> {
        str_at(&self.patient, i)?;
        let k = ts_at(&self.known, i)?;
        Some(RowMeta {
            source_system: String::new(),
            source_id: opt_str(&self.source_id, i).unwrap_or_default().to_string(),
            known_at: time(k),
            retracted_at: opt_ts(&self.retracted, i).map(time),
        })
    }
}

fn coding(system: &Option<StringArray>, code: &StringArray, i: usize) -> Coding {
    Coding {
        system: opt_str(system, i).unwrap_or_default().to_string(),
        code: str_at(code, i).unwrap_or_default().to_string(),
        display: None,
    }
}

fn owned(a: &Option<StringArray>, i: usize) -> Option<String> {
    opt_str(a, i).map(str::to_string)
}

struct EncounterCols {
    common: Common,
    id: StringArray,
    class: StringArray,
    admit: TimestampMicrosecondArray,
    discharge: Option<TimestampMicrosecondArray>,
    admission_type: Option<StringArray>,
    service: Option<StringArray>,
}

impl EncounterCols {
    fn read(batch: &RecordBatch) -> Result<EncounterCols> {
        let c = Cols {
            batch,
            table: Table::Encounters,
        };
        Ok(EncounterCols {
            common: Common::read(&c)?,
            id: c.s("encounter_id")?,
            class: c.s("class")?,
            admit: c.t("admit_time")?,
            discharge: c.t_opt("discharge_time")?,
            admission_type: c.s_opt("admission_type")?,
            service: c.s_opt("service")?,
        })
    }
    fn usable(&self, i: usize) -> bool {
        self.common.usable(i) && !self.id.is_null(i) && !self.admit.is_null(i)
    }
    fn decode(&self, i: usize) -> Option<Encounter> {
        let meta = self.common.row(i)?;
        Some(Encounter {
            encounter_id: str_at(&self.id, i)?.to_string(),
            patient_id: String::new(),
            class: str_at(&self.class, i).unwrap_or_default().to_string(),
            admit_time: time(ts_at(&self.admit, i)?),
            discharge_time: opt_ts(&self.discharge, i).map(time),
            admission_type: owned(&self.admission_type, i),
            discharge_disposition: None,
            service: owned(&self.service, i),
            code: None,
            meta,
        })
    }
}

struct ConditionCols {
    common: Common,
    id: StringArray,
    system: Option<StringArray>,
    code: StringArray,
    onset: TimestampMicrosecondArray,
}

impl ConditionCols {
    fn read(batch: &RecordBatch) -> Result<ConditionCols> {
        let c = Cols {
            batch,
            table: Table::Conditions,
        };
        Ok(ConditionCols {
            common: Common::read(&c)?,
            id: c.s("condition_id")?,
            system: c.s_opt("code_system")?,
            code: c.s("code")?,
            onset: c.t("onset_time")?,
        })
    }
    fn usable(&self, i: usize) -> bool {
        self.common.usable(i) && !self.id.is_null(i) && !self.onset.is_null(i)
    }
    fn decode(&self, i: usize) -> Option<Condition> {
        let meta = self.common.row(i)?;
        Some(Condition {
            condition_id: str_at(&self.id, i)?.to_string(),
            patient_id: String::new(),
            encounter_id: None,
            code: coding(&self.system, &self.code, i),
            onset_time: time(ts_at(&self.onset, i)?),
            abatement_time: None,
            diagnosis_type: None,
            meta,
        })
    }
}

struct ObservationCols {
    common: Common,
    id: StringArray,
    system: Option<StringArray>,
    code: StringArray,
    effective: TimestampMicrosecondArray,
    value: Option<Float64Array>,
    unit: Option<StringArray>,
    status: Option<StringArray>,
}

impl ObservationCols {
    fn read(batch: &RecordBatch) -> Result<ObservationCols> {
        let c = Cols {
            batch,
            table: Table::Observations,
        };
        Ok(ObservationCols {
            common: Common::read(&c)?,
            id: c.s("observation_id")?,
            system: c.s_opt("code_system")?,
            code: c.s("code")?,
            effective: c.t("effective_time")?,
            value: c.f_opt("value_num")?,
            unit: c.s_opt("unit")?,
            status: c.s_opt("status")?,
        })
    }
    fn usable(&self, i: usize) -> bool {
        self.common.usable(i) && !self.id.is_null(i) && !self.effective.is_null(i)
    }
    fn decode(&self, i: usize) -> Option<Observation> {
        let meta = self.common.row(i)?;
        Some(Observation {
            observation_id: str_at(&self.id, i)?.to_string(),
            patient_id: String::new(),
            encounter_id: None,
            category: None,
            code: coding(&self.system, &self.code, i),
            value_num: self
                .value
                .as_ref()
                .and_then(|a| (!a.is_null(i)).then(|| a.value(i))),
            value_text: None,
            unit: owned(&self.unit, i),
            value_original: None,
            unit_original: None,
            effective_time: time(ts_at(&self.effective, i)?),
            status: owned(&self.status, i),
            meta,
        })
    }
}

struct ProcedureCols {
    common: Common,
    id: StringArray,
    performed: TimestampMicrosecondArray,
}

impl ProcedureCols {
    fn read(batch: &RecordBatch) -> Result<ProcedureCols> {
        let c = Cols {
            batch,
            table: Table::Procedures,
        };
        Ok(ProcedureCols {
            common: Common::read(&c)?,
            id: c.s("procedure_id")?,
            performed: c.t("performed_time")?,
        })
    }
    fn usable(&self, i: usize) -> bool {
        self.common.usable(i) && !self.id.is_null(i) && !self.performed.is_null(i)
    }
    fn decode(&self, i: usize) -> Option<Procedure> {
        let meta = self.common.row(i)?;
        Some(Procedure {
            procedure_id: str_at(&self.id, i)?.to_string(),
            patient_id: String::new(),
            encounter_id: None,
            code: Coding::default(),
            performed_time: time(ts_at(&self.performed, i)?),
            performed_end: None,
            meta,
        })
    }
}

/// The tables the scores read, their columns cast once (a table without batches has no
/// rows).
pub(crate) struct ScoreTables {
    encounters: Vec<EncounterCols>,
    conditions: Vec<ConditionCols>,
    observations: Vec<ObservationCols>,
    procedures: Vec<ProcedureCols>,
}

/// The interned patient of every row of the [`ScoreTables`], per table, per batch.
pub(crate) struct ScoreIds {
    tables: [Vec<Vec<u32>>; 4],
}

impl ScoreIds {
    /// Renumbers provisional ids to the interner's ranks.
    pub(crate) fn renumber(&mut self, rank: &[u32]) {
        self.tables
            .as_mut_slice()
            .par_iter_mut()
            .flat_map(|t| t.par_iter_mut())
            .for_each(|ids| renumber(ids, rank));
    }
}

/// Row references (batch, row) of one table, grouped by patient.
type Refs = Grouped<(u32, u32)>;

/// The rows of the score tables, grouped by patient; [`ByPatient::rows`] decodes one
/// patient's.
pub(crate) struct ByPatient<'a> {
    tables: &'a ScoreTables,
    encounters: Refs,
    conditions: Refs,
    observations: Refs,
    procedures: Refs,
}

/// `(patient, (batch, row))` of the rows of one table that `keep` accepts.
fn refs_of(ids: &[Vec<u32>], keep: impl Fn(usize, usize, u32) -> bool) -> Vec<(u32, (u32, u32))> {
    let mut out = Vec::new();
    for (b, ids) in ids.iter().enumerate() {
        for (i, p) in ids.iter().enumerate() {
            if *p != NO_PATIENT && keep(b, i, *p) {
                out.push((*p, (b as u32, i as u32)));
            }
        }
    }
    out
}

impl ScoreTables {
    /// Reads the score tables of `inputs`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming a missing column or a column of the wrong type.
    pub(crate) fn read(inputs: &Inputs) -> Result<ScoreTables> {
        let batches = |t: Table| inputs.tables.get(&t).into_iter().flatten();
        Ok(ScoreTables {
            encounters: batches(Table::Encounters)
                .map(EncounterCols::read)
                .collect::<Result<_>>()?,
            conditions: batches(Table::Conditions)
                .map(ConditionCols::read)
                .collect::<Result<_>>()?,
            observations: batches(Table::Observations)
                .map(ObservationCols::read)
                .collect::<Result<_>>()?,
            procedures: batches(Table::Procedures)
                .map(ProcedureCols::read)
                .collect::<Result<_>>()?,
        })
    }

    /// Interns the patient of every row.
    pub(crate) fn intern<'a>(&'a self, interner: &mut Interner<'a>) -> ScoreIds {
        let mut ids = |cs: Vec<&'a Common>| -> Vec<Vec<u32>> {
            cs.into_iter().map(|c| interner.ids(&c.patient)).collect()
        };
        ScoreIds {
            tables: [
                ids(self.encounters.iter().map(|c| &c.common).collect()),
                ids(self.conditions.iter().map(|c| &c.common).collect()),
                ids(self.observations.iter().map(|c| &c.common).collect()),
                ids(self.procedures.iter().map(|c| &c.common).collect()),
            ],
        }
    }

    /// Groups the rows by patient (`patients`: the number of interned patients). Of the
    /// observations, only the versions of ids that have a hemoglobin or sodium version are
    /// kept (what [`ClinicalRows::normalize`] keeps).
    pub(crate) fn group(&self, ids: ScoreIds, patients: usize) -> ByPatient<'_> {
        let [enc, cond, obs, procs] = &ids.tables;
        let mut labs: HashSet<(u32, &str)> = HashSet::new();
        for (b, ids) in obs.iter().enumerate() {
            let c = &self.observations[b];
            for (i, p) in ids.iter().enumerate() {
                if *p != NO_PATIENT && c.usable(i) && str_at(&c.code, i).is_some_and(is_score_lab) {
                    labs.insert((*p, c.id.value(i)));
                }
            }
        }
        let group = |pairs: Vec<(u32, (u32, u32))>| Grouped::new(patients, &pairs);
        ByPatient {
            tables: self,
            encounters: group(refs_of(enc, |b, i, _| self.encounters[b].usable(i))),
            conditions: group(refs_of(cond, |b, i, _| self.conditions[b].usable(i))),
            observations: group(refs_of(obs, |b, i, p| {
                let c = &self.observations[b];
                c.usable(i) && labs.contains(&(p, c.id.value(i)))
            })),
            procedures: group(refs_of(procs, |b, i, _| self.procedures[b].usable(i))),
        }
    }
}

impl ByPatient<'_> {
    /// Patient `p`'s rows, decoded and normalized; `None` when it has none.
    pub(crate) fn rows(&self, p: u32) -> Option<ClinicalRows> {
        let t = self.tables;
        let mut rows = ClinicalRows {
            encounters: self
                .encounters
                .of(p)
                .iter()
                .filter_map(|(b, i)| t.encounters[*b as usize].decode(*i as usize))
                .collect(),
            conditions: self
                .conditions
                .of(p)
                .iter()
                .filter_map(|(b, i)| t.conditions[*b as usize].decode(*i as usize))
                .collect(),
            observations: self
                .observations
                .of(p)
                .iter()
                .filter_map(|(b, i)| t.observations[*b as usize].decode(*i as usize))
                .collect(),
            procedures: self
                .procedures
                .of(p)
                .iter()
                .filter_map(|(b, i)| t.procedures[*b as usize].decode(*i as usize))
                .collect(),
        };
        rows.normalize();
        (!rows.is_empty()).then_some(rows)
    }
}

fn meta_cmp(a: &RowMeta, b: &RowMeta) -> Ordering {
    (a.known_at, &a.source_id, a.retracted_at).cmp(&(b.known_at, &b.source_id, b.retracted_at))
}

fn coding_cmp(a: &Coding, b: &Coding) -> Ordering {
    (&a.system, &a.code).cmp(&(&b.system, &b.code))
}

/// Whether an encounter class is inpatient (as curated, or a source word for it).
fn is_inpatient(class: &str) -> bool {
    class == encounter_class::INPATIENT
        || encounter_class::normalize(class) == Some(encounter_class::INPATIENT)
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
    ///
    /// The encounters are sorted by id ([`ClinicalRows::normalize`]), so the versions of one
    /// encounter are adjacent: one pass, no map.
    fn index_stay(&self, t: DateTime<Utc>, view: View) -> Option<(&str, DateTime<Utc>)> {
        let mut best: Option<(DateTime<Utc>, DateTime<Utc>, &Encounter)> = None;
        for versions in self
            .encounters
            .chunk_by(|a, b| a.encounter_id == b.encounter_id)
        {
            let mut latest: Option<&Encounter> = None;
            for e in versions {
                let seen = view.sees(e.admit_time, &e.meta);
                let newer = latest.is_none_or(|l| {
                    (e.meta.known_at, &e.meta.source_id) > (l.meta.known_at, &l.meta.source_id)
                });
                if seen && newer {
                    latest = Some(e);
                }
            }
            let Some(e) = latest.filter(|e| is_inpatient(&e.class)) else {
                continue;
            };
            let Some(d) = e.discharge_time.filter(|d| *d <= t && *d >= e.admit_time) else {
                continue;
            };
            let better = best.is_none_or(|(bd, ba, be)| {
                (d, e.admit_time, &e.encounter_id) > (bd, ba, &be.encounter_id)
            });
            if better {
                best = Some((d, e.admit_time, e));
            }
        }
        best.map(|(d, _, e)| (e.encounter_id.as_str(), d))
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

    /// The earliest instant at which some encounter row could be the index stay (see
    /// [`ClinicalRows::index_stay`]): an inpatient row seen at `t` (as known: admitted and
    /// known by `t`; as occurred: never retracted) and discharged at or before `t`, not before
    /// its admission. Before it there is no index stay, so no state; `None`: never one.
    fn first_possible_stay(&self, knowledge: Knowledge) -> Option<i64> {
        self.encounters
            .iter()
            .filter(|e| is_inpatient(&e.class))
            .filter_map(|e| {
                let d = e.discharge_time?;
                if d < e.admit_time {
                    return None;
                }
                match knowledge {
                    Knowledge::AsKnown => Some(d.max(e.admit_time).max(e.meta.known_at)),
                    Knowledge::AsOccurred => e.meta.retracted_at.is_none().then_some(d),
                }
            })
            .min()
            .map(|t| t.timestamp_micros())
    }

    /// The states at every instant where one can change, the unchanged ones dropped.
    pub(crate) fn series(&self, knowledge: Knowledge) -> Vec<(i64, ScoreState)> {
        let mut out: Vec<(i64, ScoreState)> = Vec::new();
        // No state before the first instant a stay can exist: a series starts at a state.
        let Some(from) = self.first_possible_stay(knowledge) else {
            return out;
        };
        for at in self.instants(knowledge) {
            if at < from {
                continue;
            }
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
