//! Generates the Workload API server and client from `proto/workload.proto` with a pure-Rust
//! protobuf compiler, so building tessera needs no `protoc` on the machine. The descriptor set is
//! kept too: the daemon serves it through gRPC server reflection, as the endpoint spec recommends.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/workload.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("workload_descriptor.bin"), fds.encode_to_vec())?;
    // Our codec: prost with per-RPC buffers sized to the message (see src/pb/codec.rs).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::pb::codec::WorkloadCodec")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/workload.proto");
    Ok(())
}
