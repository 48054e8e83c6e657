//! Tampering with the audit trail is detected, and the first bad record is named; appends
//! from many threads serialize; the CLI verifies and queries; the cost of fsync is measured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use ward::clock::{ManualClock, SharedClock};
use ward::security::audit::{
    self, file_name, AuditEntry, AuditLog, AuditOptions, AuditRecord, Durability, Outcome, Patients,
};

fn clock() -> SharedClock {
    Arc::new(ManualClock::new(
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    ))
}

fn entry(i: usize) -> AuditEntry {
    let decision = if i % 4 == 3 {
        Outcome::Denied
    } else {
        Outcome::Allowed
    };
    let mut e = AuditEntry::new(
        "/ward.v1.Features/GetOnlineFeatures",
        decision,
        format!("reason {i}"),
    );
    e.principal = Some(format!("user-{i:03}"));
    e.auth = Some("jwt".into());
    e.roles = vec!["clinician".into()];
    e.client = Some("127.0.0.1:40000".into());
    e.action = Some("online_lookup".into());
    e.feature_set = Some("readmission".into());
    e.datasets = vec![format!("b3:{:064x}", i)];
    e.patients = Patients::Ids(vec![format!("p{}", i % 5)]);
    e
}

/// A trail of `n` records rotated over several files.
fn trail(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        dir.path(),
        clock(),
        AuditOptions {
            max_file_bytes: 4000,
            durability: Durability::Off,
        },
    )
    .unwrap();
    for i in 0..n {
        log.append(entry(i)).unwrap();
    }
    dir
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    v.sort();
    v
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    if !lines.is_empty() {
        s.push('\n');
    }
    std::fs::write(p, s).unwrap();
}

/// Verifies and returns the problem's (file, line, seq, reason); panics if none.
fn problem(dir: &Path) -> (String, Option<u64>, Option<u64>, String) {
    let r = audit::verify(dir).unwrap();
    let p = r
        .problem
        .unwrap_or_else(|| panic!("tampering not detected"));
    eprintln!("detected: {p}");
    (p.file, p.line, p.seq, p.reason)
}

#[test]
fn an_untouched_trail_verifies() {
    let dir = trail(40);
    let r = audit::verify(dir.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problem);
    assert_eq!(r.records, 40);
    assert_eq!(r.last_seq, Some(39));
    assert_eq!(r.head_seq, Some(39));
    assert!(r.files >= 3, "{} files", r.files);
    // The chain crosses files: the first record of file 2 links to the last of file 1.
    let f = files(dir.path());
    let last1: AuditRecord = serde_json::from_str(lines(&f[0]).last().unwrap()).unwrap();
    let first2: AuditRecord = serde_json::from_str(&lines(&f[1])[0]).unwrap();
    assert_eq!(first2.prev, last1.hash);
    assert_eq!(first2.seq, last1.seq + 1);
}

#[test]
fn an_edited_field_is_detected_at_that_record() {
    let dir = trail(40);
    let f = files(dir.path());
    let mut l = lines(&f[1]);
    let rec: AuditRecord = serde_json::from_str(&l[2]).unwrap();
    l[2] = l[2]
        .replace("\"decision\":\"denied\"", "\"decision\":\"allowed\"")
        .replace(
            &format!("\"principal\":\"{}\"", rec.entry.principal.clone().unwrap()),
            "\"principal\":\"someone-else\"",
        );
    write_lines(&f[1], &l);
    let (file, line, seq, reason) = problem(dir.path());
    assert_eq!(file, file_name(2));
    assert_eq!(line, Some(3));
    assert_eq!(seq, Some(rec.seq));
    assert!(reason.contains("edited"), "{reason}");
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let dir = trail(40);
    let f = files(dir.path());
    let mut l = lines(&f[0]);
    let mut rec: AuditRecord = serde_json::from_str(&l[1]).unwrap();
    rec.entry.patients = Patients::Ids(vec!["someone-innocent".into()]);
    rec.hash = rec.compute_hash();
    l[1] = serde_json::to_string(&rec).unwrap();
    write_lines(&f[0], &l);
    let (file, line, seq, reason) = problem(dir.path());
    assert_eq!(
        (file.as_str(), line, seq),
        (file_name(1).as_str(), Some(3), Some(rec.seq + 1))
    );
    assert!(reason.contains("prev"), "{reason}");
}

