//! Data-quality expectations (`docs/quality.md`): checks declared next to the data they
//! guard, evaluated when a version is made, stored with it, and consulted before a version
//! may become `prod`.
//!
//! # Where they are declared
//! - In a feature repository, per feature set (`[[feature_set.expect]]`, about its features:
//!   `feature = "hemoglobin_last"`), evaluated by `ward materialize` on the new timeline.
//! - In a mapping (`[[expect]]`, about a curated table: `table = "observations"`,
//!   `column = "value_num"`), or in a file of expectations alone (`ward ingest --expect
//!   FILE`, for FHIR and HL7 v2 ingests, which use no mapping), evaluated by `ward ingest` on
//!   each curated version it makes.
//!
//! One `[[expect]]` table may hold several checks; each becomes its own [`Expectation`].
//!
//! # Results
//! A [`Report`] per checked version, put into the store as a version of its own (kind
//! `other`, name `<checked name>.quality`, its lineage's input the checked version, label
//! `ward.quality_of` = the checked hash, `ward.quality` = `pass`, `warn` or `fail`). A
//! report is data like any other: content-hashed, listed, verified. [`report_of`] finds the
//! report of a version.
//!
//! # The `prod` gate
//! [`gate_tag`]: a version with a failing expectation of severity `error` cannot be tagged
//! `prod` unless the caller gives a reason, which the caller then audits.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::store::{Kind, ListFilter, Manifest, PutOptions, Store};

/// The tag that expectations guard.
pub const GUARDED_TAG: &str = "prod";

/// Label naming the version a report is about.
pub const LABEL_OF: &str = "ward.quality_of";

/// Label holding a report's overall status (`pass`, `warn`, `fail`).
pub const LABEL_STATUS: &str = "ward.quality";

/// How bad a failing expectation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Blocks `prod` (the default).
    Error,
    /// Reported, never blocks.
    Warn,
}

impl Severity {
    /// As written in TOML and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
        }
    }
}

/// What an expectation is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// A column of a table (`table` = `None`: any table the expectations are given for).
    Column {
        /// The curated table, if named.
        table: Option<String>,
        /// The column.
        column: String,
    },
    /// A feature of a timeline: its rows' `value_num` (numbers) or `value_text` (text).
    Feature(String),
    /// The version as a whole (row-count change, freshness of a timeline).
    Whole {
        /// The curated table, if named.
        table: Option<String>,
    },
}

impl Subject {
    fn describe(&self) -> String {
        match self {
            Subject::Column {
                table: Some(t),
                column,
            } => format!("{t}.{column}"),
            Subject::Column {
                table: None,
                column,
            } => column.clone(),
            Subject::Feature(f) => format!("feature {f}"),
            Subject::Whole { table: Some(t) } => t.clone(),
            Subject::Whole { table: None } => "rows".into(),
        }
    }

    fn table(&self) -> Option<&str> {
        match self {
            Subject::Column { table, .. } | Subject::Whole { table } => table.as_deref(),
            Subject::Feature(_) => None,
        }
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "check")]
pub enum Check {
    /// Every non-null value within `[min, max]` (either bound may be open).
    Range {
        /// Lower bound, inclusive.
        min: Option<f64>,
        /// Upper bound, inclusive.
        max: Option<f64>,
    },
    /// The share of null values (for a feature: of change points with no data) at most `max`.
    NullRate {
        /// The largest share allowed, 0 to 1.
        max: f64,
    },
    /// Every non-null value is one of these (codes, units, classes).
    Allowed {
        /// The values allowed.
        values: Vec<String>,
    },
    /// No non-null value appears twice. On a version with a `known_at` column (every
    /// curated table keeps the history of its records), values repeat when two rows hold
    /// them with the same knowledge time: a record's later versions are not repeats.
    Unique,
    /// The newest time in `column` (a feature's `effective_at`) is at most `max_age` seconds
    /// before the time of the check.
    Freshness {
        /// The time column (`None`: `effective_at` of a timeline).
        column: Option<String>,
        /// Seconds.
        max_age: i64,
    },
    /// The row count differs from the previous version of the same name by at most `max`
    /// (a share: 0.5 allows half as many or half as many again).
    RowsChange {
        /// The largest relative change.
        max: f64,
    },
}

impl Check {
    fn describe(&self) -> String {
        let bound = |b: Option<f64>| b.map(|v| v.to_string()).unwrap_or_else(|| "..".into());
        match self {
            Check::Range { min, max } => format!("range [{}, {}]", bound(*min), bound(*max)),
            Check::NullRate { max } => format!("null rate <= {max}"),
            Check::Allowed { values } => format!("allowed {}", values.join("|")),
            Check::Unique => "unique".into(),
            Check::Freshness { max_age, .. } => format!("freshness <= {max_age} s"),
            Check::RowsChange { max } => format!("rows change <= {max}"),
        }
    }
}

