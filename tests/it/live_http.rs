//! FHIR pushed over HTTP (`docs/live.md`, "FHIR over HTTP"): a synthetic FHIR cohort pushed
//! in several POSTs (NDJSON chunks and Bundles) seals to the hashes of one batch `ward
//! ingest` of the same files; bad input gets an OperationOutcome naming where and nothing is
//! logged; `ward serve --http` killed with SIGKILL loses no payload it answered 2xx; with
//! authentication on, a push needs the `ingest` permission and every attempt is audited.
//! The client is a hand-written HTTP/1.1 request over `std::net::TcpStream`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use ward::ingest::pipeline::Format;
use ward::live::seal::{self, SealOptions};
use ward::live::{wal, LiveConfig, DEFAULT_HTTP_FEED};
use ward::store::Store;
use ward::synth::{self, SynthFormat, SynthOptions};

use crate::common::{request, Answer};
use crate::live::{batch_heads, heads, store_at};

/// A synthetic FHIR NDJSON cohort in `dir`: (file name, its non-blank lines) per file.
fn cohort(patients: u64, seed: u64, dir: &Path) -> Vec<(String, Vec<String>)> {
    let opts = SynthOptions {
        patients,
        seed,
        chunk_size: 25,
        ..SynthOptions::default()
    };
    let summary = synth::write(&opts, SynthFormat::FhirNdjson, dir, None).expect("synth");
    summary
        .files
        .iter()
        .map(|f| {
            let name = f.file_name().expect("name").to_string_lossy().into_owned();
            let text = std::fs::read_to_string(f).expect("read");
            let lines = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect();
            (name, lines)
        })
        .collect()
}

/// One POST: the file it belongs to, its content type and body.
#[derive(Clone)]
struct Payload {
    source: String,
    content_type: &'static str,
    body: Vec<u8>,
}

/// The cohort cut into chunks of `per` lines, every other chunk wrapped in a Bundle
/// (alternately a collection and a transaction of PUTs).
fn payloads(files: &[(String, Vec<String>)], per: usize) -> Vec<Payload> {
    let mut out = Vec::new();
    let mut n = 0usize;
    for (name, lines) in files {
        for chunk in lines.chunks(per) {
            n += 1;
            let p = if n.is_multiple_of(2) {
                let transaction = n.is_multiple_of(4);
                let entries: Vec<Value> = chunk
                    .iter()
                    .map(|l| {
                        let res: Value = serde_json::from_str(l).expect("json");
                        if transaction {
                            let url = format!(
                                "{}/{}",
                                res["resourceType"].as_str().unwrap_or(""),
                                res["id"].as_str().unwrap_or("")
                            );
                            json!({"resource": res, "request": {"method": "PUT", "url": url}})
                        } else {
                            json!({"resource": res})
                        }
                    })
                    .collect();
                let bundle = json!({
                    "resourceType": "Bundle",
                    "type": if transaction { "transaction" } else { "collection" },
                    "entry": entries,
                });
                Payload {
                    source: name.clone(),
                    content_type: "application/fhir+json",
                    body: serde_json::to_vec_pretty(&bundle).expect("json"),
                }
            } else {
                Payload {
                    source: name.clone(),
                    content_type: if n.is_multiple_of(3) {
                        "application/x-ndjson"
                    } else {
                        "application/fhir+ndjson"
                    },
                    body: (chunk.join("\n") + "\n").into_bytes(),
                }
            };
            out.push(p);
        }
    }
    out
}

impl Answer {
    /// The OperationOutcome's issues.
    fn issues(&self) -> Vec<Value> {
        let v = self.json();
        assert_eq!(v["resourceType"], "OperationOutcome", "{}", self.body);
        v["issue"].as_array().cloned().unwrap_or_default()
    }
}

fn post(addr: SocketAddr, p: &Payload, extra: &[(&str, &str)]) -> std::io::Result<Answer> {
    let mut headers = vec![("Content-Type", p.content_type)];
    headers.extend_from_slice(extra);
    request(
        addr,
        "POST",
        &format!("/fhir?source={}", p.source),
        &headers,
        &p.body,
    )
}

/// A runtime, a store under `dir` and an HTTP listener on it (no authentication).
fn listening(dir: &Path, cfg: LiveConfig) -> (tokio::runtime::Runtime, Store, SocketAddr) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let live = store_at(dir);
    let running = rt
        .block_on(ward::live::serve_http(
            "127.0.0.1:0".parse().expect("addr"),
            &live,
            &cfg,
            None,
            None,
            None,
        ))
        .expect("listener");
    (rt, live, running.addr)
}

