//! The web UI as a person uses it: a real headless Chromium (Debian's `chromium`) driven by
//! playwright-core (`tests/browser/ui.cjs`, modules installed outside the clone by
//! `.ci/browser.sh`) against `ward serve --http` with authentication on, over a demo store
//! (the synthetic cohort ingested and materialized, a training set made from its timeline, a
//! quarantine from a bad file) and an audit trail with accesses to one patient.
//!
//! Checked in the browser: the catalog lists the demo's versions; clicking through the
//! lineage drawing from the training set reaches its raw input, and forward to its model
//! card and back; a histogram renders on the statistics page and on the feature-set page; the quarantine browser lists bad records with reasons; the keyboard
//! alone reaches the search, submits it and opens a result, with a visible focus; a role
//! without the permission sees a refusal page; the privacy officer's audit page shows who
//! accessed the patient and a verified chain. Screenshots are written to `WARD_SCREENSHOTS`
//! (default: a temporary folder).
//!
//! Skipped with a message when Chromium, node or the modules are missing, unless
//! `WARD_REQUIRE_BROWSER=1` (CI), when that fails the test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde_json::{json, Value};
use ward::clock::{ManualClock, SharedClock};
use ward::hash::ContentHash;
use ward::lookup::{Entities, HistoricalRequest};
use ward::security::audit::{AuditEntry, AuditLog, AuditOptions, Durability, Outcome, Patients};
use ward::store::{Kind, ListFilter, Store};

use crate::common::crate_dir;

/// What the browser run needs: Chromium, node and the playwright-core modules.
pub(crate) struct BrowserKit {
    pub(crate) chromium: PathBuf,
    pub(crate) node_modules: PathBuf,
}

/// The browser kit, or `None` with a message (a failure under `WARD_REQUIRE_BROWSER=1`).
pub(crate) fn browser_kit() -> Option<BrowserKit> {
    let chromium = std::env::var_os("WARD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let node_modules = std::env::var_os("WARD_NODE_MODULES")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ward-npm/node_modules"))
        })
        .unwrap_or_else(|| PathBuf::from("node_modules"));
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = if !chromium.is_file() {
        Some(format!(
            "Chromium is not at {} (apt-get install chromium, or set WARD_CHROMIUM)",
            chromium.display()
        ))
    } else if !node {
        Some("node is not on PATH".to_string())
    } else if !node_modules.join("playwright-core/package.json").is_file() {
        Some(format!(
            "playwright-core is not installed in {} (run .ci/browser.sh, or set WARD_NODE_MODULES)",
            node_modules.display()
        ))
    } else {
        None
    };
    match missing {
        None => Some(BrowserKit {
            chromium,
            node_modules,
        }),
        Some(why) if std::env::var("WARD_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("the browser tests are required (WARD_REQUIRE_BROWSER=1): {why}")
        }
        Some(why) => {
            eprintln!("SKIP: browser test: {why}");
            None
        }
    }
}

/// The demo store's versions the browser looks for.
struct Demo {
    versions: Vec<ContentHash>,
    raw: ContentHash,
    timeline: ContentHash,
    training: ContentHash,
    quarantine: ContentHash,
    model: ContentHash,
}

