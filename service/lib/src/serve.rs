//! The IPC side of a service: one task reading the server's messages, handing requests to
//! the service's thread and writing the answers back.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chipcard_ipc::message::{
    ErrorResponse, ForwardedServiceClose, ForwardedServiceCommand, ForwardedServiceOpen,
    PingResponse, ServiceCloseResponse, ServiceCommandResult, ServiceOpenResponse, ServiceReady,
    ToService,
};
use chipcard_ipc::{
    ContextId, Envelope, EnvelopeCodec, ErrorCode, Group, IdCounter, IdOrder, Outcome, Outgoing,
    ServiceId,
};
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_util::codec::Framed;
use tracing::{debug, error, info, warn};

use crate::error::{Error, ServiceError};
use crate::{Context, Reply, Request, Service};

/// How long a stopping service waits for [`Service::stop`] before it exits anyway.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why [`serve`] returned without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The server sent `StopService`.
    Stopped,
    /// The server closed the connection.
    ServerGone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `ServiceStart`.
    AwaitStart,
    /// The service is starting.
    Starting,
    /// `ServiceReady` was sent; requests are served.
    Ready,
    /// The service failed to start; `ServiceReady` `ERROR` was sent.
    Failed,
}

/// One call of the service, run on its thread.
type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// What a finished call means for the connection.
enum Done {
    Started(Result<(), ServiceError>),
    /// An answer to send, and the context to forget once it is sent.
    Answer {
        refid: u32,
        message: Answer,
        forget: Option<ContextId>,
    },
}

/// The answers a service sends.
enum Answer {
    Open(ServiceOpenResponse),
    Close(ServiceCloseResponse),
    Command(ServiceCommandResult),
    Error(ErrorResponse),
}

impl Answer {
    fn as_outgoing(&self) -> &dyn OutgoingRef {
        match self {
            Answer::Open(m) => m,
            Answer::Close(m) => m,
            Answer::Command(m) => m,
            Answer::Error(m) => m,
        }
    }
}

/// [`Outgoing`] as a trait object, to send any [`Answer`].
trait OutgoingRef {
    fn envelope(&self, id: u32, refid: Option<u32>) -> Envelope;
}

impl<M: Outgoing> OutgoingRef for M {
    fn envelope(&self, id: u32, refid: Option<u32>) -> Envelope {
        Envelope::new(id, refid, self)
    }
}

/// A call being waited for; `true` when the service thread was lost instead.
type Pending = Pin<Box<dyn Future<Output = (Done, bool)> + Send>>;

/// The service's thread: jobs in, run in order.
struct Worker<S> {
    jobs: std::sync::mpsc::Sender<Job<S>>,
}

impl<S: Service> Worker<S> {
    fn spawn(mut service: S) -> std::io::Result<Worker<S>> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job<S>>();
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("service".into())
            .spawn(move || {
                span.in_scope(|| {
                    while let Ok(job) = rx.recv() {
                        job(&mut service);
                    }
                })
            })?;
        Ok(Worker { jobs })
    }

    /// Runs `call` on the service's thread; its result arrives through the returned future
    /// (wrapped by `done`), or `lost` when the thread is gone.
    fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut S) -> T + Send + 'static,
        done: impl FnOnce(T) -> Done + Send + 'static,
        lost: impl FnOnce() -> Done + Send + 'static,
    ) -> Pending {
        let (tx, rx) = oneshot::channel();
        let job: Job<S> = Box::new(move |service: &mut S| {
            let _ = tx.send(call(service));
        });
        let _ = self.jobs.send(job);
        Box::pin(async move {
            match rx.await {
                Ok(result) => (done(result), false),
                Err(_) => (lost(), true),
            }
        })
    }
}

struct Session<T, S> {
    framed: Framed<T, EnvelopeCodec>,
    ids: IdCounter,
    order: IdOrder,
    service_id: ServiceId,
    phase: Phase,
    worker: Worker<S>,
    contexts: HashMap<ContextId, Context>,
    start_error: Option<ServiceError>,
    lost: bool,
}

