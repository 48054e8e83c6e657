//! Model cards in the UI (`docs/ui.md`, "Models"; `crate::models`): the list of registered
//! cards and a card's page (its fields, its metrics as a table, a link to its training set,
//! its lineage drawn from the raw input to the model), and the same as JSON. Read from the
//! cached catalog snapshot (a card lives in its manifest), with the catalog's permission
//! (`datasets_read`).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::json;

use super::catalog::{self, percent_encode, Graph, Snapshot};
use super::html::{escape, page, svg, version_href};
use super::{admit, snapshot, Caller, Flavor, Ui, ACTION};
use crate::error::{Error, Result};
use crate::models::{card_of, ModelCard};
use crate::store::{Kind, Manifest};

/// The link to a model card's page.
pub fn model_href(hash: &str) -> String {
    format!("/ui/models/{}", percent_encode(hash))
}

/// Every card in `snap`, newest first (a card that does not parse is left out of the list;
/// its own page reports why).
fn cards(snap: &Snapshot) -> Vec<(&Manifest, ModelCard)> {
    snap.versions
        .iter()
        .filter(|m| m.kind == Kind::Model)
        .filter_map(|m| card_of(m).ok().map(|c| (m.as_ref(), c)))
        .collect()
}

/// A card as JSON.
fn card_json(m: &Manifest, c: &ModelCard, snap: &Snapshot) -> serde_json::Value {
    let training = snap.get(&c.training);
    json!({
        "hash": m.hash.to_string(),
        "name": c.name,
        "owner": c.owner,
        "description": c.description,
        "metrics": c.metrics,
        "training": c.training.to_string(),
        "training_name": training.map(|t| t.name.clone()),
        "training_rows": training.map(|t| t.rows),
        "created_at": m.created_at,
        "tags": snap.tags_of(&m.hash),
    })
}

/// The list page: one row per card.
pub fn list_html(cards: &[(&Manifest, ModelCard)], snap: &Snapshot) -> String {
    let mut b = String::from("<h1>Models</h1>\n<p>Model cards registered with <code>ward register</code> (or the <code>RegisterModel</code> RPC), newest first. Each names the training set it was trained on, so its lineage reaches the raw input.</p>\n");
    if cards.is_empty() {
        b.push_str("<p>No model card is registered in this store.</p>\n");
        return page("Models", &b);
    }
    b.push_str("<table>\n<caption>Registered model cards</caption>\n<thead><tr>");
    for h in [
        "Model",
        "Owner",
        "Training set",
        "Metrics",
        "Registered (UTC)",
        "Card",
    ] {
        let _ = write!(b, "<th scope=\"col\">{h}</th>");
    }
    b.push_str("</tr></thead>\n<tbody>\n");
    for (m, c) in cards {
        let hash = m.hash.to_string();
        let training = c.training.to_string();
        let tname = snap
            .get(&c.training)
            .map(|t| t.name.clone())
            .unwrap_or_else(|| "not in this store".into());
        let metrics = c
            .metrics
            .iter()
            .map(|(k, v)| format!("{} {}", escape(k), super::stats::number(*v)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\"><a href=\"{}\">{}</a></th><td>{}</td><td><a href=\"{}\">{}</a></td><td>{metrics}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&model_href(&hash)),
            escape(&c.name),
            escape(&c.owner),
            escape(&version_href(&training)),
            escape(&tname),
            m.created_at.format("%Y-%m-%d %H:%M:%S"),
            escape(hash.get(..15).unwrap_or(&hash)),
        );
    }
    b.push_str("</tbody>\n</table>\n<p><a href=\"/api/models\">These cards as JSON</a></p>\n");
    page("Models", &b)
}

/// A card's page: its fields, metrics, training set and lineage.
pub fn card_html(m: &Manifest, c: &ModelCard, snap: &Snapshot, graph: &Graph) -> String {
    let hash = m.hash.to_string();
    let training = c.training.to_string();
    let t = snap.get(&c.training);
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>{} <small>(model card)</small></h1>\n<p><code class=\"hash\">{}</code></p>",
        escape(&c.name),
        escape(&hash)
    );
    b.push_str(
        "<section aria-labelledby=\"h-card\">\n<h2 id=\"h-card\">Card</h2>\n<dl class=\"facts\">\n",
    );
    let training_link = format!(
        "<a href=\"{}\" id=\"training-link\">{}</a> <code>{}</code>{}",
        escape(&version_href(&training)),
        escape(t.map_or("not in this store", |t| t.name.as_str())),
        escape(training.get(..15).unwrap_or(&training)),
        t.map(|t| format!(" ({} rows)", t.rows)).unwrap_or_default()
    );
    let or_none = |s: &str| {
        if s.is_empty() {
            "<em>not given</em>".to_string()
        } else {
            escape(s)
        }
    };
    let tags = snap
        .tags_of(&m.hash)
        .iter()
        .map(|t| escape(t))
        .collect::<Vec<_>>()
        .join(", ");
    for (k, v) in [
        ("Model", escape(&c.name)),
        ("Owner", or_none(&c.owner)),
        ("Description", or_none(&c.description)),
        ("Training set", training_link),
        ("Registered (UTC)", escape(&m.created_at.to_rfc3339())),
        (
            "Tags (heads here)",
            if tags.is_empty() { "none".into() } else { tags },
        ),
        (
            "Version",
            format!(
                "<a href=\"{}\">the card's version page</a>",
                escape(&version_href(&hash))
            ),
        ),
    ] {
        let _ = writeln!(b, "<dt>{k}</dt><dd>{v}</dd>");
    }
    b.push_str("</dl>\n</section>\n");
    b.push_str("<section aria-labelledby=\"h-metrics\">\n<h2 id=\"h-metrics\">Metrics</h2>\n");
    if c.metrics.is_empty() {
        b.push_str("<p>No metrics were registered with this card.</p>\n");
    } else {
        b.push_str("<table class=\"metrics\">\n<caption>Evaluation metrics as registered</caption>\n<thead><tr><th scope=\"col\">Metric</th><th scope=\"col\">Value</th></tr></thead>\n<tbody>\n");
        for (k, v) in &c.metrics {
            let _ = writeln!(
                b,
                "<tr><th scope=\"row\">{}</th><td class=\"num\">{}</td></tr>",
                escape(k),
                escape(&v.to_string())
            );
        }
        b.push_str("</tbody>\n</table>\n");
    }
    b.push_str("</section>\n");
    b.push_str("<section aria-labelledby=\"h-lineage\">\n<h2 id=\"h-lineage\">Lineage</h2>\n");
    b.push_str(&svg(graph));
    let _ = writeln!(
        b,
        "<p><a href=\"/api/models/{}\">This card as JSON</a> · <a href=\"/api/lineage/{}\">its lineage as JSON</a></p>\n</section>",
        escape(&percent_encode(&hash)),
        escape(&percent_encode(&hash))
    );
    page(&format!("Model {}", c.name), &b)
}

