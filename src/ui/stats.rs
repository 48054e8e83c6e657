//! Column statistics of a version (`docs/ui.md`, "Statistics"): rows, nulls and null rate
//! per column; minimum, maximum, mean and a histogram for numeric and time columns; the
//! counts of `true` and `false` for Boolean ones; the number of distinct values for text
//! (no text value is shown: a column of names or identifiers must not leak through its
//! minimum). Drawn as inline SVG by [`histogram_svg`].
//!
//! For a timeline (`docs/features.md`, "Timeline schema": one row per change point of a
//! patient's feature) the same statistics are also given **per feature** ([`FeatureStats`]):
//! change points, the no-data rate (`count` = 0: no event in the window), and the
//! statistics of `value_num` (with its histogram), `value_text` and `value_time` over that
//! feature's rows.
//!
//! Computed by scanning the version: one pass over every column ([`Accumulator::observe`]),
//! then a second over the numeric and time columns only, to count each value into its bin
//! once the range is known ([`Accumulator::observe_bins`]). A version never changes (its
//! hash is its content), so the UI keeps the result in memory (`ui::StatsCache`).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{
    DataType, Float64Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType, UInt64Type,
};
use arrow::record_batch::RecordBatch;
use serde::Serialize;

use super::html::escape;
use crate::error::{Error, Result};
use crate::store::{Kind, Manifest, Store};

/// Bins of a histogram.
pub const BINS: usize = 20;

/// Distinct text values counted before the count is reported as "at least".
pub const DISTINCT_CAP: usize = 10_000;

/// How a column is summarized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnClass {
    /// Integers, floats and decimals: range, mean, histogram.
    Numeric,
    /// Dates and timestamps: range and histogram (milliseconds since 1970, shown as times).
    Time,
    /// `true`/`false` counts.
    Boolean,
    /// Strings: distinct count only.
    Text,
    /// Anything else (binary, lists, structs): rows and nulls only.
    Other,
}

impl ColumnClass {
    /// The class of an Arrow type.
    pub fn of(t: &DataType) -> ColumnClass {
        match t {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _) => ColumnClass::Numeric,
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => ColumnClass::Time,
            DataType::Boolean => ColumnClass::Boolean,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnClass::Text,
            DataType::Dictionary(_, v) if ColumnClass::of(v) == ColumnClass::Text => {
                ColumnClass::Text
            }
            _ => ColumnClass::Other,
        }
    }
}

/// A histogram over `[lo, hi]` in [`BINS`] equal bins (the last one closed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// The lowest value.
    pub lo: f64,
    /// The highest value.
    pub hi: f64,
    /// Values in each bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// The bin of `v` (values outside the range are clamped into the end bins).
    fn bin(&self, v: f64) -> usize {
        let n = self.counts.len();
        if self.hi <= self.lo {
            return 0;
        }
        let i = ((v - self.lo) / (self.hi - self.lo) * n as f64).floor();
        if i.is_nan() || i < 0.0 {
            0
        } else {
            (i as usize).min(n - 1)
        }
    }

    /// The lower and upper edge of bin `i`.
    pub fn edges(&self, i: usize) -> (f64, f64) {
        let w = (self.hi - self.lo) / self.counts.len().max(1) as f64;
        (self.lo + w * i as f64, self.lo + w * (i + 1) as f64)
    }
}

/// The statistics of one column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnStats {
    /// The column.
    pub name: String,
    /// Its Arrow type.
    pub arrow_type: String,
    /// How it is summarized.
    pub class: ColumnClass,
    /// Rows.
    pub rows: u64,
    /// Null values.
    pub nulls: u64,
    /// Nulls over rows (0 for an empty version).
    pub null_rate: f64,
    /// NaN values (floats; counted apart from nulls and left out of the range).
    pub nan: u64,
    /// The smallest value (numeric: the number; time: milliseconds since 1970).
    pub min: Option<f64>,
    /// The largest value.
    pub max: Option<f64>,
    /// The mean of the values (numeric only).
    pub mean: Option<f64>,
    /// `true` values (Boolean only).
    pub true_count: Option<u64>,
    /// `false` values (Boolean only).
    pub false_count: Option<u64>,
    /// Distinct values (text only), at most [`DISTINCT_CAP`].
    pub distinct: Option<u64>,
    /// True when there are more distinct values than [`DISTINCT_CAP`].
    pub distinct_capped: bool,
    /// The histogram (numeric and time columns with at least one value).
    pub histogram: Option<Histogram>,
}

