//! `ward.v1.Datasets`: list, describe, verify and tag versions.

use tonic::{Request, Response, Status};

use super::convert;
use super::proto::{self, datasets_server::Datasets};
use super::{parse_ref, State};
use crate::error::{Error, Result};
use crate::store::ListFilter;

/// The Datasets service over the server's store.
#[derive(Debug, Clone)]
pub(crate) struct DatasetsService {
    pub(crate) state: State,
}

impl DatasetsService {
    fn list(&self, req: &proto::ListDatasetsRequest) -> Result<proto::ListDatasetsResponse> {
        let all = self.state.store.list(&ListFilter::try_from(req)?)?;
        Ok(proto::ListDatasetsResponse {
            datasets: all.iter().map(proto::Manifest::from).collect(),
        })
    }

    async fn verify(&self, reference: &str) -> Result<proto::VerifyDatasetResponse> {
        let m = self.state.store.resolve(&parse_ref("ref", reference)?)?;
        let store = self.state.store.clone();
        let hash = m.hash;
        match self
            .state
            .jobs
            .run(async move { store.verify(&hash).await })
            .await
        {
            Ok(report) => Ok((&report).into()),
            Err(Error::Corrupt { what, .. }) => Ok(convert::verify_failed(&m, what)),
            Err(e) => Err(e),
        }
    }
}

#[tonic::async_trait]
impl Datasets for DatasetsService {
    async fn list_datasets(
        &self,
        request: Request<proto::ListDatasetsRequest>,
    ) -> Result<Response<proto::ListDatasetsResponse>, Status> {
        Ok(Response::new(self.list(request.get_ref())?))
    }

    async fn get_dataset(
        &self,
        request: Request<proto::GetDatasetRequest>,
    ) -> Result<Response<proto::Manifest>, Status> {
        let r = parse_ref("ref", &request.get_ref().r#ref)?;
        let m = self.state.store.resolve(&r)?;
        Ok(Response::new((&m).into()))
    }

    async fn verify_dataset(
        &self,
        request: Request<proto::VerifyDatasetRequest>,
    ) -> Result<Response<proto::VerifyDatasetResponse>, Status> {
        Ok(Response::new(self.verify(&request.get_ref().r#ref).await?))
    }

    async fn tag_dataset(
        &self,
        request: Request<proto::TagDatasetRequest>,
    ) -> Result<Response<proto::TagDatasetResponse>, Status> {
        let req = request.get_ref();
        let m = self.state.store.resolve(&parse_ref("ref", &req.r#ref)?)?;
        let reason = Some(req.override_reason.as_str()).filter(|r| !r.trim().is_empty());
        let overridden = crate::quality::gate_tag(&self.state.store, &req.name, &m, reason).await?;
        let note = crate::security::gate::note(request.extensions());
        note.add_datasets([m.hash.to_string()]);
        if !overridden.is_empty() {
            note.add_reason(&crate::quality::override_note(
                &overridden,
                reason.unwrap_or(""),
            ));
        }
        self.state.store.tag(&req.name, &m.hash)?;
        Ok(Response::new(proto::TagDatasetResponse {
            name: req.name.clone(),
            hash: m.hash.to_string(),
        }))
    }
}
