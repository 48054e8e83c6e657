//! One cohort through several sources (`ward synth --sources adt,lab,ehr`), for measuring
//! the master patient index (`crate::mpi`, `docs/mpi.md`).
//!
//! Every person of the cohort ([`super::generate_patient`]) is registered in each source
//! with some probability (ADT 90%, lab 80%, EHR 80%; at least one), under that source's own
//! patient id, and with the demographic errors real registration makes, drawn per
//! (person, source) from a stream of its own:
//!
//! | error | rate | example |
//! | --- | --- | --- |
//! | nickname for the given name | 8% (when the name has one) | `Robert` → `Bob` |
//! | misspelt family name (two letters swapped, one dropped or doubled) | 5% | `Johnson` → `Jonhson` |
//! | transposed digits in the birth date (day digits, else day and month, else the year's last two) | 3% | `1957-03-12` → `1957-03-21` |
//! | missing postal code / sex / birth date / given name | 5% / 2% / 1% / 1% | |
//!
//! Sources: `adt` an HL7 v2 ADT feed (PID-3 `A…^^^ADT^MR`; encounters), `lab` an HL7 v2 ORU
//! feed (PID-3 `L…^^^LAB^MR`, carrying the ADT MRN as a second PID-3 repetition for 40% of
//! its patients who have one, as orders from the hospital do), `ehr` FHIR R4 NDJSON
//! (`Patient.id` `ehr-…`, identifier system `urn:ward:synth:ehr`, and the ADT MRN under
//! `urn:ward:synth:adt` for 30%). Each source's record ids (encounters, observations, ...)
//! are prefixed with the source's name, so sources never share a record. The truth — which
//! source ids are one person — is written to `truth.csv` (`record_id,source,person_id`).

use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{fhir, generate_patient, hl7v2, OutFile, SynthOptions};
use crate::curated::CuratedTables;
use crate::error::{Error, Result};

/// A source system of `--sources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// HL7 v2 ADT feed.
    Adt,
    /// HL7 v2 ORU lab feed.
    Lab,
    /// FHIR R4 NDJSON from the EHR.
    Ehr,
}

impl Source {
    /// The name as written in `--sources`.
    pub fn name(self) -> &'static str {
        match self {
            Source::Adt => "adt",
            Source::Lab => "lab",
            Source::Ehr => "ehr",
        }
    }

    /// Parses `adt,lab,ehr`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the unknown or repeated source.
    pub fn parse_list(s: &str) -> Result<Vec<Source>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let src = match part {
                "adt" => Source::Adt,
                "lab" => Source::Lab,
                "ehr" => Source::Ehr,
                other => {
                    return Err(Error::invalid(
                        "--sources",
                        format!("unknown source {other:?}: use adt, lab, ehr"),
                    ))
                }
            };
            if out.contains(&src) {
                return Err(Error::invalid("--sources", format!("{part} given twice")));
            }
            out.push(src);
        }
        if out.is_empty() {
            return Err(Error::invalid("--sources", "no source given"));
        }
        Ok(out)
    }

    fn presence(self) -> f64 {
        match self {
            Source::Adt => 0.9,
            Source::Lab | Source::Ehr => 0.8,
        }
    }

    /// The source's patient id of person `i`: a bijection of the index, so no two persons
    /// share one.
    pub fn patient_id(self, i: u64) -> String {
        let m = 10_000_000;
        match self {
            Source::Adt => format!("A{:07}", (i.wrapping_mul(7_368_787) + 1_234_567) % m),
            Source::Lab => format!("L{:07}", (i.wrapping_mul(3_571_429) + 42) % m),
            Source::Ehr => format!("ehr-{:07}", (i.wrapping_mul(9_999_991) + 7) % m),
        }
    }
}

/// What `write_sources` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcesSummary {
    /// Persons in the cohort.
    pub persons: u64,
    /// Source patient records (rows of `truth.csv`).
    pub records: u64,
    /// Records with at least one demographic error.
    pub with_errors: u64,
    /// Files written, with their sizes.
    pub files: Vec<(PathBuf, u64)>,
}

/// The per-(person, source) stream.
fn rng(seed: u64, index: u64, src: Source) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..24].copy_from_slice(b"ward-mpi");
    key[24] = src as u8;
    ChaCha8Rng::from_seed(key)
}

