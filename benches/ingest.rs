//! Ingest throughput: FHIR Bulk NDJSON and HL7 v2 on a large input built from the shared
//! samples with fresh ids, parser alone (all cores and one core) and the whole pipeline, beside
//! the plain Python script a user would write for the same FHIR-to-table work
//! (`benches/ingest_baseline.py`), run on the same files in the same run.
//!
//! ```text
//! cargo bench --bench ingest -- [FHIR_COPIES] [HL7_MESSAGES] [RUNS]
//! ```
//! Defaults: 60 copies of the Synthea bundles' curated resources (~232,000 resources),
//! 100,000 HL7 v2 messages, 3 runs of each measurement (medians reported). Writes Markdown
//! to stdout and to `benches/results/ingest.md`. `WARD_BENCH_ONLY=fhir` (or `hl7`) times that
//! parser alone (`WARD_BENCH_THREADS=N` for a pool of N), for profiling. Needs `../shared/data` (or
//! `WARD_SHARED_DATA`) and `python3` with `pyarrow`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use ward::clock::{ManualClock, SharedClock};
use ward::ingest::pipeline::{self, Format, IngestOptions};
use ward::ingest::{fhir, hl7v2, Context, Input, ParsedBatches};
use ward::store::Store;

/// The allocator the `ward` binary uses (src/main.rs), so that the library is timed as
/// `ward ingest` runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The resource types Ward curates, one NDJSON file each.
const TYPES: [&str; 6] = [
    "Patient",
    "Encounter",
    "Observation",
    "Condition",
    "Procedure",
    "MedicationRequest",
];

fn shared_data() -> PathBuf {
    std::env::var_os("WARD_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .expect("fixed time")
        .with_timezone(&chrono::Utc)
}

// ---------------------------------------------------------------------------------------
// Building the input.
// ---------------------------------------------------------------------------------------

/// Replaces `urn:uuid:X` references by `Type/X` (Bulk NDJSON has no fullUrls).
fn rewrite_refs(v: &mut Value, types: &std::collections::HashMap<String, String>) {
    match v {
        Value::String(s) => {
            if let Some(id) = s.strip_prefix("urn:uuid:") {
                if let Some(t) = types.get(id) {
                    *s = format!("{t}/{id}");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_refs(x, types)),
        Value::Object(o) => o.values_mut().for_each(|x| rewrite_refs(x, types)),
        _ => {}
    }
}

/// One line per curated resource of every Synthea bundle, by type.
fn fhir_templates(dir: &Path) -> Vec<(usize, Vec<String>)> {
    let mut by_type: Vec<(usize, Vec<String>)> = (0..TYPES.len()).map(|i| (i, vec![])).collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("bundle folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    files.sort();
    for f in files {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&f).expect("bundle"))
            .read_to_string(&mut text)
            .expect("gzip");
        let doc: Value = serde_json::from_str(&text).expect("bundle json");
        let entries = doc["entry"].as_array().cloned().unwrap_or_default();
        let types: std::collections::HashMap<String, String> = entries
            .iter()
            .filter_map(|e| {
                let r = &e["resource"];
                Some((
                    r["id"].as_str()?.to_string(),
                    r["resourceType"].as_str()?.to_string(),
                ))
            })
            .collect();
        for e in entries {
            let mut r = e["resource"].clone();
            let Some(i) = TYPES.iter().position(|t| r["resourceType"] == *t) else {
                continue;
            };
            rewrite_refs(&mut r, &types);
            by_type[i]
                .1
                .push(serde_json::to_string(&r).expect("serializes"));
        }
    }
    by_type
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// `line` with the first 8 hex digits of every UUID replaced by `copy`: fresh ids per
/// copy, references staying consistent.
fn fresh_uuids(line: &str, copy: u32, out: &mut String) {
    let b = line.as_bytes();
    let prefix = format!("{copy:08x}");
    let mut last = 0;
    let mut i = 0;
    while i + 36 <= b.len() {
        let w = &b[i..i + 36];
        let shaped = w[8] == b'-'
            && w[13] == b'-'
            && w[18] == b'-'
            && w[23] == b'-'
            && w.iter()
                .enumerate()
                .all(|(j, c)| matches!(j, 8 | 13 | 18 | 23) || is_hex(*c))
            && (i == 0 || !is_hex(b[i - 1]));
        if shaped {
            out.push_str(&line[last..i]);
            out.push_str(&prefix);
            last = i + 8;
            i += 36;
        } else {
            i += 1;
        }
    }
    out.push_str(&line[last..]);
}

/// Writes `<Type>.ndjson` files of `copies` copies; returns (resources, bytes).
fn write_ndjson(dir: &Path, templates: &[(usize, Vec<String>)], copies: u32) -> (u64, u64) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let (mut n, mut bytes) = (0u64, 0u64);
    for (i, lines) in templates {
        let mut text = String::new();
        for k in 0..copies {
            for l in lines {
                fresh_uuids(l, k, &mut text);
                text.push('\n');
                n += 1;
            }
        }
        bytes += text.len() as u64;
        std::fs::write(dir.join(format!("{}.ndjson", TYPES[*i])), text).expect("write");
    }
    (n, bytes)
}

/// The supported messages of the HL7 v2 samples (ADT A01-A13, ORU^R01), segments ending in
/// CR, one string per file.
fn hl7_templates(dir: &Path) -> Vec<String> {
    let supported = [
        "ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A05", "ADT^A06", "ADT^A07", "ADT^A08",
        "ADT^A11", "ADT^A12", "ADT^A13", "ORU^R01",
    ];
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("hl7 folder")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).expect("sample");
        let text: String = match String::from_utf8(bytes.clone()) {
            Ok(s) => s,
            Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
        };
        let text = text
            .trim_start_matches('\u{feff}')
            .replace("\r\n", "\r")
            .replace('\n', "\r");
        let kind = text
            .split('\r')
            .find_map(|l| l.trim_start_matches(['\x0b', ' ']).strip_prefix("MSH|"))
            .and_then(|m| m.split('|').nth(7))
            .map(|t| t.split('^').take(2).collect::<Vec<_>>().join("^"));
        if kind.is_some_and(|k| supported.contains(&k.as_str())) {
            out.push(text);
        }
    }
    out
}

