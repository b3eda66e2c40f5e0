//! Compiles every `.proto` file under `strata/` with protox (pure Rust, no system `protoc`)
//! and generates prost messages plus tonic clients and servers from the descriptor set.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "strata/bookie/v1/bookie.proto",
    "strata/broker/v1/entry.proto",
    "strata/v1/strata.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("strata_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        // `bytes` fields become `bytes::Bytes`, so payloads move from the gRPC frame to the
        // journal without a copy.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
