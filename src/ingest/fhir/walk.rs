//! Documents: parsing one, walking its (nested) Bundles into the resources to curate.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, FixedOffset, Utc};
use rayon::prelude::*;

use super::curate::curate;
use super::index::{identifier_keys, Index};
use super::medication::{medication_code, DrugCodes};
use super::outcome::{Fault, Fx, Outcome};
use super::resolve::{resource_id, Resolver, Target};
use super::time::parse_instant;
use crate::curated::Table;
use crate::ingest::json::{Doc, Kind, Value};
use crate::ingest::{clip_raw, BadRecord, Context, Location, Skipped};

/// The raw text of a record, kept borrowed until a bad record needs it.
#[derive(Clone, Copy)]
pub(super) enum Raw<'a> {
    Bytes(&'a [u8]),
    Json(Value<'a>),
}

impl Raw<'_> {
    pub(super) fn text(self) -> String {
        match self {
            Raw::Bytes(b) => {
                let head = b.get(..4100).unwrap_or(b);
                clip_raw(&String::from_utf8_lossy(head))
            }
            Raw::Json(v) => clip_raw(&serde_json::to_string(&v).unwrap_or_default()),
        }
    }
}

/// One resource to curate, and where it was.
pub(super) struct Unit<'a> {
    pub(super) file: &'a str,
    pub(super) record: u64,
    pub(super) res: Value<'a>,
    pub(super) raw: Raw<'a>,
    pub(super) full_url: Option<&'a str>,
    pub(super) bundle_ts: Option<DateTime<Utc>>,
}

impl Unit<'_> {
    pub(super) fn location(&self) -> Location {
        Location {
            file: self.file.to_string(),
            record: self.record,
        }
    }

    pub(super) fn bad(&self, table: Option<Table>, f: Fault) -> BadRecord {
        BadRecord {
            location: self.location(),
            table,
            field: Some(f.field),
            reason: f.reason.to_string(),
            detail: f.detail,
            raw: self.raw.text(),
        }
    }

    pub(super) fn skipped(&self, what: impl Into<String>) -> Outcome {
        Outcome {
            skipped: Some(Skipped {
                location: self.location(),
                what: what.into(),
            }),
            ..Outcome::default()
        }
    }
}

/// Collects the units of one document and the fullUrls it defines.
pub(super) struct Walker<'a> {
    pub(super) file: &'a str,
    /// The zone of Bundle timestamps without an offset.
    pub(super) offset: FixedOffset,
    pub(super) steps: Vec<Step<'a>>,
    pub(super) urls: HashMap<&'a str, Target<'a>>,
    pub(super) meds: HashMap<&'a str, Fx<DrugCodes>>,
    /// The id of each Practitioner of the document by its identifiers.
    pub(super) idents: HashMap<String, &'a str>,
}

/// A resource still to curate, or a record of the document already settled (a bad Bundle
/// field, an entry without a resource): rare, hence boxed.
pub(super) enum Step<'a> {
    Unit(Unit<'a>),
    Done(Box<Outcome>),
}

impl<'a> Walker<'a> {
    pub(super) fn file_bad(&mut self, record: u64, f: Fault, raw: Raw<'a>) {
        let bad = BadRecord {
            location: Location {
                file: self.file.to_string(),
                record,
            },
            table: None,
            field: Some(f.field),
            reason: f.reason.to_string(),
            detail: f.detail,
            raw: raw.text(),
        };
        self.steps.push(Step::Done(Box::new(Outcome {
            bad: vec![bad],
            ..Outcome::default()
        })));
    }

    pub(super) fn resource(&mut self, unit: Unit<'a>) {
        let rtype = unit.res.get("resourceType").and_then(Value::as_str);
        if let (Some(rtype), Some(id)) = (rtype, resource_id(unit.res, unit.full_url)) {
            if let Some(url) = unit.full_url {
                self.urls.insert(url, Target { rtype, id });
            }
            if rtype == "Medication" {
                self.meds.insert(id, medication_code(unit.res));
            }
            if rtype == "Practitioner" {
                for key in identifier_keys(unit.res, rtype) {
                    self.idents.entry(key).or_insert(id);
                }
            }
        }
        self.steps.push(Step::Unit(unit));
    }

