//! The model card commands: `register` and `models` (docs/models.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::clock::SharedClock;
use crate::models::{self, Registration};
use crate::store::Store;

use super::audit::audit_cli_read;

/// The arguments of `ward register`.
pub(super) struct Register {
    pub(super) name: String,
    pub(super) training: String,
    pub(super) metrics: Option<PathBuf>,
    pub(super) metric: Vec<String>,
    pub(super) description: String,
    pub(super) owner: String,
}

/// `ward register`: stores a model card; prints its hash. The registration is recorded in
/// the audit trail (action `datasets_write`, the card and its training set in `datasets`).
pub(super) async fn register(dir: &Path, clock: &SharedClock, r: Register) -> Result<()> {
    let mut metrics = BTreeMap::new();
    if let Some(path) = &r.metrics {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the metrics file {}", path.display()))?;
        models::parse_metrics_json(&text, &path.display().to_string(), &mut metrics)?;
    }
    for m in &r.metric {
        models::parse_metric_arg(&mut metrics, m)?;
    }
    let store = Store::open_existing(dir, clock.clone())?;
    let reg = Registration {
        name: r.name,
        training: r.training,
        owner: r.owner,
        description: r.description,
        metrics,
    };
    let made = models::register(&store, &reg).await;
    let mut entry =
        crate::security::audit::AuditEntry::local("register", "datasets_write").with_result(&made);
    if let Ok(out) = &made {
        entry.datasets = vec![out.manifest.hash.to_string(), out.card.training.to_string()];
    }
    audit_cli_read(&store, entry)?;
    let out = made?;
    eprintln!(
        "{} model card {} (training set {}, {} metric{})",
        if out.created {
            "registered"
        } else {
            "already registered:"
        },
        out.card.name,
        out.card.training,
        out.card.metrics.len(),
        if out.card.metrics.len() == 1 { "" } else { "s" }
    );
    outln!("{}", out.manifest.hash);
    Ok(())
}

/// `ward models`: the registered model cards, newest first.
pub(super) fn list(
    dir: &Path,
    clock: &SharedClock,
    name: Option<String>,
    json: bool,
) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let cards = models::list(&store, name.as_deref())?;
    if json {
        let v: Vec<serde_json::Value> = cards
            .iter()
            .map(|(m, c)| {
                serde_json::json!({
                    "hash": m.hash.to_string(),
                    "created_at": m.created_at,
                    "card": c,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for (m, c) in &cards {
        let metrics = c
            .metrics
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        outln!(
            "{}  {:<24} {}  training {}  {}",
            m.hash,
            c.name,
            m.created_at.format("%Y-%m-%d %H:%M:%S"),
            c.training,
            metrics
        );
    }
    Ok(())
}
