//! Model cards (`docs/models.md`): a model registered with the training set it was trained
//! on, so lineage runs from the raw input through curated tables, a timeline and a training
//! set to the model.
//!
//! A card is stored as a version of kind [`Kind::Model`]: one row (the model's name, the
//! training set's hash, owner, description and the metrics as canonical JSON), so its content
//! hash covers every field of the card and registering the same card twice gives the same
//! version. Its one lineage input is the training set; the card is repeated in
//! `lineage.params` (`{"op": "register_model", "card": {...}}`) so the catalog, the UI and
//! `ListModels` read it from the manifest without opening the rows.
//!
//! Registering is a write (the permission `datasets_write`, as tagging and uploads) and is
//! audited: `ward register` leaves a `cli:register` record, the RPC `ward.v1.Models/
//! RegisterModel` its call's record.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::store::manifest::validate_name;
use crate::store::{Kind, ListFilter, Manifest, PutOptions, Store, VersionRef};

/// The operation named in a card's `lineage.params`.
pub const OP: &str = "register_model";

/// The longest metric name, owner or description kept (in characters).
const MAX_NAME: usize = 100;
const MAX_TEXT: usize = 4000;
/// The most metrics a card holds.
const MAX_METRICS: usize = 200;

/// A model card: what the model is, who owns it, what it was trained on, how it scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The model's name (the version's dataset name).
    pub name: String,
    /// The training set it was trained on.
    pub training: ContentHash,
    /// Who answers for it (free text, e.g. a team or an e-mail address).
    #[serde(default)]
    pub owner: String,
    /// What it predicts, for whom, and how it should (not) be used.
    #[serde(default)]
    pub description: String,
    /// Its evaluation metrics by name (e.g. `auc`), finite numbers.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// What `register` is asked to record.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// The model's name.
    pub name: String,
    /// The training set: a hash, a unique prefix, a name or `NAME@TIME`.
    pub training: String,
    /// The owner (may be empty).
    pub owner: String,
    /// The description (may be empty).
    pub description: String,
    /// The metrics.
    pub metrics: BTreeMap<String, f64>,
}

/// A registered card and its version.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The card's version.
    pub manifest: Manifest,
    /// The card.
    pub card: ModelCard,
    /// False when the same card was registered before (nothing new stored).
    pub created: bool,
}

