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
//! input and quality reports are versions, so they are covered. The audit trail
//! ([`crate::security::audit`]) and the live feeds' write-ahead logs ([`crate::live::wal`])
//! are record logs sealed record by record under a data key per file
//! ([`super::crypt::RecordLog`]) wrapped by the same KEK; their small state files are
//! sealed objects. [`super::Store::rotate_key`] rewraps them too, by rewriting each file's
//! header in place ([`rotate_local_state`]).

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

thread_local! {
    /// A provider set by [`with_key_provider`] for the stores opened meanwhile on this
    /// thread, and where it was configured.
    static PROVIDER_OVERRIDE: std::cell::RefCell<Option<(KeyProvider, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `open` (which opens a store: [`super::Store::open`]) with `provider` as the key
/// provider of an encrypted store, in place of [`KEY_PROVIDER_VAR`] and the marker's: the
/// server configuration's `key_provider` (`docs/encryption.md`). `origin` names where it was
/// configured, for errors. `None`: as usual.
pub fn with_key_provider<T>(
    provider: Option<(KeyProvider, String)>,
    open: impl FnOnce() -> T,
) -> T {
    let Some(p) = provider else {
        return open();
    };
    let previous = PROVIDER_OVERRIDE.with(|o| o.replace(Some(p)));
    let out = open();
    PROVIDER_OVERRIDE.with(|o| *o.borrow_mut() = previous);
    out
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
        let configured = PROVIDER_OVERRIDE.with(|o| o.borrow().clone());
        let (provider, from) = match configured {
            Some(c) => c,
            None => match provider_from_env()? {
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
            },
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
    /// Local files (audit trail, write-ahead logs and their state) whose header was
    /// rewritten in place.
    pub local_rewrapped: usize,
    /// Local files already under the new key.
    pub local_already_current: usize,
    /// The local directory whose audit trail and logs were rotated (`None`: an `s3://` store
    /// without `WARD_STATE_DIR`, which has no local state here).
    pub local_state: Option<String>,
}

/// Where a local file keeps its encryption header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderForm {
    /// The first 128 bytes (a write-ahead log segment, a sealed state file, `HEAD`).
    Raw,
    /// The first line, in base64 (an audit file).
    Base64Line,
}

/// The suffix of the copy of a header kept while it is rewritten in place.
const REKEY_SUFFIX: &str = ".rekey";

/// What [`rotate_local_state`] did.
#[derive(Debug, Default)]
struct LocalRotation {
    rewrapped: usize,
    already_current: usize,
}

/// Rewraps the data key of the local file at `path` under `keyring`'s current KEK by
/// rewriting its header in place (records and blocks untouched). The old header is first
/// saved beside it (`PATH.rekey`, synced) and removed once the new one is synced, so a crash
/// mid-write leaves a copy from which the next rotation restores the header. Files too
/// short to hold a header, or not encrypted, are left alone.
fn rewrap_file(
    path: &Path,
    form: HeaderForm,
    keyring: &Keyring,
    done: &mut LocalRotation,
) -> Result<()> {
    use base64::Engine as _;
    use std::os::unix::fs::FileExt;
    let b64 = base64::engine::general_purpose::STANDARD;
    let io = |e: std::io::Error| Error::io(path, e);
    let stored_len = match form {
        HeaderForm::Raw => crypt::HEADER_LEN,
        HeaderForm::Base64Line => crypt::HEADER_LEN.div_ceil(3) * 4,
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let rekey = path.with_file_name(format!(
        "{}{REKEY_SUFFIX}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut stored = vec![0u8; stored_len];
    if file.metadata().map_err(io)?.len() < stored_len as u64 {
        return Ok(()); // a file cut before its header ended: nothing to rewrap
    }
    file.read_exact_at(&mut stored, 0).map_err(io)?;
    let decode = |stored: &[u8]| -> Option<Vec<u8>> {
        match form {
            HeaderForm::Raw => Some(stored.to_vec()),
            HeaderForm::Base64Line => b64.decode(stored).ok(),
        }
    };
    let name = path.display().to_string();
    let mut header = decode(&stored).unwrap_or_default();
    if let Ok(saved) = std::fs::read(&rekey) {
        // An earlier rotation stopped while rewriting this header: if the header in place
        // does not open, put the saved one back.
        if crypt::rewrap_header(keyring, &header, &name).is_err() && saved.len() == stored_len {
            file.write_all_at(&saved, 0)
                .and_then(|()| file.sync_data())
                .map_err(io)?;
            stored = saved;
            header = decode(&stored).unwrap_or_default();
        }
    }
    if header.len() != crypt::HEADER_LEN || !header.starts_with(&crypt::MAGIC) {
        return Ok(()); // not encrypted (a plaintext file is refused by its readers)
    }
    let new = crypt::rewrap_header(keyring, &header, &name).map_err(|e| Error::Store {
        path: path.to_path_buf(),
        reason: format!("key rotation: {e}"),
    })?;
    let Some(new) = new else {
        done.already_current += 1;
        let _ = std::fs::remove_file(&rekey);
        return Ok(());
    };
    let new_stored = match form {
        HeaderForm::Raw => new.to_vec(),
        HeaderForm::Base64Line => b64.encode(new).into_bytes(),
    };
    {
        let mut f = std::fs::File::create(&rekey).map_err(|e| Error::io(&rekey, e))?;
        std::io::Write::write_all(&mut f, &stored).map_err(|e| Error::io(&rekey, e))?;
        f.sync_all().map_err(|e| Error::io(&rekey, e))?;
    }
    file.write_all_at(&new_stored, 0)
        .and_then(|()| file.sync_data())
        .map_err(io)?;
    std::fs::remove_file(&rekey).map_err(|e| Error::io(&rekey, e))?;
    done.rewrapped += 1;
    Ok(())
}

/// `ward key rotate` for the local state of an encrypted store under `root` (the store's
/// directory, or `WARD_STATE_DIR`): the audit trail's files and `HEAD` (`audit/`), and every
/// live feed's segments, state files and `sealed-ids` (`wal/<feed>/`). Headers are rewritten
/// in place ([`rewrap_file`]); records are not touched.
///
/// Concurrent writers: the audit trail's `LOCK` is held throughout (no record is appended
/// meanwhile; appends that follow use the same data key, which the new header still wraps).
/// A live feed's `writer.lock` and `seal.lock` must be free: a running `ward serve` with a
/// live feed, or a running `ward seal`, makes the rotation stop with an error naming the
/// feed before any of its files changes.
///
/// # Errors
/// [`Error::FailedPrecondition`] naming a feed in use; [`Error::Store`] naming a file whose
/// key is not in the keyring; [`Error::Io`].
fn rotate_local_state(root: &Path, keyring: &Keyring) -> Result<LocalRotation> {
    let mut done = LocalRotation::default();
    // The live feeds: take every feed's locks first, so nothing changes while one is busy.
    let wal = root.join("wal");
    let mut feeds = Vec::new();
    if wal.is_dir() {
        for e in std::fs::read_dir(&wal).map_err(|e| Error::io(&wal, e))? {
            let e = e.map_err(|e| Error::io(&wal, e))?;
            if e.path().is_dir() {
                feeds.push(e.path());
            }
        }
    }
    feeds.sort();
    let mut locks = Vec::new();
    for f in &feeds {
        let busy = |what: &'static str| {
            move |e: Error| {
                Error::precondition(
                    format!("live feed log {}", f.display()),
                    format!("cannot rotate its key while {what} ({e}); stop it and run `ward key rotate` again (objects already rewrapped are skipped)"),
                )
            }
        };
        locks.push(
            crate::live::wal::Lock::try_take(
                &f.join("writer.lock"),
                "writing this write-ahead log",
            )
            .map_err(busy("a server writes it"))?,
        );
        locks.push(
            crate::live::wal::Lock::try_take(&f.join("seal.lock"), "sealing this feed")
                .map_err(busy("a seal runs"))?,
        );
    }
    for f in &feeds {
        let mut files: Vec<_> = std::fs::read_dir(f)
            .map_err(|e| Error::io(f, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for p in files {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let state = [
                "sealed.json",
                "seal-intent.json",
                "sealed-positions.json",
                "sealed-ids",
            ];
            if name.ends_with(".wal") || state.contains(&name.as_str()) {
                rewrap_file(&p, HeaderForm::Raw, keyring, &mut done)?;
            }
        }
    }
    drop(locks);
    // The audit trail, under its writers' lock.
    let audit = root.join("audit");
    if audit.is_dir() {
        let lock_path = audit.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        let mut files: Vec<_> = std::fs::read_dir(&audit)
            .map_err(|e| Error::io(&audit, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for p in files {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with("audit-") && name.ends_with(".jsonl") {
                rewrap_file(&p, HeaderForm::Base64Line, keyring, &mut done)?;
            } else if name == "HEAD" {
                rewrap_file(&p, HeaderForm::Raw, keyring, &mut done)?;
            }
        }
        let _ = lock.unlock();
    }
    Ok(done)
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
        // The local state: audit trail and live feeds' logs (none for an `s3://` store
        // without WARD_STATE_DIR).
        if let Ok(root) = self.local_root("the audit trail") {
            let done = rotate_local_state(&root, &keyring)?;
            report.local_rewrapped = done.rewrapped;
            report.local_already_current = done.already_current;
            report.local_state = Some(root.display().to_string());
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
