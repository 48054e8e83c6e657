//! Historical lookups straight from curated rows: the timeline of each patient with entity
//! rows is computed and consulted in place, then dropped, so no timeline of the whole cohort
//! is ever held, indexed or stored.
//!
//! The answer is the one [`crate::lookup::historical_batches`] gives over the timeline that
//! [`super::compute`] makes from the same inputs: the same change points
//! ([`compute::patient_points`]), resolved at each row's time by the same rule
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
//! 4. Each wave's values are written to their rows' places in the output columns, one
//!    feature per task, and the columns are cut into one batch per entity batch.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, StringBuilder};
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::datatypes::SchemaRef;
use chrono::Duration;
use rayon::prelude::*;

use super::compute::{
    in_pool, patient_points, Cp, Grouped, Inputs, Loaded, MaterializeOptions, Prepared, Scratch,
    NO_PATIENT,
};
use super::definition::{FeatureKind, FeatureSet};
use super::timeline::{self, FeatureInfo, Resolved, Status};
use crate::error::Result;
use crate::lookup::{self, status_str};

/// Patients per unit of parallel work.
const CHUNK: u32 = 512;
/// Chunks computed before their values are written out (bounds the values held between).
const WAVE: usize = 16;

/// One feature's output column while it is filled, indexed by entity row.
enum Column<'a> {
    Num { values: Vec<f64>, valid: Vec<bool> },
    Text(Vec<Option<std::borrow::Cow<'a, str>>>),
}

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
    let entity_schema = lookup::entity_schema(entities)?;
    let keys = lookup::entity_keys(entities, patient_col, time_col)?;
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
    let schema = lookup::training_schema_of(&entity_schema, &infos)?;
    let knowledge = opts.knowledge;
    let (values, status) = in_pool(opts.threads, || {
        let prep = Prepared::new(set, &loaded);
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

        let mut columns: Vec<Column<'_>> = infos
            .iter()
            .map(|(_, info)| match info.is_text {
                true => Column::Text(vec![None; rows]),
                false => Column::Num {
                    values: vec![0.0; rows],
                    valid: vec![false; rows],
                },
            })
            .collect();
        // Every row's status is written below.
        let mut status = vec![vec![Status::NoData; rows]; infos.len()];
        // Rows of patients the inputs do not hold: every feature as for no rows at all.
        for (row, (&p, &t)) in patient.iter().zip(&times).enumerate() {
            if p == NO_PATIENT {
                for (fi, (_, info)) in infos.iter().enumerate() {
                    let r = timeline::resolve_state(info, None, t, info.ttl);
                    put(&mut columns[fi], &mut status[fi], row, r);
                }
            }
        }
        drop(patient);
        drop(times);

        let chunks: Vec<Range<u32>> = (0..np as u32)
            .step_by(CHUNK as usize)
            .map(|a| a..(a + CHUNK).min(np as u32))
            .collect();
        let nf = infos.len();
        for wave in chunks.chunks(WAVE) {
            let done: Vec<(Vec<u32>, Vec<Resolved<'_>>)> = wave
                .par_iter()
                .map(|r| {
                    let mut scratch = Scratch::default();
                    let mut points: Vec<Vec<Cp<'_>>> = vec![Vec::new(); nf];
                    let mut cursor = vec![0usize; nf];
                    let (mut rows, mut values) = (Vec::new(), Vec::new());
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
                            rows.push(row);
                            for (fi, (_, info)) in infos.iter().enumerate() {
                                let pts = &points[fi];
                                let c = &mut cursor[fi];
                                while *c < pts.len() && pts[*c].effective_at <= t {
                                    *c += 1;
                                }
                                let state = c.checked_sub(1).map(|i| pts[i].state());
                                values.push(timeline::resolve_state(info, state, t, info.ttl));
                            }
                        }
                    }
                    (rows, values)
                })
                .collect();
            columns
                .par_iter_mut()
                .zip(status.par_iter_mut())
                .enumerate()
                .for_each(|(fi, (col, st))| {
                    for (rows, values) in &done {
                        for (k, &row) in rows.iter().enumerate() {
                            put(col, st, row as usize, values[k * nf + fi]);
                        }
                    }
                });
        }
        // Text borrowed from the inputs is copied out: the inputs go before the statuses
        // are written as text.
        let values: Vec<ArrayRef> = columns.into_par_iter().map(finish_values).collect();
        (values, status)
    })?;
    drop(loaded);
    let status: Vec<ArrayRef> = status.into_par_iter().map(finish_status).collect();
    let columns: Vec<ArrayRef> = values
        .into_iter()
        .zip(status)
        .flat_map(|(v, s)| [v, s])
        .collect();
    let mut out = Vec::with_capacity(entities.len());
    let mut row0 = 0;
    for b in entities {
        let len = b.num_rows();
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        cols.extend(columns.iter().map(|c| c.slice(row0, len)));
        out.push(RecordBatch::try_new(schema.clone(), cols)?);
        row0 += len;
    }
    if out.is_empty() {
        out.push(RecordBatch::new_empty(schema.clone()));
    }
    Ok((schema, out))
}

/// Writes the value `r` of a row into a feature's column and status codes, as
/// [`crate::lookup::historical_batches`] writes it (a number in a text column as its text).
fn put<'a>(col: &mut Column<'a>, status: &mut [Status], row: usize, r: Resolved<'a>) {
    status[row] = r.status();
    match (col, r) {
        (Column::Num { values, valid }, Resolved::Num(x)) => {
            values[row] = x;
            valid[row] = true;
        }
        (Column::Text(v), Resolved::Text(s)) => v[row] = Some(s.into()),
        (Column::Text(v), Resolved::Num(x)) => v[row] = Some(x.to_string().into()),
        (Column::Num { .. }, Resolved::Text(_) | Resolved::Missing(_))
        | (Column::Text(_), Resolved::Missing(_)) => {}
    }
}

/// A filled column of values as an Arrow array.
fn finish_values(col: Column<'_>) -> ArrayRef {
    match col {
        Column::Num { values, valid } => Arc::new(Float64Array::new(
            ScalarBuffer::from(values),
            Some(NullBuffer::from(valid)),
        )),
        Column::Text(v) => Arc::new(v.iter().map(|s| s.as_deref()).collect::<StringArray>()),
    }
}

/// Statuses as the status text column.
fn finish_status(codes: Vec<Status>) -> ArrayRef {
    let bytes = codes.iter().map(|&s| status_str(s).len()).sum();
    let mut b = StringBuilder::with_capacity(codes.len(), bytes);
    for s in codes {
        b.append_value(status_str(s));
    }
    Arc::new(b.finish())
}
