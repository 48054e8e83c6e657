//! What a feature repository says about its sets for people (`docs/features.md`,
//! "Documentation keys"): each set's owner and description and its TOML as written, each
//! feature's description and unit. Kept apart from the resolved [`super::FeatureSet`]: they
//! describe a set, they do not define it, so they are not part of the definition hash (a
//! reworded description does not make a new timeline).

use std::collections::BTreeMap;

use serde::Serialize;

use super::definition::FeatureDef;
use super::kind::FeatureKind;

/// The documentation of one feature set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetDocs {
    /// Who answers for the set (`owner = "..."`; empty when not given).
    pub owner: String,
    /// What the set is for (`description = "..."`).
    pub description: String,
    /// The repository file it was read from.
    pub origin: String,
    /// Its `[[feature_set]]` table as written in the file, with its features and
    /// expectations (not the sets it extends).
    pub toml: String,
    /// The documentation of each feature, own and inherited, by name.
    pub features: BTreeMap<String, FeatureDocs>,
}

/// The documentation of one feature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FeatureDocs {
    /// What it means (`description = "..."`).
    pub description: String,
    /// Its unit as declared (`unit = "mg/dL"`; empty when not given).
    pub unit: String,
}

/// The text of the `[[feature_set]]` table whose `name` is at byte `at` of `text`: from its
/// header to the next `[[feature_set]]` or `[[derived]]` header (or the end), trailing
/// comments and blank lines left out.
pub(crate) fn set_section(text: &str, at: usize) -> String {
    let at = at.min(text.len());
    let start = text[..at].rfind("[[feature_set]]").unwrap_or(0);
    let rest = &text[start..];
    let mut end = rest.len();
    let mut offset = 0;
    for (i, line) in rest.split_inclusive('\n').enumerate() {
        let l = line.trim_start();
        if i > 0 && (l.starts_with("[[feature_set]]") || l.starts_with("[[derived]]")) {
            end = offset;
            break;
        }
        offset += line.len();
    }
    let mut lines: Vec<&str> = rest[..end].lines().collect();
    while lines
        .last()
        .is_some_and(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        lines.pop();
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// The clinical codes a feature selects: its `code` filter's values, each with its
/// `code_system` when the filter names one (`LOINC 718-7`); prefixes end with `*`.
pub fn codes(f: &FeatureDef) -> Vec<String> {
    let system = match f.filter.get("code_system") {
        Some(super::Condition::Eq(s)) => Some(s.as_str()),
        _ => None,
    };
    let with = |c: &str| match system {
        Some(s) => format!("{s} {c}"),
        None => c.to_string(),
    };
    match f.filter.get("code") {
        Some(super::Condition::Eq(c)) => vec![with(c)],
        Some(super::Condition::In(cs)) => cs.iter().map(|c| with(c)).collect(),
        Some(super::Condition::Prefix(ps)) => ps.iter().map(|p| with(&format!("{p}*"))).collect(),
        None => Vec::new(),
    }
}

/// The unit of a feature's values: the declared one, else what its kind gives (`count`,
/// `years`, `days`, `0/1`, `points`), else for a lab value the canonical UCUM unit Ward
/// stores its LOINC code in (`docs/curated-tables.md`); empty when unknown.
pub fn unit(f: &FeatureDef, docs: Option<&FeatureDocs>) -> String {
    if let Some(u) = docs.map(|d| d.unit.as_str()).filter(|u| !u.is_empty()) {
        return u.to_string();
    }
    match f.kind {
        FeatureKind::Count => "count".into(),
        FeatureKind::Age => "years".into(),
        FeatureKind::DaysSince => "days".into(),
        FeatureKind::Exists | FeatureKind::ReadmittedWithin | FeatureKind::DiedWithin => {
            "0/1".into()
        }
        FeatureKind::Score => "points".into(),
        _ => {
            if f.table == "observations" && f.column.as_deref() == Some("value_num") {
                if let Some(super::Condition::Eq(code)) = f.filter.get("code") {
                    if let Some(u) = crate::curated::units::units_of(code) {
                        return u.canonical.to_string();
                    }
                }
            }
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_section_ends_at_the_next_set() {
        let text = "# top\n[[derived]]\nname = \"d\"\n\n[[feature_set]]\nname = \"a\"\n\n[[feature_set.features]]\nname = \"x\"\n\n# the next set\n[[feature_set]]\nname = \"b\"\n";
        let at = text.find("name = \"a\"").unwrap();
        assert_eq!(
            set_section(text, at),
            "[[feature_set]]\nname = \"a\"\n\n[[feature_set.features]]\nname = \"x\"\n"
        );
        let at = text.find("name = \"b\"").unwrap();
        assert_eq!(set_section(text, at), "[[feature_set]]\nname = \"b\"\n");
    }
}
