//! HL7 v2.5.1 messages: ADT for encounters, ORU^R01 for labs, one file per chunk.
//!
//! Per encounter: on arrival an A01 (inpatient) or A04 (ED, clinic) with PV1-44, at
//! discharge an A03 with PV1-45 and PV1-36; MSH-7 = EVN-2 = the row's `known_at`. Per lab
//! draw an ORU^R01 when its results arrive (OBR-3 = draw id, OBX-3 = LOINC, OBX-11 `F`),
//! and for each corrected result a further ORU^R01 with OBX-11 `C` at the correction time.
//! A death learnt after the patient left (no visit message carries it) is an A08.
//! A patient's messages are in `known_at` order; patients follow each other in index
//! order. Segments end with CR, the standard segment terminator.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rayon::prelude::*;

use super::vocab;
use super::{ChunkWriter, OutFile};
use crate::curated::{encounter_class, CuratedTables, Encounter, Observation, Patient};
use crate::error::Result;

/// The writer of `--format hl7v2`.
pub(crate) struct Hl7Writer {
    dir: PathBuf,
    files: Vec<(PathBuf, u64)>,
}

impl Hl7Writer {
    pub(crate) fn new(dir: &Path) -> Self {
        Hl7Writer {
            dir: dir.to_path_buf(),
            files: Vec::new(),
        }
    }
}

/// HL7 `TS`/`DTM` with seconds and an explicit UTC offset.
fn dtm(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S+0000").to_string()
}

/// Escapes the delimiters (`|^~\&`) in a field value, HL7 2.5.1 section 2.7.
fn esc(s: &str) -> String {
    if !s.contains(['|', '^', '~', '\\', '&', '\r', '\n']) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '~' => out.push_str("\\R\\"),
            '\\' => out.push_str("\\E\\"),
            '&' => out.push_str("\\T\\"),
            '\r' | '\n' => out.push_str("\\X0D\\"),
            _ => out.push(c),
        }
    }
    out
}

/// A segment from its fields (field 1 first); empty trailing fields are dropped.
fn segment(name: &str, fields: &[String]) -> String {
    let last = fields
        .iter()
        .rposition(|f| !f.is_empty())
        .map_or(0, |i| i + 1);
    let mut s = String::from(name);
    for f in &fields[..last] {
        s.push('|');
        s.push_str(f);
    }
    s.push('\r');
    s
}

/// How a source writes its messages: the sending application, the assigning authority of
/// PID-3, further PID-3 identifiers (value, authority), and which messages it sends.
/// `--format hl7v2` is [`Hl7Source::default`]; `ward synth --sources` (`super::sources`)
/// writes an ADT feed and a lab feed with their own.
#[derive(Debug, Clone)]
pub(crate) struct Hl7Source {
    pub(crate) app: String,
    pub(crate) authority: String,
    pub(crate) extra_ids: Vec<(String, String)>,
    pub(crate) adt: bool,
    pub(crate) oru: bool,
}

impl Default for Hl7Source {
    fn default() -> Self {
        Hl7Source {
            app: "WARD-SYNTH".into(),
            authority: "WARD".into(),
            extra_ids: Vec::new(),
            adt: true,
            oru: true,
        }
    }
}

fn msh(at: DateTime<Utc>, kind: &str, control: &str, src: &Hl7Source) -> String {
    format!(
        "MSH|^~\\&|{}|WARD|WARD|WARD|{}||{kind}|{}|P|2.5.1\r",
        esc(&src.app),
        dtm(at),
        esc(control)
    )
}

