//! Image references as docker writes them (`busybox`,
//! `127.0.0.1:5000/team/app:v1`, `alpine@sha256:…`), parsed by hand after
//! the distribution project's grammar.
//!
//! Why not `oci_spec`'s `Reference::from_str`: it matches one large
//! Unicode-aware regex, compiled on first use and then kept for the life of
//! the process. In the daemon that cost 4-8 MiB of resident memory and a
//! few milliseconds on the first lookup, for a grammar a few dozen lines
//! of code check exactly.

/// The default registry and its official-images namespace.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const OFFICIAL: &str = "library";
const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the name is empty")]
    Empty,
    #[error("repository name must be lowercase ({0:?})")]
    Uppercase(String),
    #[error("{0:?} is not a valid repository path component (lowercase letters and digits, separated by '.', '_', '__' or dashes)")]
    Component(String),
    #[error("{0:?} is not a valid registry host[:port]")]
    Domain(String),
    #[error("tag {0:?} is not valid (letters, digits, '_', '.' and '-', not starting with '.' or '-', at most 128)")]
    Tag(String),
    #[error("digest {0:?} is not algorithm:hex")]
    Digest(String),
    #[error("digest {0:?} has the wrong length for its algorithm")]
    DigestLength(String),
    #[error("digest algorithm of {0:?} is not supported (sha256, sha384 or sha512)")]
    DigestAlgorithm(String),
    #[error("repository name is longer than {NAME_MAX} characters")]
    TooLong,
}

/// A parsed, normalized reference: registry `docker.io` and `library/`
/// filled in as docker does, `latest` when neither tag nor digest is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(check_digest(d)?)),
            None => (s, None),
        };
        // A tag's colon comes after the last slash; one before it is a port.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => {
                let (n, t) = rest.split_at(slash + i);
                (n, Some(check_tag(&t[1..])?))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                check_domain(first)?;
                (first, path)
            }
            _ => (DOCKER_HUB, name),
        };
        for c in path.split('/') {
            check_component(c)?;
        }
        let registry = if domain == DOCKER_HUB_LEGACY {
            DOCKER_HUB
        } else {
            domain
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL}/{path}")
        } else {
            path.to_owned()
        };
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(ReferenceError::TooLong);
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            _ => tag,
        };
        Ok(ImageRef {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }
}

