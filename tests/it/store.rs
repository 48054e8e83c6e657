//! The version store: put, dedupe, resolve, tags, verify and tamper detection, export,
//! concurrent writers.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, Duration, Utc};
use ward::clock::{ManualClock, SharedClock};
use ward::error::Error;
use ward::hash::hash_batches;
use ward::store::{Kind, ListFilter, PutOptions, Store, VersionRef};

use crate::hash_props::random_batch;

pub(crate) fn t0() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn small(ids: &[&str], n: i64) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("patient_id", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
        ])),
        vec![
            Arc::new(StringArray::from(ids.to_vec())),
            Arc::new(Int64Array::from(vec![n; ids.len()])),
        ],
    )
    .unwrap()
}

fn store_at(dir: &std::path::Path) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let shared: SharedClock = clock.clone();
    (Store::open(dir.join("store"), shared).unwrap(), clock)
}

#[tokio::test]
async fn put_then_read_back_the_same_rows_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_at(dir.path());
    let batch = random_batch(300, 42);
    let parts: Vec<RecordBatch> = (0..3).map(|i| batch.slice(i * 100, 100)).collect();
    let out = store
        .put_batches(
            batch.schema(),
            parts,
            PutOptions::new("random", Kind::Other),
        )
        .await
        .unwrap();
    assert!(out.created);
    let m = out.manifest;
    assert_eq!(m.hash, hash_batches(&batch.schema(), [&batch]).unwrap());
    assert_eq!(m.rows, 300);
    assert_eq!(m.created_at, t0());
    assert_eq!(m.ward_version, ward::VERSION);
    assert_eq!(m.schema.len(), batch.num_columns());
    assert!(m.bytes > 0 && !m.files.is_empty());

    let (schema, batches) = store.read(&m.hash).await.unwrap();
    let back = arrow::compute::concat_batches(&schema, &batches).unwrap();
    assert_eq!(back.num_rows(), 300);
    assert_eq!(hash_batches(&schema, &batches).unwrap(), m.hash);
    assert_eq!(store.verify(&m.hash).await.unwrap().rows, 300);
}

#[tokio::test]
async fn same_content_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = store_at(dir.path());
    let b = small(&["p1", "p2"], 1);
    let first = store
        .put_batches(
            b.schema(),
            vec![b.clone()],
            PutOptions::new("enc", Kind::Curated),
        )
        .await
        .unwrap();
    clock.advance(Duration::hours(1));
    // Same rows, split differently, under another name.
    let again = store
        .put_batches(
            b.schema(),
            vec![b.slice(0, 1), b.slice(1, 1)],
            PutOptions::new("enc-copy", Kind::Curated),
        )
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.manifest.hash, first.manifest.hash);
    assert_eq!(
        again.manifest.created_at,
        t0(),
        "the existing version is returned"
    );
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 1);
    // The second name reaches it through a tag.
    let via_tag = store.resolve(&"enc-copy".parse().unwrap()).unwrap();
    assert_eq!(via_tag.hash, first.manifest.hash);
    let tmp_left = std::fs::read_dir(store.root().join("tmp")).unwrap().count();
    assert_eq!(tmp_left, 0, "no temporary files remain");
}

