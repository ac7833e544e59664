//! berth-runtime honours each part of the runtime spec it claims: every test
//! observes the effect inside a real container (or on the host's cgroup
//! files), not just that a flag was accepted.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use berth_integration_tests::runtime::{bundle, cgroup_dir, pass_fd, Runtime};
use serde_json::{json, Value};

fn run_out(
    rt: &Runtime,
    b: &berth_integration_tests::fixtures::bundle::Bundle,
    tag: &str,
) -> String {
    let c = rt.container(tag);
    rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok()
        .stdout
}

fn set_process(b: &berth_integration_tests::fixtures::bundle::Bundle, key: &str, v: Value) {
    b.edit_config(|c| c["process"][key] = v).unwrap();
}

#[test]
fn cgroup_limits_are_applied_and_updatable() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sleep", "100"]);
    b.edit_config(|c| {
        c["linux"]["resources"]["memory"] = json!({ "limit": 67108864 });
        c["linux"]["resources"]["pids"] = json!({ "limit": 50 });
        c["linux"]["resources"]["cpu"] = json!({ "shares": 512, "quota": 50000, "period": 100000 });
    })
    .unwrap();
    let c = rt.container("cg");
    rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    let read = |ctl: &str, f: &str| {
        std::fs::read_to_string(cgroup_dir(ctl, &c.id).join(f))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(read("pids", "pids.max"), "50");
    assert_eq!(read("cpu", "cpu.shares"), "512");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");

    rt.run(["update", "--memory", "32M", "--pids-limit", "20", &c.id])
        .ok();
    assert_eq!(read("memory", "memory.limit_in_bytes"), "33554432");
    assert_eq!(read("pids", "pids.max"), "20");
    assert_eq!(read("cpu", "cpu.shares"), "512", "untouched values stay");

    let res = b.dir.join("res.json");
    std::fs::write(&res, r#"{"pids": {"limit": 30}, "cpu": {"shares": 256}}"#).unwrap();
    rt.run(["update", "--resources", res.to_str().unwrap(), &c.id])
        .ok();
    assert_eq!(read("pids", "pids.max"), "30");
    assert_eq!(read("cpu", "cpu.shares"), "256");
    assert_eq!(read("memory", "memory.limit_in_bytes"), "33554432");

    let ev: Value =
        serde_json::from_str(&rt.run(["events", "--stats", &c.id]).ok().stdout).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], c.id.as_str());
    assert_eq!(ev["data"]["pids"]["current"], 1);
    assert_eq!(ev["data"]["pids"]["limit"], 30);
    assert_eq!(ev["data"]["memory"]["usage"]["limit"], 33554432);
}

#[test]
fn pids_limit_is_enforced() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&[
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6; do sleep 5 & done 2>&1; echo done",
    ]);
    b.edit_config(|c| c["linux"]["resources"]["pids"] = json!({ "limit": 4 }))
        .unwrap();
    let c = rt.container("pidslim");
    let out = rt
        .run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .stdout;
    assert!(
        out.contains("can't fork") || out.contains("Resource temporarily unavailable"),
        "{out}"
    );
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sh", "-c", "echo process >> /tmp/hooks.log"]);
    let log_host = b.rootfs().join("tmp/hooks.log");
    let hook = |name: &str, path: &str| {
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo {name} >> {path}; cat > {path}.{name}.state")],
            "env": ["PATH=/bin:/usr/bin"]
        })
    };
    let host = log_host.to_str().unwrap().to_owned();
    b.edit_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["hooks"] = json!({
            "prestart": [hook("prestart", &host)],
            "createRuntime": [hook("createRuntime", &host)],
            "createContainer": [hook("createContainer", &host)],
            "startContainer": [hook("startContainer", "/tmp/hooks.log")],
            "poststart": [hook("poststart", &host)],
            "poststop": [hook("poststop", &host)],
        });
    })
    .unwrap();
    let c = rt.container("hooks");
    rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    let log = std::fs::read_to_string(&log_host).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    // poststart runs after the process started, so it may land either side
    // of the process's own line.
    let mut without_process: Vec<&str> =
        lines.iter().copied().filter(|l| *l != "process").collect();
    assert_eq!(
        without_process,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{log}"
    );
    without_process.clear();
    assert!(lines.contains(&"process"));
    for name in [
        "prestart",
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
    ] {
        let st: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{host}.{name}.state")).unwrap())
                .unwrap();
        assert_eq!(st["id"], c.id.as_str(), "{name}");
        assert_eq!(st["bundle"], b.dir.to_str().unwrap(), "{name}");
    }
}

#[test]
fn failing_hook_fails_create_and_leaves_nothing() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["true"]);
    b.edit_config(|c| {
        c["hooks"] = json!({ "createRuntime": [{ "path": "/bin/false" }] });
    })
    .unwrap();
    let c = rt.container("badhook");
    rt.run(["create", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .fails("error running hook #0 (createRuntime, /bin/false): exit status 1");
    assert!(!rt.root.path().join(&c.id).exists());
    assert!(!cgroup_dir("pids", &c.id).exists());
}

fn seccomp_profile(default: &str, rules: Value) -> Value {
    json!({
        "defaultAction": default,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    })
}

#[test]
fn seccomp_denies_with_the_profiles_errno() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&[
        "sh",
        "-c",
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/x 2>&1; echo rc=$?",
    ]);
    b.edit_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["linux"]["seccomp"] = seccomp_profile(
            "SCMP_ACT_ALLOW",
            json!([{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22 }]),
        );
    })
    .unwrap();
    let out = run_out(&rt, &b, "seccomp");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Invalid argument"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
}