#[test]
fn a_deleted_record_is_detected() {
    let dir = trail(40);
    let f = files(dir.path());
    let mut l = lines(&f[1]);
    let removed: AuditRecord = serde_json::from_str(&l[1]).unwrap();
    l.remove(1);
    write_lines(&f[1], &l);
    let (file, line, seq, reason) = problem(dir.path());
    assert_eq!(file, file_name(2));
    assert_eq!(line, Some(2));
    assert_eq!(seq, Some(removed.seq + 1));
    assert!(
        reason.contains(&format!("expected seq {}", removed.seq)),
        "{reason}"
    );
}

#[test]
fn two_swapped_records_are_detected() {
    let dir = trail(40);
    let f = files(dir.path());
    let mut l = lines(&f[0]);
    l.swap(1, 2);
    write_lines(&f[0], &l);
    let (file, line, seq, reason) = problem(dir.path());
    assert_eq!(file, file_name(1));
    assert_eq!(line, Some(2));
    assert_eq!(seq, Some(2));
    assert!(reason.contains("expected seq 1"), "{reason}");
}

#[test]
fn a_cut_tail_is_detected_by_head() {
    let dir = trail(40);
    let f = files(dir.path());
    let last = f.last().unwrap();
    let mut l = lines(last);
    l.truncate(l.len() - 2);
    write_lines(last, &l);
    let (_, _, _, reason) = problem(dir.path());
    assert!(
        reason.contains("HEAD records seq 39") && reason.contains("cut"),
        "{reason}"
    );
    // A log cut this way also refuses to open for appending (fail closed).
    let e = AuditLog::open(dir.path(), clock(), AuditOptions::default()).unwrap_err();
    assert!(e.to_string().contains("records were removed"), "{e}");
}

#[test]
fn a_cut_in_the_middle_of_a_line_is_detected() {
    let dir = trail(10);
    let f = files(dir.path());
    let last = f.last().unwrap();
    let bytes = std::fs::read(last).unwrap();
    std::fs::write(last, &bytes[..bytes.len() - 10]).unwrap();
    let (_, _, _, reason) = problem(dir.path());
    assert!(reason.contains("torn last line"), "{reason}");
}

