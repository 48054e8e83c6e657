//! The version store: immutable dataset versions named by their content hash.
//!
//! # Layout of a store directory
//!
//! ```text
//! STORE/
//!   ward-store.json            format marker
//!   versions/<hex>/manifest.json   the manifest (hash, kind, schema, lineage, file digests)
//!   versions/<hex>/data/       the Lance dataset holding the rows
//!   refs/<name>/<seq>.json     the heads of a name, one entry per move ([`heads`])
//!   tmp/<id>/                  writes in progress (and leftovers of interrupted ones)
//! ```
//!
//! # Names
//! A name (`encounters`, `timeline-readmission`, a tag such as `prod`) means its head, and
//! `NAME@TIME` the head it had at TIME: one rule, [`Store::resolve`], for every caller. A put
//! under a name moves that name's head; a tag is the same move made by hand. Heads move only
//! by compare-and-swap ([`heads`]), so two writers that built on the same head cannot both
//! win: the loser gets [`Error::Conflict`] and redoes its work on the new head.
//!
//! # Atomic commit
//! A version is written completely under `tmp/<id>/` (Lance data, then the manifest), every
//! file and directory is synced, and only then is `tmp/<id>` renamed to `versions/<hex>`. A
//! directory rename is atomic, so a reader sees the whole version or nothing, whatever moment
//! a crash hits. If `versions/<hex>` already exists the content is already stored: the
//! temporary copy is removed and the existing version returned, so concurrent writers of the
//! same content all get the one hash and nothing is stored twice. A writer holds an
//! exclusive lock on `tmp/<id>/.lock`; [`Store::cleanup`] removes only unlocked leftovers.
//!
//! # In object storage
//! `--store s3://BUCKET/PREFIX` ([`object`]) keeps the same layout under the prefix, with
//! no rename and no lock: a writer stages the version's Lance data under `data/<id>/` (an id
//! of its own), then publishes it with one create-only write (`If-None-Match: *`) of
//! `versions/<hex>/manifest.json`, whose `data` field names the staged data. If the manifest
//! exists already the content is stored: the writer deletes its staged data and returns the
//! existing version. Heads move by the same create-only write ([`heads`]). Staged data that
//! no manifest names and that is older than [`STAGING_MAX_AGE`] is a killed writer's
//! leftover, which [`Store::cleanup`] removes. See docs/storage.md.
//!
//! # Encrypted
//! A store made by [`Store::init`] with a key provider (`ward init --encrypt`) records the
//! key's id and provider in its marker ([`at_rest`]); opening it loads and checks the key
//! first. Its Lance data is then written and read through [`crypt::LanceEncryption`] (a
//! local dataset by its `file-object-store://` URI), its manifests and head entries are
//! sealed ([`crypt::seal_bytes`]) where a local store writes files itself, and in object
//! storage the store's client is an [`crypt::EncryptedStore`]. The layout, the commit
//! protocols and the hashes are the same; file digests are of the plaintext. See
//! docs/encryption.md.

pub mod at_rest;
pub mod bucketed;
pub mod crypt;
pub mod heads;
mod maintain;
pub mod manifest;
pub mod object;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow::datatypes::{Schema, SchemaRef};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use lance::dataset::{WriteMode, WriteParams};
use lance::Dataset;
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::hash::{ContentHash, TableHasher};
use at_rest::{AtRest, MarkerEncryption};
use heads::{sync_dir, Heads};
pub use heads::{Head, HeadUpdate};
pub use manifest::{ColumnInfo, FileDigest, Kind, Lineage, Manifest, VersionRef};
use object::Remote;

const MARKER: &str = "ward-store.json";
/// The directories a store holds.
const LAYOUT: [&str; 3] = ["versions", "refs", "tmp"];
/// Format 2: names resolve through `refs/` heads. Format 1 kept tags in `tags/*.jsonl` and
/// resolved an untagged name to its newest version; [`Store::open`] migrates it.
const STORE_FORMAT: u32 = 2;
/// How old unpublished staged data in object storage must be before [`Store::cleanup`]
/// takes it for a killed writer's leftover (a live writer publishes long before: it stages
/// and publishes one version in one go).
pub const STAGING_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// What to record about a version being put.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// The dataset name (see [`manifest::validate_name`]).
    pub name: String,
    /// What it holds.
    pub kind: Kind,
    /// Where it came from.
    pub lineage: Lineage,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// How the put moves the head of `name` (default: it becomes the head).
    pub head: HeadUpdate,
}

impl PutOptions {
    /// Options for a version named `name` of kind `kind`, with no lineage or labels.
    pub fn new(name: impl Into<String>, kind: Kind) -> Self {
        PutOptions {
            name: name.into(),
            kind,
            lineage: Lineage::default(),
            labels: BTreeMap::new(),
            head: HeadUpdate::Move,
        }
    }
}

/// The result of a put.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    /// The version's manifest (the existing one if the content was already stored).
    pub manifest: Manifest,
    /// False when the content already existed and nothing new was stored.
    pub created: bool,
    /// The head of the name that now names this version (`None` with [`HeadUpdate::Keep`]).
    pub head: Option<Head>,
}

/// Filters for [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this kind.
    pub kind: Option<Kind>,
    /// Only versions that were ever the head of this name.
    pub name: Option<String>,
}

/// What [`Store::verify`] checked.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The version.
    pub hash: ContentHash,
    /// Rows read back.
    pub rows: u64,
    /// Stored files whose digests matched.
    pub files: usize,
}

