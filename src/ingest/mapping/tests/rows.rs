//! Curating rows: sources, constants, templates, maps, vocabularies, filters, bad rows,
//! knowledge times, lookups and missing columns.

use super::*;

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
