//! Feature benchmarks (issue 5): materializing the `readmission` set, and 10 features at 1M
//! (patient, t) rows side by side with DuckDB SQL over the same curated Parquet files.
//!
//! `cargo bench --bench features -- [MAT_PATIENTS[,N...] [SIDE_PATIENTS [ENTITY_ROWS [REPEATS]]]]`
//! (defaults 1,000,000 136,000 1,000,000 3). `WARD_BENCH_ONLY=materialize` or `side` runs one
//! part; `WARD_BENCH_PYTHON` names a Python with `duckdb` (default `python3`);
//! `WARD_BENCH_MAT_REPEATS` (default 1) repeats part 1; `WARD_BENCH_MEM_LIMIT_MB` (default
//! 16,000) bounds the address space of Ward's child processes.
//!
//! 1. `materialize`: `ward synth` writes MAT_PATIENTS patients as curated Parquet; a child
//!    process stores them as curated versions, another runs `features::materialize` of the
//!    whole `readmission` set (examples/features/readmission.toml) from the store, as `ward
//!    materialize` does (reading the columns the set needs, in ranges of patients above
//!    `partition_rows`; `WARD_BENCH_PARTITION_ROWS` sets it): wall time and peak RSS.
//! 2. `side`: SIDE_PATIENTS patients (~87 curated rows each) and ENTITY_ROWS random
//!    (patient, t) rows. Ward, two child processes: both read the curated files with
//!    `features::read_parquet_inputs` (the columns and rows the set reads; `source_id`,
//!    here of every table, only if a tie needs it), beside the entity rows; one computes the
//!    10-feature timeline, indexes it and joins the entity rows as of their times
//!    (`ward::lookup::historical_batches`), the other computes each patient's values in place
//!    (`features::historical_direct`, what `ward historical --features` runs). Each writes
//!    `row_id` and the values as Parquet (`ArrowWriter`'s default properties, each row
//!    group's columns encoded in parallel). DuckDB (child process,
//!    `benches/features_duckdb.py`): one SQL statement over the same Parquet files, result
//!    written as Parquet. Both results are then compared value by value.
//!
//! Each measured phase runs in its own child process so that its peak memory (`VmHWM`) is
//! its own. Generated data lives in a temporary directory under `/tmp`, removed at the end.

#[path = "common.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};
use chrono::{TimeZone, Utc};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowRowGroupWriterFactory};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use ward::curated::Table;
use ward::features::{self, FeatureRepo, FeatureSet, Inputs, MaterializeOptions, TimelineIndex};
use ward::synth::{self, SynthFormat, SynthOptions};

/// The allocator the `ward` binary uses (src/main.rs), so that the library is timed as
/// `ward materialize` and `ward historical` run it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The shipped readmission feature repository (part 1).
const READMISSION: &str = include_str!("../examples/features/readmission.toml");

/// The 10 features of the side-by-side run, defined exactly as in the readmission set.
const TEN: &str = r#"
[[derived]]
name = "inpatient_stays"
time = "discharge_time"
sql = """
SELECT patient_id, encounter_id, admit_time, discharge_time,
       (discharge_time - admit_time) AS los,
       known_at, retracted_at, source_id
FROM encounters
WHERE class = 'inpatient' AND discharge_time IS NOT NULL
"""

[[feature_set]]
name = "ten"
entity = "patient"
online = true
ttl = "365d"

[[feature_set.features]]
name = "age"
kind = "age"

[[feature_set.features]]
name = "days_since_discharge"
kind = "days_since"
table = "encounters"
filter = { class = "inpatient" }
time = "discharge_time"
ttl = "none"

[[feature_set.features]]
name = "admissions_180d"
kind = "count"
table = "encounters"
filter = { class = "inpatient" }
window = "180d"

[[feature_set.features]]
name = "admissions_365d"
kind = "count"
table = "encounters"
filter = { class = "inpatient" }
window = "365d"

[[feature_set.features]]
name = "ed_visits_180d"
kind = "count"
table = "encounters"
filter = { class = "emergency" }
window = "180d"

[[feature_set.features]]
name = "ed_visits_365d"
kind = "count"
table = "encounters"
filter = { class = "emergency" }
window = "365d"

[[feature_set.features]]
name = "los_last_stay_days"
kind = "last"
table = "inpatient_stays"
column = "los"

[[feature_set.features]]
name = "hemoglobin_last"
kind = "last"
table = "observations"
filter = { code = "718-7", code_system = "LOINC" }
column = "value_num"

