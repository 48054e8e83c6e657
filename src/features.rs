//! Features: definitions, materialization into timelines, and the lookup function.
//!
//! A feature repository (TOML, [`FeatureRepo`]) declares feature sets; materialization turns
//! the latest curated versions and one set into a **timeline**: per (patient, feature) the
//! change points of the feature's state under "as known at t". The timeline is stored as one
//! immutable version (kind `timeline`) whose lineage names the curated inputs and the
//! definition, so [`rebuild`] reproduces it bit for bit. [`lookup`] reads a value at any t
//! from an in-memory [`TimelineIndex`]; historical and online lookups both go through it.
//! `docs/features.md` is the user's guide and documents the timeline schema.
//!
//! - `definition`: resolved feature sets, their validation, canonical form and definition
//!   hash; `repo`: the TOML repository, raw → resolved; `kind`: feature kinds;
//!   `filter`: row filters.
//! - `derived`: derived tables in SQL (DataFusion).
//! - `compute`: materialization in memory, full and incremental, over the seams below:
//!   `inputs` (the curated rows given), `columns` (column readers), `load` (loading and
//!   derived tables), `intern` (patient ids), `events` (event streams), `sweep` (the
//!   change-point sweep) and `encode` (the timeline's Arrow builders).
//! - `direct`: historical lookups computed straight from curated rows.
//! - `parquet_inputs`: curated tables read from Parquet files, only what a set reads.
//! - `person`: person-keyed timelines (`--entity person`): curated rows re-keyed by the
//!   persons of the master patient index ([`crate::mpi`]) as known at each time.
//! - `score`: `kind = "score"` features, the clinical scores of [`crate::scores`] (LACE,
//!   HOSPITAL, Charlson) of the latest stay at t, swept over the instants they can change.
//! - `timeline`: the timeline schema, its index and [`lookup`].
//! - `training`: the shape of a historical lookup: entity rows' keys, the training set's
//!   schema and status text, shared by [`crate::lookup`] and `direct`.

mod columns;
mod compute;
mod definition;
mod derived;
mod direct;
pub mod docs;
mod encode;
mod events;
mod filter;
mod incremental;
mod inputs;
mod intern;
mod kind;
mod load;
mod parquet_inputs;
mod person;
mod repo;
mod score;
mod scratch;
mod sweep;
mod timeline;
mod training;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The knowledge a timeline reflects, part of this module's API ([`MaterializeOptions`]);
/// its rule lives in [`crate::pit`].
pub use crate::pit::Knowledge;
pub use compute::{compute, compute_incremental, MaterializeOptions, Timeline, PARTITION_ROWS};
pub use definition::{parse_duration, DerivedDef, FeatureDef, FeatureSet, DAY_US};
pub use direct::historical_direct;
pub use filter::{Condition, RowFilter};
pub use inputs::{Inputs, SourceIdReader};
pub use kind::FeatureKind;
pub use parquet_inputs::read_parquet_inputs;
pub use person::Entity;
pub use repo::FeatureRepo;
pub use timeline::{
    lookup, person_timeline_schema, timeline_schema, whole_years, ChangePoint, FeatureInfo,
    FeatureValue, Resolved, Status, TimelineIndex, Value,
};
pub(crate) use training::{entity_keys, entity_schema, training_schema_of};
pub use training::{status_str, STATUS_SUFFIX};

use crate::curated::Table;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::store::bucketed::BucketContent;
use crate::store::{HeadUpdate, Kind, Lineage, Manifest, PutOptions, Store, VersionRef};

/// The manifest label listing a timeline's label features (comma-separated, sorted).
pub const LABELS_KEY: &str = "ward.labels";
/// The manifest label naming a timeline's feature set.
pub const SET_KEY: &str = "ward.feature_set";

/// The label of a patient-keyed timeline that counts its patients (those with change
/// points).
pub const PATIENTS_KEY: &str = "ward.patients";

/// How patient-keyed timelines are bucketed: as curated tables are, by `patient_id`, so that
/// an incremental materialization reads and writes only the buckets of the patients it
/// recomputes (`docs/hashing.md`, encoding 3).
///
/// # Errors
/// None in practice.
pub fn timeline_bucketing() -> Result<crate::hash::bucketed::Bucketing> {
    crate::ingest::pipeline::curated_bucketing()
}

/// The version name of a set's timelines: `timeline-<set>`.
pub fn timeline_name(set: &str) -> String {
    format!("timeline-{set}")
}