/// Writes the cohort through `sources` into `out_dir`: `adt/adt.hl7`, `lab/lab.hl7`,
/// `ehr/*.ndjson`, and `truth.csv`.
///
/// # Errors
/// [`Error::Io`] naming the file that could not be written.
pub fn write_sources(
    opts: &SynthOptions,
    sources: &[Source],
    out_dir: &Path,
) -> Result<SourcesSummary> {
    let mut files: Vec<(Source, Vec<OutFile>)> = Vec::new();
    for s in sources {
        let dir = out_dir.join(s.name());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let f = match s {
            Source::Adt | Source::Lab => {
                vec![OutFile::create(dir.join(format!("{}.hl7", s.name())))?]
            }
            Source::Ehr => fhir::TYPES
                .iter()
                .map(|t| OutFile::create(dir.join(format!("{t}.ndjson"))))
                .collect::<Result<_>>()?,
        };
        files.push((*s, f));
    }
    let mut truth = OutFile::create(out_dir.join("truth.csv"))?;
    truth.write_all(b"record_id,source,person_id\n")?;
    let (mut records, mut with_errors) = (0u64, 0u64);
    let chunk = opts.chunk_size.max(1) as u64;
    let mut start = 0;
    while start < opts.patients {
        let end = (start + chunk).min(opts.patients);
        let rendered: Vec<Rendered> = (start..end)
            .into_par_iter()
            .map(|i| render_person(opts, sources, i))
            .collect();
        for r in rendered {
            for (src, id, errors) in &r.records {
                truth.write_all(format!("{id},{},{}\n", src.name(), r.person).as_bytes())?;
                records += 1;
                with_errors += u64::from(*errors);
            }
            for (src, parts) in r.bytes {
                if let Some((_, f)) = files.iter_mut().find(|(s, _)| *s == src) {
                    for (file, bytes) in f.iter_mut().zip(parts) {
                        file.write_all(&bytes)?;
                    }
                }
            }
        }
        start = end;
    }
    let mut out = Vec::new();
    for (_, f) in files {
        for file in f {
            out.push(file.finish()?);
        }
    }
    out.push(truth.finish()?);
    Ok(SourcesSummary {
        persons: opts.patients,
        records,
        with_errors,
        files: out,
    })
}

struct Rendered {
    person: String,
    /// (source, patient id, has an error).
    records: Vec<(Source, String, bool)>,
    bytes: Vec<(Source, Vec<Vec<u8>>)>,
}

fn render_person(opts: &SynthOptions, sources: &[Source], i: u64) -> Rendered {
    let base = generate_patient(opts, i);
    let person = format!("P{i:07}");
    let mut present: Vec<Source> = sources
        .iter()
        .copied()
        .filter(|s| rng(opts.seed, i, *s).random_bool(s.presence()))
        .collect();
    if present.is_empty() {
        present.push(sources[0]);
    }
    let adt_id = present
        .contains(&Source::Adt)
        .then(|| Source::Adt.patient_id(i));
    let mut records = Vec::new();
    let mut bytes = Vec::new();
    for src in present {
        let mut r = rng(opts.seed, i, src);
        // The presence draw came first in this stream; the errors follow.
        let _ = r.random_bool(src.presence());
        let id = src.patient_id(i);
        let mut t = retag(&base, &person, &id, src.name());
        let errors = add_errors(&mut t, &mut r);
        let carry_adt = |p: f64, r: &mut ChaCha8Rng| adt_id.clone().filter(|_| r.random_bool(p));
        let parts = match src {
            Source::Adt => vec![hl7v2::render_source(
                &t,
                &hl7v2::Hl7Source {
                    app: "ADT".into(),
                    authority: "ADT".into(),
                    extra_ids: Vec::new(),
                    adt: true,
                    oru: false,
                },
            )],
            Source::Lab => {
                let extra = carry_adt(0.4, &mut r)
                    .map(|a| vec![(a, "ADT".to_string())])
                    .unwrap_or_default();
                vec![hl7v2::render_source(
                    &t,
                    &hl7v2::Hl7Source {
                        app: "LAB".into(),
                        authority: "LAB".into(),
                        extra_ids: extra,
                        adt: false,
                        oru: true,
                    },
                )]
            }
            Source::Ehr => {
                let extra = carry_adt(0.3, &mut r)
                    .map(|a| vec![("urn:ward:synth:adt".to_string(), a)])
                    .unwrap_or_default();
                fhir::render_source(&t, "urn:ward:synth:ehr", &extra).to_vec()
            }
        };
        // A source that has nothing to send about the person (a lab without a result for
        // them) never heard of them: no record, and none in the truth.
        if parts.iter().all(Vec::is_empty) {
            continue;
        }
        records.push((src, id, errors));
        bytes.push((src, parts));
    }
    Rendered {
        person,
        records,
        bytes,
    }
}

/// The cohort's rows of one person as source `prefix` holds them: patient id `id`, record
/// ids prefixed.
fn retag(base: &CuratedTables, person: &str, id: &str, prefix: &str) -> CuratedTables {
    let mut t = base.clone();
    let rid = |s: &mut String| *s = format!("{prefix}-{s}");
    let pid = |s: &mut String| {
        if s == person {
            *s = id.to_string();
        }
    };
    for r in &mut t.patients {
        pid(&mut r.patient_id);
    }
    for r in &mut t.encounters {
        pid(&mut r.patient_id);
        rid(&mut r.encounter_id);
    }
    for r in &mut t.observations {
        pid(&mut r.patient_id);
        rid(&mut r.observation_id);
        if let Some(e) = r.encounter_id.as_mut() {
            rid(e);
        }
    }
    for r in &mut t.conditions {
        pid(&mut r.patient_id);
        rid(&mut r.condition_id);
        if let Some(e) = r.encounter_id.as_mut() {
            rid(e);
        }
    }
    for r in &mut t.procedures {
        pid(&mut r.patient_id);
        rid(&mut r.procedure_id);
        if let Some(e) = r.encounter_id.as_mut() {
            rid(e);
        }
    }
    for r in &mut t.medications {
        pid(&mut r.patient_id);
        rid(&mut r.medication_id);
        if let Some(e) = r.encounter_id.as_mut() {
            rid(e);
        }
    }
    for r in &mut t.care_team {
        pid(&mut r.patient_id);
    }
    t
}

