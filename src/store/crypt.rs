//! Encryption at rest (`docs/encryption.md`): [`EncryptedStore`], an
//! [`ObjectStore`] that encrypts every object it writes and decrypts every object it reads,
//! over any other object store (a local directory, S3, memory); [`LanceEncryption`], the
//! same as Lance's [`WrappingObjectStore`], so Lance datasets go through it; and
//! [`rotate`], which moves every object to a new key-encryption key by rewriting headers.
//!
//! # Format of an encrypted object (version 1)
//!
//! ```text
//! header (128 bytes)
//!   0..8     magic "WARDCRYP"
//!   8..10    format version, u16 big-endian (1)
//!   10       algorithm (1 = AES-256-GCM)
//!   11       reserved (0)
//!   12..16   block size, u32 big-endian (65,536)
//!   16..32   key id of the KEK that wrapped the data key    } rewritten by a rotation
//!   32..48   object id: 16 random bytes
//!   48..60   nonce of the wrap                              } rewritten by a rotation
//!   60..108  the data key wrapped under the KEK (32 + tag)  } rewritten by a rotation
//!   108..128 reserved (0)
//! block 0, block 1, ..., block n-1
//!   each: up to 65,536 bytes of ciphertext, then its 16-byte tag
//! ```
//!
//! Every object has its own random data key (AES-256-GCM). Block `i` is sealed with the
//! nonce `object id[0..4] || i (u64 big-endian)` and the associated data `header[0..16] ||
//! object id || i || last` where `last` is 1 for the final block only. So a block cannot be
//! moved within its object (index), into another object (another data key and object id),
//! and the object cannot be cut at a block boundary (the new final block was not sealed as
//! last) or extended. An empty object is one empty final block. The plaintext size follows
//! from the stored size alone ([`plaintext_len`]), so `head` and `list` need no extra read.
//!
//! The path is not bound: Ward and Lance write objects under temporary names and rename or
//! copy them into place. A whole object swapped for another object of the same store under
//! the same keys is therefore not detected here; the manifest's digests are what detect it.
//!
//! # Reads
//! A ranged read fetches the blocks covering the range only (plus the header, unless the
//! data key of that object is cached from an earlier read or write in this process: then
//! one request). A data key cached for a path that was since replaced fails to open its
//! blocks, and the read is retried once with the header read afresh.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use lance::io::{ObjectStoreParams, WrappingObjectStore};
use object_store::list::PaginatedListStore;
use object_store::path::Path;
use object_store::{
    CopyOptions, Error as OsError, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, RenameOptions, Result as OsResult, UploadPart,
};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM, NONCE_LEN};

use crate::error::{Error, Result};
use crate::security::keyring::{KeyId, Keyring, UnwrapError, KEY_ID_LEN, KEY_LEN, WRAPPED_LEN};

/// The first bytes of every encrypted object.
pub const MAGIC: [u8; 8] = *b"WARDCRYP";
/// The format version this Ward writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// The algorithm byte of AES-256-GCM.
pub const ALGORITHM_AES_256_GCM: u8 = 1;
/// Plaintext bytes per block.
pub const BLOCK_SIZE: usize = 64 * 1024;
/// Length of a block's tag.
pub const TAG_LEN: usize = 16;
/// Length of the header.
pub const HEADER_LEN: usize = 128;
/// Stored bytes of a full block: its ciphertext and tag.
pub const SEALED_BLOCK_LEN: usize = BLOCK_SIZE + TAG_LEN;
/// The smallest part a multipart upload sends to the store below (S3's minimum), but the
/// last.
pub const DEFAULT_MIN_PART: usize = 5 * 1024 * 1024;

const OBJECT_ID_LEN: usize = 16;
/// Header byte 11: an object sealed in blocks.
const KIND_BLOCKS: u8 = 0;
/// Header byte 11: a record log, each record sealed on its own ([`RecordLog`]).
const KIND_RECORDS: u8 = 1;
/// A ranged read that starts this close to the object's start fetches the header with it.
const COALESCE: u64 = 1024 * 1024;
/// Data keys cached per store (the cache is emptied when full).
const CACHE_ENTRIES: usize = 4096;
/// Bytes read at a time from a local file when streaming a whole object.
const READ_CHUNK: usize = 16 * SEALED_BLOCK_LEN;
/// A rotation rewrites objects up to this size in one put, larger ones in parts.
const ROTATE_IN_ONE_PUT: u64 = 64 * 1024 * 1024;

// Where the header's fields lie.
const H_FIXED: Range<usize> = 0..16;
const H_KEY_ID: Range<usize> = 16..32;
const H_OBJECT_ID: Range<usize> = 32..48;
const H_WRAP_NONCE: Range<usize> = 48..60;
const H_WRAPPED: Range<usize> = 60..108;
const H_RESERVED: Range<usize> = 108..128;

