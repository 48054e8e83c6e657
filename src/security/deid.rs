//! De-identification of training sets under a named profile (`docs/security.md`,
//! "De-identification"), and the rule that keeps a de-identified caller from re-identifying.
//!
//! Two profiles, each named for what it is:
//! - [`Profile::SafeHarbor`] (`safe-harbor`, the default): HIPAA Safe Harbor as
//!   45 CFR 164.514(b)(2) reads. Every date element but the year is removed (date and
//!   timestamp columns become `Int32` years; a birth year that would show an age over 89 is
//!   removed too), ages over 89 become 90 ("90 or older"), ZIP codes are cut to 3 digits and
//!   to `000` where the 3-digit area holds 20,000 people or fewer ([`RESTRICTED_ZIP3`]), the
//!   18 identifiers are removed, and patient ids become keyed tokens, the same in every
//!   export by default so joins across exports work.
//! - [`Profile::LimitedDataSet`] (`limited-data-set`): dates shifted by a per-patient whole
//!   number of days (intervals within a patient kept). Safe Harbor does not allow dates, so
//!   this is at most a limited data set (45 CFR 164.514(e): released only under a data use
//!   agreement) or what an expert determination (164.514(b)(1)) covers; it is never called
//!   Safe Harbor. Tokens and shifts differ between exports unless the policy says `stable`.
//!
//! Columns leave only by rule: patient ids and other identifiers tokenized, ZIPs and ages
//! generalized, dates reduced or shifted, numbers and booleans kept unless their names are
//! identifiers', Ward's own status columns kept when they hold only statuses, and any other
//! text (or binary, list, struct) column only when the policy allows it by name
//! (`allow_columns`: an allow list, not a drop list).
//!
//! Rows leave ordered by patient token, never in the caller's order, so the position of a row
//! says nothing about whose it is; and a de-identified caller may only send entity rows a
//! steward approved ([`approved_entities`]), so it cannot name patients it knows and read back
//! their tokens or date shifts.
//!
//! Research opt-outs ([`apply_research_consent`]): every training set leaves out the rows of
//! patients whose research consent, as the `consent` table knows it at the export's time, is
//! a refusal, and records the `consent` version it read in its lineage (`docs/security.md`,
//! "Consent").
//!
//! The key comes from a file or an environment variable and never appears in logs, errors,
//! `Debug` output or lineage: [`store_deidentified`] records the identified version and the
//! policy's hash (with its canonical text), and only a one-way key id.

mod columns;
mod consent;
mod export;
mod identifiers;
mod keys;
mod policy;

pub use columns::{output_schema, Export};
pub use consent::{apply_research_consent, ConsentApplied, CONSENT_TABLE, NO_CONSENT};
pub use export::{approved_entities, deidentify, store_deidentified};
pub use identifiers::{
    looks_like_identifier, APPROVED_COHORT_LABEL, IDENTIFIER_COLUMNS, RESTRICTED_ZIP3,
    STATUS_VALUES, SUBSTATE_COLUMNS,
};
pub use keys::{DeidKey, ExportKeys};
pub use policy::{DeidPolicy, Profile};

#[cfg(test)]
mod tests {
    use super::columns::*;
    use super::export::*;
    use super::identifiers::*;
    use super::keys::*;
    use super::policy::*;
    use crate::hash::ContentHash;
    use arrow::array::*;
    use arrow::datatypes::*;
    use std::sync::Arc;

    fn key() -> DeidKey {
        DeidKey::from_secret(&[7u8; 32]).unwrap()
    }

