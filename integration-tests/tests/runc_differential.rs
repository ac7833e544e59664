//! berth-runtime against runc (issue 21): the same bundle and the same
//! command line through Debian's runc 1.1 and through berth-runtime must
//! look the same to a caller: exit status, stdout, `state` and `list`
//! output (pids and times aside), the files inside the container, and what
//! hooks and terminals see.
//!
//! The lifecycle is a table of steps run in order against each runtime;
//! where berth deliberately differs from runc the step says why, and only
//! the exit status is compared there.
//!
//! Set `BERTH_DIFF_RUNTIME` to another berth-runtime binary (an older
//! build) to see which cases it gets wrong.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_integration_tests::differential::{
    guard, message, normalize_table, unique_id, use_cgroup, Console, Pair, Seen, Which,
};
use berth_integration_tests::fixtures::bundle::Bundle;
use berth_integration_tests::runtime::{bundle, pass_fd, Run, Runtime};
use serde_json::{json, Value};

const BOTH: [Which; 2] = [Which::Runc, Which::Berth];

/// One step of a scenario. In `args`, `ID` stands for the container id and
/// `BUNDLE` for the bundle directory.
struct Step {
    what: &'static str,
    args: &'static [&'static str],
    /// A phrase both runtimes' error messages contain (lower case); empty
    /// when the step succeeds.
    phrase: &'static str,
    /// Why berth's output or message differs from runc's here, if it does
    /// deliberately: then only the exit status is compared.
    differs: Option<&'static str>,
}

