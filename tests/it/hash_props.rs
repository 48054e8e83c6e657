//! Properties of the content hash (docs/hashing.md): re-chunking never changes it; changing
//! a value, a null, a name, a type or the row order always does.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, LargeStringArray, ListBuilder,
    RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt16Array, UInt32Array, UInt64Array,
    UInt8Array,
};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::{DataType, Field, Schema};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ward::hash::hash_batches;

/// A random table with a column of every hashed type, nulls in every column.
pub(crate) fn random_batch(rows: usize, seed: u64) -> RecordBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let null = |rng: &mut ChaCha8Rng| rng.random_bool(0.2);
    macro_rules! col {
        ($arr:ty, $gen:expr) => {{
            let v: Vec<_> = (0..rows)
                .map(|_| {
                    if null(&mut rng) {
                        None
                    } else {
                        Some($gen(&mut rng))
                    }
                })
                .collect();
            Arc::new(<$arr>::from(v)) as ArrayRef
        }};
    }
    // Two long values, so lengths need 2- and 3-byte varints.
    let long: &'static str = Box::leak("é".repeat(150).into_boxed_str());
    let longer: &'static str = Box::leak("w".repeat(17_000).into_boxed_str());
    let words = [
        "",
        "a",
        "hb",
        "718-7",
        "Hämoglobin",
        "ß∂ƒ",
        "x y z",
        long,
        longer,
    ];
    let mut list = ListBuilder::new(StringBuilder::new());
    let mut lists_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    for _ in 0..rows {
        if lists_rng.random_bool(0.2) {
            list.append_null();
            continue;
        }
        for _ in 0..lists_rng.random_range(0..4) {
            if lists_rng.random_bool(0.2) {
                list.values().append_null();
            } else {
                list.values()
                    .append_value(words[lists_rng.random_range(0..words.len())]);
            }
        }
        list.append(true);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "b",
            col!(BooleanArray, |r: &mut ChaCha8Rng| r.random::<bool>()),
        ),
        ("i8", col!(Int8Array, |r: &mut ChaCha8Rng| r.random::<i8>())),
        (
            "i16",
            col!(Int16Array, |r: &mut ChaCha8Rng| r.random::<i16>()),
        ),
        (
            "i32",
            col!(Int32Array, |r: &mut ChaCha8Rng| r.random::<i32>()),
        ),
        (
            "i64",
            col!(Int64Array, |r: &mut ChaCha8Rng| r.random::<i64>()),
        ),
        (
            "u8",
            col!(UInt8Array, |r: &mut ChaCha8Rng| r.random::<u8>()),
        ),
        (
            "u16",
            col!(UInt16Array, |r: &mut ChaCha8Rng| r.random::<u16>()),
        ),
        (
            "u32",
            col!(UInt32Array, |r: &mut ChaCha8Rng| r.random::<u32>()),
        ),
        (
            "u64",
            col!(UInt64Array, |r: &mut ChaCha8Rng| r.random::<u64>()),
        ),
        (
            "f32",
            col!(Float32Array, |r: &mut ChaCha8Rng| {
                [0.0f32, -0.0, f32::NAN, 1.5, r.random::<f32>()][r.random_range(0..5)]
            }),
        ),
        (
            "f64",
            col!(Float64Array, |r: &mut ChaCha8Rng| {
                [0.0f64, -0.0, f64::NAN, -2.25, r.random::<f64>()][r.random_range(0..5)]
            }),
        ),
        (
            "s",
            col!(StringArray, |r: &mut ChaCha8Rng| words
                [r.random_range(0..words.len())]),
        ),
        (
            "bin",
            col!(BinaryArray, |r: &mut ChaCha8Rng| words
                [r.random_range(0..words.len())]
            .as_bytes()),
        ),
        (
            "ls",
            col!(LargeStringArray, |r: &mut ChaCha8Rng| words
                [r.random_range(0..words.len())]),
        ),
        (
            "d",
            col!(Date32Array, |r: &mut ChaCha8Rng| r
                .random_range(-30000..30000)),
        ),
        ("ts_s", {
            let v: Vec<_> = (0..rows)
                .map(|_| {
                    (!null(&mut rng)).then(|| rng.random_range(-1_000_000_000i64..4_000_000_000))
                })
                .collect();
            Arc::new(TimestampSecondArray::from(v).with_timezone("UTC")) as ArrayRef
        }),
        ("ts_ms", {
            let v: Vec<_> = (0..rows)
                .map(|_| (!null(&mut rng)).then(|| rng.random::<i64>() / 4))
                .collect();
            Arc::new(TimestampMillisecondArray::from(v)) as ArrayRef
        }),
        ("ts_us", {
            let v: Vec<_> = (0..rows)
                .map(|_| (!null(&mut rng)).then(|| rng.random::<i64>() / 4))
                .collect();
            Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef
        }),
        ("ts_ns", {
            let v: Vec<_> = (0..rows)
                .map(|_| (!null(&mut rng)).then(|| rng.random::<i64>()))
                .collect();
            Arc::new(TimestampNanosecondArray::from(v).with_timezone("+01:00")) as ArrayRef
        }),
        ("dec", {
            let v: Vec<_> = (0..rows)
                .map(|_| (!null(&mut rng)).then(|| rng.random_range(-10_000_000i128..10_000_000)))
                .collect();
            Arc::new(
                Decimal128Array::from(v)
                    .with_precision_and_scale(12, 3)
                    .expect("valid"),
            ) as ArrayRef
        }),
        ("list", Arc::new(list.finish()) as ArrayRef),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("columns match the schema")
}

