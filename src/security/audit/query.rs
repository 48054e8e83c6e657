//! Querying the audit trail: who accessed a patient, and the records matching a filter
//! ([`search`], [`query`]).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::security::keyring::Keyring;

use super::files::*;
use super::record::*;
use super::verify::no_trail;

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
            |p| matches!(&rec.entry.patients, Patients::Ids(ids) if ids.iter().any(|i| i == p)),
        ) && self
            .principal
            .as_ref()
            .is_none_or(|p| rec.entry.principal.as_deref() == Some(p.as_str()))
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
    search_with_keys(dir, filter, None)
}

/// [`search`] of an encrypted store's trail when `keys` is given (records are opened as
/// they are read).
///
/// # Errors
/// As [`search`]; [`Error::Store`] naming the file for a wrong key or a file in the other
/// form; [`Error::BadInput`] naming the file and line of a record that does not open.
pub fn search_with_keys(
    dir: &Path,
    filter: &QueryFilter,
    keys: Option<&Keyring>,
) -> Result<Vec<Access>> {
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
        let mut codec = None;
        let mut next_index = 0u64;
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
            if n == 1 {
                codec = codec_of(line, keys, &path)?;
                if codec.is_some() {
                    continue; // the encryption header
                }
            }
            if line.is_empty() {
                continue;
            }
            let (_, line) =
                decode_line(codec.as_ref(), line, Some(next_index), n as u64).map_err(|why| {
                    Error::BadInput {
                        location: format!("{} line {n}", path.display()),
                        field: "-".into(),
                        reason: why,
                    }
                })?;
            next_index += 1;
            let rec: AuditRecord = serde_json::from_slice(&line).map_err(|e| Error::BadInput {
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
