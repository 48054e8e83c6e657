//! FHIR R4 ingest against the shared samples: the Synthea R4 bundles and the official R4
//! example resources. Counts come from the samples' `STATS.txt` (and `FILES.tsv`); the
//! single values were checked by hand in the JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use arrow::error::ArrowError;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use ward::curated::{CuratedTables, Table};
use ward::ingest::fhir;
use ward::ingest::{Context, Input, Parsed, ParsedBatches};

use crate::common::shared_data;

/// `fhir::parse` of Bundles, checked against the column path an ingest run takes
/// (`parse_batches`).
fn parse_bundles(inputs: &[Input<'_>], ctx: &Context) -> Parsed {
    both_paths(
        fhir::parse(inputs, fhir::Framing::Bundle, ctx),
        fhir::parse_batches(inputs, fhir::Framing::Bundle, ctx),
    )
}

/// `fhir::parse` of NDJSON, checked against `parse_batches` the same way.
fn parse_ndjson(inputs: &[Input<'_>], ctx: &Context) -> Parsed {
    both_paths(
        fhir::parse(inputs, fhir::Framing::Ndjson, ctx),
        fhir::parse_batches(inputs, fhir::Framing::Ndjson, ctx),
    )
}

/// The row path's result, after checking that the column path gives the same batches, bad
/// records and skipped records.
fn both_paths(rows: Parsed, columns: Result<ParsedBatches, ArrowError>) -> Parsed {
    let expected = rows.clone().into_batches().expect("row path");
    assert!(
        expected == columns.expect("column path"),
        "the column path differs from the row path"
    );
    rows
}

fn ctx() -> Context {
    Context::new(utc("2024-06-01T00:00:00Z"))
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

/// `(name, bytes)` of every file that `FILES.tsv` lists, gunzipped when needed.
fn read_listed(dir: &Path, sub: &str) -> Vec<(String, Vec<u8>)> {
    let tsv = std::fs::read_to_string(dir.join("FILES.tsv")).expect("FILES.tsv");
    tsv.lines()
        .skip(1)
        .filter_map(|line| line.split('\t').next())
        .filter(|name| !name.is_empty())
        .map(|name| {
            let raw = std::fs::read(dir.join(sub).join(name)).expect("listed file exists");
            let bytes = if name.ends_with(".gz") {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .expect("gzip");
                out
            } else {
                raw
            };
            (name.to_string(), bytes)
        })
        .collect()
}

fn inputs(files: &[(String, Vec<u8>)]) -> Vec<Input<'_>> {
    files
        .iter()
        .map(|(name, bytes)| Input { name, bytes })
        .collect()
}

/// Reads `key {'A': 1, 'B': 2}` from STATS.txt.
fn stats_map(stats: &str, key: &str) -> BTreeMap<String, usize> {
    let line = stats
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("STATS.txt has no {key:?}"));
    line.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(", ")
        .filter_map(|kv| kv.split_once(": "))
        .map(|(k, v)| {
            let k = k.trim_matches('\'').to_string();
            (k, v.trim().parse().expect("count"))
        })
        .collect()
}

fn reasons(parsed: &Parsed) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for b in &parsed.bad {
        let key = (b.field.clone().unwrap_or_default(), b.reason.clone());
        *out.entry(key).or_default() += 1;
    }
    out
}

/// The tables with `source_system` blanked and rows in canonical order, for comparing two
/// parses whose file names differ.
fn canonical(mut t: CuratedTables) -> CuratedTables {
    t.patients
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.encounters
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.observations
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.conditions
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.procedures
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.medications
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.care_team
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.immunizations
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.allergies
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.patient_identifiers
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.diagnostic_reports
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.medication_administrations
        .iter_mut()
        .for_each(|r| r.meta.source_system.clear());
    t.sort_canonical();
    t
}

/// The resources of a Bundle (nested Bundles flattened), in entry order.
fn resources(doc: &Value, out: &mut Vec<Value>) {
    for entry in doc["entry"].as_array().into_iter().flatten() {
        let res = &entry["resource"];
        if res["resourceType"] == "Bundle" {
            resources(res, out);
        } else if res.is_object() {
            out.push(res.clone());
        }
    }
}

