//! FHIR R4 Bulk Data NDJSON: one file per resource type, one resource a line.
//!
//! Every curated row version becomes one resource version: the same `id`, `meta.versionId`
//! counting up, `meta.lastUpdated` = `known_at`. A later version of a resource supersedes
//! the earlier (its `lastUpdated` is the earlier row's `retracted_at`). Care-team rows
//! travel inside other resources: the attending as `Encounter.participant` (type ATND,
//! with the period), the primary-care clinician as `Patient.generalPractitioner`.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::{json, Value};

use super::vocab;
use super::{iso, ChunkWriter, OutFile};
use crate::curated::{code_system, encounter_class, Coding, CuratedTables, RowMeta};
use crate::error::Result;

pub(crate) const TYPES: [&str; 6] = [
    "Patient",
    "Encounter",
    "Observation",
    "Condition",
    "Procedure",
    "MedicationRequest",
];

/// The writer of `--format fhir-ndjson`.
pub(crate) struct FhirWriter {
    files: Vec<OutFile>,
}

impl FhirWriter {
    pub(crate) fn create(dir: &Path) -> Result<Self> {
        let files = TYPES
            .iter()
            .map(|t| OutFile::create(dir.join(format!("{t}.ndjson"))))
            .collect::<Result<_>>()?;
        Ok(FhirWriter { files })
    }
}

/// The FHIR URI of a curated code system.
pub(crate) fn system_uri(system: &str) -> &str {
    match system {
        code_system::LOINC => "http://loinc.org",
        code_system::SNOMED => "http://snomed.info/sct",
        code_system::ICD10CM => "http://hl7.org/fhir/sid/icd-10-cm",
        code_system::ICD9CM => "http://hl7.org/fhir/sid/icd-9-cm",
        code_system::RXNORM => "http://www.nlm.nih.gov/research/umls/rxnorm",
        code_system::CPT => "http://www.ama-assn.org/go/cpt",
        other => other,
    }
}

fn concept(c: &Coding) -> Value {
    let mut coding = json!({"system": system_uri(&c.system), "code": c.code});
    if let Some(d) = &c.display {
        coding["display"] = json!(d);
        json!({"coding": [coding], "text": d})
    } else {
        json!({"coding": [coding]})
    }
}

/// `meta` of a resource version; the version is the last segment of the row's source id
/// (`<table>/<id>/<version>`, as the generator writes it).
fn meta(m: &RowMeta) -> Value {
    let version = m.source_id.rsplit('/').next().unwrap_or("1");
    json!({"versionId": version, "lastUpdated": iso(m.known_at)})
}

fn reference(kind: &str, id: &str) -> Value {
    json!({"reference": format!("{kind}/{id}")})
}

fn push(out: &mut Vec<u8>, v: &Value) {
    // Serializing a Value into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, v).is_ok() {
        out.push(b'\n');
    }
}

/// The six files' bytes for one patient.
fn render(p: &CuratedTables) -> [Vec<u8>; 6] {
    render_source(p, "urn:ward:synth:mrn", &[])
}

