//! A JSON document that borrows from its input: the FHIR parser's tree, kept flat.
//!
//! `serde_json::Value` copies every string and key into its own allocation and keeps objects
//! in a `BTreeMap`; a tree of vectors still allocates every object and array and moves every
//! value into its parent. FHIR resources are small objects of many short strings, so that
//! building is most of the parse. Here a document is one flat list of nodes (a "tape"): each
//! container is followed by its members (an object's as key, value, key, value ...) and
//! knows how many nodes its subtree spans, so a document is one allocation written front to
//! back, and a [`Value`] is a view of a slice of it. A string without escapes and every key
//! without escapes point into the input; an object keeps its members in input order (a key's
//! lookup is a short linear scan; with a repeated key the last one wins, as in
//! `serde_json::Value`). A hand-written parser reads the common case (text that is UTF-8 as a
//! whole, nesting up to 100 levels) and leaves numbers other than plain integers, strings
//! with escapes, and anything it does not accept to serde_json: values, what is accepted, the
//! depth limit and error messages are serde_json's.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

/// A parsed JSON document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Doc<'a> {
    nodes: Vec<Node<'a>>,
}

/// One node of a [`Doc`].
#[derive(Debug, Clone, PartialEq)]
enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    /// A string value or an object key (borrowed unless it had escapes).
    String(Cow<'a, str>),
    /// An array of `len` items; its subtree (this node and all below it) is `size` nodes.
    Array {
        len: usize,
        size: usize,
    },
    /// An object of `len` members, each a key node then its value; `size` as for arrays.
    Object {
        len: usize,
        size: usize,
    },
}

impl Node<'_> {
    /// Nodes in the subtree this node starts.
    fn size(&self) -> usize {
        match self {
            Node::Array { size, .. } | Node::Object { size, .. } => *size,
            _ => 1,
        }
    }
}

/// A JSON number as serde_json reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    /// A non-negative integer.
    PosInt(u64),
    /// A negative integer.
    NegInt(i64),
    /// Anything else.
    Float(f64),
}

impl Number {
    /// The number as a float.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Number::PosInt(n) => n as f64,
            Number::NegInt(n) => n as f64,
            Number::Float(f) => f,
        })
    }
}

impl<'a> Doc<'a> {
    /// Parses one JSON document.
    ///
    /// # Errors
    /// serde_json's error (line and column) for text that is not one JSON value.
    pub(crate) fn parse(bytes: &'a [u8]) -> serde_json::Result<Doc<'a>> {
        match fast::parse(bytes) {
            Some(doc) => Ok(doc),
            None => Doc::parse_serde(bytes),
        }
    }

    /// [`Doc::parse`] through serde_json alone.
    fn parse_serde(bytes: &'a [u8]) -> serde_json::Result<Doc<'a>> {
        let mut nodes = Vec::new();
        let mut de = serde_json::Deserializer::from_slice(bytes);
        Seed(&mut nodes).deserialize(&mut de)?;
        de.end()?;
        Ok(Doc { nodes })
    }

    /// The document's value.
    pub(crate) fn root(&self) -> Value<'_> {
        Value { nodes: &self.nodes }
    }
}

/// A JSON value: a view of its nodes in a [`Doc`], cheap to copy.
#[derive(Clone, Copy)]
pub(crate) struct Value<'v> {
    /// This value's node first, then the rest of its subtree; never empty.
    nodes: &'v [Node<'v>],
}

/// What a [`Value`] is, for matching on.
pub(crate) enum Kind<'v> {
    Null,
    Bool(bool),
    Number(Number),
    String(&'v str),
    Array(Items<'v>),
    Object(Members<'v>),
}

/// The items of an array, in order.
#[derive(Clone)]
pub(crate) struct Items<'v> {
    rest: &'v [Node<'v>],
    left: usize,
}

impl<'v> Iterator for Items<'v> {
    type Item = Value<'v>;

