//! Monitoring a served model's inputs (`docs/monitoring.md`): what the online lookups
//! served, whether it drifted from the training data, and whether serving and training
//! disagree.
//!
//! - [`log`]: the online lookup log. `ward serve` with `[online_log] enabled = true` appends
//!   every answered online lookup (patient, request time from the injected clock, the time
//!   the values hold at, the timeline that answered, each feature's value and status) to an
//!   in-memory buffer, and a background flusher writes the buffer as a version of the log
//!   dataset (`online_log` by default) every `flush_secs` or `flush_rows` values, off the
//!   request path. Each version holds one batch and names the previous one, so a reference
//!   to the newest (the name) reads the whole log ([`log::read`]).
//! - [`drift`]: per feature, the population stability index (PSI) between a training set's
//!   values and the logged online values, over bins taken from the training distribution,
//!   with both histograms (`ward drift`, the `Monitoring/Drift` RPC, `/ui/drift`).
//! - [`skew`]: every logged lookup replayed as a historical lookup (same patient, same time,
//!   same timeline) through the as-of join training sets are made with, and the values
//!   that differ counted per feature. Ward serves and trains through one rule over one
//!   timeline, so the count is 0; anything else is an alarm (`ward skew` exits non-zero,
//!   the `Monitoring/Skew` RPC, `/ui/skew` with an alert).

pub mod drift;
pub mod log;
pub mod skew;

pub use drift::{drift, DriftReport, DriftRequest};
pub use log::{LogConfig, OnlineLog};
pub use skew::{skew, SkewReport};
