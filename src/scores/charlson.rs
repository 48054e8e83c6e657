//! The Charlson comorbidity index from ICD-10(-CM), ICD-9-CM and SNOMED CT diagnosis codes.
//!
//! Categories and codes follow Quan H, Sundararajan V, Halfon P, et al. "Coding algorithms for
//! defining comorbidities in ICD-9-CM and ICD-10 administrative data", Med Care
//! 2005;43(11):1130-9, Table 1: the ICD-10 column for ICD-10 and ICD-10-CM codes, the
//! "Enhanced ICD-9-CM" column for ICD-9-CM codes. Weights are Charlson's original 1987 weights
//! as used with Quan's coding. SNOMED CT has no published Charlson algorithm of the same
//! standing: [`SNOMED_CONCEPTS`] is a curated list of concepts, each placed in the category
//! whose ICD-10 codes Quan lists for it (see its documentation). `docs/scores.md` lists every
//! code prefix and concept, the hierarchy rules, and the ICD-10-CM translations added to
//! Quan's WHO ICD-10 list.
//!
//! The code system decides which table a code is read with, never the code's shape: codes of
//! different systems overlap as strings (SNOMED CT 428251008, history of appendectomy, starts
//! with ICD-9-CM 428, heart failure; ICD-10 V43.4 is a transport accident, ICD-9-CM V43.4 an
//! aortic graft), so a code is only matched against its own system's table, and a code whose
//! system is not one of the three counts for nothing.
//!
//! An ICD-10 code belongs to at most one category. Four ICD-9-CM codes belong to two, because
//! Quan's table lists them twice: 437.3 (cerebral aneurysm, nonruptured) is peripheral
//! vascular disease and, inside 430-438, cerebrovascular disease; 404.03, 404.13 and 404.93
//! (hypertensive heart and chronic kidney disease with heart failure and stage V or end-stage
//! renal disease) are congestive heart failure and renal disease. That is why
//! [`categories_of`] returns a set. The hierarchy rules are applied when the index is summed,
//! never when categories are recorded, so [`CharlsonResult::contains`] still answers "was mild
//! liver disease coded" for a patient with severe liver disease, whichever systems the two
//! codes came in.

use std::fmt;

use crate::curated::code_system;

mod snomed;

use snomed::snomed_index;
pub use snomed::{SnomedConcept, SNOMED_CONCEPTS};

/// The 17 Charlson categories of Quan et al. 2005, in the paper's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CharlsonCategory {
    /// Myocardial infarction (weight 1).
    MyocardialInfarction,
    /// Congestive heart failure (weight 1).
    CongestiveHeartFailure,
    /// Peripheral vascular disease (weight 1).
    PeripheralVascularDisease,
    /// Cerebrovascular disease (weight 1).
    CerebrovascularDisease,
    /// Dementia (weight 1).
    Dementia,
    /// Chronic pulmonary disease (weight 1).
    ChronicPulmonaryDisease,
    /// Rheumatic (connective tissue) disease (weight 1).
    RheumaticDisease,
    /// Peptic ulcer disease (weight 1).
    PepticUlcerDisease,
    /// Mild liver disease (weight 1; superseded by [`Self::SevereLiverDisease`]).
    MildLiverDisease,
    /// Diabetes without chronic complications (weight 1; superseded by
    /// [`Self::DiabetesWithComplications`]).
    DiabetesWithoutComplications,
    /// Diabetes with chronic complications (weight 2).
    DiabetesWithComplications,
    /// Hemiplegia or paraplegia (weight 2).
    HemiplegiaParaplegia,
    /// Renal disease (weight 2).
    RenalDisease,
    /// Any malignancy, including lymphoma and leukemia, except malignant neoplasm of skin
    /// (weight 2; superseded by [`Self::MetastaticSolidTumor`]).
    Malignancy,
    /// Moderate or severe liver disease (weight 3).
    SevereLiverDisease,
    /// Metastatic solid tumor (weight 6).
    MetastaticSolidTumor,
    /// AIDS/HIV (weight 6).
    AidsHiv,
}

