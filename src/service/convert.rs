//! One concern: the conversions between the wire (`ward.v1` messages, Arrow IPC bytes and
//! Arrow Flight descriptors) and the library's types, in one place. Requests become library
//! requests with `TryFrom` (a bad field is [`Error::InvalidArgument`] naming it); library
//! results become responses with `From`. Handlers convert, authorize, call the library and
//! convert back; none builds or reads a message field by field.

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket};
use chrono::{DateTime, Utc};
use clap::ValueEnum as _;

use super::parse_ref;
use super::proto;
use crate::error::{Error, Result};
use crate::features::{
    Basis, FeatureSet, FeatureValue, Knowledge, MaterializeOutcome, Status as ValueStatus, Value,
};
use crate::ingest::mapping::Mapping;
use crate::ingest::pipeline::{Format, IngestOptions, IngestReport, MaxBad};
use crate::ingest::read::ReadPolicy;
use crate::ingest::Context;
use crate::lookup::{self, Entities, HistoricalOutcome, OnlineAnswer};
use crate::store::manifest::parse_time;
use crate::store::{ListFilter, Manifest, VerifyReport};

// ---- Datasets ----

/// A manifest as the protocol carries it.
impl From<&Manifest> for proto::Manifest {
    fn from(m: &Manifest) -> proto::Manifest {
        proto::Manifest {
            hash: m.hash.to_string(),
            name: m.name.clone(),
            kind: m.kind.to_string(),
            rows: m.rows,
            bytes: m.bytes,
            created_at: m
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ward_version: m.ward_version.clone(),
            columns: m
                .schema
                .iter()
                .map(|c| proto::Column {
                    name: c.name.clone(),
                    data_type: c.data_type.clone(),
                    nullable: c.nullable,
                })
                .collect(),
            lineage: Some(proto::Lineage {
                inputs: m.lineage.inputs.iter().map(|h| h.to_string()).collect(),
                definition: m
                    .lineage
                    .definition
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                params_json: if m.lineage.params.is_null() {
                    String::new()
                } else {
                    m.lineage.params.to_string()
                },
            }),
            labels: m
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// The store's listing filter from a `ListDatasets` request (empty fields match all).
impl TryFrom<&proto::ListDatasetsRequest> for ListFilter {
    type Error = Error;

    fn try_from(req: &proto::ListDatasetsRequest) -> Result<ListFilter> {
        Ok(ListFilter {
            kind: if req.kind.is_empty() {
                None
            } else {
                Some(req.kind.parse().map_err(|e: Error| match e {
                    Error::InvalidArgument { reason, .. } => Error::invalid("kind", reason),
                    e => e,
                })?)
            },
            name: (!req.name.is_empty()).then(|| req.name.clone()),
        })
    }
}

/// A version that verified.
impl From<&VerifyReport> for proto::VerifyDatasetResponse {
    fn from(report: &VerifyReport) -> proto::VerifyDatasetResponse {
        proto::VerifyDatasetResponse {
            hash: report.hash.to_string(),
            ok: true,
            rows: report.rows,
            files: report.files as u64,
            problem: String::new(),
        }
    }
}

/// A version that did not verify: `problem` says what is wrong with `m`.
pub(crate) fn verify_failed(m: &Manifest, problem: String) -> proto::VerifyDatasetResponse {
    proto::VerifyDatasetResponse {
        hash: m.hash.to_string(),
        ok: false,
        rows: 0,
        files: m.files.len() as u64,
        problem,
    }
}

// ---- Features ----

/// The knowledge a request's `as_occurred` flag asks for.
pub(crate) fn knowledge(as_occurred: bool) -> Knowledge {
    if as_occurred {
        Knowledge::AsOccurred
    } else {
        Knowledge::AsKnown
    }
}

/// A feature set as `ListFeatureSets` describes it, with its latest timeline (empty: none).
pub(crate) fn feature_set_info(set: &FeatureSet, timeline: String) -> proto::FeatureSetInfo {
    proto::FeatureSetInfo {
        name: set.name.clone(),
        definition: set.definition_hash().to_string(),
        features: set
            .features
            .iter()
            .map(|f| proto::FeatureInfo {
                name: f.name.clone(),
                kind: f.kind.as_str().to_string(),
                is_label: f.kind.is_label(),
                ttl_seconds: f.ttl_us.map_or(0, |us| us / 1_000_000),
            })
            .collect(),
        timeline,
        online: set.online,
        entity: set.entity.clone(),
    }
}

/// What a materialization did.
impl From<&MaterializeOutcome> for proto::MaterializeResponse {
    fn from(out: &MaterializeOutcome) -> proto::MaterializeResponse {
        proto::MaterializeResponse {
            timeline: out.hash.to_string(),
            definition: out.definition.to_string(),
            change_points: out.rows as u64,
            patients: out.recomputed as u64,
            created: out.created,
            previous: match &out.basis {
                Basis::Incremental { previous } => previous.to_string(),
                Basis::Full { .. } => String::new(),
            },
            full_reason: match &out.basis {
                Basis::Full { why } => why.clone(),
                Basis::Incremental { .. } => String::new(),
            },
            reused: out.reused as u64,
            mpi_links: out.mpi_links.map_or_else(String::new, |h| h.to_string()),
        }
    }
}

/// An online lookup as the library takes it.
#[derive(Debug, Clone)]
pub(crate) struct OnlineQuery {
    pub(crate) feature_set: String,
    pub(crate) patient_ids: Vec<String>,
    /// The features asked for (empty: all).
    pub(crate) features: Vec<String>,
    /// The time the values must hold at (`None`: now).
    pub(crate) at: Option<DateTime<Utc>>,
}

impl TryFrom<proto::OnlineRequest> for OnlineQuery {
    type Error = Error;

    fn try_from(req: proto::OnlineRequest) -> Result<OnlineQuery> {
        if req.feature_set.is_empty() {
            return Err(Error::invalid("feature_set", "empty: name a feature set"));
        }
        if req.patient_ids.is_empty() {
            return Err(Error::invalid(
                "patient_ids",
                "empty: give at least one patient",
            ));
        }
        if let Some(i) = req.patient_ids.iter().position(String::is_empty) {
            return Err(Error::invalid(format!("patient_ids[{i}]"), "empty"));
        }
        let at = if req.as_of.is_empty() {
            None
        } else {
            Some(parse_time(&req.as_of).ok_or_else(|| {
                Error::invalid(
                    "as_of",
                    format!(
                        "{:?}: use RFC 3339 (2026-01-31T12:00:00Z) or YYYY-MM-DD",
                        req.as_of
                    ),
                )
            })?)
        };
        Ok(OnlineQuery {
            feature_set: req.feature_set,
            patient_ids: req.patient_ids,
            features: req.features,
            at,
        })
    }
}

/// A feature value as the protocol carries it.
impl From<FeatureValue> for proto::FeatureValue {
    fn from(v: FeatureValue) -> proto::FeatureValue {
        let status = match v.status {
            ValueStatus::Present => proto::ValueStatus::Present,
            ValueStatus::NoData => proto::ValueStatus::NoData,
            ValueStatus::OutsideTtl => proto::ValueStatus::OutsideTtl,
        };
        proto::FeatureValue {
            value: v.value.map(|v| match v {
                Value::Num(x) => proto::feature_value::Value::Num(x),
                Value::Text(s) => proto::feature_value::Value::Text(s),
            }),
            status: status as i32,
        }
    }
}

/// An online lookup's answer.
impl From<OnlineAnswer> for proto::OnlineResponse {
    fn from(answer: OnlineAnswer) -> proto::OnlineResponse {
        proto::OnlineResponse {
            timeline: answer.timeline.to_string(),
            as_of: answer
                .at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            features: answer.features,
            patients: answer
                .patients
                .into_iter()
                .map(|p| proto::PatientFeatures {
                    patient_id: p.patient_id,
                    person_id: p.person_id.unwrap_or_default(),
                    values: p.values.into_iter().map(|(_, v)| v.into()).collect(),
                })
                .collect(),
        }
    }
}

/// A historical lookup as the library takes it: the set, the entity rows (sent inline as an
/// Arrow IPC stream, or a stored version), the timeline, the knowledge and the name.
impl TryFrom<proto::HistoricalRequest> for lookup::HistoricalRequest {
    type Error = Error;

    fn try_from(req: proto::HistoricalRequest) -> Result<lookup::HistoricalRequest> {
        use proto::historical_request::Entities as Given;
        if req.feature_set.is_empty() {
            return Err(Error::invalid("feature_set", "empty: name a feature set"));
        }
        let entities = match req.entities {
            Some(Given::EntitiesIpc(bytes)) => Entities::Batches(decode_entities(&bytes)?),
            Some(Given::EntitiesRef(r)) => Entities::Stored(parse_ref("entities_ref", &r)?),
            None => {
                return Err(Error::invalid(
                    "entities",
                    "missing: give entities_ipc (an Arrow IPC stream) or entities_ref (a stored version)",
                ))
            }
        };
        let mut out = lookup::HistoricalRequest::new(req.feature_set, entities);
        if !req.timeline.is_empty() {
            out.timeline = Some(parse_ref("timeline", &req.timeline)?);
        }
        out.knowledge = knowledge(req.as_occurred);
        if !req.name.is_empty() {
            out.name = Some(req.name);
        }
        Ok(out)
    }
}

/// The first message of a historical answer: what was made, and the schema of the batches
/// that follow.
pub(crate) fn historical_header(
    out: &HistoricalOutcome,
    schema: &Schema,
) -> Result<proto::HistoricalResponse> {
    let schema_ipc = IpcMessage::try_from(SchemaAsIpc::new(schema, &IpcWriteOptions::default()))
        .map_err(Error::Arrow)?;
    Ok(proto::HistoricalResponse {
        part: Some(proto::historical_response::Part::Header(
            proto::HistoricalHeader {
                training_set: out.hash.to_string(),
                timeline: out.timeline.map(|t| t.to_string()).unwrap_or_default(),
                entities: out.entities.to_string(),
                rows: out.rows as u64,
                schema_ipc: schema_ipc.0.to_vec(),
                consent: out
                    .consent
                    .as_ref()
                    .map(|c| c.version.clone())
                    .unwrap_or_default(),
                consent_excluded_rows: out.consent.as_ref().map_or(0, |c| c.excluded_rows),
                consent_excluded_patients: out.consent.as_ref().map_or(0, |c| c.excluded_patients),
            },
        )),
    })
}

/// Entity rows sent inline: an Arrow IPC stream (schema, then batches).
pub(crate) fn decode_entities(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let bad = |reason: String| Error::BadInput {
        location: "entities_ipc".into(),
        field: "-".into(),
        reason,
    };
    if bytes.is_empty() {
        return Err(bad(
            "empty: send an Arrow IPC stream (schema and record batches)".into(),
        ));
    }
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| bad(format!("not an Arrow IPC stream: {e}")))?;
    let mut batches = Vec::new();
    for (i, b) in reader.enumerate() {
        batches.push(b.map_err(|e| bad(format!("record batch {}: {e}", i + 1)))?);
    }
    if batches.is_empty() {
        return Err(bad("no record batches: send at least one entity row".into()));
    }
    Ok(batches)
}

/// `batch` as Arrow IPC streams (schema and one batch each), split by rows so that each
/// stays under `budget` bytes where a row allows.
pub(crate) fn encode_batch(batch: &RecordBatch, budget: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut pending = vec![batch.clone()];
    while let Some(b) = pending.pop() {
        let mut buf = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut buf, &b.schema())?;
            w.write(&b)?;
            w.finish()?;
        }
        if buf.len() > budget && b.num_rows() > 1 {
            let half = b.num_rows() / 2;
            // Pushed in reverse: the first half is encoded first.
            pending.push(b.slice(half, b.num_rows() - half));
            pending.push(b.slice(0, half));
        } else {
            out.push(buf);
        }
    }
    Ok(out)
}

