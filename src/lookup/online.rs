//! Online lookups: the latest timeline of each feature set held in memory ([`Serving`]),
//! answering "features of patient p at t" (t defaults to now, from the injected clock); a
//! newly materialized timeline is swapped in atomically ([`Online`]) while requests in
//! flight finish on the old one.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use super::choose_timeline;
use crate::error::{Error, Result};
use crate::features::{self, FeatureSet, Knowledge, PatientFeatures, TimelineIndex};
use crate::hash::ContentHash;
use crate::store::Store;

/// One set's timeline, held in memory for online lookups.
#[derive(Debug)]
pub struct Serving {
    /// The set (from the timeline's lineage).
    pub set: FeatureSet,
    /// The timeline version.
    pub timeline: ContentHash,
    /// Its index.
    pub index: TimelineIndex,
}

/// An online answer.
#[derive(Debug, Clone)]
pub struct OnlineAnswer {
    /// The timeline version that answered.
    pub timeline: ContentHash,
    /// The time the values hold at.
    pub at: DateTime<Utc>,
    /// The features, in answer order.
    pub features: Vec<String>,
    /// One entry per requested patient, in request order.
    pub patients: Vec<PatientFeatures>,
}

impl Serving {
    /// Loads a stored timeline.
    ///
    /// # Errors
    /// As [`features::load_index`].
    pub async fn load(store: &Store, timeline: &ContentHash) -> Result<Serving> {
        let (set, index) = features::load_index(store, timeline).await?;
        Ok(Serving {
            set,
            timeline: *timeline,
            index,
        })
    }

    /// The positions of the requested features (all of the set when empty), refusing
    /// labels.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a feature the set does not define;
    /// [`Error::FailedPrecondition`] when a requested feature is a label.
    pub fn positions(&self, features: &[String]) -> Result<Vec<usize>> {
        let positions: Vec<usize> = if features.is_empty() {
            (0..self.index.features().len()).collect()
        } else {
            features
                .iter()
                .map(|f| {
                    self.index
                        .feature_position(f)
                        .ok_or_else(|| Error::NotFound {
                            reference: format!("feature {f} in set {}", self.set.name),
                        })
                })
                .collect::<Result<_>>()?
        };
        let labels: Vec<&str> = positions
            .iter()
            .map(|&i| &self.index.features()[i])
            .filter(|(_, info)| info.is_label)
            .map(|(n, _)| n.as_str())
            .collect();
        if !labels.is_empty() {
            return Err(Error::precondition(
                format!("feature set {}", self.set.name),
                format!(
                    "{} {} labels, which look into the future and are refused in online lookups; ask for other features or use a set without labels",
                    labels.join(", "),
                    if labels.len() == 1 { "is a label" } else { "are" }
                ),
            ));
        }
        Ok(positions)
    }

    /// Features of `patients` at `at`, through the rule historical lookups use.
    ///
    /// # Errors
    /// As [`Serving::positions`].
    pub fn answer(
        &self,
        patients: &[String],
        features: &[String],
        at: DateTime<Utc>,
    ) -> Result<OnlineAnswer> {
        let positions = self.positions(features)?;
        let t = at.timestamp_micros();
        let names: Vec<String> = positions
            .iter()
            .map(|&i| self.index.features()[i].0.clone())
            .collect();
        let rows = patients
            .iter()
            .map(|p| {
                let pi = self.index.patient(p);
                PatientFeatures {
                    patient_id: p.clone(),
                    at,
                    values: positions
                        .iter()
                        .zip(&names)
                        .map(|(&fi, n)| (n.clone(), self.index.resolve(pi, fi, t).to_value()))
                        .collect(),
                }
            })
            .collect();
        Ok(OnlineAnswer {
            timeline: self.timeline,
            at,
            features: names,
            patients: rows,
        })
    }
}

/// The latest timelines, in memory, for online lookups. Cheap to clone (shared).
#[derive(Clone)]
pub struct Online {
    store: Store,
    sets: Arc<ArcSwap<HashMap<String, Arc<Serving>>>>,
    /// Serializes loads so two refreshes of one set do not race.
    loading: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sets = self.sets.load();
        f.debug_struct("Online")
            .field("store", &self.store.root())
            .field("sets", &sets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Online {
    /// An online index over `store`, holding nothing yet: sets load on first use or on
    /// [`Online::refresh`].
    pub fn new(store: Store) -> Online {
        Online {
            store,
            sets: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            loading: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The timeline currently served for `set`, if loaded.
    pub fn snapshot(&self, set: &str) -> Option<Arc<Serving>> {
        self.sets.load().get(set).cloned()
    }

    /// Loads the newest "as known" timeline of `set` and swaps it in; requests in flight
    /// finish on the version they started with. Returns the timeline served.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the set was never materialized; load errors.
    pub async fn refresh(&self, set: &str) -> Result<ContentHash> {
        let _guard = self.loading.lock().await;
        let m = choose_timeline(&self.store, set, None, Knowledge::AsKnown)?;
        if let Some(s) = self.snapshot(set) {
            if s.timeline == m.hash {
                return Ok(m.hash);
            }
        }
        let serving = Arc::new(Serving::load(&self.store, &m.hash).await?);
        self.sets.rcu(|old| {
            let mut new = HashMap::clone(old);
            new.insert(set.to_string(), serving.clone());
            new
        });
        Ok(m.hash)
    }

    /// Features of `patients` at `at` (default: now, from the store's clock) from the
    /// timeline in memory (loaded on first use). Unknown patients get no-data values.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a set never materialized or an unknown feature;
    /// [`Error::FailedPrecondition`] for labels.
    pub async fn get(
        &self,
        set: &str,
        patients: &[String],
        features: &[String],
        at: Option<DateTime<Utc>>,
    ) -> Result<OnlineAnswer> {
        let serving = match self.snapshot(set) {
            Some(s) => s,
            None => {
                self.refresh(set).await?;
                self.snapshot(set).ok_or_else(|| {
                    Error::Internal(format!("set {set} not served right after loading"))
                })?
            }
        };
        let at = at.unwrap_or_else(|| self.store.clock().now());
        serving.answer(patients, features, at)
    }
}
