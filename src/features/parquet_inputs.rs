//! Curated tables read from Parquet files, for computing a feature set straight from files:
//! `DIR/<table>.parquet` in Ward's curated layout (what `ward synth --format parquet`
//! writes), only the columns and rows the set reads.
//!
//! - Columns: [`FeatureSet::needed_columns`]; rows: [`FeatureSet::row_filters`], their
//!   columns decoded first and the others only for the rows that pass.
//! - `patient_id` and the filtered text columns are read as dictionaries: each distinct
//!   value is decoded, interned and tested once.
//! - `source_id` only orders events that tie on event time and `known_at`, and it is the
//!   costliest column to decode. Of a table that only features read (no derived query, no
//!   score), it is left out and read again only if some patient's events of the table tie
//!   ([`SourceIdReader`]): the result is the same.
//! - Row groups are decoded in parallel and kept in file order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter as ParquetRowFilter,
};
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;

use super::compute::{Inputs, SourceIdReader};
use super::definition::{FeatureKind, FeatureSet, RowFilter, SCORE_TABLES};
use super::derived;
use crate::curated::Table;
use crate::error::{Error, Result};

/// Rows per batch read.
const BATCH_ROWS: usize = 65_536;

/// The curated tables `set` reads, from `dir/<table>.parquet`: the columns it needs, the
/// rows its filters pass, `patient_id` and filtered text columns as dictionaries, and
/// `source_id` of the tables only features read left to be read when ties need it
/// ([`Inputs::late_source_ids`]). Tables are read in parallel, as are the row groups of
/// each. A needed column the file lacks is left out; materialization then names it.
///
/// # Errors
/// [`Error::Io`] naming a file that cannot be opened; [`Error::Parquet`] naming a file that
/// cannot be read; the error of a row filter that does not apply to the file's columns.
pub fn read_parquet_inputs(dir: &Path, set: &FeatureSet) -> Result<Inputs> {
    let columns = set.needed_columns();
    let rows = set.row_filters();
    // Tables whose `source_id` a derived query or a score reads as a value: read whole.
    let mut eager: BTreeSet<Table> = set
        .derived
        .iter()
        .filter_map(|d| derived::parse(&d.sql).ok())
        .flat_map(|q| q.tables)
        .collect();
    if set.features.iter().any(|f| f.kind == FeatureKind::Score) {
        eager.extend(SCORE_TABLES);
    }
    let plans: Vec<TableRead> = set
        .curated_tables()
        .into_iter()
        .map(|t| {
            let mut cols = columns.get(&t).cloned().unwrap_or_default();
            let late = !eager.contains(&t) && cols.remove("source_id");
            TableRead {
                table: t,
                path: dir.join(format!("{}.parquet", t.name())),
                columns: cols,
                rows: rows.get(&t).cloned(),
                late,
            }
        })
        .collect();
    let read: Vec<(Table, Vec<RecordBatch>, bool)> = plans
        .par_iter()
        .map(|p| {
            let batches = p.read(&p.columns)?;
            // A file without `source_id` has none to read later.
            let late = p.late && p.has_column("source_id")?;
            Ok((p.table, batches, late))
        })
        .collect::<Result<_>>()?;
    let late: BTreeMap<Table, TableRead> = plans
        .into_iter()
        .zip(&read)
        .filter(|(_, (_, _, late))| *late)
        .map(|(p, _)| (p.table, p))
        .collect();
    Ok(Inputs {
        tables: read.into_iter().map(|(t, b, _)| (t, b)).collect(),
        late_source_ids: match late.is_empty() {
            true => None,
            false => Some(Arc::new(ParquetSourceIds(late))),
        },
    })
}

/// How one table is read.
#[derive(Debug, Clone)]
struct TableRead {
    table: Table,
    path: PathBuf,
    columns: BTreeSet<String>,
    rows: Option<RowFilter>,
    /// Whether `source_id` is left to [`ParquetSourceIds`].
    late: bool,
}

