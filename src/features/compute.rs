//! Materialization in memory: curated rows and a feature set in, timeline rows out.
//!
//! 1. Derived tables are computed (DataFusion). Every table is read in place, batch by
//!    batch: columns are cast once and borrowed, never copied into owned strings.
//! 2. Patient ids are interned once for all tables: a patient is a `u32`, its rank in byte
//!    order of the ids, so "patients in id order" is the order of those numbers.
//! 3. Features that read the same rows (same table, filter, time column and value column,
//!    e.g. the 180- and 365-day counts of admissions) share one event stream. A stream holds
//!    the matching rows as events (event time, `known_at`, `retracted_at`, `source_id`,
//!    value) grouped by patient (a counting sort) and sorted in the tie order: event time,
//!    then `known_at`, then `source_id` (then the rest of the row).
//! 4. Patients are computed in parallel, in fixed chunks: a row is visible on an interval
//!    `[enter, leave)`; a sweep over the interval ends gives every instant where the state
//!    can change, and the state is recomputed from the visible rows there (a bitset over the
//!    patient's events, so "visible rows in tie order" is a scan of its set bits, and sums
//!    and means add in one fixed order).
//! 5. The change points go straight into the timeline's Arrow builders, patients in id
//!    order, features in set order, in batches of `batch_size` rows: the result does not
//!    depend on thread count or chunking.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Float64Array, Float64Builder, Int32Array, Int64Array,
    RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Field, Float64Type, Int32Type, Int64Type, Schema, TimeUnit,
    TimestampMicrosecondType,
};
use rayon::prelude::*;

use super::definition::{Condition, FeatureDef, FeatureKind, FeatureSet, ValueClass, DAY_US};
use super::derived;
use super::score::{self, ClinicalRows, ScoreTables};
use super::timeline::{self, ChangePoint};
use crate::curated::{CuratedTables, Table};
use crate::error::{Error, Result};
use crate::keys::KeyTable;
use crate::pit::{self, Knowledge};

/// Curated rows given to materialization, per table.
#[derive(Clone, Default)]
pub struct Inputs {
    /// The batches of each table (a table without batches has no rows).
    pub tables: BTreeMap<Table, Vec<RecordBatch>>,
    /// Reads `source_id` for the tables whose batches were given without it; `None`: a
    /// table without the column has no source ids (its ties go by the rest of the row).
    pub late_source_ids: Option<Arc<dyn SourceIdReader>>,
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("tables", &self.tables)
            .field("late_source_ids", &self.late_source_ids.is_some())
            .finish()
    }
}

/// Reads the `source_id` column of a curated table whose batches were given without it.
///
/// `source_id` only orders a patient's events that tie on event time and `known_at`, and it
/// is the costliest column to decode (text, distinct on every row). A caller that reads
/// curated rows itself (as [`crate::features::read_parquet_inputs`] does) can leave it out
/// of a table's batches and put a reader in [`Inputs::late_source_ids`]: materialization
/// then calls it for a table only when two events of some patient's stream of that table
/// tie, and the result is the same as with the column given.
pub trait SourceIdReader: Send + Sync {
    /// The `source_id` of every row of `table`'s batches in [`Inputs::tables`], in row order
    /// (batch after batch), as text arrays of any lengths.
    ///
    /// # Errors
    /// Whatever reading the column fails with, naming where.
    fn read(&self, table: Table) -> Result<Vec<ArrayRef>>;
}

impl Inputs {
    /// The batches of in-memory curated tables (for tests and the generator).
    ///
    /// # Errors
    /// [`Error::Arrow`] only if a table does not convert, which would be a bug.
    pub fn from_curated(tables: &CuratedTables) -> Result<Inputs> {
        let mut out = BTreeMap::new();
        for t in Table::ALL {
            out.insert(t, vec![tables.to_batch(t)?]);
        }
        Ok(Inputs {
            tables: out,
            late_source_ids: None,
        })
    }
}

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
    /// (default [`PARTITION_ROWS`]): above it, patients are computed in ranges of their ids
    /// whose rows fit, and the timeline is written as it is computed. The result does not
    /// depend on it.
    pub partition_rows: usize,
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
        }
    }
}

/// A value read from a row, borrowed from the input arrays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Val<'a> {
    None,
    Num(f64),
    Text(&'a str),
    Time(i64),
}

/// One matching row of a feature's table: its times, and where it is (batch, row `i` of
/// its stream's columns) for its source id and value, read only when needed (32 bytes an
/// event; [`Events`] reads them).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Ev {
    pub(crate) e: i64,
    pub(crate) k: i64,
    /// `retracted_at` when `b` has [`Ev::RETRACTED`], else 0.
    x: i64,
    /// The batch, and [`Ev::RETRACTED`] when the row has a `retracted_at`.
    b: u32,
    i: u32,
}

impl Ev {
    /// The bit of `b` telling that `x` holds a `retracted_at`.
    const RETRACTED: u32 = 1 << 31;

    fn new(e: i64, k: i64, x: Option<i64>, batch: usize, i: usize) -> Ev {
        let b = batch as u32;
        debug_assert!(b & Ev::RETRACTED == 0 && batch <= u32::MAX as usize);
        Ev {
            e,
            k,
            x: x.unwrap_or(0),
            b: b | x.map_or(0, |_| Ev::RETRACTED),
            i: i as u32,
        }
    }

    /// When the row was retracted (`None`: it stands).
    pub(crate) fn x(&self) -> Option<i64> {
        (self.b & Ev::RETRACTED != 0).then_some(self.x)
    }

    fn batch(&self) -> usize {
        (self.b & !Ev::RETRACTED) as usize
    }
}

/// Events of one stream with the columns their source ids and values are read from.
#[derive(Clone, Copy)]
pub(crate) struct Events<'s, 'a> {
    pub(crate) evs: &'s [Ev],
    cols: &'a [StreamCols],
}

impl<'a> Events<'_, 'a> {
    const NONE: Events<'static, 'static> = Events {
        evs: &[],
        cols: &[],
    };

    /// The value of `ev` (of this stream).
    pub(crate) fn val(&self, ev: &Ev) -> Val<'a> {
        self.cols[ev.batch()]
            .values
            .as_ref()
            .map_or(Val::None, |v| v.get(ev.i as usize))
    }
}

/// The source ids of a stream's rows, per batch (`None`: the batch has none).
type Sids = [Option<StringArray>];

/// The source id of `ev` ("" when null or absent).
fn sid<'s>(sids: &'s Sids, ev: &Ev) -> &'s str {
    sids.get(ev.batch())
        .and_then(Option::as_ref)
        .and_then(|s| str_at(s, ev.i as usize))
        .unwrap_or("")
}

/// The tie order of a stream's events: event time, `known_at`, `source_id`, then the rest
/// (so the order is total).
fn tie_cmp(events: &Events<'_, '_>, sids: &Sids, a: &Ev, b: &Ev) -> std::cmp::Ordering {
    (a.e, a.k)
        .cmp(&(b.e, b.k))
        .then_with(|| sid(sids, a).cmp(sid(sids, b)))
        .then_with(|| a.x().cmp(&b.x()))
        .then_with(|| val_cmp(&events.val(a), &events.val(b)))
}

