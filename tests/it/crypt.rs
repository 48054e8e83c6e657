//! Encryption at rest (`docs/encryption.md`): `EncryptedStore` over object_store's real
//! local-directory and in-memory stores, key providers, rotation, and a Lance dataset
//! written and read through `LanceEncryption`.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use futures::TryStreamExt;
use lance::dataset::builder::DatasetBuilder;
use lance::dataset::{WriteMode, WriteParams};
use lance::Dataset;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use proptest::prelude::*;
use ward::hash::hash_batches;
use ward::security::keyring::{Kek, KeyProvider, Keyring};
use ward::store::crypt::{
    self, ciphertext_len, EncryptedStore, LanceEncryption, BLOCK_SIZE, HEADER_LEN, MAGIC,
    SEALED_BLOCK_LEN,
};

const B: usize = BLOCK_SIZE;

fn kek(byte: u8) -> Kek {
    Kek::from_bytes(&[byte; 32], format!("test key {byte}")).expect("key")
}

fn keyring(byte: u8) -> Keyring {
    Keyring::new(kek(byte))
}

/// Bytes that are not all alike, so a block moved or misplaced shows.
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn local(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(dir).expect("local store"))
}

async fn get_all(store: &dyn ObjectStore, path: &Path) -> object_store::Result<Bytes> {
    store.get(path).await?.bytes().await
}

async fn round_trips(inner: Arc<dyn ObjectStore>) {
    let store = EncryptedStore::wrap(inner.clone(), keyring(1));
    let sizes = [
        0,
        1,
        100,
        B - 1,
        B,
        B + 1,
        3 * B,
        3 * B + 5,
        (1 << 20) + 123,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let path = Path::from(format!("objects/{i}"));
        let plain = data(size, i as u8);
        store
            .put(&path, PutPayload::from(plain.clone()))
            .await
            .expect("put");
        assert_eq!(get_all(store.as_ref(), &path).await.expect("get"), plain);
        assert_eq!(store.head(&path).await.expect("head").size, size as u64);
        let stored = get_all(inner.as_ref(), &path).await.expect("raw get");
        assert_eq!(stored.len() as u64, ciphertext_len(size as u64));
        assert_eq!(&stored[..8], &MAGIC);
        if size >= 64 {
            let probe = &plain[size / 2 - 32..size / 2];
            assert!(
                !stored.windows(32).any(|w| w == probe),
                "plaintext bytes found in the stored object of {size} bytes"
            );
        }
        if size > 0 {
            let r = store
                .get_range(&path, size as u64 - 1..size as u64)
                .await
                .expect("last byte");
            assert_eq!(&r[..], &plain[size - 1..]);
        }
    }
    let mut listed: Vec<(String, u64)> = store
        .list(Some(&Path::from("objects")))
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect()
        .await
        .expect("list");
    listed.sort();
    let mut expected: Vec<(String, u64)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| (format!("objects/{i}"), s as u64))
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "list reports plaintext sizes");
    let delimited = store
        .list_with_delimiter(Some(&Path::from("objects")))
        .await
        .expect("list with delimiter");
    assert_eq!(delimited.objects.len(), sizes.len());

    // Copy and rename keep an object readable: the header, not the path, names its key.
    let from = Path::from("objects/3");
    store
        .copy(&from, &Path::from("copied/3"))
        .await
        .expect("copy");
    store
        .rename(&Path::from("copied/3"), &Path::from("renamed/3"))
        .await
        .expect("rename");
    assert_eq!(
        get_all(store.as_ref(), &Path::from("renamed/3"))
            .await
            .expect("get renamed"),
        data(B - 1, 3)
    );
}

#[tokio::test]
async fn round_trips_in_memory() {
    round_trips(Arc::new(InMemory::new())).await;
}

#[tokio::test]
async fn round_trips_in_a_local_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    round_trips(local(dir.path())).await;
}

#[tokio::test]
async fn create_mode_passes_through() {
    let store = EncryptedStore::wrap(Arc::new(InMemory::new()), keyring(1));
    let path = Path::from("_versions/1.manifest");
    let create = || object_store::PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    store
        .put_opts(&path, PutPayload::from_static(b"first"), create())
        .await
        .expect("first create");
    let second = store
        .put_opts(&path, PutPayload::from_static(b"second"), create())
        .await
        .expect_err("second create must fail");
    assert!(
        matches!(second, object_store::Error::AlreadyExists { .. }),
        "{second:?}"
    );
    assert_eq!(
        &get_all(store.as_ref(), &path).await.expect("get")[..],
        b"first"
    );
}

