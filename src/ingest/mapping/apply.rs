//! Applying a resolved [`Mapping`] to the records of a run.
//!
//! Two passes. First the files that lookups point into are indexed (key → the few columns
//! asked for), so a record can take a value from another file of the same run whatever the
//! order of the inputs. Then every input is read (in parallel, results kept in input order)
//! and each record evaluated against each target of its file entry. A record becomes a row,
//! a [`BadRecord`] naming the source column and a reason code, or a [`Skipped`]: nothing is
//! dropped silently.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use rayon::prelude::*;

use super::expr::{Cells, Reading};
use super::read::{self, Header, Raw, Sink};
use super::value::{self, Piece};
use super::{
    Column, FileEntry, Invalid, Kind, Mapping, Source, Spec, Target, Unmapped, Vocabulary,
};
use crate::curated as c;
use crate::curated::{
    code_system, units, CareTeamMember, Coding, Condition, CuratedTables, Encounter, Medication,
    Observation, Patient, Procedure, RowMeta, Table,
};
use crate::ingest::{BadRecord, Context, Input, Location, Parsed, Skipped};

/// Why a record could not feed a table: the source column at fault, a reason code, detail.
#[derive(Debug)]
struct Fault {
    field: String,
    reason: &'static str,
    detail: String,
}

fn fault(field: impl Into<String>, reason: &'static str, detail: impl Into<String>) -> Fault {
    Fault {
        field: field.into(),
        reason,
        detail: detail.into(),
    }
}

/// A typed value of a target column.
#[derive(Debug, Clone)]
enum Val {
    Text(String),
    Num(f64),
    Time(DateTime<Utc>),
    Date(NaiveDate),
}

fn is_parquet(name: &str) -> bool {
    value::match_name(name)
        .to_ascii_lowercase()
        .ends_with(".parquet")
}

/// Column names of a file: exact match first, then ignoring ASCII case (MIMIC-III writes
/// `SUBJECT_ID`, MIMIC-IV `subject_id`; one mapping reads both).
#[derive(Debug, Default)]
struct Names {
    exact: HashMap<String, usize>,
    folded: HashMap<String, usize>,
}

impl Names {
    fn new(names: &[String]) -> Names {
        let mut n = Names::default();
        for (i, name) in names.iter().enumerate() {
            n.exact.entry(name.clone()).or_insert(i);
            n.folded.entry(name.to_ascii_lowercase()).or_insert(i);
        }
        n
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.exact
            .get(name)
            .or_else(|| self.folded.get(&name.to_ascii_lowercase()))
            .copied()
    }
}

/// The rows of one file entry, keyed by one column, holding the columns lookups ask for.
#[derive(Debug, Default)]
struct Index {
    /// Some input of the run matched the entry.
    present: bool,
    /// Every matched input has the `on` column.
    on_found: bool,
    columns: Vec<String>,
    /// Per requested column: found in every matched input's header.
    found: Vec<bool>,
    typed: Vec<bool>,
    rows: HashMap<String, Vec<Option<String>>>,
}

type Lookups = HashMap<(usize, String), Index>;

struct IndexSink<'a> {
    on: &'a str,
    index: &'a mut Index,
    on_idx: Option<usize>,
    col_idx: Vec<Option<usize>>,
}

impl Sink for IndexSink<'_> {
    fn header(&mut self, h: &Header) {
        let names = Names::new(&h.names);
        self.on_idx = names.find(self.on);
        self.index.on_found &= self.on_idx.is_some();
        self.col_idx = self.index.columns.iter().map(|c| names.find(c)).collect();
        for (k, i) in self.col_idx.iter().enumerate() {
            self.index.found[k] &= i.is_some();
            if let Some(i) = i {
                self.index.typed[k] |= h.typed.get(*i).copied().unwrap_or(false);
            }
        }
    }

    fn row(&mut self, _record: u64, cells: &[Option<String>], _raw: Raw<'_>) {
        let Some(key) = self.on_idx.and_then(|i| cells.get(i).cloned().flatten()) else {
            return;
        };
        let col_idx = &self.col_idx;
        // The first row with a key wins, as documented.
        self.index.rows.entry(key).or_insert_with(|| {
            col_idx
                .iter()
                .map(|i| i.and_then(|i| cells.get(i).cloned().flatten()))
                .collect()
        });
    }

    // Bad records of a looked-up file are reported when that file is parsed for its own
    // targets (or skipped); the index just leaves them out.
    fn bad(&mut self, _record: u64, _detail: String, _raw: String) {}
}

