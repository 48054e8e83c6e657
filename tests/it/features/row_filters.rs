//! Reading only the rows the features filter: same timeline, same filter as `keep`.

use super::through_store::store_at;
use super::*;
use crate::common::put_curated;

/// Features that read part of three tables: lab codes, encounter classes (the label's too),
/// condition families, and prefixes with LIKE's special characters (`_`, `%`, `\`), which
/// must match themselves only.
pub(super) const PART_ROWS: &str = r#"
[[derived]]
name = "stays"
time = "discharge_time"
sql = """
SELECT patient_id, encounter_id, admit_time, discharge_time,
       (discharge_time - admit_time) AS los, known_at, retracted_at, source_id
FROM encounters
WHERE class IN ('inpatient') AND discharge_time IS NOT NULL
"""

[[feature_set]]
name = "part"
ttl = "90d"

[[feature_set.features]]
name = "admissions_180d"
kind = "count"
table = "encounters"
filter = { class = "inpatient" }
window = "180d"

[[feature_set.features]]
name = "visits_7d"
kind = "count"
table = "encounters"
filter = { class = { in = ["emergency", "urgent_care"] } }
window = "7d"

[[feature_set.features]]
name = "hb_last"
kind = "last"
table = "observations"
filter = { code = "718-7", code_system = "LOINC" }
column = "value_num"

[[feature_set.features]]
name = "sodium_mean_3d"
kind = "mean"
table = "observations"
filter = { code = "2951-2" }
column = "value_num"
window = "3d"

[[feature_set.features]]
name = "heart_failure"
kind = "exists"
table = "conditions"
filter = { code = { prefix = ["I50", "I11"] } }

[[feature_set.features]]
name = "wildcards"
kind = "exists"
table = "conditions"
filter = { code = { prefix = ["I_0", "E1%", "\\"] } }

[[feature_set.features]]
name = "age"
kind = "age"

[[feature_set.features]]
name = "los_last"
kind = "last"
table = "stays"
column = "los"

[[feature_set.features]]
name = "readmit_30d"
kind = "readmitted_within"
horizon = "30d"
"#;

/// `inputs` with only the rows `set.row_filters()` keeps.
fn pruned(set: &FeatureSet, inputs: &Inputs) -> Inputs {
    let filters = set.row_filters();
    let mut out = inputs.clone();
    for (t, batches) in &mut out.tables {
        if let Some(f) = filters.get(t) {
            for b in batches.iter_mut() {
                let keep = f.keep(b, t.name()).unwrap();
                *b = arrow::compute::filter_record_batch(b, &keep).unwrap();
            }
        }
    }
    out
}

fn rows_of(inputs: &Inputs, t: Table) -> usize {
    inputs.tables[&t].iter().map(RecordBatch::num_rows).sum()
}

/// Materialization reads only the rows some feature's filter passes, and the timeline is the
/// one computed from every row, as known and as occurred. Tables read by a derived query or
/// a score are read whole.
#[tokio::test]
async fn reading_only_the_rows_features_filter_gives_the_same_timeline() {
    let repo = FeatureRepo::parse(PART_ROWS, "part.toml").unwrap();
    let set = repo.set("part").unwrap();
    let filters = set.row_filters();
    assert_eq!(
        filters.keys().copied().collect::<Vec<_>>(),
        [Table::Encounters, Table::Observations, Table::Conditions]
    );
    // The label's filter and the 180-day count's are the same condition, kept once; the
    // derived query's WHERE adds its own.
    assert_eq!(filters[&Table::Encounters].any_of.len(), 3);
    assert_eq!(filters[&Table::Observations].any_of.len(), 2);
    // Scores read their tables whole, and so does a derived query with a subquery.
    let example = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    assert!(example.set("readmission").unwrap().row_filters().is_empty());
    let joined = PART_ROWS.replace(
        "AND discharge_time IS NOT NULL",
        "AND patient_id IN (SELECT patient_id FROM encounters WHERE class = 'emergency')",
    );
    assert_ne!(joined, PART_ROWS);
    let joined = FeatureRepo::parse(&joined, "joined.toml").unwrap();
    assert_eq!(
        joined
            .set("part")
            .unwrap()
            .row_filters()
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [Table::Observations, Table::Conditions]
    );

    let tables = cohort(150, 9);
    let full = Inputs::from_curated(&tables).unwrap();
    let part = pruned(set, &full);
    for t in [Table::Encounters, Table::Observations, Table::Conditions] {
        let (a, b) = (rows_of(&full, t), rows_of(&part, t));
        assert!(0 < b && b < a, "{}: {b} of {a} rows kept", t.name());
    }
    assert_eq!(
        rows_of(&part, Table::Patients),
        rows_of(&full, Table::Patients)
    );
    for knowledge in [Knowledge::AsKnown, Knowledge::AsOccurred] {
        let opts = MaterializeOptions {
            knowledge,
            ..Default::default()
        };
        let a = compute(set, &full, &opts).await.unwrap();
        let b = compute(set, &part, &opts).await.unwrap();
        assert!(!a.batches.is_empty());
        assert_eq!(
            table_hash(&a.batches),
            table_hash(&b.batches),
            "{knowledge:?}"
        );
        // An index built from owned batches (each dropped once read) answers like one built
        // from borrowed ones.
        let borrowed = index(set, &a.batches);
        let owned = TimelineIndex::build_owned(set, a.batches).unwrap();
        assert_eq!(
            (owned.len(), owned.patients()),
            (borrowed.len(), borrowed.patients())
        );
        for p in tables.patients.iter().map(|p| p.patient_id.as_str()) {
            for f in &set.features {
                for t in [
                    Utc.with_ymd_and_hms(2021, 6, 1, 0, 0, 0).unwrap(),
                    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
                ] {
                    assert_eq!(
                        lookup(&owned, p, &f.name, t, None),
                        lookup(&borrowed, p, &f.name, t, None),
                        "{p} {} {t}",
                        f.name
                    );
                }
            }
        }
    }
}