    fn next(&mut self) -> Option<Value<'v>> {
        if self.left == 0 {
            return None;
        }
        let size = self.rest.first()?.size();
        let (nodes, rest) = self.rest.split_at_checked(size)?;
        self.rest = rest;
        self.left -= 1;
        Some(Value { nodes })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// The members of an object, in input order.
#[derive(Clone)]
pub(crate) struct Members<'v> {
    items: Items<'v>,
}

impl<'v> Iterator for Members<'v> {
    type Item = (&'v str, Value<'v>);

    fn next(&mut self) -> Option<(&'v str, Value<'v>)> {
        if self.items.left == 0 {
            return None;
        }
        // A member is two nodes (the key, then the value's subtree) counted as one.
        let (key, rest) = self.items.rest.split_first()?;
        let Node::String(key) = key else { return None };
        self.items.rest = rest;
        self.items.next().map(|v| (key.as_ref(), v))
    }
}

/// What [`Value::get`] accepts: a key of an object or a position in an array.
pub(crate) trait Index {
    /// The member of `v` this names.
    fn index_into<'v>(&self, v: Value<'v>) -> Option<Value<'v>>;
}

impl Index for str {
    fn index_into<'v>(&self, v: Value<'v>) -> Option<Value<'v>> {
        match v.kind() {
            Kind::Object(members) => members.filter(|(k, _)| *k == self).last().map(|(_, v)| v),
            _ => None,
        }
    }
}

impl Index for usize {
    fn index_into<'v>(&self, v: Value<'v>) -> Option<Value<'v>> {
        v.as_array()?.nth(*self)
    }
}

impl<T: Index + ?Sized> Index for &T {
    fn index_into<'v>(&self, v: Value<'v>) -> Option<Value<'v>> {
        (**self).index_into(v)
    }
}

impl<'v> Value<'v> {
    /// What the value is.
    pub(crate) fn kind(self) -> Kind<'v> {
        let Some((node, rest)) = self.nodes.split_first() else {
            return Kind::Null;
        };
        match node {
            Node::Null => Kind::Null,
            Node::Bool(b) => Kind::Bool(*b),
            Node::Number(n) => Kind::Number(*n),
            Node::String(s) => Kind::String(s),
            Node::Array { len, .. } => Kind::Array(Items { rest, left: *len }),
            Node::Object { len, .. } => Kind::Object(Members {
                items: Items { rest, left: *len },
            }),
        }
    }

    /// An object's member by key, or an array's item by position.
    pub(crate) fn get<I: Index>(self, index: I) -> Option<Value<'v>> {
        index.index_into(self)
    }

    /// The text of a string.
    pub(crate) fn as_str(self) -> Option<&'v str> {
        match self.nodes.first() {
            Some(Node::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The items of an array.
    pub(crate) fn as_array(self) -> Option<Items<'v>> {
        match self.kind() {
            Kind::Array(items) => Some(items),
            _ => None,
        }
    }

    /// A number as a float.
    pub(crate) fn as_f64(self) -> Option<f64> {
        match self.nodes.first() {
            Some(Node::Number(n)) => n.as_f64(),
            _ => None,
        }
    }

    /// A boolean.
    pub(crate) fn as_bool(self) -> Option<bool> {
        match self.nodes.first() {
            Some(Node::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// Whether this is an object.
    pub(crate) fn is_object(self) -> bool {
        matches!(self.nodes.first(), Some(Node::Object { .. }))
    }
}

/// Compact JSON, like `serde_json::Value`'s `Display`.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.kind() {
            Kind::Null => s.serialize_unit(),
            Kind::Bool(b) => s.serialize_bool(b),
            Kind::Number(Number::PosInt(n)) => s.serialize_u64(n),
            Kind::Number(Number::NegInt(n)) => s.serialize_i64(n),
            Kind::Number(Number::Float(x)) => s.serialize_f64(x),
            Kind::String(t) => s.serialize_str(t),
            Kind::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.left))?;
                for item in items {
                    seq.serialize_element(&item)?;
                }
                seq.end()
            }
            Kind::Object(members) => {
                let mut map = s.serialize_map(Some(members.items.left))?;
                for (k, v) in members {
                    map.serialize_entry(k, &v)?;
                }
                map.end()
            }
        }
    }
}

