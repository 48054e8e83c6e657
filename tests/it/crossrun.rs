//! A message's effect does not depend on which run brought it: a feed cut into several
//! `ward ingest` runs gives the curated tables (the same content hashes) of one run over the
//! whole feed.
//!
//! Property tests cut generated cohorts (`ward synth`, HL7 v2 and FHIR NDJSON) at random
//! points into random numbers of runs (and compare the HL7 v2 replay state `hl7v2_state`
//! too); targeted tests bring each kind of change in a later
//! run than the row it changes (HL7 v2 A08, A02, A12, A03, A11, A13, ORU final after
//! preliminary, correction and deletion, DG1 deletion; FHIR a new version, an older version,
//! a version between two stored ones, an encounter's participant dropped).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ward::clock::ManualClock;
use ward::curated::Table;
use ward::ingest::pipeline::{self, Format, IngestOptions, NamedInput, OnConflict};
use ward::ingest::Context;
use ward::store::{Store, VersionRef};
use ward::synth::{SynthFormat, SynthOptions};

/// One run's inputs: (name, bytes).
pub(crate) type Run = Vec<(String, Vec<u8>)>;

pub(crate) fn store(dir: &Path, name: &str) -> Store {
    let clock = Arc::new(ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap()));
    Store::open(dir.join(name), clock).unwrap()
}

fn options(format: Format) -> IngestOptions {
    IngestOptions {
        format,
        mapping: None,
        mapping_text: None,
        max_bad: None,
        context: Context::new("2026-06-01T00:00:00Z".parse().unwrap()),
        read: Default::default(),
    }
}

pub(crate) async fn ingest(store: &Store, format: Format, run: &Run) -> pipeline::IngestReport {
    let inputs = run
        .iter()
        .map(|(name, bytes)| NamedInput {
            name: name.clone(),
            bytes: bytes.clone(),
        })
        .collect();
    pipeline::ingest_inputs(
        store,
        inputs,
        Vec::new(),
        None,
        &options(format),
        OnConflict::Fail,
    )
    .await
    .unwrap()
}

/// The head of every curated table of a store, and of the HL7 v2 replay state: runs one
/// after the other leave the state (built bucket by bucket) one run leaves (built whole).
pub(crate) fn heads(store: &Store) -> BTreeMap<String, String> {
    Table::ALL
        .iter()
        .map(|t| t.name())
        .chain([ward::ingest::crossrun::STATE])
        .filter_map(|name| {
            store
                .resolve(&VersionRef::Latest(name.to_string()))
                .ok()
                .map(|m| (name.to_string(), m.hash.to_string()))
        })
        .collect()
}

/// The runs as one run: the inputs of the same name joined in run order.
fn as_one(runs: &[Run]) -> Run {
    let mut joined: Vec<(String, Vec<u8>)> = Vec::new();
    for run in runs {
        for (name, bytes) in run {
            match joined.iter_mut().find(|(n, _)| n == name) {
                Some((_, b)) => b.extend_from_slice(bytes),
                None => joined.push((name.clone(), bytes.clone())),
            }
        }
    }
    joined
}

/// Ingests `runs` one after the other into a new store, and all of them as one run into
/// another; returns both stores' curated heads (the split ones first) and the split store.
async fn split_and_whole(
    dir: &Path,
    tag: &str,
    format: Format,
    runs: &[Run],
) -> (BTreeMap<String, String>, BTreeMap<String, String>, Store) {
    let whole = store(dir, &format!("{tag}-whole"));
    ingest(&whole, format, &as_one(runs)).await;
    let split = store(dir, &format!("{tag}-split"));
    for run in runs.iter().filter(|r| !r.is_empty()) {
        ingest(&split, format, run).await;
    }
    (heads(&split), heads(&whole), split)
}

async fn assert_same(dir: &Path, tag: &str, format: Format, runs: &[Run]) -> Store {
    let (split, whole, store) = split_and_whole(dir, tag, format, runs).await;
    assert!(!whole.is_empty());
    assert_eq!(
        split, whole,
        "{tag}: the runs one after the other give other curated tables than one run"
    );
    store
}

