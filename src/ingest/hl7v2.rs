//! HL7 v2.x ingest: ADT (A01–A08, A11–A13) and ORU^R01 messages into curated rows.
//!
//! [`parse`] reads every input of one ingest run, then replays the messages in the order
//! the source learned them (MSH-7, ties by input order), because ADT is a stream of changes
//! to one visit, not a set of independent records: an admission, a transfer, a discharge and
//! a cancel only make sense as a sequence.
//!
//! # Framing
//! Segments may end with CR, LF or CRLF; MLLP frame bytes (`0x0B`, `0x1C`), byte-order marks
//! and blank lines are ignored, and a file may hold any number of messages. A file that is
//! not valid UTF-8 is read as ISO 8859-1 (the most common HL7 v2 character set), so no byte
//! is ever rejected. Batch envelopes (FHS, BHS, BTS, FTS) are framing, not records. Each
//! message honours its own MSH-1/MSH-2 separators and escape sequences.
//!
//! # Versions
//! Patients, encounters, care-team assignments and observations are *versioned*: when a
//! later message changes a row, the current row gets `retracted_at` = that message's
//! `known_at` and a new row (with the new `known_at`) replaces it. At any time `t` exactly the
//! rows with `known_at <= t` and `retracted_at` null or `> t` are visible, which is what a
//! point-in-time lookup needs. A message that changes nothing adds no row; it is reported as
//! a [`Skipped`] record (`... (no change)`) so that every message is accounted for.
//!
//! - A11 (cancel admit) retracts the encounter and its care team with no replacement;
//!   A13 (cancel discharge) replaces the discharged version by one without discharge;
//!   A12 (cancel transfer) restores the version before the last A02. A cancel that names an
//!   encounter this run does not hold is a `dangling_reference` bad record: it cannot be
//!   applied, and that must not pass silently.
//! - A later result for the same observation key (filler order number, else placer, OBX-3
//!   code, OBX-4 sub-id) supersedes the earlier row: a correction (`C`) as well as a final
//!   result after a preliminary one. `D`/`W` retract it without replacement.
//!
//! # Errors
//! Problems become [`BadRecord`]s: message-level ones (no usable MSH, no PID-3) are located
//! at the message's first line, field-level ones at the line of the segment at fault.
//! Unsupported message types are [`Skipped`], never bad.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use rayon::prelude::*;

use crate::curated::{
    admission_type, code_system, discharge_disposition, encounter_class, service, CareTeamMember,
    Coding, Encounter, Observation, Patient, RowMeta, Table,
};
use crate::ingest::{clip_raw, BadRecord, Context, Input, Location, Parsed, Skipped};

/// ADT trigger events that Ward curates; any other ADT event is skipped.
const ADT_EVENTS: [&str; 11] = [
    "A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13",
];

/// LOINC codes of vital signs (the FHIR vital-signs profile set), to tell vitals from labs.
const VITAL_SIGNS_LOINC: [&str; 13] = [
    "85353-1", "9279-1", "8867-4", "2708-6", "59408-5", "8310-5", "8302-2", "9843-4", "29463-7",
    "39156-5", "85354-9", "8480-6", "8462-4",
];

/// Parses the HL7 v2 messages of all `inputs` of one ingest run into curated rows, bad
/// records and skipped records.
///
/// Never fails and never panics: whatever cannot be read becomes a [`BadRecord`]. The same
/// inputs always give the same output, rows in the order the messages were replayed
/// (MSH-7, then input order, then position in the file).
pub fn parse(inputs: &[Input<'_>], ctx: &Context) -> Parsed {
    // Decoding and splitting into messages is per file, so the files are read in parallel;
    // their messages and bad records are then joined in input order. Replaying the messages
    // (below) carries state from one to the next and stays serial.
    let texts: Vec<Cow<'_, str>> = inputs.par_iter().map(|i| decode_bytes(i.bytes)).collect();
    let read: Vec<(Vec<Msg<'_>>, Vec<BadRecord>)> = inputs
        .par_iter()
        .zip(texts.par_iter())
        .map(|(input, text)| {
            let (mut msgs, mut bad) = (Vec::new(), Vec::new());
            read_messages(input.name, text, ctx, &mut msgs, &mut bad);
            (msgs, bad)
        })
        .collect();
    let mut bad = Vec::with_capacity(read.iter().map(|(_, b)| b.len()).sum());
    let mut msgs = Vec::with_capacity(read.iter().map(|(m, _)| m.len()).sum());
    for (m, b) in read {
        msgs.extend(m);
        bad.extend(b);
    }
    // A stable sort: ties keep input order, then the order within the file.
    msgs.sort_by_key(|m| m.known_at);
    let mut asm = Assembler {
        out: Parsed {
            bad,
            ..Parsed::default()
        },
        patients: HashMap::new(),
        encounters: HashMap::new(),
        observations: HashMap::new(),
        changed: false,
    };
    for m in &msgs {
        asm.message(m);
    }
    asm.out
}

/// The header of one HL7 v2 message, as a live feed's listener needs it to acknowledge and
/// deduplicate the message (`src/live/mllp.rs`), read by this parser's own framing and MSH
/// reading (so a listener and a batch ingest never disagree on what a message says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// MSH-1, the field separator.
    pub field_sep: char,
    /// MSH-2, the encoding characters, as written.
    pub encoding: String,
    /// MSH-3, the sending application, as written.
    pub sending_application: String,
    /// MSH-4, the sending facility, as written.
    pub sending_facility: String,
    /// MSH-5, the receiving application, as written.
    pub receiving_application: String,
    /// MSH-6, the receiving facility, as written.
    pub receiving_facility: String,
    /// MSH-10, the message control id (decoded); `None` when empty.
    pub control_id: Option<String>,
    /// MSH-11, the processing id, as written.
    pub processing_id: String,
    /// MSH-12, the version id, as written.
    pub version: String,
    /// The `source_system` the message's rows carry (`MSH-3^MSH-4`, ...).
    pub source_system: String,
    /// The message type and trigger (`ADT^A01`).
    pub kind: String,
}

/// What the batch parser reads in one message on its own: see [`check_message`].
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// The header of every message the bytes hold (one for a well-framed message).
    pub headers: Vec<Header>,
    /// The bad records [`parse`] finds in these bytes alone, except those that depend on
    /// earlier messages (`dangling_reference`: a cancel of an encounter not in this input).
    pub bad: Vec<BadRecord>,
}

/// Reads `bytes` (one message, as `ward ingest` would read a file named `name` holding only
/// it) with the batch parser: the headers of its messages and the bad records the parser's
/// checks find. Never panics.
pub fn check_message(name: &str, bytes: &[u8], ctx: &Context) -> Checked {
    let text = decode_bytes(bytes);
    let (mut msgs, mut bad) = (Vec::new(), Vec::new());
    read_messages(name, &text, ctx, &mut msgs, &mut bad);
    let headers = msgs.iter().map(Msg::header).collect();
    let parsed = parse(&[Input { name, bytes }], ctx);
    Checked {
        headers,
        bad: parsed
            .bad
            .into_iter()
            .filter(|b| b.reason != "dangling_reference")
            .collect(),
    }
}

/// UTF-8 when valid (borrowed, no copy), else ISO 8859-1, where every byte is a character.
fn decode_bytes(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

// ---------------------------------------------------------------------------------------
// Framing: lines, messages, segments.
// ---------------------------------------------------------------------------------------

/// The non-blank logical lines of a file with their 1-based line numbers. CR, LF and CRLF
/// each end a line; MLLP block characters split a line without counting as one.
fn logical_lines(text: &str) -> Vec<(u64, &str)> {
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
fn is_segment(line: &str, name: &str) -> bool {
    match line.strip_prefix(name) {
        Some(rest) => rest.chars().next().is_none_or(|c| !c.is_alphanumeric()),
        None => false,
    }
}

fn is_batch_envelope(line: &str) -> bool {
    ["FHS", "BHS", "BTS", "FTS"]
        .iter()
        .any(|n| is_segment(line, n))
}

/// Splits a file into messages (each starting at an MSH segment) and parses their headers.
fn read_messages<'a>(
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

fn flush_junk(file: &str, junk: &mut Vec<(u64, &str)>, bad: &mut Vec<BadRecord>) {
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

fn flush_message<'a>(
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

/// The separators and escape character of one message (MSH-1 and MSH-2). A missing one
/// is `None`: that level of structure does not exist in the message.
#[derive(Debug, Clone, Copy)]
struct Enc {
    field: char,
    comp: Option<char>,
    rep: Option<char>,
    esc: Option<char>,
    sub: Option<char>,
    trunc: Option<char>,
}

impl Enc {
    /// Reads MSH-1 and MSH-2 from an MSH line.
    fn from_msh(msh: &str) -> Result<(Enc, &str), String> {
        let rest = msh.get(3..).unwrap_or("");
        let field = rest
            .chars()
            .next()
            .ok_or("the MSH segment ends before its field separator (MSH-1)")?;
        let after = rest.get(field.len_utf8()..).unwrap_or("");
        let enc_chars = after.split(field).next().unwrap_or("");
        let mut it = enc_chars.chars();
        let enc = Enc {
            field,
            comp: it.next(),
            rep: it.next(),
            esc: it.next(),
            sub: it.next(),
            trunc: it.next(),
        };
        let all: Vec<char> = [Some(field), enc.comp, enc.rep, enc.esc, enc.sub, enc.trunc]
            .into_iter()
            .flatten()
            .collect();
        for (i, c) in all.iter().enumerate() {
            if c.is_alphanumeric() || c.is_whitespace() || all.iter().skip(i + 1).any(|d| d == c) {
                return Err(format!(
                    "MSH-1/MSH-2 separators `{field}{enc_chars}` are not distinct punctuation"
                ));
            }
        }
        Ok((enc, after))
    }

    fn reps<'s>(&self, f: &'s str) -> std::str::Split<'s, char> {
        // Without a repetition character the field separator (which a field never
        // contains) yields the field whole.
        f.split(self.rep.unwrap_or(self.field))
    }

    fn comp<'s>(&self, s: &'s str, n: usize) -> &'s str {
        s.split(self.comp.unwrap_or(self.field))
            .nth(n.saturating_sub(1))
            .unwrap_or("")
    }

    fn sub<'s>(&self, s: &'s str, n: usize) -> &'s str {
        s.split(self.sub.unwrap_or(self.field))
            .nth(n.saturating_sub(1))
            .unwrap_or("")
    }

    /// A leaf value: unescaped, trimmed; `None` when empty or the HL7 null `""`.
    fn text(&self, s: &str) -> Option<String> {
        let s = s.trim();
        if s.is_empty() || s == "\"\"" {
            return None;
        }
        let t = self.unescape(s);
        let t = t.trim();
        (!t.is_empty()).then(|| t.to_string())
    }

    /// Decodes HL7 escape sequences (`\F\ \S\ \T\ \R\ \E\ \P\ \Xhh..\ \.br\ ...`).
    /// Formatting and character-set sequences are dropped; an unknown or unterminated
    /// sequence is kept as written so nothing is lost.
    fn unescape<'s>(&self, s: &'s str) -> Cow<'s, str> {
        let Some(e) = self.esc else {
            return Cow::Borrowed(s);
        };
        if !s.contains(e) {
            return Cow::Borrowed(s);
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some((before, after)) = rest.split_once(e) {
            out.push_str(before);
            match after.split_once(e) {
                Some((seq, tail)) => {
                    self.escape(seq, &mut out);
                    rest = tail;
                }
                None => {
                    out.push(e);
                    rest = after;
                    break;
                }
            }
        }
        out.push_str(rest);
        Cow::Owned(out)
    }

    fn escape(&self, seq: &str, out: &mut String) {
        let push = |out: &mut String, c: Option<char>| match c {
            Some(c) => {
                out.push(c);
                true
            }
            None => false,
        };
        let done = match seq {
            "F" => push(out, Some(self.field)),
            "S" => push(out, self.comp),
            "T" => push(out, self.sub),
            "R" => push(out, self.rep),
            "E" => push(out, self.esc),
            "P" => push(out, self.trunc),
            ".br" => push(out, Some('\n')),
            "H" | "N" => true,
            s if s.starts_with(".sp") || s.starts_with(".ce") => push(out, Some('\n')),
            s if s.starts_with('.') => true,
            s if s.starts_with('X') => match hex_bytes(s.get(1..).unwrap_or("")) {
                Some(bytes) => {
                    out.push_str(&decode_bytes(&bytes));
                    true
                }
                None => false,
            },
            s if s.starts_with('C') || s.starts_with('M') || s.starts_with('Z') => true,
            _ => false,
        };
        if !done {
            if let Some(e) = self.esc {
                out.push(e);
                out.push_str(seq);
                out.push(e);
            }
        }
    }
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    (0..hex.len() / 2)
        .map(|i| {
            hex.get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// One segment: its fields split, numbered as HL7 numbers them (`fields[n]` is `SEG-n`;
/// for MSH, `fields[1]` is the field separator itself).
#[derive(Debug)]
struct Seg<'a> {
    name: &'a str,
    fields: Vec<&'a str>,
    /// Line of the segment in its file.
    line: u64,
    /// 1-based position among the message's segments of the same name (`OBX-3`: the third
    /// OBX), used in `source_id`.
    ordinal: usize,
    raw: &'a str,
}

impl<'a> Seg<'a> {
    fn field(&self, n: usize) -> &'a str {
        self.fields.get(n).copied().unwrap_or("")
    }
}

