//! De-identification: property tests (no raw identifier leaves under either profile; Safe
//! Harbor leaves only years; the date-shifting profile moves every date by the patient's
//! offset, salted per export), the stored de-identified version's lineage, and the
//! re-identification attack over gRPC (module `attack`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, Utc};
use proptest::prelude::*;

use ward::clock::ManualClock;
use ward::hash::ContentHash;
use ward::security::deid::{deidentify, store_deidentified, DeidKey, DeidPolicy, Export, Profile};
use ward::store::{Kind, PutOptions, Store};

#[derive(Debug, Clone)]
struct Row {
    patient: String,
    given: String,
    family: String,
    phone: String,
    email: String,
    ssn: i64,
    note: String,
    admit: i64,
    birth: i32,
    age: i32,
    zip: String,
    value: f64,
}

fn row() -> impl Strategy<Value = Row> {
    (
        (
            "MRN-[0-9]{3,7}",
            "[A-Z][a-z]{2,9}",
            "[A-Z][a-z]{2,9}",
            "\\+1-[0-9]{3}-[0-9]{7}",
            "[a-z]{3,8}@[a-z]{3,8}\\.org",
            100_000_000i64..999_999_999,
            "[A-Z][a-z]{3,8} (fell|called|visited) [a-z]{4,9}",
        ),
        (
            // 1970..2100 in microseconds
            0i64..4_102_444_800_000_000,
            -20_000i32..20_000,
            0i32..120,
            "[0-9]{5}",
            -1e6f64..1e6,
        ),
    )
        .prop_map(
            |(
                (patient, given, family, phone, email, ssn, note),
                (admit, birth, age, zip, value),
            )| {
                Row {
                    patient,
                    given,
                    family,
                    phone,
                    email,
                    ssn,
                    note,
                    admit,
                    birth,
                    age,
                    zip,
                    value,
                }
            },
        )
}

/// Rows whose patients repeat (a training set has several rows a patient).
fn rows() -> impl Strategy<Value = Vec<Row>> {
    (
        proptest::collection::vec(row(), 1..40),
        proptest::collection::vec(0usize..1000, 1..80),
    )
        .prop_map(|(base, picks)| {
            picks
                .iter()
                .map(|i| {
                    let mut r = base[i % base.len()].clone();
                    // Same patient, other times and values.
                    r.admit =
                        r.admit.wrapping_add((*i as i64) * 3_600_000_000) % 4_102_444_800_000_000;
                    r.value += *i as f64;
                    r
                })
                .collect()
        })
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("given_name", DataType::Utf8, true),
        Field::new("family_name", DataType::Utf8, true),
        Field::new("phone", DataType::Utf8, true),
        Field::new("contact", DataType::Utf8, true),
        Field::new("ssn", DataType::Int64, true),
        Field::new("note", DataType::Utf8, true),
        Field::new(
            "admit_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("birth_date", DataType::Date32, true),
        Field::new("age", DataType::Int32, true),
        Field::new("zip", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
    ]))
}

fn batch(rows: &[Row]) -> RecordBatch {
    let col = |f: &dyn Fn(&Row) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    RecordBatch::try_new(
        schema(),
        vec![
            col(&|r| r.patient.clone()),
            col(&|r| r.given.clone()),
            col(&|r| r.family.clone()),
            col(&|r| r.phone.clone()),
            col(&|r| r.email.clone()),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.ssn).collect::<Vec<_>>(),
            )),
            col(&|r| r.note.clone()),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.admit).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(Date32Array::from(
                rows.iter().map(|r| r.birth).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                rows.iter().map(|r| r.age).collect::<Vec<_>>(),
            )),
            col(&|r| r.zip.clone()),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.value).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

fn key(seed: u8) -> DeidKey {
    DeidKey::from_secret(&[seed; 48]).unwrap()
}

fn export(seed: u8) -> Export {
    Export {
        identified: ContentHash([seed; 32]),
        at: "2026-06-01T00:00:00Z".parse().unwrap(),
    }
}

/// Every cell of every batch, as text (numbers included).
fn cells(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for c in b.columns() {
            let s = arrow::compute::cast(c, &DataType::Utf8).unwrap();
            out.extend(s.as_string::<i32>().iter().flatten().map(str::to_string));
        }
    }
    out
}

