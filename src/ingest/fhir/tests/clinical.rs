//! DiagnosticReport, Immunization, AllergyIntolerance and MedicationAdministration: fixtures
//! written by hand after the R4 resource pages (hl7.org/fhir/R4/<type>.html).

use super::*;

fn snomed(code: &str, display: &str) -> Value {
    json!({"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]})
}

fn clinical_bundle() -> Value {
    json!([
        patient_entry(),
        {"fullUrl": "urn:uuid:e-1", "resource": {
            "resourceType": "Encounter", "id": "e1", "class": {"code": "IMP"},
            "subject": {"reference": "urn:uuid:p-1"},
            "period": {"start": "2021-03-01T08:00:00Z", "end": "2021-03-05T12:00:00Z"}}},
        {"fullUrl": "urn:uuid:glu", "resource": {
            "resourceType": "Observation", "id": "glu", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": "urn:uuid:p-1"},
            "effectiveDateTime": "2021-03-01T09:00:00Z",
            "valueQuantity": {"value": 5.4, "unit": "mmol/L"}}},
        {"fullUrl": "urn:uuid:rx-1", "resource": {
            "resourceType": "MedicationRequest", "id": "rx1", "status": "active",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1719286"}]},
            "subject": {"reference": "urn:uuid:p-1"}, "authoredOn": "2021-03-01"}},
        {"resource": {
            "resourceType": "DiagnosticReport", "id": "dr1", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "51990-0", "display": "Basic metabolic panel"}]},
            "subject": {"reference": "urn:uuid:p-1"}, "encounter": {"reference": "urn:uuid:e-1"},
            "effectiveDateTime": "2021-03-01T09:00:00Z", "issued": "2021-03-01T11:30:00.000Z",
            "result": [{"reference": "urn:uuid:glu"}, {"reference": "Observation/na"}],
            "conclusion": "Normal."}},
        {"resource": {
            "resourceType": "DiagnosticReport", "id": "dr2", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2", "display": "Chest CT"}]},
            "subject": {"reference": "Patient/p1"},
            "effectivePeriod": {"start": "2021-03-02T10:00:00Z", "end": "2021-03-02T10:20:00Z"}}},
        {"resource": {
            "resourceType": "Immunization", "id": "im1", "status": "completed",
            "vaccineCode": {"coding": [
                {"system": "http://snomed.info/sct", "code": "871751000000104"},
                {"system": "http://hl7.org/fhir/sid/cvx", "code": "140", "display": "Influenza, seasonal, injectable, preservative free"}]},
            "patient": {"reference": "urn:uuid:p-1"}, "encounter": {"reference": "urn:uuid:e-1"},
            "occurrenceDateTime": "2021-03-04T10:00:00Z", "primarySource": true}},
        {"resource": {
            "resourceType": "Immunization", "id": "im2", "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "08"}]},
            "patient": {"reference": "Patient/p1"},
            "occurrenceString": "as a child", "recorded": "2015-06-01"}},
        {"resource": {
            "resourceType": "Immunization", "id": "im3", "status": "not-done",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": {"reference": "Patient/p1"}, "occurrenceDateTime": "2021-03-04"}},
        {"resource": {
            "resourceType": "AllergyIntolerance", "id": "al1",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
            "type": "allergy", "category": ["food"], "criticality": "high",
            "code": snomed("227493005", "Cashew nuts"),
            "patient": {"reference": "urn:uuid:p-1"},
            "onsetDateTime": "2004", "recordedDate": "2014-10-09T14:58:00+11:00"}},
        {"resource": {
            "resourceType": "AllergyIntolerance", "id": "al2",
            "verificationStatus": {"coding": [{"code": "entered-in-error"}]},
            "category": ["medication"],
            "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7980", "display": "Penicillin G"}]},
            "patient": {"reference": "Patient/p1"}, "recordedDate": "2020-01-01"}},
        {"resource": {
            "resourceType": "MedicationAdministration", "id": "ma1", "status": "completed",
            "medicationReference": {"reference": "#m"},
            "contained": [{"resourceType": "Medication", "id": "m",
                "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1719286"}]}}],
            "subject": {"reference": "urn:uuid:p-1"}, "context": {"reference": "urn:uuid:e-1"},
            "request": {"reference": "urn:uuid:rx-1"},
            "effectivePeriod": {"start": "2021-03-01T10:00:00Z", "end": "2021-03-01T10:30:00Z"},
            "dosage": {"route": {"coding": [{"system": "http://snomed.info/sct", "code": "47625008", "display": "Intravenous route"}]},
                       "dose": {"value": 500, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}}},
        {"resource": {
            "resourceType": "MedicationAdministration", "id": "ma2", "status": "not-done",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2021-03-01"}}
    ])
}

