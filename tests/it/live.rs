//! Live feeds (`docs/live.md`): a synthetic HL7 v2 cohort streamed over several MLLP
//! connections, sealed, equals `ward ingest` of the same messages hash for hash; resends
//! change nothing; bad messages get AE/AR and land in quarantine; a crash seal is resumed
//! without ingesting twice; and `ward serve --mllp` killed with SIGKILL while a sender
//! streams loses no acknowledged message and applies none twice
//! (`WARD_LIVE_CRASH_TRIALS=100 cargo test --test it live_crash` for the documented run).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use ward::clock::{ManualClock, SharedClock};
use ward::ingest::pipeline::{self, Format, IngestOptions};
use ward::ingest::Context;
use ward::live::mllp::{self, Deframer, Event};
use ward::live::seal::{self, SealOptions};
use ward::live::{wal, LiveConfig};
use ward::store::Store;
use ward::synth::{self, SynthFormat, SynthOptions};

pub(crate) fn t0() -> DateTime<Utc> {
    "2025-03-01T00:00:00Z".parse().expect("time")
}

pub(crate) fn store_at(dir: &Path) -> Store {
    let clock: SharedClock = Arc::new(ManualClock::new(t0()));
    Store::open(dir, clock).expect("store opens")
}

/// A synthetic cohort as HL7 v2 files (in `dir`) and as its messages, in file order.
pub(crate) fn cohort(patients: u64, seed: u64, dir: &Path) -> Vec<Vec<u8>> {
    let opts = SynthOptions {
        patients,
        seed,
        chunk_size: 25,
        ..SynthOptions::default()
    };
    let summary = synth::write(&opts, SynthFormat::Hl7v2, dir, None).expect("synth");
    let mut msgs = Vec::new();
    for f in &summary.files {
        let text = std::fs::read_to_string(f).expect("read");
        for m in text.split("MSH|").filter(|m| !m.is_empty()) {
            msgs.push(format!("MSH|{m}").into_bytes());
        }
    }
    let ids: BTreeSet<String> = msgs.iter().map(|m| field(m, "MSH", 10)).collect();
    assert_eq!(
        ids.len(),
        msgs.len(),
        "control ids are unique in the cohort"
    );
    msgs
}

/// Field `n` of the first segment `seg` of a message (MSH counted as HL7 does).
pub(crate) fn field(msg: &[u8], seg: &str, n: usize) -> String {
    let text = String::from_utf8_lossy(msg);
    let line = text
        .split('\r')
        .find(|l| l.starts_with(seg))
        .unwrap_or_default();
    let idx = if seg == "MSH" { n - 1 } else { n };
    line.split('|').nth(idx).unwrap_or_default().to_string()
}

pub(crate) fn patient(msg: &[u8]) -> String {
    field(msg, "PID", 3)
        .split('^')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The messages split over `n` connections by patient (each keeps its patients' messages in
/// order), patients dealt to connections at random.
pub(crate) fn deal(msgs: &[Vec<u8>], n: usize, seed: u64) -> Vec<Vec<Vec<u8>>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut conn_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = vec![Vec::new(); n];
    for m in msgs {
        let c = *conn_of
            .entry(patient(m))
            .or_insert_with(|| rng.random_range(0..n));
        out[c].push(m.clone());
    }
    out
}

/// One MLLP client connection.
struct Sender {
    stream: TcpStream,
    de: Deframer,
}

impl Sender {
    fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Sender {
            stream,
            de: Deframer::new(1 << 20),
        })
    }

    /// Sends one framed message and returns the ACK's text.
    fn send_raw(&mut self, framed: &[u8]) -> std::io::Result<String> {
        self.stream.write_all(framed)?;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(ev) = self.de.next_event() {
                return match ev {
                    Event::Frame { bytes, .. } => Ok(String::from_utf8_lossy(&bytes).into()),
                    other => Err(std::io::Error::other(format!("{other:?}"))),
                };
            }
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.de.push(&buf[..n]);
        }
    }

    fn send(&mut self, msg: &[u8]) -> std::io::Result<String> {
        self.send_raw(&mllp::frame(msg))
    }
}

