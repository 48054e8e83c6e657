//! Bucketed versions (`src/store/bucketed.rs`): a new version after a small change writes
//! only the changed buckets, shares the rest with its base, and has the hash of the same
//! content built in one go; every reader works on it; encrypted and S3 stores; racing
//! writers; cleanup.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use ward::clock::{ManualClock, SharedClock};
use ward::error::Error;
use ward::hash::bucketed::{bucket_of, hash_bucketed, split_into_buckets, Bucketing};
use ward::hash::ContentHash;
use ward::store::bucketed::BucketContent;
use ward::store::{HeadUpdate, Kind, PutOptions, Store};

const BUCKETS: u32 = 256;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("n", DataType::Int64, false),
        Field::new("note", DataType::Utf8, true),
    ]))
}

fn bucketing() -> Bucketing {
    Bucketing::new("patient_id", BUCKETS).unwrap()
}

/// Rows `(patient, n, note)` as a table sorted by patient then n (the canonical order).
fn table(rows: &BTreeMap<(String, i64), Option<String>>) -> RecordBatch {
    let ids: Vec<&str> = rows.keys().map(|k| k.0.as_str()).collect();
    let ns: Vec<i64> = rows.keys().map(|k| k.1).collect();
    let notes: Vec<Option<&str>> = rows.values().map(|v| v.as_deref()).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Int64Array::from(ns)),
            Arc::new(StringArray::from(notes)),
        ],
    )
    .unwrap()
}

/// 4,000 patients of 20 rows: 80,000 rows, five groups of buckets.
fn cohort() -> BTreeMap<(String, i64), Option<String>> {
    let mut rows = BTreeMap::new();
    for p in 0..4000 {
        for n in 0..20 {
            rows.insert((format!("P{p:07}"), n), Some(format!("note {p} {n}")));
        }
    }
    rows
}

/// The rows of the buckets of `patients` in `rows`, bucket by bucket (empty buckets too).
fn changed_buckets(
    rows: &BTreeMap<(String, i64), Option<String>>,
    patients: &[&str],
) -> BTreeMap<u32, RecordBatch> {
    let touched: BTreeSet<u32> = patients
        .iter()
        .map(|p| bucket_of(Some(p.as_bytes()), BUCKETS))
        .collect();
    let split: BTreeMap<u32, RecordBatch> =
        split_into_buckets(&schema(), &[table(rows)], &bucketing())
            .unwrap()
            .into_iter()
            .collect();
    touched
        .into_iter()
        .map(|b| {
            let rows = split
                .get(&b)
                .cloned()
                .unwrap_or_else(|| RecordBatch::new_empty(schema()));
            (b, rows)
        })
        .collect()
}

fn store_at(dir: &Path) -> Store {
    let clock: SharedClock = Arc::new(ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
    Store::open(dir.join("store"), clock).unwrap()
}

async fn put_whole(store: &Store, rows: &BTreeMap<(String, i64), Option<String>>) -> ContentHash {
    store
        .put_bucketed(
            schema(),
            BucketContent::Whole(vec![table(rows)]),
            None,
            bucketing(),
            PutOptions::new("t", Kind::Curated),
        )
        .await
        .unwrap()
        .manifest
        .hash
}

async fn put_change(
    store: &Store,
    base: &ContentHash,
    rows: &BTreeMap<(String, i64), Option<String>>,
    patients: &[&str],
) -> ward::store::PutOutcome {
    store
        .put_bucketed(
            schema(),
            BucketContent::Changed(changed_buckets(rows, patients)),
            Some(base),
            bucketing(),
            PutOptions::new("t", Kind::Curated),
        )
        .await
        .unwrap()
}

/// Every row of a version, sorted (the stored order is bucket order).
async fn sorted_rows(store: &Store, hash: &ContentHash) -> Vec<(String, i64, Option<String>)> {
    let (_, batches) = store.read(hash).await.unwrap();
    let mut out = Vec::new();
    for b in batches {
        let ids = b.column(0).as_string::<i32>();
        let ns = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        let notes = b.column(2).as_string::<i32>();
        for i in 0..b.num_rows() {
            out.push((
                ids.value(i).to_string(),
                ns.value(i),
                (!notes.is_null(i)).then(|| notes.value(i).to_string()),
            ));
        }
    }
    out.sort();
    out
}

fn expected(rows: &BTreeMap<(String, i64), Option<String>>) -> Vec<(String, i64, Option<String>)> {
    rows.iter()
        .map(|((p, n), v)| (p.clone(), *n, v.clone()))
        .collect()
}

/// Files under `dir` and their sizes, and how many are shared (hard links: more than one
/// name).
fn files(dir: &Path) -> (u64, u64, usize) {
    let (mut bytes, mut shared_bytes, mut shared) = (0, 0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.len();
                if m.nlink() > 1 {
                    shared += 1;
                    shared_bytes += m.len();
                }
            }
        }
    }
    (bytes, shared_bytes, shared)
}

