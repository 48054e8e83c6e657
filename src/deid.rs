//! De-identification of training sets by a declared policy (HIPAA Safe Harbor by default).
//!
//! For principals without `historical_identified`, a training set leaves Ward through
//! [`deidentify`]:
//! - patient id columns → a keyed BLAKE3 token `pt_<32 hex>` (same patient and key → same
//!   token, so joins across exports still work; without the key the id cannot be recovered);
//!   other identifier columns (encounter ids, ...) → `id_<32 hex>` with a separate key;
//! - every date and timestamp column (by type, whatever its name) shifted by a per-patient
//!   whole number of days derived from the key (default -365..=-1; never 0), so intervals
//!   within a patient are preserved;
//! - ages (columns named by the policy) over 89 → 90;
//! - ZIP codes → their first 3 digits, `000` for the restricted 3-digit areas (population
//!   under 20,000), null when malformed;
//! - free text and direct identifiers (names, addresses, phones, e-mails, MRNs, SSNs, source
//!   record ids, ... matched by declared column names) dropped.
//!
//! The key comes from a file or an environment variable and never appears in logs, errors,
//! `Debug` output or lineage: [`store_deidentified`] records the identified version and the
//! policy's hash (with its canonical text), and only a one-way key id.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Date64Array, Float64Array, PrimitiveArray, RecordBatch,
    StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::store::{Kind, Lineage, PutOptions, PutOutcome, Store};

