//! The parser: tokens into an untyped tree, with bounded nesting.

use super::lex::{err, Tok};
use super::{ArOp, ExprError, MAX_DEPTH};

#[derive(Debug)]
pub(super) enum Ast {
    Null,
    Num(f64),
    Str(String),
    Col(String),
    Neg(Box<Node>),
    Bin(Bin, Box<Node>, Box<Node>),
    Call(String, Vec<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bin {
    Ar(ArOp),
    Concat,
}

#[derive(Debug)]
pub(super) struct Node {
    pub(super) ast: Ast,
    pub(super) pos: usize,
    /// Height of the tree below (a leaf is 1).
    pub(super) depth: usize,
}

pub(super) struct Parser {
    pub(super) toks: Vec<(Tok, usize)>,
    pub(super) at: usize,
    /// Open parentheses and argument lists around the current position.
    pub(super) depth_guard: usize,
}

impl Parser {
    pub(super) fn peek(&self) -> &(Tok, usize) {
        // `lex` always ends with `End`, and `bump` never moves past it.
        &self.toks[self.at.min(self.toks.len() - 1)]
    }

    pub(super) fn bump(&mut self) -> (Tok, usize) {
        let t = self.peek().clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    /// The depth of a node over `children`, refused past [`MAX_DEPTH`].
    pub(super) fn depth(pos: usize, children: &[&Node]) -> Result<usize, ExprError> {
        let depth = 1 + children.iter().map(|c| c.depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return err(
                pos,
                format!("the expression is nested more than {MAX_DEPTH} levels deep"),
            );
        }
        Ok(depth)
    }

    pub(super) fn binary(
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
    pub(super) fn concat(&mut self) -> Result<Node, ExprError> {
        self.binary(Parser::add, |t| (*t == Tok::Concat).then_some(Bin::Concat))
    }

    /// `add := mul (('+' | '-') mul)*`
    pub(super) fn add(&mut self) -> Result<Node, ExprError> {
        self.binary(Parser::mul, |t| match t {
            Tok::Plus => Some(Bin::Ar(ArOp::Add)),
            Tok::Minus => Some(Bin::Ar(ArOp::Sub)),
            _ => None,
        })
    }

    /// `mul := unary (('*' | '/') unary)*`
    pub(super) fn mul(&mut self) -> Result<Node, ExprError> {
        self.binary(Parser::unary, |t| match t {
            Tok::Star => Some(Bin::Ar(ArOp::Mul)),
            Tok::Slash => Some(Bin::Ar(ArOp::Div)),
            _ => None,
        })
    }

    /// `unary := '-' unary | primary`
    pub(super) fn unary(&mut self) -> Result<Node, ExprError> {
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
    pub(super) fn primary(&mut self, nesting: usize) -> Result<Node, ExprError> {
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
    pub(super) fn nested(&mut self, pos: usize, nesting: usize) -> Result<Node, ExprError> {
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
