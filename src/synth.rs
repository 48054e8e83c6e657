//! The deterministic synthetic cohort generator (`ward synth`).
//!
//! Real samples are small; the demo, the differential tests and the benchmarks need
//! realistic data at any scale, identical across formats. This module simulates patients
//! (chronic conditions, clinic and ED visits, inpatient stays with labs, procedures, drugs,
//! diagnoses, care teams, 30-day readmissions, deaths, late and corrected results) straight
//! into Ward's curated rows, and writes the same cohort as curated Parquet or CSV, Synthea
//! CSV, FHIR R4 Bulk NDJSON or HL7 v2. `docs/synth.md` documents the distributions and what
//! each format cannot carry. The data is synthetic: no real patient is behind any row.
//!
//! Determinism: patient `i` is a pure function of `(seed, i)` (its own ChaCha8 stream,
//! [`generate_patient`]), chunks of patients are generated in parallel and written in order,
//! and every writer is byte-stable, so the same options give byte-identical files whatever
//! the thread count.
//!
//! - `cohort`: the clinical model, one patient at a time.
//! - `vocab`: the code tables (ICD-10-CM, LOINC, SNOMED CT, RxNorm, services, ...).
//! - `tables`: curated Parquet and CSV; `synthea`, `fhir`, `hl7v2`: the source formats.

mod cohort;
mod fhir;
mod hl7v2;
pub mod sources;
mod synthea;
mod tables;
mod vocab;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use indicatif::ProgressBar;
use rayon::prelude::*;

use crate::curated::{CuratedTables, Table};
use crate::error::{Error, Result};

pub use cohort::SOURCE_SYSTEM;

/// What to generate. Build with struct update syntax over [`SynthOptions::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthOptions {
    /// Number of patients (ids `P0000000` upwards). Default 1,000.
    pub patients: u64,
    /// The seed: with the period it fixes every patient. Default 42.
    pub seed: u64,
    /// Start of the simulated period (first visits happen in its first year). Default
    /// 2015-01-01T00:00:00Z.
    pub start: DateTime<Utc>,
    /// End of the simulated period: no encounter starts at or after it (a stay in progress
    /// still ends, and late results and coding may land after it). Default
    /// 2025-01-01T00:00:00Z.
    pub end: DateTime<Utc>,
    /// Patients generated in parallel and written together, bounding memory; the output
    /// does not depend on it except for the HL7 v2 file split and Parquet row groups.
    /// Default 10,000.
    pub chunk_size: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            patients: 1_000,
            seed: 42,
            start: Utc
                .with_ymd_and_hms(2015, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            end: Utc
                .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            chunk_size: 10_000,
        }
    }
}

impl SynthOptions {
    /// Checks the options before any file is touched.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the period is empty or shorter than a day, a bound
    /// is not on a whole second, or `chunk_size` is 0.
    pub fn validate(&self) -> Result<()> {
        if self.end - self.start < chrono::Duration::days(1) {
            return Err(Error::invalid(
                "synth period",
                format!(
                    "end {} must be at least a day after start {}",
                    self.end, self.start
                ),
            ));
        }
        if self.start.timestamp_subsec_nanos() != 0 || self.end.timestamp_subsec_nanos() != 0 {
            return Err(Error::invalid(
                "synth period",
                "start and end must be whole seconds",
            ));
        }
        if self.chunk_size == 0 {
            return Err(Error::invalid("chunk_size", "must be at least 1"));
        }
        Ok(())
    }
}

/// The output formats of `ward synth`; each holds the same cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SynthFormat {
    /// Ward's curated layout as Parquet: one `<table>.parquet` per curated table.
    Parquet,
    /// Ward's curated layout as CSV: one `<table>.csv` per curated table, with a header.
    Csv,
    /// The Synthea v3 CSV layout (patients, encounters, conditions, observations,
    /// procedures, medications).
    Synthea,
    /// FHIR R4 Bulk Data NDJSON, one `<ResourceType>.ndjson` per resource type.
    FhirNdjson,
    /// HL7 v2.5.1 ADT (A01, A04, A03) and ORU^R01 messages, one file per chunk.
    Hl7v2,
}

impl SynthFormat {
    /// Every format, in the order `ward synth --help` lists them.
    pub const ALL: [SynthFormat; 5] = [
        SynthFormat::Parquet,
        SynthFormat::Csv,
        SynthFormat::Synthea,
        SynthFormat::FhirNdjson,
        SynthFormat::Hl7v2,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SynthFormat::Parquet => "parquet",
            SynthFormat::Csv => "csv",
            SynthFormat::Synthea => "synthea",
            SynthFormat::FhirNdjson => "fhir-ndjson",
            SynthFormat::Hl7v2 => "hl7v2",
        }
    }
}

impl fmt::Display for SynthFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SynthFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        SynthFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = SynthFormat::ALL.iter().map(|f| f.name()).collect();
                Error::invalid(
                    "synth format",
                    format!("{s:?} is not one of {}", names.join(", ")),
                )
            })
    }
}

/// What a [`write()`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    /// Patients generated.
    pub patients: u64,
    /// Curated rows generated per table (every version of a row counts; the same in every
    /// format, whatever a format can carry).
    pub rows: BTreeMap<Table, u64>,
    /// The files written, in the order they were created.
    pub files: Vec<PathBuf>,
    /// Bytes written over all files.
    pub bytes: u64,
}

