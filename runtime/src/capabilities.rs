//! Capability sets, applied as runc does: the bounding set is reduced while
//! still privileged, the other sets after switching user (with keep-caps set
//! so the switch does not clear them).

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

#[derive(Debug, thiserror::Error)]
pub enum CapError {
    #[error("capabilities ({set}): {err}")]
    Apply {
        set: &'static str,
        err: caps::errors::CapsError,
    },
}

/// Capability names the kernel and the caps crate know; unknown ones are
/// skipped with a warning, as runc does.
fn convert(set: &Option<Capabilities>) -> CapsHashSet {
    let mut out = CapsHashSet::new();
    let supported = caps::runtime::thread_all_supported();
    for c in set.iter().flatten() {
        let name = serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        match Capability::from_str(&name) {
            Ok(cap) if supported.contains(&cap) => {
                out.insert(cap);
            }
            _ => crate::logger::warn(&format!(
                "ignoring unknown or unsupported capability {name}"
            )),
        }
    }
    out
}

/// Drops every capability not in the spec's bounding set.
pub fn apply_bounding(c: &LinuxCapabilities) -> Result<(), CapError> {
    let keep = convert(c.bounding());
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|err| CapError::Apply {
                set: "bounding",
                err,
            })?;
        }
    }
    Ok(())
}

/// Sets the effective, permitted, inheritable and ambient sets.
pub fn apply_sets(c: &LinuxCapabilities) -> Result<(), CapError> {
    let e = |set| move |err| CapError::Apply { set, err };
    let permitted = convert(c.permitted());
    let effective = convert(c.effective());
    let inheritable = convert(c.inheritable());
    // Permitted must hold the effective set while it is raised; set it first
    // to the union, then narrow it.
    caps::set(None, CapSet::Inheritable, &inheritable).map_err(e("inheritable"))?;
    caps::set(
        None,
        CapSet::Effective,
        &effective.intersection(&permitted).copied().collect(),
    )
    .map_err(e("effective"))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(e("permitted"))?;
    caps::clear(None, CapSet::Ambient).map_err(e("ambient"))?;
    for cap in convert(c.ambient()) {
        // Ambient capabilities must be permitted and inheritable; the kernel
        // refuses the rest, which runc ignores too.
        let _ = caps::raise(None, CapSet::Ambient, cap);
    }
    Ok(())
}

/// Without a capabilities section every capability is dropped.
pub fn none() -> LinuxCapabilities {
    let empty: Capabilities = Default::default();
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(empty.clone()))
        .set_effective(Some(empty.clone()))
        .set_permitted(Some(empty.clone()))
        .set_inheritable(Some(empty.clone()))
        .set_ambient(Some(empty));
    c
}