#[tokio::test]
async fn multipart_uploads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = local(dir.path());
    for (name, min_part, parts) in [
        (
            "odd",
            100_000usize,
            vec![1usize, 0, B - 1, 2, 3 * B + 7, 200_000, 5],
        ),
        ("aligned", 1, vec![B, B, 2 * B]),
        ("empty", 1, vec![]),
        ("one-small-part", crypt::DEFAULT_MIN_PART, vec![10]),
    ] {
        let store: Arc<dyn ObjectStore> =
            Arc::new(EncryptedStore::new(inner.clone(), keyring(1)).with_min_part_size(min_part));
        let path = Path::from(format!("multipart/{name}"));
        let total: usize = parts.iter().sum();
        let plain = data(total, 9);
        let mut upload = store.put_multipart(&path).await.expect("start");
        let mut at = 0;
        let mut pending = Vec::new();
        for len in parts {
            pending.push(upload.put_part(PutPayload::from(plain[at..at + len].to_vec())));
            at += len;
        }
        for p in pending {
            p.await.expect("part");
        }
        upload.complete().await.expect("complete");
        assert_eq!(
            get_all(store.as_ref(), &path).await.expect("get"),
            plain,
            "{name}"
        );
        let stored = std::fs::metadata(dir.path().join("multipart").join(name))
            .expect("stored file")
            .len();
        assert_eq!(stored, ciphertext_len(total as u64), "{name}");
        // A fresh store (no cached key) reads it too.
        let fresh = EncryptedStore::wrap(inner.clone(), keyring(1));
        if total > 0 {
            let r = fresh
                .get_range(&path, total as u64 / 2..total as u64)
                .await
                .expect("range");
            assert_eq!(&r[..], &plain[total / 2..], "{name}");
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A size or offset near a block boundary, or anywhere.
fn near_boundary(max_blocks: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        (0..=max_blocks, -2i64..=2).prop_map(|(b, d)| ((b * B) as i64 + d).max(0) as usize),
        0..max_blocks * B + 3,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Ranged reads (bounded, offset, suffix, and several at once) return exactly the
    /// plaintext bytes asked for, with and without the object's key cached.
    #[test]
    fn ranged_reads_at_block_boundaries(
        size in near_boundary(5),
        a in near_boundary(5),
        b in near_boundary(5),
        suffix in near_boundary(5),
        cold in any::<bool>(),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let writer = EncryptedStore::wrap(inner.clone(), keyring(3));
            let path = Path::from("p");
            let plain = data(size, 5);
            writer.put(&path, PutPayload::from(plain.clone())).await.expect("put");
            let store = if cold { EncryptedStore::wrap(inner.clone(), keyring(3)) } else { writer };
            let size = size as u64;
            let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
            if lo < hi && lo < size {
                let r = store.get_range(&path, lo..hi).await.expect("bounded");
                prop_assert_eq!(&r[..], &plain[lo as usize..hi.min(size) as usize]);
                let opts = GetOptions { range: Some(GetRange::Offset(lo)), ..Default::default() };
                let got = store.get_opts(&path, opts).await.expect("offset");
                prop_assert_eq!(got.range.clone(), lo..size);
                let r = got.bytes().await.expect("offset bytes");
                prop_assert_eq!(&r[..], &plain[lo as usize..]);
                let many = store
                    .get_ranges(&path, &[lo..hi.min(size), 0..1.min(size)])
                    .await
                    .expect("ranges");
                prop_assert_eq!(&many[0][..], &plain[lo as usize..hi.min(size) as usize]);
            } else if lo < hi {
                prop_assert!(store.get_range(&path, lo..hi).await.is_err(), "range past the end");
            }
            let opts = GetOptions {
                range: Some(GetRange::Suffix(suffix as u64)),
                ..Default::default()
            };
            let r = store.get_opts(&path, opts).await.expect("suffix").bytes().await.expect("suffix bytes");
            let from = size.saturating_sub(suffix as u64) as usize;
            prop_assert_eq!(&r[..], &plain[from..]);
            Ok(())
        })?;
    }
}

/// Flips one byte of a file.
fn flip(file: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(file).expect("read");
    bytes[at] ^= 0x01;
    std::fs::write(file, bytes).expect("write");
}

fn assert_err_contains(result: object_store::Result<Bytes>, needles: &[&str]) {
    let err = result.expect_err("must fail").to_string();
    for n in needles {
        assert!(err.contains(n), "error {err:?} does not contain {n:?}");
    }
}

