//! Online lookups: the latest timeline of each feature set held in memory ([`Serving`]),
//! answering "features of patient p at t" (t defaults to now, from the injected clock); a
//! newly materialized timeline is swapped in atomically ([`Online`]) while requests in
//! flight finish on the old one. After an incremental materialization only its changed
//! patients are loaded ([`Online::apply`]): the new [`Serving`] shares the index of every
//! other patient with the one it replaces.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use arrow::array::{AsArray, BooleanArray, RecordBatch};
use chrono::{DateTime, Utc};

use super::choose_timeline;
use crate::error::{Error, Result};
use crate::features::{
    self, Basis, FeatureSet, Knowledge, MaterializeOutcome, PatientFeatures, TimelineIndex,
};
use crate::hash::ContentHash;
use crate::store::Store;

/// One set's timeline, held in memory for online lookups.
#[derive(Debug)]
pub struct Serving {
    /// The set (from the timeline's lineage).
    pub set: FeatureSet,
    /// The timeline version.
    pub timeline: ContentHash,
    /// Its index, loaded whole: of an earlier timeline of the set when `overlay` is there.
    pub index: Arc<TimelineIndex>,
    /// The patients whose rows changed since `index`'s timeline, with their rows in
    /// `timeline`: a lookup of one of them reads this (no entry: no data), of any other
    /// patient `index`.
    overlay: Option<Arc<Overlay>>,
    /// The persons of a person-keyed timeline (from the `mpi_links` version of its
    /// lineage): a requested id is resolved to its person at the lookup time.
    persons: Option<Arc<crate::mpi::Persons>>,
}

/// The changed patients' part of a [`Serving`].
#[derive(Debug)]
struct Overlay {
    patients: HashSet<String>,
    index: TimelineIndex,
    /// The rows indexed, kept to build the next overlay.
    batches: Vec<RecordBatch>,
}

