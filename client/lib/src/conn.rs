//! The connection: a reader task, the table of waiting requests, and a shared writer.
//!
//! A request is numbered, registered, encoded and written to the socket by the caller
//! itself, all under one lock, so frames go out in id order and no task has to be woken to
//! send it. Only when the server is behind and the socket is full does the connection's
//! drain task write what is left, as room appears ([`chipcard_sock::SharedWriter`]).
//!
//! The reader task hands each response to the request whose id its `refid` names, through
//! a oneshot channel, and puts pushes into two bounded queues. It never waits for the
//! application: a full push queue drops the newest push.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chipcard_ipc::codec::MAX_BODY;
use chipcard_ipc::message::{
    CardAvailable, FromClient, Message, Notification, ReleaseCard, TakeCard, ToClient,
};
use chipcard_ipc::{
    Addressed, FrameError, IdCounter, IdOrder, Incoming, MessageCodec, Outcome, Outgoing,
};
use chipcard_sock::{ReadHalf, SharedWriter};
use futures::StreamExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{Encoder, FramedRead};

use crate::error::{Error, Result};

type Reply = Result<ToClient>;

struct Pending {
    cmd: &'static str,
    tx: oneshot::Sender<Reply>,
}

/// The initial size of the read buffer (it grows for larger messages).
const READ_BUFFER: usize = 4 * 1024;

struct State {
    ids: IdCounter,
    /// Writes requests straight from their typed form into the write buffer.
    codec: MessageCodec<ToClient>,
    pending: HashMap<u32, Pending>,
    /// Set once, when the connection fails or ends.
    closed: Option<Error>,
    cards: Option<mpsc::Sender<CardAvailable>>,
    notifications: Option<mpsc::Sender<Notification>>,
}

/// What the reader and drain tasks share with the handles. The state is locked together
/// with the write buffer.
struct Shared {
    out: SharedWriter<State>,
    dropped_pushes: AtomicU64,
}

impl Shared {
    fn lock(&self) -> chipcard_sock::Locked<'_, State> {
        self.out.lock()
    }

    /// Marks the connection closed with `reason` and fails every waiting request with it.
    /// The push queues are closed, so their streams end.
    fn close(&self, reason: Error) {
        let pending = {
            let mut locked = self.lock();
            let st = locked.state();
            if st.closed.is_none() {
                st.closed = Some(reason);
            }
            st.cards = None;
            st.notifications = None;
            std::mem::take(&mut st.pending)
        };
        let reason = self.lock().state().closed.clone();
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
    reader: JoinHandle<()>,
    pub(crate) cards: Arc<tokio::sync::Mutex<mpsc::Receiver<CardAvailable>>>,
    pub(crate) notifications: Arc<tokio::sync::Mutex<mpsc::Receiver<Notification>>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The server sees the end of the stream once what is queued is written (the drain
        // task ends then).
        self.shared.out.close();
        self.reader.abort();
    }
}

impl Connection {
    /// Starts the reader and drain tasks on an already connected stream.
    /// Must be called within a tokio runtime.
    pub(crate) fn start(stream: UnixStream, push_capacity: usize) -> std::io::Result<Connection> {
        let stream = Arc::new(stream.into_std()?);
        let (cards_tx, cards_rx) = mpsc::channel(push_capacity.max(1));
        let (notes_tx, notes_rx) = mpsc::channel(push_capacity.max(1));
        let state = State {
            ids: IdCounter::new(),
            codec: MessageCodec::new(),
            pending: HashMap::new(),
            closed: None,
            cards: Some(cards_tx),
            notifications: Some(notes_tx),
        };
        let shared = Arc::new(Shared {
            out: SharedWriter::new(stream.clone(), state)?,
            dropped_pushes: AtomicU64::new(0),
        });
        let read = chipcard_sock::read_half(stream)?;
        tokio::spawn(drain(shared.clone()));
        let reader = tokio::spawn(read_loop(
            FramedRead::with_capacity(read, MessageCodec::new(), READ_BUFFER),
            shared.clone(),
        ));
        Ok(Connection {
            shared,
            reader,
            cards: Arc::new(tokio::sync::Mutex::new(cards_rx)),
            notifications: Arc::new(tokio::sync::Mutex::new(notes_rx)),
        })
    }

    /// How many pushes were dropped because their queue was full.
    pub(crate) fn dropped_pushes(&self) -> u64 {
        self.shared.dropped_pushes.load(Ordering::Relaxed)
    }