/// The patient ids of the newest `patients` version.
async fn patient_ids(store: &Store) -> Vec<String> {
    let head = store.head("patients").expect("head").expect("patients");
    let (_, batches) = store.read(&head.hash).await.expect("read patients");
    let mut ids = Vec::new();
    for b in &batches {
        let col = b.column_by_name("patient_id").expect("patient_id");
        let col = arrow::compute::cast(col, &DataType::Utf8).expect("utf8");
        ids.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    ids
}

/// Builds the demo store in `dir`: `ward demo`'s pipeline on a small cohort, a training set
/// from the readmission timeline, and (with the `ward` binary) a quarantine from a file of
/// bad records. Returns the versions and a patient id.
fn demo_store(dir: &Path, work: &Path) -> (Demo, String) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let clock: SharedClock = Arc::new(ManualClock::new(
        "2026-03-01T08:00:00Z".parse().expect("time"),
    ));
    let store = Store::open(dir, clock).expect("store");
    let opts = ward::demo::DemoOptions {
        patients: 60,
        seed: 7,
    };
    let report = rt
        .block_on(ward::demo::run(&store, &work.join("demo"), &opts, None))
        .expect("demo");
    let ids = rt.block_on(patient_ids(&store));
    assert!(ids.len() >= 10, "{} patients", ids.len());
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let chosen: Vec<&str> = ids.iter().take(10).map(String::as_str).collect();
    let t = chrono::DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
        .expect("time")
        .timestamp_micros();
    let rows = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(chosen.clone())),
            Arc::new(TimestampMicrosecondArray::from(vec![t; chosen.len()]).with_timezone("UTC")),
        ],
    )
    .expect("entities");
    let training = rt
        .block_on(ward::lookup::historical(
            &store,
            HistoricalRequest::new("readmission", Entities::Batches(vec![rows])),
        ))
        .expect("training set");
    // A file of bad records, ingested by the command line: a quarantine version.
    let bad = work.join("bad");
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::write(
        bad.join("Patient.ndjson"),
        "{not json\n{\"resourceType\":\"Patient\",\"gender\":\"female\"}\n",
    )
    .expect("bad file");
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(dir)
        .args(["ingest", "--format", "fhir-ndjson", "--max-bad", "1000"])
        .arg(&bad)
        .output()
        .expect("ward ingest");
    assert!(
        out.status.success(),
        "ward ingest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A model card registered on the training set, by the command line.
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(dir)
        .args(["register", "--name", "readmission-demo", "--training"])
        .arg(training.hash.to_string())
        .args(["--metric", "auroc_test=0.71", "--owner", "readmission team"])
        .output()
        .expect("ward register");
    assert!(
        out.status.success(),
        "ward register: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model: ContentHash = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the card's hash");
    let all = store.list(&ListFilter::default()).expect("list");
    let quarantine = all
        .iter()
        .find(|m| m.kind == Kind::Quarantine)
        .map(|m| m.hash)
        .expect("a quarantine version");
    let timeline = report
        .timelines
        .iter()
        .find(|t| t.set == "readmission")
        .map(|t| t.hash)
        .expect("readmission timeline");
    let demo = Demo {
        versions: all.iter().map(|m| m.hash).collect(),
        raw: report.ingest.raw,
        timeline,
        training: training.hash,
        quarantine,
        model,
    };
    (demo, ids[0].clone())
}

/// Accesses to `patient` before the server starts, written by the audit trail's own writer
/// (as `ward serve` writes them): an allowed lookup, a refused one, one for another patient.
pub(crate) fn seed_audit(dir: &Path, patient: &str) {
    let clock: SharedClock = Arc::new(ManualClock::new(
        "2026-03-02T09:30:00Z".parse().expect("time"),
    ));
    let log = AuditLog::open(
        dir,
        clock,
        AuditOptions {
            durability: Durability::Sync,
            ..AuditOptions::default()
        },
    )
    .expect("audit log");
    let entry = |who: &str, role: &str, client: &str, p: &str, d: Outcome, why: &str| {
        let mut e = AuditEntry::new("/ward.v1.Features/GetOnlineFeatures", d, why);
        e.principal = Some(who.into());
        e.auth = Some("api_token".into());
        e.roles = vec![role.into()];
        e.client = Some(client.into());
        e.action = Some("online_lookup".into());
        e.feature_set = Some("readmission_online".into());
        e.patients = Patients::Ids(vec![p.into()]);
        e.outcome = Some(
            if d == Outcome::Allowed {
                "ok"
            } else {
                "permission_denied"
            }
            .into(),
        );
        e
    };
    for e in [
        entry(
            "dr-a",
            "clinician",
            "10.20.0.5:41000",
            patient,
            Outcome::Allowed,
            "care team of the patient",
        ),
        entry(
            "dr-b",
            "clinician",
            "10.20.0.9:52344",
            patient,
            Outcome::Denied,
            "not on the patient's care team",
        ),
        entry(
            "dr-a",
            "clinician",
            "10.20.0.5:41002",
            "another-patient",
            Outcome::Allowed,
            "care team of the patient",
        ),
    ] {
        log.append(e).expect("append");
    }
}

