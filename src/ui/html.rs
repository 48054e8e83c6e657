//! The catalog's HTML: pages written server-side, every string escaped, the lineage graph as
//! inline SVG (no script, no CDN; the style sheet is in the binary).

use std::fmt::Write as _;

use super::catalog::{percent_encode, Graph, Search, Snapshot};
use super::stats::{self, ColumnClass, VersionStats};
use crate::store::{Kind, Manifest};

/// The style sheet, served at `/ui/style.css`.
pub const STYLE: &str = include_str!("style.css");

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by character references: safe in element
/// content and in quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The link to a version's page.
pub fn version_href(hash: &str) -> String {
    format!("/ui/versions/{}", percent_encode(hash))
}

/// A whole page: `title` (escaped here) around `body` (already HTML).
pub fn page(title: &str, body: &str) -> String {
    format!(
        r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t} · Ward</title>
<link rel="stylesheet" href="/ui/style.css">
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header><nav aria-label="Ward"><a href="/ui/">Ward catalog</a> <a href="/ui/feature-sets">Feature sets</a> <a href="/ui/models">Models</a> <a href="/ui/audit">Audit</a></nav></header>
<main id="main" tabindex="-1">
{body}
</main>
</body>
</html>
"##,
        t = escape(title)
    )
}

/// A refusal or error page (401, 403, 404, 400).
pub fn problem(status: u16, title: &str, detail: &str) -> String {
    page(
        title,
        &format!(
            "<h1>{} {}</h1>\n<p role=\"alert\">{}</p>\n",
            status,
            escape(title),
            escape(detail)
        ),
    )
}

/// Bytes for people: `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The short form of a hash shown in tables (`b3:` and 12 digits); the full one is in the
/// link and its title.
fn short(hash: &str) -> &str {
    hash.get(..15).unwrap_or(hash)
}

