//! Person-keyed materialization (`ward materialize --entity person`): a timeline keyed by
//! the person as known at each time, from the master patient index ([`crate::mpi`]).
//!
//! The rule: at `t`, person `P`'s state of a feature is the state computed over the rows
//! visible at `t` of every source record in `P`'s cluster as known at `t` (`P` is the
//! smallest record id of that cluster, [`Persons::person_at`]). A link learned at `T2`
//! changes nothing before `T2`; from `T2` on, the person's state counts the linked records'
//! rows, earlier ones included (they are known by then, and now known to be this person's).
//! An unlink known at `T3` splits the states again from `T3` on.
//!
//! How: the index's epochs ([`crate::mpi::Index::epochs`]: each cluster of two or more
//! records with the interval it holds) and, for each linked record, the intervals it is a
//! person of its own, are **groups**. Every curated row of a record is copied once per group
//! of that record, keyed by the group; the usual computation runs over those keys; then each
//! group's change points are cut to its interval (the state at its start, then its own change
//! points before its end) and laid end to end under the group's person id, an interval in
//! which that id names no one ending with an empty state. Records that no link names are
//! computed under their own id, unchanged: a person of one record has the change points the
//! patient-keyed timeline gives it. The key column is `person_id`
//! ([`timeline::person_timeline_schema`]), so a person-keyed timeline is never the same
//! version as a patient-keyed one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};

use super::columns;
use super::compute::{compute, MaterializeOptions, Timeline};
use super::definition::FeatureSet;
use super::inputs::Inputs;
use super::timeline::{self, ChangePoint, Rows};
use crate::error::Result;
use crate::mpi::Persons;

/// What a timeline's rows are keyed by ([`MaterializeOptions::entity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// The source patient id of the curated rows (the default).
    #[default]
    Patient,
    /// The person of the master patient index as known at each time (this module).
    Person,
}

impl Entity {
    /// `patient` or `person`.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Patient => "patient",
            Entity::Person => "person",
        }
    }

    /// Reads `patient` or `person` (`what` names where the text came from in the error).
    ///
    /// # Errors
    /// [`crate::error::Error::InvalidArgument`] for anything else.
    pub fn parse(text: &str, what: &str) -> Result<Entity> {
        match text {
            "patient" => Ok(Entity::Patient),
            "person" => Ok(Entity::Person),
            other => Err(crate::error::Error::invalid(
                what,
                format!("{other:?}: the entity is \"patient\" or \"person\""),
            )),
        }
    }

    /// True for the default, [`Entity::Patient`].
    pub fn is_patient(&self) -> bool {
        *self == Entity::Patient
    }
}

/// A group: the records of one person over one interval of knowledge time.
#[derive(Debug)]
struct Group {
    person: Arc<str>,
    /// Start (microseconds); `None`: since always.
    from: Option<i64>,
    /// End (microseconds); `None`: for good.
    until: Option<i64>,
}

/// The key a group's rows are computed under (no curated patient id holds `\u{1}`).
fn group_key(person: &str, from: Option<i64>) -> String {
    match from {
        None => format!("{person}\u{1}-"),
        Some(f) => format!("{person}\u{1}{f}"),
    }
}

