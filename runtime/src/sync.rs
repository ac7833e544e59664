//! The channel between the runtime and the process that becomes the
//! container: a SOCK_SEQPACKET socketpair carrying one JSON message per
//! datagram, so messages never run together and EOF means the peer died.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Msg {
    /// Parent → child: namespaces mapped and cgroup joined; go on.
    Go,
    /// Child → parent: the child joined a pid namespace by forking; this is
    /// the host pid of the process that carries on.
    Pid(i32),
    /// Child → parent: mounts are prepared; run prestart and createRuntime.
    RunHooks,
    /// Parent → child: hooks ran (the `String` is the OCI state JSON to pass
    /// to createContainer hooks).
    HooksDone(String),
    /// Child → parent: everything up to the final exec is done.
    Ready,
    /// Child → parent: the seccomp notify listener follows as an fd.
    SeccompListener,
    /// Either way: a fatal error, with the message for the user.
    Error(String),
}

/// The cause of an I/O failure is the source, not part of the message:
/// reporters print the chain ("sync channel: Broken pipe"), and a message
/// that repeated it would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync channel")]
    Io(#[from] std::io::Error),
    #[error("sync channel")]
    Nix(#[from] nix::Error),
    #[error("the container's init process exited during setup")]
    Closed,
    #[error("sync channel: bad message")]
    Decode(#[source] serde_json::Error),
}

pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    pub fn pair() -> Result<(Channel, Channel), SyncError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn send(&self, msg: &Msg) -> Result<(), SyncError> {
        let bytes = serde_json::to_vec(msg).map_err(SyncError::Decode)?;
        // sendmsg, as for fds: the init sends under a notify filter before
        // the agent has its listener, and only sendmsg (which profiles may
        // not notify, see `seccomp::compile`) is safe then.
        let iov = [std::io::IoSlice::new(&bytes)];
        nix::sys::socket::sendmsg::<()>(
            self.fd.as_raw_fd(),
            &iov,
            &[],
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// Sends `fd` (SCM_RIGHTS) with a one-byte payload.
    pub fn send_fd(&self, fd: RawFd) -> Result<(), SyncError> {
        let fds = [fd];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(b"F")];
        nix::sys::socket::sendmsg::<()>(
            self.fd.as_raw_fd(),
            &iov,
            &cmsg,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    pub fn recv_fd(&self) -> Result<OwnedFd, SyncError> {
        use std::os::fd::FromRawFd;
        let mut byte = [0u8; 1];
        let mut iov = [std::io::IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed this fd for us.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Err(SyncError::Closed)
    }

    pub fn recv(&self) -> Result<Msg, SyncError> {
        let mut buf = vec![0u8; 1 << 16];
        let n = loop {
            match nix::unistd::read(self.fd.as_fd(), &mut buf) {
                Err(nix::Error::EINTR) => continue,
                other => break other?,
            }
        };
        if n == 0 {
            return Err(SyncError::Closed);
        }
        serde_json::from_slice(&buf[..n]).map_err(SyncError::Decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_roundtrip_and_eof() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Msg::Error("x".into())).unwrap();
        a.send(&Msg::Pid(7)).unwrap();
        assert_eq!(b.recv().unwrap(), Msg::Error("x".into()));
        assert_eq!(b.recv().unwrap(), Msg::Pid(7));
        drop(a);
        assert!(matches!(b.recv(), Err(SyncError::Closed)));
    }
}
