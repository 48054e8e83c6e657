//! Keys for encryption at rest (`docs/encryption.md`): the key-encryption key (KEK) that
//! wraps the data key of every object the encrypted store writes ([`crate::store::crypt`]),
//! where a KEK comes from ([`KeyProvider`]), and the [`Keyring`] the store holds.
//!
//! # Keys
//! - A **data key** (256-bit, random) encrypts one object's blocks. It is stored in the
//!   object's header, wrapped (AES-256-GCM) under a KEK, never in the clear.
//! - A **KEK** (256-bit) never touches the store: it comes from a [`KeyProvider`] each time
//!   Ward starts. Its [`KeyId`] (a one-way fingerprint: BLAKE3 `derive_key` of the key,
//!   16 bytes) is written beside each wrapped data key, so a reader holding the wrong KEK is
//!   told so by id instead of failing on a tag.
//! - A [`Keyring`] is the KEK that wraps new data keys (the current one) and the retired
//!   KEKs that may still unwrap old ones (during and before a rotation).
//!
//! # Providers
//! `file:PATH` (a file readable by its owner only), `env:NAME` (an environment variable),
//! `command:PROGRAM ARG...` (a program run without a shell, its standard output is the key:
//! the way KMS plugins are wired). The key text is 64 hex digits or the standard base64 of
//! 32 bytes; a file or a command may also give the 32 raw bytes.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// Length of a KEK and of a data key: 256 bits.
pub const KEY_LEN: usize = 32;
/// Length of a [`KeyId`].
pub const KEY_ID_LEN: usize = 16;
/// Length of a wrapped data key: the key and its AES-GCM tag.
pub const WRAPPED_LEN: usize = KEY_LEN + 16;
/// How long a `command:` provider may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest key file or command output read (a key is at most a few hundred bytes).
const MAX_KEY_TEXT: usize = 4096;
/// The BLAKE3 `derive_key` context of key ids.
const KEY_ID_CONTEXT: &str = "ward 2026-12 encryption at rest: key id of a key-encryption key";

/// The id of a KEK: a one-way fingerprint of it, written in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl KeyId {
    /// The id of the key `key`.
    fn of(key: &[u8; KEY_LEN]) -> KeyId {
        let derived = blake3::derive_key(KEY_ID_CONTEXT, key);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&derived[..KEY_ID_LEN]);
        KeyId(id)
    }
}

/// A key-encryption key: the AES-256-GCM key that wraps data keys, its id, and where it came
/// from (for messages; never the key itself).
pub struct Kek {
    id: KeyId,
    key: LessSafeKey,
    source: String,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// A KEK from its 32 bytes; `source` names where they came from.
    pub fn from_bytes(bytes: &[u8; KEY_LEN], source: impl Into<String>) -> Result<Kek> {
        let source = source.into();
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| Error::InvalidArgument {
            what: format!("key from {source}"),
            reason: "not a valid AES-256 key".into(),
        })?;
        Ok(Kek {
            id: KeyId::of(bytes),
            key: LessSafeKey::new(unbound),
            source,
        })
    }

    /// A KEK from key text (64 hex digits, base64 of 32 bytes, or, if `raw_allowed`, the 32
    /// raw bytes); `source` names where it came from.
    pub fn from_text(text: &[u8], raw_allowed: bool, source: impl Into<String>) -> Result<Kek> {
        let source = source.into();
        let key = parse_key_text(text, raw_allowed).map_err(|reason| Error::InvalidArgument {
            what: format!("key provider {source}"),
            reason,
        })?;
        Kek::from_bytes(&key, source)
    }

    /// A fresh random key, as 64 hex digits (what `file:` and `env:` providers hold).
    pub fn generate_hex() -> Result<String> {
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| Error::Internal("the system random source failed".into()))?;
        Ok(hex::encode(key))
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Where the key came from (a provider, as written).
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Parses key text: 32 raw bytes (when allowed), else, trimmed, 64 hex digits or base64.
fn parse_key_text(text: &[u8], raw_allowed: bool) -> std::result::Result<[u8; KEY_LEN], String> {
    let expected = if raw_allowed {
        "a 256-bit key: 64 hex digits, the base64 of 32 bytes, or 32 raw bytes"
    } else {
        "a 256-bit key: 64 hex digits or the base64 of 32 bytes"
    };
    if raw_allowed && text.len() == KEY_LEN {
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(text);
        return Ok(key);
    }
    let trimmed = text.trim_ascii();
    // Hex digits only: hex (the base64 of 32 bytes ends in `=`, so it is never all hex).
    let decoded = if !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_hexdigit) {
        hex::decode(trimmed).ok()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(trimmed)
            .ok()
    };
    match decoded {
        Some(bytes) if bytes.len() == KEY_LEN => {
            let mut key = [0u8; KEY_LEN];
            key.copy_from_slice(&bytes);
            Ok(key)
        }
        Some(bytes) => Err(format!(
            "expected {expected}; the text decodes to {} bytes",
            bytes.len()
        )),
        None => Err(format!(
            "expected {expected}; got {} bytes that are neither",
            trimmed.len()
        )),
    }
}

