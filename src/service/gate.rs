//! The gate: the one place every call passes before its handler runs.
//!
//! The server wraps all its services (Ward's gRPC services, Arrow Flight, health and
//! reflection) in one tower layer, [`GateLayer`]. For each request it builds a [`Call`]
//! (the RPC's full name, the request metadata, the peer address) and asks the configured
//! [`Gate`]. A refusal (an [`Error`], normally `Unauthenticated` or `PermissionDenied`)
//! answers the call with the status [`super::to_status`] gives, and the handler never runs;
//! an [`Admission`] is put into the request's extensions, where a handler reads it with
//! `request.extensions().get::<Admission>()` (e.g. to restrict patients to a care team).
//!
//! The default is [`AllowAll`]. Authentication, authorization and audit (`docs/service.md`,
//! issue 8) plug in here by implementing [`Gate`]; nothing else in the server has to change.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;

use crate::error::{Error, Result};

/// What the gate knows about a call before its handler runs.
#[derive(Debug)]
pub struct Call<'a> {
    /// The full RPC name, `/package.Service/Method` (e.g. `/ward.v1.Datasets/GetDataset`,
    /// `/arrow.flight.protocol.FlightService/DoGet`, `/grpc.health.v1.Health/Check`).
    pub rpc: &'a str,
    /// The request's metadata (HTTP/2 headers: `authorization`, `user-agent`, ...).
    pub metadata: &'a http::HeaderMap,
    /// The peer's address, when the transport knows it.
    pub peer: Option<SocketAddr>,
    /// The client's leaf certificate (DER), verified by the TLS layer, when it sent one.
    pub client_cert: Option<&'a [u8]>,
}

impl Call<'_> {
    /// The service part of [`Call::rpc`] (`ward.v1.Datasets`).
    pub fn service(&self) -> &str {
        self.rpc
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(s, _)| s)
    }

    /// The method part of [`Call::rpc`] (`GetDataset`).
    pub fn method(&self) -> &str {
        self.rpc.rsplit_once('/').map_or("", |(_, m)| m)
    }
}

/// What the gate decided for an admitted call; handlers find it in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Who is calling (a token's subject, a certificate's name); `None` when the gate does
    /// not authenticate.
    pub principal: Option<String>,
    /// The RPC admitted (as in [`Call::rpc`]).
    pub rpc: String,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// The authenticated principal with its roles (`None` for a public call, or when the
    /// gate does not authenticate); handlers authorize patient-level access with it.
    pub identity: Option<Arc<crate::auth::Principal>>,
}

/// Decides whether a call may run. Implementations must be cheap (they run on every call)
/// and must never panic.
pub trait Gate: Send + Sync + fmt::Debug + 'static {
    /// Admits or refuses `call`.
    ///
    /// # Errors
    /// The refusal, answered to the caller through [`super::to_status`]
    /// (`Unauthenticated`, `PermissionDenied`, ...).
    fn admit(&self, call: &Call<'_>) -> Result<Admission>;
}

/// The default gate: admits every call, anonymously.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Gate for AllowAll {
    fn admit(&self, call: &Call<'_>) -> Result<Admission> {
        Ok(Admission {
            principal: None,
            rpc: call.rpc.to_string(),
            peer: call.peer,
            identity: None,
        })
    }
}

/// The tower layer that runs a [`Gate`] in front of every service of the server.
#[derive(Debug, Clone)]
pub struct GateLayer {
    gate: Arc<dyn Gate>,
}

impl GateLayer {
    /// A layer asking `gate`.
    pub fn new(gate: Arc<dyn Gate>) -> Self {
        GateLayer { gate }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The service [`GateLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct GateService<S> {
    inner: S,
    gate: Arc<dyn Gate>,
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
        let decision = {
            let call = Call {
                rpc: req.uri().path(),
                metadata: req.headers(),
                peer,
                client_cert: client_cert.as_deref(),
            };
            admit(&*self.gate, &call)
        };
        match decision {
            Ok(admission) => {
                req.extensions_mut().insert(admission);
                // The clone that was made ready is the one called (tower's contract).
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(ready.call(req))
            }
            Err(e) => {
                let response = super::to_status(&e).into_http::<Body>();
                Box::pin(async move { Ok(response) })
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_names_split() {
        let h = http::HeaderMap::new();
        let c = Call {
            rpc: "/ward.v1.Datasets/GetDataset",
            metadata: &h,
            peer: None,
            client_cert: None,
        };
        assert_eq!(c.service(), "ward.v1.Datasets");
        assert_eq!(c.method(), "GetDataset");
        let a = AllowAll.admit(&c).unwrap();
        assert_eq!(a.rpc, "/ward.v1.Datasets/GetDataset");
        assert_eq!(a.principal, None);
    }
}