const fn step(what: &'static str, args: &'static [&'static str], phrase: &'static str) -> Step {
    Step {
        what,
        args,
        phrase,
        differs: None,
    }
}

/// The lifecycle of one container, and what is asked of a missing one.
const LIFECYCLE: &[Step] = &[
    step("list with no containers", &["list"], ""),
    step(
        "list --format json with no containers",
        &["list", "--format", "json"],
        "",
    ),
    step("list -q with no containers", &["list", "-q"], ""),
    step("create", &["create", "--bundle", "BUNDLE", "ID"], ""),
    Step {
        what: "create with an id in use",
        args: &["create", "--bundle", "BUNDLE", "ID"],
        phrase: "exists",
        differs: Some(
            "berth names the id (\"container with id exists: ID\"); runc says \"container with \
             given ID already exists\"",
        ),
    },
    step("state of a created container", &["state", "ID"], ""),
    step("list -q", &["list", "-q"], ""),
    step("list --format json", &["list", "--format", "json"], ""),
    step("list (table)", &["list"], ""),
    step("start", &["start", "ID"], ""),
    step("state of a running container", &["state", "ID"], ""),
    step("kill ID 0 of a running container", &["kill", "ID", "0"], ""),
    step(
        "delete without --force of a running container",
        &["delete", "ID"],
        "that is not stopped",
    ),
    step(
        "exec: the exit status and output pass through",
        &["exec", "ID", "sh", "-c", "echo from-exec; exit 3"],
        "",
    ),
    step(
        "exec: files and modes inside",
        &[
            "exec",
            "ID",
            "stat",
            "-c",
            "%a %u %g %F %n",
            "/",
            "/dev",
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty",
            "/dev/ptmx",
            "/dev/fd",
            "/dev/stdin",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/proc",
            "/sys",
            "/etc",
        ],
        "",
    ),
    step(
        "exec: what /dev holds",
        &["exec", "ID", "ls", "-1", "/dev"],
        "",
    ),
    // berth mounts the tmpfs under /sys/fs/cgroup read-only, as the spec's
    // `ro` asks; runc 1.1 leaves that tmpfs itself writable (only the
    // hierarchies on it are read-only). Every other mount must match.
    step(
        "exec: the mounts",
        &[
            "exec",
            "ID",
            "sh",
            "-c",
            "grep -v '^tmpfs /sys/fs/cgroup ' /proc/self/mounts",
        ],
        "",
    ),
    step("exec without a command", &["exec", "ID"], ""),
    step("kill ID KILL", &["kill", "ID", "KILL"], ""),
    step("state of a stopped container", &["state", "ID"], ""),
    step(
        "kill ID 0 of a stopped container",
        &["kill", "ID", "0"],
        "not running",
    ),
    step(
        "exec into a stopped container",
        &["exec", "ID", "true"],
        "cannot exec in a stopped container",
    ),
    step("start a stopped container", &["start", "ID"], "stopped"),
    step("delete a stopped container", &["delete", "ID"], ""),
    step(
        "state of an unknown container",
        &["state", "ID"],
        "container does not exist",
    ),
    step(
        "kill of an unknown container",
        &["kill", "ID", "0"],
        "container does not exist",
    ),
    step(
        "delete of an unknown container",
        &["delete", "ID"],
        "container does not exist",
    ),
    step(
        "exec into an unknown container",
        &["exec", "ID", "true"],
        "container does not exist",
    ),
    step(
        "ps of an unknown container",
        &["ps", "ID"],
        "container does not exist",
    ),
    step(
        "pause of an unknown container",
        &["pause", "ID"],
        "container does not exist",
    ),
    step(
        "list --format json at the end",
        &["list", "--format", "json"],
        "",
    ),
];

/// Runs `step` against `rt`; what a caller saw.
fn run_step(rt: &Runtime, s: &Step, id: &str, b: &Bundle) -> Seen {
    let bundle_dir = b.dir.to_str().expect("utf-8 bundle path");
    let args: Vec<&str> = s
        .args
        .iter()
        .map(|a| match *a {
            "ID" => id,
            "BUNDLE" => bundle_dir,
            other => other,
        })
        .collect();
    let r = rt.run(&args);
    let mut seen = Seen::from(&r);
    if args == ["list"] {
        // The table's column widths follow the pid and time: compare words.
        seen.stdout = format!("{:?}", normalize_table(&r.stdout));
    }
    if args.get(1) == Some(&"KILL") || args.last() == Some(&"KILL") {
        wait_stopped(rt, id);
    }
    seen
}

fn wait_stopped(rt: &Runtime, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rt.run(["state", id]).stdout.contains("\"stopped\"") {
        assert!(Instant::now() < deadline, "{id} did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Compares the two runtimes' answers step by step; every mismatch is
/// reported at once.
fn compare(steps: &[Step], runc: &[Seen], berth: &[Seen]) {
    let mut bad = Vec::new();
    for ((s, r), b) in steps.iter().zip(runc).zip(berth) {
        if r.code != b.code {
            bad.push(format!(
                "{}: exit status runc {} berth {}\n  runc:  {r:?}\n  berth: {b:?}",
                s.what, r.code, b.code
            ));
            continue;
        }
        if s.differs.is_some() {
            continue;
        }
        if r.stdout != b.stdout {
            bad.push(format!(
                "{}: stdout differs\n  runc:  {:?}\n  berth: {:?}",
                s.what, r.stdout, b.stdout
            ));
        }
        if !s.phrase.is_empty() {
            for (who, seen) in [("runc", r), ("berth", b)] {
                if !seen.message.to_lowercase().contains(s.phrase) {
                    bad.push(format!(
                        "{}: {who}'s message {:?} lacks {:?}",
                        s.what, seen.message, s.phrase
                    ));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "berth differs from runc:\n{}",
        bad.join("\n")
    );
}

/// A busybox bundle for `args` (with an annotation, which `state` shows).
fn diff_bundle(args: &[&str]) -> (tempfile::TempDir, Bundle) {
    let (d, b) = bundle(args);
    b.edit_config(|c| c["annotations"] = json!({ "org.example.key": "value" }))
        .unwrap();
    (d, b)
}

#[test]
fn lifecycle_looks_the_same_as_runc() {
    let pair = Pair::new();
    let (_d, b) = diff_bundle(&["sleep", "100"]);
    let id = unique_id("life");
    let mut seen = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        seen.push(
            LIFECYCLE
                .iter()
                .map(|s| run_step(rt, s, &id, &b))
                .collect::<Vec<_>>(),
        );
    }
    compare(LIFECYCLE, &seen[0], &seen[1]);
    // The table is not comparing empty output with empty output.
    let berth = &seen[1];
    assert!(
        berth[5].stdout.contains("\"status\": \"created\""),
        "{berth:?}"
    );
    assert!(berth[10].stdout.contains("\"status\": \"running\""));
    assert!(berth[19].stdout.contains("\"pid\": 0"));
    assert_eq!(berth[13].code, 3);
    assert_eq!(berth[13].stdout, "from-exec\n");
}

/// `run` in the foreground: the process's exit status (128 + signal for a
/// signal) and output are the runtime's, and a process that cannot start
/// fails the same way.
#[test]
fn run_passes_the_exit_status_through_as_runc_does() {
    // The messages are compared whole from runc's "run failed": Docker and
    // podman read the exit status they report (127, 126) from these words.
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "exit status",
            &["sh", "-c", "echo out; echo err >&2; exit 7"],
            "",
        ),
        ("killed by a signal", &["sh", "-c", "kill -TERM $$"], ""),
        (
            "missing binary",
            &["/nonexistent"],
            "run failed: unable to start container process: \
             exec: \"/nonexistent\": stat /nonexistent: no such file or directory",
        ),
        (
            "not in $PATH",
            &["nonexistent-cmd"],
            "run failed: unable to start container process: \
             exec: \"nonexistent-cmd\": executable file not found in $path",
        ),
        (
            "not executable",
            &["/etc/passwd"],
            "run failed: unable to start container process: \
             exec: \"/etc/passwd\": permission denied",
        ),
        (
            "a directory",
            &["/bin"],
            "run failed: unable to start container process: exec: \"/bin\": permission denied",
        ),
    ];
    let pair = Pair::new();
    let mut bad = Vec::new();
    for (what, args, phrase) in cases {
        let (_d, b) = diff_bundle(args);
        let id = unique_id("run");
        let mut seen = Vec::new();
        for w in BOTH {
            let rt = pair.get(w);
            use_cgroup(&b, w, &id);
            let _g = guard(rt, &id);
            let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &id]);
            let msg = message(&r.stderr).replace("\\\"", "\"");
            seen.push((r.code, r.stdout.clone(), msg.to_lowercase()));
        }
        if seen[0].0 != seen[1].0 || seen[0].1 != seen[1].1 {
            bad.push(format!("{what}: runc {:?} berth {:?}", seen[0], seen[1]));
        }
        if !phrase.is_empty() && !seen.iter().all(|s| s.2.contains(phrase)) {
            bad.push(format!("{what}: messages lack {phrase:?}: {seen:?}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Runs a bundle with a terminal through `rt`, detached, and returns what
/// the container wrote to it.
fn run_with_console(rt: &Runtime, b: &Bundle, id: &str, dir: &Path) -> (Run, String) {
    let console = Console::listen(dir, &format!("{id}-console.sock"));
    let r = rt.run([
        "run",
        "-d",
        "--console-socket",
        console.path.to_str().unwrap(),
        "--bundle",
        b.dir.to_str().unwrap(),
        id,
    ]);
    let out = console.output();
    let _ = std::fs::remove_file(dir.join(format!("{id}-console.sock")));
    (r, out)
}

/// Class 4: with a terminal and a non-root user the pty belongs to that
/// user, as runc makes it (its group stays the devpts `gid`, tty): a
/// process that cannot reopen its own terminal breaks `sudo`, `ssh` and
/// friends.
#[test]
fn terminal_belongs_to_the_process_user() {
    let pair = Pair::new();
    // -L: /proc/self/fd/0 itself is a link owned by the process.
    let (d, b) = diff_bundle(&["stat", "-L", "-c", "%u %g", "/proc/self/fd/0"]);
    b.edit_config(|c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    })
    .unwrap();
    let id = unique_id("ptyown");
    let mut outs = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        let (r, out) = run_with_console(rt, &b, &id, d.path());
        assert_eq!(r.code, 0, "{}: {r:?}", w.name());
        outs.push(out);
    }
    assert_eq!(outs[0], "1000 5\n", "runc");
    assert_eq!(outs[1], outs[0], "berth differs from runc");
}

/// Class 4: `exec -p` takes a process.json as runc reads it: `user` may be
/// left out (root), a missing `cwd` is refused with runc's message and
/// status, and `consoleSize` sizes the terminal.
#[test]
fn exec_process_json_as_runc_reads_it() {
    let pair = Pair::new();
    let (d, b) = diff_bundle(&["sleep", "100"]);
    let write = |name: &str, v: Value| {
        let p = d.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let minimal = write(
        "minimal.json",
        json!({ "args": ["/bin/sh", "-c", "id -u; id -g; pwd"], "cwd": "/tmp",
                "env": ["PATH=/bin"] }),
    );
    let no_cwd = write("no-cwd.json", json!({ "args": ["/bin/true"] }));
    let sized = write(
        "sized.json",
        json!({ "args": ["/bin/stty", "size"], "cwd": "/", "env": ["PATH=/bin"],
                "terminal": true, "consoleSize": { "height": 25, "width": 90 } }),
    );
    let id = unique_id("execp");
    let mut seen = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &id])
            .ok();
        let a = Seen::from(&rt.run(["exec", "-p", &minimal, &id]));
        let c = Seen::from(&rt.run(["exec", "-p", &no_cwd, &id]));
        let console = Console::listen(d.path(), &format!("{}.sock", w.name()));
        let r = rt.run([
            "exec",
            "-d",
            "--console-socket",
            console.path.to_str().unwrap(),
            "-p",
            &sized,
            &id,
        ]);
        let size = console.output();
        seen.push((a, c, r.code, size));
    }
    let (runc, berth) = (&seen[0], &seen[1]);
    assert_eq!(runc.0.stdout, "0\n0\n/tmp\n", "runc: {runc:?}");
    assert_eq!(berth.0, runc.0, "minimal process.json");
    assert_eq!(runc.1.code, 255, "runc: {runc:?}");
    assert_eq!(berth.1.code, runc.1.code, "process.json without cwd");
    assert!(
        berth.1.message.contains("Cwd property must not be empty"),
        "{berth:?}"
    );
    assert_eq!(runc.3, "25 90\n", "runc: {runc:?}");
    assert_eq!((berth.2, &berth.3), (runc.2, &runc.3), "consoleSize");
}

/// Class 4: the init closes every fd it inherited from the host before it
/// enters the process's cwd, so a `cwd` of `/proc/self/fd/N` naming a
/// leaked host directory resolves to nothing (CVE-2024-21626; the check
/// after the chdir stays as a second line).
#[test]
fn host_fds_are_closed_before_the_chdir() {
    let pair = Pair::new();
    let (d, b) = diff_bundle(&["sh", "-c", "pwd; ls .. > /dev/null && echo escaped"]);
    b.edit_config(|c| c["process"]["cwd"] = json!("/proc/self/fd/7"))
        .unwrap();
    let host_dir = std::fs::File::open(d.path()).unwrap();
    let id = unique_id("cwdfd");
    let mut seen = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        let out = d.path().join(format!("out-{}", w.name()));
        let err = d.path().join(format!("err-{}", w.name()));
        let mut cmd = rt.cmd();
        cmd.args(["run", "--bundle", b.dir.to_str().unwrap(), &id])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        // A host directory as fd 7, as a careless caller would leak it.
        pass_fd(&mut cmd, host_dir.as_raw_fd(), 7);
        let code = cmd.status().unwrap().code();
        seen.push((
            code,
            std::fs::read_to_string(&out).unwrap(),
            std::fs::read_to_string(&err).unwrap(),
        ));
    }
    let (runc, berth) = (&seen[0], &seen[1]);
    assert_ne!(runc.0, Some(0), "runc: {runc:?}");
    assert_eq!(berth.0, runc.0, "runc: {runc:?}\nberth: {berth:?}");
    assert!(!berth.1.contains("escaped"), "{berth:?}");
    // Refused at the chdir (the fd is gone), not by the later check.
    assert!(
        berth.2.contains("chdir to cwd") && berth.2.contains("No such file"),
        "{berth:?}"
    );
}

/// Class 3: createContainer hooks run with the container's root as their
/// working directory, as runc runs them: a hook's relative path lands in
/// the rootfs, not in the directory `create` ran from.
#[test]
fn create_container_hooks_run_in_the_rootfs() {
    let pair = Pair::new();
    let (_d, b) = diff_bundle(&["true"]);
    b.edit_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["hooks"] = json!({ "createContainer": [{
            "path": "/bin/sh", "args": ["sh", "-c", "pwd > ./hook-cwd"]
        }] });
    })
    .unwrap();
    let id = unique_id("hookcwd");
    let mut seen = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        for stale in [b.rootfs().join("hook-cwd"), b.dir.join("hook-cwd")] {
            let _ = std::fs::remove_file(stale);
        }
        // From the bundle's parent, with a relative --bundle, as a person
        // would run it.
        let mut cmd = rt.cmd();
        cmd.current_dir(b.dir.parent().unwrap())
            .args(["run", "--bundle", "bundle", &id]);
        let st = cmd.status().unwrap();
        seen.push((
            st.code(),
            std::fs::read_to_string(b.rootfs().join("hook-cwd")).ok(),
            b.dir.join("hook-cwd").exists(),
        ));
    }
    let rootfs = format!("{}\n", b.rootfs().canonicalize().unwrap().display());
    assert_eq!(seen[0], (Some(0), Some(rootfs), false), "runc");
    assert_eq!(seen[1], seen[0], "berth differs from runc");
}

