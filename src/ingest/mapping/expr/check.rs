//! The checker: the untyped tree into a typed one, with conversions made explicit and
//! constants folded.

use chrono::FixedOffset;

use super::eval::eval;
use super::lex::err;
use super::parse::{Ast, Bin, Node};
use super::{ArOp, Cells, ExprError, Part, Reading, Ty, Value, T};
use crate::ingest::mapping::value::TimeFormat;

/// The functions, for messages.
pub(super) const FUNCTIONS: &str =
    "coalesce, year, month, day, date, datetime, add_days, add_months, \
                         add_years, number, text";

pub(super) struct Checker {
    pub(super) columns: Vec<(String, usize)>,
}

pub(super) fn mismatch<X>(pos: usize, what: &str, ty: Ty) -> Result<X, ExprError> {
    let hint = match ty {
        Ty::Text => {
            " (text is read as a number or date with number(...), date(...) or datetime(...))"
        }
        _ => "",
    };
    err(pos, format!("{what}, found {}{hint}", ty.name()))
}

impl Checker {
    pub(super) fn check(&mut self, n: &Node) -> Result<(T, Ty), ExprError> {
        Ok(match &n.ast {
            Ast::Null => (T::Lit(Value::Null), Ty::Null),
            Ast::Num(x) => (T::Lit(Value::Num(*x)), Ty::Num),
            Ast::Str(s) => (T::Lit(Value::Text(s.clone())), Ty::Text),
            Ast::Col(c) => {
                if !self.columns.iter().any(|(k, _)| k == c) {
                    self.columns.push((c.clone(), n.pos));
                }
                (T::Col(c.clone()), Ty::Any)
            }
            Ast::Neg(x) => {
                let (t, ty) = self.check(x)?;
                let t = num(t, ty, x.pos, "'-' needs a number")?;
                (T::Neg(Box::new(t)), Ty::Num)
            }
            Ast::Bin(Bin::Concat, l, r) => {
                let (lt, lty) = self.check(l)?;
                let (rt, rty) = self.check(r)?;
                (
                    T::Concat(Box::new(to_text(lt, lty)), Box::new(to_text(rt, rty))),
                    Ty::Text,
                )
            }
            Ast::Bin(Bin::Ar(op), l, r) => {
                let (lt, lty) = self.check(l)?;
                let (rt, rty) = self.check(r)?;
                self.arith(*op, n.pos, (lt, lty, l.pos), (rt, rty, r.pos))?
            }
            Ast::Call(name, args) => self.call(name, n.pos, args)?,
        })
    }

    pub(super) fn arith(
        &mut self,
        op: ArOp,
        pos: usize,
        (lt, lty, lpos): (T, Ty, usize),
        (rt, rty, rpos): (T, Ty, usize),
    ) -> Result<(T, Ty), ExprError> {
        let numlike = |t: Ty| matches!(t, Ty::Num | Ty::Any | Ty::Null);
        let datelike = |t: Ty| matches!(t, Ty::Date | Ty::Time);
        let sym = match op {
            ArOp::Add => '+',
            ArOp::Sub => '-',
            ArOp::Mul => '*',
            ArOp::Div => '/',
        };
        Ok(match op {
            ArOp::Add | ArOp::Sub if datelike(lty) && numlike(rty) => {
                let days = num(rt, rty, rpos, "")?;
                (
                    T::AddDays(Box::new(lt), Box::new(days), op == ArOp::Sub, pos),
                    lty,
                )
            }
            ArOp::Add if numlike(lty) && datelike(rty) => {
                let days = num(lt, lty, lpos, "")?;
                (T::AddDays(Box::new(rt), Box::new(days), false, pos), rty)
            }
            ArOp::Sub if datelike(lty) && datelike(rty) => {
                if lty == rty {
                    (T::Diff(Box::new(lt), Box::new(rt)), Ty::Num)
                } else {
                    let l = to_time(lt, lty, lpos);
                    let r = to_time(rt, rty, rpos);
                    (T::Diff(Box::new(l), Box::new(r)), Ty::Num)
                }
            }
            _ if numlike(lty) && numlike(rty) => {
                let l = num(lt, lty, lpos, "")?;
                let r = num(rt, rty, rpos, "")?;
                (T::Arith(op, Box::new(l), Box::new(r), pos), Ty::Num)
            }
            _ => {
                let (bad, bpos) =
                    if numlike(lty) || (datelike(lty) && op != ArOp::Mul && op != ArOp::Div) {
                        (rty, rpos)
                    } else {
                        (lty, lpos)
                    };
                let needs = match op {
                    ArOp::Add => "'+' adds numbers, or a number of days to a date",
                    ArOp::Sub => {
                        "'-' subtracts numbers, a number of days from a date, or two dates"
                    }
                    _ => "",
                };
                let needs = if needs.is_empty() {
                    format!("'{sym}' needs numbers")
                } else {
                    needs.to_string()
                };
                return mismatch(bpos, &format!("{needs}; this operand is not one"), bad);
            }
        })
    }

