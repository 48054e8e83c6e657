//! The synthetic cohort generator: determinism across thread counts, the distributions
//! docs/synth.md states, and well-formed output in every format.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::Duration;
use ward::curated::{CuratedTables, Table};
use ward::synth::{self, SynthFormat, SynthOptions};

/// Every file under `dir` (relative path and bytes), sorted by path.
fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        out.insert(name, std::fs::read(&path).expect("read file"));
    }
    out
}

fn run_with_threads(threads: usize, opts: &SynthOptions, format: SynthFormat, dir: &Path) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    pool.install(|| synth::write(opts, format, dir, None))
        .expect("write");
}

#[test]
fn same_bytes_with_one_and_four_threads_in_every_format() {
    let opts = SynthOptions {
        patients: 150,
        seed: 7,
        chunk_size: 40,
        ..SynthOptions::default()
    };
    for format in SynthFormat::ALL {
        let one = tempfile::tempdir().expect("tempdir");
        let four = tempfile::tempdir().expect("tempdir");
        run_with_threads(1, &opts, format, one.path());
        run_with_threads(4, &opts, format, four.path());
        let (a, b) = (read_tree(one.path()), read_tree(four.path()));
        assert!(!a.is_empty(), "{format}: no files");
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{format}"
        );
        for (name, bytes) in &a {
            assert!(
                bytes == &b[name],
                "{format}: {name} differs between 1 and 4 threads"
            );
        }
    }
}

#[test]
fn a_different_seed_gives_a_different_cohort() {
    let a = SynthOptions::default();
    let b = SynthOptions {
        seed: a.seed + 1,
        ..a.clone()
    };
    let differing = (0..20)
        .filter(|i| synth::generate_patient(&a, *i) != synth::generate_patient(&b, *i))
        .count();
    assert_eq!(differing, 20);
}

/// Charlson comorbidity index from ICD-10-CM codes: the Quan et al. (2005) categories the
/// generator uses, with the Charlson weights and the usual hierarchy (complicated diabetes
/// over uncomplicated, metastatic over malignancy, severe liver over mild). A reference
/// written here from the paper, independent of the generator's tables.
fn charlson(codes: &[&str]) -> u32 {
    let has = |prefixes: &[&str]| {
        codes
            .iter()
            .any(|c| prefixes.iter().any(|p| c.starts_with(p)))
    };
    let mi = has(&["I21", "I22", "I25.2"]);
    let chf = has(&[
        "I50", "I11.0", "I13.0", "I13.2", "I42", "I43", "I09.9", "I25.5", "P29.0",
    ]);
    let pvd = has(&[
        "I70", "I71", "I73.1", "I73.8", "I73.9", "I77.1", "I79.0", "K55.1",
    ]);
    let cvd = has(&["G45", "G46", "H34.0", "I6"]);
    let dementia = has(&["F00", "F01", "F02", "F03", "G30", "F05.1", "G31.1"]);
    let copd = has(&["J40", "J41", "J42", "J43", "J44", "J45", "J46", "J47", "J6"]);
    let rheum = has(&[
        "M05", "M06", "M31.5", "M32", "M33", "M34", "M35.1", "M35.3", "M36.0",
    ]);
    let pud = has(&["K25", "K26", "K27", "K28"]);
    let mild_liver = has(&[
        "B18", "K70.0", "K70.1", "K70.2", "K70.3", "K70.9", "K73", "K74", "K76.0", "K76.2",
        "K76.3", "K76.4", "K76.8", "K76.9",
    ]);
    let dm = has(&[
        "E10.0", "E10.1", "E10.6", "E10.8", "E10.9", "E11.0", "E11.1", "E11.6", "E11.8", "E11.9",
    ]);
    let dm_c = has(&[
        "E10.2", "E10.3", "E10.4", "E10.5", "E10.7", "E11.2", "E11.3", "E11.4", "E11.5", "E11.7",
    ]);
    let hemi = has(&["G81", "G82", "G04.1", "G11.4", "G80.1", "G80.2", "G83"]);
    let renal = has(&[
        "N18", "N19", "N05.2", "N05.3", "N05.4", "N05.5", "N05.6", "N05.7", "N25.0", "I12.0",
        "I13.1", "N03.2", "Z49", "Z94.0", "Z99.2",
    ]);
    let cancer = codes.iter().any(|c| {
        c.starts_with('C')
            && !["C77", "C78", "C79", "C80"]
                .iter()
                .any(|p| c.starts_with(p))
    });
    let severe_liver = has(&[
        "I85", "I86.4", "I98.2", "K70.4", "K71.1", "K72.1", "K72.9", "K76.5", "K76.6", "K76.7",
    ]);
    let metastatic = has(&["C77", "C78", "C79", "C80"]);
    let hiv = has(&["B20", "B21", "B22", "B24"]);
    let w = |b: bool, n: u32| if b { n } else { 0 };
    w(mi, 1)
        + w(chf, 1)
        + w(pvd, 1)
        + w(cvd, 1)
        + w(dementia, 1)
        + w(copd, 1)
        + w(rheum, 1)
        + w(pud, 1)
        + w(mild_liver && !severe_liver, 1)
        + w(dm && !dm_c, 1)
        + w(dm_c, 2)
        + w(hemi, 2)
        + w(renal, 2)
        + w(cancer && !metastatic, 2)
        + w(severe_liver, 3)
        + w(metastatic, 6)
        + w(hiv, 6)
}

