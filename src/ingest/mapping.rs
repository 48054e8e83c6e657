//! Generic CSV and Parquet ingest through a TOML mapping; Synthea CSV ships as one.
//!
//! A hospital export nobody prepared for Ward is mapped by writing a TOML file, not code: the
//! mapping says which input files feed which curated tables, and for every target column
//! where its value comes from (a source column, a constant, a `{column}` template, an
//! expression over the record's columns, or a lookup into another file of the same run) and
//! how its text is read (value maps and vocabularies, time formats and zones, numbers, code
//! systems). `docs/mapping.md` documents
//! every key with its default; `mappings/synthea.toml` and `docs/examples/mimic.toml` are
//! worked examples.
//!
//! # Layout
//!
//! Two stages, as ripgrep does for its flags:
//! - `raw`: serde structs mirroring the TOML, `deny_unknown_fields` everywhere, so a
//!   misspelt key is an error with its line;
//! - `resolve`: checks and resolves them into [`Mapping`] (tables and columns exist, required
//!   columns are mapped, formats and zones are valid), errors naming file, line and key.
//!
//! Then the data side:
//! - `read`: CSV (`csv` crate) and Parquet (Arrow reader) as a stream of text records;
//! - `value`: times, zones, numbers, file-name globs, templates;
//! - `expr`: expressions over the columns of a record (`{ expr = "..." }`), parsed and
//!   type-checked when the mapping loads, evaluated per record;
//! - `apply`: evaluates a resolved mapping on each record, builds curated rows, and
//!   quarantines what it cannot use. Every record ends up as a row, a [`BadRecord`] or a
//!   [`Skipped`].
//!
//! [`BadRecord`]: crate::ingest::BadRecord
//! [`Skipped`]: crate::ingest::Skipped

mod apply;
mod expr;
mod raw;
mod read;
mod resolve;
mod value;

use std::collections::HashMap;

use chrono::FixedOffset;

use self::read::CsvOptions;
use self::value::{Piece, TimeFormat};
use crate::curated::Table;
use crate::error::Result;
use crate::ingest::{Context, Input, Parsed};

/// The shipped mapping for Synthea v3 CSV exports (`ward ingest --format synthea`).
const SYNTHEA: &str = include_str!("../../mappings/synthea.toml");

/// The built-in mapping of Ward's own curated layout (`--format csv|parquet` without
/// `--mapping`).
const CURATED: &str = include_str!("../../mappings/curated.toml");

/// A resolved, validated mapping: which files feed which curated tables, and how.
///
/// Built once by [`Mapping::from_toml`] (or [`Mapping::synthea`]) and then applied to any
/// number of runs by [`parse`]; nothing in it depends on the data.
#[derive(Debug, Clone)]
pub struct Mapping {
    name: String,
    origin: String,
    /// Default zone of times without an offset; `None`: the context's.
    zone: Option<FixedOffset>,
    /// Default time formats.
    time: TimeFormat,
    files: Vec<FileEntry>,
}

impl Mapping {
    /// Parses and validates a mapping written in TOML (`docs/mapping.md`).
    ///
    /// `origin` names the mapping in error messages (usually its file path).
    ///
    /// # Errors
    /// [`Error::BadInput`](crate::Error::BadInput) whose location is `origin:line`, whose
    /// field is the key at fault (e.g. `file[2].target[1].columns.admit_time`), and whose
    /// reason says what is wrong: TOML syntax, an unknown key, an unknown table or target
    /// column, a required column left unmapped, an invalid time format or zone, a lookup
    /// naming no file entry, conflicting keys.
    pub fn from_toml(text: &str, origin: &str) -> Result<Mapping> {
        resolve::from_toml(text, origin)
    }

    /// The mapping shipped for Synthea v3 CSV exports (`mappings/synthea.toml`): patients,
    /// encounters (and care_team from their providers), observations, conditions,
    /// procedures and medications. Synthea has no knowledge time, so `known_at` is the
    /// ingestion time.
    pub fn synthea() -> Mapping {
        // The file is compiled in and covered by a unit test, so it cannot fail at run time.
        Mapping::from_toml(SYNTHEA, "mappings/synthea.toml")
            .expect("the shipped Synthea mapping is valid (unit-tested)")
    }

    /// The built-in mapping of Ward's own curated layout (`mappings/curated.toml`): one file
    /// per curated table named after it (`encounters.csv`, `encounters.parquet`, also
    /// gzipped), with exactly the curated column names and RFC 3339 times. What `ward synth
    /// --format csv|parquet` writes comes back through it row for row, `known_at` and
    /// `retracted_at` included. `ward ingest --format csv|parquet` uses it when no
    /// `--mapping` is given.
    pub fn curated() -> Mapping {
        // Compiled in and covered by the ingest integration tests, so it cannot fail here.
        Mapping::from_toml(CURATED, "mappings/curated.toml")
            .expect("the built-in curated-layout mapping is valid (tested)")
    }

