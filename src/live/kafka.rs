//! Kafka topics into live feeds (`ward serve --kafka BROKERS`, `[kafka]` in the server
//! configuration; `docs/live.md`, "Kafka").
//!
//! Each configured topic holds HL7 v2 messages (one message per Kafka record) or FHIR JSON
//! (a resource, a Bundle, or Bulk NDJSON lines per record) and logs into a feed: by default
//! the MLLP feed for HL7 v2 and the HTTP feed for FHIR, so one seal covers what arrived over
//! either path. Every partition of a topic is consumed by its own task with Ward's own small
//! client ([`super::kafka_wire`], on [`kafka_protocol`]'s messages), without a consumer group.
//!
//! **Exactly once into Ward.** Each message is logged in the feed's write-ahead log with its
//! position (topic, partition, offset) in the same record, so in the same durable write
//! ([`super::wal::Position`]). On start a partition resumes after the last position its
//! feed's log holds ([`Wal::logged_position`]), never from Kafka's committed offsets: a
//! message is in the log once whatever the moment the server was killed. The messages of a
//! partition are handed to the log in offset order and a fetch's messages share one `fsync`.
//!
//! **Bad messages** are logged like the rest, so the partition moves on and they are never
//! retried: an HL7 v2 message is classified as MLLP classifies it ([`super::classify`]: AE
//! is applied as a batch ingest would, AR goes to quarantine at the seal); a FHIR message
//! that is JSON is sealed as the batch parser reads it (its bad resources go to quarantine
//! with the parser's reasons), and one that cannot be placed in an NDJSON file at all (an
//! empty value, a bad `ward-source` header) is refused: quarantined with the reason.
//!
//! **Audit.** Each partition's ingests are audited as MLLP connections' are: one record at
//! most every `audit_interval_secs` while messages arrive, the principal
//! `<brokers>/<topic>/<partition>`, the counts (AA, AE, AR, resends not logged, not stored)
//! and the log records and offsets they span.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::fhir::{self, Kind};
use super::kafka_wire::{self, OffsetAt, PartitionClient};
use super::wal::{Appended, Entry, Position, Record, Status, Wal};
use super::{classify, input_name, LiveConfig};
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::ingest::fhir::Framing;
use crate::ingest::Context;
use crate::security::audit::{AuditEntry, AuditLog, Outcome};

/// The Kafka record header that names a FHIR message's source file (as `?source=` does over
/// HTTP): the `source_system` of its resources without `meta.source`.
pub const SOURCE_HEADER: &str = "ward-source";

/// The kind of a FHIR message refused when consumed: `fhir-refused:<reason>`.
const REFUSED_KIND: &str = "fhir-refused:";

/// What a topic's messages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicFormat {
    /// One HL7 v2 message per Kafka record.
    Hl7v2,
    /// FHIR JSON per Kafka record: a resource, a Bundle, or Bulk NDJSON lines.
    Fhir,
}

impl TopicFormat {
    /// The name used in configurations.
    pub fn name(self) -> &'static str {
        match self {
            TopicFormat::Hl7v2 => "hl7v2",
            TopicFormat::Fhir => "fhir",
        }
    }

    /// Reads `hl7v2` or `fhir`.
    ///
    /// # Errors
    /// What is accepted.
    pub fn parse(s: &str) -> std::result::Result<TopicFormat, String> {
        match s {
            "hl7v2" => Ok(TopicFormat::Hl7v2),
            "fhir" => Ok(TopicFormat::Fhir),
            _ => Err(format!("format {s:?}: give hl7v2 or fhir")),
        }
    }
}

/// Where a partition with no position in the log starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Its earliest message still kept (the default).
    #[default]
    Earliest,
    /// After its last message: only what is produced from now on.
    Latest,
}

/// One `[[kafka.topic]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// The topic.
    pub name: String,
    /// `hl7v2` or `fhir`.
    pub format: TopicFormat,
    /// The feed it logs into (default: `[live] feed` for HL7 v2, `[live] http_feed` for
    /// FHIR).
    #[serde(default)]
    pub feed: Option<String>,
    /// FHIR: the source name of messages without a `ward-source` header (default
    /// `<topic>.ndjson`).
    #[serde(default)]
    pub source: Option<String>,
}

