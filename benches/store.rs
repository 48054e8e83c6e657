//! Put, verify and export of a 10M-row, 10-column table: wall time and peak memory.
//!
//! `cargo bench --bench store` (add `-- ROWS REPEATS`; defaults 10,000,000 3). Each phase
//! runs in a child process of this binary so its peak memory (`VmHWM`) is its own.

#[path = "common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ward::store::{Kind, PutOptions, Store, VersionRef};

fn phase(name: &str, dir: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = Store::open(dir.join("store"), ward::clock::system()).expect("store");
    let t = Instant::now();
    rt.block_on(async {
        match name {
            "put" => {
                let out = store
                    .put_parquet(
                        &dir.join("input.parquet"),
                        PutOptions::new("bench", Kind::Other),
                    )
                    .await
                    .expect("put");
                assert!(out.created, "each put starts from an empty store");
            }
            "verify" => {
                let m = store
                    .resolve(&VersionRef::Latest("bench".into()))
                    .expect("resolve");
                store.verify(&m.hash).await.expect("verify");
            }
            "export" => {
                let m = store
                    .resolve(&VersionRef::Latest("bench".into()))
                    .expect("resolve");
                store
                    .export_parquet(&m.hash, &dir.join("export.parquet"))
                    .await
                    .expect("export");
            }
            other => panic!("unknown phase {other}"),
        }
    });
    println!(
        "{} {}",
        t.elapsed().as_secs_f64(),
        common::peak_rss().unwrap_or(0)
    );
}

fn run_child(name: &str, dir: &Path) -> (f64, f64) {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env("WARD_BENCH_PHASE", name)
        .env("WARD_BENCH_DIR", dir)
        .output()
        .expect("child runs");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let secs: f64 = it.next().and_then(|s| s.parse().ok()).expect("seconds");
    let peak: f64 = it.next().and_then(|s| s.parse().ok()).expect("peak");
    (secs, peak / 1e6)
}

fn main() {
    if let (Ok(p), Ok(d)) = (
        std::env::var("WARD_BENCH_PHASE"),
        std::env::var("WARD_BENCH_DIR"),
    ) {
        phase(&p, Path::new(&d));
        return;
    }
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let rows: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let repeats: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir: PathBuf = tempfile::tempdir().expect("tempdir").keep();
    let input = dir.join("input.parquet");
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&input).expect("create"),
        common::schema(),
        None,
    )
    .expect("writer");
    let mut logical = 0usize;
    for i in 0..rows.div_ceil(65_536) {
        let b = common::batch((i * 65_536) as u64, 65_536.min(rows - i * 65_536));
        logical += common::logical_bytes(&b);
        writer.write(&b).expect("write");
    }
    writer.close().expect("close");
    println!(
        "rows: {rows}, columns: 10, logical bytes: {logical}, parquet input: {} bytes, repeats: {repeats}",
        std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0)
    );
    let mut results: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("put", vec![], vec![]),
        ("verify", vec![], vec![]),
        ("export", vec![], vec![]),
    ];
    for _ in 0..repeats {
        let _ = std::fs::remove_dir_all(dir.join("store"));
        for (name, secs, peaks) in results.iter_mut() {
            let (s, p) = run_child(name, &dir);
            secs.push(s);
            peaks.push(p);
        }
    }
    for (name, secs, peaks) in results {
        let s = common::median(secs);
        println!(
            "{name:<7} median {s:.2} s ({:.0} k rows/s), peak RSS median {:.0} MB",
            rows as f64 / s / 1e3,
            common::median(peaks)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
