//! `drift` and `skew`: the online lookup log against a training set, and replayed as
//! historical lookups (`docs/monitoring.md`). Both reads are recorded in the store's audit
//! trail before anything is printed.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::audit::audit_cli_read;
use crate::clock::SharedClock;
use crate::store::{Store, VersionRef};

fn since(s: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    s.map(|s| {
        crate::store::manifest::parse_time(s)
            .with_context(|| format!("--since {s:?}: use RFC 3339 or YYYY-MM-DD"))
    })
    .transpose()
}

#[allow(clippy::too_many_arguments)]
/// `ward drift`: PSI per feature between a training set and the logged online values;
/// fails when `fail_above` is given and a feature's PSI exceeds it.
pub(super) async fn drift(
    dir: &Path,
    clock: &SharedClock,
    training: String,
    online: String,
    since_s: Option<String>,
    set: Option<String>,
    fail_above: Option<f64>,
    json: bool,
) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let req = crate::monitoring::DriftRequest {
        training: training
            .parse::<VersionRef>()
            .with_context(|| format!("--training {training:?}"))?,
        online: online
            .parse::<VersionRef>()
            .with_context(|| format!("--online {online:?}"))?,
        since: since(since_s.as_deref())?,
        feature_set: set,
    };
    let report = crate::monitoring::drift(&store, &req).await;
    let mut entry =
        crate::security::audit::AuditEntry::local("drift", "datasets_read").with_result(&report);
    if let Ok(r) = &report {
        entry.datasets = vec![r.training.to_string(), r.online.to_string()];
    }
    audit_cli_read(&store, entry)?;
    let report = report?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for line in report.lines() {
            outln!("{line}");
        }
    }
    if let (Some(limit), Some(max)) = (fail_above, report.max_psi) {
        if max > limit {
            let over: Vec<&str> = report
                .features
                .iter()
                .filter(|f| f.psi.is_some_and(|p| p > limit))
                .map(|f| f.feature.as_str())
                .collect();
            anyhow::bail!(
                "drift above {limit} (PSI up to {max:.4}) in {}",
                over.join(", ")
            );
        }
    }
    Ok(())
}

/// `ward skew`: every logged online lookup replayed as a historical lookup; fails (exit
/// status 1) when a value differs or cannot be replayed.
pub(super) async fn skew(
    dir: &Path,
    clock: &SharedClock,
    online: String,
    since_s: Option<String>,
    json: bool,
) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let r = online
        .parse::<VersionRef>()
        .with_context(|| format!("LOGREF {online:?}"))?;
    let report = crate::monitoring::skew(&store, &r, since(since_s.as_deref())?).await;
    let mut entry = crate::security::audit::AuditEntry::local("skew", "historical_identified")
        .with_result(&report);
    if let Ok(r) = &report {
        entry.datasets = std::iter::once(r.online.to_string())
            .chain(r.timelines.iter().cloned())
            .collect();
        let mut patients: Vec<String> = r.examples.iter().map(|m| m.patient_id.clone()).collect();
        patients.sort();
        patients.dedup();
        entry.patients = crate::security::audit::Patients::Ids(patients);
    }
    audit_cli_read(&store, entry)?;
    let report = report?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for line in report.lines() {
            outln!("{line}");
        }
    }
    if !report.ok() {
        anyhow::bail!(
            "training/serving skew: {} of {} logged values differ from their replay{}",
            report.differing,
            report.values,
            if report.unreplayable > 0 {
                format!(", {} cannot be replayed", report.unreplayable)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