/// What went wrong with an encrypted object. Every message names the object.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// The object is not in the encrypted format (too short, no magic, an impossible size).
    #[error("{path}: not an encrypted object: {reason}")]
    NotEncrypted {
        /// The object.
        path: String,
        /// Why not.
        reason: String,
    },
    /// A format version, algorithm or block size this Ward does not read.
    #[error("{path}: encrypted with {what}, which this Ward does not read")]
    Unsupported {
        /// The object.
        path: String,
        /// What is unsupported.
        what: String,
    },
    /// The object's data key was wrapped by a KEK the keyring does not hold.
    #[error(
        "the store's key-encryption key does not match: key id {object_key} wrapped the data \
         key of {path}; the key provider gives key id {available}"
    )]
    WrongKey {
        /// The object.
        path: String,
        /// The id of the KEK the object needs.
        object_key: KeyId,
        /// The KEKs held, with their providers.
        available: String,
    },
    /// The header does not authenticate under the KEK its key id names.
    #[error(
        "{path}: the encryption header failed authentication (the object was tampered with \
         or is corrupt)"
    )]
    HeaderTampered {
        /// The object.
        path: String,
    },
    /// A block does not authenticate.
    #[error(
        "{path}: block {block} (plaintext bytes {start}..{end}) failed authentication: the \
         object was tampered with, truncated or is corrupt"
    )]
    BlockTampered {
        /// The object.
        path: String,
        /// The block's index.
        block: u64,
        /// First plaintext byte of the block.
        start: u64,
        /// End of the block's plaintext bytes.
        end: u64,
    },
    /// A record of a record log ([`RecordLog`]) does not authenticate or is out of place.
    #[error("{path} {at}: {reason}")]
    RecordTampered {
        /// The file.
        path: String,
        /// Where the record is (`line 7`, `byte 4096`).
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// Fewer bytes arrived than the object's size says.
    #[error("{path}: truncated: {reason}")]
    Truncated {
        /// The object.
        path: String,
        /// What was missing.
        reason: String,
    },
    /// A range outside the object.
    #[error("{path}: {reason}")]
    Range {
        /// The object.
        path: String,
        /// What is wrong with the range.
        reason: String,
    },
    /// Reading a local file failed.
    #[error("{path}: {source}")]
    Read {
        /// The object.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The random source or the cipher failed.
    #[error("{path}: {reason}")]
    Internal {
        /// The object.
        path: String,
        /// What failed.
        reason: String,
    },
}

impl From<CryptError> for OsError {
    fn from(e: CryptError) -> OsError {
        OsError::Generic {
            store: "encrypted",
            source: Box::new(e),
        }
    }
}

/// The stored size of an object of `plain` bytes.
pub fn ciphertext_len(plain: u64) -> u64 {
    let blocks = plain.div_ceil(BLOCK_SIZE as u64).max(1);
    HEADER_LEN as u64 + plain + blocks * TAG_LEN as u64
}

/// The plaintext size of an object stored in `stored` bytes, or `None` if no encrypted object
/// has that size.
pub fn plaintext_len(stored: u64) -> Option<u64> {
    Layout::of_stored(stored).map(|l| l.plain)
}

/// The block layout of one object.
#[derive(Debug, Clone, Copy)]
struct Layout {
    plain: u64,
    blocks: u64,
}

impl Layout {
    fn of_stored(stored: u64) -> Option<Layout> {
        let body = stored.checked_sub(HEADER_LEN as u64)?;
        let sealed = SEALED_BLOCK_LEN as u64;
        let blocks = body.div_ceil(sealed);
        if blocks == 0 {
            return None;
        }
        let last = body - (blocks - 1) * sealed;
        let tag = TAG_LEN as u64;
        if last < tag || (last == tag && blocks > 1) {
            return None;
        }
        Some(Layout {
            plain: body - blocks * tag,
            blocks,
        })
    }

    fn of(stored: u64, path: &Path) -> std::result::Result<Layout, CryptError> {
        Layout::of_stored(stored).ok_or_else(|| CryptError::NotEncrypted {
            path: path.to_string(),
            reason: format!("no encrypted object is {stored} bytes long"),
        })
    }

    /// The plaintext bytes of block `i`.
    fn plain_range(&self, i: u64) -> Range<u64> {
        let start = i * BLOCK_SIZE as u64;
        start..(start + BLOCK_SIZE as u64).min(self.plain)
    }

    /// The stored length of block `i`.
    fn sealed_len(&self, i: u64) -> usize {
        let r = self.plain_range(i);
        (r.end - r.start) as usize + TAG_LEN
    }

    fn is_last(&self, i: u64) -> bool {
        i + 1 == self.blocks
    }
}

/// The first 16 bytes of every header of this format version (an object of blocks).
fn fixed_prefix() -> [u8; 16] {
    fixed_prefix_of(KIND_BLOCKS)
}

/// The first 16 bytes of a header of `kind`: an object of blocks carries the block size, a
/// record log 0 (its records are sealed one by one, [`RecordLog`]).
fn fixed_prefix_of(kind: u8) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0..8].copy_from_slice(&MAGIC);
    p[8..10].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    p[10] = ALGORITHM_AES_256_GCM;
    p[11] = kind;
    if kind == KIND_BLOCKS {
        p[12..16].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
    }
    p
}

/// The associated data of a wrapped data key: the fixed prefix, the KEK's id, the object id.
fn wrap_aad(key_id: KeyId, object_id: &[u8; OBJECT_ID_LEN]) -> [u8; 16 + KEY_ID_LEN + 16] {
    wrap_aad_of(KIND_BLOCKS, key_id, object_id)
}

/// [`wrap_aad`] of a header of `kind`.
fn wrap_aad_of(
    kind: u8,
    key_id: KeyId,
    object_id: &[u8; OBJECT_ID_LEN],
) -> [u8; 16 + KEY_ID_LEN + 16] {
    let mut aad = [0u8; 16 + KEY_ID_LEN + OBJECT_ID_LEN];
    aad[..16].copy_from_slice(&fixed_prefix_of(kind));
    aad[16..16 + KEY_ID_LEN].copy_from_slice(&key_id.0);
    aad[16 + KEY_ID_LEN..].copy_from_slice(object_id);
    aad
}

/// A parsed header.
struct Header {
    kind: u8,
    key_id: KeyId,
    object_id: [u8; OBJECT_ID_LEN],
    wrap_nonce: [u8; NONCE_LEN],
    wrapped: [u8; WRAPPED_LEN],
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[H_FIXED].copy_from_slice(&fixed_prefix_of(self.kind));
        h[H_KEY_ID].copy_from_slice(&self.key_id.0);
        h[H_OBJECT_ID].copy_from_slice(&self.object_id);
        h[H_WRAP_NONCE].copy_from_slice(&self.wrap_nonce);
        h[H_WRAPPED].copy_from_slice(&self.wrapped);
        h
    }

    fn decode(bytes: &[u8], path: &Path) -> std::result::Result<Header, CryptError> {
        let not = |reason: &str| CryptError::NotEncrypted {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        if bytes.len() < HEADER_LEN {
            return Err(not("shorter than the encryption header"));
        }
        if bytes[0..8] != MAGIC {
            return Err(not("no WARDCRYP magic at its start"));
        }
        let unsupported = |what: String| CryptError::Unsupported {
            path: path.to_string(),
            what,
        };
        let version = u16::from_be_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(unsupported(format!("format version {version}")));
        }
        if bytes[10] != ALGORITHM_AES_256_GCM {
            return Err(unsupported(format!("algorithm {}", bytes[10])));
        }
        let block = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let kind = bytes[11];
        match kind {
            KIND_BLOCKS if block as usize == BLOCK_SIZE => {}
            KIND_RECORDS if block == 0 => {}
            KIND_BLOCKS | KIND_RECORDS => {
                return Err(unsupported(format!("block size {block}")));
            }
            _ => return Err(unsupported(format!("kind {kind}"))),
        }
        if bytes[H_RESERVED].iter().any(|&b| b != 0) {
            return Err(CryptError::HeaderTampered {
                path: path.to_string(),
            });
        }
        let mut h = Header {
            kind,
            key_id: KeyId([0; KEY_ID_LEN]),
            object_id: [0; OBJECT_ID_LEN],
            wrap_nonce: [0; NONCE_LEN],
            wrapped: [0; WRAPPED_LEN],
        };
        h.key_id.0.copy_from_slice(&bytes[H_KEY_ID]);
        h.object_id.copy_from_slice(&bytes[H_OBJECT_ID]);
        h.wrap_nonce.copy_from_slice(&bytes[H_WRAP_NONCE]);
        h.wrapped.copy_from_slice(&bytes[H_WRAPPED]);
        Ok(h)
    }

    /// Unwraps the data key.
    fn data_key(
        &self,
        keyring: &Keyring,
        path: &Path,
    ) -> std::result::Result<[u8; KEY_LEN], CryptError> {
        let aad = wrap_aad_of(self.kind, self.key_id, &self.object_id);
        keyring
            .unwrap(self.key_id, self.wrap_nonce, &self.wrapped, &aad)
            .map_err(|e| match e {
                UnwrapError::UnknownKey(id) => CryptError::WrongKey {
                    path: path.to_string(),
                    object_key: id,
                    available: keyring.describe(),
                },
                UnwrapError::Tampered => CryptError::HeaderTampered {
                    path: path.to_string(),
                },
            })
    }
}

