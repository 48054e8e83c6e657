//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The folder `../shared/data/<sub>` (relative to the crate root), or `None` with a message
/// when it is absent. In CI (`WARD_REQUIRE_SHARED_DATA=1`) an absent folder fails the test.
pub(crate) fn shared_data(sub: &str) -> Option<PathBuf> {
    let root = std::env::var_os("WARD_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join("../shared/data"));
    let dir = root.join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("WARD_REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!(
            "shared sample data {} is required (WARD_REQUIRE_SHARED_DATA=1) but absent",
            dir.display()
        );
    }
    eprintln!(
        "SKIP: shared sample data {} is absent; set WARD_SHARED_DATA to its parent folder",
        dir.display()
    );
    None
}

/// The crate root, read when the test runs. `cargo test` sets `CARGO_MANIFEST_DIR` for the
/// test process; the compile-time value is only a fallback, because the build cache is shared
/// between clones and a binary built in one clone must not read another clone's files.
pub(crate) fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Base64url without padding (test JWTs and JWK coordinates).
pub(crate) fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Stores `tables` as curated versions (canonical order), one per table.
pub(crate) async fn put_curated(store: &ward::store::Store, tables: &ward::curated::CuratedTables) {
    let mut tables = tables.clone();
    tables.sort_canonical();
    for t in ward::curated::Table::ALL {
        let b = tables.to_batch(t).unwrap();
        store
            .put_batches(
                b.schema(),
                vec![b],
                ward::store::PutOptions::new(t.name(), ward::store::Kind::Curated),
            )
            .await
            .unwrap();
    }
}
