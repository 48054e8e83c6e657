//! A JSON document that borrows from its input: the FHIR parser's tree.
//!
//! `serde_json::Value` copies every string and key into its own allocation and keeps objects
//! in a `BTreeMap`. FHIR resources are small objects of many short strings, so that copying
//! and ordering is most of the parse. Here a string without escapes and every key without
//! escapes point into the input, and an object is a vector of its members in input order
//! (a key's lookup is a short linear scan; with a repeated key the last one wins, as in
//! `serde_json::Value`). Parsing, depth limit and error messages are serde_json's.

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
        serde_json::from_slice(bytes)
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

#[cfg(test)]
mod tests {
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

    #[test]
    fn errors_and_depth_are_serde_jsons() {
        assert!(Value::parse(b"{\"a\": }").is_err());
        assert!(Value::parse(b"[1, 2").is_err());
        assert!(Value::parse(b"1 2").is_err());
        let deep = "[".repeat(100_000);
        assert!(Value::parse(deep.as_bytes()).is_err());
    }
}
