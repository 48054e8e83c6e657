//! FHIR R4: Bundle JSON and Bulk Data NDJSON into curated rows.
//!
//! One entry point, [`parse`] (or [`parse_batches`]), reads two framings ([`Framing`]): whole
//! JSON documents (a Bundle of any type, nested Bundles included, or a single resource) and
//! FHIR Bulk Data files (one resource a line). Each document or line is parsed with
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
//!   (below); Immunization → `immunizations`; AllergyIntolerance → `allergies`;
//!   DiagnosticReport → `diagnostic_reports` (with its result Observations' ids);
//!   MedicationAdministration → `medication_administrations` (the drug read as an order's).
//! - Medication resources are read only to resolve `medicationReference` and are reported as
//!   [`Skipped`]; so are all other resource types, Bundle entries without a resource (a
//!   transaction `DELETE`) and Procedures, Immunizations and MedicationAdministrations whose
//!   status is `not-done` (they did not happen).
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
//! - A resource whose status is `entered-in-error` (for a Condition or an
//!   AllergyIntolerance, its verificationStatus)
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

mod administration;
mod allergy;
mod codes;
mod condition;
mod consent;
mod curate;
mod encounter;
mod framing;
mod immunization;
mod index;
mod medication;
mod observation;
mod outcome;
mod patient;
mod procedure;
mod report;
mod resolve;
mod scan;
#[cfg(test)]
mod tests;
mod time;
mod versions;
mod walk;

use arrow::error::ArrowError;

use self::framing::{batches_of, bundles, ndjson, rows_of, Part};
use super::{Context, Input, Parsed, ParsedBatches};
use crate::curated::RowSink;

/// How FHIR input is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// JSON documents: each input is a Bundle (any type, nested Bundles included) or a single
    /// resource. Documents are parsed in parallel.
    Bundle,
    /// FHIR Bulk Data NDJSON: one resource a line (typically one file per resource type,
    /// already decompressed). The `record` of every location is the 1-based line number;
    /// blank lines are not records and are passed over.
    ///
    /// One parallel pass takes each line once, in runs of consecutive lines. A line that
    /// starts with the `resourceType` of a type Ward does not curate is only checked to be
    /// valid JSON (`scan_head`, without building it: Claims and EOBs are most of a Synthea
    /// export's bytes) and skipped; any other line is parsed and curated at once. A resource
    /// whose curation needs the rest of the input (a `urn:uuid:` reference to another line, a
    /// `medicationReference` to a Medication of another line) stops its run. Only if there is
    /// one, a second parallel pass reads every line's `resourceType` and `id` (and every
    /// Medication's code) into an index, and the runs that stopped are made again with it.
    /// Bulk exports use `Type/id` references, so the second pass is rare.
    Ndjson,
}

/// Parses FHIR input framed as `framing` into curated rows, bad records and skipped records.
///
/// Rows, bad records and skipped records come out in input order. Never fails and never
/// panics: whatever cannot be read is reported in [`Parsed::bad`].
pub fn parse(inputs: &[Input<'_>], framing: Framing, ctx: &Context) -> Parsed {
    rows_of(parts(inputs, framing, ctx))
}

/// [`parse`] with each table's rows appended to Arrow column builders as they are curated,
/// without holding them as row structs: what an ingest run writes.
///
/// # Errors
/// Only an Arrow error joining the columns, which would be a bug.
pub fn parse_batches(
    inputs: &[Input<'_>],
    framing: Framing,
    ctx: &Context,
) -> Result<ParsedBatches, ArrowError> {
    batches_of(parts(inputs, framing, ctx))
}

/// What each run of input became, in input order.
fn parts<S: RowSink + Default + Send>(
    inputs: &[Input<'_>],
    framing: Framing,
    ctx: &Context,
) -> Vec<Part<S>> {
    match framing {
        Framing::Bundle => bundles(inputs, ctx),
        Framing::Ndjson => ndjson(inputs, ctx),
    }
}