#[tokio::test]
async fn tampering_and_truncation_are_errors_naming_the_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = local(dir.path());
    let plain = data(4 * B + 100, 7);
    let write = |name: &'static str| {
        let inner = inner.clone();
        let plain = plain.clone();
        async move {
            let store = EncryptedStore::wrap(inner, keyring(1));
            let path = Path::from(format!("t/{name}"));
            store
                .put(&path, PutPayload::from(plain))
                .await
                .expect("put");
            path
        }
    };
    let file = |name: &str| dir.path().join("t").join(name);
    // Reads go through fresh stores, so nothing cached hides what is on disk.
    let reader = || EncryptedStore::wrap(inner.clone(), keyring(1));

    // A flipped byte in block 2: reads of block 2 fail, naming the object and the block;
    // reads of other blocks still work.
    let path = write("block").await;
    flip(&file("block"), HEADER_LEN + 2 * SEALED_BLOCK_LEN + 10);
    assert_err_contains(
        reader()
            .get_range(&path, (2 * B) as u64..(2 * B + 1) as u64)
            .await,
        &["t/block", "block 2", "failed authentication"],
    );
    assert_err_contains(
        get_all(reader().as_ref(), &path).await,
        &["t/block", "block 2"],
    );
    let ok = reader()
        .get_range(&path, 0..B as u64)
        .await
        .expect("block 0 is intact");
    assert_eq!(&ok[..], &plain[..B]);

    // A flipped byte in the wrapped data key.
    let path = write("header").await;
    flip(&file("header"), 70);
    assert_err_contains(
        reader().get_range(&path, 0..10).await,
        &["t/header", "header failed authentication"],
    );

    // A flipped byte in the fixed part of the header (the block size): refused.
    let path = write("fixed").await;
    flip(&file("fixed"), 13);
    assert!(reader().get_range(&path, 0..10).await.is_err());

    // Cut at a block boundary: the new last block was not sealed as last.
    let path = write("cut").await;
    let bytes = std::fs::read(file("cut")).expect("read");
    std::fs::write(file("cut"), &bytes[..HEADER_LEN + 3 * SEALED_BLOCK_LEN]).expect("cut");
    assert_eq!(
        reader().head(&path).await.expect("head").size,
        (3 * B) as u64
    );
    assert_err_contains(
        reader()
            .get_range(&path, (2 * B) as u64..(2 * B + 5) as u64)
            .await,
        &["t/cut", "block 2"],
    );
    assert_err_contains(get_all(reader().as_ref(), &path).await, &["t/cut"]);

    // Cut inside a block.
    let path = write("cut-inside").await;
    let bytes = std::fs::read(file("cut-inside")).expect("read");
    std::fs::write(file("cut-inside"), &bytes[..bytes.len() - 50]).expect("cut");
    assert_err_contains(get_all(reader().as_ref(), &path).await, &["t/cut-inside"]);

    // Two blocks swapped.
    let path = write("swapped").await;
    let mut bytes = std::fs::read(file("swapped")).expect("read");
    let (b0, b1) = (HEADER_LEN, HEADER_LEN + SEALED_BLOCK_LEN);
    let first: Vec<u8> = bytes[b0..b1].to_vec();
    bytes.copy_within(b1..b1 + SEALED_BLOCK_LEN, b0);
    bytes[b1..b1 + SEALED_BLOCK_LEN].copy_from_slice(&first);
    std::fs::write(file("swapped"), &bytes).expect("swap");
    assert_err_contains(
        reader().get_range(&path, 0..10).await,
        &["t/swapped", "block 0"],
    );

    // A block taken from another object of the same plaintext, same key, same place.
    let path = write("spliced").await;
    write("donor").await;
    let mut bytes = std::fs::read(file("spliced")).expect("read");
    let donor = std::fs::read(file("donor")).expect("read");
    bytes[b1..b1 + SEALED_BLOCK_LEN].copy_from_slice(&donor[b1..b1 + SEALED_BLOCK_LEN]);
    std::fs::write(file("spliced"), &bytes).expect("splice");
    assert_err_contains(
        reader().get_range(&path, B as u64..(B + 10) as u64).await,
        &["t/spliced", "block 1"],
    );

    // Not encrypted at all.
    inner
        .put(&Path::from("t/plain"), PutPayload::from_static(b"hello"))
        .await
        .expect("plain put");
    assert_err_contains(
        get_all(reader().as_ref(), &Path::from("t/plain")).await,
        &["t/plain", "not an encrypted object"],
    );
}

