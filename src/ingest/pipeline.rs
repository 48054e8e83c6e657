//! One ingest run, end to end: keep the raw input, parse it, merge the curated rows into new
//! curated versions, set bad records aside in quarantine, report.
//!
//! ELT: the raw bytes of every input file are stored first, verbatim, as a `raw` version
//! (columns `file`, `chunk`, `bytes`; a file is cut into 8 MiB chunks). Every curated and
//! quarantine version written by the run names that raw hash in its lineage, so the raw can
//! be curated again later with a newer mapping.
//!
//! Curated versions are cumulative: the new version of `encounters` holds the previous
//! version's rows and this run's, sorted into a canonical order and with exact duplicate rows
//! removed. So ingesting the same input twice gives the same hashes, file order never
//! changes a hash, and nothing is edited in place: the previous version stays as it was.
//!
//! A re-sent record adds nothing: rows are deduplicated exactly, and a row of this run that
//! carries no knowledge time of its own (its `known_at` is the run's ingestion time) and
//! repeats the current version of its record (same id, same content but for `source_system`,
//! `source_id` and `known_at`) is dropped ([`drop_resent`]), so ingesting the same export
//! every night does not grow the tables. A record whose source dates it (FHIR
//! `meta.lastUpdated`, HL7 v2 `MSH-7`, a mapped `known_at`) is a version at that time: sent
//! again unchanged it is an exact duplicate, also dropped.
//!
//! Concurrent runs (two `ward ingest` processes, two `IngestPaths` calls) never lose rows:
//! each new curated or quarantine version is published as the head of its table by
//! compare-and-swap on the head it was merged onto (`store::heads`). A run that loses the
//! race merges its rows again onto the new head and retries ([`OnConflict::Retry`], the
//! default), or fails with [`Error::Conflict`] ([`OnConflict::Fail`]). Since a merge is a
//! set union, the tables after any number of concurrent runs equal those of one run over all
//! their inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, LargeBinaryBuilder, RecordBatch, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::mapping::Mapping;
use super::read::ReadPolicy;
use super::{crossrun, fhir, hl7v2, mapping, BadRecord, Context, Input, ParsedBatches};
use crate::curated::Table;
use crate::error::{Error, Result};
use crate::hash::bucketed::{bucket_ids, split_into_buckets, Bucketing, DEFAULT_BUCKETS};
use crate::hash::ContentHash;
use crate::store::bucketed::BucketContent;
use crate::store::{HeadUpdate, Kind, Lineage, PutOptions, Store};

/// Raw files are stored in chunks of this many bytes.
const RAW_CHUNK: usize = 8 << 20;

/// The built-in mappings' texts, hashed as the definition of the versions they make.
const SYNTHEA_MAPPING: &str = include_str!("../../mappings/synthea.toml");
const CURATED_MAPPING: &str = include_str!("../../mappings/curated.toml");

/// The input formats `ward ingest --format` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Generic CSV (gzip too) through a mapping (`--mapping`).
    Csv,
    /// Generic Parquet through a mapping (`--mapping`).
    Parquet,
    /// Synthea CSV export, through the shipped mapping.
    Synthea,
    /// FHIR R4 Bundles (or single resources) as JSON documents.
    Fhir,
    /// FHIR Bulk Data NDJSON, one resource a line.
    FhirNdjson,
    /// HL7 v2 ADT and ORU messages.
    Hl7v2,
}

impl Format {
    /// The name as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Synthea => "synthea",
            Format::Fhir => "fhir",
            Format::FhirNdjson => "fhir-ndjson",
            Format::Hl7v2 => "hl7v2",
        }
    }
}

/// When too many bad records make the run fail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxBad {
    /// More than this many bad records.
    Count(u64),
    /// More than this share of all records (0.0 to 1.0).
    Fraction(f64),
}

impl std::str::FromStr for MaxBad {
    type Err = Error;

    /// `100` (a count) or `0.05` / `5%` (a share).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "--max-bad",
                format!("{s:?}: give a count (100) or a share (0.05 or 5%)"),
            )
        };
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            return (0.0..=100.0)
                .contains(&v)
                .then_some(MaxBad::Fraction(v / 100.0))
                .ok_or_else(bad);
        }
        if let Ok(n) = s.parse::<u64>() {
            return Ok(MaxBad::Count(n));
        }
        let v: f64 = s.parse().map_err(|_| bad())?;
        (0.0..=1.0)
            .contains(&v)
            .then_some(MaxBad::Fraction(v))
            .ok_or_else(bad)
    }
}

/// What a run does when another writer moved a table's head while it merged onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnConflict {
    /// Merge again onto the new head and retry (as often as the head keeps moving).
    #[default]
    Retry,
    /// Fail with [`Error::Conflict`]; versions already published by the run stay.
    Fail,
}

/// Settings of one ingest run.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The input format.
    pub format: Format,
    /// The mapping for `csv`, `parquet` and `synthea`; `None`: the built-in one of the format
    /// (`Mapping::curated` for `csv` and `parquet`, `Mapping::synthea` for `synthea`).
    pub mapping: Option<Mapping>,
    /// The mapping's text, hashed into the curated versions' lineage as their definition
    /// (`None` with `mapping` `None`: the built-in mapping's text is hashed).
    pub mapping_text: Option<String>,
    /// Fail (writing no curated version) when bad records exceed this.
    pub max_bad: Option<MaxBad>,
    /// Parsing settings (ingestion time, default zone).
    pub context: Context,
    /// Which paths may be read and how much ([`ReadPolicy::default`]: any path, the default
    /// caps).
    pub read: ReadPolicy,
}

