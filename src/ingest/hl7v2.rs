//! HL7 v2.x ingest: ADT (A01–A08, A11–A13, with their DG1 diagnoses and PR1 procedures) and
//! ORU^R01 messages into curated rows.
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

mod adt;
mod carry;
mod clinical;
mod fields;
mod framing;
mod oru;
mod patient;
mod replay;
mod segment;
mod state;
#[cfg(test)]
mod tests;
mod time;

use std::borrow::Cow;
use std::collections::HashMap;

use rayon::prelude::*;

pub use self::carry::{bucket_key, Carry, Loaded, StateEntries, StateView};
use self::framing::{decode_bytes, read_messages};
use self::replay::Assembler;
use self::segment::Msg;
use crate::ingest::{BadRecord, Context, Input, Parsed};

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
    replay(inputs, ctx, |_| Ok(()))
        .map(|a| a.out)
        .unwrap_or_default()
}

/// As [`parse`], after the runs that left `state` (the entries of `hl7v2_state` loaded so
/// far, see [`carry`](self::carry)): a message that changes a record of an earlier run
/// retracts the stored row as it would in one run over both. The output holds this run's
/// rows and the stored rows it changed (in their new form); [`Carry`] names the stored forms
/// of those and the state entries that changed. When the replay recalled an entry of a
/// bucket `state` does not hold, [`Carry::missing`] names those buckets and the output is
/// not the run's: replay again with them loaded too.
///
/// # Errors
/// A state entry that cannot be read (a damaged store), described.
pub fn parse_after(
    inputs: &[Input<'_>],
    ctx: &Context,
    state: StateView,
) -> Result<(Parsed, Carry), String> {
    let mut asm = replay(inputs, ctx, |a| {
        a.carried.state = state;
        Ok(())
    })?;
    let carry = asm.finish()?;
    Ok((asm.out, carry))
}

/// Reads and replays the messages of `inputs` onto an assembler that `init` prepared.
fn replay(
    inputs: &[Input<'_>],
    ctx: &Context,
    init: impl FnOnce(&mut Assembler) -> Result<(), String>,
) -> Result<Assembler, String> {
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
        clinical: HashMap::new(),
        changed: false,
        carried: Default::default(),
    };
    init(&mut asm)?;
    for m in &msgs {
        asm.message(m);
    }
    Ok(asm)
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
