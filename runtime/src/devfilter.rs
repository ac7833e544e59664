//! Device control on cgroup v2: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE`, built from the spec's device rules and
//! the defaults every container gets, attached to the container's cgroup.
//!
//! Why our own: `libcgroups` does this only with a feature that raises
//! RLIMIT_MEMLOCK unconditionally first, which fails without
//! CAP_SYS_RESOURCE (as on this project's machines) although kernels since
//! 5.11 no longer need it. The program is small enough to write directly.
//!
//! Rules apply in order, a later one overriding an earlier one (as v1's
//! `devices.allow`/`devices.deny` writes do): the program checks them from
//! the last to the first and answers with the first that matches; nothing
//! matching is denied.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

#[derive(Debug, thiserror::Error)]
pub enum DevFilterError {
    #[error("device rule {0:?}: access must be letters of \"rwm\"")]
    Access(String),
    #[error("loading the cgroup v2 device filter: {0}{1}")]
    Load(std::io::Error, String),
    #[error("attaching the device filter to {0}: {1}")]
    Attach(String, std::io::Error),
    #[error("replacing the device filter of {0}: {1}")]
    Replace(String, std::io::Error),
}

const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const TYPE_BLOCK: u32 = 1;
const TYPE_CHAR: u32 = 2;

/// One rule in the program's terms: None matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub typ: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

fn access_bits(s: &str) -> Result<u32, DevFilterError> {
    s.chars().try_fold(0, |acc, c| match c {
        'r' => Ok(acc | ACC_READ),
        'w' => Ok(acc | ACC_WRITE),
        'm' => Ok(acc | ACC_MKNOD),
        _ => Err(DevFilterError::Access(s.to_owned())),
    })
}

fn char_dev(major: u32, minor: Option<u32>, access: u32) -> Rule {
    Rule {
        allow: true,
        typ: Some(TYPE_CHAR),
        major: Some(major),
        minor,
        access,
    }
}

/// The spec's rules, then what every container may use whatever the spec
/// says (runc's and libcgroups' list): mknod of any device, the standard
/// /dev nodes, ptys, the console and tun.
pub fn rules(spec: &[LinuxDeviceCgroup]) -> Result<Vec<Rule>, DevFilterError> {
    let mut out = Vec::new();
    for d in spec {
        let typ = match d.typ() {
            None | Some(LinuxDeviceType::A) => None,
            Some(LinuxDeviceType::B) => Some(TYPE_BLOCK),
            Some(_) => Some(TYPE_CHAR),
        };
        let access = match d.access().as_deref() {
            None | Some("") => ACC_READ | ACC_WRITE | ACC_MKNOD,
            Some(a) => access_bits(a)?,
        };
        out.push(Rule {
            allow: d.allow(),
            typ,
            major: d.major().and_then(|m| u32::try_from(m).ok()),
            minor: d.minor().and_then(|m| u32::try_from(m).ok()),
            access,
        });
    }
    let rwm = ACC_READ | ACC_WRITE | ACC_MKNOD;
    for typ in [TYPE_CHAR, TYPE_BLOCK] {
        out.push(Rule {
            allow: true,
            typ: Some(typ),
            major: None,
            minor: None,
            access: ACC_MKNOD,
        });
    }
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
        (10, 200),
    ] {
        out.push(char_dev(major, Some(minor), rwm));
    }
    out.push(char_dev(136, None, rwm));
    Ok(out)
}

// eBPF instruction encoding (linux/bpf.h, bpf_common.h).
const BPF_LDX_MEM_W: u8 = 0x61;
const BPF_ALU64_MOV_X: u8 = 0xbf;
const BPF_ALU64_MOV_K: u8 = 0xb7;
const BPF_ALU64_AND_K: u8 = 0x57;
const BPF_ALU64_RSH_K: u8 = 0x77;
const BPF_JMP_JNE_K: u8 = 0x55;
const BPF_EXIT: u8 = 0x95;

/// One instruction as the kernel reads it (8 bytes, native endian).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let regs = (src << 4) | (dst & 0x0f);
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = regs;
    b[2..4].copy_from_slice(&off.to_ne_bytes());
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    u64::from_ne_bytes(b)
}