/// Distinct `source_id`s of the rows: the number of resources that produced rows when ids
/// are unique, as they are in the Synthea bundles.
fn resources_with_rows(t: &CuratedTables) -> usize {
    let ids: BTreeSet<&str> = t
        .patients
        .iter()
        .map(|r| r.meta.source_id.as_str())
        .chain(t.encounters.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.observations.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.conditions.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.procedures.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.medications.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.immunizations.iter().map(|r| r.meta.source_id.as_str()))
        .chain(t.allergies.iter().map(|r| r.meta.source_id.as_str()))
        .chain(
            t.diagnostic_reports
                .iter()
                .map(|r| r.meta.source_id.as_str()),
        )
        .chain(
            t.medication_administrations
                .iter()
                .map(|r| r.meta.source_id.as_str()),
        )
        .collect();
    ids.len()
}

/// A small deterministic generator, so garbled copies are the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn garble(bytes: &[u8], seed: u64, flips: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut rng = Lcg(seed);
    for _ in 0..flips {
        if out.is_empty() {
            break;
        }
        let at = (rng.next() as usize) % out.len();
        let palette = b"{}[]\",:0a\\ \xff";
        out[at] = palette[(rng.next() as usize) % palette.len()];
    }
    out
}

/// Feeds truncated and garbled copies of `files` to the Bundle parser: it must not panic,
/// and every copy must end up either as one unparseable file or as entries each accounted
/// for (`check_entries`, where resource ids are unique).
fn abuse(files: &[(String, Vec<u8>)], check_entries: bool) {
    let ctx = ctx();
    for (n, (name, bytes)) in files.iter().enumerate() {
        let len = bytes.len();
        let mut copies: Vec<Vec<u8>> = [1, len / 3, len.saturating_sub(2)]
            .into_iter()
            .map(|cut| bytes[..cut.min(len)].to_vec())
            .collect();
        copies.push(garble(bytes, n as u64, 1));
        copies.push(garble(bytes, n as u64 + 1000, 20));
        for copy in copies {
            let parsed = parse_bundles(&[Input { name, bytes: &copy }], &ctx);
            let doc: Option<Value> = serde_json::from_slice(&copy).ok();
            let Some(doc) = doc else {
                assert_eq!(parsed.bad.len(), 1, "{name}: one bad record for the file");
                assert_eq!(parsed.bad[0].location.record, 0);
                assert_eq!(parsed.bad[0].reason, "unparseable");
                assert!(parsed.tables.is_empty());
                continue;
            };
            if !check_entries || doc["resourceType"] != "Bundle" {
                continue;
            }
            let entries = doc["entry"].as_array().map_or(0, Vec::len);
            let mut records: BTreeSet<u64> = parsed
                .bad
                .iter()
                .filter(|b| b.table != Some(Table::CareTeam) && b.location.record > 0)
                .map(|b| b.location.record)
                .collect();
            records.extend(parsed.skipped.iter().map(|s| s.location.record));
            assert_eq!(
                records.len() + resources_with_rows(&parsed.tables),
                entries,
                "{name}: every entry is a row source, a bad record or a skipped record"
            );
        }
    }
}

