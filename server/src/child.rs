//! What drivers and services have in common on the server's side: a child process started
//! on a socketpair with a scrubbed environment, killed and reaped when done; the buffered
//! connection to it ([`Conn`]); and a [`Link`] through which other tasks send it requests.
//!
//! A request goes into the link's channel with an [`Answer`], the callback that takes the
//! response; the process's connection loop gives it an id, remembers the answer under that
//! id ([`Pending`]) and calls it, on the loop's own task, when the response with that refid
//! arrives (or when the request's time is up, or the child goes away). A request needs no
//! task of its own and no channel for its answer.
//!
//! Writes are buffered: messages are encoded into the connection's write buffer and flushed
//! when the loop has nothing else ready, so requests that arrive together go out in one
//! write.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chipcard_ipc::message::{MessageSet, Ping};
use chipcard_ipc::{Addressed, IdCounter, IdOrder, Incoming, MessageCodec, Outgoing};
use chipcard_sock::{ReadHalf, WriteHalf};
use futures::{Future, Sink, SinkExt, StreamExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
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

/// The initial size of a child connection's read and write buffers (they grow as needed).
const BUFFER: usize = 8 * 1024;

/// Starts `program --ipc-fd 0 ID_FLAG ID` with its end of a socketpair as stdin, standard
/// output `/dev/null` and standard error inherited. With `run_as` (uid, gid) the process
/// gets that user and group (and no supplementary groups: the standard library drops them
/// when it changes the uid as root). The child is killed when the returned handle drops.
pub fn spawn<M>(
    program: &Path,
    id_flag: &str,
    id: &str,
    run_as: Option<(u32, u32)>,
) -> std::io::Result<(Child, Conn<M>)> {
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
    Ok((child, Conn::new(ours)?))
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

/// The buffered frames to a child whose messages are the set `M`.
pub type Writer<M> = FramedWrite<WriteHalf, MessageCodec<M>>;

/// Writes out what `writer` buffers.
pub fn flush<M>(
    writer: &mut Writer<M>,
) -> impl Future<Output = Result<(), chipcard_ipc::Error>> + '_ {
    // The item type only picks the `Sink` impl: flushing writes bytes already encoded.
    SinkExt::<Addressed<'static, Ping>>::flush(writer)
}

/// The connection to a child that sends the messages of the set `M`: frames in, read
/// straight into `M`, buffered frames out, ids both ways.
#[derive(Debug)]
pub struct Conn<M> {
    // chipcard_sock's halves, not tokio's: they do not wake the server each time the
    // child reads (see that crate).
    /// Frames from the child.
    pub reader: FramedRead<ReadHalf, MessageCodec<M>>,
    /// Frames to the child, buffered until [`Conn::flush`].
    pub writer: Writer<M>,
    ids: IdCounter,
    /// The child's ids, which must increase.
    pub order: IdOrder,
    /// Frames are in the write buffer.
    pub unflushed: bool,
}

impl<M> Conn<M> {
    fn new(stream: std::os::unix::net::UnixStream) -> std::io::Result<Conn<M>> {
        let (read, write) = chipcard_sock::split(stream)?;
        Ok(Conn {
            reader: FramedRead::with_capacity(read, MessageCodec::new(), BUFFER),
            writer: FramedWrite::with_capacity(write, MessageCodec::new(), BUFFER),
            ids: IdCounter::new(),
            order: IdOrder::new(),
            unflushed: false,
        })
    }

    /// Encodes a message into the write buffer (see [`Conn::flush`]); returns its id.
    pub fn queue(&mut self, refid: Option<u32>, msg: &impl Outgoing) -> Result<u32, String> {
        let id = self.ids.next_id();
        // `start_send` only encodes into the buffer; flushing is separate, and the buffer
        // is bounded by the requests in progress.
        std::pin::Pin::new(&mut self.writer)
            .start_send(Addressed {
                id,
                refid,
                message: msg,
            })
            .map_err(|e| e.to_string())?;
        self.unflushed = true;
        Ok(id)
    }

    /// Writes the buffer out, waiting as long as that takes.
    pub async fn flush(&mut self) -> Result<(), String> {
        self.unflushed = false;
        flush(&mut self.writer).await.map_err(|e| e.to_string())
    }

    /// The child's next message during its start, its id checked; `Err` with the reason
    /// when the connection cannot go on. A frame that is not an envelope is skipped.
    /// `who` is the child's kind (`driver`), `ready` the message awaited (`DriverReady`).
    pub async fn next_before_ready(&mut self, who: &str, ready: &str) -> Result<Incoming<M>, String>
    where
        M: MessageSet,
    {
        loop {
            let received = match self.reader.next().await {
                None => return Err(format!("the {who} closed its connection before {ready}")),
                Some(Err(e)) => return Err(format!("{who} broke the protocol: {e}")),
                Some(Ok(Err(e))) => {
                    warn!(error = %e, "bad message from {who} before {ready}");
                    continue;
                }
                Some(Ok(Ok(received))) => received,
            };
            self.order.check(received.id).map_err(|e| e.to_string())?;
            return Ok(received);
        }
    }

    /// Sends one message and waits until it is written; returns its id.
    pub async fn send(&mut self, refid: Option<u32>, msg: &impl Outgoing) -> Result<u32, String> {
        let id = self.queue(refid, msg)?;
        self.flush().await?;
        Ok(id)
    }
}

/// Takes a child's response to one request, or the reason there is none. Called once, on
/// the child's connection task: it must not block (it may lock the registry).
pub type Answer<Resp> = Box<dyn FnOnce(Result<Resp, CallError>) + Send>;

/// An [`Answer`] that is called exactly once: dropped without an answer (the child went
/// away with the request still queued) it answers [`CallError::Gone`].
struct AnswerOnce<Resp>(Option<Answer<Resp>>);

impl<Resp> AnswerOnce<Resp> {
    fn give(mut self, result: Result<Resp, CallError>) {
        if let Some(answer) = self.0.take() {
            answer(result);
        }
    }
}

impl<Resp> Drop for AnswerOnce<Resp> {
    fn drop(&mut self) {
        if let Some(answer) = self.0.take() {
            answer(Err(CallError::Gone));
        }
    }
}

impl<Resp> std::fmt::Debug for AnswerOnce<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerOnce")
    }
}