impl TopicConfig {
    /// The feed this topic logs into.
    pub fn feed<'a>(&'a self, live: &'a LiveConfig) -> &'a str {
        match (&self.feed, self.format) {
            (Some(f), _) => f,
            (None, TopicFormat::Hl7v2) => &live.feed,
            (None, TopicFormat::Fhir) => &live.http_feed,
        }
    }

    /// The source name of FHIR messages without a header.
    pub fn source(&self) -> String {
        self.source
            .clone()
            .unwrap_or_else(|| format!("{}.ndjson", self.name))
    }
}

/// The `[kafka]` section of the server configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` (`ward serve --kafka BROKERS`, comma separated, wins).
    #[serde(default)]
    pub brokers: Vec<String>,
    /// The topics consumed.
    #[serde(default, rename = "topic")]
    pub topics: Vec<TopicConfig>,
    /// Where a partition with no logged position starts: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start: StartAt,
    /// The most bytes one fetch asks for (default 4 MiB).
    #[serde(default = "default_fetch_bytes")]
    pub fetch_max_bytes: i32,
    /// How long a fetch waits for new messages, in milliseconds (default 500).
    #[serde(default = "default_fetch_wait")]
    pub fetch_wait_ms: i32,
    /// How often each partition's ingests are audited while messages arrive (default 60).
    #[serde(default = "default_audit_interval")]
    pub audit_interval_secs: f64,
    /// How often the topics' partitions are listed again, to consume new ones (default 30).
    #[serde(default = "default_metadata_interval")]
    pub metadata_interval_secs: f64,
    /// The client id the brokers see (default `ward`).
    #[serde(default = "default_client_id")]
    pub client_id: String,
}

fn default_fetch_bytes() -> i32 {
    4 << 20
}
fn default_fetch_wait() -> i32 {
    500
}
fn default_audit_interval() -> f64 {
    60.0
}
fn default_metadata_interval() -> f64 {
    30.0
}
fn default_client_id() -> String {
    "ward".into()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Vec::new(),
            topics: Vec::new(),
            start: StartAt::default(),
            fetch_max_bytes: default_fetch_bytes(),
            fetch_wait_ms: default_fetch_wait(),
            audit_interval_secs: default_audit_interval(),
            metadata_interval_secs: default_metadata_interval(),
            client_id: default_client_id(),
        }
    }
}

/// Reads `--kafka BROKERS`: comma-separated `host:port`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the broker.
pub fn parse_brokers(s: &str) -> Result<Vec<String>> {
    let out: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .collect();
    if out.is_empty() {
        return Err(Error::invalid("--kafka", "give host:port[,host:port...]"));
    }
    for b in &out {
        check_broker(b).map_err(|why| Error::invalid("--kafka", why))?;
    }
    Ok(out)
}

fn check_broker(b: &str) -> std::result::Result<(), String> {
    let ok = b
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(format!("broker {b:?}: give host:port"))
    }
}

/// Reads `--kafka-topic NAME=FORMAT[:FEED]`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the option.
pub fn parse_topic(s: &str) -> Result<TopicConfig> {
    let bad = |why: String| Error::invalid("--kafka-topic", format!("{s:?}: {why}"));
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| bad("give NAME=hl7v2 or NAME=fhir (optionally :FEED)".into()))?;
    let (format, feed) = match rest.split_once(':') {
        Some((f, feed)) => (f, Some(feed.to_string())),
        None => (rest, None),
    };
    Ok(TopicConfig {
        name: name.to_string(),
        format: TopicFormat::parse(format).map_err(bad)?,
        feed,
        source: None,
    })
}

