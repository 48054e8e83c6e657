//! `ward.v1.Models`: register and list model cards (`crate::models`, docs/models.md).
//! `RegisterModel` is decided at the gate as `datasets_write`, `ListModels` as
//! `datasets_read`; the call's audit record names the card and its training set.

use tonic::{Request, Response, Status};

use super::proto::{self, models_server::Models};
use super::State;
use crate::error::Result;
use crate::models::{self, ModelCard, Registration};
use crate::store::Manifest;

/// The Models service over the server's store.
#[derive(Debug, Clone)]
pub(crate) struct ModelsService {
    pub(crate) state: State,
}

/// A card as the protocol carries it.
fn card_message(m: &Manifest, c: &ModelCard, created: bool) -> proto::ModelCard {
    proto::ModelCard {
        hash: m.hash.to_string(),
        name: c.name.clone(),
        training: c.training.to_string(),
        metrics: c.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        description: c.description.clone(),
        owner: c.owner.clone(),
        created_at: m
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        created,
    }
}

impl ModelsService {
    async fn register(
        &self,
        req: &proto::RegisterModelRequest,
        note: &crate::security::note::AuditNote,
    ) -> Result<proto::ModelCard> {
        let mut metrics = std::collections::BTreeMap::new();
        for (k, v) in &req.metrics {
            models::add_metric(&mut metrics, k, *v, "RegisterModelRequest.metrics")?;
        }
        let r = Registration {
            name: req.name.clone(),
            training: req.training.clone(),
            owner: req.owner.clone(),
            description: req.description.clone(),
            metrics,
        };
        let out = models::register(&self.state.store, &r).await?;
        note.add_datasets([out.manifest.hash.to_string(), out.card.training.to_string()]);
        Ok(card_message(&out.manifest, &out.card, out.created))
    }

    fn list(&self, req: &proto::ListModelsRequest) -> Result<proto::ListModelsResponse> {
        let name = Some(req.name.as_str()).filter(|n| !n.is_empty());
        let cards = models::list(&self.state.store, name)?;
        Ok(proto::ListModelsResponse {
            models: cards
                .iter()
                .map(|(m, c)| card_message(m, c, false))
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl Models for ModelsService {
    async fn register_model(
        &self,
        request: Request<proto::RegisterModelRequest>,
    ) -> Result<Response<proto::ModelCard>, Status> {
        let note = crate::security::gate::note(request.extensions());
        Ok(Response::new(
            self.register(request.get_ref(), &note).await?,
        ))
    }

    async fn list_models(
        &self,
        request: Request<proto::ListModelsRequest>,
    ) -> Result<Response<proto::ListModelsResponse>, Status> {
        Ok(Response::new(self.list(request.get_ref())?))
    }
}
