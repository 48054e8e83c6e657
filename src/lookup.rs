//! Point-in-time lookups: historical (training sets) and online, over one timeline and one
//! rule ([`TimelineIndex::resolve`]), so training and serving cannot drift.
//!
//! - [`historical`]: entity rows `(patient_id, timestamp, extra columns...)` joined as of
//!   each row's time against a stored timeline; exactly one output row per input row, in input
//!   order, duplicates kept, extra columns passed through, each feature's value and status.
//!   The result is stored as a `training` version whose lineage (timeline, entity rows,
//!   options) lets [`rebuild`] reproduce it bit for bit.
//! - [`Online`]: the latest timeline of each set held in memory, answering "features of
//!   patient p at t" (t defaults to now, from the injected clock); a newly materialized
//!   timeline is swapped in atomically while requests in flight finish on the old one.
//! - [`asof`]: the as-of join of a wide feature table (one row per observation, several
//!   feature columns), the layout the peers (DuckDB, Polars, pandas, Feast) join; `ward asof`
//!   runs it on their files.
//!
//! `docs/lookups.md` is the user's guide.

pub mod asof;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::{
    self, FeatureRepo, FeatureSet, Knowledge, MaterializeOptions, PatientFeatures, Resolved,
    Status, TimelineIndex,
};
use crate::hash::ContentHash;
use crate::store::{HeadUpdate, Kind, Lineage, Manifest, PutOptions, Store, VersionRef};

/// Default name of the entity column holding patient ids.
pub const PATIENT_COLUMN: &str = "patient_id";
/// Default name of the entity column holding the lookup time.
pub const TIME_COLUMN: &str = "timestamp";
/// Suffix of the status column of each feature in a training set.
pub const STATUS_SUFFIX: &str = "__status";

/// Where a historical lookup's entity rows come from.
#[derive(Debug, Clone)]
pub enum Entities {
    /// Rows in memory (stored as a version of kind `other` before the join).
    Batches(Vec<RecordBatch>),
    /// A stored version.
    Stored(VersionRef),
}

/// A historical lookup.
#[derive(Debug, Clone)]
pub struct HistoricalRequest {
    /// The feature set (its latest timeline is read unless `timeline` names one).
    pub set: String,
    /// The entity rows.
    pub entities: Entities,
    /// A timeline version to read instead of the latest of the set.
    pub timeline: Option<VersionRef>,
    /// "As known at t" (default) or "as occurred": picks a timeline materialized that way.
    pub knowledge: Knowledge,
    /// The training set's version name; default `training-<set>`.
    pub name: Option<String>,
    /// The entity column holding patient ids (default [`PATIENT_COLUMN`]).
    pub patient_column: Option<String>,
    /// The entity column holding the lookup time (default [`TIME_COLUMN`]).
    pub time_column: Option<String>,
}

impl HistoricalRequest {
    /// A request with the defaults: latest timeline, as known at t, default names.
    pub fn new(set: impl Into<String>, entities: Entities) -> HistoricalRequest {
        HistoricalRequest {
            set: set.into(),
            entities,
            timeline: None,
            knowledge: Knowledge::AsKnown,
            name: None,
            patient_column: None,
            time_column: None,
        }
    }
}

/// What [`historical`] or [`historical_direct`] did.
#[derive(Debug, Clone, Serialize)]
pub struct HistoricalOutcome {
    /// The training set version.
    pub hash: ContentHash,
    /// The timeline read ([`historical`]); `None` when the features were computed straight
    /// from curated versions ([`historical_direct`]).
    pub timeline: Option<ContentHash>,
    /// The curated versions read, with their tables ([`historical_direct`]; empty for
    /// [`historical`]).
    pub curated: Vec<(String, ContentHash)>,
    /// The stored entity rows.
    pub entities: ContentHash,
    /// Rows (= entity rows, less those left out by consent).
    pub rows: usize,
    /// False when the same training set was stored already.
    pub created: bool,
    /// The research consent applied: the `consent` version (or `none`), its time, and the
    /// patients and entity rows left out because they opted out (`docs/security.md`,
    /// "Consent"). `None` only for a rebuilt training set made before consent was applied.
    pub consent: Option<crate::security::deid::ConsentApplied>,
}