#[test]
fn the_four_resources_become_rows() {
    let parsed = one_bundle(clinical_bundle());
    assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
    let t = &parsed.tables;

    assert_eq!(t.diagnostic_reports.len(), 2);
    let r = &t.diagnostic_reports[0];
    assert_eq!((r.report_id.as_str(), r.patient_id.as_str()), ("dr1", "p1"));
    assert_eq!(r.encounter_id.as_deref(), Some("e1"));
    assert_eq!(r.category.as_deref(), Some("LAB"));
    assert_eq!(
        (r.code.system.as_str(), r.code.code.as_str()),
        ("LOINC", "51990-0")
    );
    assert_eq!(r.code.display.as_deref(), Some("Basic metabolic panel"));
    assert_eq!(r.effective_time, utc(2021, 3, 1, 9, 0, 0));
    assert_eq!(r.issued_time, Some(utc(2021, 3, 1, 11, 30, 0)));
    assert_eq!(r.status.as_deref(), Some("final"));
    assert_eq!(r.conclusion.as_deref(), Some("Normal."));
    assert_eq!(r.result_ids.as_deref(), Some("glu na"));
    let r = &t.diagnostic_reports[1];
    assert_eq!(r.effective_time, utc(2021, 3, 2, 10, 0, 0));
    assert_eq!((r.issued_time, r.result_ids.as_deref()), (None, None));

    assert_eq!(t.immunizations.len(), 2);
    let i = &t.immunizations[0];
    assert_eq!(
        (i.immunization_id.as_str(), i.patient_id.as_str()),
        ("im1", "p1")
    );
    assert_eq!(i.encounter_id.as_deref(), Some("e1"));
    // CVX is preferred over the other codings.
    assert_eq!(
        (i.code.system.as_str(), i.code.code.as_str()),
        ("CVX", "140")
    );
    assert_eq!(i.occurrence_time, utc(2021, 3, 4, 10, 0, 0));
    assert_eq!(i.status.as_deref(), Some("completed"));
    // occurrenceString gives no time: the recorded date stands in.
    assert_eq!(t.immunizations[1].occurrence_time, utc(2015, 6, 1, 0, 0, 0));

    assert_eq!(t.allergies.len(), 2);
    let a = &t.allergies[0];
    assert_eq!(
        (a.allergy_id.as_str(), a.patient_id.as_str()),
        ("al1", "p1")
    );
    assert_eq!(
        (a.code.system.as_str(), a.code.code.as_str()),
        ("SNOMED", "227493005")
    );
    assert_eq!(a.category.as_deref(), Some("food"));
    assert_eq!(a.criticality.as_deref(), Some("high"));
    assert_eq!(a.clinical_status.as_deref(), Some("active"));
    assert_eq!(a.verification_status.as_deref(), Some("confirmed"));
    assert_eq!(a.onset_time, utc(2004, 1, 1, 0, 0, 0));
    assert_eq!(a.recorded_time, Some(utc(2014, 10, 9, 3, 58, 0)));
    assert_eq!(a.meta.retracted_at, None);
    // entered-in-error (verificationStatus, as for a Condition): kept, never visible; no
    // onset, so the recorded date stands in.
    let a = &t.allergies[1];
    assert_eq!(a.verification_status.as_deref(), Some("entered-in-error"));
    assert_eq!(a.meta.retracted_at, Some(a.meta.known_at));
    assert_eq!(a.onset_time, utc(2020, 1, 1, 0, 0, 0));

    assert_eq!(t.medication_administrations.len(), 1);
    let m = &t.medication_administrations[0];
    assert_eq!(
        (m.administration_id.as_str(), m.patient_id.as_str()),
        ("ma1", "p1")
    );
    assert_eq!(m.encounter_id.as_deref(), Some("e1"));
    assert_eq!(m.request_id.as_deref(), Some("rx1"));
    assert_eq!(
        (m.code.system.as_str(), m.code.code.as_str()),
        ("RXNORM", "1719286")
    );
    assert_eq!(m.start_time, utc(2021, 3, 1, 10, 0, 0));
    assert_eq!(m.end_time, Some(utc(2021, 3, 1, 10, 30, 0)));
    assert_eq!(m.status.as_deref(), Some("completed"));
    assert_eq!(
        (m.dose_value, m.dose_unit.as_deref()),
        (Some(500.0), Some("mg"))
    );
    assert_eq!(m.route.as_deref(), Some("Intravenous route"));
    assert_eq!(m.meta.source_id, "MedicationAdministration/ma1");

    // The order is still an order: administrations do not land in `medications`.
    assert_eq!(t.medications.len(), 1);
    let skipped: Vec<&str> = parsed.skipped.iter().map(|s| s.what.as_str()).collect();
    assert_eq!(
        skipped,
        [
            "Immunization (status not-done)",
            "MedicationAdministration (status not-done)"
        ]
    );
}