fn http_feed_dir(store: &Path) -> PathBuf {
    wal::feed_dir(store, DEFAULT_HTTP_FEED)
}

#[test]
fn pushed_cohort_seals_to_the_batch_ingest_hashes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = cohort(30, 11, &tmp.path().join("cohort"));
    let pushes = payloads(&files, 40);
    assert!(pushes.len() >= 8, "several POSTs: {}", pushes.len());
    assert!(pushes
        .iter()
        .any(|p| p.content_type == "application/fhir+json"));
    let (rt, live, addr) = listening(&tmp.path().join("live"), LiveConfig::default());
    // Three senders at once, each with its share of the POSTs.
    let handles: Vec<_> = (0..3)
        .map(|k| {
            let mine: Vec<Payload> = pushes.iter().skip(k).step_by(3).cloned().collect();
            std::thread::spawn(move || {
                for p in &mine {
                    let a = post(addr, p, &[]).expect("post");
                    assert_eq!(a.status, 200, "{}", a.body);
                    assert!(a.headers.contains_key("x-ward-wal-seq"));
                    let sent: Option<Value> = serde_json::from_slice(&p.body).ok();
                    if let Some(sent) = sent.filter(|v| v["type"] == "transaction") {
                        // A transaction gets a transaction-response Bundle, an entry per
                        // entry, in order (PUT: 200 OK, at the request's url).
                        let got = a.json();
                        assert_eq!(got["resourceType"], "Bundle", "{}", a.body);
                        assert_eq!(got["type"], "transaction-response");
                        let (got, sent) = (
                            got["entry"].as_array().cloned().unwrap_or_default(),
                            sent["entry"].as_array().cloned().unwrap_or_default(),
                        );
                        assert_eq!(got.len(), sent.len());
                        for (g, s) in got.iter().zip(&sent) {
                            assert_eq!(g["response"]["status"], "200 OK");
                            assert_eq!(g["response"]["location"], s["request"]["url"]);
                        }
                        continue;
                    }
                    let issues = a.issues();
                    assert_eq!(issues[0]["severity"], "information");
                    let d = issues[0]["diagnostics"].as_str().unwrap_or("");
                    assert!(d.contains("logged durably as record"), "{d}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("sender");
    }
    let scan = wal::scan(&http_feed_dir(live.root()), false).expect("scan");
    assert_eq!(scan.records.len(), pushes.len());
    let report = rt
        .block_on(seal::seal(
            &live,
            DEFAULT_HTTP_FEED,
            &SealOptions::default(),
        ))
        .expect("seal");
    assert_eq!(report.range, Some((1, pushes.len() as u64)));
    assert_eq!(
        report.senders.get("127.0.0.1"),
        Some(&(pushes.len() as u64))
    );
    let sealed = heads(&live);
    assert!(sealed.contains_key("patients") && sealed.contains_key("observations"));
    let want = batch_heads(
        &rt,
        &[tmp.path().join("cohort")],
        Format::FhirNdjson,
        &tmp.path().join("batch"),
    );
    assert_eq!(sealed, want, "sealed = one batch ingest of the same files");
    // The sealed versions name the feed's range in their lineage.
    let head = live.head("patients").expect("head").expect("patients");
    let manifest = live.manifest(&head.hash).expect("manifest");
    assert_eq!(
        manifest.lineage.params["feed"]["name"],
        json!(DEFAULT_HTTP_FEED)
    );
}

#[test]
fn bad_input_gets_an_operation_outcome_naming_where_and_is_not_logged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = LiveConfig {
        max_body_bytes: 4096,
        ..LiveConfig::default()
    };
    let (_rt, live, addr) = listening(&tmp.path().join("live"), cfg);
    let patient = r#"{"resourceType":"Patient","id":"p1","gender":"female"}"#;
    let obs = r#"{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2160-0"}]},"effectiveDateTime":"2024-01-01T00:00:00Z","valueQuantity":{"value":1.1,"unit":"mg/dL"}}"#;
    let p = |ct: &'static str, body: String| Payload {
        source: "Patient.ndjson".into(),
        content_type: ct,
        body: body.into_bytes(),
    };
    let bundle = |ty: &str, entries: &[&str]| {
        let e: Vec<String> = entries
            .iter()
            .map(|r| format!(r#"{{"resource":{r}}}"#))
            .collect();
        format!(
            r#"{{"resourceType":"Bundle","type":"{ty}","entry":[{}]}}"#,
            e.join(",")
        )
    };
    // (payload, status, issue code, where: location or expression)
    let cases = [
        (
            p("application/fhir+json", "{\"resourceType\":".into()),
            400,
            "structure",
            "line 1",
        ),
        (
            p("application/fhir+json", patient.into()),
            422,
            "invalid",
            "resourceType",
        ),
        (
            p("application/fhir+json", bundle("searchset", &[patient])),
            422,
            "not-supported",
            "Bundle.type",
        ),
        (
            p(
                "application/fhir+json",
                bundle("transaction", &[patient, "[1]"]),
            ),
            422,
            "structure",
            "Bundle.entry[1]",
        ),
        // The batch parser's own check: an Observation without a subject sinks the
        // whole transaction.
        (
            p(
                "application/fhir+json",
                bundle("transaction", &[patient, obs]),
            ),
            422,
            "required",
            "Bundle.entry[1]",
        ),
        (
            p("application/fhir+ndjson", format!("{patient}\nnot json\n")),
            400,
            "structure",
            "line 2",
        ),
        (
            p(
                "application/fhir+ndjson",
                format!("{patient}\n\n{{\"id\":1}}\n"),
            ),
            422,
            "structure",
            "line 3",
        ),
        (
            p("application/fhir+ndjson", format!("{patient}\n{obs}\n")),
            422,
            "required",
            "line 2",
        ),
        (p("text/csv", patient.into()), 415, "not-supported", ""),
        (
            p(
                "application/fhir+ndjson",
                format!("{patient}\n").repeat(100),
            ),
            413,
            "too-costly",
            "",
        ),
    ];
    for (i, (payload, status, code, place)) in cases.iter().enumerate() {
        let a = post(addr, payload, &[]).expect("post");
        assert_eq!(a.status, *status, "case {i}: {}", a.body);
        assert_eq!(
            a.headers.get("content-type").map(String::as_str),
            Some("application/fhir+json"),
            "case {i}"
        );
        let issues = a.issues();
        assert_eq!(issues[0]["severity"], "error", "case {i}");
        assert_eq!(issues[0]["code"], *code, "case {i}: {}", a.body);
        if !place.is_empty() {
            let named = [&issues[0]["location"][0], &issues[0]["expression"][0]]
                .iter()
                .any(|v| v.as_str() == Some(place));
            assert!(named, "case {i}: {place} in {}", a.body);
            let d = issues[0]["diagnostics"].as_str().unwrap_or("");
            assert!(!d.is_empty(), "case {i}");
        }
    }
    // A bad source name, other methods and paths.
    let bad_source = Payload {
        source: "../etc/passwd".into(),
        ..p("application/fhir+ndjson", format!("{patient}\n"))
    };
    let a = post(addr, &bad_source, &[]).expect("post");
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.issues()[0]["expression"][0], "source");
    let a = request(addr, "GET", "/fhir", &[], b"").expect("get");
    assert_eq!(
        (a.status, a.issues()[0]["code"].clone()),
        (405, json!("not-supported"))
    );
    let a = request(addr, "POST", "/elsewhere", &[], b"").expect("post");
    assert_eq!(a.status, 404);
    assert_eq!(a.issues()[0]["code"], "not-found");
    // Nothing was logged.
    assert!(wal::scan(&http_feed_dir(live.root()), false)
        .expect("scan")
        .records
        .is_empty());
    // A good payload, then the same with the same Idempotency-Key: logged once.
    let good = p("application/fhir+ndjson", format!("{patient}\n"));
    let key = [("Idempotency-Key", "batch-0001")];
    let a = post(addr, &good, &key).expect("post");
    assert_eq!(a.status, 200, "{}", a.body);
    let a = post(addr, &good, &key).expect("post");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.issues()[0]["code"], "duplicate", "{}", a.body);
    let records = wal::scan(&http_feed_dir(live.root()), false)
        .expect("scan")
        .records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].control_id, "batch-0001");
    assert_eq!(records[0].kind, "fhir-ndjson:Patient.ndjson");
    // A batch Bundle of creates gets a batch-response: 201 Created at Type/id, and the
    // warning about an entry (a `urn:` reference the payload does not resolve) in its outcome.
    let orphan = r#"{"resourceType":"Observation","id":"o2","status":"final","subject":{"reference":"urn:uuid:nowhere"},"code":{"coding":[{"system":"http://loinc.org","code":"2160-0"}]},"effectiveDateTime":"2024-01-01T00:00:00Z","valueQuantity":{"value":1.1,"unit":"mg/dL"}}"#;
    let body = format!(
        r#"{{"resourceType":"Bundle","type":"batch","entry":[{{"resource":{patient},"request":{{"method":"POST","url":"Patient"}}}},{{"resource":{orphan},"request":{{"method":"POST","url":"Observation"}}}}]}}"#
    );
    let a = post(addr, &p("application/fhir+json", body), &[]).expect("post");
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["resourceType"], "Bundle", "{}", a.body);
    assert_eq!(v["type"], "batch-response");
    let entries = v["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 2, "{}", a.body);
    assert_eq!(entries[0]["response"]["status"], "201 Created");
    assert_eq!(entries[0]["response"]["location"], "Patient/p1");
    assert!(
        entries[0]["response"].get("outcome").is_none(),
        "{}",
        a.body
    );
    assert_eq!(entries[1]["response"]["location"], "Observation/o2");
    let warning = &entries[1]["response"]["outcome"]["issue"][0];
    assert_eq!(warning["severity"], "warning", "{}", a.body);
    assert_eq!(warning["code"], "not-found", "{}", a.body);
}

