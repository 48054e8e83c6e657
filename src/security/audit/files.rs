//! The audit trail's files on disk: their names and numbering, `HEAD`, and reading the
//! tail of the last file (the last record, a torn last line) that writers chain onto.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::record::{AuditRecord, Torn};

pub(super) const HEAD_FILE: &str = "HEAD";
pub(super) const HEAD_SIZE: usize = 256;
pub(super) const LOCK_FILE: &str = "LOCK";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Head {
    pub(super) seq: u64,
    pub(super) hash: String,
    pub(super) file: String,
}

/// The name of file number `index`.
pub fn file_name(index: u32) -> String {
    format!("audit-{index:06}.jsonl")
}

pub(super) fn parse_file_name(name: &str) -> Option<u32> {
    let n = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if n.len() < 6 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The audit files in `dir`, by number.
pub(super) fn list_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
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

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

pub(super) fn read_head(dir: &Path) -> Result<Option<Head>> {
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
pub(super) struct Tail {
    pub(super) index: u32,
    pub(super) path: PathBuf,
    pub(super) file: File,
    /// Bytes up to the end of the last complete line (where a torn line starts).
    pub(super) len: u64,
    pub(super) last: Option<AuditRecord>,
    pub(super) torn: Option<Torn>,
    pub(super) created: bool,
}

/// Reads the end of `file` (of length `len`) far enough back to hold its last complete line:
/// returns where the bytes start and the bytes.
pub(super) fn read_end(file: &File, len: u64, path: &Path) -> Result<(u64, Vec<u8>)> {
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
pub(super) fn last_line(buf: &[u8]) -> Option<&[u8]> {
    let complete = buf.iter().rposition(|b| *b == b'\n')?;
    let body = &buf[..complete];
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    Some(&body[start..])
}

pub(super) fn parse_last(line: &[u8], path: &Path) -> Result<AuditRecord> {
    serde_json::from_slice(line).map_err(|e| {
        Error::precondition(
            format!("audit log {}", path.display()),
            format!("its last record is unreadable ({e}); run `ward audit verify`"),
        )
    })
}

/// Reads the tail of the trail in `dir` (creating the first file if there is none); changes
/// nothing else. Call with the writers' lock held.
pub(super) fn load_tail(dir: &Path) -> Result<Tail> {
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
