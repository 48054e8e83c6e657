//! De-identification of training sets under a named profile (`docs/security.md`,
//! "De-identification"), and the rule that keeps a de-identified caller from re-identifying.
//!
//! Two profiles, each named for what it is:
//! - [`Profile::SafeHarbor`] (`safe-harbor`, the default): HIPAA Safe Harbor as
//!   45 CFR 164.514(b)(2) reads. Every date element but the year is removed (date and
//!   timestamp columns become `Int32` years; a birth year that would show an age over 89 is
//!   removed too), ages over 89 become 90 ("90 or older"), ZIP codes are cut to 3 digits and
//!   to `000` where the 3-digit area holds 20,000 people or fewer ([`RESTRICTED_ZIP3`]), the
//!   18 identifiers are removed, and patient ids become keyed tokens, the same in every
//!   export by default so joins across exports work.
//! - [`Profile::LimitedDataSet`] (`limited-data-set`): dates shifted by a per-patient whole
//!   number of days (intervals within a patient kept). Safe Harbor does not allow dates, so
//!   this is at most a limited data set (45 CFR 164.514(e): released only under a data use
//!   agreement) or what an expert determination (164.514(b)(1)) covers; it is never called
//!   Safe Harbor. Tokens and shifts differ between exports unless the policy says `stable`.
//!
//! Columns leave only by rule: patient ids and other identifiers tokenized, ZIPs and ages
//! generalized, dates reduced or shifted, numbers and booleans kept unless their names are
//! identifiers', Ward's own status columns kept when they hold only statuses, and any other
//! text (or binary, list, struct) column only when the policy allows it by name
//! (`allow_columns`: an allow list, not a drop list).
//!
//! Rows leave ordered by patient token, never in the caller's order, so the position of a row
//! says nothing about whose it is; and a de-identified caller may only send entity rows a
//! steward approved ([`approved_entities`]), so it cannot name patients it knows and read back
//! their tokens or date shifts.
//!
//! Research opt-outs ([`apply_research_consent`]): every training set leaves out the rows of
//! patients whose research consent, as the `consent` table knows it at the export's time, is
//! a refusal, and records the `consent` version it read in its lineage (`docs/security.md`,
//! "Consent").
//!
//! The key comes from a file or an environment variable and never appears in logs, errors,
//! `Debug` output or lineage: [`store_deidentified`] records the identified version and the
//! policy's hash (with its canonical text), and only a one-way key id.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Date64Array, Float64Array, Int32Array, PrimitiveArray,
    RecordBatch, StringArray, UInt32Array,
};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::lookup::Entities;
use crate::store::{Kind, Lineage, Manifest, PutOptions, PutOutcome, Store};

/// The 3-digit ZIP prefixes Safe Harbor requires to be written `000`: the 3-digit areas of
/// 20,000 people or fewer. 45 CFR 164.514(b)(2)(i)(B) asks for "the initial three digits of
/// a ZIP code" only where "the geographic unit formed by combining all ZIP codes with the
/// same three initial digits contains more than 20,000 people", by "the current publicly
/// available data from the Bureau of the Census". This is the list HHS publishes from the
/// 2000 Census in its "Guidance Regarding Methods for De-identification of Protected Health
/// Information in Accordance with the HIPAA Privacy Rule" (Office for Civil Rights,
/// November 26, 2012, the Safe Harbor geographic-subdivision answer;
/// <https://www.hhs.gov/hipaa/for-professionals/special-topics/de-identification/index.html>).
/// A policy may add prefixes (newer Census data), never remove these.
pub const RESTRICTED_ZIP3: [&str; 17] = [
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
    "879", "884", "890", "893",
];

/// The label a steward puts on a stored version of entity rows to approve it as a cohort
/// that de-identified callers may look up (its value: who approved it). Set when the version
/// is put (`ward put --label approved-cohort=<steward>`); a de-identified caller has no way to
/// put a version or set a label.
pub const APPROVED_COHORT_LABEL: &str = "approved-cohort";

/// The values of Ward's feature status columns (`<feature>__status`), the only text such a
/// column may hold to leave without being allowed by name.
pub const STATUS_VALUES: [&str; 3] = ["present", "no_data", "outside_ttl"];

/// Column names of the 18 Safe Harbor identifiers (45 CFR 164.514(b)(2)(i)(A)-(R)) as they
/// are commonly spelled, dropped in every profile whatever their type. Dates (C) are handled
/// by type; ZIP codes (B) by `zip_columns`; (R) "any other unique identifying number" also by
/// the name patterns of [`looks_like_identifier`].
pub const IDENTIFIER_COLUMNS: &[&str] = &[
    // (A) names
    "name",
    "full_name",
    "given_name",
    "family_name",
    "first_name",
    "last_name",
    "middle_name",
    "maiden_name",
    "patient_name",
    "name_prefix",
    "name_suffix",
    // (B) geographic subdivisions smaller than a state
    "address",
    "address_line",
    "address1",
    "address2",
    "street",
    "street_address",
    "latitude",
    "longitude",
    "lat",
    "lon",
    "lng",
    "geocode",
    "census_tract",
    "precinct",
    // (D), (E), (F) telephone, fax, e-mail
    "phone",
    "telephone",
    "phone_number",
    "mobile",
    "fax",
    "email",
    "email_address",
    // (G) social security numbers
    "ssn",
    "social_security_number",
    // (H) medical record numbers
    "mrn",
    "medical_record_number",
    // (I) health plan beneficiary numbers
    "health_plan_id",
    "insurance_id",
    "member_id",
    "beneficiary_id",
    "subscriber_id",
    "policy_number",
    // (J) account numbers
    "account_number",
    "account_id",
    // (K) certificate and licence numbers
    "license_number",
    "licence_number",
    "certificate_number",
    "drivers_license",
    // (L) vehicle identifiers and serial numbers, licence plates
    "vehicle_id",
    "vin",
    "license_plate",
    // (M) device identifiers and serial numbers
    "device_id",
    "device_serial",
    "serial_number",
    "udi",
    // (N), (O) URLs, IP addresses
    "url",
    "website",
    "ip",
    "ip_address",
    // (P) biometric identifiers
    "biometric",
    "fingerprint",
    "voiceprint",
    // (Q) full-face photographs and comparable images
    "photo",
    "image",
    // (R) any other unique identifier: the source system's record ids
    "source_id",
    "source_system",
];

