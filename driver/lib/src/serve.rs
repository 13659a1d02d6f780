//! The IPC side of a driver: one task reading the server's messages, forwarding requests to
//! the backend thread and writing answers and events back.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use chipcard_ipc::message::{
    CardCommandResponse, DriverReader, DriverReady, ErrorResponse, PingResponse, ReaderList,
    ResetCardResponse, ToDriver,
};
use chipcard_ipc::{
    DriverId, Envelope, EnvelopeCodec, ErrorCode, IdCounter, IdOrder, Outcome, Outgoing,
};
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use tracing::{debug, error, info, warn};

use crate::backend::{Backend, Event, EventSink};
use crate::error::{DriverError, Error};
use crate::worker::{Job, Worker};

/// How long a stopping driver waits for [`Backend::stop`] before it exits anyway.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why [`serve`] returned without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The server sent `StopDriver`.
    Stopped,
    /// The server closed the connection.
    ServerGone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `DriverStart`.
    AwaitStart,
    /// The backend is starting.
    Starting,
    /// `DriverReady` was sent; requests are served.
    Ready,
    /// `DriverReadyResponse` OK arrived.
    Running,
    /// The backend failed to start; `DriverReady` `ERROR` was sent.
    Failed,
}

enum Done {
    Started(Result<Vec<DriverReader>, DriverError>),
    Command {
        refid: u32,
        result: Result<Vec<u8>, DriverError>,
    },
    Reset {
        refid: u32,
        result: Result<Vec<u8>, DriverError>,
    },
}

/// A backend answer being waited for; `true` when the backend thread was lost instead.
type Pending = Pin<Box<dyn Future<Output = (Done, bool)> + Send>>;

fn gone() -> DriverError {
    DriverError::reader("the backend thread ended unexpectedly")
}

fn wait_for<T: Send + 'static>(
    rx: oneshot::Receiver<Result<T, DriverError>>,
    wrap: impl FnOnce(Result<T, DriverError>) -> Done + Send + 'static,
) -> Pending {
    Box::pin(async move {
        match rx.await {
            Ok(result) => (wrap(result), false),
            Err(_) => (wrap(Err(gone())), true),
        }
    })
}

struct Session<T> {
    framed: Framed<T, EnvelopeCodec>,
    ids: IdCounter,
    order: IdOrder,
    driver_id: DriverId,
    phase: Phase,
    worker: Worker,
    backend_gone: bool,
    start_error: Option<DriverError>,
}

/// Runs the driver protocol (PROTOCOL §5) on `io` until `StopDriver`, the server's end of
/// the connection, or a fatal error.
///
/// `backend` moves to a thread of its own; this future never blocks on it. It is meant for
/// a current-thread runtime; [`crate::run`] sets one up.
pub async fn serve<T, B>(io: T, driver_id: DriverId, backend: B) -> Result<Exit, Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    B: Backend,
{
    let worker = Worker::spawn(backend)?;
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<Event>();
    let mut session = Session {
        framed: Framed::new(io, EnvelopeCodec::new()),
        ids: IdCounter::new(),
        order: IdOrder::new(),
        driver_id,
        phase: Phase::AwaitStart,
        worker,
        backend_gone: false,
        start_error: None,
    };
    let sink = EventSink::from_sender(events_tx);
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    let result = loop {
        let events_flow = matches!(session.phase, Phase::Ready | Phase::Running);
        let step = tokio::select! {
            Some((done, lost)) = pending.next(), if !pending.is_empty() => {
                session.backend_gone |= lost;
                session.finished(done).await
            }
            Some(event) = events_rx.recv(), if events_flow => {
                session.send(None, &event.to_message()).await.map(|()| None)
            }
            item = session.framed.next() => match item {
                None => {
                    info!("the server closed the connection");
                    Ok(Some(Exit::ServerGone))
                }
                Some(Err(e)) => {
                    error!(error = %e, "unreadable frame from the server; closing");
                    let reply = ErrorResponse::new(ErrorCode::Protocol, e.to_string());
                    let _ = session.send(None, &reply).await;
                    Err(Error::Ipc(e))
                }
                Some(Ok(Err(e))) => {
                    warn!(error = %e, "malformed message from the server");
                    let reply = ErrorResponse::new(e.code(), e.to_string());
                    session.send(None, &reply).await.map(|()| None)
                }
                Some(Ok(Ok(envelope))) => session.received(envelope, &sink, &mut pending).await,
            },
        };
        match step {
            Ok(None) if session.backend_gone => break Err(Error::BackendGone),
            Ok(None) => {}
            Ok(Some(exit)) => break Ok(exit),
            Err(e) => break Err(e),
        }
    };
    session.stop_backend().await;
    result
}

