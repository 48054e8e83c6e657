//! Score features against `scores::stay_scores` called directly at t.

use super::*;

// ---------------------------------------------------------------------------------------
// Score features against `scores::stay_scores` called directly at t
// ---------------------------------------------------------------------------------------

/// Every score component; `lace_total` with a short TTL, `charlson_index` without one.
fn score_set_toml() -> String {
    let mut t = String::from("[[feature_set]]\nname = \"scores\"\nttl = \"365d\"\n");
    for c in ScoreComponent::ALL {
        t.push_str(&format!(
            "[[feature_set.features]]\nname = \"{0}\"\nkind = \"score\"\ncomponent = \"{0}\"\n",
            c.name()
        ));
        match c {
            ScoreComponent::LaceTotal => t.push_str("ttl = \"30d\"\n"),
            ScoreComponent::CharlsonIndex => t.push_str("ttl = \"none\"\n"),
            _ => {}
        }
    }
    t
}

/// One patient's rows of the tables the scores read, as the generator made them.
#[derive(Default)]
struct ScoreRows {
    encounters: Vec<Encounter>,
    conditions: Vec<Condition>,
    observations: Vec<Observation>,
    procedures: Vec<Procedure>,
}

impl ScoreRows {
    fn rows(&self) -> PatientRows<'_> {
        PatientRows {
            encounters: &self.encounters,
            conditions: &self.conditions,
            observations: &self.observations,
            procedures: &self.procedures,
        }
    }
}

fn score_rows_by_patient(tables: &CuratedTables) -> BTreeMap<String, ScoreRows> {
    let mut out: BTreeMap<String, ScoreRows> = BTreeMap::new();
    for e in &tables.encounters {
        out.entry(e.patient_id.clone())
            .or_default()
            .encounters
            .push(e.clone());
    }
    for c in &tables.conditions {
        out.entry(c.patient_id.clone())
            .or_default()
            .conditions
            .push(c.clone());
    }
    for o in &tables.observations {
        out.entry(o.patient_id.clone())
            .or_default()
            .observations
            .push(o.clone());
    }
    for p in &tables.procedures {
        out.entry(p.patient_id.clone())
            .or_default()
            .procedures
            .push(p.clone());
    }
    out
}

/// The plain reference: the encounters seen at `t` (latest version of each id), the
/// inpatient one discharged last at or before `t`, and `stay_scores` on every row of the
/// patient in the same view. Returns the stay's discharge time and its scores.
fn score_reference(
    rows: &ScoreRows,
    t: DateTime<Utc>,
    knowledge: Knowledge,
) -> Option<(DateTime<Utc>, scores::StayScores)> {
    let view = match knowledge {
        Knowledge::AsKnown => View::AsKnownAt(t),
        Knowledge::AsOccurred => View::Final,
    };
    let seen = |e: &&Encounter| match view {
        View::AsKnownAt(t) => {
            e.admit_time <= t && e.meta.known_at <= t && e.meta.retracted_at.is_none_or(|x| x > t)
        }
        View::Final => e.meta.retracted_at.is_none(),
    };
    let mut latest: BTreeMap<&str, &Encounter> = BTreeMap::new();
    for e in rows.encounters.iter().filter(seen) {
        let keep_old = latest.get(e.encounter_id.as_str()).is_some_and(|l| {
            (l.meta.known_at, &l.meta.source_id) >= (e.meta.known_at, &e.meta.source_id)
        });
        if !keep_old {
            latest.insert(&e.encounter_id, e);
        }
    }
    let stay = latest
        .values()
        .filter(|e| e.class == "inpatient")
        .filter(|e| {
            e.discharge_time
                .is_some_and(|d| d <= t && d >= e.admit_time)
        })
        .max_by_key(|e| (e.discharge_time, e.admit_time, e.encounter_id.clone()))?;
    let s = scores::stay_scores(rows.rows(), &stay.encounter_id, view).ok()?;
    Some((stay.discharge_time?, s))
}

