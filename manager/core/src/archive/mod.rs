//! Image archives, as `docker load` and `docker save` know them.
//!
//! [`load`](fn@load) reads a tarball that is an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…`), a docker-archive
//! (`manifest.json` with `Config`, `RepoTags` and `Layers`, as `docker save`
//! writes it) or both at once (docker 25 and later). [`Save`] writes an OCI
//! image layout that also carries docker's `manifest.json`, so docker and
//! podman load it too.
//!
//! A load works on a spooled copy of the upload (an anonymous file under
//! `<root>/tmp`, gone when closed, so a crash leaves nothing behind) and makes
//! two passes over it. The first indexes the tar, reads the JSON documents and
//! hashes every blob the store does not have yet, so a corrupt, truncated or
//! incomplete archive is refused before anything is stored. The second copies
//! the blobs into the content store (which checks size and digest again),
//! unpacks the host platform's layers and writes the image records, under a
//! lease as a pull does.
//!
//! Image names: an OCI layout entry is named by its `io.containerd.image.name`
//! annotation, else its `org.opencontainers.image.ref.name`; a docker-archive
//! image by its `RepoTags`. Names are normalized as people type them are
//! (`busybox` is `docker.io/library/busybox:latest`; a bare tag like `latest`
//! becomes `docker.io/library/latest:latest`, since a layout does not say which
//! repository it meant). See [`import_name`] for images without a name.
//!
//! The pieces, each using only those listed before it: `error` (the error
//! type and the limit its messages quote), `common` (what loads and saves
//! share: leases, blocking tasks), `names` (image names in and out of
//! archives), `format` (the JSON documents of both formats and where blobs
//! live), `spool` (the upload on disk), `tarball` (the spooled tar,
//! indexed and read in place with its paths checked), `plan` (reading and
//! checking an archive before a load stores anything), `load` and `save`.

mod common;
mod error;
mod format;
mod load;
mod names;
mod plan;
mod save;
mod spool;
mod tarball;

pub use error::ArchiveError;
pub use load::{load, LoadOptions};
pub use names::import_name;
pub use save::Save;
pub use spool::Spool;

#[cfg(test)]
mod tests;
