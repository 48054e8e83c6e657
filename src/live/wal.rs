//! The write-ahead log of a live feed: `<store>/wal/<feed>/`.
//!
//! Append-only segment files (`<first seq, 20 digits>.wal`) of records, each
//! `[body length: u32 LE][checksum: the first 8 bytes of BLAKE3(body)][body]`; the body is
//! `seq: u64 LE, received_at: i64 LE (microseconds since the epoch, from the injected clock),
//! status: u8, sender: u16 LE length + UTF-8, control id: u16 LE length + UTF-8, message:
//! u32 LE length + bytes[, kind: u16 LE length + UTF-8[, position]]`. The kind is written only
//! when it is not empty or a position follows (an HL7 v2 message over MLLP has none; a FHIR
//! payload pushed over HTTP names its framing and source, [`crate::live::fhir::Kind`]), so MLLP
//! records are as they always were. The position is where a message consumed from Kafka was
//! read ([`Position`]): `tag: u8 = 1, topic: u16 LE length + UTF-8, partition: i32 LE,
//! offset: i64 LE`; it is written in the same record, so in the same durable write, as the
//! message it produced, and a restart resumes after the last logged position
//! ([`Wal::logged_position`]). Logs written before positions existed read as they always did.
//! Sequence numbers are consecutive across segments.
//!
//! One writer thread takes appends from every connection, batches what is waiting, writes the
//! batch, calls `fsync` once (and on the directory when it created a segment), and only then
//! answers every waiter: an answer means the record is durable (group commit).
//!
//! Opening for writing recovers: segments are read in order, and the first record that is
//! short or fails its checksum at the tail of the last segment is cut off (a write torn by a
//! crash: it was never acknowledged), with a warning naming the segment and byte offset.
//! Corruption before the tail is an error, never skipped silently. The (sender, control id)
//! pairs already logged are rebuilt from the segments and from `sealed-ids` (the pairs of
//! segments removed after sealing), so a resent message is recognised after a restart.
//!
//! Files beside the segments: `writer.lock` (held by the one writing process), `seal.lock`
//! (held by the one sealing process), `sealed.json` (`{"through": SEQ}`: records up to SEQ
//! are in curated versions), `seal-intent.json` (a seal in progress: its range and ingestion
//! time), `sealed-ids` (JSON lines `[sender, control id]`), `sealed-positions.json` (the last
//! Kafka position of each topic partition in segments removed after sealing,
//! [`SealedPositions`]).
//!
//! # In an encrypted store
//!
//! Opened with the store's keys ([`Wal::open_with_keys`], [`scan_with_keys`]), every segment
//! starts with a 128-byte encryption header (the format of [`crate::store::crypt`], kind
//! "record log": the segment's own data key wrapped by the store's KEK) and each record's
//! body is sealed on its own ([`crate::store::crypt::RecordLog`]: index in the segment,
//! random nonce, AES-256-GCM ciphertext and tag) inside the same length-and-checksum frame.
//! So the group commit, the torn-tail repair (a short frame or a checksum mismatch at the
//! tail of the last segment is cut, as before; a torn header of a last segment holding
//! nothing else too) and resume work as in a plaintext log. A frame whose checksum holds
//! but whose seal does not open is never a torn write: it is an error naming the segment and
//! byte offset, wherever it is. The state files (`sealed.json`, `seal-intent.json`,
//! `sealed-positions.json`) and `sealed-ids` are whole sealed objects
//! ([`crate::store::crypt::seal_bytes`]), rewritten atomically. `ward key rotate` rewrites
//! the headers only (`docs/encryption.md`). Without the keys an encrypted log is refused,
//! as is a plaintext log with them.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::security::keyring::Keyring;
use crate::store::crypt::{self, RecordLog};

/// A new segment is started once the current one holds this many bytes (default).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// The largest record body accepted when reading (a longer length prefix is corruption).
const MAX_BODY: u32 = 1 << 30;

/// Bytes before a record's body: its length and checksum.
const HEADER: usize = 12;

/// At most this many appends go into one group commit.
const MAX_BATCH: usize = 4096;

/// What the listener decided about a message ([`crate::live::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Acknowledged AA: sealed into the curated tables.
    Accepted = 0,
    /// Acknowledged AE: the batch parser finds bad records in it; sealed like any message
    /// (its bad parts land in quarantine, as in a batch ingest).
    Error = 1,
    /// Acknowledged AR: not an HL7 v2 message Ward can apply (no MSH, no control id, several
    /// messages in one frame); sealed into quarantine only.
    Refused = 2,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        match b {
            0 => Some(Status::Accepted),
            1 => Some(Status::Error),
            2 => Some(Status::Refused),
            _ => None,
        }
    }
}

/// Where a message consumed from Kafka was read: its topic, partition and offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The message's offset in the partition.
    pub offset: i64,
}

/// The tag of a [`Position`] in a record body.
const POSITION_TAG: u8 = 1;

