//! A message's effect does not depend on which run brought it: the state that links one
//! ingest run to the earlier ones.
//!
//! - **HL7 v2** replays a stream of changes (an A08 updates the visit an A01 opened, an ORU
//!   correction supersedes a result). What the replay of earlier runs left open is kept in
//!   the store as the dataset [`STATE`] (kind `other`), one entry per record: its replay
//!   state and its current rows, as stored ([`hl7v2::parse_after`](super::hl7v2::parse_after)).
//!   A run reads the entries it needs and writes the entries it changed as a new version once
//!   its curated versions are published; every curated version of the run names the state
//!   version it started from in its lineage params (`hl7v2_state`). A stored row that a
//!   message of the run retracts leaves the table ([`without`]) and its retracted form joins
//!   it, exactly as one run over both inputs would have written it.
//!
//! # The state's layout: change costs what changed
//! A [`STATE`] version is a bucketed version ([`crate::store::bucketed`]) of the columns
//! `key`, `value` and [`BUCKET_KEY`] (the entry's [`hl7v2::bucket_key`]: its patient's, or its
//! own key for a result), in [`STATE_BUCKETS`] buckets by `bucket_key`, each bucket's rows
//! sorted by `key` (one row a key), so the same entries built in one run or by any sequence
//! of runs have the same hash.
//! - *Reading*: [`load_state`] reads nothing of a bucketed version but its layout; the
//!   pipeline replays the run after the buckets loaded so far and loads the buckets the
//!   replay missed ([`load_buckets`]), until a replay misses none: exactly the replay after
//!   the whole state (the argument is in `hl7v2::carry`). A one-message run reads the
//!   buckets of the records it names.
//! - *Writing*: [`commit_state`] reads the buckets of the run's changed keys from the head,
//!   applies the change and publishes the changed buckets
//!   ([`BucketContent::Changed`]): the unchanged ones keep their digests and files.
//! - A version in the layout of stores made before (two columns, hashed whole) is read whole,
//!   and the first version written after it is written whole in the bucketed layout.
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
use serde::Serialize;

use super::hl7v2::{self, Loaded, StateEntries, StateView};
use super::pipeline::OnConflict;
use super::VersionKey;
use crate::curated::Table;
use crate::error::{Error, Result};
use crate::hash::bucketed::{bucket_of, Bucketing};
use crate::hash::ContentHash;
use crate::store::bucketed::BucketContent;
use crate::store::{HeadUpdate, Kind, Lineage, PutOptions, Store};

/// A map keyed by resource ids, hashed with foldhash's per-map random seed (SipHash, the
/// default, was about a tenth of a FHIR ingest's profile).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The name of the HL7 v2 replay state.
pub const STATE: &str = "hl7v2_state";

/// The column [`STATE`] versions are bucketed by: [`hl7v2::bucket_key`] of the entry's key.
pub const BUCKET_KEY: &str = "bucket_key";

/// The bucket count of [`STATE`] versions. The state holds several entries a patient (the
/// patient, each encounter, diagnosis, procedure and result); at 100,000 patients, millions.
/// 1,024 buckets (as the curated tables) put a few thousand entries in a bucket there and a
/// few hundred at 10,000 patients, so a run of a few messages reads and rewrites a
/// thousandth of the state per bucket it names, while the layout (one digest a bucket,
/// read by every run) stays small (about 100 KB). A store reads and writes whole groups of
/// buckets (`GROUP_ROWS` rows), so more buckets would not read less.
pub const STATE_BUCKETS: u32 = 1024;

/// How [`STATE`] versions are bucketed.
///
/// # Errors
/// None in practice (the count is not 0).
pub fn state_bucketing() -> Result<Bucketing> {
    Bucketing::new(BUCKET_KEY, STATE_BUCKETS)
}

/// The schema of [`STATE`] versions: one row per record, by key.
pub fn state_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
        Field::new(BUCKET_KEY, DataType::Utf8, false),
    ]))
}

/// The state a run starts from.
#[derive(Debug, Default)]
pub struct LoadedState {
    /// The version it was read from (`None`: no run left state yet).
    pub hash: Option<ContentHash>,
    /// What is loaded of it: nothing yet of a bucketed version, all of a version in the
    /// older unbucketed layout.
    pub view: StateView,
    /// Entries in the version.
    pub stored: u64,
}