/// What [`Store::cleanup`] removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    /// Leftover temporary directories removed.
    pub removed: Vec<String>,
    /// Temporary directories skipped because a writer still holds them.
    pub in_use: Vec<String>,
}

/// A line of a format-1 tag file (`tags/<name>.jsonl`), read only to migrate.
#[derive(Debug, Serialize, Deserialize)]
struct TagEntry {
    hash: ContentHash,
    at: DateTime<Utc>,
}

/// A store of immutable, content-hashed dataset versions in a local directory or in object
/// storage.
#[derive(Debug, Clone)]
pub struct Store {
    /// The directory, or `s3://BUCKET/PREFIX`.
    root: PathBuf,
    clock: SharedClock,
    heads: Heads,
    /// In object storage: the bucket and prefix.
    remote: Option<Remote>,
    /// In object storage: the local directory for what has no place there yet
    /// ([`STATE_DIR_VAR`]).
    state_dir: Option<PathBuf>,
    /// In an encrypted store: its keys ([`at_rest`]).
    crypt: Option<AtRest>,
}

/// The variable naming the local directory that holds, for an `s3://` store, what is not
/// kept in object storage yet: the audit trail and the live feeds' logs.
pub const STATE_DIR_VAR: &str = "WARD_STATE_DIR";

/// The local directory holding the non-version state of the store at `location`: the
/// directory itself, or for an `s3://` store [`STATE_DIR_VAR`]; `what` names what needs it.
///
/// # Errors
/// [`Error::Store`] for an `s3://` store when [`STATE_DIR_VAR`] is not set.
pub fn local_state_dir(location: &Path, what: &str) -> Result<PathBuf> {
    if !object::is_remote(location) {
        return Ok(location.to_path_buf());
    }
    match std::env::var_os(STATE_DIR_VAR).filter(|v| !v.is_empty()) {
        Some(d) => Ok(PathBuf::from(d)),
        None => Err(Error::Store {
            path: location.to_path_buf(),
            reason: format!(
                "{what} is not kept in object storage yet: set {STATE_DIR_VAR} to a local \
                 directory to hold it for this s3:// store (docs/storage.md)"
            ),
        }),
    }
}

impl Store {
    /// Opens the store at `root`, creating its layout if the directory is new or empty.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be created; [`Error::Store`] if it holds
    /// something that is not a Ward store.
    pub fn open(root: impl Into<PathBuf>, clock: SharedClock) -> Result<Store> {
        Store::open_inner(root.into(), clock, true, None)
    }

    /// `ward init`: opens the store at `root`, creating it if new; a new store is encrypted
    /// under the key `encrypt` gives (its marker records the key id and the provider, never
    /// the key: [`at_rest`]).
    ///
    /// # Errors
    /// As [`Store::open`]; the provider's error when its key is missing;
    /// [`Error::FailedPrecondition`] when encryption is asked of an existing plaintext store.
    pub fn init(
        root: impl Into<PathBuf>,
        clock: SharedClock,
        encrypt: Option<&crate::security::keyring::KeyProvider>,
    ) -> Result<Store> {
        let root = root.into();
        let enc = encrypt.map(MarkerEncryption::for_provider).transpose()?;
        let store = Store::open_inner(root, clock, true, enc.as_ref())?;
        if enc.is_some() && store.crypt.is_none() {
            return Err(Error::FailedPrecondition {
                what: format!("store {}", store.root.display()),
                reason: "already a Ward store without encryption: encryption is chosen when a \
                         store is created (ward init --encrypt on a new directory or prefix)"
                    .into(),
            });
        }
        Ok(store)
    }

    /// The store marker's content: the format, and the encryption entry if any.
    fn marker_body(enc: Option<&MarkerEncryption>) -> Result<Vec<u8>> {
        let mut body =
            serde_json::json!({ "ward_store_format": STORE_FORMAT, "created_by": crate::VERSION });
        if let Some(e) = enc {
            body["encryption"] = serde_json::to_value(e)
                .map_err(|e| Error::Internal(format!("marker does not serialize: {e}")))?;
        }
        Ok(body.to_string().into_bytes())
    }

    /// The keys of the store whose marker is `marker`, if it is encrypted.
    fn at_rest_of(location: &Path, marker: &serde_json::Value) -> Result<Option<AtRest>> {
        let Some(e) = marker.get("encryption") else {
            return Ok(None);
        };
        let enc: MarkerEncryption =
            serde_json::from_value(e.clone()).map_err(|e| Error::Store {
                path: location.join(MARKER),
                reason: format!("its encryption entry: {e}"),
            })?;
        AtRest::open(location, enc).map(Some)
    }

    fn open_inner(
        root: PathBuf,
        clock: SharedClock,
        create: bool,
        enc: Option<&MarkerEncryption>,
    ) -> Result<Store> {
        if object::is_remote(&root) {
            return Store::open_remote(&root, clock, create, enc);
        }
        let marker = root.join(MARKER);
        if !marker.exists() {
            if root.exists() {
                // Another process may be creating this store right now: its layout entries
                // do not make the directory "not a store".
                let mut foreign = 0;
                for entry in fs::read_dir(&root).map_err(|e| Error::io(&root, e))? {
                    let entry = entry.map_err(|e| Error::io(&root, e))?;
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if !(LAYOUT.contains(&name.as_ref()) || name.starts_with(".ward-store-")) {
                        foreign += 1;
                    }
                }
                if foreign > 0 {
                    return Err(Error::Store {
                        path: root,
                        reason: format!(
                            "not empty and has no {MARKER}: not a Ward store (choose another --store)"
                        ),
                    });
                }
            }
            for sub in LAYOUT {
                fs::create_dir_all(root.join(sub)).map_err(|e| Error::io(root.join(sub), e))?;
            }
            write_atomic(&marker, &Store::marker_body(enc)?)?;
            sync_dir(&root)?;
        }
        let crypt = Store::at_rest_of(&root, &read_marker(&root, None)?)?;
        let store = Store {
            heads: Heads::new(root.join("refs"))
                .with_keys(crypt.as_ref().map(|c| c.keyring.clone())),
            root,
            clock,
            remote: None,
            state_dir: None,
            crypt,
        };
        match store.format()? {
            STORE_FORMAT => {}
            1 => store.migrate_from_format_1()?,
            n => {
                return Err(Error::Store {
                    path: store.root.clone(),
                    reason: format!(
                        "store format {n} was written by a newer Ward than this one ({}, format {STORE_FORMAT})",
                        crate::VERSION
                    ),
                })
            }
        }
        Ok(store)
    }

