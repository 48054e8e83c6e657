//! Live feeds: HL7 v2 over MLLP, FHIR pushed over HTTP and Kafka topics of either into
//! durable write-ahead logs, sealed into curated versions equal to a batch ingest of the same
//! messages (`docs/live.md`).
//!
//! - [`wal`]: the write-ahead log under `<store>/wal/<feed>/`: checksummed records in
//!   append-only segments, group commit, recovery, the (sender, control id) pairs already
//!   logged.
//! - [`mllp`]: the MLLP listener (`ward serve --mllp ADDR`): framing, one ACK per message
//!   once it is durable.
//! - [`http`]: the HTTP listener (`ward serve --http ADDR`): `POST /fhir` with a Bundle or
//!   Bulk NDJSON, answered once the payload is durable; [`fhir`]: the checks, the
//!   OperationOutcome answers, and the NDJSON files a seal of FHIR payloads ingests.
//! - [`kafka`]: Kafka topics (`ward serve --kafka BROKERS`) consumed into the same logs, each
//!   message's position logged in the same record, so a restart resumes exactly once;
//!   [`kafka_wire`]: the small Kafka client it consumes with.
//! - [`seal`]: `ward seal`: the unsealed records as one batch ingest run.
//!
//! What a message is (accepted, in error, refused) is decided once, by [`classify`], with the
//! batch parser's own reading ([`crate::ingest::hl7v2::check_message`]); the listener
//! answers with it and the seal reads the same decision back from the log.

pub mod fhir;
pub mod http;
pub mod kafka;
pub mod kafka_wire;
pub mod mllp;
pub mod seal;
pub mod wal;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::ingest::hl7v2::{self, Header};
use crate::ingest::{BadRecord, Context};
use wal::Status;

/// The feed name when none is configured.
pub const DEFAULT_FEED: &str = "mllp";

/// The feed of FHIR pushed over HTTP when none is configured.
pub const DEFAULT_HTTP_FEED: &str = "fhir-http";

/// The `[live]` section of the server configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// The feed the MLLP listener logs into (`<store>/wal/<feed>/`; default `mllp`).
    #[serde(default = "default_feed")]
    pub feed: String,
    /// The largest MLLP frame accepted, in bytes (default 4 MiB). A longer frame is refused
    /// (AR) and the connection closed, since its end cannot be trusted.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// A connection that sends nothing for this many seconds is closed (default 600).
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: f64,
    /// Seal the feed this often, in seconds (`None`, the default: only `ward seal`).
    #[serde(default)]
    pub seal_interval_secs: Option<f64>,
    /// A new log segment starts once the current one holds this many bytes (default 64 MiB).
    #[serde(default = "default_segment")]
    pub segment_bytes: u64,
    /// The feed the HTTP listener logs FHIR payloads into (default `fhir-http`); not the
    /// MLLP feed: a feed holds HL7 v2 messages or FHIR payloads.
    #[serde(default = "default_http_feed")]
    pub http_feed: String,
    /// The largest HTTP body accepted, in bytes (default 32 MiB): a longer one is refused
    /// with 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How MLLP senders authenticate when the server's `[auth]` is on (without it every
    /// sender is anonymous): by TLS client certificate (the default), or not at all.
    #[serde(default)]
    pub mllp_auth: MllpAuth,
}

/// How MLLP senders authenticate when the server's authentication is on (`[live]
/// mllp_auth`). MLLP carries no credential of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MllpAuth {
    /// A TLS client certificate, mapped to a principal by `[auth.mtls]`, whose roles must
    /// grant `ingest`; a sender without one is refused (AR) and nothing it sends is logged.
    #[default]
    Certificate,
    /// Any sender that reaches the listener (a loopback listener behind the interface
    /// engine on the same host, say); audited as `auth` `none`.
    None,
}

fn default_feed() -> String {
    DEFAULT_FEED.into()
}
fn default_max_frame() -> usize {
    4 << 20
}
fn default_idle() -> f64 {
    600.0
}
fn default_segment() -> u64 {
    wal::DEFAULT_SEGMENT_BYTES
}
fn default_http_feed() -> String {
    DEFAULT_HTTP_FEED.into()
}
fn default_max_body() -> usize {
    32 << 20
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            feed: default_feed(),
            max_frame_bytes: default_max_frame(),
            idle_timeout_secs: default_idle(),
            seal_interval_secs: None,
            segment_bytes: default_segment(),
            http_feed: default_http_feed(),
            max_body_bytes: default_max_body(),
            mllp_auth: MllpAuth::default(),
        }
    }
}

