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
