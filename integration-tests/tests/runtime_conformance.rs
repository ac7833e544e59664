//! A conformance suite in the spirit of the OCI runtime-tools validation
//! suite: the static `berth-checker` runs inside the container and checks
//! what it observes against config.json. Negative controls feed it wrong
//! expectations and require each check to fail, so no check passes
//! vacuously. The seccomp tests use it to make raw syscalls, including
//! 32-bit x86 ones through `int 0x80`.

use std::path::PathBuf;

use berth_integration_tests::fixtures::bundle::Bundle;
use berth_integration_tests::runtime::{bundle, Run, Runtime};
use serde_json::{json, Value};

fn checker() -> PathBuf {
    let p = berth_integration_tests::bins::dir()
        .parent()
        .expect("target dir")
        .join("x86_64-unknown-linux-gnu/debug/berth-checker");
    assert!(
        p.is_file(),
        "{} is not built: cargo build -p berth-checker --target x86_64-unknown-linux-gnu",
        p.display()
    );
    p
}

/// A bundle whose process is the checker; `config.json` (or `expect`, when
/// given, as the checker's expectation) is bind-mounted at /expect.json.
fn checker_bundle(args: &[&str], edit: impl FnOnce(&mut Value)) -> (tempfile::TempDir, Bundle) {
    let (d, b) = bundle(args);
    std::fs::copy(checker(), b.rootfs().join("checker")).unwrap();
    std::fs::write(b.rootfs().join("expect.json"), "{}").unwrap();
    b.edit_config(edit).unwrap();
    (d, b)
}

fn run(rt: &Runtime, b: &Bundle, tag: &str) -> Run {
    let c = rt.container(tag);
    rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
}

/// A configuration touching every part the checker verifies.
fn rich(c: &mut Value, expect_src: &str) {
    c["root"]["readonly"] = json!(true);
    c["hostname"] = json!("conformance");
    c["domainname"] = json!("example.test");
    c["process"]["cwd"] = json!("/tmp");
    c["process"]["env"] = json!(["PATH=/bin", "TERM=xterm", "FOO=bar baz"]);
    c["process"]["user"] = json!({ "uid": 0, "gid": 0, "additionalGids": [5, 6], "umask": 18 });
    c["process"]["rlimits"] = json!([
        { "type": "RLIMIT_NOFILE", "hard": 4096, "soft": 2048 },
        { "type": "RLIMIT_CORE", "hard": 0, "soft": 0 }
    ]);
    c["process"]["oomScoreAdj"] = json!(10);
    c["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "permitted": ["CAP_CHOWN", "CAP_KILL"],
        "inheritable": ["CAP_KILL"],
        "ambient": ["CAP_KILL"]
    });
    c["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1", "kernel.shmmni": "2048" });
    c["linux"]["devices"] = json!([
        { "path": "/dev/checker0", "type": "c", "major": 1, "minor": 5, "fileMode": 432 }
    ]);
    c["linux"]["resources"]["memory"] = json!({ "limit": 134217728 });
    c["linux"]["resources"]["pids"] = json!({ "limit": 64 });
    c["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["kexec_load"], "action": "SCMP_ACT_ERRNO" }]
    });
    let mounts = c["mounts"].as_array_mut().unwrap();
    mounts.push(
        json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "nodev", "size=1m"] }),
    );
    mounts.push(
        json!({ "destination": "/expect.json", "type": "bind", "source": expect_src,
                        "options": ["bind", "ro"] }),
    );
}

#[test]
fn the_container_matches_its_config() {
    let rt = Runtime::new();
    let (_d, b) = checker_bundle(&["/checker", "check", "/expect.json"], |_| {});
    let cfg_path = b.config_path();
    b.edit_config(|c| rich(c, cfg_path.to_str().unwrap()))
        .unwrap();
    let r = run(&rt, &b, "conform");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
    let checks = r.stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(checks >= 40, "only {checks} checks ran:\n{}", r.stdout);
    assert!(r.stdout.ends_with("0 failed\n"));
}