fn build_lookups(mapping: &Mapping, inputs: &[Input<'_>], entries: &[Option<usize>]) -> Lookups {
    let mut wanted: HashMap<(usize, String), BTreeSet<String>> = HashMap::new();
    for f in &mapping.files {
        for t in &f.targets {
            for c in &t.columns {
                if let Source::Lookup(l) = &c.spec.source {
                    wanted
                        .entry((l.file, l.on.clone()))
                        .or_default()
                        .insert(l.column.clone());
                }
            }
        }
    }
    let mut lookups = Lookups::new();
    for ((file, on), columns) in wanted {
        let columns: Vec<String> = columns.into_iter().collect();
        let n = columns.len();
        let mut index = Index {
            present: false,
            on_found: true,
            columns,
            found: vec![true; n],
            typed: vec![false; n],
            rows: HashMap::new(),
        };
        for (input, entry) in inputs.iter().zip(entries) {
            if *entry != Some(file) {
                continue;
            }
            index.present = true;
            let mut sink = IndexSink {
                on: &on,
                index: &mut index,
                on_idx: None,
                col_idx: Vec::new(),
            };
            read::read(
                input.bytes,
                is_parquet(input.name),
                &mapping.files[file].csv,
                &mut sink,
            );
        }
        lookups.insert((file, on), index);
    }
    lookups
}

/// See [`super::parse`].
pub(super) fn parse(mapping: &Mapping, inputs: &[Input<'_>], ctx: &Context) -> Parsed {
    let entries: Vec<Option<usize>> = inputs.iter().map(|i| mapping.entry_for(i.name)).collect();
    let lookups = build_lookups(mapping, inputs, &entries);
    let parts: Vec<Parsed> = inputs
        .par_iter()
        .zip(entries.par_iter())
        .map(|(input, entry)| match entry {
            None => Parsed {
                skipped: vec![Skipped {
                    location: Location {
                        file: input.name.to_string(),
                        record: 0,
                    },
                    what: format!("file matching no entry of mapping {}", mapping.name),
                }],
                ..Parsed::default()
            },
            Some(e) => {
                let mut apply = Apply {
                    mapping,
                    entry: &mapping.files[*e],
                    ctx,
                    lookups: &lookups,
                    file: input.name,
                    short: value::match_name(input.name),
                    names: Names::default(),
                    typed: Vec::new(),
                    missing: Vec::new(),
                    out: Parsed::default(),
                };
                read::read(
                    input.bytes,
                    is_parquet(input.name),
                    &apply.entry.csv,
                    &mut apply,
                );
                apply.out
            }
        })
        .collect();
    let mut out = Parsed::default();
    for p in parts {
        out.extend(p);
    }
    out
}

/// Applies one file entry to the records of one input.
struct Apply<'a> {
    mapping: &'a Mapping,
    entry: &'a FileEntry,
    ctx: &'a Context,
    lookups: &'a Lookups,
    /// The input's name as given (for locations).
    file: &'a str,
    /// Its name as matched (for `source_system`, `source_id`, `{$file}`).
    short: &'a str,
    names: Names,
    typed: Vec<bool>,
    /// Per target: the first source column it needs that the file lacks.
    missing: Vec<Option<String>>,
    out: Parsed,
}

/// Every source column a target reads that must be in the file's header.
fn needed_columns(t: &Target) -> Vec<&str> {
    let mut v: Vec<&str> = t.filter.iter().map(|c| c.column.as_str()).collect();
    for c in &t.columns {
        let s = &c.spec;
        if let Some(w) = &s.when {
            v.push(&w.column);
        }
        match &s.source {
            Source::Column(name) if !s.optional => v.push(name),
            Source::Template(pieces) => v.extend(pieces.iter().filter_map(|p| match p {
                Piece::Col(n) => Some(n.as_str()),
                _ => None,
            })),
            Source::Lookup(l) => v.push(&l.key),
            Source::Expr(e) => v.extend(e.columns().iter().map(|(c, _)| c.as_str())),
            Source::Column(_) | Source::Value(_) => {}
        }
    }
    v
}

impl Sink for Apply<'_> {
    fn header(&mut self, h: &Header) {
        self.names = Names::new(&h.names);
        self.typed = h.typed.clone();
        self.missing = self
            .entry
            .targets
            .iter()
            .map(|t| {
                needed_columns(t)
                    .into_iter()
                    .find(|c| self.names.find(c).is_none())
                    .map(str::to_string)
            })
            .collect();
    }

    fn row(&mut self, record: u64, cells: &[Option<String>], raw: Raw<'_>) {
        let mut accounted = false;
        let entry = self.entry;
        for (ti, target) in entry.targets.iter().enumerate() {
            if let Some(col) = self.missing.get(ti).cloned().flatten() {
                accounted = true;
                let f = fault(
                    col.clone(),
                    "missing_column",
                    format!(
                        "the file has no column {col:?}, which table {} needs",
                        target.table.name()
                    ),
                );
                self.push_bad(record, target.table, f, raw, cells);
                continue;
            }
            let row = RowRef {
                names: &self.names,
                typed: &self.typed,
                cells,
            };
            if !target.filter.iter().all(|c| c.holds(row.get(&c.column))) {
                continue;
            }
            accounted = true;
            let result = self
                .eval_target(target, &row, record)
                .and_then(|vals| self.build(target.table, vals, record))
                .map_err(|mut f| {
                    // A unit fault names the source column the unit came from.
                    if f.reason == "unconvertible_unit" {
                        if let Some(col) = target.columns.iter().find(|c| c.name == "unit") {
                            f.field = source_field(&col.spec, &col.name);
                        }
                    }
                    f
                });
            match result {
                Ok(rows) => push_row(&mut self.out.tables, rows),
                Err(f) => self.push_bad(record, target.table, f, raw, cells),
            }
        }
        if !accounted {
            let what = if entry.targets.is_empty() {
                format!("record of {} (read for lookups only)", entry.name)
            } else {
                format!("record of {} filtered out by every target", entry.name)
            };
            self.out.skipped.push(Skipped {
                location: self.location(record),
                what,
            });
        }
    }

    fn bad(&mut self, record: u64, detail: String, raw: String) {
        self.out.bad.push(BadRecord {
            location: self.location(record),
            table: None,
            field: None,
            reason: "unparseable".to_string(),
            detail,
            raw,
        });
    }
}

