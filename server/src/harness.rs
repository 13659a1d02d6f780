//! The client-facing path without a socket, for fuzzing and robustness tests: bytes are
//! framed and decoded with the client connection's codec ([`MessageCodec`] of
//! [`FromClient`]), checked for id order, and handed to [`crate::dispatch::handle_request`]
//! with a registry that has no drivers; every answer is encoded as the connection's writer
//! encodes it. Nothing may panic and every request must be answered.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chipcard_ipc::message::FromClient;
use chipcard_ipc::{Addressed, IdCounter, IdOrder, MessageCodec};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use crate::cardtypes::CardTypeRegistry;
use crate::outbox::Outbox;
use crate::registry::CardRegistry;
use crate::server::{Settings, Shared};

/// Feeds `data` (as the bytes a client sent, split at `split`) through framing, decoding and
/// dispatch; returns how many messages the client was sent (each encoded into a frame).
/// Must run inside a tokio runtime with time enabled.
pub async fn dispatch_bytes(data: &[u8], split: usize) -> usize {
    let settings = Settings {
        driver_dir: std::path::PathBuf::from("/nonexistent"),
        driver_start_timeout: Duration::from_millis(100),
        ping_interval: Duration::ZERO,
        ping_timeout: Duration::from_millis(100),
        command_timeout: Duration::from_millis(100),
        restart_backoff: Duration::from_millis(100),
        restart_backoff_max: Duration::from_millis(100),
        restart_max_failures: 1,
        max_requests_per_client: 4,
        client_idle_timeout: Duration::from_millis(100),
    };
    let shared = Arc::new(Shared::new(
        settings,
        CardRegistry::new(CardTypeRegistry::embedded()),
    ));
    let (outbox, mut rx) = Outbox::new(CancellationToken::new());
    let client = shared.lock().add_client(outbox.clone(), None);
    let mut codec = MessageCodec::<FromClient>::new();
    let mut order = IdOrder::new();
    let mut buf = BytesMut::new();
    let mut encoder = MessageCodec::<FromClient>::new();
    let mut ids = IdCounter::new();
    let mut out = BytesMut::new();
    let mut sent = 0;
    // As the connection's writer: numbered, encoded into the frame buffer.
    let mut write = |out_msg: crate::outbox::Outbound| {
        let message = Addressed {
            id: ids.next_id(),
            refid: out_msg.refid,
            message: &*out_msg.msg,
        };
        let encoded = encoder.encode(message, &mut out).is_ok();
        out.clear();
        encoded
    };
    let split = split.min(data.len());
    'pieces: for piece in [&data[..split], &data[split..]] {
        buf.extend_from_slice(piece);
        loop {
            let request = match codec.decode(&mut buf) {
                Ok(Some(Ok(request))) => request,
                Ok(Some(Err(_))) => continue,
                Ok(None) => break,
                Err(_) => break 'pieces,
            };
            if order.check(request.id).is_err() {
                continue;
            }
            let Some(reply) = outbox
                .reserve(request.id, None, Duration::from_millis(50))
                .await
            else {
                break 'pieces;
            };
            crate::dispatch::handle_request(&shared, client, request, reply);
            while let Ok(msg) = rx.try_recv() {
                sent += usize::from(write(msg));
            }
        }
    }
    // Requests that wait (TakeCard) end by their timeouts or with the client.
    let _ = shared.lock().remove_client(client);
    shared.shutdown.cancel();
    while let Ok(msg) = rx.try_recv() {
        sent += usize::from(write(msg));
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use chipcard_ipc::message::{ClientReady, ListReaders, TakeCard};
    use chipcard_ipc::{CardId, Envelope, EnvelopeCodec};

    fn frames(messages: &[Envelope]) -> Vec<u8> {
        let mut codec = EnvelopeCodec::new();
        let mut buf = BytesMut::new();
        for m in messages {
            codec.encode(m.clone(), &mut buf).expect("encode");
        }
        buf.to_vec()
    }

    #[tokio::test]
    async fn requests_are_answered() {
        let hello = ClientReady {
            application: "x".into(),
            chipcard_version: chipcard_ipc::PROTOCOL_VERSION.into(),
            system: "Linux".into(),
            gwen_version: None,
        };
        let data = frames(&[
            Envelope::new(1, None, &hello),
            Envelope::new(2, None, &ListReaders {}),
            Envelope::new(
                3,
                None,
                &TakeCard {
                    card_id: CardId(7),
                    timeout: Some(10),
                },
            ),
        ]);
        assert_eq!(dispatch_bytes(&data, 5).await, 3);
    }

    #[tokio::test]
    async fn garbage_never_panics() {
        let hello = frames(&[Envelope::new(
            1,
            None,
            &ClientReady {
                application: "x".into(),
                chipcard_version: "5".into(),
                system: "L".into(),
                gwen_version: None,
            },
        )]);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let mut data = hello.clone();
            // Mutate a copy of a valid frame, then append a frame with random body bytes.
            for _ in 0..(next() % 8) {
                let i = (next() as usize) % data.len();
                data[i] = next() as u8;
            }
            let body: Vec<u8> = (0..(next() % 200)).map(|_| next() as u8).collect();
            data.extend_from_slice(
                format!(
                    "POST /chipcard HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            data.extend_from_slice(&body);
            let split = (next() as usize) % (data.len() + 1);
            dispatch_bytes(&data, split).await;
        }
    }
}