/// Checks a metric name: 1 to 100 characters, no control characters.
fn check_metric_name(name: &str, origin: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME {
        return Err(Error::BadInput {
            location: origin.to_string(),
            field: format!("metric {name:?}"),
            reason: format!("a metric name is 1 to {MAX_NAME} characters"),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(Error::BadInput {
            location: origin.to_string(),
            field: format!("metric {name:?}"),
            reason: "a metric name may not hold control characters".into(),
        });
    }
    Ok(())
}

/// Adds metric `name` = `value` to `metrics`, refusing a non-finite value or a name given
/// twice; `origin` names where it came from in errors.
///
/// # Errors
/// [`Error::BadInput`] naming `origin` and the metric.
pub fn add_metric(
    metrics: &mut BTreeMap<String, f64>,
    name: &str,
    value: f64,
    origin: &str,
) -> Result<()> {
    check_metric_name(name, origin)?;
    if !value.is_finite() {
        return Err(Error::BadInput {
            location: origin.to_string(),
            field: format!("metric {name:?}"),
            reason: format!("{value} is not a finite number"),
        });
    }
    if metrics.len() >= MAX_METRICS {
        return Err(Error::BadInput {
            location: origin.to_string(),
            field: format!("metric {name:?}"),
            reason: format!("a card holds at most {MAX_METRICS} metrics"),
        });
    }
    if metrics.insert(name.to_string(), value).is_some() {
        return Err(Error::BadInput {
            location: origin.to_string(),
            field: format!("metric {name:?}"),
            reason: "given twice".into(),
        });
    }
    Ok(())
}

/// Parses `--metric NAME=VALUE` into `metrics`.
///
/// # Errors
/// [`Error::BadInput`] (location `--metric NAME=VALUE`) without `=`, with a value that is
/// not a number, or as [`add_metric`].
pub fn parse_metric_arg(metrics: &mut BTreeMap<String, f64>, arg: &str) -> Result<()> {
    let origin = format!("--metric {arg}");
    let Some((k, v)) = arg.split_once('=') else {
        return Err(Error::BadInput {
            location: origin,
            field: "-".into(),
            reason: "give NAME=VALUE, e.g. auc=0.81".into(),
        });
    };
    let value: f64 = v.trim().parse().map_err(|_| Error::BadInput {
        location: origin.clone(),
        field: format!("metric {:?}", k.trim()),
        reason: format!("{:?} is not a number", v.trim()),
    })?;
    add_metric(metrics, k.trim(), value, &origin)
}

/// Parses a metrics file's text: one JSON object of metric names to numbers (`{"auc":
/// 0.81, "brier": 0.12}`); `origin` (the file's path) names it in errors.
///
/// # Errors
/// [`Error::BadInput`] naming `origin` and the line for bad JSON, and the metric for a value
/// that is not a finite number.
pub fn parse_metrics_json(
    text: &str,
    origin: &str,
    metrics: &mut BTreeMap<String, f64>,
) -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::BadInput {
        location: format!("{origin}:{}", e.line()),
        field: "-".into(),
        reason: format!("not JSON: {e}"),
    })?;
    let serde_json::Value::Object(map) = v else {
        return Err(Error::BadInput {
            location: origin.to_string(),
            field: "-".into(),
            reason: "expected one JSON object of metric names to numbers, e.g. {\"auc\": 0.81}"
                .into(),
        });
    };
    for (k, v) in &map {
        let Some(x) = v.as_f64() else {
            return Err(Error::BadInput {
                location: origin.to_string(),
                field: format!("metric {k:?}"),
                reason: format!("{v} is not a number"),
            });
        };
        add_metric(metrics, k, x, origin)?;
    }
    Ok(())
}

/// Checks free text of the card (owner, description): at most 4,000 characters, no control
/// characters but newlines and tabs.
fn check_text(what: &str, s: &str) -> Result<()> {
    if s.chars().count() > MAX_TEXT {
        return Err(Error::invalid(
            what,
            format!("at most {MAX_TEXT} characters"),
        ));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::invalid(what, "holds control characters"));
    }
    Ok(())
}

/// The card's one row: `model`, `training`, `owner`, `description`, `metrics` (canonical
/// JSON: names sorted).
fn card_batch(card: &ModelCard) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("training", DataType::Utf8, false),
        Field::new("owner", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("metrics", DataType::Utf8, false),
    ]));
    let metrics = serde_json::to_string(&card.metrics)
        .map_err(|e| Error::Internal(format!("metrics JSON: {e}")))?;
    let col = |s: &str| Arc::new(StringArray::from(vec![s.to_string()])) as _;
    RecordBatch::try_new(
        schema,
        vec![
            col(&card.name),
            col(&card.training.to_string()),
            col(&card.owner),
            col(&card.description),
            col(&metrics),
        ],
    )
    .map_err(|e| Error::Internal(format!("model card row: {e}")))
}

