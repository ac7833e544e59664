//! berth-checker: a static binary that runs inside a container.
//!
//! `berth-checker check CONFIG` compares what the process observes from the
//! inside (its ids, capabilities, rlimits, mounts, masked and read-only
//! paths, sysctls, devices, hostname, seccomp state, cgroup limits) with
//! what CONFIG (an OCI config.json) asks for, printing `ok ...` or
//! `FAIL ...` per item and exiting 1 if anything failed. Tests also feed it
//! deliberately wrong expectations (negative controls) to show that each
//! check can fail.
//!
//! `berth-checker syscall NR [ARG...]` makes a raw syscall and prints
//! `ret=R errno=E`; `berth-checker int80 NR [ARG...]` does the same through
//! the 32-bit x86 `int 0x80` entry, so seccomp profiles listing
//! SCMP_ARCH_X86 can be tested.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::path::Path;

use serde_json::Value;

struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, what: &str, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            println!("ok {what}");
        } else {
            println!("FAIL {what}: {}", detail());
            self.failed += 1;
        }
    }
}

fn status_field(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

fn cap_number(name: &str) -> Option<u32> {
    const CAPS: &[&str] = &[
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    CAPS.iter().position(|c| *c == name).map(|i| i as u32)
}

fn caps_mask(v: &Value) -> u64 {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().and_then(cap_number))
        .fold(0u64, |m, n| m | (1u64 << n))
}

fn mountinfo() -> Vec<(String, String, String)> {
    // (mount point, per-mount options, fs type)
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let fstype = right.split(' ').next()?;
            Some((
                f.get(4)?.to_string(),
                f.get(5)?.to_string(),
                fstype.to_owned(),
            ))
        })
        .collect()
}

fn last_mount_at(mounts: &[(String, String, String)], dest: &str) -> Option<(String, String)> {
    mounts
        .iter()
        .rev()
        .find(|(p, _, _)| p == dest)
        .map(|(_, o, t)| (o.clone(), t.clone()))
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        _ => return None,
    })
}