/// `ward serve --http` (with `args`) as a child process; returns it and the HTTP address.
fn spawn_server(store: &Path, args: &[&str]) -> (Child, SocketAddr) {
    let mut all: Vec<&std::ffi::OsStr> = vec!["--http".as_ref(), "127.0.0.1:0".as_ref()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    crate::common::spawn_ward_serve(store, &all, "http listening on ")
}

#[test]
fn live_http_crash_kill_9_loses_no_payload_answered_2xx() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = cohort(12, 5, &tmp.path().join("cohort"));
    let pushes = payloads(&files, 15);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let want = batch_heads(
        &rt,
        &[tmp.path().join("cohort")],
        Format::FhirNdjson,
        &tmp.path().join("batch"),
    );
    for trial in 0..2u64 {
        let dir = tmp.path().join(format!("trial-{trial}"));
        drop(store_at(&dir));
        let (mut child, addr) = spawn_server(&dir, &[]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(70 + trial);
        let kill_after = Duration::from_millis(rng.random_range(20..300));
        let all = pushes.clone();
        let sender = std::thread::spawn(move || {
            let mut acked = BTreeSet::new();
            for (i, p) in all.iter().enumerate() {
                let key = format!("push-{i}");
                match post(addr, p, &[("Idempotency-Key", &key)]) {
                    Ok(a) if a.status == 200 => {
                        acked.insert(key);
                    }
                    _ => break,
                }
            }
            acked
        });
        std::thread::sleep(kill_after);
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        let acked = sender.join().expect("sender");
        // Every payload answered 200 is in the log after recovery.
        let (mut child, addr) = spawn_server(&dir, &[]);
        let logged: BTreeSet<String> = wal::scan(&http_feed_dir(&dir), false)
            .expect("scan")
            .records
            .iter()
            .map(|r| r.control_id.clone())
            .collect();
        assert!(
            acked.is_subset(&logged),
            "trial {trial}: answered 2xx but not in the log: {:?}",
            acked.difference(&logged).collect::<Vec<_>>()
        );
        // The sender resends everything not answered, and the last answered one.
        let first_unacked = (0..pushes.len())
            .find(|i| !acked.contains(&format!("push-{i}")))
            .unwrap_or(pushes.len());
        for (i, p) in pushes
            .iter()
            .enumerate()
            .skip(first_unacked.saturating_sub(1))
        {
            let key = format!("push-{i}");
            let a = post(addr, p, &[("Idempotency-Key", &key)]).expect("resend");
            assert_eq!(a.status, 200, "{}", a.body);
        }
        child.kill().expect("kill");
        child.wait().expect("wait");
        let store = store_at(&dir);
        let records = wal::scan(&http_feed_dir(&dir), false)
            .expect("scan")
            .records;
        assert_eq!(
            records.len(),
            pushes.len(),
            "trial {trial}: each payload once"
        );
        let report = rt
            .block_on(seal::seal(
                &store,
                DEFAULT_HTTP_FEED,
                &SealOptions::default(),
            ))
            .expect("seal");
        assert_eq!(report.messages, pushes.len() as u64);
        assert_eq!(
            heads(&store),
            want,
            "trial {trial}: sealed = the batch ingest"
        );
        eprintln!(
            "trial {trial}: killed after {kill_after:?} with {} of {} answered",
            acked.len(),
            pushes.len()
        );
    }
}

#[test]
fn with_authentication_a_push_needs_the_ingest_permission_and_is_audited() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = tmp.path().join("conf");
    crate::common::token_config(
        &conf,
        &[
            ("interface-engine", "ingest-token-0123456789", "steward"),
            ("scoring", "scoring-token-0123456789", "model-service"),
        ],
    );
    let store = tmp.path().join("store");
    let config = conf.join("serve.toml");
    let (mut child, addr) =
        spawn_server(&store, &["--config", config.to_str().expect("utf8 path")]);
    let payload = Payload {
        source: "Patient.ndjson".into(),
        content_type: "application/fhir+ndjson",
        body: b"{\"resourceType\":\"Patient\",\"id\":\"p1\",\"gender\":\"male\"}\n".to_vec(),
    };
    let none = post(addr, &payload, &[]).expect("post");
    let wrong = post(
        addr,
        &payload,
        &[("Authorization", "Bearer wrong-token-0123456789")],
    )
    .expect("post");
    let scoring = post(
        addr,
        &payload,
        &[("Authorization", "Bearer scoring-token-0123456789")],
    )
    .expect("post");
    let ok = post(
        addr,
        &payload,
        &[("Authorization", "Bearer ingest-token-0123456789")],
    )
    .expect("post");
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(
        none.headers.get("www-authenticate").map(String::as_str),
        Some("Bearer")
    );
    assert_eq!(none.issues()[0]["code"], "login");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(scoring.status, 403, "{}", scoring.body);
    assert_eq!(scoring.issues()[0]["code"], "forbidden");
    assert_eq!(ok.status, 200, "{}", ok.body);
    // Only the permitted push is in the log, under its principal.
    let records = wal::scan(&http_feed_dir(&store), false)
        .expect("scan")
        .records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].sender, "interface-engine");
    // Every attempt is audited once: the refusals as denied, the push with its counts.
    let pushes: Vec<Value> = crate::common::audit_records(&conf.join("audit"))
        .into_iter()
        .filter(|r| r["rpc"] == "http:POST /fhir")
        .collect();
    assert_eq!(pushes.len(), 4, "{pushes:#?}");
    for r in &pushes[..3] {
        assert_eq!(r["decision"], "denied", "{r}");
        assert_eq!(r["action"], "ingest", "{r}");
        assert!(
            r["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{r}"
        );
    }
    assert_eq!(pushes[0]["principal"], Value::Null);
    assert_eq!(pushes[2]["principal"], "scoring");
    let accepted = &pushes[3];
    assert_eq!(accepted["decision"], "allowed", "{accepted}");
    assert_eq!(accepted["principal"], "interface-engine");
    assert_eq!(accepted["outcome"], "ok");
    let reason = accepted["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("logged durably as record 1 of feed fhir-http")
            && reason.contains("1 resources (Patient 1)"),
        "{reason}"
    );
}

