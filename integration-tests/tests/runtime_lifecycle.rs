//! berth-runtime's lifecycle commands against real bundles, as root:
//! create, start, run, state, kill, delete, list, ps, exec, pause, resume.

use std::time::{Duration, Instant};

use berth_integration_tests::runtime::{bundle, cgroup_dir, Runtime};
use serde_json::json;

fn wait_status(rt: &Runtime, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = rt.state(id);
        if st["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never became {want}: {st}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_returns_output_and_exit_code() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sh", "-c", "echo hello from $(hostname); exit 3"]);
    let c = rt.container("run");
    let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stdout, "hello from berth\n");
    // run deletes the container and its cgroup afterwards.
    rt.run(["state", &c.id]).fails("container does not exist");
    assert!(!cgroup_dir("pids", &c.id).exists());
}

#[test]
fn run_reports_128_plus_signal() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sh", "-c", "kill -9 $$"]);
    // Without a pid namespace of its own the shell is not an init, so the
    // kernel does not shield it from its own SIGKILL.
    b.edit_config(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid")
    })
    .unwrap();
    let c = rt.container("sig");
    let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
    assert_eq!(r.code, 137, "{r:?}");
}

#[test]
fn run_keep_leaves_a_stopped_container() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["true"]);
    let c = rt.container("keep");
    rt.run(["run", "--keep", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    let st = rt.state(&c.id);
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["pid"], 0);
    rt.run(["delete", &c.id]).ok();
}

#[test]
fn create_start_state_kill_delete() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sleep", "100"]);
    let c = rt.container("life");
    let pidfile = b.dir.join("init.pid");
    rt.run([
        "create",
        "--bundle",
        b.dir.to_str().unwrap(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        &c.id,
    ])
    .ok();
    let st = rt.state(&c.id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], c.id.as_str());
    assert_eq!(st["ociVersion"], "1.0.2-dev");
    assert_eq!(st["bundle"], b.dir.to_str().unwrap());
    assert_eq!(st["rootfs"], b.rootfs().to_str().unwrap());
    assert!(st["created"].as_str().unwrap().ends_with('Z'));
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        pid.to_string(),
        "--pid-file holds the init pid"
    );
    // The container's init is in its cgroup before it runs anything.
    let procs = std::fs::read_to_string(cgroup_dir("pids", &c.id).join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    in_its_cgroup_everywhere(pid, &c.id);

    rt.run(["start", &c.id]).ok();
    assert_eq!(rt.state(&c.id)["status"], "running");
    rt.run(["start", &c.id])
        .fails("cannot start an already running container");
    rt.run(["delete", &c.id]).fails("not stopped: running");

    rt.run(["kill", &c.id, "KILL"]).ok();
    wait_status(&rt, &c.id, "stopped");
    rt.run(["kill", &c.id]).fails("container not running");
    rt.run(["delete", &c.id]).ok();
    rt.run(["state", &c.id]).fails("container does not exist");
    assert!(!cgroup_dir("pids", &c.id).exists(), "cgroup removed");
    assert!(!rt.root.path().join(&c.id).exists(), "state removed");
}

/// Polls the container's processes until `n` run (its shell has then set
/// up whatever it does before starting them).
fn wait_pids(rt: &Runtime, id: &str, n: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = rt.run(["ps", "--format", "json", id]).ok().stdout;
        let pids: Vec<i64> = serde_json::from_str(&out).unwrap();
        if pids.len() >= n {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {n} processes in {id}, have {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Running (a zombie waiting for whoever inherited it counts as dead).
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn kill_by_name_number_and_all() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sh", "-c", "trap 'exit 42' TERM; sleep 100 & wait"]);
    let c = rt.container("kill");
    rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    // The sleep runs once the trap is set.
    wait_pids(&rt, &c.id, 2);
    rt.run(["kill", &c.id, "NOSUCH"]).fails("unknown signal");
    // Signal 0 is a liveness check (runc's too): it succeeds on a running
    // container, for its init and for all, and changes nothing.
    rt.run(["kill", &c.id, "0"]).ok();
    rt.run(["kill", "--all", &c.id, "0"]).ok();
    assert_eq!(rt.state(&c.id)["status"], "running");
    // SIGTERM by default, handled by the trap.
    rt.run(["kill", &c.id]).ok();
    wait_status(&rt, &c.id, "stopped");
    rt.run(["kill", &c.id, "0"]).fails("container not running");
    rt.run(["delete", &c.id]).ok();

    // Without a pid namespace of its own, killing the init leaves its
    // children running: --all is what reaches them.
    let shared = |tag: &str| {
        let (d, b) = bundle(&["sh", "-c", "sleep 100 & sleep 100 & wait"]);
        b.edit_config(|c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "pid");
        })
        .unwrap();
        let c = rt.container(tag);
        rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &c.id])
            .ok();
        let pids = wait_pids(&rt, &c.id, 3);
        (d, c, pids)
    };
    let (_d1, init_only, pids) = shared("killinit");
    let init = rt.state(&init_only.id)["pid"].as_i64().unwrap();
    rt.run(["kill", &init_only.id, "9"]).ok();
    wait_status(&rt, &init_only.id, "stopped");
    let children: Vec<i64> = pids.into_iter().filter(|p| *p != init).collect();
    assert!(
        children.iter().all(|p| alive(*p)),
        "killing the init alone took its children too"
    );
    rt.run(["delete", "--force", &init_only.id]).ok();

    let (_d2, all, pids) = shared("killall");
    rt.run(["kill", "--all", &all.id, "9"]).ok();
    wait_status(&rt, &all.id, "stopped");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "--all left some of {pids:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    rt.run(["delete", &all.id]).ok();
}