struct Discharge {
    patient: String,
    admit: i64,
    discharge: i64,
    charlson: u32,
}

#[test]
fn distributions_hold_for_ten_thousand_patients() {
    let opts = SynthOptions {
        patients: 10_000,
        ..SynthOptions::default()
    };
    let began = std::time::Instant::now();
    let cohort = synth::generate_range(&opts, 0..opts.patients);
    eprintln!("generated 10,000 patients in {:?}", began.elapsed());
    let mut all = CuratedTables::default();
    for p in cohort {
        all.extend(p);
    }
    let end = opts.end.timestamp();
    let rows: Vec<String> = Table::ALL
        .iter()
        .map(|t| format!("{} {}", t.name(), all.len(*t)))
        .collect();
    eprintln!("rows: {}", rows.join(", "));

    // Age and sex mix (the current patient rows).
    let patients: Vec<_> = all
        .patients
        .iter()
        .filter(|p| p.meta.retracted_at.is_none())
        .collect();
    assert_eq!(patients.len(), 10_000);
    let female = patients
        .iter()
        .filter(|p| p.sex.as_deref() == Some("female"))
        .count() as f64
        / 1e4;
    assert!((0.48..=0.54).contains(&female), "female share {female}");
    let start_date = opts.start.date_naive();
    let age = |p: &&ward::curated::Patient| {
        (start_date - p.birth_date.expect("birth date")).num_days() as f64 / 365.25
    };
    let old = patients.iter().filter(|p| age(p) >= 65.0).count() as f64 / 1e4;
    let young = patients.iter().filter(|p| age(p) < 18.0).count() as f64 / 1e4;
    assert!((0.28..=0.38).contains(&old), "share 65+ {old}");
    assert!((0.09..=0.15).contains(&young), "share under 18 {young}");
    let dead = patients.iter().filter(|p| p.death_time.is_some()).count() as f64 / 1e4;
    assert!((0.03..=0.20).contains(&dead), "share dead {dead}");

    // Inpatient stays as finally known, with the Charlson index of the codes on the stay.
    let mut codes: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in &all.conditions {
        assert_eq!(c.code.system, "ICD10CM");
        if let Some(e) = &c.encounter_id {
            codes
                .entry(e.as_str())
                .or_default()
                .push(c.code.code.as_str());
        }
    }
    let mut stays: Vec<Discharge> = all
        .encounters
        .iter()
        .filter(|e| e.class == "inpatient" && e.meta.retracted_at.is_none())
        .map(|e| Discharge {
            patient: e.patient_id.clone(),
            admit: e.admit_time.timestamp(),
            discharge: e.discharge_time.expect("discharged").timestamp(),
            charlson: charlson(codes.get(e.encounter_id.as_str()).map_or(&[][..], |v| v)),
        })
        .collect();
    stays.sort_by(|a, b| (&a.patient, a.admit).cmp(&(&b.patient, b.admit)));
    assert!(stays.len() > 1_000, "{} stays", stays.len());

    let mut los: Vec<f64> = stays
        .iter()
        .map(|s| (s.discharge - s.admit) as f64 / 86_400.0)
        .collect();
    los.sort_by(f64::total_cmp);
    let median = los[los.len() / 2];
    assert!((3.0..=6.0).contains(&median), "median LOS {median} days");

    let expired: std::collections::HashSet<(String, i64)> = all
        .encounters
        .iter()
        .filter(|e| e.discharge_disposition.as_deref() == Some("exp"))
        .map(|e| (e.patient_id.clone(), e.admit_time.timestamp()))
        .collect();
    let window = Duration::days(30).num_seconds();
    let mut by_band: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    let (mut index, mut readmitted) = (0u32, 0u32);
    for (i, s) in stays.iter().enumerate() {
        if s.discharge + window > end || expired.contains(&(s.patient.clone(), s.admit)) {
            continue;
        }
        let next = stays.get(i + 1).filter(|n| n.patient == s.patient);
        let hit = next.is_some_and(|n| n.admit > s.discharge && n.admit <= s.discharge + window);
        index += 1;
        readmitted += u32::from(hit);
        let band = by_band.entry(s.charlson.min(3)).or_default();
        band.0 += 1;
        band.1 += u32::from(hit);
    }
    let rate = f64::from(readmitted) / f64::from(index);
    eprintln!("{index} index discharges, 30-day readmission {rate:.3}, by Charlson band {by_band:?}, median LOS {median:.2}");
    assert!(
        (0.10..=0.20).contains(&rate),
        "30-day readmission rate {rate}"
    );
    let band_rate = |b: u32| {
        let (n, k) = by_band[&b];
        f64::from(k) / f64::from(n)
    };
    assert!(
        band_rate(3) > 1.5 * band_rate(0),
        "Charlson 3+ readmitted at {} vs Charlson 0 at {}",
        band_rate(3),
        band_rate(0)
    );

    // Labs: codes, units, hard ranges; late and corrected results.
    let bounds: HashMap<&str, (&str, f64, f64)> = [
        ("718-7", ("g/dL", 4.0, 20.0)),
        ("2951-2", ("mmol/L", 110.0, 165.0)),
        ("2823-3", ("mmol/L", 2.0, 7.5)),
        ("2160-0", ("mg/dL", 0.3, 15.0)),
        ("2345-7", ("mg/dL", 40.0, 600.0)),
        ("6690-2", ("10*3/uL", 0.5, 50.0)),
        ("777-3", ("10*3/uL", 10.0, 900.0)),
    ]
    .into_iter()
    .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let (mut late, mut corrected) = (0usize, 0usize);
    for o in &all.observations {
        assert_eq!(o.code.system, "LOINC");
        let (unit, lo, hi) = bounds[o.code.code.as_str()];
        assert_eq!(o.unit.as_deref(), Some(unit), "{}", o.code.code);
        let v = o.value_num.expect("numeric");
        assert!(
            (lo..=hi).contains(&v),
            "{} = {v} outside [{lo}, {hi}]",
            o.code.code
        );
        *seen.entry(o.code.code.as_str()).or_default() += 1;
        if o.meta.known_at - o.effective_time > Duration::hours(6)
            && o.status.as_deref() == Some("final")
        {
            late += 1;
        }
        if o.status.as_deref() == Some("corrected") {
            corrected += 1;
        }
    }
    assert_eq!(seen.len(), bounds.len());
    let n = all.observations.len() as f64;
    let (late, corrected) = (late as f64 / n, corrected as f64 / n);
    eprintln!("female {female:.3}, 65+ {old:.3}, under 18 {young:.3}, dead {dead:.3}, late {late:.3}, corrected {corrected:.4}");
    assert!((0.03..=0.25).contains(&late), "late share {late}");
    assert!(
        (0.005..=0.03).contains(&corrected),
        "corrected share {corrected}"
    );

    // Sicker patients have lower discharge hemoglobin: the HOSPITAL components carry signal.
    let mut hb_by_band: BTreeMap<bool, (f64, f64)> = BTreeMap::new();
    let charlson_of: HashMap<&str, u32> = all
        .encounters
        .iter()
        .filter(|e| e.class == "inpatient" && e.meta.retracted_at.is_none())
        .map(|e| {
            (
                e.encounter_id.as_str(),
                charlson(codes.get(e.encounter_id.as_str()).map_or(&[][..], |v| v)),
            )
        })
        .collect();
    for o in all.observations.iter().filter(|o| o.code.code == "718-7") {
        if let Some(c) = o.encounter_id.as_deref().and_then(|e| charlson_of.get(e)) {
            let acc = hb_by_band.entry(*c >= 3).or_default();
            acc.0 += o.value_num.unwrap_or(0.0);
            acc.1 += 1.0;
        }
    }
    let mean = |b: bool| hb_by_band[&b].0 / hb_by_band[&b].1;
    assert!(
        mean(true) + 0.5 < mean(false),
        "hemoglobin sick {} vs well {}",
        mean(true),
        mean(false)
    );

    // Every curated table the generator makes has rows (it makes no consent decisions,
    // immunizations, allergies, reports or administrations); every Charlson weight class is
    // coded somewhere.
    let made = [
        Table::Patients,
        Table::Encounters,
        Table::Observations,
        Table::Conditions,
        Table::Procedures,
        Table::Medications,
        Table::CareTeam,
    ];
    for t in made {
        assert!(all.len(t) > 0, "{} is empty", t.name());
    }
    let all_codes: Vec<&str> = all
        .conditions
        .iter()
        .map(|c| c.code.code.as_str())
        .collect();
    for code in [
        "B20", "C7", "K76.6", "N18", "E11.22", "I50", "C", "F03", "G81", "M06", "K25", "I73",
        "I25.2", "J44",
    ] {
        assert!(all_codes.iter().any(|c| c.starts_with(code)), "no {code}");
    }
    let services: std::collections::BTreeSet<_> = all
        .encounters
        .iter()
        .filter_map(|e| e.service.as_deref())
        .collect();
    assert!(
        services.contains("oncology") && services.contains("cardiology"),
        "{services:?}"
    );
    let kinds: std::collections::BTreeSet<_> = all
        .encounters
        .iter()
        .filter_map(|e| e.admission_type.as_deref())
        .collect();
    assert_eq!(
        kinds,
        ["elective", "emergency", "urgent"].into_iter().collect()
    );
}

