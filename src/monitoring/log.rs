//! The online lookup log (`docs/monitoring.md`, "The online lookup log").
//!
//! [`OnlineLog::record`] is what the online lookup handler calls once it has its answer: it
//! clones the answer into an in-memory buffer (a mutex held for a push) and returns; nothing
//! is written on the request path. [`OnlineLog::flush`] takes the whole buffer and writes it
//! as one version of the log dataset: kind `other`, label `ward.monitoring=online_log`,
//! lineage inputs = the timelines that answered (sorted), lineage params = [`Params`] (the
//! previous version of the log, the row and lookup numbers it continues from, the range of
//! request times). The put moves the log's head only if it is still the head the batch was
//! numbered after (compare-and-swap), so replicas sharing a store and a log name chain their
//! batches without losing one. A failed flush puts the values back in front of the buffer
//! for the next one.
//!
//! One row per value served ([`schema`]): `seq` (the row's number in the whole log),
//! `lookup` (the lookup's number: one per patient of a request), `requested_at` (the
//! server's clock when the request came), `as_of` (the time the values hold at),
//! `feature_set`, `timeline`, `patient_id`, `feature`, `value_num`, `value_text`, `status`
//! (`present`, `no_data`, `outside_ttl`). The rows hold patient ids and values: the log is
//! protected health information like any dataset in the store (its rows leave only through
//! the reads that need `historical_identified`).
//!
//! [`read`] reads a log from a reference to one of its versions back through `previous`,
//! oldest row first; a version that names no previous (a log put by hand) is read alone.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{
    Array, AsArray, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::{status_str, Status, Value};
use crate::hash::ContentHash;
use crate::lookup::OnlineAnswer;
use crate::store::{HeadUpdate, Kind, Lineage, Manifest, PutOptions, Store, VersionRef};

/// The label every log version carries (`ward.monitoring=online_log`).
pub const LABEL_KEY: &str = "ward.monitoring";

/// The value of [`LABEL_KEY`] and the lineage `op` of a log version.
pub const OP: &str = "online_log";

/// The default name of the log dataset.
pub const DEFAULT_NAME: &str = "online_log";

/// The `[online_log]` section of the server's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Log online lookups (default false: the log is a new copy of protected health
    /// information, who was looked up when with what values; the operator opts in).
    #[serde(default)]
    pub enabled: bool,
    /// The log dataset's name (default `online_log`).
    #[serde(default = "default_name")]
    pub name: String,
    /// Seconds between flushes of the buffer into a version (default 10; at least 0.05).
    #[serde(default = "default_flush_secs")]
    pub flush_secs: f64,
    /// A flush starts early once this many values are buffered (default 10,000).
    #[serde(default = "default_flush_rows")]
    pub flush_rows: usize,
    /// Values held at most while flushes fail (default 1,000,000): beyond it, lookups are
    /// answered but not logged, and counted in a warning.
    #[serde(default = "default_max_buffered_rows")]
    pub max_buffered_rows: usize,
}

fn default_name() -> String {
    DEFAULT_NAME.to_string()
}

fn default_flush_secs() -> f64 {
    10.0
}

fn default_flush_rows() -> usize {
    10_000
}

fn default_max_buffered_rows() -> usize {
    1_000_000
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            enabled: false,
            name: default_name(),
            flush_secs: default_flush_secs(),
            flush_rows: default_flush_rows(),
            max_buffered_rows: default_max_buffered_rows(),
        }
    }
}

impl LogConfig {
    /// Checks the values; `origin` names the configuration in errors.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `[online_log]` and the key.
    pub fn validate(&self, origin: &str) -> Result<()> {
        crate::store::manifest::validate_name(&self.name)
            .map_err(|e| Error::invalid(format!("[online_log] name in {origin}"), e.to_string()))?;
        if !(self.flush_secs.is_finite() && self.flush_secs >= 0.05) {
            return Err(Error::invalid(
                format!("[online_log] flush_secs in {origin}"),
                format!("{}: give at least 0.05 seconds", self.flush_secs),
            ));
        }
        if self.flush_rows == 0 {
            return Err(Error::invalid(
                format!("[online_log] flush_rows in {origin}"),
                "0: give at least 1",
            ));
        }
        if self.max_buffered_rows < self.flush_rows {
            return Err(Error::invalid(
                format!("[online_log] max_buffered_rows in {origin}"),
                format!(
                    "{} is below flush_rows ({})",
                    self.max_buffered_rows, self.flush_rows
                ),
            ));
        }
        Ok(())
    }

