//! Line-level rules parse-dockerfile leaves to its caller: it hands shell-form
//! commands back as raw source text (continuations and comment lines still
//! in), ENV, LABEL and ARG as one unsplit string, and has no duration parser.
//! Each helper here follows the BuildKit function it names, so berth reads a
//! Dockerfile as docker does.

use std::time::Duration;

/// Joins the physical lines of an instruction's source text into one logical
/// line, as BuildKit's parser does: a trailing escape (plus any blanks after
/// it) is removed and the next line appended as is (its indentation kept),
/// while comment lines and blank lines inside the continuation are skipped.
pub(super) fn join_continuations(raw: &str, escape: char) -> String {
    let mut out = String::with_capacity(raw.len());
    for (i, line) in raw.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i > 0 {
            let rest = line.trim_start();
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
        }
        let trimmed = line.trim_end_matches([' ', '\t']);
        match trimmed.strip_suffix(escape) {
            Some(body) => out.push_str(body),
            None => out.push_str(line),
        }
    }
    out
}

/// BuildKit's `parseWords`: splits on unquoted whitespace, keeping quotes and
/// escapes in the words (the expander removes them later, when it knows the
/// variables). A quoted empty string is a word.
pub(super) fn split_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut chars = rest.chars();
    loop {
        let Some(ch) = chars.next() else {
            if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            return words;
        };
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word if ch.is_whitespace() => {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                continue;
            }
            Phase::Word => {
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                }
            }
            Phase::Quote(quote) => {
                if ch == quote {
                    phase = Phase::Word;
                } else if ch == escape && quote == '\'' {
                    // Nothing escapes inside single quotes.
                    word.push(ch);
                    continue;
                }
            }
            Phase::Spaces => {}
        }
        if ch == escape {
            // The escape and what it escapes stay together (an escaped quote
            // or blank does not open a quote or end the word); a final
            // escape is dropped.
            if let Some(next) = chars.next() {
                word.push(ch);
                word.push(next);
            } else if matches!(phase, Phase::Quote(_)) {
                phase = Phase::Word;
            }
            continue;
        }
        word.push(ch);
    }
}

/// BuildKit's `parseNameVal` for ENV and LABEL: `k=v k2="v 2"` (each word
/// split at its first `=`), or the legacy `k value with spaces` when the
/// first word has no `=`. Names and values stay raw (quoted, unexpanded):
/// docker expands both.
pub(super) fn name_values(
    keyword: &str,
    rest: &str,
    escape: char,
) -> Result<Vec<(String, String)>, String> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(format!("{keyword} must have two arguments"));
    };
    if !first.contains('=') {
        // Legacy form: the name, a run of blanks, then everything else
        // verbatim (BuildKit splits the raw text on `[\t\v\f\r ]+`, once).
        let blank = |c: char| matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r');
        let rest = rest.trim_start_matches(blank);
        return match rest.split_once(blank) {
            Some((name, value)) => Ok(vec![(
                name.to_owned(),
                value.trim_start_matches(blank).to_owned(),
            )]),
            None => Err(format!("{keyword} must have two arguments")),
        };
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(format!("{keyword} names can not be blank")),
            Some((name, value)) => Ok((name.to_owned(), value.to_owned())),
            None => Err(format!(
                "Syntax error - can't find = in {word:?}. Must be of the form: name=value"
            )),
        })
        .collect()
}

/// Whether a word (as [`split_words`] gives it) opens a heredoc: BuildKit's
/// `^(\d*)<<(-?)([^<]*)$` with a non-empty name, so `<<<` here-strings and
/// `<< EOF` (a separate word) are not heredocs, as in docker.
pub(super) fn is_heredoc_word(word: &str) -> bool {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    match rest.strip_prefix("<<") {
        Some(name) => {
            let name = name.strip_prefix('-').unwrap_or(name);
            !name.is_empty() && !name.contains('<')
        }
        None => false,
    }
}

/// The first heredoc opener in a shell command, if any.
pub(super) fn find_heredoc(command: &str, escape: char) -> Option<String> {
    split_words(command, escape)
        .into_iter()
        .find(|w| is_heredoc_word(w))
}

