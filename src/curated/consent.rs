//! The `consent` table's vocabulary, and the rule that says what a patient decided about
//! research as known at a time (`docs/curated-tables.md`, "consent"; `docs/security.md`,
//! "Consent").
//!
//! The rule, at time `t`:
//! 1. Only rows known by `t` (`known_at <= t`) are read.
//! 2. Of each consent record (`consent_id`), the version known last (greatest `known_at`,
//!    then the last by `source_id`) is its state: a later version (a withdrawal, an
//!    `entered-in-error`) replaces the earlier ones even when they came in another ingest.
//! 3. That version is in force if it is not retracted by `t` (`retracted_at` null or `> t`)
//!    and its period covers `t` (`period_start` null or `<= t`, `period_end` null or `> t`).
//! 4. Of a patient's records in force with scope `research`, the latest decision
//!    (`decided_at`, else `known_at`; then `known_at`; then `consent_id`) is the patient's:
//!    `deny` opts the patient out of research, `permit` (a withdrawn opt-out) keeps them in.
//!    A patient with no research record in force is in (Ward follows an opt-out model).

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{DateTime, Utc};

/// The FHIR code system of `Consent.scope` (R4).
pub const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
/// Scope: use of the patient's data for research.
pub const RESEARCH: &str = "research";
/// Scope: consent to treatment.
pub const TREATMENT: &str = "treatment";
/// Scope: privacy consent (who may see the record).
pub const PATIENT_PRIVACY: &str = "patient-privacy";
/// Scope: advance directive.
pub const ADR: &str = "adr";
/// The scopes a row may hold.
pub const SCOPES: [&str; 4] = [RESEARCH, TREATMENT, PATIENT_PRIVACY, ADR];
/// Decision: the scope's use is permitted.
pub const PERMIT: &str = "permit";
/// Decision: the scope's use is refused (for research: an opt-out).
pub const DENY: &str = "deny";

/// A scope as written (`research`, `Research`, `consentscope|research`, the system URI
/// then `|` then the code) as one of [`SCOPES`]; `None` for anything else.
pub fn scope(value: &str) -> Option<&'static str> {
    let v = value.trim();
    let code = match v.rsplit_once('|') {
        Some((system, code)) => {
            let system = system.trim();
            if !(system.eq_ignore_ascii_case(SCOPE_SYSTEM)
                || system.eq_ignore_ascii_case("consentscope"))
            {
                return None;
            }
            code.trim()
        }
        None => v,
    };
    SCOPES.into_iter().find(|s| s.eq_ignore_ascii_case(code))
}

/// A decision as written (`permit`/`deny`, any case; also `opt-in`/`opt-out`, `yes`/`no`
/// as consent forms export them) as [`PERMIT`] or [`DENY`]; `None` for anything else.
pub fn decision(value: &str) -> Option<&'static str> {
    match value.trim().to_ascii_lowercase().as_str() {
        "permit" | "opt-in" | "optin" | "yes" | "y" => Some(PERMIT),
        "deny" | "opt-out" | "optout" | "no" | "n" => Some(DENY),
        _ => None,
    }
}

/// What the `consent` table says about research at one time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResearchConsent {
    /// Patients whose research decision in force is `deny`.
    pub opted_out: BTreeSet<String>,
    /// Patients whose research decision in force is `permit`.
    pub permitted: BTreeSet<String>,
}

/// One row as the rule reads it.
struct Row<'a> {
    consent_id: &'a str,
    patient_id: &'a str,
    scope: &'a str,
    decision: &'a str,
    period_start: Option<i64>,
    period_end: Option<i64>,
    decided_at: Option<i64>,
    source_id: &'a str,
    known_at: i64,
    retracted_at: Option<i64>,
}

/// The research decisions in force at `at` in `consent` batches (the table's schema), by
/// the rule of this module.
///
/// # Errors
/// A message naming the column that is missing or of the wrong type, or the row whose
/// required value is null.
pub fn research_at(batches: &[RecordBatch], at: DateTime<Utc>) -> Result<ResearchConsent, String> {
    let t = at.timestamp_micros();
    // Step 2: per record, the version known last by `t`.
    let mut latest: BTreeMap<&str, Row<'_>> = BTreeMap::new();
    for (bi, b) in batches.iter().enumerate() {
        let text = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| format!("consent batch {bi}: no utf8 column {name}"))
        };
        let time = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
                .ok_or_else(|| format!("consent batch {bi}: no timestamp[us] column {name}"))
        };
        let (cid, pid, scope, decision, source_id) = (
            text("consent_id")?,
            text("patient_id")?,
            text("scope")?,
            text("decision")?,
            text("source_id")?,
        );
        let (start, end, decided, known, retracted) = (
            time("period_start")?,
            time("period_end")?,
            time("decided_at")?,
            time("known_at")?,
            time("retracted_at")?,
        );
        let opt = |a: &arrow::array::TimestampMicrosecondArray, i: usize| {
            a.is_valid(i).then(|| a.value(i))
        };
        for i in 0..b.num_rows() {
            let required = [
                ("consent_id", cid.is_valid(i)),
                ("patient_id", pid.is_valid(i)),
                ("scope", scope.is_valid(i)),
                ("decision", decision.is_valid(i)),
                ("known_at", known.is_valid(i)),
            ];
            if let Some((name, _)) = required.iter().find(|(_, ok)| !ok) {
                return Err(format!("consent batch {bi} row {i}: {name} is null"));
            }
            let row = Row {
                consent_id: cid.value(i),
                patient_id: pid.value(i),
                scope: scope.value(i),
                decision: decision.value(i),
                period_start: opt(start, i),
                period_end: opt(end, i),
                decided_at: opt(decided, i),
                source_id: if source_id.is_valid(i) {
                    source_id.value(i)
                } else {
                    ""
                },
                known_at: known.value(i),
                retracted_at: opt(retracted, i),
            };
            if row.known_at > t {
                continue;
            }
            match latest.get(row.consent_id) {
                Some(seen) if (seen.known_at, seen.source_id) > (row.known_at, row.source_id) => {}
                _ => {
                    latest.insert(row.consent_id, row);
                }
            }
        }
    }
    // Steps 3 and 4.
    let mut decided: BTreeMap<&str, (i64, i64, &str, &str)> = BTreeMap::new();
    for row in latest.values() {
        let in_force = row.retracted_at.is_none_or(|r| r > t)
            && row.period_start.is_none_or(|s| s <= t)
            && row.period_end.is_none_or(|e| e > t);
        if !in_force || scope(row.scope) != Some(RESEARCH) {
            continue;
        }
        let rank = (
            row.decided_at.unwrap_or(row.known_at),
            row.known_at,
            row.consent_id,
            row.decision,
        );
        match decided.get(row.patient_id) {
            Some(seen) if (seen.0, seen.1, seen.2) >= (rank.0, rank.1, rank.2) => {}
            _ => {
                decided.insert(row.patient_id, rank);
            }
        }
    }
    let mut out = ResearchConsent::default();
    for (patient, (.., d)) in decided {
        if decision(d) == Some(DENY) {
            out.opted_out.insert(patient.to_string());
        } else {
            out.permitted.insert(patient.to_string());
        }
    }
    Ok(out)
}
