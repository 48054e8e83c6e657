//! Encryption at rest wired into the store (`ward init --encrypt`, docs/encryption.md).
//!
//! An encrypted store says so in its marker (`ward-store.json`, which stays plaintext: it
//! must be readable before any key is):
//!
//! ```json
//! {"ward_store_format": 2, "created_by": "...",
//!  "encryption": {"format": 1, "algorithm": "AES-256-GCM",
//!                 "key_id": "5f0c...e1", "provider": "file:/etc/ward/ward.key"}}
//! ```
//!
//! `key_id` is the fingerprint of the key-encryption key (KEK) and `provider` where it is
//! fetched from (a reference, never the key). Opening the store loads the KEK from
//! [`KEY_PROVIDER_VAR`] if set, else from the marker's provider, and compares its id with the
//! marker's before anything else is read: a wrong key fails at once, naming both ids and the
//! provider; a missing one names the provider.
//!
//! From then on every object of the store is in the encrypted format of
//! [`super::crypt`]: the Lance files of every version (written and read through
//! [`LanceEncryption`], with `file-object-store://` URIs for a local directory), the version
//! manifests and head entries (sealed with [`super::crypt::seal_bytes`] where a local store
//! writes files itself, through [`super::crypt::EncryptedStore`] in object storage). Raw
//! input and quality reports are versions, so they are covered. The audit trail and the live
//! feeds' write-ahead logs are not (docs/encryption.md says why and what protects them).

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::crypt::{self, LanceEncryption};
use crate::error::{Error, Result};
use crate::security::keyring::{KeyProvider, Keyring};

/// The variable that names the key provider of an encrypted store, overriding the one its
/// marker records (for example when the key file is mounted elsewhere on a server).
pub const KEY_PROVIDER_VAR: &str = "WARD_KEY_PROVIDER";

/// The `encryption` entry of the store marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerEncryption {
    /// The format of the encrypted objects ([`crypt::FORMAT_VERSION`]).
    pub format: u16,
    /// The cipher, for people reading the marker.
    #[serde(default)]
    pub algorithm: String,
    /// The id (hex) of the KEK that wraps the data keys.
    pub key_id: String,
    /// Where the KEK comes from, as given to `ward init --encrypt` (file paths made
    /// absolute).
    pub provider: String,
}

impl MarkerEncryption {
    /// The marker entry of a store encrypted under the key `provider` gives.
    ///
    /// # Errors
    /// The provider's error (a missing key names the provider).
    pub fn for_provider(provider: &KeyProvider) -> Result<MarkerEncryption> {
        let provider = absolute(provider)?;
        let kek = provider.load()?;
        Ok(MarkerEncryption {
            format: crypt::FORMAT_VERSION,
            algorithm: "AES-256-GCM".into(),
            key_id: kek.id().to_string(),
            provider: provider.to_string(),
        })
    }
}

/// A `file:` provider with its path made absolute (the marker outlives the directory `ward
/// init` ran in).
fn absolute(provider: &KeyProvider) -> Result<KeyProvider> {
    match provider {
        KeyProvider::File(p) => Ok(KeyProvider::File(
            std::path::absolute(p).map_err(|e| Error::io(p, e))?,
        )),
        other => Ok(other.clone()),
    }
}

/// The key provider named by [`KEY_PROVIDER_VAR`], if set.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the variable when it is not a provider.
pub fn provider_from_env() -> Result<Option<KeyProvider>> {
    match std::env::var(KEY_PROVIDER_VAR) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<KeyProvider>()
            .map(Some)
            .map_err(|e| Error::invalid(KEY_PROVIDER_VAR, e.to_string())),
        _ => Ok(None),
    }
}

/// The keys of an open encrypted store.
#[derive(Clone)]
pub struct AtRest {
    pub(crate) keyring: Keyring,
    pub(crate) lance: Arc<LanceEncryption>,
    pub(crate) marker: MarkerEncryption,
    /// The provider the key was loaded from.
    pub(crate) provider: KeyProvider,
}

impl std::fmt::Debug for AtRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtRest")
            .field("key_id", &self.marker.key_id)
            .field("provider", &self.provider.to_string())
            .finish_non_exhaustive()
    }
}