/// The position in `out` of each input row, matched by `value` (unique per row here).
fn positions(rows: &[Row], out: &RecordBatch) -> Vec<usize> {
    let v = out
        .column_by_name("value")
        .unwrap()
        .as_primitive::<arrow::datatypes::Float64Type>();
    let at: HashMap<u64, usize> = (0..v.len()).map(|i| (v.value(i).to_bits(), i)).collect();
    rows.iter().map(|r| at[&r.value.to_bits()]).collect()
}

fn unique_values(rows: &mut [Row]) {
    for (i, r) in rows.iter_mut().enumerate() {
        r.value = i as f64;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Under either profile, no raw identifier leaves: no patient id, name, phone, e-mail,
    /// SSN, free text or 5-digit ZIP in any cell, in whatever order the rows come.
    #[test]
    fn no_raw_identifier_leaves_under_any_profile(mut rows in rows(), split in 1usize..10) {
        unique_values(&mut rows);
        for policy in [DeidPolicy::safe_harbor(), DeidPolicy::limited_data_set()] {
            let chunks: Vec<RecordBatch> = rows.chunks(split).map(batch).collect();
            let out = deidentify(&chunks, &policy, &key(3), &export(1)).unwrap();
            prop_assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), rows.len());
            let text = cells(&out);
            for r in &rows {
                // Text identifiers: not inside any cell.
                for secret in [&r.patient, &r.given, &r.family, &r.phone, &r.email, &r.note] {
                    prop_assert!(
                        !text.iter().any(|c| c.contains(secret.as_str())),
                        "{:?}: {} leaked", policy.profile, secret
                    );
                }
                // Digits only (an SSN, a 5-digit ZIP): no cell is one (inside a token's
                // hex or a number's digits they may occur by chance).
                for secret in [r.ssn.to_string(), r.zip.clone()] {
                    prop_assert!(
                        !text.contains(&secret),
                        "{:?}: {} leaked", policy.profile, secret
                    );
                }
            }
            let names: Vec<String> =
                out[0].schema().fields().iter().map(|f| f.name().clone()).collect();
            prop_assert_eq!(names, vec!["patient_id", "admit_time", "birth_date", "age", "zip", "value"]);
            // The same rows in one batch: the same output (order is by token, not input).
            let whole = deidentify(&[batch(&rows)], &policy, &key(3), &export(1)).unwrap();
            prop_assert_eq!(&whole, &out);
        }
    }

    /// Safe Harbor: years only, ages 90+, ZIP3, stable tokens; the rows ordered by token.
    #[test]
    fn safe_harbor_leaves_years_and_stable_tokens(mut rows in rows()) {
        unique_values(&mut rows);
        let policy = DeidPolicy::safe_harbor();
        let k = key(3);
        let out = &deidentify(&[batch(&rows)], &policy, &k, &export(1)).unwrap()[0];
        let ids = out.column(0).as_string::<i32>();
        let admit = out.column(1).as_primitive::<Int32Type>();
        let birth = out.column(2).as_primitive::<Int32Type>();
        let age = out.column(3).as_primitive::<Int32Type>();
        let zip = out.column(4).as_string::<i32>();
        let tokens: Vec<&str> = ids.iter().flatten().collect();
        let mut sorted = tokens.clone();
        sorted.sort();
        prop_assert_eq!(&tokens, &sorted);
        for (r, i) in rows.iter().zip(positions(&rows, out)) {
            prop_assert_eq!(ids.value(i), k.patient_token(&r.patient));
            let admit_year = DateTime::<Utc>::from_timestamp_micros(r.admit).unwrap().format("%Y").to_string();
            prop_assert_eq!(admit.value(i).to_string(), admit_year);
            let by = chrono::NaiveDate::from_num_days_from_ce_opt(r.birth + 719_163).unwrap().format("%Y").to_string();
            let by: i32 = by.parse().unwrap();
            if 2026 - by >= 90 {
                prop_assert!(birth.is_null(i));
            } else {
                prop_assert_eq!(birth.value(i), by);
            }
            prop_assert_eq!(age.value(i), r.age.min(90));
            prop_assert!(r.zip.starts_with(zip.value(i)) || zip.value(i) == "000");
        }
        // Another export, the same key: the same tokens (joins work); another key: others.
        let again = &deidentify(&[batch(&rows)], &policy, &k, &export(2)).unwrap()[0];
        prop_assert_eq!(again.column(0), out.column(0));
        let other = &deidentify(&[batch(&rows)], &policy, &key(4), &export(1)).unwrap()[0];
        prop_assert!(other.column(0).as_string::<i32>().iter().all(|t| !tokens.contains(&t.unwrap())));
    }

    /// The date-shifting profile: every date moved by the patient's offset (intervals kept),
    /// the same patient the same token and offset within an export, other tokens in another.
    #[test]
    fn limited_data_set_shifts_every_date_and_salts_per_export(mut rows in rows()) {
        unique_values(&mut rows);
        let policy = DeidPolicy::limited_data_set();
        let k = key(3);
        let out = &deidentify(&[batch(&rows)], &policy, &k, &export(1)).unwrap()[0];
        let keys = k.export_keys(&policy, &export(1));
        let ids = out.column(0).as_string::<i32>();
        let admit = out.column(1).as_primitive::<TimestampMicrosecondType>();
        let birth = out.column(2).as_primitive::<arrow::datatypes::Date32Type>();
        for (r, i) in rows.iter().zip(positions(&rows, out)) {
            let shift = keys.shift_days(&r.patient, &policy);
            prop_assert!((-365..=-1).contains(&shift));
            prop_assert_eq!(ids.value(i), keys.patient_token(&r.patient));
            prop_assert_eq!(admit.value(i), r.admit + shift * 86_400_000_000);
            prop_assert_eq!(i64::from(birth.value(i)), i64::from(r.birth) + shift);
        }
        let other = &deidentify(&[batch(&rows)], &policy, &k, &export(2)).unwrap()[0];
        let theirs: Vec<&str> = other.column(0).as_string::<i32>().iter().flatten().collect();
        prop_assert!(ids.iter().flatten().all(|t| !theirs.contains(&t)), "tokens are per export");
    }
}