fn val_cmp(a: &Val<'_>, b: &Val<'_>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let rank = |v: &Val<'_>| match v {
        Val::None => 0,
        Val::Num(_) => 1,
        Val::Text(_) => 2,
        Val::Time(_) => 3,
    };
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.total_cmp(y),
        (Val::Text(x), Val::Text(y)) => x.cmp(y),
        (Val::Time(x), Val::Time(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)).then(Ordering::Equal),
    }
}

/// No patient (a null `patient_id`).
pub(crate) const NO_PATIENT: u32 = u32::MAX;

/// A column cast to UTF-8 (`None` when the batch has no such column).
pub(crate) fn utf8_array(
    batch: &RecordBatch,
    name: &str,
    feature: &str,
) -> Result<Option<StringArray>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let arr = if col.data_type() == &DataType::Utf8 {
        col.clone()
    } else {
        cast(col, &DataType::Utf8).map_err(|e| {
            Error::invalid(format!("feature {feature}: column {name}"), e.to_string())
        })?
    };
    Ok(Some(arr.as_string::<i32>().clone()))
}

/// A text column as read: plain UTF-8, or dictionary-encoded (as Parquet readers can give
/// low-cardinality columns such as `patient_id` or `code`), read through its keys so that each
/// distinct value is looked at once.
#[derive(Debug, Clone)]
pub(crate) enum TextCol {
    Plain(StringArray),
    Dict(Int32Array, StringArray),
}

/// A text column (`None` when the batch has no such column): a dictionary of 32-bit keys
/// over text stays one, anything else is cast to UTF-8.
pub(crate) fn text_col(batch: &RecordBatch, name: &str, feature: &str) -> Result<Option<TextCol>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    if let Some(d) = col.as_dictionary_opt::<Int32Type>() {
        if let Some(values) = d.values().as_string_opt::<i32>() {
            return Ok(Some(TextCol::Dict(d.keys().clone(), values.clone())));
        }
    }
    Ok(utf8_array(batch, name, feature)?.map(TextCol::Plain))
}

/// A text condition of a feature over one batch's column: per row, or per distinct value of
/// a dictionary.
struct TextFilter {
    col: TextCol,
    cond: Condition,
    /// For a dictionary: whether each distinct value passes.
    by_value: Vec<bool>,
}

impl TextFilter {
    fn new(col: TextCol, cond: Condition) -> TextFilter {
        let by_value = match &col {
            TextCol::Dict(_, values) => (0..values.len())
                .map(|i| str_at(values, i).is_some_and(|v| cond.matches(v)))
                .collect(),
            TextCol::Plain(_) => Vec::new(),
        };
        TextFilter {
            col,
            cond,
            by_value,
        }
    }

    /// Whether row `i` passes (a null never does).
    fn holds(&self, i: usize) -> bool {
        match &self.col {
            TextCol::Plain(a) => str_at(a, i).is_some_and(|v| self.cond.matches(v)),
            TextCol::Dict(k, _) => {
                !k.is_null(i)
                    && self
                        .by_value
                        .get(k.value(i) as usize)
                        .copied()
                        .unwrap_or(false)
            }
        }
    }
}

/// A timestamp column cast to microseconds, UTC (`None` when the batch has no such column).
pub(crate) fn ts_array(
    batch: &RecordBatch,
    name: &str,
    feature: &str,
) -> Result<Option<TimestampMicrosecondArray>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let target = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let arr = if col.data_type() == &target {
        col.clone()
    } else {
        cast(col, &target).map_err(|e| {
            Error::invalid(format!("feature {feature}: column {name}"), e.to_string())
        })?
    };
    Ok(Some(arr.as_primitive::<TimestampMicrosecondType>().clone()))
}

/// Value `i` of a string column, `None` when null.
pub(crate) fn str_at(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// Value `i` of a timestamp column, `None` when null.
pub(crate) fn ts_at(a: &TimestampMicrosecondArray, i: usize) -> Option<i64> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// A value column, typed once per batch.
#[derive(Debug, Clone)]
enum ValArray {
    Num(Float64Array),
    /// A duration as integers of its unit, and the unit's count per day.
    Duration(Int64Array, f64),
    Text(StringArray),
    Date(Date32Array),
    Time(TimestampMicrosecondArray),
}

impl ValArray {
    fn read(batch: &RecordBatch, name: &str, feature: &str) -> Result<ValArray> {
        let bad = |e: String| Error::invalid(format!("feature {feature}: column {name}"), e);
        let col = batch
            .column_by_name(name)
            .ok_or_else(|| bad("missing from the table".into()))?;
        let dt = col.data_type().clone();
        Ok(match (ValueClass::of(&dt), &dt) {
            (Some(ValueClass::Num), DataType::Duration(unit)) => {
                let per_day = match unit {
                    TimeUnit::Second => DAY_US as f64 / 1e6,
                    TimeUnit::Millisecond => DAY_US as f64 / 1e3,
                    TimeUnit::Microsecond => DAY_US as f64,
                    TimeUnit::Nanosecond => DAY_US as f64 * 1e3,
                };
                let arr = cast(col, &DataType::Int64).map_err(|e| bad(e.to_string()))?;
                ValArray::Duration(arr.as_primitive::<Int64Type>().clone(), per_day)
            }
            (Some(ValueClass::Num), _) => {
                let arr = cast(col, &DataType::Float64).map_err(|e| bad(e.to_string()))?;
                ValArray::Num(arr.as_primitive::<Float64Type>().clone())
            }
            (Some(ValueClass::Text), _) => ValArray::Text(
                utf8_array(batch, name, feature)?
                    .ok_or_else(|| bad("missing from the table".into()))?,
            ),
            (Some(ValueClass::Time), DataType::Date32) => {
                ValArray::Date(col.as_primitive::<Date32Type>().clone())
            }
            (Some(ValueClass::Time), _) => ValArray::Time(
                ts_array(batch, name, feature)?
                    .ok_or_else(|| bad("missing from the table".into()))?,
            ),
            (None, _) => return Err(bad(format!("type {dt} is not readable as a value"))),
        })
    }

    fn get(&self, i: usize) -> Val<'_> {
        match self {
            ValArray::Num(a) => match a.is_null(i) {
                true => Val::None,
                false => Val::Num(a.value(i)),
            },
            ValArray::Duration(a, per_day) => match a.is_null(i) {
                true => Val::None,
                false => Val::Num(a.value(i) as f64 / per_day),
            },
            ValArray::Text(a) => str_at(a, i).map_or(Val::None, Val::Text),
            ValArray::Date(a) => match a.is_null(i) {
                true => Val::None,
                false => Val::Time(a.value(i) as i64 * DAY_US),
            },
            ValArray::Time(a) => ts_at(a, i).map_or(Val::None, Val::Time),
        }
    }
}

