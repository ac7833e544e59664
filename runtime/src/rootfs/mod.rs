//! The container's root filesystem: propagation, the spec's mounts, device
//! nodes, pivot_root, masked and read-only paths.
//!
//! Every mount target inside the rootfs is resolved with libpathrs (openat2
//! `RESOLVE_IN_ROOT`, or its emulation), so a symlink planted in the image
//! cannot redirect a mount outside the rootfs, and the mount is made onto
//! the resolved `O_PATH` handle through `/proc/self/fd` so the path cannot be
//! swapped between the check and the mount (CVE-2021-30465). Masked paths are
//! covered with a `/dev/null` that is first verified to be the real 1:3
//! character device (CVE-2025-31133), and `/dev/console` is only ever a
//! regular file we created (CVE-2025-52565).
//!
//! `init` drives the steps: `propagation`, `mounts` (with `cgroup` for
//! cgroup mounts) and `devices` before the root switch (`pivot`); `console`
//! and `paths` (masked and read-only paths) after it. `handles` and
//! `options` serve the mounting steps.

mod cgroup;
mod console;
mod devices;
mod error;
mod handles;
mod idmap;
mod mounts;
mod options;
mod paths;
mod pivot;
mod propagation;
mod sources;

use std::path::{Component, Path, PathBuf};

pub use console::mount_console;
pub use devices::{create_devices, default_devices, finish_dev};
pub use error::RootfsError;
pub use mounts::{kernel_mounts, mount_one, MountCtx};
pub use options::{parse_options, Options};
pub use paths::{mask_paths, readonly_paths, readonly_root, verified_dev_null};
pub use pivot::{move_root, pivot};
pub use propagation::{finish_propagation, finish_unbindable, prepare, root_propagation};
pub use sources::BindSources;

/// `dest` made absolute with `..` resolved lexically, for the checks that
/// must see where a spec path really points (`/proc/../proc/sys` is inside
/// /proc) before anything touches the filesystem.
fn clean(dest: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in dest.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}