#[test]
fn seccomp_without_no_new_privs_still_filters() {
    // runc's order: with noNewPrivileges false the filter is loaded while
    // CAP_SYS_ADMIN is still held, before the capabilities are dropped.
    let rt = Runtime::new();
    let (_d, b) = bundle(&[
        "sh",
        "-c",
        "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; mkdir /tmp/x 2>&1; echo rc=$?",
    ]);
    b.edit_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["process"]["noNewPrivileges"] = json!(false);
        c["linux"]["seccomp"] = seccomp_profile(
            "SCMP_ACT_ALLOW",
            json!([{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }]),
        );
    })
    .unwrap();
    let out = run_out(&rt, &b, "seccompnnp");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("CapEff:\t0000000020000420"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
}

#[test]
fn seccomp_kill_action_and_argument_conditions() {
    let rt = Runtime::new();
    // The rule kills kill(2) whose signal (argument 1) is not 0: a liveness
    // check (`kill -0`) passes, a real signal (to a pid that does not even
    // exist) is killed by SIGSYS. Both sides of the condition are shown, so
    // a filter that ignored the arguments (killing both) or the rule
    // (killing neither) fails.
    let (_d, b) = bundle(&[
        "sh",
        "-c",
        "sh -c 'kill -0 $$'; echo zero=$?; sh -c 'kill -HUP 999999'; echo hup=$?",
    ]);
    b.edit_config(|c| {
        c["linux"]["seccomp"] = seccomp_profile(
            "SCMP_ACT_ALLOW",
            json!([{ "names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS",
                     "args": [{ "index": 1, "value": 0, "op": "SCMP_CMP_NE" }] }]),
        );
    })
    .unwrap();
    let c = rt.container("seckill");
    let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
    // 159 = 128 + SIGSYS.
    assert_eq!(r.stdout, "zero=0\nhup=159\n", "{r:?}");
}

#[test]
fn seccomp_profile_is_never_ignored() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["true"]);
    b.edit_config(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_NOTIFY" }],
        });
    })
    .unwrap();
    let c = rt.container("nolistener");
    rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .fails("notify action needs listenerPath");
}

/// A minimal seccomp agent: takes the listener from the runtime, answers
/// every notification with ENOSPC (28), and reports what it saw.
fn notify_agent(listener: UnixListener) -> std::thread::JoinHandle<(Value, u32)> {
    std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 8192];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let mut fd = None;
        for c in msg.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                fd = fds.first().copied();
            }
        }
        let n = msg.bytes;
        let state: Value = serde_json::from_slice(&buf[..n]).unwrap();
        // SAFETY (test): the fd was just received for us.
        let notify = unsafe { OwnedFd::from_raw_fd(fd.expect("listener fd")) };
        let mut handled = 0;
        loop {
            // SAFETY (test): zeroed plain-old-data structs for the ioctls.
            let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            let r = unsafe {
                libc::ioctl(notify.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req)
            };
            if r != 0 {
                break; // the filter's last user exited
            }
            let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
            resp.id = req.id;
            resp.error = -libc::ENOSPC;
            unsafe {
                libc::ioctl(
                    notify.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_SEND,
                    &mut resp,
                )
            };
            handled += 1;
        }
        (state, handled)
    })
}

#[test]
fn seccomp_notify_reaches_a_real_agent() {
    let rt = Runtime::new();
    let (d, b) = bundle(&["sh", "-c", "mkdir /tmp/z 2>&1; echo rc=$?"]);
    let sock_path = d.path().join("agent.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let agent = notify_agent(listener);
    b.edit_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock_path,
            "listenerMetadata": "hello-agent",
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY" }],
        });
    })
    .unwrap();
    let out = run_out(&rt, &b, "notify");
    assert!(out.contains("No space left on device"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    let (state, handled) = agent.join().unwrap();
    assert!(handled >= 1);
    assert_eq!(state["fds"], json!(["seccompFd"]));
    assert_eq!(state["metadata"], "hello-agent");
    assert!(state["pid"].as_i64().unwrap() > 0);
}

#[test]
fn console_socket_receives_the_pty_master() {
    let rt = Runtime::new();
    let (d, b) = bundle(&[
        "sh",
        "-c",
        "tty; stty size; stat -c '%F %t:%T' /dev/console /dev/pts/0",
    ]);
    set_process(&b, "terminal", json!(true));
    set_process(&b, "consoleSize", json!({ "height": 30, "width": 100 }));
    let sock_path = d.path().join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let receiver = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let mut buf = [0u8; 256];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let n = msg.bytes;
        let mut fd = None;
        for c in msg.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                fd = fds.first().copied();
            }
        }
        let name = String::from_utf8_lossy(&buf[..n]).into_owned();
        // SAFETY (test): received fd, now ours.
        (name, unsafe { OwnedFd::from_raw_fd(fd.unwrap()) })
    });
    let c = rt.container("tty");
    rt.run([
        "create",
        "--console-socket",
        sock_path.to_str().unwrap(),
        "--bundle",
        b.dir.to_str().unwrap(),
        &c.id,
    ])
    .ok();
    let (name, master) = receiver.join().unwrap();
    assert!(name.starts_with("/dev/pts/"), "{name}");
    rt.run(["start", &c.id]).ok();
    let mut f = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut chunk = [0u8; 1024];
    // Read until the slave side closes (EIO) once the process exits.
    while let Ok(n) = f.read(&mut chunk) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    let out = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    // /dev/console is the pty itself: the same character device (major 136,
    // 0x88, the Unix98 ptys) as the process's terminal.
    assert_eq!(
        lines,
        [
            "/dev/pts/0",
            "30 100",
            "character special file 88:0",
            "character special file 88:0"
        ],
        "{out}"
    );
}