/// A change, a new patient, a patient whose rows all go: the incremental version has the
/// hash of the same content put whole (and of `hash_bucketed`), reads back those rows,
/// verifies, and shares the untouched groups' files with its base.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_version_equals_the_one_built_in_one_go_and_shares_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let mut rows = cohort();
    let v1 = put_whole(&store, &rows).await;
    assert_eq!(store.verify(&v1).await.unwrap().rows, 80_000);

    rows.insert(("P0000007".into(), 99), Some("late".into()));
    rows.insert(("P0000007".into(), 3), None);
    rows.insert(("P9999999".into(), 0), Some("new patient".into()));
    rows.retain(|k, _| k.0 != "P0000500");
    let change = ["P0000007", "P9999999", "P0000500"];
    let put = put_change(&store, &v1, &rows, &change).await;
    assert!(put.created);
    let v2 = put.manifest.hash;
    assert_ne!(v1, v2);

    let (whole, _) = hash_bucketed(&schema(), &[table(&rows)], bucketing()).unwrap();
    assert_eq!(v2, whole, "the hash of the content, whatever the layout");
    let other = tempfile::tempdir().unwrap();
    let fresh = store_at(other.path());
    assert_eq!(put_whole(&fresh, &rows).await, v2, "built in one go");
    assert_eq!(store.manifest(&v2).unwrap().rows, rows.len() as u64);
    assert_eq!(sorted_rows(&store, &v2).await, expected(&rows));
    store.verify(&v2).await.unwrap();
    store.verify(&v1).await.unwrap();

    // The untouched groups' files are the base's (hard links).
    let data = store.root().join("versions").join(v2.hex()).join("data");
    let (_, _, shared) = files(&data);
    assert!(shared > 0, "no file shared with the base");

    // A change of one patient rewrites one group of five: most bytes are shared.
    rows.insert(("P0003000".into(), 7), Some("changed".into()));
    let v3 = put_change(&store, &v2, &rows, &["P0003000"])
        .await
        .manifest
        .hash;
    let (bytes, shared_bytes, _) =
        files(&store.root().join("versions").join(v3.hex()).join("data"));
    assert!(
        shared_bytes * 10 > bytes * 6,
        "{shared_bytes} of {bytes} bytes shared: the change rewrote most of the table"
    );
    store.verify(&v3).await.unwrap();
    assert_eq!(sorted_rows(&store, &v3).await, expected(&rows));
}

/// A re-sent bucket whose rows did not change writes nothing: the base is the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_changes_nothing_is_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let rows = cohort();
    let v1 = put_whole(&store, &rows).await;
    let before = std::fs::read_dir(store.root().join("versions"))
        .unwrap()
        .count();
    let put = put_change(&store, &v1, &rows, &["P0000001", "P0001234"]).await;
    assert!(!put.created);
    assert_eq!(put.manifest.hash, v1);
    let after = std::fs::read_dir(store.root().join("versions"))
        .unwrap()
        .count();
    assert_eq!(before, after);
}