/// The catalog page: the search form, one page of `rows` out of `total`.
pub fn catalog(search: &Search, rows: &[&Manifest], total: usize, snap: &Snapshot) -> String {
    let mut b = String::new();
    b.push_str("<h1>Catalog</h1>\n");
    b.push_str("<form method=\"get\" action=\"/ui/\" class=\"search\" role=\"search\">\n");
    let _ = write!(
        b,
        "<div><label for=\"q\">Name or hash prefix</label>\n<input id=\"q\" name=\"q\" type=\"search\" value=\"{}\"></div>\n",
        escape(&search.q)
    );
    b.push_str("<div><label for=\"kind\">Kind</label>\n<select id=\"kind\" name=\"kind\">\n<option value=\"\">any</option>\n");
    for k in [
        Kind::Raw,
        Kind::Curated,
        Kind::Quarantine,
        Kind::Timeline,
        Kind::Training,
        Kind::Model,
        Kind::Other,
    ] {
        let sel = if search.kind == Some(k) {
            " selected"
        } else {
            ""
        };
        let _ = writeln!(b, "<option value=\"{k}\"{sel}>{k}</option>");
    }
    b.push_str("</select></div>\n");
    let _ = write!(
        b,
        "<div><label for=\"tag\">Tag</label>\n<input id=\"tag\" name=\"tag\" type=\"text\" value=\"{}\"></div>\n",
        escape(&search.tag)
    );
    b.push_str("<div><button type=\"submit\">Search</button></div>\n</form>\n");
    let first = if rows.is_empty() {
        0
    } else {
        search.offset + 1
    };
    let _ = writeln!(
        b,
        "<p id=\"count\" aria-live=\"polite\">{} of {total} versions shown ({first}&ndash;{}).</p>",
        rows.len(),
        search.offset + rows.len()
    );
    b.push_str("<table aria-describedby=\"count\">\n<caption>Versions, newest first</caption>\n<thead><tr>");
    for h in [
        "Hash",
        "Name",
        "Kind",
        "Rows",
        "Size",
        "Created (UTC)",
        "Tags",
    ] {
        let _ = write!(b, "<th scope=\"col\">{h}</th>");
    }
    b.push_str("</tr></thead>\n<tbody>\n");
    for m in rows {
        let hash = m.hash.to_string();
        let tags = snap
            .tags_of(&m.hash)
            .iter()
            .map(|t| {
                format!(
                    "<a href=\"/ui/?tag={}\">{}</a>",
                    escape(&percent_encode(t)),
                    escape(t)
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\"><a href=\"{}\" title=\"{h}\"><code>{}</code></a></th><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{tags}</td></tr>",
            escape(&version_href(&hash)),
            escape(short(&hash)),
            escape(&m.name),
            m.kind,
            m.rows,
            human_bytes(m.bytes),
            m.created_at.format("%Y-%m-%d %H:%M:%S"),
            h = escape(&hash),
        );
    }
    b.push_str("</tbody>\n</table>\n");
    let mut nav = Vec::new();
    if search.offset > 0 {
        let prev = search.offset.saturating_sub(search.limit);
        nav.push(format!(
            "<a href=\"/ui/?{}\" rel=\"prev\">Newer</a>",
            escape(&search.query_at(prev))
        ));
    }
    if search.offset + rows.len() < total {
        nav.push(format!(
            "<a href=\"/ui/?{}\" rel=\"next\">Older</a>",
            escape(&search.query_at(search.offset + search.limit))
        ));
    }
    if !nav.is_empty() {
        let _ = writeln!(b, "<nav aria-label=\"Pages\">{}</nav>", nav.join(" "));
    }
    page("Catalog", &b)
}

/// A version's page: manifest, tags, schema, lineage (as SVG and as lists).
pub fn version(m: &Manifest, snap: &Snapshot, graph: &Graph) -> String {
    let hash = m.hash.to_string();
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>{} <small>({})</small></h1>\n<p><code class=\"hash\">{}</code></p>",
        escape(&m.name),
        m.kind,
        escape(&hash)
    );
    b.push_str("<section aria-labelledby=\"h-manifest\">\n<h2 id=\"h-manifest\">Manifest</h2>\n<dl class=\"facts\">\n");
    let tags = snap
        .tags_of(&m.hash)
        .iter()
        .map(|t| escape(t))
        .collect::<Vec<_>>()
        .join(", ");
    let definition = m
        .lineage
        .definition
        .map(|d| format!("<code>{}</code>", escape(&d.to_string())))
        .unwrap_or_else(|| "none".into());
    let facts = [
        ("Name", escape(&m.name)),
        ("Kind", m.kind.to_string()),
        ("Rows", m.rows.to_string()),
        (
            "Size",
            format!("{} ({} bytes)", human_bytes(m.bytes), m.bytes),
        ),
        ("Files", m.files.len().to_string()),
        ("Created (UTC)", m.created_at.to_rfc3339()),
        (
            "Tags (heads here)",
            if tags.is_empty() { "none".into() } else { tags },
        ),
        ("Definition", definition),
        ("Written by", format!("Ward {}", escape(&m.ward_version))),
    ];
    for (k, v) in facts {
        let _ = writeln!(b, "<dt>{k}</dt><dd>{v}</dd>");
    }
    for (k, v) in &m.labels {
        let _ = writeln!(b, "<dt>Label {}</dt><dd>{}</dd>", escape(k), escape(v));
    }
    b.push_str("</dl>\n");
    let _ = writeln!(
        b,
        "<p><a href=\"/api/versions/{}\">This manifest as JSON</a></p>",
        escape(&percent_encode(&hash))
    );
    let mut more = Vec::new();
    if stats::has_stats(m.kind) {
        more.push(format!(
            "<a href=\"{}/stats\">Column statistics and histograms</a>",
            escape(&version_href(&hash))
        ));
    }
    if m.kind == Kind::Model {
        more.push(format!(
            "<a href=\"{}\">Model card: metrics and training set</a>",
            escape(&super::models::model_href(&hash))
        ));
    }
    if m.kind == Kind::Quarantine {
        more.push(format!(
            "<a href=\"{}/quarantine\">Quarantined records and their reasons</a>",
            escape(&version_href(&hash))
        ));
    }
    if !more.is_empty() {
        let _ = writeln!(b, "<p class=\"more\">{}</p>", more.join(" · "));
    }
    b.push_str("</section>\n");
    b.push_str("<section aria-labelledby=\"h-lineage\">\n<h2 id=\"h-lineage\">Lineage</h2>\n");
    b.push_str(&svg(graph));
    let list = |title: &str, hashes: Vec<&crate::hash::ContentHash>| -> String {
        let mut s = format!("<h3>{title}</h3>\n");
        if hashes.is_empty() {
            s.push_str("<p>none</p>\n");
            return s;
        }
        s.push_str("<ul>\n");
        for h in hashes {
            let hs = h.to_string();
            let label = snap
                .get(h)
                .map(|m| format!("{} ({})", m.name, m.kind))
                .unwrap_or_else(|| "not in this store".into());
            let _ = writeln!(
                s,
                "<li><a href=\"{}\"><code>{}</code></a> {}</li>",
                escape(&version_href(&hs)),
                escape(short(&hs)),
                escape(&label)
            );
        }
        s.push_str("</ul>\n");
        s
    };
    b.push_str(&list("Inputs", m.lineage.inputs.iter().collect()));
    let users: Vec<_> = snap
        .versions
        .iter()
        .filter(|u| u.lineage.inputs.contains(&m.hash))
        .map(|u| &u.hash)
        .collect();
    b.push_str(&list("Used by", users));
    let _ = writeln!(
        b,
        "<p><a href=\"/api/lineage/{}\">This lineage as JSON</a></p>\n</section>",
        escape(&percent_encode(&hash))
    );
    b.push_str("<section aria-labelledby=\"h-schema\">\n<h2 id=\"h-schema\">Schema</h2>\n<table>\n<thead><tr><th scope=\"col\">Column</th><th scope=\"col\">Type</th><th scope=\"col\">Arrow type</th><th scope=\"col\">Nullable</th></tr></thead>\n<tbody>\n");
    for c in &m.schema {
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\"><code>{}</code></th><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&c.name),
            escape(&c.data_type),
            escape(&c.arrow_type),
            if c.nullable { "yes" } else { "no" }
        );
    }
    b.push_str("</tbody>\n</table>\n</section>\n");
    page(&format!("{} {}", m.name, short(&hash)), &b)
}

