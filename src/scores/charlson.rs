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

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

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

/// A SNOMED CT concept of the curated Charlson list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnomedConcept {
    /// The concept id (SCTID).
    pub code: &'static str,
    /// Its fully specified name, as SNOMED CT (and Synthea) write it.
    pub display: &'static str,
    /// The Charlson category.
    pub category: CharlsonCategory,
}

const fn sct(
    code: &'static str,
    display: &'static str,
    category: CharlsonCategory,
) -> SnomedConcept {
    SnomedConcept {
        code,
        display,
        category,
    }
}

/// The SNOMED CT concepts Ward places in a Charlson category: a curated list, not a traversal
/// of the SNOMED CT hierarchy (that needs the licensed release, which Ward does not ship). A
/// concept counts only when its id is listed here; a descendant that is not listed (a more
/// specific heart failure, say) counts for nothing.
///
/// Sources: the concept ids and names are those SNOMED CT publishes (browser.ihtsdotools.org);
/// the Synthea ones are the codes Synthea's disease modules write (synthetichealth/synthea,
/// `src/main/resources/modules`) and that appear in the sample exports Ward is tested on
/// (Synthea CSV `conditions.csv`, the SMART Synthea FHIR R4 bundles). Each concept is placed in
/// the category of the ICD-10 codes Quan et al. 2005 list for the same disease: old myocardial
/// infarction (I25.2) is myocardial infarction, all chronic kidney disease stages (N18) are
/// renal disease, diabetic nephropathy, retinopathy and neuropathy (E1x.2-E1x.4) are diabetes
/// with complications, and so on. Left out on purpose, because Quan's codes leave out their
/// ICD-10 counterparts: prediabetes (R73.03), carcinoma in situ (D0x), neoplasms of unstated
/// behavior (`Neoplasm of prostate`, D49), suspected cancer, acute bronchitis (J20), coronary
/// heart disease without infarction (I25.1x), hypertension (I10).
pub const SNOMED_CONCEPTS: &[SnomedConcept] = {
    use CharlsonCategory::*;
    &[
        // Myocardial infarction (I21, I22, I25.2).
        sct(
            "22298006",
            "Myocardial infarction (disorder)",
            MyocardialInfarction,
        ),
        sct(
            "57054005",
            "Acute myocardial infarction (disorder)",
            MyocardialInfarction,
        ),
        sct(
            "401303003",
            "Acute ST segment elevation myocardial infarction (disorder)",
            MyocardialInfarction,
        ),
        sct(
            "401314000",
            "Acute non-ST segment elevation myocardial infarction (disorder)",
            MyocardialInfarction,
        ),
        sct(
            "1755008",
            "Old myocardial infarction (disorder)",
            MyocardialInfarction,
        ),
        sct(
            "399211009",
            "History of myocardial infarction (situation)",
            MyocardialInfarction,
        ),
        // Congestive heart failure (I50, I11.0, I13.0, ...).
        sct(
            "84114007",
            "Heart failure (disorder)",
            CongestiveHeartFailure,
        ),
        sct(
            "42343007",
            "Congestive heart failure (disorder)",
            CongestiveHeartFailure,
        ),
        sct(
            "88805009",
            "Chronic congestive heart failure (disorder)",
            CongestiveHeartFailure,
        ),
        sct(
            "85232009",
            "Left heart failure (disorder)",
            CongestiveHeartFailure,
        ),
        // Peripheral vascular disease (I70, I71, I73.9, ...).
        sct(
            "400047006",
            "Peripheral vascular disease (disorder)",
            PeripheralVascularDisease,
        ),
        sct(
            "399957001",
            "Peripheral arterial occlusive disease (disorder)",
            PeripheralVascularDisease,
        ),
        sct(
            "67362008",
            "Aortic aneurysm (disorder)",
            PeripheralVascularDisease,
        ),
        sct(
            "233985008",
            "Abdominal aortic aneurysm (disorder)",
            PeripheralVascularDisease,
        ),
        // Cerebrovascular disease (G45, G46, I60-I69).
        sct(
            "230690007",
            "Cerebrovascular accident (disorder)",
            CerebrovascularDisease,
        ),
        sct(
            "422504002",
            "Ischemic stroke (disorder)",
            CerebrovascularDisease,
        ),
        sct(
            "432504007",
            "Cerebral infarction (disorder)",
            CerebrovascularDisease,
        ),
        sct(
            "274100004",
            "Cerebral hemorrhage (disorder)",
            CerebrovascularDisease,
        ),
        sct(
            "21454007",
            "Subarachnoid intracranial hemorrhage (disorder)",
            CerebrovascularDisease,
        ),
        sct(
            "266257000",
            "Transient ischemic attack (disorder)",
            CerebrovascularDisease,
        ),
        sct(
            "62914000",
            "Cerebrovascular disease (disorder)",
            CerebrovascularDisease,
        ),
        // Dementia (F00-F03, G30).
        sct("52448006", "Dementia (disorder)", Dementia),
        sct("26929004", "Alzheimer's disease (disorder)", Dementia),
        sct("429998004", "Vascular dementia (disorder)", Dementia),
        // Chronic pulmonary disease (J40-J47).
        sct(
            "13645005",
            "Chronic obstructive lung disease (disorder)",
            ChronicPulmonaryDisease,
        ),
        sct(
            "185086009",
            "Chronic obstructive bronchitis (disorder)",
            ChronicPulmonaryDisease,
        ),
        sct(
            "63480004",
            "Chronic bronchitis (disorder)",
            ChronicPulmonaryDisease,
        ),
        sct(
            "87433001",
            "Pulmonary emphysema (disorder)",
            ChronicPulmonaryDisease,
        ),
        sct("195967001", "Asthma (disorder)", ChronicPulmonaryDisease),
        sct(
            "233678006",
            "Childhood asthma (disorder)",
            ChronicPulmonaryDisease,
        ),
        sct(
            "12295008",
            "Bronchiectasis (disorder)",
            ChronicPulmonaryDisease,
        ),
        // Rheumatic disease (M05, M06, M32-M34, M35.3, ...).
        sct(
            "69896004",
            "Rheumatoid arthritis (disorder)",
            RheumaticDisease,
        ),
        sct(
            "55464009",
            "Systemic lupus erythematosus (disorder)",
            RheumaticDisease,
        ),
        sct(
            "89155008",
            "Systemic sclerosis (disorder)",
            RheumaticDisease,
        ),
        sct("396230008", "Dermatomyositis (disorder)", RheumaticDisease),
        sct("31384009", "Polymyositis (disorder)", RheumaticDisease),
        sct(
            "65323003",
            "Polymyalgia rheumatica (disorder)",
            RheumaticDisease,
        ),
        // Peptic ulcer disease (K25-K28).
        sct("13200003", "Peptic ulcer (disorder)", PepticUlcerDisease),
        sct("397825006", "Gastric ulcer (disorder)", PepticUlcerDisease),
        sct("51868009", "Duodenal ulcer (disorder)", PepticUlcerDisease),
        // Mild liver disease (B18, K74, ...).
        sct(
            "19943007",
            "Cirrhosis of liver (disorder)",
            MildLiverDisease,
        ),
        sct(
            "61977001",
            "Chronic type B viral hepatitis (disorder)",
            MildLiverDisease,
        ),
        sct(
            "128302006",
            "Chronic hepatitis C (disorder)",
            MildLiverDisease,
        ),
        // Diabetes without chronic complications (E10-E14 .0, .1, .6, .8, .9).
        sct(
            "73211009",
            "Diabetes mellitus (disorder)",
            DiabetesWithoutComplications,
        ),
        sct(
            "44054006",
            "Diabetes mellitus type 2 (disorder)",
            DiabetesWithoutComplications,
        ),
        sct(
            "46635009",
            "Diabetes mellitus type 1 (disorder)",
            DiabetesWithoutComplications,
        ),
        // Diabetes with chronic complications (E10-E14 .2, .3, .4, .5, .7).
        sct(
            "127013003",
            "Disorder of kidney due to diabetes mellitus (disorder)",
            DiabetesWithComplications,
        ),
        sct(
            "90781000119102",
            "Microalbuminuria due to type 2 diabetes mellitus (disorder)",
            DiabetesWithComplications,
        ),
        sct(
            "157141000119108",
            "Proteinuria due to type 2 diabetes mellitus (disorder)",
            DiabetesWithComplications,
        ),
        sct(
            "368581000119106",
            "Neuropathy due to type 2 diabetes mellitus (disorder)",
            DiabetesWithComplications,
        ),
        sct(
            "4855003",
            "Retinopathy due to diabetes mellitus (disorder)",
            DiabetesWithComplications,
        ),
        sct(
            "422034002",
            "Retinopathy due to type 2 diabetes mellitus (disorder)",
            DiabetesWithComplications,
        ),
        sct(
            "1551000119108",
            "Nonproliferative retinopathy due to type 2 diabetes mellitus (disorder)",
            DiabetesWithComplications,
        ),
        sct(
            "1501000119109",
            "Proliferative retinopathy due to type 2 diabetes mellitus (disorder)",
            DiabetesWithComplications,
        ),
        sct(
            "97331000119101",
            "Macular edema and retinopathy due to type 2 diabetes mellitus (disorder)",
            DiabetesWithComplications,
        ),
        sct(
            "60951000119105",
            "Blindness due to type 2 diabetes mellitus (disorder)",
            DiabetesWithComplications,
        ),
        // Hemiplegia or paraplegia (G81, G82).
        sct("50582007", "Hemiplegia (disorder)", HemiplegiaParaplegia),
        sct("60389000", "Paraplegia (disorder)", HemiplegiaParaplegia),
        // Renal disease (N18, N19, Z99.2, ...).
        sct(
            "709044004",
            "Chronic kidney disease (disorder)",
            RenalDisease,
        ),
        sct(
            "431855005",
            "Chronic kidney disease stage 1 (disorder)",
            RenalDisease,
        ),
        sct(
            "431856006",
            "Chronic kidney disease stage 2 (disorder)",
            RenalDisease,
        ),
        sct(
            "433144002",
            "Chronic kidney disease stage 3 (disorder)",
            RenalDisease,
        ),
        sct(
            "700378005",
            "Chronic kidney disease stage 3A (disorder)",
            RenalDisease,
        ),
        sct(
            "700379002",
            "Chronic kidney disease stage 3B (disorder)",
            RenalDisease,
        ),
        sct(
            "431857002",
            "Chronic kidney disease stage 4 (disorder)",
            RenalDisease,
        ),
        sct(
            "433146000",
            "Chronic kidney disease stage 5 (disorder)",
            RenalDisease,
        ),
        sct(
            "46177005",
            "End-stage renal disease (disorder)",
            RenalDisease,
        ),
        sct(
            "90688005",
            "Chronic renal failure syndrome (disorder)",
            RenalDisease,
        ),
        // Any malignancy, including lymphoma and leukemia (C00-C76, C81-C97).
        sct(
            "363346000",
            "Malignant neoplastic disease (disorder)",
            Malignancy,
        ),
        sct(
            "363358000",
            "Malignant tumor of lung (disorder)",
            Malignancy,
        ),
        sct(
            "254637007",
            "Non-small cell lung cancer (disorder)",
            Malignancy,
        ),
        sct(
            "424132000",
            "Non-small cell carcinoma of lung, TNM stage 1 (disorder)",
            Malignancy,
        ),
        sct(
            "425048006",
            "Non-small cell carcinoma of lung, TNM stage 2 (disorder)",
            Malignancy,
        ),
        sct(
            "422968005",
            "Non-small cell carcinoma of lung, TNM stage 3 (disorder)",
            Malignancy,
        ),
        sct(
            "423121009",
            "Non-small cell carcinoma of lung, TNM stage 4 (disorder)",
            Malignancy,
        ),
        sct(
            "254632001",
            "Small cell carcinoma of lung (disorder)",
            Malignancy,
        ),
        sct(
            "67811000119102",
            "Primary small cell malignant neoplasm of lung, TNM stage 1 (disorder)",
            Malignancy,
        ),
        sct(
            "363406005",
            "Malignant tumor of colon (disorder)",
            Malignancy,
        ),
        sct(
            "93761005",
            "Primary malignant neoplasm of colon (disorder)",
            Malignancy,
        ),
        sct(
            "109838007",
            "Overlapping malignant neoplasm of colon (disorder)",
            Malignancy,
        ),
        sct(
            "254837009",
            "Malignant neoplasm of breast (disorder)",
            Malignancy,
        ),
        sct(
            "399068003",
            "Malignant tumor of prostate (disorder)",
            Malignancy,
        ),
        sct("93143009", "Leukemia, disease (disorder)", Malignancy),
        sct(
            "91861009",
            "Acute myeloid leukemia, disease (disorder)",
            Malignancy,
        ),
        sct("118600007", "Malignant lymphoma (disorder)", Malignancy),
        sct("109989006", "Multiple myeloma (disorder)", Malignancy),
        // Moderate or severe liver disease (K76.6 portal hypertension, ...).
        sct(
            "34742003",
            "Portal hypertension (disorder)",
            SevereLiverDisease,
        ),
        // Metastatic solid tumor (C77-C80).
        sct(
            "128462008",
            "Secondary malignant neoplastic disease (disorder)",
            MetastaticSolidTumor,
        ),
        sct(
            "94260004",
            "Secondary malignant neoplasm of colon (disorder)",
            MetastaticSolidTumor,
        ),
        // AIDS/HIV (B20-B22, B24).
        sct(
            "86406008",
            "Human immunodeficiency virus infection (disorder)",
            AidsHiv,
        ),
        sct(
            "62479008",
            "Acquired immune deficiency syndrome (disorder)",
            AidsHiv,
        ),
    ]
};