/// The rows of one table a set reads (curated, or a derived table's result), as batches.
struct Source {
    name: String,
    /// Each batch's `patient_id` (`None`: the batch has no such column).
    patients: Vec<Option<TextCol>>,
}

/// The columns one event stream reads from one batch, cast once.
struct StreamCols {
    rows: usize,
    times: TimestampMicrosecondArray,
    known: TimestampMicrosecondArray,
    retracted: Option<TimestampMicrosecondArray>,
    values: Option<ValArray>,
    filters: Vec<TextFilter>,
}

impl StreamCols {
    /// The columns, and the batch's source ids.
    fn read(f: &FeatureDef, batch: &RecordBatch) -> Result<(StreamCols, Option<StringArray>)> {
        let missing = |c: &str| {
            Error::invalid(
                format!("feature {}", f.name),
                format!("table {} has no column {c}", f.table),
            )
        };
        if batch.column_by_name("patient_id").is_none() {
            return Err(missing("patient_id"));
        }
        let times = ts_array(batch, &f.time, &f.name)?.ok_or_else(|| missing(&f.time))?;
        let known = ts_array(batch, "known_at", &f.name)?.ok_or_else(|| missing("known_at"))?;
        let retracted = ts_array(batch, "retracted_at", &f.name)?;
        let sids = utf8_array(batch, "source_id", &f.name)?;
        let values = match &f.column {
            Some(c) => Some(ValArray::read(batch, c, &f.name)?),
            None => None,
        };
        let mut filters = Vec::new();
        for (col, cond) in &f.filter {
            filters.push(TextFilter::new(
                text_col(batch, col, &f.name)?.ok_or_else(|| missing(col))?,
                cond.clone(),
            ));
        }
        let cols = StreamCols {
            rows: batch.num_rows(),
            times,
            known,
            retracted,
            values,
            filters,
        };
        Ok((cols, sids))
    }
}

/// Features reading the same rows share a stream: same table, filter, time and value column.
fn same_rows(a: &FeatureDef, b: &FeatureDef) -> bool {
    a.table == b.table && a.filter == b.filter && a.time == b.time && a.column == b.column
}

/// Everything materialization reads, owned: the tables (derived ones computed), the columns
/// each event stream reads, and the rows of the `score` features.
pub(crate) struct Loaded {
    sources: Vec<Source>,
    /// Per stream: its source (index into `sources`) and its columns per batch.
    streams: Vec<(usize, Vec<StreamCols>)>,
    /// Per stream, per batch: the source ids, read to order ties while the events are
    /// prepared and to digest a patient's events; [`Loaded::release_source_ids`] drops them
    /// (a third of the memory of lab results) once neither is needed.
    sids: Mutex<Vec<Vec<Option<StringArray>>>>,
    /// Per feature of the set: its stream (`None` for `score` features).
    feature_stream: Vec<Option<usize>>,
    score: Option<ScoreTables>,
    /// Per stream: where its source ids come from when its batches came without them and
    /// `late_reader` reads them ([`SourceIdReader`]).
    late_tables: Vec<Option<Late>>,
    late_reader: Option<Arc<dyn SourceIdReader>>,
}

