//! Consent: research opt-outs as the curated `consent` table (FHIR `Consent` resources and
//! CSV through a mapping), applied to research exports (training sets) as known at the
//! export's time, never to online lookups; the consent version in the training set's
//! lineage; late-arriving opt-outs and withdrawals.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, TimeZone, Utc};

use ward::clock::{ManualClock, SharedClock};
use ward::curated::{consent, CuratedTables, Table};
use ward::features::{self, FeatureRepo, MaterializeOptions};
use ward::hash::ContentHash;
use ward::ingest::mapping::{self, Mapping};
use ward::ingest::pipeline::{self, Format, IngestOptions};
use ward::ingest::{fhir, Context, Input};
use ward::lookup::{self, Entities, HistoricalRequest, Online};
use ward::security::deid::{ConsentApplied, NO_CONSENT};
use ward::store::{Kind, PutOptions, Store, VersionRef};
use ward::synth::{generate_cohort, SynthOptions};

const EXAMPLE: &str = include_str!("../../examples/features/readmission.toml");

fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

/// A FHIR R4 Consent as one NDJSON line.
fn consent_json(
    id: &str,
    patient: &str,
    scope: &str,
    kind: &str,
    status: &str,
    updated: &str,
) -> String {
    serde_json::json!({
        "resourceType": "Consent",
        "id": id,
        "meta": {"lastUpdated": updated},
        "status": status,
        "scope": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": scope
        }]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "dateTime": updated,
        "provision": {"type": kind}
    })
    .to_string()
}

fn parse(lines: &[String]) -> ward::ingest::Parsed {
    let text = lines.join("\n");
    let ctx = Context::new(utc(2030, 1, 1));
    fhir::parse(
        &[Input {
            name: "Consent.ndjson",
            bytes: text.as_bytes(),
        }],
        fhir::Framing::Ndjson,
        &ctx,
    )
}

