//! The `ward` command line: argument parsing and output, over the library. This file holds
//! the arguments ([`Cli`], [`Command`]), `main` and the dispatch; each command is a function
//! in the file of its group:
//!
//! - `store`: `init`, `key`, `put`, `datasets`, `show`, `verify`, `export`, `tag`, `cleanup`,
//!   `rebuild`.
//! - `ingest`: `ingest`, `synth`.
//! - `features`: `materialize`.
//! - `lookups`: `get`, `historical`, `asof`.
//! - `models`: `register`, `models`.
//! - `serve`: `serve`, `demo`.
//! - `audit`: `audit verify`, `audit query`, and the record a command-line read leaves.
//! - `monitoring`: `drift`, `skew` (the online lookup log, `docs/monitoring.md`).
//!
//! Conventions (DESIGN.md, "Command line"): a command that makes a version prints its hash
//! `b3:<64 hex>` as the last line of standard output; progress and summaries go to standard
//! error; any failure exits non-zero with a message naming what is wrong.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use crate::clock::{self, SharedClock};
use crate::ingest::pipeline::Format;

/// Writes a line to standard output. A closed pipe (`ward datasets | head`) ends the process
/// quietly with status 141, as SIGPIPE would; any other failure to write is an error exit.
macro_rules! outln {
    ($($arg:tt)*) => {
        if let Err(e) = {
            use std::io::Write as _;
            writeln!(std::io::stdout(), $($arg)*)
        } {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(141);
            }
            eprintln!("error: writing to standard output: {e}");
            std::process::exit(1);
        }
    };
}

// The commands, one file per group; declared after `outln!` so that they can use it.
mod audit;
mod features;
mod ingest;
mod lookups;
mod models;
mod monitoring;
mod mpi;
mod serve;
mod store;

