//! `ward.v1.Features`: feature sets, materialization, online and historical lookups.

use std::pin::Pin;

use arrow::array::{AsArray as _, RecordBatch};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::{IpcMessage, SchemaAsIpc};
use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::proto::{self, features_server::Features, historical_response::Part};
use super::{parse_ref, secure, version_stream, State};
use crate::error::{Error, Result};
use crate::features::{
    self, FeatureValue, Knowledge, MaterializeOptions, Status as ValueStatus, Value,
};
use crate::lookup::{self, Entities};
use crate::security::auth::RequestContext;
use crate::security::gate::{self, Admission};
use crate::security::note::AuditNote;
use crate::security::policy::Action;
use crate::store::manifest::parse_time;

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send + 'static>>;

/// The Features service over the server's store and feature repository.
#[derive(Debug, Clone)]
pub(crate) struct FeaturesService {
    pub(crate) state: State,
}

fn knowledge(as_occurred: bool) -> Knowledge {
    if as_occurred {
        Knowledge::AsOccurred
    } else {
        Knowledge::AsKnown
    }
}

impl FeaturesService {
    fn list(&self) -> Result<proto::ListFeatureSetsResponse> {
        let mut sets = Vec::new();
        for set in self.state.repo.sets.values() {
            let timeline = match lookup::choose_timeline(
                &self.state.store,
                &set.name,
                None,
                Knowledge::AsKnown,
            ) {
                Ok(m) => m.hash.to_string(),
                Err(Error::NotFound { .. }) => String::new(),
                Err(e) => return Err(e),
            };
            sets.push(proto::FeatureSetInfo {
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
            });
        }
        Ok(proto::ListFeatureSetsResponse { sets })
    }

    async fn materialize(
        &self,
        req: &proto::MaterializeRequest,
    ) -> Result<proto::MaterializeResponse> {
        if req.feature_set.is_empty() {
            return Err(Error::invalid("feature_set", "empty: name a feature set"));
        }
        let opts = MaterializeOptions {
            knowledge: knowledge(req.as_occurred),
            ..Default::default()
        };
        let (store, repo, set) = (
            self.state.store.clone(),
            self.state.repo.clone(),
            req.feature_set.clone(),
        );
        let out = self
            .state
            .jobs
            .run(async move { features::materialize(&store, &repo, &set, &opts).await })
            .await?;
        // Serve the new timeline online: sets declared online, and any set already loaded.
        // Requests in flight finish on the timeline they started with.
        let online = self.state.repo.set(&req.feature_set)?.online
            || self.state.online.snapshot(&req.feature_set).is_some();
        if !req.as_occurred && online {
            self.state.online.refresh(&req.feature_set).await?;
        }
        Ok(proto::MaterializeResponse {
            timeline: out.hash.to_string(),
            definition: out.definition.to_string(),
            change_points: out.rows as u64,
            patients: out.recomputed as u64,
            created: out.created,
        })
    }

