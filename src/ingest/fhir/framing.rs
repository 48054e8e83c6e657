//! Framing: FHIR documents and NDJSON lines into parts (runs of input, curated in parallel),
//! and the parts into the output, in input order.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::error::ArrowError;
use rayon::prelude::*;

use super::index::Index;
use super::outcome::Outcome;
use super::scan::{scan_head, IdOnly};
use super::versions::{retract_superseded, Version};
use super::walk::process_document;
use crate::curated::{CuratedColumns, CuratedTables, RowSink, Table};
use crate::ingest::{
    BadRecord, Context, Input, Location, Parsed, ParsedBatches, Skipped, VersionKey,
};

pub(super) fn bundles<S: RowSink + Default + Send>(
    inputs: &[Input<'_>],
    ctx: &Context,
) -> Vec<Part<S>> {
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

pub(super) fn ndjson<S: RowSink + Default + Send>(
    inputs: &[Input<'_>],
    ctx: &Context,
) -> Vec<Part<S>> {
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
pub(super) type Line<'a> = (&'a str, u64, &'a [u8]);

/// Lines per task of the NDJSON pass: enough to amortize a task, few enough to balance.
pub(super) const LINES_PER_TASK: usize = 1024;

/// The parts' rows as row structs, with their bad and skipped records, in input order.
pub(super) fn rows_of(parts: Vec<Part<CuratedTables>>) -> Parsed {
    let versions = version_keys(&parts);
    let (tables, bad, skipped) = split(parts);
    Parsed {
        tables: CuratedTables::concat(tables),
        bad,
        skipped,
        versions,
    }
}

/// The parts' resource versions, for ordering them with stored ones (`ingest::crossrun`).
fn version_keys<S>(parts: &[Part<S>]) -> Vec<VersionKey> {
    parts
        .iter()
        .flat_map(|p| &p.versions)
        .map(|v| VersionKey {
            table: v.key.0,
            source_id: v.source_id.clone(),
            known_at: v.known_at,
        })
        .collect()
}

/// The parts' rows as one record batch per table, with their bad and skipped records.
pub(super) fn batches_of(parts: Vec<Part<CuratedColumns>>) -> Result<ParsedBatches, ArrowError> {
    let versions = version_keys(&parts);
    let (columns, bad, skipped) = split(parts);
    Ok(ParsedBatches {
        batches: CuratedColumns::concat(columns)?,
        bad,
        skipped,
        versions,
        ..ParsedBatches::default()
    })
}

pub(super) fn split<S>(parts: Vec<Part<S>>) -> (Vec<S>, Vec<BadRecord>, Vec<Skipped>) {
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
pub(super) struct Part<S> {
    pub(super) rows: S,
    pub(super) bad: Vec<BadRecord>,
    pub(super) skipped: Vec<Skipped>,
    /// The resource versions with an id among the rows, for the version pass.
    pub(super) versions: Vec<Version>,
    /// Set when a line of the run needed the index of the whole input: the run is to be made
    /// again with it (and is incomplete until then).
    pub(super) deferred: bool,
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

impl<S: RowSink + Default> Part<S> {
    /// Takes the lines of a run. With `first_pass`, the index is not the input's yet, and the
    /// run stops at the first line that needs it (setting `deferred`).
    pub(super) fn of_lines(
        run: &[Line<'_>],
        index: &Index<'_>,
        first_pass: bool,
        ctx: &Context,
    ) -> Self {
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
    pub(super) fn line(
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
    pub(super) fn take(&mut self, o: Outcome) {
        self.bad.extend(o.bad);
        self.skipped.extend(o.skipped);
        let Some(c) = o.curated else { return };
        let table = c.rows.table();
        let (start, team) = (self.rows.rows(table), self.rows.rows(Table::CareTeam));
        let idents = self.rows.rows(Table::PatientIdentifiers);
        c.rows.into_sink(&mut self.rows);
        if let Some(key) = c.key {
            self.versions.push(Version {
                hash: foldhash::fast::FixedState::default().hash_one(&key),
                key,
                source_id: c.source_id,
                version: c.version,
                known_at: c.known_at,
                rows: start..self.rows.rows(table),
                team: team..self.rows.rows(Table::CareTeam),
                idents: idents..self.rows.rows(Table::PatientIdentifiers),
            });
        }
    }
}

/// The `resourceType` of a line whose first member it is, without escapes: Bulk exports
/// write it first. Only a guess at the type, to route the line; what counts is read later.
pub(super) fn peek_type(b: &[u8]) -> Option<&str> {
    use super::scan::ws;
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

pub(super) fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// The resource types that feed curated tables (Medication only helps resolve orders).
pub(super) const CURATED: [&str; 11] = [
    "Patient",
    "Consent",
    "Encounter",
    "Observation",
    "Condition",
    "Procedure",
    "MedicationRequest",
    "Immunization",
    "AllergyIntolerance",
    "DiagnosticReport",
    "MedicationAdministration",
];