impl<T: AsyncRead + AsyncWrite + Unpin> Session<T> {
    async fn send(&mut self, refid: Option<u32>, message: &impl Outgoing) -> Result<(), Error> {
        let envelope = Envelope::new(self.ids.next_id(), refid, message);
        debug!(id = envelope.id, refid, cmd = %envelope.cmd, "send");
        self.framed.send(envelope).await.map_err(Error::Ipc)
    }

    async fn error(&mut self, refid: u32, code: ErrorCode, text: String) -> Result<(), Error> {
        warn!(refid, %code, %text, "error reply");
        self.send(Some(refid), &ErrorResponse::new(code, text))
            .await
    }

    async fn stop_backend(&mut self) {
        if self.backend_gone {
            return;
        }
        let (done, wait) = oneshot::channel();
        if !self.worker.submit(Job::Stop { done }) {
            return;
        }
        match tokio::time::timeout(STOP_TIMEOUT, wait).await {
            Ok(_) => debug!("backend stopped"),
            Err(_) => warn!("the backend did not stop within {STOP_TIMEOUT:?}; exiting anyway"),
        }
    }

    /// Queues a job; a dead backend thread turns into an error answer later.
    fn submit(&mut self, job: Job) {
        if !self.worker.submit(job) {
            self.backend_gone = true;
        }
    }

