//! The audit trail: an append-only, hash-chained record of every request, allowed or denied.
//!
//! # Layout
//!
//! ```text
//! AUDIT/
//!   audit-000001.jsonl   records, one JSON object a line
//!   audit-000002.jsonl   the next file after rotation (numbered without gaps)
//!   HEAD                 the last record's seq, hash and file, rewritten after each append
//! ```
//!
//! # Records and the chain
//!
//! Each line is one [`AuditRecord`] in canonical form (serde's field order, no spaces). Its
//! `hash` is the BLAKE3 of the record serialized without `hash`; its `prev` is the `hash` of
//! the record before it (64 zeros for the first), across file boundaries, and `seq` counts
//! from 0 without gaps. So an edited field breaks the record's own hash, a deleted or swapped
//! record breaks `seq` and `prev`, and a cut tail (or a deleted last file) leaves the log
//! shorter than `HEAD`. Files are numbered from 1 without gaps, so a deleted rotated file is
//! a missing number (or, for the first, a first record whose seq is not 0).
//!
//! # Durability (fsync policy)
//!
//! [`AuditOptions::durability`] chooses when a record reaches the disk:
//!
//! - [`Durability::Interval`] (the default, every 20 ms): [`AuditLog::append`] returns once
//!   the line is written to the operating system, so the record survives a crash or kill of
//!   Ward; a background thread syncs the file (`fdatasync`) and then `HEAD` whenever records
//!   are pending, at most one interval after they were written, and once more when the log is
//!   dropped. A power loss or kernel crash can lose the records of the last interval. This is
//!   the trade-off of the Linux audit daemon's default (`flush = incremental_async`): the
//!   request path never waits for the disk (an `fdatasync` costs about as much as a whole
//!   online lookup on a fast virtual disk, milliseconds on spinning or network disks; measured
//!   in docs/security.md).
//! - [`Durability::Sync`]: `append` makes the record durable before it returns, so a response
//!   never leaves before its audit record is on disk. Flushes are group commits: records
//!   written by concurrent appends while a flush runs are covered by the next single flush,
//!   so throughput under load is not one flush per request.
//! - [`Durability::Off`]: never synced (only to measure the others).
//!
//! A new file after rotation is synced with its directory. `HEAD` names the last record that
//! was on disk when it was written, so it can lag the log (by one record after a crash under
//! `Sync`, by the unflushed interval under `Interval`) but never lead it: [`verify`] reports a
//! lag in [`VerifyReport::after_head`] and a log shorter than `HEAD` as a cut tail.
//!
//! # Torn last line
//!
//! A crash in the middle of an append leaves a torn last line (bytes after the last
//! newline). [`verify`] reports it as a problem with its file, line and byte offset
//! ([`VerifyReport::torn`]). The next writer (the next [`AuditLog::open`], or the next append
//! of another process) seals it: it truncates the file at that offset (that request was
//! never answered: its response waited for the record) and appends a `system` record
//! (`rpc = "audit.recover"`) whose [`AuditRecord::torn`] keeps the offset, the length, the
//! BLAKE3 and the text (up to [`TORN_KEPT_BYTES`]) of the cut bytes, so the chain stays
//! valid and nothing is dropped silently: [`verify`] lists every sealed tear in
//! [`VerifyReport::recovered`].
//!
//! # Writers
//!
//! One chain, many writers: appends serialize on a mutex within a process and on an
//! exclusive `flock` of `LOCK` across processes (`ward serve` and the command line's audited
//! reads append to the same trail). Under the lock a writer checks whether another process
//! appended or rotated since its last append (the file's length, the next file's existence)
//! and, if so, re-reads the tail before chaining onto it. Any write or flush error poisons
//! the log (later appends fail) so nothing is appended after a hole.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::error::{Error, Result};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HEAD_FILE: &str = "HEAD";
const HEAD_SIZE: usize = 256;
const LOCK_FILE: &str = "LOCK";
/// How many bytes of a torn line the recovery record keeps as text (all are hashed).
pub const TORN_KEPT_BYTES: usize = 4096;

/// Whether the request was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed.
    Allowed,
    /// Denied.
    Denied,
    /// An event of the audit trail itself (a recovery after a crash).
    System,
}

/// The patients a request touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Patients {
    /// Listed (online lookups).
    Ids(Vec<String>),
    /// Bulk reads: how many, and the BLAKE3 of the sorted, de-duplicated ids, each followed
    /// by a newline (the list itself is in the training set's lineage).
    Bulk {
        /// Number of distinct patients.
        count: u64,
        /// BLAKE3 hex of the id list.
        blake3: String,
    },
}

impl Patients {
    /// The bulk form of `ids`.
    pub fn bulk(ids: &[String]) -> Patients {
        let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut h = blake3::Hasher::new();
        for id in &sorted {
            h.update(id.as_bytes());
            h.update(b"\n");
        }
        Patients::Bulk {
            count: sorted.len() as u64,
            blake3: h.finalize().to_hex().to_string(),
        }
    }
}

/// The bytes of a torn last line, as [`verify`] reports them and the recovery record that
/// sealed them keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Torn {
    /// The audit file.
    pub file: String,
    /// The byte offset of the torn line in the file (where the file was cut).
    pub offset: u64,
    /// How many bytes it had.
    pub len: u64,
    /// BLAKE3 hex of those bytes.
    pub blake3: String,
    /// The bytes as text (invalid UTF-8 replaced), at most [`TORN_KEPT_BYTES`] of them.
    pub text: String,
}

impl Torn {
    fn new(file: String, offset: u64, bytes: &[u8]) -> Torn {
        Torn {
            file,
            offset,
            len: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
            text: String::from_utf8_lossy(&bytes[..bytes.len().min(TORN_KEPT_BYTES)]).into_owned(),
        }
    }
}

