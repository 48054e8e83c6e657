//! References: what a reference points to (fullUrls, `urn:uuid:`, `Type/id`, contained
//! resources), and the patient and encounter of a resource.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::index::{identifier_key, Index};
use super::medication::DrugCodes;
use super::outcome::{Fault, Fx};
use crate::ingest::json::Value;

/// A resource a reference can point to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Target<'a> {
    pub(super) rtype: &'a str,
    pub(super) id: &'a str,
}

/// What a reference points to.
#[derive(Debug, PartialEq)]
pub(super) enum Ref<'a> {
    To(Target<'a>),
    /// A `urn:` reference nothing in scope defines.
    Dangling,
    /// `#id`: a contained resource.
    Contained(&'a str),
    /// Not of the form `[base/]Type/id[/_history/v]`.
    Unparseable,
}

pub(super) struct Resolver<'r, 'a> {
    pub(super) urls: &'r HashMap<&'a str, Target<'a>>,
    pub(super) meds: &'r HashMap<&'a str, Fx<DrugCodes>>,
    /// The document's Practitioners by identifier.
    pub(super) idents: &'r HashMap<String, &'a str>,
    pub(super) index: &'r Index<'r>,
    /// Set when `index` is not the input's yet and a lookup needed it.
    pub(super) pending: Option<&'r AtomicBool>,
}

impl<'r> Resolver<'r, '_> {
    pub(super) fn resolve<'s>(&'s self, reference: &'s str) -> Ref<'s>
    where
        'r: 's,
    {
        let reference = reference.trim();
        if let Some(t) = self.urls.get(reference) {
            return Ref::To(*t);
        }
        if let Some(id) = reference.strip_prefix("#") {
            return Ref::Contained(id);
        }
        if reference.starts_with("urn:") {
            if let Some(p) = self.pending {
                p.store(true, Ordering::Relaxed);
            }
            let found = reference.strip_prefix("urn:uuid:").and_then(|uuid| {
                let ids = self.index.ids.as_ref()?;
                let (id, rtype) = ids.get_key_value(uuid)?;
                Some(Target {
                    rtype: rtype.as_ref(),
                    id: id.as_ref(),
                })
            });
            return found.map_or(Ref::Dangling, Ref::To);
        }
        literal_reference(reference).map_or(Ref::Unparseable, Ref::To)
    }

    /// The id of the resource of type `rtype` of the input that has the identifier
    /// `system|value`: one of the same document first, else one of the whole input.
    pub(super) fn by_identifier(&self, rtype: &str, system: &str, value: &str) -> Option<&str> {
        let key = identifier_key(rtype, system, value);
        if let Some(id) = self.idents.get(&key) {
            return Some(id);
        }
        if let Some(p) = self.pending {
            p.store(true, Ordering::Relaxed);
        }
        self.index.idents.get(&key).map(String::as_str)
    }

    pub(super) fn medication(&self, id: &str) -> Option<&Fx<DrugCodes>> {
        self.meds.get(id).or_else(|| {
            if let Some(p) = self.pending {
                p.store(true, Ordering::Relaxed);
            }
            self.index.meds.get(id)
        })
    }
}

/// `Type/id`, `base/Type/id` or `.../Type/id/_history/v` → `(Type, id)`.
pub(super) fn literal_reference(reference: &str) -> Option<Target<'_>> {
    let end = memchr::memchr2(b'?', b'#', reference.as_bytes()).unwrap_or(reference.len());
    let path = reference.get(..end)?;
    let mut parts = path.trim_end_matches('/').rsplit('/');
    let (mut id, mut rtype) = (parts.next()?, parts.next()?);
    if id == "_history" {
        // `Type/id/_history`
        (id, rtype) = (rtype, parts.next()?);
    } else if rtype == "_history" {
        // `Type/id/_history/v`
        (id, rtype) = (parts.next()?, parts.next()?);
    }
    let type_ok = rtype.bytes().next().is_some_and(|c| c.is_ascii_uppercase())
        && rtype.bytes().all(|c| c.is_ascii_alphanumeric());
    let id_ok = !id.is_empty() && id.bytes().all(|c| ID_BYTE[usize::from(c)]);
    (type_ok && id_ok).then_some(Target { rtype, id })
}

