//! `ward serve --config FILE`: the server's configuration (TOML, `docs/service.md`,
//! `examples/serve.toml`).
//!
//! One section per concern. `[limits]` bounds what one request may cost; `[auth]`
//! (authentication and the role policy, [`SecurityConfig`]), `[audit]` (the audit trail,
//! [`AuditConfig`]), `[tls]` ([`TlsConfig`]) and `[deid]` (the de-identification policy and
//! key for historical lookups by principals without `historical_identified`) secure it
//! (`docs/security.md`). Unknown keys are refused everywhere. Relative paths are relative
//! to the configuration file's folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::features::FeatureRepo;
use crate::security::config::{AuditConfig, SecurityConfig};
use crate::security::tls::TlsConfig;

/// The default listening address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";

/// The server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Where to listen (default `127.0.0.1:50051`; port 0 picks a free port).
    #[serde(default = "default_addr")]
    pub addr: SocketAddr,
    /// The store directory; `None`: the global `--store`.
    #[serde(default)]
    pub store: Option<PathBuf>,
    /// Where the key of an encrypted store comes from (`file:PATH`, `env:NAME`,
    /// `command:PROGRAM ARG...`; a relative `file:` path is relative to this file): used
    /// instead of `WARD_KEY_PROVIDER` and the provider the store's marker records
    /// (docs/encryption.md). Its key id must still be the store's.
    #[serde(default)]
    pub key_provider: Option<String>,
    /// Feature repository files (`docs/features.md`) whose sets the Features service knows.
    /// Set names must be unique across the files.
    #[serde(default)]
    pub features: Vec<PathBuf>,
    /// Worker threads of the server's async runtime (default: one per core). Fewer than
    /// the cores leaves the rest to other busy processes on the machine: with a load
    /// generator on the same 2 cores, one worker halves the tail latency (BENCHMARKS.md,
    /// "The service"). `ward serve --threads` overrides it.
    #[serde(default)]
    pub threads: Option<usize>,
    /// What one request may cost.
    #[serde(default)]
    pub limits: Limits,
    /// Authentication (JWT issuers, API tokens, mTLS mapping) and the role policy. Without
    /// it every call is anonymous and the server binds loopback only (unless `--insecure`).
    #[serde(default)]
    pub auth: Option<SecurityConfig>,
    /// TLS (rustls): certificate, key, client certificates, reload.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The audit trail (default directory `<store>/audit`). Every serving mode records
    /// every call; without `[auth]` the callers are anonymous.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// De-identification of historical lookups for principals allowed only de-identified
    /// data.
    #[serde(default)]
    pub deid: Option<DeidConfig>,
    /// What `IngestPaths` may read (the roots) and how large an input may be (both ingest
    /// calls).
    #[serde(default)]
    pub ingest: IngestConfig,
    /// How often the server checks the policy file, the JWKS files and the store's newest
    /// `care_team` for changes.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Listen here for HL7 v2 over MLLP, logging into the feed `[live]` names
    /// (`docs/live.md`); `None` (the default): no MLLP listener. `ward serve --mllp`
    /// overrides it. A non-loopback address needs `--insecure` (MLLP has no TLS yet).
    #[serde(default)]
    pub mllp: Option<SocketAddr>,
    /// Listen here for HTTP: FHIR pushed to `POST /fhir`, logged into the feed `[live]
    /// http_feed` names (`docs/live.md`); `None` (the default): no HTTP listener. `ward serve
    /// --http` overrides it. A non-loopback address needs `--insecure` (no TLS on it yet).
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// The live feeds: names, frame and body limits, idle timeout, seal interval
    /// (`docs/live.md`).
    #[serde(default)]
    pub live: crate::live::LiveConfig,
    /// Kafka topics consumed into the live feeds (`docs/live.md`, "Kafka"); `None` (the
    /// default): none. `ward serve --kafka BROKERS` sets the brokers.
    #[serde(default)]
    pub kafka: Option<crate::live::kafka::KafkaConfig>,
    /// The online lookup log (`docs/monitoring.md`): off by default; with `enabled = true`
    /// every answered online lookup is buffered and flushed into the log dataset.
    #[serde(default)]
    pub online_log: crate::monitoring::LogConfig,
    /// The folder relative paths of the sections above resolve against (the configuration
    /// file's folder; `.` for a parsed string).
    #[serde(skip)]
    pub base: PathBuf,
    /// Where this configuration came from (for error messages).
    #[serde(skip)]
    pub origin: String,
}

