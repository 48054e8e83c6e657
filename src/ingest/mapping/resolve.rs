//! The high stage: a [`RawMapping`] checked and resolved into a [`Mapping`].
//!
//! Everything that can be known without the data is checked here, once, with the mapping
//! file's line and the key's path in the message: unknown tables and target columns, required
//! target columns left unmapped, bad time formats and zones, lookups naming no file entry,
//! conflicting keys. What is left for the rows is what only the rows can say.

use std::collections::HashMap;
use std::ops::Range;

use arrow::datatypes::DataType;
use toml::Spanned;

use super::expr::{Expr, ExprError};
use super::raw::{RawColumn, RawCondition, RawCsv, RawMapping, RawSpec, RawTime, Scalar};
use super::read::{CsvOptions, Encoding};
use super::value::{parse_template, parse_zone, TimeFormat};
use super::{
    Column, Condition, FileEntry, Invalid, Kind, Lookup, Mapping, Source, Spec, Target, Test,
    Unmapped, Vocabulary,
};
use crate::curated::Table;
use crate::error::{Error, Result};

/// Meta columns that are non-nullable in every schema but have a default, so a mapping may
/// leave them out.
const DEFAULTED: [&str; 3] = ["source_system", "source_id", "known_at"];

struct Doc<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Doc<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn err(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Error {
        Error::BadInput {
            location: format!("{}:{}", self.origin, self.line(span.start)),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Parses and resolves a mapping document. See [`Mapping::from_toml`].
pub(crate) fn from_toml(text: &str, origin: &str) -> Result<Mapping> {
    let doc = Doc { text, origin };
    let raw: RawMapping = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        // serde names the offending key between backticks: `unknown field `foo`, ...`.
        let field = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field"))
            .unwrap_or("-")
            .to_string();
        doc.err(span, field, message)
    })?;
    resolve(&doc, raw)
}

fn resolve(doc: &Doc<'_>, raw: RawMapping) -> Result<Mapping> {
    let zone = match &raw.zone {
        Some(z) => Some(parse_zone(z.get_ref()).map_err(|e| doc.err(z.span(), "zone", e))?),
        None => None,
    };
    let time = match &raw.time {
        Some(t) => {
            TimeFormat::parse(time_list(t.get_ref())).map_err(|e| doc.err(t.span(), "time", e))?
        }
        None => TimeFormat::Auto,
    };
    let require_standard = raw.require_standard_system.unwrap_or(false);

    // Entry names first: lookups may name an entry defined further down. Two entries whose
    // names were defaulted from their patterns may clash (`*.csv`, `*.tsv`); that is only an
    // error if a lookup names them, whereas an explicit `name` must be unique.
    let mut names: HashMap<String, Option<usize>> = HashMap::new();
    let mut explicit: HashMap<String, usize> = HashMap::new();
    let mut entry_names = Vec::new();
    for (i, f) in raw.file.iter().enumerate() {
        let path = format!("file[{}]", i + 1);
        let patterns = f.get_ref().patterns.get_ref().clone().into_vec();
        if patterns.is_empty() || patterns.iter().any(|p| p.is_empty()) {
            return Err(doc.err(
                f.get_ref().patterns.span(),
                format!("{path}.match"),
                "a pattern is empty",
            ));
        }
        let name = match &f.get_ref().name {
            Some(n) => n.get_ref().clone(),
            None => default_entry_name(&patterns[0]),
        };
        let clash = names.get(&name).copied().flatten();
        let is_explicit = f.get_ref().name.is_some();
        if let Some(prev) = clash.filter(|_| is_explicit || explicit.contains_key(&name)) {
            let span = f
                .get_ref()
                .name
                .as_ref()
                .map(|n| n.span())
                .unwrap_or(f.span());
            return Err(doc.err(
                span,
                format!("{path}.name"),
                format!(
                    "file entry name {name:?} is already used by file[{}]; give each a distinct `name`",
                    prev + 1
                ),
            ));
        }
        if is_explicit {
            explicit.insert(name.clone(), i);
        }
        names.insert(
            name.clone(),
            if clash.is_some() || names.contains_key(&name) {
                None
            } else {
                Some(i)
            },
        );
        entry_names.push(name);
    }

    let mut files = Vec::new();
    for (i, f) in raw.file.into_iter().enumerate() {
        let path = format!("file[{}]", i + 1);
        let f = f.into_inner();
        let patterns = f.patterns.into_inner().into_vec();
        let csv = resolve_csv(doc, &path, f.csv)?;
        let mut targets = Vec::new();
        for (j, t) in f.target.into_iter().enumerate() {
            let tpath = format!("{path}.target[{}]", j + 1);
            let span = t.span();
            let t = t.into_inner();
            let table = Table::from_name(t.table.get_ref()).ok_or_else(|| {
                let known: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
                doc.err(
                    t.table.span(),
                    format!("{tpath}.table"),
                    format!(
                        "unknown table {:?} (known: {})",
                        t.table.get_ref(),
                        known.join(", ")
                    ),
                )
            })?;
            let filter = t
                .filter
                .into_iter()
                .enumerate()
                .map(|(k, c)| {
                    let span = c.span();
                    condition(c.into_inner())
                        .map_err(|e| doc.err(span, format!("{tpath}.filter[{}]", k + 1), e))
                })
                .collect::<Result<Vec<_>>>()?;
            let schema = table.schema();
            let mut columns = Vec::new();
            for (name, spec) in t.columns {
                let cpath = format!("{tpath}.columns.{}", name.get_ref());
                let Ok(index) = schema.index_of(name.get_ref()) else {
                    let known: Vec<&str> =
                        schema.fields().iter().map(|f| f.name().as_str()).collect();
                    return Err(doc.err(
                        name.span(),
                        cpath,
                        format!(
                            "table {} has no column {:?} (columns: {})",
                            table.name(),
                            name.get_ref(),
                            known.join(", ")
                        ),
                    ));
                };
                let field = schema.field(index);
                let kind = match field.data_type() {
                    DataType::Float64 => Kind::Number,
                    DataType::Timestamp(..) => Kind::Time,
                    DataType::Date32 => Kind::Date,
                    _ => Kind::Text,
                };
                let schema_required =
                    !field.is_nullable() && !DEFAULTED.contains(&field.name().as_str());
                let span = spec.span();
                let mut spec = spec.into_inner();
                let expr = match &mut spec {
                    RawColumn::Spec(s) => s.expr.take(),
                    RawColumn::Name(_) => None,
                };
                let expr = match expr {
                    None => None,
                    Some(e) => Some(resolve_expr(doc, &cpath, e, kind, csv.columns.as_deref())?),
                };
                let spec = resolve_spec(spec, expr, field.name(), kind, schema_required, &names)
                    .map_err(|e| doc.err(span, cpath.clone(), e))?;
                columns.push(Column {
                    name: field.name().clone(),
                    index,
                    kind,
                    spec,
                });
            }
            for field in schema.fields() {
                let n = field.name().as_str();
                if !field.is_nullable()
                    && !DEFAULTED.contains(&n)
                    && !columns.iter().any(|c| c.name == n)
                {
                    return Err(doc.err(
                        span.clone(),
                        format!("{tpath}.columns.{n}"),
                        format!("table {} requires column {n:?}; map it", table.name()),
                    ));
                }
            }
            let has = |n: &str| columns.iter().any(|c| c.name == n);
            if has("code") && !has("code_system") {
                return Err(doc.err(
                    span,
                    format!("{tpath}.columns.code_system"),
                    "`code` is mapped but `code_system` is not: say which system the codes are in",
                ));
            }
            columns.sort_by_key(|c| c.index);
            targets.push(Target {
                table,
                filter,
                require_standard_system: t.require_standard_system.unwrap_or(require_standard),
                columns,
                schema_names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            });
        }
        files.push(FileEntry {
            name: entry_names[i].clone(),
            patterns,
            csv,
            targets,
        });
    }
    Ok(Mapping {
        name: raw.name.unwrap_or_else(|| doc.origin.to_string()),
        origin: doc.origin.to_string(),
        zone,
        time,
        files,
    })
}

/// `admissions.csv` → `admissions`; `*.csv` → `*`: the name lookups use by default.
fn default_entry_name(pattern: &str) -> String {
    let base = pattern.rsplit(['/', '\\']).next().unwrap_or(pattern);
    base.split('.').next().unwrap_or(base).to_string()
}

fn time_list(t: &RawTime) -> Vec<String> {
    match t {
        RawTime::One(s) => vec![s.clone()],
        RawTime::Many(v) => v.clone(),
    }
}

fn one_byte(doc: &Doc<'_>, path: &str, key: &str, v: &Spanned<String>) -> Result<u8> {
    let s = v.get_ref();
    match s.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(doc.err(
            v.span(),
            format!("{path}.csv.{key}"),
            format!("{key} must be one ASCII character, not {s:?}"),
        )),
    }
}

