//! Encryption at rest (`docs/encryption.md`): encrypt and decrypt throughput of
//! `EncryptedStore` over a whole object, beside the same put and get without it, and the
//! latency of ranged reads from a local directory with and without it.
//!
//! Then the real paths: `ward ingest`, `ward materialize` and `ward historical` run as
//! processes (the `ward` binary of the same build) on a plain and on an encrypted local store
//! (`ward init --encrypt`), alternating, with the median wall time of each and the overhead of
//! encryption (issue 35's target: at most 15% on ingest and historical lookups).
//!
//! The stores are a local directory and, when `WARD_BENCH_S3_BUCKET` names a bucket of the
//! S3-compatible server the `AWS_*` variables point at (`eval "$(.ci/s3.sh start)"` then
//! `WARD_BENCH_S3_BUCKET=$WARD_TEST_S3_BUCKET`, and `WARD_STATE_DIR` a local directory for
//! the audit trail of an `s3://` store), `s3://BUCKET/...` too: plain and encrypted
//! on each. After the historical lookup, online lookups: a `ward serve` child over the store
//! (its default settings, security off) and 8 closed-loop gRPC clients for
//! `WARD_BENCH_ONLINE_SECS` seconds (default 5; 0 skips), one random patient x 20 features
//! of `readmission` each: p50, p99, lookups/s (issue 35: online lookups are served from
//! memory, so encryption and S3 should not change them).
//!
//! `WARD_BIN=PATH` runs another `ward` binary instead (a release build, say).
//!
//! `cargo bench --bench crypt` (add `-- MIB REPEATS RANGES PATIENTS` to change the defaults
//! 64 5 2000 2000; PATIENTS 0 skips the processes).

use std::path::Path as FsPath;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rand::{Rng, SeedableRng};
use ward::security::keyring::{Kek, Keyring};
use ward::store::crypt::EncryptedStore;

use crate::grpc_common::proto::features_client::FeaturesClient;
use crate::grpc_common::proto::OnlineRequest;

mod grpc_common;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn keyring() -> Keyring {
    Keyring::new(Kek::from_bytes(&[0x42; 32], "bench").expect("key"))
}

/// Median MB/s of a put and of a get of `data` through `store`.
async fn throughput(store: &dyn ObjectStore, data: &bytes::Bytes, repeats: usize) -> (f64, f64) {
    let path = Path::from("bench/object");
    let mb = data.len() as f64 / 1e6;
    let (mut put, mut get) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let t = Instant::now();
        store
            .put(&path, PutPayload::from(data.clone()))
            .await
            .expect("put");
        put.push(mb / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let back = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        get.push(mb / t.elapsed().as_secs_f64());
        assert_eq!(back.len(), data.len());
    }
    (median(put), median(get))
}

/// Median and p99 microseconds of `n` random ranged reads of `len` bytes.
async fn ranged(store: &dyn ObjectStore, path: &Path, size: u64, len: u64, n: usize) -> (f64, f64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let start = rng.random_range(0..size - len);
        let t = Instant::now();
        let b = store
            .get_range(path, start..start + len)
            .await
            .expect("range");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(b.len() as u64, len);
    }
    (median(lat.clone()), quantile(lat, 0.99))
}

/// Online lookups against a `ward serve` child over `store` with the feature repository
/// `repo`: 8 clients for `secs` seconds; (p50 us, p99 us, lookups/s).
fn online(store: &FsPath, repo: &str, dir: &FsPath, patients: usize, secs: u64) -> (f64, f64, f64) {
    let text = std::fs::read_to_string(repo).expect("repo");
    let parsed = ward::features::FeatureRepo::parse(&text, repo).expect("repo");
    let feats: Arc<Vec<String>> = Arc::new(
        parsed
            .set("readmission")
            .expect("set")
            .features
            .iter()
            .filter(|f| !f.kind.is_label())
            .take(20)
            .map(|f| f.name.clone())
            .collect(),
    );
    let config = dir.join("serve.toml");
    std::fs::write(&config, format!("features = [{repo:?}]\n")).expect("config");
    let (proc, addr) = grpc_common::start_ward(store, &config);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let run = rt.block_on(grpc_common::drive(8, secs, move |c| {
        let feats = feats.clone();
        async move {
            let mut client = FeaturesClient::connect(format!("http://{addr}"))
                .await
                .expect("connect");
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c as u64);
            let (mut lat, mut errors) = (Vec::new(), 0);
            let warm = Instant::now() + Duration::from_secs(1);
            let end = warm + Duration::from_secs(secs);
            while Instant::now() < end {
                let req = OnlineRequest {
                    feature_set: "readmission".into(),
                    patient_ids: vec![format!("P{:07}", rng.random_range(0..patients))],
                    as_of: String::new(),
                    features: feats.to_vec(),
                };
                let s = Instant::now();
                let res = client.get_online_features(req).await;
                if s >= warm {
                    lat.push(s.elapsed());
                    errors += usize::from(res.is_err());
                }
            }
            (lat, errors)
        }
    }));
    drop(proc);
    assert_eq!(run.errors, 0, "online lookups failed");
    (
        grpc_common::pct(&run.lat, 0.5),
        grpc_common::pct(&run.lat, 0.99),
        run.lat.len() as f64 / run.secs,
    )
}