/// Where a KEK comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyProvider {
    /// `file:PATH`: a file that only its owner may read or write (mode 0600 or 0400).
    File(PathBuf),
    /// `env:NAME`: an environment variable.
    Env(String),
    /// `command:PROGRAM ARG...`: a program run without a shell (words split on whitespace,
    /// `'...'` and `"..."` quote a word with spaces); its standard output is the key.
    Command(Vec<String>),
}

impl fmt::Display for KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProvider::File(path) => write!(f, "file:{}", path.display()),
            KeyProvider::Env(name) => write!(f, "env:{name}"),
            KeyProvider::Command(words) => {
                f.write_str("command:")?;
                for (i, w) in words.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    if w.is_empty() || w.contains(char::is_whitespace) {
                        write!(f, "'{w}'")?;
                    } else {
                        f.write_str(w)?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyProvider({self})")
    }
}

impl FromStr for KeyProvider {
    type Err = Error;

    fn from_str(s: &str) -> Result<KeyProvider> {
        let bad = |reason: &str| Error::InvalidArgument {
            what: format!("key provider {s:?}"),
            reason: reason.to_string(),
        };
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected file:PATH, env:NAME or command:PROGRAM ARG..."))?;
        match kind {
            "file" if rest.is_empty() => Err(bad("file: needs a path")),
            "file" => Ok(KeyProvider::File(PathBuf::from(rest))),
            "env" if rest.is_empty() || rest.contains('=') || rest.contains('\0') => {
                Err(bad("env: needs a variable name"))
            }
            "env" => Ok(KeyProvider::Env(rest.to_string())),
            "command" => {
                let words = split_words(rest).map_err(|r| bad(&r))?;
                if words.is_empty() {
                    return Err(bad("command: needs a program"));
                }
                Ok(KeyProvider::Command(words))
            }
            _ => Err(bad(
                "unknown kind; expected file:PATH, env:NAME or command:PROGRAM ARG...",
            )),
        }
    }
}

/// Splits a command line into words: whitespace separates, `'...'` and `"..."` quote (no
/// escapes, no expansions: there is no shell).
fn split_words(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.get_or_insert_with(String::new).push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            None if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            None => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    words.extend(word);
    Ok(words)
}

impl KeyProvider {
    /// Fetches the KEK.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] naming the provider when the key is missing (no file,
    /// an unset variable, a command that fails or times out) or a key file is open to group
    /// or others; [`Error::InvalidArgument`] when the text is not a 256-bit key.
    pub fn load(&self) -> Result<Kek> {
        let source = self.to_string();
        let missing = |reason: String| Error::FailedPrecondition {
            what: format!("key provider {source}"),
            reason,
        };
        match self {
            KeyProvider::File(path) => {
                let text = read_key_file(path).map_err(missing)?;
                Kek::from_text(&text, true, source.clone())
            }
            KeyProvider::Env(name) => {
                let value = std::env::var_os(name).ok_or_else(|| {
                    missing(format!("the environment variable {name} is not set"))
                })?;
                let value = value.into_string().map_err(|_| {
                    missing(format!("the environment variable {name} is not UTF-8"))
                })?;
                Kek::from_text(value.as_bytes(), false, source.clone())
            }
            KeyProvider::Command(words) => {
                let out = run_key_command(words, COMMAND_TIMEOUT).map_err(missing)?;
                Kek::from_text(&out, true, source.clone())
            }
        }
    }
}