#[test]
fn terminal_without_console_socket_is_refused() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["true"]);
    set_process(&b, "terminal", json!(true));
    let c = rt.container("notty");
    rt.run(["create", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .fails("console socket");
}

#[test]
fn process_settings_reach_the_process() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&[
        "sh",
        "-c",
        "id; ulimit -n; hostname; cat /proc/sys/kernel/domainname; cat /proc/self/oom_score_adj; \
         grep CapEff /proc/self/status; umask; pwd; echo HOME=$HOME",
    ]);
    b.edit_config(|c| {
        c["process"]["user"] =
            json!({ "uid": 65534, "gid": 65534, "additionalGids": [10, 20], "umask": 23 });
        c["process"]["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "hard": 777, "soft": 555 }]);
        c["process"]["oomScoreAdj"] = json!(100);
        c["process"]["cwd"] = json!("/tmp");
        c["process"]["capabilities"] = json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN"],
            "permitted": ["CAP_CHOWN"], "inheritable": ["CAP_CHOWN"], "ambient": ["CAP_CHOWN"]
        });
        c["hostname"] = json!("box");
        c["domainname"] = json!("example.test");
    })
    .unwrap();
    let out = run_out(&rt, &b, "proc");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "uid=65534(nobody) gid=65534(nobody) groups=10,20",
        "{out}"
    );
    assert_eq!(lines[1], "555");
    assert_eq!(lines[2], "box");
    assert_eq!(lines[3], "example.test");
    assert_eq!(lines[4], "100");
    // CAP_CHOWN only (bit 0): a non-root process keeps capabilities across
    // execve only through the ambient set.
    assert_eq!(lines[5], "CapEff:\t0000000000000001");
    assert_eq!(lines[6], "0027");
    assert_eq!(lines[7], "/tmp");
    assert_eq!(lines[8], "HOME=/nonexistent");
}

#[test]
fn negative_oom_score_adj_is_applied_or_a_clear_error() {
    // Where the host withholds CAP_SYS_RESOURCE (this machine) the kernel
    // refuses and the user must hear why; where it grants it, the value is
    // applied. A positive value is applied everywhere.
    // CAP_SYS_RESOURCE is capability 24.
    let has_sys_resource = caps_effective() & (1 << 24) != 0;
    let rt = Runtime::new();
    for adj in [-500, 300] {
        let (_d, b) = bundle(&["cat", "/proc/self/oom_score_adj"]);
        set_process(&b, "oomScoreAdj", json!(adj));
        let c = rt.container("oom");
        let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
        if adj < 0 && !has_sys_resource {
            r.fails("oom_score_adj to -500");
        } else {
            assert_eq!(r.ok().stdout.trim(), adj.to_string());
        }
    }
}

/// This process's effective capability set, from /proc/self/status.
fn caps_effective() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn masked_readonly_paths_and_readonly_root() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&[
        "sh",
        "-c",
        "exec 2>&1; wc -c < /proc/keys; ls /sys/firmware | wc -l; \
         echo 1 > /proc/sys/kernel/ns_last_pid; echo rc=$?; touch /newfile; echo rc=$?",
    ]);
    let out = run_out(&rt, &b, "mask");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "0",
        "/proc/keys masked with /dev/null: {out}"
    );
    assert_eq!(
        lines[1].trim(),
        "0",
        "firmware masked with an empty tmpfs: {out}"
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert_eq!(lines.iter().filter(|l| **l == "rc=1").count(), 2, "{out}");
}

#[test]
fn sysctls_devices_and_bind_mounts() {
    let rt = Runtime::new();
    let (d, b) = bundle(&[
        "sh",
        "-c",
        "cat /proc/sys/net/ipv4/ip_default_ttl; ls -ln /dev/mydev | cut -c1-10; \
         stat -c '%u %g' /dev/mydev; cat /data/hello; touch /data/x; echo rc=$?",
    ]);
    let host_dir = d.path().join("shared");
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::write(host_dir.join("hello"), "from the host\n").unwrap();
    b.edit_config(|c| {
        // A namespaced sysctl whose default (64) differs from the value set,
        // so the assertion needs the write (ip_forward is already 1 in a new
        // network namespace on hosts with devconf_inherit_init_net=0).
        c["linux"]["sysctl"] = json!({ "net.ipv4.ip_default_ttl": "99" });
        c["linux"]["devices"] = json!([{ "path": "/dev/mydev", "type": "c", "major": 1, "minor": 3,
                                         "fileMode": 384, "uid": 7, "gid": 8 }]);
        c["linux"]["resources"]["devices"] = json!([
            { "allow": false, "access": "rwm" },
            { "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" }
        ]);
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind", "source": host_dir,
            "options": ["rbind", "ro"]
        }));
    })
    .unwrap();
    let out = run_out(&rt, &b, "sysctl");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "99", "{out}");
    assert_eq!(lines[1], "crw-------", "{out}");
    assert_eq!(lines[2], "7 8", "{out}");
    assert_eq!(lines[3], "from the host");
    assert!(out.contains("rc=1"), "read-only bind: {out}");
    assert!(!host_dir.join("x").exists());
}