/// A request for a child, where its answer goes and until when it may come.
#[derive(Debug)]
pub struct Call<Req, Resp> {
    /// The request.
    pub msg: Req,
    deadline: Instant,
    answer: AnswerOnce<Resp>,
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
///
/// The queue is unbounded: what waits in it is bounded by the clients' own limits
/// (`maxClients` × `maxRequestsPerClient`), and requests keep their order.
#[derive(Debug)]
pub struct Link<Req, Resp> {
    tx: mpsc::UnboundedSender<Call<Req, Resp>>,
}

impl<Req, Resp> Clone for Link<Req, Resp> {
    fn clone(&self) -> Self {
        Link {
            tx: self.tx.clone(),
        }
    }
}

impl<Req, Resp: Send + 'static> Link<Req, Resp> {
    /// Sends a request; `answer` gets its response, or [`CallError::Timeout`] when none came
    /// within `limit`, or [`CallError::Gone`] when the child went away first. Never waits;
    /// `answer` may be called before this returns (the child is gone).
    pub fn send(&self, msg: impl Into<Req>, limit: Duration, answer: Answer<Resp>) {
        let call = Call {
            msg: msg.into(),
            deadline: Instant::now() + limit,
            answer: AnswerOnce(Some(answer)),
        };
        // A closed queue hands the call back; dropping it answers `Gone`.
        let _ = self.tx.send(call);
    }

