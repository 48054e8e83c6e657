//! Through the store: materialize, rebuild, incremental, partitioned, Synthea.

use super::*;
use crate::common::known_by;
use crate::common::put_curated;

// ---------------------------------------------------------------------------------------
// Through the store: materialize, rebuild, incremental, Synthea
// ---------------------------------------------------------------------------------------

pub(super) fn store_at(dir: &Path) -> Store {
    let clock: SharedClock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap(),
    ));
    Store::open(dir.join("store"), clock).unwrap()
}

#[tokio::test]
async fn materialize_rebuild_and_incremental_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let full = cohort(120, 21);
    put_curated(
        &store,
        &known_by(&full, Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap()),
    )
    .await;
    let opts = MaterializeOptions::default();
    let first = features::materialize(&store, &repo, "readmission", &opts)
        .await
        .unwrap();
    let m = store.manifest(&first.hash).unwrap();
    assert_eq!(m.kind, Kind::Timeline);
    assert_eq!(
        m.lineage.definition,
        Some(repo.set("readmission").unwrap().definition_hash())
    );
    let tables: Vec<&str> = first.inputs.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        tables,
        [
            "patients",
            "encounters",
            "observations",
            "conditions",
            "procedures"
        ]
    );
    assert_eq!(
        m.lineage.inputs,
        first.inputs.iter().map(|(_, h)| *h).collect::<Vec<_>>()
    );
    assert_eq!(
        m.labels.get(features::LABELS_KEY).map(String::as_str),
        Some("readmitted_30d")
    );
    assert_eq!(
        features::rebuild(&store, &first.hash).await.unwrap(),
        first.hash
    );

    // The stored index answers like the in-memory one.
    let (set, idx) = features::load_index(&store, &first.hash).await.unwrap();
    assert_eq!(set.name, "readmission");
    assert_eq!(idx.len(), first.rows);

    // New data, incremental == full.
    put_curated(&store, &full).await;
    let inc = features::materialize_incremental(&store, &repo, "readmission", &first.hash, &opts)
        .await
        .unwrap();
    assert!(inc.reused > 0 && inc.recomputed > 0);
    let fresh = features::materialize(&store, &repo, "readmission", &opts)
        .await
        .unwrap();
    assert_eq!(inc.hash, fresh.hash);
    assert!(!fresh.created);
    assert_ne!(inc.hash, first.hash);
    assert_eq!(
        features::rebuild(&store, &inc.hash).await.unwrap(),
        inc.hash
    );
}

/// Materializing in ranges of patients (a small `partition_rows`) stores the same timeline
/// as materializing at once: the derived table, the score features and the label included.
#[tokio::test]
async fn partitioned_materialization_equals_one_piece() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    put_curated(&store, &cohort(80, 5)).await;
    let whole = features::materialize(&store, &repo, "readmission", &MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(whole.partitions, 1);
    for partition_rows in [1, 700] {
        let other = tempfile::tempdir().unwrap();
        let s2 = store_at(other.path());
        put_curated(&s2, &cohort(80, 5)).await;
        let opts = MaterializeOptions {
            partition_rows,
            ..Default::default()
        };
        let parts = features::materialize(&s2, &repo, "readmission", &opts)
            .await
            .unwrap();
        assert!(
            parts.partitions > 1,
            "{partition_rows}: {}",
            parts.partitions
        );
        if partition_rows == 1 {
            // One bucket a range: as many as the buckets holding a patient.
            let buckets: std::collections::BTreeSet<u32> = cohort(80, 5)
                .patients
                .iter()
                .map(|p| ward::hash::bucketed::bucket_of(Some(p.patient_id.as_bytes()), 1024))
                .collect();
            assert_eq!(parts.partitions, buckets.len());
        }
        assert_eq!(parts.hash, whole.hash, "partition_rows {partition_rows}");
        assert_eq!(
            (parts.rows, parts.recomputed),
            (whole.rows, whole.recomputed)
        );
        // The temporary Parquet file is gone; rebuild (which partitions by default only
        // above 8M rows) arrives at the same hash.
        let leftovers: Vec<_> = std::fs::read_dir(other.path().join("store/tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("timeline-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(
            features::rebuild(&s2, &parts.hash).await.unwrap(),
            whole.hash
        );
    }
}

#[tokio::test]
async fn readmission_set_from_synthea_csv() {
    let Some(dir) = crate::common::shared_data("synthea-csv") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    let opts = ward::ingest::pipeline::IngestOptions {
        format: ward::ingest::pipeline::Format::Synthea,
        mapping: None,
        mapping_text: None,
        max_bad: None,
        context: ward::ingest::Context::new(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()),
        read: Default::default(),
    };
    ward::ingest::pipeline::ingest(&store, &[dir], &opts, None)
        .await
        .unwrap();
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let out = features::materialize(&store, &repo, "readmission", &MaterializeOptions::default())
        .await
        .unwrap();
    assert!(out.rows > 0);
    assert_eq!(
        features::rebuild(&store, &out.hash).await.unwrap(),
        out.hash
    );
}