#[test]
fn synthea_bundles() {
    let Some(dir) = shared_data("synthea-fhir-r4-bundles") else {
        return;
    };
    let stats = std::fs::read_to_string(dir.join("STATS.txt")).expect("STATS.txt");
    let files = read_listed(&dir, "R4_SYNTHEA");
    assert_eq!(files.len(), 22);
    let tsv = std::fs::read_to_string(dir.join("FILES.tsv")).expect("FILES.tsv");
    for ((name, bytes), line) in files.iter().zip(tsv.lines().skip(1)) {
        let size = format!("bytes_uncompressed={}", bytes.len());
        assert!(line.contains(&size), "{name}: FILES.tsv says {line}");
    }
    let parsed = parse_bundles(&inputs(&files), &ctx());
    assert!(parsed.bad.is_empty(), "{:?}", reasons(&parsed));

    let counts = stats_map(&stats, "resource counts");
    let t = &parsed.tables;
    assert_eq!(t.patients.len(), 20);
    assert_eq!(t.patients.len(), counts["Patient"]);
    assert_eq!(t.encounters.len(), counts["Encounter"]);
    assert_eq!(t.conditions.len(), counts["Condition"]);
    assert_eq!(t.procedures.len(), counts["Procedure"]);
    assert_eq!(t.medications.len(), counts["MedicationRequest"]);
    // 111 of the Observations are blood-pressure panels without a value of their own: each
    // gives two rows (systolic, diastolic) instead of one.
    assert_eq!(t.observations.len(), counts["Observation"] + 111);
    // Every encounter but five names a Practitioner of its bundle.
    assert_eq!(t.care_team.len(), 631);
    let curated: usize = [
        "Patient",
        "Encounter",
        "Observation",
        "Condition",
        "Procedure",
    ]
    .iter()
    .chain(&["MedicationRequest", "DiagnosticReport", "Immunization"])
    .map(|k| counts[*k])
    .sum();
    assert_eq!(
        parsed.skipped.len(),
        counts.values().sum::<usize>() - curated
    );

    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &t.encounters {
        *classes.entry(e.class.as_str()).or_default() += 1;
    }
    let want = stats_map(&stats, "encounter class");
    assert_eq!(classes["inpatient"], want["IMP"]);
    assert_eq!(classes["emergency"], want["EMER"]);
    assert_eq!(classes["ambulatory"], want["AMB"]);
    assert!(t
        .encounters
        .iter()
        .filter(|e| e.class == "inpatient")
        .all(|e| e.discharge_time.is_some_and(|d| d >= e.admit_time)));

    // Liz Conn: one inpatient stay, admission to the surgical department.
    let liz = "ee9f8dd8-72d2-4769-8020-89e504b1504b";
    let stays: Vec<_> = t
        .encounters
        .iter()
        .filter(|e| e.patient_id == liz && e.class == "inpatient")
        .collect();
    assert_eq!(stays.len(), 1);
    let stay = stays[0];
    assert_eq!(stay.encounter_id, "b262dced-d5e7-40e1-995b-57149e439e0d");
    assert_eq!(stay.admit_time, utc("2012-09-29T20:37:06Z"));
    assert_eq!(stay.discharge_time, Some(utc("2012-09-30T22:37:06Z")));
    let code = stay.code.as_ref().expect("encounter type");
    assert_eq!(
        (code.system.as_str(), code.code.as_str()),
        ("SNOMED", "305408004")
    );
    assert_eq!(
        stay.meta.source_system,
        "Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json.gz"
    );
    assert_eq!(
        stay.meta.source_id,
        "Encounter/b262dced-d5e7-40e1-995b-57149e439e0d"
    );
    assert_eq!(stay.meta.known_at, ctx().ingested_at);
    let team: Vec<_> = t
        .care_team
        .iter()
        .filter(|m| m.meta.source_id == stay.meta.source_id)
        .collect();
    assert_eq!(team.len(), 1);
    assert_eq!(team[0].patient_id, liz);
    assert_eq!(team[0].valid_from, stay.admit_time);
    assert_eq!(team[0].valid_to, stay.discharge_time);

    // Her hemoglobin of 2015-08-14.
    let hb = t
        .observations
        .iter()
        .find(|o| o.observation_id == "f69df8a9-3376-4a77-bae6-708c8fbe25be")
        .expect("hemoglobin");
    assert_eq!(hb.patient_id, liz);
    assert_eq!(
        (hb.code.system.as_str(), hb.code.code.as_str()),
        ("LOINC", "718-7")
    );
    assert_eq!(
        hb.code.display.as_deref(),
        Some("Hemoglobin [Mass/volume] in Blood")
    );
    assert_eq!(hb.value_num, Some(16.556943642517894));
    assert_eq!(hb.unit.as_deref(), Some("g/dL"));
    assert_eq!(hb.effective_time, utc("2015-08-14T20:37:06Z"));
    assert_eq!(hb.category.as_deref(), Some("laboratory"));
    assert_eq!(hb.status.as_deref(), Some("final"));
    assert_eq!(
        hb.encounter_id.as_deref(),
        Some("6a2c5e37-940e-4089-8d0b-ab0a036b2c36")
    );

    // STATS: "distinct lab codes 70", all LOINC; it counts (code, display) pairs, which are
    // 52 codes.
    let lab_rows = || {
        t.observations
            .iter()
            .filter(|o| o.category.as_deref() == Some("laboratory"))
    };
    let pairs: BTreeSet<(&str, Option<&str>)> = lab_rows()
        .map(|o| (o.code.code.as_str(), o.code.display.as_deref()))
        .collect();
    assert_eq!(pairs.len(), 70);
    let codes: BTreeSet<&str> = lab_rows().map(|o| o.code.code.as_str()).collect();
    assert_eq!(codes.len(), 52);
    assert!(lab_rows().all(|o| o.code.system == "LOINC"));
    assert!(t.conditions.iter().all(|c| c.code.system == "SNOMED"));
    assert!(t.medications.iter().all(|m| m.code.system == "RXNORM"));

    // Blood pressure components carry their own LOINC codes.
    let systolic = t
        .observations
        .iter()
        .filter(|o| o.code.code == "8480-6")
        .count();
    assert_eq!(systolic, 111);
}