/// The 3-digit ZIP prefixes Safe Harbor requires to be written `000` (areas of 20,000 people
/// or fewer, 2000 Census).
pub const RESTRICTED_ZIP3: [&str; 17] = [
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
    "879", "884", "890", "893",
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A de-identification policy (TOML; every field optional, defaulting to Safe Harbor).
///
/// ```toml
/// name = "safe-harbor"
/// patient_id_columns = ["patient_id"]
/// token_columns = ["encounter_id"]
/// drop_columns = ["given_name", "family_name", "mrn", "ssn", "phone", "email", "address"]
/// age_columns = ["age"]
/// max_age = 89
/// zip_columns = ["zip"]
/// shift_days_min = -365
/// shift_days_max = -1
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeidPolicy {
    /// The policy's name (recorded in labels).
    pub name: String,
    /// Columns holding patient ids: tokenized; the first present one keys the date shift.
    pub patient_id_columns: Vec<String>,
    /// Other identifier columns: tokenized (separate key).
    pub token_columns: Vec<String>,
    /// Direct identifiers and free text: dropped.
    pub drop_columns: Vec<String>,
    /// Age columns: values over `max_age` become `max_age + 1`.
    pub age_columns: Vec<String>,
    /// The highest age kept as is (89).
    pub max_age: u32,
    /// ZIP code columns: cut to 3 digits.
    pub zip_columns: Vec<String>,
    /// 3-digit prefixes written `000`.
    pub restricted_zip3: Vec<String>,
    /// Smallest date shift, days.
    pub shift_days_min: i64,
    /// Largest date shift, days.
    pub shift_days_max: i64,
}

impl Default for DeidPolicy {
    fn default() -> Self {
        DeidPolicy::safe_harbor()
    }
}

impl DeidPolicy {
    /// HIPAA Safe Harbor as Ward applies it (the default policy).
    pub fn safe_harbor() -> Self {
        DeidPolicy {
            name: "safe-harbor".into(),
            patient_id_columns: strings(&["patient_id"]),
            token_columns: strings(&[
                "encounter_id",
                "observation_id",
                "condition_id",
                "procedure_id",
                "medication_id",
                "clinician_id",
            ]),
            drop_columns: strings(&[
                "name",
                "full_name",
                "given_name",
                "family_name",
                "first_name",
                "last_name",
                "middle_name",
                "address",
                "address_line",
                "street",
                "city",
                "phone",
                "telephone",
                "fax",
                "email",
                "mrn",
                "medical_record_number",
                "ssn",
                "account_number",
                "insurance_id",
                "health_plan_id",
                "license_number",
                "device_id",
                "vehicle_id",
                "url",
                "ip_address",
                "photo",
                "source_id",
                "source_system",
                "note",
                "notes",
                "text",
                "free_text",
                "comment",
                "value_text",
                "display",
            ]),
            age_columns: strings(&["age", "age_years", "age_at_admission"]),
            max_age: 89,
            zip_columns: strings(&["zip", "zip_code", "postal_code"]),
            restricted_zip3: strings(&RESTRICTED_ZIP3),
            shift_days_min: -365,
            shift_days_max: -1,
        }
        .normalized()
    }

    /// Parses a policy; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::BadInput`] naming the origin and field.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let p: DeidPolicy = toml::from_str(text).map_err(|e| Error::BadInput {
            location: origin.to_string(),
            field: "-".into(),
            reason: e.to_string(),
        })?;
        let p = p.normalized();
        p.validate(origin)?;
        Ok(p)
    }

    /// Reads a policy file.
    ///
    /// # Errors
    /// [`Error::Io`]; as [`DeidPolicy::from_toml`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        DeidPolicy::from_toml(&text, &path.display().to_string())
    }

    fn normalized(mut self) -> Self {
        for list in [
            &mut self.patient_id_columns,
            &mut self.token_columns,
            &mut self.drop_columns,
            &mut self.age_columns,
            &mut self.zip_columns,
            &mut self.restricted_zip3,
        ] {
            let set: BTreeSet<String> =
                list.iter().map(|c| c.trim().to_ascii_lowercase()).collect();
            *list = set.into_iter().collect();
        }
        self
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let bad = |field: &str, reason: String| Error::BadInput {
            location: origin.to_string(),
            field: field.into(),
            reason,
        };
        if self.patient_id_columns.is_empty() {
            return Err(bad(
                "patient_id_columns",
                "at least one column is needed".into(),
            ));
        }
        if self.shift_days_min > self.shift_days_max {
            return Err(bad("shift_days_min", "greater than shift_days_max".into()));
        }
        if self.shift_days_min <= 0 && self.shift_days_max >= 0 {
            return Err(bad(
                "shift_days_min",
                "the shift range must not include 0 (a date would leave unshifted)".into(),
            ));
        }
        if self.shift_days_min.abs() > 36_500 || self.shift_days_max.abs() > 36_500 {
            return Err(bad(
                "shift_days_min",
                "shifts are limited to 100 years".into(),
            ));
        }
        for z in &self.restricted_zip3 {
            if z.len() != 3 || !z.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("restricted_zip3", format!("{z:?} is not 3 digits")));
            }
        }
        let lists = [
            ("patient_id_columns", &self.patient_id_columns),
            ("token_columns", &self.token_columns),
            ("drop_columns", &self.drop_columns),
            ("age_columns", &self.age_columns),
            ("zip_columns", &self.zip_columns),
        ];
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (list, cols) in lists {
            for c in cols {
                if let Some(other) = seen.insert(c.as_str(), list) {
                    return Err(bad(list, format!("column {c:?} is also in {other}")));
                }
            }
        }
        Ok(())
    }

    /// The canonical form: JSON, column lists lower-cased, sorted and de-duplicated.
    pub fn canonical(&self) -> String {
        serde_json::to_string(&self.clone().normalized()).unwrap_or_default()
    }

    /// The policy's hash: BLAKE3 of [`DeidPolicy::canonical`].
    pub fn hash(&self) -> ContentHash {
        ContentHash(*blake3::hash(self.canonical().as_bytes()).as_bytes())
    }

    fn rule(&self, column: &str) -> Rule {
        let c = column.to_ascii_lowercase();
        let has = |l: &[String]| l.contains(&c);
        if has(&self.drop_columns) {
            Rule::Drop
        } else if has(&self.patient_id_columns) {
            Rule::Patient
        } else if has(&self.token_columns) {
            Rule::Token
        } else if has(&self.age_columns) {
            Rule::Age
        } else if has(&self.zip_columns) {
            Rule::Zip
        } else {
            Rule::Keep
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Drop,
    Patient,
    Token,
    Age,
    Zip,
    Keep,
}

/// The secret key of de-identification. Its `Debug` shows only the key id.
pub struct DeidKey {
    patient: [u8; 32],
    ident: [u8; 32],
    shift: [u8; 32],
    id: String,
}

impl std::fmt::Debug for DeidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeidKey")
            .field("key_id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl DeidKey {
    /// A key from secret material (at least 32 bytes).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is shorter (the message never shows it).
    pub fn from_secret(material: &[u8]) -> Result<Self> {
        if material.len() < 32 {
            return Err(Error::invalid(
                "de-identification key",
                format!("{} bytes; at least 32 are needed", material.len()),
            ));
        }
        let id = blake3::derive_key("ward deid v1 key id", material);
        Ok(DeidKey {
            patient: blake3::derive_key("ward deid v1 patient token", material),
            ident: blake3::derive_key("ward deid v1 identifier token", material),
            shift: blake3::derive_key("ward deid v1 date shift", material),
            id: format!("k1:{}", hex::encode(&id[..8])),
        })
    }

    fn decode(text: &[u8], what: &str) -> Result<Self> {
        let trimmed = String::from_utf8_lossy(text).trim().to_string();
        if trimmed.len() >= 64
            && trimmed.bytes().all(|b| b.is_ascii_hexdigit())
            && trimmed.len().is_multiple_of(2)
        {
            let bytes = hex::decode(&trimmed)
                .map_err(|_| Error::invalid(what, "hex key does not decode"))?;
            return DeidKey::from_secret(&bytes);
        }
        DeidKey::from_secret(text)
            .map_err(|_| Error::invalid(what, "use at least 64 hex digits or 32 raw bytes"))
    }

    /// A key from a file: 64 or more hex digits, or at least 32 raw bytes. Warns when the
    /// file is readable by group or others.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::InvalidArgument`] naming the file (never its content).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path) {
                if m.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(file = %path.display(), "de-identification key file is readable by group or others (chmod 600)");
                }
            }
        }
        DeidKey::decode(
            &bytes,
            &format!("de-identification key file {}", path.display()),
        )
    }

    /// A key from an environment variable holding 64 or more hex digits.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the variable when it is unset or malformed.
    pub fn from_env(var: &str) -> Result<Self> {
        let v = std::env::var(var).map_err(|_| {
            Error::invalid(format!("environment variable {var}"), "unset or not UTF-8")
        })?;
        let t = v.trim();
        if t.len() < 64 || !t.len().is_multiple_of(2) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(
                format!("environment variable {var}"),
                "use at least 64 hex digits",
            ));
        }
        DeidKey::decode(t.as_bytes(), &format!("environment variable {var}"))
    }

    /// A one-way id of the key (safe to record): `k1:<16 hex>`.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// The token of a patient id.
    pub fn patient_token(&self, id: &str) -> String {
        let h = blake3::keyed_hash(&self.patient, id.as_bytes());
        format!("pt_{}", hex::encode(&h.as_bytes()[..16]))
    }

    /// The token of another identifier.
    pub fn identifier_token(&self, id: &str) -> String {
        let h = blake3::keyed_hash(&self.ident, id.as_bytes());
        format!("id_{}", hex::encode(&h.as_bytes()[..16]))
    }

    /// The date shift of a patient, in days, within the policy's range.
    pub fn shift_days(&self, patient: &str, policy: &DeidPolicy) -> i64 {
        let h = blake3::keyed_hash(&self.shift, patient.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        let span = (policy.shift_days_max - policy.shift_days_min + 1) as u64;
        policy.shift_days_min + (u64::from_le_bytes(b) % span) as i64
    }
}