/// The program for `rules`. Registers: r2 = device type, r3 = requested
/// access, r4 = major, r5 = minor (from `struct bpf_cgroup_dev_ctx`:
/// access_type = access << 16 | type, major, minor).
pub fn program(rules: &[Rule]) -> Vec<u64> {
    let mut p = vec![
        insn(BPF_LDX_MEM_W, 2, 1, 0, 0),
        insn(BPF_ALU64_MOV_X, 3, 2, 0, 0),
        insn(BPF_ALU64_RSH_K, 3, 0, 0, 16),
        insn(BPF_ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(BPF_LDX_MEM_W, 4, 1, 4, 0),
        insn(BPF_LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // Each test jumps past the rest of this rule's block when it fails.
        let mut tests: Vec<Vec<u64>> = Vec::new();
        if let Some(t) = r.typ {
            tests.push(vec![insn(BPF_JMP_JNE_K, 2, 0, 0, t as i32)]);
        }
        let all = ACC_READ | ACC_WRITE | ACC_MKNOD;
        if r.access & all != all {
            // Any requested bit the rule does not cover: not this rule.
            tests.push(vec![
                insn(BPF_ALU64_MOV_X, 6, 3, 0, 0),
                insn(BPF_ALU64_AND_K, 6, 0, 0, (!r.access & all) as i32),
                insn(BPF_JMP_JNE_K, 6, 0, 0, 0),
            ]);
        }
        if let Some(m) = r.major {
            tests.push(vec![insn(BPF_JMP_JNE_K, 4, 0, 0, m as i32)]);
        }
        if let Some(m) = r.minor {
            tests.push(vec![insn(BPF_JMP_JNE_K, 5, 0, 0, m as i32)]);
        }
        let verdict = [
            insn(BPF_ALU64_MOV_K, 0, 0, 0, i32::from(r.allow)),
            insn(BPF_EXIT, 0, 0, 0, 0),
        ];
        let unconditional = tests.is_empty();
        let mut remaining: usize = tests.iter().map(Vec::len).sum::<usize>() + verdict.len();
        for t in tests {
            remaining -= t.len();
            let n = t.len();
            for (i, mut ins) in t.into_iter().enumerate() {
                if i + 1 == n {
                    // The jump is the test's last instruction: skip to the
                    // end of the block.
                    let mut b = ins.to_ne_bytes();
                    b[2..4].copy_from_slice(&(remaining as i16).to_ne_bytes());
                    ins = u64::from_ne_bytes(b);
                }
                p.push(ins);
            }
        }
        p.extend_from_slice(&verdict);
        if unconditional {
            // Nothing after a rule that always matches can run (and the
            // verifier refuses unreachable code).
            return p;
        }
    }
    p.push(insn(BPF_ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(BPF_EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised repr(C) prefix of union
    // bpf_attr; the kernel reads (and for PROG_LOAD's log writes) only
    // within the size we pass and the buffers it points to.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Replaces the device filter of a running container's cgroup (`update`),
/// as runc does: the new program is attached next to the old ones, then
/// they are detached. In between both apply, so the container never has
/// more devices than either set of rules allows.
pub fn replace(cgroup_dir: &Path, rules: &[Rule]) -> Result<(), DevFilterError> {
    let what = || cgroup_dir.display().to_string();
    let dir = std::fs::File::open(cgroup_dir).map_err(|e| DevFilterError::Replace(what(), e))?;
    let old = attached(&dir).map_err(|e| DevFilterError::Replace(what(), e))?;
    attach(cgroup_dir, rules)?;
    for id in old {
        let mut get = GetFdByIdAttr {
            prog_id: id,
            ..Default::default()
        };
        let fd = match bpf(BPF_PROG_GET_FD_BY_ID, &mut get) {
            Ok(fd) => fd,
            // Detached and freed since the query.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(DevFilterError::Replace(what(), e)),
        };
        // SAFETY: a successful GET_FD_BY_ID returns a new fd that only we own.
        let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut det = ProgAttachAttr {
            target_fd: dir.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: 0,
        };
        bpf(BPF_PROG_DETACH, &mut det).map_err(|e| DevFilterError::Replace(what(), e))?;
    }
    Ok(())
}

/// The ids of the device programs attached to this cgroup itself (not
/// inherited from its parents).
fn attached(dir: &std::fs::File) -> std::io::Result<Vec<u32>> {
    // A cgroup holds at most 64 programs per attach type.
    let mut ids = vec![0u32; 64];
    let mut q = ProgQueryAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut q)?;
    ids.truncate(q.prog_cnt as usize);
    Ok(ids)
}

/// Loads the program for `rules` and attaches it to the cgroup directory.
pub fn attach(cgroup_dir: &Path, rules: &[Rule]) -> Result<(), DevFilterError> {
    let prog = program(rules);
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 16 * 1024];
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut load).map_err(|e| {
        let text = String::from_utf8_lossy(&log);
        let text = text.trim_end_matches('\0').trim();
        DevFilterError::Load(
            e,
            if text.is_empty() {
                String::new()
            } else {
                format!(" (verifier: {text})")
            },
        )
    })?;
    // SAFETY: a successful PROG_LOAD returns a new fd that only we own.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let dir = std::fs::File::open(cgroup_dir)
        .map_err(|e| DevFilterError::Attach(cgroup_dir.display().to_string(), e))?;
    let mut att = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &mut att)
        .map_err(|e| DevFilterError::Attach(cgroup_dir.display().to_string(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jumps_stay_inside(p: &[u64]) {
        for (i, ins) in p.iter().enumerate() {
            let b = ins.to_ne_bytes();
            if b[0] == BPF_JMP_JNE_K {
                let off = i16::from_ne_bytes([b[2], b[3]]) as usize;
                assert!(i + 1 + off < p.len(), "jump at {i} leaves the program");
            }
        }
        assert_eq!(p.last().unwrap().to_ne_bytes()[0], BPF_EXIT);
    }

    #[test]
    fn rules_compile_to_a_bounded_program_ending_in_exit() {
        let deny_all: LinuxDeviceCgroup = serde_json::from_value(serde_json::json!(
            {"allow": false, "access": "rwm"}
        ))
        .unwrap();
        let allow_one: LinuxDeviceCgroup = serde_json::from_value(serde_json::json!(
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}
        ))
        .unwrap();
        let r = rules(&[deny_all, allow_one]).unwrap();
        assert_eq!(
            r[0],
            Rule {
                allow: false,
                typ: None,
                major: None,
                minor: None,
                access: 7
            }
        );
        let p = program(&r);
        jumps_stay_inside(&p);
        // The deny-all rule, checked last, ends the program: no default
        // after it, nothing unreachable.
        let tail: Vec<u8> = p[p.len() - 2..]
            .iter()
            .map(|i| i.to_ne_bytes()[0])
            .collect();
        assert_eq!(tail, vec![BPF_ALU64_MOV_K, BPF_EXIT]);
        assert_eq!(p[p.len() - 2].to_ne_bytes()[4..8], 0i32.to_ne_bytes());
        // Without a catch-all the program ends in a default deny.
        let p = program(&rules(&[]).unwrap());
        jumps_stay_inside(&p);
        assert!(matches!(access_bits("rwx"), Err(DevFilterError::Access(_))));
    }
}
