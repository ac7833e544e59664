use std::time::Duration;

use super::*;

fn ok(text: &str) -> Dockerfile {
    match parse(text) {
        Ok(df) => df,
        Err(e) => panic!("{e}\n---\n{text}"),
    }
}

/// The instructions of the only stage.
fn instrs(text: &str) -> Vec<Instr> {
    let df = ok(text);
    assert_eq!(df.stages.len(), 1);
    df.stages[0].steps.iter().map(|s| s.instr.clone()).collect()
}

fn one(text: &str) -> Instr {
    let mut all = instrs(&format!("FROM scratch\n{text}"));
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn err(text: &str) -> (usize, String) {
    match parse(text) {
        Ok(df) => panic!("parsed: {df:?}"),
        Err(e) => (e.line, e.message),
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(k, v)| (s(k), s(v))).collect()
}

fn shell(v: &str) -> Form {
    Form::Shell(s(v))
}

fn exec(v: &[&str]) -> Form {
    Form::Exec(v.iter().map(|x| s(x)).collect())
}

#[test]
fn run_forms_and_network() {
    assert_eq!(
        one("RUN echo hi"),
        Instr::Run {
            cmd: shell("echo hi"),
            network: None
        }
    );
    assert_eq!(
        one(r#"RUN ["/bin/echo", "a b"]"#),
        Instr::Run {
            cmd: exec(&["/bin/echo", "a b"]),
            network: None
        }
    );
    assert_eq!(
        one("RUN --network=none make"),
        Instr::Run {
            cmd: shell("make"),
            network: Some(s("none"))
        }
    );
    // Not JSON after all: shell form, as in docker.
    assert_eq!(
        one("RUN [ -f x ] && y"),
        Instr::Run {
            cmd: shell("[ -f x ] && y"),
            network: None
        }
    );
    assert_eq!(
        one(r#"RUN ["a", "#),
        Instr::Run {
            cmd: shell(r#"["a","#),
            network: None
        }
    );
}

#[test]
fn copy_and_add() {
    assert_eq!(
        one("COPY --from=Build --chown=app:app --chmod=0755 --link a b /dst/"),
        Instr::Copy {
            sources: vec![s("a"), s("b")],
            dest: s("/dst/"),
            from: Some(s("Build")),
            chown: Some(s("app:app")),
            chmod: Some(s("0755")),
        }
    );
    assert_eq!(
        one(r#"COPY ["my file", "$HOME/x"]"#),
        Instr::Copy {
            sources: vec![s("my file")],
            dest: s("$HOME/x"),
            from: None,
            chown: None,
            chmod: None
        }
    );
    assert_eq!(
        one("ADD --chown=1:2 --checksum=sha256:00 --keep-git-dir https://x/y.tgz /opt/"),
        Instr::Add {
            sources: vec![s("https://x/y.tgz")],
            dest: s("/opt/"),
            chown: Some(s("1:2")),
            chmod: None
        }
    );
    assert_eq!(
        one("add --chmod=644 a.tar /"),
        Instr::Add {
            sources: vec![s("a.tar")],
            dest: s("/"),
            chown: None,
            chmod: Some(s("644"))
        }
    );
    // An empty value is no flag, as in docker.
    assert_eq!(
        one("COPY --chown= a /"),
        Instr::Copy {
            sources: vec![s("a")],
            dest: s("/"),
            from: None,
            chown: None,
            chmod: None
        }
    );
}

#[test]
fn env_both_forms() {
    assert_eq!(
        one(r#"ENV A=1 B="two words" C='$lit' D=a\ b E="""#),
        Instr::Env(pairs(&[
            ("A", "1"),
            ("B", "\"two words\""),
            ("C", "'$lit'"),
            ("D", r"a\ b"),
            ("E", "\"\"")
        ]))
    );
    assert_eq!(
        one("ENV PATH /usr/bin:$PATH and more"),
        Instr::Env(pairs(&[("PATH", "/usr/bin:$PATH and more")]))
    );
    assert_eq!(one("ENV A=${B:-x}"), Instr::Env(pairs(&[("A", "${B:-x}")])));
}

#[test]
fn raw_values_expand_as_docker_does() {
    let Instr::Env(env) = one(r#"ENV A="$X y" B='$X' C=\$X D=${X}z"#) else {
        panic!()
    };
    let lookup = |k: &str| (k == "X").then(|| s("x"));
    let got: Vec<String> = env
        .iter()
        .map(|(_, v)| expand(v, &lookup, '\\').unwrap())
        .collect();
    assert_eq!(got, ["x y", "$X", "$X", "xz"]);
}

#[test]
fn other_instructions() {
    assert_eq!(one("WORKDIR /app dir"), Instr::Workdir(s("/app dir")));
    assert_eq!(one("USER app:app"), Instr::User(s("app:app")));
    assert_eq!(one("STOPSIGNAL SIGTERM"), Instr::StopSignal(s("SIGTERM")));
    assert_eq!(
        one("MAINTAINER Jane <j@x>"),
        Instr::Maintainer(s("Jane <j@x>"))
    );
    assert_eq!(
        one(r#"LABEL "com.x.v"="1.0" b=2 desc="a b""#),
        Instr::Label(pairs(&[
            ("\"com.x.v\"", "\"1.0\""),
            ("b", "2"),
            ("desc", "\"a b\"")
        ]))
    );
    assert_eq!(
        one("LABEL legacy some value"),
        Instr::Label(pairs(&[("legacy", "some value")]))
    );
    assert_eq!(
        one("EXPOSE 80 443/tcp $P"),
        Instr::Expose(vec![s("80"), s("443/tcp"), s("$P")])
    );
    assert_eq!(
        one(r#"VOLUME ["/a", "/b c"]"#),
        Instr::Volume(vec![s("/a"), s("/b c")])
    );
    assert_eq!(one("VOLUME /a /b"), Instr::Volume(vec![s("/a"), s("/b")]));
    assert_eq!(
        one(r#"ENTRYPOINT ["/bin/app", "-v"]"#),
        Instr::Entrypoint(exec(&["/bin/app", "-v"]))
    );
    assert_eq!(
        one("ENTRYPOINT exec app"),
        Instr::Entrypoint(shell("exec app"))
    );
    assert_eq!(one(r#"CMD ["serve"]"#), Instr::Cmd(exec(&["serve"])));
    assert_eq!(one("CMD []"), Instr::Cmd(exec(&[])));
    assert_eq!(one("CMD echo $HOME"), Instr::Cmd(shell("echo $HOME")));
    assert_eq!(
        one(r#"SHELL ["/bin/bash", "-o", "pipefail", "-c"]"#),
        Instr::Shell(vec![s("/bin/bash"), s("-o"), s("pipefail"), s("-c")])
    );
    assert_eq!(
        one("ARG A B=2 C=\"x y\""),
        Instr::Arg(vec![
            ArgDecl {
                name: s("A"),
                default: None
            },
            ArgDecl {
                name: s("B"),
                default: Some(s("2"))
            },
            ArgDecl {
                name: s("C"),
                default: Some(s("\"x y\""))
            },
        ])
    );
}

#[test]
fn healthchecks() {
    assert_eq!(
        one("HEALTHCHECK --interval=30s --timeout=1m30s --start-period=500ms --start-interval=2s --retries=3 \
             CMD curl -f http://localhost/ || exit 1"),
        Instr::Healthcheck(Some(Healthcheck {
            test: vec![s("CMD-SHELL"), s("curl -f http://localhost/ || exit 1")],
            interval: Some(Duration::from_secs(30)),
            timeout: Some(Duration::from_secs(90)),
            start_period: Some(Duration::from_millis(500)),
            start_interval: Some(Duration::from_secs(2)),
            retries: Some(3),
        }))
    );
    assert_eq!(
        one(r#"HEALTHCHECK --interval=0s --retries=0 CMD ["/bin/check", "-q"]"#),
        Instr::Healthcheck(Some(Healthcheck {
            test: vec![s("CMD"), s("/bin/check"), s("-q")],
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        }))
    );
    assert_eq!(one("HEALTHCHECK NONE"), Instr::Healthcheck(None));
    assert_eq!(one("healthcheck none"), Instr::Healthcheck(None));
}

#[test]
fn continuations_with_backslash() {
    let df = ok("FROM alpine\n\
                 RUN apk add \\\n    curl \\\n    # a comment in the middle\n\n    git\n\
                 ENV A=1 \\\n    B=2\n\
                 CMD [\"a\", \\\n     \"b\"]\n");
    let steps = &df.stages[0].steps;
    assert_eq!(
        steps[0].instr,
        Instr::Run {
            cmd: shell("apk add     curl     git"),
            network: None
        }
    );
    assert_eq!(steps[0].text, "RUN apk add     curl     git");
    assert_eq!(steps[0].line, 2);
    assert_eq!(steps[1].instr, Instr::Env(pairs(&[("A", "1"), ("B", "2")])));
    assert_eq!(steps[1].text, "ENV A=1     B=2");
    assert_eq!(steps[1].line, 7);
    assert_eq!(steps[2].instr, Instr::Cmd(exec(&["a", "b"])));
    assert_eq!(steps[2].text, "CMD [\"a\",      \"b\"]");
    assert_eq!(steps[2].line, 9);
}

#[test]
fn continuations_with_backtick() {
    let df = ok("# escape=`\n\
                 FROM mcr.microsoft.com/windows\n\
                 COPY C:\\src\\app `\n     C:\\dst\\\n\
                 RUN echo a `\n  # note\n  b\n");
    assert_eq!(df.escape, '`');
    let steps = &df.stages[0].steps;
    assert_eq!(
        steps[0].instr,
        Instr::Copy {
            sources: vec![s(r"C:\src\app")],
            dest: s(r"C:\dst\"),
            from: None,
            chown: None,
            chmod: None
        }
    );
    assert_eq!(steps[0].text, r"COPY C:\src\app      C:\dst\");
    assert_eq!(
        steps[1].instr,
        Instr::Run {
            cmd: shell("echo a   b"),
            network: None
        }
    );
    assert_eq!(steps[1].line, 5);
}

#[test]
fn comments_and_blank_lines_between_instructions() {
    let df = ok("# just a comment\n\nFROM a\n  # indented comment\n\n   RUN x   \n# trailing\n");
    assert_eq!(df.syntax, None);
    assert_eq!(df.escape, '\\');
    let step = &df.stages[0].steps[0];
    assert_eq!((step.line, step.text.as_str()), (6, "RUN x"));
}

#[test]
fn directives() {
    let df = ok("# syntax=docker/dockerfile:1.7\n# escape=\\\nFROM a\n");
    assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1.7"));
    assert_eq!(df.escape, '\\');
    let df = ok("# Escape = `\n# SYNTAX=x\nFROM a\n");
    assert_eq!((df.escape, df.syntax.as_deref()), ('`', Some("x")));
    // After a blank line (or any instruction) it is only a comment.
    let df = ok("\n# escape=`\nFROM a\n");
    assert_eq!(df.escape, '\\');
    assert_eq!(err("# escape=x\nFROM a\n").0, 1);
    // Only a directive header, no newline at its end.
    assert_eq!(err("# syntax=x"), (1, s("no FROM instruction")));
}

#[test]
fn keywords_any_case_bom_and_crlf() {
    let df = ok("\u{feff}from alpine as B\r\nrun echo \\\r\n  hi\r\nCoPy a b\r\n");
    assert_eq!(df.stages[0].name.as_deref(), Some("b"));
    let steps = &df.stages[0].steps;
    assert_eq!(
        steps[0].instr,
        Instr::Run {
            cmd: shell("echo   hi"),
            network: None
        }
    );
    assert_eq!((steps[1].line, steps[1].text.as_str()), (4, "CoPy a b"));
}

#[test]
fn multi_stage() {
    let df = ok("ARG GO=1.22\n\
                 ARG BASE\n\
                 FROM --platform=$BUILDPLATFORM golang:${GO} AS Build\n\
                 ARG GO\n\
                 RUN go build\n\
                 FROM build AS test\n\
                 FROM ${BASE:-alpine}\n\
                 COPY --from=build /out /usr/bin/\n\
                 COPY --from=0 /x /y\n");
    assert_eq!(
        df.global_args,
        [
            ArgDecl {
                name: s("GO"),
                default: Some(s("1.22"))
            },
            ArgDecl {
                name: s("BASE"),
                default: None
            }
        ]
    );
    let names: Vec<_> = df
        .stages
        .iter()
        .map(|st| (st.line, st.base.as_str(), st.name.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            (3, "golang:${GO}", Some("build")),
            (6, "build", Some("test")),
            (7, "${BASE:-alpine}", None)
        ]
    );
    assert_eq!(df.stages[0].platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(
        df.stages[0].steps[0].instr,
        Instr::Arg(vec![ArgDecl {
            name: s("GO"),
            default: None
        }])
    );
    assert!(df.stages[1].steps.is_empty());
    let froms: Vec<_> = df.stages[2]
        .steps
        .iter()
        .map(|st| match &st.instr {
            Instr::Copy { from, .. } => from.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(froms, [Some(s("build")), Some(s("0"))]);
}

#[test]
fn run_heredocs() {
    let df =
        ok("FROM a\nRUN <<EOF\nset -e\necho $HOME\nEOF\nRUN <<-EOT\n\techo tab\n\tEOT\nUSER x\n");
    let steps = &df.stages[0].steps;
    assert_eq!(
        steps[0].instr,
        Instr::Run {
            cmd: shell("set -e\necho $HOME\n"),
            network: None
        }
    );
    assert_eq!(steps[0].text, "RUN <<EOF\nset -e\necho $HOME\nEOF");
    assert_eq!(
        steps[1].instr,
        Instr::Run {
            cmd: shell("echo tab\n"),
            network: None
        }
    );
    assert_eq!((steps[1].line, steps[2].line), (6, 9));
    assert_eq!(steps[2].instr, Instr::User(s("x")));

    // The shell feeds the heredoc to the command, quoting intact.
    assert_eq!(
        one("RUN --network=host <<'EOF' python3 -\nprint('$x')\nEOF"),
        Instr::Run {
            cmd: shell("<<'EOF' python3 -\nprint('$x')\nEOF"),
            network: Some(s("host"))
        }
    );
}

#[test]
fn heredoc_refusals() {
    let (line, msg) = err("FROM a\nRUN cat <<EOF > /f\nhello\nEOF\n");
    assert_eq!(line, 2);
    assert!(msg.starts_with("heredocs are not supported"), "{msg}");
    let (line, msg) = err("FROM a\nRUN <<A <<B\na\nA\nb\nB\n");
    assert_eq!(line, 2);
    assert!(msg.starts_with("heredocs are not supported"), "{msg}");
    let (line, msg) = err("FROM a\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n");
    assert_eq!(line, 2);
    assert!(msg.contains("#!"), "{msg}");
    assert_eq!(
        err("FROM a\nCOPY <<EOF /f\nx\nEOF\n"),
        (2, s("heredocs are not supported in COPY by berth build"))
    );
    assert_eq!(
        err("FROM a\nADD x <<EOF\ny\nEOF\n"),
        (2, s("ADD cannot accept a heredoc as a destination"))
    );
    // Not heredocs: quoted, or a here-string.
    assert_eq!(
        one("RUN echo '<<EOF'"),
        Instr::Run {
            cmd: shell("echo '<<EOF'"),
            network: None
        }
    );
    assert_eq!(
        one("RUN cat <<<word"),
        Instr::Run {
            cmd: shell("cat <<<word"),
            network: None
        }
    );
    assert!(err("FROM a\nRUN <<EOF\nnever closed\n")
        .1
        .contains("here-document"));
}

#[test]
fn structural_errors() {
    assert_eq!(err(""), (1, s("no FROM instruction")));
    assert_eq!(err("# only\n# comments\n"), (2, s("no FROM instruction")));
    assert_eq!(err("ARG A=1\n\nARG B\n"), (3, s("no FROM instruction")));
    assert_eq!(
        err("ARG A\nRUN x\nFROM a\n"),
        (
            2,
            s("RUN before the first FROM: only ARG may come before FROM")
        )
    );
    assert_eq!(
        err("FROM a\n\nFOO bar\n"),
        (3, s("unknown instruction: FOO"))
    );
    assert_eq!(err("FROM a\nrunx y\n"), (2, s("unknown instruction: RUNX")));
    assert_eq!(
        err("FROM a\nONBUILD RUN x\n"),
        (2, s("ONBUILD is not supported by berth build"))
    );
    assert_eq!(
        err("FROM a AS x\nFROM b AS X\n"),
        (2, s("duplicate stage name \"x\""))
    );
    assert_eq!(err("FROM a AS 1st\n").0, 1);
    assert_eq!(err("FROM a AS b c\n").0, 1);
    // The first error wins, whichever side finds it.
    assert_eq!(err("FROM a\nRUN --mount=type=cache x\nFOO\n").0, 2);
}

#[test]
fn argument_errors() {
    let (line, msg) = err("FROM a\nSHELL /bin/sh -c\n");
    assert_eq!(line, 2);
    assert!(msg.starts_with("SHELL requires the JSON form"), "{msg}");
    let (line, msg) = err("FROM a\nRUN x\nSHELL [\"/bin/sh\", '-c']\n");
    assert_eq!(line, 3);
    assert!(msg.starts_with("SHELL requires the JSON form"), "{msg}");
    assert_eq!(err("FROM a\nCOPY onlyone\n").0, 2);
    assert_eq!(err("FROM a\nRUN x\nADD onlyone\n").0, 3);
    assert_eq!(err("FROM a\nCOPY [\"a\"]\n").0, 2);
    assert_eq!(
        err("FROM a\nENV A\n"),
        (2, s("ENV must have two arguments"))
    );
    assert_eq!(err("FROM a\nENV A=1 B\n").0, 2);
    assert_eq!(
        err("FROM a\nARG =x\n"),
        (2, s("ARG names can not be blank"))
    );
    assert_eq!(
        err("FROM a\nVOLUME []\n"),
        (2, s("VOLUME requires at least one argument"))
    );
    assert_eq!(
        err("FROM a\nVOLUME [\" \"]\n"),
        (2, s("VOLUME specified can not be an empty string"))
    );
    assert_eq!(
        err("FROM a\nCMD\n"),
        (2, s("CMD requires at least one argument"))
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK CMD\n"),
        (2, s("Missing command after HEALTHCHECK CMD"))
    );
}

#[test]
fn flag_errors() {
    assert_eq!(
        err("FROM a\nCOPY --foo=x a b\n"),
        (2, s("unknown flag for COPY: --foo"))
    );
    assert_eq!(
        err("FROM a\n\nADD --from=x a b\n"),
        (3, s("unknown flag for ADD: --from"))
    );
    assert_eq!(
        err("FROM --foo=x a\n"),
        (1, s("unknown flag for FROM: --foo"))
    );
    assert_eq!(
        err("FROM a\nRUN --mount=type=cache,target=/c make\n"),
        (2, s("RUN --mount is not supported by berth build"))
    );
    assert_eq!(
        err("FROM a\nCOPY --parents a b\n"),
        (2, s("COPY --parents is not supported by berth build"))
    );
    assert_eq!(
        err("FROM a\nCOPY --from=x --from=y a b\n"),
        (2, s("duplicate flag for COPY: --from"))
    );
    assert_eq!(
        err("FROM a\nCOPY --from a b\n"),
        (2, s("missing a value on flag --from"))
    );
    assert_eq!(
        err("FROM a\nCOPY --link=maybe a b\n"),
        (2, s("expecting boolean value for flag --link, not: maybe"))
    );
    assert_eq!(
        err("FROM a\nENV --x=1 A=1\n"),
        (2, s("unknown flag for ENV: --x"))
    );
    assert_eq!(
        err("FROM a\nCMD --help\n"),
        (2, s("unknown flag for CMD: --help"))
    );
    assert_eq!(
        err("FROM a\nWORKDIR --p /x\n"),
        (2, s("unknown flag for WORKDIR: --p"))
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --every=1s CMD true\n"),
        (2, s("unknown flag for HEALTHCHECK: --every"))
    );
    assert_eq!(err("FROM a\nHEALTHCHECK --interval=1s NONE\n").0, 2);
    let (line, msg) = err("FROM a\nHEALTHCHECK --interval=soon CMD true\n");
    assert_eq!(line, 2);
    assert!(msg.starts_with("--interval: invalid duration"), "{msg}");
    assert_eq!(
        err("FROM a\nHEALTHCHECK --timeout=10us CMD true\n").1,
        "Interval \"timeout\" cannot be less than 1ms"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --retries=-1 CMD true\n").1,
        "--retries cannot be negative (-1)"
    );
    assert_eq!(err("FROM a\nHEALTHCHECK --retries=x CMD true\n").0, 2);
}

#[test]
fn display_names_the_line() {
    let e = parse("FROM a\nBOGUS\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile line 2: unknown instruction: BOGUS"
    );
}

/// The example of docker's "Environment replacement" reference, through
/// parse and the executor's expansion.
#[test]
fn docker_reference_example() {
    let df = ok("FROM busybox\nENV FOO=/bar\nWORKDIR ${FOO}\nADD . $FOO\nCOPY \\$FOO /quux\n");
    let lookup = |k: &str| (k == "FOO").then(|| s("/bar"));
    let ex = |w: &str| expand(w, &lookup, df.escape).unwrap();
    let steps = &df.stages[0].steps;
    assert_eq!(steps[0].instr, Instr::Env(pairs(&[("FOO", "/bar")])));
    let Instr::Workdir(w) = &steps[1].instr else {
        panic!()
    };
    assert_eq!(ex(w), "/bar");
    let Instr::Add { sources, dest, .. } = &steps[2].instr else {
        panic!()
    };
    assert_eq!((ex(&sources[0]), ex(dest)), (s("."), s("/bar")));
    let Instr::Copy { sources, dest, .. } = &steps[3].instr else {
        panic!()
    };
    assert_eq!((ex(&sources[0]), ex(dest)), (s("$FOO"), s("/quux")));
    assert_eq!(steps[3].text, "COPY \\$FOO /quux");
}
