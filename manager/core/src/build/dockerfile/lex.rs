//! Docker's word processing ("environment replacement"): variable
//! substitution, quote removal and escapes, for the executor to apply at run
//! time with the build's ARG and ENV values.
//!
//! parse-dockerfile only splits instructions; it has no expander, so this
//! follows BuildKit's `frontend/dockerfile/shell/lex.go` rule for rule (the
//! reference docker documents at
//! <https://docs.docker.com/reference/dockerfile/#environment-replacement>),
//! including its corners: `$` with no name stays literal, an escape at the end
//! of the word is dropped, and inside double quotes the escape only escapes
//! `"`, `$` and itself.

/// A lookup of a build variable: `None` when unset (which differs from set
/// to the empty string for `-`, `+` and `?`).
type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Docker's word processing for one word: `$VAR`, `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`, `${VAR:?message}` and
/// `${VAR?message}` (errors), plus BuildKit's `${VAR#pat}`, `${VAR##pat}`,
/// `${VAR%pat}`, `${VAR%%pat}`, `${VAR/pat/repl}` and `${VAR//pat/repl}`;
/// escapes with the escape char, single quotes (literal) and double quotes
/// (expanding) removed. Unset variables expand to the empty string, as in
/// docker.
pub fn expand(
    raw: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, String> {
    Lexer::new(raw, lookup, escape).run().map(|(word, _)| word)
}

/// The same, splitting on unquoted whitespace into several words (for EXPOSE,
/// VOLUME, COPY sources given in shell form...). As in docker, the split
/// happens after substitution, so a variable holding `"80 443"` gives two
/// words, while quoted text never splits; empty words (`""`) are dropped.
pub fn expand_words(
    raw: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, String> {
    Lexer::new(raw, lookup, escape)
        .run()
        .map(|(_, words)| words)
}

/// The words being built alongside the single-word result (BuildKit's
/// `wordsStruct`): substituted text splits on whitespace, quoted and escaped
/// text never does.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    /// Ordinary or substituted text: blanks end the word.
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    /// Quoted or escaped text: always part of the word.
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    /// A substituted value, which splits on its blanks.
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    /// A quoted string; even an empty one marks a word as started.
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    /// The words, the last one included.
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

/// One word being processed: BuildKit's `shellWord`, over chars.
struct Lexer<'a> {
    raw: &'a str,
    chars: Vec<char>,
    pos: usize,
    escape: char,
    lookup: Lookup<'a>,
}

impl<'a> Lexer<'a> {
    /// A lexer over `raw`, looking variables up with `lookup`.
    fn new(raw: &'a str, lookup: Lookup<'a>, escape: char) -> Self {
        Lexer {
            raw,
            chars: raw.chars().collect(),
            pos: 0,
            escape,
            lookup,
        }
    }

    /// The whole word: the single-word result and its split words.
    fn run(mut self) -> Result<(String, Vec<String>), String> {
        // Docker names the word in every error, which matters once the
        // executor has several words per instruction.
        self.stop_on(None, false)
            .map_err(|e| format!("failed to process {:?}: {e}", self.raw))
    }

    /// The next char, not consumed.
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// The next char, consumed.
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Processes up to `stop` (consumed) or the end of the word. Escapes are
    /// kept (`raw_escapes`) in patterns, where they escape the wildcards.
    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '\'' => {
                    let value = self.single_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '"' => {
                    let value = self.double_quote(raw_escapes)?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                _ => {
                    self.pos += 1;
                    let mut ch = ch;
                    if ch == self.escape {
                        if raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape at the end of the word is dropped.
                        let Some(escaped) = self.next() else { break };
                        ch = escaped;
                        words.add_raw_char(ch);
                    } else {
                        words.add_char(ch);
                    }
                    result.push(ch);
                }
            }
        }
        match stop {
            Some(stop) => Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            )),
            None => Ok((result, words.finish())),
        }
    }

    /// `'...'`: everything literal, no escapes at all (as in sh).
    fn single_quote(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    /// `"..."`: literal but for `$`; the escape only escapes `"`, `$` and
    /// itself, and stays otherwise (sh's rule, docker's choice).
    fn double_quote(&mut self, raw_escapes: bool) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.escape {
                        if raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            // Docker ignores an escape right at the end; the
                            // missing quote is reported on the next turn.
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                self.pos += 1;
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// A variable name: letters, digits and `_`; or a run of digits; or one
    /// special parameter (`$@`, `$#`...), which docker looks up like any name.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }

    /// A substitution at `$`: `$name`, `${name}` or `${name<modifier>...}`.
    fn dollar(&mut self) -> Result<String, String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok((self.lookup)(&name).unwrap_or_default());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        match self.next() {
            None => Err("syntax error: missing '}'".into()),
            Some('}') => Ok((self.lookup)(&name).unwrap_or_default()),
            Some(':') => match self.next() {
                Some(op @ ('-' | '+' | '?')) => self.modifier(&name, op, true),
                None => Err("syntax error: missing '}'".into()),
                Some(op) => Err(format!("unsupported modifier (:{op}) in substitution")),
            },
            Some(op @ ('-' | '+' | '?' | '#' | '%')) => self.modifier(&name, op, false),
            Some('/') => self.replace(&name),
            Some(op) => Err(format!("unsupported modifier ({op}) in substitution")),
        }
    }

    /// The word after a modifier, itself expanded, up to the closing brace.
    fn operand(&mut self, stop: char, raw_escapes: bool, missing: &str) -> Result<String, String> {
        match self.stop_on(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(missing.into()),
            Err(e) => Err(e),
        }
    }

    /// `${name<op>word}`; `colon` makes an empty value count as unset.
    fn modifier(&mut self, name: &str, op: char, colon: bool) -> Result<String, String> {
        let word = self.operand('}', matches!(op, '#' | '%'), "syntax error: missing '}'")?;
        let value = (self.lookup)(name);
        let unset = match &value {
            None => true,
            Some(v) => colon && v.is_empty(),
        };
        match op {
            '-' => Ok(if unset {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if unset { String::new() } else { word }),
            '?' => {
                if !unset {
                    return Ok(value.unwrap_or_default());
                }
                let message = match (&value, word.is_empty()) {
                    (_, false) => word,
                    (None, true) => "is not allowed to be unset".into(),
                    (Some(_), true) => "is not allowed to be empty".into(),
                };
                Err(format!("{name}: {message}"))
            }
            // `#`/`%` remove the shortest prefix/suffix matching the
            // pattern, `##`/`%%` the longest.
            _ => {
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let pattern = Pattern::compile(pattern)?;
                let value: Vec<char> = value.unwrap_or_default().chars().collect();
                Ok(if op == '#' {
                    pattern.trim_prefix(&value, greedy)
                } else {
                    pattern.trim_suffix(&value, greedy)
                })
            }
        }
    }

    /// `${name/pattern/replacement}` (first match) and `${name//...}` (all).
    fn replace(&mut self, name: &str) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = self.operand('/', true, "syntax error: missing '/' in ${}")?;
        let replacement = self.operand('}', true, "syntax error: missing '}'")?;
        let pattern = Pattern::compile(&pattern)?;
        let value: Vec<char> = (self.lookup)(name).unwrap_or_default().chars().collect();
        Ok(pattern.replace(&value, &replacement, all))
    }
}