// ---- Ingest ----

/// The pipeline's options from the request's, with `field` naming where they were; `now`
/// is the ingestion time and `read` says what the run may read.
pub(crate) fn ingest_options(
    o: Option<&proto::IngestOptions>,
    field: &str,
    now: DateTime<Utc>,
    read: &ReadPolicy,
) -> Result<IngestOptions> {
    let o = o.ok_or_else(|| {
        Error::invalid(
            field,
            "missing: give at least the format (csv, parquet, synthea, fhir, fhir-ndjson, hl7v2)",
        )
    })?;
    let names: Vec<&str> = Format::value_variants()
        .iter()
        .map(|f| f.as_str())
        .collect();
    let format = Format::value_variants()
        .iter()
        .copied()
        .find(|f| f.as_str() == o.format)
        .ok_or_else(|| {
            Error::invalid(
                format!("{field}.format"),
                format!("{:?} is not one of {}", o.format, names.join(", ")),
            )
        })?;
    if !o.source_system.is_empty() {
        return Err(Error::invalid(
            format!("{field}.source_system"),
            "must be empty: Ward records each input file's name as the source system",
        ));
    }
    let (mapping, mapping_text) = if o.mapping_toml.is_empty() {
        (None, None)
    } else {
        let m = Mapping::from_toml(&o.mapping_toml, &format!("{field}.mapping_toml"))?;
        (Some(m), Some(o.mapping_toml.clone()))
    };
    let max_bad = if o.max_bad.is_empty() {
        None
    } else {
        Some(o.max_bad.parse::<MaxBad>().map_err(|_| {
            Error::invalid(
                format!("{field}.max_bad"),
                format!(
                    "{:?}: give a count (100) or a share (0.05 or 5%)",
                    o.max_bad
                ),
            )
        })?)
    };
    let mut context = Context::new(now);
    if !o.zone.is_empty() {
        context.default_offset = parse_zone(&o.zone).ok_or_else(|| {
            Error::invalid(
                format!("{field}.zone"),
                format!("{:?}: use UTC or a fixed offset such as -05:00", o.zone),
            )
        })?;
    }
    Ok(IngestOptions {
        format,
        mapping,
        mapping_text,
        max_bad,
        context,
        read: read.clone(),
    })
}

