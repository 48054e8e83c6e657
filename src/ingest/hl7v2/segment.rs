//! The segment parser: a message's separators and escapes (MSH-1, MSH-2), its segments and
//! fields, and the header every row takes.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, Utc};

use super::framing::decode_bytes;
use super::state::Upd;
use super::time::parse_ts;
use crate::curated::RowMeta;
use crate::ingest::{clip_raw, BadRecord, Context, Location};

/// The separators and escape character of one message (MSH-1 and MSH-2). A missing one
/// is `None`: that level of structure does not exist in the message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Enc {
    pub(super) field: char,
    pub(super) comp: Option<char>,
    pub(super) rep: Option<char>,
    pub(super) esc: Option<char>,
    pub(super) sub: Option<char>,
    pub(super) trunc: Option<char>,
}

impl Enc {
    /// Reads MSH-1 and MSH-2 from an MSH line.
    pub(super) fn from_msh(msh: &str) -> Result<(Enc, &str), String> {
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

    pub(super) fn reps<'s>(&self, f: &'s str) -> std::str::Split<'s, char> {
        // Without a repetition character the field separator (which a field never
        // contains) yields the field whole.
        f.split(self.rep.unwrap_or(self.field))
    }

    pub(super) fn comp<'s>(&self, s: &'s str, n: usize) -> &'s str {
        s.split(self.comp.unwrap_or(self.field))
            .nth(n.saturating_sub(1))
            .unwrap_or("")
    }

    pub(super) fn sub<'s>(&self, s: &'s str, n: usize) -> &'s str {
        s.split(self.sub.unwrap_or(self.field))
            .nth(n.saturating_sub(1))
            .unwrap_or("")
    }

    /// A leaf value: unescaped, trimmed; `None` when empty or the HL7 null `""`.
    pub(super) fn text(&self, s: &str) -> Option<String> {
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
    pub(super) fn unescape<'s>(&self, s: &'s str) -> Cow<'s, str> {
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

    pub(super) fn escape(&self, seq: &str, out: &mut String) {
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

pub(super) fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
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
pub(super) struct Seg<'a> {
    pub(super) name: &'a str,
    pub(super) fields: Vec<&'a str>,
    /// Line of the segment in its file.
    pub(super) line: u64,
    /// 1-based position among the message's segments of the same name (`OBX-3`: the third
    /// OBX), used in `source_id`.
    pub(super) ordinal: usize,
    pub(super) raw: &'a str,
}

impl<'a> Seg<'a> {
    pub(super) fn field(&self, n: usize) -> &'a str {
        self.fields.get(n).copied().unwrap_or("")
    }
}

/// One message, header read, segments split.
#[derive(Debug)]
pub(super) struct Msg<'a> {
    pub(super) file: &'a str,
    pub(super) first_line: u64,
    pub(super) enc: Enc,
    pub(super) segs: Vec<Seg<'a>>,
    pub(super) known_at: DateTime<Utc>,
    /// The zone of times written without an offset (the context's default).
    pub(super) offset: FixedOffset,
    pub(super) source_system: String,
    pub(super) control_id: String,
    pub(super) msg_type: String,
    pub(super) trigger: String,
}

impl<'a> Msg<'a> {
    /// Reads the header and splits the segments. Lines that are not segments are reported
    /// as bad records and left out; the rest of the message is still used. A message
    /// without a usable MSH is one bad record, and `None`.
    pub(super) fn parse(
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
    pub(super) fn header(&self) -> super::Header {
        let msh = self.seg("MSH");
        let raw = |n: usize| msh.map_or("", |s| s.field(n)).to_string();
        super::Header {
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
    pub(super) fn seg(&self, name: &str) -> Option<&Seg<'a>> {
        self.segs.iter().find(|s| s.name == name)
    }

    /// First repetition, component `comp`, first subcomponent of field `field`: decoded.
    pub(super) fn get(&self, seg: &Seg<'_>, field: usize, comp: usize) -> Option<String> {
        let f = self.enc.reps(seg.field(field)).next().unwrap_or("");
        self.enc.text(self.enc.sub(self.enc.comp(f, comp), 1))
    }

    /// A field as a three-way update: absent (keep), HL7 null `""` (clear), or a value.
    pub(super) fn raw_upd<'s>(&self, seg: &Seg<'s>, field: usize) -> Upd<&'s str> {
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
    pub(super) fn upd(&self, seg: &Seg<'_>, field: usize, comp: usize) -> Upd<String> {
        match self.raw_upd(seg, field) {
            Upd::Keep => Upd::Keep,
            Upd::Clear => Upd::Clear,
            Upd::Set(_) => self.get(seg, field, comp).map_or(Upd::Keep, Upd::Set),
        }
    }

    pub(super) fn kind(&self) -> String {
        if self.trigger.is_empty() {
            self.msg_type.clone()
        } else {
            format!("{}^{}", self.msg_type, self.trigger)
        }
    }

    pub(super) fn raw(&self) -> String {
        let v: Vec<&str> = self.segs.iter().map(|s| s.raw).collect();
        clip_raw(&v.join("\n"))
    }

    pub(super) fn meta(&self, seg: &Seg<'_>) -> RowMeta {
        RowMeta {
            source_system: self.source_system.clone(),
            source_id: format!("{}/{}-{}", self.control_id, seg.name, seg.ordinal),
            known_at: self.known_at,
            retracted_at: None,
        }
    }
}