impl KafkaConfig {
    /// Checks the values against the live feeds' configuration `live`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the key.
    pub fn validate(&self, live: &LiveConfig) -> Result<()> {
        for b in &self.brokers {
            check_broker(b).map_err(|why| Error::invalid("kafka.brokers", why))?;
        }
        if self.fetch_max_bytes < 1024 {
            return Err(Error::invalid(
                "kafka.fetch_max_bytes",
                format!("{}: give at least 1024", self.fetch_max_bytes),
            ));
        }
        if !(0..=60_000).contains(&self.fetch_wait_ms) {
            return Err(Error::invalid(
                "kafka.fetch_wait_ms",
                format!("{}: give 0 to 60000", self.fetch_wait_ms),
            ));
        }
        for (key, v) in [
            ("kafka.audit_interval_secs", self.audit_interval_secs),
            ("kafka.metadata_interval_secs", self.metadata_interval_secs),
        ] {
            if !(v.is_finite() && v >= 0.1) {
                return Err(Error::invalid(key, format!("{v}: give at least 0.1")));
            }
        }
        let mut names = BTreeSet::new();
        let mut feed_formats: BTreeMap<&str, TopicFormat> = BTreeMap::new();
        for t in &self.topics {
            let key = format!("kafka.topic {:?}", t.name);
            let valid_name = !t.name.is_empty()
                && t.name.len() <= 249
                && t.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid_name {
                return Err(Error::invalid(
                    key,
                    "a Kafka topic name is 1 to 249 letters, digits, '-', '_' or '.'",
                ));
            }
            if !names.insert(&t.name) {
                return Err(Error::invalid(key, "listed twice"));
            }
            let feed = t.feed(live);
            super::wal::check_feed_name(feed).map_err(|e| Error::invalid(&key, e.to_string()))?;
            // A feed holds HL7 v2 messages or FHIR payloads, never both.
            let clash = match t.format {
                TopicFormat::Hl7v2 => feed == live.http_feed,
                TopicFormat::Fhir => feed == live.feed,
            };
            if clash || feed_formats.get(feed).is_some_and(|f| *f != t.format) {
                return Err(Error::invalid(
                    key,
                    format!("feed {feed:?} also takes messages of the other format: a feed holds HL7 v2 messages or FHIR payloads, not both"),
                ));
            }
            feed_formats.insert(feed, t.format);
            if let Some(s) = &t.source {
                if t.format != TopicFormat::Fhir {
                    return Err(Error::invalid(key, "source is for FHIR topics"));
                }
                fhir::check_source(s).map_err(|why| Error::invalid(&key, why))?;
            }
        }
        Ok(())
    }

    /// The bootstrap brokers as one text (`a:9092,b:9092`), as the audit trail names them.
    pub fn brokers_text(&self) -> String {
        self.brokers.join(",")
    }
}

/// What Ward makes of one consumed message: the log entry (without its position) and why it
/// is in error or refused (empty when accepted).
#[derive(Debug, Clone)]
pub struct Decided {
    /// The entry to log.
    pub entry: Entry,
    /// Why it is in error or refused.
    pub reason: String,
}

/// An HL7 v2 message consumed from `topic`/`partition` into `feed`: classified as MLLP
/// classifies a frame (the sender `MSH-3^MSH-4`, else `kafka:<topic>/<partition>`; the
/// control id MSH-10, so a message also sent over MLLP is logged once).
pub fn decide_hl7(feed: &str, topic: &str, partition: i32, value: &[u8], ctx: &Context) -> Decided {
    let verdict = classify(&input_name(feed), value, ctx);
    let sender = verdict.sender(&format!("kafka:{topic}/{partition}"));
    Decided {
        entry: Entry {
            status: verdict.status,
            sender,
            control_id: verdict.control_id(),
            kind: String::new(),
            message: value.to_vec(),
            position: None,
        },
        reason: verdict.reason,
    }
}

