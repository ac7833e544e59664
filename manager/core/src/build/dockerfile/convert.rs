//! From the crate's instructions to berth's: the checks and splitting
//! parse-dockerfile leaves to its caller (see the parent module's docs).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::Duration;

use parse_dockerfile::{
    ArgInstruction, Command, Flag, FromInstruction, HealthcheckArguments, HealthcheckInstruction,
    Instruction, JsonOrStringArray, RunInstruction, Source, UnescapedString,
};

use super::line::{self, parse_duration};
use super::{ArgDecl, Form, Healthcheck, Instr, ParseError, Stage, Step};

/// What a flag takes, checked the way BuildKit's `BFlags` checks it.
#[derive(Clone, Copy)]
enum FlagKind {
    /// `--name=value`; an empty value is the same as no flag, as in docker.
    Str,
    /// `--name`, `--name=true` or `--name=false`.
    Bool,
    /// A docker flag berth does not implement: refused by name rather than
    /// silently dropped, since each changes what the step does.
    Unsupported,
}

/// The flags of one instruction, checked against what it takes.
fn take_flags(
    keyword: &str,
    flags: &[Flag<'_>],
    takes: &[(&'static str, FlagKind)],
) -> Result<HashMap<&'static str, String>, String> {
    let mut values = HashMap::new();
    let mut seen = HashSet::new();
    for flag in flags {
        let name = flag.name.value.as_ref();
        let Some(&(known, kind)) = takes.iter().find(|(n, _)| *n == name) else {
            return Err(format!("unknown flag for {keyword}: --{name}"));
        };
        if !seen.insert(known) {
            return Err(format!("duplicate flag for {keyword}: --{name}"));
        }
        let value = flag.value.as_ref().map(|v| v.value.as_ref());
        match (kind, value) {
            (FlagKind::Unsupported, _) => {
                return Err(format!(
                    "{keyword} --{name} is not supported by berth build"
                ))
            }
            (FlagKind::Str, None) | (FlagKind::Bool, Some("")) => {
                return Err(format!("missing a value on flag --{name}"));
            }
            (FlagKind::Str, Some("")) => {}
            (FlagKind::Str, Some(v)) => {
                values.insert(known, v.to_owned());
            }
            (FlagKind::Bool, None) => {
                values.insert(known, "true".to_owned());
            }
            (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                b @ ("true" | "false") => {
                    values.insert(known, b.to_owned());
                }
                _ => {
                    return Err(format!(
                        "expecting boolean value for flag --{name}, not: {v}"
                    ))
                }
            },
        }
    }
    Ok(values)
}

/// Docker parses `--flags` at the start of every instruction and refuses
/// those an instruction does not take; the crate only looks for flags where
/// some exist, so the others get this check.
fn no_flags(keyword: &str, raw: &str) -> Result<(), String> {
    match raw.split_whitespace().next() {
        Some(word) if word.starts_with("--") && word != "--" => {
            let name = word[2..].split('=').next().unwrap_or_default();
            Err(format!("unknown flag for {keyword}: --{name}"))
        }
        _ => Ok(()),
    }
}

/// The crate's decoded (JSON) or continuation-joined words, owned.
fn strings(values: &[UnescapedString<'_>]) -> Vec<String> {
    values.iter().map(|v| v.value.to_string()).collect()
}

/// Turns the crate's instructions, fed in source order, into stages: the
/// conversion keeps the state docker's checks need (the stage names seen).
pub(super) struct Builder<'t> {
    text: &'t str,
    escape: char,
    /// Byte offset of each line's start.
    line_starts: Vec<usize>,
    global_args: Vec<ArgDecl>,
    stages: Vec<Stage>,
    names: HashSet<String>,
}

impl<'t> Builder<'t> {
    /// A builder for `text`, whose escape character is `escape`.
    pub(super) fn new(text: &'t str, escape: char) -> Self {
        Builder {
            text,
            escape,
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            global_args: Vec::new(),
            stages: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// The global ARGs and the stages.
    pub(super) fn finish(self) -> (Vec<ArgDecl>, Vec<Stage>) {
        (self.global_args, self.stages)
    }

    /// The 1-based line of a byte offset.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// Raw source text as one trimmed logical line.
    fn join(&self, raw: &str) -> String {
        line::join_continuations(raw, self.escape).trim().to_owned()
    }

    /// Adds one instruction, whose source runs from its keyword to the next
    /// instruction's (`span`, trailing comments included).
    pub(super) fn add(
        &mut self,
        instruction: &Instruction<'_>,
        span: Range<usize>,
    ) -> Result<(), ParseError> {
        let line = self.line_of(span.start);
        let at = |message: String| ParseError { line, message };
        match instruction {
            Instruction::From(from) => {
                let stage = self.from(from, line).map_err(at)?;
                self.stages.push(stage);
                return Ok(());
            }
            Instruction::Arg(arg) if self.stages.is_empty() => {
                let args = self.args(arg).map_err(at)?;
                self.global_args.extend(args);
                return Ok(());
            }
            _ => {}
        }
        let (instr, heredoc) = self.convert(instruction).map_err(at)?;
        let text = match heredoc {
            Some(body) => format!(
                "{}\n{}",
                self.join(&self.text[span.start..body.start]),
                self.text[body].trim_end_matches('\r')
            ),
            None => self.join(&self.text[span]),
        };
        // The crate already refuses this; kept so a step never lands nowhere.
        let stage = self
            .stages
            .last_mut()
            .ok_or_else(|| at("only ARG may come before the first FROM".into()))?;
        stage.steps.push(Step { line, text, instr });
        Ok(())
    }

    /// A FROM: a new stage, its name checked and unique.
    fn from(&mut self, from: &FromInstruction<'_>, line: usize) -> Result<Stage, String> {
        let mut flags = take_flags("FROM", &from.options, &[("platform", FlagKind::Str)])?;
        let name = match &from.as_ {
            Some((_, name)) => {
                let lower = name.value.to_lowercase();
                // BuildKit's rule, so `--from=` and FROM can tell names from
                // image references.
                let valid = lower.starts_with(|c: char| c.is_ascii_lowercase())
                    && lower
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
                if !valid {
                    return Err(format!(
                        "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                        name.value
                    ));
                }
                if !self.names.insert(lower.clone()) {
                    return Err(format!("duplicate stage name {lower:?}"));
                }
                Some(lower)
            }
            None => None,
        };
        Ok(Stage {
            line,
            base: from.image.value.to_string(),
            name,
            platform: flags.remove("platform"),
            steps: Vec::new(),
        })
    }

    /// ARG's words: `name` or `name=default` (BuildKit's `parseArg`).
    fn args(&self, arg: &ArgInstruction<'_>) -> Result<Vec<ArgDecl>, String> {
        no_flags("ARG", &arg.arguments.value)?;
        line::split_words(&arg.arguments.value, self.escape)
            .into_iter()
            .map(|word| match word.split_once('=') {
                Some(("", _)) => Err("ARG names can not be blank".to_owned()),
                Some((name, default)) => Ok(ArgDecl {
                    name: name.to_owned(),
                    default: Some(default.to_owned()),
                }),
                None => Ok(ArgDecl {
                    name: word,
                    default: None,
                }),
            })
            .collect()
    }

    /// A shell-form command: the crate's raw text, continuations joined.
    fn shell(&self, keyword: &str, raw: &str) -> Result<Form, String> {
        let cmd = self.join(raw);
        no_flags(keyword, &cmd)?;
        if cmd.is_empty() {
            return Err(format!("{keyword} requires at least one argument"));
        }
        Ok(Form::Shell(cmd))
    }

    /// A RUN, CMD or ENTRYPOINT command in either form.
    fn form(&self, keyword: &str, command: &Command<'_>) -> Result<Form, String> {
        match command {
            Command::Exec(array) => Ok(Form::Exec(strings(&array.value))),
            Command::Shell(raw) => self.shell(keyword, raw.value),
            _ => Err(format!("unsupported {keyword} form")),
        }
    }

    /// One non-FROM instruction, with the source range of a heredoc body
    /// (through its closing delimiter) when it has one.
    fn convert(
        &self,
        instruction: &Instruction<'_>,
    ) -> Result<(Instr, Option<Range<usize>>), String> {
        let instr = match instruction {
            Instruction::Run(run) => return self.run(run),
            Instruction::Copy(copy) => {
                let mut flags = take_flags(
                    "COPY",
                    &copy.options,
                    &[
                        ("from", FlagKind::Str),
                        ("chown", FlagKind::Str),
                        ("chmod", FlagKind::Str),
                        ("link", FlagKind::Bool),
                        ("parents", FlagKind::Unsupported),
                        ("exclude", FlagKind::Unsupported),
                    ],
                )?;
                let (sources, dest) = sources_and_dest("COPY", &copy.src, &copy.dest)?;
                Instr::Copy {
                    sources,
                    dest,
                    from: flags.remove("from"),
                    chown: flags.remove("chown"),
                    chmod: flags.remove("chmod"),
                }
            }
            Instruction::Add(add) => {
                let mut flags = take_flags(
                    "ADD",
                    &add.options,
                    &[
                        ("chown", FlagKind::Str),
                        ("chmod", FlagKind::Str),
                        ("link", FlagKind::Bool),
                        ("checksum", FlagKind::Str),
                        ("keep-git-dir", FlagKind::Bool),
                        ("exclude", FlagKind::Unsupported),
                        ("unpack", FlagKind::Unsupported),
                    ],
                )?;
                let (sources, dest) = sources_and_dest("ADD", &add.src, &add.dest)?;
                Instr::Add {
                    sources,
                    dest,
                    chown: flags.remove("chown"),
                    chmod: flags.remove("chmod"),
                }
            }
            Instruction::Env(env) => {
                no_flags("ENV", &env.arguments.value)?;
                Instr::Env(line::name_values("ENV", &env.arguments.value, self.escape)?)
            }
            Instruction::Label(label) => {
                no_flags("LABEL", &label.arguments.value)?;
                Instr::Label(line::name_values(
                    "LABEL",
                    &label.arguments.value,
                    self.escape,
                )?)
            }
            Instruction::Arg(arg) => Instr::Arg(self.args(arg)?),
            Instruction::Workdir(x) => Instr::Workdir(single("WORKDIR", &x.arguments)?),
            Instruction::User(x) => Instr::User(single("USER", &x.arguments)?),
            Instruction::Stopsignal(x) => Instr::StopSignal(single("STOPSIGNAL", &x.arguments)?),
            Instruction::Maintainer(x) => Instr::Maintainer(single("MAINTAINER", &x.name)?),
            Instruction::Expose(expose) => {
                let ports = strings(&expose.arguments);
                no_flags("EXPOSE", ports.first().map_or("", String::as_str))?;
                Instr::Expose(ports)
            }
            Instruction::Volume(volume) => {
                let paths = match &volume.arguments {
                    JsonOrStringArray::Json(array) => strings(&array.value),
                    JsonOrStringArray::String(words) => {
                        let words = strings(words);
                        no_flags("VOLUME", words.first().map_or("", String::as_str))?;
                        words
                    }
                };
                if paths.is_empty() {
                    return Err("VOLUME requires at least one argument".into());
                }
                if paths.iter().any(|p| p.trim().is_empty()) {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                Instr::Volume(paths)
            }
            Instruction::Cmd(cmd) => Instr::Cmd(self.form("CMD", &cmd.arguments)?),
            Instruction::Entrypoint(ep) => {
                Instr::Entrypoint(self.form("ENTRYPOINT", &ep.arguments)?)
            }
            Instruction::Shell(shell) => Instr::Shell(strings(&shell.arguments)),
            Instruction::Healthcheck(hc) => Instr::Healthcheck(self.healthcheck(hc)?),
            Instruction::Onbuild(_) => return Err("ONBUILD is not supported by berth build".into()),
            Instruction::From(_) => return Err("internal: FROM handled as a step".into()),
            _ => return Err("unsupported instruction".into()),
        };
        Ok((instr, None))
    }

    /// RUN, the one instruction whose heredocs berth runs.
    fn run(&self, run: &RunInstruction<'_>) -> Result<(Instr, Option<Range<usize>>), String> {
        let mut flags = take_flags(
            "RUN",
            &run.options,
            &[
                ("network", FlagKind::Str),
                ("mount", FlagKind::Unsupported),
                ("security", FlagKind::Unsupported),
                ("device", FlagKind::Unsupported),
            ],
        )?;
        let network = flags.remove("network");
        let raw = match &run.arguments {
            Command::Shell(raw) => raw,
            // Exec form: the crate never reads heredocs there, nor does docker.
            command => {
                return Ok((
                    Instr::Run {
                        cmd: self.form("RUN", command)?,
                        network,
                    },
                    None,
                ))
            }
        };
        let Some(heredoc) = run.here_docs.first() else {
            let cmd = self.shell("RUN", raw.value)?;
            if let Form::Shell(text) = &cmd {
                // The crate only knows `RUN <<EOF...`: anywhere else the body
                // would be read as instructions, so refuse it here first.
                if let Some(word) = line::find_heredoc(text, self.escape) {
                    return Err(format!(
                        "heredocs are not supported here ({word}): berth build only runs a heredoc that is the \
                         whole command (RUN <<EOF)"
                    ));
                }
            }
            return Ok((Instr::Run { cmd, network }, None));
        };
        // The crate takes one heredoc, right after the flags; `raw` is what
        // follows its opener on the first line.
        let rest = self.join(raw.value);
        if run.here_docs.len() > 1 || line::find_heredoc(&rest, self.escape).is_some() {
            return Err("heredocs are not supported: only one heredoc per RUN".into());
        }
        // The body runs through the closing delimiter's line.
        let body_end = self.text[heredoc.span.end..]
            .find('\n')
            .map_or(self.text.len(), |i| heredoc.span.end + i);
        let body = heredoc.span.start..body_end;
        let cmd = if rest.is_empty() {
            // `RUN <<EOF`: docker runs the body with the shell (a `#!` body
            // would be written to a file and run, which berth does not do).
            if heredoc.value.starts_with("#!") {
                return Err(
                    "heredocs are not supported with a #! line: COPY the script and RUN it".into(),
                );
            }
            Form::Shell(heredoc.value.to_string())
        } else {
            // `RUN <<EOF python3`: the shell itself feeds the heredoc to the
            // command, as docker has it do; give it the opener and the raw
            // body (so `<<-` and quoted delimiters keep their meaning).
            let flags_end = run
                .options
                .iter()
                .map(|f| f.span().end)
                .fold(run.run.span.end, usize::max);
            let opener = self.text[flags_end..raw.span.start]
                .find("<<")
                .map(|i| flags_end + i)
                .ok_or("internal: heredoc opener not found")?;
            let first = self.join(&self.text[opener..raw.span.end]);
            Form::Shell(format!(
                "{first}\n{}",
                self.text[body.clone()].trim_end_matches('\r')
            ))
        };
        Ok((Instr::Run { cmd, network }, Some(body)))
    }

    /// HEALTHCHECK, checked and converted as BuildKit's `parseHealthcheck`.
    fn healthcheck(&self, hc: &HealthcheckInstruction<'_>) -> Result<Option<Healthcheck>, String> {
        let test = match &hc.arguments {
            HealthcheckArguments::None { .. } => {
                if let Some(flag) = hc.options.first() {
                    return Err(format!(
                        "HEALTHCHECK NONE takes no flags (--{})",
                        flag.name.value
                    ));
                }
                return Ok(None);
            }
            HealthcheckArguments::Cmd {
                arguments: Command::Exec(array),
                ..
            } => std::iter::once("CMD".to_owned())
                .chain(strings(&array.value))
                .collect(),
            HealthcheckArguments::Cmd {
                arguments: Command::Shell(raw),
                ..
            } => {
                let cmd = self.join(raw.value);
                if cmd.is_empty() {
                    return Err("Missing command after HEALTHCHECK CMD".into());
                }
                vec!["CMD-SHELL".to_owned(), cmd]
            }
            _ => return Err("unsupported HEALTHCHECK form".into()),
        };
        let mut flags = take_flags(
            "HEALTHCHECK",
            &hc.options,
            &[
                ("interval", FlagKind::Str),
                ("timeout", FlagKind::Str),
                ("start-period", FlagKind::Str),
                ("start-interval", FlagKind::Str),
                ("retries", FlagKind::Str),
            ],
        )?;
        let mut duration = |name: &str| -> Result<Option<Duration>, String> {
            let Some(raw) = flags.remove(name) else {
                return Ok(None);
            };
            let d = parse_duration(&raw).map_err(|e| format!("--{name}: {e}"))?;
            if d.is_zero() {
                // 0 means "inherit" to docker, as an absent flag does.
                Ok(None)
            } else if d < Duration::from_millis(1) {
                Err(format!("Interval \"{name}\" cannot be less than 1ms"))
            } else {
                Ok(Some(d))
            }
        };
        let (interval, timeout) = (duration("interval")?, duration("timeout")?);
        let (start_period, start_interval) =
            (duration("start-period")?, duration("start-interval")?);
        let retries = match flags.remove("retries") {
            None => None,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n < 0 => return Err(format!("--retries cannot be negative ({n})")),
                Ok(0) => None,
                // Docker reads a 32-bit signed number.
                Ok(n) => Some(
                    i32::try_from(n)
                        .ok()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| format!("--retries: value out of range: {raw}"))?,
                ),
                Err(_) => return Err(format!("--retries: invalid number {raw:?}")),
            },
        };
        Ok(Some(Healthcheck {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        }))
    }
}

/// A whole-line argument (WORKDIR, USER...), raw.
fn single(keyword: &str, value: &UnescapedString<'_>) -> Result<String, String> {
    no_flags(keyword, &value.value)?;
    Ok(value.value.to_string())
}

/// COPY and ADD paths. The crate parses heredoc sources, but they are file
/// contents, which the executor's COPY (paths in the build context) cannot
/// carry, so they are refused.
fn sources_and_dest(
    keyword: &str,
    src: &[Source<'_>],
    dest: &UnescapedString<'_>,
) -> Result<(Vec<String>, String), String> {
    let sources = src
        .iter()
        .map(|s| match s {
            Source::Path(path) => Ok(path.value.to_string()),
            Source::HereDoc(_) => Err(format!(
                "heredocs are not supported in {keyword} by berth build"
            )),
            _ => Err(format!("unsupported {keyword} source")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The crate does not look for a heredoc in the destination; docker
    // refuses one, and its body must not be read as instructions.
    if line::is_heredoc_word(&dest.value) {
        return Err(format!(
            "{keyword} cannot accept a heredoc as a destination"
        ));
    }
    Ok((sources, dest.value.to_string()))
}
