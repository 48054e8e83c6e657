//! The gRPC service (`ward serve`): Ward's contract in `proto/ward/v1`, Arrow Flight, health
//! and reflection, on one port.
//!
//! - `proto`: the generated messages and servers (crate-private: clients generate their own).
//! - `datasets`, `ingest`, `features`: the `ward.v1` services over one [`Store`]; each handler
//!   converts the request, authorizes it (through the gate), calls the library and converts
//!   the answer back.
//! - `convert`: every conversion between the wire (messages, Arrow IPC, Flight descriptors)
//!   and the library's types.
//! - `flight`: Arrow Flight (DoGet, DoPut, ListFlights, GetFlightInfo, GetSchema).
//! - `audit_query`: `ward.v1.Audit`, the audit trail for privacy officers (`audit_read`).
//! - `monitoring`: `ward.v1.Monitoring`, drift and the skew check over the online lookup
//!   log ([`crate::monitoring`]), which the online lookup handler feeds.
//! - `models`: `ward.v1.Models`, model cards (`crate::models`).
//! - [`gate`]: the one place every call passes before its handler; the default admits all,
//!   [`secure::SecureGate`] authenticates, authorizes by the permission table and audits
//!   (`[auth]`, `docs/security.md`).
//! - [`secure`]: the security wiring (gate, care-team index, de-identification).
//! - `tls_serve`: TLS (rustls) in front of tonic, with certificate reload.
//! - `after_seal`: online feature sets brought up to date after a live feed's seal.
//! - `refresh`: timelines another process published into the store (another replica, a
//!   `ward materialize`), picked up every `[reload] timelines_secs` (`docs/deploy.md`).
//! - [`to_status`]: the one place errors become status codes.
//! - [`config`]: [`ServeConfig`], the TOML configuration, with the limits.
//!
//! [`Server::bind`] then [`Server::serve`] runs it until a shutdown future resolves; calls in
//! flight then finish (within `limits.shutdown_grace_secs`). `docs/service.md` is the
//! user's guide.

mod after_seal;
mod audit_query;
pub mod config;
mod convert;
mod datasets;
mod features;
mod flight;
pub mod gate;
mod ingest;
mod jobs;
mod models;
mod monitoring;
pub(crate) mod proto;
mod refresh;
pub mod secure;
mod status;
pub mod tls_serve;

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

use crate::security::gate::{AllowAll, Gate};
pub use config::{Exposure, Limits, ServeConfig};
pub use flight::DEFAULT_PUT_NAME;
pub use gate::GateLayer;
pub use status::{code, internal_message, is_internal, to_status};

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
    /// Authentication, authorization and audit (`None`: the server does not authenticate).
    pub(crate) secured: Option<Arc<secure::Secured>>,
    /// What `IngestPaths` may read (`[ingest]`: roots and caps).
    pub(crate) ingest_paths: Arc<crate::ingest::read::ReadPolicy>,
    /// The caps of `IngestUpload` (no roots: the server writes the file itself).
    pub(crate) ingest_upload: Arc<crate::ingest::read::ReadPolicy>,
    /// Where heavy requests run (ingest, materialize, historical, verify,
    /// de-identification), apart from the workers that answer online lookups.
    pub(crate) jobs: jobs::Jobs,
    /// The online lookup log (`[online_log] enabled`; `docs/monitoring.md`).
    pub(crate) online_log: Option<Arc<crate::monitoring::OnlineLog>>,
}

/// The job runtime's threads: one per core. They are separate OS threads from the request
/// workers, so the kernel shares the cores between a running ingest and the lookups.
fn job_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: State,
    gate: Arc<dyn Gate>,
    tls: Option<Tls>,
    /// The audit trail every call is recorded in (opened at `<store>/audit` by
    /// [`Server::serve`] when neither security nor [`Server::with_audit`] gave one).
    audit: Option<Arc<crate::security::audit::AuditLog>>,
    /// How often the heads of the online timelines are read for timelines other processes
    /// published (`[reload] timelines_secs`; `None`: never).
    refresh: Option<std::time::Duration>,
}

