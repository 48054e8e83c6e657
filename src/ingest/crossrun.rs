//! A message's effect does not depend on which run brought it: the state that links one
//! ingest run to the earlier ones.
//!
//! - **HL7 v2** replays a stream of changes (an A08 updates the visit an A01 opened, an ORU
//!   correction supersedes a result). What the replay of earlier runs left open is kept in
//!   the store as the dataset [`STATE`] (kind `other`), one entry per record: its replay
//!   state and its current rows, as stored ([`hl7v2::parse_after`](super::hl7v2::parse_after)).
//!   A run reads it at its start and writes the entries it changed as a new version once its
//!   curated versions are published; every curated version of the run names the state
//!   version it started from in its lineage params (`hl7v2_state`). A stored row that a
//!   message of the run retracts leaves the table ([`without`]) and its retracted form joins
//!   it, exactly as one run over both inputs would have written it.
//! - **FHIR** orders the versions of a resource (`ResourceType/id`) by `known_at`; a run's
//!   versions are ordered with the stored rows of the same resource (their `source_id`) when
//!   the run merges onto a table ([`FhirVersions`]): each version's rows are retracted at
//!   the next version's `known_at`, whichever run brought either. The curated tables are the
//!   state; nothing else is kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};

use super::hl7v2::StateEntries;
use super::pipeline::OnConflict;
use super::VersionKey;
use crate::curated::Table;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::store::{HeadUpdate, Kind, Lineage, PutOptions, Store};

/// The name of the HL7 v2 replay state.
pub const STATE: &str = "hl7v2_state";

/// The schema of [`STATE`] versions: one row per record, by key.
pub fn state_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ]))
}

/// The state a run starts from.
#[derive(Debug, Default)]
pub struct LoadedState {
    /// The version it was read from (`None`: no run left state yet).
    pub hash: Option<ContentHash>,
    /// Its entries.
    pub entries: StateEntries,
}

/// Reads the state a run with raw version `raw` starts from: the newest [`STATE`] version,
/// unless that was made by a run with the same raw version (a re-run of a run killed after
/// it wrote its state, or the same input sent again): then the version that run started
/// from, so that the re-run replays exactly what the first run did.
///
/// # Errors
/// Store errors; [`Error::Store`] when the version does not have the state's columns.
pub async fn load_state(store: &Store, raw: ContentHash) -> Result<LoadedState> {
    let Some(head) = store.head(STATE)? else {
        return Ok(LoadedState::default());
    };
    let mut hash = Some(head.hash);
    let inputs = store.manifest(&head.hash)?.lineage.inputs;
    if inputs.last() == Some(&raw) {
        hash = (inputs.len() > 1).then(|| inputs[0]);
    }
    let entries = match &hash {
        Some(h) => read_entries(store, h).await?,
        None => StateEntries::new(),
    };
    Ok(LoadedState { hash, entries })
}

async fn read_entries(store: &Store, hash: &ContentHash) -> Result<StateEntries> {
    let (_, batches) = store.read(hash).await?;
    let mut out = StateEntries::new();
    for b in &batches {
        let col = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| Error::Store {
                    path: store.root().to_path_buf(),
                    reason: format!("{STATE} version {hash} lacks the text column {name}"),
                })
        };
        let (k, v) = (col("key")?, col("value")?);
        for i in 0..b.num_rows() {
            out.insert(k.value(i).to_string(), v.value(i).to_string());
        }
    }
    Ok(out)
}

