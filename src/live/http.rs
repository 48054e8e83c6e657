//! The HTTP listener of live feeds (`ward serve --http ADDR`): FHIR pushed as a Bundle or
//! as Bulk NDJSON to `POST /fhir`, answered 200 only once the payload is durable in the
//! feed's write-ahead log (the same group commit as MLLP), and with an OperationOutcome
//! naming where the payload is wrong otherwise ([`super::fhir`] has the checks).
//!
//! Routes live under [`FHIR_PATH`]; the same listener serves the web UI's catalog under
//! `/ui` and `/api` ([`crate::ui`], `docs/ui.md`). With the server's `[tls]` configured the
//! listener speaks HTTPS with the server's own certificates (and client certificates as
//! configured there). With the server's authentication on, a push needs a bearer token (or
//! a client certificate) whose roles grant `ingest`: 401 without credentials, 403 without
//! the permission. Every push that reaches the handler is audited once, with its
//! principal, peer, outcome and, when logged, the record, source and resource counts.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::serve::ListenerExt as _;
use axum::{Extension, Router};
use futures::StreamExt;

use super::fhir::{self, Issue};
use super::wal::{Appended, Status, Wal};
use super::{LiveConfig, Running};
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::ingest::fhir::Framing;
use crate::ingest::Context;
use crate::security::audit::{AuditEntry, AuditLog};
use crate::security::auth::{Principal, RequestContext};
use crate::security::gate::Security;
use crate::security::note::{AuditNote, Finish};
use crate::security::policy::Action;
use crate::service::tls_serve::{tls_incoming, TlsConn, TlsInfo};

/// The path FHIR payloads are posted to.
pub const FHIR_PATH: &str = "/fhir";

/// The name push requests have in the audit trail.
pub const AUDIT_RPC: &str = "http:POST /fhir";

/// The header a sender names a payload with, so that a resend is logged once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The listener's shared state.
#[derive(Debug)]
struct Shared {
    wal: Wal,
    feed: String,
    clock: SharedClock,
    max_body: usize,
    security: Option<Arc<Security>>,
    audit: Option<Arc<AuditLog>>,
}

/// Refuses a non-loopback HTTP address without TLS unless `insecure`: pushes and the
/// catalog carry patient data and bearer tokens.
///
/// # Errors
/// [`Error::FailedPrecondition`] naming the address.
pub fn check_exposure(addr: SocketAddr, tls: bool, insecure: bool) -> Result<()> {
    if addr.ip().is_loopback() || tls || insecure {
        return Ok(());
    }
    Err(Error::precondition(
        format!("--http {addr}"),
        "a non-loopback HTTP listener without TLS sends patient data and bearer tokens in plain text; configure [tls] (the listener then speaks HTTPS), or put a TLS terminator in front and listen on loopback, or pass --insecure",
    ))
}

