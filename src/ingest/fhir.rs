//! FHIR R4: Bundle JSON and Bulk Data NDJSON into curated rows.
//!
//! Two entry points share one pipeline: [`parse_bundles`] reads whole JSON documents (a
//! Bundle of any type, nested Bundles included, or a single resource) and [`parse_ndjson`]
//! reads FHIR Bulk Data files (one resource a line). Each document or line is parsed with
//! `serde_json` (whose recursion limit keeps deeply nested input from exhausting the stack),
//! walked into its resources, and every resource is curated on its own, in parallel, with
//! the output kept in input order.
//!
//! # What becomes what
//! - Patient → `patients`; Encounter → `encounters` plus one `care_team` row per participant
//!   that references a Practitioner (valid over the participant's period, else the
//!   encounter's; a conditional `Practitioner?identifier=system|value` or logical
//!   `identifier` reference names the Practitioner of the input with that identifier, else
//!   the clinician `system|value`, which no FHIR id can equal); Observation → `observations` (one row per component, e.g. systolic and
//!   diastolic blood pressure, plus the parent when it carries a value itself); Condition →
//!   `conditions`; Procedure → `procedures`; MedicationRequest → `medications` (the code
//!   from `medicationCodeableConcept`, or from the contained or referenced Medication; a
//!   compound without a code of its own gives one row per ingredient); Consent → `consent`
//!   (below).
//! - Medication resources are read only to resolve `medicationReference` and are reported as
//!   [`Skipped`]; so are all other resource types, Bundle entries without a resource (a
//!   transaction `DELETE`) and Procedures whose status is `not-done` (they did not happen,
//!   and `procedures` lists procedures performed).
//! - Codes: the preferred system first (LOINC for observations, RxNorm for medications,
//!   ICD-10-CM then SNOMED CT for conditions), else any standard system, else the first coding
//!   that has a system. A coding without a system cannot be interpreted and is reported as
//!   `unknown_code_system` when no other coding is usable.
//! - An encounter class Ward does not recognise, or none, becomes `other` (the raw input is
//!   kept verbatim, so nothing is lost).
//!
//! # Consent
//! A `Consent` becomes one `consent` row: `consent_id` the resource id; `patient_id` from
//! `Consent.patient` (R4; `subject` of later versions also read); `scope` the code of
//! `Consent.scope` in `http://terminology.hl7.org/CodeSystem/consentscope` (`research`,
//! `treatment`, `patient-privacy`, `adr`; any other scope is a `bad_value` naming
//! `Consent.scope`, since an unread research opt-out would be a silent leak); `decision` from
//! `provision.type`, where a `deny` anywhere in the provision tree (a nested exception
//! included) makes the row `deny`, so a partial refusal is never read as a permit;
//! `period_start`/`period_end` from `provision.period`; `decided_at` from `Consent.dateTime`.
//! `status` is required: `active` is in force; `inactive` (withdrawn), `entered-in-error`,
//! `draft`, `proposed` and `rejected` are kept with `retracted_at = known_at`, so they are
//! never in force and, being the record's latest version, end an earlier active version
//! (`curated::consent` has the rule).
//!
//! # Times
//! FHIR `date`, `dateTime` and `instant` are accepted. A partial date (`2013`, `2013-03`) is
//! the first instant of the period it names; a time without an offset is read in
//! [`Context::default_offset`]. `known_at` is `meta.lastUpdated`, else the nearest enclosing
//! Bundle's `timestamp`, else [`Context::ingested_at`]. A Bundle timestamp that cannot be read
//! is reported as a bad record of the Bundle (record 0 of the file) and its entries fall back
//! to the ingestion time, which is later and therefore never leaks information early.
//!
//! # Retractions and versions
//! - A resource whose status is `entered-in-error` (for a Condition, its verificationStatus)
//!   is still emitted, with `retracted_at = known_at`: it never becomes visible to a lookup,
//!   but the table records that the source sent it.
//! - The same `ResourceType/id` appearing several times in one call is read as successive
//!   versions: all are kept, ordered by `known_at` (then `meta.versionId`, then input order),
//!   and each earlier version's rows get `retracted_at` = the next version's `known_at`.
//!
//! # References
//! `urn:uuid:` (and any other `fullUrl`) references resolve within the document that holds
//! them; in NDJSON, where there are no fullUrls, `urn:uuid:X` resolves to the resource whose
//! id is `X` anywhere in the call's input. An unresolvable `urn:` reference is a
//! `dangling_reference`. `Type/id`, absolute URLs ending in `Type/id`, and `_history`
//! versions give `id`; a `Patient/id` whose patient is not in the input is accepted (it may
//! come from another file). Contained resources (`#id`) have no identity of their own, so a
//! subject that points to one cannot name a patient (`bad_value`).
//!
//! # Bad records
//! Each resource that cannot be curated becomes one [`BadRecord`] (NDJSON: the line number;
//! Bundle: the 1-based entry index, nested Bundle entries sharing the index of their outer
//! entry; a lone resource is record 1; a document that is not JSON is record 0) with a
//! FHIRPath-like field and one of the reason codes `unparseable`, `missing_field`,
//! `bad_date`, `dangling_reference`, `bad_value`, `unknown_code_system`. A participant that
//! cannot become a `care_team` row is reported on its own; the encounter is still kept.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::error::ArrowError;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};
use rayon::prelude::*;
use serde::Deserialize;

use super::json::{Doc, Kind, Value};
use super::{clip_raw, BadRecord, Context, Input, Location, Parsed, ParsedBatches, Skipped};
use crate::curated::{
    admission_type, code_system, discharge_disposition, encounter_class, service, CareTeamMember,
    Coding, Condition, Consent, CuratedColumns, CuratedTables, Encounter, Medication, Observation,
    Patient, Procedure, RowMeta, RowSink, Table,
};