/// What [`materialize`] did.
#[derive(Debug, Clone, Serialize)]
pub struct MaterializeOutcome {
    /// The timeline version.
    pub hash: ContentHash,
    /// The feature set.
    pub set: String,
    /// The definition hash of the set.
    pub definition: ContentHash,
    /// The curated versions read, with their tables.
    pub inputs: Vec<(String, ContentHash)>,
    /// Change points written.
    pub rows: usize,
    /// Patients computed.
    pub recomputed: usize,
    /// Patients reused from a previous timeline (incremental only).
    pub reused: usize,
    /// Ranges of patients computed one after another (1: all at once; see
    /// [`MaterializeOptions::partition_rows`]).
    pub partitions: usize,
    /// False when the same timeline was stored already.
    pub created: bool,
    /// Full or incremental, and why.
    pub basis: Basis,
    /// The patients recomputed by an incremental materialization, sorted (empty after a
    /// full one): what an online index holding `basis`'s previous timeline must update.
    #[serde(skip)]
    pub changed: Vec<String>,
    /// What the rows are keyed by.
    #[serde(skip_serializing_if = "Entity::is_patient")]
    pub entity: Entity,
    /// The `mpi_links` version a person-keyed timeline was made with (also its last lineage
    /// input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mpi_links: Option<ContentHash>,
}

/// How a timeline was materialized ([`MaterializeOutcome::basis`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Basis {
    /// Every patient computed, for the reason given.
    Full {
        /// Why not incrementally.
        why: String,
    },
    /// From `previous`: the patients whose rows changed recomputed, the others' change
    /// points copied.
    Incremental {
        /// The timeline reused.
        previous: ContentHash,
    },
}

impl std::fmt::Display for Basis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Basis::Full { why } => write!(f, "full: {why}"),
            Basis::Incremental { previous } => write!(f, "incremental from {previous}"),
        }
    }
}

/// The lineage parameters of a timeline (`lineage.params`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Params {
    op: String,
    feature_set: String,
    knowledge: Knowledge,
    /// The curated table of each lineage input, in the same order.
    tables: Vec<String>,
    /// The canonical form of the feature set (its BLAKE3 is `lineage.definition`).
    definition: String,
    /// What the rows are keyed by; absent: `patient`. A person-keyed timeline's last lineage
    /// input is the `mpi_links` version it used, its table `mpi_links`.
    #[serde(default, skip_serializing_if = "Entity::is_patient")]
    entity: Entity,
}

impl Params {
    /// The curated inputs of a timeline's lineage, with their tables, and the `mpi_links`
    /// version of a person-keyed one.
    fn inputs(&self, m: &Manifest) -> (Vec<(String, ContentHash)>, Option<ContentHash>) {
        let mut curated = Vec::new();
        let mut links = None;
        for (t, h) in self.tables.iter().zip(&m.lineage.inputs) {
            if self.entity == Entity::Person && t == crate::mpi::LINKS {
                links = Some(*h);
            } else {
                curated.push((t.clone(), *h));
            }
        }
        (curated, links)
    }
}

/// The newest `mpi_links` version, which a person-keyed materialization reads.
fn latest_links(store: &Store) -> Result<ContentHash> {
    match store.resolve(&VersionRef::Latest(crate::mpi::LINKS.to_string())) {
        Ok(m) => Ok(m.hash),
        Err(Error::NotFound { .. }) => Err(Error::NotFound {
            reference: format!(
                "{} (a timeline keyed by person reads the master patient index; run `ward mpi link` first)",
                crate::mpi::LINKS
            ),
        }),
        Err(e) => Err(e),
    }
}

/// The persons over time of an `mpi_links` version.
///
/// # Errors
/// Store errors; [`Error::InvalidArgument`] when the version does not hold links.
pub async fn load_persons(store: &Store, links: &ContentHash) -> Result<crate::mpi::Persons> {
    let (_, batches) = store.read(links).await?;
    let links = crate::mpi::read_links(&batches)?;
    Ok(crate::mpi::Persons::new(&crate::mpi::Index::new(links)))
}

/// The persons a person-keyed timeline resolves source patient ids with (from the
/// `mpi_links` version of its lineage); `None` for a patient-keyed timeline.
///
/// # Errors
/// As [`load_persons`]; [`Error::Corrupt`] when the lineage of a person-keyed timeline
/// names no links version.
pub async fn timeline_persons(
    store: &Store,
    hash: &ContentHash,
) -> Result<Option<Arc<crate::mpi::Persons>>> {
    let m = store.manifest(hash)?;
    let p = params_of(&m)?;
    if p.entity != Entity::Person {
        return Ok(None);
    }
    let (_, links) = p.inputs(&m);
    let links = links.ok_or_else(|| Error::Corrupt {
        hash: hash.to_string(),
        what: "a timeline keyed by person without an mpi_links input".into(),
    })?;
    Ok(Some(Arc::new(load_persons(store, &links).await?)))
}

