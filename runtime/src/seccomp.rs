//! Seccomp filters with runc's semantics.
//!
//! The profile is compiled by libseccomp (every action including notify,
//! every architecture it lists, argument comparisons), then patched as runc
//! does: a stub in front of libseccomp's program returns ENOSYS for any
//! syscall newer than the newest one the profile names for that
//! architecture, so programs probing for new syscalls fall back instead of
//! failing with the default action. The result is loaded with seccomp(2)
//! directly so the filter flags and the notify listener are ours to set.
//!
//! A profile is never ignored: an action, architecture or operator we
//! cannot honour is an error.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: unsupported architecture {0}")]
    Arch(String),
    #[error("seccomp: {0}")]
    Lib(String),
    /// Ends in runc's wording.
    #[error("seccomp: the notify action needs listenerPath, and listenerPath is not set")]
    NoListener,
    #[error("SCMP_ACT_NOTIFY cannot be used as default action")]
    NotifyDefault,
    /// runc refuses notify for write(2); berth also for sendmsg(2): the init
    /// uses it to pass the listener on, which would wait for an agent that
    /// has no listener yet.
    #[error("SCMP_ACT_NOTIFY cannot be used for the {0} syscall")]
    NotifyFor(String),
    #[error("seccomp: loading the filter: {0}")]
    Load(std::io::Error),
    #[error("seccomp: exported program is malformed")]
    Program,
}

fn lib(e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Lib(e.to_string())
}

fn enum_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    }
}

fn compare(a: &oci_spec::runtime::LinuxSeccompArg) -> ScmpArgCompare {
    let op = match a.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(a.value()),
    };
    let datum = if a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
        a.value_two().unwrap_or(0)
    } else {
        a.value()
    };
    ScmpArgCompare::new(a.index() as u32, op, datum)
}

/// AUDIT_ARCH_* value of a libseccomp architecture, for the ENOSYS stub.
fn audit_arch(a: ScmpArch) -> Option<u32> {
    Some(match a {
        ScmpArch::X8664 => 0xc000_003e,
        ScmpArch::X86 => 0x4000_0003,
        ScmpArch::Aarch64 => 0xc000_00b7,
        ScmpArch::Arm => 0x4000_0028,
        ScmpArch::Riscv64 => 0xc000_00f3,
        ScmpArch::Ppc64Le => 0xc000_0015,
        ScmpArch::Ppc64 => 0x8000_0015,
        ScmpArch::S390X => 0x8000_0016,
        ScmpArch::S390 => 0x0000_0016,
        ScmpArch::Mips => 0x0000_0008,
        ScmpArch::Mipsel => 0x4000_0008,
        ScmpArch::Mips64 => 0x8000_0008,
        ScmpArch::Mipsel64 => 0xc000_0008,
        ScmpArch::Loongarch64 => 0xc000_0102,
        _ => return None,
    })
}

/// A compiled filter, ready to load.
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_uint,
    pub uses_notify: bool,
}

fn native_arch() -> ScmpArch {
    ScmpArch::native()
}

/// Compiles `profile`, or takes the program compiled for the same profile
/// before from `cache` (a directory of the runtime's own root). libseccomp
/// needs 10 ms or more for a profile of Docker's size; the result depends
/// only on the profile, this runtime and the libseccomp version, which the
/// cache key covers.
pub fn compile_cached(profile: &LinuxSeccomp, cache: &Path) -> Result<Filter, SeccompError> {
    validate(profile)?;
    let key = cache_key(profile);
    let file = cache.join(format!("{key}.bpf"));
    if let Some(f) = std::fs::read(&file)
        .ok()
        .and_then(|b| Filter::from_bytes(&b))
    {
        return Ok(f);
    }
    let f = compile(profile)?;
    if let Err(e) = store(cache, &file, &f.to_bytes()) {
        crate::logger::warn(&format!("seccomp: caching the filter: {e}"));
    }
    Ok(f)
}

fn cache_key(profile: &LinuxSeccomp) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(profile).unwrap_or_default());
    h.update(env!("CARGO_PKG_VERSION"));
    let v = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    h.update(v);
    h.update(std::env::consts::ARCH);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn store(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    std::fs::rename(&tmp, file)
}

const CACHE_MAGIC: &[u8; 4] = b"BSC1";