/// Runs the service protocol on `io` until `StopService`, the server's end of the
/// connection, or a fatal error.
///
/// `service` moves to a thread of its own; this future never blocks on it. It is meant for
/// a current-thread runtime; [`crate::run`] sets one up.
pub async fn serve<T, S>(io: T, service_id: ServiceId, service: S) -> Result<Exit, Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: Service,
{
    let mut session = Session {
        framed: Framed::new(io, EnvelopeCodec::new()),
        ids: IdCounter::new(),
        order: IdOrder::new(),
        service_id,
        phase: Phase::AwaitStart,
        worker: Worker::spawn(service)?,
        contexts: HashMap::new(),
        start_error: None,
        lost: false,
    };
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    let result = loop {
        let step = tokio::select! {
            Some((done, lost)) = pending.next(), if !pending.is_empty() => {
                session.lost |= lost;
                session.finished(done).await
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
                Some(Ok(Ok(envelope))) => session.received(envelope, &mut pending).await,
            },
        };
        match step {
            Ok(None) if session.lost => break Err(Error::ServiceGone),
            Ok(None) => {}
            Ok(Some(exit)) => break Ok(exit),
            Err(e) => break Err(e),
        }
    };
    session.stop_service().await;
    result
}

fn gone() -> ServiceError {
    ServiceError::failed("the service thread ended unexpectedly")
}

impl<T: AsyncRead + AsyncWrite + Unpin, S: Service> Session<T, S> {
    async fn send(&mut self, refid: Option<u32>, message: &impl Outgoing) -> Result<(), Error> {
        let envelope = Envelope::new(self.ids.next_id(), refid, message);
        self.send_envelope(envelope).await
    }

    async fn send_envelope(&mut self, envelope: Envelope) -> Result<(), Error> {
        debug!(id = envelope.id, refid = envelope.refid, cmd = %envelope.cmd, "send");
        self.framed.send(envelope).await.map_err(Error::Ipc)
    }

    async fn error(&mut self, refid: u32, code: ErrorCode, text: String) -> Result<(), Error> {
        warn!(refid, %code, %text, "error reply");
        self.send(Some(refid), &ErrorResponse::new(code, text))
            .await
    }

