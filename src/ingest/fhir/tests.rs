//! Tests of FHIR ingest.

use arrow::error::ArrowError;
use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};

use super::framing::LINES_PER_TASK;
use super::index::{conditional_reference, percent_decode};
use super::resolve::{literal_reference, Target};
use super::scan::{self, scan_head, IdOnly};
use super::time::{parse_date, parse_instant};
use super::{parse_bundles, parse_bundles_batches, parse_ndjson, parse_ndjson_batches};
use crate::curated::{Observation, Table};
use crate::ingest::{Context, Input, Location, Parsed, ParsedBatches};

use proptest::prelude::*;
use serde_json::{json, Value};

fn ctx() -> Context {
    Context::new(utc(2024, 1, 1, 0, 0, 0))
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid test time")
}

fn bundles(docs: &[(&str, Value)]) -> Parsed {
    let texts: Vec<(String, String)> = docs
        .iter()
        .map(|(name, v)| (name.to_string(), v.to_string()))
        .collect();
    let inputs: Vec<Input<'_>> = texts
        .iter()
        .map(|(name, text)| Input {
            name,
            bytes: text.as_bytes(),
        })
        .collect();
    both_paths(
        parse_bundles(&inputs, &ctx()),
        parse_bundles_batches(&inputs, &ctx()),
    )
}

/// The row path's result, after checking that the column path gives the same batches,
/// bad records and skipped records.
fn both_paths(rows: Parsed, columns: Result<ParsedBatches, ArrowError>) -> Parsed {
    let expected = rows.clone().into_batches().expect("row path");
    assert!(
        expected == columns.expect("column path"),
        "the column path differs from the row path"
    );
    rows
}

fn one_bundle(entries: Value) -> Parsed {
    bundles(&[(
        "b.json",
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
    )])
}

fn ndjson(files: &[(&str, &str)]) -> Parsed {
    let inputs: Vec<Input<'_>> = files
        .iter()
        .map(|(name, text)| Input {
            name,
            bytes: text.as_bytes(),
        })
        .collect();
    both_paths(
        parse_ndjson(&inputs, &ctx()),
        parse_ndjson_batches(&inputs, &ctx()),
    )
}

fn patient_entry() -> Value {
    json!({"fullUrl": "urn:uuid:p-1", "resource": {
        "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-05",
        "name": [{"use": "nickname", "given": ["Jo"]},
                 {"use": "official", "family": "Doe", "given": ["Jane", "Q"]}],
        "address": [{"use": "work", "postalCode": "99999"}, {"use": "home", "postalCode": "02115"}],
        "deceasedDateTime": "2020-02-03T04:05:06Z"}})
}

#[test]
fn dates_full_partial_and_offsets() {
    let z = FixedOffset::east_opt(0).expect("utc");
    let minus5 = FixedOffset::west_opt(5 * 3600).expect("-05:00");
    assert_eq!(parse_instant("2013", z), Some(utc(2013, 1, 1, 0, 0, 0)));
    assert_eq!(parse_instant("2013-03", z), Some(utc(2013, 3, 1, 0, 0, 0)));
    assert_eq!(
        parse_instant("2013-03-11", z),
        Some(utc(2013, 3, 11, 0, 0, 0))
    );
    assert_eq!(
        parse_instant("2013-03-11", minus5),
        Some(utc(2013, 3, 11, 5, 0, 0))
    );
    assert_eq!(
        parse_instant("2013-03-11T10:00:00+02:00", minus5),
        Some(utc(2013, 3, 11, 8, 0, 0))
    );
    assert_eq!(
        parse_instant("2013-03-11T10:00:00", minus5),
        Some(utc(2013, 3, 11, 15, 0, 0))
    );
    let frac = parse_instant("2013-03-11T10:00:00.123456789Z", z).expect("fraction");
    assert_eq!(frac.timestamp_subsec_micros(), 123_456);
    let short = parse_instant("2013-03-11T10:00:00.5-01:30", z).expect("short fraction");
    assert_eq!(
        short,
        utc(2013, 3, 11, 11, 30, 0) + chrono::Duration::milliseconds(500)
    );
    for bad in [
        "",
        "13",
        "2013-13",
        "2013-02-30",
        "2013T10:00:00Z",
        "2013-03-11T25:00:00Z",
        "2013-03-11T10:00:60Z",
        "2013-03-11T10:00:00+2",
        "2013-03-11T10:00:00.Z",
        "2013-03-11 10:00:00",
        "2013-03-11T10:00:00Zjunk",
        "２０１３",
    ] {
        assert_eq!(parse_instant(bad, z), None, "{bad:?} must not parse");
    }
    assert_eq!(parse_date("1970-05"), NaiveDate::from_ymd_opt(1970, 5, 1));
    assert_eq!(parse_date("1970-05-06T00:00:00Z"), None);
}

