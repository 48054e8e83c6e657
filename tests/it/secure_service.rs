//! The secured server over real gRPC (in process, loopback): JWT authentication, the
//! permission table, care teams, de-identified historical lookups, and an audit record for
//! every decision, allowed or denied; the trail verifies afterwards.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow_flight::{FlightClient, Ticket};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::proto::{self, features_client::FeaturesClient};
use ward::clock::{Clock as _, ManualClock, SharedClock};
use ward::curated::{CareTeamMember, RowMeta};
use ward::demo::{DemoOptions, READMISSION_FEATURES};
use ward::features::FeatureRepo;
use ward::security::care_team::CareTeamIndex;
use ward::security::gate::Security;
use ward::service::secure::Secured;
use ward::service::{Exposure, ServeConfig, Server};
use ward::store::Store;

const ISS: &str = "https://idp.test/realms/ward";

use crate::common::b64url;

struct Fx {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Store,
    addr: SocketAddr,
    audit_dir: PathBuf,
    key: rcgen::KeyPair,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<ward::Result<()>>>,
    _security: Arc<Security>,
}

fn member(clinician: &str, patient: &str, now: DateTime<Utc>) -> CareTeamMember {
    CareTeamMember {
        patient_id: patient.into(),
        clinician_id: clinician.into(),
        role: Some("attending".into()),
        valid_from: now - Duration::days(2),
        valid_to: Some(now + Duration::days(2)),
        meta: RowMeta {
            source_system: "test".into(),
            source_id: format!("{clinician}/{patient}"),
            known_at: now - Duration::days(2),
            retracted_at: None,
        },
    }
}

impl Fx {
    async fn start() -> Fx {
        Fx::start_with(true).await
    }

