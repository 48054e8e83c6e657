//! Loading: the curated tables and derived tables (DataFusion) a feature set reads, their
//! columns resolved per event stream, source ids read late where the rows came without them.

use super::columns::{same_rows, text_col, TextCol, ValArray};
use super::definition::{FeatureDef, FeatureSet};
use super::derived;
use super::events::StreamCols;
use super::inputs::{Inputs, SourceIdReader};
use super::kind::FeatureKind;
use super::score::ScoreTables;
use crate::curated::Table;
use crate::error::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The rows of one table a set reads (curated, or a derived table's result), as batches.
pub(super) struct Source {
    pub(super) name: String,
    /// Each batch's `patient_id` (`None`: the batch has no such column).
    pub(super) patients: Vec<Option<TextCol>>,
}

/// Everything materialization reads, owned: the tables (derived ones computed), the columns
/// each event stream reads, and the rows of the `score` features.
pub(crate) struct Loaded {
    pub(super) sources: Vec<Source>,
    /// Per stream: its source (index into `sources`) and its columns per batch.
    pub(super) streams: Vec<(usize, Vec<StreamCols>)>,
    /// Per stream, per batch: the source ids, read to order ties while the events are
    /// prepared and to digest a patient's events; [`Loaded::release_source_ids`] drops them
    /// (a third of the memory of lab results) once neither is needed.
    pub(super) sids: Mutex<Vec<Vec<Option<StringArray>>>>,
    /// Per feature of the set: its stream (`None` for `score` features).
    pub(super) feature_stream: Vec<Option<usize>>,
    pub(super) score: Option<ScoreTables>,
    /// Per stream: where its source ids come from when its batches came without them and
    /// `late_reader` reads them ([`SourceIdReader`]).
    pub(super) late_tables: Vec<Option<Late>>,
    pub(super) late_reader: Option<Arc<dyn SourceIdReader>>,
}

impl Loaded {
    /// Drops the source ids: after [`super::sweep::Prepared::new`], when no digest will be asked for.
    pub(crate) fn release_source_ids(&self) {
        self.sids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Whether stream `s` still lacks source ids its reader can give.
    pub(super) fn is_late(&self, s: usize, sids: &[Vec<Option<StringArray>>]) -> bool {
        self.late_tables[s].is_some() && sids.get(s).is_some_and(|b| b.iter().all(Option::is_none))
    }

    /// Reads the source ids of the late streams `streams` into `sids`, each table once.
    pub(super) fn read_late(
        &self,
        sids: &mut [Vec<Option<StringArray>>],
        streams: &[usize],
    ) -> Result<()> {
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
pub(super) enum Late {
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
