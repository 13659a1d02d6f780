//! One driver process: starting it on a socketpair ([`crate::child`]), the
//! `DriverStart`/`DriverReady` handshake, and the connection loop that routes responses by
//! refid, turns events into registry changes and pings the driver.
//!
//! Other tasks reach the driver through a [`DriverLink`] (a [`crate::child::Link`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chipcard_ipc::message::{
    DriverReader, DriverStart, ErrorResponse, FromDriver, Ping, StopDriver, ToDriver,
};
use chipcard_ipc::{
    DriverId, Envelope, EnvelopeCodec, ErrorCode, Group, IdCounter, IdOrder, Outgoing,
};
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::child::{self, sleep_until_some};
pub use crate::child::{CallError, Pinging, CHILD_ENV as DRIVER_ENV};
use crate::error::{Error, Result};
use crate::server::Shared;

/// The way to send requests to a running driver; cheap to clone.
pub type DriverLink = child::Link<ToDriver, FromDriver>;

/// The receiving end of a [`DriverLink`], owned by the connection loop.
pub type LinkEnd = child::LinkEnd<ToDriver, FromDriver>;

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

/// Told once when a freshly started driver has settled: its first Ping (sent right after
/// `DriverReadyResponse`) is answered, so every event it sent during its start is in.
pub type Settled = Option<tokio::sync::oneshot::Sender<()>>;

/// A started driver process and its connection.
#[derive(Debug)]
pub struct DriverProcess {
    child: Child,
    conn: Framed<UnixStream, EnvelopeCodec>,
    ids: IdCounter,
    order: IdOrder,
}

impl DriverProcess {
    /// Starts `program --ipc-fd 0 --driver-id 0x...` with its end of a socketpair as stdin
    /// (see [`child::spawn`]; drivers get a scrubbed environment, [`DRIVER_ENV`]).
    pub fn spawn(
        program: &Path,
        id: DriverId,
        run_as: Option<(u32, u32)>,
    ) -> Result<DriverProcess> {
        let (child, stream): (Child, UnixStream) =
            child::spawn(program, "--driver-id", &id.to_string(), run_as).map_err(|source| {
                Error::SpawnDriver {
                    program: program.to_owned(),
                    source,
                }
            })?;
        Ok(DriverProcess {
            child,
            conn: Framed::new(stream, EnvelopeCodec::new()),
            ids: IdCounter::new(),
            order: IdOrder::new(),
        })
    }

    /// The process id, for logs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends one message.
    pub async fn send(&mut self, refid: Option<u32>, msg: &impl Outgoing) -> Result<u32, String> {
        let id = self.ids.next_id();
        self.conn
            .send(Envelope::new(id, refid, msg))
            .await
            .map_err(|e| e.to_string())?;
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
            let env = match self.conn.next().await {
                None => return Err("the driver closed its connection before DriverReady".into()),
                Some(Err(e)) => return Err(format!("driver broke the protocol: {e}")),
                Some(Ok(Err(e))) => {
                    warn!(error = %e, "bad message from driver before DriverReady");
                    continue;
                }
                Some(Ok(Ok(env))) => env,
            };
            self.order.check(env.id).map_err(|e| e.to_string())?;
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
        let mut pending: HashMap<u32, oneshot::Sender<FromDriver>> = HashMap::new();
        let ending = self
            .serve_loop(shared, id, link, pinging, &mut pending, settled, stop)
            .await;
        if !matches!(ending, Ending::Shutdown) {
            let why = ending.to_string();
            let mut reg = shared.lock();
            if matches!(ending, Ending::Hung | Ending::Protocol(_)) {
                reg.driver_error(id, &why);
            }
            reg.driver_down(id, &why);
        }
        drop(pending);
        ending
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve_loop(
        &mut self,
        shared: &Shared,
        id: DriverId,
        link: &mut LinkEnd,
        pinging: Pinging,
        pending: &mut HashMap<u32, oneshot::Sender<FromDriver>>,
        mut settled: Settled,
        stop: &CancellationToken,
    ) -> Ending {
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
            match self.send(None, &Ping {}).await {
                Ok(msg_id) => ping = Some((msg_id, Instant::now() + pinging.timeout)),
                Err(e) => return Ending::Protocol(format!("cannot write to driver: {e}")),
            }
        }
        loop {
            let ping_deadline = ping.map(|(_, at)| at);
            tokio::select! {
                _ = stop.cancelled() => {
                    self.stop().await;
                    return Ending::Shutdown;
                }
                status = self.child.wait() => {
                    return Ending::Exited(match status {
                        Ok(s) => s.to_string(),
                        Err(e) => e.to_string(),
                    });
                }
                frame = self.conn.next() => match frame {
                    None => return Ending::Closed,
                    Some(Err(e)) => {
                        let _ = self.send(None, &ErrorResponse::new(ErrorCode::Protocol, e.to_string())).await;
                        return Ending::Protocol(e.to_string());
                    }
                    Some(Ok(Err(e))) => warn!(error = %e, "bad message from driver ignored"),
                    Some(Ok(Ok(env))) => {
                        if let Err(e) = self.order.check(env.id) {
                            return Ending::Protocol(e.to_string());
                        }
                        match env.refid {
                            Some(refid) if ping.is_some_and(|(p, _)| p == refid) => {
                                ping = None;
                                if let Some(tx) = settled.take() {
                                    let _ = tx.send(());
                                }
                            }
                            Some(refid) => answer(pending, refid, &env),
                            None => event(shared, id, &env),
                        }
                    }
                },
                Some(call) = link.rx.recv() => {
                    match self.send(None, &call.msg).await {
                        Ok(msg_id) => {
                            pending.insert(msg_id, call.reply);
                        }
                        Err(e) => return Ending::Protocol(format!("cannot write to driver: {e}")),
                    }
                }
                _ = ping_timer.tick(), if !pinging.interval.is_zero() && ping.is_none() => {
                    match self.send(None, &Ping {}).await {
                        Ok(msg_id) => ping = Some((msg_id, Instant::now() + pinging.timeout)),
                        Err(e) => return Ending::Protocol(format!("cannot write to driver: {e}")),
                    }
                }
                _ = sleep_until_some(ping_deadline) => return Ending::Hung,
            }
        }
    }

    /// Asks the driver to stop, and kills it if it does not within a grace period.
    async fn stop(&mut self) {
        let _ = self.send(None, &StopDriver {}).await;
        child::await_exit_or_kill(&mut self.child).await;
    }

    /// Kills the process (if it still runs) and reaps it.
    pub async fn kill(&mut self) {
        child::kill(&mut self.child).await;
    }
}

/// A response: complete the request waiting for it.
fn answer(pending: &mut HashMap<u32, oneshot::Sender<FromDriver>>, refid: u32, env: &Envelope) {
    child::complete(pending, refid, env, FromDriver::decode, |e| {
        FromDriver::ErrorResponse(ErrorResponse::new(
            ErrorCode::DriverError,
            format!("the driver sent a bad response: {e}"),
        ))
    });
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
