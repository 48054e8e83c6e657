//! `ward demo`, the main job: deterministic end to end, every version verified.

use std::sync::Arc;

use ward::clock::ManualClock;
use ward::demo::{run, DemoOptions};
use ward::store::{Kind, ListFilter, Store};

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_is_reproducible_to_the_hash() {
    let opts = DemoOptions {
        patients: 120,
        seed: 7,
    };
    let mut runs = Vec::new();
    for i in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        // Different clocks and folders: the curated hashes must not depend on either.
        let clock = Arc::new(ManualClock::new(
            format!("2026-0{}-01T00:00:00Z", i + 1).parse().unwrap(),
        ));
        let store = Store::open(dir.path().join("store"), clock).unwrap();
        let report = run(&store, &dir.path().join(format!("work{i}")), &opts, None)
            .await
            .unwrap();
        assert_eq!(report.patients, 120);
        assert_eq!(report.ingest.bad_total(), 0, "{:?}", report.ingest.bad);
        let tables: Vec<&str> = report
            .ingest
            .curated
            .iter()
            .map(|c| c.table.as_str())
            .collect();
        for t in [
            "patients",
            "encounters",
            "observations",
            "conditions",
            "care_team",
        ] {
            assert!(tables.contains(&t), "{t} missing from {tables:?}");
        }
        let curated = store
            .list(&ListFilter {
                kind: Some(Kind::Curated),
                name: None,
            })
            .unwrap();
        assert_eq!(curated.len(), report.ingest.curated.len());
        for m in &curated {
            assert_eq!(m.lineage.inputs, vec![report.ingest.raw], "{}", m.name);
        }
        let sets: Vec<&str> = report.timelines.iter().map(|t| t.set.as_str()).collect();
        assert_eq!(sets, ["readmission_online", "readmission"]);
        for t in &report.timelines {
            assert!(t.rows > 0, "{} is empty", t.set);
            assert_eq!(
                ward::features::rebuild(&store, &t.hash).await.unwrap(),
                t.hash
            );
        }
        assert_eq!(
            report.verified.len(),
            1 + report.ingest.curated.len() + report.timelines.len()
        );
        runs.push(
            report
                .ingest
                .curated
                .iter()
                .map(|c| (c.table.clone(), c.hash))
                .chain(report.timelines.iter().map(|t| (t.set.clone(), t.hash)))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn ward_demo_no_serve_prints_the_hashes_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(dir.path().join("store"))
        .args(["demo", "--patients", "40", "--seed", "3", "--no-serve"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().expect("hashes on stdout");
    assert!(
        last.starts_with("b3:") && last.len() == 67,
        "last stdout line {last:?}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
    let store = Store::open_existing(dir.path().join("store"), ward::clock::system()).unwrap();
    let hash = last.parse().unwrap();
    assert_eq!(store.manifest(&hash).unwrap().kind, Kind::Curated);
}

#[test]
fn ward_demo_refuses_a_network_address_without_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(dir.path().join("store"))
        .args(["demo", "--patients", "10", "--addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("0.0.0.0:0") && stderr.contains("--insecure") && stderr.contains("TLS"),
        "{stderr}"
    );
    assert!(!stderr.contains("Ctrl-C stops the server"), "{stderr}");
    // Refused before any work: no store was built.
    assert!(!dir.path().join("store").exists());
}
