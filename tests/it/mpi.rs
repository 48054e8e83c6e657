//! The master patient index (`ward::mpi`, docs/mpi.md): links by identifier, `Patient.link`
//! and rules, each explainable; a user's unlink wins; clusters as known at `t`; precision
//! and recall on a multi-source synthetic cohort.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use ward::clock::{ManualClock, SharedClock};
use ward::ingest::pipeline::{self, Format, IngestOptions};
use ward::ingest::Context;
use ward::mpi::{self, Config, Demographics, Ident, Index, Link};
use ward::store::Store;
use ward::synth::sources::{write_sources, Source};
use ward::synth::SynthOptions;

fn day(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, d, 0, 0, 0).unwrap()
}

fn person(id: &str, family: &str, given: &str, known: DateTime<Utc>) -> Demographics {
    Demographics {
        patient_id: id.into(),
        family_name: Some(family.into()),
        given_name: Some(given.into()),
        birth_date: NaiveDate::from_ymd_opt(1950, 3, 12),
        sex: Some("female".into()),
        zip: Some("02115-1234".into()),
        // The record's source, from its id's first letter (ADT, lab, EHR).
        source: id.chars().take(1).collect(),
        known_at: known,
    }
}

fn ident(id: &str, system: &str, value: &str, known: DateTime<Utc>) -> Ident {
    Ident {
        patient_id: id.into(),
        kind: "identifier".into(),
        system: system.into(),
        value: value.into(),
        type_code: Some("MR".into()),
        known_at: known,
    }
}

fn members(index: &Index, id: &str, t: Option<DateTime<Utc>>) -> Vec<String> {
    index.cluster_of(id, t).members
}

/// A link is known when the last of its evidence is: a record that arrives later does not
/// join its person before it arrived, and an identifier learnt later does not either.
#[test]
fn clusters_as_known_at_t() {
    let cfg = Config::default_rules();
    let patients = vec![
        person("A1", "O'Brien", "Robert", day(1)),
        // The lab knows her as "Bob", a nickname of Robert, from day 5.
        person("L1", "OBrien", "Bob", day(5)),
        // The EHR misspells the family name and has no birth date: no rule links it...
        Demographics {
            birth_date: None,
            ..person("E1", "Obrian", "Roberta", day(2))
        },
        person("A2", "Smith", "Mary", day(1)),
    ];
    // ... but it carries the ADT MRN from day 8 (under an alias of the ADT's system).
    let idents = vec![
        ident("A1", "ADT", "A1", day(1)),
        ident("E1", "urn:hosp:adt", "A1", day(8)),
    ];
    let mut cfg_alias = cfg.clone();
    cfg_alias
        .system_alias
        .insert("urn:hosp:adt".into(), "ADT".into());
    let links = mpi::link(&cfg_alias, &patients, &idents, &[]);
    let index = Index::new(links.clone());

    assert_eq!(members(&index, "A1", Some(day(4))), ["A1"]);
    assert_eq!(members(&index, "L1", Some(day(5))), ["A1", "L1"]);
    assert_eq!(members(&index, "E1", Some(day(7))), ["E1"]);
    assert_eq!(members(&index, "E1", Some(day(8))), ["A1", "E1", "L1"]);
    assert_eq!(members(&index, "E1", None), ["A1", "E1", "L1"]);
    assert_eq!(members(&index, "A2", None), ["A2"]);
    // The person id is the smallest record id of the cluster at that time.
    assert_eq!(index.cluster_of("L1", Some(day(9))).person_id, "A1");

    // Without the alias the two systems are different namespaces: no identifier link.
    let plain = Index::new(mpi::link(&cfg, &patients, &idents, &[]));
    assert_eq!(members(&plain, "E1", None), ["E1"]);

    // Explainable: the rule and the normalised values, the identifier and its system.
    let c = index.cluster_of("A1", None);
    let why = index.explain(&c, None);
    let rule_link = why
        .iter()
        .find(|l| l.rule == "name-birth")
        .expect("a rule link");
    assert_eq!(
        (rule_link.patient_id.as_str(), rule_link.other_id.as_str()),
        ("A1", "L1")
    );
    assert_eq!(
        rule_link.evidence,
        "family_name=obrien, given_name=robert, birth_date=1950-03-12"
    );
    assert_eq!(rule_link.known_at, day(5));
    let id_link = why
        .iter()
        .find(|l| l.rule == "identifier")
        .expect("an identifier link");
    assert_eq!(id_link.evidence, "ADT|A1");
    assert_eq!(id_link.known_at, day(8));
}

