//! Rebuilding a training set from its lineage: the timeline (or the curated versions) and
//! the entity rows it names, with the research consent it recorded, reproduce it bit for bit.

use arrow::array::RecordBatch;

use super::historical::{store_direct, store_training, Params, Target, OP_DIRECT, OP_TIMELINE};
use crate::error::{Error, Result};
use crate::features::{self, FeatureSet};
use crate::hash::ContentHash;
use crate::store::{Kind, Store};

/// Recomputes a training set from its lineage (the timeline and the entity rows it records)
/// and stores it; returns the hash, which is `hash` itself.
///
/// # Errors
/// [`Error::InvalidArgument`] when the version is not a training set made by [`historical`];
/// [`Error::NotFound`] when an input is gone; [`Error::Corrupt`] when the recomputation
/// arrives at another hash.
pub async fn rebuild(store: &Store, hash: &ContentHash) -> Result<ContentHash> {
    let m = store.manifest(hash)?;
    let not_training = || {
        Error::invalid(
            format!("version {hash}"),
            "is not a training set made by a historical lookup",
        )
    };
    let params: Params =
        serde_json::from_value(m.lineage.params.clone()).map_err(|_| not_training())?;
    if m.kind != Kind::Training {
        return Err(not_training());
    }
    let out = match (params.op.as_str(), m.lineage.inputs.as_slice()) {
        (OP_TIMELINE, [timeline, entities]) => {
            let (set, index) = features::load_index(store, timeline).await?;
            let (_, batches) = store.read(entities).await?;
            let batches = replay_consent(store, &params, batches).await?;
            store_training(
                store,
                &set,
                &index,
                *timeline,
                *entities,
                &batches,
                params,
                Target::rebuilt(m.name.clone()),
            )
            .await?
        }
        (OP_DIRECT, [curated @ .., entities]) if curated.len() == params.tables.len() => {
            let corrupt = |what: &str| Error::Corrupt {
                hash: hash.to_string(),
                what: what.to_string(),
            };
            let definition = params
                .definition
                .as_deref()
                .ok_or_else(|| corrupt("its lineage holds no definition"))?;
            let set = FeatureSet::from_canonical_json(definition, &format!("{hash} lineage"))?;
            if Some(set.definition_hash()) != m.lineage.definition {
                return Err(corrupt(
                    "the stored definition does not match the definition hash",
                ));
            }
            let refs: Vec<(String, ContentHash)> = params
                .tables
                .iter()
                .cloned()
                .zip(curated.iter().copied())
                .collect();
            let (_, batches) = store.read(entities).await?;
            let batches = replay_consent(store, &params, batches).await?;
            store_direct(
                store,
                &set,
                refs,
                *entities,
                &batches,
                params,
                Target::rebuilt(m.name.clone()),
            )
            .await?
        }
        _ => return Err(not_training()),
    };
    if out.hash != *hash {
        return Err(Error::Corrupt {
            hash: hash.to_string(),
            what: format!("rebuilt from its lineage it hashes to {}", out.hash),
        });
    }
    Ok(out.hash)
}

/// The entity rows of a training set being rebuilt, less the rows its lineage's consent left
/// out: the same `consent` version read at the same time.
async fn replay_consent(
    store: &Store,
    params: &Params,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let Some(applied) = &params.consent else {
        return Ok(batches);
    };
    let (batches, again) = crate::security::deid::apply_research_consent(
        store,
        batches,
        &params.patient_column,
        Some(applied),
    )
    .await?;
    if &again != applied {
        return Err(Error::Corrupt {
            hash: applied.version.clone(),
            what: format!(
                "consent replayed at {} leaves out {} rows of {} patients, the lineage says \
                 {} of {}",
                applied.at,
                again.excluded_rows,
                again.excluded_patients,
                applied.excluded_rows,
                applied.excluded_patients
            ),
        });
    }
    Ok(batches)
}