/// A running `ward serve`, killed when dropped.
pub(crate) struct Served {
    child: Child,
    pub(crate) http: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ward serve --http 127.0.0.1:0` on `store` with `config` and waits for its HTTP
/// address.
pub(crate) fn serve(store: &Path, config: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(store)
        .args(["serve", "--addr", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ward serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("http listening on ") {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if let Some(t) = tx.take() {
                    let _ = t.send(addr);
                }
            }
        }
    });
    let http = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("ward serve printed its HTTP address")
        .parse()
        .expect("address");
    Served { child, http }
}

/// The tokens of the browser run, by role.
pub(crate) const STEWARD: &str = "steward-token-0123456789";
pub(crate) const OFFICER: &str = "officer-token-0123456789";
pub(crate) const NURSE: &str = "nurse-token-0123456789";
pub(crate) const ANALYST: &str = "analyst-token-0123456789";

/// A server configuration in `conf` with authentication on (the example policy): a steward,
/// a privacy officer, a clinician and a data scientist, the audit trail in `conf/audit`.
pub(crate) fn token_config(conf: &Path) -> PathBuf {
    std::fs::create_dir_all(conf).expect("mkdir");
    std::fs::copy(
        crate_dir().join("examples/security/policy.toml"),
        conf.join("policy.toml"),
    )
    .expect("policy");
    let hash = ward::security::auth::tokens::hash_token;
    let path = conf.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            r#"
features = [{:?}]
[auth]
policy = "policy.toml"
[[auth.api_tokens]]
subject = "steward-sam"
blake3 = "{}"
roles = ["steward"]
[[auth.api_tokens]]
subject = "privacy-pat"
blake3 = "{}"
roles = ["privacy-officer"]
[[auth.api_tokens]]
subject = "nurse-nia"
blake3 = "{}"
roles = ["clinician"]
[[auth.api_tokens]]
subject = "analyst-ann"
blake3 = "{}"
roles = ["data-scientist"]
[audit]
dir = "audit"
durability = "sync"
"#,
            crate_dir()
                .join("examples/features/readmission.toml")
                .display()
                .to_string(),
            hash(STEWARD),
            hash(OFFICER),
            hash(NURSE),
            hash(ANALYST)
        ),
    )
    .expect("config");
    path
}

/// Runs `tests/browser/<script>` with `env`; returns the JSON of its `RESULT ` line.
pub(crate) fn run_script(kit: &BrowserKit, script: &str, env: &[(&str, String)]) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg(crate_dir().join("tests/browser").join(script))
        .env("NODE_PATH", &kit.node_modules)
        .env("WARD_CHROMIUM", &kit.chromium);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("{script} printed no RESULT line:\n{stdout}"));
    serde_json::from_str(line).expect("RESULT JSON")
}

#[test]
fn the_ui_works_in_a_real_browser() {
    let Some(kit) = browser_kit() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let store_dir = tmp.path().join("store");
    let (demo, patient) = demo_store(&store_dir, tmp.path());
    let conf = tmp.path().join("conf");
    let config = token_config(&conf);
    seed_audit(&conf.join("audit"), &patient);
    let served = serve(&store_dir, &config);
    let shots = std::env::var_os("WARD_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("screenshots"));
    std::fs::create_dir_all(&shots).expect("mkdir");
    let expect = json!({
        "versions": demo.versions.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "raw": demo.raw.to_string(),
        "timeline": demo.timeline.to_string(),
        "training": demo.training.to_string(),
        "quarantine": demo.quarantine.to_string(),
        "model": demo.model.to_string(),
        "patient": patient,
    });
    let r = run_script(
        &kit,
        "ui.cjs",
        &[
            ("WARD_URL", format!("http://{}", served.http)),
            ("WARD_EXPECT", expect.to_string()),
            ("WARD_SCREENSHOTS", shots.display().to_string()),
            ("WARD_TOKEN_STEWARD", STEWARD.into()),
            ("WARD_TOKEN_OFFICER", OFFICER.into()),
            ("WARD_TOKEN_NURSE", NURSE.into()),
        ],
    );
    drop(served);

    // Only the server was asked for anything (the style sheet is embedded, no CDN), the
    // style sheet applied under the pages' Content-Security-Policy, and no page logged an
    // error.
    assert_eq!(r["foreign_requests"], json!([]), "{r}");
    assert_eq!(r["styled"], "rgb(15, 42, 68)", "{r}");
    assert_eq!(r["console_errors"], json!([]), "{r}");
    // The catalog listed every version of the demo store.
    assert_eq!(r["catalog"]["missing"], json!([]), "{r}");
    assert_eq!(r["catalog"]["listed"], demo.versions.len(), "{r}");
    // Clicking through the lineage from the training set reached its raw input, through the
    // timeline and a curated table.
    let path: Vec<&str> = r["lineage"]["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .map(|k| k.as_str().unwrap_or(""))
        .collect();
    assert_eq!(path, ["training", "timeline", "curated", "raw"], "{r}");
    assert_eq!(r["lineage"]["reached"], demo.raw.to_string(), "{r}");
    // A histogram rendered with visible bars.
    assert!(
        r["plot"]["histograms"].as_u64().is_some_and(|n| n >= 1),
        "{r}"
    );
    assert!(
        r["plot"]["visible_bars"].as_u64().is_some_and(|n| n >= 1),
        "{r}"
    );
    // From the training set's lineage to its model card and back.
    assert_eq!(r["model"]["kind"], "model", "{r}");
    assert_eq!(r["model"]["card_hash"], demo.model.to_string(), "{r}");
    assert!(
        r["model"]["metrics"].to_string().contains("auroc_test"),
        "{r}"
    );
    assert_eq!(r["model"]["back_to"], demo.training.to_string(), "{r}");
    // The feature-set page renders its definition and a plot per numeric feature.
    assert!(
        r["feature_set"]["histograms"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{r}"
    );
    assert!(
        r["feature_set"]["visible_bars"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{r}"
    );
    assert_eq!(r["feature_set"]["has_label"], true, "{r}");
    assert_eq!(r["feature_set"]["toml_shown"], true, "{r}");
    // The quarantine browser listed the bad records with their reasons.
    assert!(
        r["quarantine"]["rows"].as_u64().is_some_and(|n| n >= 2),
        "{r}"
    );
    assert!(
        r["quarantine"]["reasons"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{r}"
    );
    // The keyboard alone: skip link, search, a result opened; the focus is visible.
    assert_eq!(r["keyboard"]["skip_focused_main"], true, "{r}");
    assert_eq!(r["keyboard"]["search_submitted"], true, "{r}");
    assert_eq!(r["keyboard"]["opened"], demo.training.to_string(), "{r}");
    assert_eq!(r["keyboard"]["focus_outline"], "solid", "{r}");
    // Refusals: a clinician on the catalog, a steward on the audit page, an officer on the
    // catalog; each a page saying so.
    for k in ["nurse_catalog", "steward_audit", "officer_catalog"] {
        assert_eq!(r["refusals"][k]["status"], 403, "{k}: {r}");
        assert!(
            r["refusals"][k]["heading"]
                .as_str()
                .is_some_and(|h| h.contains("403")),
            "{k}: {r}"
        );
    }
    // The privacy officer: who accessed the patient, allowed and refused, from where; the
    // chain verified.
    assert_eq!(r["audit"]["verified"], true, "{r}");
    assert_eq!(r["audit"]["subjects"], json!(["dr-a", "dr-b"]), "{r}");
    assert_eq!(
        r["audit"]["decisions"],
        json!(["allowed", "refused"]),
        "{r}"
    );
    assert!(
        r["audit"]["clients"].to_string().contains("10.20.0.9"),
        "{r}"
    );

    // The refused browser requests are in the trail, as the server recorded them.
    let trail = ward::security::audit::search(
        &conf.join("audit"),
        &ward::security::audit::QueryFilter {
            principal: Some("nurse-nia".into()),
            ..Default::default()
        },
    )
    .expect("search");
    assert!(
        trail
            .iter()
            .any(|a| a.record.entry.decision == Outcome::Denied
                && a.record.entry.rpc == "http:GET /ui/"),
        "{trail:#?}"
    );
    assert!(ward::security::audit::verify(&conf.join("audit"))
        .expect("verify")
        .ok());
}
