//! The bucketed content hash (encoding 3): the hash of a table whose rows fall into a fixed
//! number of buckets by a key column, so that a new version that changes a few keys' rows is
//! hashed from the changed buckets alone.
//!
//! A row's bucket is a stable function of its key's bytes ([`bucket_of`]: BLAKE3 of the key,
//! its first eight bytes little-endian, modulo the bucket count). Each bucket is the table of
//! its rows, in the order they have in the whole table, hashed with the column encoding of
//! [`super::TableHasher`] (encoding 2). The table's hash combines the buckets' row counts
//! and hashes in bucket order ([`BucketedDigests::combine`]). `docs/hashing.md` specifies it
//! byte for byte and `examples/python/verify_hash.py --bucket-key` recomputes it.
//!
//! Why it is still a content hash: the bucket of a row depends on its key's value only, and
//! a bucket's hash on its rows' values and relative order only, so the hash does not depend
//! on how the rows are stored, and the same content built in one go or bucket by bucket has
//! the same hash. Why it is cheap to update: a version that changes the rows of some keys
//! keeps every other bucket's digest ([`BucketedDigests::replace`]); combining is one BLAKE3
//! over 40 bytes a bucket, without reading a row of the unchanged buckets.

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Schema};
use rayon::prelude::*;

use super::{put_bytes, put_u64, type_descriptor, ContentHash, TableHasher};
use crate::error::{Error, Result};

/// The first bytes of the hashed header of a bucketed table.
const MAGIC: &[u8] = b"ward-content-hash-v3\n";

/// The bucket count Ward uses unless told otherwise: at a million patients about a thousand
/// patients a bucket, so a change of one patient's rows rehashes (and rewrites) a
/// thousandth of the table.
pub const DEFAULT_BUCKETS: u32 = 1024;

/// How a table's rows are bucketed: by the value of one column, into `buckets` buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucketing {
    /// The key column: a `string` or `binary` column (the patient id for curated tables).
    pub key: String,
    /// How many buckets (at least 1).
    pub buckets: u32,
}

impl Bucketing {
    /// Bucketing by `key` into `buckets` buckets.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `buckets` is 0.
    pub fn new(key: impl Into<String>, buckets: u32) -> Result<Bucketing> {
        if buckets == 0 {
            return Err(Error::invalid("buckets", "give at least 1 bucket"));
        }
        Ok(Bucketing {
            key: key.into(),
            buckets,
        })
    }

    /// The index of the key column in `schema`, checked to be a string or binary column.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the column if it is missing or of another type.
    pub fn key_index(&self, schema: &Schema) -> Result<usize> {
        let (i, field) = schema.column_with_name(&self.key).ok_or_else(|| {
            Error::invalid(
                format!("bucket key {}", self.key),
                "the table has no such column",
            )
        })?;
        match field.data_type() {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView => Ok(i),
            other => Err(Error::invalid(
                format!("bucket key {}", self.key),
                format!("must be a string or binary column, not {other}"),
            )),
        }
    }
}

/// The bucket of a key: the first 8 bytes of BLAKE3(key bytes) as a little-endian u64, modulo
/// `buckets`. A null key falls in bucket 0.
pub fn bucket_of(key: Option<&[u8]>, buckets: u32) -> u32 {
    match key {
        None => 0,
        Some(k) => {
            let h = blake3::hash(k);
            let mut first = [0u8; 8];
            first.copy_from_slice(&h.as_bytes()[..8]);
            (u64::from_le_bytes(first) % u64::from(buckets.max(1))) as u32
        }
    }
}

/// The bucket of every row of `batch`, by its column `key` (a string or binary column).
///
/// # Errors
/// [`Error::InvalidArgument`] if the column is not a string or binary column.
pub fn bucket_ids(batch: &RecordBatch, key: usize, buckets: u32) -> Result<Vec<u32>> {
    let col = batch.column(key);
    let of = |v: Option<&[u8]>| bucket_of(v, buckets);
    Ok(match col.data_type() {
        DataType::Utf8 => col
            .as_string::<i32>()
            .iter()
            .map(|v| of(v.map(str::as_bytes)))
            .collect(),
        DataType::LargeUtf8 => col
            .as_string::<i64>()
            .iter()
            .map(|v| of(v.map(str::as_bytes)))
            .collect(),
        DataType::Utf8View => col
            .as_string_view()
            .iter()
            .map(|v| of(v.map(str::as_bytes)))
            .collect(),
        DataType::Binary => col.as_binary::<i32>().iter().map(of).collect(),
        DataType::LargeBinary => col.as_binary::<i64>().iter().map(of).collect(),
        DataType::BinaryView => col.as_binary_view().iter().map(of).collect(),
        other => {
            return Err(Error::invalid(
                format!("bucket key {}", batch.schema().field(key).name()),
                format!("must be a string or binary column, not {other}"),
            ))
        }
    })
}

