//! `ward.v1.Features`: feature sets, materialization, online and historical lookups.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::convert::{self, OnlineQuery};
use super::proto::{self, features_server::Features, historical_response::Part};
use super::{secure, version_stream, State};
use crate::error::{Error, Result};
use crate::features::{self, Knowledge, MaterializeOptions};
use crate::lookup;
use crate::security::auth::RequestContext;
use crate::security::gate::{self, Admission};
use crate::security::note::AuditNote;
use crate::security::policy::Action;

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send + 'static>>;

/// The Features service over the server's store and feature repository.
#[derive(Debug, Clone)]
pub(crate) struct FeaturesService {
    pub(crate) state: State,
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
            sets.push(convert::feature_set_info(set, timeline));
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
        let entity = match req.entity.as_str() {
            "" => features::Entity::Patient,
            e => features::Entity::parse(e, "entity")?,
        };
        let opts = MaterializeOptions {
            knowledge: convert::knowledge(req.as_occurred),
            entity,
            ..Default::default()
        };
        let (store, repo, set, full) = (
            self.state.store.clone(),
            self.state.repo.clone(),
            req.feature_set.clone(),
            req.full,
        );
        let out = self
            .state
            .jobs
            .run(async move {
                let out = features::materialize_latest(&store, &repo, &set, &opts, full).await?;
                // The set's expectations, stored with the version (docs/quality.md).
                crate::quality::check_timeline(&store, &repo, &set, &out.hash).await?;
                Ok(out)
            })
            .await?;
        // Serve the new timeline online: sets declared online, and any set already loaded.
        // Requests in flight finish on the timeline they started with.
        let online = self.state.repo.set(&req.feature_set)?.online
            || self.state.online.snapshot(&req.feature_set).is_some();
        if !req.as_occurred && online {
            // Incremental: only the changed patients are loaded, the rest shared.
            self.state.online.apply(&req.feature_set, &out).await?;
        }
        Ok((&out).into())
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
        // The request's time, for the online lookup log.
        let requested_at = self.state.store.clock().now();
        let req = OnlineQuery::try_from(req)?;
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
            .get(&req.feature_set, &req.patient_ids, &req.features, req.at)
            .await?;
        note.add_datasets([answer.timeline.to_string()]);
        // Buffered only; written by the log's flusher (docs/monitoring.md).
        if let Some(log) = &self.state.online_log {
            log.record(&req.feature_set, requested_at, &answer);
        }
        Ok(answer.into())
    }

    async fn historical(
        &self,
        req: proto::HistoricalRequest,
        admission: Option<&Admission>,
        note: &AuditNote,
    ) -> Result<BoxStream<proto::HistoricalResponse>> {
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
        let lookup_req = lookup::HistoricalRequest::try_from(req)?;
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
        // The versions the request names and its patients go into the record before the
        // lookup runs (the entity rows are read once, here).
        let mut resolved = lookup::resolve_historical(&self.state.store, lookup_req)?;
        note.add_datasets(
            resolved
                .timeline
                .iter()
                .chain(&resolved.stored_entities)
                .map(ToString::to_string),
        );
        note.set_patients(&resolved.patients(&self.state.store).await?);
        let training_name = resolved.name.clone();
        let store = self.state.store.clone();
        let mut out = self
            .state
            .jobs
            .run(async move { lookup::historical_resolved(&store, resolved).await })
            .await?;
        note.add_datasets(out.timeline.map(|t| t.to_string()));
        note.add_datasets([out.entities.to_string()]);
        note.set_training_set(out.hash.to_string());
        if deidentify.is_some() {
            // The identified training set stays in the store (its lineage is the record);
            // the caller gets its de-identified version, whose lineage names it.
            let name = format!("{training_name}-deidentified");
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
        let header = convert::historical_header(&out, &schema)?;
        // Leave room for the message's framing under the encoding limit.
        let budget = self.state.limits.max_encoding_message_bytes * 3 / 4;
        let body = batches.flat_map(move |b| {
            let parts: Vec<std::result::Result<proto::HistoricalResponse, Status>> = match b {
                Ok(batch) => match convert::encode_batch(&batch, budget) {
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