/// Reads one value into the nodes through serde (the path for what the fast parser leaves).
struct Seed<'n, 'a>(&'n mut Vec<Node<'a>>);

impl<'de> Seed<'_, 'de> {
    /// Fills in the container node at `at` once its members are read.
    fn close(&mut self, at: usize, container: impl FnOnce(usize) -> Node<'de>) {
        let size = self.0.len() - at;
        if let Some(node) = self.0.get_mut(at) {
            *node = container(size);
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.0.push(Node::Bool(b));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        self.0.push(Node::Number(if n < 0 {
            Number::NegInt(n)
        } else {
            Number::PosInt(n as u64)
        }));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        self.0.push(Node::Number(Number::PosInt(n)));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<(), E> {
        self.0.push(Node::Number(Number::Float(x)));
        Ok(())
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<(), E> {
        self.0.push(Node::String(Cow::Borrowed(s)));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.0.push(Node::String(Cow::Owned(s.to_owned())));
        Ok(())
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<(), E> {
        self.0.push(Node::String(Cow::Owned(s)));
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.push(Node::Null);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let at = self.0.len();
        self.0.push(Node::Null);
        let mut len = 0;
        while seq.next_element_seed(Seed(&mut *self.0))?.is_some() {
            len += 1;
        }
        self.close(at, |size| Node::Array { len, size });
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let at = self.0.len();
        self.0.push(Node::Null);
        let mut len = 0;
        while map.next_key_seed(Key(&mut *self.0))?.is_some() {
            map.next_value_seed(Seed(&mut *self.0))?;
            len += 1;
        }
        self.close(at, |size| Node::Object { len, size });
        Ok(())
    }
}

/// An object key, borrowed when it has no escapes: read as a string, into the same nodes.
struct Key<'n, 'a>(&'n mut Vec<Node<'a>>);

impl<'de> DeserializeSeed<'de> for Key<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(Seed(self.0))
    }
}

/// A parser for the common case, several times faster than building the tree through serde:
/// one pass over text that is UTF-8 as a whole, strings without escapes borrowed as they are
/// found. It hands serde_json the tokens it does not read itself (numbers other than plain
/// integers, strings with escapes), so their values are serde_json's. It gives up (`None`)
/// on anything else, never accepting what serde_json refuses: [`Doc::parse`] then asks
/// serde_json, whose answer and error message count.
mod fast {
    use std::borrow::Cow;

    use serde::de::DeserializeSeed;

    use super::{Doc, Node, Seed};

    /// Containers nested deeper than this are left to serde_json (its limit is 128).
    const MAX_DEPTH: usize = 100;

    pub(super) fn parse(bytes: &[u8]) -> Option<Doc<'_>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut p = Parser {
            text,
            b: text.as_bytes(),
            i: 0,
            // About one node per 16 bytes of FHIR text, so that the list rarely grows.
            nodes: Vec::with_capacity(bytes.len() / 16 + 4),
        };
        p.value(0)?;
        p.ws();
        (p.i == p.b.len()).then_some(Doc { nodes: p.nodes })
    }

    /// The position of the first `"`, `\` or control character at or after `j`, eight bytes
    /// a step with the usual word tricks; or, when there is none in whole words, where the
    /// last stretch shorter than a word starts (the caller reads that byte by byte).
    pub(super) fn next_special(b: &[u8], mut j: usize) -> usize {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // The high bit of the first byte of `x` that is zero (later bytes may be flagged
        // falsely, never earlier ones).
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        while let Some(word) = b.get(j..j + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            let w = u64::from_le_bytes(w);
            let hits = zero(w ^ (ONES * u64::from(b'"')))
                | zero(w ^ (ONES * u64::from(b'\\')))
                | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
            if hits != 0 {
                return j + (hits.trailing_zeros() / 8) as usize;
            }
            j += 8;
        }
        j
    }

    struct Parser<'a> {
        text: &'a str,
        b: &'a [u8],
        /// The next byte to read.
        i: usize,
        /// The document so far: a container's node is pushed when it opens and completed
        /// when it closes.
        nodes: Vec<Node<'a>>,
    }

    impl<'a> Parser<'a> {
        fn ws(&mut self) {
            while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
                self.i += 1;
            }
        }

        /// Reads past `c` (after whitespace), or gives up.
        fn expect(&mut self, c: u8) -> Option<()> {
            self.ws();
            (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
        }

        fn value(&mut self, depth: usize) -> Option<()> {
            self.ws();
            let node = match *self.b.get(self.i)? {
                b'{' => return self.object(depth + 1),
                b'[' => return self.array(depth + 1),
                b'"' => Node::String(self.string()?),
                b't' => self.literal(b"true", Node::Bool(true))?,
                b'f' => self.literal(b"false", Node::Bool(false))?,
                b'n' => self.literal(b"null", Node::Null)?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            };
            self.nodes.push(node);
            Some(())
        }

        /// Completes the container node pushed at `at`.
        fn close(&mut self, at: usize, container: impl FnOnce(usize) -> Node<'a>) -> Option<()> {
            let size = self.nodes.len() - at;
            *self.nodes.get_mut(at)? = container(size);
            Some(())
        }

        fn object(&mut self, depth: usize) -> Option<()> {
            if depth > MAX_DEPTH {
                return None;
            }
            self.i += 1;
            let at = self.nodes.len();
            self.nodes.push(Node::Null);
            self.ws();
            if self.b.get(self.i) == Some(&b'}') {
                self.i += 1;
                return self.close(at, |size| Node::Object { len: 0, size });
            }
            let mut len = 0;
            loop {
                self.ws();
                if self.b.get(self.i) != Some(&b'"') {
                    return None;
                }
                let key = self.string()?;
                self.nodes.push(Node::String(key));
                self.expect(b':')?;
                self.value(depth)?;
                len += 1;
                self.ws();
                match *self.b.get(self.i)? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        return self.close(at, |size| Node::Object { len, size });
                    }
                    _ => return None,
                }
            }
        }

        fn array(&mut self, depth: usize) -> Option<()> {
            if depth > MAX_DEPTH {
                return None;
            }
            self.i += 1;
            let at = self.nodes.len();
            self.nodes.push(Node::Null);
            self.ws();
            if self.b.get(self.i) == Some(&b']') {
                self.i += 1;
                return self.close(at, |size| Node::Array { len: 0, size });
            }
            let mut len = 0;
            loop {
                self.value(depth)?;
                len += 1;
                self.ws();
                match *self.b.get(self.i)? {
                    b',' => self.i += 1,
                    b']' => {
                        self.i += 1;
                        return self.close(at, |size| Node::Array { len, size });
                    }
                    _ => return None,
                }
            }
        }

        /// A string at `self.i` (its opening quote): borrowed, or unescaped by serde_json.
        fn string(&mut self) -> Option<Cow<'a, str>> {
            let start = self.i + 1;
            let mut j = start;
            loop {
                j = next_special(self.b, j);
                match *self.b.get(j)? {
                    b'"' => {
                        let s = self.text.get(start..j)?;
                        self.i = j + 1;
                        return Some(Cow::Borrowed(s));
                    }
                    b'\\' => break,
                    0..=0x1f => return None,
                    _ => j += 1,
                }
            }
            // Escapes: find the closing quote, and let serde_json unescape the token.
            loop {
                match *self.b.get(j)? {
                    b'"' => break,
                    b'\\' => j += 2,
                    0..=0x1f => return None,
                    _ => j += 1,
                }
            }
            let token = self.text.get(self.i..=j)?;
            let s: String = serde_json::from_str(token).ok()?;
            self.i = j + 1;
            Some(Cow::Owned(s))
        }

        fn literal(&mut self, word: &[u8], v: Node<'a>) -> Option<Node<'a>> {
            let end = self.i + word.len();
            (self.b.get(self.i..end)? == word).then(|| {
                self.i = end;
                v
            })
        }

        /// A plain integer (no sign, no leading zero, at most 18 digits) is read here;
        /// any other number token is read by serde_json.
        fn number(&mut self) -> Option<Node<'a>> {
            let start = self.i;
            let mut j = start;
            while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.b.get(j) {
                j += 1;
            }
            let token = self.b.get(start..j)?;
            let plain = token.len() <= 18
                && token.first().is_some_and(|c| (b'1'..=b'9').contains(c))
                && token.iter().all(u8::is_ascii_digit);
            let v = if plain {
                let n = token.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                Node::Number(super::Number::PosInt(n))
            } else {
                // serde_json reads the token, through the same visitor as its whole documents.
                let mut one = Vec::with_capacity(1);
                let mut de = serde_json::Deserializer::from_slice(token);
                Seed(&mut one).deserialize(&mut de).ok()?;
                de.end().ok()?;
                match one.pop()? {
                    Node::Number(n) if one.is_empty() => Node::Number(n),
                    _ => return None,
                }
            };
            self.i = j;
            Some(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn borrows_plain_strings_and_keys_and_copies_escaped_ones() {
        let text = br#"{"a": "plain", "b\u0041": "esc\"aped", "n": [1, -2, 2.5, null, true]}"#;
        let doc = Doc::parse(text).unwrap();
        assert!(matches!(doc.nodes[0], Node::Object { len: 3, size: 12 }));
        assert!(matches!(doc.nodes[1], Node::String(Cow::Borrowed("a"))));
        assert!(matches!(doc.nodes[2], Node::String(Cow::Borrowed("plain"))));
        assert!(matches!(&doc.nodes[3], Node::String(Cow::Owned(k)) if k == "bA"));
        assert!(matches!(&doc.nodes[4], Node::String(Cow::Owned(s)) if s == "esc\"aped"));
        let v = doc.root();
        let keys: Vec<&str> = match v.kind() {
            Kind::Object(members) => members.map(|(k, _)| k).collect(),
            _ => panic!("not an object: {v}"),
        };
        assert_eq!(keys, ["a", "bA", "n"]);
        assert_eq!(v.get("bA").and_then(Value::as_str), Some("esc\"aped"));
        let n = v.get("n").unwrap();
        assert_eq!(n.as_array().map(Iterator::count), Some(5));
        assert_eq!(n.get(0).and_then(Value::as_f64), Some(1.0));
        assert_eq!(n.get(1).and_then(Value::as_f64), Some(-2.0));
        assert_eq!(n.get(2).and_then(Value::as_f64), Some(2.5));
        assert!(matches!(n.get(3).map(Value::kind), Some(Kind::Null)));
        assert_eq!(n.get(4).and_then(Value::as_bool), Some(true));
        assert!(n.get(5).is_none());
        assert!(v.get("missing").is_none());
        assert!(n.get("a").is_none());
        assert!(v.is_object() && !n.is_object());
    }

    #[test]
    fn displays_like_serde_json_and_the_last_repeated_key_wins() {
        let text = r#"{"k": 1, "s": "a\nb", "k": {"x": [1.5, -3, "y", {}, []]}, "z": 2}"#;
        let doc = Doc::parse(text.as_bytes()).unwrap();
        let v = doc.root();
        let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            v.get("k").unwrap().to_string(),
            theirs.get("k").unwrap().to_string()
        );
        assert_eq!(v.get("z").and_then(Value::as_f64), Some(2.0));
        assert_eq!(v.get("s").unwrap().to_string(), r#""a\nb""#);
        let round: serde_json::Value = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(round.get("s"), theirs.get("s"));
        assert_eq!(round.get("k"), theirs.get("k"));
    }

    /// Arbitrary JSON: every kind of number, strings with escapes and any character, nesting.
    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value as J;
        let leaf = prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::from),
            any::<i64>().prop_map(J::from),
            any::<u64>().prop_map(J::from),
            (0u64..1000).prop_map(J::from),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(J::from),
            "[a-z]{0,12}".prop_map(J::from),
            ".{0,12}".prop_map(J::from),
        ];
        leaf.prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(J::Array),
                proptest::collection::vec(("[a-z]{0,6}|.{0,4}", inner), 0..6)
                    .prop_map(|m| J::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_fast_parser_reads_json_as_serde_does(v in any_json(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).expect("serializes")
            } else {
                v.to_string()
            };
            let ours = fast::parse(text.as_bytes());
            let theirs = Doc::parse_serde(text.as_bytes()).expect("serde reads its own output");
            prop_assert_eq!(ours, Some(theirs), "{}", text);
        }

        #[test]
        fn the_word_scan_finds_the_first_special_byte(
            bytes in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=255, 0x20u8..0x7f, 0x20u8..0x7f, 0x20u8..0x7f], 0..40),
            from in 0usize..40,
        ) {
            let from = from.min(bytes.len());
            let naive = bytes[from..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .map(|p| from + p);
            let found = fast::next_special(&bytes, from);
            match naive {
                // Only the last, shorter than a word, bytes are left for the byte loop.
                Some(p) => prop_assert!(found == p || (found <= p && bytes.len() - found < 8)),
                None => prop_assert!(found >= bytes.len() || bytes.len() - found < 8),
            }
        }

        #[test]
        fn the_fast_parser_accepts_only_what_serde_accepts(
            v in any_json(),
            flips in proptest::collection::vec((0usize..4000, any::<u8>()), 1..4),
        ) {
            let mut bytes = v.to_string().into_bytes();
            for (at, b) in flips {
                let n = bytes.len();
                if let Some(x) = bytes.get_mut(at % n) {
                    // Mostly JSON's own bytes, so that many garbled texts stay close to JSON.
                    const JSONISH: &[u8] = b"{}[]:,\"\\ 0123456789-+.eEtrufalsn/u\t";
                    *x = if b < 128 { JSONISH[b as usize % JSONISH.len()] } else { b };
                }
            }
            if let Some(ours) = fast::parse(&bytes) {
                let theirs = Doc::parse_serde(&bytes);
                prop_assert!(theirs.is_ok(), "accepted what serde refuses: {}", String::from_utf8_lossy(&bytes));
                prop_assert_eq!(Some(ours), theirs.ok());
            }
        }
    }

    #[test]
    fn the_fast_parser_leaves_numbers_and_escapes_to_serde() {
        for text in [
            "0",
            "-0",
            "7",
            "-7",
            "1.5",
            "1e3",
            "-2.5E-3",
            "123456789012345678",
            "1234567890123456789",
            "99999999999999999999",
            "18446744073709551615",
            r#""a\u00e9\n""#,
            r#""\ud83d\ude00""#,
            "[1,[2,[3]]]",
            "{\"a\":{}}",
        ] {
            let ours = fast::parse(text.as_bytes());
            let theirs = Doc::parse_serde(text.as_bytes()).expect("valid JSON");
            assert_eq!(ours, Some(theirs), "{text}");
        }
        for text in [
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "--1",
            "1e400",
            "tru",
            "nulll",
            "[1,]",
            "{\"a\" 1}",
            "\"\t\"",
            r#""\ud800""#,
            r#""\x""#,
            "[1 2]",
            "{,}",
            "\"abc",
        ] {
            assert_eq!(fast::parse(text.as_bytes()), None, "{text}");
            assert!(Doc::parse_serde(text.as_bytes()).is_err(), "{text}");
        }
        // Not UTF-8, or too deep for the fast path: serde_json decides.
        assert_eq!(fast::parse(b"\"\xff\""), None);
        let deep = format!("{}{}", "[".repeat(110), "]".repeat(110));
        assert_eq!(fast::parse(deep.as_bytes()), None);
        assert!(Doc::parse(deep.as_bytes()).is_ok());
    }

    #[test]
    fn errors_and_depth_are_serde_jsons() {
        assert!(Doc::parse(b"{\"a\": }").is_err());
        assert!(Doc::parse(b"[1, 2").is_err());
        assert!(Doc::parse(b"1 2").is_err());
        let deep = "[".repeat(100_000);
        assert!(Doc::parse(deep.as_bytes()).is_err());
    }
}
