//! Compiles the `.proto` files under `proto/` with tonic/prost.
//!
//! protoc comes from Debian's `protobuf-compiler` (or `$PROTOC`); we do not
//! vendor one, so a missing compiler is reported plainly instead of as a
//! confusing prost-build panic.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/berth/events/v1/events.proto",
    "proto/berth/shim/v1/shim.proto",
    "proto/berth/manager/v1/version.proto",
    "proto/berth/manager/v1/types.proto",
    "proto/berth/manager/v1/namespaces.proto",
    "proto/berth/manager/v1/content.proto",
    "proto/berth/manager/v1/images.proto",
    "proto/berth/manager/v1/snapshots.proto",
    "proto/berth/manager/v1/leases.proto",
    "proto/berth/manager/v1/containers.proto",
    "proto/berth/manager/v1/tasks.proto",
    "proto/berth/manager/v1/events.proto",
    "proto/berth/manager/v1/networks.proto",
];

fn find_protoc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROTOC") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("protoc"))
        .find(|candidate| candidate.is_file())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(protoc) = find_protoc() else {
        return Err("protoc not found: install Debian's `protobuf-compiler` \
                    (apt-get install protobuf-compiler) or set PROTOC"
            .into());
    };
    // SAFETY: build scripts are single-threaded; nothing else reads the
    // environment concurrently.
    unsafe { std::env::set_var("PROTOC", &protoc) };
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(PROTOS, &["proto"])?;
    Ok(())
}
