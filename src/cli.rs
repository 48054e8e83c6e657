//! The `ward` command line: argument parsing and output, over the library.
//!
//! Conventions (DESIGN.md, "Command line"): a command that makes a version prints its hash
//! `b3:<64 hex>` as the last line of standard output; progress and summaries go to standard
//! error; any failure exits non-zero with a message naming what is wrong.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use crate::clock::{self, SharedClock};
use crate::store::{Kind, ListFilter, Manifest, PutOptions, Store, VersionRef};

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
}

fn parse_label(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: a label is KEY=VALUE"))
}

/// Runs the command line with the process's arguments; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cli, clock))
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
            println!("{}", m.hash);
        }
        Command::Datasets { kind, name, json } => {
            let store = open()?;
            let filter = ListFilter {
                kind: kind.map(|k| k.parse()).transpose()?,
                name,
            };
            let all = store.list(&filter)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                for m in &all {
                    println!(
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
                println!("{}", serde_json::to_string_pretty(&m)?);
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
            println!("{}", report.hash);
        }
        Command::Export { reference, out } => {
            let store = open()?;
            let m = store.resolve(&reference.parse::<VersionRef>()?)?;
            let rows = store
                .export_parquet(&m.hash, &out)
                .await
                .with_context(|| format!("exporting {} to {}", m.hash, out.display()))?;
            eprintln!("wrote {rows} rows to {}", out.display());
            println!("{}", m.hash);
        }
        Command::Tag { name, reference } => {
            let store = open()?;
            let m = store.resolve(&reference.parse::<VersionRef>()?)?;
            store.tag(&name, &m.hash)?;
            eprintln!("tag {name} -> {}", m.hash);
            println!("{}", m.hash);
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
    }
    Ok(())
}

fn print_manifest(m: &Manifest) {
    println!("hash:        {}", m.hash);
    println!("name:        {}", m.name);
    println!("kind:        {}", m.kind);
    println!("rows:        {}", m.rows);
    println!("bytes:       {}", m.bytes);
    println!("created_at:  {}", m.created_at.to_rfc3339());
    println!("ward:        {}", m.ward_version);
    println!("schema:");
    for c in &m.schema {
        let null = if c.nullable { "" } else { " not null" };
        println!("  {:<24} {}{}", c.name, c.data_type, null);
    }
    if !m.lineage.inputs.is_empty() || m.lineage.definition.is_some() {
        println!("lineage:");
        for i in &m.lineage.inputs {
            println!("  input      {i}");
        }
        if let Some(d) = &m.lineage.definition {
            println!("  definition {d}");
        }
    }
    for (k, v) in &m.labels {
        println!("label:       {k}={v}");
    }
}
