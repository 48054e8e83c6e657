//! The content hash of a table: BLAKE3 over a canonical, layout-independent encoding.
//!
//! `docs/hashing.md` specifies the encoding byte for byte; `examples/python/verify_hash.py`
//! reimplements it. In short: every column feeds three BLAKE3 streams (the row numbers of its
//! nulls, the lengths of its variable-width values, the bytes of its values), and the hash is
//! BLAKE3 over a header, the schema, the row count and the three digests of every column.
//!
//! Why streams per column and not rows: the streams of one column see the same bytes however
//! the rows are cut into batches (layout independence follows by construction), a column of
//! fixed-width values without nulls is hashed straight from its Arrow buffer (no copying, so
//! the encoding costs little beyond BLAKE3 itself), and columns hash in parallel.
//!
//! Logical, not physical: `utf8`, `large_utf8` and `utf8_view` are all `string`; nullability
//! flags and field metadata are not part of the hash (a Parquet round trip may change them);
//! floats are canonical (one NaN, `-0.0` written as `+0.0`).

use std::fmt;
use std::str::FromStr;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericListArray, OffsetSizeTrait, RecordBatch,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, Schema, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use rayon::prelude::*;

use crate::error::{Error, Result};

pub mod bucketed;

/// The first bytes of the hashed header: names the encoding and its version.
const MAGIC: &[u8] = b"ward-content-hash-v2\n";

/// A content hash, written `b3:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// The 64 hex digits without the `b3:` prefix (used as the directory name).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b3:{}", self.hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ContentHash {
    type Err = Error;

    /// Parses `b3:<64 hex>` (the prefix is required, so a hash is never mistaken for a name).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidRef {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        let hex_part = s
            .strip_prefix("b3:")
            .ok_or_else(|| bad("a hash starts with b3:"))?;
        if hex_part.len() != 64 {
            return Err(bad("a hash has 64 hex digits after b3:"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part.to_ascii_lowercase(), &mut out)
            .map_err(|_| bad("not hexadecimal"))?;
        Ok(ContentHash(out))
    }
}

impl serde::Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The canonical name of a column type in the hash (`docs/hashing.md`, "Types").
///
/// # Errors
/// [`Error::UnsupportedType`] for types outside the documented set.
pub fn type_descriptor(column: &str, dt: &DataType) -> Result<String> {
    let unsupported = || Error::UnsupportedType {
        column: column.to_string(),
        data_type: dt.to_string(),
    };
    Ok(match dt {
        DataType::Boolean => "bool".into(),
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Date32 => "date32".into(),
        DataType::Timestamp(unit, tz) => {
            let unit = match unit {
                TimeUnit::Second => "s",
                TimeUnit::Millisecond => "ms",
                TimeUnit::Microsecond => "us",
                TimeUnit::Nanosecond => "ns",
            };
            format!("timestamp[{unit},{}]", tz.as_deref().unwrap_or(""))
        }
        DataType::Decimal128(p, s) => format!("decimal128({p},{s})"),
        DataType::List(f) | DataType::LargeList(f) => match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "list<string>".into(),
            _ => return Err(unsupported()),
        },
        _ => return Err(unsupported()),
    })
}

/// Streaming hasher of one table: feed batches in row order, then [`TableHasher::finish`].
///
/// The result does not depend on how the rows were split into batches.
#[derive(Debug, Clone)]
pub struct TableHasher {
    header: Vec<u8>,
    columns: Vec<ColumnHasher>,
    rows: u64,
    parallel: bool,
}

#[derive(Debug, Clone)]
struct ColumnHasher {
    nulls: blake3::Hasher,
    lengths: blake3::Hasher,
    data: blake3::Hasher,
    /// Scratch for encoded lengths and canonicalized values, reused across batches.
    scratch: Vec<u8>,
}

