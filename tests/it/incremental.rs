//! Incremental materialization as users reach it (issue 32, "Reachable"): the library's
//! choice between incremental and full (`features::materialize_latest`), `ward materialize
//! [--full]`, the service's Materialize, and a seeded random property: successive curated
//! versions (new patients, late rows, corrections, retractions), materialized step by step
//! incrementally, give at each step the hash of a full materialization.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use ward::clock::{Clock as _, ManualClock, SharedClock};
use ward::curated::CuratedTables;
use ward::features::{self, Basis, FeatureRepo, MaterializeOptions};
use ward::store::{Kind, Store};
use ward::synth::{generate_cohort, SynthOptions};

use crate::common::known_by;
use crate::common::proto::{
    self, features_client::FeaturesClient, MaterializeRequest, OnlineRequest,
};
use crate::common::{put_curated, put_curated_bucketed};

const EXAMPLE: &str = include_str!("../../examples/features/readmission.toml");

/// A set without derived tables (its changed patients come from the curated tables alone),
/// with windows short enough that rows move their edges.
const LABS: &str = r#"
[[feature_set]]
name = "labs"
ttl = "90d"

[[feature_set.features]]
name = "creatinine_sum_2d"
kind = "sum"
table = "observations"
filter = { code = "2160-0" }
column = "value_num"
window = "2d"

[[feature_set.features]]
name = "hb_last"
kind = "last"
table = "observations"
filter = { code = "718-7" }
column = "value_num"

[[feature_set.features]]
name = "status_last"
kind = "last"
table = "observations"
column = "status"
ttl = "none"

[[feature_set.features]]
name = "visits_30d"
kind = "count"
table = "encounters"
window = "30d"

[[feature_set.features]]
name = "heart_failure"
kind = "exists"
table = "conditions"
filter = { code = { prefix = ["I50", "I11"] } }

[[feature_set.features]]
name = "age"
kind = "age"
"#;

fn store_at(dir: &std::path::Path) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap(),
    ));
    let shared: SharedClock = clock.clone();
    (Store::open(dir.join("store"), shared).unwrap(), clock)
}

fn cohort(patients: u64, seed: u64) -> CuratedTables {
    generate_cohort(&SynthOptions {
        patients,
        seed,
        ..SynthOptions::default()
    })
}

/// Corrections and retractions that arrive between `from` and `to`: some observations
/// known by `from` are retracted at a random time in `(from, to]`, half of them replaced by
/// a corrected value known at that time; some encounters are retracted (cancelled).
fn correct(
    tables: &mut CuratedTables,
    rng: &mut ChaCha8Rng,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    let span = (to - from).num_seconds().max(1);
    let mut added = Vec::new();
    for (i, o) in tables.observations.iter_mut().enumerate() {
        if o.meta.known_at > from || o.meta.retracted_at.is_some() || !rng.random_bool(0.03) {
            continue;
        }
        let at = from + Duration::seconds(rng.random_range(1..=span));
        o.meta.retracted_at = Some(at);
        if rng.random_bool(0.5) {
            let mut fixed = o.clone();
            fixed.value_num = o.value_num.map(|v| v + 1.0);
            fixed.status = Some("corrected".into());
            fixed.meta.source_id = format!("{}/correction-{i}", o.meta.source_id);
            fixed.meta.known_at = at;
            fixed.meta.retracted_at = None;
            added.push(fixed);
        }
    }
    tables.observations.extend(added);
    for e in &mut tables.encounters {
        if e.meta.known_at <= from && e.meta.retracted_at.is_none() && rng.random_bool(0.02) {
            e.meta.retracted_at = Some(from + Duration::seconds(rng.random_range(1..=span)));
        }
    }
}

/// The range of `known_at` over a cohort.
fn known_range(t: &CuratedTables) -> (DateTime<Utc>, DateTime<Utc>) {
    let all = t
        .encounters
        .iter()
        .map(|r| r.meta.known_at)
        .chain(t.observations.iter().map(|r| r.meta.known_at));
    let (mut lo, mut hi) = (DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC);
    for k in all {
        lo = lo.min(k);
        hi = hi.max(k);
    }
    (lo, hi)
}