/// A copy of one file's messages with fresh message, patient, visit and order ids.
fn hl7_copy(template: &str, copy: u32, out: &mut String) -> u64 {
    let mut messages = 0;
    for seg in template.split('\r') {
        let seg = seg.trim_matches(|c: char| c == '\x0b' || c == '\x1c');
        if seg.trim().is_empty() {
            continue;
        }
        let mut fields: Vec<String> = seg.split('|').map(str::to_string).collect();
        let name = fields[0].clone();
        let targets: &[usize] = match name.as_str() {
            "MSH" => {
                messages += 1;
                &[9]
            }
            "PID" => &[2, 3, 18],
            "PV1" => &[19],
            "OBR" | "ORC" => &[2, 3],
            _ => &[],
        };
        for &t in targets {
            if let Some(f) = fields.get_mut(t) {
                if !f.is_empty() {
                    let end = f.find(['^', '~']).unwrap_or(f.len());
                    f.insert_str(end, &format!("K{copy}"));
                }
            }
        }
        out.push_str(&fields.join("|"));
        out.push('\r');
    }
    messages
}

/// Writes `files` HL7 files holding at least `target` messages; returns (messages, bytes).
fn write_hl7(dir: &Path, templates: &[String], target: u64, files: usize) -> (u64, u64) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut texts = vec![String::new(); files];
    let (mut n, mut copy) = (0u64, 0u32);
    while n < target {
        let t = &mut texts[copy as usize % files];
        for tpl in templates {
            n += hl7_copy(tpl, copy, t);
        }
        copy += 1;
    }
    let mut bytes = 0;
    for (i, t) in texts.iter().enumerate() {
        bytes += t.len() as u64;
        std::fs::write(dir.join(format!("batch-{i:02}.hl7")), t).expect("write");
    }
    (n, bytes)
}

