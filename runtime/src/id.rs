//! Container ids, with runc's rule: they name a directory under `--root`.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("container id cannot be empty")]
    Empty,
    #[error("invalid container id format: {0:?} (use letters, digits, '_', '+', '-', '.')")]
    Invalid(String),
}

/// `^[\w+.-]+$`, and neither `.` nor `..`.
pub fn validate(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    let ok = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if !ok || id == "." || id == ".." || id.len() > 1024 {
        return Err(IdError::Invalid(id.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_rule() {
        for ok in ["a", "my-ctr_1", "x.y+z", "..a"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in ["../x", "a/b", ".", "..", "a b", "/abs", "é"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        assert_eq!(validate(""), Err(IdError::Empty));
    }
}