/// Ward: a feature store for clinical machine learning.
#[derive(Debug, Parser)]
#[command(name = "ward", version, about, long_about = None)]
pub struct Cli {
    /// The store: a directory (the embedded default: everything lives here), or
    /// `s3://BUCKET/PREFIX` in S3-compatible object storage, configured by the AWS_*
    /// variables (docs/storage.md).
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
    /// Create an empty store (`--encrypt`: encrypted at rest, docs/encryption.md).
    Init {
        /// Encrypt everything Ward writes into the store (AES-256-GCM), under a key from
        /// --key-provider (or WARD_KEY_PROVIDER). The store's marker records the key id and
        /// the provider, never the key.
        #[arg(long)]
        encrypt: bool,
        /// Where the key-encryption key comes from: file:PATH (mode 0600), env:NAME or
        /// command:PROGRAM ARG... (its standard output; how a KMS is wired).
        #[arg(long, requires = "encrypt")]
        key_provider: Option<String>,
    },
    /// The key of an encrypted store: its id and provider, or a rotation to a new key.
    Key {
        /// What to do.
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Store a Parquet file's table as a version; prints its hash.
    Put {
        /// The Parquet file.
        file: PathBuf,
        /// Dataset name.
        #[arg(long)]
        name: String,
        /// raw, curated, quarantine, timeline, training, model or other.
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
        /// Tag `prod` although data-quality expectations of the version fail; the reason
        /// is recorded in the audit trail (docs/quality.md).
        #[arg(long, value_name = "REASON")]
        override_reason: Option<String>,
    },
    /// Show the data-quality report of a version (its expectations, evaluated when it was
    /// made); exit status 1 when an expectation of severity `error` fails.
    Quality {
        /// The version.
        reference: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register a model card: the model's name, the training set it was trained on and its
    /// metrics, stored as a version of kind `model` whose lineage input is the training set
    /// (docs/models.md); prints its hash. The registration is audited.
    Register {
        /// The model's name (letters, digits, `_`, `-`, `.`).
        #[arg(long)]
        name: String,
        /// The training set: b3:HASH (or a prefix of 8+ digits), a name or NAME@TIME.
        #[arg(long)]
        training: String,
        /// A JSON file holding one object of metric names to numbers ({"auc": 0.81}).
        #[arg(long, value_name = "FILE.json")]
        metrics: Option<PathBuf>,
        /// A metric NAME=VALUE (repeatable; added to those of --metrics).
        #[arg(long = "metric", value_name = "NAME=VALUE")]
        metric: Vec<String>,
        /// What the model predicts, for whom, how it should (not) be used.
        #[arg(long, default_value = "")]
        description: String,
        /// Who answers for the model.
        #[arg(long, default_value = "")]
        owner: String,
    },
    /// List the registered model cards, newest first.
    Models {
        /// Only this model's cards.
        #[arg(long)]
        name: Option<String>,
        /// Print JSON (one array of cards with their hashes).
        #[arg(long)]
        json: bool,
    },
    /// Remove leftovers of interrupted writes.
    Cleanup,
    /// Ingest source files into curated versions (raw kept, bad records quarantined);
    /// prints the curated hashes, one per line.
    Ingest(IngestArgs),
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
        /// of their buckets and the timeline is written as it goes (same result, less
        /// memory).
        #[arg(long, default_value_t = crate::features::PARTITION_ROWS)]
        partition_rows: usize,
        /// Compute every patient; by default only the patients whose rows changed since the
        /// newest timeline of the set (when it was made from the same definition and
        /// knowledge) are, the others copied. The timeline is the same either way.
        #[arg(long)]
        full: bool,
        /// What the timeline is keyed by: `patient` (the source patient id) or `person` (the
        /// person of the newest `mpi_links` version as known at each time; docs/mpi.md).
        #[arg(long, default_value = "patient")]
        entity: String,
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
    Historical(HistoricalArgs),
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
    /// Drift between a training set and the logged online lookups: per feature, the PSI
    /// over bins of the training values, with both histograms (docs/monitoring.md).
    Drift {
        /// The training set (b3:HASH, NAME, NAME@TIME).
        #[arg(long)]
        training: String,
        /// The online lookup log (its name, `online_log` by default, or a version of it).
        #[arg(long, value_name = "LOGREF")]
        online: String,
        /// Only lookups requested at or after this time (RFC 3339 or a date).
        #[arg(long)]
        since: Option<String>,
        /// Only lookups of this feature set (default: every set in the log).
        #[arg(long)]
        set: Option<String>,
        /// Exit with status 1 when a feature's PSI is above this (0.25: a significant shift).
        #[arg(long, value_name = "PSI")]
        fail_above: Option<f64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay every logged online lookup as a historical lookup (same patient, time and
    /// timeline) and count the values that differ; exit status 1 unless none does.
    Skew {
        /// The online lookup log (its name, `online_log` by default, or a version of it).
        #[arg(value_name = "LOGREF")]
        online: String,
        /// Only lookups requested at or after this time (RFC 3339 or a date).
        #[arg(long)]
        since: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
        /// Also listen for HTTP here: FHIR Bundles and Bulk NDJSON pushed to `POST /fhir`,
        /// into the live feed `[live] http_feed` (default: the config's `http`; docs/live.md).
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
        /// Also consume Kafka topics from these bootstrap brokers (host:port, comma
        /// separated; default: the config's `[kafka] brokers`), into the live feeds
        /// (docs/live.md, "Kafka").
        #[arg(long, value_name = "BROKERS")]
        kafka: Option<String>,
        /// A Kafka topic to consume, NAME=hl7v2 or NAME=fhir, optionally :FEED (repeatable;
        /// added to the config's `[[kafka.topic]]`).
        #[arg(long, value_name = "NAME=FORMAT[:FEED]")]
        kafka_topic: Vec<String>,
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
        /// Emit the cohort through several sources instead (`adt,lab,ehr`: an HL7 v2 ADT
        /// feed, an HL7 v2 ORU lab feed, FHIR NDJSON), each with its own patient ids and
        /// registration errors, and the truth in `truth.csv` (docs/mpi.md). `--format` is
        /// then ignored.
        #[arg(long)]
        sources: Option<String>,
    },
    /// The master patient index: link source patient records into persons (docs/mpi.md).
    Mpi {
        /// What to do.
        #[command(subcommand)]
        command: MpiCommand,
    },
}

/// `ward mpi` subcommands.
#[derive(Debug, Subcommand)]
pub enum MpiCommand {
    /// Link the curated patients (identifiers, Patient.link, rules) into a new `mpi_links`
    /// version; prints its hash.
    Link {
        /// A TOML file with `[[mpi.rule]]` and `[mpi.system_alias]` (default: the built-in
        /// rules of docs/mpi.md).
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Keep two records apart from now on (wins over every rule); prints the new hash.
    Unlink {
        /// One record's patient id.
        a: String,
        /// The other's.
        b: String,
        /// Why (kept with the decision).
        #[arg(long)]
        reason: String,
    },
    /// Put two records together from now on (a user's link); prints the new hash.
    Relink {
        /// One record's patient id.
        a: String,
        /// The other's.
        b: String,
        /// Why (kept with the decision).
        #[arg(long)]
        reason: String,
    },
    /// The person of a record: its cluster and every link and decision behind it.
    Explain {
        /// Any source patient id of the person.
        patient: String,
        /// As known at this time (RFC 3339; default: everything known).
        #[arg(long)]
        as_of: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Pairwise precision and recall of the latest links against a truth file
    /// (`record_id,source,person_id`, as `ward synth --sources` writes).
    Evaluate {
        /// The truth file.
        #[arg(long)]
        truth: PathBuf,
        /// As known at this time (RFC 3339; default: everything known).
        #[arg(long)]
        as_of: Option<String>,
    },
}

/// The arguments of `ward ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// The input format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// A TOML mapping for csv, parquet and synthea (docs/mapping.md). Default: Ward's
    /// curated layout for csv and parquet (mappings/curated.toml), the shipped Synthea
    /// mapping for synthea.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Fail when bad records exceed a count (100) or a share (0.05 or 5%).
    #[arg(long)]
    pub max_bad: Option<String>,
    /// Zone of source times without one: UTC or a fixed offset such as -05:00.
    #[arg(long, default_value = "UTC")]
    pub zone: String,
    /// Fail when another writer moves a table's head during this run, instead of merging
    /// again onto the new head (the default, which never loses either writer's rows).
    #[arg(long)]
    pub no_retry: bool,
    /// A file of data-quality expectations about the curated tables (`[[expect]]`,
    /// docs/quality.md), evaluated on each curated version made, as a mapping's own are.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Input files or directories (walked in name order); `.gz` files are decompressed.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// The arguments of `ward historical`.
#[derive(Debug, clap::Args)]
pub struct HistoricalArgs {
    /// The feature set.
    #[arg(long)]
    pub set: String,
    /// Entity rows: a Parquet or CSV file, or a stored version (b3:HASH, NAME, NAME@TIME)
    /// with columns patient_id and timestamp (other columns are passed through).
    #[arg(long)]
    pub entities: String,
    /// Also write the training set to this Parquet file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The timeline to read (default: the newest of the set with the same knowledge).
    #[arg(long, conflicts_with = "features")]
    pub timeline: Option<String>,
    /// Compute the features straight from the latest curated versions with the set of
    /// this feature repository (TOML) instead of reading a timeline; nothing needs to be
    /// materialized first (docs/lookups.md, "Straight from curated rows").
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// Read a timeline materialized as occurred (an explicit opt-out of "as known at t");
    /// with --features, compute as occurred.
    #[arg(long)]
    pub as_occurred: bool,
    /// The entity column holding patient ids.
    #[arg(long, default_value = "patient_id")]
    pub patient_column: String,
    /// The entity column holding the lookup times.
    #[arg(long, default_value = "timestamp")]
    pub time_column: String,
    /// The training set's version name (default: `training-` and the feature set's name).
    #[arg(long)]
    pub name: Option<String>,
}

/// `ward key` subcommands (docs/encryption.md).
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// The store's key id and key provider (as JSON), after checking the key opens it.
    Status,
    /// Rewrap every data key under a new key-encryption key (headers rewritten, data
    /// untouched), then record the new key in the marker. The current key (the marker's
    /// provider, or WARD_KEY_PROVIDER) must still be available.
    Rotate {
        /// The new key's provider: file:PATH, env:NAME or command:PROGRAM ARG...
        #[arg(long)]
        new_key_provider: String,
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
                // Lance warns that it guesses the metrics prefix of an object store it was
                // handed (Ward's S3 client, src/store/object.rs): noise, not a problem.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,lance_io::object_store=error")
                }),
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
    if let Some(n) = serve::worker_threads(&cli)? {
        rt.worker_threads(n);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cli, clock))
}

/// Runs the parsed command: one function per command, in the file of its group.
async fn run_async(cli: Cli, clock: SharedClock) -> Result<()> {
    let dir = cli.store.as_path();
    match cli.command {
        Command::Init {
            encrypt,
            key_provider,
        } => store::init(dir, &clock, encrypt, key_provider)?,
        Command::Key { command } => store::key(dir, &clock, command).await?,
        Command::Put {
            file,
            name,
            kind,
            labels,
        } => store::put(dir, &clock, file, name, kind, labels).await?,
        Command::Datasets { kind, name, json } => store::datasets(dir, &clock, kind, name, json)?,
        Command::Show { reference, json } => store::show(dir, &clock, reference, json)?,
        Command::Verify { reference } => store::verify(dir, &clock, reference).await?,
        Command::Export { reference, out } => store::export(dir, &clock, reference, out).await?,
        Command::Tag {
            name,
            reference,
            override_reason,
        } => store::tag(dir, &clock, name, reference, override_reason).await?,
        Command::Quality { reference, json } => {
            store::quality(dir, &clock, reference, json).await?
        }
        Command::Register {
            name,
            training,
            metrics,
            metric,
            description,
            owner,
        } => {
            let r = models::Register {
                name,
                training,
                metrics,
                metric,
                description,
                owner,
            };
            models::register(dir, &clock, r).await?
        }
        Command::Models { name, json } => models::list(dir, &clock, name, json)?,
        Command::Cleanup => store::cleanup(dir, &clock)?,
        Command::Ingest(args) => ingest::ingest(dir, &clock, args).await?,
        Command::Materialize {
            features,
            set,
            as_occurred,
            partition_rows,
            full,
            entity,
        } => {
            let how = features::How {
                as_occurred,
                partition_rows,
                full,
                entity: crate::features::Entity::parse(&entity, "--entity")?,
            };
            features::materialize(dir, &clock, features, set, how).await?;
        }
        Command::Get {
            set,
            patients,
            as_of,
            json,
        } => lookups::get(dir, &clock, set, patients, as_of, json).await?,
        Command::Historical(args) => lookups::historical(dir, &clock, args).await?,
        Command::Asof {
            data_dir,
            features,
            entities,
            ttl_days,
            out,
        } => lookups::asof(data_dir, features, entities, ttl_days, out)?,
        Command::Rebuild { reference } => store::rebuild(dir, &clock, reference).await?,
        Command::Drift {
            training,
            online,
            since,
            set,
            fail_above,
            json,
        } => monitoring::drift(dir, &clock, training, online, since, set, fail_above, json).await?,
        Command::Skew {
            online,
            since,
            json,
        } => monitoring::skew(dir, &clock, online, since, json).await?,
        Command::Serve {
            addr,
            config,
            insecure,
            threads: _,
            mllp,
            http,
            kafka,
            kafka_topic,
        } => {
            let listeners = crate::service::Listeners {
                mllp,
                http,
                kafka,
                kafka_topics: kafka_topic,
            };
            serve::serve(dir, &clock, addr, config, insecure, listeners).await?
        }
        Command::Seal { feed, zone } => ingest::seal(dir, &clock, feed, zone).await?,
        Command::Demo {
            patients,
            seed,
            addr,
            no_serve,
            insecure,
        } => serve::demo(dir, &clock, patients, seed, addr, no_serve, insecure).await?,
        Command::Audit { command } => audit::run(command, dir)?,
        Command::Synth {
            patients,
            seed,
            format,
            out,
            sources: Some(sources),
        } => {
            let _ = format;
            mpi::synth_sources(patients, seed, &sources, out)?
        }
        Command::Synth {
            patients,
            seed,
            format,
            out,
            sources: None,
        } => ingest::synth(patients, seed, format, out)?,
        Command::Mpi { command } => mpi::run(dir, &clock, command).await?,
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