impl ColumnStats {
    /// A value of this column as people read it: a time for time columns, else a number.
    pub fn show(&self, v: f64) -> String {
        match self.class {
            ColumnClass::Time => chrono::DateTime::from_timestamp_millis(v.round() as i64)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| format!("{v}")),
            _ => number(v),
        }
    }
}

/// A number in at most 6 significant digits, integers as integers.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 1e6 || (v != 0.0 && v.abs() < 1e-3) {
        format!("{v:.4e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The statistics of one feature of a timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureStats {
    /// The feature.
    pub feature: String,
    /// Its change points (rows of the timeline).
    pub change_points: u64,
    /// Change points with no data (`count` = 0).
    pub no_data: u64,
    /// `no_data` over `change_points`.
    pub no_data_rate: f64,
    /// The statistics of `value_num`, `value_text` and `value_time` over its rows.
    pub values: Vec<ColumnStats>,
}

/// The statistics of a version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionStats {
    /// The version.
    pub hash: String,
    /// Its rows.
    pub rows: u64,
    /// One entry per column, in schema order.
    pub columns: Vec<ColumnStats>,
    /// For a timeline: one entry per feature, in name order (empty otherwise).
    pub features: Vec<FeatureStats>,
}

/// The value columns of a timeline summarized per feature.
pub const FEATURE_VALUES: [&str; 3] = ["value_num", "value_text", "value_time"];

/// Per-feature totals of a timeline: an [`Accumulator`] over the value columns of each
/// feature's rows, with its change points and no-data count.
#[derive(Debug, Clone, Default)]
pub struct Features {
    by: BTreeMap<String, (Accumulator, u64, u64)>,
}

impl Features {
    /// Whether `schema` is a timeline's (a feature, a count and the value columns).
    pub fn applies(schema: &Schema) -> bool {
        ["feature", "count"]
            .iter()
            .chain(FEATURE_VALUES.iter())
            .all(|c| schema.column_with_name(c).is_some())
    }