/// One logged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number (from 1, consecutive).
    pub seq: u64,
    /// When Ward received it (the injected clock).
    pub received_at: DateTime<Utc>,
    /// What the listener answered.
    pub status: Status,
    /// The sender: `MSH-3^MSH-4` as curated rows name it, or the peer address when the
    /// message has no readable MSH.
    pub sender: String,
    /// MSH-10 (empty when there is none).
    pub control_id: String,
    /// The message as received (between the MLLP frame bytes, or an HTTP request's body).
    pub message: Vec<u8>,
    /// What the message is when it is not an HL7 v2 message (empty): a FHIR payload's
    /// framing and source name ([`crate::live::fhir::Kind`]).
    pub kind: String,
    /// Where the message was read, when it was consumed from Kafka.
    pub position: Option<Position>,
}

impl Record {
    /// The key a resend is recognised by, when the record has a control id.
    pub fn dedupe_key(&self) -> Option<(String, String)> {
        (!self.control_id.is_empty()).then(|| (self.sender.clone(), self.control_id.clone()))
    }

    #[cfg(test)]
    fn encode(&self, out: &mut Vec<u8>) {
        frame(&self.body(), out);
    }

    /// The record's body (what its frame holds in a plaintext log).
    fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(32 + self.sender.len() + self.message.len());
        body.extend_from_slice(&self.seq.to_le_bytes());
        body.extend_from_slice(&self.received_at.timestamp_micros().to_le_bytes());
        body.push(self.status as u8);
        for s in [&self.sender, &self.control_id] {
            let b = s.as_bytes();
            let b = &b[..b.len().min(u16::MAX as usize)];
            body.extend_from_slice(&(b.len() as u16).to_le_bytes());
            body.extend_from_slice(b);
        }
        body.extend_from_slice(&(self.message.len() as u32).to_le_bytes());
        body.extend_from_slice(&self.message);
        if !self.kind.is_empty() || self.position.is_some() {
            let b = self.kind.as_bytes();
            let b = &b[..b.len().min(u16::MAX as usize)];
            body.extend_from_slice(&(b.len() as u16).to_le_bytes());
            body.extend_from_slice(b);
        }
        if let Some(p) = &self.position {
            body.push(POSITION_TAG);
            let b = p.topic.as_bytes();
            let b = &b[..b.len().min(u16::MAX as usize)];
            body.extend_from_slice(&(b.len() as u16).to_le_bytes());
            body.extend_from_slice(b);
            body.extend_from_slice(&p.partition.to_le_bytes());
            body.extend_from_slice(&p.offset.to_le_bytes());
        }
        body
    }

    /// Decodes the record at the start of `bytes`: `Ok(Some((record, length)))`, `Ok(None)`
    /// when `bytes` ends before the record does, `Err(why)` when it is corrupt.
    #[cfg(test)]
    fn decode(bytes: &[u8]) -> std::result::Result<Option<(Record, usize)>, String> {
        match unframe(bytes)? {
            None => Ok(None),
            Some((body, end)) => Ok(Some((Record::parse(body)?, end))),
        }
    }

    /// Parses a record's body.
    fn parse(body: &[u8]) -> std::result::Result<Record, String> {
        let mut r = Reader { b: body, at: 0 };
        let seq = r.u64()?;
        let micros = r.u64()? as i64;
        let status = r.take(1)?[0];
        let status = Status::from_u8(status).ok_or(format!("unknown status {status}"))?;
        let sender = r.text()?;
        let control_id = r.text()?;
        let n = r.u32()? as usize;
        let message = r.take(n)?.to_vec();
        let kind = if r.at == body.len() {
            String::new()
        } else {
            r.text()?
        };
        let position = if r.at == body.len() {
            None
        } else {
            match r.take(1)?[0] {
                POSITION_TAG => {
                    let topic = r.text()?;
                    let partition = r.u32()? as i32;
                    let offset = r.u64()? as i64;
                    Some(Position {
                        topic,
                        partition,
                        offset,
                    })
                }
                t => return Err(format!("unknown record extension {t}")),
            }
        };
        if r.at != body.len() {
            return Err("trailing bytes in the record".into());
        }
        let received_at = DateTime::from_timestamp_micros(micros)
            .ok_or(format!("receive time {micros} out of range"))?;
        Ok(Record {
            seq,
            received_at,
            status,
            sender,
            control_id,
            message,
            kind,
            position,
        })
    }
}

/// Frames a body: `[length: u32 LE][checksum: the first 8 bytes of BLAKE3(body)][body]`.
fn frame(body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&blake3::hash(body).as_bytes()[..8]);
    out.extend_from_slice(body);
}

/// The body of the frame at the start of `bytes` and the frame's length: `Ok(None)` when
/// `bytes` ends before the frame does, `Err(why)` when the length or checksum is wrong.
fn unframe(bytes: &[u8]) -> std::result::Result<Option<(&[u8], usize)>, String> {
    if bytes.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if len > MAX_BODY {
        return Err(format!("record length {len} exceeds {MAX_BODY}"));
    }
    let end = HEADER + len as usize;
    if bytes.len() < end {
        return Ok(None);
    }
    let body = &bytes[HEADER..end];
    if blake3::hash(body).as_bytes()[..8] != bytes[4..HEADER] {
        return Err("checksum mismatch".into());
    }
    Ok(Some((body, end)))
}

/// The store error for an encryption failure of a log file.
fn crypt_error(path: &Path, e: crypt::CryptError) -> Error {
    Error::Store {
        path: path.to_path_buf(),
        reason: format!("encrypted write-ahead log: {e}"),
    }
}

