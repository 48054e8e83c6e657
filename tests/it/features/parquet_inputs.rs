//! Curated tables from Parquet files, and late source ids read for ties only.

use super::reference::hgb;
use super::row_filters::PART_ROWS;
use super::*;

// ---------------------------------------------------------------------------------------
// Curated tables from Parquet files
// ---------------------------------------------------------------------------------------

/// Writes every curated table of `tables` to `dir/<table>.parquet`, in row groups of
/// `group_rows` rows (so a table spans several).
fn write_curated_parquet(dir: &Path, tables: &CuratedTables, group_rows: usize) {
    for t in Table::ALL {
        let batch = tables.to_batch(t).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(group_rows))
            .build();
        let f = std::fs::File::create(dir.join(format!("{}.parquet", t.name()))).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}

/// Sets read from Parquet files (only the columns and rows they need, `source_id` of
/// feature-only tables left for ties) give the timeline the in-memory tables give: every
/// kind, row filters with a derived query, and the readmission set (scores), as known and as
/// occurred.
#[tokio::test]
async fn sets_from_parquet_files_give_the_in_memory_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let tables = cohort(200, 5);
    write_curated_parquet(dir.path(), &tables, 700);
    let inputs = Inputs::from_curated(&tables).unwrap();
    for (toml, name) in [
        (ALL_KINDS, "all"),
        (PART_ROWS, "part"),
        (EXAMPLE, "readmission"),
    ] {
        let repo = FeatureRepo::parse(toml, "set.toml").unwrap();
        let set = repo.set(name).unwrap();
        let files = features::read_parquet_inputs(dir.path(), set).unwrap();
        // Observations are read by features only: their source ids wait for a tie.
        if name != "readmission" {
            let obs = &files.tables[&Table::Observations];
            assert!(obs.len() > 1, "{name}: several row groups");
            assert!(obs.iter().all(|b| b.column_by_name("source_id").is_none()));
            assert!(files.late_source_ids.is_some());
        }
        // The derived query of "part" passes `source_id` through, and no feature reads its
        // `encounter_id`: neither is read.
        if name == "part" {
            for b in &files.tables[&Table::Encounters] {
                assert!(b.column_by_name("source_id").is_none());
                assert!(b.column_by_name("encounter_id").is_none());
                assert!(b.column_by_name("admit_time").is_some());
            }
        }
        for knowledge in [Knowledge::AsKnown, Knowledge::AsOccurred] {
            let opts = MaterializeOptions {
                knowledge,
                ..Default::default()
            };
            let want = compute(set, &inputs, &opts).await.unwrap();
            let got = compute(set, &files, &opts).await.unwrap();
            assert_eq!(
                table_hash(&got.batches),
                table_hash(&want.batches),
                "{name} {knowledge:?}"
            );
        }
    }
    let repo = FeatureRepo::parse(ALL_KINDS, "all.toml").unwrap();
    let err = features::read_parquet_inputs(&dir.path().join("missing"), repo.set("all").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing/") && err.contains(".parquet"),
        "{err}"
    );
}

/// Entity rows (`patient_id`, `ts`) for the direct lookup.
fn entity_rows(rows: &[(&str, i64)]) -> RecordBatch {
    use arrow::array::{StringArray, TimestampMicrosecondArray};
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("patient_id", DataType::Utf8, false),
        arrow::datatypes::Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let (ids, ts): (Vec<&str>, Vec<i64>) = rows.iter().copied().unzip();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        ],
    )
    .unwrap()
}

/// Counts the calls of a [`SourceIdReader`] it wraps.
struct Counting(Arc<dyn SourceIdReader>, std::sync::atomic::AtomicUsize);