/// The latest curated version of each table a set reads.
pub(crate) fn latest_refs(store: &Store, set: &FeatureSet) -> Result<Vec<(String, ContentHash)>> {
    let mut refs = Vec::new();
    let optional = set.score_only_tables();
    for t in set.curated_tables() {
        let found = store.resolve(&VersionRef::Latest(t.name().to_string()));
        if optional.contains(&t) && matches!(found, Err(Error::NotFound { .. })) {
            // Read only by score features: a source without, say, procedures has none.
            continue;
        }
        let m = found.map_err(|e| match e {
            Error::NotFound { .. } => Error::NotFound {
                reference: format!(
                    "curated table {} (read by feature set {}; ingest data first)",
                    t.name(),
                    set.name
                ),
            },
            e => e,
        })?;
        refs.push((t.name().to_string(), m.hash));
    }
    Ok(refs)
}

/// The curated table of each input, checking that each is a curated version.
fn input_tables(store: &Store, refs: &[(String, ContentHash)]) -> Result<Vec<Table>> {
    refs.iter()
        .map(|(name, hash)| {
            let table = Table::from_name(name).ok_or_else(|| {
                Error::invalid("table", format!("{name:?} is not a curated table"))
            })?;
            let m = store.manifest(hash)?;
            if m.kind != Kind::Curated {
                return Err(Error::invalid(
                    format!("input {hash}"),
                    format!("is a {} version, not curated", m.kind),
                ));
            }
            Ok(table)
        })
        .collect()
}

/// What materializing a set reads of its curated inputs, worked out once per run.
struct Reads {
    /// [`FeatureSet::needed_columns`].
    columns: BTreeMap<Table, BTreeSet<String>>,
    /// [`FeatureSet::row_filters`].
    rows: BTreeMap<Table, RowFilter>,
}

impl Reads {
    fn of(set: &FeatureSet) -> Reads {
        Reads {
            columns: set.needed_columns(),
            rows: set.row_filters(),
        }
    }
}

/// Reads the given curated versions: the columns and rows of `reads`, of every patient.
async fn read_inputs(
    store: &Store,
    refs: &[(String, ContentHash)],
    reads: &Reads,
) -> Result<Inputs> {
    let tables = input_tables(store, refs)?;
    let mut inputs = Inputs::default();
    for (table, (_, hash)) in tables.into_iter().zip(refs) {
        let cols: Option<Vec<String>> = reads
            .columns
            .get(&table)
            .map(|c| c.iter().cloned().collect());
        let mut batches = Vec::new();
        // The rows the features read, as a filter Lance evaluates on its columns before
        // reading the other columns of the rows that pass.
        let filter = reads.rows.get(&table).map(RowFilter::expr);
        store
            .scan_where(hash, cols.as_deref(), filter, |b| {
                if b.num_rows() > 0 {
                    batches.push(b.clone());
                }
                Ok(())
            })
            .await?;
        inputs.tables.insert(table, batches);
    }
    Ok(inputs)
}

/// The curated versions `refs`, all of their rows that `set` reads (its columns, the rows
/// its features filter), in memory.
///
/// # Errors
/// As [`Store::scan_where`]; [`Error::InvalidArgument`] when a reference is not a curated
/// version.
pub(crate) async fn read_curated(
    store: &Store,
    set: &FeatureSet,
    refs: &[(String, ContentHash)],
) -> Result<Inputs> {
    read_inputs(store, refs, &Reads::of(set)).await
}

/// A computed timeline on its way to the store: in memory, or written to a scratch file as
/// it was computed (sealed in an encrypted store: [`scratch`]).
enum Computed {
    Memory(Timeline),
    File {
        scratch: scratch::Finished,
        rows: usize,
        recomputed: usize,
        partitions: usize,
        patients: u64,
    },
    /// The new rows of some buckets of the bucketed timeline `base` (incremental).
    Changed {
        base: ContentHash,
        rows: BTreeMap<u32, RecordBatch>,
        recomputed: usize,
        reused: usize,
        patients: Option<u64>,
    },
}