    /// Opens the store at `s3://BUCKET/PREFIX` (`create`: making its marker if there is
    /// none).
    fn open_remote(
        location: &Path,
        clock: SharedClock,
        create: bool,
        enc: Option<&MarkerEncryption>,
    ) -> Result<Store> {
        let mut remote = Remote::open(&location.to_string_lossy())?;
        let root = PathBuf::from(remote.location());
        if remote.get_plain(MARKER)?.is_none() {
            if !create {
                return Err(Error::Store {
                    path: root,
                    reason: "no Ward store here (run `ward init`, or pass --store)".into(),
                });
            }
            // Create-only: of several processes creating the store at once, one marker wins
            // and the others read it.
            remote.put_create_plain(MARKER, Store::marker_body(enc)?)?;
        }
        let crypt = Store::at_rest_of(&root, &read_marker(&root, Some(&remote))?)?;
        if let Some(c) = &crypt {
            remote = remote.encrypted(c.keyring.clone());
        }
        let store = Store {
            heads: Heads::remote(remote.clone()),
            root,
            clock,
            remote: Some(remote),
            state_dir: std::env::var_os(STATE_DIR_VAR)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            crypt,
        };
        match store.format()? {
            STORE_FORMAT => Ok(store),
            n => Err(Error::Store {
                path: store.root.clone(),
                reason: format!(
                    "store format {n} is not one this Ward ({}) reads in object storage (format {STORE_FORMAT})",
                    crate::VERSION
                ),
            }),
        }
    }

    fn format(&self) -> Result<u32> {
        let marker = self.root.join(MARKER);
        let v = read_marker(&self.root, self.remote.as_ref())?;
        v.get("ward_store_format")
            .and_then(|f| f.as_u64())
            .and_then(|f| u32::try_from(f).ok())
            .ok_or_else(|| Error::Store {
                path: marker,
                reason: "no ward_store_format number".into(),
            })
    }

