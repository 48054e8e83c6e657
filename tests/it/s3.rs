//! The store in S3-compatible object storage (`--store s3://BUCKET/PREFIX`), against a real
//! S3 server: `.ci/s3.sh start` runs moto's server on 127.0.0.1 and prints the `AWS_*`
//! variables and `WARD_TEST_S3_BUCKET` for `eval`. Without `WARD_TEST_S3_BUCKET` these tests
//! say they skipped and pass, unless `WARD_REQUIRE_S3=1` (CI), where they fail.
//!
//! The store tests run on both a local directory and S3 (the same function over both), then
//! the concurrent-commit races, killed writers, cleanup of unpublished staged data, the
//! command line end to end (init, put, ingest, materialize, historical, verify, export,
//! cleanup) and `ward demo` giving the local store's hashes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use ward::error::Error;
use ward::store::object::S3Config;
use ward::store::{HeadUpdate, Kind, ListFilter, PutOptions, Store, VersionRef};

use crate::hash_props::random_batch;

/// The test bucket, or `None` (the test then passes, saying it skipped).
fn bucket() -> Option<String> {
    match std::env::var("WARD_TEST_S3_BUCKET") {
        Ok(b) if !b.trim().is_empty() => Some(b.trim().to_string()),
        _ => {
            let how = "start a server with `eval \"$(.ci/s3.sh start)\"` (it exports WARD_TEST_S3_BUCKET and the AWS_* variables)";
            if std::env::var("WARD_REQUIRE_S3").as_deref() == Ok("1") {
                panic!("WARD_REQUIRE_S3=1 but WARD_TEST_S3_BUCKET is unset: {how}");
            }
            eprintln!("SKIP: no S3 server (WARD_TEST_S3_BUCKET is unset): {how}");
            None
        }
    }
}

/// A store location no other test (or earlier run against the same server) uses.
fn unique(bucket: &str, what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "s3://{bucket}/it/{what}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn batch(seed: u64) -> arrow::array::RecordBatch {
    random_batch(500, seed)
}

async fn put(store: &Store, seed: u64, name: &str) -> ward::store::PutOutcome {
    let b = batch(seed);
    store
        .put_batches(b.schema(), vec![b], PutOptions::new(name, Kind::Other))
        .await
        .unwrap()
}

/// put, manifest, resolve (hash, prefix, name, name@time), tag, verify, list, export and
/// cleanup, on whichever store it is given; the hashes it stored.
async fn store_basics(store: &Store) -> Vec<String> {
    let first = put(store, 1, "enc").await;
    assert!(first.created);
    let h1 = first.manifest.hash;
    // The same content again: the stored version, nothing new.
    let again = put(store, 1, "enc").await;
    assert!(!again.created);
    assert_eq!(again.manifest.hash, h1);
    let second = put(store, 2, "enc").await;
    let h2 = second.manifest.hash;
    assert_ne!(h1, h2);

    assert_eq!(store.manifest(&h1).unwrap().rows, 500);
    assert_eq!(store.resolve(&VersionRef::Hash(h1)).unwrap().hash, h1);
    let prefix: VersionRef = h2.to_string()[..12].parse().unwrap();
    assert_eq!(store.resolve(&prefix).unwrap().hash, h2);
    assert_eq!(store.resolve(&"enc".parse().unwrap()).unwrap().hash, h2);
    let at = first.head.unwrap().at;
    assert_eq!(
        store
            .resolve(&VersionRef::AsOf("enc".into(), at))
            .unwrap()
            .hash,
        h1
    );
    store.tag("prod", &h1).unwrap();
    assert_eq!(store.resolve(&"prod".parse().unwrap()).unwrap().hash, h1);
    assert_eq!(
        store.names().unwrap(),
        vec!["enc".to_string(), "prod".to_string()]
    );
    assert_eq!(store.head_log("enc").unwrap().len(), 2);
    assert!(matches!(
        store.manifest(&ward::hash::ContentHash([7; 32])),
        Err(Error::NotFound { .. })
    ));

    let listed = store.list(&ListFilter::default()).unwrap();
    assert_eq!(listed.len(), 2);
    for m in &listed {
        let r = store.verify(&m.hash).await.unwrap();
        assert_eq!(r.rows, 500);
    }
    let (_, batches) = store.read(&h2).await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 500);
    let out = tempfile::tempdir().unwrap();
    let rows = store
        .export_parquet(&h1, &out.path().join("x.parquet"))
        .await
        .unwrap();
    assert_eq!(rows, 500);
    let report = store.cleanup().unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 2);
    vec![h1.to_string(), h2.to_string()]
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_basics_match_the_local_store() {
    let local_dir = tempfile::tempdir().unwrap();
    let local = Store::open(local_dir.path().join("store"), ward::clock::system()).unwrap();
    let local_hashes = store_basics(&local).await;
    let Some(bucket) = bucket() else { return };
    let location = unique(&bucket, "basics");
    let remote = Store::open(&location, ward::clock::system()).unwrap();
    assert_eq!(remote.root(), Path::new(&location));
    assert_eq!(store_basics(&remote).await, local_hashes);
    // Opened again (another process would): the same versions and heads.
    let again = Store::open_existing(&location, ward::clock::system()).unwrap();
    assert_eq!(again.list(&ListFilter::default()).unwrap().len(), 2);
    assert_eq!(again.head_log("enc").unwrap().len(), 2);
    // A prefix with no store is not opened by open_existing.
    let empty = unique(&bucket, "empty");
    let e = Store::open_existing(&empty, ward::clock::system()).unwrap_err();
    assert!(e.to_string().contains("no Ward store here"), "{e}");
}