/// One record's cells with its file's column names.
struct RowRef<'r> {
    names: &'r Names,
    typed: &'r [bool],
    cells: &'r [Option<String>],
}

impl RowRef<'_> {
    fn get(&self, column: &str) -> Option<&str> {
        self.names
            .find(column)
            .and_then(|i| self.cells.get(i))
            .and_then(|c| c.as_deref())
    }

    fn get_typed(&self, column: &str) -> Option<(String, bool)> {
        let i = self.names.find(column)?;
        let v = self.cells.get(i)?.clone()?;
        Some((v, self.typed.get(i).copied().unwrap_or(false)))
    }
}

/// The name a fault reports for a spec: the source column where there is one.
fn source_field(spec: &Spec, target: &str) -> String {
    match &spec.source {
        Source::Column(c) => c.clone(),
        Source::Value(_) => target.to_string(),
        Source::Template(p) => p
            .iter()
            .find_map(|p| match p {
                Piece::Col(c) => Some(c.clone()),
                _ => None,
            })
            .unwrap_or_else(|| target.to_string()),
        Source::Lookup(l) => format!("{}.{}", l.entry, l.column),
        Source::Expr(e) => e
            .columns()
            .first()
            .map(|(c, _)| c.clone())
            .unwrap_or_else(|| target.to_string()),
    }
}