#[test]
fn fhir_consent_permit_deny_scope_and_retractions() {
    let mut nested = serde_json::from_str::<serde_json::Value>(&consent_json(
        "k3",
        "p3",
        "research",
        "permit",
        "active",
        "2026-01-03T00:00:00Z",
    ))
    .unwrap();
    // A permit with a nested deny (an exception) is read as a deny: never as consent.
    nested["provision"]["provision"] = serde_json::json!([{"type": "deny"}]);
    nested["provision"]["period"] =
        serde_json::json!({"start": "2026-01-01", "end": "2027-01-01T00:00:00Z"});
    let mut no_scope: serde_json::Value = serde_json::from_str(&consent_json(
        "b1",
        "p9",
        "research",
        "deny",
        "active",
        "2026-01-01T00:00:00Z",
    ))
    .unwrap();
    no_scope.as_object_mut().unwrap().remove("scope");
    let mut no_patient: serde_json::Value = serde_json::from_str(&consent_json(
        "b4",
        "p9",
        "research",
        "deny",
        "active",
        "2026-01-01T00:00:00Z",
    ))
    .unwrap();
    no_patient.as_object_mut().unwrap().remove("patient");
    let lines = vec![
        consent_json(
            "k1",
            "p1",
            "research",
            "deny",
            "active",
            "2026-01-01T00:00:00Z",
        ),
        consent_json(
            "k2",
            "p2",
            "treatment",
            "permit",
            "active",
            "2026-01-02T00:00:00Z",
        ),
        nested.to_string(),
        consent_json(
            "k4",
            "p4",
            "research",
            "deny",
            "entered-in-error",
            "2026-01-04T00:00:00Z",
        ),
        consent_json(
            "k5",
            "p5",
            "research",
            "deny",
            "inactive",
            "2026-01-05T00:00:00Z",
        ),
        no_scope.to_string(),
        consent_json(
            "b2",
            "p9",
            "marketing",
            "deny",
            "active",
            "2026-01-01T00:00:00Z",
        ),
        consent_json(
            "b3",
            "p9",
            "research",
            "maybe",
            "active",
            "2026-01-01T00:00:00Z",
        ),
        no_patient.to_string(),
        consent_json(
            "b5",
            "p9",
            "research",
            "deny",
            "signed",
            "2026-01-01T00:00:00Z",
        ),
    ];
    let p = parse(&lines);
    let rows = &p.tables.consent;
    assert_eq!(rows.len(), 5, "{:?}", p.bad);
    let by_id = |id: &str| rows.iter().find(|r| r.consent_id == id).unwrap();
    let k1 = by_id("k1");
    assert_eq!(
        (
            k1.patient_id.as_str(),
            k1.scope.as_str(),
            k1.decision.as_str()
        ),
        ("p1", consent::RESEARCH, consent::DENY)
    );
    assert_eq!(k1.meta.known_at, utc(2026, 1, 1));
    assert_eq!(k1.decided_at, Some(utc(2026, 1, 1)));
    assert_eq!(k1.meta.retracted_at, None);
    assert_eq!(k1.meta.source_id, "Consent/k1");
    let k2 = by_id("k2");
    assert_eq!(
        (k2.scope.as_str(), k2.decision.as_str()),
        (consent::TREATMENT, consent::PERMIT)
    );
    let k3 = by_id("k3");
    assert_eq!(
        k3.decision,
        consent::DENY,
        "a nested deny makes the row a deny"
    );
    assert_eq!(k3.period_start, Some(utc(2026, 1, 1)));
    assert_eq!(k3.period_end, Some(utc(2027, 1, 1)));
    // entered-in-error and inactive are kept, retracted from when they were known.
    assert_eq!(by_id("k4").meta.retracted_at, Some(utc(2026, 1, 4)));
    assert_eq!(by_id("k5").meta.retracted_at, Some(utc(2026, 1, 5)));

    // Each bad consent is quarantined naming its field.
    let bad: Vec<(u64, Option<Table>, String, String)> = p
        .bad
        .iter()
        .map(|b| {
            (
                b.location.record,
                b.table,
                b.field.clone().unwrap_or_default(),
                b.reason.clone(),
            )
        })
        .collect();
    let c = Some(Table::Consent);
    assert_eq!(
        bad,
        vec![
            (6, c, "Consent.scope".into(), "missing_field".into()),
            (7, c, "Consent.scope".into(), "bad_value".into()),
            (8, c, "Consent.provision.type".into(), "bad_value".into()),
            (9, c, "Consent.patient".into(), "missing_field".into()),
            (10, c, "Consent.status".into(), "bad_value".into()),
        ]
    );

    // What the rows say about research in 2026-06: p1 and p3 are out; p2's consent is for
    // treatment; p4's and p5's opt-outs are not in force.
    let b = p.tables.to_batch(Table::Consent).unwrap();
    let state = consent::research_at(std::slice::from_ref(&b), utc(2026, 6, 1)).unwrap();
    assert_eq!(state.opted_out, set(&["p1", "p3"]));
    // Before they were known, nothing; after p3's period ends, p3 is back in.
    let before = consent::research_at(std::slice::from_ref(&b), utc(2025, 12, 31)).unwrap();
    assert!(before.opted_out.is_empty());
    let later = consent::research_at(&[b], utc(2027, 6, 1)).unwrap();
    assert_eq!(later.opted_out, set(&["p1"]));
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn csv_consent_through_the_example_mapping() {
    let text = std::fs::read_to_string(crate_path("mappings/consent-example.toml")).unwrap();
    let m = Mapping::from_toml(&text, "mappings/consent-example.toml").unwrap();
    let csv = "form_id,mrn,purpose,choice,valid_from,valid_until,signed_at,recorded_at,status\n\
        F1,P1,RESEARCH,OPT-OUT,,,2026-03-01 09:12,2026-03-01 09:15,signed\n\
        F2,P2,TREATMENT,yes,,,2026-03-01 10:00,2026-03-01 10:05,signed\n\
        F3,P3,MARKETING,no,,,2026-03-01 10:00,2026-03-01 10:05,signed\n\
        F4,P4,RESEARCH,perhaps,,,2026-03-01 10:00,2026-03-01 10:05,signed\n\
        F5,P5,RESEARCH,OPT-OUT,2026-01-01,,2026-03-02 08:00,2026-03-02 08:01,withdrawn\n";
    let ctx = Context::new(utc(2030, 1, 1));
    let p = mapping::parse(
        &m,
        &[Input {
            name: "consents.csv",
            bytes: csv.as_bytes(),
        }],
        &ctx,
    );
    let rows = &p.tables.consent;
    assert_eq!(rows.len(), 3, "{:?}", p.bad);
    let f1 = &rows[0];
    assert_eq!(
        (
            f1.consent_id.as_str(),
            f1.patient_id.as_str(),
            f1.scope.as_str(),
            f1.decision.as_str()
        ),
        ("F1", "P1", consent::RESEARCH, consent::DENY)
    );
    let at = |s: &str| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc()
    };
    assert_eq!(f1.meta.known_at, at("2026-03-01 09:15"));
    assert_eq!(f1.decided_at, Some(at("2026-03-01 09:12")));
    assert_eq!(f1.meta.retracted_at, None);
    assert_eq!(
        (rows[1].scope.as_str(), rows[1].decision.as_str()),
        (consent::TREATMENT, consent::PERMIT)
    );
    let f5 = &rows[2];
    assert_eq!(f5.meta.retracted_at, Some(at("2026-03-02 08:01")));
    assert_eq!(f5.period_start, Some(utc(2026, 1, 1)));
    let bad: Vec<(u64, String, String)> = p
        .bad
        .iter()
        .map(|b| {
            (
                b.location.record,
                b.field.clone().unwrap_or_default(),
                b.reason.clone(),
            )
        })
        .collect();
    assert_eq!(
        bad,
        vec![
            (4, "scope".into(), "bad_value".into()),
            (5, "decision".into(), "bad_value".into()),
        ]
    );
    assert!(p.bad.iter().all(|b| b.table == Some(Table::Consent)));
    let b = p.tables.to_batch(Table::Consent).unwrap();
    let state = consent::research_at(&[b], utc(2026, 4, 1)).unwrap();
    assert_eq!(state.opted_out, set(&["P1"]));
}