#[test]
fn delete_force_kills_a_running_container() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sleep", "100"]);
    let c = rt.container("force");
    rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    let pid = rt.state(&c.id)["pid"].as_i64().unwrap();
    rt.run(["delete", "--force", &c.id]).ok();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            // It may linger as a zombie of its reaper for a moment.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        }
    );
    rt.run(["state", &c.id]).fails("container does not exist");
    // Deleting what does not exist: an error, unless forced.
    rt.run(["delete", &c.id]).fails("container does not exist");
    rt.run(["delete", "--force", &c.id]).ok();
}

#[test]
fn list_formats() {
    let rt = Runtime::new();
    assert_eq!(rt.run(["list", "--format", "json"]).ok().stdout, "null\n");
    let (_d, b) = bundle(&["sleep", "100"]);
    let c = rt.container("list");
    rt.run(["create", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    assert_eq!(rt.run(["list", "-q"]).ok().stdout, format!("{}\n", c.id));
    let table = rt.run(["list"]).ok().stdout;
    let mut lines = table.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("ID   ")
        .then_some(())
        .is_some());
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], c.id);
    assert_eq!(row[2], "created");
    assert_eq!(row[5], "root");
    let list: serde_json::Value =
        serde_json::from_str(&rt.run(["list", "--format", "json"]).ok().stdout).unwrap();
    assert_eq!(list[0]["id"], c.id.as_str());
    assert_eq!(list[0]["status"], "created");
    assert_eq!(list[0]["owner"], "root");
}

#[test]
fn ps_table_and_json() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sleep", "100"]);
    let c = rt.container("ps");
    rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    let pid = rt.state(&c.id)["pid"].as_i64().unwrap();
    let json: Vec<i64> =
        serde_json::from_str(&rt.run(["ps", "--format", "json", &c.id]).ok().stdout).unwrap();
    assert_eq!(json, vec![pid]);
    let table = rt.run(["ps", &c.id]).ok().stdout;
    assert!(table.starts_with("UID"), "{table}");
    assert!(table.contains("sleep 100"), "{table}");
    let custom = rt.run(["ps", &c.id, "-o", "pid,comm"]).ok().stdout;
    assert_eq!(custom.lines().count(), 2, "{custom}");
    assert!(custom.contains("sleep"), "{custom}");
}