/// What a run read of [`STATE`] and wrote to it (in the ingest report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateReport {
    /// The version the run started from (`None`: no earlier run left state).
    pub read_from: Option<ContentHash>,
    /// Entries in that version.
    pub entries_stored: u64,
    /// Its bucket count (0: a version in the unbucketed layout, read whole).
    pub buckets: u32,
    /// Buckets read.
    pub buckets_read: u64,
    /// Entries read.
    pub entries_read: u64,
    /// Times the run was replayed (one more than the rounds that loaded missing buckets).
    pub replays: u32,
    /// Entries the run added or changed.
    pub entries_written: u64,
    /// Buckets of the new version that hold those entries (0: written whole, in the
    /// bucketed layout, from a version in the older layout or none).
    pub buckets_written: u64,
    /// The new version (`None`: the run changed no entry).
    pub written: Option<ContentHash>,
}

/// Reads the state a run with raw version `raw` starts from: the newest [`STATE`] version,
/// unless that was made by a run with the same raw version (a re-run of a run killed after
/// it wrote its state, or the same input sent again): then the version that run started
/// from, so that the re-run replays exactly what the first run did. Of a bucketed version
/// only the layout is read (the buckets come with [`load_buckets`]); a version in the older
/// layout is read whole.
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
    let Some(h) = hash else {
        return Ok(LoadedState::default());
    };
    if let Some(layout) = store.bucket_layout(&h)? {
        if layout.key == BUCKET_KEY {
            return Ok(LoadedState {
                hash,
                view: StateView {
                    entries: StateEntries::new(),
                    loaded: Loaded::Buckets {
                        count: layout.buckets,
                        have: BTreeSet::new(),
                    },
                },
                stored: layout.digests.iter().map(|d| d.0).sum(),
            });
        }
    }
    let entries = read_entries(store, &h).await?;
    Ok(LoadedState {
        hash,
        stored: entries.len() as u64,
        // A stored version without entries is as no state (as it always was).
        view: StateView::whole(entries),
    })
}

/// Loads the buckets `buckets` of the bucketed version `hash` into `view` (which must hold
/// buckets of it); returns the entries read.
///
/// # Errors
/// Store errors; [`Error::Store`] when the version does not have the state's columns, or
/// `view` does not hold buckets.
pub async fn load_buckets(
    store: &Store,
    hash: &ContentHash,
    view: &mut StateView,
    buckets: &BTreeSet<u32>,
) -> Result<u64> {
    let Loaded::Buckets { have, .. } = &mut view.loaded else {
        return Err(Error::Store {
            path: store.root().to_path_buf(),
            reason: format!("{STATE} version {hash}: buckets asked of a state read whole"),
        });
    };
    let mut n = 0u64;
    for batch in store.read_buckets(hash, buckets).await?.values() {
        n += batch.num_rows() as u64;
        entries_of(store, hash, batch, &mut view.entries)?;
    }
    have.extend(buckets);
    Ok(n)
}

async fn read_entries(store: &Store, hash: &ContentHash) -> Result<StateEntries> {
    let (_, batches) = store.read(hash).await?;
    let mut out = StateEntries::new();
    for b in &batches {
        entries_of(store, hash, b, &mut out)?;
    }
    Ok(out)
}

/// Adds the entries of `b` (rows of [`STATE`] version `hash`) to `out`.
fn entries_of(
    store: &Store,
    hash: &ContentHash,
    b: &RecordBatch,
    out: &mut StateEntries,
) -> Result<()> {
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
    Ok(())
}

/// The rows of `entries` (sorted by key), with their bucket keys.
fn state_batch<'a>(
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<RecordBatch> {
    let (mut k, mut v, mut g) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    for (key, value) in entries {
        k.append_value(key);
        v.append_value(value);
        g.append_value(hl7v2::bucket_key(key));
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(k.finish()),
        Arc::new(v.finish()),
        Arc::new(g.finish()),
    ];
    Ok(RecordBatch::try_new(state_schema(), cols)?)
}

/// The rows of `entries` (sorted by key), one batch a bucket of `buckets`.
fn bucket_batches<'a>(
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
    buckets: u32,
) -> Result<Vec<RecordBatch>> {
    let mut by: BTreeMap<u32, Vec<(&String, &String)>> = BTreeMap::new();
    for (k, v) in entries {
        let b = bucket_of(Some(hl7v2::bucket_key(k).as_bytes()), buckets);
        by.entry(b).or_default().push((k, v));
    }
    by.into_values().map(state_batch).collect()
}

/// A published state version: its hash and how many buckets the change touched (0: written
/// whole).
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// The new version.
    pub hash: ContentHash,
    /// Buckets rewritten (0: the version was written whole).
    pub buckets: u64,
}

