//! Authentication and authorization: who is calling, and may they do this.
//!
//! - [`jwt`]: bearer JWTs (RS256, ES256) verified against the issuers' JWKS files.
//! - [`mtls`]: a verified client certificate mapped to a principal by CN or SAN.
//! - [`tokens`]: static API tokens for development, stored hashed.
//! - [`policy`]: roles → permissions, deny by default.
//! - [`care_team`]: which patients are on a clinician's care team at a time.
//!
//! [`Security`] is the gate the server calls for every RPC and Flight call:
//! [`Security::admit`] authenticates the request and authorizes what it can before the
//! handler runs, [`Security::authorize`] decides with the patients once the handler knows
//! them; both put the decision into the request's [`AuditNote`], from which the server
//! writes the request's one audit record ([`crate::audit`]) once its outcome is known.
//! [`Security::check`] does all three for a caller with nothing to finish afterwards. `docs/security.md` documents the configuration and the permission table.

pub mod care_team;
pub mod jwt;
pub mod mtls;
pub mod policy;
pub mod tokens;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEntry, AuditLog, AuditOptions, Durability, Outcome, Patients};
use crate::clock::SharedClock;
use crate::error::{Error, Result};
pub use care_team::CareTeamIndex;
pub use jwt::{IssuerConfig, JwtVerifier};
pub use mtls::{MtlsConfig, MtlsMapper};
pub use policy::{Permission, Policy};
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

