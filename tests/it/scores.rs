//! Clinical scores over a generated cohort: every inpatient stay scores inside the published
//! ranges, sicker patients score higher, and the Charlson index agrees with a plain
//! recomputation written from Quan et al. 2005's table as code ranges (not prefixes).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Months, TimeZone, Utc};
use ward::curated::{code_system, encounter_class, Condition, CuratedTables, RowMeta};
use ward::scores::{stay_scores, PatientRows, ScoreComponent, StayScores, View};
use ward::synth::{generate_range, SynthOptions};

fn cohort() -> Vec<CuratedTables> {
    generate_range(
        &SynthOptions {
            patients: 500,
            ..Default::default()
        },
        0..500,
    )
}

fn rows(p: &CuratedTables) -> PatientRows<'_> {
    PatientRows {
        encounters: &p.encounters,
        conditions: &p.conditions,
        observations: &p.observations,
        procedures: &p.procedures,
    }
}

/// Every inpatient stay of a patient: (id, discharge time of its final version).
fn inpatient_stays(p: &CuratedTables) -> Vec<(String, DateTime<Utc>)> {
    let mut stays = BTreeMap::new();
    for e in &p.encounters {
        if e.class == encounter_class::INPATIENT && e.meta.retracted_at.is_none() {
            if let Some(d) = e.discharge_time {
                stays.insert(e.encounter_id.clone(), d);
            }
        }
    }
    stays.into_iter().collect()
}

fn far_future() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap()
}

/// The values each component may take (the published point tables).
fn allowed(c: ScoreComponent) -> &'static [i64] {
    use ScoreComponent::*;
    match c {
        LaceLengthOfStay => &[0, 1, 2, 3, 4, 5, 7],
        LaceAcuity => &[0, 3],
        LaceComorbidity => &[0, 1, 2, 3, 5],
        LaceEdVisits => &[0, 1, 2, 3, 4],
        HospitalHemoglobin | HospitalSodium | HospitalProcedure | HospitalIndexType => &[0, 1],
        HospitalOncology | HospitalLengthOfStay => &[0, 2],
        HospitalAdmissions => &[0, 2, 5],
        CharlsonIndex | LaceTotal | HospitalTotal => &[],
    }
}

fn check_ranges(s: &StayScores, seen: &mut BTreeMap<ScoreComponent, BTreeSet<i64>>) {
    use ScoreComponent::*;
    let id = &s.stay.encounter_id;
    for c in ScoreComponent::ALL {
        let v = s.value(c);
        assert!((0..=c.max_value()).contains(&v), "{id}: {} = {v}", c.name());
        let ok = allowed(c);
        assert!(ok.is_empty() || ok.contains(&v), "{id}: {} = {v}", c.name());
        seen.entry(c).or_default().insert(v);
    }
    let lace: i64 = [LaceLengthOfStay, LaceAcuity, LaceComorbidity, LaceEdVisits]
        .iter()
        .map(|c| s.value(*c))
        .sum();
    assert_eq!(lace, s.value(LaceTotal), "{id}");
    let hospital: i64 = [
        HospitalHemoglobin,
        HospitalOncology,
        HospitalSodium,
        HospitalProcedure,
        HospitalIndexType,
        HospitalAdmissions,
        HospitalLengthOfStay,
    ]
    .iter()
    .map(|c| s.value(*c))
    .sum();
    assert_eq!(hospital, s.value(HospitalTotal), "{id}");
    assert!((0..=19).contains(&s.value(LaceTotal)));
    assert!((0..=13).contains(&s.value(HospitalTotal)));
}

fn visible(meta: &RowMeta, event: DateTime<Utc>, t: DateTime<Utc>) -> bool {
    event <= t && meta.known_at <= t && meta.retracted_at.is_none_or(|r| r > t)
}

