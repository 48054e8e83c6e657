//! The feature repository: TOML parsed raw, then resolved against the curated and derived
//! schemas into [`FeatureSet`]s, with errors naming the line of the feature at fault.

use super::definition::{
    check_feature, component_names, parse_duration, unknown_component, DerivedDef, FeatureDef,
    FeatureSet, Schemas,
};
use super::derived::{self};
use super::filter::Condition;
use super::kind::{FeatureKind, ValueClass};
use crate::curated::Table;
use crate::error::{Error, Result};
use crate::scores::ScoreComponent;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// A loaded feature repository: its feature sets by name.
#[derive(Debug, Clone, Default)]
pub struct FeatureRepo {
    /// Where it was read from (a path, or a name given to [`FeatureRepo::parse`]).
    pub origin: String,
    /// The feature sets, by name.
    pub sets: BTreeMap<String, FeatureSet>,
    /// Each set's data-quality expectations (`[[feature_set.expect]]`, `docs/quality.md`),
    /// by set name. Kept apart from the sets: they check a timeline, they do not define
    /// it, so they are not part of the definition hash.
    pub expectations: BTreeMap<String, Vec<crate::quality::Expectation>>,
    /// Each set's documentation (owner, description, its TOML, the features' descriptions
    /// and units), by set name; not part of the definition hash either.
    pub docs: BTreeMap<String, super::docs::SetDocs>,
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
    /// Documentation only (`super::docs`).
    owner: Option<String>,
    description: Option<String>,
    #[serde(default)]
    features: Vec<RawFeature>,
    #[serde(default)]
    expect: Vec<Spanned<crate::quality::RawExpect>>,
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
    /// Documentation only (`super::docs`).
    description: Option<String>,
    unit: Option<String>,
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
        let mut expectations = BTreeMap::new();
        for mut s in raw.feature_set {
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
            let exps = crate::quality::resolve(
                std::mem::take(&mut s.expect),
                self.text,
                self.origin,
                crate::quality::Scope::FeatureSet,
            )?;
            expectations.insert(name.clone(), exps);
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
        for (name, exps) in &expectations {
            let set = &sets[name];
            for e in exps {
                if let crate::quality::Subject::Feature(f) = &e.subject {
                    if !set.features.iter().any(|d| &d.name == f) {
                        return Err(Error::BadInput {
                            location: e.location.clone(),
                            field: format!("feature_set {name} expect"),
                            reason: format!("no feature {f:?} in set {name}"),
                        });
                    }
                }
            }
        }
        let docs = self.docs(&raw_sets, &sets);
        Ok(FeatureRepo {
            origin: self.origin.to_string(),
            sets,
            expectations,
            docs,
        })
    }

    /// Each set's documentation: its own keys and TOML, and each feature's description and
    /// unit from the set that defines it (walking `extends`).
    fn docs(
        &self,
        raw_sets: &BTreeMap<String, RawSet>,
        sets: &BTreeMap<String, FeatureSet>,
    ) -> BTreeMap<String, super::docs::SetDocs> {
        let own = |set: &str, feature: &str| -> Option<super::docs::FeatureDocs> {
            let mut at = raw_sets.get(set);
            // A bound: `extends` cycles were refused while resolving.
            for _ in 0..=raw_sets.len() {
                let raw = at?;
                if let Some(rf) = raw.features.iter().find(|f| f.name.get_ref() == feature) {
                    return Some(super::docs::FeatureDocs {
                        description: rf.description.clone().unwrap_or_default().trim().into(),
                        unit: rf.unit.clone().unwrap_or_default().trim().into(),
                    });
                }
                at = raw.extends.as_ref().and_then(|p| raw_sets.get(p.get_ref()));
            }
            None
        };
        sets.iter()
            .filter_map(|(name, set)| {
                let raw = raw_sets.get(name)?;
                Some((
                    name.clone(),
                    super::docs::SetDocs {
                        owner: raw.owner.clone().unwrap_or_default().trim().into(),
                        description: raw.description.clone().unwrap_or_default().trim().into(),
                        origin: self.origin.to_string(),
                        toml: super::docs::set_section(self.text, raw.name.span().start),
                        features: set
                            .features
                            .iter()
                            .map(|f| (f.name.clone(), own(name, &f.name).unwrap_or_default()))
                            .collect(),
                    },
                ))
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::DAY_US;

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