/// [`SNOMED_CONCEPTS`] by concept id, built on first use.
fn snomed_index() -> &'static HashMap<&'static str, CharlsonCategory> {
    static INDEX: OnceLock<HashMap<&'static str, CharlsonCategory>> = OnceLock::new();
    INDEX.get_or_init(|| {
        SNOMED_CONCEPTS
            .iter()
            .map(|c| (c.code, c.category))
            .collect()
    })
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
mod tests {
    use super::*;
    use CharlsonCategory::*;

    fn icd(codes: &[&'static str]) -> CharlsonResult {
        charlson(codes.iter().map(|c| (code_system::ICD10CM, *c)))
    }

    fn icd9(codes: &[&'static str]) -> CharlsonResult {
        charlson(codes.iter().map(|c| (code_system::ICD9CM, *c)))
    }

    fn icd10_of(code: &str) -> Option<CharlsonCategory> {
        category_of(code_system::ICD10CM, code)
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

    /// One real ICD-9-CM code per category, dotted as a coder writes it (MIMIC-IV writes the
    /// same codes without the dot).
    const ICD9_EXAMPLES: [(&str, CharlsonCategory); 17] = [
        ("410.71", MyocardialInfarction),
        ("428.0", CongestiveHeartFailure),
        ("443.9", PeripheralVascularDisease),
        ("434.91", CerebrovascularDisease),
        ("290.0", Dementia),
        ("496", ChronicPulmonaryDisease),
        ("714.0", RheumaticDisease),
        ("531.90", PepticUlcerDisease),
        ("571.5", MildLiverDisease),
        ("250.00", DiabetesWithoutComplications),
        ("250.40", DiabetesWithComplications),
        ("342.90", HemiplegiaParaplegia),
        ("585.9", RenalDisease),
        ("162.9", Malignancy),
        ("572.3", SevereLiverDisease),
        ("197.7", MetastaticSolidTumor),
        ("042", AidsHiv),
    ];

    #[test]
    fn each_category_is_found_from_a_real_code_with_its_weight() {
        for (code, category) in EXAMPLES {
            assert_eq!(icd10_of(code), Some(category), "{code}");
            let r = icd(&[code]);
            assert_eq!(r.present().collect::<Vec<_>>(), vec![category], "{code}");
            assert_eq!(r.index(), category.weight(), "{code}");
        }
    }

    #[test]
    fn each_category_is_found_from_a_real_icd9_code_dotted_and_undotted() {
        for (code, category) in ICD9_EXAMPLES {
            let undotted = code.replace('.', "");
            for c in [code, undotted.as_str()] {
                let r = charlson([(code_system::ICD9CM, c)]);
                assert_eq!(r.present().collect::<Vec<_>>(), vec![category], "{c}");
                assert_eq!(r.index(), category.weight(), "{c}");
                assert_eq!(category_of(code_system::ICD9CM, c), Some(category), "{c}");
            }
        }
    }

    #[test]
    fn each_category_has_a_snomed_concept_and_each_concept_its_category() {
        for category in CharlsonCategory::ALL {
            let concepts: Vec<_> = category.snomed_concepts().collect();
            assert!(!concepts.is_empty(), "{category} has no SNOMED CT concept");
            for c in concepts {
                let r = charlson([(code_system::SNOMED, c.code)]);
                assert_eq!(
                    r.present().collect::<Vec<_>>(),
                    vec![category],
                    "{}",
                    c.code
                );
                assert_eq!(r.index(), category.weight(), "{}", c.code);
            }
        }
    }

    /// The SNOMED CT codes Synthea writes for Charlson conditions, as found in the sample
    /// exports (Synthea CSV `conditions.csv`, the SMART Synthea FHIR R4 bundles), with the
    /// display Synthea writes.
    #[test]
    fn synthea_snomed_codes_count() {
        let synthea = [
            ("22298006", "Myocardial Infarction", MyocardialInfarction),
            (
                "399211009",
                "History of myocardial infarction (situation)",
                MyocardialInfarction,
            ),
            ("84114007", "Heart failure", CongestiveHeartFailure),
            (
                "88805009",
                "Chronic congestive heart failure (disorder)",
                CongestiveHeartFailure,
            ),
            ("230690007", "Stroke", CerebrovascularDisease),
            ("26929004", "Alzheimer's disease (disorder)", Dementia),
            (
                "185086009",
                "Chronic obstructive bronchitis (disorder)",
                ChronicPulmonaryDisease,
            ),
            (
                "87433001",
                "Pulmonary emphysema (disorder)",
                ChronicPulmonaryDisease,
            ),
            ("233678006", "Childhood asthma", ChronicPulmonaryDisease),
            ("195967001", "Asthma", ChronicPulmonaryDisease),
            (
                "44054006",
                "Diabetes mellitus type 2",
                DiabetesWithoutComplications,
            ),
            (
                "127013003",
                "Diabetic renal disease (disorder)",
                DiabetesWithComplications,
            ),
            (
                "368581000119106",
                "Neuropathy due to type 2 diabetes",
                DiabetesWithComplications,
            ),
            (
                "433144002",
                "Chronic kidney disease stage 3 (disorder)",
                RenalDisease,
            ),
            (
                "254637007",
                "Non-small cell lung cancer (disorder)",
                Malignancy,
            ),
            (
                "424132000",
                "Non-small cell carcinoma of lung, TNM stage 1",
                Malignancy,
            ),
            (
                "67811000119102",
                "Primary small cell malignant neoplasm of lung",
                Malignancy,
            ),
            (
                "254632001",
                "Small cell carcinoma of lung (disorder)",
                Malignancy,
            ),
            ("363406005", "Malignant tumor of colon", Malignancy),
            (
                "254837009",
                "Malignant neoplasm of breast (disorder)",
                Malignancy,
            ),
            (
                "94260004",
                "Secondary malignant neoplasm of colon",
                MetastaticSolidTumor,
            ),
        ];
        for (code, display, category) in synthea {
            let system = "http://snomed.info/sct";
            assert_eq!(
                category_of(system, code),
                Some(category),
                "{code} {display}"
            );
        }
    }

    /// Synthea conditions that are not Charlson comorbidities, and why.
    #[test]
    fn snomed_codes_outside_every_category_give_nothing() {
        for code in [
            "15777000",  // Prediabetes (R73.03)
            "126906006", // Neoplasm of prostate: behavior unstated (D49)
            "92691004",  // Carcinoma in situ of prostate (D07.5)
            "162573006", // Suspected lung cancer (situation)
            "10509002",  // Acute bronchitis (J20)
            "53741008",  // Coronary heart disease (I25.1x)
            "59621000",  // Hypertension (I10)
            "49436004",  // Atrial fibrillation (I48)
            "428251008", // History of appendectomy
            "",
            "  ",
            "22298006x",
        ] {
            assert_eq!(category_of(code_system::SNOMED, code), None, "{code:?}");
        }
        assert_eq!(
            category_of(code_system::SNOMED, " 22298006 "),
            Some(MyocardialInfarction)
        );
    }

    #[test]
    fn weights_are_charlson_1987() {
        let weights: Vec<u8> = CharlsonCategory::ALL.iter().map(|c| c.weight()).collect();
        assert_eq!(weights, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 6, 6]);
    }

    #[test]
    fn codes_match_with_or_without_dot_and_in_any_case() {
        for code in ["I50.9", "I509", "i50.9", " I50.9 ", "I50"] {
            assert_eq!(icd10_of(code), Some(CongestiveHeartFailure), "{code:?}");
        }
        assert_eq!(icd10_of("E11.65"), Some(DiabetesWithoutComplications));
        assert_eq!(icd10_of("E1165"), Some(DiabetesWithoutComplications));
        for code in ["V43.4", "V434", "v43.4", "V43.40"] {
            let r = charlson([(code_system::ICD9CM, code)]);
            assert_eq!(
                r.present().collect::<Vec<_>>(),
                vec![PeripheralVascularDisease],
                "{code:?}"
            );
        }
        for code in ["070.32", "07032", "070.6", "0706"] {
            assert_eq!(
                category_of(code_system::ICD9CM, code),
                Some(MildLiverDisease),
                "{code}"
            );
        }
    }

    #[test]
    fn codes_outside_every_category_and_garbage_give_nothing() {
        for code in [
            "I10", "E78.5", "I48.91", "F32.9", "I25.10", "", ".", "I", "I2", "C44.91",
        ] {
            assert_eq!(icd10_of(code), None, "{code:?}");
        }
        assert_eq!(icd(&["I10", "E78.5"]).index(), 0);
        assert!(icd(&[]).is_empty());
    }

    /// The edges of Quan's ICD-9-CM ranges: the codes just outside each listed range.
    #[test]
    fn icd9_codes_just_outside_the_ranges_give_nothing() {
        for code in [
            "401.9",  // essential hypertension
            "402.00", // hypertensive heart disease without heart failure
            "403.90", // hypertensive CKD stage I-IV
            "404.00", // hypertensive heart and CKD, neither failure
            "411.1",  // intermediate coronary syndrome
            "414.01", // coronary atherosclerosis
            "425.3",  // endocardial fibroelastosis: 425.4-425.9 only
            "443.0",  // Raynaud's syndrome: 443.1-443.9 only
            "439",    // does not exist; after 438
            "173.3",  // other malignant neoplasm of skin
            "209.00", // neuroendocrine tumors: not in Quan's list
            "238.7",  // only 238.6 counts
            "250",    // diabetes without the 4th digit: cannot tell the category
            "344.8",  // other specified paralytic syndromes: 344.0-344.6, 344.9 only
            "583.9",  // nephritis, unspecified lesion: 583.0-583.7 only
            "572.0",  // abscess of liver
            "070.30", // acute hepatitis B without coma
            "416.0",  // primary pulmonary hypertension: 416.8, 416.9 only
            "V42.1",  // heart transplant status
            "E849.7", // place of occurrence (E code)
            "", ".",
        ] {
            assert_eq!(category_of(code_system::ICD9CM, code), None, "{code:?}");
        }
        for (code, category) in [
            ("195.8", Malignancy),
            ("238.6", Malignancy),
            ("208.90", Malignancy),
            ("199.1", MetastaticSolidTumor),
            ("425.4", CongestiveHeartFailure),
            ("398.91", CongestiveHeartFailure),
            ("344.9", HemiplegiaParaplegia),
            ("V56.0", RenalDisease),
            ("V45.11", RenalDisease),
            ("V42.0", RenalDisease),
            ("V42.7", MildLiverDisease),
            ("362.34", CerebrovascularDisease),
            ("456.21", SevereLiverDisease),
            ("044.9", AidsHiv),
        ] {
            assert_eq!(
                category_of(code_system::ICD9CM, code),
                Some(category),
                "{code}"
            );
        }
    }

    #[test]
    fn codes_quan_lists_twice_are_in_two_categories() {
        for code in ["404.03", "40413", "404.93"] {
            let r = categories_of(code_system::ICD9CM, code);
            assert_eq!(
                r.present().collect::<Vec<_>>(),
                vec![CongestiveHeartFailure, RenalDisease],
                "{code}"
            );
            assert_eq!(r.index(), 3, "{code}");
            assert_eq!(
                category_of(code_system::ICD9CM, code),
                Some(CongestiveHeartFailure)
            );
        }
        assert_eq!(icd9(&["404.01"]).index(), 1);
        assert_eq!(icd9(&["404.02"]).index(), 2);
        let r = categories_of(code_system::ICD9CM, "437.3");
        assert_eq!(
            r.present().collect::<Vec<_>>(),
            vec![PeripheralVascularDisease, CerebrovascularDisease]
        );
        assert_eq!(r.index(), 2);
        assert_eq!(icd9(&["437.0"]).index(), 1);
    }

    #[test]
    fn only_the_three_systems_count_each_with_its_own_table() {
        let r = charlson([
            (code_system::SNOMED, "I50.9"),
            (code_system::ICD9CM, "I50.9"),
            (code_system::ICD10CM, "428.0"),
            ("LOCAL", "C78.00"),
            ("LOCAL", "22298006"),
            (code_system::LOINC, "428"),
            ("", "I50.9"),
        ]);
        assert_eq!(r.index(), 0);
        for (system, code) in [
            ("http://hl7.org/fhir/sid/icd-10-cm", "I50.9"),
            ("http://hl7.org/fhir/sid/icd-10", "I50.9"),
            ("ICD10", "I50.9"),
            ("http://hl7.org/fhir/sid/icd-9-cm", "428.0"),
            ("ICD9", "4280"),
            ("I9", "4280"),
            ("urn:oid:2.16.840.1.113883.6.103", "428.0"),
            ("http://snomed.info/sct", "84114007"),
            ("SNOMEDCT", "84114007"),
            ("SCT", "84114007"),
        ] {
            assert_eq!(
                category_of(system, code),
                Some(CongestiveHeartFailure),
                "{system} {code}"
            );
        }
    }

    /// The same string is a comorbidity in one system and not in another: the system, never
    /// the code's shape, picks the table.
    #[test]
    fn a_code_is_charlson_in_one_system_but_not_another() {
        // V43.4: ICD-9-CM aorta graft status (PVD); ICD-10 V43.4 is a car occupant injured
        // in a collision, no comorbidity.
        assert_eq!(
            category_of(code_system::ICD9CM, "V43.4"),
            Some(PeripheralVascularDisease)
        );
        assert_eq!(category_of(code_system::ICD10CM, "V43.4"), None);
        // 428251008 is SNOMED CT "History of appendectomy"; read with the ICD-9-CM table it
        // would start with 428 (heart failure).
        assert_eq!(category_of(code_system::SNOMED, "428251008"), None);
        assert_eq!(
            category_of(code_system::ICD9CM, "428251008"),
            Some(CongestiveHeartFailure)
        );
        // 410 is an ICD-9-CM MI, nothing in ICD-10; I21 is an ICD-10 MI, nothing in ICD-9.
        assert_eq!(
            category_of(code_system::ICD9CM, "410"),
            Some(MyocardialInfarction)
        );
        assert_eq!(category_of(code_system::ICD10CM, "410"), None);
        assert_eq!(category_of(code_system::ICD9CM, "I21.4"), None);
        // 22298006 (SNOMED CT MI) is nothing as an ICD code.
        assert_eq!(category_of(code_system::ICD10CM, "22298006"), None);
        assert_eq!(category_of(code_system::ICD9CM, "22298006"), None);
        assert_eq!(
            category_of(code_system::SNOMED, "22298006"),
            Some(MyocardialInfarction)
        );
    }

    #[test]
    fn severe_liver_supersedes_mild() {
        let r = icd(&["K76.0", "K76.6"]);
        assert!(r.contains(MildLiverDisease) && r.contains(SevereLiverDisease));
        assert_eq!(r.counted().collect::<Vec<_>>(), vec![SevereLiverDisease]);
        assert_eq!(r.index(), 3);
        assert_eq!(icd(&["B18.2"]).index(), 1);
        assert_eq!(icd9(&["571.5", "456.0"]).index(), 3);
    }

    #[test]
    fn complicated_diabetes_supersedes_uncomplicated() {
        assert_eq!(icd(&["E11.9", "E11.40"]).index(), 2);
        assert_eq!(icd(&["E11.9", "E11.65"]).index(), 1);
        assert_eq!(icd(&["E10.9", "E11.22"]).index(), 2);
        assert_eq!(icd9(&["250.00", "250.60"]).index(), 2);
    }

    #[test]
    fn metastatic_tumor_supersedes_malignancy() {
        assert_eq!(icd(&["C34.90", "C79.51"]).index(), 6);
        assert_eq!(icd(&["C34.90", "C85.90"]).index(), 2);
        assert_eq!(icd(&["C78.7"]).index(), 6);
        assert_eq!(icd9(&["162.9", "198.5"]).index(), 6);
    }

    /// A patient whose history spans systems: an old ICD-9-CM stay, an ICD-10-CM stay, a
    /// SNOMED CT problem list. Each category counts once and the hierarchy crosses systems.
    #[test]
    fn hierarchy_and_counting_across_systems() {
        // Diabetes with complications in ICD-9 supersedes diabetes without in SNOMED.
        let r = charlson([
            (code_system::SNOMED, "44054006"),
            (code_system::ICD9CM, "250.40"),
        ]);
        assert!(r.contains(DiabetesWithoutComplications));
        assert_eq!(
            r.counted().collect::<Vec<_>>(),
            vec![DiabetesWithComplications]
        );
        assert_eq!(r.index(), 2);
        // Metastasis in ICD-10 supersedes a SNOMED CT malignancy.
        let r = charlson([
            (code_system::SNOMED, "254637007"),
            (code_system::ICD10CM, "C79.51"),
        ]);
        assert_eq!(r.index(), 6);
        // Severe liver disease in SNOMED CT supersedes mild in ICD-9-CM.
        let r = charlson([
            (code_system::ICD9CM, "571.5"),
            (code_system::SNOMED, "34742003"),
        ]);
        assert_eq!(r.index(), 3);
        // Heart failure coded three ways counts once.
        let r = charlson([
            (code_system::ICD9CM, "428.0"),
            (code_system::ICD10CM, "I50.9"),
            (code_system::SNOMED, "84114007"),
        ]);
        assert_eq!(r.index(), 1);
        // Different categories from different systems add up.
        let r = charlson([
            (code_system::ICD9CM, "410.71"),
            (code_system::ICD10CM, "N18.4"),
            (code_system::SNOMED, "26929004"),
        ]);
        assert_eq!(r.index(), 1 + 2 + 1);
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
        let r = charlson(ICD9_EXAMPLES.iter().map(|(c, _)| (code_system::ICD9CM, *c)));
        assert_eq!((r.present().count(), r.index()), (17, 29));
        let r = charlson(
            SNOMED_CONCEPTS
                .iter()
                .map(|c| (code_system::SNOMED, c.code)),
        );
        assert_eq!((r.present().count(), r.index()), (17, 29));
    }

    #[test]
    fn icd10cm_translations_of_quan_codes() {
        assert_eq!(icd10_of("I85.11"), Some(SevereLiverDisease));
        assert_eq!(icd10_of("I85.00"), Some(SevereLiverDisease));
        assert_eq!(icd10_of("E08.9"), Some(DiabetesWithoutComplications));
        assert_eq!(icd10_of("E09.22"), Some(DiabetesWithComplications));
    }

    #[test]
    fn icd10_prefixes_do_not_overlap_between_categories() {
        assert_eq!(overlaps(CharlsonCoding::Icd10), vec![]);
    }

    /// In ICD-9-CM only the four codes Quan lists under two categories overlap: 437.3
    /// (peripheral vascular disease, and cerebrovascular disease as part of 430-438) and
    /// 404.03, 404.13, 404.93 (congestive heart failure and renal disease).
    #[test]
    fn icd9_prefixes_overlap_only_where_quan_lists_a_code_twice() {
        let mut found: Vec<(CharlsonCategory, &str, CharlsonCategory, &str)> =
            overlaps(CharlsonCoding::Icd9Cm);
        found.sort();
        assert_eq!(
            found,
            vec![
                (CongestiveHeartFailure, "40403", RenalDisease, "40403"),
                (CongestiveHeartFailure, "40413", RenalDisease, "40413"),
                (CongestiveHeartFailure, "40493", RenalDisease, "40493"),
                (
                    PeripheralVascularDisease,
                    "4373",
                    CerebrovascularDisease,
                    "437"
                ),
                (RenalDisease, "40403", CongestiveHeartFailure, "40403"),
                (RenalDisease, "40413", CongestiveHeartFailure, "40413"),
                (RenalDisease, "40493", CongestiveHeartFailure, "40493"),
            ]
        );
    }

    /// Every pair of prefixes of different categories where one starts with the other.
    fn overlaps(
        coding: CharlsonCoding,
    ) -> Vec<(
        CharlsonCategory,
        &'static str,
        CharlsonCategory,
        &'static str,
    )> {
        let mut out = Vec::new();
        for a in CharlsonCategory::ALL {
            for b in CharlsonCategory::ALL {
                if a == b {
                    continue;
                }
                for pa in a.prefixes_in(coding) {
                    for pb in b.prefixes_in(coding) {
                        if pa.starts_with(pb) {
                            out.push((a, *pa, b, *pb));
                        }
                    }
                }
            }
        }
        out
    }

    /// Prefixes are written the way the normalizer leaves codes: ICD-10 a letter and digits,
    /// ICD-9-CM three to five digits or a V code (no E code is a comorbidity).
    #[test]
    fn prefixes_are_well_formed() {
        for c in CharlsonCategory::ALL {
            for p in c.prefixes() {
                let b = p.as_bytes();
                assert!(b.len() >= 3 && b[0].is_ascii_uppercase(), "{p}");
                assert!(b[1..].iter().all(u8::is_ascii_digit), "{p}");
            }
            for p in c.icd9_prefixes() {
                let b = p.as_bytes();
                assert!((3..=5).contains(&b.len()), "{p}");
                assert!(b[0] == b'V' || b[0].is_ascii_digit(), "{p}");
                assert!(b[1..].iter().all(u8::is_ascii_digit), "{p}");
            }
            assert!(c.prefixes_in(CharlsonCoding::SnomedCt).is_empty());
        }
    }

    #[test]
    fn snomed_concepts_are_unique_sctids() {
        let mut seen = std::collections::BTreeSet::new();
        for c in SNOMED_CONCEPTS {
            assert!(seen.insert(c.code), "{} listed twice", c.code);
            let b = c.code.as_bytes();
            // SCTIDs: 6 to 18 digits, no leading zero.
            assert!((6..=18).contains(&b.len()) && b[0] != b'0', "{}", c.code);
            assert!(b.iter().all(u8::is_ascii_digit), "{}", c.code);
            assert!(
                c.display.ends_with("(disorder)") || c.display.ends_with("(situation)"),
                "{}",
                c.display
            );
        }
        assert_eq!(snomed_index().len(), SNOMED_CONCEPTS.len());
        // docs/scores.md states the count.
        assert_eq!(SNOMED_CONCEPTS.len(), 91);
    }

    #[test]
    fn coding_of_systems() {
        assert_eq!(CharlsonCoding::of("ICD10CM"), Some(CharlsonCoding::Icd10));
        assert_eq!(
            CharlsonCoding::of(" icd-9-cm "),
            Some(CharlsonCoding::Icd9Cm)
        );
        assert_eq!(
            CharlsonCoding::of("urn:oid:2.16.840.1.113883.6.96"),
            Some(CharlsonCoding::SnomedCt)
        );
        assert_eq!(CharlsonCoding::of("LOINC"), None);
        assert_eq!(CharlsonCoding::of("MIMIC-ITEMID"), None);
        for c in CharlsonCoding::ALL {
            assert_eq!(CharlsonCoding::of(c.system()), Some(c));
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
        assert_eq!(icd10_of("C50.9191234567890"), Some(Malignancy));
        assert_eq!(icd10_of("ÄÖÜ.€"), None);
        assert_eq!(category_of(code_system::ICD9CM, "ÄÖÜ.€"), None);
        assert_eq!(category_of(code_system::SNOMED, "ÄÖÜ.€"), None);
        assert_eq!(
            category_of(code_system::ICD9CM, "1629999999999999"),
            Some(Malignancy)
        );
    }
}