    /// Sends a request and waits up to `limit` for its response.
    pub async fn call(&self, msg: impl Into<Req>, limit: Duration) -> Result<Resp, CallError> {
        let (tx, rx) = oneshot::channel();
        self.send(
            msg,
            limit,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.await.unwrap_or(Err(CallError::Gone))
    }
}

/// The receiving end of a [`Link`], owned by the connection loop.
#[derive(Debug)]
pub struct LinkEnd<Req, Resp> {
    /// The requests.
    pub rx: mpsc::UnboundedReceiver<Call<Req, Resp>>,
}

impl<Req, Resp> LinkEnd<Req, Resp> {
    /// Closes the link: requests still queued are answered [`CallError::Gone`], and so is
    /// every later one.
    pub fn close(&mut self) {
        self.rx.close();
        while let Ok(call) = self.rx.try_recv() {
            drop(call);
        }
    }
}

/// A new link and its receiving end.
pub fn link<Req, Resp>() -> (Link<Req, Resp>, LinkEnd<Req, Resp>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Link { tx }, LinkEnd { rx })
}

/// A request sent to a child, waiting for its response.
#[derive(Debug)]
struct Waiting<Resp> {
    deadline: Instant,
    answer: AnswerOnce<Resp>,
}

/// The requests written to a child and not answered yet, by message id.
#[derive(Debug)]
pub struct Pending<Resp> {
    calls: HashMap<u32, Waiting<Resp>>,
    /// No request's deadline is earlier than this (it may be later: answered requests are
    /// not looked for until then).
    pub next_expiry: Option<Instant>,
}

impl<Resp> Default for Pending<Resp> {
    fn default() -> Self {
        Pending {
            calls: HashMap::new(),
            next_expiry: None,
        }
    }
}

impl<Resp> Pending<Resp> {
    /// Remembers `call`, written with id `msg_id`.
    pub fn insert<Req>(&mut self, msg_id: u32, call: Call<Req, Resp>) {
        if self.next_expiry.map_or(true, |at| call.deadline < at) {
            self.next_expiry = Some(call.deadline);
        }
        self.calls.insert(
            msg_id,
            Waiting {
                deadline: call.deadline,
                answer: call.answer,
            },
        );
    }

    /// No request waits.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// A response: gives it to the request waiting for it. A response that does not
    /// decode is handed over as `bad(why)`.
    pub fn answer(
        &mut self,
        refid: u32,
        response: Incoming<Resp>,
        bad: impl FnOnce(String) -> Resp,
    ) {
        let Some(waiting) = self.calls.remove(&refid) else {
            // Also the late answer to a request that timed out.
            debug!(refid, cmd = %response.cmd, "response to no waiting request ignored");
            return;
        };
        let cmd = response.cmd;
        let msg = response.message.unwrap_or_else(|e| {
            warn!(refid, %cmd, error = %e, "bad response");
            bad(e.to_string())
        });
        waiting.answer.give(Ok(msg));
    }

