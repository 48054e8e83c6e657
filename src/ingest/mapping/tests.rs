//! Unit tests of mappings end to end: TOML in, curated rows and quarantine out.

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::array::{TimestampMicrosecondArray, TimestampMillisecondArray};
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use proptest::prelude::*;

use super::*;
use crate::curated::Table;
use crate::error::Error;
use crate::ingest::{BadRecord, Context, Input, Parsed};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn ctx() -> Context {
    Context::new(utc("2030-01-01T00:00:00Z"))
}

fn run(toml: &str, files: &[(&str, &str)]) -> Parsed {
    let m = Mapping::from_toml(toml, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    let inputs: Vec<Input<'_>> = files
        .iter()
        .map(|(name, text)| Input {
            name,
            bytes: text.as_bytes(),
        })
        .collect();
    parse(&m, &inputs, &ctx())
}

fn load_err(toml: &str) -> (String, String, String) {
    match Mapping::from_toml(toml, "m.toml") {
        Err(Error::BadInput {
            location,
            field,
            reason,
        }) => (location, field, reason),
        other => panic!("expected BadInput, got {other:?}"),
    }
}

fn only_bad(p: &Parsed) -> &BadRecord {
    assert_eq!(p.bad.len(), 1, "{:#?}", p.bad);
    &p.bad[0]
}

const PATIENTS: &str = r#"
[[file]]
match = "pat*.csv"
[[file.target]]
table = "patients"
[file.target.columns]
patient_id = "id"
"#;

#[test]
fn the_shipped_synthea_mapping_is_valid() {
    let m = Mapping::synthea();
    assert_eq!(m.name(), "synthea");
    assert_eq!(m.origin(), "mappings/synthea.toml");
    assert_eq!(m.tables().len(), 7, "{:?}", m.tables());
}

#[test]
fn unknown_key_is_reported_with_its_line() {
    let (loc, field, reason) =
        load_err("name = \"x\"\n[[file]]\nmatch = \"a.csv\"\ndelimiter = \";\"\n");
    assert_eq!(loc, "m.toml:4");
    assert_eq!(field, "delimiter");
    assert!(reason.contains("unknown field"), "{reason}");

    let (loc, field, _) =
        load_err(&PATIENTS.replace("table = \"patients\"", "table = \"patients\"\nfilters = []"));
    assert_eq!(loc, "m.toml:6");
    assert_eq!(field, "filters");

    let (loc, field, _) = load_err(&format!(
        "{PATIENTS}sex = {{ column = \"g\", mapp = {{ M = \"male\" }} }}\n"
    ));
    assert_eq!(loc, "m.toml:8");
    assert_eq!(field, "mapp");
}

#[test]
fn unknown_table_and_target_column() {
    let (loc, field, reason) =
        load_err("[[file]]\nmatch = \"a.csv\"\n[[file.target]]\ntable = \"labs\"\n");
    assert_eq!(loc, "m.toml:4");
    assert_eq!(field, "file[1].target[1].table");
    assert!(reason.contains("unknown table \"labs\""), "{reason}");

    let (loc, field, reason) = load_err(&format!("{PATIENTS}\nbirthdate = \"b\"\n"));
    assert_eq!(loc, "m.toml:9");
    assert_eq!(field, "file[1].target[1].columns.birthdate");
    assert!(reason.contains("no column \"birthdate\""), "{reason}");
}

#[test]
fn bad_time_format_zone_and_misplaced_options() {
    let (loc, field, reason) = load_err(&format!(
        "{PATIENTS}death_time = {{ column = \"d\", time = [\"%Y-%m-%d\", \"%Q\"] }}\n"
    ));
    assert_eq!(loc, "m.toml:8");
    assert_eq!(field, "file[1].target[1].columns.death_time");
    assert!(reason.contains("\"%Q\""), "{reason}");

    let (_, _, reason) = load_err(&format!(
        "{PATIENTS}death_time = {{ column = \"d\", zone = \"EST\" }}\n"
    ));
    assert!(reason.contains("zone"), "{reason}");
    let (loc, field, _) = load_err(&format!("zone = \"Mars\"\n{PATIENTS}"));
    assert_eq!((loc.as_str(), field.as_str()), ("m.toml:1", "zone"));
    let (_, _, reason) = load_err(&format!(
        "{PATIENTS}zip = {{ column = \"z\", time = \"date\" }}\n"
    ));
    assert!(reason.contains("time columns"), "{reason}");
    let (_, _, reason) = load_err(&format!(
        "{PATIENTS}zip = {{ column = \"z\", value = \"1\" }}\n"
    ));
    assert!(reason.contains("exactly one"), "{reason}");
    let (_, _, reason) = load_err(&format!(
        "{PATIENTS}zip = {{ column = \"z\", unmapped = \"drop\" }}\n"
    ));
    assert!(reason.contains("unmapped"), "{reason}");
}

#[test]
fn structural_errors() {
    // A required target column left unmapped names the table and the column.
    let (loc, field, reason) = load_err(
        "[[file]]\nmatch = \"e.csv\"\n[[file.target]]\ntable = \"encounters\"\n[file.target.columns]\nencounter_id = \"id\"\n",
    );
    assert_eq!(loc, "m.toml:3", "the [[file.target]] line");
    assert!(field.ends_with("columns.patient_id"), "{field}");
    assert!(reason.contains("requires"), "{reason}");
    // A lookup into an entry that does not exist.
    let (_, _, reason) = load_err(&format!(
        "{PATIENTS}death_time = {{ lookup = \"deaths\", key = \"id\", column = \"t\" }}\n"
    ));
    assert!(reason.contains("\"deaths\""), "{reason}");
    // header = false needs column names, and two entries cannot share a name.
    let (_, field, _) = load_err("[[file]]\nmatch = \"a.csv\"\n[file.csv]\nheader = false\n");
    assert_eq!(field, "file[1].csv.columns");
    let (loc, field, _) =
        load_err("[[file]]\nmatch = \"a.csv\"\n[[file]]\nmatch = \"b.csv\"\nname = \"a\"\n");
    assert_eq!((loc.as_str(), field.as_str()), ("m.toml:5", "file[2].name"));
    // Defaulted names may clash until a lookup needs them.
    let two = "[[file]]\nmatch = \"a.csv\"\n[[file]]\nmatch = \"a.tsv\"\n";
    assert!(Mapping::from_toml(two, "m.toml").is_ok());
    let (_, _, reason) = load_err(&format!(
        "{two}[[file.target]]\ntable = \"patients\"\n[file.target.columns]\npatient_id = \"id\"\nzip = {{ lookup = \"a\", key = \"id\", column = \"zip\" }}\n"
    ));
    assert!(reason.contains("several file entries"), "{reason}");
    // TOML syntax errors carry their line too.
    let (loc, _, _) = load_err("[[file]]\nmatch = \"a.csv\n");
    assert_eq!(loc, "m.toml:2");
    let (_, _, reason) = load_err("[[file]]\nmatch = \"a.csv\"\n[file.csv]\ndelimiter = \";;\"\n");
    assert!(reason.contains("one ASCII character"), "{reason}");
    let (_, _, reason) = load_err(
        "[[file]]\nmatch = \"a.csv\"\n[[file.target]]\ntable = \"patients\"\nfilter = [{ column = \"x\" }]\n[file.target.columns]\npatient_id = \"id\"\n",
    );
    assert!(reason.contains("no test"), "{reason}");
}

#[test]
fn sources_constants_templates_maps_and_vocabularies() {
    let toml = r#"
[[file]]
match = "visits.csv"
[file.csv]
delimiter = ";"
null = ["", "NA", "\\N"]
[[file.target]]
table = "encounters"
[file.target.columns]
encounter_id = { template = "{SUBJECT_ID}-{HADM_ID}" }
patient_id = "SUBJECT_ID"
class = { value = "inpatient" }
admit_time = { column = "ADMITTIME", time = ["%d/%m/%Y %H:%M"], zone = "-05:00" }
admission_type = { column = "ADMISSION_TYPE", map = { "EW EMER." = "emergency", "SURGICAL SAME DAY ADMISSION" = "elective" }, unmapped = "null" }
discharge_disposition = { column = "DISP", map = { HOME = "home", UNKNOWN = "" } }
service = { column = "SERVICE", default = "medicine" }
"#;
    let p = run(
        toml,
        &[(
            "/x/visits.csv",
            "SUBJECT_ID;HADM_ID;ADMITTIME;ADMISSION_TYPE;DISP;SERVICE\n\
             10;20;06/05/2180 22:23;EW EMER.;HOME;NA\n\
             11;21;07/05/2180 08:00;AMBULATORY OBSERVATION;SNF;\\N\n\
             12;22;08/05/2180 08:00;URGENT;UNKNOWN;surgery\n",
        )],
    );
    assert!(p.bad.is_empty(), "{:#?}", p.bad);
    let e = &p.tables.encounters;
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].encounter_id, "10-20");
    assert_eq!(e[0].class, "inpatient");
    assert_eq!(e[0].admit_time, utc("2180-05-07T03:23:00Z"));
    assert_eq!(e[0].admission_type.as_deref(), Some("emergency"));
    // The map misses, the built-in admission_type vocabulary does not know it: null.
    assert_eq!(e[1].admission_type, None);
    // The map misses, the vocabulary knows "URGENT".
    assert_eq!(e[2].admission_type.as_deref(), Some("urgent"));
    assert_eq!(e[0].discharge_disposition.as_deref(), Some("home"));
    assert_eq!(
        e[1].discharge_disposition.as_deref(),
        Some("SNF"),
        "unmapped keeps the value"
    );
    assert_eq!(e[2].discharge_disposition, None, "mapped to \"\" is null");
    assert_eq!(
        e[0].service.as_deref(),
        Some("medicine"),
        "NA is null, then default"
    );
    assert_eq!(
        e[1].service.as_deref(),
        Some("medicine"),
        "\\N is null, then default"
    );
    assert_eq!(e[2].service.as_deref(), Some("surgery"));
    // Defaults of the provenance columns.
    assert_eq!(e[0].meta.source_system, "visits.csv");
    assert_eq!(e[0].meta.source_id, "visits.csv:2");
    assert_eq!(e[2].meta.source_id, "visits.csv:4");
    assert_eq!(e[0].meta.known_at, ctx().ingested_at);
    assert_eq!(e[0].meta.retracted_at, None);
}

