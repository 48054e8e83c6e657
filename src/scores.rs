//! Clinical scores, built in: the Charlson comorbidity index, LACE and HOSPITAL.
//!
//! Everything here is a pure, deterministic function of curated rows: no I/O, no clock. A
//! feature timeline calls [`stay_scores`] once per index stay and lookup time (or [`lace()`]
//! and [`hospital()`] directly with rows it has already filtered), and gets every component
//! separately, because each component is a feature of its own ([`ScoreComponent`]).
//!
//! - [`charlson`](mod@charlson): categories and index from ICD-10(-CM) and ICD-9-CM codes
//!   (Quan et al. 2005) and a curated list of SNOMED CT concepts.
//! - [`lace`](mod@lace): LACE (van Walraven et al., CMAJ 2010).
//! - [`hospital`](mod@hospital): HOSPITAL (Donzé et al., JAMA Intern Med 2013).
//!
//! `docs/scores.md` holds the point tables with their citations, the exact definitions (how
//! length of stay is counted, which rows count, the windows) and the deviations from the
//! papers.
//!
//! # Point in time
//!
//! [`lace()`] and [`hospital()`] use every row they are given: choosing the rows visible at the
//! lookup time is the caller's job. [`stay_scores`] does it for the caller with a [`View`],
//! by the rule of `DESIGN.md`: a row is seen at `t` when its event time `<= t`, its
//! `known_at <= t`, and it was not retracted at or before `t`; of several versions of one
//! row (same id), the latest known wins.

pub mod charlson;
pub mod hospital;
pub mod lace;

use std::collections::BTreeMap;

use chrono::{DateTime, Months, Utc};

use crate::curated::{
    admission_type, encounter_class, Condition, Encounter, Observation, Procedure, RowMeta,
};
use crate::pit::{self, Knowledge};

pub use charlson::{
    categories_of, category_of, charlson, CharlsonCategory, CharlsonCoding, CharlsonResult,
    SNOMED_CONCEPTS,
};
pub use hospital::{hospital, HospitalComponents};
pub use lace::{lace, LaceComponents};

/// The index stay a score is computed for: the encounter's fields the scores read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStay {
    /// The encounter id; that encounter is never counted as its own prior ED visit or
    /// admission.
    pub encounter_id: String,
    /// Admission time.
    pub admit: DateTime<Utc>,
    /// Discharge time. A stay in progress has no score: length of stay is not known yet.
    pub discharge: DateTime<Utc>,
    /// Admission type as written in the curated row (one of [`admission_type`], or a source
    /// word that [`admission_type::normalize`] understands).
    pub admission_type: Option<String>,
    /// Hospital service at discharge (`oncology`, `medicine`, ...).
    pub service: Option<String>,
}

impl IndexStay {
    /// The index stay of a curated encounter row, or `None` while it has no discharge time.
    pub fn from_encounter(encounter: &Encounter) -> Option<IndexStay> {
        Some(IndexStay {
            encounter_id: encounter.encounter_id.clone(),
            admit: encounter.admit_time,
            discharge: encounter.discharge_time?,
            admission_type: encounter.admission_type.clone(),
            service: encounter.service.clone(),
        })
    }

    /// Length of stay in whole days: elapsed time from admission to discharge, divided by 24
    /// hours and rounded down (a stay under 24 hours is 0 days). Timestamps are UTC and carry
    /// no hospital time zone, so calendar-date differences would depend on where the stay
    /// happened; elapsed time does not. A discharge before the admission (bad data) gives 0.
    pub fn los_days(&self) -> i64 {
        (self.discharge - self.admit).num_days().max(0)
    }

    /// True when the admission was acute: admission type emergency or urgent (what LACE calls
    /// an acute (emergent) admission and HOSPITAL an urgent or emergent index admission).
    pub fn is_acute(&self) -> bool {
        matches!(
            self.admission_type
                .as_deref()
                .and_then(admission_type::normalize),
            Some(admission_type::EMERGENCY | admission_type::URGENT)
        )
    }

