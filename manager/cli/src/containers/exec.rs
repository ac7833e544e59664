//! `exec`: another process in a running container.

use anyhow::{Context, Result};
use berth_proto::manager::v1 as pb;
use berth_proto::shim::v1 as shim;
use serde_json::json;

use super::request::{env_entry, random_id};
use super::session::{attach, spawn_wait, Outcome, SessionArgs};
use crate::{rpc, Client};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  berth exec web ps\n  berth exec -u 65534 -w /tmp -e X=1 web sh -c 'id; pwd; echo $X'",
    // The shared -t speaks of the container; exec's has always spoken of
    // the process it starts.
    mut_arg("tty", |a| a.help(
        "Give the process a terminal (with -i: this terminal in raw mode, \
         resized with the window; ctrl-p ctrl-q detaches)"
    ))
)]
pub struct ExecArgs {
    /// -i, -t and --detach-keys, declared once with run's.
    #[command(flatten)]
    session: SessionArgs,
    /// Add or replace an environment variable (KEY=VALUE).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// user[:group] as numbers.
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory.
    #[arg(short, long)]
    workdir: Option<String>,
    /// The container, then the command and its arguments.
    #[arg(required = true, num_args = 2.., trailing_var_arg = true, allow_hyphen_values = true)]
    id_and_args: Vec<String>,
}

/// Runs a process in a running container: the container's own process
/// settings (capabilities, rlimits, env) with the command and the options
/// applied, as `docker exec` does.
pub async fn exec(c: &Client, a: ExecArgs) -> Result<i32> {
    let id = a.id_and_args[0].clone();
    let ct = c
        .containers()
        .get(pb::GetContainerRequest { id: id.clone() })
        .await
        .map_err(rpc)?
        .into_inner();
    let spec: serde_json::Value =
        serde_json::from_slice(&ct.spec).context("the container's spec")?;
    let mut process = spec["process"].clone();
    process["args"] = json!(a.id_and_args[1..]);
    process["terminal"] = json!(a.session.tty);
    let mut env: Vec<String> = process["env"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for e in &a.env {
        let e = env_entry(e)?;
        let k = e.split('=').next().unwrap_or_default().to_owned();
        env.retain(|x| x.split('=').next() != Some(k.as_str()));
        env.push(e);
    }
    process["env"] = json!(env);
    if let Some(w) = &a.workdir {
        process["cwd"] = json!(w);
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        let uid: u32 = uid
            .parse()
            .with_context(|| format!("-u {u:?}: give numbers, uid[:gid]"))?;
        let gid: u32 = match gid {
            Some(g) => g
                .parse()
                .with_context(|| format!("-u {u:?}: give numbers, uid[:gid]"))?,
            None => uid,
        };
        process["user"] = json!({"uid": uid, "gid": gid});
    }
    let exec_id = format!("exec-{}", random_id());
    c.tasks()
        .exec(shim::ExecRequest {
            id: id.clone(),
            exec_id: exec_id.clone(),
            terminal: a.session.tty,
            stdin: a.session.interactive,
            process_json: serde_json::to_vec(&process)?,
        })
        .await
        .map_err(rpc)?;
    let session = a.session.session();
    let _raw = session.raw_mode();
    let (output, started) = attach(c, &id, &exec_id, &session).await?;
    let waiter = spawn_wait(c, &id, &exec_id);
    c.tasks()
        .start(shim::StartRequest {
            id: id.clone(),
            exec_id: exec_id.clone(),
        })
        .await
        .map_err(rpc)?;
    let _ = started.send(());
    if output.await.context("relaying output")?? == Outcome::Detached {
        return Ok(0);
    }
    let st = waiter.await.context("waiting")?.map_err(rpc)?.into_inner();
    let _ = c.tasks().delete(shim::DeleteRequest { id, exec_id }).await;
    Ok(st.exit_status as i32)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use crate::{Cli, Command};

    #[test]
    fn exec_reads_the_shared_session_flags() {
        let cli = Cli::try_parse_from([
            "berth",
            "exec",
            "-it",
            "--detach-keys",
            "ctrl-a,d",
            "web",
            "sh",
        ])
        .unwrap();
        let Command::Exec(a) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert!(a.session.interactive && a.session.tty);
        assert_eq!(a.session.keys.detach_keys.0, vec![1, b'd']);
        assert_eq!(a.id_and_args, ["web", "sh"]);
    }

    /// The shared -t carries run's help; exec's override must keep its own.
    #[test]
    fn exec_and_run_keep_their_own_tty_help() {
        let help = |cmd: &str| {
            let mut cli = Cli::command();
            let sub = cli.find_subcommand_mut(cmd).unwrap();
            let tty = sub.get_arguments().find(|a| a.get_id() == "tty");
            tty.and_then(|a| a.get_help()).unwrap().to_string()
        };
        assert_eq!(
            help("exec"),
            "Give the process a terminal (with -i: this terminal in raw mode, resized with \
             the window; ctrl-p ctrl-q detaches)"
        );
        assert_eq!(
            help("run"),
            "Give the container a terminal (raw mode here, resized with the window; ctrl-p \
             ctrl-q detaches)"
        );
    }
}