    /// The interval between flushes.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.flush_secs.max(0.05))
    }
}

/// The lineage params of a log version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// `online_log`.
    pub op: String,
    /// The version this batch follows (`None`: the first of the log).
    pub previous: Option<ContentHash>,
    /// The `seq` of this batch's first row.
    pub first_seq: i64,
    /// The `seq` the next batch starts at.
    pub next_seq: i64,
    /// The `lookup` number the next batch starts at.
    pub next_lookup: i64,
    /// The earliest request time in this batch.
    pub from: DateTime<Utc>,
    /// The latest request time in this batch.
    pub to: DateTime<Utc>,
}

impl Params {
    /// The params of a log version (`None` for a version without them: put by hand).
    pub fn of(m: &Manifest) -> Option<Params> {
        if m.lineage.params.get("op").and_then(|v| v.as_str()) != Some(OP) {
            return None;
        }
        serde_json::from_value(m.lineage.params.clone()).ok()
    }
}

/// One logged value.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedValue {
    /// The row's number in the whole log.
    pub seq: i64,
    /// The lookup's number (one per patient of a request).
    pub lookup: i64,
    /// When the request came (the server's clock).
    pub requested_at: DateTime<Utc>,
    /// The time the values hold at.
    pub as_of: DateTime<Utc>,
    /// The feature set asked for.
    pub feature_set: String,
    /// The timeline that answered (`b3:...`).
    pub timeline: String,
    /// The patient.
    pub patient_id: String,
    /// The feature.
    pub feature: String,
    /// The value served (`None` unless the status is present).
    pub value: Option<Value>,
    /// Its status.
    pub status: Status,
}

/// The schema of a log version.
pub fn schema() -> SchemaRef {
    let time = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    std::sync::Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("lookup", DataType::Int64, false),
        Field::new("requested_at", time.clone(), false),
        Field::new("as_of", time, false),
        Field::new("feature_set", DataType::Utf8, false),
        Field::new("timeline", DataType::Utf8, false),
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("feature", DataType::Utf8, false),
        Field::new("value_num", DataType::Float64, true),
        Field::new("value_text", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
    ]))
}

/// `rows` as one batch of [`schema`].
///
/// # Errors
/// [`Error::Arrow`] (not expected: the builders match the schema).
pub fn to_batch(rows: &[LoggedValue]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut seq = Int64Builder::with_capacity(n);
    let mut lookup = Int64Builder::with_capacity(n);
    let mut requested = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut as_of = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut set = StringBuilder::new();
    let mut timeline = StringBuilder::new();
    let mut patient = StringBuilder::new();
    let mut feature = StringBuilder::new();
    let mut num = Float64Builder::with_capacity(n);
    let mut text = StringBuilder::new();
    let mut status = StringBuilder::new();
    for r in rows {
        seq.append_value(r.seq);
        lookup.append_value(r.lookup);
        requested.append_value(r.requested_at.timestamp_micros());
        as_of.append_value(r.as_of.timestamp_micros());
        set.append_value(&r.feature_set);
        timeline.append_value(&r.timeline);
        patient.append_value(&r.patient_id);
        feature.append_value(&r.feature);
        match &r.value {
            Some(Value::Num(v)) => {
                num.append_value(*v);
                text.append_null();
            }
            Some(Value::Text(s)) => {
                num.append_null();
                text.append_value(s);
            }
            None => {
                num.append_null();
                text.append_null();
            }
        }
        status.append_value(status_str(r.status));
    }
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            std::sync::Arc::new(seq.finish()),
            std::sync::Arc::new(lookup.finish()),
            std::sync::Arc::new(requested.finish()),
            std::sync::Arc::new(as_of.finish()),
            std::sync::Arc::new(set.finish()),
            std::sync::Arc::new(timeline.finish()),
            std::sync::Arc::new(patient.finish()),
            std::sync::Arc::new(feature.finish()),
            std::sync::Arc::new(num.finish()),
            std::sync::Arc::new(text.finish()),
            std::sync::Arc::new(status.finish()),
        ],
    )?)
}

