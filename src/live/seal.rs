//! Sealing a live feed: the records of its write-ahead log not yet sealed become one batch
//! ingest run ([`crate::ingest::pipeline::ingest_inputs`]), so the curated versions equal
//! those of `ward ingest` of a file named `<feed>.hl7` holding the same messages in sequence
//! order ([`batch_bytes`]) at the same ingestion time. A feed of FHIR payloads (pushed over
//! HTTP) is sealed as `fhir-ndjson`: one file per source name ([`super::fhir::sealed_inputs`]).
//!
//! Crash safety: before ingesting, the range and the ingestion time are written to
//! `seal-intent.json`; after the curated versions are committed, `sealed.json` moves to the
//! range's end and the intent is removed. A seal that finds an intent beyond `sealed.json`
//! (the last seal crashed in between) runs that same range again at the same ingestion time.
//! The run is deterministic and curated versions are set unions with exact duplicates
//! removed, so every table the crashed run already committed comes out with the content it
//! already holds (the store returns the existing version: nothing is ingested twice), and
//! the tables it did not reach are written. Segments are removed only after `sealed.json`
//! is durable, and only when every record in them is sealed; their (sender, control id)
//! pairs are first added to `sealed-ids`, so resends stay recognised.

use std::collections::BTreeMap;

use chrono::{FixedOffset, Offset};
use serde::Serialize;

use super::wal::{self, Intent, Lock, Record, Sealed, Status};
use super::{classify, input_name};
use crate::error::{Error, Result};
use crate::ingest::pipeline::{
    ingest_inputs, Format, IngestOptions, IngestReport, NamedInput, OnConflict,
};
use crate::ingest::{clip_raw, BadRecord, Context, Location};
use crate::security::audit::{AuditEntry, Outcome};
use crate::store::Store;

/// Settings of a seal.
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// The zone of HL7 times written without an offset (as `ward ingest --zone`; UTC).
    pub zone: FixedOffset,
    /// What happens when another writer moves a curated head during the run.
    pub on_conflict: OnConflict,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            zone: chrono::Utc.fix(),
            on_conflict: OnConflict::Retry,
        }
    }
}

/// What a seal did.
#[derive(Debug, Clone, Serialize)]
pub struct SealReport {
    /// The feed.
    pub feed: String,
    /// The first and last sequence numbers sealed (`None`: nothing to seal).
    pub range: Option<(u64, u64)>,
    /// Messages sealed.
    pub messages: u64,
    /// Of which acknowledged AE (their bad parts are in the quarantine version).
    pub errors: u64,
    /// Of which acknowledged AR (in the quarantine version only).
    pub refused: u64,
    /// Messages per sender.
    pub senders: BTreeMap<String, u64>,
    /// True when this seal finished one that had crashed.
    pub resumed: bool,
    /// Segment files removed.
    pub removed_segments: usize,
    /// The ingest run (`None`: nothing to seal).
    pub ingest: Option<IngestReport>,
}

impl SealReport {
    /// The audit record of this feed ingest: `rpc` (`cli:seal` or `mllp:seal`), the versions
    /// written, and the senders and counts in the reason.
    pub fn audit_entry(&self, rpc: &str) -> AuditEntry {
        let mut e = if rpc.starts_with("cli:") {
            let mut e = AuditEntry::local("seal", "feed_ingest");
            e.rpc = rpc.to_string();
            e
        } else {
            let mut e = AuditEntry::new(rpc, Outcome::System, "");
            e.action = Some("feed_ingest".into());
            e
        };
        let senders: Vec<String> = self
            .senders
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        e.reason = format!(
            "feed {}: sealed {} messages{} from {}; {} in error, {} refused",
            self.feed,
            self.messages,
            self.range
                .map(|(a, b)| format!(" (log records {a} to {b})"))
                .unwrap_or_default(),
            if senders.is_empty() {
                "no sender".to_string()
            } else {
                senders.join(", ")
            },
            self.errors,
            self.refused
        );
        if let Some(r) = &self.ingest {
            e.datasets = std::iter::once(r.raw.to_string())
                .chain(r.curated.iter().map(|c| c.hash.to_string()))
                .chain(r.quarantine.map(|q| q.to_string()))
                .collect();
        }
        e.outcome = Some("ok".into());
        e
    }
}