/// Geographic subdivisions smaller than a state that a limited data set may keep (town or
/// city, county: 45 CFR 164.514(e)(2)) but Safe Harbor may not: never allowed under
/// `safe-harbor`, dropped unless a `limited-data-set` policy allows them.
pub const SUBSTATE_COLUMNS: &[&str] = &["city", "town", "county", "municipality", "district"];

/// Whether a column name looks like an identifier ("any other unique identifying number",
/// 164.514(b)(2)(i)(R)): one of [`IDENTIFIER_COLUMNS`], or ending in `_id`, `_number`,
/// `_num`, `_no`, `_nbr`, `_mrn`, `_ssn`, or `id` itself. Numeric columns so named leave
/// only when tokenized or allowed by name.
pub fn looks_like_identifier(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    IDENTIFIER_COLUMNS.contains(&n.as_str())
        || n == "id"
        || ["_id", "_number", "_num", "_no", "_nbr", "_mrn", "_ssn"]
            .iter()
            .any(|s| n.ends_with(s))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A de-identification profile: what the output may be called, and so what it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// HIPAA Safe Harbor, 45 CFR 164.514(b)(2): years only, ages 90+, ZIP3, the 18
    /// identifiers removed, keyed patient tokens.
    SafeHarbor,
    /// Per-patient date shifting: not Safe Harbor; a limited data set (164.514(e), under a
    /// data use agreement) or what an expert determination covers.
    LimitedDataSet,
}

impl Profile {
    /// The profile's name (`safe-harbor`, `limited-data-set`), recorded in the label
    /// `deidentified` of every version it writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::SafeHarbor => "safe-harbor",
            Profile::LimitedDataSet => "limited-data-set",
        }
    }
}

/// A de-identification policy: a profile and its column lists (TOML; every field but
/// `profile` optional, defaulting to the profile's).
///
/// ```toml
/// profile = "safe-harbor"            # or "limited-data-set"
/// patient_id_columns = ["patient_id"]
/// token_columns = ["encounter_id"]
/// allow_columns = ["sex"]            # text (or identifier-like) columns that may leave as is
/// drop_columns = ["badge"]           # more identifier columns (the 18 identifiers always go)
/// age_columns = ["age"]
/// max_age = 89
/// zip_columns = ["zip"]
/// birth_date_columns = ["birth_date"]
/// stable = true                      # the same tokens (and shifts) in every export
/// # limited-data-set only:
/// # shift_days_min = -365
/// # shift_days_max = -1
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeidPolicy {
    /// The profile.
    pub profile: Profile,
    /// Columns holding patient ids: tokenized; the first present one orders the rows and
    /// keys the date shift.
    pub patient_id_columns: Vec<String>,
    /// Other identifier columns: tokenized (separate key).
    pub token_columns: Vec<String>,
    /// Columns that leave unchanged although their type (text, ...) or name (identifier
    /// like) would drop them: the allow list.
    pub allow_columns: Vec<String>,
    /// Identifier columns dropped whatever their type, besides [`IDENTIFIER_COLUMNS`].
    pub drop_columns: Vec<String>,
    /// Age columns: values over `max_age` become `max_age + 1`.
    pub age_columns: Vec<String>,
    /// The highest age kept as is (89; Safe Harbor allows no more).
    pub max_age: u32,
    /// ZIP code columns: cut to 3 digits.
    pub zip_columns: Vec<String>,
    /// 3-digit prefixes written `000` (at least [`RESTRICTED_ZIP3`]).
    pub restricted_zip3: Vec<String>,
    /// Birth date columns: under Safe Harbor the year is removed too when it shows an age
    /// over 89 at export time.
    pub birth_date_columns: Vec<String>,
    /// Tokens (and date shifts) the same in every export with the same key; otherwise salted
    /// per export (by the identified version), so two exports cannot be joined.
    pub stable: bool,
    /// Smallest date shift, days (`limited-data-set`).
    pub shift_days_min: i64,
    /// Largest date shift, days (`limited-data-set`).
    pub shift_days_max: i64,
}

/// The TOML form: every field optional; the profile's defaults fill the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    profile: Option<Profile>,
    name: Option<String>,
    patient_id_columns: Option<Vec<String>>,
    token_columns: Option<Vec<String>>,
    allow_columns: Option<Vec<String>>,
    drop_columns: Option<Vec<String>>,
    age_columns: Option<Vec<String>>,
    max_age: Option<u32>,
    zip_columns: Option<Vec<String>>,
    restricted_zip3: Option<Vec<String>>,
    birth_date_columns: Option<Vec<String>>,
    stable: Option<bool>,
    shift_days_min: Option<i64>,
    shift_days_max: Option<i64>,
}

impl Default for DeidPolicy {
    fn default() -> Self {
        DeidPolicy::safe_harbor()
    }
}

impl DeidPolicy {
    /// HIPAA Safe Harbor (the default policy).
    pub fn safe_harbor() -> Self {
        DeidPolicy {
            profile: Profile::SafeHarbor,
            patient_id_columns: strings(&["patient_id"]),
            token_columns: strings(&[
                "encounter_id",
                "observation_id",
                "condition_id",
                "procedure_id",
                "medication_id",
                "clinician_id",
            ]),
            allow_columns: strings(&["sex", "gender"]),
            drop_columns: Vec::new(),
            age_columns: strings(&["age", "age_years", "age_at_admission"]),
            max_age: 89,
            zip_columns: strings(&["zip", "zip_code", "postal_code"]),
            restricted_zip3: strings(&RESTRICTED_ZIP3),
            birth_date_columns: strings(&["birth_date", "birthdate", "date_of_birth", "dob"]),
            stable: true,
            shift_days_min: 0,
            shift_days_max: 0,
        }
        .normalized()
    }

    /// Date shifting (a limited data set; never Safe Harbor): Safe Harbor's column rules,
    /// with dates shifted by -365..=-1 days a patient, salted per export.
    pub fn limited_data_set() -> Self {
        DeidPolicy {
            profile: Profile::LimitedDataSet,
            stable: false,
            shift_days_min: -365,
            shift_days_max: -1,
            ..DeidPolicy::safe_harbor()
        }
    }

