//! The security wiring of the server: the security wing's gate
//! ([`crate::security::gate::SecureGate`] over [`crate::security::gate::Security`]) built from
//! the server's configuration, the care-team index loaded from the store and reloaded with
//! the policy, and the de-identification policy and key for historical lookups
//! (`docs/security.md`, "The server"). Who may do what is decided in the wing; this file only
//! loads and reloads what the wing decides with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::security::care_team::CareTeamIndex;
use crate::security::deid::{DeidKey, DeidPolicy};
use crate::security::gate::{SecureGate, Security};
use crate::store::{Store, VersionRef};

use super::config::{DeidConfig, ServeConfig};

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
            .field("profile", &self.policy.name())
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
    /// What a running server reloads ([`Secured::reload`]).
    reload: Reload,
}

/// The policy file, the care-team version in force, and how often to look for changes.
#[derive(Debug)]
struct Reload {
    every: std::time::Duration,
    policy: PathBuf,
    /// BLAKE3 of the policy file as last loaded (or last found unloadable).
    policy_digest: Mutex<Option<[u8; 32]>>,
    /// The `care_team` version in the index.
    care_team: Mutex<Option<String>>,
}

/// What one [`Secured::reload`] swapped in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The policy file changed and its new policy is in force.
    pub policy: bool,
    /// The new `care_team` version now in the care-team index.
    pub care_team: Option<String>,
}

fn file_digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|b| *blake3::hash(&b).as_bytes())
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
        Secured::from_config_with_keys(cfg, store_root, clock, None)
    }

    /// [`Secured::from_config`] for an encrypted store: its audit trail is sealed under
    /// `keys` (the store's, [`crate::store::Store::encryption`]).
    ///
    /// # Errors
    /// As [`Secured::from_config`].
    pub fn from_config_with_keys(
        cfg: &ServeConfig,
        store_root: &Path,
        clock: SharedClock,
        keys: Option<crate::security::keyring::Keyring>,
    ) -> Result<Option<Secured>> {
        let Some(auth) = &cfg.auth else {
            return Ok(None);
        };
        let mut auth = auth.clone();
        if let Some(a) = &cfg.audit {
            auth.audit = Some(a.clone());
        }
        let policy = cfg.base.join(&auth.policy);
        let policy_digest = file_digest(&policy);
        let security = Security::from_config_with_keys(
            &auth,
            &cfg.base,
            &cfg.origin,
            &store_root.join("audit"),
            clock,
            keys,
        )?;
        let deid = cfg
            .deid
            .as_ref()
            .map(|d| Deid::load(d, &cfg.base))
            .transpose()?;
        Ok(Some(Secured {
            security: Arc::new(security),
            deid,
            reload: Reload {
                every: cfg.reload.interval(),
                policy,
                policy_digest: Mutex::new(policy_digest),
                care_team: Mutex::new(None),
            },
        }))
    }

    /// How often a running server calls [`Secured::reload`] (`[reload] interval_secs`).
    pub fn reload_interval(&self) -> std::time::Duration {
        self.reload.every
    }

    /// Loads the head of `care_team` into the care-team index ([`load_care_team`]) and
    /// remembers it, so [`Secured::reload`] swaps only a newer one in.
    ///
    /// # Errors
    /// As [`load_care_team`].
    pub async fn load_care_team(&self, store: &Store) -> Result<Option<String>> {
        let loaded = load_care_team(store, &self.security).await?;
        if let Ok(mut c) = self.reload.care_team.lock() {
            c.clone_from(&loaded);
        }
        Ok(loaded)
    }

    /// Swaps in what changed since it was loaded: the policy file (when its content
    /// changed), the head of `care_team` (a CLI `ward ingest`, another server), and asks the
    /// JWT verifiers to check their JWKS files ([`crate::security::auth::jwt::request_jwks_check`]:
    /// the next verification reloads a changed one). Something that does not load (a policy
    /// being edited, a table being written) is logged and the current one kept; it is tried
    /// again when it changes.
    pub async fn reload(&self, store: &Store) -> Reloaded {
        crate::security::auth::jwt::request_jwks_check();
        let mut out = Reloaded::default();
        let now = file_digest(&self.reload.policy);
        let before = self.reload.policy_digest.lock().map(|d| *d).unwrap_or(None);
        if now != before {
            match crate::security::policy::Policy::load(&self.reload.policy) {
                Ok(p) => {
                    self.security.authorizer().set_policy(p);
                    tracing::info!(policy = %self.reload.policy.display(), "policy changed: reloaded");
                    out.policy = true;
                }
                Err(e) => {
                    tracing::warn!("policy changed but does not load, keeping the current one: {e}")
                }
            }
            if let Ok(mut d) = self.reload.policy_digest.lock() {
                *d = now;
            }
        }
        let head = match store.resolve(&VersionRef::Latest(CARE_TEAM_TABLE.to_string())) {
            Ok(m) => Some(m.hash.to_string()),
            Err(Error::NotFound { .. }) => None,
            Err(e) => {
                tracing::warn!("care_team not checked for changes: {e}");
                return out;
            }
        };
        let current = self
            .reload
            .care_team
            .lock()
            .map(|c| c.clone())
            .unwrap_or(None);
        if head.is_some() && head != current {
            match self.load_care_team(store).await {
                Ok(loaded) => {
                    tracing::info!(version = ?loaded, "care_team changed: care-team index reloaded");
                    out.care_team = loaded;
                }
                Err(e) => tracing::warn!(
                    "care_team changed but does not load, keeping the current index: {e}"
                ),
            }
        }
        out
    }

    /// The gate over this security.
    pub fn gate(&self) -> SecureGate {
        SecureGate::new(self.security.clone())
    }
}

/// Loads the newest stored `care_team` version into `security`'s care-team index; without
/// one, the index stays empty (clinicians see no patient). Returns the version's hash.
///
/// # Errors
/// Store errors; [`Error::BadInput`] if the stored table does not have the curated
/// `care_team` columns.
pub async fn load_care_team(store: &Store, security: &Security) -> Result<Option<String>> {
    // The one name-resolution rule: the head of `care_team`.
    let m = match store.resolve(&VersionRef::Latest(CARE_TEAM_TABLE.to_string())) {
        Ok(m) => m,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (_, batches) = store.read(&m.hash).await?;
    let index = CareTeamIndex::from_batches(&batches)?;
    security.authorizer().set_care_team(index);
    Ok(Some(m.hash.to_string()))
}

/// Runs [`Secured::reload`] every [`Secured::reload_interval`] and at once on SIGHUP, until
/// the task is aborted. The SIGHUP handler is installed before this returns, so a SIGHUP
/// sent after the server announced itself is not lost.
pub fn spawn_reload(secured: Arc<Secured>, store: Store) -> tokio::task::JoinHandle<()> {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP ({e}); reloading on the interval only");
            None
        }
    };
    let every = secured.reload_interval();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            #[cfg(unix)]
            {
                let hup = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => {}
                    Some(()) = hup => tracing::info!("SIGHUP: reloading the policy, JWKS and care teams"),
                }
            }
            #[cfg(not(unix))]
            tick.tick().await;
            secured.reload(&store).await;
        }
    })
}