    /// Walks a Bundle. `record` is fixed for NDJSON lines and nested Bundles; otherwise each
    /// entry is its own record.
    pub(super) fn bundle(
        &mut self,
        bundle: Value<'a>,
        record: Option<u64>,
        ts: Option<DateTime<Utc>>,
    ) {
        let at = record.unwrap_or(0);
        let ts = match bundle.get("timestamp").map(Value::kind) {
            None | Some(Kind::Null) => ts,
            Some(Kind::String(s)) => match parse_instant(s, self.offset) {
                Some(t) => Some(t),
                None => {
                    let f = Fault::new("Bundle.timestamp", "bad_date", format!("{s:?}"));
                    self.file_bad(at, f, Raw::Json(bundle));
                    ts
                }
            },
            Some(_) => {
                let f = Fault::new("Bundle.timestamp", "bad_date", "not a string");
                self.file_bad(at, f, Raw::Json(bundle));
                ts
            }
        };
        let entries = match bundle.get("entry").map(Value::kind) {
            None | Some(Kind::Null) => return,
            Some(Kind::Array(entries)) => entries,
            Some(_) => {
                let f = Fault::new("Bundle.entry", "bad_value", "Bundle.entry is not an array");
                self.file_bad(at, f, Raw::Json(bundle));
                return;
            }
        };
        for (i, entry) in entries.enumerate() {
            let rec = record.unwrap_or(i as u64 + 1);
            let Some(res) = entry.get("resource") else {
                let what = match entry.get("request") {
                    Some(req) => format!(
                        "Bundle.entry without resource ({} {})",
                        req.get("method").and_then(Value::as_str).unwrap_or("?"),
                        req.get("url").and_then(Value::as_str).unwrap_or("?")
                    ),
                    None => "Bundle.entry without resource".to_string(),
                };
                self.steps.push(Step::Done(Box::new(Outcome {
                    skipped: Some(Skipped {
                        location: Location {
                            file: self.file.to_string(),
                            record: rec,
                        },
                        what,
                    }),
                    ..Outcome::default()
                })));
                continue;
            };
            if res.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
                self.bundle(res, Some(rec), ts);
                continue;
            }
            self.resource(Unit {
                file: self.file,
                record: rec,
                res,
                raw: Raw::Json(entry),
                full_url: entry.get("fullUrl").and_then(Value::as_str),
                bundle_ts: ts,
            });
        }
    }
}

/// Parses, walks and curates one document (a file, or one NDJSON line).
///
/// Appends the outcomes to `out`. With `pending`, the input's [`Index`] is not known yet: a
/// resource that needs it sets `pending` (and its outcome is to be thrown away).
pub(super) fn process_document<'a>(
    file: &'a str,
    line: Option<u64>,
    bytes: &'a [u8],
    index: &Index<'_>,
    pending: Option<&AtomicBool>,
    ctx: &Context,
    out: &mut Vec<Outcome>,
) {
    let doc = match Doc::parse(bytes) {
        Ok(doc) => doc,
        Err(e) => {
            let bad = BadRecord {
                location: Location {
                    file: file.to_string(),
                    record: line.unwrap_or(0),
                },
                table: None,
                field: None,
                reason: "unparseable".to_string(),
                detail: format!("not valid JSON: {e}"),
                raw: Raw::Bytes(bytes).text(),
            };
            out.push(Outcome {
                bad: vec![bad],
                ..Outcome::default()
            });
            return;
        }
    };
    let doc = doc.root();
    let raw = match line {
        Some(_) => Raw::Bytes(bytes),
        None => Raw::Json(doc),
    };
    let mut walker = Walker {
        file,
        offset: ctx.default_offset,
        steps: Vec::new(),
        urls: HashMap::new(),
        meds: HashMap::new(),
        idents: HashMap::new(),
    };
    if !doc.is_object() {
        let f = Fault::new(
            "",
            "unparseable",
            "not a FHIR resource: expected a JSON object",
        );
        walker.file_bad(line.unwrap_or(0), f, raw);
    } else if doc.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        walker.bundle(doc, line, None);
    } else {
        walker.resource(Unit {
            file,
            record: line.unwrap_or(1),
            res: doc,
            raw,
            full_url: None,
            bundle_ts: None,
        });
    }
    let Walker {
        steps,
        urls,
        meds,
        idents,
        ..
    } = walker;

    let rz = Resolver {
        urls: &urls,
        meds: &meds,
        idents: &idents,
        index,
        pending,
    };
    let run = |step: Step<'_>| match step {
        Step::Done(o) => *o,
        Step::Unit(u) => curate(&u, &rz, ctx),
    };
    if steps.len() > 64 {
        out.par_extend(steps.into_par_iter().map(run));
    } else {
        out.extend(steps.into_iter().map(run));
    }
}