    /// The defaults of `profile`.
    pub fn of(profile: Profile) -> Self {
        match profile {
            Profile::SafeHarbor => DeidPolicy::safe_harbor(),
            Profile::LimitedDataSet => DeidPolicy::limited_data_set(),
        }
    }

    /// The profile's name (the label `deidentified`).
    pub fn name(&self) -> &'static str {
        self.profile.as_str()
    }

    /// Parses a policy; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::BadInput`] naming the origin and field.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| Error::BadInput {
            location: origin.to_string(),
            field: "-".into(),
            reason: e.to_string(),
        })?;
        let bad = |field: &str, reason: String| Error::BadInput {
            location: origin.to_string(),
            field: field.into(),
            reason,
        };
        if raw.name.is_some() {
            return Err(bad(
                "name",
                "a policy is named by its profile: write profile = \"safe-harbor\" or \
                 profile = \"limited-data-set\" (date shifting is not Safe Harbor)"
                    .into(),
            ));
        }
        let profile = raw.profile.unwrap_or(Profile::SafeHarbor);
        if profile == Profile::SafeHarbor
            && (raw.shift_days_min.is_some() || raw.shift_days_max.is_some())
        {
            return Err(bad(
                "shift_days_min",
                "safe-harbor keeps only the year of a date and shifts nothing; date shifting is \
                 profile = \"limited-data-set\""
                    .into(),
            ));
        }
        let d = DeidPolicy::of(profile);
        let p = DeidPolicy {
            profile,
            patient_id_columns: raw.patient_id_columns.unwrap_or(d.patient_id_columns),
            token_columns: raw.token_columns.unwrap_or(d.token_columns),
            allow_columns: raw.allow_columns.unwrap_or(d.allow_columns),
            drop_columns: raw.drop_columns.unwrap_or(d.drop_columns),
            age_columns: raw.age_columns.unwrap_or(d.age_columns),
            max_age: raw.max_age.unwrap_or(d.max_age),
            zip_columns: raw.zip_columns.unwrap_or(d.zip_columns),
            restricted_zip3: raw.restricted_zip3.unwrap_or(d.restricted_zip3),
            birth_date_columns: raw.birth_date_columns.unwrap_or(d.birth_date_columns),
            stable: raw.stable.unwrap_or(d.stable),
            shift_days_min: raw.shift_days_min.unwrap_or(d.shift_days_min),
            shift_days_max: raw.shift_days_max.unwrap_or(d.shift_days_max),
        }
        .normalized();
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
            &mut self.allow_columns,
            &mut self.drop_columns,
            &mut self.age_columns,
            &mut self.zip_columns,
            &mut self.restricted_zip3,
            &mut self.birth_date_columns,
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
        match self.profile {
            Profile::SafeHarbor => {
                if self.max_age > 89 {
                    return Err(bad(
                        "max_age",
                        format!(
                            "{}: Safe Harbor groups every age over 89 as 90 or older",
                            self.max_age
                        ),
                    ));
                }
                if let Some(c) = self
                    .allow_columns
                    .iter()
                    .find(|c| SUBSTATE_COLUMNS.contains(&c.as_str()))
                {
                    return Err(bad(
                        "allow_columns",
                        format!(
                            "{c:?} is a geographic subdivision smaller than a state, which Safe \
                             Harbor removes"
                        ),
                    ));
                }
            }
            Profile::LimitedDataSet => {
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
            }
        }
        if let Some(c) = self
            .allow_columns
            .iter()
            .find(|c| IDENTIFIER_COLUMNS.contains(&c.as_str()))
        {
            return Err(bad(
                "allow_columns",
                format!("{c:?} is one of the identifiers every profile removes"),
            ));
        }
        for z in &self.restricted_zip3 {
            if z.len() != 3 || !z.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("restricted_zip3", format!("{z:?} is not 3 digits")));
            }
        }
        if let Some(z) = RESTRICTED_ZIP3
            .iter()
            .find(|z| !self.restricted_zip3.iter().any(|r| r == *z))
        {
            return Err(bad(
                "restricted_zip3",
                format!("{z:?} is missing: the Census list may be extended, never shortened"),
            ));
        }
        let lists = [
            ("patient_id_columns", &self.patient_id_columns),
            ("token_columns", &self.token_columns),
            ("allow_columns", &self.allow_columns),
            ("drop_columns", &self.drop_columns),
            ("age_columns", &self.age_columns),
            ("zip_columns", &self.zip_columns),
            ("birth_date_columns", &self.birth_date_columns),
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

    /// What happens to a column of this name and type.
    fn rule(&self, field: &Field) -> Result<Rule> {
        let c = field.name().to_ascii_lowercase();
        let has = |l: &[String]| l.contains(&c);
        let dt = field.data_type();
        let bad = |reason: String| Error::BadInput {
            location: "training set schema".into(),
            field: field.name().clone(),
            reason,
        };
        if has(&self.patient_id_columns) {
            return Ok(Rule::Patient);
        }
        if has(&self.token_columns) {
            return Ok(Rule::Token);
        }
        if has(&self.drop_columns) || IDENTIFIER_COLUMNS.contains(&c.as_str()) {
            return Ok(Rule::Drop);
        }
        if has(&self.zip_columns) {
            if !is_text(dt) {
                return Err(bad(format!("a ZIP code must be text, found {dt}")));
            }
            return Ok(Rule::Zip);
        }
        if has(&self.age_columns) {
            if !dt.is_numeric() {
                return Err(bad(format!("an age must be numeric, found {dt}")));
            }
            return Ok(Rule::Age);
        }
        let allowed = has(&self.allow_columns);
        let birth = has(&self.birth_date_columns);
        if is_date(dt) {
            return Ok(match self.profile {
                Profile::SafeHarbor => Rule::Year { birth },
                Profile::LimitedDataSet => Rule::Shift,
            });
        }
        if birth {
            return Err(bad(format!(
                "a birth date must be a date or timestamp, found {dt}"
            )));
        }
        if matches!(dt, DataType::Time32(_) | DataType::Time64(_)) {
            // A time of day is finer than a year: Safe Harbor removes it.
            return Ok(match self.profile {
                Profile::SafeHarbor => Rule::Drop,
                Profile::LimitedDataSet => Rule::Keep,
            });
        }
        if allowed {
            if self.profile == Profile::SafeHarbor && SUBSTATE_COLUMNS.contains(&c.as_str()) {
                return Ok(Rule::Drop);
            }
            if is_text(dt) || is_plain(dt) {
                return Ok(Rule::Keep);
            }
            return Err(bad(format!(
                "{dt} columns never leave de-identified (allow_columns takes text and numbers)"
            )));
        }
        if is_plain(dt) {
            return Ok(if looks_like_identifier(&c) {
                Rule::Drop
            } else {
                Rule::Keep
            });
        }
        if is_text(dt) && c.ends_with(crate::lookup::STATUS_SUFFIX) {
            return Ok(Rule::Status);
        }
        // Text not allowed by name, binary (photos, biometrics), nested: dropped.
        Ok(Rule::Drop)
    }
}