/// The property: random cohorts cut by `known_at` into a base and random deltas (new
/// patients, late rows, corrections, retractions), each put as new curated versions and
/// materialized with `materialize_latest`: the first in full (no previous timeline), every
/// later one incrementally from the one before, each the hash of a full materialization.
#[tokio::test]
async fn incremental_steps_equal_full_materializations() {
    let example = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let labs = FeatureRepo::parse(LABS, "labs.toml").unwrap();
    let sets: [(&FeatureRepo, &str); 3] = [
        (&example, "readmission"),
        (&example, "readmission_online"),
        (&labs, "labs"),
    ];
    // Seeds 0 to 3: curated versions bucketed by patient, as `ward ingest` writes them (the
    // timelines follow by buckets); 4 and 5: stored whole (patients found by digesting the
    // changed tables whole). Some steps compute the full timelines in partitions.
    for seed in 0..6u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
        let bucketed = seed < 4;
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = store_at(dir.path());
        let mut full = cohort(rng.random_range(25..60), seed + 11);
        let (lo, hi) = known_range(&full);
        let steps = rng.random_range(3..=4);
        let mut cuts: Vec<DateTime<Utc>> = (0..steps)
            .map(|_| lo + Duration::seconds(rng.random_range(0..(hi - lo).num_seconds())))
            .collect();
        cuts.sort();
        cuts.push(hi);
        let opts = MaterializeOptions {
            batch_size: rng.random_range(50..2000),
            partition_rows: if rng.random_bool(0.5) {
                rng.random_range(200..3000)
            } else {
                MaterializeOptions::default().partition_rows
            },
            ..Default::default()
        };
        let mut previous: Vec<Option<ward::hash::ContentHash>> = vec![None; sets.len()];
        for (step, cut) in cuts.iter().enumerate() {
            if step > 0 {
                correct(&mut full, &mut rng, cuts[step - 1], *cut);
            }
            clock.advance(Duration::minutes(1));
            if bucketed {
                put_curated_bucketed(&store, &known_by(&full, *cut)).await;
            } else {
                put_curated(&store, &known_by(&full, *cut)).await;
            }
            for (i, (repo, set)) in sets.iter().enumerate() {
                let what = format!("seed {seed} step {step} set {set}");
                let inc = features::materialize_latest(&store, repo, set, &opts, false)
                    .await
                    .unwrap();
                match (&previous[i], &inc.basis) {
                    (None, Basis::Full { why }) => {
                        assert!(why.contains("no previous timeline"), "{what}: {why}")
                    }
                    (Some(p), Basis::Incremental { previous }) => assert_eq!(p, previous, "{what}"),
                    // Another set's timeline of the same rows (both empty early on) is the
                    // same version, its lineage the first writer's: not one to build on.
                    (Some(p), Basis::Full { why }) if why.contains("another definition") => {
                        let m = store.manifest(p).unwrap();
                        assert_ne!(
                            m.lineage.definition,
                            Some(repo.set(set).unwrap().definition_hash()),
                            "{what}"
                        );
                    }
                    (p, b) => panic!("{what}: previous {p:?}, basis {b:?}"),
                }
                let fresh = features::materialize_latest(&store, repo, set, &opts, true)
                    .await
                    .unwrap();
                assert_eq!(inc.hash, fresh.hash, "{what}");
                assert_eq!(inc.rows, fresh.rows, "{what}");
                assert!(matches!(fresh.basis, Basis::Full { .. }), "{what}");
                if step > 0 {
                    assert!(!fresh.created, "{what}: the full one was stored already");
                }
                if matches!(inc.basis, Basis::Incremental { .. }) {
                    // Only the changed patients were computed.
                    assert_eq!(inc.recomputed, inc.changed.len().min(inc.recomputed));
                }
                previous[i] = Some(inc.hash);
            }
        }
    }
}