/// One bucket's part of a bucketed hash: its row count and its hash as a table of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketDigest {
    /// Rows in the bucket.
    pub rows: u64,
    /// The encoding-2 hash of the bucket's rows (with the table's schema).
    pub hash: ContentHash,
}

/// The digests of every bucket of one table version: what a new version that changes a few
/// buckets starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketedDigests {
    bucketing: Bucketing,
    digests: Vec<BucketDigest>,
}

impl BucketedDigests {
    /// The digests of an empty table of `schema`: every bucket empty.
    ///
    /// # Errors
    /// As [`TableHasher::new`] and [`Bucketing::key_index`].
    pub fn empty(schema: &Schema, bucketing: Bucketing) -> Result<BucketedDigests> {
        bucketing.key_index(schema)?;
        let none = BucketDigest {
            rows: 0,
            hash: TableHasher::new(schema)?.finish(),
        };
        Ok(BucketedDigests {
            digests: vec![none; bucketing.buckets as usize],
            bucketing,
        })
    }

    /// Digests given bucket by bucket (for example read back from a manifest).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless there is exactly one digest a bucket.
    pub fn from_parts(bucketing: Bucketing, digests: Vec<BucketDigest>) -> Result<BucketedDigests> {
        if digests.len() != bucketing.buckets as usize {
            return Err(Error::invalid(
                "bucket digests",
                format!(
                    "{} digests for {} buckets",
                    digests.len(),
                    bucketing.buckets
                ),
            ));
        }
        Ok(BucketedDigests { bucketing, digests })
    }

    /// How the rows are bucketed.
    pub fn bucketing(&self) -> &Bucketing {
        &self.bucketing
    }

    /// Every bucket's digest, in bucket order.
    pub fn digests(&self) -> &[BucketDigest] {
        &self.digests
    }

    /// Rows in all buckets.
    pub fn rows(&self) -> u64 {
        self.digests.iter().map(|d| d.rows).sum()
    }

    /// Puts a new digest for `bucket` (its rows changed); the others are kept as they are.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if there is no such bucket.
    pub fn replace(&mut self, bucket: u32, digest: BucketDigest) -> Result<()> {
        let slot = self.digests.get_mut(bucket as usize).ok_or_else(|| {
            Error::invalid(
                "bucket",
                format!("{bucket}: there are {} buckets", self.bucketing.buckets),
            )
        })?;
        *slot = digest;
        Ok(())
    }

    /// The table's hash:
    /// `BLAKE3("ward-content-hash-v3\n" || u64(k) || for each column: str(name) ||
    /// str(descriptor) || str(key column) || u64(B) || u64(n) || for each bucket b in 0..B:
    /// u64(rows of b) || hash of b)`.
    ///
    /// # Errors
    /// [`Error::UnsupportedType`] if a column's type has no encoding.
    pub fn combine(&self, schema: &Schema) -> Result<ContentHash> {
        let mut header = Vec::with_capacity(64 + schema.fields().len() * 32);
        header.extend_from_slice(MAGIC);
        put_u64(&mut header, schema.fields().len() as u64);
        for field in schema.fields() {
            put_bytes(&mut header, field.name().as_bytes());
            put_bytes(
                &mut header,
                type_descriptor(field.name(), field.data_type())?.as_bytes(),
            );
        }
        put_bytes(&mut header, self.bucketing.key.as_bytes());
        put_u64(&mut header, u64::from(self.bucketing.buckets));
        put_u64(&mut header, self.rows());
        let mut h = blake3::Hasher::new();
        h.update(&header);
        for d in &self.digests {
            h.update(&d.rows.to_le_bytes());
            h.update(&d.hash.0);
        }
        Ok(ContentHash(*h.finalize().as_bytes()))
    }
}