/// A user's unlink wins over every rule from the time it is made (not before: a training
/// row at an earlier time saw the link as it was then known); a later relink undoes it.
#[test]
fn a_user_unlink_wins_from_its_time_and_a_relink_undoes_it() {
    let patients = vec![
        person("A1", "Lee", "Ann", day(1)),
        person("L1", "Lee", "Ann", day(2)),
        person("E1", "Lee", "Ann", day(3)),
    ];
    let cfg = Config::default_rules();
    let user = |decision: &str, d: u32| Link {
        patient_id: "A1".into(),
        other_id: "L1".into(),
        decision: decision.into(),
        rule: "user".into(),
        evidence: "twins, checked with the registration desk".into(),
        known_at: day(d),
    };
    let decisions = vec![user("unlink", 10)];
    // Relinking keeps the user's decisions (they are carried into every new version).
    let links = mpi::link(&cfg, &patients, &[], &decisions);
    assert!(links.contains(&decisions[0]));
    let index = Index::new(links.clone());
    assert_eq!(members(&index, "A1", Some(day(9))), ["A1", "E1", "L1"]);
    // From day 10 A1 and L1 are never in one cluster: E1 joins one of them only.
    let after = index.clusters_at(Some(day(10)));
    assert!(
        after
            .iter()
            .all(|c| !(c.members.contains(&"A1".to_string())
                && c.members.contains(&"L1".to_string())))
    );
    assert_eq!(members(&index, "A1", None), ["A1", "E1"]);
    assert_eq!(members(&index, "L1", None), ["L1"]);
    // The decision is in the explanation.
    let why = index.explain(&index.cluster_of("L1", None), None);
    assert!(why
        .iter()
        .any(|l| l.decision == "unlink" && l.rule == "user"));

    let mut again = links;
    again.push(user("link", 12));
    let index = Index::new(again);
    assert_eq!(members(&index, "L1", Some(day(11))), ["L1"]);
    assert_eq!(members(&index, "L1", Some(day(12))), ["A1", "E1", "L1"]);
}

#[test]
fn rules_are_checked_and_errors_name_the_rule() {
    let ok = Config::parse(
        "[mpi]\n[[mpi.rule]]\nname = \"r1\"\nfields = [\"family_soundex\", \"birth_digits\"]\n\
         [mpi.system_alias]\n\"urn:x\" = \"X\"\n",
        "m.toml",
    )
    .unwrap();
    assert_eq!(ok.rules.len(), 1);
    assert_eq!(ok.system_alias.get("urn:x").map(String::as_str), Some("X"));
    let err = Config::parse(
        "[mpi]\n[[mpi.rule]]\nname = \"ok\"\nfields = [\"sex\"]\n\
         [[mpi.rule]]\nname = \"bad\"\nfields = [\"surname\"]\n",
        "m.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("m.toml")
            && err.contains("#2")
            && err.contains("\"bad\"")
            && err.contains("surname"),
        "{err}"
    );
    let err = Config::parse(
        "[mpi]\n[[mpi.rule]]\nname = \"user\"\nfields = [\"sex\"]\n",
        "m.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("reserved"), "{err}");
    // The example shipped in the docs parses.
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/examples/mpi.toml"),
    )
    .unwrap();
    assert!(
        Config::parse(&text, "docs/examples/mpi.toml")
            .unwrap()
            .rules
            .len()
            >= 5
    );
}

#[test]
fn soundex_follows_the_national_archives_rules() {
    for (name, code) in [
        ("Robert", "R163"),
        ("Rupert", "R163"),
        ("Ashcraft", "A261"),
        ("Tymczak", "T522"),
        ("Pfister", "P236"),
        ("Lee", "L000"),
    ] {
        assert_eq!(mpi::soundex(name).as_deref(), Some(code), "{name}");
    }
}

