//! `ward demo`: Ward's main job end to end on the embedded default store.
//!
//! Generates a synthetic cohort as FHIR R4 Bulk NDJSON (the format a hospital's bulk export
//! gives), ingests it (raw kept, curated versions, quarantine), materializes the readmission
//! feature sets shipped in `examples/features/readmission.toml`, and verifies every version it
//! wrote by recomputing its hash from storage; [`serve`] then serves the store (gRPC and
//! Arrow Flight, `docs/service.md`) until interrupted. Each later stage of the pipeline (feature
//! materialization, the lookup service) joins this function as it is built, so the demo always
//! runs everything Ward can do.

use std::net::SocketAddr;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::features::{self, FeatureRepo, MaterializeOptions, MaterializeOutcome};
use crate::hash::ContentHash;
use crate::ingest::pipeline::{self, Format, IngestOptions, IngestReport};
use crate::ingest::Context;
use crate::service::{Exposure, ServeConfig, Server};
use crate::store::Store;
use crate::synth::{self, SynthFormat, SynthOptions};

/// The example feature repository the demo materializes (shipped in `examples/features/`).
pub const READMISSION_FEATURES: &str = include_str!("../examples/features/readmission.toml");

/// What the demo should do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Patients in the synthetic cohort. Default 2,000 (seconds in a release build).
    pub patients: u64,
    /// Seed of the cohort. Default 42.
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            patients: 2_000,
            seed: 42,
        }
    }
}

/// What the demo did.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Patients generated.
    pub patients: u64,
    /// FHIR NDJSON bytes generated.
    pub source_bytes: u64,
    /// The ingest run.
    pub ingest: IngestReport,
    /// The feature sets materialized (`readmission_online`, `readmission`).
    pub timelines: Vec<MaterializeOutcome>,
    /// Every version written, each verified from storage.
    pub verified: Vec<ContentHash>,
}