/// The lineage parameters of a training set (`lineage.params`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Params {
    /// `historical` (from a timeline) or `historical_direct` (from curated versions).
    op: String,
    feature_set: String,
    knowledge: Knowledge,
    patient_column: String,
    time_column: String,
    /// `historical_direct`: the curated table of each lineage input before the entity rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tables: Vec<String>,
    /// `historical_direct`: the set's canonical form (its BLAKE3 is `lineage.definition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    definition: Option<String>,
    /// The research opt-outs applied to the entity rows (absent only in training sets made
    /// before Ward applied consent; those are rebuilt without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consent: Option<crate::security::deid::ConsentApplied>,
}

/// The `op` of a training set made from a timeline.
const OP_TIMELINE: &str = "historical";
/// The `op` of a training set made straight from curated versions.
const OP_DIRECT: &str = "historical_direct";

/// The version name of a set's training sets: `training-<set>`.
pub fn training_name(set: &str) -> String {
    format!("training-{set}")
}

/// The knowledge a timeline was materialized with (from its lineage).
fn timeline_knowledge(m: &Manifest) -> Option<Knowledge> {
    m.lineage
        .params
        .get("knowledge")
        .and_then(|k| serde_json::from_value(k.clone()).ok())
}

/// The timeline a lookup reads: `explicit`, or the newest timeline of `set` materialized
/// with `knowledge`.
///
/// # Errors
/// [`Error::NotFound`] when the set was never materialized that way;
/// [`Error::InvalidArgument`] when `explicit` is not a timeline of the set or was made with
/// other knowledge.
pub fn choose_timeline(
    store: &Store,
    set: &str,
    explicit: Option<&VersionRef>,
    knowledge: Knowledge,
) -> Result<Manifest> {
    let name = features::timeline_name(set);
    let want = |k: Knowledge| match k {
        Knowledge::AsKnown => "as known at t",
        Knowledge::AsOccurred => "as occurred",
    };
    if let Some(r) = explicit {
        let m = store.resolve(r)?;
        if m.kind != Kind::Timeline
            || m.labels.get(features::SET_KEY).map(String::as_str) != Some(set)
        {
            return Err(Error::invalid(
                "timeline",
                format!("{} is not a timeline of feature set {set}", m.hash),
            ));
        }
        if timeline_knowledge(&m) != Some(knowledge) {
            return Err(Error::invalid(
                "timeline",
                format!(
                    "{} was not materialized {}; choose the matching --as-occurred",
                    m.hash,
                    want(knowledge)
                ),
            ));
        }
        return Ok(m);
    }
    // The newest head of the set's timeline name made with this knowledge (both knowledges
    // share the name).
    let mut found = None;
    for head in store.head_log(&name)?.into_iter().rev() {
        let m = store.manifest(&head.hash)?;
        if m.kind == Kind::Timeline && timeline_knowledge(&m) == Some(knowledge) {
            found = Some(m);
            break;
        }
    }
    found.ok_or_else(|| Error::NotFound {
            reference: format!(
                "a timeline of feature set {set} materialized {} (run `ward materialize --set {set}{}` first)",
                want(knowledge),
                if knowledge == Knowledge::AsOccurred { " --as-occurred" } else { "" }
            ),
        })
}

/// Reads entity rows from a Parquet or CSV (optionally gzip) file.
///
/// # Errors
/// [`Error::Io`], [`Error::Parquet`], [`Error::BadInput`] naming the file.
pub fn read_entities(path: &Path) -> Result<Vec<RecordBatch>> {
    let name = path.to_string_lossy().to_lowercase();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if name.ends_with(".parquet") || name.ends_with(".pq") {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| Error::Parquet {
                path: path.into(),
                source: e,
            })?
            .with_batch_size(65_536)
            .build()
            .map_err(|e| Error::Parquet {
                path: path.into(),
                source: e,
            })?;
        return reader
            .map(|b| {
                b.map_err(|e| Error::BadInput {
                    location: path.display().to_string(),
                    field: "parquet".into(),
                    reason: e.to_string(),
                })
            })
            .collect();
    }
    if name.ends_with(".csv") || name.ends_with(".csv.gz") {
        let mut bytes = Vec::new();
        let mut r: Box<dyn std::io::Read> = if name.ends_with(".gz") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        r.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
        let bad = |e: arrow::error::ArrowError| Error::BadInput {
            location: path.display().to_string(),
            field: "csv".into(),
            reason: e.to_string(),
        };
        // Every column as text: times are parsed by the lookup (with row numbers in errors),
        // and ids keep their leading zeros.
        let header = arrow::csv::reader::Format::default().with_header(true);
        let (schema, _) = header
            .infer_schema(std::io::Cursor::new(&bytes), Some(1))
            .map_err(bad)?;
        let schema = Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), DataType::Utf8, true))
                .collect::<Vec<_>>(),
        );
        let reader = arrow::csv::ReaderBuilder::new(Arc::new(schema))
            .with_header(true)
            .with_batch_size(65_536)
            .build(std::io::Cursor::new(bytes))
            .map_err(bad)?;
        return reader.map(|b| b.map_err(bad)).collect();
    }
    Err(Error::invalid(
        format!("entity file {}", path.display()),
        "use a .parquet or .csv (.csv.gz) file",
    ))
}