/// `UTC`/`Z` or a fixed offset `+hh:mm` / `-hh:mm`.
fn parse_zone(zone: &str) -> Option<chrono::FixedOffset> {
    if zone.eq_ignore_ascii_case("utc") || zone == "Z" {
        return chrono::FixedOffset::east_opt(0);
    }
    chrono::DateTime::parse_from_rfc3339(&format!("2000-01-01T00:00:00{zone}"))
        .ok()
        .map(|d| *d.offset())
}

/// What an ingest did.
impl From<&IngestReport> for proto::IngestResponse {
    fn from(report: &IngestReport) -> proto::IngestResponse {
        proto::IngestResponse {
            raw_hash: report.raw.to_string(),
            curated: report
                .curated
                .iter()
                .map(|c| proto::CuratedVersion {
                    table: c.table.clone(),
                    hash: c.hash.to_string(),
                    rows: c.total_rows,
                    parsed_rows: c.parsed_rows,
                })
                .collect(),
            quarantine_hash: report.quarantine.map(|h| h.to_string()).unwrap_or_default(),
            records: report.curated.iter().map(|c| c.parsed_rows).sum(),
            bad_records: report.bad_total(),
            bad_by_reason: report.bad.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            skipped: report
                .skipped
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            files: report.files as u64,
            bytes: report.bytes,
        }
    }
}