fn small() -> SynthOptions {
    SynthOptions {
        patients: 60,
        seed: 11,
        chunk_size: 25,
        ..SynthOptions::default()
    }
}

fn expected(opts: &SynthOptions) -> CuratedTables {
    let mut all = CuratedTables::default();
    for p in synth::generate_range(opts, 0..opts.patients) {
        all.extend(p);
    }
    all
}

#[test]
fn parquet_reads_back_to_the_generated_rows() {
    let opts = small();
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = synth::write(&opts, SynthFormat::Parquet, dir.path(), None).expect("write");
    let want = expected(&opts);
    assert_eq!(summary.files.len(), Table::ALL.len());
    for table in Table::ALL {
        assert_eq!(summary.rows[&table], want.len(table) as u64);
        let file = std::fs::File::open(dir.path().join(format!("{}.parquet", table.name())))
            .expect("open");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        let batches: Vec<_> = reader.map(|b| b.expect("batch")).collect();
        let got = arrow::compute::concat_batches(&table.schema(), &batches).expect("concat");
        let want = want.to_batch(table).expect("batch");
        assert_eq!(
            got.schema().fields(),
            want.schema().fields(),
            "{}",
            table.name()
        );
        assert_eq!(got.columns(), want.columns(), "{}", table.name());
    }
}

