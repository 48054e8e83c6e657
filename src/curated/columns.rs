//! [`CuratedColumns`]: curated rows appended to Arrow column builders as they come.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, RecordBatch, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use chrono::{DateTime, NaiveDate, Utc};

use super::rows::{
    Allergy, CareTeamMember, Coding, Condition, Consent, DiagnosticReport, Encounter, Immunization,
    Medication, MedicationAdministration, Observation, Patient, PatientIdentifier, Procedure,
    RowMeta,
};
use super::schema::Table;
use super::tables::retracted;
use super::{date_to_days, RowSink};

/// Curated rows held as Arrow column builders, one set per table: a row costs its bytes in
/// the columns, not a struct and a heap string per field. Parsers fill one per run of input
/// in parallel; [`CuratedColumns::concat`] joins them into one record batch per table.
pub struct CuratedColumns {
    /// One per table, in [`Table::ALL`] order.
    pub(super) tables: Vec<Columns>,
}

impl Default for CuratedColumns {
    fn default() -> Self {
        CuratedColumns {
            tables: Table::ALL.iter().map(|_| Columns::new(0)).collect(),
        }
    }
}

impl CuratedColumns {
    pub(super) fn table(&mut self, table: Table) -> Option<&mut Columns> {
        self.tables.get_mut(table as usize)
    }

    /// The parts' rows one after the other, one record batch per non-empty table, in
    /// [`Table::ALL`] order. The columns are joined one after the other: on two cores,
    /// joining them in parallel measured twice as slow (both threads fault in fresh pages
    /// for the output at once).
    ///
    /// # Errors
    /// Only if the builders disagree with the schema, which would be a bug in this module.
    pub fn concat(parts: Vec<CuratedColumns>) -> Result<Vec<(Table, RecordBatch)>, ArrowError> {
        // Per table, the parts' builders, to be finished into arrays (a list per column).
        let mut per_table: Vec<Vec<Columns>> = Table::ALL.iter().map(|_| Vec::new()).collect();
        for part in parts {
            for (list, cols) in per_table.iter_mut().zip(part.tables) {
                if cols.len() > 0 {
                    list.push(cols);
                }
            }
        }
        Table::ALL
            .iter()
            .zip(per_table)
            .filter(|(_, list)| !list.is_empty())
            .map(|(table, list)| {
                let schema = table.schema();
                let parts: Vec<Vec<ArrayRef>> =
                    list.into_iter().map(|cols| cols.arrays(&schema)).collect();
                let columns: Vec<ArrayRef> = match <[_; 1]>::try_from(parts) {
                    // One part: its arrays are the table's.
                    Ok([one]) => one,
                    Err(parts) => (0..schema.fields().len())
                        .map(|c| {
                            let arrays: Vec<&dyn arrow::array::Array> = parts
                                .iter()
                                .filter_map(|p| p.get(c))
                                .map(|a| a.as_ref())
                                .collect();
                            arrow::compute::concat(&arrays)
                        })
                        .collect::<Result<_, _>>()?,
                };
                Ok((*table, RecordBatch::try_new(schema, columns)?))
            })
            .collect()
    }
}

