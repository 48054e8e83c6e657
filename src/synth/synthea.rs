//! The Synthea v3 CSV layout: the six files Ward's Synthea mapping reads, with Synthea's
//! exact headers (`../shared/data/synthea-csv`), blank where the cohort has nothing, and
//! the `SYSTEM` column newer Synthea exports add to `conditions.csv` (the cohort's
//! diagnoses are ICD-10-CM, not Synthea's usual SNOMED CT).
//!
//! Synthea CSV has no knowledge time and no versions, so only the rows still true at the
//! end are written (no retracted row; a corrected lab appears with its corrected value),
//! and patients, conditions and death dates are dates without a time of day.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{iso, ChunkWriter, OutFile};
use crate::curated::{code_system, CuratedTables};
use crate::error::Result;

const FILES: [(&str, &[&str]); 6] = [
    (
        "patients.csv",
        &[
            "Id",
            "BIRTHDATE",
            "DEATHDATE",
            "SSN",
            "DRIVERS",
            "PASSPORT",
            "PREFIX",
            "FIRST",
            "LAST",
            "SUFFIX",
            "MAIDEN",
            "MARITAL",
            "RACE",
            "ETHNICITY",
            "GENDER",
            "BIRTHPLACE",
            "ADDRESS",
            "CITY",
            "STATE",
            "COUNTY",
            "ZIP",
            "LAT",
            "LON",
            "HEALTHCARE_EXPENSES",
            "HEALTHCARE_COVERAGE",
        ],
    ),
    (
        "encounters.csv",
        &[
            "Id",
            "START",
            "STOP",
            "PATIENT",
            "ORGANIZATION",
            "PROVIDER",
            "PAYER",
            "ENCOUNTERCLASS",
            "CODE",
            "DESCRIPTION",
            "BASE_ENCOUNTER_COST",
            "TOTAL_CLAIM_COST",
            "PAYER_COVERAGE",
            "REASONCODE",
            "REASONDESCRIPTION",
        ],
    ),
    (
        "conditions.csv",
        &[
            "START",
            "STOP",
            "PATIENT",
            "ENCOUNTER",
            "SYSTEM",
            "CODE",
            "DESCRIPTION",
        ],
    ),
    (
        "observations.csv",
        &[
            "DATE",
            "PATIENT",
            "ENCOUNTER",
            "CATEGORY",
            "CODE",
            "DESCRIPTION",
            "VALUE",
            "UNITS",
            "TYPE",
        ],
    ),
    (
        "procedures.csv",
        &[
            "START",
            "STOP",
            "PATIENT",
            "ENCOUNTER",
            "CODE",
            "DESCRIPTION",
            "BASE_COST",
            "REASONCODE",
            "REASONDESCRIPTION",
        ],
    ),
    (
        "medications.csv",
        &[
            "START",
            "STOP",
            "PATIENT",
            "PAYER",
            "ENCOUNTER",
            "CODE",
            "DESCRIPTION",
            "BASE_COST",
            "PAYER_COVERAGE",
            "DISPENSES",
            "TOTALCOST",
            "REASONCODE",
            "REASONDESCRIPTION",
        ],
    ),
];

/// The writer of `--format synthea`.
pub(crate) struct SyntheaWriter {
    files: Vec<OutFile>,
}

impl SyntheaWriter {
    pub(crate) fn create(dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        for (name, header) in FILES {
            let mut f = OutFile::create(dir.join(name))?;
            f.write_all(&csv_line(header.iter().map(|h| h.to_string()).collect()))?;
            files.push(f);
        }
        Ok(SyntheaWriter { files })
    }
}

/// One CSV record with Synthea's LF line end; a field is quoted (RFC 4180, quotes
/// doubled) only when it holds a comma, a quote or a line break, as Synthea does.
fn csv_line(fields: Vec<String>) -> Vec<u8> {
    let mut line = Vec::with_capacity(fields.iter().map(|f| f.len() + 1).sum::<usize>() + 1);
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        if f.contains([',', '"', '\n', '\r']) {
            line.push(b'"');
            line.extend(f.replace('"', "\"\"").bytes());
            line.push(b'"');
        } else {
            line.extend(f.bytes());
        }
    }
    line.push(b'\n');
    line
}

