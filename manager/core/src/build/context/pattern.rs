//! Docker's path patterns, matched exactly as docker does rather than with
//! a general glob library whose dialect differs (`{a,b}`, `[!..]`, `**`
//! inside a component):
//!
//! - `.dockerignore` lines: moby/patternmatcher turns each into a regular
//!   expression: `*` is `[^/]*`, `?` is `[^/]`, `**/` (or `**` before more
//!   pattern) is `(.*/)?`, a trailing `**` is `.*`, `[..]` a class, `\` an
//!   escape; the whole path must match. A file is excluded when the last
//!   pattern matching it or one of its parents is not an exception.
//! - COPY source globs: Go's `filepath.Match`, one path component at a time
//!   (so `**` is just two stars).

use super::ContextError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters but '/'.
    Star,
    /// `?`: one character but '/'.
    One,
    /// `[...]` / `[^...]`: one character (never '/') in or out of ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**/`, or `**` with more pattern after it: whole leading
    /// components, any number of them, even none.
    Dirs,
    /// A trailing `**`: anything at all.
    Rest,
}

/// Which dialect a pattern is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Syntax {
    /// A `.dockerignore` line: `**` spans directories.
    Ignore,
    /// One component of a COPY source (Go `filepath.Match`).
    Glob,
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    toks: Vec<Tok>,
}

impl Pattern {
    /// Compiles `p`; the error says what is malformed.
    pub(super) fn parse(p: &str, syntax: Syntax) -> Result<Pattern, String> {
        let chars: Vec<char> = p.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if syntax == Syntax::Ignore && chars.get(i) == Some(&'*') => {
                    i += 1;
                    // `**/` is `**`: the slash is part of it.
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    toks.push(if i == chars.len() {
                        Tok::Rest
                    } else {
                        Tok::Dirs
                    });
                }
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::One),
                '\\' => match chars.get(i) {
                    Some(&n) => {
                        toks.push(Tok::Lit(n));
                        i += 1;
                    }
                    // Go's Match refuses a trailing backslash; the ignore
                    // file's regexp translation keeps it as a character.
                    None if syntax == Syntax::Glob => {
                        return Err("it ends with a lone '\\'".to_owned())
                    }
                    None => toks.push(Tok::Lit('\\')),
                },
                '[' => {
                    let (tok, next) = class(&chars, i)?;
                    toks.push(tok);
                    i = next;
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Pattern { toks })
    }

    /// Whether the whole of `s` matches. Dynamic programming from the end
    /// of the pattern: linear in pattern × text, whatever the stars.
    pub(super) fn matches(&self, s: &str) -> bool {
        let s: Vec<char> = s.chars().collect();
        let n = s.len();
        // next[j]: the rest of the pattern matches s[j..].
        let mut next = vec![false; n + 1];
        next[n] = true;
        for tok in self.toks.iter().rev() {
            let mut cur = vec![false; n + 1];
            match tok {
                Tok::Lit(c) => {
                    for j in 0..n {
                        cur[j] = s[j] == *c && next[j + 1];
                    }
                }
                Tok::One => {
                    for j in 0..n {
                        cur[j] = s[j] != '/' && next[j + 1];
                    }
                }
                Tok::Class { negated, ranges } => {
                    for j in 0..n {
                        let inside = ranges.iter().any(|&(lo, hi)| lo <= s[j] && s[j] <= hi);
                        cur[j] = s[j] != '/' && inside != *negated && next[j + 1];
                    }
                }
                Tok::Star => {
                    cur[n] = next[n];
                    for j in (0..n).rev() {
                        cur[j] = next[j] || (s[j] != '/' && cur[j + 1]);
                    }
                }
                Tok::Rest => {
                    cur[n] = next[n];
                    for j in (0..n).rev() {
                        cur[j] = next[j] || cur[j + 1];
                    }
                }
                Tok::Dirs => {
                    // (.*/)? : nothing, or up to and including some '/'.
                    let mut any = false;
                    cur[n] = next[n];
                    for j in (0..n).rev() {
                        if s[j] == '/' && next[j + 1] {
                            any = true;
                        }
                        cur[j] = next[j] || any;
                    }
                }
            }
            next = cur;
        }
        next[0]
    }
}