impl Cells for RowRef<'_> {
    fn cell(&self, column: &str) -> Option<(&str, bool)> {
        let i = self.names.find(column)?;
        let v = self.cells.get(i)?.as_deref()?;
        Some((v, self.typed.get(i).copied().unwrap_or(false)))
    }
}

impl Apply<'_> {
    fn location(&self, record: u64) -> Location {
        Location {
            file: self.file.to_string(),
            record,
        }
    }

    fn push_bad(
        &mut self,
        record: u64,
        table: Table,
        f: Fault,
        raw: Raw<'_>,
        cells: &[Option<String>],
    ) {
        self.out.bad.push(BadRecord {
            location: self.location(record),
            table: Some(table),
            field: Some(f.field),
            reason: f.reason.to_string(),
            detail: f.detail,
            raw: raw.render(cells),
        });
    }

    /// Evaluates every mapped column of `target`; the values are indexed by schema position.
    fn eval_target<'t>(
        &self,
        target: &'t Target,
        row: &RowRef<'_>,
        record: u64,
    ) -> Result<Vals<'t>, Fault> {
        let mut vals = Vals {
            names: &target.schema_names,
            vals: vec![None; target.schema_names.len()],
        };
        for col in &target.columns {
            let v = self.eval_column(target, col, row, record)?;
            if let Some(slot) = vals.vals.get_mut(col.index) {
                *slot = v;
            }
        }
        Ok(vals)
    }

    fn source_value(
        &self,
        target: &Target,
        col: &Column,
        row: &RowRef<'_>,
        record: u64,
    ) -> Result<Option<(String, bool)>, Fault> {
        let spec = &col.spec;
        Ok(match &spec.source {
            Source::Expr(e) => {
                let reading = Reading {
                    time: spec.time.as_ref().unwrap_or(&self.mapping.time),
                    zone: spec
                        .zone
                        .or(self.mapping.zone)
                        .unwrap_or(self.ctx.default_offset),
                    decimal: spec.decimal,
                };
                match e.eval_text(row, reading) {
                    Ok(v) => v,
                    // As for a value that does not parse: `invalid = "null"` makes it null.
                    Err(_) if spec.invalid == Invalid::Null && !spec.required => None,
                    Err(x) => {
                        return Err(fault(
                            x.column.unwrap_or_else(|| col.name.clone()),
                            x.reason,
                            format!(
                                "{}.{}: {} in `{}`",
                                target.table.name(),
                                col.name,
                                x.detail,
                                e.text()
                            ),
                        ))
                    }
                }
            }
            Source::Column(c) => row.get_typed(c),
            Source::Value(v) => Some((v.clone(), false)),
            Source::Template(pieces) => {
                let mut s = String::new();
                for p in pieces {
                    match p {
                        Piece::Lit(l) => s.push_str(l),
                        Piece::File => s.push_str(self.short),
                        Piece::Line => s.push_str(&record.to_string()),
                        Piece::Col(c) => match row.get(c) {
                            Some(v) => s.push_str(v),
                            None => return Ok(None),
                        },
                    }
                }
                Some((s, false))
            }
            Source::Lookup(l) => {
                let Some(key) = row.get(&l.key) else {
                    return Ok(None);
                };
                let dangling = |detail: String| fault(l.key.clone(), "dangling_reference", detail);
                let index = match self.lookups.get(&(l.file, l.on.clone())) {
                    Some(i) if i.present => i,
                    _ => {
                        return Err(dangling(format!(
                            "{} = {key:?} refers to file entry {:?}, but no input of this run matched it",
                            l.key, l.entry
                        )))
                    }
                };
                if !index.on_found {
                    return Err(dangling(format!(
                        "file entry {:?} has no column {:?} to look {key:?} up in",
                        l.entry, l.on
                    )));
                }
                let Some(found) = index.rows.get(key) else {
                    return Err(dangling(format!(
                        "no row of {} has {} = {key:?}",
                        l.entry, l.on
                    )));
                };
                let k = index.columns.iter().position(|c| *c == l.column);
                match k {
                    Some(k) if index.found[k] => found[k].clone().map(|v| (v, index.typed[k])),
                    _ => {
                        return Err(fault(
                            format!("{}.{}", l.entry, l.column),
                            "missing_column",
                            format!("file entry {:?} has no column {:?}", l.entry, l.column),
                        ))
                    }
                }
            }
        })
    }

    fn eval_column(
        &self,
        target: &Target,
        col: &Column,
        row: &RowRef<'_>,
        record: u64,
    ) -> Result<Option<Val>, Fault> {
        let spec = &col.spec;
        let field = || source_field(spec, &col.name);
        let what = || format!("{}.{}", target.table.name(), col.name);
        let mut v = match &spec.when {
            Some(w) if !w.holds(row.get(&w.column)) => None,
            _ => self.source_value(target, col, row, record)?,
        };
        if let Some((text, typed)) = v.take() {
            v = match lookup_value(spec, &text) {
                Mapped::To(t) => t.map(|t| (t, false)),
                Mapped::Unknown => match spec.unmapped {
                    Unmapped::Keep => Some((text, typed)),
                    Unmapped::Null => None,
                    Unmapped::Error => {
                        return Err(fault(
                            field(),
                            "unmapped_value",
                            format!(
                                "{}: value {text:?} is not in the column's map or vocabulary",
                                what()
                            ),
                        ))
                    }
                },
                Mapped::Unchanged => Some((text, typed)),
            };
        }
        if v.is_none() {
            v = spec.default.clone().map(|d| (d, false));
        }
        let Some((mut text, typed)) = v else {
            if spec.required {
                return Err(fault(
                    field(),
                    "missing_field",
                    format!("{} is required and {} is empty", what(), field()),
                ));
            }
            return Ok(None);
        };
        if col.name == "code_system" {
            text = code_system::normalize(&text);
            if target.require_standard_system && !code_system::is_standard(&text) {
                return Err(fault(
                    field(),
                    "unknown_code_system",
                    format!("{}: {text:?} is not a standard code system (LOINC, SNOMED, ICD10CM, ICD9CM, RXNORM, CPT)", what()),
                ));
            }
        }
        let parsed = match col.kind {
            Kind::Text => return Ok(Some(Val::Text(text))),
            Kind::Number => {
                // An expression's numbers are rendered with '.'; `decimal` said how it reads
                // its columns.
                let decimal = match spec.source {
                    Source::Expr(_) => '.',
                    _ => spec.decimal,
                };
                value::parse_number(&text, decimal).map(Val::Num)
            }
            Kind::Time => {
                let zone = spec
                    .zone
                    .or(self.mapping.zone)
                    .unwrap_or(self.ctx.default_offset);
                let format = spec.time.as_ref().unwrap_or(&self.mapping.time);
                value::parse_time(&text, format, zone, typed).map(Val::Time)
            }
            Kind::Date => {
                let format = spec.time.as_ref().unwrap_or(&self.mapping.time);
                value::parse_date(&text, format, typed).map(Val::Date)
            }
        };
        match (parsed, spec.invalid) {
            (Some(v), _) => Ok(Some(v)),
            (None, Invalid::Null) if !spec.required => Ok(None),
            (None, _) => {
                let (reason, kind) = match col.kind {
                    Kind::Number => ("bad_number", "a number"),
                    Kind::Date => ("bad_date", "a date"),
                    _ => ("bad_date", "a time"),
                };
                Err(fault(
                    field(),
                    reason,
                    format!("{}: cannot read {text:?} as {kind}", what()),
                ))
            }
        }
    }

    /// Turns evaluated values into one curated row.
    fn build(&self, table: Table, mut v: Vals<'_>, record: u64) -> Result<Row, Fault> {
        let meta = RowMeta {
            source_system: v
                .text("source_system")
                .unwrap_or_else(|| self.short.to_string()),
            source_id: v
                .text("source_id")
                .unwrap_or_else(|| format!("{}:{record}", self.short)),
            known_at: v.time("known_at").unwrap_or(self.ctx.ingested_at),
            retracted_at: v.time("retracted_at"),
        };
        Ok(match table {
            Table::Patients => Row::Patient(Patient {
                patient_id: v.req_text("patient_id")?,
                birth_date: v.date("birth_date"),
                sex: v.text("sex"),
                death_time: v.time("death_time"),
                zip: v.text("zip"),
                given_name: v.text("given_name"),
                family_name: v.text("family_name"),
                meta,
            }),
            Table::Encounters => {
                let code = match (v.text("code"), v.text("code_system")) {
                    (Some(code), Some(system)) => Some(Coding {
                        system,
                        code,
                        display: v.text("display"),
                    }),
                    (Some(code), None) => {
                        return Err(fault(
                            "code_system",
                            "missing_field",
                            format!("encounters.code {code:?} has no code system"),
                        ))
                    }
                    (None, _) => None,
                };
                Row::Encounter(Encounter {
                    encounter_id: v.req_text("encounter_id")?,
                    patient_id: v.req_text("patient_id")?,
                    class: v.req_text("class")?,
                    admit_time: v.req_time("admit_time")?,
                    discharge_time: v.time("discharge_time"),
                    admission_type: v.text("admission_type"),
                    discharge_disposition: v.text("discharge_disposition"),
                    service: v.text("service"),
                    code,
                    meta,
                })
            }
            Table::Observations => {
                let mut row = Observation {
                    observation_id: v.req_text("observation_id")?,
                    patient_id: v.req_text("patient_id")?,
                    encounter_id: v.text("encounter_id"),
                    category: v.text("category"),
                    code: v.coding()?,
                    value_num: v.num("value_num"),
                    value_text: v.text("value_text"),
                    unit: v.text("unit"),
                    value_original: v.num("value_original"),
                    unit_original: v.text("unit_original"),
                    effective_time: v.req_time("effective_time")?,
                    status: v.text("status"),
                    meta,
                };
                units::normalize(&mut row)
                    .map_err(|e| fault("unit", "unconvertible_unit", e.to_string()))?;
                Row::Observation(row)
            }
            Table::Conditions => Row::Condition(Condition {
                condition_id: v.req_text("condition_id")?,
                patient_id: v.req_text("patient_id")?,
                encounter_id: v.text("encounter_id"),
                code: v.coding()?,
                onset_time: v.req_time("onset_time")?,
                abatement_time: v.time("abatement_time"),
                diagnosis_type: v.text("diagnosis_type"),
                meta,
            }),
            Table::Procedures => Row::Procedure(Procedure {
                procedure_id: v.req_text("procedure_id")?,
                patient_id: v.req_text("patient_id")?,
                encounter_id: v.text("encounter_id"),
                code: v.coding()?,
                performed_time: v.req_time("performed_time")?,
                performed_end: v.time("performed_end"),
                meta,
            }),
            Table::Medications => Row::Medication(Medication {
                medication_id: v.req_text("medication_id")?,
                patient_id: v.req_text("patient_id")?,
                encounter_id: v.text("encounter_id"),
                code: v.coding()?,
                start_time: v.req_time("start_time")?,
                end_time: v.time("end_time"),
                status: v.text("status"),
                meta,
            }),
            Table::CareTeam => Row::CareTeam(CareTeamMember {
                patient_id: v.req_text("patient_id")?,
                clinician_id: v.req_text("clinician_id")?,
                role: v.text("role"),
                valid_from: v.req_time("valid_from")?,
                valid_to: v.time("valid_to"),
                meta,
            }),
            Table::Consent => {
                use crate::curated::consent;
                let scope = v.req_text("scope")?;
                let scope = consent::scope(&scope).ok_or_else(|| {
                    fault(
                        "scope",
                        "bad_value",
                        format!(
                            "consent.scope {scope:?} is not one of {}",
                            consent::SCOPES.join(", ")
                        ),
                    )
                })?;
                let decision = v.req_text("decision")?;
                let decision = consent::decision(&decision).ok_or_else(|| {
                    fault(
                        "decision",
                        "bad_value",
                        format!("consent.decision {decision:?} is neither permit nor deny"),
                    )
                })?;
                let (period_start, period_end) = (v.time("period_start"), v.time("period_end"));
                if let (Some(s), Some(e)) = (period_start, period_end) {
                    if e < s {
                        return Err(fault(
                            "period_end",
                            "bad_value",
                            format!("consent.period_end {e} is before period_start {s}"),
                        ));
                    }
                }
                Row::Consent(crate::curated::Consent {
                    consent_id: v.req_text("consent_id")?,
                    patient_id: v.req_text("patient_id")?,
                    scope: scope.to_string(),
                    decision: decision.to_string(),
                    period_start,
                    period_end,
                    decided_at: v.time("decided_at"),
                    meta,
                })
            }
            Table::Immunizations => Row::Immunization(c::Immunization {
                immunization_id: v.req_text("immunization_id")?,
                patient_id: v.req_text("patient_id")?,
                encounter_id: v.text("encounter_id"),
                code: v.coding()?,
                occurrence_time: v.req_time("occurrence_time")?,
                status: v.text("status"),
                meta,
            }),
            Table::Allergies => Row::Allergy(c::Allergy {
                allergy_id: v.req_text("allergy_id")?,
                patient_id: v.req_text("patient_id")?,
                encounter_id: v.text("encounter_id"),
                code: v.coding()?,
                category: v.text("category"),
                criticality: v.text("criticality"),
                clinical_status: v.text("clinical_status"),
                verification_status: v.text("verification_status"),
                onset_time: v.req_time("onset_time")?,
                recorded_time: v.time("recorded_time"),
                meta,
            }),
            Table::DiagnosticReports => Row::Report(c::DiagnosticReport {
                report_id: v.req_text("report_id")?,
                patient_id: v.req_text("patient_id")?,
                encounter_id: v.text("encounter_id"),
                category: v.text("category"),
                code: v.coding()?,
                effective_time: v.req_time("effective_time")?,
                issued_time: v.time("issued_time"),
                status: v.text("status"),
                conclusion: v.text("conclusion"),
                result_ids: v.text("result_ids"),
                meta,
            }),
            Table::MedicationAdministrations => Row::Administration(c::MedicationAdministration {
                administration_id: v.req_text("administration_id")?,
                patient_id: v.req_text("patient_id")?,
                encounter_id: v.text("encounter_id"),
                request_id: v.text("request_id"),
                code: v.coding()?,
                start_time: v.req_time("start_time")?,
                end_time: v.time("end_time"),
                status: v.text("status"),
                dose_value: v.num("dose_value"),
                dose_unit: v.text("dose_unit"),
                route: v.text("route"),
                meta,
            }),
            Table::PatientIdentifiers => Row::Identifier(c::PatientIdentifier {
                patient_id: v.req_text("patient_id")?,
                kind: v.text("kind").unwrap_or_else(|| "identifier".to_string()),
                system: v.req_text("system")?,
                value: v.req_text("value")?,
                type_code: v.text("type"),
                meta,
            }),
        })
    }
}

