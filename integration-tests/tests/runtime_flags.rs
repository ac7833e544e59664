//! berth-runtime flags that no other suite covers, each checked by its
//! effect inside the container (or in the container's cgroup files):
//! `exec --additional-gids/--cap/--no-new-privs/--preserve-fds/
//! --ignore-paused`, `run --no-subreaper`, hook timeouts, and `update`'s
//! CPU, cpuset and memory flags.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_integration_tests::fixtures::bundle::Bundle;
use berth_integration_tests::runtime::{bundle, pass_fd, Ctr, Runtime};
use serde_json::json;

/// A running `sleep 1000` container; `edit` changes its config first.
fn running<'a>(
    rt: &'a Runtime,
    tag: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> (tempfile::TempDir, Bundle, Ctr<'a>) {
    let (d, b) = bundle(&["sleep", "1000"]);
    b.edit_config(edit).unwrap();
    let c = rt.container(tag);
    rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    (d, b, c)
}

/// The value of `field` in a /proc/<pid>/status text.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {field} in {status:?}"))
}

fn hex(v: &str) -> u64 {
    u64::from_str_radix(v, 16).unwrap_or_else(|e| panic!("{v:?}: {e}"))
}

// Capability numbers (linux/capability.h).
const CAP_KILL: u32 = 5;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_AUDIT_WRITE: u32 = 29;

fn caps(list: &[u32]) -> u64 {
    list.iter().fold(0, |m, c| m | 1 << c)
}

#[test]
fn exec_additional_gids_become_the_process_groups() {
    let rt = Runtime::new();
    let (_d, _b, c) = running(&rt, "gids", |_| {});
    let plain = rt.run(["exec", &c.id, "cat", "/proc/self/status"]).ok();
    assert_eq!(status_field(&plain.stdout, "Groups"), "", "{plain:?}");
    let r = rt
        .run([
            "exec",
            "--additional-gids",
            "10",
            "--additional-gids",
            "20",
            &c.id,
            "cat",
            "/proc/self/status",
        ])
        .ok();
    assert_eq!(status_field(&r.stdout, "Groups"), "10 20", "{r:?}");
    // With another user: its own gid plus the extra ones.
    let r = rt
        .run(["exec", "-u", "65534:65534", "-g", "5", &c.id, "id", "-G"])
        .ok();
    assert_eq!(r.stdout.trim(), "65534 5", "{r:?}");
    rt.run(["exec", "--additional-gids", "x", &c.id, "true"])
        .fails("invalid value 'x'");
}

#[test]
fn exec_cap_adds_the_capability_to_the_process() {
    let rt = Runtime::new();
    let (_d, _b, c) = running(&rt, "cap", |_| {});
    let base = caps(&[CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE]);
    let probe = |extra: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[c.id.as_str(), "cat", "/proc/self/status"]);
        let out = rt.run(&args).ok().stdout;
        (
            hex(&status_field(&out, "CapEff")),
            hex(&status_field(&out, "CapBnd")),
            hex(&status_field(&out, "CapPrm")),
        )
    };
    assert_eq!(probe(&[]), (base, base, base));
    let with_admin = base | caps(&[CAP_SYS_ADMIN]);
    assert_eq!(
        probe(&["--cap", "CAP_SYS_ADMIN"]),
        (with_admin, with_admin, with_admin)
    );
    // Repeatable, and the CAP_ prefix and case are optional.
    let both = with_admin | caps(&[CAP_NET_RAW]);
    assert_eq!(
        probe(&["--cap", "CAP_SYS_ADMIN", "--cap", "net_raw"]),
        (both, both, both)
    );
    // The capability works: CAP_SYS_ADMIN lets the process mount.
    let r = rt.run([
        "exec",
        "--cap",
        "CAP_SYS_ADMIN",
        &c.id,
        "sh",
        "-c",
        "mount -t tmpfs t /tmp && echo mounted",
    ]);
    assert_eq!(r.stdout.trim(), "mounted", "{r:?}");
    let r = rt.run(["exec", c.id.as_str(), "mount", "-t", "tmpfs", "t", "/tmp"]);
    assert_ne!(r.code, 0, "mounted without CAP_SYS_ADMIN: {r:?}");
    rt.run(["exec", "--cap", "CAP_NOPE", &c.id, "true"])
        .fails("unknown capability CAP_NOPE");
}