impl CharlsonCategory {
    /// Every category, in the order of Quan et al. 2005 (and of [`CharlsonResult::present`]).
    pub const ALL: [CharlsonCategory; 17] = [
        CharlsonCategory::MyocardialInfarction,
        CharlsonCategory::CongestiveHeartFailure,
        CharlsonCategory::PeripheralVascularDisease,
        CharlsonCategory::CerebrovascularDisease,
        CharlsonCategory::Dementia,
        CharlsonCategory::ChronicPulmonaryDisease,
        CharlsonCategory::RheumaticDisease,
        CharlsonCategory::PepticUlcerDisease,
        CharlsonCategory::MildLiverDisease,
        CharlsonCategory::DiabetesWithoutComplications,
        CharlsonCategory::DiabetesWithComplications,
        CharlsonCategory::HemiplegiaParaplegia,
        CharlsonCategory::RenalDisease,
        CharlsonCategory::Malignancy,
        CharlsonCategory::SevereLiverDisease,
        CharlsonCategory::MetastaticSolidTumor,
        CharlsonCategory::AidsHiv,
    ];

    /// The category's weight (Charlson 1987).
    pub fn weight(self) -> u8 {
        use CharlsonCategory::*;
        match self {
            MyocardialInfarction
            | CongestiveHeartFailure
            | PeripheralVascularDisease
            | CerebrovascularDisease
            | Dementia
            | ChronicPulmonaryDisease
            | RheumaticDisease
            | PepticUlcerDisease
            | MildLiverDisease
            | DiabetesWithoutComplications => 1,
            DiabetesWithComplications | HemiplegiaParaplegia | RenalDisease | Malignancy => 2,
            SevereLiverDisease => 3,
            MetastaticSolidTumor | AidsHiv => 6,
        }
    }

    /// The category that supersedes this one when both are present (the hierarchy rules:
    /// severe over mild liver disease, complicated over uncomplicated diabetes, metastatic
    /// solid tumor over malignancy), so a patient is not counted twice for one disease.
    pub fn superseded_by(self) -> Option<CharlsonCategory> {
        match self {
            CharlsonCategory::MildLiverDisease => Some(CharlsonCategory::SevereLiverDisease),
            CharlsonCategory::DiabetesWithoutComplications => {
                Some(CharlsonCategory::DiabetesWithComplications)
            }
            CharlsonCategory::Malignancy => Some(CharlsonCategory::MetastaticSolidTumor),
            _ => None,
        }
    }

