//! Feature sets in the UI (`docs/ui.md`, "Feature sets"): the sets of the feature
//! repositories the server was started with (`ward serve --config` `features = [...]`, the
//! same sets `ListFeatureSets` and `Materialize` know), each with its definition (the TOML
//! as written, escaped), owner and description, each feature's clinical codes, unit and
//! whether it is a label, and the set's timelines in the store, with small per-feature
//! histograms of one of them (the newest unless `?timeline=HASH` picks another; from the
//! statistics `src/ui/stats.rs` computes and caches). The same as JSON under
//! `/api/feature-sets`. Permission: the catalog's (`datasets_read`).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use serde_json::json;

use super::catalog::{percent_decode, percent_encode, Snapshot};
use super::html::{escape, page, version_href};
use super::stats::{self, VersionStats};
use super::{admit, snapshot, version_stats, Caller, Flavor, Ui, ACTION};
use crate::error::{Error, Result};
use crate::features::docs::{self, SetDocs};
use crate::features::{FeatureDef, FeatureRepo, FeatureSet, DAY_US};
use crate::store::{Kind, Manifest};

/// The link to a feature set's page.
pub fn set_href(name: &str) -> String {
    format!("/ui/feature-sets/{}", percent_encode(name))
}

/// The timelines of set `name` in `snap`, newest first.
pub fn timelines<'a>(snap: &'a Snapshot, name: &str) -> Vec<&'a Manifest> {
    let by_name = crate::features::timeline_name(name);
    snap.versions
        .iter()
        .filter(|m| m.kind == Kind::Timeline)
        .filter(|m| match m.labels.get(crate::features::SET_KEY) {
            Some(s) => s == name,
            None => m.name == by_name,
        })
        .map(std::sync::Arc::as_ref)
        .collect()
}

/// A duration in microseconds as days.
fn days(us: Option<i64>) -> String {
    match us {
        None => "none".into(),
        Some(us) => format!("{} d", stats::number(us as f64 / DAY_US as f64)),
    }
}

/// Where a feature reads from: `table.column`, the table, or the score component.
fn source(f: &FeatureDef) -> String {
    if let Some(c) = &f.component {
        return format!("score {c}");
    }
    match &f.column {
        Some(c) => format!("{}.{c}", f.table),
        None => f.table.clone(),
    }
}

/// The `timeline` query parameter, if any.
fn timeline_param(query: &str) -> Result<Option<String>> {
    let mut out = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).map_err(|e| Error::invalid("timeline", e))?;
        match k {
            "timeline" if !v.is_empty() => out = Some(v),
            "timeline" => {}
            other => {
                return Err(Error::invalid(
                    format!("query parameter {other:?}"),
                    "unknown (this page takes timeline)",
                ))
            }
        }
    }
    Ok(out)
}

/// One set as the list (JSON) shows it.
fn set_summary(set: &FeatureSet, d: &SetDocs, snap: &Snapshot) -> serde_json::Value {
    json!({
        "name": set.name,
        "owner": d.owner,
        "description": d.description,
        "entity": set.entity,
        "online": set.online,
        "definition": set.definition_hash().to_string(),
        "features": set.features.len(),
        "labels": set.labels(),
        "origin": d.origin,
        "timelines": timelines(snap, &set.name).iter().map(|m| m.hash.to_string()).collect::<Vec<_>>(),
    })
}

/// One set in full as JSON.
fn set_json(set: &FeatureSet, d: &SetDocs, snap: &Snapshot) -> serde_json::Value {
    let current = set.definition_hash();
    let mut v = set_summary(set, d, snap);
    v["toml"] = json!(d.toml);
    v["ttl_days"] = json!(set.ttl_us.map(|t| t as f64 / DAY_US as f64));
    v["features"] = json!(set
        .features
        .iter()
        .map(|f| {
            let fd = d.features.get(&f.name);
            json!({
                "name": f.name,
                "kind": f.kind.as_str(),
                "description": fd.map(|x| x.description.clone()).unwrap_or_default(),
                "source": source(f),
                "codes": docs::codes(f),
                "unit": docs::unit(f, fd),
                "window_days": f.window_us.map(|w| w as f64 / DAY_US as f64),
                "label": f.kind.is_label(),
            })
        })
        .collect::<Vec<_>>());
    v["timelines"] = json!(timelines(snap, &set.name)
        .iter()
        .map(|m| json!({
            "hash": m.hash.to_string(),
            "created_at": m.created_at,
            "rows": m.rows,
            "current_definition": m.lineage.definition == Some(current),
        }))
        .collect::<Vec<_>>());
    v
}

