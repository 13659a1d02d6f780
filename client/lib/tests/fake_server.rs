//! The client against a fake server written here, over a real Unix socket.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use chipcard_client::ipc::message::{
    CardCheckResponse, ClientReadyResponse, CommandCardResponse, ErrorResponse, FromClient,
    GetDriverVarResponse, ListReadersResponse, ReleaseCardResponse, StartWaitResponse,
    StopWaitResponse, TakeCardResponse,
};
use chipcard_client::ipc::{Envelope, EnvelopeCodec, Group, IdCounter, Outcome, Outgoing};
use chipcard_client::{
    CardAvailable, CardId, CardType, Client, ClientId, ConnectOptions, Error, ErrorCode,
    Notification, StatusWord,
};
use futures::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::Framed;

/// The server's end of one connection.
struct Peer {
    framed: Framed<UnixStream, EnvelopeCodec>,
    ids: IdCounter,
}

impl Peer {
    async fn recv(&mut self) -> (u32, FromClient) {
        let env = self
            .framed
            .next()
            .await
            .expect("a message")
            .expect("a frame")
            .expect("an envelope");
        let msg = FromClient::decode(&env.cmd, &env.data).expect("a known request");
        (env.id, msg)
    }

    async fn reply(&mut self, refid: u32, msg: &impl Outgoing) {
        let env = Envelope::new(self.ids.next_id(), Some(refid), msg);
        self.framed.send(env).await.expect("sent");
    }

    async fn push(&mut self, msg: &impl Outgoing) {
        let env = Envelope::new(self.ids.next_id(), None, msg);
        self.framed.send(env).await.expect("sent");
    }

    /// Reads `ClientReady` and answers it.
    async fn handshake(&mut self) {
        let (id, msg) = self.recv().await;
        match msg {
            FromClient::ClientReady(r) => assert_eq!(r.application, "test"),
            other => panic!("expected ClientReady, got {other:?}"),
        }
        self.reply(
            id,
            &ClientReadyResponse {
                chipcard_version: "1".into(),
                system: "linux".into(),
                client_id: ClientId(7),
            },
        )
        .await;
    }
}

struct Fake {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("chipcardd.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        Fake {
            _dir: dir,
            path,
            listener,
        }
    }

    fn options(&self) -> ConnectOptions {
        ConnectOptions::new("test")
            .socket(&self.path)
            .request_timeout(Duration::from_secs(5))
    }

    async fn accept(&self) -> Peer {
        let (stream, _) = self.listener.accept().await.expect("accept");
        let mut peer = Peer {
            framed: Framed::new(stream, EnvelopeCodec::new()),
            ids: IdCounter::new(),
        };
        peer.handshake().await;
        peer
    }
}

/// Connects a client to the fake and returns both ends.
async fn connected() -> (Fake, Client, Peer) {
    let fake = Fake::new();
    let (client, peer) = tokio::join!(Client::connect(fake.options()), fake.accept());
    let client = client.expect("connected");
    assert_eq!(client.client_id(), ClientId(7));
    (fake, client, peer)
}

fn card_available(n: u32) -> CardAvailable {
    CardAvailable {
        card_id: CardId(n),
        card_type: CardType::Processor,
        card_types: vec!["processorcard".into()],
        atr: Bytes::from_static(&[0x3B, 0x00]),
        reader_name: "emul 0".into(),
        driver_type: "emul".into(),
        ..Default::default()
    }
}

async fn take(client: &Client, peer: &mut Peer, card: u32) -> chipcard_client::CardGuard {
    let (guard, ()) = tokio::join!(
        client.take_card(CardId(card), Duration::from_secs(1)),
        async {
            let (id, msg) = peer.recv().await;
            assert!(
                matches!(msg, FromClient::TakeCard(ref t) if t.card_id == CardId(card) && t.timeout == Some(1000)),
                "{msg:?}"
            );
            peer.reply(
                id,
                &TakeCardResponse {
                    outcome: Outcome::ok("card taken"),
                    card_id: CardId(card),
                },
            )
            .await;
        }
    );
    guard.expect("taken")
}