/// A version's statistics page: a table of every column (rows, nulls, range, mean or distinct
/// values) and a histogram per numeric and time column.
pub fn stats(m: &Manifest, st: &VersionStats) -> String {
    let hash = m.hash.to_string();
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>Statistics of {} <small>({})</small></h1>\n<p><a href=\"{}\">Back to the version</a> <code class=\"hash\">{}</code></p>",
        escape(&m.name),
        m.kind,
        escape(&version_href(&hash)),
        escape(&hash)
    );
    let _ = writeln!(
        b,
        "<p>{} rows, {} columns. Text columns show how many distinct values they hold, never a value.</p>",
        st.rows,
        st.columns.len()
    );
    b.push_str("<section aria-labelledby=\"h-columns\">\n<h2 id=\"h-columns\">Columns</h2>\n<table class=\"stats\">\n<thead><tr>");
    for h in [
        "Column",
        "Type",
        "Rows",
        "Nulls",
        "Null rate",
        "Min",
        "Max",
        "Mean",
        "Distinct / true:false",
    ] {
        let _ = write!(b, "<th scope=\"col\">{h}</th>");
    }
    b.push_str("</tr></thead>\n<tbody>\n");
    for c in &st.columns {
        let show = |v: Option<f64>| v.map(|v| escape(&c.show(v))).unwrap_or_else(|| "-".into());
        let other = match c.class {
            ColumnClass::Text => c
                .distinct
                .map(|d| format!("{}{d}", if c.distinct_capped { "&gt; " } else { "" }))
                .unwrap_or_default(),
            ColumnClass::Boolean => format!(
                "{}:{}",
                c.true_count.unwrap_or(0),
                c.false_count.unwrap_or(0)
            ),
            _ => "-".into(),
        };
        let nan = if c.nan > 0 {
            format!(" ({} NaN)", c.nan)
        } else {
            String::new()
        };
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\"><code>{}</code></th><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}{nan}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{other}</td></tr>",
            escape(&c.name),
            escape(&c.arrow_type),
            c.rows,
            c.nulls,
            stats::percent(c.null_rate),
            show(c.min),
            show(c.max),
            c.mean.map(stats::number).unwrap_or_else(|| "-".into()),
        );
    }
    b.push_str("</tbody>\n</table>\n</section>\n");
    if !st.features.is_empty() {
        b.push_str(&features(st));
    }
    b.push_str("<section aria-labelledby=\"h-plots\">\n<h2 id=\"h-plots\">Histograms of the columns</h2>\n");
    let mut any = false;
    b.push_str("<div class=\"plots\">\n");
    for (i, c) in st.columns.iter().enumerate() {
        let svg = stats::histogram_svg(c, &format!("hist-{i}"));
        if !svg.is_empty() {
            any = true;
            b.push_str(&svg);
        }
    }
    b.push_str("</div>\n");
    if !any {
        b.push_str("<p>No numeric or time column with values.</p>\n");
    }
    let _ = writeln!(
        b,
        "<p><a href=\"/api/stats/{}\">These statistics as JSON</a></p>\n</section>",
        escape(&percent_encode(&hash))
    );
    page(&format!("Statistics {} {}", m.name, short(&hash)), &b)
}

