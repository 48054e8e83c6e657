//! Ward: a feature store for clinical machine learning.
//!
//! Ward turns curated hospital tables into patient features, writes every result as an
//! immutable dataset version named by the BLAKE3 hash of its logical content, and serves
//! point-in-time correct lookups. `../shared/DESIGN.md` (mirrored in `docs/`) is the contract.
//!
//! # Layout
//!
//! - [`error`]: the crate's one error type and its taxonomy.
//! - [`clock`]: the injected clock; nothing reads the system time directly.
//! - [`hash`]: the canonical, layout-independent content hash of a table (`docs/hashing.md`).
//! - [`store`]: the version store: immutable Lance datasets named `b3:<hex>`, manifests,
//!   tags, atomic commit, verify, export, cleanup.
//! - [`curated`]: the curated tables (patients, encounters, observations, ...) and their
//!   schemas (`docs/curated-tables.md`).
//! - [`ingest`]: sources (HL7 v2, FHIR R4, CSV/Parquet with mappings) parsed into curated rows,
//!   bad records into quarantine.
//! - [`features`]: feature definitions (TOML, derived tables in SQL), materialization into
//!   change-point timelines, and the one lookup function historical and online lookups share.
//! - [`lookup`]: point-in-time lookups over timelines: historical (training sets, stored
//!   with lineage), online (latest timelines in memory, hot-swapped), and the as-of join of
//!   wide feature tables (`ward asof`, the peers' layout) (`docs/lookups.md`).
//! - [`synth`]: the deterministic synthetic cohort generator.
//! - [`scores`]: clinical scores as pure functions of curated rows: Charlson (Quan 2005
//!   ICD-10 coding), LACE and HOSPITAL, each component separately (`docs/scores.md`).
//! - [`service`]: `ward serve`: the gRPC contract (`proto/ward/v1`), Arrow Flight, health and
//!   reflection; the gate every call passes; errors mapped to status codes in one place
//!   (`docs/service.md`).
//! - [`demo`]: `ward demo`, the main job end to end on the embedded default store.
//! - [`auth`]: authentication (JWT, mTLS, API tokens), the role/permission policy, care-team
//!   access, and the [`auth::Security`] gate every RPC calls (`docs/security.md`).
//! - [`audit`]: the append-only, hash-chained audit trail; verify and query.
//! - [`deid`]: de-identification of training sets (HIPAA Safe Harbor by default).
//! - [`tls`]: the rustls server configuration with certificate reload.
//! - [`cli`]: the `ward` command line (the binary in `src/main.rs` only calls it).
//! - [`alloc`]: the memory settings the binary applies to batch commands.

pub mod alloc;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod curated;
pub mod deid;
pub mod demo;
pub mod error;
pub mod features;
pub mod hash;
pub mod ingest;
pub mod keys;
pub mod lookup;
pub mod scores;
pub mod service;
pub mod store;
pub mod synth;
pub mod tls;

pub use error::{Error, Result};

/// The version of Ward, recorded in every manifest it writes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
