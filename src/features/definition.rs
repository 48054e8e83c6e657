//! Feature definitions: the TOML feature repository, in two stages.
//!
//! 1. **Raw** (`Raw*` structs): the file as written, every key known (`deny_unknown_fields`),
//!    with source spans so an error can name the line.
//! 2. **Resolved** ([`FeatureRepo`], [`FeatureSet`], [`FeatureDef`]): defaults filled in,
//!    durations in microseconds, tables and columns checked against the curated schemas (and
//!    the planned schemas of derived tables), filters typed.
//!
//! A resolved [`FeatureSet`] has a canonical JSON form ([`FeatureSet::canonical_json`]):
//! features sorted by name, filters sorted by column, derived SQL as the parser prints it.
//! Its BLAKE3 is the definition hash ([`FeatureSet::definition_hash`]); formatting, comments
//! and key order of the TOML do not change it. The canonical form is stored in a timeline's
//! lineage, and [`FeatureSet::from_canonical_json`] reads it back for `rebuild`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, Scalar, StringArray};
use arrow::datatypes::{DataType, Int32Type, SchemaRef};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::derived::{self, ParsedQuery};
use crate::curated::Table;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::scores::ScoreComponent;

/// The columns of each score table that `score` features decode (besides provenance).
pub(crate) const SCORE_COLUMNS: [(Table, &[&str]); 4] = [
    (
        Table::Encounters,
        &[
            "encounter_id",
            "class",
            "admit_time",
            "discharge_time",
            "admission_type",
            "service",
        ],
    ),
    (
        Table::Conditions,
        &["condition_id", "code_system", "code", "onset_time"],
    ),
    (
        Table::Observations,
        &[
            "observation_id",
            "code_system",
            "code",
            "effective_time",
            "value_num",
            "unit",
            "status",
        ],
    ),
    (Table::Procedures, &["procedure_id", "performed_time"]),
];

/// The curated tables a `score` feature reads (the scores' inputs).
pub(crate) const SCORE_TABLES: [Table; 4] = [
    Table::Encounters,
    Table::Observations,
    Table::Conditions,
    Table::Procedures,
];

/// The tag at the start of the canonical form; a change of the form changes it.
const CANONICAL_FORMAT: &str = "ward-feature-set-v1";

/// Microseconds in a day.
pub const DAY_US: i64 = 86_400_000_000;

// ---------------------------------------------------------------------------------------
// Resolved definitions
// ---------------------------------------------------------------------------------------

/// What a feature computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// Days from the last matching event to the lookup time (computed at lookup).
    DaysSince,
    /// Number of matching events in the window.
    Count,
    /// Sum of a numeric column over the window.
    Sum,
    /// Mean of a numeric column over the window.
    Mean,
    /// Minimum of a numeric column over the window.
    Min,
    /// Maximum of a numeric column over the window.
    Max,
    /// The column's value in the latest matching row.
    Last,
    /// The column's value in the earliest matching row.
    First,
    /// 1 when a matching event is in the window, else 0.
    Exists,
    /// Whole years from the birth date to the lookup time (computed at lookup).
    Age,
    /// Label: 1 when a matching admission starts in `(t, t + horizon]`.
    ReadmittedWithin,
    /// Label: 1 when the patient dies in `(t, t + horizon]`.
    DiedWithin,
    /// A clinical score component (LACE, HOSPITAL, Charlson) of the patient's most recent
    /// inpatient stay discharged at or before the lookup time, as known then.
    Score,
}

impl FeatureKind {
    /// Every kind, in the order of the docs.
    pub const ALL: [FeatureKind; 13] = [
        FeatureKind::DaysSince,
        FeatureKind::Count,
        FeatureKind::Sum,
        FeatureKind::Mean,
        FeatureKind::Min,
        FeatureKind::Max,
        FeatureKind::Last,
        FeatureKind::First,
        FeatureKind::Exists,
        FeatureKind::Age,
        FeatureKind::ReadmittedWithin,
        FeatureKind::DiedWithin,
        FeatureKind::Score,
    ];

    /// The name as written in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::DaysSince => "days_since",
            FeatureKind::Count => "count",
            FeatureKind::Sum => "sum",
            FeatureKind::Mean => "mean",
            FeatureKind::Min => "min",
            FeatureKind::Max => "max",
            FeatureKind::Last => "last",
            FeatureKind::First => "first",
            FeatureKind::Exists => "exists",
            FeatureKind::Age => "age",
            FeatureKind::ReadmittedWithin => "readmitted_within",
            FeatureKind::DiedWithin => "died_within",
            FeatureKind::Score => "score",
        }
    }

    /// Parses a name as written by [`FeatureKind::as_str`].
    pub fn from_name(s: &str) -> Option<FeatureKind> {
        FeatureKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Labels look forward in time: allowed in training sets, refused online.
    pub fn is_label(self) -> bool {
        matches!(
            self,
            FeatureKind::ReadmittedWithin | FeatureKind::DiedWithin
        )
    }

    /// Whether a TTL bounds the age of the value (kinds whose value comes from one row).
    pub fn uses_ttl(self) -> bool {
        matches!(
            self,
            FeatureKind::DaysSince
                | FeatureKind::Last
                | FeatureKind::First
                | FeatureKind::Min
                | FeatureKind::Max
                | FeatureKind::Score
        )
    }

    /// Kinds whose value over no rows is 0 (a count of nothing), not "no data".
    pub fn zero_when_empty(self) -> bool {
        matches!(self, FeatureKind::Count | FeatureKind::Exists) || self.is_label()
    }

    /// Kinds that read a value column.
    fn column_rule(self) -> ColumnRule {
        match self {
            FeatureKind::Sum | FeatureKind::Mean | FeatureKind::Min | FeatureKind::Max => {
                ColumnRule::Required(&[ValueClass::Num])
            }
            FeatureKind::Last | FeatureKind::First => {
                ColumnRule::Required(&[ValueClass::Num, ValueClass::Text])
            }
            FeatureKind::Age => ColumnRule::Required(&[ValueClass::Time]),
            _ => ColumnRule::None,
        }
    }
}

