//! Encryption at rest wired into the store (issue 35, docs/encryption.md): `ward init
//! --encrypt` and then the command line end to end (ingest, materialize, historical, verify,
//! export, an online lookup from `ward serve`) on a local directory, and on S3 when
//! `WARD_TEST_S3_BUCKET` is set (`eval "$(.ci/s3.sh start)"`); the same hashes as a plain
//! store; no plaintext anywhere in the store; a wrong or missing key is a clear error; a key
//! rotation rewrites headers only; SSE-KMS reaches the S3 client's configuration.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::proto::{features_client::FeaturesClient, OnlineRequest, OnlineResponse};
use ward::security::keyring::{Kek, KeyProvider, Keyring};
use ward::store::crypt::{self, HEADER_LEN, MAGIC};
use ward::store::object::{Remote, S3Config};
use ward::store::{ListFilter, Store};

/// Patient ids of the synthetic cohort (`ward synth --seed 7`), looked for in every stored
/// byte.
const IDS: [&str; 3] = ["P0000001", "P0000002", "P0000017"];

/// A key file of 64 hex digits, mode 0600.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, Kek::generate_hex().expect("key")).expect("key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn key_id(path: &Path) -> String {
    KeyProvider::File(path.to_path_buf())
        .load()
        .expect("key")
        .id()
        .to_string()
}