#[test]
fn joins_a_network_namespace_by_path() {
    let rt = Runtime::new();
    let (_d, a) = bundle(&["sleep", "100"]);
    let ca = rt.container("nsa");
    rt.run(["run", "-d", "--bundle", a.dir.to_str().unwrap(), &ca.id])
        .ok();
    let pid = rt.state(&ca.id)["pid"].as_i64().unwrap();
    let want = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let (_d2, b) = bundle(&["readlink", "/proc/self/ns/net"]);
    b.edit_config(|c| {
        for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "network" {
                n["path"] = json!(format!("/proc/{pid}/ns/net"));
            }
        }
    })
    .unwrap();
    let out = run_out(&rt, &b, "nsb");
    assert_eq!(out.trim(), want.to_str().unwrap());
}

#[test]
fn preserve_fds_passes_exactly_the_extra_fd() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sh", "-c", "cat /proc/self/fd/3; ls /proc/self/fd | wc -l"]);
    let c = rt.container("preserve");
    let tmp = tempfile::tempdir().unwrap();
    let extra = tmp.path().join("extra");
    std::fs::write(&extra, "preserved\n").unwrap();
    let f = std::fs::File::open(&extra).unwrap();
    let out_path = tmp.path().join("out");
    let mut cmd = rt.cmd();
    cmd.args(["run", "--preserve-fds", "1", "--bundle"])
        .arg(&b.dir)
        .arg(&c.id)
        .stdout(std::fs::File::create(&out_path).unwrap());
    let raw = f.as_raw_fd();
    pass_fd(&mut cmd, raw, 3);
    let st = cmd.status().unwrap();
    assert!(st.success());
    let out = std::fs::read_to_string(&out_path).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "preserved");
    // 0, 1, 2, 3 and the fd ls itself opens on the directory.
    assert_eq!(lines[1].trim(), "5", "{out}");
}

/// What a container sees of the filesystem, as its own process reports it,
/// and whether the host's root lies beneath its root in its mount
/// namespace.
struct RootView {
    /// "key: value" lines from inside (see the script in [`root_view`]).
    report: std::collections::HashMap<String, String>,
    /// The names in the bundle's rootfs, as the host lists them.
    rootfs_names: String,
    /// The bundle's rootfs on the host.
    rootfs: std::path::PathBuf,
    /// The host marker is there once the container's root is detached.
    host_root_beneath: bool,
}

/// Runs a container (with `--no-pivot` or not) that reports what it sees of
/// `/`, then looks from the host at what lies beneath its root.
fn root_view(no_pivot: bool) -> RootView {
    let rt = Runtime::new();
    let (d, b) = bundle(&["sleep", "100"]);
    // Outside the rootfs, on the host: must be out of the container's reach.
    let host_marker = d.path().join("host-marker");
    std::fs::write(&host_marker, "host").unwrap();
    // In the rootfs: what / must show instead.
    std::fs::write(b.rootfs().join("rootfs-marker"), "rootfs").unwrap();
    let script = format!(
        r#"{{
          echo "root: $(ls -A / | sort | tr '\n' ' ')"
          echo "parent: $(ls -A /.. | sort | tr '\n' ' ')"
          if test -e '{marker}'; then echo "host marker: reachable"; else echo "host marker: unreachable"; fi
          echo "mount points: $(cut -d' ' -f5 /proc/self/mountinfo | sort -u | tr '\n' ' ')"
          echo "root mount: $(awk '$5 == "/" {{ print $4 }}' /proc/self/mountinfo | tr '\n' ' ')"
          if umount -l / 2>/dev/null; then echo "detach: done"; else echo "detach: refused"; fi
        }} > /tmp/report.tmp && mv /tmp/report.tmp /tmp/report && exec sleep 100"#,
        marker = host_marker.display()
    );
    b.edit_config(|c| {
        c["process"]["args"] = json!(["sh", "-c", script]);
        c["root"]["readonly"] = json!(false);
    })
    .unwrap();
    let c = rt.container(if no_pivot { "nopivot" } else { "pivot" });
    let mut args = vec!["run", "-d"];
    if no_pivot {
        args.push("--no-pivot");
    }
    args.extend(["--bundle", b.dir.to_str().unwrap(), c.id.as_str()]);
    rt.run(&args).ok();
    let report_path = b.rootfs().join("tmp/report");
    berth_integration_tests::wait_until("the container's report", Duration::from_secs(10), || {
        report_path.exists()
    });
    let report = std::fs::read_to_string(&report_path)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or((l, ""));
            (k.to_owned(), v.trim_end().to_owned())
        })
        .collect();
    let mut names: Vec<String> = std::fs::read_dir(b.rootfs())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let pid = rt.state(&c.id)["pid"].as_i64().unwrap();
    RootView {
        report,
        rootfs_names: names.join(" "),
        rootfs: b.rootfs(),
        host_root_beneath: beneath_the_root(pid, &host_marker),
    }
}