/// The patient ids and lookup times (microseconds, UTC) of entity rows, checked.
pub(crate) struct EntityKeys {
    pub(crate) patients: Vec<StringArray>,
    pub(crate) times: Vec<Vec<i64>>,
}

pub(crate) fn entity_keys(
    batches: &[RecordBatch],
    patient_col: &str,
    time_col: &str,
) -> Result<EntityKeys> {
    let mut out = EntityKeys {
        patients: Vec::with_capacity(batches.len()),
        times: Vec::with_capacity(batches.len()),
    };
    let mut row0 = 0usize;
    for b in batches {
        let names = || {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let p = b.column_by_name(patient_col).ok_or_else(|| {
            Error::invalid(
                "entity rows",
                format!("no column {patient_col:?} (columns: {})", names()),
            )
        })?;
        let t = b.column_by_name(time_col).ok_or_else(|| {
            Error::invalid(
                "entity rows",
                format!("no column {time_col:?} (columns: {})", names()),
            )
        })?;
        let p = arrow::compute::cast(p, &DataType::Utf8).map_err(|e| {
            Error::invalid(
                format!("entity column {patient_col:?}"),
                format!("cannot be read as text: {e}"),
            )
        })?;
        let p = p.as_string::<i32>().clone();
        if let Some(i) = (0..p.len()).find(|&i| p.is_null(i)) {
            return Err(Error::invalid(
                format!("entity row {}", row0 + i),
                format!("{patient_col} is null"),
            ));
        }
        out.times.push(times_us(t, time_col, row0)?);
        out.patients.push(p);
        row0 += b.num_rows();
    }
    Ok(out)
}

/// A time column as microseconds since the epoch, UTC.
fn times_us(col: &ArrayRef, name: &str, row0: usize) -> Result<Vec<i64>> {
    let null_at = |i: usize| {
        Error::invalid(
            format!("entity row {}", row0 + i),
            format!("{name} is null"),
        )
    };
    let mut out = Vec::with_capacity(col.len());
    match col.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let us = arrow::compute::cast(
                col,
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            )
            .map_err(|e| Error::invalid(format!("entity column {name:?}"), format!("{e}")))?;
            let us = us.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            for i in 0..us.len() {
                if us.is_null(i) {
                    return Err(null_at(i));
                }
                out.push(us.value(i));
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = arrow::compute::cast(col, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            for i in 0..s.len() {
                if s.is_null(i) {
                    return Err(null_at(i));
                }
                let v = s.value(i);
                let t = crate::store::manifest::parse_time(v.trim()).ok_or_else(|| {
                    Error::invalid(
                        format!("entity row {}", row0 + i),
                        format!("{name} {v:?} is not a time (use RFC 3339 or YYYY-MM-DD)"),
                    )
                })?;
                out.push(t.timestamp_micros());
            }
        }
        other => {
            return Err(Error::invalid(
                format!("entity column {name:?}"),
                format!("type {other} is not a time (use a timestamp, a date or RFC 3339 text)"),
            ))
        }
    }
    Ok(out)
}

/// The output schema of a historical lookup: the entity columns, then per feature its value
/// (`float64`, or `utf8` for text features) and its status (`utf8`: `present`, `no_data`,
/// `outside_ttl`).
///
/// # Errors
/// [`Error::InvalidArgument`] when an entity column has a feature's name.
pub fn training_schema(entity: &Schema, index: &TimelineIndex) -> Result<SchemaRef> {
    training_schema_of(entity, index.features())
}

/// [`training_schema`] of the features `infos`, in their order.
pub(crate) fn training_schema_of(
    entity: &Schema,
    infos: &[(String, features::FeatureInfo)],
) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = entity.fields().iter().map(|f| (**f).clone()).collect();
    for (name, info) in infos {
        let status = format!("{name}{STATUS_SUFFIX}");
        for n in [name.as_str(), status.as_str()] {
            if entity.field_with_name(n).is_ok() {
                return Err(Error::invalid(
                    format!("entity column {n:?}"),
                    "has the name of a feature (or its status) of the set; rename it",
                ));
            }
        }
        let dt = if info.is_text {
            DataType::Utf8
        } else {
            DataType::Float64
        };
        fields.push(Field::new(name, dt, true));
        fields.push(Field::new(status, DataType::Utf8, false));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The text of a status, as training sets and the CLI write it.
pub fn status_str(s: Status) -> &'static str {
    match s {
        Status::Present => "present",
        Status::NoData => "no_data",
        Status::OutsideTtl => "outside_ttl",
    }
}

/// The schema the entity batches share.
pub(crate) fn entity_schema(entities: &[RecordBatch]) -> Result<SchemaRef> {
    let schema = match entities.first() {
        Some(b) => b.schema(),
        None => {
            return Err(Error::invalid(
                "entity rows",
                "no batches (not even an empty one)",
            ));
        }
    };
    if let Some(b) = entities.iter().find(|b| b.schema() != schema) {
        return Err(Error::invalid(
            "entity rows",
            format!(
                "batches have different schemas: {} vs {}",
                schema,
                b.schema()
            ),
        ));
    }
    Ok(schema)
}

/// Rows per unit of parallel work.
const CHUNK: usize = 32_768;

/// The as-of join itself: entity rows against a timeline index, in memory. One output batch
/// per input chunk, in input order; the result does not depend on threads or batch sizes.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the entity row or column that is wrong.
pub fn historical_batches(
    index: &TimelineIndex,
    entities: &[RecordBatch],
    patient_col: &str,
    time_col: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let entity_schema = entity_schema(entities)?;
    let schema = training_schema(&entity_schema, index)?;
    let keys = entity_keys(entities, patient_col, time_col)?;
    // Units of work: (batch, offset, len).
    let mut units = Vec::new();
    for (bi, b) in entities.iter().enumerate() {
        let mut off = 0;
        while off < b.num_rows() {
            let len = CHUNK.min(b.num_rows() - off);
            units.push((bi, off, len));
            off += len;
        }
    }
    let out: Result<Vec<RecordBatch>> = units
        .into_par_iter()
        .map(|(bi, off, len)| {
            let pids = &keys.patients[bi];
            let times = &keys.times[bi][off..off + len];
            let patients: Vec<Option<u32>> = (off..off + len)
                .map(|i| index.patient(pids.value(i)))
                .collect();
            let mut cols: Vec<ArrayRef> = entities[bi].slice(off, len).columns().to_vec();
            // Row by row, every feature of the row's patient in turn: the patient's change
            // points stay in cache across its features.
            enum Values {
                Num(Float64Builder),
                Text(StringBuilder),
            }
            let infos = index.features();
            let mut values: Vec<Values> = infos
                .iter()
                .map(|(_, info)| {
                    if info.is_text {
                        Values::Text(StringBuilder::new())
                    } else {
                        Values::Num(Float64Builder::with_capacity(len))
                    }
                })
                .collect();
            let mut statuses: Vec<StringBuilder> = infos
                .iter()
                .map(|_| StringBuilder::with_capacity(len, len * 8))
                .collect();
            for (p, &t) in patients.iter().zip(times) {
                for (fi, (v, status)) in values.iter_mut().zip(&mut statuses).enumerate() {
                    let r = index.resolve(*p, fi, t);
                    match (v, r) {
                        (Values::Text(v), Resolved::Text(s)) => v.append_value(s),
                        (Values::Text(v), Resolved::Num(x)) => v.append_value(x.to_string()),
                        (Values::Num(v), Resolved::Num(x)) => v.append_value(x),
                        // Text in a numeric feature is not reachable (is_text is false only
                        // when no change point holds text); kept total.
                        (Values::Text(v), Resolved::Missing(_)) => v.append_null(),
                        (Values::Num(v), Resolved::Text(_) | Resolved::Missing(_)) => {
                            v.append_null()
                        }
                    }
                    status.append_value(status_str(r.status()));
                }
            }
            for (v, mut status) in values.into_iter().zip(statuses) {
                cols.push(match v {
                    Values::Num(mut v) => Arc::new(v.finish()),
                    Values::Text(mut v) => Arc::new(v.finish()),
                });
                cols.push(Arc::new(status.finish()));
            }
            Ok(RecordBatch::try_new(schema.clone(), cols)?)
        })
        .collect();
    let mut out = out?;
    if out.is_empty() {
        out.push(RecordBatch::new_empty(schema.clone()));
    }
    Ok((schema, out))
}

/// A historical lookup: joins the entity rows as of their times against the timeline,
/// stores the result as a `training` version and returns its hash. Lineage: inputs =
/// [timeline, entity rows]; definition = the set's definition hash; params = `op`
/// (`historical`), `feature_set`, `knowledge`, `patient_column`, `time_column`, `consent`.
/// A training set is a research export: rows of patients who opted out of research as known
/// now are left out ([`crate::security::deid::apply_research_consent`]) and counted in `consent`.
///
/// # Errors
/// [`Error::NotFound`] for an unknown set, timeline or entity version;
/// [`Error::InvalidArgument`] naming a bad entity row or column; store errors.
pub async fn historical(store: &Store, req: HistoricalRequest) -> Result<HistoricalOutcome> {
    let tm = choose_timeline(store, &req.set, req.timeline.as_ref(), req.knowledge)?;
    let (set, index) = features::load_index(store, &tm.hash).await?;
    let (entities_hash, batches, params, name) =
        prepare_request(store, req, &set, OP_TIMELINE, Vec::new(), None).await?;
    store_training(
        store,
        &set,
        &index,
        tm.hash,
        entities_hash,
        &batches,
        params,
        Target::head_of(name),
    )
    .await
}

/// What every historical lookup works out from its request before computing: the entity
/// rows (with their version), the lineage params (`op`, and for `historical_direct` its
/// `tables` and `definition`) and the training set's version name.
async fn prepare_request(
    store: &Store,
    req: HistoricalRequest,
    set: &FeatureSet,
    op: &str,
    tables: Vec<String>,
    definition: Option<String>,
) -> Result<(ContentHash, Vec<RecordBatch>, Params, String)> {
    let patient_column = req
        .patient_column
        .unwrap_or_else(|| PATIENT_COLUMN.to_string());
    let time_column = req.time_column.unwrap_or_else(|| TIME_COLUMN.to_string());
    let (entities, batches) = stored_entities(
        store,
        req.entities,
        &set.name,
        &patient_column,
        &time_column,
    )
    .await?;
    // A training set is a research export: patients who opted out of research, as known
    // now, are left out (the stored entity rows stay as given; the lineage says what left).
    let (batches, consent) =
        crate::security::deid::apply_research_consent(store, batches, &patient_column, None)
            .await?;
    let params = Params {
        op: op.into(),
        feature_set: set.name.clone(),
        knowledge: req.knowledge,
        patient_column,
        time_column,
        tables,
        definition,
        consent: Some(consent),
    };
    let name = req.name.unwrap_or_else(|| training_name(&set.name));
    Ok((entities, batches, params, name))
}

/// The entity rows of a request: rows given in memory are checked and stored first (kind
/// `other`, name `entities-<set>`); a stored version is read.
async fn stored_entities(
    store: &Store,
    entities: Entities,
    set: &str,
    patient_column: &str,
    time_column: &str,
) -> Result<(ContentHash, Vec<RecordBatch>)> {
    match entities {
        Entities::Batches(batches) => {
            let schema = batches
                .first()
                .map(RecordBatch::schema)
                .ok_or_else(|| Error::invalid("entity rows", "no batches"))?;
            // Check before storing anything.
            entity_keys(&batches, patient_column, time_column)?;
            let opts = PutOptions::new(format!("entities-{set}"), Kind::Other);
            let put = store.put_batches(schema, batches.clone(), opts).await?;
            Ok((put.manifest.hash, batches))
        }
        Entities::Stored(r) => {
            let m = store.resolve(&r)?;
            let (_, batches) = store.read(&m.hash).await?;
            Ok((m.hash, batches))
        }
    }
}

/// A historical lookup computed straight from the latest curated versions, with set
/// `req.set` of `repo` ([`features::historical_direct`]): no timeline is read or stored, and
/// the values are the ones [`historical`] gives over a timeline of the same set materialized
/// from the same versions. The result is stored as a `training` version. Lineage: inputs =
/// the curated versions read (in table order), then the entity rows; definition = the set's
/// definition hash; params = `op` (`historical_direct`), `feature_set`, `knowledge`,
/// `patient_column`, `time_column`, `tables` (the table of each curated input),
/// `definition` (the set's canonical form) and `consent` (the research opt-outs applied, as
/// in [`historical`]), so [`rebuild`] reproduces it.
///
/// Every row the set reads is held in memory at once (no ranges of patients, unlike
/// `ward materialize`).
///
/// # Errors
/// [`Error::InvalidArgument`] when `req.timeline` is given, or naming a bad entity row or
/// column; [`Error::NotFound`] for an unknown set or a curated table never ingested; store
/// and derived-query errors.
pub async fn historical_direct(
    store: &Store,
    repo: &FeatureRepo,
    req: HistoricalRequest,
) -> Result<HistoricalOutcome> {
    if let Some(t) = &req.timeline {
        return Err(Error::invalid(
            "timeline",
            format!("{t:?} given, but a lookup from curated versions reads no timeline"),
        ));
    }
    let set = repo.set(&req.set)?;
    let refs = features::latest_refs(store, set)?;
    let tables = refs.iter().map(|(t, _)| t.clone()).collect();
    let definition = Some(set.canonical_json());
    let (entities_hash, batches, params, name) =
        prepare_request(store, req, set, OP_DIRECT, tables, definition).await?;
    store_direct(
        store,
        set,
        refs,
        entities_hash,
        &batches,
        params,
        Target::head_of(name),
    )
    .await
}

/// Computes a training set straight from the curated versions `refs` and stores it.
async fn store_direct(
    store: &Store,
    set: &FeatureSet,
    refs: Vec<(String, ContentHash)>,
    entities: ContentHash,
    batches: &[RecordBatch],
    params: Params,
    target: Target,
) -> Result<HistoricalOutcome> {
    let inputs = features::read_curated(store, set, &refs).await?;
    let opts = MaterializeOptions {
        knowledge: params.knowledge,
        ..MaterializeOptions::default()
    };
    let (schema, out) = features::historical_direct(
        set,
        inputs,
        batches,
        &params.patient_column,
        &params.time_column,
        &opts,
    )
    .await?;
    let mut inputs: Vec<ContentHash> = refs.iter().map(|(_, h)| *h).collect();
    inputs.push(entities);
    let (hash, rows, created) =
        put_training(store, set, schema, out, inputs, &params, target).await?;
    Ok(HistoricalOutcome {
        hash,
        timeline: None,
        curated: refs,
        entities,
        rows,
        created,
        consent: params.consent,
    })
}

/// Where a training set is published: its name, and whether it becomes that name's head (a
/// new lookup) or not (a rebuild, which recomputes an existing version and must not move
/// the head back to it).
struct Target {
    name: String,
    head: HeadUpdate,
}

impl Target {
    fn head_of(name: String) -> Target {
        Target {
            name,
            head: HeadUpdate::Move,
        }
    }

    fn rebuilt(name: String) -> Target {
        Target {
            name,
            head: HeadUpdate::Keep,
        }
    }
}

/// Stores a training set's batches as a `training` version labelled with its set; its
/// lineage: `inputs`, the set's definition hash, `params`.
async fn put_training(
    store: &Store,
    set: &FeatureSet,
    schema: SchemaRef,
    out: Vec<RecordBatch>,
    inputs: Vec<ContentHash>,
    params: &Params,
    target: Target,
) -> Result<(ContentHash, usize, bool)> {
    let rows = out.iter().map(RecordBatch::num_rows).sum();
    let mut opts = PutOptions::new(target.name, Kind::Training);
    opts.head = target.head;
    opts.lineage = Lineage {
        inputs,
        definition: Some(set.definition_hash()),
        params: serde_json::to_value(params)
            .map_err(|e| Error::Internal(format!("params do not serialize: {e}")))?,
    };
    opts.labels
        .insert(features::SET_KEY.into(), set.name.clone());
    let put = store.put_batches(schema, out, opts).await?;
    Ok((put.manifest.hash, rows, put.created))
}

#[allow(clippy::too_many_arguments)]
async fn store_training(
    store: &Store,
    set: &FeatureSet,
    index: &TimelineIndex,
    timeline: ContentHash,
    entities: ContentHash,
    batches: &[RecordBatch],
    params: Params,
    target: Target,
) -> Result<HistoricalOutcome> {
    let (schema, out) =
        historical_batches(index, batches, &params.patient_column, &params.time_column)?;
    let (hash, rows, created) = put_training(
        store,
        set,
        schema,
        out,
        vec![timeline, entities],
        &params,
        target,
    )
    .await?;
    Ok(HistoricalOutcome {
        hash,
        timeline: Some(timeline),
        curated: Vec::new(),
        entities,
        rows,
        created,
        consent: params.consent,
    })
}

/// Recomputes a training set from its lineage (the timeline and the entity rows it records)
/// and stores it; returns the hash, which is `hash` itself.
///
/// # Errors
/// [`Error::InvalidArgument`] when the version is not a training set made by [`historical`];
/// [`Error::NotFound`] when an input is gone; [`Error::Corrupt`] when the recomputation
/// arrives at another hash.
pub async fn rebuild(store: &Store, hash: &ContentHash) -> Result<ContentHash> {
    let m = store.manifest(hash)?;
    let not_training = || {
        Error::invalid(
            format!("version {hash}"),
            "is not a training set made by a historical lookup",
        )
    };
    let params: Params =
        serde_json::from_value(m.lineage.params.clone()).map_err(|_| not_training())?;
    if m.kind != Kind::Training {
        return Err(not_training());
    }
    let out = match (params.op.as_str(), m.lineage.inputs.as_slice()) {
        (OP_TIMELINE, [timeline, entities]) => {
            let (set, index) = features::load_index(store, timeline).await?;
            let (_, batches) = store.read(entities).await?;
            let batches = replay_consent(store, &params, batches).await?;
            store_training(
                store,
                &set,
                &index,
                *timeline,
                *entities,
                &batches,
                params,
                Target::rebuilt(m.name.clone()),
            )
            .await?
        }
        (OP_DIRECT, [curated @ .., entities]) if curated.len() == params.tables.len() => {
            let corrupt = |what: &str| Error::Corrupt {
                hash: hash.to_string(),
                what: what.to_string(),
            };
            let definition = params
                .definition
                .as_deref()
                .ok_or_else(|| corrupt("its lineage holds no definition"))?;
            let set = FeatureSet::from_canonical_json(definition, &format!("{hash} lineage"))?;
            if Some(set.definition_hash()) != m.lineage.definition {
                return Err(corrupt(
                    "the stored definition does not match the definition hash",
                ));
            }
            let refs: Vec<(String, ContentHash)> = params
                .tables
                .iter()
                .cloned()
                .zip(curated.iter().copied())
                .collect();
            let (_, batches) = store.read(entities).await?;
            let batches = replay_consent(store, &params, batches).await?;
            store_direct(
                store,
                &set,
                refs,
                *entities,
                &batches,
                params,
                Target::rebuilt(m.name.clone()),
            )
            .await?
        }
        _ => return Err(not_training()),
    };
    if out.hash != *hash {
        return Err(Error::Corrupt {
            hash: hash.to_string(),
            what: format!("rebuilt from its lineage it hashes to {}", out.hash),
        });
    }
    Ok(out.hash)
}

/// The entity rows of a training set being rebuilt, less the rows its lineage's consent left
/// out: the same `consent` version read at the same time.
async fn replay_consent(
    store: &Store,
    params: &Params,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let Some(applied) = &params.consent else {
        return Ok(batches);
    };
    let (batches, again) = crate::security::deid::apply_research_consent(
        store,
        batches,
        &params.patient_column,
        Some(applied),
    )
    .await?;
    if &again != applied {
        return Err(Error::Corrupt {
            hash: applied.version.clone(),
            what: format!(
                "consent replayed at {} leaves out {} rows of {} patients, the lineage says \
                 {} of {}",
                applied.at,
                again.excluded_rows,
                again.excluded_patients,
                applied.excluded_rows,
                applied.excluded_patients
            ),
        });
    }
    Ok(batches)
}

/// One set's timeline, held in memory for online lookups.
#[derive(Debug)]
pub struct Serving {
    /// The set (from the timeline's lineage).
    pub set: FeatureSet,
    /// The timeline version.
    pub timeline: ContentHash,
    /// Its index.
    pub index: TimelineIndex,
}

/// An online answer.
#[derive(Debug, Clone)]
pub struct OnlineAnswer {
    /// The timeline version that answered.
    pub timeline: ContentHash,
    /// The time the values hold at.
    pub at: DateTime<Utc>,
    /// The features, in answer order.
    pub features: Vec<String>,
    /// One entry per requested patient, in request order.
    pub patients: Vec<PatientFeatures>,
}

impl Serving {
    /// Loads a stored timeline.
    ///
    /// # Errors
    /// As [`features::load_index`].
    pub async fn load(store: &Store, timeline: &ContentHash) -> Result<Serving> {
        let (set, index) = features::load_index(store, timeline).await?;
        Ok(Serving {
            set,
            timeline: *timeline,
            index,
        })
    }

    /// The positions of the requested features (all of the set when empty), refusing
    /// labels.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a feature the set does not define;
    /// [`Error::FailedPrecondition`] when a requested feature is a label.
    pub fn positions(&self, features: &[String]) -> Result<Vec<usize>> {
        let positions: Vec<usize> = if features.is_empty() {
            (0..self.index.features().len()).collect()
        } else {
            features
                .iter()
                .map(|f| {
                    self.index
                        .feature_position(f)
                        .ok_or_else(|| Error::NotFound {
                            reference: format!("feature {f} in set {}", self.set.name),
                        })
                })
                .collect::<Result<_>>()?
        };
        let labels: Vec<&str> = positions
            .iter()
            .map(|&i| &self.index.features()[i])
            .filter(|(_, info)| info.is_label)
            .map(|(n, _)| n.as_str())
            .collect();
        if !labels.is_empty() {
            return Err(Error::precondition(
                format!("feature set {}", self.set.name),
                format!(
                    "{} {} labels, which look into the future and are refused in online lookups; ask for other features or use a set without labels",
                    labels.join(", "),
                    if labels.len() == 1 { "is a label" } else { "are" }
                ),
            ));
        }
        Ok(positions)
    }

    /// Features of `patients` at `at`, through the rule historical lookups use.
    ///
    /// # Errors
    /// As [`Serving::positions`].
    pub fn answer(
        &self,
        patients: &[String],
        features: &[String],
        at: DateTime<Utc>,
    ) -> Result<OnlineAnswer> {
        let positions = self.positions(features)?;
        let t = at.timestamp_micros();
        let names: Vec<String> = positions
            .iter()
            .map(|&i| self.index.features()[i].0.clone())
            .collect();
        let rows = patients
            .iter()
            .map(|p| {
                let pi = self.index.patient(p);
                PatientFeatures {
                    patient_id: p.clone(),
                    at,
                    values: positions
                        .iter()
                        .zip(&names)
                        .map(|(&fi, n)| (n.clone(), self.index.resolve(pi, fi, t).to_value()))
                        .collect(),
                }
            })
            .collect();
        Ok(OnlineAnswer {
            timeline: self.timeline,
            at,
            features: names,
            patients: rows,
        })
    }
}

/// The latest timelines, in memory, for online lookups. Cheap to clone (shared).
#[derive(Clone)]
pub struct Online {
    store: Store,
    sets: Arc<ArcSwap<HashMap<String, Arc<Serving>>>>,
    /// Serializes loads so two refreshes of one set do not race.
    loading: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sets = self.sets.load();
        f.debug_struct("Online")
            .field("store", &self.store.root())
            .field("sets", &sets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Online {
    /// An online index over `store`, holding nothing yet: sets load on first use or on
    /// [`Online::refresh`].
    pub fn new(store: Store) -> Online {
        Online {
            store,
            sets: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            loading: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The timeline currently served for `set`, if loaded.
    pub fn snapshot(&self, set: &str) -> Option<Arc<Serving>> {
        self.sets.load().get(set).cloned()
    }

    /// Loads the newest "as known" timeline of `set` and swaps it in; requests in flight
    /// finish on the version they started with. Returns the timeline served.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the set was never materialized; load errors.
    pub async fn refresh(&self, set: &str) -> Result<ContentHash> {
        let _guard = self.loading.lock().await;
        let m = choose_timeline(&self.store, set, None, Knowledge::AsKnown)?;
        if let Some(s) = self.snapshot(set) {
            if s.timeline == m.hash {
                return Ok(m.hash);
            }
        }
        let serving = Arc::new(Serving::load(&self.store, &m.hash).await?);
        self.sets.rcu(|old| {
            let mut new = HashMap::clone(old);
            new.insert(set.to_string(), serving.clone());
            new
        });
        Ok(m.hash)
    }

    /// Features of `patients` at `at` (default: now, from the store's clock) from the
    /// timeline in memory (loaded on first use). Unknown patients get no-data values.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a set never materialized or an unknown feature;
    /// [`Error::FailedPrecondition`] for labels.
    pub async fn get(
        &self,
        set: &str,
        patients: &[String],
        features: &[String],
        at: Option<DateTime<Utc>>,
    ) -> Result<OnlineAnswer> {
        let serving = match self.snapshot(set) {
            Some(s) => s,
            None => {
                self.refresh(set).await?;
                self.snapshot(set).ok_or_else(|| {
                    Error::Internal(format!("set {set} not served right after loading"))
                })?
            }
        };
        let at = at.unwrap_or_else(|| self.store.clock().now());
        serving.answer(patients, features, at)
    }
}