#[test]
fn a_torn_last_line_is_reported_with_its_offset_then_sealed_keeping_its_bytes() {
    // A crash mid-append, written by hand: a record's first bytes and no newline.
    let bin = env!("CARGO_BIN_EXE_ward");
    let dir = trail(10);
    let last = files(dir.path()).pop().unwrap();
    let offset = std::fs::metadata(&last).unwrap().len();
    let torn = br#"{"seq":10,"prev":"00ab","time":"2026-03-01T12:00:00Z","principal":"dr-torn"#;
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap();
        f.write_all(torn).unwrap();
    }
    // verify reports it: the file, the line, the byte offset; non-zero exit.
    let r = audit::verify(dir.path()).unwrap();
    let t = r.torn.clone().expect("the torn line is reported");
    assert_eq!((t.offset, t.len), (offset, torn.len() as u64));
    let out = std::process::Command::new(bin)
        .args(["audit", "verify", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("torn last line") && stderr.contains(&format!("byte offset {offset}")),
        "{stderr}"
    );
    // The next writer seals it: the chain stays valid, and the torn bytes are kept in a
    // recovery record that verify lists.
    let log = AuditLog::open(dir.path(), clock(), AuditOptions::default()).unwrap();
    assert_eq!(
        log.append(entry(99)).unwrap(),
        11,
        "seq 10 is the recovery record"
    );
    drop(log);
    let r = audit::verify(dir.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problem);
    assert_eq!(r.records, 12);
    assert_eq!(r.recovered, vec![t.clone()]);
    assert_eq!(r.recovered[0].text.as_bytes(), torn);
    assert_eq!(
        r.recovered[0].blake3,
        blake3::hash(torn).to_hex().to_string()
    );
    let out = std::process::Command::new(bin)
        .args(["audit", "verify", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("torn last line was sealed") && stderr.contains("dr-torn"),
        "{stderr}"
    );
}

#[test]
fn verify_without_a_trail_says_so_plainly() {
    let bin = env!("CARGO_BIN_EXE_ward");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = std::process::Command::new(bin)
        .arg("--store")
        .arg(&store)
        .args(["init"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(bin)
        .arg("--store")
        .arg(&store)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("there is none yet"), "{stderr}");
    assert!(
        !stderr.contains("os error") && stderr.matches("audit").count() <= 3,
        "{stderr}"
    );
}

#[test]
fn a_deleted_rotated_file_is_detected() {
    // In the middle.
    let dir = trail(40);
    let f = files(dir.path());
    assert!(f.len() >= 3);
    std::fs::remove_file(&f[1]).unwrap();
    let (file, _, _, reason) = problem(dir.path());
    assert_eq!(file, file_name(2));
    assert!(reason.contains("missing"), "{reason}");
    // The first.
    let dir = trail(40);
    std::fs::remove_file(&files(dir.path())[0]).unwrap();
    let (file, _, _, reason) = problem(dir.path());
    assert_eq!(file, file_name(1));
    assert!(reason.contains("missing"), "{reason}");
    // The last: the trail is shorter than HEAD.
    let dir = trail(40);
    std::fs::remove_file(files(dir.path()).last().unwrap()).unwrap();
    let (_, _, _, reason) = problem(dir.path());
    assert!(reason.contains("cut from the tail"), "{reason}");
    // A deleted HEAD.
    let dir = trail(5);
    std::fs::remove_file(dir.path().join("HEAD")).unwrap();
    let (file, _, _, reason) = problem(dir.path());
    assert_eq!(file, "HEAD");
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn appends_from_many_threads_serialize() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        AuditLog::open(
            dir.path(),
            clock(),
            AuditOptions {
                max_file_bytes: 8000,
                durability: Durability::Sync,
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| log.append(entry(t * 100 + i)).unwrap())
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..200).collect::<Vec<u64>>());
    let r = audit::verify(dir.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problem);
    assert_eq!(r.records, 200);
}

/// The cost of each durability policy: appends unsynced, synced in the background every
/// 20 ms (the default), and synced before `append` returns. Prints the numbers (run with
/// `--nocapture`); reported in docs/security.md. Every trail verifies.
#[test]
fn fsync_cost_is_measured() {
    let n = 200;
    let policies = [
        ("off", Durability::Off),
        ("interval 20 ms", Durability::default()),
        ("sync", Durability::Sync),
    ];
    for (name, durability) in policies {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(
            dir.path(),
            clock(),
            AuditOptions {
                max_file_bytes: 64 << 20,
                durability,
            },
        )
        .unwrap();
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            log.append(entry(i)).unwrap();
            lat.push(t.elapsed().as_micros() as u64);
        }
        let total = start.elapsed();
        drop(log);
        lat.sort_unstable();
        let p = |q: f64| lat[((n as f64 - 1.0) * q) as usize];
        eprintln!(
            "audit append, {name}: {n} appends in {:?}: mean {} us, p50 {} us, p99 {} us",
            total,
            total.as_micros() as u64 / n as u64,
            p(0.5),
            p(0.99)
        );
        let r = audit::verify(dir.path()).unwrap();
        assert!(r.ok() && r.records == n as u64, "{:?}", r.problem);
        assert_eq!(r.head_seq, Some(n as u64 - 1), "{name}: HEAD after drop");
    }
    // Concurrent synced appends share flushes (group commit): 8 threads x 50 appends.
    let dir = tempfile::tempdir().unwrap();
    let opts = AuditOptions {
        durability: Durability::Sync,
        ..AuditOptions::default()
    };
    let log = Arc::new(AuditLog::open(dir.path(), clock(), opts).unwrap());
    let start = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut worst = 0u64;
                for i in 0..50 {
                    let s = Instant::now();
                    log.append(entry(t * 1000 + i)).unwrap();
                    worst = worst.max(s.elapsed().as_micros() as u64);
                }
                worst
            })
        })
        .collect();
    let worst = threads
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap_or(0);
    let total = start.elapsed();
    eprintln!(
        "audit append, sync, 8 threads: 400 appends in {total:?} ({:.0} appends/s, worst {worst} us)",
        400.0 / total.as_secs_f64()
    );
    let r = audit::verify(dir.path()).unwrap();
    assert!(r.ok() && r.records == 400, "{:?}", r.problem);
}

