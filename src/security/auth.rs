//! Authentication: who is calling. A request's credentials ([`RequestContext`]) become a
//! [`Principal`] through the [`Authenticator`]:
//!
//! - [`jwt`]: bearer JWTs (RS256, ES256) verified against the issuers' JWKS files.
//! - [`mtls`]: a verified client certificate mapped to a principal by CN or SAN.
//! - [`tokens`]: static API tokens for development, stored hashed.
//!
//! What a principal may do is decided elsewhere in the wing ([`super::authorize`] over
//! [`super::policy`]), at the gate ([`super::gate`]).

pub mod jwt;
pub mod mtls;
pub mod tokens;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use jwt::{IssuerConfig, JwtVerifier};
pub use mtls::{MtlsConfig, MtlsMapper};
pub use tokens::{ApiTokenConfig, ApiTokens};

/// How a principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A bearer JWT.
    Jwt,
    /// A client certificate.
    Mtls,
    /// A static API token.
    ApiToken,
    /// No credentials: a server without `[auth]` (loopback only) admits every caller as
    /// the anonymous principal ([`Principal::anonymous`]).
    Anonymous,
}

impl Source {
    /// The name used in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Jwt => "jwt",
            Source::Mtls => "mtls",
            Source::ApiToken => "api_token",
            Source::Anonymous => "none",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Who (the JWT subject, the certificate identity, the token's subject).
    pub subject: String,
    /// Its roles (already capped by what the credential's issuer may grant).
    pub roles: BTreeSet<String>,
    /// How it authenticated.
    pub source: Source,
    /// The JWT issuer or the certificate's issuer DN.
    pub issuer: Option<String>,
    /// The JWT key id that verified it.
    pub key_id: Option<String>,
    /// The clinician id care-team checks use (`care_team.clinician_id`).
    pub clinician_id: Option<String>,
    /// When the credential expires.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// The principal of a caller of a server without authentication: `anonymous@loopback`
    /// (such a server listens on loopback only, so the caller is a local user; the audit
    /// record's `client` has its address), or `anonymous@network` when the peer is not a
    /// loopback address (`--insecure`). No roles, `auth` = `none`.
    pub fn anonymous(peer: Option<SocketAddr>) -> Principal {
        let local = peer.is_none_or(|a| a.ip().is_loopback());
        Principal {
            subject: if local {
                ANONYMOUS_LOOPBACK.to_string()
            } else {
                "anonymous@network".to_string()
            },
            roles: BTreeSet::new(),
            source: Source::Anonymous,
            issuer: None,
            key_id: None,
            clinician_id: None,
            expires_at: None,
        }
    }
}

/// The subject of an unauthenticated caller on loopback ([`Principal::anonymous`]).
pub const ANONYMOUS_LOOPBACK: &str = "anonymous@loopback";

/// What the server knows of a request when it asks the gate.
#[derive(Clone, Default)]
pub struct RequestContext {
    /// The RPC or Flight call, e.g. `/ward.v1.Features/GetOnlineFeatures`.
    pub rpc: String,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The `authorization` header's value (`Bearer <token>`). Never logged.
    pub authorization: Option<String>,
    /// The client's leaf certificate (DER), verified by the TLS layer.
    pub client_cert: Option<Vec<u8>>,
    /// The feature set the request names, if any.
    pub feature_set: Option<String>,
    /// The dataset hashes the request reads or writes (`b3:...`).
    pub datasets: Vec<String>,
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("rpc", &self.rpc)
            .field("peer", &self.peer)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("client_cert", &self.client_cert.as_ref().map(|c| c.len()))
            .field("feature_set", &self.feature_set)
            .field("datasets", &self.datasets)
            .finish()
    }
}

impl RequestContext {
    /// A context for `rpc` with nothing else known.
    pub fn new(rpc: impl Into<String>) -> Self {
        RequestContext {
            rpc: rpc.into(),
            ..RequestContext::default()
        }
    }

