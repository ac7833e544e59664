//! `scripts/install`, from binaries already built (`--from`): what lands
//! where, that a config someone edited is kept, and that the systemd unit
//! is one systemd accepts (`systemd-analyze verify`, since no systemd runs
//! here) and starts the installed daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use berth_integration_tests::bins;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
}

fn install(args: &[&Path]) -> std::process::Output {
    let mut cmd = Command::new(repo().join("scripts/install"));
    cmd.arg("--from").arg(bins::dir());
    for pair in args.chunks(2) {
        cmd.arg(pair[0]).arg(pair[1]);
    }
    let out = cmd.output().expect("running scripts/install");
    assert!(
        out.status.success(),
        "scripts/install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The unit's `Key=value` lines by section, as systemd reads them.
fn unit_keys(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("unit line {line:?} is not Key=value"));
        keys.push((section.clone(), k.to_owned(), v.to_owned()));
    }
    keys
}

#[test]
fn install_puts_binaries_config_and_a_unit_that_systemd_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let (prefix, etc, units) = (
        tmp.path().join("prefix"),
        tmp.path().join("etc"),
        tmp.path().join("units"),
    );
    let args = [
        Path::new("--prefix"),
        &prefix,
        Path::new("--sysconfdir"),
        &etc,
        Path::new("--unitdir"),
        &units,
    ];
    install(&args);

    for b in ["berth", "berth-shim", "berth-runtime"] {
        let p = prefix.join("bin").join(b);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{}", p.display());
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(bins::path(b)).unwrap(),
            "{b} is not the binary given"
        );
    }

    // The config is `berth config default`, written once.
    let config = etc.join("berth/config.toml");
    let default = Command::new(prefix.join("bin/berth"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(default.status.success());
    assert!(String::from_utf8_lossy(&default.stdout).contains("root = \"/var/lib/berth\""));
    assert_eq!(std::fs::read(&config).unwrap(), default.stdout);
    std::fs::write(&config, "root = \"/srv/berth\"\n").unwrap();
    let again = install(&args);
    assert!(String::from_utf8_lossy(&again.stdout).contains("kept:"));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "root = \"/srv/berth\"\n",
        "an existing config was overwritten"
    );

    // The unit runs the installed daemon with that config, stops only the
    // daemon (shims and containers outlive it) and is one systemd accepts.
    let unit_path = units.join("berth.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let keys = unit_keys(&unit);
    let get = |s: &str, k: &str| {
        keys.iter()
            .find(|(sec, key, _)| sec == s && key == k)
            .map(|(_, _, v)| v.as_str())
            .unwrap_or_else(|| panic!("[{s}] {k} missing from the unit:\n{unit}"))
    };
    assert_eq!(
        get("Service", "ExecStart"),
        format!(
            "{} serve --config {}",
            prefix.join("bin/berth").display(),
            config.display()
        )
    );
    assert_eq!(get("Service", "KillMode"), "process");
    assert_eq!(get("Service", "Delegate"), "yes");
    assert_eq!(get("Install", "WantedBy"), "multi-user.target");
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze (Debian's systemd) is needed for this test");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );

    // The command in ExecStart, run by hand, serves with that config.
    let state = tmp.path().join("state");
    let sock = state.join("berth.sock");
    std::fs::write(
        &config,
        format!(
            "root = \"{}\"\nstate = \"{}\"\n",
            tmp.path().join("root").display(),
            state.display()
        ),
    )
    .unwrap();
    let exec: Vec<&str> = get("Service", "ExecStart").split(' ').collect();
    let mut daemon = Command::new(exec[0])
        .args(&exec[1..])
        .env("BERTH_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    berth_integration_tests::manager::wait_listening(&mut daemon, &sock, "the unit's ExecStart");
    assert!(berth_integration_tests::manager::terminate(&mut daemon));
}

#[test]
fn install_refuses_bad_arguments_and_installs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(repo().join("scripts/install"))
        .args(["--prefix", "relative/path", "--from"])
        .arg(bins::dir())
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absolute path"));
    let out = Command::new(repo().join("scripts/install"))
        .args(["--destdir"])
        .arg(tmp.path())
        .arg("--from")
        .arg(tmp.path().join("no-binaries-here"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "a failed install left files behind"
    );
}