/// Opens the feed `cfg.http_feed` of `store` and serves `POST /fhir` on `addr`, with the
/// catalog of `store` and the feature sets of `features` under `/ui` and `/api`
/// ([`crate::ui`]).
/// `security` (the server's, when authentication is on) decides who may push; `audit`
/// records every push; `tls` (the server's TLS configuration) makes it HTTPS. Prints
/// `http listening on ADDR (feed F, ...)` (`https listening on ...` over TLS) to standard
/// error once bound.
///
/// # Errors
/// Configuration, log recovery and bind errors.
pub async fn start(
    addr: SocketAddr,
    store: &crate::store::Store,
    cfg: &LiveConfig,
    security: Option<Arc<Security>>,
    audit: Option<Arc<AuditLog>>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    features: Arc<crate::features::FeatureRepo>,
) -> Result<Running> {
    cfg.validate()?;
    let clock = store.clock().clone();
    let dir = super::wal::feed_dir(&store.local_root("a live feed's log")?, &cfg.http_feed);
    let (wal, opened) = Wal::open_with_keys(
        &dir,
        clock.clone(),
        cfg.segment_bytes,
        store.encryption().map(|c| c.keyring().clone()),
    )?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::precondition(format!("http {addr}"), format!("cannot listen: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::precondition(format!("http {addr}"), e.to_string()))?;
    eprintln!(
        "{} listening on {local} (POST {FHIR_PATH}: feed {}, {} records in the log, next sequence number {}; {})",
        if tls.is_some() { "https" } else { "http" },
        cfg.http_feed,
        opened.records,
        opened.next_seq,
        if security.is_some() {
            "bearer token with the ingest permission required"
        } else {
            "UNAUTHENTICATED"
        }
    );
    let ui = crate::ui::UiState {
        store: store.clone(),
        security: security.clone(),
        audit: audit.clone(),
        features,
    };
    let shared = Arc::new(Shared {
        wal: wal.clone(),
        feed: cfg.http_feed.clone(),
        clock,
        max_body: cfg.max_body_bytes,
        security,
        audit,
    });
    // The web UI's catalog (/ui, /api) on the same listener (docs/ui.md).
    let app = router(shared).merge(crate::ui::router(ui));
    match tls {
        None => {
            tokio::spawn(async move {
                let served = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await;
                if let Err(e) = served {
                    tracing::error!("the HTTP listener stopped: {e}");
                }
            });
        }
        Some(config) => {
            // Only HTTP/1.1 is served here (the gRPC port has h2).
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let listener = TlsListener {
                incoming: tls_incoming(listener, Arc::new(config)),
                local,
            };
            // `tap_io` gives the listener's connection info (`TlsInfo`) to the handlers;
            // `tls_peer` turns it into the `ConnectInfo<SocketAddr>` they read.
            let app = app.layer(axum::middleware::map_request(tls_peer));
            tokio::spawn(async move {
                let served = axum::serve(
                    listener.tap_io(|_| {}),
                    app.into_make_service_with_connect_info::<TlsInfo>(),
                )
                .await;
                if let Err(e) = served {
                    tracing::error!("the HTTPS listener stopped: {e}");
                }
            });
        }
    }
    Ok(Running {
        addr: local,
        wal,
        sealed: Arc::new(tokio::sync::Notify::new()),
    })
}

/// The handshaken connections of [`tls_incoming`] (each handshake on its own task, so a
/// slow client holds up no other) as an axum listener.
struct TlsListener {
    incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConn;
    type Addr = TlsInfo;

    async fn accept(&mut self) -> (TlsConn, TlsInfo) {
        loop {
            match self.incoming.next().await {
                Some(Ok(conn)) => {
                    let info = conn.info().clone();
                    return (conn, info);
                }
                Some(Err(_)) => continue,
                // The acceptor stops only with the process.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<TlsInfo> {
        Ok(TlsInfo {
            peer: Some(self.local),
            client_cert: None,
        })
    }
}

/// Puts a TLS connection's peer address where the handlers read it (`ConnectInfo`), beside
/// its [`TlsInfo`] (the client certificate, for authentication).
async fn tls_peer(mut req: axum::extract::Request) -> axum::extract::Request {
    if let Some(ConnectInfo(info)) = req.extensions().get::<ConnectInfo<TlsInfo>>().cloned() {
        if let Some(peer) = info.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        req.extensions_mut().insert(info);
    }
    req
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            FHIR_PATH,
            post(push).fallback(|| async {
                answer(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &[Issue::error(
                        "not-supported",
                        format!("only POST is offered on {FHIR_PATH}"),
                    )],
                )
            }),
        )
        .fallback(|uri: Uri| async move {
            answer(
                StatusCode::NOT_FOUND,
                &[Issue::error(
                    "not-found",
                    format!(
                        "no route {}: POST FHIR payloads to {FHIR_PATH}; the catalog is at /ui/ and /api/versions",
                        uri.path()
                    ),
                )],
            )
        })
        .with_state(shared)
}

/// An answer with an OperationOutcome body.
fn answer(status: StatusCode, issues: &[Issue]) -> Response {
    fhir_json(status, &fhir::outcome(issues))
}

/// An answer with a FHIR JSON body.
fn fhir_json(status: StatusCode, body: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/fhir+json"),
    );
    r
}

/// The framing a content type names (parameters such as `charset` ignored).
fn framing_of(headers: &HeaderMap) -> std::result::Result<Framing, String> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?").to_string())
        .unwrap_or_default();
    let mime = raw
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/fhir+json" | "application/json" => Ok(Framing::Bundle),
        "application/fhir+ndjson" | "application/x-ndjson" | "application/ndjson" => {
            Ok(Framing::Ndjson)
        }
        _ => Err(format!(
            "content type {raw:?} is not accepted: a Bundle as application/fhir+json (or application/json), resources as application/fhir+ndjson (or application/x-ndjson)"
        )),
    }
}