#[test]
fn unmapped_error_goes_to_quarantine() {
    let toml = r#"
[[file]]
match = "e.csv"
[[file.target]]
table = "encounters"
[file.target.columns]
encounter_id = "id"
patient_id = "p"
class = { column = "cls", unmapped = "error" }
admit_time = "t"
"#;
    let p = run(
        toml,
        &[(
            "e.csv",
            "id,p,cls,t\n1,p1,IMP,2020-01-01\n2,p1,spaceship,2020-01-02\n",
        )],
    );
    assert_eq!(p.tables.encounters.len(), 1);
    assert_eq!(
        p.tables.encounters[0].class, "inpatient",
        "built-in vocabulary by default"
    );
    let b = only_bad(&p);
    assert_eq!((b.location.file.as_str(), b.location.record), ("e.csv", 3));
    assert_eq!(b.table, Some(Table::Encounters));
    assert_eq!(b.field.as_deref(), Some("cls"));
    assert_eq!(b.reason, "unmapped_value");
    assert_eq!(b.raw, "2,p1,spaceship,2020-01-02");
}

const DIAGNOSES: &str = r#"
require_standard_system = true
[[file]]
match = "dx.csv"
[[file.target]]
table = "conditions"
[file.target.columns]
condition_id = { template = "{hadm_id}:{seq_num}" }
patient_id = "subject_id"
code_system = { column = "icd_version", map = { 9 = "ICD9CM", 10 = "ICD10CM" } }
code = "icd_code"
onset_time = "t"
"#;

#[test]
fn code_system_from_a_column_and_unknown_systems() {
    let p = run(
        DIAGNOSES,
        &[(
            "dx.csv",
            "subject_id,hadm_id,seq_num,icd_code,icd_version,t\n\
             1,7,1,4019,9,2020-01-01\n\
             1,7,2,I10,10,2020-01-01\n\
             1,7,3,X,11,2020-01-01\n\
             1,7,4,Y,http://snomed.info/sct,2020-01-01\n",
        )],
    );
    let c = &p.tables.conditions;
    assert_eq!(c.len(), 3);
    assert_eq!(
        (c[0].code.system.as_str(), c[0].code.code.as_str()),
        ("ICD9CM", "4019")
    );
    assert_eq!(c[1].code.system, "ICD10CM");
    assert_eq!(c[1].condition_id, "7:2");
    assert_eq!(c[2].code.system, "SNOMED", "URIs are normalized");
    let b = only_bad(&p);
    assert_eq!(b.location.record, 4);
    assert_eq!(b.field.as_deref(), Some("icd_version"));
    assert_eq!(b.reason, "unknown_code_system");

    // Without the requirement the local system is kept as written.
    let lenient = DIAGNOSES.replace("require_standard_system = true", "");
    let p = run(
        &lenient,
        &[(
            "dx.csv",
            "subject_id,hadm_id,seq_num,icd_code,icd_version,t\n1,7,3,X,11,2020-01-01\n",
        )],
    );
    assert!(p.bad.is_empty());
    assert_eq!(p.tables.conditions[0].code.system, "11");
}

#[test]
fn one_file_feeds_two_tables_with_filters() {
    let toml = r#"
[[file]]
match = "*.csv"
[[file.target]]
table = "encounters"
filter = [{ column = "kind", in = ["I", "E"] }]
[file.target.columns]
encounter_id = "id"
patient_id = "p"
class = "kind"
admit_time = "start"
discharge_time = "stop"
[[file.target]]
table = "care_team"
filter = [{ column = "doc", not_empty = true }, { column = "kind", equals = "I" }]
[file.target.columns]
patient_id = "p"
clinician_id = "doc"
valid_from = "start"
valid_to = "stop"
"#;
    let p = run(
        toml,
        &[(
            "visits.csv.gz",
            "id,p,kind,doc,start,stop\n\
             1,a,I,dr1,2020-01-01T00:00:00Z,2020-01-03T00:00:00Z\n\
             2,a,E,,2020-02-01T00:00:00Z,\n\
             3,a,O,dr2,2020-03-01T00:00:00Z,\n",
        )],
    );
    assert!(p.bad.is_empty(), "{:#?}", p.bad);
    assert_eq!(p.tables.encounters.len(), 2);
    assert_eq!(p.tables.encounters[1].class, "emergency");
    assert_eq!(p.tables.encounters[1].discharge_time, None);
    assert_eq!(p.tables.care_team.len(), 1);
    let ct = &p.tables.care_team[0];
    assert_eq!(
        (ct.clinician_id.as_str(), ct.valid_to),
        ("dr1", Some(utc("2020-01-03T00:00:00Z")))
    );
    assert_eq!(ct.meta.source_system, "visits.csv", "matched without .gz");
    // Line 4 feeds no table: it is skipped, not dropped.
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].location.record, 4);
    assert!(p.skipped[0].what.contains("filtered out"));
}

