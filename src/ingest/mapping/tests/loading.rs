//! Loading a mapping: the shipped one, and the errors of a bad one (unknown keys, tables,
//! columns, time formats, structure).

use super::*;

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
