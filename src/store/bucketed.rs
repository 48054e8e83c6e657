//! Bucketed versions: a table whose rows fall into a fixed number of buckets by a key column
//! (the patient id of curated tables), stored so that a new version after a small change
//! writes only the changed buckets and shares the unchanged buckets' files with its base.
//!
//! # Layout
//! A bucketed version is an ordinary Lance dataset at `versions/<hex>/data` (every reader of
//! [`Store::dataset`] works on it unchanged) whose fragments each hold a *group*: the rows of
//! a range of consecutive buckets, in bucket order, each bucket's rows in table order. A
//! group gathers buckets until it holds at least [`GROUP_ROWS`] rows, so a small table is a
//! few fragments and a change rewrites about [`GROUP_ROWS`] rows (or one bucket, when a
//! bucket alone is larger). Beside the manifest, `buckets.json` ([`BucketLayout`]) records
//! every bucket's digest (row count and encoding-2 hash) and the groups in fragment order;
//! the manifest's `bucketing` names the key, the bucket count and the layout file's digest.
//!
//! # A new version from a base
//! [`Store::put_bucketed`] with [`BucketContent::Changed`] gives the new rows of the buckets
//! a change touched. Their digests replace the base's
//! ([`crate::hash::bucketed::BucketedDigests::replace`]); the hash is combined from the
//! digests alone (no unchanged row is read or hashed). A bucket whose digest did not change
//! is not changed; when no bucket changed the version is the base. Groups holding a changed
//! bucket are read (their unchanged buckets' rows), merged with the new rows and written as
//! new fragments; every other group's fragment is reused: in a local store its files are
//! hard links to the base version's files (one copy on disk, the version still a
//! self-contained dataset that `verify` digests and `cleanup` cannot break: a file lives as
//! long as one version links it). In object storage the version is written whole (its
//! groups all new): sharing files there is not built yet.
//!
//! The hash (encoding 3, `docs/hashing.md`) depends on the rows only: the same content built
//! in one go or by any sequence of changes has the same hash.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow::datatypes::{Schema, SchemaRef};
use futures::TryStreamExt;
use lance::dataset::fragment::write::FragmentCreateBuilder;
use lance::dataset::transaction::{Operation, Transaction};
use lance::dataset::{CommitBuilder, WriteParams};
use lance::table::format::Fragment;
use lance::Dataset;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;
use crate::error::{Error, Result};
use crate::hash::bucketed::{
    bucket_digest, split_into_buckets, BucketDigest, BucketedDigests, Bucketing,
};
use crate::hash::{ContentHash, TableHasher};

/// A group (one fragment) gathers consecutive buckets until it holds this many rows.
pub const GROUP_ROWS: usize = 16_384;

/// The file beside a local version's manifest (in object storage: in its data directory)
/// that holds its [`BucketLayout`].
pub const LAYOUT_FILE: &str = "buckets.json";
/// The layout file's name inside the staged data of a version in object storage.
const REMOTE_LAYOUT_FILE: &str = "ward-buckets.json";

/// How a bucketed version's rows are bucketed, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketingInfo {
    /// The key column.
    pub key: String,
    /// The bucket count.
    pub buckets: u32,
    /// BLAKE3 (hex) of the layout file's plaintext.
    pub layout_blake3: String,
}

/// The layout of a bucketed version: every bucket's digest and the groups in fragment
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketLayout {
    /// The key column.
    pub key: String,
    /// The bucket count.
    pub buckets: u32,
    /// Per bucket, in bucket order: its rows and its encoding-2 hash.
    pub digests: Vec<(u64, ContentHash)>,
    /// Per fragment, in fragment order: the range of buckets `[lo, hi)` it holds.
    pub groups: Vec<(u32, u32)>,
}

impl BucketLayout {
    /// The digests as [`BucketedDigests`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the layout is inconsistent.
    pub fn bucketed_digests(&self) -> Result<BucketedDigests> {
        BucketedDigests::from_parts(
            Bucketing::new(self.key.clone(), self.buckets)?,
            self.digests
                .iter()
                .map(|(rows, hash)| BucketDigest {
                    rows: *rows,
                    hash: *hash,
                })
                .collect(),
        )
    }
}

/// What a bucketed put is given.
#[derive(Debug, Clone)]
pub enum BucketContent {
    /// The whole table (rows in any bucket interleaving; each bucket's rows in table order).
    Whole(Vec<RecordBatch>),
    /// The new rows of the buckets that changed (an empty batch: the bucket is now empty);
    /// every other bucket is as in the base.
    Changed(BTreeMap<u32, RecordBatch>),
}