/// After one patient's new rows, an incremental materialization over bucketed curated
/// versions reads and writes only that patient's bucket of the timeline: the new timeline's
/// bucket digests differ from the previous one's in that bucket alone, its unchanged groups
/// are the previous version's files (hard links), and it is the version a full
/// materialization stores; online lookups name it.
#[tokio::test]
async fn one_patients_change_rewrites_one_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = store_at(dir.path());
    let repo = FeatureRepo::parse(LABS, "labs.toml").unwrap();
    let mut tables = cohort(1200, 9);
    put_curated_bucketed(&store, &tables).await;
    let opts = MaterializeOptions::default();
    let first = features::materialize_latest(&store, &repo, "labs", &opts, false)
        .await
        .unwrap();
    let before = store
        .bucket_layout(&first.hash)
        .unwrap()
        .expect("a bucketed timeline");
    let online = ward::lookup::Online::new(store.clone());
    assert_eq!(online.refresh("labs").await.unwrap(), first.hash);
    assert!(before.groups.len() > 2, "{} groups", before.groups.len());

    // One new hemoglobin result for one patient.
    let mut o = tables
        .observations
        .iter()
        .find(|o| o.code.code == "718-7")
        .expect("a hemoglobin result")
        .clone();
    let patient = o.patient_id.clone();
    o.value_num = Some(4.2);
    o.effective_time += Duration::days(1);
    o.meta.known_at += Duration::days(1);
    o.meta.source_id = format!("{}/again", o.meta.source_id);
    o.observation_id = format!("{}-again", o.observation_id);
    tables.observations.push(o);
    clock.advance(Duration::minutes(1));
    put_curated_bucketed(&store, &tables).await;

    let inc = features::materialize_latest(&store, &repo, "labs", &opts, false)
        .await
        .unwrap();
    assert_eq!(
        inc.basis,
        Basis::Incremental {
            previous: first.hash
        }
    );
    assert_eq!(inc.changed, vec![patient.clone()]);
    assert_eq!(inc.recomputed, 1);
    assert!(inc.reused >= 1199 - 1, "reused {}", inc.reused);
    let after = store.bucket_layout(&inc.hash).unwrap().expect("bucketed");
    let bucket = ward::hash::bucketed::bucket_of(Some(patient.as_bytes()), after.buckets);
    let differ: Vec<usize> = (0..after.digests.len())
        .filter(|i| before.digests[*i] != after.digests[*i])
        .collect();
    assert_eq!(differ, vec![bucket as usize]);
    // Storage grows with the change: every group but the one holding the bucket is the
    // previous version's files.
    let data = dir
        .path()
        .join("store/versions")
        .join(inc.hash.hex())
        .join("data/data");
    let (mut shared, mut new) = (0, 0);
    for f in std::fs::read_dir(&data).unwrap() {
        let meta = f.unwrap().metadata().unwrap();
        if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
            shared += 1;
        } else {
            new += 1;
        }
    }
    assert_eq!(new, 1, "one group rewritten ({shared} shared)");
    assert_eq!(shared, after.groups.len() - 1);

    let full = features::materialize_latest(&store, &repo, "labs", &opts, true)
        .await
        .unwrap();
    assert_eq!(full.hash, inc.hash);
    assert_eq!(full.rows, inc.rows);
    assert_eq!(
        ward::features::rebuild(&store, &inc.hash).await.unwrap(),
        inc.hash
    );

    // Online: the changed patient applied in place (read from its bucket), the answer
    // naming the new timeline and equal to the new timeline's loaded whole.
    assert_eq!(online.apply("labs", &inc).await.unwrap(), inc.hash);
    let serving = online.snapshot("labs").unwrap();
    let whole = ward::lookup::Serving::load(&store, &inc.hash)
        .await
        .unwrap();
    let at = clock.now() + Duration::days(400);
    let ids = vec![patient.clone(), tables.patients[0].patient_id.clone()];
    let (a, b) = (
        serving.answer(&ids, &[], at).unwrap(),
        whole.answer(&ids, &[], at).unwrap(),
    );
    assert_eq!(a.timeline, inc.hash);
    for (x, y) in a.patients.iter().zip(&b.patients) {
        assert_eq!(x.values, y.values, "patient {}", x.patient_id);
    }
}