fn is_text(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

fn is_date(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)
    )
}

/// Numbers, booleans, nulls, durations and intervals: values, not text.
fn is_plain(dt: &DataType) -> bool {
    dt.is_numeric()
        || matches!(
            dt,
            DataType::Boolean | DataType::Null | DataType::Duration(_) | DataType::Interval(_)
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Drop,
    Patient,
    Token,
    Age,
    Zip,
    /// Safe Harbor: the year only (`birth`: removed too when it shows an age over 89).
    Year {
        birth: bool,
    },
    /// Limited data set: shifted by the patient's offset.
    Shift,
    /// A feature status column: kept when it holds only [`STATUS_VALUES`].
    Status,
    Keep,
}

/// Secret key material of one purpose.
#[derive(Clone)]
struct Keys {
    patient: [u8; 32],
    ident: [u8; 32],
    shift: [u8; 32],
}

/// The secret key of de-identification. Its `Debug` shows only the key id.
pub struct DeidKey {
    keys: Keys,
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

/// The keys of one export: the key's own when the policy is stable, else derived from the
/// key and the export's salt (the identified version's hash). Its `Debug` shows nothing.
pub struct ExportKeys {
    keys: Keys,
}

impl std::fmt::Debug for ExportKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportKeys(<redacted>)")
    }
}

impl ExportKeys {
    /// The token of a patient id.
    pub fn patient_token(&self, id: &str) -> String {
        let h = blake3::keyed_hash(&self.keys.patient, id.as_bytes());
        format!("pt_{}", hex::encode(&h.as_bytes()[..16]))
    }

    /// The token of another identifier.
    pub fn identifier_token(&self, id: &str) -> String {
        let h = blake3::keyed_hash(&self.keys.ident, id.as_bytes());
        format!("id_{}", hex::encode(&h.as_bytes()[..16]))
    }

