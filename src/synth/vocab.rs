//! The fixed code tables the generator draws from: chronic conditions (ICD-10-CM, chosen so
//! every Charlson category of Quan et al. 2005 is exercised), admission reasons, labs (LOINC
//! with UCUM units), procedures (SNOMED CT), medications (RxNorm), encounter types (SNOMED
//! CT), services, discharge dispositions, and the clinician pool.
//!
//! Codes and displays are real; their frequencies are invented (docs/synth.md).

/// A code with its display, in the curated system named by the table it sits in.
pub(crate) type Code = (&'static str, &'static str);

/// Chronic condition families. The generator branches on a few of them (which service a
/// stay goes to, which lab moves), so they are an enum rather than rows of data alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Hypertension,
    Hyperlipidemia,
    Diabetes,
    HeartFailure,
    Copd,
    Ckd,
    OldMi,
    Pvd,
    Cerebrovascular,
    Dementia,
    Rheumatic,
    PepticUlcer,
    MildLiver,
    SevereLiver,
    Hemiplegia,
    Cancer,
    Hiv,
    AtrialFibrillation,
    Depression,
}

/// A chronic condition: its ICD-10-CM variants with Charlson weights (Charlson 1987 weights
/// on the Quan 2005 ICD-10 categories; 0 for conditions outside the index), its prevalence
/// by age band (< 40, 40-64, >= 65) and the RxNorm drug started when it is diagnosed.
pub(crate) struct Chronic {
    pub(crate) family: Family,
    /// (code, display, Charlson weight, relative frequency among variants).
    pub(crate) variants: &'static [(&'static str, &'static str, u8, u32)],
    pub(crate) prevalence: [f64; 3],
    pub(crate) drug: Option<Code>,
}