#[test]
fn synthea_ndjson_matches_bundles() {
    let Some(dir) = shared_data("synthea-fhir-r4-bundles") else {
        return;
    };
    let files = read_listed(&dir, "R4_SYNTHEA");
    let from_bundles = parse_bundles(&inputs(&files), &ctx());

    // A Bulk Data export: one file per resource type, one resource a line, references left
    // as the bundles wrote them (urn:uuid).
    let mut by_type: BTreeMap<String, String> = BTreeMap::new();
    for (_, bytes) in &files {
        let doc: Value = serde_json::from_slice(bytes).expect("bundle JSON");
        let mut list = Vec::new();
        resources(&doc, &mut list);
        for res in list {
            let kind = res["resourceType"].as_str().expect("type").to_string();
            let text = by_type.entry(format!("{kind}.ndjson")).or_default();
            text.push_str(&res.to_string());
            text.push('\n');
        }
    }
    let ndjson: Vec<Input<'_>> = by_type
        .iter()
        .map(|(name, text)| Input {
            name,
            bytes: text.as_bytes(),
        })
        .collect();
    let from_ndjson = parse_ndjson(&ndjson, &ctx());
    assert!(from_ndjson.bad.is_empty(), "{:?}", reasons(&from_ndjson));
    assert_eq!(from_ndjson.skipped.len(), from_bundles.skipped.len());
    assert!(from_ndjson
        .tables
        .observations
        .iter()
        .all(|o| o.meta.source_system == "Observation.ndjson"));
    assert_eq!(
        canonical(from_ndjson.tables),
        canonical(from_bundles.tables)
    );
}

#[test]
fn synthea_truncated_and_garbled() {
    let Some(dir) = shared_data("synthea-fhir-r4-bundles") else {
        return;
    };
    let mut files = read_listed(&dir, "R4_SYNTHEA");
    // The five smallest bundles keep the debug-build test fast; they hold every resource type.
    files.sort_by_key(|(_, b)| b.len());
    files.truncate(5);
    abuse(&files, true);

    // The same as NDJSON, garbled line by line: every line is accounted for.
    let doc: Value = serde_json::from_slice(&files[0].1).expect("bundle JSON");
    let mut list = Vec::new();
    resources(&doc, &mut list);
    let lines: Vec<String> = list.iter().map(Value::to_string).collect();
    for seed in 0..4u64 {
        let garbled: Vec<Vec<u8>> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                garble(l.as_bytes(), seed * 10_000 + i as u64, 2)
                    .into_iter()
                    .map(|b| if b == b'\n' { b' ' } else { b })
                    .collect()
            })
            .collect();
        let text = garbled.join(&b'\n');
        let parsed = parse_ndjson(
            &[Input {
                name: "g.ndjson",
                bytes: &text,
            }],
            &ctx(),
        );
        let mut records: BTreeSet<u64> = parsed
            .bad
            .iter()
            .filter(|b| b.table != Some(Table::CareTeam))
            .map(|b| b.location.record)
            .collect();
        records.extend(parsed.skipped.iter().map(|s| s.location.record));
        assert_eq!(
            records.len() + resources_with_rows(&parsed.tables),
            lines.len()
        );
    }
}

