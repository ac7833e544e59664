//! Regression tests for the runc CVE classes. Each defence has a test here;
//! `scripts/security-selftest` rebuilds the runtime with the defences
//! switched off (test-only features) and checks that these tests then fail,
//! so none of them can pass vacuously.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::process::Stdio;
use std::time::Duration;

use berth_integration_tests::runtime::{bundle, pass_fd, Runtime};
use serde_json::json;

fn open_raw(path: &str, flags: i32) -> Result<OwnedFd, std::io::Error> {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY (test): plain open(2) of a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY (test): a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// CVE-2019-5736: a handle on a runtime process's executable, taken while it
/// runs (as a container process could through /proc/<pid>/exe), must not be
/// reopenable for writing once the runtime has exited.
#[test]
fn cve_2019_5736_runtime_binary_is_not_writable_through_proc_exe() {
    let mut rt = Runtime::new();
    // A private copy of the binary: the kernel answers a write open of a
    // file some process executes with ETXTBSY before it looks at the
    // mount's read-only flag, and the tests running beside this one
    // execute the shared binary. Nothing else runs this copy.
    let own = tempfile::tempdir().unwrap();
    let copy = own.path().join("berth-runtime");
    std::fs::copy(&rt.bin, &copy).unwrap();
    rt.bin = copy;
    let (_d, b) = bundle(&["sleep", "1"]);
    let c = rt.container("exe");
    let mut child = rt
        .cmd()
        .args(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the container runs: the runtime is then past its re-exec.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let running = || {
        serde_json::from_str::<serde_json::Value>(&rt.run(["state", &c.id]).stdout)
            .is_ok_and(|v| v["status"] == "running")
    };
    while !running() {
        assert!(
            std::time::Instant::now() < deadline,
            "container never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let handle = open_raw(&format!("/proc/{}/exe", child.id()), libc::O_PATH).unwrap();
    assert!(child.wait().unwrap().success());
    let reopen = format!("/proc/self/fd/{}", handle.as_raw_fd());
    match open_raw(&reopen, libc::O_WRONLY) {
        Ok(fd) => {
            // Close it before failing: an open writer makes the binary busy.
            drop(fd);
            panic!("the runtime binary was opened for writing through /proc/<pid>/exe")
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}"),
    }
}

/// CVE-2024-21626 (1/2): no fd the runtime inherited or opened reaches the
/// container.
#[test]
fn cve_2024_21626_host_fds_do_not_leak_into_the_container() {
    let rt = Runtime::new();
    let (d, b) = bundle(&["ls", "/proc/self/fd"]);
    let c = rt.container("fds");
    let host_dir = std::fs::File::open(d.path()).unwrap();
    let raw = host_dir.as_raw_fd();
    let out_path = d.path().join("out");
    let mut cmd = rt.cmd();
    cmd.args(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .stdout(std::fs::File::create(&out_path).unwrap());
    // Fd 7 on a host directory, as a careless caller would leave it.
    pass_fd(&mut cmd, raw, 7);
    assert!(cmd.status().unwrap().success());
    let fds: Vec<String> = std::fs::read_to_string(&out_path)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // stdio, plus the fd ls opened on the directory it lists.
    assert_eq!(fds, ["0", "1", "2", "3"], "leaked fds: {fds:?}");
}

/// CVE-2024-21626 (2/2): a cwd that resolves outside the container's root
/// (through an inherited host directory fd) is refused.
#[test]
fn cve_2024_21626_cwd_outside_the_root_is_refused() {
    let rt = Runtime::new();
    let (d, b) = bundle(&["sh", "-c", "pwd; ls .. > /dev/null && echo escaped"]);
    b.edit_config(|c| c["process"]["cwd"] = json!("/proc/self/fd/7"))
        .unwrap();
    let c = rt.container("cwd");
    let host_dir = std::fs::File::open(d.path()).unwrap();
    let raw = host_dir.as_raw_fd();
    let out_path = d.path().join("out");
    let err_path = d.path().join("err");
    let mut cmd = rt.cmd();
    cmd.args(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    pass_fd(&mut cmd, raw, 7);
    let st = cmd.status().unwrap();
    let out = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        !out.contains("escaped"),
        "process ran with a host cwd: {out}"
    );
    assert!(!st.success(), "{out} {err}");
    assert!(
        err.contains("outside of the container's root") || err.contains("chdir to cwd"),
        "{err}"
    );
}

/// CVE-2021-30465 class: a mount whose target path goes through a symlink in
/// the image lands inside the rootfs, never on the host.
#[test]
fn cve_2021_30465_mount_targets_stay_inside_the_rootfs() {
    let rt = Runtime::new();
    let (d, b) = bundle(&["true"]);
    let host_target = d.path().join("host-victim");
    std::fs::create_dir(&host_target).unwrap();
    // An absolute symlink in the image pointing at a host path.
    symlink(&host_target, b.rootfs().join("escape")).unwrap();
    b.edit_config(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/escape/sub", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]
        }));
    })
    .unwrap();
    let c = rt.container("symlink");
    let _ = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
    assert!(
        !host_target.join("sub").exists(),
        "the mount target was created on the host"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(host_target.to_str().unwrap()),
        "{mountinfo}"
    );
}

/// CVE-2025-31133: masked paths are covered with /dev/null only after it has
/// been checked to be the real null device.
#[test]
fn cve_2025_31133_masking_refuses_a_fake_dev_null() {
    let rt = Runtime::new();
    let (d, b) = bundle(&["true"]);
    let fake = d.path().join("fake-null");
    std::fs::write(&fake, "not the null device").unwrap();
    b.edit_config(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/dev/null", "type": "bind", "source": fake, "options": ["bind"]
        }));
    })
    .unwrap();
    let c = rt.container("devnull");
    rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .fails("not the null device");
}