    /// A context for `rpc` from the request's HTTP/2 headers (gRPC metadata) and peer.
    pub fn from_headers(
        rpc: impl Into<String>,
        headers: &http::HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Self {
        RequestContext {
            rpc: rpc.into(),
            peer,
            authorization: headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            ..RequestContext::default()
        }
    }

    /// Sets the bearer token (`authorization: Bearer <token>`).
    pub fn with_bearer(mut self, token: &str) -> Self {
        self.authorization = Some(format!("Bearer {token}"));
        self
    }

    /// Sets the peer address.
    pub fn with_peer(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Sets the client certificate (DER).
    pub fn with_client_cert(mut self, der: Vec<u8>) -> Self {
        self.client_cert = Some(der);
        self
    }

    /// Sets the feature set.
    pub fn with_feature_set(mut self, set: impl Into<String>) -> Self {
        self.feature_set = Some(set.into());
        self
    }

    /// Adds the datasets read or written.
    pub fn with_datasets(mut self, datasets: impl IntoIterator<Item = String>) -> Self {
        self.datasets.extend(datasets);
        self
    }
}

/// Turns credentials into a principal.
#[derive(Debug, Default)]
pub struct Authenticator {
    jwt: JwtVerifier,
    tokens: ApiTokens,
    mtls: Option<MtlsMapper>,
}

impl Authenticator {
    /// An authenticator from its parts.
    pub fn new(jwt: JwtVerifier, tokens: ApiTokens, mtls: Option<MtlsMapper>) -> Self {
        Authenticator { jwt, tokens, mtls }
    }

    /// Whether any way of authenticating is configured.
    pub fn is_configured(&self) -> bool {
        !self.jwt.is_empty() || !self.tokens.is_empty() || self.mtls.is_some()
    }

    /// The principal of a request at `now`. A bearer value with three dot-separated parts is
    /// a JWT, anything else an API token; without an `authorization` header, the client
    /// certificate (when mTLS is configured).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for missing or invalid credentials;
    /// [`Error::PermissionDenied`] for a JWT claiming a role its key does not grant.
    pub fn authenticate(&self, ctx: &RequestContext, now: DateTime<Utc>) -> Result<Principal> {
        if let Some(value) = &ctx.authorization {
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Error::Unauthenticated {
                    reason: "the authorization header is not `Bearer <token>`".into(),
                })?;
            if token.split('.').count() == 3 {
                return self.jwt.verify(token, now);
            }
            return self.tokens.verify(token);
        }
        if let (Some(cert), Some(m)) = (&ctx.client_cert, &self.mtls) {
            return m.principal(cert);
        }
        Err(Error::Unauthenticated {
            reason: "no credentials: send `authorization: Bearer <token>` or a client certificate"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn request_context_debug_hides_the_token() {
        let ctx = RequestContext::new("/x").with_bearer("secret-token-value");
        let s = format!("{ctx:?}");
        assert!(!s.contains("secret-token-value"), "{s}");
    }

    #[test]
    fn authenticate_dispatches_by_credential() {
        let tokens = ApiTokens::new(
            &[ApiTokenConfig {
                subject: "dev".into(),
                blake3: tokens::hash_token("dev-token"),
                roles: vec![],
                clinician_id: None,
            }],
            "t",
        )
        .unwrap();
        let a = Authenticator::new(JwtVerifier::empty(), tokens, None);
        let now = t("2026-01-01T00:00:00Z");
        assert_eq!(
            a.authenticate(&RequestContext::new("/x").with_bearer("dev-token"), now)
                .unwrap()
                .subject,
            "dev"
        );
        for ctx in [
            RequestContext::new("/x"),
            RequestContext::new("/x").with_bearer("a.b.c"),
            RequestContext {
                authorization: Some("Basic abc".into()),
                ..RequestContext::new("/x")
            },
            RequestContext::new("/x").with_client_cert(vec![1, 2, 3]),
        ] {
            assert!(matches!(
                a.authenticate(&ctx, now),
                Err(Error::Unauthenticated { .. })
            ));
        }
    }
}