#[test]
fn unmatched_files_are_skipped_whole() {
    let p = run(
        PATIENTS,
        &[("claims.csv", "a\n1\n"), ("patients.csv", "id\np1\n")],
    );
    assert_eq!(p.tables.patients.len(), 1);
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].location.file, "claims.csv");
    assert_eq!(p.skipped[0].location.record, 0);
}

#[test]
fn bad_rows_name_file_line_field_and_reason() {
    let toml = r#"
[[file]]
match = "labs.csv"
[[file.target]]
table = "observations"
[file.target.columns]
observation_id = "id"
patient_id = "p"
code_system = { value = "LOINC" }
code = "loinc"
value_num = "v"
effective_time = { column = "t", time = "rfc3339" }
"#;
    let p = run(
        toml,
        &[(
            "labs.csv",
            "id,p,loinc,v,t\n\
             1,a,718-7,13.5,2020-01-01T08:00:00Z\n\
             2,a,718-7,13.5,2020-01-01 08:00\n\
             3,,718-7,13.5,2020-01-01T08:00:00Z\n\
             4,a,718-7,high,2020-01-01T08:00:00Z\n\
             5,a,718-7\n\
             6,a,718-7,,2020-01-01T08:00:00Z\n",
        )],
    );
    assert_eq!(p.tables.observations.len(), 2);
    assert_eq!(p.tables.observations[0].value_num, Some(13.5));
    assert_eq!(p.tables.observations[1].value_num, None);
    let got: Vec<(u64, Option<&str>, &str)> = p
        .bad
        .iter()
        .map(|b| (b.location.record, b.field.as_deref(), b.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (3, Some("t"), "bad_date"),
            (4, Some("p"), "missing_field"),
            (5, Some("v"), "bad_number"),
            (6, None, "unparseable"),
        ]
    );
    assert!(p.bad.iter().all(|b| b.location.file == "labs.csv"));
    assert_eq!(p.bad[0].raw, "2,a,718-7,13.5,2020-01-01 08:00");
    assert!(
        p.bad[0].detail.contains("observations.effective_time"),
        "{}",
        p.bad[0].detail
    );
    assert_eq!(p.bad[3].table, None);
}

#[test]
fn invalid_null_when_and_case_insensitive_columns() {
    let toml = r#"
[[file]]
match = "labs.csv"
[[file.target]]
table = "observations"
[file.target.columns]
observation_id = "ID"
patient_id = "P"
code_system = { value = "LOINC" }
code = "CODE"
value_num = { column = "VALUE", invalid = "null", decimal = "," }
value_text = { column = "VALUE", when = { column = "TYPE", equals = "text" } }
effective_time = "T"
"#;
    let p = run(
        toml,
        &[(
            "labs.csv",
            "id,p,code,value,type,t\n1,a,c,\"7,5\",num,2020-01-01\n2,a,c,<0.5,text,2020-01-01\n",
        )],
    );
    assert!(p.bad.is_empty(), "{:#?}", p.bad);
    let o = &p.tables.observations;
    assert_eq!(
        (o[0].value_num, o[0].value_text.as_deref()),
        (Some(7.5), None)
    );
    assert_eq!(
        (o[1].value_num, o[1].value_text.as_deref()),
        (None, Some("<0.5"))
    );
}

#[test]
fn known_at_source_system_and_source_id_from_columns() {
    let toml = r#"
zone = "+01:00"
[[file]]
match = "labs.csv"
[[file.target]]
table = "observations"
[file.target.columns]
observation_id = "id"
patient_id = "p"
code_system = { value = "LOINC" }
code = "c"
effective_time = "charttime"
known_at = "storetime"
source_system = { value = "lis" }
source_id = { template = "lab/{id}" }
"#;
    let p = run(
        toml,
        &[(
            "labs.csv",
            "id,p,c,charttime,storetime\n1,a,x,2020-01-01 08:00:00,2020-01-01 10:30:00\n2,a,x,2020-01-01 08:00:00,\n",
        )],
    );
    assert!(p.bad.is_empty(), "{:#?}", p.bad);
    let o = &p.tables.observations;
    assert_eq!(o[0].effective_time, utc("2020-01-01T07:00:00Z"));
    assert_eq!(o[0].meta.known_at, utc("2020-01-01T09:30:00Z"));
    assert_eq!(
        o[1].meta.known_at,
        ctx().ingested_at,
        "no storetime: ingestion time"
    );
    assert_eq!(
        (
            o[0].meta.source_system.as_str(),
            o[0].meta.source_id.as_str()
        ),
        ("lis", "lab/1")
    );
}

#[test]
fn context_default_offset_applies_when_the_mapping_names_no_zone() {
    let toml = "[[file]]\nmatch = \"p.csv\"\n[[file.target]]\ntable = \"patients\"\n[file.target.columns]\npatient_id = \"id\"\ndeath_time = \"d\"\n";
    let m = Mapping::from_toml(toml, "t").unwrap();
    let mut c = ctx();
    c.default_offset = FixedOffset::west_opt(5 * 3600).unwrap();
    let p = parse(
        &m,
        &[Input {
            name: "p.csv",
            bytes: b"id,d\n1,2020-01-01 00:00\n",
        }],
        &c,
    );
    assert_eq!(
        p.tables.patients[0].death_time,
        Some(utc("2020-01-01T05:00:00Z"))
    );
}

const LOOKUP: &str = r#"
[[file]]
match = "admissions.csv"
[[file.target]]
table = "encounters"
[file.target.columns]
encounter_id = "hadm_id"
patient_id = "subject_id"
class = { value = "inpatient" }
admit_time = "admittime"
discharge_time = "dischtime"

[[file]]
match = "diagnoses_icd.csv"
[[file.target]]
table = "conditions"
[file.target.columns]
condition_id = { template = "{hadm_id}:{seq_num}" }
patient_id = "subject_id"
encounter_id = "hadm_id"
code_system = { value = "ICD10CM" }
code = "icd_code"
onset_time = { lookup = "admissions", key = "hadm_id", column = "dischtime" }
known_at = { lookup = "admissions", key = "hadm_id", column = "dischtime" }
"#;