    /// The date shift of a patient, in days, within the policy's range (`limited-data-set`;
    /// 0 under `safe-harbor`, which shifts nothing).
    pub fn shift_days(&self, patient: &str, policy: &DeidPolicy) -> i64 {
        if policy.profile != Profile::LimitedDataSet {
            return 0;
        }
        let h = blake3::keyed_hash(&self.keys.shift, patient.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        let span = (policy.shift_days_max - policy.shift_days_min + 1) as u64;
        policy.shift_days_min + (u64::from_le_bytes(b) % span) as i64
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
            keys: Keys {
                patient: blake3::derive_key("ward deid v1 patient token", material),
                ident: blake3::derive_key("ward deid v1 identifier token", material),
                shift: blake3::derive_key("ward deid v1 date shift", material),
            },
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

    /// The stable token of a patient id (every export of a `stable` policy).
    pub fn patient_token(&self, id: &str) -> String {
        self.stable().patient_token(id)
    }

    /// The stable token of another identifier.
    pub fn identifier_token(&self, id: &str) -> String {
        self.stable().identifier_token(id)
    }

    /// The stable date shift of a patient (a `stable` `limited-data-set` policy).
    pub fn shift_days(&self, patient: &str, policy: &DeidPolicy) -> i64 {
        self.stable().shift_days(patient, policy)
    }

    fn stable(&self) -> ExportKeys {
        ExportKeys {
            keys: self.keys.clone(),
        }
    }

    /// The keys of `export` under `policy`: the stable ones, or ones salted by the export's
    /// identified version (then no token or shift of one export tells anything about
    /// another's).
    pub fn export_keys(&self, policy: &DeidPolicy, export: &Export) -> ExportKeys {
        if policy.stable {
            return self.stable();
        }
        let salt = |k: &[u8; 32], purpose: &[u8]| -> [u8; 32] {
            let mut h = blake3::Hasher::new_keyed(k);
            h.update(b"ward deid v1 export salt\0");
            h.update(purpose);
            h.update(&export.identified.0);
            *h.finalize().as_bytes()
        };
        ExportKeys {
            keys: Keys {
                patient: salt(&self.keys.patient, b"patient"),
                ident: salt(&self.keys.ident, b"identifier"),
                shift: salt(&self.keys.shift, b"shift"),
            },
        }
    }
}

/// One export: the identified version it de-identifies (the salt of a policy that is not
/// `stable`) and the time it is made (from the injected clock; Safe Harbor removes birth
/// years showing an age over 89 at that time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    /// The identified version.
    pub identified: ContentHash,
    /// The export time.
    pub at: DateTime<Utc>,
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
        let rule = policy.rule(f)?;
        match rule {
            Rule::Drop => continue,
            Rule::Patient | Rule::Token => {
                has_patient |= rule == Rule::Patient;
                fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
            }
            Rule::Zip | Rule::Status => {
                fields.push(Field::new(f.name(), DataType::Utf8, true));
            }
            Rule::Year { birth } => {
                fields.push(Field::new(
                    f.name(),
                    DataType::Int32,
                    f.is_nullable() || birth,
                ));
            }
            Rule::Age | Rule::Shift | Rule::Keep => {
                fields.push(Field::new(f.name(), f.data_type().clone(), f.is_nullable()));
            }
        }
    }
    if !has_patient {
        return Err(Error::BadInput {
            location: "training set schema".into(),
            field: policy.patient_id_columns.join("|"),
            reason: "no patient id column: de-identification needs one to tokenize ids, order \
                     the rows and shift dates per patient"
                .into(),
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

fn shift_dates(col: &ArrayRef, offsets: &[i64], name: &str, batch: usize) -> Result<ArrayRef> {
    const DAY_S: i64 = 86_400;
    Ok(match col.data_type() {
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
        other => {
            return Err(Error::Internal(format!(
                "shift_dates called on {other} column {name}"
            )))
        }
    })
}

/// The UTC year of every value of a date or timestamp column; `birth`: removed when the
/// year shows an age over 89 at `at` (a birth year 90 or more years before the export's).
fn years(col: &ArrayRef, birth: bool, at: DateTime<Utc>) -> Result<ArrayRef> {
    fn each<T: ArrowPrimitiveType>(col: &ArrayRef) -> Vec<Option<i32>>
    where
        T::Native: Into<i64>,
    {
        col.as_primitive::<T>()
            .iter()
            .map(|v| {
                v.and_then(|v| arrow::temporal_conversions::as_datetime::<T>(v.into()))
                    .map(|d| d.year())
            })
            .collect()
    }
    use arrow::datatypes::{Date32Type, Date64Type};
    let ys = match col.data_type() {
        DataType::Date32 => each::<Date32Type>(col),
        DataType::Date64 => each::<Date64Type>(col),
        DataType::Timestamp(TimeUnit::Second, _) => each::<TimestampSecondType>(col),
        DataType::Timestamp(TimeUnit::Millisecond, _) => each::<TimestampMillisecondType>(col),
        DataType::Timestamp(TimeUnit::Microsecond, _) => each::<TimestampMicrosecondType>(col),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => each::<TimestampNanosecondType>(col),
        other => return Err(Error::Internal(format!("years called on a {other} column"))),
    };
    let now = at.year();
    let out: Int32Array = ys
        .into_iter()
        .map(|y| y.filter(|y| !(birth && now - y >= 90)))
        .collect();
    Ok(Arc::new(out))
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

/// Rows per output batch.
const OUT_BATCH_ROWS: usize = 65_536;

/// De-identifies `batches` by `policy` with `key` for `export` (module docs). The rows come
/// back ordered by patient token (a keyed permutation), a patient's rows in their input
/// order, in batches of at most 65,536 rows, whatever the input's order and batching.
///
/// # Errors
/// [`Error::BadInput`] naming the batch, row and column: no patient id column, a null
/// patient id, a column of the wrong type, a status column holding other text, a date
/// shifted out of range.
pub fn deidentify(
    batches: &[RecordBatch],
    policy: &DeidPolicy,
    key: &DeidKey,
    export: &Export,
) -> Result<Vec<RecordBatch>> {
    let keys = key.export_keys(policy, export);
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let out_schema = output_schema(&first.schema(), policy)?;
    let mut out = Vec::with_capacity(batches.len());
    for (bi, batch) in batches.iter().enumerate() {
        let schema = batch.schema();
        if output_schema(&schema, policy)? != out_schema {
            return Err(Error::BadInput {
                location: format!("batch {bi}"),
                field: "-".into(),
                reason: "its schema differs from the first batch's".into(),
            });
        }
        out.push(deidentify_batch(
            batch,
            bi,
            policy,
            &keys,
            export,
            &out_schema,
        )?);
    }
    order_by_token(out_schema, out, policy)
}

fn deidentify_batch(
    batch: &RecordBatch,
    bi: usize,
    policy: &DeidPolicy,
    keys: &ExportKeys,
    export: &Export,
    out_schema: &SchemaRef,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut rules = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        rules.push(policy.rule(f)?);
    }
    let subject = rules
        .iter()
        .position(|r| *r == Rule::Patient)
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
                reason: "null patient id: its row cannot be given a token".into(),
            });
        }
        let id = ids.value(i);
        let (off, _) = cache
            .entry(id)
            .or_insert_with(|| (keys.shift_days(id, policy), keys.patient_token(id)));
        offsets.push(*off);
    }
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
    for (ci, f) in schema.fields().iter().enumerate() {
        let col = batch.column(ci);
        let new: ArrayRef = match rules[ci] {
            Rule::Drop => continue,
            Rule::Patient => {
                let s = to_strings(col)?;
                let arr: StringArray = s
                    .iter()
                    .map(|v| {
                        v.map(|id| match cache.get(id) {
                            Some((_, t)) => t.clone(),
                            None => keys.patient_token(id),
                        })
                    })
                    .collect();
                Arc::new(arr)
            }
            Rule::Token => {
                let s = to_strings(col)?;
                let arr: StringArray = s
                    .iter()
                    .map(|v| v.map(|id| keys.identifier_token(id)))
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
            Rule::Status => {
                let s = to_strings(col)?;
                if let Some(i) =
                    (0..s.len()).find(|&i| s.is_valid(i) && !STATUS_VALUES.contains(&s.value(i)))
                {
                    return Err(Error::BadInput {
                        location: format!("batch {bi} row {i}"),
                        field: f.name().clone(),
                        reason: format!(
                            "a status column holds text other than {}: allow the column by \
                             name (allow_columns) if it is meant to leave",
                            STATUS_VALUES.join(", ")
                        ),
                    });
                }
                Arc::new(s)
            }
            Rule::Age => cap_ages(col, policy.max_age)?,
            Rule::Year { birth } => years(col, birth, export.at)?,
            Rule::Shift => shift_dates(col, &offsets, f.name(), bi)?,
            Rule::Keep => col.clone(),
        };
        cols.push(new);
    }
    Ok(RecordBatch::try_new(out_schema.clone(), cols)?)
}

/// All rows, ordered by patient token (then input position), in batches of at most
/// [`OUT_BATCH_ROWS`].
fn order_by_token(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    policy: &DeidPolicy,
) -> Result<Vec<RecordBatch>> {
    let all = arrow::compute::concat_batches(&schema, &batches)?;
    let subject = schema
        .fields()
        .iter()
        .position(|f| {
            policy
                .patient_id_columns
                .contains(&f.name().to_ascii_lowercase())
        })
        .ok_or_else(|| Error::Internal("output_schema checked the patient column".into()))?;
    let tokens = all.column(subject).as_string::<i32>();
    let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
    // Stable: a patient's rows keep their relative order.
    order.sort_by(|a, b| tokens.value(*a as usize).cmp(tokens.value(*b as usize)));
    let sorted = arrow::compute::take_record_batch(&all, &UInt32Array::from(order))?;
    let mut out = Vec::new();
    let mut start = 0;
    while start < sorted.num_rows() {
        let len = OUT_BATCH_ROWS.min(sorted.num_rows() - start);
        out.push(sorted.slice(start, len));
        start += len;
    }
    Ok(out)
}

/// Checks that the entity rows of a de-identified caller's historical lookup are a cohort a
/// steward approved: a stored version labelled [`APPROVED_COHORT_LABEL`]. Rows sent inline,
/// or any other version, are refused: a caller choosing the patients it names could send
/// patients it knows and read back their tokens (and date shifts), undoing every export made
/// with the same key. Returns the approved version's manifest.
///
/// # Errors
/// [`Error::PermissionDenied`] saying why (never naming a patient); as [`Store::resolve`].
pub fn approved_entities(store: &Store, entities: &Entities) -> Result<Manifest> {
    match entities {
        Entities::Batches(_) => Err(Error::PermissionDenied {
            reason: format!(
                "a de-identified caller cannot send entity rows: name a stored cohort a \
                 steward approved (label {APPROVED_COHORT_LABEL}) in entities_ref"
            ),
        }),
        Entities::Stored(r) => {
            let m = store.resolve(r)?;
            match m.labels.get(APPROVED_COHORT_LABEL) {
                Some(by) if !by.trim().is_empty() => Ok(m),
                _ => Err(Error::PermissionDenied {
                    reason: format!(
                        "entity rows {} are not a cohort a steward approved (label \
                         {APPROVED_COHORT_LABEL}): a de-identified caller may look up only \
                         approved cohorts",
                        m.hash
                    ),
                }),
            }
        }
    }
}

/// De-identifies the stored version `identified` and stores the result as its own version
/// (kind `training`, name `name`, label `deidentified = <profile>`). Its lineage names the
/// identified version (`inputs`) and the policy hash (`definition`), with the canonical
/// policy, the key id and the export time in `params`; never the key. The export time is
/// the store's clock.
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
    let export = Export {
        identified: *identified,
        at: store.clock().now(),
    };
    let out = deidentify(&batches, policy, key, &export)?;
    let mut opts = PutOptions::new(name, Kind::Training);
    let canonical: serde_json::Value =
        serde_json::from_str(&policy.canonical()).map_err(|e| Error::Internal(e.to_string()))?;
    opts.lineage = Lineage {
        inputs: vec![*identified],
        definition: Some(policy.hash()),
        params: serde_json::json!({
            "op": "deidentify",
            "profile": policy.name(),
            "policy": canonical,
            "key_id": key.key_id(),
            "salt": if policy.stable { "none (stable)" } else { "per export: the identified version" },
            "at": export.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }),
    };
    opts.labels
        .insert("deidentified".into(), policy.name().to_string());
    store.put_batches(out_schema, out, opts).await
}