/// A declared expectation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expectation {
    /// Its name (given, or made of the subject and the check).
    pub name: String,
    /// What it is about.
    pub subject: Subject,
    /// The check.
    pub check: Check,
    /// What a failure means.
    pub severity: Severity,
    /// Where it was declared (`file:line`).
    pub location: String,
}

/// An `[[expect]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    name: Option<String>,
    table: Option<String>,
    column: Option<String>,
    feature: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    null_rate_max: Option<f64>,
    allowed: Option<Vec<String>>,
    #[serde(default)]
    unique: bool,
    freshness: Option<String>,
    time: Option<String>,
    rows_change_max: Option<f64>,
    severity: Option<Severity>,
}

/// The expectations of a file of expectations alone (`ward ingest --expect FILE`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    expect: Vec<Spanned<RawExpect>>,
}

/// Where the expectations are declared, which decides what they may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// About curated tables (a mapping or an expectations file): `table` and `column`.
    Tables,
    /// About a feature set's timeline: `feature`.
    FeatureSet,
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Resolves raw `[[expect]]` tables (each with its span in `text`) into expectations.
///
/// # Errors
/// [`Error::BadInput`] at `origin:line` naming `expect` and the mistake: no check, a key
/// the scope does not allow (`feature` in a mapping, `table` in a feature set), a bound
/// that is not a number or a minimum above the maximum, a rate outside 0..1, a bad
/// duration.
pub fn resolve(
    raw: Vec<Spanned<RawExpect>>,
    text: &str,
    origin: &str,
    scope: Scope,
) -> Result<Vec<Expectation>> {
    let mut out = Vec::new();
    for spanned in raw {
        let location = format!("{origin}:{}", line_of(text, spanned.span().start));
        let r = spanned.into_inner();
        let bad = |reason: String| Error::BadInput {
            location: location.clone(),
            field: "expect".into(),
            reason,
        };
        let subject_column = match scope {
            Scope::Tables => {
                if r.table.is_none() {
                    return Err(bad(
                        "name the curated `table` the expectation is about".into()
                    ));
                }
                if r.feature.is_some() {
                    return Err(bad(
                        "`feature` belongs in a feature set's expectations; a table's name a `column`"
                            .into(),
                    ));
                }
                r.column.clone().map(|column| Subject::Column {
                    table: r.table.clone(),
                    column,
                })
            }
            Scope::FeatureSet => {
                if r.table.is_some() || r.column.is_some() {
                    return Err(bad(
                        "a feature set's expectations name a `feature`, not a `table` or `column`"
                            .into(),
                    ));
                }
                r.feature.clone().map(Subject::Feature)
            }
        };
        let whole = Subject::Whole {
            table: r.table.clone(),
        };
        let severity = r.severity.unwrap_or(Severity::Error);
        let mut checks: Vec<(Subject, Check)> = Vec::new();
        let need_subject = |what: &str| -> Result<Subject> {
            subject_column.clone().ok_or_else(|| {
                bad(format!(
                    "`{what}` needs {}",
                    match scope {
                        Scope::Tables => "a `column`",
                        Scope::FeatureSet => "a `feature`",
                    }
                ))
            })
        };
        if r.min.is_some() || r.max.is_some() {
            if let (Some(a), Some(b)) = (r.min, r.max) {
                if a > b {
                    return Err(bad(format!("min {a} is above max {b}")));
                }
            }
            if r.min.is_some_and(f64::is_nan) || r.max.is_some_and(f64::is_nan) {
                return Err(bad("a bound is not a number".into()));
            }
            checks.push((
                need_subject("min/max")?,
                Check::Range {
                    min: r.min,
                    max: r.max,
                },
            ));
        }
        if let Some(max) = r.null_rate_max {
            if !(0.0..=1.0).contains(&max) {
                return Err(bad(format!("null_rate_max {max} is not between 0 and 1")));
            }
            checks.push((need_subject("null_rate_max")?, Check::NullRate { max }));
        }
        if let Some(values) = &r.allowed {
            if values.is_empty() {
                return Err(bad("`allowed` lists no value".into()));
            }
            checks.push((
                need_subject("allowed")?,
                Check::Allowed {
                    values: values.clone(),
                },
            ));
        }
        if r.unique {
            if scope == Scope::FeatureSet {
                return Err(bad(
                    "`unique` applies to a table's column, not to a feature".into(),
                ));
            }
            checks.push((need_subject("unique")?, Check::Unique));
        }
        if let Some(f) = &r.freshness {
            let max_age = crate::features::parse_duration(f).map_err(bad)? / 1_000_000;
            let column = match scope {
                Scope::Tables => Some(r.time.clone().ok_or_else(|| {
                    bad("`freshness` of a table needs `time`, its time column".into())
                })?),
                Scope::FeatureSet => {
                    if r.time.is_some() {
                        return Err(bad(
                            "a timeline's freshness reads `effective_at`; leave out `time`".into(),
                        ));
                    }
                    None
                }
            };
            let subject = subject_column.clone().unwrap_or_else(|| whole.clone());
            checks.push((subject, Check::Freshness { column, max_age }));
        } else if r.time.is_some() {
            return Err(bad("`time` is only read by `freshness`".into()));
        }
        if let Some(max) = r.rows_change_max {
            if max.is_nan() || max < 0.0 {
                return Err(bad(format!("rows_change_max {max} is not a share >= 0")));
            }
            checks.push((whole.clone(), Check::RowsChange { max }));
        }
        if checks.is_empty() {
            return Err(bad(
                "no check: give min/max, null_rate_max, allowed, unique, freshness or rows_change_max"
                    .into(),
            ));
        }
        let several = checks.len() > 1;
        for (subject, check) in checks {
            let name = match (&r.name, several) {
                (Some(n), false) => n.clone(),
                (Some(n), true) => format!("{n}: {}", check.describe()),
                (None, _) => format!("{} {}", subject.describe(), check.describe()),
            };
            out.push(Expectation {
                name,
                subject,
                check,
                severity,
                location: location.clone(),
            });
        }
    }
    Ok(out)
}

