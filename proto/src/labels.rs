//! Container labels with a meaning to the manager, and the restart policy
//! they carry: the CLI writes them, the daemon acts on them, so their names
//! and grammar are part of the API.

/// "true": remove the container (and its task) when its task exits, as
/// `docker run --rm` does, even if that happens while the manager is down.
pub const AUTO_REMOVE: &str = "berth.io/auto-remove";
/// "true": keep a stdin pipe open for attach.
pub const STDIN: &str = "berth.io/stdin";
/// "true" on an image record: a build step's cached result, which `images`
/// lists only with `-a` (docker's intermediate images).
pub const BUILD_CACHE: &str = "berth.io/build-cache";
/// The restart policy, as [`RestartPolicy::parse`] reads it.
pub const RESTART_POLICY: &str = "berth.io/restart";

/// `--restart`: what to do when a container's task exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    /// Restart after a non-zero exit, at most N times when a count is given.
    OnFailure(Option<u32>),
    Always,
}

impl RestartPolicy {
    /// `no`, `always`, `on-failure` or `on-failure:N` (docker's grammar).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "no" => Some(Self::No),
            "always" => Some(Self::Always),
            "on-failure" => Some(Self::OnFailure(None)),
            _ => s
                .strip_prefix("on-failure:")
                .and_then(|n| n.parse().ok())
                .map(|n| Self::OnFailure(Some(n))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RestartPolicy;

    #[test]
    fn restart_policies_parse_as_docker_writes_them() {
        assert_eq!(RestartPolicy::parse(""), Some(RestartPolicy::No));
        assert_eq!(RestartPolicy::parse("always"), Some(RestartPolicy::Always));
        assert_eq!(
            RestartPolicy::parse("on-failure"),
            Some(RestartPolicy::OnFailure(None))
        );
        assert_eq!(
            RestartPolicy::parse("on-failure:3"),
            Some(RestartPolicy::OnFailure(Some(3)))
        );
        assert_eq!(RestartPolicy::parse("on-failure:x"), None);
        assert_eq!(RestartPolicy::parse("sometimes"), None);
    }
}