fn crate_path(rel: &str) -> PathBuf {
    crate::common::crate_dir().join(rel)
}

// ---------------------------------------------------------------------------------------
// Exports
// ---------------------------------------------------------------------------------------

/// A store holding a small cohort (without a consent table) and the readmission sets
/// materialized; the clock and the three patients the entity rows name.
async fn setup(dir: &Path) -> (Store, Arc<ManualClock>, [String; 3]) {
    let clock = Arc::new(ManualClock::new(utc(2026, 1, 10)));
    let shared: SharedClock = clock.clone();
    let store = Store::open(dir.join("store"), shared).unwrap();
    let mut tables = generate_cohort(&SynthOptions {
        patients: 40,
        seed: 3,
        ..SynthOptions::default()
    });
    tables.sort_canonical();
    put_tables(&store, &tables).await;
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    for set in ["readmission", "readmission_online"] {
        features::materialize(&store, &repo, set, &MaterializeOptions::default())
            .await
            .unwrap();
    }
    let p = |i: usize| tables.patients[i].patient_id.clone();
    (store, clock, [p(0), p(1), p(2)])
}

/// Every table but `consent` as a curated version.
async fn put_tables(store: &Store, tables: &CuratedTables) {
    for t in Table::ALL.into_iter().filter(|t| *t != Table::Consent) {
        let b = tables.to_batch(t).unwrap();
        store
            .put_batches(
                b.schema(),
                vec![b],
                PutOptions::new(t.name(), Kind::Curated),
            )
            .await
            .unwrap();
    }
}

/// Two entity rows per patient.
fn entities(patients: &[String; 3]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let ids: Vec<&str> = patients
        .iter()
        .flat_map(|p| [p.as_str(), p.as_str()])
        .collect();
    let times: Vec<i64> = (0..6)
        .map(|i| utc(2020 + i % 2, 6, 1).timestamp_micros())
        .collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
        ],
    )
    .unwrap()
}