impl Filter {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = CACHE_MAGIC.to_vec();
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.push(u8::from(self.uses_notify));
        for ins in &self.program {
            out.extend_from_slice(&ins.code.to_ne_bytes());
            out.push(ins.jt);
            out.push(ins.jf);
            out.extend_from_slice(&ins.k.to_ne_bytes());
        }
        out
    }

    /// None for anything that is not a whole cache entry.
    fn from_bytes(b: &[u8]) -> Option<Filter> {
        let rest = b.strip_prefix(CACHE_MAGIC)?;
        let flags = libc::c_uint::from_ne_bytes(rest.get(..4)?.try_into().ok()?);
        let uses_notify = match rest.get(4)? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let program = decode(rest.get(5..)?).ok()?;
        Some(Filter {
            program,
            flags,
            uses_notify,
        })
    }
}

/// runc's checks of a notify profile. Apart from compiling, so that a
/// cached program is never served for a profile they refuse.
fn validate(profile: &LinuxSeccomp) -> Result<(), SeccompError> {
    if profile.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(SeccompError::NotifyDefault);
    }
    let mut uses_notify = false;
    for rule in profile.syscalls().iter().flatten() {
        if rule.action() != LinuxSeccompAction::ScmpActNotify {
            continue;
        }
        uses_notify = true;
        if let Some(name) = rule
            .names()
            .iter()
            .find(|n| *n == "write" || *n == "sendmsg")
        {
            return Err(SeccompError::NotifyFor(name.clone()));
        }
    }
    let no_path = profile
        .listener_path()
        .as_ref()
        .is_none_or(|p| p.as_os_str().is_empty());
    if uses_notify && no_path {
        return Err(SeccompError::NoListener);
    }
    Ok(())
}

/// Compiles `profile` (done in the parent so errors surface at create).
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    let default = action(profile.default_action(), profile.default_errno_ret());
    let mut ctx = ScmpFilterContext::new(default).map_err(lib)?;
    // We set no_new_privs ourselves, at the point the spec asks for.
    ctx.set_ctl_nnp(false).map_err(lib)?;
    let mut arches = vec![native_arch()];
    for a in profile.architectures().iter().flatten() {
        let name = enum_name(a);
        let arch = ScmpArch::from_str(&name).map_err(|_| SeccompError::Arch(name.clone()))?;
        ctx.add_arch(arch).map_err(lib)?;
        if !arches.contains(&arch) {
            arches.push(arch);
        }
    }
    validate(profile)?;
    let mut uses_notify = false;
    // Highest syscall number the profile names, per architecture.
    let mut newest: BTreeMap<u32, i32> = BTreeMap::new();
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret());
        uses_notify |= rule.action() == LinuxSeccompAction::ScmpActNotify;
        for name in rule.names() {
            let Ok(sys) = ScmpSyscall::from_name(name) else {
                crate::logger::warn(&format!("seccomp: ignoring unknown syscall {name}"));
                continue;
            };
            for &arch in &arches {
                if let (Some(audit), Ok(nr)) =
                    (audit_arch(arch), ScmpSyscall::from_name_by_arch(name, arch))
                {
                    let nr = nr.as_raw_syscall();
                    if nr >= 0 {
                        let e = newest.entry(audit).or_insert(nr);
                        *e = (*e).max(nr);
                    }
                }
            }
            if act == default {
                continue; // libseccomp refuses rules that repeat the default
            }
            let args = rule.args().clone().unwrap_or_default();
            let mut by_index: BTreeMap<usize, usize> = BTreeMap::new();
            for a in &args {
                *by_index.entry(a.index()).or_default() += 1;
            }
            if args.is_empty() {
                ctx.add_rule(act, sys).map_err(lib)?;
            } else if by_index.values().all(|&n| n == 1) {
                // Different arguments: all must match (AND).
                let cmps: Vec<_> = args.iter().map(compare).collect();
                ctx.add_rule_conditional(act, sys, &cmps).map_err(lib)?;
            } else {
                // Several conditions on one argument: any may match (OR),
                // as runc does.
                for a in &args {
                    ctx.add_rule_conditional(act, sys, &[compare(a)])
                        .map_err(lib)?;
                }
            }
        }
    }
    let bytes = export(&ctx)?;
    let mut program = decode(&bytes)?;
    // Allowing or logging defaults need no stub, nor does a default that
    // already answers ENOSYS.
    let blocks_by_default = match profile.default_action() {
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog => false,
        LinuxSeccompAction::ScmpActErrno => {
            profile.default_errno_ret() != Some(libc::ENOSYS as u32)
        }
        _ => true,
    };
    if blocks_by_default && !newest.is_empty() {
        let mut stub = enosys_stub(&newest);
        stub.append(&mut program);
        program = stub;
    }
    let mut flags: libc::c_uint = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match enum_name(f).as_str() {
            "SECCOMP_FILTER_FLAG_LOG" => libc::SECCOMP_FILTER_FLAG_LOG as libc::c_uint,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as libc::c_uint
            }
            "SECCOMP_FILTER_FLAG_TSYNC" => libc::SECCOMP_FILTER_FLAG_TSYNC as libc::c_uint,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => 1 << 5,
            other => return Err(SeccompError::Lib(format!("unknown filter flag {other}"))),
        };
    }
    if uses_notify {
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as libc::c_uint;
    }
    Ok(Filter {
        program,
        flags,
        uses_notify,
    })
}

