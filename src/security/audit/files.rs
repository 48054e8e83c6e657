//! The audit trail's files on disk: their names and numbering, `HEAD`, reading the tail
//! of the last file (the last record, a torn last line) that writers chain onto, and the
//! encrypted form of a trail (an encrypted store's: every file's first line is its
//! encryption header, every other line a sealed record, `HEAD` a sealed object; module docs
//! of [`super`]).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::security::keyring::Keyring;
use crate::store::crypt::{self, RecordLog};

use super::record::{AuditRecord, Torn};

pub(super) const HEAD_FILE: &str = "HEAD";
pub(super) const HEAD_SIZE: usize = 256;
/// The first line of an encrypted audit file: the base64 of its 128-byte encryption header
/// and a newline.
pub(super) const HEADER_LINE_LEN: u64 = 173;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The bytes a record of `plain` bytes takes as a line: itself and a newline, or sealed and
/// in base64 with a newline.
pub(super) fn line_len(plain: usize, sealed: bool) -> u64 {
    if sealed {
        (plain + crypt::RECORD_OVERHEAD).div_ceil(3) as u64 * 4 + 1
    } else {
        plain as u64 + 1
    }
}

/// A new encrypted audit file's header line and cipher.
pub(super) fn new_header_line(keys: &Keyring, path: &Path) -> Result<(Vec<u8>, RecordLog)> {
    let (header, log) =
        RecordLog::create(keys, &path.display().to_string()).map_err(|e| crypt_error(path, e))?;
    let mut line = B64.encode(header).into_bytes();
    line.push(b'\n');
    Ok((line, log))
}

/// `plain` as the line of record `index` of a file: as is, or sealed with `log`.
pub(super) fn encode_line(
    log: Option<&RecordLog>,
    index: u64,
    plain: &[u8],
    path: &Path,
) -> Result<Vec<u8>> {
    let mut line = match log {
        None => plain.to_vec(),
        Some(l) => B64
            .encode(l.seal(index, plain).map_err(|e| crypt_error(path, e))?)
            .into_bytes(),
    };
    line.push(b'\n');
    Ok(line)
}

/// The record text of a line (without its newline): as is, or opened with `log`; `Err` is
/// why not (for a report naming the file and line).
pub(super) fn decode_line<'a>(
    log: Option<&RecordLog>,
    line: &'a [u8],
    expect: Option<u64>,
    line_no: u64,
) -> std::result::Result<(Option<u64>, std::borrow::Cow<'a, [u8]>), String> {
    match log {
        None => Ok((None, std::borrow::Cow::Borrowed(line))),
        Some(l) => {
            let frame = B64.decode(line).map_err(|e| {
                format!("not a sealed record (an encrypted trail's line is base64): {e}")
            })?;
            l.open_record(&frame, expect, &format!("line {line_no}"))
                .map(|(i, p)| (Some(i), std::borrow::Cow::Owned(p)))
                .map_err(|e| e.to_string())
        }
    }
}

pub(super) fn crypt_error(path: &Path, e: crypt::CryptError) -> Error {
    Error::Store {
        path: path.to_path_buf(),
        reason: format!("encrypted audit trail: {e}"),
    }
}

/// The 128-byte header a line holds, when it is an encrypted file's header line.
fn header_of_line(line: &[u8]) -> Option<Vec<u8>> {
    if line.len() + 1 != HEADER_LINE_LEN as usize {
        return None;
    }
    B64.decode(line)
        .ok()
        .filter(|h| crypt::is_record_log_header(h))
}

/// The cipher of the audit file at `path` whose first complete line is `first` (`None`: a
/// plaintext file). With `keys` (an encrypted store's trail) the first line must be an
/// encryption header; without, it must not be.
///
/// # Errors
/// [`Error::Store`] naming the file for a plaintext file in an encrypted trail, a wrong or
/// missing key (both key ids), a tampered header; [`Error::FailedPrecondition`] for an
/// encrypted file read without the store's key.
pub(super) fn codec_of(
    first: &[u8],
    keys: Option<&Keyring>,
    path: &Path,
) -> Result<Option<RecordLog>> {
    match (header_of_line(first), keys) {
        (Some(h), Some(k)) => RecordLog::open(k, &h, &path.display().to_string())
            .map(Some)
            .map_err(|e| crypt_error(path, e)),
        (None, Some(_)) => Err(Error::Store {
            path: path.to_path_buf(),
            reason: "not encrypted: the store is encrypted, but this audit file does not start with an encryption header (a plaintext file where an encrypted one belongs)".into(),
        }),
        (Some(_), None) => Err(encrypted_without_key(path)),
        (None, None) => Ok(None),
    }
}