#[test]
fn negative_controls_every_check_can_fail() {
    let rt = Runtime::new();
    let (d, b) = checker_bundle(&["/checker", "check", "/expect.json"], |_| {});
    let expect = d.path().join("wrong.json");
    b.edit_config(|c| rich(c, expect.to_str().unwrap()))
        .unwrap();
    // The expectation differs from what the container really got, one
    // mutation per part of the spec.
    let mut wrong = b.config().unwrap();
    wrong["hostname"] = json!("other");
    wrong["domainname"] = json!("other.test");
    wrong["root"]["readonly"] = json!(false);
    wrong["process"]["cwd"] = json!("/");
    wrong["process"]["args"] = json!(["/checker", "check", "/somewhere-else"]);
    wrong["process"]["env"] = json!(["FOO=qux"]);
    wrong["process"]["user"] = json!({ "uid": 1, "gid": 2, "additionalGids": [99], "umask": 63 });
    wrong["process"]["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "hard": 1, "soft": 1 }]);
    wrong["process"]["oomScoreAdj"] = json!(11);
    wrong["process"]["noNewPrivileges"] = json!(false);
    wrong["process"]["capabilities"]["effective"] = json!(["CAP_SYS_ADMIN"]);
    wrong["process"]["capabilities"]["bounding"] = json!(["CAP_CHOWN"]);
    wrong["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "0" });
    wrong["linux"]["devices"][0]["minor"] = json!(9);
    wrong["linux"]["maskedPaths"] = json!(["/proc/cpuinfo"]);
    wrong["linux"]["readonlyPaths"] = json!(["/etc"]);
    wrong["linux"]["resources"]["memory"]["limit"] = json!(1);
    wrong["linux"]["resources"]["pids"]["limit"] = json!(1);
    wrong["mounts"] = json!([{ "destination": "/nowhere", "type": "tmpfs" },
                             { "destination": "/tmp", "type": "proc", "options": ["noexec", "ro"] }]);
    std::fs::write(&expect, serde_json::to_vec(&wrong).unwrap()).unwrap();
    let r = run(&rt, &b, "negative");
    assert_eq!(r.code, 1, "{r:?}");
    for item in [
        "hostname",
        "domainname",
        "root.readonly",
        "process.cwd",
        "process.args",
        "process.env FOO",
        "process.user.uid",
        "process.user.gid",
        "process.user.additionalGids",
        "process.user.umask",
        "process.rlimits RLIMIT_NOFILE",
        "process.oomScoreAdj",
        "process.noNewPrivileges",
        "process.capabilities.effective",
        "process.capabilities.bounding",
        "sysctl net.ipv4.ip_forward",
        "device /dev/checker0",
        "maskedPaths /proc/cpuinfo",
        "readonlyPaths /etc",
        "resources.memory.limit",
        "resources.pids.limit",
        "mount /nowhere",
        "mount /tmp type",
        "mount /tmp ro",
        "mount /tmp noexec",
    ] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&format!("FAIL {item}"))),
            "the checker did not catch a wrong {item}:\n{}",
            r.stdout
        );
    }
}

/// Every x86_64 syscall numbered up to `max`, by name, minus `except`.
fn syscalls_up_to(max: usize, except: &[&str]) -> Vec<&'static str> {
    syscalls::x86_64::Sysno::iter()
        .filter(|s| s.id() as usize <= max && !except.contains(&s.name()))
        .map(|s| s.name())
        .collect()
}

#[test]
fn seccomp_returns_enosys_for_syscalls_newer_than_the_profile() {
    let rt = Runtime::new();
    // The profile knows syscalls up to rseq (334) and allows all of them but
    // mkdir; its default is EPERM.
    let (_d, b) = checker_bundle(&["/checker", "syscall", "440"], |c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{ "names": syscalls_up_to(334, &["mkdir"]), "action": "SCMP_ACT_ALLOW" }]
        });
    });
    // process_madvise (440) is newer than anything the profile names.
    let r = run(&rt, &b, "enosys");
    assert_eq!(r.stdout.trim(), "ret=-1 errno=38", "{r:?}");
    // mkdir (83) is known to the profile and not allowed: the default, EPERM.
    b.edit_config(|c| c["process"]["args"] = json!(["/checker", "syscall", "83", "0", "0"]))
        .unwrap();
    let r = run(&rt, &b, "eperm");
    assert_eq!(r.stdout.trim(), "ret=-1 errno=1", "{r:?}");
}

#[test]
fn seccomp_filters_32bit_x86_syscalls_the_profile_lists() {
    let rt = Runtime::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 }]
    });
    // i386 getpid (20) is allowed: pid 1 in the container.
    let (_d, b) = checker_bundle(&["/checker", "int80", "20"], |c| {
        c["linux"]["seccomp"] = profile.clone();
    });
    let r = run(&rt, &b, "int80ok");
    assert_eq!(r.stdout.trim(), "ret=1 errno=0", "{r:?}");
    // i386 mkdir (39) is denied with the profile's errnoRet (EACCES), where
    // the unfiltered call would fail with EFAULT on its NULL path.
    b.edit_config(|c| c["process"]["args"] = json!(["/checker", "int80", "39", "0", "0"]))
        .unwrap();
    let r = run(&rt, &b, "int80deny");
    assert_eq!(r.stdout.trim(), "ret=-1 errno=13", "{r:?}");
}