    /// The mapping's `name` (defaults to its origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the mapping was read from, as given to [`Mapping::from_toml`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The curated tables this mapping can feed, in [`Table::ALL`] order.
    pub fn tables(&self) -> Vec<Table> {
        let mut t: Vec<Table> = self
            .files
            .iter()
            .flat_map(|f| f.targets.iter().map(|t| t.table))
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// The file entry an input named `name` belongs to: the first whose pattern matches its
    /// last path component without `.gz`, ignoring ASCII case.
    fn entry_for(&self, name: &str) -> Option<usize> {
        let m = value::match_name(name);
        self.files
            .iter()
            .position(|f| f.patterns.iter().any(|p| value::glob_match(p, m)))
    }
}

/// Parses `inputs` with `mapping` into curated rows.
///
/// An input whose name (without `.gz`) ends in `.parquet` is read as Parquet, any other as
/// CSV. An input matching no file entry is reported as [`Skipped`](crate::ingest::Skipped)
/// (record 0: the whole file). Every record of a matched file becomes one row per target
/// table it feeds, a [`BadRecord`](crate::ingest::BadRecord) with file, 1-based line (row
/// for Parquet), source column and reason, or a `Skipped` (filtered out by every target).
/// Lookups see every input of the run, whatever the order. Never panics, whatever the bytes.
pub fn parse(mapping: &Mapping, inputs: &[Input<'_>], ctx: &Context) -> Parsed {
    apply::parse(mapping, inputs, ctx)
}

/// One `[[file]]` entry, resolved.
#[derive(Debug, Clone)]
struct FileEntry {
    /// Name used by lookups.
    name: String,
    /// Glob patterns on the file name.
    patterns: Vec<String>,
    csv: CsvOptions,
    targets: Vec<Target>,
}

/// One `[[file.target]]`: a curated table fed by the file.
#[derive(Debug, Clone)]
struct Target {
    table: Table,
    /// All must hold for a record to feed this table.
    filter: Vec<Condition>,
    require_standard_system: bool,
    /// Mapped columns, in schema order.
    columns: Vec<Column>,
    /// Every column name of the table's schema, in order (so rows need not rebuild it).
    schema_names: Vec<String>,
}

/// A mapped target column.
#[derive(Debug, Clone)]
struct Column {
    /// The target column's name.
    name: String,
    /// Its position in the table's schema.
    index: usize,
    kind: Kind,
    spec: Spec,
}

/// What a target column holds, from its Arrow type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    Time,
    Date,
}

/// How one target column's value is found and read.
#[derive(Debug, Clone)]
struct Spec {
    source: Source,
    /// The source column may be absent from a file (then it is null).
    optional: bool,
    /// When false for a record, the value is null (before `default`).
    when: Option<Condition>,
    /// Source value → target value; `None` maps to null.
    map: Option<HashMap<String, Option<String>>>,
    vocabulary: Vocabulary,
    unmapped: Unmapped,
    default: Option<String>,
    /// `None`: the mapping's default.
    time: Option<TimeFormat>,
    /// `None`: the mapping's, else the context's default zone.
    zone: Option<FixedOffset>,
    decimal: char,
    invalid: Invalid,
    required: bool,
}

/// Where a value comes from.
#[derive(Debug, Clone)]
enum Source {
    Column(String),
    Value(String),
    Template(Vec<Piece>),
    /// An expression over the record's columns (boxed: it is the largest variant).
    Expr(Box<expr::Expr>),
    Lookup(Lookup),
}

/// A value taken from the row of another file of the same run whose `on` column equals this
/// record's `key` column.
#[derive(Debug, Clone)]
struct Lookup {
    /// The file entry's name, for messages.
    entry: String,
    /// The file entry's index.
    file: usize,
    key: String,
    on: String,
    column: String,
}

/// A test on one column of a record.
#[derive(Debug, Clone)]
struct Condition {
    column: String,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    In(Vec<String>),
    NotIn(Vec<String>),
    NotEmpty,
    Empty,
}

impl Condition {
    fn holds(&self, value: Option<&str>) -> bool {
        match (&self.test, value) {
            (Test::In(set), Some(v)) => set.iter().any(|s| s == v),
            (Test::In(_), None) => false,
            (Test::NotIn(set), Some(v)) => !set.iter().any(|s| s == v),
            (Test::NotIn(_), None) => true,
            (Test::NotEmpty, v) => v.is_some_and(|v| !v.is_empty()),
            (Test::Empty, v) => v.is_none_or(str::is_empty),
        }
    }
}

/// A built-in vocabulary tried after the value map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vocabulary {
    None,
    EncounterClass,
    AdmissionType,
    Sex,
}

impl Vocabulary {
    fn apply(self, v: &str) -> Option<&'static str> {
        match self {
            Vocabulary::None => None,
            Vocabulary::EncounterClass => crate::curated::encounter_class::normalize(v),
            Vocabulary::AdmissionType => crate::curated::admission_type::normalize(v),
            Vocabulary::Sex => match v.trim().to_ascii_lowercase().as_str() {
                "f" | "female" | "w" => Some("female"),
                "m" | "male" => Some("male"),
                "o" | "other" | "x" => Some("other"),
                "u" | "unknown" | "unk" => Some("unknown"),
                _ => None,
            },
        }
    }
}

/// What to do with a value that neither the map nor the vocabulary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unmapped {
    Keep,
    Null,
    Error,
}

/// What to do with a value that does not parse as the column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Invalid {
    Error,
    Null,
}

#[cfg(test)]
mod tests;