/// Class 3: prestart and createRuntime hooks read the state with the
/// spec's annotations (and runc's "creating" status).
#[test]
fn hook_state_carries_the_annotations() {
    let pair = Pair::new();
    let (d, b) = diff_bundle(&["true"]);
    let id = unique_id("hookann");
    let mut states = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        let out = d.path().join(format!("state-{}", w.name()));
        let hook = |kind: &str| {
            json!({ "path": "/bin/sh", "env": ["PATH=/usr/bin:/bin"],
                    "args": ["sh", "-c", format!("cat > {}.{kind}", out.display())] })
        };
        b.edit_config(|c| {
            c["hooks"] = json!({
                "prestart": [hook("prestart")],
                "createRuntime": [hook("createRuntime")],
            });
        })
        .unwrap();
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &id])
            .ok();
        for kind in ["prestart", "createRuntime"] {
            let text = std::fs::read_to_string(format!("{}.{kind}", out.display())).unwrap();
            let mut v: Value = serde_json::from_str(&text).unwrap();
            assert!(v["pid"].as_i64().unwrap() > 0, "{kind}: {v}");
            v["pid"] = json!("PID");
            // A deliberate difference: berth gives prestart hooks
            // "created", as crun does and the OCI validation suite's
            // hooks_stdin expects; runc 1.1 says "creating".
            if w.name() == "berth" && kind == "prestart" {
                assert_eq!(v["status"], "created", "{v}");
                v["status"] = json!("creating");
            }
            states.push(v);
        }
    }
    assert_eq!(
        states[0]["annotations"],
        json!({ "org.example.key": "value" })
    );
    assert_eq!(states[0]["status"], "creating");
    assert_eq!(
        states[2..],
        states[..2],
        "berth's hook state differs from runc's"
    );
}

