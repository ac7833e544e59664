//! `berth run --device`, docker's forms: a host device node under its own
//! or another name with its permissions, and a CDI device from a vendor
//! spec in the daemon's CDI directories. /dev/loop-control is used because
//! the default device rules refuse it: opening it shows the rule was added.

use berth_integration_tests::fixtures::image;
use berth_integration_tests::manager::{run_rm as run, Daemon};

#[test]
fn host_and_cdi_devices_reach_the_container() {
    let tmp = tempfile::tempdir().unwrap();
    let cdi = tmp.path().join("cdi");
    std::fs::create_dir(&cdi).unwrap();
    std::fs::write(
        cdi.join("berth-test.json"),
        serde_json::json!({
            "cdiVersion": "0.6.0",
            "kind": "berth.test/dev",
            "devices": [{
                "name": "loopctl",
                "containerEdits": {
                    "env": ["CDI_DEV=loopctl"],
                    "deviceNodes": [{ "path": "/dev/cdi-loopctl", "hostPath": "/dev/loop-control" }]
                }
            }]
        })
        .to_string(),
    )
    .unwrap();
    let config = tmp.path().join("berth.toml");
    std::fs::write(&config, format!("[cri]\ncdi_spec_dirs = [{cdi:?}]\n")).unwrap();
    let d = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let tar = image::standard_tar(tmp.path());
    d.ok(&["load", "-i", tar.to_str().unwrap()]);

    let open = |dev: &str| format!(": < {dev} && echo opened; echo $CDI_DEV");
    // Without --device the node is not there.
    let (code, _, _) = run(&d, &["busybox", "sh", "-c", "test -e /dev/loop-control"]);
    assert_eq!(code, 1);
    for (flag, dev, want) in [
        ("/dev/loop-control", "/dev/loop-control", "opened\n\n"),
        ("/dev/loop-control:/dev/lc", "/dev/lc", "opened\n\n"),
        (
            "berth.test/dev=loopctl",
            "/dev/cdi-loopctl",
            "opened\nloopctl\n",
        ),
    ] {
        let (code, out, err) = run(&d, &["--device", flag, "busybox", "sh", "-c", &open(dev)]);
        assert_eq!((code, out.as_str()), (0, want), "{flag}: {err}");
    }
    // Read only: opening it for writing is refused by the device rule.
    let (code, out, _) = run(
        &d,
        &[
            "--device",
            "/dev/loop-control:/dev/lc:r",
            "busybox",
            "sh",
            "-c",
            ": < /dev/lc && echo read; (: > /dev/lc) 2>/dev/null || echo denied",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "read\ndenied\n"));

    for (flag, says) in [
        ("berth.test/dev=nope", "not found in the specs"),
        ("gpu", "CDI name"),
        ("/etc/hostname", "not a character or block device"),
    ] {
        let (code, _, err) = run(&d, &["--device", flag, "busybox", "true"]);
        assert_eq!(code, 125, "{flag}: {err}");
        assert!(err.contains(says), "{flag}: {err}");
    }
    let ps = d.json(&["ps", "-a", "--format", "json"]);
    assert!(ps.as_array().unwrap().is_empty(), "{ps}");
    assert!(d.uncommitted_snapshots().is_empty());
}