/// Distinct chronic diagnoses (not abated) the patient carries at the stay, as known at `t`.
fn chronic_conditions(p: &CuratedTables, discharge: DateTime<Utc>, t: DateTime<Utc>) -> usize {
    p.conditions
        .iter()
        .filter(|c| visible(&c.meta, c.onset_time, t))
        .filter(|c| c.onset_time <= discharge && c.abatement_time.is_none())
        .map(|c| c.code.code.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

#[test]
fn every_inpatient_stay_scores_within_the_published_ranges_and_sicker_patients_score_higher() {
    let patients = cohort();
    let mut seen = BTreeMap::new();
    let (mut stays, mut died) = (0, 0);
    // (chronic conditions, LACE total, HOSPITAL total) per stay.
    let mut by_burden: Vec<(usize, i64, i64)> = Vec::new();
    for p in &patients {
        for (id, discharge) in inpatient_stays(p) {
            for view in [
                View::AsKnownAt(discharge),
                View::AsKnownAt(far_future()),
                View::Final,
            ] {
                let s = stay_scores(rows(p), &id, view)
                    .unwrap_or_else(|e| panic!("{id} in {view:?}: {e}"));
                check_ranges(&s, &mut seen);
            }
            let s = stay_scores(rows(p), &id, View::AsKnownAt(far_future())).unwrap();
            stays += 1;
            died += usize::from(p.encounters.iter().any(|e| {
                e.encounter_id == id && e.discharge_disposition.as_deref() == Some("exp")
            }));
            by_burden.push((
                chronic_conditions(p, discharge, far_future()),
                s.value(ScoreComponent::LaceTotal),
                s.value(ScoreComponent::HospitalTotal),
            ));
        }
    }
    assert!(stays > 200, "only {stays} inpatient stays in 500 patients");
    assert!(
        died > 0,
        "no in-hospital death: the cohort is not exercising every path"
    );
    // Every component varies across the cohort (a constant would pass the range checks).
    for c in ScoreComponent::ALL {
        let values = &seen[&c];
        assert!(values.len() >= 2, "{} only took {values:?}", c.name());
    }
    assert!(seen[&ScoreComponent::LaceComorbidity].contains(&5));
    assert!(seen[&ScoreComponent::HospitalAdmissions].contains(&5));
    assert!(seen[&ScoreComponent::HospitalOncology].contains(&2));

    let mean = |keep: &dyn Fn(usize) -> bool, pick: &dyn Fn(&(usize, i64, i64)) -> i64| {
        let xs: Vec<i64> = by_burden.iter().filter(|b| keep(b.0)).map(pick).collect();
        assert!(xs.len() >= 30, "only {} stays in a burden group", xs.len());
        xs.iter().sum::<i64>() as f64 / xs.len() as f64
    };
    let healthy_lace = mean(&|n| n <= 1, &|b| b.1);
    let sick_lace = mean(&|n| n >= 4, &|b| b.1);
    let healthy_hospital = mean(&|n| n <= 1, &|b| b.2);
    let sick_hospital = mean(&|n| n >= 4, &|b| b.2);
    eprintln!(
        "mean LACE {healthy_lace:.2} (<= 1 chronic) vs {sick_lace:.2} (>= 4); \
         HOSPITAL {healthy_hospital:.2} vs {sick_hospital:.2}; {stays} stays"
    );
    assert!(
        sick_lace > healthy_lace + 2.0,
        "mean LACE {sick_lace:.2} (>= 4 chronic) vs {healthy_lace:.2} (<= 1)"
    );
    assert!(
        sick_hospital > healthy_hospital,
        "mean HOSPITAL {sick_hospital:.2} (>= 4 chronic) vs {healthy_hospital:.2} (<= 1)"
    );
}

/// A category of the reference table: name, weight, inclusive ranges of code heads.
type RefCategory = (&'static str, u8, Vec<(String, String)>);

/// Quan et al. 2005, Table 1, ICD-10 column, written as inclusive ranges of code heads (the
/// head is the code without its dot, cut to the length of the bound), plus the three
/// ICD-10-CM translations docs/scores.md lists (E08, E09 beside E13; I85.1 for I98.2).
fn reference_table() -> Vec<RefCategory> {
    fn r(spec: &[&str]) -> Vec<(String, String)> {
        spec.iter()
            .map(|s| match s.split_once('-') {
                Some((lo, hi)) => (lo.replace('.', ""), hi.replace('.', "")),
                None => (s.replace('.', ""), s.replace('.', "")),
            })
            .collect()
    }
    let diabetes = |fourth: &[&str]| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for family in ["E08", "E09", "E10", "E11", "E12", "E13", "E14"] {
            for f in fourth {
                out.push((format!("{family}{f}"), format!("{family}{f}")));
            }
        }
        out
    };
    vec![
        ("myocardial_infarction", 1, r(&["I21-I22", "I25.2"])),
        (
            "congestive_heart_failure",
            1,
            r(&[
                "I09.9",
                "I11.0",
                "I13.0",
                "I13.2",
                "I25.5",
                "I42.0",
                "I42.5-I42.9",
                "I43",
                "I50",
                "P29.0",
            ]),
        ),
        (
            "peripheral_vascular_disease",
            1,
            r(&[
                "I70-I71",
                "I73.1",
                "I73.8-I73.9",
                "I77.1",
                "I79.0",
                "I79.2",
                "K55.1",
                "K55.8-K55.9",
                "Z95.8-Z95.9",
            ]),
        ),
        (
            "cerebrovascular_disease",
            1,
            r(&["G45-G46", "H34.0", "I60-I69"]),
        ),
        ("dementia", 1, r(&["F00-F03", "F05.1", "G30", "G31.1"])),
        (
            "chronic_pulmonary_disease",
            1,
            r(&[
                "I27.8-I27.9",
                "J40-J47",
                "J60-J67",
                "J68.4",
                "J70.1",
                "J70.3",
            ]),
        ),
        (
            "rheumatic_disease",
            1,
            r(&["M05-M06", "M31.5", "M32-M34", "M35.1", "M35.3", "M36.0"]),
        ),
        ("peptic_ulcer_disease", 1, r(&["K25-K28"])),
        (
            "mild_liver_disease",
            1,
            r(&[
                "B18",
                "K70.0-K70.3",
                "K70.9",
                "K71.3-K71.5",
                "K71.7",
                "K73-K74",
                "K76.0",
                "K76.2-K76.4",
                "K76.8-K76.9",
                "Z94.4",
            ]),
        ),
        (
            "diabetes_without_complications",
            1,
            diabetes(&["0", "1", "6", "8", "9"]),
        ),
        (
            "diabetes_with_complications",
            2,
            diabetes(&["2", "3", "4", "5", "7"]),
        ),
        (
            "hemiplegia_paraplegia",
            2,
            r(&[
                "G04.1",
                "G11.4",
                "G80.1-G80.2",
                "G81-G82",
                "G83.0-G83.4",
                "G83.9",
            ]),
        ),
        (
            "renal_disease",
            2,
            r(&[
                "I12.0",
                "I13.1",
                "N03.2-N03.7",
                "N05.2-N05.7",
                "N18-N19",
                "N25.0",
                "Z49.0-Z49.2",
                "Z94.0",
                "Z99.2",
            ]),
        ),
        (
            "malignancy",
            2,
            r(&[
                "C00-C26", "C30-C34", "C37-C41", "C43", "C45-C58", "C60-C76", "C81-C85", "C88",
                "C90-C97",
            ]),
        ),
        (
            "severe_liver_disease",
            3,
            r(&[
                "I85.0",
                "I85.1",
                "I85.9",
                "I86.4",
                "I98.2",
                "K70.4",
                "K71.1",
                "K72.1",
                "K72.9",
                "K76.5-K76.7",
            ]),
        ),
        ("metastatic_solid_tumor", 6, r(&["C77-C80"])),
        ("aids_hiv", 6, r(&["B20-B22", "B24"])),
    ]
}

/// The categories (by name) and index of some ICD-10-CM codes, the plain way.
fn reference_charlson<'a>(
    table: &[RefCategory],
    codes: impl Iterator<Item = &'a str>,
) -> (BTreeSet<&'static str>, u8) {
    let mut present = BTreeSet::new();
    for code in codes {
        let code: String = code.replace('.', "").trim().to_uppercase();
        for (name, _, ranges) in table {
            for (lo, hi) in ranges {
                if code.len() >= lo.len() {
                    let head = &code[..lo.len()];
                    if head >= lo.as_str() && head <= hi.as_str() {
                        present.insert(*name);
                    }
                }
            }
        }
    }
    let mut counted = present.clone();
    for (lower, higher) in [
        ("mild_liver_disease", "severe_liver_disease"),
        (
            "diabetes_without_complications",
            "diabetes_with_complications",
        ),
        ("malignancy", "metastatic_solid_tumor"),
    ] {
        if counted.contains(higher) {
            counted.remove(lower);
        }
    }
    let index = table
        .iter()
        .filter(|(name, _, _)| counted.contains(name))
        .map(|(_, w, _)| w)
        .sum();
    (present, index)
}

fn conditions_for(
    p: &CuratedTables,
    discharge: DateTime<Utc>,
    t: DateTime<Utc>,
) -> impl Iterator<Item = &Condition> {
    p.conditions.iter().filter(move |c| {
        visible(&c.meta, c.onset_time, t)
            && c.onset_time <= discharge
            && c.code.system == code_system::ICD10CM
    })
}

#[test]
fn charlson_agrees_with_a_plain_recomputation_at_discharge_and_once_coded() {
    let table = reference_table();
    let patients = cohort();
    let (mut compared, mut nonzero, mut grew) = (0, 0, 0);
    let mut categories_seen = BTreeSet::new();
    for (i, p) in patients.iter().enumerate() {
        for (j, (id, discharge)) in inpatient_stays(p).into_iter().enumerate() {
            if (i + j) % 3 != 0 {
                continue;
            }
            let mut indexes = Vec::new();
            for t in [discharge, far_future()] {
                let s = stay_scores(rows(p), &id, View::AsKnownAt(t)).unwrap();
                let (present, index) = reference_charlson(
                    &table,
                    conditions_for(p, discharge, t).map(|c| c.code.code.as_str()),
                );
                let ours: BTreeSet<&str> = s.charlson.present().map(|c| c.name()).collect();
                assert_eq!(ours, present, "{id} at {t}");
                assert_eq!(s.charlson.index(), index, "{id} at {t}");
                assert_eq!(s.lace.charlson_index, index, "{id} at {t}");
                categories_seen.extend(present);
                indexes.push(index);
                compared += 1;
                nonzero += usize::from(index > 0);
            }
            // Diagnoses only become known; with the hierarchy the index can only grow.
            assert!(indexes[0] <= indexes[1], "{id}: {indexes:?}");
            grew += usize::from(indexes[0] < indexes[1]);
        }
    }
    assert!(compared > 100, "only {compared} comparisons");
    assert!(
        nonzero * 4 > compared,
        "{nonzero} of {compared} with a nonzero index"
    );
    assert!(
        categories_seen.len() >= 15,
        "only {} categories exercised: {categories_seen:?}",
        categories_seen.len()
    );
    // Some stays' own diagnoses are coded after discharge: point in time must show it.
    assert!(
        grew > 0,
        "no stay's Charlson index changed once its coding arrived"
    );
}

#[test]
fn prior_ed_visits_and_admissions_agree_with_a_plain_count() {
    let patients = cohort();
    let mut compared = 0;
    let (mut some_ed, mut some_admissions) = (false, false);
    for p in patients.iter().step_by(4) {
        for (id, _) in inpatient_stays(p) {
            let s = stay_scores(rows(p), &id, View::Final).unwrap();
            let admit = s.stay.admit;
            let count = |class: &str, months: u32| {
                let from = admit.checked_sub_months(Months::new(months)).unwrap();
                p.encounters
                    .iter()
                    .filter(|e| e.meta.retracted_at.is_none() && e.class == class)
                    .filter(|e| {
                        e.encounter_id != id && e.admit_time >= from && e.admit_time < admit
                    })
                    .filter(|e| {
                        class != encounter_class::EMERGENCY
                            || e.discharge_time.is_none_or(|d| d < admit)
                    })
                    .map(|e| e.encounter_id.as_str())
                    .collect::<BTreeSet<_>>()
                    .len() as u32
            };
            assert_eq!(
                s.lace.ed_visits,
                count(encounter_class::EMERGENCY, 6),
                "{id}"
            );
            assert_eq!(
                s.hospital.prior_admissions,
                count(encounter_class::INPATIENT, 12),
                "{id}"
            );
            some_ed |= s.lace.ed_visits > 0;
            some_admissions |= s.hospital.prior_admissions > 0;
            compared += 1;
        }
    }
    assert!(
        compared > 50 && some_ed && some_admissions,
        "{compared} stays compared"
    );
}

// -------------------------------------------------------------------------------------
// Sources that code diagnoses in SNOMED CT (Synthea), through the ingest pipeline.
// -------------------------------------------------------------------------------------

mod snomed_sources {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::compute::cast;
    use arrow::datatypes::{DataType, Float64Type};
    use chrono::{TimeZone, Utc};
    use ward::clock::{ManualClock, SharedClock};
    use ward::curated::code_system;
    use ward::features::{self, FeatureRepo, MaterializeOptions};
    use ward::hash::ContentHash;
    use ward::ingest::pipeline::{self, Format, IngestOptions, IngestReport};
    use ward::ingest::Context;
    use ward::scores::charlson::{categories_in, CharlsonCoding};
    use ward::scores::{charlson, CharlsonCategory};
    use ward::store::Store;

    use crate::common::shared_data;

    async fn ingest(dir: &std::path::Path, path: PathBuf, format: Format) -> (Store, IngestReport) {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let clock: SharedClock = Arc::new(ManualClock::new(t0));
        let store = Store::open(dir.join("store"), clock).expect("store opens");
        let opts = IngestOptions {
            format,
            mapping: None,
            mapping_text: None,
            max_bad: None,
            context: Context::new(t0),
            read: Default::default(),
        };
        let report = pipeline::ingest(&store, &[path], &opts, None)
            .await
            .expect("ingest");
        (store, report)
    }

    async fn read(store: &Store, hash: &ContentHash) -> Vec<RecordBatch> {
        store.read(hash).await.expect("version reads back").1
    }

    fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        let col = batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("{name}"));
        let col = cast(col, &DataType::Utf8).expect("text");
        let col = col.as_string::<i32>();
        (0..col.len())
            .map(|i| col.is_valid(i).then(|| col.value(i).to_string()))
            .collect()
    }

    /// Synthea CSV codes every condition in SNOMED CT, so before the SNOMED CT table every
    /// patient's Charlson index was 0. Four patients have a Charlson condition: two a
    /// myocardial infarction (22298006, with 399211009 history of MI), one chronic
    /// obstructive bronchitis (185086009), one childhood asthma (233678006). None of them has
    /// an inpatient stay in this export, so the index is computed over each patient's curated
    /// condition rows, as LACE's C would be at a stay.
    #[tokio::test]
    async fn synthea_csv_snomed_conditions_give_charlson_categories() {
        let Some(dir) = shared_data("synthea-csv") else {
            return;
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let (store, report) = ingest(tmp.path(), dir.join("csv"), Format::Synthea).await;
        let hash = report
            .curated
            .iter()
            .find(|c| c.table == "conditions")
            .expect("conditions version")
            .hash;
        let mut by_patient: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for b in read(&store, &hash).await {
            let (p, s, c) = (
                strings(&b, "patient_id"),
                strings(&b, "code_system"),
                strings(&b, "code"),
            );
            for i in 0..b.num_rows() {
                by_patient
                    .entry(p[i].clone().expect("patient"))
                    .or_default()
                    .push((s[i].clone().expect("system"), c[i].clone().expect("code")));
            }
        }
        assert!(by_patient.len() > 20, "{} patients", by_patient.len());
        let mut nonzero = BTreeMap::new();
        for (patient, codes) in &by_patient {
            assert!(
                codes.iter().all(|(s, _)| s == code_system::SNOMED),
                "{patient}: {codes:?}"
            );
            // Read with the ICD-10 table alone (Ward before this table), nothing counts.
            assert!(codes
                .iter()
                .all(|(_, c)| categories_in(CharlsonCoding::Icd10, c).is_empty()));
            let r = charlson(codes.iter().map(|(s, c)| (s.as_str(), c.as_str())));
            if !r.is_empty() {
                nonzero.insert(
                    patient.as_str(),
                    (r.present().collect::<Vec<_>>(), r.index()),
                );
            }
        }
        use CharlsonCategory::*;
        let expected = BTreeMap::from([
            (
                "1d3d16ce-a3a4-5e9e-1b4d-58a391895443",
                (vec![ChronicPulmonaryDisease], 1),
            ),
            (
                "261ad2a4-7c6f-da54-6a5b-3441beab9a6a",
                (vec![MyocardialInfarction], 1),
            ),
            (
                "4e62b363-ec6a-eb0b-a901-343263e2b215",
                (vec![ChronicPulmonaryDisease], 1),
            ),
            (
                "c2d1b552-0725-58ca-03fa-158d3437c06c",
                (vec![MyocardialInfarction], 1),
            ),
        ]);
        assert_eq!(nonzero, expected);
    }

    /// The SMART Synthea FHIR R4 bundles code conditions in SNOMED CT only; their inpatient
    /// stays had a Charlson index (and LACE C) of 0 before the SNOMED CT table. Now the
    /// `charlson_index` score feature at each patient's last stay counts the conditions with
    /// onset before it: lung cancer (254637007, 424132000, 254632001, 67811000119102), chronic
    /// congestive heart failure (88805009), Alzheimer's disease (26929004), stroke
    /// (230690007), pulmonary emphysema (87433001). Every other patient with a stay stays 0.
    #[tokio::test]
    async fn synthea_fhir_stays_score_their_snomed_comorbidities() {
        let Some(dir) = shared_data("synthea-fhir-r4-bundles") else {
            return;
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let (store, _) = ingest(tmp.path(), dir.join("R4_SYNTHEA"), Format::Fhir).await;
        let toml = "[[feature_set]]\nname = \"charlson\"\nttl = \"365d\"\n\
            [[feature_set.features]]\nname = \"charlson_index\"\nkind = \"score\"\n\
            component = \"charlson_index\"\nttl = \"none\"\n\
            [[feature_set.features]]\nname = \"lace_c\"\nkind = \"score\"\n\
            component = \"lace_c\"\nttl = \"none\"\n";
        let repo = FeatureRepo::parse(toml, "charlson.toml").expect("feature set");
        let out = features::materialize(&store, &repo, "charlson", &MaterializeOptions::default())
            .await
            .expect("materialize");
        // The last value of each feature per patient (the timeline is a list of change
        // points; the latest one holds from then on).
        let mut last: BTreeMap<(String, String), (i64, Option<f64>)> = BTreeMap::new();
        for b in read(&store, &out.hash).await {
            let (p, f) = (strings(&b, "patient_id"), strings(&b, "feature"));
            let at = cast(b.column_by_name("effective_at").unwrap(), &DataType::Int64).unwrap();
            let at = at.as_primitive::<arrow::datatypes::Int64Type>();
            let v = b.column_by_name("value_num").unwrap();
            let v = v.as_primitive::<Float64Type>();
            for i in 0..b.num_rows() {
                let key = (p[i].clone().unwrap(), f[i].clone().unwrap());
                let value = v.is_valid(i).then(|| v.value(i));
                let e = last.entry(key).or_insert((i64::MIN, None));
                if at.value(i) >= e.0 {
                    *e = (at.value(i), value);
                }
            }
        }
        let value = |patient: &str, feature: &str| {
            last.get(&(patient.to_string(), feature.to_string()))
                .and_then(|(_, v)| *v)
        };
        let expected = BTreeMap::from([
            ("84afbe27-2a55-4f53-b1de-3513e21dae68", 2.0), // NSCLC
            ("c5ed5d78-5b3f-4a75-bdfb-5f318b068a20", 3.0), // NSCLC, chronic CHF
            ("1a96f2e7-7ce0-4164-b3f6-4fdffeca00fb", 2.0), // NSCLC
            ("2d526118-fb1d-44c0-9b0b-b8f6d4f2b4fb", 2.0), // Alzheimer's, stroke
            ("ffb8ae8f-8c7f-4475-8c42-d38419108e94", 2.0), // small cell lung cancer
            ("34a17aef-dd20-4eda-bf6c-f121e454616d", 1.0), // pulmonary emphysema
        ]);
        let scored: BTreeSet<&str> = last
            .iter()
            .filter(|((_, f), (_, v))| f == "charlson_index" && v.is_some())
            .map(|((p, _), _)| p.as_str())
            .collect();
        assert!(scored.len() >= 12, "{scored:?}");
        for patient in &scored {
            let want = expected.get(patient).copied().unwrap_or(0.0);
            assert_eq!(value(patient, "charlson_index"), Some(want), "{patient}");
            // LACE C is the index itself below 4.
            assert_eq!(value(patient, "lace_c"), Some(want), "{patient}");
        }
        for patient in expected.keys() {
            assert!(scored.contains(patient), "{patient} has no scored stay");
        }
    }
}
