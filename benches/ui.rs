//! Page loads of the web UI with 10,000 versions in the catalog (issue 36: "pages load in <
//! 300 ms"), against a `ward serve --http` child process at its default settings with
//! authentication on (an API token with the example policy's steward role; every request
//! authenticated, authorized and audited, the audit trail synced as configured by default).
//!
//! The store: `ward demo`'s pipeline on a small cohort (raw FHIR input, the curated tables,
//! the readmission timelines), a training set made from the readmission timeline and a model
//! card registered on it; then copies of a curated table's manifest under new hashes (named
//! `bulk-0` .. `bulk-99`) up to VERSIONS versions in all. The catalog reads only manifests,
//! so a copy costs what a real version costs it (pages that read rows are asked only of the
//! real versions).
//!
//! Timed, each REQUESTS times after one untimed warm-up (median, p99, max; HTTP/1.1, a new
//! connection each, as a browser's first load):
//! - the catalog page (`/ui/`) and its JSON (`/api/versions`);
//! - a search (`/ui/?q=bulk-7&kind=curated`: a name filter over every version, paged);
//! - a version page with its lineage drawn (the training set: raw -> curated -> timeline ->
//!   training -> model);
//! - a feature-set page (`/ui/feature-sets/readmission`: its definition, timelines and the
//!   per-feature plots of the newest timeline; the first request computes the statistics,
//!   timed apart);
//! - a model card page;
//! - the first catalog request after a new version is stored (NEW times: a version put by
//!   this process into the store the server reads, then `/ui/` timed at once).
//!
//! `cargo bench --bench ui -- [VERSIONS [REQUESTS [NEW]]]` (defaults 10,000, 50, 10). Each
//! line ends with `ok` when the median and the p99 are under 300 ms, else `SLOW`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use ward::lookup::{Entities, HistoricalRequest};
use ward::store::{Kind, PutOptions, Store};

/// The target of issue 36.
const TARGET: Duration = Duration::from_millis(300);
const TOKEN: &str = "bench-steward-token-0123456789";

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .filter(|a| !a.starts_with("--"))
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// A `ward serve` child, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET target` with the bench's token on a new connection; (status, body bytes).
fn get(addr: SocketAddr, target: &str) -> (u16, usize) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.find("\r\n\r\n").map_or(0, |i| buf.len() - i - 4);
    (status, body)
}

/// Median, p99 and max of `d` (sorted here).
fn summary(d: &mut [Duration]) -> (Duration, Duration, Duration) {
    d.sort();
    let at = |q: f64| d[((d.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), d[d.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn report(what: &str, d: &mut [Duration], bytes: usize) {
    let (p50, p99, max) = summary(d);
    println!(
        "{what:<44} n {:>3}  median {:>9}  p99 {:>9}  max {:>9}  {:>7} KB  {}",
        d.len(),
        ms(p50),
        ms(p99),
        ms(max),
        bytes / 1024,
        if p50 < TARGET && p99 < TARGET {
            "ok"
        } else {
            "SLOW"
        }
    );
}

/// Times `n` requests of `target` after one untimed warm-up.
fn time(addr: SocketAddr, what: &str, target: &str, n: u64) {
    let (status, _) = get(addr, target);
    assert_eq!(status, 200, "{target}");
    let mut d = Vec::new();
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let (status, b) = get(addr, target);
        d.push(t.elapsed());
        assert_eq!(status, 200, "{target}");
        bytes = b;
    }
    report(what, &mut d, bytes);
}

/// The demo's store with a training set and a model card; returns (training, model).
async fn real_versions(store: &Store, work: &Path) -> (String, String) {
    let opts = ward::demo::DemoOptions {
        patients: 60,
        seed: 7,
    };
    ward::demo::run(store, work, &opts, None)
        .await
        .expect("demo");
    let head = store.head("patients").expect("head").expect("patients");
    let (_, batches) = store.read(&head.hash).await.expect("patients");
    let ids: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let c =
                arrow::compute::cast(b.column_by_name("patient_id").expect("id"), &DataType::Utf8)
                    .expect("utf8");
            c.as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .take(20)
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let t = chrono::DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
        .expect("time")
        .timestamp_micros();
    let rows = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids.clone())),
            Arc::new(TimestampMicrosecondArray::from(vec![t; ids.len()]).with_timezone("UTC")),
        ],
    )
    .expect("entities");
    let training = ward::lookup::historical(
        store,
        HistoricalRequest::new("readmission", Entities::Batches(vec![rows])),
    )
    .await
    .expect("training set");
    let card = ward::models::register(
        store,
        &ward::models::Registration {
            name: "readmission-bench".into(),
            training: training.hash.to_string(),
            owner: "bench".into(),
            description: "a card for the page-load bench".into(),
            metrics: [("auroc".to_string(), 0.7)].into_iter().collect(),
        },
    )
    .await
    .expect("model card");
    (training.hash.to_string(), card.manifest.hash.to_string())
}