/// The schema [`deidentify`] produces for `schema`.
///
/// # Errors
/// [`Error::BadInput`] when no patient id column is present, or a column the policy names
/// has a type it cannot handle.
pub fn output_schema(schema: &Schema, policy: &DeidPolicy) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    let mut has_patient = false;
    for f in schema.fields() {
        let bad = |reason: String| Error::BadInput {
            location: "training set schema".into(),
            field: f.name().clone(),
            reason,
        };
        let text = matches!(
            f.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        match policy.rule(f.name()) {
            Rule::Drop => continue,
            Rule::Patient | Rule::Token | Rule::Zip => {
                if !text {
                    return Err(bad(format!("expected text, found {}", f.data_type())));
                }
                has_patient |= policy.rule(f.name()) == Rule::Patient;
                let nullable = f.is_nullable() || policy.rule(f.name()) == Rule::Zip;
                fields.push(Field::new(f.name(), DataType::Utf8, nullable));
            }
            Rule::Age => {
                if !f.data_type().is_numeric() {
                    return Err(bad(format!(
                        "an age must be numeric, found {}",
                        f.data_type()
                    )));
                }
                fields.push(Field::new(f.name(), f.data_type().clone(), f.is_nullable()));
            }
            Rule::Keep => {
                fields.push(Field::new(f.name(), f.data_type().clone(), f.is_nullable()));
            }
        }
    }
    if !has_patient {
        return Err(Error::BadInput {
            location: "training set schema".into(),
            field: policy.patient_id_columns.join("|"),
            reason: "no patient id column: de-identification needs one to tokenize ids and shift dates per patient".into(),
        });
    }
    Ok(Arc::new(Schema::new(fields)))
}

