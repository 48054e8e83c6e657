//! A running secured `ward serve` (in process, 127.0.0.1:0) follows what it loaded at start
//! without a restart: care-team membership from a `ward ingest` run by another process, JWKS
//! rotation and policy edits, each within `[reload] interval_secs`, and at once on SIGHUP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::proto::{
    self, datasets_client::DatasetsClient, features_client::FeaturesClient,
};
use ward::demo::{DemoOptions, READMISSION_FEATURES};
use ward::features::FeatureRepo;
use ward::service::secure::Secured;
use ward::service::{ServeConfig, Server};
use ward::store::Store;

use crate::common::b64url;

const ISS: &str = "https://idp.test/realms/ward";

/// How long a test waits for a change to take effect: the configured interval is 0.2 s, so
/// this is generous for a loaded machine, and far below a restart.
const BOUND: Duration = Duration::from_secs(10);

struct Key {
    pair: rcgen::KeyPair,
    kid: &'static str,
}

impl Key {
    fn new(kid: &'static str) -> Key {
        Key {
            pair: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            kid,
        }
    }

    fn jwk(&self) -> serde_json::Value {
        let raw = self.pair.public_key_raw();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65]),
        })
    }

    fn token(&self, sub: &str, roles: &[&str]) -> String {
        let now = ward::clock::system().now().timestamp();
        let claims = json!({
            "iss": ISS, "aud": "ward", "sub": sub, "roles": roles,
            "iat": now - 10, "nbf": now - 10, "exp": now + 600,
        });
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.into());
        let key = EncodingKey::from_ec_pem(self.pair.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    }
}