impl std::fmt::Display for Torn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes at byte offset {} of {} (blake3 {})",
            self.len, self.offset, self.file, self.blake3
        )
    }
}

/// What the caller records; [`AuditLog::append`] adds seq, prev, time and hash. Build one
/// with [`AuditEntry::new`] and set what is known; the server builds every request's entry
/// in one place (`ward::service::gate`), the command line with [`AuditEntry::local`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The principal's subject (`None` when authentication failed).
    pub principal: Option<String>,
    /// How it authenticated (`jwt`, `mtls`, `api_token`, `none` for an anonymous loopback
    /// caller, `local` for the command line).
    pub auth: Option<String>,
    /// Its roles.
    pub roles: Vec<String>,
    /// The client address.
    pub client: Option<String>,
    /// The RPC.
    pub rpc: String,
    /// The action it maps to.
    pub action: Option<String>,
    /// The feature set named.
    pub feature_set: Option<String>,
    /// Dataset hashes read or written.
    pub datasets: Vec<String>,
    /// Patients touched.
    pub patients: Patients,
    /// Allowed or denied.
    pub decision: Outcome,
    /// Why.
    pub reason: String,
    /// The credential's issuer (the JWT `iss`, the client certificate's issuer).
    pub issuer: Option<String>,
    /// The JWT key id (`kid`) that verified the token.
    pub key_id: Option<String>,
    /// What became of the request: `ok`, or the status code it failed with
    /// (`not_found`, `invalid_argument`, `permission_denied`, ...).
    pub outcome: Option<String>,
    /// The failure's message, when it failed.
    pub error: Option<String>,
    /// The training set a historical lookup made (its hash).
    pub training_set: Option<String>,
    /// The torn bytes a recovery record sealed.
    pub torn: Option<Torn>,
}

impl AuditEntry {
    /// An entry for `rpc` with `decision` and `reason`, nothing else known yet.
    pub fn new(rpc: impl Into<String>, decision: Outcome, reason: impl Into<String>) -> Self {
        AuditEntry {
            principal: None,
            auth: None,
            roles: Vec::new(),
            client: None,
            rpc: rpc.into(),
            action: None,
            feature_set: None,
            datasets: Vec::new(),
            patients: Patients::Ids(Vec::new()),
            decision,
            reason: reason.into(),
            issuer: None,
            key_id: None,
            outcome: None,
            error: None,
            training_set: None,
            torn: None,
        }
    }

    /// An entry for a read by the command line (`rpc` = `cli:get`, `cli:historical`,
    /// `cli:export`) by the local operating-system user ([`local_principal`]): allowed by
    /// file-system access to the store, not by the role policy.
    pub fn local(command: &str, action: &str) -> Self {
        let mut e = AuditEntry::new(
            format!("cli:{command}"),
            Outcome::Allowed,
            "local command line: file-system access to the store",
        );
        e.principal = Some(local_principal());
        e.auth = Some("local".into());
        e.action = Some(action.to_string());
        e
    }

    /// Sets the outcome from a result: `ok`, or `error` with the message.
    pub fn with_result<T>(mut self, r: &Result<T>) -> Self {
        match r {
            Ok(_) => self.outcome = Some("ok".into()),
            Err(e) => {
                self.outcome = Some("error".into());
                self.error = Some(e.to_string());
            }
        }
        self
    }
}

/// The principal of the command line: `local:<user>`, the `USER` (else `LOGNAME`)
/// environment variable, else `uid:<n>`, the process's user id.
pub fn local_principal() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty() && u.len() <= 256 && !u.chars().any(char::is_control));
    match user {
        Some(u) => format!("local:{u}"),
        // The owner of /proc/self is the process's user (no unsafe `getuid` needed).
        None => match fs::metadata("/proc/self") {
            Ok(m) => format!("local:uid:{}", std::os::unix::fs::MetadataExt::uid(&m)),
            Err(_) => "local:unknown-user".to_string(),
        },
    }
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the trail, from 0.
    pub seq: u64,
    /// The hash of the previous record ([`GENESIS`] for the first).
    pub prev: String,
    /// When (the injected clock).
    pub time: DateTime<Utc>,
    /// The principal's subject.
    pub principal: Option<String>,
    /// How it authenticated.
    pub auth: Option<String>,
    /// Its roles.
    pub roles: Vec<String>,
    /// Client address.
    pub client: Option<String>,
    /// The RPC.
    pub rpc: String,
    /// The action.
    pub action: Option<String>,
    /// The feature set.
    pub feature_set: Option<String>,
    /// Dataset hashes.
    pub datasets: Vec<String>,
    /// Patients touched.
    pub patients: Patients,
    /// The decision.
    pub decision: Outcome,
    /// Why.
    pub reason: String,
    /// The credential's issuer (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The JWT key id (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// `ok` or the code the request failed with (absent in records written before Ward
    /// recorded outcomes, and in `system` records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The failure's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The training set a historical lookup made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_set: Option<String>,
    /// The torn bytes a recovery record sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torn: Option<Torn>,
    /// BLAKE3 of this record serialized without `hash`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record should carry.
    pub fn compute_hash(&self) -> String {
        let mut body = self.clone();
        body.hash = String::new();
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }
}

/// When an appended record reaches the disk (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `append` returns once the record (and `HEAD`) is synced to disk.
    Sync,
    /// `append` returns once the record is written to the operating system; a background
    /// thread syncs pending records this often.
    Interval(Duration),
    /// Never synced: only for measuring the cost of the others.
    Off,
}

impl Durability {
    /// The default flush interval of [`Durability::Interval`].
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(20);

    fn syncs(self) -> bool {
        !matches!(self, Durability::Off)
    }
}