    /// The rows of `b` split by feature: each feature's value columns as a batch, and how
    /// many of its rows have no data.
    fn split(b: &RecordBatch) -> Result<Vec<(String, RecordBatch, u64)>> {
        let err = |e: arrow::error::ArrowError| Error::Internal(format!("statistics: {e}"));
        let col = |name: &str| {
            b.column_by_name(name)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("statistics: no column {name}")))
        };
        let feature = cast(&col("feature")?, &DataType::Utf8).map_err(err)?;
        let feature = feature.as_string::<i32>();
        let count = cast(&col("count")?, &DataType::UInt64).map_err(err)?;
        let count = count.as_primitive::<UInt64Type>();
        let mut rows: BTreeMap<&str, (Vec<u32>, u64)> = BTreeMap::new();
        for i in 0..b.num_rows() {
            let f = if feature.is_null(i) {
                "(none)"
            } else {
                feature.value(i)
            };
            let e = rows.entry(f).or_default();
            e.0.push(i as u32);
            if count.is_null(i) || count.value(i) == 0 {
                e.1 += 1;
            }
        }
        let fields: Vec<_> = FEATURE_VALUES
            .iter()
            .filter_map(|c| b.schema().field_with_name(c).ok().cloned())
            .collect();
        let schema = std::sync::Arc::new(Schema::new(fields));
        let mut out = Vec::with_capacity(rows.len());
        for (f, (idx, no_data)) in rows {
            let idx = UInt32Array::from(idx);
            let cols = FEATURE_VALUES
                .iter()
                .map(|c| take(&col(c)?, &idx, None).map_err(err))
                .collect::<Result<Vec<_>>>()?;
            let sub = RecordBatch::try_new(schema.clone(), cols).map_err(err)?;
            out.push((f.to_string(), sub, no_data));
        }
        Ok(out)
    }

    /// Counts one batch (first pass).
    ///
    /// # Errors
    /// As [`Accumulator::observe`].
    pub fn observe(&mut self, b: &RecordBatch) -> Result<()> {
        for (f, sub, no_data) in Self::split(b)? {
            let e = self
                .by
                .entry(f)
                .or_insert_with(|| (Accumulator::new(&sub.schema()), 0, 0));
            e.0.observe(&sub)?;
            e.1 += sub.num_rows() as u64;
            e.2 += no_data;
        }
        Ok(())
    }

    /// Ends the first pass.
    pub fn start_bins(&mut self) {
        for e in self.by.values_mut() {
            e.0.start_bins();
        }
    }

    /// Counts one batch into the bins (second pass).
    ///
    /// # Errors
    /// As [`Accumulator::observe`].
    pub fn observe_bins(&mut self, b: &RecordBatch) -> Result<()> {
        for (f, sub, _) in Self::split(b)? {
            if let Some(e) = self.by.get_mut(&f) {
                e.0.observe_bins(&sub)?;
            }
        }
        Ok(())
    }

    /// The statistics, by feature name.
    pub fn finish(self) -> Vec<FeatureStats> {
        self.by
            .into_iter()
            .map(|(feature, (acc, change_points, no_data))| FeatureStats {
                values: acc.finish(String::new(), change_points).columns,
                no_data_rate: if change_points == 0 {
                    0.0
                } else {
                    no_data as f64 / change_points as f64
                },
                feature,
                change_points,
                no_data,
            })
            .collect()
    }
}

/// One column's running totals.
#[derive(Debug, Clone)]
struct Running {
    stats: ColumnStats,
    sum: f64,
    values: u64,
    seen: HashSet<String>,
}

/// Statistics built batch by batch: [`Accumulator::observe`] every batch, then
/// [`Accumulator::start_bins`], then [`Accumulator::observe_bins`] every batch again (only
/// the columns [`Accumulator::binned_columns`] names are needed), then
/// [`Accumulator::finish`].
#[derive(Debug, Clone)]
pub struct Accumulator {
    cols: Vec<Running>,
}

/// The values of a numeric or time column as `f64` (nulls as `None`).
fn as_f64(col: &ArrayRef, class: ColumnClass) -> Result<Vec<Option<f64>>> {
    let err = |e: arrow::error::ArrowError| Error::Internal(format!("statistics: {e}"));
    Ok(match class {
        ColumnClass::Numeric => {
            let c = cast(col, &DataType::Float64).map_err(err)?;
            c.as_primitive::<Float64Type>().iter().collect()
        }
        ColumnClass::Time => {
            let c = match col.data_type() {
                DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                    cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None)).map_err(err)?
                }
                _ => cast(col, &DataType::Int64).map_err(err)?,
            };
            match c.data_type() {
                DataType::Timestamp(_, _) => c
                    .as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .map(|v| v.map(|x| x as f64))
                    .collect(),
                _ => c
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|v| v.map(|x| x as f64))
                    .collect(),
            }
        }
        _ => Vec::new(),
    })
}

impl Accumulator {
    /// Totals for the columns of `schema`.
    pub fn new(schema: &arrow::datatypes::Schema) -> Accumulator {
        let cols = schema
            .fields()
            .iter()
            .map(|f| {
                let class = ColumnClass::of(f.data_type());
                Running {
                    stats: ColumnStats {
                        name: f.name().clone(),
                        arrow_type: f.data_type().to_string(),
                        class,
                        rows: 0,
                        nulls: 0,
                        null_rate: 0.0,
                        nan: 0,
                        min: None,
                        max: None,
                        mean: None,
                        true_count: (class == ColumnClass::Boolean).then_some(0),
                        false_count: (class == ColumnClass::Boolean).then_some(0),
                        distinct: None,
                        distinct_capped: false,
                        histogram: None,
                    },
                    sum: 0.0,
                    values: 0,
                    seen: HashSet::new(),
                }
            })
            .collect();
        Accumulator { cols }
    }