/// Reads a file of expectations alone (`[[expect]]` tables about curated tables).
///
/// # Errors
/// [`Error::Io`] if unreadable; [`Error::BadInput`] at the line at fault.
pub fn load_file(path: &std::path::Path) -> Result<Vec<Expectation>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_file(&text, &path.display().to_string())
}

/// Parses a file of expectations alone; `origin` names it in errors.
///
/// # Errors
/// [`Error::BadInput`] at the line at fault.
pub fn parse_file(text: &str, origin: &str) -> Result<Vec<Expectation>> {
    let raw: RawFile = toml::from_str(text).map_err(|e| Error::BadInput {
        location: format!(
            "{origin}:{}",
            e.span().map(|s| line_of(text, s.start)).unwrap_or(0)
        ),
        field: "expect".into(),
        reason: e.message().trim().to_string(),
    })?;
    let exps = resolve(raw.expect, text, origin, Scope::Tables)?;
    check_tables(&exps)?;
    Ok(exps)
}

/// The `[[expect]]` tables of a mapping (the rest of the mapping is the mapping's business).
///
/// # Errors
/// [`Error::BadInput`] at the line at fault; a `table` that is not a curated table.
pub fn from_mapping(text: &str, origin: &str) -> Result<Vec<Expectation>> {
    #[derive(Deserialize)]
    struct Lenient {
        #[serde(default)]
        expect: Vec<Spanned<RawExpect>>,
    }
    let raw: Lenient = toml::from_str(text).map_err(|e| Error::BadInput {
        location: format!(
            "{origin}:{}",
            e.span().map(|s| line_of(text, s.start)).unwrap_or(0)
        ),
        field: "expect".into(),
        reason: e.message().trim().to_string(),
    })?;
    let exps = resolve(raw.expect, text, origin, Scope::Tables)?;
    check_tables(&exps)?;
    Ok(exps)
}

/// Checks that every table an expectation names is a curated table.
fn check_tables(exps: &[Expectation]) -> Result<()> {
    for e in exps {
        if let Some(t) = e.subject.table() {
            if crate::curated::Table::from_name(t).is_none() {
                return Err(Error::BadInput {
                    location: e.location.clone(),
                    field: "expect.table".into(),
                    reason: format!("{t:?} is not a curated table"),
                });
            }
        }
    }
    Ok(())
}

/// The outcome of one expectation on one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The expectation's name.
    pub expectation: String,
    /// What it is about.
    pub subject: String,
    /// The check, described.
    pub check: String,
    /// `error` or `warn`.
    pub severity: Severity,
    /// Whether it holds.
    pub passed: bool,
    /// What was seen (a rate, a range, a count), for people.
    pub observed: String,
    /// Rows that break it (0 for checks of the whole version).
    pub failing_rows: u64,
    /// Where it was declared.
    pub location: String,
}

/// Overall status of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every expectation holds.
    Pass,
    /// Only `warn` expectations fail.
    Warn,
    /// An `error` expectation fails.
    Fail,
}

