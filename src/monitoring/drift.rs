//! Drift between a training set and the online lookups logged since (`docs/monitoring.md`,
//! "Drift").
//!
//! For each feature of the training set that the log holds values of (matched by name: an
//! online set such as `readmission_online` shares its features' names with the training
//! set `readmission`), the values are put into bins taken from the **training**
//! distribution ([`Bins::of_numbers`], [`Bins::of_text`]): for numbers the deciles of the
//! training values (cut points `c1 < c2 < ...`, equal ones merged, bins `<= c1`, `(c1, c2]`,
//! ..., `> c_last`), for text the ten most frequent training values and `other`; both with
//! a `no value` bin for values absent (`no_data`, `outside_ttl`). Then
//!
//! ```text
//! PSI = sum over bins i of (a_i - e_i) * ln(a_i / e_i)
//! ```
//!
//! where `e_i` is the share of training values in bin `i` and `a_i` the share of online
//! values, each at least [`EPSILON`] (an empty bin would make the logarithm infinite). The
//! usual reading: below 0.1 no significant change, 0.1 to 0.25 a moderate change worth a
//! look, above 0.25 a significant shift ([`Level`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::log::{self, LoggedValue};
use crate::error::{Error, Result};
use crate::features::{Value, STATUS_SUFFIX};
use crate::hash::ContentHash;
use crate::store::{Store, VersionRef};

/// Quantile bins taken from the training values of a numeric feature.
pub const QUANTILE_BINS: usize = 10;

/// Most frequent training values given a bin each for a text feature.
pub const TEXT_BINS: usize = 10;

/// The smallest share a bin counts with in the PSI.
pub const EPSILON: f64 = 1e-4;

/// PSI below this: no significant change.
pub const MODERATE: f64 = 0.1;

/// PSI above this: a significant shift.
pub const SIGNIFICANT: f64 = 0.25;

/// How large a PSI is, by the usual thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Below [`MODERATE`].
    Stable,
    /// From [`MODERATE`] to [`SIGNIFICANT`].
    Moderate,
    /// Above [`SIGNIFICANT`].
    Significant,
    /// No online values to compare.
    NoData,
}

impl Level {
    /// The level of `psi`.
    pub fn of(psi: Option<f64>) -> Level {
        match psi {
            None => Level::NoData,
            Some(p) if p < MODERATE => Level::Stable,
            Some(p) if p <= SIGNIFICANT => Level::Moderate,
            Some(_) => Level::Significant,
        }
    }

    /// The level's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Stable => "stable",
            Level::Moderate => "moderate",
            Level::Significant => "significant",
            Level::NoData => "no_data",
        }
    }
}

/// The population stability index of `actual` against `expected` (counts per bin, same
/// bins); `None` when either has no values.
pub fn psi(expected: &[u64], actual: &[u64]) -> Option<f64> {
    let te: u64 = expected.iter().sum();
    let ta: u64 = actual.iter().sum();
    if te == 0 || ta == 0 || expected.len() != actual.len() {
        return None;
    }
    let mut sum = 0.0;
    for (&e, &a) in expected.iter().zip(actual) {
        let e = (e as f64 / te as f64).max(EPSILON);
        let a = (a as f64 / ta as f64).max(EPSILON);
        sum += (a - e) * (a / e).ln();
    }
    Some(sum)
}

/// The bins of one feature, from its training values; the last bin is always `no value`.
#[derive(Debug, Clone, PartialEq)]
pub enum Bins {
    /// Cut points, increasing: bin 0 is `<= c[0]`, bin i `(c[i-1], c[i]]`, bin `c.len()`
    /// `> c[last]` (one bin `any value` when there are none).
    Numbers(Vec<f64>),
    /// The categories, most frequent first; then `other`.
    Text(Vec<String>),
}

impl Bins {
    /// Decile cut points of `values` (not NaN), equal ones merged.
    pub fn of_numbers(values: &[f64]) -> Bins {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mut cuts: Vec<f64> = Vec::new();
        if n > 0 {
            for k in 1..QUANTILE_BINS {
                // Nearest rank: the smallest value with at least k/10 of the values at or below.
                let idx = (k * n).div_ceil(QUANTILE_BINS).saturating_sub(1).min(n - 1);
                let c = v[idx];
                if cuts.last() != Some(&c) {
                    cuts.push(c);
                }
            }
        }
        Bins::Numbers(cuts)
    }

