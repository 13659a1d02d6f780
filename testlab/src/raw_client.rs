//! A client that speaks chipcardd's wire protocol directly over its Unix socket, for tests
//! that look at envelopes or send what a well-behaved client never would; the requests
//! tests make again and again are its methods in [`crate::requests`].

use std::path::Path;

use bytes::BytesMut;
use chipcard_ipc::message::{ClientReady, ClientReadyResponse, Message, Outgoing, ToClient};
use chipcard_ipc::{Envelope, EnvelopeCodec, Group, IdCounter};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::{Encoder, Framed};

use crate::link::ANSWER_TIMEOUT as TIMEOUT;

/// A client that speaks the wire protocol directly. Pushes read while it waits for a
/// response are kept for [`RawClient::wait_push`].
pub struct RawClient {
    framed: Framed<UnixStream, EnvelopeCodec>,
    ids: IdCounter,
    pushes: Vec<Envelope>,
}

impl RawClient {
    /// Connects without sending anything.
    pub async fn connect(socket: &Path) -> RawClient {
        let stream = UnixStream::connect(socket)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        RawClient {
            framed: Framed::new(stream, EnvelopeCodec::new()),
            ids: IdCounter::new(),
            pushes: Vec::new(),
        }
    }

    /// Connects and completes `ClientReady`.
    pub async fn ready(socket: &Path) -> RawClient {
        RawClient::ready_with_response(socket).await.0
    }

    /// Connects and completes `ClientReady`; also returns the server's answer.
    pub async fn ready_with_response(socket: &Path) -> (RawClient, ClientReadyResponse) {
        let mut client = RawClient::connect(socket).await;
        let response = client
            .call(&ClientReady {
                application: "chipcard-tests".into(),
                chipcard_version: chipcard_ipc::PROTOCOL_VERSION.into(),
                system: "Linux".into(),
                gwen_version: None,
            })
            .await;
        (client, response)
    }

    /// Sends a message and returns its id.
    pub async fn send(&mut self, message: &impl Outgoing) -> u32 {
        let id = self.ids.next_id();
        self.send_with_id(id, message).await;
        id
    }

    /// Sends a message with a chosen id (for id-order tests).
    pub async fn send_with_id(&mut self, id: u32, message: &impl Outgoing) {
        self.framed
            .send(Envelope::new(id, None, message))
            .await
            .expect("send message");
    }

    /// Sends an envelope as it is (any id, refid and command).
    pub async fn send_envelope(&mut self, envelope: Envelope) {
        self.framed.send(envelope).await.expect("send message");
    }

    /// Sends raw bytes on the socket.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.framed
            .get_mut()
            .write_all(bytes)
            .await
            .expect("send raw bytes");
    }

    /// Closes the sending half of the connection (the server reads end of file); answers can
    /// still be read.
    pub async fn shutdown_send(&mut self) {
        self.framed
            .get_mut()
            .shutdown()
            .await
            .expect("shut down the sending half");
    }

    /// Sends a frame whose body is `body`.
    pub async fn send_body(&mut self, body: &[u8]) {
        let mut buf = BytesMut::new();
        chipcard_ipc::FrameCodec::new()
            .encode(body, &mut buf)
            .expect("frame the body");
        self.send_raw(&buf).await;
    }

    /// Sends a message with any command name and data.
    pub async fn send_cmd(&mut self, cmd: &str, data: Group) -> u32 {
        let id = self.ids.next_id();
        self.send_envelope(Envelope {
            id,
            refid: None,
            cmd: cmd.to_owned(),
            data,
        })
        .await;
        id
    }

    /// The next envelope, or `None` when the server closed the connection.
    pub async fn next_envelope(&mut self) -> Option<Envelope> {
        match tokio::time::timeout(TIMEOUT, self.framed.next()).await {
            Err(_) => panic!("no message from the server within {TIMEOUT:?}"),
            Ok(None) => None,
            Ok(Some(Err(e))) => panic!("bad frame from the server: {e}"),
            Ok(Some(Ok(Err(e)))) => panic!("bad message from the server: {e}"),
            Ok(Some(Ok(Ok(env)))) => Some(env),
        }
    }

    /// The next message, decoded; panics on close.
    pub async fn next_message(&mut self) -> (Envelope, ToClient) {
        let env = self
            .next_envelope()
            .await
            .expect("server closed the connection");
        let msg = ToClient::decode(&env.cmd, &env.data)
            .unwrap_or_else(|e| panic!("undecodable {}: {e}", env.cmd));
        (env, msg)
    }

    /// Sends a request and returns the response to it, skipping pushes.
    pub async fn request(&mut self, message: &impl Outgoing) -> ToClient {
        let id = self.send(message).await;
        self.response_to(id).await
    }

    /// The response to request `id`, decoded; pushes (which have no refid) read meanwhile are
    /// kept.
    pub async fn response_to(&mut self, id: u32) -> ToClient {
        let env = self.response_envelope(id).await;
        ToClient::decode(&env.cmd, &env.data)
            .unwrap_or_else(|e| panic!("undecodable {}: {e}", env.cmd))
    }

    /// The response envelope to request `id`; pushes read meanwhile are kept for
    /// [`RawClient::wait_push`]. A response to another request fails the test.
    pub async fn response_envelope(&mut self, id: u32) -> Envelope {
        loop {
            let env = self
                .next_envelope()
                .await
                .expect("server closed the connection");
            if env.refid == Some(id) {
                return env;
            }
            assert!(
                env.refid.is_none(),
                "response to an unexpected request: {env:?}"
            );
            self.pushes.push(env);
        }
    }

    /// Sends a request and reads its response as `R`; a response of another kind (an
    /// `Error`, say) fails the test.
    pub async fn call<R: Message>(&mut self, message: &impl Outgoing) -> R {
        let id = self.send(message).await;
        let env = self.response_envelope(id).await;
        assert_eq!(env.cmd, R::CMD, "{env:?}");
        R::read_data(&env.data).expect("a valid response")
    }

    /// The next push named `cmd`: the first one kept, else the next one read (keeping other
    /// pushes).
    pub async fn wait_push(&mut self, cmd: &str) -> Envelope {
        if let Some(i) = self.pushes.iter().position(|e| e.cmd == cmd) {
            return self.pushes.remove(i);
        }
        loop {
            let env = self
                .next_envelope()
                .await
                .expect("server closed the connection");
            if env.cmd == cmd {
                return env;
            }
            self.pushes.push(env);
        }
    }

    /// Forgets the pushes kept so far.
    pub fn clear_pushes(&mut self) {
        self.pushes.clear();
    }

    /// True once the server has closed the connection (reads until close, up to the timeout).
    pub async fn is_closed_by_server(&mut self) -> bool {
        self.read_until_closed().await.is_some()
    }

    /// Reads until the server closes the connection and returns the messages it sent before
    /// (undecodable envelopes are skipped); `None` when it is still open after the timeout.
    pub async fn read_until_closed(&mut self) -> Option<Vec<ToClient>> {
        let mut read = Vec::new();
        loop {
            match tokio::time::timeout(TIMEOUT, self.framed.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(read),
                Ok(Some(Ok(Ok(env)))) => {
                    if let Ok(msg) = ToClient::decode(&env.cmd, &env.data) {
                        read.push(msg);
                    }
                }
                Ok(Some(Ok(Err(_)))) => continue,
            }
        }
    }
}
