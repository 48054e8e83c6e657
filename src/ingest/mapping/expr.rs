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

use std::fmt;

use chrono::{FixedOffset, Months, NaiveDate, NaiveDateTime, TimeDelta};

use super::value::{parse_date, parse_number, parse_time, TimeFormat};
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

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    /// A column name between backticks.
    Quoted(String),
    Plus,
    Minus,
    Star,
    Slash,
    Concat,
    LParen,
    RParen,
    Comma,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Num(n) => format!("number {}", render_num(*n)),
            Tok::Str(s) => format!("text {s:?}"),
            Tok::Ident(s) => format!("{s:?}"),
            Tok::Quoted(s) => format!("`{s}`"),
            Tok::Plus => "'+'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Star => "'*'".into(),
            Tok::Slash => "'/'".into(),
            Tok::Concat => "'||'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::End => "the end of the expression".into(),
        }
    }
}

fn err<X>(pos: usize, message: impl Into<String>) -> Result<X, ExprError> {
    Err(ExprError {
        pos,
        message: message.into(),
    })
}

/// Splits the text into tokens, each with its 1-based character position.
fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let single = match c {
            '+' => Some(Tok::Plus),
            '-' => Some(Tok::Minus),
            '*' => Some(Tok::Star),
            '/' => Some(Tok::Slash),
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            ',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(t) = single {
            out.push((t, pos));
            i += 1;
        } else if c == '|' {
            if chars.get(i + 1) != Some(&'|') {
                return err(pos, "a single '|': concatenation is '||'");
            }
            out.push((Tok::Concat, pos));
            i += 2;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i < chars.len() && chars[i] == '.' {
                i += 1;
                if !chars.get(i).is_some_and(char::is_ascii_digit) {
                    return err(i + 1, "a digit must follow the decimal point");
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if chars
                .get(i)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
            {
                return err(i + 1, format!("unexpected {:?} in a number", chars[i]));
            }
            let s: String = chars[start..i].iter().collect();
            match s.parse::<f64>() {
                Ok(n) if n.is_finite() => out.push((Tok::Num(n), pos)),
                _ => return err(pos, format!("number {s} is out of range")),
            }
        } else if c == '\'' || c == '"' {
            // SQL style: the quote doubled stands for itself.
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return err(pos, format!("unterminated text: no closing {c}")),
                    Some(q) if *q == c => {
                        if chars.get(i + 1) == Some(&c) {
                            s.push(c);
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(x) => {
                        s.push(*x);
                        i += 1;
                    }
                }
            }
            out.push((Tok::Str(s), pos));
        } else if c == '`' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return err(pos, "unterminated column name: no closing `"),
                    Some('`') => {
                        i += 1;
                        break;
                    }
                    Some(x) => {
                        s.push(*x);
                        i += 1;
                    }
                }
            }
            if s.is_empty() {
                return err(pos, "empty column name ``");
            }
            out.push((Tok::Quoted(s), pos));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), pos));
        } else {
            return err(pos, format!("unexpected character {c:?}"));
        }
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Parser: tokens → untyped tree

