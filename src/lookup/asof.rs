//! The as-of join of a wide feature table: for each entity row `(patient, t)`, the feature
//! row of that patient with the greatest `(event time, created time)` among those with
//! `t - ttl < event time <= t` (no lower bound without a TTL), its feature columns copied to
//! the output; no match gives nulls. One output row per entity row, duplicates kept.
//!
//! This is the layout the peers join (`../shared/peers`: DuckDB, Polars, pandas, Feast), and
//! the rule of [`crate::features::TimelineIndex::resolve`] ([`crate::pit::within_ttl`]): an
//! event exactly `ttl` before `t` is out, one at `t` is in; ties on the event time go to the later created time, then to the
//! later row of the file (never to chance).
//!
//! How, without sorting the feature rows: entity rows are sorted by (patient, t), in
//! parallel, and their distinct patient ids numbered by rank in a [`KeyTable`]. Each
//! feature row is a candidate for every entity row of its patient at or after its event time,
//! so it is recorded once, at the first such entity row (a binary search), keeping the
//! greatest candidate there. A sweep over each patient's entity rows in time order then
//! carries the greatest candidate forward: at each row it is the latest feature row at or
//! before t, checked against the TTL.
//!
//! One worker per thread takes the next feature row group, decodes its key columns a batch at
//! a time, looks up each row's patient code and, if the row can win at one of its patient's
//! entity rows at all (its event time in the patient's `Span`, found beside the patient's
//! key table slot, in the same cache line), buffers it (times, row, code) in its patient's
//! partition: a range of codes whose entity rows (about 4,096; contiguous, since codes are
//! ranks) fit with their candidates in a core's L2 cache. Each partition is then
//! joined on its own, in parallel: its candidates recorded and swept with no cache misses
//! to speak of and no merge between workers. A second pass decodes the feature columns of the
//! row groups holding winners (a batch at a time, cut to its winners at once, where winners
//! are dense; a row selection where they are sparse); each winner's place among them is its
//! rank in a bitmap of the winning rows. Decoding and the work in memory are timed apart
//! ([`AsofStats`]), as the peers time their load and their join. Memory: the entity rows,
//! the buffered feature rows that can win (24 bytes each), one decoded batch per worker, then
//! the winners' feature columns.

mod join;
mod read;
mod write;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rayon::prelude::*;

use crate::error::{Error, Result};
use join::{
    join_partition, patient_rows, sort_entities, spans, split_phase, Partitions, RowSet, Span,
    PARTITION_ROWS, ROW_BITS, ROW_MASK,
};
use read::{
    column_index, each_key_batch, open_builder, read_entities, read_winners, KeyBatch, Winners,
};
pub use write::write_parquet;

/// The clock that times the join's phases ([`AsofStats`]): seconds on a monotonic clock
/// since any fixed start. The library reads no clock of its own; the caller that reports
/// the times (`ward asof`, a bench) passes one, and [`Untimed`] leaves every time at 0.
pub trait Stopwatch: Sync {
    /// Seconds since the stopwatch's start.
    fn seconds(&self) -> f64;
}

/// A [`Stopwatch`] that never moves: the join untimed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Untimed;

impl Stopwatch for Untimed {
    fn seconds(&self) -> f64 {
        0.0
    }
}

/// Column names of the two inputs.
#[derive(Debug, Clone)]
pub struct AsofColumns {
    /// Patient id, in both files (text).
    pub patient: String,
    /// Time: the entity row's lookup time and the feature row's event time.
    pub time: String,
    /// The feature row's created (known) time, the tie-breaker.
    pub created: String,
}

impl Default for AsofColumns {
    fn default() -> Self {
        AsofColumns {
            patient: "patient_id".into(),
            time: "event_timestamp".into(),
            created: "created_timestamp".into(),
        }
    }
}

