//! The feature-set pages of the web UI (`docs/ui.md`, "Feature sets") on a real `ward serve
//! --http --config` whose `features` is the example repository, over a store holding the
//! demo's timelines: the list and a set's page (owner, description, codes, units, labels,
//! the TOML escaped, its timelines, per-feature histograms), the JSON, the errors, the
//! permission and the audit record.

use std::sync::Arc;

use serde_json::Value;
use ward::clock::{ManualClock, SharedClock};
use ward::store::Store;

use crate::common::{audit_records, crate_dir};
use crate::models::{config, serve_both, ANALYST};
use crate::ui::get;

#[test]
fn feature_set_pages_show_definitions_codes_units_labels_and_plots() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store_dir = tmp.path().join("store");
    let clock: SharedClock = Arc::new(ManualClock::new(
        "2026-03-01T08:00:00Z".parse().expect("time"),
    ));
    let store = Store::open(&store_dir, clock).expect("store");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let opts = ward::demo::DemoOptions {
        patients: 30,
        seed: 3,
    };
    let report = rt
        .block_on(ward::demo::run(
            &store,
            &tmp.path().join("work"),
            &opts,
            None,
        ))
        .expect("demo");
    let timeline = report
        .timelines
        .iter()
        .find(|t| t.set == "readmission")
        .map(|t| t.hash)
        .expect("readmission timeline");
    let online = report
        .timelines
        .iter()
        .find(|t| t.set == "readmission_online")
        .map(|t| t.hash)
        .expect("online timeline");
    let repo = crate_dir().join("examples/features/readmission.toml");
    let conf = tmp.path().join("conf");
    let config = config(&conf, &[&repo]);
    let served = serve_both(&store_dir, &config);
    let auth = format!("Bearer {ANALYST}");
    let h = [("authorization", auth.as_str())];

    let list = get(served.http, "/ui/feature-sets", &h);
    assert_eq!(list.status, 200, "{}", list.body);
    for s in [
        "href=\"/ui/feature-sets/readmission\"",
        "href=\"/ui/feature-sets/readmission_online\"",
        "Readmission model team",
        "readmitted_30d",
    ] {
        assert!(list.body.contains(s), "{s}: {}", list.body);
    }

    let page = get(served.http, "/ui/feature-sets/readmission", &h);
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    for s in [
        // owner and description
        "Readmission model team (steward: data office)",
        "The training set of the 30-day readmission model",
        // a lab feature: its LOINC code and Ward's canonical unit
        "LOINC 718-7",
        "<td>g/dL</td>",
        "Last hemoglobin result known at t",
        // a declared unit, kind-given units
        "<td>days</td>",
        "<td>years</td>",
        // the label
        "<tr class=\"label\"><th scope=\"row\"><code>readmitted_30d</code>",
        "yes: horizon 30 d",
        // the TOML as written, escaped
        "<pre class=\"toml\"><code>[[feature_set]]\nname = &quot;readmission&quot;",
        // its timeline and small per-feature plots of it
        &format!("/ui/versions/b3%3A{}", timeline.hex()),
        "svg class=\"histogram\"",
        "div class=\"plots small\"",
    ] {
        assert!(body.contains(s), "{s}: {body}");
    }
    assert!(!body.contains("name = \"readmission\""), "unescaped TOML");
    // Inherited features are listed with the set's own.
    assert!(body.contains("<code>hemoglobin_last</code>"));

    // Another set's timeline is refused; an unknown set is 404; a bad parameter 400.
    let other = get(
        served.http,
        &format!("/ui/feature-sets/readmission?timeline={online}"),
        &h,
    );
    assert_eq!(other.status, 400, "{}", other.body);
    assert!(other
        .body
        .contains("is not a timeline of feature set readmission"));
    let picked = get(
        served.http,
        &format!(
            "/ui/feature-sets/readmission_online?timeline={}",
            &online.to_string()[..14]
        ),
        &h,
    );
    assert_eq!(picked.status, 200, "{}", picked.body);
    assert!(picked.body.contains("plots shown below"));
    let unknown = get(served.http, "/ui/feature-sets/nope", &h);
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.body.contains("readmission, readmission_online"),
        "{}",
        unknown.body
    );
    assert_eq!(
        get(served.http, "/ui/feature-sets/readmission?x=1", &h).status,
        400
    );

    // JSON.
    let v: Value = get(served.http, "/api/feature-sets", &h).json();
    let sets = v["feature_sets"].as_array().expect("sets");
    assert_eq!(sets.len(), 2, "{v}");
    let j: Value = get(served.http, "/api/feature-sets/readmission", &h).json();
    assert_eq!(j["timelines"][0]["hash"], timeline.to_string());
    assert_eq!(j["timelines"][0]["current_definition"], true);
    assert_eq!(j["labels"], serde_json::json!(["readmitted_30d"]));
    let hb = j["features"]
        .as_array()
        .expect("features")
        .iter()
        .find(|f| f["name"] == "hemoglobin_last")
        .expect("hemoglobin_last");
    assert_eq!(hb["codes"], serde_json::json!(["LOINC 718-7"]));
    assert_eq!(hb["unit"], "g/dL");
    assert!(j["toml"]
        .as_str()
        .expect("toml")
        .contains("extends = \"readmission_online\""));

    // Authentication on: no credential, 401; the page's audit record names the timeline.
    assert_eq!(get(served.http, "/ui/feature-sets", &[]).status, 401);
    drop(served);
    let records = audit_records(&conf.join("audit"));
    assert!(
        records
            .iter()
            .any(|r| r["rpc"] == "http:GET /ui/feature-sets/{name}"
                && r["decision"] == "allowed"
                && r["datasets"].to_string().contains(&timeline.to_string())),
        "{records:#?}"
    );
}
