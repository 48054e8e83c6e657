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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array,
};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::keys::{sort_prefix, KeyTable};
use crate::pit;

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

/// A candidate: (event time, created time, feature row). Compared lexicographically.
type Cand = (i64, i64, u64);
const NONE: Cand = (i64::MIN, i64::MIN, u64::MAX);

/// Entity rows sorted by (patient, time, row), with each patient's range.
struct SortedEntities {
    /// Patient id → code = the id's rank in byte order.
    table: KeyTable,
    /// Patient code c's rows are `starts[c]..starts[c + 1]` of the sorted order.
    starts: Vec<u32>,
    /// Sorted order: the row's position in the input.
    row_of: Vec<u32>,
    /// Sorted order: the row's time.
    times: Vec<i64>,
}

/// Sorts the entity rows (patient ids in `parts`, one after the other; `times`) by
/// (patient id in byte order, time, row), in parallel. Rows are compared by the id's
/// [`sort_prefix`] first, by the whole id only when those tie. The distinct ids then go into
/// the key table in sorted order, so that a patient's code is its rank.
fn sort_entities(parts: &[StringArray], times: &[i64]) -> Result<SortedEntities> {
    let n = times.len();
    if n >= u32::MAX as usize {
        return Err(Error::invalid("entity rows", "2^32 rows or more"));
    }
    // (id prefix, time, row, id)
    let mut order: Vec<(u64, i64, u32, &str)> = Vec::with_capacity(n);
    for p in parts {
        let row0 = order.len();
        order.par_extend((0..p.len()).into_par_iter().map(|i| {
            let id = p.value(i);
            let row = row0 + i;
            (sort_prefix(id.as_bytes()), times[row], row as u32, id)
        }));
    }
    // Ids with equal prefixes: when one is at most 8 bytes long, it is a prefix of the other
    // (zero padding), so the shorter is the smaller; otherwise their tails decide.
    let id_cmp = |a: &(u64, i64, u32, &str), b: &(u64, i64, u32, &str)| {
        let (a, b) = (a.3.as_bytes(), b.3.as_bytes());
        if a.len() <= 8 || b.len() <= 8 {
            a.len().cmp(&b.len())
        } else {
            a[8..].cmp(&b[8..])
        }
    };
    order.par_sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| id_cmp(a, b))
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
    });
    let mut ids: Vec<&str> = Vec::new();
    let mut starts = Vec::new();
    for (i, row) in order.iter().enumerate() {
        let new_id = i == 0 || order[i - 1].0 != row.0 || id_cmp(&order[i - 1], row).is_ne();
        if new_id {
            ids.push(row.3);
            starts.push(i as u32);
        }
    }
    starts.push(n as u32);
    // The key table while the sorted columns are taken out.
    let (table, (row_of, times)) = rayon::join(
        || KeyTable::build(&ids),
        || {
            rayon::join(
                || order.par_iter().map(|r| r.2).collect(),
                || order.par_iter().map(|r| r.1).collect(),
            )
        },
    );
    Ok(SortedEntities {
        table,
        starts,
        row_of,
        times,
    })
}

/// Reads the entity rows' patient ids (one array per batch) and times.
fn read_entities(entities: &Path, cols: &AsofColumns) -> Result<(Vec<StringArray>, Vec<i64>)> {
    let eb = open_builder(entities)?;
    let eschema = eb.schema().clone();
    let pi = column_index(&eschema, &cols.patient, entities)?;
    let ti = column_index(&eschema, &cols.time, entities)?;
    let mask = ProjectionMask::roots(eb.parquet_schema(), [pi, ti]);
    let reader = eb
        .with_projection(mask)
        .with_batch_size(1 << 20)
        .build()
        .map_err(parquet_err(entities))?;
    let mut pid_parts: Vec<StringArray> = Vec::new();
    let mut times: Vec<i64> = Vec::new();
    for b in reader {
        let b = b?;
        let row0 = times.len() as u64;
        pid_parts.push(patient_ids(
            projected(&b, &cols.patient)?,
            entities,
            &cols.patient,
            row0,
        )?);
        times.extend_from_slice(&micros(
            projected(&b, &cols.time)?,
            entities,
            &cols.time,
            row0,
        )?);
    }
    Ok((pid_parts, times))
}

fn parquet_err(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::Parquet {
        path: path.to_path_buf(),
        source: e,
    }
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(f).map_err(parquet_err(path))
}