#[tokio::test]
async fn a_stale_cached_key_is_retried_with_the_new_header() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = EncryptedStore::wrap(inner.clone(), keyring(1));
    let b = EncryptedStore::wrap(inner.clone(), keyring(1));
    let path = Path::from("replaced");
    a.put(&path, PutPayload::from(data(3 * B, 1)))
        .await
        .expect("put");
    // `b` replaces the object: `a` still caches the first object's key.
    b.put(&path, PutPayload::from(data(3 * B, 2)))
        .await
        .expect("replace");
    let r = a.get_range(&path, 10..20).await.expect("range");
    assert_eq!(&r[..], &data(3 * B, 2)[10..20]);
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_error() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let path = Path::from("secret");
    EncryptedStore::wrap(inner.clone(), keyring(1))
        .put(&path, PutPayload::from(data(1000, 1)))
        .await
        .expect("put");
    let id = kek(1).id().to_string();
    let wrong = EncryptedStore::wrap(inner.clone(), keyring(2));
    for result in [
        get_all(wrong.as_ref(), &path).await,
        wrong.get_range(&path, 5..10).await,
    ] {
        assert_err_contains(
            result,
            &[
                "the store's key-encryption key does not match: key id",
                &id,
                "secret",
                "test key 2",
            ],
        );
    }
}

fn write_key_file(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[test]
fn key_providers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hex_key = "0101010101010101010101010101010101010101010101010101010101010101";
    let expected = kek(1).id();

    // file: only the owner may read it.
    let good = write_key_file(dir.path(), "good.key", &format!("{hex_key}\n"), 0o600);
    let p: KeyProvider = format!("file:{}", good.display()).parse().expect("parse");
    assert_eq!(p.load().expect("load").id(), expected);
    let open = write_key_file(dir.path(), "open.key", hex_key, 0o640);
    let err = format!("file:{}", open.display())
        .parse::<KeyProvider>()
        .expect("parse")
        .load()
        .expect_err("group-readable key file");
    let msg = err.to_string();
    assert!(
        msg.contains("open.key") && msg.contains("group or others"),
        "{msg}"
    );
    let err = format!("file:{}", dir.path().join("absent.key").display())
        .parse::<KeyProvider>()
        .expect("parse")
        .load()
        .expect_err("missing file")
        .to_string();
    assert!(
        err.contains("absent.key") && err.contains("does not exist"),
        "{err}"
    );
    let short = write_key_file(dir.path(), "short.key", "0102", 0o600);
    let err = format!("file:{}", short.display())
        .parse::<KeyProvider>()
        .expect("parse")
        .load()
        .expect_err("short key")
        .to_string();
    assert!(
        err.contains("short.key") && err.contains("256-bit"),
        "{err}"
    );

    // env:
    let var = "WARD_TEST_CRYPT_KEY_PROVIDER_7f3a";
    let p: KeyProvider = format!("env:{var}").parse().expect("parse");
    let err = p.load().expect_err("unset").to_string();
    assert!(
        err.contains(&format!("env:{var}")) && err.contains("not set"),
        "{err}"
    );
    std::env::set_var(var, hex_key);
    assert_eq!(p.load().expect("load").id(), expected);
    std::env::remove_var(var);

    // command: run without a shell; stdout is the key.
    let p: KeyProvider = format!("command:/bin/echo {hex_key}")
        .parse()
        .expect("parse");
    assert_eq!(p.load().expect("load").id(), expected);
    let p: KeyProvider = "command:/bin/echo $HOME".parse().expect("parse");
    let err = p.load().expect_err("no shell expands $HOME").to_string();
    assert!(err.contains("command:/bin/echo $HOME"), "{err}");
    let p: KeyProvider = "command:/bin/sh -c 'echo the vault is sealed >&2; exit 3'"
        .parse()
        .expect("parse");
    let err = p.load().expect_err("failing command").to_string();
    assert!(
        err.contains("failed") && err.contains("the vault is sealed"),
        "{err}"
    );
    let p: KeyProvider = "command:/nonexistent/ward-kms".parse().expect("parse");
    let err = p.load().expect_err("missing program").to_string();
    assert!(err.contains("/nonexistent/ward-kms"), "{err}");
}

