//! The client socket: choosing its path, refusing to start over a live server, removing a
//! stale socket file, and setting its mode and group.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// The default socket path for this process (root: the system socket; others:
/// `$XDG_RUNTIME_DIR/chipcard/chipcardd.sock` when set).
pub fn default_path() -> PathBuf {
    let euid = nix::unistd::geteuid().as_raw();
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    chipcard_ipc::paths::default_socket_path(euid, runtime_dir.as_deref())
}

/// A bound socket that removes its file when dropped.
#[derive(Debug)]
pub struct BoundSocket {
    /// The listener.
    pub listener: UnixListener,
    path: PathBuf,
    /// False for a socket passed by the service manager: its file is the manager's.
    owned: bool,
}

impl BoundSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != ErrorKind::NotFound {
                warn!(path = %self.path.display(), error = %e, "cannot remove the socket file");
            }
        }
    }
}

/// Binds the client socket at `path` with `mode` and, if given, the group `group`.
pub fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<BoundSocket> {
    let fail = |message: String| Error::Socket {
        path: path.to_owned(),
        message,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| fail(format!("cannot create {}: {e}", parent.display())))?;
        check_directory(parent).map_err(fail)?;
    }
    remove_stale(path).map_err(fail)?;
    let gid = match group {
        None => None,
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .map_err(|e| fail(format!("cannot look up group '{name}': {e}")))?
                .ok_or_else(|| fail(format!("no group '{name}' (server/socketGroup)")))?
                .gid
                .as_raw(),
        ),
    };
    // Created owner-only (the umask is the process's, restored at once; nothing else
    // creates files while the socket is set up), then given its group and mode: nobody
    // else can connect in between.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(umask);
    let listener = listener.map_err(|e| fail(format!("cannot bind: {e}")))?;
    let bound = BoundSocket {
        listener,
        path: path.to_owned(),
        owned: true,
    };
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
            fail(format!(
                "cannot give it to group {}: {e}",
                group.unwrap_or_default()
            ))
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(format!("cannot set mode {mode:04o}: {e}")))?;
    info!(path = %path.display(), mode = format!("{mode:04o}"), "listening");
    Ok(bound)
}

/// Refuses a socket directory that others could use to replace the socket: one owned by
/// someone other than this user or root, or one writable by everyone without the sticky bit.
fn check_directory(dir: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(format!(
            "{} belongs to uid {}, not to this user ({euid}) or root",
            dir.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(format!(
            "{} is writable by everyone (mode {:04o}) without the sticky bit",
            dir.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Serves on a listening socket passed by the service manager (socket activation). Its
/// path, mode and group are the manager's; the file is left in place at exit.
pub fn adopt(listener: std::os::unix::net::UnixListener) -> Result<BoundSocket> {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_owned))
        .unwrap_or_default();
    let fail = |message: String| Error::Socket {
        path: path.clone(),
        message,
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(format!("cannot use the activated socket: {e}")))?;
    let listener = UnixListener::from_std(listener)
        .map_err(|e| fail(format!("cannot use the activated socket: {e}")))?;
    info!(path = %path.display(), "listening on the socket passed by the service manager");
    Ok(BoundSocket {
        listener,
        path,
        owned: false,
    })
}

/// Removes a socket file nobody listens on; refuses when a server answers, or when the path
/// is not a socket.
fn remove_stale(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot inspect it: {e}")),
    };
    if !meta.file_type().is_socket() {
        return Err("exists and is not a socket; not touching it".to_owned());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err("another server is already listening on it".to_owned()),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            info!(path = %path.display(), "removing stale socket file");
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket: {e}"))
        }
        Err(e) => Err(format!("exists and cannot be checked: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_anyone_may_write_is_refused_unless_sticky() {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = bind(&open.join("s.sock"), 0o600, None).expect_err("world-writable");
        assert!(e.to_string().contains("writable by everyone"), "{e}");
        assert!(!open.join("s.sock").exists());
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        let _bound = bind(&open.join("s.sock"), 0o600, None).expect("sticky, like /tmp");
    }

    #[tokio::test]
    async fn stale_sockets_are_replaced_live_ones_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub").join("s.sock");
        let first = bind(&path, 0o600, None).expect("binds");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let e = bind(&path, 0o600, None).expect_err("live");
        assert!(e.to_string().contains("already listening"), "{e}");
        // Leave a stale socket file behind.
        let listener =
            std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).expect("binds");
        drop(listener);
        drop(first);
        assert!(!path.exists(), "the file is removed on drop");
        let stale = dir.path().join("stale.sock");
        assert!(stale.exists());
        let _again = bind(&stale, 0o660, None).expect("stale file replaced");
        let e = bind(
            &dir.path().join("g.sock"),
            0o660,
            Some("no-such-group-here"),
        )
        .expect_err("unknown group");
        assert!(
            e.to_string().contains("no group 'no-such-group-here'"),
            "{e}"
        );
        if nix::unistd::geteuid().is_root() {
            let _g = bind(&dir.path().join("root.sock"), 0o660, Some("root")).expect("binds");
        }
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").expect("writes");
        assert!(bind(&plain, 0o660, None).is_err());
    }
}
