//! The de-identification policy: the profiles (Safe Harbor, limited data set), the policy
//! file, and the rule each column gets (token, generalize, reduce or shift dates, keep, drop).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use arrow::datatypes::{DataType, Field};
use serde::{Deserialize, Serialize};

use super::identifiers::*;
use crate::error::{Error, Result};
use crate::hash::ContentHash;

pub(super) fn strings(v: &[&str]) -> Vec<String> {
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
pub(super) struct RawPolicy {
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
    pub(super) fn rule(&self, field: &Field) -> Result<Rule> {
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
        if is_text(dt) && c.ends_with(crate::features::STATUS_SUFFIX) {
            return Ok(Rule::Status);
        }
        // Text not allowed by name, binary (photos, biometrics), nested: dropped.
        Ok(Rule::Drop)
    }
}

pub(super) fn is_text(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

pub(super) fn is_date(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)
    )
}

/// Numbers, booleans, nulls, durations and intervals: values, not text.
pub(super) fn is_plain(dt: &DataType) -> bool {
    dt.is_numeric()
        || matches!(
            dt,
            DataType::Boolean | DataType::Null | DataType::Duration(_) | DataType::Interval(_)
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
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