#[test]
fn mllp_ingests_are_audited_per_sender_with_peer_and_counts() {
    use ward::live::mllp;
    use ward::security::audit::{AuditLog, AuditOptions, Durability};
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
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
    let running = rt
        .block_on(ward::live::serve(
            "127.0.0.1:0".parse().expect("addr"),
            &live,
            &LiveConfig::default(),
            Some(Arc::new(log)),
            None,
            None,
        ))
        .expect("listener");
    let msg = |id: &str| {
        format!("MSH|^~\\&|LAB|HOSP|WARD|DC|20240101120000||ORU^R01^ORU_R01|{id}|P|2.5.1\rPID|1||P1^^^H^MR\r")
    };
    let mut s = TcpStream::connect(running.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let local = s.local_addr().expect("local").to_string();
    // Two messages and a resend of the first, each waiting for its ACK.
    for id in ["M1", "M2", "M1"] {
        s.write_all(&mllp::frame(msg(id).as_bytes())).expect("send");
        let mut de = mllp::Deframer::new(1 << 20);
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).expect("ack");
            de.push(&buf[..n]);
            if de.next_event().is_some() {
                break;
            }
        }
    }
    drop(s);
    // The connection's record is written once it ends.
    let mut found = None;
    for _ in 0..200 {
        found = crate::common::audit_records(&audit_dir)
            .into_iter()
            .find(|r| r["rpc"] == "mllp");
        if found.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = found.expect("an audit record of the MLLP connection");
    assert_eq!(r["principal"], "LAB^HOSP");
    assert_eq!(r["client"], json!(local));
    assert_eq!(r["action"], "ingest");
    let reason = r["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains(
            "feed mllp: 2 messages logged (AA 2, AE 0, AR 0) as log records 1 to 2, 1 resends"
        ),
        "{reason}"
    );
}