#[test]
fn r4_examples() {
    let Some(dir) = shared_data("fhir-r4-examples") else {
        return;
    };
    let files = read_listed(&dir, "json");
    assert_eq!(files.len(), 190);
    let parsed = parse_bundles(&inputs(&files), &ctx());
    let t = &parsed.tables;

    // Roel (Patient/f201) and his inpatient stay Encounter/f203, 2013-03-11..2013-03-20.
    let roel = t
        .patients
        .iter()
        .find(|p| p.patient_id == "f201")
        .expect("Patient/f201");
    assert_eq!(roel.birth_date, NaiveDate::from_ymd_opt(1960, 3, 13));
    assert_eq!(roel.sex.as_deref(), Some("male"));
    assert_eq!(roel.family_name.as_deref(), Some("Bor"));
    assert_eq!(roel.zip.as_deref(), Some("1055RW"));
    let stays: Vec<_> = t
        .encounters
        .iter()
        .filter(|e| e.patient_id == "f201" && e.class == "inpatient")
        .collect();
    assert_eq!(stays.len(), 1);
    assert_eq!(stays[0].encounter_id, "f203");
    assert_eq!(stays[0].admit_time, utc("2013-03-11T00:00:00Z"));
    assert_eq!(stays[0].discharge_time, Some(utc("2013-03-20T00:00:00Z")));
    let code = stays[0].code.as_ref().expect("type");
    assert_eq!(
        (code.system.as_str(), code.code.as_str()),
        ("SNOMED", "183807002")
    );
    let team: Vec<_> = t
        .care_team
        .iter()
        .filter(|m| m.meta.source_id == "Encounter/f203")
        .collect();
    assert_eq!(team.len(), 1);
    assert_eq!(team[0].clinician_id, "f201");
    assert_eq!(team[0].role.as_deref(), Some("participant"));
    assert_eq!(team[0].valid_to, Some(utc("2013-03-20T00:00:00Z")));

    // A LOINC lab, and one of Roel's labs coded with the hospital's own code system.
    let glucose = t
        .observations
        .iter()
        .find(|o| o.meta.source_id == "Observation/f001")
        .expect("glucose");
    assert_eq!(
        (glucose.code.system.as_str(), glucose.code.code.as_str()),
        ("LOINC", "15074-8")
    );
    assert_eq!(glucose.value_num, Some(6.3));
    assert_eq!(glucose.unit.as_deref(), Some("mmol/l"));
    assert_eq!(glucose.effective_time, utc("2013-04-02T08:30:10Z"));
    let creatinine = t
        .observations
        .iter()
        .find(|o| o.meta.source_id == "Observation/f204")
        .expect("creatinine");
    assert_eq!(creatinine.patient_id, "f201");
    assert_eq!(
        creatinine.code.system,
        "https://intranet.aumc.nl/labtestcodes"
    );
    assert_eq!(creatinine.code.code, "20005");
    assert_eq!(creatinine.value_num, Some(122.0));
    assert_eq!(creatinine.unit.as_deref(), Some("umol/L"));
    // No effective[x]: the issued time stands in.
    assert_eq!(creatinine.effective_time, utc("2013-04-04T13:34:00Z"));

    // The temperature entered in error is kept but never visible.
    let temp = t
        .observations
        .iter()
        .find(|o| o.meta.source_id == "Observation/f202")
        .expect("temperature");
    assert_eq!(temp.meta.retracted_at, Some(temp.meta.known_at));

    // Per file: every file of a curated type gives rows or a bad record; others are skipped.
    let tsv = std::fs::read_to_string(dir.join("FILES.tsv")).expect("FILES.tsv");
    let kinds: Vec<(&str, &str)> = tsv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Some((*cols.first()?, *cols.get(4)?))
        })
        .collect();
    assert_eq!(kinds.len(), files.len());
    let mut with_rows: BTreeSet<&str> = BTreeSet::new();
    with_rows.extend(t.patients.iter().map(|r| r.meta.source_system.as_str()));
    with_rows.extend(t.encounters.iter().map(|r| r.meta.source_system.as_str()));
    with_rows.extend(t.observations.iter().map(|r| r.meta.source_system.as_str()));
    with_rows.extend(t.conditions.iter().map(|r| r.meta.source_system.as_str()));
    with_rows.extend(t.procedures.iter().map(|r| r.meta.source_system.as_str()));
    with_rows.extend(t.medications.iter().map(|r| r.meta.source_system.as_str()));
    with_rows.extend(
        t.immunizations
            .iter()
            .map(|r| r.meta.source_system.as_str()),
    );
    with_rows.extend(t.allergies.iter().map(|r| r.meta.source_system.as_str()));
    with_rows.extend(
        t.diagnostic_reports
            .iter()
            .map(|r| r.meta.source_system.as_str()),
    );
    with_rows.extend(
        t.medication_administrations
            .iter()
            .map(|r| r.meta.source_system.as_str()),
    );
    let bad_files: BTreeSet<&str> = parsed
        .bad
        .iter()
        .map(|b| b.location.file.as_str())
        .collect();
    let skipped_files: BTreeSet<&str> = parsed
        .skipped
        .iter()
        .map(|s| s.location.file.as_str())
        .collect();
    let curated_kinds = [
        "Patient",
        "Encounter",
        "Observation",
        "Condition",
        "Procedure",
        "MedicationRequest",
        "Immunization",
        "AllergyIntolerance",
        "DiagnosticReport",
        "MedicationAdministration",
    ];
    for (file, kind) in &kinds {
        if curated_kinds.contains(kind) {
            assert!(
                with_rows.contains(file)
                    || bad_files.contains(file)
                    || (*file == "procedure-example-ambulation.json"
                        && skipped_files.contains(file)),
                "{file} ({kind}) produced nothing"
            );
        } else if *kind != "Bundle" {
            assert!(skipped_files.contains(file), "{file} ({kind}) not skipped");
        }
    }
    // No example is unreadable JSON; the bad records are resources lacking what a row needs.
    assert!(parsed.bad.iter().all(|b| b.reason != "unparseable"));
    // What the examples lack, checked by hand: most Observations in the DiagnosticReport
    // bundles carry no effective[x] nor issued; 7 of the 10 Encounters have no period; the
    // apgar scores' subject is a contained Patient and one Observation's is a Group; one
    // order names a Medication that is not among the examples.
    let want: BTreeMap<(String, String), usize> = [
        ("Condition.code.coding", "missing_field", 1),
        ("Condition.onset[x]", "missing_field", 1),
        // The examples' DiagnosticReports code themselves with local codes without a
        // system (14), and one names its subject by identifier only.
        ("DiagnosticReport.code.coding", "missing_field", 14),
        ("DiagnosticReport.subject.reference", "missing_field", 1),
        ("Encounter.period.start", "missing_field", 7),
        (
            "MedicationRequest.medicationReference",
            "dangling_reference",
            1,
        ),
        ("Observation.code.coding", "missing_field", 4),
        ("Observation.effective[x]", "missing_field", 452),
        ("Observation.subject", "bad_value", 6),
        ("Observation.subject", "missing_field", 17),
        ("Observation.subject.reference", "missing_field", 1),
        ("Procedure.code", "missing_field", 1),
        ("Procedure.performed[x]", "missing_field", 2),
        ("Procedure.subject.reference", "missing_field", 2),
    ]
    .into_iter()
    .map(|(f, r, n)| ((f.to_string(), r.to_string()), n))
    .collect();
    assert_eq!(reasons(&parsed), want);
    assert_eq!(
        Table::ALL.map(|table| t.len(table)),
        [259, 3, 101, 10, 10, 47, 2, 0, 0, 6, 18, 0, 261]
    );
    // A compound (potassium chloride in saline) without a code of its own: one row per
    // ingredient.
    let compound: Vec<(&str, &str)> = t
        .medications
        .iter()
        .filter(|m| m.meta.source_id == "MedicationRequest/medrx0322")
        .map(|m| (m.medication_id.as_str(), m.code.code.as_str()))
        .collect();
    assert_eq!(
        compound,
        [
            ("medrx0322.ingredient[0]", "204520"),
            ("medrx0322.ingredient[1]", "313002")
        ]
    );
}

