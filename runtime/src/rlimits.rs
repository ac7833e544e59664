//! Process rlimits.

use oci_spec::runtime::PosixRlimit;

#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    #[error("unknown rlimit type {0}")]
    Unknown(String),
    #[error("setting {name} to soft {soft} hard {hard}: {err}")]
    Set {
        name: String,
        soft: u64,
        hard: u64,
        err: std::io::Error,
    },
}

fn resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

pub fn apply(limits: &[PosixRlimit]) -> Result<(), RlimitError> {
    for l in limits {
        let name = l.typ().to_string();
        let res = resource(&name).ok_or_else(|| RlimitError::Unknown(name.clone()))?;
        let rl = libc::rlimit {
            rlim_cur: l.soft(),
            rlim_max: l.hard(),
        };
        // SAFETY: setrlimit reads a fully initialised rlimit struct.
        if unsafe { libc::setrlimit(res, &rl) } != 0 {
            return Err(RlimitError::Set {
                name,
                soft: l.soft(),
                hard: l.hard(),
                err: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_map() {
        assert_eq!(super::resource("RLIMIT_NOFILE"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(super::resource("RLIMIT_BOGUS"), None);
    }
}