impl Status {
    /// As written in the `ward.quality` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// The expectations of one version, evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The version checked.
    pub version: ContentHash,
    /// One outcome per expectation, in declaration order.
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// Pass, warn or fail.
    pub fn status(&self) -> Status {
        let failing = |s: Severity| self.outcomes.iter().any(|o| !o.passed && o.severity == s);
        if failing(Severity::Error) {
            Status::Fail
        } else if failing(Severity::Warn) {
            Status::Warn
        } else {
            Status::Pass
        }
    }

    /// The failing outcomes of severity `error`.
    pub fn blocking(&self) -> Vec<&Outcome> {
        self.outcomes
            .iter()
            .filter(|o| !o.passed && o.severity == Severity::Error)
            .collect()
    }

    /// One line per outcome, for a terminal.
    pub fn lines(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .map(|o| {
                let mark = match (o.passed, o.severity) {
                    (true, _) => "ok  ",
                    (false, Severity::Error) => "FAIL",
                    (false, Severity::Warn) => "warn",
                };
                format!("{mark} {} ({})", o.expectation, o.observed)
            })
            .collect()
    }

    fn batch(&self) -> Result<RecordBatch> {
        let text = |f: &dyn Fn(&Outcome) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(self.outcomes.iter().map(f)))
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("version", DataType::Utf8, false),
            Field::new("expectation", DataType::Utf8, false),
            Field::new("subject", DataType::Utf8, false),
            Field::new("check", DataType::Utf8, false),
            Field::new("severity", DataType::Utf8, false),
            Field::new("passed", DataType::Boolean, false),
            Field::new("observed", DataType::Utf8, false),
            Field::new("failing_rows", DataType::UInt64, false),
            Field::new("location", DataType::Utf8, false),
        ]));
        let version = self.version.to_string();
        let columns: Vec<ArrayRef> = vec![
            text(&|_| version.clone()),
            text(&|o| o.expectation.clone()),
            text(&|o| o.subject.clone()),
            text(&|o| o.check.clone()),
            text(&|o| o.severity.as_str().to_string()),
            Arc::new(BooleanArray::from_iter(
                self.outcomes.iter().map(|o| Some(o.passed)),
            )),
            text(&|o| o.observed.clone()),
            Arc::new(UInt64Array::from_iter_values(
                self.outcomes.iter().map(|o| o.failing_rows),
            )),
            text(&|o| o.location.clone()),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn from_batches(version: ContentHash, batches: &[RecordBatch]) -> Result<Report> {
        let mut outcomes = Vec::new();
        for b in batches {
            let col = |name: &str| -> Result<&ArrayRef> {
                b.column_by_name(name).ok_or_else(|| Error::Corrupt {
                    hash: version.to_string(),
                    what: format!("its quality report has no column {name}"),
                })
            };
            let text = |name: &str| -> Result<StringArray> {
                Ok(cast(col(name)?, &DataType::Utf8)?
                    .as_string::<i32>()
                    .clone())
            };
            let (exp, subj, check, sev, obs, loc) = (
                text("expectation")?,
                text("subject")?,
                text("check")?,
                text("severity")?,
                text("observed")?,
                text("location")?,
            );
            let passed = col("passed")?.as_boolean().clone();
            let failing = cast(col("failing_rows")?, &DataType::UInt64)?;
            let failing = failing.as_primitive::<arrow::datatypes::UInt64Type>();
            for i in 0..b.num_rows() {
                outcomes.push(Outcome {
                    expectation: exp.value(i).to_string(),
                    subject: subj.value(i).to_string(),
                    check: check.value(i).to_string(),
                    severity: if sev.value(i) == "warn" {
                        Severity::Warn
                    } else {
                        Severity::Error
                    },
                    passed: passed.value(i),
                    observed: obs.value(i).to_string(),
                    failing_rows: failing.value(i),
                    location: loc.value(i).to_string(),
                });
            }
        }
        Ok(Report { version, outcomes })
    }
}

/// Running state of one check over the rows of a version.
#[derive(Debug, Default)]
struct Tally {
    rows: u64,
    nulls: u64,
    failing: u64,
    seen_min: Option<f64>,
    seen_max: Option<f64>,
    newest_ms: Option<i64>,
    distinct: HashSet<String>,
    bad_values: BTreeMap<String, u64>,
}

/// The column of `batch` an expectation reads, as rows of that subject only.
struct Slice {
    values: Option<ArrayRef>,
    /// For a feature: the rows with no data (`count` = 0) count as null.
    no_data: Option<BooleanArray>,
    time: Option<ArrayRef>,
    /// `unique` on a curated table: the knowledge time (`known_at`) of each row, so that
    /// the successive versions of a record (its history) are not repeats of each other.
    records: Option<ArrayRef>,
}

