//! One driver process: starting it on a socketpair, the `DriverStart`/`DriverReady`
//! handshake, and the connection loop that routes responses by refid, turns events into
//! registry changes and pings the driver.
//!
//! Other tasks reach the driver through a [`DriverLink`]: a request goes into the link's
//! channel with an [`Answer`], the callback that takes the response; the connection loop
//! gives it an id, remembers the answer under that id and calls it, on the loop's own task,
//! when the response with that refid arrives (or when the request's time is up, or the
//! driver goes away). A request needs no task of its own and no channel for its answer.
//!
//! Writes are buffered: requests are encoded into the connection's write buffer and the
//! buffer is flushed when the loop has nothing else ready, so requests that arrive together
//! go out in one write. The loop never waits for a write to finish: a driver that is slow to
//! read cannot stop the loop from reading its responses or timing requests out.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chipcard_ipc::message::{
    DriverReader, DriverStart, ErrorResponse, FromDriver, Ping, StopDriver, ToDriver,
};
use chipcard_ipc::{
    DriverId, Envelope, EnvelopeCodec, ErrorCode, Group, IdCounter, IdOrder, Outgoing,
};
use chipcard_sock::{ReadHalf, WriteHalf};
use futures::{FutureExt, Sink, SinkExt, StreamExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::server::Shared;

/// The most requests the loop takes from its link before it writes them out.
const CALL_BATCH: usize = 64;

/// The initial size of a driver connection's read and write buffers (they grow as needed).
const BUFFER: usize = 8 * 1024;

/// The environment variables a driver process inherits; all others are removed.
pub const DRIVER_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "PCSCLITE_CSOCK_NAME",
];

/// How long a driver has to exit after `StopDriver`, or after being killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Takes the driver's response to one request, or the reason there is none. Called once,
/// on the driver's connection task: it must not block (it may lock the registry).
pub type Answer = Box<dyn FnOnce(Result<FromDriver, CallError>) + Send>;

/// An [`Answer`] that is called exactly once: dropped without an answer (the driver went
/// away with the request still queued) it answers [`CallError::Gone`].
struct AnswerOnce(Option<Answer>);

impl AnswerOnce {
    fn give(mut self, result: Result<FromDriver, CallError>) {
        if let Some(answer) = self.0.take() {
            answer(result);
        }
    }
}

impl Drop for AnswerOnce {
    fn drop(&mut self) {
        if let Some(answer) = self.0.take() {
            answer(Err(CallError::Gone));
        }
    }
}

impl std::fmt::Debug for AnswerOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerOnce")
    }
}

/// A request for the driver, where its answer goes and until when it may come.
#[derive(Debug)]
struct DriverCall {
    msg: ToDriver,
    deadline: Instant,
    answer: AnswerOnce,
}

/// A request sent to the driver, waiting for its response.
#[derive(Debug)]
struct Waiting {
    deadline: Instant,
    answer: AnswerOnce,
}

/// Why a request to a driver got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// The driver's connection closed first.
    Gone,
    /// No answer in time.
    Timeout,
}

/// The way to send requests to a running driver; cheap to clone.
///
/// The queue is unbounded: what waits in it is bounded by the clients' own limits
/// (`maxClients` × `maxRequestsPerClient`), and requests keep their order.
#[derive(Debug, Clone)]
pub struct DriverLink {
    tx: mpsc::UnboundedSender<DriverCall>,
}

impl DriverLink {
    fn new() -> (DriverLink, mpsc::UnboundedReceiver<DriverCall>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (DriverLink { tx }, rx)
    }

    /// Sends a request; `answer` gets its response, or [`CallError::Timeout`] when none came
    /// within `limit`, or [`CallError::Gone`] when the driver went away first. Never waits;
    /// `answer` may be called before this returns (the driver is gone).
    pub fn send(&self, msg: impl Into<ToDriver>, limit: Duration, answer: Answer) {
        let call = DriverCall {
            msg: msg.into(),
            deadline: Instant::now() + limit,
            answer: AnswerOnce(Some(answer)),
        };
        // A closed queue hands the call back; dropping it answers `Gone`.
        let _ = self.tx.send(call);
    }

