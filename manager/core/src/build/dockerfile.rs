//! The Dockerfile, parsed into typed instructions for the build executor.
//!
//! The syntax (parser directives, line continuations with either escape
//! character, comments, keywords in any case, JSON versus shell forms,
//! `--flags`, `RUN`/`COPY` heredocs) is parse-dockerfile's. This module turns
//! its tree into berth's types and adds what the crate leaves to its caller,
//! each marked where it happens:
//!
//! - shell-form commands come back as raw source text, so continuations are
//!   joined here (`line.rs`);
//! - ENV, LABEL and ARG come back as one string, split here as BuildKit does
//!   (`line.rs`);
//! - flags are only collected by the crate: which flags each instruction
//!   takes, and their values, are checked here (`convert.rs`, which also
//!   builds the steps);
//! - the crate only sees a heredoc at the start of a `RUN` command, so other
//!   heredoc openers are refused here before their bodies are misread;
//! - the crate exposes parser directives only from a whole-file parse, and
//!   does not check duplicate or malformed stage names when iterating;
//! - it has no variable expander at all: [`expand`] and [`expand_words`]
//!   (in `lex.rs`) implement docker's.
//!
//! Nothing is expanded here: the executor expands words at run time with the
//! build's ARG and ENV values, so every word stays as written (quotes and
//! escapes included) for [`expand`] to process.

mod convert;
mod lex;
mod line;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::time::Duration;

use parse_dockerfile::Instruction;

pub use lex::{expand, expand_words};
pub use line::parse_duration;

/// A Dockerfile that cannot be built, with the (1-based) line to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// ARGs before the first FROM: usable in FROM lines only (and in a stage
    /// after a bare `ARG name` redeclares them), as in docker.
    pub global_args: Vec<ArgDecl>,
    pub stages: Vec<Stage>,
    /// The escape character, `\` or `` ` `` (`# escape=`): the executor
    /// passes it to [`expand`].
    pub escape: char,
    /// The `# syntax=` directive. berth has no frontends to switch to, so it
    /// is ignored; it is kept so the caller can say so.
    pub syntax: Option<String>,
}

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// The line of the FROM.
    pub line: usize,
    /// The image or earlier stage to start from, as written: it may hold
    /// `$VARS` of the global ARGs, for the executor to expand.
    pub base: String,
    /// `AS name`, lowercased (stage names are case-insensitive in docker).
    pub name: Option<String>,
    /// `--platform=`, raw (it may be `$BUILDPLATFORM`).
    pub platform: Option<String>,
    pub steps: Vec<Step>,
}

/// One instruction of a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The line the instruction starts on.
    pub line: usize,
    /// The instruction as one line, continuations joined and comment lines
    /// dropped, for display and cache keys. A heredoc's body (and its closing
    /// delimiter) follows on the next lines, since it is part of the command.
    pub text: String,
    pub instr: Instr,
}

/// An ARG: a name, with a default value or none.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgDecl {
    pub name: String,
    /// Raw and unexpanded (quotes included).
    pub default: Option<String>,
}

/// A command in shell form or exec form.
#[derive(Debug, Clone, PartialEq)]
pub enum Form {
    /// Raw shell text (one line, continuations joined; for a heredoc, the
    /// script), run with the stage's SHELL.
    Shell(String),
    /// The JSON array, decoded, run as is.
    Exec(Vec<String>),
}

/// A build instruction. Words are raw (quoted, unexpanded) unless said
/// otherwise; the executor runs [`expand`] on the ones docker expands.
#[derive(Debug, Clone, PartialEq)]
pub enum Instr {
    Run {
        cmd: Form,
        /// `--network=` (`default`, `none` or `host` in docker; unchecked).
        network: Option<String>,
    },
    /// `COPY [--from=] [--chown=] [--chmod=] <src>... <dest>`. `--link` is
    /// accepted and dropped: it changes how docker stores the layer, not
    /// what it holds. `from` is raw; docker matches stage names
    /// case-insensitively.
    Copy {
        sources: Vec<String>,
        dest: String,
        from: Option<String>,
        chown: Option<String>,
        chmod: Option<String>,
    },
    /// `ADD`. `--link`, `--checksum` and `--keep-git-dir` are accepted and
    /// dropped: the last two only concern URL and git sources, which the
    /// executor refuses. Sources are not checked for URLs here.
    Add {
        sources: Vec<String>,
        dest: String,
        chown: Option<String>,
        chmod: Option<String>,
    },
    /// Name-value pairs, both raw (docker expands both): from
    /// `ENV k=v k2="v 2"` or the legacy `ENV k v w` (one pair, the value being
    /// the rest of the line).
    Env(Vec<(String, String)>),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    User(String),
    StopSignal(String),
    /// Deprecated in docker, still accepted (it sets the image's author).
    Maintainer(String),
    /// As [`Instr::Env`], keys raw too (`LABEL "com.x"="y"` is common).
    Label(Vec<(String, String)>),
    /// Raw words (`80`, `53/udp`, `$PORT`): expand with [`expand_words`].
    Expose(Vec<String>),
    /// One path per element, from the JSON or the word form: expand each
    /// with [`expand`].
    Volume(Vec<String>),
    Entrypoint(Form),
    Cmd(Form),
    /// The JSON form only, as docker requires.
    Shell(Vec<String>),
    /// `None` for `HEALTHCHECK NONE` (which disables the base image's).
    Healthcheck(Option<Healthcheck>),
}

