//! The security configuration file (`--auth`, the `[auth]` and `[audit]` sections): what
//! the gate ([`super::gate::Security::load`]) is built from.

use std::path::PathBuf;

use serde::Deserialize;

use super::audit::{AuditOptions, Durability};
use super::auth::{ApiTokenConfig, IssuerConfig, MtlsConfig};
use crate::error::{Error, Result};

/// The security configuration file (TOML); relative paths are resolved against its folder.
///
/// ```toml
/// policy = "policy.toml"
/// [[jwt]]
/// issuer = "https://idp.example.org"
/// audience = ["ward"]
/// jwks = "jwks.json"
/// grants = ["clinician", "data-scientist"]
/// [[api_tokens]]
/// subject = "dev"
/// blake3 = "..."
/// roles = ["steward"]
/// [audit]
/// dir = "/var/lib/ward/audit"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// The policy file.
    pub policy: PathBuf,
    /// Trusted JWT issuers.
    #[serde(default)]
    pub jwt: Vec<IssuerConfig>,
    /// Static API tokens (development).
    #[serde(default)]
    pub api_tokens: Vec<ApiTokenConfig>,
    /// Client-certificate mapping.
    #[serde(default)]
    pub mtls: Option<MtlsConfig>,
    /// The audit trail.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
}

/// The `[audit]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The audit directory (default: `<store>/audit`, chosen by the server).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Rotate files past this size (default 64 MiB).
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
    /// When records reach the disk (default `interval`).
    #[serde(default)]
    pub durability: Option<AuditDurability>,
    /// The `interval` policy's flush period in milliseconds (default 20).
    #[serde(default)]
    pub flush_interval_ms: Option<u64>,
}

/// `[audit] durability`: see [`crate::security::audit::Durability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditDurability {
    /// Written to the operating system before the response, synced in the background.
    Interval,
    /// Synced to disk before the response.
    Sync,
}

impl AuditConfig {
    /// The log options this section asks for.
    ///
    /// # Errors
    /// [`Error::BadInput`] naming `origin` for a zero interval or an interval given with
    /// `durability = "sync"`.
    pub fn options(&self, origin: &str) -> Result<AuditOptions> {
        let mut opts = AuditOptions::default();
        if let Some(m) = self.max_file_bytes {
            opts.max_file_bytes = m;
        }
        let bad = |reason: &str| Error::BadInput {
            location: origin.to_string(),
            field: "audit.flush_interval_ms".into(),
            reason: reason.into(),
        };
        opts.durability = match (self.durability, self.flush_interval_ms) {
            (Some(AuditDurability::Sync), Some(_)) => {
                return Err(bad("applies to durability = \"interval\" only"))
            }
            (Some(AuditDurability::Sync), None) => Durability::Sync,
            (_, Some(0)) => return Err(bad("must be at least 1")),
            (_, Some(ms)) => Durability::Interval(std::time::Duration::from_millis(ms)),
            (_, None) => Durability::default(),
        };
        Ok(opts)
    }
}

impl SecurityConfig {
    /// Parses a configuration; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::BadInput`] naming the origin and, in the message, the line.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::BadInput {
            location: origin.to_string(),
            field: "-".into(),
            reason: e.to_string(),
        })
    }
}