fn to_f64(a: &ArrayRef, what: &str) -> Result<Vec<Option<f64>>> {
    let t = a.data_type();
    let numeric = t.is_numeric() || matches!(t, DataType::Duration(_));
    if !numeric {
        return Err(Error::invalid(
            what,
            format!("min/max need a numeric column; this one is {t}"),
        ));
    }
    let a = match t {
        DataType::Duration(_) => {
            // Durations read as days, as feature kinds read them (docs/features.md).
            let us = cast(
                &cast(a, &DataType::Duration(TimeUnit::Microsecond))?,
                &DataType::Int64,
            )?;
            let us = us.as_primitive::<Int64Type>().clone();
            return Ok(us
                .iter()
                .map(|v| v.map(|v| v as f64 / 86_400_000_000.0))
                .collect());
        }
        _ => cast(a, &DataType::Float64)?,
    };
    Ok(a.as_primitive::<Float64Type>().iter().collect())
}

fn to_ms(a: &ArrayRef, what: &str) -> Result<Vec<Option<i64>>> {
    if !a.data_type().is_temporal() {
        return Err(Error::invalid(
            what,
            format!(
                "freshness needs a time column; this one is {}",
                a.data_type()
            ),
        ));
    }
    let ts = cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    let ms = cast(&ts, &DataType::Int64)?;
    Ok(ms.as_primitive::<Int64Type>().iter().collect())
}

fn observe(e: &Expectation, slice: &Slice, t: &mut Tally) -> Result<()> {
    let what = format!("{} ({})", e.name, e.location);
    match &e.check {
        Check::RowsChange { .. } => {}
        Check::Freshness { .. } => {
            if let Some(time) = &slice.time {
                for v in to_ms(time, &what)?.into_iter().flatten() {
                    t.newest_ms = Some(t.newest_ms.map_or(v, |n| n.max(v)));
                }
            }
        }
        Check::Range { min, max } => {
            let Some(values) = &slice.values else {
                return Ok(());
            };
            for v in to_f64(values, &what)?.into_iter().flatten() {
                t.rows += 1;
                t.seen_min = Some(t.seen_min.map_or(v, |m| m.min(v)));
                t.seen_max = Some(t.seen_max.map_or(v, |m| m.max(v)));
                if min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m) || v.is_nan() {
                    t.failing += 1;
                }
            }
        }
        Check::NullRate { .. } => {
            let Some(values) = &slice.values else {
                return Ok(());
            };
            for i in 0..values.len() {
                t.rows += 1;
                let no_data = slice.no_data.as_ref().is_some_and(|n| n.value(i));
                if values.is_null(i) || no_data {
                    t.nulls += 1;
                }
            }
        }
        Check::Allowed { values: allowed } => {
            let Some(values) = &slice.values else {
                return Ok(());
            };
            let text = cast(values, &DataType::Utf8)?;
            for v in text.as_string::<i32>().iter().flatten() {
                t.rows += 1;
                if !allowed.iter().any(|a| a == v) {
                    t.failing += 1;
                    if t.bad_values.len() < 5 || t.bad_values.contains_key(v) {
                        *t.bad_values.entry(v.to_string()).or_default() += 1;
                    }
                }
            }
        }
        Check::Unique => {
            let Some(values) = &slice.values else {
                return Ok(());
            };
            let text = cast(values, &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            let records = slice
                .records
                .as_ref()
                .map(|r| cast(r, &DataType::Utf8))
                .transpose()?;
            let records = records.as_ref().map(|r| r.as_string::<i32>());
            for i in 0..text.len() {
                if text.is_null(i) {
                    continue;
                }
                t.rows += 1;
                let key = match records {
                    Some(r) if r.is_valid(i) => format!("{}\u{0}{}", text.value(i), r.value(i)),
                    _ => text.value(i).to_string(),
                };
                if !t.distinct.insert(key) {
                    t.failing += 1;
                }
            }
        }
    }
    Ok(())
}