#[test]
fn conditional_reference_forms() {
    let npi = "http://hl7.org/fhir/sid/us-npi";
    let ok = |r: &str| conditional_reference(r).map(|c| c.map(|(t, s, v)| (t.to_string(), s, v)));
    let want = |t: &str, v: &str| Some(Ok((t.to_string(), npi.to_string(), v.to_string())));
    assert_eq!(ok("Practitioner/1"), None);
    assert_eq!(
        ok(&format!("Practitioner?identifier={npi}|42")),
        want("Practitioner", "42")
    );
    assert_eq!(
        ok(&format!(
            "https://ehr.example/fhir/Practitioner?identifier={npi}|42"
        )),
        want("Practitioner", "42")
    );
    assert_eq!(
        ok("Patient?identifier=http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Fus-npi%7C42"),
        want("Patient", "42")
    );
    // A bad escape is left as written.
    assert_eq!(percent_decode("a%zz%7c%"), "a%zz|%");
    for bad in [
        "Practitioner?identifier=42",
        "Practitioner?identifier=|42",
        "Practitioner?identifier=sys|",
        "Practitioner?name=Ward",
        "Practitioner?identifier=s|1&active=true",
        "?identifier=s|1",
        "practitioner?identifier=s|1",
    ] {
        assert!(matches!(ok(bad), Some(Err(_))), "{bad}");
    }
}

#[test]
fn reference_forms() {
    let t = |rtype, id| Some(Target { rtype, id });
    assert_eq!(literal_reference("Patient/123"), t("Patient", "123"));
    assert_eq!(
        literal_reference("http://example.org/fhir/Patient/123"),
        t("Patient", "123")
    );
    assert_eq!(
        literal_reference("Patient/123/_history/2"),
        t("Patient", "123")
    );
    assert_eq!(
        literal_reference("https://h/fhir/Encounter/e.1/_history/7"),
        t("Encounter", "e.1")
    );
    assert_eq!(
        literal_reference("Patient/123/_history"),
        t("Patient", "123")
    );
    for bad in [
        "Patient",
        "Patient/",
        "patient/1",
        "Patient/a b",
        "Patient?identifier=x",
        "Patient/_history/2",
        "_history/2",
        "",
    ] {
        assert_eq!(literal_reference(bad), None, "{bad:?}");
    }
}

#[test]
fn patient_fields_and_urn_uuid_resolution() {
    let parsed = one_bundle(json!([
        patient_entry(),
        {"fullUrl": "urn:uuid:0b9d", "resource": {"resourceType": "Patient", "gender": "male"}},
        {"fullUrl": "urn:uuid:o-1", "resource": {
            "resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": "urn:uuid:p-1"},
            "effectiveDateTime": "2020-01-01T00:00:00Z", "valueQuantity": {"value": 13.5, "code": "g/dL"}}},
        {"resource": {
            "resourceType": "Observation", "id": "o2",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": "urn:uuid:0b9d"}, "issued": "2020-01-02T00:00:00Z"}}
    ]));
    assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
    let p = &parsed.tables.patients;
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].patient_id, "p1");
    assert_eq!(p[0].birth_date, NaiveDate::from_ymd_opt(1970, 5, 1));
    assert_eq!(p[0].sex.as_deref(), Some("female"));
    assert_eq!(p[0].given_name.as_deref(), Some("Jane Q"));
    assert_eq!(p[0].family_name.as_deref(), Some("Doe"));
    assert_eq!(p[0].zip.as_deref(), Some("02115"));
    assert_eq!(p[0].death_time, Some(utc(2020, 2, 3, 4, 5, 6)));
    assert_eq!(p[0].meta.source_id, "Patient/p1");
    assert_eq!(p[0].meta.source_system, "b.json");
    // No id: the fullUrl's uuid is the id, the fullUrl the source id.
    assert_eq!(p[1].patient_id, "0b9d");
    assert_eq!(p[1].meta.source_id, "urn:uuid:0b9d");
    let o = &parsed.tables.observations;
    assert_eq!(o[0].patient_id, "p1");
    assert_eq!(o[0].value_num, Some(13.5));
    assert_eq!(o[0].unit.as_deref(), Some("g/dL"));
    assert_eq!(o[1].patient_id, "0b9d");
    assert_eq!(o[1].effective_time, utc(2020, 1, 2, 0, 0, 0));
}

