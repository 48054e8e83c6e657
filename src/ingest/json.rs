//! A JSON document that borrows from its input: the FHIR parser's tree.
//!
//! `serde_json::Value` copies every string and key into its own allocation and keeps objects
//! in a `BTreeMap`. FHIR resources are small objects of many short strings, so that copying
//! and ordering is most of the parse. Here a string without escapes and every key without
//! escapes point into the input, and an object is a vector of its members in input order
//! (a key's lookup is a short linear scan; with a repeated key the last one wins, as in
//! `serde_json::Value`). A hand-written parser reads the common case (text that is UTF-8 as a
//! whole, nesting up to 100 levels) and leaves numbers other than plain integers, strings with
//! escapes, and anything it does not accept to serde_json: values, what is accepted, the
//! depth limit and error messages are serde_json's.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// A JSON value borrowing from the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string (borrowed unless it had escapes).
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Value<'a>>),
    /// An object's members, in input order.
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
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

/// What [`Value::get`] accepts: a key of an object or a position in an array.
pub(crate) trait Index {
    /// The member of `v` this names.
    fn index_into<'v, 'a>(&self, v: &'v Value<'a>) -> Option<&'v Value<'a>>;
}

impl Index for str {
    fn index_into<'v, 'a>(&self, v: &'v Value<'a>) -> Option<&'v Value<'a>> {
        match v {
            Value::Object(members) => members
                .iter()
                .rev()
                .find(|(k, _)| k.as_ref() == self)
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

impl Index for usize {
    fn index_into<'v, 'a>(&self, v: &'v Value<'a>) -> Option<&'v Value<'a>> {
        match v {
            Value::Array(items) => items.get(*self),
            _ => None,
        }
    }
}

impl<T: Index + ?Sized> Index for &T {
    fn index_into<'v, 'a>(&self, v: &'v Value<'a>) -> Option<&'v Value<'a>> {
        (**self).index_into(v)
    }
}

impl<'a> Value<'a> {
    /// Parses one JSON document.
    ///
    /// # Errors
    /// serde_json's error (line and column) for text that is not one JSON value.
    pub(crate) fn parse(bytes: &'a [u8]) -> serde_json::Result<Value<'a>> {
        match fast::parse(bytes) {
            Some(v) => Ok(v),
            None => serde_json::from_slice(bytes),
        }
    }

    /// An object's member by key, or an array's item by position.
    pub(crate) fn get<I: Index>(&self, index: I) -> Option<&Value<'a>> {
        index.index_into(self)
    }

    /// The text of a string.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The items of an array.
    pub(crate) fn as_array(&self) -> Option<&Vec<Value<'a>>> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// A number as a float.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// A boolean.
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Whether this is an object.
    pub(crate) fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }
}

/// Compact JSON, like `serde_json::Value`'s `Display`.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(Number::PosInt(n)) => s.serialize_u64(*n),
            Value::Number(Number::NegInt(n)) => s.serialize_i64(*n),
            Value::Number(Number::Float(x)) => s.serialize_f64(*x),
            Value::String(t) => s.serialize_str(t),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value<'de>, E> {
        Ok(Value::Number(if n < 0 {
            Number::NegInt(n)
        } else {
            Number::PosInt(n as u64)
        }))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value<'de>, E> {
        Ok(Value::Number(Number::PosInt(n)))
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Value<'de>, E> {
        Ok(Value::Number(Number::Float(x)))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(s)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key_seed(Key)? {
            let value = map.next_value()?;
            members.push((key, value));
        }
        Ok(Value::Object(members))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

/// A parser for the common case, several times faster than building the tree through serde:
/// one pass over text that is UTF-8 as a whole, strings without escapes borrowed as they are
/// found. It hands serde_json the tokens it does not read itself (numbers other than plain
/// integers, strings with escapes), so their values are serde_json's. It gives up (`None`)
/// on anything else, never accepting what serde_json refuses: [`Value::parse`] then asks
/// serde_json, whose answer and error message count.
mod fast {
    use std::borrow::Cow;

    use super::Value;

    /// Containers nested deeper than this are left to serde_json (its limit is 128).
    const MAX_DEPTH: usize = 100;

    pub(super) fn parse(bytes: &[u8]) -> Option<Value<'_>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut p = Parser {
            text,
            b: text.as_bytes(),
            i: 0,
            members: Vec::new(),
            items: Vec::new(),
        };
        let v = p.value(0)?;
        p.ws();
        (p.i == p.b.len()).then_some(v)
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
        /// The members of the objects being read, innermost last: each object's list is
        /// allocated once, at its size, when it closes.
        members: Vec<(Cow<'a, str>, Value<'a>)>,
        /// The same for the items of arrays.
        items: Vec<Value<'a>>,
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

        fn value(&mut self, depth: usize) -> Option<Value<'a>> {
            self.ws();
            match *self.b.get(self.i)? {
                b'{' => self.object(depth + 1),
                b'[' => self.array(depth + 1),
                b'"' => self.string().map(Value::String),
                b't' => self.literal(b"true", Value::Bool(true)),
                b'f' => self.literal(b"false", Value::Bool(false)),
                b'n' => self.literal(b"null", Value::Null),
                b'-' | b'0'..=b'9' => self.number(),
                _ => None,
            }
        }

