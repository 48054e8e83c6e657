//! The drift and skew pages (`docs/ui.md`, "Drift and skew"; `docs/monitoring.md`):
//! `/ui/drift?training=REF&online=LOGREF[&since=T][&set=NAME]` draws, per feature, the
//! training and online histograms over the training bins side by side as inline SVG with
//! the PSI; `/ui/skew?online=LOGREF[&since=T]` replays the logged lookups and shows the
//! values that differ per feature, with an alert (`role="alert"`) when any does. The same
//! reports as JSON at `/api/drift` and `/api/skew`. Drift is authorized as the catalog
//! (`datasets_read`: counts per bin, no patient), skew as rows of a version
//! (`historical_identified`: it reads identified rows and names patients whose values
//! differ).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;

use super::catalog::{percent_decode, percent_encode};
use super::html::{escape, page, version_href};
use super::{admit, Caller, Flavor, Ui};
use crate::error::{Error, Result};
use crate::monitoring::drift::{DriftReport, FeatureDrift, Level};
use crate::monitoring::{DriftRequest, SkewReport};
use crate::security::note::AuditNote;
use crate::security::policy::Action;
use crate::store::VersionRef;

/// The action of the drift page (the catalog's: counts, no patient).
pub const DRIFT_ACTION: Action = Action::DatasetsRead;

/// The action of the skew page (identified rows are replayed; patients are named).
pub const SKEW_ACTION: Action = Action::HistoricalIdentified;

/// A query's parameters, checked against the names a page knows.
fn params(query: &str, known: &[&str]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&k) {
            return Err(Error::invalid(
                format!("query {k}"),
                format!("not known: the parameters are {}", known.join(", ")),
            ));
        }
        let v = percent_decode(&v.replace('+', " "))
            .map_err(|why| Error::invalid(format!("query {k}"), why))?;
        out.push((k.to_string(), v.trim().to_string()));
    }
    Ok(out)
}

fn get<'a>(p: &'a [(String, String)], k: &str) -> &'a str {
    p.iter()
        .rev()
        .find(|(n, _)| n == k)
        .map_or("", |(_, v)| v.as_str())
}

fn reference(field: &str, v: &str) -> Result<VersionRef> {
    v.parse::<VersionRef>()
        .map_err(|e| Error::invalid(format!("query {field}"), e.to_string()))
}

fn since(v: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    if v.is_empty() {
        return Ok(None);
    }
    crate::store::manifest::parse_time(v)
        .map(Some)
        .ok_or_else(|| {
            Error::invalid(
                "query since",
                format!("{v:?}: use RFC 3339 (2026-01-31T12:00:00Z) or YYYY-MM-DD"),
            )
        })
}

/// The form the drift page starts with (filled with what was asked).
fn drift_form(p: &[(String, String)]) -> String {
    let field = |name: &str, label: &str, hint: &str| {
        format!(
            "<div><label for=\"q-{name}\">{label}</label><input id=\"q-{name}\" name=\"{name}\" value=\"{}\" placeholder=\"{hint}\"></div>",
            escape(get(p, name))
        )
    };
    format!(
        "<form class=\"search\" method=\"get\" action=\"/ui/drift\">\n{}\n{}\n{}\n{}\n<div><button type=\"submit\">Compare</button></div>\n</form>\n",
        field("training", "Training set", "training-readmission or b3:..."),
        field("online", "Online log", "online_log"),
        field("since", "Since", "2026-01-31"),
        field("set", "Feature set", "all sets"),
    )
}

/// Reads the drift report a query asks for (`None`: no training set or log named yet).
async fn drift_read(
    s: &Arc<Ui>,
    note: &AuditNote,
    query: &str,
) -> Result<(Vec<(String, String)>, Option<DriftReport>)> {
    let p = params(query, &["training", "online", "since", "set"])?;
    let (training, online) = (get(&p, "training"), get(&p, "online"));
    if training.is_empty() && online.is_empty() {
        return Ok((p, None));
    }
    if training.is_empty() || online.is_empty() {
        return Err(Error::invalid(
            if training.is_empty() {
                "query training"
            } else {
                "query online"
            },
            "empty: name both a training set and an online log",
        ));
    }
    let req = DriftRequest {
        training: reference("training", training)?,
        online: reference("online", online)?,
        since: since(get(&p, "since"))?,
        feature_set: Some(get(&p, "set"))
            .filter(|x| !x.is_empty())
            .map(str::to_string),
    };
    let report = crate::monitoring::drift(&s.store, &req).await?;
    note.add_datasets([report.training.to_string(), report.online.to_string()]);
    Ok((p, Some(report)))
}