/// The cipher of one object's blocks: its data key and object id.
struct ObjectCipher {
    key: LessSafeKey,
    object_id: [u8; OBJECT_ID_LEN],
}

impl fmt::Debug for ObjectCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCipher")
            .field("object_id", &hex::encode(self.object_id))
            .finish_non_exhaustive()
    }
}

impl ObjectCipher {
    fn new(
        data_key: &[u8; KEY_LEN],
        object_id: [u8; OBJECT_ID_LEN],
        path: &Path,
    ) -> std::result::Result<ObjectCipher, CryptError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, data_key).map_err(|_| CryptError::Internal {
                path: path.to_string(),
                reason: "not a valid AES-256 data key".into(),
            })?;
        Ok(ObjectCipher {
            key: LessSafeKey::new(unbound),
            object_id,
        })
    }

    fn nonce(&self, block: u64) -> Nonce {
        let mut n = [0u8; NONCE_LEN];
        n[..4].copy_from_slice(&self.object_id[..4]);
        n[4..].copy_from_slice(&block.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    fn aad(&self, block: u64, last: bool) -> [u8; 16 + OBJECT_ID_LEN + 9] {
        let mut a = [0u8; 16 + OBJECT_ID_LEN + 9];
        a[..16].copy_from_slice(&fixed_prefix());
        a[16..32].copy_from_slice(&self.object_id);
        a[32..40].copy_from_slice(&block.to_be_bytes());
        a[40] = u8::from(last);
        a
    }

    fn seal(&self, block: u64, last: bool, buf: &mut [u8]) -> Option<Tag> {
        self.key
            .seal_in_place_separate_tag(self.nonce(block), Aad::from(self.aad(block, last)), buf)
            .ok()
    }

    /// Opens a sealed block (ciphertext then tag) in place; the plaintext's length.
    fn open(&self, block: u64, last: bool, sealed: &mut [u8]) -> Option<usize> {
        self.key
            .open_in_place(self.nonce(block), Aad::from(self.aad(block, last)), sealed)
            .ok()
            .map(|p| p.len())
    }
}

/// A new object: its header and its cipher, under a fresh data key wrapped by the keyring's
/// current KEK.
fn new_object(
    keyring: &Keyring,
    path: &Path,
) -> std::result::Result<([u8; HEADER_LEN], Arc<ObjectCipher>), CryptError> {
    let internal = |e: Error| CryptError::Internal {
        path: path.to_string(),
        reason: e.to_string(),
    };
    let mut data_key = [0u8; KEY_LEN];
    let mut object_id = [0u8; OBJECT_ID_LEN];
    keyring.fill_random(&mut data_key).map_err(internal)?;
    keyring.fill_random(&mut object_id).map_err(internal)?;
    let (key_id, wrap_nonce, wrapped) = keyring
        .wrap(&data_key, &wrap_aad(keyring.current_id(), &object_id))
        .map_err(internal)?;
    let header = Header {
        kind: KIND_BLOCKS,
        key_id,
        object_id,
        wrap_nonce,
        wrapped,
    };
    let cipher = ObjectCipher::new(&data_key, object_id, path)?;
    data_key.fill(0);
    Ok((header.encode(), Arc::new(cipher)))
}

/// Seals `plain` into one encrypted object, exactly what a put of it through an
/// [`EncryptedStore`] stores: for the store's small objects (manifests, heads) that a local
/// store writes as files itself, with its own atomic-commit protocol. `path` names the
/// object in errors.
///
/// # Errors
/// [`CryptError::Internal`] if the random source or the cipher fails.
pub fn seal_bytes(
    keyring: &Keyring,
    plain: &[u8],
    path: &str,
) -> std::result::Result<Vec<u8>, CryptError> {
    let p = Path::from(path);
    let (header, cipher) = new_object(keyring, &p)?;
    let sealed = seal_payload(&header, cipher, &PutPayload::from(plain.to_vec()), &p)?;
    Ok(sealed.to_vec())
}

/// Opens an object sealed by [`seal_bytes`] (or written through an [`EncryptedStore`]),
/// given whole.
///
/// # Errors
/// [`CryptError::NotEncrypted`] for bytes not in the format (a plaintext file where an
/// encrypted one belongs), [`CryptError::WrongKey`] naming both key ids, or an
/// authentication failure naming the block.
pub fn open_bytes(
    keyring: &Keyring,
    stored: &[u8],
    path: &str,
) -> std::result::Result<Vec<u8>, CryptError> {
    let p = Path::from(path);
    let cipher = open_object(keyring, stored, &p)?;
    let layout = Layout::of(stored.len() as u64, &p)?;
    let body = stored.get(HEADER_LEN..).unwrap_or_default();
    let plain = decrypt_blocks(&cipher, &layout, 0, layout.blocks - 1, body, &p)?;
    Ok(plain.to_vec())
}

/// The cipher of an existing object, from its header.
fn open_object(
    keyring: &Keyring,
    header: &[u8],
    path: &Path,
) -> std::result::Result<Arc<ObjectCipher>, CryptError> {
    let h = Header::decode(header, path)?;
    if h.kind != KIND_BLOCKS {
        return Err(CryptError::NotEncrypted {
            path: path.to_string(),
            reason: "a record log (an audit file or a write-ahead log segment), not an object"
                .into(),
        });
    }
    let mut data_key = h.data_key(keyring, path)?;
    let cipher = ObjectCipher::new(&data_key, h.object_id, path)?;
    data_key.fill(0);
    Ok(Arc::new(cipher))
}

/// Cuts plaintext into blocks and seals them, holding back the last block until it is known
/// to be the last.
struct BlockSealer {
    cipher: Arc<ObjectCipher>,
    pending: Vec<u8>,
    next: u64,
    path: Path,
}

impl BlockSealer {
    fn new(cipher: Arc<ObjectCipher>, path: Path) -> BlockSealer {
        BlockSealer {
            cipher,
            pending: Vec::with_capacity(BLOCK_SIZE),
            next: 0,
            path,
        }
    }

    fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), CryptError> {
        while !data.is_empty() {
            if self.pending.len() == BLOCK_SIZE {
                // More data follows: the pending block is not the last.
                self.seal_pending(false, out)?;
            }
            let take = (BLOCK_SIZE - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> std::result::Result<(), CryptError> {
        self.seal_pending(true, out)
    }

    fn seal_pending(
        &mut self,
        last: bool,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), CryptError> {
        let start = out.len();
        out.extend_from_slice(&self.pending);
        let tag = self
            .cipher
            .seal(self.next, last, &mut out[start..])
            .ok_or_else(|| CryptError::Internal {
                path: self.path.to_string(),
                reason: format!("sealing block {} failed", self.next),
            })?;
        out.extend_from_slice(tag.as_ref());
        self.pending.clear();
        self.next += 1;
        Ok(())
    }
}

/// Data keys of objects this store read or wrote, by path.
#[derive(Default)]
struct KeyCache {
    map: Mutex<HashMap<Path, Arc<ObjectCipher>>>,
}

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Path, Arc<ObjectCipher>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, path: &Path) -> Option<Arc<ObjectCipher>> {
        self.lock().get(path).cloned()
    }

    fn insert(&self, path: &Path, cipher: Arc<ObjectCipher>) {
        let mut map = self.lock();
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(path.clone(), cipher);
    }

    fn remove(&self, path: &Path) {
        self.lock().remove(path);
    }
}

/// An object store that encrypts everything it writes to `inner` and decrypts everything it
/// reads (the format: the module documentation). Preconditions (`PutMode::Create`,
/// `PutMode::Update`, `if_match`, ...) pass through to `inner` unchanged.
pub struct EncryptedStore {
    inner: Arc<dyn ObjectStore>,
    keyring: Keyring,
    cache: Arc<KeyCache>,
    min_part: usize,
}

impl fmt::Debug for EncryptedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("inner", &self.inner)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for EncryptedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptedStore({})", self.inner)
    }
}