    /// Answers `Timeout` to the requests whose deadline has passed; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let expired: Vec<u32> = self
            .calls
            .iter()
            .filter(|(_, waiting)| waiting.deadline <= now)
            .map(|(&msg_id, _)| msg_id)
            .collect();
        let count = expired.len();
        for msg_id in expired {
            if let Some(waiting) = self.calls.remove(&msg_id) {
                debug!(msg_id, "request timed out");
                waiting.answer.give(Err(CallError::Timeout));
            }
        }
        self.next_expiry = self.calls.values().map(|waiting| waiting.deadline).min();
        count
    }

    /// Fails every waiting request with `Gone`.
    pub fn fail_all(&mut self) {
        for (_, waiting) in self.calls.drain() {
            waiting.answer.give(Err(CallError::Gone));
        }
        self.next_expiry = None;
    }
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

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chipcard_ipc::message::{ErrorResponse, FromDriver, ToDriver};
    use chipcard_ipc::{Envelope, ErrorCode, Group};

    use super::*;

    type Seen = Arc<Mutex<Vec<Result<String, CallError>>>>;

    /// An answer that records what it was given (the text of an error response).
    fn recorder(seen: &Seen) -> Answer<FromDriver> {
        let seen = seen.clone();
        Box::new(move |result| {
            let entry = result.map(|msg| match msg {
                FromDriver::ErrorResponse(e) => e.text,
                other => other.cmd().to_owned(),
            });
            seen.lock().expect("not poisoned").push(entry);
        })
    }

    /// A message as the connection reads it.
    fn incoming(env: &Envelope) -> Incoming<FromDriver> {
        Incoming::decode(&env.encode(), &chipcard_ipc::Limits::default()).expect("an envelope")
    }

    fn bad(why: String) -> FromDriver {
        FromDriver::ErrorResponse(ErrorResponse::new(ErrorCode::DriverError, why))
    }

    #[tokio::test]
    async fn a_call_on_a_closed_link_is_gone() {
        let (link, mut end) = link::<ToDriver, FromDriver>();
        end.close();
        assert_eq!(
            link.call(Ping {}, Duration::from_secs(1)).await.err(),
            Some(CallError::Gone)
        );
        drop(end);
        assert_eq!(
            link.call(Ping {}, Duration::from_secs(1)).await.err(),
            Some(CallError::Gone)
        );
    }

    #[tokio::test]
    async fn queued_calls_are_answered_gone_when_the_link_closes() {
        let seen = Seen::default();
        let (link, mut end) = link::<ToDriver, FromDriver>();
        link.send(Ping {}, Duration::from_secs(5), recorder(&seen));
        link.send(Ping {}, Duration::from_secs(5), recorder(&seen));
        assert!(seen.lock().expect("not poisoned").is_empty());
        end.close();
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            vec![Err(CallError::Gone), Err(CallError::Gone)]
        );
    }

    #[tokio::test]
    async fn pending_answers_responses_expires_late_ones_and_fails_the_rest() {
        let seen = Seen::default();
        let (link, mut end) = link::<ToDriver, FromDriver>();
        let mut pending = Pending::default();
        link.send(Ping {}, Duration::from_secs(60), recorder(&seen));
        link.send(Ping {}, Duration::ZERO, recorder(&seen));
        link.send(Ping {}, Duration::from_secs(60), recorder(&seen));
        link.send(Ping {}, Duration::from_secs(30), recorder(&seen));
        for msg_id in 1..=4 {
            let call = end.rx.recv().await.expect("queued");
            pending.insert(msg_id, call);
        }
        let earliest = pending.next_expiry.expect("requests wait");
        assert!(earliest <= Instant::now());

        // A good response, a response that does not decode, one to no request.
        let response = || {
            incoming(&Envelope::new(
                10,
                Some(1),
                &ErrorResponse::new(ErrorCode::Timeout, "the reader timed out"),
            ))
        };
        pending.answer(1, response(), bad);
        let garbage = Envelope {
            id: 11,
            refid: Some(3),
            cmd: "NoSuchMessage".into(),
            data: Group::default(),
        };
        pending.answer(3, incoming(&garbage), |why| bad(format!("bad: {why}")));
        pending.answer(99, response(), bad);

        assert_eq!(pending.expire(Instant::now()), 1);
        assert!(pending.next_expiry.is_some_and(|at| at > Instant::now()));
        pending.fail_all();
        assert!(pending.is_empty());
        assert_eq!(pending.next_expiry, None);
        let seen = seen.lock().expect("not poisoned");
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(seen[0], Ok("the reader timed out".to_owned()));
        assert!(
            seen[1]
                .as_ref()
                .is_ok_and(|text| text.starts_with("bad: ") && text.contains("NoSuchMessage")),
            "{seen:?}"
        );
        assert_eq!(seen[2..], [Err(CallError::Timeout), Err(CallError::Gone)]);
    }
}