/// Class 3: a read-only /dev (a tmpfs with `ro`) gets its nodes, links and
/// console first and is made read-only after, keeping its other flags.
#[test]
fn readonly_dev_works_as_in_runc() {
    let pair = Pair::new();
    let script = "grep ' /dev ' /proc/mounts | cut -d' ' -f4; ls /dev; \
                  touch /dev/x 2>/dev/null && echo writable || echo read-only";
    let (d, b) = diff_bundle(&["sh", "-c", script]);
    b.edit_config(|c| {
        c["mounts"][1]["options"]
            .as_array_mut()
            .unwrap()
            .push(json!("ro"))
    })
    .unwrap();
    assert_eq!(b.config().unwrap()["mounts"][1]["destination"], "/dev");
    let id = unique_id("rodev");
    let mut plain = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &id]);
        plain.push((r.code, r.stdout));
    }
    assert_eq!(plain[0].0, 0, "runc: {:?}", plain[0]);
    assert!(plain[0].1.ends_with("read-only\n"), "runc: {:?}", plain[0]);
    assert_eq!(plain[1], plain[0], "berth differs from runc");

    // With a terminal, /dev/console must be made before /dev turns
    // read-only.
    b.edit_config(|c| c["process"]["terminal"] = json!(true))
        .unwrap();
    let id = unique_id("rodevtty");
    let mut tty = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        let (r, out) = run_with_console(rt, &b, &id, d.path());
        tty.push((r.code, out));
    }
    assert_eq!(tty[0].0, 0, "runc: {:?}", tty[0]);
    assert!(tty[0].1.contains("console"), "runc: {:?}", tty[0]);
    assert_eq!(tty[1], tty[0], "berth differs from runc");
}

