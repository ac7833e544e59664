//! Offline, reproducible test fixtures and harnesses shared by berth's tests:
//!
//! - [`fixtures::rootfs`]: a busybox root filesystem described as tar-like
//!   entries, built from Debian's `busybox-static`;
//! - [`fixtures::bundle`]: an OCI runtime bundle (config.json + rootfs);
//! - [`fixtures::image`]: OCI image layouts (one layer, several layers with
//!   whiteouts and hard links, an image index) whose digests are the same on
//!   every build;
//! - [`registry`]: Debian's `docker-registry` on a free 127.0.0.1 port,
//!   fed with those images by `skopeo`;
//! - [`bins`]: where the workspace's built binaries are;
//! - [`manager`]: a real `berth serve` daemon in a temporary root, and its CLI;
//! - [`proxy`]: a TCP proxy that throttles, cuts or corrupts registry traffic;
//! - [`runtime`]: drives `berth-runtime` (or any runc-compatible binary)
//!   with a private `--root`, deleting its containers on drop;
//! - [`shim`]: starts real `berth-shim` daemons in a private state
//!   directory and cleans every one of them up on drop.

pub mod bins;
pub mod fixtures;
pub mod manager;
pub mod proxy;
pub mod registry;
pub mod runtime;
pub mod shim;