/// Reads a key file, refusing one that group or others may access.
fn read_key_file(path: &std::path::Path) -> std::result::Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "the key file does not exist".to_string(),
        _ => format!("cannot read the key file: {e}"),
    })?;
    if !meta.is_file() {
        return Err("the key file is not a regular file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the key file is open to group or others (mode {mode:04o}); \
                 run chmod 600 {}",
                path.display()
            ));
        }
    }
    if meta.len() > MAX_KEY_TEXT as u64 {
        return Err(format!(
            "the key file holds {} bytes, more than a key",
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read the key file: {e}"))
}

/// Runs a key command without a shell; its standard output is the key.
fn run_key_command(words: &[String], timeout: Duration) -> std::result::Result<Vec<u8>, String> {
    let (program, args) = words
        .split_first()
        .ok_or_else(|| "no program given".to_string())?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(MAX_KEY_TEXT as u64 + 1).read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(64 * 1024).read_to_end(&mut buf);
        }
        buf
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} did not finish within {} s and was killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        let first = String::from_utf8_lossy(&err);
        let first = first.lines().next().unwrap_or("").trim();
        let first: String = first.chars().take(200).collect();
        return Err(if first.is_empty() {
            format!("{program} failed ({status})")
        } else {
            format!("{program} failed ({status}): {first}")
        });
    }
    if out.len() > MAX_KEY_TEXT {
        return Err(format!(
            "{program} wrote more than {MAX_KEY_TEXT} bytes, more than a key"
        ));
    }
    Ok(out)
}

/// Why a wrapped data key could not be unwrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnwrapError {
    /// No KEK in the keyring has this id.
    UnknownKey(KeyId),
    /// The KEK with that id does not open the wrapped key: the header was altered.
    Tampered,
}

struct KeyringInner {
    current: Kek,
    retired: Vec<Kek>,
    rng: SystemRandom,
}

/// The KEKs a store uses: the current one wraps new data keys; it and the retired ones
/// unwrap. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<KeyringInner>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.inner.current)
            .field("retired", &self.inner.retired)
            .finish()
    }
}

impl Keyring {
    /// A keyring of one KEK.
    pub fn new(current: Kek) -> Keyring {
        Keyring::with_retired(current, Vec::new())
    }

    /// A keyring whose `current` KEK wraps and whose `retired` KEKs may still unwrap (for a
    /// rotation from them to `current`).
    pub fn with_retired(current: Kek, retired: Vec<Kek>) -> Keyring {
        Keyring {
            inner: Arc::new(KeyringInner {
                current,
                retired,
                rng: SystemRandom::new(),
            }),
        }
    }

    /// Loads the current KEK and the retired ones from their providers.
    ///
    /// # Errors
    /// The first provider's error ([`KeyProvider::load`]).
    pub fn load(current: &KeyProvider, retired: &[KeyProvider]) -> Result<Keyring> {
        let current = current.load()?;
        let retired = retired
            .iter()
            .map(KeyProvider::load)
            .collect::<Result<_>>()?;
        Ok(Keyring::with_retired(current, retired))
    }

    /// The id of the KEK that wraps new data keys.
    pub fn current_id(&self) -> KeyId {
        self.inner.current.id
    }

    /// The ids of every KEK held, the current one first.
    pub fn ids(&self) -> Vec<KeyId> {
        std::iter::once(&self.inner.current)
            .chain(&self.inner.retired)
            .map(|k| k.id)
            .collect()
    }