    /// Counts one batch (first pass).
    ///
    /// # Errors
    /// [`Error::Internal`] when a column cannot be read as its class says.
    pub fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        for r in &mut self.cols {
            let Some(col) = batch.column_by_name(&r.stats.name) else {
                continue;
            };
            let s = &mut r.stats;
            s.rows += col.len() as u64;
            s.nulls += col.logical_null_count() as u64;
            match s.class {
                ColumnClass::Numeric | ColumnClass::Time => {
                    for v in as_f64(col, s.class)?.into_iter().flatten() {
                        if v.is_nan() {
                            s.nan += 1;
                            continue;
                        }
                        s.min = Some(s.min.map_or(v, |m| m.min(v)));
                        s.max = Some(s.max.map_or(v, |m| m.max(v)));
                        r.sum += v;
                        r.values += 1;
                    }
                }
                ColumnClass::Boolean => {
                    let b = col.as_boolean();
                    let t = b.true_count() as u64;
                    let f = (b.len() - b.null_count()) as u64 - t;
                    s.true_count = Some(s.true_count.unwrap_or(0) + t);
                    s.false_count = Some(s.false_count.unwrap_or(0) + f);
                }
                ColumnClass::Text => {
                    if r.seen.len() > DISTINCT_CAP {
                        continue;
                    }
                    let c = cast(col, &DataType::Utf8)
                        .map_err(|e| Error::Internal(format!("statistics: {e}")))?;
                    for v in c.as_string::<i32>().iter().flatten() {
                        if r.seen.len() > DISTINCT_CAP {
                            break;
                        }
                        if !r.seen.contains(v) {
                            r.seen.insert(v.to_string());
                        }
                    }
                }
                ColumnClass::Other => {}
            }
        }
        Ok(())
    }

    /// Ends the first pass: sets up a histogram for each column with a range.
    pub fn start_bins(&mut self) {
        for r in &mut self.cols {
            if let (Some(lo), Some(hi)) = (r.stats.min, r.stats.max) {
                if lo.is_finite() && hi.is_finite() {
                    r.stats.histogram = Some(Histogram {
                        lo,
                        hi,
                        counts: vec![0; if hi > lo { BINS } else { 1 }],
                    });
                }
            }
        }
    }

    /// The columns the second pass needs (those with a histogram).
    pub fn binned_columns(&self) -> Vec<String> {
        self.cols
            .iter()
            .filter(|r| r.stats.histogram.is_some())
            .map(|r| r.stats.name.clone())
            .collect()
    }

    /// Counts one batch into the bins (second pass).
    ///
    /// # Errors
    /// As [`Accumulator::observe`].
    pub fn observe_bins(&mut self, batch: &RecordBatch) -> Result<()> {
        for r in &mut self.cols {
            let (Some(h), Some(col)) = (
                r.stats.histogram.as_mut(),
                batch.column_by_name(&r.stats.name),
            ) else {
                continue;
            };
            for v in as_f64(col, r.stats.class)?.into_iter().flatten() {
                if !v.is_nan() {
                    let i = h.bin(v);
                    h.counts[i] += 1;
                }
            }
        }
        Ok(())
    }

    /// The statistics.
    pub fn finish(self, hash: String, rows: u64) -> VersionStats {
        let columns = self
            .cols
            .into_iter()
            .map(|r| {
                let mut s = r.stats;
                s.null_rate = if s.rows == 0 {
                    0.0
                } else {
                    s.nulls as f64 / s.rows as f64
                };
                if s.class == ColumnClass::Numeric && r.values > 0 {
                    s.mean = Some(r.sum / r.values as f64);
                }
                if s.class == ColumnClass::Text {
                    s.distinct_capped = r.seen.len() > DISTINCT_CAP;
                    s.distinct = Some(r.seen.len().min(DISTINCT_CAP) as u64);
                }
                s
            })
            .collect();
        VersionStats {
            hash,
            rows,
            columns,
            features: Vec::new(),
        }
    }
}

