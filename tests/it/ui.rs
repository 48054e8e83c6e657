//! The web UI's catalog and lineage (`docs/ui.md`) on the HTTP listener of `ward serve
//! --http`: a store holding a demo-like chain (raw -> two curated tables -> a timeline -> a
//! training set, each listing its inputs) is listed and searched through `/api/versions`;
//! `/api/lineage/{training}` reaches the raw input; the pages list the hashes and draw the
//! lineage as SVG with a link per version; with authentication on, every route needs a
//! credential with `datasets_read` (401, 403, 200) and every request is audited. The client
//! is a hand-written HTTP/1.1 request over `std::net::TcpStream`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde_json::Value;
use ward::clock::{ManualClock, SharedClock};
use ward::hash::ContentHash;
use ward::live::LiveConfig;
use ward::store::{Kind, Lineage, PutOptions, Store};

pub(crate) use crate::common::Answer;

/// `GET target` with `headers` (HTTP/1.1, `Connection: close`), read to the end.
pub(crate) fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Answer {
    crate::common::request(addr, "GET", target, headers, b"").expect("GET")
}

fn store_at(dir: &Path) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        "2025-03-01T00:00:00Z".parse().expect("time"),
    ));
    let shared: SharedClock = clock.clone();
    (Store::open(dir, shared).expect("store"), clock)
}

/// The hashes of the chain, by role.
struct Chain {
    raw: ContentHash,
    patients: ContentHash,
    observations: ContentHash,
    timeline: ContentHash,
    training: ContentHash,
}

/// Puts one small version of `kind` named `name` made from `inputs`, a minute after the last.
async fn put(
    store: &Store,
    clock: &ManualClock,
    kind: Kind,
    name: &str,
    seed: i64,
    inputs: &[ContentHash],
) -> ContentHash {
    clock.advance(chrono::Duration::minutes(1));
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("value", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["p1", "p2", "p3"])),
            Arc::new(Int64Array::from(vec![seed, seed + 1, seed + 2])),
        ],
    )
    .expect("batch");
    let mut opts = PutOptions::new(name, kind);
    opts.lineage = Lineage {
        inputs: inputs.to_vec(),
        ..Lineage::default()
    };
    store
        .put_batches(schema, vec![batch], opts)
        .await
        .expect("put")
        .manifest
        .hash
}

/// raw -> patients, observations -> timeline -> training (tagged `prod`), plus an unrelated
/// raw version.
async fn chain(store: &Store, clock: &ManualClock) -> Chain {
    let raw = put(store, clock, Kind::Raw, "raw.fhir", 1, &[]).await;
    let patients = put(store, clock, Kind::Curated, "patients", 2, &[raw]).await;
    let observations = put(store, clock, Kind::Curated, "observations", 3, &[raw]).await;
    let timeline = put(
        store,
        clock,
        Kind::Timeline,
        "sepsis.timeline",
        4,
        &[patients, observations],
    )
    .await;
    let training = put(store, clock, Kind::Training, "sepsis.train", 5, &[timeline]).await;
    put(store, clock, Kind::Raw, "raw.other", 6, &[]).await;
    store.tag("prod", &training).expect("tag");
    Chain {
        raw,
        patients,
        observations,
        timeline,
        training,
    }
}

