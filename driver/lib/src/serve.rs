//! The IPC side of a driver: the IPC thread reads the server's messages and serves them,
//! calling the backend itself.
//!
//! A request is read, decoded, served and answered by one thread, with no hand-over to
//! another thread and no poller in between: the cheapest way through a driver, measured at
//! a fifth of a whole round trip less than handing each request to a backend thread
//! (docs/performance.md, "Profile and fixes"). While a backend call lasts, the watcher
//! ([`crate::watch`]) answers `Ping`, so a slow card does not make the driver look hung,
//! and, when the backend has concurrent card I/O, hands the requests for other readers to
//! their readers' workers ([`crate::workers`]), so a slow reader does not hold up the others.

use std::io;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chipcard_ipc::message::{DriverReady, ErrorResponse, PingResponse, ReaderList, ToDriver};
use chipcard_ipc::{DriverId, ErrorCode, Outcome, Outgoing, ReaderId};
use tracing::{debug, error, info, warn};

use crate::backend::{Backend, EventSink};
use crate::error::{DriverError, Error};
use crate::reader::{FromServer, Incoming, Reader};
use crate::request::{CardAnswer, CardRequest};
use crate::watch::Watch;
use crate::workers::Workers;
use crate::writer::Writer;

/// How long a stopping driver waits for [`Backend::stop`] before it exits anyway.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A backend call at most this long counts as fast: its answer may be held back while the
/// next request is already there, so that answers leave together.
const FAST_CALL: Duration = Duration::from_micros(50);

/// The longest an answer is held back.
const HOLD_LIMIT: Duration = Duration::from_micros(100);

/// The most bytes of answers held back.
const HOLD_BYTES: usize = 32 * 1024;

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

/// Runs the driver protocol (PROTOCOL §5) on `stream` until `StopDriver`, the server's end
/// of the connection, or a fatal error.
///
/// The work happens on a thread of tokio's blocking pool (the IPC thread), which calls
/// `backend`; this future only waits for it. Outside a runtime, [`crate::run_with`] does
/// the same on the calling thread.
pub async fn serve<B: Backend>(
    stream: tokio::net::UnixStream,
    driver_id: DriverId,
    backend: B,
) -> Result<Exit, Error> {
    let stream = stream.into_std()?;
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| serve_on(stream, driver_id, backend, false))
    })
    .await
    .unwrap_or_else(|e| Err(Error::Io(io::Error::other(e.to_string()))))
}

/// [`serve`] on the calling thread. With `process` (a driver process) a backend call that
/// outlasts the server's stop request by [`STOP_TIMEOUT`] ends the process.
pub(crate) fn serve_on<B: Backend>(
    stream: UnixStream,
    driver_id: DriverId,
    backend: B,
    process: bool,
) -> Result<Exit, Error> {
    let writer = Arc::new(Writer::new(&stream)?);
    let reader = Arc::new(Reader::new(stream)?);
    let watch = Watch::start(reader.clone(), writer.clone(), process)?;
    let mut session = Session {
        reader,
        writer,
        watch,
        driver_id,
        phase: Phase::AwaitStart,
        backend: Some(backend),
        backend_gone: false,
        workers: None,
        start_error: None,
        last_call: Duration::ZERO,
    };
    let result = session.run();
    session.finish();
    result
}

struct Session<B> {
    reader: Arc<Reader>,
    writer: Arc<Writer>,
    watch: Watch,
    driver_id: DriverId,
    phase: Phase,
    /// `None` once it panicked (or was stopped).
    backend: Option<B>,
    backend_gone: bool,
    /// The reader workers, when the backend has concurrent card I/O.
    workers: Option<Arc<Workers>>,
    start_error: Option<DriverError>,
    /// How long the last backend call took.
    last_call: Duration,
}

impl<B: Backend> Session<B> {
    fn run(&mut self) -> Result<Exit, Error> {
        loop {
            let writer = &self.writer;
            let incoming = self.reader.lock().next(|| {
                // About to wait for the server: what is held back goes out first.
                if let Err(e) = writer.flush() {
                    debug!(error = %e, "cannot write to the server");
                }
            });
            if let Some(exit) = self.incoming(incoming)? {
                return Ok(exit);
            }
            if self.backend_gone || self.workers.as_ref().is_some_and(|w| w.panicked()) {
                return Err(Error::BackendGone);
            }
        }
    }

    /// After `run`: stops the backend (unless it is gone), then the connection.
    fn finish(&mut self) {
        if let Some(workers) = &self.workers {
            workers.close();
        }
        if let Some(backend) = self.backend.take() {
            stop_backend(backend);
        }
        self.writer.close();
        self.watch.stop();
    }

    fn incoming(&mut self, incoming: Incoming) -> Result<Option<Exit>, Error> {
        match incoming {
            Incoming::Message(message) => self.received(message),
            Incoming::OutOfOrder(message, e) => {
                self.error(message.id, e.code(), e.to_string())?;
                Ok(None)
            }
            Incoming::Malformed(e) => {
                warn!(error = %e, "malformed message from the server");
                self.send(None, &ErrorResponse::new(e.code(), e.to_string()))?;
                Ok(None)
            }
            Incoming::Broken(e) => {
                error!(error = %e, "unreadable frame from the server; closing");
                let reply = ErrorResponse::new(ErrorCode::Protocol, e.to_string());
                let _ = self.send(None, &reply);
                Err(Error::Ipc(e))
            }
            Incoming::End(None) => {
                info!("the server closed the connection");
                Ok(Some(Exit::ServerGone))
            }
            Incoming::End(Some(e)) => {
                error!(error = %e, "reading from the server failed");
                Err(Error::Io(e))
            }
        }
    }

