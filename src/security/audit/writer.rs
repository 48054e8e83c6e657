//! The writer: [`AuditLog`] appends records to the chain under a mutex and the
//! cross-process `LOCK`, seals a torn last line, rotates files and flushes them by the
//! durability policy (group commits, the background flusher).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::security::keyring::Keyring;
use crate::store::crypt::{self, RecordLog};

use super::files::*;
use super::record::*;

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

#[derive(Debug)]
struct State {
    file: Arc<File>,
    index: u32,
    len: u64,
    next_seq: u64,
    prev: String,
    poisoned: Option<String>,
    /// The current file's cipher (encrypted trails; `None` until its header line is written).
    codec: Option<RecordLog>,
    /// The index of the current file's next record (encrypted trails).
    next_index: u64,
}

/// The flushing side (group commit): every record with `seq < durable_next` is on disk.
#[derive(Debug)]
struct Durable {
    head: File,
    /// `HEAD`'s cipher in an encrypted trail: a record log whose one record is rewritten in
    /// place, under the data key its header (written once) wraps.
    head_codec: Option<RecordLog>,
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
    /// An encrypted store's keys: records are sealed (module docs).
    keys: Option<Keyring>,
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

/// The cipher of an encrypted trail's `HEAD` (opened for writing as `head`): from its
/// header, or a new one written when the file is empty.
fn head_codec(head: &File, path: &Path, keys: &Keyring) -> Result<RecordLog> {
    let len = head.metadata().map_err(|e| Error::io(path, e))?.len();
    if len >= crypt::HEADER_LEN as u64 {
        let mut header = vec![0u8; crypt::HEADER_LEN];
        head.read_exact_at(&mut header, 0)
            .map_err(|e| Error::io(path, e))?;
        return RecordLog::open(keys, &header, &path.display().to_string())
            .map_err(|e| crypt_error(path, e));
    }
    let (header, codec) =
        RecordLog::create(keys, &path.display().to_string()).map_err(|e| crypt_error(path, e))?;
    head.set_len(0)
        .and_then(|()| head.write_all_at(&header, 0))
        .and_then(|()| head.sync_data())
        .map_err(|e| Error::io(path, e))?;
    Ok(codec)
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
        AuditLog::open_with_keys(dir, clock, opts, None)
    }

    /// [`AuditLog::open`] of an encrypted store's trail when `keys` is given: each file
    /// starts with an encryption header (its data key wrapped by the store's KEK), each
    /// record is sealed on its own, `HEAD` is sealed (module docs). Without `keys`, an
    /// encrypted trail is refused, as a plaintext one is with them.
    ///
    /// # Errors
    /// As [`AuditLog::open`]; [`Error::Store`] naming the file for a wrong key or a file in
    /// the other form.
    pub fn open_with_keys(
        dir: &Path,
        clock: SharedClock,
        opts: AuditOptions,
        keys: Option<Keyring>,
    ) -> Result<AuditLog> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        let guard = WriterLock::take(&lock, dir)?;
        let tail = load_tail(dir, keys.as_ref())?;
        if tail.created {
            sync_dir(dir)?;
        }
        if let Some(h) = read_head(dir, keys.as_ref())? {
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
            .read(true)
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
                codec: tail.codec,
                next_index: tail.next_index,
            }),
            durable: Mutex::new(Durable {
                head_codec: match &keys {
                    Some(k) => Some(head_codec(&head, &head_path, k)?),
                    None => None,
                },
                head,
                durable_next: next_seq,
            }),
            lock: lock.try_clone().map_err(|e| Error::io(&lock_path, e))?,
            keys,
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
            log.core.write_head(&d, r.seq, &r.hash, index)?;
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

    /// The keys of an encrypted trail (`None`: plaintext), for reading it
    /// ([`super::verify_with_keys`], [`super::search_with_keys`]).
    pub fn keys(&self) -> Option<&Keyring> {
        self.core.keys.as_ref()
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

    fn write_head(&self, d: &Durable, seq: u64, hash: &str, index: u32) -> Result<()> {
        let head_file = &d.head;
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
        let mut at = 0;
        if let Some(c) = &d.head_codec {
            // One sealed record after the header (a new random nonce each time), always the
            // same size.
            buf = c.seal(0, &buf).map_err(|e| crypt_error(&path, e))?;
            at = crypt::HEADER_LEN as u64;
        }
        head_file
            .write_all_at(&buf, at)
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
        let tail = load_tail(&self.dir, self.keys.as_ref())?;
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
        st.codec = tail.codec;
        st.next_index = tail.next_index;
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
        if st.len < HEADER_LINE_LEN {
            // The encryption header line itself was torn: the file starts afresh.
            st.codec = None;
            st.next_index = 0;
        }
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
            entry,
            hash: String::new(),
        };
        rec.hash = rec.compute_hash();
        let json = serde_json::to_vec(&rec).map_err(|e| Error::Internal(e.to_string()))?;
        self.write_line(st, &json, &rec)?;
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
        .and_then(|()| self.write_head(&d, last_seq, &last_hash, index));
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

    /// Writes `json` (a record without its newline) as the next line: as is, or sealed when
    /// the trail is encrypted (a new file gets its header line first).
    fn write_line(&self, st: &mut State, json: &[u8], rec: &AuditRecord) -> Result<()> {
        let sealed = self.keys.is_some();
        let header_len = if sealed { HEADER_LINE_LEN } else { 0 };
        let need = line_len(json.len(), sealed);
        if st.len > header_len && st.len + need > self.opts.max_file_bytes {
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
            st.codec = None;
            st.next_index = 0;
        }
        let path = self.dir.join(file_name(st.index));
        if let (Some(k), None) = (&self.keys, &st.codec) {
            let (header, codec) = new_header_line(k, &path)?;
            (&*st.file)
                .write_all(&header)
                .map_err(|e| Error::io(&path, e))?;
            st.len += header.len() as u64;
            st.codec = Some(codec);
            st.next_index = 0;
        }
        let line = encode_line(st.codec.as_ref(), st.next_index, json, &path)?;
        (&*st.file)
            .write_all(&line)
            .map_err(|e| Error::io(&path, e))?;
        if st.codec.is_some() {
            st.next_index += 1;
        }
        st.len += line.len() as u64;
        st.next_seq = rec.seq + 1;
        st.prev = rec.hash.clone();
        Ok(())
    }
}