fn check(cfg: &Value) -> usize {
    let mut r = Report { failed: 0 };
    let p = &cfg["process"];

    // Process: args, cwd, env, user.
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let want_args: Vec<String> = p["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    r.check("process.args", args == want_args, || {
        format!("{args:?} != {want_args:?}")
    });
    let cwd = std::env::current_dir()
        .map(|c| c.display().to_string())
        .unwrap_or_default();
    let want_cwd = p["cwd"].as_str().unwrap_or("/");
    r.check("process.cwd", cwd == want_cwd, || {
        format!("{cwd} != {want_cwd}")
    });
    for kv in p["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let got = std::env::var(k).unwrap_or_default();
        r.check(&format!("process.env {k}"), got == v, || {
            format!("{got:?} != {v:?}")
        });
    }
    // SAFETY: plain id getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let want_uid = p["user"]["uid"].as_u64().unwrap_or(0) as u32;
    let want_gid = p["user"]["gid"].as_u64().unwrap_or(0) as u32;
    r.check("process.user.uid", uid == want_uid, || {
        format!("{uid} != {want_uid}")
    });
    r.check("process.user.gid", gid == want_gid, || {
        format!("{gid} != {want_gid}")
    });
    if let Some(extra) = p["user"]["additionalGids"].as_array() {
        let mut groups = vec![0 as libc::gid_t; 256];
        // SAFETY: the buffer holds 256 entries.
        let n = unsafe { libc::getgroups(256, groups.as_mut_ptr()) };
        let got: BTreeSet<u32> = groups[..n.max(0) as usize].iter().copied().collect();
        let want: BTreeSet<u32> = extra
            .iter()
            .filter_map(|g| g.as_u64().map(|g| g as u32))
            .collect();
        r.check("process.user.additionalGids", want.is_subset(&got), || {
            format!("{got:?} lacks {want:?}")
        });
    }
    if let Some(umask) = p["user"]["umask"].as_u64() {
        let got = status_field("Umask");
        let want = format!("{umask:04o}");
        r.check("process.user.umask", got == want, || {
            format!("{got} != {want}")
        });
    }

    // Capabilities and no_new_privs.
    for (set, field) in [
        ("bounding", "CapBnd"),
        ("effective", "CapEff"),
        ("permitted", "CapPrm"),
        ("inheritable", "CapInh"),
        ("ambient", "CapAmb"),
    ] {
        let want = caps_mask(&p["capabilities"][set]);
        // Capabilities the kernel does not know cannot be granted.
        let known = u64::from_str_radix(&status_field("CapBnd"), 16).unwrap_or(0) | want;
        let got = u64::from_str_radix(&status_field(field), 16).unwrap_or(u64::MAX);
        let expect = if uid != 0 && (set == "effective" || set == "permitted") {
            // A non-root process keeps across exec only what is ambient.
            caps_mask(&p["capabilities"]["ambient"])
        } else {
            want
        };
        r.check(
            &format!("process.capabilities.{set}"),
            got == expect & known,
            || format!("{got:016x} != {:016x}", expect & known),
        );
    }
    let nnp = status_field("NoNewPrivs");
    let want_nnp = if p["noNewPrivileges"].as_bool().unwrap_or(false) {
        "1"
    } else {
        "0"
    };
    r.check("process.noNewPrivileges", nnp == want_nnp, || {
        format!("{nnp} != {want_nnp}")
    });
    for rl in p["rlimits"].as_array().into_iter().flatten() {
        let name = rl["type"].as_str().unwrap_or_default();
        let Some(res) = rlimit_resource(name) else {
            continue;
        };
        let mut got = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct.
        unsafe { libc::getrlimit(res, &mut got) };
        let (soft, hard) = (
            rl["soft"].as_u64().unwrap_or(0),
            rl["hard"].as_u64().unwrap_or(0),
        );
        r.check(
            &format!("process.rlimits {name}"),
            got.rlim_cur == soft && got.rlim_max == hard,
            || format!("{}/{} != {soft}/{hard}", got.rlim_cur, got.rlim_max),
        );
    }
    if let Some(adj) = p["oomScoreAdj"].as_i64() {
        let got = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap_or_default();
        r.check("process.oomScoreAdj", got.trim() == adj.to_string(), || {
            format!("{} != {adj}", got.trim())
        });
    }

    // Hostname and domainname.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct.
    unsafe { libc::uname(&mut uts) };
    let field = |f: &[libc::c_char]| {
        f.iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8 as char)
            .collect::<String>()
    };
    if let Some(h) = cfg["hostname"].as_str() {
        let got = field(&uts.nodename);
        r.check("hostname", got == h, || format!("{got} != {h}"));
    }
    if let Some(d) = cfg["domainname"].as_str() {
        let got = field(&uts.domainname);
        r.check("domainname", got == d, || format!("{got} != {d}"));
    }

    // Root and mounts.
    let mounts = mountinfo();
    let root_ro = last_mount_at(&mounts, "/").is_some_and(|(o, _)| o.split(',').any(|x| x == "ro"));
    let want_ro = cfg["root"]["readonly"].as_bool().unwrap_or(false);
    r.check("root.readonly", root_ro == want_ro, || {
        format!("{root_ro} != {want_ro}")
    });
    for m in cfg["mounts"].as_array().into_iter().flatten() {
        let dest = m["destination"].as_str().unwrap_or_default();
        let typ = m["type"].as_str().unwrap_or_default();
        let opts: Vec<&str> = m["options"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let bind = typ == "bind" || opts.iter().any(|o| *o == "bind" || *o == "rbind");
        match last_mount_at(&mounts, dest) {
            None => r.check(&format!("mount {dest}"), false, || "not mounted".into()),
            Some((o, t)) => {
                let type_ok = bind || typ == "cgroup" || t == typ;
                r.check(&format!("mount {dest} type"), type_ok, || {
                    format!("{t} != {typ}")
                });
                if opts.contains(&"ro") {
                    r.check(
                        &format!("mount {dest} ro"),
                        o.split(',').any(|x| x == "ro"),
                        || o.clone(),
                    );
                }
                for flag in ["nosuid", "nodev", "noexec"] {
                    if opts.contains(&flag) {
                        r.check(
                            &format!("mount {dest} {flag}"),
                            o.split(',').any(|x| x == flag),
                            || o.clone(),
                        );
                    }
                }
            }
        }
    }
    let l = &cfg["linux"];
    for path in l["maskedPaths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let p = Path::new(path);
        if !p.exists() {
            continue;
        }
        let masked = if p.is_dir() {
            std::fs::read_dir(p)
                .map(|d| d.count() == 0)
                .unwrap_or(false)
        } else {
            std::fs::read(p).map(|b| b.is_empty()).unwrap_or(true)
        };
        r.check(&format!("maskedPaths {path}"), masked, || "readable".into());
    }
    for path in l["readonlyPaths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !Path::new(path).exists() {
            continue;
        }
        let ro = last_mount_at(&mounts, path).is_some_and(|(o, _)| o.split(',').any(|x| x == "ro"));
        r.check(&format!("readonlyPaths {path}"), ro, || {
            "not a read-only mount".into()
        });
    }
    if let Some(sysctl) = l["sysctl"].as_object() {
        for (k, v) in sysctl {
            let got = std::fs::read_to_string(format!("/proc/sys/{}", k.replace('.', "/")))
                .unwrap_or_default();
            let want = v.as_str().unwrap_or_default();
            r.check(&format!("sysctl {k}"), got.trim() == want, || {
                format!("{} != {want}", got.trim())
            });
        }
    }
    for d in l["devices"].as_array().into_iter().flatten() {
        let path = d["path"].as_str().unwrap_or_default();
        let c = CString::new(path).unwrap_or_default();
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: stat of a NUL-terminated path into a zeroed struct.
        let ok = unsafe { libc::stat(c.as_ptr(), &mut st) } == 0;
        let (maj, min) = (
            libc::major(st.st_rdev) as u64,
            libc::minor(st.st_rdev) as u64,
        );
        let want = (
            d["major"].as_u64().unwrap_or(0),
            d["minor"].as_u64().unwrap_or(0),
        );
        r.check(&format!("device {path}"), ok && (maj, min) == want, || {
            format!("{maj}:{min} != {want:?}")
        });
        if let Some(mode) = d["fileMode"].as_u64() {
            let got = st.st_mode as u64 & 0o777;
            r.check(&format!("device {path} mode"), got == mode, || {
                format!("{got:o} != {mode:o}")
            });
        }
    }
    if !l["seccomp"].is_null() {
        let got = status_field("Seccomp");
        r.check("seccomp filter", got == "2", || format!("Seccomp: {got}"));
    }
    if let Some(limit) = l["resources"]["memory"]["limit"].as_i64() {
        let got = std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes")
            .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/memory.max"))
            .unwrap_or_default();
        r.check(
            "resources.memory.limit",
            got.trim() == limit.to_string(),
            || format!("{} != {limit}", got.trim()),
        );
    }
    if let Some(limit) = l["resources"]["pids"]["limit"].as_i64() {
        let got = std::fs::read_to_string("/sys/fs/cgroup/pids/pids.max")
            .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/pids.max"))
            .unwrap_or_default();
        r.check(
            "resources.pids.limit",
            got.trim() == limit.to_string(),
            || format!("{} != {limit}", got.trim()),
        );
    }
    println!("{} failed", r.failed);
    r.failed
}

