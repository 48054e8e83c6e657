//! Feature definitions: validation errors, the definition hash, the example repository.

use super::*;

// ---------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------

fn err_of(toml: &str) -> String {
    match FeatureRepo::parse(toml, "repo.toml") {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(e @ Error::BadInput { .. }) => e.to_string(),
        Err(e) => panic!("wrong error kind: {e}"),
    }
}

fn one_feature(set_extra: &str, body: &str) -> String {
    format!("[[feature_set]]\nname = \"s\"\n{set_extra}\n[[feature_set.features]]\nname = \"f1\"\n{body}\n")
}

#[test]
fn validation_errors_name_file_line_and_feature() {
    let cases = [
        (
            "",
            "kind = \"count\"\ntable = \"nowhere\"",
            7,
            "unknown table",
        ),
        (
            "",
            "kind = \"last\"\ntable = \"observations\"\ncolumn = \"valu\"",
            8,
            "unknown column",
        ),
        (
            "",
            "kind = \"average\"\ntable = \"observations\"",
            6,
            "unknown kind",
        ),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\nwindow = \"6 months\"",
            8,
            "bad duration",
        ),
        (
            "",
            "kind = \"sum\"\ntable = \"observations\"\ncolumn = \"code\"",
            8,
            "type mismatch",
        ),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\nfilter = { nope = \"x\" }",
            8,
            "unknown column",
        ),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\nfilter = { admit_time = \"x\" }",
            8,
            "string columns",
        ),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\ntime = \"class\"",
            8,
            "not a timestamp",
        ),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\nwindw = \"1d\"",
            8,
            "unknown field",
        ),
        (
            "online = true",
            "kind = \"readmitted_within\"\nhorizon = \"30d\"",
            6,
            "label",
        ),
        ("", "kind = \"readmitted_within\"", 6, "horizon"),
        (
            "",
            "kind = \"count\"\ntable = \"encounters\"\nttl = \"1d\"",
            8,
            "no TTL",
        ),
        (
            "",
            "kind = \"score\"\ncomponent = \"lace_totl\"",
            7,
            "unknown score component \"lace_totl\"",
        ),
        ("", "kind = \"score\"", 6, "needs a component"),
        (
            "",
            "kind = \"score\"\ncomponent = \"lace_total\"\ntable = \"encounters\"",
            8,
            "takes no table",
        ),
        (
            "",
            "kind = \"score\"\ncomponent = \"lace_total\"\nwindow = \"30d\"",
            8,
            "takes no window",
        ),
        (
            "",
            "kind = \"last\"\ntable = \"observations\"\ncolumn = \"value_num\"\ncomponent = \"lace_total\"",
            9,
            "only kind score",
        ),
        (
            "",
            "kind = \"score\"\ncomponent = \"lace_total\"\nttl = \"1 year\"",
            8,
            "bad duration",
        ),
    ];
    for (set_extra, body, line, what) in cases {
        let text = one_feature(set_extra, body);
        let msg = err_of(&text);
        assert!(
            msg.contains(&format!("repo.toml:{line}:")),
            "{msg}\n--\n{text}"
        );
        assert!(msg.contains("feature f1"), "{msg}");
        assert!(msg.contains(what), "{msg}");
    }
    // Mistakes outside features name their set or derived table.
    let msg = err_of("[[derived]]\nname = \"d\"\ntime = \"admit_time\"\nsql = \"SELECT admit_time FROM encounters\"\n");
    assert!(
        msg.contains("repo.toml:4:") && msg.contains("derived d") && msg.contains("patient_id"),
        "{msg}"
    );
    let msg = err_of("[[feature_set]]\nname = \"s\"\nentity = \"visit\"\n");
    assert!(
        msg.contains("repo.toml:3:") && msg.contains("feature_set s"),
        "{msg}"
    );
}

