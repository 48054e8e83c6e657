//! Serving: `serve` (the gRPC API and Arrow Flight) and `demo` (the main job end to end,
//! then serve), and the runtime's worker threads a serving command asks for.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::clock::SharedClock;
use crate::store::Store;

use super::{progress_bar, Cli, Command};

/// `ward serve`: the gRPC API and Arrow Flight until SIGTERM or Ctrl-C.
pub(super) async fn serve(
    dir: &Path,
    clock: &SharedClock,
    addr: Option<std::net::SocketAddr>,
    config: Option<PathBuf>,
    insecure: bool,
    listeners: crate::service::Listeners,
) -> Result<()> {
    crate::service::run(
        dir,
        addr,
        config.as_deref(),
        insecure,
        listeners,
        clock.clone(),
    )
    .await?;
    Ok(())
}

/// `ward demo`: generate, ingest, materialize, verify, then serve.
pub(super) async fn demo(
    dir: &Path,
    clock: &SharedClock,
    patients: u64,
    seed: u64,
    addr: std::net::SocketAddr,
    no_serve: bool,
    insecure: bool,
) -> Result<()> {
    if !no_serve {
        crate::demo::exposure(addr, insecure)?;
    }
    let store = Store::open(dir, clock.clone())?;
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
    eprintln!("  python3 examples/python/verify_hash.py encounters.parquet --expect <hash above>");
    for c in &report.ingest.curated {
        outln!("{}", c.hash);
    }
    if !no_serve {
        crate::demo::serve(store, addr, insecure).await?;
    }
    Ok(())
}

/// The runtime's worker threads a command asks for: `ward serve --threads`, else its
/// config's `threads`; `None` for the default (one per core).
pub(super) fn worker_threads(cli: &Cli) -> Result<Option<usize>> {
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