/// The rows of a curated table as JSON objects (for checking what the tables say).
async fn rows(store: &Store, table: Table) -> Vec<serde_json::Value> {
    let Ok(m) = store.resolve(&VersionRef::Latest(table.name().into())) else {
        return Vec::new();
    };
    let (_, batches) = store.read(&m.hash).await.unwrap();
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut buf);
        for b in &batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    if buf.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(&buf).unwrap()
}

/// The rows of `table` not retracted.
async fn current(store: &Store, table: Table) -> Vec<serde_json::Value> {
    rows(store, table)
        .await
        .into_iter()
        .filter(|r| r.get("retracted_at").is_none_or(|v| v.is_null()))
        .collect()
}

async fn quarantine_reasons(store: &Store) -> Vec<String> {
    let Ok(m) = store.resolve(&VersionRef::Latest("quarantine".into())) else {
        return Vec::new();
    };
    let (_, batches) = store.read(&m.hash).await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let col = b
            .column_by_name("reason")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        out.extend((0..b.num_rows()).map(|i| col.value(i).to_string()));
    }
    out
}

// ---- HL7 v2 messages -------------------------------------------------------------------

/// A segment from (field number, value) pairs.
fn seg(name: &str, fields: &[(usize, &str)]) -> String {
    let last = fields.iter().map(|(i, _)| *i).max().unwrap_or(0);
    let mut f = vec![String::new(); last];
    for (i, v) in fields {
        f[*i - 1] = (*v).to_string();
    }
    format!("{name}|{}\r", f.join("|"))
}

fn msh(kind: &str, control: &str, at: &str) -> String {
    format!("MSH|^~\\&|HIS|GENERAL|WARD|WARD|{at}||{kind}|{control}|P|2.5.1\r")
}

const PID: &str = "PID|1||P1^^^GEN^MR||Doe^Jane||19700101|F\r";

/// An ADT message of visit V1 with the given PV1 fields (besides class and visit number).
fn adt(trigger: &str, control: &str, at: &str, pv1: &[(usize, &str)], extra: &str) -> String {
    let mut fields = vec![(1, "1"), (2, "I"), (19, "V1")];
    fields.extend_from_slice(pv1);
    format!(
        "{}EVN|{trigger}|{at}\r{PID}{}{extra}",
        msh(&format!("ADT^{trigger}^ADT_A01"), control, at),
        seg("PV1", &fields)
    )
}

fn a01(extra: &str) -> String {
    adt(
        "A01",
        "M1",
        "20240101080000+0000",
        &[
            (7, "D1^Smith^John"),
            (10, "MED"),
            (44, "20240101080000+0000"),
        ],
        extra,
    )
}

/// An ORU^R01 of order ORD1 with one potassium result.
fn oru(control: &str, at: &str, status: &str, value: &str) -> String {
    format!(
        "{}{PID}OBR|1||ORD1|2823-3^Potassium^LN|||20240101090000+0000\rOBX|1|NM|2823-3^Potassium^LN||{value}|mmol/L|||||{status}|||20240101090000+0000\r",
        msh("ORU^R01^ORU_R01", control, at)
    )
}

fn runs(messages: &[&[String]]) -> Vec<Run> {
    messages
        .iter()
        .map(|msgs| vec![("feed.hl7".to_string(), msgs.concat().into_bytes())])
        .collect()
}

#[tokio::test]
async fn hl7_a08_update_in_a_later_run_replaces_the_visit() {
    let dir = tempfile::tempdir().unwrap();
    let update = adt(
        "A08",
        "M2",
        "20240101100000+0000",
        &[(7, "D2^Jones^Ann"), (10, "SUR")],
        "",
    );
    let s = assert_same(
        dir.path(),
        "a08",
        Format::Hl7v2,
        &runs(&[&[a01("")], &[update]]),
    )
    .await;
    let enc = current(&s, Table::Encounters).await;
    assert_eq!(enc.len(), 1, "one current version of the visit: {enc:?}");
    assert_eq!(enc[0]["service"], "surgery");
    let team = current(&s, Table::CareTeam).await;
    assert_eq!(team.len(), 1, "{team:?}");
    assert_eq!(team[0]["clinician_id"], "D2");
}