/// The rows of `batches` that fall in each bucket, in table order: one batch a non-empty
/// bucket, keyed by bucket.
///
/// # Errors
/// As [`Bucketing::key_index`]; Arrow errors taking the rows.
pub fn split_into_buckets(
    schema: &Schema,
    batches: &[RecordBatch],
    bucketing: &Bucketing,
) -> Result<Vec<(u32, RecordBatch)>> {
    let key = bucketing.key_index(schema)?;
    let err = |e: arrow::error::ArrowError| Error::Internal(format!("bucketing rows: {e}"));
    // Batch by batch (all of them together may hold more text than one Arrow array can),
    // each bucket's pieces joined at the end: a bucket is a small part of a table.
    let mut parts: std::collections::BTreeMap<u32, Vec<RecordBatch>> =
        std::collections::BTreeMap::new();
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let ids = bucket_ids(batch, key, bucketing.buckets)?;
        // A batch of one bucket is taken as it is (no copy).
        if let Some(&first) = ids.first() {
            if ids.iter().all(|b| *b == first) {
                parts.entry(first).or_default().push(batch.clone());
                continue;
            }
        }
        // A stable counting sort of the row numbers by bucket keeps table order inside a
        // bucket.
        let mut starts = vec![0usize; bucketing.buckets as usize + 1];
        for &b in &ids {
            starts[b as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut order = vec![0u32; ids.len()];
        for (row, &b) in ids.iter().enumerate() {
            order[next[b as usize]] = row as u32;
            next[b as usize] += 1;
        }
        for b in 0..bucketing.buckets {
            let (lo, hi) = (starts[b as usize], starts[b as usize + 1]);
            if hi > lo {
                let taken = take_record_batch(batch, &UInt32Array::from(order[lo..hi].to_vec()))
                    .map_err(err)?;
                parts.entry(b).or_default().push(taken);
            }
        }
    }
    let schema = std::sync::Arc::new(schema.clone());
    parts
        .into_iter()
        .map(|(b, pieces)| {
            let rows = match pieces.len() {
                1 => pieces
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())),
                _ => arrow::compute::concat_batches(&schema, &pieces).map_err(err)?,
            };
            Ok((b, rows))
        })
        .collect()
}

/// The digest of one bucket's rows (in their order).
///
/// # Errors
/// As [`TableHasher::new`] and [`TableHasher::update`].
pub fn bucket_digest(schema: &Schema, rows: &[RecordBatch]) -> Result<BucketDigest> {
    let mut h = TableHasher::new(schema)?.sequential();
    for b in rows {
        h.update(b)?;
    }
    Ok(BucketDigest {
        rows: h.rows(),
        hash: h.finish(),
    })
}