impl Counting {
    fn reads(&self) -> usize {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `tables` written as curated Parquet files in `dir` (row groups of `group_rows`) and read
/// for `set`, their late source ids read through a [`Counting`] reader.
fn counted_files(
    dir: &Path,
    tables: &CuratedTables,
    group_rows: usize,
    set: &FeatureSet,
) -> (Inputs, Arc<Counting>) {
    write_curated_parquet(dir, tables, group_rows);
    let mut files = features::read_parquet_inputs(dir, set).unwrap();
    let counting = Arc::new(Counting(
        files.late_source_ids.clone().expect("a late reader"),
        Default::default(),
    ));
    files.late_source_ids = Some(counting.clone());
    (files, counting)
}

/// `set` materialized from `files` gives the timeline it gives from `eager`.
async fn assert_same_timeline(set: &FeatureSet, eager: &Inputs, files: &Inputs) {
    let opts = MaterializeOptions::default();
    let want = compute(set, eager, &opts).await.unwrap();
    let got = compute(set, files, &opts).await.unwrap();
    assert_eq!(table_hash(&got.batches), table_hash(&want.batches));
}

impl SourceIdReader for Counting {
    fn read(&self, table: Table) -> ward::error::Result<Vec<arrow::array::ArrayRef>> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.read(table)
    }
}

/// A derived query that passes `source_id` through runs on row numbers in its place when its
/// input comes without the column: the ids are looked up by those numbers only when the
/// derived table's events tie, and the result is the one with the column read up front. A
/// query that uses `source_id` otherwise gets the ids read before it runs.
#[tokio::test]
async fn derived_tables_pass_late_source_ids_through() {
    use ward::curated::RowMeta;
    let t0 = Utc.with_ymd_and_hms(2021, 3, 1, 8, 0, 0).unwrap();
    let d = Duration::days;
    let enc =
        |pid: &str, id: &str, class: &str, admit: DateTime<Utc>, dis: DateTime<Utc>| Encounter {
            encounter_id: format!("e-{id}"),
            patient_id: pid.into(),
            class: class.into(),
            admit_time: admit,
            discharge_time: Some(dis),
            admission_type: None,
            discharge_disposition: None,
            service: None,
            code: None,
            meta: RowMeta {
                source_system: "s".into(),
                source_id: id.into(),
                known_at: dis,
                retracted_at: None,
            },
        };
    let dis = t0 + d(10);
    // Patient p's stays tie on discharge time and `known_at`: "s2" (2 days) sorts after "s1"
    // (5 days) by source id, so its length is the last one; by value it would be s1's. The
    // file's order is not the derived table's (sorted by admission), so row numbers that
    // went to the wrong rows would swap the ids.
    let rows = vec![
        enc("a", "x1", "ambulatory", t0, t0),
        enc("p", "s2", "inpatient", dis - d(2), dis),
        enc("q", "x2", "emergency", t0, t0 + d(1)),
        enc("a", "x3", "ambulatory", t0, t0),
        enc("p", "s1", "inpatient", dis - d(5), dis),
        enc("q", "x4", "inpatient", t0 + d(3), t0 + d(4)),
    ];
    let set_toml = |condition: &str| {
        format!(
            r#"
[[derived]]
name = "stays"
time = "discharge_time"
sql = """
SELECT patient_id, encounter_id, admit_time, discharge_time,
       (discharge_time - admit_time) AS los, known_at, retracted_at, source_id
FROM encounters
WHERE class = 'inpatient' AND discharge_time IS NOT NULL{condition}
"""

[[feature_set]]
name = "s"
entity = "patient"

[[feature_set.features]]
name = "los_last"
kind = "last"
table = "stays"
column = "los"
ttl = "none"

[[feature_set.features]]
name = "visits"
kind = "count"
table = "encounters"
filter = {{ class = {{ in = ["inpatient", "emergency"] }} }}
window = "365d"
"#
        )
    };
    let through_repo = FeatureRepo::parse(&set_toml(""), "s.toml").unwrap();
    let through = through_repo.set("s").unwrap();
    let other_repo = FeatureRepo::parse(&set_toml(" AND source_id <> ''"), "o.toml").unwrap();
    let other = other_repo.set("s").unwrap();
    let opts = MaterializeOptions::default();
    let entities = entity_rows(&[("p", us(dis + d(1))), ("q", us(dis + d(1)))]);
    let los_of_p = |out: &[RecordBatch]| {
        out[0]
            .column_by_name("los_last")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0)
    };
    // The answer for p is s2's length: the one of a table with s2 only.
    let only_s2 = CuratedTables {
        encounters: vec![rows[1].clone()],
        ..Default::default()
    };
    let (_, s2_out) = features::historical_direct(
        through,
        Inputs::from_curated(&only_s2).unwrap(),
        std::slice::from_ref(&entities),
        "patient_id",
        "ts",
        &opts,
    )
    .await
    .unwrap();
    let s2_los = los_of_p(&s2_out);
    let without_s1: Vec<Encounter> = rows
        .iter()
        .filter(|e| e.meta.source_id != "s1")
        .cloned()
        .collect();
    for (rows, reads) in [(rows.clone(), 1), (without_s1, 0)] {
        let tables = CuratedTables {
            encounters: rows,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let (files, counting) = counted_files(dir.path(), &tables, 2, through);
        assert!(files.tables[&Table::Encounters]
            .iter()
            .all(|b| b.column_by_name("source_id").is_none()));
        let eager = Inputs::from_curated(&tables).unwrap();
        assert_same_timeline(through, &eager, &files).await;
        assert_eq!(counting.reads(), reads);
        let (_, out) = features::historical_direct(
            through,
            files.clone(),
            std::slice::from_ref(&entities),
            "patient_id",
            "ts",
            &opts,
        )
        .await
        .unwrap();
        assert_eq!(los_of_p(&out), s2_los);
        assert_eq!(counting.reads(), 2 * reads);
        // The same inputs for a query that compares `source_id`: read before it runs.
        assert_same_timeline(other, &eager, &files).await;
    }
}

/// A tie on event time and `known_at` is ordered by the source ids, read late from the file
/// only when a tie needs them: the same value as with the column read up front, through
/// materialization and the direct lookup. Without a tie they are never read; a reader that
/// gives the wrong number of rows is an error naming the table.
#[tokio::test]
async fn late_source_ids_are_read_for_ties_only() {
    let t0 = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    let obs = |pid: &str, id: &str, e: DateTime<Utc>, v: f64| hgb(pid, id, e, e, None, v);
    let toml = r#"
[[feature_set]]
name = "hgb"
entity = "patient"
[[feature_set.features]]
name = "hgb_last"
kind = "last"
table = "observations"
filter = { code = "718-7" }
column = "value_num"
ttl = "none"
"#;
    let repo = FeatureRepo::parse(toml, "hgb.toml").unwrap();
    let set = repo.set("hgb").unwrap();
    let h = Duration::hours;
    // Patient p: "b" and "a" tie; "b" sorts last, so its 10.0 is the value (ordering by
    // value instead, as without source ids, would give 11.0). Patient q: no tie.
    let tied = vec![
        obs("p", "b", t0, 10.0),
        obs("p", "a", t0, 11.0),
        obs("q", "c", t0, 7.0),
        obs("q", "d", t0 + h(1), 8.0),
    ];
    let entities = entity_rows(&[("p", us(t0 + h(2))), ("q", us(t0 + h(2)))]);
    let opts = MaterializeOptions::default();
    for (rows, reads, want_p) in [(tied.clone(), 1, 10.0), (tied[2..].to_vec(), 0, f64::NAN)] {
        let tables = CuratedTables {
            observations: rows,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let (files, counting) = counted_files(dir.path(), &tables, 1000, set);
        let eager = Inputs::from_curated(&tables).unwrap();
        assert_same_timeline(set, &eager, &files).await;
        assert_eq!(counting.reads(), reads);
        let (_, out) = features::historical_direct(
            set,
            files.clone(),
            std::slice::from_ref(&entities),
            "patient_id",
            "ts",
            &opts,
        )
        .await
        .unwrap();
        let hgb = out[0]
            .column_by_name("hgb_last")
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone();
        assert_eq!(hgb.value(1), 8.0);
        if want_p.is_nan() {
            assert!(hgb.is_null(0));
        } else {
            assert_eq!(hgb.value(0), want_p);
        }
        assert_eq!(counting.reads(), 2 * reads);
    }

    /// Gives one row too few.
    struct Short(Arc<dyn SourceIdReader>);
    impl SourceIdReader for Short {
        fn read(&self, table: Table) -> ward::error::Result<Vec<arrow::array::ArrayRef>> {
            let mut ids = self.0.read(table)?;
            let last = ids.pop().unwrap();
            ids.push(last.slice(0, last.len() - 1));
            Ok(ids)
        }
    }
    let tables = CuratedTables {
        observations: tied,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    write_curated_parquet(dir.path(), &tables, 1000);
    let mut files = features::read_parquet_inputs(dir.path(), set).unwrap();
    files.late_source_ids = Some(Arc::new(Short(files.late_source_ids.clone().unwrap())));
    let err = compute(set, &files, &opts).await.unwrap_err().to_string();
    assert!(
        err.contains("source_id of table observations") && err.contains("read 3 rows"),
        "{err}"
    );
}