/// The groups of `persons`, and the keys of every record some link names.
fn groups(persons: &Persons) -> (HashMap<String, Group>, HashMap<String, Vec<String>>) {
    let mut groups = HashMap::new();
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    for e in persons.epochs() {
        let key = group_key(&e.person_id, Some(e.from));
        for m in &e.members {
            keys.entry(m.clone()).or_default().push(key.clone());
        }
        groups.insert(
            key,
            Group {
                person: Arc::from(e.person_id.as_str()),
                from: Some(e.from),
                until: e.until,
            },
        );
    }
    // The intervals in which a linked record is a person of its own.
    let records: HashSet<&str> = persons
        .epochs()
        .iter()
        .flat_map(|e| e.members.iter().map(String::as_str))
        .collect();
    for r in records {
        // `Some(start)`: an interval of its own is open since `start` (`None`: always).
        let mut open: Option<Option<i64>> = Some(None);
        let mut alone = |from: Option<i64>, until: Option<i64>| {
            let key = group_key(r, from);
            keys.entry(r.to_string()).or_default().push(key.clone());
            groups.insert(
                key,
                Group {
                    person: Arc::from(r),
                    from,
                    until,
                },
            );
        };
        for e in persons.epochs_of(r) {
            if let Some(start) = open {
                if start.is_none_or(|s| s < e.from) {
                    alone(start, Some(e.from));
                }
            }
            open = e.until.map(Some);
        }
        if let Some(start) = open {
            alone(start, None);
        }
    }
    (groups, keys)
}

/// The rows of `inputs` re-keyed: a row of a record some link names once per group of that
/// record, its `patient_id` the group's key; other rows as they are.
fn rekey(inputs: &Inputs, keys: &HashMap<String, Vec<String>>) -> Result<Inputs> {
    let mut out = Inputs::default();
    for (table, batches) in &inputs.tables {
        let mut rekeyed = Vec::with_capacity(batches.len());
        for b in batches {
            let Some(ids) = columns::utf8_array(b, "patient_id", table.name())? else {
                rekeyed.push(b.clone());
                continue;
            };
            if !ids.iter().flatten().any(|p| keys.contains_key(p)) {
                rekeyed.push(b.clone());
                continue;
            }
            let mut take: Vec<u32> = Vec::with_capacity(ids.len());
            let mut new_ids = StringBuilder::new();
            for (i, p) in ids.iter().enumerate() {
                let row = u32::try_from(i).map_err(|_| {
                    crate::error::Error::invalid(table.name(), "a batch of more than 2^32 rows")
                })?;
                match p.and_then(|p| keys.get(p).map(|k| (p, k))) {
                    Some((_, ks)) => {
                        for k in ks {
                            take.push(row);
                            new_ids.append_value(k);
                        }
                    }
                    None => {
                        take.push(row);
                        new_ids.append_option(p);
                    }
                }
            }
            let take = UInt32Array::from(take);
            let schema = b.schema();
            let mut fields = Vec::with_capacity(schema.fields().len());
            let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            for (f, col) in schema.fields().iter().zip(b.columns()) {
                if f.name() == "patient_id" {
                    fields.push(Field::new("patient_id", DataType::Utf8, f.is_nullable()));
                    cols.push(Arc::new(new_ids.finish()));
                } else {
                    fields.push(f.as_ref().clone());
                    cols.push(arrow::compute::take(col, &take, None)?);
                }
            }
            let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
            rekeyed.push(RecordBatch::try_new(schema, cols)?);
        }
        out.tables.insert(*table, rekeyed);
    }
    Ok(out)
}

/// An empty state (no data) from `at` on.
fn empty(at: i64) -> ChangePoint {
    ChangePoint {
        effective_at: at,
        value_num: None,
        value_text: None,
        value_time: None,
        count: 0,
    }
}

/// Appends `cp` to a series: a change point at the same instant as the last one replaces
/// it, a state equal to the last one (any two empty states are equal) or an empty state
/// first is left out.
fn push(series: &mut Vec<ChangePoint>, cp: ChangePoint) {
    if series
        .last()
        .is_some_and(|l| l.effective_at == cp.effective_at)
    {
        series.pop();
    }
    let same = match series.last() {
        Some(l) => (l.count == 0 && cp.count == 0) || l.same_state(&cp),
        None => cp.count == 0,
    };
    if !same {
        series.push(cp);
    }
}