#[derive(Debug)]
enum Ast {
    Null,
    Num(f64),
    Str(String),
    Col(String),
    Neg(Box<Node>),
    Bin(Bin, Box<Node>, Box<Node>),
    Call(String, Vec<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bin {
    Ar(ArOp),
    Concat,
}

#[derive(Debug)]
struct Node {
    ast: Ast,
    pos: usize,
    /// Height of the tree below (a leaf is 1).
    depth: usize,
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    /// Open parentheses and argument lists around the current position.
    depth_guard: usize,
}

impl Parser {
    fn peek(&self) -> &(Tok, usize) {
        // `lex` always ends with `End`, and `bump` never moves past it.
        &self.toks[self.at.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> (Tok, usize) {
        let t = self.peek().clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    /// The depth of a node over `children`, refused past [`MAX_DEPTH`].
    fn depth(pos: usize, children: &[&Node]) -> Result<usize, ExprError> {
        let depth = 1 + children.iter().map(|c| c.depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return err(
                pos,
                format!("the expression is nested more than {MAX_DEPTH} levels deep"),
            );
        }
        Ok(depth)
    }

    fn binary(
        &mut self,
        next: fn(&mut Parser) -> Result<Node, ExprError>,
        op: fn(&Tok) -> Option<Bin>,
    ) -> Result<Node, ExprError> {
        let mut left = next(self)?;
        while let Some(b) = op(&self.peek().0) {
            let (_, pos) = self.bump();
            let right = next(self)?;
            let depth = Self::depth(pos, &[&left, &right])?;
            left = Node {
                ast: Ast::Bin(b, Box::new(left), Box::new(right)),
                pos,
                depth,
            };
        }
        Ok(left)
    }

    /// `concat := add ('||' add)*`
    fn concat(&mut self) -> Result<Node, ExprError> {
        self.binary(Parser::add, |t| (*t == Tok::Concat).then_some(Bin::Concat))
    }

    /// `add := mul (('+' | '-') mul)*`
    fn add(&mut self) -> Result<Node, ExprError> {
        self.binary(Parser::mul, |t| match t {
            Tok::Plus => Some(Bin::Ar(ArOp::Add)),
            Tok::Minus => Some(Bin::Ar(ArOp::Sub)),
            _ => None,
        })
    }

    /// `mul := unary (('*' | '/') unary)*`
    fn mul(&mut self) -> Result<Node, ExprError> {
        self.binary(Parser::unary, |t| match t {
            Tok::Star => Some(Bin::Ar(ArOp::Mul)),
            Tok::Slash => Some(Bin::Ar(ArOp::Div)),
            _ => None,
        })
    }

    /// `unary := '-' unary | primary`
    fn unary(&mut self) -> Result<Node, ExprError> {
        // Counted as it goes: a run of minus signs must not recurse without bound.
        let mut signs = Vec::new();
        while self.peek().0 == Tok::Minus {
            let pos = self.bump().1;
            if signs.len() >= MAX_DEPTH {
                return err(
                    pos,
                    format!("the expression is nested more than {MAX_DEPTH} levels deep"),
                );
            }
            signs.push(pos);
        }
        let mut n = self.primary(signs.len())?;
        while let Some(pos) = signs.pop() {
            let depth = Self::depth(pos, &[&n])?;
            n = Node {
                ast: Ast::Neg(Box::new(n)),
                pos,
                depth,
            };
        }
        Ok(n)
    }

    /// `primary := number | text | null | name '(' args ')' | name | '(' concat ')'`
    fn primary(&mut self, nesting: usize) -> Result<Node, ExprError> {
        let (tok, pos) = self.bump();
        let leaf = |ast| Ok(Node { ast, pos, depth: 1 });
        match tok {
            Tok::Num(n) => leaf(Ast::Num(n)),
            Tok::Str(s) => leaf(Ast::Str(s)),
            Tok::Quoted(c) => leaf(Ast::Col(c)),
            Tok::Ident(name) if self.peek().0 == Tok::LParen => {
                self.bump();
                let mut args = Vec::new();
                if self.peek().0 == Tok::RParen {
                    self.bump();
                } else {
                    loop {
                        args.push(self.nested(pos, nesting)?);
                        match self.bump() {
                            (Tok::Comma, _) => {}
                            (Tok::RParen, _) => break,
                            (t, p) => {
                                return err(
                                    p,
                                    format!(
                                        "expected ',' or ')' in the arguments of {name}, found {}",
                                        t.describe()
                                    ),
                                )
                            }
                        }
                    }
                }
                let refs: Vec<&Node> = args.iter().collect();
                let depth = Self::depth(pos, &refs)?;
                Ok(Node {
                    ast: Ast::Call(name.to_ascii_lowercase(), args),
                    pos,
                    depth,
                })
            }
            Tok::Ident(name) if name.eq_ignore_ascii_case("null") => leaf(Ast::Null),
            Tok::Ident(name) => leaf(Ast::Col(name)),
            Tok::LParen => {
                let inner = self.nested(pos, nesting)?;
                match self.bump() {
                    (Tok::RParen, _) => Ok(inner),
                    (t, p) => err(
                        p,
                        format!(
                            "expected ')' to close the '(' at character {pos}, found {}",
                            t.describe()
                        ),
                    ),
                }
            }
            t => err(
                pos,
                format!(
                    "expected a number, text, column, function or '(', found {}",
                    t.describe()
                ),
            ),
        }
    }

    /// A parenthesized or argument sub-expression. Its depth is only known once it is
    /// built, so the open parentheses are counted on the way down too: `((((...` fails at
    /// the bound instead of recursing on.
    fn nested(&mut self, pos: usize, nesting: usize) -> Result<Node, ExprError> {
        self.depth_guard += 1;
        let r = if self.depth_guard + nesting > MAX_DEPTH {
            err(
                pos,
                format!("the expression is nested more than {MAX_DEPTH} levels deep"),
            )
        } else {
            self.concat()
        };
        self.depth_guard -= 1;
        r
    }
}

// ---------------------------------------------------------------------------------------
// Checker: untyped tree → typed tree, with conversions made explicit

/// The functions, for messages.
const FUNCTIONS: &str = "coalesce, year, month, day, date, datetime, add_days, add_months, \
                         add_years, number, text";

struct Checker {
    columns: Vec<(String, usize)>,
}

fn mismatch<X>(pos: usize, what: &str, ty: Ty) -> Result<X, ExprError> {
    let hint = match ty {
        Ty::Text => {
            " (text is read as a number or date with number(...), date(...) or datetime(...))"
        }
        _ => "",
    };
    err(pos, format!("{what}, found {}{hint}", ty.name()))
}

impl Checker {
    fn check(&mut self, n: &Node) -> Result<(T, Ty), ExprError> {
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

    fn arith(
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

    fn call(&mut self, name: &str, pos: usize, args: &[Node]) -> Result<(T, Ty), ExprError> {
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
fn num(t: T, ty: Ty, pos: usize, what: &str) -> Result<T, ExprError> {
    match ty {
        Ty::Num | Ty::Null => Ok(t),
        Ty::Any => Ok(T::ToNum(Box::new(t), pos)),
        _ if what.is_empty() => mismatch(pos, "expected a number", ty),
        _ => mismatch(pos, what, ty),
    }
}

fn to_text(t: T, ty: Ty) -> T {
    match ty {
        Ty::Text | Ty::Any | Ty::Null => t,
        _ => T::ToText(Box::new(t)),
    }
}

fn to_time(t: T, ty: Ty, pos: usize) -> T {
    match ty {
        Ty::Time | Ty::Null => t,
        _ => T::ToTime(Box::new(t), pos),
    }
}

/// Evaluates a conversion of a literal now, so that `date('2020-02-30')` is an error when
/// the mapping loads rather than on every record. Literals are read as ISO 8601.
fn fold(t: T, pos: usize) -> Result<T, ExprError> {
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

// ---------------------------------------------------------------------------------------
// The public face

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

// ---------------------------------------------------------------------------------------
// Evaluation

fn fail(column: Option<&str>, reason: &'static str, detail: String) -> EvalError {
    EvalError {
        column: column.map(str::to_string),
        reason,
        detail,
    }
}

/// Text to convert: the text, whether it came from a typed (Parquet) column, and the column
/// it came from, if it is a cell.
type Operand<'c> = (std::borrow::Cow<'c, str>, bool, Option<String>);

/// The text of a conversion's operand: a column's cell with its typed flag, or an evaluated
/// value. `Err(v)`: the operand is not text (already converted, or null).
fn operand<'c>(
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

fn whole(n: f64, pos: usize, what: &str) -> Result<i64, EvalError> {
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

fn eval(t: &T, cells: &dyn Cells, r: Reading<'_>) -> Result<Value, EvalError> {
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