/// A duration flag as docker writes them (30s, 1m30s, 500ms, 1.5h): Go's
/// `time.ParseDuration`, units ns, us (µs), ms, s, m and h, decimals allowed.
/// Negative durations are refused (docker refuses them for every flag that
/// takes one).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("invalid duration {s:?}: {why}");
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(invalid("cannot be negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid("empty"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(f) => f.split_at(f.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(invalid("expected a number"));
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(invalid("missing unit")),
            other => return Err(invalid(&format!("unknown unit {other:?}"))),
        };
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| invalid("overflow"))?
        };
        // Digits past nanosecond precision cannot matter; Go drops them too.
        let frac = &frac[..frac.len().min(18)];
        let part: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| invalid("overflow"))?
        };
        let part = part * scale / 10u128.pow(u32::try_from(frac.len()).unwrap_or(18));
        total = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(part))
            .and_then(|v| v.checked_add(total))
            .ok_or_else(|| invalid("overflow"))?;
        rest = after;
    }
    // Go durations are signed 64-bit nanoseconds.
    match u64::try_from(total) {
        Ok(n) if i64::try_from(n).is_ok() => Ok(Duration::from_nanos(n)),
        _ => Err(invalid("overflow")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_continuations() {
        assert_eq!(join_continuations("a \\\n  b", '\\'), "a   b");
        assert_eq!(
            join_continuations("a \\  \n b", '\\'),
            "a  b",
            "blanks after the escape"
        );
        assert_eq!(join_continuations("a `\r\n b", '`'), "a  b");
        assert_eq!(join_continuations("a \\\n  # note\n\n b", '\\'), "a  b");
        assert_eq!(
            join_continuations("C:\\dir\\", '`'),
            "C:\\dir\\",
            "\\ is plain with `"
        );
        assert_eq!(join_continuations("tail \\", '\\'), "tail ");
    }

    #[test]
    fn splits_words_like_buildkit() {
        let w = |s: &str| split_words(s, '\\');
        assert_eq!(
            w(r#"a=1 b="x y" c='p q'"#),
            ["a=1", r#"b="x y""#, "c='p q'"]
        );
        assert_eq!(w(r"a\ b c"), [r"a\ b", "c"]);
        assert_eq!(w(r#"a="x \" y" b"#), [r#"a="x \" y""#, "b"]);
        assert_eq!(w(r"a='x\' b"), [r"a='x\'", "b"]);
        assert_eq!(w(r#"e="" f"#), [r#"e="""#, "f"]);
        assert_eq!(w("  "), Vec::<String>::new());
        assert_eq!(split_words("a=`\" b", '`'), ["a=`\"", "b"]);
    }

    #[test]
    fn name_value_forms() {
        assert_eq!(
            name_values("ENV", r#"A=1 B="two words" C"#, '\\').unwrap_err(),
            "Syntax error - can't find = in \"C\". Must be of the form: name=value"
        );
        assert_eq!(
            name_values("ENV", "A  b  c", '\\').unwrap(),
            [("A".to_owned(), "b  c".to_owned())]
        );
        assert_eq!(
            name_values("ENV", "A", '\\').unwrap_err(),
            "ENV must have two arguments"
        );
        assert_eq!(
            name_values("LABEL", "=x", '\\').unwrap_err(),
            "LABEL names can not be blank"
        );
        assert_eq!(
            name_values("ENV", "A=", '\\').unwrap(),
            [("A".to_owned(), String::new())]
        );
    }

    #[test]
    fn heredoc_words() {
        for yes in ["<<EOF", "<<-EOF", "2<<EOF", "<<'EOF'", "<<\"E O\""] {
            assert!(is_heredoc_word(yes), "{yes}");
        }
        for no in ["<<", "<<<str", "<<-", "x<<EOF", "a"] {
            assert!(!is_heredoc_word(no), "{no}");
        }
        assert_eq!(
            find_heredoc("cat <<EOF > f", '\\').as_deref(),
            Some("<<EOF")
        );
        assert_eq!(find_heredoc("echo '<<EOF'", '\\'), None);
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d(".5s"), Duration::from_millis(500));
        assert_eq!(d("2us"), Duration::from_micros(2));
        assert_eq!(d("2µs"), Duration::from_micros(2));
        assert_eq!(d("7ns"), Duration::from_nanos(7));
        assert_eq!(d("1h2m3s4ms"), Duration::from_millis(3_723_004));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("+5s"), Duration::from_secs(5));
        for bad in ["", "5", "s", "-5s", "5x", "1..5s", "9999999999h", "."] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