/// The `source` query parameter (default `<feed>.ndjson`).
fn source_of(uri: &Uri, feed: &str) -> std::result::Result<String, String> {
    let mut source = None;
    for pair in uri.query().unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        match pair.split_once('=') {
            Some(("source", v)) => {
                fhir::check_source(v)?;
                source = Some(v.to_string());
            }
            _ => {
                return Err(format!(
                    "query parameter {pair:?} is not known: the only one is source=<file name>"
                ))
            }
        }
    }
    Ok(source.unwrap_or_else(|| fhir::default_source(feed)))
}

/// The body, or the answer when it is over `max` bytes (413) or breaks off (400).
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    max: usize,
) -> std::result::Result<Vec<u8>, (StatusCode, Issue)> {
    let too_big = |n: String| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Issue::error(
                "too-costly",
                format!("the body ({n} bytes) exceeds {max} bytes (live.max_body_bytes): split it into several POSTs"),
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max as u64) {
        return Err(too_big(n.to_string()));
    }
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(max as u64) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                Issue::error("incomplete", format!("the body could not be read: {e}")),
            )
        })?;
        if out.len() + chunk.len() > max {
            return Err(too_big(format!("more than {max}")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Appends an audit entry, from a blocking thread when the append waits for the disk.
pub(crate) async fn record(log: Option<&Arc<AuditLog>>, entry: AuditEntry) -> Result<()> {
    let Some(log) = log.cloned() else {
        return Ok(());
    };
    if !log.append_blocks() {
        return log.append(entry).map(|_| ());
    }
    tokio::task::spawn_blocking(move || log.append(entry))
        .await
        .map_err(|e| Error::Internal(format!("audit task failed: {e}")))?
        .map(|_| ())
}

/// The audit code of an HTTP status.
fn audit_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        413 => "resource_exhausted",
        500..=599 => "unavailable",
        _ => "invalid_argument",
    }
}

/// `POST /fhir`: authenticate, read, check, log durably, audit, answer.
async fn push(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    tls: Option<Extension<TlsInfo>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let note = AuditNote::default();
    let sender = match &s.security {
        Some(security) => {
            let mut ctx = RequestContext::from_headers(AUDIT_RPC, &headers, Some(peer));
            if let Some(cert) = tls.and_then(|Extension(t)| t.client_cert) {
                ctx = ctx.with_client_cert(cert.to_vec());
            }
            match security.admit_action(&ctx, Action::Ingest, &note) {
                Ok(p) => p.subject,
                Err(e) => return refuse(&s, &note, peer, &e).await,
            }
        }
        None => {
            note.set_principal(&Principal::anonymous(Some(peer)));
            note.set_action(Action::Ingest);
            peer.ip().to_string()
        }
    };
    let failed = |status: StatusCode, issues: Vec<Issue>| {
        let note = note.clone();
        let s = s.clone();
        async move {
            let message = issues
                .iter()
                .map(|i| i.diagnostics.as_str())
                .take(5)
                .collect::<Vec<_>>()
                .join("; ");
            let entry = note.entry_finished(
                AUDIT_RPC,
                Some(peer),
                Finish::Failed {
                    code: audit_code(status),
                    message: &message,
                },
            );
            if let Err(e) = record(s.audit.as_ref(), entry).await {
                return audit_failed(&e);
            }
            answer(status, &issues)
        }
    };
    let framing = match framing_of(&headers) {
        Ok(f) => f,
        Err(why) => {
            return failed(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                vec![Issue::error("not-supported", why)],
            )
            .await
        }
    };
    let source = match source_of(&uri, &s.feed) {
        Ok(src) => src,
        Err(why) => {
            return failed(
                StatusCode::BAD_REQUEST,
                vec![Issue::error("invalid", why).at_expression("source")],
            )
            .await
        }
    };
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| v.to_str().map(str::to_string));
    let key = match key {
        None => String::new(),
        Some(Ok(k)) if !k.is_empty() && k.len() <= 200 => k,
        Some(_) => {
            return failed(
                StatusCode::BAD_REQUEST,
                vec![Issue::error(
                    "invalid",
                    "Idempotency-Key: give 1 to 200 visible ASCII characters",
                )],
            )
            .await
        }
    };
    let bytes = match read_body(body, &headers, s.max_body).await {
        Ok(b) => b,
        Err((status, issue)) => return failed(status, vec![issue]).await,
    };
    let ctx = Context::new(s.clock.now());
    let checked = match fhir::check(framing, &source, &bytes, &ctx) {
        Ok(a) => a,
        Err(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
            return failed(status, r.issues).await;
        }
    };
    let kind = fhir::Kind {
        framing,
        source: source.clone(),
    };
    let appended = s
        .wal
        .append_kind(Status::Accepted, &sender, &key, &kind.encode(), &bytes)
        .await;
    let (seq, dup) = match appended {
        Ok(Appended::Logged(n)) => (n, false),
        Ok(Appended::Duplicate(n)) => (n, true),
        Err(e) => {
            return failed(
                StatusCode::SERVICE_UNAVAILABLE,
                vec![Issue::error(
                    "transient",
                    format!("not stored, send again later: {e}"),
                )],
            )
            .await
        }
    };
    let what = if dup {
        format!(
            "already logged as record {seq} of feed {} (Idempotency-Key {key:?} from {sender}); not logged again",
            s.feed
        )
    } else {
        format!(
            "logged durably as record {seq} of feed {} (source {source}, {} bytes): {}",
            s.feed,
            bytes.len(),
            checked.describe()
        )
    };
    let mut entry = note.entry_finished(AUDIT_RPC, Some(peer), Finish::Ok);
    entry.reason = format!("{}; {what}", entry.reason);
    if let Err(e) = record(s.audit.as_ref(), entry).await {
        tracing::error!(seq, "audit: cannot record a logged push: {e}");
        return audit_failed(&e);
    }
    let mut issues = vec![Issue {
        severity: "information",
        code: if dup { "duplicate" } else { "informational" },
        location: None,
        expression: None,
        diagnostics: what,
    }];
    let mut r = match checked.response_bundle() {
        // A transaction or batch: the Bundle a FHIR server answers with (the information
        // issue is in the audit record and the X-Ward-WAL-Seq header).
        Some(bundle) => fhir_json(StatusCode::OK, &bundle),
        None => {
            issues.extend(checked.warnings);
            answer(StatusCode::OK, &issues)
        }
    };
    if let Ok(v) = header::HeaderValue::from_str(&seq.to_string()) {
        r.headers_mut().insert("x-ward-wal-seq", v);
    }
    r
}