#[test]
fn every_resource_type() {
    let parsed = one_bundle(json!([
        patient_entry(),
        {"fullUrl": "urn:uuid:dr-1", "resource": {"resourceType": "Practitioner", "id": "dr1"}},
        {"fullUrl": "urn:uuid:e-1", "resource": {
            "resourceType": "Encounter", "id": "e1", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "183807002", "display": "Inpatient stay"}]}],
            "priority": {"coding": [{"code": "EM"}]},
            "serviceType": {"coding": [{"code": "cardio", "display": "Cardiology"}]},
            "subject": {"reference": "urn:uuid:p-1"},
            "participant": [
                {"type": [{"coding": [{"code": "ATND"}]}], "individual": {"reference": "urn:uuid:dr-1"}},
                {"individual": {"reference": "Practitioner/dr2"},
                 "period": {"start": "2013-03-12T08:00:00Z", "end": "2013-03-13T08:00:00Z"}},
                {"individual": {"reference": "RelatedPerson/mom"}}
            ],
            "period": {"start": "2013-03-11T10:00:00Z", "end": "2013-03-20"},
            "hospitalization": {"dischargeDisposition": {"coding": [{"code": "home"}]}}}},
        {"fullUrl": "urn:uuid:bp", "resource": {
            "resourceType": "Observation", "id": "bp", "status": "final",
            "category": [{"coding": [{"code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "urn:uuid:p-1"}, "encounter": {"reference": "urn:uuid:e-1"},
            "effectivePeriod": {"start": "2013-03-12T09:00:00+01:00"},
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 120, "unit": "mmHg"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": {"value": 80, "unit": "mmHg"}}]}},
        {"resource": {
            "resourceType": "Observation", "id": "cc",
            "code": {"coding": [{"system": "urn:oid:1.2.3", "code": "local"},
                                {"system": "http://loinc.org", "code": "883-9", "display": "ABO"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2013-03-12",
            "valueCodeableConcept": {"coding": [{"code": "A", "display": "Group A"}]}}},
        {"resource": {
            "resourceType": "Condition", "id": "c1",
            "verificationStatus": {"coding": [{"code": "confirmed"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"},
                                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]},
            "subject": {"reference": "urn:uuid:p-1"}, "recordedDate": "2013-03-11",
            "abatementPeriod": {"start": "2014-01-01", "end": "2014-02"}}},
        {"resource": {
            "resourceType": "Procedure", "id": "pr1", "status": "completed",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
            "subject": {"reference": "urn:uuid:p-1"},
            "performedPeriod": {"start": "2013-03-13T10:00:00Z", "end": "2013-03-13T11:00:00Z"}}},
        {"resource": {
            "resourceType": "Procedure", "id": "pr2", "status": "not-done",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
            "subject": {"reference": "urn:uuid:p-1"}}},
        {"fullUrl": "urn:uuid:med-1", "resource": {
            "resourceType": "Medication", "id": "med1",
            "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "316049"}]}}},
        {"resource": {
            "resourceType": "MedicationRequest", "id": "m1", "status": "active",
            "medicationReference": {"reference": "urn:uuid:med-1"},
            "subject": {"reference": "urn:uuid:p-1"}, "authoredOn": "2013-03-14",
            "dispenseRequest": {"validityPeriod": {"end": "2013-04-14"}}}},
        {"resource": {
            "resourceType": "MedicationRequest", "id": "m2", "status": "completed",
            "contained": [{"resourceType": "Medication", "id": "x",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "430127000"}]}}],
            "medicationReference": {"reference": "#x"},
            "subject": {"reference": "Patient/p1"}, "authoredOn": "2013-03-15"}},
        {"resource": {"resourceType": "AllergyIntolerance", "id": "a1"}},
        {"request": {"method": "DELETE", "url": "Patient/old"}}
    ]));
    assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
    let t = &parsed.tables;
    let e = &t.encounters[0];
    assert_eq!(
        (e.encounter_id.as_str(), e.patient_id.as_str()),
        ("e1", "p1")
    );
    assert_eq!(e.class, "inpatient");
    assert_eq!(e.admit_time, utc(2013, 3, 11, 10, 0, 0));
    assert_eq!(e.discharge_time, Some(utc(2013, 3, 20, 0, 0, 0)));
    assert_eq!(e.admission_type.as_deref(), Some("emergency"));
    assert_eq!(e.discharge_disposition.as_deref(), Some("home"));
    assert_eq!(e.service.as_deref(), Some("Cardiology"));
    let code = e.code.as_ref().expect("encounter type");
    assert_eq!(
        (code.system.as_str(), code.code.as_str()),
        ("SNOMED", "183807002")
    );

    assert_eq!(t.care_team.len(), 2);
    assert_eq!(t.care_team[0].clinician_id, "dr1");
    assert_eq!(t.care_team[0].role.as_deref(), Some("attending"));
    assert_eq!(t.care_team[0].valid_from, e.admit_time);
    assert_eq!(t.care_team[0].valid_to, e.discharge_time);
    assert_eq!(t.care_team[1].clinician_id, "dr2");
    assert_eq!(t.care_team[1].valid_from, utc(2013, 3, 12, 8, 0, 0));
    assert_eq!(t.care_team[1].valid_to, Some(utc(2013, 3, 13, 8, 0, 0)));

    // Blood pressure: no value of its own, one row per component.
    let o = &t.observations;
    assert_eq!(o.len(), 3);
    assert_eq!(o[0].observation_id, "bp.component[0]");
    assert_eq!(
        (o[0].code.code.as_str(), o[0].value_num),
        ("8480-6", Some(120.0))
    );
    assert_eq!(
        (o[1].code.code.as_str(), o[1].value_num),
        ("8462-4", Some(80.0))
    );
    assert_eq!(o[1].effective_time, utc(2013, 3, 12, 8, 0, 0));
    assert_eq!(o[1].encounter_id.as_deref(), Some("e1"));
    assert_eq!(o[1].category.as_deref(), Some("vital-signs"));
    assert_eq!(o[1].meta.source_id, "Observation/bp");
    // The shared columns: copied into the first component's row, taken by the last.
    let shared = |r: &Observation| {
        (
            r.patient_id.clone(),
            r.encounter_id.clone(),
            r.category.clone(),
            r.status.clone(),
        )
    };
    let expected = (
        "p1".to_string(),
        Some("e1".to_string()),
        Some("vital-signs".to_string()),
        Some("final".to_string()),
    );
    assert_eq!(shared(&o[0]), expected);
    assert_eq!(shared(&o[1]), expected);
    // LOINC preferred over a local code listed first.
    assert_eq!(
        (o[2].code.system.as_str(), o[2].code.code.as_str()),
        ("LOINC", "883-9")
    );
    assert_eq!(o[2].value_text.as_deref(), Some("Group A"));

    let c = &t.conditions[0];
    assert_eq!(
        (c.code.system.as_str(), c.code.code.as_str()),
        ("ICD10CM", "I10")
    );
    assert_eq!(c.onset_time, utc(2013, 3, 11, 0, 0, 0));
    assert_eq!(c.abatement_time, Some(utc(2014, 2, 1, 0, 0, 0)));

    assert_eq!(t.procedures.len(), 1);
    assert_eq!(
        t.procedures[0].performed_end,
        Some(utc(2013, 3, 13, 11, 0, 0))
    );

    let m = &t.medications;
    assert_eq!(
        (m[0].code.system.as_str(), m[0].code.code.as_str()),
        ("RXNORM", "316049")
    );
    assert_eq!(m[0].end_time, Some(utc(2013, 4, 14, 0, 0, 0)));
    assert_eq!(m[0].status.as_deref(), Some("active"));
    assert_eq!(m[1].code.code, "430127000");

    let skipped: Vec<(&str, u64)> = parsed
        .skipped
        .iter()
        .map(|s| (s.what.as_str(), s.location.record))
        .collect();
    assert_eq!(
        skipped,
        [
            ("Practitioner", 2),
            ("Procedure (status not-done)", 8),
            ("Medication", 9),
            ("AllergyIntolerance", 12),
            ("Bundle.entry without resource (DELETE Patient/old)", 13)
        ]
    );
}

#[test]
fn dangling_and_missing_are_bad_records() {
    let parsed = one_bundle(json!([
        patient_entry(),
        {"resource": {"resourceType": "Observation", "id": "o1",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
            "subject": {"reference": "urn:uuid:nobody"}, "effectiveDateTime": "2020"}},
        {"resource": {"resourceType": "Observation", "id": "o2",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
            "subject": {"reference": "Patient/p1"}}},
        {"resource": {"resourceType": "Encounter", "id": "e1", "class": {"code": "AMB"},
            "subject": {"reference": "Patient/p1"}}},
        {"resource": {"resourceType": "Condition", "id": "c1",
            "subject": {"reference": "Patient/p1"}, "onsetDateTime": "2020"}},
        {"resource": {"resourceType": "Procedure", "id": "x1",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
            "performedDateTime": "2020"}},
        {"resource": {"resourceType": "Procedure", "id": "x2",
            "code": {"coding": [{"code": "1"}]},
            "subject": {"reference": "Patient/p1"}, "performedDateTime": "2020"}},
        {"resource": {"resourceType": "Condition", "id": "c2",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
            "subject": {"reference": "Patient/p1"}, "onsetDateTime": "2020-14-01"}},
        {"resource": {"resourceType": "Observation", "id": "o3",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
            "subject": {"reference": "Group/herd"}, "issued": "2020-01-01T00:00:00Z"}},
        {"resource": {"resourceType": "Observation", "id": "o4",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
            "subject": {"reference": "Patient/p1"}, "issued": "2020-01-01T00:00:00Z",
            "valueQuantity": {"value": "high"}}},
        {"resource": {"resourceType": "Encounter", "id": "e2",
            "subject": {"reference": "Patient/p1"}, "period": {"start": "2020"},
            "participant": [{"individual": {"reference": "urn:uuid:gone"}}]}},
        {"resource": {"resourceType": "MedicationRequest", "id": "m1",
            "medicationReference": {"reference": "Medication/elsewhere"},
            "subject": {"reference": "Patient/p1"}, "authoredOn": "2020"}},
        {"resource": {"id": "nothing"}}
    ]));
    let got: Vec<(u64, Option<Table>, Option<&str>, &str)> = parsed
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
    use Table::*;
    assert_eq!(
        got,
        [
            (
                2,
                Some(Observations),
                Some("Observation.subject"),
                "dangling_reference"
            ),
            (
                3,
                Some(Observations),
                Some("Observation.effective[x]"),
                "missing_field"
            ),
            (
                4,
                Some(Encounters),
                Some("Encounter.period.start"),
                "missing_field"
            ),
            (5, Some(Conditions), Some("Condition.code"), "missing_field"),
            (
                6,
                Some(Procedures),
                Some("Procedure.subject"),
                "missing_field"
            ),
            (
                7,
                Some(Procedures),
                Some("Procedure.code.coding.system"),
                "unknown_code_system"
            ),
            (
                8,
                Some(Conditions),
                Some("Condition.onsetDateTime"),
                "bad_date"
            ),
            (
                9,
                Some(Observations),
                Some("Observation.subject"),
                "bad_value"
            ),
            (
                10,
                Some(Observations),
                Some("Observation.valueQuantity.value"),
                "bad_value"
            ),
            (
                11,
                Some(CareTeam),
                Some("Encounter.participant[0].individual"),
                "dangling_reference"
            ),
            (
                12,
                Some(Medications),
                Some("MedicationRequest.medicationReference"),
                "dangling_reference"
            ),
            (13, None, Some("resourceType"), "missing_field"),
        ]
    );
    // The encounter with a dangling participant is kept; only its care-team row is not.
    assert_eq!(parsed.tables.encounters.len(), 1);
    assert_eq!(parsed.tables.encounters[0].class, "other");
    assert!(parsed.bad[0].raw.contains("urn:uuid:nobody"));
    assert!(parsed.bad.iter().all(|b| b.location.file == "b.json"));
}

#[test]
fn entered_in_error_is_never_visible() {
    let parsed = one_bundle(json!([
        {"resource": {"resourceType": "Observation", "id": "o1", "status": "entered-in-error",
            "meta": {"lastUpdated": "2021-05-05T00:00:00Z"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2020"}},
        {"resource": {"resourceType": "Condition", "id": "c1",
            "verificationStatus": {"coding": [{"code": "entered-in-error"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
            "subject": {"reference": "Patient/p"}, "onsetDateTime": "2020"}}
    ]));
    let o = &parsed.tables.observations[0];
    assert_eq!(o.meta.known_at, utc(2021, 5, 5, 0, 0, 0));
    assert_eq!(o.meta.retracted_at, Some(o.meta.known_at));
    let c = &parsed.tables.conditions[0];
    assert_eq!(c.meta.retracted_at, Some(ctx().ingested_at));
}

#[test]
fn known_at_prefers_last_updated_then_bundle_timestamp() {
    let obs = |id: &str, meta: Value| {
        json!({"resource": {"resourceType": "Observation", "id": id, "meta": meta,
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2020"}})
    };
    let parsed = bundles(&[
        (
            "a.json",
            json!({"resourceType": "Bundle", "timestamp": "2022-02-02T02:02:02+02:00", "entry": [
                obs("x", json!({"lastUpdated": "2023-03-03T03:03:03Z", "source": "lab-sys"})),
                obs("y", json!({})),
                {"resource": {"resourceType": "Bundle", "timestamp": "2021-01-01T00:00:00Z",
                    "entry": [obs("z", json!({}))]}}
            ]}),
        ),
        ("b.json", obs("w", json!({}))["resource"].clone()),
    ]);
    let o = &parsed.tables.observations;
    assert_eq!(o[0].meta.known_at, utc(2023, 3, 3, 3, 3, 3));
    assert_eq!(o[0].meta.source_system, "lab-sys");
    assert_eq!(o[1].meta.known_at, utc(2022, 2, 2, 0, 2, 2));
    assert_eq!(o[2].meta.known_at, utc(2021, 1, 1, 0, 0, 0));
    assert_eq!(o[3].meta.known_at, ctx().ingested_at);
    assert_eq!(o[3].meta.source_system, "b.json");
    assert!(o.iter().all(|o| o.meta.retracted_at.is_none()));
}

#[test]
fn bad_bundle_timestamp_is_reported_and_entries_fall_back() {
    let parsed = bundles(&[(
        "a.json",
        json!({"resourceType": "Bundle", "timestamp": "yesterday", "entry": [patient_entry()]}),
    )]);
    assert_eq!(parsed.bad.len(), 1);
    assert_eq!(parsed.bad[0].field.as_deref(), Some("Bundle.timestamp"));
    assert_eq!(parsed.bad[0].location.record, 0);
    assert_eq!(parsed.tables.patients[0].meta.known_at, ctx().ingested_at);
}

#[test]
fn versions_retract_their_predecessors() {
    let version = |v: &str, at: &str, value: f64| {
        json!({"resourceType": "Observation", "id": "o1",
            "meta": {"versionId": v, "lastUpdated": at}, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2947-0"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2020-01-01T00:00:00Z",
            "valueQuantity": {"value": value}})
    };
    // Later version first in the input: order is by known_at, not by position.
    let v2 = version("2", "2020-01-03T00:00:00Z", 141.0).to_string();
    let v1 = version("1", "2020-01-02T00:00:00Z", 140.0).to_string();
    let v3 = version("3", "2020-01-04T00:00:00Z", 142.0).to_string();
    let text = format!("{v2}\n{v1}\n{v3}\n");
    let parsed = ndjson(&[("Observation.ndjson", &text)]);
    let o = &parsed.tables.observations;
    assert_eq!(o.len(), 3, "all versions kept, in input order");
    assert_eq!(o[0].value_num, Some(141.0));
    assert_eq!(o[0].meta.retracted_at, Some(utc(2020, 1, 4, 0, 0, 0)));
    assert_eq!(o[1].meta.retracted_at, Some(utc(2020, 1, 3, 0, 0, 0)));
    assert_eq!(o[2].meta.retracted_at, None);
}

#[test]
fn ndjson_lines_references_and_garbage() {
    let patients = "{\"resourceType\":\"Patient\",\"id\":\"11111111-2222\"}\r\n\n   \n";
    let obs = concat!(
        "\u{feff}{\"resourceType\":\"Observation\",\"id\":\"o1\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"1-8\"}]},",
        "\"subject\":{\"reference\":\"urn:uuid:11111111-2222\"},\"effectiveDateTime\":\"2020\"}\n",
        "{\"resourceType\":\"Observation\",\"id\":\"o2\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"1-8\"}]},",
        "\"subject\":{\"reference\":\"urn:uuid:nobody\"},\"effectiveDateTime\":\"2020\"}\n",
        "{\"resourceType\":\"Observation\",\"id\":\n",
        "[1,2]\n",
        "{\"resourceType\":\"Immunization\",\"id\":\"i1\"}\n",
        "{\"resourceType\":\"MedicationRequest\",\"id\":\"m1\",\"medicationReference\":{\"reference\":\"Medication/med9\"},",
        "\"subject\":{\"reference\":\"Patient/11111111-2222\"},\"authoredOn\":\"2020-01-01\"}\n",
    );
    let meds = "{\"resourceType\":\"Medication\",\"id\":\"med9\",\"code\":{\"coding\":[{\"system\":\"RxNorm\",\"code\":\"42\"}]}}";
    let parsed = ndjson(&[
        ("Patient.ndjson", patients),
        ("Observation.ndjson", obs),
        ("Medication.ndjson", meds),
    ]);
    assert_eq!(parsed.tables.patients[0].patient_id, "11111111-2222");
    assert_eq!(parsed.tables.observations.len(), 1);
    assert_eq!(parsed.tables.observations[0].patient_id, "11111111-2222");
    assert_eq!(parsed.tables.medications[0].code.code, "42");
    assert_eq!(parsed.tables.medications[0].code.system, "RXNORM");
    let bad: Vec<(&str, u64, &str)> = parsed
        .bad
        .iter()
        .map(|b| {
            (
                b.location.file.as_str(),
                b.location.record,
                b.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        bad,
        [
            ("Observation.ndjson", 2, "dangling_reference"),
            ("Observation.ndjson", 3, "unparseable"),
            ("Observation.ndjson", 4, "unparseable"),
        ]
    );
    assert_eq!(
        parsed.bad[1].raw,
        "{\"resourceType\":\"Observation\",\"id\":"
    );
    let skipped: Vec<(&str, u64)> = parsed
        .skipped
        .iter()
        .map(|s| (s.what.as_str(), s.location.record))
        .collect();
    assert_eq!(skipped, [("Immunization", 5), ("Medication", 1)]);
}

#[test]
fn lines_needing_the_whole_index_keep_their_place() {
    // Many tasks' worth of lines. Every third observation names its patient by a
    // `urn:uuid:` of a Patient line that comes later (curated once the pass is over),
    // every seventh names one that does not exist; the others use `Patient/id`.
    let n = LINES_PER_TASK * 3 + 17;
    let mut obs = String::new();
    let mut expected = Vec::new();
    let mut dangling = Vec::new();
    for i in 0..n {
        let (reference, patient) = match i {
            _ if i % 7 == 0 => ("urn:uuid:nobody".to_string(), None),
            _ if i % 3 == 0 => (format!("urn:uuid:p{}", i % 5), Some(format!("p{}", i % 5))),
            _ => (format!("Patient/p{}", i % 5), Some(format!("p{}", i % 5))),
        };
        // Every other line has its `resourceType` last.
        let (first, last) = match i % 2 {
            0 => ("\"resourceType\":\"Observation\",", ""),
            _ => ("", ",\"resourceType\":\"Observation\""),
        };
        obs.push_str(&format!(
            "{{{first}\"id\":\"o{i}\",\"code\":{{\"coding\":[{{\"system\":\"http://loinc.org\",\"code\":\"1-8\"}}]}},\"subject\":{{\"reference\":\"{reference}\"}},\"effectiveDateTime\":\"2020\"{last}}}\n"
        ));
        match patient {
            Some(p) => expected.push((format!("o{i}"), p)),
            None => dangling.push(i as u64 + 1),
        }
    }
    let mut meds = String::new();
    for i in 0..n {
        // Half the orders name a Medication of a later file.
        let drug = match i % 2 {
            0 => format!("\"medicationReference\":{{\"reference\":\"Medication/d{}\"}}", i % 4),
            _ => "\"medicationCodeableConcept\":{\"coding\":[{\"system\":\"http://www.nlm.nih.gov/research/umls/rxnorm\",\"code\":\"7\"}]}".to_string(),
        };
        meds.push_str(&format!(
            "{{\"resourceType\":\"MedicationRequest\",\"id\":\"m{i}\",{drug},\"subject\":{{\"reference\":\"Patient/p1\"}},\"authoredOn\":\"2020-01-01\"}}\n"
        ));
    }
    let mut later = String::new();
    for p in 0..5 {
        later.push_str(&format!(
            "{{\"resourceType\":\"Patient\",\"id\":\"p{p}\"}}\n"
        ));
    }
    for d in 0..4 {
        // Half with `resourceType` first (checked, not built), half with it last.
        let code = format!("\"code\":{{\"coding\":[{{\"system\":\"http://www.nlm.nih.gov/research/umls/rxnorm\",\"code\":\"10{d}\"}}]}}");
        later.push_str(&match d % 2 {
            0 => format!("{{\"resourceType\":\"Medication\",\"id\":\"d{d}\",{code}}}\n"),
            _ => format!("{{\"id\":\"d{d}\",{code},\"resourceType\":\"Medication\"}}\n"),
        });
    }
    let parsed = ndjson(&[
        ("Observation.ndjson", &obs),
        ("MedicationRequest.ndjson", &meds),
        ("Later.ndjson", &later),
    ]);
    let got: Vec<(String, String)> = parsed
        .tables
        .observations
        .iter()
        .map(|o| (o.observation_id.clone(), o.patient_id.clone()))
        .collect();
    assert_eq!(got, expected);
    let bad: Vec<u64> = parsed.bad.iter().map(|b| b.location.record).collect();
    assert_eq!(bad, dangling);
    assert!(parsed.bad.iter().all(|b| b.reason == "dangling_reference"));
    let drugs: Vec<(String, String)> = parsed
        .tables
        .medications
        .iter()
        .map(|m| (m.medication_id.clone(), m.code.code.clone()))
        .collect();
    let wanted: Vec<(String, String)> = (0..n)
        .map(|i| {
            let code = match i % 2 {
                0 => format!("10{}", i % 4),
                _ => "7".to_string(),
            };
            (format!("m{i}"), code)
        })
        .collect();
    assert_eq!(drugs, wanted);
    assert_eq!(parsed.tables.patients.len(), 5);
}

#[test]
fn scan_head_reads_top_level_members_only() {
    let head = |line: &str| {
        scan_head(line.as_bytes()).map(|h| {
            (
                h.resource_type.map(|t| t.to_string()),
                h.id.map(|t| t.to_string()),
            )
        })
    };
    let some = |t: &str, id: &str| Some((Some(t.to_string()), Some(id.to_string())));
    // Nested "id"s and "resourceType"s, brackets and quotes inside strings, numbers and
    // literals at the top level: only the top-level members count.
    let line = r#" {"contained":[{"resourceType":"Medication","id":"m1"}],"note":"a } \" ] {","n":-1.5e3,"ok":true,"subject":{"id":"x"},"id":"o-1","x":null,"resourceType":"Observation"} "#;
    assert_eq!(head(line), some("Observation", "o-1"));
    assert_eq!(
        head(r#"{"resourceType":"Patient"}"#),
        Some((Some("Patient".into()), None))
    );
    assert_eq!(head("{}"), Some((None, None)));
    assert_eq!(
        head(r#"{"a":[],"b":{},"c":[0,-0.5,1E+2,2e-3,"\u00e9\n"]}"#),
        Some((None, None))
    );
    // Whatever it cannot read, or is not JSON, is left to serde.
    for bad in [
        r#"{"resourceType":"Pat\u0069ent","id":"p"}"#,
        r#"{"resourceType":"Patient","id":7}"#,
        r#"{"resourceType":"Patient","id":null}"#,
        r#"{"resourceType":"Patient","id":"p""#,
        r#"{"resourceType":"Patient","id":"p"} trailing"#,
        r#"[{"resourceType":"Patient"}]"#,
        r#"{"a":[1,2}"#,
        r#"{"a" 1}"#,
        r#"{"a":1,}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":1e}"#,
        r#"{"a":-}"#,
        r#"{"a":+1}"#,
        r#"{"a":tru}"#,
        r#"{"a":nul,"b":1}"#,
        r#"{"a":True}"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"\u12g4"}"#,
        "{\"a\":\"tab\there\"}",
        "{\"a\":1}\u{c}",
        "",
    ] {
        assert_eq!(head(bad), None, "{bad}");
    }
    // Bytes that are not UTF-8: refused in the two strings it reads; in a string it only
    // skips, accepted exactly when serde_json accepts them there.
    let skipped = b"{\"resourceType\":\"Claim\",\"x\":\"\xff\"}";
    assert_eq!(
        scan_head(skipped).is_some(),
        serde_json::from_slice::<serde::de::IgnoredAny>(skipped).is_ok()
    );
    assert!(scan_head(b"{\"resourceType\":\"Cl\xffim\"}").is_none());
    // Nesting up to the limit is read; beyond it, serde decides.
    let nested = |n: usize| format!(r#"{{"a":{}{}}}"#, "[".repeat(n), "]".repeat(n));
    assert!(head(&nested(scan::MAX_DEPTH - 1)).is_some());
    assert!(head(&nested(scan::MAX_DEPTH)).is_none());
    // Agrees with serde on the sample Bundle and each of its resources as a line.
    let doc: Value = serde_json::from_str(&sample()).unwrap();
    let mut lines = vec![doc.to_string()];
    for e in doc["entry"].as_array().unwrap() {
        lines.push(e["resource"].to_string());
    }
    for line in &lines {
        let q = scan_head(line.as_bytes()).expect("a plain object");
        let t: IdOnly<'_> = serde_json::from_str(line).unwrap();
        assert_eq!((q.resource_type, q.id), (t.resource_type, t.id), "{line}");
    }
}

#[test]
fn unreadable_lines_of_skipped_types_are_bad_records() {
    // The pre-pass refuses these lines (not JSON, or an escape in the id), so serde
    // judges them: not JSON is a bad record, whatever type it names; valid JSON of an
    // uncurated type is skipped.
    let text = concat!(
        r#"{"resourceType":"Claim","id":"c1","total":{"value":01}}"#,
        "\n",
        r#"{"resourceType":"Claim","id":"c\u0032","x":"a\u00e9"}"#,
        "\n",
        r#"{"resourceType":"Claim","id":"c3","x":[1,2}"#,
    );
    let parsed = ndjson(&[("claims.ndjson", text)]);
    let bad: Vec<_> = parsed
        .bad
        .iter()
        .map(|b| (b.location.record, b.reason.as_str()))
        .collect();
    assert_eq!(bad, [(1, "unparseable"), (3, "unparseable")]);
    let skipped: Vec<_> = parsed
        .skipped
        .iter()
        .map(|s| (s.what.as_str(), s.location.record))
        .collect();
    assert_eq!(skipped, [("Claim", 2)]);
}

#[test]
fn deep_nesting_does_not_overflow() {
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let nested = format!(
        "{}{}",
        r#"{"resourceType":"Bundle","entry":[{"resource":"#.repeat(5_000),
        "}]}".repeat(5_000)
    );
    for text in [&deep, &nested] {
        let input = [Input {
            name: "deep.json",
            bytes: text.as_bytes(),
        }];
        let parsed = parse_bundles(&input, &ctx());
        assert_eq!(parsed.bad.len(), 1);
        assert_eq!(parsed.bad[0].reason, "unparseable");
        assert!(parsed.bad[0].raw.len() <= 4096);
        let parsed = parse_ndjson(&input, &ctx());
        assert_eq!(parsed.bad.len(), 1);
    }
    // Nesting within the limit still reads the innermost resource, as entry 1.
    let inner = r#"{"resourceType":"Patient","id":"deep"}"#;
    let text = format!(
        "{}{inner}{}",
        r#"{"resourceType":"Bundle","entry":[{"resource":"#.repeat(20),
        "}]}".repeat(20)
    );
    let input = [Input {
        name: "deep.json",
        bytes: text.as_bytes(),
    }];
    let parsed = parse_bundles(&input, &ctx());
    assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
    assert_eq!(parsed.tables.patients[0].patient_id, "deep");
}

fn sample() -> String {
    json!({"resourceType": "Bundle", "type": "collection", "timestamp": "2020-01-01T00:00:00Z",
        "entry": [
            patient_entry(),
            {"fullUrl": "urn:uuid:e", "resource": {"resourceType": "Encounter", "id": "e",
                "class": {"code": "EMER"}, "subject": {"reference": "urn:uuid:p-1"},
                "period": {"start": "2019-12-31T23:00:00-05:00"}}},
            {"resource": {"resourceType": "Observation", "id": "o",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2947-0"}]},
                "subject": {"reference": "urn:uuid:p-1"}, "encounter": {"reference": "urn:uuid:e"},
                "effectiveDateTime": "2020-01-01T01:00:00Z", "valueQuantity": {"value": 140, "unit": "mmol/L"}}},
            {"resource": {"resourceType": "Claim", "id": "cl"}}
        ]})
    .to_string()
}

/// Every NDJSON line (or, for a Bundle, every entry) ends up as rows, a bad record or a
/// skipped record: `(rows' source ids, bad locations, skipped locations)`.
fn accounted(parsed: &Parsed) -> usize {
    let t = &parsed.tables;
    let mut ids: Vec<&str> = t
        .patients
        .iter()
        .map(|r| r.meta.source_id.as_str())
        .chain(t.encounters.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.observations.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.conditions.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.procedures.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.medications.iter().map(|r| r.meta.source_id.as_str()))
        .collect();
    ids.dedup();
    let mut bad: Vec<&Location> = parsed
        .bad
        .iter()
        .filter(|b| b.table != Some(Table::CareTeam))
        .map(|b| &b.location)
        .collect();
    bad.dedup();
    ids.len() + bad.len() + parsed.skipped.len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn truncated_bundles_never_panic(cut in 0usize..2000) {
        let text = sample();
        let cut = cut.min(text.len());
        let input = [Input { name: "t.json", bytes: &text.as_bytes()[..cut] }];
        let parsed = parse_bundles(&input, &ctx());
        if cut < text.len() {
            prop_assert_eq!(parsed.bad.len(), 1);
            prop_assert_eq!(parsed.bad[0].location.record, 0);
            prop_assert!(parsed.tables.is_empty());
        } else {
            prop_assert_eq!(accounted(&parsed), 4);
        }
    }

    #[test]
    fn scan_head_accepts_only_what_serde_accepts(
        flips in proptest::collection::vec((0usize..4000, any::<u8>()), 1..4),
        pick in 0usize..8,
    ) {
        let doc: Value = serde_json::from_str(&sample()).expect("sample is JSON");
        let mut lines = vec![doc.to_string()];
        for e in doc["entry"].as_array().expect("entries") {
            lines.push(e["resource"].to_string());
        }
        let mut bytes = lines[pick % lines.len()].clone().into_bytes();
        for (at, b) in flips {
            let n = bytes.len();
            if let Some(x) = bytes.get_mut(at % n) {
                // Mostly JSON's own bytes, so that many garbled lines stay close to JSON.
                const JSONISH: &[u8] = b"{}[]:,\"\\ 0123456789-+.eEtrufalsn/u\t";
                *x = if b < 128 { JSONISH[b as usize % JSONISH.len()] } else { b };
            }
        }
        let serde = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
        if let Some(head) = scan_head(&bytes) {
            prop_assert!(serde, "scan_head accepted what serde refuses: {}", String::from_utf8_lossy(&bytes));
            if let Ok(t) = serde_json::from_slice::<IdOnly<'_>>(&bytes) {
                prop_assert_eq!((head.resource_type, head.id), (t.resource_type, t.id));
            }
        }
    }

    #[test]
    fn garbled_ndjson_never_panics(flips in proptest::collection::vec((0usize..4000, any::<u8>()), 0..8)) {
        let doc: Value = serde_json::from_str(&sample()).expect("sample is JSON");
        let lines: Vec<String> = doc["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["resource"].to_string())
            .collect();
        let mut bytes = lines.join("\n").into_bytes();
        for (at, b) in flips {
            let n = bytes.len();
            if let Some(x) = bytes.get_mut(at % n) {
                // Keep the line structure so that each line stays one record.
                if *x != b'\n' && b != b'\n' {
                    *x = b;
                }
            }
        }
        let input = [Input { name: "g.ndjson", bytes: &bytes }];
        let parsed = parse_ndjson(&input, &ctx());
        prop_assert_eq!(accounted(&parsed), lines.len());
    }
}
