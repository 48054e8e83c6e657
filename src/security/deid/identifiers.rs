//! The identifier tables of de-identification: the 3-digit ZIP areas Safe Harbor writes
//! `000`, the column names that are identifiers, and Ward's feature status values.

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