/// PID as the patient was known at `at`: the death (PID-29, PID-30) only once known.
fn pid(patients: &[Patient], at: DateTime<Utc>, src: &Hl7Source) -> String {
    let current = patients
        .iter()
        .rfind(|p| p.meta.known_at <= at)
        .or(patients.first());
    let Some(p) = current else {
        return String::new();
    };
    let mut f = vec![String::new(); 30];
    f[0] = "1".into();
    f[2] = format!("{}^^^{}^MR", esc(&p.patient_id), esc(&src.authority));
    for (value, authority) in &src.extra_ids {
        f[2].push_str(&format!("~{}^^^{}^MR", esc(value), esc(authority)));
    }
    f[4] = format!(
        "{}^{}",
        esc(p.family_name.as_deref().unwrap_or("")),
        esc(p.given_name.as_deref().unwrap_or(""))
    );
    f[6] = p
        .birth_date
        .map(|d| d.format("%Y%m%d").to_string())
        .unwrap_or_default();
    f[7] = match p.sex.as_deref() {
        Some("female") => "F",
        Some("male") => "M",
        Some("other") => "O",
        _ => "U",
    }
    .into();
    if let Some(z) = &p.zip {
        f[10] = format!("^^^^{}", esc(z));
    }
    if let Some(d) = p.death_time {
        f[28] = dtm(d);
        f[29] = "Y".into();
    }
    segment("PID", &f)
}

fn xcn(id: &str) -> String {
    let (family, given) = vocab::clinician_name(id);
    format!("{}^{family}^{given}", esc(id))
}

/// PV1 of an encounter version; `full` adds the discharge fields (A03).
fn pv1(e: &Encounter, attending: Option<&str>, full: bool) -> String {
    let mut f = vec![String::new(); 45];
    f[0] = "1".into();
    f[1] = match e.class.as_str() {
        encounter_class::INPATIENT => "I",
        encounter_class::EMERGENCY => "E",
        _ => "O",
    }
    .into();
    if let Some(kind) = &e.admission_type {
        f[3] = match kind.as_str() {
            "emergency" => "E",
            "urgent" => "U",
            _ => "R",
        }
        .into();
        f[13] = if kind == "elective" { "1" } else { "7" }.into();
    }
    if let Some(a) = attending {
        f[6] = xcn(a);
    }
    if let Some((_, code, _)) = e.service.as_deref().and_then(vocab::service_by_name) {
        f[9] = code.into();
    }
    f[18] = esc(&e.encounter_id);
    f[43] = dtm(e.admit_time);
    if full {
        if let Some((_, _, ub)) = e
            .discharge_disposition
            .as_deref()
            .and_then(vocab::disposition_by_name)
        {
            f[35] = ub.into();
        }
        if let Some(d) = e.discharge_time {
            f[44] = dtm(d);
        }
    }
    segment("PV1", &f)
}

/// The draw id of an observation id `<encounter>-L<nn>-<loinc>` (LOINC codes hold exactly
/// one hyphen, before the check digit).
fn draw_id(observation_id: &str) -> &str {
    let mut cut = observation_id.len();
    for _ in 0..2 {
        cut = observation_id[..cut].rfind('-').unwrap_or(0);
    }
    &observation_id[..cut]
}

fn abnormal_flag(analyte_code: &str, value: f64) -> &'static str {
    let Some(lab) = vocab::LABS.iter().find(|l| l.code.0 == analyte_code) else {
        return "";
    };
    let Some((lo, hi)) = lab.reference.split_once('-') else {
        return "";
    };
    match (lo.parse::<f64>(), hi.parse::<f64>()) {
        (Ok(lo), _) if value < lo => "L",
        (_, Ok(hi)) if value > hi => "H",
        _ => "N",
    }
}

fn obx(set: usize, o: &Observation) -> String {
    let mut f = vec![String::new(); 14];
    f[0] = set.to_string();
    f[1] = if o.value_num.is_some() { "NM" } else { "ST" }.into();
    f[2] = format!(
        "{}^{}^LN",
        esc(&o.code.code),
        esc(o.code.display.as_deref().unwrap_or(""))
    );
    let decimals = vocab::LABS
        .iter()
        .find(|l| l.code.0 == o.code.code)
        .map_or(2, |l| l.decimals as usize);
    match (o.value_num, &o.value_text) {
        (Some(v), _) => {
            f[4] = format!("{v:.decimals$}");
            f[7] = abnormal_flag(&o.code.code, v).into();
        }
        (None, Some(t)) => f[4] = esc(t),
        _ => {}
    }
    if let Some(u) = &o.unit {
        f[5] = format!("{0}^{0}^UCUM", esc(u));
    }
    if let Some(lab) = vocab::LABS.iter().find(|l| l.code.0 == o.code.code) {
        f[6] = lab.reference.into();
    }
    f[10] = if o.status.as_deref() == Some("corrected") {
        "C"
    } else {
        "F"
    }
    .into();
    f[13] = dtm(o.effective_time);
    segment("OBX", &f)
}

