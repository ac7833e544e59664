//! Sharing images: `berth push`, `berth tag`, `berth login` and `berth
//! logout`.
//!
//! Credentials live in docker's `config.json` (`$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`), the file the daemon reads for pulls and
//! pushes, so one login serves berth and docker alike. As with docker, the
//! daemon checks them against the registry (it knows how to reach it: its
//! certificates, insecure registries) and the client stores them.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use super::{human, rpc, Client};
use berth_proto::manager::v1 as pb;

/// Docker Hub's key in `config.json`, as docker writes it.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The image to push, named for its registry (see `berth tag`).
    name: String,
    /// Push only this platform's manifest of an index (os/arch[/variant]).
    #[arg(long)]
    platform: Option<String>,
    /// Talk plain HTTP to this registry.
    #[arg(long)]
    plain_http: bool,
    /// Credentials as user:password (default: docker's config.json).
    #[arg(long)]
    user: Option<String>,
    /// Upload each blob in chunks (a PATCH per piece) instead of one PUT,
    /// for registries or proxies that cap a request's size.
    #[arg(long)]
    chunked: bool,
    /// Print the result as JSON instead of progress bars.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The registry (host[:port]); Docker Hub when omitted.
    server: Option<String>,
    #[arg(short, long)]
    username: Option<String>,
    /// Read the password from standard input (one line).
    #[arg(long)]
    password_stdin: bool,
    /// Talk plain HTTP to this registry.
    #[arg(long)]
    plain_http: bool,
}

fn split_user(u: &Option<String>) -> Result<(String, String)> {
    Ok(match u {
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (u.to_owned(), p.to_owned()),
            None => bail!("--user: write it as user:password"),
        },
        None => Default::default(),
    })
}

pub async fn push(c: &Client, a: PushArgs) -> Result<()> {
    let platform = match &a.platform {
        Some(p) => Some(
            p.parse::<pb::Platform>()
                .map_err(|e| anyhow::anyhow!("--platform {e}"))?,
        ),
        None => None,
    };
    let (username, password) = split_user(&a.user)?;
    let mut stream = c
        .images()
        .push(pb::PushRequest {
            name: a.name.clone(),
            reference: String::new(),
            platform,
            plain_http: a.plain_http,
            username,
            password,
            chunked: a.chunked,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let multi = MultiProgress::new();
    if a.json {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template(
        "{prefix:.bold} {msg:<10} [{bar:30}] {bytes:>10}/{total_bytes:<10}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => bail!("the manager ended the push without a result"),
            Err(e) => {
                multi.clear().ok();
                return Err(rpc(e).context(format!("pushing {}", a.name)));
            }
        };
        match msg.event {
            Some(pb::push_progress::Event::Status(s)) if !a.json => {
                let _ = multi.println(s);
            }
            Some(pb::push_progress::Event::Status(_)) | None => {}
            Some(pb::push_progress::Event::Layer(l)) => {
                let bar = bars.entry(l.digest.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(l.total.max(0) as u64));
                    b.set_style(style.clone());
                    b.set_prefix(
                        l.digest
                            .trim_start_matches("sha256:")
                            .chars()
                            .take(12)
                            .collect::<String>(),
                    );
                    b
                });
                bar.set_position(l.downloaded.max(0) as u64);
                bar.set_message(l.state.clone());
                if l.state == "done" || l.state == "exists" {
                    bar.finish();
                }
            }
            Some(pb::push_progress::Event::Done(r)) => {
                for b in bars.values() {
                    b.finish();
                }
                let t = r.target.unwrap_or_default();
                if a.json {
                    let v = json!({
                        "reference": r.reference,
                        "digest": t.digest,
                        "mediaType": t.media_type,
                        "size": t.size,
                        "uploaded": r.uploaded,
                        "skipped": r.skipped,
                        "mounted": r.mounted,
                    });
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!(
                        "{}: digest: {} size: {} ({} blobs sent, {} already there, {} mounted)",
                        r.reference,
                        t.digest,
                        human(t.size),
                        r.uploaded,
                        r.skipped,
                        r.mounted
                    );
                }
                return Ok(());
            }
        }
    }
}

pub async fn tag(c: &Client, source: String, target: String) -> Result<()> {
    let img = c
        .images()
        .tag(pb::TagImageRequest {
            source: source.clone(),
            target,
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("tagging {source}"))?
        .into_inner();
    println!("{}", img.name);
    Ok(())
}

/// docker's config file: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
fn config_path() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Ok(PathBuf::from(d).join("config.json"));
    }
    let home = std::env::var_os("HOME")
        .context("neither DOCKER_CONFIG nor HOME is set: no place for config.json")?;
    Ok(PathBuf::from(home).join(".docker/config.json"))
}