/// Runs `ward --store STORE ARGS...`, failing loudly; its wall time.
fn ward(store: &FsPath, args: &[&str]) -> Duration {
    let t = Instant::now();
    let bin = std::env::var_os("WARD_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ward").into());
    let mut cmd = Command::new(bin);
    cmd.arg("--store")
        .arg(store)
        .args(args)
        .env_remove("WARD_KEY_PROVIDER");
    if let (Some(name), Some(state)) = (
        store.to_str().and_then(|s| s.strip_prefix("s3://")),
        std::env::var_os("WARD_STATE_DIR"),
    ) {
        // Each s3:// store's audit trail in a local directory of its own.
        cmd.env(
            "WARD_STATE_DIR",
            FsPath::new(&state).join(name.replace('/', "_")),
        );
    }
    let out = cmd.output().expect("run ward");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "ward {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn secs(v: &[Duration]) -> f64 {
    median(v.iter().map(Duration::as_secs_f64).collect())
}

/// `ward ingest`, `materialize` and `historical` as processes on a plain and an encrypted
/// store of a synthetic cohort of `patients`, `repeats` times each (alternating).
fn processes(patients: usize, repeats: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cohort = d.join("cohort");
    let scratch = d.join("synth-store");
    ward(
        &scratch,
        &[
            "synth",
            "--patients",
            &patients.to_string(),
            "--seed",
            "1",
            "--format",
            "fhir-ndjson",
            "--out",
            cohort.to_str().expect("utf-8"),
        ],
    );
    let key = d.join("ward.key");
    std::fs::write(&key, Kek::generate_hex().expect("key")).expect("key file");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let provider = format!("file:{}", key.display());
    let entities = d.join("rows.csv");
    let mut rows = String::from("patient_id,timestamp\n");
    for p in 0..patients {
        for t in ["2015-01-01", "2020-06-01", "2030-01-01"] {
            rows.push_str(&format!("P{p:07},{t}\n"));
        }
    }
    std::fs::write(&entities, rows).expect("entities");
    let features = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/features/readmission.toml"
    );
    let online_secs: u64 = std::env::var("WARD_BENCH_ONLINE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let bucket = std::env::var("WARD_BENCH_S3_BUCKET")
        .ok()
        .filter(|b| !b.is_empty());
    assert!(
        bucket.is_none() || std::env::var_os("WARD_STATE_DIR").is_some(),
        "an s3:// store keeps its audit trail in WARD_STATE_DIR: set it to a local directory"
    );
    let mut variants = vec![("local", "plain"), ("local", "encrypted")];
    if bucket.is_some() {
        variants.extend([("s3", "plain"), ("s3", "encrypted")]);
    }
    // variant x [ingest, materialize, historical]; online (p50, p99, per s) per variant
    let mut times = vec![[Vec::new(), Vec::new(), Vec::new()]; variants.len()];
    let mut onlines: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); variants.len()];
    for rep in 0..repeats {
        for (e, (place, label)) in variants.iter().enumerate() {
            let store = match (place, &bucket) {
                (&"s3", Some(b)) => std::path::PathBuf::from(format!(
                    "s3://{b}/crypt-bench-{}-{label}-{rep}",
                    std::process::id()
                )),
                _ => d.join(format!("{label}-{rep}")),
            };
            if *label == "encrypted" {
                ward(&store, &["init", "--encrypt", "--key-provider", &provider]);
            } else {
                ward(&store, &["init"]);
            }
            times[e][0].push(ward(
                &store,
                &[
                    "ingest",
                    "--format",
                    "fhir-ndjson",
                    cohort.to_str().expect("utf-8"),
                ],
            ));
            times[e][1].push(ward(
                &store,
                &[
                    "materialize",
                    "--features",
                    features,
                    "--set",
                    "readmission",
                ],
            ));
            let out = d.join(format!("train-{place}-{label}-{rep}.parquet"));
            times[e][2].push(ward(
                &store,
                &[
                    "historical",
                    "--set",
                    "readmission",
                    "--entities",
                    entities.to_str().expect("utf-8"),
                    "--out",
                    out.to_str().expect("utf-8"),
                ],
            ));
            if online_secs > 0 {
                onlines[e].push(online(&store, features, d, patients, online_secs));
            }
            let _ = std::fs::remove_dir_all(&store);
        }
    }
    println!(
        "ward as a process, {patients} patients ({} entity rows), median of {repeats} (s):",
        patients * 3
    );
    println!("| store | ingest s | materialize s | historical s | online p50 us | online p99 us | online lookups/s |");
    println!("|---|---|---|---|---|---|---|");
    let med = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            median(v.iter().map(f).collect())
        }
    };
    for (e, (place, label)) in variants.iter().enumerate() {
        println!(
            "| {place}, {label} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} | {:.0} |",
            secs(&times[e][0]),
            secs(&times[e][1]),
            secs(&times[e][2]),
            med(&onlines[e], |r| r.0),
            med(&onlines[e], |r| r.1),
            med(&onlines[e], |r| r.2),
        );
    }
    println!();
    for (e, (place, label)) in variants.iter().enumerate() {
        if *label != "encrypted" {
            continue;
        }
        // The plain variant of the same place is the one before.
        let p = e - 1;
        for (i, what) in ["ingest", "materialize", "historical"].iter().enumerate() {
            let (pt, et) = (secs(&times[p][i]), secs(&times[e][i]));
            println!(
                "  {place}: {what:<12} plain {pt:8.3}, encrypted {et:8.3}  ({:+.1}%)",
                (et / pt - 1.0) * 100.0
            );
        }
        if !onlines[e].is_empty() {
            let (pp, ep) = (med(&onlines[p], |r| r.1), med(&onlines[e], |r| r.1));
            println!(
                "  {place}: online p99   plain {pp:8.0}, encrypted {ep:8.0} us ({:+.1}%)",
                (ep / pp - 1.0) * 100.0
            );
        }
    }
    if variants.len() > 2 {
        for (i, what) in ["ingest", "materialize", "historical"].iter().enumerate() {
            let (l, s3) = (secs(&times[0][i]), secs(&times[2][i]));
            println!(
                "  plain: {what:<12} local {l:8.3}, s3 {s3:8.3} ({:.2}x)",
                s3 / l
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let repeats: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let ranges: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let patients: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut data = vec![0u8; mib << 20];
        rand_chacha::ChaCha8Rng::seed_from_u64(1).fill(&mut data[..]);
        let data = bytes::Bytes::from(data);
        println!(
            "object: {mib} MiB, repeats: {repeats} (medians); profile: {}",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "optimized"
            }
        );

        let plain: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let enc = EncryptedStore::wrap(Arc::new(InMemory::new()), keyring());
        let (pp, pg) = throughput(plain.as_ref(), &data, repeats).await;
        let (ep, eg) = throughput(enc.as_ref(), &data, repeats).await;
        // In memory, a plain put or get moves a reference to the bytes (no copy): its rate is
        // not a throughput, only a sign that the encrypted rate is the cipher's cost alone.
        println!("in memory, put: encrypted {ep:8.0} MB/s (plain: {pp:.0} MB/s, no copy)");
        println!("in memory, get: encrypted {eg:8.0} MB/s (plain: {pg:.0} MB/s, no copy)");

        let dir = tempfile::tempdir().expect("tempdir");
        let local: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local"));
        let enc_local = EncryptedStore::wrap(local.clone(), keyring());
        let (lp, lg) = throughput(local.as_ref(), &data, repeats).await;
        let (elp, elg) = throughput(enc_local.as_ref(), &data, repeats).await;
        println!("local dir, put: plain {lp:8.0} MB/s, encrypted {elp:8.0} MB/s");
        println!("local dir, get: plain {lg:8.0} MB/s, encrypted {elg:8.0} MB/s");

        let path = Path::from("ranged/object");
        let epath = Path::from("ranged/encrypted");
        local
            .put(&path, PutPayload::from(data.clone()))
            .await
            .expect("put");
        enc_local
            .put(&epath, PutPayload::from(data.clone()))
            .await
            .expect("put");
        let size = data.len() as u64;
        println!("ranged reads from the local dir, {ranges} random ranges each (median / p99 us):");
        for len in [4096u64, 65_536, 1 << 20] {
            let (pm, p99) = ranged(local.as_ref(), &path, size, len, ranges).await;
            let (em, e99) = ranged(enc_local.as_ref(), &epath, size, len, ranges).await;
            // A store of its own: the first read of the object fetches the header too.
            let cold = EncryptedStore::wrap(local.clone(), keyring());
            let (cm, c99) = ranged(cold.as_ref(), &epath, size, len, 1).await;
            println!(
                "  {len:>8} B: plain {pm:7.0} / {p99:7.0}, encrypted {em:7.0} / {e99:7.0}, \
                 encrypted first read (header too) {cm:7.0} / {c99:7.0}"
            );
        }
    });
    if patients > 0 {
        processes(patients, repeats);
    }
}