/// A FHIR message consumed from `topic`/`partition`: a Bundle (one JSON document), one
/// resource (on one line, or pretty-printed: sealed as one line) or NDJSON lines, under the
/// source `header` names, else `source`. Accepted when the HTTP listener would accept it;
/// in error (sealed, its bad parts quarantined by the batch parser) when it is JSON Ward
/// can place in an NDJSON file; refused (quarantine only) when empty or the header is bad.
pub fn decide_fhir(
    topic: &str,
    partition: i32,
    value: Option<&[u8]>,
    header: Option<&[u8]>,
    source: &str,
    ctx: &Context,
) -> Decided {
    let sender = format!("kafka:{topic}/{partition}");
    let refuse = |why: String, message: &[u8]| Decided {
        entry: Entry {
            status: Status::Refused,
            sender: sender.clone(),
            control_id: String::new(),
            kind: format!(
                "{REFUSED_KIND}{}",
                why.chars().take(1000).collect::<String>()
            ),
            message: message.to_vec(),
            position: None,
        },
        reason: why,
    };
    let value = value.unwrap_or_default();
    let source = match header {
        None => source.to_string(),
        Some(h) => match std::str::from_utf8(h)
            .map_err(|_| "is not UTF-8".to_string())
            .and_then(|s| fhir::check_source(s).map(|()| s.to_string()))
        {
            Ok(s) => s,
            Err(why) => return refuse(format!("header {SOURCE_HEADER}: {why}"), value),
        },
    };
    if value.iter().all(u8::is_ascii_whitespace) {
        return refuse(
            "empty message (no value, or only whitespace): no FHIR resource to store".into(),
            value,
        );
    }
    // One JSON document: a Bundle, or a resource spread over several lines, is sealed as one
    // line; anything else is read as NDJSON, line by line, as the batch parser reads a file.
    let doc = serde_json::from_slice::<Value>(value).ok();
    let is_bundle = doc
        .as_ref()
        .and_then(|d| d.get("resourceType"))
        .and_then(Value::as_str)
        == Some("Bundle");
    let multi_line = value
        .trim_ascii_end()
        .iter()
        .any(|b| *b == b'\n' || *b == b'\r');
    let framing = if is_bundle || (doc.as_ref().is_some_and(Value::is_object) && multi_line) {
        Framing::Bundle
    } else {
        Framing::Ndjson
    };
    let checked = if framing == Framing::Bundle && !is_bundle {
        let flat: Vec<u8> = value
            .iter()
            .map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b })
            .collect();
        fhir::check(Framing::Ndjson, &source, &flat, ctx)
    } else {
        fhir::check(framing, &source, value, ctx)
    };
    let (status, reason) = match checked {
        Ok(_) => (Status::Accepted, String::new()),
        Err(r) => (
            Status::Error,
            r.issues
                .iter()
                .map(|i| i.diagnostics.as_str())
                .take(5)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    Decided {
        entry: Entry {
            status,
            sender,
            control_id: String::new(),
            kind: Kind { framing, source }.encode(),
            message: value.to_vec(),
            position: None,
        },
        reason,
    }
}

/// Why a logged FHIR record was refused, for its quarantine record.
pub fn refusal(r: &Record) -> String {
    r.kind
        .strip_prefix(REFUSED_KIND)
        .map_or_else(|| "refused".to_string(), str::to_string)
}

/// What one partition consumed since its last audit record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    accepted: u64,
    error: u64,
    refused: u64,
    resent: u64,
    not_stored: u64,
    seqs: Option<(u64, u64)>,
    offsets: Option<(i64, i64)>,
}

/// One partition's ingests, turned into audit records.
#[derive(Debug)]
struct Tally {
    principal: String,
    brokers: String,
    feed: String,
    counts: Counts,
    since: Instant,
}

impl Tally {
    fn new(brokers: &str, topic: &str, partition: i32, feed: &str) -> Self {
        Tally {
            principal: format!("{brokers}/{topic}/{partition}"),
            brokers: brokers.to_string(),
            feed: feed.to_string(),
            counts: Counts::default(),
            since: Instant::now(),
        }
    }

    fn count(&mut self, offset: i64, status: Status, appended: Option<Appended>) {
        let c = &mut self.counts;
        match appended {
            None => {
                c.not_stored += 1;
                return;
            }
            Some(Appended::Duplicate(_)) => c.resent += 1,
            Some(Appended::Logged(seq)) => {
                match status {
                    Status::Accepted => c.accepted += 1,
                    Status::Error => c.error += 1,
                    Status::Refused => c.refused += 1,
                }
                c.seqs = Some((c.seqs.map_or(seq, |s| s.0), seq));
            }
        }
        c.offsets = Some((c.offsets.map_or(offset, |o| o.0), offset));
    }

    /// The audit record of what was counted (none when nothing was), and a fresh start.
    fn take(&mut self) -> Option<AuditEntry> {
        self.since = Instant::now();
        let c = std::mem::take(&mut self.counts);
        if c == Counts::default() {
            return None;
        }
        let mut e = AuditEntry::new(
            "kafka",
            Outcome::Allowed,
            "Kafka consumption configured on the server (no per-message credential)",
        );
        e.principal = Some(self.principal.clone());
        e.auth = Some("none".into());
        e.client = Some(self.brokers.clone());
        e.action = Some("ingest".into());
        e.outcome = Some("ok".into());
        let logged = c.accepted + c.error + c.refused;
        e.reason = format!(
            "{}; feed {}: {logged} messages logged (AA {}, AE {}, AR {}){}{}, {} resends not logged again, {} not stored (read again)",
            e.reason,
            self.feed,
            c.accepted,
            c.error,
            c.refused,
            c.seqs
                .map(|(a, b)| format!(" as log records {a} to {b}"))
                .unwrap_or_default(),
            c.offsets
                .map(|(a, b)| format!(", offsets {a} to {b}"))
                .unwrap_or_default(),
            c.resent,
            c.not_stored
        );
        Some(e)
    }