impl Default for Durability {
    fn default() -> Self {
        Durability::Interval(Durability::DEFAULT_INTERVAL)
    }
}

/// Options of an audit log.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Start a new file once the current one would pass this size (default 64 MiB).
    pub max_file_bytes: u64,
    /// When records reach the disk (default: synced every 20 ms in the background).
    pub durability: Durability,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            max_file_bytes: 64 << 20,
            durability: Durability::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
    file: String,
}

#[derive(Debug)]
struct State {
    file: Arc<File>,
    index: u32,
    len: u64,
    next_seq: u64,
    prev: String,
    poisoned: Option<String>,
}

/// The flushing side (group commit): every record with `seq < durable_next` is on disk.
#[derive(Debug)]
struct Durable {
    head: File,
    durable_next: u64,
}

/// An open audit trail; share it (`Arc`) between tasks: appends serialize on a mutex.
/// Dropping it stops the background flusher and syncs what is pending.
#[derive(Debug)]
pub struct AuditLog {
    core: Arc<Core>,
    flusher: Option<Flusher>,
}

/// The log proper, shared with the background flusher.
#[derive(Debug)]
struct Core {
    dir: PathBuf,
    clock: SharedClock,
    opts: AuditOptions,
    state: Mutex<State>,
    durable: Mutex<Durable>,
    /// `LOCK`: the writers' lock across processes, taken with `state` held.
    lock: File,
}

