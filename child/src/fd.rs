//! Taking ownership of the socket the server passed as `--ipc-fd N`.
//!
//! The only `unsafe` of the crate lives here.

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::stat::{fstat, SFlag};

use crate::IpcFdError as Error;

/// Set once a descriptor other than 0 has been adopted: ownership is taken at most once.
static ADOPTED: AtomicBool = AtomicBool::new(false);

fn refuse(fd: RawFd, reason: impl Into<String>) -> Error {
    Error {
        fd,
        reason: reason.into(),
    }
}

/// Checks that `fd` is open and is a socket.
fn check_socket(fd: RawFd) -> Result<(), Error> {
    fcntl(fd, FcntlArg::F_GETFD).map_err(|e| refuse(fd, format!("not an open descriptor: {e}")))?;
    let stat = fstat(fd).map_err(|e| refuse(fd, format!("fstat failed: {e}")))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(refuse(fd, "not a socket"));
    }
    Ok(())
}

/// Turns the inherited descriptor `fd` into a [`UnixStream`] owned by this process.
///
/// - `0` (the server passes the driver's end as standard input): duplicated from
///   [`std::io::stdin`] without any `unsafe`; descriptor 0 is then pointed at `/dev/null`,
///   so child processes do not inherit the connection.
/// - `1` and `2` are refused: standard output and error stay what they are (logs go to
///   standard error).
/// - any other `N` is checked (open, a socket) and adopted, once per process.
///
/// The stream gets close-on-exec, so programs the backend starts do not inherit it.
pub fn adopt_ipc_fd(fd: RawFd) -> Result<UnixStream, Error> {
    let owned: OwnedFd = match fd {
        0 => {
            check_socket(0)?;
            let owned = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| refuse(0, format!("cannot duplicate standard input: {e}")))?;
            detach_stdin();
            owned
        }
        1 | 2 => return Err(refuse(fd, "standard output and error cannot carry IPC")),
        n if n < 0 => return Err(refuse(fd, "negative descriptor")),
        n => {
            check_socket(n)?;
            if ADOPTED.swap(true, Ordering::SeqCst) {
                return Err(refuse(n, "an IPC descriptor was already adopted"));
            }
            adopt_raw::adopt(n)
        }
    };
    let stream = UnixStream::from(owned);
    set_cloexec(&stream, fd)?;
    Ok(stream)
}

/// Points descriptor 0 at /dev/null once the socket has been duplicated, so that programs
/// the backend starts do not inherit the server connection as their standard input (which
/// would keep it open after the driver is gone). Best effort: a failure is only logged.
fn detach_stdin() {
    use std::os::fd::AsRawFd;
    match std::fs::File::open("/dev/null") {
        Ok(null) => {
            if let Err(e) = nix::unistd::dup2(null.as_raw_fd(), 0) {
                tracing::warn!(error = %e, "cannot point standard input at /dev/null");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot open /dev/null"),
    }
}

fn set_cloexec(stream: &UnixStream, fd: RawFd) -> Result<(), Error> {
    use std::os::fd::AsRawFd;
    fcntl(stream.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(drop)
        .map_err(|e| refuse(fd, format!("cannot set close-on-exec: {e}")))
}

#[allow(unsafe_code)]
mod adopt_raw {
    use super::*;

    /// Takes ownership of `fd`.
    pub(super) fn adopt(fd: RawFd) -> OwnedFd {
        // SAFETY: `OwnedFd::from_raw_fd` needs an open descriptor that nothing else in the
        // process owns or will close. The caller checked that `fd` is open (F_GETFD) and is
        // a socket (fstat), and is not 0, 1 or 2, which std's stdio handles use. The server
        // created it for this process alone (`--ipc-fd`), no other code of the process
        // knows it, and the ADOPTED flag makes this the only adoption in the process.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn refuses_closed_and_non_socket_descriptors() {
        let file = std::fs::File::open("/dev/null").expect("/dev/null opens");
        let err = adopt_ipc_fd(file.as_raw_fd()).expect_err("a file is not a socket");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert!(adopt_ipc_fd(1).is_err());
        assert!(adopt_ipc_fd(-3).is_err());
        let err = adopt_ipc_fd(999_999).expect_err("not open");
        assert!(err.to_string().contains("not an open descriptor"), "{err}");
    }

    #[test]
    fn adopts_a_socket_once() {
        use std::io::{Read, Write};
        let (a, b) = UnixStream::pair().expect("socketpair");
        let raw = std::os::fd::IntoRawFd::into_raw_fd(b);
        let mut adopted = adopt_ipc_fd(raw).expect("a socket is adopted");
        let again = adopt_ipc_fd(a.as_raw_fd());
        assert!(again.is_err(), "only one adoption per process");
        (&a).write_all(b"hi").expect("write");
        let mut buf = [0u8; 2];
        adopted.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"hi");
    }
}
