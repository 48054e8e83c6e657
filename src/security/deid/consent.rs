//! Research consent: the rows of patients who refused research use are left out of every
//! training set, and the `consent` version read is recorded.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::store::{Kind, Store};

/// The curated table research opt-outs are read from.
pub const CONSENT_TABLE: &str = "consent";

/// What [`NO_CONSENT`] stands for in a lineage: the store held no `consent` version when the
/// export was made, so no patient was left out.
pub const NO_CONSENT: &str = "none";

/// The consent a research export applied, recorded in its lineage (`lineage.params.consent`)
/// so that it can be checked and rebuilt: which `consent` version, at which time (the
/// store's clock when the export was made), and how much it left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentApplied {
    /// The `consent` version read (`b3:<hex>`), or [`NO_CONSENT`] when the store had none.
    pub version: String,
    /// The time the opt-outs were read as of.
    pub at: DateTime<Utc>,
    /// Patients of the entity rows left out because they opted out of research.
    pub excluded_patients: u64,
    /// Entity rows left out (all rows of those patients).
    pub excluded_rows: u64,
}

impl ConsentApplied {
    /// The `consent` version read, if any.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `version` is neither a hash nor [`NO_CONSENT`].
    pub fn hash(&self) -> Result<Option<ContentHash>> {
        if self.version == NO_CONSENT {
            return Ok(None);
        }
        self.version.parse().map(Some).map_err(|_| {
            Error::invalid(
                "lineage.params.consent.version",
                format!("{:?} is not a version hash", self.version),
            )
        })
    }
}

/// Leaves out of `entities` every row whose patient opted out of research as known at the
/// export time: research exports (training sets) must not hold them (`docs/security.md`,
/// "Consent"). The opt-outs are the `consent` table's decisions in force at that time
/// ([`crate::curated::consent`] has the rule). A new export (`replay` = `None`) reads the
/// latest `consent` version at the store clock's now; a rebuild passes the
/// [`ConsentApplied`] of the lineage, and the same version is read at the same time, so the
/// rebuild leaves out the same rows. Rows keep their order; batches are kept even when
/// emptied (the schema stays).
///
/// # Errors
/// [`Error::InvalidArgument`] when `patient_column` is not a text column of the rows;
/// [`Error::Corrupt`] when the `consent` version does not have the table's columns; store
/// errors reading it.
pub async fn apply_research_consent(
    store: &Store,
    entities: Vec<RecordBatch>,
    patient_column: &str,
    replay: Option<&ConsentApplied>,
) -> Result<(Vec<RecordBatch>, ConsentApplied)> {
    let (version, at) = match replay {
        Some(r) => (r.hash()?, r.at),
        None => {
            let found = store.resolve(&crate::store::VersionRef::Latest(CONSENT_TABLE.into()));
            let version = match found {
                Ok(m) if m.kind == Kind::Curated => Some(m.hash),
                Ok(m) => {
                    return Err(Error::Corrupt {
                        hash: m.hash.to_string(),
                        what: format!(
                            "the latest {CONSENT_TABLE} version is a {} version, not curated",
                            m.kind
                        ),
                    })
                }
                Err(Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            (version, store.clock().now())
        }
    };
    let consent = match version {
        Some(h) => {
            let (_, batches) = store.read(&h).await?;
            crate::curated::consent::research_at(&batches, at).map_err(|what| Error::Corrupt {
                hash: h.to_string(),
                what,
            })?
        }
        None => crate::curated::consent::ResearchConsent::default(),
    };
    let mut excluded_rows = 0u64;
    let mut excluded = BTreeSet::new();
    let mut out = Vec::with_capacity(entities.len());
    for (bi, b) in entities.into_iter().enumerate() {
        if consent.opted_out.is_empty() {
            out.push(b);
            continue;
        }
        let col = b.column_by_name(patient_column).ok_or_else(|| {
            Error::invalid(
                format!("entity rows batch {bi}"),
                format!("no patient column {patient_column:?}"),
            )
        })?;
        let ids = cast(col, &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let keep: arrow::array::BooleanArray = (0..ids.len())
            .map(|i| {
                let out = ids.is_valid(i) && consent.opted_out.contains(ids.value(i));
                if out {
                    excluded.insert(ids.value(i).to_string());
                }
                Some(!out)
            })
            .collect();
        excluded_rows += keep.false_count() as u64;
        out.push(arrow::compute::filter_record_batch(&b, &keep)?);
    }
    let applied = ConsentApplied {
        version: version.map_or_else(|| NO_CONSENT.to_string(), |h| h.to_string()),
        at,
        excluded_patients: excluded.len() as u64,
        excluded_rows,
    };
    Ok((out, applied))
}
