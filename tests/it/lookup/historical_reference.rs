//! The historical joins against the plain reference of the feature tests
//! (`features::reference`): the timeline index's join and the direct lookup from the
//! curated rows, at every batch size, give the reference's value of every probe.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, TimeUnit};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ward::features::{
    self, FeatureSet, FeatureValue, Inputs, Knowledge, MaterializeOptions, Status, TimelineIndex,
    Value,
};

use crate::features::reference::reference_run;

async fn historical_differential(knowledge: Knowledge, seed: u64) {
    let run = reference_run(knowledge, seed).await;
    historical_matches(
        run.set(),
        &run.idx,
        (&run.inputs, &run.opts),
        &run.cases,
        seed,
    )
    .await;
}

#[tokio::test]
async fn historical_joins_match_the_reference_as_known() {
    historical_differential(Knowledge::AsKnown, 7).await;
}

#[tokio::test]
async fn historical_joins_match_the_reference_as_occurred() {
    historical_differential(Knowledge::AsOccurred, 11).await;
}

/// The historical join (`ward::lookup::historical_batches`) of entity rows made from the
/// probes (shuffled, some duplicated, with a passthrough column) at batch sizes 1, 2, 7, 49,
/// 50, 51, 100 gives, row for row in input order, the reference's values and statuses; so
/// does the lookup straight from the curated rows (`features::historical_direct`), with one
/// and with four threads.
async fn historical_matches(
    set: &FeatureSet,
    idx: &TimelineIndex,
    (inputs, opts): (&Inputs, &MaterializeOptions),
    cases: &[(String, i64, Vec<FeatureValue>)],
    seed: u64,
) {
    use arrow::array::{StringArray, TimestampMicrosecondArray};
    use rand::seq::SliceRandom;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut order: Vec<usize> = (0..cases.len()).collect();
    // Duplicate entity rows: every 10th case twice more.
    order.extend((0..cases.len()).step_by(10));
    order.shuffle(&mut rng);
    // Keep the work bounded: the reference comparison above covers every probe.
    order.truncate(12_000);
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("cohort", DataType::Utf8, false),
        arrow::datatypes::Field::new("patient_id", DataType::Utf8, false),
        arrow::datatypes::Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let cohort: Vec<String> = order.iter().map(|i| format!("c{}", i % 5)).collect();
    let all = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(cohort.iter())),
            Arc::new(StringArray::from_iter_values(
                order.iter().map(|&i| cases[i].0.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(order.iter().map(|&i| cases[i].1))
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    for size in [1usize, 2, 7, 49, 50, 51, 100] {
        // Batch sizes 1 and 2 on a prefix (every row its own unit of work is slow, not
        // different); the others on everything.
        let n = if size <= 2 {
            600.min(all.num_rows())
        } else {
            all.num_rows()
        };
        let input: Vec<RecordBatch> = (0..n)
            .step_by(size)
            .map(|o| all.slice(o, size.min(n - o)))
            .collect();
        let mut results = vec![(
            "index".to_string(),
            ward::lookup::historical_batches(idx, &input, "patient_id", "timestamp").unwrap(),
        )];
        for threads in [1, 4] {
            let opts = MaterializeOptions {
                threads: Some(threads),
                ..opts.clone()
            };
            let direct = features::historical_direct(
                set,
                inputs.clone(),
                &input,
                "patient_id",
                "timestamp",
                &opts,
            )
            .await
            .unwrap();
            results.push((format!("direct, {threads} threads"), direct));
        }
        for (how, (schema, out)) in results {
            let what = format!("{how}, size {size}");
            assert_eq!(
                out.len(),
                input.len(),
                "one output batch per entity batch ({what})"
            );
            let out = arrow::compute::concat_batches(&schema, &out).unwrap();
            check_training_rows(set, &all, &order[..n], cases, &out, &what);
        }
    }
}

/// Checks the output of a historical join of the first `order.len()` rows of `all` against
/// the reference's answers `cases`.
fn check_training_rows(
    set: &FeatureSet,
    all: &RecordBatch,
    order: &[usize],
    cases: &[(String, i64, Vec<FeatureValue>)],
    out: &RecordBatch,
    what: &str,
) {
    let n = order.len();
    assert_eq!(out.num_rows(), n, "one output row per entity row ({what})");
    for c in ["cohort", "patient_id", "timestamp"] {
        assert_eq!(
            out.column_by_name(c).unwrap().as_ref(),
            all.slice(0, n).column_by_name(c).unwrap().as_ref(),
            "{c} passed through in input order ({what})"
        );
    }
    for (fi, f) in set.features.iter().enumerate() {
        let v = out.column_by_name(&f.name).unwrap();
        let st = out
            .column_by_name(&format!("{}__status", f.name))
            .unwrap()
            .as_string::<i32>()
            .clone();
        for (row, &ci) in order.iter().enumerate() {
            let want = &cases[ci].2[fi];
            let status = match want.status {
                Status::Present => "present",
                Status::NoData => "no_data",
                Status::OutsideTtl => "outside_ttl",
            };
            let ctx = || {
                format!(
                    "{what} row {row} feature {} case {:?}",
                    f.name,
                    (&cases[ci].0, cases[ci].1)
                )
            };
            assert_eq!(st.value(row), status, "{}", ctx());
            let got = if v.is_null(row) {
                None
            } else if let Some(a) = v.as_primitive_opt::<Float64Type>() {
                Some(Value::Num(a.value(row)))
            } else {
                Some(Value::Text(v.as_string::<i32>().value(row).to_string()))
            };
            assert_eq!(got, want.value, "{}", ctx());
        }
    }
}