/// The bytes of the single file a batch ingest equal to a seal of `messages` reads: each
/// message in turn, a CR added after one that does not end a line.
pub fn batch_bytes<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(m);
        if !matches!(m.last(), Some(b'\r' | b'\n')) {
            out.push(b'\r');
        }
    }
    out
}

/// Seals `feed`: see the module documentation.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad feed name or a feed with no log;
/// [`Error::FailedPrecondition`] when another process is sealing it; log, store and ingest
/// errors (then nothing is marked sealed, and the next seal resumes the same range).
pub async fn seal(store: &Store, feed: &str, opts: &SealOptions) -> Result<SealReport> {
    wal::check_feed_name(feed)?;
    let dir = wal::feed_dir(&store.local_root("a live feed's log")?, feed);
    if !dir.is_dir() {
        return Err(Error::invalid(
            "--feed",
            format!(
                "{feed}: no write-ahead log at {} (nothing was ever received on this feed)",
                dir.display()
            ),
        ));
    }
    let _lock = Lock::try_take(&dir.join("seal.lock"), "sealing this feed")?;
    let sealed_path = dir.join("sealed.json");
    let intent_path = dir.join("seal-intent.json");
    let keys = store.encryption().map(|c| c.keyring().clone());
    let keys = keys.as_ref();
    let sealed: Sealed = wal::read_state_with_keys(&sealed_path, keys)?.unwrap_or_default();
    let intent: Option<Intent> = wal::read_state_with_keys(&intent_path, keys)?;
    let scan = wal::scan_with_keys(&dir, false, keys)?;
    let mut report = SealReport {
        feed: feed.to_string(),
        range: None,
        messages: 0,
        errors: 0,
        refused: 0,
        senders: BTreeMap::new(),
        resumed: false,
        removed_segments: 0,
        ingest: None,
    };
    let intent = match intent {
        Some(i) if i.to > sealed.through => {
            report.resumed = true;
            i
        }
        _ => {
            let Some(last) = scan.records.last().map(|r| r.seq) else {
                return Ok(report);
            };
            if last <= sealed.through {
                report.removed_segments = remove_sealed(&dir, &scan, sealed.through, keys)?;
                return Ok(report);
            }
            let i = Intent {
                from: sealed.through + 1,
                to: last,
                ingested_at: store.clock().now(),
            };
            wal::write_state_with_keys(&intent_path, &i, keys)?;
            i
        }
    };
    let records: Vec<&Record> = scan
        .records
        .iter()
        .filter(|r| (intent.from..=intent.to).contains(&r.seq))
        .collect();
    if records.first().map(|r| r.seq) != Some(intent.from)
        || records.last().map(|r| r.seq) != Some(intent.to)
    {
        return Err(Error::Store {
            path: dir.clone(),
            reason: format!(
                "the seal in progress covers log records {} to {}, and the log holds {} of them",
                intent.from,
                intent.to,
                records.len()
            ),
        });
    }
    let mut context = Context::new(intent.ingested_at);
    context.default_offset = opts.zone;
    let (format, inputs, extra_bad) = if records.iter().any(|r| !r.kind.is_empty()) {
        // FHIR payloads pushed over HTTP (`live::fhir`) or consumed from Kafka: as NDJSON
        // files; a Kafka message Ward could not place in one (refused) goes to quarantine.
        let mut applied = Vec::new();
        let mut extra_bad = Vec::new();
        for r in &records {
            *report.senders.entry(r.sender.clone()).or_insert(0) += 1;
            report.messages += 1;
            match r.status {
                Status::Refused => {
                    report.refused += 1;
                    extra_bad.push(refused_payload(r));
                }
                Status::Error => {
                    report.errors += 1;
                    applied.push(*r);
                }
                Status::Accepted => applied.push(*r),
            }
        }
        let inputs = super::fhir::sealed_inputs(&applied, &dir)?;
        (Format::FhirNdjson, inputs, extra_bad)
    } else {
        let (inputs, extra_bad) = hl7_inputs(feed, &records, &context, &mut report);
        (Format::Hl7v2, inputs, extra_bad)
    };
    let ingest_opts = IngestOptions {
        format,
        mapping: None,
        mapping_text: None,
        max_bad: None,
        context,
        read: Default::default(),
    };
    let params = serde_json::json!({
        "name": feed,
        "wal": { "from": intent.from, "to": intent.to },
        "messages": report.messages,
        "senders": report.senders,
    });
    let run = ingest_inputs(
        store,
        inputs,
        extra_bad,
        Some(params),
        &ingest_opts,
        opts.on_conflict,
    )
    .await?;
    wal::write_state_with_keys(&sealed_path, &Sealed { through: intent.to }, keys)?;
    wal::remove_state(&intent_path)?;
    report.range = Some((intent.from, intent.to));
    report.ingest = Some(run);
    report.removed_segments = remove_sealed(&dir, &scan, intent.to, keys)?;
    Ok(report)
}

