//! LACE: van Walraven C, Dhalla IA, Bell C, et al. "Derivation and validation of an index to
//! predict early death or unplanned readmission after discharge from hospital to the
//! community." CMAJ 2010;182(6):551-557.
//!
//! L (length of stay), A (acute admission), C (Charlson comorbidity index), E (emergency
//! department visits in the 6 months before admission); total 0-19. `docs/scores.md` gives
//! the point table, the definitions below in full, and where they differ from the paper.

use crate::curated::{encounter_class, Condition, Encounter};

use super::charlson::{charlson, CharlsonResult};
use super::{prior_encounter_ids, IndexStay};

/// LACE of one index stay: each component's points, the total, and the quantities behind
/// them (each is a feature of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaceComponents {
    /// L: length of stay points (0-7).
    pub l: u8,
    /// A: acute (emergent) admission points (0 or 3).
    pub a: u8,
    /// C: Charlson comorbidity index points (0-5).
    pub c: u8,
    /// E: emergency department visits points (0-4).
    pub e: u8,
    /// L + A + C + E (0-19).
    pub total: u8,
    /// Length of stay in whole days ([`IndexStay::los_days`]).
    pub los_days: i64,
    /// The Charlson comorbidity index behind C.
    pub charlson_index: u8,
    /// The number of ED visits behind E.
    pub ed_visits: u32,
}

/// LACE of `stay`.
///
/// - `conditions`: the patient's diagnoses the caller can see at the lookup time; those with
///   onset after the discharge are ignored, and only ICD-10(-CM), ICD-9-CM (Quan et al. 2005
///   coding) and SNOMED CT codes count ([`charlson()`]). Resolved conditions still count: the
///   index measures history.
/// - `encounters`: the patient's encounters the caller can see (any class; the index stay
///   itself may be among them). ED visits are encounters of class emergency admitted in
///   `[admit - 6 calendar months, admit)`, counted once per encounter id, except the index
///   encounter and an ED visit still open at the admission (discharge at or after it): that
///   is the visit that led to this admission, which the LACE tool does not count.
pub fn lace(
    stay: &IndexStay,
    conditions: &[&Condition],
    encounters: &[&Encounter],
) -> LaceComponents {
    let los_days = stay.los_days();
    let charlson_index = comorbidities(stay, conditions).index();
    let ed_visits = ed_visits_6_months(stay, encounters);
    let l = los_points(los_days);
    let a = if stay.is_acute() { 3 } else { 0 };
    let c = comorbidity_points(charlson_index);
    let e = ed_points(ed_visits);
    LaceComponents {
        l,
        a,
        c,
        e,
        total: l + a + c + e,
        los_days,
        charlson_index,
        ed_visits,
    }
}

/// The Charlson categories of the conditions LACE counts for `stay`: onset at or before the
/// discharge.
pub fn comorbidities(stay: &IndexStay, conditions: &[&Condition]) -> CharlsonResult {
    charlson(
        conditions
            .iter()
            .filter(|c| c.onset_time <= stay.discharge)
            .map(|c| (c.code.system.as_str(), c.code.code.as_str())),
    )
}

