//! FHIR pushed over HTTP: what a payload is ([`Kind`]), the checks made before it is logged
//! ([`check`]), the OperationOutcome answers ([`Issue`], [`outcome`]), and the NDJSON
//! inputs a seal ingests ([`sealed_inputs`]).
//!
//! A payload is a Bundle (`transaction`, `batch` or `collection`) or FHIR Bulk NDJSON. It is
//! logged only when it is whole: JSON, the resource types right, and nothing the batch
//! parser ([`crate::ingest::fhir::parse`], run on the payload alone) would put in
//! quarantine, except `dangling_reference` (a reference may name a resource of another
//! payload; the seal resolves it over everything it seals). One bad resource refuses the
//! whole payload: a transaction is all or nothing, and a sender that is told "line 7" can
//! fix and resend the payload without working out which part was kept.
//!
//! Sealing reads every payload as NDJSON: the payloads of one source name, in log order,
//! become one file of that name, an NDJSON payload as sent and a Bundle as one line (its
//! line breaks, whitespace outside JSON strings, made spaces). The batch parser reads a
//! Bundle line as the same Bundle, so the seal equals `ward ingest --format fhir-ndjson` of
//! those files.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::wal::Record;
use crate::error::{Error, Result};
use crate::ingest::fhir::{self as parser, Framing};
use crate::ingest::pipeline::NamedInput;
use crate::ingest::{BadRecord, Context, Input};

/// The Bundle types a push accepts.
pub const BUNDLE_TYPES: [&str; 3] = ["transaction", "batch", "collection"];

/// At most this many issues are listed in an OperationOutcome (then one saying how many
/// more there were).
const MAX_ISSUES: usize = 50;

/// The framing and source name of a logged FHIR payload, kept in its log record's kind
/// (`fhir-ndjson:<source>` or `fhir-bundle:<source>`). `fhir-bundle` is one JSON document
/// sealed as one line: a Bundle, or (consumed from Kafka) one resource spread over lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    /// Bundle or NDJSON.
    pub framing: Framing,
    /// The source name: the file the seal puts the payload in, so the `source_system` of
    /// its resources without `meta.source` (as a file's name in `ward ingest`).
    pub source: String,
}

impl Kind {
    /// The record kind's text.
    pub fn encode(&self) -> String {
        let f = match self.framing {
            Framing::Ndjson => "ndjson",
            Framing::Bundle => "bundle",
        };
        format!("fhir-{f}:{}", self.source)
    }

    /// Reads a record kind; `None` when it is not a FHIR payload's.
    pub fn parse(kind: &str) -> Option<Kind> {
        let (f, source) = kind.split_once(':')?;
        let framing = match f {
            "fhir-ndjson" => Framing::Ndjson,
            "fhir-bundle" => Framing::Bundle,
            _ => return None,
        };
        Some(Kind {
            framing,
            source: source.to_string(),
        })
    }
}

/// The default source name of a feed's payloads: `<feed>.ndjson`.
pub fn default_source(feed: &str) -> String {
    format!("{feed}.ndjson")
}

/// Checks a source name (`?source=`): it names a file of the sealed input, as `ward ingest`
/// names a file (`Patient.ndjson`, `export/Patient.ndjson`): 1 to 200 letters, digits, `-`,
/// `_`, `.` and `/`, no empty, `.` or `..` path segment.
///
/// # Errors
/// Why it is refused.
pub fn check_source(name: &str) -> std::result::Result<(), String> {
    let chars_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    let segments_ok = name
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != "..");
    if !name.is_empty() && name.len() <= 200 && chars_ok && segments_ok {
        Ok(())
    } else {
        Err(format!(
            "source {name:?}: give a file name of 1 to 200 letters, digits, '-', '_', '.' and '/' (no empty, '.' or '..' segment)"
        ))
    }
}