/// TLS of a server: the rustls configuration and the certificate store it reloads.
struct Tls {
    config: Arc<tokio_rustls::rustls::ServerConfig>,
    certs: Arc<crate::security::tls::CertStore>,
    reload: Option<std::time::Duration>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("store", &self.state.store.root())
            .field("sets", &self.state.repo.sets.keys().collect::<Vec<_>>())
            .field("gate", &self.gate)
            .field("tls", &self.tls.is_some())
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
        config.online_log.validate(&config.origin)?;
        let (ingest_paths, ingest_upload) = config.ingest.policies(&config.origin)?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| Error::io(config.addr.to_string(), e))?;
        let addr = listener
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
        let online_log = config.online_log.enabled.then(|| {
            Arc::new(crate::monitoring::OnlineLog::new(
                store.clone(),
                config.online_log.clone(),
            ))
        });
        Ok(Server {
            listener,
            addr,
            state: State {
                store,
                repo: Arc::new(repo),
                limits: Arc::new(config.limits.clone()),
                online,
                secured: None,
                ingest_paths: Arc::new(ingest_paths),
                ingest_upload: Arc::new(ingest_upload),
                jobs: jobs::Jobs::new(job_threads())?,
                online_log,
            },
            gate: Arc::new(AllowAll),
            tls: None,
            audit: None,
            refresh: config.reload.timelines(),
        })
    }

    /// Records every call in `audit` (instead of the security's trail or `<store>/audit`).
    pub fn with_audit(mut self, audit: Arc<crate::security::audit::AuditLog>) -> Server {
        self.audit = Some(audit);
        self
    }

    /// The audit trail calls are recorded in, once known (security's, or given).
    pub fn audit(&self) -> Option<&Arc<crate::security::audit::AuditLog>> {
        self.audit.as_ref()
    }

    /// Brings the online feature sets up to date each time `sealed` is notified (a live
    /// feed's seal committed curated versions): an incremental materialization of each set
    /// served online, its changed patients applied in place, audited in this server's
    /// trail (`docs/live.md`, "Online after a seal").
    pub fn update_online_after_seals(&self, sealed: Arc<tokio::sync::Notify>) {
        after_seal::spawn(self.state.clone(), self.audit.clone(), sealed);
    }

    /// Replaces the gate every call passes.
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Server {
        self.gate = gate;
        self
    }

    /// Secures the server: every call passes the [`secure::SecureGate`] over `secured`, and
    /// the lookup handlers authorize (care teams, identified or de-identified) and audit the
    /// patients they touch. Loads the newest stored `care_team` table into the care-team
    /// index.
    ///
    /// # Errors
    /// Errors reading the stored `care_team` table.
    pub async fn with_security(mut self, secured: secure::Secured) -> Result<Server> {
        secured.load_care_team(&self.state.store).await?;
        self.gate = Arc::new(secured.gate());
        if let Some(log) = secured.security.audit() {
            self.audit = Some(log.clone());
        }
        self.state.secured = Some(Arc::new(secured));
        Ok(self)
    }

    /// Serves over TLS (`[tls]`, relative paths against `base`): TLS 1.3 (1.2 when
    /// allowed), client certificates as configured, the certificate files checked for
    /// changes every `reload_secs` and swapped in without a restart. A plaintext client
    /// fails its handshake.
    ///
    /// # Errors
    /// Errors reading the certificate, key or client CA, naming the file.
    pub fn with_tls(
        mut self,
        cfg: &crate::security::tls::TlsConfig,
        base: &Path,
    ) -> Result<Server> {
        let (config, certs) = crate::security::tls::server_config(cfg, base)?;
        self.tls = Some(Tls {
            config,
            certs,
            reload: (cfg.reload_secs > 0).then(|| std::time::Duration::from_secs(cfg.reload_secs)),
        });
        Ok(self)
    }

    /// The TLS configuration of a TLS server (its certificates reloaded in place), for the
    /// listeners beside it (MLLP).
    pub fn tls_config(&self) -> Option<Arc<tokio_rustls::rustls::ServerConfig>> {
        self.tls.as_ref().map(|t| t.config.clone())
    }

    /// The certificate store of a TLS server (to reload on demand).
    pub fn cert_store(&self) -> Option<Arc<crate::security::tls::CertStore>> {
        self.tls.as_ref().map(|t| t.certs.clone())
    }

    /// The online lookup log, when `[online_log] enabled` (to flush it on demand).
    pub fn online_log(&self) -> Option<Arc<crate::monitoring::OnlineLog>> {
        self.state.online_log.clone()
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
            listener,
            addr,
            state,
            gate,
            tls,
            audit,
            refresh,
        } = self;
        // Every serving mode is audited: without security, every caller is the anonymous
        // principal (docs/security.md, "Audit trail").
        let audit = match audit {
            Some(a) => a,
            None => Arc::new(crate::security::audit::AuditLog::open_with_keys(
                &state.store.audit_dir()?,
                state.store.clock().clone(),
                crate::security::audit::AuditOptions::default(),
                state.store.encryption().map(|c| c.keyring().clone()),
            )?),
        };
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
        let models_service = proto::models_server::ModelsServer::new(models::ModelsService {
            state: state.clone(),
        })
        .max_decoding_message_size(dec)
        .max_encoding_message_size(enc);
        let audit_service =
            proto::audit_server::AuditServer::new(audit_query::AuditService { log: audit.clone() })
                .max_decoding_message_size(dec)
                .max_encoding_message_size(enc);
        let security_reload = state
            .secured
            .clone()
            .map(|s| secure::spawn_reload(s, state.store.clone()));
        // Timelines published by other processes (replicas, `ward materialize`).
        let timeline_refresh =
            refresh.map(|every| refresh::spawn(state.clone(), audit.clone(), every));
        // The online lookup log's flusher: its writes run on the job runtime, off the
        // workers that answer lookups.
        let online_log = state.online_log.clone();
        let log_flusher = online_log.clone().map(|log| {
            let jobs = state.jobs.clone();
            crate::monitoring::log::spawn_flusher(log, move |log| {
                let jobs = jobs.clone();
                async move { jobs.run(async move { log.flush().await }).await }
            })
        });
        let monitoring =
            proto::monitoring_server::MonitoringServer::new(monitoring::MonitoringService {
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
            .set_serving::<proto::audit_server::AuditServer<audit_query::AuditService>>()
            .await;
        health
            .set_serving::<proto::monitoring_server::MonitoringServer<monitoring::MonitoringService>>()
            .await;
        health
            .set_serving::<proto::models_server::ModelsServer<models::ModelsService>>()
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
        let router = tonic::transport::Server::builder()
            .timeout(limits.request_timeout())
            .layer(GateLayer::audited(gate, audit))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(datasets)
            .add_service(ingest)
            .add_service(features)
            .add_service(audit_service)
            .add_service(monitoring)
            .add_service(models_service)
            .add_service(flight);
        let done = match tls {
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                let serving = router.serve_with_incoming_shutdown(incoming, signal);
                drive(serving, stopping_rx, grace, addr).await
            }
            Some(tls) => {
                let reloader = tls
                    .reload
                    .map(|every| crate::security::tls::spawn_reload(tls.certs.clone(), every));
                let incoming = tls_serve::tls_incoming(listener, tls.config);
                let serving = router.serve_with_incoming_shutdown(incoming, signal);
                let done = drive(serving, stopping_rx, grace, addr).await;
                if let Some(r) = reloader {
                    r.abort();
                }
                done
            }
        };
        if let Some(r) = security_reload {
            r.abort();
        }
        if let Some(r) = timeline_refresh {
            r.abort();
        }
        // What the online log still buffers is written before the server returns.
        if let Some(f) = log_flusher {
            f.stop().await;
        }
        if let Some(log) = online_log {
            if let Err(e) = log.flush().await {
                tracing::warn!(
                    "online log {}: the last flush failed ({e}); {} values lost",
                    log.config().name,
                    log.buffered()
                );
            }
        }
        done
    }
}