/// The `[deid]` section: the policy and the key de-identified training sets are made with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeidConfig {
    /// The policy file (`examples/security/deid-safe-harbor.toml`); default: Safe Harbor.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// A file holding the key (64+ hex digits, or 32+ raw bytes).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// An environment variable holding the key (64+ hex digits).
    #[serde(default)]
    pub key_env: Option<String>,
}

/// The `[ingest]` section: where `IngestPaths` may read, and the caps on every input file
/// (`IngestPaths` and `IngestUpload`; [`crate::ingest::read`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// The folders `IngestPaths` may read under (relative ones resolve against the
    /// configuration file's folder; canonicalized when the server starts, each must exist).
    /// Empty (the default): `IngestPaths` is refused with `FAILED_PRECONDITION`; uploads
    /// still work.
    #[serde(default)]
    pub roots: Vec<PathBuf>,
    /// Largest input file in bytes, as stored (default 4 GiB).
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Largest content of one gzip input after decompression, in bytes (default 4 GiB): a
    /// gzip bomb stops here.
    #[serde(default = "default_max_decompressed_bytes")]
    pub max_decompressed_bytes: u64,
}

fn default_max_file_bytes() -> u64 {
    crate::ingest::read::DEFAULT_MAX_FILE_BYTES
}

fn default_max_decompressed_bytes() -> u64 {
    crate::ingest::read::DEFAULT_MAX_DECOMPRESSED_BYTES
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            roots: Vec::new(),
            max_file_bytes: default_max_file_bytes(),
            max_decompressed_bytes: default_max_decompressed_bytes(),
        }
    }
}

impl IngestConfig {
    /// The read policy of `IngestPaths` (with the roots, canonicalized) and of
    /// `IngestUpload` (no roots: the server wrote the file itself), both with the caps;
    /// `origin` names the configuration in errors.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `[ingest] roots` and the root that is not an
    /// existing directory.
    pub fn policies(
        &self,
        origin: &str,
    ) -> Result<(
        crate::ingest::read::ReadPolicy,
        crate::ingest::read::ReadPolicy,
    )> {
        let upload = crate::ingest::read::ReadPolicy {
            roots: None,
            max_file_bytes: self.max_file_bytes,
            max_decompressed_bytes: self.max_decompressed_bytes,
            limits_from: format!("[ingest] in {origin}"),
        };
        let roots = if self.roots.is_empty() {
            None
        } else {
            Some(crate::ingest::read::Roots::new(
                &self.roots,
                &format!("[ingest] roots in {origin}"),
            )?)
        };
        let paths = crate::ingest::read::ReadPolicy {
            roots,
            ..upload.clone()
        };
        Ok((paths, upload))
    }
}

/// The `[reload]` section: how often a running server looks for changes to what it loaded at
/// start (the policy file, the JWKS files, the newest `care_team` version in the store) and
/// swaps them in (SIGHUP checks at once), and how often it looks for timelines another
/// process published (`timelines_secs`, `docs/deploy.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Seconds between checks (default 2; at least 0.05). A change is in effect at most this
    /// long (plus the time to read it) after it was made.
    #[serde(default = "default_reload_secs")]
    pub interval_secs: f64,
    /// Seconds between reads of the heads of the timelines the server serves online
    /// (default 2; 0 disables, else at least 0.05): a timeline another server or a `ward
    /// materialize` published into the store is served at most this long, plus the time to
    /// load it, after its head moved (`docs/deploy.md`, "The refresh bound").
    #[serde(default = "default_reload_secs")]
    pub timelines_secs: f64,
}

fn default_reload_secs() -> f64 {
    2.0
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            interval_secs: default_reload_secs(),
            timelines_secs: default_reload_secs(),
        }
    }
}

