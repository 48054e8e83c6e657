//! The export: de-identifying a training set's batches (rows ordered by patient token),
//! the steward-approved entity rows a de-identified caller must use, and storing the
//! de-identified version with its lineage.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::SchemaRef;

use super::columns::*;
use super::identifiers::*;
use super::keys::*;
use super::policy::*;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::lookup::Entities;
use crate::store::{Kind, Lineage, Manifest, PutOptions, PutOutcome, Store};

/// Rows per output batch.
pub(super) const OUT_BATCH_ROWS: usize = 65_536;

/// De-identifies `batches` by `policy` with `key` for `export` (module docs). The rows come
/// back ordered by patient token (a keyed permutation), a patient's rows in their input
/// order, in batches of at most 65,536 rows, whatever the input's order and batching.
///
/// # Errors
/// [`Error::BadInput`] naming the batch, row and column: no patient id column, a null
/// patient id, a column of the wrong type, a status column holding other text, a date
/// shifted out of range.
pub fn deidentify(
    batches: &[RecordBatch],
    policy: &DeidPolicy,
    key: &DeidKey,
    export: &Export,
) -> Result<Vec<RecordBatch>> {
    let keys = key.export_keys(policy, export);
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let out_schema = output_schema(&first.schema(), policy)?;
    let mut out = Vec::with_capacity(batches.len());
    for (bi, batch) in batches.iter().enumerate() {
        let schema = batch.schema();
        if output_schema(&schema, policy)? != out_schema {
            return Err(Error::BadInput {
                location: format!("batch {bi}"),
                field: "-".into(),
                reason: "its schema differs from the first batch's".into(),
            });
        }
        out.push(deidentify_batch(
            batch,
            bi,
            policy,
            &keys,
            export,
            &out_schema,
        )?);
    }
    order_by_token(out_schema, out, policy)
}

pub(super) fn deidentify_batch(
    batch: &RecordBatch,
    bi: usize,
    policy: &DeidPolicy,
    keys: &ExportKeys,
    export: &Export,
    out_schema: &SchemaRef,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut rules = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        rules.push(policy.rule(f)?);
    }
    let subject = rules
        .iter()
        .position(|r| *r == Rule::Patient)
        .ok_or_else(|| Error::Internal("output_schema checked the patient column".into()))?;
    let ids = to_strings(batch.column(subject))?;
    let subject_name = schema.field(subject).name().clone();
    let mut cache: HashMap<&str, (i64, String)> = HashMap::new();
    let mut offsets = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        if ids.is_null(i) {
            return Err(Error::BadInput {
                location: format!("batch {bi} row {i}"),
                field: subject_name,
                reason: "null patient id: its row cannot be given a token".into(),
            });
        }
        let id = ids.value(i);
        let (off, _) = cache
            .entry(id)
            .or_insert_with(|| (keys.shift_days(id, policy), keys.patient_token(id)));
        offsets.push(*off);
    }
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
    for (ci, f) in schema.fields().iter().enumerate() {
        let col = batch.column(ci);
        let new: ArrayRef = match rules[ci] {
            Rule::Drop => continue,
            Rule::Patient => {
                let s = to_strings(col)?;
                let arr: StringArray = s
                    .iter()
                    .map(|v| {
                        v.map(|id| match cache.get(id) {
                            Some((_, t)) => t.clone(),
                            None => keys.patient_token(id),
                        })
                    })
                    .collect();
                Arc::new(arr)
            }
            Rule::Token => {
                let s = to_strings(col)?;
                let arr: StringArray = s
                    .iter()
                    .map(|v| v.map(|id| keys.identifier_token(id)))
                    .collect();
                Arc::new(arr)
            }
            Rule::Zip => {
                let s = to_strings(col)?;
                let arr: StringArray = s
                    .iter()
                    .map(|v| v.and_then(|z| zip3(z, &policy.restricted_zip3)))
                    .collect();
                Arc::new(arr)
            }
            Rule::Status => {
                let s = to_strings(col)?;
                if let Some(i) =
                    (0..s.len()).find(|&i| s.is_valid(i) && !STATUS_VALUES.contains(&s.value(i)))
                {
                    return Err(Error::BadInput {
                        location: format!("batch {bi} row {i}"),
                        field: f.name().clone(),
                        reason: format!(
                            "a status column holds text other than {}: allow the column by \
                             name (allow_columns) if it is meant to leave",
                            STATUS_VALUES.join(", ")
                        ),
                    });
                }
                Arc::new(s)
            }
            Rule::Age => cap_ages(col, policy.max_age)?,
            Rule::Year { birth } => years(col, birth, export.at)?,
            Rule::Shift => shift_dates(col, &offsets, f.name(), bi)?,
            Rule::Keep => col.clone(),
        };
        cols.push(new);
    }
    Ok(RecordBatch::try_new(out_schema.clone(), cols)?)
}

