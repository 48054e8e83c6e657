//! The HL7 v2 replay state (`hl7v2_state`) costs what changed: a run reads the buckets of
//! the records its messages name and writes the buckets it changed (issue 32).
//!
//! - After a cohort of a few hundred patients, one A08 for one of them reads a bucket or two
//!   of the state (the ingest report says how much) and writes a version that keeps every
//!   other bucket's digest and the files of the groups it did not touch.
//! - A store whose state is in the layout of stores made before (two columns, hashed whole)
//!   still ingests, into the same tables and the same state as a store made now.
//!
//! The split-run property tests (a feed cut into random runs gives the curated tables and
//! the state of one run) are in `crossrun.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use ward::curated::Table;
use ward::ingest::crossrun::{StateReport, STATE};
use ward::ingest::pipeline::{Format, IngestReport};
use ward::store::{Kind, PutOptions, Store, VersionRef};
use ward::synth::{SynthFormat, SynthOptions};

use crate::crossrun::{heads, store, Run};

/// An HL7 v2 run (`crossrun`'s ingest, which the split-run tests use too).
async fn ingest(store: &Store, run: &Run) -> IngestReport {
    crate::crossrun::ingest(store, Format::Hl7v2, run).await
}

fn state_of(report: &IngestReport) -> &StateReport {
    report
        .state
        .as_ref()
        .expect("an HL7 v2 run reports its state")
}

/// A generated cohort: `years` of history from 2015.
fn cohort(dir: &Path, patients: u64, seed: u64, years: i32) -> Run {
    let opts = SynthOptions {
        patients,
        seed,
        start: "2015-01-01T00:00:00Z".parse().unwrap(),
        end: format!("{}-01-01T00:00:00Z", 2015 + years).parse().unwrap(),
        ..SynthOptions::default()
    };
    let out = dir.join(format!("synth-{patients}-{seed}"));
    let summary = ward::synth::write(&opts, SynthFormat::Hl7v2, &out, None).unwrap();
    summary
        .files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(f).unwrap())
        })
        .collect()
}

/// The messages of a feed, each with its file's name.
fn messages(run: &Run) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, bytes) in run {
        let text = String::from_utf8(bytes.clone()).unwrap();
        let mut starts: Vec<usize> = text
            .match_indices("MSH|")
            .map(|(i, _)| i)
            .filter(|&i| i == 0 || text.as_bytes()[i - 1] == b'\r')
            .collect();
        starts.push(text.len());
        for w in starts.windows(2) {
            out.push((name.clone(), text[w[0]..w[1]].to_string()));
        }
    }
    out
}