impl LiveConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the key.
    pub fn validate(&self) -> crate::Result<()> {
        wal::check_feed_name(&self.feed)?;
        wal::check_feed_name(&self.http_feed)
            .map_err(|_| crate::Error::invalid("live.http_feed", format!("{:?}: a feed name is 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'", self.http_feed)))?;
        if self.http_feed == self.feed {
            return Err(crate::Error::invalid(
                "live.http_feed",
                format!("{:?} is also the MLLP feed (live.feed): a feed holds HL7 v2 messages or FHIR payloads, not both", self.feed),
            ));
        }
        if self.max_body_bytes < 1024 || self.max_body_bytes > (1 << 30) {
            return Err(crate::Error::invalid(
                "live.max_body_bytes",
                format!("{}: give 1024 to 2^30", self.max_body_bytes),
            ));
        }
        if self.max_frame_bytes < 64 || self.max_frame_bytes > (1 << 30) {
            return Err(crate::Error::invalid(
                "live.max_frame_bytes",
                format!("{}: give 64 to 2^30", self.max_frame_bytes),
            ));
        }
        if !(self.idle_timeout_secs.is_finite() && self.idle_timeout_secs >= 0.1) {
            return Err(crate::Error::invalid(
                "live.idle_timeout_secs",
                format!("{}: give at least 0.1", self.idle_timeout_secs),
            ));
        }
        if let Some(s) = self.seal_interval_secs {
            if !(s.is_finite() && s >= 0.1) {
                return Err(crate::Error::invalid(
                    "live.seal_interval_secs",
                    format!("{s}: give at least 0.1"),
                ));
            }
        }
        Ok(())
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_secs)
    }
}

/// What Ward makes of one received message.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Accepted (AA), in error (AE) or refused (AR).
    pub status: Status,
    /// The header, when the bytes hold a readable MSH.
    pub header: Option<Header>,
    /// Why it is in error or refused (empty when accepted).
    pub reason: String,
    /// The batch parser's bad records for it (AE), or the refusal as one bad record (AR).
    pub bad: Vec<BadRecord>,
}

impl Verdict {
    /// The sender a resend is recognised by: the rows' `source_system`, else `peer`.
    pub fn sender(&self, peer: &str) -> String {
        self.header
            .as_ref()
            .map_or_else(|| peer.to_string(), |h| h.source_system.clone())
    }

    /// MSH-10, or empty.
    pub fn control_id(&self) -> String {
        self.header
            .as_ref()
            .and_then(|h| h.control_id.clone())
            .unwrap_or_default()
    }
}