/// The list page.
pub fn list_html(repo: &FeatureRepo, snap: &Snapshot) -> String {
    let mut b = String::from("<h1>Feature sets</h1>\n");
    if repo.sets.is_empty() {
        b.push_str("<p>This server was started without a feature repository (give <code>features = [\"...toml\"]</code> in <code>ward serve --config</code>; <code>docs/features.md</code>).</p>\n");
        return page("Feature sets", &b);
    }
    let _ = writeln!(
        b,
        "<p>The sets of the server's feature repository (<code>{}</code>), with their timelines in the store.</p>",
        escape(&repo.origin)
    );
    b.push_str("<table>\n<caption>Feature sets</caption>\n<thead><tr>");
    for h in [
        "Set",
        "Owner",
        "Description",
        "Served",
        "Features",
        "Labels",
        "Timelines",
        "Newest timeline",
    ] {
        let _ = write!(b, "<th scope=\"col\">{h}</th>");
    }
    b.push_str("</tr></thead>\n<tbody>\n");
    for (name, set) in &repo.sets {
        let d = repo.docs.get(name).cloned().unwrap_or_default();
        let tl = timelines(snap, name);
        let newest = tl
            .first()
            .map(|m| {
                let h = m.hash.to_string();
                format!(
                    "<a href=\"{}\"><code>{}</code></a> {}",
                    escape(&version_href(&h)),
                    escape(h.get(..15).unwrap_or(&h)),
                    m.created_at.format("%Y-%m-%d %H:%M")
                )
            })
            .unwrap_or_else(|| "none".into());
        let labels = set.labels();
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\"><a href=\"{}\">{}</a></th><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td>{newest}</td></tr>",
            escape(&set_href(name)),
            escape(name),
            escape(&d.owner),
            escape(&d.description),
            if set.online { "online and offline" } else { "offline (training)" },
            set.features.len(),
            if labels.is_empty() { "none".into() } else { escape(&labels.join(", ")) },
            tl.len(),
        );
    }
    b.push_str("</tbody>\n</table>\n<p><a href=\"/api/feature-sets\">These sets as JSON</a></p>\n");
    page("Feature sets", &b)
}