#[tokio::test]
async fn pipelined_requests_answered_out_of_order_reach_their_callers() {
    let (_fake, client, mut peer) = connected().await;
    let server = async {
        let mut requests = Vec::new();
        for _ in 0..3 {
            requests.push(peer.recv().await);
        }
        // Answer in reverse order; each answer names the card it was asked about.
        for (id, msg) in requests.into_iter().rev() {
            let FromClient::GetDriverVar(q) = msg else {
                panic!("expected GetDriverVar, got {msg:?}")
            };
            peer.reply(
                id,
                &GetDriverVarResponse {
                    var_name: q.var_name,
                    var_value: format!("value of {}", q.card_id),
                },
            )
            .await;
        }
    };
    let (a, b, c, ()) = tokio::join!(
        client.driver_var(CardId(1), "x"),
        client.driver_var(CardId(2), "x"),
        client.driver_var(CardId(3), "x"),
        server
    );
    assert_eq!(a.expect("a"), "value of 0x00000001");
    assert_eq!(b.expect("b"), "value of 0x00000002");
    assert_eq!(c.expect("c"), "value of 0x00000003");
}

#[tokio::test]
async fn both_error_shapes_become_the_same_error() {
    let (_fake, client, mut peer) = connected().await;
    let server = async {
        let (id, _) = peer.recv().await;
        peer.reply(
            id,
            &TakeCardResponse {
                outcome: Outcome::failed(ErrorCode::Busy, "taken by another client"),
                card_id: CardId(5),
            },
        )
        .await;
        let (id, _) = peer.recv().await;
        peer.reply(
            id,
            &ErrorResponse::new(ErrorCode::Busy, "taken by another client"),
        )
        .await;
    };
    let (first, second, ()) = tokio::join!(
        client.take_card(CardId(5), Duration::from_millis(100)),
        client.take_card(CardId(5), Duration::from_millis(100)),
        server
    );
    let first = first.expect_err("busy");
    let second = second.expect_err("busy");
    for e in [&first, &second] {
        assert!(
            matches!(e, Error::Server { request: "TakeCard", code: ErrorCode::Busy, text } if text == "taken by another client"),
            "{e:?}"
        );
    }
    assert_eq!(first.to_string(), second.to_string());
    assert_eq!(
        first.to_string(),
        "TakeCard failed: busy (10): taken by another client"
    );
}

#[tokio::test]
async fn int_coded_failures_and_removed_cards() {
    let (_fake, client, mut peer) = connected().await;
    let guard = take(&client, &mut peer, 9).await;
    let server = async {
        let (id, msg) = peer.recv().await;
        assert!(matches!(msg, FromClient::CommandCard(_)));
        peer.reply(
            id,
            &CommandCardResponse {
                outcome: Outcome::failed(ErrorCode::CardRemoved, "card removed"),
                data: None,
            },
        )
        .await;
        let (id, msg) = peer.recv().await;
        assert!(matches!(msg, FromClient::CardCheck(_)));
        peer.reply(
            id,
            &CardCheckResponse {
                outcome: Outcome::failed(ErrorCode::CardRemoved, "gone"),
            },
        )
        .await;
    };
    let (sent, ()) = tokio::join!(
        async {
            let sent = guard.transmit(&[0, 0xA4, 0, 0x0C]).await;
            (sent, guard.check().await)
        },
        server
    );
    let (sent, present) = sent;
    assert!(sent.expect_err("removed").is_server(ErrorCode::CardRemoved));
    assert!(!present.expect("an answer"));
}