/// libseccomp 2.5 can only export to an fd: use a memfd.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>, SeccompError> {
    use std::io::{Read, Seek};
    let fd = nix::sys::memfd::memfd_create("berth-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(lib)?;
    ctx.export_bpf(&fd).map_err(lib)?;
    let mut f = std::fs::File::from(fd);
    f.rewind().map_err(lib)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(lib)?;
    Ok(bytes)
}

fn decode(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    if bytes.len() % 8 != 0 || bytes.is_empty() {
        return Err(SeccompError::Program);
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// For each architecture: if the syscall number is above the newest the
/// profile knows, return ENOSYS; otherwise fall through to libseccomp.
fn enosys_stub(newest: &BTreeMap<u32, i32>) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_ABS, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W,
    };
    const ARCH_OFF: u32 = 4; // offsetof(struct seccomp_data, arch)
    const NR_OFF: u32 = 0;
    let mut blocks: Vec<Vec<libc::sock_filter>> = Vec::new();
    for (&arch, &max) in newest {
        let mut b = vec![stmt(BPF_LD | BPF_W | BPF_ABS, NR_OFF)];
        if arch == 0xc000_003e {
            // x32 syscalls share AUDIT_ARCH_X86_64: leave them to libseccomp.
            b.push(jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1));
            b.push(stmt(BPF_JMP | BPF_JA | BPF_K, 0)); // patched to "to program"
        }
        b.push(jump(BPF_JMP | BPF_JGT | BPF_K, max as u32, 0, 0)); // jt patched to ENOSYS
        b.push(stmt(BPF_JMP | BPF_JA | BPF_K, 0)); // patched to "to program"
        blocks.push(b);
    }
    // Layout: ld arch; [jeq arch_i ? block_i : next]...; ja program;
    //         block_0 ... block_n; ret ENOSYS; <program>
    let archs: Vec<u32> = newest.keys().copied().collect();
    let mut out = vec![stmt(BPF_LD | BPF_W | BPF_ABS, ARCH_OFF)];
    let dispatch_len = archs.len() + 1; // the jeqs and a final ja
    let block_lens: Vec<usize> = blocks.iter().map(Vec::len).collect();
    let total_blocks: usize = block_lens.iter().sum();
    let enosys_at = 1 + dispatch_len + total_blocks; // index of ret ENOSYS
    let program_at = enosys_at + 1;
    let mut block_start = 1 + dispatch_len;
    for (i, &arch) in archs.iter().enumerate() {
        let here = 1 + i;
        let jt = (block_start - here - 1) as u8;
        out.push(jump(BPF_JMP | BPF_JEQ | BPF_K, arch, jt, 0));
        block_start += block_lens[i];
    }
    let here = out.len();
    out.push(stmt(
        BPF_JMP | BPF_JA | BPF_K,
        (program_at - here - 1) as u32,
    ));
    for b in blocks {
        let base = out.len();
        for (j, mut ins) in b.into_iter().enumerate() {
            let at = base + j;
            if ins.code == (BPF_JMP | BPF_JA | BPF_K) as u16 {
                ins.k = (program_at - at - 1) as u32;
            } else if ins.code == (BPF_JMP | BPF_JGT | BPF_K) as u16 {
                ins.jt = (enosys_at - at - 1) as u8;
            }
            out.push(ins);
        }
    }
    out.push(stmt(
        BPF_RET | BPF_K,
        libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA),
    ));
    out
}

