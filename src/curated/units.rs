//! Lab units: one canonical UCUM unit per LOINC code that Ward's features and scores read
//! (and the common chemistry and blood-count panels), with the conversion of every accepted
//! unit to it.
//!
//! Every ingest path (FHIR `valueQuantity`, HL7 v2 OBX-6, mapped CSV/Parquet `unit`) calls
//! [`normalize`] on each `observations` row it builds:
//! - a LOINC code in [`TABLE`] with a numeric value and a unit the code accepts: the value is
//!   converted to the canonical unit and `unit` set to the canonical UCUM code; when either
//!   changed, `value_original` and `unit_original` keep what the source sent (rows already
//!   in the canonical spelling keep both null, so their bytes do not change);
//! - a unit the code does not accept (`mg/dL` for sodium): a [`UnitError`], which the ingest
//!   path turns into a quarantined record (reason `unconvertible_unit`) naming the code, the
//!   unit and the accepted units;
//! - a code not in the table, a row without a number, or a row without a unit: unchanged.
//!
//! Units are matched after [`unit_key`]: case folded, spaces and UCUM annotations (`{...}`)
//! dropped, `µ`/`μ` read as `u`, `^` as `*` and `10e3`/`x10*3` as `10*3`. So `mg/dl`,
//! `MG/DL` and `mg/dL` are one unit, as are `10^3/uL`, `x10E3/uL` and `10*3/uL`. (UCUM itself
//! is case-sensitive, but no accepted unit of one code differs from another only by case.)
//!
//! Converted values are rounded to 9 significant digits, far below any lab's precision, so
//! that `5 mmol/L` of glucose gives `90.08 mg/dL`, not `90.08000000000001`.
//!
//! Sources of the factors (`docs/curated-tables.md` lists them too):
//! - molar masses: IUPAC standard atomic weights (C 12.011, H 1.008, N 14.007, O 15.999), so
//!   glucose C6H12O6 180.156 g/mol, creatinine C4H7N3O 113.12 g/mol, urea nitrogen N2 28.014
//!   g/mol;
//! - hemoglobin in mmol/L counts the monomer (16,114.5 g/mol; ICSH / NVKC reference method as
//!   used in the Netherlands): 1 mmol/L = 1.6114 g/dL;
//! - HbA1c: the IFCC-NGSP master equation, NGSP (%) = 0.09148 × IFCC (mmol/mol) + 2.152
//!   (Hoelzel et al., Clin Chem 2004;50:166-174; NGSP "IFCC standardization");
//! - mEq/L = mmol/L for a monovalent ion (Na⁺, K⁺, HCO₃⁻);
//! - 10*3/uL = 10*9/L = K/uL (cell counts per microlitre × 1000 = per nanolitre).

use std::fmt;

use super::code_system;
use super::rows::Observation;

/// How a unit's value becomes the canonical unit's: `canonical = value × scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    /// Multiplier.
    pub scale: f64,
    /// Added after multiplying (only HbA1c's master equation has one).
    pub offset: f64,
}

const SAME: Conversion = Conversion {
    scale: 1.0,
    offset: 0.0,
};

const fn times(scale: f64) -> Conversion {
    Conversion { scale, offset: 0.0 }
}

/// Glucose, 180.156 g/mol: 1 mmol/L = 180.156 mg/L = 18.0156 mg/dL (18.016 as usually cited).
const GLUCOSE_MMOL_TO_MG_DL: f64 = 18.016;
/// Creatinine, 113.12 g/mol: 1 mg/dL = 10 mg/L / 113.12 g/mol = 88.40 umol/L; 88.42 is the
/// factor laboratories and KDIGO use, kept here.
const CREATININE_UMOL_PER_MG_DL: f64 = 88.42;
/// Urea nitrogen, N2 28.014 g/mol: 1 mmol/L = 28.014 mg/L = 2.8014 mg/dL (1 mg/dL = 0.357
/// mmol/L).
const UREA_N_MMOL_TO_MG_DL: f64 = 2.8014;
/// Hemoglobin monomer, 16,114.5 g/mol: 1 mmol/L = 1.6114 g/dL.
const HEMOGLOBIN_MMOL_TO_G_DL: f64 = 1.6114;

/// One unit a code accepts, in the spellings sources use, with its conversion.
#[derive(Debug)]
pub struct Accepted {
    /// The spellings (matched by [`unit_key`]); the first is the one error messages show.
    pub spellings: &'static [&'static str],
    /// To the canonical unit.
    pub conversion: Conversion,
}

/// The units of one LOINC code.
#[derive(Debug)]
pub struct CodeUnits {
    /// The LOINC codes sharing these units.
    pub codes: &'static [&'static str],
    /// What is measured.
    pub name: &'static str,
    /// The canonical UCUM unit.
    pub canonical: &'static str,
    /// Every accepted unit, the canonical one first.
    pub accepted: &'static [Accepted],
}

