//! One client connection: a reader loop that checks ids and hands each request to
//! [`crate::dispatch`], and a writer task that numbers and sends what the client's
//! [`Outbox`] holds.
//!
//! A body that does not parse is answered with `Error` and the connection goes on; a
//! framing error is answered with `Error` code 11 (best effort) and the connection closes.
//! When the connection ends the client leaves the registry: its cards are reset and handed
//! to the next waiter, and its queued takes are dropped.

use std::sync::Arc;

use chipcard_ipc::message::{ErrorResponse, ToClient};
use chipcard_ipc::{ClientId, Envelope, EnvelopeCodec, ErrorCode, IdCounter, IdOrder};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::outbox::{Outbound, Outbox};
use crate::server::Shared;

type Conn = Framed<UnixStream, EnvelopeCodec>;

/// Serves one client until it disconnects, breaks the protocol, or the server stops.
pub async fn serve(shared: Arc<Shared>, stream: UnixStream) {
    let closing = CancellationToken::new();
    let (outbox, rx) = Outbox::new(closing.clone());
    let client = shared.lock().add_client(outbox.clone());
    let span = info_span!("client", client = %client);
    async move {
        debug!("connected");
        let (sink, stream) = Framed::new(stream, EnvelopeCodec::new()).split();
        let writer = tokio::spawn(write_loop(sink, rx, closing.clone()).in_current_span());
        read_loop(&shared, client, stream, &outbox).await;
        let resets = shared.lock().remove_client(client);
        // At shutdown the drivers are stopping: nobody is left to hand the cards to.
        let resets = if shared.shutdown.is_cancelled() {
            Vec::new()
        } else {
            resets
        };
        for target in resets {
            tokio::spawn(
                crate::dispatch::reset_and_hand_on(shared.clone(), target).in_current_span(),
            );
        }
        closing.cancel();
        drop(outbox);
        let _ = writer.await;
        debug!("disconnected");
    }
    .instrument(span)
    .await
}

async fn read_loop(
    shared: &Arc<Shared>,
    client: ClientId,
    mut stream: SplitStream<Conn>,
    outbox: &Outbox,
) {
    let mut order = IdOrder::new();
    loop {
        let item = tokio::select! {
            _ = outbox.closing().cancelled() => return,
            _ = shared.shutdown.cancelled() => return,
            item = stream.next() => item,
        };
        let env = match item {
            None => return,
            Some(Err(e)) => {
                warn!(error = %e, "framing error; closing the connection");
                outbox.queue(None, protocol_error(e.to_string()));
                return;
            }
            Some(Ok(Err(e))) => {
                info!(error = %e, "bad message");
                outbox.queue(None, ErrorResponse::new(e.code(), e.to_string()).into());
                continue;
            }
            Some(Ok(Ok(env))) => env,
        };
        if let Err(e) = order.check(env.id) {
            info!(error = %e, "message id out of order");
            outbox.queue(Some(env.id), protocol_error(e.to_string()));
            continue;
        }
        let Some(reply) = outbox.reserve(env.id).await else {
            return;
        };
        crate::dispatch::handle(shared, client, env, reply);
    }
}

fn protocol_error(text: String) -> ToClient {
    ErrorResponse::new(ErrorCode::Protocol, text).into()
}

async fn write_loop(
    mut sink: SplitSink<Conn, Envelope>,
    mut rx: mpsc::Receiver<Outbound>,
    closing: CancellationToken,
) {
    let mut ids = IdCounter::new();
    loop {
        let next = tokio::select! {
            biased;
            next = rx.recv() => next,
            _ = closing.cancelled() => rx.try_recv().ok(),
        };
        let Some(out) = next else { break };
        let env = Envelope::new(ids.next_id(), out.refid, &out.msg);
        if let Err(e) = sink.send(env).await {
            debug!(error = %e, "cannot write to client");
            closing.cancel();
            return;
        }
    }
    let _ = sink.close().await;
}