/// A failure of one read attempt: the store's, or the format's (which a stale cached key may
/// explain).
enum Fetch {
    Store(OsError),
    Crypt(CryptError),
}

impl From<OsError> for Fetch {
    fn from(e: OsError) -> Fetch {
        Fetch::Store(e)
    }
}

impl From<CryptError> for Fetch {
    fn from(e: CryptError) -> Fetch {
        Fetch::Crypt(e)
    }
}

impl From<Fetch> for OsError {
    fn from(e: Fetch) -> OsError {
        match e {
            Fetch::Store(e) => e,
            Fetch::Crypt(e) => e.into(),
        }
    }
}

impl EncryptedStore {
    /// Encrypts what is written to `inner` under data keys wrapped by `keyring`'s current KEK.
    pub fn new(inner: Arc<dyn ObjectStore>, keyring: Keyring) -> EncryptedStore {
        EncryptedStore {
            inner,
            keyring,
            cache: Arc::default(),
            min_part: DEFAULT_MIN_PART,
        }
    }

    /// [`EncryptedStore::new`], as the `Arc<dyn ObjectStore>` callers hold.
    pub fn wrap(inner: Arc<dyn ObjectStore>, keyring: Keyring) -> Arc<dyn ObjectStore> {
        Arc::new(EncryptedStore::new(inner, keyring))
    }

    /// Sets the smallest part a multipart upload sends to `inner` (all but the last part);
    /// [`DEFAULT_MIN_PART`] (S3's minimum) unless set.
    pub fn with_min_part_size(mut self, bytes: usize) -> EncryptedStore {
        self.min_part = bytes.max(1);
        self
    }

    /// The store encrypted objects are written to.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn options_with(options: &GetOptions, range: Option<GetRange>) -> GetOptions {
        let mut o = options.clone();
        o.range = range;
        o.head = false;
        o
    }

    /// A ranged read of plaintext bytes `want` (non-empty).
    async fn get_bounded(
        &self,
        location: &Path,
        options: &GetOptions,
        want: Range<u64>,
    ) -> OsResult<GetResult> {
        if let Some(cipher) = self.cache.get(location) {
            match self
                .fetch_bounded(location, options, &want, Some(cipher))
                .await
            {
                Err(Fetch::Crypt(CryptError::BlockTampered { .. })) => {
                    // The cached key may belong to an object since replaced: read afresh.
                    self.cache.remove(location);
                }
                other => return other.map_err(OsError::from),
            }
        }
        self.fetch_bounded(location, options, &want, None)
            .await
            .map_err(OsError::from)
    }

    async fn fetch_bounded(
        &self,
        location: &Path,
        options: &GetOptions,
        want: &Range<u64>,
        cached: Option<Arc<ObjectCipher>>,
    ) -> std::result::Result<GetResult, Fetch> {
        let first = want.start / BLOCK_SIZE as u64;
        let last = (want.end - 1) / BLOCK_SIZE as u64;
        let sealed = SEALED_BLOCK_LEN as u64;
        let start = HEADER_LEN as u64 + first * sealed;
        let end = HEADER_LEN as u64 + (last + 1) * sealed;
        let (cipher, result, blocks) = match cached {
            Some(cipher) => {
                let r = self
                    .inner
                    .get_opts(
                        location,
                        Self::options_with(options, Some(GetRange::Bounded(start..end))),
                    )
                    .await?;
                let (meta, attributes, extensions) =
                    (r.meta.clone(), r.attributes.clone(), r.extensions.clone());
                let bytes = r.bytes().await?;
                (cipher, (meta, attributes, extensions), bytes)
            }
            None if start <= COALESCE => {
                let r = self
                    .inner
                    .get_opts(
                        location,
                        Self::options_with(options, Some(GetRange::Bounded(0..end))),
                    )
                    .await?;
                let (meta, attributes, extensions) =
                    (r.meta.clone(), r.attributes.clone(), r.extensions.clone());
                let bytes = r.bytes().await?;
                let cipher = open_object(&self.keyring, &bytes, location)?;
                let blocks = bytes.slice((start as usize).min(bytes.len())..);
                (cipher, (meta, attributes, extensions), blocks)
            }
            None => {
                let header = self.inner.get_opts(
                    location,
                    Self::options_with(options, Some(GetRange::Bounded(0..HEADER_LEN as u64))),
                );
                let body = self.inner.get_opts(
                    location,
                    Self::options_with(options, Some(GetRange::Bounded(start..end))),
                );
                let (header, body) = futures::try_join!(header, body)?;
                let header = header.bytes().await?;
                let cipher = open_object(&self.keyring, &header, location)?;
                let (meta, attributes, extensions) = (
                    body.meta.clone(),
                    body.attributes.clone(),
                    body.extensions.clone(),
                );
                let bytes = body.bytes().await?;
                (cipher, (meta, attributes, extensions), bytes)
            }
        };
        let (mut meta, attributes, extensions) = result;
        let layout = Layout::of(meta.size, location)?;
        if want.start >= layout.plain {
            return Err(CryptError::Range {
                path: location.to_string(),
                reason: format!(
                    "wanted range starting at {}, but the object is only {} bytes long",
                    want.start, layout.plain
                ),
            }
            .into());
        }
        self.cache.insert(location, cipher.clone());
        let last = last.min(layout.blocks - 1);
        let plain = decrypt_blocks(&cipher, &layout, first, last, &blocks, location)?;
        let end = want.end.min(layout.plain);
        let base = first * BLOCK_SIZE as u64;
        let out = plain.slice((want.start - base) as usize..(end - base) as usize);
        meta.size = layout.plain;
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream::once(async move { Ok(out) }).boxed()),
            meta,
            range: want.start..end,
            attributes,
            extensions,
        })
    }

    /// A streamed read from plaintext offset `offset` to the end.
    async fn get_stream(
        &self,
        location: &Path,
        options: &GetOptions,
        offset: u64,
    ) -> OsResult<GetResult> {
        let first = offset / BLOCK_SIZE as u64;
        let (cipher, r) = if first == 0 {
            let r = self
                .inner
                .get_opts(location, Self::options_with(options, None))
                .await?;
            (None, r)
        } else {
            let start = HEADER_LEN as u64 + first * SEALED_BLOCK_LEN as u64;
            let header = self.inner.get_opts(
                location,
                Self::options_with(options, Some(GetRange::Bounded(0..HEADER_LEN as u64))),
            );
            let body = self.inner.get_opts(
                location,
                Self::options_with(options, Some(GetRange::Offset(start))),
            );
            let (header, body) = futures::try_join!(header, body)?;
            let header = header.bytes().await?;
            let cipher = open_object(&self.keyring, &header, location)?;
            self.cache.insert(location, cipher.clone());
            (Some(cipher), body)
        };
        let layout = Layout::of(r.meta.size, location)?;
        if offset > 0 && offset >= layout.plain {
            return Err(CryptError::Range {
                path: location.to_string(),
                reason: format!(
                    "wanted range starting at {offset}, but the object is only {} bytes long",
                    layout.plain
                ),
            }
            .into());
        }
        let mut meta = r.meta.clone();
        meta.size = layout.plain;
        let (attributes, extensions) = (r.attributes.clone(), r.extensions.clone());
        let state = Decrypting {
            src: stored_stream(r, location),
            buf: BytesMut::new(),
            keyring: self.keyring.clone(),
            cache: self.cache.clone(),
            cipher,
            next: first,
            layout,
            skip: (offset - first * BLOCK_SIZE as u64) as usize,
            path: location.clone(),
        };
        let payload = stream::try_unfold(state, Decrypting::next_chunk).boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range: offset.min(layout.plain)..layout.plain,
            attributes,
            extensions,
        })
    }
}

