//! Encryption at rest (`docs/encryption.md`): encrypt and decrypt throughput of
//! `EncryptedStore` over a whole object, beside the same put and get without it, and the
//! latency of ranged reads from a local directory with and without it.
//!
//! `cargo bench --bench crypt` (add `-- MIB REPEATS RANGES` to change the defaults 64 5 2000).

use std::sync::Arc;
use std::time::Instant;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rand::{Rng, SeedableRng};
use ward::security::keyring::{Kek, Keyring};
use ward::store::crypt::EncryptedStore;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn keyring() -> Keyring {
    Keyring::new(Kek::from_bytes(&[0x42; 32], "bench").expect("key"))
}

/// Median MB/s of a put and of a get of `data` through `store`.
async fn throughput(store: &dyn ObjectStore, data: &bytes::Bytes, repeats: usize) -> (f64, f64) {
    let path = Path::from("bench/object");
    let mb = data.len() as f64 / 1e6;
    let (mut put, mut get) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let t = Instant::now();
        store
            .put(&path, PutPayload::from(data.clone()))
            .await
            .expect("put");
        put.push(mb / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let back = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        get.push(mb / t.elapsed().as_secs_f64());
        assert_eq!(back.len(), data.len());
    }
    (median(put), median(get))
}

/// Median and p99 microseconds of `n` random ranged reads of `len` bytes.
async fn ranged(store: &dyn ObjectStore, path: &Path, size: u64, len: u64, n: usize) -> (f64, f64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let start = rng.random_range(0..size - len);
        let t = Instant::now();
        let b = store
            .get_range(path, start..start + len)
            .await
            .expect("range");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(b.len() as u64, len);
    }
    (median(lat.clone()), quantile(lat, 0.99))
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let repeats: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let ranges: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut data = vec![0u8; mib << 20];
        rand_chacha::ChaCha8Rng::seed_from_u64(1).fill(&mut data[..]);
        let data = bytes::Bytes::from(data);
        println!(
            "object: {mib} MiB, repeats: {repeats} (medians); profile: {}",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "optimized"
            }
        );

        let plain: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let enc = EncryptedStore::wrap(Arc::new(InMemory::new()), keyring());
        let (pp, pg) = throughput(plain.as_ref(), &data, repeats).await;
        let (ep, eg) = throughput(enc.as_ref(), &data, repeats).await;
        // In memory, a plain put or get moves a reference to the bytes (no copy): its rate is
        // not a throughput, only a sign that the encrypted rate is the cipher's cost alone.
        println!("in memory, put: encrypted {ep:8.0} MB/s (plain: {pp:.0} MB/s, no copy)");
        println!("in memory, get: encrypted {eg:8.0} MB/s (plain: {pg:.0} MB/s, no copy)");

        let dir = tempfile::tempdir().expect("tempdir");
        let local: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local"));
        let enc_local = EncryptedStore::wrap(local.clone(), keyring());
        let (lp, lg) = throughput(local.as_ref(), &data, repeats).await;
        let (elp, elg) = throughput(enc_local.as_ref(), &data, repeats).await;
        println!("local dir, put: plain {lp:8.0} MB/s, encrypted {elp:8.0} MB/s");
        println!("local dir, get: plain {lg:8.0} MB/s, encrypted {elg:8.0} MB/s");

        let path = Path::from("ranged/object");
        let epath = Path::from("ranged/encrypted");
        local
            .put(&path, PutPayload::from(data.clone()))
            .await
            .expect("put");
        enc_local
            .put(&epath, PutPayload::from(data.clone()))
            .await
            .expect("put");
        let size = data.len() as u64;
        println!("ranged reads from the local dir, {ranges} random ranges each (median / p99 us):");
        for len in [4096u64, 65_536, 1 << 20] {
            let (pm, p99) = ranged(local.as_ref(), &path, size, len, ranges).await;
            let (em, e99) = ranged(enc_local.as_ref(), &epath, size, len, ranges).await;
            // A store of its own: the first read of the object fetches the header too.
            let cold = EncryptedStore::wrap(local.clone(), keyring());
            let (cm, c99) = ranged(cold.as_ref(), &epath, size, len, 1).await;
            println!(
                "  {len:>8} B: plain {pm:7.0} / {p99:7.0}, encrypted {em:7.0} / {e99:7.0}, \
                 encrypted first read (header too) {cm:7.0} / {c99:7.0}"
            );
        }
    });
}
