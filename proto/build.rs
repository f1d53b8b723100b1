//! Generates the gRPC client and server from `proto/sweep.proto`.
//!
//! protoc comes from the `protoc-bin-vendored` crate so that a fresh machine needs no
//! system package to build the workspace.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().compile_protos(&["proto/sweep.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/sweep.proto");
    Ok(())
}
