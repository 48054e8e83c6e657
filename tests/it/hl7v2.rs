//! HL7 v2 ingest against the shared samples (Microsoft FHIR-Converter's 139 sample
//! messages, one a file). The values below were checked by hand in the `.hl7` files; see
//! `PROVENANCE.txt` beside them.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use ward::curated::{Encounter, Observation};
use ward::ingest::hl7v2::parse;
use ward::ingest::{Context, Input, Parsed};

use crate::common::shared_data;

fn ctx() -> Context {
    Context::new(utc("2030-01-01T00:00:00Z"))
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

/// `(file name, bytes)` of every sample, sorted by name.
fn samples(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("Hl7v2"))
        .expect("sample folder")
        .map(|e| {
            let path = e.expect("dir entry").path();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("readable sample"))
        })
        .collect();
    files.sort();
    files
}

fn sample<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> &'a (String, Vec<u8>) {
    files
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("sample {name} is missing"))
}

fn run(files: &[&(String, Vec<u8>)]) -> Parsed {
    let inputs: Vec<Input<'_>> = files
        .iter()
        .map(|(name, bytes)| Input { name, bytes })
        .collect();
    parse(&inputs, &ctx())
}

fn visible(rows: &[Encounter], t: DateTime<Utc>) -> Vec<&Encounter> {
    rows.iter()
        .filter(|e| e.meta.known_at <= t && e.meta.retracted_at.is_none_or(|r| r > t))
        .collect()
}

fn visible_obs(rows: &[Observation], t: DateTime<Utc>) -> Vec<&Observation> {
    rows.iter()
        .filter(|e| e.meta.known_at <= t && e.meta.retracted_at.is_none_or(|r| r > t))
        .collect()
}

/// The message type (MSH-9.1^MSH-9.2) of a one-message sample.
fn message_type(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let msh = text
        .lines()
        .find_map(|l| l.trim_start_matches('\u{feff}').strip_prefix("MSH|"))
        .expect("an MSH segment");
    let msh9 = msh.split('|').nth(7).unwrap_or("");
    msh9.split('^').take(2).collect::<Vec<_>>().join("^")
}