#[tokio::test]
async fn hl7_a02_transfer_and_a12_cancel_in_later_runs() {
    let dir = tempfile::tempdir().unwrap();
    let transfer = adt(
        "A02",
        "M2",
        "20240102080000+0000",
        &[(7, "D2^Jones^Ann"), (10, "CAR")],
        "",
    );
    let cancel = adt("A12", "M3", "20240102090000+0000", &[], "");
    assert_same(
        dir.path(),
        "a02",
        Format::Hl7v2,
        &runs(&[&[a01("")], std::slice::from_ref(&transfer)]),
    )
    .await;
    let s = assert_same(
        dir.path(),
        "a12",
        Format::Hl7v2,
        &runs(&[&[a01("")], &[transfer], &[cancel]]),
    )
    .await;
    let enc = current(&s, Table::Encounters).await;
    assert_eq!(enc.len(), 1, "{enc:?}");
    assert_eq!(
        enc[0]["service"], "medicine",
        "A12 restores the state before A02"
    );
    assert!(!quarantine_reasons(&s)
        .await
        .contains(&"dangling_reference".to_string()));
}

#[tokio::test]
async fn hl7_a03_discharge_and_a13_cancel_in_later_runs() {
    let dir = tempfile::tempdir().unwrap();
    let discharge = adt(
        "A03",
        "M2",
        "20240105120000+0000",
        &[(36, "01"), (45, "20240105120000+0000")],
        "",
    );
    let s = assert_same(
        dir.path(),
        "a03",
        Format::Hl7v2,
        &runs(&[&[a01("")], std::slice::from_ref(&discharge)]),
    )
    .await;
    let enc = current(&s, Table::Encounters).await;
    assert_eq!(enc.len(), 1, "{enc:?}");
    assert!(!enc[0]["discharge_time"].is_null());
    let undo = adt("A13", "M3", "20240105130000+0000", &[], "");
    let s = assert_same(
        dir.path(),
        "a13",
        Format::Hl7v2,
        &runs(&[&[a01("")], &[discharge], &[undo]]),
    )
    .await;
    let enc = current(&s, Table::Encounters).await;
    assert_eq!(enc.len(), 1, "{enc:?}");
    assert!(
        enc[0]["discharge_time"].is_null(),
        "A13 undoes the discharge"
    );
}

#[tokio::test]
async fn hl7_a11_cancel_in_a_later_run_retracts_the_visit_and_its_diagnoses() {
    let dir = tempfile::tempdir().unwrap();
    let dg1 = "DG1|1||I10^Hypertension^I10||20240101080000+0000|A\r";
    let cancel = adt("A11", "M2", "20240101120000+0000", &[], "");
    let s = assert_same(
        dir.path(),
        "a11",
        Format::Hl7v2,
        &runs(&[&[a01(dg1)], &[cancel]]),
    )
    .await;
    assert!(current(&s, Table::Encounters).await.is_empty());
    assert!(current(&s, Table::CareTeam).await.is_empty());
    assert!(current(&s, Table::Conditions).await.is_empty());
    assert!(!quarantine_reasons(&s)
        .await
        .contains(&"dangling_reference".to_string()));
}

#[tokio::test]
async fn hl7_dg1_deletion_in_a_later_run() {
    let dir = tempfile::tempdir().unwrap();
    let dg1 = "DG1|1||I10^Hypertension^I10||20240101080000+0000|A\r";
    let delete = adt(
        "A08",
        "M2",
        "20240101120000+0000",
        &[],
        &seg(
            "DG1",
            &[
                (1, "1"),
                (3, "I10^Hypertension^I10"),
                (5, "20240101080000+0000"),
                (6, "A"),
                (21, "D"),
            ],
        ),
    );
    let s = assert_same(
        dir.path(),
        "dg1",
        Format::Hl7v2,
        &runs(&[&[a01(dg1)], &[delete]]),
    )
    .await;
    assert!(current(&s, Table::Conditions).await.is_empty());
}

