//! Crash safety of every write path: `ward put`, `ward ingest`, `ward materialize`, `ward
//! historical` and `ward tag` killed with SIGKILL at random moments leave only complete
//! versions, each of which verifies; every version a finished process reported is there;
//! every head entry is whole; the audit trail (appended by `ward historical`) keeps its chain,
//! a torn last line reported and then sealed with its bytes kept.
//! `WARD_CRASH_TRIALS=1000 cargo test --test it crash` is the
//! longer soak (default: 50 puts, 8 trials of each other write).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use ward::store::{ListFilter, Store};

use crate::hash_props::random_batch;

#[tokio::test(flavor = "multi_thread")]
async fn killed_writers_leave_only_complete_versions() {
    let trials: usize = std::env::var("WARD_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let bin = env!("CARGO_BIN_EXE_ward");

    // A few different tables, so both new and already-stored content get interrupted.
    let mut files = Vec::new();
    let mut hashes = Vec::new();
    for i in 0..4u64 {
        let batch = random_batch(20_000, 1000 + i);
        hashes.push(ward::hash::hash_batches(&batch.schema(), [&batch]).unwrap());
        let path = dir.path().join(format!("t{i}.parquet"));
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        files.push(path);
    }
    let put = |i: usize| {
        Command::new(bin)
            .args(["--store"])
            .arg(&store_dir)
            .arg("put")
            .arg(&files[i])
            .args(["--name", &format!("crash{i}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Uninterrupted puts measure how long a write takes here (the median of three).
    let mut times = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        assert!(put(i).wait().unwrap().success());
        times.push(started.elapsed());
    }
    times.sort();
    let full = times[1].max(Duration::from_millis(50));

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut killed = 0;
    for trial in 0..trials {
        let mut child = put(trial % files.len());
        let wait = full.mul_f64(rng.random_range(0.0..1.0));
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        killed >= trials / 3,
        "only {killed} of {trials} writers were killed mid-write"
    );

    let store = Store::open_existing(&store_dir, ward::clock::system()).unwrap();
    let listed = store.list(&ListFilter::default()).unwrap();
    assert!(!listed.is_empty());
    for m in &listed {
        assert!(hashes.contains(&m.hash), "unexpected version {}", m.hash);
        store.verify(&m.hash).await.unwrap();
    }
    // Leftovers are removed by cleanup, and every table can still be written.
    store.cleanup().unwrap();
    assert_eq!(std::fs::read_dir(store_dir.join("tmp")).unwrap().count(), 0);
    for (i, _) in files.iter().enumerate() {
        assert!(put(i).wait().unwrap().success());
    }
    assert_eq!(
        store.list(&ListFilter::default()).unwrap().len(),
        files.len()
    );
}

/// One kind of write, killed at random moments.
struct Op {
    what: &'static str,
    args: Vec<String>,
}

/// Runs `ops` (round robin) `trials` times each, killing each process at a random moment of
/// an uninterrupted run's duration; returns the hashes that processes which finished
/// reported (their last stdout line) and how many were killed.
fn kill_trials(
    bin: &str,
    store: &std::path::Path,
    ops: &[Op],
    trials: usize,
    seed: u64,
) -> (Vec<String>, usize) {
    let run = |op: &Op| {
        Command::new(bin)
            .arg("--store")
            .arg(store)
            .args(&op.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut reported = Vec::new();
    let mut times = Vec::new();
    for op in ops {
        let started = Instant::now();
        let out = run(op).wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            op.what,
            String::from_utf8_lossy(&out.stderr)
        );
        times.push(started.elapsed());
        reported.extend(last_line(&out.stdout));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut killed = 0;
    for trial in 0..trials * ops.len() {
        let i = trial % ops.len();
        let mut child = run(&ops[i]);
        std::thread::sleep(times[i].mul_f64(rng.random_range(0.0..1.1)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            reported.extend(last_line(&out.stdout));
        } else {
            assert!(
                out.status.code().is_none(),
                "{} failed without being killed: {}",
                ops[i].what,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    (reported, killed)
}

fn last_line(stdout: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .last()
        .filter(|l| l.starts_with("b3:"))
        .map(str::to_string)
}

/// After the kills: every version verifies, every hash a finished process reported is
/// there, every head entry of every name is whole and names a stored version, and cleanup
/// leaves no leftover.
async fn check_after_crashes(store_dir: &std::path::Path, reported: &[String]) {
    let store = Store::open_existing(store_dir, ward::clock::system()).unwrap();
    let listed = store.list(&ListFilter::default()).unwrap();
    for m in &listed {
        store
            .verify(&m.hash)
            .await
            .unwrap_or_else(|e| panic!("{} ({}): {e}", m.hash, m.name));
    }
    for h in reported {
        assert!(
            listed.iter().any(|m| m.hash.to_string() == *h),
            "reported committed but missing: {h}"
        );
    }
    let names = store.names().unwrap();
    assert!(!names.is_empty());
    for name in &names {
        for head in store.head_log(name).unwrap() {
            store.manifest(&head.hash).unwrap();
        }
        store
            .resolve(&ward::store::VersionRef::Latest(name.clone()))
            .unwrap();
    }
    store.cleanup().unwrap();
    assert_eq!(std::fs::read_dir(store_dir.join("tmp")).unwrap().count(), 0);
    for name in &names {
        for entry in std::fs::read_dir(store_dir.join("refs").join(name)).unwrap() {
            let n = entry.unwrap().file_name();
            assert!(
                !n.to_string_lossy().starts_with(".tmp-"),
                "leftover {name}/{n:?}"
            );
        }
    }
}

/// Every write path, not just `ward put`: ingest, materialize, historical (training sets) and
/// tag moves, killed with SIGKILL at random moments. `WARD_CRASH_TRIALS=100 cargo test --test
/// it crash` runs 100 trials of each (the suite: 8).
#[tokio::test(flavor = "multi_thread")]
async fn killed_ingests_materializations_lookups_and_tags_lose_nothing() {
    let trials: usize = std::env::var("WARD_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let bin = env!("CARGO_BIN_EXE_ward");
    let opts = ward::synth::SynthOptions {
        patients: 60,
        seed: 9,
        chunk_size: 15,
        ..Default::default()
    };
    let files = ward::synth::write(
        &opts,
        ward::synth::SynthFormat::Hl7v2,
        &dir.path().join("hl7"),
        None,
    )
    .unwrap()
    .files;
    let features = crate::common::crate_dir().join("examples/features/readmission.toml");
    let s = |p: &std::path::Path| p.to_string_lossy().to_string();
    let ingest = |f: &std::path::Path| Op {
        what: "ingest",
        args: vec!["ingest".into(), "--format".into(), "hl7v2".into(), s(f)],
    };
    // The store starts with the first file ingested and a timeline.
    let (first, _) = kill_trials(bin, &store_dir, &[ingest(&files[0])], 0, 0);
    assert!(!first.is_empty());
    let materialize = Op {
        what: "materialize",
        args: vec![
            "materialize".into(),
            "--features".into(),
            s(&features),
            "--set".into(),
            "readmission".into(),
        ],
    };
    let (timeline, _) = kill_trials(bin, &store_dir, std::slice::from_ref(&materialize), 0, 0);
    let entities = dir.path().join("rows.csv");
    std::fs::write(
        &entities,
        "patient_id,timestamp\nP0000001,2020-01-01\nP0000002,2022-06-01T12:00:00Z\nP0000020,2024-01-01\n",
    )
    .unwrap();
    let ops = vec![
        ingest(&files[1]),
        ingest(&files[2]),
        ingest(&files[3]),
        materialize,
        Op {
            what: "historical",
            args: vec![
                "historical".into(),
                "--set".into(),
                "readmission".into(),
                "--entities".into(),
                s(&entities),
            ],
        },
        Op {
            what: "tag",
            args: vec!["tag".into(), "prod".into(), timeline[0].clone()],
        },
        Op {
            what: "tag",
            args: vec!["tag".into(), "prod".into(), first[0].clone()],
        },
    ];
    let (mut reported, killed) = kill_trials(bin, &store_dir, &ops, trials, 2027);
    assert!(
        killed >= trials * ops.len() / 4,
        "only {killed} of {} writers were killed mid-write",
        trials * ops.len()
    );
    reported.extend(first);
    reported.extend(timeline);
    check_after_crashes(&store_dir, &reported).await;
    // `ward historical` appends to the audit trail (a CLI read of patient data), so audit
    // appends were killed too: the chain holds, and the only problem allowed is a torn last
    // line, reported as such.
    let audit_dir = store_dir.join("audit");
    let after_kills = ward::security::audit::verify(&audit_dir).unwrap();
    assert!(
        after_kills.ok() || after_kills.torn.is_some(),
        "the audit trail is damaged beyond a torn last line: {:?}",
        after_kills.problem
    );
    assert!(after_kills.records > 0);
    // Every operation still completes after the crashes.
    let (again, _) = kill_trials(bin, &store_dir, &ops, 0, 0);
    assert!(again.len() >= ops.len() - 1, "{again:?}");
    check_after_crashes(&store_dir, &again).await;
    // The next writer sealed a torn line, keeping its bytes in the trail, never dropping
    // them silently.
    let sealed = ward::security::audit::verify(&audit_dir).unwrap();
    assert!(sealed.ok(), "{:?}", sealed.problem);
    if after_kills.torn.is_some() {
        assert!(!sealed.recovered.is_empty(), "the torn line was not kept");
    }
}
