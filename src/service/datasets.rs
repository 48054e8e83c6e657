//! `ward.v1.Datasets`: list, describe, verify and tag versions.

use tonic::{Request, Response, Status};

use super::proto::{self, datasets_server::Datasets};
use super::{parse_ref, State};
use crate::error::{Error, Result};
use crate::store::{ListFilter, Manifest};

/// The Datasets service over the server's store.
#[derive(Debug, Clone)]
pub(crate) struct DatasetsService {
    pub(crate) state: State,
}

/// A manifest as the protocol carries it.
pub(crate) fn manifest_to_proto(m: &Manifest) -> proto::Manifest {
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

impl DatasetsService {
    fn list(&self, req: &proto::ListDatasetsRequest) -> Result<proto::ListDatasetsResponse> {
        let filter = ListFilter {
            kind: if req.kind.is_empty() {
                None
            } else {
                Some(req.kind.parse().map_err(|e: Error| match e {
                    Error::InvalidArgument { reason, .. } => Error::invalid("kind", reason),
                    e => e,
                })?)
            },
            name: (!req.name.is_empty()).then(|| req.name.clone()),
        };
        let all = self.state.store.list(&filter)?;
        Ok(proto::ListDatasetsResponse {
            datasets: all.iter().map(manifest_to_proto).collect(),
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
            Ok(report) => Ok(proto::VerifyDatasetResponse {
                hash: report.hash.to_string(),
                ok: true,
                rows: report.rows,
                files: report.files as u64,
                problem: String::new(),
            }),
            Err(Error::Corrupt { what, .. }) => Ok(proto::VerifyDatasetResponse {
                hash: m.hash.to_string(),
                ok: false,
                rows: 0,
                files: m.files.len() as u64,
                problem: what,
            }),
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
        Ok(Response::new(manifest_to_proto(&m)))
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
        self.state.store.tag(&req.name, &m.hash)?;
        Ok(Response::new(proto::TagDatasetResponse {
            name: req.name.clone(),
            hash: m.hash.to_string(),
        }))
    }
}
