//! Point-in-time lookups: historical (training sets) and online, over one timeline and one
//! rule ([`TimelineIndex::resolve`]), so training and serving cannot drift.
//!
//! - [`historical`]: entity rows `(patient_id, timestamp, extra columns...)` joined as of
//!   each row's time against a stored timeline; exactly one output row per input row, in input
//!   order, duplicates kept, extra columns passed through, each feature's value and status.
//!   The result is stored as a `training` version whose lineage (timeline, entity rows,
//!   options) lets [`rebuild`] reproduce it bit for bit.
//! - [`Online`]: the latest timeline of each set held in memory, answering "features of
//!   patient p at t" (t defaults to now, from the injected clock); a newly materialized
//!   timeline is swapped in atomically while requests in flight finish on the old one.
//! - [`asof`]: the as-of join of a wide feature table (one row per observation, several
//!   feature columns), the layout the peers (DuckDB, Polars, pandas, Feast) join; `ward asof`
//!   runs it on their files.
//!
//! - `historical`: the historical lookups and their training sets; `rebuild` replays one from
//!   its lineage; `online`: the timelines held in memory for online lookups. The entity rows'
//!   keys and the training set's schema are the features' ([`crate::features`]), the rule
//!   behind every answer [`crate::pit`]'s.
//!
//! `docs/lookups.md` is the user's guide.

pub mod asof;
mod historical;
mod online;
mod rebuild;

pub use historical::{
    choose_timeline, historical, historical_batches, historical_batches_of, historical_direct,
    historical_resolved, read_entities, resolve_historical, training_name, training_schema,
    Entities, HistoricalOutcome, HistoricalRequest, ResolvedHistorical, PERSON_COLUMN,
};
pub use online::{Online, OnlineAnswer, Serving};
pub use rebuild::rebuild;

/// Default name of the entity column holding patient ids.
pub const PATIENT_COLUMN: &str = "patient_id";

/// Default name of the entity column holding the lookup time.
pub const TIME_COLUMN: &str = "timestamp";