enum ColumnRule {
    None,
    Required(&'static [ValueClass]),
}

/// How a column's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueClass {
    /// Numbers (floats, integers, decimals; durations as days).
    Num,
    /// Strings.
    Text,
    /// Dates and timestamps.
    Time,
}

impl ValueClass {
    pub(crate) fn of(dt: &DataType) -> Option<ValueClass> {
        Some(match dt {
            DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
            | DataType::Duration(_) => ValueClass::Num,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ValueClass::Text,
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => ValueClass::Time,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            ValueClass::Num => "numeric",
            ValueClass::Text => "string",
            ValueClass::Time => "date or timestamp",
        }
    }
}

/// A row filter on one string column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op", content = "values")]
pub enum Condition {
    /// The column equals the value.
    Eq(String),
    /// The column is one of the values.
    In(Vec<String>),
    /// The column starts with one of the prefixes (ICD-10 families like `I50`).
    Prefix(Vec<String>),
}

impl Condition {
    /// Whether a (non-null) column value passes.
    pub fn matches(&self, v: &str) -> bool {
        match self {
            Condition::Eq(x) => v == x,
            Condition::In(xs) => xs.iter().any(|x| x == v),
            Condition::Prefix(ps) => ps.iter().any(|p| v.starts_with(p.as_str())),
        }
    }
}

/// The rows of a table some feature of a set reads ([`FeatureSet::row_filters`]): those
/// passing every condition of at least one of `any_of` (a null value passes none).
#[derive(Debug, Clone, PartialEq)]
pub struct RowFilter {
    /// Each feature's conditions on text columns, distinct.
    pub any_of: Vec<BTreeMap<String, Condition>>,
}

impl RowFilter {
    /// The filter as a DataFusion expression, for a scan that evaluates it before reading
    /// the other columns (Lance).
    pub fn expr(&self) -> datafusion::prelude::Expr {
        use datafusion::prelude::{lit, Expr};
        let cond = |c: &str, cond: &Condition| -> Expr {
            // The column named as written (`col()` would parse the name).
            let column = || Expr::Column(datafusion::common::Column::from_name(c));
            match cond {
                Condition::Eq(v) => column().eq(lit(v.as_str())),
                Condition::In(vs) => {
                    column().in_list(vs.iter().map(|v| lit(v.as_str())).collect(), false)
                }
                Condition::Prefix(ps) => ps
                    .iter()
                    .map(|p| column().like(lit(format!("{}%", like_escape(p)))))
                    .reduce(Expr::or)
                    .unwrap_or(lit(false)),
            }
        };
        self.any_of
            .iter()
            .map(|conds| {
                conds
                    .iter()
                    .map(|(c, k)| cond(c, k))
                    .reduce(Expr::and)
                    .unwrap_or(lit(true))
            })
            .reduce(Expr::or)
            .unwrap_or(lit(false))
    }

    /// Which rows of `batch` pass (a batch without one of the filter's columns: an error
    /// naming it).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a missing column or one that is not text; [`Error::Arrow`]
    /// if a kernel fails.
    pub fn keep(&self, batch: &RecordBatch, what: &str) -> Result<BooleanArray> {
        use arrow::compute::kernels::{boolean, cmp, comparison};
        use arrow::compute::prep_null_mask_filter;
        // Column-at-a-time kernels; a null value passes no condition (nulls become false).
        let none = || BooleanArray::from(vec![false; batch.num_rows()]);
        let either = |a: BooleanArray, b: BooleanArray| boolean::or(&a, &b);
        let mut any = none();
        for conds in &self.any_of {
            let mut all: Option<BooleanArray> = None;
            for (c, k) in conds {
                let no_text = || Error::invalid(what, format!("no text column {c}"));
                let col = batch.column_by_name(c).ok_or_else(no_text)?;
                // The condition on a text array: true where it holds, false elsewhere.
                let holds = |a: &StringArray| -> Result<BooleanArray> {
                    let scalar = |v: &str| Scalar::new(StringArray::from(vec![v]));
                    let mut pass = BooleanArray::from(vec![false; a.len()]);
                    let values: Vec<&String> = match k {
                        Condition::Eq(v) => vec![v],
                        Condition::In(vs) | Condition::Prefix(vs) => vs.iter().collect(),
                    };
                    for v in values {
                        let hit = match k {
                            Condition::Prefix(_) => comparison::starts_with(a, &scalar(v))?,
                            _ => cmp::eq(a, &scalar(v))?,
                        };
                        pass = either(pass, hit)?;
                    }
                    Ok(pass)
                };
                let pass = match (
                    col.as_string_opt::<i32>(),
                    col.as_dictionary_opt::<Int32Type>(),
                ) {
                    (Some(a), _) => holds(a)?,
                    // A dictionary: the condition once per distinct value, then per row by key.
                    (None, Some(d)) => {
                        let values = d.values().as_string_opt::<i32>().ok_or_else(no_text)?;
                        let by_value = holds(values)?;
                        let taken = arrow::compute::take(&by_value, d.keys(), None)?;
                        taken.as_boolean().clone()
                    }
                    (None, None) => return Err(no_text()),
                };
                // (prep_null_mask_filter expects a null buffer.)
                let pass = if pass.null_count() > 0 {
                    prep_null_mask_filter(&pass)
                } else {
                    pass
                };
                all = Some(match all {
                    None => pass,
                    Some(x) => boolean::and(&x, &pass)?,
                });
            }
            any = either(
                any,
                all.unwrap_or_else(|| BooleanArray::from(vec![true; batch.num_rows()])),
            )?;
        }
        Ok(any)
    }
}

/// `p` with LIKE's wildcards (`%`, `_`) and its escape character (`\`) escaped.
fn like_escape(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for ch in p.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// One resolved feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDef {
    /// The feature's name, unique in its set.
    pub name: String,
    /// What it computes.
    pub kind: FeatureKind,
    /// The source table: a curated table name or a derived table of the repository.
    pub table: String,
    /// Row filter: every condition must hold (a null column value never matches).
    pub filter: BTreeMap<String, Condition>,
    /// The value column, for kinds that read one.
    pub column: Option<String>,
    /// The event time column (default: the table's event time).
    pub time: String,
    /// Window `(t - w, t]` in microseconds; `None` = all history.
    pub window_us: Option<i64>,
    /// The TTL in microseconds after overrides; `None` = none, or a kind without TTL.
    pub ttl_us: Option<i64>,
    /// Labels: the horizon `(t, t + h]` in microseconds.
    pub horizon_us: Option<i64>,
    /// Score features: the component ([`ScoreComponent::name`], e.g. `lace_total`). Absent
    /// from the canonical form of other kinds, so their definition hashes do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
}

impl FeatureDef {
    /// The score component of a `score` feature (`None` for other kinds).
    pub fn score_component(&self) -> Option<ScoreComponent> {
        match self.kind {
            FeatureKind::Score => self
                .component
                .as_deref()
                .and_then(ScoreComponent::from_name),
            _ => None,
        }
    }
}

/// A derived table: a SQL query over curated tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedDef {
    /// The table's name (not a curated table's).
    pub name: String,
    /// The query, as the SQL parser prints it back.
    pub sql: String,
    /// Its event time column (a timestamp).
    pub time: String,
}