    fn send(&mut self, refid: Option<u32>, message: &impl Outgoing) -> Result<(), Error> {
        let id = self.writer.send(refid, message)?;
        debug!(id, refid, cmd = message.cmd(), "send");
        Ok(())
    }

    fn error(&mut self, refid: u32, code: ErrorCode, text: String) -> Result<(), Error> {
        warn!(refid, %code, %text, "error reply");
        self.send(Some(refid), &ErrorResponse::new(code, text))
    }

    /// Sends the answer to a card request. It is held back while the next request is
    /// already here and calls are fast, so that answers leave together.
    fn answer(&mut self, refid: u32, message: &impl Outgoing) -> Result<(), Error> {
        if self.last_call <= FAST_CALL && self.reader.lock().has_input() {
            let since = self.writer.hold(Some(refid), message)?;
            if since.elapsed() >= HOLD_LIMIT || self.writer.held() >= HOLD_BYTES {
                self.writer.flush()?;
            }
            return Ok(());
        }
        self.send(Some(refid), message)
    }

    /// Calls the backend with the watcher standing by. A panic is answered like a failure
    /// and ends the driver (the backend's state is unknown after it).
    fn call<T>(
        &mut self,
        reader: Option<ReaderId>,
        call: impl FnOnce(&mut B) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        let Some(backend) = self.backend.as_mut() else {
            return Err(gone());
        };
        let started = Instant::now();
        let result = self
            .watch
            .call(reader, || catch_unwind(AssertUnwindSafe(|| call(backend))));
        self.last_call = started.elapsed();
        result.unwrap_or_else(|_| {
            error!("the backend panicked");
            self.backend = None;
            self.backend_gone = true;
            Err(gone())
        })
    }

    fn received(&mut self, received: FromServer) -> Result<Option<Exit>, Error> {
        let id = received.id;
        debug!(id, refid = received.refid, cmd = %received.cmd, "received");
        let message = match received.message {
            Ok(message) => message,
            // A response is never answered, not even a malformed or unknown one: two peers
            // must not trade error replies forever.
            Err(e) if received.refid.is_some() => {
                warn!(
                    id, refid = received.refid, cmd = %received.cmd,
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
                let events = EventSink::to_writer(self.writer.clone());
                let started = self.call(None, |backend| backend.start(&start.config, events));
                self.started(started)?;
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
            ToDriver::CardCommand(_) | ToDriver::ResetCard(_) if serving => {
                if let Some(request) = CardRequest::from_message(&message) {
                    self.card(id, request)?;
                }
            }
            ToDriver::CardCommand(_) | ToDriver::ResetCard(_) => return self.not_serving(id),
        }
        Ok(None)
    }

    /// Serves a card request: on the IPC thread, or on the reader's worker while that one
    /// still has requests (so that the reader's requests stay in order).
    fn card(&mut self, id: u32, request: CardRequest) -> Result<(), Error> {
        let request = match &self.workers {
            Some(workers) if workers.busy(request.reader()) => {
                match workers.hand_over(id, request) {
                    Ok(()) => return Ok(()),
                    Err(request) => request,
                }
            }
            _ => request,
        };
        let reader = Some(request.reader());
        let result = match self.workers.clone() {
            Some(workers) => self.call(reader, |_| request.call_io(workers.io())),
            None => self.call(reader, |backend| request.call_backend(backend)),
        };
        match request.answer(result) {
            CardAnswer::Command(response) => self.answer(id, &response),
            CardAnswer::Reset(response) => self.answer(id, &response),
        }
    }

    fn not_serving(&mut self, id: u32) -> Result<Option<Exit>, Error> {
        let text = match self.phase {
            Phase::Failed => "the driver failed to start",
            _ => "the driver is not started yet (DriverStart first)",
        };
        self.error(id, ErrorCode::Protocol, text.into())?;
        Ok(None)
    }

    /// The backend's start finished: `DriverReady` with its readers or its error.
    fn started(
        &mut self,
        result: Result<Vec<chipcard_ipc::message::DriverReader>, DriverError>,
    ) -> Result<(), Error> {
        match result {
            Ok(readers) => {
                info!(readers = readers.len(), "backend started");
                let io = self.backend.as_ref().and_then(Backend::card_io);
                if let Some(io) = io {
                    debug!("the backend serves readers concurrently");
                    let workers = Arc::new(Workers::new(io, self.writer.clone()));
                    self.watch.set_workers(workers.clone());
                    self.workers = Some(workers);
                }
                let ready = DriverReady {
                    outcome: Outcome::ok("Driver ready"),
                    driver_id: self.driver_id,
                    readers: ReaderList(readers),
                };
                self.send(None, &ready)?;
                self.phase = Phase::Ready;
                // The events of the start follow `DriverReady`.
                self.writer.ready()?;
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
        Ok(())
    }
}

/// Calls [`Backend::stop`] on a thread of its own and waits for it at most
/// [`STOP_TIMEOUT`].
fn stop_backend<B: Backend>(mut backend: B) {
    let (done, stopped) = std::sync::mpsc::channel();
    let span = tracing::Span::current();
    let spawned = thread::Builder::new()
        .name("backend-stop".into())
        .spawn(move || {
            span.in_scope(|| backend.stop());
            let _ = done.send(());
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start a thread to stop the backend");
        return;
    }
    match stopped.recv_timeout(STOP_TIMEOUT) {
        Ok(()) => debug!("backend stopped"),
        Err(_) => warn!("the backend did not stop within {STOP_TIMEOUT:?}; exiting anyway"),
    }
}
