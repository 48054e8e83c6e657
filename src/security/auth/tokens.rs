//! Static API tokens for development, stored as the BLAKE3 hash of the token.
//!
//! ```toml
//! [[api_tokens]]
//! subject = "dev-steward"
//! blake3 = "<64 hex digits: BLAKE3 of the token's UTF-8 bytes>"
//! roles = ["steward"]
//! ```
//!
//! The configuration never holds a token, only its hash. A presented token is hashed and
//! compared with every configured hash in constant time (`blake3::Hash` equality is constant
//! time, and every entry is compared whatever matched), so timing tells nothing about how
//! much of a guess was right.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{Principal, Source};
use crate::error::{Error, Result};
use crate::security::policy::validate_role;

/// One API token as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// The principal the token authenticates.
    pub subject: String,
    /// BLAKE3 of the token, 64 hex digits.
    pub blake3: String,
    /// The roles it carries.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The clinician id for care-team checks (default: the subject).
    #[serde(default)]
    pub clinician_id: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    hash: blake3::Hash,
    subject: String,
    roles: BTreeSet<String>,
    clinician_id: Option<String>,
}

/// The configured API tokens.
#[derive(Debug, Clone, Default)]
pub struct ApiTokens {
    entries: Vec<Entry>,
}

/// The BLAKE3 of a token, as written in the configuration.
pub fn hash_token(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

impl ApiTokens {
    /// Loads the configured entries; `origin` names the configuration in errors.
    ///
    /// # Errors
    /// [`Error::BadInput`] naming the entry for a hash that is not 64 hex digits, an empty
    /// subject, a bad role name or a hash configured twice.
    pub fn new(config: &[ApiTokenConfig], origin: &str) -> Result<ApiTokens> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, c) in config.iter().enumerate() {
            let bad = |field: &str, reason: String| Error::BadInput {
                location: format!("{origin}: api_tokens[{i}]"),
                field: field.into(),
                reason,
            };
            let hash = blake3::Hash::from_hex(c.blake3.trim())
                .map_err(|_| bad("blake3", "not 64 hexadecimal digits".into()))?;
            if c.subject.trim().is_empty() {
                return Err(bad("subject", "empty".into()));
            }
            let mut roles = BTreeSet::new();
            for r in &c.roles {
                validate_role(r).map_err(|reason| bad("roles", reason))?;
                roles.insert(r.clone());
            }
            if entries.iter().any(|e| e.hash == hash) {
                return Err(bad(
                    "blake3",
                    "the same token hash is configured twice".into(),
                ));
            }
            entries.push(Entry {
                hash,
                subject: c.subject.clone(),
                roles,
                clinician_id: c.clinician_id.clone(),
            });
        }
        Ok(ApiTokens { entries })
    }

    /// Whether any token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of `token`.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] when no configured hash matches.
    pub fn verify(&self, token: &str) -> Result<Principal> {
        let presented = blake3::hash(token.as_bytes());
        let mut found = None;
        for e in &self.entries {
            // Constant-time comparison; no early exit.
            if e.hash == presented {
                found = Some(e);
            }
        }
        let e = found.ok_or_else(|| Error::Unauthenticated {
            reason: "the API token is not recognized".into(),
        })?;
        Ok(Principal {
            subject: e.subject.clone(),
            roles: e.roles.clone(),
            source: Source::ApiToken,
            issuer: None,
            key_id: None,
            clinician_id: Some(e.clinician_id.clone().unwrap_or_else(|| e.subject.clone())),
            expires_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(token: &str) -> ApiTokenConfig {
        ApiTokenConfig {
            subject: "dev".into(),
            blake3: hash_token(token),
            roles: vec!["steward".into()],
            clinician_id: None,
        }
    }

    #[test]
    fn a_configured_token_authenticates_and_others_do_not() {
        let t = ApiTokens::new(&[cfg("ward_dev_0123456789abcdef")], "sec.toml").unwrap();
        let p = t.verify("ward_dev_0123456789abcdef").unwrap();
        assert_eq!(p.subject, "dev");
        assert_eq!(p.source, Source::ApiToken);
        assert!(p.roles.contains("steward"));
        for wrong in ["ward_dev_0123456789abcdeF", "", "ward_dev_0123456789abcde"] {
            assert!(matches!(
                t.verify(wrong),
                Err(Error::Unauthenticated { .. })
            ));
        }
    }

    #[test]
    fn bad_entries_are_named() {
        let mut c = cfg("x");
        c.blake3 = "abc".into();
        let e = ApiTokens::new(&[cfg("y"), c], "sec.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_tokens[1]") && e.contains("blake3"), "{e}");
        let e = ApiTokens::new(&[cfg("y"), cfg("y")], "sec.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
    }
}
