//! The curated rows given to materialization ([`Inputs`]), per table, and the reader of
//! `source_id` for tables given without it ([`SourceIdReader`]).

use crate::curated::{CuratedTables, Table};
use crate::error::Result;
use arrow::array::{ArrayRef, RecordBatch};
use std::collections::BTreeMap;
use std::sync::Arc;

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