    async fn online(
        &self,
        req: proto::OnlineRequest,
        admission: Option<&Admission>,
        note: &AuditNote,
    ) -> Result<proto::OnlineResponse> {
        // What the request names goes into its audit record, whatever becomes of it.
        note.set_context(&RequestContext::new("").with_feature_set(req.feature_set.clone()));
        note.set_patients(&req.patient_ids);
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
        if let Some(secured) = &self.state.secured {
            // Decided (and audited) before any value is read: a refused request learns
            // nothing, not even whether its patients exist.
            let (principal, admission) = gate::principal(admission)?;
            let mut ctx = gate::context(admission).with_feature_set(req.feature_set.clone());
            if let Some(serving) = self.state.online.snapshot(&req.feature_set) {
                ctx = ctx.with_datasets([serving.timeline.to_string()]);
            }
            secured.security.authorize(
                &principal,
                &ctx,
                Action::OnlineLookup,
                &req.patient_ids,
                note,
            )?;
        }
        let answer = self
            .state
            .online
            .get(&req.feature_set, &req.patient_ids, &req.features, at)
            .await?;
        note.add_datasets([answer.timeline.to_string()]);
        Ok(proto::OnlineResponse {
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
                    values: p
                        .values
                        .into_iter()
                        .map(|(_, v)| value_to_proto(v))
                        .collect(),
                })
                .collect(),
        })
    }

    async fn historical(
        &self,
        req: proto::HistoricalRequest,
        admission: Option<&Admission>,
        note: &AuditNote,
    ) -> Result<BoxStream<proto::HistoricalResponse>> {
        use proto::historical_request::Entities as Given;
        note.set_context(&RequestContext::new("").with_feature_set(req.feature_set.clone()));
        // Authorized before anything is read: the decision needs only the principal's roles
        // (the entity rows' patients are recorded, not decided on).
        let deidentify = match &self.state.secured {
            None => {
                note.set_action(Action::HistoricalIdentified);
                None
            }
            Some(secured) => self.authorize_historical(secured, admission, note)?,
        };
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
        let mut lookup_req = lookup::HistoricalRequest::new(req.feature_set.clone(), entities);
        if !req.timeline.is_empty() {
            lookup_req.timeline = Some(parse_ref("timeline", &req.timeline)?);
        }
        lookup_req.knowledge = knowledge(req.as_occurred);
        if !req.name.is_empty() {
            lookup_req.name = Some(req.name.clone());
        }
        if deidentify.is_some() {
            // A de-identified caller may look up only cohorts a steward approved: rows it
            // chose could name patients it knows and read back their tokens and date shifts
            // (docs/security.md, "What a de-identified caller can and cannot do").
            if let Err(e) =
                crate::security::deid::approved_entities(&self.state.store, &lookup_req.entities)
            {
                return Err(gate::refuse(note, Action::HistoricalDeidentified, e));
            }
        }
        let mut named = Vec::new();
        if let Some(r) = &lookup_req.timeline {
            named.push(self.state.store.resolve(r)?.hash.to_string());
        }
        if let Entities::Stored(r) = &lookup_req.entities {
            named.push(self.state.store.resolve(r)?.hash.to_string());
        }
        note.add_datasets(named);
        note.set_patients(&entity_patients(&self.state.store, &lookup_req).await?);
        let store = self.state.store.clone();
        let mut out = self
            .state
            .jobs
            .run(async move { lookup::historical(&store, lookup_req).await })
            .await?;
        note.add_datasets(out.timeline.map(|t| t.to_string()));
        note.add_datasets([out.entities.to_string()]);
        note.set_training_set(out.hash.to_string());
        if deidentify.is_some() {
            // The identified training set stays in the store (its lineage is the record);
            // the caller gets its de-identified version, whose lineage names it.
            let base = if req.name.is_empty() {
                format!("training-{}", req.feature_set)
            } else {
                req.name.clone()
            };
            let name = format!("{base}-deidentified");
            let (store, hash) = (self.state.store.clone(), out.hash);
            // The job holds the server's security (policy and key) for as long as it runs.
            let secured = self.state.secured.clone();
            let put = self
                .state
                .jobs
                .run(async move {
                    let deid = secured
                        .as_deref()
                        .and_then(|s| s.deid.as_ref())
                        .ok_or_else(|| {
                            Error::Internal("de-identification without a policy".into())
                        })?;
                    crate::security::deid::store_deidentified(
                        &store,
                        &hash,
                        &deid.policy,
                        &deid.key,
                        &name,
                    )
                    .await
                })
                .await?;
            // The record names the identified set (in `datasets`) and the one returned.
            note.add_datasets([out.hash.to_string()]);
            out.hash = put.manifest.hash;
            note.set_training_set(out.hash.to_string());
        }
        let (schema, batches) = version_stream(&self.state.store, &out.hash).await?;
        let schema_ipc =
            IpcMessage::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
                .map_err(Error::Arrow)?;
        let header = proto::HistoricalResponse {
            part: Some(Part::Header(proto::HistoricalHeader {
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
            })),
        };
        // Leave room for the message's framing under the encoding limit.
        let budget = self.state.limits.max_encoding_message_bytes * 3 / 4;
        let body = batches.flat_map(move |b| {
            let parts: Vec<std::result::Result<proto::HistoricalResponse, Status>> = match b {
                Ok(batch) => match encode_batch(&batch, budget) {
                    Ok(parts) => parts
                        .into_iter()
                        .map(|bytes| {
                            Ok(proto::HistoricalResponse {
                                part: Some(Part::BatchIpc(bytes)),
                            })
                        })
                        .collect(),
                    Err(e) => vec![Err(Status::from(e))],
                },
                Err(e) => vec![Err(Status::from(e))],
            };
            futures::stream::iter(parts)
        });
        Ok(Box::pin(
            futures::stream::once(async move { Ok(header) }).chain(body),
        ))
    }
}