// ---- Arrow Flight ----

/// The reference a Flight descriptor names.
pub(crate) fn descriptor_ref(d: &FlightDescriptor) -> Result<String> {
    match DescriptorType::try_from(d.r#type) {
        Ok(DescriptorType::Path) => match d.path.as_slice() {
            [one] => Ok(one.clone()),
            other => Err(Error::invalid(
                "descriptor.path",
                format!(
                    "{} elements: give one, a dataset reference (b3:HASH, NAME, NAME@TIME)",
                    other.len()
                ),
            )),
        },
        Ok(DescriptorType::Cmd) => std::str::from_utf8(&d.cmd)
            .map(str::to_string)
            .map_err(|_| Error::invalid("descriptor.cmd", "not UTF-8: give a dataset reference")),
        _ => Err(Error::invalid(
            "descriptor.type",
            "use PATH (one element) or CMD holding a dataset reference",
        )),
    }
}

/// The store's listing filter from `ListFlights` criteria: empty, or `kind=K` / `name=N`
/// separated by spaces or commas.
pub(crate) fn flight_filter(criteria: &[u8]) -> Result<ListFilter> {
    let text =
        std::str::from_utf8(criteria).map_err(|_| Error::invalid("criteria", "not UTF-8"))?;
    let mut filter = ListFilter::default();
    for part in text.split([',', ' ', '\n', '\t']).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("kind", k)) => filter.kind = Some(k.parse()?),
            Some(("name", n)) => filter.name = Some(n.to_string()),
            _ => {
                return Err(Error::invalid(
                    "criteria",
                    format!("{part:?}: give kind=KIND and/or name=NAME (or nothing for all)"),
                ))
            }
        }
    }
    Ok(filter)
}