/// Ingests Consent resources (NDJSON) through the pipeline, as `ward ingest` does; returns
/// the new `consent` version.
async fn ingest_consents(store: &Store, dir: &Path, name: &str, lines: &[String]) -> ContentHash {
    let path = dir.join(format!("{name}.ndjson"));
    std::fs::write(&path, lines.join("\n")).unwrap();
    let opts = IngestOptions {
        format: Format::FhirNdjson,
        mapping: None,
        mapping_text: None,
        max_bad: None,
        context: Context::new(store.clock().now()),
        read: Default::default(),
    };
    let report = pipeline::ingest(store, &[path], &opts, None).await.unwrap();
    assert_eq!(report.bad_total(), 0, "{report:?}");
    report
        .curated
        .iter()
        .find(|c| c.table == "consent")
        .map(|c| c.hash)
        .unwrap()
}

/// A training set of the readmission set over `rows`: its outcome, its patients (as stored)
/// and the consent this request applied. A new version's lineage records that consent; a
/// request whose rows equal an earlier training set's is that version (content addressed),
/// whose lineage is the first request's.
async fn export(
    store: &Store,
    rows: &RecordBatch,
) -> (lookup::HistoricalOutcome, Vec<String>, ConsentApplied) {
    let out = lookup::historical(
        store,
        HistoricalRequest::new("readmission", Entities::Batches(vec![rows.clone()])),
    )
    .await
    .unwrap();
    let (_, batches) = store.read(&out.hash).await.unwrap();
    let mut ids = Vec::new();
    for b in &batches {
        let col = b.column_by_name("patient_id").unwrap().as_string::<i32>();
        ids.extend(col.iter().map(|v| v.unwrap().to_string()));
    }
    let applied = out.consent.clone().expect("a new export applies consent");
    if out.created {
        assert_eq!(lineage_consent(store, &out.hash), applied);
    }
    assert_eq!(out.rows, ids.len());
    (out, ids, applied)
}

/// The consent a training set's lineage records.
fn lineage_consent(store: &Store, hash: &ContentHash) -> ConsentApplied {
    let m = store.manifest(hash).unwrap();
    serde_json::from_value(m.lineage.params["consent"].clone()).unwrap()
}