#[test]
fn every_sample_is_curated_skipped_or_reported() {
    let Some(dir) = shared_data("hl7v2-samples") else {
        return;
    };
    let files = samples(&dir);
    assert_eq!(files.len(), 139, "PROVENANCE.txt lists 139 files");
    let all: Vec<&(String, Vec<u8>)> = files.iter().collect();
    let p = run(&all);

    // Unsupported message types are skipped, never bad: one skipped record per such file.
    let supported = [
        "ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A05", "ADT^A06", "ADT^A07", "ADT^A08",
        "ADT^A11", "ADT^A12", "ADT^A13", "ORU^R01",
    ];
    let mut unsupported = 0;
    for (name, bytes) in &files {
        let kind = message_type(bytes);
        if supported.contains(&kind.as_str()) {
            continue;
        }
        unsupported += 1;
        let skipped: Vec<_> = p
            .skipped
            .iter()
            .filter(|s| &s.location.file == name)
            .collect();
        assert_eq!(skipped.len(), 1, "{name} ({kind})");
        assert_eq!(skipped[0].what, kind);
        assert_eq!(skipped[0].location.record, 1);
        assert!(
            p.bad.iter().all(|b| &b.location.file != name),
            "{name} is unsupported, not bad"
        );
    }
    // 139 files less 31 curated: 16 ADT A01-A08, 2 A11, 2 A13, ADT01-23/28, ADT04-23/251/28,
    // MDM_01 (an ADT^A01) and 5 ORU^R01.
    assert_eq!(unsupported, 108);
    assert!(p.skipped.iter().any(|s| s.what == "ADT^A09"));

    // The bad records, checked by hand: ADT01-28 has neither PV1-19 nor PV1-44; the second
    // A11 and both A13s name an encounter the first A11 already cancelled (all these samples
    // share MSH-7); one ORU OBX has an empty OBX-3; the NIST CBC sends hemoglobin (718-7)
    // in `g/mL` (12.5, reference range 13 to 18: g/dL meant), a unit hemoglobin does not
    // accept (`ward::curated::units`).
    let mut bad: Vec<(&str, u64, &str, &str)> = p
        .bad
        .iter()
        .map(|b| {
            (
                b.location.file.as_str(),
                b.location.record,
                b.field.as_deref().unwrap_or(""),
                b.reason.as_str(),
            )
        })
        .collect();
    bad.sort();
    assert_eq!(
        bad,
        [
            ("ADT-A11-02.hl7", 4, "PV1-19", "dangling_reference"),
            ("ADT-A13-01.hl7", 9, "PV1-19", "dangling_reference"),
            ("ADT-A13-02.hl7", 4, "PV1-19", "dangling_reference"),
            ("ADT01-28.hl7", 5, "PV1-44", "missing_field"),
            (
                "LRI_2.0-NG_CBC_Typ_Message.hl7",
                6,
                "OBX-6",
                "unconvertible_unit"
            ),
            ("ORU-R01-01.hl7", 11, "OBX-3", "missing_field"),
        ]
    );

    // ADT-A01-0x / ADT-A03-0x: visit 40007716, admitted 20150208113419+0110 and discharged
    // 20150209113419+0110, PV1-2 `P` on an A01: an inpatient stay.
    let stay = p
        .tables
        .encounters
        .iter()
        .find(|e| e.encounter_id == "40007716^AccMng" && e.discharge_time.is_some())
        .expect("the discharged version of visit 40007716");
    assert_eq!(stay.patient_id, "PATID1234");
    assert_eq!(stay.class, "inpatient");
    assert_eq!(stay.admit_time, utc("2015-02-08T10:24:19Z"));
    assert_eq!(stay.discharge_time, Some(utc("2015-02-09T10:24:19Z")));
    assert_eq!(stay.admission_type.as_deref(), Some("emergency"));
    assert_eq!(stay.service.as_deref(), Some("surgery"));
    assert_eq!(stay.meta.source_system, "ADTApp^GHHSFacility");
    assert_eq!(stay.meta.known_at, utc("1989-08-18T09:11:00Z"));

    // A known lab value: ORU-R01-RMGEAD, glucose 182 mg/dl (SN `^182`), OBR-7 at +0600.
    let glucose = p
        .tables
        .observations
        .iter()
        .find(|o| o.patient_id == "555-44-4444")
        .expect("the RMGEAD glucose");
    assert_eq!(glucose.code.code, "1554-5");
    assert_eq!(glucose.code.display.as_deref(), Some("GLUCOSE"));
    assert_eq!(glucose.value_num, Some(182.0));
    assert_eq!(glucose.unit.as_deref(), Some("mg/dl"));
    assert_eq!(glucose.effective_time, utc("2002-02-15T01:30:00Z"));
    assert_eq!(glucose.status.as_deref(), Some("final"));

    // LRI_2.0-NG_CBC: hemoglobin, LOINC 718-7, 12.5 g/mL, a unit hemoglobin does not accept:
    // quarantined (above), no row; the CBC's other results are kept.
    assert!(!p
        .tables
        .observations
        .iter()
        .any(|o| o.code.system == "LOINC" && o.code.code == "718-7"));
    let hct = p
        .tables
        .observations
        .iter()
        .find(|o| o.patient_id == "PATID1234" && o.code.code == "20570-8")
        .expect("the NIST CBC hematocrit");
    assert_eq!(hct.value_num, Some(41.0));
    assert_eq!(hct.unit.as_deref(), Some("%"));
    assert_eq!(hct.category.as_deref(), Some("laboratory"));

    // LAB-ORU-1 (06:45+0700, preliminary) then LAB-ORU-2 (09:31+0700, final) report the same
    // orders: the hematocrit of order 82503246 goes from 40.1 to 39.7 as of LAB-ORU-2.
    let hct = |t: &str| -> Vec<(Option<f64>, Option<String>)> {
        visible_obs(&p.tables.observations, utc(t))
            .into_iter()
            .filter(|o| o.code.code == "20570-8" && o.patient_id == "10006579")
            .map(|o| (o.value_num, o.status.clone()))
            .collect()
    };
    assert_eq!(hct("2014-10-05T23:44:59Z"), []);
    assert_eq!(
        hct("2014-10-06T02:00:00Z"),
        [(Some(40.1), Some("preliminary".to_string()))]
    );
    assert_eq!(
        hct("2014-10-06T02:31:00Z"),
        [(Some(39.7), Some("final".to_string()))]
    );
    // LAB-ORU's results point at the visit that ADT01-23 admitted (PID-18, typed VN).
    let hct_row = p
        .tables
        .observations
        .iter()
        .find(|o| o.code.code == "20570-8" && o.value_num == Some(39.7))
        .expect("final hematocrit");
    assert_eq!(hct_row.encounter_id.as_deref(), Some("40007716^AccMgr"));
    assert!(p
        .tables
        .encounters
        .iter()
        .any(|e| e.encounter_id == "40007716^AccMgr" && e.patient_id == "10006579"));
}