/// What [`asof_join`] measured. The join alternates between decoding Parquet (load) and
/// working on decoded columns in memory (join), in phases timed apart, so that its join
/// time compares with the peers' (`../shared/peers`: their `join_s` is timed after their
/// tables are loaded).
#[derive(Debug, Clone, Default)]
pub struct AsofStats {
    /// Entity rows (= output rows).
    pub rows: usize,
    /// Feature rows read.
    pub feature_rows: usize,
    /// Output rows with a matching feature row.
    pub matched: usize,
    /// Feature rows buffered for the join: those of patients with entity rows whose event
    /// time can win at one of them (after the patient's first entity time less the TTL, at
    /// most the last); the others are dropped once their patient is looked up.
    pub buffered: usize,
    /// Load: seconds decoding the entity rows and the feature rows' key columns. The key
    /// columns are decoded, looked up and buffered in the same tasks, a batch at a time: that
    /// phase's seconds are split between this and `match_s` in proportion to the seconds its
    /// tasks spent decoding and on the rest.
    pub read_keys_s: f64,
    /// Join: seconds sorting the entity rows, looking up and buffering every feature row (its
    /// share of the decoding phase, above), and joining each partition: recording its
    /// candidates and sweeping them into each entity row's winner.
    pub match_s: f64,
    /// Of `match_s`: seconds sorting the entity rows.
    pub sort_s: f64,
    /// Load: seconds decoding the feature columns of the row groups that hold winners. Each
    /// decoded batch is cut down to its winners at once, in the same tasks: that phase's
    /// seconds are split between this and `assemble_s` in proportion to the seconds its
    /// tasks spent decoding and cutting.
    pub read_values_s: f64,
    /// Join: seconds taking the winners' values (their share of the decoding phase, above)
    /// and assembling the output columns.
    pub assemble_s: f64,
}

impl AsofStats {
    /// Seconds decoding Parquet.
    pub fn load_s(&self) -> f64 {
        self.read_keys_s + self.read_values_s
    }

    /// Seconds of the join on decoded columns.
    pub fn join_s(&self) -> f64 {
        self.match_s + self.assemble_s
    }
}

/// Joins `features` (Parquet) as of the rows of `entities` (Parquet) and returns the output
/// in the peers' layout: `row_id` (the entity row's position in its file), the patient id,
/// the entity time, then every feature column of `features` (all but the key columns),
/// sorted by (patient id, time, row id).
///
/// Timed in [`AsofStats`]: decode the entity rows (load); sort them (join); decode the
/// feature key columns a batch at a time (load), probing each (join); sweep (join); decode
/// the feature columns of the row groups holding winners (load), cutting each batch to its
/// winners (join); assemble the output (join).
///
/// # Errors
/// [`Error::BadInput`] naming the file, column and row of a missing column or a null key;
/// I/O and Parquet errors.
pub fn asof_join(
    features: &Path,
    entities: &Path,
    ttl_us: Option<i64>,
    cols: &AsofColumns,
    sw: &dyn Stopwatch,
) -> Result<(RecordBatch, AsofStats)> {
    asof_join_in(features, entities, ttl_us, cols, PARTITION_ROWS, sw)
}

