//! Timelines: derived tables, dictionary-encoded inputs, determinism, incremental
//! materialization.

use super::*;
use crate::common::known_by;

// ---------------------------------------------------------------------------------------
// Derived tables, determinism, incremental
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn derived_length_of_stay_matches_the_encounters() {
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let set = repo.set("readmission").unwrap();
    let tables = cohort(150, 3);
    let tl = compute(
        set,
        &Inputs::from_curated(&tables).unwrap(),
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    let idx = index(set, &tl.batches);
    let mut seen = 0;
    for e in tables
        .encounters
        .iter()
        .filter(|e| e.class == "inpatient" && e.meta.retracted_at.is_none())
    {
        let Some(d) = e.discharge_time else { continue };
        let t = d.max(e.meta.known_at);
        let got = lookup(&idx, &e.patient_id, "los_last_stay_days", t, None);
        let want = (d - e.admit_time).num_microseconds().unwrap() as f64 / DAY_US as f64;
        assert_eq!(got.value, Some(Value::Num(want)), "{}", e.encounter_id);
        seen += 1;
    }
    assert!(seen > 10, "only {seen} stays");
}

/// Text columns read as dictionaries (as a Parquet reader gives `patient_id` or `code` when
/// asked to) give the same row filter, the same timeline and the same direct lookups as plain
/// text, for the readmission set (derived table, scores) and every kind.
#[tokio::test]
async fn dictionary_encoded_text_columns_give_the_same_results() {
    use arrow::array::{StringArray, TimestampMicrosecondArray};
    let tables = cohort(200, 3);
    let inputs = Inputs::from_curated(&tables).unwrap();
    let dict_type = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let as_dict = |b: &RecordBatch, cols: &[&str]| -> RecordBatch {
        let fields: Vec<arrow::datatypes::Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| match cols.contains(&f.name().as_str()) {
                true => arrow::datatypes::Field::new(f.name(), dict_type.clone(), f.is_nullable()),
                false => (**f).clone(),
            })
            .collect();
        let arrays = b
            .columns()
            .iter()
            .zip(&fields)
            .map(|(a, f)| cast(a, f.data_type()).unwrap())
            .collect();
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), arrays).unwrap()
    };
    let keys = ["patient_id", "code", "code_system", "class"];
    let dict = Inputs {
        tables: inputs
            .tables
            .iter()
            .map(|(t, bs)| (*t, bs.iter().map(|b| as_dict(b, &keys)).collect()))
            .collect(),
        late_source_ids: None,
    };
    assert!(dict.tables[&Table::Observations][0]
        .column_by_name("code")
        .unwrap()
        .as_dictionary_opt::<arrow::datatypes::Int32Type>()
        .is_some());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut ids: Vec<&str> = tables
        .patients
        .iter()
        .map(|p| p.patient_id.as_str())
        .collect();
    ids.push("nobody");
    let n = 3_000;
    let entities = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("patient_id", DataType::Utf8, false),
            arrow::datatypes::Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ])),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| ids[rng.random_range(0..ids.len())]),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..n).map(|_| {
                    us(Utc.with_ymd_and_hms(2012, 1, 1, 0, 0, 0).unwrap())
                        + rng.random_range(0..14 * 365 * DAY_US)
                }))
                .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let all = FeatureRepo::parse(ALL_KINDS, "all.toml").unwrap();
    let readmission = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    for set in [
        all.set("all").unwrap(),
        readmission.set("readmission").unwrap(),
    ] {
        for (table, filter) in set.row_filters() {
            for (plain, dict) in inputs.tables[&table].iter().zip(&dict.tables[&table]) {
                assert_eq!(
                    filter.keep(plain, "plain").unwrap(),
                    filter.keep(dict, "dict").unwrap(),
                    "{} row filter of {table:?}",
                    set.name
                );
            }
        }
        let opts = MaterializeOptions::default();
        let plain_tl = compute(set, &inputs, &opts).await.unwrap();
        let dict_tl = compute(set, &dict, &opts).await.unwrap();
        assert!(plain_tl.rows > 1000);
        assert_eq!(
            table_hash(&plain_tl.batches),
            table_hash(&dict_tl.batches),
            "{} timeline",
            set.name
        );
        let mut direct = Vec::new();
        for given in [&inputs, &dict] {
            let entities = std::slice::from_ref(&entities);
            let (_, out) = features::historical_direct(
                set,
                given.clone(),
                entities,
                "patient_id",
                "timestamp",
                &opts,
            )
            .await
            .unwrap();
            direct.push(out);
        }
        assert_eq!(direct[0], direct[1], "{} direct lookups", set.name);
    }
}

#[tokio::test]
async fn same_timeline_for_any_thread_count_and_batch_size() {
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let set = repo.set("readmission").unwrap();
    let tables = cohort(200, 5);
    let inputs = Inputs::from_curated(&tables).unwrap();
    // Input order does not matter either: reverse every table.
    let mut reversed = tables.clone();
    reversed.observations.reverse();
    reversed.encounters.reverse();
    reversed.patients.reverse();
    reversed.conditions.reverse();
    reversed.procedures.reverse();
    let reversed = Inputs::from_curated(&reversed).unwrap();
    let mut hashes = Vec::new();
    for (threads, batch_size, inputs) in [
        (1, 7, &inputs),
        (4, 65_536, &inputs),
        (4, 50, &reversed),
        (2, 1, &inputs),
    ] {
        let opts = MaterializeOptions {
            threads: Some(threads),
            batch_size,
            ..Default::default()
        };
        let tl = compute(set, inputs, &opts).await.unwrap();
        assert!(tl.batches.iter().all(|b| b.num_rows() <= batch_size));
        hashes.push(table_hash(&tl.batches));
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
}

#[tokio::test]
async fn incremental_equals_full_rebuild() {
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let set = repo.set("readmission").unwrap();
    let full = cohort(200, 9);
    let before = known_by(&full, Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap());
    let opts = MaterializeOptions {
        batch_size: 1000,
        ..Default::default()
    };
    let old_inputs = Inputs::from_curated(&before).unwrap();
    let new_inputs = Inputs::from_curated(&full).unwrap();
    let previous = compute(set, &old_inputs, &opts).await.unwrap();
    let inc = compute_incremental(set, &previous.batches, &old_inputs, &new_inputs, &opts)
        .await
        .unwrap();
    let fresh = compute(set, &new_inputs, &opts).await.unwrap();
    assert_eq!(table_hash(&inc.batches), table_hash(&fresh.batches));
    assert!(
        inc.reused > 0 && inc.recomputed > 0,
        "reused {} recomputed {}",
        inc.reused,
        inc.recomputed
    );
    assert_ne!(table_hash(&previous.batches), table_hash(&fresh.batches));
}