/// One patient's resources as a source writes them: its MRN under identifier `system`, and
/// further identifiers `extra` (system, value) in `Patient.identifier`.
pub(crate) fn render_source(
    p: &CuratedTables,
    system: &str,
    extra: &[(String, String)],
) -> [Vec<u8>; 6] {
    let mut out: [Vec<u8>; 6] = Default::default();
    let primary = p
        .care_team
        .iter()
        .find(|m| m.role.as_deref() == Some("primary"))
        .map(|m| m.clinician_id.clone());
    for r in &p.patients {
        let mut v = json!({
            "resourceType": "Patient",
            "id": r.patient_id,
            "meta": meta(&r.meta),
            "identifier": [{
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": system,
                "value": r.patient_id,
            }],
        });
        for (system, value) in extra {
            if let Some(list) = v["identifier"].as_array_mut() {
                list.push(json!({
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                    "system": system,
                    "value": value,
                }));
            }
        }
        if r.family_name.is_some() || r.given_name.is_some() {
            let mut name = json!({"use": "official"});
            if let Some(f) = &r.family_name {
                name["family"] = json!(f);
            }
            if let Some(g) = &r.given_name {
                name["given"] = json!([g]);
            }
            v["name"] = json!([name]);
        }
        if let Some(s) = &r.sex {
            v["gender"] = json!(s);
        }
        if let Some(b) = r.birth_date {
            v["birthDate"] = json!(b.format("%Y-%m-%d").to_string());
        }
        if let Some(d) = r.death_time {
            v["deceasedDateTime"] = json!(iso(d));
        }
        if let Some(z) = &r.zip {
            v["address"] = json!([{"postalCode": z}]);
        }
        if let Some(c) = &primary {
            v["generalPractitioner"] = json!([reference("Practitioner", c)]);
        }
        push(&mut out[0], &v);
    }
    for e in &p.encounters {
        let (class_code, class_display) = match e.class.as_str() {
            encounter_class::INPATIENT => ("IMP", "inpatient encounter"),
            encounter_class::EMERGENCY => ("EMER", "emergency"),
            _ => ("AMB", "ambulatory"),
        };
        let mut period = json!({"start": iso(e.admit_time)});
        if let Some(d) = e.discharge_time {
            period["end"] = json!(iso(d));
        }
        let mut v = json!({
            "resourceType": "Encounter",
            "id": e.encounter_id,
            "meta": meta(&e.meta),
            "status": if e.discharge_time.is_some() { "finished" } else { "in-progress" },
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": class_code,
                "display": class_display,
            },
            "subject": reference("Patient", &e.patient_id),
            "period": period,
        });
        if let Some(c) = &e.code {
            v["type"] = json!([concept(c)]);
        }
        if let Some((name, code, display)) = e.service.as_deref().and_then(vocab::service_by_name) {
            v["serviceType"] = json!({
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0069", "code": code, "display": display}],
                "text": name,
            });
        }
        let mut hospitalization = serde_json::Map::new();
        if let Some(kind) = &e.admission_type {
            let (code, display, source, source_display) = match kind.as_str() {
                "emergency" => (
                    "EM",
                    "emergency",
                    "emd",
                    "From accident/emergency department",
                ),
                "urgent" => ("UR", "urgent", "emd", "From accident/emergency department"),
                _ => ("EL", "elective", "gp", "General Practitioner referral"),
            };
            v["priority"] = json!({
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority", "code": code, "display": display}],
                "text": kind,
            });
            hospitalization.insert(
                "admitSource".into(),
                json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": source, "display": source_display}]}),
            );
        }
        if let Some((code, display, _)) = e
            .discharge_disposition
            .as_deref()
            .and_then(vocab::disposition_by_name)
        {
            hospitalization.insert(
                "dischargeDisposition".into(),
                json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition", "code": code, "display": display}]}),
            );
        }
        if !hospitalization.is_empty() {
            v["hospitalization"] = Value::Object(hospitalization);
        }
        // The attending row of the same version: valid from the admission, closed iff the
        // encounter is.
        let attending = p.care_team.iter().find(|m| {
            m.role.as_deref() == Some("attending")
                && m.valid_from == e.admit_time
                && m.valid_to == e.discharge_time
        });
        if let Some(m) = attending {
            let mut period = json!({"start": iso(m.valid_from)});
            if let Some(to) = m.valid_to {
                period["end"] = json!(iso(to));
            }
            let (family, given) = vocab::clinician_name(&m.clinician_id);
            v["participant"] = json!([{
                "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND", "display": "attender"}]}],
                "period": period,
                "individual": {"reference": format!("Practitioner/{}", m.clinician_id), "display": format!("{given} {family}")},
            }]);
        }
        push(&mut out[1], &v);
    }
    for o in &p.observations {
        let mut v = json!({
            "resourceType": "Observation",
            "id": o.observation_id,
            "meta": meta(&o.meta),
            "status": o.status.as_deref().unwrap_or("final"),
            "code": concept(&o.code),
            "subject": reference("Patient", &o.patient_id),
            "effectiveDateTime": iso(o.effective_time),
            "issued": iso(o.meta.known_at),
        });
        if let Some(c) = &o.category {
            v["category"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": c}]}]);
        }
        if let Some(e) = &o.encounter_id {
            v["encounter"] = reference("Encounter", e);
        }
        if let Some(x) = o.value_num {
            let mut q = json!({"value": x});
            if let Some(u) = &o.unit {
                q["unit"] = json!(u);
                q["system"] = json!("http://unitsofmeasure.org");
                q["code"] = json!(u);
            }
            v["valueQuantity"] = q;
        } else if let Some(t) = &o.value_text {
            v["valueString"] = json!(t);
        }
        push(&mut out[2], &v);
    }
    for c in &p.conditions {
        let resolved = c.abatement_time.is_some();
        let mut v = json!({
            "resourceType": "Condition",
            "id": c.condition_id,
            "meta": meta(&c.meta),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": if resolved { "resolved" } else { "active" }}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}],
            "code": concept(&c.code),
            "subject": reference("Patient", &c.patient_id),
            "onsetDateTime": iso(c.onset_time),
            "recordedDate": iso(c.meta.known_at),
        });
        if let Some(e) = &c.encounter_id {
            v["encounter"] = reference("Encounter", e);
        }
        if let Some(a) = c.abatement_time {
            v["abatementDateTime"] = json!(iso(a));
        }
        push(&mut out[3], &v);
    }
    for r in &p.procedures {
        let mut period = json!({"start": iso(r.performed_time)});
        if let Some(e) = r.performed_end {
            period["end"] = json!(iso(e));
        }
        let mut v = json!({
            "resourceType": "Procedure",
            "id": r.procedure_id,
            "meta": meta(&r.meta),
            "status": "completed",
            "code": concept(&r.code),
            "subject": reference("Patient", &r.patient_id),
            "performedPeriod": period,
        });
        if let Some(e) = &r.encounter_id {
            v["encounter"] = reference("Encounter", e);
        }
        push(&mut out[4], &v);
    }
    for m in &p.medications {
        let mut bounds = json!({"start": iso(m.start_time)});
        if let Some(e) = m.end_time {
            bounds["end"] = json!(iso(e));
        }
        let mut v = json!({
            "resourceType": "MedicationRequest",
            "id": m.medication_id,
            "meta": meta(&m.meta),
            "status": m.status.as_deref().unwrap_or("active"),
            "intent": "order",
            "medicationCodeableConcept": concept(&m.code),
            "subject": reference("Patient", &m.patient_id),
            "authoredOn": iso(m.start_time),
            "dosageInstruction": [{"timing": {"repeat": {"boundsPeriod": bounds}}}],
        });
        if let Some(e) = &m.encounter_id {
            v["encounter"] = reference("Encounter", e);
        }
        push(&mut out[5], &v);
    }
    out
}

