//! What drivers and services have in common on the server's side: a child process started
//! on a socketpair with a scrubbed environment, killed and reaped when done, and a
//! [`Link`] through which other tasks send it requests and get the answers.
//!
//! A request goes into the link's channel with a oneshot for the answer; the process's
//! connection loop gives it an id, remembers the oneshot under that id, and completes it
//! when the response with that refid arrives.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chipcard_ipc::{Envelope, Group};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

/// The environment variables a driver or service process inherits; all others are removed.
pub const CHILD_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "PCSCLITE_CSOCK_NAME",
];

/// How long a child has to exit after being told to stop, or after being killed.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How many requests may wait for a connection to send them.
const CALL_QUEUE: usize = 64;

/// Starts `program --ipc-fd 0 ID_FLAG ID` with its end of a socketpair as stdin, standard
/// output `/dev/null` and standard error inherited. With `run_as` (uid, gid) the process
/// gets that user and group (and no supplementary groups: the standard library drops them
/// when it changes the uid as root). The child is killed when the returned handle drops.
pub fn spawn(
    program: &Path,
    id_flag: &str,
    id: &str,
    run_as: Option<(u32, u32)>,
) -> std::io::Result<(Child, UnixStream)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut command = Command::new(program);
    command.env_clear();
    for key in CHILD_ENV {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    command
        .arg("--ipc-fd")
        .arg("0")
        .arg(id_flag)
        .arg(id)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let child = command.spawn()?;
    // The command holds our copy of the child's end; close it so that the child's exit
    // closes the connection.
    drop(command);
    ours.set_nonblocking(true)?;
    let stream = UnixStream::from_std(ours)?;
    Ok((child, stream))
}

/// Kills `child` (if it still runs) and reaps it.
pub async fn kill(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.start_kill();
    }
    match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
        Ok(Ok(status)) => debug!(%status, "child process reaped"),
        Ok(Err(e)) => warn!(error = %e, "cannot reap child process"),
        Err(_) => warn!("child process did not exit after SIGKILL"),
    }
}

/// Gives `child` [`EXIT_GRACE`] to exit (after it was told to stop), then kills it.
pub async fn await_exit_or_kill(child: &mut Child) {
    if tokio::time::timeout(EXIT_GRACE, child.wait())
        .await
        .is_err()
    {
        kill(child).await;
    }
}

/// A request for a child and where its answer goes.
#[derive(Debug)]
pub struct Call<Req, Resp> {
    /// The request.
    pub msg: Req,
    /// Where the response goes.
    pub reply: oneshot::Sender<Resp>,
}

/// Why a request to a child got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// The connection closed first.
    Gone,
    /// No answer in time.
    Timeout,
}

/// The way to send requests to a running child; cheap to clone.
#[derive(Debug)]
pub struct Link<Req, Resp> {
    tx: mpsc::Sender<Call<Req, Resp>>,
}

impl<Req, Resp> Clone for Link<Req, Resp> {
    fn clone(&self) -> Self {
        Link {
            tx: self.tx.clone(),
        }
    }
}

impl<Req, Resp> Link<Req, Resp> {
    /// Sends a request and waits up to `limit` for its response.
    pub async fn call(&self, msg: impl Into<Req>, limit: Duration) -> Result<Resp, CallError> {
        let (reply, rx) = oneshot::channel();
        let call = Call {
            msg: msg.into(),
            reply,
        };
        let exchange = async {
            self.tx.send(call).await.map_err(|_| CallError::Gone)?;
            rx.await.map_err(|_| CallError::Gone)
        };
        tokio::time::timeout(limit, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }
}

/// The receiving end of a [`Link`], owned by the connection loop.
#[derive(Debug)]
pub struct LinkEnd<Req, Resp> {
    /// The requests.
    pub rx: mpsc::Receiver<Call<Req, Resp>>,
}

/// A new link and its receiving end.
pub fn link<Req, Resp>() -> (Link<Req, Resp>, LinkEnd<Req, Resp>) {
    let (tx, rx) = mpsc::channel(CALL_QUEUE);
    (Link { tx }, LinkEnd { rx })
}

/// Ping settings for a connection.
#[derive(Debug, Clone, Copy)]
pub struct Pinging {
    /// How often; zero = never.
    pub interval: Duration,
    /// How long an answer may take.
    pub timeout: Duration,
}

/// Sleeps until `deadline`, or forever without one.
pub async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A response from a child: completes the request waiting for it. A response that does
/// not decode is handed over as `bad(why)`.
pub fn complete<R>(
    pending: &mut HashMap<u32, oneshot::Sender<R>>,
    refid: u32,
    env: &Envelope,
    decode: impl FnOnce(&str, &Group) -> Result<R, chipcard_ipc::Error>,
    bad: impl FnOnce(String) -> R,
) {
    let Some(reply) = pending.remove(&refid) else {
        warn!(refid, cmd = %env.cmd, "response to no request of ours");
        return;
    };
    let msg = decode(&env.cmd, &env.data).unwrap_or_else(|e| {
        warn!(refid, cmd = %env.cmd, error = %e, "bad response");
        bad(e.to_string())
    });
    let _ = reply.send(msg);
}
