//! The reference index of a whole call's input: the type of every id (for `urn:uuid:`), the
//! code of every Medication, and Practitioners by identifier (conditional and logical
//! references).

use std::borrow::Cow;
use std::collections::HashMap;

use rayon::prelude::*;

use super::framing::strip_bom;
use super::medication::{medication_code, DrugCodes};
use super::outcome::Fx;
use super::resolve::resource_id;
use super::scan::{scan_head, IdOnly};
use crate::ingest::json::{Doc, Value};
use crate::ingest::Input;

/// A hash map with a fast (not DoS-resistant) hasher, for keys taken from one input.
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What the whole call's input offers for resolving references: in NDJSON, the type of
/// every id (for `urn:uuid:`) and the code of every Medication.
#[derive(Default)]
pub(super) struct Index<'a> {
    pub(super) ids: Option<FastMap<Cow<'a, str>, Cow<'a, str>>>,
    pub(super) meds: HashMap<String, Fx<DrugCodes>>,
    /// The id of each Practitioner by its identifiers ([`identifier_key`]), for conditional
    /// and logical references.
    pub(super) idents: HashMap<String, String>,
}

impl<'a> Index<'a> {
    /// The index of NDJSON lines, read in parallel without building them (but for
    /// Medications): the first line with an id gives its type, the last Medication with an
    /// id gives its code. Lines that are not JSON objects with both are left out.
    pub(super) fn of_lines(lines: &[(&'a str, u64, &'a [u8])]) -> Self {
        type Entry<'l> = (
            Cow<'l, str>,
            Cow<'l, str>,
            Option<Fx<DrugCodes>>,
            Vec<String>,
        );
        let found: Vec<Option<Entry<'a>>> = lines
            .par_iter()
            .map(|&(_, _, bytes)| {
                let head = scan_head(bytes)
                    .or_else(|| serde_json::from_slice::<IdOnly<'a>>(bytes).ok())?;
                let (rtype, id) = (head.resource_type?, head.id?);
                let doc = matches!(rtype.as_ref(), "Medication" | "Practitioner")
                    .then(|| Doc::parse(bytes).ok())
                    .flatten();
                let med = doc
                    .as_ref()
                    .filter(|_| rtype == "Medication")
                    .map(|d| medication_code(d.root()));
                let keys = doc
                    .as_ref()
                    .filter(|_| rtype == "Practitioner")
                    .map(|d| identifier_keys(d.root(), &rtype))
                    .unwrap_or_default();
                Some((id, rtype, med, keys))
            })
            .collect();
        let mut ids = FastMap::with_capacity_and_hasher(found.len(), Default::default());
        let mut meds = HashMap::new();
        let mut idents = HashMap::new();
        for (id, rtype, med, keys) in found.into_iter().flatten() {
            if let Some(med) = med {
                meds.insert(id.to_string(), med);
            }
            for key in keys {
                idents.entry(key).or_insert_with(|| id.to_string());
            }
            ids.entry(id).or_insert(rtype);
        }
        Index {
            ids: Some(ids),
            meds,
            idents,
        }
    }

    /// The index of whole documents (Bundles): only the Practitioners' identifiers, read
    /// from the documents that may hold a Practitioner (they name the type as a string).
    pub(super) fn of_documents(inputs: &[Input<'_>]) -> Self {
        let finder = memchr::memmem::Finder::new(b"\"Practitioner\"");
        let found: Vec<Vec<(String, String)>> = inputs
            .par_iter()
            .map(|input| {
                let bytes = strip_bom(input.bytes);
                if finder.find(bytes).is_none() {
                    return Vec::new();
                }
                let Ok(doc) = Doc::parse(bytes) else {
                    return Vec::new();
                };
                let mut out = Vec::new();
                practitioner_keys(doc.root(), None, 0, &mut out);
                out
            })
            .collect();
        let mut idents = HashMap::new();
        for (key, id) in found.into_iter().flatten() {
            idents.entry(key).or_insert(id);
        }
        Index {
            ids: None,
            meds: HashMap::new(),
            idents,
        }
    }
}

/// The key of an identifier of a resource of type `rtype` in the identifier maps.
pub(super) fn identifier_key(rtype: &str, system: &str, value: &str) -> String {
    format!("{rtype}\n{system}|{value}")
}

/// The keys of a resource's identifiers that have both a system and a value.
pub(super) fn identifier_keys(res: Value<'_>, rtype: &str) -> Vec<String> {
    let list = res.get("identifier").and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .filter_map(|i| {
            let system = i.get("system").and_then(Value::as_str)?.trim();
            let value = i.get("value").and_then(Value::as_str)?.trim();
            (!system.is_empty() && !value.is_empty()).then(|| identifier_key(rtype, system, value))
        })
        .collect()
}

/// Appends `(key, id)` for each identifier of each Practitioner in a document (a Bundle,
/// nested Bundles included, or one resource).
pub(super) fn practitioner_keys(
    res: Value<'_>,
    full_url: Option<&str>,
    depth: usize,
    out: &mut Vec<(String, String)>,
) {
    match res.get("resourceType").and_then(Value::as_str) {
        Some("Practitioner") => {
            if let Some(id) = resource_id(res, full_url) {
                let keys = identifier_keys(res, "Practitioner");
                out.extend(keys.into_iter().map(|k| (k, id.to_string())));
            }
        }
        // serde_json already limits the nesting; this keeps the walk bounded on its own.
        Some("Bundle") if depth < 32 => {
            let entries = res.get("entry").and_then(Value::as_array);
            for entry in entries.into_iter().flatten() {
                if let Some(r) = entry.get("resource") {
                    let url = entry.get("fullUrl").and_then(Value::as_str);
                    practitioner_keys(r, url, depth + 1, out);
                }
            }
        }
        _ => {}
    }
}

/// A conditional reference `[base/]Type?identifier=system|value` (FHIR R4 3.1.3.5) →
/// `(Type, system, value)`; `None` when the reference has no query. A query that is not a
/// single identifier search with both a system and a value is an error (its detail): the
/// system is what keeps the identifier from being read as another resource's.
pub(super) fn conditional_reference(
    reference: &str,
) -> Option<Result<(&str, String, String), String>> {
    let (path, query) = reference.trim().split_once('?')?;
    let rtype = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let type_ok = rtype.bytes().next().is_some_and(|c| c.is_ascii_uppercase())
        && rtype.bytes().all(|c| c.is_ascii_alphanumeric());
    if !type_ok {
        return Some(Err(format!(
            "{reference:?} is a search without a resource type"
        )));
    }
    let Some(token) = query
        .strip_prefix("identifier=")
        .filter(|t| !t.contains('&'))
    else {
        return Some(Err(format!(
            "{reference:?}: only a conditional reference by one identifier \
             (`{rtype}?identifier=system|value`) can be resolved"
        )));
    };
    let token = percent_decode(token);
    match token.split_once('|') {
        Some((system, value)) if !system.trim().is_empty() && !value.trim().is_empty() => Some(Ok(
            (rtype, system.trim().to_string(), value.trim().to_string()),
        )),
        _ => Some(Err(format!(
            "{reference:?}: the identifier needs both a system and a value (`system|value`)"
        ))),
    }
}

/// `%XX` escapes decoded (`+` left alone: it is not a space in a FHIR reference); an
/// escape that is not two hex digits, or that does not decode to UTF-8, is left as written.
pub(super) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(x)) => {
                out.push(x);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}