/// Whether a version of `kind` gets statistics (not raw versions: their rows are source
/// bytes).
pub fn has_stats(kind: Kind) -> bool {
    kind != Kind::Raw
}

/// The statistics of the version `m`, scanning it twice (all columns, then the binned ones).
///
/// # Errors
/// [`Error::InvalidArgument`] for a raw version; the store's read errors.
pub async fn compute(store: &Store, m: &Manifest) -> Result<VersionStats> {
    if !has_stats(m.kind) {
        return Err(Error::invalid(
            format!("version {}", m.hash),
            "a raw version holds source bytes: statistics are for the versions made from it",
        ));
    }
    let mut acc: Option<Accumulator> = None;
    let mut features: Option<Features> = None;
    let schema = store
        .scan(&m.hash, |b| {
            let schema = b.schema();
            if m.kind == Kind::Timeline && Features::applies(&schema) {
                features.get_or_insert_with(Features::default).observe(b)?;
            }
            acc.get_or_insert_with(|| Accumulator::new(&schema))
                .observe(b)
        })
        .await?;
    let mut acc = acc.unwrap_or_else(|| Accumulator::new(&schema));
    acc.start_bins();
    let mut binned = acc.binned_columns();
    if let Some(f) = features.as_mut() {
        f.start_bins();
        for c in ["feature", "count"].iter().chain(FEATURE_VALUES.iter()) {
            if !binned.iter().any(|b| b == c) {
                binned.push((*c).to_string());
            }
        }
    }
    if !binned.is_empty() {
        store
            .scan_columns(&m.hash, Some(binned.as_slice()), |b| {
                if let Some(f) = features.as_mut() {
                    f.observe_bins(b)?;
                }
                acc.observe_bins(b)
            })
            .await?;
    }
    let mut st = acc.finish(m.hash.to_string(), m.rows);
    st.features = features.map(Features::finish).unwrap_or_default();
    Ok(st)
}

/// Width and height of a histogram drawing, and the bar area's margins.
const W: usize = 360;
const H: usize = 150;
const LEFT: usize = 44;
const BOTTOM: usize = 34;
const TOP: usize = 8;
const RIGHT: usize = 8;

/// A column's histogram as an inline SVG figure (bars with a `<title>` each, the range on the
/// axis) followed by the same bins as a table for screen readers and keyboard users.
pub fn histogram_svg(c: &ColumnStats, id: &str) -> String {
    let Some(h) = &c.histogram else {
        return String::new();
    };
    let peak = h.counts.iter().copied().max().unwrap_or(0).max(1);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let bar_w = plot_w as f64 / h.counts.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<figure class=\"plot\" aria-labelledby=\"{id}-cap\">\n<svg class=\"histogram\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"{id}-title\">\n<title id=\"{id}-title\">Histogram of {name}: {n} values from {lo} to {hi}, tallest bin {peak}</title>",
        name = escape(&c.name),
        n = h.counts.iter().sum::<u64>(),
        lo = escape(&c.show(h.lo)),
        hi = escape(&c.show(h.hi)),
    );
    let _ = writeln!(
        s,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\"/><line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{y}\"/>",
        y = TOP + plot_h,
        x2 = W - RIGHT
    );
    for (i, count) in h.counts.iter().enumerate() {
        let bh = (*count as f64 / peak as f64 * plot_h as f64).round();
        let bh = if *count > 0 { bh.max(1.0) } else { 0.0 };
        let x = LEFT as f64 + bar_w * i as f64;
        let (a, b) = h.edges(i);
        let _ = writeln!(
            s,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{bh:.1}\"><title>{a} to {b}: {count}</title></rect>",
            y = (TOP + plot_h) as f64 - bh,
            w = (bar_w - 1.0).max(1.0),
            a = escape(&c.show(a)),
            b = escape(&c.show(b)),
        );
    }
    let base = TOP + plot_h;
    let _ = writeln!(
        s,
        "<text class=\"tick\" x=\"{LEFT}\" y=\"{y1}\">{lo}</text><text class=\"tick end\" x=\"{xr}\" y=\"{y1}\">{hi}</text><text class=\"tick end\" x=\"{xl}\" y=\"{yt}\">{peak}</text><text class=\"tick end\" x=\"{xl}\" y=\"{base}\">0</text>",
        y1 = base + 16,
        xr = W - RIGHT,
        xl = LEFT - 4,
        yt = TOP + 10,
        lo = escape(&c.show(h.lo)),
        hi = escape(&c.show(h.hi)),
    );
    s.push_str("</svg>\n");
    let _ = writeln!(
        s,
        "<figcaption id=\"{id}-cap\"><code>{}</code>: values in {} bins (tallest {peak})</figcaption>",
        escape(&c.name),
        h.counts.len()
    );
    let _ = writeln!(
        s,
        "<details><summary>Bins of <code>{}</code> as a table</summary>\n<table><thead><tr><th scope=\"col\">From</th><th scope=\"col\">To</th><th scope=\"col\">Values</th></tr></thead><tbody>",
        escape(&c.name)
    );
    for (i, count) in h.counts.iter().enumerate() {
        let (a, b) = h.edges(i);
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{count}</td></tr>",
            escape(&c.show(a)),
            escape(&c.show(b))
        );
    }
    s.push_str("</tbody></table></details>\n</figure>\n");
    s
}

