//! Materialization in memory: curated rows and a feature set in, timeline rows out; the
//! parallel run over patients and its entry points ([`compute`], [`compute_incremental`]).
//!
//! 1. Derived tables are computed (DataFusion) and every table is read in place, batch by
//!    batch (`load`): columns are cast once and borrowed (`columns`), never copied into
//!    owned strings.
//! 2. Patient ids are interned once for all tables (`intern`): a patient is a `u32`, its rank
//!    in byte order of the ids, so "patients in id order" is the order of those numbers.
//! 3. Features that read the same rows (same table, filter, time column and value column,
//!    e.g. the 180- and 365-day counts of admissions) share one event stream (`events`). A
//!    stream holds the matching rows as events (event time, `known_at`, `retracted_at`,
//!    `source_id`, value) grouped by patient (a counting sort) and sorted in the tie order:
//!    event time, then `known_at`, then `source_id` (then the rest of the row).
//! 4. Patients are computed in parallel, in fixed chunks (`sweep`): a row is visible on an
//!    interval `[enter, leave)` ([`crate::pit::visibility`]); a sweep over the interval ends
//!    gives every instant where the state can change, and the state is recomputed from the
//!    visible rows there (a bitset over the patient's events, so "visible rows in tie order"
//!    is a scan of its set bits, and sums and means add in one fixed order).
//! 5. The change points go straight into the timeline's Arrow builders (`encode`), patients
//!    in id order, features in set order, in batches of `batch_size` rows: the result does
//!    not depend on thread count or chunking.

use super::definition::FeatureSet;
use super::encode::Encoder;
use super::inputs::Inputs;
use super::load::{DerivedTables, Loaded};
use super::sweep::{patient_rows, Cp, OutRow, Prepared, Scratch};
use super::timeline::{self};
use crate::error::{Error, Result};
use crate::pit::Knowledge;
use arrow::array::RecordBatch;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::ops::Range;

/// How to materialize.
#[derive(Debug, Clone)]
pub struct MaterializeOptions {
    /// As known at t (default) or as occurred.
    pub knowledge: Knowledge,
    /// Threads computing patients (default: rayon's global pool). The result does not
    /// depend on it.
    pub threads: Option<usize>,
    /// Rows per timeline batch (default 65,536). The result's hash does not depend on it.
    pub batch_size: usize,
    /// Curated input rows held in memory at once when materializing from the store
    /// (default [`PARTITION_ROWS`]): above it, patients are computed in ranges of their
    /// buckets whose rows fit, and the timeline is written as it is computed. The result does not
    /// depend on it.
    pub partition_rows: usize,
    /// What the timeline is keyed by (default: the source patient id; `person`: the person
    /// of the master patient index as known at each time, `features/person.rs`).
    pub entity: super::person::Entity,
}

/// Default [`MaterializeOptions::partition_rows`]: a range of this many curated rows peaks
/// at about 1.4 GB (the readmission set; BENCHMARKS.md).
pub const PARTITION_ROWS: usize = 4_000_000;

impl Default for MaterializeOptions {
    fn default() -> Self {
        MaterializeOptions {
            knowledge: Knowledge::AsKnown,
            threads: None,
            batch_size: 65_536,
            partition_rows: PARTITION_ROWS,
            entity: super::person::Entity::Patient,
        }
    }
}

/// Patients per unit of parallel work.
const CHUNK: u32 = 512;

/// Chunks computed before their rows are encoded (bounds the rows held in between).
const WAVE: usize = 8;

/// Computes every patient in parallel, chunk by chunk, and encodes the rows in patient order.
/// `work(p, scratch, out)` appends patient `p`'s rows and says whether it was computed
/// (`Some(true)`), reused (`Some(false)`) or has no rows at all (`None`).
pub(super) fn run<'a>(
    patients: usize,
    batch_size: usize,
    work: impl Fn(u32, &mut Scratch, &mut Vec<OutRow<'a>>) -> Option<bool> + Sync,
) -> Result<Timeline> {
    let chunks: Vec<Range<u32>> = (0..patients as u32)
        .step_by(CHUNK as usize)
        .map(|a| a..(a + CHUNK).min(patients as u32))
        .collect();
    let mut enc = Encoder::new(batch_size);
    let (mut recomputed, mut reused) = (0, 0);
    for wave in chunks.chunks(WAVE) {
        let done: Vec<(usize, usize, Vec<OutRow<'a>>)> = wave
            .par_iter()
            .map(|r| {
                let mut scratch = Scratch::default();
                let mut out = Vec::new();
                let (mut computed, mut kept) = (0, 0);
                for p in r.clone() {
                    match work(p, &mut scratch, &mut out) {
                        Some(true) => computed += 1,
                        Some(false) => kept += 1,
                        None => {}
                    }
                }
                (computed, kept, out)
            })
            .collect();
        for (computed, kept, rows) in done {
            recomputed += computed;
            reused += kept;
            for r in &rows {
                enc.push(r)?;
            }
        }
    }
    let (batches, rows) = enc.finish()?;
    Ok(Timeline {
        batches,
        rows,
        recomputed,
        reused,
    })
}

pub(crate) fn in_pool<T: Send>(
    threads: Option<usize>,
    work: impl FnOnce() -> T + Send,
) -> Result<T> {
    match threads {
        None => Ok(work()),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| Error::invalid("threads", e.to_string()))?;
            Ok(pool.install(work))
        }
    }
}