impl Loaded {
    /// Drops the source ids: after [`Prepared::new`], when no digest will be asked for.
    pub(crate) fn release_source_ids(&self) {
        self.sids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Whether stream `s` still lacks source ids its reader can give.
    fn is_late(&self, s: usize, sids: &[Vec<Option<StringArray>>]) -> bool {
        self.late_tables[s].is_some() && sids.get(s).is_some_and(|b| b.iter().all(Option::is_none))
    }

    /// Reads the source ids of the late streams `streams` into `sids`, each table once.
    fn read_late(&self, sids: &mut [Vec<Option<StringArray>>], streams: &[usize]) -> Result<()> {
        let Some(reader) = &self.late_reader else {
            return Ok(());
        };
        let mut by_table: BTreeMap<Table, StringArray> = BTreeMap::new();
        for &s in streams {
            let Some(late) = &self.late_tables[s] else {
                continue;
            };
            let (t, want) = match late {
                Late::Rows(t) => (*t, self.streams[s].1.iter().map(|c| c.rows).sum()),
                Late::Through { table, rows, .. } => (*table, *rows),
            };
            let ids = match by_table.entry(t) {
                std::collections::btree_map::Entry::Occupied(e) => e.get().clone(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(read_ids(reader.as_ref(), t, want)?).clone()
                }
            };
            let what = || format!("source_id of table {}", t.name());
            if ids.len() != want {
                return Err(Error::invalid(
                    what(),
                    format!("read {} rows, the table's batches have {want}", ids.len()),
                ));
            }
            sids[s] = match late {
                Late::Rows(_) => {
                    let mut at = 0;
                    self.streams[s]
                        .1
                        .iter()
                        .map(|c| {
                            at += c.rows;
                            Some(ids.slice(at - c.rows, c.rows))
                        })
                        .collect()
                }
                Late::Through { from, .. } => from
                    .iter()
                    .map(|r| {
                        let taken = arrow::compute::take(&ids, r, None)?;
                        Ok(Some(taken.as_string::<i32>().clone()))
                    })
                    .collect::<Result<_>>()?,
            };
        }
        Ok(())
    }

    /// Reads every late stream's source ids (digests need them all).
    pub(crate) fn read_all_late_source_ids(&self) -> Result<()> {
        let mut sids = self
            .sids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let late: Vec<usize> = (0..sids.len())
            .filter(|&s| self.is_late(s, &sids))
            .collect();
        self.read_late(&mut sids, &late)
    }

    /// Whether feature `fi` reads its values from a text column.
    pub(crate) fn text_valued(&self, fi: usize) -> bool {
        self.feature_stream[fi].is_some_and(|s| {
            self.streams[s]
                .1
                .iter()
                .any(|c| matches!(c.values, Some(ValArray::Text(_))))
        })
    }
}

/// Where a stream's source ids come from when its batches came without them.
#[derive(Debug, Clone)]
enum Late {
    /// A curated table's: the stream's batches are the table's.
    Rows(Table),
    /// A derived table's that passes `source_id` through
    /// ([`derived::SourceIdUse::Through`]): per batch of the stream, the row of `table`
    /// (among its `rows` rows given, in order) each row came from.
    Through {
        table: Table,
        rows: usize,
        from: Vec<Int64Array>,
    },
}

/// Derived tables run on row numbers in place of their input's `source_id`: by name, the
/// [`Late::Through`] of their rows.
type ThroughIds = BTreeMap<String, Late>;

/// The source ids `reader` gives for table `t`, which must be `want` rows.
fn read_ids(reader: &dyn SourceIdReader, t: Table, want: usize) -> Result<StringArray> {
    let what = || format!("source_id of table {}", t.name());
    let arrays = reader.read(t)?;
    let read = arrays.iter().map(|a| a.len()).sum::<usize>();
    if read != want {
        return Err(Error::invalid(
            what(),
            format!("read {read} rows, the table's batches have {want}"),
        ));
    }
    let all = match arrays.as_slice() {
        [one] => one.clone(),
        _ => {
            let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            arrow::compute::concat(&refs)?
        }
    };
    let all = match all.data_type() {
        DataType::Utf8 => all,
        _ => cast(&all, &DataType::Utf8).map_err(|e| Error::invalid(what(), e.to_string()))?,
    };
    Ok(all.as_string::<i32>().clone())
}

/// `batches` with a `source_id` column added: `ids` (cut into the batches) or, when `None`,
/// each row's number among all of them.
fn with_source_ids(batches: &[RecordBatch], ids: Option<&StringArray>) -> Result<Vec<RecordBatch>> {
    let mut at = 0;
    batches
        .iter()
        .map(|b| {
            let n = b.num_rows();
            let col: ArrayRef = match ids {
                Some(ids) => Arc::new(ids.slice(at, n)),
                None => Arc::new(Int64Array::from_iter_values(at as i64..(at + n) as i64)),
            };
            at += n;
            let mut fields: Vec<Field> =
                b.schema().fields().iter().map(|f| (**f).clone()).collect();
            fields.push(Field::new("source_id", col.data_type().clone(), true));
            let mut cols = b.columns().to_vec();
            cols.push(col);
            Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
        })
        .collect()
}

/// The result of each derived table of a set, by name.
pub(crate) type DerivedTables = BTreeMap<String, Vec<RecordBatch>>;

/// Runs the derived queries of `set` over `inputs`.
///
/// An input table given without `source_id` ([`Inputs::late_source_ids`]) is given to a
/// query that passes the column through ([`derived::SourceIdUse::Through`]) with row numbers
/// in its place: they are taken out of the result, to look the ids up only if ties need them
/// ([`Late::Through`]). A query that uses it otherwise gets the ids, read now.
async fn derived_tables(set: &FeatureSet, inputs: &Inputs) -> Result<(DerivedTables, ThroughIds)> {
    let mut out = DerivedTables::new();
    let mut through = ThroughIds::new();
    for d in &set.derived {
        let what = || format!("derived table {}", d.name);
        let q = set
            .derived_query(d)
            .map_err(|r| Error::invalid(what(), r))?;
        let using = derived::parse(&d.sql)
            .map(|q| derived::source_id_use(&q))
            .map_err(|r| Error::invalid(what(), r))?;
        let mut tables = BTreeMap::new();
        let mut numbered = None;
        for t in &q.tables {
            let mut batches = inputs.tables.get(t).cloned().unwrap_or_default();
            let lacks = !batches.is_empty()
                && batches
                    .iter()
                    .all(|b| b.column_by_name("source_id").is_none());
            if let (true, Some(reader)) = (lacks, &inputs.late_source_ids) {
                let rows = batches.iter().map(RecordBatch::num_rows).sum();
                match using {
                    derived::SourceIdUse::None => {}
                    derived::SourceIdUse::Through => {
                        batches = with_source_ids(&batches, None)?;
                        numbered = Some((*t, rows));
                    }
                    derived::SourceIdUse::Other => {
                        let ids = read_ids(reader.as_ref(), *t, rows)?;
                        batches = with_source_ids(&batches, Some(&ids))?;
                    }
                }
            }
            tables.insert(*t, batches);
        }
        let mut batch = derived::run(&d.name, &q, &tables).await?;
        if let Some((table, rows)) = numbered {
            if let Ok(i) = batch.schema().index_of("source_id") {
                let from = batch.remove_column(i);
                let from = from
                    .as_primitive_opt::<Int64Type>()
                    .cloned()
                    .ok_or_else(|| {
                        Error::Internal(format!("{}: row numbers in place of source_id", what()))
                    })?;
                through.insert(
                    d.name.clone(),
                    Late::Through {
                        table,
                        rows,
                        from: vec![from],
                    },
                );
            }
        }
        out.insert(d.name.clone(), vec![batch]);
    }
    Ok((out, through))
}

impl Loaded {
    /// Loads `inputs`; the derived tables are `derived` where given, else computed here.
    pub(crate) async fn load(
        set: &FeatureSet,
        inputs: &Inputs,
        derived: Option<&DerivedTables>,
    ) -> Result<Loaded> {
        let mut sources = Vec::new();
        for t in set.curated_tables() {
            sources.push((
                t.name().to_string(),
                inputs.tables.get(&t).cloned().unwrap_or_default(),
            ));
        }
        // Sources below this are curated tables, the rest derived.
        let curated = sources.len();
        let computed;
        let mut through = ThroughIds::new();
        let derived = match derived {
            Some(d) => d,
            None => {
                let (tables, ids) = derived_tables(set, inputs).await?;
                (computed, through) = (tables, ids);
                &computed
            }
        };
        for d in &set.derived {
            let batches = derived.get(&d.name).cloned().ok_or_else(|| {
                Error::Internal(format!("derived table {} was not computed", d.name))
            })?;
            sources.push((d.name.clone(), batches));
        }
        let sources: Vec<(Source, Vec<RecordBatch>)> = sources
            .into_iter()
            .map(|(name, batches)| {
                let patients = batches
                    .iter()
                    .map(|b| text_col(b, "patient_id", &format!("table {name}")))
                    .collect::<Result<Vec<_>>>()?;
                Ok((
                    Source {
                        name: name.clone(),
                        patients,
                    },
                    batches,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // The batches are read here only: what the streams need is cloned out of them, and
        // the columns no stream reads go with them.
        let (sources, batches): (Vec<Source>, Vec<Vec<RecordBatch>>) = sources.into_iter().unzip();
        let mut firsts: Vec<&FeatureDef> = Vec::new();
        let mut feature_stream = Vec::new();
        for f in &set.features {
            if f.kind == FeatureKind::Score {
                feature_stream.push(None);
                continue;
            }
            let i = match firsts.iter().position(|g| same_rows(g, f)) {
                Some(i) => i,
                None => {
                    firsts.push(f);
                    firsts.len() - 1
                }
            };
            feature_stream.push(Some(i));
        }
        let mut streams = Vec::new();
        let mut sids = Vec::new();
        let mut late_tables = Vec::new();
        for f in firsts {
            let si = sources
                .iter()
                .position(|s| s.name == f.table)
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "table {} of feature {} was not loaded",
                        f.table, f.name
                    ))
                })?;
            let (cols, ids): (Vec<StreamCols>, Vec<Option<StringArray>>) = batches[si]
                .iter()
                .map(|b| StreamCols::read(f, b))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .unzip();
            // A curated table given without `source_id`, with a reader for it; or a derived
            // table run on row numbers in its place.
            let late = match Table::from_name(&f.table) {
                Some(t)
                    if inputs.late_source_ids.is_some()
                        && si < curated
                        && !batches[si].is_empty()
                        && batches[si]
                            .iter()
                            .all(|b| b.column_by_name("source_id").is_none()) =>
                {
                    Some(Late::Rows(t))
                }
                _ => through.get(&f.table).cloned(),
            };
            late_tables.push(late);
            streams.push((si, cols));
            sids.push(ids);
        }
        let score = if set.features.iter().any(|f| f.kind == FeatureKind::Score) {
            Some(ScoreTables::read(inputs)?)
        } else {
            None
        };
        Ok(Loaded {
            sources,
            streams,
            sids: Mutex::new(sids),
            feature_stream,
            score,
            late_tables,
            late_reader: inputs.late_source_ids.clone(),
        })
    }
}

/// Patient ids to `u32`s, first seen first; [`Interner::finish`] renumbers them in id order.
#[derive(Default)]
pub(crate) struct Interner<'a> {
    table: KeyTable,
    /// By provisional id, borrowed from the input arrays.
    names: Vec<&'a str>,
    /// The last dictionary interned and its values' ids: a Parquet reader gives every batch
    /// of a row group the row group's whole dictionary, so consecutive batches share it.
    last_dict: Option<(&'a StringArray, Arc<Vec<u32>>)>,
}

/// A patient column's provisional ids ([`Interner::interned`]), made final by
/// [`Interned::ranks`].
pub(crate) enum Interned<'a> {
    /// Every row's.
    Rows(Vec<u32>),
    /// A dictionary's keys and the ids of its values.
    Dict(&'a Int32Array, Arc<Vec<u32>>),
}

impl Interned<'_> {
    /// Every row's patient: the rank of its id ([`NO_PATIENT`] for a null).
    pub(crate) fn ranks(self, rank: &[u32]) -> Vec<u32> {
        let of = |id: u32| match id {
            NO_PATIENT => NO_PATIENT,
            id => rank[id as usize],
        };
        match self {
            Interned::Rows(mut ids) => {
                ids.iter_mut().for_each(|id| *id = of(*id));
                ids
            }
            Interned::Dict(keys, by_value) => {
                let final_ids: Vec<u32> = by_value.iter().map(|&id| of(id)).collect();
                let at = |k: i32| final_ids.get(k as usize).copied().unwrap_or(NO_PATIENT);
                match keys.nulls() {
                    None => keys.values().iter().map(|&k| at(k)).collect(),
                    Some(_) => keys.iter().map(|k| k.map_or(NO_PATIENT, at)).collect(),
                }
            }
        }
    }
}

