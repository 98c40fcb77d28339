//! Generates the Workload API server and client from `proto/workload.proto` with a pure-Rust
//! protobuf compiler, so building tessera needs no `protoc` on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/workload.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/workload.proto");
    Ok(())
}