/// What an ingest run did.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// The raw version holding the input verbatim.
    pub raw: ContentHash,
    /// Input files read.
    pub files: usize,
    /// Input bytes read (after decompression).
    pub bytes: u64,
    /// Per curated table written: the new version, rows this run contributed, rows in all.
    pub curated: Vec<CuratedOutcome>,
    /// The quarantine version, when the run had bad records.
    pub quarantine: Option<ContentHash>,
    /// Bad records per `table/reason`.
    pub bad: BTreeMap<String, u64>,
    /// Skipped records per kind (e.g. `ADT^A09`).
    pub skipped: BTreeMap<String, u64>,
    /// HL7 v2: what the run read of the replay state earlier runs left, and wrote to it
    /// (`crossrun`).
    pub state: Option<crossrun::StateReport>,
}

impl IngestReport {
    /// Total bad records.
    pub fn bad_total(&self) -> u64 {
        self.bad.values().sum()
    }
}

/// One curated table written by a run.
#[derive(Debug, Clone, Serialize)]
pub struct CuratedOutcome {
    /// The table.
    pub table: String,
    /// Its new version.
    pub hash: ContentHash,
    /// Rows parsed from this run's input.
    pub parsed_rows: u64,
    /// Rows in the new version (previous rows included, duplicates removed).
    pub total_rows: u64,
    /// Rows of this run dropped because they repeated their record's current version (a
    /// re-sent record; see the module documentation).
    pub unchanged_rows: u64,
}

/// The files under `paths` (directories are walked, in name order, symbolic links followed
/// with loops refused; only regular files), as `ward ingest` reads them: no roots, the
/// default caps ([`super::read`]).
///
/// # Errors
/// As [`input_files`].
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    Ok(input_files(paths, &ReadPolicy::default())?
        .into_iter()
        .map(|(f, _)| f)
        .collect())
}

/// The files under `paths` with the names Ward records for them (in `source_system`, raw
/// versions and quarantine locations): a file given directly is named by its file name, a file
/// found in a directory by its path inside that directory. Names do not depend on where the
/// export was unpacked, so the same export ingested from another folder gives the same hashes.
/// Only paths `policy` allows ([`super::read::input_files`]).
///
/// # Errors
/// As [`super::read::input_files`]: a path outside the policy's roots, a link loop, a file
/// that is not a regular file, a path that cannot be read.
pub fn input_files(paths: &[PathBuf], policy: &ReadPolicy) -> Result<Vec<(PathBuf, String)>> {
    super::read::input_files(paths, policy)
}

/// Reads one input file within `policy`'s caps, gunzipping `*.gz`; returns the name parsers
/// see (without `.gz`).
fn read_input(path: &Path, name: &str, policy: &ReadPolicy) -> Result<(String, Vec<u8>, Vec<u8>)> {
    super::read::read_input(path, name, policy)
}

/// Runs one ingest: see the module documentation.
///
/// # Errors
/// [`Error::Io`] for unreadable inputs; [`Error::BadInput`] for a `.gz` file that is not
/// gzip; [`Error::InvalidArgument`] for `csv`/`parquet` without a mapping when no input is
/// in the curated layout, or when bad records exceed `max_bad` (the quarantine version is
/// still written so they can be inspected); store errors.
pub async fn ingest(
    store: &Store,
    paths: &[PathBuf],
    opts: &IngestOptions,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<IngestReport> {
    ingest_with(store, paths, opts, progress, OnConflict::Retry).await
}

/// As [`ingest`], choosing what happens when another writer moves a table's head during the
/// run.
///
/// # Errors
/// As [`ingest`]; [`Error::Conflict`] with [`OnConflict::Fail`] when a head moved.
pub async fn ingest_with(
    store: &Store,
    paths: &[PathBuf],
    opts: &IngestOptions,
    progress: Option<&indicatif::ProgressBar>,
    on_conflict: OnConflict,
) -> Result<IngestReport> {
    let files = input_files(paths, &opts.read)?;
    if files.is_empty() {
        return Err(Error::invalid("inputs", "no input files found"));
    }
    let mut read = Vec::with_capacity(files.len());
    for (f, display) in &files {
        let (name, raw, content) = read_input(f, display, &opts.read)?;
        if let Some(p) = progress {
            p.inc(raw.len() as u64);
        }
        read.push(ReadInput {
            raw_name: display.clone(),
            name,
            raw,
            content,
        });
    }
    check_curated_layout(opts, &files, &parser_inputs(&read))?;
    ingest_read(store, read, Vec::new(), None, opts, on_conflict).await
}

/// One input held in memory, for [`ingest_inputs`]: the name Ward records for it (in
/// `source_system` when a record names no source, in the raw version and in quarantine
/// locations) and its bytes.
#[derive(Debug, Clone)]
pub struct NamedInput {
    /// The name, as a file's name would be.
    pub name: String,
    /// The content.
    pub bytes: Vec<u8>,
}

/// As [`ingest_with`], over inputs already in memory instead of paths: the same run (raw
/// version, parse, quarantine, curated versions), so inputs with the same names and bytes as
/// files give the same curated versions. `extra_bad` are records the caller already found
/// bad (they join the run's quarantine); `feed`, when given, is recorded in the lineage
/// params of every version of the run under the key `feed` (a live feed's sealed range:
/// `docs/live.md`).
///
/// # Errors
/// As [`ingest_with`]; [`Error::InvalidArgument`] when there is neither an input nor an
/// extra bad record.
pub async fn ingest_inputs(
    store: &Store,
    inputs: Vec<NamedInput>,
    extra_bad: Vec<BadRecord>,
    feed: Option<serde_json::Value>,
    opts: &IngestOptions,
    on_conflict: OnConflict,
) -> Result<IngestReport> {
    if inputs.is_empty() && extra_bad.is_empty() {
        return Err(Error::invalid("inputs", "no input to ingest"));
    }
    let read = inputs
        .into_iter()
        .map(|i| ReadInput {
            raw_name: i.name.clone(),
            name: i.name,
            raw: Vec::new(),
            content: i.bytes,
        })
        .collect();
    ingest_read(store, read, extra_bad, feed, opts, on_conflict).await
}

/// One input of a run, read: the name its raw bytes are kept under, the name parsers see,
/// the raw bytes (empty: the same as `content`) and the content.
struct ReadInput {
    raw_name: String,
    name: String,
    raw: Vec<u8>,
    content: Vec<u8>,
}

/// The inputs as parsers see them (name and content).
fn parser_inputs(read: &[ReadInput]) -> Vec<Input<'_>> {
    read.iter()
        .map(|r| Input {
            name: &r.name,
            bytes: &r.content,
        })
        .collect()
}

