//! Signal names as people write them (`TERM`, `SIGKILL`, `9`): the API
//! carries numbers, the CLI and the image config carry names.

/// The number of a signal given by name (with or without `SIG`, any case)
/// or by number (1 to 64); `None` for anything else.
pub fn number(s: &str) -> Option<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_and_numbers() {
        assert_eq!(super::number("SIGTERM"), Some(15));
        assert_eq!(super::number("kill"), Some(9));
        assert_eq!(super::number("10"), Some(10));
        assert_eq!(super::number("0"), None);
        assert_eq!(super::number("SIGNOPE"), None);
    }
}