[[feature_set.features]]
name = "sodium_last"
kind = "last"
table = "observations"
filter = { code = "2951-2", code_system = "LOINC" }
column = "value_num"

[[feature_set.features]]
name = "creatinine_last"
kind = "last"
table = "observations"
filter = { code = "2160-0", code_system = "LOINC" }
column = "value_num"
"#;

/// Output columns of both sides, in this order after `row_id`.
const FEATURES: [&str; 10] = [
    "age",
    "days_since_discharge",
    "admissions_180d",
    "admissions_365d",
    "ed_visits_180d",
    "ed_visits_365d",
    "los_last_stay_days",
    "hemoglobin_last",
    "sodium_last",
    "creatinine_last",
];

/// The batches of a Parquet file (`patient_id` as a dictionary, as Ward reads curated
/// tables), row groups decoded in parallel and kept in file order.
fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let open = || File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file_schema = ParquetRecordBatchReaderBuilder::try_new(open())
        .expect("parquet reader")
        .schema()
        .clone();
    let read_schema = Arc::new(Schema::new(
        file_schema
            .fields()
            .iter()
            .map(|f| match (f.name().as_str(), f.data_type()) {
                ("patient_id", DataType::Utf8) => Field::new(
                    f.name(),
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    f.is_nullable(),
                ),
                _ => (**f).clone(),
            })
            .collect::<Vec<_>>(),
    ));
    let builder = || {
        let options = ArrowReaderOptions::new().with_schema(read_schema.clone());
        ParquetRecordBatchReaderBuilder::try_new_with_options(open(), options)
            .expect("parquet reader")
            .with_batch_size(65_536)
    };
    let groups = builder().metadata().num_row_groups();
    let per_group: Vec<Vec<RecordBatch>> = (0..groups)
        .into_par_iter()
        .map(|g| {
            builder()
                .with_row_groups(vec![g])
                .build()
                .expect("parquet reader")
                .collect::<Result<Vec<_>, _>>()
                .expect("parquet batches")
        })
        .collect();
    per_group.into_iter().flatten().collect()
}

/// Writes `batches` (a flat schema) as `ArrowWriter` would with its default properties, in
/// row groups of up to `ArrowWriter`'s default 1,048,576 rows, but each row group's columns
/// encoded in parallel (the parquet crate's `ArrowColumnWriter` way).
fn write_parquet_batches(path: &Path, batches: &[RecordBatch]) {
    const GROUP_ROWS: usize = 1 << 20;
    let schema = batches.first().expect("a batch").schema();
    let props = Arc::new(WriterProperties::default());
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(&schema)
        .expect("parquet schema");
    assert_eq!(
        parquet_schema.num_columns(),
        schema.fields().len(),
        "a flat schema"
    );
    let file = File::create(path).expect("create");
    let mut writer =
        SerializedFileWriter::new(file, parquet_schema.root_schema_ptr(), props).expect("writer");
    let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
    let mut groups: Vec<Vec<&RecordBatch>> = vec![Vec::new()];
    let mut rows = 0;
    for b in batches {
        if rows > 0 && rows + b.num_rows() > GROUP_ROWS {
            groups.push(Vec::new());
            rows = 0;
        }
        groups.last_mut().expect("a group").push(b);
        rows += b.num_rows();
    }
    for (g, group) in groups.iter().enumerate() {
        let writers = factory.create_column_writers(g).expect("column writers");
        let chunks: Vec<_> = writers
            .into_par_iter()
            .enumerate()
            .map(|(c, mut w)| {
                for b in group {
                    for leaf in compute_leaves(schema.field(c), b.column(c)).expect("leaves") {
                        w.write(&leaf).expect("encode");
                    }
                }
                w.close().expect("column chunk")
            })
            .collect();
        let mut rg = writer.next_row_group().expect("row group");
        for chunk in chunks {
            chunk.append_to_row_group(&mut rg).expect("append");
        }
        rg.close().expect("close row group");
    }
    writer.close().expect("close");
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let mut w = ArrowWriter::try_new(File::create(path).expect("create"), batch.schema(), None)
        .expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
}

fn bench_store(dir: &Path) -> ward::store::Store {
    let clock: ward::clock::SharedClock = Arc::new(ward::clock::ManualClock::new(
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
    ));
    ward::store::Store::open(dir.join("store"), clock).expect("store")
}

