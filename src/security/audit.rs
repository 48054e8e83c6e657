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
//! # In an encrypted store
//!
//! Opened with the store's keys ([`AuditLog::open_with_keys`], [`verify_with_keys`],
//! [`search_with_keys`]), the trail is encrypted record by record
//! ([`crate::store::crypt::RecordLog`], docs/encryption.md "Record logs"): each file's first
//! line is the base64 of its 128-byte encryption header (the file's data key wrapped by the
//! store's KEK), each further line the base64 of one sealed record (its index in the file, a
//! random nonce, the AES-256-GCM ciphertext of the JSON line and its tag). `HEAD` is a
//! record log of one record rewritten in place. The chain below is computed over the
//! plaintext records, exactly as in a plaintext trail; seq, `HEAD`, the fsync policies,
//! group commit and the torn-line sealing work unchanged on the lines (a torn header line
//! of a new file is cut like any torn line, and the file starts afresh). Without the keys an
//! encrypted trail is refused, and with them a plaintext one: a plaintext store's trail is
//! byte for byte what it was.
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

mod files;
mod query;
mod record;
mod verify;
mod writer;

pub use files::file_name;
pub use query::{query, search, search_with_keys, Access, QueryFilter};
pub use record::{
    local_principal, AuditEntry, AuditRecord, Outcome, Patients, Torn, GENESIS, TORN_KEPT_BYTES,
};
pub use verify::{verify, verify_with_keys, Problem, VerifyReport};
pub use writer::{AuditLog, AuditOptions, Durability};

#[cfg(test)]
mod tests {
    use super::files::parse_file_name;
    use super::*;
    use crate::clock::ManualClock;
    use crate::clock::SharedClock;
    use chrono::{DateTime, Utc};
    use std::fs::{self, OpenOptions};
    use std::io::Write;
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
