//! De-identification: property tests (no raw id, name or unshifted date leaves; the same
//! patient gets the same token and offset across calls and batchings) and the stored
//! de-identified version's lineage.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Date32Array, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Field, Int32Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, Utc};
use proptest::prelude::*;

use ward::clock::ManualClock;
use ward::deid::{deidentify, store_deidentified, DeidKey, DeidPolicy};
use ward::store::{Kind, PutOptions, Store};

#[derive(Debug, Clone)]
struct Row {
    patient: String,
    given: String,
    family: String,
    phone: String,
    admit: i64,
    birth: i32,
    age: i32,
    zip: String,
    value: f64,
}

fn row() -> impl Strategy<Value = Row> {
    (
        "MRN-[0-9]{3,7}",
        "[A-Z][a-z]{2,9}",
        "[A-Z][a-z]{2,9}",
        "\\+1-[0-9]{3}-[0-9]{7}",
        // 1970..2100 in microseconds
        0i64..4_102_444_800_000_000,
        -20_000i32..20_000,
        0i32..120,
        "[0-9]{5}",
        -1e6f64..1e6,
    )
        .prop_map(
            |(patient, given, family, phone, admit, birth, age, zip, value)| Row {
                patient,
                given,
                family,
                phone,
                admit,
                birth,
                age,
                zip,
                value,
            },
        )
}

/// Rows whose patients repeat (a training set has several rows a patient).
fn rows() -> impl Strategy<Value = Vec<Row>> {
    (
        proptest::collection::vec(row(), 1..40),
        proptest::collection::vec(0usize..1000, 1..80),
    )
        .prop_map(|(base, picks)| {
            picks
                .iter()
                .map(|i| {
                    let mut r = base[i % base.len()].clone();
                    // Same patient, other times and values.
                    r.admit =
                        r.admit.wrapping_add((*i as i64) * 3_600_000_000) % 4_102_444_800_000_000;
                    r.value += *i as f64;
                    r
                })
                .collect()
        })
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("given_name", DataType::Utf8, true),
        Field::new("family_name", DataType::Utf8, true),
        Field::new("phone", DataType::Utf8, true),
        Field::new(
            "admit_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("birth_date", DataType::Date32, true),
        Field::new("age", DataType::Int32, true),
        Field::new("zip", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
    ]))
}

