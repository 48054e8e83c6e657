//! Keeping a store honest: `verify` (recompute everything a version claims), `export` (a
//! version as one Parquet file, written atomically) and `cleanup` (remove what no write is
//! using any more).
//!
//! In object storage `cleanup` has no locks to ask: it removes staged data (`data/<id>/`)
//! that no published manifest names and whose newest object is older than a given age
//! ([`STAGING_MAX_AGE`] by default), i.e. what killed writers left.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};

use super::*;
use crate::error::{Error, Result};
use crate::hash::{ContentHash, TableHasher};

impl Store {
    /// Recomputes everything a version claims: the manifest's seal, the digest of every
    /// stored file, the schema, the row count and the content hash.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the version and what differs; [`Error::NotFound`] if it
    /// does not exist.
    pub async fn verify(&self, hash: &ContentHash) -> Result<VerifyReport> {
        let corrupt = |what: String| Error::Corrupt {
            hash: hash.to_string(),
            what,
        };
        let m = self.manifest(hash).map_err(|e| match e {
            Error::Manifest { source, .. } => {
                corrupt(format!("manifest.json does not parse: {source}"))
            }
            other => other,
        })?;
        if m.seal != m.compute_seal() {
            return Err(corrupt(
                "manifest.json was edited: its seal does not match its content".into(),
            ));
        }
        if m.hash != *hash {
            return Err(corrupt(format!(
                "manifest.json names another hash, {}",
                m.hash
            )));
        }
        let stored = match &self.remote {
            Some(r) => digest_remote(r, &Self::data_rel(&m))?,
            None => {
                self.digest_local(&self.version_dir(hash).join("data"))
                    .await?
            }
        };
        let want: BTreeMap<&str, &FileDigest> =
            m.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let have: BTreeMap<&str, &FileDigest> =
            stored.iter().map(|f| (f.path.as_str(), f)).collect();
        for (path, f) in &want {
            match have.get(path) {
                None => return Err(corrupt(format!("data file {path} is missing"))),
                Some(g) if g.blake3 != f.blake3 || g.bytes != f.bytes => {
                    return Err(corrupt(format!(
                        "data file {path} changed: {} bytes with blake3 {}, the manifest says {} bytes with blake3 {}",
                        g.bytes, g.blake3, f.bytes, f.blake3
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = have.keys().find(|p| !want.contains_key(*p)) {
            return Err(corrupt(format!("unexpected data file {extra}")));
        }
        // A bucketed version (encoding 3): its layout file must match the manifest, and the
        // rows are hashed bucket by bucket.
        let bucketing = match &m.bucketing {
            Some(b) => {
                self.bucket_layout(hash)?;
                Some(crate::hash::bucketed::Bucketing::new(
                    b.key.clone(),
                    b.buckets,
                )?)
            }
            None => None,
        };
        enum Hashing {
            Whole(TableHasher),
            Bucketed(super::bucketed::StreamingBucketHasher),
        }
        let start = |schema: &Schema| -> Result<Hashing> {
            Ok(match &bucketing {
                None => Hashing::Whole(TableHasher::new(schema)?),
                Some(b) => Hashing::Bucketed(super::bucketed::StreamingBucketHasher::new(
                    schema,
                    b.clone(),
                )?),
            })
        };
        let mut hasher: Option<Hashing> = None;
        let schema = self
            .scan(hash, |b| {
                if hasher.is_none() {
                    hasher = Some(start(&b.schema())?);
                }
                match hasher.as_mut() {
                    Some(Hashing::Whole(h)) => h.update(b)?,
                    Some(Hashing::Bucketed(h)) => h.update(b)?,
                    None => {}
                }
                Ok(())
            })
            .await
            .map_err(|e| match e {
                Error::Lance { source, .. } => corrupt(format!("data does not decode: {source}")),
                other => other,
            })?;
        let hasher = match hasher {
            Some(h) => h,
            None => start(&schema)?,
        };
        let columns = ColumnInfo::from_schema(&schema)?;
        if columns != m.schema {
            return Err(corrupt(
                "the stored schema differs from the manifest's".into(),
            ));
        }
        let (rows, actual) = match hasher {
            Hashing::Whole(h) => (h.rows(), h.finish()),
            Hashing::Bucketed(h) => h.finish()?,
        };
        if rows != m.rows {
            return Err(corrupt(format!(
                "{rows} rows stored, the manifest says {}",
                m.rows
            )));
        }
        if actual != *hash {
            return Err(corrupt(format!("the stored rows hash to {actual}")));
        }
        Ok(VerifyReport {
            hash: *hash,
            rows: m.rows,
            files: stored.len(),
        })
    }

    /// Writes a version to a Parquet file (written aside and renamed into place).
    ///
    /// # Errors
    /// As [`Store::scan`]; [`Error::Parquet`] or [`Error::Io`] if the file cannot be written.
    pub async fn export_parquet(&self, hash: &ContentHash, out: &Path) -> Result<u64> {
        let m = self.manifest(hash)?;
        let ds = self.dataset(hash).await?;
        let schema: SchemaRef = Arc::new(Schema::from(ds.schema()));
        let part = out.with_extension("parquet.part");
        let file = fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
                "ward.hash".to_string(),
                Some(m.hash.to_string()),
            )]))
            .build();
        let perr = |source| Error::Parquet {
            path: out.to_path_buf(),
            source,
        };
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, schema, Some(props)).map_err(perr)?;
        let mut rows = 0u64;
        self.scan(hash, |b| {
            rows += b.num_rows() as u64;
            writer.write(b).map_err(perr)
        })
        .await?;
        let file = writer.into_inner().map_err(perr)?;
        file.sync_all().map_err(|e| Error::io(&part, e))?;
        drop(file);
        fs::rename(&part, out).map_err(|e| Error::io(out, e))?;
        // The rename is only durable once the directory holding the new name is synced.
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        sync_dir(&parent)?;
        Ok(rows)
    }

    /// Removes leftovers of interrupted writes (temporary directories no writer holds).
    ///
    /// # Errors
    /// [`Error::Io`] if the store cannot be read or a leftover cannot be removed.
    pub fn cleanup(&self) -> Result<CleanupReport> {
        self.cleanup_staged_before(STAGING_MAX_AGE)
    }

    /// As [`Store::cleanup`], taking unpublished staged data in object storage for a
    /// leftover once its newest object is older than `age` (a local store's leftovers are
    /// found by their locks, whatever their age).
    ///
    /// # Errors
    /// As [`Store::cleanup`].
    pub fn cleanup_staged_before(&self, age: std::time::Duration) -> Result<CleanupReport> {
        if let Some(r) = &self.remote {
            return self.cleanup_remote(r, age);
        }
        let dir = self.root.join("tmp");
        let mut report = CleanupReport::default();
        let mut entries: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            entries.push(entry.map_err(|e| Error::io(&dir, e))?.path());
        }
        entries.sort();
        let held = |lock_path: &Path| match fs::File::open(lock_path) {
            Ok(f) => f.try_lock().is_err(),
            Err(_) => false,
        };
        let name_of = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        };
        // Directories first (with their lock files), then lock files left without one.
        for target in entries.iter().filter(|p| p.is_dir()) {
            let name = name_of(target);
            let lock_path = target.with_file_name(format!("{name}.lock"));
            if held(&lock_path) {
                report.in_use.push(name);
                continue;
            }
            fs::remove_dir_all(target).map_err(|e| Error::io(target, e))?;
            remove_if_present(&lock_path)?;
            report.removed.push(name);
        }
        for lock_path in entries.iter().filter(|p| p.is_file()) {
            if lock_path.with_extension("").exists() || held(lock_path) {
                continue;
            }
            if remove_if_present(lock_path)? {
                report.removed.push(name_of(lock_path));
            }
        }
        report.removed.extend(self.heads.cleanup()?);
        Ok(report)
    }
}

impl Store {
    fn cleanup_remote(&self, remote: &Remote, age: std::time::Duration) -> Result<CleanupReport> {
        let mut report = CleanupReport::default();
        // Listed before the manifests: data a writer publishes after this listing is named
        // by a manifest read below, or is younger than `age`.
        let staged = remote.list_dirs("data")?;
        let published: std::collections::BTreeSet<String> = self
            .list(&ListFilter::default())?
            .into_iter()
            .filter_map(|m| m.data)
            .collect();
        let age =
            chrono::Duration::from_std(age).map_err(|e| Error::invalid("age", e.to_string()))?;
        let cutoff = chrono::Utc::now() - age;
        for id in staged {
            let rel = format!("data/{id}");
            if published.contains(&rel) {
                continue;
            }
            let objects = remote.list_all(&rel)?;
            if objects.iter().any(|o| o.modified > cutoff) {
                report.in_use.push(rel);
                continue;
            }
            for o in &objects {
                remote.delete(&o.key)?;
            }
            report.removed.push(rel);
        }
        Ok(report)
    }
}
