//! Heads: the one mutable thing in a store, moved only by compare-and-swap.
//!
//! Every name (`encounters`, `timeline-readmission`, a tag such as `prod`) has a head: the
//! version the name means now. A name's heads form a log, one entry per move:
//!
//! ```text
//! STORE/refs/<name>/00000000000000000001.json   {"seq":1,"hash":"b3:...","at":"..."}
//! STORE/refs/<name>/00000000000000000002.json   ...
//! ```
//!
//! The head is the entry with the highest sequence number; `NAME@TIME` is the last entry at
//! or before TIME. Entries are never rewritten, so the history stays.
//!
//! # Compare-and-swap
//! A writer that built a new version on head `n` publishes entry `n + 1` with a create-only
//! write: the entry is written and synced under a temporary name, then hard-linked to its
//! final name, which fails if that name exists. Exactly one of several writers racing from
//! the same head wins; the others get [`Error::Conflict`] and redo their work on the new
//! head. Sequence numbers are dense (entry `n + 1` is only ever created by a writer that read
//! entry `n`), so "entry `n + 1` exists" is exactly "the head moved". This works across
//! processes with no lock held, and it is the same protocol an object store runs with a
//! conditional create (`If-None-Match: *`): a process killed at any moment leaves either the
//! whole entry or none (at most a temporary file, which [`super::Store::cleanup`] removes).
//!
//! In object storage (`s3://`) the entry is written by exactly that conditional create
//! (`PutMode::Create`): the server takes one writer of `refs/<name>/<seq>.json` and answers
//! the others 412, which is [`Error::Conflict`] as here. An object is whole or absent, so
//! there are no temporary files to clean.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::object::Remote;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::security::keyring::Keyring;

/// One move of a name's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Its place in the name's log, from 1.
    pub seq: u64,
    /// The version the name means from this move on.
    pub hash: ContentHash,
    /// When the head moved (the store's clock).
    pub at: DateTime<Utc>,
}

/// How a put (or a tag) moves the head of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadUpdate {
    /// Make the version the head, whatever the head is now (used where the version does not
    /// depend on the previous head: a `put`, a tag, a training set).
    #[default]
    Move,
    /// Make the version the head only if the head is still the one the version was built
    /// from (its sequence number; `None`: the name had no head), else fail with
    /// [`Error::Conflict`]. A head that already names the same content counts as success.
    Expect(Option<u64>),
    /// Store the version without moving any head.
    Keep,
}

/// Where heads live: `STORE/refs`.
#[derive(Debug, Clone)]
pub(crate) struct Heads {
    dir: PathBuf,
    /// In object storage: the store, whose `refs/` holds the entries.
    remote: Option<Remote>,
    /// In an encrypted local store: the keys that seal each entry file (in object storage
    /// the remote's client encrypts).
    keys: Option<Keyring>,
}

/// Entries moved onto a head that keeps moving before giving up; each retry follows another
/// writer's successful move, so this is only reached under a pathological flood.
const MAX_MOVES: usize = 10_000;

impl Heads {
    pub(crate) fn new(dir: PathBuf) -> Heads {
        Heads {
            dir,
            remote: None,
            keys: None,
        }
    }

    /// The same heads, their entry files sealed under `keys` (an encrypted local store).
    pub(crate) fn with_keys(mut self, keys: Option<Keyring>) -> Heads {
        if self.remote.is_none() {
            self.keys = keys;
        }
        self
    }

    /// The heads of a store in object storage.
    pub(crate) fn remote(remote: Remote) -> Heads {
        Heads {
            dir: PathBuf::from(remote.uri("refs")),
            remote: Some(remote),
            keys: None,
        }
    }

