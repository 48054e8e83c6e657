//! One concern: the curated SNOMED CT list of the Charlson categories ([`SNOMED_CONCEPTS`]),
//! long because it is a table of concepts, each with its id, name and category; and its
//! index by concept id.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::CharlsonCategory;

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
pub(super) fn snomed_index() -> &'static HashMap<&'static str, CharlsonCategory> {
    static INDEX: OnceLock<HashMap<&'static str, CharlsonCategory>> = OnceLock::new();
    INDEX.get_or_init(|| {
        SNOMED_CONCEPTS
            .iter()
            .map(|c| (c.code, c.category))
            .collect()
    })
}