/// Under the interval policy the background flusher brings HEAD up to the last record
/// without further appends; records written after the last flush (a crash: here HEAD is
/// put back as a crash would leave it) are not a problem for `verify`, which counts them,
/// and reopening brings HEAD up to date. A tail cut below HEAD is still detected.
#[test]
fn interval_policy_flushes_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AuditOptions {
        durability: Durability::Interval(std::time::Duration::from_millis(5)),
        ..AuditOptions::default()
    };
    let log = AuditLog::open(dir.path(), clock(), opts.clone()).unwrap();
    for i in 0..10 {
        log.append(entry(i)).unwrap();
    }
    let head_seq = || audit::verify(dir.path()).unwrap().head_seq;
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while head_seq() != Some(9) {
        assert!(Instant::now() < deadline, "the flusher never synced HEAD");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let head_at_9 = std::fs::read(dir.path().join("HEAD")).unwrap();
    for i in 10..30 {
        log.append(entry(i)).unwrap();
    }
    drop(log);
    // A crash right after the flush of seq 9: records 10..29 were written, HEAD names 9.
    std::fs::write(dir.path().join("HEAD"), &head_at_9).unwrap();
    let r = audit::verify(dir.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problem);
    assert_eq!((r.records, r.head_seq, r.after_head), (30, Some(9), 20));
    let log = AuditLog::open(dir.path(), clock(), opts).unwrap();
    log.append(entry(30)).unwrap();
    log.flush().unwrap();
    let r = audit::verify(dir.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problem);
    assert_eq!((r.records, r.head_seq, r.after_head), (31, Some(30), 0));
    drop(log);
    // Cutting the last record now leaves the trail shorter than HEAD.
    let last = files(dir.path()).pop().unwrap();
    let text = std::fs::read_to_string(&last).unwrap();
    let cut = text.trim_end().rfind('\n').map_or(0, |p| p + 1);
    std::fs::write(&last, &text[..cut]).unwrap();
    let (_, _, _, reason) = problem(dir.path());
    assert!(reason.contains("cut from the tail"), "{reason}");
}