fn column_index(schema: &Schema, name: &str, path: &Path) -> Result<usize> {
    schema.index_of(name).map_err(|_| Error::BadInput {
        location: path.display().to_string(),
        field: name.to_string(),
        reason: format!(
            "no such column (columns: {})",
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// A timestamp column as microseconds (UTC), refusing nulls; the column's own buffer when
/// it is in microseconds already (no copy).
fn micros(col: &ArrayRef, path: &Path, field: &str, row0: u64) -> Result<ScalarBuffer<i64>> {
    let us = match col.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => col.clone(),
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => arrow::compute::cast(
            col,
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )?,
        other => {
            return Err(Error::BadInput {
                location: path.display().to_string(),
                field: field.to_string(),
                reason: format!("type {other} is not a timestamp"),
            })
        }
    };
    let us = us.as_primitive::<TimestampMicrosecondType>();
    refuse_nulls(us, path, field, row0)?;
    Ok(us.values().clone())
}

/// An error naming the file row of the first null of `col` (whose first row is file row
/// `row0`), if it has one.
fn refuse_nulls(col: &dyn Array, path: &Path, field: &str, row0: u64) -> Result<()> {
    if col.null_count() == 0 {
        return Ok(());
    }
    let i = (0..col.len()).find(|&i| col.is_null(i)).unwrap_or(0);
    Err(Error::BadInput {
        location: format!("{} row {}", path.display(), row0 + i as u64),
        field: field.to_string(),
        reason: "null".into(),
    })
}

/// A column of a batch read with a projection that includes it.
fn projected<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("projection lost column {name}")))
}

/// A patient id column as text; `row0` is the file row of its first row (for the error
/// naming a null id).
fn patient_ids(col: &ArrayRef, path: &Path, field: &str, row0: u64) -> Result<StringArray> {
    refuse_nulls(col.as_ref(), path, field, row0)?;
    let s = arrow::compute::cast(col, &DataType::Utf8).map_err(|e| Error::BadInput {
        location: path.display().to_string(),
        field: field.to_string(),
        reason: format!("cannot be read as text: {e}"),
    })?;
    Ok(s.as_string::<i32>().clone())
}

/// A patient's entity rows in the sorted order, with the time of the first: what recording a
/// candidate needs of the patient in one load.
#[derive(Debug, Clone, Copy)]
struct PatientRows {
    start: u32,
    end: u32,
    first_time: i64,
}

/// Each patient's [`PatientRows`], by code, from the starts of their ranges and the sorted
/// times.
fn patient_rows(starts: &[u32], times: &[i64]) -> Vec<PatientRows> {
    starts
        .windows(2)
        .map(|w| PatientRows {
            start: w[0],
            end: w[1],
            first_time: times[w[0] as usize],
        })
        .collect()
}

/// The event times of the feature rows that can win at a patient's entity rows: after the
/// first row's time less the TTL (an older row is out of the TTL at every row, so it gives no
/// match whether it is recorded or not) and at most the last row's time (a later row is a
/// candidate at no row). Rows outside are dropped before they are buffered.
#[derive(Debug, Clone, Copy)]
struct Span {
    lo: i64,
    hi: i64,
}

impl Span {
    /// Whether `ev` is in the span (without a branch).
    fn holds(self, ev: i64) -> bool {
        (self.lo <= ev) & (ev <= self.hi)
    }

    /// The span of an unknown patient: holds no time.
    const EMPTY: Span = Span {
        lo: i64::MAX,
        hi: i64::MIN,
    };
}

/// Each patient's [`Span`], by code.
fn spans(starts: &[u32], times: &[i64], ttl_us: Option<i64>) -> Vec<Span> {
    starts
        .windows(2)
        .map(|w| {
            let first = times[w[0] as usize];
            let lo = match ttl_us {
                // ev > first - ttl, i.e. ev >= first - ttl + 1 (all of them where
                // first - ttl is below the range).
                Some(ttl) => first
                    .checked_sub(ttl)
                    .map_or(i64::MIN, |x| x.saturating_add(1)),
                None => i64::MIN,
            };
            Span {
                lo,
                hi: times[w[1] as usize - 1],
            }
        })
        .collect()
}