/// The SYSTEM column of conditions.csv, as newer Synthea exports write it: Synthea names
/// its SNOMED CT codes `SNOMED-CT`; the cohort's diagnoses are ICD-10-CM, which an export
/// without the column would pass off as SNOMED CT.
fn condition_system(system: &str) -> &str {
    match system {
        code_system::SNOMED => "SNOMED-CT",
        code_system::ICD10CM => "ICD-10-CM",
        other => other,
    }
}

fn opt(v: Option<String>) -> String {
    v.unwrap_or_default()
}

/// The six files' bytes for one patient.
fn render(p: &CuratedTables) -> [Vec<u8>; 6] {
    let mut out: [Vec<u8>; 6] = Default::default();
    let date = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d").to_string();
    for r in p.patients.iter().filter(|r| r.meta.retracted_at.is_none()) {
        let mut f = vec![String::new(); 25];
        f[0] = r.patient_id.clone();
        f[1] = opt(r.birth_date.map(|d| d.format("%Y-%m-%d").to_string()));
        f[2] = opt(r.death_time.map(date));
        f[7] = opt(r.given_name.clone());
        f[8] = opt(r.family_name.clone());
        f[14] = match r.sex.as_deref() {
            Some("female") => "F".into(),
            Some("male") => "M".into(),
            _ => String::new(),
        };
        f[20] = opt(r.zip.clone());
        out[0].extend(csv_line(f));
    }
    for e in p
        .encounters
        .iter()
        .filter(|r| r.meta.retracted_at.is_none())
    {
        let attending = p
            .care_team
            .iter()
            .find(|m| {
                m.role.as_deref() == Some("attending")
                    && m.valid_from == e.admit_time
                    && m.meta.retracted_at.is_none()
            })
            .map(|m| m.clinician_id.clone());
        let mut f = vec![String::new(); 15];
        f[0] = e.encounter_id.clone();
        f[1] = iso(e.admit_time);
        f[2] = opt(e.discharge_time.map(iso));
        f[3] = e.patient_id.clone();
        f[5] = opt(attending);
        f[7] = e.class.clone();
        f[8] = opt(e.code.as_ref().map(|c| c.code.clone()));
        f[9] = opt(e.code.as_ref().and_then(|c| c.display.clone()));
        out[1].extend(csv_line(f));
    }
    for c in p
        .conditions
        .iter()
        .filter(|r| r.meta.retracted_at.is_none())
    {
        out[2].extend(csv_line(vec![
            date(c.onset_time),
            opt(c.abatement_time.map(date)),
            c.patient_id.clone(),
            opt(c.encounter_id.clone()),
            condition_system(&c.code.system).to_string(),
            c.code.code.clone(),
            opt(c.code.display.clone()),
        ]));
    }
    for o in p
        .observations
        .iter()
        .filter(|r| r.meta.retracted_at.is_none())
    {
        let (value, kind) = match (o.value_num, &o.value_text) {
            (Some(v), _) => (v.to_string(), "numeric"),
            (None, Some(t)) => (t.clone(), "text"),
            (None, None) => (String::new(), ""),
        };
        out[3].extend(csv_line(vec![
            iso(o.effective_time),
            o.patient_id.clone(),
            opt(o.encounter_id.clone()),
            opt(o.category.clone()),
            o.code.code.clone(),
            opt(o.code.display.clone()),
            value,
            opt(o.unit.clone()),
            kind.to_string(),
        ]));
    }
    for r in p
        .procedures
        .iter()
        .filter(|r| r.meta.retracted_at.is_none())
    {
        let mut f = vec![String::new(); 9];
        f[0] = iso(r.performed_time);
        f[1] = opt(r.performed_end.map(iso));
        f[2] = r.patient_id.clone();
        f[3] = opt(r.encounter_id.clone());
        f[4] = r.code.code.clone();
        f[5] = opt(r.code.display.clone());
        out[4].extend(csv_line(f));
    }
    for m in p
        .medications
        .iter()
        .filter(|r| r.meta.retracted_at.is_none())
    {
        let mut f = vec![String::new(); 13];
        f[0] = iso(m.start_time);
        f[1] = opt(m.end_time.map(iso));
        f[2] = m.patient_id.clone();
        f[4] = opt(m.encounter_id.clone());
        f[5] = m.code.code.clone();
        f[6] = opt(m.code.display.clone());
        out[5].extend(csv_line(f));
    }
    out
}

impl ChunkWriter for SyntheaWriter {
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
