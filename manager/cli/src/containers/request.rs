//! `run` and `create`'s flags, and the container request made of them.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_proto::manager::v1 as pb;

use super::session::SessionArgs;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  berth run --rm busybox echo hello
  berth run -d --name web -e PORT=8080 busybox httpd -f -p 8080
  berth run --rm -v /srv/data:/data:ro --memory 64m --cpus 0.5 busybox du -sh /data
  berth run -d -p 8080:80 --name web busybox httpd -f -p 80
  berth run -d --net mynet --network-alias db busybox sleep 1d")]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub(super) detach: bool,
    /// Remove the container when it exits (done by the daemon, also if this
    /// command is gone by then).
    #[arg(long)]
    pub(super) rm: bool,
    /// -i, -t and --detach-keys: declared once for run, create and exec.
    #[command(flatten)]
    pub(super) session: SessionArgs,
    /// Set an environment variable (KEY=VALUE, or KEY to take this shell's value).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments).
    #[arg(long)]
    env_file: Vec<PathBuf>,
    /// Bind mount: /host/path:/container/path[:ro].
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Name (and id) of the container; a random one otherwise.
    #[arg(long)]
    name: Option<String>,
    /// user[:group], by name or number.
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Memory limit: bytes, or with k, m or g.
    #[arg(short, long)]
    memory: Option<String>,
    /// CPU limit in CPUs, e.g. 0.5.
    #[arg(long)]
    cpus: Option<f64>,
    /// Most processes the container may have.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// The cgroup to make the container's cgroup under, e.g. /jobs (the
    /// daemon's cgroup_parent by default).
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// Replace the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Every capability, no seccomp filter, all devices.
    #[arg(long)]
    privileged: bool,
    /// A host device (HOST[:CONTAINER][:rwm]) or a CDI device
    /// (vendor.com/class=name), repeatable.
    #[arg(long)]
    device: Vec<String>,
    #[arg(long)]
    cap_add: Vec<String>,
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Network: host (the daemon's default_network, host unless
    /// configured), bridge (a CNI bridge network with an address of its
    /// own and outbound NAT), none, or a network from `berth network ls`.
    #[arg(long, visible_alias = "network")]
    net: Option<String>,
    /// Publish a container port on the host (docker's forms, repeatable):
    /// 8080:80, 127.0.0.1:8080:80, 127.0.0.1::80, 80 (a free host port),
    /// with /tcp or /udp and ranges (8000-8001:80-81). Implies --net bridge
    /// when no network is named.
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every port the image exposes on free host ports.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Another name of the container on its user network (repeatable).
    #[arg(long = "network-alias")]
    network_alias: Vec<String>,
    /// Hostname inside the container.
    #[arg(long)]
    hostname: Option<String>,
    /// Restart policy, kept by the daemon: no, on-failure[:N] or always.
    #[arg(long, default_value = "no")]
    restart: String,
    /// Image, then the command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    image_and_args: Vec<String>,
}

/// `64m` → bytes.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t.as_str(), 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a size: write e.g. 512k, 64m or 1g"))?;
    if n <= 0.0 {
        bail!("size {s:?} must be positive");
    }
    Ok((n * mult as f64) as i64)
}

fn env_entries(a: &RunArgs) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading --env-file {}", f.display()))?;
        for l in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            out.push(env_entry(l)?);
        }
    }
    for e in &a.env {
        out.push(env_entry(e)?);
    }
    Ok(out)
}

pub(super) fn env_entry(e: &str) -> Result<String> {
    if e.contains('=') {
        return Ok(e.to_owned());
    }
    match std::env::var(e) {
        Ok(v) => Ok(format!("{e}={v}")),
        Err(_) => bail!("-e {e}: not KEY=VALUE and not set in this shell"),
    }
}

fn mounts(a: &RunArgs) -> Result<Vec<pb::BindMount>> {
    a.volume
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            let (src, dst, ro) = match parts.as_slice() {
                [s, d] => (*s, *d, false),
                [s, d, "ro"] => (*s, *d, true),
                [s, d, "rw"] => (*s, *d, false),
                _ => bail!("-v {v:?}: write /host/path:/container/path[:ro]"),
            };
            let src = std::fs::canonicalize(src)
                .with_context(|| format!("-v {v:?}: {src} does not exist on this host"))?;
            if !dst.starts_with('/') {
                bail!("-v {v:?}: the container path must be absolute");
            }
            Ok(pb::BindMount {
                source: src.display().to_string(),
                destination: dst.to_owned(),
                readonly: ro,
            })
        })
        .collect()
}