        fn object(&mut self, depth: usize) -> Option<Value<'a>> {
            if depth > MAX_DEPTH {
                return None;
            }
            self.i += 1;
            self.ws();
            if self.b.get(self.i) == Some(&b'}') {
                self.i += 1;
                return Some(Value::Object(Vec::new()));
            }
            let from = self.members.len();
            loop {
                self.ws();
                if self.b.get(self.i) != Some(&b'"') {
                    return None;
                }
                let key = self.string()?;
                self.expect(b':')?;
                let value = self.value(depth)?;
                self.members.push((key, value));
                self.ws();
                match *self.b.get(self.i)? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        return Some(Value::Object(self.members.drain(from..).collect()));
                    }
                    _ => return None,
                }
            }
        }

        fn array(&mut self, depth: usize) -> Option<Value<'a>> {
            if depth > MAX_DEPTH {
                return None;
            }
            self.i += 1;
            self.ws();
            if self.b.get(self.i) == Some(&b']') {
                self.i += 1;
                return Some(Value::Array(Vec::new()));
            }
            let from = self.items.len();
            loop {
                let item = self.value(depth)?;
                self.items.push(item);
                self.ws();
                match *self.b.get(self.i)? {
                    b',' => self.i += 1,
                    b']' => {
                        self.i += 1;
                        return Some(Value::Array(self.items.drain(from..).collect()));
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

        fn literal(&mut self, word: &[u8], v: Value<'a>) -> Option<Value<'a>> {
            let end = self.i + word.len();
            (self.b.get(self.i..end)? == word).then(|| {
                self.i = end;
                v
            })
        }

        /// A plain integer (no sign, no leading zero, at most 18 digits) is read here;
        /// any other number token is read by serde_json.
        fn number(&mut self) -> Option<Value<'a>> {
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
                Value::Number(super::Number::PosInt(n))
            } else {
                match serde_json::from_slice::<Value<'_>>(token).ok()? {
                    Value::Number(n) => Value::Number(n),
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
        let v = Value::parse(text).unwrap();
        let Value::Object(members) = &v else {
            panic!("not an object: {v}")
        };
        assert!(matches!(members[0].0, Cow::Borrowed("a")));
        assert!(matches!(
            &members[0].1,
            Value::String(Cow::Borrowed("plain"))
        ));
        assert!(matches!(&members[1].0, Cow::Owned(k) if k == "bA"));
        assert!(matches!(&members[1].1, Value::String(Cow::Owned(s)) if s == "esc\"aped"));
        assert_eq!(v.get("bA").and_then(Value::as_str), Some("esc\"aped"));
        let n = v.get("n").unwrap();
        assert_eq!(n.get(0).and_then(Value::as_f64), Some(1.0));
        assert_eq!(n.get(1).and_then(Value::as_f64), Some(-2.0));
        assert_eq!(n.get(2).and_then(Value::as_f64), Some(2.5));
        assert_eq!(n.get(3), Some(&Value::Null));
        assert_eq!(n.get(4).and_then(Value::as_bool), Some(true));
        assert_eq!(n.get(5), None);
        assert_eq!(v.get("missing"), None);
        assert_eq!(n.get("a"), None);
    }

    #[test]
    fn displays_like_serde_json_and_the_last_repeated_key_wins() {
        let text = r#"{"k": 1, "s": "a\nb", "k": {"x": [1.5, -3, "y"]}}"#;
        let v = Value::parse(text.as_bytes()).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            v.get("k").unwrap().to_string(),
            theirs.get("k").unwrap().to_string()
        );
        assert_eq!(v.get("s").unwrap().to_string(), r#""a\nb""#);
        let round: serde_json::Value = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(round.get("s"), theirs.get("s"));
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
            let theirs: Value<'_> = serde_json::from_str(&text).expect("serde reads its own output");
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
                let theirs = serde_json::from_slice::<Value<'_>>(&bytes);
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
            let theirs: Value<'_> = serde_json::from_str(text).expect("valid JSON");
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
            assert!(serde_json::from_str::<Value<'_>>(text).is_err(), "{text}");
        }
        // Not UTF-8, or too deep for the fast path: serde_json decides.
        assert_eq!(fast::parse(b"\"\xff\""), None);
        let deep = format!("{}{}", "[".repeat(110), "]".repeat(110));
        assert_eq!(fast::parse(deep.as_bytes()), None);
        assert!(Value::parse(deep.as_bytes()).is_ok());
    }

    #[test]
    fn errors_and_depth_are_serde_jsons() {
        assert!(Value::parse(b"{\"a\": }").is_err());
        assert!(Value::parse(b"[1, 2").is_err());
        assert!(Value::parse(b"1 2").is_err());
        let deep = "[".repeat(100_000);
        assert!(Value::parse(deep.as_bytes()).is_err());
    }
}