    /// True once the connection has failed or ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().state().closed.is_some()
    }

    /// The error the connection closed with (or a generic one).
    pub(crate) fn closed_error(&self) -> Error {
        self.shared
            .lock()
            .state()
            .closed
            .clone()
            .unwrap_or(Error::Closed {
                reason: "the connection task ended".into(),
            })
    }

    /// Queues `msg` and registers its id; the receiver gets the answer.
    fn send(&self, msg: &FromClient) -> Result<(u32, oneshot::Receiver<Reply>)> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let id = queue(&self.shared, msg, reply_tx)?;
        Ok((id, reply_rx))
    }

    /// Queues `msg` without waiting for its answer; the answer is ignored when it comes.
    /// Needs no runtime and never blocks, so it can be used in `Drop`.
    pub(crate) fn send_and_forget(&self, msg: &FromClient) {
        let (reply_tx, _) = oneshot::channel();
        if let Err(e) = queue(&self.shared, msg, reply_tx) {
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
                    self.shared.lock().state().pending.remove(&id);
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

/// Takes an id, registers the reply channel and writes the frame, all under one lock so
/// that frames go out in id order.
fn queue(shared: &Shared, msg: &FromClient, reply: oneshot::Sender<Reply>) -> Result<u32> {
    let mut locked = shared.lock();
    if locked.is_closed() {
        return Err(Error::Closed {
            reason: "the connection is closing".into(),
        });
    }
    let (st, buf) = locked.parts();
    if let Some(e) = &st.closed {
        return Err(e.clone());
    }
    let id = st.ids.next_id();
    let request = Addressed {
        id,
        refid: None,
        message: msg,
    };
    st.codec.encode(request, buf).map_err(|e| match e {
        chipcard_ipc::Error::Frame(FrameError::BodyTooLarge { length, .. }) => {
            Error::InvalidArgument(format!(
                "{} message of {length} bytes is over the frame limit of {MAX_BODY} bytes",
                msg.cmd(),
            ))
        }
        e => Error::protocol_from("cannot frame a request", e),
    })?;
    tracing::trace!(id, cmd = msg.cmd(), "request");
    st.pending.insert(
        id,
        Pending {
            cmd: msg.cmd(),
            tx: reply,
        },
    );
    if let Err(e) = locked.write_out() {
        locked.state().pending.remove(&id);
        drop(locked);
        let error = Error::Io(Arc::new(e));
        tracing::debug!(error = %error, "writing to chipcardd failed");
        shared.close(error.clone());
        return Err(error);
    }
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

/// Writes what callers left in the buffer when the socket was full; ends when the
/// connection is dropped (after writing what is queued) or writing fails.
async fn drain(shared: Arc<Shared>) {
    let mut waiting = None;
    if let Err(e) = shared.out.drain(&mut waiting).await {
        let error = Error::Io(Arc::new(e));
        tracing::debug!(error = %error, "writing to chipcardd failed");
        shared.close(error);
    }
}

async fn read_loop(mut stream: FramedRead<ReadHalf, MessageCodec<ToClient>>, shared: Arc<Shared>) {
    let mut order = IdOrder::new();
    let reason = loop {
        let message = match stream.next().await {
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
            Some(Ok(Ok(message))) => message,
        };
        if let Err(e) = order.check(message.id) {
            break Error::protocol_from("message ids from the server out of order", e);
        }
        dispatch(&shared, message);
    };
    tracing::debug!(reason = %reason, "connection to chipcardd ended");
    shared.close(reason);
}

/// Hands one message from the server to its request or push queue.
fn dispatch(shared: &Shared, message: Incoming<ToClient>) {
    let Incoming {
        refid,
        cmd,
        message: decoded,
        ..
    } = message;
    match refid {
        Some(refid) => {
            let Some(pending) = shared.lock().state().pending.remove(&refid) else {
                tracing::debug!(refid, %cmd, "answer to no waiting request, ignored");
                return;
            };
            tracing::trace!(refid, %cmd, "response");
            let reply = decoded.map_err(|e| {
                Error::protocol_from(format!("bad {cmd} answer to {}", pending.cmd), e)
            });
            if let Err(Ok(ToClient::TakeCardResponse(r))) = pending.tx.send(reply) {
                // The caller gave up (timeout or cancel) but the server gave us the card:
                // give it back, or nobody else could take it until we disconnect.
                if r.outcome.is_ok() {
                    // Refused when the connection is closing: the server releases it then.
                    let release = FromClient::ReleaseCard(ReleaseCard { card_id: r.card_id });
                    let (reply_tx, _) = oneshot::channel();
                    let _ = queue(shared, &release, reply_tx);
                }
            }
        }
        None => match decoded {
            Ok(ToClient::CardAvailable(card)) => {
                let queue = shared.lock().state().cards.clone();
                push(shared, queue, card, "CardAvailable");
            }
            Ok(ToClient::Notification(note)) => {
                let queue = shared.lock().state().notifications.clone();
                push(shared, queue, note, "Notification");
            }
            Ok(other) => {
                tracing::warn!(
                    cmd = other.cmd(),
                    "unexpected message without refid, ignored"
                );
            }
            Err(e) => {
                tracing::warn!(%cmd, error = %e, "unreadable push, ignored");
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