#[test]
fn cli_verifies_and_queries() {
    let bin = env!("CARGO_BIN_EXE_ward");
    let dir = trail(12);
    let out = std::process::Command::new(bin)
        .args(["audit", "verify", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("12 records"), "{stderr}");
    let out = std::process::Command::new(bin)
        .args(["audit", "query", "--patient", "p2", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    // Records 2 and 7 touched p2 (i % 5 == 2); 7 was denied.
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.contains("user-002") && stdout.contains("user-007") && stdout.contains("denied"),
        "{stdout}"
    );
    // Tampered: non-zero exit naming the record.
    let f = files(dir.path());
    let mut l = lines(&f[0]);
    l[1] = l[1].replace("reason 1", "reason X");
    write_lines(&f[0], &l);
    let out = std::process::Command::new(bin)
        .args(["audit", "verify", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&file_name(1)) && stderr.contains("line 2") && stderr.contains("seq 1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reads_of_patient_data_are_audited_with_the_local_user() {
    let bin = env!("CARGO_BIN_EXE_ward");
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap()));
    let store = ward::store::Store::open(dir.path().join("store"), clock).unwrap();
    let opts = ward::demo::DemoOptions {
        patients: 20,
        seed: 5,
    };
    ward::demo::run(&store, &dir.path().join("work"), &opts, None)
        .await
        .unwrap();
    let root = store.root().to_path_buf();
    let audit_dir = root.join("audit");
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .arg("--store")
            .arg(&root)
            .args(args)
            .env("USER", "alice")
            .output()
            .unwrap()
    };
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(&run(&[
        "get",
        "--set",
        "readmission_online",
        "--patient",
        "P0000001",
        "--as-of",
        "2020-06-01",
    ]));
    let rows = dir.path().join("rows.csv");
    std::fs::write(
        &rows,
        "patient_id,timestamp\nP0000001,2020-06-01\nP0000002,2020-06-01\n",
    )
    .unwrap();
    let training = ok(&run(&[
        "historical",
        "--set",
        "readmission",
        "--entities",
        rows.to_str().unwrap(),
    ]));
    let training = training.lines().last().unwrap().trim().to_string();
    let out = dir.path().join("encounters.parquet");
    ok(&run(&["export", "encounters", out.to_str().unwrap()]));
    // A read that fails is recorded too, with its outcome.
    assert!(
        !run(&["get", "--set", "no-such-set", "--patient", "P0000001"])
            .status
            .success()
    );

    let by_alice = audit::search(
        &audit_dir,
        &audit::QueryFilter {
            principal: Some("local:alice".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let recs: Vec<&AuditRecord> = by_alice.iter().map(|a| &a.record).collect();
    let rpcs: Vec<&str> = recs.iter().map(|r| r.entry.rpc.as_str()).collect();
    assert_eq!(
        rpcs,
        ["cli:get", "cli:historical", "cli:export", "cli:get"],
        "{recs:#?}"
    );
    assert!(recs
        .iter()
        .all(|r| r.entry.auth.as_deref() == Some("local")));
    assert_eq!(
        recs[0].entry.patients,
        Patients::Ids(vec!["P0000001".into()])
    );
    assert_eq!(recs[0].entry.outcome.as_deref(), Some("ok"));
    assert_eq!(
        recs[1].entry.training_set.as_deref(),
        Some(training.as_str())
    );
    assert!(
        matches!(recs[1].entry.patients, Patients::Bulk { count: 2, .. }),
        "{:?}",
        recs[1].entry.patients
    );
    assert_eq!(
        recs[1].entry.action.as_deref(),
        Some("historical_identified")
    );
    assert_eq!(recs[2].entry.datasets.len(), 1);
    assert_eq!(recs[3].entry.outcome.as_deref(), Some("error"));
    assert!(recs[3]
        .entry
        .error
        .as_deref()
        .unwrap()
        .contains("no-such-set"));
    let r = audit::verify(&audit_dir).unwrap();
    assert!(r.ok(), "{:?}", r.problem);
    // And by patient: alice's lookup of P0000001 (bulk reads are found through lineage).
    let p1 = audit::query(&audit_dir, "P0000001").unwrap();
    assert_eq!(p1.len(), 2, "the two gets");
}

/// A trail written by `ward` at 3cc77ba (before `AuditRecord` held its `AuditEntry`
/// flattened: `ward export`, a `ward get` of two patients, a `ward get` that failed) still
/// verifies, each line re-serialized to its exact bytes, and reads back field by field.
#[test]
fn a_trail_written_before_the_entry_was_flattened_still_verifies() {
    let fixture = crate::common::crate_dir().join("tests/fixtures/audit-3cc77ba");
    let dir = tempfile::tempdir().unwrap();
    for f in ["HEAD", "audit-000001.jsonl"] {
        std::fs::copy(fixture.join(f), dir.path().join(f)).unwrap();
    }
    let report = audit::verify(dir.path()).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, 3);
    let text = std::fs::read_to_string(dir.path().join("audit-000001.jsonl")).unwrap();
    let recs: Vec<AuditRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (line, rec) in text.lines().zip(&recs) {
        assert_eq!(serde_json::to_string(rec).unwrap(), line, "same bytes");
        assert_eq!(rec.hash, rec.compute_hash());
    }
    assert_eq!(recs[0].entry.rpc, "cli:export");
    assert_eq!(recs[1].entry.rpc, "cli:get");
    assert_eq!(
        recs[1].entry.patients,
        Patients::Ids(vec!["P0000001".into(), "P0000002".into()])
    );
    assert_eq!(recs[2].entry.outcome.as_deref(), Some("error"));
    assert!(recs[2].entry.error.is_some());
}
