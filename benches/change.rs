//! Change costs what changed (issue 32): on a store of generated patients, changes of 1,
//! 1,000 and 100,000 HL7 v2 messages (ADT and ORU, for existing and new patients), each
//! brought in the way users do, beside a full rebuild of the same data.
//!
//! 1. `ward synth --format hl7v2` of PATIENTS patients; its messages in time order are cut
//!    into the history and the changes: the last messages in time order (existing
//!    patients), with every message of some patients the history never names (new
//!    patients, about a tenth of the change messages) spread evenly among them; the first
//!    change takes the first of them, and so on. The last message of every change is a
//!    *probe*: an ORU of a history patient that no change names, with a hemoglobin result no
//!    other message has, timed now.
//! 2. The history: `ward ingest --format hl7v2` (a process, a fresh store), then `ward
//!    materialize --set readmission_online` (a process, in full), then `ward serve` (default
//!    settings, the set served online).
//! 3. Each change, in turn: `ward ingest` of its file (a process, incremental by default),
//!    then the server's `Materialize` (incremental: the changed patients applied to the
//!    online store in place), then `GetOnlineFeatures` of the probe patient until it answers
//!    the probe's value. Reported: ingest time, materialize time, the time from the start of
//!    the ingest until the lookup answered the new value, and the bytes the store grew by.
//! 4. The full rebuild of the same data: `ward ingest` of the history and every change so
//!    far in one run into a fresh store (its curated hashes must equal the incremental
//!    store's) and the server's `Materialize` with `full` (its timeline must equal the
//!    incremental one).
//!
//! `cargo bench --bench change -- [PATIENTS]` (default 20,000); `WARD_BENCH_CHANGES`
//! (default `1,1000,100000`) the change sizes; `WARD_BENCH_DIR` where the stores go
//! (default `/tmp`).

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::grpc_common::proto::features_client::FeaturesClient;
use crate::grpc_common::proto::{feature_value, MaterializeRequest, OnlineRequest};

mod grpc_common;
mod hl7_common;

use grpc_common::{arg, start_ward};
use hl7_common::{contains, field, patient, probe_message};

const SET: &str = "readmission_online";
const REPO: &str = include_str!("../examples/features/readmission.toml");

fn main() {
    let patients = arg(1, 20_000);
    let sizes: Vec<usize> = std::env::var("WARD_BENCH_CHANGES")
        .unwrap_or_else(|_| "1,1000,100000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("WARD_BENCH_CHANGES: sizes like 1,1000")
        })
        .collect();
    assert!(
        sizes.iter().all(|k| *k >= 1),
        "a change holds at least its probe"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(patients, &sizes));
}

/// Runs `ward ARGS` against `store` (under `/usr/bin/time` when it is there, for the peak
/// RSS): its wall time and peak RSS in bytes. Panics with its stderr on failure.
fn ward(store: &Path, args: &[&str]) -> (Duration, Option<u64>) {
    let timed = Path::new("/usr/bin/time").exists();
    let mut cmd = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "ward-peak-kb %M"])
            .arg(env!("CARGO_BIN_EXE_ward"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_ward"))
    };
    let t = Instant::now();
    let out = cmd
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("ward");
    let took = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ward {args:?} failed ({}): {stderr}",
        out.status
    );
    let peak = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("ward-peak-kb "))
        .filter_map(|k| k.trim().parse::<u64>().ok())
        .next_back()
        .map(|kb| kb * 1024);
    (took, peak)
}

fn mb(b: Option<u64>) -> String {
    b.map_or_else(|| "?".into(), |b| format!("{:.0}", b as f64 / 1e6))
}

/// Bytes of the files under `dir`, a file with several links counted once.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    total
}

fn write_messages(path: &Path, msgs: &[Vec<u8>]) {
    let mut bytes = Vec::with_capacity(msgs.iter().map(Vec::len).sum());
    for m in msgs {
        bytes.extend_from_slice(m);
    }
    std::fs::write(path, bytes).expect("write messages");
}