/// Runs the demo into `store`, writing the generated sources under `work_dir`.
///
/// # Errors
/// Whatever generation, ingest or verification fails with; a version that fails
/// verification is an [`Error::Corrupt`].
pub async fn run(
    store: &Store,
    work_dir: &Path,
    opts: &DemoOptions,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<DemoReport> {
    let synth_opts = SynthOptions {
        patients: opts.patients,
        seed: opts.seed,
        ..SynthOptions::default()
    };
    let sources = work_dir.join("fhir-ndjson");
    let summary = synth::write(&synth_opts, SynthFormat::FhirNdjson, &sources, progress)?;
    let ingest_opts = IngestOptions {
        format: Format::FhirNdjson,
        mapping: None,
        mapping_text: None,
        max_bad: Some(pipeline::MaxBad::Count(0)),
        context: Context::new(store.clock().now()),
        read: Default::default(),
    };
    let ingest = pipeline::ingest(store, &[sources], &ingest_opts, None).await?;
    let repo = FeatureRepo::parse(READMISSION_FEATURES, "examples/features/readmission.toml")?;
    let mut timelines = Vec::new();
    for set in ["readmission_online", "readmission"] {
        timelines
            .push(features::materialize(store, &repo, set, &MaterializeOptions::default()).await?);
    }
    let mut written: Vec<ContentHash> = vec![ingest.raw];
    written.extend(ingest.curated.iter().map(|c| c.hash));
    written.extend(ingest.quarantine);
    written.extend(timelines.iter().map(|t| t.hash));
    for hash in &written {
        store.verify(hash).await?;
    }
    if ingest.curated.is_empty() {
        return Err(Error::Internal(
            "the demo cohort produced no curated rows".into(),
        ));
    }
    Ok(DemoReport {
        patients: summary.patients,
        source_bytes: summary.bytes,
        ingest,
        timelines,
        verified: written,
    })
}

/// The configuration the demo serves with: `addr`, the defaults otherwise (no `[auth]`, no
/// `[tls]`).
fn serve_config(addr: SocketAddr) -> ServeConfig {
    ServeConfig {
        addr,
        origin:
            "`ward demo` (which has neither; serve the store with `ward serve --config` for them)"
                .into(),
        ..ServeConfig::default()
    }
}

/// Decides whether the demo may serve on `addr`, by the rule of `ward serve`
/// ([`ServeConfig::exposure`]): the demo has no authentication and no TLS, so only a loopback
/// address, unless `insecure` (`ward demo --insecure`). `ward demo` checks this before it
/// builds the store, so a refused address fails at once.
///
/// # Errors
/// [`Error::FailedPrecondition`] naming the address and what is missing.
pub fn exposure(addr: SocketAddr, insecure: bool) -> Result<Exposure> {
    serve_config(addr).exposure(insecure)
}

/// Serves `store` with the readmission feature sets on `addr` (the defaults of
/// [`ServeConfig`] otherwise) until SIGTERM or SIGINT, after printing to standard error how
/// to talk to it. A non-loopback `addr` is refused unless `insecure` ([`exposure`]).
///
/// # Errors
/// [`Error::FailedPrecondition`] for a refused address; bind and transport errors.
pub async fn serve(store: Store, addr: SocketAddr, insecure: bool) -> Result<()> {
    let cfg = serve_config(addr);
    let exposure = cfg.exposure(insecure)?;
    let repo = FeatureRepo::parse(READMISSION_FEATURES, "examples/features/readmission.toml")?;
    let server = Server::bind(&cfg, store, repo).await?;
    let addr = server.local_addr();
    if exposure == Exposure::Insecure {
        tracing::warn!(
            "ward demo serves every version on {addr} without authentication or TLS (--insecure)"
        );
    }
    let stop = crate::service::shutdown_signal();
    for line in next_steps(addr) {
        eprintln!("{line}");
    }
    eprintln!("{}", crate::service::exposure_notice(&cfg, exposure));
    eprintln!("listening on {addr} (Ctrl-C stops the server)");
    server.serve(stop).await?;
    eprintln!("stopped");
    Ok(())
}

/// What to run against a demo server at `addr`.
pub fn next_steps(addr: SocketAddr) -> Vec<String> {
    vec![
        format!("serving the demo store on {addr} (gRPC ward.v1, Arrow Flight, health, reflection); try:"),
        format!("  grpcurl -plaintext {addr} list"),
        format!("  grpcurl -plaintext -d '{{\"kind\":\"curated\"}}' {addr} ward.v1.Datasets/ListDatasets"),
        format!(
            "  grpcurl -plaintext -d '{{\"feature_set\":\"readmission_online\",\"patient_ids\":[\"P0000001\"]}}' {addr} ward.v1.Features/GetOnlineFeatures"
        ),
        format!(
            "  python3 -c 'import pyarrow.flight as f; print(f.connect(\"grpc://{addr}\").do_get(f.Ticket(b\"encounters\")).read_all())'"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_serves_loopback_only_unless_insecure() {
        for ok in ["127.0.0.1:0", "[::1]:50051"] {
            let addr: SocketAddr = ok.parse().unwrap();
            assert_eq!(
                exposure(addr, false).unwrap(),
                Exposure::LoopbackUnauthenticated
            );
        }
        for open in ["0.0.0.0:50051", "[::]:0", "10.1.2.3:50051"] {
            let addr: SocketAddr = open.parse().unwrap();
            let e = exposure(addr, false).unwrap_err();
            assert!(matches!(e, Error::FailedPrecondition { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains(open)
                    && msg.contains("authentication ([auth]) and TLS ([tls])")
                    && msg.contains("ward demo")
                    && msg.contains("--insecure"),
                "{msg}"
            );
            assert_eq!(exposure(addr, true).unwrap(), Exposure::Insecure);
        }
    }

    #[tokio::test]
    async fn serve_refuses_a_network_address_before_binding() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), crate::clock::system()).unwrap();
        let e = serve(store, "0.0.0.0:0".parse().unwrap(), false)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition { .. }), "{e:?}");
    }
}
