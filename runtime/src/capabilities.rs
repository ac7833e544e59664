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
    #[error("capset")]
    Capset(#[source] std::io::Error),
}

/// Capability names the kernel and the caps crate know; unknown ones are
/// skipped with a warning, as runc does.
fn convert(set: &Option<Capabilities>) -> CapsHashSet {
    convert_with(set, true)
}

/// As [`convert`]; `warn` false for a second pass over the same sets,
/// which must not repeat the warnings.
fn convert_with(set: &Option<Capabilities>, warn: bool) -> CapsHashSet {
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
            _ if warn => crate::logger::warn(&format!(
                "ignoring unknown or unsupported capability {name}"
            )),
            _ => {}
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

/// `c` with CAP_SYS_ADMIN added to the permitted set (not the effective
/// one): held back so a seccomp filter can still be loaded without
/// no_new_privs at the very end, see [`FinalSets`].
pub fn holding_sys_admin(c: &LinuxCapabilities) -> LinuxCapabilities {
    let mut out = c.clone();
    let mut permitted = c.permitted().clone().unwrap_or_default();
    permitted.insert(oci_spec::runtime::Capability::SysAdmin);
    out.set_permitted(Some(permitted));
    out
}

/// The spec's effective, permitted and inheritable sets as the kernel's
/// bitmasks, computed in advance: setting them is then one capset(2) and
/// nothing else, which is all a seccomp profile has to allow of it.
#[derive(Clone, Copy, Debug)]
pub struct FinalSets {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |m, c| m | c.bitmask())
}

const SYS_ADMIN: u64 = 1 << 21;

impl FinalSets {
    pub fn of(c: &LinuxCapabilities) -> FinalSets {
        let permitted = mask(&convert_with(c.permitted(), false));
        FinalSets {
            effective: mask(&convert_with(c.effective(), false)) & permitted,
            permitted,
            inheritable: mask(&convert_with(c.inheritable(), false)),
        }
    }

    /// Makes CAP_SYS_ADMIN effective (it must be permitted, see
    /// [`holding_sys_admin`]), for loading a filter without no_new_privs.
    pub fn raise_sys_admin(&self) -> Result<(), CapError> {
        capset(
            self.effective | SYS_ADMIN,
            self.permitted | SYS_ADMIN,
            self.inheritable,
        )
    }

    /// Sets exactly these sets, dropping what was held back.
    pub fn apply(&self) -> Result<(), CapError> {
        capset(self.effective, self.permitted, self.inheritable)
    }
}

fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), CapError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let header = Header {
        version: V3,
        pid: 0,
    };
    let half = |m: u64, hi: bool| if hi { (m >> 32) as u32 } else { m as u32 };
    let data: [Data; 2] = [false, true].map(|hi| Data {
        effective: half(effective, hi),
        permitted: half(permitted, hi),
        inheritable: half(inheritable, hi),
    });
    // SAFETY: capset reads a v3 header and two data structs, both valid
    // for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if r != 0 {
        return Err(CapError::Capset(std::io::Error::last_os_error()));
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
