//! The records of the audit trail and their chain: what a caller records ([`AuditEntry`]),
//! the line written ([`AuditRecord`], with its place in the chain and its BLAKE3 hash), and
//! the patients, outcomes and torn bytes they name.

use std::fs::{self};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// How many bytes of a torn line the recovery record keeps as text (all are hashed).
pub const TORN_KEPT_BYTES: usize = 4096;

/// Whether the request was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed.
    Allowed,
    /// Denied.
    Denied,
    /// An event of the audit trail itself (a recovery after a crash).
    System,
}

/// The patients a request touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Patients {
    /// Listed (online lookups).
    Ids(Vec<String>),
    /// Bulk reads: how many, and the BLAKE3 of the sorted, de-duplicated ids, each followed
    /// by a newline (the list itself is in the training set's lineage).
    Bulk {
        /// Number of distinct patients.
        count: u64,
        /// BLAKE3 hex of the id list.
        blake3: String,
    },
}

impl Patients {
    /// The bulk form of `ids`.
    pub fn bulk(ids: &[String]) -> Patients {
        let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut h = blake3::Hasher::new();
        for id in &sorted {
            h.update(id.as_bytes());
            h.update(b"\n");
        }
        Patients::Bulk {
            count: sorted.len() as u64,
            blake3: h.finalize().to_hex().to_string(),
        }
    }
}

/// The bytes of a torn last line, as [`verify`] reports them and the recovery record that
/// sealed them keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Torn {
    /// The audit file.
    pub file: String,
    /// The byte offset of the torn line in the file (where the file was cut).
    pub offset: u64,
    /// How many bytes it had.
    pub len: u64,
    /// BLAKE3 hex of those bytes.
    pub blake3: String,
    /// The bytes as text (invalid UTF-8 replaced), at most [`TORN_KEPT_BYTES`] of them.
    pub text: String,
}

impl Torn {
    pub(super) fn new(file: String, offset: u64, bytes: &[u8]) -> Torn {
        Torn {
            file,
            offset,
            len: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
            text: String::from_utf8_lossy(&bytes[..bytes.len().min(TORN_KEPT_BYTES)]).into_owned(),
        }
    }
}

impl std::fmt::Display for Torn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes at byte offset {} of {} (blake3 {})",
            self.len, self.offset, self.file, self.blake3
        )
    }
}

/// What the caller records; [`AuditLog::append`] adds seq, prev, time and hash. Build one
/// with [`AuditEntry::new`] and set what is known; the server builds every request's entry
/// in one place (`ward::service::gate`), the command line with [`AuditEntry::local`].
/// Serialized as part of its [`AuditRecord`]; fields added after the first release are
/// left out when empty, so older lines keep their bytes and their hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The principal's subject (`None` when authentication failed).
    pub principal: Option<String>,
    /// How it authenticated (`jwt`, `mtls`, `api_token`, `none` for an anonymous loopback
    /// caller, `local` for the command line).
    pub auth: Option<String>,
    /// Its roles.
    pub roles: Vec<String>,
    /// The client address.
    pub client: Option<String>,
    /// The RPC.
    pub rpc: String,
    /// The action it maps to.
    pub action: Option<String>,
    /// The feature set named.
    pub feature_set: Option<String>,
    /// Dataset hashes read or written.
    pub datasets: Vec<String>,
    /// Patients touched.
    pub patients: Patients,
    /// Allowed or denied.
    pub decision: Outcome,
    /// Why.
    pub reason: String,
    /// The credential's issuer (the JWT `iss`, the client certificate's issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The JWT key id (`kid`) that verified the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// What became of the request: `ok`, or the status code it failed with
    /// (`not_found`, `invalid_argument`, `permission_denied`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The failure's message, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The training set a historical lookup made (its hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_set: Option<String>,
    /// The torn bytes a recovery record sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torn: Option<Torn>,
}

impl AuditEntry {
    /// An entry for `rpc` with `decision` and `reason`, nothing else known yet.
    pub fn new(rpc: impl Into<String>, decision: Outcome, reason: impl Into<String>) -> Self {
        AuditEntry {
            principal: None,
            auth: None,
            roles: Vec::new(),
            client: None,
            rpc: rpc.into(),
            action: None,
            feature_set: None,
            datasets: Vec::new(),
            patients: Patients::Ids(Vec::new()),
            decision,
            reason: reason.into(),
            issuer: None,
            key_id: None,
            outcome: None,
            error: None,
            training_set: None,
            torn: None,
        }
    }

    /// An entry for a read by the command line (`rpc` = `cli:get`, `cli:historical`,
    /// `cli:export`) by the local operating-system user ([`local_principal`]): allowed by
    /// file-system access to the store, not by the role policy.
    pub fn local(command: &str, action: &str) -> Self {
        let mut e = AuditEntry::new(
            format!("cli:{command}"),
            Outcome::Allowed,
            "local command line: file-system access to the store",
        );
        e.principal = Some(local_principal());
        e.auth = Some("local".into());
        e.action = Some(action.to_string());
        e
    }

    /// Sets the outcome from a result: `ok`, or `error` with the message.
    pub fn with_result<T>(mut self, r: &Result<T>) -> Self {
        match r {
            Ok(_) => self.outcome = Some("ok".into()),
            Err(e) => {
                self.outcome = Some("error".into());
                self.error = Some(e.to_string());
            }
        }
        self
    }
}

/// The principal of the command line: `local:<user>`, the `USER` (else `LOGNAME`)
/// environment variable, else `uid:<n>`, the process's user id.
pub fn local_principal() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty() && u.len() <= 256 && !u.chars().any(char::is_control));
    match user {
        Some(u) => format!("local:{u}"),
        // The owner of /proc/self is the process's user (no unsafe `getuid` needed).
        None => match fs::metadata("/proc/self") {
            Ok(m) => format!("local:uid:{}", std::os::unix::fs::MetadataExt::uid(&m)),
            Err(_) => "local:unknown-user".to_string(),
        },
    }
}

/// One line of the audit trail: the caller's [`AuditEntry`] with its place in the chain.
/// Serialized flat, the entry's fields between `time` and `hash`. Unknown fields are not
/// refused when a line is read (serde cannot with a flattened entry); `verify` refuses them,
/// since it re-serializes each record and requires the line's exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the trail, from 0.
    pub seq: u64,
    /// The hash of the previous record ([`GENESIS`] for the first).
    pub prev: String,
    /// When (the injected clock).
    pub time: DateTime<Utc>,
    /// What was recorded.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// BLAKE3 of this record serialized without `hash`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record should carry.
    pub fn compute_hash(&self) -> String {
        let mut body = self.clone();
        body.hash = String::new();
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }
}
