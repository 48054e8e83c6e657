//! The master patient index: which source patient records are one person.
//!
//! A hospital with an ADT feed, a lab system and an EHR FHIR API holds one person under three
//! patient ids (MRNs under different assigning authorities). This module links those records
//! and keeps every link as versioned data, `docs/mpi.md` is the user's page.
//!
//! Evidence, in the order links are applied:
//! 1. **user** decisions (`ward mpi link` / `ward mpi unlink`): a user's unlink wins over
//!    every rule (the two records are never put in one cluster while it holds);
//! 2. **identifier**: two records holding the same identifier (system and value, after the
//!    configured system aliases): HL7 v2 PID-3 with its assigning authority (CX.4), FHIR
//!    `Patient.identifier`, both curated into `patient_identifiers`;
//! 3. **patient.link**: FHIR `Patient.link` (to a Patient id, or to an identifier);
//! 4. **rules**: the user's deterministic rules (`[[mpi.rule]]`), each a list of
//!    demographic fields that must agree exactly after normalisation ([`Field`]).
//!
//! Every link is a row of the `mpi_links` dataset ([`links_schema`]) with the rule that made
//! it, the evidence (which identifier, which field values) and `known_at`: the time its
//! evidence was all known (the later of the two records' versions or identifier rows that
//! matched). Clusters "as known at `t`" ([`Index::clusters_at`]) use only the links and
//! decisions with `known_at <= t`, so a link learned later never joins records for an earlier
//! time. A person's id at `t` is the smallest patient id of its cluster at `t`.
//!
//! The same as intervals: [`Index::epochs`] (each cluster of two or more records with the
//! interval of knowledge time it holds) and [`Persons`] (the person of any record at any
//! time), which person-keyed timelines (`features/person.rs`) and the lookups against them
//! read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Date32Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The dataset name of the link records.
pub const LINKS: &str = "mpi_links";

/// A demographic field a rule compares, after normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// `family_name`: lower case, letters and digits only (`O'Brien-Smith` → `obriensmith`).
    FamilyName,
    /// `family_soundex`: the American Soundex code of the family name (`Smith`, `Smyth` →
    /// `S530`), which a misspelt name often keeps.
    FamilySoundex,
    /// `family_letters`: the distinct letters of the family name, sorted (`Miller`,
    /// `Milelr`, `Millerr` → `eilmr`), which two swapped letters, a doubled letter or a
    /// dropped repeated letter leave unchanged.
    FamilyLetters,
    /// `given_name`: the first given name, lower case, letters only, a nickname read as its
    /// formal name (`Bob` → `robert`, [`NICKNAMES`]).
    GivenName,
    /// `given_initial`: the first letter of the normalised given name.
    GivenInitial,
    /// `birth_date`: the date as written.
    BirthDate,
    /// `birth_year`: its year.
    BirthYear,
    /// `birth_month`: its year and month (`1957-03`), which a transposition of the day's
    /// digits leaves unchanged.
    BirthMonth,
    /// `birthday`: its month and day (`03-12`), which a transposition of the year's digits
    /// leaves unchanged.
    Birthday,
    /// `birth_digits`: the eight digits of the date (YYYYMMDD) in sorted order, which two
    /// transposed digits (`1957-03-12` / `1957-03-21`, `1937` / `1973`) leave unchanged.
    BirthDigits,
    /// `sex`: the curated value (`female`, `male`, ...); `unknown` counts as missing.
    Sex,
    /// `zip`: the first five digits of the postal code.
    Zip,
}

impl Field {
    /// Parses a field name as written in a rule.
    pub fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "family_name" => Field::FamilyName,
            "family_soundex" => Field::FamilySoundex,
            "family_letters" => Field::FamilyLetters,
            "given_name" => Field::GivenName,
            "given_initial" => Field::GivenInitial,
            "birth_date" => Field::BirthDate,
            "birth_year" => Field::BirthYear,
            "birth_digits" => Field::BirthDigits,
            "birth_month" => Field::BirthMonth,
            "birthday" => Field::Birthday,
            "sex" => Field::Sex,
            "zip" => Field::Zip,
            _ => return None,
        })
    }

    /// The name as written in rules.
    pub fn name(self) -> &'static str {
        match self {
            Field::FamilyName => "family_name",
            Field::FamilySoundex => "family_soundex",
            Field::FamilyLetters => "family_letters",
            Field::GivenName => "given_name",
            Field::GivenInitial => "given_initial",
            Field::BirthDate => "birth_date",
            Field::BirthYear => "birth_year",
            Field::BirthDigits => "birth_digits",
            Field::BirthMonth => "birth_month",
            Field::Birthday => "birthday",
            Field::Sex => "sex",
            Field::Zip => "zip",
        }
    }

    /// The normalised value of this field in `d`; `None` when missing (a rule never
    /// matches on a missing value).
    pub fn value(self, d: &Demographics) -> Option<String> {
        let v = match self {
            Field::FamilyName => d.family_name.as_deref().map(letters),
            Field::FamilySoundex => d.family_name.as_deref().and_then(soundex),
            Field::FamilyLetters => d.family_name.as_deref().map(|f| {
                let set: BTreeSet<char> = letters(f).chars().collect();
                set.into_iter().collect()
            }),
            Field::GivenName => d.given_name.as_deref().map(given),
            Field::GivenInitial => d
                .given_name
                .as_deref()
                .map(given)
                .and_then(|g| g.chars().next().map(String::from)),
            Field::BirthDate => d.birth_date.map(|b| b.to_string()),
            Field::BirthYear => d.birth_date.map(|b| b.year().to_string()),
            Field::BirthMonth => d.birth_date.map(|b| b.format("%Y-%m").to_string()),
            Field::Birthday => d.birth_date.map(|b| b.format("%m-%d").to_string()),
            Field::BirthDigits => d.birth_date.map(|b| {
                let mut digits: Vec<char> = b.format("%Y%m%d").to_string().chars().collect();
                digits.sort_unstable();
                digits.into_iter().collect()
            }),
            Field::Sex => d
                .sex
                .as_deref()
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| s != "unknown"),
            Field::Zip => d.zip.as_deref().map(|z| {
                z.chars()
                    .filter(char::is_ascii_digit)
                    .take(5)
                    .collect::<String>()
            }),
        };
        v.filter(|s| !s.is_empty())
    }
}