/// The columns every event of a table carries: whose it is, when it was known and retracted,
/// and where it came from (which orders ties).
const PROVENANCE: [&str; 4] = ["patient_id", "known_at", "retracted_at", "source_id"];

/// A resolved feature set: everything materialization needs, and what the definition hash
/// covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSet {
    /// The set's name.
    pub name: String,
    /// The entity features describe (`patient`).
    pub entity: String,
    /// Whether the set is served online (then it may not hold labels).
    pub online: bool,
    /// The set's default TTL in microseconds (`None`: no TTL).
    pub ttl_us: Option<i64>,
    /// Features, sorted by name (inherited ones included).
    pub features: Vec<FeatureDef>,
    /// The derived tables its features read, sorted by name.
    pub derived: Vec<DerivedDef>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Canonical {
    format: String,
    set: FeatureSet,
}

impl FeatureSet {
    /// The canonical serialization hashed by [`FeatureSet::definition_hash`].
    pub fn canonical_json(&self) -> String {
        let c = Canonical {
            format: CANONICAL_FORMAT.into(),
            set: self.clone(),
        };
        // Plain structs, strings and numbers: serialization cannot fail.
        serde_json::to_string(&c).unwrap_or_default()
    }

    /// The definition hash: BLAKE3 of [`FeatureSet::canonical_json`].
    pub fn definition_hash(&self) -> ContentHash {
        ContentHash(*blake3::hash(self.canonical_json().as_bytes()).as_bytes())
    }

    /// Reads a canonical form back (from a timeline's lineage), validating it as a loaded
    /// file would be.
    ///
    /// # Errors
    /// [`Error::BadInput`] naming `origin` when it does not parse or does not validate.
    pub fn from_canonical_json(json: &str, origin: &str) -> Result<FeatureSet> {
        let c: Canonical = serde_json::from_str(json).map_err(|e| Error::BadInput {
            location: origin.to_string(),
            field: "definition".into(),
            reason: format!("not a canonical feature set: {e}"),
        })?;
        if c.format != CANONICAL_FORMAT {
            return Err(Error::BadInput {
                location: origin.to_string(),
                field: "definition".into(),
                reason: format!("format {:?}, expected {CANONICAL_FORMAT:?}", c.format),
            });
        }
        let set = c.set;
        let mut schemas = Schemas::curated();
        for d in &set.derived {
            let q = derived::parse(&d.sql).map_err(|reason| Error::BadInput {
                location: origin.to_string(),
                field: format!("derived {}", d.name),
                reason,
            })?;
            let schema = derived::plan_schema(&q).map_err(|reason| Error::BadInput {
                location: origin.to_string(),
                field: format!("derived {}", d.name),
                reason,
            })?;
            schemas
                .derived
                .insert(d.name.clone(), (schema, d.time.clone(), q));
        }
        for f in &set.features {
            check_feature(f, &schemas, set.online).map_err(|reason| Error::BadInput {
                location: origin.to_string(),
                field: format!("feature {}", f.name),
                reason,
            })?;
        }
        Ok(set)
    }

    /// The feature named `name`.
    pub fn feature(&self, name: &str) -> Option<&FeatureDef> {
        self.features.iter().find(|f| f.name == name)
    }

    /// The curated tables the set reads (directly or through derived tables), in
    /// [`Table::ALL`] order.
    pub fn curated_tables(&self) -> Vec<Table> {
        let mut out = BTreeSet::new();
        for f in &self.features {
            if f.kind == FeatureKind::Score {
                out.extend(SCORE_TABLES);
            } else if let Some(t) = Table::from_name(&f.table) {
                out.insert(t);
            }
        }
        for d in &self.derived {
            if let Ok(q) = derived::parse(&d.sql) {
                out.extend(q.tables);
            }
        }
        out.into_iter().collect()
    }