/// Part 1, first child: every curated Parquet file of `dir` stored as a curated version.
fn phase_put(dir: &Path) -> String {
    let store = bench_store(dir);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t0 = Instant::now();
    let mut rows = 0;
    for t in Table::ALL {
        let path = dir.join(format!("{}.parquet", t.name()));
        if !path.exists() {
            continue;
        }
        let put = rt
            .block_on(store.put_parquet(
                &path,
                ward::store::PutOptions::new(t.name(), ward::store::Kind::Curated),
            ))
            .expect("put");
        rows += put.manifest.rows;
    }
    format!(
        "put={} rows={rows} peak={}",
        t0.elapsed().as_secs_f64(),
        common::peak_rss().unwrap_or(0)
    )
}

/// Part 1, second child: `features::materialize` of the `readmission` set from the store, as
/// `ward materialize` runs it (`WARD_BENCH_PARTITION_ROWS` overrides the partition size).
fn phase_materialize(dir: &Path) -> String {
    let repo = FeatureRepo::parse(READMISSION, "examples/features/readmission.toml")
        .expect("readmission repo");
    let store = bench_store(dir);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut opts = MaterializeOptions::default();
    if let Some(n) = std::env::var("WARD_BENCH_PARTITION_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        opts.partition_rows = n;
    }
    let t0 = Instant::now();
    let out = rt
        .block_on(features::materialize(&store, &repo, "readmission", &opts))
        .expect("materialize");
    format!(
        "materialize={} change_points={} patients={} partitions={} peak={}",
        t0.elapsed().as_secs_f64(),
        out.rows,
        out.recomputed,
        out.partitions,
        common::peak_rss().unwrap_or(0)
    )
}

/// Part 2's load, timed from now: the curated inputs of `set` and the entity rows, with the
/// seconds it took and the peak memory after it.
fn side_inputs(
    dir: &Path,
    entities: &Path,
    set: &FeatureSet,
) -> (Inputs, Vec<RecordBatch>, f64, u64) {
    let t0 = Instant::now();
    // The curated tables and the entity rows are read side by side.
    let (inputs, ents) = rayon::join(
        || features::read_parquet_inputs(dir, set).expect("curated Parquet"),
        || read_parquet(entities),
    );
    (
        inputs,
        ents,
        t0.elapsed().as_secs_f64(),
        common::peak_rss().unwrap_or(0),
    )
}

/// Part 2, Ward side, in the child: load, compute the 10 features, index, look up every
/// (row, feature), write `out`.
fn phase_ward(dir: &Path, entities: &Path, out: &Path) -> String {
    let repo = FeatureRepo::parse(TEN, "benches/features.rs").expect("10-feature repo");
    let set = repo.set("ten").expect("set");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t0 = Instant::now();
    let (inputs, ents, load, peak_load) = side_inputs(dir, entities, set);
    let t1 = Instant::now();
    let timeline = rt
        .block_on(features::compute(
            set,
            &inputs,
            &MaterializeOptions::default(),
        ))
        .expect("compute");
    drop(inputs);
    let compute = t1.elapsed().as_secs_f64();
    let peak_compute = common::peak_rss().unwrap_or(0);
    let t2 = Instant::now();
    let index = TimelineIndex::build_owned(set, timeline.batches).expect("index");
    let build = t2.elapsed().as_secs_f64();
    let peak_index = common::peak_rss().unwrap_or(0);

    let t3 = Instant::now();
    let (_, joined) =
        ward::lookup::historical_batches(&index, &ents, "patient_id", "ts").expect("as-of join");
    let lookup = t3.elapsed().as_secs_f64();
    let t4 = Instant::now();
    write_projected(out, joined);
    let write = t4.elapsed().as_secs_f64();
    format!(
        "load={load} compute={compute} index={build} lookup={lookup} write={write} total={} change_points={} peak_load={peak_load} peak_compute={peak_compute} peak_index={peak_index} peak={}",
        t0.elapsed().as_secs_f64(),
        index.len(),
        common::peak_rss().unwrap_or(0)
    )
}

