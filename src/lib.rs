//! Ward: a feature store for clinical machine learning.
//!
//! Ward turns curated hospital tables into patient features, writes every result as an
//! immutable dataset version named by the BLAKE3 hash of its logical content, and serves
//! point-in-time correct lookups. `../shared/DESIGN.md` (mirrored in `docs/`) is the contract.
//!
//! # Layout, in the order data flows
//!
//! `docs/architecture.md` draws the flow and says where to add a source format, a feature
//! kind, a clinical score or an RPC. Sources are parsed into curated rows (raw input and
//! quarantine kept beside them), features are materialized into timelines, and lookups read
//! the timelines; every result is a content-hashed version in the store, and the service,
//! behind the security gate, is the door to all of it.
//!
//! Under everything:
//! - [`error`]: the crate's one error type and its taxonomy.
//! - [`clock`]: the injected clock; nothing reads the system time directly.
//! - [`hash`]: the canonical, layout-independent content hash of a table (`docs/hashing.md`).
//! - [`store`]: the version store: immutable Lance datasets named `b3:<hex>`, manifests with
//!   lineage, heads moved by compare-and-swap, tags, verify, export, cleanup
//!   (`docs/store.md`).
//!
//! Sources to curated tables:
//! - [`curated`]: the curated tables (patients, encounters, observations, ...), their
//!   schemas, vocabularies and the point-in-time columns `known_at`/`retracted_at`
//!   (`docs/curated-tables.md`).
//! - [`synth`]: the deterministic synthetic cohort generator, writing one cohort in every
//!   source format (`docs/synth.md`).
//! - [`ingest`]: sources (HL7 v2, FHIR R4, CSV/Parquet with mappings) parsed into curated rows,
//!   bad records into quarantine; one run keeps the raw input and writes cumulative curated
//!   versions (`docs/ingest-fhir.md`, `docs/ingest-hl7v2.md`, `docs/mapping.md`).
//! - [`mpi`]: the master patient index: which source patient records are one person
//!   (identifiers, `Patient.link`, deterministic rules), links versioned with their evidence
//!   and known-at time (`docs/mpi.md`).
//! - [`live`]: live feeds: HL7 v2 over MLLP (over TLS with `[tls]`) and FHIR pushed over
//!   HTTP, each into a durable write-ahead log with group commit, sealed into curated
//!   versions equal to a batch ingest of the same messages (`docs/live.md`).
//!
//! Curated tables to features:
//! - [`pit`]: point in time, written once: when a row is visible at t (as known, as
//!   occurred), and the as-of rules (latest at or before t, the TTL) that scores,
//!   materialization and every lookup apply.
//! - [`scores`]: clinical scores as pure functions of curated rows: Charlson (Quan 2005
//!   ICD-10 and ICD-9-CM coding, a cited SNOMED CT list), LACE and HOSPITAL, each component separately (`docs/scores.md`).
//! - [`keys`]: the key table from text ids (patient ids) to dense codes, probed in bulk by
//!   materialization, the timeline index and the as-of join.
//! - [`features`]: feature definitions (TOML, derived tables in SQL), materialization into
//!   change-point timelines, and the one lookup function historical and online lookups share
//!   (`docs/features.md`).
//!
//! Features to answers:
//! - [`lookup`]: point-in-time lookups over timelines: historical (training sets, stored
//!   with lineage), online (latest timelines in memory, hot-swapped), and the as-of join of
//!   wide feature tables (`ward asof`, the peers' layout) (`docs/lookups.md`).
//! - [`security`]: the wing every call passes before the service answers it
//!   (`docs/security.md`): TLS, authentication (JWT, mTLS, API tokens), the role policy and
//!   care teams, the gate with the route table from RPCs to permissions
//!   ([`security::gate`], its one door), the hash-chained audit trail, and
//!   de-identification of training sets.
//! - [`service`]: `ward serve`: the gRPC contract (`proto/ward/v1`), Arrow Flight, health and
//!   reflection; the gate every call passes; errors mapped to status codes in one place
//!   (`docs/service.md`).
//! - [`monitoring`]: the online lookup log, drift (PSI) between a training set and the
//!   logged online values, and the training/serving skew check (`docs/monitoring.md`).
//!
//! Entry points:
//! - [`demo`]: `ward demo`, the main job end to end on the embedded default store.
//! - [`ui`]: the web UI's catalog and lineage, on `ward serve --http`.
//! - [`cli`]: the `ward` command line (the binary in `src/main.rs` only calls it).
//! - [`alloc`]: the memory settings the binary applies to batch commands.

// One `pub mod` a paragraph: rustfmt sorts consecutive `mod` lines, and this order is the
// data flow of the crate doc above.

// Under everything.
pub mod error;

pub mod clock;

pub mod hash;

pub mod store;

// Sources to curated tables.
pub mod curated;

pub mod synth;

pub mod ingest;

// Which source patient records are one person (the master patient index).
pub mod mpi;

pub mod live;

// Curated tables to features.
pub mod pit;

pub mod scores;

pub mod keys;

pub mod features;

/// Data-quality expectations: declared with the data, evaluated per version, guarding `prod`.
pub mod quality;

// Features to answers: the lookups, the security wing every call passes, the service.
pub mod lookup;

// Model cards: a model registered with the training set it was trained on (docs/models.md).
pub mod models;

pub mod security;

pub mod service;

// What the online lookups served: the log, drift against training sets, the skew check.
pub mod monitoring;

// The web UI's catalog and lineage on the HTTP listener (docs/ui.md).
pub mod ui;

// Entry points.
pub mod demo;

pub mod cli;

pub mod alloc;

pub use error::{Error, Result};

/// The version of Ward, recorded in every manifest it writes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
