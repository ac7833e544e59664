//! Isolation between networks, as docker's two-stage chains: traffic that
//! enters from one of this daemon's bridges and leaves through another is
//! dropped, so containers of different networks cannot reach each other
//! by address either. The rules are rebuilt from the network records on
//! every network change and at startup (so a crash leaves none stale), in
//! chains named by the daemon's root; with no user network there are no
//! chains and no jump at all.

use std::process::Command;

use crate::config::Config;

fn chains(cfg: &Config) -> (String, String) {
    let h = super::short_hash(&[cfg.root.as_os_str().as_encoded_bytes()], 8);
    (format!("BERTH-ISO1-{h}"), format!("BERTH-ISO2-{h}"))
}

fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Rebuilds this daemon's isolation rules from its networks.
pub fn sync(cfg: &Config) {
    if let Err(e) = try_sync(cfg) {
        tracing::warn!(error = %e, "network isolation rules");
    }
}

fn try_sync(cfg: &Config) -> Result<(), String> {
    let (c1, c2) = chains(cfg);
    let nets = super::store::list(cfg).map_err(|e| e.to_string())?;
    let user = nets.iter().filter(|n| !n.builtin).count();
    if user == 0 {
        while iptables(&["-D", "FORWARD", "-j", &c1]).is_ok() {}
        for c in [&c1, &c2] {
            let _ = iptables(&["-F", c]);
            let _ = iptables(&["-X", c]);
        }
        return Ok(());
    }
    for c in [&c1, &c2] {
        if iptables(&["-F", c]).is_err() {
            iptables(&["-N", c])?;
        }
    }
    for n in &nets {
        let b = n.bridge.as_str();
        iptables(&["-A", &c1, "-i", b, "!", "-o", b, "-j", &c2])?;
        iptables(&["-A", &c2, "-o", b, "-j", "DROP"])?;
    }
    if iptables(&["-C", "FORWARD", "-j", &c1]).is_err() {
        iptables(&["-I", "FORWARD", "-j", &c1])?;
    }
    Ok(())
}
