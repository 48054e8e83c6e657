//! DG1 and PR1 on ADT messages (HL7 v2.5.1 chapter 6: DG1-3 diagnosis code, DG1-5 date/time,
//! DG1-6 type, DG1-20 identifier, DG1-21 action code; PR1-3 procedure code, PR1-5
//! date/time, PR1-7 minutes, PR1-19 identifier, PR1-20 action code).

use super::*;

fn adt_with(event: &str, time: &str, control: &str, pv1: &str, extra: &[&str]) -> String {
    let mut segs = vec![
        format!("MSH|^~\\&|ADT|HOSP|WARD|WARD|{time}||ADT^{event}|{control}|P|2.5"),
        format!("EVN|{event}|{time}"),
        PID.to_string(),
        pv1.to_string(),
    ];
    segs.extend(extra.iter().map(|s| s.to_string()));
    msg("\r", &segs.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn dg1_and_pr1_become_conditions_and_procedures_of_the_visit() {
    let a01 = adt_with(
        "A01",
        "20240101080500+0100",
        "M1",
        &pv1_admit(),
        &[
            "DG1|1||I50.9^Heart failure, unspecified^I10|||A",
            "DG1|2|I9|4280|CHF NOS|20240101090000+0100|W",
        ],
    );
    let a03 = adt_with(
        "A03",
        "20240105100500+0100",
        "M2",
        &pv1_discharged(),
        &[
            // Re-sent unchanged: nothing new.
            "DG1|1||I50.9^Heart failure, unspecified^I10|||A",
            "DG1|3||E11.9^Type 2 diabetes mellitus without complications^I10|Diabetes|20240103120000+0100|F||||||||||||||DX77",
            "PR1|1||0JH60DZ^Insertion of pacemaker^I10P||20240102143000+0100||||||||||||||P55",
            "PR1|2||33208^Pacemaker insertion^C4||20240102143000+0100||45",
        ],
    );
    let p = run(&[("a.hl7", &a01), ("b.hl7", &a03)]);
    assert!(p.bad.is_empty(), "{:?}", p.bad);
    let c = &p.tables.conditions;
    let got: Vec<(&str, &str, &str, Option<&str>)> = c
        .iter()
        .map(|r| {
            (
                r.condition_id.as_str(),
                r.code.system.as_str(),
                r.code.code.as_str(),
                r.encounter_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("V100^HOSP/I50.9", "ICD10CM", "I50.9", Some("V100^HOSP")),
            ("V100^HOSP/4280", "ICD9CM", "4280", Some("V100^HOSP")),
            ("V100^HOSP/DX77", "ICD10CM", "E11.9", Some("V100^HOSP")),
        ]
    );
    assert!(
        c.iter().all(|r| r.patient_id == "MRN7"),
        "PID-3: the MR identifier"
    );
    // No DG1-5: the diagnosis holds from the admission (PV1-44).
    assert_eq!(c[0].onset_time, utc("2024-01-01T07:00:00Z"));
    assert_eq!(c[0].meta.known_at, utc("2024-01-01T07:05:00Z"));
    // DG1-2 (the v2.3 coding method) names the system when DG1-3.3 does not; DG1-4 the text.
    assert_eq!(c[1].code.display.as_deref(), Some("CHF NOS"));
    assert_eq!(c[1].onset_time, utc("2024-01-01T08:00:00Z"));
    assert_eq!(c[2].onset_time, utc("2024-01-03T11:00:00Z"));
    assert_eq!(c[2].meta.known_at, utc("2024-01-05T09:05:00Z"));
    assert_eq!(c[2].meta.source_id, "M2/DG1-2");
    assert!(c.iter().all(|r| r.meta.retracted_at.is_none()));

    let pr = &p.tables.procedures;
    assert_eq!(pr.len(), 2);
    assert_eq!(pr[0].procedure_id, "V100^HOSP/P55");
    assert_eq!(pr[0].code.system, "I10P");
    assert_eq!(pr[0].performed_time, utc("2024-01-02T13:30:00Z"));
    assert_eq!(pr[0].performed_end, None);
    assert_eq!(
        (pr[1].code.system.as_str(), pr[1].code.code.as_str()),
        ("CPT", "33208")
    );
    // PR1-7: 45 minutes.
    assert_eq!(pr[1].performed_end, Some(utc("2024-01-02T14:15:00Z")));
    assert_eq!(pr[1].encounter_id.as_deref(), Some("V100^HOSP"));
}

#[test]
fn updates_deletions_and_cancelled_admissions() {
    let dg1 = "DG1|1||J18.9^Pneumonia^I10||20240101090000+0100|A";
    let a01 = adt_with("A01", "20240101080500+0100", "M1", &pv1_admit(), &[dg1]);
    // A08: the same diagnosis with another time supersedes it.
    let a08 = adt_with(
        "A08",
        "20240102080000+0100",
        "M2",
        &pv1_admit(),
        &["DG1|1||J18.9^Pneumonia^I10||20240101100000+0100|F"],
    );
    // DG1-21 = D deletes it.
    let del = adt_with(
        "A08",
        "20240103080000+0100",
        "M3",
        &pv1_admit(),
        &["DG1|1||J18.9^Pneumonia^I10||||||||||||||||||D"],
    );
    let p = run(&[("a.hl7", &a01), ("b.hl7", &a08), ("c.hl7", &del)]);
    assert!(p.bad.is_empty(), "{:?}", p.bad);
    let c = &p.tables.conditions;
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].meta.retracted_at, Some(utc("2024-01-02T07:00:00Z")));
    assert_eq!(c[1].onset_time, utc("2024-01-01T09:00:00Z"));
    assert_eq!(c[1].meta.retracted_at, Some(utc("2024-01-03T07:00:00Z")));
    // The deletion retracted a row, so the message is not "no change".
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);

    // A11 cancels the admission: its diagnoses and procedures go with it.
    let pr1 = "PR1|1||0BH17EZ^Intubation^I10P||20240101100000+0100";
    let a01 = adt_with(
        "A01",
        "20240101080500+0100",
        "M1",
        &pv1_admit(),
        &[dg1, pr1],
    );
    let a11 = adt_with("A11", "20240101120000+0100", "M9", &pv1_admit(), &[]);
    let p = run(&[("a.hl7", &a01), ("b.hl7", &a11)]);
    assert!(p.bad.is_empty(), "{:?}", p.bad);
    let gone = Some(utc("2024-01-01T11:00:00Z"));
    assert_eq!(p.tables.conditions[0].meta.retracted_at, gone);
    assert_eq!(p.tables.procedures[0].meta.retracted_at, gone);
    assert_eq!(p.tables.encounters[0].meta.retracted_at, gone);
}