/// Publishes the newest state with the run's changed entries (`delta`), by compare-and-swap
/// on the head it read; another run's entries published meanwhile are kept (a run only
/// writes the records it changed).
///
/// # Errors
/// Store errors; [`Error::Conflict`] with [`OnConflict::Fail`] when the head moved.
pub async fn commit_state(
    store: &Store,
    delta: Vec<(String, String)>,
    raw: ContentHash,
    on_conflict: OnConflict,
) -> Result<ContentHash> {
    loop {
        let head = store.head(STATE)?;
        let mut entries = match head {
            Some(h) => read_entries(store, &h.hash).await?,
            None => BTreeMap::new(),
        };
        entries.extend(delta.iter().cloned());
        let (mut k, mut v) = (StringBuilder::new(), StringBuilder::new());
        for (key, value) in &entries {
            k.append_value(key);
            v.append_value(value);
        }
        let cols: Vec<ArrayRef> = vec![Arc::new(k.finish()), Arc::new(v.finish())];
        let batch = RecordBatch::try_new(state_schema(), cols)?;
        let mut p = PutOptions::new(STATE, Kind::Other);
        p.lineage = Lineage {
            inputs: head.map(|h| h.hash).into_iter().chain([raw]).collect(),
            definition: None,
            params: serde_json::json!({ "op": "ingest", "format": "hl7v2", "state": "replay" }),
        };
        p.head = HeadUpdate::Expect(head.map(|h| h.seq));
        match store.put_batches(batch.schema(), vec![batch], p).await {
            Ok(put) => return Ok(put.manifest.hash),
            Err(Error::Conflict { .. }) if on_conflict == OnConflict::Retry => {
                tracing::info!("{STATE} moved during the run; merging again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// The rows of `old` (batches of `schema`) that are not rows of `remove`.
///
/// # Errors
/// Arrow errors (`remove` of another schema).
pub fn without(
    schema: &SchemaRef,
    old: &[RecordBatch],
    remove: &RecordBatch,
) -> Result<RecordBatch> {
    let all = concat_batches(schema, old)?;
    let fields = schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let conv = RowConverter::new(fields)?;
    let gone: HashSet<Vec<u8>> = conv
        .convert_columns(remove.columns())?
        .iter()
        .map(|r| r.as_ref().to_vec())
        .collect();
    let rows = conv.convert_columns(all.columns())?;
    let keep: BooleanArray = rows
        .iter()
        .map(|r| Some(!gone.contains(r.as_ref())))
        .collect();
    Ok(filter_record_batch(&all, &keep)?)
}

/// A FHIR run's resource versions, to order with the stored versions of the same resources.
#[derive(Debug, Default)]
pub struct FhirVersions {
    /// `source_id` → the table of the resource's rows and the run's versions' `known_at`
    /// (microseconds).
    run: HashMap<String, (Table, Vec<i64>)>,
    /// Every version time of a resource seen in its own table (stored and the run's), for
    /// the `care_team` rows of encounters and patients, merged after their tables.
    seen: Mutex<HashMap<String, BTreeSet<i64>>>,
}

impl FhirVersions {
    /// The versions of one run.
    pub fn new(versions: &[VersionKey]) -> FhirVersions {
        let mut run: HashMap<String, (Table, Vec<i64>)> = HashMap::new();
        for v in versions {
            run.entry(v.source_id.clone())
                .or_insert_with(|| (v.table, Vec::new()))
                .1
                .push(v.known_at.timestamp_micros());
        }
        FhirVersions {
            run,
            seen: Mutex::default(),
        }
    }

    /// Whether rows of `table` may belong to one of the run's resources.
    pub fn touches(&self, table: Table) -> bool {
        self.run.values().any(|(t, _)| owns(*t, table))
    }

    /// Retracts, in `batch` (the merged `table`), each version of a run's resource at the
    /// next version's `known_at` (keeping an earlier `retracted_at`). `None` when no row
    /// changed.
    ///
    /// # Errors
    /// [`Error::Internal`] when the batch lacks a curated column.
    pub fn apply(&self, table: Table, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        if !self.touches(table) {
            return Ok(None);
        }
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::Internal(format!("{} lacks {name}", table.name())))
        };
        let sid = col("source_id")?
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Internal("source_id is not text".into()))?;
        let ts = |name: &str| {
            col(name)?
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .cloned()
                .ok_or_else(|| Error::Internal(format!("{name} is not a timestamp")))
        };
        let (known, retracted) = (ts("known_at")?, ts("retracted_at")?);
        let mine = |s: &str| self.run.get(s).filter(|(t, _)| owns(*t, table));
        // Every version time of each resource: the run's, those of its rows here, and (for
        // care_team) those seen in the resource's own table.
        let mut times: HashMap<&str, BTreeSet<i64>> = HashMap::new();
        for i in 0..batch.num_rows() {
            let s = sid.value(i);
            if let Some((_, run)) = mine(s) {
                let set = times
                    .entry(s)
                    .or_insert_with(|| run.iter().copied().collect());
                set.insert(known.value(i));
            }
        }
        {
            let mut seen = self
                .seen
                .lock()
                .map_err(|_| Error::Internal("version times poisoned".into()))?;
            if table == Table::CareTeam {
                for (s, set) in times.iter_mut() {
                    if let Some(more) = seen.get(*s) {
                        set.extend(more);
                    }
                }
            } else {
                for (s, set) in &times {
                    seen.insert((*s).to_string(), set.clone());
                }
            }
        }
        let mut out: Vec<Option<i64>> = (0..batch.num_rows())
            .map(|i| retracted.is_valid(i).then(|| retracted.value(i)))
            .collect();
        let mut changed = false;
        for (i, cell) in out.iter_mut().enumerate() {
            let Some(set) = times.get(sid.value(i)) else {
                continue;
            };
            let k = known.value(i);
            let Some(next) = set.range(k + 1..).next().copied() else {
                continue;
            };
            if cell.is_none_or(|r| r > next) {
                *cell = Some(next);
                changed = true;
            }
        }
        if !changed {
            return Ok(None);
        }
        let new = TimestampMicrosecondArray::from(out).with_timezone_opt(retracted.timezone());
        let idx = batch
            .schema()
            .index_of("retracted_at")
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut cols = batch.columns().to_vec();
        cols[idx] = Arc::new(new);
        Ok(Some(RecordBatch::try_new(batch.schema(), cols)?))
    }
}

/// Whether rows of `table` can belong to a resource whose own table is `own`: its table,
/// and `care_team` for encounters' participants and patients' general practitioners.
fn owns(own: Table, table: Table) -> bool {
    own == table || (table == Table::CareTeam && matches!(own, Table::Encounters | Table::Patients))
}
