//! What the server takes in and what it tells clients, over real gRPC on loopback:
//! `IngestPaths` reads only under `[ingest] roots` (no symbolic-link escape, no `..`, no
//! devices or FIFOs), every input is capped in size and in gzip content (IngestPaths and
//! IngestUpload), nothing refused is stored, and a server-side error reaches the client
//! only as `internal error (id ...)` with the id and the full text in the server's log.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::proto::{self, ingest_client::IngestClient, ingest_upload_request::Part};
use ward::features::FeatureRepo;
use ward::service::config::IngestConfig;
use ward::service::{Limits, ServeConfig, Server};
use ward::store::{ListFilter, Store};
use ward::synth::{SynthFormat, SynthOptions};

struct Srv {
    store: Store,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<ward::Result<()>>>,
}

impl Srv {
    async fn start(store_dir: &Path, ingest: IngestConfig) -> Srv {
        let store = Store::open(store_dir, ward::clock::system()).unwrap();
        let cfg = ServeConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            limits: Limits {
                max_upload_bytes: 4 << 20,
                ..Limits::default()
            },
            ingest,
            origin: "test.toml".into(),
            ..ServeConfig::default()
        };
        let repo =
            FeatureRepo::parse(ward::demo::READMISSION_FEATURES, "readmission.toml").unwrap();
        let server = Server::bind(&cfg, store.clone(), repo).await.unwrap();
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Srv {
            store,
            addr,
            stop: Some(tx),
            served: Some(served),
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn ingest(&self) -> IngestClient<Channel> {
        IngestClient::new(self.channel().await)
    }

    fn versions(&self) -> usize {
        self.store.list(&ListFilter::default()).unwrap().len()
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.served.take() {
            h.await.unwrap().unwrap();
        }
    }
}

fn request(paths: &[&Path]) -> proto::IngestPathsRequest {
    proto::IngestPathsRequest {
        options: Some(proto::IngestOptions {
            format: "fhir-ndjson".into(),
            ..Default::default()
        }),
        paths: paths.iter().map(|p| p.display().to_string()).collect(),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Calls IngestPaths and expects a refusal with `code` whose message holds every one of
/// `words`.
async fn refused(c: &mut IngestClient<Channel>, paths: &[&Path], code: Code, words: &[&str]) {
    let err = c.ingest_paths(request(paths)).await.unwrap_err();
    assert_eq!(err.code(), code, "{paths:?}: {err:?}");
    for w in words {
        assert!(
            err.message().contains(w),
            "{paths:?}: {w:?} not in {:?}",
            err.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_paths_needs_configured_roots() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Patient.ndjson");
    std::fs::write(&src, b"{}\n").unwrap();
    let mut srv = Srv::start(&dir.path().join("store"), IngestConfig::default()).await;
    let mut c = srv.ingest().await;
    refused(
        &mut c,
        &[&src],
        Code::FailedPrecondition,
        &["[ingest] roots", "IngestUpload"],
    )
    .await;
    assert_eq!(srv.versions(), 0);
    srv.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_paths_reads_only_regular_files_under_the_roots() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("inbox");
    std::fs::create_dir(&root).unwrap();
    let outside = dir.path().join("private");
    std::fs::create_dir(&outside).unwrap();
    let secret = outside.join("Patient.ndjson");
    std::fs::write(
        &secret,
        b"{\"resourceType\":\"Patient\",\"id\":\"secret\"}\n",
    )
    .unwrap();
    let ingest = IngestConfig {
        roots: vec![root.clone(), PathBuf::from("/dev")],
        max_file_bytes: 256 << 10,
        max_decompressed_bytes: 1 << 20,
    };
    let mut srv = Srv::start(&dir.path().join("store"), ingest).await;
    let mut c = srv.ingest().await;

    // A path outside the roots (existing or not: the answer does not tell).
    refused(
        &mut c,
        &[&secret],
        Code::PermissionDenied,
        &["Patient.ndjson", "outside the ingest roots", "test.toml"],
    )
    .await;
    refused(
        &mut c,
        &[&outside.join("absent.ndjson")],
        Code::PermissionDenied,
        &["outside the ingest roots"],
    )
    .await;
    refused(
        &mut c,
        &[Path::new("/etc/passwd")],
        Code::PermissionDenied,
        &["/etc/passwd"],
    )
    .await;
    // `..` traversal out of the root.
    let dotdot = root.join("../private/Patient.ndjson");
    refused(&mut c, &[&dotdot], Code::InvalidArgument, &[".."]).await;
    // Relative paths.
    refused(
        &mut c,
        &[Path::new("Patient.ndjson")],
        Code::InvalidArgument,
        &["absolute"],
    )
    .await;
    // Symbolic links out of the root: a file link given directly, a directory link walked.
    symlink(&secret, root.join("escape.ndjson")).unwrap();
    refused(
        &mut c,
        &[&root.join("escape.ndjson")],
        Code::PermissionDenied,
        &["escape.ndjson"],
    )
    .await;
    std::fs::create_dir(root.join("walk")).unwrap();
    symlink(&outside, root.join("walk/out")).unwrap();
    refused(
        &mut c,
        &[&root.join("walk")],
        Code::PermissionDenied,
        &["out"],
    )
    .await;
    // A symbolic link loop.
    std::fs::create_dir_all(root.join("loop/a")).unwrap();
    symlink(root.join("loop"), root.join("loop/a/back")).unwrap();
    refused(
        &mut c,
        &[&root.join("loop")],
        Code::InvalidArgument,
        &["loop", "back"],
    )
    .await;
    std::fs::create_dir(root.join("self")).unwrap();
    symlink(root.join("self/me"), root.join("self/me")).unwrap();
    refused(
        &mut c,
        &[&root.join("self/me")],
        Code::InvalidArgument,
        &["loop"],
    )
    .await;
    // Devices and FIFOs, even under a root, and a link to a device.
    refused(
        &mut c,
        &[Path::new("/dev/zero")],
        Code::InvalidArgument,
        &["/dev/zero", "character device"],
    )
    .await;
    std::fs::create_dir(root.join("fifos")).unwrap();
    let fifo = root.join("fifos/Patient.ndjson");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    refused(
        &mut c,
        &[&root.join("fifos")],
        Code::InvalidArgument,
        &["FIFO"],
    )
    .await;
    std::fs::create_dir(root.join("dev")).unwrap();
    symlink("/dev/zero", root.join("dev/Patient.ndjson")).unwrap();
    // (`/dev` is a root of this server, so the link stays under the roots: refused as a device.)
    refused(
        &mut c,
        &[&root.join("dev")],
        Code::InvalidArgument,
        &["dev/Patient.ndjson", "character device"],
    )
    .await;
    // A file over max_file_bytes.
    std::fs::create_dir(root.join("big")).unwrap();
    let big = root.join("big/Patient.ndjson");
    std::fs::write(&big, vec![b' '; (256 << 10) + 1]).unwrap();
    refused(
        &mut c,
        &[&big],
        Code::InvalidArgument,
        &[
            "Patient.ndjson",
            "262145 bytes",
            "limit of 262144",
            "max_file_bytes",
        ],
    )
    .await;
    // A gzip bomb: 64 MiB of zeros in about 64 KiB, over max_decompressed_bytes.
    std::fs::create_dir(root.join("bomb")).unwrap();
    let bomb = root.join("bomb/Patient.ndjson.gz");
    let packed = gzip(&vec![b'0'; 64 << 20]);
    assert!(packed.len() < (256 << 10), "{}", packed.len());
    std::fs::write(&bomb, &packed).unwrap();
    refused(
        &mut c,
        &[&bomb],
        Code::InvalidArgument,
        &[
            "Patient.ndjson.gz",
            "limit of 1048576",
            "max_decompressed_bytes",
        ],
    )
    .await;
    // Nothing refused was stored (so nothing of it is readable over Flight).
    assert_eq!(srv.versions(), 0);

    // A real export under the root ingests.
    let cohort = root.join("cohort");
    let opts = SynthOptions {
        patients: 5,
        seed: 3,
        ..SynthOptions::default()
    };
    ward::synth::write(&opts, SynthFormat::FhirNdjson, &cohort, None).unwrap();
    let r = c
        .ingest_paths(request(&[&cohort]))
        .await
        .unwrap()
        .into_inner();
    assert!(r.files > 0 && r.records > 0, "{r:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_upload_caps_gzip_content() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = IngestConfig {
        roots: Vec::new(),
        max_file_bytes: 4 << 20,
        max_decompressed_bytes: 1 << 20,
    };
    let mut srv = Srv::start(&dir.path().join("store"), ingest).await;
    let mut c = srv.ingest().await;
    let packed = gzip(&vec![b'0'; 64 << 20]);
    let mut msgs = vec![proto::IngestUploadRequest {
        part: Some(Part::Header(proto::UploadHeader {
            options: Some(proto::IngestOptions {
                format: "fhir-ndjson".into(),
                ..Default::default()
            }),
            file_name: "Patient.ndjson.gz".into(),
        })),
    }];
    msgs.extend(packed.chunks(32 << 10).map(|b| proto::IngestUploadRequest {
        part: Some(Part::Chunk(b.to_vec())),
    }));
    let err = c
        .ingest_upload(futures::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    for w in [
        "Patient.ndjson.gz",
        "limit of 1048576",
        "max_decompressed_bytes",
    ] {
        assert!(err.message().contains(w), "{w}: {}", err.message());
    }
    assert_eq!(srv.versions(), 0);
    srv.stop().await;
}

/// A writer the test's log subscriber writes into.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

/// On one thread, so the server's handlers log into this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn internal_errors_reach_clients_as_an_id_that_is_in_the_log() {
    let log = Log::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .finish(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Srv::start(&dir.path().join("store"), IngestConfig::default()).await;
    let mut c = srv.ingest().await;
    let body = b"{\"resourceType\":\"Patient\",\"id\":\"p1\",\"birthDate\":\"1950-01-01\"}\n";
    let msgs = vec![
        proto::IngestUploadRequest {
            part: Some(Part::Header(proto::UploadHeader {
                options: Some(proto::IngestOptions {
                    format: "fhir-ndjson".into(),
                    ..Default::default()
                }),
                file_name: "Patient.ndjson".into(),
            })),
        },
        proto::IngestUploadRequest {
            part: Some(Part::Chunk(body.to_vec())),
        },
    ];
    let r = c
        .ingest_upload(futures::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    // Break the raw version's manifest on disk: reading it is now a server-side failure
    // whose text names the store's path and the JSON parser's complaint.
    let hash: ward::hash::ContentHash = r.raw_hash.parse().unwrap();
    let manifest = srv
        .store
        .root()
        .join("versions")
        .join(hash.hex())
        .join("manifest.json");
    std::fs::write(&manifest, b"{ not json PATIENT-SECRET").unwrap();
    let mut flight = arrow_flight::FlightClient::new(srv.channel().await);
    let err = flight
        .do_get(arrow_flight::Ticket::new(r.raw_hash.clone()))
        .await
        .expect_err("a broken manifest fails");
    let status = match err {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => panic!("{other:?}"),
    };
    let msg = status.message().to_string();
    let id = msg
        .strip_prefix("internal error (id ")
        .and_then(|m| m.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not an internal error message: {msg:?}"));
    assert!(!msg.contains("manifest") && !msg.contains(&srv.store.root().display().to_string()));
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(id))
        .unwrap_or_else(|| panic!("id {id} is not in the server log:\n{text}"));
    assert!(
        line.contains("ERROR") && line.contains("manifest.json"),
        "{line}"
    );
    // A caller's error keeps its message.
    let err = flight
        .do_get(arrow_flight::Ticket::new("no-such-name"))
        .await
        .expect_err("unknown name");
    match err {
        arrow_flight::error::FlightError::Tonic(s) => {
            assert_eq!(s.code(), Code::NotFound);
            assert!(s.message().contains("no-such-name"), "{}", s.message());
        }
        other => panic!("{other:?}"),
    }
    srv.stop().await;
}
