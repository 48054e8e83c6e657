//! Tests of HL7 v2 ingest.

mod clinical;
mod identifiers;

use crate::ingest::test_support::inputs;
use chrono::{DateTime, Utc};

use super::framing::{is_segment, logical_lines};
use super::parse;
use super::segment::Enc;
use super::time::{parse_date, parse_ts};
use crate::curated::Table;
use crate::curated::{Encounter, Observation};
use crate::ingest::{Context, Input, Parsed};
use chrono::{FixedOffset, NaiveDate};

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
    let inputs = inputs(files);
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

const PID: &str =
    "PID|1||P1^^^HOSP^PI~MRN7^^^HOSP^MR||Doe^Jane^Q^^^^L||19700102|F|||1 Main St^^Town^ST^12345^^H";

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
