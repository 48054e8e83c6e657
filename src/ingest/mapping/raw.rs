//! The mapping file as written: serde structs that mirror the TOML one to one.
//!
//! This is the low stage of the two (after ripgrep's `lowargs`): it only checks the shape of
//! the document. `deny_unknown_fields` everywhere, so a misspelt key is an error that names
//! its line instead of a setting silently ignored. Keys whose meaning is checked later carry
//! their [`Spanned`] position so that the resolving stage (`super::resolve`) can name the
//! line too.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole mapping document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMapping {
    /// A name for messages.
    pub(crate) name: Option<String>,
    /// Default zone of times without an offset.
    pub(crate) zone: Option<Spanned<String>>,
    /// Default time formats.
    pub(crate) time: Option<Spanned<RawTime>>,
    /// Default for every target's `require_standard_system`.
    pub(crate) require_standard_system: Option<bool>,
    /// The file entries, in match order.
    #[serde(default)]
    pub(crate) file: Vec<Spanned<RawFile>>,
    /// Data-quality expectations about the curated tables it feeds; read by
    /// [`crate::quality::from_mapping`], not by the mapping itself.
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) expect: Vec<toml::Value>,
}

/// One `[[file]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    /// File name patterns.
    #[serde(rename = "match")]
    pub(crate) patterns: Spanned<OneOrMany>,
    /// The entry's name, for lookups.
    pub(crate) name: Option<Spanned<String>>,
    /// CSV reading options.
    pub(crate) csv: Option<Spanned<RawCsv>>,
    /// The tables this file feeds.
    #[serde(default)]
    pub(crate) target: Vec<Spanned<RawTarget>>,
}

/// `[file.csv]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCsv {
    pub(crate) delimiter: Option<Spanned<String>>,
    pub(crate) header: Option<bool>,
    pub(crate) columns: Option<Spanned<Vec<String>>>,
    pub(crate) quote: Option<Spanned<String>>,
    pub(crate) null: Option<Vec<String>>,
    pub(crate) trim: Option<bool>,
    pub(crate) encoding: Option<Spanned<String>>,
    pub(crate) comment: Option<Spanned<String>>,
}

/// One `[[file.target]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub(crate) table: Spanned<String>,
    #[serde(default)]
    pub(crate) filter: Vec<Spanned<RawCondition>>,
    pub(crate) require_standard_system: Option<bool>,
    #[serde(default)]
    pub(crate) columns: BTreeMap<Spanned<String>, Spanned<RawColumn>>,
}

/// A row condition: one column and exactly one test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCondition {
    pub(crate) column: String,
    pub(crate) equals: Option<Scalar>,
    pub(crate) not_equals: Option<Scalar>,
    #[serde(rename = "in")]
    pub(crate) in_: Option<Vec<Scalar>>,
    pub(crate) not_in: Option<Vec<Scalar>>,
    pub(crate) not_empty: Option<bool>,
    pub(crate) empty: Option<bool>,
}

/// A target column: either a bare source column name or a full specification.
#[derive(Debug)]
pub(crate) enum RawColumn {
    /// `target = "SOURCE_COLUMN"`.
    Name(String),
    /// `target = { ... }`.
    Spec(Box<RawSpec>),
}

/// The full form of a target column.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpec {
    pub(crate) column: Option<String>,
    pub(crate) value: Option<Scalar>,
    pub(crate) template: Option<String>,
    /// An expression; spanned so that an error in it names its line.
    pub(crate) expr: Option<Spanned<String>>,
    pub(crate) lookup: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) on: Option<String>,
    pub(crate) optional: Option<bool>,
    pub(crate) when: Option<RawCondition>,
    pub(crate) map: Option<BTreeMap<String, Scalar>>,
    pub(crate) vocabulary: Option<String>,
    pub(crate) unmapped: Option<String>,
    pub(crate) default: Option<Scalar>,
    pub(crate) time: Option<RawTime>,
    pub(crate) zone: Option<String>,
    pub(crate) decimal: Option<String>,
    pub(crate) invalid: Option<String>,
    pub(crate) required: Option<bool>,
}

impl<'de> Deserialize<'de> for RawColumn {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawColumn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a source column name or a table such as { column = \"X\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawColumn, E> {
                Ok(RawColumn::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawColumn, A::Error> {
                let spec = RawSpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawColumn::Spec(Box::new(spec)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `time = "rfc3339"`, `time = "date"`, `time = "auto"` or a list of chrono formats.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawTime {
    /// A keyword or a single format.
    One(String),
    /// Formats tried in order.
    Many(Vec<String>),
}

/// `match = "x.csv"` or `match = ["a.csv", "b.csv"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    /// One pattern.
    One(String),
    /// Several patterns.
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A TOML scalar used as a text value: `9`, `9.5`, `true` and `"9"` are all accepted, so
/// that `map = { 9 = "ICD9CM" }` and `equals = 9` read as users expect.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Scalar {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    pub(crate) fn into_text(self) -> String {
        match self {
            Scalar::Str(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}
