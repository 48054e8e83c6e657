//! The Charlson comorbidity index from ICD-10(-CM) diagnosis codes.
//!
//! Categories and codes follow the ICD-10 coding algorithm of Quan H, et al. "Coding
//! algorithms for defining comorbidities in ICD-9-CM and ICD-10 administrative data", Med Care
//! 2005;43(11):1130-9; weights are Charlson's original 1987 weights as used with Quan's coding.
//! `docs/scores.md` lists every code prefix, the hierarchy rules, and the three ICD-10-CM
//! translations added to Quan's WHO ICD-10 list.
//!
//! A code belongs to at most one category (the lists do not overlap), so matching is a scan of
//! prefixes; the hierarchy rules are applied when the index is summed, never when categories
//! are recorded, so [`CharlsonResult::contains`] still answers "was mild liver disease coded"
//! for a patient with severe liver disease.

use std::fmt;

use crate::curated::code_system;

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

    /// The ICD-10 code prefixes of the category, without dots. A code belongs to the category
    /// when its normalized form starts with one of them.
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

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for CharlsonCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
/// Only ICD-10-CM codes count (the system as normalized by
/// [`code_system::normalize`], so `ICD10CM`, `http://hl7.org/fhir/sid/icd-10-cm`, `I10`...
/// all qualify); SNOMED CT or ICD-9-CM codes are ignored rather than guessed at. Codes may be
/// written with or without the dot and in any case (`I50.9`, `I509`, `i50.9`). A category is
/// counted once however many of its codes appear.
pub fn charlson<'a, I>(codes: I) -> CharlsonResult
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut result = CharlsonResult::default();
    for (system, code) in codes {
        if is_icd10(system) {
            if let Some(category) = category_of(code) {
                result.insert(category);
            }
        }
    }
    result
}