/// From the host, in a thread of our own that enters the mount namespace of
/// process `pid`: detaches that namespace's root (the container's), enters
/// again (which lands on whatever mount was beneath it) and says whether
/// `path`, a host path, is there.
fn beneath_the_root(pid: i64, path: &Path) -> bool {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).unwrap();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let check = |r: libc::c_int, what: &str| {
            assert_eq!(r, 0, "{what}: {}", std::io::Error::last_os_error());
        };
        // SAFETY (test): these change only this thread's root, cwd and
        // mount namespace (its filesystem context is unshared first, as
        // setns requires), and the thread ends here; the umount is of the
        // container's private root mount, inside its own namespace.
        unsafe {
            check(libc::unshare(libc::CLONE_FS), "unshare(CLONE_FS)");
            check(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS), "setns");
            check(libc::umount2(c"/".as_ptr(), libc::MNT_DETACH), "umount /");
            check(
                libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS),
                "setns again",
            );
        }
        path.exists()
    })
    .join()
    .unwrap()
}

/// `--no-pivot` enters the rootfs by moving it over / and chrooting, not by
/// pivot_root: the host's root stays in the container's mount namespace,
/// beneath the rootfs (found there once the rootfs is detached), where
/// pivot_root leaves nothing of it. Either way the container sees its
/// rootfs as / and nothing of the host: / and /.. list the rootfs, a host
/// file is unreachable, only the spec's mounts are listed, / is the bundle's
/// rootfs, and the container cannot detach its root to get beneath it.
#[test]
fn no_pivot_moves_the_rootfs_over_the_host_root_and_keeps_the_container_inside() {
    for no_pivot in [false, true] {
        let v = root_view(no_pivot);
        let r = &v.report;
        let mode = if no_pivot { "--no-pivot" } else { "pivot_root" };
        assert!(
            v.rootfs_names.split(' ').any(|n| n == "rootfs-marker"),
            "{}",
            v.rootfs_names
        );
        assert_eq!(r["root"], v.rootfs_names, "{mode}: / is the rootfs");
        assert_eq!(r["parent"], v.rootfs_names, "{mode}: /.. is / itself");
        assert_eq!(r["host marker"], "unreachable", "{mode}");
        for m in r["mount points"].split(' ') {
            assert!(
                m == "/"
                    || ["/proc", "/dev", "/sys"]
                        .iter()
                        .any(|k| Path::new(m).starts_with(k)),
                "{mode}: a mount that is not the spec's is visible: {m} in {r:?}"
            );
        }
        let root_mount = &r["root mount"];
        // The root of that mount in its filesystem: the rootfs path, less
        // the path of the host mount it is on.
        assert!(
            root_mount.ends_with("/bundle/rootfs")
                && !root_mount.contains(' ')
                && v.rootfs.to_str().unwrap().ends_with(root_mount.as_str()),
            "{mode}: / is one mount, of {}: {r:?}",
            v.rootfs.display()
        );
        assert_eq!(r["detach"], "refused", "{mode}");
        assert_eq!(
            v.host_root_beneath, no_pivot,
            "{mode}: the host's root beneath the container's"
        );
    }
}

#[test]
fn bad_input_changes_nothing() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["true"]);
    let bd = b.dir.to_str().unwrap();
    rt.run(["create", "--bundle", bd, "../escape"])
        .fails("invalid container id");
    assert!(!rt.root.path().parent().unwrap().join("escape").exists());

    let empty = tempfile::tempdir().unwrap();
    rt.run(["create", "--bundle", empty.path().to_str().unwrap(), "c1"])
        .fails("config.json not found");

    let (_d2, bad) = bundle(&["true"]);
    std::fs::write(bad.config_path(), "{ \"ociVersion\": ").unwrap();
    rt.run(["create", "--bundle", bad.dir.to_str().unwrap(), "c2"])
        .fails("invalid JSON at line 1");

    let (_d3, noroot) = bundle(&["true"]);
    noroot
        .edit_config(|c| c["root"]["path"] = json!("missing-rootfs"))
        .unwrap();
    rt.run(["create", "--bundle", noroot.dir.to_str().unwrap(), "c3"])
        .fails("does not exist");

    rt.run(["--systemd-cgroup", "create", "--bundle", bd, "c4"])
        .fails("systemd is not running");

    let (_d4, escape) = bundle(&["true"]);
    escape
        .edit_config(|c| c["linux"]["cgroupsPath"] = json!("/berth/../../escape"))
        .unwrap();
    rt.run(["create", "--bundle", escape.dir.to_str().unwrap(), "c5"])
        .fails("would leave the cgroup hierarchy");
    assert!(!std::path::Path::new("/sys/fs/cgroup/escape").exists());
    assert!(!std::path::Path::new("/sys/fs/escape").exists());

    // None of the failures left a container, a directory or a cgroup.
    assert_eq!(rt.run(["list", "-q"]).ok().stdout, "");
    let leftovers: Vec<_> = std::fs::read_dir(rt.root.path())
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for id in ["c1", "c2", "c3", "c4", "c5"] {
        assert!(!cgroup_dir("pids", id).exists());
    }
}