/// The chronic conditions, prevalence as the probability a patient of that age band has the
/// condition by mid-period.
pub(crate) const CHRONIC: &[Chronic] = &[
    Chronic {
        family: Family::Hypertension,
        variants: &[("I10", "Essential (primary) hypertension", 0, 1)],
        prevalence: [0.05, 0.30, 0.60],
        drug: Some(("314076", "lisinopril 10 MG Oral Tablet")),
    },
    Chronic {
        family: Family::Hyperlipidemia,
        variants: &[("E78.5", "Hyperlipidemia, unspecified", 0, 1)],
        prevalence: [0.03, 0.25, 0.45],
        drug: Some(("259255", "atorvastatin 80 MG Oral Tablet")),
    },
    Chronic {
        family: Family::Diabetes,
        variants: &[
            (
                "E11.9",
                "Type 2 diabetes mellitus without complications",
                1,
                70,
            ),
            (
                "E11.65",
                "Type 2 diabetes mellitus with hyperglycemia",
                1,
                10,
            ),
            (
                "E11.22",
                "Type 2 diabetes mellitus with diabetic chronic kidney disease",
                2,
                12,
            ),
            (
                "E11.40",
                "Type 2 diabetes mellitus with diabetic neuropathy, unspecified",
                2,
                8,
            ),
        ],
        prevalence: [0.02, 0.12, 0.22],
        drug: Some((
            "860975",
            "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
        )),
    },
    Chronic {
        family: Family::HeartFailure,
        variants: &[
            ("I50.9", "Heart failure, unspecified", 1, 40),
            (
                "I50.22",
                "Chronic systolic (congestive) heart failure",
                1,
                30,
            ),
            (
                "I50.32",
                "Chronic diastolic (congestive) heart failure",
                1,
                20,
            ),
            (
                "I11.0",
                "Hypertensive heart disease with heart failure",
                1,
                10,
            ),
        ],
        prevalence: [0.002, 0.02, 0.09],
        drug: Some(("313988", "furosemide 40 MG Oral Tablet")),
    },
    Chronic {
        family: Family::Copd,
        variants: &[
            (
                "J44.9",
                "Chronic obstructive pulmonary disease, unspecified",
                1,
                80,
            ),
            ("J43.9", "Emphysema, unspecified", 1, 20),
        ],
        prevalence: [0.005, 0.05, 0.12],
        drug: Some((
            "895994",
            "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
        )),
    },
    Chronic {
        family: Family::Ckd,
        variants: &[
            (
                "N18.30",
                "Chronic kidney disease, stage 3 unspecified",
                2,
                50,
            ),
            ("N18.4", "Chronic kidney disease, stage 4 (severe)", 2, 22),
            ("N18.5", "Chronic kidney disease, stage 5", 2, 8),
            ("N18.6", "End stage renal disease", 2, 6),
            ("N18.9", "Chronic kidney disease, unspecified", 2, 14),
        ],
        prevalence: [0.005, 0.05, 0.15],
        drug: None,
    },
    Chronic {
        family: Family::OldMi,
        variants: &[("I25.2", "Old myocardial infarction", 1, 1)],
        prevalence: [0.002, 0.03, 0.08],
        drug: Some((
            "866414",
            "24 HR metoprolol succinate 100 MG Extended Release Oral Tablet",
        )),
    },
    Chronic {
        family: Family::Pvd,
        variants: &[("I73.9", "Peripheral vascular disease, unspecified", 1, 1)],
        prevalence: [0.001, 0.02, 0.06],
        drug: None,
    },
    Chronic {
        family: Family::Cerebrovascular,
        variants: &[
            (
                "I69.30",
                "Unspecified sequelae of cerebral infarction",
                1,
                60,
            ),
            (
                "G45.9",
                "Transient cerebral ischemic attack, unspecified",
                1,
                40,
            ),
        ],
        prevalence: [0.001, 0.02, 0.07],
        drug: None,
    },
    Chronic {
        family: Family::Dementia,
        variants: &[
            (
                "F03.90",
                "Unspecified dementia without behavioral disturbance",
                1,
                60,
            ),
            ("G30.9", "Alzheimer's disease, unspecified", 1, 40),
        ],
        prevalence: [0.0, 0.002, 0.06],
        drug: None,
    },
    Chronic {
        family: Family::Rheumatic,
        variants: &[
            ("M06.9", "Rheumatoid arthritis, unspecified", 1, 80),
            ("M32.9", "Systemic lupus erythematosus, unspecified", 1, 20),
        ],
        prevalence: [0.003, 0.015, 0.02],
        drug: None,
    },
    Chronic {
        family: Family::PepticUlcer,
        variants: &[(
            "K25.9",
            "Gastric ulcer, unspecified as acute or chronic, without hemorrhage or perforation",
            1,
            1,
        )],
        prevalence: [0.002, 0.01, 0.02],
        drug: None,
    },
    Chronic {
        family: Family::MildLiver,
        variants: &[
            (
                "K76.0",
                "Fatty (change of) liver, not elsewhere classified",
                1,
                60,
            ),
            ("B18.2", "Chronic viral hepatitis C", 1, 40),
        ],
        prevalence: [0.005, 0.02, 0.02],
        drug: None,
    },
    Chronic {
        family: Family::SevereLiver,
        variants: &[("K76.6", "Portal hypertension", 3, 1)],
        prevalence: [0.0, 0.003, 0.005],
        drug: None,
    },
    Chronic {
        family: Family::Hemiplegia,
        variants: &[(
            "G81.90",
            "Hemiplegia, unspecified affecting unspecified side",
            2,
            1,
        )],
        prevalence: [0.001, 0.003, 0.008],
        drug: None,
    },
    Chronic {
        family: Family::Cancer,
        variants: &[
            ("C18.9", "Malignant neoplasm of colon, unspecified", 2, 25),
            (
                "C34.90",
                "Malignant neoplasm of unspecified part of unspecified bronchus or lung",
                2,
                25,
            ),
            (
                "C50.919",
                "Malignant neoplasm of unspecified site of unspecified female breast",
                2,
                25,
            ),
            (
                "C85.90",
                "Non-Hodgkin lymphoma, unspecified, unspecified site",
                2,
                15,
            ),
            (
                "C25.9",
                "Malignant neoplasm of pancreas, unspecified",
                2,
                10,
            ),
        ],
        prevalence: [0.003, 0.03, 0.07],
        drug: None,
    },
    Chronic {
        family: Family::Hiv,
        variants: &[("B20", "Human immunodeficiency virus [HIV] disease", 6, 1)],
        prevalence: [0.001, 0.003, 0.002],
        drug: None,
    },
    Chronic {
        family: Family::AtrialFibrillation,
        variants: &[("I48.91", "Unspecified atrial fibrillation", 0, 1)],
        prevalence: [0.001, 0.02, 0.10],
        drug: Some(("1364430", "apixaban 2.5 MG Oral Tablet")),
    },
    Chronic {
        family: Family::Depression,
        variants: &[(
            "F32.9",
            "Major depressive disorder, single episode, unspecified",
            0,
            1,
        )],
        prevalence: [0.06, 0.08, 0.08],
        drug: Some(("312938", "sertraline 100 MG Oral Tablet")),
    },
];

