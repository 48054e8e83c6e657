//! Parquet inputs, and properties of CSV input (every record accounted for).

use super::*;

fn parquet_bytes(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
    out
}

#[test]
fn parquet_inputs_with_typed_times() {
    let t = utc("2020-01-01T08:00:00Z").timestamp_micros();
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "id",
            Arc::new(StringArray::from(vec![Some("1"), Some("2"), None])),
        ),
        ("p", Arc::new(Int64Array::from(vec![7, 8, 9]))),
        (
            "charttime",
            Arc::new(TimestampMicrosecondArray::from(vec![t, t, t]).with_timezone("UTC")),
        ),
        (
            "storetime",
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(t / 1000),
                None,
                None,
            ])),
        ),
        (
            "v",
            Arc::new(Float64Array::from(vec![Some(13.5), None, Some(1.0)])),
        ),
        ("d", Arc::new(Date32Array::from(vec![18262, 18262, 18262]))),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let toml = r#"
zone = "-05:00"
[[file]]
match = "*.parquet"
[[file.target]]
table = "observations"
[file.target.columns]
observation_id = "id"
patient_id = "p"
code_system = { value = "LOINC" }
code = { value = "718-7" }
value_num = "v"
effective_time = { column = "charttime", time = ["%d/%m/%Y"] }
known_at = "storetime"
[[file.target]]
table = "patients"
[file.target.columns]
patient_id = "p"
birth_date = "d"
"#;
    let m = Mapping::from_toml(toml, "t").unwrap();
    let bytes = parquet_bytes(&batch);
    let p = parse(
        &m,
        &[Input {
            name: "labs.parquet",
            bytes: &bytes,
        }],
        &ctx(),
    );
    let o = &p.tables.observations;
    assert_eq!(o.len(), 2, "{:#?}", p.bad);
    assert_eq!(o[0].patient_id, "7");
    assert_eq!(
        o[0].effective_time,
        utc("2020-01-01T08:00:00Z"),
        "typed: formats ignored"
    );
    // A timestamp without zone is a wall-clock time: the mapping's zone applies.
    assert_eq!(o[0].meta.known_at, utc("2020-01-01T13:00:00Z"));
    assert_eq!(o[0].value_num, Some(13.5));
    assert_eq!(o[0].meta.source_id, "labs.parquet:1");
    assert_eq!(o[1].meta.known_at, ctx().ingested_at);
    let b = only_bad(&p);
    assert_eq!(
        (b.location.record, b.field.as_deref(), b.reason.as_str()),
        (3, Some("id"), "missing_field")
    );
    assert_eq!(p.tables.patients.len(), 3);
    assert_eq!(
        p.tables.patients[0].birth_date,
        NaiveDate::from_ymd_opt(2020, 1, 1)
    );

    let garbage = parse(
        &m,
        &[Input {
            name: "x.parquet",
            bytes: b"PAR1garbage",
        }],
        &ctx(),
    );
    assert_eq!(garbage.bad.len(), 1);
    assert_eq!(garbage.bad[0].reason, "unparseable");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_bytes_never_panic_and_every_record_is_accounted(
        body in proptest::collection::vec(
            prop_oneof![
                Just(b','), Just(b'\n'), Just(b'"'), Just(b'\r'), Just(b'a'), Just(b'1'),
                Just(b'-'), Just(b':'), Just(0xFFu8), Just(0xE9u8), any::<u8>()
            ],
            0..400,
        ),
    ) {
        let m = Mapping::synthea();
        let mut bytes = b"Id,START,STOP,PATIENT,ORGANIZATION,PROVIDER,PAYER,ENCOUNTERCLASS,CODE,DESCRIPTION\n".to_vec();
        bytes.extend(&body);
        for name in ["encounters.csv", "patients.csv", "observations.csv", "x.parquet"] {
            let p = parse(&m, &[Input { name, bytes: &bytes }], &ctx());
            if name.ends_with(".csv") {
                assert_accounted(&p, name, &bytes);
            }
            let raw_only = parse(&m, &[Input { name, bytes: &body }], &ctx());
            prop_assert!(raw_only.bad.iter().all(|b| b.raw.len() <= 4096));
        }
    }
}
