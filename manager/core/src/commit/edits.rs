//! `--change`: the config edits a commit applies, and the new config.

use super::*;

/// The config edits of `--change`, in the order given.
#[derive(Debug, Default)]
pub(super) struct Edits {
    pub(super) cmd: Option<Vec<String>>,
    pub(super) entrypoint: Option<Vec<String>>,
    pub(super) env: Vec<(String, String)>,
    pub(super) workdir: Vec<String>,
    pub(super) user: Option<String>,
    pub(super) expose: Vec<String>,
    pub(super) labels: Vec<(String, String)>,
    pub(super) volumes: Vec<String>,
    pub(super) stop_signal: Option<String>,
}

impl Edits {
    pub(super) fn parse(&mut self, change: &str) -> Result<(), CommitError> {
        let bad = |why: &str| CommitError::BadChange {
            change: change.to_owned(),
            why: why.to_owned(),
        };
        let t = change.trim();
        let (word, rest) = match t.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (t, ""),
        };
        if rest.is_empty() {
            return Err(bad(
                "write an instruction and its arguments, e.g. CMD [\"sh\"]",
            ));
        }
        match word.to_ascii_uppercase().as_str() {
            "CMD" => self.cmd = Some(command(rest)),
            "ENTRYPOINT" => self.entrypoint = Some(command(rest)),
            "ENV" => {
                let w = words(rest).map_err(|e| bad(&e))?;
                if w[0].contains('=') {
                    for kv in w {
                        let (k, v) = kv.split_once('=').ok_or_else(|| bad("write ENV K=V ..."))?;
                        if k.is_empty() {
                            return Err(bad("an empty variable name"));
                        }
                        self.env.push((k.into(), v.into()));
                    }
                } else {
                    // The old form: ENV K value with spaces.
                    let (k, v) = rest
                        .split_once(char::is_whitespace)
                        .ok_or_else(|| bad("write ENV K=V (or ENV K V)"))?;
                    self.env.push((k.into(), v.trim().into()));
                }
            }
            "LABEL" => {
                for kv in words(rest).map_err(|e| bad(&e))? {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| bad("write LABEL K=V ..."))?;
                    if k.is_empty() {
                        return Err(bad("an empty label name"));
                    }
                    self.labels.push((k.into(), v.into()));
                }
            }
            "WORKDIR" => self.workdir.push(rest.into()),
            "USER" => self.user = Some(rest.into()),
            "EXPOSE" => {
                for p in words(rest).map_err(|e| bad(&e))? {
                    let (port, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                    let ok_port = !port.is_empty()
                        && port
                            .split('-')
                            .all(|n| n.parse::<u16>().is_ok_and(|n| n > 0));
                    let proto = proto.to_ascii_lowercase();
                    if !ok_port || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
                        return Err(bad(&format!("{p:?} is not PORT[/tcp|udp|sctp]")));
                    }
                    self.expose.push(format!("{port}/{proto}"));
                }
            }
            "VOLUME" => match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => self.volumes.extend(v),
                Err(_) => self.volumes.extend(words(rest).map_err(|e| bad(&e))?),
            },
            "STOPSIGNAL" => self.stop_signal = Some(rest.into()),
            other => {
                return Err(bad(&format!(
                    "{other} cannot be changed by commit; use CMD, ENTRYPOINT, ENV, EXPOSE, \
                     LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR"
                )))
            }
        }
        Ok(())
    }

    pub(super) fn apply(&self, c: &mut serde_json::Map<String, Value>) {
        if let Some(v) = &self.entrypoint {
            c.insert("Entrypoint".into(), json!(v));
            // As a Dockerfile: a new entrypoint drops the inherited command.
            if self.cmd.is_none() {
                c.insert("Cmd".into(), Value::Null);
            }
        }
        if let Some(v) = &self.cmd {
            c.insert("Cmd".into(), json!(v));
        }
        if !self.env.is_empty() {
            let mut env: Vec<String> = c
                .get("Env")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            for (k, v) in &self.env {
                let kv = format!("{k}={v}");
                match env
                    .iter_mut()
                    .find(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k.as_str()))
                {
                    Some(e) => *e = kv,
                    None => env.push(kv),
                }
            }
            c.insert("Env".into(), json!(env));
        }
        for w in &self.workdir {
            let cur = c
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_owned();
            let next = if w.starts_with('/') {
                w.clone()
            } else {
                format!("{}/{w}", cur.trim_end_matches('/'))
            };
            c.insert("WorkingDir".into(), json!(next));
        }
        if let Some(u) = &self.user {
            c.insert("User".into(), json!(u));
        }
        for (field, keys) in [("ExposedPorts", &self.expose), ("Volumes", &self.volumes)] {
            if keys.is_empty() {
                continue;
            }
            let entry = c.entry(field).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            if let Some(o) = entry.as_object_mut() {
                for k in keys {
                    o.insert(k.clone(), json!({}));
                }
            }
        }
        if !self.labels.is_empty() {
            let entry = c.entry("Labels").or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            if let Some(o) = entry.as_object_mut() {
                for (k, v) in &self.labels {
                    o.insert(k.clone(), json!(v));
                }
            }
        }
        if let Some(s) = &self.stop_signal {
            c.insert("StopSignal".into(), json!(s));
        }
    }
}

/// A CMD or ENTRYPOINT: the JSON (exec) form, else the shell form.
pub(super) fn command(rest: &str) -> Vec<String> {
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return v;
        }
    }
    vec!["/bin/sh".into(), "-c".into(), rest.into()]
}

/// Words split on blanks, with '…' and "…" quoting and \ escapes, as a
/// Dockerfile's ENV and LABEL read them.
pub(super) fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        match (quote, ch) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(ch);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                in_word = true;
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => cur.push('\\'),
                }
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("an unterminated quote".into());
    }
    if in_word {
        out.push(cur);
    }
    if out.is_empty() {
        return Err("nothing given".into());
    }
    Ok(out)
}

pub(super) fn new_config(
    config: &mut Value,
    diff_id: &str,
    now: &str,
    opts: &CommitOptions,
    rec: &container::ContainerRecord,
    edits: &Edits,
) {
    if !config.is_object() {
        *config = json!({});
    }
    let Some(top) = config.as_object_mut() else {
        return;
    };
    top.insert("created".into(), json!(now));
    if !opts.author.is_empty() {
        top.insert("author".into(), json!(opts.author));
    }
    let rootfs = top
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    if let Some(ids) = rootfs["diff_ids"].as_array_mut() {
        ids.push(json!(diff_id));
    } else {
        rootfs["diff_ids"] = json!([diff_id]);
    }
    let args: Vec<String> = rec.spec["process"]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let created_by = opts.created_by.clone().unwrap_or_else(|| args.join(" "));
    let mut h = json!({"created": now, "created_by": created_by});
    if !opts.message.is_empty() {
        h["comment"] = json!(opts.message);
    }
    if !opts.author.is_empty() {
        h["author"] = json!(opts.author);
    }
    let history = top.entry("history").or_insert_with(|| json!([]));
    match history.as_array_mut() {
        Some(a) => a.push(h),
        None => *history = json!([h]),
    }
    let cfg = top.entry("config").or_insert_with(|| json!({}));
    if !cfg.is_object() {
        *cfg = json!({});
    }
    if let Some(c) = cfg.as_object_mut() {
        edits.apply(c);
    }
}