/// Reads one message as the batch parser would, named `name` (the feed's input name):
/// refused (AR) when it holds no readable MSH, several messages, or no MSH-10; in error (AE)
/// when the parser's checks find bad records in it alone; else accepted.
pub fn classify(name: &str, bytes: &[u8], ctx: &Context) -> Verdict {
    let checked = hl7v2::check_message(name, bytes, ctx);
    let refuse = |header: Option<Header>, reason: String, bad: Vec<BadRecord>| Verdict {
        status: Status::Refused,
        header,
        reason,
        bad,
    };
    match checked.headers.len() {
        0 => {
            let reason = checked.bad.first().map_or_else(
                || "no HL7 v2 message (no MSH segment) in the frame".to_string(),
                |b| format!("{}: {}", b.reason, b.detail),
            );
            refuse(None, reason, checked.bad)
        }
        1 => {
            let header = checked.headers.into_iter().next();
            if header.as_ref().is_some_and(|h| h.control_id.is_none()) {
                return refuse(
                    header,
                    "MSH-10 (message control id) is empty: the message cannot be acknowledged or recognised when resent".into(),
                    Vec::new(),
                );
            }
            if checked.bad.is_empty() {
                Verdict {
                    status: Status::Accepted,
                    header,
                    reason: String::new(),
                    bad: Vec::new(),
                }
            } else {
                let reason = checked
                    .bad
                    .iter()
                    .map(|b| {
                        format!(
                            "{}{}: {}",
                            b.reason,
                            b.field
                                .as_deref()
                                .map(|f| format!(" {f}"))
                                .unwrap_or_default(),
                            b.detail
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                Verdict {
                    status: Status::Error,
                    header,
                    reason,
                    bad: checked.bad,
                }
            }
        }
        n => refuse(
            checked.headers.into_iter().next(),
            format!(
                "the frame holds {n} messages (MSH segments); MLLP carries one message per frame"
            ),
            Vec::new(),
        ),
    }
}

/// A running MLLP listener.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The log it writes.
    pub wal: wal::Wal,
    /// Notified after each seal of the configured interval that sealed records (the server
    /// then brings its online feature sets up to date: `docs/live.md`, "Online after a
    /// seal").
    pub sealed: std::sync::Arc<tokio::sync::Notify>,
}

/// The name a feed's messages are ingested under when sealed (`<feed>.hl7`): a batch ingest
/// of a file with this name holding the same messages gives the same curated versions.
pub fn input_name(feed: &str) -> String {
    format!("{feed}.hl7")
}

/// Refuses a non-loopback MLLP address unless it is served over TLS (`tls`: the server's
/// `[tls]`) or `insecure`: MLLP carries patient data.
///
/// # Errors
/// [`crate::Error::FailedPrecondition`] naming the address.
pub fn check_exposure(addr: SocketAddr, tls: bool, insecure: bool) -> crate::Result<()> {
    if addr.ip().is_loopback() || tls || insecure {
        return Ok(());
    }
    Err(crate::Error::precondition(
        format!("--mllp {addr}"),
        "a non-loopback MLLP listener without TLS sends patient data in plain text; configure [tls] (MLLP is then served over TLS), or put a TLS terminator in front and listen on loopback, or pass --insecure",
    ))
}

/// Starts the MLLP listener of `ward serve` on `addr` (the feed, limits and seal interval
/// from `cfg`; over TLS with `tls`, the server's own configuration; senders authenticated
/// by `security`, when given, as [`mllp::start`] says), and, when `cfg.seal_interval_secs`
/// is set, a task sealing the feed that often. Seals are recorded in `audit` (else in
/// `<store>/audit`).
///
/// # Errors
/// As [`mllp::start`].
pub async fn serve(
    addr: SocketAddr,
    store: &crate::store::Store,
    cfg: &LiveConfig,
    audit: Option<std::sync::Arc<crate::security::audit::AuditLog>>,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    security: Option<std::sync::Arc<crate::security::gate::Security>>,
) -> crate::Result<Running> {
    let running = mllp::start(addr, store, cfg, audit.clone(), tls, security).await?;
    if let Some(secs) = cfg.seal_interval_secs {
        spawn_sealer(
            store,
            &cfg.feed,
            secs,
            "mllp:seal",
            audit,
            running.sealed.clone(),
        );
    }
    Ok(running)
}

/// Refuses `--mllp` on a server with authentication (`auth`) when senders cannot
/// authenticate: `[live] mllp_auth = "certificate"` (the default) needs TLS with client
/// certificates (`tls_client_certs`).
///
/// # Errors
/// [`crate::Error::FailedPrecondition`] saying what to configure.
pub fn check_sender_auth(
    addr: SocketAddr,
    cfg: &LiveConfig,
    auth: bool,
    tls_client_certs: bool,
) -> crate::Result<()> {
    if !auth || cfg.mllp_auth == MllpAuth::None || tls_client_certs {
        return Ok(());
    }
    Err(crate::Error::precondition(
        format!("--mllp {addr}"),
        "authentication is on ([auth]) and MLLP carries no credential, so MLLP senders authenticate by TLS client certificate: configure [tls] with client_auth and client_ca and map the interface engine's certificate in [auth.mtls] to a role granting ingest; or set [live] mllp_auth = \"none\" to accept any sender that reaches the listener (audited as unauthenticated)",
    ))
}

/// Starts the HTTP listener of `ward serve` on `addr` (FHIR pushed into `cfg.http_feed`;
/// `security` decides who may push when authentication is on; pushes are audited in
/// `audit`; over HTTPS with `tls`, the server's own configuration) and the web UI's catalog
/// of `store` ([`crate::ui`]), and, when `cfg.seal_interval_secs` is set, a task sealing
/// that feed that often.
///
/// # Errors
/// As [`http::start`].
pub async fn serve_http(
    addr: SocketAddr,
    store: &crate::store::Store,
    cfg: &LiveConfig,
    security: Option<std::sync::Arc<crate::security::gate::Security>>,
    audit: Option<std::sync::Arc<crate::security::audit::AuditLog>>,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
) -> crate::Result<Running> {
    serve_http_with(addr, store, cfg, security, audit, tls, Default::default()).await
}

/// [`serve_http`], with the feature repository whose sets the web UI's feature-set pages
/// show (`ward serve` passes the sets of its `features` files; docs/ui.md).
///
/// # Errors
/// As [`serve_http`].
pub async fn serve_http_with(
    addr: SocketAddr,
    store: &crate::store::Store,
    cfg: &LiveConfig,
    security: Option<std::sync::Arc<crate::security::gate::Security>>,
    audit: Option<std::sync::Arc<crate::security::audit::AuditLog>>,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    features: std::sync::Arc<crate::features::FeatureRepo>,
) -> crate::Result<Running> {
    let running = http::start(addr, store, cfg, security, audit.clone(), tls, features).await?;
    if let Some(secs) = cfg.seal_interval_secs {
        spawn_sealer(
            store,
            &cfg.http_feed,
            secs,
            "http:seal",
            audit,
            running.sealed.clone(),
        );
    }
    Ok(running)
}

/// Starts consuming the Kafka topics of `kafka` into their feeds ([`kafka::start`]; `wals`:
/// the logs the MLLP and HTTP listeners already opened, by feed), and, when
/// `cfg.seal_interval_secs` is set, a task sealing each feed no listener seals (`sealed`:
/// the feeds already sealed by one) that often; those seals notify the returned
/// `sealed`.
///
/// # Errors
/// As [`kafka::start`].
pub async fn serve_kafka(
    store: &crate::store::Store,
    cfg: &LiveConfig,
    kafka: &kafka::KafkaConfig,
    wals: &mut std::collections::BTreeMap<String, wal::Wal>,
    sealed: &std::collections::BTreeSet<String>,
    audit: Option<std::sync::Arc<crate::security::audit::AuditLog>>,
) -> crate::Result<kafka::Running> {
    let running = kafka::start(store, cfg, kafka, wals, audit.clone()).await?;
    if let Some(secs) = cfg.seal_interval_secs {
        let feeds: std::collections::BTreeSet<&String> = running.feeds.values().collect();
        for feed in feeds {
            if !sealed.contains(feed) {
                spawn_sealer(
                    store,
                    feed,
                    secs,
                    "kafka:seal",
                    audit.clone(),
                    running.sealed.clone(),
                );
            }
        }
    }
    Ok(running)
}

/// A task sealing `feed` every `secs` seconds, each seal audited as `rpc`; `sealed` is
/// notified after each seal that sealed records.
fn spawn_sealer(
    store: &crate::store::Store,
    feed: &str,
    secs: f64,
    rpc: &'static str,
    audit: Option<std::sync::Arc<crate::security::audit::AuditLog>>,
    sealed: std::sync::Arc<tokio::sync::Notify>,
) {
    {
        let store = store.clone();
        let feed = feed.to_string();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(secs));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match seal::seal(&store, &feed, &seal::SealOptions::default()).await {
                    Ok(r) if r.range.is_some() => {
                        tracing::info!(feed, messages = r.messages, "sealed");
                        if let Err(e) = seal::record_audit(&store, &r, rpc, audit.as_deref()) {
                            tracing::error!(feed, "the seal's audit record failed: {e}");
                        }
                        sealed.notify_one();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(feed, "seal failed (the next one resumes it): {e}"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_feed_is_checked_and_configured() {
        let c = crate::service::ServeConfig::parse(
            "http = \"127.0.0.1:8080\"\n[live]\nhttp_feed = \"fhir\"\nmax_body_bytes = 2048\n",
            "t.toml",
        )
        .expect("parses");
        assert_eq!(
            c.http.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            (c.live.http_feed.as_str(), c.live.max_body_bytes),
            ("fhir", 2048)
        );
        assert_eq!(LiveConfig::default().http_feed, DEFAULT_HTTP_FEED);
        for (text, key) in [
            ("[live]\nfeed = \"x\"\nhttp_feed = \"x\"\n", "http_feed"),
            ("[live]\nhttp_feed = \"../x\"\n", "http_feed"),
            ("[live]\nmax_body_bytes = 10\n", "max_body_bytes"),
        ] {
            let e = crate::service::ServeConfig::parse(text, "t.toml").expect_err(text);
            assert!(e.to_string().contains(key), "{e}");
        }
        let web: SocketAddr = "0.0.0.0:80".parse().expect("addr");
        assert!(http::check_exposure(web, false, false).is_err());
        assert!(http::check_exposure(web, true, false).is_ok(), "HTTPS");
        assert!(http::check_exposure(web, false, true).is_ok());
        let any: SocketAddr = "0.0.0.0:2575".parse().expect("addr");
        assert!(check_exposure(any, false, false).is_err());
        assert!(check_exposure(any, true, false).is_ok(), "MLLP over TLS");
        assert!(check_exposure(any, false, true).is_ok());
    }
}