impl ReloadConfig {
    /// The interval between checks.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_secs)
    }

    /// The interval between reads of the timeline heads; `None` when disabled (0).
    pub fn timelines(&self) -> Option<Duration> {
        (self.timelines_secs > 0.0).then(|| Duration::from_secs_f64(self.timelines_secs))
    }
}

/// Who may reach a server, decided from its address and configuration
/// ([`ServeConfig::exposure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback address, no authentication: every local user may call it anonymously.
    LoopbackUnauthenticated,
    /// Authentication configured (with TLS, or on loopback).
    Authenticated,
    /// Reachable from the network without authentication and/or TLS, allowed by
    /// `--insecure`.
    Insecure,
}

/// Bounds on one request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest gRPC message a client may send, in bytes (default 16 MiB). A larger one is
    /// refused by the transport (`OUT_OF_RANGE`).
    pub max_decoding_message_bytes: usize,
    /// Largest gRPC message the server sends, in bytes (default 4 MiB, the receive limit
    /// gRPC clients have by default: grpcio, tonic, grpc-java). Streams (Flight DoGet,
    /// historical lookups) split their data to stay below it; raise it only with clients
    /// configured to receive more.
    pub max_encoding_message_bytes: usize,
    /// Largest upload (IngestUpload, Flight DoPut), all messages together (default 1 GiB).
    pub max_upload_bytes: u64,
    /// Default deadline of a request, in seconds (default 120): a call that has not produced
    /// its response by then ends with `CANCELLED`. A client's shorter `grpc-timeout` wins.
    /// It covers reading a client stream (uploads), not sending a response stream.
    pub request_timeout_secs: f64,
    /// On SIGTERM or SIGINT the server stops accepting calls and lets calls in flight finish
    /// for at most this many seconds (default 30) before it exits.
    pub shutdown_grace_secs: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decoding_message_bytes: 16 << 20,
            max_encoding_message_bytes: 4 << 20,
            max_upload_bytes: 1 << 30,
            request_timeout_secs: 120.0,
            shutdown_grace_secs: 30.0,
        }
    }
}

impl Limits {
    /// The request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_secs)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace_secs)
    }

    /// Checks that every limit is usable.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the limit.
    pub fn validate(&self) -> Result<()> {
        const MIN_MESSAGE: usize = 64 << 10;
        for (name, v) in [
            (
                "limits.max_decoding_message_bytes",
                self.max_decoding_message_bytes,
            ),
            (
                "limits.max_encoding_message_bytes",
                self.max_encoding_message_bytes,
            ),
        ] {
            if v < MIN_MESSAGE {
                return Err(Error::invalid(
                    name,
                    format!("{v} is below the minimum of {MIN_MESSAGE} bytes"),
                ));
            }
        }
        if self.max_upload_bytes == 0 {
            return Err(Error::invalid(
                "limits.max_upload_bytes",
                "must be positive",
            ));
        }
        for (name, v) in [
            ("limits.request_timeout_secs", self.request_timeout_secs),
            ("limits.shutdown_grace_secs", self.shutdown_grace_secs),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0 * 7.0) {
                return Err(Error::invalid(
                    name,
                    format!("{v}: give a positive number of seconds (at most a week)"),
                ));
            }
        }
        Ok(())
    }
}

/// The most worker threads a server may ask for.
pub const MAX_THREADS: usize = 1024;

/// Checks a worker-thread count (`threads`, `ward serve --threads`); the reason if unusable.
///
/// # Errors
/// The reason, for zero or more than [`MAX_THREADS`].
pub fn check_threads(n: usize) -> std::result::Result<(), String> {
    if (1..=MAX_THREADS).contains(&n) {
        Ok(())
    } else {
        Err(format!(
            "{n}: give between 1 and {MAX_THREADS} worker threads"
        ))
    }
}