/// `ward --store LOCATION` with its audit trail (for an `s3://` store) in `state`, and no
/// key provider from the environment unless a test gives one.
fn ward(location: &str, state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ward"));
    c.arg("--store")
        .arg(location)
        .env("WARD_STATE_DIR", state)
        .env_remove("WARD_KEY_PROVIDER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every line of standard output (the hashes a command printed).
fn lines(out: Output) -> Vec<String> {
    String::from_utf8_lossy(&ok(out).stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn last(out: Output) -> String {
    let all = lines(out);
    let h = all.last().cloned().unwrap_or_default();
    assert!(h.starts_with("b3:"), "{all:?}");
    h
}

/// A command that must fail cleanly: non-zero, an `error:` message, no panic; its message.
fn fails(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "succeeded: {err}");
    assert!(err.contains("error:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Every file under `dir`, at any depth, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                out.insert(p, bytes);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// No stored object shows a patient id, a manifest's or head entry's JSON, or Lance's file
/// magic; every object but the marker is in the encrypted format. `objects`: path and bytes.
///
/// The audit trail (`audit/`, not encrypted: docs/encryption.md) is searched for the ids
/// only: it records who read which data, never a patient id in the clear for these reads.
fn assert_no_plaintext(objects: &BTreeMap<String, Vec<u8>>) {
    assert!(objects.len() > 20, "only {} objects", objects.len());
    for (path, bytes) in objects {
        if path.ends_with("ward-store.json") {
            continue;
        }
        let mut needles: Vec<&[u8]> = IDS.iter().map(|s| s.as_bytes()).collect();
        if !path.contains("/audit/") {
            needles.extend([&b"\"hash\""[..], b"\"seq\"", b"LANC", b"patient_id"]);
        }
        for n in &needles {
            assert!(
                !contains(bytes, n),
                "{path} holds {:?} in the clear",
                String::from_utf8_lossy(n)
            );
        }
        let stored_by_ward = ["versions/", "refs/", "data/"]
            .iter()
            .any(|p| path.contains(p));
        if stored_by_ward {
            assert_eq!(bytes.get(..8), Some(&MAGIC[..]), "{path} is not encrypted");
        }
    }
}

/// The files of a local store, by path.
fn local_objects(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files(dir)
        .into_iter()
        .map(|(p, b)| (p.display().to_string(), b))
        .collect()
}

/// The objects of an `s3://` store as stored (read below the encryption).
fn remote_objects(location: &str) -> BTreeMap<String, Vec<u8>> {
    let raw = Remote::open(location).expect("remote");
    raw.list_all("")
        .expect("list")
        .into_iter()
        .map(|o| {
            let b = raw.get_plain(&o.key).expect("get").expect("listed");
            (o.key, b.to_vec())
        })
        .collect()
}

/// What a run of the command line printed, to compare an encrypted store with a plain one.
#[derive(Debug, PartialEq)]
struct Printed {
    ingest: Vec<String>,
    timeline: String,
    online_timeline: String,
    training: String,
}

/// init (encrypted with `key` if given), ingest, materialize (training and online),
/// historical, verify of every version, export; in `work` (fixtures and outputs).
fn command_line(location: &str, work: &Path, key: Option<&Path>) -> Printed {
    let state = work.join("state");
    let run = |args: &[&str]| ward(location, &state).args(args).output().expect("ward");
    match key {
        Some(k) => {
            let provider = format!("file:{}", k.display());
            ok(run(&["init", "--encrypt", "--key-provider", &provider]));
        }
        None => {
            ok(run(&["init"]));
        }
    }
    let cohort = work.join("cohort");
    if !cohort.exists() {
        ok(run(&[
            "synth",
            "--patients",
            "40",
            "--seed",
            "7",
            "--format",
            "fhir-ndjson",
            "--out",
            cohort.to_str().expect("utf-8"),
        ]));
    }
    let ingest = lines(run(&[
        "ingest",
        "--format",
        "fhir-ndjson",
        cohort.to_str().expect("utf-8"),
    ]));
    let features = crate::common::crate_dir().join("examples/features/readmission.toml");
    let features = features.to_str().expect("utf-8");
    let timeline = last(run(&[
        "materialize",
        "--features",
        features,
        "--set",
        "readmission",
    ]));
    // Computed in ranges of patients, through a scratch file (sealed in an encrypted
    // store, src/features/scratch.rs): the same timeline.
    let partitioned = last(run(&[
        "materialize",
        "--features",
        features,
        "--set",
        "readmission",
        "--full",
        "--partition-rows",
        "300",
    ]));
    assert_eq!(partitioned, timeline, "a partitioned materialization");
    let online_timeline = last(run(&[
        "materialize",
        "--features",
        features,
        "--set",
        "readmission_online",
    ]));
    let entities = work.join("rows.csv");
    std::fs::write(
        &entities,
        format!(
            "patient_id,timestamp\n{},2030-01-01\n{},2031-06-01\n",
            IDS[0], IDS[2]
        ),
    )
    .expect("entities");
    let out = work.join(format!("train-{}.parquet", key.is_some()));
    let training = last(run(&[
        "historical",
        "--set",
        "readmission",
        "--entities",
        entities.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(out.is_file());
    let listed = String::from_utf8_lossy(&ok(run(&["datasets"])).stdout).to_string();
    let mut verified = 0;
    for line in listed.lines().filter(|l| l.starts_with("b3:")) {
        let hash = line.split_whitespace().next().expect("hash");
        ok(run(&["verify", hash]));
        verified += 1;
    }
    assert!(verified >= 10, "{listed}");
    let exported = work.join(format!("encounters-{}.parquet", key.is_some()));
    last(run(&[
        "export",
        "encounters",
        exported.to_str().expect("utf-8"),
    ]));
    assert!(exported.is_file());
    Printed {
        ingest,
        timeline,
        online_timeline,
        training,
    }
}

/// Starts `ward serve --config CONFIG` over `location` (its audit trail, for an `s3://`
/// store, in `state`); the child and the address it listens on.
fn spawn_serve(location: &Path, config: &Path, state: &Path) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = ward(location.to_str().expect("utf-8"), state)
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .spawn()
        .expect("ward serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("listening on ") {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                if let Some(t) = tx.take() {
                    let _ = t.send(addr.to_string());
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("ward serve printed `listening on ADDR`");
    (child, addr)
}

/// Serves `location` with the readmission feature sets; the online answer for the cohort's
/// ids.
async fn online(location: &Path, work: &Path) -> OnlineResponse {
    let repo = crate::common::crate_dir().join("examples/features/readmission.toml");
    let config = work.join("serve.toml");
    std::fs::write(
        &config,
        format!("features = [{:?}]\n", repo.display().to_string()),
    )
    .expect("config");
    let (mut child, addr) = spawn_serve(location, &config, &work.join("state"));
    let answer = async {
        let mut c = FeaturesClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        c.get_online_features(OnlineRequest {
            feature_set: "readmission_online".into(),
            patient_ids: IDS.iter().map(|s| s.to_string()).collect(),
            as_of: "2031-01-01T00:00:00Z".into(),
            features: vec![],
        })
        .await
        .expect("online lookup")
        .into_inner()
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    answer
}

/// The command line on an encrypted local store: the hashes of a plain store, every
/// version verifies, the same online answer from `ward serve`, and no plaintext in any file
/// of the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_local_store_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path(), "ward.key");
    let enc = dir.path().join("encrypted");
    let plain = dir.path().join("plain");
    let e = command_line(enc.to_str().expect("utf-8"), dir.path(), Some(&key));
    assert_no_plaintext(&local_objects(&enc));
    let p = command_line(plain.to_str().expect("utf-8"), dir.path(), None);
    assert_eq!(e, p, "encryption changes no hash");
    // The plain store does hold the ids in the clear (so the search above can fail).
    let plain_files = local_objects(&plain);
    assert!(plain_files.values().any(|b| contains(b, IDS[0].as_bytes())));

    // The marker names the key id and the provider, never the key.
    let marker = std::fs::read_to_string(enc.join("ward-store.json")).expect("marker");
    let key_text = std::fs::read_to_string(&key).expect("key");
    assert!(marker.contains(&key_id(&key)), "{marker}");
    assert!(!marker.contains(key_text.trim()), "{marker}");

    let (a, b) = (
        online(&enc, dir.path()).await,
        online(&plain, dir.path()).await,
    );
    assert_eq!(a.timeline, e.online_timeline);
    assert!(!a.patients.is_empty());
    assert_eq!(a, b, "the same online answer from an encrypted store");
    // Serving reads and audits: still nothing in the clear in the versions.
    let after: BTreeMap<String, Vec<u8>> = local_objects(&enc)
        .into_iter()
        .filter(|(p, _)| p.contains("/versions/") || p.contains("/refs/"))
        .collect();
    assert_no_plaintext(&after);
}

/// A wrong key, a missing key and a key file open to others: each a clear error naming the
/// provider (and for a wrong key both key ids), never garbage, never a panic.
#[test]
fn wrong_or_missing_key_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let right = key_file(dir.path(), "right.key");
    let wrong = key_file(dir.path(), "wrong.key");
    let store = dir.path().join("store");
    let loc = store.to_str().expect("utf-8");
    init_with_table(loc, &state, &right, dir.path());

    let err = fails(
        ward(loc, &state)
            .env("WARD_KEY_PROVIDER", format!("file:{}", wrong.display()))
            .args(["show", "t"])
            .output()
            .expect("show"),
    );
    for needle in [
        "wrong key".to_string(),
        key_id(&right),
        key_id(&wrong),
        format!("file:{}", wrong.display()),
    ] {
        assert!(err.contains(&needle), "{needle} not in: {err}");
    }

    let err = fails(
        ward(loc, &state)
            .env("WARD_KEY_PROVIDER", "env:WARD_TEST_NO_SUCH_KEY")
            .args(["datasets"])
            .output()
            .expect("datasets"),
    );
    assert!(err.contains("env:WARD_TEST_NO_SUCH_KEY"), "{err}");
    assert!(err.contains("is not set"), "{err}");
    assert!(err.contains(&key_id(&right)), "{err}");

    std::fs::set_permissions(&right, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = fails(
        ward(loc, &state)
            .args(["verify", "t"])
            .output()
            .expect("verify"),
    );
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::remove_file(&right).expect("rm");
    let err = fails(
        ward(loc, &state)
            .args(["verify", "t"])
            .output()
            .expect("verify"),
    );
    assert!(err.contains(&format!("file:{}", right.display())), "{err}");
    assert!(err.contains("does not exist"), "{err}");

    // `--encrypt` without a key, and on an existing plaintext store.
    let plain = dir.path().join("plain");
    let p = plain.to_str().expect("utf-8");
    fails(
        ward(p, &state)
            .args(["init", "--encrypt"])
            .output()
            .expect("init"),
    );
    ok(ward(p, &state).args(["init"]).output().expect("init"));
    let err = fails(
        ward(p, &state)
            .args(["init", "--encrypt", "--key-provider"])
            .arg(format!("file:{}", wrong.display()))
            .output()
            .expect("init"),
    );
    assert!(err.contains("without encryption"), "{err}");
}

/// A manifest swapped for a plaintext one (or for garbage) in an encrypted store is refused,
/// naming the file.
#[test]
fn a_plaintext_object_in_an_encrypted_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let key = key_file(dir.path(), "k");
    let store = dir.path().join("store");
    let loc = store.to_str().expect("utf-8");
    let hash = init_with_table(loc, &state, &key, dir.path());
    let manifest = store
        .join("versions")
        .join(&hash[3..])
        .join("manifest.json");
    std::fs::write(&manifest, b"{\"hash\": \"b3:00\"}").expect("write");
    let err = fails(
        ward(loc, &state)
            .args(["show", &hash])
            .output()
            .expect("show"),
    );
    assert!(err.contains("manifest.json"), "{err}");
    assert!(err.contains("not an encrypted object"), "{err}");
}

/// `ward key rotate`: every header rewritten, every data byte after the header unchanged,
/// everything still reads and verifies, and the old key no longer opens the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_rewraps_without_rewriting_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let old = key_file(dir.path(), "old.key");
    let new = key_file(dir.path(), "new.key");
    let store_dir = dir.path().join("store");
    let loc = store_dir.to_str().expect("utf-8");
    let hash = init_with_table(loc, &state, &old, dir.path());
    ok(ward(loc, &state)
        .args(["tag", "prod", &hash])
        .output()
        .expect("tag"));
    let encrypted = |all: BTreeMap<PathBuf, Vec<u8>>| -> BTreeMap<PathBuf, Vec<u8>> {
        all.into_iter()
            .filter(|(p, _)| {
                !p.ends_with("ward-store.json") && !p.starts_with(store_dir.join("tmp"))
            })
            .collect()
    };
    let before = encrypted(files(&store_dir));
    assert!(before.len() >= 5, "{:?}", before.keys());

    let report = lines(
        ward(loc, &state)
            .args(["key", "rotate", "--new-key-provider"])
            .arg(format!("file:{}", new.display()))
            .output()
            .expect("rotate"),
    );
    let report: serde_json::Value =
        serde_json::from_str(report.last().expect("report")).expect("json");
    assert_eq!(report["rewrapped"], before.len());
    assert_eq!(report["to_key_id"], key_id(&new));

    let after = encrypted(files(&store_dir));
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (path, b) in &before {
        let a = &after[path];
        assert_eq!(a.len(), b.len(), "{}", path.display());
        assert_eq!(a[..16], b[..16], "{}: fixed header", path.display());
        assert_ne!(a[16..32], b[16..32], "{}: key id", path.display());
        assert_eq!(a[32..48], b[32..48], "{}: object id", path.display());
        assert_eq!(
            a[HEADER_LEN..],
            b[HEADER_LEN..],
            "{}: data bytes rewritten",
            path.display()
        );
    }

    // Everything reads and verifies (the marker now names the new key).
    let store = Store::open_existing(&store_dir, ward::clock::system()).expect("open");
    let listed = store.list(&ListFilter::default()).expect("list");
    assert_eq!(listed.len(), 1);
    store.verify(&listed[0].hash).await.expect("verify");
    assert_eq!(
        store.head("prod").expect("head").expect("prod").hash,
        listed[0].hash
    );
    ok(ward(loc, &state)
        .args(["verify", "prod"])
        .output()
        .expect("verify"));

    // The old key opens neither the store nor any object.
    let err = fails(
        ward(loc, &state)
            .env("WARD_KEY_PROVIDER", format!("file:{}", old.display()))
            .args(["show", "t"])
            .output()
            .expect("show"),
    );
    assert!(err.contains("wrong key"), "{err}");
    let old_ring = Keyring::new(KeyProvider::File(old.clone()).load().expect("old key"));
    for (path, bytes) in &after {
        let e = crypt::open_bytes(&old_ring, bytes, &path.display().to_string())
            .expect_err("the old key opened a rotated object");
        assert!(e.to_string().contains("does not match"), "{e}");
    }
}

/// `ward init --encrypt` of `loc` under the key file `key`, then `ward put` of a small
/// table (written under `work`) as `t`: the version's hash.
fn init_with_table(loc: &str, state: &Path, key: &Path, work: &Path) -> String {
    let table = work.join("t.parquet");
    write_parquet(&table);
    ok(ward(loc, state)
        .args(["init", "--encrypt", "--key-provider"])
        .arg(format!("file:{}", key.display()))
        .output()
        .expect("init"));
    last(
        ward(loc, state)
            .args(["put", table.to_str().expect("utf-8"), "--name", "t"])
            .output()
            .expect("put"),
    )
}

/// A small Parquet table.
fn write_parquet(path: &Path) {
    let b = crate::hash_props::random_batch(300, 5);
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).expect("create"),
        b.schema(),
        None,
    )
    .expect("writer");
    w.write(&b).expect("write");
    w.close().expect("close");
}

/// The S3 test bucket, or `None` (the test then passes, saying it skipped; CI sets
/// `WARD_REQUIRE_S3=1`).
fn bucket() -> Option<String> {
    match std::env::var("WARD_TEST_S3_BUCKET") {
        Ok(b) if !b.trim().is_empty() => Some(b.trim().to_string()),
        _ => {
            let how = "start a server with `eval \"$(.ci/s3.sh start)\"`";
            if std::env::var("WARD_REQUIRE_S3").as_deref() == Ok("1") {
                panic!("WARD_REQUIRE_S3=1 but WARD_TEST_S3_BUCKET is unset: {how}");
            }
            eprintln!("SKIP: no S3 server (WARD_TEST_S3_BUCKET is unset): {how}");
            None
        }
    }
}

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

/// The same on S3: the hashes of a plain local store, no plaintext object in the bucket,
/// the online answer, and a key rotation (run again: nothing left to do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_s3_store_end_to_end() {
    let Some(bucket) = bucket() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path(), "ward.key");
    let location = unique(&bucket, "encrypted");
    let e = command_line(&location, dir.path(), Some(&key));
    assert_no_plaintext(&remote_objects(&location));
    let p = command_line(
        dir.path().join("plain").to_str().expect("utf-8"),
        dir.path(),
        None,
    );
    assert_eq!(e, p, "encryption changes no hash, on S3 either");

    let served = online(Path::new(&location), dir.path()).await;
    assert_eq!(served.timeline, e.online_timeline);
    assert!(!served.patients.is_empty());

    let state = dir.path().join("state");
    let new = key_file(dir.path(), "new.key");
    let rotate = || {
        let out = lines(
            ward(&location, &state)
                .args(["key", "rotate", "--new-key-provider"])
                .arg(format!("file:{}", new.display()))
                .output()
                .expect("rotate"),
        );
        serde_json::from_str::<serde_json::Value>(out.last().expect("report")).expect("json")
    };
    let first = rotate();
    assert!(
        first["rewrapped"].as_u64().unwrap_or_default() > 20,
        "{first}"
    );
    let again = rotate();
    assert_eq!(again["rewrapped"], 0, "{again}");
    ok(ward(&location, &state)
        .args(["verify", &e.timeline])
        .output()
        .expect("verify"));
    let err = fails(
        ward(&location, &state)
            .env("WARD_KEY_PROVIDER", format!("file:{}", key.display()))
            .args(["datasets"])
            .output()
            .expect("datasets"),
    );
    assert!(err.contains("wrong key"), "{err}");
}

/// `AWS_SSE_KMS_KEY_ID` asks S3 for SSE-KMS on every write: the client's configuration
/// carries the key id and `aws:kms`.
#[test]
fn sse_kms_key_id_reaches_the_s3_client() {
    use object_store::aws::AmazonS3ConfigKey;
    let key = |name: &str| name.parse::<AmazonS3ConfigKey>().expect("config key");
    let vars = |with: bool| {
        move |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".to_string()),
            "AWS_SSE_KMS_KEY_ID" if with => Some("arn:aws:kms:eu-west-3:1:key/abc".to_string()),
            _ => None,
        }
    };
    let cfg = S3Config::from_vars(vars(true)).expect("config");
    assert_eq!(
        cfg.sse_kms_key_id.as_deref(),
        Some("arn:aws:kms:eu-west-3:1:key/abc")
    );
    let b = cfg.builder("bucket");
    assert_eq!(
        b.get_config_value(&key("aws_sse_kms_key_id")).as_deref(),
        Some("arn:aws:kms:eu-west-3:1:key/abc")
    );
    assert_eq!(
        b.get_config_value(&key("aws_server_side_encryption"))
            .as_deref(),
        Some("aws:kms")
    );
    let none = S3Config::from_vars(vars(false)).expect("config");
    assert_eq!(
        none.builder("bucket")
            .get_config_value(&key("aws_server_side_encryption")),
        None
    );
}

/// With `AWS_SSE_KMS_KEY_ID`, every object Ward writes to S3 (the marker, manifests, heads,
/// Lance files) is stored with SSE-KMS under that key, as the server reports it (moto honours
/// the headers; read back with boto3 from the S3 server's virtualenv).
#[test]
fn sse_kms_is_passed_through_to_the_s3_server() {
    let Some(bucket) = bucket() else { return };
    let home = std::env::var_os("WARD_S3_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/ward-s3")));
    let Some(python) = home
        .map(|h| h.join("venv/bin/python"))
        .filter(|p| p.is_file())
    else {
        eprintln!("SKIP: no S3 server virtualenv (with boto3) to read the objects' SSE headers");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let location = unique(&bucket, "sse");
    let kms = "ward-test-kms-key";
    let table = dir.path().join("t.parquet");
    write_parquet(&table);
    let key = key_file(dir.path(), "k");
    let run = |args: &[&str]| {
        ward(&location, &state)
            .env("AWS_SSE_KMS_KEY_ID", kms)
            .args(args)
            .output()
            .expect("ward")
    };
    ok(run(&[
        "init",
        "--encrypt",
        "--key-provider",
        &format!("file:{}", key.display()),
    ]));
    last(run(&["put", table.to_str().expect("utf-8"), "--name", "t"]));
    let prefix = location
        .strip_prefix(&format!("s3://{bucket}/"))
        .expect("prefix");
    let script = r#"
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ.get("AWS_REGION", "us-east-1"))
bucket, prefix = sys.argv[1], sys.argv[2]
keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/") for o in p.get("Contents", [])]
for k in keys:
    h = s3.head_object(Bucket=bucket, Key=k)
    print(k, h.get("ServerSideEncryption"), h.get("SSEKMSKeyId"))
"#;
    let out = ok(Command::new(python)
        .args(["-c", script, &bucket, prefix])
        .output()
        .expect("python"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let objects: Vec<&str> = text.lines().collect();
    assert!(objects.len() >= 5, "{text}");
    assert!(text.contains("ward-store.json"), "{text}");
    assert!(text.contains(".lance"), "{text}");
    for line in objects {
        assert!(line.ends_with(&format!(" aws:kms {kms}")), "{line}");
    }
}
