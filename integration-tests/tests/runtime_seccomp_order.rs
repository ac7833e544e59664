//! Where the seccomp filter goes in (issue 21, class 2), held against runc:
//! a strict profile (default ENXIO, an allow list) that runs a busybox
//! workload under runc must run under berth, which loads the filter right
//! before execve, so none of its own steps run under it; notify profiles
//! hand a working listener to an agent; a missing agent is a clear error.
//!
//! `BERTH_DIFF_RUNTIME=<old binary>` shows which cases an older build gets
//! wrong.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_integration_tests::differential::{guard, message, unique_id, use_cgroup, Pair, Which};
use berth_integration_tests::fixtures::bundle::Bundle;
use berth_integration_tests::runtime::{bundle, Run, Runtime};
use serde_json::{json, Value};

const BOTH: [Which; 2] = [Which::Runc, Which::Berth];

/// What static busybox needs for `true`.
const BUSYBOX: &[&str] = &[
    "arch_prctl",
    "brk",
    "execve",
    "exit_group",
    "getrandom",
    "getuid",
    "mprotect",
    "prctl",
    "prlimit64",
    "readlink",
    "rseq",
    "set_robust_list",
    "set_tid_address",
];

/// What `sh -c 'echo ...'` needs on top.
const SHELL: &[&str] = &[
    "uname",
    "getppid",
    "newfstatat",
    "rt_sigaction",
    "getpid",
    "write",
];

/// What runc 1.1.5 itself (Go) does after loading the filter with
/// no_new_privs: closing its pipes and fds (reading /proc/self/fd), the exec
/// fifo, the Go runtime's signals and scheduling. Measured here by
/// stracing runc under an ENXIO profile.
const RUNC_AFTER_FILTER: &[&str] = &[
    "close",
    "write",
    "openat",
    "futex",
    "nanosleep",
    "epoll_ctl",
    "epoll_pwait",
    "read",
    "fcntl",
    "getpid",
    "rt_sigreturn",
    "sigaltstack",
    "rt_sigprocmask",
    "sched_yield",
    "fstatfs",
    "getdents64",
];

/// A profile failing everything with ENXIO but `allow`.
fn strict_profile(allow: &[&[&str]]) -> Value {
    let names: Vec<&str> = allow.iter().flat_map(|l| l.iter().copied()).collect();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::ENXIO,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{ "names": names, "action": "SCMP_ACT_ALLOW" }],
    })
}

fn run_foreground(rt: &Runtime, b: &Bundle, w: Which, id: &str) -> Run {
    use_cgroup(b, w, id);
    let _g = guard(rt, id);
    rt.run(["run", "--bundle", b.dir.to_str().unwrap(), id])
}

/// Runs the bundle through both runtimes: (code, stdout, message) each.
fn both(pair: &Pair, b: &Bundle, tag: &str) -> Vec<(i32, String, String)> {
    let id = unique_id(tag);
    BOTH.iter()
        .map(|&w| {
            let r = run_foreground(pair.get(w), b, w, &id);
            (r.code, r.stdout.clone(), message(&r.stderr))
        })
        .collect()
}

/// A profile runc runs `true` and `sh -c` under, with no_new_privs,
/// berth must run too: its own chdir, fd closing and hooks are not under
/// the filter (`chdir to cwd (/): ENXIO` before).
#[test]
fn a_strict_profile_runc_accepts_runs_under_berth() {
    let pair = Pair::new();
    let cases: [(&[&str], Value); 2] = [
        (&["true"], strict_profile(&[BUSYBOX, RUNC_AFTER_FILTER])),
        (
            &["sh", "-c", "echo under-the-filter"],
            strict_profile(&[BUSYBOX, SHELL, RUNC_AFTER_FILTER]),
        ),
    ];
    for (args, profile) in cases {
        let (_d, b) = bundle(args);
        b.edit_config(|c| c["linux"]["seccomp"] = profile).unwrap();
        let seen = both(&pair, &b, "strict");
        assert_eq!(seen[0].0, 0, "runc must run {args:?}: {seen:?}");
        assert_eq!(seen[0], seen[1], "{args:?}: runc, berth");
    }
}