/// Lower case, letters and digits only.
fn letters(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Nicknames and the formal given name each stands for (common English forms).
pub const NICKNAMES: &[(&str, &str)] = &[
    ("bob", "robert"),
    ("bobby", "robert"),
    ("rob", "robert"),
    ("robbie", "robert"),
    ("bill", "william"),
    ("billy", "william"),
    ("will", "william"),
    ("liam", "william"),
    ("jim", "james"),
    ("jimmy", "james"),
    ("jamie", "james"),
    ("mike", "michael"),
    ("mikey", "michael"),
    ("dave", "david"),
    ("davey", "david"),
    ("rich", "richard"),
    ("rick", "richard"),
    ("dick", "richard"),
    ("joe", "joseph"),
    ("joey", "joseph"),
    ("tom", "thomas"),
    ("tommy", "thomas"),
    ("chuck", "charles"),
    ("charlie", "charles"),
    ("chris", "christopher"),
    ("dan", "daniel"),
    ("danny", "daniel"),
    ("matt", "matthew"),
    ("tony", "anthony"),
    ("andy", "andrew"),
    ("drew", "andrew"),
    ("steve", "steven"),
    ("ken", "kenneth"),
    ("kenny", "kenneth"),
    ("josh", "joshua"),
    ("greg", "gregory"),
    ("ed", "edward"),
    ("eddie", "edward"),
    ("ted", "edward"),
    ("ron", "ronald"),
    ("don", "donald"),
    ("tim", "timothy"),
    ("jeff", "jeffrey"),
    ("ben", "benjamin"),
    ("sam", "samuel"),
    ("nick", "nicholas"),
    ("larry", "lawrence"),
    ("jerry", "gerald"),
    ("pat", "patricia"),
    ("patty", "patricia"),
    ("trish", "patricia"),
    ("jen", "jennifer"),
    ("jenny", "jennifer"),
    ("liz", "elizabeth"),
    ("beth", "elizabeth"),
    ("betty", "elizabeth"),
    ("lizzie", "elizabeth"),
    ("barb", "barbara"),
    ("sue", "susan"),
    ("susie", "susan"),
    ("jess", "jessica"),
    ("kate", "katherine"),
    ("kathy", "katherine"),
    ("katie", "katherine"),
    ("cathy", "catherine"),
    ("peggy", "margaret"),
    ("maggie", "margaret"),
    ("meg", "margaret"),
    ("sandy", "sandra"),
    ("becky", "rebecca"),
    ("debbie", "deborah"),
    ("deb", "deborah"),
    ("mandy", "amanda"),
    ("kim", "kimberly"),
    ("steph", "stephanie"),
    ("vicky", "victoria"),
    ("chris", "christine"),
    ("nancy", "ann"),
    ("annie", "ann"),
    ("cindy", "cynthia"),
    ("angie", "angela"),
    ("val", "valerie"),
    ("dot", "dorothy"),
    ("dottie", "dorothy"),
    ("molly", "mary"),
    ("polly", "mary"),
];

/// The normalised first given name: letters, lower case, a nickname as its formal name.
fn given(s: &str) -> String {
    let first = s.split_whitespace().next().unwrap_or("");
    let g = letters(first);
    NICKNAMES
        .iter()
        .find(|(nick, _)| *nick == g)
        .map_or(g, |(_, formal)| (*formal).to_string())
}

/// American Soundex (the U.S. National Archives' rules: H and W do not separate letters of
/// the same code). `None` for a name without a letter.
pub fn soundex(name: &str) -> Option<String> {
    let code = |c: char| match c {
        'b' | 'f' | 'p' | 'v' => '1',
        'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => '2',
        'd' | 't' => '3',
        'l' => '4',
        'm' | 'n' => '5',
        'r' => '6',
        'h' | 'w' => 'h',
        _ => '0',
    };
    let mut chars = name
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase());
    let first = chars.next()?;
    let mut out = String::from(first.to_ascii_uppercase());
    let mut last = code(first);
    for c in chars {
        let k = code(c);
        if k == 'h' {
            continue;
        }
        if k != '0' && k != last {
            out.push(k);
            if out.len() == 4 {
                break;
            }
        }
        last = k;
    }
    while out.len() < 4 {
        out.push('0');
    }
    Some(out)
}