#[test]
fn restricted_zip_prefixes_become_000() {
    let policy = DeidPolicy::safe_harbor();
    for (zip, want) in [
        ("03601", "000"),
        ("89301", "000"),
        ("10201", "000"),
        ("10301", "103"),
        ("55601", "000"),
        ("82101", "000"),
        ("82201", "822"),
    ] {
        let rows = vec![Row {
            patient: "MRN-1".into(),
            given: "Ann".into(),
            family: "Lee".into(),
            phone: "+1-555-0000000".into(),
            email: "ann@lee.org".into(),
            ssn: 123_456_789,
            note: "Ann fell".into(),
            admit: 1_700_000_000_000_000,
            birth: 0,
            age: 30,
            zip: zip.into(),
            value: 1.0,
        }];
        let out = deidentify(&[batch(&rows)], &policy, &key(1), &export(1)).unwrap();
        let zips = out[0].column_by_name("zip").unwrap().as_string::<i32>();
        assert_eq!(zips.value(0), want, "{zip}");
    }
}

#[tokio::test]
async fn a_deidentified_set_is_its_own_version_with_lineage_but_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    ));
    let store = Store::open(dir.path(), clock).unwrap();
    let rows: Vec<Row> = (0..30)
        .map(|i| Row {
            patient: format!("MRN-{}", i % 7),
            given: "Ann".into(),
            family: "Lee".into(),
            phone: "+1-555-0000000".into(),
            email: "ann@lee.org".into(),
            ssn: 123_456_789,
            note: "Ann fell".into(),
            admit: 1_700_000_000_000_000 + i * 1_000_000,
            birth: 5000,
            age: 50 + i as i32,
            zip: "12345".into(),
            value: i as f64,
        })
        .collect();
    let identified = store
        .put_batches(
            schema(),
            vec![batch(&rows)],
            PutOptions::new("readmission-train", Kind::Training),
        )
        .await
        .unwrap()
        .manifest;
    let secret = [9u8; 32];
    let k = DeidKey::from_secret(&secret).unwrap();
    let policy = DeidPolicy::load(
        &crate::common::crate_dir().join("examples/security/deid-safe-harbor.toml"),
    )
    .unwrap();
    assert_eq!(
        policy,
        DeidPolicy::safe_harbor(),
        "the example file is the default policy"
    );
    let lds = DeidPolicy::load(
        &crate::common::crate_dir().join("examples/security/deid-limited-data-set.toml"),
    )
    .unwrap();
    assert_eq!(lds, DeidPolicy::limited_data_set());
    let out = store_deidentified(
        &store,
        &identified.hash,
        &policy,
        &k,
        "readmission-train-deid",
    )
    .await
    .unwrap();
    let m = &out.manifest;
    assert_eq!(m.kind, Kind::Training);
    assert_ne!(m.hash, identified.hash);
    assert_eq!(m.labels["deidentified"], "safe-harbor");
    assert_eq!(m.lineage.inputs, vec![identified.hash]);
    assert_eq!(m.lineage.definition, Some(policy.hash()));
    assert_eq!(m.lineage.params["op"], "deidentify");
    assert_eq!(m.lineage.params["profile"], "safe-harbor");
    assert_eq!(m.lineage.params["key_id"], k.key_id());
    let text = serde_json::to_string(m).unwrap();
    assert!(
        !text.contains(&hex::encode(secret)),
        "the key is not in the manifest"
    );
    assert!(!m.schema.iter().any(|c| c.name == "given_name"));
    // Deterministic: the same input, policy and key give the same version.
    let again = store_deidentified(
        &store,
        &identified.hash,
        &policy,
        &k,
        "readmission-train-deid",
    )
    .await
    .unwrap();
    assert_eq!(again.manifest.hash, m.hash);
    assert!(!again.created);
    // The stored rows carry no raw id.
    let (_, batches) = store.read(&m.hash).await.unwrap();
    assert!(!cells(&batches).iter().any(|c| c.contains("MRN-")));
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 30);
    // The date-shifting profile is labelled for what it is, never Safe Harbor.
    let out = store_deidentified(&store, &identified.hash, &lds, &k, "readmission-train-lds")
        .await
        .unwrap();
    assert_eq!(out.manifest.labels["deidentified"], "limited-data-set");
    assert_eq!(lds.profile, Profile::LimitedDataSet);
}

