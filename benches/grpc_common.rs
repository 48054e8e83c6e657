//! Shared by the service bench binaries (serve, secure_online): a cohort in a store, a
//! `ward serve` child process, and a closed-loop load driver.

// Each bench binary includes this file and uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ward::curated::Table;
use ward::features::{self, FeatureRepo, MaterializeOptions};
use ward::store::{Kind, PutOptions, Store};
use ward::synth::{generate_cohort, SynthOptions};

/// The load generator runs on the same cores as the server it measures: it uses the same
/// allocator as the `ward` binary (mimalloc) so that its own per-request allocations take as
/// little of the machine as they can.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A gRPC channel that is one bare HTTP/2 connection: requests go straight to hyper's
/// connection, without the request queue and its worker task that `tonic::transport::Channel`
/// puts in front (one task hop less per request on the cores the server also runs on).
#[derive(Clone)]
pub(crate) struct H2Channel(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl H2Channel {
    /// Connects to `addr` (plain HTTP/2); the connection is driven by a spawned task.
    pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<H2Channel> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(H2Channel(send))
    }

    /// The URI tonic's stubs put in front of each method path.
    pub(crate) fn origin(addr: SocketAddr) -> http::Uri {
        format!("http://{addr}").parse().expect("origin")
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for H2Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

pub(crate) fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .filter(|a| !a.starts_with("--"))
        .nth(i)
        .and_then(|a| a.replace(',', "").parse().ok())
        .unwrap_or(default)
}

/// Base64url without padding (JWK coordinates).
pub(crate) fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A child process killed when dropped, with every process of its group: spawn it with
/// [`own_group`] so that the processes it starts (Feast's server workers) go with it.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` in a process group of its own (see [`Proc`]).
pub(crate) fn own_group(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
}

pub(crate) fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

pub(crate) struct Run {
    pub(crate) clients: usize,
    pub(crate) lat: Vec<Duration>,
    pub(crate) secs: f64,
    pub(crate) errors: usize,
}

impl Run {
    pub(crate) fn row(&self, who: &str) -> String {
        format!(
            "| {who} | {} | {:.0} | {:.0} | {:.0} | {} |",
            self.clients,
            pct(&self.lat, 0.5),
            pct(&self.lat, 0.99),
            self.lat.len() as f64 / self.secs,
            self.errors
        )
    }
}

/// Drives `clients` concurrent loops of `one` for `secs` seconds (after a 1 s warm-up).
pub(crate) async fn drive<F, Fut>(clients: usize, secs: u64, make: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (Vec<Duration>, usize)> + Send + 'static,
{
    let tasks: Vec<_> = (0..clients).map(|c| tokio::spawn(make(c))).collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        lat.extend(l);
        errors += e;
    }
    lat.sort_unstable();
    Run {
        clients,
        lat,
        secs: secs as f64,
        errors,
    }
}

pub(crate) async fn put_cohort(store: &Store, patients: u64) -> Vec<String> {
    let opts = SynthOptions {
        patients,
        seed: 11,
        ..SynthOptions::default()
    };
    let tables = generate_cohort(&opts);
    for t in Table::ALL {
        let b = tables.to_batch(t).expect("batch");
        store
            .put_batches(
                b.schema(),
                vec![b],
                PutOptions::new(t.name(), Kind::Curated),
            )
            .await
            .expect("put");
    }
    tables
        .patients
        .iter()
        .map(|p| p.patient_id.clone())
        .collect()
}

/// A store under a temporary directory holding a synthetic cohort and the materialized
/// `readmission` feature set (examples/features/readmission.toml).
pub(crate) struct Readmission {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) store_dir: PathBuf,
    pub(crate) store: Store,
    /// The cohort's patient ids.
    pub(crate) ids: Vec<String>,
    /// The feature repository file (for `ward serve`'s `features`).
    pub(crate) repo_path: PathBuf,
    /// Its first 20 non-label features.
    pub(crate) features: Vec<String>,
    /// How many features the set has, labels included.
    pub(crate) set_size: usize,
    /// The materialized timeline's hash.
    pub(crate) timeline: String,
}

pub(crate) async fn readmission(prefix: &str, patients: u64) -> Readmission {
    const REPO: &str = include_str!("../examples/features/readmission.toml");
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("tempdir");
    let store_dir = dir.path().join("store");
    let store = Store::open(&store_dir, ward::clock::system()).expect("store");
    eprintln!("cohort of {patients} patients, materializing readmission ...");
    let ids = put_cohort(&store, patients).await;
    let repo_path = dir.path().join("readmission.toml");
    std::fs::write(&repo_path, REPO).expect("repo");
    let repo = FeatureRepo::parse(REPO, "readmission.toml").expect("repo");
    let timeline =
        features::materialize(&store, &repo, "readmission", &MaterializeOptions::default())
            .await
            .expect("materialize");
    let set = repo.set("readmission").expect("set");
    let features: Vec<String> = set
        .features
        .iter()
        .filter(|f| !f.kind.is_label())
        .take(20)
        .map(|f| f.name.clone())
        .collect();
    assert_eq!(features.len(), 20);
    Readmission {
        dir,
        store_dir,
        store,
        ids,
        repo_path,
        features,
        set_size: set.features.len(),
        timeline: timeline.hash.to_string(),
    }
}

pub(crate) fn start_ward(store: &Path, config: &Path) -> (Proc, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(store)
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
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
        if let Some(a) = line.strip_prefix("listening on ") {
            break a
                .split_whitespace()
                .next()
                .expect("addr")
                .parse()
                .expect("addr");
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), addr)
}
