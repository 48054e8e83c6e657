//! MLLP over TLS: with `[tls]` configured the listener speaks TLS with the server's own
//! certificates; a TLS sender is acknowledged once its message is durable, a plaintext one
//! gets no acknowledgement.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use ward::clock::ManualClock;
use ward::live::LiveConfig;
use ward::service::ServeConfig;
use ward::store::Store;

/// A CA and a `localhost` leaf signed by it: (CA PEM, cert PEM, key PEM).
fn certificates() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "ward test MLLP CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

const MSG: &str =
    "MSH|^~\\&|LAB|HOSP|WARD|DC|20240101120000||ORU^R01^ORU_R01|TLS-1|P|2.5.1\rPID|1||P1^^^H^MR\r";

fn framed(msg: &str) -> Vec<u8> {
    let mut f = vec![0x0b];
    f.extend_from_slice(msg.as_bytes());
    f.extend_from_slice(&[0x1c, 0x0d]);
    f
}

/// Reads one MLLP frame (or what arrives before the peer closes or `secs` pass).
async fn read_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S, secs: u64) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !got.ends_with(&[0x1c, 0x0d]) {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_over_tls_acknowledges_a_tls_sender_and_not_a_plaintext_one() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path();
    let (ca_pem, cert, key) = certificates();
    std::fs::write(conf.join("server.pem"), &cert).unwrap();
    std::fs::write(conf.join("server.key"), &key).unwrap();
    std::fs::write(
        conf.join("serve.toml"),
        "addr = \"127.0.0.1:0\"\n[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nreload_secs = 0\n",
    )
    .unwrap();
    let cfg = ServeConfig::load(&conf.join("serve.toml")).unwrap();
    let (tls, _certs) =
        ward::security::tls::server_config(cfg.tls.as_ref().unwrap(), &cfg.base).unwrap();
    let clock = Arc::new(ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap()));
    let store = Store::open(conf.join("store"), clock).unwrap();
    let running = ward::live::serve(
        "127.0.0.1:0".parse().unwrap(),
        &store,
        &LiveConfig::default(),
        None,
        Some(tls),
        None,
    )
    .await
    .unwrap();

    // A plaintext sender: its frame is not a TLS hello, so no ACK comes back.
    let mut plain = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    plain.write_all(&framed(MSG)).await.unwrap();
    let answer = read_frame(&mut plain, 5).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("MSA|"),
        "a plaintext sender was acknowledged: {answer:?}"
    );

    // A TLS sender that trusts the CA: acknowledged (AA), and the message is in the log.
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject as _;
    let ca_der = rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(&framed(MSG)).await.unwrap();
    let ack = String::from_utf8_lossy(&read_frame(&mut s, 20).await).into_owned();
    assert!(ack.contains("MSA|AA|TLS-1"), "{ack:?}");
    let logged = ward::live::wal::scan(running.wal.dir(), false).unwrap();
    assert_eq!(logged.records.len(), 1, "the message is in the log once");
}

/// Sends one HTTP/1.1 request over `s` and reads the whole answer (the request asks the
/// server to close). Gives up after `secs`.
async fn http_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
    secs: u64,
) -> String {
    let _ = s.write_all(request).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(secs),
        s.read_to_end(&mut got),
    )
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

const BUNDLE: &str = r#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","id":"tls-p1","gender":"female","birthDate":"1950-02-03"}}]}"#;

fn push_request() -> Vec<u8> {
    format!(
        "POST /fhir HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BUNDLE}",
        BUNDLE.len()
    )
    .into_bytes()
}

/// A rustls client trusting `ca_pem`, presenting `identity` (cert PEM, key PEM) if given.
fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A server with authentication (the example policy), client certificates mapped by their
/// common name to a role (`principals`: CN, role), and `[tls]` asking for optional client
/// certificates.
struct Mtls {
    /// The CA the server's certificate chains to.
    ca_pem: String,
    /// Each principal's client certificate and key (PEM), by common name.
    clients: std::collections::BTreeMap<String, (String, String)>,
    tls: Arc<rustls::ServerConfig>,
    security: Arc<ward::security::gate::Security>,
    store: Store,
    clock: Arc<ManualClock>,
    dir: tempfile::TempDir,
}