fn rechunk(batch: &RecordBatch, size: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < batch.num_rows() {
        let len = size.min(batch.num_rows() - off);
        out.push(batch.slice(off, len));
        off += len;
    }
    out
}

fn h(batch: &RecordBatch) -> ward::hash::ContentHash {
    hash_batches(&batch.schema(), [batch]).expect("hashable")
}

/// Replaces column `i` of `batch`.
fn with_column(batch: &RecordBatch, i: usize, field: Field, col: ArrayRef) -> RecordBatch {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols = batch.columns().to_vec();
    fields[i] = field;
    cols[i] = col;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("valid")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rechunking_never_changes_the_hash(rows in 0usize..160, seed in any::<u64>()) {
        let batch = random_batch(rows, seed);
        let whole = h(&batch);
        for size in [1, 2, 7, 49, 50, 51, 100] {
            let parts = rechunk(&batch, size);
            prop_assert_eq!(hash_batches(&batch.schema(), parts.iter()).unwrap(), whole);
        }
        // Re-assembled from the parts into one buffer (different offsets, same content).
        let parts = rechunk(&batch, 7);
        if !parts.is_empty() {
            let joined = concat_batches(&batch.schema(), parts.iter()).unwrap();
            prop_assert_eq!(h(&joined), whole);
        }
    }

    #[test]
    fn every_change_changes_the_hash(rows in 2usize..80, seed in any::<u64>(), pick in any::<u64>()) {
        let batch = random_batch(rows, seed);
        let base = h(&batch);
        let ncols = batch.num_columns();
        let col = (pick as usize) % ncols;
        let row = (pick as usize / ncols) % rows;

        // One null more or less: flip validity of one cell (value taken from another row
        // of the same column when the cell becomes non-null).
        let array = batch.column(col);
        let donor = (0..rows).find(|r| array.is_valid(*r));
        if let Some(donor) = donor {
            let idx: Vec<Option<u32>> = (0..rows as u32)
                .map(|r| {
                    if r as usize == row {
                        if array.is_valid(row) { None } else { Some(donor as u32) }
                    } else {
                        Some(r)
                    }
                })
                .collect();
            let changed = take(array.as_ref(), &arrow::array::UInt32Array::from(idx), None).unwrap();
            let field = batch.schema().field(col).clone();
            prop_assert_ne!(h(&with_column(&batch, col, field, changed)), base);
        }

        // One value changed: the i64 column's cell, to a different non-null value.
        let i64_col = batch.schema().index_of("i64").unwrap();
        let values = batch.column(i64_col).as_any().downcast_ref::<Int64Array>().unwrap();
        let mut v: Vec<Option<i64>> = values.iter().collect();
        v[row] = Some(v[row].map_or(7, |x| x.wrapping_add(1)));
        let field = batch.schema().field(i64_col).clone();
        prop_assert_ne!(h(&with_column(&batch, i64_col, field, Arc::new(Int64Array::from(v)))), base);

        // A column renamed.
        let field = batch.schema().field(col).clone().with_name("renamed");
        prop_assert_ne!(h(&with_column(&batch, col, field, batch.column(col).clone())), base);

        // A type changed with the same bytes: int64 read as uint64, a timestamp's zone.
        let as_u64 = arrow::compute::cast(batch.column(i64_col), &DataType::UInt64);
        if let Ok(as_u64) = as_u64 {
            let field = Field::new("i64", DataType::UInt64, true);
            prop_assert_ne!(h(&with_column(&batch, i64_col, field, as_u64)), base);
        }
        let ts = batch.schema().index_of("ts_us").unwrap();
        let moved = batch.column(ts).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap()
            .clone().with_timezone("Europe/Amsterdam");
        let field = Field::new("ts_us", moved.data_type().clone(), true);
        prop_assert_ne!(h(&with_column(&batch, ts, field, Arc::new(moved))), base);

        // Row order: swap two rows whose content differs.
        let a = batch.slice(row, 1);
        if let Some(other) = (0..rows).find(|r| h(&batch.slice(*r, 1)) != h(&a)) {
            let idx: Vec<u32> = (0..rows as u32)
                .map(|r| if r as usize == row { other as u32 } else if r as usize == other { row as u32 } else { r })
                .collect();
            let idx = arrow::array::UInt32Array::from(idx);
            let cols: Vec<ArrayRef> = batch.columns().iter().map(|c| take(c.as_ref(), &idx, None).unwrap()).collect();
            let swapped = RecordBatch::try_new(batch.schema(), cols).unwrap();
            prop_assert_ne!(h(&swapped), base);
        }

        // One row fewer.
        prop_assert_ne!(h(&batch.slice(0, rows - 1)), base);
    }
}

