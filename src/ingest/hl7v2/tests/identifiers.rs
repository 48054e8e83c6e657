//! PID-3 (CX, HL7 v2.5.1 chapter 2A.14) → `patient_identifiers`: CX.1 the value, CX.4 the
//! assigning authority (HD: namespace id, else universal id), CX.5 the identifier type.

use super::*;

fn adt_pid(event: &str, pid: &str, control: &str, time: &str) -> String {
    msg(
        "\r",
        &[
            &format!("MSH|^~\\&|ADT|HOSP|WARD|WARD|{time}||ADT^{event}|{control}|P|2.5"),
            &format!("EVN|{event}|{time}"),
            pid,
            &pv1_admit(),
        ],
    )
}

#[test]
fn every_pid_3_repetition_is_an_identifier_with_its_authority() {
    let pid = "PID|1||MRN7^^^HOSP^MR~123-45-6789^^^SSA^SS~P99^^^&1.2.840.114350&ISO^PI~X1^^^^PN||Doe^Jane||19700102|F";
    let again = "PID|1||MRN7^^^HOSP^MR~123-45-6789^^^SSA^SS~EMPI5^^^EMPI^PT||Doe^Jane||19700102|F";
    let p = run(&[
        ("a.hl7", &adt_pid("A01", pid, "M1", "20240101080500+0100")),
        ("b.hl7", &adt_pid("A08", again, "M2", "20240102080500+0100")),
    ]);
    assert!(p.bad.is_empty(), "{:?}", p.bad);
    // patient, kind, system, value, type, known_at
    type Row<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        DateTime<Utc>,
    );
    let got: Vec<Row<'_>> = p
        .tables
        .patient_identifiers
        .iter()
        .map(|i| {
            (
                i.patient_id.as_str(),
                i.kind.as_str(),
                i.system.as_str(),
                i.value.as_str(),
                i.type_code.as_deref(),
                i.meta.known_at,
            )
        })
        .collect();
    let (t1, t2) = (utc("2024-01-01T07:05:00Z"), utc("2024-01-02T07:05:00Z"));
    assert_eq!(
        got,
        [
            ("MRN7", "identifier", "HOSP", "MRN7", Some("MR"), t1),
            ("MRN7", "identifier", "SSA", "123-45-6789", Some("SS"), t1),
            // CX.4 with only a universal id (HD.2, an OID).
            (
                "MRN7",
                "identifier",
                "1.2.840.114350",
                "P99",
                Some("PI"),
                t1
            ),
            // No assigning authority: the sending facility (MSH-4) issued it.
            ("MRN7", "identifier", "HOSP", "X1", Some("PN"), t1),
            // The second message repeats three and adds one: only the new one is a row.
            ("MRN7", "identifier", "EMPI", "EMPI5", Some("PT"), t2),
        ]
    );
    assert_eq!(p.tables.patient_identifiers[0].meta.source_id, "M1/PID-1");
}