/// One deterministic rule: the fields that must agree.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name, written into every link it makes.
    pub name: String,
    /// The fields, all present and equal after normalisation.
    pub fields: Vec<Field>,
    /// Link a group of records sharing the key only when no source holds two of them
    /// (default): two records of one source with the same key are two people (or a
    /// duplicate that source must resolve), so the key does not say which is which.
    pub unique_per_source: bool,
}

/// The MPI configuration: rules and system aliases.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// The rules, in order.
    pub rules: Vec<Rule>,
    /// Identifier systems that name one namespace: written system → canonical name.
    pub system_alias: BTreeMap<String, String>,
    /// Identifier type codes that never link (default: none).
    pub ignore_types: BTreeSet<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    mpi: MpiToml,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MpiToml {
    #[serde(default)]
    rule: Vec<RuleToml>,
    #[serde(default)]
    system_alias: BTreeMap<String, String>,
    #[serde(default)]
    ignore_types: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleToml {
    name: String,
    fields: Vec<String>,
    #[serde(default = "yes")]
    unique_per_source: bool,
}

fn yes() -> bool {
    true
}

impl Config {
    /// Parses a TOML configuration (`[mpi]`, `[[mpi.rule]]`, `[mpi.system_alias]`).
    /// `origin` names the file in errors.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the file, the rule and the field at fault.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let file: FileToml =
            toml::from_str(text).map_err(|e| Error::invalid(origin, e.to_string()))?;
        let mut rules = Vec::new();
        let mut names = BTreeSet::new();
        for (i, r) in file.mpi.rule.into_iter().enumerate() {
            let at = format!("{origin}: [[mpi.rule]] #{} ({:?})", i + 1, r.name);
            if r.name.trim().is_empty() {
                return Err(Error::invalid(at, "the rule needs a name"));
            }
            if matches!(r.name.as_str(), "user" | "identifier" | "patient.link") {
                return Err(Error::invalid(
                    at,
                    "this name is reserved for built-in evidence",
                ));
            }
            if !names.insert(r.name.clone()) {
                return Err(Error::invalid(at, "another rule has this name"));
            }
            if r.fields.is_empty() {
                return Err(Error::invalid(at, "a rule needs at least one field"));
            }
            let mut fields = Vec::new();
            for f in &r.fields {
                let field = Field::parse(f).ok_or_else(|| {
                    Error::invalid(
                        at.clone(),
                        format!(
                            "unknown field {f:?}: use family_name, family_soundex, family_letters, given_name, \
                             given_initial, birth_date, birth_year, birth_month, birthday, \
                             birth_digits, sex or zip"
                        ),
                    )
                })?;
                fields.push(field);
            }
            rules.push(Rule {
                name: r.name,
                fields,
                unique_per_source: r.unique_per_source,
            });
        }
        Ok(Config {
            rules,
            system_alias: file.mpi.system_alias,
            ignore_types: file.mpi.ignore_types.into_iter().collect(),
        })
    }

    /// The default rules (`docs/mpi.md` explains each).
    pub fn default_rules() -> Config {
        let rule = |name: &str, f: &[Field]| Rule {
            name: name.to_string(),
            fields: f.to_vec(),
            unique_per_source: true,
        };
        use Field::*;
        Config {
            rules: vec![
                rule("name-birth", &[FamilyName, GivenName, BirthDate]),
                rule(
                    "soundex-birth-zip",
                    &[FamilySoundex, GivenName, BirthDate, Zip],
                ),
                rule(
                    "soundex-birth-sex",
                    &[FamilySoundex, GivenName, BirthDate, Sex],
                ),
                rule("letters-birth", &[FamilyLetters, GivenName, BirthDate]),
                rule("given-birth-zip-sex", &[GivenName, BirthDate, Zip, Sex]),
                rule("family-birth-zip", &[FamilyName, BirthDate, Zip]),
                rule(
                    "soundex-year-zip-sex",
                    &[FamilySoundex, GivenName, BirthYear, Zip, Sex],
                ),
                rule(
                    "letters-year-zip",
                    &[FamilyLetters, GivenName, BirthYear, Zip],
                ),
                rule(
                    "soundex-month-sex",
                    &[FamilySoundex, GivenName, BirthMonth, Sex],
                ),
                rule(
                    "soundex-month-zip",
                    &[FamilySoundex, GivenName, BirthMonth, Zip],
                ),
                rule(
                    "soundex-birthday-zip",
                    &[FamilySoundex, GivenName, Birthday, Zip],
                ),
                rule(
                    "letters-birthday-zip",
                    &[FamilyLetters, GivenName, Birthday, Zip],
                ),
                rule("name-zip-sex", &[FamilyName, GivenName, Zip, Sex]),
                rule(
                    "family-digits-zip-sex",
                    &[FamilyName, BirthDigits, Zip, Sex],
                ),
            ],
            ..Config::default()
        }
    }

    fn system<'a>(&'a self, s: &'a str) -> &'a str {
        self.system_alias.get(s).map_or(s, String::as_str)
    }
}

