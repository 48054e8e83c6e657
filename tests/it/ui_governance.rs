//! The governance pages of the web UI over HTTP (`docs/ui.md`): the column statistics of a
//! version (null rates, ranges, histograms as SVG), the quarantine browser (bad records with
//! their reasons, `historical_identified`), and the privacy officer's audit page (who
//! accessed a patient, from where, allowed or refused, filtered; the chain's verification,
//! `audit_read` only; a tampered trail shown as broken).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde_json::Value;
use ward::clock::{ManualClock, SharedClock};
use ward::hash::ContentHash;
use ward::live::LiveConfig;
use ward::store::{Kind, PutOptions, Store};

use crate::browser::{seed_audit, serve, token_config, ANALYST, NURSE, OFFICER, STEWARD};
use crate::ui::get;

/// A curated table with a numeric column (nulls, a NaN) and a text column, and a quarantine
/// version of three bad records.
async fn governance_store(dir: &Path) -> (ContentHash, ContentHash) {
    let clock: SharedClock = Arc::new(ManualClock::new(
        "2026-03-01T00:00:00Z".parse().expect("time"),
    ));
    let store = Store::open(dir, clock).expect("store");
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ]));
    let values: Vec<Option<f64>> = (0..100)
        .map(|i| match i {
            0..=9 => None,
            10 => Some(f64::NAN),
            i => Some(f64::from(i)),
        })
        .collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(
                (0..100).map(|i| format!("p{}", i % 40)).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(values)),
        ],
    )
    .expect("batch");
    let curated = store
        .put_batches(
            schema,
            vec![batch],
            PutOptions::new("observations", Kind::Curated),
        )
        .await
        .expect("put")
        .manifest
        .hash;
    let q = RecordBatch::try_new(
        ward::ingest::pipeline::quarantine_schema(),
        vec![
            Arc::new(StringArray::from(vec!["a.ndjson", "a.ndjson", "b.ndjson"])),
            Arc::new(UInt64Array::from(vec![3, 9, 1])),
            Arc::new(StringArray::from(vec![
                Some("observations"),
                Some("patients"),
                None,
            ])),
            Arc::new(StringArray::from(vec![Some("valueQuantity"), None, None])),
            Arc::new(StringArray::from(vec![
                "bad_value",
                "missing_field",
                "unparseable",
            ])),
            Arc::new(StringArray::from(vec![
                "value is not a number",
                "Patient.id is missing",
                "not JSON",
            ])),
            Arc::new(StringArray::from(vec![
                "{\"valueQuantity\":\"x<y\"}",
                "{}",
                "{oops",
            ])),
        ],
    )
    .expect("quarantine batch");
    let quarantine = store
        .put_batches(
            q.schema(),
            vec![q],
            PutOptions::new("quarantine", Kind::Quarantine),
        )
        .await
        .expect("put")
        .manifest
        .hash;
    (curated, quarantine)
}