    /// The [`TEXT_BINS`] most frequent of `values` (ties by text).
    pub fn of_text<'a>(values: impl IntoIterator<Item = &'a str>) -> Bins {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for v in values {
            *counts.entry(v).or_default() += 1;
        }
        let mut by: Vec<(&str, u64)> = counts.into_iter().collect();
        by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Bins::Text(
            by.into_iter()
                .take(TEXT_BINS)
                .map(|(s, _)| s.to_string())
                .collect(),
        )
    }

    /// The number of bins, `no value` included.
    pub fn len(&self) -> usize {
        match self {
            Bins::Numbers(c) => c.len() + 2,
            Bins::Text(c) => c.len() + 2,
        }
    }

    /// Always false: there is at least a value bin and the `no value` bin.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bin of a value (`None`: absent).
    pub fn bin(&self, v: Option<&Value>) -> usize {
        let none = self.len() - 1;
        match (self, v) {
            (_, None) => none,
            (Bins::Numbers(c), Some(v)) => {
                let x = match v {
                    Value::Num(x) => *x,
                    Value::Text(s) => match s.trim().parse::<f64>() {
                        Ok(x) => x,
                        Err(_) => return none,
                    },
                };
                if x.is_nan() {
                    return none;
                }
                c.iter().position(|&cut| x <= cut).unwrap_or(c.len())
            }
            (Bins::Text(c), Some(v)) => {
                let s = match v {
                    Value::Text(s) => s.clone(),
                    Value::Num(x) => x.to_string(),
                };
                c.iter().position(|x| *x == s).unwrap_or(c.len())
            }
        }
    }

    /// The labels of the bins, in order.
    pub fn labels(&self) -> Vec<String> {
        let show = crate::ui::stats::number;
        let mut out = Vec::with_capacity(self.len());
        match self {
            Bins::Numbers(c) if c.is_empty() => out.push("any value".to_string()),
            Bins::Numbers(c) => {
                out.push(format!("≤ {}", show(c[0])));
                for w in c.windows(2) {
                    out.push(format!("{} – {}", show(w[0]), show(w[1])));
                }
                out.push(format!("> {}", show(c[c.len() - 1])));
            }
            Bins::Text(c) => {
                out.extend(c.iter().cloned());
                out.push("other".to_string());
            }
        }
        out.push("no value".to_string());
        out
    }
}

/// What `ward drift` compares.
#[derive(Debug, Clone)]
pub struct DriftRequest {
    /// The training set.
    pub training: VersionRef,
    /// The newest version of the online lookup log to read back from.
    pub online: VersionRef,
    /// Only lookups requested at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only lookups of this feature set (default: every set in the log).
    pub feature_set: Option<String>,
}

/// One bin of a feature's two histograms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftBin {
    /// What the bin holds (`≤ 3`, `3 – 7`, `> 9`, a category, `other`, `no value`).
    pub label: String,
    /// Training values in it.
    pub training: u64,
    /// Online values in it.
    pub online: u64,
}

/// One feature's drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    /// The feature.
    pub feature: String,
    /// `numeric` or `text`.
    pub kind: &'static str,
    /// The PSI (`None`: no online values).
    pub psi: Option<f64>,
    /// Its reading.
    pub level: Level,
    /// Training values (rows of the training set).
    pub training_values: u64,
    /// Online values logged.
    pub online_values: u64,
    /// The bins with both counts.
    pub bins: Vec<DriftBin>,
}

/// What [`drift`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    /// The training set.
    pub training: ContentHash,
    /// Its name.
    pub training_name: String,
    /// The log version read back from.
    pub online: ContentHash,
    /// The log versions read.
    pub online_versions: usize,
    /// Only lookups requested at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only lookups of this set.
    pub feature_set: Option<String>,
    /// Lookups compared.
    pub online_lookups: usize,
    /// Values compared.
    pub online_values: usize,
    /// The features in both, in the training set's order.
    pub features: Vec<FeatureDrift>,
    /// Features of the training set with no logged value (labels, features not asked for).
    pub not_served: Vec<String>,
    /// Features logged that the training set does not hold.
    pub not_trained: Vec<String>,
    /// The highest PSI.
    pub max_psi: Option<f64>,
}

impl DriftReport {
    /// The report as lines for a terminal.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "training {} ({}) against online log {} ({} versions, {} lookups, {} values{})",
            self.training,
            self.training_name,
            self.online,
            self.online_versions,
            self.online_lookups,
            self.online_values,
            self.since
                .map(|t| format!(
                    ", since {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ))
                .unwrap_or_default()
        )];
        out.push(format!(
            "{:<32} {:>9} {:<12} {:>9} {:>9}",
            "feature", "psi", "level", "training", "online"
        ));
        for f in &self.features {
            out.push(format!(
                "{:<32} {:>9} {:<12} {:>9} {:>9}",
                f.feature,
                f.psi
                    .map(|p| format!("{p:.4}"))
                    .unwrap_or_else(|| "-".into()),
                f.level.as_str(),
                f.training_values,
                f.online_values
            ));
        }
        if !self.not_served.is_empty() {
            out.push(format!("not served online: {}", self.not_served.join(", ")));
        }
        if !self.not_trained.is_empty() {
            out.push(format!(
                "logged but not in the training set: {}",
                self.not_trained.join(", ")
            ));
        }
        out
    }
}

