//! The gate layer: the transport glue that carries every call to the security wing's gate
//! ([`crate::security::gate`], where who may do what is decided) before its handler runs,
//! and writes each call's audit record.
//!
//! The server wraps all its services (Ward's gRPC services, Arrow Flight, health and
//! reflection) in one tower layer, [`GateLayer`]. For each request it builds a [`Call`]
//! (the RPC's full name, the request metadata, the peer address) and asks the configured
//! [`Gate`]. A refusal (an [`Error`], normally `Unauthenticated` or `PermissionDenied`)
//! answers the call with the status [`super::to_status`] gives, and the handler never runs;
//! an [`Admission`] is put into the request's extensions, where a handler reads it with
//! `request.extensions().get::<Admission>()` (e.g. to restrict patients to a care team).
//!
//! The default is [`crate::security::gate::AllowAll`] (every caller is the anonymous
//! principal, [`crate::security::auth::Principal::anonymous`]);
//! [`crate::security::gate::SecureGate`] authenticates and authorizes.
//!
//! # Audit: every request, exactly once
//!
//! The layer also writes the audit trail. For each call it makes an [`AuditNote`], which the
//! gate (the principal, the decision) and then the handler (found in the request extensions
//! next to the [`Admission`]: the patients, the datasets, the training set, a decision with
//! the patients) fill in. When the handler's answer is ready, and before it leaves, the layer
//! turns the note into the call's one record ([`AuditNote::entry_finished`]) with the
//! outcome (`ok`, or the status code and message) and appends it, from a blocking thread when
//! the append waits for the disk (`durability = "sync"`). A call the gate refuses is recorded
//! the same way. If the record cannot be written the caller gets that error instead of the
//! answer (`UNAVAILABLE`): no answer leaves without its record. A call dropped before its
//! answer (its deadline passed, or the client went away) is recorded when it is dropped, with
//! the outcome `cancelled`. Health checks and reflection
//! (public, no data) are not recorded. The outcome of a streaming answer is that of its
//! start (its header): an error in the middle of the stream reaches the caller, not the
//! record.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;

use crate::error::{Error, Result};
use crate::security::audit::{AuditEntry, AuditLog};
use crate::security::gate::{Admission, Call, Gate};
use crate::security::note::{code_name, AuditNote, Finish};

/// The tower layer that runs a [`Gate`] in front of every service of the server and
/// writes each call's audit record (module docs).
#[derive(Debug, Clone)]
pub struct GateLayer {
    gate: Arc<dyn Gate>,
    audit: Option<Arc<AuditLog>>,
}

impl GateLayer {
    /// A layer asking `gate`, recording nothing.
    pub fn new(gate: Arc<dyn Gate>) -> Self {
        GateLayer { gate, audit: None }
    }

