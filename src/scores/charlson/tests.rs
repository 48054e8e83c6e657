//! Tests of the Charlson index: every category in every code system, the hierarchy rules.

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
