//! The CRI's words for images, as containerd's CRI plugin uses them: an
//! image *id* is its config digest, a *repo tag* is `name:tag`, a *repo
//! digest* is `name@sha256:…` (the digest of what the name points at), and
//! pull credentials arrive as a kubelet `AuthConfig`.
//!
//! Pure functions over strings and JSON, so they are tested here without a
//! daemon.

use berth_core::remote::{self, PullAuth};

use crate::cri;
use crate::CriError;

/// What an image record's name says about the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Name {
    /// `sha256:<hex>`: the record that makes the image findable by id.
    Id,
    /// `registry/repo:tag`, normalized.
    Tag(String),
    /// `registry/repo@sha256:…` (a name with both tag and digest counts
    /// as its digest form, as containerd's CRI reads such references).
    Digest(String),
    /// Anything else (an unnamed import): no CRI meaning.
    Other,
}

/// A full image id: `sha256:` and 64 lowercase hex digits.
pub(crate) fn is_id(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && is_hex(h))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Classifies a stored record name. The id check comes first: a reference
/// parser reads `sha256:<hex>` as the repository `sha256` with a tag.
pub(crate) fn classify(name: &str) -> Name {
    if is_id(name) {
        return Name::Id;
    }
    let Ok(r) = remote::parse_reference(name) else {
        return Name::Other;
    };
    match (r.tag(), r.digest()) {
        (_, Some(d)) => Name::Digest(format!("{}/{}@{d}", r.registry(), r.repository())),
        (Some(_), None) => Name::Tag(r.whole()),
        (None, None) => Name::Other,
    }
}

/// The repo digest a tag name implies: its repository at `digest`.
pub(crate) fn repo_digest(tag_name: &str, digest: &str) -> Option<String> {
    let r = remote::parse_reference(tag_name).ok()?;
    Some(format!("{}/{}@{digest}", r.registry(), r.repository()))
}

/// How the user asked for an image, for a lookup among the CRI's images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// A full id (also written without `sha256:`).
    Id(String),
    /// A reference, normalized (`busybox` is `docker.io/library/busybox:latest`),
    /// and as written (a stored name need not be a reference).
    Name {
        normalized: Option<String>,
        raw: String,
    },
}

impl Query {
    pub(crate) fn parse(s: &str) -> Result<Query, CriError> {
        if s.is_empty() {
            return Err(CriError::InvalidArgument(
                "the image reference is empty".into(),
            ));
        }
        if is_id(s) {
            return Ok(Query::Id(s.to_owned()));
        }
        if s.len() == 64 && is_hex(s) {
            return Ok(Query::Id(format!("sha256:{s}")));
        }
        Ok(Query::Name {
            normalized: remote::parse_reference(s)
                .ok()
                .map(|r| match classify(&r.whole()) {
                    Name::Digest(d) => d,
                    _ => r.whole(),
                }),
            raw: s.to_owned(),
        })
    }

    /// A short id (hex, with or without `sha256:`) the query may be, as
    /// containerd's CRI accepts a unique prefix of an id.
    pub(crate) fn id_prefix(&self) -> Option<String> {
        let Query::Name { raw, .. } = self else {
            return None;
        };
        let hex = raw.strip_prefix("sha256:").unwrap_or(raw);
        is_hex(hex).then(|| format!("sha256:{hex}"))
    }
}

/// The user an image runs as, from its config's `User` (`uid[:gid]` or
/// `name[:group]`): a numeric uid, or else a user name, as the CRI's
/// `Image.uid` / `Image.username`.
pub(crate) fn user_of(config: &serde_json::Value) -> (Option<i64>, String) {
    let user = config["config"]["User"].as_str().unwrap_or_default();
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_owned()),
    }
}

/// The host of a registry address as a kubelet writes it: `host[:port]`,
/// with or without a scheme and path (`https://index.docker.io/v1/`).
fn address_host(addr: &str) -> &str {
    let s = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    s.split('/').next().unwrap_or(s)
}

/// The names docker gives Docker Hub.
fn same_registry(a: &str, b: &str) -> bool {
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    a == b || (hub(a) && hub(b))
}