/// Part 2, Ward side straight from the curated rows, in the child: load, look up every
/// (row, feature) with `features::historical_direct` (each patient's timeline computed and
/// consulted in place, never held whole), write `out`.
fn phase_direct(dir: &Path, entities: &Path, out: &Path) -> String {
    let repo = FeatureRepo::parse(TEN, "benches/features.rs").expect("10-feature repo");
    let set = repo.set("ten").expect("set");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t0 = Instant::now();
    let (inputs, ents, load, peak_load) = side_inputs(dir, entities, set);
    let t1 = Instant::now();
    let (_, joined) = rt
        .block_on(features::historical_direct(
            set,
            inputs,
            &ents,
            "patient_id",
            "ts",
            &MaterializeOptions::default(),
        ))
        .expect("direct lookup");
    let lookup = t1.elapsed().as_secs_f64();
    let peak_lookup = common::peak_rss().unwrap_or(0);
    let t2 = Instant::now();
    write_projected(out, joined);
    let write = t2.elapsed().as_secs_f64();
    format!(
        "load={load} lookup={lookup} write={write} total={} peak_load={peak_load} peak_lookup={peak_lookup} peak={}",
        t0.elapsed().as_secs_f64(),
        common::peak_rss().unwrap_or(0)
    )
}

/// Writes `row_id` and the feature values of a training set to `out` (what the comparison
/// reads; the statuses and the other entity columns are dropped).
fn write_projected(out: &Path, joined: Vec<RecordBatch>) {
    let mut keep = vec!["row_id"];
    keep.extend(FEATURES);
    let projected: Vec<RecordBatch> = joined
        .iter()
        .map(|b| {
            let idx: Vec<usize> = keep
                .iter()
                .map(|c| b.schema().index_of(c).expect("result column"))
                .collect();
            b.project(&idx).expect("projection")
        })
        .collect();
    drop(joined);
    write_parquet_batches(out, &projected);
}

/// Runs this binary as a child in `phase` under an address-space limit (`ulimit -v`,
/// `WARD_BENCH_MEM_LIMIT_MB`, default 16,000) so that running out of memory fails the child
/// alone; returns its `key=value` report and wall time, or how it failed.
fn try_child(phase: &str, args: &[&Path]) -> Result<(BTreeMap<String, f64>, f64), String> {
    let limit_mb: u64 = std::env::var("WARD_BENCH_MEM_LIMIT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16_000);
    let t = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {} && exec \"$0\" \"$@\"",
            limit_mb * 1024
        ))
        .arg(std::env::current_exe().expect("own path"))
        .args(args)
        .env("WARD_BENCH_PHASE", phase)
        .output()
        .expect("child runs");
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(format!(
            "{phase} failed after {wall:.1} s ({}, limit {limit_mb} MB): {}",
            out.status,
            tail.join(" | ")
        ));
    }
    Ok((parse_report(&String::from_utf8_lossy(&out.stdout)), wall))
}

fn run_child(phase: &str, args: &[&Path]) -> (BTreeMap<String, f64>, f64) {
    try_child(phase, args).unwrap_or_else(|e| panic!("{e}"))
}

/// `ward historical --features` as a process (the binary of this build, or `WARD_BIN`) over
/// the curated versions `phase_put` stored in `dir/store`: the training set written to
/// `out`. Its wall time is `total`; its peak RSS (`peak`, bytes) from `/usr/bin/time`.
fn run_process(
    dir: &Path,
    toml: &Path,
    entities: &Path,
    out: &Path,
) -> (BTreeMap<String, f64>, f64) {
    let bin = std::env::var_os("WARD_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ward").into());
    let t = Instant::now();
    let o = Command::new("/usr/bin/time")
        .args(["-f", "peak_kb=%M"])
        .arg(bin)
        .arg("--store")
        .arg(dir.join("store"))
        .args([
            "historical",
            "--set",
            "ten",
            "--time-column",
            "ts",
            "--features",
        ])
        .arg(toml)
        .arg("--entities")
        .arg(entities)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run ward");
    let wall = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "ward historical --features: {err}");
    let kb: f64 = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("peak_kb="))
        .and_then(|v| v.trim().parse().ok())
        .expect("peak from /usr/bin/time");
    let mut r = BTreeMap::new();
    r.insert("total".to_string(), wall);
    r.insert("peak".to_string(), kb * 1024.0);
    (r, wall)
}