/// The demographics of one patient record version (a `patients` row).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Demographics {
    /// The record.
    pub patient_id: String,
    /// Family name.
    pub family_name: Option<String>,
    /// Given name(s).
    pub given_name: Option<String>,
    /// Date of birth.
    pub birth_date: Option<NaiveDate>,
    /// Sex.
    pub sex: Option<String>,
    /// Postal code.
    pub zip: Option<String>,
    /// Where the record comes from (`patients.source_system`), for
    /// [`Rule::unique_per_source`].
    pub source: String,
    /// When this version was known.
    pub known_at: DateTime<Utc>,
}

/// One identifier or link of a patient record (a `patient_identifiers` row).
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The record.
    pub patient_id: String,
    /// `identifier` or `link`.
    pub kind: String,
    /// Namespace (or `Patient` for a link to a Patient id).
    pub system: String,
    /// Value (or the linked Patient id).
    pub value: String,
    /// Type code.
    pub type_code: Option<String>,
    /// When it was known.
    pub known_at: DateTime<Utc>,
}

/// One row of `mpi_links`: a link between two records, or a user's decision.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    /// One record (the smaller id for rule links).
    pub patient_id: String,
    /// The other record.
    pub other_id: String,
    /// `link` or `unlink` (only user decisions unlink).
    pub decision: String,
    /// `user`, `identifier`, `patient.link`, or the rule's name.
    pub rule: String,
    /// What matched: `system|value`, the fields and their normalised values, or the user's
    /// reason.
    pub evidence: String,
    /// When the evidence was all known (a user decision: when it was made).
    pub known_at: DateTime<Utc>,
}

/// The Arrow schema of `mpi_links`.
pub fn links_schema() -> SchemaRef {
    let s = |n: &str| ArrowField::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        s("patient_id"),
        s("other_id"),
        s("decision"),
        s("rule"),
        s("evidence"),
        ArrowField::new(
            "known_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// Links as one record batch, in canonical order (so the dataset hash is a function of the
/// set of links).
///
/// # Errors
/// Arrow errors (a bug).
pub fn links_batch(links: &[Link]) -> Result<RecordBatch> {
    let mut sorted: Vec<&Link> = links.iter().collect();
    sorted.sort_by(|a, b| {
        (
            a.known_at,
            &a.patient_id,
            &a.other_id,
            &a.rule,
            &a.decision,
            &a.evidence,
        )
            .cmp(&(
                b.known_at,
                &b.patient_id,
                &b.other_id,
                &b.rule,
                &b.decision,
                &b.evidence,
            ))
    });
    let col = |f: &dyn Fn(&Link) -> &str| -> ArrayRef {
        let mut b = StringBuilder::new();
        for l in &sorted {
            b.append_value(f(l));
        }
        Arc::new(b.finish())
    };
    let known: TimestampMicrosecondArray = sorted
        .iter()
        .map(|l| Some(l.known_at.timestamp_micros()))
        .collect::<TimestampMicrosecondArray>()
        .with_timezone("UTC");
    Ok(RecordBatch::try_new(
        links_schema(),
        vec![
            col(&|l| &l.patient_id),
            col(&|l| &l.other_id),
            col(&|l| &l.decision),
            col(&|l| &l.rule),
            col(&|l| &l.evidence),
            Arc::new(known),
        ],
    )?)
}

fn string_col<'a>(b: &'a RecordBatch, name: &str, what: &str) -> Result<&'a StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| Error::invalid(what, format!("no text column {name:?}")))
}

fn ts_col<'a>(b: &'a RecordBatch, name: &str, what: &str) -> Result<&'a TimestampMicrosecondArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| Error::invalid(what, format!("no timestamp column {name:?}")))
}