#[test]
fn r4_examples_truncated_and_garbled() {
    let Some(dir) = shared_data("fhir-r4-examples") else {
        return;
    };
    let files = read_listed(&dir, "json");
    abuse(&files, false);
    // The same bytes as NDJSON lines (one document a line, as written): no panic either.
    for (name, bytes) in &files {
        let cut = &bytes[..bytes.len() / 2];
        let parsed = parse_ndjson(&[Input { name, bytes: cut }], &ctx());
        assert!(!parsed.bad.is_empty() || bytes.len() < 4, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// Practitioners named by identifier (FHIR R4 3.1.3.5 conditional references; logical
// references), as SMART Bulk Data exports of Synthea write them.

const NPI: &str = "http://hl7.org/fhir/sid/us-npi";

fn practitioner_json(id: &str, npi: &str) -> String {
    serde_json::json!({
        "resourceType": "Practitioner",
        "id": id,
        "identifier": [{ "system": NPI, "value": npi }],
        "name": [{ "family": "Ward", "given": ["Ada"] }]
    })
    .to_string()
}

/// An Encounter of patient `p1` whose participants' `individual`s are the given values.
fn encounter_json(id: &str, individuals: &[Value]) -> String {
    let participants: Vec<Value> = individuals
        .iter()
        .map(|ind| {
            serde_json::json!({
                "type": [{ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "PPRF"
                }] }],
                "individual": ind
            })
        })
        .collect();
    serde_json::json!({
        "resourceType": "Encounter",
        "id": id,
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "IMP"
        },
        "subject": { "reference": "Patient/p1" },
        "period": { "start": "2020-03-01T08:00:00Z", "end": "2020-03-04T08:00:00Z" },
        "participant": participants
    })
    .to_string()
}

