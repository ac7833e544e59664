//! The instructions that only change the image config (ENV, LABEL, EXPOSE,
//! VOLUME, WORKDIR, USER, STOPSIGNAL, MAINTAINER, ENTRYPOINT, CMD, SHELL,
//! HEALTHCHECK), applied as docker applies them.

use serde_json::{json, Map, Value};

use super::dockerfile::{expand, expand_words, Form, Healthcheck, Instr};
use super::state::State;

/// Applies config-only instruction `instr` to `state`, its words expanded
/// with `lookup` (the environment before the instruction, as docker does:
/// `ENV a=1 b=$a` gives b the old a). Returns a canonical description of
/// what changed, for the cache key; `None` when `instr` is not config-only.
pub fn apply(
    state: &mut State,
    instr: &Instr,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Option<Result<String, String>> {
    let ex = |raw: &str| expand(raw, lookup, escape);
    let exw = |raw: &[String]| -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for w in raw {
            out.extend(expand_words(w, lookup, escape)?);
        }
        Ok(out)
    };
    let r = (|| -> Result<String, String> {
        match instr {
            Instr::Env(pairs) => {
                let mut set = Vec::new();
                for (k, raw) in pairs {
                    set.push((ex(k)?, ex(raw)?));
                }
                let mut env = state.env();
                for (k, v) in &set {
                    match env.iter_mut().find(|(ek, _)| ek == k) {
                        Some(e) => e.1 = v.clone(),
                        None => env.push((k.clone(), v.clone())),
                    }
                }
                state.run_config().insert(
                    "Env".into(),
                    json!(env
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()),
                );
                Ok(format!("ENV {}", json!(set)))
            }
            Instr::Label(pairs) => {
                let mut set = Vec::new();
                for (k, raw) in pairs {
                    set.push((ex(k)?, ex(raw)?));
                }
                let labels = object(state.run_config(), "Labels");
                for (k, v) in &set {
                    labels.insert(k.clone(), json!(v));
                }
                Ok(format!("LABEL {}", json!(set)))
            }
            Instr::Expose(raw) => {
                let ports = exw(raw)?;
                let mut keys = Vec::new();
                for p in &ports {
                    keys.push(port_key(p)?);
                }
                let exposed = object(state.run_config(), "ExposedPorts");
                for k in &keys {
                    exposed.insert(k.clone(), json!({}));
                }
                Ok(format!("EXPOSE {}", json!(keys)))
            }
            Instr::Volume(raw) => {
                // One path per element, as docker expands them (a JSON
                // path may hold a space).
                let vols = raw.iter().map(|v| ex(v)).collect::<Result<Vec<_>, _>>()?;
                if vols.iter().any(|v| v.is_empty()) {
                    return Err("VOLUME with an empty path".into());
                }
                let volumes = object(state.run_config(), "Volumes");
                for v in &vols {
                    volumes.insert(v.clone(), json!({}));
                }
                Ok(format!("VOLUME {}", json!(vols)))
            }
            Instr::Workdir(raw) => {
                let w = ex(raw)?;
                if w.is_empty() {
                    return Err("WORKDIR needs a path".into());
                }
                let joined = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", state.workdir())
                };
                let dir = clean(&joined);
                state.run_config().insert("WorkingDir".into(), json!(dir));
                Ok(format!("WORKDIR {dir}"))
            }
            Instr::User(raw) => {
                let u = ex(raw)?;
                if u.is_empty() {
                    return Err("USER needs a user".into());
                }
                state.run_config().insert("User".into(), json!(u));
                Ok(format!("USER {u}"))
            }
            Instr::StopSignal(raw) => {
                let s = ex(raw)?;
                if berth_proto::signal::number(&s).is_none() {
                    return Err(format!("STOPSIGNAL {s:?}: not a signal"));
                }
                state.run_config().insert("StopSignal".into(), json!(s));
                Ok(format!("STOPSIGNAL {s}"))
            }
            Instr::Maintainer(m) => {
                if !state.config.is_object() {
                    state.config = json!({});
                }
                state.config["author"] = json!(m);
                Ok(format!("MAINTAINER {m}"))
            }
            Instr::Entrypoint(f) => {
                let v = command(state, f);
                let c = state.run_config();
                c.insert("Entrypoint".into(), json!(v));
                // docker: a new ENTRYPOINT drops the CMD the base image set.
                c.insert("Cmd".into(), Value::Null);
                Ok(format!("ENTRYPOINT {}", json!(v)))
            }
            Instr::Cmd(f) => {
                let v = command(state, f);
                state.run_config().insert("Cmd".into(), json!(v));
                Ok(format!("CMD {}", json!(v)))
            }
            Instr::Shell(v) => {
                if v.is_empty() {
                    return Err("SHELL needs at least the shell program".into());
                }
                state.run_config().insert("Shell".into(), json!(v));
                Ok(format!("SHELL {}", json!(v)))
            }
            Instr::Healthcheck(h) => {
                let v = healthcheck(h.as_ref());
                let text = format!("HEALTHCHECK {v}");
                state.run_config().insert("Healthcheck".into(), v);
                Ok(text)
            }
            _ => Err(String::new()),
        }
    })();
    match r {
        Err(e) if e.is_empty() => None,
        r => Some(r),
    }
}