fn to_strings(col: &ArrayRef) -> Result<StringArray> {
    let c = cast(col, &DataType::Utf8)?;
    Ok(c.as_string::<i32>().clone())
}

fn shift_primitive<T: ArrowPrimitiveType<Native = i64>>(
    col: &ArrayRef,
    offsets: &[i64],
    per_day: i64,
    name: &str,
    batch: usize,
) -> Result<PrimitiveArray<T>> {
    let a = col.as_primitive::<T>();
    let mut out = Vec::with_capacity(a.len());
    for (i, v) in a.iter().enumerate() {
        out.push(match v {
            None => None,
            Some(x) => Some(
                offsets[i]
                    .checked_mul(per_day)
                    .and_then(|d| x.checked_add(d))
                    .ok_or_else(|| Error::BadInput {
                        location: format!("batch {batch} row {i}"),
                        field: name.into(),
                        reason: "the shifted time is out of range".into(),
                    })?,
            ),
        });
    }
    Ok(out.into_iter().collect::<PrimitiveArray<T>>())
}

fn shift_dates(
    col: &ArrayRef,
    offsets: &[i64],
    name: &str,
    batch: usize,
) -> Result<Option<ArrayRef>> {
    const DAY_S: i64 = 86_400;
    Ok(Some(match col.data_type() {
        DataType::Date32 => {
            let a = col.as_primitive::<arrow::datatypes::Date32Type>();
            let out: Date32Array = a
                .iter()
                .enumerate()
                .map(|(i, v)| v.map(|d| d.saturating_add(offsets[i] as i32)))
                .collect();
            Arc::new(out)
        }
        DataType::Date64 => {
            let a = col.as_primitive::<arrow::datatypes::Date64Type>();
            let out: Date64Array = a
                .iter()
                .enumerate()
                .map(|(i, v)| v.map(|d| d.saturating_add(offsets[i] * DAY_S * 1000)))
                .collect();
            Arc::new(out)
        }
        DataType::Timestamp(unit, tz) => match unit {
            TimeUnit::Second => Arc::new(
                shift_primitive::<TimestampSecondType>(col, offsets, DAY_S, name, batch)?
                    .with_timezone_opt(tz.clone()),
            ),
            TimeUnit::Millisecond => Arc::new(
                shift_primitive::<TimestampMillisecondType>(
                    col,
                    offsets,
                    DAY_S * 1_000,
                    name,
                    batch,
                )?
                .with_timezone_opt(tz.clone()),
            ),
            TimeUnit::Microsecond => Arc::new(
                shift_primitive::<TimestampMicrosecondType>(
                    col,
                    offsets,
                    DAY_S * 1_000_000,
                    name,
                    batch,
                )?
                .with_timezone_opt(tz.clone()),
            ),
            TimeUnit::Nanosecond => Arc::new(
                shift_primitive::<TimestampNanosecondType>(
                    col,
                    offsets,
                    DAY_S * 1_000_000_000,
                    name,
                    batch,
                )?
                .with_timezone_opt(tz.clone()),
            ),
        },
        _ => return Ok(None),
    }))
}