/// The participants the identifier tests use: a conditional reference to a Practitioner of
/// the input, the same one percent-encoded, a logical reference to it, a conditional
/// reference no Practitioner of the input answers, and a logical reference without a system.
fn identifier_participants() -> Vec<Value> {
    vec![
        serde_json::json!({ "reference": format!("Practitioner?identifier={NPI}|9999974493") }),
        serde_json::json!({ "reference": "Practitioner?identifier=http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Fus-npi%7C9999974493" }),
        serde_json::json!({ "type": "Practitioner", "identifier": { "system": NPI, "value": "9999974493" } }),
        serde_json::json!({ "reference": format!("Practitioner?identifier={NPI}|9999990001"), "display": "Dr. Elsewhere" }),
        serde_json::json!({ "identifier": { "value": "9999974493" } }),
    ]
}

/// What the participants above become: four rows (the Practitioner of the input by its id,
/// the unknown one by `system|value`) and one bad record for the identifier without a system.
fn check_identifier_team(parsed: &Parsed, file: &str, record: u64) {
    let team: Vec<(&str, &str, Option<&str>)> = parsed
        .tables
        .care_team
        .iter()
        .map(|m| {
            (
                m.patient_id.as_str(),
                m.clinician_id.as_str(),
                m.role.as_deref(),
            )
        })
        .collect();
    let unknown = format!("{NPI}|9999990001");
    assert_eq!(
        team,
        [
            ("p1", "pr-1", Some("primary")),
            ("p1", "pr-1", Some("primary")),
            ("p1", "pr-1", Some("primary")),
            ("p1", unknown.as_str(), Some("primary")),
        ]
    );
    assert!(parsed
        .tables
        .care_team
        .iter()
        .all(|m| m.valid_from == utc("2020-03-01T08:00:00Z")
            && m.valid_to == Some(utc("2020-03-04T08:00:00Z"))));
    assert_eq!(parsed.tables.encounters.len(), 1);
    assert_eq!(parsed.bad.len(), 1, "{:?}", parsed.bad);
    let bad = &parsed.bad[0];
    assert_eq!(
        (bad.location.file.as_str(), bad.location.record),
        (file, record)
    );
    assert_eq!(bad.reason, "bad_value");
    assert_eq!(
        bad.field.as_deref(),
        Some("Encounter.participant[4].individual.identifier")
    );
}

