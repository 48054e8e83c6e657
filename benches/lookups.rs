//! Lookup benchmarks (issue 6), in process:
//!
//! 1. online: one patient x 20 features of the `readmission` set (labels excluded) at a
//!    random time, through `Serving::answer` (the code `ward get` and the gRPC service run):
//!    p50 / p99 / p99.9 latency on one thread, then lookups/s with one thread per core;
//! 2. historical: ENTITY_ROWS random (patient, t) rows joined against the same timeline
//!    (`lookup::historical_batches`, every feature and status): rows/s;
//! 3. the index's memory: bytes per change point (resident memory before and after the
//!    index is built, in this process).
//!
//! `cargo bench --bench lookups -- [PATIENTS [ENTITY_ROWS [SECONDS]]]` (defaults 20,000,
//! 1,000,000, 3). The cohort is `ward::synth`'s, made in memory and materialized with
//! `features::compute`.
//!
//! The wide as-of join against DuckDB, Polars, pandas and Feast is measured by the peers'
//! script with `ward asof` as EXTRA_TOOL (docs/lookups.md, BENCHMARKS.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, TimeZone, Utc};
use rand::{Rng, SeedableRng};

use ward::features::{self, FeatureRepo, Inputs, MaterializeOptions, TimelineIndex};
use ward::hash::ContentHash;
use ward::lookup::{self, Serving};
use ward::synth::{generate_cohort, SynthOptions};

/// The allocator the `ward` binary uses (src/main.rs), so that the library is timed as
/// `ward` runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const READMISSION: &str = include_str!("../examples/features/readmission.toml");

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .filter(|a| !a.starts_with("--"))
        .nth(i)
        .and_then(|a| a.replace(',', "").parse().ok())
        .unwrap_or(default)
}

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|k| k / 1024.0)
        .unwrap_or(f64::NAN)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let patients = arg(1, 20_000);
    let entity_rows = arg(2, 1_000_000) as usize;
    let seconds = arg(3, 3);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("cohort of {patients} patients ...");
    let opts = SynthOptions {
        patients,
        seed: 7,
        ..SynthOptions::default()
    };
    let tables = generate_cohort(&opts);
    let ids: Vec<String> = tables
        .patients
        .iter()
        .map(|p| p.patient_id.clone())
        .collect();
    let inputs = Inputs::from_curated(&tables).expect("inputs");
    drop(tables);
    let repo = FeatureRepo::parse(READMISSION, "readmission.toml").expect("repo");
    let set = repo.set("readmission").expect("set").clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t0 = Instant::now();
    let timeline = rt
        .block_on(features::compute(
            &set,
            &inputs,
            &MaterializeOptions::default(),
        ))
        .expect("compute");
    eprintln!("materialized in {:.1} s", t0.elapsed().as_secs_f64());
    drop(inputs);
    let before = rss_mib();
    let index = TimelineIndex::build(&set, &timeline.batches).expect("index");
    let after = rss_mib();
    drop(timeline);
    let cps = index.len();
    let serving = Serving::new(set.clone(), ContentHash([0; 32]), index);
    let features: Vec<String> = set
        .features
        .iter()
        .filter(|f| !f.kind.is_label())
        .take(20)
        .map(|f| f.name.clone())
        .collect();
    assert_eq!(
        features.len(),
        20,
        "the readmission set has 20 non-label features"
    );
    let lo = Utc
        .with_ymd_and_hms(2018, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp_micros();
    let hi = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp_micros();
    let at = |us: i64| DateTime::from_timestamp_micros(us).unwrap();

    // 1a. Latency, one thread.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut lat = Vec::new();
    let mut present = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        let p = std::slice::from_ref(&ids[rng.random_range(0..ids.len())]);
        let t = at(rng.random_range(lo..hi));
        let s = Instant::now();
        let ans = serving.answer(p, &features, t).expect("answer");
        lat.push(s.elapsed());
        present += ans.patients[0]
            .values
            .iter()
            .filter(|(_, v)| v.value.is_some())
            .count();
    }
    lat.sort_unstable();
    let n1 = lat.len();
    // 1b. Throughput, one thread per core.
    let total: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..cores)
            .map(|c| {
                let (serving, ids, features) = (&serving, &ids, &features);
                s.spawn(move || {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + c as u64);
                    let start = Instant::now();
                    let mut n = 0usize;
                    while start.elapsed() < Duration::from_secs(seconds) {
                        for _ in 0..64 {
                            let p = std::slice::from_ref(&ids[rng.random_range(0..ids.len())]);
                            let t = at(rng.random_range(lo..hi));
                            serving.answer(p, features, t).expect("answer");
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).sum()
    });

    // 2. Historical.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let pick: Vec<usize> = (0..entity_rows)
        .map(|_| rng.random_range(0..ids.len()))
        .collect();
    let entities = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                pick.iter().map(|&i| ids[i].as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    (0..entity_rows).map(|_| rng.random_range(lo..hi)),
                )
                .with_timezone("UTC"),
            ),
        ],
    )
    .expect("entities");
    let mut hist = Vec::new();
    for _ in 0..3 {
        let s = Instant::now();
        let (_, out) = lookup::historical_batches(
            &serving.index,
            std::slice::from_ref(&entities),
            "patient_id",
            "timestamp",
        )
        .expect("historical");
        hist.push(s.elapsed().as_secs_f64());
        assert_eq!(
            out.iter().map(RecordBatch::num_rows).sum::<usize>(),
            entity_rows
        );
    }
    hist.sort_by(f64::total_cmp);

    println!("## Lookups (in process), {patients} patients, {cps} change points, {cores} cores");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| online 1 patient x 20 features, 1 thread: lookups | {n1} |");
    println!("| p50 | {:.1} us |", pct(&lat, 0.50));
    println!("| p99 | {:.1} us |", pct(&lat, 0.99));
    println!("| p99.9 | {:.1} us |", pct(&lat, 0.999));
    println!(
        "| values present | {:.0} % |",
        100.0 * present as f64 / (n1 * 20) as f64
    );
    println!(
        "| online lookups/s, {cores} threads | {:.0} |",
        total as f64 / seconds as f64
    );
    println!(
        "| historical {entity_rows} rows x {} features, median of 3 | {:.3} s ({:.2} M rows/s) |",
        set.features.len(),
        hist[1],
        entity_rows as f64 / hist[1] / 1e6
    );
    println!(
        "| index memory | {:.1} MiB for {cps} change points = {:.0} MB per million |",
        after - before,
        (after - before) * 1.048_576 * 1e6 / cps as f64
    );
}
