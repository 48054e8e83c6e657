//! Curation of each resource type: fields, references, times, retractions and versions.

use super::*;

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
        {"resource": {"resourceType": "Claim", "id": "a1"}},
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
            ("Claim", 12),
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

/// `Patient.identifier` (system and value, FHIR R4 2.24.0.1) and `Patient.link` (to a
/// Patient, or by identifier) → `patient_identifiers`; an identifier without a system is
/// left out; a later version of the Patient retracts the earlier version's rows.
#[test]
fn patient_identifiers_and_links() {
    let v1 = json!({"resourceType": "Patient", "id": "p1",
        "meta": {"versionId": "1", "lastUpdated": "2020-01-01T00:00:00Z"},
        "identifier": [
            {"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
             "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"},
            {"value": "no-system"},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": " 123-45-6789 "}],
        "link": [
            {"other": {"reference": "Patient/p2"}, "type": "seealso"},
            {"other": {"reference": "http://example.org/fhir/Patient/p3/_history/2"}, "type": "replaces"},
            {"other": {"reference": "RelatedPerson/r1"}, "type": "seealso"},
            {"other": {"identifier": {"system": "urn:ward:adt", "value": "A77"}}, "type": "refer"}]});
    let v2 = json!({"resourceType": "Patient", "id": "p1",
        "meta": {"versionId": "2", "lastUpdated": "2020-02-01T00:00:00Z"},
        "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}]});
    let p = ndjson(&[("Patient.ndjson", &format!("{v1}\n{v2}\n"))]);
    assert!(p.bad.is_empty(), "{:?}", p.bad);
    // kind, system, value, type, retracted_at
    type Row<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<DateTime<Utc>>,
    );
    let got: Vec<Row<'_>> = p
        .tables
        .patient_identifiers
        .iter()
        .map(|i| {
            (
                i.kind.as_str(),
                i.system.as_str(),
                i.value.as_str(),
                i.type_code.as_deref(),
                i.meta.retracted_at,
            )
        })
        .collect();
    let feb = Some(utc(2020, 2, 1, 0, 0, 0));
    assert_eq!(
        got,
        [
            (
                "identifier",
                "urn:oid:1.2.36.146.595.217.0.1",
                "12345",
                Some("MR"),
                feb
            ),
            (
                "identifier",
                "http://hl7.org/fhir/sid/us-ssn",
                "123-45-6789",
                None,
                feb
            ),
            ("link", "Patient", "p2", Some("seealso"), feb),
            ("link", "Patient", "p3", Some("replaces"), feb),
            ("link", "urn:ward:adt", "A77", Some("refer"), feb),
            (
                "identifier",
                "urn:oid:1.2.36.146.595.217.0.1",
                "12345",
                None,
                None
            ),
        ]
    );
    assert!(p
        .tables
        .patient_identifiers
        .iter()
        .all(|i| i.patient_id == "p1"));
}