/// MSA-1 and MSA-2 of an ACK.
fn msa(ack: &str) -> (String, String) {
    let line = ack
        .split('\r')
        .find(|l| l.starts_with("MSA|"))
        .unwrap_or_default();
    let f: Vec<&str> = line.split('|').collect();
    (
        f.get(1).unwrap_or(&"").to_string(),
        f.get(2).unwrap_or(&"").to_string(),
    )
}

/// Sends each connection's messages in order, the connections concurrently; returns every
/// (control id, ACK code).
pub(crate) fn stream_all(addr: SocketAddr, conns: Vec<Vec<Vec<u8>>>) -> Vec<(String, String)> {
    let handles: Vec<_> = conns
        .into_iter()
        .map(|msgs| {
            std::thread::spawn(move || {
                let mut s = Sender::connect(addr).expect("connect");
                msgs.iter()
                    .map(|m| {
                        let (code, id) = msa(&s.send(m).expect("ack"));
                        assert_eq!(id, field(m, "MSH", 10), "the ACK names the message");
                        (id, code)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("sender thread"))
        .collect()
}

/// The options of a batch ingest of `format` at [`t0`].
pub(crate) fn ingest_opts(format: Format) -> IngestOptions {
    IngestOptions {
        format,
        mapping: None,
        mapping_text: None,
        max_bad: None,
        context: Context::new(t0()),
        read: Default::default(),
    }
}

pub(crate) fn hl7_opts() -> IngestOptions {
    ingest_opts(Format::Hl7v2)
}

/// The curated heads of one batch ingest of `inputs` (files or folders) as `format` into a
/// new store at `dir`.
pub(crate) fn batch_heads(
    rt: &tokio::runtime::Runtime,
    inputs: &[PathBuf],
    format: Format,
    dir: &Path,
) -> BTreeMap<String, String> {
    let batch = store_at(dir);
    rt.block_on(pipeline::ingest(&batch, inputs, &ingest_opts(format), None))
        .expect("batch ingest");
    heads(&batch)
}

/// The curated heads of a store, by table.
pub(crate) fn heads(store: &Store) -> BTreeMap<String, String> {
    ward::curated::Table::ALL
        .iter()
        .filter_map(|t| {
            store
                .head(t.name())
                .expect("head")
                .map(|h| (t.name().to_string(), h.hash.to_string()))
        })
        .collect()
}

pub(crate) fn feed_dir(store: &Store) -> PathBuf {
    wal::feed_dir(store.root(), ward::live::DEFAULT_FEED)
}

/// A runtime, a store under `dir` (the clock at [`t0`]) and an MLLP listener on it.
fn listening(dir: &Path) -> (tokio::runtime::Runtime, Store, ward::live::Running) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let live = store_at(&dir.join("live"));
    let running = rt
        .block_on(ward::live::serve(
            "127.0.0.1:0".parse().expect("addr"),
            &live,
            &LiveConfig::default(),
            None,
            None,
            None,
        ))
        .expect("listener");
    (rt, live, running)
}

#[test]
fn streamed_cohort_seals_to_the_batch_ingest_hashes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let msgs = cohort(40, 7, &tmp.path().join("cohort"));
    let (rt, live, running) = listening(tmp.path());
    let acks = stream_all(running.addr, deal(&msgs, 4, 1));
    assert_eq!(acks.len(), msgs.len());
    assert!(acks.iter().all(|(_, c)| c == "AA"), "every ACK is AA");

    // The log in sequence order: exactly the messages, once each.
    let scan = wal::scan(&feed_dir(&live), false).expect("scan");
    assert_eq!(scan.records.len(), msgs.len());
    let in_log: Vec<Vec<u8>> = scan.records.iter().map(|r| r.message.clone()).collect();
    let report = rt
        .block_on(seal::seal(&live, "mllp", &SealOptions::default()))
        .expect("seal");
    assert_eq!(report.range, Some((1, msgs.len() as u64)));
    assert_eq!(report.messages, msgs.len() as u64);
    let sealed = heads(&live);
    assert!(sealed.contains_key("encounters") && sealed.contains_key("observations"));

    // `ward ingest` of one file holding the same messages in the same order.
    let file = tmp.path().join("batch").join("mllp.hl7");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &file,
        seal::batch_bytes(in_log.iter().map(|m| m.as_slice())),
    )
    .expect("write");
    let batch = store_at(&tmp.path().join("batch-store"));
    rt.block_on(pipeline::ingest(&batch, &[file], &hl7_opts(), None))
        .expect("batch ingest");
    assert_eq!(heads(&batch), sealed, "sealed = batch of the same messages");
    // ... and of the cohort as synthesized (each patient's messages kept their order).
    let original = store_at(&tmp.path().join("original-store"));
    rt.block_on(pipeline::ingest(
        &original,
        &[tmp.path().join("cohort")],
        &hl7_opts(),
        None,
    ))
    .expect("ingest");
    assert_eq!(
        heads(&original),
        sealed,
        "sealed = batch of the synthesized files"
    );

    // The lineage names the sealed range.
    let enc = live.head("encounters").expect("head").expect("some");
    let manifest = live.manifest(&enc.hash).expect("manifest");
    assert_eq!(
        manifest.lineage.params["feed"]["wal"]["to"],
        msgs.len() as u64
    );

    // Resending everything: acknowledged AA, nothing logged, nothing to seal.
    let acks = stream_all(running.addr, vec![msgs.clone()]);
    assert!(acks.iter().all(|(_, c)| c == "AA"));
    assert_eq!(
        wal::scan(&feed_dir(&live), false)
            .expect("scan")
            .records
            .len(),
        msgs.len()
    );
    let again = rt
        .block_on(seal::seal(&live, "mllp", &SealOptions::default()))
        .expect("seal");
    assert_eq!(again.range, None);
    assert_eq!(heads(&live), sealed);

    // Bad messages: AE (the batch parser's check: no PID-3) and AR (no MSH at all, no MSH-10,
    // two messages in one frame); all in quarantine after the seal, curated unchanged.
    let mut s = Sender::connect(running.addr).expect("connect");
    let ae = s
        .send(b"MSH|^~\\&|LAB|HOSP|WARD|DC|20240101120000||ADT^A01|BAD1|P|2.5.1\rPV1|1|I\r")
        .expect("ack");
    assert_eq!(msa(&ae).0, "AE", "{ae}");
    assert!(ae.contains("\rERR|") && ae.contains("PID-3"), "{ae}");
    assert!(ae.starts_with("MSH|^~\\&|WARD|DC|LAB|HOSP|"), "{ae}");
    let ar = s.send(b"this is not HL7").expect("ack");
    assert_eq!(msa(&ar).0, "AR", "{ar}");
    let ar2 = s
        .send(b"MSH|^~\\&|LAB|HOSP|WARD|DC|20240101120000||ADT^A08||P|2.5.1\rPID|1||P9\r")
        .expect("ack");
    assert_eq!(msa(&ar2).0, "AR", "{ar2}");
    assert!(ar2.contains("MSH-10"), "{ar2}");
    drop(s);
    let bad = rt
        .block_on(seal::seal(&live, "mllp", &SealOptions::default()))
        .expect("seal");
    assert_eq!((bad.messages, bad.errors, bad.refused), (3, 1, 2));
    let run = bad.ingest.expect("a run");
    let q = run.quarantine.expect("quarantine version");
    let (_, batches) = rt.block_on(live.read(&q)).expect("read quarantine");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert!(rows >= 3, "{rows} quarantined rows");
    assert_eq!(
        *run.bad.get("-/refused").expect("refused"),
        2,
        "{:?}",
        run.bad
    );
    assert_eq!(heads(&live), sealed, "bad messages change no curated table");
}

#[test]
fn a_seal_interrupted_after_its_commit_is_finished_without_ingesting_twice() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let msgs = cohort(15, 3, &tmp.path().join("cohort"));
    let (rt, live, running) = listening(tmp.path());
    stream_all(running.addr, deal(&msgs, 2, 5));
    let first = rt
        .block_on(seal::seal(&live, "mllp", &SealOptions::default()))
        .expect("seal");
    let sealed = heads(&live);
    let rows: Vec<u64> = first
        .ingest
        .as_ref()
        .expect("run")
        .curated
        .iter()
        .map(|c| c.total_rows)
        .collect();
    // The state a crash between the curated commit and `sealed.json` leaves: the intent
    // still there, `sealed.json` not moved. The clock has moved on since.
    let dir = feed_dir(&live);
    wal::write_state(&dir.join("sealed.json"), &wal::Sealed { through: 0 }).expect("state");
    wal::write_state(
        &dir.join("seal-intent.json"),
        &wal::Intent {
            from: 1,
            to: msgs.len() as u64,
            ingested_at: t0(),
        },
    )
    .expect("intent");
    let resumed = rt
        .block_on(seal::seal(&live, "mllp", &SealOptions::default()))
        .expect("seal");
    assert!(resumed.resumed);
    assert_eq!(
        heads(&live),
        sealed,
        "same versions: nothing ingested twice"
    );
    let again: Vec<u64> = resumed
        .ingest
        .expect("run")
        .curated
        .iter()
        .map(|c| c.total_rows)
        .collect();
    assert_eq!(again, rows);
    assert!(!dir.join("seal-intent.json").exists());
    let state: wal::Sealed = wal::read_state(&dir.join("sealed.json"))
        .expect("read")
        .expect("present");
    assert_eq!(state.through, msgs.len() as u64);
}

/// `ward serve --mllp` as a child process; returns it and the MLLP address.
fn spawn_server(store: &Path) -> (Child, SocketAddr) {
    crate::common::spawn_ward_serve(
        store,
        &["--mllp".as_ref(), "127.0.0.1:0".as_ref()],
        "mllp listening on ",
    )
}

#[test]
fn live_crash_kill_9_loses_no_acknowledged_message_and_applies_none_twice() {
    let trials: u64 = std::env::var("WARD_LIVE_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let msgs = cohort(12, 9, &tmp.path().join("cohort"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The batch ingest of the cohort, which every trial's seal must equal.
    let reference = store_at(&tmp.path().join("reference"));
    rt.block_on(pipeline::ingest(
        &reference,
        &[tmp.path().join("cohort")],
        &hl7_opts(),
        None,
    ))
    .expect("ingest");
    let want = heads(&reference);
    for trial in 0..trials {
        let dir = tmp.path().join(format!("trial-{trial}"));
        let store = store_at(&dir);
        drop(store);
        let (mut child, addr) = spawn_server(&dir);
        let conns = deal(&msgs, 3, trial);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1000 + trial);
        let kill_after = Duration::from_millis(rng.random_range(0..400));
        // Stream until the server dies; remember what was acknowledged.
        let senders: Vec<_> = conns
            .iter()
            .cloned()
            .map(|msgs| {
                std::thread::spawn(move || {
                    let mut acked = BTreeSet::new();
                    let Ok(mut s) = Sender::connect(addr) else {
                        return acked;
                    };
                    for m in &msgs {
                        match s.send(m) {
                            Ok(ack) => {
                                let (code, id) = msa(&ack);
                                assert_eq!(code, "AA", "{ack}");
                                acked.insert(id);
                            }
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(kill_after);
        // SIGKILL: no chance to flush or clean up.
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        let acked: BTreeSet<String> = senders
            .into_iter()
            .flat_map(|h| h.join().expect("sender"))
            .collect();
        // Every acknowledged message is in the log after recovery.
        let (mut child, addr) = spawn_server(&dir);
        // The sender resends what was not acknowledged, and (as senders do when unsure)
        // the last acknowledged message of each connection too.
        let resend: Vec<Vec<Vec<u8>>> = conns
            .iter()
            .map(|c| {
                let first_unacked = c
                    .iter()
                    .position(|m| !acked.contains(&field(m, "MSH", 10)))
                    .unwrap_or(c.len());
                c[first_unacked.saturating_sub(1)..].to_vec()
            })
            .collect();
        let acks = stream_all(addr, resend);
        assert!(acks.iter().all(|(_, c)| c == "AA"));
        child.kill().expect("kill");
        child.wait().expect("wait");
        let store = store_at(&dir);
        let scan = wal::scan(&feed_dir(&store), false).expect("scan");
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for r in &scan.records {
            *count.entry(r.control_id.clone()).or_insert(0) += 1;
        }
        for m in &msgs {
            let id = field(m, "MSH", 10);
            assert_eq!(
                count.get(&id),
                Some(&1),
                "trial {trial}: {id} once in the log"
            );
        }
        assert_eq!(scan.records.len(), msgs.len(), "trial {trial}");
        let report = rt
            .block_on(seal::seal(&store, "mllp", &SealOptions::default()))
            .expect("seal");
        assert_eq!(report.messages, msgs.len() as u64);
        assert_eq!(
            heads(&store),
            want,
            "trial {trial}: sealed = the batch ingest"
        );
        eprintln!(
            "trial {trial}: killed after {kill_after:?} with {} of {} acknowledged",
            acked.len(),
            msgs.len()
        );
    }
}

/// With `seal_interval_secs` set, the listener seals on its own: streamed messages become
/// curated versions without `ward seal`, every logged message sealed. The interval may cut
/// the stream into several runs; an ADT update or ORU correction in a later run than the row
/// it changes applies to that row through the HL7 v2 replay state (docs/live.md, "Sealing"),
/// so wherever the cuts fell the sealed tables have the hashes of the batch ingest.
#[test]
fn the_configured_seal_interval_seals_without_a_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msgs = cohort(6, 29, dir.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let live = store_at(&dir.path().join("live"));
    let cfg = LiveConfig {
        seal_interval_secs: Some(0.2),
        ..LiveConfig::default()
    };
    let running = rt
        .block_on(ward::live::serve(
            "127.0.0.1:0".parse().expect("addr"),
            &live,
            &cfg,
            None,
            None,
            None,
        ))
        .expect("listener");
    let acks = stream_all(running.addr, vec![msgs.clone()]);
    assert!(acks.iter().all(|(_, code)| code == "AA"), "{acks:?}");
    // The batch ingest of the same messages, for the hashes to expect.
    let batch = store_at(&dir.path().join("batch"));
    let file = dir
        .path()
        .join("batch")
        .join(ward::live::input_name(ward::live::DEFAULT_FEED));
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, seal::batch_bytes(msgs.iter().map(|m| m.as_slice()))).expect("write");
    rt.block_on(pipeline::ingest(&batch, &[file], &hl7_opts(), None))
        .expect("batch ingest");
    assert!(!heads(&batch).is_empty());
    // No `ward seal`: the interval's task seals every logged record within a few ticks
    // (`sealed.json` reaches the log's last record).
    let last = wal::scan(&feed_dir(&live), false)
        .expect("scan")
        .records
        .last()
        .expect("logged")
        .seq;
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let through = std::fs::read(feed_dir(&live).join("sealed.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["through"].as_u64());
        if through.is_some_and(|t| t >= last) {
            break;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "not sealed within 30 s: sealed through {through:?} of {last}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Nothing is left for a seal, and the versions are there.
    // (The interval's task keeps sealing every 0.2 s: a seal that meets it holding the
    // feed's lock is refused, so try again.)
    let mut tries = 0;
    let r = loop {
        let opts = seal::SealOptions::default();
        match rt.block_on(seal::seal(&live, ward::live::DEFAULT_FEED, &opts)) {
            Ok(r) => break r,
            Err(e) if tries < 50 => {
                tries += 1;
                eprintln!("seal refused ({e}); again");
                std::thread::sleep(std::time::Duration::from_millis(37));
            }
            Err(e) => panic!("seal: {e}"),
        }
    };
    assert_eq!(r.range, None, "everything was sealed by the interval");
    // Every patient of the stream is in the sealed tables, as in the batch.
    let ids = |store: &Store| -> std::collections::BTreeSet<String> {
        let head = store.head("patients").expect("head").expect("patients");
        let (_, batches) = rt.block_on(store.read(&head.hash)).expect("read");
        batches
            .iter()
            .flat_map(|b| {
                let col = b.column_by_name("patient_id").expect("patient_id");
                let col =
                    arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).expect("text");
                arrow::array::AsArray::as_string::<i32>(&col)
                    .iter()
                    .flatten()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(ids(&live), ids(&batch));
    assert!(!ids(&live).is_empty());
    assert_eq!(
        heads(&live),
        heads(&batch),
        "sealed in several runs = the batch ingest"
    );
}