/// The run after its inputs are read: see the module documentation.
async fn ingest_read(
    store: &Store,
    read: Vec<ReadInput>,
    extra_bad: Vec<BadRecord>,
    feed: Option<serde_json::Value>,
    opts: &IngestOptions,
    on_conflict: OnConflict,
) -> Result<IngestReport> {
    let n_files = read.len();
    let bytes: u64 = read.iter().map(|r| r.content.len() as u64).sum();
    let with_feed = |mut params: serde_json::Value| {
        if let (Some(f), Some(map)) = (&feed, params.as_object_mut()) {
            map.insert("feed".into(), f.clone());
        }
        params
    };

    // 1. The raw input, verbatim.
    let raw_batch = raw_table(&read)?;
    let mut raw_opts = PutOptions::new(format!("raw-{}", opts.format.as_str()), Kind::Raw);
    raw_opts.lineage.params =
        with_feed(serde_json::json!({ "op": "ingest", "format": opts.format }));
    let raw = store
        .put_batches(raw_batch.schema(), vec![raw_batch], raw_opts)
        .await?
        .manifest
        .hash;
    let mut read = read;
    for r in &mut read {
        r.raw = Vec::new();
    }

    crate::alloc::log_stage("ingest: read, raw stored");
    // 2. Parse (HL7 v2: after the state earlier runs left, see `crossrun`).
    let inputs = parser_inputs(&read);
    let (state_hash, mut state_report, (mut parsed, delta)) = match opts.format {
        Format::Hl7v2 => {
            let (hash, report, parsed) = parse_hl7v2(store, raw, &inputs, &opts.context).await?;
            (hash, Some(report), parsed)
        }
        _ => (None, None, (parse(opts, &inputs)?, Vec::new())),
    };
    crate::alloc::log_stage("ingest: parsed");
    drop(inputs);
    drop(read);
    parsed.bad.extend(extra_bad);

    let mut bad = BTreeMap::new();
    for b in &parsed.bad {
        let table = b.table.map(Table::name).unwrap_or("-");
        *bad.entry(format!("{table}/{}", b.reason)).or_insert(0u64) += 1;
    }
    let mut skipped = BTreeMap::new();
    for s in &parsed.skipped {
        *skipped.entry(s.what.clone()).or_insert(0u64) += 1;
    }
    let definition =
        definition_text(opts).map(|t| ContentHash(*blake3::hash(t.as_bytes()).as_bytes()));
    let lineage = |prev: Option<ContentHash>, table: &str| Lineage {
        inputs: prev.into_iter().chain([raw]).collect(),
        definition,
        params: {
            let mut params = with_feed(serde_json::json!({
                "op": "ingest", "format": opts.format, "table": table,
            }));
            if let (Some(h), Some(map)) = (state_hash, params.as_object_mut()) {
                map.insert(crossrun::STATE.into(), h.to_string().into());
            }
            params
        },
    };

    // 3. Quarantine first, so it exists even when the run then fails on --max-bad.
    let mut quarantine = None;
    if !parsed.bad.is_empty() {
        let batch = quarantine_batch(&parsed.bad)?;
        let merge = Merge {
            batch: Some(&batch),
            ..Merge::default()
        };
        let merged = commit_merged(
            store,
            "quarantine",
            Kind::Quarantine,
            merge,
            |prev| lineage(prev, "quarantine"),
            on_conflict,
        )
        .await?;
        quarantine = merged.map(|(hash, _, _)| hash);
    }
    let rows: u64 = Table::ALL.iter().map(|t| parsed.rows(*t) as u64).sum();
    let total_bad = parsed.bad.len() as u64;
    let records = rows + total_bad + parsed.skipped.len() as u64;
    if let Some(limit) = opts.max_bad {
        let over = match limit {
            MaxBad::Count(n) => total_bad > n,
            MaxBad::Fraction(f) => records > 0 && total_bad as f64 / records as f64 > f,
        };
        if over {
            return Err(Error::invalid(
                "input",
                format!(
                    "{total_bad} bad records of {records} exceed --max-bad; no curated version written (see the quarantine version {})",
                    quarantine.map(|q| q.to_string()).unwrap_or_default()
                ),
            ));
        }
    }

    // 4. Curated versions. FHIR versions are ordered with the stored ones of the same
    // resource (`crossrun::FhirVersions`); a table whose only change is that (care_team,
    // when an encounter's new version has no participants) is merged too.
    let fhir = crossrun::FhirVersions::new(&parsed.versions);
    let mut work: Vec<(Table, Option<RecordBatch>)> = parsed
        .batches
        .into_iter()
        .map(|(t, b)| (t, Some(b)))
        .collect();
    if fhir.touches(Table::CareTeam)
        && !work.iter().any(|(t, _)| *t == Table::CareTeam)
        && store.head(Table::CareTeam.name())?.is_some()
    {
        work.push((Table::CareTeam, None));
        work.sort_by_key(|(t, _)| Table::ALL.iter().position(|a| a == t));
    }
    let replaced = std::mem::take(&mut parsed.replaced);
    let mut curated = Vec::new();
    for (table, batch) in work {
        let n = batch.as_ref().map_or(0, RecordBatch::num_rows);
        let remove = replaced.iter().find(|(t, _)| *t == table).map(|(_, b)| b);
        let Some((hash, total_rows, unchanged_rows)) = commit_merged(
            store,
            table.name(),
            Kind::Curated,
            Merge {
                batch: batch.as_ref(),
                remove,
                resent: Some((table, opts.context.ingested_at)),
                versions: Some((&fhir, table)),
            },
            |prev| lineage(prev, table.name()),
            on_conflict,
        )
        .await?
        else {
            continue;
        };
        crate::alloc::log_stage(table.name());
        curated.push(CuratedOutcome {
            table: table.name().to_string(),
            hash,
            parsed_rows: n as u64,
            total_rows,
            unchanged_rows,
        });
    }

    // 5. The state the next runs start from (HL7 v2), once the curated versions hold it.
    if let Some(report) = state_report.as_mut().filter(|_| !delta.is_empty()) {
        let started = std::time::Instant::now();
        let changed = delta.len();
        let committed = crossrun::commit_state(store, delta, raw, on_conflict).await?;
        crate::alloc::log_stage("ingest: state written");
        report.entries_written = changed as u64;
        report.buckets_written = committed.buckets;
        report.written = Some(committed.hash);
        tracing::info!(
            changed,
            buckets = committed.buckets,
            secs = started.elapsed().as_secs_f64(),
            "{} written",
            crossrun::STATE
        );
    }
    Ok(IngestReport {
        raw,
        files: n_files,
        bytes,
        curated,
        quarantine,
        bad,
        skipped,
        state: state_report,
    })
}

