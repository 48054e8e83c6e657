//! [`CuratedTables`]: curated rows held as row structs, and their record batches.

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};

use super::columns::Columns;
use super::rows::{
    Allergy, CareTeamMember, Condition, Consent, DiagnosticReport, Encounter, Immunization,
    Medication, MedicationAdministration, Observation, Patient, PatientIdentifier, Procedure,
    RowMeta,
};
use super::schema::Table;
use super::RowSink;

/// The rows of every curated table, as produced by one ingest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CuratedTables {
    /// `patients` rows.
    pub patients: Vec<Patient>,
    /// `encounters` rows.
    pub encounters: Vec<Encounter>,
    /// `observations` rows.
    pub observations: Vec<Observation>,
    /// `conditions` rows.
    pub conditions: Vec<Condition>,
    /// `procedures` rows.
    pub procedures: Vec<Procedure>,
    /// `medications` rows.
    pub medications: Vec<Medication>,
    /// `care_team` rows.
    pub care_team: Vec<CareTeamMember>,
    /// `consent` rows.
    pub consent: Vec<Consent>,
    /// `immunizations` rows.
    pub immunizations: Vec<Immunization>,
    /// `allergies` rows.
    pub allergies: Vec<Allergy>,
    /// `diagnostic_reports` rows.
    pub diagnostic_reports: Vec<DiagnosticReport>,
    /// `medication_administrations` rows.
    pub medication_administrations: Vec<MedicationAdministration>,
    /// `patient_identifiers` rows.
    pub patient_identifiers: Vec<PatientIdentifier>,
}

impl CuratedTables {
    /// Number of rows of one table.
    pub fn len(&self, table: Table) -> usize {
        match table {
            Table::Patients => self.patients.len(),
            Table::Encounters => self.encounters.len(),
            Table::Observations => self.observations.len(),
            Table::Conditions => self.conditions.len(),
            Table::Procedures => self.procedures.len(),
            Table::Medications => self.medications.len(),
            Table::CareTeam => self.care_team.len(),
            Table::Consent => self.consent.len(),
            Table::Immunizations => self.immunizations.len(),
            Table::Allergies => self.allergies.len(),
            Table::DiagnosticReports => self.diagnostic_reports.len(),
            Table::MedicationAdministrations => self.medication_administrations.len(),
            Table::PatientIdentifiers => self.patient_identifiers.len(),
        }
    }

    /// True when no table has a row.
    pub fn is_empty(&self) -> bool {
        Table::ALL.iter().all(|t| self.len(*t) == 0)
    }

    /// Appends the rows of `other`.
    pub fn extend(&mut self, other: CuratedTables) {
        self.patients.extend(other.patients);
        self.encounters.extend(other.encounters);
        self.observations.extend(other.observations);
        self.conditions.extend(other.conditions);
        self.procedures.extend(other.procedures);
        self.medications.extend(other.medications);
        self.care_team.extend(other.care_team);
        self.consent.extend(other.consent);
        self.immunizations.extend(other.immunizations);
        self.allergies.extend(other.allergies);
        self.diagnostic_reports.extend(other.diagnostic_reports);
        self.medication_administrations
            .extend(other.medication_administrations);
        self.patient_identifiers.extend(other.patient_identifiers);
    }