pub(super) fn encrypted_without_key(path: &Path) -> Error {
    Error::precondition(
        format!("audit trail {}", path.display()),
        "it is encrypted (an encrypted store's trail): read it through its store, which loads the key (ward --store STORE audit ...)",
    )
}

/// The first line of `file` when it may be an encryption header (`None`: the file is empty
/// or its first line is longer than a header line).
pub(super) fn first_line(file: &File, path: &Path) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; HEADER_LINE_LEN as usize];
    let mut got = 0usize;
    while got < buf.len() {
        let n = file
            .read_at(&mut buf[got..], got as u64)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| buf[..p].to_vec()))
}
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

pub(super) fn read_head(dir: &Path, keys: Option<&Keyring>) -> Result<Option<Head>> {
    let path = dir.join(HEAD_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let sealed = bytes.starts_with(&crypt::MAGIC);
            let bytes = match keys {
                _ if bytes.is_empty() => bytes,
                Some(k) => {
                    let name = path.display().to_string();
                    let Some(header) = bytes.get(..crypt::HEADER_LEN) else {
                        return Err(crypt_error(
                            &path,
                            crypt::CryptError::NotEncrypted {
                                path: name,
                                reason: "shorter than the encryption header".into(),
                            },
                        ));
                    };
                    let codec =
                        RecordLog::open(k, header, &name).map_err(|e| crypt_error(&path, e))?;
                    match bytes.get(crypt::HEADER_LEN..) {
                        None | Some([]) => return Ok(None), // created, never written
                        Some(frame) => {
                            codec
                                .open_record(frame, Some(0), "record")
                                .map_err(|e| crypt_error(&path, e))?
                                .1
                        }
                    }
                }
                None if sealed => return Err(encrypted_without_key(dir)),
                None => bytes,
            };
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
    /// The last file's cipher (an encrypted trail whose last file has its header line).
    pub(super) codec: Option<RecordLog>,
    /// The index the next record of the last file gets (encrypted trails).
    pub(super) next_index: u64,
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

/// The last record of a file from its last complete line, decrypted with `codec`; with the
/// record's index in the file (encrypted files).
fn decode_last(
    codec: Option<&RecordLog>,
    line: &[u8],
    path: &Path,
) -> Result<(AuditRecord, Option<u64>)> {
    let (index, plain) = decode_line(codec, line, None, 0).map_err(|why| {
        Error::precondition(
            format!("audit log {}", path.display()),
            format!("its last record is unreadable ({why}); run `ward audit verify`"),
        )
    })?;
    Ok((parse_last(&plain, path)?, index))
}

/// The cipher of the file at `path` (`None`: plaintext, or an encrypted file cut before its
/// header line ended).
fn codec_of_file(file: &File, path: &Path, keys: Option<&Keyring>) -> Result<Option<RecordLog>> {
    match first_line(file, path)? {
        Some(line) => codec_of(&line, keys, path),
        None if keys.is_some() => {
            let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
            if len >= HEADER_LINE_LEN {
                return codec_of(&[], keys, path);
            }
            Ok(None)
        }
        None => Ok(None),
    }
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
/// nothing else. Call with the writers' lock held. With `keys` the trail is an encrypted
/// store's (module docs).
pub(super) fn load_tail(dir: &Path, keys: Option<&Keyring>) -> Result<Tail> {
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
    let codec = if len == 0 {
        None
    } else {
        codec_of_file(&file, &path, keys)?
    };
    let sealed = codec.is_some();
    let mut next_index = 0;
    let mut last = match last_line(&buf[..complete]) {
        // An encrypted file's only line is its header.
        Some(_) if sealed && len == HEADER_LINE_LEN => None,
        Some(line) => {
            let (rec, i) = decode_last(codec.as_ref(), line, &path)?;
            next_index = i.map_or(0, |i| i + 1);
            Some(rec)
        }
        None => None,
    };
    if last.is_none() && files.len() >= 2 {
        // A file just started: the last record is the previous file's.
        let (_, pp) = &files[files.len() - 2];
        let prev = File::open(pp).map_err(|e| Error::io(pp, e))?;
        let plen = prev.metadata().map_err(|e| Error::io(pp, e))?.len();
        let pcodec = codec_of_file(&prev, pp, keys)?;
        let (_, pbuf) = read_end(&prev, plen, pp)?;
        let header_only = pcodec.is_some() && plen == HEADER_LINE_LEN;
        if let Some(line) = last_line(&pbuf).filter(|_| !header_only) {
            last = Some(decode_last(pcodec.as_ref(), line, pp)?.0);
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
        codec,
        next_index,
    })
}