/// A change that touches more than a quarter of the buckets is materialized in full (it
/// would read and rewrite most of the timeline anyway), saying why; the timeline is the
/// same version.
#[tokio::test]
async fn a_change_of_most_buckets_is_computed_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = store_at(dir.path());
    let repo = FeatureRepo::parse(LABS, "labs.toml").unwrap();
    put_curated_bucketed(&store, &cohort(200, 4)).await;
    let opts = MaterializeOptions::default();
    features::materialize_latest(&store, &repo, "labs", &opts, false)
        .await
        .unwrap();
    clock.advance(Duration::minutes(1));
    put_curated_bucketed(&store, &cohort(600, 5)).await;
    let out = features::materialize_latest(&store, &repo, "labs", &opts, false)
        .await
        .unwrap();
    assert!(
        matches!(&out.basis, Basis::Full { why } if why.contains("buckets changed")),
        "{:?}",
        out.basis
    );
    let full = features::materialize_latest(&store, &repo, "labs", &opts, true)
        .await
        .unwrap();
    assert_eq!(out.hash, full.hash);
}

/// Curated versions that did not change give the previous timeline, no patient computed;
/// another definition or knowledge, or `full`, gives a full materialization saying why.
#[tokio::test]
async fn the_choice_between_incremental_and_full() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _clock) = store_at(dir.path());
    let repo = FeatureRepo::parse(LABS, "labs.toml").unwrap();
    put_curated(&store, &cohort(30, 3)).await;
    let opts = MaterializeOptions::default();
    let first = features::materialize_latest(&store, &repo, "labs", &opts, false)
        .await
        .unwrap();
    let again = features::materialize_latest(&store, &repo, "labs", &opts, false)
        .await
        .unwrap();
    assert_eq!(
        again.basis,
        Basis::Incremental {
            previous: first.hash
        }
    );
    assert_eq!((again.hash, again.recomputed), (first.hash, 0));
    assert!(again.changed.is_empty() && again.reused > 0);

    let forced = features::materialize_latest(&store, &repo, "labs", &opts, true)
        .await
        .unwrap();
    assert_eq!(forced.hash, first.hash);
    assert!(matches!(&forced.basis, Basis::Full { why } if why.contains("asked for")));

    let occurred = MaterializeOptions {
        knowledge: features::Knowledge::AsOccurred,
        ..Default::default()
    };
    let other = features::materialize_latest(&store, &repo, "labs", &occurred, false)
        .await
        .unwrap();
    assert!(
        matches!(&other.basis, Basis::Full { why } if why.contains("as known, this one as occurred")),
        "{:?}",
        other.basis
    );

    // Another definition under the same set name.
    let changed = LABS.replace("window = \"2d\"", "window = \"3d\"");
    let repo2 = FeatureRepo::parse(&changed, "labs.toml").unwrap();
    let redefined = features::materialize_latest(&store, &repo2, "labs", &opts, false)
        .await
        .unwrap();
    assert!(
        matches!(&redefined.basis, Basis::Full { why } if why.contains("another definition")),
        "{:?}",
        redefined.basis
    );
}

fn ward(store: &std::path::Path, args: &[&str]) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "ward {args:?}: {stderr}");
    (stdout, stderr)
}

fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or_default().trim().to_string()
}

