//! Generates the gRPC messages and services from `proto/quiver.proto` with cargo alone: protox
//! (a protobuf compiler written in Rust) parses the file into a descriptor set, and
//! tonic-prost-build turns that into Rust, so no `protoc` has to be installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/quiver.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        // Payloads are handed on without copying them into a Vec.
        .bytes(".")
        // Channels are built by this crate's own connector, never by a generated `connect`.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