/// Parses an HL7 v2 run after the state earlier runs left (`crossrun`): replays the run
/// after the buckets of the state loaded so far, loading the buckets a replay missed, until
/// a replay misses none (`hl7v2::carry` explains why that last replay is the one after the
/// whole state). Gives the state version started from, what was read of it, and the run's
/// rows and changed state entries.
async fn parse_hl7v2(
    store: &Store,
    raw: ContentHash,
    inputs: &[Input<'_>],
    ctx: &Context,
) -> Result<(
    Option<ContentHash>,
    crossrun::StateReport,
    (ParsedBatches, Vec<(String, String)>),
)> {
    let started = std::time::Instant::now();
    let st = crossrun::load_state(store, raw).await?;
    let mut report = crossrun::StateReport {
        read_from: st.hash,
        entries_stored: st.stored,
        ..Default::default()
    };
    match &st.view.loaded {
        hl7v2::Loaded::Buckets { count, .. } => report.buckets = *count,
        hl7v2::Loaded::All => {
            report.entries_read = st.stored;
        }
        hl7v2::Loaded::Nothing => {}
    }
    let damaged = |reason: String| Error::Store {
        path: store.root().to_path_buf(),
        reason: format!("the {} version cannot be read: {reason}", crossrun::STATE),
    };
    let mut view = st.view;
    let (parsed, carry) = loop {
        report.replays += 1;
        let (parsed, mut carry) = hl7v2::parse_after(inputs, ctx, view).map_err(damaged)?;
        if carry.missing.is_empty() {
            break (parsed, carry);
        }
        let Some(hash) = st.hash else {
            return Err(Error::Internal(format!(
                "the replay missed {} buckets of no state",
                carry.missing.len()
            )));
        };
        view = std::mem::take(&mut carry.state);
        report.entries_read +=
            crossrun::load_buckets(store, &hash, &mut view, &carry.missing).await?;
        report.buckets_read += carry.missing.len() as u64;
    };
    tracing::info!(
        stored = report.entries_stored,
        buckets_read = report.buckets_read,
        entries_read = report.entries_read,
        replays = report.replays,
        secs = started.elapsed().as_secs_f64(),
        "{} read",
        crossrun::STATE
    );
    crate::alloc::log_stage("ingest: replayed");
    let mut batches = parsed.into_batches()?;
    batches.replaced = carry.replaced.to_batches()?;
    crate::alloc::log_stage("ingest: rows as batches");
    Ok((st.hash, report, (batches, carry.delta)))
}

/// The input's curated rows as record batches: FHIR straight into column builders, the other
/// sources through their row structs.
fn parse(opts: &IngestOptions, inputs: &[Input<'_>]) -> Result<ParsedBatches, ArrowError> {
    let ctx = &opts.context;
    let parsed = match opts.format {
        Format::Hl7v2 => hl7v2::parse(inputs, ctx),
        Format::Fhir => return fhir::parse_batches(inputs, fhir::Framing::Bundle, ctx),
        Format::FhirNdjson => return fhir::parse_batches(inputs, fhir::Framing::Ndjson, ctx),
        Format::Synthea => {
            let m = opts.mapping.clone().unwrap_or_else(Mapping::synthea);
            mapping::parse(&m, inputs, ctx)
        }
        Format::Csv | Format::Parquet => {
            let m = opts.mapping.clone().unwrap_or_else(Mapping::curated);
            mapping::parse(&m, inputs, ctx)
        }
    };
    parsed.into_batches()
}

/// The text of the mapping a run applies: the user's, else the built-in one of the format
/// (`mappings/synthea.toml`, `mappings/curated.toml`). Its hash is the curated versions'
/// definition, so a version names the exact rules that made it.
fn definition_text(opts: &IngestOptions) -> Option<&str> {
    match (&opts.mapping_text, opts.format) {
        (Some(t), _) => Some(t.as_str()),
        (None, Format::Synthea) => Some(SYNTHEA_MAPPING),
        (None, Format::Csv | Format::Parquet) => Some(CURATED_MAPPING),
        (None, _) => None,
    }
}

/// Refuses, before anything is written, a `csv`/`parquet` run without `--mapping` none of
/// whose files is in Ward's curated layout (named `<table>.csv`/`.parquet` and holding the
/// table's required columns): such an export needs a mapping, and quarantining or skipping
/// every record would look like success. `inputs` are the decompressed files.
fn check_curated_layout(
    opts: &IngestOptions,
    files: &[(PathBuf, String)],
    inputs: &[Input<'_>],
) -> Result<()> {
    if !matches!(opts.format, Format::Csv | Format::Parquet) || opts.mapping.is_some() {
        return Ok(());
    }
    let mut problems = Vec::new();
    for ((path, _), input) in files.iter().zip(inputs) {
        let base = input
            .name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(input.name)
            .to_ascii_lowercase();
        let Some((table, parquet)) = Table::ALL.iter().find_map(|t| {
            if base == format!("{}.csv", t.name()) {
                Some((*t, false))
            } else if base == format!("{}.parquet", t.name()) {
                Some((*t, true))
            } else {
                None
            }
        }) else {
            continue;
        };
        let columns = if parquet {
            parquet_columns(path, input.bytes)
        } else {
            Some(csv_header(input.bytes))
        };
        // A Parquet file whose footer cannot be read is left to the mapping, which
        // quarantines it with the reader's reason.
        let Some(columns) = columns else {
            return Ok(());
        };
        let missing: Vec<String> = table
            .schema()
            .fields()
            .iter()
            .filter(|f| !f.is_nullable())
            .map(|f| f.name().clone())
            .filter(|n| !["source_system", "source_id", "known_at"].contains(&n.as_str()))
            .filter(|n| !columns.iter().any(|c| c == n))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        problems.push(format!("{} lacks {}", input.name, missing.join(", ")));
    }
    if problems.is_empty() {
        problems.push(format!(
            "none of the {} input files is named <table>.csv or <table>.parquet",
            files.len()
        ));
    }
    Err(Error::invalid(
        "--mapping",
        format!(
            "--format {} without --mapping reads Ward's curated layout (docs/curated-tables.md), and no input is in it: {}; give a mapping file for this export (docs/mapping.md)",
            opts.format.as_str(),
            problems.join("; ")
        ),
    ))
}

/// The header of a CSV file: its first line split on commas, quotes and spaces trimmed
/// (only that line is decoded, however large the file).
fn csv_header(bytes: &[u8]) -> Vec<String> {
    let end = bytes
        .iter()
        .position(|b| *b == b'\n' || *b == b'\r')
        .unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..end]);
    line.trim_start_matches('\u{feff}')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_string())
        .collect()
}