    async fn stop_service(&mut self) {
        if self.lost {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let job: Job<S> = Box::new(move |service: &mut S| {
            service.stop();
            let _ = tx.send(());
        });
        if self.worker.jobs.send(job).is_err() {
            return;
        }
        match tokio::time::timeout(STOP_TIMEOUT, rx).await {
            Ok(_) => debug!("service stopped"),
            Err(_) => warn!("the service did not stop within {STOP_TIMEOUT:?}; exiting anyway"),
        }
    }

    async fn received(
        &mut self,
        envelope: Envelope,
        pending: &mut FuturesUnordered<Pending>,
    ) -> Result<Option<Exit>, Error> {
        let id = envelope.id;
        debug!(id, refid = envelope.refid, cmd = %envelope.cmd, "received");
        if let Err(e) = self.order.check(id) {
            self.error(id, e.code(), e.to_string()).await?;
            return Ok(None);
        }
        let message = match ToService::decode(&envelope.cmd, &envelope.data) {
            Ok(message) => message,
            // A response is never answered, not even a malformed or unknown one: two peers
            // must not trade error replies forever.
            Err(e) if envelope.refid.is_some() => {
                warn!(id, cmd = %envelope.cmd, error = %e, "unexpected response from the server; ignored");
                return Ok(None);
            }
            Err(e) => {
                self.error(id, e.code(), e.to_string()).await?;
                return Ok(None);
            }
        };
        let serving = self.phase == Phase::Ready;
        match message {
            ToService::Ping(_) => self.send(Some(id), &PingResponse {}).await?,
            ToService::StopService(_) => {
                info!("StopService");
                return Ok(Some(Exit::Stopped));
            }
            ToService::ServiceStart(start) if self.phase == Phase::AwaitStart => {
                if start.service_id != self.service_id {
                    warn!(
                        argument = %self.service_id, message = %start.service_id,
                        "ServiceStart names another service id; keeping the one from the command line"
                    );
                }
                info!("ServiceStart");
                let config = start.config;
                pending.push(self.worker.call(
                    move |s: &mut S| s.start(&config),
                    Done::Started,
                    || Done::Started(Err(gone())),
                ));
                self.phase = Phase::Starting;
            }
            ToService::ServiceStart(_) => {
                let text = "ServiceStart was already received".to_owned();
                self.error(id, ErrorCode::Protocol, text).await?;
            }
            ToService::ServiceReadyResponse(response) => match self.phase {
                Phase::Ready if response.outcome.is_ok() => {
                    info!("the server accepted the service")
                }
                Phase::Ready => return Err(Error::Refused(response.outcome.text)),
                Phase::Failed => {
                    let e = self.start_error.take().unwrap_or_else(gone);
                    return Err(Error::Start(e));
                }
                _ => {
                    let text = "unexpected ServiceReadyResponse".to_owned();
                    self.error(id, ErrorCode::Protocol, text).await?;
                }
            },
            ToService::ForwardedServiceOpen(_)
            | ToService::ForwardedServiceClose(_)
            | ToService::ForwardedServiceCommand(_)
                if !serving =>
            {
                let text = match self.phase {
                    Phase::Failed => "the service failed to start",
                    _ => "the service is not started yet (ServiceStart first)",
                };
                self.error(id, ErrorCode::Protocol, text.into()).await?;
            }
            ToService::ForwardedServiceOpen(open) => pending.push(self.open(id, open)),
            ToService::ForwardedServiceClose(close) => match self.close(id, close) {
                Ok(call) => pending.push(call),
                Err(answer) => self.send_answer(id, *answer).await?,
            },
            ToService::ForwardedServiceCommand(command) => match self.command(id, command) {
                Ok(call) => pending.push(call),
                Err(answer) => self.send_answer(id, *answer).await?,
            },
        }
        Ok(None)
    }

    fn open(&mut self, refid: u32, open: ForwardedServiceOpen) -> Pending {
        let context = Context {
            service_id: self.service_id,
            context_id: open.context_id,
            client_id: open.client_id,
            app_name: open.app_name,
            user_name: open.user_name,
        };
        info!(context = %context.context_id, client = %context.client_id,
              app = %context.app_name, user = %context.user_name, "open");
        let request = Request {
            command: open.command.unwrap_or_else(|| Group::new("command")),
            card: open.card,
        };
        let service_id = self.service_id;
        let context_id = context.context_id;
        self.contexts.insert(context_id, context.clone());
        let answer = move |result: Result<Group, ServiceError>| {
            let (outcome, service, forget) = match result {
                Ok(group) => (Outcome::ok("Service open"), Some(group), None),
                Err(e) => (Outcome::failed(e.code, e.text), None, Some(context_id)),
            };
            Done::Answer {
                refid,
                message: Answer::Open(ServiceOpenResponse {
                    outcome,
                    service_id: Some(service_id),
                    service_name: None,
                    context_id: Some(context_id),
                    service_flags: Vec::new(),
                    service,
                }),
                forget,
            }
        };
        let lost = move || answer_lost(refid, Some(context_id));
        self.worker
            .call(move |s: &mut S| s.open(&context, &request), answer, lost)
    }

    fn close(&mut self, refid: u32, close: ForwardedServiceClose) -> Result<Pending, Box<Answer>> {
        let context_id = close.context_id;
        let Some(context) = self.contexts.get(&context_id).cloned() else {
            return Err(Box::new(Answer::Close(ServiceCloseResponse {
                outcome: Outcome::failed(
                    ErrorCode::NotFound,
                    format!("no open context {context_id}"),
                ),
                service_id: Some(self.service_id),
                context_id: Some(context_id),
                ..Default::default()
            })));
        };
        info!(context = %context_id, client = %close.client_id, "close");
        let request = Request {
            command: close.command.unwrap_or_else(|| Group::new("command")),
            card: None,
        };
        let service_id = self.service_id;
        let answer = move |result: Result<Group, ServiceError>| {
            let (outcome, service) = match result {
                Ok(group) => (Outcome::ok("Service closed"), Some(group)),
                Err(e) => (Outcome::failed(e.code, e.text), None),
            };
            Done::Answer {
                refid,
                message: Answer::Close(ServiceCloseResponse {
                    outcome,
                    service_id: Some(service_id),
                    service_name: None,
                    context_id: Some(context_id),
                    service_flags: Vec::new(),
                    service,
                }),
                forget: Some(context_id),
            }
        };
        let lost = move || answer_lost(refid, Some(context_id));
        Ok(self
            .worker
            .call(move |s: &mut S| s.close(&context, &request), answer, lost))
    }

    fn command(
        &mut self,
        refid: u32,
        command: ForwardedServiceCommand,
    ) -> Result<Pending, Box<Answer>> {
        let context_id = command.context_id;
        let Some(context) = self.contexts.get(&context_id).cloned() else {
            return Err(Box::new(Answer::Error(ErrorResponse::new(
                ErrorCode::NotFound,
                format!("no open context {context_id}"),
            ))));
        };
        let request = Request {
            command: command.command,
            card: command.card,
        };
        debug!(context = %context_id, client = %command.client_id, name = request.name(), "command");
        let answer = move |result: Result<Reply, ServiceError>| {
            let message = match result {
                Ok(reply) => {
                    let mut data = reply.data;
                    data.name = "command".to_owned();
                    Answer::Command(ServiceCommandResult {
                        code: None,
                        text: None,
                        name: Some(reply.name),
                        command: Some(data),
                    })
                }
                Err(e) => Answer::Error(ErrorResponse::new(e.code, e.text)),
            };
            Done::Answer {
                refid,
                message,
                forget: None,
            }
        };
        let lost = move || answer_lost(refid, None);
        Ok(self
            .worker
            .call(move |s: &mut S| s.command(&context, &request), answer, lost))
    }

    async fn send_answer(&mut self, refid: u32, answer: Answer) -> Result<(), Error> {
        let envelope = answer
            .as_outgoing()
            .envelope(self.ids.next_id(), Some(refid));
        self.send_envelope(envelope).await
    }

    async fn finished(&mut self, done: Done) -> Result<Option<Exit>, Error> {
        match done {
            Done::Started(result) => {
                let outcome = match &result {
                    Ok(()) => {
                        info!("service started");
                        Outcome::ok("Service ready")
                    }
                    Err(e) => {
                        error!(error = %e, "service failed to start");
                        Outcome::failed(e.code, e.text.clone())
                    }
                };
                let ready = ServiceReady {
                    outcome,
                    service_id: self.service_id,
                };
                self.send(None, &ready).await?;
                match result {
                    Ok(()) => self.phase = Phase::Ready,
                    Err(e) => {
                        self.start_error = Some(e);
                        self.phase = Phase::Failed;
                    }
                }
            }
            Done::Answer {
                refid,
                message,
                forget,
            } => {
                if let Some(context) = forget {
                    self.contexts.remove(&context);
                }
                self.send_answer(refid, message).await?;
            }
        }
        Ok(None)
    }
}

/// The answer when the service thread is gone.
fn answer_lost(refid: u32, forget: Option<ContextId>) -> Done {
    let e = gone();
    Done::Answer {
        refid,
        message: Answer::Error(ErrorResponse::new(e.code, e.text)),
        forget,
    }
}