/// One patient's full record, every curated table: a pure function of `(opts.seed,
/// opts.start, opts.end, index)`, so any patient can be generated alone, in any order, on
/// any thread. Rows are in canonical order ([`CuratedTables::sort_canonical`]); patient ids
/// are `P` and the index on 7 digits, so concatenating patients in index order keeps it.
pub fn generate_patient(opts: &SynthOptions, index: u64) -> CuratedTables {
    cohort::generate(opts, index)
}

/// Generates patients `range` in parallel (rayon's current pool) and returns them in
/// index order.
pub fn generate_range(opts: &SynthOptions, range: std::ops::Range<u64>) -> Vec<CuratedTables> {
    range
        .into_par_iter()
        .map(|i| generate_patient(opts, i))
        .collect()
}

/// Generates the whole cohort (`opts.patients` patients) as one set of tables, in canonical
/// order (patients in index order; see [`generate_patient`]). Holds everything in memory:
/// for tests, benchmarks and small cohorts; [`write()`] streams large ones.
pub fn generate_cohort(opts: &SynthOptions) -> CuratedTables {
    let mut all = CuratedTables::default();
    for p in generate_range(opts, 0..opts.patients) {
        all.extend(p);
    }
    all
}

/// A writer of one format: receives the chunks in order, one patient's tables each.
trait ChunkWriter {
    /// Writes one chunk (patients in index order); `index` numbers the chunk from 0.
    fn write_chunk(&mut self, index: usize, chunk: Vec<CuratedTables>) -> Result<()>;
    /// Flushes and closes every file; returns them with their sizes.
    fn finish(self: Box<Self>) -> Result<Vec<(PathBuf, u64)>>;
}

/// Generates `opts.patients` patients and writes them to `out_dir` (created if missing) in
/// `format`, streaming: chunks of `opts.chunk_size` patients are generated in parallel on
/// rayon's current pool and written in order, so memory stays bounded by a chunk whatever
/// the cohort size. Existing files of the same names are overwritten. `progress`, when
/// given, gets its length set to the patient count and advances per chunk.
///
/// # Errors
/// [`Error::InvalidArgument`] for bad options ([`SynthOptions::validate`]); [`Error::Io`] or
/// [`Error::Parquet`] naming the file when writing fails.
pub fn write(
    opts: &SynthOptions,
    format: SynthFormat,
    out_dir: &Path,
    progress: Option<&ProgressBar>,
) -> Result<SynthSummary> {
    opts.validate()?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut writer: Box<dyn ChunkWriter> = match format {
        SynthFormat::Parquet => Box::new(tables::TablesWriter::parquet(out_dir)?),
        SynthFormat::Csv => Box::new(tables::TablesWriter::csv(out_dir)?),
        SynthFormat::Synthea => Box::new(synthea::SyntheaWriter::create(out_dir)?),
        SynthFormat::FhirNdjson => Box::new(fhir::FhirWriter::create(out_dir)?),
        SynthFormat::Hl7v2 => Box::new(hl7v2::Hl7Writer::new(out_dir)),
    };
    if let Some(pb) = progress {
        pb.set_length(opts.patients);
    }
    let mut rows: BTreeMap<Table, u64> = Table::ALL.iter().map(|t| (*t, 0)).collect();
    let chunk = opts.chunk_size as u64;
    let mut first = 0u64;
    let mut index = 0usize;
    while first < opts.patients {
        let last = (first + chunk).min(opts.patients);
        let patients = generate_range(opts, first..last);
        for p in &patients {
            for t in Table::ALL {
                *rows.entry(t).or_default() += p.len(t) as u64;
            }
        }
        writer.write_chunk(index, patients)?;
        if let Some(pb) = progress {
            pb.inc(last - first);
        }
        first = last;
        index += 1;
    }
    let files = writer.finish()?;
    Ok(SynthSummary {
        patients: opts.patients,
        rows,
        bytes: files.iter().map(|f| f.1).sum(),
        files: files.into_iter().map(|f| f.0).collect(),
    })
}

/// Formats a time as ISO 8601 in UTC with whole seconds (`2015-01-02T03:04:05Z`), the form
/// every text format here writes.
fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A buffered output file that counts its bytes, so writers report sizes without a
/// `metadata` call and I/O errors name the file.
struct OutFile {
    path: PathBuf,
    inner: std::io::BufWriter<std::fs::File>,
    bytes: u64,
}

impl OutFile {
    fn create(path: PathBuf) -> Result<Self> {
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(OutFile {
            path,
            inner: std::io::BufWriter::with_capacity(1 << 20, file),
            bytes: 0,
        })
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        use std::io::Write;
        self.bytes += buf.len() as u64;
        self.inner
            .write_all(buf)
            .map_err(|e| Error::io(&self.path, e))
    }

    fn finish(self) -> Result<(PathBuf, u64)> {
        let file = self
            .inner
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        Ok((self.path, self.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_their_names() {
        for f in SynthFormat::ALL {
            assert_eq!(f.name().parse::<SynthFormat>().ok(), Some(f));
        }
        assert!("fhir".parse::<SynthFormat>().is_err());
    }

    #[test]
    fn bad_options_are_refused() {
        let o = SynthOptions::default();
        let empty = SynthOptions {
            end: o.start,
            ..o.clone()
        };
        assert!(empty.validate().is_err());
        let chunk = SynthOptions {
            chunk_size: 0,
            ..o.clone()
        };
        assert!(chunk.validate().is_err());
        assert!(o.validate().is_ok());
    }

    #[test]
    fn iso_times_are_whole_seconds_in_utc() {
        let t = Utc
            .with_ymd_and_hms(2016, 2, 29, 23, 5, 9)
            .single()
            .expect("valid");
        assert_eq!(iso(t), "2016-02-29T23:05:09Z");
    }
}