/// Class 3: a bundle whose config.json sits in its own rootfs (`root.path`
/// "."), on a mount point under shared propagation, starts with a
/// non-recursive `rootfsPropagation` (pivot_root refuses a shared parent
/// mount with EINVAL unless the runtime makes it private, as runc does).
/// Each run happens in a private mount namespace (`unshare`), so nothing it
/// mounts outlives it.
#[test]
fn root_dot_bundle_with_rootfs_propagation() {
    let pair = Pair::new();
    let (_d, b) = diff_bundle(&["true"]);
    let dot = Bundle { dir: b.rootfs() };
    let mut cfg = b.config().unwrap();
    cfg["root"] = json!({ "path": ".", "readonly": true });
    std::fs::write(dot.config_path(), cfg.to_string()).unwrap();
    let mut bad = Vec::new();
    for prop in ["private", "slave", "rslave", "rprivate"] {
        dot.edit_config(|c| c["linux"]["rootfsPropagation"] = json!(prop))
            .unwrap();
        let id = unique_id("dot");
        let mut seen = Vec::new();
        for w in BOTH {
            let rt = pair.get(w);
            use_cgroup(&dot, w, &id);
            let _g = guard(rt, &id);
            let out = std::process::Command::new("unshare")
                .args(["--mount", "--propagation", "shared", "sh", "-c"])
                .arg("mount --bind \"$1\" \"$1\" && shift && exec \"$@\"")
                .arg("sh")
                .arg(&dot.dir)
                .arg(&rt.bin)
                .arg("--root")
                .arg(rt.root.path())
                .args(["run", "--bundle", dot.dir.to_str().unwrap(), &id])
                .stdin(std::process::Stdio::null())
                .output()
                .expect("unshare");
            seen.push((
                out.status.code(),
                message(&String::from_utf8_lossy(&out.stderr)),
            ));
        }
        if seen[0].0 != Some(0) || seen[1].0 != seen[0].0 {
            bad.push(format!("{prop}: runc {:?} berth {:?}", seen[0], seen[1]));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Class 6: the exit status of a command line the runtime cannot parse is
/// runc's (1 for a usage error, 3 for an unknown command, 0 for help),
/// never clap's 2. The messages differ (clap's wording, not urfave/cli's).
#[test]
fn usage_errors_exit_as_runc_does() {
    let cases: [&[&str]; 11] = [
        &[],
        &["help"],
        &["kill", "--help"],
        &["state"],
        &["state", "--bogus", "x"],
        &["bogus"],
        &["--bogus", "list"],
        &["kill"],
        &["list", "extra"],
        &["delete", "a", "b"],
        &["list", "-f", "bogus"],
    ];
    let pair = Pair::new();
    let mut bad = Vec::new();
    for args in cases {
        let codes: Vec<i32> = BOTH.iter().map(|&w| pair.get(w).run(args).code).collect();
        if codes[0] != codes[1] {
            bad.push(format!("{args:?}: runc {} berth {}", codes[0], codes[1]));
        }
    }
    // An unknown command, with or without -h, in runc's words.
    for args in [&["foo", "-h"][..], &["foo"]] {
        for w in BOTH {
            let r = pair.get(w).run(args);
            if r.code != 3 || !r.stderr.contains("No help topic for 'foo'") {
                bad.push(format!("{args:?} {}: {r:?}", w.name()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Class 5, cgroup v1: `update` takes -1 as a separate argument; a shorter
/// CFS period goes in inside a parent with its own limit (the quota first
/// where the kernel refuses the period); `unified` resources and a frozen
/// cgroup are refused with runc's words. Each runtime's container sits in
/// a parent cgroup of its own, limited to half a CPU.
#[test]
fn cgroup_updates_and_refusals_as_runc() {
    let v1 = Path::new("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
    if !v1.exists() {
        eprintln!("skipped: not a cgroup v1 host");
        return;
    }
    let pair = Pair::new();
    let id = unique_id("cg");
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let mut seen = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        let parent = format!("{id}-{}-par", w.name());
        let cpu = Path::new("/sys/fs/cgroup/cpu").join(&parent);
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(cpu.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(cpu.join("cpu.cfs_quota_us"), "50000").unwrap();
        let (_d, b) = diff_bundle(&["sleep", "100"]);
        b.edit_config(|c| {
            c["linux"]["cgroupsPath"] = format!("/{parent}/c").into();
            c["linux"]["resources"]["cpu"] = json!({ "period": 100000, "quota": 20000 });
            c["linux"]["resources"]["memory"] = json!({ "limit": 104857600 });
        })
        .unwrap();
        let mut out = Vec::new();
        {
            let _g = guard(rt, &id);
            let r = rt.run(["run", "--detach", "--bundle", b.dir.to_str().unwrap(), &id]);
            assert_eq!(r.code, 0, "{w:?}: {r:?}");
            let mem = Path::new("/sys/fs/cgroup/memory").join(&parent).join("c");
            let files = [
                cpu.join("c").join("cpu.cfs_period_us"),
                cpu.join("c").join("cpu.cfs_quota_us"),
                mem.join("memory.limit_in_bytes"),
                mem.join("memory.memsw.limit_in_bytes"),
            ];
            for args in [
                &["--cpu-period", "10000", "--cpu-quota", "2000"][..],
                &["--memory-swap", "-1"][..],
                &["--cpu-quota", "-1"][..],
                &["--pids-limit", "-1"][..],
                &["--memory", "52428800", "--memory-swap", "104857600"][..],
                // Unlimited memory, swap unsaid: swap goes unlimited too.
                &["--memory", "-1"][..],
            ] {
                let mut full = vec!["update"];
                full.extend(args);
                full.push(&id);
                let r = rt.run(&full);
                let values: Vec<String> = files.iter().map(|f| read(f)).collect();
                out.push((args.join(" "), r.code, values));
            }
        }
        seen.push(out);
    }
    // Compared after the cleanup below, which a failed assertion would skip.
    let mut bad = Vec::new();
    if seen[0][0].1 != 0 || seen[0] != seen[1] {
        bad.push(format!(
            "updates: runc {:?}\n  berth {:?}",
            seen[0], seen[1]
        ));
    }
    // Refused: `unified` on v1, and a cgroup someone froze beforehand.
    let frozen = Path::new("/sys/fs/cgroup/freezer").join(format!("{id}-frozen"));
    std::fs::create_dir_all(&frozen).unwrap();
    std::fs::write(frozen.join("freezer.state"), "FROZEN").unwrap();
    let cases: [(Value, &str, &str); 2] = [
        (
            json!({ "unified": { "memory.max": "10000000" } }),
            "",
            "cannot use unified on cgroup v1",
        ),
        (json!({}), "-frozen", "unexpectedly frozen"),
    ];
    for (resources, suffix, phrase) in cases {
        let (_d, b) = diff_bundle(&["true"]);
        for w in BOTH {
            let rt = pair.get(w);
            let path = match suffix {
                "" => format!("/{id}-{}-u", w.name()),
                s => format!("/{id}{s}"),
            };
            b.edit_config(|c| {
                c["linux"]["resources"] = resources.clone();
                c["linux"]["cgroupsPath"] = path.into();
            })
            .unwrap();
            let _g = guard(rt, &id);
            let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &id]);
            if r.code == 0 || !message(&r.stderr).contains(phrase) {
                bad.push(format!("{w:?} {phrase}: {r:?}"));
            }
        }
    }
    let _ = std::fs::write(frozen.join("freezer.state"), "THAWED");
    // Every hierarchy's directories of this test, children first.
    for d in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for n in [
            "runc-par/c",
            "berth-par/c",
            "runc-par",
            "berth-par",
            "runc-u",
            "berth-u",
        ] {
            let _ = std::fs::remove_dir(d.path().join(format!("{id}-{n}")));
        }
        let _ = std::fs::remove_dir(d.path().join(format!("{id}-frozen")));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Class 3: a cwd the rootfs lacks is made (0755, inside the root, also
/// under a read-only root), as runc makes it: images name WORKDIRs their
/// layers need not hold. Each runtime gets its own bundle, so neither
/// finds the other's directory.
#[test]
fn a_missing_cwd_is_made_as_runc_makes_it() {
    let pair = Pair::new();
    for readonly in [false, true] {
        let mut seen = Vec::new();
        for w in BOTH {
            let (_d, b) = diff_bundle(&["sh", "-c", "pwd; stat -c '%a %u %g' . .. ../.."]);
            b.edit_config(|c| {
                c["process"]["cwd"] = json!("/made/here/deep");
                c["root"]["readonly"] = json!(readonly);
            })
            .unwrap();
            let id = unique_id("cwd");
            let rt = pair.get(w);
            use_cgroup(&b, w, &id);
            let _g = guard(rt, &id);
            let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &id]);
            seen.push((r.code, r.stdout));
        }
        assert_eq!(seen[0].0, 0, "runc (readonly {readonly}): {:?}", seen[0]);
        assert!(
            seen[0].1.starts_with("/made/here/deep\n755 0 0\n"),
            "{:?}",
            seen[0]
        );
        assert_eq!(
            seen[1], seen[0],
            "berth differs from runc (readonly {readonly})"
        );
    }
}

/// Class 5: `exec --cgroup [controller[,controller]:]path` puts the
/// process in an existing sub-cgroup of the container's, for the named
/// controllers or all; a missing one, an unknown controller or a path out
/// of the container's cgroup is refused, as runc 1.1 does.
#[test]
fn exec_into_a_sub_cgroup_as_runc() {
    let pair = Pair::new();
    let (_d, b) = diff_bundle(&["sleep", "30"]);
    let id = unique_id("subcg");
    let mut seen = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        let r = rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &id]);
        assert_eq!(r.code, 0, "{}: {r:?}", w.name());
        let path = format!("{id}-{}", w.name());
        let subs: Vec<std::path::PathBuf> = ["memory", "pids"]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c).join(&path).join("sub"))
            .collect();
        for s in &subs {
            std::fs::create_dir(s).unwrap();
        }
        // What the process sees of its memory and pids cgroups, the
        // container's own path written as <c>.
        let show = |args: &[&str]| {
            let mut all = vec!["exec"];
            all.extend_from_slice(args);
            all.extend_from_slice(&[&id, "cat", "/proc/self/cgroup"]);
            let r = rt.run(&all);
            let lines: Vec<String> = r
                .stdout
                .lines()
                .filter(|l| l.contains(":memory:") || l.contains(":pids:"))
                .map(|l| l.split_once(':').map_or(l, |x| x.1).replace(&path, "<c>"))
                .collect();
            (r.code, lines)
        };
        let both = show(&["--cgroup", "memory,pids:sub"]);
        let one = show(&["--cgroup", "pids:sub"]);
        let refused: Vec<i32> = [
            "memory:nope",
            "nosuch:sub",
            "memory:../x",
            "sub", // cpu and the others have no "sub"
        ]
        .iter()
        .map(|a| rt.run(["exec", "--cgroup", a, &id, "true"]).code)
        .collect();
        rt.run(["kill", &id, "KILL"]);
        wait_stopped(rt, &id);
        rt.run(["delete", "--force", &id]);
        // The delete removes the container's cgroup with its sub-cgroups,
        // in every hierarchy (runc's RemovePaths).
        let left: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|h| h.path().join(&path))
            .filter(|d| d.is_dir())
            .map(|d| d.display().to_string())
            .collect();
        for s in &subs {
            let _ = std::fs::remove_dir(s);
        }
        for d in &left {
            let _ = std::fs::remove_dir(d);
        }
        seen.push((both, one, refused, left));
    }
    let (runc, berth) = (&seen[0], &seen[1]);
    assert!(runc.3.is_empty(), "runc left cgroups: {runc:?}");
    assert_eq!(runc.0 .0, 0, "runc: {runc:?}");
    assert!(
        runc.0 .1.iter().all(|l| l.ends_with("/sub")),
        "runc: {runc:?}"
    );
    assert!(runc.2.iter().all(|c| *c != 0), "runc: {runc:?}");
    assert_eq!(berth, runc, "berth differs from runc");
}

/// runc's mask.bats: an image whose /proc (or /sys) is a symlink gets no
/// procfs (sysfs) mounted through it: create fails, in runc's words.
#[test]
fn proc_and_sys_symlinks_are_refused_as_runc_refuses_them() {
    let pair = Pair::new();
    for dir in ["proc", "sys"] {
        let (_d, b) = diff_bundle(&["true"]);
        let p = b.rootfs().join(dir);
        let _ = std::fs::remove_dir(&p);
        std::os::unix::fs::symlink("/symlink", &p).unwrap();
        let id = unique_id("symproc");
        for w in BOTH {
            let rt = pair.get(w);
            use_cgroup(&b, w, &id);
            let _g = guard(rt, &id);
            let r = rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &id]);
            assert_eq!(r.code, 1, "{dir} {}: {r:?}", w.name());
            assert!(
                r.stderr.contains("must be mounted on ordinary directory"),
                "{dir} {}: {r:?}",
                w.name()
            );
        }
    }
}

