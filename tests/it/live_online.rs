//! Online after a seal (`docs/live.md`): lab results streamed over MLLP into a running
//! server reach its online lookups with no command: the seal interval commits them, and
//! the server materializes its online set incrementally and applies the changed patients.
//! The answer then equals a full materialization of the same store, loaded whole.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tonic::transport::Channel;
use ward::features::{self, FeatureRepo, MaterializeOptions};
use ward::ingest::pipeline;
use ward::live::{seal, LiveConfig};

use crate::common::proto::{features_client::FeaturesClient, OnlineRequest};
use crate::live::{cohort, feed_dir, field, hl7_opts, store_at, stream_all};

const EXAMPLE: &str = include_str!("../../examples/features/readmission.toml");
const SET: &str = "readmission_online";

#[test]
fn streamed_labs_reach_online_lookups_after_the_interval_seal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msgs = cohort(40, 11, &dir.path().join("cohort"));
    // The last lab results (ORU) are streamed; everything before them is the history,
    // ingested in a batch first.
    let oru: Vec<usize> = (0..msgs.len())
        .filter(|&i| field(&msgs[i], "MSH", 9).starts_with("ORU"))
        .collect();
    assert!(oru.len() >= 20, "the cohort has lab results");
    let cut = oru[oru.len() - 15];
    let (history, streamed) = msgs.split_at(cut);
    let streamed: Vec<Vec<u8>> = streamed
        .iter()
        .filter(|m| field(m, "MSH", 9).starts_with("ORU"))
        .cloned()
        .collect();
    let mut patients: Vec<String> = streamed
        .iter()
        .map(|m| {
            field(m, "PID", 3)
                .split('^')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    patients.sort();
    patients.dedup();
    // Asked just after the last streamed result (labs have a time to live).
    let as_of = streamed
        .iter()
        .map(|m| {
            let t = field(m, "MSH", 7);
            chrono::NaiveDateTime::parse_from_str(&t[..14.min(t.len())], "%Y%m%d%H%M%S")
                .expect("MSH-7")
                .and_utc()
        })
        .max()
        .expect("streamed")
        + chrono::Duration::hours(1);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = store_at(&dir.path().join("store"));
    let file = dir.path().join("history.hl7");
    std::fs::write(
        &file,
        seal::batch_bytes(history.iter().map(|m| m.as_slice())),
    )
    .expect("write");
    rt.block_on(pipeline::ingest(&store, &[file], &hl7_opts(), None))
        .expect("history ingest");
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").expect("repo");
    let first = rt
        .block_on(features::materialize_latest(
            &store,
            &repo,
            SET,
            &MaterializeOptions::default(),
            false,
        ))
        .expect("materialize");

    // The server, its MLLP listener sealing every 0.2 s, and the update after each seal.
    let cfg = ward::service::ServeConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        ..Default::default()
    };
    let server = rt
        .block_on(ward::service::Server::bind(
            &cfg,
            store.clone(),
            repo.clone(),
        ))
        .expect("bind");
    let addr = server.local_addr();
    let live_cfg = LiveConfig {
        seal_interval_secs: Some(0.2),
        ..LiveConfig::default()
    };
    let running = rt
        .block_on(async {
            ward::live::serve(
                "127.0.0.1:0".parse().expect("addr"),
                &store,
                &live_cfg,
                None,
                None,
                None,
            )
            .await
        })
        .expect("listener");
    let _guard = rt.enter();
    server.update_online_after_seals(running.sealed.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let served = rt.spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let mut client = rt
        .block_on(async {
            let channel = Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .expect("connect");
            Ok::<_, tonic::transport::Error>(FeaturesClient::new(channel))
        })
        .expect("client");
    let ask = |c: &mut FeaturesClient<Channel>| {
        rt.block_on(c.get_online_features(OnlineRequest {
            feature_set: SET.into(),
            patient_ids: patients.clone(),
            as_of: as_of.to_rfc3339(),
            features: vec![],
        }))
        .expect("online")
        .into_inner()
    };
    let before = ask(&mut client);
    assert_eq!(before.timeline, first.hash.to_string());

    let acks = stream_all(running.addr, vec![streamed.clone()]);
    assert!(acks.iter().all(|(_, code)| code == "AA"), "{acks:?}");
    let acked = Instant::now();
    let last = ward::live::wal::scan(&feed_dir(&store), false)
        .expect("scan")
        .records
        .last()
        .expect("logged")
        .seq;
    // Once everything is sealed, the full materialization of the store is what the online
    // set must reach.
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let through = std::fs::read(feed_dir(&store).join("sealed.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["through"].as_u64());
        if through.is_some_and(|t| t >= last) {
            break;
        }
        assert!(Instant::now() < give_up, "not sealed within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let full = rt
        .block_on(features::materialize_latest(
            &store,
            &repo,
            SET,
            &MaterializeOptions::default(),
            true,
        ))
        .expect("full materialization");
    assert_ne!(full.hash, first.hash, "the streamed labs changed the set");
    let after = loop {
        let a = ask(&mut client);
        if a.timeline == full.hash.to_string() {
            break a;
        }
        assert!(
            Instant::now() < give_up,
            "online still answers from {} ({} expected) 60 s after the ACKs",
            a.timeline,
            full.hash
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "online answered from the new timeline {:?} after the last ACK (debug build, 0.2 s seal interval)",
        acked.elapsed()
    );
    assert_ne!(
        after.patients,
        before.patients,
        "some value changed: {:#?}",
        after.patients.first()
    );

    // The updated answers equal those of an index loaded whole from the full timeline.
    let whole = rt
        .block_on(ward::lookup::Online::new(store.clone()).get(SET, &patients, &[], Some(as_of)))
        .expect("whole");
    assert_eq!(whole.timeline, full.hash);
    let whole: Vec<crate::common::proto::PatientFeatures> = whole
        .patients
        .iter()
        .map(crate::incremental::proto_values)
        .collect();
    assert_eq!(whole, after.patients);
    let _ = tx.send(());
    rt.block_on(served).expect("join").expect("served");
}