/// Asks the kernel whether it takes the filter's flags, without loading
/// anything: with a NULL program seccomp(2) fails with EFAULT once the
/// flags passed, EINVAL if not (libseccomp probes the same way). Run before
/// the container reports ready, so a filter that is only loaded right
/// before execve still fails at create.
pub fn probe(filter: &Filter) -> Result<(), SeccompError> {
    // SAFETY: a NULL program is never read: the call fails before (EINVAL)
    // or at (EFAULT) the copy.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            filter.flags,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    let err = std::io::Error::last_os_error();
    match (ret, err.raw_os_error()) {
        (r, Some(libc::EFAULT)) if r < 0 => Ok(()),
        _ => Err(SeccompError::Load(err)),
    }
}

/// Loads the filter into the calling thread. Returns the notify listener
/// when the profile uses the notify action.
pub fn load(filter: &Filter) -> Result<Option<OwnedFd>, SeccompError> {
    let prog = libc::sock_fprog {
        len: filter.program.len() as u16,
        filter: filter.program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `filter.program`, which outlives the call; the
    // kernel copies the program before returning.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            filter.flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(SeccompError::Load(std::io::Error::last_os_error()));
    }
    if filter.uses_notify {
        // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the return value is a
        // new fd that we now own.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as i32) }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_jumps_land_inside_the_program() {
        let mut newest = BTreeMap::new();
        newest.insert(0xc000_003e, 300);
        newest.insert(0x4000_0003, 400);
        let stub = enosys_stub(&newest);
        let len = stub.len();
        for (i, ins) in stub.iter().enumerate() {
            let cls = ins.code as u32 & 0x07;
            if cls == libc::BPF_JMP {
                if ins.code as u32 == libc::BPF_JMP | libc::BPF_JA {
                    assert_eq!(i + 1 + ins.k as usize, len, "ja at {i} goes to the program");
                } else {
                    assert!(i + 1 + (ins.jt as usize) < len + 1);
                    assert!(i + 1 + (ins.jf as usize) < len + 1);
                }
            }
        }
        let last = stub.last().unwrap();
        assert_eq!(last.k, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    }

    fn program_of(f: &Filter) -> Vec<(u16, u8, u8, u32)> {
        f.program
            .iter()
            .map(|i| (i.code, i.jt, i.jf, i.k))
            .collect()
    }

    #[test]
    fn a_cache_hit_returns_the_stored_program_and_a_bad_entry_is_recompiled() {
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            ],
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let fresh = compile(&profile).unwrap();
        let first = compile_cached(&profile, &cache).unwrap();
        let entries: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert_eq!(entries.len(), 1);
        let file = entries[0].as_ref().unwrap().path();
        assert_eq!(std::fs::read(&file).unwrap(), fresh.to_bytes());
        let cached = compile_cached(&profile, &cache).unwrap();
        assert_eq!(program_of(&first), program_of(&fresh));
        assert_eq!(program_of(&cached), program_of(&fresh));
        assert_eq!(cached.flags, fresh.flags);
        assert_eq!(cached.uses_notify, fresh.uses_notify);
        // A hit is served from the entry, not compiled: a different but
        // valid program planted under the profile's key is what comes back.
        let planted: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
        }))
        .unwrap();
        let planted = compile(&planted).unwrap();
        assert_ne!(program_of(&planted), program_of(&fresh));
        std::fs::write(&file, planted.to_bytes()).unwrap();
        let hit = compile_cached(&profile, &cache).unwrap();
        assert_eq!(
            program_of(&hit),
            program_of(&planted),
            "the entry was not read"
        );
        assert_eq!(hit.flags, planted.flags);
        assert_eq!(hit.uses_notify, planted.uses_notify);
        assert_eq!(std::fs::read(&file).unwrap(), planted.to_bytes());
        // A torn or foreign entry is not trusted: it is compiled again.
        std::fs::write(&file, b"BSC1\0\0").unwrap();
        let again = compile_cached(&profile, &cache).unwrap();
        assert_eq!(program_of(&again), program_of(&fresh));
        assert_eq!(std::fs::read(&file).unwrap(), fresh.to_bytes());
        // Another profile gets another entry.
        let mut other = profile.clone();
        other.set_default_errno_ret(Some(1));
        compile_cached(&other, &cache).unwrap();
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
    }
}