/// One issue of an OperationOutcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// `fatal`, `error`, `warning` or `information`.
    pub severity: &'static str,
    /// The FHIR issue type (`structure`, `invalid`, `required`, `value`, `not-supported`,
    /// `too-costly`, `login`, `forbidden`, `transient`, `duplicate`, `not-found`,
    /// `informational`).
    pub code: &'static str,
    /// Where in the payload: `line 3`, `Bundle.entry[2]` (0-based, as FHIRPath counts).
    pub location: Option<String>,
    /// The element at fault, FHIRPath-like (`Observation.subject`, `Bundle.type`).
    pub expression: Option<String>,
    /// The explanation, naming the place again.
    pub diagnostics: String,
}

impl Issue {
    /// An error issue.
    pub fn error(code: &'static str, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: "error",
            code,
            location: None,
            expression: None,
            diagnostics: diagnostics.into(),
        }
    }

    /// The issue with its expression set.
    pub fn at_expression(mut self, expression: &str) -> Issue {
        self.expression = Some(expression.to_string());
        self
    }

    fn at(mut self, location: Option<String>, expression: Option<String>) -> Issue {
        self.location = location;
        self.expression = expression;
        self
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        });
        if let Some(l) = &self.location {
            v["location"] = json!([l]);
        }
        if let Some(e) = &self.expression {
            v["expression"] = json!([e]);
        }
        v
    }
}

/// An OperationOutcome holding `issues` (at most [`MAX_ISSUES`], then one counting the
/// rest).
pub fn outcome(issues: &[Issue]) -> Value {
    let mut list: Vec<Value> = issues.iter().take(MAX_ISSUES).map(Issue::to_json).collect();
    if issues.len() > MAX_ISSUES {
        list.push(
            Issue {
                severity: issues[MAX_ISSUES].severity,
                code: "informational",
                location: None,
                expression: None,
                diagnostics: format!("{} more issues not listed", issues.len() - MAX_ISSUES),
            }
            .to_json(),
        );
    }
    json!({ "resourceType": "OperationOutcome", "issue": list })
}

/// A payload refused: the HTTP status and why.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// 400 (not JSON), 422 (JSON, but not what a push takes, or a resource the batch parser
    /// would quarantine).
    pub status: u16,
    /// What is wrong, and where.
    pub issues: Vec<Issue>,
}

impl Rejection {
    fn new(status: u16, issues: Vec<Issue>) -> Rejection {
        Rejection { status, issues }
    }
}

/// A payload that may be logged.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    /// Resources per type (a Bundle inside NDJSON or a Bundle counts as `Bundle`).
    pub resources: BTreeMap<String, u64>,
    /// Warnings for the answer (a reference the payload alone does not resolve).
    pub warnings: Vec<Issue>,
    /// For a `transaction` or `batch` Bundle: its type and entries, for the
    /// `transaction-response` / `batch-response` Bundle a FHIR server answers with
    /// ([`Accepted::response_bundle`]).
    pub reply: Option<BundleReply>,
}

/// What a `transaction` or `batch` Bundle's answer names: its type and, per entry, the
/// request method and the resource's `Type/id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleReply {
    /// `transaction` or `batch`.
    pub kind: String,
    /// Per entry, in order: (`request.method`, upper case, `POST` if absent; the resource's
    /// `Type/id`, when it has an id, or the `request.url` of a `PUT`).
    pub entries: Vec<(String, Option<String>)>,
}

