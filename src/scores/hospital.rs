//! HOSPITAL: Donzé J, Aujesky D, Williams D, Schnipper JL. "Potentially avoidable 30-day
//! hospital readmissions in medical patients: derivation and validation of a prediction
//! model." JAMA Intern Med 2013;173(8):632-638.
//!
//! Hemoglobin at discharge, discharge from Oncology, Sodium at discharge, Procedure during
//! the stay, Index admission Type, Admissions in the previous 12 months, Length of stay;
//! total 0-13. `docs/scores.md` gives the point table, the definitions below in full, and
//! where they differ from the paper.

use chrono::{DateTime, Utc};

use crate::curated::{code_system, encounter_class, Encounter, Observation, Procedure};

use super::{prior_encounter_ids, IndexStay};

/// LOINC code of hemoglobin [Mass/volume] in Blood.
pub const LOINC_HEMOGLOBIN: &str = "718-7";
/// LOINC codes of sodium: [Moles/volume] in Serum or Plasma, and in Blood.
pub const LOINC_SODIUM: [&str; 2] = ["2951-2", "2947-0"];

/// HOSPITAL of one index stay: each component's points, the total, and the quantities
/// behind them (each is a feature of its own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HospitalComponents {
    /// H: hemoglobin at discharge < 12 g/dL (0 or 1).
    pub hemoglobin: u8,
    /// O: discharge from an oncology service (0 or 2).
    pub oncology: u8,
    /// S: sodium at discharge < 135 mmol/L (0 or 1).
    pub sodium: u8,
    /// P: any procedure during the stay (0 or 1).
    pub procedure: u8,
    /// IT: index admission urgent or emergent (0 or 1).
    pub index_type: u8,
    /// A: admissions in the previous 12 months, 0-1 → 0, 2-5 → 2, > 5 → 5.
    pub admissions: u8,
    /// L: length of stay >= 5 days (0 or 2).
    pub length_of_stay: u8,
    /// The sum of the seven components (0-13).
    pub total: u8,
    /// The hemoglobin at discharge behind H, in g/dL; `None` when the stay has none (H is
    /// then 0).
    pub hemoglobin_g_dl: Option<f64>,
    /// The sodium at discharge behind S, in mmol/L; `None` when the stay has none (S is then
    /// 0).
    pub sodium_mmol_l: Option<f64>,
    /// The number of admissions behind A.
    pub prior_admissions: u32,
    /// Length of stay in whole days ([`IndexStay::los_days`]).
    pub los_days: i64,
}

/// HOSPITAL of `stay`.
///
/// - `observations`: the patient's results the caller can see. "At discharge" is the last
///   usable result (numeric, status not cancelled or entered-in-error, unit convertible) of
///   LOINC 718-7 (hemoglobin) or 2951-2/2947-0 (sodium) with effective time in
///   `[admit, discharge]`; ties on the time go to the later `known_at`, then the larger
///   source id.
/// - `procedures`: any procedure row, of any code system, performed in `[admit, discharge]`.
/// - `encounters`: the patient's encounters the caller can see. Admissions are inpatient
///   encounters, other than the index stay, admitted in `[admit - 12 calendar months,
///   admit)`, counted once per encounter id.
pub fn hospital(
    stay: &IndexStay,
    observations: &[&Observation],
    procedures: &[&Procedure],
    encounters: &[&Encounter],
) -> HospitalComponents {
    let hemoglobin_g_dl = last_in_stay(stay, observations, |o| {
        (o.code.code == LOINC_HEMOGLOBIN)
            .then(|| hemoglobin_in_g_dl(o.value_num?, o.unit.as_deref()))
            .flatten()
    });
    let sodium_mmol_l = last_in_stay(stay, observations, |o| {
        LOINC_SODIUM
            .contains(&o.code.code.as_str())
            .then(|| sodium_in_mmol_l(o.value_num?, o.unit.as_deref()))
            .flatten()
    });
    let had_procedure = procedures
        .iter()
        .any(|p| p.performed_time >= stay.admit && p.performed_time <= stay.discharge);
    let prior_admissions = admissions_12_months(stay, encounters);
    let los_days = stay.los_days();

    let hemoglobin = u8::from(hemoglobin_g_dl.is_some_and(|v| v < 12.0));
    let oncology = if stay.is_oncology() { 2 } else { 0 };
    let sodium = u8::from(sodium_mmol_l.is_some_and(|v| v < 135.0));
    let procedure = u8::from(had_procedure);
    let index_type = u8::from(stay.is_acute());
    let admissions = admission_points(prior_admissions);
    let length_of_stay = if los_days >= 5 { 2 } else { 0 };
    HospitalComponents {
        hemoglobin,
        oncology,
        sodium,
        procedure,
        index_type,
        admissions,
        length_of_stay,
        total: hemoglobin
            + oncology
            + sodium
            + procedure
            + index_type
            + admissions
            + length_of_stay,
        hemoglobin_g_dl,
        sodium_mmol_l,
        prior_admissions,
        los_days,
    }
}