/// The readers: dataset, scan_columns, scan_where, export, and a version bucketed another
/// way (or not at all) is not a base to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_work_on_an_incremental_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let mut rows = cohort();
    let v1 = put_whole(&store, &rows).await;
    rows.insert(("P0000042".into(), 100), Some("x".into()));
    let v2 = put_change(&store, &v1, &rows, &["P0000042"])
        .await
        .manifest
        .hash;

    let ds = store.dataset(&v2).await.unwrap();
    assert_eq!(ds.count_rows(None).await.unwrap(), rows.len());
    let mut seen = 0;
    let projected = store
        .scan_columns(&v2, Some(&["n".to_string()]), |b| {
            seen += b.num_rows();
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(projected.fields().len(), 1);
    assert_eq!(seen, rows.len());
    let mut hits = Vec::new();
    store
        .scan_where(
            &v2,
            None,
            Some(datafusion::prelude::col("patient_id").eq(datafusion::prelude::lit("P0000042"))),
            |b| {
                hits.push(b.num_rows());
                Ok(())
            },
        )
        .await
        .unwrap();
    assert_eq!(hits.iter().sum::<usize>(), 21);
    let out = dir.path().join("v2.parquet");
    assert_eq!(
        store.export_parquet(&v2, &out).await.unwrap(),
        rows.len() as u64
    );

    // A base that is not bucketed cannot take a change of some buckets.
    let plain = store
        .put_batches(
            schema(),
            vec![table(&rows)],
            PutOptions::new("u", Kind::Other),
        )
        .await
        .unwrap()
        .manifest
        .hash;
    let e = store
        .put_bucketed(
            schema(),
            BucketContent::Changed(changed_buckets(&rows, &["P0000042"])),
            Some(&plain),
            bucketing(),
            PutOptions::new("u", Kind::Other),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bucketed the same way"), "{e}");
}

/// Several incremental versions, then cleanup: every version still verifies and reads back,
/// and removing the oldest versions' directories (their files still linked from the newer
/// ones) breaks nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_keeps_every_file_a_live_version_uses() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let mut rows = cohort();
    let mut versions = vec![(put_whole(&store, &rows).await, expected(&rows))];
    for i in 0..4i64 {
        let p = format!("P{:07}", i * 397);
        rows.insert((p.clone(), 1000 + i), Some(format!("change {i}")));
        let base = versions.last().unwrap().0;
        let v = put_change(&store, &base, &rows, &[p.as_str()])
            .await
            .manifest
            .hash;
        versions.push((v, expected(&rows)));
    }
    store.cleanup().unwrap();
    for (v, want) in &versions {
        store.verify(v).await.unwrap();
        assert_eq!(&sorted_rows(&store, v).await, want);
    }
    // The first version's own directory gone (as a user deleting old versions would): the
    // later versions hold their files themselves.
    std::fs::remove_dir_all(store.root().join("versions").join(versions[0].0.hex())).unwrap();
    for (v, want) in &versions[1..] {
        store.verify(v).await.unwrap();
        assert_eq!(&sorted_rows(&store, v).await, want);
    }
}

/// A damaged layout file is reported by verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_changed_layout_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let v1 = put_whole(&store, &cohort()).await;
    let path = store
        .root()
        .join("versions")
        .join(v1.hex())
        .join(ward::store::bucketed::LAYOUT_FILE);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replacen("\"groups\":[[", "\"groups\":[[1", 1);
    std::fs::write(&path, text).unwrap();
    let e = store.verify(&v1).await.unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { what, .. } if what.contains("buckets.json")),
        "{e}"
    );
}