#[test]
fn utf8_and_large_utf8_hash_alike() {
    let a = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec![Some("a"), Some("")]))],
    )
    .unwrap();
    let b = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::LargeUtf8,
            false,
        )])),
        vec![Arc::new(LargeStringArray::from(vec![Some("a"), Some("")]))],
    )
    .unwrap();
    assert_eq!(h(&a), h(&b));
}

#[test]
fn a_fixed_table_has_a_fixed_hash() {
    // Guards the encoding itself: this value is also asserted by the Python reimplementation
    // test, so the spec, Rust and Python cannot drift apart silently.
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("patient_id", DataType::Utf8, false),
            Field::new("value", DataType::Float64, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["p1", "p2"])),
            Arc::new(Float64Array::from(vec![Some(13.5), None])),
        ],
    )
    .unwrap();
    let mut expect = blake3::Hasher::new();
    let mut header = b"ward-content-hash-v2\n".to_vec();
    header.extend(2u64.to_le_bytes());
    for (n, t) in [("patient_id", "string"), ("value", "float64")] {
        header.extend((n.len() as u64).to_le_bytes());
        header.extend(n.as_bytes());
        header.extend((t.len() as u64).to_le_bytes());
        header.extend(t.as_bytes());
    }
    expect.update(&header);
    expect.update(&2u64.to_le_bytes());
    let d = |b: &[u8]| *blake3::hash(b).as_bytes();
    // Lengths are LEB128 varints: 2 is one byte.
    let lens: Vec<u8> = vec![2, 2];
    for digest in [
        d(b""),
        d(&lens),
        d(b"p1p2"),
        d(&1u64.to_le_bytes()),
        d(b""),
        d(&13.5f64.to_le_bytes()),
    ] {
        expect.update(&digest);
    }
    assert_eq!(h(&batch).0, *expect.finalize().as_bytes());
}