/// The answer to a refused push (401 or 403), audited.
async fn refuse(s: &Shared, note: &AuditNote, peer: SocketAddr, e: &Error) -> Response {
    let entry = note.entry(AUDIT_RPC, Some(peer), Err(e));
    if let Err(ae) = record(s.audit.as_ref(), entry).await {
        return audit_failed(&ae);
    }
    let (status, code) = match e {
        Error::Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, "login"),
        _ => (StatusCode::FORBIDDEN, "forbidden"),
    };
    let mut r = answer(status, &[Issue::error(code, e.to_string())]);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// The answer when a push's audit record cannot be written (fail closed, as the gRPC gate).
fn audit_failed(e: &Error) -> Response {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        &[Issue::error(
            "transient",
            format!("the audit record of this request could not be written ({e}); if the payload was logged, a resend with the same Idempotency-Key is recognised"),
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_and_sources() {
        let mut h = HeaderMap::new();
        assert!(framing_of(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/fhir+json; charset=utf-8"),
        );
        assert_eq!(framing_of(&h), Ok(Framing::Bundle));
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-ndjson"),
        );
        assert_eq!(framing_of(&h), Ok(Framing::Ndjson));
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        assert!(framing_of(&h).is_err());
        let uri: Uri = "/fhir?source=Patient.ndjson".parse().expect("uri");
        assert_eq!(source_of(&uri, "f").as_deref(), Ok("Patient.ndjson"));
        let uri: Uri = "/fhir".parse().expect("uri");
        assert_eq!(source_of(&uri, "f").as_deref(), Ok("f.ndjson"));
        for bad in ["/fhir?source=../x", "/fhir?other=1"] {
            let uri: Uri = bad.parse().expect("uri");
            assert!(source_of(&uri, "f").is_err(), "{bad}");
        }
    }
}