/// Opens blocks `first..=last` of an object from their stored bytes.
fn decrypt_blocks(
    cipher: &ObjectCipher,
    layout: &Layout,
    first: u64,
    last: u64,
    stored: &[u8],
    path: &Path,
) -> std::result::Result<Bytes, CryptError> {
    let plain_len = layout.plain_range(last).end - layout.plain_range(first).start;
    let mut out = Vec::with_capacity(plain_len as usize);
    let mut scratch = vec![0u8; SEALED_BLOCK_LEN];
    let mut at = 0usize;
    for i in first..=last {
        let len = layout.sealed_len(i);
        let Some(sealed) = stored.get(at..at + len) else {
            return Err(CryptError::Truncated {
                path: path.to_string(),
                reason: format!("block {i} is cut short"),
            });
        };
        let buf = &mut scratch[..len];
        buf.copy_from_slice(sealed);
        let n = cipher
            .open(i, layout.is_last(i), buf)
            .ok_or_else(|| tampered(path, layout, i))?;
        out.extend_from_slice(&buf[..n]);
        at += len;
    }
    Ok(Bytes::from(out))
}

fn tampered(path: &Path, layout: &Layout, block: u64) -> CryptError {
    let r = layout.plain_range(block);
    CryptError::BlockTampered {
        path: path.to_string(),
        block,
        start: r.start,
        end: r.end,
    }
}

/// The stored bytes of a get, as a stream (a local file read in large chunks).
fn stored_stream(r: GetResult, location: &Path) -> BoxStream<'static, OsResult<Bytes>> {
    match r.payload {
        GetResultPayload::Stream(s) => s,
        GetResultPayload::File(file, _) => {
            let end = r.range.end;
            let path = location.to_string();
            stream::try_unfold((file, r.range.start), move |(file, pos)| {
                let path = path.clone();
                async move {
                    if pos >= end {
                        return Ok(None);
                    }
                    let n = (end - pos).min(READ_CHUNK as u64) as usize;
                    let read = move || -> std::io::Result<(std::fs::File, Vec<u8>)> {
                        let mut file = file;
                        file.seek(SeekFrom::Start(pos))?;
                        let mut buf = vec![0u8; n];
                        file.read_exact(&mut buf)?;
                        Ok((file, buf))
                    };
                    let done = match tokio::runtime::Handle::try_current() {
                        Ok(handle) => handle
                            .spawn_blocking(read)
                            .await
                            .map_err(|e| OsError::JoinError { source: e })?,
                        Err(_) => read(),
                    };
                    let (file, buf) =
                        done.map_err(|source| OsError::from(CryptError::Read { path, source }))?;
                    Ok(Some((Bytes::from(buf), (file, pos + n as u64))))
                }
            })
            .boxed()
        }
    }
}

/// The state of a streamed decryption.
struct Decrypting {
    src: BoxStream<'static, OsResult<Bytes>>,
    buf: BytesMut,
    keyring: Keyring,
    cache: Arc<KeyCache>,
    cipher: Option<Arc<ObjectCipher>>,
    next: u64,
    layout: Layout,
    skip: usize,
    path: Path,
}

impl Decrypting {
    async fn fill(&mut self, n: usize) -> OsResult<()> {
        while self.buf.len() < n {
            match self.src.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk?),
                None => {
                    return Err(CryptError::Truncated {
                        path: self.path.to_string(),
                        reason: format!(
                            "the stream ended in block {} of {}",
                            self.next, self.layout.blocks
                        ),
                    }
                    .into())
                }
            }
        }
        Ok(())
    }

    async fn next_chunk(mut self) -> OsResult<Option<(Bytes, Decrypting)>> {
        if self.next >= self.layout.blocks {
            return Ok(None);
        }
        let cipher = match &self.cipher {
            Some(c) => c.clone(),
            None => {
                self.fill(HEADER_LEN).await?;
                let header = self.buf.split_to(HEADER_LEN);
                let c = open_object(&self.keyring, &header, &self.path)?;
                self.cache.insert(&self.path, c.clone());
                self.cipher = Some(c.clone());
                c
            }
        };
        let i = self.next;
        let len = self.layout.sealed_len(i);
        self.fill(len).await?;
        let mut block = self.buf.split_to(len);
        let n = cipher
            .open(i, self.layout.is_last(i), &mut block[..])
            .ok_or_else(|| tampered(&self.path, &self.layout, i))?;
        block.truncate(n);
        let mut plain = block.freeze();
        if self.skip > 0 {
            plain = plain.slice(self.skip.min(plain.len())..);
            self.skip = 0;
        }
        self.next += 1;
        Ok(Some((plain, self)))
    }
}

/// Seals a whole payload: the header, then its blocks.
fn seal_payload(
    header: &[u8; HEADER_LEN],
    cipher: Arc<ObjectCipher>,
    payload: &PutPayload,
    path: &Path,
) -> std::result::Result<Bytes, CryptError> {
    let plain = payload.content_length() as u64;
    let mut out = Vec::with_capacity(ciphertext_len(plain) as usize);
    out.extend_from_slice(header);
    let mut sealer = BlockSealer::new(cipher, path.clone());
    for chunk in payload.iter() {
        sealer.push(chunk, &mut out)?;
    }
    sealer.finish(&mut out)?;
    Ok(Bytes::from(out))
}

/// A multipart upload that seals blocks as parts arrive and sends parts of at least
/// `min_part` stored bytes (but the last) to the upload below.
struct EncryptedUpload {
    inner: Box<dyn MultipartUpload>,
    sealer: BlockSealer,
    out: Vec<u8>,
    min_part: usize,
    cache: Arc<KeyCache>,
    path: Path,
}