#[test]
fn bad_dg1_and_pr1_fields_are_named() {
    let a01 = adt_with(
        "A01",
        "20240101080500+0100",
        "M1",
        &pv1_admit(),
        &[
            "DG1|1||^no code^I10",
            "DG1|2||I10^Hypertension^I10||2024-01-01|A",
            "PR1|1||0BH17EZ^Intubation^I10P",
            "PR1|2||0BH17EZ^Intubation^I10P||20240101100000+0100||about an hour",
            "DG1|3||K35.80^Appendicitis^I10||||||||||||||||||D",
        ],
    );
    let p = run(&[("a.hl7", &a01)]);
    let got: Vec<(u64, Option<Table>, Option<&str>, &str)> = p
        .bad
        .iter()
        .map(|b| {
            (
                b.location.record,
                b.table,
                b.field.as_deref(),
                b.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (5, Some(Table::Conditions), Some("DG1-3"), "missing_field"),
            (6, Some(Table::Conditions), Some("DG1-5"), "bad_date"),
            (7, Some(Table::Procedures), Some("PR1-5"), "missing_field"),
            (8, Some(Table::Procedures), Some("PR1-7"), "bad_value"),
            (
                9,
                Some(Table::Conditions),
                Some("DG1-21"),
                "dangling_reference"
            ),
        ]
    );
    assert!(p.bad[1].raw.starts_with("DG1|2|"));
    // A bad PR1-7 costs the procedure its end, not the procedure.
    assert_eq!(p.tables.procedures.len(), 1);
    assert_eq!(p.tables.procedures[0].performed_end, None);
    assert!(p.tables.conditions.is_empty());
    assert_eq!(p.tables.encounters.len(), 1);
}

#[test]
fn a_refused_encounter_takes_no_diagnoses() {
    // A new encounter without an admit time is refused; its DG1 has nothing to link to.
    let a01 = adt_with(
        "A01",
        "20240101080500+0100",
        "M1",
        &pv1(&[(44, "")]),
        &["DG1|1||I10^Hypertension^I10|||A"],
    );
    let p = run(&[("a.hl7", &a01)]);
    assert_eq!(p.bad.len(), 1);
    assert_eq!(p.bad[0].field.as_deref(), Some("PV1-44"));
    assert!(p.tables.conditions.is_empty());
}

/// DG1-6 (diagnosis type, table 0052): A admitting, W working, F final; another code is kept
/// as written; absent is null. The same diagnosis sent again with another type (admitting
/// on the A01, final on the A03) is a new version that retracts the first.
#[test]
fn dg1_6_diagnosis_type_is_kept_and_versioned() {
    let a01 = adt_with(
        "A01",
        "20240101080500+0100",
        "M1",
        &pv1_admit(),
        &[
            "DG1|1||J18.9^Pneumonia^I10|||A",
            "DG1|2||I10^Hypertension^I10|||W",
            "DG1|3||E11.9^Type 2 diabetes^I10|||Q",
            "DG1|4||N18.3^CKD stage 3^I10",
        ],
    );
    let a03 = adt_with(
        "A03",
        "20240105100500+0100",
        "M2",
        &pv1_discharged(),
        &[
            "DG1|1||J18.9^Pneumonia^I10|||F",
            "DG1|2||I10^Hypertension^I10|||w",
            "DG1|3||E11.9^Type 2 diabetes^I10|||Q",
            "DG1|4||N18.3^CKD stage 3^I10",
        ],
    );
    let p = run(&[("a.hl7", &a01), ("b.hl7", &a03)]);
    assert!(p.bad.is_empty(), "{:?}", p.bad);
    // code, diagnosis_type, retracted_at
    type Row<'a> = (&'a str, Option<&'a str>, Option<DateTime<Utc>>);
    let got: Vec<Row<'_>> = p
        .tables
        .conditions
        .iter()
        .map(|c| {
            (
                c.code.code.as_str(),
                c.diagnosis_type.as_deref(),
                c.meta.retracted_at,
            )
        })
        .collect();
    let a03_known = Some(utc("2024-01-05T09:05:00Z"));
    assert_eq!(
        got,
        [
            ("J18.9", Some("admitting"), a03_known),
            ("I10", Some("working"), None),
            ("E11.9", Some("Q"), None),
            ("N18.3", None, None),
            // Only the pneumonia changed type: one new version, final.
            ("J18.9", Some("final"), None),
        ]
    );
    // The column is in the curated batch, after abatement_time.
    let batches = p.into_batches().expect("batches");
    let (_, conditions) = batches
        .batches
        .iter()
        .find(|(t, _)| *t == Table::Conditions)
        .expect("conditions");
    let col = conditions
        .column_by_name("diagnosis_type")
        .expect("diagnosis_type column");
    use arrow::array::Array as _;
    let col = col
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .expect("text");
    assert_eq!(col.value(0), "admitting");
    assert!(col.is_null(3));
}