#[tokio::test]
async fn names_resolve_to_latest_and_as_of_time_and_tags_move() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = store_at(dir.path());
    let put = |n: i64| {
        let b = small(&["p1"], n);
        let store = store.clone();
        async move {
            store
                .put_batches(b.schema(), vec![b], PutOptions::new("labs", Kind::Curated))
                .await
                .unwrap()
                .manifest
        }
    };
    let v1 = put(1).await;
    clock.advance(Duration::days(1));
    let v2 = put(2).await;
    let r = |s: &str| store.resolve(&s.parse::<VersionRef>().unwrap());
    assert_eq!(r("labs").unwrap().hash, v2.hash);
    assert_eq!(r("labs@2026-01-01T12:00:00Z").unwrap().hash, v1.hash);
    assert_eq!(r("labs@2026-01-02").unwrap().hash, v2.hash);
    assert!(matches!(r("labs@2025-12-31"), Err(Error::NotFound { .. })));
    assert!(matches!(r("nothing"), Err(Error::NotFound { .. })));
    let prefix = format!("b3:{}", &v1.hash.hex()[..12]);
    assert_eq!(r(&prefix).unwrap().hash, v1.hash);

    clock.advance(Duration::days(1));
    store.tag("prod", &v1.hash).unwrap();
    clock.advance(Duration::days(1));
    store.tag("prod", &v2.hash).unwrap();
    assert_eq!(r("prod").unwrap().hash, v2.hash);
    assert_eq!(r("prod@2026-01-03T12:00:00Z").unwrap().hash, v1.hash);
    let missing = format!("b3:{}", "0".repeat(64)).parse().unwrap();
    assert!(matches!(
        store.tag("prod", &missing),
        Err(Error::NotFound { .. })
    ));

    let curated = store
        .list(&ListFilter {
            kind: Some(Kind::Curated),
            name: Some("labs".into()),
        })
        .unwrap();
    assert_eq!(curated.len(), 2);
    assert_eq!(curated[0].hash, v2.hash, "newest first");
    assert!(store
        .list(&ListFilter {
            kind: Some(Kind::Training),
            name: None
        })
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn concurrent_writers_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_at(dir.path());
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Writers 0-3 write distinct content; 4-7 all write the same table.
            let n = if i < 4 { i } else { 100 };
            let b = small(&["p1", "p2", "p3"], n);
            store
                .put_batches(
                    b.schema(),
                    vec![b],
                    PutOptions::new(format!("w{i}"), Kind::Other),
                )
                .await
                .unwrap()
                .manifest
                .hash
        }));
    }
    let mut hashes = Vec::new();
    for t in tasks {
        hashes.push(t.await.unwrap());
    }
    let same: std::collections::BTreeSet<_> = hashes[4..].iter().collect();
    assert_eq!(same.len(), 1, "writers of the same content get one hash");
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 5);
    for h in &hashes {
        store.verify(h).await.unwrap();
    }
}

#[tokio::test]
async fn one_changed_byte_anywhere_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_at(dir.path());
    let b = random_batch(500, 7);
    let m = store
        .put_batches(b.schema(), vec![b], PutOptions::new("t", Kind::Other))
        .await
        .unwrap()
        .manifest;
    let vdir = store.root().join("versions").join(m.hash.hex());
    // Every stored file, and the manifest: flip one byte, verify must fail naming what.
    let mut targets: Vec<(std::path::PathBuf, String)> = m
        .files
        .iter()
        .map(|f| (vdir.join("data").join(&f.path), f.path.clone()))
        .collect();
    targets.push((vdir.join("manifest.json"), "manifest".into()));
    for (path, what) in targets {
        let original = std::fs::read(&path).unwrap();
        let mut bytes = original.clone();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = store.verify(&m.hash).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Corrupt { .. }), "{what}: {msg}");
        assert!(
            msg.contains(&m.hash.to_string()),
            "names the version: {msg}"
        );
        if what != "manifest" {
            assert!(msg.contains(&what), "names the file: {msg}");
        }
        std::fs::write(&path, &original).unwrap();
        store.verify(&m.hash).await.unwrap();
    }
    // An edited manifest field that still parses.
    let mpath = vdir.join("manifest.json");
    let original = std::fs::read_to_string(&mpath).unwrap();
    std::fs::write(
        &mpath,
        original.replacen("\"rows\": 500", "\"rows\": 499", 1),
    )
    .unwrap();
    let err = store.verify(&m.hash).await.unwrap_err().to_string();
    assert!(err.contains("edited"), "{err}");
    std::fs::write(&mpath, &original).unwrap();
    // A deleted data file.
    let victim = vdir.join("data").join(&m.files[0].path);
    std::fs::remove_file(&victim).unwrap();
    let err = store.verify(&m.hash).await.unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");
}