/// A HEALTHCHECK, as docker stores it in the image config. Durations and
/// retries are `None` when not given (or given as 0, which docker also takes
/// as "inherit the default").
#[derive(Debug, Clone, PartialEq)]
pub struct Healthcheck {
    /// `["CMD", args...]` (exec form) or `["CMD-SHELL", "command"]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

/// Parses a Dockerfile. Nothing is expanded (see the module docs); a leading
/// UTF-8 byte order mark is ignored, as docker does.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (escape, syntax) = directives(text)?;

    // Collect what the crate parses up to its first error, then convert in
    // order: a problem this module finds in an earlier instruction (say, a
    // heredoc the crate does not know, whose body it then reads as
    // instructions) is the one to report.
    let mut instructions = Vec::new();
    let mut crate_error = None;
    for item in parse_dockerfile::parse_iter(text).map_err(|e| from_crate(&e, text))? {
        match item {
            Ok(instruction) => instructions.push(instruction),
            Err(e) => {
                crate_error = Some(e);
                break;
            }
        }
    }

    let mut builder = convert::Builder::new(text, escape);
    let starts = instructions
        .iter()
        .map(keyword_span)
        .map(|s| s.map(|s| s.start))
        .collect::<Vec<_>>();
    for (i, instruction) in instructions.iter().enumerate() {
        let prev_end = i.checked_sub(1).and_then(|p| starts[p]).unwrap_or(0);
        let Some(start) = starts[i] else {
            // A variant from a newer crate this module does not know.
            return Err(ParseError {
                line: builder.line_of(prev_end) + 1,
                message: "unsupported instruction".into(),
            });
        };
        let end = starts.get(i + 1).copied().flatten().unwrap_or(text.len());
        builder.add(instruction, start..end)?;
    }
    if let Some(e) = crate_error {
        return Err(from_crate(&e, text));
    }
    let (global_args, stages) = builder.finish();
    if stages.is_empty() {
        return Err(ParseError {
            line: text.lines().count().max(1),
            message: "no FROM instruction".into(),
        });
    }
    Ok(Dockerfile {
        global_args,
        stages,
        escape,
        syntax,
    })
}

/// The `escape` and `syntax` parser directives. The crate only hands them out
/// from a whole-file `parse`, which fails on any later error (and on the
/// heredocs it does not know), so the leading comment block, where
/// directives live, is parsed alone with a stand-in FROM; its lines and
/// errors are those of the real file.
fn directives(text: &str) -> Result<(char, Option<String>), ParseError> {
    let header: usize = text
        .split_inclusive('\n')
        .take_while(|l| l.starts_with('#'))
        .map(str::len)
        .sum();
    let mut probe = text[..header].to_owned();
    if !probe.is_empty() && !probe.ends_with('\n') {
        probe.push('\n');
    }
    probe.push_str("FROM scratch\n");
    let parsed = parse_dockerfile::parse(&probe).map_err(|e| from_crate(&e, text))?;
    let d = &parsed.parser_directives;
    Ok((
        d.escape.as_ref().map_or('\\', |e| e.value.value),
        d.syntax.as_ref().map(|s| s.value.value.to_owned()),
    ))
}

/// A crate error, with docker's wording where berth's callers expect it.
fn from_crate(e: &parse_dockerfile::Error, text: &str) -> ParseError {
    let message = format!("{e:#}");
    if e.line() == 0 {
        // Only "expected at least one FROM instruction" has no position.
        return ParseError {
            line: text.lines().count().max(1),
            message: "no FROM instruction".into(),
        };
    }
    let line = e.line();
    let message = if let Some(word) = message
        .strip_prefix("unknown instruction '")
        .and_then(|m| m.strip_suffix('\''))
    {
        format!("unknown instruction: {}", word.to_uppercase())
    } else if message == "expected FROM" {
        let keyword = text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("");
        format!(
            "{} before the first FROM: only ARG may come before FROM",
            keyword.to_uppercase()
        )
    } else if message == "expected JSON array" || message == "invalid JSON" {
        // Only SHELL requires the JSON form in the crate; elsewhere bad JSON
        // is shell form, as in docker.
        format!("SHELL requires the JSON form, like SHELL [\"/bin/sh\", \"-c\"] ({message})")
    } else {
        message
    };
    ParseError { line, message }
}

/// Where an instruction's keyword is (the crate's own accessor is private).
fn keyword_span(i: &Instruction<'_>) -> Option<Range<usize>> {
    Some(
        match i {
            Instruction::Add(x) => &x.add,
            Instruction::Arg(x) => &x.arg,
            Instruction::Cmd(x) => &x.cmd,
            Instruction::Copy(x) => &x.copy,
            Instruction::Entrypoint(x) => &x.entrypoint,
            Instruction::Env(x) => &x.env,
            Instruction::Expose(x) => &x.expose,
            Instruction::From(x) => &x.from,
            Instruction::Healthcheck(x) => &x.healthcheck,
            Instruction::Label(x) => &x.label,
            Instruction::Maintainer(x) => &x.maintainer,
            Instruction::Onbuild(x) => &x.onbuild,
            Instruction::Run(x) => &x.run,
            Instruction::Shell(x) => &x.shell,
            Instruction::Stopsignal(x) => &x.stopsignal,
            Instruction::User(x) => &x.user,
            Instruction::Volume(x) => &x.volume,
            Instruction::Workdir(x) => &x.workdir,
            _ => return None,
        }
        .span
        .clone(),
    )
}