    /// Sends a request and waits up to `limit` for its response.
    pub async fn call(
        &self,
        msg: impl Into<ToDriver>,
        limit: Duration,
    ) -> Result<FromDriver, CallError> {
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

/// How a driver's connection ended.
#[derive(Debug)]
pub enum Ending {
    /// The server is stopping; the driver was told to stop.
    Shutdown,
    /// The process exited.
    Exited(String),
    /// The connection closed.
    Closed,
    /// The driver broke the protocol (framing, ids).
    Protocol(String),
    /// The driver did not answer a ping in time.
    Hung,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Shutdown => f.write_str("server shutting down"),
            Ending::Exited(status) => write!(f, "driver exited ({status})"),
            Ending::Closed => f.write_str("driver closed its connection"),
            Ending::Protocol(e) => write!(f, "driver broke the protocol: {e}"),
            Ending::Hung => f.write_str("driver did not answer a ping in time"),
        }
    }
}

/// What `DriverReady` said.
#[derive(Debug)]
pub struct Ready {
    /// The id of the `DriverReady` message, answered by `DriverReadyResponse`.
    pub id: u32,
    /// The readers.
    pub readers: Vec<DriverReader>,
    /// The driver's text.
    pub text: String,
}

/// Ping settings for a connection.
#[derive(Debug, Clone, Copy)]
pub struct Pinging {
    /// How often; zero = never.
    pub interval: Duration,
    /// How long an answer may take.
    pub timeout: Duration,
}

/// Told once when a freshly started driver has settled: its first Ping (sent right after
/// `DriverReadyResponse`) is answered, so every event it sent during its start is in.
pub type Settled = Option<tokio::sync::oneshot::Sender<()>>;

/// A started driver process and its connection.
#[derive(Debug)]
pub struct DriverProcess {
    child: Child,
    conn: Conn,
}

/// The connection to a driver: frames in, buffered frames out, ids both ways.
#[derive(Debug)]
struct Conn {
    // chipcard_sock's halves, not tokio's: they do not wake the server each time the
    // driver reads (see that crate).
    reader: FramedRead<ReadHalf, EnvelopeCodec>,
    writer: FramedWrite<WriteHalf, EnvelopeCodec>,
    ids: IdCounter,
    order: IdOrder,
    /// Frames are in the write buffer.
    unflushed: bool,
}

impl Conn {
    fn new(stream: std::os::unix::net::UnixStream) -> std::io::Result<Conn> {
        let (read, write) = chipcard_sock::split(stream)?;
        Ok(Conn {
            reader: FramedRead::with_capacity(read, EnvelopeCodec::new(), BUFFER),
            writer: FramedWrite::with_capacity(write, EnvelopeCodec::new(), BUFFER),
            ids: IdCounter::new(),
            order: IdOrder::new(),
            unflushed: false,
        })
    }

    /// Encodes a message into the write buffer (see [`Conn::flush`]); returns its id.
    fn queue(&mut self, refid: Option<u32>, msg: &impl Outgoing) -> Result<u32, String> {
        let id = self.ids.next_id();
        // `start_send` only encodes into the buffer; flushing is separate, and the buffer
        // is bounded by the requests in progress.
        std::pin::Pin::new(&mut self.writer)
            .start_send(Envelope::new(id, refid, msg))
            .map_err(|e| e.to_string())?;
        self.unflushed = true;
        Ok(id)
    }

    /// Writes the buffer out, waiting as long as that takes.
    async fn flush(&mut self) -> Result<(), String> {
        self.unflushed = false;
        SinkExt::<Envelope>::flush(&mut self.writer)
            .await
            .map_err(|e| e.to_string())
    }
}