/// A command in the config: exec form as is, shell form through SHELL.
pub fn command(state: &State, f: &Form) -> Vec<String> {
    match f {
        Form::Exec(v) => v.clone(),
        Form::Shell(s) => {
            let mut v = state.shell();
            v.push(s.clone());
            v
        }
    }
}

fn object<'a>(c: &'a mut Map<String, Value>, k: &str) -> &'a mut Map<String, Value> {
    let v = c.entry(k).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    match v.as_object_mut() {
        Some(o) => o,
        None => unreachable!("made an object above"),
    }
}

/// `80`, `80/tcp`, `53/udp` → the config's `port/proto` key.
fn port_key(p: &str) -> Result<String, String> {
    let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let ok_port = |s: &str| s.parse::<u16>().is_ok_and(|n| n > 0);
    let ok = match port.split_once('-') {
        Some((a, b)) => ok_port(a) && ok_port(b),
        None => ok_port(port),
    };
    if !ok || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("EXPOSE {p:?}: not a port (PORT[/tcp|udp|sctp])"));
    }
    Ok(format!("{port}/{proto}"))
}

/// `a/./b/../c` → `/a/c`: WORKDIR as docker cleans it.
pub fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

fn healthcheck(h: Option<&Healthcheck>) -> Value {
    let Some(h) = h else {
        return json!({"Test": ["NONE"]});
    };
    let mut v = json!({"Test": h.test});
    let ns = |d: std::time::Duration| json!(d.as_nanos() as u64);
    if let Some(d) = h.interval {
        v["Interval"] = ns(d);
    }
    if let Some(d) = h.timeout {
        v["Timeout"] = ns(d);
    }
    if let Some(d) = h.start_period {
        v["StartPeriod"] = ns(d);
    }
    if let Some(d) = h.start_interval {
        v["StartInterval"] = ns(d);
    }
    if let Some(r) = h.retries {
        v["Retries"] = json!(r);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn env_sees_the_environment_before_the_instruction() {
        let mut s = State::scratch();
        let lookup = |k: &str| (k == "a").then(|| "old".to_owned());
        let i = Instr::Env(vec![("a".into(), "new".into()), ("b".into(), "$a".into())]);
        apply(&mut s, &i, &lookup, '\\').unwrap().unwrap();
        assert_eq!(s.config["config"]["Env"], json!(["a=new", "b=old"]));
    }

    #[test]
    fn entrypoint_drops_the_base_cmd_and_shell_forms_use_shell() {
        let mut s = State::scratch();
        s.run_config().insert("Cmd".into(), json!(["sh"]));
        apply(
            &mut s,
            &Instr::Shell(vec!["/bin/ash".into(), "-e".into(), "-c".into()]),
            &none,
            '\\',
        )
        .unwrap()
        .unwrap();
        apply(
            &mut s,
            &Instr::Entrypoint(Form::Shell("run me".into())),
            &none,
            '\\',
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s.config["config"]["Entrypoint"],
            json!(["/bin/ash", "-e", "-c", "run me"])
        );
        assert_eq!(s.config["config"]["Cmd"], Value::Null);
    }

    #[test]
    fn workdir_is_joined_and_cleaned_and_ports_checked() {
        let mut s = State::scratch();
        apply(&mut s, &Instr::Workdir("/a/b".into()), &none, '\\')
            .unwrap()
            .unwrap();
        apply(&mut s, &Instr::Workdir("../c/./d".into()), &none, '\\')
            .unwrap()
            .unwrap();
        assert_eq!(s.config["config"]["WorkingDir"], "/a/c/d");
        apply(
            &mut s,
            &Instr::Expose(vec!["80".into(), "53/UDP".into()]),
            &none,
            '\\',
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s.config["config"]["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}})
        );
        assert!(
            apply(&mut s, &Instr::Expose(vec!["http".into()]), &none, '\\')
                .unwrap()
                .is_err()
        );
        assert!(
            apply(&mut s, &Instr::StopSignal("SIGNOPE".into()), &none, '\\')
                .unwrap()
                .is_err()
        );
    }
}