/// The column names of a Parquet file, `None` when its footer cannot be read. Reads the
/// file again from `path` (Parquet readers need random access; `bytes` is the content, used
/// only to tell a gzipped copy, which is left to the mapping).
fn parquet_columns(path: &Path, bytes: &[u8]) -> Option<Vec<String>> {
    let on_disk = std::fs::metadata(path).ok()?.len();
    if on_disk != bytes.len() as u64 {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).ok()?;
    Some(
        builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
    )
}

/// The schema of raw versions.
pub fn raw_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("chunk", DataType::UInt32, false),
        Field::new("bytes", DataType::LargeBinary, false),
    ]))
}

fn raw_table(read: &[ReadInput]) -> Result<RecordBatch> {
    let mut file = StringBuilder::new();
    let mut chunk = UInt32Builder::new();
    let mut data = LargeBinaryBuilder::new();
    for r in read {
        let (name, raw) = (
            &r.raw_name,
            if r.raw.is_empty() { &r.content } else { &r.raw },
        );
        let pieces: Vec<&[u8]> = if raw.is_empty() {
            vec![&[][..]]
        } else {
            raw.chunks(RAW_CHUNK).collect()
        };
        for (i, piece) in pieces.into_iter().enumerate() {
            file.append_value(name);
            chunk.append_value(i as u32);
            data.append_value(piece);
        }
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(file.finish()),
        Arc::new(chunk.finish()),
        Arc::new(data.finish()),
    ];
    Ok(RecordBatch::try_new(raw_schema(), cols)?)
}

