//! TLS for the server: a rustls `ServerConfig` (TLS 1.3; 1.2 by configuration; client
//! certificates none, optional or required against a CA file) whose certificate can be
//! replaced without a restart.
//!
//! The server certificate is served by [`CertStore`], a `ResolvesServerCert` over an
//! `ArcSwap`: [`CertStore::reload`] re-reads the certificate and key files and swaps them in
//! for new handshakes (connections already open keep theirs, and a client resuming a TLS
//! session keeps that session's authentication until it makes a full handshake). A file that does not parse, or
//! a key that does not match its certificate, is an error and the current pair stays.
//! [`spawn_reload`] checks the files on a timer and reloads when their content changed.
//!
//! ```toml
//! [tls]
//! cert = "server.pem"          # chain, leaf first (PEM)
//! key = "server.key"           # PKCS#8, PKCS#1 or SEC1 (PEM)
//! client_auth = "optional"     # none | optional | required
//! client_ca = "clients-ca.pem" # needed unless client_auth = "none"
//! allow_tls12 = false
//! reload_secs = 60             # 0: only on demand
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use crate::error::{Error, Result};

/// Whether clients present certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Not asked for.
    #[default]
    None,
    /// Verified against the client CA when presented; a client without one may still use a
    /// bearer token.
    Optional,
    /// Every client must present a certificate the client CA signed.
    Required,
}

fn default_reload_secs() -> u64 {
    60
}

/// The `[tls]` section of the server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
    /// The CA (PEM, one or more certificates) that signs client certificates.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Client certificates: none, optional or required.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Also accept TLS 1.2 (TLS 1.3 only by default).
    #[serde(default)]
    pub allow_tls12: bool,
    /// Check the certificate files for changes this often (seconds; 0 = never).
    #[serde(default = "default_reload_secs")]
    pub reload_secs: u64,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadInput {
        location: path.display().to_string(),
        field: "-".into(),
        reason: reason.into(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, blake3::Hash)> {
    let cert_bytes = std::fs::read(cert).map_err(|e| Error::io(cert, e))?;
    let key_bytes = std::fs::read(key).map_err(|e| Error::io(key, e))?;
    let stamp = content_stamp(&cert_bytes, &key_bytes);
    let certs = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(cert, "no CERTIFICATE block"));
    }
    // The error of a key file never quotes it.
    let private = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|_| {
        bad(
            key,
            "no PEM private key (PKCS#8, PKCS#1 or SEC1) could be read",
        )
    })?;
    let certified = CertifiedKey::from_der(certs, private, provider)
        .map_err(|e| bad(key, format!("unusable with {}: {e}", cert.display())))?;
    Ok((certified, stamp))
}

fn content_stamp(cert: &[u8], key: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(&(cert.len() as u64).to_le_bytes());
    h.update(cert);
    h.update(key);
    h.finalize()
}