/// The curated table research opt-outs are read from.
pub const CONSENT_TABLE: &str = "consent";

/// What [`NO_CONSENT`] stands for in a lineage: the store held no `consent` version when the
/// export was made, so no patient was left out.
pub const NO_CONSENT: &str = "none";

/// The consent a research export applied, recorded in its lineage (`lineage.params.consent`)
/// so that it can be checked and rebuilt: which `consent` version, at which time (the
/// store's clock when the export was made), and how much it left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentApplied {
    /// The `consent` version read (`b3:<hex>`), or [`NO_CONSENT`] when the store had none.
    pub version: String,
    /// The time the opt-outs were read as of.
    pub at: DateTime<Utc>,
    /// Patients of the entity rows left out because they opted out of research.
    pub excluded_patients: u64,
    /// Entity rows left out (all rows of those patients).
    pub excluded_rows: u64,
}

impl ConsentApplied {
    /// The `consent` version read, if any.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `version` is neither a hash nor [`NO_CONSENT`].
    pub fn hash(&self) -> Result<Option<ContentHash>> {
        if self.version == NO_CONSENT {
            return Ok(None);
        }
        self.version.parse().map(Some).map_err(|_| {
            Error::invalid(
                "lineage.params.consent.version",
                format!("{:?} is not a version hash", self.version),
            )
        })
    }
}

