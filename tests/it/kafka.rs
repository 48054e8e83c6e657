//! Kafka topics into live feeds (`docs/live.md`, "Kafka"), against a real Kafka-protocol
//! broker: `eval "$(.ci/kafka.sh start)"` starts one and exports `WARD_KAFKA_BROKERS`. Without
//! it these tests say so and pass, unless `WARD_REQUIRE_KAFKA=1` (CI), where they fail.
//!
//! A `ward synth --format hl7v2` cohort (and a `fhir-ndjson` one) produced to topics with
//! the Rust client, consumed by the server and sealed, equals one batch `ward ingest` of the
//! same messages hash for hash; a restart resumes after the positions in Ward's log (none
//! lost, none twice, also after a seal removed segments); bad messages are quarantined with
//! their reason and do not stop the partition; each partition's ingests are audited; and
//! `ward serve` killed with SIGKILL mid-consumption logs every message exactly once after a
//! restart (`WARD_KAFKA_CRASH_TRIALS=100 cargo test --test it kafka_crash` for a longer run).
//! Every test uses topics of its own, so they run in parallel against one broker.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use ward::ingest::pipeline::Format;
use ward::live::kafka::{KafkaConfig, TopicConfig, TopicFormat, SOURCE_HEADER};
use ward::live::kafka_wire::{self, Outgoing, PartitionClient};
use ward::live::seal::{self, SealOptions};
use ward::live::{wal, LiveConfig, DEFAULT_FEED, DEFAULT_HTTP_FEED};
use ward::synth::{self, SynthFormat, SynthOptions};

use crate::live::{batch_heads, cohort, deal, field, heads, store_at};

/// The broker's bootstrap address, or `None` (the test then passes, saying it skipped).
fn brokers() -> Option<String> {
    match std::env::var("WARD_KAFKA_BROKERS") {
        Ok(b) if !b.trim().is_empty() => Some(b.trim().to_string()),
        _ => {
            let how = "start a broker with `eval \"$(.ci/kafka.sh start)\"` (it exports WARD_KAFKA_BROKERS)";
            if std::env::var("WARD_REQUIRE_KAFKA").as_deref() == Ok("1") {
                panic!("WARD_REQUIRE_KAFKA=1 but WARD_KAFKA_BROKERS is unset: {how}");
            }
            eprintln!("SKIP: no Kafka broker (WARD_KAFKA_BROKERS is unset): {how}");
            None
        }
    }
}

/// A topic name no other test (or earlier run against the same broker) uses.
fn unique_topic(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "ward-{what}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The bootstrap list of a `WARD_KAFKA_BROKERS` value.
fn bootstrap(brokers: &str) -> Vec<String> {
    brokers.split(',').map(str::to_string).collect()
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    kafka_wire::create_topic(&bootstrap(brokers), "ward-test", topic, partitions)
        .await
        .expect("create topic");
}

/// Produces `values` (each with its headers) to `topic`'s `partition`, in order, 100 to a
/// batch.
async fn produce(brokers: &str, topic: &str, partition: i32, values: &[Outgoing]) {
    produce_batches(brokers, topic, partition, values, 100).await;
}

/// [`produce`] in batches of `per` records (a fetch returns whole batches). The topic may
/// take a moment to have a leader after its creation: retried for a while.
async fn produce_batches(
    brokers: &str,
    topic: &str,
    partition: i32,
    values: &[Outgoing],
    per: usize,
) {
    let mut pc = PartitionClient::new(&bootstrap(brokers), "ward-test", topic, partition);
    for chunk in values.chunks(per) {
        let mut tries = 0;
        loop {
            match pc.produce(chunk).await {
                Ok(_) => break,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("produce to {topic}/{partition}: {e}; again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("produce to {topic}/{partition}: {e}"),
            }
        }
    }
}

/// Plain messages (no headers).
fn plain(msgs: &[Vec<u8>]) -> Vec<Outgoing> {
    msgs.iter().map(|m| (Some(m.clone()), Vec::new())).collect()
}

/// A message with the `ward-source` header.
fn with_source(value: Option<&[u8]>, source: &[u8]) -> Outgoing {
    (
        value.map(<[u8]>::to_vec),
        vec![(SOURCE_HEADER.to_string(), source.to_vec())],
    )
}

fn kafka_config(brokers: &str, topics: Vec<TopicConfig>) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.split(',').map(str::to_string).collect(),
        topics,
        fetch_wait_ms: 100,
        metadata_interval_secs: 0.5,
        ..KafkaConfig::default()
    }
}