/// Computes `set` from the curated versions `refs`, reading only the columns the set needs.
/// When they hold more than `opts.partition_rows` rows, the patients are split by the
/// timeline's buckets ([`timeline_bucketing`]) into ranges of consecutive buckets (each with
/// at most that many rows, or one bucket) computed one after another: derived tables are
/// computed once over all patients first, a range reads only its buckets' fragments of the
/// bucketed curated versions, and its rows go, bucket by bucket, to a scratch file in the
/// store's `tmp/` that is then stored one group at a time. A patient's change points depend
/// on its own rows only, so the ranges give the same rows as one computation.
async fn compute_stored(
    store: &Store,
    set: &FeatureSet,
    refs: &[(String, ContentHash)],
    opts: &MaterializeOptions,
    links: Option<&ContentHash>,
) -> Result<Computed> {
    let reads = Reads::of(set);
    if let Some(links) = links {
        // Person-keyed: every row in memory (a record's rows go to every group of it).
        let persons = load_persons(store, links).await?;
        let inputs = read_inputs(store, refs, &reads).await?;
        return Ok(Computed::Memory(
            person::compute_person(set, &inputs, &persons, opts).await?,
        ));
    }
    let mut total = 0u64;
    for (_, hash) in refs {
        total += store.manifest(hash)?.rows;
    }
    if total <= opts.partition_rows as u64 {
        let inputs = read_inputs(store, refs, &reads).await?;
        return Ok(Computed::Memory(compute(set, &inputs, opts).await?));
    }

    // Derived tables, once, over the stored tables their queries read (streamed).
    let derived = if set.derived.is_empty() {
        load::DerivedTables::new()
    } else {
        let queries = set
            .derived
            .iter()
            .map(|d| {
                set.derived_query(d)
                    .map_err(|r| Error::invalid(format!("derived table {}", d.name), r))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut datasets = BTreeMap::new();
        for (name, hash) in refs {
            if let Some(t) =
                Table::from_name(name).filter(|t| queries.iter().any(|q| q.tables.contains(t)))
            {
                datasets.insert(t, Arc::new(store.dataset(hash).await?));
            }
        }
        let mut out = load::DerivedTables::new();
        for (d, q) in set.derived.iter().zip(&queries) {
            out.insert(
                d.name.clone(),
                vec![derived::run_stored(&d.name, q, &datasets).await?],
            );
        }
        out
    };

    // Rows per bucket of the timeline's bucketing (a bucketed version's from its layout).
    let bucketing = timeline_bucketing()?;
    let n = bucketing.buckets;
    let mut counts = vec![0u64; n as usize];
    let mut bucketed_refs: BTreeSet<ContentHash> = BTreeSet::new();
    let patient_col = ["patient_id".to_string()];
    for (name, hash) in refs {
        match store
            .bucket_layout(hash)?
            .filter(|l| l.key == bucketing.key && l.buckets == n)
        {
            Some(layout) => {
                for (c, (rows, _)) in counts.iter_mut().zip(&layout.digests) {
                    *c += rows;
                }
                bucketed_refs.insert(*hash);
            }
            None => {
                let what = format!("{name} {hash}");
                store
                    .scan_columns(hash, Some(&patient_col), |b| {
                        count_buckets(b, n, &mut counts, &what)
                    })
                    .await?;
            }
        }
    }
    for (name, batches) in &derived {
        for b in batches {
            count_buckets(b, n, &mut counts, &format!("derived table {name}"))?;
        }
    }
    // Ranges of consecutive buckets, each with at most `partition_rows` rows (or one
    // bucket), computed in bucket order: the timeline's rows come out in its stored order.
    let mut ranges: Vec<BTreeSet<u32>> = Vec::new();
    let mut rows_in = 0u64;
    for (b, c) in counts.iter().enumerate() {
        if *c == 0 {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if rows_in + c <= opts.partition_rows as u64 => {
                last.insert(b as u32);
                rows_in += c;
            }
            _ => {
                ranges.push(BTreeSet::from([b as u32]));
                rows_in = *c;
            }
        }
    }

    let schema = timeline::timeline_schema();
    let mut writer = scratch::Scratch::create(store)?;
    let (mut rows, mut recomputed, mut patients) = (0, 0, 0u64);
    let partitions = ranges.len();
    for range in ranges {
        let inputs = read_bucket_inputs(store, refs, &reads, &range, &bucketed_refs).await?;
        let mut part = load::DerivedTables::new();
        for (name, batches) in &derived {
            let what = format!("derived table {name}");
            let kept = batches
                .iter()
                .map(|b| of_buckets(b, &range, n, &what))
                .collect::<Result<Vec<_>>>()?;
            part.insert(name.clone(), kept);
        }
        let t = compute::compute_with(set, &inputs, Some(&part), opts).await?;
        drop(inputs);
        let batches = t
            .batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| incremental::timeline_batch(&schema, b))
            .collect::<Result<Vec<_>>>()?;
        for (_, bucket) in crate::hash::bucketed::split_into_buckets(&schema, &batches, &bucketing)?
        {
            patients += incremental::distinct_patients(std::slice::from_ref(&bucket))?;
            writer.write(&bucket)?;
        }
        rows += t.rows;
        recomputed += t.recomputed;
    }
    Ok(Computed::File {
        scratch: writer.finish()?,
        rows,
        recomputed,
        partitions,
        patients,
    })
}

/// Adds the rows of `b` to the count of their bucket (by `patient_id`; a batch without it
/// counts in no bucket).
fn count_buckets(b: &RecordBatch, n: u32, counts: &mut [u64], what: &str) -> Result<()> {
    if let Some(ids) = columns::utf8_array(b, "patient_id", what)? {
        for p in ids.iter() {
            let k = crate::hash::bucketed::bucket_of(p.map(str::as_bytes), n) as usize;
            counts[k] += 1;
        }
    }
    Ok(())
}

/// The rows of `batch` whose patient falls in one of `buckets` (every row when it has no
/// `patient_id`).
fn of_buckets(
    batch: &RecordBatch,
    buckets: &BTreeSet<u32>,
    n: u32,
    what: &str,
) -> Result<RecordBatch> {
    let Some(ids) = columns::utf8_array(batch, "patient_id", what)? else {
        return Ok(batch.clone());
    };
    let keep: BooleanArray = ids
        .iter()
        .map(|p| {
            Some(p.is_some_and(|p| {
                buckets.contains(&crate::hash::bucketed::bucket_of(Some(p.as_bytes()), n))
            }))
        })
        .collect();
    Ok(arrow::compute::filter_record_batch(batch, &keep)?)
}

/// The rows of the patients of `buckets` that `reads` names, of every curated version of
/// `refs`: a bucketed version's fragments that hold them, another's scan filtered.
async fn read_bucket_inputs(
    store: &Store,
    refs: &[(String, ContentHash)],
    reads: &Reads,
    buckets: &BTreeSet<u32>,
    bucketed: &BTreeSet<ContentHash>,
) -> Result<Inputs> {
    let tables = input_tables(store, refs)?;
    let n = timeline_bucketing()?.buckets;
    let mut inputs = Inputs::default();
    for (table, (name, hash)) in tables.into_iter().zip(refs) {
        let cols: Option<Vec<String>> = reads
            .columns
            .get(&table)
            .map(|c| c.iter().cloned().collect());
        let filter = reads.rows.get(&table).map(RowFilter::expr);
        let mut batches = Vec::new();
        let what = format!("{name} {hash}");
        let mut keep = |b: &RecordBatch| -> Result<()> {
            if b.num_rows() > 0 {
                batches.push(b.clone());
            }
            Ok(())
        };
        if bucketed.contains(hash) {
            store
                .scan_buckets_where(hash, buckets, cols.as_deref(), filter, &mut keep)
                .await?;
        } else {
            store
                .scan_where(hash, cols.as_deref(), filter, |b| {
                    keep(&of_buckets(b, buckets, n, &what)?)
                })
                .await?;
        }
        inputs.tables.insert(table, batches);
    }
    Ok(inputs)
}

async fn store_timeline(
    store: &Store,
    set: &FeatureSet,
    refs: Vec<(String, ContentHash)>,
    timeline: Computed,
    knowledge: Knowledge,
    basis: Basis,
    links: Option<ContentHash>,
) -> Result<MaterializeOutcome> {
    let definition = set.definition_hash();
    let name = timeline_name(&set.name);
    let entity = if links.is_some() {
        Entity::Person
    } else {
        Entity::Patient
    };
    let mut tables: Vec<String> = refs.iter().map(|(t, _)| t.clone()).collect();
    let mut inputs: Vec<ContentHash> = refs.iter().map(|(_, h)| *h).collect();
    if let Some(l) = links {
        tables.push(crate::mpi::LINKS.to_string());
        inputs.push(l);
    }
    let params = Params {
        op: "materialize".into(),
        feature_set: set.name.clone(),
        knowledge,
        tables,
        definition: set.canonical_json(),
        entity,
    };
    // Stored without moving the head: [`publish_timeline`] decides that (and a rebuild never
    // moves it).
    let mut opts = PutOptions::new(name, Kind::Timeline);
    opts.head = HeadUpdate::Keep;
    opts.lineage = Lineage {
        inputs,
        definition: Some(definition),
        params: serde_json::to_value(&params)
            .map_err(|e| Error::Internal(format!("params do not serialize: {e}")))?,
    };
    opts.labels.insert(SET_KEY.into(), set.name.clone());
    opts.labels
        .insert(LABELS_KEY.into(), set.labels().join(","));
    let bucketing = timeline_bucketing()?;
    let (put, rows, recomputed, reused, partitions) = match timeline {
        // Keyed by person: computed in full, stored whole.
        Computed::Memory(t) if links.is_some() => (
            store
                .put_batches(
                    t.batches
                        .first()
                        .map_or_else(timeline::person_timeline_schema, RecordBatch::schema),
                    t.batches,
                    opts,
                )
                .await?,
            t.rows,
            t.recomputed,
            t.reused,
            1,
        ),
        Computed::Memory(t) => {
            let patients = incremental::distinct_patients(&t.batches)?;
            opts.labels
                .insert(PATIENTS_KEY.into(), patients.to_string());
            let schema = timeline::timeline_schema();
            let batches = t
                .batches
                .into_iter()
                .map(|b| incremental::timeline_batch(&schema, b))
                .collect::<Result<Vec<_>>>()?;
            (
                store
                    .put_bucketed(schema, BucketContent::Whole(batches), None, bucketing, opts)
                    .await?,
                t.rows,
                t.recomputed,
                t.reused,
                1,
            )
        }
        Computed::File {
            scratch,
            rows,
            recomputed,
            partitions,
            patients,
        } => {
            opts.labels
                .insert(PATIENTS_KEY.into(), patients.to_string());
            (
                scratch.put_bucketed(store, bucketing, opts).await?,
                rows,
                recomputed,
                0,
                partitions,
            )
        }
        Computed::Changed {
            base,
            rows: changed,
            recomputed,
            reused,
            patients,
        } => {
            if let Some(n) = patients {
                opts.labels.insert(PATIENTS_KEY.into(), n.to_string());
            }
            let put = store
                .put_bucketed(
                    timeline::timeline_schema(),
                    BucketContent::Changed(changed),
                    Some(&base),
                    bucketing,
                    opts,
                )
                .await?;
            let rows = put.manifest.rows as usize;
            (put, rows, recomputed, reused, 1)
        }
    };
    Ok(MaterializeOutcome {
        hash: put.manifest.hash,
        set: set.name.clone(),
        definition,
        inputs: refs,
        rows,
        recomputed,
        reused,
        partitions,
        created: put.created,
        basis,
        changed: Vec::new(),
        entity,
        mpi_links: links,
    })
}

/// Materializes feature set `set` of `repo` from the latest curated versions and stores the
/// timeline (name `timeline-<set>`, kind `timeline`), computing every patient. Lineage:
/// inputs = the curated versions read, in table order; definition = the set's definition
/// hash; params = `op` (`materialize`), `feature_set`, `knowledge`, `tables` (the table of
/// each input) and `definition` (the set's canonical form, for [`rebuild`]).
/// [`materialize_latest`] chooses between this and [`materialize_incremental`].
///
/// # Errors
/// [`Error::NotFound`] for an unknown set or a curated table never ingested; derived-query
/// and store errors.
pub async fn materialize(
    store: &Store,
    repo: &FeatureRepo,
    set: &str,
    opts: &MaterializeOptions,
) -> Result<MaterializeOutcome> {
    let set = repo.set(set)?;
    materialize_full(
        store,
        set,
        opts,
        "a full materialization was asked for".into(),
    )
    .await
}

async fn materialize_full(
    store: &Store,
    set: &FeatureSet,
    opts: &MaterializeOptions,
    why: String,
) -> Result<MaterializeOutcome> {
    if opts.entity == Entity::Person && opts.knowledge != Knowledge::AsKnown {
        return Err(Error::invalid(
            "entity",
            "a timeline keyed by person is materialized as known at t (persons are as the \
             master patient index knew them then); --as-occurred is not available with it",
        ));
    }
    loop {
        let started = store.head(&timeline_name(&set.name))?;
        let refs = latest_refs(store, set)?;
        let links = match opts.entity {
            Entity::Person => Some(latest_links(store)?),
            Entity::Patient => None,
        };
        let timeline = compute_stored(store, set, &refs, opts, links.as_ref()).await?;
        let basis = Basis::Full { why: why.clone() };
        let out = store_timeline(store, set, refs, timeline, opts.knowledge, basis, links).await?;
        if publish_timeline(store, set, &out, started.map(|h| h.seq))? {
            return Ok(out);
        }
        tracing::info!(
            set = set.name,
            "a newer timeline was published from newer curated versions; materializing again"
        );
    }
}

/// Materializes `set` from the latest curated versions, incrementally when it can: from the
/// newest timeline of the set (the head of `timeline-<set>`) when that one was made from the
/// same definition (hash) and knowledge; in full when `full` is set, when there is none,
/// or when it was made otherwise. [`MaterializeOutcome::basis`] says which, and why. The
/// CLI (`ward materialize [--full]`) and the service's Materialize call this; either way
/// the timeline is the same version.
///
/// # Errors
/// As [`materialize`] and [`materialize_incremental`].
pub async fn materialize_latest(
    store: &Store,
    repo: &FeatureRepo,
    set: &str,
    opts: &MaterializeOptions,
    full: bool,
) -> Result<MaterializeOutcome> {
    let def = repo.set(set)?;
    let why = if full {
        "a full materialization was asked for".to_string()
    } else if opts.entity == Entity::Person {
        "a timeline keyed by person is computed in full".to_string()
    } else {
        match incremental_base(store, def, opts)? {
            Ok(previous) => {
                return materialize_incremental(store, repo, set, &previous, opts).await;
            }
            Err(why) => why,
        }
    };
    materialize_full(store, def, opts, why).await
}

/// The timeline an incremental materialization of `set` starts from (the head of its
/// name), or why there is none.
fn incremental_base(
    store: &Store,
    set: &FeatureSet,
    opts: &MaterializeOptions,
) -> Result<std::result::Result<ContentHash, String>> {
    let name = timeline_name(&set.name);
    let Some(head) = store.head(&name)? else {
        return Ok(Err(format!("no previous timeline of set {}", set.name)));
    };
    let m = store.manifest(&head.hash)?;
    let p = match params_of(&m) {
        Ok(p) => p,
        Err(e) => {
            return Ok(Err(format!(
                "the previous timeline {} is not one to build on ({e})",
                head.hash
            )))
        }
    };
    let definition = set.definition_hash();
    if m.lineage.definition != Some(definition) {
        return Ok(Err(format!(
            "the previous timeline {} was made from another definition ({}; now {definition})",
            head.hash,
            m.lineage
                .definition
                .map_or_else(|| "none".to_string(), |d| d.to_string()),
        )));
    }
    if p.entity != opts.entity {
        return Ok(Err(format!(
            "the previous timeline {} is keyed by {}, this one by {}",
            head.hash,
            p.entity.as_str(),
            opts.entity.as_str()
        )));
    }
    if p.knowledge != opts.knowledge {
        return Ok(Err(format!(
            "the previous timeline {} was made {}, this one {}",
            head.hash,
            knowledge_text(p.knowledge),
            knowledge_text(opts.knowledge)
        )));
    }
    Ok(Ok(head.hash))
}

fn knowledge_text(k: Knowledge) -> &'static str {
    match k {
        Knowledge::AsKnown => "as known",
        Knowledge::AsOccurred => "as occurred",
    }
}