/// The schema of quarantine versions.
pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("record", DataType::UInt64, false),
        Field::new("table", DataType::Utf8, true),
        Field::new("field", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
    ]))
}

fn quarantine_batch(bad: &[BadRecord]) -> Result<RecordBatch> {
    let mut file = StringBuilder::new();
    let mut record = UInt64Builder::new();
    let mut table = StringBuilder::new();
    let mut field = StringBuilder::new();
    let mut reason = StringBuilder::new();
    let mut detail = StringBuilder::new();
    let mut raw = StringBuilder::new();
    for b in bad {
        file.append_value(&b.location.file);
        record.append_value(b.location.record);
        table.append_option(b.table.map(Table::name));
        field.append_option(b.field.as_deref());
        reason.append_value(&b.reason);
        detail.append_value(&b.detail);
        raw.append_value(&b.raw);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(file.finish()),
        Arc::new(record.finish()),
        Arc::new(table.finish()),
        Arc::new(field.finish()),
        Arc::new(reason.finish()),
        Arc::new(detail.finish()),
        Arc::new(raw.finish()),
    ];
    Ok(RecordBatch::try_new(quarantine_schema(), cols)?)
}

/// What a run merges onto one table's head.
#[derive(Default, Clone, Copy)]
struct Merge<'a> {
    /// The run's rows (`None`: none, the table is merged only for `versions`).
    batch: Option<&'a RecordBatch>,
    /// Stored rows the run changed, as stored: they leave the table (their new forms are in
    /// `batch`).
    remove: Option<&'a RecordBatch>,
    /// For a curated table, the table and the run's ingestion time: re-sent rows are dropped
    /// ([`drop_resent`]).
    resent: Option<(Table, DateTime<Utc>)>,
    /// FHIR resource versions of the run, ordered with the stored ones in this table.
    versions: Option<(&'a crossrun::FhirVersions, Table)>,
}

