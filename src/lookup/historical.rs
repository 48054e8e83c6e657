//! Historical lookups: entity rows joined as of each row's time against a stored timeline
//! ([`historical`]) or straight from curated versions ([`historical_direct`]), stored as a
//! `training` version with the lineage [`super::rebuild`] replays; the timeline to read
//! ([`choose_timeline`]) and the entity rows read from a file ([`read_entities`]).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{PATIENT_COLUMN, TIME_COLUMN};
use crate::error::{Error, Result};
use crate::features::{
    self, entity_keys, entity_schema, status_str, training_schema_of, FeatureRepo, FeatureSet,
    Knowledge, MaterializeOptions, Resolved, TimelineIndex,
};
use crate::hash::ContentHash;
use crate::store::{HeadUpdate, Kind, Lineage, Manifest, PutOptions, Store, VersionRef};

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
pub(super) struct Params {
    /// `historical` (from a timeline) or `historical_direct` (from curated versions).
    pub(super) op: String,
    pub(super) feature_set: String,
    pub(super) knowledge: Knowledge,
    pub(super) patient_column: String,
    pub(super) time_column: String,
    /// `historical_direct`: the curated table of each lineage input before the entity rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) tables: Vec<String>,
    /// `historical_direct`: the set's canonical form (its BLAKE3 is `lineage.definition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) definition: Option<String>,
    /// The research opt-outs applied to the entity rows (absent only in training sets made
    /// before Ward applied consent; those are rebuilt without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) consent: Option<crate::security::deid::ConsentApplied>,
}

/// The `op` of a training set made from a timeline.
pub(super) const OP_TIMELINE: &str = "historical";

/// The `op` of a training set made straight from curated versions.
pub(super) const OP_DIRECT: &str = "historical_direct";

/// The version name of a set's training sets: `training-<set>`.
pub fn training_name(set: &str) -> String {
    format!("training-{set}")
}

/// The knowledge a timeline was materialized with (from its lineage).
pub(super) fn timeline_knowledge(m: &Manifest) -> Option<Knowledge> {
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

/// The output schema of a historical lookup: the entity columns, then per feature its value
/// (`float64`, or `utf8` for text features) and its status (`utf8`: `present`, `no_data`,
/// `outside_ttl`).
///
/// # Errors
/// [`Error::InvalidArgument`] when an entity column has a feature's name.
pub fn training_schema(entity: &Schema, index: &TimelineIndex) -> Result<SchemaRef> {
    training_schema_of(entity, index.features())
}

/// Rows per unit of parallel work.
const CHUNK: usize = 32_768;

/// The column a training set made from a person-keyed timeline holds after the entity
/// columns: the person id each entity row's patient id resolved to at the row's time.
pub const PERSON_COLUMN: &str = "person_id";

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
    historical_batches_of(index, None, entities, patient_col, time_col)
}

/// [`historical_batches`] against a timeline keyed by person when `persons` is given: each
/// entity row's patient id is resolved to its person as known at the row's time
/// ([`crate::mpi::Persons::person_at`]), the features are the person's, and the resolved id
/// is written in a [`PERSON_COLUMN`] column after the entity columns.
///
/// # Errors
/// As [`historical_batches`]; [`Error::InvalidArgument`] when `persons` is given and an
/// entity column is named [`PERSON_COLUMN`].
pub fn historical_batches_of(
    index: &TimelineIndex,
    persons: Option<&crate::mpi::Persons>,
    entities: &[RecordBatch],
    patient_col: &str,
    time_col: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut entity_schema = entity_schema(entities)?;
    if persons.is_some() {
        if entity_schema.field_with_name(PERSON_COLUMN).is_ok() {
            return Err(Error::invalid(
                format!("entity column {PERSON_COLUMN:?}"),
                "a lookup against a timeline keyed by person writes the resolved person id \
                 in this column; rename it",
            ));
        }
        let mut fields: Vec<Field> = entity_schema
            .fields()
            .iter()
            .map(|f| (**f).clone())
            .collect();
        fields.push(Field::new(PERSON_COLUMN, DataType::Utf8, false));
        entity_schema = Arc::new(Schema::new(fields));
    }
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
            // Against a person-keyed timeline: each row's person as known at its time.
            let resolved: Option<Vec<&str>> = persons.map(|ps| {
                (off..off + len)
                    .zip(times)
                    .map(|(i, &t)| ps.person_at(pids.value(i), t))
                    .collect()
            });
            let patients: Vec<Option<u32>> = (off..off + len)
                .enumerate()
                .map(|(k, i)| index.patient(resolved.as_ref().map_or(pids.value(i), |r| r[k])))
                .collect();
            let mut cols: Vec<ArrayRef> = entities[bi].slice(off, len).columns().to_vec();
            if let Some(r) = &resolved {
                cols.push(Arc::new(arrow::array::StringArray::from(r.clone())));
            }
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
    historical_from(store, req, None).await
}