/// Writers racing to change the same head: each builds on the head it read and publishes
/// by compare-and-swap, redoing its change on the new head when it lost. No committed
/// change is lost and every version verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_lose_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let v1 = put_whole(&store, &cohort()).await;
    let mut tasks = Vec::new();
    for w in 0..4i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let patient = format!("P{:07}", 100 + w * 311);
            loop {
                let head = store.head("t").unwrap().unwrap();
                // This writer's change on the head's content.
                let mut rows: BTreeMap<(String, i64), Option<String>> = BTreeMap::new();
                for r in sorted_rows(&store, &head.hash).await {
                    rows.insert((r.0, r.1), r.2);
                }
                rows.insert((patient.clone(), 500 + w), Some(format!("writer {w}")));
                let mut opts = PutOptions::new("t", Kind::Curated);
                opts.head = HeadUpdate::Expect(Some(head.seq));
                match store
                    .put_bucketed(
                        schema(),
                        BucketContent::Changed(changed_buckets(&rows, &[patient.as_str()])),
                        Some(&head.hash),
                        bucketing(),
                        opts,
                    )
                    .await
                {
                    Ok(put) => return put.manifest.hash,
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => panic!("writer {w}: {e}"),
                }
            }
        }));
    }
    let mut committed = Vec::new();
    for t in tasks {
        committed.push(t.await.unwrap());
    }
    let head = store.head("t").unwrap().unwrap().hash;
    let rows = sorted_rows(&store, &head).await;
    for w in 0..4i64 {
        assert!(
            rows.iter().any(|r| r.1 == 500 + w),
            "writer {w}'s change is lost"
        );
    }
    assert_eq!(rows.len(), 80_004);
    store.verify(&v1).await.unwrap();
    for v in committed {
        store.verify(&v).await.unwrap();
    }
}

/// An encrypted store: the same hashes as a plain one, shared files, verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_store_shares_and_verifies_the_same() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ward.key");
    std::fs::write(&key, ward::security::keyring::Kek::generate_hex().unwrap()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let provider = ward::security::keyring::KeyProvider::File(key);
    let clock: SharedClock = Arc::new(ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
    let store = Store::init(dir.path().join("enc"), clock, Some(&provider)).unwrap();
    let mut rows = cohort();
    let v1 = put_whole(&store, &rows).await;
    rows.insert(("P0000042".into(), 100), Some("x".into()));
    let v2 = put_change(&store, &v1, &rows, &["P0000042"])
        .await
        .manifest
        .hash;
    let plain = tempfile::tempdir().unwrap();
    assert_eq!(put_whole(&store_at(plain.path()), &rows).await, v2);
    store.verify(&v1).await.unwrap();
    store.verify(&v2).await.unwrap();
    assert_eq!(sorted_rows(&store, &v2).await, expected(&rows));
    let (_, _, shared) = files(&store.root().join("versions").join(v2.hex()).join("data"));
    assert!(shared > 0);
    // No plaintext patient id in the layout file.
    let layout = std::fs::read(
        store
            .root()
            .join("versions")
            .join(v2.hex())
            .join(ward::store::bucketed::LAYOUT_FILE),
    )
    .unwrap();
    assert!(!String::from_utf8_lossy(&layout).contains("\"groups\""));
}

/// In object storage (the moto server of `.ci/s3.sh`): the same hashes, readers and verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_store_gives_the_same_hashes() {
    let Some(bucket) = std::env::var("WARD_TEST_S3_BUCKET")
        .ok()
        .filter(|b| !b.trim().is_empty())
    else {
        if std::env::var("WARD_REQUIRE_S3").as_deref() == Ok("1") {
            panic!("WARD_REQUIRE_S3=1 but WARD_TEST_S3_BUCKET is unset");
        }
        eprintln!("SKIP: no S3 server (WARD_TEST_S3_BUCKET is unset)");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let location = format!(
        "s3://{}/it/bucketed-{}-{nanos}",
        bucket.trim(),
        std::process::id()
    );
    let store = Store::open(&location, ward::clock::system()).unwrap();
    let mut rows = cohort();
    let v1 = put_whole(&store, &rows).await;
    rows.insert(("P0000042".into(), 100), Some("x".into()));
    let v2 = put_change(&store, &v1, &rows, &["P0000042"])
        .await
        .manifest
        .hash;
    let local = tempfile::tempdir().unwrap();
    assert_eq!(put_whole(&store_at(local.path()), &rows).await, v2);
    store.verify(&v1).await.unwrap();
    store.verify(&v2).await.unwrap();
    assert_eq!(sorted_rows(&store, &v2).await, expected(&rows));
    store.cleanup().unwrap();
    store.verify(&v2).await.unwrap();
}