impl AtRest {
    /// Loads the key of the store at `location` whose marker says `marker`: from
    /// [`KEY_PROVIDER_VAR`] if set, else from the marker's provider; checks its id.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] naming the store, the key id it needs and the provider
    /// when the key is missing or is not the store's.
    pub fn open(location: &Path, marker: MarkerEncryption) -> Result<AtRest> {
        let store = location.display().to_string();
        if marker.format != crypt::FORMAT_VERSION {
            return Err(Error::Store {
                path: location.to_path_buf(),
                reason: format!(
                    "encrypted in format {}, which this Ward ({}) does not read",
                    marker.format,
                    crate::VERSION
                ),
            });
        }
        let (provider, from) = match provider_from_env()? {
            Some(p) => (p, KEY_PROVIDER_VAR.to_string()),
            None => (
                marker
                    .provider
                    .parse::<KeyProvider>()
                    .map_err(|e| Error::Store {
                        path: location.join(super::MARKER),
                        reason: format!("the encryption key provider: {e}"),
                    })?,
                "the store marker".to_string(),
            ),
        };
        let keyring = Keyring::load(&provider, &[]).map_err(|e| Error::FailedPrecondition {
            what: format!("encrypted store {store}"),
            reason: format!(
                "cannot load its key (key id {}, provider {provider} from {from}): {e}",
                marker.key_id
            ),
        })?;
        let have = keyring.current_id().to_string();
        if have != marker.key_id {
            return Err(Error::FailedPrecondition {
                what: format!("encrypted store {store}"),
                reason: format!(
                    "wrong key: the store is encrypted under key id {} (provider {} in its \
                     marker); the key provider {provider} (from {from}) gives key id {have}",
                    marker.key_id, marker.provider
                ),
            });
        }
        Ok(AtRest {
            lance: LanceEncryption::new(keyring.clone()),
            keyring,
            marker,
            provider,
        })
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The marker's entry (key id and provider).
    pub fn marker(&self) -> &MarkerEncryption {
        &self.marker
    }

    /// The provider the key was loaded from.
    pub fn provider(&self) -> &KeyProvider {
        &self.provider
    }
}

/// Seals `plain` when `keys` is given (a store's small object), else gives it back.
pub(crate) fn maybe_seal(keys: Option<&Keyring>, plain: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    match keys {
        None => Ok(plain),
        Some(k) => {
            crypt::seal_bytes(k, &plain, &path.to_string_lossy()).map_err(|e| Error::Store {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    }
}

/// Opens `stored` when `keys` is given, else gives it back.
pub(crate) fn maybe_open(keys: Option<&Keyring>, stored: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    match keys {
        None => Ok(stored),
        Some(k) => {
            crypt::open_bytes(k, &stored, &path.to_string_lossy()).map_err(|e| Error::Store {
                path: path.to_path_buf(),
                reason: format!("encrypted store: {e}"),
            })
        }
    }
}

/// What `ward key rotate` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RotateReport {
    /// The key id before.
    pub from_key_id: String,
    /// The key id after.
    pub to_key_id: String,
    /// The provider the marker now names.
    pub provider: String,
    /// Objects whose data key was rewrapped (header rewritten, data untouched).
    pub rewrapped: usize,
    /// Objects already under the new key (an earlier, interrupted rotation).
    pub already_current: u64,
    /// Objects left alone because they are not encrypted (the marker), by path.
    pub not_encrypted: Vec<String>,
}

impl super::Store {
    /// `ward key rotate`: moves every object of this encrypted store to the key `new` gives
    /// ([`crypt::rotate`]: each object's data key is rewrapped, its header rewritten, its
    /// data blocks copied unchanged), then records the new key id and provider in the
    /// marker. The store's current key (the one it was opened with) unwraps the old data
    /// keys. A rotation cut short is finished by running it again with the same arguments
    /// and the old key; objects already under `new` are skipped.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] for a store that is not encrypted; the provider's
    /// error when the new key is missing; [`Error::Store`] when an object cannot be
    /// rewrapped (the marker then still names the old key).
    pub async fn rotate_key(&self, new: &KeyProvider) -> Result<RotateReport> {
        let Some(c) = &self.crypt else {
            return Err(Error::FailedPrecondition {
                what: format!("store {}", self.root.display()),
                reason: "not encrypted: there is no key to rotate (encryption is chosen when \
                         the store is created: ward init --encrypt)"
                    .into(),
            });
        };
        let next = MarkerEncryption::for_provider(new)?;
        let new_provider: KeyProvider = next.provider.parse()?;
        let keyring = Keyring::load(&new_provider, std::slice::from_ref(&c.provider))?;
        let mut report = RotateReport {
            from_key_id: c.marker.key_id.clone(),
            to_key_id: next.key_id.clone(),
            provider: next.provider.clone(),
            ..Default::default()
        };
        // Everything the store encrypts lives under these (`data/` in object storage only).
        for prefix in ["versions", "refs", "data"] {
            let done = match &self.remote {
                Some(r) => r.rotate(&keyring, prefix)?,
                None => {
                    let dir = self.root.join(prefix);
                    if !dir.is_dir() {
                        continue;
                    }
                    let err = |e: object_store::Error| Error::Store {
                        path: dir.clone(),
                        reason: format!("key rotation: {e}"),
                    };
                    let local =
                        object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(err)?;
                    crypt::rotate(&local, &keyring, None).await.map_err(err)?
                }
            };
            report.rewrapped += done.rewrapped.len();
            report.already_current += done.already_current;
            report
                .not_encrypted
                .extend(done.not_encrypted.iter().map(|p| format!("{prefix}/{p}")));
        }
        let mut marker = super::read_marker(&self.root, self.remote.as_ref())?;
        marker["encryption"] = serde_json::to_value(&next)
            .map_err(|e| Error::Internal(format!("marker does not serialize: {e}")))?;
        let body = marker.to_string().into_bytes();
        match &self.remote {
            Some(r) => r.put_plain(super::MARKER, body)?,
            None => super::write_atomic(&self.root.join(super::MARKER), &body)?,
        }
        Ok(report)
    }
}
