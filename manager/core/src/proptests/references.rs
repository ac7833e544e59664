//! See the parent module for how these run.

use super::*;

// ---------------------------------------------------------------------------
// 1. References.

/// A reference written after the distribution grammar, with what parsing
/// it must give.
#[derive(Debug, Clone)]
pub(super) struct GrammarRef {
    pub(super) text: String,
    pub(super) registry: String,
    pub(super) repository: String,
    pub(super) tag: Option<String>,
    pub(super) digest: Option<String>,
}

pub(super) fn domain() -> BoxedStrategy<String> {
    let label = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?";
    let port = "[0-9]{1,5}".prop_map(|p| format!(":{p}"));
    prop_oneof![
        (
            prop::collection::vec(label, 2..4),
            prop::option::of(port.clone())
        )
            .prop_map(|(l, p)| format!("{}{}", l.join("."), p.unwrap_or_default())),
        (label, port.clone()).prop_map(|(l, p)| format!("{l}{p}")),
        prop::option::of(port.clone()).prop_map(|p| format!("localhost{}", p.unwrap_or_default())),
        (any::<std::net::Ipv4Addr>(), prop::option::of(port.clone()))
            .prop_map(|(a, p)| format!("{a}{}", p.unwrap_or_default())),
        (any::<std::net::Ipv6Addr>(), prop::option::of(port))
            .prop_map(|(a, p)| format!("[{a}]{}", p.unwrap_or_default())),
    ]
    .boxed()
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes (no `.` when
/// `dots` is false: a first component with one would be read as a
/// registry, as docker reads it).
pub(super) fn component(dots: bool) -> BoxedStrategy<String> {
    let sep = if dots {
        "(\\.|_|__|-{1,3})"
    } else {
        "(_|__|-{1,3})"
    };
    proptest::string::string_regex(&format!("[a-z0-9]{{1,6}}({sep}[a-z0-9]{{1,6}}){{0,3}}"))
        .unwrap()
        .boxed()
}

pub(super) fn reference_grammar() -> BoxedStrategy<GrammarRef> {
    let tag = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
    (
        prop::option::of(domain()),
        component(false),
        prop::collection::vec(component(true), 0..4),
        prop::option::of(tag),
        prop::option::of(prop_oneof![
            4 => "[0-9a-fA-F]{64}".prop_map(|h| format!("sha256:{h}")),
            1 => "[0-9a-f]{96}".prop_map(|h| format!("sha384:{h}")),
            1 => "[0-9a-f]{128}".prop_map(|h| format!("sha512:{h}")),
        ]),
    )
        .prop_map(|(domain, first, rest, tag, digest)| {
            let mut comps = vec![first];
            comps.extend(rest);
            let path = comps.join("/");
            let mut text = match &domain {
                Some(d) => format!("{d}/{path}"),
                None => path.clone(),
            };
            if let Some(t) = &tag {
                text.push(':');
                text.push_str(t);
            }
            if let Some(d) = &digest {
                text.push('@');
                text.push_str(d);
            }
            let registry = match domain.as_deref() {
                None | Some("index.docker.io") => "docker.io".to_owned(),
                Some(d) => d.to_owned(),
            };
            let repository = if registry == "docker.io" && !path.contains('/') {
                format!("library/{path}")
            } else {
                path
            };
            let tag = match (&tag, &digest) {
                (None, None) => Some("latest".to_owned()),
                _ => tag,
            };
            GrammarRef {
                text,
                registry,
                repository,
                tag,
                digest,
            }
        })
        .boxed()
}

/// A reference from the grammar with one character inserted, removed or
/// replaced: strings on the edge of what parses.
pub(super) fn near_reference() -> BoxedStrategy<String> {
    (
        reference_grammar(),
        any::<Index>(),
        prop::sample::select(vec![
            ':', '@', '/', '.', '_', '-', 'A', 'a', '0', '[', ']', '+', 'é', ' ', '\u{0}',
        ]),
        0u8..3,
    )
        .prop_map(|(g, i, c, op)| {
            let mut chars: Vec<char> = g.text.chars().collect();
            let at = i.index(chars.len() + 1);
            match op {
                0 => chars.insert(at, c),
                1 if at < chars.len() => {
                    chars.remove(at);
                }
                _ if at < chars.len() => chars[at] = c,
                _ => chars.push(c),
            }
            chars.into_iter().collect()
        })
        .boxed()
}

/// What a parsed reference must satisfy: its canonical name parses back to
/// the same reference and is its own canonical name.
pub(super) fn check_canonical(s: &str) -> Result<(), TestCaseError> {
    use crate::reference::ImageRef;
    use crate::remote::{canonical_name, parse_reference};
    let parsed = ImageRef::parse(s);
    let r = parse_reference(s);
    prop_assert_eq!(parsed.is_ok(), r.is_ok(), "{:?}", s);
    let (Ok(parsed), Ok(r)) = (parsed, r) else {
        return Ok(());
    };
    let c1 = canonical_name(&r);
    let again = ImageRef::parse(&c1);
    prop_assert!(again.is_ok(), "{:?} -> {:?}: {:?}", s, c1, again);
    prop_assert_eq!(again.ok(), Some(parsed), "{:?} -> {:?}", s, c1);
    let r2 = parse_reference(&c1);
    prop_assert!(r2.is_ok(), "{:?}", c1);
    if let Ok(r2) = r2 {
        prop_assert_eq!(canonical_name(&r2), c1);
    }
    Ok(())
}

#[test]
pub(super) fn references_never_panic_and_canonical_names_are_stable() {
    let tally = Tally::default();
    check(
        "references_any_string",
        cases(2000),
        prop_oneof![any_string(), near_reference()],
        |s| {
            // Platforms (`os/arch[/variant]`) come from the same users.
            if let Some(p) = Platform::parse(&s) {
                prop_assert_eq!(Platform::parse(&p.to_string()), Some(p));
            }
            tally.add(&crate::reference::ImageRef::parse(&s));
            check_canonical(&s)
        },
    );
    tally.print("references_any_string");
}

#[test]
pub(super) fn references_from_the_grammar_parse_and_round_trip() {
    check(
        "references_from_the_grammar",
        cases(1000),
        reference_grammar(),
        |g| {
            use crate::reference::{ImageRef, ReferenceError};
            match ImageRef::parse(&g.text) {
                Ok(r) => {
                    prop_assert_eq!(&r.registry, &g.registry);
                    prop_assert_eq!(&r.repository, &g.repository);
                    prop_assert_eq!(&r.tag, &g.tag);
                    prop_assert_eq!(&r.digest, &g.digest);
                }
                Err(ReferenceError::TooLong) => {
                    prop_assert!(g.registry.len() + 1 + g.repository.len() > 255);
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(format!("{:?}: {e}", g.text))),
            }
            check_canonical(&g.text)
        },
    );
}