#[test]
fn exec_no_new_privs_sets_the_flag_for_that_process() {
    let rt = Runtime::new();
    let (_d, _b, c) = running(&rt, "nnp", |cfg| {
        cfg["process"]["noNewPrivileges"] = json!(false)
    });
    let nnp = |extra: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[c.id.as_str(), "cat", "/proc/self/status"]);
        status_field(&rt.run(&args).ok().stdout, "NoNewPrivs")
    };
    assert_eq!(nnp(&[]), "0", "the container's own setting");
    assert_eq!(nnp(&["--no-new-privs"]), "1");
    // Only that process: the next exec is as the container says again.
    assert_eq!(nnp(&[]), "0");
}

/// Runs `exec ARGS` with `files` open at fds 3, 4, ...; returns stdout.
fn exec_with_fds(rt: &Runtime, args: &[&str], files: &[&Path]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let err = tmp.path().join("err");
    // Each file on a high fd number first, so no dup2 onto 3, 4, ... in
    // the child can overwrite a source that happened to have that number.
    let opened: Vec<std::os::fd::OwnedFd> = files
        .iter()
        .map(|p| {
            let f = std::fs::File::open(p).unwrap();
            nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100)).unwrap()
        })
        .map(|fd| {
            use std::os::fd::FromRawFd;
            // SAFETY: F_DUPFD_CLOEXEC returned a new fd that only we own.
            unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
        })
        .collect();
    let mut cmd = rt.cmd();
    cmd.arg("exec")
        .args(args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for (i, f) in opened.iter().enumerate() {
        pass_fd(&mut cmd, f.as_raw_fd(), 3 + i as i32);
    }
    let st = cmd.status().unwrap();
    assert!(
        st.success(),
        "exec {args:?}: {st}: {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    std::fs::read_to_string(&out).unwrap()
}

#[test]
fn exec_preserve_fds_passes_exactly_n_extra_fds() {
    let rt = Runtime::new();
    let (_d, _b, c) = running(&rt, "fds", |_| {});
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::write(&a, "first\n").unwrap();
    std::fs::write(&b, "second\n").unwrap();
    let script = "cat <&3 2>/dev/null || echo fd3-closed; \
                  if [ -e /proc/self/fd/4 ]; then cat <&4; else echo fd4-closed; fi";
    // Two fds handed over, one preserved: fd 3 is open, fd 4 is not.
    let out = exec_with_fds(
        &rt,
        &["--preserve-fds", "1", &c.id, "sh", "-c", script],
        &[&a, &b],
    );
    assert_eq!(out, "first\nfd4-closed\n");
    let out = exec_with_fds(
        &rt,
        &["--preserve-fds", "2", &c.id, "sh", "-c", script],
        &[&a, &b],
    );
    assert_eq!(out, "first\nsecond\n");
    // Without the flag nothing leaks in.
    let out = exec_with_fds(&rt, &[&c.id, "sh", "-c", script], &[&a, &b]);
    assert_eq!(out, "fd3-closed\nfd4-closed\n");
}

fn freezer_state(cgroup: &str) -> String {
    std::fs::read_to_string(
        Path::new("/sys/fs/cgroup/freezer")
            .join(cgroup)
            .join("freezer.state"),
    )
    .unwrap()
    .trim()
    .to_owned()
}

fn cgroup_procs(controller: &str, cgroup: &str) -> Vec<i64> {
    std::fs::read_to_string(
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(cgroup)
            .join("cgroup.procs"),
    )
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect()
}

/// Polls `f` until true, failing after 10 s with `what`.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `child` to exit (10 s at most, then kills it and fails).
fn wait_child(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn exec_ignore_paused_is_needed_to_exec_into_a_paused_container() {
    let rt = Runtime::new();
    let (_d, _b, c) = running(&rt, "paused", |_| {});
    rt.run(["pause", &c.id]).ok();
    assert_eq!(freezer_state(&c.id), "FROZEN");
    rt.run(["exec", &c.id, "true"])
        .fails("cannot exec in a paused container (use --ignore-paused)");
    assert_eq!(cgroup_procs("freezer", &c.id).len(), 1, "nothing joined");

    // With the flag the exec goes ahead: its process joins the container's
    // cgroup, where the freezer holds it (as runc's would be) until the
    // container is resumed; then it runs to its end.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut exec = rt
        .cmd()
        .args([
            "exec",
            "--ignore-paused",
            &c.id,
            "sh",
            "-c",
            "echo ran; exit 3",
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the exec's process to join the frozen cgroup", || {
        cgroup_procs("freezer", &c.id).len() >= 2
    });
    assert_eq!(freezer_state(&c.id), "FROZEN");
    assert!(
        exec.try_wait().unwrap().is_none(),
        "the exec finished inside a frozen cgroup"
    );
    rt.run(["resume", &c.id]).ok();
    let st = wait_child(&mut exec, "exec --ignore-paused after resume");
    assert_eq!(st.code(), Some(3));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "ran\n");
    assert_eq!(rt.state(&c.id)["status"], "running");
}

/// Runs `run [flags] --bundle B ID` in the foreground; returns (runtime
/// pid, exit status, stdout).
fn run_foreground(rt: &Runtime, flags: &[&str], b: &Bundle, id: &str) -> (u32, i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut child = rt
        .cmd()
        .arg("run")
        .args(flags)
        .arg("--bundle")
        .arg(&b.dir)
        .arg(id)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let st = wait_child(&mut child, &format!("run {flags:?}"));
    (
        pid,
        st.code().unwrap_or(-1),
        std::fs::read_to_string(&out).unwrap(),
    )
}

#[test]
fn run_no_subreaper_leaves_orphans_to_the_host() {
    let rt = Runtime::new();
    // Without a pid namespace of its own, a process the container orphans
    // goes to the nearest subreaper: the runtime, unless --no-subreaper.
    let (_d, b) = bundle(&[
        "sh",
        "-c",
        "p=$(sh -c 'sleep 30 >/dev/null 2>&1 & echo $!'); \
         echo ppid=$(grep PPid /proc/$p/status | cut -f2); kill $p",
    ]);
    b.edit_config(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid")
    })
    .unwrap();
    let ppid = |out: &str| -> u32 {
        out.trim()
            .strip_prefix("ppid=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{out:?}"))
    };
    let c = rt.container("reaper");
    let (runtime_pid, code, out) = run_foreground(&rt, &[], &b, &c.id);
    assert_eq!(code, 0, "{out}");
    assert_eq!(ppid(&out), runtime_pid, "the runtime adopts orphans");

    let c = rt.container("noreaper");
    let (runtime_pid, code, out) = run_foreground(&rt, &["--no-subreaper"], &b, &c.id);
    assert_eq!(code, 0, "{out}");
    assert_ne!(ppid(&out), runtime_pid, "--no-subreaper adopted an orphan");
    assert_ne!(ppid(&out), std::process::id());
}