fn resolve_csv(doc: &Doc<'_>, path: &str, raw: Option<Spanned<RawCsv>>) -> Result<CsvOptions> {
    let mut o = CsvOptions::default();
    let Some(raw) = raw else { return Ok(o) };
    let span = raw.span();
    let raw = raw.into_inner();
    if let Some(d) = &raw.delimiter {
        o.delimiter = one_byte(doc, path, "delimiter", d)?;
    }
    if let Some(q) = &raw.quote {
        o.quote = if q.get_ref().is_empty() {
            None
        } else {
            Some(one_byte(doc, path, "quote", q)?)
        };
    }
    if let Some(c) = &raw.comment {
        o.comment = Some(one_byte(doc, path, "comment", c)?);
    }
    o.header = raw.header.unwrap_or(true);
    match (o.header, raw.columns) {
        (true, Some(c)) => {
            return Err(doc.err(
                c.span(),
                format!("{path}.csv.columns"),
                "`columns` names the columns of a file without a header; set `header = false` or remove it",
            ));
        }
        (false, None) => {
            return Err(doc.err(
                span,
                format!("{path}.csv.columns"),
                "a file without a header (`header = false`) needs `columns`, its column names in order",
            ));
        }
        (_, cols) => o.columns = cols.map(Spanned::into_inner),
    }
    if let Some(n) = raw.null {
        o.nulls = n;
    }
    o.trim = raw.trim.unwrap_or(true);
    if let Some(e) = &raw.encoding {
        o.encoding = match e.get_ref().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Encoding::Utf8,
            "latin1" | "latin-1" | "iso-8859-1" => Encoding::Latin1,
            other => {
                return Err(doc.err(
                    e.span(),
                    format!("{path}.csv.encoding"),
                    format!("encoding {other:?} is not \"utf-8\" or \"latin1\""),
                ))
            }
        };
    }
    Ok(o)
}

