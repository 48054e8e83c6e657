//! Row filters: the conditions (`=`, `in`, `like`, ...) a feature or a derived table puts
//! on the rows it reads.

use crate::error::{Error, Result};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, Scalar, StringArray};
use arrow::datatypes::Int32Type;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A row filter on one string column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op", content = "values")]
pub enum Condition {
    /// The column equals the value.
    Eq(String),
    /// The column is one of the values.
    In(Vec<String>),
    /// The column starts with one of the prefixes (ICD-10 families like `I50`).
    Prefix(Vec<String>),
}

impl Condition {
    /// Whether a (non-null) column value passes.
    pub fn matches(&self, v: &str) -> bool {
        match self {
            Condition::Eq(x) => v == x,
            Condition::In(xs) => xs.iter().any(|x| x == v),
            Condition::Prefix(ps) => ps.iter().any(|p| v.starts_with(p.as_str())),
        }
    }
}

/// The rows of a table some feature of a set reads ([`super::FeatureSet::row_filters`]): those
/// passing every condition of at least one of `any_of` (a null value passes none).
#[derive(Debug, Clone, PartialEq)]
pub struct RowFilter {
    /// Each feature's conditions on text columns, distinct.
    pub any_of: Vec<BTreeMap<String, Condition>>,
}

impl RowFilter {
    /// The filter as a DataFusion expression, for a scan that evaluates it before reading
    /// the other columns (Lance).
    pub fn expr(&self) -> datafusion::prelude::Expr {
        use datafusion::prelude::{lit, Expr};
        let cond = |c: &str, cond: &Condition| -> Expr {
            // The column named as written (`col()` would parse the name).
            let column = || Expr::Column(datafusion::common::Column::from_name(c));
            match cond {
                Condition::Eq(v) => column().eq(lit(v.as_str())),
                Condition::In(vs) => {
                    column().in_list(vs.iter().map(|v| lit(v.as_str())).collect(), false)
                }
                Condition::Prefix(ps) => ps
                    .iter()
                    .map(|p| column().like(lit(format!("{}%", like_escape(p)))))
                    .reduce(Expr::or)
                    .unwrap_or(lit(false)),
            }
        };
        self.any_of
            .iter()
            .map(|conds| {
                conds
                    .iter()
                    .map(|(c, k)| cond(c, k))
                    .reduce(Expr::and)
                    .unwrap_or(lit(true))
            })
            .reduce(Expr::or)
            .unwrap_or(lit(false))
    }

    /// Which rows of `batch` pass (a batch without one of the filter's columns: an error
    /// naming it).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a missing column or one that is not text; [`Error::Arrow`]
    /// if a kernel fails.
    pub fn keep(&self, batch: &RecordBatch, what: &str) -> Result<BooleanArray> {
        use arrow::compute::kernels::{boolean, cmp, comparison};
        use arrow::compute::prep_null_mask_filter;
        // Column-at-a-time kernels; a null value passes no condition (nulls become false).
        let none = || BooleanArray::from(vec![false; batch.num_rows()]);
        let either = |a: BooleanArray, b: BooleanArray| boolean::or(&a, &b);
        let mut any = none();
        for conds in &self.any_of {
            let mut all: Option<BooleanArray> = None;
            for (c, k) in conds {
                let no_text = || Error::invalid(what, format!("no text column {c}"));
                let col = batch.column_by_name(c).ok_or_else(no_text)?;
                // The condition on a text array: true where it holds, false elsewhere.
                let holds = |a: &StringArray| -> Result<BooleanArray> {
                    let scalar = |v: &str| Scalar::new(StringArray::from(vec![v]));
                    let mut pass = BooleanArray::from(vec![false; a.len()]);
                    let values: Vec<&String> = match k {
                        Condition::Eq(v) => vec![v],
                        Condition::In(vs) | Condition::Prefix(vs) => vs.iter().collect(),
                    };
                    for v in values {
                        let hit = match k {
                            Condition::Prefix(_) => comparison::starts_with(a, &scalar(v))?,
                            _ => cmp::eq(a, &scalar(v))?,
                        };
                        pass = either(pass, hit)?;
                    }
                    Ok(pass)
                };
                let pass = match (
                    col.as_string_opt::<i32>(),
                    col.as_dictionary_opt::<Int32Type>(),
                ) {
                    (Some(a), _) => holds(a)?,
                    // A dictionary: the condition once per distinct value, then per row by key.
                    (None, Some(d)) => {
                        let values = d.values().as_string_opt::<i32>().ok_or_else(no_text)?;
                        let by_value = holds(values)?;
                        let taken = arrow::compute::take(&by_value, d.keys(), None)?;
                        taken.as_boolean().clone()
                    }
                    (None, None) => return Err(no_text()),
                };
                // (prep_null_mask_filter expects a null buffer.)
                let pass = if pass.null_count() > 0 {
                    prep_null_mask_filter(&pass)
                } else {
                    pass
                };
                all = Some(match all {
                    None => pass,
                    Some(x) => boolean::and(&x, &pass)?,
                });
            }
            any = either(
                any,
                all.unwrap_or_else(|| BooleanArray::from(vec![true; batch.num_rows()])),
            )?;
        }
        Ok(any)
    }
}

/// `p` with LIKE's wildcards (`%`, `_`) and its escape character (`\`) escaped.
fn like_escape(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for ch in p.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}
