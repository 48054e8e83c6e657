//! The web UI (`docs/ui.md`) on the HTTP listener of `ward serve --http` beside `POST /fhir`:
//! HTML pages under `/ui` and JSON under `/api`: the catalog and lineage, the column
//! statistics of a version, the quarantine browser, the audit page, the model cards
//! ([`models`]) and the feature sets ([`feature_sets`]).
//!
//! The catalog is read from the store's manifests and heads (a [`Snapshot`], kept in a
//! [`catalog::SnapshotCache`] and read again only in part when the store changed); the
//! statistics and the quarantine are read from the version's rows. Everything is written
//! server-side: no script, no CDN, the style sheet is in the binary. With the server's
//! authentication on, every route but the style sheet needs a credential (`Authorization:
//! Bearer`) whose roles grant the route's permission: `datasets_read` (the gRPC
//! `ListDatasets` and `GetDataset`) for the catalog and statistics, `historical_identified`
//! (rows of any version, as Flight `DoGet`) for the quarantined records, `audit_read` (the
//! gRPC `QueryAudit`) for the audit page, `datasets_read` for drift and
//! `historical_identified` for the skew check ([`drift`]): 401 without one, 403 without the permission (an
//! HTML page under `/ui`, JSON under `/api`). Every request is audited once, as the gRPC
//! reads are.

pub mod audit;
pub mod catalog;
pub mod drift;
pub mod feature_sets;
pub mod html;
pub mod models;
pub mod quarantine;
pub mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::error::{Error, ErrorClass};
use crate::hash::ContentHash;
use crate::security::audit::AuditLog;
use crate::security::auth::{Principal, RequestContext};
use crate::security::gate::Security;
use crate::security::note::{AuditNote, Finish};
use crate::security::policy::Action;
use crate::service::tls_serve::TlsInfo;
use crate::store::Store;
pub use catalog::{Graph, Search, Snapshot};

/// The action the catalog, lineage and statistics routes are authorized as (the gRPC dataset
/// reads' action).
pub const ACTION: Action = Action::DatasetsRead;

/// The action of the quarantine browser: its records are rows of a version, with
/// identifiers (as Flight `DoGet` of a version that is not de-identified).
pub const QUARANTINE_ACTION: Action = Action::HistoricalIdentified;

/// The action of the audit page (the gRPC `QueryAudit`'s).
pub const AUDIT_ACTION: Action = Action::AuditRead;

/// Statistics kept in memory (a version's never change); the cache is emptied when full.
const STATS_KEPT: usize = 256;

/// What the UI reads and who may read it.
#[derive(Debug, Clone)]
pub struct UiState {
    /// The store shown.
    pub store: Store,
    /// The server's authentication and policy, when on.
    pub security: Option<Arc<Security>>,
    /// The audit trail every request is recorded in, when configured.
    pub audit: Option<Arc<AuditLog>>,
    /// The feature sets the feature-set pages show (the server's repository; empty when
    /// it has none).
    pub features: Arc<crate::features::FeatureRepo>,
}

/// The router's state: what the UI reads and what it keeps between requests.
#[derive(Debug)]
struct Ui {
    state: UiState,
    snapshots: catalog::SnapshotCache,
    stats: Mutex<HashMap<ContentHash, Arc<stats::VersionStats>>>,
}

impl std::ops::Deref for Ui {
    type Target = UiState;
    fn deref(&self) -> &UiState {
        &self.state
    }
}

