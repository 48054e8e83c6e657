//! The gRPC service and Arrow Flight, driven over loopback with the generated clients:
//! every RPC, its failures, health, reflection, the gate, limits and graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use futures::TryStreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::proto::{
    self, datasets_client::DatasetsClient, features_client::FeaturesClient,
    ingest_client::IngestClient, ingest_upload_request::Part,
};
use ward::clock::ManualClock;
use ward::demo::{DemoOptions, DemoReport, READMISSION_FEATURES};
use ward::features::FeatureRepo;
use ward::security::gate::{Admission, Call, Gate};
use ward::service::{Limits, ServeConfig, Server};
use ward::store::{Kind, ListFilter, Store, VersionRef};
use ward::synth::{SynthFormat, SynthOptions};

/// A server over a demo store, on a free loopback port.
struct Fixture {
    dir: tempfile::TempDir,
    /// The store's clock: tests move it so versions written later are newer.
    clock: Arc<ManualClock>,
    store: Store,
    report: DemoReport,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<ward::Result<()>>>,
}

impl Fixture {
    async fn start(limits: Limits, gate: Option<Arc<dyn Gate>>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap()));
        let store = Store::open(dir.path().join("store"), clock.clone()).unwrap();
        let opts = DemoOptions {
            patients: 60,
            seed: 5,
        };
        let report = ward::demo::run(&store, &dir.path().join("work"), &opts, None)
            .await
            .unwrap();
        let repo = FeatureRepo::parse(READMISSION_FEATURES, "readmission.toml").unwrap();
        let cfg = ServeConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            limits,
            // IngestPaths reads the cohorts the tests write under the fixture's folder.
            ingest: ward::service::config::IngestConfig {
                roots: vec![dir.path().to_path_buf()],
                ..Default::default()
            },
            ..ServeConfig::default()
        };
        let mut server = Server::bind(&cfg, store.clone(), repo).await.unwrap();
        if let Some(g) = gate {
            server = server.with_gate(g);
        }
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let (tx, rx) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        clock.advance(chrono::Duration::hours(1));
        Fixture {
            dir,
            clock,
            store,
            report,
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

    async fn datasets(&self) -> DatasetsClient<Channel> {
        DatasetsClient::new(self.channel().await)
    }

    async fn ingest(&self) -> IngestClient<Channel> {
        IngestClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    async fn features(&self) -> FeaturesClient<Channel> {
        FeaturesClient::new(self.channel().await)
    }

    async fn flight(&self) -> FlightClient {
        FlightClient::new(self.channel().await)
    }

    /// Signals shutdown and waits for the server to return.
    async fn stop(&mut self) -> ward::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.served.take() {
            Some(h) => tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("the server stops within 30 s")
                .expect("the server task does not panic"),
            None => Ok(()),
        }
    }
}

fn hash_of(report: &DemoReport, table: &str) -> String {
    report
        .ingest
        .curated
        .iter()
        .find(|c| c.table == table)
        .unwrap_or_else(|| panic!("no {table} in the demo"))
        .hash
        .to_string()
}