/// The Charlson category of one ICD-10(-CM) code (any code system check is the caller's), or
/// `None` when the code is in no category.
pub fn category_of(code: &str) -> Option<CharlsonCategory> {
    let mut buf = [0u8; 8];
    let normalized = normalize_code(code, &mut buf)?;
    CharlsonCategory::ALL.into_iter().find(|c| {
        c.prefixes()
            .iter()
            .any(|p| normalized.starts_with(p.as_bytes()))
    })
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

/// True when `system` names ICD-10-CM (or WHO ICD-10, which [`code_system::normalize`] maps
/// to the same name). The common, already normalized spelling is checked without allocating.
fn is_icd10(system: &str) -> bool {
    system == code_system::ICD10CM || code_system::normalize(system) == code_system::ICD10CM
}

#[cfg(test)]
mod tests {
    use super::*;
    use CharlsonCategory::*;

    fn icd(codes: &[&'static str]) -> CharlsonResult {
        charlson(codes.iter().map(|c| (code_system::ICD10CM, *c)))
    }

    /// One real ICD-10-CM code per category, written as a coder would.
    const EXAMPLES: [(&str, CharlsonCategory); 17] = [
        ("I21.4", MyocardialInfarction),
        ("I50.9", CongestiveHeartFailure),
        ("I73.9", PeripheralVascularDisease),
        ("I63.9", CerebrovascularDisease),
        ("F03.90", Dementia),
        ("J44.9", ChronicPulmonaryDisease),
        ("M06.9", RheumaticDisease),
        ("K25.9", PepticUlcerDisease),
        ("K76.0", MildLiverDisease),
        ("E11.9", DiabetesWithoutComplications),
        ("E11.22", DiabetesWithComplications),
        ("G81.90", HemiplegiaParaplegia),
        ("N18.4", RenalDisease),
        ("C18.9", Malignancy),
        ("K76.6", SevereLiverDisease),
        ("C78.00", MetastaticSolidTumor),
        ("B20", AidsHiv),
    ];

    #[test]
    fn each_category_is_found_from_a_real_code_with_its_weight() {
        for (code, category) in EXAMPLES {
            assert_eq!(category_of(code), Some(category), "{code}");
            let r = icd(&[code]);
            assert_eq!(r.present().collect::<Vec<_>>(), vec![category], "{code}");
            assert_eq!(r.index(), category.weight(), "{code}");
        }
    }

    #[test]
    fn weights_are_charlson_1987() {
        let weights: Vec<u8> = CharlsonCategory::ALL.iter().map(|c| c.weight()).collect();
        assert_eq!(weights, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 6, 6]);
    }

    #[test]
    fn codes_match_with_or_without_dot_and_in_any_case() {
        for code in ["I50.9", "I509", "i50.9", " I50.9 ", "I50"] {
            assert_eq!(category_of(code), Some(CongestiveHeartFailure), "{code:?}");
        }
        assert_eq!(category_of("E11.65"), Some(DiabetesWithoutComplications));
        assert_eq!(category_of("E1165"), Some(DiabetesWithoutComplications));
    }

    #[test]
    fn codes_outside_every_category_and_garbage_give_nothing() {
        for code in [
            "I10", "E78.5", "I48.91", "F32.9", "I25.10", "", ".", "I", "I2", "C44.91",
        ] {
            assert_eq!(category_of(code), None, "{code:?}");
        }
        assert_eq!(icd(&["I10", "E78.5"]).index(), 0);
        assert!(icd(&[]).is_empty());
    }

    #[test]
    fn only_icd10_systems_count() {
        let r = charlson([
            (code_system::SNOMED, "I50.9"),
            (code_system::ICD9CM, "428"),
            (code_system::ICD9CM, "I50.9"),
            ("LOCAL", "C78.00"),
        ]);
        assert_eq!(r.index(), 0);
        let r = charlson([("http://hl7.org/fhir/sid/icd-10-cm", "I50.9")]);
        assert_eq!(r.index(), 1);
    }

    #[test]
    fn severe_liver_supersedes_mild() {
        let r = icd(&["K76.0", "K76.6"]);
        assert!(r.contains(MildLiverDisease) && r.contains(SevereLiverDisease));
        assert_eq!(r.counted().collect::<Vec<_>>(), vec![SevereLiverDisease]);
        assert_eq!(r.index(), 3);
        assert_eq!(icd(&["B18.2"]).index(), 1);
    }

    #[test]
    fn complicated_diabetes_supersedes_uncomplicated() {
        assert_eq!(icd(&["E11.9", "E11.40"]).index(), 2);
        assert_eq!(icd(&["E11.9", "E11.65"]).index(), 1);
        assert_eq!(icd(&["E10.9", "E11.22"]).index(), 2);
    }

    #[test]
    fn metastatic_tumor_supersedes_malignancy() {
        assert_eq!(icd(&["C34.90", "C79.51"]).index(), 6);
        assert_eq!(icd(&["C34.90", "C85.90"]).index(), 2);
        assert_eq!(icd(&["C78.7"]).index(), 6);
    }

    #[test]
    fn a_category_counts_once_however_many_codes() {
        assert_eq!(icd(&["I50.9", "I50.22", "I11.0", "I509"]).index(), 1);
    }

    #[test]
    fn every_category_at_once_gives_the_maximum_29() {
        let all: Vec<&str> = EXAMPLES.iter().map(|(c, _)| *c).collect();
        let r = icd(&all);
        assert_eq!(r.present().count(), 17);
        assert_eq!(r.counted().count(), 14);
        assert_eq!(r.index(), 29);
    }

    #[test]
    fn icd10cm_translations_of_quan_codes() {
        assert_eq!(category_of("I85.11"), Some(SevereLiverDisease));
        assert_eq!(category_of("I85.00"), Some(SevereLiverDisease));
        assert_eq!(category_of("E08.9"), Some(DiabetesWithoutComplications));
        assert_eq!(category_of("E09.22"), Some(DiabetesWithComplications));
    }

    #[test]
    fn prefixes_do_not_overlap_between_categories() {
        for a in CharlsonCategory::ALL {
            for b in CharlsonCategory::ALL {
                if a == b {
                    continue;
                }
                for pa in a.prefixes() {
                    for pb in b.prefixes() {
                        assert!(!pa.starts_with(pb), "{pa} ({a}) is inside {pb} ({b})");
                    }
                }
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for c in CharlsonCategory::ALL {
            assert_eq!(CharlsonCategory::from_name(c.name()), Some(c));
        }
        assert_eq!(CharlsonCategory::from_name("cancer"), None);
    }

    #[test]
    fn long_codes_do_not_panic() {
        assert_eq!(category_of("C50.9191234567890"), Some(Malignancy));
        assert_eq!(category_of("ÄÖÜ.€"), None);
    }
}
