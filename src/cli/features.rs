//! `materialize`: a feature set into a timeline version.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::clock::SharedClock;
use crate::store::Store;

/// How `ward materialize` materializes.
pub(super) struct How {
    pub(super) as_occurred: bool,
    pub(super) partition_rows: usize,
    pub(super) full: bool,
    pub(super) entity: crate::features::Entity,
}

/// `ward materialize`: a feature set into a timeline version, incrementally from the newest
/// timeline of the set when it can (`--full`: never); says which and why on stderr, prints
/// its hash.
pub(super) async fn materialize(
    dir: &Path,
    clock: &SharedClock,
    features: PathBuf,
    set: String,
    how: How,
) -> Result<()> {
    let How {
        as_occurred,
        partition_rows,
        full,
        entity,
    } = how;
    let store = Store::open_existing(dir, clock.clone())?;
    let repo = crate::features::FeatureRepo::load(&features)?;
    let opts = crate::features::MaterializeOptions {
        knowledge: if as_occurred {
            crate::features::Knowledge::AsOccurred
        } else {
            crate::features::Knowledge::AsKnown
        },
        partition_rows: partition_rows.max(1),
        entity,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let out = crate::features::materialize_latest(&store, &repo, &set, &opts, full).await?;
    let parts = match out.partitions {
        1 => String::new(),
        n => format!(", in {n} ranges of buckets"),
    };
    let patients = match &out.basis {
        crate::features::Basis::Full { .. } => format!("{} patients", out.recomputed),
        crate::features::Basis::Incremental { .. } => format!(
            "{} patients recomputed, {} reused",
            out.recomputed, out.reused
        ),
    };
    eprintln!("materializing {}: {}", out.set, out.basis);
    eprintln!(
        "materialized {} ({} change points, {patients}{parts}) in {:.1} s from:",
        out.set,
        out.rows,
        started.elapsed().as_secs_f64()
    );
    for (table, hash) in &out.inputs {
        eprintln!("  {table:<13} {hash}");
    }
    if let Some(links) = &out.mpi_links {
        eprintln!("  {:<13} {links} (keyed by person)", crate::mpi::LINKS);
    }
    eprintln!("  definition    {}", out.definition);
    if let Some(report) = crate::quality::check_timeline(&store, &repo, &set, &out.hash).await? {
        eprintln!("expectations: {}", report.status().as_str());
        for line in report.lines() {
            eprintln!("  {line}");
        }
    }
    outln!("{}", out.hash);
    Ok(())
}
