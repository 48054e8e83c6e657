//! The gRPC service (`ward serve`): Ward's contract in `proto/ward/v1`, Arrow Flight, health
//! and reflection, on one port.
//!
//! - [`proto`]: the generated messages, servers and clients.
//! - `datasets`, `ingest`, `features`: the `ward.v1` services over one [`Store`].
//! - `flight`: Arrow Flight (DoGet, DoPut, ListFlights, GetFlightInfo, GetSchema).
//! - [`gate`]: the one place every call passes before its handler (authentication, policy
//!   and audit plug in there); the default admits all.
//! - [`to_status`]: the one place errors become status codes.
//! - [`config`]: [`ServeConfig`], the TOML configuration, with the limits.
//!
//! [`Server::bind`] then [`Server::serve`] runs it until a shutdown future resolves; calls in
//! flight then finish (within `limits.shutdown_grace_secs`). `docs/service.md` is the
//! user's guide.

pub mod config;
mod datasets;
mod features;
mod flight;
pub mod gate;
mod ingest;
pub mod proto;
mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::flight_service_server::FlightServiceServer;
use futures::{Stream, StreamExt as _};
use tonic::transport::server::TcpIncoming;

pub use config::{Limits, ServeConfig};
pub use flight::DEFAULT_PUT_NAME;
pub use gate::{Admission, AllowAll, Call, Gate, GateLayer};
pub use status::{code, to_status};

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::features::FeatureRepo;
use crate::hash::ContentHash;
use crate::store::{Store, VersionRef};
use proto::datasets_server::DatasetsServer;
use proto::features_server::FeaturesServer;
use proto::ingest_server::IngestServer;

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) repo: Arc<FeatureRepo>,
    pub(crate) limits: Arc<Limits>,
    /// The latest timelines, in memory, for online lookups.
    pub(crate) online: crate::lookup::Online,
}

/// Parses a dataset reference given in request field `field`.
pub(crate) fn parse_ref(field: &str, s: &str) -> Result<VersionRef> {
    if s.is_empty() {
        return Err(Error::invalid(
            field,
            "empty: give a hash (b3:...), a unique hash prefix, a name or NAME@TIME",
        ));
    }
    s.parse()
}

/// A stored version's rows, in stored order, as a stream of batches.
pub(crate) type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send + 'static>>;

/// Opens a version for streaming: its Arrow schema and its batches in stored order.
///
/// # Errors
/// [`Error::NotFound`]; [`Error::Lance`] if it cannot be opened (errors while reading come
/// through the stream).
pub(crate) async fn version_stream(
    store: &Store,
    hash: &ContentHash,
) -> Result<(SchemaRef, BatchStream)> {
    let ds = store.dataset(hash).await?;
    let schema: SchemaRef = Arc::new(Schema::from(ds.schema()));
    let uri = ds.uri().to_string();
    let mut scanner = ds.scan();
    scanner.scan_in_order(true);
    let stream = scanner
        .try_into_stream()
        .await
        .map_err(|e| Error::lance(&uri, e))?;
    let stream = stream.map(move |b| b.map_err(|e| Error::lance(&uri, e)));
    Ok((schema, Box::pin(stream)))
}

/// A bound server, ready to serve.
pub struct Server {
    incoming: TcpIncoming,
    addr: SocketAddr,
    state: State,
    gate: Arc<dyn Gate>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("store", &self.state.store.root())
            .field("sets", &self.state.repo.sets.keys().collect::<Vec<_>>())
            .field("gate", &self.gate)
            .finish()
    }
}