/// A fresh id, for containers without --name and for execs.
pub(super) fn random_id() -> String {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    hex::encode(b)
}

impl RunArgs {
    /// The image to create the container from.
    pub(super) fn image(&self) -> &str {
        &self.image_and_args[0]
    }

    /// The daemon's create request for these flags. Kept apart from the
    /// call so that the flags' checks are in one place, next to the flags.
    pub(super) fn request(&self) -> Result<pb::CreateContainerRequest> {
        let image = self.image().to_owned();
        let args = self.image_and_args[1..].to_vec();
        let id = self.name.clone().unwrap_or_else(random_id);
        let (entrypoint, entrypoint_set) = match &self.entrypoint {
            Some(e) if e.is_empty() => (vec![], true),
            Some(e) => (vec![e.clone()], true),
            None => (vec![], false),
        };
        let options = pb::SpecOptions {
            args,
            entrypoint,
            entrypoint_set,
            env: env_entries(self)?,
            cwd: self.workdir.clone().unwrap_or_default(),
            user: self.user.clone().unwrap_or_default(),
            privileged: self.privileged,
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            mounts: mounts(self)?,
            memory_bytes: self
                .memory
                .as_deref()
                .map(parse_bytes)
                .transpose()?
                .unwrap_or(0),
            cpus: self.cpus.unwrap_or(0.0),
            pids_limit: self.pids_limit.unwrap_or(0),
            readonly_rootfs: self.read_only,
            network: self.net.clone().unwrap_or_default(),
            hostname: self.hostname.clone().unwrap_or_default(),
            terminal: self.session.tty,
            stdin: self.session.interactive,
            cgroup_parent: self.cgroup_parent.clone().unwrap_or_default(),
            publish: self.publish.clone(),
            publish_all: self.publish_all,
            network_aliases: self.network_alias.clone(),
            devices: self.device.clone(),
        };
        let mut labels = HashMap::new();
        if berth_proto::labels::RestartPolicy::parse(&self.restart).is_none() {
            bail!(
                "--restart {:?}: use no, on-failure, on-failure:N or always",
                self.restart
            );
        }
        if self.restart != "no" {
            if self.rm {
                bail!("--restart and --rm cannot be used together");
            }
            labels.insert(
                berth_proto::labels::RESTART_POLICY.to_owned(),
                self.restart.clone(),
            );
        }
        if self.rm {
            labels.insert(
                berth_proto::labels::AUTO_REMOVE.to_owned(),
                "true".to_owned(),
            );
        }
        Ok(pb::CreateContainerRequest {
            id,
            image,
            options: Some(options),
            labels,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    #[test]
    fn session_flags_reach_the_container_spec() {
        let cli =
            Cli::try_parse_from(["berth", "create", "-t", "--name", "c", "busybox", "sh"]).unwrap();
        let Command::Create(a) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        let req = a.request().unwrap();
        let options = req.options.unwrap();
        assert_eq!((req.id.as_str(), req.image.as_str()), ("c", "busybox"));
        assert!(options.terminal && !options.stdin);
        assert_eq!(options.args, ["sh"]);
        assert!(options.network.is_empty() && options.publish.is_empty());
    }

    #[test]
    fn publish_flags_reach_the_request() {
        let cli = Cli::try_parse_from([
            "berth",
            "create",
            "-p",
            "8080:80",
            "-p",
            "53/udp",
            "-P",
            "--net",
            "n",
            "--network-alias",
            "db",
            "busybox",
        ])
        .unwrap();
        let Command::Create(a) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        let o = a.request().unwrap().options.unwrap();
        assert_eq!(o.publish, ["8080:80", "53/udp"]);
        assert!(o.publish_all);
        assert_eq!(
            (o.network.as_str(), o.network_aliases.as_slice()),
            ("n", &["db".to_owned()][..])
        );
    }

    #[test]
    fn sizes_parse_as_docker_writes_them() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("512k").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-1m").is_err());
    }
}