/// Publishes the newest state with the run's changed entries (`delta`), by compare-and-swap
/// on the head it read; another run's entries published meanwhile are kept (a run only
/// writes the records it changed). Of a bucketed head only the buckets of `delta`'s keys
/// are read, and only they are written; a head in the older layout (or none) gives a
/// version written whole.
///
/// # Errors
/// Store errors; [`Error::Conflict`] with [`OnConflict::Fail`] when the head moved.
pub async fn commit_state(
    store: &Store,
    delta: Vec<(String, String)>,
    raw: ContentHash,
    on_conflict: OnConflict,
) -> Result<Committed> {
    let bucketing = state_bucketing()?;
    let schema = state_schema();
    loop {
        let head = store.head(STATE)?;
        let bucketed_head = match &head {
            Some(h) => store
                .bucket_layout(&h.hash)?
                .filter(|l| l.key == bucketing.key && l.buckets == bucketing.buckets)
                .and_then(|_| {
                    let m = store.manifest(&h.hash).ok()?;
                    let cols = crate::store::ColumnInfo::from_schema(&schema).ok()?;
                    (m.schema == cols).then_some(h.hash)
                }),
            None => None,
        };
        let mut p = PutOptions::new(STATE, Kind::Other);
        p.lineage = Lineage {
            inputs: head.map(|h| h.hash).into_iter().chain([raw]).collect(),
            definition: None,
            params: serde_json::json!({ "op": "ingest", "format": "hl7v2", "state": "replay" }),
        };
        p.head = HeadUpdate::Expect(head.map(|h| h.seq));
        let (put, buckets) = match bucketed_head {
            Some(base) => {
                let mut by: BTreeMap<u32, StateEntries> = BTreeMap::new();
                for (k, v) in &delta {
                    let b = bucket_of(Some(hl7v2::bucket_key(k).as_bytes()), bucketing.buckets);
                    by.entry(b).or_default().insert(k.clone(), v.clone());
                }
                let touched: BTreeSet<u32> = by.keys().copied().collect();
                let stored = store.read_buckets(&base, &touched).await?;
                let mut changed = BTreeMap::new();
                for (b, new) in by {
                    let mut entries = StateEntries::new();
                    if let Some(batch) = stored.get(&b) {
                        entries_of(store, &base, batch, &mut entries)?;
                    }
                    entries.extend(new);
                    changed.insert(b, state_batch(&entries)?);
                }
                let n = changed.len() as u64;
                let put = store
                    .put_bucketed(
                        schema.clone(),
                        BucketContent::Changed(changed),
                        Some(&base),
                        bucketing.clone(),
                        p,
                    )
                    .await;
                (put, n)
            }
            None => {
                // One batch a bucket: a large state's text passes 2 GiB, more than one Arrow
                // string array holds.
                let batches = match head {
                    // The first state: the run's entries (sorted, unique) are the state, so
                    // they are not copied into a map first (a large cohort's state is
                    // gigabytes).
                    None if delta.windows(2).all(|w| w[0].0 < w[1].0) => {
                        bucket_batches(delta.iter().map(|(k, v)| (k, v)), bucketing.buckets)?
                    }
                    _ => {
                        let mut entries = match head {
                            Some(h) => read_entries(store, &h.hash).await?,
                            None => StateEntries::new(),
                        };
                        entries.extend(delta.iter().cloned());
                        bucket_batches(entries.iter(), bucketing.buckets)?
                    }
                };
                let put = store
                    .put_bucketed(
                        schema.clone(),
                        BucketContent::Whole(batches),
                        None,
                        bucketing.clone(),
                        p,
                    )
                    .await;
                (put, 0)
            }
        };
        match put {
            Ok(put) => {
                return Ok(Committed {
                    hash: put.manifest.hash,
                    buckets,
                })
            }
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
    run: FastMap<String, (Table, Vec<i64>)>,
    /// Every version time of a resource seen in its own table (stored and the run's), for
    /// the `care_team` rows of encounters and patients, merged after their tables.
    seen: Mutex<FastMap<String, BTreeSet<i64>>>,
}

impl FhirVersions {
    /// The versions of one run.
    pub fn new(versions: &[VersionKey]) -> FhirVersions {
        let mut run: FastMap<String, (Table, Vec<i64>)> = FastMap::default();
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
        let mut times: FastMap<&str, BTreeSet<i64>> = FastMap::default();
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
