//! Verifying the audit trail: every record's hash, the chain, the numbering of files and
//! `HEAD`, and what was sealed after a crash ([`verify`], [`VerifyReport`]).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::security::keyring::Keyring;

use super::files::*;
use super::record::*;

/// One problem `verify` found in the trail: where, and what.
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
pub(super) fn no_trail(dir: &Path) -> Error {
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
    verify_with_keys(dir, None)
}

/// [`verify`] of an encrypted store's trail when `keys` is given: every record is opened
/// (a record that fails authentication, or whose index in its file is out of place, is the
/// problem at its file and line), then checked exactly as a plaintext one: the chain hashes
/// the plaintext records.
///
/// # Errors
/// As [`verify`]; [`Error::Store`] naming the file for a wrong key (both key ids), a
/// tampered encryption header or a file in the other form (plaintext in an encrypted trail,
/// encrypted without `keys`).
pub fn verify_with_keys(dir: &Path, keys: Option<&Keyring>) -> Result<VerifyReport> {
    if !dir.is_dir() {
        return Err(no_trail(dir));
    }
    let files = list_files(dir)?;
    let head = match read_head(dir, keys) {
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
        let mut codec = None;
        let mut next_index = 0u64;
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
            let line = &buf[..buf.len() - 1];
            if line_no == 1 {
                codec = codec_of(line, keys, path)?;
                if codec.is_some() {
                    continue; // the encryption header
                }
            }
            let body = match decode_line(codec.as_ref(), line, Some(next_index), line_no) {
                Ok((_, plain)) => plain,
                Err(why) => {
                    fail(&mut report, &name, Some(line_no), None, why);
                    return Ok(report);
                }
            };
            next_index += 1;
            let body = &body[..];
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
            if let Some(t) = &rec.entry.torn {
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
