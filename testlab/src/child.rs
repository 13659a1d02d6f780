//! A driver or service binary started the way chipcardd starts it: one end of a socketpair
//! as its standard input and `--ipc-fd 0` on its command line, with the test holding the
//! other end as a [`Link`].

use std::ffi::OsStr;
use std::fmt::Debug;
use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chipcard_ipc::message::MessageSet;
use tokio::net::UnixStream;

use crate::link::Link;

/// The command line chipcardd gives a child: `EXE --ipc-fd 0 --ID_FLAG 0x00000001
/// --log-level LOG_LEVEL` (`id_flag`: `driver-id` or `service-id`).
pub fn child_command(exe: impl AsRef<OsStr>, id_flag: &str, log_level: &str) -> Command {
    let mut command = Command::new(exe);
    command
        .args(["--ipc-fd", "0", &format!("--{id_flag}"), "0x00000001"])
        .args(["--log-level", log_level]);
    command
}

/// A running child process and the test's [`Link`] to it (which it dereferences to). The
/// process is killed when this is dropped before it exited.
pub struct LinkedChild<M> {
    link: Link<M>,
    child: Child,
}

impl<M: MessageSet + Debug> LinkedChild<M> {
    /// Starts `command` (see [`child_command`]) with its end of a fresh socketpair as
    /// standard input, standard output discarded and standard error inherited.
    /// Must run inside a tokio runtime.
    pub fn spawn(mut command: Command) -> LinkedChild<M> {
        let (ours, theirs) = StdUnixStream::pair().expect("socketpair");
        let child = command
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts");
        ours.set_nonblocking(true).expect("nonblocking");
        let ours = UnixStream::from_std(ours).expect("tokio stream");
        LinkedChild {
            link: Link::new(ours),
            child,
        }
    }
}

impl<M> LinkedChild<M> {
    /// Waits up to `limit` for the process to exit; fails the test if it does not.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the child did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl<M> Deref for LinkedChild<M> {
    type Target = Link<M>;

    fn deref(&self) -> &Link<M> {
        &self.link
    }
}

impl<M> DerefMut for LinkedChild<M> {
    fn deref_mut(&mut self) -> &mut Link<M> {
        &mut self.link
    }
}

impl<M> Drop for LinkedChild<M> {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
