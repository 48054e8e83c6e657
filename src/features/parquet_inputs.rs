//! Curated tables read from Parquet files, for computing a feature set straight from files:
//! `DIR/<table>.parquet` in Ward's curated layout (what `ward synth --format parquet`
//! writes), only the columns and rows the set reads.
//!
//! - Columns: [`FeatureSet::needed_columns`]; rows: [`FeatureSet::row_filters`]. A table
//!   whose columns are all fixed-width or dictionaries is filtered batch by batch after
//!   decoding; one with a plain text column by the reader, the filter's columns decoded
//!   first and the others only for the rows that pass.
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
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter as ParquetRowFilter,
};
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;

use super::definition::FeatureSet;
use super::derived;
use super::filter::RowFilter;
use super::inputs::{Inputs, SourceIdReader};
use super::kind::{FeatureKind, SCORE_TABLES};
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
    // Tables whose `source_id` a derived query or a score reads as a value: read whole. A
    // derived query that passes it through runs on row numbers in its place.
    let mut eager: BTreeSet<Table> = set
        .derived
        .iter()
        .filter_map(|d| derived::parse(&d.sql).ok())
        .filter(|q| derived::source_id_use(q) == derived::SourceIdUse::Other)
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
            let (batches, schema) = p.read(&p.columns)?;
            // A file without `source_id` has none to read later.
            let late = p.late && schema.column_with_name("source_id").is_some();
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

    fn file(&self) -> Result<File> {
        File::open(&self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The table's batches, `columns` (those the file has) of the rows `self.rows` passes,
    /// and the file's schema. The footer is read once; row groups are decoded in parallel.
    fn read(&self, columns: &BTreeSet<String>) -> Result<(Vec<RecordBatch>, SchemaRef)> {
        let meta = ArrowReaderMetadata::load(&self.file()?, ArrowReaderOptions::new())
            .map_err(self.parquet_err())?;
        let file_schema = meta.schema().clone();
        let filter_cols: BTreeSet<&str> = self
            .rows
            .iter()
            .flat_map(|r| r.any_of.iter())
            .flat_map(|c| c.keys().map(String::as_str))
            .collect();
        // `patient_id` and the filtered columns as dictionaries, as Parquet stores them.
        let read_schema = Arc::new(Schema::new(
            file_schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Utf8
                        if f.name() == "patient_id" || filter_cols.contains(f.name().as_str()) =>
                    {
                        Field::new(
                            f.name(),
                            DataType::Dictionary(
                                Box::new(DataType::Int32),
                                Box::new(DataType::Utf8),
                            ),
                            f.is_nullable(),
                        )
                    }
                    _ => (**f).clone(),
                })
                .collect::<Vec<_>>(),
        ));
        let meta = ArrowReaderMetadata::try_new(
            meta.metadata().clone(),
            ArrowReaderOptions::new().with_schema(read_schema),
        )
        .map_err(self.parquet_err())?;
        let mask = |keep: &dyn Fn(&str) -> bool| {
            let roots: Vec<usize> = meta
                .schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| keep(f.name()))
                .map(|(i, _)| i)
                .collect();
            ProjectionMask::roots(meta.parquet_schema(), roots)
        };
        let projection = mask(&|c| columns.contains(c));
        let filter_mask = mask(&|c| filter_cols.contains(c));
        // Rows to keep: filtered after decoding when every column read is fixed-width or a
        // dictionary, which costs less than the reader's row selection (measured in
        // BENCHMARKS.md, "Features"); with a column of plain text, by the reader, which
        // then decodes that column's values only for the rows that pass.
        let plain_text = meta.schema().fields().iter().any(|f| {
            columns.contains(f.name())
                && matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8)
        });
        let after = match &self.rows {
            Some(rows) if !plain_text => Some(rows),
            _ => None,
        };
        let projection = match after {
            Some(_) => mask(&|c| columns.contains(c) || filter_cols.contains(c)),
            None => projection,
        };
        let per_group: Vec<Vec<RecordBatch>> = (0..meta.metadata().num_row_groups())
            .into_par_iter()
            .map(|g| {
                let mut b =
                    ParquetRecordBatchReaderBuilder::new_with_metadata(self.file()?, meta.clone())
                        .with_row_groups(vec![g])
                        .with_batch_size(BATCH_ROWS)
                        .with_projection(projection.clone());
                if let Some(rows) = after {
                    let what = self.path.display().to_string();
                    return b
                        .build()
                        .map_err(self.parquet_err())?
                        .map(|batch| {
                            let batch = batch.map_err(|e| Error::Parquet {
                                path: self.path.clone(),
                                source: e.into(),
                            })?;
                            let keep = rows.keep(&batch, &what)?;
                            let kept = arrow::compute::filter_record_batch(&batch, &keep)?;
                            // The filter's columns no feature reads go.
                            let names: Vec<usize> = (0..kept.num_columns())
                                .filter(|&i| columns.contains(kept.schema().field(i).name()))
                                .collect();
                            Ok(kept.project(&names)?)
                        })
                        .collect::<Result<Vec<_>>>();
                }
                if let Some(rows) = &self.rows {
                    let rows = rows.clone();
                    let what = self.path.display().to_string();
                    let predicate = ArrowPredicateFn::new(filter_mask.clone(), move |batch| {
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
        Ok((per_group.into_iter().flatten().collect(), file_schema))
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
            .0
            .iter()
            .map(|b| {
                b.column_by_name("source_id").cloned().ok_or_else(|| {
                    Error::invalid(plan.path.display().to_string(), "no column source_id")
                })
            })
            .collect()
    }
}