impl ChunkWriter for FhirWriter {
    fn write_chunk(&mut self, _index: usize, chunk: Vec<CuratedTables>) -> Result<()> {
        let rendered: Vec<[Vec<u8>; 6]> = chunk.par_iter().map(render).collect();
        for patient in rendered {
            for (file, bytes) in self.files.iter_mut().zip(patient) {
                file.write_all(&bytes)?;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<(PathBuf, u64)>> {
        self.files.into_iter().map(OutFile::finish).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate_patient, SynthOptions};

    #[test]
    fn every_line_is_a_resource_of_its_file_type() {
        let opts = SynthOptions::default();
        for i in 0..20 {
            let files = render(&generate_patient(&opts, i));
            for (kind, bytes) in TYPES.iter().zip(files) {
                for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    let v: Value = serde_json::from_slice(line).expect("json");
                    assert_eq!(v["resourceType"], *kind);
                    assert!(v["meta"]["lastUpdated"]
                        .as_str()
                        .is_some_and(|s| s.ends_with('Z')));
                }
            }
        }
    }

    #[test]
    fn a_finished_inpatient_encounter_carries_disposition_and_attending() {
        let opts = SynthOptions::default();
        let found = (0..300).any(|i| {
            let files = render(&generate_patient(&opts, i));
            files[1]
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .any(|line| {
                    let v: Value = serde_json::from_slice(line).expect("json");
                    v["class"]["code"] == "IMP"
                        && v["status"] == "finished"
                        && v["hospitalization"]["dischargeDisposition"]["coding"][0]["code"]
                            .is_string()
                        && v["participant"][0]["period"]["end"] == v["period"]["end"]
                        && v["priority"]["coding"][0]["code"].is_string()
                })
        });
        assert!(found);
    }
}