/// Copies of the manifest of `patients` under new hashes, named `bulk-<i % 100>`, until the
/// store holds `total` versions.
fn fill(store_dir: &Path, store: &Store, total: usize) {
    let head = store.head("patients").expect("head").expect("patients");
    let versions = store_dir.join("versions");
    let text = std::fs::read_to_string(versions.join(head.hash.hex()).join("manifest.json"))
        .expect("manifest");
    let have = store.version_hashes().expect("versions").len();
    for i in 0..total.saturating_sub(have) {
        let hex = blake3::hash(format!("bulk {i}").as_bytes())
            .to_hex()
            .to_string();
        let dir = versions.join(&hex);
        std::fs::create_dir(&dir).expect("mkdir");
        let mut m: serde_json::Value = serde_json::from_str(&text).expect("manifest JSON");
        m["hash"] = serde_json::json!(format!("b3:{hex}"));
        m["name"] = serde_json::json!(format!("bulk-{}", i % 100));
        std::fs::write(dir.join("manifest.json"), m.to_string()).expect("write");
    }
}

/// Starts `ward serve --addr 127.0.0.1:0 --http 127.0.0.1:0 --config CONFIG`; its HTTP
/// address.
fn start(store: &Path, config: &Path) -> (Proc, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(store)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("ward serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("ward serve exited before listening")
            .expect("stderr");
        if let Some(a) = line.strip_prefix("http listening on ") {
            break a
                .split_whitespace()
                .next()
                .expect("addr")
                .parse()
                .expect("addr");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), addr)
}

fn main() {
    let total = arg(1, 10_000) as usize;
    let n = arg(2, 50).max(1);
    let new = arg(3, 10).max(1);
    let dir = tempfile::Builder::new()
        .prefix("ward-ui-bench")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let store_dir = dir.path().join("store");
    let store = Store::open(&store_dir, ward::clock::system()).expect("store");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    eprintln!("the demo's pipeline on 60 patients, a training set, a model card ...");
    let (training, model) = rt.block_on(real_versions(&store, &dir.path().join("work")));
    fill(&store_dir, &store, total);
    let count = store.version_hashes().expect("versions").len();
    let repo = dir.path().join("readmission.toml");
    std::fs::write(&repo, ward::demo::READMISSION_FEATURES).expect("repo");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/security/policy.toml"),
        dir.path().join("policy.toml"),
    )
    .expect("policy");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "features = [{:?}]\n[auth]\npolicy = \"policy.toml\"\n[[auth.api_tokens]]\nsubject = \"bench\"\nblake3 = \"{}\"\nroles = [\"steward\"]\n",
            repo.display().to_string(),
            ward::security::auth::tokens::hash_token(TOKEN)
        ),
    )
    .expect("config");
    let started = Instant::now();
    let (_ward, addr) = start(&store_dir, &config);
    // The first page as soon as the server listens (the index may still be read in the
    // background).
    let t = Instant::now();
    let (status, _) = get(addr, "/ui/");
    assert_eq!(status, 200);
    println!(
        "{count} versions; ward serve listening after {}; first /ui/ {}",
        ms(started.elapsed() - t.elapsed()),
        ms(t.elapsed())
    );
    // Past the index's 2 s "racy" window, as a server that has been up a while.
    std::thread::sleep(Duration::from_millis(2100));
    time(addr, "GET /ui/ (catalog, 50 newest)", "/ui/", n);
    time(addr, "GET /api/versions", "/api/versions", n);
    time(
        addr,
        "GET /ui/?q=bulk-7&kind=curated (search)",
        "/ui/?q=bulk-7&kind=curated",
        n,
    );
    time(
        addr,
        "GET /ui/?q=bulk&offset=5000 (deep page)",
        "/ui/?q=bulk&offset=5000",
        n,
    );
    time(
        addr,
        "GET /ui/versions/{training} (lineage)",
        &format!("/ui/versions/{training}"),
        n,
    );
    let t = Instant::now();
    let (status, _) = get(addr, "/ui/feature-sets/readmission");
    assert_eq!(status, 200);
    println!(
        "{:<44} first request (statistics computed): {}",
        "GET /ui/feature-sets/readmission",
        ms(t.elapsed())
    );
    time(
        addr,
        "GET /ui/feature-sets/readmission (cached)",
        "/ui/feature-sets/readmission",
        n,
    );
    time(
        addr,
        "GET /ui/models/{card}",
        &format!("/ui/models/{model}"),
        n,
    );
    // The first request after a new version: put one, then ask for the catalog at once.
    let mut d = Vec::new();
    let mut bytes = 0;
    for i in 0..new {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow::array::PrimitiveArray::<Int64Type>::from(
                vec![i as i64, 1_000_000],
            ))],
        )
        .expect("batch");
        rt.block_on(store.put_batches(schema, vec![b], PutOptions::new("late", Kind::Other)))
            .expect("put");
        let t = Instant::now();
        let (status, b) = get(addr, "/ui/");
        d.push(t.elapsed());
        assert_eq!(status, 200);
        bytes = b;
        // Let the stamp settle as between real writes.
        std::thread::sleep(Duration::from_millis(2100));
    }
    report("GET /ui/ first after a new version", &mut d, bytes);
}