/// One message, header read, segments split.
#[derive(Debug)]
struct Msg<'a> {
    file: &'a str,
    first_line: u64,
    enc: Enc,
    segs: Vec<Seg<'a>>,
    known_at: DateTime<Utc>,
    /// The zone of times written without an offset (the context's default).
    offset: FixedOffset,
    source_system: String,
    control_id: String,
    msg_type: String,
    trigger: String,
}

impl<'a> Msg<'a> {
    /// Reads the header and splits the segments. Lines that are not segments are reported
    /// as bad records and left out; the rest of the message is still used. A message
    /// without a usable MSH is one bad record, and `None`.
    fn parse(
        file: &'a str,
        lines: Vec<(u64, &'a str)>,
        ctx: &Context,
        bad: &mut Vec<BadRecord>,
    ) -> Option<Msg<'a>> {
        let first_line = lines.first().map_or(0, |(n, _)| *n);
        let raw_all = || {
            let v: Vec<&str> = lines.iter().map(|(_, l)| *l).collect();
            clip_raw(&v.join("\n"))
        };
        let msh_line = lines.first().map_or("", |(_, l)| *l);
        let (enc, after_fs) = match Enc::from_msh(msh_line) {
            Ok(x) => x,
            Err(detail) => {
                bad.push(BadRecord {
                    location: Location {
                        file: file.to_string(),
                        record: first_line,
                    },
                    table: None,
                    field: Some("MSH-2".into()),
                    reason: "unparseable".into(),
                    detail,
                    raw: raw_all(),
                });
                return None;
            }
        };
        let mut segs: Vec<Seg<'a>> = Vec::with_capacity(lines.len());
        let mut counts: HashMap<&'a str, usize> = HashMap::new();
        for (i, &(no, line)) in lines.iter().enumerate() {
            let fields: Vec<&'a str> = if i == 0 {
                let fs = msh_line.get(3..3 + enc.field.len_utf8()).unwrap_or("|");
                let mut f = vec!["MSH", fs];
                f.extend(after_fs.split(enc.field));
                f
            } else {
                line.split(enc.field).collect()
            };
            let name = fields.first().copied().unwrap_or("");
            let valid = name.len() == 3
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !valid {
                bad.push(BadRecord {
                    location: Location {
                        file: file.to_string(),
                        record: no,
                    },
                    table: None,
                    field: None,
                    reason: "unparseable".into(),
                    detail: format!(
                        "line is not an HL7 v2 segment (no three-character segment name \
                         before `{}`); the rest of the message was read",
                        enc.field
                    ),
                    raw: clip_raw(line),
                });
                continue;
            }
            let ordinal = counts.entry(name).or_insert(0);
            *ordinal += 1;
            segs.push(Seg {
                name,
                fields,
                line: no,
                ordinal: *ordinal,
                raw: line,
            });
        }
        let mut m = Msg {
            file,
            first_line,
            enc,
            segs,
            known_at: ctx.ingested_at,
            offset: ctx.default_offset,
            source_system: String::new(),
            control_id: String::new(),
            msg_type: String::new(),
            trigger: String::new(),
        };
        let Some(msh) = m.seg("MSH") else {
            bad.push(BadRecord {
                location: Location {
                    file: file.to_string(),
                    record: first_line,
                },
                table: None,
                field: Some("MSH".into()),
                reason: "unparseable".into(),
                detail: "no MSH segment".into(),
                raw: raw_all(),
            });
            return None;
        };
        // A missing or unreadable MSH-7 is tolerated: the ingestion time stands in.
        let known_at = m
            .get(msh, 7, 1)
            .and_then(|t| parse_ts(&t, ctx.default_offset).ok())
            .unwrap_or(ctx.ingested_at);
        let app = m.get(msh, 3, 1);
        let facility = m.get(msh, 4, 1);
        let source_system = match (app, facility) {
            (Some(a), Some(f)) => format!("{a}^{f}"),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => file.to_string(),
        };
        let control_id = m
            .get(msh, 10, 1)
            .unwrap_or_else(|| format!("{file}:{first_line}"));
        let msg_type = m
            .get(msh, 9, 1)
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_default();
        let trigger = m
            .get(msh, 9, 2)
            .or_else(|| m.seg("EVN").and_then(|evn| m.get(evn, 1, 1)))
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_default();
        m.known_at = known_at;
        m.source_system = source_system;
        m.control_id = control_id;
        m.msg_type = msg_type;
        m.trigger = trigger;
        Some(m)
    }

    /// The header fields a listener acknowledges with ([`Header`]).
    fn header(&self) -> Header {
        let msh = self.seg("MSH");
        let raw = |n: usize| msh.map_or("", |s| s.field(n)).to_string();
        Header {
            field_sep: self.enc.field,
            encoding: raw(2),
            sending_application: raw(3),
            sending_facility: raw(4),
            receiving_application: raw(5),
            receiving_facility: raw(6),
            control_id: msh.and_then(|s| self.get(s, 10, 1)),
            processing_id: raw(11),
            version: raw(12),
            source_system: self.source_system.clone(),
            kind: self.kind(),
        }
    }

    /// The first segment named `name`.
    fn seg(&self, name: &str) -> Option<&Seg<'a>> {
        self.segs.iter().find(|s| s.name == name)
    }

    /// First repetition, component `comp`, first subcomponent of field `field`: decoded.
    fn get(&self, seg: &Seg<'_>, field: usize, comp: usize) -> Option<String> {
        let f = self.enc.reps(seg.field(field)).next().unwrap_or("");
        self.enc.text(self.enc.sub(self.enc.comp(f, comp), 1))
    }

    /// A field as a three-way update: absent (keep), HL7 null `""` (clear), or a value.
    fn raw_upd<'s>(&self, seg: &Seg<'s>, field: usize) -> Upd<&'s str> {
        let f = seg.field(field).trim();
        if f.is_empty() {
            Upd::Keep
        } else if f == "\"\"" {
            Upd::Clear
        } else {
            Upd::Set(f)
        }
    }

    /// A component of a field's first repetition as an update.
    fn upd(&self, seg: &Seg<'_>, field: usize, comp: usize) -> Upd<String> {
        match self.raw_upd(seg, field) {
            Upd::Keep => Upd::Keep,
            Upd::Clear => Upd::Clear,
            Upd::Set(_) => self.get(seg, field, comp).map_or(Upd::Keep, Upd::Set),
        }
    }

    fn kind(&self) -> String {
        if self.trigger.is_empty() {
            self.msg_type.clone()
        } else {
            format!("{}^{}", self.msg_type, self.trigger)
        }
    }

    fn raw(&self) -> String {
        let v: Vec<&str> = self.segs.iter().map(|s| s.raw).collect();
        clip_raw(&v.join("\n"))
    }

    fn meta(&self, seg: &Seg<'_>) -> RowMeta {
        RowMeta {
            source_system: self.source_system.clone(),
            source_id: format!("{}/{}-{}", self.control_id, seg.name, seg.ordinal),
            known_at: self.known_at,
            retracted_at: None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Times.
// ---------------------------------------------------------------------------------------

/// Parses the local part and offset of an HL7 TS/DTM:
/// `YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]` (the first component of a TS).
fn parse_local(raw: &str) -> Result<(NaiveDateTime, Option<FixedOffset>), String> {
    let s = raw.trim();
    let bad = || format!("`{s}` is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])");
    let (main, off) = match s.find(['+', '-']) {
        Some(i) => (s.get(..i).unwrap_or(""), s.get(i..)),
        None => (s, None),
    };
    let (digits, frac) = match main.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (main, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14)
    {
        return Err(bad());
    }
    let num = |a: usize, b: usize, default: u32| -> u32 {
        digits
            .get(a..b)
            .and_then(|x| x.parse().ok())
            .unwrap_or(default)
    };
    let micros = match frac {
        None => 0,
        Some(f) => {
            if digits.len() != 14
                || f.is_empty()
                || f.len() > 9
                || !f.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad());
            }
            let mut six: String = f.chars().take(6).collect();
            while six.len() < 6 {
                six.push('0');
            }
            six.parse().map_err(|_| bad())?
        }
    };
    let year = i32::try_from(num(0, 4, 0)).map_err(|_| bad())?;
    let date = NaiveDate::from_ymd_opt(year, num(4, 6, 1), num(6, 8, 1)).ok_or_else(bad)?;
    let time = NaiveTime::from_hms_micro_opt(num(8, 10, 0), num(10, 12, 0), num(12, 14, 0), micros)
        .ok_or_else(bad)?;
    let offset = match off {
        None => None,
        Some(o) => Some(parse_offset(o).ok_or_else(bad)?),
    };
    Ok((date.and_time(time), offset))
}