/// Parses a character class whose '[' was just read; returns the token and
/// the index after its ']'.
fn class(chars: &[char], mut i: usize) -> Result<(Tok, usize), String> {
    let unterminated = || "a '[' is never closed by ']'".to_owned();
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        let c = *chars.get(i).ok_or_else(unterminated)?;
        i += 1;
        if c == ']' {
            if ranges.is_empty() {
                return Err("empty character class '[]'".to_owned());
            }
            return Ok((Tok::Class { negated, ranges }, i));
        }
        let lo = if c == '\\' {
            let e = *chars.get(i).ok_or_else(unterminated)?;
            i += 1;
            e
        } else {
            c
        };
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            i += 1;
            let c = *chars.get(i).ok_or_else(unterminated)?;
            i += 1;
            hi = if c == '\\' {
                let e = *chars.get(i).ok_or_else(unterminated)?;
                i += 1;
                e
            } else {
                c
            };
            if hi < lo {
                return Err(format!("character range {lo}-{hi} is reversed"));
            }
        }
        ranges.push((lo, hi));
    }
}

/// Whether a path component has an unescaped wildcard (`*`, `?`, `[`):
/// buildkit's `containsWildcards`.
pub(super) fn has_meta(component: &str) -> bool {
    let mut chars = component.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// A literal component of a wildcard argument, its escapes removed (Go's
/// Match reads `\x` as `x`).
pub(super) fn unescape(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    let mut chars = component.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Go's `path.Clean`: `.` and empty components dropped, `..` applied
/// lexically (kept at the front of a relative path, dropped at a root).
pub(super) fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let s = out.join("/");
    if rooted {
        format!("/{s}")
    } else if s.is_empty() {
        ".".to_owned()
    } else {
        s
    }
}

#[derive(Debug, Clone)]
struct Rule {
    exception: bool,
    pattern: Pattern,
}

/// The rules of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub(super) struct Ignore {
    rules: Vec<Rule>,
}

impl Ignore {
    /// Reads the file as docker does (moby/patternmatcher's `ReadAll` and
    /// `NewPatternMatcher`): a BOM dropped, `#` lines skipped, whitespace
    /// trimmed, `!` marks an exception, patterns cleaned and a leading '/'
    /// removed.
    pub(super) fn parse(text: &str) -> Result<Ignore, ContextError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (exception, p) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let bad = |why: String| ContextError::BadIgnore {
                line: n + 1,
                pattern: line.to_owned(),
                why,
            };
            if p.is_empty() {
                return Err(bad("an exception '!' needs a pattern after it".to_owned()));
            }
            let mut p = clean(p);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
            let pattern = Pattern::parse(&p, Syntax::Ignore).map_err(bad)?;
            rules.push(Rule { exception, pattern });
        }
        Ok(Ignore { rules })
    }

    /// Whether any rule is an exception: an excluded directory may then
    /// still hold included files, so it must be walked.
    pub(super) fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// moby/patternmatcher's `MatchesOrParentMatches`: each rule in order
    /// is tried on the path and on each of its parent directories; an
    /// exclusion rule is only tried while the path is not yet excluded and
    /// an exception only while it is, and the last rule that matches wins.
    pub(super) fn matches(&self, rel: &str) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let file = clean(rel);
        let file = file.trim_start_matches('/');
        if file.is_empty() || file == "." {
            return false;
        }
        let parents: Vec<&str> = match file.rfind('/') {
            Some(i) => file[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for r in &self.rules {
            if r.exception != excluded {
                continue;
            }
            let mut hit = r.pattern.matches(file);
            if !hit {
                let mut prefix = String::new();
                for p in &parents {
                    if !prefix.is_empty() {
                        prefix.push('/');
                    }
                    prefix.push_str(p);
                    if r.pattern.matches(&prefix) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                excluded = !r.exception;
            }
        }
        excluded
    }
}
