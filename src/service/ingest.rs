//! `ward.v1.Ingest`: ingest of server-side paths and of uploaded files.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt as _;
use tonic::{Request, Response, Status, Streaming};

use super::convert::ingest_options;
use super::proto::{self, ingest_server::Ingest, ingest_upload_request::Part};
use super::State;
use crate::error::{Error, Result};
use crate::ingest::pipeline;

/// The Ingest service over the server's store.
#[derive(Debug, Clone)]
pub(crate) struct IngestService {
    pub(crate) state: State,
}

/// A file name that cannot leave the upload folder.
fn check_file_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0']);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "header.file_name",
            format!(
                "{name:?}: give a plain file name (1-255 bytes, no / or \\, not starting with .)"
            ),
        ))
    }
}

impl IngestService {
    async fn paths(&self, req: &proto::IngestPathsRequest) -> Result<proto::IngestResponse> {
        let read = &self.state.ingest_paths;
        if read.roots.is_none() {
            return Err(Error::precondition(
                "IngestPaths",
                "refused: the server has no ingest roots; set [ingest] roots in its configuration to the folders it may read, or send the file with IngestUpload",
            ));
        }
        let opts = ingest_options(
            req.options.as_ref(),
            "options",
            self.state.store.clock().now(),
            read,
        )?;
        if req.paths.is_empty() {
            return Err(Error::invalid("paths", "empty: give files or directories"));
        }
        let paths: Vec<PathBuf> = req.paths.iter().map(PathBuf::from).collect();
        // On the job runtime: the request workers stay free for online lookups.
        let store = self.state.store.clone();
        let report = self
            .state
            .jobs
            .run(async move { pipeline::ingest(&store, &paths, &opts, None).await })
            .await?;
        Ok((&report).into())
    }

    async fn upload(
        &self,
        mut stream: Streaming<proto::IngestUploadRequest>,
    ) -> std::result::Result<proto::IngestResponse, Status> {
        let header = match stream.message().await?.and_then(|m| m.part) {
            Some(Part::Header(h)) => h,
            Some(Part::Chunk(_)) => {
                return Err(Error::invalid(
                    "upload message 1",
                    "is a chunk: the first message must carry the header",
                )
                .into())
            }
            None => {
                return Err(Error::invalid(
                    "upload",
                    "no header: the first message must carry the header (options, file_name)",
                )
                .into())
            }
        };
        check_file_name(&header.file_name)?;
        let opts = ingest_options(
            header.options.as_ref(),
            "header.options",
            self.state.store.clock().now(),
            &self.state.ingest_upload,
        )?;
        let dir = tempfile::Builder::new()
            .prefix("ward-upload-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let path = dir.path().join(&header.file_name);
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Error::io(&path, e))?;
        let limit = self.state.limits.max_upload_bytes;
        let mut total: u64 = 0;
        let mut n: u64 = 1;
        while let Some(msg) = stream.message().await? {
            n += 1;
            match msg.part {
                Some(Part::Chunk(bytes)) => {
                    total += bytes.len() as u64;
                    if total > limit {
                        return Err(Error::invalid(
                            format!("upload {}", header.file_name),
                            format!(
                                "larger than the server's limit of {limit} bytes (limits.max_upload_bytes); ingest it from a server-side path instead"
                            ),
                        )
                        .into());
                    }
                    file.write_all(&bytes)
                        .await
                        .map_err(|e| Error::io(&path, e))?;
                }
                Some(Part::Header(_)) => {
                    return Err(Error::invalid(
                        format!("upload message {n}"),
                        "a second header: only the first message carries one",
                    )
                    .into())
                }
                None => {
                    return Err(Error::invalid(
                        format!("upload message {n}"),
                        "empty: neither a header nor a chunk",
                    )
                    .into())
                }
            }
        }
        file.flush().await.map_err(|e| Error::io(&path, e))?;
        drop(file);
        // On the job runtime, which also owns the upload's folder until the ingest ends (a
        // client that hangs up does not pull the file from under it).
        let store = self.state.store.clone();
        let report = self
            .state
            .jobs
            .run(async move {
                let report = pipeline::ingest(&store, &[path], &opts, None).await;
                drop(dir);
                report
            })
            .await?;
        Ok((&report).into())
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn ingest_paths(
        &self,
        request: Request<proto::IngestPathsRequest>,
    ) -> std::result::Result<Response<proto::IngestResponse>, Status> {
        let out = self.paths(request.get_ref()).await?;
        self.refresh_care_team().await?;
        Ok(Response::new(out))
    }

    async fn ingest_upload(
        &self,
        request: Request<Streaming<proto::IngestUploadRequest>>,
    ) -> std::result::Result<Response<proto::IngestResponse>, Status> {
        let out = self.upload(request.into_inner()).await?;
        self.refresh_care_team().await?;
        Ok(Response::new(out))
    }
}

impl IngestService {
    /// On a secured server, swaps in the newest `care_team` table (an ingest may have made
    /// one), so care-team checks follow assignments as they are ingested.
    async fn refresh_care_team(&self) -> Result<()> {
        if let Some(secured) = &self.state.secured {
            secured.load_care_team(&self.state.store).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert!(check_file_name("adt.hl7").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a\\b"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