/// A timeline's features: a table (change points, no-data rate, the numeric value's nulls,
/// range and mean, distinct text values) and a histogram of each feature's numeric value.
fn features(st: &VersionStats) -> String {
    let mut b = String::from("<section aria-labelledby=\"h-features\">\n<h2 id=\"h-features\">Features</h2>\n<p>Per feature of the timeline, over its change points (a row holds from its time until the feature's next row for that patient). No data: change points with no event in the feature's window.</p>\n<table class=\"stats features\">\n<thead><tr>");
    for h in [
        "Feature",
        "Change points",
        "No data",
        "Numeric value null rate",
        "Min",
        "Max",
        "Mean",
        "Distinct text values",
    ] {
        let _ = write!(b, "<th scope=\"col\">{h}</th>");
    }
    b.push_str("</tr></thead>\n<tbody>\n");
    let mut plots = String::new();
    for (i, f) in st.features.iter().enumerate() {
        let num = f.values.iter().find(|c| c.name == "value_num");
        let text = f.values.iter().find(|c| c.name == "value_text");
        let show = |v: Option<f64>| v.map(stats::number).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\"><code>{}</code></th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&f.feature),
            f.change_points,
            stats::percent(f.no_data_rate),
            num.map(|c| stats::percent(c.null_rate)).unwrap_or_else(|| "-".into()),
            show(num.and_then(|c| c.min)),
            show(num.and_then(|c| c.max)),
            show(num.and_then(|c| c.mean)),
            text.and_then(|c| c.distinct).unwrap_or(0),
        );
        if let Some(c) = num {
            let mut c = c.clone();
            c.name = f.feature.clone();
            plots.push_str(&stats::histogram_svg(&c, &format!("feat-{i}")));
        }
    }
    b.push_str("</tbody>\n</table>\n");
    if !plots.is_empty() {
        b.push_str("<h3>Histograms of the features' numeric values</h3>\n<div class=\"plots\">\n");
        b.push_str(&plots);
        b.push_str("</div>\n");
    }
    b.push_str("</section>\n");
    b
}

/// Column width, node size and row pitch of the lineage drawing.
const COL: usize = 230;
const NODE_W: usize = 200;
const NODE_H: usize = 46;
const ROW: usize = 62;
const PAD: usize = 10;

/// The lineage graph as inline SVG: one column per layer, left to right; every node a link
/// to its version's page; edges as curves from an input's right side to its user's left.
pub fn svg(g: &Graph) -> String {
    let rows = g.nodes.iter().map(|n| n.row + 1).max().unwrap_or(1);
    let width = g.layers.max(1) * COL + 2 * PAD;
    let height = rows * ROW + 2 * PAD;
    let pos = |hash: &str| {
        g.nodes
            .iter()
            .find(|n| n.hash == hash)
            .map(|n| (PAD + n.layer * COL, PAD + n.row * ROW))
    };
    let mut s = format!(
        "<figure class=\"lineage\">\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"group\" aria-labelledby=\"lineage-title\">\n<title id=\"lineage-title\">Lineage of {}: raw inputs on the left, versions made from them to the right</title>\n",
        escape(short(&g.root))
    );
    for e in &g.edges {
        if let (Some((fx, fy)), Some((tx, ty))) = (pos(&e.from), pos(&e.to)) {
            let (x1, y1) = (fx + NODE_W, fy + NODE_H / 2);
            let (x2, y2) = (tx, ty + NODE_H / 2);
            let mid = (x1 + x2) / 2;
            let _ = writeln!(
                s,
                "<path class=\"edge\" d=\"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}\"/>"
            );
        }
    }
    for n in &g.nodes {
        let (x, y) = (PAD + n.layer * COL, PAD + n.row * ROW);
        let class = if n.root {
            format!("node root kind-{}", n.kind)
        } else {
            format!("node kind-{}", n.kind)
        };
        let name = if n.name.is_empty() { "?" } else { &n.name };
        let name_shown: String = if name.chars().count() > 26 {
            name.chars().take(25).chain(['…']).collect()
        } else {
            name.to_string()
        };
        let _ = writeln!(
            s,
            "<a href=\"{href}\" class=\"{class}\"{current}><title>{name} ({kind}) {hash}</title><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\"/><text x=\"{tx}\" y=\"{ty1}\">{shown}</text><text x=\"{tx}\" y=\"{ty2}\" class=\"sub\">{kind} · {short}</text></a>",
            href = escape(&version_href(&n.hash)),
            current = if n.root { " aria-current=\"page\"" } else { "" },
            name = escape(name),
            kind = escape(&n.kind),
            hash = escape(&n.hash),
            tx = x + 8,
            ty1 = y + 19,
            ty2 = y + 37,
            shown = escape(&name_shown),
            short = escape(short(&n.hash)),
        );
    }
    s.push_str("</svg>\n<figcaption>Click a version to open it. Columns: raw, curated, timeline, training, model (empty columns left out).</figcaption>\n</figure>\n");
    s
}