    /// The columns of each curated table that materializing this set reads: the provenance
    /// columns (`patient_id`, `known_at`, `retracted_at`, `source_id`), each feature's time,
    /// value and filter columns, the columns `score` features decode, and for a table a
    /// derived query reads, every column the SQL names (all of them for a `*`).
    pub fn needed_columns(&self) -> BTreeMap<Table, BTreeSet<String>> {
        let mut out: BTreeMap<Table, BTreeSet<String>> = BTreeMap::new();
        let mut add = |t: Table, cols: &mut dyn Iterator<Item = &str>| {
            let set = out.entry(t).or_default();
            set.extend(PROVENANCE.iter().map(|c| c.to_string()));
            set.extend(cols.map(str::to_string));
        };
        for f in &self.features {
            if f.kind == FeatureKind::Score {
                for (t, cols) in SCORE_COLUMNS {
                    add(t, &mut cols.iter().copied());
                }
            } else if let Some(t) = Table::from_name(&f.table) {
                let mut cols = std::iter::once(f.time.as_str())
                    .chain(f.column.as_deref())
                    .chain(f.filter.keys().map(String::as_str));
                add(t, &mut cols);
            }
        }
        for d in &self.derived {
            // What DataFusion reads to compute the columns the features read.
            if let Ok(by_table) = self
                .derived_query(d)
                .and_then(|q| derived::input_columns(&q))
            {
                for (t, cols) in by_table {
                    add(t, &mut cols.iter().map(String::as_str));
                }
                continue;
            }
            // A query that does not plan (materialization then names the error): every
            // column its text names.
            let Ok(q) = derived::parse(&d.sql) else {
                continue;
            };
            let lower = d.sql.to_ascii_lowercase();
            let words: BTreeSet<&str> = lower
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .collect();
            let star = d.sql.contains('*');
            for t in q.tables {
                let schema = t.schema();
                let mut cols = schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .filter(|c| star || words.contains(c));
                add(t, &mut cols);
            }
        }
        out
    }

    /// The query materialization runs for derived table `d`: its query cut down to the
    /// result columns this set's features read, with the provenance columns and the table's
    /// time column ([`derived::narrowed`]). Which of a derived table's columns exist does not
    /// change its rows, so the features see the same rows.
    pub(crate) fn derived_query(
        &self,
        d: &DerivedDef,
    ) -> std::result::Result<derived::ParsedQuery, String> {
        let q = derived::parse(&d.sql)?;
        let mut cols: BTreeSet<String> = PROVENANCE.iter().map(|c| c.to_string()).collect();
        cols.insert(d.time.clone());
        for f in self.features.iter().filter(|f| f.table == d.name) {
            cols.insert(f.time.clone());
            cols.extend(f.column.clone());
            cols.extend(f.filter.keys().cloned());
        }
        derived::narrowed(&q, &cols)
    }

    /// The rows of each curated table that materializing this set reads, for tables it reads
    /// only in part: a row is needed when it passes the filter of some feature reading the
    /// table, or the text conditions of the `WHERE` of a derived query reading it alone
    /// (`where_conditions` in src/features/derived.rs). A table missing from the map is read
    /// whole: one that a `score` feature or another derived query reads, or one with a
    /// feature that filters no text column (conditions on other columns are left to
    /// materialization, which compares their text). Reading only these rows gives the same
    /// timeline: each row counts for a feature only when it passes the feature's filter, and
    /// carries its own `known_at` and `retracted_at`.
    pub fn row_filters(&self) -> BTreeMap<Table, RowFilter> {
        let mut whole: BTreeSet<Table> = BTreeSet::new();
        let mut any_of: BTreeMap<Table, Vec<BTreeMap<String, Condition>>> = BTreeMap::new();
        let mut add = |t: Table, conds: BTreeMap<String, Condition>| {
            let list = any_of.entry(t).or_default();
            if !list.contains(&conds) {
                list.push(conds);
            }
        };
        for f in &self.features {
            if f.kind == FeatureKind::Score {
                whole.extend(SCORE_TABLES);
            } else if let Some(t) = Table::from_name(&f.table) {
                let schema = t.schema();
                let text: BTreeMap<String, Condition> = f
                    .filter
                    .iter()
                    .filter(|(c, _)| {
                        schema
                            .field_with_name(c)
                            .is_ok_and(|fd| fd.data_type() == &DataType::Utf8)
                    })
                    .map(|(c, cond)| (c.clone(), cond.clone()))
                    .collect();
                if text.is_empty() {
                    whole.insert(t);
                } else {
                    add(t, text);
                }
            }
        }
        for d in &self.derived {
            match derived::parse(&d.sql) {
                Ok(q) => match derived::where_conditions(&q) {
                    Some((t, conds)) if !conds.is_empty() => add(t, conds),
                    _ => whole.extend(q.tables),
                },
                Err(_) => whole.extend(Table::ALL),
            }
        }
        any_of
            .into_iter()
            .filter(|(t, _)| !whole.contains(t))
            .map(|(t, any_of)| (t, RowFilter { any_of }))
            .collect()
    }

    /// The curated tables only `score` features read, other than `encounters` (the stays
    /// themselves): materialization reads a table of these that was never ingested as empty
    /// (a source without procedures has no procedures), where any other missing table is an
    /// error.
    pub fn score_only_tables(&self) -> Vec<Table> {
        if !self.features.iter().any(|f| f.kind == FeatureKind::Score) {
            return Vec::new();
        }
        let mut direct = BTreeSet::new();
        for f in self
            .features
            .iter()
            .filter(|f| f.kind != FeatureKind::Score)
        {
            if let Some(t) = Table::from_name(&f.table) {
                direct.insert(t);
            }
        }
        for d in &self.derived {
            if let Ok(q) = derived::parse(&d.sql) {
                direct.extend(q.tables);
            }
        }
        SCORE_TABLES
            .into_iter()
            .filter(|t| *t != Table::Encounters && !direct.contains(t))
            .collect()
    }

    /// The names of its label features.
    pub fn labels(&self) -> Vec<&str> {
        self.features
            .iter()
            .filter(|f| f.kind.is_label())
            .map(|f| f.name.as_str())
            .collect()
    }
}

/// A loaded feature repository: its feature sets by name.
#[derive(Debug, Clone)]
pub struct FeatureRepo {
    /// Where it was read from (a path, or a name given to [`FeatureRepo::parse`]).
    pub origin: String,
    /// The feature sets, by name.
    pub sets: BTreeMap<String, FeatureSet>,
}