    /// The ids held, for messages: `ID (PROVIDER), ...`.
    pub fn describe(&self) -> String {
        std::iter::once(&self.inner.current)
            .chain(&self.inner.retired)
            .map(|k| format!("{} ({})", k.id, k.source))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Fills `buf` with random bytes from the system source.
    ///
    /// # Errors
    /// [`Error::Internal`] if the system random source fails.
    pub fn fill_random(&self, buf: &mut [u8]) -> Result<()> {
        self.inner
            .rng
            .fill(buf)
            .map_err(|_| Error::Internal("the system random source failed".into()))
    }

    /// Wraps `data_key` under the current KEK with a random nonce; `aad` is bound to it.
    /// Returns the KEK's id, the nonce and the wrapped key.
    ///
    /// Random 96-bit nonces are safe for 2^32 wraps under one KEK: far more objects than a
    /// store holds between rotations.
    ///
    /// # Errors
    /// [`Error::Internal`] if the random source or the cipher fails.
    pub fn wrap(
        &self,
        data_key: &[u8; KEY_LEN],
        aad: &[u8],
    ) -> Result<(KeyId, [u8; NONCE_LEN], [u8; WRAPPED_LEN])> {
        let mut nonce = [0u8; NONCE_LEN];
        self.fill_random(&mut nonce)?;
        let mut out = [0u8; WRAPPED_LEN];
        out[..KEY_LEN].copy_from_slice(data_key);
        let kek = &self.inner.current;
        let tag = kek
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[..KEY_LEN],
            )
            .map_err(|_| Error::Internal("wrapping a data key failed".into()))?;
        out[KEY_LEN..].copy_from_slice(tag.as_ref());
        Ok((kek.id, nonce, out))
    }

    /// Unwraps a data key wrapped under the KEK `key_id`.
    ///
    /// # Errors
    /// [`UnwrapError::UnknownKey`] if no KEK held has that id; [`UnwrapError::Tampered`] if
    /// the wrapped key, its nonce or `aad` were altered.
    pub fn unwrap(
        &self,
        key_id: KeyId,
        nonce: [u8; NONCE_LEN],
        wrapped: &[u8; WRAPPED_LEN],
        aad: &[u8],
    ) -> std::result::Result<[u8; KEY_LEN], UnwrapError> {
        let kek = std::iter::once(&self.inner.current)
            .chain(&self.inner.retired)
            .find(|k| k.id == key_id)
            .ok_or(UnwrapError::UnknownKey(key_id))?;
        let mut buf = *wrapped;
        let plain = kek
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| UnwrapError::Tampered)?;
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(plain);
        buf.fill(0);
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_forms() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let a = parse_key_text(format!("{hex_key}\n").as_bytes(), false).expect("hex");
        let b64 = base64::engine::general_purpose::STANDARD.encode(a);
        let b = parse_key_text(format!("  {b64}\n").as_bytes(), false).expect("base64");
        assert_eq!(a, b);
        assert_eq!(parse_key_text(&a, true).expect("raw"), a);
        assert!(parse_key_text(&a, false).is_err());
        let short = parse_key_text(b"00112233", false).expect_err("short");
        assert!(short.contains("decodes to 4 bytes"), "{short}");
    }

    #[test]
    fn providers_parse_and_print() {
        let p: KeyProvider = "command:/bin/echo 'a b' c".parse().expect("command");
        assert_eq!(
            p,
            KeyProvider::Command(vec!["/bin/echo".into(), "a b".into(), "c".into()])
        );
        assert_eq!(p.to_string(), "command:/bin/echo 'a b' c");
        assert!("command:".parse::<KeyProvider>().is_err());
        assert!("command:'x".parse::<KeyProvider>().is_err());
        assert!("vault:x".parse::<KeyProvider>().is_err());
        assert!("env:".parse::<KeyProvider>().is_err());
        assert_eq!(
            "file:/k".parse::<KeyProvider>().expect("file"),
            KeyProvider::File("/k".into())
        );
    }

    #[test]
    fn wrap_unwrap_and_wrong_key() {
        let k1 = Kek::from_bytes(&[1u8; 32], "test").expect("key");
        let k2 = Kek::from_bytes(&[2u8; 32], "test").expect("key");
        let id2 = k2.id();
        let ring1 = Keyring::new(k1);
        let ring2 = Keyring::new(k2);
        let dk = [7u8; 32];
        let (id, nonce, wrapped) = ring1.wrap(&dk, b"aad").expect("wrap");
        assert_eq!(ring1.unwrap(id, nonce, &wrapped, b"aad"), Ok(dk));
        assert_eq!(
            ring1.unwrap(id, nonce, &wrapped, b"other"),
            Err(UnwrapError::Tampered)
        );
        assert_eq!(
            ring2.unwrap(id, nonce, &wrapped, b"aad"),
            Err(UnwrapError::UnknownKey(id))
        );
        assert_ne!(id, id2);
    }
}