fn parse_args(args: &[String]) -> Vec<i64> {
    args.iter().map(|a| a.parse().unwrap_or(0)).collect()
}

fn raw_syscall(nr: i64, a: &[i64]) -> (i64, i32) {
    let g = |i: usize| a.get(i).copied().unwrap_or(0);
    // SAFETY: a test tool: the caller chooses syscalls with harmless args.
    let ret = unsafe { libc::syscall(nr, g(0), g(1), g(2), g(3), g(4), g(5)) };
    let errno = if ret < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    (ret, errno)
}

#[cfg(target_arch = "x86_64")]
fn int80(nr: i64, a: &[i64]) -> (i64, i32) {
    let g = |i: usize| a.get(i).copied().unwrap_or(0);
    let mut eax = nr;
    // SAFETY: the 32-bit syscall entry; arguments are small integers, and the
    // kernel preserves every register but eax.
    unsafe {
        // rbx is reserved by LLVM: swap the first argument in and out.
        std::arch::asm!(
            "xchg rbx, {a0}",
            "int 0x80",
            "xchg rbx, {a0}",
            a0 = inout(reg) g(0) => _,
            inout("rax") eax,
            in("rcx") g(1),
            in("rdx") g(2),
            in("rsi") g(3),
            in("rdi") g(4),
        );
    }
    let ret = eax as i32 as i64;
    if ret < 0 && ret > -4096 {
        (-1, -ret as i32)
    } else {
        (ret, 0)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn int80(_: i64, _: &[i64]) -> (i64, i32) {
    eprintln!("int80 is only available on x86_64");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("check") => {
            let path = args.get(2).map(String::as_str).unwrap_or("/config.json");
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
                eprintln!("reading {path}: {e}");
                std::process::exit(2)
            });
            let cfg: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                eprintln!("parsing {path}: {e}");
                std::process::exit(2)
            });
            std::process::exit(if check(&cfg) == 0 { 0 } else { 1 });
        }
        Some(kind @ ("syscall" | "int80")) => {
            let nr: i64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(-1);
            let rest = parse_args(&args[3.min(args.len())..]);
            let (ret, errno) = if kind == "syscall" {
                raw_syscall(nr, &rest)
            } else {
                int80(nr, &rest)
            };
            println!("ret={ret} errno={errno}");
        }
        _ => {
            eprintln!(
                "usage: berth-checker check [CONFIG] | syscall NR [ARG...] | int80 NR [ARG...]"
            );
            std::process::exit(2);
        }
    }
}