const MMOL_L: &[&str] = &["mmol/L", "mM"];
const MEQ_L: &[&str] = &["mEq/L", "meq/l"];
const MG_DL: &[&str] = &["mg/dL", "mg/100mL", "mg%"];
const G_DL: &[&str] = &["g/dL", "g/100mL", "gm/dL"];
const G_L: &[&str] = &["g/L"];
const UMOL_L: &[&str] = &["umol/L", "micromol/L", "mcmol/L", "uM"];
const PER_NL: &[&str] = &[
    "10*3/uL", "K/uL", "x10*3/uL", "10*3/mm3", "thou/uL", "10*9/L", "x10*9/L", "/nL", "K/mm3",
];
const PER_UL: &[&str] = &["/uL", "cells/uL", "/mm3", "cells/mm3"];

/// Sodium, potassium, bicarbonate: mmol/L, or mEq/L (equal for a monovalent ion).
const MONOVALENT: &[Accepted] = &[
    Accepted {
        spellings: MMOL_L,
        conversion: SAME,
    },
    Accepted {
        spellings: MEQ_L,
        conversion: SAME,
    },
];

/// Cell counts: 10*3/uL (= 10*9/L), or per microlitre.
const COUNTS: &[Accepted] = &[
    Accepted {
        spellings: PER_NL,
        conversion: SAME,
    },
    Accepted {
        spellings: PER_UL,
        conversion: times(0.001),
    },
];

/// Serum proteins in g/dL or g/L.
const PROTEIN: &[Accepted] = &[
    Accepted {
        spellings: G_DL,
        conversion: SAME,
    },
    Accepted {
        spellings: G_L,
        conversion: times(0.1),
    },
];

/// Glucose: mg/dL, or mmol/L × 18.016.
const GLUCOSE: &[Accepted] = &[
    Accepted {
        spellings: MG_DL,
        conversion: SAME,
    },
    Accepted {
        spellings: MMOL_L,
        conversion: times(GLUCOSE_MMOL_TO_MG_DL),
    },
];

/// Urea nitrogen: mg/dL, or mmol/L × 2.8014.
const UREA_N: &[Accepted] = &[
    Accepted {
        spellings: MG_DL,
        conversion: SAME,
    },
    Accepted {
        spellings: MMOL_L,
        conversion: times(UREA_N_MMOL_TO_MG_DL),
    },
];

/// The table: each LOINC code at most once.
pub const TABLE: &[CodeUnits] = &[
    CodeUnits {
        codes: &["718-7"],
        name: "hemoglobin",
        canonical: "g/dL",
        accepted: &[
            Accepted {
                spellings: G_DL,
                conversion: SAME,
            },
            Accepted {
                spellings: G_L,
                conversion: times(0.1),
            },
            Accepted {
                spellings: MMOL_L,
                conversion: times(HEMOGLOBIN_MMOL_TO_G_DL),
            },
        ],
    },
    CodeUnits {
        codes: &["2951-2", "2947-0"],
        name: "sodium",
        canonical: "mmol/L",
        accepted: MONOVALENT,
    },
    CodeUnits {
        codes: &["2823-3", "6298-4"],
        name: "potassium",
        canonical: "mmol/L",
        accepted: MONOVALENT,
    },
    CodeUnits {
        codes: &["1963-8", "2028-9"],
        name: "bicarbonate",
        canonical: "mmol/L",
        accepted: MONOVALENT,
    },
    CodeUnits {
        codes: &["2345-7", "2339-0"],
        name: "glucose",
        canonical: "mg/dL",
        accepted: GLUCOSE,
    },
    CodeUnits {
        codes: &["2160-0"],
        name: "creatinine",
        canonical: "mg/dL",
        accepted: &[
            Accepted {
                spellings: MG_DL,
                conversion: SAME,
            },
            Accepted {
                spellings: UMOL_L,
                conversion: times(1.0 / CREATININE_UMOL_PER_MG_DL),
            },
        ],
    },
    CodeUnits {
        codes: &["3094-0", "6299-2"],
        name: "urea nitrogen",
        canonical: "mg/dL",
        accepted: UREA_N,
    },
    CodeUnits {
        codes: &["1751-7"],
        name: "albumin",
        canonical: "g/dL",
        accepted: PROTEIN,
    },
    CodeUnits {
        codes: &["6690-2"],
        name: "leukocytes",
        canonical: "10*3/uL",
        accepted: COUNTS,
    },
    CodeUnits {
        codes: &["777-3"],
        name: "platelets",
        canonical: "10*3/uL",
        accepted: COUNTS,
    },
    CodeUnits {
        codes: &["4548-4"],
        name: "hemoglobin A1c",
        canonical: "%",
        accepted: &[
            Accepted {
                spellings: &["%", "percent", "% of total Hgb", "%Hb"],
                conversion: SAME,
            },
            Accepted {
                spellings: &["mmol/mol"],
                conversion: Conversion {
                    scale: 0.09148,
                    offset: 2.152,
                },
            },
        ],
    },
];