/// Lets the container's process make device nodes in a writable root.
fn allow_mknod(b: &berth_integration_tests::fixtures::bundle::Bundle) {
    b.edit_config(|c| {
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_MKNOD"));
        }
        c["root"]["readonly"] = json!(false);
    })
    .unwrap();
}

#[test]
fn device_rules_on_cgroup_v2_are_an_ebpf_filter() {
    // A private mount namespace in which /sys/fs/cgroup is a cgroup2
    // mount: the runtime sees a unified host and must enforce the device
    // rules with an eBPF program (the v2 hierarchy here has no controllers,
    // but device programs attach to any cgroup).
    let rt = Runtime::new();
    let (_d, b) = bundle(&[
        "sh",
        "-c",
        "echo x > /dev/null && echo null-ok; mknod /dev/mem2 c 1 1; \
         head -c1 /dev/mem2 >/dev/null 2>/tmp/err || cat /tmp/err; \
         mknod /dev/zero2 c 1 5 && head -c1 /dev/zero2 >/dev/null && echo zero2-ok; \
         mknod /dev/loop9 b 7 9 && head -c1 /dev/loop9 >/dev/null 2>/tmp/err || cat /tmp/err",
    ]);
    allow_mknod(&b);
    // A running container whose rules `update` extends: the block device
    // 7:9 (a loop device) is refused at first, then opens, while the
    // defaults still work.
    let (_d2, sleeper) = bundle(&["sh", "-c", "mknod /dev/blk9 b 7 9; sleep 100"]);
    allow_mknod(&sleeper);
    let rules = sleeper.dir.join("devices.json");
    std::fs::write(
        &rules,
        r#"{"devices": [{"allow": true, "type": "b", "major": 7, "minor": 9, "access": "r"}]}"#,
    )
    .unwrap();
    let rtc = format!("{} --root {}", rt.bin.display(), rt.root.path().display());
    let probe = "head -c1 /dev/blk9 >/dev/null 2>&1 && echo blk-ok; \
                 head -c1 /dev/blk9 2>&1 >/dev/null; echo x > /dev/null && echo null-ok";
    let script = format!(
        "mount -t cgroup2 none /sys/fs/cgroup || exit 99; \
         {rtc} run --bundle {b} v2dev; \
         {rtc} run -d --bundle {s} v2sleep >/dev/null 2>&1 </dev/null; sleep 0.2; \
         echo before:; {rtc} exec v2sleep sh -c '{probe}'; \
         {rtc} update --resources {rules} v2sleep; echo update-rc=$?; \
         echo after:; {rtc} exec v2sleep sh -c '{probe}'; \
         {rtc} delete -f v2sleep",
        b = b.dir.display(),
        s = sleeper.dir.display(),
        rules = rules.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The defaults (/dev/null, /dev/zero) pass; /dev/mem and a block
    // device are refused by the filter, not by the kernel's own checks.
    assert!(stdout.contains("null-ok"), "{stdout}{stderr}");
    assert!(stdout.contains("zero2-ok"), "{stdout}{stderr}");
    assert!(
        stdout.contains("/dev/mem2: Operation not permitted"),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains("/dev/loop9: Operation not permitted"),
        "{stdout}{stderr}"
    );
    // `update` replaced the running container's filter.
    let (before, after) = stdout.split_once("after:").unwrap();
    let before = before.split_once("before:").unwrap().1;
    assert!(
        before.contains("/dev/blk9: Operation not permitted")
            && !before.contains("blk-ok")
            && before.contains("null-ok"),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("update-rc=0"), "{stdout}{stderr}");
    assert!(
        !after.contains("Operation not permitted")
            && after.contains("blk-ok")
            && after.contains("null-ok"),
        "{stdout}{stderr}"
    );
    assert_eq!(rt.run(["list", "-q"]).ok().stdout, "");
}

#[test]
fn json_log_lines_for_containerd() {
    let rt = Runtime::new();
    let log = rt.root.path().join("log.json");
    let r = rt.run([
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "nope",
    ]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "container does not exist\n");
    let line: Value = serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["level"], "error");
    assert_eq!(line["msg"], "container does not exist");
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    // Without --log, runc writes a logrus text line to stderr.
    let r = rt.run(["state", "nope"]);
    assert!(
        r.stderr.starts_with("time=\"")
            && r.stderr
                .contains("level=error msg=\"container does not exist\""),
        "{r:?}"
    );
}

#[test]
fn spec_matches_runc_and_features_are_reported() {
    let rt = Runtime::new();
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    rt.run(["spec", "--bundle", ours.path().to_str().unwrap()])
        .ok();
    let st = std::process::Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(theirs.path())
        .status()
        .unwrap();
    assert!(st.success());
    let read = |p: &Path| -> Value {
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(p.join("config.json")).unwrap()).unwrap();
        v["hostname"] = json!("h");
        v
    };
    assert_eq!(read(ours.path()), read(theirs.path()));
    rt.run(["spec", "--bundle", ours.path().to_str().unwrap()])
        .fails("exists");
    let rootless = tempfile::tempdir().unwrap();
    rt.run([
        "spec",
        "--rootless",
        "--bundle",
        rootless.path().to_str().unwrap(),
    ])
    .ok();
    let v = read(rootless.path());
    assert!(v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "user"));

    let f: Value = serde_json::from_str(&rt.run(["features"]).ok().stdout).unwrap();
    assert!(f["linux"]["seccomp"]["actions"]
        .as_array()
        .unwrap()
        .contains(&json!("SCMP_ACT_NOTIFY")));
    assert_eq!(f["linux"]["cgroup"]["v1"], true);
    assert!(f["hooks"].as_array().unwrap().len() == 6);
    rt.run(["checkpoint", "x"]).fails("not supported");
}