/// Merges the run's rows onto the head of `name` and publishes the result as the new head
/// by compare-and-swap on the head it was merged onto; when another writer moved the head in
/// the meantime, merges again onto the new head (or fails, as `on_conflict` says). Returns
/// the published version, its row count and the rows dropped as re-sent; `None` when the
/// merge had no rows of the run and changed nothing (nothing is written).
async fn commit_merged(
    store: &Store,
    name: &str,
    kind: Kind,
    merge: Merge<'_>,
    lineage: impl Fn(Option<ContentHash>) -> Lineage,
    on_conflict: OnConflict,
) -> Result<Option<(ContentHash, u64, u64)>> {
    loop {
        let head = store.head(name)?;
        let prev = head.map(|h| h.hash);
        let batch = match (merge.batch, merge.resent) {
            (Some(b), _) => b.clone(),
            (None, Some((table, _))) => RecordBatch::new_empty(table.schema()),
            (None, None) => return Ok(None),
        };
        // Curated tables are bucketed by patient: a run reads and rewrites only the buckets
        // of the patients it touched, unless FHIR versions may reorder rows of any patient.
        let bucketed = merge.resent.is_some();
        let fhir_reorders = merge.versions.is_some_and(|(v, t)| v.touches(t));
        let base = match prev {
            Some(h) if bucketed && !fhir_reorders => incremental_base(store, &h, &batch)?,
            _ => None,
        };
        let mut p = PutOptions::new(name, kind);
        p.lineage = lineage(prev);
        p.head = HeadUpdate::Expect(head.map(|h| h.seq));
        let put = if let Some(base) = base {
            if merge.batch.is_none() {
                return Ok(None);
            }
            let (changed, dropped) =
                merge_buckets(store, &base, batch, merge.remove, merge.resent).await?;
            store
                .put_bucketed(
                    batch_schema(&merge),
                    BucketContent::Changed(changed),
                    Some(&base),
                    curated_bucketing()?,
                    p,
                )
                .await
                .map(|put| (put, dropped))
        } else {
            let mut merged = merge_onto(store, name, prev, batch, merge.remove).await?;
            let mut dropped = 0;
            if let Some((table, ingested_at)) = merge.resent {
                let before = merged.num_rows();
                merged = drop_resent(&merged, table, ingested_at)?;
                dropped = (before - merged.num_rows()) as u64;
            }
            let mut changed = merge.batch.is_some();
            if let Some((versions, table)) = merge.versions {
                if let Some(again) = versions.apply(table, &merged)? {
                    merged = canonical_merge(&[again])?;
                    changed = true;
                }
            }
            if !changed {
                return Ok(None);
            }
            if bucketed {
                // The whole table, bucketed: groups whose buckets did not change are still
                // shared with a bucketed base.
                let base = match prev {
                    Some(h) if store.bucket_layout(&h)?.is_some() => Some(h),
                    _ => None,
                };
                store
                    .put_bucketed(
                        merged.schema(),
                        BucketContent::Whole(vec![merged]),
                        base.as_ref(),
                        curated_bucketing()?,
                        p,
                    )
                    .await
                    .map(|put| (put, dropped))
            } else {
                store
                    .put_batches(merged.schema(), vec![merged], p)
                    .await
                    .map(|put| (put, dropped))
            }
        };
        match put {
            Ok((put, dropped)) => return Ok(Some((put.manifest.hash, put.manifest.rows, dropped))),
            Err(Error::Conflict { .. }) if on_conflict == OnConflict::Retry => {
                tracing::info!(table = name, "head moved during the merge; merging again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// How curated tables are bucketed: by `patient_id` into [`DEFAULT_BUCKETS`] buckets.
///
/// # Errors
/// None in practice ([`Bucketing::new`] with a non-zero count).
pub fn curated_bucketing() -> Result<Bucketing> {
    Bucketing::new(CURATED_BUCKET_KEY, DEFAULT_BUCKETS)
}

/// The key column curated tables are bucketed by.
pub const CURATED_BUCKET_KEY: &str = "patient_id";

fn batch_schema(merge: &Merge<'_>) -> SchemaRef {
    match (merge.batch, merge.resent) {
        (Some(b), _) => b.schema(),
        (_, Some((table, _))) => table.schema(),
        _ => Arc::new(Schema::empty()),
    }
}

/// `prev` when a run can change it bucket by bucket: bucketed as curated tables are, with
/// the run's columns.
fn incremental_base(
    store: &Store,
    prev: &ContentHash,
    batch: &RecordBatch,
) -> Result<Option<ContentHash>> {
    let m = store.manifest(prev)?;
    let bucketing = curated_bucketing()?;
    let same = m
        .bucketing
        .as_ref()
        .is_some_and(|b| b.key == bucketing.key && b.buckets == bucketing.buckets)
        && crate::store::ColumnInfo::from_schema(&batch.schema())? == m.schema;
    Ok(same.then_some(*prev))
}

/// The run's rows merged onto the buckets of `base` they touch (those of the patients of
/// `batch` and of `remove`): only those buckets are read, without the rows of `remove`,
/// merged, sorted canonically and cleared of re-sends. Gives the new rows of every touched
/// bucket (empty when it has none left) and the rows dropped as re-sent.
async fn merge_buckets(
    store: &Store,
    base: &ContentHash,
    batch: RecordBatch,
    remove: Option<&RecordBatch>,
    resent: Option<(Table, DateTime<Utc>)>,
) -> Result<(BTreeMap<u32, RecordBatch>, u64)> {
    let bucketing = curated_bucketing()?;
    let schema = batch.schema();
    let remove = remove.filter(|r| r.num_rows() > 0);
    let mut touched = std::collections::BTreeSet::new();
    for b in std::iter::once(&batch).chain(remove) {
        let key = bucketing.key_index(&b.schema())?;
        touched.extend(bucket_ids(b, key, bucketing.buckets)?);
    }
    let old: Vec<RecordBatch> = store
        .read_buckets(base, &touched)
        .await?
        .into_values()
        .collect();
    let mut parts = vec![batch];
    match remove {
        Some(r) => parts.push(crossrun::without(&schema, &old, r)?),
        None => parts.extend(old),
    }
    let mut merged = canonical_merge(&parts)?;
    let mut dropped = 0;
    if let Some((table, ingested_at)) = resent {
        let before = merged.num_rows();
        merged = drop_resent(&merged, table, ingested_at)?;
        dropped = (before - merged.num_rows()) as u64;
    }
    let mut changed: BTreeMap<u32, RecordBatch> = touched
        .iter()
        .map(|b| (*b, RecordBatch::new_empty(schema.clone())))
        .collect();
    for (b, rows) in split_into_buckets(&schema, &[merged], &bucketing)? {
        changed.insert(b, rows);
    }
    Ok((changed, dropped))
}

/// Version `prev` of `name` (if any), without the rows of `remove`, merged with `batch`.
async fn merge_onto(
    store: &Store,
    name: &str,
    prev: Option<ContentHash>,
    batch: RecordBatch,
    remove: Option<&RecordBatch>,
) -> Result<RecordBatch> {
    let mut batches = vec![batch];
    if let Some(h) = prev {
        let (schema, old) = store.read(&h).await?;
        if schema.fields() != batches[0].schema().fields() {
            return Err(Error::Store {
                path: store.root().to_path_buf(),
                reason: format!(
                    "the latest {name} version {h} has another schema than this Ward writes; ingest into a new store"
                ),
            });
        }
        match remove.filter(|r| r.num_rows() > 0) {
            Some(r) => batches.push(crossrun::without(&schema, &old, r)?),
            None => batches.extend(old),
        }
    }
    canonical_merge(&batches)
}

/// The columns that name one record of `table` (its versions share them).
fn record_key(table: Table) -> &'static [&'static str] {
    match table {
        Table::Patients => &["patient_id"],
        Table::Encounters => &["encounter_id"],
        Table::Observations => &["observation_id"],
        Table::Conditions => &["condition_id"],
        Table::Procedures => &["procedure_id"],
        Table::Medications => &["medication_id"],
        Table::CareTeam => &["patient_id", "clinician_id", "role", "valid_from"],
        // A consent record has an id of its own (FHIR `Consent.id`, a form's id): its
        // versions (a withdrawal, a correction) share it, while a patient's successive
        // decisions are separate records, so none of them is read as a re-send of another.
        Table::Consent => &["consent_id"],
        Table::Immunizations => &["immunization_id"],
        Table::Allergies => &["allergy_id"],
        Table::DiagnosticReports => &["report_id"],
        Table::MedicationAdministrations => &["administration_id"],
        // An identifier is a fact about a record: its versions are re-sends of it.
        Table::PatientIdentifiers => &["patient_id", "kind", "system", "value"],
    }
}

/// Columns that say where and when a row was learned, not what it says.
const PROVENANCE: [&str; 3] = ["source_system", "source_id", "known_at"];

/// Drops the rows of a run that only repeat what is already known. The rows of a record
/// (same [`record_key`]) whose `known_at` is the run's ingestion time (their source gave no
/// knowledge time) are a re-send when their contents (every column but [`PROVENANCE`]), in
/// `source_id` order, are exactly those of the record's current version: the rows with the
/// latest earlier `known_at`. Then they are all dropped, since keeping them would add a
/// version that changes nothing (and the version lookups read, the last by `source_id`,
/// stays the same). Otherwise all of them are kept, and rows with any other `known_at`
/// always are. The result stays in `batch`'s order.
///
/// # Errors
/// Arrow errors; [`Error::Internal`] if the batch lacks a curated column.
pub fn drop_resent(
    batch: &RecordBatch,
    table: Table,
    ingested_at: DateTime<Utc>,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    if n == 0 {
        return Ok(batch.clone());
    }
    let schema = batch.schema();
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("{} lacks column {name}", table.name())))
    };
    let known_at = col("known_at")?;
    let known_at = known_at
        .as_any()
        .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
        .ok_or_else(|| Error::Internal("known_at is not a timestamp".into()))?;
    let this_run = ingested_at.timestamp_micros();
    // Sources that date their records (HL7 v2 MSH-7, FHIR meta.lastUpdated) leave no row at
    // the ingestion time: nothing to compare, so no row encoding on the ingest path.
    if !known_at.values().contains(&this_run) {
        return Ok(batch.clone());
    }
    let rows_of = |cols: Vec<ArrayRef>| -> Result<arrow::row::Rows> {
        let fields = cols
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        Ok(RowConverter::new(fields)?.convert_columns(&cols)?)
    };
    let key = rows_of(
        record_key(table)
            .iter()
            .map(|c| col(c))
            .collect::<Result<_>>()?,
    )?;
    let content = rows_of(
        schema
            .fields()
            .iter()
            .filter(|f| !PROVENANCE.contains(&f.name().as_str()))
            .map(|f| col(f.name()))
            .collect::<Result<_>>()?,
    )?;
    let order = rows_of(vec![col("known_at")?, col("source_id")?])?;
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_unstable_by(|a, b| {
        key.row(*a)
            .cmp(&key.row(*b))
            .then_with(|| order.row(*a).cmp(&order.row(*b)))
    });
    let mut keep = vec![true; n];
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && key.row(idx[end]) == key.row(idx[start]) {
            end += 1;
        }
        // One record's rows, in knowledge order: this run's, and the latest earlier ones.
        let group = &idx[start..end];
        let new: Vec<usize> = group
            .iter()
            .copied()
            .filter(|&i| known_at.value(i) == this_run)
            .collect();
        let before = group
            .iter()
            .copied()
            .filter(|&i| known_at.value(i) < this_run)
            .map(|i| known_at.value(i))
            .max();
        if let (false, Some(latest)) = (new.is_empty(), before) {
            let current: Vec<usize> = group
                .iter()
                .copied()
                .filter(|&i| known_at.value(i) == latest)
                .collect();
            let same = current.len() == new.len()
                && current
                    .iter()
                    .zip(&new)
                    .all(|(a, b)| content.row(*a) == content.row(*b));
            if same {
                for i in new {
                    keep[i] = false;
                }
            }
        }
        start = end;
    }
    if keep.iter().all(|k| *k) {
        return Ok(batch.clone());
    }
    Ok(arrow::compute::filter_record_batch(
        batch,
        &arrow::array::BooleanArray::from(keep),
    )?)
}

/// Concatenates batches, sorts the rows by every column in schema order (the first columns
/// of curated tables are their ids, then times), and removes exact duplicate rows. The result
/// depends only on the set of rows, never on their input order.
///
/// # Errors
/// [`Error::InvalidArgument`] when `batches` is empty; Arrow errors on mismatched schemas.
pub fn canonical_merge(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let first = batches
        .first()
        .ok_or_else(|| Error::invalid("batches", "nothing to merge"))?;
    let schema = first.schema();
    let all = concat_batches(&schema, batches)?;
    let fields: Vec<SortField> = schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let rows = converter.convert_columns(all.columns())?;
    let mut idx: Vec<u32> = (0..all.num_rows() as u32).collect();
    idx.sort_unstable_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    idx.dedup_by(|a, b| rows.row(*a as usize) == rows.row(*b as usize));
    Ok(take_record_batch(
        &all,
        &arrow::array::UInt32Array::from(idx),
    )?)
}