impl Store {
    /// The layout of a bucketed version (`None` for a version hashed whole).
    ///
    /// # Errors
    /// [`Error::NotFound`] if the version does not exist; [`Error::Corrupt`] if its layout
    /// file is missing, damaged or does not match its manifest.
    pub fn bucket_layout(&self, hash: &ContentHash) -> Result<Option<BucketLayout>> {
        let m = self.manifest(hash)?;
        let Some(info) = &m.bucketing else {
            return Ok(None);
        };
        let corrupt = |what: String| Error::Corrupt {
            hash: hash.to_string(),
            what,
        };
        let plain = match &self.remote {
            Some(r) => r
                .get(&format!("{}/{REMOTE_LAYOUT_FILE}", Self::data_rel(&m)))?
                .map(|b| b.to_vec())
                .ok_or_else(|| corrupt(format!("its {LAYOUT_FILE} is missing")))?,
            None => {
                let path = self.version_dir(hash).join(LAYOUT_FILE);
                let stored = fs::read(&path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        corrupt(format!("its {LAYOUT_FILE} is missing"))
                    }
                    _ => Error::io(&path, e),
                })?;
                at_rest::maybe_open(self.keys(), stored, &path)?
            }
        };
        if blake3::hash(&plain).to_hex().as_str() != info.layout_blake3 {
            return Err(corrupt(format!(
                "its {LAYOUT_FILE} changed: its blake3 differs from the manifest's"
            )));
        }
        let layout: BucketLayout = serde_json::from_slice(&plain)
            .map_err(|e| corrupt(format!("its {LAYOUT_FILE} does not parse: {e}")))?;
        if layout.key != info.key
            || layout.buckets != info.buckets
            || layout.digests.len() != layout.buckets as usize
        {
            return Err(corrupt(format!(
                "its {LAYOUT_FILE} does not match the manifest's bucketing"
            )));
        }
        Ok(Some(layout))
    }

    /// The rows of the given buckets of a bucketed version, each bucket's rows in stored
    /// order, reading only the fragments that hold them. A bucket without rows is absent.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the version is not bucketed; as [`Store::dataset`].
    pub async fn read_buckets(
        &self,
        hash: &ContentHash,
        buckets: &BTreeSet<u32>,
    ) -> Result<BTreeMap<u32, RecordBatch>> {
        let layout = self.bucket_layout(hash)?.ok_or_else(|| {
            Error::invalid("version", format!("{hash} is not a bucketed version"))
        })?;
        let ds = self.dataset(hash).await?;
        let wanted: Vec<usize> = layout
            .groups
            .iter()
            .enumerate()
            .filter(|(_, (lo, hi))| buckets.range(*lo..*hi).next().is_some())
            .map(|(i, _)| i)
            .collect();
        let bucketing = Bucketing::new(layout.key.clone(), layout.buckets)?;
        let mut out = BTreeMap::new();
        for (b, rows) in read_groups(&ds, &wanted, &bucketing).await? {
            if buckets.contains(&b) {
                out.insert(b, rows);
            }
        }
        Ok(out)
    }

    /// Stores a bucketed version of `schema`: `content` whole, or the changed buckets of the
    /// bucketed version `base` (same key, bucket count and schema). The version's hash is
    /// the encoding-3 hash of its rows. See the module documentation.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name or key column, or for
    /// [`BucketContent::Changed`] without a usable base; otherwise as
    /// [`Store::put_reader`].
    pub async fn put_bucketed(
        &self,
        schema: SchemaRef,
        content: BucketContent,
        base: Option<&ContentHash>,
        bucketing: Bucketing,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        manifest::validate_name(&opts.name)?;
        bucketing.key_index(&schema)?;
        let columns = ColumnInfo::from_schema(&schema)?;
        // The base's layout, when it is bucketed the same way with the same columns.
        let base_layout = match base {
            Some(h) => {
                let m = self.manifest(h)?;
                let same = m.schema == columns
                    && m.bucketing
                        .as_ref()
                        .is_some_and(|b| b.key == bucketing.key && b.buckets == bucketing.buckets);
                if same {
                    self.bucket_layout(h)?.map(|l| (*h, l))
                } else {
                    None
                }
            }
            None => None,
        };
        let (new_rows, whole) = match content {
            BucketContent::Whole(batches) => {
                for b in &batches {
                    if b.schema().fields() != schema.fields() {
                        return Err(Error::invalid(
                            "batches",
                            "a batch's schema differs from the table's",
                        ));
                    }
                }
                let split: BTreeMap<u32, RecordBatch> =
                    split_into_buckets(&schema, &batches, &bucketing)?
                        .into_iter()
                        .collect();
                (split, true)
            }
            BucketContent::Changed(map) => {
                if base_layout.is_none() {
                    return Err(Error::invalid(
                        "base",
                        "a change of some buckets needs a base version bucketed the same way",
                    ));
                }
                for (b, rows) in &map {
                    if *b >= bucketing.buckets {
                        return Err(Error::invalid(
                            "bucket",
                            format!("{b}: there are {} buckets", bucketing.buckets),
                        ));
                    }
                    if rows.schema().fields() != schema.fields() {
                        return Err(Error::invalid(
                            "batches",
                            "a batch's schema differs from the table's",
                        ));
                    }
                }
                (map, false)
            }
        };

        // Digests: the base's, with those of the given buckets replaced.
        let mut digests = match &base_layout {
            Some((_, l)) => l.bucketed_digests()?,
            None => BucketedDigests::empty(&schema, bucketing.clone())?,
        };
        let empty = TableHasher::new(&schema)?.finish();
        let considered: Vec<u32> = if whole {
            (0..bucketing.buckets).collect()
        } else {
            new_rows.keys().copied().collect()
        };
        let fresh: Vec<(u32, BucketDigest)> = considered
            .par_iter()
            .map(|b| {
                let d = match new_rows.get(b).filter(|r| r.num_rows() > 0) {
                    Some(rows) => bucket_digest(&schema, std::slice::from_ref(rows))?,
                    None => BucketDigest {
                        rows: 0,
                        hash: empty,
                    },
                };
                Ok((*b, d))
            })
            .collect::<Result<_>>()?;
        let mut changed = BTreeSet::new();
        for (b, d) in fresh {
            if digests.digests()[b as usize] != d {
                changed.insert(b);
                digests.replace(b, d)?;
            }
        }
        let hash = digests.combine(&schema)?;
        if self.manifest(&hash).is_ok() {
            return self.existing(hash, &opts);
        }

        // Groups: the base's untouched ones kept (their fragments reused in a local store),
        // the ranges of the others (and of newly non-empty buckets) regrouped and written.
        let reuse = self.remote.is_none();
        let mut kept: Vec<(u32, u32, usize)> = Vec::new();
        let mut dirty: Vec<(u32, u32)> = Vec::new();
        let mut reread: Vec<usize> = Vec::new();
        match &base_layout {
            Some((_, l)) => {
                let mut covered = BTreeSet::new();
                for (i, &(lo, hi)) in l.groups.iter().enumerate() {
                    let touched = changed.range(lo..hi).next().is_some();
                    if reuse && !touched {
                        kept.push((lo, hi, i));
                    } else {
                        dirty.push((lo, hi));
                        if !whole {
                            reread.push(i);
                        }
                    }
                    covered.extend(lo..hi);
                }
                for b in &changed {
                    if !covered.contains(b) {
                        dirty.push((*b, b + 1));
                    }
                }
            }
            None => dirty.push((0, bucketing.buckets)),
        }
        let base_ds = match &base_layout {
            Some((h, _)) => Some(self.dataset(h).await?),
            None => None,
        };
        // Rows of every bucket of a dirty range: the new ones, else the base's.
        let mut rows_of: BTreeMap<u32, RecordBatch> = BTreeMap::new();
        if let Some(ds) = &base_ds {
            for (b, rows) in read_groups(ds, &reread, &bucketing).await? {
                if !changed.contains(&b) {
                    rows_of.insert(b, rows);
                }
            }
        }
        for (b, rows) in new_rows {
            if (whole || changed.contains(&b)) && rows.num_rows() > 0 {
                rows_of.insert(b, rows);
            } else if !whole && !changed.contains(&b) && rows.num_rows() > 0 {
                // Given but unchanged: the same rows as the base's.
                rows_of.entry(b).or_insert(rows);
            }
        }
        let mut written: Vec<(u32, u32, Vec<RecordBatch>)> = Vec::new();
        for (lo, hi) in dirty {
            let mut start: Option<u32> = None;
            let mut acc: Vec<RecordBatch> = Vec::new();
            let mut n = 0usize;
            for b in lo..hi {
                let Some(rows) = rows_of.get(&b).filter(|r| r.num_rows() > 0) else {
                    continue;
                };
                start.get_or_insert(b);
                n += rows.num_rows();
                acc.push(rows.clone());
                if n >= GROUP_ROWS {
                    written.push((start.take().unwrap_or(b), b + 1, std::mem::take(&mut acc)));
                    n = 0;
                }
            }
            if let Some(s) = start {
                written.push((s, hi, acc));
            }
        }
        let rows = digests.rows();
        let layout_groups = {
            let mut all: Vec<(u32, u32, Option<usize>)> = kept
                .iter()
                .map(|&(lo, hi, i)| (lo, hi, Some(i)))
                .chain(written.iter().map(|(lo, hi, _)| (*lo, *hi, None)))
                .collect();
            all.sort_by_key(|g| g.0);
            all
        };
        let layout = BucketLayout {
            key: bucketing.key.clone(),
            buckets: bucketing.buckets,
            digests: digests.digests().iter().map(|d| (d.rows, d.hash)).collect(),
            groups: layout_groups.iter().map(|g| (g.0, g.1)).collect(),
        };
        let layout_json = serde_json::to_vec(&layout)
            .map_err(|e| Error::Internal(format!("bucket layout does not serialize: {e}")))?;
        let info = BucketingInfo {
            key: bucketing.key.clone(),
            buckets: bucketing.buckets,
            layout_blake3: blake3::hash(&layout_json).to_hex().to_string(),
        };
        let mut new_groups: BTreeMap<u32, Vec<RecordBatch>> = written
            .into_iter()
            .map(|(lo, _, batches)| (lo, batches))
            .collect();
        let base_frags: Vec<Fragment> = base_ds
            .as_ref()
            .map(|d| d.fragments().as_ref().clone())
            .unwrap_or_default();
        let lance_schema = match &base_ds {
            Some(d) => d.schema().clone(),
            None => lance::datatypes::Schema::try_from(schema.as_ref())
                .map_err(|e| Error::lance("schema", e))?,
        };
        let plan = WritePlan {
            schema: &schema,
            lance_schema: &lance_schema,
            groups: &layout_groups,
            new_groups: &mut new_groups,
            base_frags: &base_frags,
        };

        if let Some(remote) = &self.remote {
            return self
                .put_bucketed_remote(remote, plan, hash, rows, info, layout_json, opts)
                .await;
        }
        let base_data = base_layout
            .as_ref()
            .map(|(h, _)| self.version_dir(h).join("data"));
        let base_files: BTreeMap<String, FileDigest> = match &base_layout {
            Some((h, _)) => self
                .manifest(h)?
                .files
                .into_iter()
                .map(|f| (f.path.clone(), f))
                .collect(),
            None => BTreeMap::new(),
        };
        let (tmp, uri, params) = self.local_target()?;
        let data_dir = tmp.dir.join("data");
        // Reused fragments: their files linked from the base version.
        let mut linked: BTreeMap<String, FileDigest> = BTreeMap::new();
        if let Some(src) = &base_data {
            let dst = data_dir.join("data");
            for (_, _, i) in &layout_groups {
                let Some(i) = i else { continue };
                let frag = base_frags.get(*i).ok_or_else(|| Error::Corrupt {
                    hash: base.map(|h| h.to_string()).unwrap_or_default(),
                    what: format!("its {LAYOUT_FILE} names fragment {i}, which it lacks"),
                })?;
                fs::create_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
                for f in &frag.files {
                    let rel = format!("data/{}", f.path);
                    fs::hard_link(src.join(&rel), dst.join(&f.path))
                        .map_err(|e| Error::io(dst.join(&f.path), e))?;
                    if let Some(d) = base_files.get(&rel) {
                        linked.insert(rel, d.clone());
                    }
                }
            }
        }
        plan.write(&uri, &params, None).await?;
        let files = match self.keys() {
            None => digest_files_reusing(&data_dir, &linked)?,
            Some(_) => {
                // The plaintext digests of the linked files are the base's; the rest are
                // read through the encryption.
                let all = self.digest_local_except(&data_dir, &linked).await?;
                let mut out: Vec<FileDigest> =
                    all.into_iter().chain(linked.into_values()).collect();
                out.sort_by(|a, b| a.path.cmp(&b.path));
                out
            }
        };
        self.finish_local(tmp, files, hash, rows, layout_json, info, columns, opts)
            .await
    }

    /// Writes the layout file of a bucketed version written under `tmp` and commits it.
    #[allow(clippy::too_many_arguments)]
    async fn finish_local(
        &self,
        tmp: TempVersion,
        files: Vec<FileDigest>,
        hash: ContentHash,
        rows: u64,
        layout_json: Vec<u8>,
        info: BucketingInfo,
        columns: Vec<ColumnInfo>,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        let dest = self.version_dir(&hash);
        let lpath = tmp.dir.join(LAYOUT_FILE);
        let sealed = at_rest::maybe_seal(self.keys(), layout_json, &dest.join(LAYOUT_FILE))?;
        fs::write(&lpath, sealed).map_err(|e| Error::io(&lpath, e))?;
        let manifest = self.new_manifest(hash, &opts, columns, rows, files, None, Some(info));
        self.commit_local(tmp, manifest, opts).await
    }

    /// Scans the rows of the given buckets of bucketed version `hash`: only the fragments
    /// that hold them are read, with the columns `columns` (and the key column) and the rows
    /// that pass `filter`, in stored order; rows of other buckets that share a fragment are
    /// left out.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the version is not bucketed; as [`Store::scan_where`].
    pub async fn scan_buckets_where(
        &self,
        hash: &ContentHash,
        buckets: &BTreeSet<u32>,
        columns: Option<&[String]>,
        filter: Option<datafusion::prelude::Expr>,
        mut each: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let layout = self.bucket_layout(hash)?.ok_or_else(|| {
            Error::invalid("version", format!("{hash} is not a bucketed version"))
        })?;
        if buckets.is_empty() {
            return Ok(());
        }
        let ds = self.dataset(hash).await?;
        let all = ds.fragments();
        let chosen: Vec<Fragment> = layout
            .groups
            .iter()
            .enumerate()
            .filter(|(_, (lo, hi))| buckets.range(*lo..*hi).next().is_some())
            .map(|(i, _)| {
                all.get(i).cloned().ok_or_else(|| Error::Corrupt {
                    hash: hash.to_string(),
                    what: format!("its {LAYOUT_FILE} names fragment {i}, which it lacks"),
                })
            })
            .collect::<Result<_>>()?;
        if chosen.is_empty() {
            return Ok(());
        }
        let schema: SchemaRef = Arc::new(Schema::from(ds.schema()));
        let mut scanner = ds.scan();
        scanner.with_fragments(chosen);
        scanner.scan_in_order(true);
        if let Some(f) = filter {
            scanner.filter_expr(f);
        }
        if let Some(wanted) = columns {
            let names: Vec<&str> = schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .filter(|n| *n == layout.key || wanted.iter().any(|w| w == n))
                .collect();
            scanner
                .project(&names)
                .map_err(|e| Error::lance(ds.uri(), e))?;
        }
        let uri = ds.uri().to_string();
        let mut stream = scanner
            .try_into_stream()
            .await
            .map_err(|e| Error::lance(&uri, e))?;
        while let Some(batch) = stream.try_next().await.map_err(|e| Error::lance(&uri, e))? {
            let key = batch.schema().index_of(&layout.key)?;
            let ids = crate::hash::bucketed::bucket_ids(&batch, key, layout.buckets)?;
            let mask: arrow::array::BooleanArray =
                ids.iter().map(|b| Some(buckets.contains(b))).collect();
            let kept = arrow::compute::filter_record_batch(&batch, &mask)?;
            if kept.num_rows() > 0 {
                each(&kept)?;
            }
        }
        Ok(())
    }

    /// Stores a bucketed version of `schema` from batches whose rows come in bucket order
    /// (each bucket's rows together, in table order; buckets in increasing order), holding
    /// one group of rows at a time: each group's fragment is written as soon as it is
    /// complete and the buckets are hashed as they pass. The version is the one
    /// [`Store::put_bucketed`] stores from the same rows given whole (same hash, same
    /// groups).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name or key column, or rows out of bucket order;
    /// the source's errors; otherwise as [`Store::put_reader`].
    pub async fn put_bucketed_stream(
        &self,
        schema: SchemaRef,
        batches: impl Iterator<Item = Result<RecordBatch>>,
        bucketing: Bucketing,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        manifest::validate_name(&opts.name)?;
        let key = bucketing.key_index(&schema)?;
        let columns = ColumnInfo::from_schema(&schema)?;
        let lance_schema = lance::datatypes::Schema::try_from(schema.as_ref())
            .map_err(|e| Error::lance("schema", e))?;
        // Where the data goes: a temporary version directory, or staged data in object
        // storage.
        let (tmp, staged, uri, params) = match &self.remote {
            Some(remote) => {
                let (staged, uri, params) = self.remote_target(remote);
                (None, Some(staged), uri, params)
            }
            None => {
                let (tmp, uri, params) = self.local_target()?;
                (Some(tmp), None, uri, params)
            }
        };
        let discard = |staged: &Option<String>| {
            if let (Some(remote), Some(s)) = (&self.remote, staged) {
                let _ = remote.delete_all(s);
            }
        };
        let written = async {
            let builder = FragmentCreateBuilder::new(&uri)
                .schema(&lance_schema)
                .write_params(&params);
            let empty = TableHasher::new(&schema)?.finish();
            let mut digests = vec![
                BucketDigest {
                    rows: 0,
                    hash: empty
                };
                bucketing.buckets as usize
            ];
            let mut groups: Vec<(u32, u32)> = Vec::new();
            let mut fragments: Vec<Fragment> = Vec::new();
            let mut acc: Vec<RecordBatch> = Vec::new();
            let (mut acc_rows, mut start) = (0usize, None::<u32>);
            let mut current: Option<(u32, TableHasher)> = None;
            async fn flush(
                builder: &FragmentCreateBuilder<'_>,
                schema: &SchemaRef,
                acc: &mut Vec<RecordBatch>,
                uri: &str,
            ) -> Result<Fragment> {
                let batches = std::mem::take(acc);
                let reader: Box<dyn RecordBatchReader + Send> = Box::new(
                    RecordBatchIterator::new(batches.into_iter().map(Ok), schema.clone()),
                );
                builder
                    .write(reader, None)
                    .await
                    .map_err(|e| Error::lance(uri, e))
            }
            for batch in batches {
                let batch = batch?;
                if batch.schema().fields() != schema.fields() {
                    return Err(Error::invalid(
                        "batches",
                        "a batch's schema differs from the table's",
                    ));
                }
                let ids = crate::hash::bucketed::bucket_ids(&batch, key, bucketing.buckets)?;
                let mut i = 0;
                while i < ids.len() {
                    let b = ids[i];
                    let mut j = i + 1;
                    while j < ids.len() && ids[j] == b {
                        j += 1;
                    }
                    if current.as_ref().map(|c| c.0) != Some(b) {
                        if let Some((c, h)) = current.take() {
                            if b < c {
                                return Err(Error::invalid(
                                    "batches",
                                    format!("rows of bucket {b} come after bucket {c}: not in bucket order"),
                                ));
                            }
                            digests[c as usize] = BucketDigest {
                                rows: h.rows(),
                                hash: h.finish(),
                            };
                            if acc_rows >= GROUP_ROWS {
                                fragments.push(flush(&builder, &schema, &mut acc, &uri).await?);
                                groups.push((start.take().unwrap_or(c), c + 1));
                                acc_rows = 0;
                            }
                        }
                        current = Some((b, TableHasher::new(&schema)?.sequential()));
                        start.get_or_insert(b);
                    }
                    let part = batch.slice(i, j - i);
                    if let Some((_, h)) = current.as_mut() {
                        h.update(&part)?;
                    }
                    acc_rows += part.num_rows();
                    acc.push(part);
                    i = j;
                }
            }
            if let Some((c, h)) = current.take() {
                digests[c as usize] = BucketDigest {
                    rows: h.rows(),
                    hash: h.finish(),
                };
                if acc_rows >= GROUP_ROWS {
                    fragments.push(flush(&builder, &schema, &mut acc, &uri).await?);
                    groups.push((start.take().unwrap_or(c), c + 1));
                }
            }
            if let Some(s) = start {
                fragments.push(flush(&builder, &schema, &mut acc, &uri).await?);
                groups.push((s, bucketing.buckets));
            }
            let all = BucketedDigests::from_parts(bucketing.clone(), digests)?;
            Ok((all, groups, fragments))
        }
        .await;
        let (all, groups, fragments) = match written {
            Ok(w) => w,
            Err(e) => {
                discard(&staged);
                return Err(e);
            }
        };
        let hash = all.combine(&schema)?;
        let rows = all.rows();
        if self.manifest(&hash).is_ok() {
            discard(&staged);
            return self.existing(hash, &opts);
        }
        let committed = async {
            let op = Operation::Overwrite {
                fragments,
                schema: lance_schema.clone(),
                config_upsert_values: None,
                initial_bases: None,
            };
            let mut commit = CommitBuilder::new(uri.as_str());
            if let Some(p) = &params.store_params {
                commit = commit.with_store_params(p.clone());
            }
            if let Some(s) = &params.session {
                commit = commit.with_session(s.clone());
            }
            commit
                .execute(Transaction::new(0, op, None))
                .await
                .map_err(|e| Error::lance(&uri, e))?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = committed {
            discard(&staged);
            return Err(e);
        }
        let layout = BucketLayout {
            key: bucketing.key.clone(),
            buckets: bucketing.buckets,
            digests: all.digests().iter().map(|d| (d.rows, d.hash)).collect(),
            groups,
        };
        let layout_json = serde_json::to_vec(&layout)
            .map_err(|e| Error::Internal(format!("bucket layout does not serialize: {e}")))?;
        let info = BucketingInfo {
            key: bucketing.key.clone(),
            buckets: bucketing.buckets,
            layout_blake3: blake3::hash(&layout_json).to_hex().to_string(),
        };
        match (&self.remote, tmp, staged) {
            (Some(remote), _, Some(staged)) => self.finish_remote(
                remote,
                &staged,
                hash,
                rows,
                layout_json,
                info,
                columns,
                &opts,
            ),
            (None, Some(tmp), _) => {
                let files = self.digest_local(&tmp.dir.join("data")).await?;
                self.finish_local(tmp, files, hash, rows, layout_json, info, columns, opts)
                    .await
            }
            _ => Err(Error::Internal("bucketed stream: no write target".into())),
        }
    }

    /// [`Store::put_bucketed`] in object storage: every group written to staged data, then
    /// published as [`Store::put_reader`] does.
    #[allow(clippy::too_many_arguments)]
    async fn put_bucketed_remote(
        &self,
        remote: &Remote,
        plan: WritePlan<'_>,
        hash: ContentHash,
        rows: u64,
        info: BucketingInfo,
        layout_json: Vec<u8>,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        let (staged, uri, params) = self.remote_target(remote);
        let columns = ColumnInfo::from_schema(plan.schema)?;
        if let Err(e) = plan.write(&uri, &params, Some(remote.session())).await {
            let _ = remote.delete_all(&staged);
            return Err(e);
        }
        self.finish_remote(
            remote,
            &staged,
            hash,
            rows,
            layout_json,
            info,
            columns,
            &opts,
        )
    }

    /// Where a local bucketed version's dataset is written: a temporary version directory,
    /// its dataset URI and the write parameters (through the store's encryption, if any).
    fn local_target(&self) -> Result<(TempVersion, String, WriteParams)> {
        let tmp = TempVersion::create(&self.root)?;
        let (uri, params) = match &self.crypt {
            None => (Self::data_uri(&tmp.dir)?, WriteParams::default()),
            Some(c) => (
                crypt::LanceEncryption::dataset_uri(&tmp.dir.join("data"))?,
                WriteParams {
                    store_params: Some(c.lance.store_params()),
                    ..Default::default()
                },
            ),
        };
        Ok((tmp, uri, params))
    }

    /// Where a bucketed version's dataset is staged in object storage: the staging prefix,
    /// its URI and the write parameters.
    fn remote_target(&self, remote: &Remote) -> (String, String, WriteParams) {
        let staged = super::remote_staging();
        let uri = remote.uri(&staged);
        let params = WriteParams {
            session: Some(remote.session()),
            store_params: self.crypt.as_ref().map(|c| c.lance.store_params()),
            ..Default::default()
        };
        (staged, uri, params)
    }

    /// Publishes a bucketed version whose data is staged at `staged` in object storage: its
    /// layout file beside the data, the files digested, the manifest published as
    /// [`Store::put_reader`] does. The staged data is removed when this fails before the
    /// manifest is written.
    #[allow(clippy::too_many_arguments)]
    fn finish_remote(
        &self,
        remote: &Remote,
        staged: &str,
        hash: ContentHash,
        rows: u64,
        layout_json: Vec<u8>,
        info: BucketingInfo,
        columns: Vec<ColumnInfo>,
        opts: &PutOptions,
    ) -> Result<PutOutcome> {
        let files = remote
            .put(&format!("{staged}/{REMOTE_LAYOUT_FILE}"), layout_json)
            .and_then(|_| digest_remote(remote, staged));
        let files = match files {
            Ok(f) => f,
            Err(e) => {
                let _ = remote.delete_all(staged);
                return Err(e);
            }
        };
        let manifest = self.new_manifest(
            hash,
            opts,
            columns,
            rows,
            files,
            Some(staged.to_string()),
            Some(info),
        );
        self.publish_remote(remote, staged, manifest, opts)
    }
}