    async fn flush(&mut self, log: Option<&Arc<AuditLog>>) {
        let entry = self.take();
        let (Some(log), Some(entry)) = (log.cloned(), entry) else {
            return;
        };
        let principal = self.principal.clone();
        let write = move || {
            if let Err(err) = log.append(entry) {
                tracing::error!(principal, "audit: cannot record a Kafka ingest: {err}");
            }
        };
        if let Err(e) = tokio::task::spawn_blocking(write).await {
            tracing::error!("audit task failed: {e}");
        }
    }
}

/// What the consumers share.
#[derive(Debug)]
struct Shared {
    cfg: KafkaConfig,
    brokers: String,
    clock: SharedClock,
    audit: Option<Arc<AuditLog>>,
}

/// One topic's consumption: its configuration, feed and log.
#[derive(Debug, Clone)]
struct Topic {
    cfg: TopicConfig,
    feed: String,
    wal: Wal,
}

/// The consumers started by [`start`].
#[derive(Debug)]
pub struct Running {
    /// Per topic, the feed it logs into.
    pub feeds: BTreeMap<String, String>,
    /// Notified after each interval seal of a feed only Kafka writes (as
    /// [`super::Running::sealed`]).
    pub sealed: std::sync::Arc<tokio::sync::Notify>,
}

/// Starts consuming `cfg`'s topics from `cfg.brokers` into their feeds under `store`,
/// opening the logs not already open in `wals` (a feed's log is opened once per process:
/// the MLLP or HTTP listener's, when it runs, is shared) and adding them there. Connecting
/// and listing partitions happen in the background and are retried, so a broker that is
/// down at start delays consumption without stopping the server. Prints `kafka consuming
/// TOPIC (FORMAT) into feed F from BROKERS` per topic to standard error.
///
/// # Errors
/// Configuration and log recovery errors.
pub async fn start(
    store: &crate::store::Store,
    live: &LiveConfig,
    cfg: &KafkaConfig,
    wals: &mut BTreeMap<String, Wal>,
    audit: Option<Arc<AuditLog>>,
) -> Result<Running> {
    live.validate()?;
    cfg.validate(live)?;
    if cfg.brokers.is_empty() {
        return Err(Error::invalid(
            "kafka.brokers",
            "no broker: give `ward serve --kafka host:port` or brokers in [kafka]",
        ));
    }
    if cfg.topics.is_empty() {
        return Err(Error::invalid(
            "kafka.topic",
            "no topic: give [[kafka.topic]] entries (name, format) or --kafka-topic NAME=FORMAT",
        ));
    }
    let clock = store.clock().clone();
    let mut topics = Vec::new();
    let mut feeds = BTreeMap::new();
    for t in &cfg.topics {
        let feed = t.feed(live).to_string();
        let wal = match wals.get(&feed) {
            Some(w) => w.clone(),
            None => {
                let dir = super::wal::feed_dir(&store.local_root("a live feed's log")?, &feed);
                let (w, _) = Wal::open_with_keys(
                    &dir,
                    clock.clone(),
                    live.segment_bytes,
                    store.encryption().map(|c| c.keyring().clone()),
                )?;
                wals.insert(feed.clone(), w.clone());
                w
            }
        };
        feeds.insert(t.name.clone(), feed.clone());
        topics.push(Topic {
            cfg: t.clone(),
            feed,
            wal,
        });
    }
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        brokers: cfg.brokers_text(),
        clock,
        audit,
    });
    for t in &topics {
        eprintln!(
            "kafka consuming {} ({}) into feed {} from {}",
            t.cfg.name,
            t.cfg.format.name(),
            t.feed,
            shared.brokers
        );
    }
    tokio::spawn(run(shared, topics));
    Ok(Running {
        feeds,
        sealed: std::sync::Arc::new(tokio::sync::Notify::new()),
    })
}