/// Writers racing from the same head: exactly one wins, the others get a conflict; writers
/// of the same content at once: one version, one copy of its data.
#[tokio::test(flavor = "multi_thread")]
async fn s3_concurrent_commits_never_lose_an_update() {
    let Some(bucket) = bucket() else { return };
    let location = unique(&bucket, "race");
    let store = Store::open(&location, ward::clock::system()).unwrap();
    let mut hashes = Vec::new();
    for seed in 0..6 {
        hashes.push(put(&store, 100 + seed, "base").await.manifest.hash);
    }
    // Writers that all built on "no head" (Expect(None)): one wins.
    let outcomes: Vec<ward::Result<_>> = std::thread::scope(|s| {
        let handles: Vec<_> = hashes
            .iter()
            .map(|h| {
                let store = &store;
                s.spawn(move || store.publish("race", h, HeadUpdate::Expect(None)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(won, 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .all(|e| matches!(e, Error::Conflict { .. })));
    assert_eq!(store.head_log("race").unwrap().len(), 1);

    // Writers of the same content at once: one version, one copy of its data.
    let b = batch(999);
    let outs = futures::future::join_all((0..4).map(|_| {
        let store = store.clone();
        let b = b.clone();
        tokio::spawn(async move {
            store
                .put_batches(b.schema(), vec![b], PutOptions::new("same", Kind::Other))
                .await
                .unwrap()
        })
    }))
    .await;
    let outs: Vec<_> = outs.into_iter().map(|o| o.unwrap()).collect();
    assert_eq!(outs.iter().filter(|o| o.created).count(), 1);
    let h = outs[0].manifest.hash;
    assert!(outs.iter().all(|o| o.manifest.hash == h));
    let staged = store.remote().unwrap().list_dirs("data").unwrap();
    assert_eq!(staged.len(), 7, "one staged copy per version: {staged:?}");
    store.verify(&h).await.unwrap();
}

/// Threads moving one head at once: every move is in the log exactly once.
#[test]
fn s3_racing_threads_keep_every_move() {
    let Some(bucket) = bucket() else { return };
    let location = unique(&bucket, "moves");
    let store = Store::open(&location, ward::clock::system()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hashes: Vec<_> = (0..24)
        .map(|s| rt.block_on(put(&store, 200 + s, "v")).manifest.hash)
        .collect();
    std::thread::scope(|s| {
        for chunk in hashes.chunks(6) {
            let store = &store;
            s.spawn(move || {
                for h in chunk {
                    store.publish("n", h, HeadUpdate::Move).unwrap();
                }
            });
        }
    });
    let log = store.head_log("n").unwrap();
    assert_eq!(log.len(), 24);
    let seen: BTreeSet<_> = log.iter().map(|e| e.hash).collect();
    assert_eq!(seen.len(), 24, "every move in the log exactly once");
}

/// Cleanup removes staged data no manifest names once it is old enough, and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn s3_cleanup_removes_only_old_unpublished_staging() {
    let Some(bucket) = bucket() else { return };
    let location = unique(&bucket, "cleanup");
    let store = Store::open(&location, ward::clock::system()).unwrap();
    let kept = put(&store, 5, "enc").await.manifest.hash;
    let remote = store.remote().unwrap();
    // What a writer killed before publishing leaves.
    remote
        .put("data/killed-writer/data/x.lance", b"partial".to_vec())
        .unwrap();
    // Younger than the default age: maybe a live writer's, left alone.
    let r = store.cleanup().unwrap();
    assert!(r.removed.is_empty(), "{r:?}");
    assert_eq!(r.in_use, vec!["data/killed-writer".to_string()]);
    std::thread::sleep(Duration::from_millis(1100));
    let r = store.cleanup_staged_before(Duration::from_secs(1)).unwrap();
    assert_eq!(r.removed, vec!["data/killed-writer".to_string()]);
    assert!(remote.list_all("data/killed-writer").unwrap().is_empty());
    // The published version's data stays, whatever its age.
    store.verify(&kept).await.unwrap();
    assert_eq!(remote.list_dirs("data").unwrap().len(), 1);
}

fn write_parquet(path: &Path, seed: u64, rows: usize) -> String {
    let b = random_batch(rows, seed);
    let h = ward::hash::hash_batches(&b.schema(), [&b]).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        b.schema(),
        None,
    )
    .unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
    h.to_string()
}

fn ward(location: &str, state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ward"));
    c.arg("--store")
        .arg(location)
        .env("WARD_STATE_DIR", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn last_hash(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("b3:"), "{text}");
    last
}

/// `ward put` killed at random moments on S3: no partial version is ever visible, every
/// version verifies; and writers of different tables under one name at once lose no move.
#[tokio::test(flavor = "multi_thread")]
async fn s3_killed_and_concurrent_cli_writers() {
    let Some(bucket) = bucket() else { return };
    let location = unique(&bucket, "crash");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut files = Vec::new();
    let mut hashes = Vec::new();
    for i in 0..4u64 {
        let p = dir.path().join(format!("t{i}.parquet"));
        hashes.push(write_parquet(&p, 3000 + i, 20_000));
        files.push(p);
    }
    let put = |i: usize, name: &str| {
        ward(&location, &state)
            .arg("put")
            .arg(&files[i])
            .args(["--name", name])
            .spawn()
            .unwrap()
    };
    let mut times = Vec::new();
    for (i, want) in hashes.iter().enumerate().take(2) {
        let started = Instant::now();
        let h = last_hash(&put(i, "crash").wait_with_output().unwrap());
        assert_eq!(&h, want);
        times.push(started.elapsed());
    }
    let full = times[1].max(Duration::from_millis(50));
    let trials: usize = std::env::var("WARD_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(35);
    let mut killed = 0;
    for trial in 0..trials {
        let mut child = put(2 + trial % 2, "crash");
        std::thread::sleep(full.mul_f64(rng.random_range(0.0..1.0)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
    }
    assert!(killed >= trials / 3, "only {killed} of {trials} killed");
    let store = Store::open_existing(&location, ward::clock::system()).unwrap();
    for m in store.list(&ListFilter::default()).unwrap() {
        assert!(
            hashes.contains(&m.hash.to_string()),
            "unexpected {}",
            m.hash
        );
        store.verify(&m.hash).await.unwrap();
    }
    for head in store.head_log("crash").unwrap() {
        store.manifest(&head.hash).unwrap();
    }
    // Killed writers' staged data goes with cleanup (once old enough), and every table can
    // still be written.
    std::thread::sleep(Duration::from_millis(1100));
    store.cleanup_staged_before(Duration::from_secs(1)).unwrap();
    for (i, want) in hashes.iter().enumerate() {
        assert_eq!(
            &last_hash(&put(i, "crash").wait_with_output().unwrap()),
            want
        );
    }
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 4);
    let staged = store.remote().unwrap().list_dirs("data").unwrap();
    assert_eq!(staged.len(), 4, "only published data is left: {staged:?}");

    // Four processes putting four tables under one new name at once: four moves.
    let children: Vec<_> = (0..4).map(|i| put(i, "together")).collect();
    for c in children {
        last_hash(&c.wait_with_output().unwrap());
    }
    let log = store.head_log("together").unwrap();
    let seen: BTreeSet<String> = log.iter().map(|e| e.hash.to_string()).collect();
    assert_eq!(seen.len(), 4, "a move was lost: {log:?}");
}

/// The command line end to end on S3, and `ward demo` giving the local store's hashes.
#[test]
fn s3_command_line_end_to_end() {
    let Some(bucket) = bucket() else { return };
    let Some(hl7) = crate::common::shared_data("hl7v2-samples/Hl7v2") else {
        return;
    };
    let location = unique(&bucket, "cli");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let run = |args: &[&str]| ward(&location, &state).args(args).output().unwrap();
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    ok(run(&["init"]));
    let table = dir.path().join("t.parquet");
    let want = write_parquet(&table, 77, 1000);
    assert_eq!(
        last_hash(&run(&["put", table.to_str().unwrap(), "--name", "t"])),
        want
    );
    last_hash(&run(&[
        "ingest",
        "--format",
        "hl7v2",
        hl7.to_str().unwrap(),
    ]));
    let features = crate::common::crate_dir().join("examples/features/readmission.toml");
    // In ranges of one bucket each, stored one group at a time into staged objects; then
    // computed at once and stored whole: the same version.
    let materialize = |extra: &[&str]| {
        let mut args = vec![
            "materialize",
            "--features",
            features.to_str().unwrap(),
            "--set",
            "readmission",
            "--full",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let ranged = materialize(&["--partition-rows", "1"]);
    assert!(
        String::from_utf8_lossy(&ranged.stderr).contains("ranges of buckets"),
        "{}",
        String::from_utf8_lossy(&ranged.stderr)
    );
    let timeline = last_hash(&ranged);
    assert_eq!(last_hash(&materialize(&[])), timeline);
    let entities = dir.path().join("rows.csv");
    std::fs::write(&entities, "patient_id,timestamp\nP0000001,2020-01-01\n").unwrap();
    last_hash(&run(&[
        "historical",
        "--set",
        "readmission",
        "--entities",
        entities.to_str().unwrap(),
    ]));
    ok(run(&["verify", &timeline]));
    ok(run(&["verify", "encounters"]));
    let out = dir.path().join("enc.parquet");
    let enc = last_hash(&run(&["export", "encounters", out.to_str().unwrap()]));
    assert!(out.is_file());
    let listed = String::from_utf8_lossy(&ok(run(&["datasets"])).stdout).to_string();
    assert!(listed.contains(&enc[3..]), "{listed}");
    ok(run(&["cleanup"]));
    // The audit trail of the reads went to WARD_STATE_DIR.
    assert!(state.join("audit").is_dir());

    // Without WARD_STATE_DIR a command that audits fails clearly, and writes nothing to a
    // local directory named after the URL.
    let cwd = tempfile::tempdir().unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(&location)
        .args(["export", "encounters", out.to_str().unwrap()])
        .env_remove("WARD_STATE_DIR")
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("WARD_STATE_DIR"), "{err}");
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);

    // The demo on S3 gives the local store's hashes.
    let demo = |store: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ward"))
            .arg("--store")
            .arg(store)
            .args(["demo", "--no-serve", "--patients", "100"])
            .env("WARD_STATE_DIR", dir.path().join("demo-state"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let local: PathBuf = dir.path().join("local-demo");
    let on_disk = demo(local.to_str().unwrap());
    assert!(on_disk.lines().count() > 3, "{on_disk}");
    assert_eq!(demo(&unique(&bucket, "demo")), on_disk);
}

#[test]
fn s3_configuration_is_explicit_and_never_shows_secrets() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    // No credentials: an error naming the variable, never a metadata probe.
    let e = S3Config::from_vars(vars(&[("AWS_ENDPOINT_URL", "https://s3.example")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
    // Unless the bucket is public.
    let public = S3Config::from_vars(vars(&[("AWS_SKIP_SIGNATURE", "true")])).unwrap();
    assert_eq!(public.region, "us-east-1");
    // Plain HTTP only when allowed.
    let e = S3Config::from_vars(vars(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "very-secret-key"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(e.contains("AWS_ALLOW_HTTP"), "{e}");
    let cfg = S3Config::from_vars(vars(&[
        ("AWS_ENDPOINT", "http://127.0.0.1:9"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "eu-west-3"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "very-secret-key"),
        ("AWS_SESSION_TOKEN", "session-token-value"),
    ]))
    .unwrap();
    assert_eq!(cfg.endpoint.as_deref(), Some("http://127.0.0.1:9"));
    assert_eq!(cfg.region, "eu-west-3");
    let shown = format!(
        "{cfg:?} {:?}",
        ward::store::object::Remote::with_config("s3://b/p", cfg.clone()).unwrap()
    );
    for secret in ["AKIDEXAMPLE", "very-secret-key", "session-token-value"] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    // Malformed locations are refused with the option named.
    for bad in ["s3://", "s3://Bucket/x", "s3://b/a//c", "s3://b/../x"] {
        let e = ward::store::object::Remote::with_config(bad, cfg.clone()).unwrap_err();
        assert!(e.to_string().contains("--store"), "{bad}: {e}");
    }
}

/// The server configuration's `store` takes an `s3://` URL as it is (a directory is taken
/// relative to the file).
#[test]
fn serve_config_keeps_an_s3_store_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serve.toml");
    std::fs::write(&path, "store = \"s3://bucket/ward\"\n").unwrap();
    let cfg = ward::service::config::ServeConfig::load(&path).unwrap();
    assert_eq!(cfg.store, Some(PathBuf::from("s3://bucket/ward")));
    std::fs::write(&path, "store = \"data\"\n").unwrap();
    let cfg = ward::service::config::ServeConfig::load(&path).unwrap();
    assert_eq!(cfg.store, Some(dir.path().join("data")));
}