fn default_addr() -> SocketAddr {
    DEFAULT_ADDR
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 50051)))
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: default_addr(),
            store: None,
            key_provider: None,
            features: Vec::new(),
            threads: None,
            limits: Limits::default(),
            auth: None,
            tls: None,
            audit: None,
            deid: None,
            ingest: IngestConfig::default(),
            reload: ReloadConfig::default(),
            mllp: None,
            http: None,
            live: crate::live::LiveConfig::default(),
            kafka: None,
            online_log: crate::monitoring::LogConfig::default(),
            base: PathBuf::from("."),
            origin: "the default configuration".into(),
        }
    }
}

impl ServeConfig {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`Error::Io`] if unreadable; [`Error::BadInput`] naming the file and line for a
    /// syntax error or an unknown key; [`Error::InvalidArgument`] for a bad limit or a
    /// reserved section that is not empty.
    pub fn load(path: &Path) -> Result<ServeConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config = ServeConfig::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        // A relative store directory is relative to the file; an `s3://` store is a URL.
        if let Some(store) = config
            .store
            .as_ref()
            .filter(|s| !crate::store::object::is_remote(s))
        {
            config.store = Some(base.join(store));
        }
        if let Some(p) = &config.key_provider {
            if let Ok(crate::security::keyring::KeyProvider::File(f)) = p.trim().parse() {
                config.key_provider = Some(format!("file:{}", base.join(f).display()));
            }
        }
        config.features = config.features.iter().map(|f| base.join(f)).collect();
        config.ingest.roots = config.ingest.roots.iter().map(|r| base.join(r)).collect();
        config.base = base.to_path_buf();
        Ok(config)
    }

    /// Parses and checks a configuration; `origin` names it in errors. Paths stay as given.
    ///
    /// # Errors
    /// As [`ServeConfig::load`].
    pub fn parse(text: &str, origin: &str) -> Result<ServeConfig> {
        let mut config: ServeConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| {
                    text.as_bytes()[..s.start.min(text.len())]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        + 1
                })
                .unwrap_or(0);
            Error::BadInput {
                location: format!("{origin}:{line}"),
                field: "-".into(),
                reason: e.message().trim().to_string(),
            }
        })?;
        config.base = PathBuf::from(".");
        config.origin = origin.to_string();
        config.check(origin)?;
        Ok(config)
    }

    /// Decides whether the server may bind [`ServeConfig::addr`]: a non-loopback address
    /// needs both `[auth]` and `[tls]`, unless `insecure` (`ward serve --insecure`).
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] naming the address and what is missing.
    pub fn exposure(&self, insecure: bool) -> Result<Exposure> {
        let auth = self.auth.is_some();
        let tls = self.tls.is_some();
        if self.addr.ip().is_loopback() {
            return Ok(if auth {
                Exposure::Authenticated
            } else {
                Exposure::LoopbackUnauthenticated
            });
        }
        if auth && tls {
            return Ok(Exposure::Authenticated);
        }
        if insecure {
            return Ok(Exposure::Insecure);
        }
        let missing = match (auth, tls) {
            (false, false) => "authentication ([auth]) and TLS ([tls])",
            (false, true) => "authentication ([auth])",
            _ => "TLS ([tls])",
        };
        Err(Error::precondition(
            format!("listening on {} (not loopback)", self.addr),
            format!(
                "refused without {missing} in {}: configure them, bind 127.0.0.1, or pass --insecure to accept the risk",
                self.origin
            ),
        ))
    }

    /// The key provider of `key_provider`, if set.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the configuration and the setting.
    pub fn key_provider(&self) -> Result<Option<crate::security::keyring::KeyProvider>> {
        self.key_provider
            .as_deref()
            .map(|p| {
                p.trim().parse().map_err(|e: Error| {
                    Error::invalid(format!("{}: key_provider", self.origin), e.to_string())
                })
            })
            .transpose()
    }

    fn check(&self, origin: &str) -> Result<()> {
        self.online_log.validate(origin)?;
        if let Some(p) = &self.key_provider {
            p.trim()
                .parse::<crate::security::keyring::KeyProvider>()
                .map_err(|e| Error::invalid(format!("{origin}: key_provider"), e.to_string()))?;
        }
        self.limits.validate()?;
        self.live
            .validate()
            .map_err(|e| Error::invalid(format!("{origin}: [live]"), e.to_string()))?;
        if let Some(k) = &self.kafka {
            k.validate(&self.live)
                .map_err(|e| Error::invalid(format!("{origin}: [kafka]"), e.to_string()))?;
        }
        for (name, v) in [
            ("max_file_bytes", self.ingest.max_file_bytes),
            ("max_decompressed_bytes", self.ingest.max_decompressed_bytes),
        ] {
            if v == 0 {
                return Err(Error::invalid(
                    format!("{origin}: [ingest] {name}"),
                    "must be positive",
                ));
            }
        }
        let r = self.reload.interval_secs;
        if !(r.is_finite() && (0.05..=86_400.0).contains(&r)) {
            return Err(Error::invalid(
                format!("{origin}: [reload] interval_secs"),
                format!("{r}: give between 0.05 and 86400 seconds"),
            ));
        }
        let t = self.reload.timelines_secs;
        if !(t.is_finite() && (t == 0.0 || (0.05..=86_400.0).contains(&t))) {
            return Err(Error::invalid(
                format!("{origin}: [reload] timelines_secs"),
                format!("{t}: give 0 (no refresh) or between 0.05 and 86400 seconds"),
            ));
        }
        if let Some(n) = self.threads {
            check_threads(n)
                .map_err(|reason| Error::invalid(format!("{origin}: threads"), reason))?;
        }
        if self.auth.is_none() {
            // [audit] configures the trail every serving mode writes (anonymous callers
            // included); only [deid] needs principals with roles.
            for (name, present) in [("deid", self.deid.is_some())] {
                if present {
                    return Err(Error::invalid(
                        format!("{origin}: [{name}]"),
                        "needs [auth]: without authentication every call is anonymous, so there is no role to de-identify for",
                    ));
                }
            }
        }
        if let Some(auth) = &self.auth {
            if auth.audit.is_some() && self.audit.is_some() {
                return Err(Error::invalid(
                    format!("{origin}: [auth.audit]"),
                    "give the audit trail in [audit] only",
                ));
            }
        }
        if let Some(d) = &self.deid {
            if d.key_file.is_some() == d.key_env.is_some() {
                return Err(Error::invalid(
                    format!("{origin}: [deid]"),
                    "give exactly one of key_file and key_env",
                ));
            }
        }
        Ok(())
    }

    /// Loads the feature repositories into one (empty when none are configured).
    ///
    /// # Errors
    /// As [`FeatureRepo::load`]; [`Error::InvalidArgument`] when two files define a set of
    /// the same name.
    pub fn feature_repo(&self) -> Result<FeatureRepo> {
        merge_repos(
            self.features
                .iter()
                .map(|p| FeatureRepo::load(p))
                .collect::<Result<Vec<_>>>()?,
        )
    }
}