impl<'a> Interner<'a> {
    /// Interns a patient column: of a dictionary, each distinct id once, and the rows are
    /// left to [`Interned::ranks`] (in parallel, once every id is known).
    pub(crate) fn interned(&mut self, patients: &'a TextCol) -> Interned<'a> {
        match patients {
            TextCol::Plain(a) => Interned::Rows(self.ids(a)),
            TextCol::Dict(keys, values) => {
                let by_value = match self.last_dict.take() {
                    Some((last, ids)) if last.to_data().ptr_eq(&values.to_data()) => ids,
                    _ => Arc::new(self.ids(values)),
                };
                self.last_dict = Some((values, by_value.clone()));
                Interned::Dict(keys, by_value)
            }
        }
    }

    /// The (provisional) id of every row of `patients` ([`NO_PATIENT`] for a null).
    pub(crate) fn ids(&mut self, patients: &'a StringArray) -> Vec<u32> {
        let mut out = Vec::with_capacity(patients.len());
        let mut last: Option<(&'a str, u32)> = None;
        for i in 0..patients.len() {
            let Some(p) = str_at(patients, i) else {
                out.push(NO_PATIENT);
                continue;
            };
            let id = match last {
                Some((lp, lid)) if lp == p => lid,
                _ => {
                    let id = self.table.insert(p);
                    if id as usize == self.names.len() {
                        self.names.push(p);
                    }
                    id
                }
            };
            last = Some((p, id));
            out.push(id);
        }
        out
    }

    /// The ids sorted (byte order), the rank of each provisional id, and the table of
    /// provisional ids.
    fn finish(self) -> (Vec<&'a str>, Vec<u32>, KeyTable) {
        let rank = self.table.ranks();
        let mut names = vec![""; rank.len()];
        for (i, &r) in rank.iter().enumerate() {
            names[r as usize] = self.names[i];
        }
        (names, rank, self.table)
    }
}

/// Renumbers provisional ids to ranks, in place.
pub(crate) fn renumber(ids: &mut [u32], rank: &[u32]) {
    for id in ids {
        if *id != NO_PATIENT {
            *id = rank[*id as usize];
        }
    }
}

/// Items grouped by patient: patient `p`'s are `items[offsets[p]..offsets[p + 1]]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grouped<T> {
    pub(crate) offsets: Vec<usize>,
    pub(crate) items: Vec<T>,
}

impl<T: Copy + Default + Send> Grouped<T> {
    /// Groups `(patient, item)` pairs by patient (a stable counting sort).
    pub(crate) fn new(patients: usize, pairs: &[(u32, T)]) -> Grouped<T> {
        let mut offsets = vec![0usize; patients + 1];
        for (p, _) in pairs {
            offsets[*p as usize + 1] += 1;
        }
        for i in 0..patients {
            offsets[i + 1] += offsets[i];
        }
        let mut next = offsets.clone();
        let mut items = vec![T::default(); pairs.len()];
        for (p, item) in pairs {
            let slot = &mut next[*p as usize];
            items[*slot] = *item;
            *slot += 1;
        }
        Grouped { offsets, items }
    }

    /// Groups items `0..keys.len()` by patient `keys[i]` (a stable counting sort; items of
    /// [`NO_PATIENT`] are left out), item `i` being `item(i)`: no list of pairs is built.
    pub(crate) fn by_key(patients: usize, keys: &[u32], item: impl Fn(usize) -> T) -> Grouped<T> {
        let mut offsets = vec![0usize; patients + 1];
        for &p in keys.iter().filter(|&&p| p != NO_PATIENT) {
            offsets[p as usize + 1] += 1;
        }
        for i in 0..patients {
            offsets[i + 1] += offsets[i];
        }
        let mut next = offsets.clone();
        let mut items = vec![T::default(); offsets[patients]];
        for (i, &p) in keys.iter().enumerate().filter(|(_, &p)| p != NO_PATIENT) {
            let slot = &mut next[p as usize];
            items[*slot] = item(i);
            *slot += 1;
        }
        Grouped { offsets, items }
    }

    /// Patient `p`'s items.
    pub(crate) fn of(&self, p: u32) -> &[T] {
        let p = p as usize;
        match (self.offsets.get(p), self.offsets.get(p + 1)) {
            (Some(a), Some(b)) => &self.items[*a..*b],
            _ => &[],
        }
    }