fn mtls(principals: &[(&str, &str)]) -> Mtls {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path();
    let (ca_pem, cert, key) = certificates();
    let ca = client_ca();
    let clients = principals
        .iter()
        .map(|(cn, _)| (cn.to_string(), client_leaf(&ca, cn)))
        .collect();
    std::fs::write(conf.join("server.pem"), &cert).unwrap();
    std::fs::write(conf.join("server.key"), &key).unwrap();
    std::fs::write(conf.join("clients-ca.pem"), &ca.2).unwrap();
    std::fs::copy(
        crate::common::crate_dir().join("examples/security/policy.toml"),
        conf.join("policy.toml"),
    )
    .unwrap();
    let mut toml = String::from(
        "addr = \"127.0.0.1:0\"\n[auth]\npolicy = \"policy.toml\"\n[auth.mtls]\nidentity = \"cn\"\n",
    );
    for (cn, role) in principals {
        toml.push_str(&format!(
            "[auth.mtls.principals.\"{cn}\"]\nroles = [\"{role}\"]\n"
        ));
    }
    toml.push_str("[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_auth = \"optional\"\nclient_ca = \"clients-ca.pem\"\nreload_secs = 0\n");
    std::fs::write(conf.join("serve.toml"), toml).unwrap();
    let cfg = ServeConfig::load(&conf.join("serve.toml")).unwrap();
    let (tls, _certs) =
        ward::security::tls::server_config(cfg.tls.as_ref().unwrap(), &cfg.base).unwrap();
    let clock = Arc::new(ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap()));
    let store = Store::open(conf.join("store"), clock.clone()).unwrap();
    let secured = ward::service::secure::Secured::from_config(&cfg, store.root(), clock.clone())
        .unwrap()
        .expect("[auth] is configured");
    Mtls {
        ca_pem,
        clients,
        tls,
        security: secured.security.clone(),
        store,
        clock,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_push_over_https_authenticates_client_certificates_and_refuses_plaintext() {
    // The sender's certificate (CN feed.ward.internal) maps to a steward (ingest).
    let fx = mtls(&[("feed.ward.internal", "steward")]);
    let ca_pem = fx.ca_pem.clone();
    let (sender_cert, sender_key) = fx.clients["feed.ward.internal"].clone();
    let store = &fx.store;
    let running = ward::live::serve_http(
        "127.0.0.1:0".parse().unwrap(),
        store,
        &LiveConfig::default(),
        Some(fx.security.clone()),
        None,
        Some(fx.tls.clone()),
    )
    .await
    .unwrap();
    let logged = || {
        ward::live::wal::scan(running.wal.dir(), false)
            .unwrap()
            .records
            .len()
    };

    // Plaintext HTTP: the bytes are not a TLS hello, so no HTTP answer comes back.
    let mut plain = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let answer = http_exchange(&mut plain, &push_request(), 5).await;
    assert!(
        !answer.contains("HTTP/1.1"),
        "a plaintext client got an HTTP answer: {answer:?}"
    );

    let name = || rustls_pki_types::ServerName::try_from("localhost").unwrap();
    // HTTPS without a credential: 401, nothing logged.
    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let mut s = tls_client(&ca_pem, None)
        .connect(name(), tcp)
        .await
        .unwrap();
    let answer = http_exchange(&mut s, &push_request(), 20).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    assert_eq!(logged(), 0);

    // HTTPS with the sender's client certificate: authenticated as feed.ward.internal
    // (a steward: ingest), 200 once the payload is in the log.
    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let mut s = tls_client(&ca_pem, Some((&sender_cert, &sender_key)))
        .connect(name(), tcp)
        .await
        .unwrap();
    let answer = http_exchange(&mut s, &push_request(), 20).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(logged(), 1, "the payload is in the log once");

    // The catalog is served on the same HTTPS listener, behind the same authentication:
    // no credential is a 401; the sender's certificate (a steward: datasets_read) reads it.
    let catalog = b"GET /api/versions HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let mut s = tls_client(&ca_pem, None)
        .connect(name(), tcp)
        .await
        .unwrap();
    let answer = http_exchange(&mut s, catalog, 20).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let mut s = tls_client(&ca_pem, Some((&sender_cert, &sender_key)))
        .connect(name(), tcp)
        .await
        .unwrap();
    let answer = http_exchange(&mut s, catalog, 20).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

/// A CA: (params, key, PEM).
fn client_ca() -> (rcgen::CertificateParams, rcgen::KeyPair, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "ward test client CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = ca.self_signed(&key).unwrap().pem();
    (ca, key, pem)
}

/// A client certificate with common name `cn` signed by the CA: (cert PEM, key PEM).
fn client_leaf(
    ca: &(rcgen::CertificateParams, rcgen::KeyPair, String),
    cn: &str,
) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params
        .signed_by(&key, &rcgen::Issuer::from_params(&ca.0, &ca.1))
        .unwrap()
        .pem();
    (cert, key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_senders_authenticate_by_client_certificate_when_auth_is_on() {
    use ward::security::audit::{AuditLog, AuditOptions, Durability};
    // The engine is a steward (ingest); the scoring service a model-service (no ingest).
    let fx = mtls(&[
        ("engine.ward.internal", "steward"),
        ("scoring.ward.internal", "model-service"),
    ]);
    let ca_pem = fx.ca_pem.clone();
    let (engine_cert, engine_key) = fx.clients["engine.ward.internal"].clone();
    let (scoring_cert, scoring_key) = fx.clients["scoring.ward.internal"].clone();
    let audit_dir = fx.dir.path().join("audit");
    let log = AuditLog::open(
        &audit_dir,
        fx.clock.clone(),
        AuditOptions {
            durability: Durability::Sync,
            ..AuditOptions::default()
        },
    )
    .unwrap();
    let running = ward::live::serve(
        "127.0.0.1:0".parse().unwrap(),
        &fx.store,
        &LiveConfig::default(),
        Some(Arc::new(log)),
        Some(fx.tls.clone()),
        Some(fx.security.clone()),
    )
    .await
    .unwrap();
    let logged = || {
        ward::live::wal::scan(running.wal.dir(), false)
            .unwrap()
            .records
            .len()
    };
    let name = || rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let send = |identity: Option<(String, String)>, msg: &'static str| {
        let ca_pem = ca_pem.clone();
        let addr = running.addr;
        async move {
            let connector = tls_client(
                &ca_pem,
                identity.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
            );
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut s = connector.connect(name(), tcp).await.unwrap();
            s.write_all(&framed(msg)).await.unwrap();
            String::from_utf8_lossy(&read_frame(&mut s, 20).await).into_owned()
        }
    };

    // No client certificate: refused (AR), nothing logged.
    let ack = send(None, MSG).await;
    assert!(ack.contains("MSA|AR|TLS-1"), "{ack:?}");
    assert!(ack.contains("not admitted"), "{ack:?}");
    assert_eq!(logged(), 0);
    // A certificate whose role lacks ingest: refused, nothing logged.
    let ack = send(Some((scoring_cert, scoring_key)), MSG).await;
    assert!(ack.contains("MSA|AR|TLS-1"), "{ack:?}");
    assert_eq!(logged(), 0);
    // The engine's certificate: acknowledged once durable.
    let ack = send(Some((engine_cert, engine_key)), MSG).await;
    assert!(ack.contains("MSA|AA|TLS-1"), "{ack:?}");
    assert_eq!(logged(), 1);

    // The trail: two denials, then the engine's ingest under its certificate's identity.
    let mut recs = Vec::new();
    for _ in 0..200 {
        recs = crate::common::audit_records(&audit_dir)
            .into_iter()
            .filter(|r| r["rpc"] == "mllp")
            .collect();
        if recs.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(recs.len(), 3, "{recs:?}");
    assert!(
        recs.iter().take(2).all(|r| r["decision"] == "denied"),
        "{recs:?}"
    );
    assert_eq!(recs[1]["principal"], "scoring.ward.internal");
    assert_eq!(recs[2]["decision"], "allowed");
    assert_eq!(recs[2]["principal"], "engine.ward.internal");
    assert_eq!(recs[2]["auth"], "mtls");
    let reason = recs[2]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("MSH sender LAB^HOSP"), "{reason}");
}

#[test]
fn mllp_with_auth_needs_client_certificates_or_an_explicit_opt_out() {
    use ward::live::{check_sender_auth, MllpAuth};
    let addr = "127.0.0.1:2575".parse().unwrap();
    let mut cfg = LiveConfig::default();
    let e = check_sender_auth(addr, &cfg, true, false).unwrap_err();
    assert!(e.to_string().contains("mllp_auth = \"none\""), "{e}");
    check_sender_auth(addr, &cfg, true, true).unwrap();
    check_sender_auth(addr, &cfg, false, false).unwrap();
    cfg.mllp_auth = MllpAuth::None;
    check_sender_auth(addr, &cfg, true, false).unwrap();
}