impl TableHasher {
    /// A hasher for tables of `schema`, hashing columns in parallel (rayon).
    ///
    /// # Errors
    /// [`Error::UnsupportedType`] if a column's type has no canonical encoding.
    pub fn new(schema: &Schema) -> Result<Self> {
        let mut header = Vec::with_capacity(64 + schema.fields().len() * 32);
        header.extend_from_slice(MAGIC);
        put_u64(&mut header, schema.fields().len() as u64);
        for field in schema.fields() {
            let ty = type_descriptor(field.name(), field.data_type())?;
            put_bytes(&mut header, field.name().as_bytes());
            put_bytes(&mut header, ty.as_bytes());
        }
        let columns = (0..schema.fields().len())
            .map(|_| ColumnHasher {
                nulls: blake3::Hasher::new(),
                lengths: blake3::Hasher::new(),
                data: blake3::Hasher::new(),
                scratch: Vec::new(),
            })
            .collect();
        Ok(TableHasher {
            header,
            columns,
            rows: 0,
            parallel: true,
        })
    }

    /// Hash columns one after another on the calling thread (for measuring one core).
    pub fn sequential(mut self) -> Self {
        self.parallel = false;
        self
    }

    /// Feeds the next rows.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the batch has a different number of columns than the
    /// schema; [`Error::UnsupportedType`] if a column's type has no encoding.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_columns() != self.columns.len() {
            return Err(Error::invalid(
                "batch",
                format!(
                    "has {} columns, the schema {}",
                    batch.num_columns(),
                    self.columns.len()
                ),
            ));
        }
        let first_row = self.rows;
        let schema = batch.schema();
        let work = |(i, col): (usize, &mut ColumnHasher)| {
            col.update(schema.field(i).name(), batch.column(i), first_row)
        };
        if self.parallel && self.columns.len() > 1 && batch.num_rows() >= 4096 {
            self.columns
                .par_iter_mut()
                .enumerate()
                .map(work)
                .collect::<Result<()>>()?;
        } else {
            self.columns.iter_mut().enumerate().try_for_each(work)?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows fed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The content hash of everything fed.
    pub fn finish(&self) -> ContentHash {
        let mut h = blake3::Hasher::new();
        h.update(&self.header);
        h.update(&self.rows.to_le_bytes());
        for c in &self.columns {
            h.update(c.nulls.finalize().as_bytes());
            h.update(c.lengths.finalize().as_bytes());
            h.update(c.data.finalize().as_bytes());
        }
        ContentHash(*h.finalize().as_bytes())
    }
}