    /// A stable snake_case name, used for feature names and in `docs/scores.md`.
    pub fn name(self) -> &'static str {
        use CharlsonCategory::*;
        match self {
            MyocardialInfarction => "myocardial_infarction",
            CongestiveHeartFailure => "congestive_heart_failure",
            PeripheralVascularDisease => "peripheral_vascular_disease",
            CerebrovascularDisease => "cerebrovascular_disease",
            Dementia => "dementia",
            ChronicPulmonaryDisease => "chronic_pulmonary_disease",
            RheumaticDisease => "rheumatic_disease",
            PepticUlcerDisease => "peptic_ulcer_disease",
            MildLiverDisease => "mild_liver_disease",
            DiabetesWithoutComplications => "diabetes_without_complications",
            DiabetesWithComplications => "diabetes_with_complications",
            HemiplegiaParaplegia => "hemiplegia_paraplegia",
            RenalDisease => "renal_disease",
            Malignancy => "malignancy",
            SevereLiverDisease => "severe_liver_disease",
            MetastaticSolidTumor => "metastatic_solid_tumor",
            AidsHiv => "aids_hiv",
        }
    }

    /// Parses a name written by [`CharlsonCategory::name`].
    pub fn from_name(name: &str) -> Option<CharlsonCategory> {
        CharlsonCategory::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The ICD-10 code prefixes of the category, without dots (Quan et al. 2005, Table 1,
    /// ICD-10 column, with the ICD-10-CM translations of `docs/scores.md`). An ICD-10(-CM)
    /// code belongs to the category when its normalized form starts with one of them.
    pub fn prefixes(self) -> &'static [&'static str] {
        use CharlsonCategory::*;
        match self {
            MyocardialInfarction => &["I21", "I22", "I252"],
            CongestiveHeartFailure => &[
                "I099", "I110", "I130", "I132", "I255", "I420", "I425", "I426", "I427", "I428",
                "I429", "I43", "I50", "P290",
            ],
            PeripheralVascularDisease => &[
                "I70", "I71", "I731", "I738", "I739", "I771", "I790", "I792", "K551", "K558",
                "K559", "Z958", "Z959",
            ],
            CerebrovascularDisease => &[
                "G45", "G46", "H340", "I60", "I61", "I62", "I63", "I64", "I65", "I66", "I67",
                "I68", "I69",
            ],
            Dementia => &["F00", "F01", "F02", "F03", "F051", "G30", "G311"],
            ChronicPulmonaryDisease => &[
                "I278", "I279", "J40", "J41", "J42", "J43", "J44", "J45", "J46", "J47", "J60",
                "J61", "J62", "J63", "J64", "J65", "J66", "J67", "J684", "J701", "J703",
            ],
            RheumaticDisease => &[
                "M05", "M06", "M315", "M32", "M33", "M34", "M351", "M353", "M360",
            ],
            PepticUlcerDisease => &["K25", "K26", "K27", "K28"],
            MildLiverDisease => &[
                "B18", "K700", "K701", "K702", "K703", "K709", "K713", "K714", "K715", "K717",
                "K73", "K74", "K760", "K762", "K763", "K764", "K768", "K769", "Z944",
            ],
            // E08 and E09 are ICD-10-CM only (diabetes due to an underlying condition, drug
            // induced); WHO ICD-10 codes them under E13, which Quan lists. Same 4th
            // character split as E10-E14.
            DiabetesWithoutComplications => &[
                "E100", "E101", "E106", "E108", "E109", "E110", "E111", "E116", "E118", "E119",
                "E120", "E121", "E126", "E128", "E129", "E130", "E131", "E136", "E138", "E139",
                "E140", "E141", "E146", "E148", "E149", "E080", "E081", "E086", "E088", "E089",
                "E090", "E091", "E096", "E098", "E099",
            ],
            DiabetesWithComplications => &[
                "E102", "E103", "E104", "E105", "E107", "E112", "E113", "E114", "E115", "E117",
                "E122", "E123", "E124", "E125", "E127", "E132", "E133", "E134", "E135", "E137",
                "E142", "E143", "E144", "E145", "E147", "E082", "E083", "E084", "E085", "E087",
                "E092", "E093", "E094", "E095", "E097",
            ],
            HemiplegiaParaplegia => &[
                "G041", "G114", "G801", "G802", "G81", "G82", "G830", "G831", "G832", "G833",
                "G834", "G839",
            ],
            RenalDisease => &[
                "I120", "I131", "N032", "N033", "N034", "N035", "N036", "N037", "N052", "N053",
                "N054", "N055", "N056", "N057", "N18", "N19", "N250", "Z490", "Z491", "Z492",
                "Z940", "Z992",
            ],
            Malignancy => &[
                "C00", "C01", "C02", "C03", "C04", "C05", "C06", "C07", "C08", "C09", "C10", "C11",
                "C12", "C13", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21", "C22", "C23",
                "C24", "C25", "C26", "C30", "C31", "C32", "C33", "C34", "C37", "C38", "C39", "C40",
                "C41", "C43", "C45", "C46", "C47", "C48", "C49", "C50", "C51", "C52", "C53", "C54",
                "C55", "C56", "C57", "C58", "C60", "C61", "C62", "C63", "C64", "C65", "C66", "C67",
                "C68", "C69", "C70", "C71", "C72", "C73", "C74", "C75", "C76", "C81", "C82", "C83",
                "C84", "C85", "C88", "C90", "C91", "C92", "C93", "C94", "C95", "C96", "C97",
            ],
            // I85.1 (secondary esophageal varices) is the ICD-10-CM home of WHO I98.2
            // (oesophageal varices in diseases classified elsewhere), which Quan lists; the
            // CM code set has no I98.2 and no I85.9.
            SevereLiverDisease => &[
                "I850", "I859", "I851", "I864", "I982", "K704", "K711", "K721", "K729", "K765",
                "K766", "K767",
            ],
            MetastaticSolidTumor => &["C77", "C78", "C79", "C80"],
            AidsHiv => &["B20", "B21", "B22", "B24"],
        }
    }

    /// The ICD-9-CM code prefixes of the category, without dots: Quan et al. 2005, Table 1,
    /// "Enhanced ICD-9-CM" column. Ranges of the paper are written out (425.4-425.9 is
    /// 425.4, 425.5, 425.7, 425.8, 425.9: ICD-9-CM has no 425.6), as in the SAS program the
    /// authors published with the paper (Manitoba Centre for Health Policy, "ICD9_E_Charlson").
    pub fn icd9_prefixes(self) -> &'static [&'static str] {
        use CharlsonCategory::*;
        match self {
            MyocardialInfarction => &["410", "412"],
            CongestiveHeartFailure => &[
                "39891", "40201", "40211", "40291", "40401", "40403", "40411", "40413", "40491",
                "40493", "4254", "4255", "4257", "4258", "4259", "428",
            ],
            PeripheralVascularDisease => &[
                "0930", "4373", "440", "441", "4431", "4432", "4438", "4439", "4471", "5571",
                "5579", "V434",
            ],
            CerebrovascularDisease => &[
                "36234", "430", "431", "432", "433", "434", "435", "436", "437", "438",
            ],
            Dementia => &["290", "2941", "3312"],
            ChronicPulmonaryDisease => &[
                "4168", "4169", "490", "491", "492", "493", "494", "495", "496", "500", "501",
                "502", "503", "504", "505", "5064", "5081", "5088",
            ],
            RheumaticDisease => &[
                "4465", "7100", "7101", "7102", "7103", "7104", "7140", "7141", "7142", "7148",
                "725",
            ],
            PepticUlcerDisease => &["531", "532", "533", "534"],
            MildLiverDisease => &[
                "07022", "07023", "07032", "07033", "07044", "07054", "0706", "0709", "570", "571",
                "5733", "5734", "5738", "5739", "V427",
            ],
            DiabetesWithoutComplications => &["2500", "2501", "2502", "2503", "2508", "2509"],
            DiabetesWithComplications => &["2504", "2505", "2506", "2507"],
            HemiplegiaParaplegia => &[
                "3341", "342", "343", "3440", "3441", "3442", "3443", "3444", "3445", "3446",
                "3449",
            ],
            RenalDisease => &[
                "40301", "40311", "40391", "40402", "40403", "40412", "40413", "40492", "40493",
                "582", "5830", "5831", "5832", "5834", "5836", "5837", "585", "586", "5880",
                "V420", "V451", "V56",
            ],
            // 140-172 and 174-195 (173, other malignant neoplasm of skin, is left out; 166-169,
            // 177 and 178 do not exist), 200-208, and 238.6 (plasmacytoma).
            Malignancy => &[
                "140", "141", "142", "143", "144", "145", "146", "147", "148", "149", "150", "151",
                "152", "153", "154", "155", "156", "157", "158", "159", "160", "161", "162", "163",
                "164", "165", "170", "171", "172", "174", "175", "176", "179", "180", "181", "182",
                "183", "184", "185", "186", "187", "188", "189", "190", "191", "192", "193", "194",
                "195", "200", "201", "202", "203", "204", "205", "206", "207", "208", "2386",
            ],
            SevereLiverDisease => &["4560", "4561", "4562", "5722", "5723", "5724", "5728"],
            MetastaticSolidTumor => &["196", "197", "198", "199"],
            AidsHiv => &["042", "043", "044"],
        }
    }

    /// The code prefixes of the category in a prefix-coded system ([`CharlsonCoding::Icd10`]
    /// or [`CharlsonCoding::Icd9Cm`]); SNOMED CT has no prefixes (see [`SNOMED_CONCEPTS`]).
    pub fn prefixes_in(self, coding: CharlsonCoding) -> &'static [&'static str] {
        match coding {
            CharlsonCoding::Icd10 => self.prefixes(),
            CharlsonCoding::Icd9Cm => self.icd9_prefixes(),
            CharlsonCoding::SnomedCt => &[],
        }
    }

    /// The SNOMED CT concepts of [`SNOMED_CONCEPTS`] placed in this category.
    pub fn snomed_concepts(self) -> impl Iterator<Item = &'static SnomedConcept> {
        SNOMED_CONCEPTS.iter().filter(move |c| c.category == self)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for CharlsonCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The code systems the Charlson index reads, each with its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CharlsonCoding {
    /// ICD-10-CM and WHO ICD-10 (both normalized to [`code_system::ICD10CM`]): Quan's ICD-10
    /// column, by prefix.
    Icd10,
    /// ICD-9-CM ([`code_system::ICD9CM`]): Quan's Enhanced ICD-9-CM column, by prefix.
    Icd9Cm,
    /// SNOMED CT ([`code_system::SNOMED`]): the concepts of [`SNOMED_CONCEPTS`], exactly.
    SnomedCt,
}