/// Inpatient admissions in the 12 months before the index admission, as defined on
/// [`hospital()`].
pub fn admissions_12_months(stay: &IndexStay, encounters: &[&Encounter]) -> u32 {
    let from = stay.months_before_admit(12);
    let n = prior_encounter_ids(stay, encounters, encounter_class::INPATIENT, from, |_| true);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A points: 0-1 admissions → 0, 2-5 → 2, more than 5 → 5.
pub fn admission_points(admissions: u32) -> u8 {
    match admissions {
        0..=1 => 0,
        2..=5 => 2,
        _ => 5,
    }
}

/// How results are ordered to find the last one: effective time, then `known_at`, then source
/// id (`DESIGN.md`: ties are broken by `known_at`, then by the source row id).
type ResultOrder<'a> = (DateTime<Utc>, DateTime<Utc>, &'a str);

/// The value `value_of` reads from the last usable LOINC result within the stay.
fn last_in_stay(
    stay: &IndexStay,
    observations: &[&Observation],
    value_of: impl Fn(&Observation) -> Option<f64>,
) -> Option<f64> {
    let mut best: Option<(ResultOrder<'_>, f64)> = None;
    for o in observations {
        if o.effective_time < stay.admit
            || o.effective_time > stay.discharge
            || !is_loinc(&o.code.system)
            || is_void(o.status.as_deref())
        {
            continue;
        }
        let Some(value) = value_of(o).filter(|v| v.is_finite()) else {
            continue;
        };
        let key = (o.effective_time, o.meta.known_at, o.meta.source_id.as_str());
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, value));
        }
    }
    best.map(|(_, v)| v)
}

fn is_loinc(system: &str) -> bool {
    system == code_system::LOINC || code_system::normalize(system) == code_system::LOINC
}

/// Results that were never valid: a cancelled test, a result entered in error.
fn is_void(status: Option<&str>) -> bool {
    status.is_some_and(|s| {
        matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "cancelled" | "canceled" | "entered-in-error"
        )
    })
}