#[tokio::test]
async fn rotation_rewrites_headers_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = local(dir.path());
    let old = EncryptedStore::wrap(inner.clone(), keyring(1));
    let sizes = [0usize, 10, B, 5 * B + 3, 64 * 1024 * 1024 + 1];
    let mut before = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let path = Path::from(format!("store/o{i}"));
        old.put(&path, PutPayload::from(data(size, i as u8)))
            .await
            .expect("put");
        before.push(std::fs::read(dir.path().join("store").join(format!("o{i}"))).expect("read"));
    }
    inner
        .put(
            &Path::from("store/marker.json"),
            PutPayload::from_static(b"{}"),
        )
        .await
        .expect("plain marker");

    // The new key alone cannot read the old objects.
    let new_only = EncryptedStore::wrap(inner.clone(), keyring(2));
    assert!(get_all(new_only.as_ref(), &Path::from("store/o1"))
        .await
        .is_err());

    let rotating = Keyring::with_retired(kek(2), vec![kek(1)]);
    let done = crypt::rotate(inner.as_ref(), &rotating, Some(&Path::from("store")))
        .await
        .expect("rotate");
    assert_eq!(done.rewrapped.len(), sizes.len());
    assert_eq!(done.already_current, 0);
    assert_eq!(done.not_encrypted, vec![Path::from("store/marker.json")]);

    for (i, &size) in sizes.iter().enumerate() {
        let path = Path::from(format!("store/o{i}"));
        let after = std::fs::read(dir.path().join("store").join(format!("o{i}"))).expect("read");
        let b = &before[i];
        assert_eq!(after.len(), b.len());
        assert_eq!(
            after[HEADER_LEN..],
            b[HEADER_LEN..],
            "data blocks of o{i} unchanged"
        );
        assert_eq!(after[..16], b[..16], "fixed header of o{i} unchanged");
        assert_eq!(after[32..48], b[32..48], "object id of o{i} unchanged");
        assert_ne!(after[16..32], b[16..32], "key id of o{i} rewritten");
        assert_ne!(
            after[60..108],
            b[60..108],
            "wrapped data key of o{i} rewritten"
        );
        assert_eq!(
            crypt::object_key_id(inner.as_ref(), &path)
                .await
                .expect("key id"),
            kek(2).id()
        );
        if size <= 5 * B + 3 {
            assert_eq!(
                get_all(new_only.as_ref(), &path)
                    .await
                    .expect("new key reads"),
                data(size, i as u8)
            );
        } else {
            let r = new_only
                .get_range(&path, (size - 100) as u64..size as u64)
                .await
                .expect("new key reads the large object");
            assert_eq!(&r[..], &data(size, i as u8)[size - 100..]);
        }
        let old_only = EncryptedStore::wrap(inner.clone(), keyring(1));
        assert_err_contains(
            old_only.get_range(&path, 0..1).await,
            &["key-encryption key does not match"],
        );
    }

    // Run again: nothing left to do.
    let again = crypt::rotate(inner.as_ref(), &rotating, Some(&Path::from("store")))
        .await
        .expect("rotate again");
    assert!(again.rewrapped.is_empty());
    assert_eq!(again.already_current, sizes.len() as u64);

    // Rotating without the old key fails, naming the key, and changes nothing.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let inner2 = local(dir2.path());
    EncryptedStore::wrap(inner2.clone(), keyring(1))
        .put(&Path::from("x"), PutPayload::from(data(100, 1)))
        .await
        .expect("put");
    let raw = std::fs::read(dir2.path().join("x")).expect("read");
    let err = crypt::rotate(inner2.as_ref(), &keyring(3), None)
        .await
        .expect_err("no old key")
        .to_string();
    assert!(err.contains("key-encryption key does not match"), "{err}");
    assert_eq!(std::fs::read(dir2.path().join("x")).expect("read"), raw);
}

const MARKER: &str = "PHI-MARKER-Jane-Q-Public";

fn phi_batch(start: i64, rows: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("note", DataType::Utf8, false),
    ]));
    let ids: Vec<i64> = (start..start + rows as i64).collect();
    let notes: Vec<String> = ids.iter().map(|i| format!("{MARKER} {i:06}")).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(notes)),
        ],
    )
    .expect("batch")
}

/// Every file under `dir`, with its bytes.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read file");
                out.push((p, bytes));
            }
        }
    }
    out
}

