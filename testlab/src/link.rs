//! The test as chipcardd on its end of a socketpair to a driver or a service: envelopes out
//! with fresh ids, typed messages in, pushes (messages without a refid) kept aside while a
//! response is awaited.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::Duration;

use chipcard_ipc::message::{MessageSet, Outgoing};
use chipcard_ipc::{Envelope, EnvelopeCodec, Group, IdCounter};
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// How long [`Link::recv`] and [`Link::request`] wait for the peer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's end of the connection to a driver or service; `M` is what the peer sends
/// (`FromDriver`, `FromService`).
pub struct Link<M> {
    framed: Framed<UnixStream, EnvelopeCodec>,
    ids: IdCounter,
    pushes: VecDeque<(Envelope, M)>,
}

impl<M: MessageSet + Debug> Link<M> {
    /// Speaks envelopes on `stream`.
    pub fn new(stream: UnixStream) -> Link<M> {
        Link {
            framed: Framed::new(stream, EnvelopeCodec::new()),
            ids: IdCounter::new(),
            pushes: VecDeque::new(),
        }
    }

    /// Sends `message` with the next id; returns the id.
    pub async fn send(&mut self, message: &impl Outgoing) -> u32 {
        let id = self.next_id();
        self.send_with_id(id, message).await;
        id
    }

    /// The id the next [`Link::send`] would use, taken (for envelopes built by hand).
    pub fn next_id(&mut self) -> u32 {
        self.ids.next_id()
    }

    /// Sends `message` with the id `id` (also one out of order).
    pub async fn send_with_id(&mut self, id: u32, message: &impl Outgoing) {
        self.framed
            .send(Envelope::new(id, None, message))
            .await
            .expect("send to the peer");
    }

    /// Sends a message with any command name and data (one the peer may not know, or one
    /// missing a field), with the next id; returns the id.
    pub async fn send_cmd(&mut self, cmd: &str, data: Group) -> u32 {
        let id = self.next_id();
        self.framed
            .send(Envelope {
                id,
                refid: None,
                cmd: cmd.to_owned(),
                data,
            })
            .await
            .expect("send to the peer");
        id
    }

    /// The next message from the connection, within `limit` (pushes kept aside by
    /// [`Link::request`] are not looked at).
    pub async fn recv_within(&mut self, limit: Duration) -> (Envelope, M) {
        let env = tokio::time::timeout(limit, self.framed.next())
            .await
            .unwrap_or_else(|_| panic!("nothing from the peer within {limit:?}"))
            .expect("connection open")
            .expect("valid frame")
            .expect("valid envelope");
        let message = M::decode_data(&env.cmd, &env.data).expect("a known message");
        (env, message)
    }

    /// The next message from the connection, within [`ANSWER_TIMEOUT`].
    pub async fn recv(&mut self) -> (Envelope, M) {
        self.recv_within(ANSWER_TIMEOUT).await
    }

    /// Sends `message` and returns its response; pushes read meanwhile are kept for
    /// [`Link::event`]. A response to another request fails the test.
    pub async fn request(&mut self, message: &impl Outgoing) -> (Envelope, M) {
        let id = self.send(message).await;
        loop {
            let (env, msg) = self.recv().await;
            match env.refid {
                Some(refid) if refid == id => return (env, msg),
                Some(other) => panic!("response to {other}, expected {id}: {msg:?}"),
                None => self.pushes.push_back((env, msg)),
            }
        }
    }

    /// The next push (a message without a refid): one kept by [`Link::request`], else the
    /// next message within `limit`, which must be a push.
    pub async fn event(&mut self, limit: Duration) -> M {
        if let Some((_, msg)) = self.pushes.pop_front() {
            return msg;
        }
        let (env, msg) = self.recv_within(limit).await;
        assert_eq!(env.refid, None, "a push, not a response: {msg:?}");
        msg
    }

    /// The framed connection itself, for what a well-behaved server never sends.
    pub fn framed(&mut self) -> &mut Framed<UnixStream, EnvelopeCodec> {
        &mut self.framed
    }

    /// Closes the connection, as a server that went away; later sends fail.
    pub fn hang_up(&mut self) {
        let (dead_end, _) = UnixStream::pair().expect("socketpair");
        drop(std::mem::replace(
            &mut self.framed,
            Framed::new(dead_end, EnvelopeCodec::new()),
        ));
    }
}