impl Accepted {
    /// The answer to a `transaction` or `batch` Bundle, as a FHIR server gives it: a Bundle
    /// of type `transaction-response` / `batch-response` with one entry per entry of the
    /// request, in order, each with its `response`: `201 Created` for a `POST` (a create),
    /// `200 OK` for a `PUT` (an update), the `location` (`Type/id`) where the resource has an
    /// id, and an `outcome` holding the warnings about that entry. `None` for a collection
    /// (or NDJSON), which is answered with an OperationOutcome. The payload's log record is
    /// in the answer's `X-Ward-WAL-Seq` header, as for every push.
    pub fn response_bundle(&self) -> Option<Value> {
        let reply = self.reply.as_ref()?;
        let entries: Vec<Value> = reply
            .entries
            .iter()
            .enumerate()
            .map(|(i, (method, location))| {
                let status = if method == "PUT" {
                    "200 OK"
                } else {
                    "201 Created"
                };
                let mut response = json!({ "status": status });
                if let Some(l) = location {
                    response["location"] = json!(l);
                }
                let place = format!("Bundle.entry[{i}]");
                let mine: Vec<Issue> = self
                    .warnings
                    .iter()
                    .filter(|w| {
                        w.location
                            .as_deref()
                            .is_some_and(|l| l == place || l.starts_with(&format!("{place}.")))
                    })
                    .cloned()
                    .collect();
                if !mine.is_empty() {
                    response["outcome"] = outcome(&mine);
                }
                json!({ "response": response })
            })
            .collect();
        Some(json!({
            "resourceType": "Bundle",
            "type": format!("{}-response", reply.kind),
            "entry": entries,
        }))
    }

    /// All resources.
    pub fn total(&self) -> u64 {
        self.resources.values().sum()
    }

    /// `12 resources (Observation 10, Patient 2)`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .resources
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        format!("{} resources ({})", self.total(), parts.join(", "))
    }
}

/// The payload without a UTF-8 byte order mark.
fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

/// The `resourceType` of a JSON value, when it is an object with a string one.
fn resource_type(v: &Value) -> Option<&str> {
    v.as_object()?.get("resourceType")?.as_str()
}

/// Checks a payload framed as `framing`, to be sealed under `source` (see the module
/// documentation).
///
/// # Errors
/// The [`Rejection`], with every issue found and where.
pub fn check(
    framing: Framing,
    source: &str,
    body: &[u8],
    ctx: &Context,
) -> std::result::Result<Accepted, Rejection> {
    let body = strip_bom(body);
    let mut accepted = match framing {
        Framing::Bundle => check_bundle(body)?,
        Framing::Ndjson => check_ndjson(body)?,
    };
    let parsed = parser::parse(
        &[Input {
            name: source,
            bytes: body,
        }],
        framing,
        ctx,
    );
    let mut issues = Vec::new();
    for b in &parsed.bad {
        let issue = parser_issue(framing, b);
        if b.reason == "dangling_reference" {
            accepted.warnings.push(Issue {
                severity: "warning",
                ..issue
            });
        } else {
            issues.push(issue);
        }
    }
    if issues.is_empty() {
        Ok(accepted)
    } else {
        Err(Rejection::new(422, issues))
    }
}

/// A bad record of the batch parser as an issue: `line N` or `Bundle.entry[N-1]`.
fn parser_issue(framing: Framing, b: &BadRecord) -> Issue {
    let place = match framing {
        Framing::Ndjson => format!("line {}", b.location.record),
        Framing::Bundle if b.location.record == 0 => "Bundle".to_string(),
        Framing::Bundle => format!("Bundle.entry[{}]", b.location.record - 1),
    };
    let code = match b.reason.as_str() {
        "missing_field" => "required",
        "unparseable" => "structure",
        "dangling_reference" => "not-found",
        "unknown_code_system" => "code-invalid",
        _ => "value",
    };
    let field = b.field.clone().filter(|f| !f.is_empty());
    Issue::error(
        code,
        format!(
            "{place}{}: {} ({}); the payload was not stored",
            field
                .as_deref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default(),
            b.detail,
            b.reason
        ),
    )
    .at(Some(place), field)
}

