//! Generates the protobuf and gRPC code of proto/ with the vendored protoc (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded, so nothing reads the environment concurrently;
    // prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // Read at run time, not with env!(): a build-script binary reused from another checkout of the same
    // workspace (same target dir) would otherwise compile that checkout's protos.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "shoal/v1/common.proto",
        "shoal/v1/collections.proto",
        "shoal/v1/points.proto",
        "shoal/v1/cluster.proto",
        "shoal/internal/raft.proto",
        "shoal/internal/shard.proto",
    ];
    let paths: Vec<_> = files.iter().map(|f| root.join(f)).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    tonic_prost_build::configure().compile_protos(&paths, &[root])?;
    Ok(())
}