/// A historical request whose named versions are resolved ([`resolve_historical`]): what a
/// caller records before the lookup runs (the versions the request names, the patients of
/// its entity rows, the training set's name), then runs with [`historical_resolved`]. The
/// entity rows are read once: [`ResolvedHistorical::patients`] keeps the rows it reads for
/// the lookup.
#[derive(Debug, Clone)]
pub struct ResolvedHistorical {
    request: HistoricalRequest,
    /// The stored entity rows, once read (their version and rows).
    read: Option<(ContentHash, Vec<RecordBatch>)>,
    /// The timeline the request names, if it names one.
    pub timeline: Option<ContentHash>,
    /// The stored entity rows' version, if the request names one.
    pub stored_entities: Option<ContentHash>,
    /// The training set's version name (the request's, or `training-<set>`).
    pub name: String,
}

/// Resolves the versions `req` names (its timeline, its stored entity rows).
///
/// # Errors
/// [`Error::NotFound`] for an unknown version.
pub fn resolve_historical(store: &Store, req: HistoricalRequest) -> Result<ResolvedHistorical> {
    let timeline = match &req.timeline {
        Some(r) => Some(store.resolve(r)?.hash),
        None => None,
    };
    let stored_entities = match &req.entities {
        Entities::Stored(r) => Some(store.resolve(r)?.hash),
        Entities::Batches(_) => None,
    };
    let name = req.name.clone().unwrap_or_else(|| training_name(&req.set));
    Ok(ResolvedHistorical {
        request: req,
        read: None,
        timeline,
        stored_entities,
        name,
    })
}

impl ResolvedHistorical {
    /// The patient ids of the entity rows, in row order. Stored rows are read here and kept
    /// for [`historical_resolved`].
    ///
    /// # Errors
    /// [`Error::BadInput`] when the entity rows have no patient column; store errors.
    pub async fn patients(&mut self, store: &Store) -> Result<Vec<String>> {
        if let (Some(hash), None) = (self.stored_entities, &self.read) {
            self.read = Some((hash, store.read(&hash).await?.1));
        }
        let column = self
            .request
            .patient_column
            .clone()
            .unwrap_or_else(|| PATIENT_COLUMN.to_string());
        let batches: &[RecordBatch] = match (&self.request.entities, &self.read) {
            (_, Some((_, rows))) => rows,
            (Entities::Batches(b), None) => b,
            (Entities::Stored(_), None) => &[],
        };
        let mut ids = Vec::new();
        for (bi, b) in batches.iter().enumerate() {
            let col = b.column_by_name(&column).ok_or_else(|| Error::BadInput {
                location: format!("entities batch {bi}"),
                field: column.clone(),
                reason: "no such column: the entity rows need patient ids".into(),
            })?;
            let col = arrow::compute::cast(col, &DataType::Utf8)?;
            ids.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
        }
        Ok(ids)
    }
}

/// [`historical`] of a resolved request: the entity rows it read are not read again.
///
/// # Errors
/// As [`historical`].
pub async fn historical_resolved(
    store: &Store,
    resolved: ResolvedHistorical,
) -> Result<HistoricalOutcome> {
    historical_from(store, resolved.request, resolved.read).await
}

/// [`historical`], with the stored entity rows already `read` if given.
async fn historical_from(
    store: &Store,
    req: HistoricalRequest,
    read: Option<(ContentHash, Vec<RecordBatch>)>,
) -> Result<HistoricalOutcome> {
    let tm = choose_timeline(store, &req.set, req.timeline.as_ref(), req.knowledge)?;
    let (set, index) = features::load_index(store, &tm.hash).await?;
    let (entities_hash, batches, params, name) =
        prepare_request(store, req, &set, OP_TIMELINE, Vec::new(), None, read).await?;
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
    read: Option<(ContentHash, Vec<RecordBatch>)>,
) -> Result<(ContentHash, Vec<RecordBatch>, Params, String)> {
    let patient_column = req
        .patient_column
        .unwrap_or_else(|| PATIENT_COLUMN.to_string());
    let time_column = req.time_column.unwrap_or_else(|| TIME_COLUMN.to_string());
    let (entities, batches) = match read {
        Some(read) => read,
        None => {
            stored_entities(
                store,
                req.entities,
                &set.name,
                &patient_column,
                &time_column,
            )
            .await?
        }
    };
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
        prepare_request(store, req, set, OP_DIRECT, tables, definition, None).await?;
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
pub(super) async fn store_direct(
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
pub(super) struct Target {
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

    pub(super) fn rebuilt(name: String) -> Target {
        Target {
            name,
            head: HeadUpdate::Keep,
        }
    }
}

/// Stores a training set's batches as a `training` version labelled with its set; its
/// lineage: `inputs`, the set's definition hash, `params`.
pub(super) async fn put_training(
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
pub(super) async fn store_training(
    store: &Store,
    set: &FeatureSet,
    index: &TimelineIndex,
    timeline: ContentHash,
    entities: ContentHash,
    batches: &[RecordBatch],
    params: Params,
    target: Target,
) -> Result<HistoricalOutcome> {
    // A person-keyed timeline resolves each row's id with the links of its lineage.
    let persons = features::timeline_persons(store, &timeline).await?;
    let (schema, out) = historical_batches_of(
        index,
        persons.as_deref(),
        batches,
        &params.patient_column,
        &params.time_column,
    )?;
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