fn condition(c: RawCondition) -> Result<Condition, String> {
    let texts = |v: Vec<Scalar>| v.into_iter().map(Scalar::into_text).collect::<Vec<_>>();
    let mut tests = Vec::new();
    if let Some(v) = c.equals {
        tests.push(Test::In(vec![v.into_text()]));
    }
    if let Some(v) = c.not_equals {
        tests.push(Test::NotIn(vec![v.into_text()]));
    }
    if let Some(v) = c.in_ {
        tests.push(Test::In(texts(v)));
    }
    if let Some(v) = c.not_in {
        tests.push(Test::NotIn(texts(v)));
    }
    if let Some(b) = c.not_empty {
        tests.push(if b { Test::NotEmpty } else { Test::Empty });
    }
    if let Some(b) = c.empty {
        tests.push(if b { Test::Empty } else { Test::NotEmpty });
    }
    match tests.len() {
        1 => Ok(Condition {
            column: c.column,
            test: tests.pop().expect("one test"),
        }),
        0 => Err(format!(
            "condition on {:?} has no test: add one of equals, not_equals, in, not_in, empty, not_empty",
            c.column
        )),
        _ => Err(format!("condition on {:?} has more than one test", c.column)),
    }
}

/// Parses a column's `expr`. Errors name the line of the character at fault (an expression
/// may span lines in a TOML multi-line string) and its position in the expression. When the
/// file entry names its columns (`csv.columns`, headerless files), every column the
/// expression reads must be one of them.
fn resolve_expr(
    doc: &Doc<'_>,
    cpath: &str,
    raw: Spanned<String>,
    kind: Kind,
    known: Option<&[String]>,
) -> Result<Expr> {
    let span = raw.span();
    // A newline right after the opening quotes of a multi-line string is not part of it.
    let src = doc.text.get(span.clone()).unwrap_or("");
    let trimmed = ["\"\"\"\n", "'''\n", "\"\"\"\r\n", "'''\r\n"]
        .iter()
        .any(|q| src.starts_with(q));
    let first_line = doc.line(span.start) + usize::from(trimmed);
    let text = raw.into_inner();
    let error = |e: ExprError| {
        let newlines = text
            .chars()
            .take(e.pos.saturating_sub(1))
            .filter(|c| *c == '\n')
            .count();
        let shown: String = if text.chars().count() > 120 {
            text.chars().take(120).chain("...".chars()).collect()
        } else {
            text.clone()
        };
        Error::BadInput {
            location: format!("{}:{}", doc.origin, first_line + newlines),
            field: cpath.to_string(),
            reason: format!("expression {shown:?}: {e}"),
        }
    };
    let expr = Expr::parse(&text, kind).map_err(error)?;
    if let Some(known) = known {
        for (c, pos) in expr.columns() {
            let found =
                known.iter().any(|k| k == c) || known.iter().any(|k| k.eq_ignore_ascii_case(c));
            if !found {
                return Err(error(ExprError {
                    pos: *pos,
                    message: format!(
                        "unknown column {c:?}: the file entry's columns are {}",
                        known.join(", ")
                    ),
                }));
            }
        }
    }
    Ok(expr)
}