/// [`asof_join`] with partitions of about `partition_rows` entity rows.
fn asof_join_in(
    features: &Path,
    entities: &Path,
    ttl_us: Option<i64>,
    cols: &AsofColumns,
    partition_rows: usize,
    sw: &dyn Stopwatch,
) -> Result<(RecordBatch, AsofStats)> {
    let mut stats = AsofStats::default();

    // 1. Load: the entity rows.
    let t = sw.seconds();
    let fb = open_builder(features)?;
    let fschema = fb.schema().clone();
    let fpi = column_index(&fschema, &cols.patient, features)?;
    let fti = column_index(&fschema, &cols.time, features)?;
    let fci = column_index(&fschema, &cols.created, features)?;
    let meta = fb.metadata().clone();
    drop(fb);
    let group_rows: Vec<u64> = meta
        .row_groups()
        .iter()
        .map(|g| g.num_rows() as u64)
        .collect();
    let group_start: Vec<u64> = group_rows
        .iter()
        .scan(0u64, |acc, &n| {
            let s = *acc;
            *acc += n;
            Some(s)
        })
        .collect();
    stats.feature_rows = group_rows.iter().sum::<u64>() as usize;
    let key_cols = [fpi, fti, fci];
    // The first feature row group's keys are decoded meanwhile (the entity rows are one
    // task; the workers of phase 3 take this group first).
    let (ent, first) = rayon::join(
        || read_entities(entities, cols),
        || -> Result<Vec<KeyBatch>> {
            let mut batches = Vec::new();
            if !group_rows.is_empty() {
                each_key_batch(features, 0, 0, key_cols, cols, sw, |kb| batches.push(kb))?;
            }
            Ok(batches)
        },
    );
    let (ent_ids, ent_times) = ent?;
    let first = std::sync::Mutex::new(Some(first?));
    stats.read_keys_s = sw.seconds() - t;

    // 2. Join: sort the entity rows by (patient, time, row).
    let t = sw.seconds();
    let sorted = sort_entities(&ent_ids, &ent_times)?;
    drop((ent_ids, ent_times));
    stats.sort_s = sw.seconds() - t;
    stats.match_s = stats.sort_s;
    let (table, starts, ent_times) = (&sorted.table, &sorted.starts, &sorted.times);
    let patients = patient_rows(starts, ent_times);
    let spans = spans(starts, ent_times, ttl_us);
    let side = crate::keys::SideTable::new(table, &spans, Span::EMPTY);
    stats.rows = sorted.times.len();
    let n_ent = sorted.times.len();

    // 3. Load and join: decode the key columns of each feature row group a batch at a time,
    // look up each row's patient code and buffer the row in its patient's partition (one
    // worker per thread, each taking the next row group and keeping its own buffers). The
    // phase's time is split between load and join in proportion to the seconds its workers
    // spent on each.
    let t = sw.seconds();
    if stats.feature_rows as u64 > ROW_MASK {
        return Err(Error::invalid(
            features.display().to_string(),
            format!(
                "{} feature rows: at most 2^{ROW_BITS} are joined",
                stats.feature_rows
            ),
        ));
    }
    let n_codes = starts.len() - 1;
    let shift = Partitions::shift_for(n_codes, n_ent, partition_rows);
    let next_group = AtomicUsize::new(0);
    let workers = rayon::current_num_threads().clamp(1, group_rows.len().max(1));
    let per_worker: Vec<(Partitions, f64, f64)> = (0..workers)
        .into_par_iter()
        .map(|_| -> Result<(Partitions, f64, f64)> {
            let mut parts = Partitions::new(n_codes, shift);
            let mut found = Vec::new();
            let (mut decode_s, mut record_s) = (0.0, 0.0);
            loop {
                let g = next_group.fetch_add(1, Ordering::Relaxed);
                if g >= group_rows.len() {
                    return Ok((parts, decode_s, record_s));
                }
                let mut record = |kb: KeyBatch| {
                    side.get_many(&kb.patients, Span::EMPTY, &mut found);
                    parts.record(&found, &kb.events, &kb.created, kb.row);
                };
                if g == 0 {
                    let batches = first
                        .lock()
                        .map_err(|_| Error::Internal("key batch lock poisoned".into()))?
                        .take()
                        .unwrap_or_default();
                    let t = sw.seconds();
                    batches.into_iter().for_each(&mut record);
                    record_s += sw.seconds() - t;
                    continue;
                }
                let (d, r) =
                    each_key_batch(features, g, group_start[g], key_cols, cols, sw, &mut record)?;
                decode_s += d;
                record_s += r;
            }
        })
        .collect::<Result<_>>()?;
    let (keys_load_s, keys_join_s) = split_phase(
        sw.seconds() - t,
        per_worker.iter().map(|w| w.1).sum(),
        per_worker.iter().map(|w| w.2).sum(),
    );
    stats.read_keys_s += keys_load_s;

    // 4. Join: each partition's candidates and sweep, in parallel (a partition's entity rows
    // are its own, so no merge).
    let t = sw.seconds();
    let buffers: Vec<Partitions> = per_worker.into_iter().map(|w| w.0).collect();
    stats.buffered = buffers
        .iter()
        .flat_map(|b| b.parts.iter().flatten())
        .map(Vec::len)
        .sum();
    let mut winner: Vec<Option<u64>> = vec![None; n_ent];
    let mut outs = Vec::with_capacity(Partitions::count(n_codes, shift));
    let mut rest = winner.as_mut_slice();
    for p in 0..Partitions::count(n_codes, shift) {
        let c0 = (p << shift).min(n_codes);
        let c1 = ((p + 1) << shift).min(n_codes);
        let (out, tail) = rest.split_at_mut((starts[c1] - starts[c0]) as usize);
        outs.push((p, &patients[c0..c1], out));
        rest = tail;
    }
    outs.into_par_iter()
        .for_each_init(Vec::new, |best, (p, patients, out)| {
            let recs = buffers
                .iter()
                .flat_map(|b| b.parts[p].iter().flatten().copied());
            join_partition(recs, patients, ent_times, ttl_us, best, out);
        });
    drop(buffers);
    stats.matched = winner.iter().flatten().count();
    // Per row group: the winning rows (local, ascending, distinct).
    let won = RowSet::new(stats.feature_rows as u64, winner.iter().flatten().copied());
    let wanted: Vec<Vec<u64>> = (0..group_rows.len())
        .into_par_iter()
        .map(|g| won.members(group_start[g], group_start[g] + group_rows[g]))
        .collect();
    stats.match_s += keys_join_s + sw.seconds() - t;

    // 5. Load: the feature columns of the row groups holding winners, in parallel, each
    // decoded batch cut down to its winners at once (join work inside a load phase: the
    // phase's time is split between load and join in proportion to the seconds its tasks
    // spent on each).
    let t = sw.seconds();
    let value_cols: Vec<usize> = (0..fschema.fields().len())
        .filter(|i| !key_cols.contains(i))
        .collect();
    let value_schema = Arc::new(Schema::new(
        value_cols
            .iter()
            .map(|&i| fschema.field(i).clone())
            .collect::<Vec<Field>>(),
    ));
    let parts: Vec<Winners> = wanted
        .par_iter()
        .enumerate()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(g, rows)| read_winners(features, g, group_rows[g], rows, &value_cols, sw))
        .collect::<Result<_>>()?;
    let (values_load_s, values_join_s) = split_phase(
        sw.seconds() - t,
        parts.iter().map(|p| p.decode_s).sum(),
        parts.iter().map(|p| p.take_s).sum(),
    );
    stats.read_values_s = values_load_s;

    // 6. Join: the winners' values, in row group order, then each output row's.
    let t = sw.seconds();
    // The entity rows' own columns in one task, the winners' values in others.
    let key_columns = || -> Vec<ArrayRef> {
        let patient = |c: usize| table.key(c as u32);
        let bytes: usize = starts
            .windows(2)
            .enumerate()
            .map(|(c, w)| (w[1] - w[0]) as usize * patient(c).len())
            .sum();
        let mut b = arrow::array::StringBuilder::with_capacity(n_ent, bytes);
        for (c, w) in starts.windows(2).enumerate() {
            for _ in w[0]..w[1] {
                b.append_value(patient(c));
            }
        }
        vec![
            Arc::new(Int64Array::from_iter_values(
                sorted.row_of.iter().map(|&i| i64::from(i)),
            )),
            Arc::new(b.finish()),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(ent_times.iter().copied())
                    .with_timezone("UTC"),
            ),
        ]
    };
    let value_columns = || -> Result<Vec<ArrayRef>> {
        let values =
            arrow::compute::concat_batches(&value_schema, parts.iter().flat_map(|p| &p.batches))?;
        // Position of each winning row in `values`: its rank among the winning rows.
        let take_idx: UInt32Array = winner
            .par_iter()
            .map(|w| w.map(|w| won.rank(w)))
            .collect::<Vec<Option<u32>>>()
            .into();
        Ok(values
            .columns()
            .par_iter()
            .map(|c| arrow::compute::take(c.as_ref(), &take_idx, None))
            .collect::<std::result::Result<Vec<_>, _>>()?)
    };
    let (mut columns, taken) = rayon::join(key_columns, value_columns);
    drop(parts);
    let taken = taken?;
    columns.extend(taken);
    let mut fields = vec![
        Field::new("row_id", DataType::Int64, false),
        Field::new(&cols.patient, DataType::Utf8, false),
        Field::new(
            &cols.time,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    fields.extend(
        value_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let out = RecordBatch::try_new(schema, columns)?;
    stats.assemble_s = sw.seconds() - t + values_join_s;
    Ok((out, stats))
}

#[cfg(test)]
mod tests;