/// The input of a seal of HL7 v2 `records` (the AA and AE messages as one file named
/// `<feed>.hl7`) and the quarantine records of the AR ones; counts them in `report`.
fn hl7_inputs(
    feed: &str,
    records: &[&Record],
    context: &Context,
    report: &mut SealReport,
) -> (Vec<NamedInput>, Vec<BadRecord>) {
    let name = input_name(feed);
    let mut applied = Vec::new();
    let mut extra_bad = Vec::new();
    for r in records {
        *report.senders.entry(r.sender.clone()).or_insert(0) += 1;
        report.messages += 1;
        match r.status {
            Status::Accepted => applied.push(r.message.as_slice()),
            Status::Error => {
                report.errors += 1;
                applied.push(r.message.as_slice());
            }
            Status::Refused => {
                report.refused += 1;
                let why = classify(&name, &r.message, context).reason;
                extra_bad.push(BadRecord {
                    location: Location {
                        file: format!("{name}#{}", r.seq),
                        record: r.seq,
                    },
                    table: None,
                    field: Some("MSH".into()),
                    reason: "refused".into(),
                    detail: format!(
                        "acknowledged AR (sender {}, control id {:?}, received {}): {why}",
                        r.sender,
                        r.control_id,
                        r.received_at.to_rfc3339()
                    ),
                    raw: clip_raw(&String::from_utf8_lossy(&r.message)),
                });
            }
        }
    }
    let bytes = batch_bytes(applied);
    (vec![NamedInput { name, bytes }], extra_bad)
}

/// The quarantine record of a FHIR payload refused when it was consumed (its reason made
/// again from the record, as for HL7 v2).
fn refused_payload(r: &Record) -> BadRecord {
    let why = super::kafka::refusal(r);
    let name = super::fhir::Kind::parse(&r.kind).map_or_else(|| "fhir".to_string(), |k| k.source);
    BadRecord {
        location: Location {
            file: format!("{name}#{}", r.seq),
            record: r.seq,
        },
        table: None,
        field: None,
        reason: "refused".into(),
        detail: format!(
            "refused when consumed (sender {}{}, received {}): {why}",
            r.sender,
            r.position
                .as_ref()
                .map(|p| format!(", Kafka {}/{} offset {}", p.topic, p.partition, p.offset))
                .unwrap_or_default(),
            r.received_at.to_rfc3339()
        ),
        raw: clip_raw(&String::from_utf8_lossy(&r.message)),
    }
}

