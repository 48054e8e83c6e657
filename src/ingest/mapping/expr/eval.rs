//! Evaluation of a typed tree on one record.

use chrono::{Months, NaiveDate, TimeDelta};

use super::{render, render_num, ArOp, Cells, EvalError, Part, Reading, Value, T};
use crate::ingest::mapping::value::{parse_date, parse_number, parse_time};

pub(super) fn fail(column: Option<&str>, reason: &'static str, detail: String) -> EvalError {
    EvalError {
        column: column.map(str::to_string),
        reason,
        detail,
    }
}

/// Text to convert: the text, whether it came from a typed (Parquet) column, and the column
/// it came from, if it is a cell.
pub(super) type Operand<'c> = (std::borrow::Cow<'c, str>, bool, Option<String>);

/// The text of a conversion's operand: a column's cell with its typed flag, or an evaluated
/// value. `Err(v)`: the operand is not text (already converted, or null).
pub(super) fn operand<'c>(
    t: &T,
    cells: &'c dyn Cells,
    reading: Reading<'_>,
) -> Result<Result<Operand<'c>, Value>, EvalError> {
    if let T::Col(c) = t {
        return Ok(match cells.cell(c) {
            Some((s, typed)) => Ok((s.into(), typed, Some(c.clone()))),
            None => Err(Value::Null),
        });
    }
    Ok(match eval(t, cells, reading)? {
        Value::Text(s) => Ok((s.into(), false, None)),
        v => Err(v),
    })
}

pub(super) fn whole(n: f64, pos: usize, what: &str) -> Result<i64, EvalError> {
    if n.fract() != 0.0 || n.abs() > 1e12 {
        return Err(fail(
            None,
            "bad_expression",
            format!(
                "{what} {} at character {pos} is not a whole number in range",
                render_num(n)
            ),
        ));
    }
    Ok(n as i64)
}