impl CharlsonCoding {
    /// Every coding, in the order `docs/scores.md` lists them.
    pub const ALL: [CharlsonCoding; 3] = [
        CharlsonCoding::Icd10,
        CharlsonCoding::Icd9Cm,
        CharlsonCoding::SnomedCt,
    ];

    /// The coding of a code system, as curated rows hold it ([`code_system::ICD10CM`]...) or
    /// as a source writes it (`http://hl7.org/fhir/sid/icd-9-cm`, `I9`, `SNOMEDCT`...: any
    /// spelling [`code_system::normalize`] knows); `None` for any other system. Only the
    /// system decides: a code is never read with a table because of its shape.
    pub fn of(system: &str) -> Option<CharlsonCoding> {
        fn known(system: &str) -> Option<CharlsonCoding> {
            match system {
                code_system::ICD10CM => Some(CharlsonCoding::Icd10),
                code_system::ICD9CM => Some(CharlsonCoding::Icd9Cm),
                code_system::SNOMED => Some(CharlsonCoding::SnomedCt),
                _ => None,
            }
        }
        // Curated rows hold normalized systems: check them without allocating.
        known(system).or_else(|| known(&code_system::normalize(system)))
    }

    /// The normalized code system ([`code_system`]) the coding reads.
    pub fn system(self) -> &'static str {
        match self {
            CharlsonCoding::Icd10 => code_system::ICD10CM,
            CharlsonCoding::Icd9Cm => code_system::ICD9CM,
            CharlsonCoding::SnomedCt => code_system::SNOMED,
        }
    }
}

