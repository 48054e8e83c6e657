//! Source files in: `ingest` (into curated versions) and `synth` (a synthetic cohort in
//! one of the source formats).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::clock::SharedClock;
use crate::ingest::mapping::Mapping;
use crate::ingest::pipeline::{self, IngestOptions, MaxBad};
use crate::ingest::Context;
use crate::store::Store;
use crate::synth::{SynthFormat, SynthOptions};

use super::{progress_bar, IngestArgs};

/// `ward ingest`: source files into curated versions; prints the curated hashes.
pub(super) async fn ingest(dir: &Path, clock: &SharedClock, args: IngestArgs) -> Result<()> {
    let IngestArgs {
        format,
        mapping,
        max_bad,
        zone,
        no_retry,
        expect,
        paths,
    } = args;
    let store = Store::open(dir, clock.clone())?;
    // Expectations are read before any input, so a mistake in them costs no ingest.
    let mut expectations = match &expect {
        Some(path) => crate::quality::load_file(path)?,
        None => Vec::new(),
    };
    let (mapping, mapping_text) = match &mapping {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading mapping {}", path.display()))?;
            let m = Mapping::from_toml(&text, &path.to_string_lossy())?;
            expectations.extend(crate::quality::from_mapping(
                &text,
                &path.to_string_lossy(),
            )?);
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
    let report = pipeline::ingest_with(&store, &files, &opts, Some(&bar), on_conflict).await?;
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
    if let Some(st) = report.state.as_ref().filter(|s| s.read_from.is_some()) {
        let buckets = if st.buckets > 0 {
            format!("{} of {} buckets", st.buckets_read, st.buckets)
        } else {
            "read whole".to_string()
        };
        eprintln!(
            "  {:<13} read {} of {} entries ({buckets}, {} replays)",
            crate::ingest::crossrun::STATE,
            st.entries_read,
            st.entries_stored,
            st.replays
        );
    }
    if let Some(st) = report.state.as_ref() {
        if let Some(h) = st.written {
            let buckets = if st.buckets_written > 0 {
                format!("{} buckets rewritten", st.buckets_written)
            } else {
                "written whole".to_string()
            };
            eprintln!(
                "  {:<13} {} entries changed ({buckets})  {h}",
                crate::ingest::crossrun::STATE,
                st.entries_written
            );
        }
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
    let mut failing = 0;
    for c in &report.curated {
        let m = store.manifest(&c.hash)?;
        if let Some(r) =
            crate::quality::check_version(&store, &m, &expectations, Some(&c.table)).await?
        {
            eprintln!("  expectations of {}: {}", c.table, r.status().as_str());
            for line in r.lines() {
                eprintln!("    {line}");
            }
            failing += r.blocking().len();
        }
    }
    if failing > 0 {
        eprintln!(
            "  {failing} expectation(s) fail: the versions are kept, and cannot be tagged prod without an override (docs/quality.md)"
        );
    }
    for c in &report.curated {
        outln!("{}", c.hash);
    }
    Ok(())
}

/// `ward synth`: writes a synthetic cohort in one of the source formats.
pub(super) fn synth(patients: u64, seed: u64, format: String, out: PathBuf) -> Result<()> {
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
    Ok(())
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

/// `ward seal`: the unsealed records of a live feed's write-ahead log as one ingest run
/// (docs/live.md); prints the curated hashes, one per line.
pub(super) async fn seal(
    dir: &Path,
    clock: &SharedClock,
    feed: String,
    zone: String,
) -> Result<()> {
    let store = Store::open(dir, clock.clone())?;
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
    Ok(())
}
