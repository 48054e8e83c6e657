//! Framing: bytes into text (UTF-8, else ISO 8859-1), logical lines (CR, LF, CRLF, MLLP
//! frame bytes), batch envelopes, and messages.

use std::borrow::Cow;

use super::segment::Msg;
use crate::ingest::{clip_raw, BadRecord, Context, Location};

/// UTF-8 when valid (borrowed, no copy), else ISO 8859-1, where every byte is a character.
pub(super) fn decode_bytes(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// The non-blank logical lines of a file with their 1-based line numbers. CR, LF and CRLF
/// each end a line; MLLP block characters split a line without counting as one.
pub(super) fn logical_lines(text: &str) -> Vec<(u64, &str)> {
    let mut out = Vec::new();
    let mut no = 0u64;
    for piece in text.split('\n') {
        let piece = piece.strip_suffix('\r').unwrap_or(piece);
        for line in piece.split('\r') {
            no += 1;
            for part in line.split(['\x0b', '\x1c']) {
                let part = part.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
                if !part.is_empty() {
                    out.push((no, part));
                }
            }
        }
    }
    out
}

/// True when `line` is a segment named `name` (the name followed by a non-alphanumeric
/// separator, or nothing).
pub(super) fn is_segment(line: &str, name: &str) -> bool {
    match line.strip_prefix(name) {
        Some(rest) => rest.chars().next().is_none_or(|c| !c.is_alphanumeric()),
        None => false,
    }
}

pub(super) fn is_batch_envelope(line: &str) -> bool {
    ["FHS", "BHS", "BTS", "FTS"]
        .iter()
        .any(|n| is_segment(line, n))
}

/// Splits a file into messages (each starting at an MSH segment) and parses their headers.
pub(super) fn read_messages<'a>(
    file: &'a str,
    text: &'a str,
    ctx: &Context,
    msgs: &mut Vec<Msg<'a>>,
    bad: &mut Vec<BadRecord>,
) {
    let mut junk: Vec<(u64, &'a str)> = Vec::new();
    let mut cur: Vec<(u64, &'a str)> = Vec::new();
    for (no, line) in logical_lines(text) {
        if is_segment(line, "MSH") || is_batch_envelope(line) {
            flush_junk(file, &mut junk, bad);
            flush_message(file, &mut cur, ctx, msgs, bad);
            if is_segment(line, "MSH") {
                cur.push((no, line));
            }
        } else if cur.is_empty() {
            junk.push((no, line));
        } else {
            cur.push((no, line));
        }
    }
    flush_junk(file, &mut junk, bad);
    flush_message(file, &mut cur, ctx, msgs, bad);
}

pub(super) fn flush_junk(file: &str, junk: &mut Vec<(u64, &str)>, bad: &mut Vec<BadRecord>) {
    if let Some(&(first, _)) = junk.first() {
        let raw: Vec<&str> = junk.iter().map(|(_, l)| *l).collect();
        bad.push(BadRecord {
            location: Location {
                file: file.to_string(),
                record: first,
            },
            table: None,
            field: None,
            reason: "unparseable".into(),
            detail: format!(
                "{} line(s) outside any HL7 v2 message (no MSH segment before them)",
                junk.len()
            ),
            raw: clip_raw(&raw.join("\n")),
        });
        junk.clear();
    }
}

pub(super) fn flush_message<'a>(
    file: &'a str,
    cur: &mut Vec<(u64, &'a str)>,
    ctx: &Context,
    msgs: &mut Vec<Msg<'a>>,
    bad: &mut Vec<BadRecord>,
) {
    if cur.is_empty() {
        return;
    }
    let lines = std::mem::take(cur);
    if let Some(m) = Msg::parse(file, lines, ctx, bad) {
        msgs.push(m);
    }
}
