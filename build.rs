//! Compiles Ward's gRPC contract (`proto/ward/v1/*.proto`) into Rust with tonic-prost-build
//! (servers and clients), and writes the file descriptor set that server reflection serves.
//!
//! `protoc` comes from the protoc-bin-vendored crate (unless `PROTOC` names another), so a
//! build needs nothing installed but the Rust toolchain.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from("proto/ward/v1");
    let mut protos: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|p| p.extension().is_some_and(|e| e == "proto"));
    protos.sort();
    println!("cargo:rerun-if-changed=proto");
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) if !PathBuf::from(&p).ends_with("tools/protoc") => PathBuf::from(p),
        _ => protoc_bin_vendored::protoc_bin_path()?,
    };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(out.join("ward_v1_descriptor.bin"))
        .compile_with_config(config, &protos, &[PathBuf::from("proto")])?;
    Ok(())
}