#[tokio::test]
async fn hl7_oru_final_after_preliminary_in_a_later_run() {
    let dir = tempfile::tempdir().unwrap();
    let prelim = oru("L1", "20240101093000+0000", "P", "5.0");
    let fin = oru("L2", "20240101110000+0000", "F", "5.2");
    let s = assert_same(
        dir.path(),
        "oru-final",
        Format::Hl7v2,
        &runs(&[&[a01(""), prelim], &[fin]]),
    )
    .await;
    let obs = current(&s, Table::Observations).await;
    assert_eq!(obs.len(), 1, "{obs:?}");
    assert_eq!(obs[0]["status"], "final");
}

#[tokio::test]
async fn hl7_oru_correction_and_deletion_in_later_runs() {
    let dir = tempfile::tempdir().unwrap();
    let fin = oru("L1", "20240101093000+0000", "F", "5.0");
    let corr = oru("L2", "20240101110000+0000", "C", "4.1");
    let s = assert_same(
        dir.path(),
        "oru-corr",
        Format::Hl7v2,
        &runs(&[std::slice::from_ref(&fin), std::slice::from_ref(&corr)]),
    )
    .await;
    let obs = current(&s, Table::Observations).await;
    assert_eq!(obs.len(), 1, "{obs:?}");
    assert_eq!(obs[0]["value_num"], 4.1);
    let del = oru("L3", "20240101120000+0000", "D", "");
    let s = assert_same(
        dir.path(),
        "oru-del",
        Format::Hl7v2,
        &runs(&[&[fin], &[corr], &[del]]),
    )
    .await;
    assert!(current(&s, Table::Observations).await.is_empty());
}

#[tokio::test]
async fn hl7_a_resent_feed_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let feed = [
        a01(""),
        adt(
            "A03",
            "M2",
            "20240105120000+0000",
            &[(36, "01"), (45, "20240105120000+0000")],
            "",
        ),
        oru("L1", "20240101093000+0000", "F", "5.0"),
    ];
    let s = store(dir.path(), "resent");
    let run = &runs(&[&feed])[0];
    ingest(&s, Format::Hl7v2, run).await;
    let once = heads(&s);
    ingest(&s, Format::Hl7v2, run).await;
    assert_eq!(heads(&s), once, "the same feed again changes nothing");
}

// ---- FHIR ------------------------------------------------------------------------------

fn encounter(version: u32, at: &str, status: &str, end: Option<&str>, attending: bool) -> String {
    let mut e = serde_json::json!({
        "resourceType": "Encounter",
        "id": "E1",
        "meta": {"versionId": version.to_string(), "lastUpdated": at},
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": "Patient/P1"},
        "period": {"start": "2024-01-01T08:00:00Z"},
    });
    if let Some(end) = end {
        e["period"]["end"] = end.into();
    }
    if attending {
        e["participant"] = serde_json::json!([{
            "type": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "code": "ATND"
            }]}],
            "individual": {"reference": "Practitioner/D1"}
        }]);
    }
    format!("{e}\n")
}

fn ndjson(lines: &[&String]) -> Run {
    let text: String = lines.iter().map(|l| l.as_str()).collect();
    vec![("Encounter.ndjson".to_string(), text.into_bytes())]
}

fn v1() -> String {
    encounter(1, "2024-01-01T08:00:00Z", "in-progress", None, true)
}

fn v2() -> String {
    encounter(
        2,
        "2024-01-03T08:00:00Z",
        "finished",
        Some("2024-01-03T08:00:00Z"),
        false,
    )
}

fn v3() -> String {
    encounter(
        3,
        "2024-01-04T08:00:00Z",
        "finished",
        Some("2024-01-02T20:00:00Z"),
        false,
    )
}

#[tokio::test]
async fn fhir_new_version_in_a_later_run_supersedes_the_stored_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = assert_same(
        dir.path(),
        "fhir-new",
        Format::FhirNdjson,
        &[ndjson(&[&v1()]), ndjson(&[&v2()])],
    )
    .await;
    let enc = current(&s, Table::Encounters).await;
    assert_eq!(enc.len(), 1, "{enc:?}");
    assert!(!enc[0]["discharge_time"].is_null());
    // v2 has no participant: v1's care-team row ends with v1.
    assert!(current(&s, Table::CareTeam).await.is_empty());
}