/// ED visits in the 6 months before the admission, as defined on [`lace()`].
pub fn ed_visits_6_months(stay: &IndexStay, encounters: &[&Encounter]) -> u32 {
    let from = stay.months_before_admit(6);
    let n = prior_encounter_ids(stay, encounters, encounter_class::EMERGENCY, from, |e| {
        e.discharge_time.is_none_or(|d| d < stay.admit)
    });
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// L points: < 1 day 0, 1 → 1, 2 → 2, 3 → 3, 4-6 → 4, 7-13 → 5, >= 14 → 7.
pub fn los_points(los_days: i64) -> u8 {
    match los_days {
        i64::MIN..=0 => 0,
        1 => 1,
        2 => 2,
        3 => 3,
        4..=6 => 4,
        7..=13 => 5,
        _ => 7,
    }
}

/// C points from the Charlson index: 0 → 0, 1 → 1, 2 → 2, 3 → 3, >= 4 → 5.
pub fn comorbidity_points(charlson_index: u8) -> u8 {
    match charlson_index {
        0..=3 => charlson_index,
        _ => 5,
    }
}

/// E points from ED visits in 6 months: 0 → 0, 1 → 1, 2 → 2, 3 → 3, >= 4 → 4.
pub fn ed_points(visits: u32) -> u8 {
    match visits {
        0..=3 => visits as u8,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Months, TimeZone, Utc};

    use super::super::testkit::*;
    use super::*;
    use crate::curated::encounter_class::{AMBULATORY, EMERGENCY, INPATIENT};

    fn stay_of_hours(hours: i64) -> IndexStay {
        IndexStay {
            encounter_id: "IDX".into(),
            admit: at(0),
            discharge: at(hours),
            admission_type: Some("elective".into()),
            service: Some("medicine".into()),
        }
    }

    #[test]
    fn length_of_stay_bands() {
        for (days, points) in [
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 4),
            (6, 4),
            (7, 5),
            (13, 5),
            (14, 7),
            (40, 7),
        ] {
            let s = stay_of_hours(24 * days);
            let r = lace(&s, &[], &[]);
            assert_eq!((r.los_days, r.l), (days, points), "{days} days");
            // One minute short of the day boundary still belongs to the band below.
            if days > 0 {
                let mut short = s.clone();
                short.discharge -= Duration::minutes(1);
                assert_eq!(lace(&short, &[], &[]).los_days, days - 1);
            }
        }
        assert_eq!(lace(&stay_of_hours(23), &[], &[]).l, 0);
        assert_eq!(los_points(-3), 0);
    }

    #[test]
    fn acuity_points() {
        let mut s = stay_of_hours(24);
        for (kind, points) in [
            (Some("emergency"), 3),
            (Some("urgent"), 3),
            (Some("elective"), 0),
            (Some("other"), 0),
            (None, 0),
        ] {
            s.admission_type = kind.map(str::to_string);
            assert_eq!(lace(&s, &[], &[]).a, points, "{kind:?}");
        }
    }

    #[test]
    fn comorbidity_bands() {
        for (index, points) in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (5, 5), (29, 5)] {
            assert_eq!(comorbidity_points(index), points, "{index}");
        }
        // Through real codes: MI 1, + CHF 2, + COPD 3, + renal 5.
        let codes = ["I21.4", "I50.9", "J44.9", "N18.4"];
        let s = stay_of_hours(24);
        for (n, (index, points)) in [(0, 0), (1, 1), (2, 2), (3, 3), (5, 5)]
            .into_iter()
            .enumerate()
        {
            let conds: Vec<_> = codes[..n]
                .iter()
                .enumerate()
                .map(|(i, c)| condition(&format!("C{i}"), c, at(-1000)))
                .collect();
            let refs: Vec<_> = conds.iter().collect();
            let r = lace(&s, &refs, &[]);
            assert_eq!((r.charlson_index, r.c), (index, points), "{n} codes");
        }
    }

    #[test]
    fn conditions_with_onset_after_discharge_do_not_count() {
        let s = stay_of_hours(48);
        let at_discharge = condition("C1", "I50.9", at(48));
        let after = condition("C2", "C78.00", at(49));
        let r = lace(&s, &[&at_discharge, &after], &[]);
        assert_eq!(r.charlson_index, 1);
    }

    fn ed(id: &str, admit: chrono::DateTime<Utc>) -> crate::curated::Encounter {
        encounter(id, EMERGENCY, admit, Some(admit + Duration::hours(4)))
    }

    #[test]
    fn ed_visit_bands_zero_to_five() {
        let s = stay_of_hours(48);
        let visits: Vec<_> = (1..=5)
            .map(|i| ed(&format!("ED{i}"), at(-24 * 20 * i)))
            .collect();
        for (n, points) in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 4)] {
            let refs: Vec<_> = visits[..n].iter().collect();
            let r = lace(&s, &[], &refs);
            assert_eq!((r.ed_visits, r.e), (n as u32, points), "{n} visits");
        }
    }

    #[test]
    fn ed_window_is_six_calendar_months_inclusive_and_excludes_the_admission() {
        let s = stay_of_hours(48);
        let six_months = s.admit.checked_sub_months(Months::new(6)).unwrap();
        assert_eq!(
            six_months,
            Utc.with_ymd_and_hms(2019, 9, 10, 8, 0, 0).unwrap()
        );
        let exactly = ed("A", six_months);
        let just_before = ed("B", six_months - Duration::seconds(1));
        let r = lace(&s, &[], &[&exactly, &just_before]);
        assert_eq!(r.ed_visits, 1);

        // An ED visit starting at the admission is not before it.
        let same_time = ed("C", s.admit);
        assert_eq!(lace(&s, &[], &[&same_time]).ed_visits, 0);
        // The ED visit that led to this admission: still open when the patient was admitted.
        let mut led_in = ed("D", s.admit - Duration::hours(5));
        led_in.discharge_time = Some(s.admit);
        assert_eq!(lace(&s, &[], &[&led_in]).ed_visits, 0);
        // The index encounter itself, even when a version of it has class emergency.
        let same_id = ed("IDX", s.admit - Duration::hours(3));
        assert_eq!(lace(&s, &[], &[&same_id]).ed_visits, 0);
        // An earlier visit that ended before the admission counts; unknown end counts.
        let mut open_earlier = ed("F", s.admit - Duration::days(30));
        open_earlier.discharge_time = None;
        let ended = ed("G", s.admit - Duration::hours(30));
        assert_eq!(lace(&s, &[], &[&open_earlier, &ended]).ed_visits, 2);
    }

    #[test]
    fn six_months_from_the_end_of_a_month_clamps_to_the_shorter_month() {
        let mut s = stay_of_hours(48);
        s.admit = Utc.with_ymd_and_hms(2020, 8, 31, 12, 0, 0).unwrap();
        s.discharge = s.admit + Duration::days(2);
        let feb29 = ed("A", Utc.with_ymd_and_hms(2020, 2, 29, 12, 0, 0).unwrap());
        let feb28 = ed("B", Utc.with_ymd_and_hms(2020, 2, 28, 12, 0, 0).unwrap());
        assert_eq!(lace(&s, &[], &[&feb29, &feb28]).ed_visits, 1);
    }

    #[test]
    fn only_emergency_encounters_are_ed_visits() {
        let s = stay_of_hours(48);
        let clinic = encounter("A", AMBULATORY, at(-100), Some(at(-99)));
        let stay = encounter("B", INPATIENT, at(-500), Some(at(-400)));
        let raw_ed = encounter("C", "EMER", at(-300), Some(at(-296)));
        assert_eq!(lace(&s, &[], &[&clinic, &stay, &raw_ed]).ed_visits, 1);
    }

    #[test]
    fn total_is_zero_for_a_short_elective_stay_of_a_healthy_patient() {
        let r = lace(&stay_of_hours(5), &[], &[]);
        assert_eq!(
            r,
            LaceComponents {
                l: 0,
                a: 0,
                c: 0,
                e: 0,
                total: 0,
                los_days: 0,
                charlson_index: 0,
                ed_visits: 0
            }
        );
    }

    #[test]
    fn total_reaches_the_maximum_19() {
        let mut s = stay_of_hours(24 * 20);
        s.admission_type = Some("emergency".into());
        let conds = [
            condition("C1", "C34.90", at(-2000)),
            condition("C2", "C79.51", at(-100)),
        ];
        let visits: Vec<_> = (1..=6)
            .map(|i| ed(&format!("ED{i}"), at(-24 * 10 * i)))
            .collect();
        let crefs: Vec<_> = conds.iter().collect();
        let erefs: Vec<_> = visits.iter().collect();
        let r = lace(&s, &crefs, &erefs);
        assert_eq!((r.l, r.a, r.c, r.e, r.total), (7, 3, 5, 4, 19));
    }
}