/// The cipher of a segment from its first bytes: `Ok(None)` for a plaintext segment (no
/// keys) or an encrypted one whose header is not complete yet.
///
/// # Errors
/// [`Error::Store`] naming the segment for a wrong key, a tampered header, a plaintext
/// segment in an encrypted log or an encrypted one read without keys.
fn segment_codec(bytes: &[u8], keys: Option<&Keyring>, path: &Path) -> Result<Option<RecordLog>> {
    let encrypted = bytes.len() >= crypt::HEADER_LEN && crypt::is_record_log_header(bytes);
    match keys {
        None if encrypted || bytes.starts_with(&crypt::MAGIC) => Err(Error::Store {
            path: path.to_path_buf(),
            reason: "an encrypted write-ahead log segment (an encrypted store's): read it through the store, which loads the key".into(),
        }),
        None => Ok(None),
        Some(_) if bytes.len() < crypt::HEADER_LEN && crypt::MAGIC.starts_with(&bytes[..bytes.len().min(8)]) => Ok(None),
        Some(k) if encrypted => RecordLog::open(k, &bytes[..crypt::HEADER_LEN], &path.display().to_string())
            .map(Some)
            .map_err(|e| crypt_error(path, e)),
        Some(_) => Err(Error::Store {
            path: path.to_path_buf(),
            reason: "not encrypted: the store is encrypted, but this write-ahead log segment does not start with an encryption header".into(),
        }),
    }
}

/// Seals `plain` when `keys` is given (a state file of an encrypted log).
fn seal_state(keys: Option<&Keyring>, plain: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    match keys {
        None => Ok(plain),
        Some(k) => crypt::seal_bytes(k, &plain, &path.display().to_string())
            .map_err(|e| crypt_error(path, e)),
    }
}

/// Opens a state file's bytes when `keys` is given; refuses the other form.
fn open_state(keys: Option<&Keyring>, stored: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    let sealed = stored.starts_with(&crypt::MAGIC);
    match keys {
        Some(k) => crypt::open_bytes(k, &stored, &path.display().to_string())
            .map_err(|e| crypt_error(path, e)),
        None if sealed => Err(Error::Store {
            path: path.to_path_buf(),
            reason: "encrypted (an encrypted store's write-ahead log state): read it through the store, which loads the key".into(),
        }),
        None => Ok(stored),
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let s = self.b.get(self.at..self.at + n).ok_or_else(|| {
            format!(
                "record body ends at byte {} of {}",
                self.b.len(),
                self.at + n
            )
        })?;
        self.at += n;
        Ok(s)
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        let s = self.take(8)?;
        Ok(u64::from_le_bytes(s.try_into().map_err(|_| "short u64")?))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes(s.try_into().map_err(|_| "short u32")?))
    }
    fn text(&mut self) -> std::result::Result<String, String> {
        let s = self.take(2)?;
        let n = u16::from_le_bytes([s[0], s[1]]) as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "text is not UTF-8".into())
    }
}

/// The directory of `feed`'s log under the store at `root`.
pub fn feed_dir(root: &Path, feed: &str) -> PathBuf {
    root.join("wal").join(feed)
}

/// Checks a feed name: it names a directory, so letters, digits, `-`, `_` and `.` only.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the feed.
pub fn check_feed_name(feed: &str) -> Result<()> {
    let ok = !feed.is_empty()
        && feed.len() <= 64
        && !feed.starts_with('.')
        && feed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "feed",
            format!("{feed:?}: a feed name is 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"),
        ))
    }
}

/// The segment files of a log directory, by first sequence number.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = name
            .strip_suffix(".wal")
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// What reading a log found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every complete record, in sequence order.
    pub records: Vec<Record>,
    /// Per segment: its path and the sequence numbers of its first and last records
    /// (`None`: empty).
    pub segments: Vec<(PathBuf, Option<(u64, u64)>)>,
    /// The incomplete or corrupt tail of the last segment, when there was one: the segment,
    /// the byte offset where the tail starts, its length and why it is not a record.
    pub torn: Option<(PathBuf, u64, u64, String)>,
}

/// Reads every record of the log in `dir`. A short or corrupt tail of the *last* segment is
/// reported in [`Scan::torn`] (and cut off when `repair`); anywhere else it is an error.
///
/// # Errors
/// [`Error::Io`]; [`Error::Store`] naming the segment and byte offset of a corrupt record
/// before the tail, or of sequence numbers out of order.
pub fn scan(dir: &Path, repair: bool) -> Result<Scan> {
    scan_with_keys(dir, repair, None)
}

