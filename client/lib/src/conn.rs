//! The connection: one writer task, one reader task, and the table of waiting requests.
//!
//! Requests are written in the order their ids are handed out (the id is taken and the frame
//! queued under one lock). The reader task hands each response to the request whose id its
//! `refid` names, through a oneshot channel, and puts pushes into two bounded queues. It
//! never waits for the application: a full push queue drops the newest push.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chipcard_ipc::codec::MAX_BODY;
use chipcard_ipc::message::{
    CardAvailable, FromClient, Message, Notification, ReleaseCard, TakeCard, ToClient,
};
use chipcard_ipc::{Envelope, EnvelopeCodec, FrameCodec, IdCounter, IdOrder, Outcome, Outgoing};
use futures::{SinkExt, StreamExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::error::{Error, Result};

type Reply = Result<ToClient>;

struct Pending {
    cmd: &'static str,
    tx: oneshot::Sender<Reply>,
}

struct State {
    ids: IdCounter,
    pending: HashMap<u32, Pending>,
    /// Set once, when the connection fails or ends.
    closed: Option<Error>,
    cards: Option<mpsc::Sender<CardAvailable>>,
    notifications: Option<mpsc::Sender<Notification>>,
}

/// What the reader and writer tasks share with the handles.
struct Shared {
    state: Mutex<State>,
    dropped_pushes: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection closed with `reason` and fails every waiting request with it.
    /// The push queues are closed, so their streams end.
    fn close(&self, reason: Error) {
        let pending = {
            let mut st = self.lock();
            if st.closed.is_none() {
                st.closed = Some(reason);
            }
            st.cards = None;
            st.notifications = None;
            std::mem::take(&mut st.pending)
        };
        let reason = self.lock().closed.clone();
        if let Some(reason) = reason {
            for (_, p) in pending {
                let _ = p.tx.send(Err(reason.clone()));
            }
        }
    }
}

/// The sending side of a connection. Dropping the last handle (client and card guards)
/// closes the connection after the queued messages are written.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Bytes>,
    reader: JoinHandle<()>,
    pub(crate) cards: Arc<tokio::sync::Mutex<mpsc::Receiver<CardAvailable>>>,
    pub(crate) notifications: Arc<tokio::sync::Mutex<mpsc::Receiver<Notification>>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The writer task ends by itself once `tx` is gone, after writing what is queued.
        self.reader.abort();
    }
}

impl Connection {
    /// Starts the reader and writer tasks on an already connected stream.
    /// Must be called within a tokio runtime.
    pub(crate) fn start(stream: UnixStream, push_capacity: usize) -> Connection {
        let (read, write) = stream.into_split();
        let (cards_tx, cards_rx) = mpsc::channel(push_capacity.max(1));
        let (notes_tx, notes_rx) = mpsc::channel(push_capacity.max(1));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ids: IdCounter::new(),
                pending: HashMap::new(),
                closed: None,
                cards: Some(cards_tx),
                notifications: Some(notes_tx),
            }),
            dropped_pushes: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(
            rx,
            FramedWrite::new(write, FrameCodec::new()),
            shared.clone(),
        ));
        let reader = tokio::spawn(read_loop(
            FramedRead::new(read, EnvelopeCodec::new()),
            shared.clone(),
            tx.downgrade(),
        ));
        Connection {
            shared,
            tx,
            reader,
            cards: Arc::new(tokio::sync::Mutex::new(cards_rx)),
            notifications: Arc::new(tokio::sync::Mutex::new(notes_rx)),
        }
    }

    /// How many pushes were dropped because their queue was full.
    pub(crate) fn dropped_pushes(&self) -> u64 {
        self.shared.dropped_pushes.load(Ordering::Relaxed)
    }

    /// True once the connection has failed or ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// The error the connection closed with (or a generic one).
    pub(crate) fn closed_error(&self) -> Error {
        self.shared.lock().closed.clone().unwrap_or(Error::Closed {
            reason: "the connection task ended".into(),
        })
    }

    /// Queues `msg` and registers its id; the receiver gets the answer.
    fn send(&self, msg: &FromClient) -> Result<(u32, oneshot::Receiver<Reply>)> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let id = queue(&self.shared, &self.tx, msg, reply_tx)?;
        Ok((id, reply_rx))
    }

    /// Queues `msg` without waiting for its answer; the answer is ignored when it comes.
    /// Needs no runtime and never blocks, so it can be used in `Drop`.
    pub(crate) fn send_and_forget(&self, msg: &FromClient) {
        let (reply_tx, _) = oneshot::channel();
        if let Err(e) = queue(&self.shared, &self.tx, msg, reply_tx) {
            tracing::debug!(cmd = msg.cmd(), error = %e, "could not queue a message");
        }
    }

    /// Sends a request and waits up to `timeout` for its answer. Both shapes of a failure
    /// (an `Error` message and a failed `code`/`text` of the response itself) become
    /// [`Error::Server`].
    pub(crate) async fn request(&self, msg: FromClient, timeout: Duration) -> Result<ToClient> {
        let cmd = msg.cmd();
        let (id, rx) = self.send(&msg)?;
        let reply = match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                // A late TakeCard answer must still be seen, to give the card back.
                if cmd != TakeCard::CMD {
                    self.shared.lock().pending.remove(&id);
                }
                return Err(Error::Timeout {
                    what: format!("the answer to {cmd}"),
                    after: timeout,
                });
            }
            Ok(Err(_)) => return Err(self.closed_error()),
            Ok(Ok(reply)) => reply?,
        };
        check(cmd, reply)
    }
}