    async fn received(
        &mut self,
        envelope: Envelope,
        sink: &EventSink,
        pending: &mut FuturesUnordered<Pending>,
    ) -> Result<Option<Exit>, Error> {
        let id = envelope.id;
        debug!(id, refid = envelope.refid, cmd = %envelope.cmd, "received");
        if let Err(e) = self.order.check(id) {
            self.error(id, e.code(), e.to_string()).await?;
            return Ok(None);
        }
        let message = match ToDriver::decode(&envelope.cmd, &envelope.data) {
            Ok(message) => message,
            // A response is never answered, not even a malformed or unknown one: two peers
            // must not trade error replies forever.
            Err(e) if envelope.refid.is_some() => {
                warn!(
                    id, refid = envelope.refid, cmd = %envelope.cmd, data = ?envelope.data,
                    error = %e, "unexpected response from the server; ignored"
                );
                return Ok(None);
            }
            Err(e) => {
                self.error(id, e.code(), e.to_string()).await?;
                return Ok(None);
            }
        };
        let serving = matches!(self.phase, Phase::Ready | Phase::Running);
        match message {
            ToDriver::Ping(_) => self.send(Some(id), &PingResponse {}).await?,
            ToDriver::StopDriver(_) => {
                info!("StopDriver");
                return Ok(Some(Exit::Stopped));
            }
            ToDriver::DriverStart(start) if self.phase == Phase::AwaitStart => {
                if start.driver_id != self.driver_id {
                    warn!(
                        argument = %self.driver_id, message = %start.driver_id,
                        "DriverStart names another driver id; keeping the one from the command line"
                    );
                }
                info!("DriverStart");
                let (reply, rx) = oneshot::channel();
                self.submit(Job::Start {
                    config: start.config,
                    events: sink.clone(),
                    reply,
                });
                pending.push(wait_for(rx, Done::Started));
                self.phase = Phase::Starting;
            }
            ToDriver::DriverStart(_) => {
                self.error(
                    id,
                    ErrorCode::Protocol,
                    "DriverStart was already received".into(),
                )
                .await?;
            }
            ToDriver::DriverReadyResponse(response) => match self.phase {
                Phase::Ready if response.outcome.is_ok() => {
                    info!("the server accepted the driver");
                    self.phase = Phase::Running;
                }
                Phase::Ready => return Err(Error::Refused(response.outcome.text)),
                Phase::Failed => {
                    let e = self.start_error.take().unwrap_or_else(gone);
                    return Err(Error::Start(e));
                }
                _ => {
                    self.error(
                        id,
                        ErrorCode::Protocol,
                        "unexpected DriverReadyResponse".into(),
                    )
                    .await?;
                }
            },
            ToDriver::CardCommand(command) if serving => {
                let to_reader = command
                    .target
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case("reader"));
                let (reply, rx) = oneshot::channel();
                self.submit(Job::Transmit {
                    reader: command.reader_id,
                    slot: command.slot,
                    apdu: command.data.to_vec(),
                    to_reader,
                    reply,
                });
                pending.push(wait_for(rx, move |result| Done::Command {
                    refid: id,
                    result,
                }));
            }
            ToDriver::ResetCard(reset) if serving => {
                let (reply, rx) = oneshot::channel();
                self.submit(Job::Reset {
                    reader: reset.reader_id,
                    slot: reset.slot,
                    reply,
                });
                pending.push(wait_for(rx, move |result| Done::Reset {
                    refid: id,
                    result,
                }));
            }
            ToDriver::CardCommand(_) | ToDriver::ResetCard(_) => {
                let text = match self.phase {
                    Phase::Failed => "the driver failed to start",
                    _ => "the driver is not started yet (DriverStart first)",
                };
                self.error(id, ErrorCode::Protocol, text.into()).await?;
            }
        }
        Ok(None)
    }

    async fn finished(&mut self, done: Done) -> Result<Option<Exit>, Error> {
        match done {
            Done::Started(Ok(readers)) => {
                info!(readers = readers.len(), "backend started");
                let ready = DriverReady {
                    outcome: Outcome::ok("Driver ready"),
                    driver_id: self.driver_id,
                    readers: ReaderList(readers),
                };
                self.send(None, &ready).await?;
                self.phase = Phase::Ready;
            }
            Done::Started(Err(e)) => {
                error!(error = %e, "backend failed to start");
                let ready = DriverReady {
                    outcome: Outcome::failed(e.code, e.text.clone()),
                    driver_id: self.driver_id,
                    readers: ReaderList::default(),
                };
                self.start_error = Some(e);
                self.send(None, &ready).await?;
                self.phase = Phase::Failed;
            }
            Done::Command { refid, result } => {
                let response = match result {
                    Ok(rapdu) => CardCommandResponse {
                        outcome: Outcome::ok("ok"),
                        data: Some(Bytes::from(rapdu)),
                    },
                    Err(e) => CardCommandResponse {
                        outcome: self.failed(e),
                        data: None,
                    },
                };
                self.send(Some(refid), &response).await?;
            }
            Done::Reset { refid, result } => {
                let response = match result {
                    Ok(atr) => ResetCardResponse {
                        outcome: Outcome::ok("ok"),
                        atr: Some(Bytes::from(atr)),
                    },
                    Err(e) => ResetCardResponse {
                        outcome: self.failed(e),
                        atr: None,
                    },
                };
                self.send(Some(refid), &response).await?;
            }
        }
        Ok(None)
    }

    fn failed(&self, e: DriverError) -> Outcome {
        Outcome::failed(e.code, e.text)
    }
}