/// An A08 made of the first ADT message of the feed: the same patient and visit, learned
/// later, moved to the surgery service.
fn a08_of_first_visit(run: &Run) -> (String, Run) {
    let (_, adt) = messages(run)
        .into_iter()
        .find(|(_, m)| m.contains("|ADT^A0"))
        .expect("the cohort has an ADT message");
    let mut visit = String::new();
    let segs: Vec<String> = adt
        .split('\r')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut f: Vec<String> = s.split('|').map(str::to_string).collect();
            match f[0].as_str() {
                "MSH" => {
                    f[6] = "20250601120000+0000".into();
                    f[8] = "ADT^A08^ADT_A01".into();
                    f[9] = "TEST-A08".into();
                }
                "EVN" => {
                    f[1] = "A08".into();
                    if f.len() > 2 {
                        f[2] = "20250601120000+0000".into();
                    }
                }
                "PV1" => {
                    if f.len() <= 19 {
                        f.resize(20, String::new());
                    }
                    f[10] = "SUR".into();
                    visit = f[19].clone();
                }
                _ => {}
            }
            f.join("|")
        })
        .collect();
    assert!(!visit.is_empty(), "the first ADT message names its visit");
    let text = format!("{}\r", segs.join("\r"));
    (visit, vec![("a08.hl7".to_string(), text.into_bytes())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_after_a_cohort_reads_and_writes_a_few_buckets_of_the_state() {
    let dir = tempfile::tempdir().unwrap();
    // Ten years of 400 patients: some 25,000 entries, more than one group of buckets.
    let feed = cohort(dir.path(), 400, 7, 10);
    let s = store(dir.path(), "store");
    let first = ingest(&s, &feed).await;
    let st = state_of(&first);
    assert_eq!(st.read_from, None, "the first run finds no state");
    assert_eq!(st.replays, 1, "nothing to load, nothing to replay again");
    let before = st.written.expect("the cohort leaves state");
    let stored = s.manifest(&before).unwrap().rows;
    assert!(stored > 20_000, "a state of some size: {stored} entries");

    let (visit, one) = a08_of_first_visit(&feed);
    let report = ingest(&s, &one).await;
    let st = state_of(&report).clone();
    assert_eq!(st.read_from, Some(before));
    assert_eq!(st.entries_stored, stored);
    assert_eq!(st.buckets, 1024);
    // The A08 names one patient and one of its visits: one bucket (the patient's).
    assert_eq!(st.buckets_read, 1, "{st:?}");
    assert!(
        st.entries_read * 50 < stored,
        "read {} of {stored} entries",
        st.entries_read
    );
    assert_eq!(st.replays, 2, "{st:?}");
    assert!(st.entries_written >= 1, "{st:?}");
    assert_eq!(st.buckets_written, 1, "{st:?}");
    let after = st.written.expect("the A08 changed the visit's state");
    assert_ne!(after, before);

    // The A08 did what it does in one run: the visit's current row is in surgery.
    let m = s
        .resolve(&VersionRef::Latest(Table::Encounters.name().into()))
        .unwrap();
    let (_, batches) = s.read(&m.hash).await.unwrap();
    let mut current = Vec::new();
    for b in &batches {
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let (id, service, retracted) = (col("encounter_id"), col("service"), col("retracted_at"));
        let id = id.as_any().downcast_ref::<StringArray>().unwrap();
        let service = service.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            if id.value(i) == visit && retracted.is_null(i) {
                current.push(service.value(i).to_string());
            }
        }
    }
    assert_eq!(current, vec!["surgery".to_string()], "visit {visit}");

    // The new version is the old one with one bucket changed: every other bucket keeps its
    // digest, and the groups without it keep their files.
    let old = s.bucket_layout(&before).unwrap().expect("a bucketed state");
    let new = s.bucket_layout(&after).unwrap().expect("a bucketed state");
    let changed: Vec<usize> = (0..old.digests.len())
        .filter(|&b| old.digests[b] != new.digests[b])
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(old.groups.len() > 1, "a state of several groups");
    let b = changed[0] as u32;
    let files = |h| -> BTreeMap<String, String> {
        s.manifest(h)
            .unwrap()
            .files
            .into_iter()
            .map(|f| (f.blake3, f.path))
            .collect()
    };
    let (old_files, new_files) = (files(&before), files(&after));
    let kept_groups = new
        .groups
        .iter()
        .filter(|(lo, hi)| !(*lo..*hi).contains(&b))
        .count();
    assert!(kept_groups >= 1);
    let shared = new_files
        .keys()
        .filter(|h| old_files.contains_key(*h))
        .count();
    assert!(
        shared >= kept_groups,
        "{shared} files shared for {kept_groups} unchanged groups"
    );
    assert!(
        new.groups.iter().filter(|g| old.groups.contains(g)).count() >= kept_groups,
        "the unchanged groups are the base's"
    );
}

/// The entries of a state version.
async fn entries(store: &Store, hash: &ward::hash::ContentHash) -> Vec<(String, String)> {
    let (_, batches) = store.read(hash).await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let col = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let (k, v) = (col("key"), col("value"));
        out.extend((0..b.num_rows()).map(|i| (k.value(i).to_string(), v.value(i).to_string())));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_in_the_old_unbucketed_layout_still_ingests() {
    let dir = tempfile::tempdir().unwrap();
    let all = messages(&cohort(dir.path(), 25, 3, 2));
    assert!(all.len() > 30, "{}", all.len());
    let third = all.len() / 3;
    let run = |part: &[(String, String)]| -> Run {
        let mut joined: Vec<(String, Vec<u8>)> = Vec::new();
        for (name, m) in part {
            match joined.iter_mut().find(|(n, _)| n == name) {
                Some((_, b)) => b.extend_from_slice(m.as_bytes()),
                None => joined.push((name.clone(), m.as_bytes().to_vec())),
            }
        }
        joined
    };
    let runs = [
        run(&all[..third]),
        run(&all[third..2 * third]),
        run(&all[2 * third..]),
    ];

    // A store made now, and one whose state after the first run is in the old layout: the
    // same entries as two text columns, hashed whole (as stores made before kept it).
    let now = store(dir.path(), "now");
    let old = store(dir.path(), "old");
    ingest(&now, &runs[0]).await;
    ingest(&old, &runs[0]).await;
    let h = old.head(STATE).unwrap().unwrap().hash;
    let kv = entries(&old, &h).await;
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(kv.iter().map(|e| &e.0))),
        Arc::new(StringArray::from_iter_values(kv.iter().map(|e| &e.1))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let put = old
        .put_batches(schema, vec![batch], PutOptions::new(STATE, Kind::Other))
        .await
        .unwrap();
    let legacy = put.manifest.hash;
    assert!(old.bucket_layout(&legacy).unwrap().is_none());
    assert_eq!(old.head(STATE).unwrap().unwrap().hash, legacy);

    // The second run reads it whole and writes the bucketed layout, whole: the same tables
    // and the same state as the store made now.
    let r_now = ingest(&now, &runs[1]).await;
    let r_old = ingest(&old, &runs[1]).await;
    let st = state_of(&r_old);
    assert_eq!(st.read_from, Some(legacy));
    assert_eq!(st.buckets, 0, "read whole: {st:?}");
    assert_eq!(st.entries_read, kv.len() as u64);
    assert_eq!(st.replays, 1);
    assert_eq!(st.buckets_written, 0, "written whole: {st:?}");
    assert!(state_of(&r_now).buckets_read > 0);
    assert_eq!(heads(&old), heads(&now));
    let h = old.head(STATE).unwrap().unwrap().hash;
    assert!(old.bucket_layout(&h).unwrap().is_some());

    // The third run works bucket by bucket on both.
    ingest(&now, &runs[2]).await;
    let r_old = ingest(&old, &runs[2]).await;
    let st = state_of(&r_old);
    assert_eq!(st.buckets, 1024, "{st:?}");
    assert!(st.buckets_written > 0, "{st:?}");
    assert_eq!(heads(&old), heads(&now));

    // And all of it equals one run over the whole feed.
    let one = store(dir.path(), "one");
    ingest(&one, &run(&all)).await;
    assert_eq!(heads(&one), heads(&now));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_written_by_buckets_equals_the_state_written_whole() {
    // Runs of one message each, then the same messages in one run: the same state hash,
    // although the one is built bucket by bucket over many versions and the other in one go.
    let dir = tempfile::tempdir().unwrap();
    let all = messages(&cohort(dir.path(), 3, 11, 2));
    let split = store(dir.path(), "split");
    let mut replays = BTreeSet::new();
    for (name, m) in &all {
        let r = ingest(&split, &vec![(name.clone(), m.clone().into_bytes())]).await;
        replays.insert(state_of(&r).replays);
    }
    assert!(replays.contains(&2), "later runs load buckets: {replays:?}");
    let whole = store(dir.path(), "whole");
    let joined: String = all.iter().map(|(_, m)| m.as_str()).collect();
    ingest(&whole, &vec![(all[0].0.clone(), joined.into_bytes())]).await;
    assert_eq!(heads(&split), heads(&whole));
    assert!(heads(&whole).contains_key(STATE));
}