#[test]
fn run_no_subreaper_with_a_pid_namespace_returns_the_exit_code() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sh", "-c", "echo hi; exit 4"]);
    let c = rt.container("nsr");
    let (_, code, out) = run_foreground(&rt, &["--no-subreaper"], &b, &c.id);
    assert_eq!((code, out.as_str()), (4, "hi\n"));
}

fn hook(path: &str, args: &[&str], timeout: i64) -> serde_json::Value {
    json!({ "path": path, "args": args, "timeout": timeout })
}

#[test]
fn a_hook_that_outlives_its_timeout_fails_the_create() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["true"]);
    b.edit_config(|c| {
        c["hooks"] = json!({ "createRuntime": [hook("/bin/sleep", &["sleep", "5"], 1)] })
    })
    .unwrap();
    let c = rt.container("hooktimeout");
    let t0 = Instant::now();
    rt.run(["create", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .fails("error running hook #0 (createRuntime, /bin/sleep): timed out after 1s");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "killed after {took:?}, not at its 1 s timeout"
    );
    rt.run(["state", &c.id]).fails("container does not exist");
    assert!(!Path::new("/sys/fs/cgroup/pids").join(&c.id).exists());

    // Within its timeout a hook is fine.
    b.edit_config(|c| {
        c["hooks"] = json!({ "createRuntime": [hook("/bin/sleep", &["sleep", "0.1"], 5)] })
    })
    .unwrap();
    let c = rt.container("hookok");
    rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();

    // poststart only warns, as the spec says: the container runs.
    b.edit_config(|c| {
        c["hooks"] = json!({ "poststart": [hook("/bin/sleep", &["sleep", "5"], 1)] })
    })
    .unwrap();
    let c = rt.container("poststart");
    let t0 = Instant::now();
    let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("error running hook #0 (poststart, /bin/sleep): timed out after 1s"),
        "{r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
}