/// All rows, ordered by patient token (then input position), in batches of at most
/// [`OUT_BATCH_ROWS`].
pub(super) fn order_by_token(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    policy: &DeidPolicy,
) -> Result<Vec<RecordBatch>> {
    let all = arrow::compute::concat_batches(&schema, &batches)?;
    let subject = schema
        .fields()
        .iter()
        .position(|f| {
            policy
                .patient_id_columns
                .contains(&f.name().to_ascii_lowercase())
        })
        .ok_or_else(|| Error::Internal("output_schema checked the patient column".into()))?;
    let tokens = all.column(subject).as_string::<i32>();
    let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
    // Stable: a patient's rows keep their relative order.
    order.sort_by(|a, b| tokens.value(*a as usize).cmp(tokens.value(*b as usize)));
    let sorted = arrow::compute::take_record_batch(&all, &UInt32Array::from(order))?;
    let mut out = Vec::new();
    let mut start = 0;
    while start < sorted.num_rows() {
        let len = OUT_BATCH_ROWS.min(sorted.num_rows() - start);
        out.push(sorted.slice(start, len));
        start += len;
    }
    Ok(out)
}

/// Checks that the entity rows of a de-identified caller's historical lookup are a cohort a
/// steward approved: a stored version labelled [`APPROVED_COHORT_LABEL`]. Rows sent inline,
/// or any other version, are refused: a caller choosing the patients it names could send
/// patients it knows and read back their tokens (and date shifts), undoing every export made
/// with the same key. Returns the approved version's manifest.
///
/// # Errors
/// [`Error::PermissionDenied`] saying why (never naming a patient); as [`Store::resolve`].
pub fn approved_entities(store: &Store, entities: &Entities) -> Result<Manifest> {
    match entities {
        Entities::Batches(_) => Err(Error::PermissionDenied {
            reason: format!(
                "a de-identified caller cannot send entity rows: name a stored cohort a \
                 steward approved (label {APPROVED_COHORT_LABEL}) in entities_ref"
            ),
        }),
        Entities::Stored(r) => {
            let m = store.resolve(r)?;
            match m.labels.get(APPROVED_COHORT_LABEL) {
                Some(by) if !by.trim().is_empty() => Ok(m),
                _ => Err(Error::PermissionDenied {
                    reason: format!(
                        "entity rows {} are not a cohort a steward approved (label \
                         {APPROVED_COHORT_LABEL}): a de-identified caller may look up only \
                         approved cohorts",
                        m.hash
                    ),
                }),
            }
        }
    }
}

/// De-identifies the stored version `identified` and stores the result as its own version
/// (kind `training`, name `name`, label `deidentified = <profile>`). Its lineage names the
/// identified version (`inputs`) and the policy hash (`definition`), with the canonical
/// policy, the key id and the export time in `params`; never the key. The export time is
/// the store's clock.
///
/// # Errors
/// As [`Store::read`], [`deidentify`] and [`Store::put_batches`].
pub async fn store_deidentified(
    store: &Store,
    identified: &ContentHash,
    policy: &DeidPolicy,
    key: &DeidKey,
    name: &str,
) -> Result<PutOutcome> {
    let (schema, batches) = store.read(identified).await?;
    let out_schema = output_schema(&schema, policy)?;
    let export = Export {
        identified: *identified,
        at: store.clock().now(),
    };
    let out = deidentify(&batches, policy, key, &export)?;
    let mut opts = PutOptions::new(name, Kind::Training);
    let canonical: serde_json::Value =
        serde_json::from_str(&policy.canonical()).map_err(|e| Error::Internal(e.to_string()))?;
    opts.lineage = Lineage {
        inputs: vec![*identified],
        definition: Some(policy.hash()),
        params: serde_json::json!({
            "op": "deidentify",
            "profile": policy.name(),
            "policy": canonical,
            "key_id": key.key_id(),
            "salt": if policy.stable { "none (stable)" } else { "per export: the identified version" },
            "at": export.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }),
    };
    opts.labels
        .insert("deidentified".into(), policy.name().to_string());
    store.put_batches(out_schema, out, opts).await
}