/// Makes a stored timeline the head of its set's name, by compare-and-swap, unless that
/// would replace a timeline made from newer curated versions: when the head moved since the
/// materialization started (`started`) and the curated versions it read are no longer the
/// latest, returns false and the caller computes again from the latest. Otherwise the
/// timeline is current and is published, retrying the swap as long as other writers move the
/// head.
fn publish_timeline(
    store: &Store,
    set: &FeatureSet,
    out: &MaterializeOutcome,
    started: Option<u64>,
) -> Result<bool> {
    let name = timeline_name(&set.name);
    loop {
        let head = store.head(&name)?;
        let seq = head.map(|h| h.seq);
        if seq != started && latest_refs(store, set)? != out.inputs {
            return Ok(false);
        }
        match store.publish(&name, &out.hash, HeadUpdate::Expect(seq)) {
            Ok(_) => return Ok(true),
            Err(Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn params_of(m: &Manifest) -> Result<Params> {
    if m.kind != Kind::Timeline {
        return Err(Error::invalid(
            format!("version {}", m.hash),
            format!("is a {} version, not a timeline", m.kind),
        ));
    }
    let p: Params =
        serde_json::from_value(m.lineage.params.clone()).map_err(|e| Error::Corrupt {
            hash: m.hash.to_string(),
            what: format!("lineage params are not a materialization's: {e}"),
        })?;
    if p.op != "materialize" || p.tables.len() != m.lineage.inputs.len() {
        return Err(Error::Corrupt {
            hash: m.hash.to_string(),
            what: "lineage params do not match its inputs".into(),
        });
    }
    Ok(p)
}

/// The feature set a timeline version was made from (read back from its lineage).
///
/// # Errors
/// [`Error::NotFound`]; [`Error::InvalidArgument`] when the version is not a timeline;
/// [`Error::Corrupt`] when its lineage does not hold a valid definition of the recorded hash.
pub fn timeline_set(store: &Store, hash: &ContentHash) -> Result<FeatureSet> {
    let m = store.manifest(hash)?;
    let p = params_of(&m)?;
    let set = FeatureSet::from_canonical_json(&p.definition, &format!("{hash} lineage"))?;
    if Some(set.definition_hash()) != m.lineage.definition {
        return Err(Error::Corrupt {
            hash: hash.to_string(),
            what: "the stored definition does not match the definition hash".into(),
        });
    }
    Ok(set)
}

/// Loads a stored timeline into an index, with the set it was made from.
///
/// # Errors
/// As [`timeline_set`] and [`Store::read`].
pub async fn load_index(store: &Store, hash: &ContentHash) -> Result<(FeatureSet, TimelineIndex)> {
    let set = timeline_set(store, hash)?;
    let (_, batches) = store.read(hash).await?;
    let index = TimelineIndex::build_owned(&set, batches)?;
    Ok((set, index))
}

/// Materializes `set` again after new curated data, reusing the rows of `previous` (a
/// timeline of the same set and knowledge) for patients whose rows did not change: only the
/// curated tables whose version changed are read whole (digested per patient as they are
/// scanned, previous and latest version), the changed patients' rows are read and computed,
/// and the other patients' change points are copied from `previous`
/// (`features/incremental.rs`). The result is the same version a full [`materialize`]
/// gives; when newer curated versions were materialized meanwhile, or the change cannot be
/// followed patient by patient, it is a full materialization
/// ([`MaterializeOutcome::basis`] says so).
///
/// # Errors
/// As [`materialize`]; [`Error::InvalidArgument`] when `previous` was made from another
/// definition or knowledge.
pub async fn materialize_incremental(
    store: &Store,
    repo: &FeatureRepo,
    set: &str,
    previous: &ContentHash,
    opts: &MaterializeOptions,
) -> Result<MaterializeOutcome> {
    let set = repo.set(set)?;
    let m = store.manifest(previous)?;
    let p = params_of(&m)?;
    if m.lineage.definition != Some(set.definition_hash())
        || p.knowledge != opts.knowledge
        || p.entity != Entity::Patient
        || opts.entity != Entity::Patient
    {
        return Err(Error::invalid(
            "previous timeline",
            format!(
                "{previous} was made from another definition, knowledge or entity than set {} (a timeline keyed by person is computed in full)",
                set.name
            ),
        ));
    }
    let prev_refs: Vec<(String, ContentHash)> =
        p.tables.into_iter().zip(m.lineage.inputs).collect();
    let started = store.head(&timeline_name(&set.name))?;
    let refs = latest_refs(store, set)?;
    let delta =
        match incremental::compute_delta_buckets(store, set, &prev_refs, &refs, previous, opts)
            .await?
        {
            Some(d) => d,
            None => {
                incremental::compute_delta(store, set, &prev_refs, &refs, previous, opts).await?
            }
        };
    let (timeline, changed) = match delta {
        incremental::Delta::Computed { timeline, changed } => (Computed::Memory(timeline), changed),
        incremental::Delta::Buckets {
            rows,
            changed,
            recomputed,
            reused,
            patients,
        } => (
            Computed::Changed {
                base: *previous,
                rows,
                recomputed,
                reused,
                patients,
            },
            changed,
        ),
        incremental::Delta::Full(why) => return materialize_full(store, set, opts, why).await,
    };
    let basis = Basis::Incremental {
        previous: *previous,
    };
    let mut out = store_timeline(store, set, refs, timeline, opts.knowledge, basis, None).await?;
    out.changed = changed;
    if !publish_timeline(store, set, &out, started.map(|h| h.seq))? {
        // Newer curated versions were materialized meanwhile: a full materialization from
        // them is the current timeline.
        let why = "a newer timeline was published meanwhile".to_string();
        return materialize_full(store, set, opts, why).await;
    }
    Ok(out)
}

/// Recomputes a timeline version from its lineage (the curated versions and the definition
/// it records) and stores it; returns the hash, which is `hash` itself.
///
/// # Errors
/// As [`timeline_set`]; [`Error::NotFound`] when an input version is gone; [`Error::Corrupt`]
/// when the recomputation arrives at another hash (naming both).
pub async fn rebuild(store: &Store, hash: &ContentHash) -> Result<ContentHash> {
    let set = timeline_set(store, hash)?;
    let m = store.manifest(hash)?;
    let p = params_of(&m)?;
    let (refs, links) = p.inputs(&m);
    let opts = MaterializeOptions {
        knowledge: p.knowledge,
        entity: p.entity,
        ..MaterializeOptions::default()
    };
    let timeline = compute_stored(store, &set, &refs, &opts, links.as_ref()).await?;
    let basis = Basis::Full {
        why: "rebuilt from its lineage".into(),
    };
    let out = store_timeline(store, &set, refs, timeline, p.knowledge, basis, links).await?;
    if out.hash != *hash {
        return Err(Error::Corrupt {
            hash: hash.to_string(),
            what: format!("rebuilt from its lineage it hashes to {}", out.hash),
        });
    }
    Ok(out.hash)
}

/// One patient's features at one time, as an online lookup answers.
#[derive(Debug, Clone)]
pub struct PatientFeatures {
    /// The patient (as asked).
    pub patient_id: String,
    /// Against a person-keyed timeline: the person the id resolved to at `at` (the id
    /// itself when it is linked to no other record then); `None` against a patient-keyed one.
    pub person_id: Option<String>,
    /// The time the values hold at.
    pub at: DateTime<Utc>,
    /// `(feature, value)` in the set's feature order.
    pub values: Vec<(String, FeatureValue)>,
}