#[test]
fn statistics_and_quarantine_are_served_with_plots_and_reasons() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (curated, quarantine) = rt.block_on(governance_store(tmp.path()));
    let store = Store::open(
        tmp.path(),
        Arc::new(ManualClock::new("2026-03-02T00:00:00Z".parse().expect("t"))),
    )
    .expect("store");
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

    // Statistics as JSON: rows, nulls, NaN apart, range, mean, a histogram of every value.
    let a = get(addr, &format!("/api/stats/{curated}"), &[]);
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["rows"], 100);
    let value = &v["columns"][1];
    assert_eq!(value["name"], "value");
    assert_eq!(value["class"], "numeric");
    assert_eq!(
        (value["nulls"].as_u64(), value["nan"].as_u64()),
        (Some(10), Some(1))
    );
    assert_eq!(value["null_rate"], 0.1);
    assert_eq!(
        (value["min"].as_f64(), value["max"].as_f64()),
        (Some(11.0), Some(99.0))
    );
    assert_eq!(value["mean"], 55.0);
    let counts: Vec<u64> = value["histogram"]["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .map(|c| c.as_u64().expect("count"))
        .collect();
    assert_eq!(counts.len(), 20);
    assert_eq!(counts.iter().sum::<u64>(), 89);
    // Text: the number of distinct values, no value.
    let pid = &v["columns"][0];
    assert_eq!(
        (pid["class"].as_str(), pid["distinct"].as_u64()),
        (Some("text"), Some(40))
    );
    assert_eq!(pid["min"], Value::Null);

    // The page: a table of the columns and a histogram drawn as SVG, one bar per bin.
    let page = get(addr, &format!("/ui/versions/{curated}/stats"), &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    assert!(body.contains("<svg class=\"histogram\""), "{body}");
    assert_eq!(body.matches("<rect class=\"bar\"").count(), 20);
    assert!(body.contains("10.0 %"), "the null rate: {body}");
    assert!(!body.contains("p39"), "no text value is shown");
    assert!(!body.contains("<script"));
    // The version page links its statistics; the quarantine version its records.
    let vp = get(addr, &format!("/ui/versions/{curated}"), &[]);
    assert!(
        vp.body.contains("/stats\">Column statistics"),
        "{}",
        vp.body
    );
    assert!(!vp.body.contains("/quarantine\">"));
    let qp = get(addr, &format!("/ui/versions/{quarantine}"), &[]);
    assert!(
        qp.body.contains("/quarantine\">Quarantined records"),
        "{}",
        qp.body
    );

    // The quarantine browser: counts by reason, filtered, each record with its reason.
    let q = get(addr, &format!("/api/quarantine/{quarantine}"), &[]);
    assert_eq!(q.status, 200, "{}", q.body);
    let v = q.json();
    assert_eq!(v["total"], 3);
    assert_eq!(v["by_reason"]["bad_value"], 1);
    assert_eq!(v["rows"][2]["reason"], "unparseable");
    let q = get(
        addr,
        &format!("/api/quarantine/{quarantine}?reason=missing_field"),
        &[],
    )
    .json();
    assert_eq!(
        (q["matching"].as_u64(), q["rows"][0]["file"].as_str()),
        (Some(1), Some("a.ndjson"))
    );
    let page = get(
        addr,
        &format!("/ui/versions/{quarantine}/quarantine?table=observations"),
        &[],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("1 of 1 matching records"),
        "{}",
        page.body
    );
    assert!(page.body.contains("value is not a number"));
    assert!(page.body.contains("x&lt;y"), "the raw record, escaped");
    // Wrong kinds and bad parameters are refused, naming why.
    let bad = get(addr, &format!("/api/quarantine/{curated}"), &[]);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("quarantine versions"), "{}", bad.body);
    let bad = get(
        addr,
        &format!("/ui/versions/{quarantine}/quarantine?limit=0"),
        &[],
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("limit"));
}