    fn parse_seq(file: &str) -> Option<u64> {
        let stem = file.strip_suffix(".json")?;
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            stem.parse().ok()
        } else {
            None
        }
    }

    fn name_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The sequence numbers present for `name`, ascending.
    fn seqs(&self, name: &str) -> Result<Vec<u64>> {
        if let Some(r) = &self.remote {
            let mut out: Vec<u64> = r
                .list_files(&format!("refs/{name}"))?
                .iter()
                .filter_map(|o| o.key.rsplit('/').next().and_then(Heads::parse_seq))
                .collect();
            out.sort_unstable();
            return Ok(out);
        }
        let dir = self.name_dir(name);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let file = entry.file_name();
            if let Some(seq) = file.to_str().and_then(Heads::parse_seq) {
                out.push(seq);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn entry_path(&self, name: &str, seq: u64) -> PathBuf {
        self.name_dir(name).join(format!("{seq:020}.json"))
    }

    fn read_entry(&self, name: &str, seq: u64) -> Result<Head> {
        let path = self.entry_path(name, seq);
        let bytes = match &self.remote {
            Some(r) => {
                let rel = format!("refs/{name}/{seq:020}.json");
                r.get(&rel)?.ok_or_else(|| Error::Store {
                    path: path.clone(),
                    reason: "the head entry was listed but is gone".into(),
                })?
            }
            None => {
                let stored = fs::read(&path).map_err(|e| Error::io(&path, e))?;
                super::at_rest::maybe_open(self.keys.as_ref(), stored, &path)?.into()
            }
        };
        let head: Head = serde_json::from_slice(&bytes).map_err(|e| Error::BadInput {
            location: path.display().to_string(),
            field: "head entry".into(),
            reason: e.to_string(),
        })?;
        if head.seq != seq {
            return Err(Error::Store {
                path,
                reason: format!("the entry says seq {}, its file name {seq}", head.seq),
            });
        }
        Ok(head)
    }

    /// The current head of `name`, if it has one.
    pub(crate) fn head(&self, name: &str) -> Result<Option<Head>> {
        match self.seqs(name)?.last() {
            Some(&seq) => self.read_entry(name, seq).map(Some),
            None => Ok(None),
        }
    }

    /// Every move of `name`'s head, oldest first.
    pub(crate) fn log(&self, name: &str) -> Result<Vec<Head>> {
        self.seqs(name)?
            .into_iter()
            .map(|seq| self.read_entry(name, seq))
            .collect()
    }

    /// The names that have a head.
    pub(crate) fn names(&self) -> Result<Vec<String>> {
        if let Some(r) = &self.remote {
            return r.list_dirs("refs");
        }
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            if let Some(n) = entry.file_name().to_str() {
                if !n.starts_with('.') {
                    out.push(n.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Publishes `hash` as the head of `name` if the head is still `expected` (a sequence
    /// number; `None`: no head yet).
    ///
    /// # Errors
    /// [`Error::Conflict`] when the head moved; [`Error::Io`] when the entry cannot be
    /// written.
    pub(crate) fn compare_and_swap(
        &self,
        name: &str,
        expected: Option<u64>,
        hash: ContentHash,
        at: DateTime<Utc>,
    ) -> Result<Head> {
        let seq = expected.map_or(1, |s| s + 1);
        let head = Head { seq, hash, at };
        let body = serde_json::to_vec(&head)
            .map_err(|e| Error::Internal(format!("head entry does not serialize: {e}")))?;
        if let Some(r) = &self.remote {
            if r.put_create(&format!("refs/{name}/{seq:020}.json"), body)? {
                return Ok(head);
            }
            return Err(self.conflict(name, expected)?);
        }
        let dir = self.name_dir(name);
        let body =
            super::at_rest::maybe_seal(self.keys.as_ref(), body, &self.entry_path(name, seq))?;
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // The entry is complete and on disk before it gets its name: a reader never sees a
        // torn entry, and a crash leaves only the temporary file.
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        tmp.as_file().lock().map_err(|e| Error::io(tmp.path(), e))?;
        tmp.write_all(&body).map_err(|e| Error::io(tmp.path(), e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io(tmp.path(), e))?;
        let dest = self.entry_path(name, seq);
        match fs::hard_link(tmp.path(), &dest) {
            Ok(()) => {
                drop(tmp);
                sync_dir(&dir)?;
                Ok(head)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(self.conflict(name, expected)?)
            }
            Err(e) => Err(Error::io(&dest, e)),
        }
    }

    /// The [`Error::Conflict`] of a writer that expected `expected` as `name`'s head.
    fn conflict(&self, name: &str, expected: Option<u64>) -> Result<Error> {
        let found = self.head(name)?;
        Ok(Error::Conflict {
            name: name.to_string(),
            expected: expected
                .map(|s| format!("entry {s}"))
                .unwrap_or_else(|| "none".into()),
            found: found
                .map(|h| format!("entry {} ({})", h.seq, h.hash))
                .unwrap_or_else(|| "none".into()),
        })
    }

    /// Applies `update` for `hash`: see [`HeadUpdate`]. Returns the head that names `hash`
    /// after the call (`None` for [`HeadUpdate::Keep`]).
    ///
    /// # Errors
    /// As [`Heads::compare_and_swap`].
    pub(crate) fn update(
        &self,
        name: &str,
        hash: ContentHash,
        update: HeadUpdate,
        at: DateTime<Utc>,
    ) -> Result<Option<Head>> {
        match update {
            HeadUpdate::Keep => Ok(None),
            HeadUpdate::Expect(expected) => {
                let current = self.head(name)?;
                if let Some(h) = current.filter(|h| h.hash == hash) {
                    return Ok(Some(h));
                }
                self.compare_and_swap(name, expected, hash, at).map(Some)
            }
            HeadUpdate::Move => {
                for _ in 0..MAX_MOVES {
                    let current = self.head(name)?;
                    if let Some(h) = current.filter(|h| h.hash == hash) {
                        return Ok(Some(h));
                    }
                    match self.compare_and_swap(name, current.map(|h| h.seq), hash, at) {
                        Err(Error::Conflict { .. }) => continue,
                        other => return other.map(Some),
                    }
                }
                Err(Error::Conflict {
                    name: name.to_string(),
                    expected: "any".into(),
                    found: format!("a head that moved {MAX_MOVES} times during this write"),
                })
            }
        }
    }

    /// Removes temporary entry files no writer holds (leftovers of killed writers).
    pub(crate) fn cleanup(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        if self.remote.is_some() {
            return Ok(removed);
        }
        for name in self.names()? {
            let dir = self.name_dir(&name);
            for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
                let path = entry.map_err(|e| Error::io(&dir, e))?.path();
                let is_tmp = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".tmp-"));
                if !is_tmp {
                    continue;
                }
                let held = fs::File::open(&path).is_ok_and(|f| f.try_lock().is_err());
                if held {
                    continue;
                }
                match fs::remove_file(&path) {
                    Ok(()) => removed.push(format!("refs/{name}/{}", file_name(&path))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&path, e)),
                }
            }
        }
        Ok(removed)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Syncs a directory, so the names created in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> ContentHash {
        ContentHash([n; 32])
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn compare_and_swap_takes_one_winner_per_head() {
        let dir = tempfile::tempdir().unwrap();
        let heads = Heads::new(dir.path().join("refs"));
        assert_eq!(heads.head("enc").unwrap(), None);
        let first = heads.compare_and_swap("enc", None, h(1), t(10)).unwrap();
        assert_eq!(first.seq, 1);
        // A second writer that also saw "no head" loses.
        assert!(matches!(
            heads.compare_and_swap("enc", None, h(2), t(11)),
            Err(Error::Conflict { .. })
        ));
        let second = heads.compare_and_swap("enc", Some(1), h(2), t(12)).unwrap();
        assert_eq!(second.seq, 2);
        assert!(matches!(
            heads.compare_and_swap("enc", Some(1), h(3), t(13)),
            Err(Error::Conflict { .. })
        ));
        assert_eq!(heads.head("enc").unwrap(), Some(second));
        assert_eq!(heads.log("enc").unwrap(), vec![first, second]);
        // Expecting an old head while the head already names the same content succeeds
        // without a new entry.
        assert_eq!(
            heads
                .update("enc", h(2), HeadUpdate::Expect(Some(1)), t(14))
                .unwrap(),
            Some(second)
        );
        assert_eq!(heads.log("enc").unwrap().len(), 2);
        // Move always lands, on whatever head is there.
        let moved = heads.update("enc", h(4), HeadUpdate::Move, t(15)).unwrap();
        assert_eq!(moved.map(|m| m.seq), Some(3));
        assert_eq!(heads.names().unwrap(), vec!["enc".to_string()]);
    }

    #[test]
    fn racing_threads_never_lose_a_move() {
        let dir = tempfile::tempdir().unwrap();
        let heads = Heads::new(dir.path().join("refs"));
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let heads = &heads;
                s.spawn(move || {
                    for j in 0..25u8 {
                        heads
                            .update("n", h(i * 25 + j + 1), HeadUpdate::Move, t(1))
                            .unwrap();
                    }
                });
            }
        });
        let log = heads.log("n").unwrap();
        assert_eq!(log.len(), 200);
        let mut seen: Vec<u8> = log.iter().map(|e| e.hash.0[0]).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 200, "every move is in the log exactly once");
        assert!(log.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1));
    }

    #[test]
    fn leftovers_of_killed_writers_are_ignored_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let heads = Heads::new(dir.path().join("refs"));
        heads.compare_and_swap("enc", None, h(1), t(1)).unwrap();
        std::fs::write(dir.path().join("refs/enc/.tmp-abc"), b"{\"seq\":2").unwrap();
        assert_eq!(heads.head("enc").unwrap().map(|e| e.seq), Some(1));
        assert_eq!(
            heads.cleanup().unwrap(),
            vec!["refs/enc/.tmp-abc".to_string()]
        );
        assert_eq!(heads.log("enc").unwrap().len(), 1);
    }
}