#[tokio::test]
async fn transmit_returns_data_and_status_word_and_drop_releases() {
    let (_fake, client, mut peer) = connected().await;
    let guard = take(&client, &mut peer, 3).await;
    let server = async {
        let (id, msg) = peer.recv().await;
        let FromClient::CommandCard(c) = msg else {
            panic!("expected CommandCard, got {msg:?}")
        };
        assert_eq!(&c.data[..], &[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00]);
        peer.reply(
            id,
            &CommandCardResponse {
                outcome: Outcome::ok("ok"),
                data: Some(Bytes::from_static(&[0x6F, 0x01, 0x6A, 0x82])),
            },
        )
        .await;
    };
    let (response, ()) = tokio::join!(
        guard.transmit(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00]),
        server
    );
    let response = response.expect("a response");
    assert_eq!(response.data(), &[0x6F, 0x01]);
    assert_eq!(response.status(), StatusWord(0x6A82));
    assert!(!response.is_success());

    drop(guard);
    let (id, msg) = peer.recv().await;
    assert!(
        matches!(msg, FromClient::ReleaseCard(ref r) if r.card_id == CardId(3)),
        "{msg:?}"
    );
    // The answer to the forgotten release is ignored; the connection goes on.
    peer.reply(id, &ReleaseCardResponse::default()).await;
    let (list, ()) = tokio::join!(client.readers(), async {
        let (id, _) = peer.recv().await;
        peer.reply(id, &ListReadersResponse::default()).await;
    });
    assert!(list.expect("readers").is_empty());
}

#[tokio::test]
async fn pushes_reach_the_streams() {
    let (_fake, client, mut peer) = connected().await;
    peer.push(&card_available(1)).await;
    let mut data = Group::new("data");
    data.set_char("CardId", "0x00000002");
    peer.push(&Notification {
        client_id: ClientId(7),
        ntype: "card".into(),
        ncode: "inserted".into(),
        data,
    })
    .await;
    peer.push(&card_available(2)).await;

    let mut cards = client.available_cards();
    let mut notes = client.notifications();
    assert_eq!(cards.next().await.map(|c| c.card_id), Some(CardId(1)));
    assert_eq!(cards.next().await.map(|c| c.card_id), Some(CardId(2)));
    let note = notes.next().await.expect("a notification");
    assert_eq!(
        (note.ntype.as_str(), note.ncode.as_str()),
        ("card", "inserted")
    );
    assert_eq!(note.data.get_char("CardId").ok(), Some("0x00000002"));

    // The streams end when the connection does.
    drop(peer);
    assert!(cards.next().await.is_none());
    assert!(notes.next().await.is_none());
}

#[tokio::test]
async fn wait_for_card_starts_and_stops_waiting() {
    let (_fake, client, mut peer) = connected().await;
    // A stale push from before is not taken for a new card.
    peer.push(&card_available(1)).await;
    // Once the answer is in, the push before it is queued.
    let (list, ()) = tokio::join!(client.readers(), async {
        let (id, _) = peer.recv().await;
        peer.reply(id, &ListReadersResponse::default()).await;
    });
    assert!(list.is_ok());
    let server = async {
        let (id, msg) = peer.recv().await;
        assert!(matches!(msg, FromClient::StartWait(_)), "{msg:?}");
        peer.reply(id, &StartWaitResponse::default()).await;
        peer.push(&card_available(4)).await;
        let (id, msg) = peer.recv().await;
        assert!(matches!(msg, FromClient::StopWait(_)), "{msg:?}");
        peer.reply(id, &StopWaitResponse::default()).await;
    };
    let (card, ()) = tokio::join!(client.wait_for_card(Duration::from_secs(5)), server);
    let card = card.expect("a card");
    assert_eq!(card.card_id, CardId(4));
    assert_eq!(card.reader_name, "emul 0");
}

#[tokio::test]
async fn full_push_queues_drop_pushes_but_responses_flow() {
    let fake = Fake::new();
    let (client, peer) = tokio::join!(
        Client::connect(fake.options().push_capacity(2)),
        fake.accept()
    );
    let client = client.expect("connected");
    let mut peer = peer;
    for n in 0..5 {
        peer.push(&card_available(n)).await;
    }
    let (list, ()) = tokio::join!(client.readers(), async {
        let (id, _) = peer.recv().await;
        peer.reply(id, &ListReadersResponse::default()).await;
    });
    assert!(list.is_ok());
    assert_eq!(client.dropped_pushes(), 3);
    assert_eq!(
        client.next_available_card().await.map(|c| c.card_id),
        Some(CardId(0))
    );
    assert_eq!(
        client.next_available_card().await.map(|c| c.card_id),
        Some(CardId(1))
    );
}