/// The status a log row names.
pub fn parse_status(s: &str) -> Option<Status> {
    match s {
        "present" => Some(Status::Present),
        "no_data" => Some(Status::NoData),
        "outside_ttl" => Some(Status::OutsideTtl),
        _ => None,
    }
}

/// The rows of a log version's batch; `what` names the version in errors, `row0` the
/// number of its batch's first row.
fn from_batch(b: &RecordBatch, what: &str, row0: usize) -> Result<Vec<LoggedValue>> {
    let col = |name: &str, ty: &DataType| -> Result<arrow::array::ArrayRef> {
        let c = b.column_by_name(name).ok_or_else(|| Error::BadInput {
            location: what.to_string(),
            field: name.to_string(),
            reason: "no such column: not an online lookup log (docs/monitoring.md)".into(),
        })?;
        arrow::compute::cast(c, ty).map_err(|e| Error::BadInput {
            location: what.to_string(),
            field: name.to_string(),
            reason: format!("cannot be read as {ty}: {e}"),
        })
    };
    let time = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let seq = col("seq", &DataType::Int64)?;
    let lookup = col("lookup", &DataType::Int64)?;
    let requested = col("requested_at", &time)?;
    let as_of = col("as_of", &time)?;
    let set = col("feature_set", &DataType::Utf8)?;
    let timeline = col("timeline", &DataType::Utf8)?;
    let patient = col("patient_id", &DataType::Utf8)?;
    let feature = col("feature", &DataType::Utf8)?;
    let num = col("value_num", &DataType::Float64)?;
    let text = col("value_text", &DataType::Utf8)?;
    let status = col("status", &DataType::Utf8)?;
    let seq = seq.as_primitive::<arrow::datatypes::Int64Type>();
    let lookup = lookup.as_primitive::<arrow::datatypes::Int64Type>();
    let requested = requested.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let as_of = as_of.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let set = set.as_string::<i32>();
    let timeline = timeline.as_string::<i32>();
    let patient = patient.as_string::<i32>();
    let feature = feature.as_string::<i32>();
    let num = num.as_primitive::<arrow::datatypes::Float64Type>();
    let text = text.as_string::<i32>();
    let status = status.as_string::<i32>();
    let mut out = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        let bad = |field: &str, reason: &str| Error::BadInput {
            location: format!("{what} row {}", row0 + i),
            field: field.to_string(),
            reason: reason.to_string(),
        };
        let at = |a: &arrow::array::TimestampMicrosecondArray, field: &str| {
            if a.is_null(i) {
                return Err(bad(field, "null"));
            }
            DateTime::from_timestamp_micros(a.value(i)).ok_or_else(|| bad(field, "out of range"))
        };
        let s = |a: &arrow::array::StringArray, field: &str| {
            if a.is_null(i) {
                Err(bad(field, "null"))
            } else {
                Ok(a.value(i).to_string())
            }
        };
        let st = s(status, "status")?;
        let st = parse_status(&st).ok_or_else(|| {
            bad(
                "status",
                &format!("{st:?} is not present, no_data or outside_ttl"),
            )
        })?;
        let value = if !num.is_null(i) {
            Some(Value::Num(num.value(i)))
        } else if !text.is_null(i) {
            Some(Value::Text(text.value(i).to_string()))
        } else {
            None
        };
        if seq.is_null(i) || lookup.is_null(i) {
            return Err(bad("seq", "null seq or lookup"));
        }
        out.push(LoggedValue {
            seq: seq.value(i),
            lookup: lookup.value(i),
            requested_at: at(requested, "requested_at")?,
            as_of: at(as_of, "as_of")?,
            feature_set: s(set, "feature_set")?,
            timeline: s(timeline, "timeline")?,
            patient_id: s(patient, "patient_id")?,
            feature: s(feature, "feature")?,
            value,
            status: st,
        });
    }
    Ok(out)
}

