//! Timelines published by another process, picked up by a running server (`docs/deploy.md`,
//! "The refresh bound"): several `ward serve` processes over one store answer the same.
//!
//! Every `[reload] timelines_secs` (default 2 s; 0 disables) the server reads the head of the
//! timeline name of each set it serves online (declared `online`, or already loaded): one
//! head read per set, a listing of the name's create-only entries in `refs/`. When a head
//! moved since the last poll and names a timeline other than the one served, the newest "as
//! known" timeline of the set is loaded whole on the job runtime (`jobs.rs`: the request
//! workers keep answering) and swapped in atomically ([`crate::lookup::Online::refresh`]):
//! a lookup sees the old timeline or the new one, never a failure or a mix. Each swap (and
//! each failure to load, once per head) is audited, as after a seal (`after_seal.rs`).
//!
//! So a timeline whose head moved at T is served by every replica by T + `timelines_secs` +
//! the time to load it. A failed load is retried at every poll until it succeeds or the head
//! moves again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::State;
use crate::features;
use crate::hash::ContentHash;
use crate::security::audit::{AuditEntry, AuditLog, Outcome};

/// The name these swaps have in the audit trail.
pub(crate) const AUDIT_RPC: &str = "store:refresh";

/// What the poller knows of each set between polls: the head sequence number it last acted
/// on, and whether acting on it succeeded (a failure is retried, but logged and audited
/// once per head).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    heads: HashMap<String, (u64, bool)>,
}

/// One swap made by a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Swapped {
    pub(crate) set: String,
    pub(crate) from: Option<ContentHash>,
    pub(crate) to: ContentHash,
}

/// Spawns the poller: every `every`, [`poll`]. The first poll runs one interval after the
/// start (the server loaded the newest timelines when it bound).
pub(crate) fn spawn(
    state: State,
    audit: Arc<AuditLog>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            poll(&state, Some(&audit), &mut seen).await;
        }
    })
}

/// One poll: for each set served online, its timeline head; a moved head loads and swaps in
/// the set's newest "as known" timeline. Returns the swaps made. Errors are logged and
/// audited (the next poll tries again), never returned.
pub(crate) async fn poll(state: &State, audit: Option<&AuditLog>, seen: &mut Seen) -> Vec<Swapped> {
    let mut swapped = Vec::new();
    for (name, set) in &state.repo.sets {
        let served = state.online.snapshot(name);
        if !(set.online || served.is_some()) {
            continue;
        }
        // The head read runs on the job runtime too: on object storage it is a request.
        let (store, timeline_name) = (state.store.clone(), features::timeline_name(name));
        let head = state
            .jobs
            .run(async move { store.head(&timeline_name) })
            .await;
        let head = match head {
            Ok(Some(h)) => h,
            // Never materialized: nothing to serve yet (a lookup loads it on first use).
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(set = name, "refresh: cannot read the timeline head: {e}");
                continue;
            }
        };
        let before = seen.heads.get(name).copied();
        if before == Some((head.seq, true)) {
            continue;
        }
        let from = served.map(|s| s.timeline);
        if from == Some(head.hash) {
            seen.heads.insert(name.clone(), (head.seq, true));
            continue;
        }
        let started = Instant::now();
        let (online, set_name) = (state.online.clone(), name.clone());
        let loaded = state
            .jobs
            .run(async move { online.refresh(&set_name).await })
            .await;
        let first_failure = before != Some((head.seq, false));
        match &loaded {
            Ok(to) => {
                seen.heads.insert(name.clone(), (head.seq, true));
                if Some(*to) == from {
                    // The head is a timeline of the other knowledge ("as occurred"): the
                    // served one is still the newest "as known".
                    continue;
                }
                tracing::info!(
                    set = name,
                    timeline = %to,
                    load_ms = started.elapsed().as_millis() as u64,
                    "refresh: serving a timeline published into the store"
                );
                swapped.push(Swapped {
                    set: name.clone(),
                    from,
                    to: *to,
                });
            }
            Err(e) => {
                seen.heads.insert(name.clone(), (head.seq, false));
                if !first_failure {
                    continue;
                }
                tracing::error!(
                    set = name,
                    "refresh: cannot load the published timeline {} (retried at every poll): {e}",
                    head.hash
                );
            }
        }
        if let Some(log) = audit {
            if let Err(e) = log.append(entry(name, from.as_ref(), &head.hash, &loaded)) {
                tracing::error!(set = name, "audit: cannot record the refresh: {e}");
            }
        }
    }
    swapped
}