fn alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]+` runs joined by one `.`, one or two `_`, or any number of `-`.
fn check_component(c: &str) -> Result<(), ReferenceError> {
    let bad = || {
        if c.chars().any(|ch| ch.is_ascii_uppercase()) {
            ReferenceError::Uppercase(c.to_owned())
        } else {
            ReferenceError::Component(c.to_owned())
        }
    };
    let b = c.as_bytes();
    if b.is_empty() || !alnum_lower(b[0] as char) || !alnum_lower(b[b.len() - 1] as char) {
        return Err(bad());
    }
    let mut i = 0;
    while i < b.len() {
        if alnum_lower(b[i] as char) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum_lower(b[i] as char) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// host[:port]; host is dot-separated labels of letters, digits and
/// inner dashes, or an IPv6 address in brackets.
fn check_domain(d: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Domain(d.to_owned());
    let (host, port) = if let Some(v6) = d.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => ("", None),
            p => ("", Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    if !d.starts_with('[') {
        for label in host.split('.') {
            let b = label.as_bytes();
            let ok = !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-');
            if !ok {
                return Err(bad());
            }
        }
    }
    Ok(())
}

fn check_tag(t: &str) -> Result<String, ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(t.to_owned())
    } else {
        Err(ReferenceError::Tag(t.to_owned()))
    }
}

fn check_digest(d: &str) -> Result<String, ReferenceError> {
    let (alg, hex) = d
        .split_once(':')
        .ok_or_else(|| ReferenceError::Digest(d.to_owned()))?;
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|part| {
        part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && part.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReferenceError::Digest(d.to_owned()));
    }
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ReferenceError::DigestAlgorithm(d.to_owned())),
    };
    if hex.len() != want {
        return Err(ReferenceError::DigestLength(d.to_owned()));
    }
    Ok(d.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name the manager stores an image under, through the same path
    /// pulls and lookups take.
    fn canon(s: &str) -> String {
        let r = crate::remote::parse_reference(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        crate::remote::canonical_name(&r)
    }

    #[test]
    fn docker_names_are_normalized() {
        let d64 = format!("sha256:{}", "ab".repeat(32));
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest".to_owned()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".into()),
            ("library/busybox", "docker.io/library/busybox:latest".into()),
            ("index.docker.io/x/y", "docker.io/x/y:latest".into()),
            ("team/app:v1", "docker.io/team/app:v1".into()),
            (
                "127.0.0.1:5000/t/b:latest",
                "127.0.0.1:5000/t/b:latest".into(),
            ),
            ("localhost/app", "localhost/app:latest".into()),
            (
                "Registry.Example.com/a/b",
                "Registry.Example.com/a/b:latest".into(),
            ),
            ("[::1]:5000/app:x", "[::1]:5000/app:x".into()),
            // No slash: the colon starts a tag, as docker reads it.
            ("test.com:5000", "docker.io/library/test.com:5000".into()),
            (
                "a.b/c__d/e-f---g.h:T_a.g-1",
                "a.b/c__d/e-f---g.h:T_a.g-1".into(),
            ),
            (
                &format!("alpine@{d64}"),
                format!("docker.io/library/alpine@{d64}"),
            ),
            (&format!("x/y:t@{d64}"), format!("docker.io/x/y:t@{d64}")),
        ] {
            assert_eq!(canon(input), want, "{input}");
        }
    }

    #[test]
    fn malformed_names_are_refused_with_the_reason() {
        use ReferenceError as E;
        type Is = fn(&ReferenceError) -> bool;
        let cases: Vec<(String, Is)> = vec![
            ("".into(), |e| *e == E::Empty),
            (":tag".into(), |e| *e == E::Empty),
            ("Busybox".into(), |e| matches!(e, E::Uppercase(_))),
            ("team/App".into(), |e| matches!(e, E::Uppercase(_))),
            ("has space".into(), |e| matches!(e, E::Component(_))),
            ("a..b".into(), |e| matches!(e, E::Component(_))),
            ("a___b".into(), |e| matches!(e, E::Component(_))),
            ("-a".into(), |e| matches!(e, E::Component(_))),
            ("a//b".into(), |e| matches!(e, E::Component(_))),
            ("../x".into(), |e| matches!(e, E::Domain(_))),
            ("x/".into(), |e| matches!(e, E::Component(_))),
            ("bad_host.com/a".into(), |e| matches!(e, E::Domain(_))),
            ("host.com:port/a".into(), |e| matches!(e, E::Domain(_))),
            ("-h.com/a".into(), |e| matches!(e, E::Domain(_))),
            ("a:.tag".into(), |e| matches!(e, E::Tag(_))),
            ("a:".into(), |e| matches!(e, E::Tag(_))),
            (format!("a:{}", "t".repeat(129)), |e| matches!(e, E::Tag(_))),
            ("a@sha256:abc".into(), |e| matches!(e, E::Digest(_))),
            (format!("a@sha256:{}", "0".repeat(63)), |e| {
                matches!(e, E::DigestLength(_))
            }),
            (format!("a@md5:{}", "0".repeat(32)), |e| {
                matches!(e, E::DigestAlgorithm(_))
            }),
            (format!("a@sha256:{}", "g".repeat(64)), |e| {
                matches!(e, E::Digest(_))
            }),
            (format!("r.io/{}", "a".repeat(260)), |e| *e == E::TooLong),
        ];
        for (input, is) in cases {
            match ImageRef::parse(&input) {
                Ok(r) => panic!("{input:?} parsed as {r:?}"),
                Err(e) => assert!(is(&e), "{input:?}: {e:?}"),
            }
        }
    }
}