    /// True when the patient was discharged from an oncology service. Sources spell services
    /// differently (`oncology`, FHIR displays such as `Oncology service`, `Hematology/Oncology`,
    /// HL7 table 0069 `ONC`/`HON`, MIMIC `OMED`), so any service containing "oncolog" or one
    /// of those codes counts.
    pub fn is_oncology(&self) -> bool {
        let Some(service) = self.service.as_deref() else {
            return false;
        };
        let s = service.trim().to_ascii_lowercase();
        s.contains("oncolog")
            || matches!(
                s.as_str(),
                "onc" | "hon" | "omed" | "hemonc" | "hem/onc" | "hem-onc" | "hem onc"
            )
    }

    /// Start of a look-back window of `months` calendar months before admission (chrono's
    /// month arithmetic: 31 August minus 6 months is 28 or 29 February).
    fn months_before_admit(&self, months: u32) -> DateTime<Utc> {
        self.admit
            .checked_sub_months(Months::new(months))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// True when `class` (as curated, or a source word) is the encounter class `wanted`.
fn class_is(class: &str, wanted: &str) -> bool {
    class == wanted || encounter_class::normalize(class) == Some(wanted)
}

/// Which version of the rows a score reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// As known at `t`: rows with event time `<= t`, `known_at <= t`, not retracted at `t`.
    /// Training rows and online lookups use this, so a diagnosis coded after `t` never leaks.
    AsKnownAt(DateTime<Utc>),
    /// The final version of every row (those never retracted), whenever it became known: the
    /// `--as-occurred` comparison of `DESIGN.md`.
    Final,
}

impl View {
    /// True when a row with this event time and provenance is seen: as known at `t`, or in
    /// the final record ([`pit::visibility`]).
    pub(crate) fn sees(self, event_time: DateTime<Utc>, meta: &RowMeta) -> bool {
        let (e, k, r) = (event_time, meta.known_at, meta.retracted_at);
        match self {
            View::AsKnownAt(t) => pit::visible_at(e, k, r, t, Knowledge::AsKnown),
            View::Final => pit::visibility(e, k, r, Knowledge::AsOccurred).is_some(),
        }
    }
}

/// One patient's curated rows, every version, in any order.
#[derive(Debug, Clone, Copy)]
pub struct PatientRows<'a> {
    /// `encounters` rows.
    pub encounters: &'a [Encounter],
    /// `conditions` rows.
    pub conditions: &'a [Condition],
    /// `observations` rows.
    pub observations: &'a [Observation],
    /// `procedures` rows.
    pub procedures: &'a [Procedure],
}

/// Why [`stay_scores`] has no score for a stay; the features module reports these as "no
/// data" rather than failing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StayError {
    /// No version of the encounter is seen in the view.
    #[error("encounter {encounter_id} is not known in this view")]
    UnknownEncounter {
        /// The encounter asked for.
        encounter_id: String,
    },
    /// The encounter is seen, but not its discharge (still in progress at the lookup time).
    #[error("encounter {encounter_id} has no discharge in this view")]
    NotDischarged {
        /// The encounter asked for.
        encounter_id: String,
    },
    /// The encounter's discharge time is before its admission time (bad data).
    #[error("encounter {encounter_id} is discharged before it is admitted")]
    DischargeBeforeAdmit {
        /// The encounter asked for.
        encounter_id: String,
    },
}

/// Every score of one index stay.
#[derive(Debug, Clone, PartialEq)]
pub struct StayScores {
    /// The index stay the scores are for.
    pub stay: IndexStay,
    /// Charlson categories and index from the conditions LACE counts.
    pub charlson: CharlsonResult,
    /// LACE and its components.
    pub lace: LaceComponents,
    /// HOSPITAL and its components.
    pub hospital: HospitalComponents,
}