fn check_bundle(body: &[u8]) -> std::result::Result<Accepted, Rejection> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        Rejection::new(
            400,
            vec![Issue::error(
                "structure",
                format!(
                    "the body is not JSON: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
            .at(Some(format!("line {}", e.line())), None)],
        )
    })?;
    let refuse = |code, expr: &str, msg: String| {
        Rejection::new(
            422,
            vec![Issue::error(code, msg).at(None, Some(expr.to_string()))],
        )
    };
    match resource_type(&doc) {
        Some("Bundle") => {}
        Some(other) => {
            return Err(refuse(
                "invalid",
                "resourceType",
                format!("resourceType is {other:?}: POST a Bundle (transaction, batch or collection) as JSON, or resources as NDJSON (application/fhir+ndjson)"),
            ))
        }
        None => {
            return Err(refuse(
                "structure",
                "resourceType",
                "the body is not a FHIR resource: a JSON object with a string resourceType".into(),
            ))
        }
    }
    let kind = match doc.get("type").and_then(Value::as_str) {
        Some(t) if BUNDLE_TYPES.contains(&t) => t.to_string(),
        Some(t) => {
            return Err(refuse(
                "not-supported",
                "Bundle.type",
                format!("Bundle.type {t:?} is not accepted: give transaction, batch or collection"),
            ))
        }
        None => {
            return Err(refuse(
                "required",
                "Bundle.type",
                "Bundle.type is required (transaction, batch or collection)".into(),
            ))
        }
    };
    let entries = match doc.get("entry") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(refuse(
                "required",
                "Bundle.entry",
                "the Bundle has no entry: nothing to store".into(),
            ))
        }
        Some(_) => {
            return Err(refuse(
                "structure",
                "Bundle.entry",
                "Bundle.entry is not an array".into(),
            ))
        }
    };
    let mut accepted = Accepted::default();
    let mut reply = (kind != "collection").then(|| BundleReply {
        kind,
        entries: Vec::with_capacity(entries.len()),
    });
    let mut issues = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let place = format!("Bundle.entry[{i}]");
        if let Some(reply) = &mut reply {
            let request = entry.get("request");
            let method = request
                .and_then(|r| r.get("method"))
                .and_then(Value::as_str)
                .unwrap_or("POST")
                .to_ascii_uppercase();
            let res = entry.get("resource");
            let location = match (
                res.and_then(resource_type),
                res.and_then(|r| r.get("id")).and_then(Value::as_str),
            ) {
                (Some(t), Some(id)) => Some(format!("{t}/{id}")),
                _ if method == "PUT" => request
                    .and_then(|r| r.get("url"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            };
            reply.entries.push((method, location));
        }
        let Some(res) = entry.get("resource") else {
            if !entry.is_object() {
                issues.push(
                    Issue::error("structure", format!("{place}: an entry is a JSON object"))
                        .at(Some(place.clone()), Some(place)),
                );
            }
            continue;
        };
        match resource_type(res) {
            Some(t) => *accepted.resources.entry(t.to_string()).or_insert(0) += 1,
            None => issues.push(
                Issue::error(
                    "structure",
                    format!(
                        "{place}.resource is not a FHIR resource (a JSON object with a string resourceType)"
                    ),
                )
                .at(Some(place.clone()), Some(format!("{place}.resource.resourceType"))),
            ),
        }
    }
    accepted.reply = reply;
    if issues.is_empty() {
        Ok(accepted)
    } else {
        Err(Rejection::new(422, issues))
    }
}

fn check_ndjson(body: &[u8]) -> std::result::Result<Accepted, Rejection> {
    let mut accepted = Accepted::default();
    let mut issues = Vec::new();
    let mut not_json = false;
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let place = format!("line {}", i + 1);
        match serde_json::from_slice::<Value>(line) {
            Err(e) => {
                not_json = true;
                issues.push(
                    Issue::error(
                        "structure",
                        format!("{place}: not JSON: {e} (column {})", e.column()),
                    )
                    .at(Some(place), None),
                );
            }
            Ok(v) => match resource_type(&v) {
                Some(t) => *accepted.resources.entry(t.to_string()).or_insert(0) += 1,
                None => issues.push(
                    Issue::error(
                        "structure",
                        format!(
                            "{place}: not a FHIR resource (a JSON object with a string resourceType)"
                        ),
                    )
                    .at(Some(place), Some("resourceType".into())),
                ),
            },
        }
    }
    if !issues.is_empty() {
        return Err(Rejection::new(if not_json { 400 } else { 422 }, issues));
    }
    if accepted.total() == 0 {
        return Err(Rejection::new(
            400,
            vec![Issue::error(
                "required",
                "the body holds no resource (NDJSON: one resource a line)",
            )],
        ));
    }
    Ok(accepted)
}