/// Runs the transport until it ends, or until the grace period after the shutdown signal
/// (`stopping_rx`) runs out.
async fn drive(
    serving: impl Future<Output = std::result::Result<(), tonic::transport::Error>>,
    stopping_rx: tokio::sync::oneshot::Receiver<()>,
    grace: std::time::Duration,
    addr: SocketAddr,
) -> Result<()> {
    {
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

/// A future that resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when
/// this is called (inside a Tokio runtime), not when the future is first polled, so a signal
/// arriving right after the server announced its address is not lost.
pub fn shutdown_signal() -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => Box::pin(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot listen for SIGTERM/SIGINT ({e}); stopping on Ctrl-C only");
                Box::pin(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
            }
        }
    }
    #[cfg(not(unix))]
    {
        Box::pin(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// The live feeds' listeners and consumers given on `ward serve`'s command line; each wins
/// over the configuration's.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// `--mllp ADDR`.
    pub mllp: Option<SocketAddr>,
    /// `--http ADDR`.
    pub http: Option<SocketAddr>,
    /// `--kafka BROKERS` (comma separated).
    pub kafka: Option<String>,
    /// `--kafka-topic NAME=FORMAT[:FEED]`, added to the configuration's topics.
    pub kafka_topics: Vec<String>,
}

/// `ward serve`: loads the configuration (`config`, or the defaults), applies `addr`,
/// opens the store (the configuration's, else `default_store`), checks who could reach the
/// address ([`ServeConfig::exposure`]: a non-loopback address needs `[auth]` and `[tls]`,
/// unless `insecure`), secures and serves until SIGTERM or SIGINT. Prints `listening on
/// ADDR` to standard error once bound, and a warning when the server is unauthenticated.
///
/// # Errors
/// Configuration, exposure, store, feature repository, security and bind errors.
pub async fn run(
    default_store: &Path,
    addr: Option<SocketAddr>,
    config: Option<&Path>,
    insecure: bool,
    listeners: Listeners,
    clock: SharedClock,
) -> Result<()> {
    let Listeners {
        mllp,
        http,
        kafka,
        kafka_topics,
    } = listeners;
    // Before anything reads a dataset (care teams, timelines): the pools heavy requests
    // compute on start at the job priority, so online lookups go first.
    jobs::background_pools();
    let mut cfg = match config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::default(),
    };
    if let Some(addr) = addr {
        cfg.addr = addr;
    }
    cfg.mllp = mllp.or(cfg.mllp);
    if let Some(m) = cfg.mllp {
        crate::live::check_exposure(m, cfg.tls.is_some(), insecure)?;
        crate::live::check_sender_auth(
            m,
            &cfg.live,
            cfg.auth.is_some(),
            cfg.tls
                .as_ref()
                .is_some_and(|t| t.client_auth != crate::security::tls::ClientAuth::None),
        )?;
    }
    cfg.http = http.or(cfg.http);
    if let Some(h) = cfg.http {
        crate::live::http::check_exposure(h, cfg.tls.is_some(), insecure)?;
    }
    if kafka.is_some() || !kafka_topics.is_empty() {
        let k = cfg.kafka.get_or_insert_with(Default::default);
        if let Some(b) = &kafka {
            k.brokers = crate::live::kafka::parse_brokers(b)?;
        }
        for t in &kafka_topics {
            k.topics.push(crate::live::kafka::parse_topic(t)?);
        }
        k.validate(&cfg.live)?;
    }
    let exposure = cfg.exposure(insecure)?;
    let store_dir = cfg
        .store
        .clone()
        .unwrap_or_else(|| default_store.to_path_buf());
    let store = crate::store::at_rest::with_key_provider(
        cfg.key_provider()?
            .map(|p| (p, format!("key_provider in {}", cfg.origin))),
        || Store::open(&store_dir, clock.clone()),
    )?;
    let repo = cfg.feature_repo()?;
    let secured = match cfg.auth {
        Some(_) => secure::Secured::from_config_with_keys(
            &cfg,
            &store.local_root("the audit trail")?,
            clock,
            store.encryption().map(|c| c.keyring().clone()),
        )?,
        None => None,
    };
    serve_until_signal(&cfg, store, repo, secured, exposure).await
}

/// What `ward serve` prints about who may call the server.
pub fn exposure_notice(cfg: &ServeConfig, exposure: Exposure) -> String {
    let transport = if cfg.tls.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    match exposure {
        Exposure::LoopbackUnauthenticated => format!(
            "UNAUTHENTICATED ({transport}): no [auth] configured, so every local user may call this server anonymously; it listens on loopback only; audit trail: every call is recorded as anonymous@loopback"
        ),
        Exposure::Authenticated => format!(
            "authenticated ({transport}); audit trail: every call is recorded"
        ),
        Exposure::Insecure => format!(
            "INSECURE ({transport}, {}): reachable from the network, allowed by --insecure",
            if cfg.auth.is_some() { "authenticated" } else { "UNAUTHENTICATED" }
        ),
    }
}

/// Binds, secures (when `secured`), prints `listening on ADDR` (and the store, feature sets
/// and who may call) to standard error, and serves until SIGTERM or SIGINT.
///
/// # Errors
/// Bind, TLS, care-team and transport errors.
pub async fn serve_until_signal(
    cfg: &ServeConfig,
    store: Store,
    repo: FeatureRepo,
    secured: Option<secure::Secured>,
    exposure: Exposure,
) -> Result<()> {
    let root = store.root().display().to_string();
    let sets: Vec<String> = repo.sets.keys().cloned().collect();
    let ui_features = Arc::new(repo.clone());
    let audit_store = store.clone();
    let mut server = Server::bind(cfg, store, repo).await?;
    let mut security = None;
    match (secured, &cfg.audit) {
        (Some(s), _) => {
            security = Some(s.security.clone());
            server = server.with_security(s).await?;
        }
        // Without [auth] the trail still records every (anonymous) call, where and how
        // [audit] says.
        (None, Some(a)) => {
            let dir = match a.dir.as_ref() {
                Some(d) => cfg.base.join(d),
                None => audit_store.audit_dir()?,
            };
            let log = crate::security::audit::AuditLog::open_with_keys(
                &dir,
                audit_store.clock().clone(),
                a.options(&cfg.origin)?,
                audit_store.encryption().map(|c| c.keyring().clone()),
            )?;
            server = server.with_audit(Arc::new(log));
        }
        (None, None) => {}
    }
    if let Some(tls) = &cfg.tls {
        server = server.with_tls(tls, &cfg.base)?;
    }
    // The logs the live feeds opened, by feed: Kafka topics share them (a log is opened once
    // per process), and the feeds a listener already seals.
    let mut wals = std::collections::BTreeMap::new();
    let mut sealed = std::collections::BTreeSet::new();
    // The HL7 v2 live feed (docs/live.md): its own listener and log beside the gRPC server.
    if let Some(mllp) = cfg.mllp {
        let running = crate::live::serve(
            mllp,
            &audit_store,
            &cfg.live,
            server.audit().cloned(),
            server.tls_config(),
            match cfg.live.mllp_auth {
                crate::live::MllpAuth::Certificate => security.clone(),
                crate::live::MllpAuth::None => None,
            },
        )
        .await?;
        server.update_online_after_seals(running.sealed);
        wals.insert(cfg.live.feed.clone(), running.wal);
        sealed.insert(cfg.live.feed.clone());
    }
    // FHIR pushed over HTTP (docs/live.md): behind the same authentication and audit trail.
    if let Some(http) = cfg.http {
        let running = crate::live::serve_http_with(
            http,
            &audit_store,
            &cfg.live,
            security,
            server.audit().cloned(),
            server.tls_config(),
            ui_features,
        )
        .await?;
        server.update_online_after_seals(running.sealed);
        wals.insert(cfg.live.http_feed.clone(), running.wal);
        sealed.insert(cfg.live.http_feed.clone());
    }
    // Kafka topics into the same logs (docs/live.md, "Kafka").
    if let Some(kafka) = &cfg.kafka {
        let running = crate::live::serve_kafka(
            &audit_store,
            &cfg.live,
            kafka,
            &mut wals,
            &sealed,
            server.audit().cloned(),
        )
        .await?;
        server.update_online_after_seals(running.sealed);
    }
    let stop = shutdown_signal();
    eprintln!(
        "store {root}; feature sets: {}",
        if sets.is_empty() {
            "none (give `features` in --config)".to_string()
        } else {
            sets.join(", ")
        }
    );
    eprintln!("{}", exposure_notice(cfg, exposure));
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    eprintln!(
        "runtime: {workers} worker thread{}",
        if workers == 1 { "" } else { "s" }
    );
    match cfg.reload.timelines() {
        Some(every) => eprintln!(
            "online timelines: the store's heads read every {} s (timelines other processes publish are served within it)",
            every.as_secs_f64()
        ),
        None => eprintln!(
            "online timelines: not refreshed from the store ([reload] timelines_secs = 0)"
        ),
    }
    eprintln!("listening on {}", server.local_addr());
    server.serve(stop).await?;
    eprintln!("stopped");
    Ok(())
}