/// The background flusher of [`Durability::Interval`].
#[derive(Debug)]
struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(core: Arc<Core>, every: Duration) -> Result<Flusher> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ward-audit-flush".into())
            .spawn(move || {
                let (lock, cvar) = &*signal;
                let Ok(mut stopped) = lock.lock() else {
                    return;
                };
                loop {
                    // Checked under the lock before waiting: a stop signalled before the
                    // thread first waits is not lost.
                    if *stopped {
                        return;
                    }
                    match cvar.wait_timeout(stopped, every) {
                        Ok((guard, _)) => stopped = guard,
                        Err(_) => return,
                    }
                    if *stopped {
                        return;
                    }
                    if let Err(e) = core.flush() {
                        tracing::error!(dir = %core.dir.display(), error = %e, "audit: flush failed; the log refuses further appends");
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the audit flusher: {e}")))?;
        Ok(Flusher {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Some(f) = &mut self.flusher {
            if let Ok(mut stopped) = f.stop.0.lock() {
                *stopped = true;
                f.stop.1.notify_all();
            }
            if let Some(t) = f.thread.take() {
                let _ = t.join();
            }
        }
        if let Err(e) = self.core.flush() {
            tracing::error!(dir = %self.core.dir.display(), error = %e, "audit: final flush failed");
        }
    }
}

/// The name of file number `index`.
pub fn file_name(index: u32) -> String {
    format!("audit-{index:06}.jsonl")
}

fn parse_file_name(name: &str) -> Option<u32> {
    let n = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if n.len() < 6 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The audit files in `dir`, by number.
fn list_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if let Some(i) = e.file_name().to_str().and_then(parse_file_name) {
            out.push((i, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn read_head(dir: &Path) -> Result<Option<Head>> {
    let path = dir.join(HEAD_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            if text.trim().is_empty() {
                return Ok(None); // created, never written
            }
            let head: Head =
                serde_json::from_str(text.trim_end()).map_err(|e| Error::BadInput {
                    location: path.display().to_string(),
                    field: "-".into(),
                    reason: format!("not a HEAD record: {e}"),
                })?;
            Ok(Some(head))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The tail of the trail as a writer needs it: the last file (open for appending), its
/// length up to the last complete line, the last record, and a torn last line if any.
struct Tail {
    index: u32,
    path: PathBuf,
    file: File,
    /// Bytes up to the end of the last complete line (where a torn line starts).
    len: u64,
    last: Option<AuditRecord>,
    torn: Option<Torn>,
    created: bool,
}

/// Reads the end of `file` (of length `len`) far enough back to hold its last complete line:
/// returns where the bytes start and the bytes.
fn read_end(file: &File, len: u64, path: &Path) -> Result<(u64, Vec<u8>)> {
    let mut want: u64 = 1 << 20;
    loop {
        let start = len.saturating_sub(want);
        let mut buf = vec![0u8; (len - start) as usize];
        file.read_exact_at(&mut buf, start)
            .map_err(|e| Error::io(path, e))?;
        let enough = start == 0
            || buf
                .iter()
                .rposition(|b| *b == b'\n')
                .is_some_and(|p| buf[..p].contains(&b'\n'));
        if enough {
            return Ok((start, buf));
        }
        want = want.saturating_mul(4);
    }
}

/// The last complete line of `buf` (which starts at the start of a line or of the file).
fn last_line(buf: &[u8]) -> Option<&[u8]> {
    let complete = buf.iter().rposition(|b| *b == b'\n')?;
    let body = &buf[..complete];
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    Some(&body[start..])
}

fn parse_last(line: &[u8], path: &Path) -> Result<AuditRecord> {
    serde_json::from_slice(line).map_err(|e| {
        Error::precondition(
            format!("audit log {}", path.display()),
            format!("its last record is unreadable ({e}); run `ward audit verify`"),
        )
    })
}

/// Reads the tail of the trail in `dir` (creating the first file if there is none); changes
/// nothing else. Call with the writers' lock held.
fn load_tail(dir: &Path) -> Result<Tail> {
    let files = list_files(dir)?;
    let (index, path) = match files.last() {
        Some((i, p)) => (*i, p.clone()),
        None => (1, dir.join(file_name(1))),
    };
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let total = file.metadata().map_err(|e| Error::io(&path, e))?.len();
    let (start, buf) = read_end(&file, total, &path)?;
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let len = start + complete as u64;
    let torn = (complete < buf.len()).then(|| Torn::new(file_name(index), len, &buf[complete..]));
    let mut last = match last_line(&buf[..complete]) {
        Some(line) => Some(parse_last(line, &path)?),
        None => None,
    };
    if last.is_none() && files.len() >= 2 {
        // A file just started: the last record is the previous file's.
        let (_, pp) = &files[files.len() - 2];
        let prev = File::open(pp).map_err(|e| Error::io(pp, e))?;
        let plen = prev.metadata().map_err(|e| Error::io(pp, e))?.len();
        let (_, pbuf) = read_end(&prev, plen, pp)?;
        if let Some(line) = last_line(&pbuf) {
            last = Some(parse_last(line, pp)?);
        }
    }
    Ok(Tail {
        index,
        path,
        file,
        len,
        last,
        torn,
        created: files.is_empty(),
    })
}

/// The writers' lock (`LOCK`, an exclusive `flock`), released when dropped.
struct WriterLock<'a>(&'a File);

impl<'a> WriterLock<'a> {
    fn take(file: &'a File, dir: &Path) -> Result<WriterLock<'a>> {
        file.lock().map_err(|e| Error::io(dir.join(LOCK_FILE), e))?;
        Ok(WriterLock(file))
    }
}

impl Drop for WriterLock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl AuditLog {
    /// Opens (or creates) the audit trail in `dir` for appending.
    ///
    /// Only the tail is read (the whole chain is checked by [`verify`]). A torn last line (a
    /// crash mid-append) is sealed: cut, and kept in a recovery record (module docs).
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::FailedPrecondition`] when the log is shorter than `HEAD` says
    /// (records were removed: run `ward audit verify`), or its last record is unreadable.
    pub fn open(dir: &Path, clock: SharedClock, opts: AuditOptions) -> Result<AuditLog> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        let guard = WriterLock::take(&lock, dir)?;
        let tail = load_tail(dir)?;
        if tail.created {
            sync_dir(dir)?;
        }
        if let Some(h) = read_head(dir)? {
            if tail.last.as_ref().is_none_or(|r| r.seq < h.seq) {
                return Err(Error::precondition(
                    format!("audit log {}", dir.display()),
                    format!(
                        "HEAD records seq {} but the log ends {}: records were removed; run `ward audit verify`",
                        h.seq,
                        tail.last.as_ref().map_or("empty".to_string(), |r| format!("at seq {}", r.seq))
                    ),
                ));
            }
        }
        let head_path = dir.join(HEAD_FILE);
        let head = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&head_path)
            .map_err(|e| Error::io(&head_path, e))?;
        if tail.last.is_some() {
            // Records written but not synced before a crash (the interval policy) reach the
            // disk before HEAD names them.
            tail.file
                .sync_data()
                .map_err(|e| Error::io(&tail.path, e))?;
        }
        let (next_seq, prev) = match &tail.last {
            Some(r) => (r.seq + 1, r.hash.clone()),
            None => (0, GENESIS.to_string()),
        };
        let last = tail.last.clone();
        let index = tail.index;
        let core = Core {
            dir: dir.to_path_buf(),
            clock,
            opts,
            state: Mutex::new(State {
                file: Arc::new(
                    tail.file
                        .try_clone()
                        .map_err(|e| Error::io(&tail.path, e))?,
                ),
                index,
                len: tail.len,
                next_seq,
                prev,
                poisoned: None,
            }),
            durable: Mutex::new(Durable {
                head,
                durable_next: next_seq,
            }),
            lock: lock.try_clone().map_err(|e| Error::io(&lock_path, e))?,
        };
        let mut log = AuditLog {
            core: Arc::new(core),
            flusher: None,
        };
        if let Some(r) = &last {
            // HEAD may lag after a crash: bring it up to date.
            let d = log
                .core
                .durable
                .lock()
                .map_err(|_| Error::Internal("audit log mutex poisoned".into()))?;
            log.core.write_head(&d.head, r.seq, &r.hash, index)?;
        }
        if let Some(torn) = tail.torn {
            let mut st = log.core.lock()?;
            log.core.seal(&mut st, torn)?;
        }
        drop(guard);
        if !matches!(log.core.opts.durability, Durability::Interval(_)) {
            log.core.flush()?;
        }
        if let Durability::Interval(every) = log.core.opts.durability {
            log.flusher = Some(Flusher::start(log.core.clone(), every)?);
        }
        Ok(log)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.core.dir
    }

    /// Whether [`AuditLog::append`] waits for the disk (run it off the async executor then).
    pub fn append_blocks(&self) -> bool {
        self.core.opts.durability == Durability::Sync
    }

    /// Appends one record; under [`Durability::Sync`] it is durable when this returns (see
    /// the module docs). Returns its seq.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be written; after any write error the log refuses further
    /// appends ([`Error::FailedPrecondition`]) until reopened.
    pub fn append(&self, entry: AuditEntry) -> Result<u64> {
        self.core.append(entry)
    }

    /// Syncs every record appended so far (and `HEAD`) to disk.
    ///
    /// # Errors
    /// [`Error::Io`]; the log then refuses further appends.
    pub fn flush(&self) -> Result<()> {
        self.core.flush()
    }
}

impl Core {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Internal("audit log mutex poisoned".into()))
    }

    fn write_head(&self, head_file: &File, seq: u64, hash: &str, index: u32) -> Result<()> {
        let head = Head {
            seq,
            hash: hash.to_string(),
            file: file_name(index),
        };
        let mut buf = serde_json::to_vec(&head).map_err(|e| Error::Internal(e.to_string()))?;
        if buf.len() >= HEAD_SIZE {
            return Err(Error::Internal("HEAD record too long".into()));
        }
        buf.resize(HEAD_SIZE - 1, b' ');
        buf.push(b'\n');
        let path = self.dir.join(HEAD_FILE);
        head_file
            .write_all_at(&buf, 0)
            .map_err(|e| Error::io(&path, e))?;
        if self.opts.durability.syncs() {
            head_file.sync_data().map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    fn poisoned(&self, st: &State) -> Result<()> {
        match &st.poisoned {
            Some(why) => Err(Error::precondition(
                format!("audit log {}", self.dir.display()),
                format!("an earlier write failed ({why}); reopen it"),
            )),
            None => Ok(()),
        }
    }

    fn append(&self, entry: AuditEntry) -> Result<u64> {
        let mut st = self.lock()?;
        self.poisoned(&st)?;
        let seq = {
            let _guard = WriterLock::take(&self.lock, &self.dir)?;
            let result = self
                .refresh(&mut st)
                .and_then(|()| self.write(&mut st, entry));
            if let Err(e) = &result {
                st.poisoned = Some(e.to_string());
            }
            result?
        };
        drop(st);
        if !matches!(self.opts.durability, Durability::Interval(_)) {
            self.make_durable(seq)?;
        }
        Ok(seq)
    }

    /// With the writers' lock held: if another process appended or rotated since this one
    /// last wrote, re-reads the tail (sealing a torn line it left) so the next record chains
    /// onto the real last one.
    fn refresh(&self, st: &mut State) -> Result<()> {
        let path = self.dir.join(file_name(st.index));
        let len = st.file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len == st.len && !self.dir.join(file_name(st.index + 1)).exists() {
            return Ok(());
        }
        let tail = load_tail(&self.dir)?;
        let (next_seq, prev) = match &tail.last {
            Some(r) => (r.seq + 1, r.hash.clone()),
            None => (0, GENESIS.to_string()),
        };
        if next_seq < st.next_seq {
            return Err(Error::precondition(
                format!("audit log {}", self.dir.display()),
                format!(
                    "the trail now ends before seq {} that this process wrote: records were removed; run `ward audit verify`",
                    st.next_seq - 1
                ),
            ));
        }
        st.file = Arc::new(tail.file);
        st.index = tail.index;
        st.len = tail.len;
        st.next_seq = next_seq;
        st.prev = prev;
        if let Some(torn) = tail.torn {
            self.seal(st, torn)?;
        }
        Ok(())
    }

    /// With the writers' lock held: cuts a torn last line at its offset and records the cut
    /// bytes in a recovery record.
    fn seal(&self, st: &mut State, torn: Torn) -> Result<()> {
        let path = self.dir.join(&torn.file);
        tracing::warn!(
            file = %path.display(),
            offset = torn.offset,
            bytes = torn.len,
            "audit: sealing a torn last line left by an interrupted append"
        );
        st.file
            .set_len(torn.offset)
            .and_then(|()| st.file.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        st.len = torn.offset;
        let mut entry = AuditEntry::new(
            "audit.recover",
            Outcome::System,
            format!(
                "sealed a torn last line ({torn}): an append interrupted by a crash, never acknowledged; its bytes are kept in `torn`"
            ),
        );
        entry.torn = Some(torn);
        self.write(st, entry).map(|_| ())
    }

    /// With the writers' lock held: chains `entry` onto the tail and writes it.
    fn write(&self, st: &mut State, entry: AuditEntry) -> Result<u64> {
        let mut rec = AuditRecord {
            seq: st.next_seq,
            prev: st.prev.clone(),
            time: self.clock.now(),
            principal: entry.principal,
            auth: entry.auth,
            roles: entry.roles,
            client: entry.client,
            rpc: entry.rpc,
            action: entry.action,
            feature_set: entry.feature_set,
            datasets: entry.datasets,
            patients: entry.patients,
            decision: entry.decision,
            reason: entry.reason,
            issuer: entry.issuer,
            key_id: entry.key_id,
            outcome: entry.outcome,
            error: entry.error,
            training_set: entry.training_set,
            torn: entry.torn,
            hash: String::new(),
        };
        rec.hash = rec.compute_hash();
        let mut line = serde_json::to_vec(&rec).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        self.write_line(st, &line, &rec)?;
        Ok(rec.seq)
    }

    /// Syncs whatever was appended and not yet synced.
    fn flush(&self) -> Result<()> {
        let next = self.lock()?.next_seq;
        match next.checked_sub(1) {
            Some(last) => self.make_durable(last),
            None => Ok(()),
        }
    }

    /// Group commit: returns once record `seq` is on disk. The first caller to take the
    /// flush lock syncs everything written so far (and `HEAD`); callers whose record that
    /// flush covered return without syncing again.
    fn make_durable(&self, seq: u64) -> Result<()> {
        let mut d = self
            .durable
            .lock()
            .map_err(|_| Error::Internal("audit log mutex poisoned".into()))?;
        if d.durable_next > seq {
            return Ok(());
        }
        let (file, last_seq, last_hash, index) = {
            let st = self.lock()?;
            if let Some(why) = &st.poisoned {
                return Err(Error::precondition(
                    format!("audit log {}", self.dir.display()),
                    format!("an earlier write failed ({why}); reopen it"),
                ));
            }
            (st.file.clone(), st.next_seq - 1, st.prev.clone(), st.index)
        };
        let path = self.dir.join(file_name(index));
        let flushed = if self.opts.durability.syncs() {
            file.sync_data().map_err(|e| Error::io(&path, e))
        } else {
            Ok(())
        }
        .and_then(|()| self.write_head(&d.head, last_seq, &last_hash, index));
        match flushed {
            Ok(()) => {
                d.durable_next = last_seq + 1;
                Ok(())
            }
            Err(e) => {
                if let Ok(mut st) = self.lock() {
                    st.poisoned = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    fn write_line(&self, st: &mut State, line: &[u8], rec: &AuditRecord) -> Result<()> {
        if st.len > 0 && st.len + line.len() as u64 > self.opts.max_file_bytes {
            if self.opts.durability.syncs() {
                // Records written to the old file but not yet flushed become durable here.
                let old = self.dir.join(file_name(st.index));
                st.file.sync_data().map_err(|e| Error::io(&old, e))?;
            }
            let index = st.index + 1;
            let path = self.dir.join(file_name(index));
            let file = OpenOptions::new()
                .create_new(true)
                .read(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            if self.opts.durability.syncs() {
                sync_dir(&self.dir)?;
            }
            st.file = Arc::new(file);
            st.index = index;
            st.len = 0;
        }
        let path = self.dir.join(file_name(st.index));
        (&*st.file)
            .write_all(line)
            .map_err(|e| Error::io(&path, e))?;
        st.len += line.len() as u64;
        st.next_seq = rec.seq + 1;
        st.prev = rec.hash.clone();
        Ok(())
    }
}

/// Where [`verify`] found the first problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file (or `HEAD`).
    pub file: String,
    /// The line (1-based), when the problem is a line.
    pub line: Option<u64>,
    /// The record's seq, when known.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, " line {l}")?;
        }
        if let Some(s) = self.seq {
            write!(f, " (seq {s})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Audit files read.
    pub files: usize,
    /// Records whose chain checked out (up to the first problem).
    pub records: u64,
    /// The last good record's seq.
    pub last_seq: Option<u64>,
    /// The seq `HEAD` records.
    pub head_seq: Option<u64>,
    /// Records after the one `HEAD` names: appended after the last flush (one at most after
    /// a crash under [`Durability::Sync`], the unflushed interval under
    /// [`Durability::Interval`]). Not a problem: a cut tail is a log shorter than `HEAD`.
    pub after_head: u64,
    /// The first problem, if any.
    pub problem: Option<Problem>,
    /// A torn last line (also the problem): the bytes after the last newline of the last
    /// file, left by a crash mid-append and not yet sealed by a writer.
    pub torn: Option<Torn>,
    /// The torn lines writers sealed (cut and kept in `audit.recover` records), oldest first.
    pub recovered: Vec<Torn>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// The error for a trail directory that does not exist: nothing was ever recorded there.
fn no_trail(dir: &Path) -> Error {
    Error::precondition(
        format!("audit trail {}", dir.display()),
        "there is none yet: nothing has been served from this store or read through the command line (the trail starts with the first request to `ward serve` or `ward demo`, or the first `ward get`, `historical` or `export`)",
    )
}

/// Checks the whole trail in `dir`: every record's hash, `seq` and `prev` across files, the
/// file numbering, and the tail against `HEAD`. Stops at the first problem and names it.
///
/// # Errors
/// [`Error::FailedPrecondition`] saying so plainly when `dir` does not exist (no trail yet);
/// [`Error::Io`] if a file cannot be read (problems in the content are in the report).
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    if !dir.is_dir() {
        return Err(no_trail(dir));
    }
    let files = list_files(dir)?;
    let head = match read_head(dir) {
        Ok(h) => h,
        Err(Error::BadInput { reason, .. }) => {
            return Ok(VerifyReport {
                files: files.len(),
                records: 0,
                last_seq: None,
                head_seq: None,
                after_head: 0,
                problem: Some(Problem {
                    file: HEAD_FILE.into(),
                    line: None,
                    seq: None,
                    reason,
                }),
                torn: None,
                recovered: Vec::new(),
            })
        }
        Err(e) => return Err(e),
    };
    let mut report = VerifyReport {
        files: files.len(),
        records: 0,
        last_seq: None,
        head_seq: head.as_ref().map(|h| h.seq),
        after_head: 0,
        problem: None,
        torn: None,
        recovered: Vec::new(),
    };
    let fail = |report: &mut VerifyReport,
                file: &str,
                line: Option<u64>,
                seq: Option<u64>,
                reason: String| {
        report.problem = Some(Problem {
            file: file.to_string(),
            line,
            seq,
            reason,
        });
    };
    // File numbering: 1, 2, 3, ... without gaps.
    for (n, (index, _)) in files.iter().enumerate() {
        let want = n as u32 + 1;
        if *index != want {
            let reason = if n == 0 {
                format!(
                    "{} is missing: the trail starts at {}",
                    file_name(want),
                    file_name(*index)
                )
            } else {
                format!(
                    "{} is missing between {} and {}",
                    file_name(want),
                    file_name(want - 1),
                    file_name(*index)
                )
            };
            fail(&mut report, &file_name(want), None, None, reason);
            return Ok(report);
        }
    }
    let mut expected_seq = 0u64;
    let mut prev = GENESIS.to_string();
    let mut head_hash: Option<String> = None; // the hash of the record HEAD names
    for (n, (index, path)) in files.iter().enumerate() {
        let name = file_name(*index);
        let last_file = n + 1 == files.len();
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::new(f);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        let mut offset = 0u64;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let line_offset = offset;
            offset += n as u64;
            if buf.last() != Some(&b'\n') {
                let torn = Torn::new(name.clone(), line_offset, &buf);
                let reason = if last_file {
                    format!(
                        "torn last line: {torn} with no newline, an append interrupted by a crash; the next writer seals it (cuts it and keeps its bytes in a recovery record)"
                    )
                } else {
                    format!("incomplete last line of a rotated file: {torn} with no newline (cut or edited)")
                };
                fail(&mut report, &name, Some(line_no), None, reason);
                if last_file {
                    report.torn = Some(torn);
                }
                return Ok(report);
            }
            let body = &buf[..buf.len() - 1];
            let rec: AuditRecord = match serde_json::from_slice(body) {
                Ok(r) => r,
                Err(e) => {
                    fail(
                        &mut report,
                        &name,
                        Some(line_no),
                        None,
                        format!("not an audit record: {e}"),
                    );
                    return Ok(report);
                }
            };
            let canonical = serde_json::to_vec(&rec).unwrap_or_default();
            if rec.hash != rec.compute_hash() || canonical != body {
                fail(
                    &mut report,
                    &name,
                    Some(line_no),
                    Some(rec.seq),
                    "the record was edited: its content does not match its hash".into(),
                );
                return Ok(report);
            }
            if rec.seq != expected_seq {
                let reason = if rec.seq > expected_seq {
                    format!(
                        "expected seq {expected_seq}, found {}: record(s) deleted or moved",
                        rec.seq
                    )
                } else {
                    format!(
                        "expected seq {expected_seq}, found {}: records reordered or repeated",
                        rec.seq
                    )
                };
                fail(&mut report, &name, Some(line_no), Some(rec.seq), reason);
                return Ok(report);
            }
            if rec.prev != prev {
                fail(&mut report, &name, Some(line_no), Some(rec.seq), "prev does not match the hash of the record before it: the chain is broken (a record before it was replaced)".into());
                return Ok(report);
            }
            if let Some(t) = &rec.torn {
                report.recovered.push(t.clone());
            }
            prev = rec.hash.clone();
            expected_seq += 1;
            report.records += 1;
            report.last_seq = Some(rec.seq);
            if head.as_ref().is_some_and(|h| h.seq == rec.seq) {
                head_hash = Some(rec.hash);
            }
        }
    }
    let last_file = files
        .last()
        .map(|(i, _)| file_name(*i))
        .unwrap_or_else(|| "(no file)".into());
    match (&head, report.last_seq) {
        (None, None) => {}
        // Created when the log was opened and not yet written: nothing was flushed yet (the
        // interval policy), so every record is after HEAD.
        (None, Some(_)) if dir.join(HEAD_FILE).exists() => report.after_head = report.records,
        (None, Some(_)) => fail(&mut report, HEAD_FILE, None, None, "HEAD is missing".into()),
        (Some(h), last) => {
            let last_n = last.map_or(-1i128, i128::from);
            if i128::from(h.seq) > last_n {
                fail(
                    &mut report,
                    &last_file,
                    None,
                    last,
                    format!(
                        "the trail ends {} but HEAD records seq {} (in {}): records or files were cut from the tail",
                        last.map_or("empty".to_string(), |s| format!("at seq {s}")),
                        h.seq,
                        h.file
                    ),
                );
            } else {
                report.after_head = (last_n - i128::from(h.seq)) as u64;
                let want = head_hash.as_deref();
                if want != Some(h.hash.as_str()) {
                    fail(
                        &mut report,
                        HEAD_FILE,
                        None,
                        Some(h.seq),
                        format!("HEAD's hash does not match record {}", h.seq),
                    );
                }
            }
        }
    }
    Ok(report)
}

/// One access to a patient, as [`query`] answers.
#[derive(Debug, Clone, Serialize)]
pub struct Access {
    /// The file holding the record.
    pub file: String,
    /// The record.
    pub record: AuditRecord,
}

/// What [`search`] selects; every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryFilter {
    /// Records listing this patient id (bulk reads record a count and hash, not ids: they
    /// are found through the training set's lineage, not here).
    pub patient: Option<String>,
    /// Records of this principal (`dr-a`, `anonymous@loopback`, `local:alice`).
    pub principal: Option<String>,
    /// At or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Before this time.
    pub to: Option<DateTime<Utc>>,
    /// At most this many records (the oldest matching); `None`: all.
    pub limit: Option<usize>,
}

impl QueryFilter {
    /// Whether `rec` matches.
    pub fn matches(&self, rec: &AuditRecord) -> bool {
        self.patient.as_ref().is_none_or(
            |p| matches!(&rec.patients, Patients::Ids(ids) if ids.iter().any(|i| i == p)),
        ) && self
            .principal
            .as_ref()
            .is_none_or(|p| rec.principal.as_deref() == Some(p.as_str()))
            && self.from.is_none_or(|t| rec.time >= t)
            && self.to.is_none_or(|t| rec.time < t)
    }
}

/// Every record `filter` selects (who looked at a patient, what a principal did, what
/// happened in a time range), oldest first.
///
/// # Errors
/// [`Error::FailedPrecondition`] when there is no trail in `dir`; [`Error::Io`];
/// [`Error::BadInput`] naming the file and line of an unreadable record.
pub fn search(dir: &Path, filter: &QueryFilter) -> Result<Vec<Access>> {
    if !dir.is_dir() {
        return Err(no_trail(dir));
    }
    let mut out = Vec::new();
    if filter.limit == Some(0) {
        return Ok(out);
    }
    for (index, path) in list_files(dir)? {
        let name = file_name(index);
        let f = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut reader = BufReader::new(f);
        let mut buf = Vec::new();
        let mut n = 0usize;
        loop {
            buf.clear();
            if reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| Error::io(&path, e))?
                == 0
            {
                break;
            }
            n += 1;
            if buf.last() != Some(&b'\n') {
                break; // a torn last line: `verify` reports it
            }
            let line = &buf[..buf.len() - 1];
            if line.is_empty() {
                continue;
            }
            let rec: AuditRecord = serde_json::from_slice(line).map_err(|e| Error::BadInput {
                location: format!("{} line {n}", path.display()),
                field: "-".into(),
                reason: format!("not an audit record: {e}"),
            })?;
            if filter.matches(&rec) {
                out.push(Access {
                    file: name.clone(),
                    record: rec,
                });
                if filter.limit.is_some_and(|l| out.len() >= l) {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// Every record listing `patient` (who looked at this patient, when, from where, allowed or
/// denied), oldest first: [`search`] by patient.
///
/// # Errors
/// As [`search`].
pub fn query(dir: &Path, patient: &str) -> Result<Vec<Access>> {
    search(
        dir,
        &QueryFilter {
            patient: Some(patient.to_string()),
            ..QueryFilter::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    fn entry(i: usize) -> AuditEntry {
        let mut e = AuditEntry::new(
            "/ward.v1.Features/GetOnlineFeatures",
            Outcome::Allowed,
            "ok",
        );
        e.principal = Some(format!("user-{i}"));
        e.auth = Some("jwt".into());
        e.roles = vec!["clinician".into()];
        e.client = Some("127.0.0.1:5000".into());
        e.action = Some("online_lookup".into());
        e.feature_set = Some("readmission".into());
        e.patients = Patients::Ids(vec![format!("p{}", i % 3)]);
        e
    }

    fn clock() -> SharedClock {
        Arc::new(ManualClock::new(
            DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        ))
    }

    #[test]
    fn append_verify_reopen_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let opts = AuditOptions {
            max_file_bytes: 1000,
            durability: Durability::Sync,
        };
        {
            let log = AuditLog::open(dir.path(), clock(), opts.clone()).unwrap();
            for i in 0..10 {
                assert_eq!(log.append(entry(i)).unwrap(), i as u64);
            }
        }
        let log = AuditLog::open(dir.path(), clock(), opts).unwrap();
        assert_eq!(log.append(entry(10)).unwrap(), 10);
        let r = verify(dir.path()).unwrap();
        assert!(r.ok(), "{:?}", r.problem);
        assert_eq!(r.records, 11);
        assert!(r.files >= 3, "rotated into {} files", r.files);
        assert_eq!(r.head_seq, Some(10));
        let q = query(dir.path(), "p1").unwrap();
        assert_eq!(
            q.iter().map(|a| a.record.seq).collect::<Vec<_>>(),
            vec![1, 4, 7, 10]
        );
    }

    #[test]
    fn a_torn_last_line_is_reported_then_sealed_with_its_bytes_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path(), clock(), AuditOptions::default()).unwrap();
            log.append(entry(0)).unwrap();
        }
        let f = dir.path().join(file_name(1));
        let good_len = fs::metadata(&f).unwrap().len();
        let mut h = OpenOptions::new().append(true).open(&f).unwrap();
        h.write_all(b"{\"seq\":1,\"pre").unwrap();
        drop(h);
        let r = verify(dir.path()).unwrap();
        assert!(!r.ok());
        let torn = r.torn.clone().expect("the torn line is reported");
        assert_eq!((torn.offset, torn.len), (good_len, 13));
        assert_eq!(torn.text, "{\"seq\":1,\"pre");
        let p = r.problem.unwrap();
        assert_eq!((p.line, p.file.as_str()), (Some(2), "audit-000001.jsonl"));
        assert!(
            p.reason.contains(&format!("byte offset {good_len}")),
            "{}",
            p.reason
        );
        let log = AuditLog::open(dir.path(), clock(), AuditOptions::default()).unwrap();
        log.append(entry(1)).unwrap();
        drop(log);
        let r = verify(dir.path()).unwrap();
        assert!(r.ok(), "{:?}", r.problem);
        assert_eq!(r.records, 3, "the record, the recovery, the next append");
        assert_eq!(r.recovered, vec![torn]);
        let text = fs::read_to_string(&f).unwrap();
        assert!(text.contains("audit.recover"), "{text}");
    }

    #[test]
    fn a_second_writer_chains_onto_the_first() {
        // Two logs open on one directory (the server and a command-line read): the writers'
        // lock and the tail check keep one chain.
        let dir = tempfile::tempdir().unwrap();
        let opts = AuditOptions {
            max_file_bytes: 900,
            durability: Durability::Sync,
        };
        let a = AuditLog::open(dir.path(), clock(), opts.clone()).unwrap();
        let b = AuditLog::open(dir.path(), clock(), opts).unwrap();
        let mut seqs = Vec::new();
        for i in 0..12 {
            let log = if i % 3 == 0 { &b } else { &a };
            seqs.push(log.append(entry(i)).unwrap());
        }
        assert_eq!(seqs, (0..12).collect::<Vec<u64>>());
        drop((a, b));
        let r = verify(dir.path()).unwrap();
        assert!(r.ok(), "{:?}", r.problem);
        assert_eq!(r.records, 12);
        assert!(r.files >= 2, "rotated by either writer: {} files", r.files);
    }

    #[test]
    fn no_trail_is_said_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let e = verify(&dir.path().join("audit")).unwrap_err().to_string();
        assert!(e.contains("there is none yet"), "{e}");
        assert!(!e.contains("os error"), "{e}");
        assert!(search(&dir.path().join("audit"), &QueryFilter::default()).is_err());
    }

    #[test]
    fn bulk_patients_hash_is_order_independent() {
        let a = Patients::bulk(&["b".into(), "a".into(), "a".into()]);
        let b = Patients::bulk(&["a".into(), "b".into()]);
        assert_eq!(a, b);
        match a {
            Patients::Bulk { count, blake3 } => {
                assert_eq!(count, 2);
                assert_eq!(blake3, ::blake3::hash(b"a\nb\n").to_hex().to_string());
            }
            Patients::Ids(_) => panic!("bulk expected"),
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name(7), "audit-000007.jsonl");
        assert_eq!(parse_file_name("audit-000007.jsonl"), Some(7));
        assert_eq!(parse_file_name("audit-1234567.jsonl"), Some(1234567));
        assert_eq!(parse_file_name("audit-7.jsonl"), None);
        assert_eq!(parse_file_name("HEAD"), None);
    }
}
