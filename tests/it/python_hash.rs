//! The hash is reimplementable: `examples/python/verify_hash.py` (pyarrow + blake3, written
//! from docs/hashing.md) recomputes the hash of exported versions. Skips when python3 lacks
//! pyarrow or blake3, except in CI (`WARD_REQUIRE_PYTHON=1`), where that fails.

use std::process::Command;

use ward::store::{Kind, PutOptions, Store};

use crate::hash_props::random_batch;

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pyarrow, blake3"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("WARD_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "python3 with pyarrow and blake3 is required (WARD_REQUIRE_PYTHON=1)"
        );
        eprintln!("SKIP: python3 with pyarrow and blake3 not found (pip install pyarrow blake3)");
    }
    ok
}

/// Stores `batch`, exports it to `dir/NAME.parquet` and writes its manifest to
/// `dir/NAME.json`: what `verify_hash.py --manifest` reads.
async fn export(
    store: &Store,
    dir: &std::path::Path,
    batch: arrow::array::RecordBatch,
    name: &str,
) -> (
    ward::store::Manifest,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let m = store
        .put_batches(
            batch.schema(),
            vec![batch],
            PutOptions::new("py", Kind::Other),
        )
        .await
        .unwrap()
        .manifest;
    let out = dir.join(format!("{name}.parquet"));
    store.export_parquet(&m.hash, &out).await.unwrap();
    let mpath = dir.join(format!("{name}.json"));
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    (m, out, mpath)
}

#[tokio::test]
async fn python_recomputes_exported_hashes() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), ward::clock::system()).unwrap();
    let script = crate::common::crate_dir().join("examples/python/verify_hash.py");
    for (rows, seed) in [(0usize, 1u64), (1, 2), (777, 3)] {
        let batch = random_batch(rows, seed);
        let (m, out, mpath) = export(&store, dir.path(), batch, &seed.to_string()).await;
        let run = Command::new("python3")
            .arg(&script)
            .arg(&out)
            .args(["--manifest"])
            .arg(&mpath)
            .args(["--expect", &m.hash.to_string()])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "python disagrees for {rows} rows: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&run.stdout).trim(),
            m.hash.to_string()
        );
    }
    // A wrong expectation is reported as a mismatch (the check can fail).
    let out = dir.path().join("3.parquet");
    let wrong = format!("b3:{}", "0".repeat(64));
    let run = Command::new("python3")
        .arg(&script)
        .arg(&out)
        .args(["--manifest"])
        .arg(dir.path().join("3.json"))
        .args(["--expect", &wrong])
        .output()
        .unwrap();
    assert!(!run.status.success());
}

/// The bucketed hash (encoding 3, `ward::hash::bucketed`) is reimplementable too:
/// `verify_hash.py --bucket-key COLUMN --buckets B` recomputes it from an export, including
/// rows with a null key and buckets left empty.
#[tokio::test]
async fn python_recomputes_bucketed_hashes() {
    use ward::hash::bucketed::{hash_bucketed, Bucketing};
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), ward::clock::system()).unwrap();
    let script = crate::common::crate_dir().join("examples/python/verify_hash.py");
    for (rows, seed, buckets) in [(0usize, 11u64, 4u32), (300, 12, 16), (500, 13, 1024)] {
        let batch = random_batch(rows, seed);
        let (bucketed, _) = hash_bucketed(
            &batch.schema(),
            std::slice::from_ref(&batch),
            Bucketing::new("s", buckets).unwrap(),
        )
        .unwrap();
        let (m, out, mpath) = export(&store, dir.path(), batch, &format!("b{seed}")).await;
        assert_ne!(m.hash, bucketed, "encoding 3 differs from encoding 2");
        let run = Command::new("python3")
            .arg(&script)
            .arg(&out)
            .args(["--manifest"])
            .arg(&mpath)
            .args(["--bucket-key", "s", "--buckets", &buckets.to_string()])
            .args(["--expect", &bucketed.to_string()])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "python disagrees for {rows} rows in {buckets} buckets: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}