/// CVE-2025-52565: the console is never mounted over something /dev/console
/// points to.
#[test]
fn cve_2025_52565_dev_console_symlink_is_refused() {
    let rt = Runtime::new();
    let (d, b) = bundle(&["true"]);
    let devdir = d.path().join("dev");
    std::fs::create_dir(&devdir).unwrap();
    symlink("/etc/passwd", devdir.join("console")).unwrap();
    let sock_path = d.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let accept = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    b.edit_config(|c| {
        c["process"]["terminal"] = json!(true);
        let mounts = c["mounts"].as_array_mut().unwrap();
        for m in mounts.iter_mut() {
            if m["destination"] == "/dev" {
                *m = json!({ "destination": "/dev", "type": "bind", "source": devdir,
                             "options": ["rbind"] });
            }
        }
        mounts.retain(|m| {
            m["destination"] != "/dev/pts"
                && m["destination"] != "/dev/shm"
                && m["destination"] != "/dev/mqueue"
        });
        mounts.push(
            json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                            "options": ["newinstance", "ptmxmode=0666"] }),
        );
    })
    .unwrap();
    symlink("pts/ptmx", devdir.join("ptmx")).unwrap();
    let c = rt.container("console");
    rt.run([
        "create",
        "--console-socket",
        sock_path.to_str().unwrap(),
        "--bundle",
        b.dir.to_str().unwrap(),
        &c.id,
    ])
    .fails("/dev/console");
    let _ = accept.join();
    assert_eq!(
        std::fs::read_link(devdir.join("console")).unwrap(),
        std::path::Path::new("/etc/passwd")
    );
}

/// CVE-2025-52881 class (1/3): no mount may be placed inside /proc, where
/// it would redirect the runtime's writes to procfs: a host file bound over
/// the sysctl the config sets is refused, and the file keeps its content.
/// The same bundle without that mount runs (the sysctl alone is fine).
#[test]
fn cve_2025_52881_a_mount_inside_proc_is_refused() {
    let rt = Runtime::new();
    let (d, b) = bundle(&["true"]);
    let decoy = d.path().join("decoy");
    std::fs::write(&decoy, "0").unwrap();
    b.edit_config(|c| c["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1" }))
        .unwrap();
    rt.run([
        "run",
        "--bundle",
        b.dir.to_str().unwrap(),
        &rt.container("procsysctl").id,
    ])
    .ok();
    b.edit_config(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/proc/sys/net/ipv4/ip_forward", "type": "bind", "source": decoy,
            "options": ["bind"]
        }));
    })
    .unwrap();
    let c = rt.container("procmnt");
    let run = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
    assert_eq!(std::fs::read_to_string(&decoy).unwrap(), "0");
    run.fails("inside /proc");
    assert!(
        rt.run(["state", &c.id]).stdout.is_empty(),
        "a refused container was created"
    );
}

