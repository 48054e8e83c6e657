//! `ward.v1.Features`: feature sets, materialization, online and historical lookups.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::proto::{self, features_server::Features};
use super::State;
use crate::error::{Error, Result};
use crate::features::{self, Knowledge, MaterializeOptions};
use crate::store::VersionRef;

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
            let timeline = match self
                .state
                .store
                .resolve(&VersionRef::Latest(features::timeline_name(&set.name)))
            {
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

    async fn materialize(&self, req: &proto::MaterializeRequest) -> Result<proto::MaterializeResponse> {
        if req.feature_set.is_empty() {
            return Err(Error::invalid("feature_set", "empty: name a feature set"));
        }
        let opts = MaterializeOptions {
            knowledge: knowledge(req.as_occurred),
            ..Default::default()
        };
        let out = features::materialize(&self.state.store, &self.state.repo, &req.feature_set, &opts)
            .await?;
        Ok(proto::MaterializeResponse {
            timeline: out.hash.to_string(),
            definition: out.definition.to_string(),
            change_points: out.rows as u64,
            patients: out.recomputed as u64,
            created: out.created,
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
        _request: Request<proto::OnlineRequest>,
    ) -> std::result::Result<Response<proto::OnlineResponse>, Status> {
        Err(Status::unimplemented("GetOnlineFeatures: waiting for ward::lookup"))
    }

    async fn get_historical_features(
        &self,
        _request: Request<proto::HistoricalRequest>,
    ) -> std::result::Result<Response<Self::GetHistoricalFeaturesStream>, Status> {
        Err(Status::unimplemented("GetHistoricalFeatures: waiting for ward::lookup"))
    }
}