/// Takes an id, registers the reply channel and queues the frame, all under one lock so
/// that frames go out in id order.
fn queue(
    shared: &Shared,
    tx: &mpsc::UnboundedSender<Bytes>,
    msg: &FromClient,
    reply: oneshot::Sender<Reply>,
) -> Result<u32> {
    let mut st = shared.lock();
    if let Some(e) = &st.closed {
        return Err(e.clone());
    }
    let id = st.ids.next_id();
    let body = Envelope::new(id, None, msg).encode();
    if body.len() > MAX_BODY {
        return Err(Error::InvalidArgument(format!(
            "{} message of {} bytes is over the frame limit of {MAX_BODY} bytes",
            msg.cmd(),
            body.len()
        )));
    }
    tracing::trace!(id, cmd = msg.cmd(), "request");
    if tx.send(body).is_err() {
        return Err(st.closed.clone().unwrap_or(Error::Closed {
            reason: "the connection task ended".into(),
        }));
    }
    st.pending.insert(
        id,
        Pending {
            cmd: msg.cmd(),
            tx: reply,
        },
    );
    Ok(id)
}

/// Turns `Error` answers and failed outcomes into [`Error::Server`].
pub(crate) fn check(request: &'static str, reply: ToClient) -> Result<ToClient> {
    if let ToClient::ErrorResponse(e) = &reply {
        return Err(Error::Server {
            request,
            code: e.error_code(),
            text: e.text.clone(),
        });
    }
    if let Some(Outcome {
        error: Some(code),
        text,
    }) = outcome_of(&reply)
    {
        return Err(Error::Server {
            request,
            code: *code,
            text: text.clone(),
        });
    }
    Ok(reply)
}

/// The outcome of a response that carries its own `code`/`text`.
fn outcome_of(reply: &ToClient) -> Option<&Outcome> {
    match reply {
        ToClient::SetNotifyResponse(r) => Some(&r.outcome),
        ToClient::StartWaitResponse(r) => Some(&r.outcome),
        ToClient::StopWaitResponse(r) => Some(&r.outcome),
        ToClient::TakeCardResponse(r) => Some(&r.outcome),
        ToClient::ReleaseCardResponse(r) => Some(&r.outcome),
        ToClient::CommandCardResponse(r) => Some(&r.outcome),
        ToClient::CardCheckResponse(r) => Some(&r.outcome),
        ToClient::CardResetResponse(r) => Some(&r.outcome),
        ToClient::ServiceOpenResponse(r) => Some(&r.outcome),
        ToClient::ServiceCloseResponse(r) => Some(&r.outcome),
        ToClient::ServiceCommandResponse(r) => Some(&r.outcome),
        ToClient::ClientReadyResponse(_)
        | ToClient::ListReadersResponse(_)
        | ToClient::GetDriverVarResponse(_)
        | ToClient::ErrorResponse(_)
        | ToClient::CardAvailable(_)
        | ToClient::Notification(_) => None,
    }
}