    pub(super) fn call(
        &mut self,
        name: &str,
        pos: usize,
        args: &[Node],
    ) -> Result<(T, Ty), ExprError> {
        let arity = |want: &str| -> Result<(T, Ty), ExprError> {
            err(
                pos,
                format!("{name} takes {want}, not {} argument(s)", args.len()),
            )
        };
        let mut checked = Vec::with_capacity(args.len());
        for a in args {
            let (t, ty) = self.check(a)?;
            checked.push((t, ty, a.pos, matches!(a.ast, Ast::Str(_))));
        }
        let mut it = checked.into_iter();
        // Arity is checked before any argument is taken; past the end would be a null.
        let mut next = || {
            it.next()
                .unwrap_or((T::Lit(Value::Null), Ty::Null, pos, false))
        };
        Ok(match name {
            "coalesce" => {
                if args.is_empty() {
                    return arity("at least one argument");
                }
                let all: Vec<(T, Ty, usize, bool)> = std::iter::from_fn(|| Some(next()))
                    .take(args.len())
                    .collect();
                let mut ty = Ty::Null;
                for (_, t, p, _) in &all {
                    ty = match (ty, *t) {
                        (a, b) if a == b => a,
                        (Ty::Null, b) => b,
                        (a, Ty::Null) => a,
                        (Ty::Any, b) => b,
                        (a, Ty::Any) => a,
                        (Ty::Date, Ty::Time) | (Ty::Time, Ty::Date) => Ty::Time,
                        (a, b) => {
                            return err(
                                *p,
                                format!(
                                    "coalesce mixes {} and {}: its arguments must be of one type",
                                    a.name(),
                                    b.name()
                                ),
                            )
                        }
                    };
                }
                let mut out = Vec::with_capacity(all.len());
                for (t, aty, p, _) in all {
                    out.push(match (aty, ty) {
                        (a, b) if a == b => t,
                        (Ty::Null, _) | (Ty::Any, Ty::Text) => t,
                        (Ty::Any, Ty::Num) => T::ToNum(Box::new(t), p),
                        (Ty::Any, Ty::Date) => T::ToDate(Box::new(t), p),
                        (_, Ty::Time) => to_time(t, aty, p),
                        _ => return mismatch(p, &format!("coalesce needs {}", ty.name()), aty),
                    });
                }
                (T::Coalesce(out), ty)
            }
            "year" | "month" | "day" => {
                if args.len() != 1 {
                    return arity("one argument");
                }
                let part = match name {
                    "year" => Part::Year,
                    "month" => Part::Month,
                    _ => Part::Day,
                };
                let (t, ty, p, _) = next();
                let t = match ty {
                    Ty::Date | Ty::Time | Ty::Null => t,
                    Ty::Any => T::ToDate(Box::new(t), p),
                    _ => return mismatch(p, &format!("{name} needs a date"), ty),
                };
                (T::Part(part, Box::new(t)), Ty::Num)
            }
            "date" if args.len() == 3 => {
                let (y, yty, yp, _) = next();
                let (m, mty, mp, _) = next();
                let (d, dty, dp, _) = next();
                let y = num(y, yty, yp, "date(year, month, day) needs numbers")?;
                let m = num(m, mty, mp, "date(year, month, day) needs numbers")?;
                let d = num(d, dty, dp, "date(year, month, day) needs numbers")?;
                (
                    T::MakeDate(Box::new(y), Box::new(m), Box::new(d), pos),
                    Ty::Date,
                )
            }
            "date" | "datetime" => {
                if args.len() != 1 {
                    return arity(if name == "date" {
                        "one argument (text or a date-time) or three (year, month, day)"
                    } else {
                        "one argument"
                    });
                }
                let (t, ty, p, lit) = next();
                let want = if name == "date" { Ty::Date } else { Ty::Time };
                let t = match (ty, want) {
                    (a, b) if a == b => t,
                    (Ty::Null, _) => t,
                    (Ty::Any | Ty::Text | Ty::Time, Ty::Date) => T::ToDate(Box::new(t), p),
                    (Ty::Any | Ty::Text | Ty::Date, Ty::Time) => T::ToTime(Box::new(t), p),
                    _ => return mismatch(p, &format!("{name} needs text or a date"), ty),
                };
                (if lit { fold(t, p)? } else { t }, want)
            }
            "add_days" | "add_months" | "add_years" => {
                if args.len() != 2 {
                    return arity("two arguments (a date and a number)");
                }
                let (x, xty, xp, _) = next();
                let (n, nty, np, _) = next();
                let (x, xty) = match xty {
                    Ty::Date | Ty::Time => (x, xty),
                    Ty::Null => (x, Ty::Date),
                    Ty::Any => (T::ToDate(Box::new(x), xp), Ty::Date),
                    _ => return mismatch(xp, &format!("{name} needs a date first"), xty),
                };
                let n = num(n, nty, np, &format!("{name} needs a number second"))?;
                let t = match name {
                    "add_days" => T::AddDays(Box::new(x), Box::new(n), false, pos),
                    "add_months" => T::AddMonths(Box::new(x), Box::new(n), 1, pos),
                    _ => T::AddMonths(Box::new(x), Box::new(n), 12, pos),
                };
                (t, xty)
            }
            "number" => {
                if args.len() != 1 {
                    return arity("one argument");
                }
                let (t, ty, p, lit) = next();
                let t = match ty {
                    Ty::Num | Ty::Null => t,
                    Ty::Any | Ty::Text => T::ToNum(Box::new(t), p),
                    _ => return mismatch(p, "number needs text", ty),
                };
                (if lit { fold(t, p)? } else { t }, Ty::Num)
            }
            "text" => {
                if args.len() != 1 {
                    return arity("one argument");
                }
                let (t, ty, _, _) = next();
                (to_text(t, ty), Ty::Text)
            }
            _ => {
                return err(
                    pos,
                    format!("unknown function {name:?} (functions: {FUNCTIONS})"),
                )
            }
        })
    }
}

