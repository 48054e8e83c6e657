//! Replay across messages: the assembler that takes the messages in order, dispatches each
//! by type, and reports skipped and bad records.

use std::collections::HashMap;

use super::clinical::ClinicalKey;
use super::segment::{Msg, Seg};
use super::state::{EncTrack, ObsTrack, PatientState};
use super::ADT_EVENTS;
use crate::curated::Table;
use crate::ingest::{clip_raw, BadRecord, Location, Parsed, Skipped};

pub(super) struct Assembler {
    pub(super) out: Parsed,
    pub(super) patients: HashMap<String, (PatientState, usize)>,
    /// Keyed by (patient id, encounter id): a visit number reused for another patient is
    /// another encounter.
    pub(super) encounters: HashMap<(String, String), EncTrack>,
    pub(super) observations: HashMap<String, ObsTrack>,
    /// DG1 and PR1 records: their current row (`None` once deleted).
    pub(super) clinical: HashMap<ClinicalKey, Option<usize>>,
    /// Set when the current message retracted a row.
    pub(super) changed: bool,
    /// What earlier runs left ([`super::carry`]).
    pub(super) carried: super::carry::Carried,
}

impl Assembler {
    pub(super) fn rows(&self) -> usize {
        Table::ALL.iter().map(|t| self.out.tables.len(*t)).sum()
    }

    pub(super) fn message(&mut self, m: &Msg<'_>) {
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

    pub(super) fn skip(&mut self, m: &Msg<'_>, record: u64, what: String) {
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
    pub(super) fn bad(
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
}