fn small_limits() -> Limits {
    Limits {
        max_decoding_message_bytes: 128 << 10,
        max_upload_bytes: 300 << 10,
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_list_get_verify_tag() {
    let mut fx = Fixture::start(Limits::default(), None).await;
    let mut c = fx.datasets().await;

    let all = c
        .list_datasets(proto::ListDatasetsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .datasets;
    let stored = fx.store.list(&ListFilter::default()).unwrap();
    assert_eq!(
        all.iter().map(|m| m.hash.clone()).collect::<Vec<_>>(),
        stored
            .iter()
            .map(|m| m.hash.to_string())
            .collect::<Vec<_>>()
    );
    let curated = c
        .list_datasets(proto::ListDatasetsRequest {
            kind: "curated".into(),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .datasets;
    assert_eq!(curated.len(), fx.report.ingest.curated.len());
    assert!(curated.iter().all(|m| m.kind == "curated"));
    let err = c
        .list_datasets(proto::ListDatasetsRequest {
            kind: "features".into(),
            name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("kind"), "{}", err.message());

    // By name, by prefix, by full hash: the same manifest, as the store has it.
    let enc = hash_of(&fx.report, "encounters");
    let stored_enc = fx
        .store
        .resolve(&VersionRef::Latest("encounters".into()))
        .unwrap();
    for r in ["encounters".to_string(), enc[..13].to_string(), enc.clone()] {
        let m = c
            .get_dataset(proto::GetDatasetRequest { r#ref: r.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(m.hash, enc, "{r}");
        assert_eq!(m.kind, "curated");
        assert_eq!(m.rows, stored_enc.rows);
        assert_eq!(m.columns.len(), stored_enc.schema.len());
        let lineage = m.lineage.unwrap();
        assert_eq!(lineage.inputs, vec![fx.report.ingest.raw.to_string()]);
    }

    // Failures name what is wrong.
    let unknown = format!("b3:{}", "0".repeat(64));
    let err = c
        .get_dataset(proto::GetDatasetRequest {
            r#ref: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&unknown), "{}", err.message());
    for bad in ["b3:zz", "", "a/b", "encounters@yesterday"] {
        let err = c
            .get_dataset(proto::GetDatasetRequest { r#ref: bad.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
    }

    // Verify: ok, then a damaged file is reported (not an RPC error).
    let v = c
        .verify_dataset(proto::VerifyDatasetRequest {
            r#ref: "encounters".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{}", v.problem);
    assert_eq!(v.hash, enc);
    assert_eq!(v.rows, stored_enc.rows);
    assert!(v.files > 0);

    // Tag, then resolve the tag.
    let t = c
        .tag_dataset(proto::TagDatasetRequest {
            name: "prod-encounters".into(),
            r#ref: enc[..12].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.hash, enc);
    let m = c
        .get_dataset(proto::GetDatasetRequest {
            r#ref: "prod-encounters".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.hash, enc);
    let err = c
        .tag_dataset(proto::TagDatasetRequest {
            name: "bad/name".into(),
            r#ref: enc.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let patients = fx
        .store
        .resolve(&VersionRef::Latest("patients".into()))
        .unwrap();
    let file = patients
        .files
        .iter()
        .find(|f| f.path.ends_with(".lance"))
        .expect("a data file");
    let path = fx
        .store
        .root()
        .join("versions")
        .join(patients.hash.hex())
        .join("data")
        .join(&file.path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let v = c
        .verify_dataset(proto::VerifyDatasetRequest {
            r#ref: "patients".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!v.ok);
    assert_eq!(v.hash, patients.hash.to_string());
    assert!(v.problem.contains(&file.path), "{}", v.problem);
    fx.stop().await.unwrap();
}

/// Writes a small FHIR NDJSON cohort; returns its folder.
fn cohort(dir: &std::path::Path, patients: u64, seed: u64) -> std::path::PathBuf {
    let out = dir.join(format!("cohort-{seed}"));
    let opts = SynthOptions {
        patients,
        seed,
        ..SynthOptions::default()
    };
    ward::synth::write(&opts, SynthFormat::FhirNdjson, &out, None).unwrap();
    out
}

fn options(format: &str) -> Option<proto::IngestOptions> {
    Some(proto::IngestOptions {
        format: format.into(),
        ..Default::default()
    })
}

async fn upload(
    c: &mut IngestClient<Channel>,
    msgs: Vec<proto::IngestUploadRequest>,
) -> Result<proto::IngestResponse, tonic::Status> {
    c.ingest_upload(futures::stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

fn header(file_name: &str, format: &str) -> proto::IngestUploadRequest {
    proto::IngestUploadRequest {
        part: Some(Part::Header(proto::UploadHeader {
            options: options(format),
            file_name: file_name.into(),
        })),
    }
}

fn chunk(bytes: &[u8]) -> proto::IngestUploadRequest {
    proto::IngestUploadRequest {
        part: Some(Part::Chunk(bytes.to_vec())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_paths_and_uploads() {
    let mut fx = Fixture::start(small_limits(), None).await;
    let src = cohort(fx.dir.path(), 15, 11);
    let mut c = fx.ingest().await;

    fx.clock.advance(chrono::Duration::minutes(1));
    let r = c
        .ingest_paths(proto::IngestPathsRequest {
            options: options("fhir-ndjson"),
            paths: vec![src.display().to_string()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.files > 0 && r.bytes > 0);
    assert!(r.records > 0);
    assert_eq!(
        r.records,
        r.curated.iter().map(|c| c.parsed_rows).sum::<u64>()
    );
    let raw = fx
        .store
        .resolve(&r.raw_hash.parse::<VersionRef>().unwrap())
        .unwrap();
    assert_eq!(raw.kind, Kind::Raw);
    for cv in &r.curated {
        let m = fx
            .store
            .resolve(&VersionRef::Latest(cv.table.clone()))
            .unwrap();
        assert_eq!(m.hash.to_string(), cv.hash, "{}", cv.table);
        assert_eq!(m.rows, cv.rows);
        assert!(
            m.lineage.inputs.contains(&raw.hash),
            "{:?}",
            m.lineage.inputs
        );
    }

    // One file uploaded in chunks gives the same raw content as ingesting it by path.
    let file = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("Patient")
        })
        .expect("a Patient file");
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.len() < (300 << 10),
        "the test file fits the upload limit"
    );
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let mut msgs = vec![header(&name, "fhir-ndjson")];
    msgs.extend(bytes.chunks(4096).map(chunk));
    fx.clock.advance(chrono::Duration::minutes(1));
    let up = upload(&mut c, msgs).await.unwrap();
    let by_path = c
        .ingest_paths(proto::IngestPathsRequest {
            options: options("fhir-ndjson"),
            paths: vec![file.display().to_string()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.raw_hash, by_path.raw_hash);
    assert!(up.curated.iter().any(|c| c.table == "patients"));

    // Bad requests.
    let cases: Vec<(Vec<proto::IngestUploadRequest>, &str)> = vec![
        (vec![], "no header"),
        (vec![chunk(b"x")], "first message must carry the header"),
        (vec![header("../etc/passwd", "fhir-ndjson")], "file_name"),
        (vec![header("a.ndjson", "xml")], "format"),
        (
            vec![
                header("a.ndjson", "fhir-ndjson"),
                header("b.ndjson", "fhir-ndjson"),
            ],
            "second header",
        ),
        (
            vec![
                header("a.ndjson", "fhir-ndjson"),
                proto::IngestUploadRequest { part: None },
            ],
            "message 2",
        ),
    ];
    for (msgs, want) in cases {
        let err = upload(&mut c, msgs).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{want}: {err:?}");
        assert!(err.message().contains(want), "{want}: {}", err.message());
    }
    // Over the upload limit (in chunks each under the message limit).
    let big = vec![b'{'; 100 << 10];
    let mut msgs = vec![header("big.ndjson", "fhir-ndjson")];
    msgs.extend((0..4).map(|_| chunk(&big)));
    let err = upload(&mut c, msgs).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("max_upload_bytes"),
        "{}",
        err.message()
    );
    // One message over the message size limit: refused by the transport.
    let err = upload(
        &mut c,
        vec![
            header("big.ndjson", "fhir-ndjson"),
            chunk(&vec![b'x'; 200 << 10]),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());

    let err = c
        .ingest_paths(proto::IngestPathsRequest {
            options: options("fhir-ndjson"),
            paths: vec![fx.dir.path().join("absent").display().to_string()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("absent") && err.message().contains("does not exist"),
        "{}",
        err.message()
    );
    let err = c
        .ingest_paths(proto::IngestPathsRequest {
            options: None,
            paths: vec![src.display().to_string()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .ingest_paths(proto::IngestPathsRequest {
            options: Some(proto::IngestOptions {
                format: "fhir-ndjson".into(),
                max_bad: "lots".into(),
                ..Default::default()
            }),
            paths: vec![src.display().to_string()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("max_bad"), "{}", err.message());
    fx.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_sets_and_materialize() {
    let mut fx = Fixture::start(Limits::default(), None).await;
    let mut c = fx.features().await;
    let sets = c
        .list_feature_sets(proto::ListFeatureSetsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sets;
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["readmission", "readmission_online"]);
    for s in &sets {
        let t = fx
            .report
            .timelines
            .iter()
            .find(|t| t.set == s.name)
            .unwrap();
        assert_eq!(s.timeline, t.hash.to_string());
        assert_eq!(s.definition, t.definition.to_string());
        assert_eq!(s.online, s.name == "readmission_online");
        assert_eq!(
            s.features.iter().any(|f| f.is_label),
            s.name == "readmission"
        );
    }
    let m = c
        .materialize(proto::MaterializeRequest {
            feature_set: "readmission_online".into(),
            as_occurred: false,
            full: false,
            entity: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let t = &fx.report.timelines[0];
    assert_eq!(t.set, "readmission_online");
    assert_eq!(m.timeline, t.hash.to_string());
    assert!(!m.created, "the same inputs give the stored timeline");
    assert_eq!(m.change_points, t.rows as u64);
    let err = c
        .materialize(proto::MaterializeRequest {
            feature_set: "sepsis".into(),
            as_occurred: false,
            full: false,
            entity: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("sepsis"), "{}", err.message());
    fx.stop().await.unwrap();
}

fn entity_batch(ids: &[Option<&str>], times: &[Option<i64>]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, true),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("cohort", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids.to_vec())),
            Arc::new(TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC")),
            Arc::new(StringArray::from(vec!["a"; ids.len()])),
        ],
    )
    .unwrap()
}

async fn put(
    client: &mut FlightClient,
    path: Option<&str>,
    batches: Vec<RecordBatch>,
) -> Result<Vec<arrow_flight::PutResult>, arrow_flight::error::FlightError> {
    let descriptor = path.map(|p| FlightDescriptor::new_path(vec![p.to_string()]));
    let stream = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(descriptor)
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    client.do_put(stream).await?.try_collect().await
}

/// The status of a Flight call that must fail.
fn failed<T>(r: Result<T, arrow_flight::error::FlightError>) -> tonic::Status {
    match r {
        Ok(_) => panic!("the call succeeded"),
        Err(e) => status(e),
    }
}

fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => panic!("not a status: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_get_put_list_info() {
    let mut fx = Fixture::start(Limits::default(), None).await;
    let mut f = fx.flight().await;

    // DoGet streams a version; its rows hash to the version's hash.
    let enc = fx
        .store
        .resolve(&VersionRef::Latest("encounters".into()))
        .unwrap();
    for ticket in ["encounters".to_string(), enc.hash.to_string()] {
        let stream = f.do_get(Ticket::new(ticket.clone())).await.unwrap();
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows as u64, enc.rows, "{ticket}");
        let schema = batches[0].schema();
        let bucketing = ward::ingest::pipeline::curated_bucketing().unwrap();
        assert_eq!(
            ward::hash::bucketed::hash_bucketed(&schema, &batches, bucketing)
                .unwrap()
                .0,
            enc.hash,
            "{ticket}"
        );
    }
    // A version larger than a gRPC client's default receive limit (4 MiB) streams to a
    // client with default settings: the server splits it below its encoding limit.
    // Wide rows, so that one of the store's scan batches (8,192 rows) is over 4 MiB.
    let n = 20_000;
    let schema = Arc::new(Schema::new(vec![Field::new("note", DataType::Utf8, false)]));
    let big = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("{i:08}-{}", "x".repeat(600))),
        ))],
    )
    .unwrap();
    let put_big = fx
        .store
        .put_batches(
            schema,
            vec![big],
            ward::store::PutOptions::new("big", Kind::Other),
        )
        .await
        .unwrap();
    let stream = f.do_get(Ticket::new("big")).await.unwrap();
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), n);
    assert_eq!(
        ward::hash::hash_batches(&batches[0].schema(), &batches).unwrap(),
        put_big.manifest.hash
    );

    let unknown = format!("b3:{}", "ab".repeat(32));
    let err = failed(f.do_get(Ticket::new(unknown.clone())).await);
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&unknown));
    let err = failed(f.do_get(Ticket::new("b3:xyz")).await);
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = failed(f.do_get(Ticket::new(vec![0xffu8, 0xfe])).await);
    assert_eq!(err.code(), Code::InvalidArgument);

    // DoPut stores entity rows as an `other` version and answers its hash.
    let day = 86_400_000_000i64;
    let rows = entity_batch(
        &[Some("P0000001"), Some("P0000002"), Some("P0000001")],
        &[
            Some(1_600_000_000_000_000),
            Some(1_600_000_000_000_000 + day),
            Some(1_650_000_000_000_000),
        ],
    );
    let results = put(&mut f, Some("cohort-a"), vec![rows.clone()])
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    let hash = String::from_utf8(results[0].app_metadata.to_vec()).unwrap();
    let m = fx
        .store
        .resolve(&hash.parse::<VersionRef>().unwrap())
        .unwrap();
    assert_eq!(
        (m.kind, m.name.as_str(), m.rows),
        (Kind::Other, "cohort-a", 3)
    );
    assert_eq!(
        m.hash,
        ward::hash::hash_batches(&rows.schema(), [&rows]).unwrap()
    );
    let default_named = put(&mut f, None, vec![rows.clone()]).await.unwrap();
    assert_eq!(default_named[0].app_metadata, results[0].app_metadata);
    assert!(fx
        .store
        .resolve(&VersionRef::Latest(ward::service::DEFAULT_PUT_NAME.into()))
        .is_ok());

    let bad = entity_batch(
        &[Some("P0000001"), Some("P0000002"), None],
        &[Some(0), Some(0), Some(0)],
    );
    let err = status(
        put(&mut f, Some("cohort-b"), vec![rows.clone(), bad])
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("row 6"), "{}", err.message());
    assert!(err.message().contains("patient_id"), "{}", err.message());
    let no_time = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "patient_id",
            DataType::Utf8,
            false,
        )])),
        vec![Arc::new(StringArray::from(vec!["P0000001"]))],
    )
    .unwrap();
    let err = status(
        put(&mut f, Some("cohort-c"), vec![no_time])
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("timestamp"), "{}", err.message());
    assert!(matches!(
        fx.store.resolve(&VersionRef::Latest("cohort-b".into())),
        Err(ward::Error::NotFound { .. })
    ));

    // ListFlights and GetFlightInfo describe versions.
    let infos: Vec<arrow_flight::FlightInfo> = f
        .list_flights(Vec::<u8>::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        infos.len(),
        fx.store.list(&ListFilter::default()).unwrap().len()
    );
    let curated: Vec<arrow_flight::FlightInfo> = f
        .list_flights("kind=curated")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(curated.len(), fx.report.ingest.curated.len());
    let err = failed(f.list_flights("colour=red").await);
    assert_eq!(err.code(), Code::InvalidArgument);
    let info = f
        .get_flight_info(FlightDescriptor::new_path(vec!["encounters".into()]))
        .await
        .unwrap();
    assert_eq!(info.total_records, enc.rows as i64);
    assert_eq!(info.total_bytes, enc.bytes as i64);
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    assert_eq!(ticket.ticket, enc.hash.to_string().into_bytes());
    let meta: serde_json::Value = serde_json::from_slice(&info.app_metadata).unwrap();
    assert_eq!(meta["name"], "encounters");
    let schema = info.clone().try_decode_schema().unwrap();
    assert_eq!(schema.fields().len(), enc.schema.len());
    let by_cmd = f
        .get_flight_info(FlightDescriptor::new_cmd(enc.hash.to_string()))
        .await
        .unwrap();
    assert_eq!(by_cmd.total_records, info.total_records);
    let fetched = f
        .get_schema(FlightDescriptor::new_path(vec!["encounters".into()]))
        .await
        .unwrap();
    assert_eq!(fetched, schema);
    let err = status(
        f.get_flight_info(FlightDescriptor::new_path(vec!["a".into(), "b".into()]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code(), Code::InvalidArgument);

    // Calls Ward does not offer say so.
    let err = failed(f.list_actions().await);
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("ListActions"));
    let err = status(f.handshake(Vec::<u8>::new()).await.unwrap_err());
    assert_eq!(err.code(), Code::Unimplemented);
    fx.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let mut fx = Fixture::start(Limits::default(), None).await;
    let mut h = HealthClient::new(fx.channel().await);
    for service in [
        "",
        "ward.v1.Datasets",
        "ward.v1.Ingest",
        "ward.v1.Features",
        "arrow.flight.protocol.FlightService",
    ] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let err = h
        .check(HealthCheckRequest {
            service: "ward.v1.Nothing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let mut r = ServerReflectionClient::new(fx.channel().await);
    let asks = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "ward.v1.Features".into(),
            )),
        },
    ];
    let answers: Vec<_> = r
        .server_reflection_info(futures::stream::iter(asks))
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = &answers[0].message_response else {
        panic!("{:?}", answers[0]);
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "ward.v1.Datasets",
        "ward.v1.Ingest",
        "ward.v1.Features",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    let Some(MessageResponse::FileDescriptorResponse(fd)) = &answers[1].message_response else {
        panic!("{:?}", answers[1]);
    };
    assert!(!fd.file_descriptor_proto.is_empty());

    // The older v1alpha protocol (grpcurl falls back to it) answers too.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest as AlphaAsk;
    let mut a = AlphaClient::new(fx.channel().await);
    let answers: Vec<_> = a
        .server_reflection_info(futures::stream::iter([AlphaAsk {
            host: String::new(),
            message_request: Some(AlphaRequest::ListServices(String::new())),
        }]))
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(answers.len(), 1);
    fx.stop().await.unwrap();
}

/// A gate that records what it saw and refuses tagging.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

/// What the gate saw of one call: the RPC, the peer, the `x-user` header.
type Seen = (String, Option<SocketAddr>, Option<String>);

impl Gate for Recorder {
    fn admit(&self, call: &Call<'_>) -> ward::Result<Admission> {
        let who = call
            .metadata
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.seen
            .lock()
            .unwrap()
            .push((call.rpc.to_string(), call.peer, who.clone()));
        if call.method() == "TagDataset" {
            return Err(ward::Error::PermissionDenied {
                reason: format!("{} may not tag", who.unwrap_or_default()),
            });
        }
        if who.is_none() {
            return Err(ward::Error::Unauthenticated {
                reason: "no x-user".into(),
            });
        }
        Ok(Admission {
            principal: who,
            rpc: call.rpc.to_string(),
            peer: call.peer,
            identity: None,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_passes_the_gate() {
    let gate = Arc::new(Recorder::default());
    let mut fx = Fixture::start(Limits::default(), Some(gate.clone())).await;
    let mut c = fx.datasets().await;
    let mut req = tonic::Request::new(proto::GetDatasetRequest {
        r#ref: "encounters".into(),
    });
    req.metadata_mut().insert("x-user", "dr-a".parse().unwrap());
    c.get_dataset(req).await.unwrap();

    let err = c
        .get_dataset(proto::GetDatasetRequest {
            r#ref: "encounters".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let mut req = tonic::Request::new(proto::TagDatasetRequest {
        name: "prod".into(),
        r#ref: "encounters".into(),
        ..Default::default()
    });
    req.metadata_mut().insert("x-user", "dr-a".parse().unwrap());
    let err = c.tag_dataset(req).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("dr-a may not tag"));
    // The handler never ran.
    assert!(fx
        .store
        .resolve(&VersionRef::Latest("prod".into()))
        .is_err());

    let mut f = fx.flight().await;
    f.add_header("x-user", "etl").unwrap();
    let batches: Vec<RecordBatch> = f
        .do_get(Ticket::new("patients"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(!batches.is_empty());

    let seen = gate.seen.lock().unwrap().clone();
    let rpcs: Vec<&str> = seen.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(
        rpcs,
        [
            "/ward.v1.Datasets/GetDataset",
            "/ward.v1.Datasets/GetDataset",
            "/ward.v1.Datasets/TagDataset",
            "/arrow.flight.protocol.FlightService/DoGet",
        ]
    );
    for (rpc, peer, _) in &seen {
        let peer = peer.unwrap_or_else(|| panic!("{rpc}: no peer"));
        assert!(peer.ip().is_loopback(), "{rpc}: {peer}");
    }
    assert_eq!(seen[3].2.as_deref(), Some("etl"));
    fx.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_calls_in_flight() {
    let mut fx = Fixture::start(Limits::default(), None).await;
    let src = cohort(fx.dir.path(), 8, 21);
    let file = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("Patient")
        })
        .unwrap();
    let bytes = std::fs::read(&file).unwrap();

    // An upload under way: the header is sent, the file is not.
    let mut c = fx.ingest().await;
    let (tx, rx) = mpsc::channel::<proto::IngestUploadRequest>(4);
    tx.send(header("Patient.ndjson", "fhir-ndjson"))
        .await
        .unwrap();
    let call = tokio::spawn(async move { c.ingest_upload(ReceiverStream::new(rx)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Shutdown is signalled while the call is in flight.
    let _ = fx.stop.take().unwrap().send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fx.served.as_ref().unwrap().is_finished(),
        "the server waits for the call in flight"
    );
    // New connections are refused.
    let refused = Channel::from_shared(format!("http://{}", fx.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    assert!(refused.is_err(), "a new connection after shutdown");

    for part in bytes.chunks(1024) {
        tx.send(chunk(part)).await.unwrap();
    }
    drop(tx);
    let r = call.await.unwrap().unwrap().into_inner();
    assert!(r.curated.iter().any(|c| c.table == "patients"), "{r:?}");
    fx.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_deadline_are_cut() {
    let limits = Limits {
        request_timeout_secs: 0.5,
        ..Limits::default()
    };
    let mut fx = Fixture::start(limits, None).await;
    let mut c = fx.ingest().await;
    let (tx, rx) = mpsc::channel::<proto::IngestUploadRequest>(4);
    tx.send(header("Patient.ndjson", "fhir-ndjson"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = c.ingest_upload(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), Code::Cancelled, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(tx);
    fx.stop().await.unwrap();
}

#[test]
fn ward_serve_prints_its_port_and_stops_on_sigterm() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("serve.toml");
    std::fs::write(
        &cfg,
        "addr = \"127.0.0.1:0\"\nstore = \"store\"\nfeatures = []\n[limits]\nshutdown_grace_secs = 5\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["serve", "--threads", "1", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut runtime = None;
    let addr: SocketAddr = loop {
        let line = lines
            .next()
            .expect("ward serve printed `listening on`")
            .unwrap();
        if line.starts_with("runtime: ") {
            runtime = Some(line.clone());
        }
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.parse().unwrap();
        }
    };
    assert_ne!(addr.port(), 0);
    // --threads sets the runtime's workers (the config's `threads` is checked below).
    assert_eq!(runtime.as_deref(), Some("runtime: 1 worker thread"));
    assert!(dir.path().join("store").join("ward-store.json").exists());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = rt.block_on(async {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        DatasetsClient::new(ch)
            .list_datasets(proto::ListDatasetsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .datasets
            .len()
    });
    assert_eq!(n, 0, "a new store is empty");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(out.stdout.is_empty(), "serve prints nothing to stdout");

    // Refusals before binding: `ward serve` with these arguments (and `--config cfg` after
    // them) exits with an error; its stderr.
    let refused = |args: &[&str]| -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["serve"])
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "ward serve {args:?} was not refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // A section missing a required key is refused, naming the file, line and key.
    std::fs::write(&cfg, "[tls]\ncert = \"server.pem\"\n").unwrap();
    let err = refused(&[]);
    assert!(err.contains("serve.toml:1") && err.contains("key"), "{err}");

    // A worker-thread count of 0 is refused, from the flag and from the config.
    std::fs::write(&cfg, "addr = \"127.0.0.1:0\"\n").unwrap();
    let err = refused(&["--threads", "0"]);
    assert!(
        err.contains("--threads") && err.contains("between 1 and"),
        "{err}"
    );
    std::fs::write(&cfg, "threads = 0\n").unwrap();
    let err = refused(&[]);
    assert!(err.contains("serve.toml: threads"), "{err}");

    // Off loopback without [auth] and [tls]: refused before binding, unless --insecure.
    std::fs::write(&cfg, "addr = \"0.0.0.0:0\"\n").unwrap();
    let err = refused(&[]);
    assert!(
        err.contains("0.0.0.0:0") && err.contains("--insecure"),
        "{err}"
    );
}

fn ipc_stream(batches: &[RecordBatch]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    drop(w);
    buf
}

/// Reads a historical answer: the header and the batches.
async fn read_historical(
    c: &mut FeaturesClient<Channel>,
    req: proto::HistoricalRequest,
) -> Result<(proto::HistoricalHeader, Vec<RecordBatch>), tonic::Status> {
    let mut stream = c.get_historical_features(req).await?.into_inner();
    let first = stream.message().await?.expect("a header");
    let Some(proto::historical_response::Part::Header(header)) = first.part else {
        panic!("the first message is not the header: {first:?}");
    };
    let mut batches = Vec::new();
    while let Some(m) = stream.message().await? {
        let Some(proto::historical_response::Part::BatchIpc(bytes)) = m.part else {
            panic!("a second header");
        };
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        for b in reader {
            batches.push(b.unwrap());
        }
    }
    Ok((header, batches))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_and_historical_lookups() {
    use crate::common::proto::ValueStatus;
    let mut fx = Fixture::start(Limits::default(), None).await;
    let mut c = fx.features().await;
    let online_t = fx
        .report
        .timelines
        .iter()
        .find(|t| t.set == "readmission_online")
        .unwrap();
    let train_t = fx
        .report
        .timelines
        .iter()
        .find(|t| t.set == "readmission")
        .unwrap();

    // Online: the same values as the command line's lookup, through the service.
    let patients: Vec<String> = ["P0000001", "P0000007", "P0000033", "NOBODY"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let r = c
        .get_online_features(proto::OnlineRequest {
            feature_set: "readmission_online".into(),
            patient_ids: patients.clone(),
            as_of: "2024-01-01".into(),
            features: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.timeline, online_t.hash.to_string());
    let at: chrono::DateTime<chrono::Utc> = "2024-01-01T00:00:00Z".parse().unwrap();
    assert_eq!(
        r.as_of.parse::<chrono::DateTime<chrono::Utc>>().unwrap(),
        at
    );
    let (set, index) = ward::features::load_index(&fx.store, &online_t.hash)
        .await
        .unwrap();
    // The reference: the shared lookup rule, feature by feature, in process.
    let want: Vec<ward::features::PatientFeatures> = patients
        .iter()
        .map(|p| ward::features::PatientFeatures {
            patient_id: p.clone(),
            person_id: None,
            at,
            values: set
                .features
                .iter()
                .map(|f| {
                    let ttl = index.feature_info(&f.name).and_then(|i| i.ttl);
                    (
                        f.name.clone(),
                        ward::features::lookup(&index, p, &f.name, at, ttl),
                    )
                })
                .collect(),
        })
        .collect();
    assert_eq!(
        r.features,
        set.features
            .iter()
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(r.patients.len(), want.len());
    let mut present = 0;
    for (got, want) in r.patients.iter().zip(&want) {
        assert_eq!(got.patient_id, want.patient_id);
        assert_eq!(got.values.len(), want.values.len());
        for (g, (name, w)) in got.values.iter().zip(&want.values) {
            let status = match w.status {
                ward::features::Status::Present => ValueStatus::Present,
                ward::features::Status::NoData => ValueStatus::NoData,
                ward::features::Status::OutsideTtl => ValueStatus::OutsideTtl,
            };
            assert_eq!(g.status, status as i32, "{} {name}", got.patient_id);
            let value = match &w.value {
                Some(ward::features::Value::Num(x)) => Some(proto::feature_value::Value::Num(*x)),
                Some(ward::features::Value::Text(s)) => {
                    Some(proto::feature_value::Value::Text(s.clone()))
                }
                None => None,
            };
            assert_eq!(g.value, value, "{} {name}", got.patient_id);
            present += usize::from(g.status == ValueStatus::Present as i32);
        }
    }
    assert!(present > 0, "some values are present");
    // An unknown patient: nothing known (counts of nothing are 0, the rest NO_DATA).
    assert!(r.patients[3]
        .values
        .iter()
        .any(|v| v.status == ValueStatus::NoData as i32 && v.value.is_none()));

    // Default time: the server's clock. A subset of features, in the order asked.
    let r = c
        .get_online_features(proto::OnlineRequest {
            feature_set: "readmission_online".into(),
            patient_ids: vec!["P0000001".into()],
            as_of: String::new(),
            features: vec!["sex".into(), "age".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.as_of.parse::<chrono::DateTime<chrono::Utc>>().unwrap(),
        ward::clock::Clock::now(&*fx.clock)
    );
    assert_eq!(r.features, ["sex", "age"]);
    assert_eq!(r.patients[0].values.len(), 2);

    // Online failures.
    let online =
        |set: &str, patients: Vec<&str>, as_of: &str, features: Vec<&str>| proto::OnlineRequest {
            feature_set: set.into(),
            patient_ids: patients.into_iter().map(String::from).collect(),
            as_of: as_of.into(),
            features: features.into_iter().map(String::from).collect(),
        };
    let cases = [
        (
            online("readmission", vec!["P0000001"], "", vec![]),
            Code::FailedPrecondition,
            "label",
        ),
        (
            online("readmission_online", vec!["P0000001"], "", vec!["pulse"]),
            Code::NotFound,
            "pulse",
        ),
        (
            online("sepsis", vec!["P0000001"], "", vec![]),
            Code::NotFound,
            "sepsis",
        ),
        (
            online("readmission_online", vec![], "", vec![]),
            Code::InvalidArgument,
            "patient_ids",
        ),
        (
            online("readmission_online", vec!["P0000001"], "tomorrow", vec![]),
            Code::InvalidArgument,
            "as_of",
        ),
    ];
    for (req, code, word) in cases {
        let err = c.get_online_features(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{word}: {err:?}");
        assert!(err.message().contains(word), "{word}: {}", err.message());
    }

    // Historical, entity rows inline: one row per input row, in order; the stream is the
    // stored training set.
    let day = 86_400_000_000i64;
    let t0 = 1_577_836_800_000_000i64; // 2020-01-01
    let ids = [
        Some("P0000001"),
        Some("P0000007"),
        Some("P0000001"),
        Some("NOBODY"),
    ];
    let times = [
        Some(t0),
        Some(t0 + 30 * day),
        Some(t0 + 900 * day),
        Some(t0),
    ];
    let rows = entity_batch(&ids, &times);
    let (h, batches) = read_historical(
        &mut c,
        proto::HistoricalRequest {
            feature_set: "readmission".into(),
            entities: Some(proto::historical_request::Entities::EntitiesIpc(
                ipc_stream(std::slice::from_ref(&rows)),
            )),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(h.rows, 4);
    assert_eq!(h.timeline, train_t.hash.to_string());
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&h.schema_ipc).unwrap();
    assert_eq!(batches[0].schema().as_ref(), &schema);
    let training: ward::hash::ContentHash = h.training_set.parse().unwrap();
    assert_eq!(
        ward::hash::hash_batches(&schema, &batches).unwrap(),
        training
    );
    let m = fx.store.manifest(&training).unwrap();
    assert_eq!((m.kind, m.rows), (Kind::Training, 4));
    let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let got_ids = all.column_by_name("patient_id").unwrap();
    let got_ids = arrow::compute::cast(got_ids, &DataType::Utf8).unwrap();
    let got_ids: Vec<Option<&str>> = got_ids
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(got_ids, ids);
    assert!(schema
        .fields()
        .iter()
        .any(|f| f.name().ends_with("__status")));

    // The same rows uploaded with Flight and named by reference: the same training set.
    let mut f = fx.flight().await;
    let put_hash = put(&mut f, Some("cohort-x"), vec![rows.clone()])
        .await
        .unwrap();
    let entities_ref = String::from_utf8(put_hash[0].app_metadata.to_vec()).unwrap();
    let (h2, _) = read_historical(
        &mut c,
        proto::HistoricalRequest {
            feature_set: "readmission".into(),
            entities: Some(proto::historical_request::Entities::EntitiesRef(
                entities_ref.clone(),
            )),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(h2.entities, entities_ref);
    assert_eq!(h2.entities, h.entities);
    assert_eq!(h2.training_set, h.training_set);

    // Historical failures name what is wrong.
    let bad_row = entity_batch(&[Some("P0000001"), Some("P0000002")], &[Some(t0), None]);
    let hist =
        |set: &str, e: Option<proto::historical_request::Entities>| proto::HistoricalRequest {
            feature_set: set.into(),
            entities: e,
            ..Default::default()
        };
    use proto::historical_request::Entities as E;
    let cases = [
        (hist("readmission", None), Code::InvalidArgument, "entities"),
        (
            hist("readmission", Some(E::EntitiesIpc(b"not arrow".to_vec()))),
            Code::InvalidArgument,
            "entities_ipc",
        ),
        (
            hist("readmission", Some(E::EntitiesIpc(ipc_stream(&[bad_row])))),
            Code::InvalidArgument,
            "entity row",
        ),
        (
            hist("sepsis", Some(E::EntitiesRef(entities_ref.clone()))),
            Code::NotFound,
            "sepsis",
        ),
        (
            hist(
                "readmission",
                Some(E::EntitiesRef(format!("b3:{}", "1".repeat(64)))),
            ),
            Code::NotFound,
            "b3:1111",
        ),
        (
            hist("readmission", Some(E::EntitiesRef("b3:nothex!".into()))),
            Code::InvalidArgument,
            "b3:nothex!",
        ),
    ];
    for (req, code, word) in cases {
        let err = read_historical(&mut c, req).await.unwrap_err();
        assert_eq!(err.code(), code, "{word}: {err:?}");
        assert!(err.message().contains(word), "{word}: {}", err.message());
    }

    // Materialize swaps a new timeline into the online index.
    let src = cohort(fx.dir.path(), 30, 77);
    fx.clock.advance(chrono::Duration::minutes(1));
    let mut ingest = fx.ingest().await;
    ingest
        .ingest_paths(proto::IngestPathsRequest {
            options: options("fhir-ndjson"),
            paths: vec![src.display().to_string()],
        })
        .await
        .unwrap();
    fx.clock.advance(chrono::Duration::minutes(1));
    let m = c
        .materialize(proto::MaterializeRequest {
            feature_set: "readmission_online".into(),
            as_occurred: false,
            full: false,
            entity: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(m.created);
    assert_ne!(m.timeline, online_t.hash.to_string());
    let r = c
        .get_online_features(online(
            "readmission_online",
            vec!["P0000001"],
            "2024-01-01",
            vec![],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.timeline, m.timeline, "the new timeline answers");
    fx.stop().await.unwrap();
}