#[test]
fn curated_csv_has_the_schema_columns() {
    let opts = small();
    let dir = tempfile::tempdir().expect("tempdir");
    synth::write(&opts, SynthFormat::Csv, dir.path(), None).expect("write");
    let want = expected(&opts);
    for table in Table::ALL {
        let text = std::fs::read_to_string(dir.path().join(format!("{}.csv", table.name())))
            .expect("read");
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = r
            .headers()
            .expect("header")
            .iter()
            .map(str::to_string)
            .collect();
        let names: Vec<String> = table
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(header, names);
        assert_eq!(r.records().count(), want.len(table), "{}", table.name());
    }
    let enc = std::fs::read_to_string(dir.path().join("encounters.csv")).expect("read");
    assert!(
        enc.lines()
            .nth(1)
            .is_some_and(|l| l.contains("T") && l.contains("Z,")),
        "times in ISO 8601 UTC"
    );
}

#[test]
fn synthea_csv_has_synthea_headers_and_current_rows() {
    let opts = small();
    let dir = tempfile::tempdir().expect("tempdir");
    synth::write(&opts, SynthFormat::Synthea, dir.path(), None).expect("write");
    let want = expected(&opts);
    let headers = [
        ("patients.csv", "Id,BIRTHDATE,DEATHDATE,SSN,DRIVERS,PASSPORT,PREFIX,FIRST,LAST,SUFFIX,MAIDEN,MARITAL,RACE,ETHNICITY,GENDER,BIRTHPLACE,ADDRESS,CITY,STATE,COUNTY,ZIP,LAT,LON,HEALTHCARE_EXPENSES,HEALTHCARE_COVERAGE", opts.patients as usize),
        ("encounters.csv", "Id,START,STOP,PATIENT,ORGANIZATION,PROVIDER,PAYER,ENCOUNTERCLASS,CODE,DESCRIPTION,BASE_ENCOUNTER_COST,TOTAL_CLAIM_COST,PAYER_COVERAGE,REASONCODE,REASONDESCRIPTION", want.encounters.iter().filter(|e| e.meta.retracted_at.is_none()).count()),
        ("conditions.csv", "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION", want.conditions.len()),
        ("observations.csv", "DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE", want.observations.iter().filter(|o| o.meta.retracted_at.is_none()).count()),
        ("procedures.csv", "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION,BASE_COST,REASONCODE,REASONDESCRIPTION", want.procedures.len()),
        ("medications.csv", "START,STOP,PATIENT,PAYER,ENCOUNTER,CODE,DESCRIPTION,BASE_COST,PAYER_COVERAGE,DISPENSES,TOTALCOST,REASONCODE,REASONDESCRIPTION", want.medications.len()),
    ];
    for (name, header, rows) in headers {
        let text = std::fs::read_to_string(dir.path().join(name)).expect("read");
        assert_eq!(text.lines().next(), Some(header), "{name}");
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let width = header.split(',').count();
        let mut n = 0;
        for rec in r.records() {
            assert_eq!(rec.expect("record").len(), width, "{name}");
            n += 1;
        }
        assert_eq!(n, rows, "{name}");
    }
}