/// A hash map with a fast (not DoS-resistant) hasher, for keys taken from one input.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Parses FHIR JSON documents: each input is a Bundle (any type, nested Bundles included) or
/// a single resource.
///
/// Documents are parsed in parallel; rows, bad records and skipped records come out in input
/// order. Never fails and never panics: whatever cannot be read is reported in
/// [`Parsed::bad`].
pub fn parse_bundles(inputs: &[Input<'_>], ctx: &Context) -> Parsed {
    rows_of(bundles(inputs, ctx))
}

/// [`parse_bundles`] with each table's rows appended to Arrow column builders as they are
/// curated, without holding them as row structs: what an ingest run writes.
///
/// # Errors
/// Only an Arrow error joining the columns, which would be a bug.
pub fn parse_bundles_batches(
    inputs: &[Input<'_>],
    ctx: &Context,
) -> Result<ParsedBatches, ArrowError> {
    batches_of(bundles(inputs, ctx))
}

/// Parses FHIR Bulk Data NDJSON: one resource a line (typically one file per resource type,
/// already decompressed). The `record` of every location is the 1-based line number; blank
/// lines are not records and are passed over.
///
/// One parallel pass takes each line once, in runs of consecutive lines. A line that starts
/// with the `resourceType` of a type Ward does not curate is only checked to be valid JSON
/// (`scan_head`, without building it: Claims and EOBs are most of a Synthea export's bytes)
/// and skipped; any other line is parsed and curated at once. A resource whose curation
/// needs the rest of the input (a `urn:uuid:` reference to another line, a
/// `medicationReference` to a Medication of another line) stops its run. Only if there is
/// one, a second parallel pass reads every line's `resourceType` and `id` (and every
/// Medication's code) into an index, and the runs that stopped are made again with it. Bulk
/// exports use `Type/id` references, so the second pass is rare. Input order is kept. Never
/// fails and never panics.
pub fn parse_ndjson(inputs: &[Input<'_>], ctx: &Context) -> Parsed {
    rows_of(ndjson(inputs, ctx))
}

/// [`parse_ndjson`] with each table's rows appended to Arrow column builders as they are
/// curated, without holding them as row structs: what an ingest run writes.
///
/// # Errors
/// Only an Arrow error joining the columns, which would be a bug.
pub fn parse_ndjson_batches(
    inputs: &[Input<'_>],
    ctx: &Context,
) -> Result<ParsedBatches, ArrowError> {
    batches_of(ndjson(inputs, ctx))
}

fn bundles<S: RowSink + Default + Send>(inputs: &[Input<'_>], ctx: &Context) -> Vec<Part<S>> {
    // Synthea writes its Practitioners in a Bundle of their own, which the patients' Bundles
    // reference by identifier.
    let index = Index::of_documents(inputs);
    let mut parts: Vec<Part<S>> = inputs
        .par_iter()
        .map(|input| {
            let mut out = Vec::new();
            let bytes = strip_bom(input.bytes);
            process_document(input.name, None, bytes, &index, None, ctx, &mut out);
            let mut part = Part::default();
            out.into_iter().for_each(|o| part.take(o));
            part
        })
        .collect();
    retract_superseded(&mut parts);
    parts
}

fn ndjson<S: RowSink + Default + Send>(inputs: &[Input<'_>], ctx: &Context) -> Vec<Part<S>> {
    let per_input: Vec<Vec<Line<'_>>> = inputs
        .par_iter()
        .map(|input| {
            let bytes = strip_bom(input.bytes);
            let ends = memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len()));
            let mut start = 0;
            // Sized once: growing a list this long would copy it into fresh pages each time.
            let mut lines = Vec::with_capacity(memchr::memchr_iter(b'\n', bytes).count() + 1);
            for (i, end) in ends.enumerate() {
                let line = bytes.get(start..end).unwrap_or_default();
                start = end + 1;
                if !line.iter().all(u8::is_ascii_whitespace) {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    lines.push((input.name, i as u64 + 1, line));
                }
            }
            lines
        })
        .collect();
    let mut lines: Vec<Line<'_>> = Vec::with_capacity(per_input.iter().map(Vec::len).sum());
    per_input.into_iter().for_each(|l| lines.extend(l));
    let empty = Index::default();
    let mut parts: Vec<Part<S>> = lines
        .par_chunks(LINES_PER_TASK)
        .map(|run| Part::of_lines(run, &empty, true, ctx))
        .collect();
    if parts.iter().any(|p| p.deferred) {
        let index = Index::of_lines(&lines);
        parts
            .par_iter_mut()
            .zip(lines.par_chunks(LINES_PER_TASK))
            .filter(|(part, _)| part.deferred)
            .for_each(|(part, run)| *part = Part::of_lines(run, &index, false, ctx));
    }
    retract_superseded(&mut parts);
    parts
}

/// An NDJSON line: file, 1-based line number, bytes.
type Line<'a> = (&'a str, u64, &'a [u8]);

/// Lines per task of the NDJSON pass: enough to amortize a task, few enough to balance.
const LINES_PER_TASK: usize = 1024;

/// The parts' rows as row structs, with their bad and skipped records, in input order.
fn rows_of(parts: Vec<Part<CuratedTables>>) -> Parsed {
    let (tables, bad, skipped) = split(parts);
    Parsed {
        tables: CuratedTables::concat(tables),
        bad,
        skipped,
    }
}

/// The parts' rows as one record batch per table, with their bad and skipped records.
fn batches_of(parts: Vec<Part<CuratedColumns>>) -> Result<ParsedBatches, ArrowError> {
    let (columns, bad, skipped) = split(parts);
    Ok(ParsedBatches {
        batches: CuratedColumns::concat(columns)?,
        bad,
        skipped,
    })
}

fn split<S>(parts: Vec<Part<S>>) -> (Vec<S>, Vec<BadRecord>, Vec<Skipped>) {
    let mut bad = Vec::with_capacity(parts.iter().map(|p| p.bad.len()).sum());
    let mut skipped = Vec::with_capacity(parts.iter().map(|p| p.skipped.len()).sum());
    let mut rows = Vec::with_capacity(parts.len());
    for p in parts {
        bad.extend(p.bad);
        skipped.extend(p.skipped);
        rows.push(p.rows);
    }
    (rows, bad, skipped)
}

/// What a run of input (a document, or a run of NDJSON lines) became, in input order.
struct Part<S> {
    rows: S,
    bad: Vec<BadRecord>,
    skipped: Vec<Skipped>,
    /// The resource versions with an id among the rows, for the version pass.
    versions: Vec<Version>,
    /// Set when a line of the run needed the index of the whole input: the run is to be made
    /// again with it (and is incomplete until then).
    deferred: bool,
}

impl<S: Default> Default for Part<S> {
    fn default() -> Self {
        Part {
            rows: S::default(),
            bad: Vec::new(),
            skipped: Vec::new(),
            versions: Vec::new(),
            deferred: false,
        }
    }
}

/// A curated resource version with an id, and where its rows are in its [`Part`].
struct Version {
    /// Of `key`, so that the version pass sorts numbers rather than strings.
    hash: u64,
    /// `(table, id)`: versions of one resource share it.
    key: (Table, String),
    version: Option<u64>,
    known_at: DateTime<Utc>,
    /// Its rows of `key.0`.
    rows: Range<usize>,
    /// Its `care_team` rows (an encounter's participants).
    team: Range<usize>,
}

impl<S: RowSink + Default> Part<S> {
    /// Takes the lines of a run. With `first_pass`, the index is not the input's yet, and the
    /// run stops at the first line that needs it (setting `deferred`).
    fn of_lines(run: &[Line<'_>], index: &Index<'_>, first_pass: bool, ctx: &Context) -> Self {
        let mut part = Part::<S>::default();
        // A run is mostly lines of one file, i.e. of one resource type: about a row a line.
        part.rows.expect_rows(run.len());
        let mut out = Vec::new();
        let pending = AtomicBool::new(false);
        let pending = first_pass.then_some(&pending);
        for &(file, line_no, bytes) in run {
            if part.line(file, line_no, bytes, index, pending, ctx, &mut out) {
                part.deferred = true;
                break;
            }
        }
        part
    }

    /// Takes one NDJSON line (`out` is scratch space); true when it needs the index.
    #[allow(clippy::too_many_arguments)]
    fn line(
        &mut self,
        file: &str,
        line_no: u64,
        bytes: &[u8],
        index: &Index<'_>,
        pending: Option<&AtomicBool>,
        ctx: &Context,
        out: &mut Vec<Outcome>,
    ) -> bool {
        let curated_or_bundle = |t: &str| CURATED.contains(&t) || t == "Bundle";
        // A line whose first member is not `resourceType` is parsed whole: in an export
        // of the curated types that is the cheaper guess.
        if peek_type(bytes).is_some_and(|t| !curated_or_bundle(t)) {
            // Another type: read the two members (and check the line) without building it.
            let head = scan_head(bytes).or_else(|| serde_json::from_slice(bytes).ok());
            // A line the scanner accepted, or one serde read `IdOnly` from, is one JSON object.
            if let Some(IdOnly {
                resource_type: Some(rtype),
                ..
            }) = head
            {
                if !curated_or_bundle(&rtype) {
                    self.skipped.push(Skipped {
                        location: Location {
                            file: file.to_string(),
                            record: line_no,
                        },
                        what: rtype.into_owned(),
                    });
                    return false;
                }
            }
        }
        out.clear();
        process_document(file, Some(line_no), bytes, index, pending, ctx, out);
        if pending.is_some_and(|p| p.load(Ordering::Relaxed)) {
            return true;
        }
        out.drain(..).for_each(|o| self.take(o));
        false
    }

    /// Appends what one resource became.
    fn take(&mut self, o: Outcome) {
        self.bad.extend(o.bad);
        self.skipped.extend(o.skipped);
        let Some(c) = o.curated else { return };
        let table = c.rows.table();
        let (start, team) = (self.rows.rows(table), self.rows.rows(Table::CareTeam));
        c.rows.into_sink(&mut self.rows);
        if let Some(key) = c.key {
            self.versions.push(Version {
                hash: foldhash::fast::FixedState::default().hash_one(&key),
                key,
                version: c.version,
                known_at: c.known_at,
                rows: start..self.rows.rows(table),
                team: team..self.rows.rows(Table::CareTeam),
            });
        }
    }
}

/// The `resourceType` of a line whose first member it is, without escapes: Bulk exports
/// write it first. Only a guess at the type, to route the line; what counts is read later.
fn peek_type(b: &[u8]) -> Option<&str> {
    use scan::ws;
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    let key = b"\"resourceType\"";
    if b.get(i..i + key.len())? != key {
        return None;
    }
    i = ws(b, i + key.len());
    if b.get(i) != Some(&b':') {
        return None;
    }
    i = ws(b, i + 1);
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let rest = b.get(i + 1..)?;
    let end = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
    std::str::from_utf8(rest.get(..end)?).ok()
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

// ---------------------------------------------------------------------------------------
// Outcomes and assembly
// ---------------------------------------------------------------------------------------

/// Why a resource (or one of its parts) could not be curated.
#[derive(Debug, Clone, PartialEq)]
struct Fault {
    field: String,
    reason: &'static str,
    detail: String,
}

impl Fault {
    fn new(field: impl Into<String>, reason: &'static str, detail: impl Into<String>) -> Self {
        Fault {
            field: field.into(),
            reason,
            detail: detail.into(),
        }
    }

    fn missing(field: impl Into<String>) -> Self {
        let field = field.into();
        let detail = format!("{field} is required and absent");
        Fault::new(field, "missing_field", detail)
    }
}

type Fx<T> = Result<T, Fault>;

/// The rows one resource version produced. The single rows are boxed, so that an outcome
/// (one per resource) stays small.
#[derive(Debug)]
enum Rows {
    Patient(Box<Patient>),
    Encounter(Box<Encounter>, Vec<CareTeamMember>),
    Observations(Vec<Observation>),
    Condition(Box<Condition>),
    Procedure(Box<Procedure>),
    Medications(Vec<Medication>),
    Consent(Box<Consent>),
}

impl Rows {
    /// The table of the resource's own rows.
    fn table(&self) -> Table {
        match self {
            Rows::Patient(_) => Table::Patients,
            Rows::Encounter(..) => Table::Encounters,
            Rows::Observations(_) => Table::Observations,
            Rows::Condition(_) => Table::Conditions,
            Rows::Procedure(_) => Table::Procedures,
            Rows::Medications(_) => Table::Medications,
            Rows::Consent(_) => Table::Consent,
        }
    }

    fn into_sink(self, sink: &mut impl RowSink) {
        match self {
            Rows::Patient(r) => sink.patient(*r),
            Rows::Encounter(r, team) => {
                sink.encounter(*r);
                team.into_iter().for_each(|m| sink.care_team(m));
            }
            Rows::Observations(rows) => rows.into_iter().for_each(|r| sink.observation(r)),
            Rows::Condition(r) => sink.condition(*r),
            Rows::Procedure(r) => sink.procedure(*r),
            Rows::Medications(rows) => rows.into_iter().for_each(|r| sink.medication(r)),
            Rows::Consent(r) => sink.consent(*r),
        }
    }
}

/// A curated resource version, with what the version pass needs.
#[derive(Debug)]
struct Curated {
    /// `(table, id)`: versions of one resource share it. `None` when the resource has no id.
    key: Option<(Table, String)>,
    version: Option<u64>,
    known_at: DateTime<Utc>,
    rows: Rows,
}

/// What one resource (or one unreadable document) became.
#[derive(Debug, Default)]
struct Outcome {
    curated: Option<Curated>,
    bad: Vec<BadRecord>,
    skipped: Option<Skipped>,
}

/// Sets `retracted_at` of every resource version that a later version of the same
/// `ResourceType/id` supersedes: the rows of each earlier version get the next version's
/// `known_at`. Versions are ordered by `known_at`, then `meta.versionId`, then input order.
/// `parts` are in input order.
fn retract_superseded<S: RowSink + Send>(parts: &mut [Part<S>]) {
    // Most resources have one version: a parallel sort of the keys' hashes brings the
    // versions of a resource together (in input order) without a map of every key.
    type At = (usize, usize);
    let mut all: Vec<(u64, At)> = Vec::with_capacity(parts.iter().map(|p| p.versions.len()).sum());
    for (p, part) in parts.iter().enumerate() {
        all.extend(
            part.versions
                .iter()
                .enumerate()
                .map(|(i, v)| (v.hash, (p, i))),
        );
    }
    all.par_sort_unstable();
    let version = |at: &At| parts.get(at.0).and_then(|p| p.versions.get(at.1));
    let mut retractions: Vec<(At, DateTime<Utc>)> = Vec::new();
    for same_hash in all.chunk_by(|a, b| a.0 == b.0).filter(|run| run.len() > 1) {
        let mut rest: Vec<At> = same_hash.iter().map(|(_, at)| *at).collect();
        // Split by key: different keys can share a hash.
        while let Some(first) = rest.first() {
            let key = version(first).map(|v| &v.key);
            let (mut members, others): (Vec<At>, Vec<At>) = std::mem::take(&mut rest)
                .into_iter()
                .partition(|at| version(at).map(|v| &v.key) == key);
            members.sort_by_key(|at| {
                let v = version(at);
                (v.map(|v| v.known_at), v.and_then(|v| v.version), *at)
            });
            for pair in members.windows(2) {
                if let [earlier, later] = pair {
                    if let Some(v) = version(later) {
                        retractions.push((*earlier, v.known_at));
                    }
                }
            }
            rest = others;
        }
    }
    for ((p, i), at) in retractions {
        let Some(part) = parts.get_mut(p) else {
            continue;
        };
        let Some(v) = part.versions.get(i) else {
            continue;
        };
        let (table, rows, team) = (v.key.0, v.rows.clone(), v.team.clone());
        rows.for_each(|row| part.rows.retract(table, row, at));
        team.for_each(|row| part.rows.retract(Table::CareTeam, row, at));
    }
}

// ---------------------------------------------------------------------------------------
// Documents, walking and indexes
// ---------------------------------------------------------------------------------------

/// The raw text of a record, kept borrowed until a bad record needs it.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Bytes(&'a [u8]),
    Json(Value<'a>),
}

impl Raw<'_> {
    fn text(self) -> String {
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
struct Unit<'a> {
    file: &'a str,
    record: u64,
    res: Value<'a>,
    raw: Raw<'a>,
    full_url: Option<&'a str>,
    bundle_ts: Option<DateTime<Utc>>,
}

impl Unit<'_> {
    fn location(&self) -> Location {
        Location {
            file: self.file.to_string(),
            record: self.record,
        }
    }

    fn bad(&self, table: Option<Table>, f: Fault) -> BadRecord {
        BadRecord {
            location: self.location(),
            table,
            field: Some(f.field),
            reason: f.reason.to_string(),
            detail: f.detail,
            raw: self.raw.text(),
        }
    }

    fn skipped(&self, what: impl Into<String>) -> Outcome {
        Outcome {
            skipped: Some(Skipped {
                location: self.location(),
                what: what.into(),
            }),
            ..Outcome::default()
        }
    }
}

/// A resource a reference can point to.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Target<'a> {
    rtype: &'a str,
    id: &'a str,
}

/// What the whole call's input offers for resolving references: in NDJSON, the type of
/// every id (for `urn:uuid:`) and the code of every Medication.
#[derive(Default)]
struct Index<'a> {
    ids: Option<FastMap<Cow<'a, str>, Cow<'a, str>>>,
    meds: HashMap<String, Fx<DrugCodes>>,
    /// The id of each Practitioner by its identifiers ([`identifier_key`]), for conditional
    /// and logical references.
    idents: HashMap<String, String>,
}

/// The two fields read of an NDJSON line of a type Ward does not curate; everything else is
/// skipped unparsed.
#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
}

/// `resourceType` and `id` of a line that is one valid JSON object, found in a single pass
/// that checks the whole line against the JSON grammar (strings and their escapes, numbers,
/// literals, nesting up to [`scan::MAX_DEPTH`]) without building anything: a line this
/// accepts is one serde_json accepts too (like serde_json skipping a value, it does not
/// check the UTF-8 of strings it only skips; the two it reads must be UTF-8), so a line of a
/// type Ward does not curate can be skipped on this pass alone. `None` when the line is not
/// that, or when one of the two strings has an escape or is not a string: the caller then
/// asks serde, whose answer (and error message) counts.
fn scan_head(b: &[u8]) -> Option<IdOnly<'_>> {
    use scan::{string, value, ws};
    let text = |from: usize, to: usize| std::str::from_utf8(b.get(from..to)?).ok();
    let mut head = IdOnly {
        resource_type: None,
        id: None,
    };
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (ws(b, i + 1) == b.len()).then_some(head);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (key_end, key_escaped) = string(b, i)?;
        let key = b.get(i + 1..key_end - 1)?;
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, i + 1);
        let wanted = !key_escaped && (key == b"resourceType" || key == b"id");
        if wanted {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (end, escaped) = string(b, i)?;
            if escaped {
                return None;
            }
            let value = Cow::Borrowed(text(i + 1, end - 1)?);
            if key == b"id" {
                head.id = Some(value);
            } else {
                head.resource_type = Some(value);
            }
            i = end;
        } else {
            i = value(b, i, 1)?;
        }
        i = ws(b, i);
        match b.get(i)? {
            b',' => i = ws(b, i + 1),
            b'}' => return (ws(b, i + 1) == b.len()).then_some(head),
            _ => return None,
        }
    }
}

/// A JSON validator that builds nothing: each function takes the position of a token's
/// first byte and gives the position past it, or `None` for text that is not JSON.
/// Stricter than serde_json where the two differ (nesting depth), never looser.
mod scan {
    /// Containers nested deeper than this are refused (serde_json's limit is 128).
    pub(super) const MAX_DEPTH: usize = 100;

    /// Past JSON whitespace (space, tab, LF, CR; not form feed, which JSON does not allow).
    pub(super) fn ws(b: &[u8], mut i: usize) -> usize {
        while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    }