#[test]
fn catalog_and_lineage_are_served_as_json_and_html() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (store, clock) = store_at(tmp.path());
    let c = rt.block_on(chain(&store, &clock));
    let running = rt
        .block_on(ward::live::serve_http(
            "127.0.0.1:0".parse().expect("addr"),
            &store,
            &LiveConfig::default(),
            None,
            None,
            None,
        ))
        .expect("listener");
    let addr = running.addr;

    // The list: every version, newest first, with tags and inputs.
    let all = get(addr, "/api/versions", &[]);
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(all.headers["content-type"], "application/json");
    let v = all.json();
    assert_eq!(v["total"], 6);
    let listed: Vec<&str> = v["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|x| x["hash"].as_str().expect("hash"))
        .collect();
    for h in [
        &c.raw,
        &c.patients,
        &c.observations,
        &c.timeline,
        &c.training,
    ] {
        assert!(
            listed.contains(&h.to_string().as_str()),
            "{h} in {listed:?}"
        );
    }
    assert_eq!(
        v["versions"][1]["hash"],
        c.training.to_string(),
        "newest first"
    );
    assert_eq!(
        v["versions"][1]["tags"],
        serde_json::json!(["prod", "sepsis.train"])
    );
    // Searches: kind, name, tag, hash prefix, paging.
    let hashes = |target: &str| -> Vec<String> {
        let a = get(addr, target, &[]);
        assert_eq!(a.status, 200, "{target}: {}", a.body);
        a.json()["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .map(|x| x["hash"].as_str().expect("hash").to_string())
            .collect()
    };
    assert_eq!(hashes("/api/versions?kind=curated").len(), 2);
    assert_eq!(
        hashes("/api/versions?q=TIMELINE"),
        vec![c.timeline.to_string()]
    );
    assert_eq!(
        hashes("/api/versions?tag=prod"),
        vec![c.training.to_string()]
    );
    let prefix = &c.patients.hex()[..10];
    assert_eq!(
        hashes(&format!("/api/versions?q=b3%3A{prefix}")),
        vec![c.patients.to_string()]
    );
    assert_eq!(hashes("/api/versions?limit=2&offset=4").len(), 2);
    let bad = get(addr, "/api/versions?limit=0", &[]);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.json()["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("limit")));

    // One version: manifest, schema, inputs and users.
    let one = get(addr, &format!("/api/versions/{}", c.timeline), &[]);
    assert_eq!(one.status, 200, "{}", one.body);
    let v = one.json();
    assert_eq!(v["kind"], "timeline");
    assert_eq!(v["rows"], 3);
    assert_eq!(v["schema"][0]["name"], "patient_id");
    assert_eq!(
        v["inputs"],
        serde_json::json!([c.patients.to_string(), c.observations.to_string()])
    );
    assert_eq!(v["used_by"], serde_json::json!([c.training.to_string()]));
    assert!(v["bytes"].as_u64().is_some_and(|b| b > 0));
    let missing = get(addr, &format!("/api/versions/{}", "0".repeat(64)), &[]);
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(missing.json()["error"]["code"], "not_found");

    // The lineage of the training set reaches its raw input, through every layer.
    let lin = get(addr, &format!("/api/lineage/{}", c.training), &[]);
    assert_eq!(lin.status, 200, "{}", lin.body);
    let g = lin.json();
    let layer_of = |h: &ContentHash| -> u64 {
        g["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["hash"] == h.to_string())
            .and_then(|n| n["layer"].as_u64())
            .unwrap_or_else(|| panic!("{h} not in {g}"))
    };
    assert_eq!(
        [c.raw, c.patients, c.timeline, c.training].map(|h| layer_of(&h)),
        [0, 1, 2, 3]
    );
    assert_eq!(g["nodes"].as_array().expect("nodes").len(), 5, "{g}");
    assert!(g["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .any(|e| e["from"] == c.raw.to_string() && e["to"] == c.observations.to_string()));
    // ... and the other way: from the raw input to the training set.
    let down = get(addr, &format!("/api/lineage/{}", &c.raw.hex()[..12]), &[]).json();
    assert!(down["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .any(|n| n["hash"] == c.training.to_string()));

    // The pages: the catalog lists the hashes; a version's page draws its lineage.
    let page = get(addr, "/ui/", &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.headers["content-type"].starts_with("text/html"));
    assert!(page.headers["content-security-policy"].contains("default-src 'none'"));
    for h in [&c.raw, &c.training] {
        assert!(
            page.body
                .contains(&format!("/ui/versions/b3%3A{}", h.hex())),
            "{h} linked"
        );
    }
    assert!(page.body.contains("<label for=\"q\">"));
    let found = get(addr, "/ui/?q=sepsis&kind=training", &[]);
    assert!(found.body.contains("1 of 1 versions"), "{}", found.body);
    let detail = get(addr, &format!("/ui/versions/{}", c.training), &[]);
    assert_eq!(detail.status, 200, "{}", detail.body);
    let svg = &detail.body
        [detail.body.find("<svg").expect("an <svg>")..detail.body.find("</svg>").expect("</svg>")];
    assert_eq!(svg.matches("<a href=\"/ui/versions/").count(), 5, "{svg}");
    assert!(svg.contains(&format!("/ui/versions/b3%3A{}", c.raw.hex())));
    assert!(detail.body.contains("patient_id"));
    let css = get(addr, "/ui/style.css", &[]);
    assert_eq!(css.status, 200);
    assert!(css.headers["content-type"].starts_with("text/css"));
    let gone = get(addr, "/ui/versions/b3:0123", &[]);
    assert_eq!(gone.status, 400, "{}", gone.body);
    assert!(gone.body.contains("<h1>400"));
    let redirect = get(addr, "/ui", &[]);
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.headers["location"], "/ui/");
}

#[test]
fn with_authentication_the_catalog_needs_datasets_read_and_is_audited() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store_dir = tmp.path().join("store");
    let c = {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (store, clock) = store_at(&store_dir);
        rt.block_on(chain(&store, &clock))
    };
    let conf = tmp.path().join("conf");
    let config = crate::common::token_config(
        &conf,
        &[
            ("analyst", "reader-token-0123456789", "data-scientist"),
            ("nurse", "clinic-token-0123456789", "clinician"),
        ],
    );
    let (mut child, addr) = crate::common::spawn_ward_serve(
        &store_dir,
        &[
            "--http".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        "http listening on ",
    );
    let reader = [("Authorization", "Bearer reader-token-0123456789")];
    let clinic = [("Authorization", "Bearer clinic-token-0123456789")];
    let detail = format!("/ui/versions/{}", c.training);
    let lineage = format!("/api/lineage/{}", c.training);
    let answers = [
        ("/api/versions", get(addr, "/api/versions", &[])),
        ("/ui/", get(addr, "/ui/", &[])),
        ("/api/versions", get(addr, "/api/versions", &clinic)),
        (detail.as_str(), get(addr, &detail, &clinic)),
        ("/api/versions", get(addr, "/api/versions", &reader)),
        (lineage.as_str(), get(addr, &lineage, &reader)),
        (detail.as_str(), get(addr, &detail, &reader)),
    ];
    child.kill().expect("kill");
    child.wait().expect("wait");
    let statuses: Vec<u16> = answers.iter().map(|(_, a)| a.status).collect();
    assert_eq!(statuses, vec![401, 401, 403, 403, 200, 200, 200]);
    // Refusals as JSON under /api and as a page under /ui.
    assert_eq!(answers[0].1.json()["error"]["code"], "unauthenticated");
    assert_eq!(answers[0].1.headers["www-authenticate"], "Bearer");
    assert!(
        answers[1].1.body.contains("<h1>401") && answers[1].1.body.contains("<main id=\"main\"")
    );
    assert_eq!(answers[2].1.json()["error"]["code"], "permission_denied");
    assert!(answers[3].1.body.contains("<h1>403"));
    assert_eq!(answers[4].1.json()["total"], 6);
    assert!(answers[6].1.body.contains("<svg"));
    // Every request audited once: who, from where, the action, the decision, the version.
    let records: Vec<Value> = crate::common::audit_records(&conf.join("audit"))
        .into_iter()
        .filter(|r| {
            r["rpc"]
                .as_str()
                .is_some_and(|x| x.starts_with("http:GET /ui") || x.starts_with("http:GET /api"))
        })
        .collect();
    assert_eq!(records.len(), 7, "{records:#?}");
    let decisions: Vec<&str> = records
        .iter()
        .map(|r| r["decision"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        decisions,
        ["denied", "denied", "denied", "denied", "allowed", "allowed", "allowed"]
    );
    for r in &records {
        assert_eq!(r["action"], "datasets_read", "{r}");
        assert!(
            r["client"]
                .as_str()
                .is_some_and(|x| x.starts_with("127.0.0.1:")),
            "{r}"
        );
    }
    assert_eq!(records[0]["principal"], Value::Null);
    assert_eq!(records[2]["principal"], "nurse");
    assert_eq!(records[4]["principal"], "analyst");
    assert_eq!(records[4]["rpc"], "http:GET /api/versions");
    assert_eq!(records[5]["rpc"], "http:GET /api/lineage/{hash}");
    assert_eq!(records[6]["outcome"], "ok");
    let datasets = records[6]["datasets"].to_string();
    assert!(datasets.contains(&c.training.to_string()), "{datasets}");
}

/// Not a check: how long `/api/versions` takes over a store of many versions (printed with
/// `--nocapture`; no timing is asserted). The versions are manifests copied under new hashes,
/// which is all the listing reads.
#[test]
fn listing_many_versions_is_timed() {
    let n: usize = std::env::var("WARD_UI_VERSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (store, clock) = store_at(tmp.path());
    let c = rt.block_on(chain(&store, &clock));
    let versions = tmp.path().join("versions");
    let text = std::fs::read_to_string(versions.join(c.training.hex()).join("manifest.json"))
        .expect("manifest");
    for i in 0..n {
        let hex = blake3::hash(format!("copy {i}").as_bytes())
            .to_hex()
            .to_string();
        let dir = versions.join(&hex);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(
            dir.join("manifest.json"),
            text.replace(&c.training.hex(), &hex),
        )
        .expect("write");
    }
    let running = rt
        .block_on(ward::live::serve_http(
            "127.0.0.1:0".parse().expect("addr"),
            &store,
            &LiveConfig::default(),
            None,
            None,
            None,
        ))
        .expect("listener");
    // The first request reads every manifest; later ones reuse the cached index (the
    // store's folders are stamped more than 2 s ago, so the index is trusted).
    std::thread::sleep(Duration::from_millis(2100));
    let detail = format!("/ui/versions/{}", c.training);
    for target in [
        "/api/versions",
        "/api/versions",
        "/api/versions?q=sepsis&limit=500",
        "/ui/",
        "/ui/?q=copy&kind=training&offset=50",
        detail.as_str(),
    ] {
        let t = Instant::now();
        let a = get(running.addr, target, &[]);
        assert_eq!(a.status, 200, "{}", a.body);
        eprintln!("GET {target} over {} versions: {:?}", n + 6, t.elapsed());
    }
    let v = get(running.addr, "/api/versions?limit=1", &[]).json();
    assert_eq!(v["total"], n + 6);
    // A new version is seen at once (its folder changes the stamp), read alone.
    rt.block_on(put(&store, &clock, Kind::Other, "late", 9, &[]));
    let t = Instant::now();
    let v = get(running.addr, "/api/versions?limit=1", &[]).json();
    eprintln!(
        "GET /api/versions after one new version over {} versions: {:?}",
        n + 7,
        t.elapsed()
    );
    assert_eq!(v["total"], n + 7);
    assert_eq!(v["versions"][0]["name"], "late");
    // A head moved on an existing name (only `refs/prod/` changes) is seen too, once the
    // index has settled.
    let late = v["versions"][0]["hash"].as_str().expect("hash").to_string();
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        get(running.addr, "/api/versions?tag=prod", &[]).json()["total"],
        1
    );
    store
        .tag("prod", &late.parse().expect("hash"))
        .expect("tag");
    let v = get(running.addr, "/api/versions?tag=prod", &[]).json();
    assert_eq!(v["versions"][0]["hash"], late, "{v}");
}
