//! Ward's integration tests, compiled as one binary (`cargo test --test it`).

mod common;
mod crash;
mod fhir;
mod hash_props;
mod hl7v2;
mod mapping;
mod python_hash;
mod store;
mod synth;