fn cap_ages(col: &ArrayRef, max_age: u32) -> Result<ArrayRef> {
    let f = cast(col, &DataType::Float64)?;
    let cap = f64::from(max_age);
    let out: Float64Array = f
        .as_primitive::<arrow::datatypes::Float64Type>()
        .iter()
        .map(|v| v.map(|x| if x > cap { cap + 1.0 } else { x }))
        .collect();
    Ok(cast(&(Arc::new(out) as ArrayRef), col.data_type())?)
}

fn zip3(v: &str, restricted: &[String]) -> Option<String> {
    let t = v.trim();
    let p = t.get(..3)?;
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if restricted.iter().any(|r| r == p) {
        Some("000".into())
    } else {
        Some(p.to_string())
    }
}

/// De-identifies `batches` by `policy` with `key` (module docs).
///
/// # Errors
/// [`Error::BadInput`] naming the batch, row and column: no patient id column, a null
/// patient id (its dates could not be shifted), a column of the wrong type, a date shifted
/// out of range.
pub fn deidentify(
    batches: &[RecordBatch],
    policy: &DeidPolicy,
    key: &DeidKey,
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::with_capacity(batches.len());
    for (bi, batch) in batches.iter().enumerate() {
        let schema = batch.schema();
        let out_schema = output_schema(&schema, policy)?;
        let subject = schema
            .fields()
            .iter()
            .position(|f| policy.rule(f.name()) == Rule::Patient)
            .ok_or_else(|| Error::Internal("output_schema checked the patient column".into()))?;
        let ids = to_strings(batch.column(subject))?;
        let subject_name = schema.field(subject).name().clone();
        let mut cache: HashMap<&str, (i64, String)> = HashMap::new();
        let mut offsets = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            if ids.is_null(i) {
                return Err(Error::BadInput {
                    location: format!("batch {bi} row {i}"),
                    field: subject_name,
                    reason: "null patient id: its dates cannot be shifted".into(),
                });
            }
            let id = ids.value(i);
            let (off, _) = cache
                .entry(id)
                .or_insert_with(|| (key.shift_days(id, policy), key.patient_token(id)));
            offsets.push(*off);
        }
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
        for (ci, f) in schema.fields().iter().enumerate() {
            let col = batch.column(ci);
            let new: ArrayRef = match policy.rule(f.name()) {
                Rule::Drop => continue,
                Rule::Patient => {
                    let s = to_strings(col)?;
                    let arr: StringArray = s
                        .iter()
                        .map(|v| {
                            v.map(|id| match cache.get(id) {
                                Some((_, t)) => t.clone(),
                                None => key.patient_token(id),
                            })
                        })
                        .collect();
                    Arc::new(arr)
                }
                Rule::Token => {
                    let s = to_strings(col)?;
                    let arr: StringArray = s
                        .iter()
                        .map(|v| v.map(|id| key.identifier_token(id)))
                        .collect();
                    Arc::new(arr)
                }
                Rule::Zip => {
                    let s = to_strings(col)?;
                    let arr: StringArray = s
                        .iter()
                        .map(|v| v.and_then(|z| zip3(z, &policy.restricted_zip3)))
                        .collect();
                    Arc::new(arr)
                }
                Rule::Age => cap_ages(col, policy.max_age)?,
                Rule::Keep => match shift_dates(col, &offsets, f.name(), bi)? {
                    Some(shifted) => shifted,
                    None => col.clone(),
                },
            };
            cols.push(new);
        }
        out.push(RecordBatch::try_new(out_schema, cols)?);
    }
    Ok(out)
}