/// A version's data-quality section (`docs/quality.md`): the status of its report and one
/// row per expectation, or a sentence saying that none were declared.
pub fn quality(report: Option<&crate::quality::Report>) -> String {
    let mut b = String::from(
        "<section aria-labelledby=\"h-quality\">\n<h2 id=\"h-quality\">Data quality</h2>\n",
    );
    let Some(r) = report else {
        b.push_str("<p>No expectations were declared for this version.</p>\n</section>\n");
        return b;
    };
    let _ = writeln!(
        b,
        "<p>Status: <strong class=\"quality-{0}\">{0}</strong> ({1} expectations, {2} blocking <code>prod</code>)</p>",
        r.status().as_str(),
        r.outcomes.len(),
        r.blocking().len()
    );
    b.push_str("<table>\n<thead><tr><th scope=\"col\">Expectation</th><th scope=\"col\">Check</th><th scope=\"col\">Severity</th><th scope=\"col\">Result</th><th scope=\"col\">Observed</th><th scope=\"col\">Declared at</th></tr></thead>\n<tbody>\n");
    for o in &r.outcomes {
        let result = if o.passed { "pass" } else { "fail" };
        let severity = o.severity.as_str();
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{severity}</td><td>{result}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&o.expectation),
            escape(&o.check),
            escape(&o.observed),
            escape(&o.location)
        );
    }
    b.push_str("</tbody>\n</table>\n</section>\n");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::catalog::{lineage, tests::chain, tests::hash};

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain é ✓"), "plain é ✓");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn pages_escape_names_and_link_every_node() {
        let mut snap = chain();
        // A hostile label and name are shown as text.
        let first = std::sync::Arc::make_mut(&mut snap.versions[0]);
        first
            .labels
            .insert("<b>".into(), "<script>alert(1)</script>".into());
        first.name = "x\"><script>".into();
        let m = snap.versions[0].clone();
        let g = lineage(&snap, &m.hash);
        let html = version(&m, &snap, &g);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<html lang=\"en\">") && html.contains("<main id=\"main\""));
        // The training set's graph: one link per node, the raw input among them.
        let t = snap.get(&hash(5)).expect("training").clone();
        let g = lineage(&snap, &t.hash);
        let html = version(&t, &snap, &g);
        let svg_part = &html[html.find("<svg").expect("svg")..html.find("</svg>").expect("end")];
        assert_eq!(svg_part.matches("<a href=\"/ui/versions/").count(), 5);
        assert!(svg_part.contains(&version_href(&hash(1).to_string())));
        assert_eq!(svg_part.matches("class=\"edge\"").count(), 5);
        // The catalog: labelled inputs, a header row with scopes, the tags as links.
        let s = Search::parse("kind=curated").expect("search");
        let (rows, total) = s.run(&snap);
        let html = catalog(&s, &rows, total, &snap);
        assert!(html.contains("<label for=\"q\">") && html.contains("<th scope=\"col\">Hash"));
        assert!(html.contains("<option value=\"curated\" selected>"));
        assert!(html.contains("<a href=\"/ui/?tag=patients\">patients</a>"));
        assert!(html.contains("3 of 3 versions"));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