    /// Sorts each patient's items, in parallel.
    pub(crate) fn sort_each(&mut self, cmp: impl Fn(&T, &T) -> std::cmp::Ordering + Sync) {
        let mut slices = Vec::with_capacity(self.offsets.len());
        let mut rest: &mut [T] = &mut self.items;
        for w in self.offsets.windows(2) {
            let (a, b) = std::mem::take(&mut rest).split_at_mut(w[1] - w[0]);
            slices.push(a);
            rest = b;
        }
        slices
            .par_iter_mut()
            .with_min_len(256)
            .for_each(|s| s.sort_unstable_by(&cmp));
    }
}

/// The events of one stream, by patient, each patient's in tie order.
fn stream_events(
    cols: &[StreamCols],
    sids: &Sids,
    pids: &[Vec<u32>],
    patients: usize,
) -> Grouped<Ev> {
    // The matching rows of each batch (a bit a row), then grouped by patient: a counting
    // sort over them, so the events and the bits are the only memory it takes.
    let matches = |sc: &StreamCols, pid: &[u32], i: usize| {
        pid.get(i).is_some_and(|&p| p != NO_PATIENT)
            && !sc.times.is_null(i)
            && !sc.known.is_null(i)
            && sc.filters.iter().all(|f| f.holds(i))
            && !sc
                .values
                .as_ref()
                .is_some_and(|v| matches!(v.get(i), Val::None))
    };
    let hits: Vec<BooleanBuffer> = cols
        .iter()
        .zip(pids)
        .map(|(sc, pid)| BooleanBuffer::collect_bool(sc.rows, |i| matches(sc, pid, i)))
        .collect();
    let mut offsets = vec![0usize; patients + 1];
    for (h, pid) in hits.iter().zip(pids) {
        for i in h.set_indices() {
            offsets[pid[i] as usize + 1] += 1;
        }
    }
    for i in 0..patients {
        offsets[i + 1] += offsets[i];
    }
    let mut next = offsets.clone();
    let mut items = vec![Ev::default(); offsets[patients]];
    for (b, ((sc, pid), h)) in cols.iter().zip(pids).zip(&hits).enumerate() {
        for row in h.set_indices() {
            let slot = &mut next[pid[row] as usize];
            items[*slot] = Ev::new(
                sc.times.value(row),
                sc.known.value(row),
                sc.retracted.as_ref().and_then(|r| ts_at(r, row)),
                b,
                row,
            );
            *slot += 1;
        }
    }
    drop(next);
    let mut g = Grouped { offsets, items };
    let order = Events { evs: &[], cols };
    g.sort_each(|a, b| tie_cmp(&order, sids, a, b));
    g
}

/// Whether two of some patient's events tie on event time and `known_at` (the events of each
/// patient sorted, so tied events are next to each other).
fn has_ties(g: &Grouped<Ev>, patients: usize) -> bool {
    (0..patients as u32)
        .into_par_iter()
        .with_min_len(4096)
        .any(|p| {
            g.of(p)
                .windows(2)
                .any(|w| (w[0].e, w[0].k) == (w[1].e, w[1].k))
        })
}

/// What materialization reads, by patient: the interned ids, every stream's events and the
/// rows of `score` features.
pub(crate) struct Prepared<'a> {
    set: &'a FeatureSet,
    /// Patient ids in byte order; a patient is its index here.
    pub(crate) names: Vec<&'a str>,
    /// Patient id → provisional number; `rank` turns it into the patient's index.
    table: KeyTable,
    rank: Vec<u32>,
    /// Per stream: its columns and its events.
    streams: Vec<(&'a [StreamCols], Grouped<Ev>)>,
    /// The source ids ([`Prepared::digest`]).
    sids: &'a Mutex<Vec<Vec<Option<StringArray>>>>,
    feature_stream: &'a [Option<usize>],
    clinical: Option<score::ByPatient<'a>>,
}

impl<'a> Prepared<'a> {
    /// # Errors
    /// What reading late source ids fails with ([`SourceIdReader`]).
    pub(crate) fn new(set: &'a FeatureSet, loaded: &'a Loaded) -> Result<Prepared<'a>> {
        let mut interner = Interner::default();
        let interned: Vec<Vec<Option<Interned>>> = loaded
            .sources
            .iter()
            .map(|s| {
                s.patients
                    .iter()
                    .map(|p| p.as_ref().map(|p| interner.interned(p)))
                    .collect()
            })
            .collect();
        let mut score_ids = loaded.score.as_ref().map(|s| s.intern(&mut interner));
        let (names, rank, table) = interner.finish();
        let pids: Vec<Vec<Vec<u32>>> = interned
            .into_par_iter()
            .map(|s| {
                s.into_par_iter()
                    .map(|ids| ids.map(|ids| ids.ranks(&rank)).unwrap_or_default())
                    .collect()
            })
            .collect();
        if let Some(ids) = &mut score_ids {
            ids.renumber(&rank);
        }
        let np = names.len();
        let mut sids = loaded
            .sids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut streams: Vec<(&[StreamCols], Grouped<Ev>)> = loaded
            .streams
            .par_iter()
            .zip(sids.par_iter())
            .map(|((si, cols), ids)| (cols.as_slice(), stream_events(cols, ids, &pids[*si], np)))
            .collect();
        // Streams given without source ids whose order needs them: read them, sort again.
        let tied: Vec<usize> = (0..streams.len())
            .filter(|&s| loaded.is_late(s, &sids) && has_ties(&streams[s].1, np))
            .collect();
        loaded.read_late(&mut sids, &tied)?;
        for s in tied {
            let (cols, g) = &mut streams[s];
            let order = Events { evs: &[], cols };
            g.sort_each(|a, b| tie_cmp(&order, &sids[s], a, b));
        }
        drop(sids);
        let clinical = match (&loaded.score, score_ids) {
            (Some(tables), Some(ids)) => Some(tables.group(ids, np)),
            _ => None,
        };
        Ok(Prepared {
            set,
            names,
            table,
            rank,
            streams,
            sids: &loaded.sids,
            feature_stream: &loaded.feature_stream,
            clinical,
        })
    }

    /// Patient `p`'s events of feature `fi` (none for `score` features).
    fn events(&self, p: u32, fi: usize) -> Events<'_, 'a> {
        match self.feature_stream[fi] {
            Some(s) => Events {
                evs: self.streams[s].1.of(p),
                cols: self.streams[s].0,
            },
            None => Events::NONE,
        }
    }

    /// The index of each patient of `ids[offset..offset + out.len()]` into `out`
    /// ([`NO_PATIENT`] for a patient without rows, and for a null).
    pub(crate) fn patients_of(&self, ids: &StringArray, offset: usize, out: &mut [u32]) {
        self.table.get_many(ids, offset, out);
        for p in out {
            *p = self.rank.get(*p as usize).copied().unwrap_or(NO_PATIENT);
        }
    }

    /// Patient `p`'s score rows (only when the set has `score` features and it has some).
    pub(crate) fn clinical(&self, p: u32) -> Option<ClinicalRows> {
        self.clinical.as_ref().and_then(|c| c.rows(p))
    }

    /// Whether patient `p` has an event or a score row (what "computed" counts).
    fn has_rows(&self, p: u32, clinical: Option<&ClinicalRows>) -> bool {
        clinical.is_some() || self.streams.iter().any(|s| !s.1.of(p).is_empty())
    }