#[test]
fn a01_then_a03_is_an_inpatient_stay_of_one_day() {
    let Some(dir) = shared_data("hl7v2-samples") else {
        return;
    };
    let files = samples(&dir);
    let p = run(&[
        sample(&files, "ADT-A03-01.hl7"),
        sample(&files, "ADT-A01-01.hl7"),
    ]);
    assert!(p.bad.is_empty(), "{:?}", p.bad);
    let now = visible(&p.tables.encounters, utc("2016-01-01T00:00:00Z"));
    assert_eq!(now.len(), 1);
    let stay = now[0];
    assert_eq!(stay.class, "inpatient");
    assert_eq!(stay.admit_time, utc("2015-02-08T10:24:19Z"));
    assert_eq!(stay.discharge_time, Some(utc("2015-02-09T10:24:19Z")));
    assert_eq!(
        stay.discharge_time.map(|d| d - stay.admit_time),
        Some(Duration::days(1))
    );
    assert_eq!(
        stay.discharge_disposition.as_deref(),
        Some("Admitted as Inpatient")
    );
    // The attending (PV1-7) and admitting (PV1-17) doctors, valid for the stay.
    let mut team: Vec<(&str, Option<&str>)> = p
        .tables
        .care_team
        .iter()
        .filter(|c| c.meta.retracted_at.is_none())
        .map(|c| (c.clinician_id.as_str(), c.role.as_deref()))
        .collect();
    team.sort();
    assert_eq!(
        team,
        [("1122334", Some("attending")), ("37", Some("admitting"))]
    );
    let patient = &p.tables.patients[0];
    assert_eq!(patient.patient_id, "PATID1234");
    assert_eq!(patient.sex.as_deref(), Some("male"));
    assert_eq!(
        patient.birth_date.map(|d| d.to_string()),
        Some("1988-08-18".into())
    );
    assert_eq!(patient.death_time, Some(utc("2008-08-25T10:01:30Z")));
}

#[test]
fn a11_cancelled_admission_is_gone_after_the_cancel() {
    let Some(dir) = shared_data("hl7v2-samples") else {
        return;
    };
    let files = samples(&dir);
    let a01 = sample(&files, "ADT-A01-01.hl7");
    let a11 = sample(&files, "ADT-A11-01.hl7");

    // As shipped, both messages carry the same MSH-7: the cancel is known the instant the
    // admission is, so the admission is never visible.
    let p = run(&[a01, a11]);
    assert!(p.bad.is_empty(), "{:?}", p.bad);
    assert_eq!(p.tables.encounters.len(), 1);
    assert!(visible(&p.tables.encounters, utc("2016-01-01T00:00:00Z")).is_empty());

    // With the cancel sent later (MSH-7 moved to 2015-02-10), the admission is visible
    // between its admit time and the cancel, and gone after.
    let later = String::from_utf8(a11.1.clone())
        .expect("utf-8 sample")
        .replacen("198908181126+0215", "20150210000000+0000", 1);
    let a11_later = (a11.0.clone(), later.into_bytes());
    let p = run(&[&a11_later, a01]);
    assert!(p.bad.is_empty(), "{:?}", p.bad);
    let before = visible(&p.tables.encounters, utc("2015-02-09T00:00:00Z"));
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].encounter_id, "40007716^AccMng");
    assert!(visible(&p.tables.encounters, utc("2015-02-10T00:00:00Z")).is_empty());
    assert!(p
        .tables
        .care_team
        .iter()
        .all(|c| c.meta.retracted_at == Some(utc("2015-02-10T00:00:00Z"))));
}