/// The bucketed hash of a whole table, and the digests a later version can start from.
/// Buckets are hashed in parallel.
///
/// # Errors
/// As [`split_into_buckets`] and [`bucket_digest`].
pub fn hash_bucketed(
    schema: &Schema,
    batches: &[RecordBatch],
    bucketing: Bucketing,
) -> Result<(ContentHash, BucketedDigests)> {
    let parts = split_into_buckets(schema, batches, &bucketing)?;
    let digests: Vec<(u32, BucketDigest)> = parts
        .par_iter()
        .map(|(b, rows)| Ok((*b, bucket_digest(schema, std::slice::from_ref(rows))?)))
        .collect::<Result<_>>()?;
    let mut all = BucketedDigests::empty(schema, bucketing)?;
    for (b, d) in digests {
        all.replace(b, d)?;
    }
    Ok((all.combine(schema)?, all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::Field;
    use std::sync::Arc;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("patient_id", DataType::Utf8, true),
            Field::new("value", DataType::Int64, true),
        ])
    }

    fn table(rows: &[(Option<&str>, i64)]) -> RecordBatch {
        let ids: ArrayRef = Arc::new(StringArray::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        ));
        let vals: ArrayRef = Arc::new(Int64Array::from(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        ));
        RecordBatch::try_new(Arc::new(schema()), vec![ids, vals]).unwrap()
    }

    fn by_patient(buckets: u32) -> Bucketing {
        Bucketing::new("patient_id", buckets).unwrap()
    }

    #[test]
    fn bucket_of_is_the_documented_function() {
        // BLAKE3("p1"), first 8 bytes little-endian, mod 1024; computed independently of
        // this function from the blake3 crate's digest.
        let h = blake3::hash(b"p1");
        let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap());
        assert_eq!(u64::from(bucket_of(Some(b"p1"), 1024)), n % 1024);
        assert_eq!(bucket_of(None, 1024), 0);
        assert_eq!(bucket_of(Some(b"anything"), 1), 0);
    }

    #[test]
    fn the_hash_does_not_depend_on_how_buckets_interleave_or_batches_split() {
        let rows = [
            (Some("p1"), 1),
            (Some("p2"), 2),
            (Some("p1"), 3),
            (None, 4),
            (Some("p4"), 5),
        ];
        // Each patient in a bucket of its own (rows of keys that share a bucket keep their
        // table order relative to each other, which is part of the content).
        let buckets: std::collections::BTreeSet<u32> = [None, Some("p1"), Some("p2"), Some("p4")]
            .iter()
            .map(|k| bucket_of(k.map(str::as_bytes), 8))
            .collect();
        assert_eq!(buckets.len(), 4, "pick keys in distinct buckets");
        let (a, _) = hash_bucketed(&schema(), &[table(&rows)], by_patient(8)).unwrap();
        // The same rows of each patient in the same relative order, other patients moved
        // around them, and split into other batches: the same hash.
        let moved = [(Some("p4"), 5), (Some("p1"), 1), (None, 4), (Some("p2"), 2)];
        let (b, _) = hash_bucketed(
            &schema(),
            &[table(&moved), table(&[(Some("p1"), 3)])],
            by_patient(8),
        )
        .unwrap();
        assert_eq!(a, b);
        // Swapping two rows of one patient changes it (order inside a bucket is content).
        let swapped = [
            (Some("p1"), 3),
            (Some("p2"), 2),
            (Some("p1"), 1),
            (None, 4),
            (Some("p4"), 5),
        ];
        let (c, _) = hash_bucketed(&schema(), &[table(&swapped)], by_patient(8)).unwrap();
        assert_ne!(a, c);
        // So do the bucket count and a value.
        let (d, _) = hash_bucketed(&schema(), &[table(&rows)], by_patient(16)).unwrap();
        assert_ne!(a, d);
        let mut changed = rows;
        changed[4].1 = 6;
        let (e, _) = hash_bucketed(&schema(), &[table(&changed)], by_patient(8)).unwrap();
        assert_ne!(a, e);
    }

    #[test]
    fn replacing_the_changed_buckets_equals_hashing_everything() {
        let before: Vec<(Option<&str>, i64)> = (0..200)
            .map(|i| (Some(["a", "b", "c", "d", "e", "f", "g"][i % 7]), i as i64))
            .collect();
        let (_, mut digests) = hash_bucketed(&schema(), &[table(&before)], by_patient(64)).unwrap();
        // A change of patient "c": one more row. Only its bucket is hashed again.
        let mut after = before.clone();
        after.push((Some("c"), 1000));
        let b = bucket_of(Some(b"c"), 64);
        let c_rows: Vec<_> = after
            .iter()
            .copied()
            .filter(|r| bucket_of(r.0.map(str::as_bytes), 64) == b)
            .collect();
        digests
            .replace(b, bucket_digest(&schema(), &[table(&c_rows)]).unwrap())
            .unwrap();
        let (full, fresh) = hash_bucketed(&schema(), &[table(&after)], by_patient(64)).unwrap();
        assert_eq!(digests.combine(&schema()).unwrap(), full);
        assert_eq!(digests, fresh);
        assert_eq!(digests.rows(), 201);
    }

    #[test]
    fn an_empty_table_is_every_bucket_empty() {
        let (h, d) = hash_bucketed(&schema(), &[], by_patient(4)).unwrap();
        let empty = BucketedDigests::empty(&schema(), by_patient(4)).unwrap();
        assert_eq!(d, empty);
        assert_eq!(h, empty.combine(&schema()).unwrap());
    }

    #[test]
    fn a_key_that_cannot_be_bucketed_is_named() {
        let e = Bucketing::new("value", 4)
            .unwrap()
            .key_index(&schema())
            .unwrap_err();
        assert!(e.to_string().contains("bucket key value"), "{e}");
        let e = Bucketing::new("nope", 4)
            .unwrap()
            .key_index(&schema())
            .unwrap_err();
        assert!(e.to_string().contains("no such column"), "{e}");
        assert!(Bucketing::new("patient_id", 0).is_err());
    }
}