impl FeaturesService {
    /// Decides a historical lookup for the admitted principal before anything is read:
    /// identified with `historical_identified`, de-identified with only
    /// `historical_deidentified` (returns the policy and key to apply), refused otherwise.
    /// The decision goes into the call's audit note.
    fn authorize_historical<'a>(
        &self,
        secured: &'a secure::Secured,
        admission: Option<&Admission>,
        note: &AuditNote,
    ) -> Result<Option<&'a secure::Deid>> {
        let (principal, admission) = gate::principal(admission)?;
        let ctx = gate::context(admission);
        let security = &secured.security;
        // Without either permission this denies as a de-identified read.
        let action = security
            .historical_action(&principal)
            .unwrap_or(Action::HistoricalDeidentified);
        if action == Action::HistoricalDeidentified
            && secured.deid.is_none()
            && security.historical_action(&principal).is_some()
        {
            let e = Error::precondition(
                "a de-identified training set",
                "the server has no [deid] (policy and key) in its configuration",
            );
            return Err(gate::refuse(note, action, e));
        }
        security.authorize(&principal, &ctx, action, &[], note)?;
        Ok(match action {
            Action::HistoricalDeidentified => secured.deid.as_ref(),
            _ => None,
        })
    }
}

/// The patient ids of a historical request's entity rows (inline or stored).
async fn entity_patients(
    store: &crate::store::Store,
    req: &lookup::HistoricalRequest,
) -> Result<Vec<String>> {
    let column = req
        .patient_column
        .clone()
        .unwrap_or_else(|| lookup::PATIENT_COLUMN.to_string());
    let stored;
    let batches: &[RecordBatch] = match &req.entities {
        Entities::Batches(b) => b,
        Entities::Stored(r) => {
            let m = store.resolve(r)?;
            stored = store.read(&m.hash).await?.1;
            &stored
        }
    };
    let mut ids = Vec::new();
    for (bi, b) in batches.iter().enumerate() {
        let col = b.column_by_name(&column).ok_or_else(|| Error::BadInput {
            location: format!("entities batch {bi}"),
            field: column.clone(),
            reason: "no such column: the entity rows need patient ids".into(),
        })?;
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8)?;
        let col = col.as_string::<i32>();
        ids.extend(col.iter().flatten().map(str::to_string));
    }
    Ok(ids)
}

fn value_to_proto(v: FeatureValue) -> proto::FeatureValue {
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

/// Entity rows sent inline: an Arrow IPC stream (schema, then batches).
fn decode_entities(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
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
fn encode_batch(batch: &RecordBatch, budget: usize) -> Result<Vec<Vec<u8>>> {
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

#[tonic::async_trait]
impl Features for FeaturesService {
    type GetHistoricalFeaturesStream = BoxStream<proto::HistoricalResponse>;

    async fn list_feature_sets(
        &self,
        _request: Request<proto::ListFeatureSetsRequest>,
    ) -> std::result::Result<Response<proto::ListFeatureSetsResponse>, Status> {
        Ok(Response::new(self.list()?))
    }

    async fn materialize(
        &self,
        request: Request<proto::MaterializeRequest>,
    ) -> std::result::Result<Response<proto::MaterializeResponse>, Status> {
        Ok(Response::new(self.materialize(request.get_ref()).await?))
    }

    async fn get_online_features(
        &self,
        request: Request<proto::OnlineRequest>,
    ) -> std::result::Result<Response<proto::OnlineResponse>, Status> {
        let admission = request.extensions().get::<Admission>().cloned();
        let note = gate::note(request.extensions());
        Ok(Response::new(
            self.online(request.into_inner(), admission.as_ref(), &note)
                .await?,
        ))
    }

    async fn get_historical_features(
        &self,
        request: Request<proto::HistoricalRequest>,
    ) -> std::result::Result<Response<Self::GetHistoricalFeaturesStream>, Status> {
        let admission = request.extensions().get::<Admission>().cloned();
        let note = gate::note(request.extensions());
        Ok(Response::new(
            self.historical(request.into_inner(), admission.as_ref(), &note)
                .await?,
        ))
    }
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
}