/// Lists the topics' partitions (again every `metadata_interval_secs`, sooner while a topic
/// has none) and consumes each new one.
async fn run(shared: Arc<Shared>, topics: Vec<Topic>) {
    let mut started: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut reported = BTreeSet::new();
    let every = Duration::from_secs_f64(shared.cfg.metadata_interval_secs);
    let names: Vec<String> = topics.iter().map(|t| t.cfg.name.clone()).collect();
    loop {
        match kafka_wire::metadata(&shared.cfg.brokers, &shared.cfg.client_id, Some(&names)).await {
            Ok(md) => {
                for t in &topics {
                    let partitions = md.topics.get(&t.cfg.name).filter(|p| !p.is_empty());
                    let Some(partitions) = partitions else {
                        if reported.insert(t.cfg.name.clone()) {
                            eprintln!(
                                "kafka: topic {} does not exist (yet) on {}; looking again",
                                t.cfg.name, shared.brokers
                            );
                        }
                        continue;
                    };
                    for p in partitions.keys() {
                        if started.insert((t.cfg.name.clone(), *p)) {
                            tokio::spawn(consume(shared.clone(), t.clone(), *p));
                        }
                    }
                }
            }
            Err(e) => {
                if reported.insert(format!("connect {e}")) {
                    eprintln!("kafka: cannot reach {} ({e}); retrying", shared.brokers);
                }
                tracing::warn!(brokers = shared.brokers, "kafka: metadata: {e}");
            }
        }
        // Until every topic has partitions, look again soon.
        let waiting = topics
            .iter()
            .any(|t| !started.iter().any(|(n, _)| *n == t.cfg.name));
        tokio::time::sleep(if waiting {
            every.min(Duration::from_millis(500))
        } else {
            every
        })
        .await;
    }
}