/// One element of a shell pattern (BuildKit has no bracket expressions).
#[derive(Clone, Copy, PartialEq)]
enum Tok {
    Any,
    One,
    Lit(char),
}

/// A shell pattern of `${x#...}`, `${x%...}` and `${x/...}`. BuildKit turns
/// these into regular expressions; plain wildcard matching gives the same
/// shortest/longest answers without a regex engine.
struct Pattern(Vec<Tok>);

impl Pattern {
    /// Parses a pattern whose escapes were kept raw.
    fn compile(src: &str) -> Result<Pattern, String> {
        let mut toks = Vec::new();
        let mut chars = src.chars().peekable();
        while let Some(c) = chars.next() {
            toks.push(match c {
                '*' => Tok::Any,
                '?' => Tok::One,
                // Always `\` here, whatever the escape directive, as in
                // BuildKit; `\}` and `\/` only protected the delimiters.
                '\\' => match chars.peek() {
                    Some('}' | '/') => continue,
                    Some(&e @ ('*' | '?' | '\\')) => {
                        chars.next();
                        Tok::Lit(e)
                    }
                    Some(e) => {
                        return Err(format!(
                            "invalid pattern ({src}) in substitution: invalid escape '\\{e}'"
                        ))
                    }
                    None => {
                        return Err(format!(
                            "invalid pattern ({src}) in substitution: trailing escape"
                        ))
                    }
                },
                c => Tok::Lit(c),
            });
        }
        Ok(Pattern(toks))
    }

    /// Whether the pattern matches all of `s`.
    fn matches(&self, s: &[char]) -> bool {
        // dp[j]: the tokens so far match s[..j].
        let mut dp = vec![false; s.len() + 1];
        dp[0] = true;
        for tok in &self.0 {
            let mut next = vec![false; s.len() + 1];
            match tok {
                Tok::Any => {
                    let mut reached = false;
                    for (j, slot) in next.iter_mut().enumerate() {
                        reached |= dp[j];
                        *slot = reached;
                    }
                }
                Tok::One | Tok::Lit(_) => {
                    for j in 1..=s.len() {
                        next[j] = dp[j - 1] && (*tok == Tok::One || *tok == Tok::Lit(s[j - 1]));
                    }
                }
            }
            dp = next;
        }
        dp[s.len()]
    }