    /// The parts' rows one after the other, table by table, each table allocated once at
    /// its final size (appending part by part would copy the rows of large tables as they
    /// grow); the tables are joined in parallel.
    pub fn concat(parts: Vec<CuratedTables>) -> CuratedTables {
        fn join<T: Send>(lists: Vec<Vec<T>>) -> Vec<T> {
            let mut all = Vec::with_capacity(lists.iter().map(Vec::len).sum());
            for mut list in lists {
                all.append(&mut list);
            }
            all
        }
        let n = parts.len();
        // The tables most sources leave empty, joined after the others.
        let (mut im, mut al, mut dr, mut ma, mut pi) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut pa, mut en, mut ob, mut co, mut pr, mut me, mut ct, mut cs) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for p in parts {
            pa.push(p.patients);
            en.push(p.encounters);
            ob.push(p.observations);
            co.push(p.conditions);
            pr.push(p.procedures);
            me.push(p.medications);
            ct.push(p.care_team);
            cs.push(p.consent);
            im.push(p.immunizations);
            al.push(p.allergies);
            dr.push(p.diagnostic_reports);
            ma.push(p.medication_administrations);
            pi.push(p.patient_identifiers);
        }
        // Observations are usually most of the rows: one task, the rest in the other.
        let (
            observations,
            (((patients, encounters), (conditions, procedures)), (medications, care_team)),
        ) = rayon::join(
            || join(ob),
            || {
                rayon::join(
                    || rayon::join(|| (join(pa), join(en)), || (join(co), join(pr))),
                    || (join(me), join(ct)),
                )
            },
        );
        CuratedTables {
            patients,
            encounters,
            observations,
            conditions,
            procedures,
            medications,
            care_team,
            consent: join(cs),
            immunizations: join(im),
            allergies: join(al),
            diagnostic_reports: join(dr),
            medication_administrations: join(ma),
            patient_identifiers: join(pi),
        }
    }

    /// Sorts every table into its canonical order (by id, then source, then knowledge time),
    /// so that the same rows give the same dataset hash whatever order the sources listed
    /// them in.
    pub fn sort_canonical(&mut self) {
        fn key(m: &RowMeta) -> (&str, &str, i64) {
            (
                &m.source_system,
                &m.source_id,
                m.known_at.timestamp_micros(),
            )
        }
        self.patients
            .sort_by(|a, b| (&a.patient_id, key(&a.meta)).cmp(&(&b.patient_id, key(&b.meta))));
        self.encounters.sort_by(|a, b| {
            (&a.patient_id, a.admit_time, &a.encounter_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                b.admit_time,
                &b.encounter_id,
                key(&b.meta),
            ))
        });
        self.observations.sort_by(|a, b| {
            (
                &a.patient_id,
                a.effective_time,
                &a.observation_id,
                key(&a.meta),
            )
                .cmp(&(
                    &b.patient_id,
                    b.effective_time,
                    &b.observation_id,
                    key(&b.meta),
                ))
        });
        self.conditions.sort_by(|a, b| {
            (&a.patient_id, a.onset_time, &a.condition_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                b.onset_time,
                &b.condition_id,
                key(&b.meta),
            ))
        });
        self.procedures.sort_by(|a, b| {
            (
                &a.patient_id,
                a.performed_time,
                &a.procedure_id,
                key(&a.meta),
            )
                .cmp(&(
                    &b.patient_id,
                    b.performed_time,
                    &b.procedure_id,
                    key(&b.meta),
                ))
        });
        self.medications.sort_by(|a, b| {
            (&a.patient_id, a.start_time, &a.medication_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                b.start_time,
                &b.medication_id,
                key(&b.meta),
            ))
        });
        self.care_team.sort_by(|a, b| {
            (&a.patient_id, a.valid_from, &a.clinician_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                b.valid_from,
                &b.clinician_id,
                key(&b.meta),
            ))
        });
        self.consent.sort_by(|a, b| {
            (&a.patient_id, &a.consent_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                &b.consent_id,
                key(&b.meta),
            ))
        });
        self.immunizations.sort_by(|a, b| {
            (
                &a.patient_id,
                a.occurrence_time,
                &a.immunization_id,
                key(&a.meta),
            )
                .cmp(&(
                    &b.patient_id,
                    b.occurrence_time,
                    &b.immunization_id,
                    key(&b.meta),
                ))
        });
        self.allergies.sort_by(|a, b| {
            (&a.patient_id, a.onset_time, &a.allergy_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                b.onset_time,
                &b.allergy_id,
                key(&b.meta),
            ))
        });
        self.diagnostic_reports.sort_by(|a, b| {
            (&a.patient_id, a.effective_time, &a.report_id, key(&a.meta)).cmp(&(
                &b.patient_id,
                b.effective_time,
                &b.report_id,
                key(&b.meta),
            ))
        });
        self.medication_administrations.sort_by(|a, b| {
            (
                &a.patient_id,
                a.start_time,
                &a.administration_id,
                key(&a.meta),
            )
                .cmp(&(
                    &b.patient_id,
                    b.start_time,
                    &b.administration_id,
                    key(&b.meta),
                ))
        });
        self.patient_identifiers.sort_by(|a, b| {
            (&a.patient_id, &a.kind, &a.system, &a.value, key(&a.meta)).cmp(&(
                &b.patient_id,
                &b.kind,
                &b.system,
                &b.value,
                key(&b.meta),
            ))
        });
    }

    /// Every non-empty table's record batch, in [`Table::ALL`] order, built in parallel
    /// (one table a task).
    ///
    /// # Errors
    /// An Arrow error building a batch.
    pub fn to_batches(&self) -> Result<Vec<(Table, RecordBatch)>, ArrowError> {
        use rayon::prelude::*;
        Table::ALL
            .as_slice()
            .par_iter()
            .filter(|t| self.len(**t) > 0)
            .map(|t| self.to_batch(*t).map(|b| (*t, b)))
            .collect()
    }

    /// Builds the record batch of one table, in the current row order.
    ///
    /// # Errors
    /// Only if the builders disagree with the schema, which would be a bug in this module.
    pub fn to_batch(&self, table: Table) -> Result<RecordBatch, ArrowError> {
        let mut b = Columns::new(self.len(table));
        match table {
            Table::Patients => self.patients.iter().for_each(|r| b.patient(r)),
            Table::Encounters => self.encounters.iter().for_each(|r| b.encounter(r)),
            Table::Observations => self.observations.iter().for_each(|r| b.observation(r)),
            Table::Conditions => self.conditions.iter().for_each(|r| b.condition(r)),
            Table::Procedures => self.procedures.iter().for_each(|r| b.procedure(r)),
            Table::Medications => self.medications.iter().for_each(|r| b.medication(r)),
            Table::CareTeam => self.care_team.iter().for_each(|r| b.care_team(r)),
            Table::Consent => self.consent.iter().for_each(|r| b.consent(r)),
            Table::Immunizations => self.immunizations.iter().for_each(|r| b.immunization(r)),
            Table::Allergies => self.allergies.iter().for_each(|r| b.allergy(r)),
            Table::DiagnosticReports => self
                .diagnostic_reports
                .iter()
                .for_each(|r| b.diagnostic_report(r)),
            Table::MedicationAdministrations => self
                .medication_administrations
                .iter()
                .for_each(|r| b.medication_administration(r)),
            Table::PatientIdentifiers => self
                .patient_identifiers
                .iter()
                .for_each(|r| b.patient_identifier(r)),
        }
        b.finish(table.schema())
    }
}

