//! Expressions over the columns of one record: `{ expr = "date(anchor_year - anchor_age, 1, 1)" }`.
//!
//! A small, statically typed language (documented in `docs/mapping.md`, "Expressions"):
//! numbers, text, dates and date-times; `+ - * /`, `||` (concatenation), parentheses,
//! literals, column references and a few functions (`coalesce`, `year`, `month`, `day`,
//! `date`, `datetime`, `add_days`, `add_months`, `add_years`, `number`, `text`). Null
//! propagates as in SQL: any null operand gives null, except in `coalesce`.
//!
//! An expression is parsed and type-checked once, when the mapping loads ([`Expr::parse`]):
//! syntax errors, unknown functions, wrong argument counts and mixed types are errors with
//! the 1-based character position in the expression. A column's text has no type of its own:
//! it is read as a number, a date or a date-time where the expression uses it as one, when
//! the record is evaluated ([`Expr::eval`]); text that does not read, a division by zero or an
//! impossible date is an [`EvalError`] naming the column and the value, which sends the
//! record to quarantine. Nothing here panics, whatever the expression text or the data: the
//! parser bounds nesting depth, and every date and number operation is checked.

mod check;
mod eval;
mod lex;
mod parse;

use std::fmt;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime};

use self::check::{to_text, Checker};
use self::eval::eval;
use self::lex::{err, lex, Tok};
use self::parse::Parser;
use super::value::TimeFormat;
use super::Kind;

/// The deepest nesting an expression may have (parentheses, operators, calls). Mappings need
/// a handful; the bound keeps every recursive walk (parse, check, evaluate, drop) far from
/// the stack's limit.
const MAX_DEPTH: usize = 64;

/// The longest expression accepted, in characters.
const MAX_LEN: usize = 10_000;

/// A parsed, type-checked expression, ready to be evaluated on records.
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    /// The expression as written.
    text: String,
    node: T,
    /// Every column the expression reads, with the position of its first use.
    columns: Vec<(String, usize)>,
}

/// A load-time error: where in the expression (1-based character) and what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExprError {
    pub(crate) pos: usize,
    pub(crate) message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.pos, self.message)
    }
}

/// A record-time error: the column at fault (if one is), a reason code for the quarantine
/// (`bad_number`, `bad_date` or `bad_expression`) and a detail naming the value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EvalError {
    pub(crate) column: Option<String>,
    pub(crate) reason: &'static str,
    pub(crate) detail: String,
}

/// What an expression reads a record through.
pub(crate) trait Cells {
    /// The cell of `column` (null: `None`) and whether it came from a typed (Parquet
    /// timestamp or date) column.
    fn cell(&self, column: &str) -> Option<(&str, bool)>;
}

/// How column text is read where an expression uses it as a number, date or date-time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading<'a> {
    pub(crate) time: &'a TimeFormat,
    pub(crate) zone: FixedOffset,
    pub(crate) decimal: char,
}

/// A value during evaluation. Date-times are wall-clock times in the column's zone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Num(f64),
    Text(String),
    Date(NaiveDate),
    Time(NaiveDateTime),
}

/// Static types. `Any` is a column's text, read as whatever its use asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Null,
    Any,
    Num,
    Text,
    Date,
    Time,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Null => "null",
            Ty::Any => "a column's text",
            Ty::Num => "a number",
            Ty::Text => "text",
            Ty::Date => "a date",
            Ty::Time => "a date-time",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Year,
    Month,
    Day,
}

/// The typed tree that is evaluated. Conversions are explicit nodes, placed by the checker.
#[derive(Debug, Clone)]
enum T {
    Lit(Value),
    Col(String),
    /// Text → number.
    ToNum(Box<T>, usize),
    /// Text or date-time → date.
    ToDate(Box<T>, usize),
    /// Text or date → date-time.
    ToTime(Box<T>, usize),
    /// Anything → text.
    ToText(Box<T>),
    Neg(Box<T>),
    Arith(ArOp, Box<T>, Box<T>, usize),
    /// A date or date-time plus a number of days (negated for `-`).
    AddDays(Box<T>, Box<T>, bool, usize),
    /// Days between two dates or two date-times.
    Diff(Box<T>, Box<T>),
    Concat(Box<T>, Box<T>),
    Part(Part, Box<T>),
    MakeDate(Box<T>, Box<T>, Box<T>, usize),
    /// A date or date-time plus a number of months (times the factor: 12 for years).
    AddMonths(Box<T>, Box<T>, u32, usize),
    Coalesce(Vec<T>),
}