#[test]
fn definition_hash_ignores_formatting_comments_and_key_order() {
    let a = r#"
[[derived]]
name = "stays"
time = "discharge_time"
sql = "SELECT patient_id, known_at, discharge_time FROM encounters WHERE class = 'inpatient'"

[[feature_set]]
name = "s"
ttl = "30d"
[[feature_set.features]]
name = "hb"
kind = "last"
table = "observations"
filter = { code = "718-7", code_system = "LOINC" }
column = "value_num"
[[feature_set.features]]
name = "since"
kind = "days_since"
table = "stays"
"#;
    let b = r#"
# The same, written differently.
[[feature_set]]
ttl   = "720h"      # 30 days
name  = "s"

  [[feature_set.features]]
  table = "stays"
  kind = "days_since"
  name = "since"

  [[feature_set.features]]
  column = "value_num"
  filter.code_system = "LOINC"
  filter.code = { eq = "718-7" }
  kind = "last"
  name = "hb"
  table = "observations"

[[derived]]
sql = """
select patient_id, known_at, discharge_time
  from encounters   -- inpatient only
 where class = 'inpatient'
"""
time = "discharge_time"
name = "stays"
"#;
    let ha = FeatureRepo::parse(a, "a.toml")
        .unwrap()
        .set("s")
        .unwrap()
        .definition_hash();
    let hb = FeatureRepo::parse(b, "b.toml")
        .unwrap()
        .set("s")
        .unwrap()
        .definition_hash();
    assert_eq!(ha, hb);
    let changed = a.replace("718-7", "718-8");
    let hc = FeatureRepo::parse(&changed, "a.toml")
        .unwrap()
        .set("s")
        .unwrap()
        .definition_hash();
    assert_ne!(ha, hc);
    let changed = a.replace("class = 'inpatient'", "class = 'emergency'");
    let hd = FeatureRepo::parse(&changed, "a.toml")
        .unwrap()
        .set("s")
        .unwrap()
        .definition_hash();
    assert_ne!(ha, hd);
    // The canonical form reads back to the same set.
    let set = FeatureRepo::parse(a, "a.toml")
        .unwrap()
        .set("s")
        .unwrap()
        .clone();
    let back = FeatureSet::from_canonical_json(&set.canonical_json(), "lineage").unwrap();
    assert_eq!(back, set);
}

#[test]
fn example_repository_loads() {
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let online = repo.set("readmission_online").unwrap();
    let offline = repo.set("readmission").unwrap();
    assert!(online.online && online.labels().is_empty());
    assert_eq!(offline.labels(), vec!["readmitted_30d"]);
    assert_eq!(offline.features.len(), online.features.len() + 1);
    assert_eq!(offline.derived.len(), 1);
    // The issue's ready set: every score component is a feature of both sets, with the TTL
    // of the set.
    for set in [online, offline] {
        for c in ScoreComponent::ALL {
            let f = set
                .features
                .iter()
                .find(|f| f.score_component() == Some(c))
                .unwrap_or_else(|| panic!("{} lacks {}", set.name, c.name()));
            assert_eq!(f.kind, FeatureKind::Score);
            assert_eq!(f.ttl_us, set.ttl_us, "{}", f.name);
        }
    }
}

#[test]
fn score_features_in_the_definition_hash() {
    let base = "[[feature_set]]\nname = \"s\"\nttl = \"30d\"\n[[feature_set.features]]\nname = \"hb\"\nkind = \"last\"\ntable = \"observations\"\ncolumn = \"value_num\"\n";
    let with = |c: &str| {
        format!("{base}[[feature_set.features]]\nname = \"lace\"\nkind = \"score\"\ncomponent = \"{c}\"\n")
    };
    let parse = |t: &str| {
        FeatureRepo::parse(t, "s.toml")
            .unwrap()
            .set("s")
            .unwrap()
            .clone()
    };
    let plain = parse(base);
    // Sets without score features keep their canonical form (no `component` key).
    assert!(!plain.canonical_json().contains("component"));
    let a = parse(&with("lace_total"));
    let b = parse(&with("lace_l"));
    assert_ne!(a.definition_hash(), b.definition_hash());
    assert_ne!(a.definition_hash(), plain.definition_hash());
    let back = FeatureSet::from_canonical_json(&a.canonical_json(), "lineage").unwrap();
    assert_eq!(back, a);
    assert_eq!(
        back.feature("lace").unwrap().score_component(),
        Some(ScoreComponent::LaceTotal)
    );
    assert_eq!(back.feature("lace").unwrap().ttl_us, Some(30 * DAY_US));
    // A canonical form naming an unknown component does not load.
    let bad = a
        .canonical_json()
        .replace("\"lace_total\"", "\"lace_totl\"");
    assert!(FeatureSet::from_canonical_json(&bad, "lineage").is_err());
    // The scores read these tables, which materialization must load.
    let tables: Vec<&str> = a.curated_tables().iter().map(|t| t.name()).collect();
    assert_eq!(
        tables,
        ["encounters", "observations", "conditions", "procedures"]
    );
    assert_eq!(
        a.score_only_tables(),
        vec![Table::Conditions, Table::Procedures]
    );
}