/// The server's certificate and key, replaceable while serving.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    stamp: Mutex<blake3::Hash>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the pair.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::BadInput`] naming the file that does not parse or the key that
    /// does not match the certificate.
    pub fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<CertStore> {
        let (certified, stamp) = load_pair(cert, key, &provider)?;
        Ok(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: ArcSwap::from_pointee(certified),
            stamp: Mutex::new(stamp),
        })
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Re-reads the files and swaps the pair in.
    ///
    /// # Errors
    /// As [`CertStore::load`]; the current pair stays.
    pub fn reload(&self) -> Result<()> {
        let (certified, stamp) = load_pair(&self.cert, &self.key, &self.provider)?;
        self.current.store(Arc::new(certified));
        if let Ok(mut s) = self.stamp.lock() {
            *s = stamp;
        }
        Ok(())
    }

    /// Reloads when the files' content changed since the last load; returns whether it did.
    ///
    /// # Errors
    /// As [`CertStore::reload`] (the current pair stays).
    pub fn reload_if_changed(&self) -> Result<bool> {
        let cert = std::fs::read(&self.cert).map_err(|e| Error::io(&self.cert, e))?;
        let key = std::fs::read(&self.key).map_err(|e| Error::io(&self.key, e))?;
        let stamp = content_stamp(&cert, &key);
        let same = self.stamp.lock().map(|s| *s == stamp).unwrap_or(false);
        if same {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Builds the server configuration (ALPN `h2`, for gRPC) and the certificate store behind
/// it; relative paths resolve against `base`.
///
/// # Errors
/// [`Error::Io`]/[`Error::BadInput`] naming the file at fault; [`Error::InvalidArgument`]
/// for `client_auth` without `client_ca`.
pub fn server_config(cfg: &TlsConfig, base: &Path) -> Result<(Arc<ServerConfig>, Arc<CertStore>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let store = Arc::new(CertStore::load(
        &base.join(&cfg.cert),
        &base.join(&cfg.key),
        provider.clone(),
    )?);
    let versions: &[&'static rustls::SupportedProtocolVersion] = if cfg.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| Error::invalid("tls", e.to_string()))?;
    let builder = match cfg.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let ca_path = cfg.client_ca.as_ref().ok_or_else(|| {
                Error::invalid(
                    "tls.client_ca",
                    "needed when client_auth is optional or required",
                )
            })?;
            let ca_path = base.join(ca_path);
            let mut roots = RootCertStore::empty();
            for c in read_certs(&ca_path)? {
                roots
                    .add(c)
                    .map_err(|e| bad(&ca_path, format!("not a usable CA certificate: {e}")))?;
            }
            let mut vb = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if auth == ClientAuth::Optional {
                vb = vb.allow_unauthenticated();
            }
            let verifier = vb
                .build()
                .map_err(|e| bad(&ca_path, format!("client verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), store))
}

/// Checks the certificate files every `every` and reloads them when they changed; a failed
/// reload is logged and the current pair kept. Runs until the task is aborted.
pub fn spawn_reload(store: Arc<CertStore>, every: Duration) -> tokio::task::JoinHandle<()> {
    let every = every.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match store.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(cert = %store.cert.display(), "TLS certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!("TLS certificate not reloaded, keeping the current one: {e}")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::ClientConfig;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        pem: String,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// A leaf signed by `ca`: (cert PEM, key PEM, cert DER).
    fn leaf(ca: &Ca, cn: &str, sans: &[&str]) -> (String, String, Vec<u8>) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// Serves `n` TLS connections on loopback; each gets a line naming the client
    /// certificate's length (0 without one). Returns the address and the handshake results.
    async fn serve(
        config: Arc<ServerConfig>,
        n: usize,
    ) -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<Vec<std::result::Result<usize, String>>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(config);
        let h = tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..n {
                let (tcp, _) = listener.accept().await.unwrap();
                let r = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
                match r {
                    Ok(Ok(mut tls)) => {
                        let len = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first().map(|c| c.len()))
                            .unwrap_or(0);
                        let _ = tls.write_all(format!("hello {len}\n").as_bytes()).await;
                        let _ = tls.shutdown().await;
                        out.push(Ok(len));
                    }
                    Ok(Err(e)) => out.push(Err(e.to_string())),
                    Err(_) => out.push(Err("timeout".into())),
                }
            }
            out
        });
        (addr, h)
    }

    fn client(ca_pem: &str, cert: Option<(&str, &str)>, tls12_only: bool) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let b = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match cert {
            None => b.with_no_client_auth(),
            Some((c, k)) => b
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(c.as_bytes())
                        .map(|c| c.unwrap())
                        .collect(),
                    PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        // No session resumption: a resumed session shows the certificate of the session it
        // resumes, and these tests look at the certificate each handshake gets.
        let mut cfg = cfg;
        cfg.resumption = tokio_rustls::rustls::client::Resumption::disabled();
        TlsConnector::from(Arc::new(cfg))
    }

    /// Connects and returns the server's leaf certificate and the line it sent.
    async fn fetch(
        addr: std::net::SocketAddr,
        conn: &TlsConnector,
    ) -> std::result::Result<(Vec<u8>, String), String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut tls = conn
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let mut s = String::new();
        tls.read_to_string(&mut s)
            .await
            .map_err(|e| e.to_string())?;
        Ok((leaf, s))
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn config(client_auth: ClientAuth, allow_tls12: bool) -> TlsConfig {
        TlsConfig {
            cert: "server.pem".into(),
            key: "server.key".into(),
            client_ca: Some("clients.pem".into()),
            client_auth,
            allow_tls12,
            reload_secs: 0,
        }
    }

    #[tokio::test]
    async fn serves_and_reloads_the_certificate_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        let server_ca = ca("server ca");
        let (c1, k1, der1) = leaf(&server_ca, "ward-1", &["localhost"]);
        write(dir.path(), "server.pem", &c1);
        write(dir.path(), "server.key", &k1);
        let clients = ca("clients ca");
        write(dir.path(), "clients.pem", &clients.pem);
        let (cfg, store) = server_config(&config(ClientAuth::None, false), dir.path()).unwrap();
        let (addr, server) = serve(cfg, 4).await;
        let conn = client(&server_ca.pem, None, false);
        let (leaf1, line) = fetch(addr, &conn).await.unwrap();
        assert_eq!(leaf1, der1);
        assert_eq!(line, "hello 0\n");
        assert!(
            !store.reload_if_changed().unwrap(),
            "unchanged files: no reload"
        );
        // New certificate on disk: reloaded, served to the next handshake.
        let (c2, k2, der2) = leaf(&server_ca, "ward-2", &["localhost"]);
        write(dir.path(), "server.pem", &c2);
        write(dir.path(), "server.key", &k2);
        assert!(store.reload_if_changed().unwrap());
        let (leaf2, _) = fetch(addr, &conn).await.unwrap();
        assert_eq!(leaf2, der2);
        // A broken file is refused and the current pair stays.
        write(dir.path(), "server.pem", "not a certificate");
        let e = store.reload_if_changed().unwrap_err().to_string();
        assert!(e.contains("server.pem"), "{e}");
        let (leaf3, _) = fetch(addr, &conn).await.unwrap();
        assert_eq!(leaf3, der2);
        // A key that does not match its certificate is refused too.
        write(dir.path(), "server.pem", &c1);
        let e = store.reload().unwrap_err().to_string();
        assert!(e.contains("server.key"), "{e}");
        // A plaintext client (HTTP/2 preface) against the TLS-only port gets no service.
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
        assert!(!String::from_utf8_lossy(&buf).contains("hello"));
        let results = server.await.unwrap();
        assert!(results[..3].iter().all(|r| r.is_ok()), "{results:?}");
        assert!(
            results[3].is_err(),
            "plaintext must fail the handshake: {results:?}"
        );
    }

    #[tokio::test]
    async fn client_certificates_required_optional_and_tls12() {
        let dir = tempfile::tempdir().unwrap();
        let server_ca = ca("server ca");
        let (c, k, _) = leaf(&server_ca, "ward", &["localhost"]);
        write(dir.path(), "server.pem", &c);
        write(dir.path(), "server.key", &k);
        let clients = ca("clients ca");
        write(dir.path(), "clients.pem", &clients.pem);
        let (cc, ck, cder) = leaf(&clients, "scoring-1", &["scoring.ward.internal"]);
        let stranger = ca("other ca");
        let (sc, sk, _) = leaf(&stranger, "mallory", &["mallory.example"]);

        // Required: no certificate and a certificate from another CA fail; ours passes.
        let (cfg, _) = server_config(&config(ClientAuth::Required, false), dir.path()).unwrap();
        let (addr, server) = serve(cfg, 3).await;
        assert!(fetch(addr, &client(&server_ca.pem, None, false))
            .await
            .is_err());
        assert!(
            fetch(addr, &client(&server_ca.pem, Some((&sc, &sk)), false))
                .await
                .is_err()
        );
        let (_, line) = fetch(addr, &client(&server_ca.pem, Some((&cc, &ck)), false))
            .await
            .unwrap();
        assert_eq!(line, format!("hello {}\n", cder.len()));
        let r = server.await.unwrap();
        assert!(r[0].is_err() && r[1].is_err() && r[2].is_ok(), "{r:?}");
        // The certificate the server saw maps to a principal.
        let mut principals = std::collections::BTreeMap::new();
        principals.insert(
            "scoring.ward.internal".to_string(),
            crate::security::auth::mtls::CertPrincipal {
                roles: vec!["model-service".into()],
                clinician_id: None,
            },
        );
        let mapper = crate::security::auth::MtlsMapper::new(
            &crate::security::auth::MtlsConfig {
                identity: crate::security::auth::mtls::Identity::SanDns,
                principals,
            },
            "t",
        )
        .unwrap();
        assert_eq!(
            mapper.principal(&cder).unwrap().subject,
            "scoring.ward.internal"
        );

        // Optional: without a certificate is fine, a foreign one is not.
        let (cfg, _) = server_config(&config(ClientAuth::Optional, false), dir.path()).unwrap();
        let (addr, server) = serve(cfg, 2).await;
        let (_, line) = fetch(addr, &client(&server_ca.pem, None, false))
            .await
            .unwrap();
        assert_eq!(line, "hello 0\n");
        assert!(
            fetch(addr, &client(&server_ca.pem, Some((&sc, &sk)), false))
                .await
                .is_err()
        );
        server.await.unwrap();

        // TLS 1.2 only when configured.
        let (cfg, _) = server_config(&config(ClientAuth::None, false), dir.path()).unwrap();
        let (addr, server) = serve(cfg, 1).await;
        assert!(fetch(addr, &client(&server_ca.pem, None, true))
            .await
            .is_err());
        server.await.unwrap();
        let (cfg, _) = server_config(&config(ClientAuth::None, true), dir.path()).unwrap();
        let (addr, server) = serve(cfg, 1).await;
        fetch(addr, &client(&server_ca.pem, None, true))
            .await
            .unwrap();
        server.await.unwrap();

        // client_auth without a CA is a configuration error.
        let mut bad = config(ClientAuth::Required, false);
        bad.client_ca = None;
        assert!(server_config(&bad, dir.path()).is_err());
    }
}