    /// Moves a format-1 store to heads, keeping what every `NAME` and `NAME@TIME` meant:
    /// a name with a tag history resolved to its tag (so its log is the versions put under
    /// it before the first tag move, then the tag's moves); any other name to its newest
    /// version. Held under `migrate.lock`, so concurrent openers migrate once.
    fn migrate_from_format_1(&self) -> Result<()> {
        let lock_path = self.root.join("migrate.lock");
        let lock = fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        if self.format()? == STORE_FORMAT {
            return Ok(());
        }
        fs::create_dir_all(self.root.join("refs"))
            .map_err(|e| Error::io(self.root.join("refs"), e))?;
        let mut logs: BTreeMap<String, Vec<(DateTime<Utc>, ContentHash)>> = BTreeMap::new();
        for m in self.list(&ListFilter::default())? {
            logs.entry(m.name.clone())
                .or_default()
                .push((m.created_at, m.hash));
        }
        let tags_dir = self.root.join("tags");
        if tags_dir.is_dir() {
            for entry in fs::read_dir(&tags_dir).map_err(|e| Error::io(&tags_dir, e))? {
                let path = entry.map_err(|e| Error::io(&tags_dir, e))?.path();
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".jsonl"))
                else {
                    continue;
                };
                let tags = read_tag_file(&path)?;
                let Some(first) = tags.first().map(|t| t.at) else {
                    continue;
                };
                let log = logs.entry(name.to_string()).or_default();
                log.retain(|(at, _)| *at < first);
                log.extend(tags.iter().map(|t| (t.at, t.hash)));
            }
        }
        for (name, mut log) in logs {
            if self.heads.head(&name)?.is_some() {
                continue; // migrated by an earlier, interrupted run
            }
            log.sort_by_key(|(at, _)| *at);
            let mut seq = None;
            for (at, hash) in log {
                seq = Some(self.heads.compare_and_swap(&name, seq, hash, at)?.seq);
            }
        }
        let body = serde_json::json!({ "ward_store_format": STORE_FORMAT, "created_by": crate::VERSION, "migrated_from": 1 });
        write_atomic(&self.root.join(MARKER), body.to_string().as_bytes())?;
        if tags_dir.is_dir() {
            let kept = self.root.join("tags-format-1");
            fs::rename(&tags_dir, &kept).map_err(|e| Error::io(&kept, e))?;
        }
        sync_dir(&self.root)
    }

    /// Opens an existing store without creating anything.
    ///
    /// # Errors
    /// [`Error::Store`] if `root` is not an initialized store.
    pub fn open_existing(root: impl Into<PathBuf>, clock: SharedClock) -> Result<Store> {
        let root = root.into();
        if object::is_remote(&root) {
            return Store::open_remote(&root, clock, false, None);
        }
        if !root.join(MARKER).exists() {
            return Err(Error::Store {
                path: root,
                reason: "no Ward store here (run `ward init`, or pass --store)".into(),
            });
        }
        Store::open(root, clock)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The clock the store stamps versions with.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The bucket and prefix of a store in object storage (`None`: a local directory).
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// The keys of an encrypted store (`None`: the store is not encrypted).
    pub fn encryption(&self) -> Option<&AtRest> {
        self.crypt.as_ref()
    }

    /// The local directory holding state that lives beside the versions (`what`: the audit
    /// trail, the live feeds' logs): the store's directory, or for an `s3://` store the
    /// directory [`STATE_DIR_VAR`] names.
    ///
    /// # Errors
    /// [`Error::Store`] for an `s3://` store without [`STATE_DIR_VAR`]: the caller fails
    /// instead of writing to a local directory named after the URL.
    pub fn local_root(&self, what: &str) -> Result<PathBuf> {
        match (&self.remote, &self.state_dir) {
            (None, _) => Ok(self.root.clone()),
            (Some(_), Some(d)) => Ok(d.clone()),
            (Some(_), None) => local_state_dir(&self.root, what),
        }
    }

    /// The store's audit trail directory (`audit/` under [`Store::local_root`]).
    ///
    /// # Errors
    /// As [`Store::local_root`].
    pub fn audit_dir(&self) -> Result<PathBuf> {
        Ok(self.local_root("the audit trail")?.join("audit"))
    }

    /// A local directory for scratch files of a write (`tmp/` in a local store, the system's
    /// temporary directory for an `s3://` store).
    ///
    /// An encrypted store keeps its directory free of plaintext: its scratch files go to the
    /// system's temporary directory too (`TMPDIR`; docs/encryption.md).
    pub fn scratch_dir(&self) -> PathBuf {
        match (&self.remote, &self.crypt) {
            (None, None) => self.root.join("tmp"),
            _ => std::env::temp_dir(),
        }
    }

    /// The hashes of the committed versions, in no particular order.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Store`] if the store cannot be read.
    pub fn version_hashes(&self) -> Result<Vec<ContentHash>> {
        Ok(self
            .version_names()?
            .iter()
            .filter_map(|n| format!("b3:{n}").parse().ok())
            .collect())
    }

    fn version_dir(&self, hash: &ContentHash) -> PathBuf {
        self.root.join("versions").join(hash.hex())
    }

    /// Where a version's data is, relative to the store.
    fn data_rel(m: &Manifest) -> String {
        m.data
            .clone()
            .unwrap_or_else(|| format!("versions/{}/data", m.hash.hex()))
    }

    fn data_uri(dir: &Path) -> Result<String> {
        let abs = std::path::absolute(dir.join("data")).map_err(|e| Error::io(dir, e))?;
        abs.to_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Store {
                path: abs.clone(),
                reason: "path is not UTF-8".into(),
            })
    }

    /// Stores a table given as a reader of batches, hashing while Lance writes it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name; [`Error::UnsupportedType`] for a column
    /// type outside the hashed set; [`Error::Lance`] or [`Error::Io`] if writing fails (then
    /// nothing is visible).
    pub async fn put_reader(
        &self,
        reader: Box<dyn RecordBatchReader + Send>,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        manifest::validate_name(&opts.name)?;
        let schema = reader.schema();
        let hasher = Arc::new(Mutex::new(TableHasher::new(&schema)?));
        let fed = hasher.clone();
        let hashing = reader.map(move |b| {
            if let Ok(batch) = &b {
                let mut h = fed.lock().map_err(|_| {
                    arrow::error::ArrowError::ComputeError("hasher lock poisoned".into())
                })?;
                h.update(batch)
                    .map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))?;
            }
            b
        });
        let reader = RecordBatchIterator::new(hashing, schema.clone());

        if let Some(remote) = &self.remote {
            return self
                .put_remote(remote, Box::new(reader), &schema, hasher, opts)
                .await;
        }
        let tmp = TempVersion::create(&self.root)?;
        let (uri, params) = match &self.crypt {
            None => (
                Self::data_uri(&tmp.dir)?,
                WriteParams {
                    mode: WriteMode::Create,
                    ..Default::default()
                },
            ),
            Some(c) => (
                crypt::LanceEncryption::dataset_uri(&tmp.dir.join("data"))?,
                WriteParams {
                    mode: WriteMode::Create,
                    store_params: Some(c.lance.store_params()),
                    ..Default::default()
                },
            ),
        };
        Dataset::write(reader, uri.as_str(), Some(params))
            .await
            .map_err(|e| Error::lance(&uri, e))?;

        let (hash, rows) = {
            let h = hasher
                .lock()
                .map_err(|_| Error::Internal("hasher lock poisoned".into()))?;
            (h.finish(), h.rows())
        };
        let dest = self.version_dir(&hash);
        if dest.join("manifest.json").exists() {
            drop(tmp);
            return self.existing(hash, &opts);
        }
        let files = self.digest_local(&tmp.dir.join("data")).await?;
        let manifest = self.new_manifest(
            hash,
            &opts,
            ColumnInfo::from_schema(&schema)?,
            rows,
            files,
            None,
            None,
        );
        self.commit_local(tmp, manifest, opts).await
    }

    /// A sealed manifest for a new version.
    #[allow(clippy::too_many_arguments)]
    fn new_manifest(
        &self,
        hash: ContentHash,
        opts: &PutOptions,
        schema: Vec<ColumnInfo>,
        rows: u64,
        files: Vec<FileDigest>,
        data: Option<String>,
        bucketing: Option<bucketed::BucketingInfo>,
    ) -> Manifest {
        let mut manifest = Manifest {
            manifest_format: manifest::MANIFEST_FORMAT,
            hash,
            kind: opts.kind,
            name: opts.name.clone(),
            schema,
            rows,
            bytes: files.iter().map(|f| f.bytes).sum(),
            created_at: self.clock.now(),
            lineage: opts.lineage.clone(),
            ward_version: crate::VERSION.to_string(),
            labels: opts.labels.clone(),
            files,
            data,
            bucketing,
            seal: String::new(),
        };
        manifest.seal = manifest.compute_seal();
        manifest
    }

    /// Publishes a version written under `tmp` (its data, and any other file beside the
    /// manifest): writes the manifest, syncs, renames into place and moves the head.
    async fn commit_local(
        &self,
        tmp: TempVersion,
        manifest: Manifest,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        let hash = manifest.hash;
        let dest = self.version_dir(&hash);
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Internal(format!("manifest does not serialize: {e}")))?;
        let mpath = tmp.dir.join("manifest.json");
        let body = at_rest::maybe_seal(self.keys(), body, &dest.join("manifest.json"))?;
        fs::write(&mpath, body).map_err(|e| Error::io(&mpath, e))?;
        sync_tree(&tmp.dir)?;
        match tmp.commit(&dest) {
            Ok(()) => {
                sync_dir(&self.root.join("versions"))?;
                let head = self
                    .heads
                    .update(&opts.name, hash, opts.head, self.clock.now())?;
                Ok(PutOutcome {
                    manifest,
                    created: true,
                    head,
                })
            }
            // Another writer committed the same content first.
            Err(tmp) if dest.join("manifest.json").exists() => {
                drop(tmp);
                self.existing(hash, &opts)
            }
            Err(tmp) => Err(Error::io(
                &dest,
                std::io::Error::other(format!("could not move {} into place", tmp.dir.display())),
            )),
        }
    }

    /// [`Store::put_reader`] in object storage: stage under `data/<id>`, publish by a
    /// create-only write of the manifest.
    async fn put_remote(
        &self,
        remote: &Remote,
        reader: Box<dyn RecordBatchReader + Send>,
        schema: &SchemaRef,
        hasher: Arc<Mutex<TableHasher>>,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        let staged = remote_staging();
        let uri = remote.uri(&staged);
        let params = WriteParams {
            mode: WriteMode::Create,
            session: Some(remote.session()),
            store_params: self.crypt.as_ref().map(|c| c.lance.store_params()),
            ..Default::default()
        };
        let discard = |remote: &Remote| {
            let _ = remote.delete_all(&staged);
        };
        if let Err(e) = Dataset::write(reader, uri.as_str(), Some(params)).await {
            discard(remote);
            return Err(Error::lance(&uri, e));
        }
        let (hash, rows) = {
            let h = hasher
                .lock()
                .map_err(|_| Error::Internal("hasher lock poisoned".into()))?;
            (h.finish(), h.rows())
        };
        let mrel = format!("versions/{}/manifest.json", hash.hex());
        if remote.get(&mrel)?.is_some() {
            discard(remote);
            return self.existing(hash, &opts);
        }
        let files = match digest_remote(remote, &staged) {
            Ok(f) => f,
            Err(e) => {
                discard(remote);
                return Err(e);
            }
        };
        let manifest = self.new_manifest(
            hash,
            &opts,
            ColumnInfo::from_schema(schema)?,
            rows,
            files,
            Some(staged.clone()),
            None,
        );
        self.publish_remote(remote, &staged, manifest, &opts)
    }

    /// Publishes a version staged under `staged` in object storage by a create-only write of
    /// its manifest, then moves the head; when another writer published the same content
    /// first, the staging is deleted and that version returned.
    fn publish_remote(
        &self,
        remote: &Remote,
        staged: &str,
        manifest: Manifest,
        opts: &PutOptions,
    ) -> Result<PutOutcome> {
        let hash = manifest.hash;
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Internal(format!("manifest does not serialize: {e}")))?;
        let mrel = format!("versions/{}/manifest.json", hash.hex());
        if remote.put_create(&mrel, body)? {
            let head = self
                .heads
                .update(&opts.name, hash, opts.head, self.clock.now())?;
            Ok(PutOutcome {
                manifest,
                created: true,
                head,
            })
        } else {
            // Another writer published the same content first.
            let _ = remote.delete_all(staged);
            self.existing(hash, opts)
        }
    }

    /// The content is stored already (under this name or another): the existing version
    /// becomes the head of the requested name as `opts.head` says.
    fn existing(&self, hash: ContentHash, opts: &PutOptions) -> Result<PutOutcome> {
        let manifest = self.manifest(&hash)?;
        let head = self
            .heads
            .update(&opts.name, hash, opts.head, self.clock.now())?;
        Ok(PutOutcome {
            manifest,
            created: false,
            head,
        })
    }

    /// Stores in-memory batches.
    ///
    /// # Errors
    /// As [`Store::put_reader`]; [`Error::Arrow`] if a batch does not match `schema`.
    pub async fn put_batches(
        &self,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        for b in &batches {
            if b.schema().fields() != schema.fields() {
                return Err(Error::invalid(
                    "batches",
                    "a batch's schema differs from the table's",
                ));
            }
        }
        let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), schema);
        self.put_reader(Box::new(reader), opts).await
    }

    /// Stores the table of a Parquet file.
    ///
    /// # Errors
    /// [`Error::Parquet`] if the file cannot be read; otherwise as [`Store::put_reader`].
    pub async fn put_parquet(&self, path: &Path, opts: PutOptions) -> Result<PutOutcome> {
        let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(65_536).build())
            .map_err(|source| Error::Parquet {
                path: path.to_path_buf(),
                source,
            })?;
        self.put_reader(Box::new(reader), opts).await
    }

    /// The manifest of a stored version, checking its seal.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no such version; [`Error::Manifest`] if it does not parse.
    pub fn manifest(&self, hash: &ContentHash) -> Result<Manifest> {
        let path = self.version_dir(hash).join("manifest.json");
        if let Some(r) = &self.remote {
            let text = r
                .get(&format!("versions/{}/manifest.json", hash.hex()))?
                .ok_or_else(|| Error::NotFound {
                    reference: hash.to_string(),
                })?;
            return serde_json::from_slice(&text)
                .map_err(|source| Error::Manifest { path, source });
        }
        let text = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                reference: hash.to_string(),
            },
            _ => Error::io(&path, e),
        })?;
        let text = at_rest::maybe_open(self.keys(), text, &path)?;
        serde_json::from_slice(&text).map_err(|source| Error::Manifest { path, source })
    }

    /// The entries of `versions/` (hex digests, and whatever else is there).
    fn version_names(&self) -> Result<Vec<String>> {
        if let Some(r) = &self.remote {
            return r.list_dirs("versions");
        }
        let dir = self.root.join("versions");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            out.push(entry.file_name().to_string_lossy().to_string());
        }
        Ok(out)
    }

    /// Every committed version, newest first, filtered.
    ///
    /// # Errors
    /// [`Error::Io`] if the store cannot be read; [`Error::Manifest`] for an unreadable
    /// manifest (a damaged store is reported, not hidden).
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        if let Some(name) = &filter.name {
            // Only the versions the name ever headed: their manifests alone are read, not
            // every version's (a store of 10,000 versions lists one name's in a few reads).
            let mut named: Vec<ContentHash> =
                self.heads.log(name)?.into_iter().map(|e| e.hash).collect();
            named.sort();
            named.dedup();
            for hash in named {
                let m = match self.manifest(&hash) {
                    // A head naming a version that is not (or not yet) here lists as absent,
                    // as when every version is listed.
                    Err(Error::NotFound { .. }) => continue,
                    other => other?,
                };
                if filter.kind.is_some_and(|k| k != m.kind) {
                    continue;
                }
                out.push(m);
            }
            out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.hash.cmp(&b.hash)));
            return Ok(out);
        }
        for entry in self.version_names()? {
            let Ok(hash) = format!("b3:{entry}").parse() else {
                continue;
            };
            let m = match self.manifest(&hash) {
                // In object storage a version whose manifest is not published yet (or
                // never will be) lists as absent.
                Err(Error::NotFound { .. }) if self.remote.is_some() => continue,
                other => other?,
            };
            if filter.kind.is_some_and(|k| k != m.kind) {
                continue;
            }
            out.push(m);
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.hash.cmp(&b.hash)));
        Ok(out)
    }

    /// The version a reference means.
    ///
    /// # Errors
    /// [`Error::NotFound`] if none; [`Error::InvalidRef`] for an ambiguous hash prefix.
    pub fn resolve(&self, r: &VersionRef) -> Result<Manifest> {
        let not_found = |reference: String| Error::NotFound { reference };
        match r {
            VersionRef::Hash(h) => self.manifest(h),
            VersionRef::HashPrefix(prefix) => {
                let mut found = Vec::new();
                for name in self.version_names()? {
                    if name.len() == 64 && name.starts_with(prefix.as_str()) {
                        found.push(name);
                    }
                }
                match found.as_slice() {
                    [one] => self.manifest(&format!("b3:{one}").parse()?),
                    [] => Err(not_found(format!("b3:{prefix}"))),
                    _ => Err(Error::InvalidRef {
                        reference: format!("b3:{prefix}"),
                        reason: format!("matches {} versions; give more digits", found.len()),
                    }),
                }
            }
            VersionRef::Latest(name) => match self.heads.head(name)? {
                Some(h) => self.manifest(&h.hash),
                None => Err(not_found(name.clone())),
            },
            VersionRef::AsOf(name, t) => {
                match self.heads.log(name)?.into_iter().rfind(|e| e.at <= *t) {
                    Some(h) => self.manifest(&h.hash),
                    None => Err(not_found(format!("{name}@{}", t.to_rfc3339()))),
                }
            }
        }
    }

    /// The head of `name` (the version `NAME` resolves to, with its place in the log).
    ///
    /// # Errors
    /// [`Error::Io`] if the store cannot be read.
    pub fn head(&self, name: &str) -> Result<Option<Head>> {
        self.heads.head(name)
    }

    /// Every name that has a head, in name order.
    ///
    /// # Errors
    /// [`Error::Io`] if the store cannot be read.
    pub fn names(&self) -> Result<Vec<String>> {
        self.heads.names()
    }

    /// Every move of `name`'s head, oldest first.
    ///
    /// # Errors
    /// [`Error::Io`] if the store cannot be read.
    pub fn head_log(&self, name: &str) -> Result<Vec<Head>> {
        self.heads.log(name)
    }

    /// Makes the stored version `hash` the head of `name` as `update` says.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the version does not exist; [`Error::InvalidArgument`] for a
    /// bad name; [`Error::Conflict`] when `update` expects a head that has moved.
    pub fn publish(
        &self,
        name: &str,
        hash: &ContentHash,
        update: HeadUpdate,
    ) -> Result<Option<Head>> {
        manifest::validate_name(name)?;
        self.manifest(hash)?;
        self.heads.update(name, *hash, update, self.clock.now())
    }

    /// Points tag `name` at `hash`: a head move made by hand. The history is kept, so
    /// `name@time` still resolves to what it meant then.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the version does not exist; [`Error::InvalidArgument`] for a
    /// bad name.
    pub fn tag(&self, name: &str, hash: &ContentHash) -> Result<()> {
        self.publish(name, hash, HeadUpdate::Move).map(|_| ())
    }

    /// Opens a version's Lance dataset.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the version does not exist; [`Error::Lance`] if it cannot be
    /// opened.
    pub async fn dataset(&self, hash: &ContentHash) -> Result<Dataset> {
        if let Some(r) = &self.remote {
            let m = self.manifest(hash)?;
            let uri = r.uri(&Self::data_rel(&m));
            let mut builder =
                lance::dataset::builder::DatasetBuilder::from_uri(&uri).with_session(r.session());
            if let Some(c) = &self.crypt {
                builder = builder.with_store_params(c.lance.store_params());
            }
            return builder.load().await.map_err(|e| Error::lance(&uri, e));
        }
        let dir = self.version_dir(hash);
        if !dir.join("manifest.json").exists() {
            return Err(Error::NotFound {
                reference: hash.to_string(),
            });
        }
        if let Some(c) = &self.crypt {
            let uri = crypt::LanceEncryption::dataset_uri(&dir.join("data"))?;
            return lance::dataset::builder::DatasetBuilder::from_uri(&uri)
                .with_store_params(c.lance.store_params())
                .load()
                .await
                .map_err(|e| Error::lance(&uri, e));
        }
        let uri = Self::data_uri(&dir)?;
        Dataset::open(&uri).await.map_err(|e| Error::lance(&uri, e))
    }

    /// The keyring of an encrypted store.
    fn keys(&self) -> Option<&crate::security::keyring::Keyring> {
        self.crypt.as_ref().map(|c| &c.keyring)
    }

    /// Digests of every file of a local version's data directory: of the bytes on disk, or
    /// in an encrypted store of the plaintext read through the encryption (so a key
    /// rotation, which rewrites headers, changes no digest).
    async fn digest_local(&self, dir: &Path) -> Result<Vec<FileDigest>> {
        match self.keys() {
            None => digest_files(dir),
            Some(k) => digest_encrypted(dir, k, &BTreeMap::new()).await,
        }
    }

    /// As [`Store::digest_local`] for an encrypted store, leaving out the files in `skip`.
    async fn digest_local_except(
        &self,
        dir: &Path,
        skip: &BTreeMap<String, FileDigest>,
    ) -> Result<Vec<FileDigest>> {
        match self.keys() {
            None => Ok(digest_files(dir)?
                .into_iter()
                .filter(|f| !skip.contains_key(&f.path))
                .collect()),
            Some(k) => digest_encrypted(dir, k, skip).await,
        }
    }

    /// Streams a version's rows in their stored order to `each`, after giving its schema.
    ///
    /// # Errors
    /// As [`Store::dataset`]; [`Error::Lance`] if reading fails; whatever `each` returns.
    pub async fn scan(
        &self,
        hash: &ContentHash,
        each: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<SchemaRef> {
        self.scan_columns(hash, None, each).await
    }

    /// As [`Store::scan`], reading only the named columns (`None`: all) and giving the
    /// schema of what it reads. Names the version does not have are left out: the caller
    /// sees their absence where it reads them.
    ///
    /// # Errors
    /// As [`Store::scan`].
    pub async fn scan_columns(
        &self,
        hash: &ContentHash,
        columns: Option<&[String]>,
        each: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<SchemaRef> {
        self.scan_where(hash, columns, None, each).await
    }

    /// As [`Store::scan_columns`], giving only the rows where `filter` holds (evaluated by
    /// Lance, which reads the filter's columns first and the others only for the rows that
    /// pass), still in stored order.
    ///
    /// # Errors
    /// As [`Store::scan`]; [`Error::Lance`] when the filter does not apply to the version.
    pub async fn scan_where(
        &self,
        hash: &ContentHash,
        columns: Option<&[String]>,
        filter: Option<datafusion::prelude::Expr>,
        mut each: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<SchemaRef> {
        let ds = self.dataset(hash).await?;
        let mut schema: SchemaRef = Arc::new(Schema::from(ds.schema()));
        let mut scanner = ds.scan();
        scanner.scan_in_order(true);
        if let Some(f) = filter {
            scanner.filter_expr(f);
        }
        if let Some(wanted) = columns {
            let keep: Vec<usize> = (0..schema.fields().len())
                .filter(|i| wanted.iter().any(|w| w == schema.field(*i).name()))
                .collect();
            let names: Vec<&str> = keep
                .iter()
                .map(|i| schema.field(*i).name().as_str())
                .collect();
            scanner
                .project(&names)
                .map_err(|e| Error::lance(ds.uri(), e))?;
            schema = Arc::new(schema.project(&keep)?);
        }
        let uri = ds.uri().to_string();
        let mut stream = scanner
            .try_into_stream()
            .await
            .map_err(|e| Error::lance(&uri, e))?;
        while let Some(batch) = stream.try_next().await.map_err(|e| Error::lance(&uri, e))? {
            each(&batch)?;
        }
        Ok(schema)
    }

    /// Reads a whole version into memory.
    ///
    /// # Errors
    /// As [`Store::scan`].
    pub async fn read(&self, hash: &ContentHash) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut batches = Vec::new();
        let schema = self
            .scan(hash, |b| {
                batches.push(b.clone());
                Ok(())
            })
            .await?;
        Ok((schema, batches))
    }
}

/// A write in progress under `tmp/`: the directory `tmp/<id>/` and its lock file
/// `tmp/<id>.lock` (created and locked first, so a directory without a held lock is always a
/// leftover). Removed on drop unless committed.
struct TempVersion {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: fs::File,
    committed: bool,
}

impl TempVersion {
    fn create(root: &Path) -> Result<TempVersion> {
        let tmp_root = root.join("tmp");
        fs::create_dir_all(&tmp_root).map_err(|e| Error::io(&tmp_root, e))?;
        let (lock, lock_path) = tempfile::Builder::new()
            .prefix("put-")
            .suffix(".lock")
            .tempfile_in(&tmp_root)
            .and_then(|f| f.keep().map_err(|e| e.error))
            .map_err(|e| Error::io(&tmp_root, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        let dir = lock_path.with_extension("");
        if let Err(e) = fs::create_dir(&dir) {
            let _ = fs::remove_file(&lock_path);
            return Err(Error::io(&dir, e));
        }
        Ok(TempVersion {
            dir,
            lock_path,
            _lock: lock,
            committed: false,
        })
    }

    /// Renames the directory to `dest`; gives itself back if the rename fails (for example
    /// because `dest` exists already).
    fn commit(mut self, dest: &Path) -> std::result::Result<(), TempVersion> {
        match fs::rename(&self.dir, dest) {
            Ok(()) => {
                self.committed = true;
                Ok(())
            }
            Err(_) => Err(self),
        }
    }
}

impl Drop for TempVersion {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Digests of every file under `dir`, sorted by path.
fn digest_files(dir: &Path) -> Result<Vec<FileDigest>> {
    bucketed::digest_files_reusing(dir, &BTreeMap::new())
}

/// Digests of the plaintext of every encrypted file under `dir`, sorted by path.
async fn digest_encrypted(
    dir: &Path,
    keys: &crate::security::keyring::Keyring,
    skip: &BTreeMap<String, FileDigest>,
) -> Result<Vec<FileDigest>> {
    use object_store::{ObjectStore, ObjectStoreExt};
    let err = |e: object_store::Error| Error::Store {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let local = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(err)?;
    let store = crypt::EncryptedStore::wrap(Arc::new(local), keys.clone());
    let listed: Vec<object_store::ObjectMeta> =
        store.list(None).try_collect().await.map_err(err)?;
    let mut out = Vec::with_capacity(listed.len());
    for meta in listed {
        if skip.contains_key(meta.location.as_ref()) {
            continue;
        }
        let mut hasher = blake3::Hasher::new();
        let mut bytes = 0u64;
        let mut chunks = store.get(&meta.location).await.map_err(err)?.into_stream();
        while let Some(chunk) = chunks.try_next().await.map_err(err)? {
            bytes += chunk.len() as u64;
            hasher.update(&chunk);
        }
        out.push(FileDigest {
            path: meta.location.to_string(),
            bytes,
            blake3: hasher.finalize().to_hex().to_string(),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The store marker of the store at `root` (read below any encryption: it is never
/// encrypted).
fn read_marker(root: &Path, remote: Option<&Remote>) -> Result<serde_json::Value> {
    let marker = root.join(MARKER);
    let text = match remote {
        Some(r) => r
            .get_plain(MARKER)?
            .map(|b| b.to_vec())
            .ok_or_else(|| Error::Store {
                path: marker.clone(),
                reason: "the store marker is gone".into(),
            })?,
        None => fs::read(&marker).map_err(|e| Error::io(&marker, e))?,
    };
    serde_json::from_slice(&text).map_err(|source| Error::Manifest {
        path: marker,
        source,
    })
}

/// Digests of every object under `rel` in object storage, by path relative to `rel`.
fn digest_remote(remote: &Remote, rel: &str) -> Result<Vec<FileDigest>> {
    let mut out = Vec::new();
    for o in remote.list_all(rel)? {
        let bytes = remote.get(&o.key)?.ok_or_else(|| Error::Store {
            path: PathBuf::from(remote.uri(&o.key)),
            reason: "listed but gone".into(),
        })?;
        let path = o
            .key
            .strip_prefix(rel)
            .map(|p| p.trim_start_matches('/').to_string())
            .unwrap_or_else(|| o.key.clone());
        out.push(FileDigest {
            path,
            bytes: bytes.len() as u64,
            blake3: blake3::hash(&bytes).to_hex().to_string(),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Removes a file; true if it was there.
fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The moves of a format-1 tag file, in file order.
fn read_tag_file(path: &Path) -> Result<Vec<TagEntry>> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: TagEntry = serde_json::from_str(&line).map_err(|e| Error::BadInput {
            location: format!("{}:{}", path.display(), i + 1),
            field: "tag entry".into(),
            reason: e.to_string(),
        })?;
        out.push(entry);
    }
    Ok(out)
}

/// Syncs every file and directory under `dir` (so the rename that follows publishes bytes
/// that are on disk).
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if entry.file_type().map_err(|e| Error::io(&path, e))?.is_dir() {
            sync_tree(&path)?;
        } else {
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    sync_dir(dir)
}

/// Writes a small file atomically: to a temporary name of its own (so concurrent writers do
/// not share one), synced, renamed.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ward-store-")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => Ok(()),
    }
}

/// A new staging prefix in object storage: `data/<time>-<random>`, unique per write.
fn remote_staging() -> String {
    format!(
        "data/{}-{:016x}",
        Utc::now().format("%Y%m%dT%H%M%S"),
        rand::random::<u64>()
    )
}