/// One patient's messages, in `known_at` order (ties in generation order).
fn render(p: &CuratedTables) -> Vec<u8> {
    render_source(p, &Hl7Source::default())
}

/// One patient's messages as source `src` sends them.
pub(crate) fn render_source(p: &CuratedTables, src: &Hl7Source) -> Vec<u8> {
    let mut msgs: Vec<(DateTime<Utc>, usize, String)> = Vec::new();
    let pd1 = p
        .care_team
        .iter()
        .find(|m| m.role.as_deref() == Some("primary"))
        .map(|m| format!("PD1||||{}\r", xcn(&m.clinician_id)))
        .unwrap_or_default();
    let adt_encounters: &[Encounter] = if src.adt { &p.encounters } else { &[] };
    let oru_observations: &[Observation] = if src.oru { &p.observations } else { &[] };
    for e in adt_encounters {
        let attending = p
            .care_team
            .iter()
            .find(|m| m.role.as_deref() == Some("attending") && m.valid_from == e.admit_time)
            .map(|m| m.clinician_id.as_str());
        let at = e.meta.known_at;
        let full = e.discharge_time.is_some();
        let event = match (full, e.class.as_str()) {
            (true, _) => "A03",
            (false, encounter_class::INPATIENT) => "A01",
            (false, _) => "A04",
        };
        let structure = if event == "A03" { "ADT_A03" } else { "ADT_A01" };
        let mut m = msh(
            at,
            &format!("ADT^{event}^{structure}"),
            &format!("{}-{event}", e.encounter_id),
            src,
        );
        m.push_str(&format!("EVN|{event}|{}\r", dtm(at)));
        m.push_str(&pid(&p.patients, at, src));
        m.push_str(&pd1);
        m.push_str(&pv1(e, attending, full));
        msgs.push((at, msgs.len(), m));
    }
    // Group results into messages: one per (draw, known_at, status).
    let mut groups: Vec<(DateTime<Utc>, &str, bool, Vec<&Observation>)> = Vec::new();
    for o in oru_observations {
        let corrected = o.status.as_deref() == Some("corrected");
        let draw = draw_id(&o.observation_id);
        let at = o.meta.known_at;
        match groups
            .iter_mut()
            .find(|g| g.0 == at && g.1 == draw && g.2 == corrected)
        {
            Some(g) => g.3.push(o),
            None => groups.push((at, draw, corrected, vec![o])),
        }
    }
    let encounters = &p.encounters;
    let mut corrections: Vec<&str> = Vec::new();
    for (at, draw, corrected, results) in groups {
        let first = results[0];
        let suffix = if corrected {
            corrections.push(draw);
            format!("C{}", corrections.iter().filter(|d| **d == draw).count())
        } else {
            "R".into()
        };
        let mut m = msh(at, "ORU^R01^ORU_R01", &format!("{draw}-{suffix}"), src);
        m.push_str(&pid(&p.patients, at, src));
        if let Some(e) = encounters
            .iter()
            .find(|e| Some(&e.encounter_id) == first.encounter_id.as_ref())
        {
            let mut f = vec![String::new(); 19];
            f[0] = "1".into();
            f[1] = match e.class.as_str() {
                encounter_class::INPATIENT => "I",
                encounter_class::EMERGENCY => "E",
                _ => "O",
            }
            .into();
            f[18] = esc(&e.encounter_id);
            m.push_str(&segment("PV1", &f));
        }
        let mut obr = vec![String::new(); 25];
        obr[0] = "1".into();
        obr[2] = format!("{}^WARD-LAB", esc(draw));
        obr[3] = "WARDLAB^Laboratory panel^L".into();
        obr[6] = dtm(first.effective_time);
        obr[21] = dtm(at);
        obr[23] = "LAB".into();
        obr[24] = if corrected { "C" } else { "F" }.into();
        m.push_str(&segment("OBR", &obr));
        for (i, o) in results.iter().enumerate() {
            m.push_str(&obx(i + 1, o));
        }
        msgs.push((at, msgs.len(), m));
    }
    // A change to the patient that no other message carries (a death reported after the
    // patient left) goes out as an A08 (update patient information) when it became known,
    // with the PV1 of the latest visit as it then stood, which ADT_A01 requires.
    for (version, r) in p.patients.iter().enumerate().skip(1).filter(|_| src.adt) {
        let at = r.meta.known_at;
        if msgs.iter().any(|m| m.0 == at) {
            continue;
        }
        let Some(e) = p.encounters.iter().rfind(|e| e.meta.known_at <= at) else {
            continue;
        };
        let attending = p
            .care_team
            .iter()
            .find(|m| m.role.as_deref() == Some("attending") && m.valid_from == e.admit_time)
            .map(|m| m.clinician_id.as_str());
        let control = format!("{}-A08-{}", r.patient_id, version + 1);
        let mut m = msh(at, "ADT^A08^ADT_A01", &control, src);
        m.push_str(&format!("EVN|A08|{}\r", dtm(at)));
        m.push_str(&pid(&p.patients, at, src));
        m.push_str(&pd1);
        m.push_str(&pv1(e, attending, e.discharge_time.is_some()));
        msgs.push((at, msgs.len(), m));
    }
    msgs.sort_by_key(|m| (m.0, m.1));
    let mut out = Vec::with_capacity(msgs.iter().map(|m| m.2.len()).sum());
    for (_, _, m) in msgs {
        out.extend(m.into_bytes());
    }
    out
}

