//! Tests of the clinical model.

use super::{generate, patient_id};
use crate::synth::SynthOptions;

#[test]
fn a_patient_is_a_pure_function_of_seed_and_index() {
    let opts = SynthOptions::default();
    assert_eq!(generate(&opts, 7), generate(&opts, 7));
    assert_ne!(generate(&opts, 7), generate(&opts, 8));
    let other = SynthOptions {
        seed: opts.seed + 1,
        ..opts.clone()
    };
    assert_ne!(generate(&opts, 7), generate(&other, 7));
}

#[test]
fn ids_sort_in_index_order() {
    assert!(patient_id(9) < patient_id(10));
    assert!(patient_id(999_999) < patient_id(1_000_000));
}

#[test]
fn timestamps_are_whole_seconds_and_inside_the_knowledge_rules() {
    let opts = SynthOptions::default();
    for i in 0..200 {
        let t = generate(&opts, i);
        for e in &t.encounters {
            assert_eq!(e.admit_time.timestamp_subsec_micros(), 0);
            assert!(e.meta.known_at >= e.admit_time);
            if let Some(d) = e.discharge_time {
                assert!(d > e.admit_time);
                assert!(e.meta.known_at >= d, "discharge known before it happened");
            }
        }
        for o in &t.observations {
            assert!(o.meta.known_at > o.effective_time);
            if let Some(r) = o.meta.retracted_at {
                assert!(r > o.meta.known_at);
            }
        }
        for c in &t.conditions {
            if let Some(a) = c.abatement_time {
                assert!(c.meta.known_at >= a, "abatement known before it happened");
            }
        }
        for m in &t.care_team {
            if let Some(to) = m.valid_to {
                assert!(m.meta.known_at >= to);
            }
        }
    }
}

#[test]
fn every_retracted_observation_has_its_correction() {
    let opts = SynthOptions::default();
    let mut corrections = 0;
    for i in 0..300 {
        let t = generate(&opts, i);
        for o in t
            .observations
            .iter()
            .filter(|o| o.meta.retracted_at.is_some())
        {
            let fix = t
                .observations
                .iter()
                .find(|c| {
                    c.observation_id == o.observation_id && c.status.as_deref() == Some("corrected")
                })
                .expect("a corrected row");
            assert_eq!(Some(fix.meta.known_at), o.meta.retracted_at);
            assert_ne!(fix.value_num, o.value_num);
            corrections += 1;
        }
    }
    assert!(corrections > 0);
}
