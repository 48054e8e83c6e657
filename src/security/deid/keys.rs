//! The de-identification key: keyed patient tokens and per-patient date shifts, derived per
//! export (or stable), never printed.

use std::path::Path;

use super::columns::*;
use super::policy::*;
use crate::error::{Error, Result};

/// Secret key material of one purpose.
#[derive(Clone)]
pub(super) struct Keys {
    patient: [u8; 32],
    ident: [u8; 32],
    shift: [u8; 32],
}

/// The secret key of de-identification. Its `Debug` shows only the key id.
pub struct DeidKey {
    keys: Keys,
    id: String,
}

impl std::fmt::Debug for DeidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeidKey")
            .field("key_id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The keys of one export: the key's own when the policy is stable, else derived from the
/// key and the export's salt (the identified version's hash). Its `Debug` shows nothing.
pub struct ExportKeys {
    keys: Keys,
}

impl std::fmt::Debug for ExportKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportKeys(<redacted>)")
    }
}

impl ExportKeys {
    /// The token of a patient id.
    pub fn patient_token(&self, id: &str) -> String {
        let h = blake3::keyed_hash(&self.keys.patient, id.as_bytes());
        format!("pt_{}", hex::encode(&h.as_bytes()[..16]))
    }

    /// The token of another identifier.
    pub fn identifier_token(&self, id: &str) -> String {
        let h = blake3::keyed_hash(&self.keys.ident, id.as_bytes());
        format!("id_{}", hex::encode(&h.as_bytes()[..16]))
    }

    /// The date shift of a patient, in days, within the policy's range (`limited-data-set`;
    /// 0 under `safe-harbor`, which shifts nothing).
    pub fn shift_days(&self, patient: &str, policy: &DeidPolicy) -> i64 {
        if policy.profile != Profile::LimitedDataSet {
            return 0;
        }
        let h = blake3::keyed_hash(&self.keys.shift, patient.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        let span = (policy.shift_days_max - policy.shift_days_min + 1) as u64;
        policy.shift_days_min + (u64::from_le_bytes(b) % span) as i64
    }
}

impl DeidKey {
    /// A key from secret material (at least 32 bytes).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is shorter (the message never shows it).
    pub fn from_secret(material: &[u8]) -> Result<Self> {
        if material.len() < 32 {
            return Err(Error::invalid(
                "de-identification key",
                format!("{} bytes; at least 32 are needed", material.len()),
            ));
        }
        let id = blake3::derive_key("ward deid v1 key id", material);
        Ok(DeidKey {
            keys: Keys {
                patient: blake3::derive_key("ward deid v1 patient token", material),
                ident: blake3::derive_key("ward deid v1 identifier token", material),
                shift: blake3::derive_key("ward deid v1 date shift", material),
            },
            id: format!("k1:{}", hex::encode(&id[..8])),
        })
    }

    fn decode(text: &[u8], what: &str) -> Result<Self> {
        let trimmed = String::from_utf8_lossy(text).trim().to_string();
        if trimmed.len() >= 64
            && trimmed.bytes().all(|b| b.is_ascii_hexdigit())
            && trimmed.len().is_multiple_of(2)
        {
            let bytes = hex::decode(&trimmed)
                .map_err(|_| Error::invalid(what, "hex key does not decode"))?;
            return DeidKey::from_secret(&bytes);
        }
        DeidKey::from_secret(text)
            .map_err(|_| Error::invalid(what, "use at least 64 hex digits or 32 raw bytes"))
    }

    /// A key from a file: 64 or more hex digits, or at least 32 raw bytes. Warns when the
    /// file is readable by group or others.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::InvalidArgument`] naming the file (never its content).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path) {
                if m.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(file = %path.display(), "de-identification key file is readable by group or others (chmod 600)");
                }
            }
        }
        DeidKey::decode(
            &bytes,
            &format!("de-identification key file {}", path.display()),
        )
    }

    /// A key from an environment variable holding 64 or more hex digits.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the variable when it is unset or malformed.
    pub fn from_env(var: &str) -> Result<Self> {
        let v = std::env::var(var).map_err(|_| {
            Error::invalid(format!("environment variable {var}"), "unset or not UTF-8")
        })?;
        let t = v.trim();
        if t.len() < 64 || !t.len().is_multiple_of(2) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(
                format!("environment variable {var}"),
                "use at least 64 hex digits",
            ));
        }
        DeidKey::decode(t.as_bytes(), &format!("environment variable {var}"))
    }

    /// A one-way id of the key (safe to record): `k1:<16 hex>`.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// The stable token of a patient id (every export of a `stable` policy).
    pub fn patient_token(&self, id: &str) -> String {
        self.stable().patient_token(id)
    }

    /// The stable token of another identifier.
    pub fn identifier_token(&self, id: &str) -> String {
        self.stable().identifier_token(id)
    }

    /// The stable date shift of a patient (a `stable` `limited-data-set` policy).
    pub fn shift_days(&self, patient: &str, policy: &DeidPolicy) -> i64 {
        self.stable().shift_days(patient, policy)
    }

    fn stable(&self) -> ExportKeys {
        ExportKeys {
            keys: self.keys.clone(),
        }
    }

    /// The keys of `export` under `policy`: the stable ones, or ones salted by the export's
    /// identified version (then no token or shift of one export tells anything about
    /// another's).
    pub fn export_keys(&self, policy: &DeidPolicy, export: &Export) -> ExportKeys {
        if policy.stable {
            return self.stable();
        }
        let salt = |k: &[u8; 32], purpose: &[u8]| -> [u8; 32] {
            let mut h = blake3::Hasher::new_keyed(k);
            h.update(b"ward deid v1 export salt\0");
            h.update(purpose);
            h.update(&export.identified.0);
            *h.finalize().as_bytes()
        };
        ExportKeys {
            keys: Keys {
                patient: salt(&self.keys.patient, b"patient"),
                ident: salt(&self.keys.ident, b"identifier"),
                shift: salt(&self.keys.shift, b"shift"),
            },
        }
    }
}