/// Registers a model card in `store`: checks the request, resolves the training set (which
/// must be a training version) and stores the card with the training set as its lineage
/// input; the card's name becomes its head.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad name, owner or description, or a training reference
/// that is not a training set; [`Error::NotFound`] for an unknown training set; the
/// store's write errors.
pub async fn register(store: &Store, r: &Registration) -> Result<Registered> {
    validate_name(&r.name).map_err(|e| Error::invalid("model name", e.to_string()))?;
    check_text("owner", &r.owner)?;
    check_text("description", &r.description)?;
    for (k, v) in &r.metrics {
        check_metric_name(k, "metrics")?;
        if !v.is_finite() {
            return Err(Error::invalid(
                format!("metric {k:?}"),
                format!("{v} is not a finite number"),
            ));
        }
    }
    if r.training.trim().is_empty() {
        return Err(Error::invalid(
            "training",
            "empty: give the training set's hash (b3:...), a unique prefix or its name",
        ));
    }
    let reference: VersionRef = r.training.trim().parse()?;
    let training = match store.resolve(&reference) {
        Ok(m) => m,
        Err(Error::NotFound { reference }) => {
            return Err(Error::NotFound {
                reference: format!("training set {reference} (no version in this store)"),
            })
        }
        Err(e) => return Err(e),
    };
    if training.kind != Kind::Training {
        return Err(Error::invalid(
            "training",
            format!(
                "{} ({}) is a {} version, not a training set (make one with `ward historical`)",
                training.hash, training.name, training.kind
            ),
        ));
    }
    let card = ModelCard {
        name: r.name.clone(),
        training: training.hash,
        owner: r.owner.trim().to_string(),
        description: r.description.trim().to_string(),
        metrics: r.metrics.clone(),
    };
    let batch = card_batch(&card)?;
    let mut opts = PutOptions::new(&card.name, Kind::Model);
    opts.lineage.inputs = vec![training.hash];
    opts.lineage.params = serde_json::json!({ "op": OP, "card": card });
    let out = store.put_batches(batch.schema(), vec![batch], opts).await?;
    Ok(Registered {
        manifest: out.manifest,
        card,
        created: out.created,
    })
}

/// The card of a model version, read from its manifest.
///
/// # Errors
/// [`Error::InvalidArgument`] when `m` is not a model card or its card does not parse.
pub fn card_of(m: &Manifest) -> Result<ModelCard> {
    if m.kind != Kind::Model {
        return Err(Error::invalid(
            "model",
            format!(
                "{} ({}) is a {} version, not a model card",
                m.hash, m.name, m.kind
            ),
        ));
    }
    let card = m.lineage.params.get("card").cloned().ok_or_else(|| {
        Error::invalid("model", format!("{}: the manifest holds no card", m.hash))
    })?;
    serde_json::from_value(card)
        .map_err(|e| Error::invalid("model", format!("{}: the card does not parse: {e}", m.hash)))
}

/// Every model card of `store`, newest first; `name` keeps only that model's.
///
/// # Errors
/// The store's read errors; as [`card_of`].
pub fn list(store: &Store, name: Option<&str>) -> Result<Vec<(Manifest, ModelCard)>> {
    let filter = ListFilter {
        kind: Some(Kind::Model),
        name: name.map(str::to_string),
    };
    store
        .list(&filter)?
        .into_iter()
        .map(|m| card_of(&m).map(|c| (m, c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parse_from_json_and_arguments() {
        let mut m = BTreeMap::new();
        parse_metrics_json(r#"{"auc": 0.81, "n": 120}"#, "m.json", &mut m).expect("json");
        parse_metric_arg(&mut m, "brier=0.12").expect("arg");
        assert_eq!(m.len(), 3);
        assert_eq!(m["n"], 120.0);
        let e = parse_metric_arg(&mut m, "auc=0.9").unwrap_err().to_string();
        assert!(e.contains("auc") && e.contains("twice"), "{e}");
        let e = parse_metric_arg(&mut m, "x=high").unwrap_err().to_string();
        assert!(
            e.contains("--metric x=high") && e.contains("not a number"),
            "{e}"
        );
        let e = parse_metric_arg(&mut m, "x").unwrap_err().to_string();
        assert!(e.contains("NAME=VALUE"), "{e}");
        let e = parse_metrics_json("{\n\"a\": \"good\"}", "m.json", &mut BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.json") && e.contains("\"a\""), "{e}");
        let e = parse_metrics_json("{\n\"a\": ", "m.json", &mut BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.json:2"), "{e}");
        let e = parse_metrics_json("[1]", "m.json", &mut BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("one JSON object"), "{e}");
        let e = parse_metric_arg(&mut m, "inf=inf").unwrap_err().to_string();
        assert!(e.contains("finite"), "{e}");
    }
}
