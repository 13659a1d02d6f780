//! One driver process: starting it on a socketpair ([`crate::child`]), the
//! `DriverStart`/`DriverReady` handshake, and the connection loop that routes responses by
//! refid, turns events into registry changes and pings the driver.
//!
//! Other tasks reach the driver through a [`DriverLink`] (a [`crate::child::Link`]): a
//! request carries its answer callback, and the connection loop calls it when the response
//! arrives, when the request's time is up, or when the driver goes away.
//!
//! A driver that misses a ping (`pingTimeout`) or leaves a request unanswered past
//! `commandTimeout` is taken as hung: its connection ends, its readers go down, its cards
//! are removed, and the supervisor kills and restarts it.
//!
//! Writes are buffered ([`crate::child::Conn`]): requests that arrive together go out in
//! one write. The loop never waits for a write to finish: a driver that is slow to read
//! cannot stop the loop from reading its responses or timing requests out.

use std::path::Path;
use std::time::Duration;

use chipcard_ipc::message::{
    DriverReader, DriverStart, ErrorResponse, FromDriver, Ping, StopDriver, ToDriver,
};
use chipcard_ipc::{DriverId, ErrorCode, Group, Incoming, Outgoing};
use futures::{FutureExt, StreamExt};
use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::child::{self, Conn, Pending};
pub use crate::child::{CallError, Pinging, CHILD_ENV as DRIVER_ENV};
use crate::error::{Error, Result};
use crate::server::Shared;

/// The most requests the loop takes from its link before it writes them out.
const CALL_BATCH: usize = 64;

/// The way to send requests to a running driver; cheap to clone.
pub type DriverLink = child::Link<ToDriver, FromDriver>;

/// The receiving end of a [`DriverLink`], owned by the connection loop.
pub type LinkEnd = child::LinkEnd<ToDriver, FromDriver>;

/// Takes a driver's response to one request (see [`child::Answer`]).
pub type Answer = child::Answer<FromDriver>;

/// A new link and its receiving end.
pub fn link() -> (DriverLink, LinkEnd) {
    child::link()
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
    /// The driver did not answer this many requests (`CardCommand`, `ResetCard`) within
    /// `commandTimeout`: it is taken as hung.
    Unanswered(usize),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Shutdown => f.write_str("server shutting down"),
            Ending::Exited(status) => write!(f, "driver exited ({status})"),
            Ending::Closed => f.write_str("driver closed its connection"),
            Ending::Protocol(e) => write!(f, "driver broke the protocol: {e}"),
            Ending::Hung => f.write_str("driver did not answer a ping in time"),
            Ending::Unanswered(count) => {
                write!(f, "driver did not answer {count} request(s) in time")
            }
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

/// Told once when a freshly started driver has settled: its first Ping (sent right after
/// `DriverReadyResponse`) is answered, so every event it sent during its start is in.
pub type Settled = Option<tokio::sync::oneshot::Sender<()>>;

/// A started driver process and its connection.
#[derive(Debug)]
pub struct DriverProcess {
    child: Child,
    conn: Conn<FromDriver>,
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
        let (child, conn) =
            child::spawn(program, "--driver-id", &id.to_string(), run_as).map_err(|source| {
                Error::SpawnDriver {
                    program: program.to_owned(),
                    source,
                }
            })?;
        Ok(DriverProcess { child, conn })
    }

    /// The process id, for logs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends one message and waits until it is written.
    pub async fn send(&mut self, refid: Option<u32>, msg: &impl Outgoing) -> Result<u32, String> {
        self.conn.send(refid, msg).await
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
            let received = self.conn.next_before_ready("driver", "DriverReady").await?;
            match received.message {
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
                        id: received.id,
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
            if matches!(
                ending,
                Ending::Hung | Ending::Unanswered(_) | Ending::Protocol(_)
            ) {
                reg.driver_error(id, &why);
            }
            reg.driver_down(id, &why);
        }
        // Outside the registry's lock: the answers may take it. Requests still queued and
        // requests sent but unanswered fail with `Gone`.
        link.close();
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
        pending: &mut Pending<FromDriver>,
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
            let wake_at = child::earliest(ping.map(|(_, at)| at), pending.next_expiry);
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
                            let _ = tokio::time::timeout(child::EXIT_GRACE, conn.flush()).await;
                        }
                        return Ending::Protocol(e.to_string());
                    }
                    Some(Ok(Err(e))) => warn!(error = %e, "bad message from driver ignored"),
                    Some(Ok(Ok(received))) => {
                        if let Err(e) = conn.order.check(received.id) {
                            return Ending::Protocol(e.to_string());
                        }
                        match received.refid {
                            Some(refid) if ping.is_some_and(|(p, _)| p == refid) => {
                                ping = None;
                                if let Some(tx) = settled.take() {
                                    let _ = tx.send(());
                                }
                            }
                            Some(refid) => pending.answer(refid, received, bad_response),
                            None => event(shared, id, received),
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
                        if let Some(written) = child::flush(&mut conn.writer).now_or_never() {
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
                    // The callers are answered `Timeout` first (code 6), then the driver
                    // is torn down like one that misses a ping.
                    let expired = pending.expire(now);
                    if expired > 0 {
                        return Ending::Unanswered(expired);
                    }
                }
                // Last: only when nothing else is ready, so requests that came together
                // leave in one write.
                written = child::flush(&mut conn.writer), if conn.unflushed => {
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
        let _ = tokio::time::timeout(child::EXIT_GRACE, self.send(None, &StopDriver {})).await;
        child::await_exit_or_kill(&mut self.child).await;
    }

    /// Kills the process (if it still runs) and reaps it.
    pub async fn kill(&mut self) {
        child::kill(&mut self.child).await;
    }
}

/// What a caller gets for a response from the driver that does not decode.
fn bad_response(why: String) -> FromDriver {
    FromDriver::ErrorResponse(ErrorResponse::new(
        ErrorCode::DriverError,
        format!("the driver sent a bad response: {why}"),
    ))
}

/// An event: change the registry.
fn event(shared: &Shared, id: DriverId, received: Incoming<FromDriver>) {
    let msg = match received.message {
        Ok(msg) => msg,
        Err(e) => {
            warn!(cmd = %received.cmd, error = %e, "bad event from driver ignored");
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