/// CVE-2025-52881 class (2/3): sysctl names cannot walk anywhere under
/// /proc/sys but where they say: a name is dot-separated words and nothing
/// else, so an empty word (a doubled or leading dot) or a slash (a path, and
/// with it `..`) is refused before anything is created, with the name in the
/// error. The names are ones the container's own namespaces hold, so that a
/// build without the check changes only the container, never the host.
#[test]
fn cve_2025_52881_malformed_sysctl_names_are_refused() {
    let rt = Runtime::new();
    for (n, name) in [
        "net.ipv4..ip_forward",
        "kernel..domainname",
        ".net.ipv4.ip_forward",
        "net/ipv4/ip_forward",
        "net/../kernel/domainname",
    ]
    .into_iter()
    .enumerate()
    {
        let (_d, b) = bundle(&["true"]);
        b.edit_config(|c| c["linux"]["sysctl"] = json!({ name: "1" }))
            .unwrap();
        let c = rt.container(&format!("sysctl{n}"));
        let run = rt
            .run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
            .fails("not a valid name");
        assert!(run.stderr.contains(name), "{name}: {run:?}");
        assert!(
            rt.run(["state", &c.id]).stdout.is_empty(),
            "{name}: a refused container was created"
        );
    }
}

/// CVE-2025-52881 class (3/3): a mount destination that is harmless as a string but resolves into
/// procfs through a symlink in the image (`/p -> /proc`): a bind of a host
/// file onto `/p/self/oom_score_adj` plus `oomScoreAdj` made the runtime's
/// own write land in that host file (with a sysctl file as the source, a
/// host sysctl changed). Refused because the resolved target is procfs; the
/// write itself goes through a verified procfs handle.
#[test]
fn cve_2025_52881_mount_through_a_symlink_into_proc_is_refused() {
    let rt = Runtime::new();
    let (d, b) = bundle(&["true"]);
    let victim = d.path().join("host-file");
    std::fs::write(&victim, "untouched").unwrap();
    symlink("/proc", b.rootfs().join("p")).unwrap();
    b.edit_config(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/p/self/oom_score_adj", "type": "bind", "source": victim,
            "options": ["bind"]
        }));
        c["process"]["oomScoreAdj"] = json!(500);
    })
    .unwrap();
    let c = rt.container("procsymlink");
    let run = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "untouched",
        "the runtime wrote through a mount onto procfs"
    );
    run.fails("resolves into procfs");
}

/// Sysctls that no namespace of the container's own holds are the host's:
/// refused before anything is created (runc's rules), with the key named.
/// Checked on kernel.core_pipe_limit, restored if a defenceless build
/// changed it.
#[test]
fn host_sysctls_from_the_config_are_refused() {
    let path = "/proc/sys/kernel/core_pipe_limit";
    let before = std::fs::read_to_string(path).unwrap();
    let other = (before.trim().parse::<u64>().unwrap() + 1).to_string();
    let rt = Runtime::new();
    let (_d, b) = bundle(&["true"]);
    b.edit_config(|c| c["linux"]["sysctl"] = json!({ "kernel.core_pipe_limit": other }))
        .unwrap();
    let c = rt.container("hostsysctl");
    let run = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
    let after = std::fs::read_to_string(path).unwrap();
    if after != before {
        std::fs::write(path, before.trim()).unwrap();
        panic!("a host sysctl was written from config.json");
    }
    let run = run.fails("is not in a separate kernel namespace");
    assert!(run.stderr.contains("kernel.core_pipe_limit"), "{run:?}");
    assert!(
        rt.run(["state", &c.id]).stdout.is_empty(),
        "a refused container was created"
    );

    // net.* with the host's network namespace: the bundle without one.
    let (_d, b) = bundle(&["true"]);
    b.edit_config(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
        c["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1" });
    })
    .unwrap();
    rt.run([
        "run",
        "--bundle",
        b.dir.to_str().unwrap(),
        &rt.container("hostnet").id,
    ])
    .fails("not allowed in host network namespace");
}