/// Secondary malignancy codes (Charlson "metastatic solid tumour", weight 6), added to some
/// cancers some time after their onset.
pub(crate) const METASTASIS: &[Code] = &[
    ("C78.00", "Secondary malignant neoplasm of unspecified lung"),
    ("C79.51", "Secondary malignant neoplasm of bone"),
    (
        "C78.7",
        "Secondary malignant neoplasm of liver and intrahepatic bile duct",
    ),
];

/// Hospital services: the curated value, the HL7 v2 table 0069 code written in PV1-10 and
/// FHIR `serviceType`, and that code's display.
pub(crate) const SERVICES: &[(&str, &str, &str)] = &[
    ("medicine", "MED", "Medical service"),
    ("surgery", "SUR", "Surgical service"),
    ("cardiology", "CAR", "Cardiac service"),
    ("oncology", "ONC", "Oncology service"),
    ("orthopedics", "ORT", "Orthopedic service"),
    ("neurology", "NEU", "Neurology service"),
];

/// Index into [`SERVICES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Medicine = 0,
    Surgery = 1,
    Cardiology = 2,
    Oncology = 3,
    Orthopedics = 4,
    Neurology = 5,
}

impl Service {
    pub(crate) fn name(self) -> &'static str {
        SERVICES[self as usize].0
    }
}

/// Finds a service by its curated name.
pub(crate) fn service_by_name(name: &str) -> Option<(&'static str, &'static str, &'static str)> {
    SERVICES.iter().copied().find(|s| s.0 == name)
}

/// Discharge dispositions: the curated value (the FHIR R4 `discharge-disposition` code), its
/// display, and the UB-04 patient status code written in HL7 v2 PV1-36.
pub(crate) const DISPOSITIONS: &[(&str, &str, &str)] = &[
    ("home", "Home", "01"),
    ("snf", "Skilled nursing facility", "03"),
    ("rehab", "Rehabilitation", "62"),
    ("hosp", "Hospice", "50"),
    ("other-hcf", "Other healthcare facility", "02"),
    ("long", "Long-term care", "63"),
    ("aadvice", "Left against advice", "07"),
    ("exp", "Expired", "20"),
];

/// Finds a disposition by its curated value.
pub(crate) fn disposition_by_name(
    name: &str,
) -> Option<(&'static str, &'static str, &'static str)> {
    DISPOSITIONS.iter().copied().find(|d| d.0 == name)
}

/// The disposition value of an in-hospital death.
pub(crate) const EXPIRED: &str = "exp";

/// Encounter type codes (SNOMED CT), as Synthea writes them.
pub(crate) const ENC_INPATIENT: Code = ("32485007", "Hospital admission (procedure)");
pub(crate) const ENC_ELECTIVE: Code = ("305408004", "Admission to surgical department (procedure)");
pub(crate) const ENC_EMERGENCY: Code = ("50849002", "Emergency room admission (procedure)");
pub(crate) const ENC_CHECKUP: Code = ("185349003", "Encounter for check up (procedure)");
pub(crate) const ENC_FOLLOWUP: Code = ("390906007", "Follow-up encounter (procedure)");
pub(crate) const ENC_SYMPTOM: Code = ("185345009", "Encounter for symptom (procedure)");