/// A training set's features: name, whether text, and the values (`None`: absent).
type TrainingValues = Vec<(String, bool, Vec<Option<Value>>)>;

/// The feature columns of a training set (each `X` with an `X__status` beside it) and their
/// values; `what` names the version in errors.
fn training_values(
    schema: &arrow::datatypes::Schema,
    batches: &[arrow::array::RecordBatch],
    what: &str,
) -> Result<TrainingValues> {
    let mut out: TrainingValues = Vec::new();
    for f in schema.fields() {
        let name = f.name();
        if name.ends_with(STATUS_SUFFIX)
            || schema
                .field_with_name(&format!("{name}{STATUS_SUFFIX}"))
                .is_err()
        {
            continue;
        }
        let text = matches!(
            f.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        let mut values = Vec::new();
        for b in batches {
            let col = b.column_by_name(name).ok_or_else(|| Error::BadInput {
                location: what.to_string(),
                field: name.clone(),
                reason: "missing from a batch".into(),
            })?;
            if text {
                let c = arrow::compute::cast(col, &DataType::Utf8)?;
                let c = c.as_string::<i32>();
                values.extend(c.iter().map(|v| v.map(|s| Value::Text(s.to_string()))));
            } else {
                let c =
                    arrow::compute::cast(col, &DataType::Float64).map_err(|e| Error::BadInput {
                        location: what.to_string(),
                        field: name.clone(),
                        reason: format!("not numbers or text: {e}"),
                    })?;
                let c = c.as_primitive::<arrow::datatypes::Float64Type>();
                values
                    .extend((0..c.len()).map(|i| (!c.is_null(i)).then(|| Value::Num(c.value(i)))));
            }
        }
        out.push((name.clone(), text, values));
    }
    if out.is_empty() {
        return Err(Error::invalid(
            "training",
            format!("{what} is not a training set: no feature columns (FEATURE beside FEATURE{STATUS_SUFFIX})"),
        ));
    }
    Ok(out)
}

/// Per feature, the PSI of the logged online values against the training set's, with both
/// histograms.
///
/// # Errors
/// [`Error::NotFound`] for an unknown version; [`Error::InvalidArgument`] when the training
/// version has no feature columns; [`Error::BadInput`] naming the log version, row and
/// column that is not a log.
pub async fn drift(store: &Store, req: &DriftRequest) -> Result<DriftReport> {
    let tm = store.resolve(&req.training)?;
    let what = format!("training set {}", tm.hash);
    let (schema, batches) = store.read(&tm.hash).await?;
    let training = training_values(&schema, &batches, &what)?;
    let online = log::read(store, &req.online, req.since).await?;
    let rows: Vec<&LoggedValue> = online
        .rows
        .iter()
        .filter(|r| req.feature_set.as_ref().is_none_or(|s| *s == r.feature_set))
        .collect();
    let mut by_feature: BTreeMap<&str, Vec<Option<&Value>>> = BTreeMap::new();
    for r in &rows {
        by_feature
            .entry(r.feature.as_str())
            .or_default()
            .push(r.value.as_ref());
    }
    let trained: BTreeSet<&str> = training.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut features = Vec::new();
    let mut not_served = Vec::new();
    for (name, text, values) in &training {
        let Some(served) = by_feature.get(name.as_str()) else {
            not_served.push(name.clone());
            continue;
        };
        let bins = if *text {
            Bins::of_text(values.iter().filter_map(|v| match v {
                Some(Value::Text(s)) => Some(s.as_str()),
                _ => None,
            }))
        } else {
            let nums: Vec<f64> = values
                .iter()
                .filter_map(|v| match v {
                    Some(Value::Num(x)) => Some(*x),
                    _ => None,
                })
                .collect();
            Bins::of_numbers(&nums)
        };
        let mut e = vec![0u64; bins.len()];
        let mut a = vec![0u64; bins.len()];
        for v in values {
            e[bins.bin(v.as_ref())] += 1;
        }
        for v in served {
            a[bins.bin(*v)] += 1;
        }
        let p = psi(&e, &a);
        features.push(FeatureDrift {
            feature: name.clone(),
            kind: if *text { "text" } else { "numeric" },
            psi: p,
            level: Level::of(p),
            training_values: values.len() as u64,
            online_values: served.len() as u64,
            bins: bins
                .labels()
                .into_iter()
                .zip(e.iter().zip(&a))
                .map(|(label, (&training, &online))| DriftBin {
                    label,
                    training,
                    online,
                })
                .collect(),
        });
    }
    let not_trained = by_feature
        .keys()
        .filter(|f| !trained.contains(*f))
        .map(|f| f.to_string())
        .collect();
    let max_psi = features.iter().filter_map(|f| f.psi).max_by(f64::total_cmp);
    let online_lookups = rows
        .iter()
        .map(|r| r.lookup)
        .collect::<std::collections::HashSet<_>>()
        .len();
    Ok(DriftReport {
        training: tm.hash,
        training_name: tm.name.clone(),
        online: online.head,
        online_versions: online.versions.len(),
        since: req.since,
        feature_set: req.feature_set.clone(),
        online_lookups,
        online_values: rows.len(),
        features,
        not_served,
        not_trained,
        max_psi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_distribution_has_a_psi_of_zero() {
        assert_eq!(psi(&[10, 20, 30, 0], &[10, 20, 30, 0]), Some(0.0));
        // Proportions, not counts, are compared.
        let p = psi(&[10, 20, 30, 0], &[100, 200, 300, 0]).expect("psi");
        assert!(p.abs() < 1e-12, "{p}");
    }

    #[test]
    fn the_formula_is_the_usual_one() {
        // e = (0.5, 0.5), a = (0.9, 0.1): (0.4 ln 1.8) + (-0.4 ln 0.2).
        let p = psi(&[50, 50], &[90, 10]).expect("psi");
        let want = 0.4 * (1.8f64).ln() + (-0.4) * (0.2f64).ln();
        assert!((p - want).abs() < 1e-12, "{p} vs {want}");
        assert_eq!(Level::of(Some(p)), Level::Significant);
        assert_eq!(Level::of(Some(0.05)), Level::Stable);
        assert_eq!(Level::of(Some(0.2)), Level::Moderate);
        assert_eq!(Level::of(None), Level::NoData);
    }

    #[test]
    fn an_empty_bin_counts_with_epsilon_not_infinity() {
        let p = psi(&[100, 0], &[50, 50]).expect("psi");
        assert!(p.is_finite() && p > SIGNIFICANT, "{p}");
        let e = EPSILON;
        let want = (0.5 - 1.0) * (0.5f64).ln() + (0.5 - e) * (0.5 / e).ln();
        assert!((p - want).abs() < 1e-9, "{p} vs {want}");
        assert_eq!(psi(&[0, 0], &[1, 1]), None);
        assert_eq!(psi(&[1, 1], &[0, 0]), None);
    }

    #[test]
    fn numeric_bins_are_training_deciles_with_ties_merged() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let Bins::Numbers(c) = Bins::of_numbers(&v) else {
            panic!("numbers")
        };
        assert_eq!(
            c,
            vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
        );
        let b = Bins::of_numbers(&v);
        assert_eq!(b.len(), 11);
        assert_eq!(b.bin(Some(&Value::Num(10.0))), 0);
        assert_eq!(b.bin(Some(&Value::Num(10.5))), 1);
        assert_eq!(b.bin(Some(&Value::Num(1e9))), 9);
        assert_eq!(b.bin(None), 10);
        // A flag: mostly 0, some 1: two cut points, no empty duplicates.
        let flags: Vec<f64> = (0..100).map(|i| f64::from(u8::from(i % 4 == 0))).collect();
        let b = Bins::of_numbers(&flags);
        assert_eq!(b, Bins::Numbers(vec![0.0, 1.0]));
        assert_eq!(b.labels(), vec!["≤ 0", "0 – 1", "> 1", "no value"]);
        // No training values: one value bin.
        assert_eq!(
            Bins::of_numbers(&[]).labels(),
            vec!["any value", "no value"]
        );
    }

    #[test]
    fn text_bins_are_the_frequent_training_values_and_other() {
        let b = Bins::of_text(["a", "b", "a", "c", "a", "b"]);
        assert_eq!(b.labels(), vec!["a", "b", "c", "other", "no value"]);
        assert_eq!(b.bin(Some(&Value::Text("z".into()))), 3);
        assert_eq!(b.bin(Some(&Value::Text("b".into()))), 1);
    }

    #[test]
    fn a_shift_of_the_whole_distribution_is_significant() {
        let train: Vec<f64> = (0..1000).map(|i| f64::from(i % 100)).collect();
        let b = Bins::of_numbers(&train);
        let count = |vals: &[f64]| {
            let mut c = vec![0u64; b.len()];
            for v in vals {
                c[b.bin(Some(&Value::Num(*v)))] += 1;
            }
            c
        };
        let same = count(&train);
        let shifted: Vec<f64> = train.iter().map(|v| v + 50.0).collect();
        let p0 = psi(&same, &count(&train)).expect("psi");
        let p1 = psi(&same, &count(&shifted)).expect("psi");
        assert!(p0.abs() < 1e-12, "{p0}");
        assert!(p1 > SIGNIFICANT, "{p1}");
    }
}