fn opt(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

fn at(a: &TimestampMicrosecondArray, i: usize) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(a.value(i)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Reads `mpi_links` batches.
///
/// # Errors
/// [`Error::InvalidArgument`] when a column is missing or null.
pub fn read_links(batches: &[RecordBatch]) -> Result<Vec<Link>> {
    let mut out = Vec::new();
    for b in batches {
        let what = LINKS;
        let (p, o, d) = (
            string_col(b, "patient_id", what)?,
            string_col(b, "other_id", what)?,
            string_col(b, "decision", what)?,
        );
        let (r, e, k) = (
            string_col(b, "rule", what)?,
            string_col(b, "evidence", what)?,
            ts_col(b, "known_at", what)?,
        );
        for i in 0..b.num_rows() {
            out.push(Link {
                patient_id: p.value(i).to_string(),
                other_id: o.value(i).to_string(),
                decision: d.value(i).to_string(),
                rule: r.value(i).to_string(),
                evidence: e.value(i).to_string(),
                known_at: at(k, i),
            });
        }
    }
    Ok(out)
}

/// Reads curated `patients` batches into record versions.
///
/// # Errors
/// [`Error::InvalidArgument`] when a column is missing.
pub fn read_patients(batches: &[RecordBatch]) -> Result<Vec<Demographics>> {
    let mut out = Vec::new();
    for b in batches {
        let what = "patients";
        let id = string_col(b, "patient_id", what)?;
        let family = string_col(b, "family_name", what)?;
        let given = string_col(b, "given_name", what)?;
        let sex = string_col(b, "sex", what)?;
        let zip = string_col(b, "zip", what)?;
        let known = ts_col(b, "known_at", what)?;
        let source = string_col(b, "source_system", what)?;
        let birth = b
            .column_by_name("birth_date")
            .and_then(|c| c.as_any().downcast_ref::<Date32Array>())
            .ok_or_else(|| Error::invalid(what, "no date column \"birth_date\""))?;
        for i in 0..b.num_rows() {
            out.push(Demographics {
                patient_id: id.value(i).to_string(),
                family_name: opt(family, i),
                given_name: opt(given, i),
                birth_date: (!birth.is_null(i))
                    .then(|| birth.value_as_date(i))
                    .flatten(),
                sex: opt(sex, i),
                zip: opt(zip, i),
                source: source.value(i).to_string(),
                known_at: at(known, i),
            });
        }
    }
    Ok(out)
}

/// Reads curated `patient_identifiers` batches.
///
/// # Errors
/// [`Error::InvalidArgument`] when a column is missing.
pub fn read_identifiers(batches: &[RecordBatch]) -> Result<Vec<Ident>> {
    let mut out = Vec::new();
    for b in batches {
        let what = "patient_identifiers";
        let id = string_col(b, "patient_id", what)?;
        let kind = string_col(b, "kind", what)?;
        let system = string_col(b, "system", what)?;
        let value = string_col(b, "value", what)?;
        let type_code = string_col(b, "type", what)?;
        let known = ts_col(b, "known_at", what)?;
        for i in 0..b.num_rows() {
            out.push(Ident {
                patient_id: id.value(i).to_string(),
                kind: kind.value(i).to_string(),
                system: system.value(i).to_string(),
                value: value.value(i).to_string(),
                type_code: opt(type_code, i),
                known_at: at(known, i),
            });
        }
    }
    Ok(out)
}

/// Links the records: identifier, `Patient.link` and rule links, each with the time its
/// evidence was all known, plus the user decisions of `decisions` (carried as they are).
/// Pure: the same records, identifiers, configuration and decisions give the same links.
pub fn link(
    cfg: &Config,
    patients: &[Demographics],
    idents: &[Ident],
    decisions: &[Link],
) -> Vec<Link> {
    let mut out: Vec<Link> = decisions
        .iter()
        .filter(|l| l.rule == "user")
        .cloned()
        .collect();
    // Groups of records sharing a key: per record, the earliest time it held the key.
    fn star(
        groups: BTreeMap<String, BTreeMap<String, DateTime<Utc>>>,
        rule: &str,
        evidence: &dyn Fn(&str) -> String,
        out: &mut Vec<Link>,
    ) {
        for (key, members) in groups {
            if members.len() < 2 {
                continue;
            }
            let mut m: Vec<(DateTime<Utc>, String)> =
                members.into_iter().map(|(p, t)| (t, p)).collect();
            m.sort();
            let Some((t0, first)) = m.first().cloned() else {
                continue;
            };
            for (t, p) in m.into_iter().skip(1) {
                let (a, b) = if first < p {
                    (first.clone(), p)
                } else {
                    (p, first.clone())
                };
                out.push(Link {
                    patient_id: a,
                    other_id: b,
                    decision: "link".into(),
                    rule: rule.into(),
                    evidence: evidence(&key),
                    known_at: t.max(t0),
                });
            }
        }
    }
    let earliest = |g: &mut BTreeMap<String, BTreeMap<String, DateTime<Utc>>>,
                    key: String,
                    p: &str,
                    t: DateTime<Utc>| {
        let e = g.entry(key).or_default().entry(p.to_string()).or_insert(t);
        *e = (*e).min(t);
    };
    // Identifiers.
    let mut by_ident = BTreeMap::new();
    for i in idents.iter().filter(|i| i.kind == "identifier") {
        if i.type_code
            .as_ref()
            .is_some_and(|t| cfg.ignore_types.contains(t))
        {
            continue;
        }
        let key = format!("{}|{}", cfg.system(&i.system), i.value);
        earliest(&mut by_ident, key, &i.patient_id, i.known_at);
    }
    // Patient.link: to a Patient id, or to whoever holds an identifier.
    for l in idents.iter().filter(|i| i.kind == "link") {
        let kind = l.type_code.as_deref().unwrap_or("link");
        if l.system == "Patient" {
            if l.value != l.patient_id {
                let (a, b) = if l.patient_id < l.value {
                    (l.patient_id.clone(), l.value.clone())
                } else {
                    (l.value.clone(), l.patient_id.clone())
                };
                out.push(Link {
                    patient_id: a,
                    other_id: b,
                    decision: "link".into(),
                    rule: "patient.link".into(),
                    evidence: format!("{} Patient.link ({kind}) Patient/{}", l.patient_id, l.value),
                    known_at: l.known_at,
                });
            }
            continue;
        }
        let key = format!("{}|{}", cfg.system(&l.system), l.value);
        if let Some(holders) = by_ident.get(&key) {
            for (p, t) in holders {
                if *p == l.patient_id {
                    continue;
                }
                let (a, b) = if l.patient_id < *p {
                    (l.patient_id.clone(), p.clone())
                } else {
                    (p.clone(), l.patient_id.clone())
                };
                out.push(Link {
                    patient_id: a,
                    other_id: b,
                    decision: "link".into(),
                    rule: "patient.link".into(),
                    evidence: format!("{} Patient.link ({kind}) identifier {key}", l.patient_id),
                    known_at: l.known_at.max(*t),
                });
            }
        }
    }
    star(by_ident, "identifier", &|k| k.to_string(), &mut out);
    // Rules over every record version. A record's source: the `source_system` of its
    // earliest version.
    let mut source: HashMap<&str, (DateTime<Utc>, &str)> = HashMap::new();
    for d in patients {
        let e = source
            .entry(d.patient_id.as_str())
            .or_insert((d.known_at, d.source.as_str()));
        if d.known_at < e.0 {
            *e = (d.known_at, d.source.as_str());
        }
    }
    for rule in &cfg.rules {
        let mut groups = BTreeMap::new();
        for d in patients {
            let values: Option<Vec<String>> = rule.fields.iter().map(|f| f.value(d)).collect();
            let Some(values) = values else { continue };
            let key = rule
                .fields
                .iter()
                .zip(&values)
                .map(|(f, v)| format!("{}={v}", f.name()))
                .collect::<Vec<_>>()
                .join(", ");
            earliest(&mut groups, key, &d.patient_id, d.known_at);
        }
        if rule.unique_per_source {
            groups.retain(|_, members| {
                let mut seen = BTreeSet::new();
                members
                    .keys()
                    .all(|p| seen.insert(source.get(p.as_str()).map_or("", |s| s.1)))
            });
        }
        star(groups, &rule.name, &|k| k.to_string(), &mut out);
    }
    out.sort();
    out.dedup();
    out
}

/// The links of a store, ready to answer "which cluster, as known at `t`".
#[derive(Debug, Clone, Default)]
pub struct Index {
    links: Vec<Link>,
    /// Rule priority: user, identifier, patient.link, then rules by name order of first use.
    priority: HashMap<String, usize>,
}

/// One cluster as known at some time: its members and the person id (the smallest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The person id: the smallest member id.
    pub person_id: String,
    /// Members, sorted.
    pub members: Vec<String>,
}

impl Index {
    /// An index over `links` (an `mpi_links` version's rows).
    pub fn new(links: Vec<Link>) -> Index {
        let mut priority = HashMap::new();
        priority.insert("user".to_string(), 0);
        priority.insert("identifier".to_string(), 1);
        priority.insert("patient.link".to_string(), 2);
        for l in &links {
            let n = priority.len();
            priority.entry(l.rule.clone()).or_insert(n);
        }
        Index { links, priority }
    }

    /// The links and decisions.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Every cluster of two or more records as known at `t` (`None`: everything known).
    /// The user's latest decision on a pair (as known at `t`) holds: `unlink` keeps the two
    /// records apart (no link that would join their clusters is applied), `link` joins them.
    /// Links are applied by priority (user, identifier, `Patient.link`, rules), then time,
    /// then ids, so the result does not depend on row order.
    pub fn clusters_at(&self, t: Option<DateTime<Utc>>) -> Vec<Cluster> {
        let visible = |l: &&Link| t.is_none_or(|t| l.known_at <= t);
        // The latest user decision per pair.
        let mut decided: BTreeMap<(String, String), &Link> = BTreeMap::new();
        for l in self
            .links
            .iter()
            .filter(visible)
            .filter(|l| l.rule == "user")
        {
            let pair = ordered(&l.patient_id, &l.other_id);
            match decided.get(&pair) {
                Some(prev) if prev.known_at > l.known_at => {}
                _ => {
                    decided.insert(pair, l);
                }
            }
        }
        let apart: Vec<(String, String)> = decided
            .iter()
            .filter(|(_, l)| l.decision == "unlink")
            .map(|(p, _)| p.clone())
            .collect();
        let mut edges: Vec<&Link> = self
            .links
            .iter()
            .filter(visible)
            .filter(|l| l.rule != "user" && l.decision == "link")
            .collect();
        edges.extend(decided.values().filter(|l| l.decision == "link"));
        edges.sort_by_key(|l| {
            (
                self.priority.get(&l.rule).copied().unwrap_or(usize::MAX),
                l.known_at,
                l.patient_id.clone(),
                l.other_id.clone(),
            )
        });
        let mut uf = UnionFind::default();
        for l in edges {
            if apart.contains(&ordered(&l.patient_id, &l.other_id)) {
                continue;
            }
            uf.union_unless_apart(&l.patient_id, &l.other_id, &apart);
        }
        uf.clusters()
    }

    /// The cluster of `patient` as known at `t` (a record linked to none is its own).
    pub fn cluster_of(&self, patient: &str, t: Option<DateTime<Utc>>) -> Cluster {
        self.clusters_at(t)
            .into_iter()
            .find(|c| c.members.iter().any(|m| m == patient))
            .unwrap_or_else(|| Cluster {
                person_id: patient.to_string(),
                members: vec![patient.to_string()],
            })
    }

    /// The links and decisions that touch any member of `cluster` (as known at `t`), for
    /// `ward mpi explain`.
    pub fn explain(&self, cluster: &Cluster, t: Option<DateTime<Utc>>) -> Vec<&Link> {
        let members: BTreeSet<&str> = cluster.members.iter().map(String::as_str).collect();
        self.links
            .iter()
            .filter(|l| t.is_none_or(|t| l.known_at <= t))
            .filter(|l| {
                members.contains(l.patient_id.as_str()) || members.contains(l.other_id.as_str())
            })
            .collect()
    }
}

/// One cluster of two or more records over an interval of knowledge time: from `from` on,
/// until `until` (when a later link or unlink changed it), these records are one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// The person id over the interval: the smallest member id.
    pub person_id: String,
    /// Members, sorted.
    pub members: Vec<String>,
    /// The first instant the cluster holds (microseconds since the epoch, UTC): the
    /// `known_at` of the link or decision that made it.
    pub from: i64,
    /// The instant it stops holding (microseconds), if it does.
    pub until: Option<i64>,
}