impl StayScores {
    /// The value of one component, as a feature stores it.
    pub fn value(&self, component: ScoreComponent) -> i64 {
        use ScoreComponent::*;
        let (l, h) = (&self.lace, &self.hospital);
        i64::from(match component {
            CharlsonIndex => self.charlson.index(),
            LaceLengthOfStay => l.l,
            LaceAcuity => l.a,
            LaceComorbidity => l.c,
            LaceEdVisits => l.e,
            LaceTotal => l.total,
            HospitalHemoglobin => h.hemoglobin,
            HospitalOncology => h.oncology,
            HospitalSodium => h.sodium,
            HospitalProcedure => h.procedure,
            HospitalIndexType => h.index_type,
            HospitalAdmissions => h.admissions,
            HospitalLengthOfStay => h.length_of_stay,
            HospitalTotal => h.total,
        })
    }
}

/// One score component or total: each is a feature (`DESIGN.md`, "Features").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScoreComponent {
    /// Charlson comorbidity index (0-29).
    CharlsonIndex,
    /// LACE L: length of stay points (0-7).
    LaceLengthOfStay,
    /// LACE A: acute admission points (0 or 3).
    LaceAcuity,
    /// LACE C: Charlson points (0-5).
    LaceComorbidity,
    /// LACE E: ED visits in 6 months points (0-4).
    LaceEdVisits,
    /// LACE total (0-19).
    LaceTotal,
    /// HOSPITAL H: hemoglobin < 12 g/dL at discharge (0 or 1).
    HospitalHemoglobin,
    /// HOSPITAL O: discharge from oncology (0 or 2).
    HospitalOncology,
    /// HOSPITAL S: sodium < 135 mmol/L at discharge (0 or 1).
    HospitalSodium,
    /// HOSPITAL P: procedure during the stay (0 or 1).
    HospitalProcedure,
    /// HOSPITAL IT: urgent or emergent index admission (0 or 1).
    HospitalIndexType,
    /// HOSPITAL A: admissions in the previous 12 months (0, 2 or 5).
    HospitalAdmissions,
    /// HOSPITAL L: length of stay >= 5 days (0 or 2).
    HospitalLengthOfStay,
    /// HOSPITAL total (0-13).
    HospitalTotal,
}

impl ScoreComponent {
    /// Every component, in a fixed order.
    pub const ALL: [ScoreComponent; 14] = [
        ScoreComponent::CharlsonIndex,
        ScoreComponent::LaceLengthOfStay,
        ScoreComponent::LaceAcuity,
        ScoreComponent::LaceComorbidity,
        ScoreComponent::LaceEdVisits,
        ScoreComponent::LaceTotal,
        ScoreComponent::HospitalHemoglobin,
        ScoreComponent::HospitalOncology,
        ScoreComponent::HospitalSodium,
        ScoreComponent::HospitalProcedure,
        ScoreComponent::HospitalIndexType,
        ScoreComponent::HospitalAdmissions,
        ScoreComponent::HospitalLengthOfStay,
        ScoreComponent::HospitalTotal,
    ];

    /// The component's name in feature definitions.
    pub fn name(self) -> &'static str {
        use ScoreComponent::*;
        match self {
            CharlsonIndex => "charlson_index",
            LaceLengthOfStay => "lace_l",
            LaceAcuity => "lace_a",
            LaceComorbidity => "lace_c",
            LaceEdVisits => "lace_e",
            LaceTotal => "lace_total",
            HospitalHemoglobin => "hospital_hemoglobin",
            HospitalOncology => "hospital_oncology",
            HospitalSodium => "hospital_sodium",
            HospitalProcedure => "hospital_procedure",
            HospitalIndexType => "hospital_index_type",
            HospitalAdmissions => "hospital_admissions",
            HospitalLengthOfStay => "hospital_length_of_stay",
            HospitalTotal => "hospital_total",
        }
    }

    /// Parses a name written by [`ScoreComponent::name`].
    pub fn from_name(name: &str) -> Option<ScoreComponent> {
        ScoreComponent::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The largest value the component can take.
    pub fn max_value(self) -> i64 {
        use ScoreComponent::*;
        match self {
            CharlsonIndex => 29,
            LaceLengthOfStay => 7,
            LaceAcuity => 3,
            LaceComorbidity => 5,
            LaceEdVisits => 4,
            LaceTotal => 19,
            HospitalHemoglobin | HospitalSodium | HospitalProcedure | HospitalIndexType => 1,
            HospitalOncology | HospitalLengthOfStay => 2,
            HospitalAdmissions => 5,
            HospitalTotal => 13,
        }
    }
}