#[tokio::test]
async fn research_exports_leave_out_opt_outs_as_known_at_export_time() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, [a, b, c]) = setup(dir.path()).await;
    let rows = entities(&[a.clone(), b.clone(), c.clone()]);
    let online = Online::new(store.clone());
    let ask = |p: &String| {
        let online = &online;
        let p = p.clone();
        async move {
            let ans = online
                .get("readmission_online", &[p], &[], Some(utc(2021, 6, 1)))
                .await
                .unwrap();
            format!("{:?}", ans.patients)
        }
    };
    let online_before = ask(&a).await;

    // No consent table at all: nothing left out, and the lineage says so.
    let (first, ids, applied) = export(&store, &rows).await;
    assert!(first.created);
    assert_eq!(ids.len(), 6);
    assert_eq!(applied.version, NO_CONSENT);
    assert_eq!((applied.excluded_rows, applied.excluded_patients), (0, 0));
    assert_eq!(applied.at, utc(2026, 1, 10));

    // a opts out of research (known 2026-02-01, after the clock's now); c refuses something
    // else (treatment): neither changes an export made now.
    let v1 = ingest_consents(
        &store,
        dir.path(),
        "first",
        &[
            consent_json(
                "oa",
                &a,
                "research",
                "deny",
                "active",
                "2026-02-01T00:00:00Z",
            ),
            consent_json(
                "oc",
                &c,
                "treatment",
                "deny",
                "active",
                "2026-01-05T00:00:00Z",
            ),
        ],
    )
    .await;
    let (early, ids, applied) = export(&store, &rows).await;
    assert_eq!(
        ids.len(),
        6,
        "an opt-out known after the export time does not apply"
    );
    assert_eq!(applied.version, v1.to_string());
    assert_eq!(applied.excluded_rows, 0);
    // The same rows as the first export: the same version, whose lineage is the first's.
    assert_eq!(early.hash, first.hash);
    assert!(!early.created);
    assert_eq!(lineage_consent(&store, &early.hash).version, NO_CONSENT);

    // Once the opt-out is known, a new export leaves a out (both rows), and says so.
    clock.set(utc(2026, 2, 15));
    let (later, ids, applied) = export(&store, &rows).await;
    assert_eq!(ids.len(), 4);
    assert!(!ids.contains(&a), "{ids:?}");
    assert!(
        ids.contains(&c),
        "a treatment refusal is not a research opt-out"
    );
    assert_eq!((applied.excluded_rows, applied.excluded_patients), (2, 1));
    assert_eq!(applied.version, v1.to_string());
    assert_eq!(applied.at, utc(2026, 2, 15));
    assert!(later.created);
    assert_eq!(lineage_consent(&store, &later.hash), applied);
    assert_ne!(later.hash, early.hash);
    // The earlier export is unchanged: rebuilt now, it reads the same consent version at
    // its own time and comes out the same.
    assert_eq!(
        lookup::rebuild(&store, &early.hash).await.unwrap(),
        early.hash
    );
    assert_eq!(
        lookup::rebuild(&store, &later.hash).await.unwrap(),
        later.hash
    );

    // Online lookups (treatment) are not affected.
    assert_eq!(ask(&a).await, online_before);

    // b opts out and the record is then marked entered-in-error; a withdraws the opt-out
    // (a later permit, a new Consent).
    ingest_consents(
        &store,
        dir.path(),
        "second",
        &[
            consent_json(
                "ob",
                &b,
                "research",
                "deny",
                "active",
                "2026-02-20T00:00:00Z",
            ),
            consent_json(
                "pa",
                &a,
                "research",
                "permit",
                "active",
                "2026-03-01T00:00:00Z",
            ),
        ],
    )
    .await;
    clock.set(utc(2026, 2, 25));
    let (_, ids, applied) = export(&store, &rows).await;
    assert_eq!(ids.len(), 2, "a and b are out: {ids:?}");
    assert_eq!((applied.excluded_rows, applied.excluded_patients), (4, 2));
    let v3 = ingest_consents(
        &store,
        dir.path(),
        "third",
        &[consent_json(
            "ob",
            &b,
            "research",
            "deny",
            "entered-in-error",
            "2026-03-02T00:00:00Z",
        )],
    )
    .await;
    clock.set(utc(2026, 3, 10));
    let (_, ids, applied) = export(&store, &rows).await;
    assert_eq!(
        ids.len(),
        6,
        "the withdrawal re-includes a, the error b: {ids:?}"
    );
    assert_eq!(applied.version, v3.to_string());
    assert_eq!(applied.excluded_rows, 0);
    assert_eq!(
        store
            .resolve(&VersionRef::Latest("consent".into()))
            .unwrap()
            .hash,
        v3
    );
}

/// The de-identified export (what a research role receives over gRPC is made from the
/// identified training set) leaves the opted-out patient out too: no token of theirs.
#[tokio::test]
async fn deidentified_export_leaves_out_opt_outs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, [a, b, c]) = setup(dir.path()).await;
    ingest_consents(
        &store,
        dir.path(),
        "c",
        &[consent_json(
            "o",
            &b,
            "research",
            "deny",
            "active",
            "2026-01-01T00:00:00Z",
        )],
    )
    .await;
    clock.set(utc(2026, 1, 11));
    let (out, ids, _) = export(&store, &entities(&[a.clone(), b.clone(), c.clone()])).await;
    assert_eq!(ids.len(), 4);
    let key = ward::security::deid::DeidKey::from_secret(&[9u8; 32]).unwrap();
    let policy = ward::security::deid::DeidPolicy::safe_harbor();
    let put = ward::security::deid::store_deidentified(&store, &out.hash, &policy, &key, "deid")
        .await
        .unwrap();
    let (_, batches) = store.read(&put.manifest.hash).await.unwrap();
    let tokens: BTreeSet<String> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("patient_id")
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!tokens.contains(&key.patient_token(&b)));
    assert!(tokens.contains(&key.patient_token(&a)));
    assert_eq!(tokens.len(), 2);
}

