//! Generates the Workload API server and client from `proto/workload.proto` with a pure-Rust
//! protobuf compiler, so building tessera needs no `protoc` on the machine. The descriptor set is
//! kept too: the daemon serves it through gRPC server reflection, as the endpoint spec recommends.
//! The SPIRE Server API (proto/spire, vendored from spiffe/spire-api-sdk v1.13.3) is compiled
//! the same way for SPIRE mode: clients for the daemon, servers for the in-process test server.
use prost::Message;

/// The SPIRE Server services a node agent calls.
const SPIRE_PROTOS: [&str; 4] = [
    "proto/spire/api/server/agent/v1/agent.proto",
    "proto/spire/api/server/bundle/v1/bundle.proto",
    "proto/spire/api/server/entry/v1/entry.proto",
    "proto/spire/api/server/svid/v1/svid.proto",
];

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
    let spire = protox::compile(SPIRE_PROTOS, ["proto"])?;
    // Servers (for the in-process test server) answer Unimplemented for what they do not override.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_fds(spire)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