    /// A secured server; `deid`: with a `[deid]` section (de-identified training sets).
    async fn start_with(deid: bool) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap()));
        let store = Store::open(dir.path().join("store"), clock.clone()).unwrap();
        let opts = DemoOptions {
            patients: 40,
            seed: 5,
        };
        ward::demo::run(&store, &dir.path().join("work"), &opts, None)
            .await
            .unwrap();
        clock.advance(Duration::hours(1));

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = key.public_key_raw();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "ec1",
            "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65]),
        });
        let conf = dir.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(conf.join("jwks.json"), json!({ "keys": [jwk] }).to_string()).unwrap();
        std::fs::copy(
            crate::common::crate_dir().join("examples/security/policy.toml"),
            conf.join("policy.toml"),
        )
        .unwrap();
        std::fs::write(conf.join("deid.key"), "ab".repeat(32)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                conf.join("deid.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        std::fs::write(
            conf.join("serve.toml"),
            format!(
                r#"
addr = "127.0.0.1:0"
[auth]
policy = "policy.toml"
[[auth.jwt]]
issuer = "{ISS}"
audience = ["ward"]
jwks = "jwks.json"
clock_skew_secs = 30
grants = ["clinician", "data-scientist", "steward", "privacy-officer"]
[audit]
dir = "audit"
{}
"#,
                if deid {
                    "[deid]\nkey_file = \"deid.key\""
                } else {
                    ""
                }
            ),
        )
        .unwrap();
        let cfg = ServeConfig::load(&conf.join("serve.toml")).unwrap();
        assert_eq!(cfg.exposure(false).unwrap(), Exposure::Authenticated);
        let shared: SharedClock = clock.clone();
        let secured = Secured::from_config(&cfg, store.root(), shared)
            .unwrap()
            .expect("[auth] is configured");
        let security = secured.security.clone();
        let repo = FeatureRepo::parse(READMISSION_FEATURES, "readmission.toml").unwrap();
        let server = Server::bind(&cfg, store.clone(), repo)
            .await
            .unwrap()
            .with_security(secured)
            .await
            .unwrap();
        // dr-a treats P0000001 (and only that patient) now.
        let now = clock.now();
        security
            .authorizer()
            .set_care_team(CareTeamIndex::from_members(&[
                member("dr-a", "P0000001", now),
                member("dr-b", "P0000002", now),
            ]));
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Fx {
            _dir: dir,
            clock,
            store,
            addr,
            audit_dir: conf.join("audit"),
            key,
            stop: Some(tx),
            served: Some(served),
            _security: security,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn claims(&self, sub: &str, roles: &[&str]) -> serde_json::Value {
        let now = self.clock.now().timestamp();
        json!({
            "iss": ISS, "aud": "ward", "sub": sub, "roles": roles,
            "iat": now - 10, "nbf": now - 10, "exp": now + 300,
        })
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("ec1".into());
        let key = EncodingKey::from_ec_pem(self.key.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }

    fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.sign(&self.claims(sub, roles))
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.served.take() {
            s.await.unwrap().unwrap();
        }
    }
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn online(patients: &[&str]) -> proto::OnlineRequest {
    proto::OnlineRequest {
        feature_set: "readmission_online".into(),
        patient_ids: patients.iter().map(|s| s.to_string()).collect(),
        as_of: String::new(),
        features: vec![],
    }
}

/// The audit records, in order.
fn records(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .filter(|r| r["decision"] != "system")
        .collect()
}

fn entities(ids: &[&str], at: DateTime<Utc>) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(ids.iter().copied())),
            Arc::new(
                TimestampMicrosecondArray::from(vec![at.timestamp_micros(); ids.len()])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    buf
}

async fn historical(
    c: &mut FeaturesClient<Channel>,
    token: &str,
    ids: &[&str],
    at: DateTime<Utc>,
) -> Result<(proto::HistoricalHeader, Vec<RecordBatch>), tonic::Status> {
    let req = proto::HistoricalRequest {
        feature_set: "readmission".into(),
        entities: Some(proto::historical_request::Entities::EntitiesIpc(entities(
            ids, at,
        ))),
        ..Default::default()
    };
    let mut stream = c
        .get_historical_features(with_token(req, Some(token)))
        .await?
        .into_inner();
    let first = stream.message().await?.expect("a header");
    let Some(proto::historical_response::Part::Header(header)) = first.part else {
        panic!("the first message is not the header");
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

/// A historical lookup of `readmission` over the stored entity rows `reference`.
async fn historical_ref(
    c: &mut FeaturesClient<Channel>,
    token: &str,
    reference: &str,
) -> Result<(proto::HistoricalHeader, Vec<RecordBatch>), tonic::Status> {
    let req = proto::HistoricalRequest {
        feature_set: "readmission".into(),
        entities: Some(proto::historical_request::Entities::EntitiesRef(
            reference.to_string(),
        )),
        ..Default::default()
    };
    let mut stream = c
        .get_historical_features(with_token(req, Some(token)))
        .await?
        .into_inner();
    let first = stream.message().await?.expect("a header");
    let Some(proto::historical_response::Part::Header(header)) = first.part else {
        panic!("the first message is not the header");
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

fn patient_ids(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name("patient_id").unwrap();
        let col = arrow::compute::cast(col, &DataType::Utf8).unwrap();
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        out.extend((0..col.len()).map(|i| col.value(i).to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_over_grpc_are_refused_and_audited() {
    let mut fx = Fx::start().await;
    let mut c = FeaturesClient::new(fx.channel().await);
    let mut seen = records(&fx.audit_dir).len();

    // Each refused credential: the right code, and one more audit record saying denied.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("ec1".into());
        let k = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&h, &fx.claims("dr-a", &["clinician"]), &k).unwrap()
    };
    let alg_none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT","kid":"ec1"}"#),
        b64url(fx.claims("dr-a", &["clinician"]).to_string().as_bytes())
    );
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("ec1".into());
        let k = EncodingKey::from_secret(fx.key.public_key_pem().as_bytes());
        jsonwebtoken::encode(&h, &fx.claims("dr-a", &["clinician"]), &k).unwrap()
    };
    let mut expired = fx.claims("dr-a", &["clinician"]);
    expired["exp"] = json!(fx.clock.now().timestamp() - 3600);
    let mut wrong_iss = fx.claims("dr-a", &["clinician"]);
    wrong_iss["iss"] = json!("https://evil.example");
    let mut wrong_aud = fx.claims("dr-a", &["clinician"]);
    wrong_aud["aud"] = json!("not-ward");
    let cases: Vec<(&str, Option<String>, Code)> = vec![
        ("no token", None, Code::Unauthenticated),
        ("expired", Some(fx.sign(&expired)), Code::Unauthenticated),
        (
            "wrong issuer",
            Some(fx.sign(&wrong_iss)),
            Code::Unauthenticated,
        ),
        (
            "wrong audience",
            Some(fx.sign(&wrong_aud)),
            Code::Unauthenticated,
        ),
        ("bad signature", Some(forged), Code::Unauthenticated),
        ("alg none", Some(alg_none), Code::Unauthenticated),
        (
            "HS256 with the public key",
            Some(hs256),
            Code::Unauthenticated,
        ),
        (
            "a role the key does not grant",
            Some(fx.token("dr-a", &["admin"])),
            Code::PermissionDenied,
        ),
        (
            "a patient outside the care team",
            Some(fx.token("dr-a", &["clinician"])),
            Code::PermissionDenied,
        ),
        (
            "a data scientist online",
            Some(fx.token("ds-1", &["data-scientist"])),
            Code::PermissionDenied,
        ),
    ];
    for (what, token, code) in cases {
        let patients: &[&str] = if what == "a patient outside the care team" {
            &["P0000002"]
        } else {
            &["P0000001"]
        };
        let err = c
            .get_online_features(with_token(online(patients), token.as_deref()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
        let recs = records(&fx.audit_dir);
        assert_eq!(recs.len(), seen + 1, "{what}: one audit record");
        let last = &recs[recs.len() - 1];
        assert_eq!(last["decision"], "denied", "{what}: {last}");
        assert_eq!(last["rpc"], "/ward.v1.Features/GetOnlineFeatures");
        assert!(
            last["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{last}"
        );
        if let Some(t) = &token {
            assert!(
                !last.to_string().contains(t.as_str()),
                "{what}: the token leaked"
            );
        }
        seen = recs.len();
    }

    // Hidden in a batch: the whole request is refused, and the answer does not name the
    // patient outside the team.
    let clinician = fx.token("dr-a", &["clinician"]);
    let err = c
        .get_online_features(with_token(
            online(&["P0000001", "P0000002", "P0000001"]),
            Some(&clinician),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("patient #2"), "{}", err.message());
    assert!(!err.message().contains("P0000002"), "{}", err.message());
    let recs = records(&fx.audit_dir);
    assert_eq!(recs.len(), seen + 1);
    let last = &recs[seen];
    assert_eq!(last["decision"], "denied");
    assert_eq!(last["principal"], "dr-a");
    assert_eq!(last["feature_set"], "readmission_online");
    seen = recs.len();

    // The clinician's own patient: answered, and audited with the id and the timeline.
    let r = c
        .get_online_features(with_token(online(&["P0000001"]), Some(&clinician)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.patients.len(), 1);
    assert_eq!(r.patients[0].patient_id, "P0000001");
    let recs = records(&fx.audit_dir);
    assert_eq!(recs.len(), seen + 1);
    let last = &recs[seen];
    assert_eq!(last["decision"], "allowed", "{last}");
    assert_eq!(last["patients"], json!({ "ids": ["P0000001"] }));
    assert_eq!(last["datasets"], json!([r.timeline]));
    assert_eq!(last["roles"], json!(["clinician"]));
    seen = recs.len();

    // A data scientist asking for identified rows (a curated table over Flight): refused.
    let ds = fx.token("ds-1", &["data-scientist"]);
    let mut flight = FlightClient::new(fx.channel().await);
    flight
        .add_header("authorization", &format!("Bearer {ds}"))
        .unwrap();
    let err = flight
        .do_get(Ticket::new("patients"))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string().contains("PermissionDenied") || err.to_string().contains("permission"),
        "{err}"
    );
    let recs = records(&fx.audit_dir);
    assert_eq!(recs.len(), seen + 1);
    assert_eq!(recs[seen]["action"], "historical_identified");
    assert_eq!(recs[seen]["decision"], "denied");
    seen = recs.len();

    // A data scientist's historical lookup comes back de-identified, stored as its own
    // version whose lineage names the identified one.
    // Its entity rows are a cohort a steward approved (docs/security.md, "What a
    // de-identified caller can and cannot do"); rows it sends itself are refused.
    let at = fx.clock.now();
    let cohort = {
        let bytes = entities(&["P0000001", "P0000003"], at);
        let batch = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let mut opts = ward::store::PutOptions::new("cohort-a", ward::store::Kind::Other);
        opts.labels.insert("approved-cohort".into(), "st-1".into());
        let put = fx.store.put_batches(batch.schema(), vec![batch], opts);
        put.await.unwrap().manifest.hash.to_string()
    };
    let (h, batches) = historical_ref(&mut c, &ds, &cohort).await.unwrap();
    let deid: ward::hash::ContentHash = h.training_set.parse().unwrap();
    let m = fx.store.manifest(&deid).unwrap();
    assert_eq!(
        m.labels.get("deidentified").map(String::as_str),
        Some("safe-harbor")
    );
    let identified = m.lineage.inputs[0];
    let ids = patient_ids(&batches);
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|p| p.starts_with("pt_")), "{ids:?}");
    let recs = records(&fx.audit_dir);
    assert_eq!(recs.len(), seen + 1);
    let last = &recs[seen];
    assert_eq!(last["action"], "historical_deidentified");
    assert_eq!(last["decision"], "allowed");
    assert_eq!(last["patients"]["bulk"]["count"], 2);
    seen = recs.len();

    // Entity rows the data scientist sends itself could name patients it knows and read
    // back their tokens: refused, and audited as denied.
    let err = historical(&mut c, &ds, &["P0000001", "P0000003"], at)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let recs = records(&fx.audit_dir);
    assert_eq!(recs.len(), seen + 1);
    assert_eq!(recs[seen]["decision"], "denied", "{}", recs[seen]);
    seen = recs.len();

    // A steward gets the identified set (the same rows, the identified version).
    let steward = fx.token("st-1", &["steward"]);
    let (h2, batches2) = historical_ref(&mut c, &steward, &cohort).await.unwrap();
    assert_eq!(h2.training_set, identified.to_string());
    assert_eq!(patient_ids(&batches2), vec!["P0000001", "P0000003"]);
    let recs = records(&fx.audit_dir);
    assert_eq!(recs.len(), seen + 1);
    assert_eq!(recs[seen]["action"], "historical_identified");

    // Health stays public and unaudited; the trail verifies.
    let mut health = tonic_health::pb::health_client::HealthClient::new(fx.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(records(&fx.audit_dir).len(), seen + 1);
    let report = ward::security::audit::verify(&fx.audit_dir).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    fx.stop().await;
}

struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A leaf signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, cn: &str, sans: &[&str]) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_plaintext_and_authenticates_tokens_and_client_certificates() {
    use crate::common::proto::datasets_client::DatasetsClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap()));
    let store = Store::open(dir.path().join("store"), clock.clone()).unwrap();
    let conf = dir.path();
    let server_ca = ca("ward test server CA");
    let client_ca = ca("ward test client CA");
    let (cert, key) = leaf(&server_ca, "localhost", &["localhost"]);
    let (client_cert, client_key) = leaf(&client_ca, "scoring.ward.internal", &[]);
    std::fs::write(conf.join("server.pem"), &cert).unwrap();
    std::fs::write(conf.join("server.key"), &key).unwrap();
    std::fs::write(conf.join("clients-ca.pem"), &client_ca.pem).unwrap();
    std::fs::copy(
        crate::common::crate_dir().join("examples/security/policy.toml"),
        conf.join("policy.toml"),
    )
    .unwrap();
    std::fs::write(
        conf.join("serve.toml"),
        format!(
            r#"
addr = "127.0.0.1:0"
[auth]
policy = "policy.toml"
[[auth.api_tokens]]
subject = "dev-steward"
blake3 = "{}"
roles = ["steward"]
[auth.mtls]
identity = "cn"
[auth.mtls.principals."scoring.ward.internal"]
roles = ["model-service"]
[tls]
cert = "server.pem"
key = "server.key"
client_auth = "optional"
client_ca = "clients-ca.pem"
reload_secs = 0
"#,
            ward::security::auth::tokens::hash_token("dev-token-0123456789")
        ),
    )
    .unwrap();
    let cfg = ServeConfig::load(&conf.join("serve.toml")).unwrap();
    let shared: SharedClock = clock.clone();
    let secured = Secured::from_config(&cfg, store.root(), shared)
        .unwrap()
        .unwrap();
    let server = Server::bind(
        &cfg,
        store.clone(),
        FeatureRepo::parse(READMISSION_FEATURES, "readmission.toml").unwrap(),
    )
    .await
    .unwrap()
    .with_security(secured)
    .await
    .unwrap()
    .with_tls(cfg.tls.as_ref().unwrap(), &cfg.base)
    .unwrap();
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let audit_dir = store.root().join("audit");

    // Plaintext to a TLS-only server fails (at connect or at the call).
    let plain = async {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        DatasetsClient::new(ch)
            .list_datasets(proto::ListDatasetsRequest::default())
            .await
            .map_err(|e| e.to_string())
    };
    assert!(plain.await.is_err(), "a plaintext call succeeded");

    let tls = |identity: Option<Identity>| {
        let mut t = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&server_ca.pem))
            .domain_name("localhost");
        if let Some(i) = identity {
            t = t.identity(i);
        }
        t
    };
    let connect = |t: ClientTlsConfig| async move {
        Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(t)
            .unwrap()
            .connect()
            .await
            .unwrap()
    };

    // TLS with an API token.
    let mut c = DatasetsClient::new(connect(tls(None)).await);
    c.list_datasets(with_token(
        proto::ListDatasetsRequest::default(),
        Some("dev-token-0123456789"),
    ))
    .await
    .unwrap();
    let last = records(&audit_dir).pop().unwrap();
    assert_eq!(
        (last["principal"].as_str(), last["auth"].as_str()),
        (Some("dev-steward"), Some("api_token")),
        "{last}"
    );
    // TLS without a token or certificate: unauthenticated.
    let err = c
        .list_datasets(proto::ListDatasetsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // mTLS: the client certificate is the principal.
    let id = Identity::from_pem(&client_cert, &client_key);
    let mut m = DatasetsClient::new(connect(tls(Some(id))).await);
    m.list_datasets(proto::ListDatasetsRequest::default())
        .await
        .unwrap();
    let last = records(&audit_dir).pop().unwrap();
    assert_eq!(last["principal"], "scoring.ward.internal", "{last}");
    assert_eq!(last["auth"], "mtls");
    assert_eq!(last["roles"], json!(["model-service"]));
    assert!(ward::security::audit::verify(&audit_dir).unwrap().ok());

    let _ = tx.send(());
    served.await.unwrap().unwrap();
}

/// The records after the first `seen`, and their count now.
fn new_records(dir: &Path, seen: &mut usize) -> Vec<serde_json::Value> {
    let all = records(dir);
    let new = all[*seen..].to_vec();
    *seen = all.len();
    new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_audited_once_with_its_outcome_issuer_key_and_training_set() {
    let mut fx = Fx::start().await;
    let mut c = FeaturesClient::new(fx.channel().await);
    let mut seen = records(&fx.audit_dir).len();
    let steward = fx.token("st-1", &["steward"]);
    let clinician = fx.token("dr-a", &["clinician"]);

    // NotFound after authorization (a stored entity version that does not exist).
    let req = proto::HistoricalRequest {
        feature_set: "readmission".into(),
        entities: Some(proto::historical_request::Entities::EntitiesRef(
            "no-such-entities".into(),
        )),
        ..Default::default()
    };
    let err = c
        .get_historical_features(with_token(req, Some(&steward)))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let new = new_records(&fx.audit_dir, &mut seen);
    assert_eq!(new.len(), 1, "one record for a failed request: {new:?}");
    let r = &new[0];
    assert_eq!(r["decision"], "allowed", "{r}");
    assert_eq!(r["outcome"], "not_found", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("no-such-entities"),
        "{r}"
    );
    assert_eq!(r["action"], "historical_identified");
    assert_eq!(r["issuer"], ISS, "{r}");
    assert_eq!(r["key_id"], "ec1", "{r}");

    // Validation failure: recorded once, with the outcome.
    let req = proto::HistoricalRequest {
        feature_set: String::new(),
        ..Default::default()
    };
    let err = c
        .get_historical_features(with_token(req, Some(&steward)))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let new = new_records(&fx.audit_dir, &mut seen);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0]["outcome"], "invalid_argument");
    assert_eq!(new[0]["principal"], "st-1");

    // An unknown feature set online: allowed for the patient, then not found.
    let mut req = online(&["P0000001"]);
    req.feature_set = "no-such-set".into();
    let err = c
        .get_online_features(with_token(req, Some(&clinician)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let new = new_records(&fx.audit_dir, &mut seen);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0]["outcome"], "not_found");
    assert_eq!(new[0]["patients"], json!({ "ids": ["P0000001"] }));
    assert_eq!(new[0]["feature_set"], "no-such-set");

    // A successful online lookup: exactly one record (not one at the gate and one in the
    // handler), outcome ok.
    c.get_online_features(with_token(online(&["P0000001"]), Some(&clinician)))
        .await
        .unwrap();
    let new = new_records(&fx.audit_dir, &mut seen);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0]["outcome"], "ok");

    // Historical lookups name the training set they made.
    let at = fx.clock.now();
    let (h, _) = historical(&mut c, &steward, &["P0000001", "P0000003"], at)
        .await
        .unwrap();
    let new = new_records(&fx.audit_dir, &mut seen);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(
        new[0]["training_set"],
        h.training_set.as_str(),
        "{}",
        new[0]
    );
    assert_eq!(new[0]["patients"]["bulk"]["count"], 2);
    let report = ward::security::audit::verify(&fx.audit_dir).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historical_requests_are_authorized_before_anything_is_read() {
    // No [deid]: a data scientist may have nothing. Refused before its entity reference is
    // even resolved (it does not exist: the answer must not say so).
    let mut fx = Fx::start_with(false).await;
    let mut c = FeaturesClient::new(fx.channel().await);
    let mut seen = records(&fx.audit_dir).len();
    let ds = fx.token("ds-1", &["data-scientist"]);
    let req = proto::HistoricalRequest {
        feature_set: "readmission".into(),
        entities: Some(proto::historical_request::Entities::EntitiesRef(
            "no-such-entities".into(),
        )),
        ..Default::default()
    };
    let err = c
        .get_historical_features(with_token(req, Some(&ds)))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        !err.message().contains("no-such-entities"),
        "{}",
        err.message()
    );
    let new = new_records(&fx.audit_dir, &mut seen);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0]["decision"], "denied");
    assert_eq!(new[0]["outcome"], "failed_precondition");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privacy_officer_queries_the_audit_trail_and_others_cannot() {
    use crate::common::proto::audit_client::AuditClient;
    let mut fx = Fx::start().await;
    let mut c = FeaturesClient::new(fx.channel().await);
    let clinician = fx.token("dr-a", &["clinician"]);
    c.get_online_features(with_token(online(&["P0000001"]), Some(&clinician)))
        .await
        .unwrap();
    c.get_online_features(with_token(online(&["P0000002"]), Some(&clinician)))
        .await
        .unwrap_err();
    let officer = fx.token("po-1", &["privacy-officer"]);
    let mut a = AuditClient::new(fx.channel().await);
    let query = |patient: &str, principal: &str, from: &str, to: &str| proto::AuditQueryRequest {
        patient_id: patient.into(),
        principal: principal.into(),
        from: from.into(),
        to: to.into(),
        limit: 0,
    };
    // By patient: who looked at P0000002 (refused, but recorded).
    let r = a
        .query_audit(with_token(query("P0000002", "", "", ""), Some(&officer)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.records.len(), 1, "{:?}", r.records);
    assert_eq!(r.records[0].principal, "dr-a");
    assert_eq!(r.records[0].decision, "denied");
    assert_eq!(r.records[0].key_id, "ec1");
    assert!(!r.truncated);
    // By principal.
    let r = a
        .query_audit(with_token(query("", "dr-a", "", ""), Some(&officer)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.records.len(), 2);
    assert!(r.records.iter().all(|x| x.principal == "dr-a"));
    // By time range: everything so far happened at the fixture's clock time.
    let now = fx.clock.now();
    let later = (now + Duration::hours(1)).to_rfc3339();
    let earlier = (now - Duration::hours(1)).to_rfc3339();
    let r = a
        .query_audit(with_token(query("", "dr-a", &later, ""), Some(&officer)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.records.is_empty());
    let r = a
        .query_audit(with_token(
            query("", "dr-a", &earlier, &later),
            Some(&officer),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.records.len(), 2);
    // A bad range names the field.
    let err = a
        .query_audit(with_token(query("", "", &later, &earlier), Some(&officer)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Other roles are refused, and the refusal is recorded.
    for (who, roles) in [("dr-a", &["clinician"][..]), ("st-1", &["steward"][..])] {
        let t = fx.token(who, roles);
        let err = a
            .query_audit(with_token(query("P0000001", "", "", ""), Some(&t)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who}: {err:?}");
    }
    // The officer's queries are recorded too (action audit_read), naming the patient asked
    // about.
    let recs = records(&fx.audit_dir);
    let queries: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["rpc"] == "/ward.v1.Audit/QueryAudit")
        .collect();
    assert_eq!(queries.len(), 7, "{queries:?}");
    assert_eq!(queries[0]["principal"], "po-1");
    assert_eq!(queries[0]["action"], "audit_read");
    assert_eq!(queries[0]["patients"], json!({ "ids": ["P0000002"] }));
    assert_eq!(queries[5]["decision"], "denied");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_loopback_server_audits_every_call_as_anonymous() {
    use crate::common::proto::datasets_client::DatasetsClient;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap()));
    let store = Store::open(dir.path().join("store"), clock.clone()).unwrap();
    let opts = DemoOptions {
        patients: 20,
        seed: 5,
    };
    ward::demo::run(&store, &dir.path().join("work"), &opts, None)
        .await
        .unwrap();
    let cfg = ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..ServeConfig::default()
    };
    let repo = FeatureRepo::parse(READMISSION_FEATURES, "readmission.toml").unwrap();
    let server = Server::bind(&cfg, store.clone(), repo).await.unwrap();
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut d = DatasetsClient::new(channel.clone());
    d.get_dataset(proto::GetDatasetRequest {
        r#ref: "encounters".into(),
    })
    .await
    .unwrap();
    let err = d
        .get_dataset(proto::GetDatasetRequest {
            r#ref: "no-such-version".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut f = FeaturesClient::new(channel.clone());
    f.get_online_features(online(&["P0000001"])).await.unwrap();
    let mut flight = FlightClient::new(channel.clone());
    let _ = flight.do_get(Ticket::new("patients")).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    // A call cut by its deadline before it answered is recorded too (once).
    let mut req = tonic::Request::new(proto::HistoricalRequest {
        feature_set: "readmission".into(),
        entities: Some(proto::historical_request::Entities::EntitiesIpc(entities(
            &["P0000001", "P0000002", "P0000003"],
            clock.now(),
        ))),
        ..Default::default()
    });
    req.set_timeout(std::time::Duration::from_millis(1));
    let cut = f.get_historical_features(req).await.map(|_| ()).err();
    let audit_dir = store.root().join("audit");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while records(&audit_dir).len() < 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = tx.send(());
    served.await.unwrap().unwrap();

    let mut recs = records(&audit_dir);
    assert_eq!(
        recs.len(),
        5,
        "one per call, health not recorded: {recs:#?}"
    );
    let last = recs.pop().unwrap();
    assert_eq!(last["rpc"], "/ward.v1.Features/GetHistoricalFeatures");
    eprintln!(
        "the call cut by its deadline: {cut:?}; recorded as {}",
        last["outcome"]
    );
    match cut {
        Some(status) => assert!(
            last["outcome"] == "cancelled" || last["outcome"] == "deadline_exceeded",
            "{status:?}: {last}"
        ),
        None => assert_eq!(last["outcome"], "ok", "answered within 1 ms: {last}"),
    }
    for r in &recs {
        assert_eq!(r["principal"], "anonymous@loopback", "{r}");
        assert_eq!(r["auth"], "none", "{r}");
        assert!(
            r["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{r}"
        );
    }
    let outcomes: Vec<&str> = recs
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "not_found", "ok", "ok"]);
    assert_eq!(recs[2]["patients"], json!({ "ids": ["P0000001"] }));
    assert_eq!(recs[2]["action"], "online_lookup");
    assert_eq!(recs[3]["action"], "historical_identified");
    assert_eq!(recs[3]["datasets"].as_array().unwrap().len(), 1);
    let report = ward::security::audit::verify(&audit_dir).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
}