impl fmt::Debug for EncryptedUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedUpload")
            .field("inner", &self.inner)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for EncryptedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        for chunk in data.iter() {
            if let Err(e) = self.sealer.push(chunk, &mut self.out) {
                return Box::pin(futures::future::ready(Err(e.into())));
            }
        }
        if self.out.len() >= self.min_part {
            let part = std::mem::take(&mut self.out);
            self.inner.put_part(PutPayload::from(part))
        } else {
            Box::pin(futures::future::ready(Ok(())))
        }
    }

    async fn complete(&mut self) -> OsResult<PutResult> {
        self.sealer.finish(&mut self.out)?;
        let part = std::mem::take(&mut self.out);
        self.inner.put_part(PutPayload::from(part)).await?;
        let done = self.inner.complete().await?;
        self.cache.insert(&self.path, self.sealer.cipher.clone());
        Ok(done)
    }

    async fn abort(&mut self) -> OsResult<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for EncryptedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> OsResult<PutResult> {
        let (header, cipher) = new_object(&self.keyring, location)?;
        let sealed = seal_payload(&header, cipher.clone(), &payload, location)?;
        let done = self
            .inner
            .put_opts(location, PutPayload::from(sealed), opts)
            .await?;
        self.cache.insert(location, cipher);
        Ok(done)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> OsResult<Box<dyn MultipartUpload>> {
        let (header, cipher) = new_object(&self.keyring, location)?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        let mut out = Vec::with_capacity(self.min_part.min(64 * 1024 * 1024) + SEALED_BLOCK_LEN);
        out.extend_from_slice(&header);
        Ok(Box::new(EncryptedUpload {
            inner,
            sealer: BlockSealer::new(cipher, location.clone()),
            out,
            min_part: self.min_part,
            cache: self.cache.clone(),
            path: location.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, mut options: GetOptions) -> OsResult<GetResult> {
        if options.head {
            let r = self.inner.get_opts(location, options).await?;
            let layout = Layout::of(r.meta.size, location)?;
            let mut meta = r.meta;
            meta.size = layout.plain;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                meta,
                range: 0..layout.plain,
                attributes: r.attributes,
                extensions: r.extensions,
            });
        }
        match options.range.take() {
            None => self.get_stream(location, &options, 0).await,
            Some(GetRange::Offset(offset)) => self.get_stream(location, &options, offset).await,
            Some(GetRange::Bounded(want)) => {
                if want.end <= want.start {
                    return Err(CryptError::Range {
                        path: location.to_string(),
                        reason: format!("range {}..{} is empty", want.start, want.end),
                    }
                    .into());
                }
                self.get_bounded(location, &options, want).await
            }
            Some(GetRange::Suffix(n)) => {
                let mut head = options.clone();
                head.head = true;
                let r = self.inner.get_opts(location, head).await?;
                let size = Layout::of(r.meta.size, location)?.plain;
                let start = size.saturating_sub(n);
                if start == size {
                    let mut meta = r.meta;
                    meta.size = size;
                    return Ok(GetResult {
                        payload: GetResultPayload::Stream(stream::empty().boxed()),
                        meta,
                        range: size..size,
                        attributes: r.attributes,
                        extensions: r.extensions,
                    });
                }
                self.get_bounded(location, &options, start..size).await
            }
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, OsResult<Path>>,
    ) -> BoxStream<'static, OsResult<Path>> {
        let cache = self.cache.clone();
        self.inner
            .delete_stream(locations)
            .inspect_ok(move |p| cache.remove(p))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, OsResult<ObjectMeta>> {
        self.inner
            .list(prefix)
            .map(|m| m.and_then(plain_meta))
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, OsResult<ObjectMeta>> {
        self.inner
            .list_with_offset(prefix, offset)
            .map(|m| m.and_then(plain_meta))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> OsResult<ListResult> {
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.objects = r
            .objects
            .into_iter()
            .map(plain_meta)
            .collect::<OsResult<_>>()?;
        Ok(r)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> OsResult<()> {
        // The header travels with the object: the copy decrypts as the original does.
        self.inner.copy_opts(from, to, options).await?;
        self.cache.remove(to);
        Ok(())
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> OsResult<()> {
        self.inner.rename_opts(from, to, options).await?;
        self.cache.remove(from);
        self.cache.remove(to);
        Ok(())
    }
}

/// An object's metadata with its plaintext size.
fn plain_meta(mut meta: ObjectMeta) -> OsResult<ObjectMeta> {
    meta.size = Layout::of(meta.size, &meta.location)?.plain;
    Ok(meta)
}

/// The id of the KEK that wrapped the data key of the object at `location` in `inner` (the
/// store below the encryption).
///
/// # Errors
/// The store's error, or [`CryptError`] if the object is not encrypted.
pub async fn object_key_id(inner: &dyn ObjectStore, location: &Path) -> OsResult<KeyId> {
    let header = inner.get_range(location, 0..HEADER_LEN as u64).await?;
    Ok(Header::decode(&header, location)?.key_id)
}

/// What a [`rotate`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Objects whose data key was rewrapped under the current KEK (header rewritten).
    pub rewrapped: Vec<Path>,
    /// Objects already under the current KEK (left alone: a rotation can be rerun).
    pub already_current: u64,
    /// Objects not in the encrypted format (left alone).
    pub not_encrypted: Vec<Path>,
}

/// Moves every object under `prefix` of `inner` (the store below the encryption) to the
/// keyring's current KEK: each object's data key is unwrapped with the KEK that wrapped it
/// (which the keyring must hold, as a retired key) and wrapped again under the current one.
///
/// What is rewritten: bytes 16..32 (key id) and 48..108 (wrap nonce, wrapped data key) of
/// each object's header. The data blocks are neither decrypted nor re-encrypted: they are
/// copied byte for byte. An object store cannot change bytes in place, so each object is
/// written again whole, in one atomic put (in parts for objects over 64 MiB): a reader sees
/// the old object or the new one, and both decrypt to the same bytes while the keyring holds
/// both keys. Objects are immutable in Ward, so nothing else writes them meanwhile. A rotation
/// cut short leaves each object under one KEK or the other; running it again finishes it.
///
/// # Errors
/// The store's error, or [`CryptError::WrongKey`] if an object's KEK is not in the keyring
/// (nothing of that object is changed).
pub async fn rotate(
    inner: &dyn ObjectStore,
    keyring: &Keyring,
    prefix: Option<&Path>,
) -> OsResult<Rotation> {
    let mut done = Rotation::default();
    let objects: Vec<ObjectMeta> = inner.list(prefix).try_collect().await?;
    for meta in objects {
        let location = &meta.location;
        if Layout::of_stored(meta.size).is_none() {
            done.not_encrypted.push(location.clone());
            continue;
        }
        let head = inner.get_range(location, 0..HEADER_LEN as u64).await?;
        if head.get(0..8) != Some(&MAGIC[..]) {
            done.not_encrypted.push(location.clone());
            continue;
        }
        let header = Header::decode(&head, location)?;
        if header.key_id == keyring.current_id() {
            done.already_current += 1;
            continue;
        }
        let mut data_key = header.data_key(keyring, location)?;
        let wrapped = keyring.wrap(
            &data_key,
            &wrap_aad_of(header.kind, keyring.current_id(), &header.object_id),
        );
        data_key.fill(0);
        let (key_id, wrap_nonce, wrapped) = wrapped.map_err(|e| CryptError::Internal {
            path: location.to_string(),
            reason: e.to_string(),
        })?;
        let new_header = Header {
            kind: header.kind,
            key_id,
            object_id: header.object_id,
            wrap_nonce,
            wrapped,
        }
        .encode();
        let body_options = GetOptions {
            range: Some(GetRange::Offset(HEADER_LEN as u64)),
            if_match: meta.e_tag.clone(),
            ..Default::default()
        };
        let body = inner.get_opts(location, body_options).await?;
        let expected = meta.size - HEADER_LEN as u64;
        if meta.size <= ROTATE_IN_ONE_PUT {
            let blocks = body.bytes().await?;
            if blocks.len() as u64 != expected {
                return Err(CryptError::Truncated {
                    path: location.to_string(),
                    reason: format!("read {} block bytes of {expected}", blocks.len()),
                }
                .into());
            }
            let payload: PutPayload = [Bytes::copy_from_slice(&new_header), blocks]
                .into_iter()
                .collect();
            inner
                .put_opts(location, payload, PutOptions::default())
                .await?;
        } else {
            let mut upload = inner.put_multipart(location).await?;
            let copied =
                copy_in_parts(upload.as_mut(), &new_header, body, expected, location).await;
            match copied {
                Ok(()) => {
                    upload.complete().await?;
                }
                Err(e) => {
                    let _ = upload.abort().await;
                    return Err(e);
                }
            }
        }
        done.rewrapped.push(location.clone());
    }
    Ok(done)
}

/// Sends `header` and then the stored blocks of `body` as parts of `upload`.
async fn copy_in_parts(
    upload: &mut dyn MultipartUpload,
    header: &[u8; HEADER_LEN],
    body: GetResult,
    expected: u64,
    location: &Path,
) -> OsResult<()> {
    let mut src = stored_stream(body, location);
    let mut part = Vec::with_capacity(2 * DEFAULT_MIN_PART);
    part.extend_from_slice(header);
    let mut copied = 0u64;
    while let Some(chunk) = src.try_next().await? {
        copied += chunk.len() as u64;
        part.extend_from_slice(&chunk);
        if part.len() >= DEFAULT_MIN_PART {
            upload
                .put_part(PutPayload::from(std::mem::take(&mut part)))
                .await?;
        }
    }
    if copied != expected {
        return Err(CryptError::Truncated {
            path: location.to_string(),
            reason: format!("read {copied} block bytes of {expected}"),
        }
        .into());
    }
    if !part.is_empty() {
        upload.put_part(PutPayload::from(part)).await?;
    }
    Ok(())
}

/// The cipher of a record log: an append-only file whose records are sealed one by one
/// under the file's own data key (the audit trail's files, a live feed's write-ahead log
/// segments; docs/encryption.md "Record logs").
///
/// The file starts with a header of this module's format with kind 1 (byte 11; block size
/// 0): the same key id, object id, wrap nonce and wrapped data key, rewritten the same way
/// by a rotation ([`rewrap_header`]). Each record is then sealed into a frame:
///
/// ```text
/// index: u64 big-endian      the record's position in the file, from 0
/// nonce: 12 random bytes
/// ciphertext, then its 16-byte tag   (associated data: header[0..16] || object id || index)
/// ```
///
/// Nonces are random, not counters, because a writer that cuts a torn last record and
/// writes another at the same index must never reuse a nonce (2^32 records per data key
/// stay safe; a file holds at most millions). The index in the associated data makes a frame
/// moved within its file, or copied into another file, fail; a frame cut from the middle is
/// an index gap readers report. How frames are delimited is the log's business (a line of
/// base64 in the audit trail, a length-prefixed record in a segment).
pub struct RecordLog {
    cipher: Arc<ObjectCipher>,
    keyring: Keyring,
    path: String,
}

impl fmt::Debug for RecordLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Bytes a sealed record adds to its plaintext: index, nonce and tag.
pub const RECORD_OVERHEAD: usize = 8 + NONCE_LEN + TAG_LEN;

/// Whether `bytes` start with the header of a record log.
pub fn is_record_log_header(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0..8] == MAGIC && bytes[11] == KIND_RECORDS
}

impl RecordLog {
    /// A new record log: its header (to write first) and its cipher, under a fresh data key
    /// wrapped by the keyring's current KEK. `path` names it in errors.
    ///
    /// # Errors
    /// [`CryptError::Internal`] if the random source or the cipher fails.
    pub fn create(
        keyring: &Keyring,
        path: &str,
    ) -> std::result::Result<([u8; HEADER_LEN], RecordLog), CryptError> {
        let p = Path::from(path);
        let internal = |e: Error| CryptError::Internal {
            path: path.to_string(),
            reason: e.to_string(),
        };
        let mut data_key = [0u8; KEY_LEN];
        let mut object_id = [0u8; OBJECT_ID_LEN];
        keyring.fill_random(&mut data_key).map_err(internal)?;
        keyring.fill_random(&mut object_id).map_err(internal)?;
        let (key_id, wrap_nonce, wrapped) = keyring
            .wrap(
                &data_key,
                &wrap_aad_of(KIND_RECORDS, keyring.current_id(), &object_id),
            )
            .map_err(internal)?;
        let header = Header {
            kind: KIND_RECORDS,
            key_id,
            object_id,
            wrap_nonce,
            wrapped,
        };
        let cipher = ObjectCipher::new(&data_key, object_id, &p);
        data_key.fill(0);
        Ok((
            header.encode(),
            RecordLog {
                cipher: Arc::new(cipher?),
                keyring: keyring.clone(),
                path: path.to_string(),
            },
        ))
    }

    /// The cipher of an existing record log, from its header.
    ///
    /// # Errors
    /// [`CryptError::NotEncrypted`] when `header` is not a record log's (a plaintext file
    /// where an encrypted one belongs); [`CryptError::WrongKey`] naming both key ids;
    /// [`CryptError::HeaderTampered`].
    pub fn open(
        keyring: &Keyring,
        header: &[u8],
        path: &str,
    ) -> std::result::Result<RecordLog, CryptError> {
        let p = Path::from(path);
        let h = Header::decode(header, &p)?;
        if h.kind != KIND_RECORDS {
            return Err(CryptError::NotEncrypted {
                path: path.to_string(),
                reason: "an encrypted object, not a record log".into(),
            });
        }
        let mut data_key = h.data_key(keyring, &p)?;
        let cipher = ObjectCipher::new(&data_key, h.object_id, &p);
        data_key.fill(0);
        Ok(RecordLog {
            cipher: Arc::new(cipher?),
            keyring: keyring.clone(),
            path: path.to_string(),
        })
    }

    fn aad(&self, index: u64) -> [u8; 16 + OBJECT_ID_LEN + 8] {
        let mut a = [0u8; 16 + OBJECT_ID_LEN + 8];
        a[..16].copy_from_slice(&fixed_prefix_of(KIND_RECORDS));
        a[16..32].copy_from_slice(&self.cipher.object_id);
        a[32..40].copy_from_slice(&index.to_be_bytes());
        a
    }

    /// Seals record number `index` (from 0 in its file) into a frame.
    ///
    /// # Errors
    /// [`CryptError::Internal`] if the random source or the cipher fails.
    pub fn seal(&self, index: u64, plain: &[u8]) -> std::result::Result<Vec<u8>, CryptError> {
        let internal = |reason: String| CryptError::Internal {
            path: self.path.clone(),
            reason,
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.keyring
            .fill_random(&mut nonce)
            .map_err(|e| internal(e.to_string()))?;
        let mut out = Vec::with_capacity(plain.len() + RECORD_OVERHEAD);
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(index)),
                &mut out[8 + NONCE_LEN..],
            )
            .map_err(|_| internal(format!("sealing record {index} failed")))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a frame: its index and plaintext. `at` says where it is in the file (`line 7`,
    /// `byte 4096`) for the error; `expect`, when given, is the index it must have.
    ///
    /// # Errors
    /// [`CryptError::RecordTampered`] naming the file and `at` when the frame is too short,
    /// out of place or does not authenticate.
    pub fn open_record(
        &self,
        frame: &[u8],
        expect: Option<u64>,
        at: &str,
    ) -> std::result::Result<(u64, Vec<u8>), CryptError> {
        let bad = |reason: String| CryptError::RecordTampered {
            path: self.path.clone(),
            at: at.to_string(),
            reason,
        };
        if frame.len() < RECORD_OVERHEAD {
            return Err(bad(format!(
                "{} bytes, shorter than a sealed record",
                frame.len()
            )));
        }
        let mut ix = [0u8; 8];
        ix.copy_from_slice(&frame[..8]);
        let index = u64::from_be_bytes(ix);
        if let Some(want) = expect {
            if index != want {
                return Err(bad(format!(
                    "record index {index} where {want} belongs (records removed, reordered or copied from elsewhere)"
                )));
            }
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&frame[8..8 + NONCE_LEN]);
        let mut buf = frame[8 + NONCE_LEN..].to_vec();
        let n = self
            .cipher
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(index)),
                &mut buf,
            )
            .map_err(|_| {
                bad("failed authentication: the record was tampered with or is corrupt".into())
            })?
            .len();
        buf.truncate(n);
        Ok((index, buf))
    }
}

/// The header of an encrypted object or record log rewrapped under `keyring`'s current KEK
/// (key id, wrap nonce and wrapped data key replaced; the data key, the object id and
/// everything after the header unchanged), or `None` when it is already under it. For the
/// local files a store rewrites in place ([`crate::store::Store::rotate_key`]).
///
/// # Errors
/// [`CryptError::NotEncrypted`] for bytes not in the format; [`CryptError::WrongKey`] when
/// the keyring does not hold the KEK that wrapped it; [`CryptError::HeaderTampered`].
pub fn rewrap_header(
    keyring: &Keyring,
    header: &[u8],
    path: &str,
) -> std::result::Result<Option<[u8; HEADER_LEN]>, CryptError> {
    let p = Path::from(path);
    let h = Header::decode(header, &p)?;
    if h.key_id == keyring.current_id() {
        return Ok(None);
    }
    let mut data_key = h.data_key(keyring, &p)?;
    let wrapped = keyring.wrap(
        &data_key,
        &wrap_aad_of(h.kind, keyring.current_id(), &h.object_id),
    );
    data_key.fill(0);
    let (key_id, wrap_nonce, wrapped) = wrapped.map_err(|e| CryptError::Internal {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Some(
        Header {
            kind: h.kind,
            key_id,
            object_id: h.object_id,
            wrap_nonce,
            wrapped,
        }
        .encode(),
    ))
}

/// Encryption for Lance datasets: Lance's [`WrappingObjectStore`] putting an
/// [`EncryptedStore`] over every object store Lance opens with [`Self::store_params`].
///
/// A local dataset must be opened by a `file-object-store://` URI ([`Self::dataset_uri`]):
/// under `file://` (or a plain path) Lance reads and writes files directly, past any wrapper.
#[derive(Debug, Clone)]
pub struct LanceEncryption {
    keyring: Keyring,
}

impl LanceEncryption {
    /// The wrapper for `keyring`.
    pub fn new(keyring: Keyring) -> Arc<LanceEncryption> {
        Arc::new(LanceEncryption { keyring })
    }

    /// Object store parameters that encrypt (for `WriteParams::store_params`,
    /// `ReadParams::store_options`, `DatasetBuilder::with_store_params`). Lance caches stores
    /// by these parameters: keep one `Arc<LanceEncryption>` per keyring.
    pub fn store_params(self: &Arc<Self>) -> ObjectStoreParams {
        ObjectStoreParams {
            object_store_wrapper: Some(self.clone()),
            ..Default::default()
        }
    }

    /// The URI of a local dataset directory that makes Lance go through the object store
    /// (`file-object-store://` and the absolute path, percent-encoded).
    ///
    /// # Errors
    /// [`Error::Io`] if the path cannot be made absolute; [`Error::Store`] if it is not UTF-8.
    pub fn dataset_uri(dir: &std::path::Path) -> Result<String> {
        let abs = std::path::absolute(dir).map_err(|e| Error::io(dir, e))?;
        let text = abs.to_str().ok_or_else(|| Error::Store {
            path: abs.clone(),
            reason: "path is not UTF-8".into(),
        })?;
        let mut uri = String::from("file-object-store://");
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
                uri.push(char::from(b));
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
        Ok(uri)
    }
}

impl WrappingObjectStore for LanceEncryption {
    fn wrap(&self, _store_prefix: &str, original: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        EncryptedStore::wrap(original, self.keyring.clone())
    }

    /// No pushed-down listing: it would report stored sizes, not plaintext sizes.
    fn wrap_paginated(
        &self,
        _store_prefix: &str,
        _original: Arc<dyn PaginatedListStore>,
    ) -> Option<Arc<dyn PaginatedListStore>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        for plain in [0u64, 1, 100, 65_535, 65_536, 65_537, 131_072, 1_000_000] {
            let stored = ciphertext_len(plain);
            assert_eq!(plaintext_len(stored), Some(plain), "plain {plain}");
        }
        // Sizes no object has: shorter than a header and a tag, or a final block of a tag
        // only after a full block, or of less than a tag.
        assert_eq!(plaintext_len(0), None);
        assert_eq!(plaintext_len(HEADER_LEN as u64 + 15), None);
        assert_eq!(
            plaintext_len((HEADER_LEN + SEALED_BLOCK_LEN + TAG_LEN) as u64),
            None
        );
        assert_eq!(
            plaintext_len((HEADER_LEN + SEALED_BLOCK_LEN + 3) as u64),
            None
        );
    }
}
