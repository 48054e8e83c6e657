//! Historical lookups straight from curated rows: the timeline of each patient with entity
//! rows is computed and consulted in place, then dropped, so no timeline of the whole cohort
//! is ever held, indexed or stored.
//!
//! The answer is the one `lookup::historical_batches` gives over the timeline that
//! [`super::compute`] makes from the same inputs: the same change points
//! ([`super::sweep::patient_points`]), resolved at each row's time by the same rule
//! ([`timeline::resolve_state`]). One difference: a text feature's output column is text when
//! its source column is text, where an index knows a feature is text only when some change
//! point holds text (`docs/lookups.md`, "Straight from curated rows").
//!
//! 1. The inputs are loaded as for materialization (event streams grouped by patient).
//! 2. Entity rows are mapped to the interned patients and grouped by patient, each patient's
//!    in (time, row) order.
//! 3. Patients with entity rows are computed in parallel, in chunks and waves as
//!    materialization computes them: every feature's change points into reused buffers, then
//!    one pass over the patient's rows in time order, a cursor per feature.
//! 4. Each row's numbers and statuses go straight into its slots, a row's features side by
//!    side (rows are scattered, features of a row are not); text values are gathered per
//!    wave. Once the inputs are dropped, one output batch per entity batch is built from its
//!    rows' slots, in parallel.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicU8};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use chrono::Duration;
use rayon::prelude::*;

use super::compute::{in_pool, MaterializeOptions};
use super::definition::FeatureSet;
use super::events::Grouped;
use super::inputs::Inputs;
use super::intern::NO_PATIENT;
use super::kind::FeatureKind;
use super::load::Loaded;
use super::sweep::{patient_points, Cp, Prepared, Scratch};
use super::timeline::{self, FeatureInfo, Resolved, Status};
use super::training::{entity_keys, entity_schema, status_str, training_schema_of};
use crate::error::Result;

/// Patients per unit of parallel work.
const CHUNK: u32 = 512;
/// Chunks computed before their text values are written out (bounds the text held between).
const WAVE: usize = 16;