impl FeatureRepo {
    /// Reads and validates a feature repository file.
    ///
    /// # Errors
    /// [`Error::Io`] if unreadable; [`Error::BadInput`] naming the file, line and feature for
    /// any mistake (see [`FeatureRepo::parse`]).
    pub fn load(path: &Path) -> Result<FeatureRepo> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        FeatureRepo::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a feature repository; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::BadInput`] with `location` = `origin:line`, `field` = the feature (or set,
    /// or derived table) and the reason: TOML syntax, unknown keys, unknown kind, table or
    /// column, a bad duration, a type mismatch, a label in an online set, duplicates.
    pub fn parse(text: &str, origin: &str) -> Result<FeatureRepo> {
        let raw: RawRepo = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            let field = enclosing_feature(text, line)
                .map(|n| format!("feature {n}"))
                .unwrap_or_else(|| "-".into());
            Error::BadInput {
                location: format!("{origin}:{line}"),
                field,
                reason: e.message().trim().to_string(),
            }
        })?;
        Resolver { text, origin }.resolve(raw)
    }

    /// The set named `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`] naming the set and the repository.
    pub fn set(&self, name: &str) -> Result<&FeatureSet> {
        self.sets.get(name).ok_or_else(|| Error::NotFound {
            reference: format!(
                "feature set {name:?} in {} (sets: {})",
                self.origin,
                self.sets.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }
}

/// Parses a duration: a positive whole number and a unit, `s`, `m`, `h`, `d` or `w`
/// (`"180d"`, `"12h"`). Returns microseconds.
///
/// # Errors
/// A message saying what a duration looks like.
pub fn parse_duration(s: &str) -> std::result::Result<i64, String> {
    let bad = || {
        format!(
            "bad duration {s:?}: write a positive number and s, m, h, d or w (\"180d\", \"12h\")"
        )
    };
    let s2 = s.trim();
    let split = s2.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s2.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit_us: i64 = match unit {
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => DAY_US,
        "w" => 7 * DAY_US,
        _ => return Err(bad()),
    };
    if n <= 0 {
        return Err(bad());
    }
    n.checked_mul(unit_us).ok_or_else(bad)
}

// ---------------------------------------------------------------------------------------
// Raw TOML
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    #[serde(default)]
    derived: Vec<RawDerived>,
    #[serde(default)]
    feature_set: Vec<RawSet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDerived {
    name: Spanned<String>,
    sql: Spanned<String>,
    time: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    name: Spanned<String>,
    entity: Option<Spanned<String>>,
    #[serde(default)]
    online: bool,
    ttl: Option<Spanned<String>>,
    extends: Option<Spanned<String>>,
    #[serde(default)]
    features: Vec<RawFeature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    name: Spanned<String>,
    kind: Spanned<String>,
    table: Option<Spanned<String>>,
    // Not `Spanned`: toml 0.8 cannot span a table written with dotted keys
    // (`filter.code = ...`); errors find the key's line in the text instead.
    filter: Option<BTreeMap<String, toml::Value>>,
    column: Option<Spanned<String>>,
    time: Option<Spanned<String>>,
    window: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
    horizon: Option<Spanned<String>>,
    component: Option<Spanned<String>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The `name` of the `[[feature_set.features]]` table around `line`, read from the text (for
/// errors TOML reports before any feature is resolved, like an unknown key).
fn enclosing_feature(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let upto = line.min(lines.len());
    let header = (0..upto)
        .rev()
        .find(|i| lines[*i].trim_start().starts_with('['))?;
    if lines[header].trim().trim_matches(|c| c == '[' || c == ']') != "feature_set.features" {
        return None;
    }
    lines[header + 1..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
        })
}

/// The span of the line where `key` is set in the table around `near` (a span inside it),
/// or `near` when it cannot be found.
fn key_span(text: &str, near: Range<usize>, key: &str) -> Range<usize> {
    let start = text[..near.start.min(text.len())]
        .rfind("\n[")
        .map(|i| i + 1)
        .unwrap_or(0);
    let mut offset = start;
    for (n, line) in text[start..].split_inclusive('\n').enumerate() {
        let l = line.trim_start();
        if n > 0 && l.starts_with('[') {
            break;
        }
        if let Some(rest) = l.strip_prefix(key) {
            if rest.trim_start().starts_with(['=', '.']) {
                return offset..offset + line.len();
            }
        }
        offset += line.len();
    }
    near
}

/// Schemas features can read: curated tables and the repository's derived tables.
struct Schemas {
    derived: BTreeMap<String, (SchemaRef, String, ParsedQuery)>,
}

impl Schemas {
    fn curated() -> Schemas {
        Schemas {
            derived: BTreeMap::new(),
        }
    }

    /// The schema and event time column of a table.
    fn get(&self, name: &str) -> Option<(SchemaRef, String)> {
        if let Some(t) = Table::from_name(name) {
            return Some((t.schema(), t.event_time_column().to_string()));
        }
        self.derived
            .get(name)
            .map(|(s, time, _)| (s.clone(), time.clone()))
    }

    fn names(&self) -> String {
        Table::ALL
            .iter()
            .map(|t| t.name().to_string())
            .chain(self.derived.keys().cloned())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct Resolver<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Resolver<'_> {
    fn err(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Error {
        Error::BadInput {
            location: format!("{}:{}", self.origin, line_of(self.text, span.start)),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn resolve(&self, raw: RawRepo) -> Result<FeatureRepo> {
        let mut schemas = Schemas::curated();
        let mut derived_defs = BTreeMap::new();
        for d in raw.derived {
            let field = format!("derived {}", d.name.get_ref());
            let name = d.name.get_ref().clone();
            if Table::from_name(&name).is_some() || derived_defs.contains_key(&name) {
                return Err(self.err(d.name.span(), field, "a table of this name exists already"));
            }
            let q =
                derived::parse(d.sql.get_ref()).map_err(|r| self.err(d.sql.span(), &field, r))?;
            let schema = derived::plan_schema(&q).map_err(|r| self.err(d.sql.span(), &field, r))?;
            let need = |col: &str, class: ValueClass, span: Range<usize>| match schema
                .field_with_name(col)
            {
                Ok(f) if ValueClass::of(f.data_type()) == Some(class) => Ok(()),
                Ok(f) => Err(self.err(
                    span,
                    &field,
                    format!(
                        "column {col} is {}, expected {}",
                        f.data_type(),
                        class.describe()
                    ),
                )),
                Err(_) => Err(self.err(
                    span,
                    &field,
                    format!(
                        "the query must return a column {col} ({})",
                        class.describe()
                    ),
                )),
            };
            need("patient_id", ValueClass::Text, d.sql.span())?;
            need("known_at", ValueClass::Time, d.sql.span())?;
            need(d.time.get_ref(), ValueClass::Time, d.time.span())?;
            if schema.field_with_name("retracted_at").is_ok() {
                need("retracted_at", ValueClass::Time, d.sql.span())?;
            }
            derived_defs.insert(
                name.clone(),
                DerivedDef {
                    name: name.clone(),
                    sql: q.canonical.clone(),
                    time: d.time.get_ref().clone(),
                },
            );
            schemas
                .derived
                .insert(name, (schema, d.time.into_inner(), q));
        }

        // Sets, resolving `extends` in dependency order.
        let mut raw_sets: BTreeMap<String, RawSet> = BTreeMap::new();
        for s in raw.feature_set {
            let name = s.name.get_ref().clone();
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
            if !valid {
                return Err(self.err(
                    s.name.span(),
                    format!("feature_set {name}"),
                    "a set name is A-Z a-z 0-9 _ - .",
                ));
            }
            if raw_sets.contains_key(&name) {
                return Err(self.err(
                    s.name.span(),
                    format!("feature_set {name}"),
                    "defined twice",
                ));
            }
            raw_sets.insert(name, s);
        }
        let mut sets: BTreeMap<String, FeatureSet> = BTreeMap::new();
        let names: Vec<String> = raw_sets.keys().cloned().collect();
        for name in names {
            self.resolve_set(
                &name,
                &raw_sets,
                &schemas,
                &derived_defs,
                &mut sets,
                &mut Vec::new(),
            )?;
        }
        Ok(FeatureRepo {
            origin: self.origin.to_string(),
            sets,
        })
    }

    fn resolve_set(
        &self,
        name: &str,
        raw_sets: &BTreeMap<String, RawSet>,
        schemas: &Schemas,
        derived_defs: &BTreeMap<String, DerivedDef>,
        done: &mut BTreeMap<String, FeatureSet>,
        stack: &mut Vec<String>,
    ) -> Result<()> {
        if done.contains_key(name) {
            return Ok(());
        }
        let Some(raw) = raw_sets.get(name) else {
            return Ok(());
        };
        let field = format!("feature_set {name}");
        stack.push(name.to_string());
        let entity = match &raw.entity {
            Some(e) if e.get_ref() != "patient" => {
                return Err(self.err(e.span(), field, "entity must be \"patient\""))
            }
            _ => "patient".to_string(),
        };
        let set_ttl = match &raw.ttl {
            None => None,
            Some(t) if t.get_ref() == "none" => None,
            Some(t) => {
                Some(parse_duration(t.get_ref()).map_err(|r| self.err(t.span(), &field, r))?)
            }
        };
        let mut features: BTreeMap<String, FeatureDef> = BTreeMap::new();
        if let Some(parent) = &raw.extends {
            let p = parent.get_ref();
            if !raw_sets.contains_key(p) {
                return Err(self.err(parent.span(), field, format!("extends unknown set {p:?}")));
            }
            if stack.iter().any(|s| s == p) {
                return Err(self.err(parent.span(), field, format!("extends {p:?} in a cycle")));
            }
            self.resolve_set(p, raw_sets, schemas, derived_defs, done, stack)?;
            if let Some(ps) = done.get(p) {
                for f in &ps.features {
                    features.insert(f.name.clone(), f.clone());
                }
            }
        }
        for rf in &raw.features {
            let f = self.resolve_feature(rf, set_ttl, schemas)?;
            let ffield = format!("feature {}", f.name);
            if features.contains_key(&f.name) {
                return Err(self.err(
                    rf.name.span(),
                    ffield,
                    format!("defined twice in set {name}"),
                ));
            }
            if raw.online && f.kind.is_label() {
                return Err(self.err(
                    rf.kind.span(),
                    ffield,
                    format!(
                        "{} is a label (it looks forward in time) and set {name} is online = true; labels belong in offline sets",
                        f.kind.as_str()
                    ),
                ));
            }
            features.insert(f.name.clone(), f);
        }
        if raw.online {
            if let Some(f) = features.values().find(|f| f.kind.is_label()) {
                return Err(self.err(
                    raw.name.span(),
                    format!("feature {}", f.name),
                    format!("label inherited by online set {name}"),
                ));
            }
        }
        let mut derived: Vec<DerivedDef> = features
            .values()
            .filter_map(|f| derived_defs.get(&f.table).cloned())
            .collect();
        derived.sort_by(|a, b| a.name.cmp(&b.name));
        derived.dedup();
        done.insert(
            name.to_string(),
            FeatureSet {
                name: name.to_string(),
                entity,
                online: raw.online,
                ttl_us: set_ttl,
                features: features.into_values().collect(),
                derived,
            },
        );
        stack.pop();
        Ok(())
    }

    fn resolve_feature(
        &self,
        rf: &RawFeature,
        set_ttl: Option<i64>,
        schemas: &Schemas,
    ) -> Result<FeatureDef> {
        let name = rf.name.get_ref().clone();
        let field = format!("feature {name}");
        let e = |span: Range<usize>, r: String| self.err(span, &field, r);
        if name.is_empty() {
            return Err(e(rf.name.span(), "a feature needs a name".into()));
        }
        let kind = FeatureKind::from_name(rf.kind.get_ref()).ok_or_else(|| {
            e(
                rf.kind.span(),
                format!(
                    "unknown kind {:?} (kinds: {})",
                    rf.kind.get_ref(),
                    FeatureKind::ALL.map(FeatureKind::as_str).join(", ")
                ),
            )
        })?;
        let component = match (&rf.component, kind) {
            (Some(c), FeatureKind::Score) => {
                if ScoreComponent::from_name(c.get_ref()).is_none() {
                    return Err(e(c.span(), unknown_component(c.get_ref())));
                }
                Some(c.get_ref().clone())
            }
            (None, FeatureKind::Score) => {
                return Err(e(
                    rf.kind.span(),
                    format!(
                        "component: kind score needs a component ({})",
                        component_names()
                    ),
                ))
            }
            (Some(c), _) => {
                return Err(e(
                    c.span(),
                    format!("component: only kind score has one, not {}", kind.as_str()),
                ))
            }
            (None, _) => None,
        };
        if kind == FeatureKind::Score {
            let given = [
                ("table", rf.table.as_ref().map(|x| x.span())),
                ("column", rf.column.as_ref().map(|x| x.span())),
                ("time", rf.time.as_ref().map(|x| x.span())),
                ("window", rf.window.as_ref().map(|x| x.span())),
                ("horizon", rf.horizon.as_ref().map(|x| x.span())),
                (
                    "filter",
                    rf.filter
                        .as_ref()
                        .map(|_| key_span(self.text, rf.kind.span(), "filter")),
                ),
            ];
            if let Some((key, Some(span))) = given.into_iter().find(|(_, s)| s.is_some()) {
                return Err(e(
                    span,
                    format!(
                        "{key}: kind score takes no {key}; it reads the patient's encounters, conditions, observations and procedures"
                    ),
                ));
            }
        }
        let (table, table_span) = match (&rf.table, kind) {
            (Some(t), _) => (t.get_ref().clone(), t.span()),
            (None, FeatureKind::Score) => ("encounters".to_string(), rf.kind.span()),
            (None, FeatureKind::Age | FeatureKind::DiedWithin) => {
                ("patients".to_string(), rf.kind.span())
            }
            (None, FeatureKind::ReadmittedWithin) => ("encounters".to_string(), rf.kind.span()),
            (None, _) => {
                return Err(e(
                    rf.kind.span(),
                    format!("kind {} needs a table", kind.as_str()),
                ))
            }
        };
        let Some((_, event_time)) = schemas.get(&table) else {
            return Err(e(
                table_span,
                format!("unknown table {table:?} (tables: {})", schemas.names()),
            ));
        };
        let mut filter = BTreeMap::new();
        let filter_span = || key_span(self.text, rf.kind.span(), "filter");
        if let Some(fv) = &rf.filter {
            for (col, v) in fv {
                filter.insert(
                    col.clone(),
                    self.condition(col, v).map_err(|r| e(filter_span(), r))?,
                );
            }
        } else if kind == FeatureKind::ReadmittedWithin && rf.table.is_none() {
            filter.insert("class".to_string(), Condition::Eq("inpatient".into()));
        }
        let column = match (&rf.column, kind) {
            (Some(c), _) => Some(c.get_ref().clone()),
            (None, FeatureKind::Age) => Some("birth_date".to_string()),
            (None, _) => None,
        };
        let time = match (&rf.time, kind) {
            (Some(t), _) => t.get_ref().clone(),
            (None, FeatureKind::DiedWithin) => "death_time".to_string(),
            (None, FeatureKind::Score) => "discharge_time".to_string(),
            _ => event_time,
        };
        let dur = |v: &Option<Spanned<String>>, what: &str| -> Result<Option<i64>> {
            match v {
                None => Ok(None),
                Some(s) => parse_duration(s.get_ref())
                    .map(Some)
                    .map_err(|r| e(s.span(), format!("{what}: {r}"))),
            }
        };
        let window_us = dur(&rf.window, "window")?;
        let horizon_us = dur(&rf.horizon, "horizon")?;
        let ttl_us = match &rf.ttl {
            Some(t) if !kind.uses_ttl() => {
                return Err(e(t.span(), format!("kind {} has no TTL", kind.as_str())))
            }
            Some(t) if t.get_ref() == "none" => None,
            Some(_) => dur(&rf.ttl, "ttl")?,
            None if kind.uses_ttl() => set_ttl,
            None => None,
        };
        let f = FeatureDef {
            name,
            kind,
            table,
            filter,
            column,
            time,
            window_us,
            ttl_us,
            horizon_us,
            component,
        };
        // Point the error at the key most likely at fault.
        check_feature(&f, schemas, false).map_err(|r| {
            let span = if r.starts_with("filter") {
                Some(filter_span())
            } else if r.starts_with("column") {
                rf.column.as_ref().map(|x| x.span())
            } else if r.starts_with("time") {
                rf.time.as_ref().map(|x| x.span())
            } else if r.starts_with("window") {
                rf.window.as_ref().map(|x| x.span())
            } else if r.starts_with("horizon") {
                rf.horizon.as_ref().map(|x| x.span())
            } else if r.starts_with("component") {
                rf.component.as_ref().map(|x| x.span())
            } else {
                None
            };
            e(span.unwrap_or_else(|| rf.kind.span()), r)
        })?;
        Ok(f)
    }

    fn condition(&self, col: &str, v: &toml::Value) -> std::result::Result<Condition, String> {
        let strings = |v: &toml::Value| -> std::result::Result<Vec<String>, String> {
            match v {
                toml::Value::String(s) => Ok(vec![s.clone()]),
                toml::Value::Array(a) if !a.is_empty() => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| format!("filter {col}: values are strings"))
                    })
                    .collect(),
                _ => Err(format!(
                    "filter {col}: a string or a non-empty list of strings"
                )),
            }
        };
        match v {
            toml::Value::String(s) => Ok(Condition::Eq(s.clone())),
            toml::Value::Array(_) => Ok(Condition::In(strings(v)?)),
            toml::Value::Table(t) => {
                let mut it = t.iter();
                match (it.next(), it.next()) {
                    (Some((op, x)), None) => match op.as_str() {
                        "eq" => match x {
                            toml::Value::String(s) => Ok(Condition::Eq(s.clone())),
                            _ => Err(format!("filter {col}: eq takes a string")),
                        },
                        "in" => Ok(Condition::In(strings(x)?)),
                        "prefix" => Ok(Condition::Prefix(strings(x)?)),
                        _ => Err(format!(
                            "filter {col}: unknown operator {op:?} (eq, in, prefix)"
                        )),
                    },
                    _ => Err(format!(
                        "filter {col}: one operator: {{ eq | in | prefix = ... }}"
                    )),
                }
            }
            _ => Err(format!(
                "filter {col}: a string, a list, or {{ prefix = ... }}"
            )),
        }
    }
}

/// Checks a feature against the schemas. Messages start with the key at fault (`filter`,
/// `column`, `time`, `window`, `horizon`) so the loader can point at its line.
fn check_feature(
    f: &FeatureDef,
    schemas: &Schemas,
    online: bool,
) -> std::result::Result<(), String> {
    let (schema, _) = schemas
        .get(&f.table)
        .ok_or_else(|| format!("unknown table {:?} (tables: {})", f.table, schemas.names()))?;
    let col_type = |c: &str| {
        schema
            .field_with_name(c)
            .ok()
            .map(|f| f.data_type().clone())
    };
    for col in f.filter.keys() {
        match col_type(col) {
            None => {
                return Err(format!(
                    "filter: unknown column {col:?} in table {}",
                    f.table
                ))
            }
            Some(dt) if ValueClass::of(&dt) != Some(ValueClass::Text) => {
                return Err(format!(
                    "filter: column {col} is {dt}; filters compare string columns"
                ))
            }
            Some(_) => {}
        }
    }
    match (f.kind.column_rule(), &f.column) {
        (ColumnRule::None, Some(c)) => {
            return Err(format!(
                "column {c:?}: kind {} reads no column",
                f.kind.as_str()
            ))
        }
        (ColumnRule::Required(_), None) => {
            return Err(format!("column: kind {} needs a column", f.kind.as_str()))
        }
        (ColumnRule::Required(classes), Some(c)) => match col_type(c) {
            None => return Err(format!("column: unknown column {c:?} in table {}", f.table)),
            Some(dt) => {
                let class = ValueClass::of(&dt);
                if !class.is_some_and(|k| classes.contains(&k)) {
                    return Err(format!(
                        "column {c} is {dt}: type mismatch, kind {} needs a {} column",
                        f.kind.as_str(),
                        classes
                            .iter()
                            .map(|k| k.describe())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ));
                }
            }
        },
        (ColumnRule::None, None) => {}
    }
    match col_type(&f.time) {
        None => {
            return Err(format!(
                "time: unknown column {:?} in table {}",
                f.time, f.table
            ))
        }
        Some(DataType::Timestamp(..)) => {}
        Some(dt) => return Err(format!("time: column {} is {dt}, not a timestamp", f.time)),
    }
    if f.kind.is_label() {
        if f.horizon_us.is_none() {
            return Err(format!(
                "horizon: label {} needs a horizon (\"30d\")",
                f.kind.as_str()
            ));
        }
        if f.window_us.is_some() {
            return Err("window: a label has a horizon, not a window".into());
        }
        if online {
            return Err(format!(
                "{} is a label and the set is online",
                f.kind.as_str()
            ));
        }
    } else if f.horizon_us.is_some() {
        return Err(format!(
            "horizon: only labels have one, not {}",
            f.kind.as_str()
        ));
    }
    if f.kind == FeatureKind::Age && f.window_us.is_some() {
        return Err("window: age has no window".into());
    }
    match (f.kind, &f.component) {
        (FeatureKind::Score, None) => {
            return Err(format!(
                "component: kind score needs a component ({})",
                component_names()
            ))
        }
        (FeatureKind::Score, Some(c)) => {
            if ScoreComponent::from_name(c).is_none() {
                return Err(unknown_component(c));
            }
            let fixed = f.table == "encounters"
                && f.time == "discharge_time"
                && f.filter.is_empty()
                && f.column.is_none()
                && f.window_us.is_none();
            if !fixed {
                return Err(
                    "kind score reads the patient's encounters, conditions, observations and procedures; it takes no table, filter, column, time or window"
                        .into(),
                );
            }
        }
        (_, Some(_)) => {
            return Err(format!(
                "component: only kind score has one, not {}",
                f.kind.as_str()
            ))
        }
        (_, None) => {}
    }
    for (v, what) in [
        (f.window_us, "window"),
        (f.horizon_us, "horizon"),
        (f.ttl_us, "ttl"),
    ] {
        if v.is_some_and(|v| v <= 0) {
            return Err(format!("{what}: must be positive"));
        }
    }
    Ok(())
}

fn component_names() -> String {
    ScoreComponent::ALL.map(ScoreComponent::name).join(", ")
}

fn unknown_component(c: &str) -> String {
    format!(
        "component: unknown score component {c:?} (components: {})",
        component_names()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("180d"), Ok(180 * DAY_US));
        assert_eq!(parse_duration("12h"), Ok(12 * 3_600_000_000));
        assert_eq!(parse_duration("2w"), Ok(14 * DAY_US));
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "10",
            "10y",
            "1.5d",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conditions_match() {
        assert!(Condition::Prefix(vec!["I50".into()]).matches("I50.9"));
        assert!(!Condition::Prefix(vec!["I50".into()]).matches("I5"));
        assert!(Condition::In(vec!["a".into(), "b".into()]).matches("b"));
        assert!(!Condition::Eq("a".into()).matches("ab"));
    }

    #[test]
    fn enclosing_feature_is_found() {
        let text = "[[feature_set]]\nname = \"s\"\n[[feature_set.features]]\nname = \"hb\"\nwindw = \"1d\"\n";
        assert_eq!(enclosing_feature(text, 5).as_deref(), Some("hb"));
        assert_eq!(enclosing_feature(text, 2), None);
    }
}