#[tokio::test]
async fn export_writes_parquet_that_hashes_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_at(dir.path());
    let b = random_batch(250, 9);
    let m = store
        .put_batches(b.schema(), vec![b], PutOptions::new("t", Kind::Other))
        .await
        .unwrap()
        .manifest;
    let out = dir.path().join("t.parquet");
    assert_eq!(store.export_parquet(&m.hash, &out).await.unwrap(), 250);
    let file = std::fs::File::open(&out).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let schema = batches[0].schema();
    assert_eq!(hash_batches(&schema, &batches).unwrap(), m.hash);
    // And the Parquet file goes back in as the same version.
    let again = store
        .put_parquet(&out, PutOptions::new("t", Kind::Other))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.manifest.hash, m.hash);
}

#[tokio::test]
async fn empty_tables_and_bad_names_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_at(dir.path());
    let b = small(&[], 0);
    let m = store
        .put_batches(b.schema(), vec![], PutOptions::new("empty", Kind::Other))
        .await
        .unwrap()
        .manifest;
    assert_eq!(m.rows, 0);
    store.verify(&m.hash).await.unwrap();
    let err = store
        .put_batches(b.schema(), vec![], PutOptions::new("bad/name", Kind::Other))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    // A directory that is not a store is refused, not clobbered.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let err = Store::open(&other, ward::clock::system()).unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");
}

#[tokio::test]
async fn cleanup_removes_only_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_at(dir.path());
    let tmp = store.root().join("tmp");
    // A leftover of a killed writer: a directory and an unlocked lock file.
    std::fs::create_dir(tmp.join("put-dead")).unwrap();
    std::fs::write(tmp.join("put-dead").join("junk"), b"x").unwrap();
    std::fs::write(tmp.join("put-dead.lock"), b"").unwrap();
    // A write in progress: its lock is held.
    std::fs::create_dir(tmp.join("put-live")).unwrap();
    let live = std::fs::File::create(tmp.join("put-live.lock")).unwrap();
    live.lock().unwrap();
    let report = store.cleanup().unwrap();
    assert_eq!(report.removed, vec!["put-dead".to_string()]);
    assert_eq!(report.in_use, vec!["put-live".to_string()]);
    assert!(!tmp.join("put-dead").exists());
    assert!(tmp.join("put-live").exists());
}

/// Regression: a put that deduplicated onto content stored under another name used to
/// create a tag, and tags won name resolution, so every later version put under that name
/// was never returned. Now a name means its head, and every put moves it.
#[tokio::test]
async fn a_name_put_after_dedup_still_resolves_to_its_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = store_at(dir.path());
    let a = small(&["p1"], 1);
    store
        .put_batches(
            a.schema(),
            vec![a.clone()],
            PutOptions::new("x", Kind::Other),
        )
        .await
        .unwrap();
    clock.advance(Duration::hours(1));
    // Same content under "y": deduplicated onto x's version.
    let dup = store
        .put_batches(
            a.schema(),
            vec![a.clone()],
            PutOptions::new("y", Kind::Other),
        )
        .await
        .unwrap();
    assert!(!dup.created);
    clock.advance(Duration::hours(1));
    let b = small(&["p1"], 2);
    let newer = store
        .put_batches(b.schema(), vec![b], PutOptions::new("y", Kind::Other))
        .await
        .unwrap();
    let r = |s: &str| {
        store
            .resolve(&s.parse::<VersionRef>().unwrap())
            .unwrap()
            .hash
    };
    assert_eq!(r("y"), newer.manifest.hash, "y means its newest put");
    assert_eq!(r("y@2026-01-01T01:30:00Z"), dup.manifest.hash);
    assert_eq!(r("x"), dup.manifest.hash);
    // Putting the old content again makes it the head again (a put is a head move).
    clock.advance(Duration::hours(1));
    store
        .put_batches(a.schema(), vec![a], PutOptions::new("y", Kind::Other))
        .await
        .unwrap();
    assert_eq!(r("y"), dup.manifest.hash);
    let named = store
        .list(&ListFilter {
            kind: None,
            name: Some("y".into()),
        })
        .unwrap();
    assert_eq!(named.len(), 2, "both versions y ever meant");
}