#[test]
fn ndjson_practitioners_named_by_identifier_join_the_care_team() {
    let practitioners = format!(
        "{}\n{}\n",
        practitioner_json("pr-1", "9999974493"),
        practitioner_json("pr-2", "9999974494")
    );
    let encounters = format!("{}\n", encounter_json("e1", &identifier_participants()));
    // The Encounters file first: the Practitioners come later in the input.
    let inputs = [
        Input {
            name: "Encounter.ndjson",
            bytes: encounters.as_bytes(),
        },
        Input {
            name: "Practitioner.ndjson",
            bytes: practitioners.as_bytes(),
        },
    ];
    let parsed = parse_ndjson(&inputs, &ctx());
    check_identifier_team(&parsed, "Encounter.ndjson", 1);
}

#[test]
fn bundle_practitioners_named_by_identifier_join_the_care_team() {
    let entry = |json: String, id: &str| {
        let resource: Value = serde_json::from_str(&json).expect("resource");
        serde_json::json!({ "fullUrl": format!("urn:uuid:{id}"), "resource": resource })
    };
    let bundle = |entries: Vec<Value>| {
        serde_json::json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
            .to_string()
    };
    let encounter = encounter_json("e1", &identifier_participants());
    // In one Bundle.
    let one = bundle(vec![
        entry(practitioner_json("pr-1", "9999974493"), "pr-1"),
        entry(encounter.clone(), "e1"),
    ]);
    let parsed = parse_bundles(
        &[Input {
            name: "one.json",
            bytes: one.as_bytes(),
        }],
        &ctx(),
    );
    check_identifier_team(&parsed, "one.json", 2);
    // Synthea's layout: the Practitioners in a Bundle of their own.
    let patient = bundle(vec![entry(encounter, "e1")]);
    let practitioners = bundle(vec![
        entry(practitioner_json("pr-2", "9999974494"), "pr-2"),
        entry(practitioner_json("pr-1", "9999974493"), "pr-1"),
    ]);
    let parsed = parse_bundles(
        &[
            Input {
                name: "patient.json",
                bytes: patient.as_bytes(),
            },
            Input {
                name: "practitionerInformation.json",
                bytes: practitioners.as_bytes(),
            },
        ],
        &ctx(),
    );
    check_identifier_team(&parsed, "patient.json", 1);
}

/// A conditional reference that is not one identifier search with a system names no one:
/// reported, and the encounter kept.
#[test]
fn conditional_references_without_a_system_are_reported() {
    let individuals = [
        serde_json::json!({ "reference": "Practitioner?identifier=9999974493" }),
        serde_json::json!({ "reference": "Practitioner?name=Ward" }),
        serde_json::json!({ "reference": format!("RelatedPerson?identifier={NPI}|1") }),
    ];
    let line = encounter_json("e1", &individuals);
    let parsed = parse_ndjson(
        &[Input {
            name: "Encounter.ndjson",
            bytes: line.as_bytes(),
        }],
        &ctx(),
    );
    assert_eq!(parsed.tables.encounters.len(), 1);
    assert!(parsed.tables.care_team.is_empty());
    let fields: Vec<(&str, &str)> = parsed
        .bad
        .iter()
        .map(|b| (b.field.as_deref().unwrap_or(""), b.reason.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("Encounter.participant[0].individual", "bad_value"),
            ("Encounter.participant[1].individual", "bad_value"),
        ]
    );
}
