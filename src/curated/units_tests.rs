use chrono::{TimeZone, Utc};

use super::*;
use crate::curated::{Coding, RowMeta};

fn conv(code: &str, value: f64, unit: &str) -> (f64, &'static str) {
    let c = to_canonical(code, value, unit)
        .unwrap_or_else(|e| panic!("{code} {unit}: {e}"))
        .unwrap_or_else(|| panic!("{code} not in the table"));
    (c.value, c.unit)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[track_caller]
fn assert_conv(code: &str, value: f64, unit: &str, want: f64, want_unit: &str) {
    let (v, u) = conv(code, value, unit);
    assert!(
        close(v, want),
        "{code} {value} {unit}: got {v}, want {want}"
    );
    assert_eq!(u, want_unit, "{code} {unit}");
}

#[test]
fn every_code_once_and_canonical_accepted_first() {
    let mut seen = std::collections::HashSet::new();
    for cu in TABLE {
        for c in cu.codes {
            assert!(seen.insert(*c), "{c} twice in the table");
        }
        let first = cu.accepted.first().expect("no accepted unit");
        assert_eq!(first.spellings.first(), Some(&cu.canonical), "{}", cu.name);
        assert_eq!(first.conversion, SAME, "{}", cu.name);
    }
    for code in [
        "718-7", "2951-2", "2823-3", "2345-7", "2339-0", "2160-0", "3094-0", "6299-2", "1751-7",
        "6690-2", "777-3", "4548-4", "1963-8",
    ] {
        assert!(units_of(code).is_some(), "{code} missing");
    }
}

#[test]
fn glucose_mmol_l_to_mg_dl() {
    assert_conv("2345-7", 5.0, "mmol/L", 90.08, "mg/dL");
    assert_eq!(conv("2345-7", 5.0, "mmol/L").0, 90.08);
    assert_conv("2339-0", 10.0, "mmol/l", 180.16, "mg/dL");
    assert_conv("2345-7", 99.0, "mg/dL", 99.0, "mg/dL");
}

#[test]
fn creatinine_umol_l_to_mg_dl() {
    assert_conv("2160-0", 88.42, "umol/L", 1.0, "mg/dL");
    assert_conv("2160-0", 176.84, "µmol/L", 2.0, "mg/dL");
    assert_conv("2160-0", 176.84, "μmol/l", 2.0, "mg/dL");
    assert_conv("2160-0", 1.2, "MG/DL", 1.2, "mg/dL");
}

#[test]
fn urea_nitrogen_mmol_l_to_mg_dl() {
    assert_conv("3094-0", 1.0, "mmol/L", 2.8014, "mg/dL");
    // 1 mg/dL = 0.357 mmol/L.
    assert!((1.0 / UREA_N_MMOL_TO_MG_DL - 0.357_f64).abs() < 1e-3);
    assert_conv("6299-2", 7.14, "mmol/L", 20.001996, "mg/dL");
}

#[test]
fn proteins_g_l_to_g_dl() {
    assert_conv("718-7", 135.0, "g/L", 13.5, "g/dL");
    assert_conv("718-7", 8.4, "mmol/L", 13.53576, "g/dL");
    assert_conv("718-7", 13.5, "g/dl", 13.5, "g/dL");
    assert_conv("1751-7", 40.0, "g/L", 4.0, "g/dL");
}

#[test]
fn monovalent_ions_meq_equal_mmol() {
    for code in ["2951-2", "2947-0", "2823-3", "1963-8"] {
        assert_conv(code, 24.0, "mEq/L", 24.0, "mmol/L");
        assert_conv(code, 24.0, "MEQ/L", 24.0, "mmol/L");
        assert_conv(code, 24.0, "mmol/l", 24.0, "mmol/L");
    }
}

#[test]
fn counts_per_nanolitre() {
    for unit in [
        "10*3/uL", "K/uL", "10^3/uL", "x10E3/uL", "10^9/L", "x10*9/L", "10*9/l", "thou/uL",
        "10*3/µL",
    ] {
        assert_conv("6690-2", 7.5, unit, 7.5, "10*3/uL");
        assert_conv("777-3", 250.0, unit, 250.0, "10*3/uL");
    }
    assert_conv("6690-2", 7500.0, "/uL", 7.5, "10*3/uL");
    assert_conv("6690-2", 7500.0, "{cells}/uL", 7.5, "10*3/uL");
}

#[test]
fn hba1c_ifcc_to_ngsp() {
    // The master equation: NGSP = 0.09148 × IFCC + 2.152; 48 mmol/mol ≈ 6.5 %.
    assert_conv("4548-4", 48.0, "mmol/mol", 0.09148 * 48.0 + 2.152, "%");
    assert!((conv("4548-4", 48.0, "mmol/mol").0 - 6.5).abs() < 0.05);
    assert_conv("4548-4", 7.1, "%", 7.1, "%");
    assert_conv("4548-4", 7.1, "%{HbA1c}", 7.1, "%");
}

#[test]
fn unit_keys() {
    assert_eq!(unit_key(" mg / dL "), "mg/dl");
    assert_eq!(unit_key("10^3/µL"), "10*3/ul");
    assert_eq!(unit_key("x10E9/L"), "10*9/l");
    assert_eq!(unit_key("{cells}/uL"), "/ul");
}

#[test]
fn unconvertible_unit_names_code_unit_and_accepted() {
    let e = to_canonical("2951-2", 140.0, "mg/dL").unwrap_err();
    assert_eq!(e.code, "2951-2");
    assert_eq!(e.unit, "mg/dL");
    assert_eq!(e.accepted, vec!["mmol/L", "mEq/L"]);
    assert_eq!(
        e.to_string(),
        "unit \"mg/dL\" cannot be converted for LOINC 2951-2 (sodium): accepted units are \
         mmol/L, mEq/L"
    );
    assert!(to_canonical("2345-7", 5.0, "g/L").is_err());
    assert!(to_canonical("2823-3", 4.0, "mg/dL").is_err());
    // Not in the table: anything passes.
    assert_eq!(to_canonical("8867-4", 72.0, "/min"), Ok(None));
}

fn obs(code: &str, value: Option<f64>, text: Option<&str>, unit: Option<&str>) -> Observation {
    Observation {
        observation_id: "o".into(),
        patient_id: "p".into(),
        encounter_id: None,
        category: None,
        code: Coding {
            system: code_system::LOINC.into(),
            code: code.into(),
            display: None,
        },
        value_num: value,
        value_text: text.map(str::to_string),
        unit: unit.map(str::to_string),
        value_original: None,
        unit_original: None,
        effective_time: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        status: None,
        meta: RowMeta {
            source_system: "s".into(),
            source_id: "i".into(),
            known_at: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            retracted_at: None,
        },
    }
}

#[test]
fn normalize_keeps_the_original() {
    let mut r = obs("2345-7", Some(5.0), None, Some("mmol/L"));
    normalize(&mut r).unwrap();
    assert_eq!(r.value_num, Some(90.08));
    assert_eq!(r.unit.as_deref(), Some("mg/dL"));
    assert_eq!(r.value_original, Some(5.0));
    assert_eq!(r.unit_original.as_deref(), Some("mmol/L"));
    // Idempotent: a second pass changes nothing.
    let again = r.clone();
    normalize(&mut r).unwrap();
    assert_eq!(r, again);
}

#[test]
fn normalize_leaves_canonical_rows_alone() {
    let r0 = obs("2345-7", Some(90.0), None, Some("mg/dL"));
    let mut r = r0.clone();
    normalize(&mut r).unwrap();
    assert_eq!(r, r0);
    // A respelling is kept as the original unit, the value unchanged.
    let mut r = obs("2345-7", Some(90.0), None, Some("MG/DL"));
    normalize(&mut r).unwrap();
    assert_eq!(r.unit.as_deref(), Some("mg/dL"));
    assert_eq!(r.value_num, Some(90.0));
    assert_eq!(r.unit_original.as_deref(), Some("MG/DL"));
}

#[test]
fn normalize_passes_through_what_it_cannot_judge() {
    for r0 in [
        obs("8867-4", Some(72.0), None, Some("/min")),
        obs("2345-7", None, Some("positive"), Some("mg/L")),
        obs("2345-7", Some(5.0), None, None),
    ] {
        let mut r = r0.clone();
        normalize(&mut r).unwrap();
        assert_eq!(r, r0);
    }
    let mut other_system = obs("2345-7", Some(5.0), None, Some("mg/L"));
    other_system.code.system = "http://example.org/labs".into();
    assert!(normalize(&mut other_system).is_ok());
}

#[test]
fn normalize_converts_a_comparator_text() {
    let mut r = obs("2345-7", Some(1.0), Some("<1"), Some("mmol/L"));
    normalize(&mut r).unwrap();
    assert_eq!(r.value_num, Some(18.016));
    assert_eq!(r.value_text.as_deref(), Some("<18.016"));
}

#[test]
fn normalize_refuses_an_unconvertible_unit() {
    let r0 = obs("2951-2", Some(140.0), None, Some("mg/dL"));
    let mut r = r0.clone();
    let e = normalize(&mut r).unwrap_err();
    assert!(e.to_string().contains("2951-2"), "{e}");
    assert_eq!(r, r0);
}