#[test]
fn the_same_samples_give_the_same_rows() {
    let Some(dir) = shared_data("hl7v2-samples") else {
        return;
    };
    let files = samples(&dir);
    let all: Vec<&(String, Vec<u8>)> = files.iter().collect();
    assert_eq!(run(&all), run(&all));
}

/// Messages in `bytes`: lines starting with an MSH segment (framing characters aside),
/// with the same ISO 8859-1 fallback as the parser.
fn count_messages(bytes: &[u8]) -> usize {
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    };
    text.split(['\r', '\n'])
        .filter(|l| {
            let l = l.trim_start_matches(|c: char| {
                c.is_whitespace() || c == '\u{feff}' || c == '\x0b' || c == '\x1c'
            });
            l.strip_prefix("MSH")
                .is_some_and(|rest| rest.chars().next().is_none_or(|c| !c.is_alphanumeric()))
        })
        .count()
}

/// Parses one file alone and checks that every message in it yields a row, a bad record
/// or a skipped record (a message that only retracts rows still leaves them behind).
fn assert_accounted(name: &str, bytes: &[u8]) {
    let p = parse(&[Input { name, bytes }], &ctx());
    let outputs = p.tables.patients.len()
        + p.tables.encounters.len()
        + p.tables.observations.len()
        + p.tables.care_team.len()
        + p.bad.len()
        + p.skipped.len();
    let messages = count_messages(bytes);
    assert!(
        outputs >= messages,
        "{name}: {messages} message(s) but {outputs} output(s)"
    );
    for b in &p.bad {
        assert_eq!(b.location.file, name);
        assert!(b.raw.len() <= 4096);
        assert!(!b.reason.is_empty());
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % (n.max(1) as u64)) as usize
    }
}

#[test]
fn truncated_and_garbled_copies_of_every_sample_never_panic() {
    let Some(dir) = shared_data("hl7v2-samples") else {
        return;
    };
    let files = samples(&dir);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (name, bytes) in &files {
        assert_accounted(name, bytes);
        assert!(count_messages(bytes) == 1, "{name}: one message a file");
        let n = bytes.len();
        // Truncations: at every 1/16 of the file and at 16 random points.
        for cut in (0..=16)
            .map(|k| n * k / 16)
            .chain((0..16).map(|_| rng.below(n + 1)))
        {
            assert_accounted(name, &bytes[..cut]);
        }
        // Garbling: random bytes overwritten, separators swapped, lines dropped or
        // duplicated, CR/LF and MLLP framing bytes thrown in.
        for round in 0..24 {
            let mut g = bytes.clone();
            let noise = [
                b'|', b'^', b'~', b'\\', b'&', b'\r', b'\n', 0x0b, 0x1c, 0xff, 0xc3,
            ];
            for _ in 0..=round {
                let at = rng.below(g.len());
                let b = if rng.below(2) == 0 {
                    noise[rng.below(noise.len())]
                } else {
                    rng.below(256) as u8
                };
                if let Some(x) = g.get_mut(at) {
                    *x = b;
                }
            }
            if round % 3 == 0 {
                let lines: Vec<&[u8]> = g.split(|&b| b == b'\n').collect();
                let drop = rng.below(lines.len());
                let dup = rng.below(lines.len());
                let mut out = Vec::new();
                for (i, l) in lines.iter().enumerate() {
                    if i != drop {
                        out.extend_from_slice(l);
                        out.push(b'\n');
                    }
                    if i == dup {
                        out.extend_from_slice(l);
                        out.push(b'\r');
                    }
                }
                g = out;
            }
            let cut = g.len() - rng.below(g.len() / 4 + 1);
            g.truncate(cut);
            assert_accounted(name, &g);
        }
    }
}
