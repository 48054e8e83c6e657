//! Ward's integration tests, compiled as one binary (`cargo test --test it`).

mod audit;
mod auth;
mod common;
mod concurrency;
mod consent;
mod crash;
mod deid;
mod demo;
mod features;
mod fhir;
mod formats;
mod hardening;
mod hash_props;
mod hl7v2;
mod ingest;
mod live;
mod lookup;
mod mapping;
mod python_client;
mod python_hash;
mod reload;
mod scores;
mod secure_service;
mod service;
mod store;
mod synth;