/// Applies this record's registration errors to every version of its patients rows;
/// returns whether it has any.
fn add_errors(t: &mut CuratedTables, r: &mut ChaCha8Rng) -> bool {
    let Some(first) = t.patients.first().cloned() else {
        return false;
    };
    let mut p = first.clone();
    if r.random_bool(0.08) {
        if let Some(nick) = p.given_name.as_deref().and_then(nickname) {
            p.given_name = Some(nick);
        }
    }
    if r.random_bool(0.05) {
        p.family_name = p.family_name.as_deref().map(|f| misspell(f, r));
    }
    if r.random_bool(0.03) {
        p.birth_date = p.birth_date.map(transpose);
    }
    if r.random_bool(0.05) {
        p.zip = None;
    }
    if r.random_bool(0.02) {
        p.sex = None;
    }
    if r.random_bool(0.01) {
        p.birth_date = None;
    }
    if r.random_bool(0.01) {
        p.given_name = None;
    }
    let changed = p.given_name != first.given_name
        || p.family_name != first.family_name
        || p.birth_date != first.birth_date
        || p.zip != first.zip
        || p.sex != first.sex;
    for row in &mut t.patients {
        row.given_name.clone_from(&p.given_name);
        row.family_name.clone_from(&p.family_name);
        row.birth_date = p.birth_date;
        row.zip.clone_from(&p.zip);
        row.sex.clone_from(&p.sex);
    }
    changed
}

/// A nickname of a formal given name (the first in `mpi::NICKNAMES`), written capitalised.
fn nickname(given: &str) -> Option<String> {
    let g = given.to_ascii_lowercase();
    let (nick, _) = crate::mpi::NICKNAMES.iter().find(|(_, f)| *f == g)?;
    let mut c = nick.chars();
    let first = c.next()?.to_ascii_uppercase();
    Some(std::iter::once(first).chain(c).collect())
}

/// Two adjacent letters swapped, one dropped, or one doubled (never the first letter, which
/// registration clerks rarely get wrong).
fn misspell(name: &str, r: &mut ChaCha8Rng) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() < 3 {
        return name.to_string();
    }
    let k = r.random_range(1..chars.len() - 1);
    let mut out = chars.clone();
    match r.random_range(0..3) {
        0 => out.swap(k, k + 1),
        1 => {
            out.remove(k);
        }
        _ => out.insert(k, chars[k]),
    }
    let s: String = out.into_iter().collect();
    if s == name {
        // Swapping two equal letters changes nothing: drop one instead.
        let mut c = chars;
        c.remove(k);
        return c.into_iter().collect();
    }
    s
}

/// Transposed digits: the day's two digits, else day and month, else the year's last two.
fn transpose(d: NaiveDate) -> NaiveDate {
    let (y, m, day) = (d.year(), d.month(), d.day());
    let swapped_day = (day % 10) * 10 + day / 10;
    if swapped_day != day {
        if let Some(x) = NaiveDate::from_ymd_opt(y, m, swapped_day) {
            return x;
        }
    }
    if day != m {
        if let Some(x) = NaiveDate::from_ymd_opt(y, day, m) {
            return x;
        }
    }
    let yy = y % 100;
    let swapped_year = y - yy + (yy % 10) * 10 + yy / 10;
    NaiveDate::from_ymd_opt(swapped_year, m, day).unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpositions_change_the_date() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).expect("date");
        assert_eq!(transpose(d(1957, 3, 12)), d(1957, 3, 21));
        // 31 → 13 is no day: day and month swap.
        assert_eq!(transpose(d(1957, 3, 31)), d(1957, 3, 13));
        // 22 reads the same both ways and there is no month 22: the year's digits swap.
        assert_eq!(transpose(d(1957, 3, 22)), d(1975, 3, 22));
        assert_eq!(transpose(d(1957, 12, 22)), d(1975, 12, 22));
    }

    #[test]
    fn source_ids_do_not_collide() {
        let ids: std::collections::BTreeSet<String> = (0..20_000)
            .flat_map(|i| [Source::Adt, Source::Lab, Source::Ehr].map(|s| s.patient_id(i)))
            .collect();
        assert_eq!(ids.len(), 60_000);
    }

    #[test]
    fn nicknames_and_misspellings() {
        assert_eq!(nickname("Robert").as_deref(), Some("Bob"));
        assert_eq!(nickname("Zebulon"), None);
        let mut r = ChaCha8Rng::from_seed([7; 32]);
        for _ in 0..50 {
            let m = misspell("Johnson", &mut r);
            assert_ne!(m, "Johnson");
            assert!(m.starts_with('J'));
        }
    }
}