/// Bits of a [`Rec`]'s `tag` that hold the feature row; the patient's code within its
/// partition is above them.
const ROW_BITS: u32 = 40;
const ROW_MASK: u64 = (1 << ROW_BITS) - 1;
/// Entity rows a partition aims at: its candidates, rows and times then fit in a core's L2
/// cache.
const PARTITION_ROWS: usize = 4096;
/// Records per chunk of a partition's buffer (so a buffer overshoots by less than a chunk).
const CHUNK: usize = 2048;

/// A feature row of a known patient, recorded by [`Partitions::record`]: its event and
/// created times, and its patient's code within its partition above its file row.
#[derive(Debug, Clone, Copy)]
struct Rec {
    ev: i64,
    cr: i64,
    tag: u64,
}

/// The patient codes split into ranges of `2^shift` codes (partitions), whose entity rows are
/// contiguous in the sorted order since codes are ranks; one worker's feature rows, each
/// buffered in its patient's partition.
struct Partitions {
    shift: u32,
    parts: Vec<Vec<Vec<Rec>>>,
    /// Scratch: the rows of a batch that are kept.
    kept: Vec<u32>,
}

impl Partitions {
    /// The partition width for `n_codes` patients with `n_rows` entity rows: a power of two
    /// near `partition_rows` rows (on average) and at most `2^(64 - ROW_BITS)` codes.
    fn shift_for(n_codes: usize, n_rows: usize, partition_rows: usize) -> u32 {
        let codes = (partition_rows as u128 * n_codes as u128 / n_rows.max(1) as u128).max(1);
        (127 - codes.leading_zeros()).min(64 - ROW_BITS)
    }

    /// Number of partitions of `n_codes` codes at `shift`.
    fn count(n_codes: usize, shift: u32) -> usize {
        (n_codes >> shift) + 1
    }

    fn new(n_codes: usize, shift: u32) -> Partitions {
        Partitions {
            shift,
            parts: (0..Partitions::count(n_codes, shift))
                .map(|_| Vec::new())
                .collect(),
            kept: Vec::new(),
        }
    }

    /// Buffers the feature rows `row0..` (patient code and span in `found`, event and
    /// created times) whose event time is in their patient's span. Which rows are kept is
    /// found first without branches (half go either way, at random), then those are buffered.
    fn record(&mut self, found: &[(u32, Span)], ev: &[i64], cr: &[i64], row0: u64) {
        self.kept.clear();
        self.kept.resize(found.len(), 0);
        let mut n = 0;
        for (i, (&(_, span), &e)) in found.iter().zip(ev).enumerate() {
            self.kept[n] = i as u32;
            n += usize::from(span.holds(e));
        }
        let low = (1u32 << self.shift) - 1;
        for &i in &self.kept[..n] {
            let i = i as usize;
            let c = found[i].0;
            let chunks = &mut self.parts[(c >> self.shift) as usize];
            if chunks.last().is_none_or(|k| k.len() == CHUNK) {
                chunks.push(Vec::with_capacity(CHUNK));
            }
            if let Some(k) = chunks.last_mut() {
                k.push(Rec {
                    ev: ev[i],
                    cr: cr[i],
                    tag: (u64::from(c & low) << ROW_BITS) | (row0 + i as u64),
                });
            }
        }
    }
}

/// One partition's join: records each of its feature rows (from every worker's buffer) as a
/// candidate at the first entity row of its patient at or after its event time, keeping the
/// greatest `(event, created, row)` there; then sweeps each patient's rows in time order,
/// carrying the greatest candidate forward, and writes each row's winner (checked against
/// the TTL) to `out`, the winners of the partition's rows. `patients` are the partition's
/// own (a row's code within its partition indexes them); `best` is scratch space.
fn join_partition(
    recs: impl Iterator<Item = Rec>,
    patients: &[PatientRows],
    times: &[i64],
    ttl_us: Option<i64>,
    best: &mut Vec<Cand>,
    out: &mut [Option<u64>],
) {
    let r0 = patients.first().map_or(0, |p| p.start as usize);
    best.clear();
    best.resize(out.len(), NONE);
    for rec in recs {
        let PatientRows {
            start,
            end,
            first_time,
        } = patients[(rec.tag >> ROW_BITS) as usize];
        let at = if rec.ev <= first_time {
            start as usize
        } else {
            let rows = &times[start as usize + 1..end as usize];
            start as usize + 1 + rows.partition_point(|&t| t < rec.ev)
        };
        if at < end as usize {
            let c = (rec.ev, rec.cr, rec.tag & ROW_MASK);
            let slot = &mut best[at - r0];
            if c > *slot {
                *slot = c;
            }
        }
    }
    for p in patients {
        let mut run = NONE;
        for k in p.start as usize..p.end as usize {
            if best[k - r0] > run {
                run = best[k - r0];
            }
            let fresh = match ttl_us {
                Some(ttl) => pit::within_ttl(times[k], run.0, ttl),
                None => true,
            };
            out[k - r0] = (run != NONE && fresh).then_some(run.2);
        }
    }
}

