//! The head of an NDJSON line (`resourceType`, `id`) read by a JSON validator that builds
//! nothing, so that lines of types Ward does not curate are skipped unparsed.
//!
//! A JSON validator that builds nothing: each function takes the position of a token's
//! first byte and gives the position past it, or `None` for text that is not JSON.
//! Stricter than serde_json where the two differ (nesting depth), never looser.

use std::borrow::Cow;

use serde::Deserialize;

/// The two fields read of an NDJSON line of a type Ward does not curate; everything else is
/// skipped unparsed.
#[derive(Deserialize)]
pub(super) struct IdOnly<'a> {
    #[serde(rename = "resourceType", borrow)]
    pub(super) resource_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) id: Option<Cow<'a, str>>,
}

/// `resourceType` and `id` of a line that is one valid JSON object, found in a single pass
/// that checks the whole line against the JSON grammar (strings and their escapes, numbers,
/// literals, nesting up to [`MAX_DEPTH`]) without building anything: a line this
/// accepts is one serde_json accepts too (like serde_json skipping a value, it does not
/// check the UTF-8 of strings it only skips; the two it reads must be UTF-8), so a line of a
/// type Ward does not curate can be skipped on this pass alone. `None` when the line is not
/// that, or when one of the two strings has an escape or is not a string: the caller then
/// asks serde, whose answer (and error message) counts.
pub(super) fn scan_head(b: &[u8]) -> Option<IdOnly<'_>> {
    let text = |from: usize, to: usize| std::str::from_utf8(b.get(from..to)?).ok();
    let mut head = IdOnly {
        resource_type: None,
        id: None,
    };
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (ws(b, i + 1) == b.len()).then_some(head);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (key_end, key_escaped) = string(b, i)?;
        let key = b.get(i + 1..key_end - 1)?;
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, i + 1);
        let wanted = !key_escaped && (key == b"resourceType" || key == b"id");
        if wanted {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (end, escaped) = string(b, i)?;
            if escaped {
                return None;
            }
            let value = Cow::Borrowed(text(i + 1, end - 1)?);
            if key == b"id" {
                head.id = Some(value);
            } else {
                head.resource_type = Some(value);
            }
            i = end;
        } else {
            i = value(b, i, 1)?;
        }
        i = ws(b, i);
        match b.get(i)? {
            b',' => i = ws(b, i + 1),
            b'}' => return (ws(b, i + 1) == b.len()).then_some(head),
            _ => return None,
        }
    }
}

/// Containers nested deeper than this are refused (serde_json's limit is 128).
pub(super) const MAX_DEPTH: usize = 100;

/// Past JSON whitespace (space, tab, LF, CR; not form feed, which JSON does not allow).
pub(super) fn ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// From an opening quote: past the closing quote, and whether the string had escapes.
/// Control characters and unknown escapes are refused.
pub(super) fn string(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        match *b.get(j)? {
            b'"' => return Some((j + 1, escaped)),
            b'\\' => {
                escaped = true;
                match *b.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                    b'u' if b.get(j + 2..j + 6)?.iter().all(u8::is_ascii_hexdigit) => j += 6,
                    _ => return None,
                }
            }
            0..=0x1f => return None,
            _ => j += 1,
        }
    }
}

pub(super) fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
pub(super) fn number(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match *b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i + 1),
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// Past one value starting at `i`, inside `depth` containers.
pub(super) fn value(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    let literal = |word: &[u8]| {
        b.get(i..i + word.len())
            .filter(|w| *w == word)
            .map(|w| i + w.len())
    };
    match *b.get(i)? {
        b'"' => string(b, i).map(|(end, _)| end),
        b'{' if depth < MAX_DEPTH => {
            let mut j = ws(b, i + 1);
            if b.get(j) == Some(&b'}') {
                return Some(j + 1);
            }
            loop {
                if b.get(j) != Some(&b'"') {
                    return None;
                }
                j = ws(b, string(b, j)?.0);
                if b.get(j) != Some(&b':') {
                    return None;
                }
                j = ws(b, value(b, ws(b, j + 1), depth + 1)?);
                match *b.get(j)? {
                    b',' => j = ws(b, j + 1),
                    b'}' => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        b'[' if depth < MAX_DEPTH => {
            let mut j = ws(b, i + 1);
            if b.get(j) == Some(&b']') {
                return Some(j + 1);
            }
            loop {
                j = ws(b, value(b, j, depth + 1)?);
                match *b.get(j)? {
                    b',' => j = ws(b, j + 1),
                    b']' => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        b't' => literal(b"true"),
        b'f' => literal(b"false"),
        b'n' => literal(b"null"),
        b'-' | b'0'..=b'9' => number(b, i),
        _ => None,
    }
}