fn topic(name: &str, format: TopicFormat) -> TopicConfig {
    TopicConfig {
        name: name.to_string(),
        format,
        feed: None,
        source: None,
    }
}

/// The records of a feed's log (read while a server may be appending).
fn logged(store: &Path, feed: &str) -> Vec<wal::Record> {
    wal::scan(&wal::feed_dir(store, feed), false)
        .map(|s| s.records)
        .unwrap_or_default()
}

/// Waits until the feed's log holds at least `n` records.
fn wait_logged(store: &Path, feed: &str, n: usize, within: Duration) -> Vec<wal::Record> {
    let give_up = Instant::now() + within;
    loop {
        let records = logged(store, feed);
        if records.len() >= n {
            return records;
        }
        assert!(
            Instant::now() < give_up,
            "{} of {n} messages in feed {feed}'s log after {within:?}",
            records.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every record carries its Kafka position, and no position is logged twice.
fn assert_positions_once(records: &[wal::Record]) {
    let mut seen = BTreeSet::new();
    for r in records {
        let p = r.position.clone().expect("a Kafka record has its position");
        assert!(seen.insert(p.clone()), "position {p:?} logged twice");
    }
}

#[test]
fn kafka_batches_compressed_with_gzip_snappy_or_lz4_are_consumed() {
    use kafka_protocol::records::Compression;
    let Some(brokers) = brokers() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let msgs = cohort(12, 11, &tmp.path().join("cohort"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let name = unique_topic("codecs");
    let codecs = [Compression::Gzip, Compression::Snappy, Compression::Lz4];
    let parts = deal(&msgs, codecs.len(), 3);
    assert!(
        parts.iter().all(|p| !p.is_empty()),
        "every codec gets messages"
    );
    rt.block_on(async {
        create_topic(&brokers, &name, codecs.len() as i32).await;
        for (p, (m, codec)) in parts.iter().zip(codecs).enumerate() {
            let mut pc = PartitionClient::new(&bootstrap(&brokers), "ward-test", &name, p as i32);
            for chunk in plain(m).chunks(20) {
                let mut tries = 0;
                while let Err(e) = pc.produce_compressed(chunk, codec).await {
                    tries += 1;
                    assert!(tries < 50, "produce {codec:?} to {name}/{p}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let live = store_at(&tmp.path().join("live"));
    let mut wals = BTreeMap::new();
    let _running = rt
        .block_on(ward::live::serve_kafka(
            &live,
            &LiveConfig::default(),
            &kafka_config(&brokers, vec![topic(&name, TopicFormat::Hl7v2)]),
            &mut wals,
            &BTreeSet::new(),
            None,
        ))
        .expect("consumers");
    let records = wait_logged(
        live.root(),
        DEFAULT_FEED,
        msgs.len(),
        Duration::from_secs(120),
    );
    assert_eq!(records.len(), msgs.len(), "each message logged once");
    assert_positions_once(&records);
    for (p, (m, codec)) in parts.iter().zip(codecs).enumerate() {
        let got: Vec<&[u8]> = records
            .iter()
            .filter(|r| {
                r.position
                    .as_ref()
                    .is_some_and(|pos| pos.partition == p as i32)
            })
            .map(|r| r.message.as_slice())
            .collect();
        let sent: Vec<&[u8]> = m.iter().map(Vec::as_slice).collect();
        assert_eq!(
            got, sent,
            "partition {p} ({codec:?}): the messages, in order"
        );
    }
}

#[test]
fn kafka_hl7v2_topic_seals_to_the_batch_ingest_hashes() {
    let Some(brokers) = brokers() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let msgs = cohort(40, 7, &tmp.path().join("cohort"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let name = unique_topic("hl7");
    let parts = deal(&msgs, 3, 1);
    rt.block_on(async {
        create_topic(&brokers, &name, 3).await;
        for (p, m) in parts.iter().enumerate() {
            produce(&brokers, &name, p as i32, &plain(m)).await;
        }
    });
    let live = store_at(&tmp.path().join("live"));
    let mut wals = BTreeMap::new();
    let running = rt
        .block_on(ward::live::serve_kafka(
            &live,
            &LiveConfig::default(),
            &kafka_config(&brokers, vec![topic(&name, TopicFormat::Hl7v2)]),
            &mut wals,
            &BTreeSet::new(),
            None,
        ))
        .expect("consumers");
    assert_eq!(
        running.feeds[&name], DEFAULT_FEED,
        "HL7 v2 goes to the MLLP feed"
    );
    let records = wait_logged(
        live.root(),
        DEFAULT_FEED,
        msgs.len(),
        Duration::from_secs(120),
    );
    assert_eq!(records.len(), msgs.len(), "each message logged once");
    assert_positions_once(&records);
    // Each partition's messages were logged in offset order, as the resume needs.
    for p in 0..3 {
        let offsets: Vec<i64> = records
            .iter()
            .filter_map(|r| r.position.as_ref())
            .filter(|pos| pos.partition == p)
            .map(|pos| pos.offset)
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "partition {p}: {offsets:?}"
        );
        assert_eq!(offsets.len(), parts[p as usize].len());
        assert_eq!(
            wals[DEFAULT_FEED].logged_position(&name, p),
            offsets.last().copied()
        );
    }
    let report = rt
        .block_on(seal::seal(&live, DEFAULT_FEED, &SealOptions::default()))
        .expect("seal");
    assert_eq!(report.messages, msgs.len() as u64);
    let sealed = heads(&live);
    assert!(sealed.contains_key("encounters") && sealed.contains_key("observations"));
    // One batch `ward ingest` of the same messages, in log order ...
    let file = tmp
        .path()
        .join("batch")
        .join(ward::live::input_name(DEFAULT_FEED));
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &file,
        seal::batch_bytes(records.iter().map(|r| r.message.as_slice())),
    )
    .expect("write");
    assert_eq!(
        batch_heads(&rt, &[file], Format::Hl7v2, &tmp.path().join("b1")),
        sealed,
        "sealed = one batch ingest of the same messages"
    );
    // ... and of the synthesized files (each patient's messages kept their order).
    assert_eq!(
        batch_heads(
            &rt,
            &[tmp.path().join("cohort")],
            Format::Hl7v2,
            &tmp.path().join("b2")
        ),
        sealed,
        "sealed = one batch ingest of the synthesized files"
    );
}

#[test]
fn kafka_fhir_topic_seals_to_the_batch_ingest_hashes() {
    let Some(brokers) = brokers() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let cohort_dir = tmp.path().join("cohort");
    let o = SynthOptions {
        patients: 15,
        seed: 11,
        chunk_size: 25,
        ..SynthOptions::default()
    };
    let summary = synth::write(&o, SynthFormat::FhirNdjson, &cohort_dir, None).expect("synth");
    // Each file's lines as messages named by the `ward-source` header: one resource per
    // message, NDJSON chunks of several lines, and collection Bundles (pretty-printed).
    let mut values: Vec<Outgoing> = Vec::new();
    let mut n = 0usize;
    for f in &summary.files {
        let source = f.file_name().expect("name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f).expect("read");
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for chunk in lines.chunks(4) {
            n += 1;
            let source = source.as_bytes();
            match n % 3 {
                0 => {
                    for l in chunk {
                        values.push(with_source(Some(l.as_bytes()), source));
                    }
                }
                1 => values.push(with_source(
                    Some((chunk.join("\n") + "\n").as_bytes()),
                    source,
                )),
                _ => {
                    let entries: Vec<Value> = chunk
                        .iter()
                        .map(|l| json!({"resource": serde_json::from_str::<Value>(l).expect("json")}))
                        .collect();
                    let bundle =
                        json!({"resourceType": "Bundle", "type": "collection", "entry": entries});
                    let bundle = serde_json::to_vec_pretty(&bundle).expect("json");
                    values.push(with_source(Some(&bundle), source));
                }
            }
        }
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let name = unique_topic("fhir");
    rt.block_on(async {
        create_topic(&brokers, &name, 2).await;
        let half = values.len() / 2;
        produce(&brokers, &name, 0, &values[..half]).await;
        produce(&brokers, &name, 1, &values[half..]).await;
    });
    let live = store_at(&tmp.path().join("live"));
    let running = rt
        .block_on(ward::live::serve_kafka(
            &live,
            &LiveConfig::default(),
            &kafka_config(&brokers, vec![topic(&name, TopicFormat::Fhir)]),
            &mut BTreeMap::new(),
            &BTreeSet::new(),
            None,
        ))
        .expect("consumers");
    assert_eq!(
        running.feeds[&name], DEFAULT_HTTP_FEED,
        "FHIR goes to the HTTP feed"
    );
    let records = wait_logged(
        live.root(),
        DEFAULT_HTTP_FEED,
        values.len(),
        Duration::from_secs(120),
    );
    assert_eq!(records.len(), values.len());
    assert_positions_once(&records);
    assert!(
        records.iter().all(|r| r.status == wal::Status::Accepted),
        "every message accepted"
    );
    let report = rt
        .block_on(seal::seal(
            &live,
            DEFAULT_HTTP_FEED,
            &SealOptions::default(),
        ))
        .expect("seal");
    assert_eq!(report.messages, values.len() as u64);
    let sealed = heads(&live);
    assert!(sealed.contains_key("observations"), "{sealed:?}");
    assert_eq!(
        batch_heads(
            &rt,
            &[cohort_dir],
            Format::FhirNdjson,
            &tmp.path().join("batch")
        ),
        sealed,
        "sealed = one batch ingest of the synthesized files"
    );
}

#[test]
fn kafka_bad_messages_are_quarantined_audited_and_do_not_stop_the_partition() {
    use ward::security::audit::{AuditLog, AuditOptions, Durability};
    let Some(brokers) = brokers() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let hl7 = unique_topic("bad-hl7");
    let fhir = unique_topic("bad-fhir");
    let msg = |id: &str, patient: &str| {
        format!("MSH|^~\\&|LAB|HOSP|WARD|DC|20240101120000||ORU^R01^ORU_R01|{id}|P|2.5.1\rPID|1||{patient}^^^H^MR\r")
            .into_bytes()
    };
    // No PID-3: the batch parser's own check makes it AE, applied as a batch would.
    let no_pid = b"MSH|^~\\&|LAB|HOSP|WARD|DC|20240101120000||ADT^A01|E1|P|2.5.1\rPV1|1|I\r";
    let hl7_values: Vec<Outgoing> = vec![
        (Some(msg("G1", "P1")), vec![]),
        (Some(b"this is not HL7".to_vec()), vec![]),
        (None, vec![]),
        (Some(no_pid.to_vec()), vec![]),
        (Some(msg("G2", "P2")), vec![]),
        (Some(msg("G1", "P1")), vec![]), // a resend: logged once
    ];
    let patient =
        br#"{"resourceType":"Patient","id":"k1","gender":"female","birthDate":"1970-01-01"}"#;
    let fhir_values: Vec<Outgoing> = vec![
        (Some(patient.to_vec()), vec![]),
        (Some(b"{not json".to_vec()), vec![]),
        with_source(Some(patient), b"../etc"),
        (None, vec![]),
        with_source(Some(patient), b"Patient.ndjson"),
    ];
    rt.block_on(async {
        create_topic(&brokers, &hl7, 1).await;
        create_topic(&brokers, &fhir, 1).await;
        produce(&brokers, &hl7, 0, &hl7_values).await;
        produce(&brokers, &fhir, 0, &fhir_values).await;
    });
    let live = store_at(&tmp.path().join("live"));
    let audit_dir = tmp.path().join("audit");
    let log = AuditLog::open(
        &audit_dir,
        live.clock().clone(),
        AuditOptions {
            durability: Durability::Sync,
            ..AuditOptions::default()
        },
    )
    .expect("audit");
    let mut cfg = kafka_config(
        &brokers,
        vec![
            topic(&hl7, TopicFormat::Hl7v2),
            topic(&fhir, TopicFormat::Fhir),
        ],
    );
    cfg.audit_interval_secs = 0.2;
    let mut wals = BTreeMap::new();
    rt.block_on(ward::live::serve_kafka(
        &live,
        &LiveConfig::default(),
        &cfg,
        &mut wals,
        &BTreeSet::new(),
        Some(Arc::new(log)),
    ))
    .expect("consumers");
    // The partitions moved past every bad message: the last offsets are logged (the resend
    // of G1, offset 5, is recognised and not logged again).
    let give_up = Instant::now() + Duration::from_secs(60);
    while wals[DEFAULT_FEED].logged_position(&hl7, 0) != Some(4)
        || wals[DEFAULT_HTTP_FEED].logged_position(&fhir, 0) != Some(4)
    {
        assert!(
            Instant::now() < give_up,
            "the partitions did not move past the bad messages"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let h = wait_logged(live.root(), DEFAULT_FEED, 5, Duration::from_secs(10));
    let statuses: Vec<wal::Status> = h.iter().map(|r| r.status).collect();
    use wal::Status::{Accepted as AA, Error as AE, Refused as AR};
    assert_eq!(statuses, vec![AA, AR, AR, AE, AA]);
    let f = wait_logged(live.root(), DEFAULT_HTTP_FEED, 5, Duration::from_secs(10));
    let statuses: Vec<wal::Status> = f.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![AA, AE, AR, AR, AA]);

    // Sealed: the bad ones in quarantine with their reasons, the good ones curated.
    let quarantine = |report: &seal::SealReport| -> Vec<String> {
        let run = report.ingest.as_ref().expect("a run");
        let q = run.quarantine.expect("a quarantine version");
        let (_, batches) = rt.block_on(live.read(&q)).expect("read quarantine");
        let mut out = Vec::new();
        for b in &batches {
            let reason = b.column_by_name("reason").expect("reason");
            let detail = b.column_by_name("detail").expect("detail");
            let reason =
                arrow::compute::cast(reason, &arrow::datatypes::DataType::Utf8).expect("text");
            let detail =
                arrow::compute::cast(detail, &arrow::datatypes::DataType::Utf8).expect("text");
            let reason = arrow::array::AsArray::as_string::<i32>(&reason);
            let detail = arrow::array::AsArray::as_string::<i32>(&detail);
            for i in 0..b.num_rows() {
                out.push(format!("{}: {}", reason.value(i), detail.value(i)));
            }
        }
        out
    };
    let r = rt
        .block_on(seal::seal(&live, DEFAULT_FEED, &SealOptions::default()))
        .expect("seal");
    assert_eq!((r.messages, r.errors, r.refused), (5, 1, 2));
    let q = quarantine(&r);
    assert_eq!(
        q.iter().filter(|l| l.starts_with("refused:")).count(),
        2,
        "{q:?}"
    );
    assert!(
        q.iter().any(|l| l.contains("PID")),
        "the AE message's bad part: {q:?}"
    );
    let r = rt
        .block_on(seal::seal(
            &live,
            DEFAULT_HTTP_FEED,
            &SealOptions::default(),
        ))
        .expect("seal");
    assert_eq!((r.messages, r.errors, r.refused), (5, 1, 2));
    let q = quarantine(&r);
    assert!(q.iter().any(|l| l.contains("empty message")), "{q:?}");
    assert!(q.iter().any(|l| l.contains(SOURCE_HEADER)), "{q:?}");
    assert!(
        q.iter().any(|l| !l.starts_with("refused:")),
        "the line that is not JSON, quarantined by the batch parser: {q:?}"
    );
    assert!(heads(&live).contains_key("patients"));

    // Audited per partition: the principal names the brokers, topic and partition.
    let give_up = Instant::now() + Duration::from_secs(30);
    let totals = loop {
        let mut totals: BTreeMap<String, [u64; 4]> = BTreeMap::new();
        for r in crate::common::audit_records(&audit_dir)
            .iter()
            .filter(|r| r["rpc"] == "kafka")
        {
            assert_eq!(r["action"], "ingest");
            let principal = r["principal"].as_str().unwrap_or("").to_string();
            let reason = r["reason"].as_str().unwrap_or("");
            let t = totals.entry(principal).or_default();
            for (i, key) in ["AA ", "AE ", "AR "].iter().enumerate() {
                t[i] += number_after(reason, key);
            }
            t[3] += number_before(reason, " resends");
        }
        let done = totals.values().map(|t| t[0] + t[1] + t[2]).sum::<u64>() >= 10;
        if done || Instant::now() > give_up {
            break totals;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        totals[&format!("{brokers}/{hl7}/0")],
        [2, 1, 2, 1],
        "{totals:?}"
    );
    assert_eq!(
        totals[&format!("{brokers}/{fhir}/0")],
        [2, 1, 2, 0],
        "{totals:?}"
    );
}

fn number_after(text: &str, key: &str) -> u64 {
    text.split_once(key)
        .and_then(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn number_before(text: &str, key: &str) -> u64 {
    text.split_once(key)
        .and_then(|(head, _)| head.rsplit(' ').next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// A `ward serve` child process and what it printed to standard error.
struct Server {
    child: Child,
    stderr: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// [`Server::resumed_at`], waiting up to 30 s for the partition to start.
    fn wait_resumed(&self, topic: &str, p: i32) -> Option<i64> {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.resumed_at(topic, p);
            if r.is_some() || Instant::now() > give_up {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The offset it said partition `p` of `topic` resumes at (after the log's position).
    fn resumed_at(&self, topic: &str, p: i32) -> Option<i64> {
        let prefix = format!("kafka {topic}/{p}: resuming at offset ");
        self.stderr
            .lock()
            .expect("lines")
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    }
}

/// `ward serve` consuming `topic` (`format`) from `brokers` as a child process, `live` in
/// its configuration's `[live]` and `kafka` in its `[kafka]`; returns once it is serving.
fn spawn_server(
    store: &Path,
    brokers: &str,
    topic: &str,
    format: &str,
    live: &str,
    kafka: &str,
) -> Server {
    let config = store.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[live]\n{live}\n[kafka]\nbrokers = [\"{}\"]\nfetch_wait_ms = 100\n{kafka}\n[[kafka.topic]]\nname = \"{topic}\"\nformat = \"{format}\"\n",
            brokers.replace(',', "\", \"")
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(store)
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ward serve");
    let stderr = child.stderr.take().expect("stderr");
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = lines.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("listening on ") {
                if let Some(t) = tx.take() {
                    let _ = t.send(());
                }
            }
            if let Ok(mut l) = keep.lock() {
                l.push(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("ward serve started");
    Server {
        child,
        stderr: lines,
    }
}

fn kill(server: Server) {
    let mut child = server.child;
    child.kill().expect("kill -9");
    child.wait().expect("wait");
}

#[test]
fn kafka_a_restart_resumes_after_the_logged_positions_also_after_a_seal() {
    let Some(brokers) = brokers() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let msgs = cohort(10, 5, &tmp.path().join("cohort"));
    let third = msgs.len() / 3;
    let (a, rest) = msgs.split_at(third);
    let (b, c) = rest.split_at(third);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let name = unique_topic("resume");
    rt.block_on(create_topic(&brokers, &name, 1));
    let dir = tmp.path().join("store");
    drop(store_at(&dir));
    // Small segments, so that the seal below removes some (and their positions move to
    // `sealed-positions.json`).
    let extra = "segment_bytes = 4096";
    let ids = |records: &[wal::Record]| -> Vec<String> {
        records.iter().map(|r| r.control_id.clone()).collect()
    };
    let want = |m: &[Vec<u8>]| -> Vec<String> { m.iter().map(|m| field(m, "MSH", 10)).collect() };

    rt.block_on(produce(&brokers, &name, 0, &plain(a)));
    let server = spawn_server(&dir, &brokers, &name, "hl7v2", extra, "");
    wait_logged(&dir, DEFAULT_FEED, a.len(), Duration::from_secs(60));
    kill(server);

    // Restarted: only what came after, read from the position in the log (not read again
    // and dropped as resends).
    rt.block_on(produce(&brokers, &name, 0, &plain(b)));
    let server = spawn_server(&dir, &brokers, &name, "hl7v2", extra, "");
    assert_eq!(server.wait_resumed(&name, 0), Some(a.len() as i64));
    wait_logged(
        &dir,
        DEFAULT_FEED,
        a.len() + b.len(),
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(500));
    kill(server);
    let records = logged(&dir, DEFAULT_FEED);
    assert_eq!(
        ids(&records),
        [want(a), want(b)].concat(),
        "none lost, none twice"
    );
    assert_positions_once(&records);

    // Sealed: segments removed, their positions kept aside; a restart still resumes after.
    let store = store_at(&dir);
    let first = rt
        .block_on(seal::seal(&store, DEFAULT_FEED, &SealOptions::default()))
        .expect("seal");
    assert_eq!(first.messages, (a.len() + b.len()) as u64);
    assert!(first.removed_segments > 0, "the seal removed segments");
    let positions: wal::SealedPositions = wal::read_state(&wal::SealedPositions::path(
        &wal::feed_dir(&dir, DEFAULT_FEED),
    ))
    .expect("read")
    .expect("sealed-positions.json");
    assert_eq!(positions.positions.len(), 1);
    assert_eq!(positions.positions[0].topic, name);

    rt.block_on(produce(&brokers, &name, 0, &plain(c)));
    let server = spawn_server(&dir, &brokers, &name, "hl7v2", extra, "");
    assert_eq!(
        server.wait_resumed(&name, 0),
        Some((a.len() + b.len()) as i64),
        "resumed from sealed-positions.json"
    );
    let give_up = Instant::now() + Duration::from_secs(60);
    let unsealed = loop {
        let unsealed: Vec<wal::Record> = logged(&dir, DEFAULT_FEED)
            .into_iter()
            .filter(|r| r.seq > first.range.expect("range").1)
            .collect();
        if unsealed.len() >= c.len() || Instant::now() > give_up {
            break unsealed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(500));
    kill(server);
    let unsealed_now: Vec<wal::Record> = logged(&dir, DEFAULT_FEED)
        .into_iter()
        .filter(|r| r.seq > first.range.expect("range").1)
        .collect();
    assert_eq!(unsealed_now.len(), unsealed.len());
    assert_eq!(
        ids(&unsealed_now),
        want(c),
        "after the seal: only the new messages"
    );
    let second = rt
        .block_on(seal::seal(&store, DEFAULT_FEED, &SealOptions::default()))
        .expect("seal");
    assert_eq!(second.messages, c.len() as u64);
}

/// Fetches of at most 2 KiB (one batch of a few messages each, as produced): many group
/// commits, so a kill lands mid-consumption.
const SMALL_FETCHES: &str = "fetch_max_bytes = 2048";

#[test]
fn kafka_crash_kill_9_mid_consumption_logs_every_message_once() {
    let Some(brokers) = brokers() else { return };
    let trials: u64 = std::env::var("WARD_KAFKA_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Even trials stream an HL7 v2 cohort, odd ones a FHIR one: FHIR messages have no control
    // id, so there only the logged positions keep a message from being logged twice.
    let hl7_dir = tmp.path().join("hl7");
    let hl7: Vec<Outgoing> = plain(&cohort(12, 9, &hl7_dir));
    let fhir_dir = tmp.path().join("fhir");
    let o = SynthOptions {
        patients: 8,
        seed: 9,
        chunk_size: 25,
        ..SynthOptions::default()
    };
    let summary = synth::write(&o, SynthFormat::FhirNdjson, &fhir_dir, None).expect("synth");
    let mut fhir: Vec<Outgoing> = Vec::new();
    for f in &summary.files {
        let source = f.file_name().expect("name").to_string_lossy().into_owned();
        for line in std::fs::read_to_string(f).expect("read").lines() {
            if !line.trim().is_empty() {
                fhir.push(with_source(Some(line.as_bytes()), source.as_bytes()));
            }
        }
    }
    let want_hl7 = batch_heads(&rt, &[hl7_dir], Format::Hl7v2, &tmp.path().join("ref-hl7"));
    let want_fhir = batch_heads(
        &rt,
        &[fhir_dir],
        Format::FhirNdjson,
        &tmp.path().join("ref-fhir"),
    );
    for trial in 0..trials {
        let (format, feed, msgs, want) = if trial % 2 == 0 {
            ("hl7v2", DEFAULT_FEED, &hl7, &want_hl7)
        } else {
            ("fhir", DEFAULT_HTTP_FEED, &fhir, &want_fhir)
        };
        let name = unique_topic("crash");
        rt.block_on(create_topic(&brokers, &name, 3));
        // HL7 v2 dealt by patient (each patient's messages in order); FHIR in turns.
        let parts: Vec<Vec<Outgoing>> = if format == "hl7v2" {
            let raw: Vec<Vec<u8>> = msgs.iter().filter_map(|(v, _)| v.clone()).collect();
            deal(&raw, 3, trial).iter().map(|p| plain(p)).collect()
        } else {
            (0..3)
                .map(|p| msgs.iter().skip(p).step_by(3).cloned().collect())
                .collect()
        };
        for (p, m) in parts.iter().enumerate() {
            rt.block_on(produce_batches(&brokers, &name, p as i32, m, 3));
        }
        let dir = tmp.path().join(format!("trial-{trial}"));
        drop(store_at(&dir));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1000 + trial);
        let server = spawn_server(&dir, &brokers, &name, format, "", SMALL_FETCHES);
        // Kill once the log holds a random number of the messages (0: at once), so the kill
        // lands mid-consumption whatever the machine's speed.
        let target = rng.random_range(0..msgs.len());
        let started = Instant::now();
        while target > 0
            && logged(&dir, feed).len() < target
            && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let kill_after = started.elapsed();
        // SIGKILL: no chance to flush anything.
        kill(server);
        let before = logged(&dir, feed);
        let server = spawn_server(&dir, &brokers, &name, format, "", SMALL_FETCHES);
        // Each partition resumes right after its last logged message.
        for p in 0..3 {
            let n = before
                .iter()
                .filter(|r| r.position.as_ref().is_some_and(|x| x.partition == p))
                .count() as i64;
            let give_up = Instant::now() + Duration::from_secs(30);
            let mut resumed = server.resumed_at(&name, p);
            while n > 0 && resumed.is_none() && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(20));
                resumed = server.resumed_at(&name, p);
            }
            assert_eq!(
                resumed,
                (n > 0).then_some(n),
                "trial {trial}: partition {p}"
            );
        }
        let records = wait_logged(&dir, feed, msgs.len(), Duration::from_secs(120));
        // Whatever is still in flight would be a duplicate: give it time to show.
        std::thread::sleep(Duration::from_millis(500));
        kill(server);
        let records_after = logged(&dir, feed);
        assert_eq!(
            records_after.len(),
            records.len(),
            "trial {trial}: nothing more after all were logged"
        );
        assert_eq!(
            records.len(),
            msgs.len(),
            "trial {trial}: every message once"
        );
        assert_positions_once(&records);
        let store = store_at(&dir);
        let report = rt
            .block_on(seal::seal(&store, feed, &SealOptions::default()))
            .expect("seal");
        assert_eq!(report.messages, msgs.len() as u64);
        assert_eq!(
            &heads(&store),
            want,
            "trial {trial}: sealed = the batch ingest"
        );
        eprintln!(
            "trial {trial} ({format}): killed after {kill_after:?} (aiming at {target}) with {} of {} messages logged",
            before.len(),
            msgs.len()
        );
    }
}

/// Throughput from Kafka into the durable log: a backlog of HL7 v2 messages (a synthetic
/// cohort, `WARD_KAFKA_BENCH_PATIENTS` patients, default 1000) on 4 partitions, consumed
/// until every message is logged; prints messages/s. Run:
/// `WARD_KAFKA_BENCH_PATIENTS=1000 cargo test --release --test it kafka_throughput -- --ignored --nocapture`
/// (a debug build measures the debug build).
#[test]
#[ignore = "a measurement: run with --ignored (docs/live.md, Kafka)"]
fn kafka_throughput_into_the_durable_log() {
    let Some(brokers) = brokers() else { return };
    let patients: u64 = std::env::var("WARD_KAFKA_BENCH_PATIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let msgs = cohort(patients, 3, &tmp.path().join("cohort"));
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let name = unique_topic("bench");
    let parts = deal(&msgs, 4, 1);
    let produced = Instant::now();
    rt.block_on(async {
        create_topic(&brokers, &name, 4).await;
        for (p, m) in parts.iter().enumerate() {
            produce_batches(&brokers, &name, p as i32, &plain(m), 500).await;
        }
    });
    eprintln!(
        "produced {} messages ({} MB) in {:.2} s",
        msgs.len(),
        bytes / 1_000_000,
        produced.elapsed().as_secs_f64()
    );
    let live = store_at(&tmp.path().join("live"));
    let mut wals = BTreeMap::new();
    let started = Instant::now();
    rt.block_on(ward::live::serve_kafka(
        &live,
        &LiveConfig::default(),
        &kafka_config(&brokers, vec![topic(&name, TopicFormat::Hl7v2)]),
        &mut wals,
        &BTreeSet::new(),
        None,
    ))
    .expect("consumers");
    // Done when every partition's last offset is durably logged (offsets start at 0).
    let wal = wals[DEFAULT_FEED].clone();
    let give_up = Instant::now() + Duration::from_secs(1800);
    while !parts.iter().enumerate().all(|(p, m)| {
        wal.logged_position(&name, p as i32) == Some(m.len() as i64 - 1) || m.is_empty()
    }) {
        assert!(Instant::now() < give_up, "not all logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let logged = wal::scan(&wal::feed_dir(live.root(), DEFAULT_FEED), false)
        .expect("scan")
        .records
        .len();
    assert_eq!(logged, msgs.len());
    eprintln!(
        "kafka -> durable log: {} messages in {secs:.2} s = {:.0} messages/s ({:.1} MB/s), 4 partitions, build {}",
        msgs.len(),
        msgs.len() as f64 / secs,
        bytes as f64 / secs / 1e6,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
}
