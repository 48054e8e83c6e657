//! The lexer: expression text into tokens with their positions.

use super::{render_num, ExprError};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
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
    pub(super) fn describe(&self) -> String {
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

pub(super) fn err<X>(pos: usize, message: impl Into<String>) -> Result<X, ExprError> {
    Err(ExprError {
        pos,
        message: message.into(),
    })
}

/// Splits the text into tokens, each with its 1-based character position.
pub(super) fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
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