fn cg_file(controller: &str, cgroup: &str, file: &str) -> String {
    let p: PathBuf = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(cgroup.trim_start_matches('/'))
        .join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

#[test]
fn update_cpu_cpuset_and_memory_flags_reach_the_cgroup() {
    let rt = Runtime::new();
    let cgroup = format!("bt-flags-{}", std::process::id());
    let (_d, b, c) = running(&rt, "upd", |cfg| {
        cfg["linux"]["cgroupsPath"] = json!(format!("/{cgroup}"))
    });
    assert_eq!(
        b.config().unwrap()["linux"]["cgroupsPath"],
        format!("/{cgroup}")
    );
    let f = |ctl: &str, file: &str| cg_file(ctl, &cgroup, file);
    assert_eq!(f("cpu", "cpu.cfs_quota_us"), "-1");
    rt.run([
        "update",
        "--cpu-period",
        "200000",
        "--cpu-quota",
        "50000",
        "--cpu-share",
        "512",
        "--cpuset-cpus",
        "0",
        "--cpuset-mems",
        "0",
        "--memory",
        "64m",
        "--memory-reservation",
        "32m",
        "--memory-swap",
        "128m",
        &c.id,
    ])
    .ok();
    assert_eq!(f("cpu", "cpu.cfs_period_us"), "200000");
    assert_eq!(f("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(f("cpu", "cpu.shares"), "512");
    assert_eq!(f("cpuset", "cpuset.cpus"), "0");
    assert_eq!(f("cpuset", "cpuset.mems"), "0");
    assert_eq!(
        f("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        f("memory", "memory.soft_limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(
        f("memory", "memory.memsw.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    // The container's processes feel the cpuset.
    let r = rt
        .run([
            "exec",
            &c.id,
            "grep",
            "Cpus_allowed_list",
            "/proc/self/status",
        ])
        .ok();
    assert_eq!(status_field(&r.stdout, "Cpus_allowed_list"), "0", "{r:?}");

    // One flag changes one value: the others are kept from the last update.
    rt.run(["update", "--cpu-quota", "100000", &c.id]).ok();
    assert_eq!(f("cpu", "cpu.cfs_quota_us"), "100000");
    assert_eq!(f("cpu", "cpu.cfs_period_us"), "200000");
    assert_eq!(f("cpu", "cpu.shares"), "512");
    assert_eq!(
        f("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );

    // Bad values change nothing.
    rt.run(["update", "--memory", "12x", &c.id])
        .fails("invalid size");
    assert_eq!(
        f("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    rt.run(["update", "--cpu-share", "lots", &c.id])
        .fails("invalid value 'lots'");

    rt.run(["kill", &c.id, "KILL"]).ok();
    wait_until("the container to stop", || {
        rt.state(&c.id)["status"] == "stopped"
    });
    rt.run(["update", "--cpu-quota", "1000", &c.id])
        .fails("is not running");
    rt.run(["delete", &c.id]).ok();
    assert!(
        !Path::new("/sys/fs/cgroup/cpu").join(&cgroup).exists(),
        "cgroup left at its cgroupsPath"
    );
}

// Found driving the shim's Pause (see shim_api.rs): `kill ID KILL` on a
// paused container left the cgroup FROZEN, the init alive and the
// container "paused"; runc thaws the cgroup after a SIGKILL, and so does
// berth-runtime now.
#[test]
fn kill_sigkill_ends_a_paused_container() {
    let rt = Runtime::new();
    let (_d, _b, c) = running(&rt, "killpaused", |_| {});
    rt.run(["pause", &c.id]).ok();
    rt.run(["kill", &c.id, "KILL"]).ok();
    wait_until("the paused container to die of SIGKILL", || {
        rt.state(&c.id)["status"] == "stopped"
    });
    rt.run(["delete", &c.id]).ok();
}

/// `--debug` writes `level=debug` lines, named as runc names the steps
/// (tools and runc's debug.bats look for the phrases), to stderr or to
/// `--log` in text or JSON; without it there are none.
#[test]
fn debug_lines_go_where_the_log_goes() {
    let rt = Runtime::new();
    let (d, b) = bundle(&["echo", "Hello World"]);
    let bundle_dir = b.dir.to_str().unwrap();
    let init_phrases = [
        "nsexec container setup",
        "child process in init()",
        "init: closing the pipe to signal completion",
    ];
    let has_all = |text: &str, phrases: &[&str]| phrases.iter().all(|p| text.contains(p));

    let c = rt.container("dbg");
    let r = rt
        .run(["--debug", "run", "--bundle", bundle_dir, &c.id])
        .ok();
    assert_eq!(r.stdout, "Hello World\n");
    assert!(r.stderr.contains("level=debug"), "{r:?}");
    assert!(has_all(&r.stderr, &init_phrases), "{r:?}");

    for (format, level) in [("text", "level=debug"), ("json", "\"level\":\"debug\"")] {
        let log = d.path().join(format!("log.{format}"));
        let c = rt.container("dbglog");
        let r = rt
            .run([
                "--log",
                log.to_str().unwrap(),
                "--log-format",
                format,
                "--debug",
                "run",
                "--bundle",
                bundle_dir,
                &c.id,
            ])
            .ok();
        assert!(!r.stderr.contains("debug"), "{format}: {r:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains(level), "{format}: {text}");
        assert!(has_all(&text, &init_phrases), "{format}: {text}");
    }

    let c = rt.container("dbgexec");
    b.edit_config(|c| c["process"]["args"] = json!(["sleep", "1000"]))
        .unwrap();
    rt.run(["run", "-d", "--bundle", bundle_dir, &c.id]).ok();
    let r = rt.run(["--debug", "exec", &c.id, "true"]).ok();
    assert!(
        has_all(
            &r.stderr,
            &[
                "nsexec container setup",
                "child process in init()",
                "setns_init: about to exec"
            ]
        ),
        "{r:?}"
    );
    let quiet = rt.run(["exec", &c.id, "true"]).ok();
    assert!(!quiet.stderr.contains("debug"), "{quiet:?}");
}

/// `kill --all` of a stopped container signals what is left in its cgroup
/// (nothing) and succeeds, as runc 1.1's does; without `--all` it is
/// "container not running".
#[test]
fn kill_all_of_a_stopped_container_succeeds() {
    let rt = Runtime::new();
    let (_d, _b, c) = running(&rt, "killall", |_| {});
    rt.run(["kill", &c.id, "KILL"]).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.state(&c.id)["status"] != "stopped" {
        assert!(Instant::now() < deadline, "never stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    rt.run(["kill", "-a", &c.id, "0"]).ok();
    rt.run(["kill", "--all", &c.id, "KILL"]).ok();
    rt.run(["kill", &c.id, "0"]).fails("container not running");
}

/// A container created in a cgroup that already holds processes gets
/// runc's warning (and is created).
#[test]
fn a_non_empty_cgroup_is_warned_about() {
    let rt = Runtime::new();
    let cgroup = format!("/berth-nonempty-{}", std::process::id());
    let set = |c: &mut serde_json::Value| c["linux"]["cgroupsPath"] = json!(cgroup);
    let (_d1, _b1, _c1) = running(&rt, "nonempty1", set);
    let (_d2, b2) = bundle(&["sleep", "1000"]);
    b2.edit_config(set).unwrap();
    let c2 = rt.container("nonempty2");
    let r = rt
        .run(["create", "--bundle", b2.dir.to_str().unwrap(), &c2.id])
        .ok();
    assert!(
        r.stderr
            .contains("container's cgroup is not empty: 1 process(es) found"),
        "{r:?}"
    );
}

/// runc's update.bats "minimal transition rules": a deny after "deny all"
/// (with an access the kernel cannot parse) is never written, and updates
/// that leave the device rules alone do not rewrite them, so the container
/// never loses /dev/null for a moment ("deny all" first, then the allows).
#[test]
fn device_rules_change_by_the_minimal_transition() {
    let rt = Runtime::new();
    let (d, b, c) = running(&rt, "devmin", |c| {
        c["root"]["readonly"] = json!(false);
        c["process"]["args"] = json!([
            "sh",
            "-c",
            "while :; do echo x > /dev/null || echo fail >> /fails; done"
        ]);
        c["linux"]["resources"]["devices"] = json!([
            { "allow": false, "access": "rwm" },
            { "allow": false, "type": "c", "major": 1, "minor": 11, "access": "rwa" }
        ]);
    });
    for _ in 0..100 {
        rt.run(["update", "--pids-limit", "30", &c.id]).ok();
    }
    let fails = b.rootfs().join("fails");
    assert!(
        !fails.exists(),
        "/dev/null was denied {} times",
        std::fs::read_to_string(&fails)
            .unwrap_or_default()
            .lines()
            .count()
    );
    drop(d);
}