impl TableRead {
    fn parquet_err(&self) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
        |source| Error::Parquet {
            path: self.path.clone(),
            source,
        }
    }

    fn open(&self, options: ArrowReaderOptions) -> Result<ParquetRecordBatchReaderBuilder<File>> {
        let file = File::open(&self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
            .map_err(self.parquet_err())
    }

    fn has_column(&self, name: &str) -> Result<bool> {
        let b = self.open(ArrowReaderOptions::new())?;
        Ok(b.schema().column_with_name(name).is_some())
    }

    /// The table's batches: `columns` (those the file has) of the rows `self.rows` passes.
    fn read(&self, columns: &BTreeSet<String>) -> Result<Vec<RecordBatch>> {
        let file_schema = self.open(ArrowReaderOptions::new())?.schema().clone();
        // `patient_id` and the filtered columns as dictionaries, as Parquet stores them.
        let dict: BTreeSet<&str> = std::iter::once("patient_id")
            .chain(
                self.rows
                    .iter()
                    .flat_map(|r| r.any_of.iter())
                    .flat_map(|c| c.keys().map(String::as_str)),
            )
            .collect();
        let read_schema = Arc::new(Schema::new(
            file_schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Utf8 if dict.contains(f.name().as_str()) => Field::new(
                        f.name(),
                        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                        f.is_nullable(),
                    ),
                    _ => (**f).clone(),
                })
                .collect::<Vec<_>>(),
        ));
        let options = ArrowReaderOptions::new().with_schema(read_schema);
        let groups = self.open(options.clone())?.metadata().num_row_groups();
        let mask = |b: &ParquetRecordBatchReaderBuilder<File>, keep: &dyn Fn(&str) -> bool| {
            let roots: Vec<usize> = b
                .schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| keep(f.name()))
                .map(|(i, _)| i)
                .collect();
            ProjectionMask::roots(b.parquet_schema(), roots)
        };
        let per_group: Vec<Vec<RecordBatch>> = (0..groups)
            .into_par_iter()
            .map(|g| {
                let mut b = self
                    .open(options.clone())?
                    .with_row_groups(vec![g])
                    .with_batch_size(BATCH_ROWS);
                let projection = mask(&b, &|c| columns.contains(c));
                b = b.with_projection(projection);
                if let Some(rows) = &self.rows {
                    let filter_cols: BTreeSet<&str> = rows
                        .any_of
                        .iter()
                        .flat_map(|c| c.keys().map(String::as_str))
                        .collect();
                    let filter_mask = mask(&b, &|c| filter_cols.contains(c));
                    let rows = rows.clone();
                    let what = self.path.display().to_string();
                    let predicate = ArrowPredicateFn::new(filter_mask, move |batch| {
                        rows.keep(&batch, &what)
                            .map_err(|e| ArrowError::ExternalError(Box::new(e)))
                    });
                    b = b.with_row_filter(ParquetRowFilter::new(vec![Box::new(predicate)]));
                }
                b.build()
                    .map_err(self.parquet_err())?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::Parquet {
                        path: self.path.clone(),
                        source: e.into(),
                    })
            })
            .collect::<Result<_>>()?;
        Ok(per_group.into_iter().flatten().collect())
    }
}

/// `source_id` of the tables read without it: read again with the same row filter, so the
/// rows come in the same order.
struct ParquetSourceIds(BTreeMap<Table, TableRead>);

impl SourceIdReader for ParquetSourceIds {
    fn read(&self, table: Table) -> Result<Vec<ArrayRef>> {
        let plan = self.0.get(&table).ok_or_else(|| {
            Error::Internal(format!(
                "table {} was read with its source ids",
                table.name()
            ))
        })?;
        let only: BTreeSet<String> = ["source_id".to_string()].into();
        plan.read(&only)?
            .iter()
            .map(|b| {
                b.column_by_name("source_id").cloned().ok_or_else(|| {
                    Error::invalid(plan.path.display().to_string(), "no column source_id")
                })
            })
            .collect()
    }
}
