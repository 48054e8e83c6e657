//! The web UI's catalog and lineage (`docs/ui.md`), on the HTTP listener of `ward serve
//! --http` beside `POST /fhir`: HTML pages under `/ui` and JSON under `/api`.
//!
//! Every page and answer is read from the store's manifests and heads (a [`Snapshot`], no
//! Lance dataset opened) and written server-side: no script, no CDN, the style sheet is in
//! the binary. With the server's authentication on, every route but the style sheet needs a
//! credential (`Authorization: Bearer`) whose roles grant `datasets_read`, the permission of
//! the gRPC `ListDatasets` and `GetDataset`: 401 without one, 403 without the permission (an
//! HTML page under `/ui`, JSON under `/api`). Every request is audited once, as the gRPC reads
//! are.

pub mod catalog;
pub mod html;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::error::{Error, ErrorClass};
use crate::security::audit::AuditLog;
use crate::security::auth::{Principal, RequestContext};
use crate::security::gate::Security;
use crate::security::note::{AuditNote, Finish};
use crate::security::policy::Action;
use crate::store::Store;
pub use catalog::{Graph, Search, Snapshot};

/// The action every UI and API route is authorized as (the gRPC dataset reads' action).
pub const ACTION: Action = Action::DatasetsRead;

/// What the UI reads and who may read it.
#[derive(Debug, Clone)]
pub struct UiState {
    /// The store shown.
    pub store: Store,
    /// The server's authentication and policy, when on.
    pub security: Option<Arc<Security>>,
    /// The audit trail every request is recorded in, when configured.
    pub audit: Option<Arc<AuditLog>>,
}

/// The routes under `/ui` and `/api`, to merge into the HTTP listener's router.
pub fn router(state: UiState) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(catalog_page))
        .route("/ui/style.css", get(style))
        .route("/ui/versions/{hash}", get(version_page))
        .route("/api/versions", get(versions_json))
        .route("/api/versions/{hash}", get(version_json))
        .route("/api/lineage/{hash}", get(lineage_json))
        .with_state(Arc::new(state))
}

/// How a route answers: a page or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Html,
    Json,
}

/// The HTTP status of an error.
fn status_of(e: &Error) -> StatusCode {
    match e.class() {
        ErrorClass::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorClass::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The headers every answer carries: no caching of catalog data, no sniffing, and for pages
/// a policy allowing nothing but the embedded style sheet.
fn finish(mut r: Response, flavor: Flavor) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    match flavor {
        Flavor::Html => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
        }
        Flavor::Json => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    r
}

/// An answer with `body` and `status`.
fn answer(status: StatusCode, flavor: Flavor, body: String) -> Response {
    finish((status, body).into_response(), flavor)
}

/// The answer to an error: a problem page or `{"error": {"code", "message"}}`.
fn error_answer(e: &Error, flavor: Flavor) -> Response {
    let status = status_of(e);
    let body = match flavor {
        Flavor::Html => {
            let title = match status {
                StatusCode::UNAUTHORIZED => "Sign-in needed",
                StatusCode::FORBIDDEN => "Not allowed",
                StatusCode::NOT_FOUND => "Not found",
                StatusCode::BAD_REQUEST => "Bad request",
                _ => "Error",
            };
            html::problem(status.as_u16(), title, &e.to_string())
        }
        Flavor::Json => {
            json!({"error": {"code": e.class().name(), "message": e.to_string()}}).to_string()
        }
    };
    let mut r = answer(status, flavor, body);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// A request admitted: its audit note and name, to record its outcome with.
struct Admitted {
    note: AuditNote,
    rpc: String,
    peer: SocketAddr,
}

/// Authenticates and authorizes a request as [`ACTION`] (everyone when authentication is
/// off), or answers the refusal, audited.
async fn admit(
    s: &UiState,
    rpc: String,
    headers: &HeaderMap,
    peer: SocketAddr,
    flavor: Flavor,
) -> std::result::Result<Admitted, Response> {
    let note = AuditNote::default();
    match &s.security {
        Some(security) => {
            let ctx = RequestContext::from_headers(rpc.clone(), headers, Some(peer));
            if let Err(e) = security.admit_action(&ctx, ACTION, &note) {
                let entry = note.entry(&rpc, Some(peer), Err(&e));
                if let Err(ae) = crate::live::http::record(s.audit.as_ref(), entry).await {
                    return Err(audit_failed(&ae, flavor));
                }
                return Err(error_answer(&e, flavor));
            }
        }
        None => {
            note.set_principal(&Principal::anonymous(Some(peer)));
            note.set_action(ACTION);
        }
    }
    Ok(Admitted { note, rpc, peer })
}

/// The answer when a request's audit record cannot be written (503: fail closed, as the
/// gRPC gate).
fn audit_failed(e: &Error, flavor: Flavor) -> Response {
    let message = format!("the audit record of this request could not be written: {e}");
    let body = match flavor {
        Flavor::Html => html::problem(503, "Unavailable", &message),
        Flavor::Json => json!({"error": {"code": "unavailable", "message": message}}).to_string(),
    };
    answer(StatusCode::SERVICE_UNAVAILABLE, flavor, body)
}

impl Admitted {
    /// Records the outcome and answers: `made` is the body, or the error.
    async fn done(
        self,
        s: &UiState,
        flavor: Flavor,
        made: crate::error::Result<String>,
    ) -> Response {
        let entry = match &made {
            Ok(_) => self
                .note
                .entry_finished(&self.rpc, Some(self.peer), Finish::Ok),
            Err(e) => self.note.entry(&self.rpc, Some(self.peer), Err(e)),
        };
        if let Err(ae) = crate::live::http::record(s.audit.as_ref(), entry).await {
            return audit_failed(&ae, flavor);
        }
        match made {
            Ok(body) => answer(StatusCode::OK, flavor, body),
            Err(e) => error_answer(&e, flavor),
        }
    }
}

/// The store's snapshot, read on a blocking thread.
async fn snapshot(s: &UiState) -> crate::error::Result<Snapshot> {
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || Snapshot::read(&store))
        .await
        .map_err(|e| Error::Internal(format!("catalog task failed: {e}")))?
}

/// `GET /ui/style.css`: the embedded style sheet (public: it holds no data).
async fn style() -> Response {
    let mut r = StatusCode::OK.into_response();
    *r.body_mut() = html::STYLE.into();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    r
}

/// `GET /ui/`: the catalog page.
async fn catalog_page(
    State(s): State<Arc<UiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let flavor = Flavor::Html;
    let a = match admit(&s, "http:GET /ui/".into(), &headers, peer, flavor).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let search = Search::parse(uri.query().unwrap_or_default())?;
        let snap = snapshot(&s).await?;
        let (rows, total) = search.run(&snap);
        Ok(html::catalog(&search, &rows, total, &snap))
    }
    .await;
    a.done(&s, flavor, made).await
}