/// `retracted_at` after a retraction at `at`: the earlier of the two.
pub(super) fn retracted(
    current: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    Some(current.map_or(at, |r| r.min(at)))
}

impl RowSink for CuratedTables {
    fn rows(&self, table: Table) -> usize {
        self.len(table)
    }
    fn patient(&mut self, r: Patient) {
        self.patients.push(r);
    }
    fn encounter(&mut self, r: Encounter) {
        self.encounters.push(r);
    }
    fn observation(&mut self, r: Observation) {
        self.observations.push(r);
    }
    fn condition(&mut self, r: Condition) {
        self.conditions.push(r);
    }
    fn procedure(&mut self, r: Procedure) {
        self.procedures.push(r);
    }
    fn medication(&mut self, r: Medication) {
        self.medications.push(r);
    }
    fn care_team(&mut self, r: CareTeamMember) {
        self.care_team.push(r);
    }
    fn consent(&mut self, r: Consent) {
        self.consent.push(r);
    }
    fn immunization(&mut self, r: Immunization) {
        self.immunizations.push(r);
    }
    fn allergy(&mut self, r: Allergy) {
        self.allergies.push(r);
    }
    fn diagnostic_report(&mut self, r: DiagnosticReport) {
        self.diagnostic_reports.push(r);
    }
    fn medication_administration(&mut self, r: MedicationAdministration) {
        self.medication_administrations.push(r);
    }
    fn patient_identifier(&mut self, r: PatientIdentifier) {
        self.patient_identifiers.push(r);
    }
    fn retract(&mut self, table: Table, row: usize, at: DateTime<Utc>) {
        let meta = match table {
            Table::Patients => self.patients.get_mut(row).map(|r| &mut r.meta),
            Table::Encounters => self.encounters.get_mut(row).map(|r| &mut r.meta),
            Table::Observations => self.observations.get_mut(row).map(|r| &mut r.meta),
            Table::Conditions => self.conditions.get_mut(row).map(|r| &mut r.meta),
            Table::Procedures => self.procedures.get_mut(row).map(|r| &mut r.meta),
            Table::Medications => self.medications.get_mut(row).map(|r| &mut r.meta),
            Table::CareTeam => self.care_team.get_mut(row).map(|r| &mut r.meta),
            Table::Consent => self.consent.get_mut(row).map(|r| &mut r.meta),
            Table::Immunizations => self.immunizations.get_mut(row).map(|r| &mut r.meta),
            Table::Allergies => self.allergies.get_mut(row).map(|r| &mut r.meta),
            Table::DiagnosticReports => self.diagnostic_reports.get_mut(row).map(|r| &mut r.meta),
            Table::MedicationAdministrations => self
                .medication_administrations
                .get_mut(row)
                .map(|r| &mut r.meta),
            Table::PatientIdentifiers => self.patient_identifiers.get_mut(row).map(|r| &mut r.meta),
        };
        if let Some(m) = meta {
            m.retracted_at = retracted(m.retracted_at, at);
        }
    }
}
