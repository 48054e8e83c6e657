//! Curation of one resource: the head every resource shares (id, times, status), then the
//! extractor of its type.

use super::administration::administration;
use super::allergy::allergy;
use super::codes::codes;
use super::condition::condition;
use super::consent::consent;
use super::encounter::encounter;
use super::immunization::immunization;
use super::medication::medication;
use super::observation::observation;
use super::outcome::{Curated, Fault, Fx, Outcome, Rows};
use super::patient::{identifiers, patient};
use super::procedure::procedure;
use super::report::report;
use super::resolve::{resource_id, Resolver};
use super::time::time;
use super::walk::Unit;
use crate::curated::{RowMeta, Table};
use crate::ingest::json::Value;
use crate::ingest::Context;

/// Curates one resource into its rows, or reports it.
pub(super) fn curate(u: &Unit<'_>, rz: &Resolver<'_, '_>, ctx: &Context) -> Outcome {
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
            let ids = identifiers(res, head);
            patient(res, head, ctx).map(|r| Rows::Patient(Box::new(r), ids))
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
        "Immunization" => (Table::Immunizations, |res, head, rz, ctx, _| {
            immunization(res, head, rz, ctx).map(|r| Rows::Immunization(Box::new(r)))
        }),
        "AllergyIntolerance" => (Table::Allergies, |res, head, rz, ctx, _| {
            allergy(res, head, rz, ctx).map(|r| Rows::Allergy(Box::new(r)))
        }),
        "DiagnosticReport" => (Table::DiagnosticReports, |res, head, rz, ctx, _| {
            report(res, head, rz, ctx).map(|r| Rows::Report(Box::new(r)))
        }),
        "MedicationAdministration" => {
            (Table::MedicationAdministrations, |res, head, rz, ctx, _| {
                administration(res, head, rz, ctx).map(Rows::Administrations)
            })
        }
        _ => return u.skipped(rtype),
    };
    // What was not done did not happen: no row (the raw version keeps it).
    let not_done = u.res.get("status").and_then(Value::as_str) == Some("not-done");
    if not_done {
        match table {
            Table::Procedures => return u.skipped("Procedure (status not-done)"),
            Table::Immunizations => return u.skipped("Immunization (status not-done)"),
            Table::MedicationAdministrations => {
                return u.skipped("MedicationAdministration (status not-done)")
            }
            _ => {}
        }
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
                source_id: head.meta.source_id,
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
pub(super) type Extract =
    fn(Value<'_>, &Head, &Resolver<'_, '_>, &Context, &mut Vec<Fault>) -> Fx<Rows>;

/// What every resource contributes regardless of type.
pub(super) struct Head {
    /// The resource id (or fullUrl uuid); `None` when the resource has neither.
    pub(super) id: Option<String>,
    /// The id written into the row: `id`, else `file:record`.
    pub(super) row_id: String,
    pub(super) version: Option<u64>,
    /// Provenance and knowledge time; `retracted_at` set for `entered-in-error`.
    pub(super) meta: RowMeta,
}

impl Head {
    pub(super) fn read(u: &Unit<'_>, rtype: &str, table: Table, ctx: &Context) -> Fx<Head> {
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
            Table::Conditions | Table::Allergies => {
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
