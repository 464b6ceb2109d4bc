//! Generates the protocol's Rust types from proto/courier.proto (and the
//! journal's internal records from proto/journal.proto) with a pure-Rust
//! compiler (protox), so no `protoc` needs installing.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/courier.proto");
    println!("cargo:rerun-if-changed=proto/journal.proto");
    let descriptors = protox::compile(["proto/courier.proto", "proto/journal.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
