//! The Python client (`python/`, package `ward_client`) against this build's `ward` binary:
//! runs `python3 -m pytest python/tests -q` with `WARD_BIN` set, so the pytest fixtures start
//! a real `ward serve` over a small synthetic cohort and drive every client call, the
//! examples in `examples/python/` included. Skips when python3 lacks pytest or the client's
//! dependencies, except in CI (`WARD_REQUIRE_PYTHON=1`), where that fails (and so does any
//! test pytest would skip).

use std::process::Command;

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import pytest, grpc, grpc_health, google.protobuf, pyarrow.flight, pandas",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("WARD_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "python3 with pytest and the client's dependencies is required (WARD_REQUIRE_PYTHON=1)"
        );
        eprintln!(
            "SKIP: python3 with pytest, grpcio, protobuf, pyarrow and pandas not found \
             (pip install -r requirements-dev.txt)"
        );
    }
    ok
}

#[test]
fn python_client_suite_passes_against_ward_serve() {
    if !python_ready() {
        return;
    }
    let root = crate::common::crate_dir();
    let run = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "python/tests",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .current_dir(root)
        .env("WARD_BIN", env!("CARGO_BIN_EXE_ward"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "pytest python/tests failed:\n{stdout}\n{stderr}"
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.contains(" passed"), "no test ran:\n{stdout}");
    if std::env::var("WARD_REQUIRE_PYTHON").as_deref() == Ok("1") {
        assert!(
            !summary.contains("skipped"),
            "tests skipped in CI:\n{stdout}"
        );
    }
    eprintln!("python client: {summary}");
}