/// Runs the DuckDB script as a child; returns its report and wall time.
fn run_duckdb(dir: &Path, entities: &Path, out: &Path) -> (BTreeMap<String, f64>, f64) {
    let python = std::env::var("WARD_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from("benches/features_duckdb.py");
    let t = Instant::now();
    let res = Command::new(&python)
        .arg(&script)
        .arg(dir)
        .arg(entities)
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    let wall = t.elapsed().as_secs_f64();
    assert!(
        res.status.success(),
        "duckdb: {} {}",
        res.status,
        String::from_utf8_lossy(&res.stderr)
    );
    (parse_report(&String::from_utf8_lossy(&res.stdout)), wall)
}

/// `key=value` pairs of the last line of a child's standard output.
fn parse_report(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn synth_cohort(patients: u64, dir: &Path) -> BTreeMap<Table, u64> {
    let t = Instant::now();
    let summary = synth::write(
        &SynthOptions {
            patients,
            ..SynthOptions::default()
        },
        SynthFormat::Parquet,
        dir,
        None,
    )
    .expect("synth");
    println!(
        "synth: {patients} patients, {} rows, {} bytes of Parquet, {:.1} s",
        summary.rows.values().sum::<u64>(),
        summary.bytes,
        t.elapsed().as_secs_f64()
    );
    for (t, n) in &summary.rows {
        println!("  {:<13} {n}", t.name());
    }
    summary.rows
}

/// ENTITY_ROWS rows `(row_id, patient_id, ts)`: uniform patients, uniform times (whole
/// seconds) over the simulated period and half a year after it.
fn write_entities(path: &Path, patients: u64, rows: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let opts = SynthOptions::default();
    let lo = opts.start.timestamp();
    let hi = (opts.end + chrono::Duration::days(182)).timestamp();
    let mut ids = Vec::with_capacity(rows);
    let mut ts = Vec::with_capacity(rows);
    for _ in 0..rows {
        ids.push(format!("P{:07}", rng.random_range(0..patients)));
        ts.push(rng.random_range(lo..hi) * 1_000_000);
    }
    let tsf = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("row_id", DataType::Int64, false),
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("ts", tsf, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            Arc::new(StringArray::from(ids)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        ],
    )
    .expect("entities");
    write_parquet(path, &batch);
}

/// Per feature: (rows compared, exactly equal, equal within 1e-9 relative, null on one side
/// only), and a few differing rows for the report.
fn compare(ward: &Path, duck: &Path) -> Vec<String> {
    let load = |p: &Path| -> (Vec<i64>, Vec<Vec<Option<f64>>>) {
        let batches = read_parquet(p);
        let mut ids = Vec::new();
        let mut cols = vec![Vec::new(); FEATURES.len()];
        for b in &batches {
            let r = arrow::compute::cast(
                b.column_by_name("row_id").expect("row_id"),
                &DataType::Int64,
            )
            .expect("cast");
            ids.extend(r.as_primitive::<Int64Type>().values().iter().copied());
            for (k, f) in FEATURES.iter().enumerate() {
                let c = arrow::compute::cast(
                    b.column_by_name(f).unwrap_or_else(|| panic!("column {f}")),
                    &DataType::Float64,
                )
                .expect("cast");
                let a = c.as_primitive::<Float64Type>();
                cols[k].extend((0..a.len()).map(|i| (!a.is_null(i)).then(|| a.value(i))));
            }
        }
        (ids, cols)
    };
    let (wi, wc) = load(ward);
    let (di, dc) = load(duck);
    let mut lines = Vec::new();
    if wi != di {
        lines.push(format!(
            "ROW IDS DIFFER: ward {} rows, duckdb {} rows",
            wi.len(),
            di.len()
        ));
        return lines;
    }
    let mut total_bad = 0usize;
    for (k, f) in FEATURES.iter().enumerate() {
        let (mut exact, mut close, mut nulls, mut present, mut null_mismatch) = (0, 0, 0, 0, 0);
        let mut examples = Vec::new();
        for i in 0..wi.len() {
            match (wc[k][i], dc[k][i]) {
                (None, None) => {
                    exact += 1;
                    nulls += 1;
                }
                (Some(a), Some(b)) => {
                    present += 1;
                    if a.to_bits() == b.to_bits() {
                        exact += 1;
                    } else if (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0) {
                        close += 1;
                    } else if examples.len() < 3 {
                        examples.push(format!("row {} ward {a} duckdb {b}", wi[i]));
                    }
                }
                (a, b) => {
                    null_mismatch += 1;
                    if examples.len() < 3 {
                        examples.push(format!("row {} ward {a:?} duckdb {b:?}", wi[i]));
                    }
                }
            }
        }
        let bad = wi.len() - exact - close;
        total_bad += bad;
        lines.push(format!(
            "{f:<22} rows {} present {present} null {nulls} exact {exact} within-1e-9 {close} differ {bad} (null on one side {null_mismatch}) {}",
            wi.len(),
            examples.join("; ")
        ));
    }
    lines.push(format!("values differing in total: {total_bad}"));
    lines
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

fn part_materialize(patients: u64, repeats: usize, root: &Path) {
    let dir = root.join("mat");
    println!("== materialize readmission: {patients} patients");
    synth_cohort(patients, &dir);
    match try_child("put", &[&dir]) {
        Ok((r, wall)) => println!(
            "  put curated Parquet into the store: {:.2} s ({} rows), child wall {wall:.2} s, peak RSS {:.0} MB",
            r["put"], r["rows"], mb(r["peak"])
        ),
        Err(e) => {
            println!("  put: {e}");
            return;
        }
    }
    let mut times = Vec::new();
    let mut peaks = Vec::new();
    for _ in 0..repeats {
        match try_child("materialize", &[&dir]) {
            Ok((r, wall)) => {
                println!(
                    "  run: materialize {:.2} s (read, compute, store), child wall {wall:.2} s, change points {}, patients {}, ranges of patients {}, peak RSS {:.0} MB",
                    r["materialize"], r["change_points"], r["patients"], r["partitions"], mb(r["peak"])
                );
                times.push(r["materialize"]);
                peaks.push(r["peak"]);
            }
            Err(e) => {
                println!("  run: {e}");
                break;
            }
        }
    }
    if !times.is_empty() {
        println!(
            "materialize {patients} patients: median {:.2} s, peak RSS median {:.0} MB ({} runs)",
            common::median(times.clone()),
            mb(common::median(peaks)),
            times.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn part_side(patients: u64, entity_rows: usize, repeats: usize, root: &Path) {
    let dir = root.join("side");
    println!("== side by side: {patients} patients, {entity_rows} entity rows");
    let rows = synth_cohort(patients, &dir);
    let events = rows.get(&Table::Observations).copied().unwrap_or(0)
        + rows.get(&Table::Encounters).copied().unwrap_or(0);
    println!("  events (observations + encounters): {events}");
    let entities = root.join("entities.parquet");
    write_entities(&entities, patients, entity_rows);
    let ward_out = root.join("ward_out.parquet");
    let direct_out = root.join("direct_out.parquet");
    let duck_out = root.join("duckdb_out.parquet");
    let process_out = root.join("process_out.parquet");
    // Issue 37's product path: the curated tables stored as curated versions (not timed),
    // then `ward historical --features` as a process reading them from the store.
    let (put, _) = run_child("put", &[&dir]);
    println!(
        "  stored as curated versions for the process: {:.2} s",
        put["put"]
    );
    let ten_toml = root.join("ten.toml");
    std::fs::write(&ten_toml, TEN).expect("ten.toml");
    let mut process: Vec<(BTreeMap<String, f64>, f64)> = Vec::new();
    let mut ward: Vec<(BTreeMap<String, f64>, f64)> = Vec::new();
    let mut direct: Vec<(BTreeMap<String, f64>, f64)> = Vec::new();
    let mut duck: Vec<(BTreeMap<String, f64>, f64)> = Vec::new();
    for i in 0..repeats {
        // Rotate which goes first so none always gets the warmer page cache.
        for o in (0..4).map(|k| (k + i) % 4) {
            match o {
                0 => {
                    let (r, wall) = run_child("ward", &[&dir, &entities, &ward_out]);
                    println!(
                        "  ward, timeline: total {:.2} s (load {:.2}, compute {:.2}, index {:.2}, lookup {:.2}, write {:.2}), child wall {wall:.2} s, change points {}, peak RSS {:.0} MB (after load {:.0}, compute {:.0}, index {:.0})",
                        r["total"], r["load"], r["compute"], r["index"], r["lookup"], r["write"], r["change_points"], mb(r["peak"]),
                        mb(r["peak_load"]), mb(r["peak_compute"]), mb(r["peak_index"])
                    );
                    ward.push((r, wall));
                }
                1 => {
                    let (r, wall) = run_child("direct", &[&dir, &entities, &direct_out]);
                    println!(
                        "  ward, direct  : total {:.2} s (load {:.2}, lookup {:.2}, write {:.2}), child wall {wall:.2} s, peak RSS {:.0} MB (after load {:.0}, lookup {:.0})",
                        r["total"], r["load"], r["lookup"], r["write"], mb(r["peak"]),
                        mb(r["peak_load"]), mb(r["peak_lookup"])
                    );
                    direct.push((r, wall));
                }
                2 => {
                    let (r, wall) = run_process(&dir, &ten_toml, &entities, &process_out);
                    println!(
                        "  ward historical --features (process): total {:.2} s, peak RSS {:.0} MB",
                        r["total"],
                        mb(r["peak"])
                    );
                    process.push((r, wall));
                }
                _ => {
                    let (r, wall) = run_duckdb(&dir, &entities, &duck_out);
                    println!(
                        "  duckdb        : total {:.2} s, child wall {wall:.2} s, peak RSS {:.0} MB",
                        r["total"],
                        mb(r["peak"])
                    );
                    duck.push((r, wall));
                }
            }
        }
    }
    let med = |v: &[(BTreeMap<String, f64>, f64)], k: &str| {
        common::median(v.iter().map(|(r, _)| r[k]).collect())
    };
    let med_wall =
        |v: &[(BTreeMap<String, f64>, f64)]| common::median(v.iter().map(|(_, w)| *w).collect());
    let (dt, dp) = (med(&duck, "total"), med(&duck, "peak"));
    println!(
        "duckdb         median total {dt:.2} s (child wall {:.2} s), peak RSS median {:.0} MB",
        med_wall(&duck),
        mb(dp)
    );
    for (name, runs) in [
        ("ward, timeline", &ward),
        ("ward, direct  ", &direct),
        ("ward historical --features, as a process", &process),
    ] {
        let (wt, wp) = (med(runs, "total"), med(runs, "peak"));
        println!(
            "{name} median total {wt:.2} s (child wall {:.2} s), peak RSS median {:.0} MB: duckdb/ward time {:.2}x, ward/duckdb peak memory {:.2}x ({repeats} runs each)",
            med_wall(runs),
            mb(wp),
            dt / wt,
            wp / dp
        );
    }
    for (name, out) in [
        ("timeline", &ward_out),
        ("direct", &direct_out),
        ("historical --features process", &process_out),
    ] {
        println!("== comparison of the last runs' outputs: ward ({name}) and duckdb");
        for l in compare(out, &duck_out) {
            println!("  {l}");
        }
    }
    if !keep_data() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `WARD_BENCH_KEEP=1` keeps the generated data (to profile a phase by hand:
/// `WARD_BENCH_PHASE=ward <this binary> DIR/side DIR/entities.parquet OUT.parquet`).
fn keep_data() -> bool {
    std::env::var("WARD_BENCH_KEEP").as_deref() == Ok("1")
}

fn main() {
    if let Ok(phase) = std::env::var("WARD_BENCH_PHASE") {
        // As the `ward` binary does for a batch command (src/main.rs).
        let _ = ward::alloc::batch_mode();
        let a: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
        let report = match phase.as_str() {
            "put" => phase_put(&a[0]),
            "materialize" => phase_materialize(&a[0]),
            "ward" => phase_ward(&a[0], &a[1], &a[2]),
            "direct" => phase_direct(&a[0], &a[1], &a[2]),
            other => panic!("unknown phase {other}"),
        };
        println!("{report}");
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let mat_patients: Vec<u64> = args
        .first()
        .map(|a| a.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000_000]);
    let side_patients = arg(1, 136_000);
    let entity_rows = arg(2, 1_000_000) as usize;
    let repeats = arg(3, 3) as usize;
    let only = std::env::var("WARD_BENCH_ONLY").unwrap_or_default();
    let root: PathBuf = tempfile::Builder::new()
        .prefix("ward-bench-features-")
        .tempdir_in("/tmp")
        .expect("tempdir")
        .keep();
    println!(
        "ward features bench: {} threads, data in {}, started {}",
        rayon::current_num_threads(),
        root.display(),
        Utc.timestamp_opt(Utc::now().timestamp(), 0)
            .single()
            .unwrap_or_default()
    );
    if only.is_empty() || only == "side" {
        part_side(side_patients, entity_rows, repeats, &root);
    }
    if only.is_empty() || only == "materialize" {
        let mat_repeats = std::env::var("WARD_BENCH_MAT_REPEATS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        for n in mat_patients {
            part_materialize(n, mat_repeats, &root);
        }
    }
    if keep_data() {
        println!("data kept in {} (WARD_BENCH_KEEP=1)", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
}