/// The outcome of a column's value map and vocabulary.
enum Mapped {
    /// The map or vocabulary knew the value (`None`: mapped to null).
    To(Option<String>),
    /// Neither knew it.
    Unknown,
    /// The column has neither.
    Unchanged,
}

fn lookup_value(spec: &Spec, text: &str) -> Mapped {
    if let Some(m) = &spec.map {
        if let Some(to) = m.get(text) {
            return Mapped::To(to.clone());
        }
    }
    if let Some(v) = spec.vocabulary.apply(text) {
        return Mapped::To(Some(v.to_string()));
    }
    if spec.map.is_some() || spec.vocabulary != Vocabulary::None {
        Mapped::Unknown
    } else {
        Mapped::Unchanged
    }
}

/// A record's evaluated values, by target column name.
struct Vals<'t> {
    names: &'t [String],
    vals: Vec<Option<Val>>,
}

impl Vals<'_> {
    fn take(&mut self, name: &str) -> Option<Val> {
        let i = self.names.iter().position(|n| n == name)?;
        self.vals.get_mut(i)?.take()
    }

    fn text(&mut self, name: &str) -> Option<String> {
        match self.take(name)? {
            Val::Text(s) => Some(s),
            _ => None,
        }
    }

    fn time(&mut self, name: &str) -> Option<DateTime<Utc>> {
        match self.take(name)? {
            Val::Time(t) => Some(t),
            _ => None,
        }
    }

    fn date(&mut self, name: &str) -> Option<NaiveDate> {
        match self.take(name)? {
            Val::Date(d) => Some(d),
            _ => None,
        }
    }

    fn num(&mut self, name: &str) -> Option<f64> {
        match self.take(name)? {
            Val::Num(n) => Some(n),
            _ => None,
        }
    }

    // Required columns are checked when evaluated, so these only fail if a mapping left a
    // required column unmapped, which resolution refuses; still an error, never a panic.
    fn req_text(&mut self, name: &str) -> Result<String, Fault> {
        self.text(name).ok_or_else(|| missing(name))
    }

    fn req_time(&mut self, name: &str) -> Result<DateTime<Utc>, Fault> {
        self.time(name).ok_or_else(|| missing(name))
    }

    fn coding(&mut self) -> Result<Coding, Fault> {
        Ok(Coding {
            system: self.req_text("code_system")?,
            code: self.req_text("code")?,
            display: self.text("display"),
        })
    }
}