/// `ward materialize` is incremental by default and says so; `--full` gives the same hash;
/// the incremental timeline rebuilds to its hash, verifies, and training sets read it.
#[tokio::test]
async fn ward_materialize_incremental_rebuild_verify_and_training() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = store_at(dir.path());
    let root = dir.path().join("store");
    let features = crate::common::crate_dir().join("examples/features/readmission.toml");
    let features = features.to_str().unwrap();
    let full = cohort(40, 8);
    let (lo, hi) = known_range(&full);
    put_curated(&store, &known_by(&full, lo + (hi - lo) / 2)).await;
    let args = [
        "materialize",
        "--features",
        features,
        "--set",
        "readmission",
    ];
    let (out, err) = ward(&root, &args);
    let first = last_line(&out);
    assert!(
        err.contains("full: no previous timeline of set readmission"),
        "{err}"
    );

    clock.advance(Duration::minutes(1));
    put_curated(&store, &full).await;
    let (out, err) = ward(&root, &args);
    let inc = last_line(&out);
    assert!(err.contains(&format!("incremental from {first}")), "{err}");
    assert!(err.contains("patients recomputed"), "{err}");
    assert_ne!(inc, first);

    let mut forced = args.to_vec();
    forced.push("--full");
    let (out, err) = ward(&root, &forced);
    assert_eq!(
        last_line(&out),
        inc,
        "a full materialization gives the same timeline"
    );
    assert!(
        err.contains("full: a full materialization was asked for"),
        "{err}"
    );

    let (out, _) = ward(&root, &["rebuild", &inc]);
    assert_eq!(last_line(&out), inc);
    ward(&root, &["verify", &inc]);

    let rows = dir.path().join("rows.csv");
    let mut csv = String::from("patient_id,timestamp\n");
    for p in full.patients.iter().take(10) {
        csv.push_str(&format!("{},{}\n", p.patient_id, hi.format("%Y-%m-%d")));
    }
    std::fs::write(&rows, csv).unwrap();
    let (out, _) = ward(
        &root,
        &[
            "historical",
            "--set",
            "readmission",
            "--timeline",
            &inc,
            "--entities",
            rows.to_str().unwrap(),
        ],
    );
    let training = last_line(&out);
    let reopened = Store::open(&root, Arc::new(ManualClock::new(hi))).unwrap();
    let m = reopened
        .manifest(&training.parse().expect("a training hash"))
        .unwrap();
    assert_eq!(m.kind, Kind::Training);
    assert_eq!(m.rows, 10);
    assert!(m.lineage.inputs.contains(&inc.parse().unwrap()));
    let (out, _) = ward(&root, &["rebuild", &training]);
    assert_eq!(last_line(&out), training);
}

/// The service's Materialize builds on the newest timeline unless `full`; online lookups
/// then answer from the new timeline and name it.
#[tokio::test]
async fn service_materialize_is_incremental_and_online_names_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = store_at(dir.path());
    let full = cohort(40, 12);
    let (lo, hi) = known_range(&full);
    put_curated(&store, &known_by(&full, lo + (hi - lo) / 2)).await;
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let cfg = ward::service::ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let server = ward::service::Server::bind(&cfg, store.clone(), repo)
        .await
        .unwrap();
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = FeaturesClient::new(channel);
    let materialize = |full: bool| MaterializeRequest {
        feature_set: "readmission_online".into(),
        as_occurred: false,
        full,
        entity: String::new(),
    };
    let patients: Vec<String> = full.patients.iter().map(|p| p.patient_id.clone()).collect();
    let online = || OnlineRequest {
        feature_set: "readmission_online".into(),
        patient_ids: patients.clone(),
        as_of: hi.to_rfc3339(),
        features: vec![],
    };

    let first = c
        .materialize(materialize(false))
        .await
        .unwrap()
        .into_inner();
    assert!(first.previous.is_empty());
    assert!(
        first.full_reason.contains("no previous timeline"),
        "{}",
        first.full_reason
    );
    let before = c.get_online_features(online()).await.unwrap().into_inner();
    assert_eq!(before.timeline, first.timeline);

    clock.advance(Duration::minutes(1));
    put_curated(&store, &full).await;
    let inc = c
        .materialize(materialize(false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.previous, first.timeline);
    assert!(inc.full_reason.is_empty());
    assert!(inc.patients > 0 && inc.reused + inc.patients >= 1);
    let after = c.get_online_features(online()).await.unwrap().into_inner();
    assert_eq!(
        after.timeline, inc.timeline,
        "the answer names the new timeline"
    );
    assert_ne!(
        after.patients, before.patients,
        "new rows changed some values"
    );

    let forced = c.materialize(materialize(true)).await.unwrap().into_inner();
    assert_eq!(forced.timeline, inc.timeline);
    assert!(forced.previous.is_empty() && !forced.full_reason.is_empty());
    assert!(!forced.created);

    // The online answers equal those of an index loaded whole from the new timeline.
    let reloaded = ward::lookup::Online::new(store.clone());
    let whole = reloaded
        .get("readmission_online", &patients, &[], Some(hi))
        .await
        .unwrap();
    assert_eq!(whole.timeline.to_string(), after.timeline);
    let whole: Vec<proto::PatientFeatures> = whole.patients.iter().map(proto_values).collect();
    assert_eq!(whole, after.patients);
    let _ = tx.send(());
    served.await.unwrap().unwrap();
}

