//! The door of the security wing: the gate every RPC and Flight call passes.
//!
//! - [`route`]: the one table from an RPC's full name to how the gate treats it (public,
//!   decided at the gate, or decided by the handler with the patients) and the [`Action`]
//!   it needs; `docs/security.md` has the table.
//! - [`Security`]: authentication ([`super::auth`]), authorization ([`super::authorize`])
//!   and the audit trail ([`super::audit`]) in one object. [`Security::admit`] authenticates
//!   the request and authorizes what it can before the handler runs,
//!   [`Security::authorize`] decides with the patients once the handler knows them; both put
//!   the decision into the request's [`AuditNote`], from which the server writes the
//!   request's one audit record once its outcome is known. [`Security::check`] does all
//!   three for a caller with nothing to finish afterwards.
//! - [`Gate`]: what the server's tower layer ([`crate::service::GateLayer`], transport glue)
//!   asks for each [`Call`]; [`AllowAll`] admits everyone anonymously (a loopback server
//!   without `[auth]`), [`SecureGate`] asks [`Security`]. The [`Admission`] goes into the
//!   request's extensions, where a handler finds it ([`principal`], [`context`], [`note`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::audit::{AuditEntry, AuditLog};
use super::auth::{ApiTokens, Authenticator, JwtVerifier, MtlsMapper, Principal, RequestContext};
use super::authorize::Authorizer;
use super::config::{AuditConfig, SecurityConfig};
use super::note::AuditNote;
use super::policy::{Action, Permission, Policy};
use crate::clock::SharedClock;
use crate::error::{Error, Result};

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
        // Model cards: registering writes a version (as tagging does).
        ("ward.v1.Models", "RegisterModel") => Route::Gate(Action::DatasetsWrite),
        ("ward.v1.Models", "ListModels") => Route::Gate(Action::DatasetsRead),
        // The audit trail: who looked at what (privacy officers, `audit_read`).
        ("ward.v1.Audit", "QueryAudit") => Route::Gate(Action::AuditRead),
        // Drift answers counts per bin; the skew check replays identified lookups and names
        // the patients whose values differ (docs/monitoring.md).
        ("ward.v1.Monitoring", "Drift") => Route::Gate(Action::DatasetsRead),
        ("ward.v1.Monitoring", "Skew") => Route::Gate(Action::HistoricalIdentified),
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
        Security::from_config_with_keys(cfg, base, origin, default_audit_dir, clock, None)
    }

    /// [`Security::from_config`] whose audit trail is an encrypted store's, sealed under
    /// `keys` ([`AuditLog::open_with_keys`]).
    ///
    /// # Errors
    /// As [`Security::load`].
    pub fn from_config_with_keys(
        cfg: &SecurityConfig,
        base: &Path,
        origin: &str,
        default_audit_dir: &Path,
        clock: SharedClock,
        keys: Option<crate::security::keyring::Keyring>,
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
        let audit = AuditLog::open_with_keys(&dir, clock.clone(), opts, keys)?;
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

    /// Authenticates `ctx` and authorizes `action` (on no patient list) for a request that
    /// does not pass the gRPC gate (the HTTP listener of live feeds, `docs/live.md`), putting
    /// the principal and the decision into `note`. Records nothing: the caller writes the
    /// request's one record once its outcome is known ([`AuditNote::entry`]).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] or [`Error::PermissionDenied`] when refused (also in
    /// `note`).
    pub fn admit_action(
        &self,
        ctx: &RequestContext,
        action: Action,
        note: &AuditNote,
    ) -> Result<Principal> {
        note.set_context(ctx);
        note.set_action(action);
        let now = self.clock.now();
        let decided = self.authn.authenticate(ctx, now).and_then(|p| {
            note.set_principal(&p);
            self.decide(&p, action, &[], now, note).map(|()| p)
        });
        if let Err(e) = &decided {
            note.refused(Some(action), e);
        }
        decided
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
    /// The call's audit note: a gate puts the principal and its decision here.
    pub note: &'a AuditNote,
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
    pub identity: Option<Arc<crate::security::auth::Principal>>,
}

/// Decides whether a call may run. Implementations must be cheap (they run on every call)
/// and must never panic.
pub trait Gate: Send + Sync + fmt::Debug + 'static {
    /// Admits or refuses `call`.
    ///
    /// # Errors
    /// The refusal, answered to the caller through [`crate::service::to_status`]
    /// (`Unauthenticated`, `PermissionDenied`, ...).
    fn admit(&self, call: &Call<'_>) -> Result<Admission>;
}

/// The default gate: admits every call, anonymously.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Gate for AllowAll {
    fn admit(&self, call: &Call<'_>) -> Result<Admission> {
        match route(call.rpc) {
            Some(Route::Public) => call.note.set_public(),
            Some(Route::Gate(a) | Route::Handler(a)) => {
                call.note.set_principal(&Principal::anonymous(call.peer));
                call.note.set_action(a);
            }
            None => call.note.set_principal(&Principal::anonymous(call.peer)),
        }
        Ok(Admission {
            principal: None,
            rpc: call.rpc.to_string(),
            peer: call.peer,
            identity: None,
        })
    }
}