/// The bytes of a FHIR id: `[A-Za-z0-9\-\.]`.
pub(super) const ID_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
        c += 1;
    }
    t
};

/// The id rows use for a resource: its `id`, else the uuid (or last path segment) of its
/// fullUrl.
pub(super) fn resource_id<'a>(res: Value<'a>, full_url: Option<&'a str>) -> Option<&'a str> {
    if let Some(id) = res
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return Some(id);
    }
    let url = full_url?;
    if let Some(uuid) = url.strip_prefix("urn:uuid:") {
        return Some(uuid);
    }
    if let Some(oid) = url.strip_prefix("urn:oid:") {
        return Some(oid);
    }
    Some(literal_reference(url).map_or(url, |t| t.id))
}

/// Resolves the patient a resource is about (`subject`, or the older `patient`).
pub(super) fn patient_ref(res: Value<'_>, rtype: &str, rz: &Resolver<'_, '_>) -> Fx<String> {
    let (key, r) = match res.get("subject") {
        Some(r) => ("subject", r),
        None => match res.get("patient") {
            Some(r) => ("patient", r),
            None => return Err(Fault::missing(format!("{rtype}.subject"))),
        },
    };
    let field = || format!("{rtype}.{key}");
    let Some(reference) = r.get("reference").and_then(Value::as_str) else {
        let detail = format!(
            "{} has no literal reference; an identifier or display alone names no patient",
            field()
        );
        return Err(Fault::new(
            format!("{}.reference", field()),
            "missing_field",
            detail,
        ));
    };
    match rz.resolve(reference) {
        Ref::To(Target {
            rtype: "Patient",
            id,
        }) => Ok(id.to_string()),
        Ref::To(t) => Err(Fault::new(
            field(),
            "bad_value",
            format!("{reference:?} refers to a {}, not a Patient", t.rtype),
        )),
        Ref::Dangling => Err(Fault::new(
            field(),
            "dangling_reference",
            format!("{reference:?} resolves to nothing in the input"),
        )),
        Ref::Contained(_) => Err(Fault::new(
            field(),
            "bad_value",
            format!("{reference:?} refers to a contained resource, which names no patient"),
        )),
        Ref::Unparseable => Err(Fault::new(
            field(),
            "bad_value",
            format!("{reference:?} is not a Patient reference"),
        )),
    }
}

/// Resolves the encounter a resource belongs to (`encounter`, or the older `context`).
/// References to other types (an EpisodeOfCare in `context`) are not encounters and give
/// `None`.
pub(super) fn encounter_ref(
    res: Value<'_>,
    rtype: &str,
    rz: &Resolver<'_, '_>,
) -> Fx<Option<String>> {
    let (key, r) = match res.get("encounter") {
        Some(r) => ("encounter", r),
        None => match res.get("context") {
            Some(r) => ("context", r),
            None => return Ok(None),
        },
    };
    let Some(reference) = r.get("reference").and_then(Value::as_str) else {
        return Ok(None);
    };
    let field = || format!("{rtype}.{key}");
    match rz.resolve(reference) {
        Ref::To(Target {
            rtype: "Encounter",
            id,
        }) => Ok(Some(id.to_string())),
        Ref::To(_) | Ref::Contained(_) => Ok(None),
        Ref::Dangling => Err(Fault::new(
            field(),
            "dangling_reference",
            format!("{reference:?} resolves to nothing in the input"),
        )),
        Ref::Unparseable => Err(Fault::new(
            field(),
            "bad_value",
            format!("{reference:?} is not an Encounter reference"),
        )),
    }
}