/// runc's mounts_recursive.bats: `rro` makes a bind mount and every mount
/// under it read-only (`ro` alone leaves submounts writable), through
/// mount_setattr(AT_RECURSIVE). The submount is made in a private mount
/// namespace (`unshare`), so nothing outlives the run.
#[test]
fn recursive_read_only_reaches_submounts_as_in_runc() {
    let pair = Pair::new();
    let (d, b) = diff_bundle(&[
        "sh",
        "-c",
        "for f in /mnt/x /mnt/sub/y; do touch $f 2>/dev/null && echo $f rw || echo $f ro; done",
    ]);
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let mut seen = Vec::new();
    for opts in [
        json!(["rbind", "rro"]),
        json!(["rbind", "ro"]),
        json!(["rbind"]),
    ] {
        b.edit_config(|c| {
            c["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/mnt", "type": "bind",
                "source": src.to_str().unwrap(), "options": opts,
            }));
        })
        .unwrap();
        for w in BOTH {
            let rt = pair.get(w);
            let id = unique_id("rro");
            use_cgroup(&b, w, &id);
            let _g = guard(rt, &id);
            let out = std::process::Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg("mount -t tmpfs none \"$1\" && shift && exec \"$@\"")
                .arg("sh")
                .arg(src.join("sub"))
                .arg(&rt.bin)
                .arg("--root")
                .arg(rt.root.path())
                .args(["run", "--bundle", b.dir.to_str().unwrap(), &id])
                .stdin(std::process::Stdio::null())
                .output()
                .expect("unshare");
            seen.push((
                opts.to_string(),
                w.name(),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            ));
        }
        b.edit_config(|c| {
            c["mounts"].as_array_mut().unwrap().pop();
        })
        .unwrap();
    }
    let _ = std::fs::remove_file(src.join("x"));
    assert_eq!(
        seen[0].3, "/mnt/x ro\n/mnt/sub/y ro\n",
        "runc rro: {seen:?}"
    );
    assert_eq!(seen[2].3, "/mnt/x ro\n/mnt/sub/y rw\n", "runc ro: {seen:?}");
    for pair in seen.chunks(2) {
        assert_eq!((pair[0].2, &pair[0].3), (pair[1].2, &pair[1].3), "{seen:?}");
    }
}