#[test]
fn the_audit_page_is_for_privacy_officers_and_shows_accesses_and_the_chain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store_dir = tmp.path().join("store");
    let (curated, quarantine) = {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(governance_store(&store_dir))
    };
    let conf = tmp.path().join("conf");
    let config = token_config(&conf);
    seed_audit(&conf.join("audit"), "pat-1");
    let served = serve(&store_dir, &config);
    let addr = served.http;
    let bearer = |t: &str| format!("Bearer {t}");
    let (officer, steward, nurse, analyst) = (
        bearer(OFFICER),
        bearer(STEWARD),
        bearer(NURSE),
        bearer(ANALYST),
    );
    let h = |v: &str| [("Authorization", v.to_string())];
    let get_as = |who: &str, target: &str| {
        let hv = h(who);
        let hs: Vec<(&str, &str)> = hv.iter().map(|(k, v)| (*k, v.as_str())).collect();
        get(addr, target, &hs)
    };

    // The privacy officer: who accessed pat-1, from where, allowed or refused; verified.
    let page = get_as(&officer, "/ui/audit?patient=pat-1");
    assert_eq!(page.status, 200, "{}", page.body);
    for s in [
        "dr-a",
        "dr-b",
        "10.20.0.9:52344",
        "refused",
        "allowed",
        "Chain verified",
    ] {
        assert!(page.body.contains(s), "{s} in {}", page.body);
    }
    assert!(!page.body.contains("another-patient"), "{}", page.body);
    assert!(
        page.body.contains("2 of 2 matching records"),
        "{}",
        page.body
    );
    // Filtered by subject and decision, and by time range, as JSON.
    let v = get_as(&officer, "/api/audit?patient=pat-1&decision=denied").json();
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["records"][0]["principal"], "dr-b");
    assert_eq!(v["verification"]["ok"], true);
    let v = get_as(&officer, "/api/audit?subject=dr-a").json();
    assert_eq!(v["total"], 2, "{v}");
    let v = get_as(&officer, "/api/audit?subject=dr-a&from=2026-03-03").json();
    assert_eq!(v["total"], 0, "{v}");
    let v = get_as(
        &officer,
        "/api/audit?subject=dr-a&from=2026-03-02&to=2026-03-03",
    )
    .json();
    assert_eq!(v["total"], 2, "{v}");
    let bad = get_as(&officer, "/ui/audit?from=yesterday");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("from"), "{}", bad.body);

    // Everyone else is refused with a page, and the refusal is audited.
    for who in [&steward, &nurse, &analyst] {
        let r = get_as(who, "/ui/audit");
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("<h1>403"), "{}", r.body);
    }
    assert_eq!(get(addr, "/ui/audit", &[]).status, 401);
    // The quarantine needs historical_identified: the steward yes, the analyst (catalog
    // reads only) no; both may see statistics.
    let qpath = format!("/ui/versions/{quarantine}/quarantine");
    assert_eq!(get_as(&steward, &qpath).status, 200);
    assert_eq!(get_as(&analyst, &qpath).status, 403);
    assert_eq!(
        get_as(&analyst, &format!("/ui/versions/{curated}/stats")).status,
        200
    );
    assert_eq!(
        get_as(&officer, &format!("/ui/versions/{curated}/stats")).status,
        403
    );

    // The officer's queries and the refusals are in the trail; the query names its patient.
    let v = get_as(&officer, "/api/audit?subject=privacy-pat").json();
    let recs = v["records"].as_array().expect("records");
    assert!(
        recs.iter().any(|r| r["rpc"] == "http:GET /ui/audit"
            && r["patients"]["ids"] == serde_json::json!(["pat-1"])
            && r["action"] == "audit_read"),
        "{v}"
    );
    let v = get_as(&officer, "/api/audit?subject=steward-sam&decision=denied").json();
    assert!(
        v["records"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["rpc"] == "http:GET /ui/audit")),
        "{v}"
    );
    drop(served);

    // A record edited after the fact: the page says the chain is broken, and where.
    let file = conf.join("audit/audit-000001.jsonl");
    let text = std::fs::read_to_string(&file).expect("trail");
    assert!(text.contains("\"dr-b\""));
    std::fs::write(&file, text.replacen("\"dr-b\"", "\"dr-x\"", 1)).expect("tamper");
    let served = serve(&store_dir, &config);
    let addr = served.http;
    let hv = h(&officer);
    let page = get(addr, "/ui/audit", &[(hv[0].0, hv[0].1.as_str())]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Chain broken"), "{}", page.body);
    assert!(
        page.body.contains("audit-000001.jsonl line"),
        "{}",
        page.body
    );
    let v = get(addr, "/api/audit", &[(hv[0].0, hv[0].1.as_str())]).json();
    assert_eq!(v["verification"]["ok"], false, "{v}");
}