/// A set of feature rows, a bit per row, that ranks its members: the winning rows, whose
/// values are decoded and concatenated in row order.
struct RowSet {
    bits: Vec<u64>,
    /// Members in the words before each word.
    before: Vec<u32>,
}

impl RowSet {
    /// The set of `members` (each below `rows`; fewer than 2^32 distinct).
    fn new(rows: u64, members: impl Iterator<Item = u64>) -> RowSet {
        let mut bits = vec![0u64; rows.div_ceil(64) as usize];
        for r in members {
            bits[(r / 64) as usize] |= 1 << (r % 64);
        }
        let mut acc = 0u32;
        let before = bits
            .iter()
            .map(|w| {
                let b = acc;
                acc += w.count_ones();
                b
            })
            .collect();
        RowSet { bits, before }
    }

    /// The members in `lo..hi`, ascending, less `lo`.
    fn members(&self, lo: u64, hi: u64) -> Vec<u64> {
        let mut out = Vec::new();
        if lo >= hi {
            return out;
        }
        for w in lo / 64..=(hi - 1) / 64 {
            let mut word = self.bits[w as usize];
            while word != 0 {
                let r = w * 64 + u64::from(word.trailing_zeros());
                word &= word - 1;
                if (lo..hi).contains(&r) {
                    out.push(r - lo);
                }
            }
        }
        out
    }

    /// The number of members below `row`: a member's position among them.
    fn rank(&self, row: u64) -> u32 {
        let w = (row / 64) as usize;
        self.before[w] + (self.bits[w] & ((1u64 << (row % 64)) - 1)).count_ones()
    }
}

/// Runs `reader` to its end a batch at a time: `decode` turns each batch into what `each`
/// takes, and `each` handles it before the next batch is decoded (so one decoded batch per
/// task is alive, its memory reused by the next). Returns the seconds spent decoding (in the
/// reader and in `decode`) and the seconds in `each`.
fn timed_batches<T>(
    mut reader: ParquetRecordBatchReader,
    mut decode: impl FnMut(RecordBatch) -> Result<T>,
    mut each: impl FnMut(T) -> Result<()>,
) -> Result<(f64, f64)> {
    let (mut decode_s, mut each_s) = (0.0, 0.0);
    loop {
        let t = Instant::now();
        let Some(batch) = reader.next().transpose()? else {
            return Ok((decode_s + t.elapsed().as_secs_f64(), each_s));
        };
        let item = decode(batch)?;
        decode_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        each(item)?;
        each_s += t.elapsed().as_secs_f64();
    }
}

/// Splits the `phase_s` seconds of a phase whose tasks both decoded (`load_s` of their own
/// seconds) and joined (`join_s`) into (load, join) seconds, in proportion.
fn split_phase(phase_s: f64, load_s: f64, join_s: f64) -> (f64, f64) {
    let total = load_s + join_s;
    let join = if total > 0.0 {
        phase_s * join_s / total
    } else {
        0.0
    };
    (phase_s - join, join)
}

/// One decoded batch of a feature row group's key columns.
struct KeyBatch {
    /// The file row of its first row.
    row: u64,
    patients: StringArray,
    events: ScalarBuffer<i64>,
    created: ScalarBuffer<i64>,
}

