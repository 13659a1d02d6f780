//! The IPC side of a driver: one task reading the server's messages, answering what it can
//! itself (`Ping`, errors), forwarding card requests to the backend thread (which writes
//! their responses itself, see [`crate::writer`]) and sending events.

use std::sync::Arc;
use std::time::Duration;

use chipcard_ipc::message::{
    DriverReader, DriverReady, ErrorResponse, PingResponse, ReaderList, ToDriver,
};
use chipcard_ipc::{DriverId, Envelope, EnvelopeCodec, ErrorCode, IdOrder, Outcome, Outgoing};
use chipcard_sock::ReadHalf;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tracing::{debug, error, info, warn};

use crate::backend::{Backend, Event, EventSink};
use crate::error::{DriverError, Error};
use crate::worker::{Job, Worker};
use crate::writer::Writer;

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

fn gone() -> DriverError {
    DriverError::reader("the backend thread ended unexpectedly")
}

/// The initial size of the read buffer (it grows for larger messages).
const READ_BUFFER: usize = 8 * 1024;

type StartResult = Result<Vec<DriverReader>, DriverError>;

struct Session {
    reader: FramedRead<ReadHalf, EnvelopeCodec>,
    writer: Arc<Writer>,
    order: IdOrder,
    driver_id: DriverId,
    phase: Phase,
    worker: Worker,
    backend_gone: bool,
    start_error: Option<DriverError>,
}

/// Runs the driver protocol (PROTOCOL §5) on `stream` until `StopDriver`, the server's end
/// of the connection, or a fatal error.
///
/// `backend` moves to a thread of its own; this future never blocks on it. It is meant for
/// a current-thread runtime; [`crate::run`] sets one up.
pub async fn serve<B: Backend>(
    stream: tokio::net::UnixStream,
    driver_id: DriverId,
    backend: B,
) -> Result<Exit, Error> {
    serve_std(stream.into_std()?, driver_id, backend).await
}

/// [`serve`] on a standard library stream (not yet registered with tokio).
pub(crate) async fn serve_std<B: Backend>(
    stream: std::os::unix::net::UnixStream,
    driver_id: DriverId,
    backend: B,
) -> Result<Exit, Error> {
    let writer = Arc::new(Writer::new(&stream)?);
    let reader = FramedRead::with_capacity(
        chipcard_sock::read_half(stream)?,
        EnvelopeCodec::new(),
        READ_BUFFER,
    );
    let (alive, mut backend_ended) = oneshot::channel::<()>();
    let worker = Worker::spawn(backend, writer.clone(), alive)?;
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<Event>();
    let mut session = Session {
        reader,
        writer,
        order: IdOrder::new(),
        driver_id,
        phase: Phase::AwaitStart,
        worker,
        backend_gone: false,
        start_error: None,
    };
    let sink = EventSink::from_sender(events_tx);
    let mut starting: Option<oneshot::Receiver<StartResult>> = None;
    // Registered for writability only while a write to the server is blocked.
    let mut writable = None;
    let result = loop {
        let events_flow = matches!(session.phase, Phase::Ready | Phase::Running);
        let step = tokio::select! {
            biased;
            started = wait_start(&mut starting), if starting.is_some() => {
                starting = None;
                let result = started.unwrap_or_else(|_| {
                    session.backend_gone = true;
                    Err(gone())
                });
                session.started(result)
            }
            _ = &mut backend_ended, if !session.backend_gone => {
                // The thread ended without `Stop`: the backend panicked (its request was
                // answered with an error).
                session.backend_gone = true;
                Ok(None)
            }
            Some(event) = events_rx.recv(), if events_flow => {
                session.send(None, &event.to_message()).map(|()| None)
            }
            item = session.reader.next() => match item {
                None => {
                    info!("the server closed the connection");
                    Ok(Some(Exit::ServerGone))
                }
                Some(Err(e)) => {
                    error!(error = %e, "unreadable frame from the server; closing");
                    let reply = ErrorResponse::new(ErrorCode::Protocol, e.to_string());
                    let _ = session.send(None, &reply);
                    Err(Error::Ipc(e))
                }
                Some(Ok(Err(e))) => {
                    warn!(error = %e, "malformed message from the server");
                    let reply = ErrorResponse::new(e.code(), e.to_string());
                    session.send(None, &reply).map(|()| None)
                }
                Some(Ok(Ok(envelope))) => session.received(envelope, &sink, &mut starting),
            },
            written = session.writer.drain(&mut writable) => Err(Error::Io(
                written.err().unwrap_or_else(|| std::io::ErrorKind::BrokenPipe.into()),
            )),
        };
        match step {
            Ok(None) if session.backend_gone => break Err(Error::BackendGone),
            Ok(None) => {}
            Ok(Some(exit)) => break Ok(exit),
            Err(e) => break Err(e),
        }
    };
    session.stop_backend().await;
    // The server sees the end of the stream once what is still buffered is written (if
    // the server reads it within a second).
    session.writer.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), session.writer.drain(&mut writable)).await;
    result
}

