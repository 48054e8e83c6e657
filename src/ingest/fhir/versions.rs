//! Versions: a later version of the same `ResourceType/id` retracts the rows of the earlier
//! ones.

use std::ops::Range;

use chrono::{DateTime, Utc};
use rayon::prelude::*;

use super::framing::Part;
use crate::curated::{RowSink, Table};

/// A curated resource version with an id, and where its rows are in its [`Part`].
pub(super) struct Version {
    /// Of `key`, so that the version pass sorts numbers rather than strings.
    pub(super) hash: u64,
    /// `(table, id)`: versions of one resource share it.
    pub(super) key: (Table, String),
    /// The `source_id` of its rows, which names the resource in the curated tables.
    pub(super) source_id: String,
    pub(super) version: Option<u64>,
    pub(super) known_at: DateTime<Utc>,
    /// Its rows of `key.0`.
    pub(super) rows: Range<usize>,
    /// Its `care_team` rows (an encounter's participants).
    pub(super) team: Range<usize>,
    /// Its `patient_identifiers` rows (a Patient's identifiers and links).
    pub(super) idents: Range<usize>,
}

/// Sets `retracted_at` of every resource version that a later version of the same
/// `ResourceType/id` supersedes: the rows of each earlier version get the next version's
/// `known_at`. Versions are ordered by `known_at`, then `meta.versionId`, then input order.
/// `parts` are in input order.
pub(super) fn retract_superseded<S: RowSink + Send>(parts: &mut [Part<S>]) {
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
        let idents = v.idents.clone();
        rows.for_each(|row| part.rows.retract(table, row, at));
        team.for_each(|row| part.rows.retract(Table::CareTeam, row, at));
        idents.for_each(|row| part.rows.retract(Table::PatientIdentifiers, row, at));
    }
}
