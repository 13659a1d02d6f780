//! The queue of messages to one client, drained by that client's writer task.
//!
//! Responses go through a [`Reply`]: a slot reserved in the queue before the request is
//! handled, so a client that does not read its answers stops being read (back-pressure)
//! instead of growing the queue. Pushed messages (`CardAvailable`, `Notification`) are
//! queued with [`Outbox::push`], which never waits: it is called with the registry's mutex
//! held. A client whose queue is full for a push is too slow to keep up and is disconnected.

use chipcard_ipc::message::ToClient;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How many messages may wait for one client.
pub const CAPACITY: usize = 256;

/// One message for the writer task: a response (with the request's id) or a push.
#[derive(Debug)]
pub struct Outbound {
    /// The id of the request answered; `None` for pushes.
    pub refid: Option<u32>,
    /// The message, boxed: the queue allocates its slots 32 at a time, and an unboxed
    /// `ToClient` would make that 5.5 KiB for every connected client, idle or not.
    pub msg: Box<ToClient>,
}

/// The sending side of a client's queue, plus the switch that closes the connection.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    closing: CancellationToken,
}

impl Outbox {
    /// A queue and its receiving end, with the token that closes the connection.
    pub fn new(closing: CancellationToken) -> (Outbox, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (Outbox { tx, closing }, rx)
    }

    /// Queues a pushed message; a full queue disconnects the client.
    pub fn push(&self, msg: impl Into<ToClient>) {
        self.queue(None, msg.into());
    }

    /// Queues a message without waiting (also used for protocol errors, which have no slot).
    pub fn queue(&self, refid: Option<u32>, msg: ToClient) {
        match self.tx.try_send(Outbound {
            refid,
            msg: Box::new(msg),
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!("client does not read its messages; disconnecting it");
                self.closing.cancel();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Reserves a slot for the answer to request `refid`, waiting while the queue is full,
    /// but at most `stall`: a client that leaves its full queue unread that long is
    /// disconnected. `request` (the client's in-progress request slot) is held until the
    /// answer is sent. `None` when the connection is closing.
    pub async fn reserve(
        &self,
        refid: u32,
        request: Option<OwnedSemaphorePermit>,
        stall: Duration,
    ) -> Option<Reply> {
        // Usually there is room, and then no timer is needed.
        match self.tx.clone().try_reserve_owned() {
            Ok(permit) => {
                return Some(Reply {
                    permit,
                    refid,
                    _request: request,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return None,
            Err(mpsc::error::TrySendError::Full(_)) => {}
        }
        tokio::select! {
            _ = self.closing.cancelled() => None,
            _ = tokio::time::sleep(stall) => {
                warn!("client does not read its answers; disconnecting it");
                self.closing.cancel();
                None
            }
            permit = self.tx.clone().reserve_owned() => permit.ok().map(|permit| Reply {
                permit,
                refid,
                _request: request,
            }),
        }
    }

    /// The token that closes this connection.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }
}

/// The reserved slot for one response.
#[derive(Debug)]
pub struct Reply {
    permit: mpsc::OwnedPermit<Outbound>,
    refid: u32,
    /// The client's in-progress request slot, freed with the answer.
    _request: Option<OwnedSemaphorePermit>,
}

impl Reply {
    /// The id of the request being answered.
    pub fn refid(&self) -> u32 {
        self.refid
    }

    /// Sends the response.
    pub fn send(self, msg: impl Into<ToClient>) {
        self.permit.send(Outbound {
            refid: Some(self.refid),
            msg: Box::new(msg.into()),
        });
    }
}