/// A set's page; `shown` is the timeline whose statistics are drawn, with them.
pub fn set_html(
    set: &FeatureSet,
    d: &SetDocs,
    snap: &Snapshot,
    shown: Option<(&Manifest, &VersionStats)>,
) -> String {
    let current = set.definition_hash();
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>{} <small>(feature set)</small></h1>",
        escape(&set.name)
    );
    let or_none = |s: &str| {
        if s.is_empty() {
            "<em>not given</em>".to_string()
        } else {
            escape(s)
        }
    };
    let labels = set.labels();
    b.push_str(
        "<section aria-labelledby=\"h-set\">\n<h2 id=\"h-set\">About</h2>\n<dl class=\"facts\">\n",
    );
    for (k, v) in [
        ("Owner", or_none(&d.owner)),
        ("Description", or_none(&d.description)),
        ("Entity", escape(&set.entity)),
        (
            "Served",
            if set.online {
                "online and offline".to_string()
            } else {
                "offline only (training sets)".to_string()
            },
        ),
        ("Default TTL", days(set.ttl_us)),
        (
            "Labels",
            if labels.is_empty() {
                "none".into()
            } else {
                escape(&labels.join(", "))
            },
        ),
        (
            "Definition hash",
            format!(
                "<code class=\"hash\">{}</code>",
                escape(&current.to_string())
            ),
        ),
        ("Defined in", format!("<code>{}</code>", escape(&d.origin))),
    ] {
        let _ = writeln!(b, "<dt>{k}</dt><dd>{v}</dd>");
    }
    b.push_str("</dl>\n</section>\n");

    b.push_str("<section aria-labelledby=\"h-features\">\n<h2 id=\"h-features\">Features</h2>\n<table class=\"features\">\n<caption>Features of the set, by name; labels look forward in time (training only)</caption>\n<thead><tr>");
    for h in [
        "Feature",
        "Kind",
        "Description",
        "Source",
        "Clinical codes",
        "Unit",
        "Window",
        "Label",
    ] {
        let _ = write!(b, "<th scope=\"col\">{h}</th>");
    }
    b.push_str("</tr></thead>\n<tbody>\n");
    for f in &set.features {
        let fd = d.features.get(&f.name);
        let codes = docs::codes(f);
        let _ = writeln!(
            b,
            "<tr{}><th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if f.kind.is_label() { " class=\"label\"" } else { "" },
            escape(&f.name),
            f.kind.as_str(),
            escape(fd.map_or("", |x| x.description.as_str())),
            escape(&source(f)),
            if codes.is_empty() { "-".into() } else { escape(&codes.join(", ")) },
            escape(&docs::unit(f, fd)),
            if f.window_us.is_some() { days(f.window_us) } else { "-".into() },
            if f.kind.is_label() {
                format!("yes: horizon {}", days(f.horizon_us))
            } else {
                "no".into()
            },
        );
    }
    b.push_str("</tbody>\n</table>\n</section>\n");

    b.push_str(
        "<section aria-labelledby=\"h-timelines\">\n<h2 id=\"h-timelines\">Timelines</h2>\n",
    );
    let tl = timelines(snap, &set.name);
    if tl.is_empty() {
        let _ = writeln!(
            b,
            "<p>No timeline of this set in the store yet (<code>ward materialize --set {}</code>).</p>",
            escape(&set.name)
        );
    } else {
        b.push_str("<table>\n<caption>Timelines of the set in the store, newest first</caption>\n<thead><tr><th scope=\"col\">Timeline</th><th scope=\"col\">Created (UTC)</th><th scope=\"col\">Change points</th><th scope=\"col\">Definition</th><th scope=\"col\">Statistics</th></tr></thead>\n<tbody>\n");
        for m in &tl {
            let h = m.hash.to_string();
            let here = shown.is_some_and(|(s, _)| s.hash == m.hash);
            let _ = writeln!(
                b,
                "<tr><th scope=\"row\"><a href=\"{}\"><code>{}</code></a></th><td>{}</td><td class=\"num\">{}</td><td>{}</td><td><a href=\"{}/stats\">all statistics</a> · {}</td></tr>",
                escape(&version_href(&h)),
                escape(h.get(..15).unwrap_or(&h)),
                m.created_at.format("%Y-%m-%d %H:%M:%S"),
                m.rows,
                if m.lineage.definition == Some(current) { "current" } else { "an earlier one" },
                escape(&version_href(&h)),
                if here {
                    "plots shown below".to_string()
                } else {
                    format!(
                        "<a href=\"{}?timeline={}\">plots</a>",
                        escape(&set_href(&set.name)),
                        escape(&percent_encode(&h))
                    )
                },
            );
        }
        b.push_str("</tbody>\n</table>\n");
    }
    b.push_str("</section>\n");

    if let Some((m, st)) = shown {
        let h = m.hash.to_string();
        let _ = writeln!(
            b,
            "<section aria-labelledby=\"h-plots\">\n<h2 id=\"h-plots\">Per feature, in timeline <a href=\"{}\"><code>{}</code></a></h2>\n<p>Over the timeline's change points: the share with no data and a histogram of each feature's numeric values.</p>",
            escape(&version_href(&h)),
            escape(h.get(..15).unwrap_or(&h))
        );
        b.push_str("<table class=\"stats\">\n<thead><tr><th scope=\"col\">Feature</th><th scope=\"col\">Change points</th><th scope=\"col\">No data</th><th scope=\"col\">Min</th><th scope=\"col\">Max</th></tr></thead>\n<tbody>\n");
        let mut plots = String::new();
        for (i, f) in st.features.iter().enumerate() {
            let num = f.values.iter().find(|c| c.name == "value_num");
            let show = |v: Option<f64>| v.map(stats::number).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                b,
                "<tr><th scope=\"row\"><code>{}</code></th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&f.feature),
                f.change_points,
                stats::percent(f.no_data_rate),
                show(num.and_then(|c| c.min)),
                show(num.and_then(|c| c.max)),
            );
            if let Some(c) = num {
                let mut c = c.clone();
                c.name = f.feature.clone();
                plots.push_str(&stats::histogram_svg(&c, &format!("fs-{i}")));
            }
        }
        b.push_str("</tbody>\n</table>\n");
        if plots.is_empty() {
            b.push_str("<p>No feature has numeric values in this timeline.</p>\n");
        } else {
            b.push_str("<div class=\"plots small\">\n");
            b.push_str(&plots);
            b.push_str("</div>\n");
        }
        b.push_str("</section>\n");
    }

    b.push_str("<section aria-labelledby=\"h-toml\">\n<h2 id=\"h-toml\">Definition</h2>\n");
    let _ = writeln!(
        b,
        "<p>As written in <code>{}</code> (the sets it extends are defined on their own pages).</p>\n<pre class=\"toml\"><code>{}</code></pre>",
        escape(&d.origin),
        escape(&d.toml)
    );
    let _ = writeln!(
        b,
        "<p><a href=\"/api/feature-sets/{}\">This set as JSON</a></p>\n</section>",
        escape(&percent_encode(&set.name))
    );
    page(&format!("Feature set {}", set.name), &b)
}