/// What a bucketed put writes: the groups in fragment order, each either a base fragment
/// (reused) or new rows.
struct WritePlan<'a> {
    schema: &'a SchemaRef,
    lance_schema: &'a lance::datatypes::Schema,
    /// `(lo, hi, Some(base fragment index))` for a reused group, `None` for a new one.
    groups: &'a [(u32, u32, Option<usize>)],
    /// The rows of each new group, by its first bucket.
    new_groups: &'a mut BTreeMap<u32, Vec<RecordBatch>>,
    base_frags: &'a [Fragment],
}

impl WritePlan<'_> {
    /// Writes the new groups' fragments into the dataset at `uri` and commits the dataset
    /// with every group's fragment in order.
    async fn write(
        self,
        uri: &str,
        params: &WriteParams,
        session: Option<Arc<lance::session::Session>>,
    ) -> Result<()> {
        let mut fragments = Vec::with_capacity(self.groups.len());
        let builder = FragmentCreateBuilder::new(uri)
            .schema(self.lance_schema)
            .write_params(params);
        for (lo, _, reused) in self.groups {
            match reused {
                Some(i) => {
                    let f = self.base_frags.get(*i).ok_or_else(|| {
                        Error::Internal(format!("bucket layout names missing fragment {i}"))
                    })?;
                    fragments.push(f.clone());
                }
                None => {
                    let batches = self.new_groups.remove(lo).unwrap_or_default();
                    let reader: Box<dyn RecordBatchReader + Send> = Box::new(
                        RecordBatchIterator::new(batches.into_iter().map(Ok), self.schema.clone()),
                    );
                    let f = builder
                        .write(reader, None)
                        .await
                        .map_err(|e| Error::lance(uri, e))?;
                    fragments.push(f);
                }
            }
        }
        let op = Operation::Overwrite {
            fragments,
            schema: self.lance_schema.clone(),
            config_upsert_values: None,
            initial_bases: None,
        };
        let mut commit = CommitBuilder::new(uri);
        if let Some(p) = &params.store_params {
            commit = commit.with_store_params(p.clone());
        }
        if let Some(s) = session {
            commit = commit.with_session(s);
        }
        commit
            .execute(Transaction::new(0, op, None))
            .await
            .map_err(|e| Error::lance(uri, e))?;
        Ok(())
    }
}