/// Instants worth probing: every row's event time, `known_at`, entry and retraction, every
/// discharge and discharge + TTL, a microsecond either side; all of them for encounters,
/// conditions (late coding) and retracted observations (corrections), a sample of the rest.
fn score_probe_times(rows: &ScoreRows, rng: &mut ChaCha8Rng) -> Vec<i64> {
    let mut must: Vec<i64> = Vec::new();
    let mut other: Vec<i64> = Vec::new();
    let edges = |e: DateTime<Utc>, m: &ward::curated::RowMeta| {
        let mut v = vec![us(e), us(m.known_at), us(e.max(m.known_at))];
        v.extend(m.retracted_at.map(us));
        v
    };
    for e in &rows.encounters {
        must.extend(edges(e.admit_time, &e.meta));
        if let Some(d) = e.discharge_time {
            must.extend([us(d), us(d) + 30 * DAY_US, us(d) + 365 * DAY_US]);
        }
    }
    for c in &rows.conditions {
        must.extend(edges(c.onset_time, &c.meta));
    }
    for o in &rows.observations {
        if o.meta.retracted_at.is_some() {
            must.extend(edges(o.effective_time, &o.meta));
        } else {
            other.extend(edges(o.effective_time, &o.meta));
        }
    }
    for p in &rows.procedures {
        other.extend(edges(p.performed_time, &p.meta));
    }
    let lo = us(Utc.with_ymd_and_hms(2014, 1, 1, 0, 0, 0).unwrap());
    let hi = us(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
    let mut base: Vec<i64> = (0..8).map(|_| rng.random_range(lo..hi)).collect();
    for _ in 0..20.min(other.len()) {
        base.push(other[rng.random_range(0..other.len())]);
    }
    // Cap the must-probe edges of very busy patients.
    must.sort_unstable();
    must.dedup();
    if must.len() > 150 {
        let keep: Vec<i64> = (0..150)
            .map(|_| must[rng.random_range(0..must.len())])
            .collect();
        must = keep;
    }
    base.extend(must);
    let mut out: Vec<i64> = base.iter().flat_map(|b| [b - 1, *b, b + 1]).collect();
    out.sort_unstable();
    out.dedup();
    out
}

async fn score_differential(knowledge: Knowledge, seed: u64) {
    let toml = score_set_toml();
    let repo = FeatureRepo::parse(&toml, "scores.toml").unwrap();
    let set = repo.set("scores").unwrap();
    let tables = cohort(120, seed);
    let opts = MaterializeOptions {
        knowledge,
        ..Default::default()
    };
    let tl = compute(set, &Inputs::from_curated(&tables).unwrap(), &opts)
        .await
        .unwrap();
    let idx = index(set, &tl.batches);
    let by_patient = score_rows_by_patient(&tables);
    let mut patients: Vec<String> = tables
        .patients
        .iter()
        .map(|p| p.patient_id.clone())
        .collect();
    patients.sort();
    patients.dedup();
    patients.push("nobody".into());
    let empty = ScoreRows::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_status: std::collections::HashMap<(String, Status), u64> =
        std::collections::HashMap::new();
    let (mut late_coded, mut corrected_lab, mut checked) = (0u64, 0u64, 0u64);
    for p in &patients {
        let rows = by_patient.get(p).unwrap_or(&empty);
        for t in score_probe_times(rows, &mut rng) {
            let want = score_reference(rows, at(t), knowledge);
            if let Some((d, s)) = &want {
                // What the probes exercised: a diagnosis of the stay coded after t, and a
                // corrected hemoglobin or sodium result inside the stay.
                if let Some((_, fin)) = score_reference(rows, at(t), Knowledge::AsOccurred) {
                    if fin.stay == s.stay && fin.charlson.index() > s.charlson.index() {
                        late_coded += 1;
                    }
                }
                let in_stay = |o: &&Observation| {
                    o.effective_time >= s.stay.admit
                        && o.effective_time <= *d
                        && ["718-7", "2951-2"].contains(&o.code.code.as_str())
                };
                if rows
                    .observations
                    .iter()
                    .filter(in_stay)
                    .any(|o| o.meta.retracted_at.is_some())
                {
                    corrected_lab += 1;
                }
            }
            for c in ScoreComponent::ALL {
                let f = set.feature(c.name()).unwrap();
                let expected = match &want {
                    None => FeatureValue {
                        value: None,
                        status: Status::NoData,
                    },
                    Some((d, _)) if f.ttl_us.is_some_and(|ttl| t - us(*d) >= ttl) => FeatureValue {
                        value: None,
                        status: Status::OutsideTtl,
                    },
                    Some((_, s)) => FeatureValue {
                        value: Some(Value::Num(s.value(c) as f64)),
                        status: Status::Present,
                    },
                };
                let ttl = idx.feature_info(c.name()).unwrap().ttl;
                let got = lookup(&idx, p, c.name(), at(t), ttl);
                assert_eq!(got, expected, "patient {p} {} t {} ({t})", c.name(), at(t));
                *by_status
                    .entry((c.name().to_string(), got.status))
                    .or_default() += 1;
                checked += 1;
            }
        }
    }
    for c in ScoreComponent::ALL {
        assert!(
            by_status.contains_key(&(c.name().to_string(), Status::Present)),
            "{} never present",
            c.name()
        );
        assert!(
            by_status.contains_key(&(c.name().to_string(), Status::NoData)),
            "{} never without data",
            c.name()
        );
    }
    assert!(by_status.contains_key(&("lace_total".to_string(), Status::OutsideTtl)));
    assert!(!by_status.contains_key(&("charlson_index".to_string(), Status::OutsideTtl)));
    // Some score component takes a non-zero value somewhere.
    for c in [
        ScoreComponent::CharlsonIndex,
        ScoreComponent::LaceTotal,
        ScoreComponent::HospitalTotal,
    ] {
        let nonzero = idx
            .series("P0000001", c.name())
            .iter()
            .chain(patients.iter().flat_map(|p| idx.series(p, c.name())))
            .any(|cp| cp.value_num.is_some_and(|v| v > 0.0));
        assert!(nonzero, "{} is 0 everywhere", c.name());
    }
    assert!(corrected_lab > 0, "no probe saw a corrected lab in a stay");
    if knowledge == Knowledge::AsKnown {
        assert!(late_coded > 0, "no probe saw a diagnosis coded after t");
    }
    assert!(checked > 50_000, "only {checked} lookups compared");
}

#[tokio::test]
async fn score_features_match_stay_scores_as_known() {
    score_differential(Knowledge::AsKnown, 13).await;
}

#[tokio::test]
async fn score_features_match_stay_scores_as_occurred() {
    score_differential(Knowledge::AsOccurred, 17).await;
}

/// Hand-built: a late-coded diagnosis and a corrected hemoglobin change the score at the
/// instant they become known, not before; a second stay replaces the first at its discharge;
/// TTL counts from the discharge.
#[tokio::test]
async fn score_changes_at_coding_correction_and_next_discharge() {
    use ward::curated::{Coding, RowMeta};
    let t0 = Utc.with_ymd_and_hms(2021, 5, 1, 8, 0, 0).unwrap();
    let h = Duration::hours;
    let meta = |id: &str, k: DateTime<Utc>, x: Option<DateTime<Utc>>| RowMeta {
        source_system: "s".into(),
        source_id: id.into(),
        known_at: k,
        retracted_at: x,
    };
    let enc = |id: &str, admit: DateTime<Utc>, dis: DateTime<Utc>, m: RowMeta| Encounter {
        encounter_id: id.into(),
        patient_id: "p".into(),
        class: "inpatient".into(),
        admit_time: admit,
        discharge_time: Some(dis),
        admission_type: Some("emergency".into()),
        discharge_disposition: None,
        service: Some("medicine".into()),
        code: None,
        meta: m,
    };
    let hb = |id: &str, v: f64, e: DateTime<Utc>, m: RowMeta| Observation {
        observation_id: id.into(),
        patient_id: "p".into(),
        encounter_id: None,
        category: None,
        code: Coding {
            system: "LOINC".into(),
            code: "718-7".into(),
            display: None,
        },
        value_num: Some(v),
        value_text: None,
        unit: Some("g/dL".into()),
        value_original: None,
        unit_original: None,
        effective_time: e,
        status: Some("final".into()),
        meta: m,
    };
    // Stay 1: 3 days, emergency; known at discharge (t0 + 72h).
    let d1 = t0 + h(72);
    // Stay 2: 1 day, 60 days later.
    let a2 = t0 + Duration::days(60);
    let d2 = a2 + h(24);
    let tables = CuratedTables {
        encounters: vec![
            enc("E1", t0, d1, meta("E1/2", d1, None)),
            enc("E2", a2, d2, meta("E2/2", d2, None)),
        ],
        conditions: vec![Condition {
            condition_id: "C1".into(),
            patient_id: "p".into(),
            encounter_id: Some("E1".into()),
            code: Coding {
                system: "ICD10CM".into(),
                code: "I50.9".into(),
                display: None,
            },
            onset_time: t0,
            abatement_time: None,
            diagnosis_type: None,
            // Coded two days after discharge.
            meta: meta("C1", d1 + h(48), None),
        }],
        observations: vec![
            // 11 g/dL at discharge, corrected to 12.5 a day later.
            hb(
                "O1",
                11.0,
                d1 - h(2),
                meta("O1/1", d1 - h(1), Some(d1 + h(24))),
            ),
            hb("O1", 12.5, d1 - h(2), meta("O1/2", d1 + h(24), None)),
        ],
        ..Default::default()
    };
    let toml = r#"
[[feature_set]]
name = "s"
ttl = "90d"
[[feature_set.features]]
name = "charlson"
kind = "score"
component = "charlson_index"
[[feature_set.features]]
name = "hb"
kind = "score"
component = "hospital_hemoglobin"
[[feature_set.features]]
name = "lace_l"
kind = "score"
component = "lace_l"
"#;
    let repo = FeatureRepo::parse(toml, "s.toml").unwrap();
    let set = repo.set("s").unwrap();
    let tl = compute(
        set,
        &Inputs::from_curated(&tables).unwrap(),
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    let idx = index(set, &tl.batches);
    let get = |f: &str, t: DateTime<Utc>| lookup(&idx, "p", f, t, idx.feature_info(f).unwrap().ttl);
    let num = |v: f64| FeatureValue {
        value: Some(Value::Num(v)),
        status: Status::Present,
    };
    let eps = Duration::microseconds(1);
    assert_eq!(
        get("lace_l", d1 - eps).status,
        Status::NoData,
        "in progress"
    );
    assert_eq!(get("lace_l", d1), num(3.0), "3 days: L = 3");
    assert_eq!(get("charlson", d1), num(0.0), "heart failure not coded yet");
    assert_eq!(get("charlson", d1 + h(48) - eps), num(0.0));
    assert_eq!(get("charlson", d1 + h(48)), num(1.0), "coded: CHF");
    assert_eq!(get("hb", d1), num(1.0), "11 g/dL < 12");
    assert_eq!(get("hb", d1 + h(24) - eps), num(1.0));
    assert_eq!(get("hb", d1 + h(24)), num(0.0), "corrected to 12.5");
    // Stay 2 replaces stay 1 at its discharge; its hemoglobin is unknown, CHF is history.
    assert_eq!(get("lace_l", d2 - eps), num(3.0));
    assert_eq!(get("lace_l", d2), num(1.0));
    assert_eq!(get("hb", d2), num(0.0));
    assert_eq!(get("charlson", d2), num(1.0));
    // TTL (90 days, the set's) counts from stay 2's discharge.
    assert_eq!(get("lace_l", d2 + Duration::days(90) - eps), num(1.0));
    assert_eq!(
        get("lace_l", d2 + Duration::days(90)).status,
        Status::OutsideTtl
    );
    // As occurred: the final record from the discharge on.
    let occurred = compute(
        set,
        &Inputs::from_curated(&tables).unwrap(),
        &MaterializeOptions {
            knowledge: Knowledge::AsOccurred,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let idx = index(set, &occurred.batches);
    let get = |f: &str, t: DateTime<Utc>| lookup(&idx, "p", f, t, None);
    assert_eq!(get("charlson", d1), num(1.0));
    assert_eq!(get("hb", d1), num(0.0));
    assert_eq!(get("lace_l", d1 - eps).status, Status::NoData);
}