/// A put that expects the head it built on fails with a conflict when another writer moved
/// the head, and stores the version without making it the head.
#[tokio::test]
async fn a_put_on_a_moved_head_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_at(dir.path());
    let put = |n: i64, head: ward::store::HeadUpdate| {
        let b = small(&["p1"], n);
        let store = store.clone();
        async move {
            let mut opts = PutOptions::new("enc", Kind::Curated);
            opts.head = head;
            store.put_batches(b.schema(), vec![b], opts).await
        }
    };
    use ward::store::HeadUpdate;
    let first = put(1, HeadUpdate::Expect(None)).await.unwrap();
    assert_eq!(first.head.map(|h| h.seq), Some(1));
    // Two writers both built on entry 1: one wins, the other conflicts.
    let won = put(2, HeadUpdate::Expect(Some(1))).await.unwrap();
    let lost = put(3, HeadUpdate::Expect(Some(1))).await;
    assert!(
        matches!(lost, Err(Error::Conflict { .. })),
        "{:?}",
        lost.map(|o| o.manifest.hash)
    );
    let head = store.resolve(&VersionRef::Latest("enc".into())).unwrap();
    assert_eq!(head.hash, won.manifest.hash);
    assert_eq!(store.head("enc").unwrap().map(|h| h.seq), Some(2));
}

/// A store written by the previous format (tags in `tags/*.jsonl`, untagged names resolved
/// to their newest version) opens with every name and `name@time` meaning what it meant.
#[tokio::test]
async fn a_format_1_store_is_migrated_keeping_what_names_meant() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = store_at(dir.path());
    let mut hashes = Vec::new();
    for n in 1..=3 {
        let b = small(&["p1"], n);
        hashes.push(
            store
                .put_batches(b.schema(), vec![b], PutOptions::new("labs", Kind::Curated))
                .await
                .unwrap()
                .manifest
                .hash,
        );
        clock.advance(Duration::days(1));
    }
    // Rewrite the store as format 1 wrote it: no refs, a tag file, the old marker.
    let root = store.root().to_path_buf();
    std::fs::remove_dir_all(root.join("refs")).unwrap();
    std::fs::create_dir_all(root.join("tags")).unwrap();
    let line =
        |h: &ward::hash::ContentHash, at: &str| format!("{{\"hash\":\"{h}\",\"at\":\"{at}\"}}\n");
    std::fs::write(
        root.join("tags/prod.jsonl"),
        line(&hashes[0], "2026-01-02T12:00:00Z") + &line(&hashes[2], "2026-01-05T00:00:00Z"),
    )
    .unwrap();
    std::fs::write(
        root.join("ward-store.json"),
        r#"{"ward_store_format":1,"created_by":"0.1.0"}"#,
    )
    .unwrap();
    let reopened = Store::open_existing(&root, store.clock().clone()).unwrap();
    let r = |s: &str| {
        reopened
            .resolve(&s.parse::<VersionRef>().unwrap())
            .unwrap()
            .hash
    };
    assert_eq!(r("labs"), hashes[2]);
    assert_eq!(r("labs@2026-01-01T12:00:00Z"), hashes[0]);
    assert_eq!(r("labs@2026-01-02T12:00:00Z"), hashes[1]);
    assert_eq!(r("prod"), hashes[2]);
    assert_eq!(r("prod@2026-01-03"), hashes[0]);
    assert!(root.join("tags-format-1/prod.jsonl").exists());
    assert!(!root.join("tags").exists());
    let marker = std::fs::read_to_string(root.join("ward-store.json")).unwrap();
    assert!(marker.contains("\"ward_store_format\":2"), "{marker}");
}