#[test]
fn lookups_take_values_from_another_file_of_the_run() {
    let dx = "subject_id,hadm_id,seq_num,icd_code\n1,100,1,I10\n1,999,1,E11\n";
    let adm =
        "subject_id,hadm_id,admittime,dischtime\n1,100,2180-01-01 10:00:00,2180-01-05 12:00:00\n";
    // Diagnoses first: the order of inputs does not matter.
    let p = run(
        LOOKUP,
        &[("diagnoses_icd.csv", dx), ("admissions.csv", adm)],
    );
    assert_eq!(p.tables.encounters.len(), 1);
    let c = &p.tables.conditions;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].onset_time, utc("2180-01-05T12:00:00Z"));
    assert_eq!(c[0].meta.known_at, utc("2180-01-05T12:00:00Z"));
    let b = only_bad(&p);
    assert_eq!(
        (b.location.file.as_str(), b.location.record),
        ("diagnoses_icd.csv", 3)
    );
    assert_eq!(b.field.as_deref(), Some("hadm_id"));
    assert_eq!(b.reason, "dangling_reference");
    assert!(b.detail.contains("999"), "{}", b.detail);

    // Without admissions in the run, every lookup dangles, and says why.
    let p = run(LOOKUP, &[("diagnoses_icd.csv", dx)]);
    assert_eq!(p.bad.len(), 2);
    assert!(p.bad.iter().all(|b| b.reason == "dangling_reference"));
    assert!(
        p.bad[0].detail.contains("no input of this run"),
        "{}",
        p.bad[0].detail
    );
}

#[test]
fn missing_source_columns_and_optional_ones() {
    let toml = r#"
[[file]]
match = "c.csv"
[[file.target]]
table = "conditions"
[file.target.columns]
condition_id = "id"
patient_id = "p"
code_system = { column = "SYSTEM", optional = true, default = "SNOMED" }
code = "code"
onset_time = "start"
"#;
    // SYSTEM absent: optional, so the default applies.
    let p = run(
        toml,
        &[("c.csv", "id,p,code,start\n1,a,44054006,2020-01-01\n")],
    );
    assert!(p.bad.is_empty(), "{:#?}", p.bad);
    assert_eq!(p.tables.conditions[0].code.system, "SNOMED");
    // SYSTEM present: read.
    let p = run(
        toml,
        &[(
            "c.csv",
            "id,p,code,start,SYSTEM\n1,a,I10,2020-01-01,ICD-10-CM\n",
        )],
    );
    assert_eq!(p.tables.conditions[0].code.system, "ICD10CM");
    // `code` absent: every record says so.
    let p = run(
        toml,
        &[("c.csv", "id,p,start\n1,a,2020-01-01\n2,a,2020-01-01\n")],
    );
    assert_eq!(p.bad.len(), 2);
    assert!(p
        .bad
        .iter()
        .all(|b| b.reason == "missing_column" && b.field.as_deref() == Some("code")));
}

#[test]
fn headerless_files_and_entries_read_only_for_lookups() {
    let toml = r#"
[[file]]
match = "p.txt"
[file.csv]
header = false
columns = ["id", "sex", "ward"]
delimiter = "|"
[[file.target]]
table = "patients"
[file.target.columns]
patient_id = "id"
sex = "sex"
zip = { lookup = "wards", key = "ward", on = "code", column = "zip" }

[[file]]
match = "wards.csv"
"#;
    let p = run(
        toml,
        &[
            ("p.txt", "1|F|w1\n2|m|\n"),
            ("wards.csv", "code,zip\nw1,02155\n"),
        ],
    );
    assert!(p.bad.is_empty(), "{:#?}", p.bad);
    let pt = &p.tables.patients;
    assert_eq!(
        (pt[0].sex.as_deref(), pt[0].zip.as_deref()),
        (Some("female"), Some("02155"))
    );
    assert_eq!(
        (pt[1].sex.as_deref(), pt[1].zip.as_deref()),
        (Some("male"), None)
    );
    assert_eq!(pt[0].meta.source_id, "p.txt:1");
    // The lookup-only file's record is accounted for.
    assert_eq!(p.skipped.len(), 1);
    assert!(p.skipped[0].what.contains("lookups only"));
}

fn parquet_bytes(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
    out
}

#[test]
fn parquet_inputs_with_typed_times() {
    let t = utc("2020-01-01T08:00:00Z").timestamp_micros();
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "id",
            Arc::new(StringArray::from(vec![Some("1"), Some("2"), None])),
        ),
        ("p", Arc::new(Int64Array::from(vec![7, 8, 9]))),
        (
            "charttime",
            Arc::new(TimestampMicrosecondArray::from(vec![t, t, t]).with_timezone("UTC")),
        ),
        (
            "storetime",
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(t / 1000),
                None,
                None,
            ])),
        ),
        (
            "v",
            Arc::new(Float64Array::from(vec![Some(13.5), None, Some(1.0)])),
        ),
        ("d", Arc::new(Date32Array::from(vec![18262, 18262, 18262]))),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let toml = r#"
zone = "-05:00"
[[file]]
match = "*.parquet"
[[file.target]]
table = "observations"
[file.target.columns]
observation_id = "id"
patient_id = "p"
code_system = { value = "LOINC" }
code = { value = "718-7" }
value_num = "v"
effective_time = { column = "charttime", time = ["%d/%m/%Y"] }
known_at = "storetime"
[[file.target]]
table = "patients"
[file.target.columns]
patient_id = "p"
birth_date = "d"
"#;
    let m = Mapping::from_toml(toml, "t").unwrap();
    let bytes = parquet_bytes(&batch);
    let p = parse(
        &m,
        &[Input {
            name: "labs.parquet",
            bytes: &bytes,
        }],
        &ctx(),
    );
    let o = &p.tables.observations;
    assert_eq!(o.len(), 2, "{:#?}", p.bad);
    assert_eq!(o[0].patient_id, "7");
    assert_eq!(
        o[0].effective_time,
        utc("2020-01-01T08:00:00Z"),
        "typed: formats ignored"
    );
    // A timestamp without zone is a wall-clock time: the mapping's zone applies.
    assert_eq!(o[0].meta.known_at, utc("2020-01-01T13:00:00Z"));
    assert_eq!(o[0].value_num, Some(13.5));
    assert_eq!(o[0].meta.source_id, "labs.parquet:1");
    assert_eq!(o[1].meta.known_at, ctx().ingested_at);
    let b = only_bad(&p);
    assert_eq!(
        (b.location.record, b.field.as_deref(), b.reason.as_str()),
        (3, Some("id"), "missing_field")
    );
    assert_eq!(p.tables.patients.len(), 3);
    assert_eq!(
        p.tables.patients[0].birth_date,
        NaiveDate::from_ymd_opt(2020, 1, 1)
    );

    let garbage = parse(
        &m,
        &[Input {
            name: "x.parquet",
            bytes: b"PAR1garbage",
        }],
        &ctx(),
    );
    assert_eq!(garbage.bad.len(), 1);
    assert_eq!(garbage.bad[0].reason, "unparseable");
}

/// Lines at which the `csv` crate starts a record, as `read` would see them.
fn record_lines(bytes: &[u8]) -> Vec<u64> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut rec = csv::ByteRecord::new();
    let mut lines = Vec::new();
    while let Ok(true) = r.read_byte_record(&mut rec) {
        lines.push(rec.position().map(|p| p.line()).unwrap_or(0));
    }
    lines
}

