//! The spec's mount options, split the way mount(2) needs them.

use nix::mount::MsFlags;

/// Mount options split into flags, propagation changes and fs data.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub flags: MsFlags,
    /// Flags the options explicitly cleared (`rw`, `suid`, ...).
    pub cleared: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive: bool,
    /// runc's recursive options (`rro`, `rnosuid`, ...): mount attributes
    /// set and cleared on the mount and every mount under it.
    pub rec_attr: RecursiveAttr,
    /// `idmap` (Some(false)) or `ridmap` (Some(true)): an idmapped bind
    /// mount, with the container's mappings unless the mount has its own.
    pub idmap: Option<bool>,
}

/// `mount_setattr(2)` attributes for the whole mount tree.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct RecursiveAttr {
    pub set: u64,
    pub clr: u64,
}

impl RecursiveAttr {
    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.clr == 0
    }
}

// The MOUNT_ATTR_* values of linux/mount.h.
const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;
const ATTR_ATIME_MASK: u64 = 0x70;
const ATTR_RELATIME: u64 = 0x0;
const ATTR_NOATIME: u64 = 0x10;
const ATTR_STRICTATIME: u64 = 0x20;
const ATTR_NODIRATIME: u64 = 0x80;
const ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// A recursive option's attributes to set and to clear, as runc 1.1 maps
/// them (the access-time ones replace the whole atime field).
fn recursive_option(opt: &str) -> Option<(u64, u64)> {
    Some(match opt {
        "rro" => (ATTR_RDONLY, 0),
        "rrw" => (0, ATTR_RDONLY),
        "rnosuid" => (ATTR_NOSUID, 0),
        "rsuid" => (0, ATTR_NOSUID),
        "rnodev" => (ATTR_NODEV, 0),
        "rdev" => (0, ATTR_NODEV),
        "rnoexec" => (ATTR_NOEXEC, 0),
        "rexec" => (0, ATTR_NOEXEC),
        "rnodiratime" => (ATTR_NODIRATIME, 0),
        "rdiratime" => (0, ATTR_NODIRATIME),
        "rrelatime" | "rnorelatime" | "ratime" | "rnostrictatime" => {
            (ATTR_RELATIME, ATTR_ATIME_MASK)
        }
        "rnoatime" => (ATTR_NOATIME, ATTR_ATIME_MASK),
        "rstrictatime" => (ATTR_STRICTATIME, ATTR_ATIME_MASK),
        "rnosymfollow" => (ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

pub fn parse_options(opts: &[String]) -> Options {
    let mut o = Options {
        flags: MsFlags::empty(),
        cleared: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
        bind: false,
        recursive: false,
        rec_attr: RecursiveAttr::default(),
        idmap: None,
    };
    for opt in opts {
        if opt == "idmap" || opt == "ridmap" {
            o.idmap = Some(opt == "ridmap");
            continue;
        }
        if let Some((set, clr)) = recursive_option(opt) {
            o.rec_attr.set = (o.rec_attr.set & !clr) | set;
            o.rec_attr.clr = (o.rec_attr.clr & !set) | clr;
            continue;
        }
        let (set, clear): (MsFlags, MsFlags) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
            "bind" => {
                o.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "unbindable" | "runbindable") => {
                let mut f = match p.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                if p.starts_with('r') {
                    f |= MsFlags::MS_REC;
                }
                o.propagation.push(f);
                continue;
            }
            other => {
                o.data.push(other.to_owned());
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
        o.cleared = (o.cleared | clear) & !set;
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&s(&[
            "nosuid", "ro", "rbind", "rslave", "mode=755", "size=1k",
        ]));
        assert!(o.flags.contains(
            MsFlags::MS_NOSUID | MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC
        ));
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, s(&["mode=755", "size=1k"]));
        let o = parse_options(&s(&["ro", "rw"]));
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        let o = parse_options(&s(&["rbind", "rro", "rnosuid", "rnoatime"]));
        assert_eq!(
            o.rec_attr,
            RecursiveAttr {
                set: ATTR_RDONLY | ATTR_NOSUID | ATTR_NOATIME,
                clr: ATTR_ATIME_MASK
            }
        );
        assert!(o.data.is_empty(), "{o:?}");
        let o = parse_options(&s(&["rro", "rrw"]));
        assert_eq!(
            o.rec_attr,
            RecursiveAttr {
                set: 0,
                clr: ATTR_RDONLY
            }
        );
    }
}