/// A patient's values as the service sends them.
pub(crate) fn proto_values(p: &features::PatientFeatures) -> proto::PatientFeatures {
    proto::PatientFeatures {
        patient_id: p.patient_id.clone(),
        person_id: p.person_id.clone().unwrap_or_default(),
        values: p
            .values
            .iter()
            .map(|(_, v)| proto::FeatureValue {
                status: match v.status {
                    features::Status::Present => proto::ValueStatus::Present as i32,
                    features::Status::NoData => proto::ValueStatus::NoData as i32,
                    features::Status::OutsideTtl => proto::ValueStatus::OutsideTtl as i32,
                },
                value: v.value.as_ref().map(|x| match x {
                    features::Value::Num(n) => proto::feature_value::Value::Num(*n),
                    features::Value::Text(t) => proto::feature_value::Value::Text(t.clone()),
                }),
            })
            .collect(),
    }
}

/// After incremental materializations the online index loads only the changed patients
/// (`Online::apply`): the index of the others is shared with the timeline served before,
/// and every answer equals that of the new timeline loaded whole, naming it.
#[tokio::test]
async fn online_applies_changed_patients_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = store_at(dir.path());
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let mut full = cohort(60, 21);
    let (lo, hi) = known_range(&full);
    let cuts = [lo + (hi - lo) / 2, lo + (hi - lo) * 3 / 4, hi];
    let online = ward::lookup::Online::new(store.clone());
    let patients: Vec<String> = full.patients.iter().map(|p| p.patient_id.clone()).collect();
    let opts = MaterializeOptions::default();
    let set = "readmission_online";
    let mut base = None;
    for (step, cut) in cuts.iter().enumerate() {
        if step > 0 {
            correct(&mut full, &mut rng, cuts[step - 1], *cut);
        }
        clock.advance(Duration::minutes(1));
        put_curated(&store, &known_by(&full, *cut)).await;
        let out = features::materialize_latest(&store, &repo, set, &opts, false)
            .await
            .unwrap();
        assert_eq!(online.apply(set, &out).await.unwrap(), out.hash);
        let serving = online.snapshot(set).unwrap();
        assert_eq!(serving.timeline, out.hash);
        match step {
            0 => {
                assert_eq!(serving.overlaid(), 0, "the first is loaded whole");
                base = Some(serving.index.clone());
            }
            _ => {
                assert!(matches!(out.basis, Basis::Incremental { .. }));
                assert!(
                    !out.changed.is_empty(),
                    "step {step}: some patients changed"
                );
                assert!(serving.overlaid() >= out.changed.len());
                assert!(
                    Arc::ptr_eq(base.as_ref().unwrap(), &serving.index),
                    "step {step}: the unchanged patients' index is shared"
                );
            }
        }
        let whole = ward::lookup::Serving::load(&store, &out.hash)
            .await
            .unwrap();
        for at in [*cut, *cut - Duration::days(200), hi + Duration::days(30)] {
            let a = serving.answer(&patients, &[], at).unwrap();
            let b = whole.answer(&patients, &[], at).unwrap();
            assert_eq!(a.timeline, out.hash);
            assert_eq!(a.features, b.features);
            for (x, y) in a.patients.iter().zip(&b.patients) {
                assert_eq!(x.patient_id, y.patient_id);
                assert_eq!(
                    x.values, y.values,
                    "step {step} patient {} at {at}",
                    x.patient_id
                );
            }
        }
    }
}