/// runc's no_pivot.bats: with `--no-pivot` the host's mounts stay in the
/// container's mount namespace under its chroot; a whole procfs among them
/// would let a process in a new user namespace mount a fresh procfs (and
/// write /proc/sysrq-trigger). The runtime hides them, as runc does, so the
/// mount is refused.
#[test]
fn no_pivot_hides_the_hosts_proc_as_runc_does() {
    let pair = Pair::new();
    let (_d, b) = diff_bundle(&[
        "unshare",
        "-mrpf",
        "sh",
        "-c",
        "mount -t proc none /proc && echo mounted",
    ]);
    b.edit_config(|c| {
        for set in ["bounding", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_SETFCAP"));
        }
    })
    .unwrap();
    let id = unique_id("nopivot");
    for w in BOTH {
        let rt = pair.get(w);
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        let r = rt.run([
            "run",
            "--no-pivot",
            "--bundle",
            b.dir.to_str().unwrap(),
            &id,
        ]);
        assert_ne!(r.code, 0, "{}: {r:?}", w.name());
        assert!(!r.stdout.contains("mounted"), "{}: {r:?}", w.name());
        assert!(
            format!("{}{}", r.stdout, r.stderr).contains("mount: permission denied"),
            "{}: {r:?}",
            w.name()
        );
    }
}