/// Why a patient is admitted: the principal diagnosis (ICD-10-CM), the service, the SNOMED
/// CT procedure performed (if the reason comes with one), an inpatient drug (RxNorm) and the
/// effect on labs.
#[derive(Clone, Copy)]
pub(crate) struct Reason {
    pub(crate) dx: Code,
    pub(crate) service: Service,
    pub(crate) procedure: Option<Code>,
    pub(crate) drug: Option<Code>,
    pub(crate) effect: LabEffect,
}

/// How an admission reason moves the labs on admission (recovering towards discharge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabEffect {
    None,
    Infection,
    Bleeding,
    KidneyInjury,
    Hyperglycemia,
    FluidOverload,
}

const CEFAZOLIN: Code = ("1665060", "cefazolin 2000 MG Injection");
const PIP_TAZO: Code = (
    "1659131",
    "piperacillin 2000 MG / tazobactam 250 MG Injection",
);
const FUROSEMIDE_IV: Code = ("1719286", "10 ML furosemide 10 MG/ML Injection");
const INSULIN: Code = (
    "106892",
    "insulin isophane, human 70 UNT/ML / insulin, regular, human 30 UNT/ML Injectable Suspension [Humulin]",
);
const ENOXAPARIN: Code = (
    "854235",
    "0.4 ML enoxaparin sodium 100 MG/ML Prefilled Syringe",
);
const CISPLATIN: Code = ("1736854", "cisplatin 50 MG Injection");
const OXYCODONE: Code = (
    "1049221",
    "acetaminophen 325 MG / oxycodone hydrochloride 5 MG Oral Tablet",
);

/// Unplanned admission reasons for anyone.
pub(crate) const GENERAL_REASONS: &[Reason] = &[
    Reason {
        dx: ("J18.9", "Pneumonia, unspecified organism"),
        service: Service::Medicine,
        procedure: Some(("399208008", "Plain chest X-ray (procedure)")),
        drug: Some(PIP_TAZO),
        effect: LabEffect::Infection,
    },
    Reason {
        dx: ("A41.9", "Sepsis, unspecified organism"),
        service: Service::Medicine,
        procedure: None,
        drug: Some(PIP_TAZO),
        effect: LabEffect::Infection,
    },
    Reason {
        dx: ("N39.0", "Urinary tract infection, site not specified"),
        service: Service::Medicine,
        procedure: None,
        drug: Some(CEFAZOLIN),
        effect: LabEffect::Infection,
    },
    Reason {
        dx: ("L03.90", "Cellulitis, unspecified"),
        service: Service::Medicine,
        procedure: None,
        drug: Some(CEFAZOLIN),
        effect: LabEffect::Infection,
    },
    Reason {
        dx: ("K92.2", "Gastrointestinal hemorrhage, unspecified"),
        service: Service::Medicine,
        procedure: Some(("5447007", "Transfusion (procedure)")),
        drug: None,
        effect: LabEffect::Bleeding,
    },
    Reason {
        dx: ("R55", "Syncope and collapse"),
        service: Service::Medicine,
        procedure: None,
        drug: None,
        effect: LabEffect::None,
    },
    Reason {
        dx: ("I21.4", "Non-ST elevation (NSTEMI) myocardial infarction"),
        service: Service::Cardiology,
        procedure: Some(("415070008", "Percutaneous coronary intervention (procedure)")),
        drug: Some(ENOXAPARIN),
        effect: LabEffect::None,
    },
    Reason {
        dx: ("I63.9", "Cerebral infarction, unspecified"),
        service: Service::Neurology,
        procedure: Some((
            "418891003",
            "Computed tomography of chest and abdomen (procedure)",
        )),
        drug: None,
        effect: LabEffect::None,
    },
    Reason {
        dx: ("S72.001A", "Fracture of unspecified part of neck of right femur, initial encounter for closed fracture"),
        service: Service::Orthopedics,
        procedure: Some(("52734007", "Total replacement of hip (procedure)")),
        drug: Some(OXYCODONE),
        effect: LabEffect::Bleeding,
    },
    Reason {
        dx: ("K35.80", "Unspecified acute appendicitis"),
        service: Service::Surgery,
        procedure: Some(("80146002", "Appendectomy (procedure)")),
        drug: Some(CEFAZOLIN),
        effect: LabEffect::Infection,
    },
];