    /// From an opening quote: past the closing quote, and whether the string had escapes.
    /// Control characters and unknown escapes are refused.
    pub(super) fn string(b: &[u8], i: usize) -> Option<(usize, bool)> {
        let mut j = i + 1;
        let mut escaped = false;
        loop {
            match *b.get(j)? {
                b'"' => return Some((j + 1, escaped)),
                b'\\' => {
                    escaped = true;
                    match *b.get(j + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                        b'u' if b.get(j + 2..j + 6)?.iter().all(u8::is_ascii_hexdigit) => j += 6,
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => j += 1,
            }
        }
    }

    fn digits(b: &[u8], mut i: usize) -> usize {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(b: &[u8], mut i: usize) -> Option<usize> {
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        i = match *b.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => digits(b, i + 1),
            _ => return None,
        };
        if b.get(i) == Some(&b'.') {
            let end = digits(b, i + 1);
            if end == i + 1 {
                return None;
            }
            i = end;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let end = digits(b, i);
            if end == i {
                return None;
            }
            i = end;
        }
        Some(i)
    }

    /// Past one value starting at `i`, inside `depth` containers.
    pub(super) fn value(b: &[u8], i: usize, depth: usize) -> Option<usize> {
        let literal = |word: &[u8]| {
            b.get(i..i + word.len())
                .filter(|w| *w == word)
                .map(|w| i + w.len())
        };
        match *b.get(i)? {
            b'"' => string(b, i).map(|(end, _)| end),
            b'{' if depth < MAX_DEPTH => {
                let mut j = ws(b, i + 1);
                if b.get(j) == Some(&b'}') {
                    return Some(j + 1);
                }
                loop {
                    if b.get(j) != Some(&b'"') {
                        return None;
                    }
                    j = ws(b, string(b, j)?.0);
                    if b.get(j) != Some(&b':') {
                        return None;
                    }
                    j = ws(b, value(b, ws(b, j + 1), depth + 1)?);
                    match *b.get(j)? {
                        b',' => j = ws(b, j + 1),
                        b'}' => return Some(j + 1),
                        _ => return None,
                    }
                }
            }
            b'[' if depth < MAX_DEPTH => {
                let mut j = ws(b, i + 1);
                if b.get(j) == Some(&b']') {
                    return Some(j + 1);
                }
                loop {
                    j = ws(b, value(b, j, depth + 1)?);
                    match *b.get(j)? {
                        b',' => j = ws(b, j + 1),
                        b']' => return Some(j + 1),
                        _ => return None,
                    }
                }
            }
            b't' => literal(b"true"),
            b'f' => literal(b"false"),
            b'n' => literal(b"null"),
            b'-' | b'0'..=b'9' => number(b, i),
            _ => None,
        }
    }
}

/// The resource types that feed curated tables (Medication only helps resolve orders).
const CURATED: [&str; 7] = [
    "Patient",
    "Consent",
    "Encounter",
    "Observation",
    "Condition",
    "Procedure",
    "MedicationRequest",
];

impl<'a> Index<'a> {
    /// The index of NDJSON lines, read in parallel without building them (but for
    /// Medications): the first line with an id gives its type, the last Medication with an
    /// id gives its code. Lines that are not JSON objects with both are left out.
    fn of_lines(lines: &[(&'a str, u64, &'a [u8])]) -> Self {
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
    fn of_documents(inputs: &[Input<'_>]) -> Self {
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
fn identifier_key(rtype: &str, system: &str, value: &str) -> String {
    format!("{rtype}\n{system}|{value}")
}

/// The keys of a resource's identifiers that have both a system and a value.
fn identifier_keys(res: Value<'_>, rtype: &str) -> Vec<String> {
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
fn practitioner_keys(
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
fn conditional_reference(reference: &str) -> Option<Result<(&str, String, String), String>> {
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
fn percent_decode(s: &str) -> String {
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

/// The drug codes of a Medication: its `code`, or, for a compound without one (a mixture
/// prepared by the pharmacy), the code of each ingredient.
type DrugCodes = Vec<Coding>;

fn medication_code(med: Value<'_>) -> Fx<DrugCodes> {
    let prefer = [code_system::RXNORM];
    if let Some(code) = med.get("code") {
        return pick_coding(code, "Medication.code", &prefer).map(|c| vec![c]);
    }
    let ingredients = med.get("ingredient").and_then(Value::as_array);
    let codes: Vec<Coding> = ingredients
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("itemCodeableConcept"))
        .map(|cc| pick_coding(cc, "Medication.ingredient.itemCodeableConcept", &prefer))
        .collect::<Fx<_>>()?;
    if codes.is_empty() {
        return Err(Fault::missing("Medication.code"));
    }
    Ok(codes)
}

/// Collects the units of one document and the fullUrls it defines.
struct Walker<'a> {
    file: &'a str,
    /// The zone of Bundle timestamps without an offset.
    offset: FixedOffset,
    steps: Vec<Step<'a>>,
    urls: HashMap<&'a str, Target<'a>>,
    meds: HashMap<&'a str, Fx<DrugCodes>>,
    /// The id of each Practitioner of the document by its identifiers.
    idents: HashMap<String, &'a str>,
}

/// A resource still to curate, or a record of the document already settled (a bad Bundle
/// field, an entry without a resource): rare, hence boxed.
enum Step<'a> {
    Unit(Unit<'a>),
    Done(Box<Outcome>),
}

impl<'a> Walker<'a> {
    fn file_bad(&mut self, record: u64, f: Fault, raw: Raw<'a>) {
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

    fn resource(&mut self, unit: Unit<'a>) {
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
    fn bundle(&mut self, bundle: Value<'a>, record: Option<u64>, ts: Option<DateTime<Utc>>) {
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
fn process_document<'a>(
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

// ---------------------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------------------

/// What a reference points to.
#[derive(Debug, PartialEq)]
enum Ref<'a> {
    To(Target<'a>),
    /// A `urn:` reference nothing in scope defines.
    Dangling,
    /// `#id`: a contained resource.
    Contained(&'a str),
    /// Not of the form `[base/]Type/id[/_history/v]`.
    Unparseable,
}

struct Resolver<'r, 'a> {
    urls: &'r HashMap<&'a str, Target<'a>>,
    meds: &'r HashMap<&'a str, Fx<DrugCodes>>,
    /// The document's Practitioners by identifier.
    idents: &'r HashMap<String, &'a str>,
    index: &'r Index<'r>,
    /// Set when `index` is not the input's yet and a lookup needed it.
    pending: Option<&'r AtomicBool>,
}

impl<'r> Resolver<'r, '_> {
    fn resolve<'s>(&'s self, reference: &'s str) -> Ref<'s>
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
    fn by_identifier(&self, rtype: &str, system: &str, value: &str) -> Option<&str> {
        let key = identifier_key(rtype, system, value);
        if let Some(id) = self.idents.get(&key) {
            return Some(id);
        }
        if let Some(p) = self.pending {
            p.store(true, Ordering::Relaxed);
        }
        self.index.idents.get(&key).map(String::as_str)
    }

    fn medication(&self, id: &str) -> Option<&Fx<DrugCodes>> {
        self.meds.get(id).or_else(|| {
            if let Some(p) = self.pending {
                p.store(true, Ordering::Relaxed);
            }
            self.index.meds.get(id)
        })
    }
}

/// `Type/id`, `base/Type/id` or `.../Type/id/_history/v` → `(Type, id)`.
fn literal_reference(reference: &str) -> Option<Target<'_>> {
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
const ID_BYTE: [bool; 256] = {
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
fn resource_id<'a>(res: Value<'a>, full_url: Option<&'a str>) -> Option<&'a str> {
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
fn patient_ref(res: Value<'_>, rtype: &str, rz: &Resolver<'_, '_>) -> Fx<String> {
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
fn encounter_ref(res: Value<'_>, rtype: &str, rz: &Resolver<'_, '_>) -> Fx<Option<String>> {
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

// ---------------------------------------------------------------------------------------
// Curation
// ---------------------------------------------------------------------------------------

/// Curates one resource into its rows, or reports it.
fn curate(u: &Unit<'_>, rz: &Resolver<'_, '_>, ctx: &Context) -> Outcome {
    let Some(rtype) = u.res.get("resourceType").and_then(Value::as_str) else {
        let f = Fault::new(
            "resourceType",
            "missing_field",
            "not a FHIR resource: no resourceType",
        );
        return Outcome {
            bad: vec![u.bad(None, f)],
            ..Outcome::default()
        };
    };
    let (table, extract): (Table, Extract) = match rtype {
        "Patient" => (Table::Patients, |res, head, _, ctx, _| {
            patient(res, head, ctx).map(|r| Rows::Patient(Box::new(r)))
        }),
        "Encounter" => (Table::Encounters, encounter),
        "Observation" => (Table::Observations, |res, head, rz, ctx, _| {
            observation(res, head, rz, ctx).map(Rows::Observations)
        }),
        "Condition" => (Table::Conditions, |res, head, rz, ctx, _| {
            condition(res, head, rz, ctx).map(|r| Rows::Condition(Box::new(r)))
        }),
        "Procedure" => (Table::Procedures, |res, head, rz, ctx, _| {
            procedure(res, head, rz, ctx).map(|r| Rows::Procedure(Box::new(r)))
        }),
        "MedicationRequest" => (Table::Medications, |res, head, rz, ctx, _| {
            medication(res, head, rz, ctx).map(Rows::Medications)
        }),
        "Consent" => (Table::Consent, |res, head, rz, ctx, _| {
            consent(res, head, rz, ctx).map(|r| Rows::Consent(Box::new(r)))
        }),
        _ => return u.skipped(rtype),
    };
    if table == Table::Procedures && u.res.get("status").and_then(Value::as_str) == Some("not-done")
    {
        return u.skipped("Procedure (status not-done)");
    }
    let result = Head::read(u, rtype, table, ctx).and_then(|head| {
        let mut extra = Vec::new();
        let rows = extract(u.res, &head, rz, ctx, &mut extra)?;
        Ok((head, rows, extra))
    });
    match result {
        Ok((head, rows, extra)) => Outcome {
            curated: Some(Curated {
                key: head.id.map(|id| (table, id)),
                version: head.version,
                known_at: head.meta.known_at,
                rows,
            }),
            bad: extra
                .into_iter()
                .map(|f| u.bad(Some(Table::CareTeam), f))
                .collect(),
            skipped: None,
        },
        Err(f) => Outcome {
            bad: vec![u.bad(Some(table), f)],
            ..Outcome::default()
        },
    }
}

/// Curates one resource type; the last argument collects faults of parts that do not sink
/// the whole resource (an encounter participant).
type Extract = fn(Value<'_>, &Head, &Resolver<'_, '_>, &Context, &mut Vec<Fault>) -> Fx<Rows>;

/// What every resource contributes regardless of type.
struct Head {
    /// The resource id (or fullUrl uuid); `None` when the resource has neither.
    id: Option<String>,
    /// The id written into the row: `id`, else `file:record`.
    row_id: String,
    version: Option<u64>,
    /// Provenance and knowledge time; `retracted_at` set for `entered-in-error`.
    meta: RowMeta,
}

impl Head {
    fn read(u: &Unit<'_>, rtype: &str, table: Table, ctx: &Context) -> Fx<Head> {
        let id = resource_id(u.res, u.full_url).map(str::to_string);
        let source_id = match (u.res.get("id").and_then(Value::as_str), u.full_url) {
            (Some(id), _) if !id.is_empty() => format!("{rtype}/{id}"),
            (_, Some(url)) => url.to_string(),
            _ => format!("{}:{}", u.file, u.record),
        };
        let row_id = id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", u.file, u.record));
        let meta = u.res.get("meta");
        let last_updated = match meta {
            Some(m) => time(m, "lastUpdated", &[rtype, "meta"], ctx)?,
            None => None,
        };
        let known_at = last_updated.or(u.bundle_ts).unwrap_or(ctx.ingested_at);
        let source_system = meta
            .and_then(|m| m.get("source"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(u.file)
            .to_string();
        let version = meta
            .and_then(|m| m.get("versionId"))
            .and_then(Value::as_str)
            .and_then(|v| v.parse().ok());
        let retracted = match table {
            Table::Conditions => {
                codes(u.res.get("verificationStatus")).any(|c| c == "entered-in-error")
            }
            // Only an active consent is in force (`consent` checks the status is one R4 has).
            Table::Consent => u.res.get("status").and_then(Value::as_str) != Some("active"),
            _ => u.res.get("status").and_then(Value::as_str) == Some("entered-in-error"),
        };
        Ok(Head {
            id,
            row_id,
            version,
            meta: RowMeta {
                source_system,
                source_id,
                known_at,
                retracted_at: retracted.then_some(known_at),
            },
        })
    }
}

fn patient(res: Value<'_>, head: &Head, ctx: &Context) -> Fx<Patient> {
    let Some(patient_id) = head.id.clone() else {
        return Err(Fault::missing("Patient.id"));
    };
    let birth_date = match res.get("birthDate").map(Value::kind) {
        None | Some(Kind::Null) => None,
        Some(Kind::String(s)) => Some(parse_date(s).ok_or_else(|| {
            Fault::new(
                "Patient.birthDate",
                "bad_date",
                format!("{s:?} is not a FHIR date"),
            )
        })?),
        Some(_) => return Err(Fault::new("Patient.birthDate", "bad_date", "not a string")),
    };
    let death_time = time(res, "deceasedDateTime", &["Patient"], ctx)?;
    let address = preferred(res.get("address"), "home");
    let name = preferred(res.get("name"), "official");
    let given = name
        .and_then(|n| n.get("given"))
        .and_then(Value::as_array)
        .map(|g| g.filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
        .filter(|g| !g.is_empty());
    let family = name.and_then(|n| match n.get("family").map(Value::kind) {
        Some(Kind::String(s)) => Some(s.to_string()),
        // DSTU2 wrote family as a list of strings.
        Some(Kind::Array(parts)) => {
            let joined: Vec<&str> = parts.filter_map(Value::as_str).collect();
            (!joined.is_empty()).then(|| joined.join(" "))
        }
        _ => None,
    });
    Ok(Patient {
        patient_id,
        birth_date,
        sex: string(res, "gender"),
        death_time,
        zip: address.and_then(|a| string(a, "postalCode")),
        given_name: given,
        family_name: family,
        meta: head.meta.clone(),
    })
}

fn encounter(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
    extra: &mut Vec<Fault>,
) -> Fx<Rows> {
    let patient_id = patient_ref(res, "Encounter", rz)?;
    let period = res.get("period");
    let admit_time = match period {
        Some(p) => time(p, "start", &["Encounter.period"], ctx)?,
        None => None,
    }
    .ok_or_else(|| Fault::missing("Encounter.period.start"))?;
    let discharge_time = match period {
        Some(p) => time(p, "end", &["Encounter.period"], ctx)?,
        None => None,
    };
    // R4 `class` is a Coding; R5 made it a list of CodeableConcepts.
    let class = res.get("class");
    let class_code = match class.map(Value::kind) {
        Some(Kind::Array(mut list)) => list
            .next()
            .and_then(|cc| cc.get("coding"))
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("code"))
            .and_then(Value::as_str),
        Some(_) => class.and_then(|c| c.get("code")).and_then(Value::as_str),
        None => None,
    };
    let class = class_code
        .and_then(encounter_class::normalize)
        .unwrap_or(encounter_class::OTHER);
    let hosp = res.get("hospitalization");
    let admission = admission_kind(res.get("priority"))
        .or_else(|| admission_kind(hosp.and_then(|h| h.get("admitSource"))));
    // Dispositions into the curated vocabulary (the discharge-disposition codes; UB-04
    // codes and common words mapped); anything else kept as written.
    let disposition = hosp
        .and_then(|h| h.get("dischargeDisposition"))
        .and_then(|cc| first_code(cc).or_else(|| string(cc, "text")))
        .map(|d| discharge_disposition::normalize(&d).map_or(d, str::to_string));
    // A v2 table 0069 coding gives the curated word (`MED` → `medicine`); otherwise the
    // concept's text, else a coding's display or code.
    let service = res.get("serviceType").and_then(|cc| {
        codings(cc)
            .find_map(|c| {
                let from_0069 = string(c, "system").is_some_and(|s| s.ends_with("/v2-0069"));
                from_0069
                    .then(|| string(c, "code"))
                    .flatten()
                    .and_then(|code| service::from_hl7_0069(&code))
                    .map(str::to_string)
            })
            .or_else(|| string(cc, "text"))
            .or_else(|| {
                codings(cc).find_map(|c| string(c, "display").or_else(|| string(c, "code")))
            })
    });
    let code = res
        .get("type")
        .and_then(|t| t.get(0))
        .and_then(|cc| pick_coding(cc, "Encounter.type", &[]).ok());
    let encounter_id = head.row_id.clone();

    let mut team = Vec::new();
    let participants = res.get("participant").and_then(Value::as_array);
    for (i, p) in participants.into_iter().flatten().enumerate() {
        let field = || format!("Encounter.participant[{i}].individual");
        let individual = p.get("individual");
        let reference = individual
            .and_then(|x| x.get("reference"))
            .and_then(Value::as_str);
        let clinician: String = match reference {
            // A logical reference: `Reference.identifier` (and perhaps `type`) alone.
            None => match individual.map(logical_practitioner) {
                None | Some(Ok(None)) => continue,
                Some(Ok(Some((system, value)))) => clinician_of(rz, system, value),
                Some(Err(detail)) => {
                    let f = format!("{}.identifier", field());
                    extra.push(Fault::new(f, "bad_value", detail));
                    continue;
                }
            },
            Some(reference) => match conditional_reference(reference) {
                Some(Ok(("Practitioner", system, value))) => clinician_of(rz, &system, &value),
                // RelatedPerson, PractitionerRole: not a clinician Ward authenticates.
                Some(Ok(_)) => continue,
                Some(Err(detail)) => {
                    extra.push(Fault::new(field(), "bad_value", detail));
                    continue;
                }
                None => match rz.resolve(reference) {
                    Ref::To(Target {
                        rtype: "Practitioner",
                        id,
                    }) => id.to_string(),
                    // RelatedPerson, PractitionerRole: not a clinician Ward authenticates.
                    Ref::To(_) => continue,
                    Ref::Dangling => {
                        let detail = format!("{reference:?} resolves to nothing in the input");
                        extra.push(Fault::new(field(), "dangling_reference", detail));
                        continue;
                    }
                    Ref::Contained(_) | Ref::Unparseable => {
                        let detail = format!("{reference:?} does not name a Practitioner");
                        extra.push(Fault::new(field(), "bad_value", detail));
                        continue;
                    }
                },
            },
        };
        let pp = p.get("period");
        let bounds = pp.map_or(Ok((None, None)), |pp| {
            let path = format!("Encounter.participant[{i}].period");
            let from = time(pp, "start", &[&path], ctx)?;
            let to = time(pp, "end", &[&path], ctx)?;
            Ok((from, to))
        });
        let (from, to) = match bounds {
            Ok(b) => b,
            Err(f) => {
                extra.push(f);
                continue;
            }
        };
        let role = p
            .get("type")
            .and_then(|t| t.get(0))
            .and_then(first_code)
            .map(|c| participant_role(&c));
        team.push(CareTeamMember {
            patient_id: patient_id.clone(),
            clinician_id: clinician,
            role,
            valid_from: from.unwrap_or(admit_time),
            valid_to: if from.is_some() || to.is_some() {
                to
            } else {
                discharge_time
            },
            meta: head.meta.clone(),
        });
    }
    Ok(Rows::Encounter(
        Box::new(Encounter {
            encounter_id,
            patient_id,
            class: class.to_string(),
            admit_time,
            discharge_time,
            admission_type: admission.map(str::to_string),
            discharge_disposition: disposition,
            service,
            code,
            meta: head.meta.clone(),
        }),
        team,
    ))
}

/// The `(system, value)` of a logical reference (`Reference.identifier`, no `reference`) to
/// a Practitioner: `None` when there is no identifier or `Reference.type` names another
/// type; an error (its detail) when the identifier lacks a system or a value. Without a
/// `type`, an `Encounter.participant.individual` identifier is read as a Practitioner's.
fn logical_practitioner(individual: Value<'_>) -> Result<Option<(&str, &str)>, String> {
    let Some(ident) = individual.get("identifier") else {
        return Ok(None);
    };
    let rtype = individual.get("type").and_then(Value::as_str);
    if rtype.is_some_and(|t| t.rsplit('/').next() != Some("Practitioner")) {
        return Ok(None);
    }
    let system = ident.get("system").and_then(Value::as_str).map(str::trim);
    let value = ident.get("value").and_then(Value::as_str).map(str::trim);
    match (system, value) {
        (Some(s), Some(v)) if !s.is_empty() && !v.is_empty() => Ok(Some((s, v))),
        _ => Err(
            "a logical reference needs an identifier with both a system and a value: \
                  a value alone could be read as another clinician's id"
                .to_string(),
        ),
    }
}

/// The clinician id of the Practitioner with the identifier `system|value`: the id of the
/// Practitioner of the input that has it, else `system|value` itself, which can never be a
/// FHIR id (an id has no `|`), so it never names another clinician.
fn clinician_of(rz: &Resolver<'_, '_>, system: &str, value: &str) -> String {
    rz.by_identifier("Practitioner", system, value)
        .map_or_else(|| format!("{system}|{value}"), str::to_string)
}

/// Admission type from `priority` (v3 ActPriority) or `hospitalization.admitSource`.
fn admission_kind(cc: Option<Value<'_>>) -> Option<&'static str> {
    let cc = cc?;
    codings(cc)
        .find_map(|c| {
            let code = c.get("code").and_then(Value::as_str);
            // admitSource "emd": from the accident and emergency department.
            let code = if code == Some("emd") {
                Some("emergency")
            } else {
                code
            };
            code.and_then(admission_type::normalize).or_else(|| {
                c.get("display")
                    .and_then(Value::as_str)
                    .and_then(admission_type::normalize)
            })
        })
        .or_else(|| {
            cc.get("text")
                .and_then(Value::as_str)
                .and_then(admission_type::normalize)
        })
}

/// v3 ParticipationType codes as the words `care_team.role` uses.
fn participant_role(code: &str) -> String {
    match code {
        "ATND" => "attending",
        "ADM" => "admitting",
        "DIS" => "discharger",
        "CON" => "consultant",
        "REF" => "referrer",
        "PPRF" => "primary",
        "SPRF" => "secondary",
        "PART" => "participant",
        "translator" => "translator",
        "emergency" => "emergency",
        other => other,
    }
    .to_string()
}

fn observation(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
) -> Fx<Vec<Observation>> {
    let patient_id = patient_ref(res, "Observation", rz)?;
    let encounter_id = encounter_ref(res, "Observation", rz)?;
    let code_cc = res
        .get("code")
        .ok_or_else(|| Fault::missing("Observation.code"))?;
    let code = pick_coding(code_cc, "Observation.code", &[code_system::LOINC])?;
    let effective = match time(res, "effectiveDateTime", &["Observation"], ctx)? {
        Some(t) => Some(t),
        None => match res.get("effectivePeriod") {
            Some(p) => time(p, "start", &["Observation.effectivePeriod"], ctx)?,
            None => None,
        },
    };
    let effective = match effective {
        Some(t) => Some(t),
        None => time(res, "effectiveInstant", &["Observation"], ctx)?,
    };
    let effective_time = match effective {
        Some(t) => t,
        None => time(res, "issued", &["Observation"], ctx)?
            .ok_or_else(|| Fault::missing("Observation.effective[x]"))?,
    };
    let category = res
        .get("category")
        .and_then(|c| c.get(0))
        .and_then(|cc| first_code(cc).or_else(|| string(cc, "text")));
    let status = string(res, "status");
    let components = res.get("component").and_then(Value::as_array);
    let own_value = value(res, "Observation")?;
    let n_components = components.clone().map_or(0, Iterator::count);
    let mut rows = Vec::with_capacity(1 + n_components);
    // The columns every row shares are filled in below.
    let row = |id: String, code: Coding, v: Value3| Observation {
        observation_id: id,
        patient_id: String::new(),
        encounter_id: None,
        category: None,
        code,
        value_num: v.num,
        value_text: v.text,
        unit: v.unit,
        effective_time,
        status: None,
        meta: head.meta.clone(),
    };
    if own_value.is_some() || n_components == 0 {
        rows.push(row(
            head.row_id.clone(),
            code,
            own_value.unwrap_or_default(),
        ));
    }
    for (i, comp) in components.into_iter().flatten().enumerate() {
        let field = format!("Observation.component[{i}].code");
        let cc = comp
            .get("code")
            .ok_or_else(|| Fault::missing(field.clone()))?;
        let ccode = pick_coding(cc, &field, &[code_system::LOINC])?;
        let v = value(comp, "Observation.component")?.unwrap_or_default();
        rows.push(row(format!("{}.component[{i}]", head.row_id), ccode, v));
    }
    // Every row but the last gets copies of the shared columns; the last (most often the
    // only one) takes them.
    if let Some((last, others)) = rows.split_last_mut() {
        for r in others {
            r.patient_id.clone_from(&patient_id);
            r.encounter_id.clone_from(&encounter_id);
            r.category.clone_from(&category);
            r.status.clone_from(&status);
        }
        last.patient_id = patient_id;
        last.encounter_id = encounter_id;
        last.category = category;
        last.status = status;
    }
    Ok(rows)
}

/// An observation value as the curated columns hold it.
#[derive(Default)]
struct Value3 {
    num: Option<f64>,
    text: Option<String>,
    unit: Option<String>,
}

/// Reads `value[x]` of an Observation or a component; `None` when it has none.
fn value(v: Value<'_>, at: &str) -> Fx<Option<Value3>> {
    if let Some(q) = v.get("valueQuantity") {
        let num = match q.get("value").map(|v| (v, v.kind())) {
            None | Some((_, Kind::Null)) => None,
            Some((_, Kind::Number(n))) => n.as_f64(),
            Some((other, _)) => {
                return Err(Fault::new(
                    format!("{at}.valueQuantity.value"),
                    "bad_value",
                    format!("expected a number, found {other}"),
                ))
            }
        };
        let unit = string(q, "unit").or_else(|| string(q, "code"));
        // "<5": the number is kept for features; the comparator is kept in the text.
        let text = string(q, "comparator").and_then(|c| num.map(|n| format!("{c}{n}")));
        return Ok(Some(Value3 { num, text, unit }));
    }
    if let Some(cc) = v.get("valueCodeableConcept") {
        let text = codings(cc)
            .find_map(|c| string(c, "display"))
            .or_else(|| string(cc, "text"))
            .or_else(|| first_code(cc));
        return Ok(Some(Value3 {
            text,
            ..Value3::default()
        }));
    }
    if let Some(s) = v.get("valueString") {
        return Ok(Some(Value3 {
            text: s.as_str().map(str::to_string),
            ..Value3::default()
        }));
    }
    if let Some(n) = v.get("valueInteger") {
        let num = n.as_f64().ok_or_else(|| {
            Fault::new(
                format!("{at}.valueInteger"),
                "bad_value",
                format!("expected an integer, found {n}"),
            )
        })?;
        return Ok(Some(Value3 {
            num: Some(num),
            ..Value3::default()
        }));
    }
    if let Some(b) = v.get("valueBoolean") {
        return Ok(Some(Value3 {
            text: b.as_bool().map(|b| b.to_string()),
            ..Value3::default()
        }));
    }
    for key in ["valueDateTime", "valueTime"] {
        if let Some(s) = v.get(key) {
            return Ok(Some(Value3 {
                text: s.as_str().map(str::to_string),
                ..Value3::default()
            }));
        }
    }
    Ok(None)
}

fn condition(res: Value<'_>, head: &Head, rz: &Resolver<'_, '_>, ctx: &Context) -> Fx<Condition> {
    let patient_id = patient_ref(res, "Condition", rz)?;
    let encounter_id = encounter_ref(res, "Condition", rz)?;
    let cc = res
        .get("code")
        .ok_or_else(|| Fault::missing("Condition.code"))?;
    let prefer = [
        code_system::ICD10CM,
        code_system::SNOMED,
        code_system::ICD9CM,
    ];
    let code = pick_coding(cc, "Condition.code", &prefer)?;
    let onset = match time(res, "onsetDateTime", &["Condition"], ctx)? {
        Some(t) => Some(t),
        None => match res.get("onsetPeriod") {
            Some(p) => time(p, "start", &["Condition.onsetPeriod"], ctx)?,
            None => None,
        },
    };
    let onset_time = match onset {
        Some(t) => t,
        None => time(res, "recordedDate", &["Condition"], ctx)?
            .ok_or_else(|| Fault::missing("Condition.onset[x]"))?,
    };
    let abatement_time = match time(res, "abatementDateTime", &["Condition"], ctx)? {
        Some(t) => Some(t),
        None => match res.get("abatementPeriod") {
            Some(p) => match time(p, "end", &["Condition.abatementPeriod"], ctx)? {
                Some(t) => Some(t),
                None => time(p, "start", &["Condition.abatementPeriod"], ctx)?,
            },
            None => None,
        },
    };
    Ok(Condition {
        condition_id: head.row_id.clone(),
        patient_id,
        encounter_id,
        code,
        onset_time,
        abatement_time,
        meta: head.meta.clone(),
    })
}

fn procedure(res: Value<'_>, head: &Head, rz: &Resolver<'_, '_>, ctx: &Context) -> Fx<Procedure> {
    let patient_id = patient_ref(res, "Procedure", rz)?;
    let encounter_id = encounter_ref(res, "Procedure", rz)?;
    let cc = res
        .get("code")
        .ok_or_else(|| Fault::missing("Procedure.code"))?;
    let prefer = [code_system::SNOMED, code_system::CPT];
    let code = pick_coding(cc, "Procedure.code", &prefer)?;
    let (start, end) = match time(res, "performedDateTime", &["Procedure"], ctx)? {
        Some(t) => (Some(t), None),
        None => match res.get("performedPeriod") {
            Some(p) => (
                time(p, "start", &["Procedure.performedPeriod"], ctx)?,
                time(p, "end", &["Procedure.performedPeriod"], ctx)?,
            ),
            None => (None, None),
        },
    };
    let performed_time = start.ok_or_else(|| Fault::missing("Procedure.performed[x]"))?;
    Ok(Procedure {
        procedure_id: head.row_id.clone(),
        patient_id,
        encounter_id,
        code,
        performed_time,
        performed_end: end,
        meta: head.meta.clone(),
    })
}

/// The `Consent.status` values of FHIR R4.
const CONSENT_STATUSES: [&str; 6] = [
    "draft",
    "proposed",
    "active",
    "rejected",
    "inactive",
    "entered-in-error",
];

/// One `consent` row (module docs, "Consent").
fn consent(res: Value<'_>, head: &Head, rz: &Resolver<'_, '_>, ctx: &Context) -> Fx<Consent> {
    if res.get("patient").is_none() && res.get("subject").is_none() {
        return Err(Fault::missing("Consent.patient"));
    }
    let patient_id = patient_ref(res, "Consent", rz)?;
    match res.get("status").map(|v| (v, v.as_str())) {
        None => return Err(Fault::missing("Consent.status")),
        Some((_, Some(s))) if CONSENT_STATUSES.contains(&s) => {}
        Some((v, _)) => {
            return Err(Fault::new(
                "Consent.status",
                "bad_value",
                format!(
                    "{v} is not a Consent status ({})",
                    CONSENT_STATUSES.join(", ")
                ),
            ))
        }
    }
    let cc = res
        .get("scope")
        .ok_or_else(|| Fault::missing("Consent.scope"))?;
    let scope = codings(cc)
        .filter(|c| {
            c.get("system")
                .and_then(Value::as_str)
                .is_some_and(|s| s == crate::curated::consent::SCOPE_SYSTEM)
        })
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .find_map(crate::curated::consent::scope)
        .ok_or_else(|| {
            Fault::new(
                "Consent.scope",
                "bad_value",
                format!(
                    "{cc} has no coding of {} with code {}",
                    crate::curated::consent::SCOPE_SYSTEM,
                    crate::curated::consent::SCOPES.join(", ")
                ),
            )
        })?;
    let provision = res
        .get("provision")
        .ok_or_else(|| Fault::missing("Consent.provision"))?;
    let decision = provision_decision(provision, "Consent.provision", 0)?
        .ok_or_else(|| Fault::missing("Consent.provision.type"))?;
    let (period_start, period_end) = match provision.get("period") {
        Some(p) => (
            time(p, "start", &["Consent.provision.period"], ctx)?,
            time(p, "end", &["Consent.provision.period"], ctx)?,
        ),
        None => (None, None),
    };
    if let (Some(s), Some(e)) = (period_start, period_end) {
        if e < s {
            return Err(Fault::new(
                "Consent.provision.period.end",
                "bad_value",
                format!("ends ({e}) before it starts ({s})"),
            ));
        }
    }
    Ok(Consent {
        consent_id: head.row_id.clone(),
        patient_id,
        scope: scope.to_string(),
        decision: decision.to_string(),
        period_start,
        period_end,
        decided_at: time(res, "dateTime", &["Consent"], ctx)?,
        meta: head.meta.clone(),
    })
}

/// Nested provisions deeper than this are refused (FHIR sets no limit; real ones nest once
/// or twice).
const MAX_PROVISION_DEPTH: usize = 16;

/// The decision of a provision tree: `deny` if any provision in it denies, else `permit` if
/// the top one permits; `None` when the top one has no `type` (and nothing in it denies).
fn provision_decision(p: Value<'_>, field: &str, depth: usize) -> Fx<Option<&'static str>> {
    use crate::curated::consent::{DENY, PERMIT};
    if depth > MAX_PROVISION_DEPTH {
        return Err(Fault::new(
            field,
            "bad_value",
            format!("provisions nest deeper than {MAX_PROVISION_DEPTH}"),
        ));
    }
    let own = match p.get("type").map(|v| (v, v.as_str())) {
        None => None,
        Some((_, Some("deny"))) => Some(DENY),
        Some((_, Some("permit"))) => Some(PERMIT),
        Some((v, _)) => {
            return Err(Fault::new(
                format!("{field}.type"),
                "bad_value",
                format!("{v} is neither deny nor permit"),
            ))
        }
    };
    let mut nested_deny = false;
    if let Some(list) = p.get("provision").and_then(Value::as_array) {
        for (i, n) in list.enumerate() {
            let f = format!("{field}.provision[{i}]");
            if provision_decision(n, &f, depth + 1)? == Some(DENY) {
                nested_deny = true;
            }
        }
    }
    Ok(if nested_deny { Some(DENY) } else { own })
}

/// One row per order; a compound drug without a code of its own gives one row per
/// ingredient (`id.ingredient[i]`), as observation components do, so that a feature looking
/// for a drug finds it.
fn medication(
    res: Value<'_>,
    head: &Head,
    rz: &Resolver<'_, '_>,
    ctx: &Context,
) -> Fx<Vec<Medication>> {
    let patient_id = patient_ref(res, "MedicationRequest", rz)?;
    let encounter_id = encounter_ref(res, "MedicationRequest", rz)?;
    let prefer = [code_system::RXNORM];
    let codes = if let Some(cc) = res.get("medicationCodeableConcept") {
        vec![pick_coding(
            cc,
            "MedicationRequest.medicationCodeableConcept",
            &prefer,
        )?]
    } else if let Some(r) = res.get("medicationReference") {
        let field = "MedicationRequest.medicationReference";
        let reference = r
            .get("reference")
            .and_then(Value::as_str)
            .ok_or_else(|| Fault::missing(format!("{field}.reference")))?;
        let found = match rz.resolve(reference) {
            Ref::Contained(id) => res
                .get("contained")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| {
                    c.get("id").and_then(Value::as_str) == Some(id)
                        && c.get("resourceType").and_then(Value::as_str) == Some("Medication")
                })
                .map(medication_code),
            Ref::To(Target {
                rtype: "Medication",
                id,
            }) => rz.medication(id).cloned(),
            Ref::To(t) => {
                let detail = format!("{reference:?} refers to a {}, not a Medication", t.rtype);
                return Err(Fault::new(field, "bad_value", detail));
            }
            Ref::Dangling | Ref::Unparseable => None,
        };
        match found {
            Some(Ok(c)) => c,
            Some(Err(f)) => {
                let detail = format!(
                    "the Medication {reference:?} has no usable code: {}",
                    f.detail
                );
                return Err(Fault::new(field, f.reason, detail));
            }
            None => {
                let detail = format!(
                    "{reference:?} is not in the input, and without it the order has no drug code"
                );
                return Err(Fault::new(field, "dangling_reference", detail));
            }
        }
    } else {
        return Err(Fault::missing("MedicationRequest.medication[x]"));
    };
    let validity = res
        .get("dispenseRequest")
        .and_then(|d| d.get("validityPeriod"));
    let start = match time(res, "authoredOn", &["MedicationRequest"], ctx)? {
        Some(t) => Some(t),
        None => match validity {
            Some(p) => time(
                p,
                "start",
                &["MedicationRequest.dispenseRequest.validityPeriod"],
                ctx,
            )?,
            None => None,
        },
    };
    let start_time = start.ok_or_else(|| Fault::missing("MedicationRequest.authoredOn"))?;
    // The end of the course: the dispense validity period, else the dosage's bounds
    // (`dosageInstruction[0].timing.repeat.boundsPeriod`).
    let bounds = res
        .get("dosageInstruction")
        .and_then(|d| d.get(0))
        .and_then(|d| d.get("timing"))
        .and_then(|t| t.get("repeat"))
        .and_then(|r| r.get("boundsPeriod"));
    let end_time = match validity {
        Some(p) => time(
            p,
            "end",
            &["MedicationRequest.dispenseRequest.validityPeriod"],
            ctx,
        )?,
        None => None,
    };
    let end_time = match (end_time, bounds) {
        (None, Some(p)) => time(
            p,
            "end",
            &["MedicationRequest.dosageInstruction[0].timing.repeat.boundsPeriod"],
            ctx,
        )?,
        (t, _) => t,
    };
    let status = string(res, "status");
    let several = codes.len() > 1;
    let rows = codes
        .into_iter()
        .enumerate()
        .map(|(i, code)| Medication {
            medication_id: if several {
                format!("{}.ingredient[{i}]", head.row_id)
            } else {
                head.row_id.clone()
            },
            patient_id: patient_id.clone(),
            encounter_id: encounter_id.clone(),
            code,
            start_time,
            end_time,
            status: status.clone(),
            meta: head.meta.clone(),
        })
        .collect();
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------------------

fn string(v: Value<'_>, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The `coding` entries of a CodeableConcept.
fn codings(cc: Value<'_>) -> impl Iterator<Item = Value<'_>> {
    cc.get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The codes of a CodeableConcept, as written.
fn codes(cc: Option<Value<'_>>) -> impl Iterator<Item = &str> {
    cc.into_iter()
        .flat_map(codings)
        .filter_map(|c| c.get("code").and_then(Value::as_str))
}

fn first_code(cc: Value<'_>) -> Option<String> {
    codes(Some(cc)).find(|c| !c.is_empty()).map(str::to_string)
}

/// The element of a list whose `use` is `wanted`, else the first.
fn preferred<'v>(list: Option<Value<'v>>, wanted: &str) -> Option<Value<'v>> {
    let mut list = list?.as_array()?;
    list.clone()
        .find(|x| x.get("use").and_then(Value::as_str) == Some(wanted))
        .or_else(|| list.next())
}

/// Picks the coding of a CodeableConcept to keep: the first in `prefer` order, else a standard
/// system, else the first with a system.
fn pick_coding(cc: Value<'_>, field: &str, prefer: &[&str]) -> Fx<Coding> {
    let mut best: Option<(usize, Coding)> = None;
    let mut systemless = false;
    for c in codings(cc) {
        let Some(code) = c.get("code").and_then(Value::as_str).map(str::trim) else {
            continue;
        };
        if code.is_empty() {
            continue;
        }
        let Some(system) = c
            .get("system")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
        else {
            systemless = true;
            continue;
        };
        let system = code_system::normalize(system);
        let rank = prefer
            .iter()
            .position(|p| *p == system)
            .unwrap_or(prefer.len() + usize::from(!code_system::is_standard(&system)));
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            let display = c
                .get("display")
                .or_else(|| cc.get("text"))
                .and_then(Value::as_str)
                .map(str::to_string);
            best = Some((
                rank,
                Coding {
                    system,
                    code: code.to_string(),
                    display,
                },
            ));
            if rank == 0 {
                break;
            }
        }
    }
    match best {
        Some((_, coding)) => Ok(coding),
        None if systemless => Err(Fault::new(
            format!("{field}.coding.system"),
            "unknown_code_system",
            format!("{field} has codes but none says its code system"),
        )),
        None => Err(Fault::new(
            format!("{field}.coding"),
            "missing_field",
            format!("{field} has no coding with a code"),
        )),
    }
}

/// Reads the FHIR date/dateTime/instant `key` of `v`, whose FHIRPath is `path`; absent is
/// `None`, unreadable is `bad_date`. The field name is only built on error: this runs for
/// every resource.
fn time(v: Value<'_>, key: &str, path: &[&str], ctx: &Context) -> Fx<Option<DateTime<Utc>>> {
    let field = || {
        let mut f = path.join(".");
        f.push('.');
        f.push_str(key);
        f
    };
    match v.get(key).map(|v| (v, v.kind())) {
        None | Some((_, Kind::Null)) => Ok(None),
        Some((_, Kind::String(s))) => {
            parse_instant(s, ctx.default_offset)
                .map(Some)
                .ok_or_else(|| {
                    Fault::new(
                        field(),
                        "bad_date",
                        format!("{s:?} is not a FHIR date, dateTime or instant"),
                    )
                })
        }
        Some((other, _)) => Err(Fault::new(
            field(),
            "bad_date",
            format!("expected a date string, found {other}"),
        )),
    }
}

/// Parses `YYYY`, `YYYY-MM` or `YYYY-MM-DD` at the start of `b`, returning the first day of
/// the period, the rest of the input, and whether the date was complete (only a complete
/// date may carry a time).
fn date_prefix(b: &[u8]) -> Option<(NaiveDate, &[u8], bool)> {
    let year = digits(b, 0, 4)?;
    let (month, day, rest, full) = match b.get(4) {
        Some(b'-') => {
            let month = digits(b, 5, 2)?;
            match b.get(7) {
                Some(b'-') => (month, digits(b, 8, 2)?, b.get(10..)?, true),
                _ => (month, 1, b.get(7..)?, false),
            }
        }
        _ => (1, 1, b.get(4..)?, false),
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    Some((date, rest, full))
}

/// A FHIR `date` (partial dates give the first day of the period).
fn parse_date(s: &str) -> Option<NaiveDate> {
    match date_prefix(s.trim().as_bytes())? {
        (d, [], _) => Some(d),
        _ => None,
    }
}

/// A FHIR `date`, `dateTime` or `instant` as the first instant it denotes. A value without
/// an offset is read in `default_offset`.
fn parse_instant(s: &str, default_offset: FixedOffset) -> Option<DateTime<Utc>> {
    let (date, rest, full) = date_prefix(s.trim().as_bytes())?;
    let Some(rest) = rest.strip_prefix(b"T").filter(|_| full) else {
        return if rest.is_empty() {
            default_offset
                .from_local_datetime(&date.and_time(NaiveTime::MIN))
                .single()
                .map(|t| t.with_timezone(&Utc))
        } else {
            None
        };
    };
    let hour = digits(rest, 0, 2)?;
    if rest.get(2) != Some(&b':') {
        return None;
    }
    let minute = digits(rest, 3, 2)?;
    let mut i = 5;
    let (mut second, mut micro) = (0, 0);
    if rest.get(i) == Some(&b':') {
        second = digits(rest, i + 1, 2)?;
        i += 3;
        if rest.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while rest.get(i).is_some_and(u8::is_ascii_digit) {
                if i - start < 6 {
                    micro = micro * 10 + u32::from(rest.get(i)? - b'0');
                }
                i += 1;
            }
            if i == start {
                return None;
            }
            for _ in (i - start).min(6)..6 {
                micro *= 10;
            }
        }
    }
    if second > 59 {
        return None;
    }
    let naive = date.and_time(NaiveTime::from_hms_micro_opt(hour, minute, second, micro)?);
    let offset = match rest.get(i..)? {
        [] => default_offset,
        [b'Z'] | [b'z'] => FixedOffset::east_opt(0)?,
        [sign @ (b'+' | b'-'), tail @ ..] if tail.len() == 5 && tail.get(2) == Some(&b':') => {
            let hours = digits(tail, 0, 2)?;
            let minutes = digits(tail, 3, 2)?;
            if hours > 14 || minutes > 59 {
                return None;
            }
            let secs = i32::try_from(hours * 3600 + minutes * 60).ok()?;
            FixedOffset::east_opt(if *sign == b'-' { -secs } else { secs })?
        }
        _ => return None,
    };
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// `len` ASCII digits of `b` starting at `at`, as a number.
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let part = b.get(at..at.checked_add(len)?)?;
    part.iter().try_fold(0u32, |acc, d| {
        d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    fn ctx() -> Context {
        Context::new(utc(2024, 1, 1, 0, 0, 0))
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid test time")
    }

    fn bundles(docs: &[(&str, Value)]) -> Parsed {
        let texts: Vec<(String, String)> = docs
            .iter()
            .map(|(name, v)| (name.to_string(), v.to_string()))
            .collect();
        let inputs: Vec<Input<'_>> = texts
            .iter()
            .map(|(name, text)| Input {
                name,
                bytes: text.as_bytes(),
            })
            .collect();
        both_paths(
            parse_bundles(&inputs, &ctx()),
            parse_bundles_batches(&inputs, &ctx()),
        )
    }

    /// The row path's result, after checking that the column path gives the same batches,
    /// bad records and skipped records.
    fn both_paths(rows: Parsed, columns: Result<ParsedBatches, ArrowError>) -> Parsed {
        let expected = rows.clone().into_batches().expect("row path");
        assert!(
            expected == columns.expect("column path"),
            "the column path differs from the row path"
        );
        rows
    }

    fn one_bundle(entries: Value) -> Parsed {
        bundles(&[(
            "b.json",
            json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )])
    }

    fn ndjson(files: &[(&str, &str)]) -> Parsed {
        let inputs: Vec<Input<'_>> = files
            .iter()
            .map(|(name, text)| Input {
                name,
                bytes: text.as_bytes(),
            })
            .collect();
        both_paths(
            parse_ndjson(&inputs, &ctx()),
            parse_ndjson_batches(&inputs, &ctx()),
        )
    }

    fn patient_entry() -> Value {
        json!({"fullUrl": "urn:uuid:p-1", "resource": {
            "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-05",
            "name": [{"use": "nickname", "given": ["Jo"]},
                     {"use": "official", "family": "Doe", "given": ["Jane", "Q"]}],
            "address": [{"use": "work", "postalCode": "99999"}, {"use": "home", "postalCode": "02115"}],
            "deceasedDateTime": "2020-02-03T04:05:06Z"}})
    }

    #[test]
    fn dates_full_partial_and_offsets() {
        let z = FixedOffset::east_opt(0).expect("utc");
        let minus5 = FixedOffset::west_opt(5 * 3600).expect("-05:00");
        assert_eq!(parse_instant("2013", z), Some(utc(2013, 1, 1, 0, 0, 0)));
        assert_eq!(parse_instant("2013-03", z), Some(utc(2013, 3, 1, 0, 0, 0)));
        assert_eq!(
            parse_instant("2013-03-11", z),
            Some(utc(2013, 3, 11, 0, 0, 0))
        );
        assert_eq!(
            parse_instant("2013-03-11", minus5),
            Some(utc(2013, 3, 11, 5, 0, 0))
        );
        assert_eq!(
            parse_instant("2013-03-11T10:00:00+02:00", minus5),
            Some(utc(2013, 3, 11, 8, 0, 0))
        );
        assert_eq!(
            parse_instant("2013-03-11T10:00:00", minus5),
            Some(utc(2013, 3, 11, 15, 0, 0))
        );
        let frac = parse_instant("2013-03-11T10:00:00.123456789Z", z).expect("fraction");
        assert_eq!(frac.timestamp_subsec_micros(), 123_456);
        let short = parse_instant("2013-03-11T10:00:00.5-01:30", z).expect("short fraction");
        assert_eq!(
            short,
            utc(2013, 3, 11, 11, 30, 0) + chrono::Duration::milliseconds(500)
        );
        for bad in [
            "",
            "13",
            "2013-13",
            "2013-02-30",
            "2013T10:00:00Z",
            "2013-03-11T25:00:00Z",
            "2013-03-11T10:00:60Z",
            "2013-03-11T10:00:00+2",
            "2013-03-11T10:00:00.Z",
            "2013-03-11 10:00:00",
            "2013-03-11T10:00:00Zjunk",
            "２０１３",
        ] {
            assert_eq!(parse_instant(bad, z), None, "{bad:?} must not parse");
        }
        assert_eq!(parse_date("1970-05"), NaiveDate::from_ymd_opt(1970, 5, 1));
        assert_eq!(parse_date("1970-05-06T00:00:00Z"), None);
    }

    #[test]
    fn conditional_reference_forms() {
        let npi = "http://hl7.org/fhir/sid/us-npi";
        let ok =
            |r: &str| conditional_reference(r).map(|c| c.map(|(t, s, v)| (t.to_string(), s, v)));
        let want = |t: &str, v: &str| Some(Ok((t.to_string(), npi.to_string(), v.to_string())));
        assert_eq!(ok("Practitioner/1"), None);
        assert_eq!(
            ok(&format!("Practitioner?identifier={npi}|42")),
            want("Practitioner", "42")
        );
        assert_eq!(
            ok(&format!(
                "https://ehr.example/fhir/Practitioner?identifier={npi}|42"
            )),
            want("Practitioner", "42")
        );
        assert_eq!(
            ok("Patient?identifier=http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Fus-npi%7C42"),
            want("Patient", "42")
        );
        // A bad escape is left as written.
        assert_eq!(percent_decode("a%zz%7c%"), "a%zz|%");
        for bad in [
            "Practitioner?identifier=42",
            "Practitioner?identifier=|42",
            "Practitioner?identifier=sys|",
            "Practitioner?name=Ward",
            "Practitioner?identifier=s|1&active=true",
            "?identifier=s|1",
            "practitioner?identifier=s|1",
        ] {
            assert!(matches!(ok(bad), Some(Err(_))), "{bad}");
        }
    }

    #[test]
    fn reference_forms() {
        let t = |rtype, id| Some(Target { rtype, id });
        assert_eq!(literal_reference("Patient/123"), t("Patient", "123"));
        assert_eq!(
            literal_reference("http://example.org/fhir/Patient/123"),
            t("Patient", "123")
        );
        assert_eq!(
            literal_reference("Patient/123/_history/2"),
            t("Patient", "123")
        );
        assert_eq!(
            literal_reference("https://h/fhir/Encounter/e.1/_history/7"),
            t("Encounter", "e.1")
        );
        assert_eq!(
            literal_reference("Patient/123/_history"),
            t("Patient", "123")
        );
        for bad in [
            "Patient",
            "Patient/",
            "patient/1",
            "Patient/a b",
            "Patient?identifier=x",
            "Patient/_history/2",
            "_history/2",
            "",
        ] {
            assert_eq!(literal_reference(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn patient_fields_and_urn_uuid_resolution() {
        let parsed = one_bundle(json!([
            patient_entry(),
            {"fullUrl": "urn:uuid:0b9d", "resource": {"resourceType": "Patient", "gender": "male"}},
            {"fullUrl": "urn:uuid:o-1", "resource": {
                "resourceType": "Observation", "id": "o1", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                "subject": {"reference": "urn:uuid:p-1"},
                "effectiveDateTime": "2020-01-01T00:00:00Z", "valueQuantity": {"value": 13.5, "code": "g/dL"}}},
            {"resource": {
                "resourceType": "Observation", "id": "o2",
                "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                "subject": {"reference": "urn:uuid:0b9d"}, "issued": "2020-01-02T00:00:00Z"}}
        ]));
        assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
        let p = &parsed.tables.patients;
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].patient_id, "p1");
        assert_eq!(p[0].birth_date, NaiveDate::from_ymd_opt(1970, 5, 1));
        assert_eq!(p[0].sex.as_deref(), Some("female"));
        assert_eq!(p[0].given_name.as_deref(), Some("Jane Q"));
        assert_eq!(p[0].family_name.as_deref(), Some("Doe"));
        assert_eq!(p[0].zip.as_deref(), Some("02115"));
        assert_eq!(p[0].death_time, Some(utc(2020, 2, 3, 4, 5, 6)));
        assert_eq!(p[0].meta.source_id, "Patient/p1");
        assert_eq!(p[0].meta.source_system, "b.json");
        // No id: the fullUrl's uuid is the id, the fullUrl the source id.
        assert_eq!(p[1].patient_id, "0b9d");
        assert_eq!(p[1].meta.source_id, "urn:uuid:0b9d");
        let o = &parsed.tables.observations;
        assert_eq!(o[0].patient_id, "p1");
        assert_eq!(o[0].value_num, Some(13.5));
        assert_eq!(o[0].unit.as_deref(), Some("g/dL"));
        assert_eq!(o[1].patient_id, "0b9d");
        assert_eq!(o[1].effective_time, utc(2020, 1, 2, 0, 0, 0));
    }

    #[test]
    fn every_resource_type() {
        let parsed = one_bundle(json!([
            patient_entry(),
            {"fullUrl": "urn:uuid:dr-1", "resource": {"resourceType": "Practitioner", "id": "dr1"}},
            {"fullUrl": "urn:uuid:e-1", "resource": {
                "resourceType": "Encounter", "id": "e1", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "183807002", "display": "Inpatient stay"}]}],
                "priority": {"coding": [{"code": "EM"}]},
                "serviceType": {"coding": [{"code": "cardio", "display": "Cardiology"}]},
                "subject": {"reference": "urn:uuid:p-1"},
                "participant": [
                    {"type": [{"coding": [{"code": "ATND"}]}], "individual": {"reference": "urn:uuid:dr-1"}},
                    {"individual": {"reference": "Practitioner/dr2"},
                     "period": {"start": "2013-03-12T08:00:00Z", "end": "2013-03-13T08:00:00Z"}},
                    {"individual": {"reference": "RelatedPerson/mom"}}
                ],
                "period": {"start": "2013-03-11T10:00:00Z", "end": "2013-03-20"},
                "hospitalization": {"dischargeDisposition": {"coding": [{"code": "home"}]}}}},
            {"fullUrl": "urn:uuid:bp", "resource": {
                "resourceType": "Observation", "id": "bp", "status": "final",
                "category": [{"coding": [{"code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                "subject": {"reference": "urn:uuid:p-1"}, "encounter": {"reference": "urn:uuid:e-1"},
                "effectivePeriod": {"start": "2013-03-12T09:00:00+01:00"},
                "component": [
                    {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                     "valueQuantity": {"value": 120, "unit": "mmHg"}},
                    {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                     "valueQuantity": {"value": 80, "unit": "mmHg"}}]}},
            {"resource": {
                "resourceType": "Observation", "id": "cc",
                "code": {"coding": [{"system": "urn:oid:1.2.3", "code": "local"},
                                    {"system": "http://loinc.org", "code": "883-9", "display": "ABO"}]},
                "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2013-03-12",
                "valueCodeableConcept": {"coding": [{"code": "A", "display": "Group A"}]}}},
            {"resource": {
                "resourceType": "Condition", "id": "c1",
                "verificationStatus": {"coding": [{"code": "confirmed"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"},
                                    {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]},
                "subject": {"reference": "urn:uuid:p-1"}, "recordedDate": "2013-03-11",
                "abatementPeriod": {"start": "2014-01-01", "end": "2014-02"}}},
            {"resource": {
                "resourceType": "Procedure", "id": "pr1", "status": "completed",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
                "subject": {"reference": "urn:uuid:p-1"},
                "performedPeriod": {"start": "2013-03-13T10:00:00Z", "end": "2013-03-13T11:00:00Z"}}},
            {"resource": {
                "resourceType": "Procedure", "id": "pr2", "status": "not-done",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
                "subject": {"reference": "urn:uuid:p-1"}}},
            {"fullUrl": "urn:uuid:med-1", "resource": {
                "resourceType": "Medication", "id": "med1",
                "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "316049"}]}}},
            {"resource": {
                "resourceType": "MedicationRequest", "id": "m1", "status": "active",
                "medicationReference": {"reference": "urn:uuid:med-1"},
                "subject": {"reference": "urn:uuid:p-1"}, "authoredOn": "2013-03-14",
                "dispenseRequest": {"validityPeriod": {"end": "2013-04-14"}}}},
            {"resource": {
                "resourceType": "MedicationRequest", "id": "m2", "status": "completed",
                "contained": [{"resourceType": "Medication", "id": "x",
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "430127000"}]}}],
                "medicationReference": {"reference": "#x"},
                "subject": {"reference": "Patient/p1"}, "authoredOn": "2013-03-15"}},
            {"resource": {"resourceType": "AllergyIntolerance", "id": "a1"}},
            {"request": {"method": "DELETE", "url": "Patient/old"}}
        ]));
        assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
        let t = &parsed.tables;
        let e = &t.encounters[0];
        assert_eq!(
            (e.encounter_id.as_str(), e.patient_id.as_str()),
            ("e1", "p1")
        );
        assert_eq!(e.class, "inpatient");
        assert_eq!(e.admit_time, utc(2013, 3, 11, 10, 0, 0));
        assert_eq!(e.discharge_time, Some(utc(2013, 3, 20, 0, 0, 0)));
        assert_eq!(e.admission_type.as_deref(), Some("emergency"));
        assert_eq!(e.discharge_disposition.as_deref(), Some("home"));
        assert_eq!(e.service.as_deref(), Some("Cardiology"));
        let code = e.code.as_ref().expect("encounter type");
        assert_eq!(
            (code.system.as_str(), code.code.as_str()),
            ("SNOMED", "183807002")
        );

        assert_eq!(t.care_team.len(), 2);
        assert_eq!(t.care_team[0].clinician_id, "dr1");
        assert_eq!(t.care_team[0].role.as_deref(), Some("attending"));
        assert_eq!(t.care_team[0].valid_from, e.admit_time);
        assert_eq!(t.care_team[0].valid_to, e.discharge_time);
        assert_eq!(t.care_team[1].clinician_id, "dr2");
        assert_eq!(t.care_team[1].valid_from, utc(2013, 3, 12, 8, 0, 0));
        assert_eq!(t.care_team[1].valid_to, Some(utc(2013, 3, 13, 8, 0, 0)));

        // Blood pressure: no value of its own, one row per component.
        let o = &t.observations;
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].observation_id, "bp.component[0]");
        assert_eq!(
            (o[0].code.code.as_str(), o[0].value_num),
            ("8480-6", Some(120.0))
        );
        assert_eq!(
            (o[1].code.code.as_str(), o[1].value_num),
            ("8462-4", Some(80.0))
        );
        assert_eq!(o[1].effective_time, utc(2013, 3, 12, 8, 0, 0));
        assert_eq!(o[1].encounter_id.as_deref(), Some("e1"));
        assert_eq!(o[1].category.as_deref(), Some("vital-signs"));
        assert_eq!(o[1].meta.source_id, "Observation/bp");
        // The shared columns: copied into the first component's row, taken by the last.
        let shared = |r: &Observation| {
            (
                r.patient_id.clone(),
                r.encounter_id.clone(),
                r.category.clone(),
                r.status.clone(),
            )
        };
        let expected = (
            "p1".to_string(),
            Some("e1".to_string()),
            Some("vital-signs".to_string()),
            Some("final".to_string()),
        );
        assert_eq!(shared(&o[0]), expected);
        assert_eq!(shared(&o[1]), expected);
        // LOINC preferred over a local code listed first.
        assert_eq!(
            (o[2].code.system.as_str(), o[2].code.code.as_str()),
            ("LOINC", "883-9")
        );
        assert_eq!(o[2].value_text.as_deref(), Some("Group A"));

        let c = &t.conditions[0];
        assert_eq!(
            (c.code.system.as_str(), c.code.code.as_str()),
            ("ICD10CM", "I10")
        );
        assert_eq!(c.onset_time, utc(2013, 3, 11, 0, 0, 0));
        assert_eq!(c.abatement_time, Some(utc(2014, 2, 1, 0, 0, 0)));

        assert_eq!(t.procedures.len(), 1);
        assert_eq!(
            t.procedures[0].performed_end,
            Some(utc(2013, 3, 13, 11, 0, 0))
        );

        let m = &t.medications;
        assert_eq!(
            (m[0].code.system.as_str(), m[0].code.code.as_str()),
            ("RXNORM", "316049")
        );
        assert_eq!(m[0].end_time, Some(utc(2013, 4, 14, 0, 0, 0)));
        assert_eq!(m[0].status.as_deref(), Some("active"));
        assert_eq!(m[1].code.code, "430127000");

        let skipped: Vec<(&str, u64)> = parsed
            .skipped
            .iter()
            .map(|s| (s.what.as_str(), s.location.record))
            .collect();
        assert_eq!(
            skipped,
            [
                ("Practitioner", 2),
                ("Procedure (status not-done)", 8),
                ("Medication", 9),
                ("AllergyIntolerance", 12),
                ("Bundle.entry without resource (DELETE Patient/old)", 13)
            ]
        );
    }

    #[test]
    fn dangling_and_missing_are_bad_records() {
        let parsed = one_bundle(json!([
            patient_entry(),
            {"resource": {"resourceType": "Observation", "id": "o1",
                "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
                "subject": {"reference": "urn:uuid:nobody"}, "effectiveDateTime": "2020"}},
            {"resource": {"resourceType": "Observation", "id": "o2",
                "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
                "subject": {"reference": "Patient/p1"}}},
            {"resource": {"resourceType": "Encounter", "id": "e1", "class": {"code": "AMB"},
                "subject": {"reference": "Patient/p1"}}},
            {"resource": {"resourceType": "Condition", "id": "c1",
                "subject": {"reference": "Patient/p1"}, "onsetDateTime": "2020"}},
            {"resource": {"resourceType": "Procedure", "id": "x1",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
                "performedDateTime": "2020"}},
            {"resource": {"resourceType": "Procedure", "id": "x2",
                "code": {"coding": [{"code": "1"}]},
                "subject": {"reference": "Patient/p1"}, "performedDateTime": "2020"}},
            {"resource": {"resourceType": "Condition", "id": "c2",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
                "subject": {"reference": "Patient/p1"}, "onsetDateTime": "2020-14-01"}},
            {"resource": {"resourceType": "Observation", "id": "o3",
                "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
                "subject": {"reference": "Group/herd"}, "issued": "2020-01-01T00:00:00Z"}},
            {"resource": {"resourceType": "Observation", "id": "o4",
                "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
                "subject": {"reference": "Patient/p1"}, "issued": "2020-01-01T00:00:00Z",
                "valueQuantity": {"value": "high"}}},
            {"resource": {"resourceType": "Encounter", "id": "e2",
                "subject": {"reference": "Patient/p1"}, "period": {"start": "2020"},
                "participant": [{"individual": {"reference": "urn:uuid:gone"}}]}},
            {"resource": {"resourceType": "MedicationRequest", "id": "m1",
                "medicationReference": {"reference": "Medication/elsewhere"},
                "subject": {"reference": "Patient/p1"}, "authoredOn": "2020"}},
            {"resource": {"id": "nothing"}}
        ]));
        let got: Vec<(u64, Option<Table>, Option<&str>, &str)> = parsed
            .bad
            .iter()
            .map(|b| {
                (
                    b.location.record,
                    b.table,
                    b.field.as_deref(),
                    b.reason.as_str(),
                )
            })
            .collect();
        use Table::*;
        assert_eq!(
            got,
            [
                (
                    2,
                    Some(Observations),
                    Some("Observation.subject"),
                    "dangling_reference"
                ),
                (
                    3,
                    Some(Observations),
                    Some("Observation.effective[x]"),
                    "missing_field"
                ),
                (
                    4,
                    Some(Encounters),
                    Some("Encounter.period.start"),
                    "missing_field"
                ),
                (5, Some(Conditions), Some("Condition.code"), "missing_field"),
                (
                    6,
                    Some(Procedures),
                    Some("Procedure.subject"),
                    "missing_field"
                ),
                (
                    7,
                    Some(Procedures),
                    Some("Procedure.code.coding.system"),
                    "unknown_code_system"
                ),
                (
                    8,
                    Some(Conditions),
                    Some("Condition.onsetDateTime"),
                    "bad_date"
                ),
                (
                    9,
                    Some(Observations),
                    Some("Observation.subject"),
                    "bad_value"
                ),
                (
                    10,
                    Some(Observations),
                    Some("Observation.valueQuantity.value"),
                    "bad_value"
                ),
                (
                    11,
                    Some(CareTeam),
                    Some("Encounter.participant[0].individual"),
                    "dangling_reference"
                ),
                (
                    12,
                    Some(Medications),
                    Some("MedicationRequest.medicationReference"),
                    "dangling_reference"
                ),
                (13, None, Some("resourceType"), "missing_field"),
            ]
        );
        // The encounter with a dangling participant is kept; only its care-team row is not.
        assert_eq!(parsed.tables.encounters.len(), 1);
        assert_eq!(parsed.tables.encounters[0].class, "other");
        assert!(parsed.bad[0].raw.contains("urn:uuid:nobody"));
        assert!(parsed.bad.iter().all(|b| b.location.file == "b.json"));
    }

    #[test]
    fn entered_in_error_is_never_visible() {
        let parsed = one_bundle(json!([
            {"resource": {"resourceType": "Observation", "id": "o1", "status": "entered-in-error",
                "meta": {"lastUpdated": "2021-05-05T00:00:00Z"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
                "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2020"}},
            {"resource": {"resourceType": "Condition", "id": "c1",
                "verificationStatus": {"coding": [{"code": "entered-in-error"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
                "subject": {"reference": "Patient/p"}, "onsetDateTime": "2020"}}
        ]));
        let o = &parsed.tables.observations[0];
        assert_eq!(o.meta.known_at, utc(2021, 5, 5, 0, 0, 0));
        assert_eq!(o.meta.retracted_at, Some(o.meta.known_at));
        let c = &parsed.tables.conditions[0];
        assert_eq!(c.meta.retracted_at, Some(ctx().ingested_at));
    }

    #[test]
    fn known_at_prefers_last_updated_then_bundle_timestamp() {
        let obs = |id: &str, meta: Value| {
            json!({"resource": {"resourceType": "Observation", "id": id, "meta": meta,
                "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
                "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2020"}})
        };
        let parsed = bundles(&[
            (
                "a.json",
                json!({"resourceType": "Bundle", "timestamp": "2022-02-02T02:02:02+02:00", "entry": [
                    obs("x", json!({"lastUpdated": "2023-03-03T03:03:03Z", "source": "lab-sys"})),
                    obs("y", json!({})),
                    {"resource": {"resourceType": "Bundle", "timestamp": "2021-01-01T00:00:00Z",
                        "entry": [obs("z", json!({}))]}}
                ]}),
            ),
            ("b.json", obs("w", json!({}))["resource"].clone()),
        ]);
        let o = &parsed.tables.observations;
        assert_eq!(o[0].meta.known_at, utc(2023, 3, 3, 3, 3, 3));
        assert_eq!(o[0].meta.source_system, "lab-sys");
        assert_eq!(o[1].meta.known_at, utc(2022, 2, 2, 0, 2, 2));
        assert_eq!(o[2].meta.known_at, utc(2021, 1, 1, 0, 0, 0));
        assert_eq!(o[3].meta.known_at, ctx().ingested_at);
        assert_eq!(o[3].meta.source_system, "b.json");
        assert!(o.iter().all(|o| o.meta.retracted_at.is_none()));
    }

    #[test]
    fn bad_bundle_timestamp_is_reported_and_entries_fall_back() {
        let parsed = bundles(&[(
            "a.json",
            json!({"resourceType": "Bundle", "timestamp": "yesterday", "entry": [patient_entry()]}),
        )]);
        assert_eq!(parsed.bad.len(), 1);
        assert_eq!(parsed.bad[0].field.as_deref(), Some("Bundle.timestamp"));
        assert_eq!(parsed.bad[0].location.record, 0);
        assert_eq!(parsed.tables.patients[0].meta.known_at, ctx().ingested_at);
    }

    #[test]
    fn versions_retract_their_predecessors() {
        let version = |v: &str, at: &str, value: f64| {
            json!({"resourceType": "Observation", "id": "o1",
                "meta": {"versionId": v, "lastUpdated": at}, "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2947-0"}]},
                "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2020-01-01T00:00:00Z",
                "valueQuantity": {"value": value}})
        };
        // Later version first in the input: order is by known_at, not by position.
        let v2 = version("2", "2020-01-03T00:00:00Z", 141.0).to_string();
        let v1 = version("1", "2020-01-02T00:00:00Z", 140.0).to_string();
        let v3 = version("3", "2020-01-04T00:00:00Z", 142.0).to_string();
        let text = format!("{v2}\n{v1}\n{v3}\n");
        let parsed = ndjson(&[("Observation.ndjson", &text)]);
        let o = &parsed.tables.observations;
        assert_eq!(o.len(), 3, "all versions kept, in input order");
        assert_eq!(o[0].value_num, Some(141.0));
        assert_eq!(o[0].meta.retracted_at, Some(utc(2020, 1, 4, 0, 0, 0)));
        assert_eq!(o[1].meta.retracted_at, Some(utc(2020, 1, 3, 0, 0, 0)));
        assert_eq!(o[2].meta.retracted_at, None);
    }

    #[test]
    fn ndjson_lines_references_and_garbage() {
        let patients = "{\"resourceType\":\"Patient\",\"id\":\"11111111-2222\"}\r\n\n   \n";
        let obs = concat!(
            "\u{feff}{\"resourceType\":\"Observation\",\"id\":\"o1\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"1-8\"}]},",
            "\"subject\":{\"reference\":\"urn:uuid:11111111-2222\"},\"effectiveDateTime\":\"2020\"}\n",
            "{\"resourceType\":\"Observation\",\"id\":\"o2\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"1-8\"}]},",
            "\"subject\":{\"reference\":\"urn:uuid:nobody\"},\"effectiveDateTime\":\"2020\"}\n",
            "{\"resourceType\":\"Observation\",\"id\":\n",
            "[1,2]\n",
            "{\"resourceType\":\"Immunization\",\"id\":\"i1\"}\n",
            "{\"resourceType\":\"MedicationRequest\",\"id\":\"m1\",\"medicationReference\":{\"reference\":\"Medication/med9\"},",
            "\"subject\":{\"reference\":\"Patient/11111111-2222\"},\"authoredOn\":\"2020-01-01\"}\n",
        );
        let meds = "{\"resourceType\":\"Medication\",\"id\":\"med9\",\"code\":{\"coding\":[{\"system\":\"RxNorm\",\"code\":\"42\"}]}}";
        let parsed = ndjson(&[
            ("Patient.ndjson", patients),
            ("Observation.ndjson", obs),
            ("Medication.ndjson", meds),
        ]);
        assert_eq!(parsed.tables.patients[0].patient_id, "11111111-2222");
        assert_eq!(parsed.tables.observations.len(), 1);
        assert_eq!(parsed.tables.observations[0].patient_id, "11111111-2222");
        assert_eq!(parsed.tables.medications[0].code.code, "42");
        assert_eq!(parsed.tables.medications[0].code.system, "RXNORM");
        let bad: Vec<(&str, u64, &str)> = parsed
            .bad
            .iter()
            .map(|b| {
                (
                    b.location.file.as_str(),
                    b.location.record,
                    b.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            bad,
            [
                ("Observation.ndjson", 2, "dangling_reference"),
                ("Observation.ndjson", 3, "unparseable"),
                ("Observation.ndjson", 4, "unparseable"),
            ]
        );
        assert_eq!(
            parsed.bad[1].raw,
            "{\"resourceType\":\"Observation\",\"id\":"
        );
        let skipped: Vec<(&str, u64)> = parsed
            .skipped
            .iter()
            .map(|s| (s.what.as_str(), s.location.record))
            .collect();
        assert_eq!(skipped, [("Immunization", 5), ("Medication", 1)]);
    }

    #[test]
    fn lines_needing_the_whole_index_keep_their_place() {
        // Many tasks' worth of lines. Every third observation names its patient by a
        // `urn:uuid:` of a Patient line that comes later (curated once the pass is over),
        // every seventh names one that does not exist; the others use `Patient/id`.
        let n = LINES_PER_TASK * 3 + 17;
        let mut obs = String::new();
        let mut expected = Vec::new();
        let mut dangling = Vec::new();
        for i in 0..n {
            let (reference, patient) = match i {
                _ if i % 7 == 0 => ("urn:uuid:nobody".to_string(), None),
                _ if i % 3 == 0 => (format!("urn:uuid:p{}", i % 5), Some(format!("p{}", i % 5))),
                _ => (format!("Patient/p{}", i % 5), Some(format!("p{}", i % 5))),
            };
            // Every other line has its `resourceType` last.
            let (first, last) = match i % 2 {
                0 => ("\"resourceType\":\"Observation\",", ""),
                _ => ("", ",\"resourceType\":\"Observation\""),
            };
            obs.push_str(&format!(
                "{{{first}\"id\":\"o{i}\",\"code\":{{\"coding\":[{{\"system\":\"http://loinc.org\",\"code\":\"1-8\"}}]}},\"subject\":{{\"reference\":\"{reference}\"}},\"effectiveDateTime\":\"2020\"{last}}}\n"
            ));
            match patient {
                Some(p) => expected.push((format!("o{i}"), p)),
                None => dangling.push(i as u64 + 1),
            }
        }
        let mut meds = String::new();
        for i in 0..n {
            // Half the orders name a Medication of a later file.
            let drug = match i % 2 {
                0 => format!("\"medicationReference\":{{\"reference\":\"Medication/d{}\"}}", i % 4),
                _ => "\"medicationCodeableConcept\":{\"coding\":[{\"system\":\"http://www.nlm.nih.gov/research/umls/rxnorm\",\"code\":\"7\"}]}".to_string(),
            };
            meds.push_str(&format!(
                "{{\"resourceType\":\"MedicationRequest\",\"id\":\"m{i}\",{drug},\"subject\":{{\"reference\":\"Patient/p1\"}},\"authoredOn\":\"2020-01-01\"}}\n"
            ));
        }
        let mut later = String::new();
        for p in 0..5 {
            later.push_str(&format!(
                "{{\"resourceType\":\"Patient\",\"id\":\"p{p}\"}}\n"
            ));
        }
        for d in 0..4 {
            // Half with `resourceType` first (checked, not built), half with it last.
            let code = format!("\"code\":{{\"coding\":[{{\"system\":\"http://www.nlm.nih.gov/research/umls/rxnorm\",\"code\":\"10{d}\"}}]}}");
            later.push_str(&match d % 2 {
                0 => format!("{{\"resourceType\":\"Medication\",\"id\":\"d{d}\",{code}}}\n"),
                _ => format!("{{\"id\":\"d{d}\",{code},\"resourceType\":\"Medication\"}}\n"),
            });
        }
        let parsed = ndjson(&[
            ("Observation.ndjson", &obs),
            ("MedicationRequest.ndjson", &meds),
            ("Later.ndjson", &later),
        ]);
        let got: Vec<(String, String)> = parsed
            .tables
            .observations
            .iter()
            .map(|o| (o.observation_id.clone(), o.patient_id.clone()))
            .collect();
        assert_eq!(got, expected);
        let bad: Vec<u64> = parsed.bad.iter().map(|b| b.location.record).collect();
        assert_eq!(bad, dangling);
        assert!(parsed.bad.iter().all(|b| b.reason == "dangling_reference"));
        let drugs: Vec<(String, String)> = parsed
            .tables
            .medications
            .iter()
            .map(|m| (m.medication_id.clone(), m.code.code.clone()))
            .collect();
        let wanted: Vec<(String, String)> = (0..n)
            .map(|i| {
                let code = match i % 2 {
                    0 => format!("10{}", i % 4),
                    _ => "7".to_string(),
                };
                (format!("m{i}"), code)
            })
            .collect();
        assert_eq!(drugs, wanted);
        assert_eq!(parsed.tables.patients.len(), 5);
    }

    #[test]
    fn scan_head_reads_top_level_members_only() {
        let head = |line: &str| {
            scan_head(line.as_bytes()).map(|h| {
                (
                    h.resource_type.map(|t| t.to_string()),
                    h.id.map(|t| t.to_string()),
                )
            })
        };
        let some = |t: &str, id: &str| Some((Some(t.to_string()), Some(id.to_string())));
        // Nested "id"s and "resourceType"s, brackets and quotes inside strings, numbers and
        // literals at the top level: only the top-level members count.
        let line = r#" {"contained":[{"resourceType":"Medication","id":"m1"}],"note":"a } \" ] {","n":-1.5e3,"ok":true,"subject":{"id":"x"},"id":"o-1","x":null,"resourceType":"Observation"} "#;
        assert_eq!(head(line), some("Observation", "o-1"));
        assert_eq!(
            head(r#"{"resourceType":"Patient"}"#),
            Some((Some("Patient".into()), None))
        );
        assert_eq!(head("{}"), Some((None, None)));
        assert_eq!(
            head(r#"{"a":[],"b":{},"c":[0,-0.5,1E+2,2e-3,"\u00e9\n"]}"#),
            Some((None, None))
        );
        // Whatever it cannot read, or is not JSON, is left to serde.
        for bad in [
            r#"{"resourceType":"Pat\u0069ent","id":"p"}"#,
            r#"{"resourceType":"Patient","id":7}"#,
            r#"{"resourceType":"Patient","id":null}"#,
            r#"{"resourceType":"Patient","id":"p""#,
            r#"{"resourceType":"Patient","id":"p"} trailing"#,
            r#"[{"resourceType":"Patient"}]"#,
            r#"{"a":[1,2}"#,
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul,"b":1}"#,
            r#"{"a":True}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            "{\"a\":\"tab\there\"}",
            "{\"a\":1}\u{c}",
            "",
        ] {
            assert_eq!(head(bad), None, "{bad}");
        }
        // Bytes that are not UTF-8: refused in the two strings it reads; in a string it only
        // skips, accepted exactly when serde_json accepts them there.
        let skipped = b"{\"resourceType\":\"Claim\",\"x\":\"\xff\"}";
        assert_eq!(
            scan_head(skipped).is_some(),
            serde_json::from_slice::<serde::de::IgnoredAny>(skipped).is_ok()
        );
        assert!(scan_head(b"{\"resourceType\":\"Cl\xffim\"}").is_none());
        // Nesting up to the limit is read; beyond it, serde decides.
        let nested = |n: usize| format!(r#"{{"a":{}{}}}"#, "[".repeat(n), "]".repeat(n));
        assert!(head(&nested(scan::MAX_DEPTH - 1)).is_some());
        assert!(head(&nested(scan::MAX_DEPTH)).is_none());
        // Agrees with serde on the sample Bundle and each of its resources as a line.
        let doc: Value = serde_json::from_str(&sample()).unwrap();
        let mut lines = vec![doc.to_string()];
        for e in doc["entry"].as_array().unwrap() {
            lines.push(e["resource"].to_string());
        }
        for line in &lines {
            let q = scan_head(line.as_bytes()).expect("a plain object");
            let t: IdOnly<'_> = serde_json::from_str(line).unwrap();
            assert_eq!((q.resource_type, q.id), (t.resource_type, t.id), "{line}");
        }
    }

    #[test]
    fn unreadable_lines_of_skipped_types_are_bad_records() {
        // The pre-pass refuses these lines (not JSON, or an escape in the id), so serde
        // judges them: not JSON is a bad record, whatever type it names; valid JSON of an
        // uncurated type is skipped.
        let text = concat!(
            r#"{"resourceType":"Claim","id":"c1","total":{"value":01}}"#,
            "\n",
            r#"{"resourceType":"Claim","id":"c\u0032","x":"a\u00e9"}"#,
            "\n",
            r#"{"resourceType":"Claim","id":"c3","x":[1,2}"#,
        );
        let parsed = ndjson(&[("claims.ndjson", text)]);
        let bad: Vec<_> = parsed
            .bad
            .iter()
            .map(|b| (b.location.record, b.reason.as_str()))
            .collect();
        assert_eq!(bad, [(1, "unparseable"), (3, "unparseable")]);
        let skipped: Vec<_> = parsed
            .skipped
            .iter()
            .map(|s| (s.what.as_str(), s.location.record))
            .collect();
        assert_eq!(skipped, [("Claim", 2)]);
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        let nested = format!(
            "{}{}",
            r#"{"resourceType":"Bundle","entry":[{"resource":"#.repeat(5_000),
            "}]}".repeat(5_000)
        );
        for text in [&deep, &nested] {
            let input = [Input {
                name: "deep.json",
                bytes: text.as_bytes(),
            }];
            let parsed = parse_bundles(&input, &ctx());
            assert_eq!(parsed.bad.len(), 1);
            assert_eq!(parsed.bad[0].reason, "unparseable");
            assert!(parsed.bad[0].raw.len() <= 4096);
            let parsed = parse_ndjson(&input, &ctx());
            assert_eq!(parsed.bad.len(), 1);
        }
        // Nesting within the limit still reads the innermost resource, as entry 1.
        let inner = r#"{"resourceType":"Patient","id":"deep"}"#;
        let text = format!(
            "{}{inner}{}",
            r#"{"resourceType":"Bundle","entry":[{"resource":"#.repeat(20),
            "}]}".repeat(20)
        );
        let input = [Input {
            name: "deep.json",
            bytes: text.as_bytes(),
        }];
        let parsed = parse_bundles(&input, &ctx());
        assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
        assert_eq!(parsed.tables.patients[0].patient_id, "deep");
    }

    fn sample() -> String {
        json!({"resourceType": "Bundle", "type": "collection", "timestamp": "2020-01-01T00:00:00Z",
            "entry": [
                patient_entry(),
                {"fullUrl": "urn:uuid:e", "resource": {"resourceType": "Encounter", "id": "e",
                    "class": {"code": "EMER"}, "subject": {"reference": "urn:uuid:p-1"},
                    "period": {"start": "2019-12-31T23:00:00-05:00"}}},
                {"resource": {"resourceType": "Observation", "id": "o",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "2947-0"}]},
                    "subject": {"reference": "urn:uuid:p-1"}, "encounter": {"reference": "urn:uuid:e"},
                    "effectiveDateTime": "2020-01-01T01:00:00Z", "valueQuantity": {"value": 140, "unit": "mmol/L"}}},
                {"resource": {"resourceType": "Claim", "id": "cl"}}
            ]})
        .to_string()
    }

    /// Every NDJSON line (or, for a Bundle, every entry) ends up as rows, a bad record or a
    /// skipped record: `(rows' source ids, bad locations, skipped locations)`.
    fn accounted(parsed: &Parsed) -> usize {
        let t = &parsed.tables;
        let mut ids: Vec<&str> = t
            .patients
            .iter()
            .map(|r| r.meta.source_id.as_str())
            .chain(t.encounters.iter().map(|r| r.meta.source_id.as_str()))
            .chain(t.observations.iter().map(|r| r.meta.source_id.as_str()))
            .chain(t.conditions.iter().map(|r| r.meta.source_id.as_str()))
            .chain(t.procedures.iter().map(|r| r.meta.source_id.as_str()))
            .chain(t.medications.iter().map(|r| r.meta.source_id.as_str()))
            .collect();
        ids.dedup();
        let mut bad: Vec<&Location> = parsed
            .bad
            .iter()
            .filter(|b| b.table != Some(Table::CareTeam))
            .map(|b| &b.location)
            .collect();
        bad.dedup();
        ids.len() + bad.len() + parsed.skipped.len()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn truncated_bundles_never_panic(cut in 0usize..2000) {
            let text = sample();
            let cut = cut.min(text.len());
            let input = [Input { name: "t.json", bytes: &text.as_bytes()[..cut] }];
            let parsed = parse_bundles(&input, &ctx());
            if cut < text.len() {
                prop_assert_eq!(parsed.bad.len(), 1);
                prop_assert_eq!(parsed.bad[0].location.record, 0);
                prop_assert!(parsed.tables.is_empty());
            } else {
                prop_assert_eq!(accounted(&parsed), 4);
            }
        }

        #[test]
        fn scan_head_accepts_only_what_serde_accepts(
            flips in proptest::collection::vec((0usize..4000, any::<u8>()), 1..4),
            pick in 0usize..8,
        ) {
            let doc: Value = serde_json::from_str(&sample()).expect("sample is JSON");
            let mut lines = vec![doc.to_string()];
            for e in doc["entry"].as_array().expect("entries") {
                lines.push(e["resource"].to_string());
            }
            let mut bytes = lines[pick % lines.len()].clone().into_bytes();
            for (at, b) in flips {
                let n = bytes.len();
                if let Some(x) = bytes.get_mut(at % n) {
                    // Mostly JSON's own bytes, so that many garbled lines stay close to JSON.
                    const JSONISH: &[u8] = b"{}[]:,\"\\ 0123456789-+.eEtrufalsn/u\t";
                    *x = if b < 128 { JSONISH[b as usize % JSONISH.len()] } else { b };
                }
            }
            let serde = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
            if let Some(head) = scan_head(&bytes) {
                prop_assert!(serde, "scan_head accepted what serde refuses: {}", String::from_utf8_lossy(&bytes));
                if let Ok(t) = serde_json::from_slice::<IdOnly<'_>>(&bytes) {
                    prop_assert_eq!((head.resource_type, head.id), (t.resource_type, t.id));
                }
            }
        }

        #[test]
        fn garbled_ndjson_never_panics(flips in proptest::collection::vec((0usize..4000, any::<u8>()), 0..8)) {
            let doc: Value = serde_json::from_str(&sample()).expect("sample is JSON");
            let lines: Vec<String> = doc["entry"]
                .as_array()
                .expect("entries")
                .iter()
                .map(|e| e["resource"].to_string())
                .collect();
            let mut bytes = lines.join("\n").into_bytes();
            for (at, b) in flips {
                let n = bytes.len();
                if let Some(x) = bytes.get_mut(at % n) {
                    // Keep the line structure so that each line stays one record.
                    if *x != b'\n' && b != b'\n' {
                        *x = b;
                    }
                }
            }
            let input = [Input { name: "g.ndjson", bytes: &bytes }];
            let parsed = parse_ndjson(&input, &ctx());
            prop_assert_eq!(accounted(&parsed), lines.len());
        }
    }
}