async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    mut sink: FramedWrite<OwnedWriteHalf, FrameCodec>,
    shared: Arc<Shared>,
) {
    while let Some(body) = rx.recv().await {
        if let Err(e) = sink.send(body).await {
            let error = match e {
                chipcard_ipc::Error::Io(io) => Error::Io(Arc::new(io)),
                other => Error::protocol_from("cannot frame a request", other),
            };
            tracing::debug!(error = %error, "writing to chipcardd failed");
            shared.close(error);
            return;
        }
    }
    // Every handle is gone: end our direction, so the server sees the disconnect.
    let _ = SinkExt::<Bytes>::close(&mut sink).await;
}

async fn read_loop(
    mut stream: FramedRead<OwnedReadHalf, EnvelopeCodec>,
    shared: Arc<Shared>,
    tx: mpsc::WeakUnboundedSender<Bytes>,
) {
    let mut order = IdOrder::new();
    let reason = loop {
        let envelope = match stream.next().await {
            None => {
                break Error::Closed {
                    reason: "the server closed the connection".into(),
                }
            }
            Some(Err(chipcard_ipc::Error::Io(e))) => break Error::Io(Arc::new(e)),
            Some(Err(e)) => break Error::protocol_from("bad frame from the server", e),
            Some(Ok(Err(e))) => {
                break Error::protocol_from("unreadable message from the server", e)
            }
            Some(Ok(Ok(envelope))) => envelope,
        };
        if let Err(e) = order.check(envelope.id) {
            break Error::protocol_from("message ids from the server out of order", e);
        }
        dispatch(&shared, &tx, envelope);
    };
    tracing::debug!(reason = %reason, "connection to chipcardd ended");
    shared.close(reason);
}

/// Hands one message from the server to its request or push queue.
fn dispatch(shared: &Shared, tx: &mpsc::WeakUnboundedSender<Bytes>, envelope: Envelope) {
    let decoded = ToClient::decode(&envelope.cmd, &envelope.data);
    match envelope.refid {
        Some(refid) => {
            let Some(pending) = shared.lock().pending.remove(&refid) else {
                tracing::debug!(refid, cmd = %envelope.cmd, "answer to no waiting request, ignored");
                return;
            };
            tracing::trace!(refid, cmd = %envelope.cmd, "response");
            let reply = decoded.map_err(|e| {
                Error::protocol_from(format!("bad {} answer to {}", envelope.cmd, pending.cmd), e)
            });
            if let Err(Ok(ToClient::TakeCardResponse(r))) = pending.tx.send(reply) {
                // The caller gave up (timeout or cancel) but the server gave us the card:
                // give it back, or nobody else could take it until we disconnect.
                if r.outcome.is_ok() {
                    if let Some(tx) = tx.upgrade() {
                        let release = FromClient::ReleaseCard(ReleaseCard { card_id: r.card_id });
                        let (reply_tx, _) = oneshot::channel();
                        let _ = queue(shared, &tx, &release, reply_tx);
                    }
                }
            }
        }
        None => match decoded {
            Ok(ToClient::CardAvailable(card)) => {
                let queue = shared.lock().cards.clone();
                push(shared, queue, card, "CardAvailable");
            }
            Ok(ToClient::Notification(note)) => {
                let queue = shared.lock().notifications.clone();
                push(shared, queue, note, "Notification");
            }
            Ok(other) => {
                tracing::warn!(
                    cmd = other.cmd(),
                    "unexpected message without refid, ignored"
                );
            }
            Err(e) => {
                tracing::warn!(cmd = %envelope.cmd, error = %e, "unreadable push, ignored");
            }
        },
    }
}

fn push<T>(shared: &Shared, queue: Option<mpsc::Sender<T>>, item: T, what: &str) {
    let Some(queue) = queue else { return };
    match queue.try_send(item) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            let n = shared.dropped_pushes.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(what, dropped = n, "push queue full, push dropped");
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}