impl Expr {
    /// Parses and type-checks `text` for a target column of `kind`: the result must be
    /// readable as the column's type (a number column cannot take a date, a date column
    /// cannot take a number).
    pub(crate) fn parse(text: &str, kind: Kind) -> Result<Expr, ExprError> {
        let len = text.chars().count();
        if len > MAX_LEN {
            return err(
                MAX_LEN + 1,
                format!("the expression is longer than {MAX_LEN} characters"),
            );
        }
        let toks = lex(text)?;
        if toks.len() == 1 {
            return err(1, "the expression is empty");
        }
        let mut p = Parser {
            toks,
            at: 0,
            depth_guard: 0,
        };
        let ast = p.concat()?;
        let (tok, pos) = p.bump();
        if tok != Tok::End {
            return err(
                pos,
                format!(
                    "expected an operator or the end of the expression, found {}",
                    tok.describe()
                ),
            );
        }
        let mut checker = Checker {
            columns: Vec::new(),
        };
        let (t, ty) = checker.check(&ast)?;
        let wrong = |what: &str| {
            err(
                1,
                format!(
                    "the expression gives {}, but the target column holds {what}",
                    ty.name()
                ),
            )
        };
        let node = match kind {
            Kind::Text => to_text(t, ty),
            Kind::Number => match ty {
                Ty::Num | Ty::Null => t,
                Ty::Any | Ty::Text => T::ToNum(Box::new(t), 1),
                _ => return wrong("numbers"),
            },
            Kind::Date => match ty {
                Ty::Date | Ty::Null => t,
                Ty::Any | Ty::Text | Ty::Time => T::ToDate(Box::new(t), 1),
                _ => return wrong("dates"),
            },
            Kind::Time => match ty {
                Ty::Time | Ty::Null => t,
                Ty::Any | Ty::Text | Ty::Date => T::ToTime(Box::new(t), 1),
                _ => return wrong("times"),
            },
        };
        Ok(Expr {
            text: text.to_string(),
            node,
            columns: checker.columns,
        })
    }

    /// The expression as written.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The columns the expression reads, each with the 1-based character position of its
    /// first use.
    pub(crate) fn columns(&self) -> &[(String, usize)] {
        &self.columns
    }

    /// Evaluates the expression on one record.
    pub(crate) fn eval(&self, cells: &dyn Cells, reading: Reading<'_>) -> Result<Value, EvalError> {
        eval(&self.node, cells, reading)
    }

    /// Evaluates the expression on one record and renders the result as the text the rest of
    /// the column's rules read: numbers in their shortest form (`1983`, `2.5`), dates and
    /// date-times as ISO 8601, flagged as typed (so the column's `time` formats do not
    /// apply to them). `None`: null.
    pub(crate) fn eval_text(
        &self,
        cells: &dyn Cells,
        reading: Reading<'_>,
    ) -> Result<Option<(String, bool)>, EvalError> {
        Ok(render(self.eval(cells, reading)?))
    }
}

/// Renders a number: whole numbers without a fraction, others in Rust's shortest form.
fn render_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        // Exact: |n| < 2^53. `as` maps -0.0 to 0.
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn render(v: Value) -> Option<(String, bool)> {
    match v {
        Value::Null => None,
        Value::Num(n) => Some((render_num(n), false)),
        Value::Text(s) => Some((s, false)),
        Value::Date(d) => Some((d.format("%Y-%m-%d").to_string(), true)),
        Value::Time(t) => Some((t.format("%Y-%m-%dT%H:%M:%S%.f").to_string(), true)),
    }
}