fn batch(rows: &[Row]) -> RecordBatch {
    let col = |f: &dyn Fn(&Row) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    RecordBatch::try_new(
        schema(),
        vec![
            col(&|r| r.patient.clone()),
            col(&|r| r.given.clone()),
            col(&|r| r.family.clone()),
            col(&|r| r.phone.clone()),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.admit).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(Date32Array::from(
                rows.iter().map(|r| r.birth).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                rows.iter().map(|r| r.age).collect::<Vec<_>>(),
            )),
            col(&|r| r.zip.clone()),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.value).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

fn key(seed: u8) -> DeidKey {
    DeidKey::from_secret(&[seed; 48]).unwrap()
}

/// Every string cell of every batch.
fn strings(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for c in b.columns() {
            if let Some(s) = c.as_string_opt::<i32>() {
                out.extend(s.iter().flatten().map(str::to_string));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_identifier_or_unshifted_date_leaves(rows in rows(), split in 1usize..10) {
        let policy = DeidPolicy::safe_harbor();
        let k = key(3);
        let input = batch(&rows);
        let out = deidentify(std::slice::from_ref(&input), &policy, &k).unwrap();
        let out_batch = &out[0];
        prop_assert_eq!(out_batch.num_rows(), rows.len());
        // No raw id, name or phone anywhere in the output's text.
        let cells = strings(&out);
        for r in &rows {
            for secret in [&r.patient, &r.given, &r.family, &r.phone] {
                prop_assert!(
                    !cells.iter().any(|c| c.contains(secret.as_str())),
                    "{} leaked", secret
                );
            }
        }
        let names: Vec<String> = out_batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        prop_assert_eq!(names, vec!["patient_id", "admit_time", "birth_date", "age", "zip", "value"]);
        // Every date moved, by the patient's offset; same patient, same token and offset.
        let ids = out_batch.column(0).as_string::<i32>();
        let admit = out_batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let birth = out_batch.column(2).as_primitive::<Date32Type>();
        let age = out_batch.column(3).as_primitive::<Int32Type>();
        let zip = out_batch.column(4).as_string::<i32>();
        let mut seen: HashMap<&str, (String, i64)> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            let shift = k.shift_days(&r.patient, &policy);
            prop_assert!((-365..=-1).contains(&shift));
            prop_assert_ne!(admit.value(i), r.admit);
            prop_assert_eq!(admit.value(i), r.admit + shift * 86_400_000_000);
            prop_assert_ne!(birth.value(i), r.birth);
            prop_assert_eq!(i64::from(birth.value(i)), i64::from(r.birth) + shift);
            let entry = seen.entry(r.patient.as_str()).or_insert_with(|| (ids.value(i).to_string(), shift));
            prop_assert_eq!(&entry.0, ids.value(i));
            prop_assert_eq!(entry.1, shift);
            prop_assert_eq!(age.value(i), r.age.min(90));
            prop_assert_eq!(zip.value(i).len(), 3);
            prop_assert!(r.zip.starts_with(zip.value(i)) || zip.value(i) == "000");
        }
        // Another call, with the rows split into several batches: the same tokens and dates.
        let chunks: Vec<RecordBatch> = rows
            .chunks(split)
            .map(batch)
            .collect();
        let again = deidentify(&chunks, &policy, &k).unwrap();
        let flat = arrow::compute::concat_batches(&again[0].schema(), &again).unwrap();
        prop_assert_eq!(&flat, out_batch);
        // Another key: other tokens.
        let other = deidentify(std::slice::from_ref(&input), &policy, &key(4)).unwrap();
        prop_assert_ne!(
            other[0].column(0).as_string::<i32>().value(0),
            ids.value(0)
        );
    }
}

#[test]
fn restricted_zip_prefixes_become_000() {
    let policy = DeidPolicy::safe_harbor();
    for (zip, want) in [
        ("03601", "000"),
        ("89301", "000"),
        ("10201", "000"),
        ("10301", "103"),
        ("55601", "000"),
    ] {
        let rows = vec![Row {
            patient: "MRN-1".into(),
            given: "Ann".into(),
            family: "Lee".into(),
            phone: "+1-555-0000000".into(),
            admit: 1_700_000_000_000_000,
            birth: 0,
            age: 30,
            zip: zip.into(),
            value: 1.0,
        }];
        let out = deidentify(&[batch(&rows)], &policy, &key(1)).unwrap();
        assert_eq!(out[0].column(4).as_string::<i32>().value(0), want, "{zip}");
    }
}

#[tokio::test]
async fn a_deidentified_set_is_its_own_version_with_lineage_but_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    ));
    let store = Store::open(dir.path(), clock).unwrap();
    let rows: Vec<Row> = (0..30)
        .map(|i| Row {
            patient: format!("MRN-{}", i % 7),
            given: "Ann".into(),
            family: "Lee".into(),
            phone: "+1-555-0000000".into(),
            admit: 1_700_000_000_000_000 + i * 1_000_000,
            birth: 5000,
            age: 50 + i as i32,
            zip: "12345".into(),
            value: i as f64,
        })
        .collect();
    let identified = store
        .put_batches(
            schema(),
            vec![batch(&rows)],
            PutOptions::new("readmission-train", Kind::Training),
        )
        .await
        .unwrap()
        .manifest;
    let secret = [9u8; 32];
    let k = DeidKey::from_secret(&secret).unwrap();
    let policy = DeidPolicy::load(
        &crate::common::crate_dir().join("examples/security/deid-safe-harbor.toml"),
    )
    .unwrap();
    assert_eq!(
        policy,
        DeidPolicy::safe_harbor(),
        "the example file is the default policy"
    );
    let out = store_deidentified(
        &store,
        &identified.hash,
        &policy,
        &k,
        "readmission-train-deid",
    )
    .await
    .unwrap();
    let m = &out.manifest;
    assert_eq!(m.kind, Kind::Training);
    assert_ne!(m.hash, identified.hash);
    assert_eq!(m.lineage.inputs, vec![identified.hash]);
    assert_eq!(m.lineage.definition, Some(policy.hash()));
    assert_eq!(m.lineage.params["op"], "deidentify");
    assert_eq!(m.lineage.params["key_id"], k.key_id());
    let text = serde_json::to_string(m).unwrap();
    assert!(
        !text.contains(&hex::encode(secret)),
        "the key is not in the manifest"
    );
    assert!(!m.schema.iter().any(|c| c.name == "given_name"));
    // Deterministic: the same input, policy and key give the same version.
    let again = store_deidentified(
        &store,
        &identified.hash,
        &policy,
        &k,
        "readmission-train-deid",
    )
    .await
    .unwrap();
    assert_eq!(again.manifest.hash, m.hash);
    assert!(!again.created);
    // The stored rows carry no raw id.
    let (_, batches) = store.read(&m.hash).await.unwrap();
    let cells = strings(&batches);
    assert!(!cells.iter().any(|c| c.contains("MRN-")));
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 30);
}
