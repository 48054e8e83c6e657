//! The cost of security on online lookups (issue 8), over loopback, in one run: the same
//! `GetOnlineFeatures` pattern as the serve bench (one random patient x 20 features of the
//! `readmission` set, each client sending its next request when the last returned) against
//! three `ward serve` children on the same store:
//!
//! - `off`: no `[auth]` (loopback only), no audit;
//! - `on`: JWT authentication (ES256 bearer token of a `model-service` principal, verified
//!   against a JWKS), the role policy, and the audit trail with its default durability
//!   (written before the response, synced every 20 ms);
//! - `on, sync`: the same with `durability = "sync"` (each record on disk before the
//!   response), for comparison;
//! - `on, TLS`: `on` behind TLS (`[tls]`, a self-signed P-256 certificate for `localhost`
//!   the clients trust): issue 37's production settings (default worker threads, JWT,
//!   audit at its default durability, TLS).
//!
//! Rounds alternate the servers (1 client, then 8 clients) so that machine noise hits
//! them alike; the table gives the median over rounds of each p50 and p99, and the added
//! latency (`on` minus `off`).
//!
//! `cargo bench --bench secure_online -- [PATIENTS [SECONDS [ROUNDS]]]` (defaults 2,000, 5, 3).
//! `WARD_BENCH_SERVER_CPUS=0 WARD_BENCH_CLIENT_CPUS=1` pins the servers to CPU 0 and this
//! process (the load generator) to CPU 1 with `taskset` (`grpc_common::pin_self`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::grpc_common::proto::features_client::FeaturesClient;
use crate::grpc_common::proto::OnlineRequest;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

mod grpc_common;

use grpc_common::{arg, b64url, drive, pct, readmission, start_ward, Run};

const ISSUER: &str = "https://idp.bench.example/realms/ward";

fn main() {
    let pinned = grpc_common::pin_self();
    if let Some(p) = &pinned {
        println!("{p}");
    }
    let patients = arg(1, 2_000);
    let secs = arg(2, 5);
    let rounds = arg(3, 3) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(patients, secs, rounds));
}

/// The serve configs (name, path), the bearer token, and the PEM of the TLS server's
/// certificate (the clients' trust anchor).
type Configs = (Vec<(&'static str, std::path::PathBuf)>, String, String);

/// Writes the JWKS, the policy, a TLS certificate and the serve configs.
fn configs(dir: &Path, repo: &Path) -> Configs {
    let tls = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_pem = tls.cert.pem();
    std::fs::write(dir.join("server.pem"), &cert_pem).expect("cert");
    std::fs::write(dir.join("server.key"), tls.signing_key.serialize_pem()).expect("key");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let raw = key.public_key_raw();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "bench",
        "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65]),
    });
    std::fs::write(dir.join("jwks.json"), json!({ "keys": [jwk] }).to_string()).expect("jwks");
    std::fs::copy("examples/security/policy.toml", dir.join("policy.toml")).expect("policy");
    let common = format!(
        "features = [{:?}]\n[limits]\nrequest_timeout_secs = 600\n",
        repo.display().to_string()
    );
    let auth = |audit: &str| {
        format!(
            "{common}[auth]\npolicy = \"policy.toml\"\n[[auth.jwt]]\nissuer = \"{ISSUER}\"\naudience = [\"ward\"]\njwks = \"jwks.json\"\ngrants = [\"model-service\"]\n[audit]\n{audit}"
        )
    };
    let mut out = Vec::new();
    for (name, text) in [
        ("off", common.clone()),
        ("on", auth("dir = \"audit-interval\"\n")),
        (
            "on, sync",
            auth("dir = \"audit-sync\"\ndurability = \"sync\"\n"),
        ),
        (
            "on, TLS",
            auth("dir = \"audit-tls\"\n[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n"),
        ),
    ] {
        let path = dir.join(format!("serve-{}.toml", out.len()));
        std::fs::write(&path, text).expect("config");
        out.push((name, path));
    }
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": ISSUER, "aud": "ward", "sub": "readmission-model", "roles": ["model-service"],
        "iat": now - 10, "nbf": now - 10, "exp": now + 24 * 3600,
    });
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("bench".into());
    let enc = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("pem");
    let token = jsonwebtoken::encode(&h, &claims, &enc).expect("sign");
    (out, token, cert_pem)
}