// ---------------------------------------------------------------------------------------
// The re-identification attack over gRPC (issue 30): a de-identified caller sends entity
// rows of patients it knows and reads back each one's token and date shift, which would undo
// every other export made with the same key.

mod attack {
    use std::collections::{BTreeMap, HashMap};
    use std::net::SocketAddr;
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use chrono::{DateTime, Duration, Utc};
    use tokio::sync::oneshot;
    use tonic::transport::Channel;
    use tonic::Code;

    use crate::common::proto::{self, features_client::FeaturesClient};
    use ward::clock::{Clock as _, ManualClock, SharedClock};
    use ward::demo::{DemoOptions, READMISSION_FEATURES};
    use ward::features::FeatureRepo;
    use ward::security::deid::DeidKey;
    use ward::service::secure::Secured;
    use ward::service::{ServeConfig, Server};
    use ward::store::{Kind, PutOptions, Store};

    pub(super) const DS_TOKEN: &str = "ds-token-0123456789-not-a-jwt";
    pub(super) const ST_TOKEN: &str = "st-token-0123456789-not-a-jwt";
    /// The server's de-identification key (hex in `deid.key`).
    pub(super) const KEY_HEX: &str =
        "abababababababababababababababababababababababababababababababab";

    pub(super) struct Server1 {
        _dir: tempfile::TempDir,
        pub(super) clock: Arc<ManualClock>,
        pub(super) store: Store,
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        served: Option<tokio::task::JoinHandle<ward::Result<()>>>,
    }

