//! The reaper and pid reuse, in a process of its own: the reaper waits for
//! any child, so it would take other tests' children. For the same reason
//! the cases run one after another in one test with one reaper: two
//! reapers in one process (two tests run in parallel) take each other's
//! children, and the one that lost its child would wait for it forever.

use std::time::{Duration, SystemTime};

use berth_shim::reaper::{Exit, Reaper};

#[tokio::test(flavor = "current_thread")]
async fn exits_go_to_their_own_process_only() {
    let r = Reaper::start().unwrap();

    // A kept exit of an earlier process is not handed to a new one.
    let child = std::process::Command::new("sh")
        .args(["-c", "sleep 0.2; exit 7"])
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    std::mem::forget(child);
    // What an earlier process with this pid left unclaimed (the runtime's
    // intermediate processes do), before the pid came round again.
    r.keep_unclaimed(
        pid,
        Exit {
            status: 1,
            at: SystemTime::now(),
        },
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), r.wait(pid))
        .await
        .expect("the child's exit");
    assert_eq!(exit.status, 7, "the earlier process's exit was handed out");

    // An exit before the wait is still handed out.
    let child = std::process::Command::new("sh")
        .args(["-c", "exit 5"])
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    std::mem::forget(child);
    // Reaped, unclaimed, before anyone asks.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(std::time::Instant::now() < deadline, "child not reaped");
        r.reap_all();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), r.wait(pid))
        .await
        .expect("the kept exit");
    assert_eq!(exit.status, 5);
}