/// A log read back: its rows (oldest first) and the versions they came from (newest
/// first).
#[derive(Debug, Clone)]
pub struct Log {
    /// The version the reference named.
    pub head: ContentHash,
    /// Every version read, newest first.
    pub versions: Vec<ContentHash>,
    /// The rows, oldest first (by `seq`), only those requested at or after `since`.
    pub rows: Vec<LoggedValue>,
}

impl Log {
    /// The number of distinct lookups among the rows.
    pub fn lookups(&self) -> usize {
        self.rows
            .iter()
            .map(|r| r.lookup)
            .collect::<HashSet<_>>()
            .len()
    }
}

/// Reads the log whose newest version `r` names, back through each version's `previous`,
/// keeping the rows requested at or after `since` (all when `None`); a version whose
/// latest request is before `since` ends the walk.
///
/// # Errors
/// [`Error::NotFound`] for an unknown reference or a missing previous version;
/// [`Error::BadInput`] naming the version, row and column of a version that is not a log.
pub async fn read(store: &Store, r: &VersionRef, since: Option<DateTime<Utc>>) -> Result<Log> {
    let m = store.resolve(r)?;
    let head = m.hash;
    let mut versions = Vec::new();
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    let mut next = Some(m);
    while let Some(m) = next.take() {
        if !seen.insert(m.hash) {
            return Err(Error::BadInput {
                location: format!("online log {head}"),
                field: "lineage.params.previous".into(),
                reason: format!("{} is named twice: the chain loops", m.hash),
            });
        }
        let params = Params::of(&m);
        // A batch whose every request is older than `since` ends the walk unread (the
        // version `r` names is read in any case).
        if m.hash != head && since.is_some_and(|t| params.as_ref().is_some_and(|p| p.to < t)) {
            break;
        }
        versions.push(m.hash);
        let what = format!("online log version {}", m.hash);
        let (_, batches) = store.read(&m.hash).await?;
        let mut row0 = 0;
        for b in &batches {
            let mut got = from_batch(b, &what, row0)?;
            row0 += b.num_rows();
            if let Some(t) = since {
                got.retain(|v| v.requested_at >= t);
            }
            rows.extend(got);
        }
        let Some(p) = params else { break };
        if let Some(prev) = p.previous {
            next = Some(store.manifest(&prev)?);
        }
    }
    rows.sort_by_key(|v| v.seq);
    Ok(Log {
        head,
        versions,
        rows,
    })
}

/// One answered lookup waiting in the buffer.
#[derive(Debug)]
struct Pending {
    requested_at: DateTime<Utc>,
    set: String,
    answer: OnlineAnswer,
}

impl Pending {
    fn values(&self) -> usize {
        self.answer.patients.len() * self.answer.features.len()
    }
}

/// The online lookup log of a server: the buffer, and the flushes into the store.
#[derive(Debug)]
pub struct OnlineLog {
    store: Store,
    cfg: LogConfig,
    buffer: Mutex<Vec<Pending>>,
    /// Values in `buffer`.
    buffered: AtomicUsize,
    /// Lookups not logged because the buffer was full.
    dropped: AtomicU64,
    /// Woken when the buffer reaches `flush_rows`.
    wake: tokio::sync::Notify,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
}