/// The content hash of a table given as batches.
///
/// # Errors
/// As [`TableHasher::new`] and [`TableHasher::update`].
pub fn hash_batches<'a>(
    schema: &Schema,
    batches: impl IntoIterator<Item = &'a RecordBatch>,
) -> Result<ContentHash> {
    let mut h = TableHasher::new(schema)?;
    for b in batches {
        h.update(b)?;
    }
    Ok(h.finish())
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Unsigned LEB128: 7 bits per byte, low groups first, the high bit set on every byte but
/// the last; the shortest encoding (one byte below 128). The length streams use it.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Marks a null list item in the lengths stream of `list<string>`.
const NULL_ITEM: u64 = u64::MAX;

impl ColumnHasher {
    fn update(&mut self, name: &str, array: &ArrayRef, first_row: u64) -> Result<()> {
        if let Some(nulls) = array.logical_nulls() {
            if nulls.null_count() > 0 {
                self.scratch.clear();
                for i in nulls.iter().enumerate().filter(|(_, v)| !v).map(|(i, _)| i) {
                    put_u64(&mut self.scratch, first_row + i as u64);
                }
                self.nulls.update(&self.scratch);
            }
        }
        match array.data_type() {
            DataType::Boolean => self.bools(array.as_boolean()),
            DataType::Int8 => self.fixed::<Int8Type>(array),
            DataType::Int16 => self.fixed::<Int16Type>(array),
            DataType::Int32 => self.fixed::<Int32Type>(array),
            DataType::Int64 => self.fixed::<Int64Type>(array),
            DataType::UInt8 => self.fixed::<UInt8Type>(array),
            DataType::UInt16 => self.fixed::<UInt16Type>(array),
            DataType::UInt32 => self.fixed::<UInt32Type>(array),
            DataType::UInt64 => self.fixed::<UInt64Type>(array),
            DataType::Date32 => self.fixed::<Date32Type>(array),
            DataType::Decimal128(_, _) => self.fixed::<Decimal128Type>(array),
            DataType::Timestamp(TimeUnit::Second, _) => self.fixed::<TimestampSecondType>(array),
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                self.fixed::<TimestampMillisecondType>(array)
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                self.fixed::<TimestampMicrosecondType>(array)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                self.fixed::<TimestampNanosecondType>(array)
            }
            DataType::Float32 => self.floats::<Float32Type, 4>(
                array,
                |v: f32| v.is_nan() || (v == 0.0 && v.is_sign_negative()),
                |v: f32| {
                    if v.is_nan() {
                        f32::NAN.to_bits().to_le_bytes()
                    } else {
                        (v + 0.0).to_bits().to_le_bytes()
                    }
                },
            ),
            DataType::Float64 => self.floats::<Float64Type, 8>(
                array,
                |v: f64| v.is_nan() || (v == 0.0 && v.is_sign_negative()),
                |v: f64| {
                    if v.is_nan() {
                        f64::NAN.to_bits().to_le_bytes()
                    } else {
                        (v + 0.0).to_bits().to_le_bytes()
                    }
                },
            ),
            DataType::Utf8 => {
                let a = array.as_string::<i32>();
                self.offset_values(a.value_offsets(), a.values(), a.nulls())
            }
            DataType::LargeUtf8 => {
                let a = array.as_string::<i64>();
                self.offset_values(a.value_offsets(), a.values(), a.nulls())
            }
            DataType::Binary => {
                let a = array.as_binary::<i32>();
                self.offset_values(a.value_offsets(), a.values(), a.nulls())
            }
            DataType::LargeBinary => {
                let a = array.as_binary::<i64>();
                self.offset_values(a.value_offsets(), a.values(), a.nulls())
            }
            DataType::Utf8View => {
                let a = array.as_string_view();
                self.view_values(a.len(), a.nulls(), |i| a.value(i).as_bytes())
            }
            DataType::BinaryView => {
                let a = array.as_binary_view();
                self.view_values(a.len(), a.nulls(), |i| a.value(i))
            }
            DataType::List(_) => self.string_lists(name, array.as_list::<i32>()),
            DataType::LargeList(_) => self.string_lists(name, array.as_list::<i64>()),
            other => Err(Error::UnsupportedType {
                column: name.to_string(),
                data_type: other.to_string(),
            }),
        }
    }

    /// Fixed-width values: their little-endian bytes, straight from the buffer when there are
    /// no nulls (the hot path).
    fn fixed<T: arrow::datatypes::ArrowPrimitiveType>(&mut self, array: &ArrayRef) -> Result<()>
    where
        T::Native: ToLeBytes,
    {
        let a = array.as_primitive::<T>();
        let values = a.values();
        if a.null_count() == 0 && cfg!(target_endian = "little") {
            self.data.update(values.inner().as_slice());
            return Ok(());
        }
        self.scratch.clear();
        for (i, v) in values.iter().enumerate() {
            if a.is_valid(i) {
                v.put_le(&mut self.scratch);
            }
        }
        self.data.update(&self.scratch);
        Ok(())
    }

    /// Floats: canonical NaN and zero, so equal values hash equal whatever their bits. A
    /// column without nulls, NaNs or negative zeros is canonical already and is hashed in
    /// place (the common case); otherwise values are rewritten into the scratch buffer.
    fn floats<T, const N: usize>(
        &mut self,
        array: &ArrayRef,
        special: impl Fn(T::Native) -> bool,
        canon: impl Fn(T::Native) -> [u8; N],
    ) -> Result<()>
    where
        T: arrow::datatypes::ArrowPrimitiveType,
    {
        let a = array.as_primitive::<T>();
        if a.null_count() == 0
            && cfg!(target_endian = "little")
            && !a.values().iter().any(|v| special(*v))
        {
            self.data.update(a.values().inner().as_slice());
            return Ok(());
        }
        self.scratch.clear();
        self.scratch.reserve(a.len() * N);
        for (i, v) in a.values().iter().enumerate() {
            if a.is_valid(i) {
                self.scratch.extend_from_slice(&canon(*v));
            }
        }
        self.data.update(&self.scratch);
        Ok(())
    }

    fn bools(&mut self, a: &BooleanArray) -> Result<()> {
        self.scratch.clear();
        self.scratch.reserve(a.len());
        if a.null_count() == 0 {
            self.scratch.extend(a.values().iter().map(u8::from));
        } else {
            self.scratch.extend(a.iter().flatten().map(u8::from));
        }
        self.data.update(&self.scratch);
        Ok(())
    }

    /// Offset-based strings or binaries: lengths (LEB128) to the lengths stream, bytes to the
    /// data stream. Without nulls the lengths come straight from the offsets and the bytes
    /// are one contiguous slice, hashed in place (the hot path for id and code columns).
    fn offset_values<O: OffsetSizeTrait>(
        &mut self,
        offsets: &[O],
        values: &[u8],
        nulls: Option<&arrow::buffer::NullBuffer>,
    ) -> Result<()> {
        let valid = |i: usize| nulls.is_none_or(|n| n.is_valid(i));
        let no_nulls = nulls.is_none_or(|n| n.null_count() == 0);
        self.scratch.clear();
        self.scratch.reserve(offsets.len() * 2);
        for (i, w) in offsets.windows(2).enumerate() {
            if no_nulls || valid(i) {
                put_varint(
                    &mut self.scratch,
                    (w[1].as_usize() - w[0].as_usize()) as u64,
                );
            }
        }
        self.lengths.update(&self.scratch);
        if no_nulls {
            if let Some(bytes) = contiguous(offsets, values) {
                self.data.update(bytes);
            }
            return Ok(());
        }
        // The valid values' bytes gathered into one update: the stream is the same, and
        // BLAKE3 is much faster over long inputs than over many short ones.
        self.scratch.clear();
        for (i, w) in offsets.windows(2).enumerate() {
            if valid(i) {
                if let Some(bytes) = values.get(w[0].as_usize()..w[1].as_usize()) {
                    self.scratch.extend_from_slice(bytes);
                }
            }
        }
        self.data.update(&self.scratch);
        Ok(())
    }

    /// View arrays (`Utf8View`, `BinaryView`): the same streams, value by value.
    fn view_values<'a>(
        &mut self,
        len: usize,
        nulls: Option<&arrow::buffer::NullBuffer>,
        value: impl Fn(usize) -> &'a [u8],
    ) -> Result<()> {
        let valid = |i: usize| nulls.is_none_or(|n| n.is_valid(i));
        self.scratch.clear();
        self.scratch.reserve(len * 2);
        for i in (0..len).filter(|i| valid(*i)) {
            put_varint(&mut self.scratch, value(i).len() as u64);
        }
        self.lengths.update(&self.scratch);
        self.scratch.clear();
        for i in (0..len).filter(|i| valid(*i)) {
            self.scratch.extend_from_slice(value(i));
        }
        self.data.update(&self.scratch);
        Ok(())
    }

    fn string_lists<O: OffsetSizeTrait>(
        &mut self,
        name: &str,
        a: &GenericListArray<O>,
    ) -> Result<()> {
        self.scratch.clear();
        for i in 0..a.len() {
            if a.is_null(i) {
                continue;
            }
            let items = a.value(i);
            let strings: Vec<Option<&[u8]>> = match items.data_type() {
                DataType::Utf8 => items
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.map(str::as_bytes))
                    .collect(),
                DataType::LargeUtf8 => items
                    .as_string::<i64>()
                    .iter()
                    .map(|s| s.map(str::as_bytes))
                    .collect(),
                DataType::Utf8View => items
                    .as_string_view()
                    .iter()
                    .map(|s| s.map(str::as_bytes))
                    .collect(),
                other => {
                    return Err(Error::UnsupportedType {
                        column: name.to_string(),
                        data_type: format!("list<{other}>"),
                    })
                }
            };
            put_varint(&mut self.scratch, strings.len() as u64);
            for s in strings {
                match s {
                    Some(bytes) => {
                        put_varint(&mut self.scratch, bytes.len() as u64);
                        self.data.update(bytes);
                    }
                    None => put_varint(&mut self.scratch, NULL_ITEM),
                }
            }
        }
        self.lengths.update(&self.scratch);
        Ok(())
    }
}