/// Changed patients up to this many are read from the new timeline with a `patient_id IN
/// (...)` filter; more with a scan that keeps them.
const IN_LIST_MAX: usize = 4096;

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
        let mut serving = Serving::new(set, *timeline, index);
        serving.persons = features::timeline_persons(store, timeline).await?;
        Ok(serving)
    }

    /// A timeline's index, loaded whole.
    pub fn new(set: FeatureSet, timeline: ContentHash, index: TimelineIndex) -> Serving {
        Serving {
            set,
            timeline,
            index: Arc::new(index),
            overlay: None,
            persons: None,
        }
    }

    /// Patients answered from the overlay (changed since the whole index was loaded).
    pub fn overlaid(&self) -> usize {
        self.overlay.as_ref().map_or(0, |o| o.patients.len())
    }

    /// The index that holds `patient`'s rows.
    fn index_of(&self, patient: &str) -> &TimelineIndex {
        match &self.overlay {
            Some(o) if o.patients.contains(patient) => &o.index,
            _ => &self.index,
        }
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

    /// Features of `patients` at `at`, through the rule historical lookups use. Against a
    /// person-keyed timeline each id is first resolved to its person as known at `at`
    /// ([`crate::mpi::Persons::person_at`]; [`PatientFeatures::person_id`] says which), so
    /// any of a person's source ids answers the person's features; an unknown id answers as
    /// an unknown patient does.
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
                let person = self.persons.as_ref().map(|ps| ps.person_at(p, t));
                let key = person.unwrap_or(p);
                let index = self.index_of(key);
                let pi = index.patient(key);
                PatientFeatures {
                    patient_id: p.clone(),
                    person_id: person.map(str::to_string),
                    at,
                    values: positions
                        .iter()
                        .zip(&names)
                        .map(|(&fi, n)| (n.clone(), index.resolve(pi, fi, t).to_value()))
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
        self.refresh_locked(set).await
    }

    async fn refresh_locked(&self, set: &str) -> Result<ContentHash> {
        let m = choose_timeline(&self.store, set, None, Knowledge::AsKnown)?;
        if let Some(s) = self.snapshot(set) {
            if s.timeline == m.hash {
                return Ok(m.hash);
            }
        }
        let serving = Arc::new(Serving::load(&self.store, &m.hash).await?);
        self.swap(set, serving);
        Ok(m.hash)
    }

    fn swap(&self, set: &str, serving: Arc<Serving>) {
        self.sets.rcu(|old| {
            let mut new = HashMap::clone(old);
            new.insert(set.to_string(), serving.clone());
            new
        });
    }

    /// Serves the timeline a materialization of `set` stored, as [`Online::refresh`] does,
    /// but after an incremental one ([`Basis::Incremental`]) from the timeline served now,
    /// only its changed patients' rows are read and indexed: the new [`Serving`] shares the
    /// index of every other patient with the old one and is swapped in whole, so a request
    /// sees either timeline, never a mix. When the changed patients since the last whole
    /// load grow past a quarter of the patients (or the timeline served is another), the
    /// timeline is loaded whole. Returns the timeline served.
    ///
    /// # Errors
    /// As [`Online::refresh`]; store errors reading the changed rows.
    pub async fn apply(&self, set: &str, out: &MaterializeOutcome) -> Result<ContentHash> {
        let _guard = self.loading.lock().await;
        let Basis::Incremental { previous } = &out.basis else {
            return self.refresh_locked(set).await;
        };
        let newest = choose_timeline(&self.store, set, None, Knowledge::AsKnown)?;
        let current = self.snapshot(set);
        let Some(current) = current.filter(|c| {
            newest.hash == out.hash && c.timeline == *previous && c.set.name == out.set
        }) else {
            return self.refresh_locked(set).await;
        };
        let kept: Vec<RecordBatch> = match &current.overlay {
            None => Vec::new(),
            Some(o) => {
                let changed: HashSet<&str> = out.changed.iter().map(String::as_str).collect();
                o.batches
                    .iter()
                    .map(|b| without_patients(b, &changed))
                    .collect::<Result<_>>()?
            }
        };
        let mut patients: HashSet<String> = current
            .overlay
            .as_ref()
            .map(|o| o.patients.clone())
            .unwrap_or_default();
        patients.extend(out.changed.iter().cloned());
        if patients.len() > current.index.patients() / 4 + 64 {
            return self.refresh_locked(set).await;
        }
        let mut batches = kept;
        batches.extend(self.rows_of(&out.hash, &out.changed).await?);
        let index = TimelineIndex::build(&current.set, &batches)?;
        let serving = Arc::new(Serving {
            set: current.set.clone(),
            timeline: out.hash,
            index: current.index.clone(),
            overlay: Some(Arc::new(Overlay {
                patients,
                index,
                batches,
            })),
            persons: current.persons.clone(),
        });
        self.swap(set, serving);
        Ok(out.hash)
    }

    /// The rows of `patients` in timeline `hash`, in its order.
    async fn rows_of(&self, hash: &ContentHash, patients: &[String]) -> Result<Vec<RecordBatch>> {
        if patients.is_empty() {
            return Ok(Vec::new());
        }
        let filter = (patients.len() <= IN_LIST_MAX).then(|| {
            use datafusion::prelude::{col, lit};
            col("patient_id").in_list(patients.iter().map(|p| lit(p.as_str())).collect(), false)
        });
        let wanted: HashSet<&str> = patients.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        let keep = |b: &RecordBatch| -> Result<()> {
            let kept = only_patients(b, &wanted)?;
            if kept.num_rows() > 0 {
                out.push(kept);
            }
            Ok(())
        };
        // A bucketed timeline: only the fragments of the patients' buckets are read.
        match self
            .store
            .bucket_layout(hash)?
            .filter(|l| l.key == "patient_id")
        {
            Some(layout) => {
                let buckets = patients
                    .iter()
                    .map(|p| crate::hash::bucketed::bucket_of(Some(p.as_bytes()), layout.buckets))
                    .collect();
                self.store
                    .scan_buckets_where(hash, &buckets, None, filter, keep)
                    .await?;
            }
            None => {
                self.store.scan_where(hash, None, filter, keep).await?;
            }
        }
        Ok(out)
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

/// The rows of `b` whose `patient_id` is (`keep`) or is not (`!keep`) in `patients`.
fn rows_where(b: &RecordBatch, patients: &HashSet<&str>, keep: bool) -> Result<RecordBatch> {
    let col = b
        .column_by_name("patient_id")
        .ok_or_else(|| Error::Internal("timeline rows without patient_id".into()))?;
    let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8)?;
    let mask: BooleanArray = col
        .as_string::<i32>()
        .iter()
        .map(|p| Some(p.is_some_and(|p| patients.contains(p)) == keep))
        .collect();
    Ok(arrow::compute::filter_record_batch(b, &mask)?)
}

fn only_patients(b: &RecordBatch, patients: &HashSet<&str>) -> Result<RecordBatch> {
    rows_where(b, patients, true)
}

fn without_patients(b: &RecordBatch, patients: &HashSet<&str>) -> Result<RecordBatch> {
    rows_where(b, patients, false)
}