/// Unplanned admission reasons driven by a chronic condition.
pub(crate) fn chronic_reason(family: Family) -> Option<Reason> {
    Some(match family {
        Family::HeartFailure => Reason {
            dx: (
                "I50.23",
                "Acute on chronic systolic (congestive) heart failure",
            ),
            service: Service::Cardiology,
            procedure: Some(("40701008", "Echocardiography (procedure)")),
            drug: Some(FUROSEMIDE_IV),
            effect: LabEffect::FluidOverload,
        },
        Family::Copd => Reason {
            dx: (
                "J44.1",
                "Chronic obstructive pulmonary disease with (acute) exacerbation",
            ),
            service: Service::Medicine,
            procedure: Some(("399208008", "Plain chest X-ray (procedure)")),
            drug: None,
            effect: LabEffect::Infection,
        },
        Family::Diabetes => Reason {
            dx: ("E11.65", "Type 2 diabetes mellitus with hyperglycemia"),
            service: Service::Medicine,
            procedure: None,
            drug: Some(INSULIN),
            effect: LabEffect::Hyperglycemia,
        },
        Family::Ckd => Reason {
            dx: ("N17.9", "Acute kidney failure, unspecified"),
            service: Service::Medicine,
            procedure: Some(("265764009", "Renal dialysis (procedure)")),
            drug: None,
            effect: LabEffect::KidneyInjury,
        },
        Family::Cancer => Reason {
            dx: ("Z51.11", "Encounter for antineoplastic chemotherapy"),
            service: Service::Oncology,
            procedure: Some(("367336001", "Chemotherapy (procedure)")),
            drug: Some(CISPLATIN),
            effect: LabEffect::Bleeding,
        },
        Family::Cerebrovascular => Reason {
            dx: ("I63.9", "Cerebral infarction, unspecified"),
            service: Service::Neurology,
            procedure: None,
            drug: None,
            effect: LabEffect::None,
        },
        Family::OldMi => Reason {
            dx: ("I20.0", "Unstable angina"),
            service: Service::Cardiology,
            procedure: Some((
                "415070008",
                "Percutaneous coronary intervention (procedure)",
            )),
            drug: Some(ENOXAPARIN),
            effect: LabEffect::None,
        },
        Family::SevereLiver => Reason {
            dx: ("I85.11", "Secondary esophageal varices with bleeding"),
            service: Service::Medicine,
            procedure: Some(("5447007", "Transfusion (procedure)")),
            drug: None,
            effect: LabEffect::Bleeding,
        },
        _ => return None,
    })
}

/// Elective (planned) admission reasons.
pub(crate) const ELECTIVE_REASONS: &[Reason] = &[
    Reason {
        dx: ("M17.11", "Unilateral primary osteoarthritis, right knee"),
        service: Service::Orthopedics,
        procedure: Some(("609588000", "Total knee replacement (procedure)")),
        drug: Some(OXYCODONE),
        effect: LabEffect::None,
    },
    Reason {
        dx: ("M16.11", "Unilateral primary osteoarthritis, right hip"),
        service: Service::Orthopedics,
        procedure: Some(("52734007", "Total replacement of hip (procedure)")),
        drug: Some(OXYCODONE),
        effect: LabEffect::None,
    },
    Reason {
        dx: (
            "K80.20",
            "Calculus of gallbladder without cholecystitis without obstruction",
        ),
        service: Service::Surgery,
        procedure: Some(("38102005", "Cholecystectomy (procedure)")),
        drug: Some(CEFAZOLIN),
        effect: LabEffect::None,
    },
    Reason {
        dx: (
            "I25.10",
            "Atherosclerotic heart disease of native coronary artery without angina pectoris",
        ),
        service: Service::Cardiology,
        procedure: Some(("232717009", "Coronary artery bypass grafting (procedure)")),
        drug: Some(ENOXAPARIN),
        effect: LabEffect::Bleeding,
    },
    Reason {
        dx: ("C18.9", "Malignant neoplasm of colon, unspecified"),
        service: Service::Surgery,
        procedure: Some(("43075005", "Partial resection of colon (procedure)")),
        drug: Some(CEFAZOLIN),
        effect: LabEffect::Bleeding,
    },
];