/// Decodes the key columns (`[patient, event time, created time]` at `key_cols`) of row
/// group `g` of `features`, whose first row is file row `row0`, a batch at a time, and hands
/// each batch to `each` before decoding the next (so that one batch per task is alive, its
/// memory reused by the next). Returns the seconds spent decoding and the seconds in `each`.
fn each_key_batch(
    features: &Path,
    g: usize,
    row0: u64,
    key_cols: [usize; 3],
    cols: &AsofColumns,
    mut each: impl FnMut(KeyBatch),
) -> Result<(f64, f64)> {
    let t = Instant::now();
    let b = open_builder(features)?;
    let mask = ProjectionMask::roots(b.parquet_schema(), key_cols);
    let reader = b
        .with_row_groups(vec![g])
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(parquet_err(features))?;
    let open_s = t.elapsed().as_secs_f64();
    let mut row = row0;
    let decode = |batch: RecordBatch| -> Result<KeyBatch> {
        let patients = patient_ids(
            projected(&batch, &cols.patient)?,
            features,
            &cols.patient,
            row,
        )?;
        let events = micros(projected(&batch, &cols.time)?, features, &cols.time, row)?;
        let created = micros(
            projected(&batch, &cols.created)?,
            features,
            &cols.created,
            row,
        )?;
        let kb = KeyBatch {
            row,
            patients,
            events,
            created,
        };
        row += batch.num_rows() as u64;
        Ok(kb)
    };
    let (decode_s, each_s) = timed_batches(reader, decode, |kb| {
        each(kb);
        Ok(())
    })?;
    Ok((open_s + decode_s, each_s))
}

/// The winners of one row group: their feature columns, and the seconds spent decoding and
/// taking them.
struct Winners {
    batches: Vec<RecordBatch>,
    decode_s: f64,
    take_s: f64,
}

/// Decodes the feature columns `value_cols` of row group `g` of `features` (`group_len`
/// rows) and keeps the winning rows `rows` (local to the group, sorted, distinct), in row
/// order. Where winners are dense, whole pages are decoded a batch at a time and each batch
/// is cut down to its winners at once, so that no more than one decoded batch per task is
/// alive (and its memory is reused by the next). Where they are sparse, a Parquet row
/// selection decodes the winners alone.
fn read_winners(
    features: &Path,
    g: usize,
    group_len: u64,
    rows: &[u64],
    value_cols: &[usize],
) -> Result<Winners> {
    let t = Instant::now();
    let b = open_builder(features)?;
    let mask = ProjectionMask::roots(b.parquet_schema(), value_cols.iter().copied());
    let b = b.with_row_groups(vec![g]).with_projection(mask);
    // Winners denser than one row in DENSE: decoding whole pages and keeping the winners is
    // cheaper than skipping between them (every page is read anyway).
    const DENSE: u64 = 64;
    if rows.len() as u64 * DENSE >= group_len {
        let reader = b
            .with_batch_size(65_536)
            .build()
            .map_err(parquet_err(features))?;
        let open_s = t.elapsed().as_secs_f64();
        let mut out = Vec::new();
        let (mut start, mut k) = (0u64, 0usize);
        let (decode_s, take_s) = timed_batches(reader, Ok, |batch| {
            let end = start + batch.num_rows() as u64;
            let from = k;
            while k < rows.len() && rows[k] < end {
                k += 1;
            }
            let idx =
                UInt32Array::from_iter_values(rows[from..k].iter().map(|&r| (r - start) as u32));
            out.push(arrow::compute::take_record_batch(&batch, &idx)?);
            start = end;
            Ok(())
        })?;
        let decode_s = open_s + decode_s;
        return Ok(Winners {
            batches: out,
            decode_s,
            take_s,
        });
    }
    let mut selectors = Vec::new();
    let mut at = 0u64;
    for &r in rows {
        if r > at {
            selectors.push(RowSelector::skip((r - at) as usize));
        }
        selectors.push(RowSelector::select(1));
        at = r + 1;
    }
    let batches = b
        .with_row_selection(RowSelection::from(selectors))
        .with_batch_size(1 << 20)
        .build()
        .map_err(parquet_err(features))?
        .collect::<std::result::Result<_, _>>()?;
    Ok(Winners {
        batches,
        decode_s: t.elapsed().as_secs_f64(),
        take_s: 0.0,
    })
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
) -> Result<(RecordBatch, AsofStats)> {
    asof_join_in(features, entities, ttl_us, cols, PARTITION_ROWS)
}