/// The first words of each indented line of `section` (e.g. "Commands:")
/// in clap's help text: the command names, or the flags of "Options:" (a
/// short flag, then its long form, as one string: "-d, --detach").
fn help_section(help: &str, section: &str) -> Vec<String> {
    let mut lines = help.lines().skip_while(|l| *l != section);
    assert_eq!(lines.next(), Some(section), "no {section} in {help}");
    // Long help separates the entries with empty lines; the next section's
    // title ends this one.
    lines
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let l = l.trim_start();
            // Continuation lines of a description (long help) do not start
            // with a flag.
            if section == "Options:" && !l.starts_with('-') {
                return None;
            }
            // "-d, --detach  Detach ..." / "--log <PATH>  Set ..." / "run  Create ..."
            let name = l.split("  ").next().unwrap();
            Some(match name.split_once(" <") {
                Some((flag, _)) => flag.to_owned(),
                None => name.to_owned(),
            })
        })
        .collect()
}

/// The command line as implemented (runc's names), exactly: the version
/// lines, the commands `--help` lists, the global flags, and each
/// command's usage line and flags. Descriptions may be worded freely.
#[test]
fn version_and_help() {
    let rt = Runtime::new();
    let v = rt.run(["--version"]).ok().stdout;
    // runc's short flag is -v.
    assert_eq!(rt.run(["-v"]).ok().stdout, v);
    // runc's three lines (runc's version.bats matches "runc version
    // X.Y.Z", "commit:" and "spec: X.Y.Z"), also after other global flags.
    assert_eq!(
        v.lines().collect::<Vec<_>>(),
        [
            format!(
                "berth-runtime version {} (runc version 1.1.5 compatible)",
                env!("CARGO_PKG_VERSION")
            )
            .as_str(),
            format!("commit: berth-runtime-{}", env!("CARGO_PKG_VERSION")).as_str(),
            "spec: 1.2.0"
        ],
        "{v}"
    );
    assert_eq!(rt.run(["--log-format", "json", "-v"]).ok().stdout, v);
    let h = rt.run(["--help"]).ok().stdout;
    // runc's NAME block (urfave/cli's layout), as runc's help.bats reads it.
    assert_eq!(
        h.lines().take(2).collect::<Vec<_>>(),
        [
            "NAME:",
            "   runc - Open Container Initiative runtime (runc-compatible)"
        ],
        "{h}"
    );
    assert_eq!(
        help_section(&h, "Commands:"),
        [
            "create",
            "start",
            "run",
            "state",
            "kill",
            "delete",
            "list",
            "ps",
            "exec",
            "pause",
            "resume",
            "events",
            "update",
            "spec",
            "features",
            "checkpoint",
            "restore",
            "help"
        ],
        "{h}"
    );
    assert_eq!(
        help_section(&h, "Options:"),
        [
            "--debug",
            "--log",
            "--log-format",
            "--root",
            "--systemd-cgroup",
            "--rootless",
            "-v, --version",
            "-h, --help"
        ],
        "{h}"
    );
    let create_flags = [
        "-b, --bundle",
        "--console-socket",
        "--pid-file",
        "--no-pivot",
        "--no-new-keyring",
        "--preserve-fds",
    ];
    let run_flags = [
        &create_flags[..],
        &["-d, --detach", "--keep", "--no-subreaper"],
    ]
    .concat();
    let commands: [(&str, &str, &[&str]); 17] = [
        ("create", "[OPTIONS] <ID>", &create_flags),
        ("start", "<ID>", &[]),
        ("run", "[OPTIONS] <ID>", &run_flags),
        ("state", "<ID>", &[]),
        ("kill", "[OPTIONS] <ID> [SIGNAL]", &["-a, --all"]),
        ("delete", "[OPTIONS] <ID>", &["-f, --force"]),
        ("list", "[OPTIONS]", &["-f, --format", "-q, --quiet"]),
        ("ps", "[OPTIONS] <ID> [PS_ARGS]...", &["-f, --format"]),
        (
            "exec",
            "[OPTIONS] <ID> [COMMAND]...",
            &[
                "--console-socket",
                "--cwd",
                "-e, --env",
                "-t, --tty",
                "-u, --user",
                "-g, --additional-gids",
                "-p, --process",
                "-d, --detach",
                "--pid-file",
                "--no-new-privs",
                "-c, --cap",
                "--preserve-fds",
                "--ignore-paused",
                "--cgroup",
            ],
        ),
        ("pause", "<ID>", &[]),
        ("resume", "<ID>", &[]),
        ("events", "[OPTIONS] <ID>", &["--interval", "--stats"]),
        (
            "update",
            "[OPTIONS] <ID>",
            &[
                "-r, --resources",
                "--blkio-weight",
                "--cpu-period",
                "--cpu-quota",
                "--cpu-rt-period",
                "--cpu-rt-runtime",
                "--cpu-share",
                "--cpuset-cpus",
                "--cpuset-mems",
                "--memory",
                "--memory-reservation",
                "--memory-swap",
                "--pids-limit",
            ],
        ),
        ("spec", "[OPTIONS]", &["-b, --bundle", "--rootless"]),
        ("features", "", &[]),
        ("checkpoint", "[ARGS]...", &[]),
        ("restore", "[ARGS]...", &[]),
    ];
    for (cmd, args, flags) in commands {
        let help = rt.run([cmd, "--help"]).ok().stdout;
        assert_eq!(rt.run([cmd, "-h"]).ok().stdout, help);
        let lines: Vec<&str> = help.lines().collect();
        assert_eq!(lines[0], "NAME:", "{help}");
        assert!(lines[1].starts_with(&format!("   runc {cmd} - ")), "{help}");
        let usage = format!("berth-runtime {cmd} {args}");
        assert_eq!(
            lines
                .iter()
                .skip_while(|l| **l != "USAGE:")
                .nth(1)
                .map(|l| l.trim()),
            Some(usage.trim_end()),
            "{help}"
        );
        let want: Vec<&str> = flags.iter().copied().chain(["-h, --help"]).collect();
        assert_eq!(help_section(&help, "Options:"), want, "{cmd}: {help}");
    }
}