#[test]
fn exec_runs_in_the_container_and_returns_its_status() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sleep", "100"]);
    let c = rt.container("exec");
    rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    let r = rt
        .run([
            "exec",
            "--env",
            "GREETING=hi",
            "--cwd",
            "/etc",
            &c.id,
            "sh",
            "-c",
            "echo $GREETING $(pwd) $(hostname); cat /proc/1/cmdline | tr '\\0' ' '",
        ])
        .ok();
    assert_eq!(r.stdout, "hi /etc berth\nsleep 100 ");
    let r = rt.run(["exec", &c.id, "sh", "-c", "exit 7"]);
    assert_eq!(r.code, 7);
    // An exec'd process joins the container's cgroup in every hierarchy.
    let pid_file = b.dir.join("exec.pid");
    rt.run([
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &c.id,
        "sleep",
        "100",
    ])
    .ok();
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    in_its_cgroup_everywhere(pid, &c.id);
    // User switch.
    let r = rt.run(["exec", "--user", "65534:65534", &c.id, "id"]).ok();
    assert_eq!(r.stdout.trim(), "uid=65534(nobody) gid=65534(nobody)");
    // --process JSON.
    let p = b.dir.join("process.json");
    std::fs::write(
        &p,
        json!({"args": ["sh", "-c", "echo from-process-json"], "cwd": "/", "user": {"uid": 0, "gid": 0},
               "env": ["PATH=/bin"]})
        .to_string(),
    )
    .unwrap();
    let r = rt
        .run(["exec", "--process", p.to_str().unwrap(), &c.id])
        .ok();
    assert_eq!(r.stdout, "from-process-json\n");
    // Detached exec with a pid file.
    let pf = b.dir.join("exec.pid");
    rt.run([
        "exec",
        "-d",
        "--pid-file",
        pf.to_str().unwrap(),
        &c.id,
        "sleep",
        "50",
    ])
    .ok();
    let epid: i64 = std::fs::read_to_string(&pf).unwrap().parse().unwrap();
    let pids: Vec<i64> =
        serde_json::from_str(&rt.run(["ps", "--format", "json", &c.id]).ok().stdout).unwrap();
    assert!(pids.contains(&epid), "{pids:?} {epid}");
    rt.run(["exec", &c.id, "nonexistent-binary"])
        .fails("executable file not found");
}

#[test]
fn pause_and_resume() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sleep", "100"]);
    let c = rt.container("pause");
    rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    rt.run(["resume", &c.id]).fails("not paused");
    rt.run(["pause", &c.id]).ok();
    assert_eq!(rt.state(&c.id)["status"], "paused");
    let state =
        std::fs::read_to_string(cgroup_dir("freezer", &c.id).join("freezer.state")).unwrap();
    assert_eq!(state.trim(), "FROZEN");
    rt.run(["exec", &c.id, "true"]).fails("paused");
    rt.run(["resume", &c.id]).ok();
    assert_eq!(rt.state(&c.id)["status"], "running");
    // A paused container can be force-deleted.
    rt.run(["pause", &c.id]).ok();
    rt.run(["delete", "--force", &c.id]).ok();
    assert!(!cgroup_dir("freezer", &c.id).exists());
}

#[test]
fn run_true_many_times_never_hangs() {
    // youki 0.7 loses the race with a process that exits at once and hangs;
    // every run here has a deadline.
    let rt = Runtime::new();
    let (_d, b) = bundle(&["true"]);
    let n: usize = std::env::var("BERTH_RUN_TRUE_TIMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let start = Instant::now();
    for i in 0..n {
        let c = rt.container("true");
        let out = std::process::Command::new("timeout")
            .args(["10", rt.bin.to_str().unwrap(), "--root"])
            .arg(rt.root.path())
            .args(["run", "--bundle", b.dir.to_str().unwrap(), &c.id])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "run #{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::mem::forget(c); // deleted by run itself
    }
    eprintln!("{n} runs of /bin/true in {:?}", start.elapsed());
}

/// `pid` is in the container's cgroup in every v1 hierarchy with a
/// controller (the named systemd one and the v2 mount are not managed).
fn in_its_cgroup_everywhere(pid: i64, id: &str) {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let managed: Vec<&str> = own
        .lines()
        .filter(|l| {
            let ctrls = l.split(':').nth(1).unwrap_or("");
            !ctrls.is_empty() && !ctrls.starts_with("name=")
        })
        .collect();
    assert!(!managed.is_empty(), "{own}");
    for l in managed {
        assert!(
            l.ends_with(&format!("/{id}")),
            "{pid} outside its cgroup: {l}\n{own}"
        );
    }
}

/// The intermediate process of a pid namespace reports the container
/// process's pid on the channel the process itself writes to: a report that
/// came after the process's Ready made the runtime wait for the
/// intermediate (exit 0) and answer 0 for a command that exited 3, about
/// once in 200 execs. A late report (the runtime's test hook) makes it
/// every time without the ordering.
#[test]
fn exec_status_is_the_commands_even_when_the_pid_report_is_late() {
    let rt = Runtime::new();
    let (_d, b) = bundle(&["sleep", "100"]);
    let c = rt.container("late-pid");
    rt.run(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &c.id])
        .ok();
    for _ in 0..3 {
        let out = rt
            .cmd()
            .env("BERTH_TEST_DELAY_PID_REPORT_MS", "300")
            .args(["exec", &c.id, "sh", "-c", "echo o; exit 3"])
            .output()
            .unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).as_ref()
            ),
            (Some(3), "o\n"),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
