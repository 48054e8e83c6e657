//! Model cards (`docs/models.md`) end to end, against the real `ward` binary and a real `ward
//! serve`: `ward register` from the command line (audited, bad input refused with a clear
//! message), `ward.v1.Models/RegisterModel` and `ListModels` over gRPC with authentication
//! on (a data scientist without `datasets_write` refused and the refusal audited, a steward
//! allowed), and the lineage reaching the model (`/api/lineage`, the model pages).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde_json::Value;
use tonic::Code;
use ward::clock::{ManualClock, SharedClock};
use ward::hash::ContentHash;
use ward::store::{Kind, Lineage, PutOptions, Store};

use crate::common::proto::{self, models_client::ModelsClient};
use crate::common::{audit_records, crate_dir};
use crate::ui::get;

pub(crate) const STEWARD: &str = "steward-token-models-0123";
pub(crate) const ANALYST: &str = "analyst-token-models-0123";

/// raw -> curated -> timeline -> training; returns (raw, timeline, training).
async fn chain(store: &Store, clock: &ManualClock) -> (ContentHash, ContentHash, ContentHash) {
    let mut last = Vec::new();
    let mut out = Vec::new();
    for (i, (kind, name)) in [
        (Kind::Raw, "raw-fhir-ndjson"),
        (Kind::Curated, "encounters"),
        (Kind::Timeline, "timeline-readmission"),
        (Kind::Training, "training-readmission"),
    ]
    .into_iter()
    .enumerate()
    {
        clock.advance(chrono::Duration::minutes(1));
        let schema = Arc::new(Schema::new(vec![
            Field::new("patient_id", DataType::Utf8, false),
            Field::new("value", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["p1", "p2"])),
                Arc::new(Int64Array::from(vec![i as i64, 10])),
            ],
        )
        .expect("batch");
        let mut opts = PutOptions::new(name, kind);
        opts.lineage = Lineage {
            inputs: last.clone(),
            ..Lineage::default()
        };
        let h = store
            .put_batches(schema, vec![batch], opts)
            .await
            .expect("put")
            .manifest
            .hash;
        last = vec![h];
        out.push(h);
    }
    (out[0], out[2], out[3])
}

fn store_with_chain(dir: &Path) -> (ContentHash, ContentHash, ContentHash) {
    let clock = Arc::new(ManualClock::new(
        "2026-04-01T00:00:00Z".parse().expect("time"),
    ));
    let shared: SharedClock = clock.clone();
    let store = Store::open(dir, shared).expect("store");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(chain(&store, &clock))
}