/// Ward's curated layout (`consent.csv`, `mappings/curated.toml`) reads the table's own
/// columns, and `historical_direct` (a training set straight from curated versions) applies
/// the opt-outs as the timeline path does.
#[tokio::test]
async fn curated_layout_consent_and_direct_exports() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, [a, b, c]) = setup(dir.path()).await;
    let file = dir.path().join("consent.csv");
    std::fs::write(
        &file,
        format!(
            "consent_id,patient_id,scope,decision,period_start,period_end,decided_at,known_at\n\
             x1,{a},research,deny,,,2026-01-01T00:00:00Z,2026-01-02T00:00:00Z\n\
             x2,{b},research,permit,,,2026-01-01T00:00:00Z,2026-01-02T00:00:00Z\n\
             x3,{c},research,undecided,,,,2026-01-02T00:00:00Z\n"
        ),
    )
    .unwrap();
    let opts = IngestOptions {
        format: Format::Csv,
        mapping: None,
        mapping_text: None,
        max_bad: None,
        context: Context::new(store.clock().now()),
        read: Default::default(),
    };
    let report = pipeline::ingest(&store, &[file], &opts, None)
        .await
        .unwrap();
    assert_eq!(report.bad.get("consent/bad_value"), Some(&1), "{report:?}");
    clock.set(utc(2026, 1, 11));
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let out = lookup::historical_direct(
        &store,
        &repo,
        HistoricalRequest::new(
            "readmission",
            Entities::Batches(vec![entities(&[a.clone(), b.clone(), c.clone()])]),
        ),
    )
    .await
    .unwrap();
    assert_eq!(out.rows, 4);
    let applied = out.consent.clone().unwrap();
    assert_eq!((applied.excluded_rows, applied.excluded_patients), (2, 1));
    assert_eq!(lineage_consent(&store, &out.hash), applied);
    assert_eq!(lookup::rebuild(&store, &out.hash).await.unwrap(), out.hash);
}

/// Over gRPC: the historical answer's header says which consent version was applied and how
/// many rows and patients it left out, and the streamed rows hold none of theirs; an online
/// lookup of the same patient (care) is answered as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reports_the_consent_and_leaves_online_alone() {
    use crate::common::proto::{self, features_client::FeaturesClient};
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, [a, b, c]) = setup(dir.path()).await;
    let v = ingest_consents(
        &store,
        dir.path(),
        "c",
        &[consent_json(
            "o",
            &a,
            "research",
            "deny",
            "active",
            "2026-01-01T00:00:00Z",
        )],
    )
    .await;
    clock.set(utc(2026, 1, 11));
    let repo = FeatureRepo::parse(EXAMPLE, "readmission.toml").unwrap();
    let cfg = ward::service::ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..ward::service::ServeConfig::default()
    };
    let server = ward::service::Server::bind(&cfg, store.clone(), repo)
        .await
        .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FeaturesClient::new(channel);

    let rows = entities(&[a.clone(), b.clone(), c.clone()]);
    let mut ipc = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &rows.schema()).unwrap();
        w.write(&rows).unwrap();
        w.finish().unwrap();
    }
    let mut stream = client
        .get_historical_features(proto::HistoricalRequest {
            feature_set: "readmission".into(),
            entities: Some(proto::historical_request::Entities::EntitiesIpc(ipc)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(proto::historical_response::Part::Header(header)) = first.part else {
        panic!("no header first: {first:?}");
    };
    assert_eq!(header.consent, v.to_string());
    assert_eq!(
        (
            header.consent_excluded_rows,
            header.consent_excluded_patients
        ),
        (2, 1)
    );
    assert_eq!(header.rows, 4);
    let mut ids = BTreeSet::new();
    while let Some(m) = stream.message().await.unwrap() {
        let Some(proto::historical_response::Part::BatchIpc(bytes)) = m.part else {
            panic!("a second header");
        };
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = batch
                .column_by_name("patient_id")
                .unwrap()
                .as_string::<i32>();
            ids.extend(col.iter().map(|v| v.unwrap().to_string()));
        }
    }
    assert_eq!(ids, set(&[&b, &c]));

    let online = client
        .get_online_features(proto::OnlineRequest {
            feature_set: "readmission_online".into(),
            patient_ids: vec![a.clone()],
            as_of: "2021-06-01".into(),
            features: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(online.patients.len(), 1);
    assert_eq!(online.patients[0].patient_id, a);
    assert!(
        online.patients[0]
            .values
            .iter()
            .any(|v| v.status == proto::ValueStatus::Present as i32),
        "the opted-out patient is still answered for care: {online:?}"
    );
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}