/// One person's series of a feature from its groups' series (in time order).
fn merge(parts: &[(&Group, &[ChangePoint])]) -> Vec<ChangePoint> {
    let mut out = Vec::new();
    for (g, cps) in parts {
        let before_end = |cp: &&ChangePoint| g.until.is_none_or(|u| cp.effective_at < u);
        match g.from {
            None => {
                for cp in cps.iter().filter(before_end) {
                    push(&mut out, cp.clone());
                }
            }
            Some(s) => {
                let start = cps
                    .iter()
                    .rev()
                    .find(|cp| cp.effective_at <= s)
                    .map_or_else(
                        || empty(s),
                        |cp| ChangePoint {
                            effective_at: s,
                            ..cp.clone()
                        },
                    );
                push(&mut out, start);
                for cp in cps
                    .iter()
                    .filter(|cp| cp.effective_at > s)
                    .filter(before_end)
                {
                    push(&mut out, cp.clone());
                }
            }
        }
        if let Some(u) = g.until {
            push(&mut out, empty(u));
        }
    }
    out
}

/// Computes `set`'s timeline keyed by person from the curated rows `inputs` and the persons
/// of an `mpi_links` version (module docs). Rows are in `(person id, feature in set order,
/// effective_at)` order, as a patient-keyed timeline's; the result does not depend on
/// threads or batch sizes.
///
/// # Errors
/// As [`compute`].
pub(crate) async fn compute_person(
    set: &FeatureSet,
    inputs: &Inputs,
    persons: &Persons,
    opts: &MaterializeOptions,
) -> Result<Timeline> {
    let (groups, keys) = groups(persons);
    let rekeyed = rekey(inputs, &keys)?;
    let computed = compute(set, &rekeyed, opts).await?;
    let rows = timeline::decode(&computed.batches)?;
    drop(computed);
    let position: HashMap<&str, usize> = set
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_str(), i))
        .collect();
    let names: Vec<Arc<str>> = set
        .features
        .iter()
        .map(|f| Arc::from(f.name.as_str()))
        .collect();
    // Person → (feature position, change point), in order; and each group's series.
    let mut by_person: BTreeMap<Arc<str>, Vec<(usize, ChangePoint)>> = BTreeMap::new();
    let mut series: HashMap<(&str, usize), Vec<ChangePoint>> = HashMap::new();
    for (key, feature, cp) in &rows {
        let Some(&f) = position.get(&**feature) else {
            continue;
        };
        if groups.contains_key(&**key) {
            series.entry((&**key, f)).or_default().push(cp.clone());
        } else {
            by_person
                .entry(key.clone())
                .or_default()
                .push((f, cp.clone()));
        }
    }
    // Each linked person's groups in time order (`None`, since always, first).
    let mut of_person: BTreeMap<Arc<str>, Vec<(&str, &Group)>> = BTreeMap::new();
    for (key, g) in &groups {
        of_person
            .entry(g.person.clone())
            .or_default()
            .push((key.as_str(), g));
    }
    for (person, mut gs) in of_person {
        gs.sort_by_key(|(_, g)| g.from);
        let out = by_person.entry(person).or_default();
        for f in 0..names.len() {
            let parts: Vec<(&Group, &[ChangePoint])> = gs
                .iter()
                .map(|(key, g)| {
                    let s = series.get(&(*key, f)).map_or(&[][..], Vec::as_slice);
                    (*g, s)
                })
                .collect();
            out.extend(merge(&parts).into_iter().map(|cp| (f, cp)));
        }
    }
    let mut out: Rows = Vec::new();
    let mut persons_out = 0;
    for (person, mut cps) in by_person {
        if cps.is_empty() {
            continue;
        }
        persons_out += 1;
        // Stable: time order within a feature is kept.
        cps.sort_by_key(|(f, _)| *f);
        out.extend(
            cps.into_iter()
                .map(|(f, cp)| (person.clone(), names[f].clone(), cp)),
        );
    }
    let n = out.len();
    Ok(Timeline {
        batches: timeline::encode(&out, opts.batch_size, timeline::person_timeline_schema())?,
        rows: n,
        recomputed: persons_out,
        reused: 0,
    })
}