/// `GET /ui/versions/{hash}`: a version's page with its lineage drawn.
async fn version_page(
    State(s): State<Arc<UiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let flavor = Flavor::Html;
    let rpc = "http:GET /ui/versions/{hash}".to_string();
    let a = match admit(&s, rpc, &headers, peer, flavor).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        let m = snap.find(&hash)?;
        a.note.add_datasets([m.hash.to_string()]);
        let g = catalog::lineage(&snap, &m.hash);
        Ok(html::version(m, &snap, &g))
    }
    .await;
    a.done(&s, flavor, made).await
}

/// One version as the JSON list shows it.
fn summary(m: &crate::store::Manifest, snap: &Snapshot) -> serde_json::Value {
    json!({
        "hash": m.hash.to_string(),
        "name": m.name,
        "kind": m.kind,
        "rows": m.rows,
        "bytes": m.bytes,
        "created_at": m.created_at,
        "tags": snap.tags_of(&m.hash),
        "inputs": m.lineage.inputs.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// `GET /api/versions`: one page of the matching versions, newest first.
async fn versions_json(
    State(s): State<Arc<UiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let flavor = Flavor::Json;
    let a = match admit(&s, "http:GET /api/versions".into(), &headers, peer, flavor).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let search = Search::parse(uri.query().unwrap_or_default())?;
        let snap = snapshot(&s).await?;
        let (rows, total) = search.run(&snap);
        Ok(json!({
            "total": total,
            "offset": search.offset,
            "limit": search.limit,
            "versions": rows.iter().map(|m| summary(m, &snap)).collect::<Vec<_>>(),
        })
        .to_string())
    }
    .await;
    a.done(&s, flavor, made).await
}

/// `GET /api/versions/{hash}`: a version's manifest, tags and users.
async fn version_json(
    State(s): State<Arc<UiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let flavor = Flavor::Json;
    let rpc = "http:GET /api/versions/{hash}".to_string();
    let a = match admit(&s, rpc, &headers, peer, flavor).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        let m = snap.find(&hash)?;
        a.note.add_datasets([m.hash.to_string()]);
        let used_by: Vec<String> = snap
            .versions
            .iter()
            .filter(|u| u.lineage.inputs.contains(&m.hash))
            .map(|u| u.hash.to_string())
            .collect();
        let mut v = summary(m, &snap);
        v["schema"] = json!(m.schema);
        v["used_by"] = json!(used_by);
        v["manifest"] = json!(m);
        Ok(v.to_string())
    }
    .await;
    a.done(&s, flavor, made).await
}

/// `GET /api/lineage/{hash}`: the lineage graph both ways, as nodes and edges.
async fn lineage_json(
    State(s): State<Arc<UiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let flavor = Flavor::Json;
    let rpc = "http:GET /api/lineage/{hash}".to_string();
    let a = match admit(&s, rpc, &headers, peer, flavor).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        let m = snap.find(&hash)?;
        a.note.add_datasets([m.hash.to_string()]);
        let g = catalog::lineage(&snap, &m.hash);
        serde_json::to_string(&g).map_err(|e| Error::Internal(format!("lineage JSON: {e}")))
    }
    .await;
    a.done(&s, flavor, made).await
}