fn missing(name: &str) -> Fault {
    fault(name, "missing_field", format!("no value for {name}"))
}

/// One curated row of any table.
enum Row {
    Patient(Patient),
    Encounter(Encounter),
    Observation(Observation),
    Condition(Condition),
    Procedure(Procedure),
    Medication(Medication),
    CareTeam(CareTeamMember),
    Consent(crate::curated::Consent),
    Immunization(c::Immunization),
    Allergy(c::Allergy),
    Report(c::DiagnosticReport),
    Administration(c::MedicationAdministration),
    Identifier(c::PatientIdentifier),
}

fn push_row(t: &mut CuratedTables, row: Row) {
    match row {
        Row::Patient(r) => t.patients.push(r),
        Row::Encounter(r) => t.encounters.push(r),
        Row::Observation(r) => t.observations.push(r),
        Row::Condition(r) => t.conditions.push(r),
        Row::Procedure(r) => t.procedures.push(r),
        Row::Medication(r) => t.medications.push(r),
        Row::CareTeam(r) => t.care_team.push(r),
        Row::Consent(r) => t.consent.push(r),
        Row::Immunization(r) => t.immunizations.push(r),
        Row::Allergy(r) => t.allergies.push(r),
        Row::Report(r) => t.diagnostic_reports.push(r),
        Row::Administration(r) => t.medication_administrations.push(r),
        Row::Identifier(r) => t.patient_identifiers.push(r),
    }
}