#[tokio::test]
async fn server_closing_fails_pending_requests_clearly() {
    let (_fake, client, mut peer) = connected().await;
    let server = async move {
        let _ = peer.recv().await;
        let _ = peer.recv().await;
        drop(peer);
    };
    let (a, b, ()) = tokio::join!(client.readers(), client.stop_wait(), server);
    for e in [a.expect_err("closed"), b.expect_err("closed")] {
        assert!(matches!(e, Error::Closed { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "connection to chipcardd closed: the server closed the connection"
        );
    }
    assert!(client.is_closed());
    let e = client.readers().await.expect_err("still closed");
    assert!(matches!(e, Error::Closed { .. }), "{e:?}");
}

#[tokio::test]
async fn a_card_granted_after_the_caller_gave_up_is_given_back() {
    let fake = Fake::new();
    let (client, peer) = tokio::join!(
        Client::connect(fake.options().request_timeout(Duration::from_millis(100))),
        fake.accept()
    );
    let client = client.expect("connected");
    let mut peer = peer;
    let server = async {
        let (id, _) = peer.recv().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        peer.reply(
            id,
            &TakeCardResponse {
                outcome: Outcome::ok("card taken"),
                card_id: CardId(6),
            },
        )
        .await;
        peer.recv().await
    };
    let (taken, (_, msg)) = tokio::join!(client.take_card(CardId(6), Duration::ZERO), server);
    let e = taken.expect_err("timed out");
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(
        matches!(msg, FromClient::ReleaseCard(ref r) if r.card_id == CardId(6)),
        "{msg:?}"
    );
}

#[tokio::test]
async fn a_missing_server_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nothing.sock");
    let e = Client::connect(ConnectOptions::new("test").socket(&path))
        .await
        .expect_err("no server");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot connect to chipcardd at {}: ",
            path.display()
        )),
        "{text}"
    );
    assert!(text.ends_with("; is chipcardd running?"), "{text}");
}

#[tokio::test]
async fn request_timeout_is_reported() {
    let fake = Fake::new();
    let (client, peer) = tokio::join!(
        Client::connect(fake.options().request_timeout(Duration::from_millis(100))),
        fake.accept()
    );
    let client = client.expect("connected");
    let e = client.readers().await.expect_err("no answer");
    assert_eq!(
        e.to_string(),
        "timed out after 100 ms waiting for the answer to ListReaders"
    );
    drop(peer);
}

#[test]
fn blocking_client_takes_transmits_and_releases() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let fake = rt.block_on(async { Fake::new() });
    let options = fake.options();
    let server = rt.spawn(async move {
        let mut peer = fake.accept().await;
        let (id, _) = peer.recv().await;
        peer.reply(
            id,
            &TakeCardResponse {
                outcome: Outcome::ok("ok"),
                card_id: CardId(8),
            },
        )
        .await;
        let (id, _) = peer.recv().await;
        peer.reply(
            id,
            &CommandCardResponse {
                outcome: Outcome::ok("ok"),
                data: Some(Bytes::from_static(&[0x90, 0x00])),
            },
        )
        .await;
        let (id, msg) = peer.recv().await;
        assert!(matches!(msg, FromClient::ReleaseCard(_)), "{msg:?}");
        peer.reply(id, &ReleaseCardResponse::default()).await;
    });
    let client = chipcard_client::blocking::Client::connect(options).expect("connected");
    let guard = client
        .take_card(CardId(8), Duration::from_secs(1))
        .expect("taken");
    let response = guard.transmit(&[0x00, 0xA4, 0x00, 0x0C]).expect("response");
    assert!(response.is_success());
    guard.release().expect("released");
    rt.block_on(server).expect("server done");
}

#[test]
fn handles_can_move_between_threads() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Client>();
    check::<chipcard_client::CardGuard>();
    check::<chipcard_client::blocking::Client>();
    check::<chipcard_client::blocking::CardGuard>();
    check::<Error>();
}
