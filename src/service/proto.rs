//! The code generated from `proto/ward/v1/*.proto` (messages, servers and clients: the crate
//! serves, clients generate their own), and the encoded file descriptor set that server
//! reflection serves.

#![allow(
    missing_docs,
    unreachable_pub,
    dead_code,
    clippy::all,
    clippy::pedantic,
    clippy::doc_lazy_continuation,
    rustdoc::invalid_html_tags
)]

tonic::include_proto!("ward.v1");

/// The encoded `FileDescriptorSet` of `ward.v1` (for gRPC server reflection).
pub(crate) const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("ward_v1_descriptor");
