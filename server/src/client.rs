//! One client connection: a reader loop that checks ids and hands each request to
//! [`crate::dispatch`], and a writer task that numbers and sends what the client's
//! [`Outbox`] holds.
//!
//! A body that does not parse is answered with `Error` and the connection goes on; a
//! framing error is answered with `Error` code 11 (best effort) and the connection closes.
//! When the connection ends the client leaves the registry: its service contexts are
//! closed, its cards are reset and handed to the next waiter, and its queued takes are
//! dropped.
//!
//! Limits: at most `maxRequestsPerClient` requests of one client are in progress at once;
//! while that many are, the client's socket is not read (back-pressure, nothing is
//! refused). A client that stops in the middle of a frame for `clientIdleTimeout`, or
//! leaves its full queue of answers unread that long, is disconnected. A connection that
//! has not sent `ClientReady` within `clientReadyTimeout` (default 10 s) is answered `Error`
//! code 12 and closed, so silent connections cannot hold the `maxClients` places. A ready
//! client that is idle between frames is never timed out (libchipcard clients keep their
//! connection open for as long as they run).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chipcard_ipc::message::{ErrorResponse, FromClient, ToClient};
use chipcard_ipc::{Addressed, ClientId, ErrorCode, IdCounter, IdOrder, MessageCodec};
use chipcard_sock::{ReadHalf, WriteHalf};
use futures::{Sink, SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::outbox::{Outbound, Outbox};
use crate::server::Shared;

// chipcard_sock's halves, not tokio's: they do not wake this process each time the client
// reads (see that crate).
type Reader = FramedRead<ReadHalf, Codec>;
type Writer = FramedWrite<WriteHalf, Codec>;
/// Requests are read straight into their typed form, answers written straight from it.
type Codec = MessageCodec<FromClient>;

/// The initial size of a client's read and write buffers. Most messages fit; the buffers
/// grow for larger ones. Small, because every connected client has them, idle or not.
const BUFFER: usize = 512;

/// The writer task stops collecting queued messages into one write at this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

/// How long writing the refusal to a client over `maxClients` may take.
const REFUSE_LIMIT: Duration = Duration::from_secs(1);

/// Answers a connection the server will not serve with `Error` code 1 and closes it.
pub async fn refuse(stream: UnixStream, why: &str) {
    let mut conn = FramedWrite::new(stream, Codec::new());
    let msg = ErrorResponse::new(ErrorCode::Generic, why);
    let refusal = Addressed {
        id: 1,
        refid: None,
        message: &msg,
    };
    let _ = tokio::time::timeout(REFUSE_LIMIT, conn.send(refusal)).await;
}

/// Serves one client until it disconnects, breaks the protocol, or the server stops.
/// `slot` is the client's place under `maxClients`, freed when it leaves; `ready_limit` is
/// how long it may take to send `ClientReady` (zero: no limit).
pub async fn serve(
    shared: Arc<Shared>,
    stream: UnixStream,
    slot: OwnedSemaphorePermit,
    ready_limit: Duration,
) {
    let _slot = slot;
    let closing = CancellationToken::new();
    let (outbox, rx) = Outbox::new(closing.clone());
    let peer = crate::access::Peer::of(&stream);
    let (read_half, write_half) = match chipcard_sock::split_tokio(stream) {
        Ok(halves) => halves,
        Err(e) => {
            warn!(error = %e, "cannot set up a client connection");
            return;
        }
    };
    let client = shared.lock().add_client(outbox.clone(), peer.clone());
    let span = info_span!("client", client = %client);
    async move {
        match &peer {
            Some(cred) => info!(
                uid = cred.uid,
                gid = cred.gid,
                pid = cred.pid.unwrap_or(0),
                "connected"
            ),
            None => info!("connected (peer credentials unknown)"),
        }
        let sink = FramedWrite::with_capacity(write_half, Codec::new(), BUFFER);
        let stream = FramedRead::with_capacity(read_half, Codec::new(), BUFFER);
        let stall = shared.settings.client_idle_timeout;
        let writer = tokio::spawn(write_loop(sink, rx, closing.clone(), stall).in_current_span());
        read_loop(&shared, client, stream, &outbox, ready_limit).await;
        crate::service_requests::client_gone(&shared, client);
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
    mut stream: Reader,
    outbox: &Outbox,
    ready_limit: Duration,
) {
    let mut order = IdOrder::new();
    let stall = shared.settings.client_idle_timeout;
    let requests = Arc::new(Semaphore::new(
        shared.settings.max_requests_per_client.max(1),
    ));
    let mut check = tokio::time::interval((stall / 4).max(Duration::from_millis(10)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A partial frame in the read buffer: its length and since when it has not grown.
    let mut partial: Option<(usize, Instant)> = None;
    // Made once, not per request: each would register a waiter anew.
    let closing = outbox.closing().cancelled();
    let shutdown = shared.shutdown.cancelled();
    // Until `ClientReady` has come (or without a limit), the deadline is not watched.
    let mut ready_watched = !ready_limit.is_zero();
    let ready_deadline = tokio::time::sleep(ready_limit);
    tokio::pin!(closing, shutdown, ready_deadline);
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut closing => return,
            _ = &mut shutdown => return,
            item = stream.next() => item,
            () = &mut ready_deadline, if ready_watched => {
                ready_watched = false;
                if !shared.lock().is_ready(client) {
                    let ms = ready_limit.as_millis() as u64;
                    info!(limit_ms = ms, "no ClientReady in time; closing");
                    outbox.queue(None, ErrorResponse::new(
                        ErrorCode::NotReady,
                        format!("no ClientReady within {ms} ms"),
                    ).into());
                    return;
                }
                continue;
            }
            _ = check.tick() => {
                // `next` is cancel safe: the bytes read so far stay in the buffer.
                let len = stream.read_buffer().len();
                match partial {
                    _ if len == 0 => partial = None,
                    Some((seen, since)) if seen == len => {
                        if since.elapsed() >= stall {
                            warn!(bytes = len, "client stalled in the middle of a frame; closing");
                            outbox.queue(None, protocol_error("incomplete frame timed out".into()));
                            return;
                        }
                    }
                    _ => partial = Some((len, Instant::now())),
                }
                continue;
            }
        };
        partial = None;
        let request = match item {
            None => return,
            Some(Err(chipcard_ipc::Error::Io(e))) if peer_went_away(&e) => {
                debug!(error = %e, "client went away");
                return;
            }
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
            Some(Ok(Ok(request))) => request,
        };
        if let Err(e) = order.check(request.id) {
            info!(error = %e, "message id out of order");
            outbox.queue(Some(request.id), protocol_error(e.to_string()));
            continue;
        }
        // Back-pressure: wait for one of the client's requests to be answered.
        let permit = match requests.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => tokio::select! {
                biased;
                _ = &mut closing => return,
                _ = &mut shutdown => return,
                permit = requests.clone().acquire_owned() => permit.ok(),
            },
        };
        let Some(reply) = outbox.reserve(request.id, permit, stall).await else {
            return;
        };
        crate::dispatch::handle_request(shared, client, request, reply);
    }
}

fn protocol_error(text: String) -> ToClient {
    ErrorResponse::new(ErrorCode::Protocol, text).into()
}

/// Numbers and writes what the outbox holds. Messages queued together are encoded into
/// the buffer one after the other and written with one flush, when the queue is empty.
async fn write_loop(
    mut sink: Writer,
    mut rx: mpsc::Receiver<Outbound>,
    closing: CancellationToken,
    stall: Duration,
) {
    let mut ids = IdCounter::new();
    let closed = closing.cancelled();
    tokio::pin!(closed);
    loop {
        let next = tokio::select! {
            biased;
            next = rx.recv() => next,
            _ = &mut closed => rx.try_recv().ok(),
        };
        let Some(mut out) = next else { break };
        loop {
            let message = Addressed {
                id: ids.next_id(),
                refid: out.refid,
                message: &*out.msg,
            };
            // Only encodes into the buffer; the flush below writes.
            if let Err(e) = Pin::new(&mut sink).start_send(message) {
                debug!(error = %e, "cannot encode a message for the client");
                closing.cancel();
                return;
            }
            if sink.write_buffer().len() >= WRITE_BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(more) => out = more,
                Err(_) => break,
            }
        }
        // A client that does not read for `stall` is given up.
        match tokio::time::timeout(stall, SinkExt::<Addressed<ToClient>>::flush(&mut sink)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "cannot write to client");
                closing.cancel();
                return;
            }
            Err(_) => {
                warn!("client does not read; disconnecting it");
                closing.cancel();
                return;
            }
        }
    }
    let _ = tokio::time::timeout(stall, SinkExt::<Addressed<ToClient>>::close(&mut sink)).await;
}

/// Whether a read error only means the client closed its end abruptly (a normal way to leave,
/// not a fault worth a warning).
fn peer_went_away(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}