impl DriverProcess {
    /// Starts `program --ipc-fd 0 --driver-id 0x...` with its end of a socketpair as stdin.
    /// With `run_as` (uid, gid) the process gets that user and group (and no supplementary
    /// groups: the standard library drops them when it changes the uid as root).
    pub fn spawn(
        program: &Path,
        id: DriverId,
        run_as: Option<(u32, u32)>,
    ) -> Result<DriverProcess> {
        let spawn_error = |source| Error::SpawnDriver {
            program: program.to_owned(),
            source,
        };
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(spawn_error)?;
        let mut command = Command::new(program);
        // Drivers get a scrubbed environment: only the variables in `DRIVER_ENV` pass.
        command.env_clear();
        for key in DRIVER_ENV {
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
            .arg("--driver-id")
            .arg(id.to_string())
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command.spawn().map_err(spawn_error)?;
        // The command holds our copy of the driver's end; close it so that the driver's
        // exit closes the connection.
        drop(command);
        let conn = Conn::new(ours).map_err(spawn_error)?;
        Ok(DriverProcess { child, conn })
    }

    /// The process id, for logs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends one message and waits until it is written.
    pub async fn send(&mut self, refid: Option<u32>, msg: &impl Outgoing) -> Result<u32, String> {
        let id = self.conn.queue(refid, msg)?;
        self.conn.flush().await?;
        Ok(id)
    }

    /// Sends `DriverStart` and waits for `DriverReady` (the caller bounds the time).
    pub async fn handshake(&mut self, id: DriverId, config: Group) -> Result<Ready, String> {
        self.send(
            None,
            &DriverStart {
                driver_id: id,
                config,
            },
        )
        .await?;
        loop {
            let env = match self.conn.reader.next().await {
                None => return Err("the driver closed its connection before DriverReady".into()),
                Some(Err(e)) => return Err(format!("driver broke the protocol: {e}")),
                Some(Ok(Err(e))) => {
                    warn!(error = %e, "bad message from driver before DriverReady");
                    continue;
                }
                Some(Ok(Ok(env))) => env,
            };
            self.conn.order.check(env.id).map_err(|e| e.to_string())?;
            match FromDriver::decode(&env.cmd, &env.data) {
                Ok(FromDriver::DriverReady(ready)) => {
                    if ready.driver_id != id {
                        warn!(said = %ready.driver_id, "DriverReady names another driver id");
                    }
                    if let Some(code) = ready.outcome.error {
                        return Err(format!(
                            "driver failed to start: {} ({code})",
                            ready.outcome.text
                        ));
                    }
                    return Ok(Ready {
                        id: env.id,
                        readers: ready.readers.0,
                        text: ready.outcome.text,
                    });
                }
                Ok(other) => warn!(cmd = other.cmd(), "message before DriverReady ignored"),
                Err(e) => return Err(format!("bad DriverReady: {e}")),
            }
        }
    }

    /// Runs the connection until it ends: requests out, responses and events in, pings.
    /// When it ends (other than at shutdown) the driver is marked down in the registry
    /// before the requests still waiting for answers fail, so their callers see the cards
    /// as removed.
    pub async fn serve(
        &mut self,
        shared: &Shared,
        id: DriverId,
        link: &mut LinkEnd,
        pinging: Pinging,
        settled: Settled,
        stop: &CancellationToken,
    ) -> Ending {
        let mut pending = Pending::default();
        let ending = self
            .serve_loop(shared, id, link, pinging, &mut pending, settled, stop)
            .await;
        if matches!(ending, Ending::Shutdown) {
            self.stop().await;
        } else {
            let why = ending.to_string();
            let mut reg = shared.lock();
            if matches!(ending, Ending::Hung | Ending::Protocol(_)) {
                reg.driver_error(id, &why);
            }
            reg.driver_down(id, &why);
        }
        // Outside the registry's lock: the answers may take it. Requests still queued and
        // requests sent but unanswered fail with `Gone`.
        link.rx.close();
        while let Ok(call) = link.rx.try_recv() {
            drop(call);
        }
        pending.fail_all();
        ending
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve_loop(
        &mut self,
        shared: &Shared,
        id: DriverId,
        link: &mut LinkEnd,
        pinging: Pinging,
        pending: &mut Pending,
        mut settled: Settled,
        stop: &CancellationToken,
    ) -> Ending {
        let DriverProcess { child, conn } = self;
        let ping_every = if pinging.interval.is_zero() {
            Duration::from_secs(24 * 3600)
        } else {
            pinging.interval
        };
        let mut ping_timer = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping: Option<(u32, Instant)> = None;
        if settled.is_some() {
            // The settling ping: its answer comes after every event of the driver's start.
            match conn.queue(None, &Ping {}) {
                Ok(msg_id) => ping = Some((msg_id, Instant::now() + pinging.timeout)),
                Err(e) => return Ending::Protocol(format!("cannot write to driver: {e}")),
            }
        }
        // Made once, not per turn of the loop: each would register a waiter anew.
        let stopped = stop.cancelled();
        let exited = child.wait();
        // One timer for the ping deadline and for the oldest request's deadline. It is
        // moved only when it must fire earlier, so a request costs no timer operation; a
        // timer that fires for a request answered meanwhile just re-arms.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(stopped, exited, timer);
        let mut timer_at: Option<Instant> = None;
        loop {
            let wake_at = match (ping.map(|(_, at)| at), pending.next_expiry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(at) = wake_at {
                if timer_at.map_or(true, |armed| at < armed) {
                    timer.as_mut().reset(at);
                    timer_at = Some(at);
                }
            }
            tokio::select! {
                biased;
                _ = &mut stopped => return Ending::Shutdown,
                status = &mut exited => {
                    return Ending::Exited(match status {
                        Ok(s) => s.to_string(),
                        Err(e) => e.to_string(),
                    });
                }
                frame = conn.reader.next() => match frame {
                    None => return Ending::Closed,
                    Some(Err(e)) => {
                        if conn.queue(None, &ErrorResponse::new(ErrorCode::Protocol, e.to_string())).is_ok() {
                            let _ = tokio::time::timeout(EXIT_GRACE, conn.flush()).await;
                        }
                        return Ending::Protocol(e.to_string());
                    }
                    Some(Ok(Err(e))) => warn!(error = %e, "bad message from driver ignored"),
                    Some(Ok(Ok(env))) => {
                        if let Err(e) = conn.order.check(env.id) {
                            return Ending::Protocol(e.to_string());
                        }
                        match env.refid {
                            Some(refid) if ping.is_some_and(|(p, _)| p == refid) => {
                                ping = None;
                                if let Some(tx) = settled.take() {
                                    let _ = tx.send(());
                                }
                            }
                            Some(refid) => pending.answer(refid, &env),
                            None => event(shared, id, &env),
                        }
                    }
                },
                Some(call) = link.rx.recv() => {
                    // Take what else is queued too: one write for all of them.
                    let mut next = Some(call);
                    let mut taken = 0;
                    while let Some(call) = next {
                        match conn.queue(None, &call.msg) {
                            Ok(msg_id) => pending.insert(msg_id, call),
                            Err(e) => return Ending::Protocol(format!("cannot write to driver: {e}")),
                        }
                        taken += 1;
                        next = if taken < CALL_BATCH { link.rx.try_recv().ok() } else { None };
                    }
                    // Nothing else queued: write now, without another turn of the loop.
                    // What the socket does not take at once is left to the flush branch.
                    if taken < CALL_BATCH {
                        if let Some(written) = SinkExt::<Envelope>::flush(&mut conn.writer).now_or_never() {
                            conn.unflushed = false;
                            if let Err(e) = written {
                                return Ending::Protocol(format!("cannot write to driver: {e}"));
                            }
                        }
                    }
                }
                _ = ping_timer.tick(), if !pinging.interval.is_zero() && ping.is_none() => {
                    match conn.queue(None, &Ping {}) {
                        Ok(msg_id) => ping = Some((msg_id, Instant::now() + pinging.timeout)),
                        Err(e) => return Ending::Protocol(format!("cannot write to driver: {e}")),
                    }
                }
                () = &mut timer, if timer_at.is_some() => {
                    timer_at = None;
                    let now = Instant::now();
                    if ping.is_some_and(|(_, at)| at <= now) {
                        return Ending::Hung;
                    }
                    pending.expire(now);
                }
                // Last: only when nothing else is ready, so requests that came together
                // leave in one write.
                written = SinkExt::<Envelope>::flush(&mut conn.writer), if conn.unflushed => {
                    conn.unflushed = false;
                    if let Err(e) = written {
                        return Ending::Protocol(format!("cannot write to driver: {e}"));
                    }
                }
            }
        }
    }

    /// Asks the driver to stop, and kills it if it does not within a grace period.
    async fn stop(&mut self) {
        let _ = tokio::time::timeout(EXIT_GRACE, self.send(None, &StopDriver {})).await;
        if tokio::time::timeout(EXIT_GRACE, self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }

    /// Kills the process (if it still runs) and reaps it.
    pub async fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.start_kill();
        }
        match tokio::time::timeout(EXIT_GRACE, self.child.wait()).await {
            Ok(Ok(status)) => debug!(%status, "driver process reaped"),
            Ok(Err(e)) => warn!(error = %e, "cannot reap driver process"),
            Err(_) => warn!("driver process did not exit after SIGKILL"),
        }
    }
}

/// The receiving end of a [`DriverLink`], owned by the connection loop.
#[derive(Debug)]
pub struct LinkEnd {
    rx: mpsc::UnboundedReceiver<DriverCall>,
}

/// A new link and its receiving end.
pub fn link() -> (DriverLink, LinkEnd) {
    let (link, rx) = DriverLink::new();
    (link, LinkEnd { rx })
}

/// The requests written to the driver and not answered yet, by message id.
#[derive(Debug, Default)]
struct Pending {
    calls: HashMap<u32, Waiting>,
    /// No request's deadline is earlier than this (it may be later: answered requests are
    /// not looked for until then).
    next_expiry: Option<Instant>,
}

impl Pending {
    fn insert(&mut self, msg_id: u32, call: DriverCall) {
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

    /// A response: give it to the request waiting for it.
    fn answer(&mut self, refid: u32, env: &Envelope) {
        let Some(waiting) = self.calls.remove(&refid) else {
            // Also the late answer to a request that timed out.
            debug!(refid, cmd = %env.cmd, "response to no waiting request ignored");
            return;
        };
        let msg = FromDriver::decode(&env.cmd, &env.data).unwrap_or_else(|e| {
            warn!(refid, cmd = %env.cmd, error = %e, "bad response from driver");
            FromDriver::ErrorResponse(ErrorResponse::new(
                ErrorCode::DriverError,
                format!("the driver sent a bad response: {e}"),
            ))
        });
        waiting.answer.give(Ok(msg));
    }

    /// Answers `Timeout` to the requests whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<u32> = self
            .calls
            .iter()
            .filter(|(_, waiting)| waiting.deadline <= now)
            .map(|(&msg_id, _)| msg_id)
            .collect();
        for msg_id in expired {
            if let Some(waiting) = self.calls.remove(&msg_id) {
                debug!(msg_id, "driver request timed out");
                waiting.answer.give(Err(CallError::Timeout));
            }
        }
        self.next_expiry = self.calls.values().map(|waiting| waiting.deadline).min();
    }

    /// Fails every waiting request with `Gone`.
    fn fail_all(&mut self) {
        for (_, waiting) in self.calls.drain() {
            waiting.answer.give(Err(CallError::Gone));
        }
        self.next_expiry = None;
    }
}

/// An event: change the registry.
fn event(shared: &Shared, id: DriverId, env: &Envelope) {
    let msg = match FromDriver::decode(&env.cmd, &env.data) {
        Ok(msg) => msg,
        Err(e) => {
            warn!(cmd = %env.cmd, error = %e, "bad event from driver ignored");
            return;
        }
    };
    let mut reg = shared.lock();
    match msg {
        FromDriver::CardInserted(ev) => reg.card_inserted(id, ev),
        FromDriver::CardRemoved(ev) => reg.card_removed(id, ev.reader_id, ev.slot),
        FromDriver::ReaderAdd(ev) => reg.reader_add(id, ev.reader),
        FromDriver::ReaderDel(ev) => reg.reader_del(id, ev.reader_id),
        FromDriver::ReaderError(ev) => reg.reader_error(id, ev.reader_id, &ev.text),
        FromDriver::ErrorResponse(e) => {
            warn!(code = e.code, text = %e.text, "driver reported an error");
        }
        other => info!(cmd = other.cmd(), "unexpected message from driver ignored"),
    }
}