async fn wait_start(
    starting: &mut Option<oneshot::Receiver<StartResult>>,
) -> Result<StartResult, oneshot::error::RecvError> {
    match starting {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn send(&mut self, refid: Option<u32>, message: &impl Outgoing) -> Result<(), Error> {
        let id = self.writer.send(refid, message)?;
        debug!(id, refid, cmd = message.cmd(), "send");
        Ok(())
    }

    fn error(&mut self, refid: u32, code: ErrorCode, text: String) -> Result<(), Error> {
        warn!(refid, %code, %text, "error reply");
        self.send(Some(refid), &ErrorResponse::new(code, text))
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

    /// Queues a job; a dead backend thread ends the driver.
    fn submit(&mut self, job: Job) {
        if !self.worker.submit(job) {
            self.backend_gone = true;
        }
    }

    fn received(
        &mut self,
        envelope: Envelope,
        sink: &EventSink,
        starting: &mut Option<oneshot::Receiver<StartResult>>,
    ) -> Result<Option<Exit>, Error> {
        let id = envelope.id;
        debug!(id, refid = envelope.refid, cmd = %envelope.cmd, "received");
        if let Err(e) = self.order.check(id) {
            self.error(id, e.code(), e.to_string())?;
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
                self.error(id, e.code(), e.to_string())?;
                return Ok(None);
            }
        };
        let serving = matches!(self.phase, Phase::Ready | Phase::Running);
        match message {
            ToDriver::Ping(_) => self.send(Some(id), &PingResponse {})?,
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
                *starting = Some(rx);
                self.phase = Phase::Starting;
            }
            ToDriver::DriverStart(_) => {
                self.error(
                    id,
                    ErrorCode::Protocol,
                    "DriverStart was already received".into(),
                )?;
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
                    )?;
                }
            },
            // The backend thread answers these itself.
            ToDriver::CardCommand(command) if serving => {
                let to_reader = command
                    .target
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case("reader"));
                self.submit(Job::Transmit {
                    refid: id,
                    reader: command.reader_id,
                    slot: command.slot,
                    apdu: command.data,
                    to_reader,
                });
            }
            ToDriver::ResetCard(reset) if serving => {
                self.submit(Job::Reset {
                    refid: id,
                    reader: reset.reader_id,
                    slot: reset.slot,
                });
            }
            ToDriver::CardCommand(_) | ToDriver::ResetCard(_) => {
                let text = match self.phase {
                    Phase::Failed => "the driver failed to start",
                    _ => "the driver is not started yet (DriverStart first)",
                };
                self.error(id, ErrorCode::Protocol, text.into())?;
            }
        }
        Ok(None)
    }

    /// The backend's start finished: `DriverReady` with its readers or its error.
    fn started(&mut self, result: StartResult) -> Result<Option<Exit>, Error> {
        match result {
            Ok(readers) => {
                info!(readers = readers.len(), "backend started");
                let ready = DriverReady {
                    outcome: Outcome::ok("Driver ready"),
                    driver_id: self.driver_id,
                    readers: ReaderList(readers),
                };
                self.send(None, &ready)?;
                self.phase = Phase::Ready;
            }
            Err(e) => {
                error!(error = %e, "backend failed to start");
                let ready = DriverReady {
                    outcome: Outcome::failed(e.code, e.text.clone()),
                    driver_id: self.driver_id,
                    readers: ReaderList::default(),
                };
                self.start_error = Some(e);
                self.send(None, &ready)?;
                self.phase = Phase::Failed;
            }
        }
        Ok(None)
    }
}