/// The audit record of one set's swap (or failure to load).
fn entry(
    set: &str,
    from: Option<&ContentHash>,
    head: &ContentHash,
    loaded: &crate::Result<ContentHash>,
) -> AuditEntry {
    let mut e = AuditEntry::new(AUDIT_RPC, Outcome::System, "");
    e.action = Some("refresh".into());
    e.feature_set = Some(set.to_string());
    let was = from.map_or_else(|| "none".to_string(), ToString::to_string);
    match loaded {
        Ok(to) => {
            e.datasets = vec![to.to_string()];
            e.outcome = Some("ok".into());
            e.reason = format!(
                "published into the store by another process: timeline {to} served online (was {was})"
            );
        }
        Err(err) => {
            e.datasets = vec![head.to_string()];
            e.outcome = Some(err.class().name().to_string());
            e.error = Some(err.to_string());
            e.reason = format!(
                "published into the store by another process: timeline {head} not loaded (still serving {was})"
            );
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{FeatureRepo, MaterializeOptions};
    use crate::service::{ServeConfig, Server};
    use crate::store::Store;

    const REPO: &str = include_str!("../../examples/features/readmission.toml");

    async fn put_cohort(store: &Store, patients: u64, seed: u64) {
        let tables = crate::synth::generate_cohort(&crate::synth::SynthOptions {
            patients,
            seed,
            ..Default::default()
        });
        for t in crate::curated::Table::ALL {
            let b = tables.to_batch(t).unwrap();
            store
                .put_batches(
                    b.schema(),
                    vec![b],
                    crate::store::PutOptions::new(t.name(), crate::store::Kind::Curated),
                )
                .await
                .unwrap();
        }
    }

    /// A poll swaps in a timeline another process published, audits it, and does nothing
    /// when nothing moved; without the poll the server keeps the old timeline.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_published_timeline_is_swapped_in_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), crate::clock::system()).unwrap();
        let repo = FeatureRepo::parse(REPO, "readmission.toml").unwrap();
        put_cohort(&store, 20, 1).await;
        let first = features::materialize(
            &store,
            &repo,
            "readmission_online",
            &MaterializeOptions::default(),
        )
        .await
        .unwrap();
        let server = Server::bind(&ServeConfig::default(), store.clone(), repo.clone())
            .await
            .unwrap();
        let state = server.state.clone();
        let log = AuditLog::open(
            &dir.path().join("audit"),
            crate::clock::system(),
            crate::security::audit::AuditOptions::default(),
        )
        .unwrap();
        let mut seen = Seen::default();
        assert!(poll(&state, Some(&log), &mut seen).await.is_empty());

        assert!(
            state.online.snapshot("readmission").is_none(),
            "a set neither online nor loaded is not polled"
        );
        // Another process (here: another store handle) publishes a new timeline.
        let other = Store::open(dir.path().join("store"), crate::clock::system()).unwrap();
        put_cohort(&other, 25, 2).await;
        let second = features::materialize(
            &other,
            &repo,
            "readmission_online",
            &MaterializeOptions::default(),
        )
        .await
        .unwrap();
        assert_ne!(first.hash, second.hash);
        assert_eq!(
            state
                .online
                .snapshot("readmission_online")
                .unwrap()
                .timeline,
            first.hash,
            "nothing swaps without a poll"
        );
        let swapped = poll(&state, Some(&log), &mut seen).await;
        assert_eq!(
            swapped,
            [Swapped {
                set: "readmission_online".into(),
                from: Some(first.hash),
                to: second.hash
            }]
        );
        assert_eq!(
            state
                .online
                .snapshot("readmission_online")
                .unwrap()
                .timeline,
            second.hash
        );
        assert!(poll(&state, Some(&log), &mut seen).await.is_empty());
        drop(log);
        let text = std::fs::read_to_string(dir.path().join("audit/audit-000001.jsonl")).unwrap();
        let records: Vec<&str> = text.lines().filter(|l| l.contains(AUDIT_RPC)).collect();
        assert_eq!(records.len(), 1, "{text}");
        assert!(
            records[0].contains(&second.hash.to_string()),
            "{}",
            records[0]
        );
    }
}