/// The Charlson categories present in a set of codes, and the index they give.
///
/// A small bit set, so the features module can keep one per patient and add categories as
/// diagnoses become known without re-reading every code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CharlsonResult {
    present: u32,
}

impl CharlsonResult {
    /// Records a category as present.
    pub fn insert(&mut self, category: CharlsonCategory) {
        self.present |= category.bit();
    }

    /// True when a code of `category` was seen, whether or not the hierarchy lets it count.
    pub fn contains(&self, category: CharlsonCategory) -> bool {
        self.present & category.bit() != 0
    }

    /// Adds every category of `other`.
    pub fn merge(&mut self, other: CharlsonResult) {
        self.present |= other.present;
    }

    /// True when no category is present.
    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// Every category seen, in [`CharlsonCategory::ALL`] order.
    pub fn present(&self) -> impl Iterator<Item = CharlsonCategory> + '_ {
        CharlsonCategory::ALL
            .into_iter()
            .filter(|c| self.contains(*c))
    }

    /// The categories that count towards the index: those present and not superseded by a
    /// present category.
    pub fn counted(&self) -> impl Iterator<Item = CharlsonCategory> + '_ {
        self.present()
            .filter(|c| !c.superseded_by().is_some_and(|s| self.contains(s)))
    }

    /// The Charlson comorbidity index: the sum of the weights of [`Self::counted`] (0 to 29).
    pub fn index(&self) -> u8 {
        self.counted().map(CharlsonCategory::weight).sum()
    }
}

