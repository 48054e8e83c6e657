//! The security wiring of the server: the [`SecureGate`] over [`crate::auth::Security`]
//! (authentication, the permission table of [`crate::auth::route`], the audit trail), the
//! care-team index loaded from the store, and the de-identification policy and key for
//! historical lookups (`docs/security.md`, "The server").

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::audit::{AuditEntry, Outcome, Patients};
use crate::auth::{Action, CareTeamIndex, Principal, RequestContext, Security};
use crate::clock::SharedClock;
use crate::deid::{DeidKey, DeidPolicy};
use crate::error::{Error, Result};
use crate::store::{Kind, ListFilter, Store};

use super::config::{DeidConfig, ServeConfig};
use super::gate::{Admission, Call, Gate};

/// The name of the curated table care-team checks read.
pub const CARE_TEAM_TABLE: &str = "care_team";

/// The de-identification policy and key of a server.
pub struct Deid {
    /// The policy.
    pub policy: DeidPolicy,
    /// The key (never printed).
    pub key: DeidKey,
}

impl fmt::Debug for Deid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deid")
            .field("policy", &self.policy.name)
            .field("key_id", &self.key.key_id())
            .finish()
    }
}

impl Deid {
    /// Loads `[deid]`; relative paths resolve against `base`.
    ///
    /// # Errors
    /// Errors reading the policy or the key, naming the file or variable.
    pub fn load(cfg: &DeidConfig, base: &Path) -> Result<Deid> {
        let policy = match &cfg.policy {
            Some(p) => DeidPolicy::load(&base.join(p))?,
            None => DeidPolicy::safe_harbor(),
        };
        let key = match (&cfg.key_file, &cfg.key_env) {
            (Some(f), None) => DeidKey::from_file(&base.join(f))?,
            (None, Some(v)) => DeidKey::from_env(v)?,
            _ => {
                return Err(Error::invalid(
                    "[deid]",
                    "give exactly one of key_file and key_env",
                ))
            }
        };
        Ok(Deid { policy, key })
    }
}

/// What the handlers need to authorize patient-level access.
#[derive(Debug)]
pub struct Secured {
    /// Authentication, authorization and audit.
    pub security: Arc<Security>,
    /// De-identification for historical lookups (`None`: principals allowed only
    /// de-identified data get `FAILED_PRECONDITION`).
    pub deid: Option<Deid>,
}

impl Secured {
    /// Builds the security of a server from `cfg` (`None` when `[auth]` is absent). The
    /// audit trail goes to `[audit] dir`, else `<store>/audit`.
    ///
    /// # Errors
    /// Errors loading the policy, the JWKS files, the tokens, the de-identification key, or
    /// opening the audit trail, each naming the file or field.
    pub fn from_config(
        cfg: &ServeConfig,
        store_root: &Path,
        clock: SharedClock,
    ) -> Result<Option<Secured>> {
        let Some(auth) = &cfg.auth else {
            return Ok(None);
        };
        let mut auth = auth.clone();
        if let Some(a) = &cfg.audit {
            auth.audit = Some(a.clone());
        }
        let security = Security::from_config(
            &auth,
            &cfg.base,
            &cfg.origin,
            &store_root.join("audit"),
            clock,
        )?;
        let deid = cfg
            .deid
            .as_ref()
            .map(|d| Deid::load(d, &cfg.base))
            .transpose()?;
        Ok(Some(Secured {
            security: Arc::new(security),
            deid,
        }))
    }

    /// The gate over this security.
    pub fn gate(&self) -> SecureGate {
        SecureGate {
            security: self.security.clone(),
        }
    }
}

/// Loads the newest stored `care_team` version into `security`'s care-team index; without
/// one, the index stays empty (clinicians see no patient). Returns the version's hash.
///
/// # Errors
/// Store errors; [`Error::BadInput`] if the stored table does not have the curated
/// `care_team` columns.
pub async fn load_care_team(store: &Store, security: &Security) -> Result<Option<String>> {
    let filter = ListFilter {
        kind: Some(Kind::Curated),
        name: Some(CARE_TEAM_TABLE.to_string()),
    };
    let newest = store
        .list(&filter)?
        .into_iter()
        .max_by(|a, b| a.created_at.cmp(&b.created_at));
    let Some(m) = newest else {
        return Ok(None);
    };
    let (_, batches) = store.read(&m.hash).await?;
    let index = CareTeamIndex::from_batches(&batches)?;
    security.authorizer().set_care_team(index);
    Ok(Some(m.hash.to_string()))
}

/// The gate over Ward's security: every call is authenticated (bearer JWT or API token from
/// `authorization`, else the client certificate), mapped to its action by the one table
/// [`crate::auth::route`] (unknown calls refused; health and reflection public), decided,
/// and audited; calls whose patients the handler must see are authorized again there with
/// the patients (`authorize`).
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
        let principal = self.security.admit(&ctx)?;
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

/// The handler's decision: authorizes `action` on `patients` for the admitted principal and
/// audits it (with the feature set and datasets in `ctx`); from a blocking thread when the
/// audit append waits for the disk (`durability = "sync"`).
///
/// # Errors
/// [`Error::PermissionDenied`] (audited); an audit write error (fail closed).
pub(crate) async fn authorize(
    security: &Arc<Security>,
    principal: Arc<Principal>,
    ctx: RequestContext,
    action: Action,
    patients: Vec<String>,
) -> Result<()> {
    if !security.audit().is_some_and(|log| log.append_blocks()) {
        // The audit append only writes to the operating system: no need to leave the
        // executor (a blocking-pool hop costs more than the write).
        return security.authorize(&principal, &ctx, action, &patients);
    }
    let security = security.clone();
    tokio::task::spawn_blocking(move || security.authorize(&principal, &ctx, action, &patients))
        .await
        .map_err(|e| Error::Internal(format!("authorization task failed: {e}")))?
}

/// Records a refusal the policy did not make (e.g. a de-identified read on a server without
/// `[deid]`) in the audit trail and returns `e`, or the audit error (fail closed).
pub(crate) async fn refuse(
    security: &Arc<Security>,
    principal: &Principal,
    ctx: RequestContext,
    action: Action,
    patients: &[String],
    e: Error,
) -> Error {
    let Some(log) = security.audit().cloned() else {
        return e;
    };
    let entry = AuditEntry {
        principal: Some(principal.subject.clone()),
        auth: Some(principal.source.as_str().to_string()),
        roles: principal.roles.iter().cloned().collect(),
        client: ctx.peer.map(|a| a.to_string()),
        rpc: ctx.rpc.clone(),
        action: Some(action.as_str().to_string()),
        feature_set: ctx.feature_set.clone(),
        datasets: ctx.datasets.clone(),
        patients: if action.bulk_patients() {
            Patients::bulk(patients)
        } else {
            Patients::Ids(patients.to_vec())
        },
        decision: Outcome::Denied,
        reason: e.to_string(),
    };
    if !log.append_blocks() {
        return match log.append(entry) {
            Ok(_) => e,
            Err(audit) => audit,
        };
    }
    match tokio::task::spawn_blocking(move || log.append(entry)).await {
        Ok(Ok(_)) => e,
        Ok(Err(audit)) => audit,
        Err(join) => Error::Internal(format!("audit task failed: {join}")),
    }
}
