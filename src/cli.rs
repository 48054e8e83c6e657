//! The `ward` command line: argument parsing and output, over the library.
//!
//! Conventions (DESIGN.md, "Command line"): a command that makes a version prints its hash
//! `b3:<64 hex>` as the last line of standard output; progress and summaries go to standard
//! error; any failure exits non-zero with a message naming what is wrong.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use crate::clock::{self, SharedClock};
use crate::ingest::mapping::Mapping;
use crate::ingest::pipeline::{self, Format, IngestOptions, MaxBad};
use crate::ingest::Context;
use crate::store::{Kind, ListFilter, Manifest, PutOptions, Store, VersionRef};
use crate::synth::{SynthFormat, SynthOptions};

/// Writes a line to standard output. A closed pipe (`ward datasets | head`) ends the process
/// quietly with status 141, as SIGPIPE would; any other failure to write is an error exit.
macro_rules! outln {
    ($($arg:tt)*) => {
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(141);
            }
            eprintln!("error: writing to standard output: {e}");
            std::process::exit(1);
        }
    };
}

/// Ward: a feature store for clinical machine learning.
#[derive(Debug, Parser)]
#[command(name = "ward", version, about, long_about = None)]
pub struct Cli {
    /// The store directory (the embedded default: everything lives here).
    #[arg(long, global = true, env = "WARD_STORE", default_value = "./ward-data")]
    pub store: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// Whether the command runs a server (`serve`, `demo`) rather than one batch of work.
    pub fn serves(&self) -> bool {
        matches!(
            self,
            Command::Serve { .. }
                | Command::Demo {
                    no_serve: false,
                    ..
                }
        )
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an empty store.
    Init,
    /// Store a Parquet file's table as a version; prints its hash.
    Put {
        /// The Parquet file.
        file: PathBuf,
        /// Dataset name.
        #[arg(long)]
        name: String,
        /// raw, curated, quarantine, timeline, training or other.
        #[arg(long, default_value = "other")]
        kind: String,
        /// A label KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List versions, newest first.
    Datasets {
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only this name (or tag).
        #[arg(long)]
        name: Option<String>,
        /// Print JSON (one array of manifests).
        #[arg(long)]
        json: bool,
    },
    /// Print a version's manifest. REF = b3:HASH (or a prefix of 8+ digits) | NAME | NAME@TIME.
    Show {
        /// The version.
        reference: String,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recompute a version's hash and file digests from storage.
    Verify {
        /// The version.
        reference: String,
    },
    /// Write a version to a Parquet file.
    Export {
        /// The version.
        reference: String,
        /// The Parquet file to write.
        out: PathBuf,
    },
    /// Point a tag (a mutable name) at a version.
    Tag {
        /// The tag.
        name: String,
        /// The version it should point at.
        reference: String,
    },
    /// Remove leftovers of interrupted writes.
    Cleanup,
    /// Ingest source files into curated versions (raw kept, bad records quarantined);
    /// prints the curated hashes, one per line.
    Ingest {
        /// The input format.
        #[arg(long, value_enum)]
        format: Format,
        /// A TOML mapping for csv, parquet and synthea (docs/mapping.md). Default: Ward's
        /// curated layout for csv and parquet (mappings/curated.toml), the shipped Synthea
        /// mapping for synthea.
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// Fail when bad records exceed a count (100) or a share (0.05 or 5%).
        #[arg(long)]
        max_bad: Option<String>,
        /// Zone of source times without one: UTC or a fixed offset such as -05:00.
        #[arg(long, default_value = "UTC")]
        zone: String,
        /// Fail when another writer moves a table's head during this run, instead of merging
        /// again onto the new head (the default, which never loses either writer's rows).
        #[arg(long)]
        no_retry: bool,
        /// Input files or directories (walked in name order); `.gz` files are decompressed.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Materialize a feature set into a timeline version; prints its hash.
    Materialize {
        /// The feature repository (TOML, docs/features.md).
        #[arg(long)]
        features: PathBuf,
        /// The feature set to materialize.
        #[arg(long)]
        set: String,
        /// Values as they occurred rather than as known at each time (an explicit opt-out).
        #[arg(long)]
        as_occurred: bool,
        /// Curated rows held in memory at once: above it, patients are computed in ranges
        /// of their ids and the timeline is written as it goes (same result, less memory).
        #[arg(long, default_value_t = crate::features::PARTITION_ROWS)]
        partition_rows: usize,
    },
    /// Features of patients at a time (now by default) from the latest timeline of a set.
    Get {
        /// The feature set (must hold no labels).
        #[arg(long)]
        set: String,
        /// A patient id (repeatable).
        #[arg(long = "patient", required = true)]
        patients: Vec<String>,
        /// The time to look up (RFC 3339 or a date); default now.
        #[arg(long)]
        as_of: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Point-in-time features of entity rows (a training set); prints the training set's hash.
    Historical {
        /// The feature set.
        #[arg(long)]
        set: String,
        /// Entity rows: a Parquet or CSV file, or a stored version (b3:HASH, NAME, NAME@TIME)
        /// with columns patient_id and timestamp (other columns are passed through).
        #[arg(long)]
        entities: String,
        /// Also write the training set to this Parquet file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The timeline to read (default: the newest of the set with the same knowledge).
        #[arg(long, conflicts_with = "features")]
        timeline: Option<String>,
        /// Compute the features straight from the latest curated versions with the set of
        /// this feature repository (TOML) instead of reading a timeline; nothing needs to be
        /// materialized first (docs/lookups.md, "Straight from curated rows").
        #[arg(long)]
        features: Option<PathBuf>,
        /// Read a timeline materialized as occurred (an explicit opt-out of "as known at t");
        /// with --features, compute as occurred.
        #[arg(long)]
        as_occurred: bool,
        /// The entity column holding patient ids.
        #[arg(long, default_value = "patient_id")]
        patient_column: String,
        /// The entity column holding the lookup times.
        #[arg(long, default_value = "timestamp")]
        time_column: String,
        /// The training set's version name (default: `training-` and the feature set's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// As-of join of a wide feature table (the peers' layout, ../shared/peers): for each
    /// entity row, the patient's latest feature row at or before its time, within the TTL.
    Asof {
        /// A directory holding features.parquet and entities.parquet (the peers' layout).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The feature table (Parquet): patient id, event and created times, feature columns.
        #[arg(long)]
        features: Option<PathBuf>,
        /// The entity rows (Parquet): patient id and time.
        #[arg(long)]
        entities: Option<PathBuf>,
        /// TTL in days (fractions allowed); 0 = none. Window: t - TTL < event time <= t.
        #[arg(long, default_value_t = 0.0)]
        ttl_days: f64,
        /// The Parquet file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Recompute a derived version from its lineage; fails unless the hash is the same.
    Rebuild {
        /// The version to rebuild.
        reference: String,
    },
    /// The main job end to end: generate a cohort, ingest it, materialize the readmission
    /// sets, verify every version, print the curated hashes, then serve until interrupted.
    Demo {
        /// Patients in the synthetic cohort.
        #[arg(long, default_value_t = 2000)]
        patients: u64,
        /// Seed of the cohort.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where to serve afterwards (port 0 picks a free port).
        #[arg(long, default_value = crate::service::config::DEFAULT_ADDR)]
        addr: std::net::SocketAddr,
        /// Stop after building the store instead of serving (for tests and CI).
        #[arg(long)]
        no_serve: bool,
        /// Allow a non-loopback `--addr` (the demo never has authentication or TLS).
        #[arg(long)]
        insecure: bool,
    },
    /// Serve the gRPC API and Arrow Flight until SIGTERM or Ctrl-C (docs/service.md).
    Serve {
        /// Listen here (default: the config's `addr`, else 127.0.0.1:50051; port 0 picks a
        /// free port, printed as `listening on ADDR` on standard error).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// The server's configuration (TOML; see examples/serve.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Allow a non-loopback address without authentication (the config's `[auth]`) and TLS
        /// (`[tls]`).
        #[arg(long)]
        insecure: bool,
        /// Worker threads of the server's runtime (default: the config's `threads`, else one
        /// per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Also listen for HL7 v2 over MLLP here, into the live feed (default: the config's
        /// `mllp`; docs/live.md).
        #[arg(long)]
        mllp: Option<std::net::SocketAddr>,
    },
    /// Seal a live feed's write-ahead log into curated versions equal to a batch ingest of
    /// the same messages (docs/live.md); prints the curated hashes, one per line.
    Seal {
        /// The feed (the listener's `[live] feed`).
        #[arg(long, default_value = crate::live::DEFAULT_FEED)]
        feed: String,
        /// Zone of HL7 times without one: UTC or a fixed offset such as -05:00.
        #[arg(long, default_value = "UTC")]
        zone: String,
    },
    /// The audit trail: verify its chain, or list who looked at a patient (docs/security.md).
    Audit {
        /// What to do.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Generate a synthetic cohort (deterministic for a given size and seed).
    Synth {
        /// Number of patients.
        #[arg(long)]
        patients: u64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output format: parquet, csv, synthea, fhir-ndjson or hl7v2.
        #[arg(long, default_value = "parquet")]
        format: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `ward audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every record's hash, seq and chain across files and the tail against HEAD;
    /// fails naming the first bad record (file, line, seq).
    Verify {
        /// The audit directory (default `<store>/audit`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Who looked at a patient (or was refused), what a principal did, what happened in a
    /// time range: the records matching every option given, oldest first.
    Query {
        /// Records listing this patient id.
        #[arg(long)]
        patient: Option<String>,
        /// Records of this principal (`dr-a`, `anonymous@loopback`, `local:alice`).
        #[arg(long)]
        principal: Option<String>,
        /// At or after this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Before this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        to: Option<String>,
        /// The audit directory (default `<store>/audit`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print JSON lines (the full records).
        #[arg(long)]
        json: bool,
    },
}

fn parse_label(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: a label is KEY=VALUE"))
}

/// Runs the command line with the process's arguments; the binary's `main`.
pub fn main() -> ExitCode {
    main_with(|_| {})
}

/// [`main`], calling `prepare` with the parsed command line before anything runs (the binary
/// tunes its allocator there).
pub fn main_with(prepare: impl FnOnce(&Cli)) -> ExitCode {
    let cli = Cli::parse();
    prepare(&cli);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli, clock::system()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command with the given clock.
///
/// # Errors
/// Whatever the command fails with, with context naming what it was doing.
pub fn run(cli: Cli, clock: SharedClock) -> Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads(&cli)? {
        rt.worker_threads(n);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cli, clock))
}

/// The runtime's worker threads a command asks for: `ward serve --threads`, else its
/// config's `threads`; `None` for the default (one per core).
fn worker_threads(cli: &Cli) -> Result<Option<usize>> {
    let Command::Serve {
        threads, config, ..
    } = &cli.command
    else {
        return Ok(None);
    };
    if let Some(n) = *threads {
        crate::service::config::check_threads(n)
            .map_err(|reason| crate::error::Error::invalid("--threads", reason))?;
        return Ok(Some(n));
    }
    Ok(match config {
        Some(path) => crate::service::ServeConfig::load(path)?.threads,
        None => None,
    })
}

async fn run_async(cli: Cli, clock: SharedClock) -> Result<()> {
    let open = || Store::open_existing(&cli.store, clock.clone());
    match cli.command {
        Command::Init => {
            let store = Store::open(&cli.store, clock.clone())?;
            eprintln!("ward store ready at {}", store.root().display());
        }
        Command::Put {
            file,
            name,
            kind,
            labels,
        } => {
            let store = Store::open(&cli.store, clock.clone())?;
            let mut opts = PutOptions::new(name, kind.parse::<Kind>()?);
            opts.labels = labels.into_iter().collect();
            let out = store
                .put_parquet(&file, opts)
                .await
                .with_context(|| format!("putting {}", file.display()))?;
            let m = &out.manifest;
            eprintln!(
                "{} {} ({} rows, {} columns, {} bytes stored)",
                if out.created {
                    "stored"
                } else {
                    "already stored:"
                },
                m.name,
                m.rows,
                m.schema.len(),
                m.bytes
            );
            outln!("{}", m.hash);
        }
        Command::Datasets { kind, name, json } => {
            let store = open()?;
            let filter = ListFilter {
                kind: kind.map(|k| k.parse()).transpose()?,
                name,
            };
            let all = store.list(&filter)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                for m in &all {
                    outln!(
                        "{}  {:<10} {:<24} {:>10} rows  {}",
                        m.hash,
                        m.kind,
                        m.name,
                        m.rows,
                        m.created_at.to_rfc3339()
                    );
                }
                eprintln!("{} versions", all.len());
            }
        }
        Command::Show { reference, json } => {
            let store = open()?;
            let m = store.resolve(&reference.parse::<VersionRef>()?)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print_manifest(&m);
            }
        }
        Command::Verify { reference } => {
            let store = open()?;
            let m = store.resolve(&reference.parse::<VersionRef>()?)?;
            let report = store.verify(&m.hash).await?;
            eprintln!(
                "verified {}: {} rows, {} files, manifest sealed",
                m.name, report.rows, report.files
            );
            outln!("{}", report.hash);
        }
        Command::Export { reference, out } => {
            let store = open()?;
            let m = store.resolve(&reference.parse::<VersionRef>()?)?;
            // Recorded before the rows are written out (fail closed): the version's hash
            // names the rows read.
            let action = if m.labels.contains_key("deidentified") {
                "historical_deidentified"
            } else {
                "historical_identified"
            };
            let mut entry = crate::audit::AuditEntry::local("export", action);
            entry.datasets = vec![m.hash.to_string()];
            entry.outcome = Some("ok".into());
            audit_cli_read(&store, entry)?;
            let rows = store
                .export_parquet(&m.hash, &out)
                .await
                .with_context(|| format!("exporting {} to {}", m.hash, out.display()))?;
            eprintln!("wrote {rows} rows to {}", out.display());
            outln!("{}", m.hash);
        }
        Command::Tag { name, reference } => {
            let store = open()?;
            let m = store.resolve(&reference.parse::<VersionRef>()?)?;
            store.tag(&name, &m.hash)?;
            eprintln!("tag {name} -> {}", m.hash);
            outln!("{}", m.hash);
        }
        Command::Cleanup => {
            let store = open()?;
            let report = store.cleanup()?;
            eprintln!(
                "removed {} leftovers of interrupted writes; {} writes in progress left alone",
                report.removed.len(),
                report.in_use.len()
            );
        }
        Command::Ingest {
            format,
            mapping,
            max_bad,
            zone,
            no_retry,
            paths,
        } => {
            let store = Store::open(&cli.store, clock.clone())?;
            let (mapping, mapping_text) = match &mapping {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading mapping {}", path.display()))?;
                    let m = Mapping::from_toml(&text, &path.to_string_lossy())?;
                    (Some(m), Some(text))
                }
                None => (None, None),
            };
            let mut context = Context::new(clock.now());
            context.default_offset = parse_zone(&zone)?;
            let opts = IngestOptions {
                format,
                mapping,
                mapping_text,
                max_bad: max_bad.map(|m| m.parse::<MaxBad>()).transpose()?,
                context,
                read: Default::default(),
            };
            let files = pipeline::expand_paths(&paths)?;
            let total: u64 = files
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum();
            let bar = progress_bar(
                total,
                "{spinner} ingest [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
            );
            bar.set_message(format!("{} files", files.len()));
            let on_conflict = if no_retry {
                pipeline::OnConflict::Fail
            } else {
                pipeline::OnConflict::Retry
            };
            let report =
                pipeline::ingest_with(&store, &files, &opts, Some(&bar), on_conflict).await?;
            bar.finish_and_clear();
            eprintln!(
                "ingested {} files ({} bytes) as {}; raw kept as {}",
                report.files,
                report.bytes,
                format.as_str(),
                report.raw
            );
            for c in &report.curated {
                let unchanged = if c.unchanged_rows > 0 {
                    format!(" ({} re-sent unchanged, not kept)", c.unchanged_rows)
                } else {
                    String::new()
                };
                eprintln!(
                    "  {:<13} +{:<8} rows -> {:>9} rows  {}{unchanged}",
                    c.table, c.parsed_rows, c.total_rows, c.hash
                );
            }
            let skipped: u64 = report.skipped.values().sum();
            if skipped > 0 {
                eprintln!("  skipped {skipped} records of kinds Ward does not curate:");
                for (what, n) in &report.skipped {
                    eprintln!("    {what:<30} {n}");
                }
            }
            if let Some(q) = report.quarantine {
                eprintln!("  quarantined {} bad records ({q}):", report.bad_total());
                for (what, n) in &report.bad {
                    eprintln!("    {what:<30} {n}");
                }
            }
            for c in &report.curated {
                outln!("{}", c.hash);
            }
        }
        Command::Materialize {
            features,
            set,
            as_occurred,
            partition_rows,
        } => {
            let store = open()?;
            let repo = crate::features::FeatureRepo::load(&features)?;
            let opts = crate::features::MaterializeOptions {
                knowledge: if as_occurred {
                    crate::features::Knowledge::AsOccurred
                } else {
                    crate::features::Knowledge::AsKnown
                },
                partition_rows: partition_rows.max(1),
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let out = crate::features::materialize(&store, &repo, &set, &opts).await?;
            let parts = match out.partitions {
                1 => String::new(),
                n => format!(", in {n} ranges of patients"),
            };
            eprintln!(
                "materialized {} ({} change points, {} patients{parts}) in {:.1} s from:",
                out.set,
                out.rows,
                out.recomputed,
                started.elapsed().as_secs_f64()
            );
            for (table, hash) in &out.inputs {
                eprintln!("  {table:<13} {hash}");
            }
            eprintln!("  definition    {}", out.definition);
            outln!("{}", out.hash);
        }
        Command::Get {
            set,
            patients,
            as_of,
            json,
        } => {
            let store = open()?;
            let t = match &as_of {
                Some(s) => crate::store::manifest::parse_time(s)
                    .with_context(|| format!("--as-of {s:?}: use RFC 3339 or YYYY-MM-DD"))?,
                None => clock.now(),
            };
            let online = crate::lookup::Online::new(store.clone());
            let answer = online.get(&set, &patients, &[], Some(t)).await;
            // One record, before anything is printed (fail closed).
            let mut entry =
                crate::audit::AuditEntry::local("get", "online_lookup").with_result(&answer);
            entry.feature_set = Some(set.clone());
            entry.patients = crate::audit::Patients::Ids(patients.clone());
            if let Ok(a) = &answer {
                entry.datasets = vec![a.timeline.to_string()];
            }
            audit_cli_read(&store, entry)?;
            let answer = answer?;
            print_features(&answer.patients, &answer.timeline, json)?;
        }
        Command::Historical {
            set,
            entities,
            out,
            timeline,
            features,
            as_occurred,
            patient_column,
            time_column,
            name,
        } => {
            let store = open()?;
            let path = PathBuf::from(&entities);
            let source = if path.is_file() {
                crate::lookup::Entities::Batches(crate::lookup::read_entities(&path)?)
            } else {
                crate::lookup::Entities::Stored(entities.parse::<VersionRef>().with_context(
                    || format!("--entities {entities:?} is neither a file nor a version"),
                )?)
            };
            let mut req = crate::lookup::HistoricalRequest::new(set, source);
            req.timeline = timeline.map(|t| t.parse::<VersionRef>()).transpose()?;
            req.knowledge = if as_occurred {
                crate::features::Knowledge::AsOccurred
            } else {
                crate::features::Knowledge::AsKnown
            };
            req.patient_column = Some(patient_column.clone());
            req.time_column = Some(time_column);
            req.name = name;
            let started = std::time::Instant::now();
            let set_name = req.set.clone();
            let outcome = match features {
                Some(path) => match crate::features::FeatureRepo::load(&path) {
                    Ok(repo) => crate::lookup::historical_direct(&store, &repo, req).await,
                    Err(e) => Err(e),
                },
                None => crate::lookup::historical(&store, req).await,
            };
            // One record, before the training set is reported or written out (fail closed):
            // the training set made, its inputs, and its patients as a count and a hash.
            let mut entry = crate::audit::AuditEntry::local("historical", "historical_identified")
                .with_result(&outcome);
            entry.feature_set = Some(set_name);
            if let Ok(o) = &outcome {
                entry.training_set = Some(o.hash.to_string());
                entry.datasets = o
                    .timeline
                    .iter()
                    .chain(o.curated.iter().map(|(_, h)| h))
                    .chain([&o.entities])
                    .map(ToString::to_string)
                    .collect();
                let (_, rows) = store.read(&o.entities).await?;
                entry.patients =
                    crate::audit::Patients::bulk(&column_strings(&rows, &patient_column)?);
            }
            audit_cli_read(&store, entry)?;
            let outcome = outcome?;
            eprintln!(
                "training set: {} rows in {:.1} s",
                outcome.rows,
                started.elapsed().as_secs_f64()
            );
            if let Some(timeline) = outcome.timeline {
                eprintln!("  timeline      {timeline}");
            }
            for (table, hash) in &outcome.curated {
                eprintln!("  {table:<13} {hash}");
            }
            eprintln!("  entity rows   {}", outcome.entities);
            if let Some(out) = out {
                store.export_parquet(&outcome.hash, &out).await?;
                eprintln!("  written to    {}", out.display());
            }
            outln!("{}", outcome.hash);
        }
        Command::Asof {
            data_dir,
            features,
            entities,
            ttl_days,
            out,
        } => {
            let (features, entities) = match (data_dir, features, entities) {
                (_, Some(f), Some(e)) => (f, e),
                (Some(d), f, e) => (
                    f.unwrap_or_else(|| d.join("features.parquet")),
                    e.unwrap_or_else(|| d.join("entities.parquet")),
                ),
                _ => anyhow::bail!("give --data-dir, or --features and --entities"),
            };
            if !(ttl_days >= 0.0 && ttl_days.is_finite()) {
                anyhow::bail!("--ttl-days {ttl_days}: use a number of days >= 0");
            }
            let ttl = (ttl_days > 0.0).then(|| (ttl_days * 86_400e6).round() as i64);
            let (batch, stats) = crate::lookup::asof::asof_join(
                &features,
                &entities,
                ttl,
                &crate::lookup::asof::AsofColumns::default(),
            )?;
            let w = std::time::Instant::now();
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            crate::lookup::asof::write_parquet(&batch, &out)?;
            let write_s = w.elapsed().as_secs_f64();
            eprintln!(
                "{} entity rows x {} feature rows ({} buffered): {} matched; load keys {:.3} s, match {:.3} s (sort {:.3} s), load values {:.3} s, assemble {:.3} s, write {:.3} s",
                stats.rows,
                stats.feature_rows,
                stats.buffered,
                stats.matched,
                stats.read_keys_s,
                stats.match_s,
                stats.sort_s,
                stats.read_values_s,
                stats.assemble_s,
                write_s
            );
            // The peers' report lines (../shared/peers/README.md, EXTRA_TOOL). As in their
            // scripts, the join time excludes decoding the Parquet files (`load_s`) and
            // writing the output (`write_s`); the sort is part of Ward's join.
            let join_s = stats.join_s();
            outln!("join seconds: {join_s:.3}");
            let rss = crate::lookup::asof::peak_rss_mib();
            if let Some(mib) = rss {
                outln!("peak RSS MiB: {mib:.1}");
            }
            let round = |s: f64| (s * 1000.0).round() / 1000.0;
            outln!(
                "RESULT {}",
                serde_json::json!({
                    "tool": "ward",
                    "ttl_days": ttl_days,
                    "rows_out": stats.rows,
                    "load_s": round(stats.load_s()),
                    "join_s": round(join_s),
                    "write_s": round(write_s),
                    "peak_rss_mib": rss,
                })
            );
        }
        Command::Rebuild { reference } => {
            let store = open()?;
            let m = store.resolve(&reference.parse::<VersionRef>()?)?;
            let hash = match m.kind {
                Kind::Timeline => crate::features::rebuild(&store, &m.hash).await?,
                Kind::Training => crate::lookup::rebuild(&store, &m.hash).await?,
                other => anyhow::bail!(
                    "{}: rebuilding {other} versions is not supported yet (timelines are)",
                    m.hash
                ),
            };
            eprintln!("rebuilt {} from its lineage: same hash", m.name);
            outln!("{hash}");
        }
        Command::Serve {
            addr,
            config,
            insecure,
            threads: _,
            mllp,
        } => {
            crate::service::run(
                &cli.store,
                addr,
                config.as_deref(),
                insecure,
                mllp,
                clock.clone(),
            )
            .await?;
        }
        Command::Seal { feed, zone } => {
            let store = open()?;
            let opts = crate::live::seal::SealOptions {
                zone: parse_zone(&zone)?,
                ..Default::default()
            };
            let report = crate::live::seal::seal(&store, &feed, &opts).await?;
            crate::live::seal::record_audit(&store, &report, "cli:seal", None)?;
            crate::live::seal::print_report(&report);
            for c in report.ingest.iter().flat_map(|r| &r.curated) {
                outln!("{}", c.hash);
            }
        }
        Command::Demo {
            patients,
            seed,
            addr,
            no_serve,
            insecure,
        } => {
            if !no_serve {
                crate::demo::exposure(addr, insecure)?;
            }
            let store = Store::open(&cli.store, clock.clone())?;
            let work = tempfile::tempdir().context("creating a scratch directory")?;
            let bar = progress_bar(
                patients,
                "{spinner} demo: generating [{bar:30}] {pos}/{len} patients",
            );
            let opts = crate::demo::DemoOptions { patients, seed };
            let started = std::time::Instant::now();
            let report = crate::demo::run(&store, work.path(), &opts, Some(&bar)).await?;
            bar.finish_and_clear();
            eprintln!(
                "demo: {} synthetic patients as FHIR R4 Bulk NDJSON ({} MB), ingested into {} in {:.1} s",
                report.patients,
                report.source_bytes / 1_000_000,
                store.root().display(),
                started.elapsed().as_secs_f64()
            );
            eprintln!("  raw input kept as {}", report.ingest.raw);
            for c in &report.ingest.curated {
                eprintln!("  {:<13} {:>9} rows  {}", c.table, c.total_rows, c.hash);
            }
            for t in &report.timelines {
                eprintln!(
                    "  timeline {:<20} {:>6} change points  {}",
                    t.set, t.rows, t.hash
                );
            }
            eprintln!(
                "  {} versions verified from storage (hash recomputed, file digests checked)",
                report.verified.len()
            );
            eprintln!("next:");
            eprintln!("  ward --store {} datasets", store.root().display());
            eprintln!("  ward --store {} show encounters", store.root().display());
            eprintln!(
                "  ward --store {} export encounters encounters.parquet",
                store.root().display()
            );
            eprintln!(
                "  python3 examples/python/verify_hash.py encounters.parquet --expect <hash above>"
            );
            for c in &report.ingest.curated {
                outln!("{}", c.hash);
            }
            if !no_serve {
                crate::demo::serve(store, addr, insecure).await?;
            }
        }
        Command::Audit { command } => run_audit(command, &cli.store)?,
        Command::Synth {
            patients,
            seed,
            format,
            out,
        } => {
            let format = SynthFormat::ALL
                .into_iter()
                .find(|f| f.name() == format)
                .with_context(|| {
                    format!("--format {format:?}: use parquet, csv, synthea, fhir-ndjson or hl7v2")
                })?;
            let opts = SynthOptions {
                patients,
                seed,
                ..SynthOptions::default()
            };
            let bar = progress_bar(
                patients,
                "{spinner} synth [{bar:30}] {pos}/{len} patients {per_sec} eta {eta}",
            );
            let summary = crate::synth::write(&opts, format, &out, Some(&bar))?;
            bar.finish_and_clear();
            eprintln!(
                "wrote {} patients as {} to {} ({} files, {} bytes)",
                summary.patients,
                format.name(),
                out.display(),
                summary.files.len(),
                summary.bytes
            );
            for (table, rows) in &summary.rows {
                eprintln!("  {:<13} {rows} rows", table.name());
            }
        }
    }
    Ok(())
}

/// Records a command-line read of patient data in the store's audit trail (principal
/// `local:<user>`, synced before this returns), so that the command's output never leaves
/// without its record.
fn audit_cli_read(store: &Store, entry: crate::audit::AuditEntry) -> Result<()> {
    let dir = store.root().join("audit");
    let log = crate::audit::AuditLog::open(
        &dir,
        store.clock().clone(),
        crate::audit::AuditOptions {
            durability: crate::audit::Durability::Sync,
            ..crate::audit::AuditOptions::default()
        },
    )
    .with_context(|| format!("opening the audit trail {}", dir.display()))?;
    log.append(entry)
        .with_context(|| format!("recording this read in the audit trail {}", dir.display()))?;
    Ok(())
}

/// The values of text (or integer) column `name` across `batches`, as strings.
fn column_strings(batches: &[arrow::array::RecordBatch], name: &str) -> Result<Vec<String>> {
    use arrow::array::AsArray as _;
    let mut out = Vec::new();
    for b in batches {
        let col = b
            .column_by_name(name)
            .with_context(|| format!("the entity rows have no column {name:?}"))?;
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8)?;
        out.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(out)
}

fn run_audit(command: AuditCommand, store: &std::path::Path) -> Result<()> {
    let default_dir = || store.join("audit");
    match command {
        AuditCommand::Verify { dir } => {
            let dir = dir.unwrap_or_else(default_dir);
            let r = crate::audit::verify(&dir)?;
            for t in &r.recovered {
                eprintln!(
                    "audit trail {}: a torn last line was sealed: {t}; its text: {:?}",
                    dir.display(),
                    t.text
                );
            }
            if let Some(p) = &r.problem {
                anyhow::bail!(
                    "audit trail {}: {p} ({} records verified before it)",
                    dir.display(),
                    r.records
                );
            }
            eprintln!(
                "audit trail {}: {} records in {} files verified; HEAD at seq {} ({} records after it, not yet flushed when HEAD was written)",
                dir.display(),
                r.records,
                r.files,
                r.head_seq.map_or("-".to_string(), |s| s.to_string()),
                r.after_head
            );
        }
        AuditCommand::Query {
            patient,
            principal,
            from,
            to,
            dir,
            json,
        } => {
            let dir = dir.unwrap_or_else(default_dir);
            let time = |flag: &str, v: Option<String>| -> Result<_> {
                v.map(|s| {
                    crate::store::manifest::parse_time(&s)
                        .with_context(|| format!("{flag} {s:?}: use RFC 3339 or YYYY-MM-DD"))
                })
                .transpose()
            };
            let filter = crate::audit::QueryFilter {
                patient: patient.clone(),
                principal,
                from: time("--from", from)?,
                to: time("--to", to)?,
                limit: None,
            };
            let found = crate::audit::search(&dir, &filter)?;
            for a in &found {
                let r = &a.record;
                if json {
                    outln!("{}", serde_json::to_string(r)?);
                } else {
                    outln!(
                        "{}  {:<20} {:<24} {:<22} {:<44} {:<7} {}",
                        r.time.to_rfc3339(),
                        r.principal.as_deref().unwrap_or("(unauthenticated)"),
                        r.roles.join(","),
                        r.client.as_deref().unwrap_or("-"),
                        r.rpc,
                        match r.decision {
                            crate::audit::Outcome::Allowed => "allowed",
                            crate::audit::Outcome::Denied => "denied",
                            crate::audit::Outcome::System => "system",
                        },
                        r.reason
                    );
                }
            }
            match &patient {
                Some(p) => eprintln!("{} records name patient {p}", found.len()),
                None => eprintln!("{} records match", found.len()),
            }
        }
    }
    Ok(())
}

fn print_features(
    rows: &[crate::features::PatientFeatures],
    timeline: &crate::hash::ContentHash,
    json: bool,
) -> Result<()> {
    use crate::features::{Status, Value};
    let status = |s: Status| match s {
        Status::Present => "present",
        Status::NoData => "no_data",
        Status::OutsideTtl => "outside_ttl",
    };
    if json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let features: serde_json::Map<String, serde_json::Value> = r
                    .values
                    .iter()
                    .map(|(name, v)| {
                        let value = match &v.value {
                            Some(Value::Num(x)) => serde_json::json!(x),
                            Some(Value::Text(s)) => serde_json::json!(s),
                            None => serde_json::Value::Null,
                        };
                        (
                            name.clone(),
                            serde_json::json!({ "value": value, "status": status(v.status) }),
                        )
                    })
                    .collect();
                serde_json::json!({
                    "patient_id": r.patient_id,
                    "at": r.at.to_rfc3339(),
                    "timeline": timeline.to_string(),
                    "features": features,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for r in rows {
        outln!(
            "{} at {} (timeline {timeline})",
            r.patient_id,
            r.at.to_rfc3339()
        );
        for (name, v) in &r.values {
            let value = match &v.value {
                Some(Value::Num(x)) => format!("{x}"),
                Some(Value::Text(s)) => s.clone(),
                None => "-".into(),
            };
            outln!("  {name:<32} {value:<24} {}", status(v.status));
        }
    }
    Ok(())
}

fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `UTC` or a fixed offset `+hh:mm` / `-hh:mm`.
fn parse_zone(zone: &str) -> Result<chrono::FixedOffset> {
    if zone.eq_ignore_ascii_case("utc") || zone == "Z" {
        return chrono::FixedOffset::east_opt(0).context("zero offset");
    }
    let t = format!("2000-01-01T00:00:00{zone}");
    chrono::DateTime::parse_from_rfc3339(&t)
        .map(|d| *d.offset())
        .with_context(|| format!("--zone {zone:?}: use UTC or an offset such as -05:00"))
}

fn print_manifest(m: &Manifest) {
    outln!("hash:        {}", m.hash);
    outln!("name:        {}", m.name);
    outln!("kind:        {}", m.kind);
    outln!("rows:        {}", m.rows);
    outln!("bytes:       {}", m.bytes);
    outln!("created_at:  {}", m.created_at.to_rfc3339());
    outln!("ward:        {}", m.ward_version);
    outln!("schema:");
    for c in &m.schema {
        let null = if c.nullable { "" } else { " not null" };
        outln!("  {:<24} {}{}", c.name, c.data_type, null);
    }
    if !m.lineage.inputs.is_empty() || m.lineage.definition.is_some() {
        outln!("lineage:");
        for i in &m.lineage.inputs {
            outln!("  input      {i}");
        }
        if let Some(d) = &m.lineage.definition {
            outln!("  definition {d}");
        }
    }
    for (k, v) in &m.labels {
        outln!("label:       {k}={v}");
    }
}