/// [`scan`] of an encrypted store's log when `keys` is given (module docs).
///
/// # Errors
/// As [`scan`]; [`Error::Store`] naming the segment for a wrong key (both key ids), a
/// segment in the other form, or a record that does not authenticate (and its byte offset).
pub fn scan_with_keys(dir: &Path, repair: bool, keys: Option<&Keyring>) -> Result<Scan> {
    let segs = segments(dir)?;
    let mut out = Scan::default();
    let n = segs.len();
    for (i, (_, path)) in segs.iter().enumerate() {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        let codec = segment_codec(&bytes, keys, path)?;
        let mut at = if codec.is_some() {
            crypt::HEADER_LEN
        } else {
            0
        };
        let mut index = 0u64;
        let mut span: Option<(u64, u64)> = None;
        while at < bytes.len() {
            let decoded = if keys.is_some() && codec.is_none() {
                Ok(None) // the encryption header is cut short
            } else {
                unframe(&bytes[at..])
            };
            let decoded = match (decoded, &codec) {
                (Ok(Some((body, len))), Some(c)) => {
                    let (_, plain) = c
                        .open_record(body, Some(index), &format!("record at byte {at}"))
                        .map_err(|e| crypt_error(path, e))?;
                    index += 1;
                    Record::parse(&plain).map(|r| Some((r, len)))
                }
                (Ok(Some((body, len))), None) => Record::parse(body).map(|r| Some((r, len))),
                (Ok(None), _) => Ok(None),
                (Err(e), _) => Err(e),
            };
            let problem = match decoded {
                Ok(Some((rec, len))) => {
                    if let Some(prev) = out.records.last().map(|r: &Record| r.seq) {
                        if rec.seq <= prev {
                            return Err(Error::Store {
                                path: path.clone(),
                                reason: format!(
                                    "write-ahead log record at byte {at} has sequence number {} after {prev}",
                                    rec.seq
                                ),
                            });
                        }
                    }
                    span = Some((span.map_or(rec.seq, |s| s.0), rec.seq));
                    out.records.push(rec);
                    at += len;
                    continue;
                }
                Ok(None) => "the segment ends inside the record".to_string(),
                Err(why) => why,
            };
            if i + 1 != n {
                return Err(Error::Store {
                    path: path.clone(),
                    reason: format!(
                        "write-ahead log record at byte {at} is corrupt ({problem}) and later segments exist; refusing to guess"
                    ),
                });
            }
            let tail = (bytes.len() - at) as u64;
            if repair {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                f.set_len(at as u64).map_err(|e| Error::io(path, e))?;
                f.sync_all().map_err(|e| Error::io(path, e))?;
                tracing::warn!(
                    segment = %path.display(),
                    offset = at,
                    bytes = tail,
                    "write-ahead log: cut off a torn tail ({problem}); it was never acknowledged"
                );
                eprintln!(
                    "write-ahead log {}: cut off {tail} bytes at byte {at} ({problem}): a write torn by a crash, never acknowledged",
                    path.display()
                );
            }
            out.torn = Some((path.clone(), at as u64, tail, problem));
            break;
        }
        out.segments.push((path.clone(), span));
    }
    Ok(out)
}

/// `sealed.json`: records up to `through` are in curated versions.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealed {
    /// The last sealed sequence number (0: none).
    pub through: u64,
}

/// `sealed-positions.json`: the last Kafka position of each topic partition whose records were
/// in segments removed after sealing, so a restart still resumes after them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealedPositions {
    /// One position per (topic, partition): the highest offset logged.
    pub positions: Vec<Position>,
}

impl SealedPositions {
    /// The file's path in the log directory `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("sealed-positions.json")
    }

    /// Adds the positions of `records`, keeping the highest offset per topic partition.
    pub fn merge<'a>(&mut self, records: impl IntoIterator<Item = &'a Record>) {
        let mut last = last_positions(self.positions.iter());
        for (k, v) in last_positions(records.into_iter().filter_map(|r| r.position.as_ref())) {
            let e = last.entry(k).or_insert(v);
            *e = (*e).max(v);
        }
        self.positions = last
            .into_iter()
            .map(|((topic, partition), offset)| Position {
                topic,
                partition,
                offset,
            })
            .collect();
    }
}

/// The highest offset of each (topic, partition) among `positions`.
pub fn last_positions<'a>(
    positions: impl IntoIterator<Item = &'a Position>,
) -> std::collections::BTreeMap<(String, i32), i64> {
    let mut out = std::collections::BTreeMap::new();
    for p in positions {
        let e = out
            .entry((p.topic.clone(), p.partition))
            .or_insert(p.offset);
        *e = (*e).max(p.offset);
    }
    out
}

/// `seal-intent.json`: a seal in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Intent {
    /// First sequence number of the range.
    pub from: u64,
    /// Last sequence number of the range.
    pub to: u64,
    /// The run's ingestion time (so a resumed seal parses exactly as the first attempt).
    pub ingested_at: DateTime<Utc>,
}

/// Reads a small JSON state file; `None` when absent.
pub fn read_state<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    read_state_with_keys(path, None)
}