/// One repository holding the sets of all of `repos`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming a set defined twice and both files.
pub fn merge_repos(repos: Vec<FeatureRepo>) -> Result<FeatureRepo> {
    let mut merged = FeatureRepo {
        origin: String::new(),
        sets: Default::default(),
        expectations: Default::default(),
        docs: Default::default(),
    };
    let mut origins = Vec::new();
    let mut owner: std::collections::BTreeMap<String, String> = Default::default();
    for repo in repos {
        for (name, set) in repo.sets {
            if let Some(first) = owner.get(&name) {
                return Err(Error::invalid(
                    format!("feature set {name}"),
                    format!("defined in both {first} and {}", repo.origin),
                ));
            }
            owner.insert(name.clone(), repo.origin.clone());
            merged.sets.insert(name, set);
        }
        merged.expectations.extend(repo.expectations);
        merged.docs.extend(repo.docs);
        origins.push(repo.origin);
    }
    merged.origin = if origins.is_empty() {
        "the server's configuration (no feature repository configured)".into()
    } else {
        origins.join(", ")
    };
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mllp_and_live_section() {
        let c = ServeConfig::parse("", "t.toml").unwrap();
        assert_eq!(c.mllp, None);
        assert_eq!(c.live, crate::live::LiveConfig::default());
        let c = ServeConfig::parse(
            "mllp = \"127.0.0.1:2575\"\n[live]\nfeed = \"adt\"\nmax_frame_bytes = 1024\nseal_interval_secs = 60\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.mllp.unwrap().to_string(), "127.0.0.1:2575");
        assert_eq!(c.live.feed, "adt");
        assert_eq!(c.live.max_frame_bytes, 1024);
        assert_eq!(c.live.seal_interval_secs, Some(60.0));
        let e = ServeConfig::parse("[live]\nfeed = \"../x\"\n", "t.toml").unwrap_err();
        assert!(
            e.to_string().contains("[live]") && e.to_string().contains("feed"),
            "{e}"
        );
        let e = ServeConfig::parse("[live]\nfeeds = \"x\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("t.toml:2"), "{e}");
    }

    #[test]
    fn defaults_and_sections() {
        let c = ServeConfig::parse("", "t.toml").unwrap();
        assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(c.limits.max_decoding_message_bytes, 16 << 20);
        assert_eq!(c.limits.max_encoding_message_bytes, 4 << 20);
        let c = ServeConfig::parse(
            "addr = \"127.0.0.1:0\"\n[limits]\nrequest_timeout_secs = 5\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.limits.request_timeout(), Duration::from_secs(5));
        assert_eq!(c.tls.unwrap().cert, PathBuf::from("c.pem"));
        let e = ServeConfig::parse("\n[tls]\ncert = \"a.pem\"\n", "t.toml").unwrap_err();
        assert!(
            e.to_string().contains("t.toml:2") && e.to_string().contains("key"),
            "{e}"
        );
        // [audit] alone configures the trail of an unauthenticated server; [deid] needs roles.
        let c = ServeConfig::parse("[audit]\nmax_file_bytes = 10\n", "t.toml").unwrap();
        assert!(c.audit.is_some());
        let e = ServeConfig::parse("[deid]\nkey_env = \"K\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("needs [auth]"), "{e}");
        let e = ServeConfig::parse(
            "[auth]\npolicy = \"p.toml\"\n[deid]\nkey_env = \"K\"\nkey_file = \"k\"\n",
            "t.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("exactly one"), "{e}");
        let e =
            ServeConfig::parse("[auth]\npolicy = \"p.toml\"\nbogus = 1\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = ServeConfig::parse("\n[limits]\nmax_upload = 3\n", "t.toml").unwrap_err();
        assert!(e.to_string().starts_with("t.toml:3"), "{e}");
        let e = ServeConfig::parse("[limits]\nshutdown_grace_secs = -1\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("shutdown_grace_secs"), "{e}");
        assert_eq!(ServeConfig::parse("", "t.toml").unwrap().threads, None);
        assert_eq!(
            ServeConfig::parse("threads = 3\n", "t.toml")
                .unwrap()
                .threads,
            Some(3)
        );
        for bad in ["threads = 0\n", "threads = 5000\n"] {
            let e = ServeConfig::parse(bad, "t.toml").unwrap_err();
            assert!(
                e.to_string().contains("t.toml: threads")
                    && e.to_string().contains("between 1 and"),
                "{e}"
            );
        }
        let e = ServeConfig::parse("threads = -1\n", "t.toml").unwrap_err();
        assert!(e.to_string().starts_with("t.toml:1"), "{e}");
    }

    #[test]
    fn ingest_and_reload_sections() {
        let c = ServeConfig::parse("", "t.toml").unwrap();
        assert_eq!(c.ingest, IngestConfig::default());
        assert_eq!(c.ingest.max_file_bytes, 4 << 30);
        assert_eq!(c.ingest.max_decompressed_bytes, 4 << 30);
        assert_eq!(c.reload.interval(), Duration::from_secs(2));
        assert_eq!(c.reload.timelines(), Some(Duration::from_secs(2)));
        let off = ServeConfig::parse("[reload]\ntimelines_secs = 0\n", "t.toml").unwrap();
        assert_eq!(off.reload.timelines(), None);
        let (paths, upload) = c.ingest.policies("t.toml").unwrap();
        assert!(paths.roots.is_none() && upload.roots.is_none());

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        std::fs::write(
            dir.path().join("serve.toml"),
            "[ingest]\nroots = [\"in\"]\nmax_file_bytes = 10\nmax_decompressed_bytes = 20\n[reload]\ninterval_secs = 0.5\n",
        )
        .unwrap();
        let c = ServeConfig::load(&dir.path().join("serve.toml")).unwrap();
        assert_eq!(c.reload.interval(), Duration::from_millis(500));
        let (paths, upload) = c.ingest.policies(&c.origin).unwrap();
        let roots = paths.roots.unwrap();
        assert_eq!(
            roots.canonical(),
            [std::fs::canonicalize(dir.path().join("in")).unwrap()]
        );
        assert!(upload.roots.is_none());
        assert_eq!(
            (upload.max_file_bytes, upload.max_decompressed_bytes),
            (10, 20)
        );
        assert!(
            upload.limits_from.contains("serve.toml"),
            "{}",
            upload.limits_from
        );

        let c = ServeConfig::parse("[ingest]\nroots = [\"/no/such/root\"]\n", "t.toml").unwrap();
        let e = c.ingest.policies("t.toml").unwrap_err().to_string();
        assert!(
            e.contains("[ingest] roots") && e.contains("/no/such/root"),
            "{e}"
        );
        for (bad, want) in [
            ("[ingest]\nmax_file_bytes = 0\n", "max_file_bytes"),
            (
                "[ingest]\nmax_decompressed_bytes = 0\n",
                "max_decompressed_bytes",
            ),
            ("[reload]\ninterval_secs = 0\n", "interval_secs"),
            ("[reload]\ntimelines_secs = 0.01\n", "timelines_secs"),
            ("[reload]\ntimelines_secs = -1\n", "timelines_secs"),
            ("[ingest]\nroot = [\"x\"]\n", "root"),
        ] {
            let e = ServeConfig::parse(bad, "t.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn exposure_needs_auth_and_tls_off_loopback() {
        let auth = "[auth]\npolicy = \"p.toml\"\n";
        let tls = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let cfg = |addr: &str, sections: &str| {
            ServeConfig::parse(&format!("addr = \"{addr}\"\n{sections}"), "s.toml").unwrap()
        };
        let c = cfg("127.0.0.1:0", "");
        assert_eq!(
            c.exposure(false).unwrap(),
            Exposure::LoopbackUnauthenticated
        );
        let c = cfg("[::1]:0", auth);
        assert_eq!(c.exposure(false).unwrap(), Exposure::Authenticated);
        for (sections, missing) in [
            (String::new(), "authentication ([auth]) and TLS ([tls])"),
            (auth.to_string(), "TLS ([tls])"),
            (tls.to_string(), "authentication ([auth])"),
        ] {
            let c = cfg("0.0.0.0:0", &sections);
            let e = c.exposure(false).unwrap_err();
            assert!(matches!(e, Error::FailedPrecondition { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains("0.0.0.0:0") && msg.contains(missing), "{msg}");
            assert!(
                msg.contains("--insecure") && msg.contains("s.toml"),
                "{msg}"
            );
            assert_eq!(c.exposure(true).unwrap(), Exposure::Insecure);
        }
        let c = cfg("0.0.0.0:0", &format!("{auth}{tls}"));
        assert_eq!(c.exposure(false).unwrap(), Exposure::Authenticated);
    }

    #[test]
    fn the_example_loads() {
        // Read at run time: the build cache is shared between clones.
        let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
        let path = Path::new(&root).join("examples/serve.toml");
        let c = ServeConfig::load(&path).unwrap();
        assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
        let repo = c.feature_repo().unwrap();
        assert!(
            repo.sets.contains_key("readmission_online"),
            "{:?}",
            repo.sets.keys()
        );
        let twice = merge_repos(vec![repo.clone(), repo]).unwrap_err();
        assert!(twice.to_string().contains("defined in both"), "{twice}");
    }
}