/// The pull credentials in a kubelet's `AuthConfig` for `registry`, read as
/// containerd's CRI does: nothing when `server_address` names another
/// registry; else `username`/`password`, then `auth` (base64 of
/// `user:password`).
///
/// Tokens: an `identity_token` is an OAuth refresh token, and a
/// `registry_token` a bearer token; the core's registry client takes user
/// and password only, so either one alone is refused rather than silently
/// pulling anonymously.
pub(crate) fn pull_auth(
    auth: Option<&cri::AuthConfig>,
    registry: &str,
) -> Result<PullAuth, CriError> {
    let mut out = PullAuth::default();
    let Some(a) = auth else {
        return Ok(out);
    };
    if !a.server_address.is_empty() && !same_registry(address_host(&a.server_address), registry) {
        return Ok(out);
    }
    if !a.username.is_empty() {
        out.username = a.username.clone();
        out.password = a.password.clone();
        return Ok(out);
    }
    if !a.auth.is_empty() {
        use base64::Engine;
        // docker writes it padded; some tools do not.
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(a.auth.trim()))
            .map_err(|e| CriError::InvalidArgument(format!("auth.auth is not base64: {e}")))?;
        let s = String::from_utf8(raw)
            .map_err(|_| CriError::InvalidArgument("auth.auth is not UTF-8".into()))?;
        let (u, p) = s.split_once(':').ok_or_else(|| {
            CriError::InvalidArgument("auth.auth is not base64 of user:password".into())
        })?;
        out.username = u.to_owned();
        out.password = p.trim_end_matches('\0').to_owned();
        return Ok(out);
    }
    if !a.identity_token.is_empty() {
        return Err(CriError::Unsupported(
            "pulling with auth.identity_token (an OAuth refresh token)".into(),
        ));
    }
    if !a.registry_token.is_empty() {
        return Err(CriError::Unsupported(
            "pulling with auth.registry_token (a bearer token)".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn names_are_classified_as_containerd_reads_them() {
        assert_eq!(classify(&format!("sha256:{HEX}")), Name::Id);
        assert_eq!(
            classify("busybox"),
            Name::Tag("docker.io/library/busybox:latest".into())
        );
        assert_eq!(
            classify(&format!("127.0.0.1:5000/a/b:1@sha256:{HEX}")),
            Name::Digest(format!("127.0.0.1:5000/a/b@sha256:{HEX}"))
        );
        assert_eq!(classify("Not A Ref"), Name::Other);
        assert_eq!(
            repo_digest("127.0.0.1:5000/a/b:1", "sha256:x").as_deref(),
            Some("127.0.0.1:5000/a/b@sha256:x")
        );
    }

    #[test]
    fn queries() {
        assert!(Query::parse("").is_err());
        assert_eq!(
            Query::parse(HEX).unwrap(),
            Query::Id(format!("sha256:{HEX}"))
        );
        let q = Query::parse("busybox:1").unwrap();
        assert_eq!(
            q,
            Query::Name {
                normalized: Some("docker.io/library/busybox:1".into()),
                raw: "busybox:1".into()
            }
        );
        assert_eq!(q.id_prefix(), None);
        assert_eq!(
            Query::parse("abc123").unwrap().id_prefix().as_deref(),
            Some("sha256:abc123")
        );
    }

    #[test]
    fn users() {
        let u = |s: &str| user_of(&serde_json::json!({"config": {"User": s}}));
        assert_eq!(u("1000:1000"), (Some(1000), String::new()));
        assert_eq!(u("nobody"), (None, "nobody".into()));
        assert_eq!(u(""), (None, String::new()));
        assert_eq!(user_of(&serde_json::json!({})), (None, String::new()));
    }

    #[test]
    fn auth_configs() {
        let a = |f: fn(&mut cri::AuthConfig)| {
            let mut c = cri::AuthConfig::default();
            f(&mut c);
            pull_auth(Some(&c), "reg:5000")
        };
        let p = a(|c| c.auth = "YWxpY2U6czNjcmV0".into()).unwrap();
        assert_eq!(
            (p.username.as_str(), p.password.as_str()),
            ("alice", "s3cret")
        );
        let p = a(|c| {
            c.username = "bob".into();
            c.password = "pw".into();
            c.server_address = "https://reg:5000/v2/".into();
        })
        .unwrap();
        assert_eq!(p.username, "bob");
        let p = a(|c| {
            c.username = "bob".into();
            c.server_address = "other:5000".into();
        })
        .unwrap();
        assert_eq!(p.username, "");
        assert!(a(|c| c.auth = "!!".into()).is_err());
        assert!(a(|c| c.auth = "YWxpY2U=".into()).is_err());
        assert!(a(|c| c.registry_token = "t".into()).is_err());
        // Padded and unpadded base64 of user:password.
        let p = a(|c| c.auth = "Ym9iOnB3".into()).unwrap();
        assert_eq!((p.username.as_str(), p.password.as_str()), ("bob", "pw"));
        let p = a(|c| c.auth = "Ym9iOnB3eA".into()).unwrap();
        assert_eq!((p.username.as_str(), p.password.as_str()), ("bob", "pwx"));
    }
}