/// Consumes one partition forever: resume after the logged position, fetch, classify, log
/// (position in the same record), audit.
async fn consume(shared: Arc<Shared>, topic: Topic, partition: i32) {
    let name = topic.cfg.name.clone();
    let mut backoff = Duration::from_millis(100);
    let mut pc = PartitionClient::new(&shared.cfg.brokers, &shared.cfg.client_id, &name, partition);
    let mut tally = Tally::new(&shared.brokers, &name, partition, &topic.feed);
    let audit_every = Duration::from_secs_f64(shared.cfg.audit_interval_secs);
    let source = topic.cfg.source();
    let mut next: Option<i64> = topic.wal.logged_position(&name, partition).map(|o| o + 1);
    match next {
        Some(n) => eprintln!(
            "kafka {name}/{partition}: resuming at offset {n} (after the last position in feed {}'s log)",
            topic.feed
        ),
        None => eprintln!(
            "kafka {name}/{partition}: no position in feed {}'s log; starting at the {} offset",
            topic.feed,
            match shared.cfg.start {
                StartAt::Earliest => "earliest",
                StartAt::Latest => "latest",
            }
        ),
    }
    loop {
        if tally.since.elapsed() >= audit_every {
            tally.flush(shared.audit.as_ref()).await;
        }
        let at = match next {
            Some(n) => n,
            None => {
                let at = match shared.cfg.start {
                    StartAt::Earliest => OffsetAt::Earliest,
                    StartAt::Latest => OffsetAt::Latest,
                };
                match pc.offset(at).await {
                    Ok(o) => {
                        next = Some(o);
                        o
                    }
                    Err(e) => {
                        tracing::warn!(
                            topic = name,
                            partition,
                            "kafka: cannot read the start offset ({e}); retrying"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
            }
        };
        let fetched = pc
            .fetch(at, shared.cfg.fetch_max_bytes, shared.cfg.fetch_wait_ms)
            .await;
        let records = match fetched {
            Ok((records, _high_watermark)) => {
                backoff = Duration::from_millis(100);
                records
            }
            Err(e) if e.is_offset_out_of_range() => {
                // Retention removed messages the log never got, or the partition holds fewer
                // messages than were consumed (a recreated topic): say so, never guess past it.
                let earliest = pc.offset(OffsetAt::Earliest).await.ok();
                let latest = pc.offset(OffsetAt::Latest).await.ok();
                match (earliest, latest) {
                    (Some(lo), _) if at < lo => {
                        tracing::error!(topic = name, partition, "kafka: offsets {at} to {} were removed by the broker before Ward read them; continuing at {lo}", lo - 1);
                        eprintln!("kafka {name}/{partition}: offsets {at} to {} were removed by the broker (retention) before Ward read them: LOST; continuing at {lo}", lo - 1);
                        next = Some(lo);
                    }
                    _ => {
                        tracing::error!(topic = name, partition, "kafka: offset {at} is beyond the partition's end ({latest:?}): was the topic recreated? not consuming until it is there");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(
                    topic = name,
                    partition,
                    "kafka: fetch at offset {at} failed ({e}); retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        // Hand the fetch's messages to the log in offset order, then wait: one fsync for
        // all of them (group commit), and the partition's positions logged in order.
        let now = shared.clock.now();
        let ctx = Context::new(now);
        let mut waiting = Vec::with_capacity(records.len());
        for r in records {
            if r.offset < at {
                continue;
            }
            let value = r.value.as_deref();
            let mut decided = match topic.cfg.format {
                TopicFormat::Hl7v2 => decide_hl7(
                    &topic.feed,
                    &name,
                    partition,
                    value.unwrap_or_default(),
                    &ctx,
                ),
                TopicFormat::Fhir => decide_fhir(
                    &name,
                    partition,
                    value,
                    r.header(SOURCE_HEADER),
                    &source,
                    &ctx,
                ),
            };
            if decided.entry.status != Status::Accepted {
                tracing::warn!(
                    topic = name,
                    partition,
                    offset = r.offset,
                    "kafka: {}: {}",
                    super::mllp::ack_code(decided.entry.status),
                    decided.reason
                );
            }
            decided.entry.position = Some(Position {
                topic: name.clone(),
                partition,
                offset: r.offset,
            });
            let status = decided.entry.status;
            match topic.wal.enqueue(decided.entry) {
                Ok(p) => waiting.push((r.offset, status, p)),
                Err(e) => {
                    tracing::error!(topic = name, partition, "kafka: {e}");
                    break;
                }
            }
        }
        let mut failed = false;
        for (offset, status, pending) in waiting {
            if failed {
                tally.count(offset, status, None);
                continue;
            }
            match pending.wait().await {
                Ok(a) => {
                    tally.count(offset, status, Some(a));
                    next = Some(offset + 1);
                }
                Err(e) => {
                    // Not durable: read again from here (the log refuses every later write
                    // until the server restarts).
                    tracing::error!(topic = name, partition, offset, "kafka: not stored: {e}");
                    tally.count(offset, status, None);
                    failed = true;
                }
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context::new(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default())
    }

    #[test]
    fn the_section_is_read_and_checked() {
        let c = crate::service::ServeConfig::parse(
            "[kafka]\nbrokers = [\"127.0.0.1:9092\"]\naudit_interval_secs = 1\n[[kafka.topic]]\nname = \"adt\"\nformat = \"hl7v2\"\n[[kafka.topic]]\nname = \"obs\"\nformat = \"fhir\"\nsource = \"Observation.ndjson\"\n",
            "t.toml",
        )
        .expect("parses");
        let k = c.kafka.expect("kafka");
        assert_eq!(k.topics.len(), 2);
        assert_eq!(k.topics[0].feed(&c.live), super::super::DEFAULT_FEED);
        assert_eq!(k.topics[1].feed(&c.live), super::super::DEFAULT_HTTP_FEED);
        assert_eq!(k.topics[1].source(), "Observation.ndjson");
        for (text, what) in [
            ("[kafka]\nbrokers = [\"nope\"]\n", "host:port"),
            ("[kafka]\n[[kafka.topic]]\nname = \"a\"\nformat = \"csv\"\n", "expected `hl7v2` or `fhir`"),
            (
                "[kafka]\n[[kafka.topic]]\nname = \"a\"\nformat = \"hl7v2\"\nfeed = \"fhir-http\"\n",
                "not both",
            ),
            (
                "[kafka]\n[[kafka.topic]]\nname = \"a\"\nformat = \"hl7v2\"\nfeed = \"x\"\n[[kafka.topic]]\nname = \"b\"\nformat = \"fhir\"\nfeed = \"x\"\n",
                "not both",
            ),
            ("[kafka]\n[[kafka.topic]]\nname = \"a b\"\nformat = \"fhir\"\n", "topic name"),
            (
                "[kafka]\n[[kafka.topic]]\nname = \"a\"\nformat = \"fhir\"\n[[kafka.topic]]\nname = \"a\"\nformat = \"fhir\"\n",
                "twice",
            ),
        ] {
            let e = crate::service::ServeConfig::parse(text, "t.toml").expect_err(text);
            assert!(e.to_string().contains(what), "{text}: {e}");
        }
        assert_eq!(
            parse_brokers("a:1, b:2").expect("brokers"),
            vec!["a:1", "b:2"]
        );
        assert!(parse_brokers("a").is_err());
        let t = parse_topic("adt=hl7v2:adt-feed").expect("topic");
        assert_eq!(
            (t.format, t.feed.as_deref()),
            (TopicFormat::Hl7v2, Some("adt-feed"))
        );
        assert!(parse_topic("adt").is_err());
        assert!(parse_topic("adt=xml").is_err());
    }

    #[test]
    fn fhir_messages_are_framed_checked_and_refused_with_a_reason() {
        let patient = br#"{"resourceType":"Patient","id":"p1","gender":"female"}"#;
        let d = decide_fhir("t", 0, Some(patient), None, "t.ndjson", &ctx());
        assert_eq!(d.entry.status, Status::Accepted, "{}", d.reason);
        assert_eq!(d.entry.kind, "fhir-ndjson:t.ndjson");
        assert_eq!(d.entry.sender, "kafka:t/0");
        // A pretty-printed resource is one document, sealed as one line.
        let pretty = b"{\n  \"resourceType\": \"Patient\",\n  \"id\": \"p2\"\n}\n";
        let d = decide_fhir(
            "t",
            0,
            Some(pretty),
            Some(b"Patient.ndjson"),
            "t.ndjson",
            &ctx(),
        );
        assert_eq!(d.entry.status, Status::Accepted, "{}", d.reason);
        assert_eq!(d.entry.kind, "fhir-bundle:Patient.ndjson");
        // Not JSON: in error, sealed as the batch parser reads it (quarantined there).
        let d = decide_fhir("t", 1, Some(b"not json\n"), None, "t.ndjson", &ctx());
        assert_eq!(d.entry.status, Status::Error);
        assert!(d.reason.contains("line 1"), "{}", d.reason);
        // Empty, or a bad source header: refused, the reason kept in the record.
        for (value, header) in [(None, None), (Some(&b"{}"[..]), Some(&b"../x"[..]))] {
            let d = decide_fhir("t", 2, value, header, "t.ndjson", &ctx());
            assert_eq!(d.entry.status, Status::Refused);
            let rec = Record {
                seq: 1,
                received_at: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
                status: d.entry.status,
                sender: d.entry.sender.clone(),
                control_id: String::new(),
                message: d.entry.message.clone(),
                kind: d.entry.kind.clone(),
                position: None,
            };
            assert_eq!(refusal(&rec), d.reason);
            assert!(!d.reason.is_empty());
        }
    }

    #[test]
    fn hl7_messages_are_classified_as_over_mllp() {
        let msg = b"MSH|^~\\&|LAB|HOSP|WARD|DC|20240101120000||ORU^R01^ORU_R01|M1|P|2.5.1\rPID|1||P1^^^H^MR\r";
        let d = decide_hl7("mllp", "adt", 3, msg, &ctx());
        assert_eq!(d.entry.status, Status::Accepted, "{}", d.reason);
        assert_eq!(
            (d.entry.sender.as_str(), d.entry.control_id.as_str()),
            ("LAB^HOSP", "M1")
        );
        let d = decide_hl7("mllp", "adt", 3, b"", &ctx());
        assert_eq!(d.entry.status, Status::Refused);
        assert_eq!(d.entry.sender, "kafka:adt/3");
    }

    #[test]
    fn the_tally_audits_a_partition_with_its_counts() {
        let mut t = Tally::new("127.0.0.1:9092", "adt", 2, "mllp");
        assert!(t.take().is_none());
        t.count(10, Status::Accepted, Some(Appended::Logged(5)));
        t.count(11, Status::Refused, Some(Appended::Logged(6)));
        t.count(12, Status::Accepted, Some(Appended::Duplicate(5)));
        let e = t.take().expect("an entry");
        assert_eq!(e.principal.as_deref(), Some("127.0.0.1:9092/adt/2"));
        assert_eq!(e.rpc, "kafka");
        assert!(
            e.reason.contains("feed mllp: 2 messages logged (AA 1, AE 0, AR 1) as log records 5 to 6, offsets 10 to 12, 1 resends"),
            "{}",
            e.reason
        );
        assert!(t.take().is_none());
    }
}