/// The curated heads of a store (name, hash), read from its `heads` through the library.
fn curated_heads(store: &Path) -> Vec<(String, String)> {
    let store = ward::store::Store::open(store, ward::clock::system()).expect("open store");
    ward::curated::Table::ALL
        .iter()
        .map(|t| {
            let h = store
                .head(t.name())
                .expect("head")
                .map(|h| h.hash.to_string())
                .unwrap_or_default();
            (t.name().to_string(), h)
        })
        .collect()
}

struct Row {
    messages: usize,
    basis: String,
    ingest: f64,
    ingest_peak: Option<u64>,
    full_peak: Option<u64>,
    materialize: f64,
    visible: f64,
    written: u64,
    recomputed: u64,
    full_ingest: f64,
    full_materialize: f64,
    full_bytes: u64,
}

async fn run(patients: u64, sizes: &[usize]) {
    let base = std::env::var("WARD_BENCH_DIR").unwrap_or_else(|_| "/tmp".into());
    let dir = tempfile::Builder::new()
        .prefix("ward-change-bench")
        .tempdir_in(&base)
        .expect("tempdir");
    let repo = dir.path().join("readmission.toml");
    std::fs::write(&repo, REPO).expect("repo");
    let repo_s = repo.display().to_string();

    // 1. The cohort, in time order, cut into the history and the changes.
    let synth = ward::synth::SynthOptions {
        patients,
        seed: 5,
        ..Default::default()
    };
    let t = Instant::now();
    let summary = ward::synth::write(
        &synth,
        ward::synth::SynthFormat::Hl7v2,
        &dir.path().join("cohort"),
        None,
    )
    .expect("synth");
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    for f in &summary.files {
        let text = std::fs::read_to_string(f).expect("read cohort");
        for m in text.split("MSH|").filter(|m| !m.is_empty()) {
            msgs.push(format!("MSH|{m}").into_bytes());
        }
        std::fs::remove_file(f).expect("remove cohort file");
    }
    msgs.sort_by_cached_key(|m| field(m, "MSH", 7).chars().take(14).collect::<String>());
    let tail: usize = sizes.iter().map(|k| k - 1).sum();
    assert!(
        tail * 2 < msgs.len(),
        "{} messages: too few for changes of {sizes:?}",
        msgs.len()
    );
    // New patients: about a tenth of the change messages are every message of patients
    // the history never names (every 64th patient by the first digest byte of the id, as
    // many as that takes), spread evenly through the changes in their own time order.
    let per_patient = msgs.len() / (patients as usize).max(1);
    let wanted_new = (tail / 10 / per_patient.max(1)).max(usize::from(tail > 0));
    let mut fresh: HashSet<String> = HashSet::new();
    for m in &msgs {
        if fresh.len() >= wanted_new {
            break;
        }
        let p = patient(m);
        if blake3::hash(p.as_bytes()).as_bytes()[0].is_multiple_of(64) {
            fresh.insert(p);
        }
    }
    let (of_new, rest): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        msgs.into_iter().partition(|m| fresh.contains(&patient(m)));
    let mut msgs = rest;
    let of_new: Vec<Vec<u8>> = of_new.into_iter().take(tail).collect();
    let old_tail = msgs.split_off(msgs.len() - (tail - of_new.len()));
    // Interleaved by position: the i-th of n at i/n.
    let mut keyed: Vec<(f64, Vec<u8>)> = Vec::with_capacity(tail);
    let (a, b) = (old_tail.len().max(1) as f64, of_new.len().max(1) as f64);
    keyed.extend(
        old_tail
            .into_iter()
            .enumerate()
            .map(|(i, m)| (i as f64 / a, m)),
    );
    keyed.extend(
        of_new
            .into_iter()
            .enumerate()
            .map(|(i, m)| (i as f64 / b, m)),
    );
    keyed.sort_by(|x, y| x.0.total_cmp(&y.0));
    let changes: Vec<Vec<u8>> = keyed.into_iter().map(|(_, m)| m).collect();
    let history = msgs;
    let later: HashSet<String> = changes.iter().map(|m| patient(m)).collect();
    let new_patients = {
        let known: HashSet<String> = history.iter().map(|m| patient(m)).collect();
        later.difference(&known).count()
    };
    let template = history
        .iter()
        .rev()
        .find(|m| {
            field(m, "MSH", 9).starts_with("ORU")
                && contains(m, b"|718-7^")
                && !later.contains(&patient(m))
        })
        .expect("an ORU with a hemoglobin result in the history")
        .clone();
    let probe_patient = patient(&template);
    let history_file = dir.path().join("history.hl7");
    write_messages(&history_file, &history);
    let history_len = history.len();
    drop(history);
    eprintln!(
        "cohort: {patients} patients, {} history messages, {} change messages ({new_patients} \
         patients new in them), in {:.1} s",
        history_len,
        changes.len(),
        t.elapsed().as_secs_f64()
    );

    // 2. The history, ingested and materialized in full; the server.
    let store = dir.path().join("store");
    let h = history_file.display().to_string();
    let (base_ingest, base_peak) = ward(&store, &["ingest", "--format", "hl7v2", &h]);
    let (base_mat, _) = ward(
        &store,
        &["materialize", "--features", &repo_s, "--set", SET],
    );
    let base_bytes = disk_bytes(&store);
    eprintln!(
        "history: ingest {:.1} s (peak {} MB), materialize {:.1} s, store {:.1} MB",
        base_ingest.as_secs_f64(),
        mb(base_peak),
        base_mat.as_secs_f64(),
        base_bytes as f64 / 1e6
    );
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!("features = [{repo_s:?}]\n[limits]\nrequest_timeout_secs = 3600\n"),
    )
    .expect("config");
    let (_server, addr) = start_ward(&store, &config);
    let mut client = FeaturesClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    // 3. The changes.
    let mut rows = Vec::new();
    let mut offset = 0;
    // The files sent so far, in order (the full rebuild ingests them as one file).
    let mut sent: Vec<std::path::PathBuf> = vec![history_file.clone()];
    for (i, k) in sizes.iter().enumerate() {
        let mut change: Vec<Vec<u8>> = changes[offset..offset + k - 1].to_vec();
        offset += k - 1;
        let value = format!("{}.{:03}", 5 + i % 5, 100 + i);
        let now = chrono::Utc::now().format("%Y%m%d%H%M%S+0000").to_string();
        change.push(probe_message(
            &template,
            &format!("CHANGE-{i}"),
            &now,
            &value,
        ));
        let file = dir.path().join(format!("change-{i}.hl7"));
        write_messages(&file, &change);
        drop(change);
        sent.push(file.clone());
        let before = disk_bytes(&store);
        let f = file.display().to_string();

        let t0 = Instant::now();
        let (ingest, ingest_peak) = ward(&store, &["ingest", "--format", "hl7v2", &f]);
        let t1 = Instant::now();
        let inc = client
            .materialize(MaterializeRequest {
                feature_set: SET.into(),
                ..Default::default()
            })
            .await
            .expect("materialize")
            .into_inner();
        let materialize = t1.elapsed();
        // The server chooses: incremental, or in full when the change touched most of the
        // buckets (the reason is reported).
        let basis = if inc.full_reason.is_empty() {
            "incremental".to_string()
        } else {
            format!("full: {}", inc.full_reason)
        };
        let want: f64 = value.parse().expect("value");
        let visible = loop {
            let answer = client
                .get_online_features(OnlineRequest {
                    feature_set: SET.into(),
                    patient_ids: vec![probe_patient.clone()],
                    features: vec!["hemoglobin_last".into()],
                    as_of: String::new(),
                })
                .await
                .expect("online")
                .into_inner();
            let seen = answer.patients.first().and_then(|p| {
                match p.values.first().and_then(|v| v.value.clone()) {
                    Some(feature_value::Value::Num(x)) => Some(x),
                    _ => None,
                }
            });
            if seen.is_some_and(|x| (x - want).abs() < 1e-9) {
                assert_eq!(
                    answer.timeline, inc.timeline,
                    "the answer names the timeline"
                );
                break t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(3600),
                "change {k}: the probe never became visible"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let written = disk_bytes(&store).saturating_sub(before);

        // 4. The full rebuild of the same data, beside it.
        let t2 = Instant::now();
        let full = client
            .materialize(MaterializeRequest {
                feature_set: SET.into(),
                full: true,
                ..Default::default()
            })
            .await
            .expect("full materialize")
            .into_inner();
        let full_materialize = t2.elapsed();
        assert_eq!(
            full.timeline, inc.timeline,
            "change {k}: full = incremental"
        );
        let all = dir.path().join("all.hl7");
        {
            let mut out = std::fs::File::create(&all).expect("all.hl7");
            for f in &sent {
                let mut inp = std::fs::File::open(f).expect("a sent file");
                std::io::copy(&mut inp, &mut out).expect("copy into all.hl7");
            }
        }
        let fresh = dir.path().join("fresh");
        let a = all.display().to_string();
        let (full_ingest, full_peak) = ward(&fresh, &["ingest", "--format", "hl7v2", &a]);
        assert_eq!(
            curated_heads(&fresh),
            curated_heads(&store),
            "change {k}: one run gives the curated versions of the runs"
        );
        let full_bytes = disk_bytes(&fresh);
        std::fs::remove_dir_all(&fresh).expect("remove fresh store");
        std::fs::remove_file(&all).expect("remove all.hl7");
        let row = Row {
            messages: *k,
            basis,
            ingest: ingest.as_secs_f64(),
            ingest_peak,
            full_peak,
            materialize: materialize.as_secs_f64(),
            visible: visible.as_secs_f64(),
            written,
            recomputed: inc.patients,
            full_ingest: full_ingest.as_secs_f64(),
            full_materialize: full_materialize.as_secs_f64(),
            full_bytes,
        };
        eprintln!(
            "change of {k}: ingest {:.2} s (peak {} MB), materialize {:.2} s ({} patients, {}), \
             visible after {:.2} s, {:.1} MB written; full: ingest {:.1} s (peak {} MB), \
             materialize {:.1} s",
            row.ingest,
            mb(row.ingest_peak),
            row.materialize,
            row.recomputed,
            row.basis,
            row.visible,
            row.written as f64 / 1e6,
            row.full_ingest,
            mb(row.full_peak),
            row.full_materialize
        );
        rows.push(row);
    }

    println!(
        "store of {patients} patients (history: ingest {:.1} s, peak {} MB; materialize {:.1} s; \
         {:.1} MB)",
        base_ingest.as_secs_f64(),
        mb(base_peak),
        base_mat.as_secs_f64(),
        base_bytes as f64 / 1e6
    );
    println!(
        "| messages | ingest s (peak MB) | materialize s (patients, basis) | start of ingest to online \
         s | MB written | full rebuild: ingest s (peak MB) | full: materialize s | full: MB | \
         online / full rebuild |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let rebuild = r.full_ingest + r.full_materialize;
        println!(
            "| {} | {:.2} ({}) | {:.2} ({}, {}) | {:.2} | {:.1} | {:.1} ({}) | {:.1} | {:.1} | {:.1}% |",
            r.messages,
            r.ingest,
            mb(r.ingest_peak),
            r.materialize,
            r.recomputed,
            if r.basis == "incremental" { "incremental" } else { "full" },
            r.visible,
            r.written as f64 / 1e6,
            r.full_ingest,
            mb(r.full_peak),
            r.full_materialize,
            r.full_bytes as f64 / 1e6,
            100.0 * r.visible / rebuild
        );
    }
}