/// berth asks less than runc: after the filter it only calls execve, so
/// the workload's own syscalls are enough; without no_new_privs the filter
/// is loaded with CAP_SYS_ADMIN kept back for it, and dropped by a single
/// capset(2) after it, the one call of berth's a profile must then allow.
#[test]
fn berth_needs_nothing_of_its_own_after_the_filter() {
    let rt = Runtime::new();
    let rt = match std::env::var_os("BERTH_DIFF_RUNTIME") {
        Some(bin) => Runtime {
            bin: bin.into(),
            root: rt.root,
        },
        None => rt,
    };
    let cases: [(bool, Value); 3] = [
        (true, strict_profile(&[BUSYBOX, SHELL])),
        (false, strict_profile(&[BUSYBOX, SHELL, &["capset"]])),
        // The spec's capabilities still hold after that capset.
        (false, strict_profile(&[BUSYBOX, SHELL, &["capset"]])),
    ];
    for (i, (nnp, profile)) in cases.into_iter().enumerate() {
        let args: &[&str] = if i == 2 {
            &["grep", "CapEff", "/proc/self/status"]
        } else {
            &["sh", "-c", "echo ok"]
        };
        let (_d, b) = bundle(args);
        b.edit_config(|c| {
            c["process"]["noNewPrivileges"] = nnp.into();
            c["linux"]["seccomp"] = profile;
            if i == 2 {
                // grep opens, reads and closes the file.
                let list = c["linux"]["seccomp"]["syscalls"][0]["names"]
                    .as_array_mut()
                    .unwrap();
                list.extend(["openat", "read", "close"].map(Value::from));
            }
        })
        .unwrap();
        let id = unique_id("own");
        let r = run_foreground(&rt, &b, Which::Berth, &id);
        // CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE: no CAP_SYS_ADMIN.
        let want = if i == 2 {
            "CapEff:\t0000000020000420\n"
        } else {
            "ok\n"
        };
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (0, want),
            "case {i} (noNewPrivileges {nnp}): {r:?}"
        );
    }
}

/// A failing startContainer hook is reported as a hook that failed (runc:
/// "error running hook #0"), never as the runtime dying under the filter.
#[test]
fn a_failing_start_container_hook_is_a_hook_error() {
    let pair = Pair::new();
    let (_d, b) = bundle(&["true"]);
    b.edit_config(|c| {
        c["linux"]["seccomp"] = strict_profile(&[BUSYBOX, RUNC_AFTER_FILTER]);
        c["hooks"] = json!({ "startContainer": [
            { "path": "/bin/sh", "args": ["sh", "-c", "exit 3"] }
        ]});
    })
    .unwrap();
    let seen = both(&pair, &b, "hook");
    for (w, (code, _, msg)) in BOTH.iter().zip(&seen) {
        assert_ne!(*code, 0, "{w:?}: {seen:?}");
        assert!(msg.contains("error running"), "{w:?}: {msg:?}");
        assert!(msg.contains("hook #0"), "{w:?}: {msg:?}");
        // The hook runs under the filter (as runc runs it), which fails
        // what this profile leaves out with ENXIO: "no such device or
        // address" in Go's words and in the C library's.
        assert!(
            msg.to_lowercase().contains("no such device or address"),
            "{w:?}: {msg:?}"
        );
    }
}

/// As runc's seccomp.bats: a startContainer hook runs in the container
/// under its seccomp filter, so what the profile kills, the hook cannot do
/// ("error running hook ... bad system call"), and nothing of it happens.
#[test]
fn start_container_hooks_run_under_the_filter() {
    let pair = Pair::new();
    let (_d, b) = bundle(&["true"]);
    // The hook runs in the container: its / is the bundle's rootfs.
    let marker = b.rootfs().join("hook-made-this");
    b.edit_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL" }],
        });
        c["hooks"] = json!({ "startContainer": [
            { "path": "/bin/sh", "args": ["sh", "-c", "mkdir /hook-made-this"] }
        ]});
    })
    .unwrap();
    let seen = both(&pair, &b, "hookfilter");
    for (w, (code, _, msg)) in BOTH.iter().zip(&seen) {
        assert_ne!(*code, 0, "{w:?}: {seen:?}");
        // runc's seccomp.bats matches these two phrases.
        assert!(msg.contains("error running hook"), "{w:?}: {msg:?}");
        assert!(msg.contains("bad system call"), "{w:?}: {msg:?}");
    }
    assert!(!marker.exists(), "the hook's mkdir ran");
}

/// A seccomp agent: takes the listener (SCM_RIGHTS) and the container's
/// state from each connection, and answers every notification with
/// `errno` (0: let the syscall run).
struct Agent {
    path: PathBuf,
    /// The JSON messages received, one per connection.
    messages: Arc<Mutex<Vec<String>>>,
    errno: i32,
}

impl Agent {
    fn start(dir: &Path, errno: i32) -> Agent {
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).expect("agent socket");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let seen = messages.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let Some((text, fd)) = receive(conn.as_raw_fd()) else {
                    continue;
                };
                seen.lock().unwrap().push(text);
                std::thread::spawn(move || serve(fd, errno));
            }
        });
        Agent {
            path,
            messages,
            errno,
        }
    }
}