/// Leaves out of `entities` every row whose patient opted out of research as known at the
/// export time: research exports (training sets) must not hold them (`docs/security.md`,
/// "Consent"). The opt-outs are the `consent` table's decisions in force at that time
/// ([`crate::curated::consent`] has the rule). A new export (`replay` = `None`) reads the
/// latest `consent` version at the store clock's now; a rebuild passes the
/// [`ConsentApplied`] of the lineage, and the same version is read at the same time, so the
/// rebuild leaves out the same rows. Rows keep their order; batches are kept even when
/// emptied (the schema stays).
///
/// # Errors
/// [`Error::InvalidArgument`] when `patient_column` is not a text column of the rows;
/// [`Error::Corrupt`] when the `consent` version does not have the table's columns; store
/// errors reading it.
pub async fn apply_research_consent(
    store: &Store,
    entities: Vec<RecordBatch>,
    patient_column: &str,
    replay: Option<&ConsentApplied>,
) -> Result<(Vec<RecordBatch>, ConsentApplied)> {
    let (version, at) = match replay {
        Some(r) => (r.hash()?, r.at),
        None => {
            let found = store.resolve(&crate::store::VersionRef::Latest(CONSENT_TABLE.into()));
            let version = match found {
                Ok(m) if m.kind == Kind::Curated => Some(m.hash),
                Ok(m) => {
                    return Err(Error::Corrupt {
                        hash: m.hash.to_string(),
                        what: format!(
                            "the latest {CONSENT_TABLE} version is a {} version, not curated",
                            m.kind
                        ),
                    })
                }
                Err(Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            (version, store.clock().now())
        }
    };
    let consent = match version {
        Some(h) => {
            let (_, batches) = store.read(&h).await?;
            crate::curated::consent::research_at(&batches, at).map_err(|what| Error::Corrupt {
                hash: h.to_string(),
                what,
            })?
        }
        None => crate::curated::consent::ResearchConsent::default(),
    };
    let mut excluded_rows = 0u64;
    let mut excluded = BTreeSet::new();
    let mut out = Vec::with_capacity(entities.len());
    for (bi, b) in entities.into_iter().enumerate() {
        if consent.opted_out.is_empty() {
            out.push(b);
            continue;
        }
        let col = b.column_by_name(patient_column).ok_or_else(|| {
            Error::invalid(
                format!("entity rows batch {bi}"),
                format!("no patient column {patient_column:?}"),
            )
        })?;
        let ids = cast(col, &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let keep: arrow::array::BooleanArray = (0..ids.len())
            .map(|i| {
                let out = ids.is_valid(i) && consent.opted_out.contains(ids.value(i));
                if out {
                    excluded.insert(ids.value(i).to_string());
                }
                Some(!out)
            })
            .collect();
        excluded_rows += keep.false_count() as u64;
        out.push(arrow::compute::filter_record_batch(&b, &keep)?);
    }
    let applied = ConsentApplied {
        version: version.map_or_else(|| NO_CONSENT.to_string(), |h| h.to_string()),
        at,
        excluded_patients: excluded.len() as u64,
        excluded_rows,
    };
    Ok((out, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::Int32Type;

    fn key() -> DeidKey {
        DeidKey::from_secret(&[7u8; 32]).unwrap()
    }

    fn export(at: &str) -> Export {
        Export {
            identified: ContentHash([1u8; 32]),
            at: at.parse().unwrap(),
        }
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
            Field::new("x__status", DataType::Utf8, false),
            Field::new("sex", DataType::Utf8, true),
            Field::new("diagnosis_text", DataType::Utf8, true),
            Field::new("visit_number", DataType::Int64, true),
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
                    // 2001-09-09T01:46:40Z, the same, a day later
                    TimestampMicrosecondArray::from(vec![
                        Some(1_000_000_000_000_000),
                        Some(1_000_000_000_000_000),
                        Some(1_000_086_400_000_000),
                    ])
                    .with_timezone("UTC"),
                ),
                // 1997-05-19; 1930-01-01 (96 at the export); null
                Arc::new(Date32Array::from(vec![Some(10_000), Some(-14_610), None])),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
                Arc::new(StringArray::from(vec!["present", "no_data", "outside_ttl"])),
                Arc::new(StringArray::from(vec![Some("female"), Some("male"), None])),
                Arc::new(StringArray::from(vec![
                    Some("Ann Lee fell"),
                    None,
                    Some("x"),
                ])),
                Arc::new(Int64Array::from(vec![Some(17), Some(18), Some(19)])),
            ],
        )
        .unwrap()
    }

    fn names(b: &RecordBatch) -> Vec<String> {
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    #[test]
    fn safe_harbor_keeps_years_groups_ages_cuts_zips_and_allows_text_by_name() {
        let p = DeidPolicy::safe_harbor();
        let k = key();
        let out = deidentify(&[batch()], &p, &k, &export("2026-06-01T00:00:00Z")).unwrap();
        assert_eq!(out.len(), 1);
        let out = &out[0];
        // Free text, names and an identifier-like number are gone; the allowed text stays.
        assert_eq!(
            names(out),
            [
                "patient_id",
                "zip",
                "age",
                "t",
                "birth_date",
                "x",
                "x__status",
                "sex"
            ]
        );
        // Ordered by token: find each input row by its token.
        let ids = out.column(0).as_string::<i32>();
        let p1 = k.patient_token("P1");
        let p2 = k.patient_token("P2");
        let order: Vec<usize> = (0..3)
            .map(|i| {
                let t = ids.value(i);
                let x = out
                    .column(5)
                    .as_primitive::<arrow::datatypes::Float64Type>();
                assert!(t == p1 || t == p2);
                x.value(i) as usize - 1
            })
            .collect();
        let mut sorted: Vec<&str> = (0..3).map(|i| ids.value(i)).collect();
        sorted.sort();
        assert_eq!((0..3).map(|i| ids.value(i)).collect::<Vec<_>>(), sorted);
        // Row r of the input is output row pos[r].
        let pos = |r: usize| order.iter().position(|&o| o == r).unwrap();
        assert_eq!(ids.value(pos(0)), p1);
        assert_eq!(ids.value(pos(2)), p1);
        assert_eq!(ids.value(pos(1)), p2);
        assert!(pos(0) < pos(2), "a patient's rows keep their order");
        let zip = out.column(1).as_string::<i32>();
        assert_eq!(zip.value(pos(0)), "000");
        assert_eq!(zip.value(pos(1)), "123");
        assert!(zip.is_null(pos(2)));
        let age = out.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(age.value(pos(0)), 90);
        assert_eq!(age.value(pos(1)), 40);
        assert!(age.is_null(pos(2)));
        assert_eq!(out.column(3).data_type(), &DataType::Int32);
        let t = out.column(3).as_primitive::<Int32Type>();
        assert!((0..3).all(|i| t.value(i) == 2001));
        let bd = out.column(4).as_primitive::<Int32Type>();
        assert_eq!(bd.value(pos(0)), 1997);
        assert!(
            bd.is_null(pos(1)),
            "a birth year showing an age over 89 goes"
        );
        assert!(bd.is_null(pos(2)));
        let sex = out.column(7).as_string::<i32>();
        assert_eq!(sex.value(pos(0)), "female");
    }

    #[test]
    fn limited_data_set_shifts_dates_per_patient_and_salts_per_export() {
        let p = DeidPolicy::limited_data_set();
        assert!(!p.stable);
        let k = key();
        let e1 = export("2026-06-01T00:00:00Z");
        let out = &deidentify(&[batch()], &p, &k, &e1).unwrap()[0];
        let keys = k.export_keys(&p, &e1);
        let ids = out.column(0).as_string::<i32>();
        let p1 = keys.patient_token("P1");
        assert_ne!(p1, k.patient_token("P1"), "not the stable token");
        let rows: Vec<usize> = (0..3).filter(|&i| ids.value(i) == p1).collect();
        assert_eq!(rows.len(), 2);
        let t = out.column(3).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(t.value(rows[1]) - t.value(rows[0]), 86_400_000_000);
        let d1 = keys.shift_days("P1", &p);
        assert!((-365..=-1).contains(&d1));
        assert_eq!(
            t.value(rows[0]),
            1_000_000_000_000_000 + d1 * 86_400_000_000
        );
        assert_eq!(
            out.column(3).data_type(),
            batch().column(4).data_type(),
            "timestamps keep their type"
        );
        // Another export (another identified version): other tokens and shifts.
        let e2 = Export {
            identified: ContentHash([2u8; 32]),
            ..e1
        };
        let keys2 = k.export_keys(&p, &e2);
        assert_ne!(keys2.patient_token("P1"), p1);
        let shifts = |k: &ExportKeys| {
            (0..20)
                .map(|i| k.shift_days(&format!("P{i}"), &p))
                .collect::<Vec<_>>()
        };
        assert_ne!(shifts(&keys), shifts(&keys2));
        // Stable when the policy says so.
        let stable =
            DeidPolicy::from_toml("profile = \"limited-data-set\"\nstable = true\n", "p.toml")
                .unwrap();
        assert_eq!(
            k.export_keys(&stable, &e2).patient_token("P1"),
            k.patient_token("P1")
        );
    }

    #[test]
    fn the_same_rows_in_any_order_or_batching_give_the_same_output() {
        let p = DeidPolicy::safe_harbor();
        let e = export("2026-06-01T00:00:00Z");
        let b = batch();
        let whole = deidentify(std::slice::from_ref(&b), &p, &key(), &e).unwrap();
        let split = deidentify(&[b.slice(0, 1), b.slice(1, 2)], &p, &key(), &e).unwrap();
        assert_eq!(whole, split);
        // Patients listed the other way round: the same order out.
        let rev = arrow::compute::take_record_batch(&b, &UInt32Array::from(vec![1, 0, 2])).unwrap();
        let out = deidentify(&[rev], &p, &key(), &e).unwrap();
        assert_eq!(out[0].column(0), whole[0].column(0));
    }

    #[test]
    fn status_columns_holding_other_text_are_refused_with_their_place() {
        let b = batch();
        let mut cols = b.columns().to_vec();
        cols[7] = Arc::new(StringArray::from(vec!["present", "Ann Lee", "no_data"]));
        let b = RecordBatch::try_new(b.schema(), cols).unwrap();
        let e = deidentify(
            &[b],
            &DeidPolicy::safe_harbor(),
            &key(),
            &export("2026-01-01T00:00:00Z"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("batch 0 row 1") && e.contains("x__status"),
            "{e}"
        );
        assert!(!e.contains("Ann"), "{e}");
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
        let keys = k.export_keys(
            &DeidPolicy::limited_data_set(),
            &export("2026-01-01T00:00:00Z"),
        );
        assert_eq!(format!("{keys:?}"), "ExportKeys(<redacted>)");
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
    fn policies_parse_by_profile_and_refuse_what_their_name_does_not_allow() {
        let a = DeidPolicy::from_toml("zip_columns = [\"ZIP\", \"zip\"]\n", "p.toml").unwrap();
        let b = DeidPolicy::from_toml("zip_columns = [\"zip\"]\n", "p.toml").unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.profile, Profile::SafeHarbor, "the default profile");
        assert_ne!(a.hash(), DeidPolicy::safe_harbor().hash());
        assert_eq!(
            DeidPolicy::from_toml("profile = \"limited-data-set\"\n", "p.toml").unwrap(),
            DeidPolicy::limited_data_set()
        );
        for (text, needle) in [
            // Date shifting is not Safe Harbor.
            (
                "shift_days_min = -30\nshift_days_max = -1\n",
                "limited-data-set",
            ),
            (
                "profile = \"safe-harbor\"\nshift_days_max = -1\n",
                "limited-data-set",
            ),
            // Names are profiles now.
            ("name = \"safe-harbor\"\n", "profile"),
            ("max_age = 95\n", "90"),
            ("allow_columns = [\"city\"]\n", "smaller than a state"),
            ("allow_columns = [\"mrn\"]\n", "identifiers"),
            ("restricted_zip3 = [\"036\"]\n", "\"059\" is missing"),
            (
                "profile = \"limited-data-set\"\nshift_days_min = -3\nshift_days_max = 2\n",
                "include 0",
            ),
            ("zip_columns = [\"age\"]\n", "age"),
            ("profile = \"expert\"\n", "profile"),
            ("colour = 1\n", "colour"),
        ] {
            let e = DeidPolicy::from_toml(text, "p.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains("p.toml") && e.contains(needle), "{text}: {e}");
        }
        // A limited data set may keep the city.
        let lds = DeidPolicy::from_toml(
            "profile = \"limited-data-set\"\nallow_columns = [\"city\"]\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(lds.allow_columns, ["city"]);
    }

    #[test]
    fn missing_patient_column_and_null_ids_are_named() {
        let b = batch().project(&[1, 2]).unwrap();
        let e = deidentify(
            &[b],
            &DeidPolicy::safe_harbor(),
            &key(),
            &export("2026-01-01T00:00:00Z"),
        )
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
        let e = deidentify(
            &[b],
            &DeidPolicy::safe_harbor(),
            &key(),
            &export("2026-01-01T00:00:00Z"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("batch 0 row 1"), "{e}");
    }

    #[test]
    fn identifier_names_and_types_that_never_leave() {
        assert!(looks_like_identifier("visit_number"));
        assert!(looks_like_identifier("MRN"));
        assert!(looks_like_identifier("payer_id"));
        assert!(!looks_like_identifier("lace_total"));
        assert!(!looks_like_identifier("admissions_365d"));
        let p = DeidPolicy::safe_harbor();
        let f = |n: &str, dt: DataType| p.rule(&Field::new(n, dt, true)).unwrap();
        assert_eq!(f("photo_bytes", DataType::Binary), Rule::Drop);
        assert_eq!(f("ssn", DataType::Int64), Rule::Drop);
        assert_eq!(f("note", DataType::Utf8), Rule::Drop);
        assert_eq!(f("sex", DataType::Utf8), Rule::Keep);
        assert_eq!(
            f("admit_time", DataType::Time64(TimeUnit::Microsecond)),
            Rule::Drop
        );
        assert_eq!(f("lace_total", DataType::Float64), Rule::Keep);
        let lds = DeidPolicy::limited_data_set();
        assert_eq!(
            lds.rule(&Field::new("admit", DataType::Date32, true))
                .unwrap(),
            Rule::Shift
        );
        let allowed_list = DeidPolicy {
            allow_columns: vec!["codes".into()],
            ..DeidPolicy::safe_harbor()
        };
        let e = allowed_list
            .rule(&Field::new(
                "codes",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ))
            .unwrap_err()
            .to_string();
        assert!(e.contains("codes"), "{e}");
    }
}