/// The inputs a seal of FHIR `records` ingests as `fhir-ndjson`: per source name (in name
/// order, as `ward ingest` of a directory reads its files), the payloads of that name in
/// log order, an NDJSON payload as sent and a Bundle as one line.
///
/// # Errors
/// [`Error::Store`] naming the record whose kind is not a FHIR payload's.
pub fn sealed_inputs(records: &[&Record], dir: &std::path::Path) -> Result<Vec<NamedInput>> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for r in records {
        let kind = Kind::parse(&r.kind).ok_or_else(|| Error::Store {
            path: dir.to_path_buf(),
            reason: format!(
                "log record {} is not a FHIR payload (kind {:?}) in a feed of FHIR payloads; a feed holds HL7 v2 messages or FHIR payloads, not both",
                r.seq, r.kind
            ),
        })?;
        let out = files.entry(kind.source).or_default();
        let body = strip_bom(&r.message);
        match kind.framing {
            Framing::Ndjson => out.extend_from_slice(body),
            Framing::Bundle => out.extend(body.iter().map(|b| match b {
                b'\n' | b'\r' => b' ',
                b => *b,
            })),
        }
        if !matches!(out.last(), None | Some(b'\n')) {
            out.push(b'\n');
        }
    }
    Ok(files
        .into_iter()
        .map(|(name, bytes)| NamedInput { name, bytes })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context::new(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default())
    }

    const PATIENT: &str = r#"{"resourceType":"Patient","id":"p1","gender":"female"}"#;
    const OBS: &str = r#"{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2160-0"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2024-01-01T00:00:00Z","valueQuantity":{"value":1.1,"unit":"mg/dL"}}"#;

    #[test]
    fn kinds_round_trip_and_sources_are_checked() {
        let k = Kind {
            framing: Framing::Bundle,
            source: "export/Patient.ndjson".into(),
        };
        assert_eq!(Kind::parse(&k.encode()), Some(k));
        assert_eq!(Kind::parse(""), None);
        assert!(check_source("Patient.ndjson").is_ok());
        for bad in ["", "../x", "a//b", "/abs", "a b", "x/./y"] {
            assert!(check_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ndjson_is_checked_line_by_line() {
        let body = format!("{PATIENT}\n\n{OBS}\n");
        let a = check(Framing::Ndjson, "f.ndjson", body.as_bytes(), &ctx()).expect("ok");
        assert_eq!(a.total(), 2);
        let e = check(Framing::Ndjson, "f.ndjson", b"{\"a\":1}\nnope\n", &ctx()).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.issues.len(), 2);
        assert_eq!(e.issues[0].location.as_deref(), Some("line 1"));
        assert_eq!(e.issues[1].location.as_deref(), Some("line 2"));
        let e = check(Framing::Ndjson, "f.ndjson", b"[1]\n", &ctx()).unwrap_err();
        assert_eq!(e.status, 422);
        // The batch parser's own checks: an Observation without a subject.
        let no_subject = OBS.replace(r#""subject":{"reference":"Patient/p1"},"#, "");
        let body = format!("{PATIENT}\n{no_subject}\n");
        let e = check(Framing::Ndjson, "f.ndjson", body.as_bytes(), &ctx()).unwrap_err();
        assert_eq!(e.status, 422);
        assert_eq!(e.issues[0].location.as_deref(), Some("line 2"));
        assert!(
            e.issues[0]
                .expression
                .as_deref()
                .is_some_and(|x| x.contains("subject")),
            "{:?}",
            e.issues
        );
    }

    #[test]
    fn bundles_are_checked_by_type_and_entry() {
        let ok = format!(
            r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"resource":{PATIENT},"request":{{"method":"PUT","url":"Patient/p1"}}}},{{"resource":{OBS}}}]}}"#
        );
        let a = check(Framing::Bundle, "f.ndjson", ok.as_bytes(), &ctx()).expect("ok");
        assert_eq!(a.describe(), "2 resources (Observation 1, Patient 1)");
        let e = check(Framing::Bundle, "f", b"{\"resourceType\":", &ctx()).unwrap_err();
        assert_eq!(e.status, 400);
        let e = check(Framing::Bundle, "f", PATIENT.as_bytes(), &ctx()).unwrap_err();
        assert_eq!(
            (e.status, e.issues[0].expression.as_deref()),
            (422, Some("resourceType"))
        );
        let searchset = ok.replace("transaction", "searchset");
        let e = check(Framing::Bundle, "f", searchset.as_bytes(), &ctx()).unwrap_err();
        assert_eq!(e.issues[0].expression.as_deref(), Some("Bundle.type"));
        let bad_entry = ok.replace(
            r#"{"resource":{"resourceType":"Observation""#,
            r#"{"resource":{"kind":"Observation""#,
        );
        let e = check(Framing::Bundle, "f", bad_entry.as_bytes(), &ctx()).unwrap_err();
        assert_eq!(e.issues[0].location.as_deref(), Some("Bundle.entry[1]"));
        let no_subject = ok.replace(r#""subject":{"reference":"Patient/p1"},"#, "");
        let e = check(Framing::Bundle, "f", no_subject.as_bytes(), &ctx()).unwrap_err();
        assert_eq!(e.issues[0].location.as_deref(), Some("Bundle.entry[1]"));
        let v = outcome(&e.issues);
        assert_eq!(v["resourceType"], "OperationOutcome");
        assert_eq!(v["issue"][0]["location"][0], "Bundle.entry[1]");
    }

    #[test]
    fn sealed_inputs_group_by_source_and_put_a_bundle_on_one_line() {
        let rec = |seq, kind: &Kind, body: &str| Record {
            seq,
            received_at: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
            status: super::super::wal::Status::Accepted,
            sender: "s".into(),
            control_id: String::new(),
            message: body.as_bytes().to_vec(),
            kind: kind.encode(),
            position: None,
        };
        let nd = |s: &str| Kind {
            framing: Framing::Ndjson,
            source: s.into(),
        };
        let bundle = Kind {
            framing: Framing::Bundle,
            source: "b.ndjson".into(),
        };
        let records = [
            rec(1, &nd("b.ndjson"), "{\"x\":1}"),
            rec(2, &nd("a.ndjson"), "\u{feff}{\"y\":1}\n"),
            rec(3, &bundle, "{\n  \"resourceType\": \"Bundle\"\r\n}"),
        ];
        let refs: Vec<&Record> = records.iter().collect();
        let inputs = sealed_inputs(&refs, std::path::Path::new("d")).expect("inputs");
        let got: Vec<(&str, &str)> = inputs
            .iter()
            .map(|i| (i.name.as_str(), std::str::from_utf8(&i.bytes).unwrap_or("")))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.ndjson", "{\"y\":1}\n"),
                (
                    "b.ndjson",
                    "{\"x\":1}\n{   \"resourceType\": \"Bundle\"  }\n"
                ),
            ]
        );
        let mut hl7 = rec(4, &nd("x"), "MSH|");
        hl7.kind.clear();
        assert!(sealed_inputs(&[&hl7], std::path::Path::new("d")).is_err());
    }
}