#[tokio::test]
async fn fhir_older_version_in_a_later_run_is_superseded_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = assert_same(
        dir.path(),
        "fhir-old",
        Format::FhirNdjson,
        &[ndjson(&[&v2()]), ndjson(&[&v1()])],
    )
    .await;
    let enc = current(&s, Table::Encounters).await;
    assert_eq!(enc.len(), 1, "{enc:?}");
    assert!(!enc[0]["discharge_time"].is_null());
}

#[tokio::test]
async fn fhir_version_between_two_stored_ones() {
    let dir = tempfile::tempdir().unwrap();
    assert_same(
        dir.path(),
        "fhir-between",
        Format::FhirNdjson,
        &[ndjson(&[&v1(), &v3()]), ndjson(&[&v2()])],
    )
    .await;
}

// ---- Property tests over generated cohorts ---------------------------------------------

fn synth(dir: &Path, format: SynthFormat, seed: u64) -> Vec<(String, Vec<u8>)> {
    let opts = SynthOptions {
        patients: 25,
        seed,
        start: "2020-01-01T00:00:00Z".parse().unwrap(),
        end: "2022-01-01T00:00:00Z".parse().unwrap(),
        ..SynthOptions::default()
    };
    let out = dir.join(format!("synth-{seed}"));
    let summary = ward::synth::write(&opts, format, &out, None).unwrap();
    summary
        .files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(f).unwrap())
        })
        .collect()
}

/// The pieces of a feed, each with the name of the file it came from: HL7 v2 messages, or
/// NDJSON lines.
fn pieces(files: &[(String, Vec<u8>)], hl7: bool) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, bytes) in files {
        let text = String::from_utf8(bytes.clone()).unwrap();
        if hl7 {
            let mut starts: Vec<usize> = text
                .match_indices("MSH|")
                .map(|(i, _)| i)
                .filter(|&i| i == 0 || text.as_bytes()[i - 1] == b'\r')
                .collect();
            starts.push(text.len());
            for w in starts.windows(2) {
                out.push((name.clone(), text.as_bytes()[w[0]..w[1]].to_vec()));
            }
        } else {
            for line in text.split_inclusive('\n') {
                out.push((name.clone(), line.as_bytes().to_vec()));
            }
        }
    }
    out
}

/// `pieces` cut at random points into 2 to 6 runs; each run joins its pieces by file.
fn cut(pieces: &[(String, Vec<u8>)], rng: &mut ChaCha8Rng) -> Vec<Run> {
    let n = rng.random_range(2..=6usize);
    let mut points: Vec<usize> = (1..n).map(|_| rng.random_range(0..=pieces.len())).collect();
    points.push(0);
    points.push(pieces.len());
    points.sort_unstable();
    points
        .windows(2)
        .map(|w| as_one(&[pieces[w[0]..w[1]].to_vec()]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hl7_cohorts_cut_into_random_runs_give_the_tables_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [1u64, 2, 3] {
        let files = synth(dir.path(), SynthFormat::Hl7v2, seed);
        let all = pieces(&files, true);
        assert!(all.len() > 50, "a cohort of some size: {}", all.len());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for trial in 0..2 {
            let runs = cut(&all, &mut rng);
            assert_same(
                dir.path(),
                &format!("hl7-{seed}-{trial}"),
                Format::Hl7v2,
                &runs,
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_cohorts_cut_into_random_runs_in_any_order_give_the_tables_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [1u64, 2, 3] {
        let files = synth(dir.path(), SynthFormat::FhirNdjson, seed);
        let all = pieces(&files, false);
        assert!(all.len() > 50, "a cohort of some size: {}", all.len());
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
        for trial in 0..2 {
            let mut runs = cut(&all, &mut rng);
            // FHIR versions are ordered by lastUpdated, whatever the arrival: the runs may
            // come in any order.
            if trial == 1 {
                runs.reverse();
            }
            assert_same(
                dir.path(),
                &format!("fhir-{seed}-{trial}"),
                Format::FhirNdjson,
                &runs,
            )
            .await;
        }
    }
}