    fn export(at: &str) -> Export {
        Export {
            identified: ContentHash([1u8; 32]),
            at: at.parse().unwrap(),
        }
    }

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("patient_id", DataType::Utf8, false),
            Field::new("given_name", DataType::Utf8, true),
            Field::new("zip", DataType::Utf8, true),
            Field::new("age", DataType::Int64, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("birth_date", DataType::Date32, true),
            Field::new("x", DataType::Float64, true),
            Field::new("x__status", DataType::Utf8, false),
            Field::new("sex", DataType::Utf8, true),
            Field::new("diagnosis_text", DataType::Utf8, true),
            Field::new("visit_number", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["P1", "P2", "P1"])),
                Arc::new(StringArray::from(vec![Some("Ann"), None, Some("Ann")])),
                Arc::new(StringArray::from(vec![
                    Some("03601"),
                    Some("12345-6789"),
                    Some("x1"),
                ])),
                Arc::new(Int64Array::from(vec![Some(95), Some(40), None])),
                Arc::new(
                    // 2001-09-09T01:46:40Z, the same, a day later
                    TimestampMicrosecondArray::from(vec![
                        Some(1_000_000_000_000_000),
                        Some(1_000_000_000_000_000),
                        Some(1_000_086_400_000_000),
                    ])
                    .with_timezone("UTC"),
                ),
                // 1997-05-19; 1930-01-01 (96 at the export); null
                Arc::new(Date32Array::from(vec![Some(10_000), Some(-14_610), None])),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
                Arc::new(StringArray::from(vec!["present", "no_data", "outside_ttl"])),
                Arc::new(StringArray::from(vec![Some("female"), Some("male"), None])),
                Arc::new(StringArray::from(vec![
                    Some("Ann Lee fell"),
                    None,
                    Some("x"),
                ])),
                Arc::new(Int64Array::from(vec![Some(17), Some(18), Some(19)])),
            ],
        )
        .unwrap()
    }

    fn names(b: &RecordBatch) -> Vec<String> {
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    #[test]
    fn safe_harbor_keeps_years_groups_ages_cuts_zips_and_allows_text_by_name() {
        let p = DeidPolicy::safe_harbor();
        let k = key();
        let out = deidentify(&[batch()], &p, &k, &export("2026-06-01T00:00:00Z")).unwrap();
        assert_eq!(out.len(), 1);
        let out = &out[0];
        // Free text, names and an identifier-like number are gone; the allowed text stays.
        assert_eq!(
            names(out),
            [
                "patient_id",
                "zip",
                "age",
                "t",
                "birth_date",
                "x",
                "x__status",
                "sex"
            ]
        );
        // Ordered by token: find each input row by its token.
        let ids = out.column(0).as_string::<i32>();
        let p1 = k.patient_token("P1");
        let p2 = k.patient_token("P2");
        let order: Vec<usize> = (0..3)
            .map(|i| {
                let t = ids.value(i);
                let x = out
                    .column(5)
                    .as_primitive::<arrow::datatypes::Float64Type>();
                assert!(t == p1 || t == p2);
                x.value(i) as usize - 1
            })
            .collect();
        let mut sorted: Vec<&str> = (0..3).map(|i| ids.value(i)).collect();
        sorted.sort();
        assert_eq!((0..3).map(|i| ids.value(i)).collect::<Vec<_>>(), sorted);
        // Row r of the input is output row pos[r].
        let pos = |r: usize| order.iter().position(|&o| o == r).unwrap();
        assert_eq!(ids.value(pos(0)), p1);
        assert_eq!(ids.value(pos(2)), p1);
        assert_eq!(ids.value(pos(1)), p2);
        assert!(pos(0) < pos(2), "a patient's rows keep their order");
        let zip = out.column(1).as_string::<i32>();
        assert_eq!(zip.value(pos(0)), "000");
        assert_eq!(zip.value(pos(1)), "123");
        assert!(zip.is_null(pos(2)));
        let age = out.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(age.value(pos(0)), 90);
        assert_eq!(age.value(pos(1)), 40);
        assert!(age.is_null(pos(2)));
        assert_eq!(out.column(3).data_type(), &DataType::Int32);
        let t = out.column(3).as_primitive::<Int32Type>();
        assert!((0..3).all(|i| t.value(i) == 2001));
        let bd = out.column(4).as_primitive::<Int32Type>();
        assert_eq!(bd.value(pos(0)), 1997);
        assert!(
            bd.is_null(pos(1)),
            "a birth year showing an age over 89 goes"
        );
        assert!(bd.is_null(pos(2)));
        let sex = out.column(7).as_string::<i32>();
        assert_eq!(sex.value(pos(0)), "female");
    }

    #[test]
    fn limited_data_set_shifts_dates_per_patient_and_salts_per_export() {
        let p = DeidPolicy::limited_data_set();
        assert!(!p.stable);
        let k = key();
        let e1 = export("2026-06-01T00:00:00Z");
        let out = &deidentify(&[batch()], &p, &k, &e1).unwrap()[0];
        let keys = k.export_keys(&p, &e1);
        let ids = out.column(0).as_string::<i32>();
        let p1 = keys.patient_token("P1");
        assert_ne!(p1, k.patient_token("P1"), "not the stable token");
        let rows: Vec<usize> = (0..3).filter(|&i| ids.value(i) == p1).collect();
        assert_eq!(rows.len(), 2);
        let t = out.column(3).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(t.value(rows[1]) - t.value(rows[0]), 86_400_000_000);
        let d1 = keys.shift_days("P1", &p);
        assert!((-365..=-1).contains(&d1));
        assert_eq!(
            t.value(rows[0]),
            1_000_000_000_000_000 + d1 * 86_400_000_000
        );
        assert_eq!(
            out.column(3).data_type(),
            batch().column(4).data_type(),
            "timestamps keep their type"
        );
        // Another export (another identified version): other tokens and shifts.
        let e2 = Export {
            identified: ContentHash([2u8; 32]),
            ..e1
        };
        let keys2 = k.export_keys(&p, &e2);
        assert_ne!(keys2.patient_token("P1"), p1);
        let shifts = |k: &ExportKeys| {
            (0..20)
                .map(|i| k.shift_days(&format!("P{i}"), &p))
                .collect::<Vec<_>>()
        };
        assert_ne!(shifts(&keys), shifts(&keys2));
        // Stable when the policy says so.
        let stable =
            DeidPolicy::from_toml("profile = \"limited-data-set\"\nstable = true\n", "p.toml")
                .unwrap();
        assert_eq!(
            k.export_keys(&stable, &e2).patient_token("P1"),
            k.patient_token("P1")
        );
    }

    #[test]
    fn the_same_rows_in_any_order_or_batching_give_the_same_output() {
        let p = DeidPolicy::safe_harbor();
        let e = export("2026-06-01T00:00:00Z");
        let b = batch();
        let whole = deidentify(std::slice::from_ref(&b), &p, &key(), &e).unwrap();
        let split = deidentify(&[b.slice(0, 1), b.slice(1, 2)], &p, &key(), &e).unwrap();
        assert_eq!(whole, split);
        // Patients listed the other way round: the same order out.
        let rev = arrow::compute::take_record_batch(&b, &UInt32Array::from(vec![1, 0, 2])).unwrap();
        let out = deidentify(&[rev], &p, &key(), &e).unwrap();
        assert_eq!(out[0].column(0), whole[0].column(0));
    }

    #[test]
    fn status_columns_holding_other_text_are_refused_with_their_place() {
        let b = batch();
        let mut cols = b.columns().to_vec();
        cols[7] = Arc::new(StringArray::from(vec!["present", "Ann Lee", "no_data"]));
        let b = RecordBatch::try_new(b.schema(), cols).unwrap();
        let e = deidentify(
            &[b],
            &DeidPolicy::safe_harbor(),
            &key(),
            &export("2026-01-01T00:00:00Z"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("batch 0 row 1") && e.contains("x__status"),
            "{e}"
        );
        assert!(!e.contains("Ann"), "{e}");
    }

    #[test]
    fn key_never_shows_and_needs_32_bytes() {
        let k = DeidKey::from_secret(b"0123456789abcdef0123456789abcdef-secret").unwrap();
        let dbg = format!("{k:?}");
        assert!(
            dbg.contains("<redacted>") && dbg.contains(k.key_id()),
            "{dbg}"
        );
        assert!(!dbg.contains("0123456789abcdef"), "{dbg}");
        let keys = k.export_keys(
            &DeidPolicy::limited_data_set(),
            &export("2026-01-01T00:00:00Z"),
        );
        assert_eq!(format!("{keys:?}"), "ExportKeys(<redacted>)");
        let e = DeidKey::from_secret(b"short").unwrap_err().to_string();
        assert!(!e.contains("short"), "{e}");
    }

    #[test]
    fn keys_from_files_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let hex_key = "ab".repeat(32);
        let f = dir.path().join("key.hex");
        std::fs::write(&f, format!("{hex_key}\n")).unwrap();
        let a = DeidKey::from_file(&f).unwrap();
        let b = DeidKey::from_secret(&[0xab; 32]).unwrap();
        assert_eq!(a.patient_token("p"), b.patient_token("p"));
        let raw = dir.path().join("key.bin");
        std::fs::write(&raw, [0xab; 32]).unwrap();
        assert_eq!(
            DeidKey::from_file(&raw).unwrap().patient_token("p"),
            b.patient_token("p")
        );
        let short = dir.path().join("short");
        std::fs::write(&short, "tiny-secret").unwrap();
        let e = DeidKey::from_file(&short).unwrap_err().to_string();
        assert!(e.contains("short") && !e.contains("tiny-secret"), "{e}");
        let var = "WARD_TEST_DEID_KEY_UNIT";
        std::env::set_var(var, &hex_key);
        assert_eq!(DeidKey::from_env(var).unwrap().key_id(), b.key_id());
        std::env::set_var(var, "not-hex");
        let e = DeidKey::from_env(var).unwrap_err().to_string();
        assert!(e.contains(var) && !e.contains("not-hex"), "{e}");
        std::env::remove_var(var);
        assert!(DeidKey::from_env(var).is_err());
        // Different purposes use different derived keys.
        assert_ne!(b.patient_token("x")[3..], b.identifier_token("x")[3..]);
    }

    #[test]
    fn policies_parse_by_profile_and_refuse_what_their_name_does_not_allow() {
        let a = DeidPolicy::from_toml("zip_columns = [\"ZIP\", \"zip\"]\n", "p.toml").unwrap();
        let b = DeidPolicy::from_toml("zip_columns = [\"zip\"]\n", "p.toml").unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.profile, Profile::SafeHarbor, "the default profile");
        assert_ne!(a.hash(), DeidPolicy::safe_harbor().hash());
        assert_eq!(
            DeidPolicy::from_toml("profile = \"limited-data-set\"\n", "p.toml").unwrap(),
            DeidPolicy::limited_data_set()
        );
        for (text, needle) in [
            // Date shifting is not Safe Harbor.
            (
                "shift_days_min = -30\nshift_days_max = -1\n",
                "limited-data-set",
            ),
            (
                "profile = \"safe-harbor\"\nshift_days_max = -1\n",
                "limited-data-set",
            ),
            // Names are profiles now.
            ("name = \"safe-harbor\"\n", "profile"),
            ("max_age = 95\n", "90"),
            ("allow_columns = [\"city\"]\n", "smaller than a state"),
            ("allow_columns = [\"mrn\"]\n", "identifiers"),
            ("restricted_zip3 = [\"036\"]\n", "\"059\" is missing"),
            (
                "profile = \"limited-data-set\"\nshift_days_min = -3\nshift_days_max = 2\n",
                "include 0",
            ),
            ("zip_columns = [\"age\"]\n", "age"),
            ("profile = \"expert\"\n", "profile"),
            ("colour = 1\n", "colour"),
        ] {
            let e = DeidPolicy::from_toml(text, "p.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains("p.toml") && e.contains(needle), "{text}: {e}");
        }
        // A limited data set may keep the city.
        let lds = DeidPolicy::from_toml(
            "profile = \"limited-data-set\"\nallow_columns = [\"city\"]\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(lds.allow_columns, ["city"]);
    }

    #[test]
    fn missing_patient_column_and_null_ids_are_named() {
        let b = batch().project(&[1, 2]).unwrap();
        let e = deidentify(
            &[b],
            &DeidPolicy::safe_harbor(),
            &key(),
            &export("2026-01-01T00:00:00Z"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("patient_id"), "{e}");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "patient_id",
            DataType::Utf8,
            true,
        )]));
        let b = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec![Some("a"), None]))],
        )
        .unwrap();
        let e = deidentify(
            &[b],
            &DeidPolicy::safe_harbor(),
            &key(),
            &export("2026-01-01T00:00:00Z"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("batch 0 row 1"), "{e}");
    }

    #[test]
    fn identifier_names_and_types_that_never_leave() {
        assert!(looks_like_identifier("visit_number"));
        assert!(looks_like_identifier("MRN"));
        assert!(looks_like_identifier("payer_id"));
        assert!(!looks_like_identifier("lace_total"));
        assert!(!looks_like_identifier("admissions_365d"));
        let p = DeidPolicy::safe_harbor();
        let f = |n: &str, dt: DataType| p.rule(&Field::new(n, dt, true)).unwrap();
        assert_eq!(f("photo_bytes", DataType::Binary), Rule::Drop);
        assert_eq!(f("ssn", DataType::Int64), Rule::Drop);
        assert_eq!(f("note", DataType::Utf8), Rule::Drop);
        assert_eq!(f("sex", DataType::Utf8), Rule::Keep);
        assert_eq!(
            f("admit_time", DataType::Time64(TimeUnit::Microsecond)),
            Rule::Drop
        );
        assert_eq!(f("lace_total", DataType::Float64), Rule::Keep);
        let lds = DeidPolicy::limited_data_set();
        assert_eq!(
            lds.rule(&Field::new("admit", DataType::Date32, true))
                .unwrap(),
            Rule::Shift
        );
        let allowed_list = DeidPolicy {
            allow_columns: vec!["codes".into()],
            ..DeidPolicy::safe_harbor()
        };
        let e = allowed_list
            .rule(&Field::new(
                "codes",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ))
            .unwrap_err()
            .to_string();
        assert!(e.contains("codes"), "{e}");
    }
}