/// `+HHMM`, `-HHMM` (or `+HH`).
fn parse_offset(o: &str) -> Option<FixedOffset> {
    let (sign, digits) = match o.strip_prefix('+') {
        Some(d) => (1, d),
        None => (-1, o.strip_prefix('-')?),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let h: i32 = digits.get(0..2)?.parse().ok()?;
    let m: i32 = if digits.len() == 4 {
        digits.get(2..4)?.parse().ok()?
    } else {
        0
    };
    if h > 23 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// An HL7 TS/DTM as a UTC instant; without an offset, `default` is the source's zone.
fn parse_ts(raw: &str, default: FixedOffset) -> Result<DateTime<Utc>, String> {
    let (local, offset) = parse_local(raw)?;
    offset
        .unwrap_or(default)
        .from_local_datetime(&local)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("`{}` is out of range", raw.trim()))
}

/// The calendar date written in an HL7 DT/TS (a birth date is a local date: no shift).
fn parse_date(raw: &str) -> Result<NaiveDate, String> {
    parse_local(raw).map(|(local, _)| local.date())
}

// ---------------------------------------------------------------------------------------
// Row states and updates.
// ---------------------------------------------------------------------------------------

/// A field's effect on a stored value: HL7 says an empty field means "no change" and the
/// null `""` means "delete the value"; A08 and friends rely on that.
#[derive(Debug, Clone, PartialEq)]
enum Upd<T> {
    Keep,
    Clear,
    Set(T),
}

impl<T> Upd<T> {
    fn apply(self, target: &mut Option<T>) {
        match self {
            Upd::Keep => {}
            Upd::Clear => *target = None,
            Upd::Set(v) => *target = Some(v),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
struct PatientState {
    birth_date: Option<NaiveDate>,
    sex: Option<String>,
    death_time: Option<DateTime<Utc>>,
    zip: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct EncState {
    patient_id: String,
    class: &'static str,
    admit: DateTime<Utc>,
    discharge: Option<DateTime<Utc>>,
    admission_type: Option<String>,
    disposition: Option<String>,
    service: Option<String>,
    /// (role, clinician id), in PV1 order.
    care: Vec<(&'static str, String)>,
}

/// What one PV1 says about an encounter.
#[derive(Debug, Clone)]
struct EncUpdate {
    class: Option<&'static str>,
    admit: Upd<DateTime<Utc>>,
    discharge: Upd<DateTime<Utc>>,
    admission_type: Upd<String>,
    disposition: Upd<String>,
    service: Upd<String>,
    attending: Upd<Vec<String>>,
    admitting: Upd<Vec<String>>,
}

impl EncUpdate {
    fn apply(self, st: &mut EncState) {
        if let Upd::Set(t) = self.admit {
            st.admit = t;
        }
        self.discharge.apply(&mut st.discharge);
        self.admission_type.apply(&mut st.admission_type);
        self.disposition.apply(&mut st.disposition);
        self.service.apply(&mut st.service);
        for (role, upd) in [("attending", self.attending), ("admitting", self.admitting)] {
            let ids = match upd {
                Upd::Keep => continue,
                Upd::Clear => Vec::new(),
                Upd::Set(ids) => ids,
            };
            st.care.retain(|(r, _)| *r != role);
            st.care.extend(ids.into_iter().map(|id| (role, id)));
        }
    }
}

/// (patient id, encounter id).
type EncKey = (String, String);

#[derive(Debug, Default)]
struct EncTrack {
    /// The current state; `None` before the first message and after a cancelled admission.
    state: Option<EncState>,
    /// Index of the current row in the output.
    row: Option<usize>,
    /// Current care-team rows: (role, clinician, index in the output).
    care_rows: Vec<(&'static str, String, usize)>,
    /// The state before the last A02, which an A12 restores.
    before_transfer: Option<EncState>,
}

#[derive(Debug)]
struct ObsTrack {
    /// Index of the current row; `None` once deleted.
    row: Option<usize>,
    /// The message that wrote it (control id, first line, file), so that repeats of one key
    /// inside one message are told from a later message.
    from: (String, u64, String),
}

/// The current patient in an ORU: none seen yet, seen without an id (already reported),
/// or known.
enum OruPatient {
    NotYet,
    Bad,
    Id(String),
}

/// The order an OBX belongs to.
struct Order<'s, 'a> {
    key: String,
    /// The order number as the curated `observation_id` shows it: OBR-3.1, else OBR-2.1.
    number: Option<String>,
    seg: &'s Seg<'a>,
}

// ---------------------------------------------------------------------------------------
// Assembly across messages.
// ---------------------------------------------------------------------------------------

struct Assembler {
    out: Parsed,
    patients: HashMap<String, (PatientState, usize)>,
    /// Keyed by (patient id, encounter id): a visit number reused for another patient is
    /// another encounter.
    encounters: HashMap<(String, String), EncTrack>,
    observations: HashMap<String, ObsTrack>,
    /// Set when the current message retracted a row.
    changed: bool,
}

impl Assembler {
    fn rows(&self) -> usize {
        Table::ALL.iter().map(|t| self.out.tables.len(*t)).sum()
    }

    fn message(&mut self, m: &Msg<'_>) {
        let before = (self.rows(), self.out.bad.len(), self.out.skipped.len());
        self.changed = false;
        match (m.msg_type.as_str(), m.trigger.as_str()) {
            ("ADT", t) if ADT_EVENTS.contains(&t) => self.adt(m),
            ("ORU", "R01") => self.oru(m),
            ("", _) => self.bad(
                m,
                None,
                None,
                "MSH-9",
                "missing_field",
                "no message type (MSH-9)".into(),
            ),
            _ => self.skip(m, m.first_line, m.kind()),
        }
        let after = (self.rows(), self.out.bad.len(), self.out.skipped.len());
        if after == before && !self.changed {
            self.skip(
                m,
                m.first_line,
                format!("{} (no change: repeats what is already known)", m.kind()),
            );
        }
    }

    fn skip(&mut self, m: &Msg<'_>, record: u64, what: String) {
        self.out.skipped.push(Skipped {
            location: Location {
                file: m.file.to_string(),
                record,
            },
            what,
        });
    }

    /// Reports a bad record: at the segment's line with the segment as raw when `at` is
    /// given, else at the message's first line with the whole message.
    fn bad(
        &mut self,
        m: &Msg<'_>,
        at: Option<&Seg<'_>>,
        table: Option<Table>,
        field: &str,
        reason: &str,
        detail: String,
    ) {
        self.out.bad.push(BadRecord {
            location: Location {
                file: m.file.to_string(),
                record: at.map_or(m.first_line, |s| s.line),
            },
            table,
            field: Some(field.to_string()),
            reason: reason.to_string(),
            detail,
            raw: at.map_or_else(|| m.raw(), |s| clip_raw(s.raw)),
        });
    }

    // --- patients ------------------------------------------------------------------

    /// The patient id of a PID (PID-3: the MR identifier, else the first).
    fn patient_id(m: &Msg<'_>, pid: &Seg<'_>) -> Option<String> {
        let enc = &m.enc;
        let ids: Vec<(Option<String>, Option<String>)> = enc
            .reps(pid.field(3))
            .map(|rep| {
                let id = enc.text(enc.sub(enc.comp(rep, 1), 1));
                let kind = enc.text(enc.sub(enc.comp(rep, 5), 1));
                (id, kind)
            })
            .filter(|(id, _)| id.is_some())
            .collect();
        ids.iter()
            .find(|(_, k)| k.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("MR")))
            .or_else(|| ids.first())
            .and_then(|(id, _)| id.clone())
    }

    /// Reads a PID into a patients row version; returns the patient id, or `None` (after
    /// reporting it) when there is none.
    fn patient(&mut self, m: &Msg<'_>, pid: &Seg<'_>) -> Option<String> {
        let Some(id) = Self::patient_id(m, pid) else {
            self.bad(
                m,
                None,
                Some(Table::Patients),
                "PID-3",
                "missing_field",
                "PID-3 holds no patient identifier; the message cannot be attributed".into(),
            );
            return None;
        };
        let enc = &m.enc;
        let mut st = self
            .patients
            .get(&id)
            .map(|(s, _)| s.clone())
            .unwrap_or_default();
        let old = self.patients.get(&id).map(|(s, _)| s.clone());

        match m.raw_upd(pid, 7) {
            Upd::Keep => {}
            Upd::Clear => st.birth_date = None,
            Upd::Set(_) => match m.get(pid, 7, 1).map(|s| parse_date(&s)) {
                Some(Ok(d)) => st.birth_date = Some(d),
                Some(Err(e)) => {
                    self.bad(m, Some(pid), Some(Table::Patients), "PID-7", "bad_date", e)
                }
                None => {}
            },
        }
        match m.upd(pid, 8, 1) {
            Upd::Keep => {}
            Upd::Clear => st.sex = None,
            Upd::Set(s) => match map_sex(&s) {
                Some(x) => st.sex = Some(x.to_string()),
                None => self.bad(
                    m,
                    Some(pid),
                    Some(Table::Patients),
                    "PID-8",
                    "bad_value",
                    format!("administrative sex `{s}` is not one of F, M, O, A, X, U, N"),
                ),
            },
        }
        match m.raw_upd(pid, 29) {
            Upd::Keep => {}
            Upd::Clear => st.death_time = None,
            Upd::Set(_) => match m.get(pid, 29, 1).map(|s| parse_ts(&s, m.offset)) {
                Some(Ok(t)) => st.death_time = Some(t),
                Some(Err(e)) => {
                    self.bad(m, Some(pid), Some(Table::Patients), "PID-29", "bad_date", e)
                }
                None => {}
            },
        }
        match m.raw_upd(pid, 5) {
            Upd::Keep => {}
            Upd::Clear => {
                st.given_name = None;
                st.family_name = None;
            }
            Upd::Set(f) => {
                let reps: Vec<&str> = enc.reps(f).filter(|r| !r.trim().is_empty()).collect();
                let chosen = reps
                    .iter()
                    .find(|r| enc.comp(r, 7).trim().eq_ignore_ascii_case("L"))
                    .or_else(|| reps.first());
                if let Some(r) = chosen {
                    st.family_name = enc.text(enc.sub(enc.comp(r, 1), 1));
                    let given = [2, 3]
                        .iter()
                        .filter_map(|&c| enc.text(enc.sub(enc.comp(r, c), 1)))
                        .collect::<Vec<_>>();
                    st.given_name = (!given.is_empty()).then(|| given.join(" "));
                }
            }
        }
        match m.raw_upd(pid, 11) {
            Upd::Keep => {}
            Upd::Clear => st.zip = None,
            Upd::Set(f) => {
                let with_zip: Vec<(Option<String>, String)> = enc
                    .reps(f)
                    .filter_map(|r| {
                        let zip = enc.text(enc.sub(enc.comp(r, 5), 1))?;
                        Some((enc.text(enc.comp(r, 7)), zip))
                    })
                    .collect();
                let chosen = with_zip
                    .iter()
                    .find(|(kind, _)| kind.as_deref() == Some("H"))
                    .or_else(|| with_zip.first());
                if let Some((_, zip)) = chosen {
                    st.zip = Some(zip.clone());
                }
            }
        }

        if old.as_ref() == Some(&st) {
            return Some(id);
        }
        let known_at = m.known_at;
        if let Some((_, row)) = self.patients.get(&id) {
            if let Some(r) = self.out.tables.patients.get_mut(*row) {
                r.meta.retracted_at = Some(known_at);
            }
        }
        let row = self.out.tables.patients.len();
        self.out.tables.patients.push(Patient {
            patient_id: id.clone(),
            birth_date: st.birth_date,
            sex: st.sex.clone(),
            death_time: st.death_time,
            zip: st.zip.clone(),
            given_name: st.given_name.clone(),
            family_name: st.family_name.clone(),
            meta: m.meta(pid),
        });
        self.patients.insert(id.clone(), (st, row));
        Some(id)
    }

    // --- ADT -------------------------------------------------------------------------

    fn adt(&mut self, m: &Msg<'_>) {
        let Some(pid) = m.seg("PID") else {
            self.bad(
                m,
                None,
                Some(Table::Patients),
                "PID-3",
                "missing_field",
                format!("{} has no PID segment", m.kind()),
            );
            return;
        };
        let Some(patient) = self.patient(m, pid) else {
            return;
        };
        let Some(pv1) = m.seg("PV1") else {
            self.bad(
                m,
                None,
                Some(Table::Encounters),
                "PV1",
                "missing_field",
                format!("{} has no PV1 segment: no encounter to record", m.kind()),
            );
            return;
        };
        let Some(upd) = self.pv1_update(m, pv1) else {
            return;
        };
        let visit = visit_number(m, Some(pv1), Some(pid));
        let id = match (visit, &upd.admit) {
            (Some(v), _) => v,
            (None, Upd::Set(t)) => format!("{patient}/{}", t.format("%Y%m%dT%H%M%SZ")),
            (None, _) => {
                self.bad(
                    m,
                    Some(pv1),
                    Some(Table::Encounters),
                    "PV1-44",
                    "missing_field",
                    "no admit time (PV1-44) and no visit number (PV1-19) to identify the \
                     encounter"
                        .into(),
                );
                return;
            }
        };
        let key = (patient.clone(), id);
        let trigger = m.trigger.clone();
        match trigger.as_str() {
            "A11" => self.cancel_admit(m, pv1, &key),
            "A12" => self.cancel_transfer(m, pv1, &key),
            "A13" => self.cancel_discharge(m, pv1, &key, upd),
            t => self.upsert_encounter(m, pv1, t, &key, &patient, upd),
        }
    }

    /// Reads a PV1; reports (and returns `None` for) a bad admit or discharge time, since
    /// an encounter with a wrong time is worse than none.
    fn pv1_update(&mut self, m: &Msg<'_>, pv1: &Seg<'_>) -> Option<EncUpdate> {
        let mut times = [Upd::Keep, Upd::Keep];
        for (slot, field) in times.iter_mut().zip([44usize, 45]) {
            *slot = match m.raw_upd(pv1, field) {
                Upd::Keep => Upd::Keep,
                Upd::Clear => Upd::Clear,
                Upd::Set(_) => match m.get(pv1, field, 1) {
                    None => Upd::Keep,
                    Some(s) => match parse_ts(&s, m.offset) {
                        Ok(t) => Upd::Set(t),
                        Err(e) => {
                            self.bad(
                                m,
                                Some(pv1),
                                Some(Table::Encounters),
                                &format!("PV1-{field}"),
                                "bad_date",
                                e,
                            );
                            return None;
                        }
                    },
                },
            };
        }
        let [admit, discharge] = times;
        let admission_type = match m.upd(pv1, 4, 1) {
            Upd::Set(s) => {
                match ub04_admission_type(&s).or_else(|| admission_type::normalize(&s)) {
                    Some(t) => Upd::Set(t.to_string()),
                    None => {
                        self.bad(
                            m,
                            Some(pv1),
                            Some(Table::Encounters),
                            "PV1-4",
                            "bad_value",
                            format!(
                                "admission type `{s}` is neither in HL7 table 0007 nor a UB-04 \
                             priority code; left empty"
                            ),
                        );
                        Upd::Keep
                    }
                }
            }
            other => other,
        };
        let clinicians = |field: usize| -> Upd<Vec<String>> {
            match m.raw_upd(pv1, field) {
                Upd::Keep => Upd::Keep,
                Upd::Clear => Upd::Clear,
                Upd::Set(f) => {
                    let ids: Vec<String> = m
                        .enc
                        .reps(f)
                        .filter_map(|r| m.enc.text(m.enc.sub(m.enc.comp(r, 1), 1)))
                        .collect();
                    if ids.is_empty() {
                        Upd::Keep
                    } else {
                        Upd::Set(ids)
                    }
                }
            }
        };
        Some(EncUpdate {
            class: m
                .get(pv1, 2, 1)
                .and_then(|c| encounter_class::normalize(&c)),
            admit,
            discharge,
            admission_type,
            disposition: map_upd(m.upd(pv1, 36, 1), map_disposition),
            service: map_upd(m.upd(pv1, 10, 1), map_service),
            attending: clinicians(7),
            admitting: clinicians(17),
        })
    }

    fn upsert_encounter(
        &mut self,
        m: &Msg<'_>,
        pv1: &Seg<'_>,
        trigger: &str,
        key: &EncKey,
        patient: &str,
        upd: EncUpdate,
    ) {
        let id = &key.1;
        let cur = self.encounters.get(key).and_then(|t| t.state.clone());
        let mut st = match &cur {
            Some(s) => s.clone(),
            None => {
                let admit = match &upd.admit {
                    Upd::Set(t) => Some(*t),
                    // A pre-admission may only know the expected admit time (PV2-8).
                    _ if trigger == "A05" => m
                        .seg("PV2")
                        .and_then(|pv2| m.get(pv2, 8, 1))
                        .and_then(|s| parse_ts(&s, m.offset).ok()),
                    _ => None,
                };
                let Some(admit) = admit else {
                    self.bad(
                        m,
                        Some(pv1),
                        Some(Table::Encounters),
                        "PV1-44",
                        "missing_field",
                        format!(
                            "{} for new encounter {id} has no admit time (PV1-44)",
                            m.kind()
                        ),
                    );
                    return;
                };
                EncState {
                    patient_id: patient.to_string(),
                    class: implied_class(trigger),
                    admit,
                    discharge: None,
                    admission_type: None,
                    disposition: None,
                    service: None,
                    care: Vec::new(),
                }
            }
        };
        st.patient_id = patient.to_string();
        let class = upd.class;
        upd.apply(&mut st);
        st.class = match (class, trigger) {
            (Some(c), _) => c,
            // A06/A07 change the class even when PV1-2 says something we cannot map.
            (None, "A06") => encounter_class::INPATIENT,
            (None, "A07") => encounter_class::AMBULATORY,
            (None, _) => st.class,
        };
        if trigger == "A03" && st.discharge.is_none() {
            // PV1-45 is the discharge time; the event time (EVN-6, then EVN-2) stands in.
            st.discharge = m.seg("EVN").and_then(|evn| {
                [6, 2]
                    .iter()
                    .filter_map(|&f| m.get(evn, f, 1))
                    .find_map(|s| parse_ts(&s, m.offset).ok())
            });
            if st.discharge.is_none() {
                self.bad(
                    m,
                    Some(pv1),
                    Some(Table::Encounters),
                    "PV1-45",
                    "missing_field",
                    format!("ADT^A03 for encounter {id} has no discharge time (PV1-45, EVN-6)"),
                );
                return;
            }
        }
        if let Some(d) = st.discharge {
            if d < st.admit {
                self.bad(
                    m,
                    Some(pv1),
                    Some(Table::Encounters),
                    "PV1-45",
                    "bad_value",
                    format!("discharge {d} is before admission {}", st.admit),
                );
                return;
            }
        }
        self.set_encounter(m, pv1, key, Some(st));
        if let Some(track) = self.encounters.get_mut(key) {
            track.before_transfer = if trigger == "A02" { cur } else { None };
        }
    }

    fn dangling(&mut self, m: &Msg<'_>, pv1: &Seg<'_>, detail: String) {
        self.bad(
            m,
            Some(pv1),
            Some(Table::Encounters),
            "PV1-19",
            "dangling_reference",
            detail,
        );
    }

    fn cancel_admit(&mut self, m: &Msg<'_>, pv1: &Seg<'_>, key: &EncKey) {
        let id = &key.1;
        if self.encounters.get(key).is_some_and(|t| t.state.is_some()) {
            self.set_encounter(m, pv1, key, None);
        } else {
            self.dangling(
                m,
                pv1,
                format!("ADT^A11 cancels the admission of encounter {id}, which is not open"),
            );
        }
    }

    fn cancel_transfer(&mut self, m: &Msg<'_>, pv1: &Seg<'_>, key: &EncKey) {
        let id = &key.1;
        let track = self.encounters.get_mut(key);
        match track.and_then(|t| t.state.as_ref().and(t.before_transfer.take())) {
            Some(prev) => self.set_encounter(m, pv1, key, Some(prev)),
            None => self.dangling(
                m,
                pv1,
                format!("ADT^A12 cancels a transfer of encounter {id}, which has none to cancel"),
            ),
        }
    }

    fn cancel_discharge(&mut self, m: &Msg<'_>, pv1: &Seg<'_>, key: &EncKey, mut upd: EncUpdate) {
        let id = &key.1;
        let cur = self.encounters.get(key).and_then(|t| t.state.clone());
        match cur {
            Some(mut st) if st.discharge.is_some() => {
                upd.discharge = Upd::Clear;
                upd.disposition = Upd::Clear;
                let class = upd.class;
                upd.apply(&mut st);
                if let Some(c) = class {
                    st.class = c;
                }
                self.set_encounter(m, pv1, key, Some(st));
            }
            _ => self.dangling(
                m,
                pv1,
                format!("ADT^A13 cancels the discharge of encounter {id}, which is not discharged"),
            ),
        }
    }

    /// Makes `new` the current version of encounter `id` (`None`: no version), retracting
    /// the current rows as of the message's `known_at` and keeping the care team in step.
    fn set_encounter(&mut self, m: &Msg<'_>, pv1: &Seg<'_>, key: &EncKey, new: Option<EncState>) {
        let id = &key.1;
        let known_at = m.known_at;
        let track = self.encounters.entry(key.clone()).or_default();
        if track.state == new {
            return;
        }
        if let Some(r) = track.row.take() {
            if let Some(row) = self.out.tables.encounters.get_mut(r) {
                row.meta.retracted_at = Some(known_at);
                self.changed = true;
            }
        }
        if let Some(st) = &new {
            track.row = Some(self.out.tables.encounters.len());
            self.out.tables.encounters.push(Encounter {
                encounter_id: id.clone(),
                patient_id: st.patient_id.clone(),
                class: st.class.to_string(),
                admit_time: st.admit,
                discharge_time: st.discharge,
                admission_type: st.admission_type.clone(),
                discharge_disposition: st.disposition.clone(),
                service: st.service.clone(),
                code: None,
                meta: m.meta(pv1),
            });
        }
        // Care team: keep rows that still hold, retract the others, add the new ones.
        let wanted: Vec<CareTeamMember> = new
            .iter()
            .flat_map(|st| {
                st.care.iter().map(|(role, clinician)| CareTeamMember {
                    patient_id: st.patient_id.clone(),
                    clinician_id: clinician.clone(),
                    role: Some((*role).to_string()),
                    valid_from: st.admit,
                    valid_to: st.discharge,
                    meta: m.meta(pv1),
                })
            })
            .collect();
        let same = |a: &CareTeamMember, b: &CareTeamMember| {
            a.patient_id == b.patient_id
                && a.clinician_id == b.clinician_id
                && a.role == b.role
                && a.valid_from == b.valid_from
                && a.valid_to == b.valid_to
        };
        let mut kept = Vec::new();
        for (role, clinician, r) in std::mem::take(&mut track.care_rows) {
            let still = self
                .out
                .tables
                .care_team
                .get(r)
                .is_some_and(|row| wanted.iter().any(|w| same(w, row)));
            if still {
                kept.push((role, clinician, r));
            } else if let Some(row) = self.out.tables.care_team.get_mut(r) {
                row.meta.retracted_at = Some(known_at);
            }
        }
        for w in wanted {
            let exists = kept.iter().any(|(_, _, r)| {
                self.out
                    .tables
                    .care_team
                    .get(*r)
                    .is_some_and(|row| same(&w, row))
            });
            if !exists {
                let role = if w.role.as_deref() == Some("admitting") {
                    "admitting"
                } else {
                    "attending"
                };
                kept.push((
                    role,
                    w.clinician_id.clone(),
                    self.out.tables.care_team.len(),
                ));
                self.out.tables.care_team.push(w);
            }
        }
        track.care_rows = kept;
        track.state = new;
    }

    // --- ORU -------------------------------------------------------------------------

    fn oru(&mut self, m: &Msg<'_>) {
        let mut patient = OruPatient::NotYet;
        let mut visit: Option<String> = None;
        let mut order: Option<Order<'_, '_>> = None;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for seg in &m.segs {
            match seg.name {
                "PID" => {
                    patient = match self.patient(m, seg) {
                        Some(id) => OruPatient::Id(id),
                        None => OruPatient::Bad,
                    };
                    visit = visit_number(m, None, Some(seg));
                    order = None;
                }
                "PV1" => {
                    if let Some(v) = visit_number(m, Some(seg), None) {
                        visit = Some(v);
                    }
                }
                "OBR" => {
                    let ei = |f: usize| {
                        let id = m.get(seg, f, 1)?;
                        Some(match m.get(seg, f, 2) {
                            Some(ns) => format!("{id}^{ns}"),
                            None => id,
                        })
                    };
                    let key = ei(3)
                        .or_else(|| ei(2).map(|p| format!("placer:{p}")))
                        .unwrap_or_else(|| format!("{}/OBR-{}", m.control_id, seg.ordinal));
                    let number = m.get(seg, 3, 1).or_else(|| m.get(seg, 2, 1));
                    order = Some(Order { key, number, seg });
                }
                "OBX" => match &patient {
                    OruPatient::NotYet => {
                        self.bad(
                            m,
                            None,
                            Some(Table::Observations),
                            "PID-3",
                            "missing_field",
                            "ORU^R01 has results before any PID segment: no patient".into(),
                        );
                        patient = OruPatient::Bad;
                    }
                    OruPatient::Bad => {}
                    OruPatient::Id(p) => {
                        let p = p.clone();
                        self.obx(m, seg, &p, visit.as_deref(), order.as_ref(), &mut seen);
                    }
                },
                _ => {}
            }
        }
        if matches!(patient, OruPatient::NotYet) {
            self.bad(
                m,
                None,
                Some(Table::Observations),
                "PID-3",
                "missing_field",
                "ORU^R01 has no PID segment".into(),
            );
        }
    }

    fn obx(
        &mut self,
        m: &Msg<'_>,
        seg: &Seg<'_>,
        patient: &str,
        visit: Option<&str>,
        order: Option<&Order<'_, '_>>,
        seen: &mut HashMap<String, usize>,
    ) {
        let table = Some(Table::Observations);
        let Some(code) = obx_code(m, seg) else {
            self.bad(
                m,
                Some(seg),
                table,
                "OBX-3",
                "missing_field",
                "OBX-3 (observation identifier) has no code".into(),
            );
            return;
        };
        let status = m.get(seg, 11, 1).map(|s| s.to_ascii_uppercase());
        let mut effective = None;
        for (s, field, name) in [
            (Some(seg), 14, "OBX-14"),
            (order.map(|o| o.seg), 7, "OBR-7"),
        ] {
            let Some(s) = s else { continue };
            if let Some(raw) = m.get(s, field, 1) {
                match parse_ts(&raw, m.offset) {
                    Ok(t) => {
                        effective = Some(t);
                        break;
                    }
                    Err(e) => {
                        self.bad(m, Some(s), table, name, "bad_date", e);
                        return;
                    }
                }
            }
        }
        let effective_time = effective.unwrap_or(m.known_at);
        // `id` keys the result across messages (a correction supersedes the row with the
        // same key); `observation_id` is its readable form: order number, `-`, OBX-3.1, and
        // `-` OBX-4 when there is a sub-id (`E0000123-004-L02-718-7`).
        let order_key = order.map_or_else(|| m.control_id.clone(), |o| o.key.clone());
        let order_number = order
            .and_then(|o| o.number.clone())
            .unwrap_or_else(|| m.control_id.clone());
        let mut id = format!("{order_key}/{}|{}", code.system, code.code);
        let mut observation_id = format!("{order_number}-{}", code.code);
        if let Some(sub) = m.get(seg, 4, 1) {
            id.push('/');
            id.push_str(&sub);
            observation_id.push('-');
            observation_id.push_str(&sub);
        }
        let n = seen.entry(id.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            id = format!("{id}#{n}");
            observation_id = format!("{observation_id}#{n}");
        }
        let from = (m.control_id.clone(), m.first_line, m.file.to_string());
        let prior = self
            .observations
            .get(&id)
            .filter(|t| t.from != from)
            .and_then(|t| t.row);

        if matches!(status.as_deref(), Some("D" | "W")) {
            match prior {
                Some(r) => {
                    if let Some(row) = self.out.tables.observations.get_mut(r) {
                        row.meta.retracted_at = Some(m.known_at);
                    }
                    self.changed = true;
                    self.observations.insert(id, ObsTrack { row: None, from });
                }
                None => self.bad(
                    m,
                    Some(seg),
                    table,
                    "OBX-11",
                    "dangling_reference",
                    format!(
                        "OBX-11 = {} retracts result {id}, which this run does not hold",
                        status.as_deref().unwrap_or_default()
                    ),
                ),
            }
            return;
        }

        let (value_num, value_text) = obx_value(m, seg);
        let mut row = Observation {
            observation_id,
            patient_id: patient.to_string(),
            encounter_id: visit.map(str::to_string),
            category: Some(
                if code.system == code_system::LOINC
                    && VITAL_SIGNS_LOINC.contains(&code.code.as_str())
                {
                    "vital-signs"
                } else {
                    "laboratory"
                }
                .to_string(),
            ),
            code,
            value_num,
            value_text,
            unit: m.get(seg, 6, 1).or_else(|| m.get(seg, 6, 2)),
            effective_time,
            status: status.as_deref().map(map_result_status),
            meta: m.meta(seg),
        };
        if row.value_num.is_none() && row.value_text.is_none() {
            // "Final, values already sent as preliminary": finalize the earlier row.
            let earlier = prior.and_then(|r| self.out.tables.observations.get(r));
            match (status.as_deref(), earlier) {
                (Some("U"), Some(e)) => {
                    let mut e = e.clone();
                    e.status = Some("final".into());
                    e.meta = row.meta.clone();
                    row = e;
                }
                _ => {
                    self.skip(
                        m,
                        seg.line,
                        format!(
                            "OBX without a value (OBX-5 empty, OBX-11 = {})",
                            status.as_deref().unwrap_or("none")
                        ),
                    );
                    return;
                }
            }
        }
        if let Some(r) = prior {
            if let Some(old) = self.out.tables.observations.get_mut(r) {
                let mut cmp = old.clone();
                cmp.meta = row.meta.clone();
                if cmp == row {
                    return;
                }
                old.meta.retracted_at = Some(m.known_at);
                self.changed = true;
            }
        }
        self.observations.insert(
            id,
            ObsTrack {
                row: Some(self.out.tables.observations.len()),
                from,
            },
        );
        self.out.tables.observations.push(row);
    }
}

// ---------------------------------------------------------------------------------------
// Field mappings.
// ---------------------------------------------------------------------------------------

/// The visit number: PV1-19, else PID-18 when it is typed `VN` (visit number); written
/// `number^authority` when the assigning authority (CX.4) is given, since visit numbers are
/// only unique within their authority.
fn visit_number(m: &Msg<'_>, pv1: Option<&Seg<'_>>, pid: Option<&Seg<'_>>) -> Option<String> {
    let cx = |seg: &Seg<'_>, field: usize| -> Option<String> {
        let id = m.get(seg, field, 1)?;
        Some(match m.get(seg, field, 4) {
            Some(authority) => format!("{id}^{authority}"),
            None => id,
        })
    };
    pv1.and_then(|s| cx(s, 19)).or_else(|| {
        let pid = pid?;
        let kind = m.get(pid, 18, 5)?;
        kind.eq_ignore_ascii_case("VN")
            .then(|| cx(pid, 18))
            .flatten()
    })
}

/// The class an event implies when PV1-2 cannot be mapped (e.g. `P`, pre-admit): an A01
/// admits an inpatient, an A04 registers an outpatient.
fn implied_class(trigger: &str) -> &'static str {
    match trigger {
        "A01" | "A02" | "A03" | "A06" => encounter_class::INPATIENT,
        "A04" | "A07" => encounter_class::AMBULATORY,
        _ => encounter_class::OTHER,
    }
}

fn map_upd(u: Upd<String>, f: fn(&str) -> String) -> Upd<String> {
    match u {
        Upd::Set(s) => Upd::Set(f(&s)),
        Upd::Keep => Upd::Keep,
        Upd::Clear => Upd::Clear,
    }
}

/// UB-04 admission priority codes, which many HL7 v2.3 senders put in PV1-4.
fn ub04_admission_type(s: &str) -> Option<&'static str> {
    Some(match s.trim() {
        "1" => admission_type::EMERGENCY,
        "2" => admission_type::URGENT,
        "3" => admission_type::ELECTIVE,
        "4" | "5" => admission_type::OTHER,
        _ => return None,
    })
}

/// HL7 table 0001 to the curated vocabulary.
fn map_sex(s: &str) -> Option<&'static str> {
    Some(match s.trim().to_ascii_uppercase().as_str() {
        "F" => "female",
        "M" => "male",
        "O" | "A" | "X" => "other",
        "U" | "N" => "unknown",
        _ => return None,
    })
}

/// PV1-36 (UB-04 patient status, table 0112) to the curated vocabulary
/// ([`discharge_disposition`]); other values kept as written.
fn map_disposition(s: &str) -> String {
    discharge_disposition::normalize(s).map_or_else(|| s.trim().to_string(), str::to_string)
}

/// PV1-10 (hospital service, table 0069) to the curated words ([`service`]); other values
/// kept as written.
fn map_service(s: &str) -> String {
    service::from_hl7_0069(s).map_or_else(|| s.trim().to_string(), str::to_string)
}

/// HL7 table 0085 (observation result status) to the FHIR-style words curated rows use.
fn map_result_status(s: &str) -> String {
    match s {
        "F" | "U" => "final",
        "C" => "corrected",
        "P" | "R" | "S" => "preliminary",
        "I" | "O" => "registered",
        "X" | "N" => "cancelled",
        "D" | "W" => "entered-in-error",
        other => other,
    }
    .to_string()
}

/// OBX-3 as a coding: the primary triplet, or the alternate one when only it is LOINC.
fn obx_code(m: &Msg<'_>, seg: &Seg<'_>) -> Option<Coding> {
    let triplet = |c: usize| -> Option<Coding> {
        let code = m.get(seg, 3, c)?;
        Some(Coding {
            system: m
                .get(seg, 3, c + 2)
                .map(|s| code_system::normalize(&s))
                .unwrap_or_else(|| "local".to_string()),
            code,
            display: m.get(seg, 3, c + 1),
        })
    };
    let primary = triplet(1);
    let alternate = triplet(4);
    match (primary, alternate) {
        (Some(p), Some(a)) if p.system != code_system::LOINC && a.system == code_system::LOINC => {
            Some(a)
        }
        (Some(p), _) => Some(p),
        (None, a) => a,
    }
}

/// A decimal number as HL7 NM writes it (no exponent, no `inf`).
fn parse_num(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty()
        || !s.bytes().any(|b| b.is_ascii_digit())
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// OBX-5 by OBX-2: a number for NM and plain SN, text otherwise (a number that does not
/// parse is kept as text rather than lost).
fn obx_value(m: &Msg<'_>, seg: &Seg<'_>) -> (Option<f64>, Option<String>) {
    let enc = &m.enc;
    let vtype = m
        .get(seg, 2, 1)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    let reps: Vec<&str> = enc
        .reps(seg.field(5))
        .filter(|r| !r.trim().is_empty() && r.trim() != "\"\"")
        .collect();
    let Some(first) = reps.first() else {
        return (None, None);
    };
    let joined = |f: &dyn Fn(&str) -> Option<String>| -> Option<String> {
        let v: Vec<String> = reps.iter().filter_map(|r| f(r)).collect();
        (!v.is_empty()).then(|| v.join("\n"))
    };
    match vtype.as_str() {
        "NM" => {
            let text = enc.text(first);
            match text.as_deref().and_then(parse_num) {
                Some(v) if reps.len() == 1 => (Some(v), None),
                Some(v) => (Some(v), joined(&|r| enc.text(r))),
                None => (None, joined(&|r| enc.text(r))),
            }
        }
        "SN" => {
            let part = |n: usize| enc.text(enc.comp(first, n));
            let (cmp, n1, sep, n2) = (part(1), part(2), part(3), part(4));
            let plain = matches!(cmp.as_deref(), None | Some("=")) && sep.is_none() && n2.is_none();
            match n1.as_deref().and_then(parse_num) {
                Some(v) if plain => (Some(v), None),
                _ => {
                    let s: String = [cmp, n1, sep, n2].into_iter().flatten().collect();
                    (None, (!s.is_empty()).then_some(s))
                }
            }
        }
        "CE" | "CWE" | "CNE" | "CF" => (
            None,
            joined(&|r| {
                enc.text(enc.sub(enc.comp(r, 2), 1))
                    .or_else(|| enc.text(enc.sub(enc.comp(r, 1), 1)))
            }),
        ),
        _ => {
            let v = joined(&|r| enc.text(r));
            (None, v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx() -> Context {
        Context::new(utc("2030-01-01T00:00:00Z"))
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
    }

    fn run(files: &[(&str, &str)]) -> Parsed {
        let inputs: Vec<Input<'_>> = files
            .iter()
            .map(|(name, text)| Input {
                name,
                bytes: text.as_bytes(),
            })
            .collect();
        parse(&inputs, &ctx())
    }

    /// Joins segments with `sep`.
    fn msg(sep: &str, segs: &[&str]) -> String {
        segs.join(sep) + sep
    }

    fn visible_encounters(p: &Parsed, t: DateTime<Utc>) -> Vec<&Encounter> {
        p.tables
            .encounters
            .iter()
            .filter(|e| e.meta.known_at <= t && e.meta.retracted_at.is_none_or(|r| r > t))
            .collect()
    }

    fn visible_observations(p: &Parsed, t: DateTime<Utc>) -> Vec<&Observation> {
        p.tables
            .observations
            .iter()
            .filter(|e| e.meta.known_at <= t && e.meta.retracted_at.is_none_or(|r| r > t))
            .collect()
    }

    const PID: &str = "PID|1||P1^^^HOSP^PI~MRN7^^^HOSP^MR||Doe^Jane^Q^^^^L||19700102|F|||1 Main St^^Town^ST^12345^^H";

    fn adt(event: &str, time: &str, control: &str, pv1: &str) -> String {
        msg(
            "\r",
            &[
                &format!("MSH|^~\\&|ADT|HOSP|WARD|WARD|{time}||ADT^{event}|{control}|P|2.5"),
                &format!("EVN|{event}|{time}"),
                PID,
                pv1,
            ],
        )
    }

    /// A segment from (field number, value) pairs.
    fn seg(name: &str, fields: &[(usize, &str)]) -> String {
        let n = fields.iter().map(|(i, _)| *i).max().unwrap_or(0);
        let mut v = vec![String::new(); n + 1];
        v[0] = name.to_string();
        for (i, f) in fields {
            v[*i] = f.to_string();
        }
        v.join("|")
    }

    const ADMIT_FIELDS: [(usize, &str); 8] = [
        (1, "1"),
        (2, "I"),
        (3, "4E^1^A"),
        (7, "D1^Attend^Ann"),
        (10, "MED"),
        (17, "D2^Admit^Al"),
        (19, "V100^^^HOSP^VN"),
        (44, "20240101080000+0100"),
    ];

    fn pv1(changes: &[(usize, &str)]) -> String {
        let mut f: Vec<(usize, &str)> = ADMIT_FIELDS.to_vec();
        for (i, v) in changes {
            f.retain(|(j, _)| j != i);
            f.push((*i, v));
        }
        seg("PV1", &f)
    }

    fn pv1_admit() -> String {
        pv1(&[])
    }

    fn pv1_discharged() -> String {
        pv1(&[(36, "01"), (45, "20240105100000+0100")])
    }

    #[test]
    fn separators_cr_lf_crlf_give_the_same_rows() {
        let segs = [
            "MSH|^~\\&|LAB|HOSP|||20240101120000+0000||ORU^R01|C1|P|2.5",
            PID,
            "OBR|1|PL1|FI1|24317-0^CBC^LN|||20240101110000+0000",
            "OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL|||||F",
        ];
        let cr = run(&[("a.hl7", &msg("\r", &segs))]);
        let lf = run(&[("a.hl7", &msg("\n", &segs))]);
        let crlf = run(&[("a.hl7", &msg("\r\n", &segs))]);
        assert_eq!(cr.tables.observations.len(), 1);
        assert!(cr.bad.is_empty(), "{:?}", cr.bad);
        assert_eq!(cr, lf);
        assert_eq!(cr, crlf);
    }

    #[test]
    fn bom_mllp_blank_lines_and_several_messages_per_file() {
        let a = adt("A01", "20240101090000+0100", "M1", &pv1_admit());
        let b = adt("A03", "20240105110000+0100", "M2", &pv1_discharged());
        let text = format!("\u{feff}\x0b{a}\x1c\r\n\n\x0b{b}\x1c\r\n\r\n");
        let p = run(&[("mllp.hl7", &text)]);
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        assert_eq!(p.tables.encounters.len(), 2);
        assert_eq!(
            p.tables.patients.len(),
            1,
            "the second PID repeats the first"
        );
        // The second message starts on line 5: four segments, then the blank line.
        assert_eq!(p.skipped.len(), 0);
        let a03 = &p.tables.encounters[1];
        assert_eq!(a03.meta.source_id, "M2/PV1-1");
        assert_eq!(a03.meta.source_system, "ADT^HOSP");
    }

    #[test]
    fn record_numbers_are_the_line_of_the_message_or_segment() {
        let good = adt("A01", "20240101090000+0100", "M1", &pv1_admit());
        let bad_pv1 = pv1(&[(44, "20241301")]);
        let bad = adt("A01", "20240101090000+0100", "M2", &bad_pv1);
        let text = format!("{good}\n{bad}").replace('\r', "\n");
        let p = run(&[("x.hl7", &text)]);
        let b = p.bad.first().expect("a bad record");
        assert_eq!(b.field.as_deref(), Some("PV1-44"));
        assert_eq!(b.reason, "bad_date");
        // good: lines 1-4, blank line 5, bad message lines 6-9; PV1 is line 9.
        assert_eq!(b.location.record, 10 - 1);
        assert_eq!(b.location.file, "x.hl7");
        assert!(b.raw.starts_with("PV1|"));
    }

    #[test]
    fn custom_encoding_characters_and_escapes() {
        let text = msg(
            "\r",
            &[
                "MSH#$*!%#LAB#HOSP###20240101120000##ORU$R01#C9#P#2.5",
                "PID#1##ID!F!1$$$X$MR##Smith!S!Jones$Ann",
                "OBX#1#ST#8302-2$Height$LN##line one!.br!tab!T!rep!R!esc!E!hex!X41C3A9!#cm",
            ],
        );
        let p = run(&[("c.hl7", &text)]);
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        let pat = &p.tables.patients[0];
        assert_eq!(pat.patient_id, "ID#1");
        assert_eq!(pat.family_name.as_deref(), Some("Smith$Jones"));
        let o = &p.tables.observations[0];
        assert_eq!(o.value_text.as_deref(), Some("line one\ntab%rep*esc!hexAé"));
        assert_eq!(o.unit.as_deref(), Some("cm"));
        assert_eq!(o.category.as_deref(), Some("vital-signs"));
    }

    #[test]
    fn unescape_standard_sequences() {
        let (enc, _) = Enc::from_msh("MSH|^~\\&|").expect("standard separators");
        assert_eq!(enc.unescape(r"a\F\b\S\c\T\d\R\e\E\f"), "a|b^c&d~e\\f");
        assert_eq!(enc.unescape(r"x\.br\y\H\bold\N\"), "x\nybold");
        assert_eq!(enc.unescape(r"\X4869\"), "Hi");
        assert_eq!(enc.unescape(r"unknown \Q\ kept"), r"unknown \Q\ kept");
        assert_eq!(enc.unescape(r"dangling \F"), r"dangling \F");
        assert!(
            Enc::from_msh("MSH|^^\\&").is_err(),
            "separators must differ"
        );
        assert!(Enc::from_msh("MSH").is_err());
    }

    #[test]
    fn pid3_prefers_the_mr_identifier_and_maps_demographics() {
        let p = run(&[(
            "a.hl7",
            &adt("A01", "20240101090000+0100", "M1", &pv1_admit()),
        )]);
        let pat = &p.tables.patients[0];
        assert_eq!(pat.patient_id, "MRN7");
        assert_eq!(pat.birth_date, NaiveDate::from_ymd_opt(1970, 1, 2));
        assert_eq!(pat.sex.as_deref(), Some("female"));
        assert_eq!(pat.zip.as_deref(), Some("12345"));
        assert_eq!(pat.given_name.as_deref(), Some("Jane Q"));
        assert_eq!(pat.family_name.as_deref(), Some("Doe"));
        let no_mr = run(&[(
            "b.hl7",
            &msg(
                "\r",
                &[
                    "MSH|^~\\&|A|B|||20240101||ADT^A08|X|P|2.5",
                    "PID|1||FIRST^^^H^PI~SECOND^^^H^PN",
                ],
            ),
        )]);
        assert_eq!(no_mr.tables.patients[0].patient_id, "FIRST");
    }

    #[test]
    fn hl7_times_with_and_without_offsets() {
        let z = FixedOffset::east_opt(0).expect("utc");
        let plus2 = FixedOffset::east_opt(2 * 3600).expect("+2");
        assert_eq!(
            parse_ts("20150208113419+0110", z).ok(),
            Some(utc("2015-02-08T10:24:19Z"))
        );
        assert_eq!(parse_ts("2015", z).ok(), Some(utc("2015-01-01T00:00:00Z")));
        assert_eq!(
            parse_ts("201502081134", plus2).ok(),
            Some(utc("2015-02-08T09:34:00Z"))
        );
        assert_eq!(
            parse_ts("20150208113419.1234-0500", z).ok(),
            Some(utc("2015-02-08T16:34:19.1234Z"))
        );
        for bad in [
            "",
            "2015020",
            "20151301",
            "20150230",
            "2015x",
            "20150208+99",
            "201502081134.5",
        ] {
            assert!(parse_ts(bad, z).is_err(), "{bad} should not parse");
        }
        assert_eq!(
            parse_date("198808181126+0215").ok(),
            NaiveDate::from_ymd_opt(1988, 8, 18)
        );
    }

    #[test]
    fn a01_then_a03_gives_a_stay_with_its_length() {
        let p = run(&[
            (
                "a03.hl7",
                &adt("A03", "20240105110000+0100", "M2", &pv1_discharged()),
            ),
            (
                "a01.hl7",
                &adt("A01", "20240101090000+0100", "M1", &pv1_admit()),
            ),
        ]);
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        assert_eq!(p.tables.encounters.len(), 2);
        let (v1, v2) = (&p.tables.encounters[0], &p.tables.encounters[1]);
        assert_eq!(v1.encounter_id, "V100^HOSP");
        assert_eq!(v1.class, "inpatient");
        assert_eq!(v1.admit_time, utc("2024-01-01T07:00:00Z"));
        assert_eq!(v1.discharge_time, None);
        assert_eq!(v1.service.as_deref(), Some("medicine"));
        assert_eq!(v1.meta.retracted_at, Some(utc("2024-01-05T10:00:00Z")));
        assert_eq!(v2.discharge_time, Some(utc("2024-01-05T09:00:00Z")));
        assert_eq!(v2.discharge_disposition.as_deref(), Some("home"));
        assert_eq!(v2.meta.known_at, utc("2024-01-05T10:00:00Z"));
        assert_eq!(v2.meta.retracted_at, None);
        let los = v2.discharge_time.map(|d| d - v2.admit_time);
        assert_eq!(los, Some(chrono::Duration::hours(98)));
        // At a time between the messages only the open version is visible.
        let mid = visible_encounters(&p, utc("2024-01-03T00:00:00Z"));
        assert_eq!(mid.len(), 1);
        assert_eq!(mid[0].discharge_time, None);
        // Care team: attending and admitting, re-issued with the discharge as valid_to.
        let open: Vec<_> = p
            .tables
            .care_team
            .iter()
            .filter(|c| c.meta.retracted_at.is_none())
            .collect();
        assert_eq!(open.len(), 2);
        assert!(open
            .iter()
            .all(|c| c.valid_to == Some(utc("2024-01-05T09:00:00Z"))));
        assert_eq!(open[0].clinician_id, "D1");
        assert_eq!(open[0].role.as_deref(), Some("attending"));
        assert_eq!(open[1].clinician_id, "D2");
        assert_eq!(p.tables.care_team.len(), 4);
    }

    #[test]
    fn a11_cancels_the_admission_as_of_its_time() {
        let p = run(&[
            (
                "a01.hl7",
                &adt("A01", "20240101090000+0100", "M1", &pv1_admit()),
            ),
            (
                "a11.hl7",
                &adt("A11", "20240101100000+0100", "M2", &pv1_admit()),
            ),
        ]);
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        assert_eq!(p.tables.encounters.len(), 1);
        assert_eq!(visible_encounters(&p, utc("2024-01-01T08:30:00Z")).len(), 1);
        assert_eq!(visible_encounters(&p, utc("2024-01-01T09:00:00Z")).len(), 0);
        assert!(p
            .tables
            .care_team
            .iter()
            .all(|c| c.meta.retracted_at == Some(utc("2024-01-01T09:00:00Z"))));
        // A second cancel has nothing to cancel: reported, not ignored.
        let again = run(&[
            (
                "a01.hl7",
                &adt("A01", "20240101090000+0100", "M1", &pv1_admit()),
            ),
            (
                "a11.hl7",
                &adt("A11", "20240101100000+0100", "M2", &pv1_admit()),
            ),
            (
                "a11b.hl7",
                &adt("A11", "20240101110000+0100", "M3", &pv1_admit()),
            ),
        ]);
        assert_eq!(again.bad.len(), 1);
        assert_eq!(again.bad[0].reason, "dangling_reference");
        assert_eq!(again.bad[0].location.file, "a11b.hl7");
    }

    #[test]
    fn a13_cancels_the_discharge() {
        let p = run(&[
            ("1", &adt("A01", "20240101090000+0100", "M1", &pv1_admit())),
            (
                "2",
                &adt("A03", "20240105110000+0100", "M2", &pv1_discharged()),
            ),
            (
                "3",
                &adt("A13", "20240105120000+0100", "M3", &pv1_discharged()),
            ),
        ]);
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        assert_eq!(p.tables.encounters.len(), 3);
        let now = visible_encounters(&p, utc("2024-02-01T00:00:00Z"));
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].discharge_time, None);
        assert_eq!(now[0].discharge_disposition, None);
        assert_eq!(now[0].meta.source_id, "M3/PV1-1");
        let between = visible_encounters(&p, utc("2024-01-05T10:30:00Z"));
        assert_eq!(between.len(), 1);
        assert!(between[0].discharge_time.is_some());
    }

    #[test]
    fn a06_a07_change_the_class_and_a08_updates_and_a12_restores() {
        let outpatient = pv1(&[(2, "O")]);
        let p = run(&[
            ("1", &adt("A04", "20240101090000+0100", "M1", &outpatient)),
            (
                "2",
                &adt("A06", "20240101100000+0100", "M2", &pv1(&[(2, "P")])),
            ),
            (
                "3",
                &adt("A08", "20240101110000+0100", "M3", &pv1(&[(10, "SUR")])),
            ),
            (
                "4",
                &adt("A02", "20240101120000+0100", "M4", &pv1(&[(10, "CAR")])),
            ),
            ("5", &adt("A12", "20240101130000+0100", "M5", &pv1_admit())),
        ]);
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        let classes: Vec<(&str, Option<&str>)> = p
            .tables
            .encounters
            .iter()
            .map(|e| (e.class.as_str(), e.service.as_deref()))
            .collect();
        assert_eq!(
            classes,
            [
                ("ambulatory", Some("medicine")),
                ("inpatient", Some("medicine")),
                ("inpatient", Some("surgery")),
                ("inpatient", Some("cardiology")),
                ("inpatient", Some("surgery")),
            ]
        );
        assert_eq!(
            p.tables
                .encounters
                .iter()
                .filter(|e| e.meta.retracted_at.is_none())
                .count(),
            1
        );
    }

    #[test]
    fn repeated_messages_add_no_rows_but_are_accounted_for() {
        let a = adt("A01", "20240101090000+0100", "M1", &pv1_admit());
        let p = run(&[("1", &a), ("2", &a)]);
        assert_eq!(p.tables.encounters.len(), 1);
        assert_eq!(p.skipped.len(), 1);
        assert!(p.skipped[0].what.contains("no change"));
        assert_eq!(p.skipped[0].location.file, "2");
    }

    fn oru(time: &str, control: &str, obx: &[&str]) -> String {
        let mut segs = vec![
            format!("MSH|^~\\&|LAB|HOSP|||{time}||ORU^R01|{control}|P|2.5"),
            PID.to_string(),
            "PV1|1|I|||||||||||||||||V100".to_string(),
            "OBR|1|PL1|FI1^LAB|24317-0^CBC^LN|||20240101110000+0000".to_string(),
        ];
        segs.extend(obx.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = segs.iter().map(String::as_str).collect();
        msg("\r", &refs)
    }

    #[test]
    fn oru_results_with_loinc_values_units_and_times() {
        let p = run(&[(
            "lab.hl7",
            &oru(
                "20240101120000+0000",
                "L1",
                &[
                    "OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL^^UCUM|||||F|||20240101103000+0000",
                    "OBX|2|SN|2345-7^Glucose^LN||^182|mg/dL|||||F",
                    "OBX|3|SN|2951-2^Sodium^LN||<^130|mmol/L|||||P",
                    "OBX|4|CWE|600-7^Culture^LN||27268008^Salmonella^SCT||||||F",
                    "OBX|5|NM|XYZ^Local thing||7|||||||F",
                    "OBX|6|NM|11156-7^Leukocytes^LN||||||||I",
                    "OBX|7|NM|||1|||||||F",
                ],
            ),
        )]);
        let o = &p.tables.observations;
        assert_eq!(o.len(), 5);
        assert_eq!(o[0].code.system, "LOINC");
        assert_eq!(o[0].code.code, "718-7");
        assert_eq!(o[0].code.display.as_deref(), Some("Hemoglobin"));
        assert_eq!(o[0].value_num, Some(13.5));
        assert_eq!(o[0].unit.as_deref(), Some("g/dL"));
        assert_eq!(o[0].effective_time, utc("2024-01-01T10:30:00Z"));
        assert_eq!(o[0].encounter_id.as_deref(), Some("V100"));
        assert_eq!(o[0].patient_id, "MRN7");
        assert_eq!(o[0].status.as_deref(), Some("final"));
        assert_eq!(o[0].observation_id, "FI1-718-7");
        assert_eq!(o[0].meta.source_id, "L1/OBX-1");
        assert_eq!(o[1].value_num, Some(182.0));
        assert_eq!(
            o[1].effective_time,
            utc("2024-01-01T11:00:00Z"),
            "from OBR-7"
        );
        assert_eq!(o[2].value_num, None);
        assert_eq!(o[2].value_text.as_deref(), Some("<130"));
        assert_eq!(o[2].status.as_deref(), Some("preliminary"));
        assert_eq!(o[3].value_text.as_deref(), Some("Salmonella"));
        assert_eq!(o[4].code.system, "local");
        assert_eq!(p.skipped.len(), 1, "the OBX without a value");
        assert_eq!(p.skipped[0].location.record, 10);
        assert_eq!(p.bad.len(), 1);
        assert_eq!(p.bad[0].field.as_deref(), Some("OBX-3"));
        assert_eq!(p.bad[0].location.record, 11);
    }

    #[test]
    fn a_correction_retracts_the_earlier_result() {
        let first = oru(
            "20240101120000+0000",
            "L1",
            &["OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL|||||F"],
        );
        let corrected = oru(
            "20240102120000+0000",
            "L2",
            &["OBX|1|NM|718-7^Hemoglobin^LN||12.1|g/dL|||||C"],
        );
        let p = run(&[("2", &corrected), ("1", &first)]);
        assert_eq!(p.tables.observations.len(), 2);
        let before = visible_observations(&p, utc("2024-01-01T18:00:00Z"));
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].value_num, Some(13.5));
        let after = visible_observations(&p, utc("2024-01-03T00:00:00Z"));
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].value_num, Some(12.1));
        assert_eq!(after[0].status.as_deref(), Some("corrected"));
        assert_eq!(after[0].observation_id, before[0].observation_id);
        // Deleting it leaves nothing visible from then on.
        let delete = oru(
            "20240103120000+0000",
            "L3",
            &["OBX|1|NM|718-7^Hemoglobin^LN||12.1|g/dL|||||D"],
        );
        let p = run(&[("1", &first), ("2", &corrected), ("3", &delete)]);
        assert!(visible_observations(&p, utc("2024-01-04T00:00:00Z")).is_empty());
    }

    #[test]
    fn unsupported_types_are_skipped_and_bad_input_is_reported() {
        let p = run(&[(
            "mix.hl7",
            &[
                "garbage before any message",
                "MSH|^~\\&|A|B|||20240101||ADT^A09|X1|P|2.5",
                "PID|1||P1",
                "MSH|^~\\&|A|B|||20240101||ADT^A01|X2|P|2.5",
                "PID|1||",
                "MSH|^~\\&|A|B|||20240101||ADT^A01|X3|P|2.5",
                "PID|1||P3",
                &seg("PV1", &[(2, "I"), (19, "V9")]),
                "MSH|^~\\&|A|B|||not-a-time||ORU^R01|X4|P|2.5",
                "PID|1||P4||||19991399",
                "this line is no segment",
            ]
            .join("\n"),
        )]);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].what, "ADT^A09");
        assert_eq!(p.skipped[0].location.record, 2);
        let reasons: Vec<(u64, &str, Option<&str>)> = p
            .bad
            .iter()
            .map(|b| (b.location.record, b.reason.as_str(), b.field.as_deref()))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, "unparseable", None),
                (11, "unparseable", None),
                (4, "missing_field", Some("PID-3")),
                (8, "missing_field", Some("PV1-44")),
                (10, "bad_date", Some("PID-7")),
            ]
        );
        // A missing or unreadable MSH-7 falls back to the ingestion time.
        assert!(p
            .tables
            .patients
            .iter()
            .any(|r| r.patient_id == "P4" && r.meta.known_at == ctx().ingested_at));
    }

    #[test]
    fn the_same_inputs_give_the_same_output() {
        let files = [
            ("1", adt("A01", "20240101090000+0100", "M1", &pv1_admit())),
            (
                "2",
                oru(
                    "20240101090000+0100",
                    "L1",
                    &["OBX|1|NM|718-7^Hb^LN||13|g/dL|||||F"],
                ),
            ),
            (
                "3",
                adt("A03", "20240101090000+0100", "M2", &pv1_discharged()),
            ),
        ];
        let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
        assert_eq!(run(&refs), run(&refs));
    }

    /// Every message yields a row, a retraction, a bad or a skipped record.
    fn accounted(bytes: &[u8]) {
        let p = parse(&[Input { name: "f", bytes }], &ctx());
        let text = decode_bytes(bytes);
        let messages = logical_lines(&text)
            .iter()
            .filter(|(_, l)| is_segment(l, "MSH"))
            .count();
        let outputs = p.tables.len(Table::Patients)
            + p.tables.len(Table::Encounters)
            + p.tables.len(Table::Observations)
            + p.tables.len(Table::CareTeam)
            + p.bad.len()
            + p.skipped.len();
        assert!(
            outputs >= messages,
            "{messages} messages, {outputs} outputs"
        );
    }

    #[test]
    fn truncated_messages_never_panic() {
        let full = adt("A03", "20240105110000+0100", "M2", &pv1_discharged())
            + &oru(
                "20240101120000+0000",
                "L1",
                &["OBX|1|SN|718-7^Hb^LN||>^13|g/dL|||||F|||2024"],
            );
        for end in 0..=full.len() {
            accounted(&full.as_bytes()[..end]);
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            accounted(&bytes);
        }

        #[test]
        fn garbled_messages_never_panic(
            cut in 0usize..2000,
            flips in proptest::collection::vec((0usize..2000, any::<u8>()), 0..20),
        ) {
            let mut bytes = (adt("A01", "20240101090000+0100", "M1", &pv1_admit())
                + &adt("A13", "2024", "M2", &pv1_discharged())
                + &oru("20240101120000+0000", "L1", &["OBX|1|NM|718-7^Hb^LN||1|g|||||C|||2024"]))
                .into_bytes();
            for (at, b) in flips {
                let n = bytes.len();
                if let Some(x) = bytes.get_mut(at % n.max(1)) {
                    *x = b;
                }
            }
            bytes.truncate(cut.min(bytes.len()));
            accounted(&bytes);
        }

        #[test]
        fn hl7_like_text_never_panics(s in "(MSH\\|\\^~\\\\&\\||PID\\||PV1\\||OBX\\||OBR\\||[|^~\\\\&0-9A-Z+.\r\n-]){0,60}") {
            accounted(s.as_bytes());
        }
    }
}