pub(super) fn eval(t: &T, cells: &dyn Cells, r: Reading<'_>) -> Result<Value, EvalError> {
    let ev = |t: &T| eval(t, cells, r);
    let out_of_range = |pos: usize, what: String| {
        fail(
            None,
            "bad_expression",
            format!("{what} (at character {pos}) is out of range"),
        )
    };
    Ok(match t {
        T::Lit(v) => v.clone(),
        T::Col(c) => match cells.cell(c) {
            Some((s, _)) => Value::Text(s.to_string()),
            None => Value::Null,
        },
        T::ToNum(x, pos) => match operand(x, cells, r)? {
            Ok((s, _, col)) => match parse_number(&s, r.decimal) {
                Some(n) => Value::Num(n),
                None => {
                    return Err(fail(
                        col.as_deref(),
                        "bad_number",
                        match &col {
                            Some(c) => format!(
                                "{c} = {s:?} is not a number (expression at character {pos})"
                            ),
                            None => {
                                format!("{s:?} is not a number (expression at character {pos})")
                            }
                        },
                    ))
                }
            },
            Err(v) => v,
        },
        T::ToDate(x, pos) => match operand(x, cells, r)? {
            Ok((s, typed, col)) => match parse_date(&s, r.time, typed) {
                Some(d) => Value::Date(d),
                None => {
                    return Err(fail(
                        col.as_deref(),
                        "bad_date",
                        match &col {
                            Some(c) => {
                                format!("{c} = {s:?} is not a date (expression at character {pos})")
                            }
                            None => format!("{s:?} is not a date (expression at character {pos})"),
                        },
                    ))
                }
            },
            Err(Value::Time(t)) => Value::Date(t.date()),
            Err(v) => v,
        },
        T::ToTime(x, pos) => match operand(x, cells, r)? {
            Ok((s, typed, col)) => match parse_time(&s, r.time, r.zone, typed) {
                Some(t) => Value::Time(t.with_timezone(&r.zone).naive_local()),
                None => {
                    return Err(fail(
                        col.as_deref(),
                        "bad_date",
                        match &col {
                            Some(c) => {
                                format!("{c} = {s:?} is not a time (expression at character {pos})")
                            }
                            None => format!("{s:?} is not a time (expression at character {pos})"),
                        },
                    ))
                }
            },
            Err(Value::Date(d)) => match d.and_hms_opt(0, 0, 0) {
                Some(t) => Value::Time(t),
                None => return Err(out_of_range(*pos, format!("midnight of {d}"))),
            },
            Err(v) => v,
        },
        T::ToText(x) => match ev(x)? {
            Value::Null => Value::Null,
            Value::Text(s) => Value::Text(s),
            v => Value::Text(render(v).map(|(s, _)| s).unwrap_or_default()),
        },
        T::Neg(x) => match ev(x)? {
            Value::Num(n) => Value::Num(-n),
            _ => Value::Null,
        },
        T::Arith(op, l, rt, pos) => {
            let (Value::Num(a), Value::Num(b)) = (ev(l)?, ev(rt)?) else {
                return Ok(Value::Null);
            };
            let v = match op {
                ArOp::Add => a + b,
                ArOp::Sub => a - b,
                ArOp::Mul => a * b,
                ArOp::Div => {
                    if b == 0.0 {
                        return Err(fail(
                            None,
                            "bad_expression",
                            format!(
                                "division by zero: {} / 0 (at character {pos})",
                                render_num(a)
                            ),
                        ));
                    }
                    a / b
                }
            };
            if !v.is_finite() {
                return Err(out_of_range(*pos, "the result".into()));
            }
            Value::Num(v)
        }
        T::AddDays(x, n, neg, pos) => {
            let (x, Value::Num(n)) = (ev(x)?, ev(n)?) else {
                return Ok(Value::Null);
            };
            let n = if *neg { -n } else { n };
            match x {
                Value::Date(d) => {
                    let days = whole(n, *pos, "a number of days added to a date")?;
                    TimeDelta::try_days(days)
                        .and_then(|delta| d.checked_add_signed(delta))
                        .map(Value::Date)
                        .ok_or_else(|| out_of_range(*pos, format!("{d} + {days} days")))?
                }
                Value::Time(t) => {
                    let ms = n * 86_400_000.0;
                    let delta = (ms.abs() < 1e17)
                        .then(|| TimeDelta::try_milliseconds(ms.round() as i64))
                        .flatten();
                    delta
                        .and_then(|delta| t.checked_add_signed(delta))
                        .map(Value::Time)
                        .ok_or_else(|| {
                            out_of_range(*pos, format!("{t} + {} days", render_num(n)))
                        })?
                }
                _ => Value::Null,
            }
        }
        T::Diff(l, rt) => match (ev(l)?, ev(rt)?) {
            (Value::Date(a), Value::Date(b)) => Value::Num((a - b).num_days() as f64),
            (Value::Time(a), Value::Time(b)) => {
                Value::Num((a - b).num_milliseconds() as f64 / 86_400_000.0)
            }
            _ => Value::Null,
        },
        T::Concat(l, rt) => match (ev(l)?, ev(rt)?) {
            (Value::Text(a), Value::Text(b)) => Value::Text(a + &b),
            _ => Value::Null,
        },
        T::Part(p, x) => {
            use chrono::Datelike;
            let d = match ev(x)? {
                Value::Date(d) => d,
                Value::Time(t) => t.date(),
                _ => return Ok(Value::Null),
            };
            Value::Num(match p {
                Part::Year => d.year() as f64,
                Part::Month => d.month() as f64,
                Part::Day => d.day() as f64,
            })
        }
        T::MakeDate(y, m, d, pos) => {
            let (Value::Num(y), Value::Num(m), Value::Num(d)) = (ev(y)?, ev(m)?, ev(d)?) else {
                return Ok(Value::Null);
            };
            let bad = || {
                fail(
                    None,
                    "bad_date",
                    format!(
                        "date({}, {}, {}) (at character {pos}) is not a calendar date",
                        render_num(y),
                        render_num(m),
                        render_num(d)
                    ),
                )
            };
            let whole_in = |n: f64, lo: f64, hi: f64| n.fract() == 0.0 && (lo..=hi).contains(&n);
            if !(whole_in(y, -200_000.0, 200_000.0)
                && whole_in(m, 1.0, 12.0)
                && whole_in(d, 1.0, 31.0))
            {
                return Err(bad());
            }
            NaiveDate::from_ymd_opt(y as i32, m as u32, d as u32)
                .map(Value::Date)
                .ok_or_else(bad)?
        }
        T::AddMonths(x, n, factor, pos) => {
            let (x, Value::Num(n)) = (ev(x)?, ev(n)?) else {
                return Ok(Value::Null);
            };
            let what = if *factor == 12 {
                "a number of years"
            } else {
                "a number of months"
            };
            let months = whole(n, *pos, what)?.saturating_mul(i64::from(*factor));
            let m = u32::try_from(months.unsigned_abs())
                .ok()
                .map(Months::new)
                .ok_or_else(|| out_of_range(*pos, format!("{months} months")))?;
            let range = || out_of_range(*pos, format!("adding {months} months"));
            match x {
                Value::Date(d) => Value::Date(
                    if months >= 0 {
                        d.checked_add_months(m)
                    } else {
                        d.checked_sub_months(m)
                    }
                    .ok_or_else(range)?,
                ),
                Value::Time(t) => Value::Time(
                    if months >= 0 {
                        t.checked_add_months(m)
                    } else {
                        t.checked_sub_months(m)
                    }
                    .ok_or_else(range)?,
                ),
                _ => Value::Null,
            }
        }
        T::Coalesce(args) => {
            for a in args {
                let v = ev(a)?;
                if v != Value::Null {
                    return Ok(v);
                }
            }
            Value::Null
        }
    })
}
