//! Row states and updates: the current version of each patient, encounter and
//! observation, and a message's changes to it.

use chrono::{DateTime, NaiveDate, Utc};

use super::segment::Seg;

/// A field's effect on a stored value: HL7 says an empty field means "no change" and the
/// null `""` means "delete the value"; A08 and friends rely on that.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Upd<T> {
    Keep,
    Clear,
    Set(T),
}

impl<T> Upd<T> {
    pub(super) fn apply(self, target: &mut Option<T>) {
        match self {
            Upd::Keep => {}
            Upd::Clear => *target = None,
            Upd::Set(v) => *target = Some(v),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct PatientState {
    pub(super) birth_date: Option<NaiveDate>,
    pub(super) sex: Option<String>,
    pub(super) death_time: Option<DateTime<Utc>>,
    pub(super) zip: Option<String>,
    pub(super) given_name: Option<String>,
    pub(super) family_name: Option<String>,
    /// The PID-3 identifiers curated so far (system, value), so that a message repeating
    /// them adds no `patient_identifiers` row, in this run or a later one.
    #[serde(default)]
    pub(super) idents: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct EncState {
    pub(super) patient_id: String,
    pub(super) class: &'static str,
    pub(super) admit: DateTime<Utc>,
    pub(super) discharge: Option<DateTime<Utc>>,
    pub(super) admission_type: Option<String>,
    pub(super) disposition: Option<String>,
    pub(super) service: Option<String>,
    /// (role, clinician id), in PV1 order.
    pub(super) care: Vec<(&'static str, String)>,
}

/// What one PV1 says about an encounter.
#[derive(Debug, Clone)]
pub(super) struct EncUpdate {
    pub(super) class: Option<&'static str>,
    pub(super) admit: Upd<DateTime<Utc>>,
    pub(super) discharge: Upd<DateTime<Utc>>,
    pub(super) admission_type: Upd<String>,
    pub(super) disposition: Upd<String>,
    pub(super) service: Upd<String>,
    pub(super) attending: Upd<Vec<String>>,
    pub(super) admitting: Upd<Vec<String>>,
}

impl EncUpdate {
    pub(super) fn apply(self, st: &mut EncState) {
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
pub(super) type EncKey = (String, String);

#[derive(Debug, Default)]
pub(super) struct EncTrack {
    /// The current state; `None` before the first message and after a cancelled admission.
    pub(super) state: Option<EncState>,
    /// Index of the current row in the output.
    pub(super) row: Option<usize>,
    /// Current care-team rows: (role, clinician, index in the output).
    pub(super) care_rows: Vec<(&'static str, String, usize)>,
    /// The state before the last A02, which an A12 restores.
    pub(super) before_transfer: Option<EncState>,
}

#[derive(Debug)]
pub(super) struct ObsTrack {
    /// Index of the current row; `None` once deleted.
    pub(super) row: Option<usize>,
    /// The message that wrote it (control id, first line, file), so that repeats of one key
    /// inside one message are told from a later message.
    pub(super) from: (String, u64, String),
}

/// The current patient in an ORU: none seen yet, seen without an id (already reported),
/// or known.
pub(super) enum OruPatient {
    NotYet,
    Bad,
    Id(String),
}

/// The order an OBX belongs to.
pub(super) struct Order<'s, 'a> {
    pub(super) key: String,
    /// The order number as the curated `observation_id` shows it: OBR-3.1, else OBR-2.1.
    pub(super) number: Option<String>,
    pub(super) seg: &'s Seg<'a>,
}