impl Index {
    /// Every cluster of two or more records over time ([`Epoch`]), sorted by person id and
    /// then time: what [`Index::clusters_at`] gives at each `t`, as intervals. A record in
    /// no epoch at `t` is a person of its own at `t`.
    ///
    /// Computed per connected component of the links (records that any link or decision
    /// touches together), each at the distinct `known_at` times of its own links, so the cost
    /// follows the size of the components, not of the whole index.
    pub fn epochs(&self) -> Vec<Epoch> {
        // Components over every row, decisions included (an unlink between two components
        // decides how they may join).
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut parent: Vec<usize> = Vec::new();
        fn find(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        fn id<'a>(s: &'a str, ids: &mut HashMap<&'a str, usize>, parent: &mut Vec<usize>) -> usize {
            let n = parent.len();
            let i = *ids.entry(s).or_insert(n);
            if i == n {
                parent.push(n);
            }
            i
        }
        let mut ends = Vec::with_capacity(self.links.len());
        for l in &self.links {
            let a = id(&l.patient_id, &mut ids, &mut parent);
            let b = id(&l.other_id, &mut ids, &mut parent);
            ends.push(a);
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            if ra != rb {
                parent[ra.max(rb)] = ra.min(rb);
            }
        }
        let mut components: BTreeMap<usize, Vec<Link>> = BTreeMap::new();
        for (l, a) in self.links.iter().zip(ends) {
            let root = find(&mut parent, a);
            components.entry(root).or_default().push(l.clone());
        }
        let mut out = Vec::new();
        for links in components.into_values() {
            let mut times: Vec<DateTime<Utc>> = links.iter().map(|l| l.known_at).collect();
            times.sort();
            times.dedup();
            let sub = Index {
                links,
                priority: self.priority.clone(),
            };
            // Open clusters by members, with the person id and the time they formed.
            let mut open: BTreeMap<Vec<String>, (String, i64)> = BTreeMap::new();
            for t in times {
                let at = t.timestamp_micros();
                let now: BTreeMap<Vec<String>, String> = sub
                    .clusters_at(Some(t))
                    .into_iter()
                    .map(|c| (c.members, c.person_id))
                    .collect();
                let closed: Vec<Vec<String>> = open
                    .keys()
                    .filter(|m| !now.contains_key(*m))
                    .cloned()
                    .collect();
                for members in closed {
                    if let Some((person_id, from)) = open.remove(&members) {
                        out.push(Epoch {
                            person_id,
                            members,
                            from,
                            until: Some(at),
                        });
                    }
                }
                for (members, person_id) in now {
                    open.entry(members).or_insert((person_id, at));
                }
            }
            for (members, (person_id, from)) in open {
                out.push(Epoch {
                    person_id,
                    members,
                    from,
                    until: None,
                });
            }
        }
        out.sort_by(|a, b| (&a.person_id, a.from).cmp(&(&b.person_id, b.from)));
        out
    }
}

