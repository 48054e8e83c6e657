//! Online feature sets brought up to date after a live feed's seal (`docs/live.md`, "Online
//! after a seal"): the seal commits curated versions; an incremental materialization from
//! each online set's newest timeline recomputes only the patients whose rows changed, and
//! [`crate::lookup::Online::apply`] swaps those patients in (readers never see a half
//! update; lookups name the timeline that answered).

use std::sync::Arc;

use tokio::sync::Notify;

use super::State;
use crate::features::{self, MaterializeOptions, MaterializeOutcome};
use crate::security::audit::{AuditEntry, AuditLog, Outcome};

/// The name these materializations have in the audit trail.
pub(crate) const AUDIT_RPC: &str = "live:materialize";

/// Spawns the task that, each time `sealed` is notified, brings every online set of `state`
/// up to date. Seals notified while one update runs coalesce into one more update.
pub(crate) fn spawn(state: State, audit: Option<Arc<AuditLog>>, sealed: Arc<Notify>) {
    tokio::spawn(async move {
        loop {
            sealed.notified().await;
            refresh(&state, audit.as_deref()).await;
        }
    });
}

/// One update: for each set served online (declared `online`, or already loaded), an
/// incremental materialization applied to the online store. Errors are logged (the next
/// seal tries again); each set's outcome is audited.
pub(crate) async fn refresh(state: &State, audit: Option<&AuditLog>) {
    for (name, set) in &state.repo.sets {
        if !(set.online || state.online.snapshot(name).is_some()) {
            continue;
        }
        let (store, repo, job_set) = (state.store.clone(), state.repo.clone(), name.clone());
        let done = state
            .jobs
            .run(async move {
                features::materialize_latest(
                    &store,
                    &repo,
                    &job_set,
                    &MaterializeOptions::default(),
                    false,
                )
                .await
            })
            .await;
        let applied = match done {
            Ok(out) => state.online.apply(name, &out).await.map(|_| out),
            Err(e) => Err(e),
        };
        match &applied {
            Ok(out) => tracing::info!(
                set = name,
                timeline = %out.hash,
                recomputed = out.recomputed,
                reused = out.reused,
                "online set updated after a seal"
            ),
            Err(e) => tracing::error!(
                set = name,
                "updating the online set after a seal failed (the next seal tries again): {e}"
            ),
        }
        if let Some(log) = audit {
            if let Err(e) = log.append(entry(name, &applied)) {
                tracing::error!(
                    set = name,
                    "audit: cannot record the update after a seal: {e}"
                );
            }
        }
    }
}

/// The audit record of one set's update.
fn entry(set: &str, applied: &crate::Result<MaterializeOutcome>) -> AuditEntry {
    let mut e = AuditEntry::new(AUDIT_RPC, Outcome::System, "");
    e.action = Some("materialize".into());
    e.feature_set = Some(set.to_string());
    match applied {
        Ok(out) => {
            e.datasets = vec![out.hash.to_string()];
            e.outcome = Some("ok".into());
            e.reason = format!(
                "after a seal: timeline {} ({}; {} patients recomputed, {} reused), served online",
                out.hash, out.basis, out.recomputed, out.reused
            );
        }
        Err(err) => {
            e.outcome = Some(err.class().name().to_string());
            e.error = Some(err.to_string());
            e.reason = "after a seal: the online set was not updated".into();
        }
    }
    e
}