#[test]
fn fhir_ndjson_lines_are_resources() {
    let opts = small();
    let dir = tempfile::tempdir().expect("tempdir");
    synth::write(&opts, SynthFormat::FhirNdjson, dir.path(), None).expect("write");
    let want = expected(&opts);
    let files = [
        ("Patient", want.patients.len()),
        ("Encounter", want.encounters.len()),
        ("Observation", want.observations.len()),
        ("Condition", want.conditions.len()),
        ("Procedure", want.procedures.len()),
        ("MedicationRequest", want.medications.len()),
    ];
    for (kind, rows) in files {
        let text =
            std::fs::read_to_string(dir.path().join(format!("{kind}.ndjson"))).expect("read");
        let mut n = 0;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            assert_eq!(v["resourceType"], kind);
            assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()));
            assert!(v["meta"]["lastUpdated"].is_string());
            n += 1;
        }
        assert_eq!(n, rows, "{kind}");
    }
    let obs = std::fs::read_to_string(dir.path().join("Observation.ndjson")).expect("read");
    let first: serde_json::Value =
        serde_json::from_str(obs.lines().next().expect("a line")).expect("json");
    assert_eq!(first["code"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(
        first["valueQuantity"]["system"],
        "http://unitsofmeasure.org"
    );
}

#[test]
fn hl7v2_files_hold_adt_and_oru_messages() {
    let opts = small();
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = synth::write(&opts, SynthFormat::Hl7v2, dir.path(), None).expect("write");
    assert_eq!(summary.files.len(), 3, "one file per chunk of 25");
    let want = expected(&opts);
    let (mut adt, mut a08, mut oru, mut obx) = (0, 0, 0, 0);
    for file in &summary.files {
        let text = std::fs::read_to_string(file).expect("read");
        assert!(text.starts_with("MSH|^~\\&|"), "{}", file.display());
        assert!(text.ends_with('\r') && !text.contains('\n'));
        for seg in text.split_terminator('\r') {
            let name = &seg[..3];
            assert!(
                ["MSH", "EVN", "PID", "PD1", "PV1", "OBR", "OBX"].contains(&name),
                "{seg}"
            );
            if name == "MSH" {
                let kind = seg.split('|').nth(8).expect("MSH-9");
                if kind == "ADT^A08^ADT_A01" {
                    a08 += 1;
                } else if kind.starts_with("ADT^") {
                    adt += 1;
                } else {
                    assert_eq!(kind, "ORU^R01^ORU_R01");
                    oru += 1;
                }
            }
            if name == "OBX" {
                obx += 1;
                let f: Vec<&str> = seg.split('|').collect();
                assert!(f[3].ends_with("^LN"), "{seg}");
                assert!(f[5].parse::<f64>().is_ok(), "{seg}");
                assert!(f[11] == "F" || f[11] == "C", "{seg}");
            }
        }
    }
    assert_eq!(adt, want.encounters.len());
    // A08 only for deaths learnt after the last visit message: at most one per death.
    let deaths = want
        .patients
        .iter()
        .filter(|p| p.death_time.is_some())
        .count();
    assert!(a08 <= deaths, "{a08} A08 for {deaths} deaths");
    assert_eq!(obx, want.observations.len());
    assert!(oru > 0);
}