/// Removes the segments (never the last one, which a writer may be appending to) whose
/// records are all sealed, after adding their (sender, control id) pairs to `sealed-ids`.
fn remove_sealed(
    dir: &std::path::Path,
    scan: &wal::Scan,
    through: u64,
    keys: Option<&crate::security::keyring::Keyring>,
) -> Result<usize> {
    let n = scan.segments.len();
    let removable: Vec<&(std::path::PathBuf, Option<(u64, u64)>)> = scan
        .segments
        .iter()
        .take(n.saturating_sub(1))
        .filter(|(_, span)| span.is_none_or(|(_, last)| last <= through))
        .collect();
    if removable.is_empty() {
        return Ok(0);
    }
    let removed: Vec<&Record> = scan
        .records
        .iter()
        .filter(|r| {
            removable
                .iter()
                .any(|(_, span)| span.is_some_and(|(a, b)| (a..=b).contains(&r.seq)))
        })
        .collect();
    let ids: Vec<(String, String)> = removed.iter().filter_map(|r| r.dedupe_key()).collect();
    wal::append_sealed_ids(dir, &ids, keys)?;
    // The Kafka positions of the removed records stay known, so a restart resumes after them.
    if removed.iter().any(|r| r.position.is_some()) {
        let path = wal::SealedPositions::path(dir);
        let mut positions: wal::SealedPositions =
            wal::read_state_with_keys(&path, keys)?.unwrap_or_default();
        positions.merge(removed.iter().copied());
        wal::write_state_with_keys(&path, &positions, keys)?;
    }
    for (path, _) in &removable {
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    wal::sync_dir(dir)?;
    Ok(removable.len())
}

/// Records a seal in the audit trail: in `log` when the server has one, else in
/// `<store>/audit` (synced before this returns), as the command line records its reads.
///
/// # Errors
/// Audit trail errors.
pub fn record_audit(
    store: &Store,
    report: &SealReport,
    rpc: &str,
    log: Option<&crate::security::audit::AuditLog>,
) -> Result<()> {
    let entry = report.audit_entry(rpc);
    match log {
        Some(l) => l.append(entry).map(|_| ()),
        None => {
            let dir = store.audit_dir()?;
            let l = crate::security::audit::AuditLog::open_with_keys(
                &dir,
                store.clock().clone(),
                crate::security::audit::AuditOptions {
                    durability: crate::security::audit::Durability::Sync,
                    ..crate::security::audit::AuditOptions::default()
                },
                store.encryption().map(|c| c.keyring().clone()),
            )?;
            l.append(entry).map(|_| ())
        }
    }
}

/// Prints what a seal did to standard error (as `ward ingest` prints its run).
pub fn print_report(r: &SealReport) {
    let Some((from, to)) = r.range else {
        eprintln!(
            "feed {}: nothing to seal{}",
            r.feed,
            if r.removed_segments > 0 {
                format!(" ({} sealed segments removed)", r.removed_segments)
            } else {
                String::new()
            }
        );
        return;
    };
    eprintln!(
        "feed {}: sealed log records {from} to {to}: {} messages ({} AE, {} AR){}; {} segments removed",
        r.feed,
        r.messages,
        r.errors,
        r.refused,
        if r.resumed {
            ", finishing a seal interrupted by a crash"
        } else {
            ""
        },
        r.removed_segments
    );
    for (s, n) in &r.senders {
        eprintln!("  sender {s:<30} {n}");
    }
    if let Some(run) = &r.ingest {
        eprintln!("  raw kept as {}", run.raw);
        for c in &run.curated {
            eprintln!(
                "  {:<13} +{:<8} rows -> {:>9} rows  {}",
                c.table, c.parsed_rows, c.total_rows, c.hash
            );
        }
        if let Some(q) = run.quarantine {
            eprintln!("  quarantined {} bad records ({q}):", run.bad_total());
            for (what, n) in &run.bad {
                eprintln!("    {what:<30} {n}");
            }
        }
    }
}
