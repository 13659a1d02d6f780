//! systemd integration without libsystemd: `sd_notify` readiness messages on the datagram
//! socket named by `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`), and
//! socket activation (`$LISTEN_PID`, `$LISTEN_FDS`: the listening socket is fd 3).
//!
//! chipcardd sends `READY=1` once every driver's first start has settled and the client
//! socket accepts, `RELOADING=1` / `READY=1` around a SIGHUP reload, and `STOPPING=1` when
//! it begins to shut down. Without `$NOTIFY_SOCKET` nothing is sent.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `READY=1`) to the service manager. `Ok(false)` when there is none.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let addr = notify_addr(target.as_encoded_bytes())?;
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// The address `$NOTIFY_SOCKET` names.
fn notify_addr(target: &[u8]) -> io::Result<SocketAddr> {
    match target.split_first() {
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is empty",
        )),
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        Some((b'/', _)) => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(target))
        }
        Some(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an abstract name",
        )),
    }
}

/// The first file descriptor passed by socket activation.
const LISTEN_FDS_START: RawFd = 3;

/// The listening client socket passed by systemd socket activation, if any.
///
/// `Ok(None)` unless `$LISTEN_PID` is this process and `$LISTEN_FDS` ≥ 1. Then fd 3 must be
/// an open, listening Unix stream socket, or this fails (rather than adopt some other
/// descriptor). The fd is marked close-on-exec so drivers do not inherit it, and the
/// `LISTEN_*` variables are removed. Call this before any other thread starts.
pub fn activated_listener() -> io::Result<Option<std::os::unix::net::UnixListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(key);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count: u32 = fds
        .trim()
        .parse()
        .map_err(|_| bad("LISTEN_FDS is not a number"))?;
    if count == 0 {
        return Ok(None);
    }
    if count > 1 {
        tracing::warn!(
            count,
            "socket activation passed several sockets; using the first"
        );
    }
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use nix::sys::stat::{fstat, SFlag};
    fcntl(LISTEN_FDS_START, FcntlArg::F_GETFD).map_err(|e| bad(&format!("fd 3: {e}")))?;
    let stat = fstat(LISTEN_FDS_START).map_err(|e| bad(&format!("fd 3: {e}")))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(bad("fd 3 is not a socket"));
    }
    let fd = adopt_listen_fd();
    use nix::sys::socket::{getsockname, getsockopt, sockopt, UnixAddr};
    use std::os::fd::AsRawFd;
    if !getsockopt(&fd, sockopt::AcceptConn).map_err(|e| bad(&format!("fd 3: {e}")))? {
        return Err(bad("fd 3 is not a listening socket"));
    }
    getsockname::<UnixAddr>(fd.as_raw_fd()).map_err(|_| bad("fd 3 is not a Unix socket"))?;
    if getsockopt(&fd, sockopt::SockType).map_err(|e| bad(&format!("fd 3: {e}")))?
        != nix::sys::socket::SockType::Stream
    {
        return Err(bad("fd 3 is not a stream socket"));
    }
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| bad(&format!("fd 3: {e}")))?;
    Ok(Some(std::os::unix::net::UnixListener::from(fd)))
}

/// Takes ownership of fd 3.
#[allow(unsafe_code)]
fn adopt_listen_fd() -> OwnedFd {
    // SAFETY: `activated_listener` checked that LISTEN_PID is this process (so systemd
    // passed fd 3 to us), that fd 3 is open (F_GETFD) and is a socket (fstat S_IFSOCK).
    // Nothing else in chipcardd opens, owns or closes fd 3 before this: it is called once,
    // first thing in `main`, before the runtime or any other thread exists, and the
    // descriptor is owned only by the returned OwnedFd from here on.
    unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) }
}

fn bad(message: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("socket activation: {message}"),
    )
}

/// Logs a failed notification; readiness messages are best effort.
pub fn notify_or_warn(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(notify_addr(b"/run/systemd/notify")
            .expect("path")
            .as_pathname()
            .is_some());
        assert!(notify_addr(b"@abstract").is_ok());
        assert!(notify_addr(b"").is_err());
        assert!(notify_addr(b"relative").is_err());
    }

    #[test]
    fn a_notification_reaches_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let addr = notify_addr(path.as_os_str().as_encoded_bytes()).expect("addr");
        let socket = UnixDatagram::unbound().expect("socket");
        socket.send_to_addr(b"READY=1", &addr).expect("send");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }
}