    impl Server1 {
        /// A demo store served with API tokens for a data scientist and a steward, and
        /// `[deid]` with `policy_toml` (the default, Safe Harbor, when `None`).
        pub(super) async fn start(policy_toml: Option<&str>) -> Server1 {
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap()));
            let store = Store::open(dir.path().join("store"), clock.clone()).unwrap();
            let opts = DemoOptions {
                patients: 30,
                seed: 11,
            };
            ward::demo::run(&store, &dir.path().join("work"), &opts, None)
                .await
                .unwrap();
            clock.advance(Duration::hours(1));
            let conf = dir.path().join("conf");
            std::fs::create_dir(&conf).unwrap();
            std::fs::copy(
                crate::common::crate_dir().join("examples/security/policy.toml"),
                conf.join("policy.toml"),
            )
            .unwrap();
            std::fs::write(conf.join("deid.key"), KEY_HEX).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(
                    conf.join("deid.key"),
                    std::fs::Permissions::from_mode(0o600),
                )
                .unwrap();
            }
            let policy_line = match policy_toml {
                Some(text) => {
                    std::fs::write(conf.join("deid-policy.toml"), text).unwrap();
                    "policy = \"deid-policy.toml\"\n"
                }
                None => "",
            };
            let hash = |t: &str| blake3::hash(t.as_bytes()).to_hex().to_string();
            std::fs::write(
                conf.join("serve.toml"),
                format!(
                    r#"
addr = "127.0.0.1:0"
[auth]
policy = "policy.toml"
[[auth.api_tokens]]
subject = "ds-1"
blake3 = "{}"
roles = ["data-scientist"]
[[auth.api_tokens]]
subject = "st-1"
blake3 = "{}"
roles = ["steward"]
[audit]
dir = "audit"
[deid]
key_file = "deid.key"
{policy_line}"#,
                    hash(DS_TOKEN),
                    hash(ST_TOKEN)
                ),
            )
            .unwrap();
            let cfg = ServeConfig::load(&conf.join("serve.toml")).unwrap();
            let shared: SharedClock = clock.clone();
            let secured = Secured::from_config(&cfg, store.root(), shared)
                .unwrap()
                .expect("[auth] is configured");
            let repo = FeatureRepo::parse(READMISSION_FEATURES, "readmission.toml").unwrap();
            let server = Server::bind(&cfg, store.clone(), repo)
                .await
                .unwrap()
                .with_security(secured)
                .await
                .unwrap();
            let addr = server.local_addr();
            let (tx, rx) = oneshot::channel::<()>();
            let served = tokio::spawn(server.serve(async move {
                let _ = rx.await;
            }));
            Server1 {
                _dir: dir,
                clock,
                store,
                addr,
                stop: Some(tx),
                served: Some(served),
            }
        }

        pub(super) async fn client(&self) -> FeaturesClient<Channel> {
            FeaturesClient::new(
                Channel::from_shared(format!("http://{}", self.addr))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            )
        }

        pub(super) async fn stop(&mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            if let Some(s) = self.served.take() {
                s.await.unwrap().unwrap();
            }
        }

        /// Stores entity rows as a version (as a steward would), with `labels`.
        pub(super) async fn put_cohort(
            &self,
            name: &str,
            rows: &[(String, DateTime<Utc>)],
            labels: &[(&str, &str)],
        ) -> String {
            let b = entity_batch(rows);
            let mut opts = PutOptions::new(name, Kind::Other);
            for (k, v) in labels {
                opts.labels.insert(k.to_string(), v.to_string());
            }
            self.store
                .put_batches(b.schema(), vec![b], opts)
                .await
                .unwrap()
                .manifest
                .hash
                .to_string()
        }
    }

    pub(super) fn entity_batch(rows: &[(String, DateTime<Utc>)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("patient_id", DataType::Utf8, false),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.clone()),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        rows.iter()
                            .map(|r| r.1.timestamp_micros())
                            .collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    fn ipc(batch: &RecordBatch) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema()).unwrap();
        w.write(batch).unwrap();
        w.finish().unwrap();
        drop(w);
        buf
    }

    pub(super) enum Given<'a> {
        Inline(&'a [(String, DateTime<Utc>)]),
        Stored(&'a str),
    }

    /// A historical lookup of `readmission`; the header and the rows.
    pub(super) async fn historical(
        c: &mut FeaturesClient<Channel>,
        token: &str,
        given: Given<'_>,
    ) -> Result<(proto::HistoricalHeader, RecordBatch), tonic::Status> {
        use proto::historical_request::Entities;
        let entities = match given {
            Given::Inline(rows) => Entities::EntitiesIpc(ipc(&entity_batch(rows))),
            Given::Stored(r) => Entities::EntitiesRef(r.to_string()),
        };
        let req = proto::HistoricalRequest {
            feature_set: "readmission".into(),
            entities: Some(entities),
            ..Default::default()
        };
        let mut r = tonic::Request::new(req);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let mut stream = c.get_historical_features(r).await?.into_inner();
        let first = stream.message().await?.expect("a header");
        let Some(proto::historical_response::Part::Header(header)) = first.part else {
            panic!("the first message is not the header");
        };
        let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&header.schema_ipc).unwrap();
        let mut batches = Vec::new();
        while let Some(m) = stream.message().await? {
            let Some(proto::historical_response::Part::BatchIpc(bytes)) = m.part else {
                panic!("a second header");
            };
            let reader =
                arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
                    .unwrap();
            for b in reader {
                batches.push(b.unwrap());
            }
        }
        let all = arrow::compute::concat_batches(&Arc::new(schema), &batches).unwrap();
        Ok((header, all))
    }

    pub(super) fn column_strings(b: &RecordBatch, name: &str) -> Vec<String> {
        let col = arrow::compute::cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
        let col = col.as_string::<i32>();
        (0..col.len()).map(|i| col.value(i).to_string()).collect()
    }

    /// What the attacker learns from an export of rows it chose: each known id's token and
    /// date shift (days), read off by position.
    pub(super) fn read_back(
        rows: &[(String, DateTime<Utc>)],
        out: &RecordBatch,
    ) -> BTreeMap<String, (String, Option<i64>)> {
        let tokens = column_strings(out, "patient_id");
        let ts = out.column_by_name("timestamp").unwrap();
        let mut learned = BTreeMap::new();
        for (i, (id, t)) in rows.iter().enumerate() {
            let shift = ts
                .as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>()
                .map(|a| (a.value(i) - t.timestamp_micros()) / 86_400_000_000);
            learned.insert(id.clone(), (tokens[i].clone(), shift));
        }
        learned
    }

    pub(super) fn known_rows(n: usize, at: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
        (1..=n)
            .map(|i| (format!("P{i:07}"), at - Duration::days(i as i64 * 7)))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deidentified_caller_cannot_read_back_tokens_of_patients_it_names() {
        let mut fx = Server1::start(None).await;
        let mut c = fx.client().await;
        let at = fx.clock.now();
        let known = known_rows(6, at);
        let key = DeidKey::from_secret(&hex::decode(KEY_HEX).unwrap()).unwrap();

        // 1. Identified entity rows inline: refused, whatever they hold.
        match historical(&mut c, DS_TOKEN, Given::Inline(&known)).await {
            Err(e) => {
                assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
                assert!(e.message().contains("approved"), "{}", e.message());
            }
            Ok((_, out)) => {
                let learned = read_back(&known, &out);
                let right = learned
                    .iter()
                    .filter(|(id, (tok, _))| *tok == key.patient_token(id))
                    .count();
                panic!(
                    "attack succeeded: inline rows re-identified {right} of {} tokens: {learned:?}",
                    known.len()
                );
            }
        }

        // 2. A stored version of the same rows that no steward approved: refused too.
        let unapproved = fx.put_cohort("my-cohort", &known, &[]).await;
        let e = historical(&mut c, DS_TOKEN, Given::Stored(&unapproved))
            .await
            .map(|(_, out)| read_back(&known, &out))
            .expect_err("attack succeeded: an unapproved stored cohort was accepted");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        // Nor can it name a stored version by name (the curated patients table).
        let e = historical(&mut c, DS_TOKEN, Given::Stored("patients"))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

        // 3. A cohort a steward approved: answered, but the rows come back ordered by token,
        //    not in the cohort's order, and with years instead of dates (Safe Harbor), so the
        //    position of a row says nothing about whose it is.
        //    (Rows other than the unapproved version's: a put of rows already stored
        //    deduplicates onto that version and does not add the label.)
        let cohort: Vec<(String, DateTime<Utc>)> = known
            .iter()
            .map(|(id, t)| (id.clone(), *t - Duration::hours(1)))
            .collect();
        let approved = fx
            .put_cohort("cohort-2026", &cohort, &[("approved-cohort", "st-1")])
            .await;
        let (h, out) = historical(&mut c, DS_TOKEN, Given::Stored(&approved))
            .await
            .unwrap();
        let m = fx.store.manifest(&h.training_set.parse().unwrap()).unwrap();
        assert_eq!(
            m.labels.get("deidentified").map(String::as_str),
            Some("safe-harbor")
        );
        let tokens = column_strings(&out, "patient_id");
        assert_eq!(tokens.len(), known.len());
        let mut sorted = tokens.clone();
        sorted.sort();
        assert_eq!(tokens, sorted, "rows are ordered by token");
        let truth: HashMap<String, String> = known
            .iter()
            .map(|(id, _)| (key.patient_token(id), id.clone()))
            .collect();
        assert!(
            tokens.iter().all(|t| truth.contains_key(t)),
            "joins still work: the tokens are the patients' stable tokens"
        );
        let by_position = known
            .iter()
            .zip(&tokens)
            .filter(|((id, _), tok)| truth[*tok] == *id)
            .count();
        assert!(
            by_position < known.len(),
            "the rows came back in the cohort's order: {by_position} of {} mapped",
            known.len()
        );
        let ts = out.column_by_name("timestamp").unwrap();
        assert_eq!(
            ts.data_type(),
            &DataType::Int32,
            "timestamps leave as years"
        );
        let years = ts.as_primitive::<arrow::datatypes::Int32Type>();
        assert!(years.iter().all(|y| y == Some(2026)), "{years:?}");

        // The steward (identified) still gets its rows in its own order.
        let (_, out) = historical(&mut c, ST_TOKEN, Given::Stored(&approved))
            .await
            .unwrap();
        let ids = column_strings(&out, "patient_id");
        assert_eq!(ids, known.iter().map(|r| r.0.clone()).collect::<Vec<_>>());
        fx.stop().await;
    }

    /// Under the date-shifting profile, two exports of cohorts sharing patients share no
    /// token: what the caller learns from one (even with real dates at hand) says nothing
    /// about the other. The dates are shifted, within the profile's range.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn date_shifted_exports_are_salted_per_export() {
        let mut fx = Server1::start(Some("profile = \"limited-data-set\"\n")).await;
        let mut c = fx.client().await;
        let at = fx.clock.now();
        let a = known_rows(4, at);
        let b: Vec<(String, DateTime<Utc>)> = known_rows(6, at)
            .into_iter()
            .map(|(id, t)| (id, t - Duration::days(1)))
            .collect();
        let ra = fx
            .put_cohort("cohort-a", &a, &[("approved-cohort", "st-1")])
            .await;
        let rb = fx
            .put_cohort("cohort-b", &b, &[("approved-cohort", "st-1")])
            .await;
        let (ha, out_a) = historical(&mut c, DS_TOKEN, Given::Stored(&ra))
            .await
            .unwrap();
        let (_, out_b) = historical(&mut c, DS_TOKEN, Given::Stored(&rb))
            .await
            .unwrap();
        let m = fx
            .store
            .manifest(&ha.training_set.parse().unwrap())
            .unwrap();
        assert_eq!(m.labels["deidentified"], "limited-data-set");
        let ta = column_strings(&out_a, "patient_id");
        let tb = column_strings(&out_b, "patient_id");
        assert_eq!((ta.len(), tb.len()), (4, 6));
        assert!(
            ta.iter().all(|t| !tb.contains(t)),
            "a token of one export appears in the other: {ta:?} {tb:?}"
        );
        let stable = DeidKey::from_secret(&hex::decode(KEY_HEX).unwrap()).unwrap();
        assert!(ta.iter().all(|t| *t != stable.patient_token("P0000001")));
        // Every timestamp moved back by 1..=365 days from one of the cohort's.
        let ts = out_a
            .column_by_name("timestamp")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        for v in ts.iter().flatten() {
            assert!(
                a.iter().any(|(_, t)| {
                    let d = (t.timestamp_micros() - v) / 86_400_000_000;
                    (1..=365).contains(&d)
                }),
                "{v}"
            );
        }
        fx.stop().await;
    }
}