impl RowSink for CuratedColumns {
    fn rows(&self, table: Table) -> usize {
        self.tables.get(table as usize).map_or(0, Columns::len)
    }
    fn patient(&mut self, r: Patient) {
        if let Some(b) = self.table(Table::Patients) {
            b.patient(&r);
        }
    }
    fn encounter(&mut self, r: Encounter) {
        if let Some(b) = self.table(Table::Encounters) {
            b.encounter(&r);
        }
    }
    fn observation(&mut self, r: Observation) {
        if let Some(b) = self.table(Table::Observations) {
            b.observation(&r);
        }
    }
    fn condition(&mut self, r: Condition) {
        if let Some(b) = self.table(Table::Conditions) {
            b.condition(&r);
        }
    }
    fn procedure(&mut self, r: Procedure) {
        if let Some(b) = self.table(Table::Procedures) {
            b.procedure(&r);
        }
    }
    fn medication(&mut self, r: Medication) {
        if let Some(b) = self.table(Table::Medications) {
            b.medication(&r);
        }
    }
    fn care_team(&mut self, r: CareTeamMember) {
        if let Some(b) = self.table(Table::CareTeam) {
            b.care_team(&r);
        }
    }
    fn consent(&mut self, r: Consent) {
        if let Some(b) = self.table(Table::Consent) {
            b.consent(&r);
        }
    }
    fn immunization(&mut self, r: Immunization) {
        if let Some(b) = self.table(Table::Immunizations) {
            b.immunization(&r);
        }
    }
    fn allergy(&mut self, r: Allergy) {
        if let Some(b) = self.table(Table::Allergies) {
            b.allergy(&r);
        }
    }
    fn diagnostic_report(&mut self, r: DiagnosticReport) {
        if let Some(b) = self.table(Table::DiagnosticReports) {
            b.diagnostic_report(&r);
        }
    }
    fn medication_administration(&mut self, r: MedicationAdministration) {
        if let Some(b) = self.table(Table::MedicationAdministrations) {
            b.medication_administration(&r);
        }
    }
    fn patient_identifier(&mut self, r: PatientIdentifier) {
        if let Some(b) = self.table(Table::PatientIdentifiers) {
            b.patient_identifier(&r);
        }
    }
    fn expect_rows(&mut self, rows: usize) {
        for t in &mut self.tables {
            t.rows = t.rows.max(rows);
        }
    }
    fn retract(&mut self, table: Table, row: usize, at: DateTime<Utc>) {
        let cell = self.table(table).and_then(|b| b.retracted.get_mut(row));
        if let Some(cell) = cell {
            let current = cell.and_then(DateTime::from_timestamp_micros);
            *cell = retracted(current, at).map(|t| t.timestamp_micros());
        }
    }
}

/// Column builders addressed by position, so each table's row method below stays one line a
/// column. A builder is created on first use with the type that use implies, sized for the
/// expected rows (and a guess at their text), so that it is not grown and copied row by row.
/// `retracted_at`, always the last column, is kept as plain values until the end so that a
/// later version can still retract a row.
pub(super) struct Columns {
    pub(super) rows: usize,
    pub(super) cols: Vec<Option<Col>>,
    pub(super) retracted: Vec<Option<i64>>,
}

pub(super) enum Col {
    Str(StringBuilder),
    Ts(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    F64(Float64Builder),
}

/// Bytes of text a string column reserves per row up front (ids are 36, codes fewer); past
/// that the builder grows as usual.
pub(super) const TEXT_BYTES_PER_ROW: usize = 16;

impl Columns {
    /// Builders for about `rows` rows.
    pub(super) fn new(rows: usize) -> Self {
        Columns {
            rows,
            cols: Vec::new(),
            retracted: Vec::new(),
        }
    }

    /// Rows appended so far (each row ends with its `meta`).
    pub(super) fn len(&self) -> usize {
        self.retracted.len()
    }

    pub(super) fn patient(&mut self, r: &Patient) {
        self.str(0, Some(&r.patient_id));
        self.date(1, r.birth_date);
        self.str(2, r.sex.as_deref());
        self.ts(3, r.death_time);
        self.str(4, r.zip.as_deref());
        self.str(5, r.given_name.as_deref());
        self.str(6, r.family_name.as_deref());
        self.meta(7, &r.meta);
    }