fn conclude(
    e: &Expectation,
    t: &Tally,
    m: &Manifest,
    previous: Option<&Manifest>,
    now: DateTime<Utc>,
) -> Outcome {
    let (passed, observed, failing_rows) = match &e.check {
        Check::Range { .. } => {
            let seen = match (t.seen_min, t.seen_max) {
                (Some(a), Some(b)) => format!("values {a}..{b}"),
                _ => "no values".into(),
            };
            (
                t.failing == 0,
                format!("{seen}; {} of {} outside", t.failing, t.rows),
                t.failing,
            )
        }
        Check::NullRate { max } => {
            let rate = if t.rows == 0 {
                0.0
            } else {
                t.nulls as f64 / t.rows as f64
            };
            (
                rate <= *max,
                format!("null rate {rate:.4} ({} of {})", t.nulls, t.rows),
                if rate <= *max { 0 } else { t.nulls },
            )
        }
        Check::Allowed { .. } => {
            let examples: Vec<String> = t
                .bad_values
                .iter()
                .map(|(v, n)| format!("{v:?} x{n}"))
                .collect();
            (
                t.failing == 0,
                if t.failing == 0 {
                    format!("{} values, all allowed", t.rows)
                } else {
                    format!(
                        "{} of {} not allowed: {}",
                        t.failing,
                        t.rows,
                        examples.join(", ")
                    )
                },
                t.failing,
            )
        }
        Check::Unique => (
            t.failing == 0,
            format!("{} values, {} repeated", t.rows, t.failing),
            t.failing,
        ),
        Check::Freshness { max_age, .. } => match t.newest_ms {
            None => (false, "no times at all".into(), 0),
            Some(ms) => {
                let newest = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
                let age = (now - newest).num_seconds();
                (
                    age <= *max_age,
                    format!("newest {} ({age} s before the check)", newest.to_rfc3339()),
                    0,
                )
            }
        },
        Check::RowsChange { max } => match previous {
            None => (true, format!("{} rows; no previous version", m.rows), 0),
            Some(p) => {
                let change = if p.rows == 0 {
                    if m.rows == 0 {
                        0.0
                    } else {
                        f64::INFINITY
                    }
                } else {
                    (m.rows as f64 - p.rows as f64).abs() / p.rows as f64
                };
                (
                    change <= *max,
                    format!(
                        "{} rows, previously {} (change {:.4})",
                        m.rows, p.rows, change
                    ),
                    0,
                )
            }
        },
    };
    Outcome {
        expectation: e.name.clone(),
        subject: e.subject.describe(),
        check: e.check.describe(),
        severity: e.severity,
        passed,
        observed,
        failing_rows,
        location: e.location.clone(),
    }
}

/// The expectations that apply to a version of curated table `table` (or to a timeline:
/// pass `None`).
pub fn applicable<'a>(exps: &'a [Expectation], table: Option<&str>) -> Vec<&'a Expectation> {
    exps.iter()
        .filter(|e| match (e.subject.table(), table) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
        })
        .collect()
}

/// Evaluates `exps` on version `m` (a timeline when an expectation names a feature);
/// `previous` is the version the name pointed at before, for row-count changes. The time of
/// the check is the store's clock.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the expectation and where it was declared when it
/// names a column the version lacks or a column of the wrong type; store errors.
pub async fn evaluate(
    store: &Store,
    m: &Manifest,
    exps: &[&Expectation],
    previous: Option<&Manifest>,
) -> Result<Report> {
    let now = store.clock().now();
    let has = |c: &str| m.schema.iter().any(|col| col.name == c);
    let mut columns: Vec<String> = Vec::new();
    let mut want = |c: &str, e: &Expectation| -> Result<()> {
        if !has(c) {
            return Err(Error::invalid(
                format!("{} ({})", e.name, e.location),
                format!("{} ({}) has no column {c:?}", m.hash, m.name),
            ));
        }
        if !columns.iter().any(|x| x == c) {
            columns.push(c.to_string());
        }
        Ok(())
    };
    for e in exps {
        match (&e.subject, &e.check) {
            (_, Check::RowsChange { .. }) => {}
            (Subject::Feature(_), check) => {
                want("feature", e)?;
                match check {
                    Check::Freshness { .. } => want("effective_at", e)?,
                    Check::Allowed { .. } => want("value_text", e)?,
                    Check::NullRate { .. } => {
                        want("value_num", e)?;
                        want("count", e)?;
                    }
                    _ => want("value_num", e)?,
                }
            }
            (Subject::Whole { .. }, Check::Freshness { column, .. }) => {
                want(column.as_deref().unwrap_or("effective_at"), e)?;
            }
            (Subject::Column { column, .. }, check) => {
                want(column, e)?;
                if matches!(check, Check::Unique) && has("known_at") {
                    want("known_at", e)?;
                }
                if let Check::Freshness {
                    column: Some(t), ..
                } = check
                {
                    want(t, e)?;
                }
            }
            (Subject::Whole { .. }, _) => {}
        }
    }
    let mut tallies: Vec<Tally> = exps.iter().map(|_| Tally::default()).collect();
    if !columns.is_empty() {
        store
            .scan_columns(&m.hash, Some(&columns), |batch| {
                let features = batch
                    .column_by_name("feature")
                    .map(|c| cast(c, &DataType::Utf8))
                    .transpose()?;
                for (e, tally) in exps.iter().zip(tallies.iter_mut()) {
                    let slice = slice_for(e, batch, features.as_ref())?;
                    observe(e, &slice, tally)?;
                }
                Ok(())
            })
            .await?;
    }
    let outcomes = exps
        .iter()
        .zip(&tallies)
        .map(|(e, t)| conclude(e, t, m, previous, now))
        .collect();
    Ok(Report {
        version: m.hash,
        outcomes,
    })
}