fn receive(sock: RawFd) -> Option<(String, OwnedFd)> {
    let mut buf = vec![0u8; 1 << 16];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = nix::sys::socket::recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let n = msg.bytes;
    let mut fd = None;
    for c in msg.cmsgs().ok()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed these fds for us.
            fd = fds.first().map(|&f| unsafe { OwnedFd::from_raw_fd(f) });
        }
    }
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), fd?))
}

/// NOTIF_RECV and NOTIF_SEND until every process under the filter is gone.
fn serve(fd: OwnedFd, errno: i32) {
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        if n <= 0 || pfd.revents & libc::POLLIN == 0 {
            return; // POLLHUP: no process left under the filter
        }
        // SAFETY: the kernel wants a zeroed seccomp_notif to fill in.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: NOTIF_RECV writes one seccomp_notif into `req`.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) };
        if r != 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                // The process was interrupted or died meanwhile.
                Some(libc::ENOENT) | Some(libc::EINTR) => continue,
                _ => return,
            }
        }
        let resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: -errno,
            flags: if errno == 0 {
                libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
            } else {
                0
            },
        };
        // SAFETY: NOTIF_SEND reads one seccomp_notif_resp.
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    }
}

fn notify_profile(listener: &Path, names: &[&str]) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": listener,
        "listenerMetadata": "bar",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{ "names": names, "action": "SCMP_ACT_NOTIFY" }],
    })
}

/// The agent gets a listener it can receive notifications on, and its
/// answer is what the container's syscall returns; with and without
/// no_new_privs (the filter is loaded at different points), and with
/// the syscalls the runtime itself makes before execve notified too.
#[test]
fn notify_hands_a_working_listener_to_the_agent() {
    let pair = Pair::new();
    let dir = tempfile::tempdir().unwrap();
    let refusing = Agent::start(dir.path(), libc::ENOMEDIUM);
    let cont_dir = tempfile::tempdir().unwrap();
    let continuing = Agent::start(cont_dir.path(), 0);
    let mkdir = "mkdir /dev/shm/foo 2>&1; echo status=$?";
    let cases: [(&str, &Agent, &[&str], bool); 4] = [
        (mkdir, &refusing, &["mkdir", "mkdirat"], true),
        (mkdir, &refusing, &["mkdir", "mkdirat"], false),
        (
            "echo ran",
            &continuing,
            &["execve", "openat", "read", "close"],
            true,
        ),
        (
            "echo ran",
            &continuing,
            &["execve", "openat", "read", "close"],
            false,
        ),
    ];
    for (script, agent, names, nnp) in cases {
        let (_d, b) = bundle(&["sh", "-c", script]);
        b.edit_config(|c| {
            c["process"]["noNewPrivileges"] = nnp.into();
            c["linux"]["seccomp"] = notify_profile(&agent.path, names);
        })
        .unwrap();
        let before = agent.messages.lock().unwrap().len();
        let seen = both(&pair, &b, "notify");
        assert_eq!(
            seen[0], seen[1],
            "{script} {names:?} nnp {nnp}: runc, berth"
        );
        assert_eq!(seen[1].0, 0, "{seen:?}");
        if agent.errno != 0 {
            assert_eq!(
                seen[1].1,
                "mkdir: can't create directory '/dev/shm/foo': No medium found\nstatus=1\n"
            );
        } else {
            assert_eq!(seen[1].1, "ran\n");
        }
        let msgs = agent.messages.lock().unwrap();
        assert_eq!(msgs.len(), before + 2, "one connection per runtime");
        let state: Value = serde_json::from_str(msgs.last().unwrap()).unwrap();
        assert_eq!(state["fds"], json!(["seccompFd"]));
        assert_eq!(state["metadata"], "bar");
        assert_eq!(state["state"]["status"], "creating");
    }
}

/// Profiles runc refuses, refused by berth with runc's words: no agent at
/// `listenerPath`, no `listenerPath`, notify for write.
#[test]
fn notify_errors_read_as_runc_says_them() {
    let pair = Pair::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-agent.sock");
    let cases: [(Value, &str); 3] = [
        (
            notify_profile(&missing, &["mkdir"]),
            "failed to connect with seccomp agent",
        ),
        (
            notify_profile(Path::new(""), &["mkdir"]),
            "listenerpath is not set",
        ),
        (
            notify_profile(&missing, &["write"]),
            "scmp_act_notify cannot be used for the write syscall",
        ),
    ];
    for (profile, phrase) in cases {
        let (_d, b) = bundle(&["true"]);
        b.edit_config(|c| c["linux"]["seccomp"] = profile).unwrap();
        let seen = both(&pair, &b, "notify-err");
        for (w, (code, _, msg)) in BOTH.iter().zip(&seen) {
            assert_ne!(*code, 0, "{w:?}: {seen:?}");
            assert!(
                msg.to_lowercase().contains(phrase),
                "{w:?}: {msg:?} lacks {phrase:?}"
            );
        }
    }
}