/// Emergency department visit reasons (treated and released).
pub(crate) const ED_REASONS: &[Code] = &[
    ("R07.9", "Chest pain, unspecified"),
    ("R10.9", "Unspecified abdominal pain"),
    (
        "S93.401A",
        "Sprain of unspecified ligament of right ankle, initial encounter",
    ),
    ("J06.9", "Acute upper respiratory infection, unspecified"),
    ("R51.9", "Headache, unspecified"),
    ("N39.0", "Urinary tract infection, site not specified"),
    (
        "S01.81XA",
        "Laceration without foreign body of other part of head, initial encounter",
    ),
    ("R06.02", "Shortness of breath"),
];

/// A lab: LOINC code and display, UCUM unit, decimals kept, and the hard range values are
/// clamped to (the bounds the distribution tests check, docs/synth.md).
pub(crate) struct Lab {
    pub(crate) code: Code,
    pub(crate) unit: &'static str,
    pub(crate) decimals: i32,
    pub(crate) range: (f64, f64),
    /// The reference interval written in HL7 OBX-7.
    pub(crate) reference: &'static str,
}

/// Index into [`LABS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Analyte {
    Hemoglobin = 0,
    Leukocytes = 1,
    Platelets = 2,
    Sodium = 3,
    Potassium = 4,
    Creatinine = 5,
    Glucose = 6,
}

pub(crate) const LABS: &[Lab] = &[
    Lab {
        code: ("718-7", "Hemoglobin [Mass/volume] in Blood"),
        unit: "g/dL",
        decimals: 1,
        range: (4.0, 20.0),
        reference: "12.0-17.5",
    },
    Lab {
        code: (
            "6690-2",
            "Leukocytes [#/volume] in Blood by Automated count",
        ),
        unit: "10*3/uL",
        decimals: 1,
        range: (0.5, 50.0),
        reference: "4.0-11.0",
    },
    Lab {
        code: ("777-3", "Platelets [#/volume] in Blood by Automated count"),
        unit: "10*3/uL",
        decimals: 0,
        range: (10.0, 900.0),
        reference: "150-400",
    },
    Lab {
        code: ("2951-2", "Sodium [Moles/volume] in Serum or Plasma"),
        unit: "mmol/L",
        decimals: 0,
        range: (110.0, 165.0),
        reference: "135-145",
    },
    Lab {
        code: ("2823-3", "Potassium [Moles/volume] in Serum or Plasma"),
        unit: "mmol/L",
        decimals: 1,
        range: (2.0, 7.5),
        reference: "3.5-5.1",
    },
    Lab {
        code: ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
        unit: "mg/dL",
        decimals: 2,
        range: (0.3, 15.0),
        reference: "0.60-1.30",
    },
    Lab {
        code: ("2345-7", "Glucose [Mass/volume] in Serum or Plasma"),
        unit: "mg/dL",
        decimals: 0,
        range: (40.0, 600.0),
        reference: "70-99",
    },
];

/// Inpatient and ED draws: CBC and basic chemistry.
pub(crate) const HOSPITAL_PANEL: &[Analyte] = &[
    Analyte::Hemoglobin,
    Analyte::Leukocytes,
    Analyte::Platelets,
    Analyte::Sodium,
    Analyte::Potassium,
    Analyte::Creatinine,
    Analyte::Glucose,
];