/// A historical lookup computed from curated rows: the entity rows (`patient_col`,
/// `time_col` and any other columns) with each feature of `set` as of each row's time,
/// exactly one output row per entity row, in input order, one output batch per entity batch.
/// The result does not depend on threads.
///
/// # Errors
/// [`crate::error::Error::InvalidArgument`] naming a bad entity row or column, a derived query that
/// fails, or a column a feature needs missing from the inputs; [`crate::error::Error::Arrow`] on a cast
/// failure.
pub async fn historical_direct(
    set: &FeatureSet,
    inputs: Inputs,
    entities: &[RecordBatch],
    patient_col: &str,
    time_col: &str,
    opts: &MaterializeOptions,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let entity_schema = entity_schema(entities)?;
    let keys = entity_keys(entities, patient_col, time_col)?;
    let loaded = Loaded::load(set, &inputs, None).await?;
    // What is loaded holds what it reads; the rest of the inputs goes now.
    drop(inputs);
    let infos: Vec<(String, FeatureInfo)> = set
        .features
        .iter()
        .enumerate()
        .map(|(fi, f)| {
            let info = FeatureInfo {
                kind: f.kind,
                ttl: f.ttl_us.map(Duration::microseconds),
                is_label: f.kind.is_label(),
                is_text: matches!(
                    f.kind,
                    FeatureKind::Last | FeatureKind::First | FeatureKind::Min | FeatureKind::Max
                ) && loaded.text_valued(fi),
            };
            (f.name.clone(), info)
        })
        .collect();
    let schema = training_schema_of(&entity_schema, &infos)?;
    let knowledge = opts.knowledge;
    let nf = infos.len();
    let text: Vec<bool> = infos.iter().map(|(_, i)| i.is_text).collect();
    let (slots, text_columns) = in_pool(opts.threads, || {
        let prep = Prepared::new(set, &loaded)?;
        // Ties are ordered: the source ids can go.
        loaded.release_source_ids();
        let rows: usize = keys.times.iter().map(Vec::len).sum();
        let mut patient = vec![NO_PATIENT; rows];
        let mut at = 0;
        for p in &keys.patients {
            prep.patients_of(p, 0, &mut patient[at..at + p.len()]);
            at += p.len();
        }
        let times: Vec<i64> = keys.times.iter().flatten().copied().collect();
        let np = prep.names.len();
        let mut grouped = Grouped::by_key(np, &patient, |row| (times[row], row as u32));
        grouped.sort_each(|a, b| a.cmp(b));

        let slots = Slots::new(rows, nf);
        let mut text_columns: Vec<Option<Vec<Option<Cow<'_, str>>>>> =
            text.iter().map(|&t| t.then(|| vec![None; rows])).collect();
        // Rows of patients the inputs do not hold: every feature as for no rows at all.
        for (row, (&p, &t)) in patient.iter().zip(&times).enumerate() {
            if p == NO_PATIENT {
                for (fi, (_, info)) in infos.iter().enumerate() {
                    let r = timeline::resolve_state(info, None, t, info.ttl);
                    slots.put(row, fi, &r);
                    if let Some(col) = &mut text_columns[fi] {
                        col[row] = text_of(r);
                    }
                }
            }
        }
        drop(patient);
        drop(times);

        let chunks: Vec<Range<u32>> = (0..np as u32)
            .step_by(CHUNK as usize)
            .map(|a| a..(a + CHUNK).min(np as u32))
            .collect();
        for wave in chunks.chunks(WAVE) {
            // Numbers and statuses go straight to their rows' slots; text values are
            // gathered and written after the wave.
            let texts: Vec<Vec<(u32, usize, Cow<'_, str>)>> = wave
                .par_iter()
                .map(|r| {
                    let mut scratch = Scratch::default();
                    let mut points: Vec<Vec<Cp<'_>>> = vec![Vec::new(); nf];
                    let mut cursor = vec![0usize; nf];
                    let mut texts = Vec::new();
                    for p in r.clone() {
                        let ents = grouped.of(p);
                        if ents.is_empty() {
                            continue;
                        }
                        points.iter_mut().for_each(Vec::clear);
                        let clinical = prep.clinical(p);
                        patient_points(&prep, p, clinical.as_ref(), knowledge, &mut scratch, {
                            let points = &mut points;
                            move |fi, cp| points[fi].push(cp)
                        });
                        cursor.fill(0);
                        for &(t, row) in ents {
                            for (fi, (_, info)) in infos.iter().enumerate() {
                                let pts = &points[fi];
                                let c = &mut cursor[fi];
                                while *c < pts.len() && pts[*c].effective_at <= t {
                                    *c += 1;
                                }
                                let state = c.checked_sub(1).map(|i| pts[i].state());
                                let r = timeline::resolve_state(info, state, t, info.ttl);
                                slots.put(row as usize, fi, &r);
                                if text[fi] {
                                    if let Some(s) = text_of(r) {
                                        texts.push((row, fi, s));
                                    }
                                }
                            }
                        }
                    }
                    texts
                })
                .collect();
            for (row, fi, s) in texts.into_iter().flatten() {
                if let Some(col) = &mut text_columns[fi] {
                    col[row as usize] = Some(s);
                }
            }
        }
        // Text borrowed from the inputs is copied out before the inputs go.
        let text_columns: Vec<Option<ArrayRef>> = text_columns
            .into_par_iter()
            .map(|c| {
                c.map(|v| {
                    Arc::new(v.iter().map(|s| s.as_deref()).collect::<StringArray>()) as ArrayRef
                })
            })
            .collect();
        Ok::<_, crate::error::Error>((slots, text_columns))
    })??;
    drop(loaded);
    // One output batch per entity batch, built in parallel from its rows' slots.
    let mut starts = Vec::with_capacity(entities.len());
    let mut row0 = 0;
    for b in entities {
        starts.push(row0);
        row0 += b.num_rows();
    }
    let mut out = in_pool(opts.threads, || {
        entities
            .par_iter()
            .zip(starts)
            .map(|(b, row0)| {
                let rows = row0..row0 + b.num_rows();
                let mut cols: Vec<ArrayRef> = b.columns().to_vec();
                for (fi, t) in text_columns.iter().enumerate() {
                    cols.push(match t {
                        Some(t) => t.slice(row0, rows.len()),
                        None => slots.numbers(fi, rows.clone()),
                    });
                    cols.push(slots.statuses(fi, rows.clone())?);
                }
                RecordBatch::try_new(schema.clone(), cols)
            })
            .collect::<std::result::Result<Vec<_>, _>>()
    })??;
    if out.is_empty() {
        out.push(RecordBatch::new_empty(schema.clone()));
    }
    Ok((schema, out))
}

/// The text a resolved value writes into a text column (a number as its text).
fn text_of(r: Resolved<'_>) -> Option<Cow<'_, str>> {
    match r {
        Resolved::Text(s) => Some(Cow::Borrowed(s)),
        Resolved::Num(x) => Some(Cow::Owned(x.to_string())),
        Resolved::Missing(_) => None,
    }
}

/// Every row's numbers and statuses while they are computed, row by row (a row's features
/// side by side, so writing a row's values touches one or two cache lines wherever the row
/// is), written from any thread: each row belongs to one patient, so to one task.
struct Slots {
    features: usize,
    /// Per (row, feature): the number's bits.
    numbers: Vec<AtomicU64>,
    /// Per (row, feature): the status, and [`NUMBER`] when a number is set.
    codes: Vec<AtomicU8>,
}

/// The code bit of a set number.
const NUMBER: u8 = 0x80;

/// Every [`Status`], each at its code (`status as u8`).
const STATUSES: [Status; 3] = [Status::Present, Status::NoData, Status::OutsideTtl];

impl Slots {
    fn new(rows: usize, features: usize) -> Slots {
        let no_data = Status::NoData as u8;
        // Filled in parallel: the first touch of the memory is shared out too.
        Slots {
            features,
            numbers: (0..rows * features)
                .into_par_iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
            codes: (0..rows * features)
                .into_par_iter()
                .map(|_| AtomicU8::new(no_data))
                .collect(),
        }
    }

    /// Writes the value `r` of feature `fi` at `row`, as `lookup::historical_batches`
    /// writes it (a number only into a number column; text goes through [`text_of`]).
    fn put(&self, row: usize, fi: usize, r: &Resolved<'_>) {
        let at = row * self.features + fi;
        let mut code = r.status() as u8;
        if let Resolved::Num(x) = r {
            self.numbers[at].store(x.to_bits(), Relaxed);
            code |= NUMBER;
        }
        self.codes[at].store(code, Relaxed);
    }

    /// Feature `fi`'s numbers at `rows` as a column (no null buffer when every row has one).
    fn numbers(&self, fi: usize, rows: Range<usize>) -> ArrayRef {
        let at = |i: usize| (rows.start + i) * self.features + fi;
        let values: Vec<f64> = (0..rows.len())
            .map(|i| f64::from_bits(self.numbers[at(i)].load(Relaxed)))
            .collect();
        let valid = BooleanBuffer::collect_bool(rows.len(), |i| {
            self.codes[at(i)].load(Relaxed) & NUMBER != 0
        });
        let valid = Some(NullBuffer::new(valid)).filter(|v| v.null_count() > 0);
        Arc::new(Float64Array::new(ScalarBuffer::from(values), valid))
    }

    /// Feature `fi`'s statuses at `rows` as the status text column.
    ///
    /// # Errors
    /// [`ArrowError`] when the text of the rows passes `i32` offsets (2 GiB).
    fn statuses(&self, fi: usize, rows: Range<usize>) -> Result<ArrayRef, ArrowError> {
        let code = |row: usize| self.codes[row * self.features + fi].load(Relaxed) & !NUMBER;
        let text = |c: u8| status_str(STATUSES[c as usize]).as_bytes();
        // Offsets and bytes written directly; one status throughout (every count, say)
        // is a repeat.
        let first = rows.clone().next().map(code);
        let mut offsets: Vec<i32> = Vec::with_capacity(rows.len() + 1);
        let mut bytes: Vec<u8> = Vec::new();
        offsets.push(0);
        match first.filter(|&c| rows.clone().all(|row| code(row) == c)) {
            Some(c) => {
                let t = text(c);
                bytes = t.repeat(rows.len());
                offsets.extend((1..=rows.len()).map(|i| (i * t.len()) as i32));
            }
            None => {
                bytes.reserve(rows.len() * "no_data".len());
                for row in rows {
                    bytes.extend_from_slice(text(code(row)));
                    offsets.push(bytes.len() as i32);
                }
            }
        }
        if i32::try_from(bytes.len()).is_err() {
            return Err(ArrowError::OffsetOverflowError(bytes.len()));
        }
        Ok(Arc::new(StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            bytes.into(),
            None,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status written to a slot reads back as itself, with and without a number.
    #[test]
    fn statuses_round_trip_through_slots() {
        let slots = Slots::new(3, 2);
        slots.put(0, 1, &Resolved::Num(2.5));
        slots.put(1, 1, &Resolved::Missing(Status::OutsideTtl));
        slots.put(2, 1, &Resolved::Missing(Status::NoData));
        for (i, s) in STATUSES.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        let st = slots.statuses(1, 0..3).unwrap();
        let st = st.as_any().downcast_ref::<StringArray>().unwrap();
        let got: Vec<&str> = st.iter().map(Option::unwrap).collect();
        assert_eq!(got, ["present", "outside_ttl", "no_data"]);
        let n = slots.numbers(1, 0..3);
        assert_eq!(n.null_count(), 2);
        let uniform = slots.statuses(0, 0..3).unwrap();
        let uniform = uniform.as_any().downcast_ref::<StringArray>().unwrap();
        assert!(uniform.iter().all(|s| s == Some("no_data")));
        assert!(slots.numbers(1, 0..1).nulls().is_none());
    }
}