/// [`asof_join`] with partitions of about `partition_rows` entity rows.
fn asof_join_in(
    features: &Path,
    entities: &Path,
    ttl_us: Option<i64>,
    cols: &AsofColumns,
    partition_rows: usize,
) -> Result<(RecordBatch, AsofStats)> {
    let mut stats = AsofStats::default();

    // 1. Load: the entity rows.
    let t = Instant::now();
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
                each_key_batch(features, 0, 0, key_cols, cols, |kb| batches.push(kb))?;
            }
            Ok(batches)
        },
    );
    let (ent_ids, ent_times) = ent?;
    let first = std::sync::Mutex::new(Some(first?));
    stats.read_keys_s = t.elapsed().as_secs_f64();

    // 2. Join: sort the entity rows by (patient, time, row).
    let t = Instant::now();
    let sorted = sort_entities(&ent_ids, &ent_times)?;
    drop((ent_ids, ent_times));
    stats.sort_s = t.elapsed().as_secs_f64();
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
    let t = Instant::now();
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
                    let t = Instant::now();
                    batches.into_iter().for_each(&mut record);
                    record_s += t.elapsed().as_secs_f64();
                    continue;
                }
                let (d, r) =
                    each_key_batch(features, g, group_start[g], key_cols, cols, &mut record)?;
                decode_s += d;
                record_s += r;
            }
        })
        .collect::<Result<_>>()?;
    let (keys_load_s, keys_join_s) = split_phase(
        t.elapsed().as_secs_f64(),
        per_worker.iter().map(|w| w.1).sum(),
        per_worker.iter().map(|w| w.2).sum(),
    );
    stats.read_keys_s += keys_load_s;

    // 4. Join: each partition's candidates and sweep, in parallel (a partition's entity rows
    // are its own, so no merge).
    let t = Instant::now();
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
    stats.match_s += keys_join_s + t.elapsed().as_secs_f64();

    // 5. Load: the feature columns of the row groups holding winners, in parallel, each
    // decoded batch cut down to its winners at once (join work inside a load phase: the
    // phase's time is split between load and join in proportion to the seconds its tasks
    // spent on each).
    let t = Instant::now();
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
        .map(|(g, rows)| read_winners(features, g, group_rows[g], rows, &value_cols))
        .collect::<Result<_>>()?;
    let (values_load_s, values_join_s) = split_phase(
        t.elapsed().as_secs_f64(),
        parts.iter().map(|p| p.decode_s).sum(),
        parts.iter().map(|p| p.take_s).sum(),
    );
    stats.read_values_s = values_load_s;

    // 6. Join: the winners' values, in row group order, then each output row's.
    let t = Instant::now();
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
    stats.assemble_s = t.elapsed().as_secs_f64() + values_join_s;
    Ok((out, stats))
}

/// Rows per row group of [`write_parquet`]'s output.
const WRITE_GROUP_ROWS: usize = 1 << 20;

