//! Ingest: sources parsed into curated tables, bad records into quarantine.
//!
//! Each source module turns input bytes into a [`Parsed`]: curated rows plus the records it
//! could not use ([`BadRecord`], which become the quarantine table) and the records it
//! deliberately skipped ([`Skipped`], e.g. an HL7 v2 message type Ward does not read).
//! Nothing is dropped silently: every input record ends up in exactly one of the three.
//!
//! - [`hl7v2`]: HL7 v2.x ADT and ORU messages.
//! - [`fhir`]: FHIR R4 Bundles and Bulk Data NDJSON.
//! - [`mapping`]: generic CSV/Parquet through a TOML mapping (Synthea ships as one).
//! - [`pipeline`]: one ingest run: raw kept, parsed, merged into curated versions, quarantine.

pub mod crossrun;
pub mod fhir;
pub mod hl7v2;
mod json;
pub mod mapping;
pub mod pipeline;
pub mod read;
#[cfg(test)]
mod test_support;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use chrono::{DateTime, FixedOffset, Utc};

use crate::curated::{CuratedTables, Table};

/// One input file's bytes (already decompressed when it was gzip), with the name used in
/// error locations and in `source_system`.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The file name as given (or a stream name).
    pub name: &'a str,
    /// The file's content.
    pub bytes: &'a [u8],
}

/// Settings every source parser receives.
#[derive(Debug, Clone)]
pub struct Context {
    /// The ingestion time (from the injected clock): `known_at` of rows whose source says
    /// nothing about when the information became available.
    pub ingested_at: DateTime<Utc>,
    /// The zone of source times that carry no offset (HL7 v2 `TS` without `+hhmm`, CSV
    /// columns mapped without a zone). Default UTC.
    pub default_offset: FixedOffset,
}

impl Context {
    /// A context with the given ingestion time and UTC as the default zone.
    pub fn new(ingested_at: DateTime<Utc>) -> Self {
        Context {
            ingested_at,
            default_offset: FixedOffset::east_opt(0).expect("zero offset is valid"),
        }
    }
}

/// Where in the input a record was: file and line (text formats) or record number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The input file (as given on the command line) or stream name.
    pub file: String,
    /// 1-based line number (CSV, NDJSON, HL7 v2 segment) or record number (Bundle entry,
    /// Parquet row, HL7 v2 message); 0 when the whole file is meant.
    pub record: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.record)
    }
}

/// A record that could not be curated, with the reason. Goes to the quarantine table.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    /// Where the record was.
    pub location: Location,
    /// The curated table it would have fed, if known.
    pub table: Option<Table>,
    /// The field at fault (e.g. `PID-7`, `Encounter.period.start`, `ADMITTIME`), if one is.
    pub field: Option<String>,
    /// A short, stable reason code (`unparseable`, `missing_field`, `bad_date`,
    /// `dangling_reference`, `unknown_code_system`, `bad_value`, ...), used for counts.
    pub reason: String,
    /// A human-readable explanation.
    pub detail: String,
    /// The raw record, cut to at most 4 KiB.
    pub raw: String,
}

/// A record read and deliberately not curated (a resource or message type Ward does not use).
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// Where the record was.
    pub location: Location,
    /// What it was (e.g. `ADT^A09`, `AllergyIntolerance`).
    pub what: String,
}

/// The result of parsing some input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Curated rows.
    pub tables: CuratedTables,
    /// Records that could not be curated.
    pub bad: Vec<BadRecord>,
    /// Records skipped on purpose.
    pub skipped: Vec<Skipped>,
    /// FHIR: every resource version with an id ([`ParsedBatches::versions`]).
    pub versions: Vec<VersionKey>,
}

impl Parsed {
    /// Appends another parse result.
    pub fn extend(&mut self, other: Parsed) {
        self.tables.extend(other.tables);
        self.bad.extend(other.bad);
        self.skipped.extend(other.skipped);
        self.versions.extend(other.versions);
    }

    /// The parts one after the other, each list allocated once at its final size.
    pub fn concat(parts: Vec<Parsed>) -> Parsed {
        let mut bad = Vec::with_capacity(parts.iter().map(|p| p.bad.len()).sum());
        let mut skipped = Vec::with_capacity(parts.iter().map(|p| p.skipped.len()).sum());
        let mut tables = Vec::with_capacity(parts.len());
        let mut versions = Vec::new();
        for p in parts {
            bad.extend(p.bad);
            skipped.extend(p.skipped);
            versions.extend(p.versions);
            tables.push(p.tables);
        }
        Parsed {
            tables: CuratedTables::concat(tables),
            bad,
            skipped,
            versions,
        }
    }

    /// The same result with each table's rows as one Arrow record batch.
    ///
    /// # Errors
    /// An Arrow error building a batch.
    pub fn into_batches(self) -> Result<ParsedBatches, ArrowError> {
        Ok(ParsedBatches {
            batches: self.tables.to_batches()?,
            bad: self.bad,
            skipped: self.skipped,
            versions: self.versions,
            ..ParsedBatches::default()
        })
    }
}

/// The result of parsing some input, with the curated rows already as Arrow record batches
/// (what an ingest run writes). Parsers that can fill column builders directly produce this
/// without building row structs first (e.g. [`fhir::parse_batches`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedBatches {
    /// One record batch per non-empty curated table, in [`Table::ALL`] order.
    pub batches: Vec<(Table, RecordBatch)>,
    /// Records that could not be curated.
    pub bad: Vec<BadRecord>,
    /// Records skipped on purpose.
    pub skipped: Vec<Skipped>,
    /// FHIR: every resource version with an id, so that a run can order its versions with
    /// those earlier runs stored ([`pipeline`]'s cross-run version pass).
    pub versions: Vec<VersionKey>,
    /// HL7 v2: rows of earlier runs that this run changed (a later message retracted them),
    /// as they are stored now; the changed rows are among [`ParsedBatches::batches`].
    pub replaced: Vec<(Table, RecordBatch)>,
}

/// One version of a FHIR resource: the table of its rows, their `source_id`
/// (`ResourceType/id`, shared by the resource's versions) and its `known_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionKey {
    /// The table of the resource's rows (an encounter's participants are in `care_team` too).
    pub table: Table,
    /// The rows' `source_id`.
    pub source_id: String,
    /// The version's knowledge time.
    pub known_at: chrono::DateTime<chrono::Utc>,
}

impl ParsedBatches {
    /// Curated rows of `table`.
    pub fn rows(&self, table: Table) -> usize {
        self.batches
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, b)| b.num_rows())
            .sum()
    }
}

/// Cuts `raw` to at most 4 KiB on a character boundary, for [`BadRecord::raw`].
pub fn clip_raw(raw: &str) -> String {
    const MAX: usize = 4096;
    if raw.len() <= MAX {
        return raw.to_string();
    }
    let mut end = MAX;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    raw[..end].to_string()
}