/// `ward --store STORE ARGS...`: (success, stdout, stderr).
fn ward(store: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run ward");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `ward serve` (gRPC and HTTP), killed when dropped.
pub(crate) struct Serving {
    child: Child,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ward serve --addr 127.0.0.1:0 --http 127.0.0.1:0 --config CONFIG` on `store`.
pub(crate) fn serve_both(store: &Path, config: &Path) -> Serving {
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
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            for (prefix, which) in [("http listening on ", "http"), ("listening on ", "grpc")] {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send((which, addr.to_string()));
                    break;
                }
            }
        }
    });
    let (mut grpc, mut http) = (None, None);
    while grpc.is_none() || http.is_none() {
        let (which, addr) = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("ward serve printed its addresses");
        let addr: SocketAddr = addr.parse().expect("address");
        match which {
            "http" => http = Some(addr),
            _ => grpc = Some(addr),
        }
    }
    Serving {
        child,
        grpc: grpc.expect("grpc"),
        http: http.expect("http"),
    }
}

/// A configuration in `conf` with authentication on (the example policy): a steward and a
/// data scientist; the audit trail in `conf/audit`; `features` files when given.
pub(crate) fn config(conf: &Path, features: &[&Path]) -> std::path::PathBuf {
    std::fs::create_dir_all(conf).expect("mkdir");
    std::fs::copy(
        crate_dir().join("examples/security/policy.toml"),
        conf.join("policy.toml"),
    )
    .expect("policy");
    let hash = ward::security::auth::tokens::hash_token;
    let files = features
        .iter()
        .map(|f| format!("{:?}", f.display().to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "features = [{files}]\n[auth]\npolicy = \"policy.toml\"\n[[auth.api_tokens]]\nsubject = \"steward-sam\"\nblake3 = \"{}\"\nroles = [\"steward\"]\n[[auth.api_tokens]]\nsubject = \"analyst-ann\"\nblake3 = \"{}\"\nroles = [\"data-scientist\"]\n[audit]\ndir = \"audit\"\ndurability = \"sync\"\n",
        hash(STEWARD),
        hash(ANALYST)
    );
    let path = conf.join("serve.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    r
}

#[test]
fn register_from_the_command_line_is_audited_and_refuses_bad_input() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let (raw, timeline, training) = store_with_chain(&store);
    let metrics = tmp.path().join("metrics.json");
    std::fs::write(&metrics, "{\"auc\": 0.81, \"brier\": 0.12}").expect("metrics");
    let prefix = &training.to_string()[..15];
    let (ok, out, err) = ward(
        &store,
        &[
            "register",
            "--name",
            "readmit-lr",
            "--training",
            prefix,
            "--metrics",
            metrics.to_str().expect("path"),
            "--metric",
            "rows=120",
            "--owner",
            "team-a",
            "--description",
            "30-day readmission",
        ],
    );
    assert!(ok, "{err}");
    let card: ContentHash = out
        .lines()
        .last()
        .expect("a hash")
        .trim()
        .parse()
        .expect("hash");
    assert!(err.contains("registered model card readmit-lr"), "{err}");
    // The same card again: the same version.
    let (ok, out2, err2) = ward(
        &store,
        &[
            "register",
            "--name",
            "readmit-lr",
            "--training",
            prefix,
            "--metrics",
            metrics.to_str().expect("path"),
            "--metric",
            "rows=120",
            "--owner",
            "team-a",
            "--description",
            "30-day readmission",
        ],
    );
    assert!(ok && out2.trim().ends_with(&card.to_string()), "{err2}");
    assert!(err2.contains("already registered"), "{err2}");

    let (ok, out, err) = ward(&store, &["models", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v.as_array().expect("cards").len(), 1, "{v}");
    assert_eq!(v[0]["hash"], card.to_string());
    assert_eq!(v[0]["card"]["training"], training.to_string());
    assert_eq!(v[0]["card"]["metrics"]["auc"], 0.81);
    assert_eq!(v[0]["card"]["metrics"]["rows"], 120.0);
    assert_eq!(v[0]["card"]["owner"], "team-a");
    let (ok, out, _) = ward(&store, &["show", &card.to_string(), "--json"]);
    assert!(ok);
    let m: Value = serde_json::from_str(&out).expect("manifest");
    assert_eq!(m["kind"], "model");
    assert_eq!(
        m["lineage"]["inputs"],
        serde_json::json!([training.to_string()])
    );

    // Audited: one record per registration, naming the card and the training set.
    let records = audit_records(&store.join("audit"));
    let reg: Vec<&Value> = records
        .iter()
        .filter(|r| r["rpc"] == "cli:register")
        .collect();
    assert_eq!(reg.len(), 2, "{records:#?}");
    assert_eq!(reg[0]["action"], "datasets_write");
    assert_eq!(reg[0]["outcome"], "ok");
    let datasets = reg[0]["datasets"].to_string();
    assert!(
        datasets.contains(&card.to_string()) && datasets.contains(&training.to_string()),
        "{datasets}"
    );

    // Bad input: each refused with a message naming what is wrong, nothing stored.
    let unknown = format!("b3:{}", "ab".repeat(32));
    let (ok, _, err) = ward(&store, &["register", "--name", "m", "--training", &unknown]);
    assert!(
        !ok && err.contains(&unknown) && err.contains("training set"),
        "{err}"
    );
    let (ok, _, err) = ward(
        &store,
        &[
            "register",
            "--name",
            "m",
            "--training",
            &timeline.to_string(),
        ],
    );
    assert!(
        !ok && err.contains("is a timeline version, not a training set"),
        "{err}"
    );
    let (ok, _, err) = ward(
        &store,
        &[
            "register",
            "--name",
            "m",
            "--training",
            prefix,
            "--metric",
            "auc=high",
        ],
    );
    assert!(
        !ok && err.contains("--metric auc=high") && err.contains("not a number"),
        "{err}"
    );
    std::fs::write(&metrics, "{\"auc\": \"good\"}").expect("metrics");
    let (ok, _, err) = ward(
        &store,
        &[
            "register",
            "--name",
            "m",
            "--training",
            prefix,
            "--metrics",
            metrics.to_str().expect("path"),
        ],
    );
    assert!(
        !ok && err.contains("metrics.json") && err.contains("\"auc\""),
        "{err}"
    );
    let (ok, _, err) = ward(
        &store,
        &["register", "--name", "bad/name", "--training", prefix],
    );
    assert!(!ok && err.contains("model name"), "{err}");
    let (ok, _, err) = ward(
        &store,
        &["put", "x.parquet", "--name", "m", "--kind", "model"],
    );
    assert!(!ok && err.contains("ward register"), "{err}");
    let (ok, out, _) = ward(&store, &["models", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        v.as_array().expect("cards").len(),
        1,
        "nothing more stored: {v}"
    );
    // The failed registration is audited too, with its error.
    let records = audit_records(&store.join("audit"));
    assert!(
        records
            .iter()
            .any(|r| r["rpc"] == "cli:register" && r["outcome"] == "error"),
        "{records:#?}"
    );
    let _ = raw;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_over_grpc_needs_datasets_write_and_lineage_reaches_the_model() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let (raw, _timeline, training) = tokio::task::block_in_place(|| store_with_chain(&store));
    let conf = tmp.path().join("conf");
    let config = config(&conf, &[]);
    let served = tokio::task::block_in_place(|| serve_both(&store, &config));
    let mut c = ModelsClient::connect(format!("http://{}", served.grpc))
        .await
        .expect("connect");
    let req = || proto::RegisterModelRequest {
        name: "readmit-gbm".into(),
        training: training.to_string(),
        metrics: [("auc".to_string(), 0.84), ("ece".to_string(), 0.03)]
            .into_iter()
            .collect(),
        description: "gradient boosting <v2>".into(),
        owner: "team-b".into(),
    };

    // A data scientist reads but may not register: refused at the gate, audited.
    let err = c
        .register_model(with_token(req(), ANALYST))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Without a credential: unauthenticated.
    let err = c.register_model(req()).await.expect_err("refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A steward registers; again gives the same card.
    let card = c
        .register_model(with_token(req(), STEWARD))
        .await
        .expect("registered")
        .into_inner();
    assert!(card.created);
    assert_eq!(card.training, training.to_string());
    assert_eq!(card.metrics["auc"], 0.84);
    let again = c
        .register_model(with_token(req(), STEWARD))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(again.hash, card.hash);
    assert!(!again.created);

    // Bad input: an unknown training set, a NaN metric, a bad name.
    let mut bad = req();
    bad.training = format!("b3:{}", "cd".repeat(32));
    let err = c
        .register_model(with_token(bad, STEWARD))
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("training set"), "{err:?}");
    let mut bad = req();
    bad.metrics.insert("auc".into(), f64::NAN);
    let err = c
        .register_model(with_token(bad, STEWARD))
        .await
        .expect_err("nan");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("auc"), "{err:?}");
    let mut bad = req();
    bad.training = raw.to_string();
    let err = c
        .register_model(with_token(bad, STEWARD))
        .await
        .expect_err("raw");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Listing needs only datasets_read.
    let list = c
        .list_models(with_token(proto::ListModelsRequest::default(), ANALYST))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.models.len(), 1);
    assert_eq!(list.models[0].hash, card.hash);
    assert_eq!(list.models[0].owner, "team-b");

    // The audit trail: the refusal and the registrations, each naming the RPC.
    let records = audit_records(&conf.join("audit"));
    let register: Vec<&Value> = records
        .iter()
        .filter(|r| r["rpc"] == "/ward.v1.Models/RegisterModel")
        .collect();
    assert!(
        register
            .iter()
            .any(|r| r["decision"] == "denied" && r["principal"] == "analyst-ann"),
        "{register:#?}"
    );
    assert!(
        register.iter().any(|r| r["decision"] == "allowed"
            && r["principal"] == "steward-sam"
            && r["datasets"].to_string().contains(&card.hash)),
        "{register:#?}"
    );

    // Lineage reaches the model: from the training set forward, and from the model back to
    // the raw input, the model in a column right of the training set.
    let http = served.http;
    let auth = format!("Bearer {ANALYST}");
    let h = [("authorization", auth.as_str())];
    let lineage = get(http, &format!("/api/lineage/{training}"), &h);
    assert_eq!(lineage.status, 200, "{}", lineage.body);
    let g = lineage.json();
    let node = |kind: &str| -> Value {
        g["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} node: {g}"))
    };
    assert_eq!(node("model")["hash"], card.hash.as_str());
    assert!(node("model")["layer"].as_u64() > node("training")["layer"].as_u64());
    assert!(g["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .any(|e| e["from"] == training.to_string().as_str() && e["to"] == card.hash.as_str()));
    let back = get(http, &format!("/api/lineage/{}", card.hash), &h).json();
    assert!(back["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .any(|n| n["hash"] == raw.to_string().as_str()));

    // The model pages: the list, the card with its metrics and a link to the training set.
    let page = get(http, &format!("/ui/models/{}", card.hash), &h);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("gradient boosting &lt;v2&gt;"),
        "{}",
        page.body
    );
    assert!(page
        .body
        .contains("<th scope=\"row\">auc</th><td class=\"num\">0.84</td>"));
    assert!(page
        .body
        .contains(&format!("href=\"/ui/versions/b3%3A{}\"", training.hex())));
    assert!(page.body.contains("kind-model"));
    let list = get(http, "/ui/models", &h);
    assert!(
        list.status == 200 && list.body.contains("readmit-gbm"),
        "{}",
        list.body
    );
    let json = get(http, "/api/models", &h).json();
    assert_eq!(json["models"][0]["training_name"], "training-readmission");
    // The training set's page lists the model among its users; a non-model is not a card.
    let tpage = get(http, &format!("/ui/versions/{training}"), &h);
    assert!(tpage.body.contains("readmit-gbm (model)"), "{}", tpage.body);
    let not = get(http, &format!("/ui/models/{training}"), &h);
    assert_eq!(not.status, 404, "{}", not.body);
    let v = get(http, "/api/versions?kind=model", &h).json();
    assert_eq!(v["total"], 1, "{v}");
}