impl Server {
    /// Binds `config.addr` (port 0 picks a free port; see [`Server::local_addr`]) for a
    /// server over `store` knowing the sets of `repo`, with the [`AllowAll`] gate, and loads
    /// the latest timelines of the online sets into memory.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad limits; [`Error::Io`] if the address cannot be
    /// bound; errors loading a stored timeline.
    pub async fn bind(config: &ServeConfig, store: Store, repo: FeatureRepo) -> Result<Server> {
        config.limits.validate()?;
        let incoming = TcpIncoming::bind(config.addr)
            .map_err(|e| Error::io(config.addr.to_string(), e))?
            .with_nodelay(Some(true));
        let addr = incoming
            .local_addr()
            .map_err(|e| Error::io(config.addr.to_string(), e))?;
        // Load the timelines of the online sets now, so the first lookup is fast; a set
        // never materialized loads on first use (or on Materialize).
        let online = crate::lookup::Online::new(store.clone());
        for set in repo.sets.values().filter(|s| s.online) {
            match online.refresh(&set.name).await {
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Server {
            incoming,
            addr,
            state: State {
                store,
                repo: Arc::new(repo),
                limits: Arc::new(config.limits.clone()),
                online,
            },
            gate: Arc::new(AllowAll),
        })
    }

    /// Replaces the gate every call passes.
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Server {
        self.gate = gate;
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops accepting calls, lets calls in flight
    /// finish (for at most `limits.shutdown_grace_secs`) and returns.
    ///
    /// # Errors
    /// [`Error::Internal`] if reflection cannot be built; [`Error::Io`] if the transport
    /// fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server {
            incoming,
            addr,
            state,
            gate,
        } = self;
        let limits = state.limits.clone();
        let dec = limits.max_decoding_message_bytes;
        let enc = limits.max_encoding_message_bytes;
        let datasets = DatasetsServer::new(datasets::DatasetsService {
            state: state.clone(),
        })
        .max_decoding_message_size(dec)
        .max_encoding_message_size(enc);
        let ingest = IngestServer::new(ingest::IngestService {
            state: state.clone(),
        })
        .max_decoding_message_size(dec)
        .max_encoding_message_size(enc);
        let features = FeaturesServer::new(features::FeaturesService {
            state: state.clone(),
        })
        .max_decoding_message_size(dec)
        .max_encoding_message_size(enc);
        let flight = FlightServiceServer::new(flight::Flight { state })
            .max_decoding_message_size(dec)
            .max_encoding_message_size(enc);

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<DatasetsServer<datasets::DatasetsService>>()
            .await;
        health
            .set_serving::<IngestServer<ingest::IngestService>>()
            .await;
        health
            .set_serving::<FeaturesServer<features::FeaturesService>>()
            .await;
        health
            .set_serving::<FlightServiceServer<flight::Flight>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| Error::Internal(format!("server reflection (v1): {e}")))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| Error::Internal(format!("server reflection (v1alpha): {e}")))?;

        // When the shutdown future resolves: report NOT_SERVING, stop accepting, and start
        // the grace period.
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            let _ = stopping_tx.send(());
        };
        let grace = limits.shutdown_grace();
        let serving = tonic::transport::Server::builder()
            .timeout(limits.request_timeout())
            .layer(GateLayer::new(gate))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(datasets)
            .add_service(ingest)
            .add_service(features)
            .add_service(flight)
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(serving);
        let deadline = async move {
            if stopping_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            done = &mut serving => done.map_err(|e| Error::io(
                addr.to_string(),
                std::io::Error::other(format!("gRPC transport: {e}")),
            )),
            () = deadline => {
                tracing::warn!(
                    "calls still in flight {:.0} s after the shutdown signal were cut off",
                    grace.as_secs_f64()
                );
                Ok(())
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `ward serve`: loads the configuration (`config`, or the defaults), applies `addr`,
/// opens the store (the configuration's, else `default_store`), serves until SIGTERM or
/// SIGINT. Prints `listening on ADDR` to standard error once bound.
///
/// # Errors
/// Configuration, store, feature repository and bind errors.
pub async fn run(
    default_store: &Path,
    addr: Option<SocketAddr>,
    config: Option<&Path>,
    clock: SharedClock,
) -> Result<()> {
    let mut cfg = match config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::default(),
    };
    if let Some(addr) = addr {
        cfg.addr = addr;
    }
    let store_dir = cfg
        .store
        .clone()
        .unwrap_or_else(|| default_store.to_path_buf());
    let store = Store::open(&store_dir, clock)?;
    let repo = cfg.feature_repo()?;
    serve_until_signal(&cfg, store, repo).await
}

/// Binds, prints `listening on ADDR` (and the store and feature sets) to standard error, and
/// serves until SIGTERM or SIGINT.
///
/// # Errors
/// Bind and transport errors.
pub async fn serve_until_signal(cfg: &ServeConfig, store: Store, repo: FeatureRepo) -> Result<()> {
    let root = store.root().display().to_string();
    let sets: Vec<String> = repo.sets.keys().cloned().collect();
    let server = Server::bind(cfg, store, repo).await?;
    eprintln!(
        "store {root}; feature sets: {}",
        if sets.is_empty() {
            "none (give `features` in --config)".to_string()
        } else {
            sets.join(", ")
        }
    );
    eprintln!("listening on {}", server.local_addr());
    server.serve(shutdown_signal()).await?;
    eprintln!("stopped");
    Ok(())
}