/// The routes under `/ui` and `/api`, to merge into the HTTP listener's router.
pub fn router(state: UiState) -> Router {
    let ui = Arc::new(Ui {
        state,
        snapshots: catalog::SnapshotCache::default(),
        stats: Mutex::new(HashMap::new()),
    });
    // Read the catalog index once in the background, so the first page does not wait for
    // every manifest (a failure here is left for the first request to report).
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let warm = ui.clone();
        rt.spawn_blocking(move || {
            let _ = warm.snapshots.get(&warm.store);
        });
    }
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(catalog_page))
        .route("/ui/style.css", get(style))
        .route("/ui/versions/{hash}", get(version_page))
        .route("/ui/versions/{hash}/stats", get(stats_page))
        .route("/ui/versions/{hash}/quarantine", get(quarantine_page))
        .route("/ui/audit", get(audit_page))
        .route("/api/versions", get(versions_json))
        .route("/api/versions/{hash}", get(version_json))
        .route("/api/lineage/{hash}", get(lineage_json))
        .route("/api/stats/{hash}", get(stats_json))
        .route("/api/quarantine/{hash}", get(quarantine_json))
        .route("/api/audit", get(audit_json))
        // Drift and skew over the online lookup log (ui/drift.rs, docs/monitoring.md).
        .route("/ui/drift", get(drift::drift_page))
        .route("/api/drift", get(drift::drift_json))
        .route("/ui/skew", get(drift::skew_page))
        .route("/api/skew", get(drift::skew_json))
        .route("/ui/models", get(models::list_page))
        .route("/ui/models/{hash}", get(models::card_page))
        .route("/api/models", get(models::list_json))
        .route("/api/models/{hash}", get(models::card_json_route))
        .route("/ui/feature-sets", get(feature_sets::list_page))
        .route("/ui/feature-sets/{name}", get(feature_sets::set_page))
        .route("/api/feature-sets", get(feature_sets::list_json))
        .route(
            "/api/feature-sets/{name}",
            get(feature_sets::set_json_route),
        )
        .with_state(ui)
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
        ErrorClass::FailedPrecondition => StatusCode::CONFLICT,
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
                StatusCode::CONFLICT => "Not available",
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

/// Who calls: the peer address and the request's credentials (the bearer token, else the
/// client certificate of an HTTPS connection), taken from the request once for [`admit`].
struct Caller {
    peer: SocketAddr,
    ctx: RequestContext,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> std::result::Result<Self, Response> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let mut ctx = RequestContext::from_headers(String::new(), &parts.headers, Some(peer));
        if let Some(cert) = parts
            .extensions
            .get::<TlsInfo>()
            .and_then(|t| t.client_cert.clone())
        {
            ctx = ctx.with_client_cert(cert.to_vec());
        }
        Ok(Caller { peer, ctx })
    }
}

