//! The reaper and pid reuse, in a process of its own (the reaper waits for
//! any child, which would take other tests' children).

use std::time::{Duration, SystemTime};

use berth_shim::reaper::{Exit, Reaper};

#[tokio::test(flavor = "current_thread")]
async fn a_kept_exit_of_an_earlier_process_is_not_handed_to_a_new_one() {
    let r = Reaper::start().unwrap();
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
}

#[tokio::test(flavor = "current_thread")]
async fn an_exit_before_the_wait_is_still_handed_out() {
    let r = Reaper::start().unwrap();
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
    assert_eq!(r.wait(pid).await.status, 5);
}