    /// The digest of patient `p`'s events and score rows (what incremental materialization
    /// compares). Needs the source ids: not after [`Loaded::release_source_ids`].
    fn digest(&self, p: u32, clinical: Option<&ClinicalRows>) -> [u8; 32] {
        let sids = self
            .sids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut h = blake3::Hasher::new();
        if let Some(c) = clinical {
            c.digest_into(&mut h);
        }
        for fi in 0..self.set.features.len() {
            let events = self.events(p, fi);
            h.update(&(fi as u64).to_le_bytes());
            h.update(&(events.evs.len() as u64).to_le_bytes());
            for ev in events.evs {
                h.update(&ev.e.to_le_bytes());
                h.update(&ev.k.to_le_bytes());
                h.update(&ev.x().map_or([0xff; 9], |x| {
                    let mut b = [0u8; 9];
                    b[1..].copy_from_slice(&x.to_le_bytes());
                    b
                }));
                let stream = self.feature_stream[fi].and_then(|s| sids.get(s));
                let sid = stream.map_or("", |ids| sid(ids, ev));
                h.update(&(sid.len() as u64).to_le_bytes());
                h.update(sid.as_bytes());
                match events.val(ev) {
                    Val::None => h.update(&[0]),
                    Val::Num(x) => h.update(&[1]).update(&x.to_bits().to_le_bytes()),
                    Val::Text(s) => h
                        .update(&[2])
                        .update(&(s.len() as u64).to_le_bytes())
                        .update(s.as_bytes()),
                    Val::Time(t) => h.update(&[3]).update(&t.to_le_bytes()),
                };
            }
        }
        *h.finalize().as_bytes()
    }
}

/// A change point whose text borrows from the inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cp<'a> {
    pub(crate) effective_at: i64,
    pub(crate) value_num: Option<f64>,
    pub(crate) value_text: Option<&'a str>,
    pub(crate) value_time: Option<i64>,
    pub(crate) count: u64,
}

impl<'a> Cp<'a> {
    fn empty(count: u64) -> Cp<'a> {
        Cp {
            effective_at: 0,
            value_num: None,
            value_text: None,
            value_time: None,
            count,
        }
    }

    /// Same state, ignoring when it took effect (floats compared bit for bit).
    fn same_state(&self, other: &Cp<'_>) -> bool {
        self.value_num.map(f64::to_bits) == other.value_num.map(f64::to_bits)
            && self.value_text == other.value_text
            && self.value_time == other.value_time
            && self.count == other.count
    }

    /// The state, as lookups resolve it.
    pub(crate) fn state(&self) -> timeline::StateRef<'a> {
        timeline::StateRef {
            value_num: self.value_num,
            value_text: self.value_text,
            value_time: self.value_time,
            count: self.count,
        }
    }

    fn of(cp: &'a ChangePoint) -> Cp<'a> {
        Cp {
            effective_at: cp.effective_at,
            value_num: cp.value_num,
            value_text: cp.value_text.as_deref(),
            value_time: cp.value_time,
            count: cp.count,
        }
    }
}

/// One timeline row.
#[derive(Debug, Clone, Copy)]
struct OutRow<'a> {
    patient: &'a str,
    feature: &'a str,
    cp: Cp<'a>,
}

/// The interval `[enter, leave)` on which an event is visible (`i64::MAX`: never leaves):
/// the row's [`pit::visibility`], cut at the end of the feature's window; a label's is the
/// horizon before its event, for rows of the final record.
pub(crate) fn interval(f: &FeatureDef, ev: &Ev, knowledge: Knowledge) -> Option<(i64, i64)> {
    let window_end = |e: i64| f.window_us.map(|w| e.saturating_add(w)).unwrap_or(i64::MAX);
    let (a, b) = if f.kind.is_label() {
        // Labels use eventual knowledge: the final record; an event at `a` makes the label 1
        // for t in [a - h, a), i.e. a in (t, t + h].
        pit::visibility(ev.e, ev.k, ev.x(), Knowledge::AsOccurred)?;
        (ev.e.saturating_sub(f.horizon_us.unwrap_or(0)), ev.e)
    } else {
        let v = pit::visibility(ev.e, ev.k, ev.x(), knowledge)?;
        (v.from, v.until.unwrap_or(i64::MAX).min(window_end(ev.e)))
    };
    (a < b).then_some((a, b))
}

/// The visible events of one feature of one patient: a bitset over its events (in tie
/// order), so the visible rows in tie order are its set bits in ascending order.
#[derive(Debug, Default)]
struct Visible {
    words: Vec<u64>,
    count: usize,
}

impl Visible {
    fn reset(&mut self, n: usize) {
        self.words.clear();
        self.words.resize(n.div_ceil(64), 0);
        self.count = 0;
    }
    fn insert(&mut self, i: u32) {
        let (w, b) = ((i / 64) as usize, i % 64);
        if self.words[w] & (1 << b) == 0 {
            self.words[w] |= 1 << b;
            self.count += 1;
        }
    }
    fn remove(&mut self, i: u32) {
        let (w, b) = ((i / 64) as usize, i % 64);
        if self.words[w] & (1 << b) != 0 {
            self.words[w] &= !(1 << b);
            self.count -= 1;
        }
    }
    fn first(&self) -> Option<usize> {
        let w = self.words.iter().position(|w| *w != 0)?;
        Some(w * 64 + self.words[w].trailing_zeros() as usize)
    }
    fn last(&self) -> Option<usize> {
        let w = self.words.iter().rposition(|w| *w != 0)?;
        Some(w * 64 + 63 - self.words[w].leading_zeros() as usize)
    }
    /// The set bits in ascending order.
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, w)| {
            let mut w = *w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let b = w.trailing_zeros() as usize;
                    w &= w - 1;
                    wi * 64 + b
                })
            })
        })
    }
}

/// The state of a feature given its visible events (in tie order).
fn state<'a>(f: &FeatureDef, events: Events<'_, 'a>, visible: &Visible) -> Cp<'a> {
    let evs = events.evs;
    let mut cp = Cp::empty(visible.count as u64);
    let (Some(first), Some(last)) = (visible.first(), visible.last()) else {
        if f.kind.zero_when_empty() {
            cp.value_num = Some(0.0);
        }
        return cp;
    };
    let (first, last) = (&evs[first], &evs[last]);
    let num = |v: &Val<'_>| match v {
        Val::Num(x) => *x,
        _ => 0.0,
    };
    let set_value = |cp: &mut Cp<'a>, ev: &Ev| {
        match events.val(ev) {
            Val::Num(x) => cp.value_num = Some(x),
            Val::Text(s) => cp.value_text = Some(s),
            _ => {}
        }
        cp.value_time = Some(ev.e);
    };
    match f.kind {
        FeatureKind::Count => cp.value_num = Some(visible.count as f64),
        FeatureKind::Exists | FeatureKind::ReadmittedWithin | FeatureKind::DiedWithin => {
            cp.value_num = Some(1.0)
        }
        FeatureKind::DaysSince => cp.value_time = Some(last.e),
        FeatureKind::Last => set_value(&mut cp, last),
        FeatureKind::First => set_value(&mut cp, first),
        FeatureKind::Age => {
            if let Val::Time(b) = events.val(last) {
                cp.value_time = Some(b);
            }
        }
        FeatureKind::Sum | FeatureKind::Mean => {
            let sum = visible
                .iter()
                .fold(0.0, |s, i| s + num(&events.val(&evs[i])));
            cp.value_num = Some(if f.kind == FeatureKind::Sum {
                sum
            } else {
                sum / visible.count as f64
            });
        }
        // Computed from the patient's clinical rows (`score::change_points`), never here.
        FeatureKind::Score => {}
        FeatureKind::Min | FeatureKind::Max => {
            let (mut best, mut best_num) = (first, num(&events.val(first)));
            for i in visible.iter().skip(1) {
                let ev = &evs[i];
                let x = num(&events.val(ev));
                let better = match f.kind {
                    FeatureKind::Min => x.total_cmp(&best_num).is_lt(),
                    _ => x.total_cmp(&best_num).is_gt(),
                };
                if better {
                    (best, best_num) = (ev, x);
                }
            }
            set_value(&mut cp, best);
        }
    }
    cp
}