fn write_jwks(path: &Path, keys: &[&Key]) {
    let text = json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string();
    // Replace atomically, as a key-management job would.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A policy file: the example's roles, with `clinician` and `steward` given `clinician` and
/// `steward` permissions.
fn write_policy(path: &Path, clinician: &[&str], steward: &[&str]) {
    let list = |p: &[&str]| {
        p.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "[roles.clinician]\npermissions = [{}]\n[roles.steward]\npermissions = [{}]\n",
        list(clinician),
        list(steward)
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Fx {
    dir: tempfile::TempDir,
    store: Store,
    conf: PathBuf,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<ward::Result<()>>>,
}

impl Fx {
    async fn start(key: &Key, interval_secs: f64) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), ward::clock::system()).unwrap();
        let opts = DemoOptions {
            patients: 20,
            seed: 9,
        };
        ward::demo::run(&store, &dir.path().join("work"), &opts, None)
            .await
            .unwrap();
        let conf = dir.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        write_jwks(&conf.join("jwks.json"), &[key]);
        write_policy(
            &conf.join("policy.toml"),
            &["online_lookup_care_team"],
            &["datasets_read"],
        );
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
grants = ["clinician", "steward"]
[reload]
interval_secs = {interval_secs}
"#
            ),
        )
        .unwrap();
        let cfg = ServeConfig::load(&conf.join("serve.toml")).unwrap();
        let secured = Secured::from_config(&cfg, store.root(), ward::clock::system())
            .unwrap()
            .expect("[auth] is configured");
        let repo = FeatureRepo::parse(READMISSION_FEATURES, "readmission.toml").unwrap();
        let server = Server::bind(&cfg, store.clone(), repo)
            .await
            .unwrap()
            .with_security(secured)
            .await
            .unwrap();
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Fx {
            dir,
            store,
            conf,
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

    /// GetOnlineFeatures for `patient` with `token`: the status code (`Ok` when allowed).
    async fn online(&self, token: &str, patient: &str) -> Code {
        let mut c = FeaturesClient::new(self.channel().await);
        let mut r = tonic::Request::new(proto::OnlineRequest {
            feature_set: "readmission_online".into(),
            patient_ids: vec![patient.into()],
            as_of: String::new(),
            features: vec![],
        });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        match c.get_online_features(r).await {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        }
    }

    /// ListDatasets with `token`: the status code.
    async fn list(&self, token: &str) -> Code {
        let mut c = DatasetsClient::new(self.channel().await);
        let mut r = tonic::Request::new(proto::ListDatasetsRequest::default());
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        match c.list_datasets(r).await {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        }
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

/// Polls `probe` until it gives `want`; the time it took.
async fn within<F, Fut>(what: &str, want: Code, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Code>,
{
    let started = Instant::now();
    loop {
        let got = probe().await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < BOUND,
            "{what}: still {got:?} after {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn care_teams_jwks_and_policy_reload_while_serving() {
    let key1 = Key::new("ec1");
    let mut fx = Fx::start(&key1, 0.2).await;
    let dr = key1.token("dr-reload", &["clinician"]);
    assert_eq!(fx.online(&dr, "P0000003").await, Code::PermissionDenied);

    // 1. Another process ingests a care_team assignment: the running server follows it.
    let now = ward::clock::system().now();
    let day = chrono::Duration::days(1);
    let src = fx.dir.path().join("teams");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(
        src.join("care_team.csv"),
        format!(
            "patient_id,clinician_id,role,valid_from,valid_to,source_system,source_id,known_at\n\
             P0000003,dr-reload,attending,{},{},test,a1,{}\n",
            (now - day).to_rfc3339(),
            (now + day).to_rfc3339(),
            (now - day).to_rfc3339(),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(fx.store.root())
        .args(["ingest", "--format", "csv"])
        .arg(src.join("care_team.csv"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = within("care team after a CLI ingest", Code::Ok, || {
        fx.online(&dr, "P0000003")
    })
    .await;
    eprintln!("care_team reloaded in {took:?}");

    // 2. A policy edit: clinicians lose online lookups.
    write_policy(&fx.conf.join("policy.toml"), &[], &["datasets_read"]);
    let took = within("policy edit", Code::PermissionDenied, || {
        fx.online(&dr, "P0000003")
    })
    .await;
    eprintln!("policy reloaded in {took:?}");

    // A policy that does not parse is logged and the current one kept.
    std::fs::write(fx.conf.join("policy.toml"), "[roles.steward\n").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let steward1 = key1.token("st-1", &["steward"]);
    assert_eq!(fx.list(&steward1).await, Code::Ok);
    assert_eq!(fx.online(&dr, "P0000003").await, Code::PermissionDenied);

    // 3. JWKS rotation: ec2 replaces ec1.
    let key2 = Key::new("ec2");
    let steward2 = key2.token("st-2", &["steward"]);
    assert_eq!(fx.list(&steward2).await, Code::Unauthenticated);
    write_jwks(&fx.conf.join("jwks.json"), &[&key2]);
    let took = within("JWKS rotation (new key)", Code::Ok, || fx.list(&steward2)).await;
    eprintln!("JWKS reloaded in {took:?}");
    // The retired key's tokens, remembered as verified before, are refused now.
    assert_eq!(fx.list(&steward1).await, Code::Unauthenticated);
    // A JWKS that does not parse keeps the current keys.
    std::fs::write(fx.conf.join("jwks.json"), "{ \"keys\": [").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fx.list(&steward2).await, Code::Ok);
    fx.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_at_once() {
    let key = Key::new("ec1");
    // An hour between checks: only SIGHUP can make the change take effect in this test.
    let mut fx = Fx::start(&key, 3600.0).await;
    let steward = key.token("st-1", &["steward"]);
    assert_eq!(fx.list(&steward).await, Code::Ok);
    write_policy(&fx.conf.join("policy.toml"), &[], &[]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        fx.list(&steward).await,
        Code::Ok,
        "not reloaded before SIGHUP"
    );
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let took = within("policy after SIGHUP", Code::PermissionDenied, || {
        fx.list(&steward)
    })
    .await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    fx.stop().await;
}

/// The bound is what `[reload]` says; the default is 2 s.
#[test]
fn the_reload_interval_is_configured() {
    let c = ServeConfig::parse("", "t.toml").unwrap();
    assert_eq!(c.reload.interval(), Duration::from_secs(2));
}