/// Unit text lowercased, spaces removed, UCUM braces and brackets kept.
fn unit_key(unit: Option<&str>) -> String {
    unit.unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Hemoglobin in g/dL: g/dL (or no unit) as is, g/L divided by 10, mmol/L (Fe, as reported
/// in the Netherlands) times 1.6114; any other unit is not readable.
pub fn hemoglobin_in_g_dl(value: f64, unit: Option<&str>) -> Option<f64> {
    match unit_key(unit).as_str() {
        "" | "g/dl" => Some(value),
        "g/l" => Some(value / 10.0),
        "mmol/l" => Some(value * 1.6114),
        _ => None,
    }
}

/// Sodium in mmol/L: mmol/L, mEq/L (equal for a monovalent ion) or no unit; any other unit
/// is not readable.
pub fn sodium_in_mmol_l(value: f64, unit: Option<&str>) -> Option<f64> {
    match unit_key(unit).as_str() {
        "" | "mmol/l" | "meq/l" => Some(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Months};

    use super::super::testkit::*;
    use super::*;
    use crate::curated::encounter_class::{EMERGENCY, INPATIENT};

    fn stay() -> IndexStay {
        IndexStay {
            encounter_id: "IDX".into(),
            admit: at(0),
            discharge: at(72),
            admission_type: Some("elective".into()),
            service: Some("medicine".into()),
        }
    }

    fn with_labs(labs: &[Observation]) -> HospitalComponents {
        let refs: Vec<_> = labs.iter().collect();
        hospital(&stay(), &refs, &[], &[])
    }

    #[test]
    fn hemoglobin_band_edge() {
        for (value, points) in [(11.9, 1), (12.0, 0), (12.1, 0), (7.0, 1)] {
            let r = with_labs(&[lab("H", "718-7", value, "g/dL", at(70))]);
            assert_eq!(
                (r.hemoglobin_g_dl, r.hemoglobin),
                (Some(value), points),
                "{value}"
            );
        }
        assert_eq!(
            with_labs(&[lab("H", "718-7", 119.0, "g/L", at(70))]).hemoglobin,
            1
        );
        assert_eq!(
            with_labs(&[lab("H", "718-7", 120.0, "g/L", at(70))]).hemoglobin,
            0
        );
        assert_eq!(
            with_labs(&[lab("H", "718-7", 7.0, "mmol/L", at(70))]).hemoglobin,
            1
        );
        assert_eq!(
            with_labs(&[lab("H", "718-7", 8.0, "mmol/L", at(70))]).hemoglobin,
            0
        );
    }

    #[test]
    fn sodium_band_edge_and_both_codes() {
        for (code, value, points) in [
            ("2951-2", 134.9, 1),
            ("2951-2", 135.0, 0),
            ("2947-0", 134.9, 1),
            ("2947-0", 135.0, 0),
        ] {
            let r = with_labs(&[lab("N", code, value, "mmol/L", at(70))]);
            assert_eq!(
                (r.sodium_mmol_l, r.sodium),
                (Some(value), points),
                "{code} {value}"
            );
        }
        assert_eq!(
            with_labs(&[lab("N", "2951-2", 130.0, "mEq/L", at(70))]).sodium,
            1
        );
        // A potassium result is not sodium.
        assert_eq!(
            with_labs(&[lab("K", "2823-3", 3.0, "mmol/L", at(70))]).sodium_mmol_l,
            None
        );
    }

    #[test]
    fn the_last_result_within_the_stay_is_the_discharge_value() {
        let r = with_labs(&[
            lab("A", "718-7", 9.0, "g/dL", at(2)),
            lab("B", "718-7", 12.5, "g/dL", at(66)),
            lab("C", "718-7", 10.0, "g/dL", at(40)),
        ]);
        assert_eq!((r.hemoglobin_g_dl, r.hemoglobin), (Some(12.5), 0));
        // Exactly at admission and at discharge are inside; before and after are not.
        let r = with_labs(&[lab("A", "718-7", 9.0, "g/dL", at(72))]);
        assert_eq!(r.hemoglobin_g_dl, Some(9.0));
        let r = with_labs(&[lab("A", "718-7", 9.0, "g/dL", at(0))]);
        assert_eq!(r.hemoglobin_g_dl, Some(9.0));
        let r = with_labs(&[
            lab("A", "718-7", 9.0, "g/dL", at(-1)),
            lab("B", "718-7", 9.0, "g/dL", at(73)),
        ]);
        assert_eq!((r.hemoglobin_g_dl, r.hemoglobin), (None, 0));
    }

    #[test]
    fn ties_on_time_go_to_the_later_known_result_then_the_source_id() {
        let mut early = lab("A", "718-7", 11.0, "g/dL", at(70));
        let mut late = lab("B", "718-7", 13.0, "g/dL", at(70));
        early.meta.known_at = at(71);
        late.meta.known_at = at(75);
        assert_eq!(
            with_labs(&[late.clone(), early.clone()]).hemoglobin_g_dl,
            Some(13.0)
        );
        assert_eq!(
            with_labs(&[early.clone(), late.clone()]).hemoglobin_g_dl,
            Some(13.0)
        );
        late.meta.known_at = at(71);
        late.meta.source_id = "Z".into();
        early.meta.source_id = "A".into();
        assert_eq!(with_labs(&[late, early]).hemoglobin_g_dl, Some(13.0));
    }

    #[test]
    fn unusable_results_are_skipped() {
        let mut cancelled = lab("A", "718-7", 8.0, "g/dL", at(70));
        cancelled.status = Some("cancelled".into());
        let mut text = lab("B", "718-7", 8.0, "g/dL", at(69));
        text.value_num = None;
        let odd_unit = lab("C", "718-7", 8.0, "mg/dL", at(68));
        let mut nan = lab("D", "718-7", f64::NAN, "g/dL", at(67));
        nan.value_num = Some(f64::NAN);
        let mut snomed = lab("E", "718-7", 8.0, "g/dL", at(66));
        snomed.code.system = code_system::SNOMED.into();
        let usable = lab("F", "718-7", 13.0, "g/dL", at(10));
        let r = with_labs(&[cancelled, text, odd_unit, nan, snomed, usable]);
        assert_eq!(r.hemoglobin_g_dl, Some(13.0));
    }

    #[test]
    fn oncology_service_is_two_points() {
        let mut s = stay();
        for (service, points) in [(Some("oncology"), 2), (Some("medicine"), 0), (None, 0)] {
            s.service = service.map(str::to_string);
            assert_eq!(hospital(&s, &[], &[], &[]).oncology, points, "{service:?}");
        }
    }

    #[test]
    fn a_procedure_counts_only_within_the_stay() {
        let s = stay();
        for (t, points) in [
            (at(0), 1),
            (at(30), 1),
            (at(72), 1),
            (at(-1), 0),
            (at(73), 0),
        ] {
            let p = procedure("P", t);
            assert_eq!(hospital(&s, &[], &[&p], &[]).procedure, points, "{t}");
        }
    }

    #[test]
    fn index_type_urgent_or_emergent() {
        let mut s = stay();
        for (kind, points) in [("emergency", 1), ("urgent", 1), ("elective", 0)] {
            s.admission_type = Some(kind.into());
            assert_eq!(hospital(&s, &[], &[], &[]).index_type, points, "{kind}");
        }
    }

    fn admission(id: &str, admit: DateTime<Utc>) -> Encounter {
        encounter(id, INPATIENT, admit, Some(admit + Duration::days(3)))
    }

    #[test]
    fn admission_bands_one_two_five_six() {
        let s = stay();
        let prior: Vec<_> = (1..=6)
            .map(|i| admission(&format!("A{i}"), at(-24 * 40 * i)))
            .collect();
        for (n, points) in [(0, 0), (1, 0), (2, 2), (5, 2), (6, 5)] {
            let refs: Vec<_> = prior[..n].iter().collect();
            let r = hospital(&s, &[], &[], &refs);
            assert_eq!(
                (r.prior_admissions, r.admissions),
                (n as u32, points),
                "{n}"
            );
        }
    }

    #[test]
    fn admission_window_is_twelve_calendar_months_inclusive() {
        let s = stay();
        let year = s.admit.checked_sub_months(Months::new(12)).unwrap();
        let exactly = admission("A", year);
        let before = admission("B", year - Duration::seconds(1));
        let index_itself = admission("IDX", s.admit);
        let ed = encounter("E", EMERGENCY, at(-50), Some(at(-45)));
        let r = hospital(&s, &[], &[], &[&exactly, &before, &index_itself, &ed]);
        assert_eq!(r.prior_admissions, 1);
        let also = admission("C", at(-24 * 100));
        let r = hospital(&s, &[], &[], &[&exactly, &also]);
        assert_eq!((r.prior_admissions, r.admissions), (2, 2));
    }

    #[test]
    fn length_of_stay_of_five_days_is_two_points() {
        let mut s = stay();
        for (hours, points) in [(24 * 4, 0), (24 * 5 - 1, 0), (24 * 5, 2), (24 * 30, 2)] {
            s.discharge = s.admit + Duration::hours(hours);
            assert_eq!(
                hospital(&s, &[], &[], &[]).length_of_stay,
                points,
                "{hours} h"
            );
        }
    }

    #[test]
    fn total_is_zero_for_a_short_elective_medicine_stay() {
        let r = with_labs(&[
            lab("H", "718-7", 14.0, "g/dL", at(70)),
            lab("N", "2951-2", 140.0, "mmol/L", at(70)),
        ]);
        assert_eq!(r.total, 0);
    }

    #[test]
    fn total_reaches_the_maximum_13() {
        let mut s = stay();
        s.discharge = s.admit + Duration::days(9);
        s.admission_type = Some("urgent".into());
        s.service = Some("oncology".into());
        let labs = [
            lab("H", "718-7", 9.5, "g/dL", at(200)),
            lab("N", "2951-2", 129.0, "mmol/L", at(200)),
        ];
        let p = procedure("P", at(30));
        let prior: Vec<_> = (1..=7)
            .map(|i| admission(&format!("A{i}"), at(-24 * 30 * i)))
            .collect();
        let lrefs: Vec<_> = labs.iter().collect();
        let erefs: Vec<_> = prior.iter().collect();
        let r = hospital(&s, &lrefs, &[&p], &erefs);
        assert_eq!(
            (
                r.hemoglobin,
                r.oncology,
                r.sodium,
                r.procedure,
                r.index_type,
                r.admissions,
                r.length_of_stay,
                r.total
            ),
            (1, 2, 1, 1, 1, 5, 2, 13)
        );
    }
}
