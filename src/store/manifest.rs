//! The manifest stored beside each version, and the names Ward gives things.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use arrow::datatypes::Schema;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::{type_descriptor, ContentHash};

/// The manifest format written by this version of Ward.
pub const MANIFEST_FORMAT: u32 = 1;

/// What a version holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Input kept verbatim (ELT): the bytes of ingested files.
    Raw,
    /// A curated table.
    Curated,
    /// Records an ingest could not curate, with the reasons.
    Quarantine,
    /// A feature timeline.
    Timeline,
    /// A training set (the result of a historical lookup).
    Training,
    /// A registered model card (`ward register`, `src/models.rs`): one row naming the
    /// training set it was trained on (its one lineage input), with its metrics.
    Model,
    /// Anything else put by a user.
    Other,
}

impl Kind {
    /// The kind's name as written in manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Curated => "curated",
            Kind::Quarantine => "quarantine",
            Kind::Timeline => "timeline",
            Kind::Training => "training",
            Kind::Model => "model",
            Kind::Other => "other",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "raw" => Kind::Raw,
            "curated" => Kind::Curated,
            "quarantine" => Kind::Quarantine,
            "timeline" => Kind::Timeline,
            "training" => Kind::Training,
            "model" => Kind::Model,
            "other" => Kind::Other,
            _ => {
                return Err(Error::invalid(
                    "kind",
                    format!(
                        "{s:?} is not one of raw, curated, quarantine, timeline, training, model, other"
                    ),
                ))
            }
        })
    }
}

/// Where a version came from: enough to rebuild it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// The versions it was computed from, in a meaningful order (documented per kind).
    #[serde(default)]
    pub inputs: Vec<ContentHash>,
    /// The hash of the definition that made it (a feature set, a mapping), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<ContentHash>,
    /// The operation and its options (for `rebuild`), as JSON.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
}

/// One column of a version's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// The canonical type, as in the content hash (`docs/hashing.md`).
    #[serde(rename = "type")]
    pub data_type: String,
    /// The Arrow type as Arrow prints it (physical detail, e.g. `LargeUtf8`).
    pub arrow_type: String,
    /// Whether nulls are allowed.
    pub nullable: bool,
}

impl ColumnInfo {
    /// The columns of `schema`.
    ///
    /// # Errors
    /// [`Error::UnsupportedType`] for a type outside the hashed set.
    pub fn from_schema(schema: &Schema) -> Result<Vec<ColumnInfo>> {
        schema
            .fields()
            .iter()
            .map(|f| {
                Ok(ColumnInfo {
                    name: f.name().clone(),
                    data_type: type_descriptor(f.name(), f.data_type())?,
                    arrow_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
            })
            .collect()
    }
}

/// A stored file of a version, with its BLAKE3 digest (so one changed byte is detected even
/// where it would not change the decoded values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Path relative to the version's `data/` directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// BLAKE3 of the file's bytes, hex.
    pub blake3: String,
}

/// The manifest of a version: `versions/<hex>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format of this manifest.
    pub manifest_format: u32,
    /// The content hash, which names the version.
    pub hash: ContentHash,
    /// What the version holds.
    pub kind: Kind,
    /// The dataset name it was put under (a version belongs to one name; tags add others).
    pub name: String,
    /// The schema.
    pub schema: Vec<ColumnInfo>,
    /// Number of rows.
    pub rows: u64,
    /// Bytes stored (the sum of `files`).
    pub bytes: u64,
    /// When it was written (from the injected clock).
    pub created_at: DateTime<Utc>,
    /// Inputs and definition it was made from.
    pub lineage: Lineage,
    /// The Ward version that wrote it.
    pub ward_version: String,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The stored files and their digests.
    pub files: Vec<FileDigest>,
    /// Where the data is, relative to the store, when not in `versions/<hex>/data` (an
    /// object store publishes a version's data where its writer staged it: `data/<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// For a bucketed version (content hash encoding 3, `docs/hashing.md`): the key column,
    /// the bucket count and the digest of its bucket layout ([`super::bucketed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucketing: Option<super::bucketed::BucketingInfo>,
    /// BLAKE3 over the canonical JSON of every other field: detects an edited manifest.
    #[serde(default)]
    pub seal: String,
}

impl Manifest {
    /// The seal of this manifest's content (every field but `seal`).
    pub fn compute_seal(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.seal = String::new();
        // serde_json writes struct fields in declaration order and BTreeMaps sorted, so this
        // is canonical for manifests Ward writes.
        let bytes = serde_json::to_vec(&unsealed).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }
}

/// A dataset name: letters, digits, `_`, `-`, `.`; not starting with `b3:`, no `@` or `/`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming what is wrong.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!("{name:?}: use 1-200 of A-Z a-z 0-9 _ - . (not starting with .)"),
        ))
    }
}

/// Which version a reference means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    /// Exactly this hash.
    Hash(ContentHash),
    /// A unique hash prefix, `b3:` and at least 8 hex digits.
    HashPrefix(String),
    /// The latest version of a name (a tag if there is one by that name, else the newest
    /// version put under that name).
    Latest(String),
    /// The version a name meant at a time.
    AsOf(String, DateTime<Utc>),
}

impl FromStr for VersionRef {
    type Err = Error;

    /// Parses `b3:<hex>` (full or a prefix of at least 8 digits), `NAME`, or `NAME@TIME`
    /// where TIME is RFC 3339 (`2026-01-31T12:00:00Z`) or a date (`2026-01-31`, meaning its
    /// start in UTC).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidRef {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(hex_part) = s.strip_prefix("b3:") {
            if hex_part.len() == 64 {
                return s.parse().map(VersionRef::Hash);
            }
            if hex_part.len() < 8 || hex_part.len() > 64 {
                return Err(bad("a hash prefix has 8 to 64 hex digits after b3:"));
            }
            if !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad("not hexadecimal"));
            }
            return Ok(VersionRef::HashPrefix(hex_part.to_ascii_lowercase()));
        }
        match s.split_once('@') {
            None => {
                validate_name(s)?;
                Ok(VersionRef::Latest(s.to_string()))
            }
            Some((name, time)) => {
                validate_name(name)?;
                let t = parse_time(time).ok_or_else(|| {
                    bad("after @ comes an RFC 3339 time (2026-01-31T12:00:00Z) or a date")
                })?;
                Ok(VersionRef::AsOf(name.to_string(), t))
            }
        }
    }
}

/// Parses an RFC 3339 time or a `YYYY-MM-DD` date (its start, UTC).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_parse() {
        let h = format!("b3:{}", "a".repeat(64));
        assert!(matches!(h.parse::<VersionRef>(), Ok(VersionRef::Hash(_))));
        assert_eq!(
            "b3:ABCDEF12".parse::<VersionRef>().unwrap(),
            VersionRef::HashPrefix("abcdef12".into())
        );
        assert!("b3:abc".parse::<VersionRef>().is_err());
        assert_eq!(
            "enc".parse::<VersionRef>().unwrap(),
            VersionRef::Latest("enc".into())
        );
        let at = "enc@2026-01-02".parse::<VersionRef>().unwrap();
        assert_eq!(
            at,
            VersionRef::AsOf("enc".into(), parse_time("2026-01-02T00:00:00Z").unwrap())
        );
        assert!("enc@yesterday".parse::<VersionRef>().is_err());
        assert!("a/b".parse::<VersionRef>().is_err());
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            "raw",
            "curated",
            "quarantine",
            "timeline",
            "training",
            "other",
        ] {
            assert_eq!(k.parse::<Kind>().unwrap().as_str(), k);
        }
        assert!("features".parse::<Kind>().is_err());
    }
}
