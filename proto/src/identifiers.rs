//! Namespace and container identifiers.
//!
//! Both end up in filesystem paths (state directories, bundles, cgroup names),
//! so the rule is strict: containerd's identifier grammar, which rules out
//! `..`, `/`, leading dots and anything else that could walk out of a
//! directory.

/// Longest accepted identifier, as in containerd.
pub const MAX_LEN: usize = 76;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentifierError {
    #[error("identifier must not be empty")]
    Empty,
    #[error("identifier {0:?} is longer than {MAX_LEN} characters")]
    TooLong(String),
    #[error(
        "identifier {0:?} is not valid: use letters and digits, separated by single '.', '_' or '-'"
    )]
    Invalid(String),
}

/// Checks `s` against `^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$` and the length limit.
pub fn validate(s: &str) -> Result<(), IdentifierError> {
    if s.is_empty() {
        return Err(IdentifierError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(IdentifierError::TooLong(s.to_owned()));
    }
    let mut prev_sep = true; // the first character must not be a separator
    for c in s.chars() {
        let sep = matches!(c, '.' | '_' | '-');
        if !(c.is_ascii_alphanumeric() || sep) || (sep && prev_sep) {
            return Err(IdentifierError::Invalid(s.to_owned()));
        }
        prev_sep = sep;
    }
    if prev_sep {
        return Err(IdentifierError::Invalid(s.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["default", "k8s.io", "a", "web-1", "my_app.v2", "A9"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_path_tricks_and_junk() {
        for bad in [
            "..",
            ".",
            "../x",
            "a/b",
            "/abs",
            ".hidden",
            "trailing-",
            "a..b",
            "a b",
            "é",
            "a\0b",
            "-x",
        ] {
            assert!(
                matches!(validate(bad), Err(IdentifierError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert_eq!(validate(""), Err(IdentifierError::Empty));
        assert!(matches!(
            validate(&"a".repeat(MAX_LEN + 1)),
            Err(IdentifierError::TooLong(_))
        ));
        assert_eq!(validate(&"a".repeat(MAX_LEN)), Ok(()));
    }
}