/// The card of the version `hash` names in `snap`.
fn find<'a>(snap: &'a Snapshot, hash: &str) -> Result<(&'a Manifest, ModelCard)> {
    let m = snap.find(hash)?;
    if m.kind != Kind::Model {
        return Err(Error::NotFound {
            reference: format!("model card {} ({} is a {} version)", hash, m.name, m.kind),
        });
    }
    Ok((m, card_of(m)?))
}

/// `GET /ui/models`: the registered cards.
pub(super) async fn list_page(State(s): State<Arc<Ui>>, caller: Caller) -> Response {
    let flavor = Flavor::Html;
    let a = match admit(&s, "http:GET /ui/models".into(), caller, flavor, ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        Ok(list_html(&cards(&snap), &snap))
    }
    .await;
    a.done(&s, flavor, made).await
}

/// `GET /api/models`: the same as JSON: `{"models": [...]}`.
pub(super) async fn list_json(State(s): State<Arc<Ui>>, caller: Caller) -> Response {
    let flavor = Flavor::Json;
    let a = match admit(&s, "http:GET /api/models".into(), caller, flavor, ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        let list: Vec<_> = cards(&snap)
            .iter()
            .map(|(m, c)| card_json(m, c, &snap))
            .collect();
        Ok(json!({ "models": list }).to_string())
    }
    .await;
    a.done(&s, flavor, made).await
}

/// `GET /ui/models/{hash}`: a card's page.
pub(super) async fn card_page(
    State(s): State<Arc<Ui>>,
    caller: Caller,
    Path(hash): Path<String>,
) -> Response {
    let flavor = Flavor::Html;
    let rpc = "http:GET /ui/models/{hash}".to_string();
    let a = match admit(&s, rpc, caller, flavor, ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        let (m, c) = find(&snap, &hash)?;
        a.note
            .add_datasets([m.hash.to_string(), c.training.to_string()]);
        let g = catalog::lineage(&snap, &m.hash);
        Ok(card_html(m, &c, &snap, &g))
    }
    .await;
    a.done(&s, flavor, made).await
}

/// `GET /api/models/{hash}`: a card as JSON.
pub(super) async fn card_json_route(
    State(s): State<Arc<Ui>>,
    caller: Caller,
    Path(hash): Path<String>,
) -> Response {
    let flavor = Flavor::Json;
    let rpc = "http:GET /api/models/{hash}".to_string();
    let a = match admit(&s, rpc, caller, flavor, ACTION).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let made = async {
        let snap = snapshot(&s).await?;
        let (m, c) = find(&snap, &hash)?;
        a.note
            .add_datasets([m.hash.to_string(), c.training.to_string()]);
        Ok(card_json(m, &c, &snap).to_string())
    }
    .await;
    a.done(&s, flavor, made).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::catalog::tests::{chain, hash, manifest};

    #[test]
    fn a_card_page_escapes_and_links_its_training_set() {
        let mut snap = chain();
        let card = ModelCard {
            name: "readmit<b>".into(),
            training: hash(5),
            owner: "team \"a\"".into(),
            description: "<script>x</script>".into(),
            metrics: [("auc".to_string(), 0.81)].into_iter().collect(),
        };
        let mut m = manifest(9, Kind::Model, "readmit", &[hash(5)]);
        m.lineage.params = json!({"op": crate::models::OP, "card": card});
        snap.versions.insert(0, std::sync::Arc::new(m.clone()));
        let c = card_of(&m).expect("card");
        assert_eq!(c, card);
        let g = catalog::lineage(&snap, &m.hash);
        assert!(g.nodes.iter().any(|n| n.kind == "model"));
        assert!(g.nodes.iter().any(|n| n.kind == "raw"));
        let model = g.nodes.iter().find(|n| n.kind == "model").expect("model");
        let training = g.nodes.iter().find(|n| n.kind == "training").expect("t");
        assert!(model.layer > training.layer, "{g:?}");
        let html = card_html(&m, &c, &snap, &g);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("readmit&lt;b&gt;"));
        assert!(html.contains(&format!(
            "href=\"/ui/versions/{}\"",
            percent_encode(&hash(5).to_string())
        )));
        assert!(html.contains("<th scope=\"row\">auc</th><td class=\"num\">0.81</td>"));
        let list = list_html(&cards(&snap), &snap);
        assert!(list.contains("auc 0.81"), "{list}");
        assert!(find(&snap, &hash(5).to_string()).is_err());
    }
}