/// Every score of the stay `encounter_id`, from one patient's curated rows as seen in `view`.
///
/// Selects the rows `view` sees (latest known version of each id), builds the
/// [`IndexStay`] from the encounter, and calls [`lace()`] and [`hospital()`]. In
/// [`View::AsKnownAt`]`(t)` a stay discharged after `t` is [`StayError::NotDischarged`]: its
/// length of stay is not known at `t`, even if a source announced the discharge early.
///
/// # Errors
/// [`StayError`] when the encounter is not seen, not discharged, or discharged before it was
/// admitted. Nothing else fails.
pub fn stay_scores(
    rows: PatientRows<'_>,
    encounter_id: &str,
    view: View,
) -> Result<StayScores, StayError> {
    let encounters = latest(
        rows.encounters
            .iter()
            .filter(|e| view.sees(e.admit_time, &e.meta)),
        |e| (&e.encounter_id, &e.meta),
    );
    let index = encounters
        .iter()
        .find(|e| e.encounter_id == encounter_id)
        .ok_or_else(|| StayError::UnknownEncounter {
            encounter_id: encounter_id.to_string(),
        })?;
    let not_discharged = || StayError::NotDischarged {
        encounter_id: encounter_id.to_string(),
    };
    let stay = IndexStay::from_encounter(index).ok_or_else(not_discharged)?;
    if let View::AsKnownAt(t) = view {
        if stay.discharge > t {
            return Err(not_discharged());
        }
    }
    if stay.discharge < stay.admit {
        return Err(StayError::DischargeBeforeAdmit {
            encounter_id: encounter_id.to_string(),
        });
    }
    let conditions = latest(
        rows.conditions
            .iter()
            .filter(|c| view.sees(c.onset_time, &c.meta)),
        |c| (&c.condition_id, &c.meta),
    );
    let observations = latest(
        rows.observations
            .iter()
            .filter(|o| view.sees(o.effective_time, &o.meta)),
        |o| (&o.observation_id, &o.meta),
    );
    let procedures = latest(
        rows.procedures
            .iter()
            .filter(|p| view.sees(p.performed_time, &p.meta)),
        |p| (&p.procedure_id, &p.meta),
    );
    let lace = lace(&stay, &conditions, &encounters);
    let hospital = hospital(&stay, &observations, &procedures, &encounters);
    let charlson = lace::comorbidities(&stay, &conditions);
    Ok(StayScores {
        stay,
        charlson,
        lace,
        hospital,
    })
}

