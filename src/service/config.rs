//! `ward serve --config FILE`: the server's configuration (TOML, `docs/service.md`,
//! `examples/serve.toml`).
//!
//! One section per concern. `[limits]` bounds what one request may cost; `[auth]`, `[tls]`
//! and `[audit]` are reserved for authentication, TLS and the audit log (issue 8): until
//! they are built, a non-empty section is refused, so a configuration asking for TLS never
//! starts a plaintext server. Unknown keys are refused everywhere. Relative paths are
//! relative to the configuration file's folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::features::FeatureRepo;

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
    /// Feature repository files (`docs/features.md`) whose sets the Features service knows.
    /// Set names must be unique across the files.
    #[serde(default)]
    pub features: Vec<PathBuf>,
    /// What one request may cost.
    #[serde(default)]
    pub limits: Limits,
    /// Reserved for authentication (bearer tokens, roles); must be empty for now.
    #[serde(default)]
    pub auth: Option<toml::Table>,
    /// Reserved for TLS; must be empty for now.
    #[serde(default)]
    pub tls: Option<toml::Table>,
    /// Reserved for the audit log; must be empty for now.
    #[serde(default)]
    pub audit: Option<toml::Table>,
}

/// Bounds on one request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest gRPC message a client may send, in bytes (default 16 MiB). A larger one is
    /// refused by the transport (`OUT_OF_RANGE`).
    pub max_decoding_message_bytes: usize,
    /// Largest gRPC message the server sends, in bytes (default 16 MiB). Streams (Flight
    /// DoGet, historical lookups) split their data to stay below it.
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
            max_encoding_message_bytes: 16 << 20,
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
            features: Vec::new(),
            limits: Limits::default(),
            auth: None,
            tls: None,
            audit: None,
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
        if let Some(store) = &config.store {
            config.store = Some(base.join(store));
        }
        config.features = config.features.iter().map(|f| base.join(f)).collect();
        Ok(config)
    }

    /// Parses and checks a configuration; `origin` names it in errors. Paths stay as given.
    ///
    /// # Errors
    /// As [`ServeConfig::load`].
    pub fn parse(text: &str, origin: &str) -> Result<ServeConfig> {
        let config: ServeConfig = toml::from_str(text).map_err(|e| {
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
        config.check(origin)?;
        Ok(config)
    }

    fn check(&self, origin: &str) -> Result<()> {
        self.limits.validate()?;
        for (name, section) in [
            ("auth", &self.auth),
            ("tls", &self.tls),
            ("audit", &self.audit),
        ] {
            if section.as_ref().is_some_and(|t| !t.is_empty()) {
                return Err(Error::invalid(
                    format!("{origin}: [{name}]"),
                    "this build of Ward does not support this section yet; remove it (the server would otherwise run without it)",
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
    fn defaults_and_sections() {
        let c = ServeConfig::parse("", "t.toml").unwrap();
        assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(c.limits.max_decoding_message_bytes, 16 << 20);
        let c = ServeConfig::parse(
            "addr = \"127.0.0.1:0\"\n[limits]\nrequest_timeout_secs = 5\n[tls]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.limits.request_timeout(), Duration::from_secs(5));
        let e = ServeConfig::parse("[tls]\ncert = \"a.pem\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("[tls]"), "{e}");
        let e = ServeConfig::parse("\n[limits]\nmax_upload = 3\n", "t.toml").unwrap_err();
        assert!(e.to_string().starts_with("t.toml:3"), "{e}");
        let e = ServeConfig::parse("[limits]\nshutdown_grace_secs = -1\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("shutdown_grace_secs"), "{e}");
    }

    #[test]
    fn the_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/serve.toml");
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