impl ChunkWriter for Hl7Writer {
    fn write_chunk(&mut self, index: usize, chunk: Vec<CuratedTables>) -> Result<()> {
        let rendered: Vec<Vec<u8>> = chunk.par_iter().map(render).collect();
        let mut file = OutFile::create(self.dir.join(format!("messages-{index:05}.hl7")))?;
        for bytes in rendered {
            file.write_all(&bytes)?;
        }
        self.files.push(file.finish()?);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<(PathBuf, u64)>> {
        Ok(self.files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate_patient, SynthOptions};

    #[test]
    fn draw_ids_strip_the_loinc_code() {
        assert_eq!(draw_id("E0000001-004-L02-718-7"), "E0000001-004-L02");
        assert_eq!(draw_id("E0000001-004-L02-2951-2"), "E0000001-004-L02");
    }

    #[test]
    fn delimiters_are_escaped() {
        assert_eq!(esc("a|b^c~d\\e&f"), "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f");
    }

    #[test]
    fn messages_start_with_msh_and_follow_knowledge_time() {
        let opts = SynthOptions::default();
        for i in 0..30 {
            let text = String::from_utf8(render(&generate_patient(&opts, i))).expect("utf8");
            assert!(text.starts_with("MSH|^~\\&|"));
            assert!(!text.contains('\n'));
            let times: Vec<&str> = text
                .split('\r')
                .filter(|s| s.starts_with("MSH|"))
                .map(|s| s.split('|').nth(6).expect("MSH-7"))
                .collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        }
    }

    #[test]
    fn every_encounter_is_admitted_then_discharged() {
        let opts = SynthOptions::default();
        let t = generate_patient(&opts, 3);
        let text = String::from_utf8(render(&t)).expect("utf8");
        let finals = t
            .encounters
            .iter()
            .filter(|e| e.discharge_time.is_some())
            .count();
        assert_eq!(text.matches("|ADT^A03^ADT_A03|").count(), finals);
        let arrivals =
            text.matches("|ADT^A01^ADT_A01|").count() + text.matches("|ADT^A04^ADT_A01|").count();
        assert_eq!(arrivals, finals);
    }
}