/// `t` as a number: a column's text is read as one; other types are refused.
pub(super) fn num(t: T, ty: Ty, pos: usize, what: &str) -> Result<T, ExprError> {
    match ty {
        Ty::Num | Ty::Null => Ok(t),
        Ty::Any => Ok(T::ToNum(Box::new(t), pos)),
        _ if what.is_empty() => mismatch(pos, "expected a number", ty),
        _ => mismatch(pos, what, ty),
    }
}

pub(super) fn to_text(t: T, ty: Ty) -> T {
    match ty {
        Ty::Text | Ty::Any | Ty::Null => t,
        _ => T::ToText(Box::new(t)),
    }
}

pub(super) fn to_time(t: T, ty: Ty, pos: usize) -> T {
    match ty {
        Ty::Time | Ty::Null => t,
        _ => T::ToTime(Box::new(t), pos),
    }
}

/// Evaluates a conversion of a literal now, so that `date('2020-02-30')` is an error when
/// the mapping loads rather than on every record. Literals are read as ISO 8601.
pub(super) fn fold(t: T, pos: usize) -> Result<T, ExprError> {
    struct NoCells;
    impl Cells for NoCells {
        fn cell(&self, _: &str) -> Option<(&str, bool)> {
            None
        }
    }
    let utc = FixedOffset::east_opt(0).expect("zero offset");
    let reading = Reading {
        time: &TimeFormat::Auto,
        zone: utc,
        decimal: '.',
    };
    match eval(&t, &NoCells, reading) {
        Ok(v) => Ok(T::Lit(v)),
        Err(e) => err(pos, e.detail),
    }
}