/// The units of a LOINC code, if the table has it.
pub fn units_of(loinc: &str) -> Option<&'static CodeUnits> {
    TABLE.iter().find(|u| u.codes.contains(&loinc))
}

/// A unit as matched: case folded, spaces and `{annotations}` dropped, `µ`/`μ` → `u`,
/// `^` → `*`, `10e3`/`x10*3` → `10*3`.
pub fn unit_key(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth > 0 || c.is_whitespace() => {}
            'µ' | 'μ' => out.push('u'),
            '^' => out.push('*'),
            _ => out.extend(c.to_lowercase()),
        }
    }
    let out = out.replace("10e", "10*");
    match out.strip_prefix('x') {
        Some(rest) if rest.starts_with("10*") => rest.to_string(),
        _ => out,
    }
}

/// A unit a code does not accept.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitError {
    /// The LOINC code.
    pub code: String,
    /// What the code measures.
    pub name: &'static str,
    /// The unit as the source wrote it.
    pub unit: String,
    /// The units the code accepts (first spelling of each).
    pub accepted: Vec<&'static str>,
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unit {:?} cannot be converted for LOINC {} ({}): accepted units are {}",
            self.unit,
            self.code,
            self.name,
            self.accepted.join(", ")
        )
    }
}

impl std::error::Error for UnitError {}

/// A value in the canonical unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Canonical {
    /// The converted value.
    pub value: f64,
    /// The canonical UCUM unit.
    pub unit: &'static str,
    /// The conversion applied.
    pub conversion: Conversion,
}

/// `value` in `unit` of LOINC `code` in the code's canonical unit; `Ok(None)` for a code not
/// in [`TABLE`].
///
/// # Errors
/// [`UnitError`] when the code is in the table and does not accept `unit`.
pub fn to_canonical(code: &str, value: f64, unit: &str) -> Result<Option<Canonical>, UnitError> {
    let Some(cu) = units_of(code) else {
        return Ok(None);
    };
    let key = unit_key(unit);
    let found = cu
        .accepted
        .iter()
        .find(|a| a.spellings.iter().any(|s| unit_key(s) == key));
    match found {
        Some(a) => Ok(Some(Canonical {
            value: convert(value, a.conversion),
            unit: cu.canonical,
            conversion: a.conversion,
        })),
        None => Err(UnitError {
            code: code.to_string(),
            name: cu.name,
            unit: unit.to_string(),
            accepted: cu
                .accepted
                .iter()
                .filter_map(|a| a.spellings.first())
                .copied()
                .collect(),
        }),
    }
}

fn convert(value: f64, c: Conversion) -> f64 {
    if c == SAME {
        return value;
    }
    round_sig(value * c.scale + c.offset, 9)
}

/// `x` rounded to `digits` significant digits.
fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let magnitude = x.abs().log10().floor() as i32;
    let p = 10f64.powi(digits - 1 - magnitude);
    let r = (x * p).round() / p;
    // Going through the shortest decimal text drops the last bit of noise of the division.
    format!(
        "{r:.*}",
        usize::try_from(digits - 1 - magnitude).unwrap_or(0)
    )
    .parse()
    .unwrap_or(r)
}

/// Converts a LOINC-coded row with a number and a unit to its code's canonical unit (see the
/// module documentation); keeps the value and unit as sent in `value_original` and
/// `unit_original` when either changes. A text value `<5` (a comparator and the same number)
/// is converted too.
///
/// # Errors
/// [`UnitError`] when the code is in [`TABLE`] and does not accept the unit; the row is then
/// unchanged.
pub fn normalize(row: &mut Observation) -> Result<(), UnitError> {
    if row.code.system != code_system::LOINC {
        return Ok(());
    }
    let (Some(value), Some(unit)) = (row.value_num, row.unit.as_deref()) else {
        return Ok(());
    };
    let Some(c) = to_canonical(&row.code.code, value, unit)? else {
        return Ok(());
    };
    if c.value.to_bits() == value.to_bits() && c.unit == unit {
        return Ok(());
    }
    if c.conversion != SAME {
        if let Some(text) = &row.value_text {
            let cmp_len = text
                .char_indices()
                .take_while(|(_, ch)| matches!(ch, '<' | '>' | '='))
                .count();
            let (cmp, num) = text.split_at(cmp_len);
            if cmp_len > 0 && num.trim().parse::<f64>().ok() == Some(value) {
                row.value_text = Some(format!("{cmp}{}", c.value));
            }
        }
    }
    row.value_original = Some(value);
    row.unit_original = row.unit.take();
    row.value_num = Some(c.value);
    row.unit = Some(c.unit.to_string());
    Ok(())
}

#[cfg(test)]
#[path = "units_tests.rs"]
mod tests;
