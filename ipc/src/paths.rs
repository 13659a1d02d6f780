//! Where the server's socket lives by default, so that the server and its clients agree.

use std::path::{Path, PathBuf};

/// The environment variable a client reads for the socket path.
pub const SOCKET_ENV: &str = "CHIPCARD_SOCKET";

/// The system-wide default socket (root, or a system service).
pub const SYSTEM_SOCKET: &str = "/run/chipcard/chipcardd.sock";

/// The default socket for a process with effective user id `euid`.
///
/// Root uses [`SYSTEM_SOCKET`]. Another user uses `$XDG_RUNTIME_DIR/chipcard/chipcardd.sock`
/// when `XDG_RUNTIME_DIR` is set, else [`SYSTEM_SOCKET`].
pub fn default_socket_path(euid: u32, xdg_runtime_dir: Option<&Path>) -> PathBuf {
    match xdg_runtime_dir {
        Some(dir) if euid != 0 && !dir.as_os_str().is_empty() => {
            dir.join("chipcard").join("chipcardd.sock")
        }
        _ => PathBuf::from(SYSTEM_SOCKET),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_user_defaults() {
        assert_eq!(
            default_socket_path(0, Some(Path::new("/run/user/0"))),
            PathBuf::from(SYSTEM_SOCKET)
        );
        assert_eq!(
            default_socket_path(1000, Some(Path::new("/run/user/1000"))),
            PathBuf::from("/run/user/1000/chipcard/chipcardd.sock")
        );
        assert_eq!(
            default_socket_path(1000, None),
            PathBuf::from(SYSTEM_SOCKET)
        );
    }
}