/// The set `name` of the server's repository, with its documentation.
fn find<'a>(repo: &'a FeatureRepo, name: &str) -> Result<(&'a FeatureSet, SetDocs)> {
    let set = repo.sets.get(name).ok_or_else(|| Error::NotFound {
        reference: format!(
            "feature set {name:?} (this server's sets: {})",
            if repo.sets.is_empty() {
                "none".to_string()
            } else {
                repo.sets.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        ),
    })?;
    Ok((set, repo.docs.get(name).cloned().unwrap_or_default()))
}

/// `GET /ui/feature-sets`.
pub(super) async fn list_page(State(s): State<Arc<Ui>>, caller: Caller) -> Response {
    let flavor = Flavor::Html;
    let a = match admit(
        &s,
        "http:GET /ui/feature-sets".into(),
        caller,
        flavor,
        ACTION,
    )
    .await
    {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        Ok(list_html(&s.features, &snap))
    }
    .await;
    a.done(&s, flavor, made).await
}

/// `GET /api/feature-sets`: `{"feature_sets": [...]}`.
pub(super) async fn list_json(State(s): State<Arc<Ui>>, caller: Caller) -> Response {
    let flavor = Flavor::Json;
    let a = match admit(
        &s,
        "http:GET /api/feature-sets".into(),
        caller,
        flavor,
        ACTION,
    )
    .await
    {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        let sets: Vec<_> = s
            .features
            .sets
            .iter()
            .map(|(name, set)| {
                let d = s.features.docs.get(name).cloned().unwrap_or_default();
                set_summary(set, &d, &snap)
            })
            .collect();
        Ok(json!({ "feature_sets": sets }).to_string())
    }
    .await;
    a.done(&s, flavor, made).await
}

/// `GET /ui/feature-sets/{name}?timeline=HASH`.
pub(super) async fn set_page(
    State(s): State<Arc<Ui>>,
    caller: Caller,
    Path(name): Path<String>,
    uri: Uri,
) -> Response {
    let flavor = Flavor::Html;
    let rpc = "http:GET /ui/feature-sets/{name}".to_string();
    let a = match admit(&s, rpc, caller, flavor, ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let asked = timeline_param(uri.query().unwrap_or_default())?;
        let (set, d) = find(&s.features, &name)?;
        let snap = snapshot(&s).await?;
        let tl = timelines(&snap, &set.name);
        let shown = match &asked {
            Some(h) => {
                let m = snap.find(h)?;
                if !tl.iter().any(|t| t.hash == m.hash) {
                    return Err(Error::invalid(
                        "timeline",
                        format!("{} is not a timeline of feature set {}", m.hash, set.name),
                    ));
                }
                Some(m)
            }
            None => tl.first().copied(),
        };
        let st = match shown {
            Some(m) => {
                a.note.add_datasets([m.hash.to_string()]);
                Some(version_stats(&s, m).await?)
            }
            None => None,
        };
        let with = shown.zip(st.as_deref());
        Ok(set_html(set, &d, &snap, with))
    }
    .await;
    a.done(&s, flavor, made).await
}

/// `GET /api/feature-sets/{name}`.
pub(super) async fn set_json_route(
    State(s): State<Arc<Ui>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Response {
    let flavor = Flavor::Json;
    let rpc = "http:GET /api/feature-sets/{name}".to_string();
    let a = match admit(&s, rpc, caller, flavor, ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let (set, d) = find(&s.features, &name)?;
        let snap = snapshot(&s).await?;
        Ok(set_json(set, &d, &snap).to_string())
    }
    .await;
    a.done(&s, flavor, made).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = r#"
[[feature_set]]
name = "labs"
owner = "Lab <team>"
description = "Last lab values & counts"
online = true

[[feature_set.features]]
name = "hemoglobin_last"
kind = "last"
table = "observations"
filter = { code = "718-7", code_system = "LOINC" }
column = "value_num"
description = "Last <hemoglobin>"

[[feature_set.features]]
name = "admissions_365d"
kind = "count"
table = "encounters"
filter = { class = "inpatient" }
window = "365d"

[[feature_set]]
name = "labs_train"
extends = "labs"

[[feature_set.features]]
name = "readmitted_30d"
kind = "readmitted_within"
horizon = "30d"
unit = "flag"
"#;

    #[test]
    fn a_set_page_shows_docs_codes_units_labels_and_escapes() {
        let repo = FeatureRepo::parse(REPO, "fs.toml").expect("repo");
        let snap = Snapshot::default();
        let (set, d) = find(&repo, "labs_train").expect("set");
        assert_eq!(
            d.features["hemoglobin_last"].description,
            "Last <hemoglobin>"
        );
        assert!(
            d.toml.starts_with("[[feature_set]]\nname = \"labs_train\""),
            "{}",
            d.toml
        );
        let html = set_html(set, &d, &snap, None);
        assert!(html.contains("LOINC 718-7"), "{html}");
        assert!(html.contains("<td>g/dL</td>"), "{html}");
        assert!(html.contains("Last &lt;hemoglobin&gt;"));
        assert!(html.contains("yes: horizon 30 d"));
        assert!(html.contains("<td>flag</td>"));
        assert!(!html.contains("<hemoglobin>"));
        let (set, d) = find(&repo, "labs").expect("set");
        let html = set_html(set, &d, &snap, None);
        assert!(html.contains("Lab &lt;team&gt;") && html.contains("Last lab values &amp; counts"));
        assert!(
            html.contains("&quot;718-7&quot;"),
            "the TOML is shown escaped: {html}"
        );
        let list = list_html(&repo, &snap);
        assert!(list.contains("href=\"/ui/feature-sets/labs_train\""));
        let e = find(&repo, "nope").unwrap_err().to_string();
        assert!(e.contains("labs, labs_train"), "{e}");
        assert_eq!(
            timeline_param("timeline=b3%3Aab").expect("q"),
            Some("b3:ab".into())
        );
        assert!(timeline_param("x=1").is_err());
        // Documentation keys do not change the definition hash.
        let plain = REPO
            .replace("owner = \"Lab <team>\"\n", "")
            .replace("description = \"Last lab values & counts\"\n", "")
            .replace("description = \"Last <hemoglobin>\"\n", "")
            .replace("unit = \"flag\"\n", "");
        let plain = FeatureRepo::parse(&plain, "p.toml").expect("plain");
        assert_eq!(
            plain.sets["labs_train"].definition_hash(),
            repo.sets["labs_train"].definition_hash()
        );
    }
}
