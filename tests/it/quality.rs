//! Data-quality expectations (docs/quality.md) on the path users run: `ward ingest
//! --expect`, a feature set's `[[feature_set.expect]]` at `ward materialize`, the stored
//! report (`ward quality`), and the `prod` gate of `ward tag` with its audited override.

use std::path::Path;
use std::process::{Command, Output};

use chrono::TimeZone;

use ward::clock::ManualClock;
use ward::quality::{self, Check, Status};
use ward::store::{Kind, PutOptions, Store};

fn ward(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run ward")
}

fn ok(store: &Path, args: &[&str]) -> (String, String) {
    let out = ward(store, args);
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "ward {args:?}: {e}");
    (o, e)
}

fn refused(store: &Path, args: &[&str]) -> String {
    let out = ward(store, args);
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "ward {args:?} should fail: {e}");
    e
}

const REPO: &str = r#"
[[feature_set]]
name = "labs"

[[feature_set.features]]
name = "hemoglobin_last"
kind = "last"
table = "observations"
filter = { code = "718-7", code_system = "LOINC" }
column = "value_num"

[[feature_set.features]]
name = "admissions_365d"
kind = "count"
table = "encounters"
filter = { class = "inpatient" }
window = "365d"

[[feature_set.expect]]
feature = "hemoglobin_last"
min = 3
max = 25
null_rate_max = 0.5

[[feature_set.expect]]
name = "admissions are counted"
feature = "admissions_365d"
min = 0

[[feature_set]]
name = "strict"
extends = "labs"

[[feature_set.features]]
name = "sodium_last"
kind = "last"
table = "observations"
filter = { code = "2951-2", code_system = "LOINC" }
column = "value_num"

[[feature_set.expect]]
name = "no admission at all"
feature = "admissions_365d"
max = 0

[[feature_set.expect]]
name = "hemoglobin plausible"
feature = "hemoglobin_last"
max = 25
severity = "warn"
"#;

const EXPECT: &str = r#"
[[expect]]
table = "patients"
column = "patient_id"
unique = true

[[expect]]
name = "only inpatient classes"
table = "encounters"
column = "class"
allowed = ["inpatient"]
severity = "warn"

[[expect]]
table = "observations"
column = "value_num"
null_rate_max = 1.0
"#;

/// Ingest with expectations, materialize two sets (one whose expectations hold, one with a
/// failing `error` expectation), read the reports, and tag `prod`: refused for the failing
/// timeline until an override reason is given, which the audit trail records.
#[test]
fn expectations_are_evaluated_stored_and_guard_prod() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let data = dir.path().join("data");
    let (repo, expect) = (dir.path().join("repo.toml"), dir.path().join("expect.toml"));
    std::fs::write(&repo, REPO).unwrap();
    std::fs::write(&expect, EXPECT).unwrap();
    let (d, r, x) = (
        data.to_str().unwrap(),
        repo.to_str().unwrap(),
        expect.to_str().unwrap(),
    );
    ok(&store, &["synth", "--patients", "40", "--out", d]);
    let (_, err) = ok(&store, &["ingest", "--format", "parquet", "--expect", x, d]);
    assert!(err.contains("expectations of patients: pass"), "{err}");
    assert!(err.contains("expectations of encounters: warn"), "{err}");
    assert!(err.contains("warn only inpatient classes"), "{err}");

    // The reports are versions of their own, found from the version they check.
    let (out, _) = ok(&store, &["quality", "encounters"]);
    assert!(out.contains(": warn"), "{out}");
    assert!(out.contains("not allowed"), "{out}");
    let (json, _) = ok(&store, &["quality", "patients", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["outcomes"][0]["passed"], true, "{json}");
    let (list, _) = ok(&store, &["datasets", "--name", "encounters.quality"]);
    assert!(list.contains("encounters.quality"), "{list}");

    // A set whose expectations hold: prod without ceremony.
    let (_, err) = ok(&store, &["materialize", "--features", r, "--set", "labs"]);
    assert!(err.contains("expectations: pass"), "{err}");
    ok(&store, &["tag", "prod", "timeline-labs"]);

    // A failing `error` expectation: the timeline is kept, `quality` exits non-zero, and
    // `prod` is refused with the expectation named and where it was declared.
    let (strict, err) = ok(&store, &["materialize", "--features", r, "--set", "strict"]);
    let strict = strict.lines().last().unwrap().trim().to_string();
    assert!(err.contains("expectations: fail"), "{err}");
    assert!(err.contains("FAIL no admission at all"), "{err}");
    let e = refused(&store, &["quality", &strict]);
    assert!(e.contains("1 expectation(s) fail"), "{e}");
    let e = refused(&store, &["tag", "prod", &strict]);
    assert!(e.contains("no admission at all"), "{e}");
    assert!(e.contains("repo.toml:"), "{e}");
    assert!(e.contains("override"), "{e}");
    let (shown, _) = ok(&store, &["show", "prod", "--json"]);
    assert!(
        !shown.contains(&strict),
        "a refused tag must not move: {shown}"
    );
    // Other tags are not guarded.
    ok(&store, &["tag", "candidate", &strict]);

    ok(
        &store,
        &[
            "tag",
            "prod",
            &strict,
            "--override-reason",
            "steward reviewed: admissions expected in this cohort",
        ],
    );
    let (shown, _) = ok(&store, &["show", "prod", "--json"]);
    assert!(shown.contains(&strict), "{shown}");
    let records = crate::common::audit_records(&store.join("audit"));
    let over = records
        .iter()
        .find(|r| r["action"] == "tag_override")
        .unwrap_or_else(|| panic!("no override record in {records:?}"));
    let reason = over["reason"].as_str().unwrap();
    assert!(reason.contains("steward reviewed"), "{reason}");
    assert!(reason.contains("no admission at all"), "{reason}");
    assert_eq!(over["datasets"][0], strict.as_str());

    // The version's page in the web UI shows its report.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opened = Store::open_existing(&store, ward::clock::system()).unwrap();
    let running = rt
        .block_on(ward::live::serve_http(
            "127.0.0.1:0".parse().unwrap(),
            &opened,
            &ward::live::LiveConfig::default(),
            None,
            None,
            None,
        ))
        .unwrap();
    let page = crate::ui::get(running.addr, &format!("/ui/versions/{strict}"), &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Data quality"), "{}", page.body);
    assert!(page.body.contains("no admission at all"), "{}", page.body);
    assert!(page.body.contains("quality-fail"), "{}", page.body);
    let patients = opened.resolve(&"patients".parse().unwrap()).unwrap().hash;
    let raw = crate::ui::get(running.addr, &format!("/ui/versions/{patients}"), &[]);
    assert!(raw.body.contains("quality-pass"), "{}", raw.body);
}

/// A mistake in an expectation is found before any input is read, naming the file and line.
#[test]
fn a_bad_expectation_stops_ingest_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let expect = dir.path().join("expect.toml");
    std::fs::write(
        &expect,
        "[[expect]]\ntable = \"encounters\"\ncolumn = \"class\"\n\n[[expect]]\ntable = \"vitals\"\ncolumn = \"x\"\nmin = 1\n",
    )
    .unwrap();
    let e = refused(
        &store,
        &[
            "ingest",
            "--format",
            "parquet",
            "--expect",
            expect.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ],
    );
    assert!(e.contains("expect.toml:1"), "{e}");
    assert!(e.contains("no check"), "{e}");
    assert!(
        !store.join("versions").exists()
            || std::fs::read_dir(store.join("versions")).unwrap().count() == 0
    );
}