async fn load(
    url: String,
    tls: Option<String>,
    token: Option<String>,
    ids: Arc<Vec<String>>,
    feats: Arc<Vec<String>>,
    clients: usize,
    secs: u64,
) -> Run {
    drive(clients, secs, move |c| {
        let (ids, feats, url, token) = (ids.clone(), feats.clone(), url.clone(), token.clone());
        let tls = tls.clone();
        async move {
            let mut endpoint = Endpoint::from_shared(url).expect("url");
            if let Some(pem) = tls {
                endpoint = endpoint
                    .tls_config(
                        ClientTlsConfig::new()
                            .ca_certificate(Certificate::from_pem(pem))
                            .domain_name("localhost"),
                    )
                    .expect("tls config");
            }
            let mut client = FeaturesClient::new(endpoint.connect().await.expect("connect"));
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c as u64);
            let bearer: Option<tonic::metadata::MetadataValue<_>> =
                token.map(|t| format!("Bearer {t}").parse().expect("header"));
            let mut lat = Vec::new();
            let mut errors = 0;
            let warm = Instant::now() + Duration::from_secs(1);
            let end = warm + Duration::from_secs(secs);
            while Instant::now() < end {
                let mut req = tonic::Request::new(OnlineRequest {
                    feature_set: "readmission".into(),
                    patient_ids: vec![ids[rng.random_range(0..ids.len())].clone()],
                    as_of: String::new(),
                    features: feats.to_vec(),
                });
                if let Some(b) = &bearer {
                    req.metadata_mut().insert("authorization", b.clone());
                }
                let s = Instant::now();
                let res = client.get_online_features(req).await;
                if s >= warm {
                    lat.push(s.elapsed());
                    if let Err(e) = &res {
                        if errors == 0 {
                            eprintln!("request failed: {e}");
                        }
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }
    })
    .await
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run(patients: u64, secs: u64, rounds: usize) {
    let r = readmission("ward-secure-bench", patients).await;
    let (dir, store_dir, repo_path) = (&r.dir, &r.store_dir, &r.repo_path);
    let (ids, feats) = (r.ids.clone(), r.features.clone());
    let (cfgs, token, cert_pem) = configs(dir.path(), repo_path);
    let servers: Vec<_> = cfgs
        .iter()
        .map(|(name, cfg)| {
            let (proc, addr) = start_ward(store_dir, cfg);
            eprintln!("{name}: ward serve on {addr}");
            let url = if name.contains("TLS") {
                format!("https://localhost:{}", addr.port())
            } else {
                format!("http://{addr}")
            };
            (*name, proc, url)
        })
        .collect();
    let (ids, feats) = (Arc::new(ids), Arc::new(feats));
    // results[server][clients index] = per-round (p50, p99, lookups/s)
    let client_counts = [1usize, 8];
    let mut results = vec![vec![Vec::new(); client_counts.len()]; servers.len()];
    let mut errors = 0;
    for round in 0..rounds {
        for (ci, &clients) in client_counts.iter().enumerate() {
            for (si, (name, _, url)) in servers.iter().enumerate() {
                let token = (*name != "off").then(|| token.clone());
                let tls = name.contains("TLS").then(|| cert_pem.clone());
                let r = load(
                    url.clone(),
                    tls,
                    token,
                    ids.clone(),
                    feats.clone(),
                    clients,
                    secs,
                )
                .await;
                eprintln!("round {round}: {}", r.row(name));
                errors += r.errors;
                results[si][ci].push((
                    pct(&r.lat, 0.5),
                    pct(&r.lat, 0.99),
                    r.lat.len() as f64 / r.secs,
                ));
            }
        }
    }
    assert_eq!(errors, 0, "requests failed: the comparison is void");
    println!(
        "## Online lookups with and without security: {patients} patients, 20 features per lookup, {secs} s per run, median of {rounds} rounds\n"
    );
    println!("| server | clients | p50 us | p99 us | lookups/s | p99 added vs off |");
    println!("|---|---|---|---|---|---|");
    for (ci, &clients) in client_counts.iter().enumerate() {
        let off_p99 = median(results[0][ci].iter().map(|r| r.1).collect());
        for (si, (name, _, _)) in servers.iter().enumerate() {
            let rs = &results[si][ci];
            let p99 = median(rs.iter().map(|r| r.1).collect());
            println!(
                "| {name} | {clients} | {:.0} | {:.0} | {:.0} | {} |",
                median(rs.iter().map(|r| r.0).collect()),
                p99,
                median(rs.iter().map(|r| r.2).collect()),
                if si == 0 {
                    "-".to_string()
                } else {
                    format!("{:+.0} us", p99 - off_p99)
                }
            );
        }
    }
    for (_, proc, _) in servers {
        drop(proc);
    }
    for d in ["audit-interval", "audit-sync", "audit-tls"] {
        let r = ward::security::audit::verify(&dir.path().join(d)).expect("verify");
        assert!(r.ok(), "{d}: {:?}", r.problem);
        println!("\n{d}: {} records verified", r.records);
    }
}
