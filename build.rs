//! Compiles `proto/grpm/v1` with protox (a pure-Rust protobuf compiler, so no system `protoc`),
//! generates the tonic/prost code, and writes the descriptor set that server reflection serves.

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/grpm/v1/grpm.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("grpm_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // prost's codec, with undecodable requests as INVALID_ARGUMENT (see src/rpc/codec.rs).
        .codec_path("crate::rpc::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