fn slice_for(e: &Expectation, batch: &RecordBatch, features: Option<&ArrayRef>) -> Result<Slice> {
    let get = |c: &str| batch.column_by_name(c).cloned();
    match &e.subject {
        Subject::Feature(name) => {
            let Some(features) = features else {
                return Ok(Slice {
                    records: None,
                    values: None,
                    no_data: None,
                    time: None,
                });
            };
            let mask: BooleanArray = features
                .as_string::<i32>()
                .iter()
                .map(|f| Some(f == Some(name.as_str())))
                .collect();
            let pick = |c: &str| -> Result<Option<ArrayRef>> {
                get(c)
                    .map(|a| arrow::compute::filter(&a, &mask).map_err(Error::from))
                    .transpose()
            };
            let value_col = match e.check {
                Check::Allowed { .. } => "value_text",
                _ => "value_num",
            };
            let no_data = pick("count")?
                .map(|c| -> Result<BooleanArray> {
                    let c = cast(&c, &DataType::UInt64)?;
                    Ok(c.as_primitive::<arrow::datatypes::UInt64Type>()
                        .iter()
                        .map(|n| Some(n == Some(0)))
                        .collect())
                })
                .transpose()?;
            Ok(Slice {
                records: None,
                values: pick(value_col)?,
                no_data,
                time: pick("effective_at")?,
            })
        }
        Subject::Column { column, .. } => Ok(Slice {
            values: get(column),
            records: match e.check {
                Check::Unique if column != "known_at" => get("known_at"),
                _ => None,
            },
            no_data: None,
            time: match &e.check {
                Check::Freshness {
                    column: Some(t), ..
                } => get(t),
                _ => None,
            },
        }),
        Subject::Whole { .. } => Ok(Slice {
            records: None,
            values: None,
            no_data: None,
            time: match &e.check {
                Check::Freshness { column, .. } => get(column.as_deref().unwrap_or("effective_at")),
                _ => None,
            },
        }),
    }
}

/// The name a version's reports are put under.
pub fn report_name(checked: &str) -> String {
    format!("{checked}.quality")
}

/// Puts `report` into the store as the quality report of version `m`.
///
/// # Errors
/// Store errors.
pub async fn store_report(store: &Store, m: &Manifest, report: &Report) -> Result<ContentHash> {
    let batch = report.batch()?;
    let mut opts = PutOptions::new(report_name(&m.name), Kind::Other);
    opts.lineage.inputs = vec![m.hash];
    opts.lineage.params = serde_json::json!({ "op": "quality" });
    opts.labels.insert(LABEL_OF.to_string(), m.hash.to_string());
    opts.labels.insert(
        LABEL_STATUS.to_string(),
        report.status().as_str().to_string(),
    );
    let out = store.put_batches(batch.schema(), vec![batch], opts).await?;
    Ok(out.manifest.hash)
}

/// The stored report of version `m`, if its expectations were ever evaluated (the newest
/// report when there are several).
///
/// # Errors
/// Store errors; [`Error::Corrupt`] if a report cannot be read.
pub async fn report_of(store: &Store, m: &Manifest) -> Result<Option<Report>> {
    let filter = ListFilter {
        kind: Some(Kind::Other),
        name: Some(report_name(&m.name)),
    };
    let found = store
        .list(&filter)?
        .into_iter()
        .filter(|r| r.lineage.inputs.first() == Some(&m.hash))
        .max_by_key(|r| r.created_at);
    let Some(r) = found else {
        return Ok(None);
    };
    let (_, batches) = store.read(&r.hash).await?;
    // Every row names the checked version, so a report's content (and hash) belongs to one
    // checked version only.
    Ok(Some(Report::from_batches(m.hash, &batches)?))
}

/// Evaluates the applicable expectations on `m`, stores the report when there is any, and
/// returns it. The previous version is the one the name pointed at before `m`.
///
/// # Errors
/// As [`evaluate`] and [`store_report`].
pub async fn check_version(
    store: &Store,
    m: &Manifest,
    exps: &[Expectation],
    table: Option<&str>,
) -> Result<Option<Report>> {
    let apply = applicable(exps, table);
    if apply.is_empty() {
        return Ok(None);
    }
    let previous = previous_of(store, m)?;
    let report = evaluate(store, m, &apply, previous.as_ref()).await?;
    store_report(store, m, &report).await?;
    Ok(Some(report))
}