    /// A layer asking `gate` and recording every call in `audit`.
    pub fn audited(gate: Arc<dyn Gate>, audit: Arc<AuditLog>) -> Self {
        GateLayer {
            gate,
            audit: Some(audit),
        }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            gate: self.gate.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// The service [`GateLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct GateService<S> {
    inner: S,
    gate: Arc<dyn Gate>,
    audit: Option<Arc<AuditLog>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> tower::Service<http::Request<Body>> for GateService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<std::result::Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let (peer, client_cert) = connection_info(req.extensions());
        let rpc = req.uri().path().to_string();
        let note = AuditNote::default();
        let decision = {
            let call = Call {
                rpc: &rpc,
                metadata: req.headers(),
                peer,
                client_cert: client_cert.as_deref(),
                note: &note,
            };
            admit(&*self.gate, &call)
        };
        let audit = self.audit.clone().filter(|_| !note.is_public());
        match decision {
            Ok(admission) => {
                if note.principal().is_none() {
                    if let Some(p) = &admission.identity {
                        note.set_principal(p);
                    } else if let Some(who) = &admission.principal {
                        note.set_subject(who);
                    }
                }
                req.extensions_mut().insert(admission);
                req.extensions_mut().insert(note.clone());
                // The clone that was made ready is the one called (tower's contract).
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                let answer = ready.call(req);
                Box::pin(async move {
                    // Armed until the record is under way: a call dropped before its answer
                    // (the deadline, or the client cancelled) is recorded when dropped.
                    let mut unanswered =
                        Unanswered(audit.map(|log| (log, note.clone(), rpc.clone(), peer)));
                    let response = answer.await?;
                    let Some((log, _, _, _)) = unanswered.0.take() else {
                        return Ok(response);
                    };
                    let status = tonic::Status::from_header_map(response.headers());
                    let finish = match &status {
                        Some(s) if s.code() != tonic::Code::Ok => Finish::Failed {
                            code: code_name(s.code()),
                            message: s.message(),
                        },
                        _ => Finish::Ok,
                    };
                    let entry = note.entry_finished(&rpc, peer, finish);
                    match append(log, entry).await {
                        Ok(()) => Ok(response),
                        Err(e) => Ok(refusal(&rpc, &e)),
                    }
                })
            }
            Err(e) => {
                note.refused(None, &e);
                let entry = note.entry(&rpc, peer, Err(&e));
                let response = super::to_status(&e).into_http::<Body>();
                Box::pin(async move {
                    if let Some(log) = audit {
                        if let Err(ae) = append(log, entry).await {
                            return Ok(refusal(&rpc, &ae));
                        }
                    }
                    Ok(response)
                })
            }
        }
    }
}

/// The record of a call whose answer never came: written when the call's future is dropped
/// unfinished (the server's deadline, or the client went away), outcome `cancelled`.
struct Unanswered(Option<(Arc<AuditLog>, AuditNote, String, Option<SocketAddr>)>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some((log, note, rpc, peer)) = self.0.take() else {
            return;
        };
        let entry = note.entry_finished(
            &rpc,
            peer,
            Finish::Failed {
                code: "cancelled",
                message: "the call ended before its answer (deadline exceeded or cancelled by the client)",
            },
        );
        let blocks = log.append_blocks();
        let write = move || {
            if let Err(e) = log.append(entry) {
                tracing::error!(rpc, error = %e, "audit: cannot record a cancelled call");
            }
        };
        // Off the executor when the append waits for the disk (and a runtime is there).
        match tokio::runtime::Handle::try_current() {
            Ok(h) if blocks => drop(h.spawn_blocking(write)),
            _ => write(),
        }
    }
}

/// The answer when a call's audit record cannot be written (fail closed).
fn refusal(rpc: &str, e: &Error) -> http::Response<Body> {
    tracing::error!(rpc, error = %e, "audit: cannot record the call; refusing it");
    super::to_status(e).into_http::<Body>()
}

/// Appends `entry`, from a blocking thread when the append waits for the disk.
async fn append(log: Arc<AuditLog>, entry: AuditEntry) -> Result<()> {
    if !log.append_blocks() {
        // One write to the operating system: cheaper than a hop to the blocking pool.
        return log.append(entry).map(|_| ());
    }
    tokio::task::spawn_blocking(move || log.append(entry))
        .await
        .map_err(|e| Error::Internal(format!("audit task failed: {e}")))?
        .map(|_| ())
}

/// The peer address and client certificate of a request's connection (plain TCP, or TLS
/// through [`crate::service::tls_incoming`]).
fn connection_info(ext: &http::Extensions) -> (Option<SocketAddr>, Option<Vec<u8>>) {
    if let Some(c) = ext.get::<TcpConnectInfo>() {
        return (c.remote_addr(), None);
    }
    if let Some(c) = ext.get::<super::tls_serve::TlsInfo>() {
        return (c.peer, c.client_cert.as_ref().map(|c| c.to_vec()));
    }
    (None, None)
}

/// Asks the gate, turning a panic in a gate implementation into a refusal (the server never
/// answers a call it could not check).
fn admit(gate: &dyn Gate, call: &Call<'_>) -> Result<Admission> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gate.admit(call))).unwrap_or_else(
        |_| {
            Err(Error::Internal(format!(
                "the gate failed while checking {}",
                call.rpc
            )))
        },
    )
}