// ---------------------------------------------------------------------------------------
// Measuring.
// ---------------------------------------------------------------------------------------

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The runs of one measurement: their median, and the first run alone (the process's first
/// parse of that kind: the allocator still has to fault in fresh memory, as in a one-shot
/// `ward ingest`).
#[derive(Clone, Copy)]
struct Timing {
    median: Duration,
    first: Duration,
}

impl Timing {
    fn of(times: Vec<Duration>) -> Timing {
        Timing {
            first: times.first().copied().unwrap_or_default(),
            median: median(times),
        }
    }
}

fn read_dir_inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            (
                p.file_name().expect("name").to_string_lossy().to_string(),
                std::fs::read(&p).expect("read"),
            )
        })
        .collect();
    v.sort();
    v
}

/// A parser with its output as Arrow record batches.
type Parse = fn(&[Input<'_>], &Context) -> ParsedBatches;

/// FHIR NDJSON into record batches, as an ingest run does it.
fn fhir_batches(inputs: &[Input<'_>], ctx: &Context) -> ParsedBatches {
    fhir::parse_batches(inputs, fhir::Framing::Ndjson, ctx).expect("batches")
}

/// HL7 v2 into record batches, as an ingest run does it.
fn hl7_batches(inputs: &[Input<'_>], ctx: &Context) -> ParsedBatches {
    hl7v2::parse(inputs, ctx).into_batches().expect("batches")
}

/// Parses and builds every curated table's Arrow batch (what the Python script does: rows
/// into columnar tables), `runs` times; returns the median and the rows of the last run.
fn time_parse(
    files: &[(String, Vec<u8>)],
    runs: usize,
    threads: Option<usize>,
    parse: Parse,
) -> (Timing, u64, u64) {
    let inputs: Vec<Input<'_>> = files
        .iter()
        .map(|(name, bytes)| Input { name, bytes })
        .collect();
    let ctx = Context::new(now());
    let once = || {
        let start = Instant::now();
        let p = parse(&inputs, &ctx);
        let elapsed = start.elapsed();
        let rows: u64 = p.batches.iter().map(|(_, b)| b.num_rows() as u64).sum();
        (elapsed, rows, p.bad.len() as u64)
    };
    let mut times = Vec::new();
    let (mut rows, mut bad) = (0, 0);
    for _ in 0..runs {
        let (d, r, b) = match threads {
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("pool")
                .install(once),
            None => once(),
        };
        times.push(d);
        rows = r;
        bad = b;
    }
    (Timing::of(times), rows, bad)
}

fn time_pipeline(dir: &Path, format: Format, runs: usize) -> (Timing, u64) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..runs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clock: SharedClock = std::sync::Arc::new(ManualClock::new(now()));
        let store = Store::open(tmp.path(), clock).expect("store");
        let opts = IngestOptions {
            format,
            mapping: None,
            mapping_text: None,
            max_bad: None,
            context: Context::new(now()),
            read: Default::default(),
        };
        let start = Instant::now();
        let report = rt
            .block_on(pipeline::ingest(&store, &[dir.to_path_buf()], &opts, None))
            .expect("pipeline");
        times.push(start.elapsed());
        rows = report.curated.iter().map(|c| c.parsed_rows).sum();
    }
    (Timing::of(times), rows)
}

/// `ward ingest` as a process (the binary of this build, or `WARD_BIN`), `runs` times, each
/// into a fresh store: from the files on disk to committed raw, curated and quarantine
/// versions, the process's whole wall time (start-up and exit included).
fn time_ward_process(dir: &Path, format: &str, runs: usize) -> Timing {
    let bin = std::env::var_os("WARD_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ward").into());
    let mut times = Vec::new();
    for _ in 0..runs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let start = Instant::now();
        let o = Command::new(&bin)
            .arg("--store")
            .arg(tmp.path().join("store"))
            .args(["ingest", "--format", format])
            .arg(dir)
            .output()
            .expect("run ward");
        times.push(start.elapsed());
        assert!(
            o.status.success(),
            "ward ingest failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Timing::of(times)
}

/// Runs the Python baseline `runs` times; the median wall time and its row count.
fn time_python(ndjson: &Path, out: &Path, runs: usize) -> Option<(Timing, u64, String)> {
    time_script("benches/ingest_baseline.py", ndjson, out, runs)
}

/// Runs a Python baseline script as a process `runs` times; the median wall time, its row
/// count and its versions line.
fn time_script(
    script: &str,
    input: &Path,
    out: &Path,
    runs: usize,
) -> Option<(Timing, u64, String)> {
    let script = PathBuf::from(script);
    let ndjson = input;
    let mut times = Vec::new();
    let mut rows = 0;
    let mut version = String::new();
    for _ in 0..runs {
        let start = Instant::now();
        let o = Command::new("python3")
            .arg(&script)
            .arg(ndjson)
            .arg(out)
            .output()
            .ok()?;
        times.push(start.elapsed());
        let stdout = String::from_utf8_lossy(&o.stdout);
        if !o.status.success() {
            eprintln!(
                "python baseline failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        for l in stdout.lines() {
            if let Some(r) = l.strip_prefix("rows ") {
                rows = r.trim().parse().unwrap_or(0);
            }
            if let Some(v) = l.strip_prefix("versions ") {
                version = v.trim().to_string();
            }
        }
    }
    Some((Timing::of(times), rows, version))
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let copies: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(60);
    let hl7_target: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    let data = shared_data();
    let bundles = data.join("synthea-fhir-r4-bundles/R4_SYNTHEA");
    let hl7 = data.join("hl7v2-samples/Hl7v2");
    if !bundles.is_dir() || !hl7.is_dir() {
        eprintln!(
            "SKIP: the shared samples are absent under {}",
            data.display()
        );
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let ndjson = work.path().join("ndjson");
    let hl7_dir = work.path().join("hl7");
    eprintln!("building the input ...");
    let (resources, fhir_bytes) = write_ndjson(&ndjson, &fhir_templates(&bundles), copies);
    let (messages, hl7_bytes) = write_hl7(&hl7_dir, &hl7_templates(&hl7), hl7_target, 8);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "FHIR: {resources} resources, {:.0} MB; HL7 v2: {messages} messages, {:.0} MB; {cores} cores",
        fhir_bytes as f64 / 1e6,
        hl7_bytes as f64 / 1e6
    );

    // `WARD_BENCH_ONLY=process`: issue 37's comparison alone, every side a process on the
    // same files: `ward ingest` against the Python scripts (FHIR NDJSON and HL7 v2).
    if std::env::var("WARD_BENCH_ONLY").as_deref() == Ok("process") {
        process_table(
            &work, &ndjson, &hl7_dir, resources, messages, runs, copies, hl7_target,
        );
        return;
    }
    let fhir_files = read_dir_inputs(&ndjson);
    let hl7_files = read_dir_inputs(&hl7_dir);
    // `WARD_BENCH_ONLY=fhir` / `hl7`: that parser alone, for profiling.
    if let Ok(only) = std::env::var("WARD_BENCH_ONLY") {
        let (files, parse): (_, Parse) = match only.as_str() {
            "fhir" => (&fhir_files, fhir_batches),
            "hl7" => (&hl7_files, hl7_batches),
            other => panic!("WARD_BENCH_ONLY: unknown phase {other} (fhir, hl7)"),
        };
        let threads = std::env::var("WARD_BENCH_THREADS")
            .ok()
            .and_then(|t| t.parse().ok());
        let (d, rows, bad) = time_parse(files, runs, threads, parse);
        println!(
            "{only} parse: median {:.3} s (first run {:.3} s), {rows} rows, {bad} bad",
            d.median.as_secs_f64(),
            d.first.as_secs_f64()
        );
        return;
    }
    eprintln!("FHIR parse ...");
    let (f_all, f_rows, f_bad) = time_parse(&fhir_files, runs, None, fhir_batches);
    let (f_one, _, _) = time_parse(&fhir_files, runs, Some(1), fhir_batches);
    eprintln!("HL7 v2 parse ...");
    let (h_all, h_rows, h_bad) = time_parse(&hl7_files, runs, None, hl7_batches);
    let (h_one, _, _) = time_parse(&hl7_files, runs, Some(1), hl7_batches);
    drop(fhir_files);
    drop(hl7_files);
    eprintln!("pipelines ...");
    let (fp, fp_rows) = time_pipeline(&ndjson, Format::FhirNdjson, runs);
    let (hp, _) = time_pipeline(&hl7_dir, Format::Hl7v2, runs);
    eprintln!("processes ...");
    let processes = process_rows(&work, &ndjson, &hl7_dir, runs);
    eprintln!("python baseline ...");
    let py = time_python(&ndjson, &work.path().join("py-out"), runs);

    let mb = |b: u64, d: Duration| b as f64 / 1e6 / d.as_secs_f64();
    let mut md = String::new();
    md.push_str("# Ingest throughput\n\n");
    md.push_str(&format!(
        "Command: `cargo bench --bench ingest -- {copies} {hl7_target} {runs}` (release build; medians of {runs} runs).\n\n"
    ));
    md.push_str(&format!(
        "Machine: {cores} cores (`nproc` {}), CPU {}, {}; date {}.\n\n",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("uname -sr"),
        sh("date -u +%Y-%m-%dT%H:%MZ")
    ));
    md.push_str(&format!(
        "Input: FHIR R4 Bulk NDJSON, the curated resource types (Patient, Encounter, Observation, Condition, Procedure, MedicationRequest) of the 22 Synthea bundles of `../shared/data` replicated {copies} times with fresh ids (UUIDs rewritten per copy, `urn:uuid:` references turned into `Type/id`): {resources} resources, {:.1} MB in 6 files. HL7 v2: the 31 ADT A01-A13 / ORU^R01 samples replicated with fresh message, patient, visit and order ids: {messages} messages, {:.1} MB in 8 files. {f_rows} curated rows from FHIR ({f_bad} bad records), {h_rows} from HL7 v2 ({h_bad} bad).\n\n",
        fhir_bytes as f64 / 1e6,
        hl7_bytes as f64 / 1e6
    ));
    md.push_str(
        "| what | threads | median time | first run | records/s | MB/s | records/s per core |\n",
    );
    md.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    let mut row = |what: &str, threads: String, n: u64, bytes: u64, t: Timing, per: usize| {
        let d = t.median;
        md.push_str(&format!(
            "| {what} | {threads} | {:.3} s | {:.3} s | {:.0} | {:.1} | {:.0} |\n",
            d.as_secs_f64(),
            t.first.as_secs_f64(),
            rate(n, d),
            mb(bytes, d),
            rate(n, d) / per as f64
        ));
    };
    let all = format!("{cores} (rayon default)");
    row(
        "FHIR NDJSON parse into Arrow batches (`fhir::parse_batches`)",
        all.clone(),
        resources,
        fhir_bytes,
        f_all,
        cores,
    );
    row(
        "FHIR NDJSON parse + Arrow batches",
        "1".into(),
        resources,
        fhir_bytes,
        f_one,
        1,
    );
    row(
        "HL7 v2 parse + Arrow batches (`hl7v2::parse` then `into_batches`)",
        all.clone(),
        messages,
        hl7_bytes,
        h_all,
        cores,
    );
    row(
        "HL7 v2 parse + Arrow batches",
        "1".into(),
        messages,
        hl7_bytes,
        h_one,
        1,
    );
    row("FHIR NDJSON whole pipeline (`pipeline::ingest`: read, raw version, parse, curated Lance versions)", all.clone(), resources, fhir_bytes, fp, cores);
    row(
        "HL7 v2 whole pipeline",
        all.clone(),
        messages,
        hl7_bytes,
        hp,
        cores,
    );
    match &py {
        Some((d, rows, version)) => {
            row(
                "Python baseline (`benches/ingest_baseline.py`: json + pyarrow, Parquet out)",
                "1 (CPython)".into(),
                resources,
                fhir_bytes,
                *d,
                1,
            );
            md.push_str(&format!(
                "\nPython baseline: {version}; {rows} table rows (Ward: {fp_rows} curated rows from the same files).\n\n"
            ));
            md.push_str("| ratio (Python time / Ward time, same files) | value |\n| --- | --- |\n");
            let ratio = |ward: Duration| d.median.as_secs_f64() / ward.as_secs_f64();
            md.push_str(&format!(
                "| Ward FHIR parse, all cores | {:.1}x |\n| Ward FHIR parse, 1 thread | {:.1}x |\n| Ward FHIR parse, all cores, first run of the process | {:.1}x |\n| Ward whole pipeline (also stores the raw input and content-hashed Lance versions) | {:.1}x |\n",
                ratio(f_all.median),
                ratio(f_one.median),
                ratio(f_all.first),
                ratio(fp.median)
            ));
            md.push_str("\nMedians over the runs; Python starts a fresh process each run, Ward repeats in one process (its first run is in the `first run` column).\n");
            md.push_str("\nTarget: at least 10x the Python script.\n");
        }
        None => md.push_str("\nPython baseline: not run (python3 with pyarrow unavailable).\n"),
    }
    md.push_str(&processes);
    println!("{md}");
    let out = PathBuf::from("benches/results");
    std::fs::create_dir_all(&out).expect("results dir");
    std::fs::write(out.join("ingest.md"), md).expect("write results");
}

/// Issue 37's ingest comparison, every side a process on the same files: `ward ingest` into
/// a fresh store against the Python script, per format, as Markdown rows with the ratios.
fn process_rows(work: &tempfile::TempDir, ndjson: &Path, hl7: &Path, runs: usize) -> String {
    let mut md = String::from(
        "\n## As processes (issue 37): `ward ingest` vs the Python script, same files\n\n\
         | input | `ward ingest` median (first run) | Python median (first run) | ratio (Python / Ward), median | ratio, first runs |\n| --- | --- | --- | --- | --- |\n",
    );
    let mut notes = Vec::new();
    for (label, dir, format, script) in [
        (
            "FHIR NDJSON",
            ndjson,
            "fhir-ndjson",
            "benches/ingest_baseline.py",
        ),
        ("HL7 v2", hl7, "hl7v2", "benches/ingest_baseline_hl7.py"),
    ] {
        eprintln!("{label}: ward ingest as a process ...");
        let w = time_ward_process(dir, format, runs);
        eprintln!("{label}: the Python script ...");
        let out = work.path().join(format!("py-{format}"));
        match time_script(script, dir, &out, runs) {
            Some((p, rows, version)) => {
                md.push_str(&format!(
                    "| {label} | {:.3} s ({:.3} s) | {:.3} s ({:.3} s) | {:.2}x | {:.2}x |\n",
                    w.median.as_secs_f64(),
                    w.first.as_secs_f64(),
                    p.median.as_secs_f64(),
                    p.first.as_secs_f64(),
                    p.median.as_secs_f64() / w.median.as_secs_f64(),
                    p.first.as_secs_f64() / w.first.as_secs_f64(),
                ));
                notes.push(format!("{script}: {rows} rows, {version}"));
            }
            None => md.push_str(&format!(
                "| {label} | {:.3} s ({:.3} s) | not run (python3 with pyarrow?) | - | - |\n",
                w.median.as_secs_f64(),
                w.first.as_secs_f64()
            )),
        }
    }
    md.push_str("\nEach run is a fresh process on the same files (Ward into a fresh store); target: at least 10x.\n");
    for n in notes {
        md.push_str(&format!("- {n}\n"));
    }
    md
}

/// `WARD_BENCH_ONLY=process`: the process comparison alone, printed and written to
/// `benches/results/ingest-process.md`.
#[allow(clippy::too_many_arguments)]
fn process_table(
    work: &tempfile::TempDir,
    ndjson: &Path,
    hl7: &Path,
    resources: u64,
    messages: u64,
    runs: usize,
    copies: u32,
    hl7_target: u64,
) {
    let mut md = format!(
        "Command: `WARD_BENCH_ONLY=process cargo bench --bench ingest -- {copies} {hl7_target} {runs}`; {resources} FHIR resources, {messages} HL7 v2 messages; machine: {} cores, CPU {}, {}; date {}.\n",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("uname -sr"),
        sh("date -u +%Y-%m-%dT%H:%MZ")
    );
    md.push_str(&process_rows(work, ndjson, hl7, runs));
    println!("{md}");
    let out = PathBuf::from("benches/results");
    std::fs::create_dir_all(&out).expect("results dir");
    std::fs::write(out.join("ingest-process.md"), md).expect("write results");
}