/// The rows of the given fragments (by index) of `ds`, split by bucket.
async fn read_groups(
    ds: &Dataset,
    fragments: &[usize],
    bucketing: &Bucketing,
) -> Result<Vec<(u32, RecordBatch)>> {
    if fragments.is_empty() {
        return Ok(Vec::new());
    }
    let all = ds.fragments();
    let chosen: Vec<Fragment> = fragments
        .iter()
        .map(|i| {
            all.get(*i).cloned().ok_or_else(|| Error::Corrupt {
                hash: ds.uri().to_string(),
                what: format!("its {LAYOUT_FILE} names fragment {i}, which it lacks"),
            })
        })
        .collect::<Result<_>>()?;
    let schema: SchemaRef = Arc::new(Schema::from(ds.schema()));
    let mut scanner = ds.scan();
    scanner.with_fragments(chosen);
    scanner.scan_in_order(true);
    let uri = ds.uri().to_string();
    let batches: Vec<RecordBatch> = scanner
        .try_into_stream()
        .await
        .map_err(|e| Error::lance(&uri, e))?
        .try_collect()
        .await
        .map_err(|e| Error::lance(&uri, e))?;
    split_into_buckets(&schema, &batches, bucketing)
}

/// Digests of every file under `dir`, sorted by path, taking the digests of `known` files
/// (by path) as given.
pub(super) fn digest_files_reusing(
    dir: &Path,
    known: &BTreeMap<String, FileDigest>,
) -> Result<Vec<FileDigest>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .map_err(|_| {
                    Error::Internal(format!("{} outside {}", path.display(), dir.display()))
                })?
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if let Some(k) = known.get(&rel) {
                out.push(k.clone());
                continue;
            }
            let mut hasher = blake3::Hasher::new();
            let file = fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            hasher
                .update_reader(file)
                .map_err(|e| Error::io(&path, e))?;
            let bytes = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
            out.push(FileDigest {
                path: rel,
                bytes,
                blake3: hasher.finalize().to_hex().to_string(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The bucketed hash of rows streamed in any order: one encoding-2 hasher a bucket.
pub(crate) struct StreamingBucketHasher {
    bucketing: Bucketing,
    key: usize,
    schema: Schema,
    hashers: Vec<crate::hash::TableHasher>,
}

impl StreamingBucketHasher {
    /// A hasher for rows of `schema` bucketed as `bucketing`.
    ///
    /// # Errors
    /// As [`Bucketing::key_index`] and [`TableHasher::new`].
    pub(crate) fn new(schema: &Schema, bucketing: Bucketing) -> Result<Self> {
        let key = bucketing.key_index(schema)?;
        let hashers = (0..bucketing.buckets)
            .map(|_| TableHasher::new(schema).map(TableHasher::sequential))
            .collect::<Result<_>>()?;
        Ok(StreamingBucketHasher {
            bucketing,
            key,
            schema: schema.clone(),
            hashers,
        })
    }

    /// Feeds a batch (its rows follow the earlier ones of the same bucket).
    ///
    /// # Errors
    /// Arrow errors; as [`TableHasher::update`].
    pub(crate) fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let ids = crate::hash::bucketed::bucket_ids(batch, self.key, self.bucketing.buckets)?;
        let mut by: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (row, b) in ids.into_iter().enumerate() {
            by.entry(b).or_default().push(row as u32);
        }
        for (b, rows) in by {
            let taken =
                arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(rows))?;
            self.hashers[b as usize].update(&taken)?;
        }
        Ok(())
    }

    /// The rows fed and the table's hash.
    ///
    /// # Errors
    /// As [`BucketedDigests::combine`].
    pub(crate) fn finish(self) -> Result<(u64, ContentHash)> {
        let digests: Vec<BucketDigest> = self
            .hashers
            .into_iter()
            .map(|h| BucketDigest {
                rows: h.rows(),
                hash: h.finish(),
            })
            .collect();
        let all = BucketedDigests::from_parts(self.bucketing, digests)?;
        Ok((all.rows(), all.combine(&self.schema)?))
    }
}