/// A version as Flight describes it: its schema, its ticket (the full hash), total records
/// and stored bytes; `app_metadata` is JSON `{"name","kind","created_at"}`.
pub(crate) fn flight_info(m: &Manifest, schema: &Schema) -> Result<FlightInfo> {
    let hash = m.hash.to_string();
    let meta = serde_json::json!({
        "name": m.name,
        "kind": m.kind.as_str(),
        "created_at": m.created_at.to_rfc3339(),
    });
    FlightInfo::new()
        .try_with_schema(schema)
        .map_err(Error::Arrow)
        .map(|info| {
            info.with_descriptor(FlightDescriptor::new_path(vec![hash.clone()]))
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(hash)))
                .with_total_records(i64::try_from(m.rows).unwrap_or(i64::MAX))
                .with_total_bytes(i64::try_from(m.bytes).unwrap_or(i64::MAX))
                .with_ordered(true)
                .with_app_metadata(meta.to_string())
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn batches_split_under_the_budget_and_decode_back() {
        let n = 5_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("patient-{i:08}")),
                )),
            ],
        )
        .unwrap();
        let whole = encode_batch(&batch, usize::MAX).unwrap();
        assert_eq!(whole.len(), 1);
        let budget = whole[0].len() / 5;
        let parts = encode_batch(&batch, budget).unwrap();
        assert!(parts.len() >= 5, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.len() <= budget));
        let mut back = Vec::new();
        for p in &parts {
            back.extend(decode_entities(p).unwrap());
        }
        let back = arrow::compute::concat_batches(&schema, &back).unwrap();
        assert_eq!(back, batch, "the rows come back in order");
        assert!(decode_entities(b"").is_err());
        let e = decode_entities(b"garbage").unwrap_err();
        assert!(e.to_string().contains("entities_ipc"), "{e}");
    }

    #[test]
    fn zones() {
        assert_eq!(parse_zone("UTC").unwrap().local_minus_utc(), 0);
        assert_eq!(parse_zone("-05:00").unwrap().local_minus_utc(), -5 * 3600);
        assert!(parse_zone("EST").is_none());
    }
}