    /// `value` without its shortest (or, `greedy`, longest) matching prefix.
    fn trim_prefix(&self, value: &[char], greedy: bool) -> String {
        let ends: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new((0..=value.len()).rev())
        } else {
            Box::new(0..=value.len())
        };
        for end in ends {
            if self.matches(&value[..end]) {
                return value[end..].iter().collect();
            }
        }
        value.iter().collect()
    }

    /// `value` without its shortest (or, `greedy`, longest) matching suffix.
    fn trim_suffix(&self, value: &[char], greedy: bool) -> String {
        let starts: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new(0..=value.len())
        } else {
            Box::new((0..=value.len()).rev())
        };
        for start in starts {
            if self.matches(&value[start..]) {
                return value[..start].iter().collect();
            }
        }
        value.iter().collect()
    }

    /// Leftmost, longest matches (what BuildKit's greedy regex finds); an
    /// empty match right after a match is skipped, as Go's ReplaceAll does.
    fn replace(&self, value: &[char], replacement: &str, all: bool) -> String {
        let mut out = String::new();
        let mut pos = 0;
        let mut last_end = None;
        let mut replaced = false;
        while pos <= value.len() {
            let found = if replaced && !all {
                None
            } else {
                (pos..=value.len())
                    .rev()
                    .find(|&end| self.matches(&value[pos..end]))
            };
            match found {
                Some(end) if !(end == pos && last_end == Some(pos)) => {
                    out.push_str(replacement);
                    replaced = true;
                    last_end = Some(end);
                    if end > pos {
                        pos = end;
                        continue;
                    }
                }
                _ => {}
            }
            if let Some(c) = value.get(pos) {
                out.push(*c);
            }
            pos += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("A", "a"),
            ("E", ""),
            ("S", "x y"),
            ("P", "/usr/local/bin"),
            ("F", "file.tar.gz"),
        ])
    }

    fn ex(raw: &str) -> Result<String, String> {
        let v = vars();
        expand(raw, &|k| v.get(k).map(|s| s.to_string()), '\\')
    }

    fn exb(raw: &str, escape: char) -> Result<String, String> {
        let v = vars();
        expand(raw, &|k| v.get(k).map(|s| s.to_string()), escape)
    }

    fn words(raw: &str) -> Vec<String> {
        let v = vars();
        expand_words(raw, &|k| v.get(k).map(|s| s.to_string()), '\\').unwrap()
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(ex("$A").unwrap(), "a");
        assert_eq!(ex("${A}_b").unwrap(), "a_b");
        assert_eq!(ex("$A_b").unwrap(), "", "A_b is one (unset) name");
        assert_eq!(ex("x$UNSET-y").unwrap(), "x-y");
        assert_eq!(ex("a$").unwrap(), "a$", "a lone $ stays");
        assert_eq!(ex("$ x").unwrap(), "$ x");
        assert_eq!(ex("$1x").unwrap(), "x", "positional names are digits only");
    }

    #[test]
    fn default_operators() {
        // `:-` treats empty as unset, `-` only unset.
        assert_eq!(ex("${A:-d}").unwrap(), "a");
        assert_eq!(ex("${E:-d}").unwrap(), "d");
        assert_eq!(ex("${U:-d}").unwrap(), "d");
        assert_eq!(ex("${A-d}").unwrap(), "a");
        assert_eq!(ex("${E-d}").unwrap(), "");
        assert_eq!(ex("${U-d}").unwrap(), "d");
        // The word is expanded and unquoted itself.
        assert_eq!(ex("${U:-$A/'$A'}").unwrap(), "a/$A");
        assert_eq!(ex("${U:-${A}x}").unwrap(), "ax");
    }

    #[test]
    fn alternative_operators() {
        assert_eq!(ex("${A:+alt}").unwrap(), "alt");
        assert_eq!(ex("${E:+alt}").unwrap(), "");
        assert_eq!(ex("${U:+alt}").unwrap(), "");
        assert_eq!(ex("${A+alt}").unwrap(), "alt");
        assert_eq!(ex("${E+alt}").unwrap(), "alt");
        assert_eq!(ex("${U+alt}").unwrap(), "");
    }

    #[test]
    fn required_operators() {
        assert_eq!(ex("${A:?boom}").unwrap(), "a");
        let e = ex("${U:?must be set}").unwrap_err();
        assert!(e.ends_with("U: must be set"), "{e}");
        assert!(ex("${E:?}")
            .unwrap_err()
            .ends_with("E: is not allowed to be empty"));
        assert!(ex("${U:?}")
            .unwrap_err()
            .ends_with("U: is not allowed to be unset"));
        assert_eq!(ex("${E?}").unwrap(), "", "empty is set without the colon");
        assert!(ex("${U?}")
            .unwrap_err()
            .ends_with("U: is not allowed to be unset"));
        assert!(ex("${U?}")
            .unwrap_err()
            .starts_with("failed to process \"${U?}\""));
    }

    #[test]
    fn pattern_operators() {
        assert_eq!(ex("${P#*/}").unwrap(), "usr/local/bin");
        assert_eq!(ex("${P##*/}").unwrap(), "bin");
        assert_eq!(ex("${F%.*}").unwrap(), "file.tar");
        assert_eq!(ex("${F%%.*}").unwrap(), "file");
        assert_eq!(ex("${F#nomatch}").unwrap(), "file.tar.gz");
        assert_eq!(ex("${F%.t?r.gz}").unwrap(), "file");
        assert_eq!(ex("${F/./_}").unwrap(), "file_tar.gz");
        assert_eq!(ex("${F//./_}").unwrap(), "file_tar_gz");
        assert_eq!(ex("${F/t*r/X}").unwrap(), "file.X.gz");
        assert_eq!(ex("${A//*/z}").unwrap(), "z");
        assert_eq!(
            ex("${P/\\/usr/}").unwrap(),
            "/local/bin",
            "\\/ escapes the delimiter"
        );
        assert!(ex("${A#\\x}").unwrap_err().contains("invalid escape"));
    }

    #[test]
    fn syntax_errors() {
        assert!(ex("${A")
            .unwrap_err()
            .ends_with("syntax error: missing '}'"));
        assert!(ex("${").unwrap_err().ends_with("syntax error: missing '}'"));
        assert!(ex("${U:-x")
            .unwrap_err()
            .ends_with("syntax error: missing '}'"));
        assert!(ex("${}").unwrap_err().ends_with("bad substitution"));
        assert!(ex("${:-x}").unwrap_err().ends_with("bad substitution"));
        assert!(ex("${A!x}")
            .unwrap_err()
            .contains("unsupported modifier (!)"));
        assert!(ex("${A:x}")
            .unwrap_err()
            .contains("unsupported modifier (:x)"));
        assert!(ex("${F/x").unwrap_err().contains("missing '/'"));
    }

    #[test]
    fn quotes() {
        assert_eq!(ex("'$A'").unwrap(), "$A");
        assert_eq!(ex("\"$A\"").unwrap(), "a");
        assert_eq!(ex("\"it's\"").unwrap(), "it's");
        assert_eq!(ex("'say \"hi\"'").unwrap(), "say \"hi\"");
        assert_eq!(ex("a\"b c\"d").unwrap(), "ab cd");
        assert!(ex("'open").unwrap_err().contains("matching single-quote"));
        assert!(ex("\"open").unwrap_err().contains("matching double-quote"));
        // Single quotes have no escapes at all.
        assert_eq!(ex(r"'a\'").unwrap(), r"a\");
    }

    #[test]
    fn escapes() {
        assert_eq!(ex(r"\$A").unwrap(), "$A");
        assert_eq!(ex(r"\${A}").unwrap(), "${A}");
        assert_eq!(ex(r"a\ b").unwrap(), "a b");
        assert_eq!(ex(r"\'x\'").unwrap(), "'x'");
        assert_eq!(ex(r"\\").unwrap(), r"\");
        assert_eq!(ex(r"ab\").unwrap(), "ab", "a trailing escape is dropped");
        // In double quotes only `"`, `$` and the escape are escaped.
        assert_eq!(ex(r#""\$A \" \\ \n""#).unwrap(), r#"$A " \ \n"#);
        // With the backtick escape, backslashes are ordinary.
        assert_eq!(exb(r"C:\dir\`$A", '`').unwrap(), r"C:\dir\$A");
        assert_eq!(exb(r#""a`"b""#, '`').unwrap(), "a\"b");
    }

    #[test]
    fn word_splitting() {
        assert_eq!(words("80 443/udp"), ["80", "443/udp"]);
        assert_eq!(words("  a   b  "), ["a", "b"]);
        assert_eq!(words("$S z"), ["x", "y", "z"], "substituted text splits");
        assert_eq!(words("\"$S\" z"), ["x y", "z"], "quoted text does not");
        assert_eq!(words(r"a\ b c"), ["a b", "c"]);
        assert_eq!(
            words("'' x"),
            ["x"],
            "empty words are dropped, as in docker"
        );
        assert_eq!(words("${U:-p q}"), ["p", "q"]);
        assert!(words("").is_empty());
        // `expand` keeps the spaces between words.
        assert_eq!(ex("a  $S").unwrap(), "a  x y");
    }
}