/// The config as a JSON object, every key kept (an absent file is empty).
fn read_config(path: &std::path::Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(Default::default());
    }
    match serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON; fix or remove it", path.display()))?
    {
        serde_json::Value::Object(m) => Ok(m),
        _ => bail!("{} is not a JSON object; fix or remove it", path.display()),
    }
}

/// Replaces the config file whole (a temporary file renamed over it), mode
/// 0600 in a 0700 directory when it makes one: it holds passwords.
fn write_config(
    path: &std::path::Path,
    cfg: &serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let dir = path.parent().context("config path without a directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let text = serde_json::to_string_pretty(cfg).map_err(std::io::Error::other)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("writing {}", path.display()))
}

/// The keys credentials for `key` may be stored under (docker's own and
/// the forms pulls also read), so a logout removes them all.
fn aliases(key: &str) -> Vec<String> {
    if key == DOCKER_HUB {
        vec![
            DOCKER_HUB.into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![
            key.to_owned(),
            format!("https://{key}"),
            format!("http://{key}"),
        ]
    }
}

/// docker's key for a server as the user writes it.
fn server_key(server: Option<&str>) -> String {
    let s = server.unwrap_or("").trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.into(),
        h => h.into(),
    }
}

/// One line from the terminal with echo off (the password prompt).
fn read_hidden(prompt: &str) -> Result<String> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let saved = termios::tcgetattr(&stdin).context("reading the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    termios::tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning echo off")?;
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    r.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub async fn login(c: &Client, a: LoginArgs) -> Result<()> {
    let key = server_key(a.server.as_deref());
    let tty = std::io::stdin().is_terminal();
    let username = match a.username {
        Some(u) => u,
        None if tty && !a.password_stdin => {
            eprint!("Username: ");
            let _ = std::io::stderr().flush();
            let mut u = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut u)
                .context("reading the username")?;
            u.trim().to_owned()
        }
        None => bail!("give the user name with --username (standard input is not a terminal)"),
    };
    if username.is_empty() {
        bail!("the user name is empty");
    }
    let password = if a.password_stdin {
        let mut p = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut p)
            .context("reading the password from standard input")?;
        p.trim_end_matches(['\r', '\n']).to_owned()
    } else if tty {
        read_hidden("Password: ")?
    } else {
        bail!("cannot prompt for the password: standard input is not a terminal; use --password-stdin");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    // Checked first: bad credentials are never stored.
    c.images()
        .check_login(pb::CheckLoginRequest {
            server: key.clone(),
            username: username.clone(),
            password: password.clone(),
            plain_http: a.plain_http,
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("logging in to {key}"))?;
    let path = config_path()?;
    let mut cfg = read_config(&path)?;
    let auths = cfg
        .entry("auths")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !auths.is_object() {
        bail!(
            "{}: \"auths\" is not an object; fix or remove it",
            path.display()
        );
    }
    if let Some(m) = auths.as_object_mut() {
        // The other forms of the key would shadow or outlive this one.
        for k in aliases(&key) {
            m.remove(&k);
        }
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        m.insert(key.clone(), json!({ "auth": auth }));
    }
    write_config(&path, &cfg)?;
    eprintln!("Credentials stored in {}", path.display());
    println!("Login Succeeded");
    Ok(())
}

/// `berth logout`: needs no daemon, only the config file.
pub fn logout(server: Option<String>) -> Result<()> {
    let key = server_key(server.as_deref());
    let path = config_path()?;
    let mut cfg = read_config(&path)?;
    let removed = cfg
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .map(|m| {
            aliases(&key)
                .iter()
                .filter(|k| m.remove(*k).is_some())
                .count()
        })
        .unwrap_or(0);
    if removed == 0 {
        println!("Not logged in to {key}");
        return Ok(());
    }
    write_config(&path, &cfg)?;
    println!("Removing login credentials for {key}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_docker_s() {
        assert_eq!(server_key(None), DOCKER_HUB);
        assert_eq!(server_key(Some("docker.io")), DOCKER_HUB);
        assert_eq!(
            server_key(Some("https://127.0.0.1:5000/v2/")),
            "127.0.0.1:5000"
        );
        assert_eq!(aliases("r:1")[1], "https://r:1");
    }

    #[test]
    fn config_keeps_other_keys_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d/config.json");
        let mut cfg = serde_json::Map::new();
        cfg.insert("credsStore".into(), json!("x"));
        write_config(&p, &cfg).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert_eq!(read_config(&p).unwrap()["credsStore"], "x");
    }
}