#[test]
fn entered_in_error_statuses_retract() {
    let parsed = one_bundle(json!([
        {"resource": {"resourceType": "Immunization", "id": "i", "status": "entered-in-error",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": {"reference": "Patient/p"}, "occurrenceDateTime": "2021-01-01"}},
        {"resource": {"resourceType": "DiagnosticReport", "id": "d", "status": "entered-in-error",
            "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2021-01-01"}},
        {"resource": {"resourceType": "MedicationAdministration", "id": "m", "status": "entered-in-error",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2021-01-01"}}
    ]));
    assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
    let t = &parsed.tables;
    let at = |m: &crate::curated::RowMeta| m.retracted_at == Some(m.known_at);
    assert!(at(&t.immunizations[0].meta));
    assert!(at(&t.diagnostic_reports[0].meta));
    assert!(at(&t.medication_administrations[0].meta));
}

#[test]
fn bad_fields_are_named() {
    let rx = "http://www.nlm.nih.gov/research/umls/rxnorm";
    let parsed = one_bundle(json!([
        {"resource": {"resourceType": "Immunization", "id": "i1",
            "patient": {"reference": "Patient/p"}, "occurrenceDateTime": "2021"}},
        {"resource": {"resourceType": "Immunization", "id": "i2",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": {"reference": "Patient/p"}, "occurrenceString": "last spring"}},
        {"resource": {"resourceType": "DiagnosticReport", "id": "d1",
            "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2021-02-30"}},
        {"resource": {"resourceType": "DiagnosticReport", "id": "d2",
            "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
            "subject": {"reference": "Patient/p"}, "issued": "2021-02-03T00:00:00Z",
            "result": [{"reference": "Observation/o"}, {"reference": "Patient/p"}]}},
        {"resource": {"resourceType": "AllergyIntolerance", "id": "a1",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "227493005"}]},
            "patient": {"reference": "Patient/p"}}},
        {"resource": {"resourceType": "AllergyIntolerance", "id": "a2",
            "code": {"text": "cats"},
            "patient": {"reference": "Patient/p"}, "recordedDate": "2020"}},
        {"resource": {"resourceType": "MedicationAdministration", "id": "m1",
            "medicationCodeableConcept": {"coding": [{"system": rx, "code": "1"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2021",
            "dosage": {"dose": {"value": "five", "unit": "mg"}}}},
        {"resource": {"resourceType": "MedicationAdministration", "id": "m2",
            "medicationCodeableConcept": {"coding": [{"system": rx, "code": "1"}]},
            "subject": {"reference": "Patient/p"}}},
        {"resource": {"resourceType": "MedicationAdministration", "id": "m3",
            "medicationReference": {"reference": "urn:uuid:gone"},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2021"}},
        {"resource": {"resourceType": "MedicationAdministration", "id": "m4",
            "medicationCodeableConcept": {"coding": [{"system": rx, "code": "1"}]},
            "request": {"reference": "Encounter/e"},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2021"}}
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
                1,
                Some(Immunizations),
                Some("Immunization.vaccineCode"),
                "missing_field"
            ),
            (
                2,
                Some(Immunizations),
                Some("Immunization.occurrenceString"),
                "bad_date"
            ),
            (
                3,
                Some(DiagnosticReports),
                Some("DiagnosticReport.effectiveDateTime"),
                "bad_date"
            ),
            (
                4,
                Some(DiagnosticReports),
                Some("DiagnosticReport.result[1]"),
                "bad_value"
            ),
            (
                5,
                Some(Allergies),
                Some("AllergyIntolerance.onset[x]"),
                "missing_field"
            ),
            (
                6,
                Some(Allergies),
                Some("AllergyIntolerance.code.coding"),
                "missing_field"
            ),
            (
                7,
                Some(MedicationAdministrations),
                Some("MedicationAdministration.dosage.dose.value"),
                "bad_value"
            ),
            (
                8,
                Some(MedicationAdministrations),
                Some("MedicationAdministration.effective[x]"),
                "missing_field"
            ),
            (
                9,
                Some(MedicationAdministrations),
                Some("MedicationAdministration.medicationReference"),
                "dangling_reference"
            ),
            (
                10,
                Some(MedicationAdministrations),
                Some("MedicationAdministration.request"),
                "bad_value"
            ),
        ]
    );
    assert!(parsed.tables.is_empty());
    assert!(
        parsed.bad[9].detail.contains("not a MedicationRequest"),
        "{}",
        parsed.bad[9].detail
    );
}

#[test]
fn bulk_ndjson_of_the_four_types() {
    let files = [
        ("Patient.ndjson", r#"{"resourceType":"Patient","id":"p9"}"#.to_string()),
        (
            "Immunization.ndjson",
            r#"{"resourceType":"Immunization","id":"i9","status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"207"}]},"patient":{"reference":"Patient/p9"},"encounter":{"reference":"Encounter/e9"},"occurrenceDateTime":"2021-01-05T10:00:00Z"}"#.to_string(),
        ),
        (
            "AllergyIntolerance.ndjson",
            r#"{"resourceType":"AllergyIntolerance","id":"a9","code":{"coding":[{"system":"http://snomed.info/sct","code":"91935009","display":"Allergy to peanuts"}]},"patient":{"reference":"Patient/p9"},"onsetDateTime":"2010-06-01"}"#.to_string(),
        ),
        (
            "DiagnosticReport.ndjson",
            r#"{"resourceType":"DiagnosticReport","id":"d9","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"58410-2"}]},"subject":{"reference":"Patient/p9"},"effectiveDateTime":"2021-01-05","result":[{"reference":"Observation/o9"}]}"#.to_string(),
        ),
        (
            "MedicationAdministration.ndjson",
            r#"{"resourceType":"MedicationAdministration","id":"m9","status":"completed","medicationReference":{"reference":"Medication/med9"},"subject":{"reference":"Patient/p9"},"context":{"reference":"Encounter/e9"},"effectiveDateTime":"2021-01-05T11:00:00Z","request":{"reference":"MedicationRequest/rx9"}}"#.to_string(),
        ),
        (
            "Medication.ndjson",
            r#"{"resourceType":"Medication","id":"med9","code":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"197361"}]}}"#.to_string(),
        ),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let parsed = ndjson(&refs);
    assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
    let t = &parsed.tables;
    assert_eq!(t.immunizations[0].encounter_id.as_deref(), Some("e9"));
    assert_eq!(t.immunizations[0].code.code, "207");
    assert_eq!(t.allergies[0].onset_time, utc(2010, 6, 1, 0, 0, 0));
    assert_eq!(t.diagnostic_reports[0].result_ids.as_deref(), Some("o9"));
    let m = &t.medication_administrations[0];
    assert_eq!(
        (m.code.code.as_str(), m.request_id.as_deref()),
        ("197361", Some("rx9"))
    );
    assert_eq!(m.encounter_id.as_deref(), Some("e9"));
}