/// The person of any record at any time, from an index's [`Index::epochs`]: what a lookup
/// against a person-keyed timeline resolves a source patient id with.
#[derive(Debug, Clone, Default)]
pub struct Persons {
    epochs: Vec<Epoch>,
    /// Record → positions in `epochs` of the epochs it is a member of, in time order.
    of_record: HashMap<String, Vec<usize>>,
}

impl Persons {
    /// The persons over time of `index`.
    pub fn new(index: &Index) -> Persons {
        let epochs = index.epochs();
        let mut of_record: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in epochs.iter().enumerate() {
            for m in &e.members {
                of_record.entry(m.clone()).or_default().push(i);
            }
        }
        for v in of_record.values_mut() {
            v.sort_by_key(|&i| epochs[i].from);
        }
        Persons { epochs, of_record }
    }

    /// Every epoch, sorted by person id and time.
    pub fn epochs(&self) -> &[Epoch] {
        &self.epochs
    }

    /// The epochs `record` is a member of, in time order (none: always a person of its own).
    pub fn epochs_of(&self, record: &str) -> impl Iterator<Item = &Epoch> {
        self.of_record
            .get(record)
            .into_iter()
            .flatten()
            .map(|&i| &self.epochs[i])
    }

    /// The person id of `record` as known at `t_us` (microseconds since the epoch, UTC): the
    /// smallest id of its cluster then, or the record itself when it is linked to none (an
    /// id no link names is its own person).
    pub fn person_at<'a>(&'a self, record: &'a str, t_us: i64) -> &'a str {
        self.epochs_of(record)
            .find(|e| e.from <= t_us && e.until.is_none_or(|u| t_us < u))
            .map_or(record, |e| e.person_id.as_str())
    }
}

fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// Union-find over patient ids, with the members of each root kept for the "apart" check.
#[derive(Default)]
struct UnionFind {
    ids: HashMap<String, usize>,
    names: Vec<String>,
    parent: Vec<usize>,
    members: Vec<Vec<usize>>,
}

impl UnionFind {
    fn id(&mut self, s: &str) -> usize {
        if let Some(i) = self.ids.get(s) {
            return *i;
        }
        let i = self.names.len();
        self.ids.insert(s.to_string(), i);
        self.names.push(s.to_string());
        self.parent.push(i);
        self.members.push(vec![i]);
        i
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union_unless_apart(&mut self, a: &str, b: &str, apart: &[(String, String)]) {
        let (ia, ib) = (self.id(a), self.id(b));
        let (ra, rb) = (self.find(ia), self.find(ib));
        if ra == rb {
            return;
        }
        if !apart.is_empty() {
            let in_a: BTreeSet<&str> = self.members[ra]
                .iter()
                .map(|m| self.names[*m].as_str())
                .collect();
            let in_b: BTreeSet<&str> = self.members[rb]
                .iter()
                .map(|m| self.names[*m].as_str())
                .collect();
            let blocked = apart.iter().any(|(x, y)| {
                (in_a.contains(x.as_str()) && in_b.contains(y.as_str()))
                    || (in_a.contains(y.as_str()) && in_b.contains(x.as_str()))
            });
            if blocked {
                return;
            }
        }
        let (big, small) = if self.members[ra].len() >= self.members[rb].len() {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[small] = big;
        let moved = std::mem::take(&mut self.members[small]);
        self.members[big].extend(moved);
    }

    fn clusters(mut self) -> Vec<Cluster> {
        let n = self.names.len();
        let mut out = Vec::new();
        for i in 0..n {
            if self.find(i) == i && self.members[i].len() > 1 {
                let mut members: Vec<String> = self.members[i]
                    .iter()
                    .map(|m| self.names[*m].clone())
                    .collect();
                members.sort();
                out.push(Cluster {
                    person_id: members[0].clone(),
                    members,
                });
            }
        }
        out.sort_by(|a, b| a.person_id.cmp(&b.person_id));
        out
    }
}

/// Precision and recall of linking against the truth: pairs of records in one cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// Pairs the index put together that are one person.
    pub true_pairs: u64,
    /// Pairs the index put together that are not.
    pub false_pairs: u64,
    /// Pairs that are one person but the index kept apart.
    pub missed_pairs: u64,
}

impl Quality {
    /// true / (true + false); 1 when nothing was linked.
    pub fn precision(&self) -> f64 {
        let n = self.true_pairs + self.false_pairs;
        if n == 0 {
            1.0
        } else {
            self.true_pairs as f64 / n as f64
        }
    }

    /// true / (true + missed); 1 when there is nothing to find.
    pub fn recall(&self) -> f64 {
        let n = self.true_pairs + self.missed_pairs;
        if n == 0 {
            1.0
        } else {
            self.true_pairs as f64 / n as f64
        }
    }
}

/// Pairwise precision and recall of `clusters` against `truth` (record id → person).
/// Records not in `truth` are ignored.
pub fn evaluate(clusters: &[Cluster], truth: &HashMap<String, String>) -> Quality {
    let mut found: HashMap<&str, &str> = HashMap::new();
    for c in clusters {
        for m in &c.members {
            found.insert(m.as_str(), c.person_id.as_str());
        }
    }
    // Pairs by (true person, found cluster): counts per cell.
    let mut cells: HashMap<(&str, &str), u64> = HashMap::new();
    let mut per_person: HashMap<&str, u64> = HashMap::new();
    let mut per_cluster: HashMap<&str, u64> = HashMap::new();
    for (record, person) in truth {
        let cluster = found
            .get(record.as_str())
            .copied()
            .unwrap_or(record.as_str());
        *cells.entry((person.as_str(), cluster)).or_default() += 1;
        *per_person.entry(person.as_str()).or_default() += 1;
        *per_cluster.entry(cluster).or_default() += 1;
    }
    let pairs = |n: u64| n * n.saturating_sub(1) / 2;
    let true_pairs: u64 = cells.values().map(|n| pairs(*n)).sum();
    let linked: u64 = per_cluster.values().map(|n| pairs(*n)).sum();
    let same: u64 = per_person.values().map(|n| pairs(*n)).sum();
    Quality {
        true_pairs,
        false_pairs: linked - true_pairs,
        missed_pairs: same - true_pairs,
    }
}