/// The gate over Ward's security: every call is authenticated (bearer JWT or API token from
/// `authorization`, else the client certificate), mapped to its action by the one table
/// [`route`] (unknown calls refused; health and reflection public) and
/// decided; calls whose patients the handler must see are authorized again there with the
/// patients (`authorize`). Each decision goes into the call's [`AuditNote`], from which the
/// gate layer writes the call's one audit record ([`crate::service::GateLayer`]).
#[derive(Debug, Clone)]
pub struct SecureGate {
    security: Arc<Security>,
}

impl SecureGate {
    /// A gate over `security`.
    pub fn new(security: Arc<Security>) -> SecureGate {
        SecureGate { security }
    }
}

impl Gate for SecureGate {
    fn admit(&self, call: &Call<'_>) -> Result<Admission> {
        let mut ctx = RequestContext::from_headers(call.rpc, call.metadata, call.peer);
        if let Some(cert) = call.client_cert {
            ctx = ctx.with_client_cert(cert.to_vec());
        }
        let principal = self.security.admit(&ctx, call.note)?;
        Ok(Admission {
            principal: principal.as_ref().map(|p| p.subject.clone()),
            rpc: call.rpc.to_string(),
            peer: call.peer,
            identity: principal.map(Arc::new),
        })
    }
}

/// The request context of an admitted call, for the handler's decision.
pub(crate) fn context(admission: &Admission) -> RequestContext {
    let mut ctx = RequestContext::new(admission.rpc.clone());
    ctx.peer = admission.peer;
    ctx
}

/// The principal of an admitted call; a call the secure gate admitted always has one
/// (handler routes are never public).
///
/// # Errors
/// [`Error::Unauthenticated`] when the admission has none.
pub(crate) fn principal(admission: Option<&Admission>) -> Result<(Arc<Principal>, &Admission)> {
    let a = admission.ok_or_else(|| Error::Unauthenticated {
        reason: "the call was not admitted by the gate".into(),
    })?;
    let p = a.identity.clone().ok_or_else(|| Error::Unauthenticated {
        reason: "no authenticated principal".into(),
    })?;
    Ok((p, a))
}

/// The call's audit note, from the request extensions (the gate layer puts it there); a
/// detached one (recorded nowhere) for a handler called without the layer.
pub(crate) fn note(ext: &http::Extensions) -> AuditNote {
    ext.get::<AuditNote>().cloned().unwrap_or_default()
}

/// A refusal the policy did not make (e.g. a de-identified read on a server without
/// `[deid]`): noted as denied, and returned.
pub(crate) fn refuse(note: &AuditNote, action: Action, e: Error) -> Error {
    note.refused(Some(action), &e);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_names_split() {
        let h = http::HeaderMap::new();
        let note = AuditNote::default();
        let c = Call {
            rpc: "/ward.v1.Datasets/GetDataset",
            metadata: &h,
            peer: None,
            client_cert: None,
            note: &note,
        };
        assert_eq!(c.service(), "ward.v1.Datasets");
        assert_eq!(c.method(), "GetDataset");
        let a = AllowAll.admit(&c).unwrap();
        assert_eq!(a.rpc, "/ward.v1.Datasets/GetDataset");
        assert_eq!(a.principal, None);
        // Still a principal in the audit record: the anonymous loopback caller.
        let e = note.entry(c.rpc, Some("127.0.0.1:4000".parse().unwrap()), Ok(()));
        assert_eq!(e.principal.as_deref(), Some("anonymous@loopback"));
        assert_eq!(e.auth.as_deref(), Some("none"));
        assert_eq!(e.action.as_deref(), Some("datasets_read"));
        assert_eq!(e.outcome.as_deref(), Some("ok"));
    }
}