impl OnlineLog {
    /// A log over `store` as `cfg` says (whether it is enabled is the caller's business).
    pub fn new(store: Store, cfg: LogConfig) -> OnlineLog {
        OnlineLog {
            store,
            cfg,
            buffer: Mutex::new(Vec::new()),
            buffered: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    /// Values waiting for the next flush.
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Lookups answered but not logged because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Appends an answered lookup of `set`, requested at `requested_at`, to the buffer (the
    /// request path: a clone and a push, nothing written). Wakes the flusher once
    /// `flush_rows` values wait.
    pub fn record(&self, set: &str, requested_at: DateTime<Utc>, answer: &OnlineAnswer) {
        let n = answer.patients.len() * answer.features.len();
        let total = self.buffered.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.cfg.max_buffered_rows {
            self.buffered.fetch_sub(n, Ordering::Relaxed);
            let d = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if d.is_power_of_two() {
                tracing::warn!(
                    "online log {}: {d} lookups not logged: {} values are waiting for a flush (max_buffered_rows)",
                    self.cfg.name,
                    total - n
                );
            }
            return;
        }
        let p = Pending {
            requested_at,
            set: set.to_string(),
            answer: answer.clone(),
        };
        self.buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(p);
        if total >= self.cfg.flush_rows {
            self.wake.notify_one();
        }
    }

    /// Resolves when the buffer reached `flush_rows` values, or after `flush_secs`: when the
    /// flusher should flush next.
    pub async fn due(&self) {
        tokio::select! {
            () = tokio::time::sleep(self.cfg.interval()) => {}
            () = self.wake.notified() => {}
        }
    }

    /// Writes everything buffered as one version of the log and returns its hash (`None`
    /// when nothing was buffered). On failure the values go back in front of the buffer.
    ///
    /// # Errors
    /// Store errors; [`Error::FailedPrecondition`] when the log's name holds a version that
    /// is not a log.
    pub async fn flush(&self) -> Result<Option<ContentHash>> {
        let _one = self.flushing.lock().await;
        // Taken out of the buffer until written: put back in front if the write fails or
        // this future is dropped before it is done (cancel-safe).
        let mut taken = Taken {
            log: self,
            pending: Some(std::mem::take(
                &mut *self
                    .buffer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            )),
        };
        let pending = taken.pending.as_deref().unwrap_or_default();
        if pending.is_empty() {
            return Ok(None);
        }
        let n: usize = pending.iter().map(Pending::values).sum();
        let h = self.write(pending).await?;
        taken.pending = None;
        self.buffered.fetch_sub(n, Ordering::Relaxed);
        Ok(Some(h))
    }

    /// One batch, numbered after the log's head and put only if that is still the head.
    async fn write(&self, pending: &[Pending]) -> Result<ContentHash> {
        let name = &self.cfg.name;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let head = self.store.head(name)?;
            let (previous, first_seq, first_lookup) = match &head {
                None => (None, 0, 0),
                Some(h) => {
                    let m = self.store.manifest(&h.hash)?;
                    let p = Params::of(&m).ok_or_else(|| {
                        Error::precondition(
                            format!("online log {name}"),
                            format!(
                                "the name's head {} is not an online log (no `op = online_log` in its lineage); set [online_log] name to another name",
                                h.hash
                            ),
                        )
                    })?;
                    (Some(h.hash), p.next_seq, p.next_lookup)
                }
            };
            let mut rows = Vec::new();
            let mut lookup = first_lookup;
            let mut timelines = BTreeSet::new();
            for p in pending {
                timelines.insert(p.answer.timeline);
                let timeline = p.answer.timeline.to_string();
                for patient in &p.answer.patients {
                    for (feature, v) in &patient.values {
                        rows.push(LoggedValue {
                            seq: first_seq + rows.len() as i64,
                            lookup,
                            requested_at: p.requested_at,
                            as_of: patient.at,
                            feature_set: p.set.clone(),
                            timeline: timeline.clone(),
                            patient_id: patient.patient_id.clone(),
                            feature: feature.clone(),
                            value: v.value.clone(),
                            status: v.status,
                        });
                    }
                    lookup += 1;
                }
            }
            let from = pending.iter().map(|p| p.requested_at).min();
            let to = pending.iter().map(|p| p.requested_at).max();
            let (Some(from), Some(to)) = (from, to) else {
                return Err(Error::Internal("an empty online log batch".into()));
            };
            let params = Params {
                op: OP.into(),
                previous,
                first_seq,
                next_seq: first_seq + rows.len() as i64,
                next_lookup: lookup,
                from,
                to,
            };
            let mut opts = PutOptions::new(name.clone(), Kind::Other);
            opts.head = HeadUpdate::Expect(head.map(|h| h.seq));
            opts.lineage = Lineage {
                inputs: timelines.into_iter().collect(),
                definition: None,
                params: serde_json::to_value(&params)
                    .map_err(|e| Error::Internal(format!("log params: {e}")))?,
            };
            opts.labels.insert(LABEL_KEY.into(), OP.into());
            let batch = to_batch(&rows)?;
            match self.store.put_batches(schema(), vec![batch], opts).await {
                Ok(put) => return Ok(put.manifest.hash),
                // Another writer (a replica) moved the head: number after it.
                Err(Error::Conflict { .. }) if attempts < 16 => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Values taken out of the buffer by a flush; put back in front of it on drop unless
/// written (`pending` set to `None`).
struct Taken<'a> {
    log: &'a OnlineLog,
    pending: Option<Vec<Pending>>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take().filter(|p| !p.is_empty()) {
            let mut b = self
                .log
                .buffer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let newer = std::mem::take(&mut *b);
            *b = pending;
            b.extend(newer);
        }
    }
}

/// A running flusher ([`spawn_flusher`]).
#[derive(Debug)]
pub struct Flusher {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Flusher {
    /// Stops the flusher between flushes (a flush in progress finishes) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Runs `log`'s flusher until [`Flusher::stop`]: a flush each time [`OnlineLog::due`]
/// resolves, run by `run` (the server passes its job runtime, so the write stays off the
/// request workers); a failed flush is logged and retried at the next.
pub fn spawn_flusher<R, F>(log: Arc<OnlineLog>, run: R) -> Flusher
where
    R: Fn(Arc<OnlineLog>) -> F + Send + 'static,
    F: std::future::Future<Output = Result<Option<ContentHash>>> + Send,
{
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = log.due() => {}
                _ = &mut stopped => break,
            }
            if let Err(e) = run(log.clone()).await {
                tracing::warn!(
                    "online log {}: flush failed ({e}); {} values kept for the next",
                    log.cfg.name,
                    log.buffered()
                );
            }
        }
    });
    Flusher { stop, task }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(seq: i64, v: Option<Value>, status: Status) -> LoggedValue {
        LoggedValue {
            seq,
            lookup: seq / 2,
            requested_at: "2026-01-02T03:04:05Z".parse().expect("time"),
            as_of: "2026-01-01T00:00:00Z".parse().expect("time"),
            feature_set: "s".into(),
            timeline: "b3:00".into(),
            patient_id: format!("P{seq}"),
            feature: "f".into(),
            value: v,
            status,
        }
    }

    #[test]
    fn rows_round_trip_through_a_batch() {
        let rows = vec![
            value(0, Some(Value::Num(1.5)), Status::Present),
            value(1, Some(Value::Text("x".into())), Status::Present),
            value(2, None, Status::OutsideTtl),
            value(3, None, Status::NoData),
        ];
        let b = to_batch(&rows).expect("batch");
        assert_eq!(from_batch(&b, "v", 0).expect("rows"), rows);
    }

    #[test]
    fn a_bad_status_is_named_with_its_row() {
        let mut b = to_batch(&[value(0, None, Status::NoData)]).expect("batch");
        let i = b.schema().index_of("status").expect("status");
        let mut cols = b.columns().to_vec();
        cols[i] = std::sync::Arc::new(arrow::array::StringArray::from(vec!["maybe"]));
        b = RecordBatch::try_new(b.schema(), cols).expect("batch");
        let e = from_batch(&b, "log v", 7)
            .expect_err("bad status")
            .to_string();
        assert!(e.contains("log v row 7") && e.contains("status"), "{e}");
    }

    #[test]
    fn the_configuration_is_checked() {
        assert!(LogConfig::default().validate("t").is_ok());
        let bad = LogConfig {
            flush_secs: 0.0,
            ..LogConfig::default()
        };
        assert!(bad.validate("t").is_err());
        let bad = LogConfig {
            name: "no spaces allowed".into(),
            ..LogConfig::default()
        };
        assert!(bad.validate("t").is_err());
    }
}