/// Through the store the filter is evaluated by the scan (Lance), alone and with the patient
/// ranges of partitioned materialization: the stored timeline is the one computed in memory
/// from every row.
#[tokio::test]
async fn stored_materialization_reads_the_filtered_rows_to_the_same_timeline() {
    let repo = FeatureRepo::parse(PART_ROWS, "part.toml").unwrap();
    let set = repo.set("part").unwrap();
    let tables = cohort(90, 13);
    let want = compute(
        set,
        &Inputs::from_curated(&tables).unwrap(),
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    for partition_rows in [usize::MAX, 900] {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        put_curated(&store, &tables).await;
        let opts = MaterializeOptions {
            partition_rows,
            ..Default::default()
        };
        let got = features::materialize(&store, &repo, "part", &opts)
            .await
            .unwrap();
        assert_eq!(got.partitions > 1, partition_rows == 900);
        // The stored timeline is bucketed by patient: its hash is the bucketed hash of the
        // rows computed in memory.
        let (want_hash, _) = ward::hash::bucketed::hash_bucketed(
            &ward::features::timeline_schema(),
            &want.batches,
            ward::features::timeline_bucketing().unwrap(),
        )
        .unwrap();
        assert_eq!(got.hash, want_hash, "partition_rows {partition_rows}");
    }
}

/// The filter's expression (what the store's scan evaluates) keeps exactly the rows
/// `RowFilter::keep` keeps: nulls, both columns of a two-column condition, prefixes with
/// LIKE's wildcards and escape character taken literally.
#[tokio::test]
async fn row_filter_expression_keeps_what_keep_keeps() {
    use arrow::array::StringArray;
    use arrow::datatypes::{Field, Schema};
    let repo = FeatureRepo::parse(PART_ROWS, "part.toml").unwrap();
    let filters = repo.set("part").unwrap().row_filters();
    let codes: Vec<Option<&str>> = vec![
        Some("I50.9"),
        Some("I11"),
        Some("I_0"),
        Some("I_01"),
        Some("IX0"),
        Some("E1%x"),
        Some("E10"),
        Some("\\x"),
        Some("x\\"),
        Some("i50"),
        None,
        Some("718-7"),
        Some("718-7"),
        Some("2951-2"),
        Some("718-7x"),
    ];
    let systems: Vec<Option<&str>> = (0..codes.len())
        .map(|i| match i % 3 {
            0 => Some("LOINC"),
            1 => None,
            _ => Some("SNOMED"),
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("row", DataType::Int64, false),
        Field::new("code", DataType::Utf8, true),
        Field::new("code_system", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(arrow::array::Int64Array::from_iter_values(
                0..codes.len() as i64,
            )),
            Arc::new(StringArray::from(codes.clone())),
            Arc::new(StringArray::from(systems)),
        ],
    )
    .unwrap();
    for t in [Table::Observations, Table::Conditions] {
        let f = &filters[&t];
        let keep = f.keep(&batch, "test batch").unwrap();
        // keep (column kernels) against the conditions row by row.
        for i in 0..batch.num_rows() {
            let value = |c: &str| {
                let a = batch.column_by_name(c).unwrap().as_string::<i32>();
                (!a.is_null(i)).then(|| a.value(i))
            };
            let want = f.any_of.iter().any(|conds| {
                conds
                    .iter()
                    .all(|(c, k)| value(c).is_some_and(|v| k.matches(v)))
            });
            assert_eq!(keep.value(i), want, "{} row {i}", t.name());
            assert!(!keep.is_null(i));
        }
        let want: Vec<i64> = (0..batch.num_rows())
            .filter(|&i| keep.value(i))
            .map(|i| i as i64)
            .collect();
        let ctx = datafusion::prelude::SessionContext::new();
        let got: Vec<i64> = ctx
            .read_batch(batch.clone())
            .unwrap()
            .filter(f.expr())
            .unwrap()
            .collect()
            .await
            .unwrap()
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(got, want, "{}", t.name());
        assert!(!want.is_empty(), "{}", t.name());
    }
    // Conditions: I50.9, I11, I_0 and I_01 (prefix "I_0" taken literally), E1%x, \x.
    let f = &filters[&Table::Conditions];
    let keep = f.keep(&batch, "test batch").unwrap();
    let kept: Vec<&str> = (0..batch.num_rows())
        .filter(|&i| keep.value(i))
        .filter_map(|i| codes[i])
        .collect();
    assert_eq!(kept, ["I50.9", "I11", "I_0", "I_01", "E1%x", "\\x"]);
    // A batch without the filter's column is an error naming it.
    let err = f
        .keep(&batch.project(&[0]).unwrap(), "conditions batch")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conditions batch") && err.contains("code"),
        "{err}"
    );
}