#[test]
fn events_reports_stats_until_the_container_stops() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sleep", "1"]);
    let c = rt.container("events");
    rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    let start = std::time::Instant::now();
    let r = rt.run(["events", "--interval", "200ms", &c.id]).ok();
    assert!(start.elapsed() < Duration::from_secs(5));
    let n = r
        .stdout
        .lines()
        .filter(|l| l.contains("\"type\":\"stats\""))
        .count();
    assert!(n >= 2, "{r:?}");
}

#[test]
fn run_with_a_terminal_proxies_it_like_runc() {
    // `script` gives the runtime a real terminal; without --console-socket
    // the runtime allocates the container's pty and copies it to its own.
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sh", "-c", "tty; stty size; exit 4"]);
    set_process(&b, "terminal", json!(true));
    let c = rt.container("runtty");
    let inner = format!(
        "stty rows 33 cols 111; {} --root {} run --bundle {} {}; echo rc=$?",
        rt.bin.display(),
        rt.root.path().display(),
        b.dir.display(),
        c.id
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(
        out.contains("33 111"),
        "the window size reaches the container: {out}"
    );
    assert!(out.contains("rc=4"), "{out}");
}

/// A read-only root drops the nosuid/nodev its bind mount inherited from
/// the filesystem the bundle is on, as runc's remount does (a bundle on a
/// tmpfs /tmp mounted nosuid,nodev, as on a fresh machine, showed the
/// difference: setuid programs of a read-only image stopped working).
#[test]
fn a_readonly_root_does_not_keep_the_hosts_nosuid() {
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        dir.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        None::<&str>,
    )
    .unwrap();
    let _unmount = Unmount(dir.path().to_owned());
    let b = berth_integration_tests::fixtures::bundle::busybox(
        &dir.path().join("bundle"),
        &["sh", "-c", "head -n1 /proc/self/mounts"],
    )
    .unwrap();
    b.edit_config(|c| c["root"]["readonly"] = json!(true))
        .unwrap();
    let out = run_out(&rt, &b, "ro-root");
    let opts: Vec<&str> = out
        .split_whitespace()
        .nth(3)
        .unwrap_or("")
        .split(',')
        .collect();
    assert!(opts.contains(&"ro"), "{out}");
    assert!(
        !opts.contains(&"nosuid") && !opts.contains(&"nodev"),
        "{out}"
    );
}

/// Every `rootfsPropagation` starts the container, and `/` inside has the
/// asked propagation. Unbindable is applied once the root is switched (the
/// rootfs is bind-mounted onto itself before, which the kernel refuses from
/// an unbindable mount: the OCI validation suite's linux_rootfs_propagation,
/// which crun passes).
#[test]
fn every_rootfs_propagation_applies_to_the_root() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["awk", "$5 == \"/\" { print }", "/proc/self/mountinfo"]);
    for (prop, want, never) in [
        ("shared", Some("shared:"), "unbindable"),
        ("rshared", Some("shared:"), "unbindable"),
        ("unbindable", Some("unbindable"), "shared:"),
        ("runbindable", Some("unbindable"), "shared:"),
        ("private", None, "shared:"),
        ("rprivate", None, "unbindable"),
        ("slave", None, "shared:"),
        ("rslave", None, "unbindable"),
    ] {
        b.edit_config(|c| c["linux"]["rootfsPropagation"] = json!(prop))
            .unwrap();
        let c = rt.container("prop");
        let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
        assert_eq!(r.code, 0, "{prop}: {r:?}");
        let line = r.stdout.lines().last().unwrap_or_default().to_owned();
        if let Some(w) = want {
            assert!(line.contains(w), "{prop}: / is {line:?}");
        }
        assert!(!line.contains(never), "{prop}: / is {line:?}");
    }
}