    pub(super) fn encounter(&mut self, r: &Encounter) {
        self.str(0, Some(&r.encounter_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, Some(&r.class));
        self.ts(3, Some(r.admit_time));
        self.ts(4, r.discharge_time);
        self.str(5, r.admission_type.as_deref());
        self.str(6, r.discharge_disposition.as_deref());
        self.str(7, r.service.as_deref());
        self.str(8, r.code.as_ref().map(|c| c.system.as_str()));
        self.str(9, r.code.as_ref().map(|c| c.code.as_str()));
        self.str(10, r.code.as_ref().and_then(|c| c.display.as_deref()));
        self.meta(11, &r.meta);
    }

    pub(super) fn observation(&mut self, r: &Observation) {
        self.str(0, Some(&r.observation_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.str(3, r.category.as_deref());
        self.coding(4, &r.code);
        self.f64(7, r.value_num);
        self.str(8, r.value_text.as_deref());
        self.str(9, r.unit.as_deref());
        self.f64(10, r.value_original);
        self.str(11, r.unit_original.as_deref());
        self.ts(12, Some(r.effective_time));
        self.str(13, r.status.as_deref());
        self.meta(14, &r.meta);
    }

    pub(super) fn condition(&mut self, r: &Condition) {
        self.str(0, Some(&r.condition_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.coding(3, &r.code);
        self.ts(6, Some(r.onset_time));
        self.ts(7, r.abatement_time);
        self.str(8, r.diagnosis_type.as_deref());
        self.meta(9, &r.meta);
    }

    pub(super) fn procedure(&mut self, r: &Procedure) {
        self.str(0, Some(&r.procedure_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.coding(3, &r.code);
        self.ts(6, Some(r.performed_time));
        self.ts(7, r.performed_end);
        self.meta(8, &r.meta);
    }

    pub(super) fn medication(&mut self, r: &Medication) {
        self.str(0, Some(&r.medication_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.coding(3, &r.code);
        self.ts(6, Some(r.start_time));
        self.ts(7, r.end_time);
        self.str(8, r.status.as_deref());
        self.meta(9, &r.meta);
    }

    pub(super) fn care_team(&mut self, r: &CareTeamMember) {
        self.str(0, Some(&r.patient_id));
        self.str(1, Some(&r.clinician_id));
        self.str(2, r.role.as_deref());
        self.ts(3, Some(r.valid_from));
        self.ts(4, r.valid_to);
        self.meta(5, &r.meta);
    }

    pub(super) fn consent(&mut self, r: &Consent) {
        self.str(0, Some(&r.consent_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, Some(&r.scope));
        self.str(3, Some(&r.decision));
        self.ts(4, r.period_start);
        self.ts(5, r.period_end);
        self.ts(6, r.decided_at);
        self.meta(7, &r.meta);
    }

    pub(super) fn immunization(&mut self, r: &Immunization) {
        self.str(0, Some(&r.immunization_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.coding(3, &r.code);
        self.ts(6, Some(r.occurrence_time));
        self.str(7, r.status.as_deref());
        self.meta(8, &r.meta);
    }

    pub(super) fn allergy(&mut self, r: &Allergy) {
        self.str(0, Some(&r.allergy_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.coding(3, &r.code);
        self.str(6, r.category.as_deref());
        self.str(7, r.criticality.as_deref());
        self.str(8, r.clinical_status.as_deref());
        self.str(9, r.verification_status.as_deref());
        self.ts(10, Some(r.onset_time));
        self.ts(11, r.recorded_time);
        self.meta(12, &r.meta);
    }

    pub(super) fn diagnostic_report(&mut self, r: &DiagnosticReport) {
        self.str(0, Some(&r.report_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.str(3, r.category.as_deref());
        self.coding(4, &r.code);
        self.ts(7, Some(r.effective_time));
        self.ts(8, r.issued_time);
        self.str(9, r.status.as_deref());
        self.str(10, r.conclusion.as_deref());
        self.str(11, r.result_ids.as_deref());
        self.meta(12, &r.meta);
    }

    pub(super) fn medication_administration(&mut self, r: &MedicationAdministration) {
        self.str(0, Some(&r.administration_id));
        self.str(1, Some(&r.patient_id));
        self.str(2, r.encounter_id.as_deref());
        self.str(3, r.request_id.as_deref());
        self.coding(4, &r.code);
        self.ts(7, Some(r.start_time));
        self.ts(8, r.end_time);
        self.str(9, r.status.as_deref());
        self.f64(10, r.dose_value);
        self.str(11, r.dose_unit.as_deref());
        self.str(12, r.route.as_deref());
        self.meta(13, &r.meta);
    }

    pub(super) fn patient_identifier(&mut self, r: &PatientIdentifier) {
        self.str(0, Some(&r.patient_id));
        self.str(1, Some(&r.kind));
        self.str(2, Some(&r.system));
        self.str(3, Some(&r.value));
        self.str(4, r.type_code.as_deref());
        self.meta(5, &r.meta);
    }

    pub(super) fn slot(&mut self, i: usize, make: impl FnOnce(usize) -> Col) -> &mut Col {
        if self.cols.len() <= i {
            self.cols.resize_with(i + 1, || None);
        }
        let rows = self.rows;
        self.cols[i].get_or_insert_with(|| make(rows))
    }

    pub(super) fn str(&mut self, i: usize, v: Option<&str>) {
        let make = |n| Col::Str(StringBuilder::with_capacity(n, n * TEXT_BYTES_PER_ROW));
        if let Col::Str(b) = self.slot(i, make) {
            b.append_option(v);
        }
    }

    pub(super) fn ts(&mut self, i: usize, v: Option<DateTime<Utc>>) {
        let make = |n| Col::Ts(TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"));
        if let Col::Ts(b) = self.slot(i, make) {
            b.append_option(v.map(|t| t.timestamp_micros()));
        }
    }

    pub(super) fn date(&mut self, i: usize, v: Option<NaiveDate>) {
        if let Col::Date(b) = self.slot(i, |n| Col::Date(Date32Builder::with_capacity(n))) {
            b.append_option(v.map(date_to_days));
        }
    }

    pub(super) fn f64(&mut self, i: usize, v: Option<f64>) {
        if let Col::F64(b) = self.slot(i, |n| Col::F64(Float64Builder::with_capacity(n))) {
            b.append_option(v);
        }
    }

    pub(super) fn coding(&mut self, i: usize, c: &Coding) {
        self.str(i, Some(&c.system));
        self.str(i + 1, Some(&c.code));
        self.str(i + 2, c.display.as_deref());
    }

    /// The four shared columns from `i`; `retracted_at` (`i + 3`) is kept aside.
    pub(super) fn meta(&mut self, i: usize, m: &RowMeta) {
        self.str(i, Some(&m.source_system));
        self.str(i + 1, Some(&m.source_id));
        self.ts(i + 2, Some(m.known_at));
        if self.retracted.capacity() == 0 {
            self.retracted.reserve(self.rows);
        }
        self.retracted
            .push(m.retracted_at.map(|t| t.timestamp_micros()));
    }

    /// The columns as arrays of `schema`'s types (a column never appended to is empty).
    pub(super) fn arrays(self, schema: &SchemaRef) -> Vec<ArrayRef> {
        let n = schema.fields().len();
        let mut cols = self.cols;
        cols.resize_with(n.saturating_sub(1), || None);
        let mut arrays: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .zip(cols)
            .map(|(field, col)| match col {
                None => arrow::array::new_empty_array(field.data_type()),
                Some(Col::Str(mut b)) => Arc::new(b.finish()) as ArrayRef,
                Some(Col::Ts(mut b)) => Arc::new(b.finish()) as ArrayRef,
                Some(Col::Date(mut b)) => Arc::new(b.finish()) as ArrayRef,
                Some(Col::F64(mut b)) => Arc::new(b.finish()) as ArrayRef,
            })
            .collect();
        let retracted = TimestampMicrosecondArray::from(self.retracted).with_timezone("UTC");
        arrays.push(Arc::new(retracted));
        arrays
    }

    pub(super) fn finish(self, schema: SchemaRef) -> Result<RecordBatch, ArrowError> {
        let arrays = self.arrays(&schema);
        RecordBatch::try_new(schema, arrays)
    }
}