/// Of several versions of one row (same id), the one known last (ties: the larger source id),
/// in id order, so the result never depends on the input order.
fn latest<'a, T: 'a>(
    rows: impl Iterator<Item = &'a T>,
    key: impl Fn(&'a T) -> (&'a String, &'a RowMeta),
) -> Vec<&'a T> {
    let mut by_id: BTreeMap<&str, (&RowMeta, &'a T)> = BTreeMap::new();
    for row in rows {
        let (id, meta) = key(row);
        let newer = by_id
            .get(id.as_str())
            .is_none_or(|(m, _)| (meta.known_at, &meta.source_id) > (m.known_at, &m.source_id));
        if newer {
            by_id.insert(id, (meta, row));
        }
    }
    by_id.into_values().map(|(_, row)| row).collect()
}

/// Distinct ids of `encounters` of class `class` admitted in `[from, stay.admit)`, other than
/// the index encounter itself. Encounters are counted by id, so two versions of one visit
/// count once.
fn prior_encounter_ids<'a>(
    stay: &IndexStay,
    encounters: &[&'a Encounter],
    class: &str,
    from: DateTime<Utc>,
    keep: impl Fn(&Encounter) -> bool,
) -> usize {
    let mut ids: Vec<&'a str> = encounters
        .iter()
        .filter(|e| {
            e.encounter_id != stay.encounter_id
                && class_is(&e.class, class)
                && e.admit_time >= from
                && e.admit_time < stay.admit
                && keep(e)
        })
        .map(|e| e.encounter_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Hand-built rows for the score tests.

    use chrono::{DateTime, Duration, TimeZone, Utc};

    use crate::curated::{
        code_system, Coding, Condition, Encounter, Observation, Procedure, RowMeta,
    };

    /// 2020-03-10 08:00 UTC plus `hours`.
    pub(crate) fn at(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2020, 3, 10, 8, 0, 0).unwrap() + Duration::hours(hours)
    }

    pub(crate) fn meta(id: &str, known: DateTime<Utc>) -> RowMeta {
        RowMeta {
            source_system: "test".into(),
            source_id: id.into(),
            known_at: known,
            retracted_at: None,
        }
    }

    pub(crate) fn encounter(
        id: &str,
        class: &str,
        admit: DateTime<Utc>,
        discharge: Option<DateTime<Utc>>,
    ) -> Encounter {
        Encounter {
            encounter_id: id.into(),
            patient_id: "P1".into(),
            class: class.into(),
            admit_time: admit,
            discharge_time: discharge,
            admission_type: Some("elective".into()),
            discharge_disposition: None,
            service: Some("medicine".into()),
            code: None,
            meta: meta(id, discharge.unwrap_or(admit)),
        }
    }

    pub(crate) fn condition(id: &str, code: &str, onset: DateTime<Utc>) -> Condition {
        Condition {
            condition_id: id.into(),
            patient_id: "P1".into(),
            encounter_id: None,
            code: Coding {
                system: code_system::ICD10CM.into(),
                code: code.into(),
                display: None,
            },
            onset_time: onset,
            abatement_time: None,
            diagnosis_type: None,
            meta: meta(id, onset),
        }
    }

    pub(crate) fn lab(
        id: &str,
        loinc: &str,
        value: f64,
        unit: &str,
        t: DateTime<Utc>,
    ) -> Observation {
        Observation {
            observation_id: id.into(),
            patient_id: "P1".into(),
            encounter_id: None,
            category: Some("laboratory".into()),
            code: Coding {
                system: code_system::LOINC.into(),
                code: loinc.into(),
                display: None,
            },
            value_num: Some(value),
            value_text: None,
            unit: Some(unit.into()),
            value_original: None,
            unit_original: None,
            effective_time: t,
            status: Some("final".into()),
            meta: meta(id, t + Duration::hours(1)),
        }
    }

    pub(crate) fn procedure(id: &str, t: DateTime<Utc>) -> Procedure {
        Procedure {
            procedure_id: id.into(),
            patient_id: "P1".into(),
            encounter_id: None,
            code: Coding {
                system: code_system::SNOMED.into(),
                code: "80146002".into(),
                display: None,
            },
            performed_time: t,
            performed_end: None,
            meta: meta(id, t),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::testkit::*;
    use super::*;
    use crate::curated::encounter_class::{EMERGENCY, INPATIENT};

    fn stay(admit_type: &str, service: &str) -> IndexStay {
        IndexStay {
            encounter_id: "E1".into(),
            admit: at(0),
            discharge: at(48),
            admission_type: Some(admit_type.into()),
            service: Some(service.into()),
        }
    }

    #[test]
    fn acute_means_emergency_or_urgent() {
        for t in ["emergency", "urgent", "EW EMER.", "E", "U"] {
            assert!(stay(t, "medicine").is_acute(), "{t}");
        }
        for t in ["elective", "other", "newborn", "", "whatever"] {
            assert!(!stay(t, "medicine").is_acute(), "{t}");
        }
        let mut s = stay("emergency", "medicine");
        s.admission_type = None;
        assert!(!s.is_acute());
    }

    #[test]
    fn oncology_services_in_their_spellings() {
        for s in [
            "oncology",
            "Oncology service",
            "Hematology/Oncology",
            "ONC",
            "HON",
            "OMED",
        ] {
            assert!(stay("elective", s).is_oncology(), "{s}");
        }
        for s in ["medicine", "surgery", "cardiology", "MED", "neurology", ""] {
            assert!(!stay("elective", s).is_oncology(), "{s}");
        }
    }

    #[test]
    fn los_is_elapsed_whole_days_and_never_negative() {
        let mut s = stay("elective", "medicine");
        for (hours, days) in [(0, 0), (23, 0), (24, 1), (47, 1), (48, 2), (24 * 14, 14)] {
            s.discharge = s.admit + Duration::hours(hours);
            assert_eq!(s.los_days(), days, "{hours} h");
        }
        s.discharge = s.admit - Duration::hours(30);
        assert_eq!(s.los_days(), 0);
    }

    /// The generator's pattern: version 1 known at admission without a discharge, retracted
    /// at discharge; version 2 known at discharge.
    fn two_versions(id: &str, admit: DateTime<Utc>, discharge: DateTime<Utc>) -> Vec<Encounter> {
        let mut v1 = encounter(id, INPATIENT, admit, None);
        v1.meta.known_at = admit;
        v1.meta.retracted_at = Some(discharge);
        v1.meta.source_id = format!("{id}/1");
        let mut v2 = encounter(id, INPATIENT, admit, Some(discharge));
        v2.meta.known_at = discharge;
        v2.meta.source_id = format!("{id}/2");
        v2.admission_type = Some("emergency".into());
        vec![v1, v2]
    }

    #[test]
    fn a_stay_in_progress_has_no_score_and_an_unknown_one_is_named() {
        let encounters = two_versions("E1", at(0), at(72));
        let rows = PatientRows {
            encounters: &encounters,
            conditions: &[],
            observations: &[],
            procedures: &[],
        };
        let err = stay_scores(rows, "E1", View::AsKnownAt(at(10))).unwrap_err();
        assert!(matches!(err, StayError::NotDischarged { .. }), "{err}");
        let err = stay_scores(rows, "E1", View::AsKnownAt(at(-1))).unwrap_err();
        assert!(matches!(err, StayError::UnknownEncounter { .. }), "{err}");
        let err = stay_scores(rows, "E9", View::Final).unwrap_err();
        assert_eq!(err.to_string(), "encounter E9 is not known in this view");
        let s = stay_scores(rows, "E1", View::AsKnownAt(at(72))).unwrap();
        assert_eq!((s.lace.l, s.lace.a), (3, 3));
        assert_eq!(stay_scores(rows, "E1", View::Final).unwrap(), s);
    }

    #[test]
    fn a_discharge_announced_before_it_happens_is_not_used_early() {
        let mut encounters = two_versions("E1", at(0), at(72));
        encounters[1].meta.known_at = at(5);
        encounters[0].meta.retracted_at = Some(at(5));
        let rows = PatientRows {
            encounters: &encounters,
            conditions: &[],
            observations: &[],
            procedures: &[],
        };
        let err = stay_scores(rows, "E1", View::AsKnownAt(at(6))).unwrap_err();
        assert!(matches!(err, StayError::NotDischarged { .. }));
    }

    #[test]
    fn discharge_before_admission_is_an_error_not_a_panic() {
        let encounters = vec![encounter("E1", INPATIENT, at(10), Some(at(0)))];
        let rows = PatientRows {
            encounters: &encounters,
            conditions: &[],
            observations: &[],
            procedures: &[],
        };
        let err = stay_scores(rows, "E1", View::Final).unwrap_err();
        assert!(matches!(err, StayError::DischargeBeforeAdmit { .. }));
    }

    #[test]
    fn diagnoses_coded_after_the_lookup_time_do_not_count() {
        let encounters = two_versions("E1", at(0), at(72));
        let mut chf = condition("C1", "I50.9", at(0));
        chf.meta.known_at = at(72 + 48);
        let mut copd = condition("C2", "J44.9", at(-24 * 400));
        copd.meta.known_at = at(-24 * 400);
        let conditions = vec![chf, copd];
        let rows = PatientRows {
            encounters: &encounters,
            conditions: &conditions,
            observations: &[],
            procedures: &[],
        };
        let at_discharge = stay_scores(rows, "E1", View::AsKnownAt(at(72))).unwrap();
        assert_eq!(at_discharge.charlson.index(), 1);
        assert_eq!(at_discharge.lace.c, 1);
        let coded = stay_scores(rows, "E1", View::AsKnownAt(at(72 + 48))).unwrap();
        assert_eq!(coded.charlson.index(), 2);
        assert_eq!(coded.lace.c, 2);
        assert_eq!(coded.value(ScoreComponent::LaceComorbidity), 2);
    }

    #[test]
    fn a_corrected_lab_replaces_the_original() {
        let encounters = two_versions("E1", at(0), at(72));
        let mut original = lab("O1", "718-7", 11.0, "g/dL", at(70));
        original.meta.known_at = at(71);
        original.meta.retracted_at = Some(at(80));
        let mut corrected = original.clone();
        corrected.value_num = Some(13.0);
        corrected.meta.known_at = at(80);
        corrected.meta.retracted_at = None;
        corrected.meta.source_id = "O1/2".into();
        let observations = vec![corrected, original];
        let rows = PatientRows {
            encounters: &encounters,
            conditions: &[],
            observations: &observations,
            procedures: &[],
        };
        let before = stay_scores(rows, "E1", View::AsKnownAt(at(75))).unwrap();
        assert_eq!(before.hospital.hemoglobin_g_dl, Some(11.0));
        assert_eq!(before.hospital.hemoglobin, 1);
        let after = stay_scores(rows, "E1", View::AsKnownAt(at(80))).unwrap();
        assert_eq!(after.hospital.hemoglobin_g_dl, Some(13.0));
        assert_eq!(after.hospital.hemoglobin, 0);
        assert_eq!(stay_scores(rows, "E1", View::Final).unwrap(), after);
    }

    #[test]
    fn versions_of_one_prior_visit_count_once() {
        let mut encounters = two_versions("E1", at(0), at(72));
        let mut ed1 = encounter("E0", EMERGENCY, at(-100), Some(at(-96)));
        ed1.meta.source_id = "E0/1".into();
        let mut ed2 = ed1.clone();
        ed2.meta.source_id = "E0/2".into();
        encounters.extend([ed2, ed1]);
        let rows = PatientRows {
            encounters: &encounters,
            conditions: &[],
            observations: &[],
            procedures: &[],
        };
        let s = stay_scores(rows, "E1", View::Final).unwrap();
        assert_eq!((s.lace.ed_visits, s.lace.e), (1, 1));
        let refs: Vec<&Encounter> = encounters.iter().collect();
        let direct = lace(&s.stay, &[], &refs);
        assert_eq!(direct.ed_visits, 1);
    }

    #[test]
    fn component_names_round_trip_and_values_stay_under_their_maxima() {
        for c in ScoreComponent::ALL {
            assert_eq!(ScoreComponent::from_name(c.name()), Some(c));
        }
        assert_eq!(ScoreComponent::from_name("lace"), None);
        let sum = |cs: &[ScoreComponent]| cs.iter().map(|c| c.max_value()).sum::<i64>();
        use ScoreComponent::*;
        assert_eq!(
            sum(&[LaceLengthOfStay, LaceAcuity, LaceComorbidity, LaceEdVisits]),
            LaceTotal.max_value()
        );
        assert_eq!(
            sum(&[
                HospitalHemoglobin,
                HospitalOncology,
                HospitalSodium,
                HospitalProcedure,
                HospitalIndexType,
                HospitalAdmissions,
                HospitalLengthOfStay
            ]),
            HospitalTotal.max_value()
        );
    }
}