/// Each check on a hand-made table, through the store: values, nulls, repeats, freshness
/// against the injected clock, and the row count against the previous version.
#[tokio::test]
async fn each_check_counts_what_breaks_it() {
    use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let store = Store::open(dir.path(), Arc::new(ManualClock::new(now))).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("v", DataType::Float64, true),
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let day = 86_400_000_000i64;
    let t0 = now.timestamp_micros();
    let batch = |ids: Vec<Option<&str>>, v: Vec<Option<f64>>, ages: Vec<i64>| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(Float64Array::from(v)),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        ages.iter().map(|a| t0 - a * day).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    };
    let first = batch(
        vec![Some("a"), Some("b"), Some("c"), Some("d")],
        vec![Some(1.0), Some(2.0), None, Some(3.0)],
        vec![10, 9, 8, 7],
    );
    let put = |b: RecordBatch| {
        let store = &store;
        async move {
            store
                .put_batches(b.schema(), vec![b], PutOptions::new("lab", Kind::Other))
                .await
                .unwrap()
                .manifest
        }
    };
    let m1 = put(first).await;
    let second = batch(
        vec![
            Some("a"),
            Some("a"),
            Some("b"),
            None,
            Some("e"),
            Some("f"),
            Some("g"),
            Some("h"),
        ],
        vec![
            Some(1.0),
            Some(50.0),
            Some(-4.0),
            None,
            None,
            Some(2.0),
            Some(2.5),
            Some(2.0),
        ],
        vec![40, 30, 20, 12, 11, 10, 9, 8],
    );
    let m2 = put(second).await;
    let text = r#"
[[expect]]
table = "encounters"
column = "v"
min = 0
max = 10
null_rate_max = 0.2
[[expect]]
table = "encounters"
column = "id"
unique = true
[[expect]]
table = "encounters"
column = "v"
freshness = "7d"
time = "t"
[[expect]]
table = "encounters"
rows_change_max = 0.5
"#;
    let exps = quality::parse_file(text, "e.toml").unwrap();
    assert!(matches!(exps[0].check, Check::Range { .. }));
    let all: Vec<&quality::Expectation> = exps.iter().collect();
    let r = quality::evaluate(&store, &m2, &all, Some(&m1))
        .await
        .unwrap();
    let by = |i: usize| &r.outcomes[i];
    // range: 50 and -4 are outside; nulls do not count.
    assert!(!by(0).passed && by(0).failing_rows == 2, "{:?}", by(0));
    // null rate 2/8 = 0.25 > 0.2.
    assert!(!by(1).passed && by(1).failing_rows == 2, "{:?}", by(1));
    // "a" repeats once; the null id is not a value.
    assert!(!by(2).passed && by(2).failing_rows == 1, "{:?}", by(2));
    // newest time is 8 days old; 7 allowed.
    assert!(!by(3).passed, "{:?}", by(3));
    assert!(by(3).observed.contains("691200 s"), "{:?}", by(3));
    // 4 -> 8 rows is a change of 1.0 > 0.5.
    assert!(!by(4).passed, "{:?}", by(4));
    assert_eq!(r.status(), Status::Fail);

    // On the first version every check but freshness holds (nothing before it to compare).
    let r1 = quality::evaluate(&store, &m1, &all, None).await.unwrap();
    let passed: Vec<bool> = r1.outcomes.iter().map(|o| o.passed).collect();
    assert_eq!(passed, vec![true, false, true, true, true], "{r1:?}");

    // A column the version lacks is an error naming the expectation and its line.
    let bad = quality::parse_file(
        "[[expect]]\ntable = \"encounters\"\ncolumn = \"nope\"\nunique = true\n",
        "e.toml",
    )
    .unwrap();
    let e = quality::evaluate(&store, &m1, &bad.iter().collect::<Vec<_>>(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("e.toml:1") && e.contains("no column \"nope\""),
        "{e}"
    );
}
