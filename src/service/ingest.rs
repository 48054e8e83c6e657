//! `ward.v1.Ingest`: ingest of server-side paths and of uploaded files.

use std::path::PathBuf;

use clap::ValueEnum as _;
use tokio::io::AsyncWriteExt as _;
use tonic::{Request, Response, Status, Streaming};

use super::proto::{self, ingest_server::Ingest, ingest_upload_request::Part};
use super::State;
use crate::error::{Error, Result};
use crate::ingest::mapping::Mapping;
use crate::ingest::pipeline::{self, Format, IngestOptions, IngestReport, MaxBad};
use crate::ingest::read::ReadPolicy;
use crate::ingest::Context;

/// The Ingest service over the server's store.
#[derive(Debug, Clone)]
pub(crate) struct IngestService {
    pub(crate) state: State,
}

/// The pipeline's options from the request's, with `field` naming where they were; `read`
/// says what the run may read.
fn options(
    o: Option<&proto::IngestOptions>,
    field: &str,
    state: &State,
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
    let mut context = Context::new(state.store.clock().now());
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

fn response(report: &IngestReport) -> proto::IngestResponse {
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
        let opts = options(req.options.as_ref(), "options", &self.state, read)?;
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
        Ok(response(&report))
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
        let opts = options(
            header.options.as_ref(),
            "header.options",
            &self.state,
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
        Ok(response(&report))
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
    fn zones_and_names() {
        assert_eq!(parse_zone("UTC").unwrap().local_minus_utc(), 0);
        assert_eq!(parse_zone("-05:00").unwrap().local_minus_utc(), -5 * 3600);
        assert!(parse_zone("EST").is_none());
        assert!(check_file_name("adt.hl7").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a\\b"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
