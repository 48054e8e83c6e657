//! `materialize`: a feature set into a timeline version.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::clock::SharedClock;
use crate::store::Store;

/// `ward materialize`: a feature set into a timeline version; prints its hash.
pub(super) async fn materialize(
    dir: &Path,
    clock: &SharedClock,
    features: PathBuf,
    set: String,
    as_occurred: bool,
    partition_rows: usize,
) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
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
    Ok(())
}