/// `GET /ui/drift`: the form, and with `training` and `online` the drift per feature.
pub(super) async fn drift_page(State(s): State<Arc<Ui>>, caller: Caller, uri: Uri) -> Response {
    let flavor = Flavor::Html;
    let a = match admit(
        &s,
        "http:GET /ui/drift".into(),
        caller,
        flavor,
        DRIFT_ACTION,
    )
    .await
    {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = drift_read(&s, &a.note, uri.query().unwrap_or_default())
        .await
        .map(|(p, r)| drift_html(&p, r.as_ref()));
    a.done(&s, flavor, made).await
}

/// `GET /api/drift`: the drift report as JSON (`training` and `online` needed).
pub(super) async fn drift_json(State(s): State<Arc<Ui>>, caller: Caller, uri: Uri) -> Response {
    let flavor = Flavor::Json;
    let a = match admit(
        &s,
        "http:GET /api/drift".into(),
        caller,
        flavor,
        DRIFT_ACTION,
    )
    .await
    {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        match drift_read(&s, &a.note, uri.query().unwrap_or_default()).await? {
            (_, Some(r)) => {
                serde_json::to_string(&r).map_err(|e| Error::Internal(format!("drift JSON: {e}")))
            }
            (_, None) => Err(Error::invalid(
                "query training",
                "empty: name both a training set and an online log",
            )),
        }
    }
    .await;
    a.done(&s, flavor, made).await
}

/// Reads the skew report a query asks for (`None`: no log named yet).
async fn skew_read(
    s: &Arc<Ui>,
    note: &AuditNote,
    query: &str,
) -> Result<(Vec<(String, String)>, Option<SkewReport>)> {
    let p = params(query, &["online", "since"])?;
    let online = get(&p, "online");
    if online.is_empty() {
        return Ok((p, None));
    }
    let r = reference("online", online)?;
    let report = crate::monitoring::skew(&s.store, &r, since(get(&p, "since"))?).await?;
    note.add_datasets([report.online.to_string()]);
    note.add_datasets(report.timelines.iter().cloned());
    let mut patients: Vec<String> = report
        .examples
        .iter()
        .map(|m| m.patient_id.clone())
        .collect();
    patients.sort();
    patients.dedup();
    if !patients.is_empty() {
        note.set_patients(&patients);
    }
    Ok((p, Some(report)))
}

/// `GET /ui/skew`: the form, and with `online` the skew check.
pub(super) async fn skew_page(State(s): State<Arc<Ui>>, caller: Caller, uri: Uri) -> Response {
    let flavor = Flavor::Html;
    let a = match admit(&s, "http:GET /ui/skew".into(), caller, flavor, SKEW_ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = skew_read(&s, &a.note, uri.query().unwrap_or_default())
        .await
        .map(|(p, r)| skew_html(&p, r.as_ref()));
    a.done(&s, flavor, made).await
}

/// `GET /api/skew`: the skew report as JSON, with `ok` (`online` needed).
pub(super) async fn skew_json(State(s): State<Arc<Ui>>, caller: Caller, uri: Uri) -> Response {
    let flavor = Flavor::Json;
    let a = match admit(&s, "http:GET /api/skew".into(), caller, flavor, SKEW_ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        match skew_read(&s, &a.note, uri.query().unwrap_or_default()).await? {
            (_, Some(r)) => {
                let mut v = serde_json::to_value(&r)
                    .map_err(|e| Error::Internal(format!("skew JSON: {e}")))?;
                v["ok"] = serde_json::json!(r.ok());
                Ok(v.to_string())
            }
            (_, None) => Err(Error::invalid("query online", "empty: name an online log")),
        }
    }
    .await;
    a.done(&s, flavor, made).await
}

const W: usize = 420;
const H: usize = 170;
const LEFT: usize = 44;
const BOTTOM: usize = 40;
const TOP: usize = 8;
const RIGHT: usize = 8;

/// A number as a share with one decimal.
fn pct(n: u64, total: u64) -> String {
    if total == 0 {
        "-".into()
    } else {
        format!("{:.1} %", n as f64 * 100.0 / total as f64)
    }
}

/// One feature's two histograms as an inline SVG figure (training and online bars side by
/// side per bin, as shares of their totals), then the bins as a table.
pub fn drift_svg(f: &FeatureDrift, id: &str) -> String {
    let te: u64 = f.bins.iter().map(|b| b.training).sum();
    let to: u64 = f.bins.iter().map(|b| b.online).sum();
    let share = |n: u64, t: u64| if t == 0 { 0.0 } else { n as f64 / t as f64 };
    let peak = f
        .bins
        .iter()
        .flat_map(|b| [share(b.training, te), share(b.online, to)])
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let plot_w = (W - LEFT - RIGHT) as f64;
    let plot_h = (H - TOP - BOTTOM) as f64;
    let slot = plot_w / f.bins.len().max(1) as f64;
    let bar = ((slot - 2.0) / 2.0).max(1.0);
    let psi = f
        .psi
        .map_or("no online values".to_string(), |p| format!("PSI {p:.4}"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<figure class=\"plot drift level-{level}\" aria-labelledby=\"{id}-cap\">\n<svg class=\"histogram\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"{id}-title\">\n<title id=\"{id}-title\">Histograms of {name}: {te} training values and {to} online values in {n} bins; {psi}</title>",
        level = f.level.as_str(),
        name = escape(&f.feature),
        n = f.bins.len(),
    );
    let base = TOP as f64 + plot_h;
    let _ = writeln!(
        s,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{base}\" x2=\"{x2}\" y2=\"{base}\"/><line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{base}\"/>",
        x2 = W - RIGHT
    );
    for (i, b) in f.bins.iter().enumerate() {
        let x0 = LEFT as f64 + slot * i as f64 + 1.0;
        for (k, (n, t, class, who)) in [
            (b.training, te, "bar", "training"),
            (b.online, to, "bar online", "online"),
        ]
        .into_iter()
        .enumerate()
        {
            let h = (share(n, t) / peak * plot_h).round();
            let h = if n > 0 { h.max(1.0) } else { 0.0 };
            let _ = writeln!(
                s,
                "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\"><title>{label}, {who}: {n} ({p})</title></rect>",
                x = x0 + bar * k as f64,
                y = base - h,
                label = escape(&b.label),
                p = pct(n, t),
            );
        }
        if f.bins.len() <= 12 {
            let _ = writeln!(
                s,
                "<text class=\"tick mid\" x=\"{x:.1}\" y=\"{y}\">{label}</text>",
                x = x0 + bar,
                y = base + 14.0 + if i % 2 == 1 { 12.0 } else { 0.0 },
                label = escape(&b.label),
            );
        }
    }
    let _ = writeln!(
        s,
        "<text class=\"tick end\" x=\"{xl}\" y=\"{yt}\">{top:.0} %</text><text class=\"tick end\" x=\"{xl}\" y=\"{base}\">0</text>",
        xl = LEFT - 4,
        yt = TOP + 10,
        top = peak * 100.0,
    );
    s.push_str("</svg>\n");
    let _ = writeln!(
        s,
        "<figcaption id=\"{id}-cap\"><code>{name}</code>: <strong class=\"psi\">{psi}</strong> ({level}); <span class=\"key training\">training</span> {te} values, <span class=\"key online\">online</span> {to} values</figcaption>",
        name = escape(&f.feature),
        level = f.level.as_str(),
    );
    let _ = writeln!(
        s,
        "<details><summary>Bins of <code>{}</code> as a table</summary>\n<table><thead><tr><th scope=\"col\">Bin</th><th scope=\"col\">Training</th><th scope=\"col\">Share</th><th scope=\"col\">Online</th><th scope=\"col\">Share</th></tr></thead><tbody>",
        escape(&f.feature)
    );
    for b in &f.bins {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&b.label),
            b.training,
            pct(b.training, te),
            b.online,
            pct(b.online, to)
        );
    }
    s.push_str("</tbody></table></details>\n</figure>\n");
    s
}

/// The drift page.
pub fn drift_html(p: &[(String, String)], report: Option<&DriftReport>) -> String {
    let mut b = String::from("<h1>Drift <small>training set against online lookups</small></h1>\n");
    b.push_str("<p class=\"hint\">PSI per feature over bins of the training values (deciles, or the ten most frequent texts, and <q>no value</q>): below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 a significant shift (<code>docs/monitoring.md</code>).</p>\n");
    b.push_str(&drift_form(p));
    let Some(r) = report else {
        b.push_str("<p>Name a training set and the online lookup log (<code>online_log</code> unless <code>[online_log] name</code> says otherwise) to compare them.</p>\n");
        return page("Drift", &b);
    };
    let _ = writeln!(
        b,
        "<dl class=\"facts\"><dt>Training set</dt><dd><a href=\"{th}\"><code class=\"hash\">{t}</code></a> ({tn})</dd><dt>Online log</dt><dd><a href=\"{oh}\"><code class=\"hash\">{o}</code></a> ({ov} versions)</dd><dt>Online lookups</dt><dd>{l} ({v} values{since})</dd><dt>Highest PSI</dt><dd>{max}</dd></dl>",
        th = version_href(&r.training.to_string()),
        t = r.training,
        tn = escape(&r.training_name),
        oh = version_href(&r.online.to_string()),
        o = r.online,
        ov = r.online_versions,
        l = r.online_lookups,
        v = r.online_values,
        since = r
            .since
            .map(|t| format!(", since {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
            .unwrap_or_default(),
        max = r
            .max_psi
            .map_or("-".to_string(), |p| format!("{p:.4} ({})", Level::of(Some(p)).as_str())),
    );
    if r.features.iter().any(|f| f.level == Level::Significant) {
        let names: Vec<String> = r
            .features
            .iter()
            .filter(|f| f.level == Level::Significant)
            .map(|f| escape(&f.feature))
            .collect();
        let _ = writeln!(
            b,
            "<p class=\"status broken\">Significant drift (PSI above 0.25) in {}.</p>",
            names.join(", ")
        );
    }
    b.push_str("<table>\n<caption>PSI per feature</caption>\n<thead><tr><th scope=\"col\">Feature</th><th scope=\"col\">PSI</th><th scope=\"col\">Level</th><th scope=\"col\">Training values</th><th scope=\"col\">Online values</th></tr></thead>\n<tbody>\n");
    for (i, f) in r.features.iter().enumerate() {
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\"><a href=\"#f{i}\">{}</a></th><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&f.feature),
            f.psi.map_or("-".to_string(), |p| format!("{p:.4}")),
            f.level.as_str(),
            f.training_values,
            f.online_values
        );
    }
    b.push_str("</tbody>\n</table>\n");
    if !r.not_served.is_empty() {
        let _ = writeln!(
            b,
            "<p>Not served online (no logged value): {}</p>",
            r.not_served
                .iter()
                .map(|f| format!("<code>{}</code>", escape(f)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !r.not_trained.is_empty() {
        let _ = writeln!(
            b,
            "<p>Logged but not in the training set: {}</p>",
            r.not_trained
                .iter()
                .map(|f| format!("<code>{}</code>", escape(f)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    b.push_str("<h2>Histograms</h2>\n<div class=\"plots\">\n");
    for (i, f) in r.features.iter().enumerate() {
        let _ = writeln!(
            b,
            "<section id=\"f{i}\" aria-label=\"{}\">",
            escape(&f.feature)
        );
        b.push_str(&drift_svg(f, &format!("d{i}")));
        b.push_str("</section>\n");
    }
    b.push_str("</div>\n");
    let _ = writeln!(
        b,
        "<p><a href=\"/ui/skew?online={}\">Skew check of this log</a></p>",
        percent_encode(&r.online.to_string())
    );
    page("Drift", &b)
}

/// The skew page.
pub fn skew_html(p: &[(String, String)], report: Option<&SkewReport>) -> String {
    let mut b = String::from(
        "<h1>Skew <small>online lookups replayed as historical lookups</small></h1>\n",
    );
    b.push_str("<p class=\"hint\">Each logged online lookup is looked up again as a training set would be: same patient, same time, same timeline. Ward answers both through one rule over one timeline, so no value should differ.</p>\n");
    let _ = writeln!(
        b,
        "<form class=\"search\" method=\"get\" action=\"/ui/skew\">\n<div><label for=\"q-online\">Online log</label><input id=\"q-online\" name=\"online\" value=\"{}\" placeholder=\"online_log\"></div>\n<div><label for=\"q-since\">Since</label><input id=\"q-since\" name=\"since\" value=\"{}\" placeholder=\"2026-01-31\"></div>\n<div><button type=\"submit\">Replay</button></div>\n</form>",
        escape(get(p, "online")),
        escape(get(p, "since"))
    );
    let Some(r) = report else {
        b.push_str("<p>Name the online lookup log to replay it.</p>\n");
        return page("Skew", &b);
    };
    if r.ok() {
        let _ = writeln!(
            b,
            "<p class=\"status ok\" role=\"status\"><strong>No skew</strong>: 0 of {} logged values differ from their replay ({} lookups, {} timeline(s)).</p>",
            r.values,
            r.lookups,
            r.timelines.len()
        );
    } else {
        let _ = writeln!(
            b,
            "<p role=\"alert\" class=\"alarm\"><strong>Training/serving skew</strong>: {} of {} logged values differ from their replay{}.</p>",
            r.differing,
            r.values,
            if r.unreplayable > 0 {
                format!("; {} cannot be replayed (timeline not in the store)", r.unreplayable)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        b,
        "<dl class=\"facts\"><dt>Online log</dt><dd><a href=\"{}\"><code class=\"hash\">{}</code></a> ({} versions)</dd><dt>Timelines</dt><dd>{}</dd></dl>",
        version_href(&r.online.to_string()),
        r.online,
        r.online_versions,
        if r.timelines.is_empty() {
            "none".to_string()
        } else {
            r.timelines
                .iter()
                .map(|t| format!("<a href=\"{}\"><code class=\"hash\">{}</code></a>", version_href(t), escape(t)))
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    b.push_str("<table>\n<caption>Values compared per feature</caption>\n<thead><tr><th scope=\"col\">Feature</th><th scope=\"col\">Compared</th><th scope=\"col\">Differing</th></tr></thead>\n<tbody>\n");
    for f in &r.features {
        let _ = writeln!(
            b,
            "<tr{}><th scope=\"row\">{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            if f.differing > 0 { " class=\"denied\"" } else { "" },
            escape(&f.feature),
            f.compared,
            f.differing
        );
    }
    b.push_str("</tbody>\n</table>\n");
    if !r.examples.is_empty() {
        b.push_str("<table>\n<caption>Values that differ (the first 20)</caption>\n<thead><tr><th scope=\"col\">Row</th><th scope=\"col\">Patient</th><th scope=\"col\">As of</th><th scope=\"col\">Feature</th><th scope=\"col\">Served</th><th scope=\"col\">Replayed</th></tr></thead>\n<tbody>\n");
        for m in &r.examples {
            let _ = writeln!(
                b,
                "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                m.seq,
                escape(&m.patient_id),
                m.as_of.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                escape(&m.feature),
                escape(&m.logged),
                escape(&m.replayed)
            );
        }
        b.push_str("</tbody>\n</table>\n");
    }
    for n in &r.notes {
        let _ = writeln!(b, "<p>{}</p>", escape(n));
    }
    page("Skew", &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitoring::drift::DriftBin;

    #[test]
    fn the_drift_figure_has_two_bars_per_bin_and_escapes_names() {
        let f = FeatureDrift {
            feature: "<x>".into(),
            kind: "numeric",
            psi: Some(0.5),
            level: Level::Significant,
            training_values: 10,
            online_values: 4,
            bins: vec![
                DriftBin {
                    label: "≤ 1".into(),
                    training: 10,
                    online: 0,
                },
                DriftBin {
                    label: "no value".into(),
                    training: 0,
                    online: 4,
                },
            ],
        };
        let s = drift_svg(&f, "d0");
        assert_eq!(s.matches("<rect class=\"bar\"").count(), 2, "{s}");
        assert_eq!(s.matches("<rect class=\"bar online\"").count(), 2, "{s}");
        assert!(s.contains("&lt;x&gt;") && !s.contains("<x>"), "{s}");
        assert!(s.contains("PSI 0.5000"), "{s}");
    }

    #[test]
    fn unknown_parameters_are_refused() {
        assert!(params("training=a&online=b", &["training", "online"]).is_ok());
        let e = params("nope=1", &["online"])
            .expect_err("unknown")
            .to_string();
        assert!(e.contains("query nope"), "{e}");
    }
}