/// [`read_state`] of an encrypted store's log when `keys` is given.
///
/// # Errors
/// As [`read_state`]; [`Error::Store`] naming the file when it does not open.
pub fn read_state_with_keys<T: serde::de::DeserializeOwned>(
    path: &Path,
    keys: Option<&Keyring>,
) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&open_state(keys, b, path)?)
            .map(Some)
            .map_err(|e| Error::Store {
                path: path.to_path_buf(),
                reason: format!("unreadable write-ahead log state: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes a small JSON state file atomically and durably (temporary file, fsync, rename,
/// fsync of the directory).
pub fn write_state<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_state_with_keys(path, value, None)
}

/// [`write_state`] sealed under `keys` when given (an encrypted store's log).
///
/// # Errors
/// As [`write_state`].
pub fn write_state_with_keys<T: Serialize>(
    path: &Path,
    value: &T,
    keys: Option<&Keyring>,
) -> Result<()> {
    let text = serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(path, &seal_state(keys, text, path)?)
}

/// Writes a small file atomically and durably.
fn write_atomic(path: &Path, text: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(text).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Removes a state file durably (no error when absent).
pub fn remove_state(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `fsync` of a directory, so a created, renamed or removed entry survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The (sender, control id) pairs of removed segments (`sealed-ids`); a torn last line is
/// ignored. With `keys` (an encrypted store's log) the file is one sealed object.
pub fn read_sealed_ids(dir: &Path, keys: Option<&Keyring>) -> Result<Vec<(String, String)>> {
    let path = dir.join("sealed-ids");
    let text = match fs::read(&path) {
        Ok(b) => open_state(keys, b, &path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    Ok(text
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<(String, String)>(line).ok())
        .collect())
}

/// Appends pairs to `sealed-ids`, durably. With `keys` the whole file is sealed again and
/// replaced atomically (sealing is rare; the file holds one short line per sealed message).
pub fn append_sealed_ids(
    dir: &Path,
    ids: &[(String, String)],
    keys: Option<&Keyring>,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let path = dir.join("sealed-ids");
    let mut buf = Vec::new();
    for id in ids {
        serde_json::to_writer(&mut buf, id).map_err(|e| Error::Internal(e.to_string()))?;
        buf.push(b'\n');
    }
    if keys.is_some() {
        let mut all = match fs::read(&path) {
            Ok(b) => open_state(keys, b, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        if !all.is_empty() && all.last() != Some(&b'\n') {
            all.push(b'\n');
        }
        all.extend_from_slice(&buf);
        return write_atomic(&path, &seal_state(keys, all, &path)?);
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // A torn line left by a crash is ended first, so the new lines stay readable.
    let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
    if len > 0 {
        let last = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if last.last() != Some(&b'\n') {
            f.write_all(b"\n").map_err(|e| Error::io(&path, e))?;
        }
    }
    f.write_all(&buf).map_err(|e| Error::io(&path, e))?;
    f.sync_all().map_err(|e| Error::io(&path, e))
}

/// An exclusive advisory lock on a file (released when dropped or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock at `path` without waiting.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when another process holds it,
    /// naming `what`; [`Error::Io`].
    pub fn try_take(path: &Path, what: &str) -> Result<Lock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if file.try_lock().is_err() {
            return Err(Error::precondition(
                path.display().to_string(),
                format!("another process is {what}"),
            ));
        }
        Ok(Lock { _file: file })
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Logged under this sequence number, durably.
    Logged(u64),
    /// Already logged (same sender and control id) under this sequence number; not logged
    /// again.
    Duplicate(u64),
}

/// One message to append ([`Wal::enqueue`]).
#[derive(Debug, Clone)]
pub struct Entry {
    /// What the listener decided about it.
    pub status: Status,
    /// Its sender (a resend is recognised by sender and control id).
    pub sender: String,
    /// Its control id (empty: never recognised as a resend).
    pub control_id: String,
    /// What it is when not an HL7 v2 message ([`Record::kind`]).
    pub kind: String,
    /// The message.
    pub message: Vec<u8>,
    /// Where it was read, when consumed from Kafka: logged in the same record.
    pub position: Option<Position>,
}

/// An append handed to the writer; [`Pending::wait`] answers once it is durable.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Appended>>);

impl Pending {
    /// Waits until the append is durable (or recognised as a resend).
    ///
    /// # Errors
    /// As [`Wal::append`].
    pub async fn wait(self) -> Result<Appended> {
        self.0
            .await
            .map_err(|_| Error::Internal("the write-ahead log writer stopped".into()))?
    }
}

/// An append waiting for the writer.
struct Request {
    entry: Entry,
    reply: oneshot::Sender<Result<Appended>>,
}

/// The last logged offset per (topic, partition).
type Positions = Arc<std::sync::Mutex<HashMap<(String, i32), i64>>>;

/// What opening a log found.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    /// Records in the segments.
    pub records: usize,
    /// The next sequence number.
    pub next_seq: u64,
    /// The torn tail cut off: segment, byte offset, length, why.
    pub torn: Option<(PathBuf, u64, u64, String)>,
}

/// The log of one feed, open for appending (one per process: `writer.lock`).
#[derive(Debug, Clone)]
pub struct Wal {
    tx: mpsc::UnboundedSender<Request>,
    dir: Arc<PathBuf>,
    positions: Positions,
}

impl Wal {
    /// Opens (creating) `dir`, recovers it (see the module documentation) and starts the
    /// writer thread.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when another process writes this log; [`Error::Io`];
    /// [`Error::Store`] for corruption before the tail.
    pub fn open(dir: &Path, clock: SharedClock, segment_bytes: u64) -> Result<(Wal, Opened)> {
        Wal::open_with_keys(dir, clock, segment_bytes, None)
    }

    /// [`Wal::open`] of an encrypted store's log when `keys` is given: segments and state
    /// files are sealed (module docs).
    ///
    /// # Errors
    /// As [`Wal::open`]; [`Error::Store`] naming the file for a wrong key or a file in the
    /// other form.
    pub fn open_with_keys(
        dir: &Path,
        clock: SharedClock,
        segment_bytes: u64,
        keys: Option<Keyring>,
    ) -> Result<(Wal, Opened)> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock = Lock::try_take(&dir.join("writer.lock"), "writing this write-ahead log")?;
        let k = keys.as_ref();
        let scan = scan_with_keys(dir, true, k)?;
        let sealed: Sealed = read_state_with_keys(&dir.join("sealed.json"), k)?.unwrap_or_default();
        let mut seen: HashMap<(String, String), u64> = HashMap::new();
        for key in read_sealed_ids(dir, k)? {
            seen.insert(key, 0);
        }
        for r in &scan.records {
            if let Some(k) = r.dedupe_key() {
                seen.insert(k, r.seq);
            }
        }
        let sealed_positions: SealedPositions =
            read_state_with_keys(&SealedPositions::path(dir), k)?.unwrap_or_default();
        let positions: HashMap<(String, i32), i64> = last_positions(
            sealed_positions
                .positions
                .iter()
                .chain(scan.records.iter().filter_map(|r| r.position.as_ref())),
        )
        .into_iter()
        .collect();
        let positions: Positions = Arc::new(std::sync::Mutex::new(positions));
        let last = scan.records.last().map_or(0, |r| r.seq);
        let next = last.max(sealed.through) + 1;
        // Appends go to a new segment (or to the last one when it is still empty), so every
        // older segment can be removed once sealed.
        let (path, len) = match scan.segments.last() {
            Some((p, None)) => {
                let len = fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
                (p.clone(), len)
            }
            _ => (dir.join(format!("{next:020}.wal")), 0),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let (mut len, mut codec) = (len, None);
        if let Some(k) = k {
            if len == 0 {
                codec = Some(start_segment(&mut file, &path, k)?);
                len = crypt::HEADER_LEN as u64;
            } else {
                let mut header = vec![0u8; crypt::HEADER_LEN];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0)
                    .map_err(|e| Error::io(&path, e))?;
                codec = segment_codec(&header, Some(k), &path)?;
            }
        }
        sync_dir(dir)?;
        let opened = Opened {
            records: scan.records.len(),
            next_seq: next,
            torn: scan.torn,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            file,
            path,
            len,
            next,
            seen,
            clock,
            segment_bytes: segment_bytes.max(1),
            failed: None,
            positions: positions.clone(),
            keys,
            codec,
            index: 0,
            _lock: lock,
        };
        std::thread::Builder::new()
            .name("ward-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::io(dir, e))?;
        Ok((
            Wal {
                tx,
                dir: Arc::new(dir.to_path_buf()),
                positions,
            },
            opened,
        ))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a message and waits until it is durable (or recognised as a resend: a record
    /// with the same sender and non-empty control id is already logged).
    ///
    /// # Errors
    /// [`Error::Store`] when the log cannot be written (the writer then refuses every later
    /// append: nothing is acknowledged that is not durable).
    pub async fn append(
        &self,
        status: Status,
        sender: &str,
        control_id: &str,
        message: &[u8],
    ) -> Result<Appended> {
        self.append_kind(status, sender, control_id, "", message)
            .await
    }

    /// [`Wal::append`] of a record whose message is of `kind` (empty: an HL7 v2 message).
    ///
    /// # Errors
    /// As [`Wal::append`].
    pub async fn append_kind(
        &self,
        status: Status,
        sender: &str,
        control_id: &str,
        kind: &str,
        message: &[u8],
    ) -> Result<Appended> {
        self.enqueue(Entry {
            status,
            sender: sender.to_string(),
            control_id: control_id.to_string(),
            kind: kind.to_string(),
            message: message.to_vec(),
            position: None,
        })?
        .wait()
        .await
    }

    /// Hands an append to the writer without waiting: appends enqueued one after the other
    /// are logged in that order (so the positions of one Kafka partition are logged in
    /// offset order), and many enqueued before waiting share one `fsync`.
    ///
    /// # Errors
    /// [`Error::Internal`] when the writer thread has stopped.
    pub fn enqueue(&self, entry: Entry) -> Result<Pending> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { entry, reply })
            .map_err(|_| Error::Internal("the write-ahead log writer stopped".into()))?;
        Ok(Pending(rx))
    }

    /// The offset of the last message of `topic`'s `partition` durably in this log (in its
    /// segments, or in `sealed-positions.json` for segments removed after sealing): a
    /// consumer resumes after it.
    pub fn logged_position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.positions
            .lock()
            .ok()?
            .get(&(topic.to_string(), partition))
            .copied()
    }
}

struct Writer {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    len: u64,
    next: u64,
    seen: HashMap<(String, String), u64>,
    clock: SharedClock,
    segment_bytes: u64,
    failed: Option<String>,
    positions: Positions,
    /// An encrypted store's keys: segments are sealed (module docs).
    keys: Option<Keyring>,
    /// The current segment's cipher (encrypted logs).
    codec: Option<RecordLog>,
    /// The index of the current segment's next record (encrypted logs).
    index: u64,
    _lock: Lock,
}

/// Writes a new segment's encryption header; its cipher.
fn start_segment(file: &mut File, path: &Path, keys: &Keyring) -> Result<RecordLog> {
    let (header, codec) =
        RecordLog::create(keys, &path.display().to_string()).map_err(|e| crypt_error(path, e))?;
    file.write_all(&header).map_err(|e| Error::io(path, e))?;
    Ok(codec)
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// One group commit: log what is new, one fsync, then answer everyone.
    fn commit(&mut self, batch: Vec<Request>) {
        if let Some(why) = &self.failed {
            for r in batch {
                let _ = r.reply.send(Err(self.error(why.clone())));
            }
            return;
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut pending = Vec::new();
        let mut result = Ok(());
        let mut logged_positions = Vec::new();
        for Request { entry: r, reply } in batch {
            let key = (!r.control_id.is_empty()).then(|| (r.sender.clone(), r.control_id.clone()));
            if let Some(seq) = key.as_ref().and_then(|k| self.seen.get(k)) {
                answers.push((reply, Appended::Duplicate(*seq)));
                continue;
            }
            let rec = Record {
                seq: self.next,
                received_at: self.clock.now(),
                status: r.status,
                sender: r.sender,
                control_id: r.control_id,
                message: r.message,
                kind: r.kind,
                position: r.position,
            };
            if let Some(p) = &rec.position {
                logged_positions.push(p.clone());
            }
            let body = rec.body();
            let sealed_len = match &self.codec {
                Some(_) => body.len() + crypt::RECORD_OVERHEAD,
                None => body.len(),
            };
            let start = if self.codec.is_some() {
                crypt::HEADER_LEN as u64
            } else {
                0
            };
            if self.len > start
                && self.len + (pending.len() + HEADER + sealed_len) as u64 > self.segment_bytes
            {
                result = result.and_then(|_| self.roll(&mut pending, rec.seq));
            }
            match &self.codec {
                None => frame(&body, &mut pending),
                Some(c) => match c.seal(self.index, &body) {
                    Ok(sealed) => {
                        frame(&sealed, &mut pending);
                        self.index += 1;
                    }
                    Err(e) => result = result.and_then(|_| Err(e.to_string())),
                },
            }
            if let Some(k) = key {
                self.seen.insert(k, rec.seq);
            }
            answers.push((reply, Appended::Logged(rec.seq)));
            self.next += 1;
        }
        let result = result.and_then(|_| self.write(&mut pending)).and_then(|_| {
            self.file
                .sync_data()
                .map_err(|e| format!("fsync of {}: {e}", self.path.display()))
        });
        match result {
            Ok(()) => {
                if !logged_positions.is_empty() {
                    if let Ok(mut map) = self.positions.lock() {
                        for p in logged_positions {
                            let e = map.entry((p.topic, p.partition)).or_insert(p.offset);
                            *e = (*e).max(p.offset);
                        }
                    }
                }
                for (reply, a) in answers {
                    let _ = reply.send(Ok(a));
                }
            }
            Err(why) => {
                tracing::error!(log = %self.dir.display(), "write-ahead log failed: {why}");
                self.failed = Some(why.clone());
                for (reply, _) in answers {
                    let _ = reply.send(Err(self.error(why.clone())));
                }
            }
        }
    }

    fn error(&self, why: String) -> Error {
        Error::Store {
            path: self.dir.clone(),
            reason: format!("the write-ahead log cannot be written ({why}); nothing more is acknowledged until the server restarts"),
        }
    }

    fn write(&mut self, pending: &mut Vec<u8>) -> std::result::Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(pending)
            .map_err(|e| format!("write to {}: {e}", self.path.display()))?;
        self.len += pending.len() as u64;
        pending.clear();
        Ok(())
    }

    /// Ends the current segment (written and synced) and starts one named `first`.
    fn roll(&mut self, pending: &mut Vec<u8>, first: u64) -> std::result::Result<(), String> {
        self.write(pending)?;
        self.file
            .sync_data()
            .map_err(|e| format!("fsync of {}: {e}", self.path.display()))?;
        let path = self.dir.join(format!("{first:020}.wal"));
        self.file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        sync_dir(&self.dir).map_err(|e| e.to_string())?;
        self.path = path;
        self.len = 0;
        self.index = 0;
        if let Some(k) = &self.keys {
            let codec = start_segment(&mut self.file, &self.path, k).map_err(|e| e.to_string())?;
            self.codec = Some(codec);
            self.len = crypt::HEADER_LEN as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, msg: &str) -> Record {
        Record {
            seq,
            received_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            status: Status::Accepted,
            sender: "APP^FAC".into(),
            control_id: format!("C{seq}"),
            message: msg.as_bytes().to_vec(),
            kind: String::new(),
            position: None,
        }
    }

    #[test]
    fn records_round_trip_and_corruption_is_detected() {
        let mut b = Vec::new();
        rec(7, "MSH|^~\\&|x\r").encode(&mut b);
        let (r, n) = Record::decode(&b).expect("ok").expect("complete");
        assert_eq!((r, n), (rec(7, "MSH|^~\\&|x\r"), b.len()));
        assert_eq!(Record::decode(&b[..b.len() - 1]).expect("ok"), None);
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(Record::decode(&bad).is_err());
        // A record with a kind round-trips; one without keeps the old layout exactly.
        let mut with = rec(8, "{}");
        with.kind = "fhir-ndjson:Patient.ndjson".into();
        let mut b2 = Vec::new();
        with.encode(&mut b2);
        let mut b3 = Vec::new();
        rec(8, "{}").encode(&mut b3);
        assert_eq!(b2.len(), b3.len() + 2 + with.kind.len());
        assert_eq!(Record::decode(&b2).expect("ok").expect("complete").0, with);
    }

    #[test]
    fn kafka_positions_round_trip_and_old_records_keep_their_layout() {
        let pos = Position {
            topic: "adt".into(),
            partition: 2,
            offset: 41,
        };
        // An HL7 v2 message from Kafka: no kind, a position.
        let mut with = rec(9, "MSH|x\r");
        with.position = Some(pos.clone());
        let mut b = Vec::new();
        with.encode(&mut b);
        let mut plain = Vec::new();
        rec(9, "MSH|x\r").encode(&mut plain);
        assert_eq!(b.len(), plain.len() + 2 + 1 + 2 + 3 + 4 + 8);
        assert_eq!(Record::decode(&b).expect("ok").expect("complete").0, with);
        // A FHIR payload from Kafka: a kind and a position.
        with.kind = "fhir-ndjson:Patient.ndjson".into();
        let mut b = Vec::new();
        with.encode(&mut b);
        assert_eq!(Record::decode(&b).expect("ok").expect("complete").0, with);
        // An unknown extension is corruption, not skipped.
        let mut bad = rec(9, "MSH|x\r");
        bad.kind = "k".into();
        let mut body = Vec::new();
        bad.encode(&mut body);
        let mut inner = body[HEADER..].to_vec();
        inner.push(7);
        let mut b = (inner.len() as u32).to_le_bytes().to_vec();
        b.extend_from_slice(&blake3::hash(&inner).as_bytes()[..8]);
        b.extend_from_slice(&inner);
        let e = Record::decode(&b).expect_err("unknown extension");
        assert!(e.contains("extension 7"), "{e}");
    }

    #[test]
    fn the_logged_positions_come_from_the_segments_and_sealed_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = |topic: &str, partition, offset| Position {
            topic: topic.into(),
            partition,
            offset,
        };
        let mut b = Vec::new();
        for (seq, p) in [(1, at("a", 0, 5)), (2, at("a", 0, 6)), (3, at("a", 1, 2))] {
            let mut r = rec(seq, "m");
            r.position = Some(p);
            r.encode(&mut b);
        }
        rec(4, "no position").encode(&mut b);
        fs::write(dir.path().join(format!("{:020}.wal", 1)), &b).expect("write");
        let mut sealed = SealedPositions::default();
        let mut old = rec(0, "m");
        old.position = Some(at("a", 1, 9));
        let mut older = rec(0, "m");
        older.position = Some(at("b", 0, 3));
        sealed.merge([&old, &older]);
        write_state(&SealedPositions::path(dir.path()), &sealed).expect("state");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let clock: SharedClock = Arc::new(crate::clock::ManualClock::new(
            DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        ));
        let (wal, opened) = Wal::open(dir.path(), clock, DEFAULT_SEGMENT_BYTES).expect("open");
        assert_eq!(opened.next_seq, 5);
        assert_eq!(wal.logged_position("a", 0), Some(6));
        assert_eq!(
            wal.logged_position("a", 1),
            Some(9),
            "the sealed one is higher"
        );
        assert_eq!(wal.logged_position("b", 0), Some(3));
        assert_eq!(wal.logged_position("b", 1), None);
        // An append with a position moves it once durable; a resend (same sender and control
        // id) is not logged and does not.
        let entry = |control: &str, offset| Entry {
            status: Status::Accepted,
            sender: "APP^FAC".into(),
            control_id: control.into(),
            kind: String::new(),
            message: b"m".to_vec(),
            position: Some(at("b", 1, offset)),
        };
        let a = rt
            .block_on(wal.enqueue(entry("new", 0)).expect("enqueue").wait())
            .expect("append");
        assert_eq!(a, Appended::Logged(5));
        assert_eq!(wal.logged_position("b", 1), Some(0));
        let a = rt
            .block_on(wal.enqueue(entry("C1", 1)).expect("enqueue").wait())
            .expect("append");
        assert_eq!(a, Appended::Duplicate(1));
        assert_eq!(wal.logged_position("b", 1), Some(0));
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_corruption_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Vec::new();
        rec(1, "one").encode(&mut b);
        rec(2, "two").encode(&mut b);
        let whole = b.len();
        rec(3, "three").encode(&mut b);
        let seg = dir.path().join(format!("{:020}.wal", 1));
        fs::write(&seg, &b[..b.len() - 3]).expect("write");
        let s = scan(dir.path(), true).expect("scan");
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.torn.as_ref().map(|t| t.1), Some(whole as u64));
        assert_eq!(fs::metadata(&seg).expect("meta").len(), whole as u64);
        // Corruption in a segment that is not the last is an error naming the offset.
        let mut c = b[..whole].to_vec();
        c[HEADER + 2] ^= 0xff;
        fs::write(&seg, &c).expect("write");
        let mut d = Vec::new();
        rec(3, "three").encode(&mut d);
        fs::write(dir.path().join(format!("{:020}.wal", 3)), &d).expect("write");
        let e = scan(dir.path(), true).expect_err("corrupt");
        assert!(e.to_string().contains("byte 0"), "{e}");
    }
}