/// The value bytes of a whole offset-based string array, when they are contiguous.
fn contiguous<'a, O: OffsetSizeTrait>(offsets: &[O], values: &'a [u8]) -> Option<&'a [u8]> {
    let start = offsets.first()?.as_usize();
    let end = offsets.last()?.as_usize();
    values.get(start..end)
}

/// Little-endian encoding of fixed-width native values (the slow path, with nulls).
trait ToLeBytes: Copy {
    fn put_le(self, out: &mut Vec<u8>);
}

macro_rules! to_le {
    ($($t:ty),*) => {$(
        impl ToLeBytes for $t {
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
to_le!(i8, i16, i32, i64, i128, u8, u16, u32, u64);

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::Field;
    use std::sync::Arc;

    fn batch(ints: Vec<Option<i64>>, strs: Vec<Option<&str>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ints)),
                Arc::new(StringArray::from(strs)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn varints_are_shortest_leb128() {
        let enc = |v: u64| {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
        assert_eq!(enc(u64::MAX)[9], 0x01);
    }

    #[test]
    fn hash_parses_and_prints() {
        let h = ContentHash([0xab; 32]);
        let s = h.to_string();
        assert_eq!(s.len(), 67);
        assert_eq!(s.parse::<ContentHash>().unwrap(), h);
        assert!("ab".parse::<ContentHash>().is_err());
        assert!(format!("b3:{}", "zz".repeat(32))
            .parse::<ContentHash>()
            .is_err());
    }

    #[test]
    fn splitting_rows_keeps_the_hash() {
        let whole = batch(
            vec![Some(1), None, Some(3)],
            vec![Some("x"), Some(""), None],
        );
        let h1 = hash_batches(&whole.schema(), [&whole]).unwrap();
        let parts = [whole.slice(0, 1), whole.slice(1, 2)];
        let h2 = hash_batches(&whole.schema(), parts.iter()).unwrap();
        assert_eq!(h1, h2);
    }

    #[test]
    fn null_and_empty_string_differ() {
        let a = batch(vec![Some(1)], vec![Some("")]);
        let b = batch(vec![Some(1)], vec![None]);
        assert_ne!(
            hash_batches(&a.schema(), [&a]).unwrap(),
            hash_batches(&b.schema(), [&b]).unwrap()
        );
    }

    #[test]
    fn string_boundaries_matter() {
        let a = batch(vec![Some(1), Some(2)], vec![Some("ab"), Some("c")]);
        let b = batch(vec![Some(1), Some(2)], vec![Some("a"), Some("bc")]);
        assert_ne!(
            hash_batches(&a.schema(), [&a]).unwrap(),
            hash_batches(&b.schema(), [&b]).unwrap()
        );
    }

    #[test]
    fn negative_zero_and_nans_are_canonical() {
        let schema = Arc::new(Schema::new(vec![Field::new("f", DataType::Float64, true)]));
        let mk = |v: Vec<f64>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(v))]).unwrap()
        };
        let other_nan = f64::from_bits(0x7ff8_0000_0000_0001);
        let a = mk(vec![0.0, f64::NAN]);
        let b = mk(vec![-0.0, other_nan]);
        assert_eq!(
            hash_batches(&schema, [&a]).unwrap(),
            hash_batches(&schema, [&b]).unwrap()
        );
    }
}