/// Authenticates and authorizes `caller`'s request `rpc` as `action` (everyone when
/// authentication is off), or answers the refusal, audited.
async fn admit(
    s: &UiState,
    rpc: String,
    caller: Caller,
    flavor: Flavor,
    action: Action,
) -> std::result::Result<Admitted, Response> {
    let Caller { peer, mut ctx } = caller;
    let note = AuditNote::default();
    match &s.security {
        Some(security) => {
            ctx.rpc.clone_from(&rpc);
            if let Err(e) = security.admit_action(&ctx, action, &note) {
                let entry = note.entry(&rpc, Some(peer), Err(&e));
                if let Err(ae) = crate::live::http::record(s.audit.as_ref(), entry).await {
                    return Err(audit_failed(&ae, flavor));
                }
                return Err(error_answer(&e, flavor));
            }
        }
        None => {
            note.set_principal(&Principal::anonymous(Some(peer)));
            note.set_action(action);
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

/// The store's snapshot (the cached one when the store has not changed), read on a blocking
/// thread.
async fn snapshot(s: &Arc<Ui>) -> crate::error::Result<Arc<Snapshot>> {
    let ui = s.clone();
    tokio::task::spawn_blocking(move || ui.snapshots.get(&ui.store))
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
async fn catalog_page(State(s): State<Arc<Ui>>, caller: Caller, uri: Uri) -> Response {
    let flavor = Flavor::Html;
    let a = match admit(&s, "http:GET /ui/".into(), caller, flavor, ACTION).await {
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
    State(s): State<Arc<Ui>>,
    caller: Caller,
    Path(hash): Path<String>,
) -> Response {
    let flavor = Flavor::Html;
    let rpc = "http:GET /ui/versions/{hash}".to_string();
    let a = match admit(&s, rpc, caller, flavor, ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        let m = snap.find(&hash)?;
        a.note.add_datasets([m.hash.to_string()]);
        let g = catalog::lineage(&snap, &m.hash);
        let report = crate::quality::report_of(&s.store, m).await?;
        let mut page = html::version(m, &snap, &g);
        page.push_str(&html::quality(report.as_ref()));
        Ok(page)
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
async fn versions_json(State(s): State<Arc<Ui>>, caller: Caller, uri: Uri) -> Response {
    let flavor = Flavor::Json;
    let a = match admit(&s, "http:GET /api/versions".into(), caller, flavor, ACTION).await {
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
    State(s): State<Arc<Ui>>,
    caller: Caller,
    Path(hash): Path<String>,
) -> Response {
    let flavor = Flavor::Json;
    let rpc = "http:GET /api/versions/{hash}".to_string();
    let a = match admit(&s, rpc, caller, flavor, ACTION).await {
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
    State(s): State<Arc<Ui>>,
    caller: Caller,
    Path(hash): Path<String>,
) -> Response {
    let flavor = Flavor::Json;
    let rpc = "http:GET /api/lineage/{hash}".to_string();
    let a = match admit(&s, rpc, caller, flavor, ACTION).await {
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

/// The statistics of `hash` in `snap`: from the cache, else computed (and kept).
async fn version_stats(
    s: &Arc<Ui>,
    m: &crate::store::Manifest,
) -> crate::error::Result<Arc<stats::VersionStats>> {
    let cached = s
        .stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&m.hash)
        .cloned();
    if let Some(st) = cached {
        return Ok(st);
    }
    let st = Arc::new(stats::compute(&s.store, m).await?);
    let mut g = s
        .stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if g.len() >= STATS_KEPT {
        g.clear();
    }
    g.insert(m.hash, st.clone());
    Ok(st)
}

/// `GET /ui/versions/{hash}/stats`: a version's column statistics with histograms.
async fn stats_page(
    State(s): State<Arc<Ui>>,
    caller: Caller,
    Path(hash): Path<String>,
) -> Response {
    let flavor = Flavor::Html;
    let rpc = "http:GET /ui/versions/{hash}/stats".to_string();
    let a = match admit(&s, rpc, caller, flavor, ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        let m = snap.find(&hash)?;
        a.note.add_datasets([m.hash.to_string()]);
        let st = version_stats(&s, m).await?;
        Ok(html::stats(m, &st))
    }
    .await;
    a.done(&s, flavor, made).await
}

/// `GET /api/stats/{hash}`: a version's column statistics as JSON.
async fn stats_json(
    State(s): State<Arc<Ui>>,
    caller: Caller,
    Path(hash): Path<String>,
) -> Response {
    let flavor = Flavor::Json;
    let rpc = "http:GET /api/stats/{hash}".to_string();
    let a = match admit(&s, rpc, caller, flavor, ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        let m = snap.find(&hash)?;
        a.note.add_datasets([m.hash.to_string()]);
        let st = version_stats(&s, m).await?;
        serde_json::to_string(&*st).map_err(|e| Error::Internal(format!("statistics JSON: {e}")))
    }
    .await;
    a.done(&s, flavor, made).await
}

/// The quarantine page of `hash` as `query` filters it.
async fn quarantine_read(
    s: &Arc<Ui>,
    note: &AuditNote,
    hash: &str,
    query: &str,
) -> crate::error::Result<(crate::store::Manifest, quarantine::Filter, quarantine::Page)> {
    let f = quarantine::Filter::parse(query)?;
    let snap = snapshot(s).await?;
    let m = snap.find(hash)?.clone();
    note.add_datasets([m.hash.to_string()]);
    let p = quarantine::read(&s.store, &m, &f).await?;
    Ok((m, f, p))
}

/// `GET /ui/versions/{hash}/quarantine`: the records of a quarantine version, with reasons.
async fn quarantine_page(
    State(s): State<Arc<Ui>>,
    caller: Caller,
    Path(hash): Path<String>,
    uri: Uri,
) -> Response {
    let flavor = Flavor::Html;
    let rpc = "http:GET /ui/versions/{hash}/quarantine".to_string();
    let a = match admit(&s, rpc, caller, flavor, QUARANTINE_ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = quarantine_read(&s, &a.note, &hash, uri.query().unwrap_or_default())
        .await
        .map(|(m, f, p)| quarantine::html(&m, &f, &p));
    a.done(&s, flavor, made).await
}

/// `GET /api/quarantine/{hash}`: the same as JSON.
async fn quarantine_json(
    State(s): State<Arc<Ui>>,
    caller: Caller,
    Path(hash): Path<String>,
    uri: Uri,
) -> Response {
    let flavor = Flavor::Json;
    let rpc = "http:GET /api/quarantine/{hash}".to_string();
    let a = match admit(&s, rpc, caller, flavor, QUARANTINE_ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let (_, _, p) =
            quarantine_read(&s, &a.note, &hash, uri.query().unwrap_or_default()).await?;
        serde_json::to_string(&p).map_err(|e| Error::Internal(format!("quarantine JSON: {e}")))
    }
    .await;
    a.done(&s, flavor, made).await
}

/// The audit records `query` selects (newest first, how many matched) and the verification
/// of the whole trail, read on a blocking thread. The patient asked about is named in this
/// request's own audit record (as `QueryAudit` does).
async fn audit_read(
    s: &Arc<Ui>,
    note: &AuditNote,
    query: &str,
) -> crate::error::Result<(
    audit::Filter,
    Vec<crate::security::audit::Access>,
    usize,
    std::result::Result<crate::security::audit::VerifyReport, String>,
)> {
    let (f, p) = audit::Filter::parse(query)?;
    if let Some(patient) = &p.query.patient {
        note.set_patients(std::slice::from_ref(patient));
    }
    let keys = s.audit.as_ref().and_then(|l| l.keys().cloned());
    let dir = s
        .audit
        .as_ref()
        .map(|l| l.dir().to_path_buf())
        .ok_or_else(|| {
            Error::precondition(
                "audit trail",
                "this server keeps none (authentication is off and no [audit] dir is configured)",
            )
        })?;
    let limit = f.limit;
    let (found, report) = tokio::task::spawn_blocking(move || {
        let keys = keys.as_ref();
        let found = crate::security::audit::search_with_keys(&dir, &p.query, keys);
        let mut report = crate::security::audit::verify_with_keys(&dir, keys);
        // A line being appended while it was read looks torn: read once more.
        if report.as_ref().is_ok_and(|r| r.torn.is_some()) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            report = crate::security::audit::verify_with_keys(&dir, keys);
        }
        found.map(|f| (audit::newest(f, &p, limit), report))
    })
    .await
    .map_err(|e| Error::Internal(format!("audit task failed: {e}")))??;
    let ((rows, total), report) = (found, report.map_err(|e| e.to_string()));
    Ok((f, rows, total, report))
}

/// `GET /ui/audit`: who accessed a patient, when, from where, allowed or refused; the chain's
/// verification.
async fn audit_page(State(s): State<Arc<Ui>>, caller: Caller, uri: Uri) -> Response {
    let flavor = Flavor::Html;
    let rpc = "http:GET /ui/audit".to_string();
    let a = match admit(&s, rpc, caller, flavor, AUDIT_ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = audit_read(&s, &a.note, uri.query().unwrap_or_default())
        .await
        .map(|(f, rows, total, report)| audit::html(&f, &rows, total, &report));
    a.done(&s, flavor, made).await
}

/// `GET /api/audit`: the same as JSON: `{"verification", "total", "records"}`.
async fn audit_json(State(s): State<Arc<Ui>>, caller: Caller, uri: Uri) -> Response {
    let flavor = Flavor::Json;
    let rpc = "http:GET /api/audit".to_string();
    let a = match admit(&s, rpc, caller, flavor, AUDIT_ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = audit_read(&s, &a.note, uri.query().unwrap_or_default())
        .await
        .map(|(_, rows, total, report)| {
            let verification = match report {
                Ok(r) => json!({"ok": r.ok(), "report": r}),
                Err(e) => json!({"ok": false, "error": e}),
            };
            json!({
                "verification": verification,
                "total": total,
                "records": rows.iter().map(|a| &a.record).collect::<Vec<_>>(),
            })
            .to_string()
        });
    a.done(&s, flavor, made).await
}