/// Every record line of `input` is a row, a bad record or a skipped record.
pub(crate) fn assert_accounted(p: &Parsed, name: &str, bytes: &[u8]) {
    let mut seen = std::collections::BTreeSet::new();
    let ids = p
        .tables
        .encounters
        .iter()
        .map(|r| &r.meta)
        .chain(p.tables.patients.iter().map(|r| &r.meta))
        .chain(p.tables.care_team.iter().map(|r| &r.meta))
        .chain(p.tables.observations.iter().map(|r| &r.meta))
        .chain(p.tables.conditions.iter().map(|r| &r.meta))
        .chain(p.tables.procedures.iter().map(|r| &r.meta))
        .chain(p.tables.medications.iter().map(|r| &r.meta));
    for m in ids {
        let line = m
            .source_id
            .rsplit(':')
            .next()
            .and_then(|l| l.parse::<u64>().ok());
        seen.extend(line);
    }
    seen.extend(
        p.bad
            .iter()
            .filter(|b| b.location.file == name)
            .map(|b| b.location.record),
    );
    seen.extend(
        p.skipped
            .iter()
            .filter(|s| s.location.file == name)
            .map(|s| s.location.record),
    );
    for line in record_lines(bytes).into_iter().skip(1) {
        assert!(
            seen.contains(&line),
            "{name}: line {line} not accounted for"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_bytes_never_panic_and_every_record_is_accounted(
        body in proptest::collection::vec(
            prop_oneof![
                Just(b','), Just(b'\n'), Just(b'"'), Just(b'\r'), Just(b'a'), Just(b'1'),
                Just(b'-'), Just(b':'), Just(0xFFu8), Just(0xE9u8), any::<u8>()
            ],
            0..400,
        ),
    ) {
        let m = Mapping::synthea();
        let mut bytes = b"Id,START,STOP,PATIENT,ORGANIZATION,PROVIDER,PAYER,ENCOUNTERCLASS,CODE,DESCRIPTION\n".to_vec();
        bytes.extend(&body);
        for name in ["encounters.csv", "patients.csv", "observations.csv", "x.parquet"] {
            let p = parse(&m, &[Input { name, bytes: &bytes }], &ctx());
            if name.ends_with(".csv") {
                assert_accounted(&p, name, &bytes);
            }
            let raw_only = parse(&m, &[Input { name, bytes: &body }], &ctx());
            prop_assert!(raw_only.bad.iter().all(|b| b.raw.len() <= 4096));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Expressions (`{ expr = "..." }`)

mod exprs {
    use super::super::expr::{Cells, EvalError, Expr, Reading};
    use super::super::value::TimeFormat;
    use super::*;

    /// One record for direct evaluation: (column, cell); a column absent here is null.
    struct Cols<'a>(&'a [(&'a str, &'a str)]);

    impl Cells for Cols<'_> {
        fn cell(&self, column: &str) -> Option<(&str, bool)> {
            self.0
                .iter()
                .find(|(c, _)| *c == column)
                .map(|(_, v)| (*v, false))
        }
    }

    fn reading() -> Reading<'static> {
        Reading {
            time: &TimeFormat::Auto,
            zone: FixedOffset::east_opt(0).unwrap(),
            decimal: '.',
        }
    }

    fn eval_as(kind: Kind, text: &str, row: &[(&str, &str)]) -> Result<Option<String>, EvalError> {
        let e = Expr::parse(text, kind).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        e.eval_text(&Cols(row), reading())
            .map(|v| v.map(|(s, _)| s))
    }

    /// Evaluates into a text column; `None` is null.
    fn ev(text: &str, row: &[(&str, &str)]) -> Option<String> {
        eval_as(Kind::Text, text, row).unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
    }

    fn ev_err(text: &str, row: &[(&str, &str)]) -> EvalError {
        match eval_as(Kind::Text, text, row) {
            Err(e) => e,
            Ok(v) => panic!("{text:?}: expected an error, got {v:?}"),
        }
    }

    fn parse_err(text: &str, kind: Kind) -> (usize, String) {
        match Expr::parse(text, kind) {
            Err(e) => (e.pos, e.message),
            Ok(e) => panic!("{text:?}: expected a parse error, got {e:?}"),
        }
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn arithmetic_precedence_and_literals() {
        let row = [("a", "5"), ("b", "2.5"), ("neg", "-3")];
        assert_eq!(ev("1 + 2 * 3", &[]), s("7"));
        assert_eq!(ev("(1 + 2) * 3", &[]), s("9"));
        assert_eq!(ev("10 - 4 - 3", &[]), s("3"), "left associative");
        assert_eq!(ev("12 / 4 / 3", &[]), s("1"));
        assert_eq!(ev("7 / 2", &[]), s("3.5"));
        assert_eq!(ev("a * b", &row), s("12.5"));
        assert_eq!(ev("-a + 1", &row), s("-4"));
        assert_eq!(ev("2 - -1", &[]), s("3"));
        assert_eq!(ev("a - neg", &row), s("8"));
        assert_eq!(ev(".5 + 0.25", &[]), s("0.75"));
        assert_eq!(ev("number('42') + 1", &[]), s("43"));
        assert_eq!(ev("number(a) / 10", &row), s("0.5"));
        // Column text around a number is trimmed, as for a numeric column.
        assert_eq!(ev("x + 1", &[("x", " 41 ")]), s("42"));
        // Into a number column the result is the number itself.
        assert_eq!(eval_as(Kind::Number, "a * 2", &row).unwrap(), s("10"));
        assert_eq!(eval_as(Kind::Number, "a", &row).unwrap(), s("5"));
    }

    #[test]
    fn concatenation_and_text() {
        let row = [("first", "Ada"), ("last", "Lovelace"), ("n", "7")];
        assert_eq!(ev("first || ' ' || last", &row), s("Ada Lovelace"));
        assert_eq!(ev("'id-' || n", &row), s("id-7"));
        assert_eq!(
            ev("'x' || 1 + 2", &[]),
            s("x3"),
            "'+' binds tighter than '||'"
        );
        assert_eq!(ev("'x' || 2.50", &[]), s("x2.5"));
        assert_eq!(ev("'it''s' || \"a \"\"b\"\"\"", &[]), s("it'sa \"b\""));
        assert_eq!(ev("text(n + 1) || '!'", &row), s("8!"));
        assert_eq!(ev("'d=' || date(2020, 1, 2)", &[]), s("d=2020-01-02"));
        assert_eq!(
            ev(
                "`first` || `two words`",
                &[("first", "a"), ("two words", "b")]
            ),
            s("ab")
        );
        assert_eq!(ev("first", &row), s("Ada"), "a bare column is its text");
    }

    #[test]
    fn dates_parts_and_date_arithmetic() {
        let row = [
            ("d", "2180-05-06"),
            ("t", "2180-05-06 22:23:00"),
            ("u", "2180-05-05 10:23:00"),
            ("y", "2180"),
            ("age", "52"),
        ];
        assert_eq!(ev("date(y - age, 1, 1)", &row), s("2128-01-01"));
        assert_eq!(ev("date(2020, 2, 29)", &[]), s("2020-02-29"));
        assert_eq!(ev("year(d)", &row), s("2180"));
        assert_eq!(ev("month(d)", &row), s("5"));
        assert_eq!(
            ev("day(t)", &row),
            s("6"),
            "a date-time column read as a date"
        );
        assert_eq!(ev("year(datetime(t) + 0.1)", &row), s("2180"));
        assert_eq!(ev("date(d) + 30", &row), s("2180-06-05"));
        assert_eq!(ev("30 + date(d)", &row), s("2180-06-05"));
        assert_eq!(ev("date(d) - 6", &row), s("2180-04-30"));
        assert_eq!(ev("date(d) - date('2180-01-01')", &row), s("126"));
        assert_eq!(ev("datetime(t) - datetime(u)", &row), s("1.5"));
        assert_eq!(ev("datetime(t) + 0.25", &row), s("2180-05-07T04:23:00"));
        assert_eq!(ev("datetime(t) - date(t)", &row), s("0.9326388888888889"));
        assert_eq!(ev("date(t)", &row), s("2180-05-06"));
        assert_eq!(ev("datetime(d)", &row), s("2180-05-06T00:00:00"));
        assert_eq!(ev("add_days(d, -6)", &row), s("2180-04-30"));
        assert_eq!(ev("add_months(d, -5)", &row), s("2179-12-06"));
        assert_eq!(
            ev("add_months(date('2020-01-31'), 1)", &[]),
            s("2020-02-29")
        );
        assert_eq!(ev("add_years(date('2020-02-29'), 1)", &[]), s("2021-02-28"));
        assert_eq!(ev("add_years(d, 0 - age)", &row), s("2128-05-06"));
        assert_eq!(
            ev("add_years(datetime(t), 1)", &row),
            s("2181-05-06T22:23:00")
        );
        // A date into a time column, and a date-time into a date column.
        assert_eq!(
            eval_as(Kind::Time, "date(d) + 1", &row).unwrap(),
            s("2180-05-07T00:00:00")
        );
        assert_eq!(
            eval_as(Kind::Date, "datetime(t)", &row).unwrap(),
            s("2180-05-06")
        );
        assert_eq!(eval_as(Kind::Date, "t", &row).unwrap(), s("2180-05-06"));
    }

    #[test]
    fn columns_in_dates_are_read_with_the_time_formats_and_zone() {
        let formats = TimeFormat::parse(vec!["%d/%m/%Y %H:%M".into(), "%d/%m/%Y".into()]).unwrap();
        let r = Reading {
            time: &formats,
            zone: FixedOffset::west_opt(5 * 3600).unwrap(),
            decimal: ',',
        };
        let e = |t: &str| Expr::parse(t, Kind::Text).unwrap();
        let row = Cols(&[("d", "06/05/2180"), ("t", "06/05/2180 22:23"), ("x", "1,5")]);
        let text = |t: &str| e(t).eval_text(&row, r).unwrap().map(|(s, _)| s);
        assert_eq!(text("year(d)"), s("2180"));
        assert_eq!(
            text("datetime(t)"),
            s("2180-05-06T22:23:00"),
            "wall clock kept"
        );
        assert_eq!(text("x * 2"), s("3"), "decimal comma");
        // A typed (Parquet) instant is read as ISO and shown in the zone; a date-time result
        // for a time column is flagged typed (ISO, whatever the column's formats).
        struct Typed;
        impl Cells for Typed {
            fn cell(&self, _: &str) -> Option<(&str, bool)> {
                Some(("2180-05-07T03:23:00Z", true))
            }
        }
        let v = Expr::parse("datetime(t)", Kind::Time)
            .unwrap()
            .eval_text(&Typed, r)
            .unwrap();
        assert_eq!(v, Some(("2180-05-06T22:23:00".to_string(), true)));
    }

    #[test]
    fn null_propagates_except_through_coalesce() {
        let row = [("a", "1"), ("d", "2020-01-02"), ("name", "x")];
        for t in [
            "missing + 1",
            "1 - missing",
            "missing * 2",
            "2 / missing",
            "-missing",
            "missing || 'x'",
            "'x' || missing",
            "year(missing)",
            "date(missing, 1, 1)",
            "date(2020, missing, 1)",
            "date(missing)",
            "datetime(missing)",
            "date(d) + missing",
            "add_years(missing, 1)",
            "add_days(d, missing)",
            "date(d) - date(missing)",
            "number(missing)",
            "text(missing)",
            "null",
            "null + 1",
            "coalesce(missing, null)",
        ] {
            assert_eq!(ev(t, &row), None, "{t}");
        }
        assert_eq!(ev("coalesce(missing, a, 3)", &row), s("1"));
        assert_eq!(ev("coalesce(missing, null, 3) + 1", &row), s("4"));
        assert_eq!(ev("coalesce(missing, name)", &row), s("x"));
        assert_eq!(
            ev("coalesce(date(missing), date(d))", &row),
            s("2020-01-02")
        );
        assert_eq!(ev("coalesce(missing, date(d) + 1)", &row), s("2020-01-03"));
        assert_eq!(
            ev("coalesce(datetime(missing), date(d))", &row),
            s("2020-01-02T00:00:00")
        );
        // An empty cell is null (the CSV reader's `null` list makes it so): `Cols` leaves it out.
        assert_eq!(ev("coalesce(a, missing)", &row), s("1"));
    }

    #[test]
    fn record_errors_name_the_column_and_the_value() {
        let e = ev_err("a + 1", &[("a", "abc")]);
        assert_eq!((e.column.as_deref(), e.reason), (Some("a"), "bad_number"));
        assert!(
            e.detail.contains("a = \"abc\"") && e.detail.contains("character 1"),
            "{}",
            e.detail
        );
        let e = ev_err("date(y - age, 1, 1)", &[("y", "2180"), ("age", "fifty")]);
        assert_eq!((e.column.as_deref(), e.reason), (Some("age"), "bad_number"));
        assert!(e.detail.contains("character 10"), "{}", e.detail);
        let e = ev_err("1 / (a - a)", &[("a", "2")]);
        assert_eq!((e.column, e.reason), (None, "bad_expression"));
        assert!(e.detail.contains("division by zero"), "{}", e.detail);
        let e = ev_err("date(2020, 2, 30)", &[]);
        assert_eq!(e.reason, "bad_date");
        assert!(e.detail.contains("date(2020, 2, 30)"), "{}", e.detail);
        let e = ev_err("date(y, 13, 1)", &[("y", "2020")]);
        assert_eq!(e.reason, "bad_date");
        let e = ev_err("date(y, 1, 1)", &[("y", "2020.5")]);
        assert_eq!(e.reason, "bad_date");
        let e = ev_err("date(y, 1, 1)", &[("y", "1e300")]);
        assert_eq!(e.reason, "bad_date");
        let e = ev_err("year(d)", &[("d", "yesterday")]);
        assert_eq!((e.column.as_deref(), e.reason), (Some("d"), "bad_date"));
        assert!(e.detail.contains("\"yesterday\""), "{}", e.detail);
        let e = ev_err("datetime(d)", &[("d", "25:99")]);
        assert_eq!((e.column.as_deref(), e.reason), (Some("d"), "bad_date"));
        let e = ev_err("date(d) + 1.5", &[("d", "2020-01-01")]);
        assert_eq!(e.reason, "bad_expression");
        let e = ev_err("add_years(d, n)", &[("d", "2020-01-01"), ("n", "1e9")]);
        assert_eq!(e.reason, "bad_expression");
        let e = ev_err("date(d) + n", &[("d", "2020-01-01"), ("n", "99999999999")]);
        assert_eq!(e.reason, "bad_expression");
        let e = ev_err("a * a", &[("a", "1e200")]);
        assert_eq!(e.reason, "bad_expression", "overflow is not a number");
        let e = ev_err("number(a)", &[("a", "NaN")]);
        assert_eq!(e.reason, "bad_number");
    }

    #[test]
    fn parse_and_type_errors_have_positions() {
        let deep = format!("{}1{}", "(".repeat(80), ")".repeat(80));
        let long_chain = vec!["1"; 100].join(" + ");
        let minus = format!("{}1", "-".repeat(100));
        let cases: Vec<(&str, Kind, usize, &str)> = vec![
            ("", Kind::Text, 1, "empty"),
            ("   ", Kind::Text, 1, "empty"),
            ("1 +", Kind::Text, 4, "found the end"),
            ("1 2", Kind::Text, 3, "expected an operator"),
            ("date(a, 1 1)", Kind::Text, 11, "expected ',' or ')'"),
            (
                "(a + 1",
                Kind::Text,
                7,
                "expected ')' to close the '(' at character 1",
            ),
            ("a + 1)", Kind::Text, 6, "expected an operator"),
            ("dat(a)", Kind::Text, 1, "unknown function \"dat\""),
            ("'abc", Kind::Text, 1, "unterminated text"),
            ("`abc", Kind::Text, 1, "unterminated column"),
            ("a | b", Kind::Text, 3, "'||'"),
            ("a $ b", Kind::Text, 3, "unexpected character '$'"),
            ("1.", Kind::Text, 3, "digit must follow"),
            ("12abc", Kind::Text, 3, "in a number"),
            ("f(,)", Kind::Text, 3, "expected a number"),
            (
                "year(1)",
                Kind::Text,
                6,
                "year needs a date, found a number",
            ),
            ("'a' + 1", Kind::Text, 1, "found text"),
            ("date(a) * 2", Kind::Text, 1, "'*' needs numbers"),
            ("2 - date(a)", Kind::Text, 5, "'-' subtracts"),
            ("date(a) + date(b)", Kind::Text, 11, "'+' adds"),
            (
                "coalesce(1, 'x')",
                Kind::Text,
                13,
                "coalesce mixes a number and text",
            ),
            ("coalesce()", Kind::Text, 1, "at least one"),
            ("date(1, 2)", Kind::Text, 1, "date takes one argument"),
            ("year(a, b)", Kind::Text, 1, "takes one argument"),
            ("add_days(1, 2)", Kind::Text, 10, "needs a date first"),
            (
                "add_days(a, date(b))",
                Kind::Text,
                13,
                "needs a number second",
            ),
            ("number(date(a))", Kind::Text, 8, "number needs text"),
            ("date('2020-02-30')", Kind::Text, 6, "not a date"),
            ("number('x1')", Kind::Text, 8, "not a number"),
            (
                "date(a)",
                Kind::Number,
                1,
                "gives a date, but the target column holds numbers",
            ),
            ("a + 1", Kind::Date, 1, "gives a number"),
            ("1", Kind::Time, 1, "gives a number"),
            (&deep, Kind::Text, 65, "nested more than 64"),
            (&long_chain, Kind::Text, 255, "nested more than 64"),
            (&minus, Kind::Text, 65, "nested more than 64"),
        ];
        for (text, kind, pos, message) in cases {
            let (p, m) = parse_err(text, kind);
            assert!(m.contains(message), "{text:?}: {m:?} lacks {message:?}");
            assert_eq!(p, pos, "{text:?}: {m}");
        }
        // Near the bound is fine.
        let ok = format!("{}1{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(ev(&ok, &[]), s("1"));
        // Columns are recorded with their first position; names are case-sensitive here and
        // matched like `column` sources (exactly, else ignoring case) on the record.
        let e = Expr::parse("coalesce(b, a) || a || `x y`", Kind::Text).unwrap();
        let cols: Vec<(&str, usize)> = e.columns().iter().map(|(c, p)| (c.as_str(), *p)).collect();
        assert_eq!(cols, [("b", 10), ("a", 13), ("x y", 24)]);
        // Function names and `null` ignore case.
        assert_eq!(ev("COALESCE(NULL, Year(Date(2020, 1, 1)))", &[]), s("2020"));
    }

    const MIMICISH: &str = r#"
zone = "-05:00"
[[file]]
match = "patients.csv"
[[file.target]]
table = "patients"
[file.target.columns]
patient_id = "subject_id"
birth_date = { expr = "date(anchor_year - anchor_age, 1, 1)" }
death_time = { expr = "add_days(dod, 1)" }
given_name = { expr = "coalesce(nick, first) || '!'" }
"#;

    #[test]
    fn expressions_in_a_mapping_feed_rows_and_quarantine_bad_records() {
        let p = run(
            MIMICISH,
            &[(
                "patients.csv",
                "subject_id,anchor_age,anchor_year,dod,first,nick\n\
                 1,52,2180,,Ada,\n\
                 2,,2180,2181-01-03,Bob,Bobby\n\
                 3,abc,2180,,Cy,\n\
                 4,70,2181,2181-01-03T10:00:00,Di,\n",
            )],
        );
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let pats: Vec<_> = p
            .tables
            .patients
            .iter()
            .map(|x| {
                (
                    x.patient_id.as_str(),
                    x.birth_date,
                    x.death_time,
                    x.given_name.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            pats,
            [
                ("1", Some(d(2128, 1, 1)), None, Some("Ada!")),
                ("2", None, Some(utc("2181-01-04T05:00:00Z")), Some("Bobby!")),
                (
                    "4",
                    Some(d(2111, 1, 1)),
                    Some(utc("2181-01-04T05:00:00Z")),
                    Some("Di!")
                ),
            ]
        );
        let b = only_bad(&p);
        assert_eq!(
            (b.location.record, b.field.as_deref(), b.reason.as_str()),
            (4, Some("anchor_age"), "bad_number")
        );
        assert!(
            b.detail.contains("patients.birth_date") && b.detail.contains("\"abc\""),
            "{}",
            b.detail
        );
        assert_eq!(b.raw, "3,abc,2180,,Cy,");

        // `invalid = "null"` keeps the record with a null value instead.
        let lenient = MIMICISH.replace("1, 1)\" }", "1, 1)\", invalid = \"null\" }");
        let p = run(
            &lenient,
            &[(
                "patients.csv",
                "subject_id,anchor_age,anchor_year,dod,first,nick\n3,abc,2180,,Cy,\n",
            )],
        );
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        assert_eq!(p.tables.patients[0].birth_date, None);

        // A file without a column the expression reads: every record is quarantined as for
        // a missing source column.
        let p = run(
            MIMICISH,
            &[(
                "patients.csv",
                "subject_id,anchor_year,dod,first,nick\n1,2180,,A,\n",
            )],
        );
        let b = only_bad(&p);
        assert_eq!(
            (b.field.as_deref(), b.reason.as_str()),
            (Some("anchor_age"), "missing_column")
        );
    }

    #[test]
    fn expressions_into_numbers_with_maps_defaults_and_decimal_commas() {
        let toml = r#"
[[file]]
match = "labs.csv"
[[file.target]]
table = "observations"
[file.target.columns]
observation_id = { expr = "id || '-' || seq" }
patient_id = "pid"
code_system = { value = "LOINC" }
code = { value = "2345-7" }
value_num = { expr = "v * 18", decimal = "," }
unit = { expr = "coalesce(u, 'mmol/L')", map = { "mmol/L" = "mg/dL" } }
effective_time = { expr = "datetime(t) + 1 / 24" }
"#;
        let p = run(
            toml,
            &[(
                "labs.csv",
                "id,seq,pid,v,u,t\nA,1,p1,\"5,5\",,2020-01-01 10:00:00\nA,2,p1,1,x,2020-01-01\n",
            )],
        );
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        let o: Vec<_> = p
            .tables
            .observations
            .iter()
            .map(|o| {
                (
                    o.observation_id.as_str(),
                    o.value_num,
                    o.unit.as_deref(),
                    o.effective_time,
                )
            })
            .collect();
        assert_eq!(
            o,
            [
                (
                    "A-1",
                    Some(99.0),
                    Some("mg/dL"),
                    utc("2020-01-01T11:00:00Z")
                ),
                ("A-2", Some(18.0), Some("x"), utc("2020-01-01T01:00:00Z")),
            ]
        );
        // Division by zero in a record: quarantined, named by the target column.
        let p = run(
            &toml.replace("v * 18", "18 / v"),
            &[("labs.csv", "id,seq,pid,v,u,t\nA,1,p1,0,,2020-01-01\n")],
        );
        let b = only_bad(&p);
        assert_eq!(
            (b.field.as_deref(), b.reason.as_str()),
            (Some("value_num"), "bad_expression")
        );
        assert!(
            b.detail
                .contains("observations.value_num: division by zero"),
            "{}",
            b.detail
        );
    }

    #[test]
    fn bad_expressions_fail_when_the_mapping_loads() {
        // The line of the expression, the target column, the position.
        let (loc, field, reason) = load_err(&format!(
            "{PATIENTS}birth_date = {{ expr = \"date(anchor_year - anchor_age, 1 1)\" }}\n"
        ));
        assert_eq!(loc, "m.toml:8");
        assert_eq!(field, "file[1].target[1].columns.birth_date");
        assert!(
            reason.starts_with(
                "expression \"date(anchor_year - anchor_age, 1 1)\": at character 34: expected ','"
            ),
            "{reason}"
        );
        // In a multi-line string, the line of the character at fault.
        let (loc, _, reason) = load_err(&format!(
            "{PATIENTS}given_name = {{ expr = \"\"\"\ncoalesce(a,\n  b) ||\n  frist(c)\"\"\" }}\n"
        ));
        assert_eq!(loc, "m.toml:11", "{reason}");
        assert!(reason.contains("unknown function \"frist\""), "{reason}");
        // Types are checked against the target column.
        let (_, field, reason) = load_err(&format!(
            "{PATIENTS}birth_date = {{ expr = \"year(d) + 1\" }}\n"
        ));
        assert_eq!(field, "file[1].target[1].columns.birth_date");
        assert!(
            reason.contains("gives a number, but the target column holds dates"),
            "{reason}"
        );
        // `expr` is one source among the others.
        let (_, _, reason) = load_err(&format!(
            "{PATIENTS}zip = {{ expr = \"z\", column = \"z\" }}\n"
        ));
        assert!(
            reason.contains("exactly one of `column`, `value`, `template`, `expr` or `lookup`"),
            "{reason}"
        );
        let (_, _, reason) = load_err(&format!(
            "{PATIENTS}zip = {{ expr = \"z\", optional = true }}\n"
        ));
        assert!(reason.contains("optional"), "{reason}");
        // With `csv.columns` (a headerless file) the columns are known: an unknown one is an
        // error at load.
        let headerless = "[[file]]\nmatch = \"p.csv\"\n[file.csv]\nheader = false\ncolumns = [\"id\", \"anchor_age\", \"anchor_year\"]\n[[file.target]]\ntable = \"patients\"\n[file.target.columns]\npatient_id = \"id\"\n";
        let (loc, _, reason) = load_err(&format!(
            "{headerless}birth_date = {{ expr = \"date(anchor_year - ANCHOR_AGE - achor_offset, 1, 1)\" }}\n"
        ));
        assert_eq!(loc, "m.toml:10");
        assert!(
            reason.contains("at character 33: unknown column \"achor_offset\""),
            "{reason}"
        );
        let ok = format!(
            "{headerless}birth_date = {{ expr = \"date(anchor_year - ANCHOR_AGE, 1, 1)\" }}\n"
        );
        let p = run(&ok, &[("p.csv", "7,40,2000\n")]);
        assert_eq!(
            p.tables.patients[0].birth_date,
            NaiveDate::from_ymd_opt(1960, 1, 1)
        );
        // `time`, `zone` and `decimal` are accepted on an expression whatever its target.
        let m = format!("{PATIENTS}zip = {{ expr = \"year(d) || ''\", time = \"%d.%m.%Y\", zone = \"+01:00\", decimal = \",\" }}\n");
        let p = run(&m, &[("pat.csv", "id,d\n1,06.05.2020\n")]);
        assert_eq!(p.tables.patients[0].zip.as_deref(), Some("2020"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random expression text never panics the parser, and what parses never panics
        /// when evaluated on odd cells.
        #[test]
        fn random_expressions_never_panic(
            tokens in proptest::collection::vec(
                prop_oneof![
                    Just("a"), Just("b"), Just("d"), Just("("), Just(")"), Just(","),
                    Just("+"), Just("-"), Just("*"), Just("/"), Just("||"), Just("|"),
                    Just("1"), Just("0"), Just("2.5"), Just("99999999999999999999"), Just("1e3"),
                    Just("'x'"), Just("'2020-02-29'"), Just("\""), Just("'"), Just("`c d`"), Just("`"),
                    Just("null"), Just("date"), Just("datetime"), Just("year"), Just("month"),
                    Just("day"), Just("coalesce"), Just("add_days"), Just("add_months"),
                    Just("add_years"), Just("number"), Just("text"), Just(" "), Just("é"),
                    Just("\n"), Just("."), Just("$"),
                ],
                0..40,
            ),
            junk in ".{0,30}",
            cells in proptest::collection::vec(
                prop_oneof![
                    Just("1"), Just("0"), Just("-1e308"), Just("2020-02-29"), Just("abc"),
                    Just("2180-05-06 22:23:00"), Just("1e300"), Just(""), Just("9999-12-31"),
                ],
                3,
            ),
        ) {
            let text = tokens.concat();
            let row = [("a", cells[0]), ("b", cells[1]), ("d", cells[2]), ("c d", cells[0])];
            for t in [text.as_str(), junk.as_str(), &format!("{text}{junk}")] {
                for kind in [Kind::Text, Kind::Number, Kind::Date, Kind::Time] {
                    match Expr::parse(t, kind) {
                        Ok(e) => {
                            let _ = e.eval_text(&Cols(&row), reading());
                        }
                        Err(e) => {
                            prop_assert!(e.pos >= 1 && e.pos <= t.chars().count() + 1, "{t:?}: {e}");
                            prop_assert!(!e.message.is_empty());
                        }
                    }
                }
            }
        }
    }
}