fn resolve_spec(
    raw: RawColumn,
    expr: Option<Expr>,
    target: &str,
    kind: Kind,
    schema_required: bool,
    entries: &HashMap<String, Option<usize>>,
) -> Result<Spec, String> {
    let raw = match raw {
        RawColumn::Name(n) => RawSpec {
            column: Some(n),
            ..RawSpec::default()
        },
        RawColumn::Spec(s) => *s,
    };
    let is_expr = expr.is_some();
    let sources = [
        raw.column.is_some() && raw.lookup.is_none(),
        raw.value.is_some(),
        raw.template.is_some(),
        raw.lookup.is_some(),
        is_expr,
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err("give exactly one of `column`, `value`, `template`, `expr` or `lookup`".into());
    }
    if raw.lookup.is_none() && (raw.key.is_some() || raw.on.is_some()) {
        return Err("`key` and `on` belong to a `lookup`".into());
    }
    let source = if let Some(e) = expr {
        Source::Expr(Box::new(e))
    } else if let Some(entry) = raw.lookup {
        let file = match entries.get(&entry) {
            Some(Some(i)) => *i,
            Some(None) => {
                return Err(format!(
                    "lookup names {entry:?}, which several file entries are called: give them distinct `name`s"
                ))
            }
            None => return Err(format!("lookup names no file entry {entry:?}")),
        };
        let key = raw
            .key
            .ok_or("a lookup needs `key`: the column of this file holding the key")?;
        let column = raw
            .column
            .ok_or("a lookup needs `column`: the column of the looked-up file to take")?;
        Source::Lookup(Lookup {
            entry,
            file,
            on: raw.on.unwrap_or_else(|| key.clone()),
            key,
            column,
        })
    } else if let Some(c) = raw.column {
        if c.is_empty() {
            return Err("the source column name is empty".into());
        }
        Source::Column(c)
    } else if let Some(v) = raw.value {
        Source::Value(v.into_text())
    } else {
        Source::Template(parse_template(&raw.template.unwrap_or_default())?)
    };
    if raw.optional == Some(true) && !matches!(source, Source::Column(_)) {
        return Err("`optional` applies to a `column` source only".into());
    }
    let vocabulary = match raw.vocabulary.as_deref() {
        None => match target {
            "class" => Vocabulary::EncounterClass,
            "admission_type" => Vocabulary::AdmissionType,
            "sex" => Vocabulary::Sex,
            _ => Vocabulary::None,
        },
        Some("none") => Vocabulary::None,
        Some("encounter_class") => Vocabulary::EncounterClass,
        Some("admission_type") => Vocabulary::AdmissionType,
        Some("sex") => Vocabulary::Sex,
        Some(v) => {
            return Err(format!(
                "unknown vocabulary {v:?} (encounter_class, admission_type, sex or none)"
            ))
        }
    };
    let unmapped = match raw.unmapped.as_deref() {
        None | Some("keep") => Unmapped::Keep,
        Some("null") => Unmapped::Null,
        Some("error") => Unmapped::Error,
        Some(u) => {
            return Err(format!(
                "unmapped = {u:?}: use \"keep\", \"null\" or \"error\""
            ))
        }
    };
    let invalid = match raw.invalid.as_deref() {
        None | Some("error") => Invalid::Error,
        Some("null") => Invalid::Null,
        Some(u) => return Err(format!("invalid = {u:?}: use \"error\" or \"null\"")),
    };
    let decimal = match raw.decimal.as_deref() {
        None | Some(".") => '.',
        Some(",") => ',',
        Some(d) => return Err(format!("decimal = {d:?}: use \".\" or \",\"")),
    };
    // In an expression they say how the columns it reads are read, whatever the target.
    if raw.decimal.is_some() && kind != Kind::Number && !is_expr {
        return Err(format!(
            "`decimal` applies to numeric columns and expressions; {target} is neither"
        ));
    }
    if (raw.time.is_some() || raw.zone.is_some())
        && !matches!(kind, Kind::Time | Kind::Date)
        && !is_expr
    {
        return Err(format!(
            "`time` and `zone` apply to time columns and expressions; {target} is neither"
        ));
    }
    let time = raw
        .time
        .map(|t| TimeFormat::parse(time_list(&t)))
        .transpose()?;
    let zone = raw.zone.map(|z| parse_zone(&z)).transpose()?;
    if raw.required == Some(false) && schema_required {
        return Err(format!(
            "{target} is required by its table; it cannot be `required = false`"
        ));
    }
    let map = raw.map.map(|m| {
        m.into_iter()
            .map(|(k, v)| {
                let v = v.into_text();
                (k, (!v.is_empty()).then_some(v))
            })
            .collect()
    });
    Ok(Spec {
        source,
        optional: raw.optional.unwrap_or(false),
        when: raw.when.map(condition).transpose()?,
        map,
        vocabulary,
        unmapped,
        default: raw.default.map(Scalar::into_text),
        time,
        zone,
        decimal,
        invalid,
        required: raw.required.unwrap_or(schema_required),
    })
}