async fn write_lance(
    uri: &str,
    batches: Vec<RecordBatch>,
    params: Option<lance::io::ObjectStoreParams>,
) {
    let schema = batches[0].schema();
    let reader = arrow::array::RecordBatchIterator::new(batches.into_iter().map(Ok), schema);
    let write = WriteParams {
        mode: WriteMode::Create,
        store_params: params,
        max_rows_per_file: 3_000,
        ..Default::default()
    };
    Dataset::write(reader, uri, Some(write))
        .await
        .expect("lance write");
}

#[tokio::test]
async fn lance_dataset_round_trip_leaves_no_plaintext_on_disk() {
    let batches = vec![phi_batch(0, 4_000), phi_batch(4_000, 3_000)];
    let schema = batches[0].schema();
    let written_hash = hash_batches(&schema, &batches).expect("hash");

    // Without encryption the marker is on disk: the check below can fail.
    let plain_dir = tempfile::tempdir().expect("tempdir");
    let plain_uri = LanceEncryption::dataset_uri(&plain_dir.path().join("ds")).expect("uri");
    write_lance(&plain_uri, batches.clone(), None).await;
    assert!(
        files(plain_dir.path())
            .iter()
            .any(|(_, b)| b.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())),
        "an unencrypted dataset holds the marker"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let enc = LanceEncryption::new(keyring(1));
    let uri = LanceEncryption::dataset_uri(&dir.path().join("ds")).expect("uri");
    write_lance(&uri, batches.clone(), Some(enc.store_params())).await;

    let on_disk = files(dir.path());
    assert!(
        on_disk.len() >= 3,
        "data files, a manifest, ...: {on_disk:?}"
    );
    for (path, bytes) in &on_disk {
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{} holds plaintext",
            path.display()
        );
        assert_eq!(
            bytes.get(..8),
            Some(&MAGIC[..]),
            "{} is encrypted",
            path.display()
        );
    }

    let ds = DatasetBuilder::from_uri(&uri)
        .with_store_params(enc.store_params())
        .load()
        .await
        .expect("open through the wrapper");
    assert_eq!(ds.count_rows(None).await.expect("count"), 7_000);
    let read: Vec<RecordBatch> = ds
        .scan()
        .try_into_stream()
        .await
        .expect("scan")
        .try_collect()
        .await
        .expect("batches");
    let whole = arrow::compute::concat_batches(&schema, &batches).expect("concat");
    let back = arrow::compute::concat_batches(&schema, &read).expect("concat");
    assert_eq!(
        back.columns(),
        whole.columns(),
        "full scan equals what was written"
    );
    // Encryption changes no content hash: the logical content read back hashes the same.
    assert_eq!(hash_batches(&schema, &read).expect("hash"), written_hash);

    let rows = [0u64, 17, 2_999, 3_000, 6_999];
    let taken = ds.take(&rows, ds.schema().clone()).await.expect("take");
    let expected =
        arrow::compute::take_record_batch(&whole, &arrow::array::UInt64Array::from(rows.to_vec()))
            .expect("take expected");
    assert_eq!(taken.columns(), expected.columns());

    // Without the wrapper the dataset does not open: Lance reads ciphertext as a manifest
    // and fails (in a debug build it panics on the garbage offsets: hence the task).
    let bare = tokio::spawn({
        let uri = uri.clone();
        async move { DatasetBuilder::from_uri(&uri).load().await.map(|_| ()) }
    })
    .await;
    assert!(
        !matches!(bare, Ok(Ok(()))),
        "an encrypted dataset opened without its key"
    );
    // With another key it fails with the clear error.
    let other = LanceEncryption::new(keyring(2));
    let err = DatasetBuilder::from_uri(&uri)
        .with_store_params(other.store_params())
        .load()
        .await
        .expect_err("wrong key");
    let msg = format!("{err}");
    assert!(msg.contains("key-encryption key does not match"), "{msg}");
}

/// Why `LanceEncryption::dataset_uri`: under a plain path (`file://`) Lance writes local
/// files directly, past the wrapper. If this starts failing, Lance routes local files through
/// the object store and the `file-object-store://` URI is no longer needed.
#[tokio::test]
async fn a_plain_local_path_bypasses_the_wrapper() {
    let dir = tempfile::tempdir().expect("tempdir");
    let enc = LanceEncryption::new(keyring(1));
    let path = dir.path().join("ds");
    let uri = path.to_str().expect("utf-8 path");
    write_lance(uri, vec![phi_batch(0, 100)], Some(enc.store_params())).await;
    assert!(
        files(dir.path())
            .iter()
            .any(|(_, b)| b.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())),
        "Lance wrote a plain path through the wrapper after all"
    );
}
