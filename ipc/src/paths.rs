//! Where the server's socket lives by default, so that the server and its clients agree.

use std::path::{Path, PathBuf};

/// The environment variable a client reads for the socket path.
pub const SOCKET_ENV: &str = "CHIPCARD_SOCKET";

/// The system-wide default socket (root, or a system service).
pub const SYSTEM_SOCKET: &str = "/run/chipcard/chipcardd.sock";

/// The socket of a server run by the user with effective id `euid` (not root):
/// `$XDG_RUNTIME_DIR/chipcard/chipcardd.sock` when `XDG_RUNTIME_DIR` is set, else
/// `/tmp/chipcard-EUID/chipcardd.sock` (the server refuses that directory if someone else
/// made it). `None` for root, whose server uses [`SYSTEM_SOCKET`].
pub fn user_socket_path(euid: u32, xdg_runtime_dir: Option<&Path>) -> Option<PathBuf> {
    if euid == 0 {
        return None;
    }
    Some(match xdg_runtime_dir {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("chipcard").join("chipcardd.sock"),
        _ => PathBuf::from(format!("/tmp/chipcard-{euid}/chipcardd.sock")),
    })
}

/// The socket a server run with effective user id `euid` listens on by default: root's is
/// [`SYSTEM_SOCKET`], another user's is its [`user_socket_path`].
pub fn default_socket_path(euid: u32, xdg_runtime_dir: Option<&Path>) -> PathBuf {
    user_socket_path(euid, xdg_runtime_dir).unwrap_or_else(|| PathBuf::from(SYSTEM_SOCKET))
}

/// The socket a client run with effective user id `euid` connects to by default: the user's
/// own server's ([`user_socket_path`]) when that socket exists, else the system server's
/// ([`SYSTEM_SOCKET`]). `exists` tells whether a path exists (`Path::exists`).
pub fn client_socket_path(
    euid: u32,
    xdg_runtime_dir: Option<&Path>,
    exists: impl Fn(&Path) -> bool,
) -> PathBuf {
    user_socket_path(euid, xdg_runtime_dir)
        .filter(|path| exists(path))
        .unwrap_or_else(|| PathBuf::from(SYSTEM_SOCKET))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_listen_on_root_and_user_defaults() {
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
            PathBuf::from("/tmp/chipcard-1000/chipcardd.sock")
        );
        assert_eq!(
            default_socket_path(1000, Some(Path::new(""))),
            PathBuf::from("/tmp/chipcard-1000/chipcardd.sock")
        );
    }

    #[test]
    fn clients_find_the_users_server_else_the_systems() {
        let xdg = Some(Path::new("/run/user/1000"));
        let user = PathBuf::from("/run/user/1000/chipcard/chipcardd.sock");
        assert_eq!(client_socket_path(1000, xdg, |p| p == user), user);
        assert_eq!(
            client_socket_path(1000, xdg, |_| false),
            PathBuf::from(SYSTEM_SOCKET)
        );
        assert_eq!(
            client_socket_path(1000, None, |p| p
                == Path::new("/tmp/chipcard-1000/chipcardd.sock")),
            PathBuf::from("/tmp/chipcard-1000/chipcardd.sock")
        );
        // Root always talks to the system server.
        assert_eq!(
            client_socket_path(0, xdg, |_| true),
            PathBuf::from(SYSTEM_SOCKET)
        );
    }
}