/// runc's cwd.bats (runc PR #2086): a cwd only its owner (uid 42) may
/// enter works for `exec --user 0` with the default capabilities (no
/// CAP_DAC_OVERRIDE): the cwd is entered while the runtime still holds its
/// capabilities, and again as the user when only the user may enter it.
#[test]
fn a_cwd_only_its_owner_enters_works_for_root_as_in_runc() {
    use std::os::unix::fs::PermissionsExt;
    let pair = Pair::new();
    let (_d, b) = diff_bundle(&["sleep", "100"]);
    let root = b.rootfs().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::chown(&root, Some(42), None).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
    b.edit_config(|c| {
        c["process"]["cwd"] = json!("/root");
        c["process"]["user"] = json!({ "uid": 42, "gid": 42 });
    })
    .unwrap();
    let id = unique_id("cwdpriv");
    let mut seen = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        let r = rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &id]);
        assert_eq!(r.code, 0, "{}: {r:?}", w.name());
        let as_root = rt.run(["exec", "--user", "0", &id, "pwd"]);
        let as_owner = rt.run(["exec", &id, "pwd"]);
        let as_other = rt.run(["exec", "--user", "43", &id, "pwd"]);
        seen.push((
            (as_root.code, as_root.stdout),
            (as_owner.code, as_owner.stdout),
            as_other.code,
        ));
    }
    // (Another user gets in as well: the cwd is entered before the switch.)
    assert_eq!(seen[0].0, (0, "/root\n".to_owned()), "runc: {seen:?}");
    assert_eq!(seen[1], seen[0], "berth differs from runc");
}

/// runc's cgroups.bats "v1+hybrid joins correct cgroup" and exec.bats
/// "--cgroup sub-cgroups [v1]": the init and an exec'd process are in the
/// container's cgroup in every hierarchy, the named `name=systemd` one and
/// the hybrid cgroup2 mount included (every line of /proc/PID/cgroup
/// names it); `--cgroup /` is the container's own; refusals in runc's words.
#[test]
fn every_hierarchy_names_the_container_as_in_runc() {
    let pair = Pair::new();
    let (_d, b) = diff_bundle(&["sleep", "100"]);
    let id = unique_id("allh");
    let mut seen = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        use_cgroup(&b, w, &id);
        let path = b.config().unwrap()["linux"]["cgroupsPath"]
            .as_str()
            .unwrap()
            .to_owned();
        let _g = guard(rt, &id);
        let r = rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &id]);
        assert_eq!(r.code, 0, "{}: {r:?}", w.name());
        let pid = rt.state(&id)["pid"].as_i64().unwrap();
        // Each hierarchy's line, its path made relative to the container.
        let lines = |text: &str| -> Vec<String> {
            let mut v: Vec<String> = text
                .lines()
                .map(|l| {
                    let (h, p) = l.rsplit_once(':').unwrap();
                    let h = h.split_once(':').map_or(h, |x| x.1);
                    format!("{h}:{}", p.replacen(&path, "<c>", 1))
                })
                .collect();
            v.sort();
            v
        };
        let init = lines(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap());
        let exec = rt.run(["exec", &id, "cat", "/proc/self/cgroup"]);
        let top = rt.run(["exec", "--cgroup", "/", &id, "cat", "/proc/self/cgroup"]);
        let refusals: Vec<(i32, bool)> = [
            ("..", "is not a sub cgroup path"),
            ("nonexistent", "/nonexistent/cgroup.procs: no such file"),
            ("cpu:nonexistent", "/nonexistent/cgroup.procs: no such file"),
            ("whaaat:/", "unknown controller "),
        ]
        .iter()
        .map(|(arg, phrase)| {
            let r = rt.run(["exec", "--cgroup", arg, &id, "true"]);
            (r.code, r.stderr.contains(phrase))
        })
        .collect();
        rt.run(["kill", &id, "KILL"]);
        wait_stopped(rt, &id);
        rt.run(["delete", "--force", &id]);
        let left: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|h| h.path().join(path.trim_start_matches('/')))
            .filter(|d| d.is_dir())
            .map(|d| d.display().to_string())
            .collect();
        for d in &left {
            let _ = std::fs::remove_dir(d);
        }
        seen.push((
            init,
            lines(&exec.stdout),
            lines(&top.stdout),
            refusals,
            left,
        ));
    }
    let runc = &seen[0];
    assert!(runc.0.iter().all(|l| l.ends_with(":<c>")), "runc: {runc:?}");
    assert!(runc.3.iter().all(|(c, p)| *c != 0 && *p), "runc: {runc:?}");
    assert_eq!(seen[1], seen[0], "berth differs from runc");
}
