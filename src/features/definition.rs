//! Feature definitions, resolved: the second of the TOML repository's two stages (the first,
//! the raw file with its spans, and the resolving are `repo`'s).
//!
//! **Resolved** ([`FeatureSet`], [`FeatureDef`]; `repo::FeatureRepo`): defaults filled in,
//!    durations in microseconds, tables and columns checked against the curated schemas (and
//!    the planned schemas of derived tables), filters typed.
//!
//! A resolved [`FeatureSet`] has a canonical JSON form ([`FeatureSet::canonical_json`]):
//! features sorted by name, filters sorted by column, derived SQL as the parser prints it.
//! Its BLAKE3 is the definition hash ([`FeatureSet::definition_hash`]); formatting, comments
//! and key order of the TOML do not change it. The canonical form is stored in a timeline's
//! lineage, and [`FeatureSet::from_canonical_json`] reads it back for `rebuild`.

use super::derived::{self, ParsedQuery};
use super::filter::{Condition, RowFilter};
use super::kind::{ColumnRule, FeatureKind, ValueClass, SCORE_COLUMNS, SCORE_TABLES};
use crate::curated::Table;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::scores::ScoreComponent;
use arrow::datatypes::{DataType, SchemaRef};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The tag at the start of the canonical form; a change of the form changes it.
const CANONICAL_FORMAT: &str = "ward-feature-set-v1";

/// Microseconds in a day.
pub const DAY_US: i64 = 86_400_000_000;

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

/// Schemas features can read: curated tables and the repository's derived tables.
pub(super) struct Schemas {
    pub(super) derived: BTreeMap<String, (SchemaRef, String, ParsedQuery)>,
}

impl Schemas {
    pub(super) fn curated() -> Schemas {
        Schemas {
            derived: BTreeMap::new(),
        }
    }

    /// The schema and event time column of a table.
    pub(super) fn get(&self, name: &str) -> Option<(SchemaRef, String)> {
        if let Some(t) = Table::from_name(name) {
            return Some((t.schema(), t.event_time_column().to_string()));
        }
        self.derived
            .get(name)
            .map(|(s, time, _)| (s.clone(), time.clone()))
    }

    pub(super) fn names(&self) -> String {
        Table::ALL
            .iter()
            .map(|t| t.name().to_string())
            .chain(self.derived.keys().cloned())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Checks a feature against the schemas. Messages start with the key at fault (`filter`,
/// `column`, `time`, `window`, `horizon`) so the loader can point at its line.
pub(super) fn check_feature(
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

pub(super) fn component_names() -> String {
    ScoreComponent::ALL.map(ScoreComponent::name).join(", ")
}

pub(super) fn unknown_component(c: &str) -> String {
    format!(
        "component: unknown score component {c:?} (components: {})",
        component_names()
    )
}