/// `ward synth --sources adt,lab,ehr` through the real ingest (HL7 v2 and FHIR NDJSON),
/// linked with the example rules: pairwise precision >= 99.9% and recall >= 99% against
/// the truth file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_sources_link_above_the_targets() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sources");
    let opts = SynthOptions {
        patients: 400,
        seed: 11,
        ..SynthOptions::default()
    };
    let sum = write_sources(&opts, &[Source::Adt, Source::Lab, Source::Ehr], &out).unwrap();
    assert!(sum.records > 900, "{sum:?}");
    assert!(
        sum.with_errors > 50,
        "the sources carry demographic errors: {sum:?}"
    );

    let clock: SharedClock = Arc::new(ManualClock::new(day(1)));
    let store = Store::open(dir.path().join("store"), clock.clone()).unwrap();
    for (format, paths) in [
        (Format::Hl7v2, vec![out.join("adt"), out.join("lab")]),
        (Format::FhirNdjson, vec![out.join("ehr")]),
    ] {
        let opts = IngestOptions {
            format,
            mapping: None,
            mapping_text: None,
            max_bad: None,
            context: Context::new(clock.now()),
            read: Default::default(),
        };
        let report = pipeline::ingest(&store, &paths, &opts, None).await.unwrap();
        assert_eq!(report.bad_total(), 0, "{report:?}");
    }
    let read = |name: &str| {
        let head = store.head(name).unwrap().unwrap();
        let store = &store;
        async move { store.read(&head.hash).await.unwrap().1 }
    };
    let patients = mpi::read_patients(&read("patients").await).unwrap();
    let idents = mpi::read_identifiers(&read("patient_identifiers").await).unwrap();
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/examples/mpi.toml"),
    )
    .unwrap();
    let cfg = Config::parse(&text, "mpi.toml").unwrap();
    let index = Index::new(mpi::link(&cfg, &patients, &idents, &[]));

    let truth: HashMap<String, String> = std::fs::read_to_string(out.join("truth.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[0].to_string(), c[2].to_string())
        })
        .collect();
    assert_eq!(truth.len() as u64, sum.records);
    // Every record of the truth is in the store.
    let stored: std::collections::HashSet<&str> =
        patients.iter().map(|p| p.patient_id.as_str()).collect();
    assert!(truth.keys().all(|r| stored.contains(r.as_str())));
    let q = mpi::evaluate(&index.clusters_at(None), &truth);
    assert!(q.precision() >= 0.999, "{q:?}");
    assert!(q.recall() >= 0.99, "{q:?}");
    // As known before any record arrived nothing is linked.
    let before = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    let early = mpi::evaluate(&index.clusters_at(Some(before)), &truth);
    assert_eq!(early.true_pairs + early.false_pairs, 0, "{early:?}");
}

/// The example configuration holds the built-in rules (`ward mpi link` without `--rules`).
#[test]
fn the_example_rules_are_the_built_in_ones() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/examples/mpi.toml"),
    )
    .unwrap();
    let example = Config::parse(&text, "docs/examples/mpi.toml").unwrap();
    assert_eq!(example.rules, Config::default_rules().rules);
}

/// A key that two records of one source share says nothing about which of them a third
/// record is: by default (`unique_per_source`) the rule links none of that group.
#[test]
fn a_key_shared_within_one_source_links_nothing() {
    let patients = vec![
        person("A1", "Lee", "Ann", day(1)),
        person("A2", "Lee", "Ann", day(1)),
        person("L1", "Lee", "Ann", day(2)),
        person("E1", "Smith", "Joe", day(2)),
        person("L2", "Smith", "Joe", day(3)),
    ];
    let index = Index::new(mpi::link(&Config::default_rules(), &patients, &[], &[]));
    assert_eq!(members(&index, "L1", None), ["L1"]);
    assert_eq!(members(&index, "A1", None), ["A1"]);
    assert_eq!(members(&index, "E1", None), ["E1", "L2"]);
    let loose = Config::parse(
        "[mpi]\n[[mpi.rule]]\nname = \"r\"\nfields = [\"family_name\", \"given_name\", \"birth_date\"]\n\
         unique_per_source = false\n",
        "m.toml",
    )
    .unwrap();
    let index = Index::new(mpi::link(&loose, &patients, &[], &[]));
    assert_eq!(members(&index, "L1", None), ["A1", "A2", "L1"]);
}