/// A rate as a percentage with one decimal.
pub fn percent(r: f64) -> String {
    format!("{:.1} %", r * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch(ints: Vec<Option<i64>>, floats: Vec<Option<f64>>) -> RecordBatch {
        let n = ints.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ints)),
                Arc::new(Float64Array::from(floats)),
                Arc::new(StringArray::from(
                    (0..n)
                        .map(|i| Some(format!("v{}", i % 3)))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(BooleanArray::from(
                    (0..n)
                        .map(|i| (i % 4 != 3).then_some(i % 2 == 0))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        (0..n)
                            .map(|i| Some(i as i64 * 86_400_000_000))
                            .collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
            ],
        )
        .expect("batch")
    }

    fn stats(batches: &[RecordBatch]) -> VersionStats {
        let mut acc = Accumulator::new(&batches[0].schema());
        for b in batches {
            acc.observe(b).expect("observe");
        }
        acc.start_bins();
        assert_eq!(acc.binned_columns(), vec!["n", "x", "t"]);
        for b in batches {
            acc.observe_bins(b).expect("bins");
        }
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        acc.finish("b3:x".into(), rows)
    }

    #[test]
    fn counts_nulls_ranges_and_bins_across_batches() {
        let a = batch(
            vec![Some(0), None, Some(10), Some(5)],
            vec![Some(1.5), Some(f64::NAN), None, Some(-2.0)],
        );
        let b = batch(vec![Some(20), None], vec![Some(4.0), Some(0.0)]);
        let s = stats(&[a, b]);
        let n = &s.columns[0];
        assert_eq!((n.rows, n.nulls), (6, 2));
        assert!((n.null_rate - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!((n.min, n.max, n.mean), (Some(0.0), Some(20.0), Some(8.75)));
        let h = n.histogram.as_ref().expect("histogram");
        assert_eq!(h.counts.len(), BINS);
        assert_eq!(h.counts.iter().sum::<u64>(), 4);
        assert_eq!((h.counts[0], h.counts[10], h.counts[BINS - 1]), (1, 1, 1));
        let x = &s.columns[1];
        assert_eq!((x.nulls, x.nan), (1, 1));
        assert_eq!((x.min, x.max), (Some(-2.0), Some(4.0)));
        assert_eq!(
            x.histogram.as_ref().expect("h").counts.iter().sum::<u64>(),
            4
        );
        let name = &s.columns[2];
        assert_eq!(
            (name.class, name.distinct, name.min),
            (ColumnClass::Text, Some(3), None)
        );
        let flag = &s.columns[3];
        // rows 0..4: true, false, true, null; rows 0..2: true, false
        assert_eq!(
            (flag.true_count, flag.false_count, flag.nulls),
            (Some(3), Some(2), 1)
        );
        let t = &s.columns[4];
        assert_eq!(t.class, ColumnClass::Time);
        assert_eq!(t.show(t.max.expect("max")), "1970-01-04 00:00:00");
    }

    #[test]
    fn a_constant_column_has_one_bin_and_an_empty_one_none() {
        let a = batch(vec![Some(7), Some(7)], vec![None, None]);
        let s = stats_loose(&[a]);
        let h = s.columns[0].histogram.as_ref().expect("histogram");
        assert_eq!(h.counts, vec![2]);
        assert!(s.columns[1].histogram.is_none());
        assert_eq!(s.columns[1].null_rate, 1.0);
    }

    fn stats_loose(batches: &[RecordBatch]) -> VersionStats {
        let mut acc = Accumulator::new(&batches[0].schema());
        for b in batches {
            acc.observe(b).expect("observe");
        }
        acc.start_bins();
        for b in batches {
            acc.observe_bins(b).expect("bins");
        }
        acc.finish("b3:x".into(), 0)
    }

    #[test]
    fn a_timeline_is_summarized_per_feature_with_its_no_data_rate() {
        let schema = crate::features::timeline_schema();
        let ts = |d: i64| Some(d * 86_400_000_000);
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["p1", "p1", "p2", "p2", "p3"])),
                Arc::new(StringArray::from(vec!["age", "hb", "age", "hb", "hb"])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![ts(1), ts(2), ts(3), ts(4), ts(5)])
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![
                    None,
                    Some(12.5),
                    None,
                    None,
                    Some(14.0),
                ])),
                Arc::new(StringArray::from(vec![None::<&str>; 5])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![ts(0), None, ts(10), None, None])
                        .with_timezone("UTC"),
                ),
                Arc::new(arrow::array::UInt64Array::from(vec![1, 3, 1, 0, 2])),
            ],
        )
        .expect("timeline batch");
        assert!(Features::applies(&b.schema()));
        let mut f = Features::default();
        f.observe(&b).expect("observe");
        f.start_bins();
        f.observe_bins(&b).expect("bins");
        let out = f.finish();
        assert_eq!(out.len(), 2);
        let hb = &out[1];
        assert_eq!(
            (hb.feature.as_str(), hb.change_points, hb.no_data),
            ("hb", 3, 1)
        );
        assert!((hb.no_data_rate - 1.0 / 3.0).abs() < 1e-12);
        let num = &hb.values[0];
        assert_eq!(
            (num.name.as_str(), num.nulls, num.min, num.max),
            ("value_num", 1, Some(12.5), Some(14.0))
        );
        assert_eq!(
            num.histogram
                .as_ref()
                .expect("h")
                .counts
                .iter()
                .sum::<u64>(),
            2
        );
        let age = &out[0];
        assert_eq!(
            (age.change_points, age.values[0].nulls, age.values[2].nulls),
            (2, 2, 0)
        );
        assert!(!Features::applies(
            &batch(vec![Some(1)], vec![Some(1.0)]).schema()
        ));
    }

    #[test]
    fn the_drawing_has_a_bar_per_bin_escaped_names_and_a_table() {
        let a = batch(vec![Some(0), Some(10)], vec![Some(1.0), Some(2.0)]);
        let mut s = stats(&[a]);
        s.columns[0].name = "<b>&".into();
        let svg = histogram_svg(&s.columns[0], "h0");
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), BINS);
        assert!(svg.contains("&lt;b&gt;&amp;") && !svg.contains("<b>"));
        assert!(svg.contains("role=\"img\"") && svg.contains("<table>"));
        assert_eq!(histogram_svg(&s.columns[2], "h2"), "");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(12.0), "12");
        assert_eq!(number(1234567.5), "1.2346e6");
    }
}