/// A timeline computed in memory.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The rows, in batches of at most `batch_size`, sorted by (patient, feature, time).
    pub batches: Vec<RecordBatch>,
    /// Number of change points.
    pub rows: usize,
    /// Patients computed (the others were reused from a previous timeline).
    pub recomputed: usize,
    /// Patients whose rows were copied from a previous timeline.
    pub reused: usize,
}

/// Computes a set's timeline from curated rows.
///
/// # Errors
/// [`Error::InvalidArgument`] when a derived query fails or a column is missing from the
/// inputs; [`Error::Arrow`] on a cast failure.
pub async fn compute(
    set: &FeatureSet,
    inputs: &Inputs,
    opts: &MaterializeOptions,
) -> Result<Timeline> {
    compute_with(set, inputs, None, opts).await
}

/// [`compute`] with the derived tables given (`None`: computed from `inputs`). The
/// partitioned materialization computes them once over all patients and gives each
/// partition its patients' rows.
pub(crate) async fn compute_with(
    set: &FeatureSet,
    inputs: &Inputs,
    derived: Option<&DerivedTables>,
    opts: &MaterializeOptions,
) -> Result<Timeline> {
    let loaded = Loaded::load(set, inputs, derived).await?;
    let knowledge = opts.knowledge;
    in_pool(opts.threads, || {
        let prep = Prepared::new(set, &loaded)?;
        loaded.release_source_ids();
        run(prep.names.len(), opts.batch_size, |p, scratch, out| {
            let clinical = prep.clinical(p);
            if !prep.has_rows(p, clinical.as_ref()) {
                return None;
            }
            patient_rows(&prep, p, clinical.as_ref(), knowledge, scratch, out);
            Some(true)
        })
    })?
}

/// Recomputes a timeline after new curated data: patients whose events are unchanged keep
/// their rows from `previous` (the timeline computed from `previous_inputs` with the same set
/// and options); the others are recomputed. The result equals [`compute`] on `new_inputs`.
///
/// # Errors
/// As [`compute`]; [`Error::BadInput`] when `previous` is not a timeline.
pub async fn compute_incremental(
    set: &FeatureSet,
    previous: &[RecordBatch],
    previous_inputs: &Inputs,
    new_inputs: &Inputs,
    opts: &MaterializeOptions,
) -> Result<Timeline> {
    let old_loaded = Loaded::load(set, previous_inputs, None).await?;
    let new_loaded = Loaded::load(set, new_inputs, None).await?;
    // Digests read every source id.
    old_loaded.read_all_late_source_ids()?;
    new_loaded.read_all_late_source_ids()?;
    let prev_rows = timeline::decode(previous)?;
    let mut prev_by: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, row) in prev_rows.iter().enumerate() {
        prev_by.entry(&*row.0).or_default().push(i);
    }
    let knowledge = opts.knowledge;
    in_pool(opts.threads, || {
        let old = Prepared::new(set, &old_loaded)?;
        let new = Prepared::new(set, &new_loaded)?;
        run(new.names.len(), opts.batch_size, |p, scratch, out| {
            let clinical = new.clinical(p);
            if !new.has_rows(p, clinical.as_ref()) {
                return None;
            }
            let name = new.names[p as usize];
            let same = old.names.binary_search(&name).is_ok_and(|op| {
                let op = op as u32;
                let old_clinical = old.clinical(op);
                old.has_rows(op, old_clinical.as_ref())
                    && old.digest(op, old_clinical.as_ref()) == new.digest(p, clinical.as_ref())
            });
            if !same {
                patient_rows(&new, p, clinical.as_ref(), knowledge, scratch, out);
                return Some(true);
            }
            // Unchanged events and no previous rows: the patient has no change point.
            for i in prev_by.get(name).into_iter().flatten() {
                let (_, feature, cp) = &prev_rows[*i];
                out.push(OutRow {
                    patient: name,
                    feature,
                    cp: Cp::of(cp),
                });
            }
            Some(false)
        })
    })?
}
