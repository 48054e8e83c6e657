//! Hash throughput: the canonical encoding (`ward::hash`) on one core, beside raw BLAKE3
//! over the same number of bytes, in the same run.
//!
//! `cargo bench --bench hashing` (add `-- ROWS REPEATS` to change the defaults 2,000,000 5).

#[path = "common.rs"]
mod common;

use std::time::Instant;

use ward::hash::TableHasher;

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let rows: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let repeats: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let batches: Vec<_> = (0..rows.div_ceil(65_536))
        .map(|i| {
            let start = i * 65_536;
            common::batch(start as u64, 65_536.min(rows - start))
        })
        .collect();
    let bytes: usize = batches.iter().map(common::logical_bytes).sum();
    let flat = vec![0x5au8; bytes];

    let mut canonical = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let mut h = TableHasher::new(&common::schema())
            .expect("hashable")
            .sequential();
        for b in &batches {
            h.update(b).expect("hashable");
        }
        std::hint::black_box(h.finish());
        canonical.push(bytes as f64 / t.elapsed().as_secs_f64() / 1e9);

        let t = Instant::now();
        std::hint::black_box(blake3::hash(&flat));
        raw.push(bytes as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    let (c, r) = (common::median(canonical), common::median(raw));
    println!("rows: {rows}, logical bytes: {bytes}, repeats: {repeats} (medians, one core)");
    println!("canonical encoding + BLAKE3: {c:.2} GB/s");
    println!("raw BLAKE3, same bytes:      {r:.2} GB/s");
    println!("ratio canonical/raw:         {:.2}", c / r);
}
