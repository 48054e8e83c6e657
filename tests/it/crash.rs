//! Crash safety: `ward put` killed with SIGKILL at random moments leaves only complete
//! versions, each of which verifies. `WARD_CRASH_TRIALS=1000 cargo test --test it crash`
//! is the longer soak (default 50 trials).

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