/// Reused buffers of one worker.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    bounds: Vec<(i64, bool, u32)>,
    visible: Visible,
}

/// The change points of one feature of one patient, passed to `emit` in time order.
fn change_points<'a>(
    f: &FeatureDef,
    events: Events<'_, 'a>,
    knowledge: Knowledge,
    scratch: &mut Scratch,
    mut emit: impl FnMut(Cp<'a>),
) {
    let evs = events.evs;
    let Scratch { bounds, visible } = scratch;
    bounds.clear();
    for (i, ev) in evs.iter().enumerate() {
        if let Some((a, b)) = interval(f, ev, knowledge) {
            bounds.push((a, true, i as u32));
            if b != i64::MAX {
                bounds.push((b, false, i as u32));
            }
        }
    }
    bounds.sort_unstable();
    visible.reset(evs.len());
    let mut prev: Option<Cp<'a>> = None;
    let mut j = 0;
    while j < bounds.len() {
        let at = bounds[j].0;
        while j < bounds.len() && bounds[j].0 == at {
            let (_, enter, i) = bounds[j];
            if enter {
                visible.insert(i);
            } else {
                visible.remove(i);
            }
            j += 1;
        }
        let mut st = state(f, events, visible);
        let unchanged = match &prev {
            Some(p) => p.same_state(&st),
            None => st.count == 0,
        };
        if !unchanged {
            st.effective_at = at;
            emit(st);
            prev = Some(st);
        }
    }
}

/// Every feature's change points for patient `p`, passed to `emit` with the feature's
/// position in the set: features in set order, each one's points in time order.
pub(crate) fn patient_points<'a>(
    prep: &Prepared<'a>,
    p: u32,
    clinical: Option<&ClinicalRows>,
    knowledge: Knowledge,
    scratch: &mut Scratch,
    mut emit: impl FnMut(usize, Cp<'a>),
) {
    // The scores at every instant, once for all score features of the patient.
    let mut score_series = None;
    for (fi, f) in prep.set.features.iter().enumerate() {
        match f.score_component() {
            Some(component) => {
                let series = score_series.get_or_insert_with(|| {
                    clinical.map(|c| c.series(knowledge)).unwrap_or_default()
                });
                for cp in score::change_points(component, series) {
                    emit(
                        fi,
                        Cp {
                            effective_at: cp.effective_at,
                            value_num: cp.value_num,
                            value_text: None,
                            value_time: cp.value_time,
                            count: cp.count,
                        },
                    );
                }
            }
            None => change_points(f, prep.events(p, fi), knowledge, scratch, |cp| emit(fi, cp)),
        }
    }
}

/// Every feature's change points for patient `p`, appended to `out`.
fn patient_rows<'a>(
    prep: &Prepared<'a>,
    p: u32,
    clinical: Option<&ClinicalRows>,
    knowledge: Knowledge,
    scratch: &mut Scratch,
    out: &mut Vec<OutRow<'a>>,
) {
    let patient = prep.names[p as usize];
    let set = prep.set;
    patient_points(prep, p, clinical, knowledge, scratch, |fi, cp| {
        out.push(OutRow {
            patient,
            feature: set.features[fi].name.as_str(),
            cp,
        })
    });
}

/// Appends timeline rows to Arrow builders, cutting a batch every `batch_size` rows.
struct Encoder {
    batch_size: usize,
    patient: StringBuilder,
    feature: StringBuilder,
    effective_at: TimestampMicrosecondBuilder,
    value_num: Float64Builder,
    value_text: StringBuilder,
    value_time: TimestampMicrosecondBuilder,
    count: UInt64Builder,
    len: usize,
    rows: usize,
    batches: Vec<RecordBatch>,
}

impl Encoder {
    fn new(batch_size: usize) -> Encoder {
        let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        Encoder {
            batch_size: batch_size.max(1),
            patient: StringBuilder::new(),
            feature: StringBuilder::new(),
            effective_at: ts(),
            value_num: Float64Builder::new(),
            value_text: StringBuilder::new(),
            value_time: ts(),
            count: UInt64Builder::new(),
            len: 0,
            rows: 0,
            batches: Vec::new(),
        }
    }

    fn push(&mut self, r: &OutRow<'_>) -> Result<()> {
        self.patient.append_value(r.patient);
        self.feature.append_value(r.feature);
        self.effective_at.append_value(r.cp.effective_at);
        self.value_num.append_option(r.cp.value_num);
        self.value_text.append_option(r.cp.value_text);
        self.value_time.append_option(r.cp.value_time);
        self.count.append_value(r.cp.count);
        self.len += 1;
        self.rows += 1;
        if self.len == self.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.patient.finish()),
            Arc::new(self.feature.finish()),
            Arc::new(self.effective_at.finish()),
            Arc::new(self.value_num.finish()),
            Arc::new(self.value_text.finish()),
            Arc::new(self.value_time.finish()),
            Arc::new(self.count.finish()),
        ];
        self.batches
            .push(RecordBatch::try_new(timeline::timeline_schema(), cols)?);
        self.len = 0;
        Ok(())
    }

    /// The batches (one empty batch when there is no row) and the number of rows.
    fn finish(mut self) -> Result<(Vec<RecordBatch>, usize)> {
        self.flush()?;
        if self.batches.is_empty() {
            self.batches
                .push(RecordBatch::new_empty(timeline::timeline_schema()));
        }
        Ok((self.batches, self.rows))
    }
}

/// Patients per unit of parallel work.
const CHUNK: u32 = 512;
/// Chunks computed before their rows are encoded (bounds the rows held in between).
const WAVE: usize = 8;

/// Computes every patient in parallel, chunk by chunk, and encodes the rows in patient order.
/// `work(p, scratch, out)` appends patient `p`'s rows and says whether it was computed
/// (`Some(true)`), reused (`Some(false)`) or has no rows at all (`None`).
fn run<'a>(
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