/// What a request does; every RPC maps to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Online feature lookup for the listed patients.
    OnlineLookup,
    /// Historical (training set) read with identifiers.
    HistoricalIdentified,
    /// Historical read, de-identified.
    HistoricalDeidentified,
    /// Materialize a feature set.
    Materialize,
    /// Ingest source files.
    Ingest,
    /// List, show, verify or read dataset versions.
    DatasetsRead,
    /// Tag or upload datasets.
    DatasetsWrite,
    /// Query or verify the audit trail.
    AuditRead,
    /// Administration.
    Admin,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 9] = [
        Action::OnlineLookup,
        Action::HistoricalIdentified,
        Action::HistoricalDeidentified,
        Action::Materialize,
        Action::Ingest,
        Action::DatasetsRead,
        Action::DatasetsWrite,
        Action::AuditRead,
        Action::Admin,
    ];

    /// The action's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::OnlineLookup => "online_lookup",
            Action::HistoricalIdentified => "historical_identified",
            Action::HistoricalDeidentified => "historical_deidentified",
            Action::Materialize => "materialize",
            Action::Ingest => "ingest",
            Action::DatasetsRead => "datasets_read",
            Action::DatasetsWrite => "datasets_write",
            Action::AuditRead => "audit_read",
            Action::Admin => "admin",
        }
    }

    /// The permissions any one of which allows the action (for online lookups,
    /// `online_lookup_care_team` allows it only for care-team patients).
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Action::OnlineLookup => &[Permission::OnlineLookup, Permission::OnlineLookupCareTeam],
            Action::HistoricalIdentified => &[Permission::HistoricalIdentified],
            Action::HistoricalDeidentified => &[
                Permission::HistoricalDeidentified,
                Permission::HistoricalIdentified,
            ],
            Action::Materialize => &[Permission::Materialize],
            Action::Ingest => &[Permission::Ingest],
            Action::DatasetsRead => &[Permission::DatasetsRead],
            Action::DatasetsWrite => &[Permission::DatasetsWrite],
            Action::AuditRead => &[Permission::AuditRead],
            Action::Admin => &[Permission::Admin],
        }
    }

    /// Whether the patients an action touches are recorded in bulk (count and hash) rather
    /// than listed: historical reads, whose id list is in the training set's lineage.
    pub fn bulk_patients(self) -> bool {
        matches!(
            self,
            Action::HistoricalIdentified | Action::HistoricalDeidentified
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the gate treats an RPC ([`route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// No credentials needed, nothing audited: health checks and server reflection (they
    /// touch no data).
    Public,
    /// Decided completely at the gate: the action needs no patient list.
    Gate(Action),
    /// Authenticated and checked for the role at the gate; the handler decides (and audits)
    /// with the patients once it has decoded the request ([`Security::authorize`]).
    Handler(Action),
}

/// The route of an RPC or Flight call by its full name (`/package.Service/Method`); `None`
/// for a name Ward does not know, which the gate refuses.
pub fn route(rpc: &str) -> Option<Route> {
    let (service, method) = rpc.trim_start_matches('/').split_once('/')?;
    Some(match (service, method) {
        ("grpc.health.v1.Health", _)
        | ("grpc.reflection.v1.ServerReflection", _)
        | ("grpc.reflection.v1alpha.ServerReflection", _) => Route::Public,
        ("ward.v1.Datasets", "ListDatasets" | "GetDataset" | "VerifyDataset") => {
            Route::Gate(Action::DatasetsRead)
        }
        ("ward.v1.Datasets", "TagDataset") => Route::Gate(Action::DatasetsWrite),
        ("ward.v1.Ingest", "IngestPaths" | "IngestUpload") => Route::Gate(Action::Ingest),
        ("ward.v1.Features", "ListFeatureSets") => Route::Gate(Action::DatasetsRead),
        // The audit trail: who looked at what (privacy officers, `audit_read`).
        ("ward.v1.Audit", "QueryAudit") => Route::Gate(Action::AuditRead),
        ("ward.v1.Features", "Materialize") => Route::Gate(Action::Materialize),
        ("ward.v1.Features", "GetOnlineFeatures") => Route::Handler(Action::OnlineLookup),
        // Identified or de-identified is decided by the handler (the principal's permissions).
        ("ward.v1.Features", "GetHistoricalFeatures") => {
            Route::Handler(Action::HistoricalDeidentified)
        }
        ("arrow.flight.protocol.FlightService", m) => match m {
            "ListFlights" | "GetFlightInfo" | "GetSchema" | "PollFlightInfo" => {
                Route::Gate(Action::DatasetsRead)
            }
            "DoPut" => Route::Gate(Action::DatasetsWrite),
            // Rows of a version: identified unless the version is de-identified (handler).
            "DoGet" => Route::Handler(Action::HistoricalDeidentified),
            // Handshake, DoExchange, DoAction, ListActions: not offered by Ward.
            _ => Route::Gate(Action::Admin),
        },
        _ => return None,
    })
}

/// The outcome of [`Authorizer::authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// Why (the permission used, or what is missing). Never says anything about a patient
    /// the principal may not see.
    pub reason: String,
    /// The permission that allowed it.
    pub permission: Option<Permission>,
}

impl Decision {
    fn allow(p: Permission, reason: String) -> Self {
        Decision {
            allowed: true,
            reason,
            permission: Some(p),
        }
    }

    fn deny(reason: String) -> Self {
        Decision {
            allowed: false,
            reason,
            permission: None,
        }
    }
}

/// Decides, in one place, whether a principal may take an action on some patients.
#[derive(Debug)]
pub struct Authorizer {
    policy: ArcSwap<Policy>,
    care_team: ArcSwap<CareTeamIndex>,
}

impl Authorizer {
    /// An authorizer over `policy` with an empty care-team index.
    pub fn new(policy: Policy) -> Self {
        Authorizer {
            policy: ArcSwap::from_pointee(policy),
            care_team: ArcSwap::from_pointee(CareTeamIndex::empty()),
        }
    }

    /// Replaces the policy (requests in flight finish with the old one).
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Replaces the care-team index (e.g. after a new `care_team` version is ingested).
    pub fn set_care_team(&self, index: CareTeamIndex) {
        self.care_team.store(Arc::new(index));
    }

    /// The permissions `principal`'s roles grant under the current policy.
    pub fn permissions_of(&self, principal: &Principal) -> BTreeSet<Permission> {
        self.policy.load().permissions(principal.roles.iter())
    }

    /// Whether `principal` may take `action` on `patients` at `now`. Deny by default: a
    /// principal with no role, or whose roles lack every permission the action accepts, is
    /// denied. A clinician (`online_lookup_care_team` only) is denied the whole request if any
    /// patient in it is not on their care team at `now`; the reason names the position in the
    /// request, never whether that patient exists.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        patients: &[String],
        now: DateTime<Utc>,
    ) -> Decision {
        let policy = self.policy.load();
        let perms = policy.permissions(principal.roles.iter());
        let roles = if principal.roles.is_empty() {
            "no role".to_string()
        } else {
            format!(
                "roles {}",
                principal
                    .roles
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let accepted = action.permissions();
        let Some(&perm) = accepted.iter().find(|p| perms.contains(*p)) else {
            let names: Vec<&str> = accepted.iter().map(|p| p.as_str()).collect();
            return Decision::deny(format!(
                "{} ({roles}) lacks {} for {action}",
                principal.subject,
                names.join(" or ")
            ));
        };
        if perm != Permission::OnlineLookupCareTeam {
            return Decision::allow(perm, format!("{perm} granted to {roles}"));
        }
        let Some(clinician) = principal.clinician_id.as_deref() else {
            return Decision::deny(format!(
                "{} has no clinician id, so no care team",
                principal.subject
            ));
        };
        let team = self.care_team.load();
        for (i, p) in patients.iter().enumerate() {
            if !team.on_team(clinician, p, now) {
                return Decision::deny(format!(
                    "patient #{} of the request is not on the care team of clinician {clinician} at {}",
                    i + 1,
                    now.to_rfc3339()
                ));
            }
        }
        Decision::allow(
            perm,
            format!(
                "{perm}: {} patient(s) on the care team of clinician {clinician}",
                patients.len()
            ),
        )
    }
}

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

/// `[audit] durability`: see [`crate::audit::Durability`].
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

/// The gate: authentication, authorization and audit in one call.
#[derive(Debug)]
pub struct Security {
    authn: Authenticator,
    authz: Authorizer,
    audit: Option<Arc<AuditLog>>,
    clock: SharedClock,
}

impl Security {
    /// A gate from its parts; `audit` `None` records nothing (tests, benchmarks).
    pub fn new(
        authn: Authenticator,
        authz: Authorizer,
        audit: Option<Arc<AuditLog>>,
        clock: SharedClock,
    ) -> Self {
        Security {
            authn,
            authz,
            audit,
            clock,
        }
    }

    /// Loads the configuration file `path`; the audit trail goes to `[audit] dir`, else to
    /// `default_audit_dir` (the server passes `<store>/audit`).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::BadInput`] naming the file and field at fault; an error
    /// opening the audit trail.
    pub fn load(path: &Path, default_audit_dir: &Path, clock: SharedClock) -> Result<Security> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let origin = path.display().to_string();
        let cfg = SecurityConfig::from_toml(&text, &origin)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Security::from_config(&cfg, base, &origin, default_audit_dir, clock)
    }

    /// Builds the gate from a parsed configuration; relative paths resolve against `base`.
    ///
    /// # Errors
    /// As [`Security::load`].
    pub fn from_config(
        cfg: &SecurityConfig,
        base: &Path,
        origin: &str,
        default_audit_dir: &Path,
        clock: SharedClock,
    ) -> Result<Security> {
        let policy = Policy::load(&base.join(&cfg.policy))?;
        let jwt = JwtVerifier::load(&cfg.jwt, base)?;
        let tokens = ApiTokens::new(&cfg.api_tokens, origin)?;
        let mtls = cfg
            .mtls
            .as_ref()
            .map(|m| MtlsMapper::new(m, origin))
            .transpose()?;
        let audit_cfg = cfg.audit.clone().unwrap_or(AuditConfig {
            dir: None,
            max_file_bytes: None,
            durability: None,
            flush_interval_ms: None,
        });
        let opts = audit_cfg.options(origin)?;
        let dir = audit_cfg
            .dir
            .map(|d| base.join(d))
            .unwrap_or_else(|| default_audit_dir.to_path_buf());
        let audit = AuditLog::open(&dir, clock.clone(), opts)?;
        Ok(Security::new(
            Authenticator::new(jwt, tokens, mtls),
            Authorizer::new(policy),
            Some(Arc::new(audit)),
            clock,
        ))
    }

    /// Whether any way of authenticating is configured (without one, the server must bind
    /// loopback only).
    pub fn authentication_configured(&self) -> bool {
        self.authn.is_configured()
    }

    /// The authorizer (to reload the policy or the care-team index).
    pub fn authorizer(&self) -> &Authorizer {
        &self.authz
    }

    /// The audit trail, if any.
    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// Authenticates `ctx`, authorizes `action` on `patients`, and records the decision in
    /// the audit trail (one record, outcome `ok` when allowed) before returning: the one
    /// call for a caller that has no request to finish afterwards.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] or [`Error::PermissionDenied`] when refused (and audited);
    /// an I/O error if the audit record cannot be written, in which case the request must
    /// not proceed (fail closed).
    pub fn check(
        &self,
        ctx: &RequestContext,
        action: Action,
        patients: &[String],
    ) -> Result<Principal> {
        let note = AuditNote::default();
        note.set_context(ctx);
        note.set_action(action);
        note.set_patients(patients);
        let now = self.clock.now();
        let decided = self.authn.authenticate(ctx, now).and_then(|p| {
            note.set_principal(&p);
            self.decide(&p, action, patients, now, &note).map(|()| p)
        });
        if let Err(e) = &decided {
            note.refused(Some(action), e);
        }
        let outcome = match &decided {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        self.record(note.entry(&ctx.rpc, ctx.peer, outcome))?;
        decided
    }

    /// The gate's half, for a call whose patients are not known before its handler decodes
    /// it. By [`route`]: `Public` → `Ok(None)` (the note is marked public: not audited);
    /// `Gate(action)` → the whole decision; `Handler(action)` → authentication and a check
    /// that some role may take the action at all (the handler's [`Security::authorize`]
    /// decides with the patients). An unknown RPC is refused. Records nothing: the decision
    /// goes into `note`, and whoever answers the call writes its one record
    /// ([`AuditNote::entry`]).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] or [`Error::PermissionDenied`] when refused.
    pub fn admit(&self, ctx: &RequestContext, note: &AuditNote) -> Result<Option<Principal>> {
        let route = route(&ctx.rpc);
        if route == Some(Route::Public) {
            note.set_public();
            return Ok(None);
        }
        note.set_context(ctx);
        let now = self.clock.now();
        let action = match route {
            Some(Route::Gate(a) | Route::Handler(a)) => a,
            Some(Route::Public) | None => Action::Admin,
        };
        let p = match self.authn.authenticate(ctx, now) {
            Ok(p) => p,
            Err(e) => {
                note.refused(Some(action), &e);
                return Err(e);
            }
        };
        note.set_principal(&p);
        let result = match route {
            None => Err(Error::PermissionDenied {
                reason: format!("{} is not a call Ward offers", ctx.rpc),
            }),
            Some(Route::Gate(a)) => self.decide(&p, a, &[], now, note),
            Some(Route::Handler(a)) => {
                let perms = self.authz.permissions_of(&p);
                if a.permissions().iter().any(|x| perms.contains(x)) {
                    note.set_action(a);
                    Ok(())
                } else {
                    let d = self.authz.authorize(&p, a, &[], now);
                    Err(Error::PermissionDenied { reason: d.reason })
                }
            }
            Some(Route::Public) => Ok(()),
        };
        match result {
            Ok(()) => Ok(Some(p)),
            Err(e) => {
                note.refused(Some(action), &e);
                Err(e)
            }
        }
    }

    /// The handler's half: authorizes an admitted `principal` for `action` on `patients`
    /// (care teams, identified or not) and puts the decision, the patients and what `ctx`
    /// names (feature set, datasets) into `note`. Pure: no I/O.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`].
    pub fn authorize(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        action: Action,
        patients: &[String],
        note: &AuditNote,
    ) -> Result<()> {
        note.set_context(ctx);
        note.set_principal(principal);
        let r = self.decide(principal, action, patients, self.clock.now(), note);
        if let Err(e) = &r {
            note.refused(Some(action), e);
        }
        r
    }

    /// The historical action `principal` gets: identified when a role grants
    /// `historical_identified`, de-identified when one grants only `historical_deidentified`,
    /// `None` otherwise.
    pub fn historical_action(&self, principal: &Principal) -> Option<Action> {
        let perms = self.authz.permissions_of(principal);
        if perms.contains(&Permission::HistoricalIdentified) {
            Some(Action::HistoricalIdentified)
        } else if perms.contains(&Permission::HistoricalDeidentified) {
            Some(Action::HistoricalDeidentified)
        } else {
            None
        }
    }

    fn decide(
        &self,
        p: &Principal,
        action: Action,
        patients: &[String],
        now: DateTime<Utc>,
        note: &AuditNote,
    ) -> Result<()> {
        note.set_patients(patients);
        let d = self.authz.authorize(p, action, patients, now);
        if d.allowed {
            note.allowed(action, d.reason);
            Ok(())
        } else {
            Err(Error::PermissionDenied { reason: d.reason })
        }
    }

    /// Appends `entry` to the audit trail (nothing without one).
    ///
    /// # Errors
    /// The audit write error: the request must then fail (fail closed).
    pub fn record(&self, entry: AuditEntry) -> Result<()> {
        match &self.audit {
            Some(log) => log.append(entry).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// What is known of one request for its one audit record, filled in as the request is
/// decided (the gate, the handler) and handled (the datasets and training set it used), and
/// turned into the record by [`AuditNote::entry`] when the request's outcome is known: the
/// one place a request's [`AuditEntry`] is built. Clones share the note.
#[derive(Debug, Clone, Default)]
pub struct AuditNote(Arc<Mutex<NoteState>>);

#[derive(Debug, Default)]
struct NoteState {
    public: bool,
    principal: Option<Principal>,
    subject: Option<String>,
    action: Option<Action>,
    allowed: Option<String>,
    denied: Option<String>,
    feature_set: Option<String>,
    datasets: Vec<String>,
    patients: Vec<String>,
    training_set: Option<String>,
}

/// How a request ended, for [`AuditNote::entry`].
#[derive(Debug, Clone, Copy)]
pub enum Finish<'a> {
    /// Answered.
    Ok,
    /// Failed with a status `code` (`not_found`, `permission_denied`, ...) and a message.
    Failed {
        /// The status code's name, snake case.
        code: &'a str,
        /// The message the caller got.
        message: &'a str,
    },
}

impl AuditNote {
    fn with<T>(&self, f: impl FnOnce(&mut NoteState) -> T) -> T {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// Marks the call public (health, reflection): not audited.
    pub fn set_public(&self) {
        self.with(|s| s.public = true);
    }

    /// Whether the call is public (no record).
    pub fn is_public(&self) -> bool {
        self.with(|s| s.public)
    }

    /// Who is calling.
    pub fn set_principal(&self, p: &Principal) {
        self.with(|s| {
            if s.principal.as_ref() != Some(p) {
                s.principal = Some(p.clone());
            }
        });
    }

    /// Who is calling, when a gate knows only a name (no [`Principal`]).
    pub fn set_subject(&self, subject: &str) {
        self.with(|s| s.subject = Some(subject.to_string()));
    }

    /// The principal recorded so far.
    pub fn principal(&self) -> Option<Principal> {
        self.with(|s| s.principal.clone())
    }

    /// The action the request is decided as (before a decision).
    pub fn set_action(&self, action: Action) {
        self.with(|s| s.action = Some(action));
    }

    /// The feature set and datasets `ctx` names (added to what is known).
    pub fn set_context(&self, ctx: &RequestContext) {
        self.with(|s| {
            if ctx.feature_set.is_some() {
                s.feature_set.clone_from(&ctx.feature_set);
            }
            for d in &ctx.datasets {
                if !s.datasets.contains(d) {
                    s.datasets.push(d.clone());
                }
            }
        });
    }

    /// The patients the request touches.
    pub fn set_patients(&self, patients: &[String]) {
        self.with(|s| s.patients = patients.to_vec());
    }

    /// Adds datasets the request read or wrote.
    pub fn add_datasets(&self, datasets: impl IntoIterator<Item = String>) {
        self.with(|s| {
            for d in datasets {
                if !s.datasets.contains(&d) {
                    s.datasets.push(d);
                }
            }
        });
    }

    /// The training set a historical lookup made (the hash the caller gets).
    pub fn set_training_set(&self, hash: impl Into<String>) {
        self.with(|s| s.training_set = Some(hash.into()));
    }

    /// Records an allowed decision (a later decision replaces it).
    pub fn allowed(&self, action: Action, reason: String) {
        self.with(|s| {
            s.action = Some(action);
            s.allowed = Some(reason);
            s.denied = None;
        });
    }

    /// Records a refusal (`e` is its error).
    pub fn refused(&self, action: Option<Action>, e: &Error) {
        self.with(|s| {
            if action.is_some() {
                s.action = action;
            }
            s.denied = Some(e.to_string());
        });
    }

    /// The record of the request: who (the principal, its issuer and key id; `None` when
    /// authentication failed), from where (`peer`), the call, the decision, what it touched
    /// and how it ended. A request that failed with `permission_denied` or `unauthenticated`
    /// without a recorded decision is recorded as denied.
    pub fn entry(
        &self,
        rpc: &str,
        peer: Option<SocketAddr>,
        finish: std::result::Result<(), &Error>,
    ) -> AuditEntry {
        let (code, message) = match finish {
            Ok(()) => (None, None),
            Err(e) => (Some(status_name(e).to_string()), Some(e.to_string())),
        };
        let f = match (&code, &message) {
            (Some(c), Some(m)) => Finish::Failed {
                code: c,
                message: m,
            },
            _ => Finish::Ok,
        };
        self.entry_finished(rpc, peer, f)
    }

    /// [`AuditNote::entry`] for a request whose outcome is a status code name (as the
    /// server's gate sees the response).
    pub fn entry_finished(
        &self,
        rpc: &str,
        peer: Option<SocketAddr>,
        finish: Finish<'_>,
    ) -> AuditEntry {
        self.with(|s| {
            let (decision, reason) = match (&s.denied, &s.allowed, finish) {
                (Some(r), _, _) => (Outcome::Denied, r.clone()),
                (None, _, Finish::Failed { code, message })
                    if code == "permission_denied" || code == "unauthenticated" =>
                {
                    (Outcome::Denied, message.to_string())
                }
                (None, Some(r), _) => (Outcome::Allowed, r.clone()),
                (None, None, _) => (
                    Outcome::Allowed,
                    "admitted by the gate (no authorization configured)".to_string(),
                ),
            };
            let mut e = AuditEntry::new(rpc, decision, reason);
            if let Some(p) = &s.principal {
                e.principal = Some(p.subject.clone());
                e.auth = Some(p.source.as_str().to_string());
                e.roles = p.roles.iter().cloned().collect();
                e.issuer.clone_from(&p.issuer);
                e.key_id.clone_from(&p.key_id);
            } else {
                e.principal.clone_from(&s.subject);
            }
            e.client = peer.map(|a| a.to_string());
            e.action = s.action.map(|a| a.as_str().to_string());
            e.feature_set.clone_from(&s.feature_set);
            e.datasets.clone_from(&s.datasets);
            e.patients = if s.action.is_some_and(Action::bulk_patients) {
                Patients::bulk(&s.patients)
            } else {
                Patients::Ids(s.patients.clone())
            };
            e.training_set.clone_from(&s.training_set);
            match finish {
                Finish::Ok => e.outcome = Some("ok".into()),
                Finish::Failed { code, message } => {
                    e.outcome = Some(code.to_string());
                    e.error = Some(message.to_string());
                }
            }
            e
        })
    }
}

/// The gRPC status name (snake case) an error maps to (through the one table,
/// [`crate::service::code`]), as audit records name outcomes.
fn status_name(e: &Error) -> &'static str {
    crate::service::gate::code_name(crate::service::code(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curated::{CareTeamMember, RowMeta};

    fn principal(roles: &[&str]) -> Principal {
        Principal {
            subject: "dr-a".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            source: Source::ApiToken,
            issuer: None,
            key_id: None,
            clinician_id: Some("dr-a".into()),
            expires_at: None,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn authorizer() -> Authorizer {
        let policy = Policy::default()
            .grant("clinician", &[Permission::OnlineLookupCareTeam])
            .grant("model-service", &[Permission::OnlineLookup])
            .grant("data-scientist", &[Permission::HistoricalDeidentified])
            .grant("steward", &[Permission::HistoricalIdentified]);
        let a = Authorizer::new(policy);
        a.set_care_team(CareTeamIndex::from_members(&[CareTeamMember {
            patient_id: "p1".into(),
            clinician_id: "dr-a".into(),
            role: None,
            valid_from: t("2026-01-01T00:00:00Z"),
            valid_to: None,
            meta: RowMeta {
                source_system: "t".into(),
                source_id: "1".into(),
                known_at: t("2026-01-01T00:00:00Z"),
                retracted_at: None,
            },
        }]));
        a
    }

    #[test]
    fn permission_table() {
        let a = authorizer();
        let now = t("2026-02-01T00:00:00Z");
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], Action, &[&str], bool)] = &[
            (&["clinician"], Action::OnlineLookup, &["p1"], true),
            (&["clinician"], Action::OnlineLookup, &["p2"], false),
            (&["clinician"], Action::OnlineLookup, &["p1", "p2"], false),
            (&["clinician"], Action::HistoricalDeidentified, &[], false),
            (&["model-service"], Action::OnlineLookup, &["p2"], true),
            (
                &["model-service"],
                Action::HistoricalDeidentified,
                &[],
                false,
            ),
            (
                &["data-scientist"],
                Action::HistoricalDeidentified,
                &["p2"],
                true,
            ),
            (
                &["data-scientist"],
                Action::HistoricalIdentified,
                &["p2"],
                false,
            ),
            (&["steward"], Action::HistoricalIdentified, &["p2"], true),
            (&["steward"], Action::HistoricalDeidentified, &["p2"], true),
            (&["steward"], Action::Ingest, &[], false),
            (&[], Action::DatasetsRead, &[], false),
            (&["unknown-role"], Action::DatasetsRead, &[], false),
        ];
        for (roles, action, patients, want) in cases {
            let d = a.authorize(&principal(roles), *action, &ids(patients), now);
            assert_eq!(
                d.allowed, *want,
                "{roles:?} {action} {patients:?}: {}",
                d.reason
            );
        }
        // Before the assignment started, p1 is not on the team either.
        let d = a.authorize(
            &principal(&["clinician"]),
            Action::OnlineLookup,
            &ids(&["p1"]),
            t("2025-12-01T00:00:00Z"),
        );
        assert!(!d.allowed);
    }

    #[test]
    fn care_team_denials_do_not_reveal_the_patient() {
        let a = authorizer();
        let now = t("2026-02-01T00:00:00Z");
        let p = principal(&["clinician"]);
        // "p-exists-elsewhere" could be a real patient, "zzz" not: same message.
        let d1 = a.authorize(
            &p,
            Action::OnlineLookup,
            &["p-exists-elsewhere".into()],
            now,
        );
        let d2 = a.authorize(&p, Action::OnlineLookup, &["zzz".into()], now);
        assert_eq!(d1.reason, d2.reason);
        assert!(!d1.reason.contains("p-exists-elsewhere"));
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