/// The version name `m.name` pointed at before `m` (for row-count change).
fn previous_of(store: &Store, m: &Manifest) -> Result<Option<Manifest>> {
    let log = store.head_log(&m.name)?;
    let mut before: Option<ContentHash> = None;
    for h in log {
        if h.hash == m.hash {
            break;
        }
        before = Some(h.hash);
    }
    match before {
        Some(h) if h != m.hash => Ok(Some(store.manifest(&h)?)),
        _ => Ok(None),
    }
}

/// Whether version `m` may be tagged `tag`: only the guarded tag is checked. A version with
/// a failing `error` expectation is refused unless `override_reason` is given (the caller
/// audits it). Returns the blocking outcomes that were overridden.
///
/// # Errors
/// [`Error::FailedPrecondition`] naming the failing expectations and how to override.
pub async fn gate_tag(
    store: &Store,
    tag: &str,
    m: &Manifest,
    override_reason: Option<&str>,
) -> Result<Vec<Outcome>> {
    if tag != GUARDED_TAG {
        return Ok(Vec::new());
    }
    let Some(report) = report_of(store, m).await? else {
        return Ok(Vec::new());
    };
    let blocking: Vec<Outcome> = report.blocking().into_iter().cloned().collect();
    if blocking.is_empty() {
        return Ok(blocking);
    }
    match override_reason.map(str::trim) {
        Some(r) if !r.is_empty() => Ok(blocking),
        _ => Err(Error::FailedPrecondition {
            what: format!("tagging {} ({}) {tag}", m.hash, m.name),
            reason: format!(
                "{} expectation(s) fail: {}; fix the data, or tag with an override reason (audited)",
                blocking.len(),
                blocking
                    .iter()
                    .map(|o| format!("{} [{}] ({})", o.expectation, o.location, o.observed))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }),
    }
}

/// The audit text of an override of the `prod` gate.
pub fn override_note(overridden: &[Outcome], reason: &str) -> String {
    format!(
        "quality gate overridden ({} failing: {}); reason: {}",
        overridden.len(),
        overridden
            .iter()
            .map(|o| o.expectation.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        reason.trim()
    )
}

/// Evaluates the expectations a feature repository declares for `set` on its new timeline
/// `hash` and stores the report (`None`: the set declares none).
///
/// # Errors
/// As [`check_version`].
pub async fn check_timeline(
    store: &Store,
    repo: &crate::features::FeatureRepo,
    set: &str,
    hash: &ContentHash,
) -> Result<Option<Report>> {
    let Some(exps) = repo.expectations.get(set).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let m = store.manifest(hash)?;
    check_version(store, &m, exps, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Expectation>> {
        parse_file(text, "x.toml")
    }

    #[test]
    fn one_table_with_several_checks_gives_one_expectation_each() {
        let e = parse(
            "[[expect]]\ntable = \"observations\"\ncolumn = \"value_num\"\nmin = 0\nmax = 30\nnull_rate_max = 0.1\n",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].check,
            Check::Range {
                min: Some(0.0),
                max: Some(30.0)
            }
        );
        assert_eq!(e[1].check, Check::NullRate { max: 0.1 });
        assert_eq!(e[0].location, "x.toml:1");
        assert_eq!(e[0].name, "observations.value_num range [0, 30]");
    }

    #[test]
    fn mistakes_name_the_line() {
        let cases = [
            ("[[expect]]\ntable = \"t\"\ncolumn = \"a\"\n", "no check"),
            (
                "\n[[expect]]\ntable = \"t\"\ncolumn = \"a\"\nmin = 3\nmax = 1\n",
                "above max",
            ),
            (
                "[[expect]]\ntable = \"t\"\ncolumn = \"a\"\nnull_rate_max = 2\n",
                "between 0 and 1",
            ),
            ("[[expect]]\ntable = \"t\"\nmin = 1\n", "needs a `column`"),
            (
                "[[expect]]\ncolumn = \"a\"\nmin = 1\n",
                "name the curated `table`",
            ),
            (
                "[[expect]]\ntable = \"t\"\ncolumn = \"a\"\nfreshness = \"2x\"\ntime = \"t\"\n",
                "bad duration",
            ),
            (
                "[[expect]]\ntable = \"t\"\ncolumn = \"a\"\nfreshness = \"2d\"\n",
                "needs `time`",
            ),
            (
                "[[expect]]\ntable = \"t\"\nfeature = \"a\"\nmin = 1\n",
                "feature set",
            ),
            (
                "[[expect]]\ntable = \"t\"\ncolumn = \"a\"\nmni = 1\n",
                "unknown field",
            ),
            (
                "[[expect]]\ntable = \"nope\"\ncolumn = \"a\"\nmin = 1\n",
                "not a curated table",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains("x.toml:"), "{err}");
        }
        let err = parse("\n\n[[expect]]\ntable = \"encounters\"\ncolumn = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml:3"), "{err}");
    }
}
