//! NDJSON framing, the line scanner, unreadable and deeply nested input, and properties
//! (never panics, every record accounted for).

use super::*;

#[test]
fn ndjson_lines_references_and_garbage() {
    let patients = "{\"resourceType\":\"Patient\",\"id\":\"11111111-2222\"}\r\n\n   \n";
    let obs = concat!(
        "\u{feff}{\"resourceType\":\"Observation\",\"id\":\"o1\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"1-8\"}]},",
        "\"subject\":{\"reference\":\"urn:uuid:11111111-2222\"},\"effectiveDateTime\":\"2020\"}\n",
        "{\"resourceType\":\"Observation\",\"id\":\"o2\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"1-8\"}]},",
        "\"subject\":{\"reference\":\"urn:uuid:nobody\"},\"effectiveDateTime\":\"2020\"}\n",
        "{\"resourceType\":\"Observation\",\"id\":\n",
        "[1,2]\n",
        "{\"resourceType\":\"Claim\",\"id\":\"i1\"}\n",
        "{\"resourceType\":\"MedicationRequest\",\"id\":\"m1\",\"medicationReference\":{\"reference\":\"Medication/med9\"},",
        "\"subject\":{\"reference\":\"Patient/11111111-2222\"},\"authoredOn\":\"2020-01-01\"}\n",
    );
    let meds = "{\"resourceType\":\"Medication\",\"id\":\"med9\",\"code\":{\"coding\":[{\"system\":\"RxNorm\",\"code\":\"42\"}]}}";
    let parsed = ndjson(&[
        ("Patient.ndjson", patients),
        ("Observation.ndjson", obs),
        ("Medication.ndjson", meds),
    ]);
    assert_eq!(parsed.tables.patients[0].patient_id, "11111111-2222");
    assert_eq!(parsed.tables.observations.len(), 1);
    assert_eq!(parsed.tables.observations[0].patient_id, "11111111-2222");
    assert_eq!(parsed.tables.medications[0].code.code, "42");
    assert_eq!(parsed.tables.medications[0].code.system, "RXNORM");
    let bad: Vec<(&str, u64, &str)> = parsed
        .bad
        .iter()
        .map(|b| {
            (
                b.location.file.as_str(),
                b.location.record,
                b.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        bad,
        [
            ("Observation.ndjson", 2, "dangling_reference"),
            ("Observation.ndjson", 3, "unparseable"),
            ("Observation.ndjson", 4, "unparseable"),
        ]
    );
    assert_eq!(
        parsed.bad[1].raw,
        "{\"resourceType\":\"Observation\",\"id\":"
    );
    let skipped: Vec<(&str, u64)> = parsed
        .skipped
        .iter()
        .map(|s| (s.what.as_str(), s.location.record))
        .collect();
    assert_eq!(skipped, [("Claim", 5), ("Medication", 1)]);
}

#[test]
fn lines_needing_the_whole_index_keep_their_place() {
    // Many tasks' worth of lines. Every third observation names its patient by a
    // `urn:uuid:` of a Patient line that comes later (curated once the pass is over),
    // every seventh names one that does not exist; the others use `Patient/id`.
    let n = LINES_PER_TASK * 3 + 17;
    let mut obs = String::new();
    let mut expected = Vec::new();
    let mut dangling = Vec::new();
    for i in 0..n {
        let (reference, patient) = match i {
            _ if i % 7 == 0 => ("urn:uuid:nobody".to_string(), None),
            _ if i % 3 == 0 => (format!("urn:uuid:p{}", i % 5), Some(format!("p{}", i % 5))),
            _ => (format!("Patient/p{}", i % 5), Some(format!("p{}", i % 5))),
        };
        // Every other line has its `resourceType` last.
        let (first, last) = match i % 2 {
            0 => ("\"resourceType\":\"Observation\",", ""),
            _ => ("", ",\"resourceType\":\"Observation\""),
        };
        obs.push_str(&format!(
            "{{{first}\"id\":\"o{i}\",\"code\":{{\"coding\":[{{\"system\":\"http://loinc.org\",\"code\":\"1-8\"}}]}},\"subject\":{{\"reference\":\"{reference}\"}},\"effectiveDateTime\":\"2020\"{last}}}\n"
        ));
        match patient {
            Some(p) => expected.push((format!("o{i}"), p)),
            None => dangling.push(i as u64 + 1),
        }
    }
    let mut meds = String::new();
    for i in 0..n {
        // Half the orders name a Medication of a later file.
        let drug = match i % 2 {
            0 => format!("\"medicationReference\":{{\"reference\":\"Medication/d{}\"}}", i % 4),
            _ => "\"medicationCodeableConcept\":{\"coding\":[{\"system\":\"http://www.nlm.nih.gov/research/umls/rxnorm\",\"code\":\"7\"}]}".to_string(),
        };
        meds.push_str(&format!(
            "{{\"resourceType\":\"MedicationRequest\",\"id\":\"m{i}\",{drug},\"subject\":{{\"reference\":\"Patient/p1\"}},\"authoredOn\":\"2020-01-01\"}}\n"
        ));
    }
    let mut later = String::new();
    for p in 0..5 {
        later.push_str(&format!(
            "{{\"resourceType\":\"Patient\",\"id\":\"p{p}\"}}\n"
        ));
    }
    for d in 0..4 {
        // Half with `resourceType` first (checked, not built), half with it last.
        let code = format!("\"code\":{{\"coding\":[{{\"system\":\"http://www.nlm.nih.gov/research/umls/rxnorm\",\"code\":\"10{d}\"}}]}}");
        later.push_str(&match d % 2 {
            0 => format!("{{\"resourceType\":\"Medication\",\"id\":\"d{d}\",{code}}}\n"),
            _ => format!("{{\"id\":\"d{d}\",{code},\"resourceType\":\"Medication\"}}\n"),
        });
    }
    let parsed = ndjson(&[
        ("Observation.ndjson", &obs),
        ("MedicationRequest.ndjson", &meds),
        ("Later.ndjson", &later),
    ]);
    let got: Vec<(String, String)> = parsed
        .tables
        .observations
        .iter()
        .map(|o| (o.observation_id.clone(), o.patient_id.clone()))
        .collect();
    assert_eq!(got, expected);
    let bad: Vec<u64> = parsed.bad.iter().map(|b| b.location.record).collect();
    assert_eq!(bad, dangling);
    assert!(parsed.bad.iter().all(|b| b.reason == "dangling_reference"));
    let drugs: Vec<(String, String)> = parsed
        .tables
        .medications
        .iter()
        .map(|m| (m.medication_id.clone(), m.code.code.clone()))
        .collect();
    let wanted: Vec<(String, String)> = (0..n)
        .map(|i| {
            let code = match i % 2 {
                0 => format!("10{}", i % 4),
                _ => "7".to_string(),
            };
            (format!("m{i}"), code)
        })
        .collect();
    assert_eq!(drugs, wanted);
    assert_eq!(parsed.tables.patients.len(), 5);
}

#[test]
fn scan_head_reads_top_level_members_only() {
    let head = |line: &str| {
        scan_head(line.as_bytes()).map(|h| {
            (
                h.resource_type.map(|t| t.to_string()),
                h.id.map(|t| t.to_string()),
            )
        })
    };
    let some = |t: &str, id: &str| Some((Some(t.to_string()), Some(id.to_string())));
    // Nested "id"s and "resourceType"s, brackets and quotes inside strings, numbers and
    // literals at the top level: only the top-level members count.
    let line = r#" {"contained":[{"resourceType":"Medication","id":"m1"}],"note":"a } \" ] {","n":-1.5e3,"ok":true,"subject":{"id":"x"},"id":"o-1","x":null,"resourceType":"Observation"} "#;
    assert_eq!(head(line), some("Observation", "o-1"));
    assert_eq!(
        head(r#"{"resourceType":"Patient"}"#),
        Some((Some("Patient".into()), None))
    );
    assert_eq!(head("{}"), Some((None, None)));
    assert_eq!(
        head(r#"{"a":[],"b":{},"c":[0,-0.5,1E+2,2e-3,"\u00e9\n"]}"#),
        Some((None, None))
    );
    // Whatever it cannot read, or is not JSON, is left to serde.
    for bad in [
        r#"{"resourceType":"Pat\u0069ent","id":"p"}"#,
        r#"{"resourceType":"Patient","id":7}"#,
        r#"{"resourceType":"Patient","id":null}"#,
        r#"{"resourceType":"Patient","id":"p""#,
        r#"{"resourceType":"Patient","id":"p"} trailing"#,
        r#"[{"resourceType":"Patient"}]"#,
        r#"{"a":[1,2}"#,
        r#"{"a" 1}"#,
        r#"{"a":1,}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":1e}"#,
        r#"{"a":-}"#,
        r#"{"a":+1}"#,
        r#"{"a":tru}"#,
        r#"{"a":nul,"b":1}"#,
        r#"{"a":True}"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"\u12g4"}"#,
        "{\"a\":\"tab\there\"}",
        "{\"a\":1}\u{c}",
        "",
    ] {
        assert_eq!(head(bad), None, "{bad}");
    }
    // Bytes that are not UTF-8: refused in the two strings it reads; in a string it only
    // skips, accepted exactly when serde_json accepts them there.
    let skipped = b"{\"resourceType\":\"Claim\",\"x\":\"\xff\"}";
    assert_eq!(
        scan_head(skipped).is_some(),
        serde_json::from_slice::<serde::de::IgnoredAny>(skipped).is_ok()
    );
    assert!(scan_head(b"{\"resourceType\":\"Cl\xffim\"}").is_none());
    // Nesting up to the limit is read; beyond it, serde decides.
    let nested = |n: usize| format!(r#"{{"a":{}{}}}"#, "[".repeat(n), "]".repeat(n));
    assert!(head(&nested(scan::MAX_DEPTH - 1)).is_some());
    assert!(head(&nested(scan::MAX_DEPTH)).is_none());
    // Agrees with serde on the sample Bundle and each of its resources as a line.
    let doc: Value = serde_json::from_str(&sample()).unwrap();
    let mut lines = vec![doc.to_string()];
    for e in doc["entry"].as_array().unwrap() {
        lines.push(e["resource"].to_string());
    }
    for line in &lines {
        let q = scan_head(line.as_bytes()).expect("a plain object");
        let t: IdOnly<'_> = serde_json::from_str(line).unwrap();
        assert_eq!((q.resource_type, q.id), (t.resource_type, t.id), "{line}");
    }
}

#[test]
fn unreadable_lines_of_skipped_types_are_bad_records() {
    // The pre-pass refuses these lines (not JSON, or an escape in the id), so serde
    // judges them: not JSON is a bad record, whatever type it names; valid JSON of an
    // uncurated type is skipped.
    let text = concat!(
        r#"{"resourceType":"Claim","id":"c1","total":{"value":01}}"#,
        "\n",
        r#"{"resourceType":"Claim","id":"c\u0032","x":"a\u00e9"}"#,
        "\n",
        r#"{"resourceType":"Claim","id":"c3","x":[1,2}"#,
    );
    let parsed = ndjson(&[("claims.ndjson", text)]);
    let bad: Vec<_> = parsed
        .bad
        .iter()
        .map(|b| (b.location.record, b.reason.as_str()))
        .collect();
    assert_eq!(bad, [(1, "unparseable"), (3, "unparseable")]);
    let skipped: Vec<_> = parsed
        .skipped
        .iter()
        .map(|s| (s.what.as_str(), s.location.record))
        .collect();
    assert_eq!(skipped, [("Claim", 2)]);
}

#[test]
fn deep_nesting_does_not_overflow() {
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let nested = format!(
        "{}{}",
        r#"{"resourceType":"Bundle","entry":[{"resource":"#.repeat(5_000),
        "}]}".repeat(5_000)
    );
    for text in [&deep, &nested] {
        let input = [Input {
            name: "deep.json",
            bytes: text.as_bytes(),
        }];
        let parsed = parse(&input, Framing::Bundle, &ctx());
        assert_eq!(parsed.bad.len(), 1);
        assert_eq!(parsed.bad[0].reason, "unparseable");
        assert!(parsed.bad[0].raw.len() <= 4096);
        let parsed = parse(&input, Framing::Ndjson, &ctx());
        assert_eq!(parsed.bad.len(), 1);
    }
    // Nesting within the limit still reads the innermost resource, as entry 1.
    let inner = r#"{"resourceType":"Patient","id":"deep"}"#;
    let text = format!(
        "{}{inner}{}",
        r#"{"resourceType":"Bundle","entry":[{"resource":"#.repeat(20),
        "}]}".repeat(20)
    );
    let input = [Input {
        name: "deep.json",
        bytes: text.as_bytes(),
    }];
    let parsed = parse(&input, Framing::Bundle, &ctx());
    assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
    assert_eq!(parsed.tables.patients[0].patient_id, "deep");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn truncated_bundles_never_panic(cut in 0usize..2000) {
        let text = sample();
        let cut = cut.min(text.len());
        let input = [Input { name: "t.json", bytes: &text.as_bytes()[..cut] }];
        let parsed = parse(&input, Framing::Bundle, &ctx());
        if cut < text.len() {
            prop_assert_eq!(parsed.bad.len(), 1);
            prop_assert_eq!(parsed.bad[0].location.record, 0);
            prop_assert!(parsed.tables.is_empty());
        } else {
            prop_assert_eq!(accounted(&parsed), 4);
        }
    }

    #[test]
    fn scan_head_accepts_only_what_serde_accepts(
        flips in proptest::collection::vec((0usize..4000, any::<u8>()), 1..4),
        pick in 0usize..8,
    ) {
        let doc: Value = serde_json::from_str(&sample()).expect("sample is JSON");
        let mut lines = vec![doc.to_string()];
        for e in doc["entry"].as_array().expect("entries") {
            lines.push(e["resource"].to_string());
        }
        let mut bytes = lines[pick % lines.len()].clone().into_bytes();
        for (at, b) in flips {
            let n = bytes.len();
            if let Some(x) = bytes.get_mut(at % n) {
                // Mostly JSON's own bytes, so that many garbled lines stay close to JSON.
                const JSONISH: &[u8] = b"{}[]:,\"\\ 0123456789-+.eEtrufalsn/u\t";
                *x = if b < 128 { JSONISH[b as usize % JSONISH.len()] } else { b };
            }
        }
        let serde = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
        if let Some(head) = scan_head(&bytes) {
            prop_assert!(serde, "scan_head accepted what serde refuses: {}", String::from_utf8_lossy(&bytes));
            if let Ok(t) = serde_json::from_slice::<IdOnly<'_>>(&bytes) {
                prop_assert_eq!((head.resource_type, head.id), (t.resource_type, t.id));
            }
        }
    }

    #[test]
    fn garbled_ndjson_never_panics(flips in proptest::collection::vec((0usize..4000, any::<u8>()), 0..8)) {
        let doc: Value = serde_json::from_str(&sample()).expect("sample is JSON");
        let lines: Vec<String> = doc["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["resource"].to_string())
            .collect();
        let mut bytes = lines.join("\n").into_bytes();
        for (at, b) in flips {
            let n = bytes.len();
            if let Some(x) = bytes.get_mut(at % n) {
                // Keep the line structure so that each line stays one record.
                if *x != b'\n' && b != b'\n' {
                    *x = b;
                }
            }
        }
        let input = [Input { name: "g.ndjson", bytes: &bytes }];
        let parsed = parse(&input, Framing::Ndjson, &ctx());
        prop_assert_eq!(accounted(&parsed), lines.len());
    }
}