/// Writes a batch to Parquet (snappy), in row groups of up to 2^20 rows whose columns are
/// encoded in parallel (one column per task), then appended in order. Without dictionary
/// encoding: times and values rarely repeat, and the patient ids (sorted, about as many
/// distinct as rows) would overflow the dictionary page and fall back to plain after the cost
/// of building it.
///
/// # Errors
/// I/O and Parquet errors naming the file.
pub fn write_parquet(batch: &RecordBatch, out: &Path) -> Result<()> {
    use parquet::arrow::arrow_writer::compute_leaves;
    let tmp: PathBuf = out.with_extension("parquet.tmp");
    let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_dictionary_enabled(false);
    let err = parquet_err(out);
    let (mut file, factory) =
        parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props.build()))
            .map_err(&err)?
            .into_serialized_writer()
            .map_err(&err)?;
    let schema = batch.schema();
    let n = batch.num_rows();
    // (first row, rows) of each row group; an empty batch still gets one (empty) group.
    let groups: Vec<(usize, usize)> = if n == 0 {
        vec![(0, 0)]
    } else {
        (0..n)
            .step_by(WRITE_GROUP_ROWS)
            .map(|s| (s, WRITE_GROUP_ROWS.min(n - s)))
            .collect()
    };
    for (group, &(start, len)) in groups.iter().enumerate() {
        let part = batch.slice(start, len);
        let writers = factory.create_column_writers(group).map_err(&err)?;
        // One leaf per column: the output's columns are flat.
        let chunks = writers
            .into_par_iter()
            .zip(schema.fields().par_iter().zip(part.columns().par_iter()))
            .map(|(mut w, (field, col))| {
                for leaf in compute_leaves(field, col)? {
                    w.write(&leaf)?;
                }
                w.close()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(&err)?;
        let mut rg = file.next_row_group().map_err(&err)?;
        for c in chunks {
            c.append_to_row_group(&mut rg).map_err(&err)?;
        }
        rg.close().map_err(&err)?;
    }
    file.close().map_err(&err)?;
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    Ok(())
}

/// Peak resident memory of this process so far (VmHWM), in MiB, when the OS tells.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Writes `batch` to `path` in row groups of `group` rows.
    fn write_groups(path: &Path, batch: &RecordBatch, group: usize) {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(group))
            .build();
        let f = std::fs::File::create(path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
    }

    /// The join at any number of partitions, with ids of up to 8 bytes (held whole in a key
    /// table slot) and longer ones in the same file, equals a brute-force scan: the greatest
    /// (event, created, row) with `t - ttl < event <= t`.
    #[test]
    fn the_partitioned_join_equals_a_brute_force_scan() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let id = |k: u32| {
            if k.is_multiple_of(3) {
                format!("patient-{k:04}-with-a-long-id")
            } else {
                format!("p{k}")
            }
        };
        const DAY: i64 = 86_400_000_000;
        let (mut fid, mut ev, mut cr) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..900 {
            // The first 200 rows (two row groups) have short ids only.
            let k = if i < 200 {
                3 * rng.random_range(0..20) + 1
            } else {
                rng.random_range(0..60)
            };
            let e = rng.random_range(0..100) * DAY / 2;
            let c = e + rng.random_range(0..3) * DAY;
            for _ in 0..if rng.random_range(0..8) == 0 { 2 } else { 1 } {
                fid.push(id(k));
                ev.push(e);
                cr.push(c);
            }
        }
        let n_feat = fid.len();
        let feats = RecordBatch::try_from_iter([
            (
                "patient_id",
                Arc::new(StringArray::from(fid.clone())) as ArrayRef,
            ),
            (
                "event_timestamp",
                Arc::new(TimestampMicrosecondArray::from(ev.clone()).with_timezone("UTC")),
            ),
            (
                "created_timestamp",
                Arc::new(TimestampMicrosecondArray::from(cr.clone()).with_timezone("UTC")),
            ),
            (
                "n",
                Arc::new(Int64Array::from_iter_values(0..n_feat as i64)),
            ),
        ])
        .unwrap();
        let (mut eid, mut et) = (Vec::new(), Vec::new());
        for _ in 0..700 {
            let k = rng.random_range(0..66); // 60..66 have no feature rows
            let t = match rng.random_range(0..4) {
                0 => ev[rng.random_range(0..n_feat)],
                1 => ev[rng.random_range(0..n_feat)] + 10 * DAY,
                _ => rng.random_range(-5..60) * DAY,
            };
            eid.push(id(k));
            et.push(t);
        }
        let ents = RecordBatch::try_from_iter([
            (
                "patient_id",
                Arc::new(StringArray::from(eid.clone())) as ArrayRef,
            ),
            (
                "event_timestamp",
                Arc::new(TimestampMicrosecondArray::from(et.clone()).with_timezone("UTC")),
            ),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (fp, ep) = (dir.path().join("f.parquet"), dir.path().join("e.parquet"));
        write_groups(&fp, &feats, 100);
        write_groups(&ep, &ents, 256);
        let mut matched = [0usize; 2];
        for ttl in [Some(10 * DAY), None] {
            for part_rows in [1, 3, 50, 4096] {
                let (out, stats) =
                    asof_join_in(&fp, &ep, ttl, &AsofColumns::default(), part_rows).unwrap();
                assert_eq!(out.num_rows(), eid.len());
                // Buffered: the rows of patients with entity rows, from after their first
                // entity time less the TTL to their last entity time; some are dropped.
                let span = |p: &str| {
                    let ts = (0..eid.len()).filter(|&r| eid[r] == p).map(|r| et[r]);
                    Some((ts.clone().min()?, ts.max()?))
                };
                let known = (0..n_feat).filter(|&f| span(&fid[f]).is_some()).count();
                let can_win = (0..n_feat)
                    .filter(|&f| {
                        span(&fid[f]).is_some_and(|(first, last)| {
                            ev[f] <= last && ttl.is_none_or(|ttl| ev[f] > first - ttl)
                        })
                    })
                    .count();
                assert_eq!(
                    stats.buffered, can_win,
                    "ttl {ttl:?}, part_rows {part_rows}"
                );
                assert!(can_win < known, "{can_win} of {known}: none dropped");
                let rows = out.column(0).as_primitive::<arrow::datatypes::Int64Type>();
                let n = out.column(3).as_primitive::<arrow::datatypes::Int64Type>();
                for k in 0..out.num_rows() {
                    let r = rows.value(k) as usize;
                    let t = et[r];
                    let want = (0..n_feat)
                        .filter(|&f| {
                            fid[f] == eid[r] && ev[f] <= t && ttl.is_none_or(|ttl| ev[f] > t - ttl)
                        })
                        .max_by_key(|&f| (ev[f], cr[f], f));
                    let got = n.is_valid(k).then(|| n.value(k) as usize);
                    assert_eq!(
                        got, want,
                        "entity row {r}, ttl {ttl:?}, part_rows {part_rows}"
                    );
                    matched[usize::from(got.is_some())] += 1;
                }
            }
        }
        // Both outcomes occur, many times.
        assert!(matched[0] > 500 && matched[1] > 500, "{matched:?}");
    }

    #[test]
    fn a_row_set_lists_and_ranks_its_members() {
        let members = [0u64, 3, 63, 64, 65, 127, 128, 200, 200, 1000, 1023];
        let set = RowSet::new(1024, members.iter().copied());
        let distinct: Vec<u64> = std::collections::BTreeSet::from(members)
            .into_iter()
            .collect();
        assert_eq!(set.members(0, 1024), distinct);
        assert_eq!(set.members(64, 129), vec![0, 1, 63, 64]);
        assert_eq!(set.members(4, 63), Vec::<u64>::new());
        assert_eq!(set.members(5, 5), Vec::<u64>::new());
        for (i, &m) in distinct.iter().enumerate() {
            assert_eq!(set.rank(m), i as u32, "rank of {m}");
        }
        assert_eq!(set.rank(1), 1);
        assert_eq!(set.rank(129), 7);
    }

    #[test]
    fn a_mixed_phase_splits_in_proportion_and_adds_up() {
        assert_eq!(split_phase(2.0, 3.0, 1.0), (1.5, 0.5));
        assert_eq!(split_phase(2.0, 0.0, 0.0), (2.0, 0.0));
        let (load, join) = split_phase(1.7, 0.4, 2.2);
        assert!((load + join - 1.7).abs() < 1e-12 && join > load);
    }

    proptest! {
        /// The entity sort equals a plain sort by (id bytes, time, row): ids sharing their
        /// first 8 bytes, longer than 8 bytes, prefixes of one another (with a trailing NUL,
        /// which the zero-padded prefix cannot tell apart), empty; rows split over several
        /// arrays. Codes are ranks, and each patient's range holds its rows.
        #[test]
        fn sort_entities_equals_a_plain_sort(
            rows in proptest::collection::vec(
                ("|p1|p1\u{0}|p12|abcdefgh|abcdefgh\u{0}|abcdefghi|abcdefghj|[a-c]{0,10}", 0i64..4),
                0..200,
            ),
            cut in 0usize..200,
        ) {
            let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
            let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
            let cut = cut.min(ids.len());
            let parts = [
                StringArray::from(ids[..cut].to_vec()),
                StringArray::from(ids[cut..].to_vec()),
            ];
            let sorted = sort_entities(&parts, &times).unwrap();
            let mut want: Vec<usize> = (0..ids.len()).collect();
            want.sort_by(|&a, &b| (ids[a].as_bytes(), times[a], a).cmp(&(ids[b].as_bytes(), times[b], b)));
            let got: Vec<usize> = sorted.row_of.iter().map(|&r| r as usize).collect();
            prop_assert_eq!(&got, &want);
            let want_times: Vec<i64> = want.iter().map(|&r| times[r]).collect();
            prop_assert_eq!(&sorted.times, &want_times);
            let mut distinct: Vec<&str> = ids.clone();
            distinct.sort_unstable();
            distinct.dedup();
            prop_assert_eq!(sorted.table.len(), distinct.len());
            prop_assert_eq!(sorted.starts.len(), distinct.len() + 1);
            for (c, id) in distinct.iter().enumerate() {
                prop_assert_eq!(sorted.table.get(id), Some(c as u32));
                prop_assert_eq!(sorted.table.key(c as u32), *id);
                for k in sorted.starts[c]..sorted.starts[c + 1] {
                    prop_assert_eq!(ids[sorted.row_of[k as usize] as usize], *id);
                }
            }
        }
    }
}