impl FromIterator<CharlsonCategory> for CharlsonResult {
    fn from_iter<I: IntoIterator<Item = CharlsonCategory>>(iter: I) -> Self {
        let mut r = CharlsonResult::default();
        for c in iter {
            r.insert(c);
        }
        r
    }
}

/// The Charlson categories and index of `codes`, given as `(code system, code)` pairs.
///
/// Each code is read with the table of its system ([`CharlsonCoding::of`]): ICD-10-CM and
/// ICD-10 (`ICD10CM`, `http://hl7.org/fhir/sid/icd-10-cm`, `I10`...) with Quan's ICD-10
/// prefixes, ICD-9-CM (`ICD9CM`, `http://hl7.org/fhir/sid/icd-9-cm`, `I9`...) with Quan's
/// Enhanced ICD-9-CM prefixes, SNOMED CT (`SNOMED`, `http://snomed.info/sct`...) with
/// [`SNOMED_CONCEPTS`]. Codes of any other system are ignored rather than guessed at. ICD codes
/// may be written with or without the dot and in any case (`I50.9`, `I509`, `i50.9`; `428.0`,
/// `4280`; `V43.4`, `v434`). A category counts once however many of its codes appear, in
/// however many systems, and the hierarchy rules apply across systems.
pub fn charlson<'a, I>(codes: I) -> CharlsonResult
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut result = CharlsonResult::default();
    for (system, code) in codes {
        result.merge(categories_of(system, code));
    }
    result
}

/// Every Charlson category of one code of `system` (empty when the system is not one the
/// index reads, or the code is in no category). Only four ICD-9-CM codes have two categories
/// (see the module documentation).
pub fn categories_of(system: &str, code: &str) -> CharlsonResult {
    match CharlsonCoding::of(system) {
        Some(coding) => categories_in(coding, code),
        None => CharlsonResult::default(),
    }
}

/// The Charlson category of one code of `system`, or `None` when it has none. For the four
/// ICD-9-CM codes with two categories (437.3, 404.03, 404.13, 404.93), the first in
/// [`CharlsonCategory::ALL`] order (peripheral vascular disease, congestive heart failure);
/// [`categories_of`] gives both.
pub fn category_of(system: &str, code: &str) -> Option<CharlsonCategory> {
    categories_of(system, code).present().next()
}

/// Every Charlson category of one code read with `coding`'s table.
pub fn categories_in(coding: CharlsonCoding, code: &str) -> CharlsonResult {
    let mut result = CharlsonResult::default();
    match coding {
        CharlsonCoding::Icd10 | CharlsonCoding::Icd9Cm => {
            let mut buf = [0u8; 8];
            let Some(normalized) = normalize_code(code, &mut buf) else {
                return result;
            };
            for category in CharlsonCategory::ALL {
                if category
                    .prefixes_in(coding)
                    .iter()
                    .any(|p| normalized.starts_with(p.as_bytes()))
                {
                    result.insert(category);
                }
            }
        }
        CharlsonCoding::SnomedCt => {
            if let Some(category) = snomed_index().get(code.trim()) {
                result.insert(*category);
            }
        }
    }
    result
}

/// Uppercases `code` and drops dots and whitespace into `buf`; codes longer than `buf` keep
/// their first 8 significant characters, more than any prefix needs. `None` when nothing is
/// left.
fn normalize_code<'b>(code: &str, buf: &'b mut [u8; 8]) -> Option<&'b [u8]> {
    let mut n = 0;
    for b in code.bytes() {
        if b == b'.' || b.is_ascii_whitespace() {
            continue;
        }
        if n == buf.len() {
            break;
        }
        buf[n] = b.to_ascii_uppercase();
        n += 1;
    }
    (n > 0).then_some(&buf[..n])
}

#[cfg(test)]
mod tests;