/// Clinic draws: a smaller panel.
pub(crate) const CLINIC_PANEL: &[Analyte] = &[
    Analyte::Hemoglobin,
    Analyte::Sodium,
    Analyte::Potassium,
    Analyte::Creatinine,
    Analyte::Glucose,
];

/// Drugs prescribed at discharge (30-day supply) whatever the reason.
pub(crate) const DISCHARGE_DRUGS: &[Code] = &[
    ("313782", "acetaminophen 325 MG Oral Tablet"),
    ("310965", "ibuprofen 200 MG Oral Tablet"),
];

/// Given and family names: public-domain common names, combined at random.
pub(crate) const GIVEN_FEMALE: &[&str] = &[
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Betty",
    "Sandra",
    "Margaret",
    "Ashley",
    "Kimberly",
    "Emily",
    "Donna",
    "Michelle",
    "Carol",
    "Amanda",
    "Melissa",
    "Deborah",
    "Stephanie",
    "Rebecca",
    "Laura",
    "Helen",
    "Sharon",
    "Cynthia",
    "Kathleen",
    "Amy",
];
pub(crate) const GIVEN_MALE: &[&str] = &[
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
    "Christopher",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Donald",
    "Steven",
    "Paul",
    "Andrew",
    "Joshua",
    "Kenneth",
    "Kevin",
    "Brian",
    "George",
    "Timothy",
    "Ronald",
    "Edward",
    "Jason",
    "Jeffrey",
    "Ryan",
    "Jacob",
    "Gary",
];
pub(crate) const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
];

/// Three-digit ZIP prefixes of the simulated catchment area.
pub(crate) const ZIP3: &[&str] = &["021", "022", "024", "017", "018", "019"];

/// The clinician pool: `C00000`..`C01999`, split by role. Primary care first, then
/// emergency, then each service in [`SERVICES`] order.
pub(crate) const PRIMARY_CARE: (u32, u32) = (0, 1200);
pub(crate) const EMERGENCY_MDS: (u32, u32) = (1200, 1300);
pub(crate) const SERVICE_MDS: [(u32, u32); 6] = [
    (1300, 1550),
    (1550, 1700),
    (1700, 1800),
    (1800, 1880),
    (1880, 1950),
    (1950, 2000),
];

/// The clinician id of pool member `n`.
pub(crate) fn clinician_id(n: u32) -> String {
    format!("C{n:05}")
}

/// A clinician's name, derived from the id so every format writes the same one.
pub(crate) fn clinician_name(id: &str) -> (&'static str, &'static str) {
    let n: usize = id.get(1..).and_then(|s| s.parse().ok()).unwrap_or(0);
    let given = if n.is_multiple_of(2) {
        GIVEN_FEMALE[(n / 2) % GIVEN_FEMALE.len()]
    } else {
        GIVEN_MALE[(n / 2) % GIVEN_MALE.len()]
    };
    (FAMILY[(n * 7 + 3) % FAMILY.len()], given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_charlson_weight_class_is_present() {
        let weights: std::collections::BTreeSet<u8> = CHRONIC
            .iter()
            .flat_map(|c| c.variants.iter().map(|v| v.2))
            .collect();
        assert_eq!(weights, [0, 1, 2, 3, 6].into_iter().collect());
    }

    #[test]
    fn lab_ranges_hold_their_reference_intervals() {
        for lab in LABS {
            let (lo, hi) = lab.reference.split_once('-').expect("lo-hi");
            let (lo, hi): (f64, f64) = (lo.parse().expect("lo"), hi.parse().expect("hi"));
            assert!(lab.range.0 < lo && hi < lab.range.1, "{}", lab.code.0);
        }
    }

    #[test]
    fn clinician_names_are_stable() {
        assert_eq!(clinician_name("C00012"), clinician_name(&clinician_id(12)));
        assert_ne!(clinician_name("C00012"), clinician_name("C00013"));
    }
}