/// De-identifies the stored version `identified` and stores the result as its own version
/// (kind `training`, name `name`). Its lineage names the identified version (`inputs`) and the
/// policy hash (`definition`), with the canonical policy and the key id in `params`; never
/// the key.
///
/// # Errors
/// As [`Store::read`], [`deidentify`] and [`Store::put_batches`].
pub async fn store_deidentified(
    store: &Store,
    identified: &ContentHash,
    policy: &DeidPolicy,
    key: &DeidKey,
    name: &str,
) -> Result<PutOutcome> {
    let (schema, batches) = store.read(identified).await?;
    let out_schema = output_schema(&schema, policy)?;
    let out = deidentify(&batches, policy, key)?;
    let mut opts = PutOptions::new(name, Kind::Training);
    let canonical: serde_json::Value =
        serde_json::from_str(&policy.canonical()).map_err(|e| Error::Internal(e.to_string()))?;
    opts.lineage = Lineage {
        inputs: vec![*identified],
        definition: Some(policy.hash()),
        params: serde_json::json!({
            "op": "deidentify",
            "policy": canonical,
            "key_id": key.key_id(),
        }),
    };
    opts.labels
        .insert("deidentified".into(), policy.name.clone());
    store.put_batches(out_schema, out, opts).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMicrosecondArray};

    fn key() -> DeidKey {
        DeidKey::from_secret(&[7u8; 32]).unwrap()
    }

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("patient_id", DataType::Utf8, false),
            Field::new("given_name", DataType::Utf8, true),
            Field::new("zip", DataType::Utf8, true),
            Field::new("age", DataType::Int64, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("birth_date", DataType::Date32, true),
            Field::new("x", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["P1", "P2", "P1"])),
                Arc::new(StringArray::from(vec![Some("Ann"), None, Some("Ann")])),
                Arc::new(StringArray::from(vec![
                    Some("03601"),
                    Some("12345-6789"),
                    Some("x1"),
                ])),
                Arc::new(Int64Array::from(vec![Some(95), Some(40), None])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        Some(1_000_000_000_000_000),
                        Some(1_000_000_000_000_000),
                        Some(1_000_086_400_000_000),
                    ])
                    .with_timezone("UTC"),
                ),
                Arc::new(Date32Array::from(vec![Some(10_000), None, Some(10_000)])),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn safe_harbor_transforms() {
        let p = DeidPolicy::safe_harbor();
        let k = key();
        let out = &deidentify(&[batch()], &p, &k).unwrap()[0];
        let schema = out.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["patient_id", "zip", "age", "t", "birth_date", "x"]);
        let ids = out.column(0).as_string::<i32>();
        assert_eq!(ids.value(0), ids.value(2));
        assert_ne!(ids.value(0), ids.value(1));
        assert_eq!(ids.value(0), k.patient_token("P1"));
        let zip = out.column(1).as_string::<i32>();
        assert_eq!(zip.value(0), "000");
        assert_eq!(zip.value(1), "123");
        assert!(zip.is_null(2));
        let age = out.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(age.value(0), 90);
        assert_eq!(age.value(1), 40);
        assert!(age.is_null(2));
        let t = out.column(3).as_primitive::<TimestampMicrosecondType>();
        // Same patient: the one-day interval is preserved.
        assert_eq!(t.value(2) - t.value(0), 86_400_000_000);
        let d1 = k.shift_days("P1", &p);
        assert!((-365..=-1).contains(&d1));
        assert_eq!(t.value(0), 1_000_000_000_000_000 + d1 * 86_400_000_000);
        let bd = out.column(4).as_primitive::<arrow::datatypes::Date32Type>();
        assert_eq!(i64::from(bd.value(0)), 10_000 + d1);
        assert_eq!(out.column(3).data_type(), batch().column(4).data_type());
    }

    #[test]
    fn key_never_shows_and_needs_32_bytes() {
        let k = DeidKey::from_secret(b"0123456789abcdef0123456789abcdef-secret").unwrap();
        let dbg = format!("{k:?}");
        assert!(
            dbg.contains("<redacted>") && dbg.contains(k.key_id()),
            "{dbg}"
        );
        assert!(!dbg.contains("0123456789abcdef"), "{dbg}");
        let e = DeidKey::from_secret(b"short").unwrap_err().to_string();
        assert!(!e.contains("short"), "{e}");
    }

    #[test]
    fn keys_from_files_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let hex_key = "ab".repeat(32);
        let f = dir.path().join("key.hex");
        std::fs::write(&f, format!("{hex_key}\n")).unwrap();
        let a = DeidKey::from_file(&f).unwrap();
        let b = DeidKey::from_secret(&[0xab; 32]).unwrap();
        assert_eq!(a.patient_token("p"), b.patient_token("p"));
        let raw = dir.path().join("key.bin");
        std::fs::write(&raw, [0xab; 32]).unwrap();
        assert_eq!(
            DeidKey::from_file(&raw).unwrap().patient_token("p"),
            b.patient_token("p")
        );
        let short = dir.path().join("short");
        std::fs::write(&short, "tiny-secret").unwrap();
        let e = DeidKey::from_file(&short).unwrap_err().to_string();
        assert!(e.contains("short") && !e.contains("tiny-secret"), "{e}");
        let var = "WARD_TEST_DEID_KEY_UNIT";
        std::env::set_var(var, &hex_key);
        assert_eq!(DeidKey::from_env(var).unwrap().key_id(), b.key_id());
        std::env::set_var(var, "not-hex");
        let e = DeidKey::from_env(var).unwrap_err().to_string();
        assert!(e.contains(var) && !e.contains("not-hex"), "{e}");
        std::env::remove_var(var);
        assert!(DeidKey::from_env(var).is_err());
        // Different purposes use different derived keys.
        assert_ne!(b.patient_token("x")[3..], b.identifier_token("x")[3..]);
    }

    #[test]
    fn policy_parse_canonical_hash_and_errors() {
        let a = DeidPolicy::from_toml("zip_columns = [\"ZIP\", \"zip\"]\n", "p.toml").unwrap();
        let b = DeidPolicy::from_toml("zip_columns = [\"zip\"]\n", "p.toml").unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), DeidPolicy::safe_harbor().hash());
        let e = DeidPolicy::from_toml("shift_days_min = -3\nshift_days_max = 2\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml") && e.contains("include 0"), "{e}");
        let e = DeidPolicy::from_toml("zip_columns = [\"mrn\"]\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mrn"), "{e}");
        assert!(DeidPolicy::from_toml("colour = 1\n", "p.toml").is_err());
    }

    #[test]
    fn missing_patient_column_and_null_ids_are_named() {
        let b = batch().project(&[1, 2]).unwrap();
        let e = deidentify(&[b], &DeidPolicy::safe_harbor(), &key())
            .unwrap_err()
            .to_string();
        assert!(e.contains("patient_id"), "{e}");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "patient_id",
            DataType::Utf8,
            true,
        )]));
        let b = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec![Some("a"), None]))],
        )
        .unwrap();
        let e = deidentify(&[b], &DeidPolicy::safe_harbor(), &key())
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch 0 row 1"), "{e}");
    }
}
