//! Card sessions end to end: chipcardd, the emulated driver process and clients over real
//! Unix sockets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chipcard_ipc::message::{
    CardAvailable, CardCheck, CardReset, CommandCard, GetDriverVar, ListReaders, SetNotify,
    StartWait, StopWait, TakeCard, ToClient,
};
use chipcard_ipc::ErrorCode;
use chipcard_tests::configs::{DDV0_ATR, EMUL_TWO_READERS, TEST_ATR};
use chipcard_tests::requests::{status_word, SELECT_MF};
use chipcard_tests::{RawClient, Server};

const VERIFY_1234: &[u8] = &[0x00, 0x20, 0x00, 0x01, 0x04, 0x31, 0x32, 0x33, 0x34];
const VERIFY_STATUS: &[u8] = &[0x00, 0x20, 0x00, 0x01];

#[tokio::test]
async fn take_command_release() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::ready(&server.socket).await;
    let readers = client.list_readers().await.readers;
    assert_eq!(readers.len(), 2);
    let r0 = readers
        .iter()
        .find(|r| r.reader_name == "Emul Reader 0")
        .expect("reader 0 listed");
    assert_eq!(r0.reader_flags, vec!["KEYPAD".to_string()]);
    assert_eq!(r0.driver_type, "emul");
    assert_eq!(r0.cards.len(), 1);
    assert!(!r0.cards[0].taken);
    let card = r0.cards[0].card_id;

    assert_eq!(client.take(card, Some(1000)).await, None);
    assert!(client
        .list_readers()
        .await
        .readers
        .iter()
        .any(|r| r.cards.iter().any(|c| c.taken)));
    assert_eq!(
        status_word(&client.apdu(card, SELECT_MF).await.expect("apdu")),
        0x9000
    );
    assert_eq!(client.release(card).await, None);
    // After release the card is no longer ours.
    assert_eq!(client.apdu(card, SELECT_MF).await, Err(ErrorCode::NotOwner));
    assert_eq!(client.release(card).await, Some(ErrorCode::NotOwner));
}

#[tokio::test]
async fn two_clients_race_for_one_card() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut a = RawClient::ready(&server.socket).await;
    let mut b = RawClient::ready(&server.socket).await;
    let card = a.card_in("Emul Reader 0").await.expect("card present");
    assert_eq!(a.take(card, Some(1000)).await, None);

    let started = Instant::now();
    assert_eq!(b.take(card, Some(300)).await, Some(ErrorCode::Busy));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "B waited its timeout: {waited:?}"
    );
    assert_eq!(b.apdu(card, SELECT_MF).await, Err(ErrorCode::NotOwner));

    // B queues with a long timeout; A's release hands the card over.
    let id = b
        .send(&TakeCard {
            card_id: card,
            timeout: Some(10_000),
        })
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.release(card).await, None);
    match b.response_to(id).await {
        ToClient::TakeCardResponse(r) => assert_eq!(r.outcome.error, None, "{r:?}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        status_word(&b.apdu(card, SELECT_MF).await.expect("apdu")),
        0x9000
    );
    assert_eq!(a.apdu(card, SELECT_MF).await, Err(ErrorCode::NotOwner));
}

#[tokio::test]
async fn release_resets_a_verified_pin() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut a = RawClient::ready(&server.socket).await;
    let mut b = RawClient::ready(&server.socket).await;
    let card = a.card_in("Emul Reader 0").await.expect("card present");

    assert_eq!(a.take(card, Some(1000)).await, None);
    assert_eq!(
        status_word(&a.apdu(card, VERIFY_STATUS).await.expect("apdu")) & 0xFFF0,
        0x63C0
    );
    assert_eq!(
        status_word(&a.apdu(card, VERIFY_1234).await.expect("apdu")),
        0x9000
    );
    assert_eq!(
        status_word(&a.apdu(card, VERIFY_STATUS).await.expect("apdu")),
        0x9000
    );
    assert_eq!(a.release(card).await, None);

    assert_eq!(b.take(card, Some(1000)).await, None);
    let status = status_word(&b.apdu(card, VERIFY_STATUS).await.expect("apdu"));
    assert_eq!(
        status & 0xFFF0,
        0x63C0,
        "PIN state did not pass to the next client"
    );
}

#[tokio::test]
async fn disconnect_of_the_taker_resets_and_frees_the_card() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut b = RawClient::ready(&server.socket).await;
    let card = b.card_in("Emul Reader 0").await.expect("card present");
    {
        let mut a = RawClient::ready(&server.socket).await;
        assert_eq!(a.take(card, Some(1000)).await, None);
        assert_eq!(
            status_word(&a.apdu(card, VERIFY_1234).await.expect("apdu")),
            0x9000
        );
    } // a disconnects holding the card
    assert_eq!(b.take(card, Some(5000)).await, None);
    let status = status_word(&b.apdu(card, VERIFY_STATUS).await.expect("apdu"));
    assert_eq!(
        status & 0xFFF0,
        0x63C0,
        "PIN state did not survive the disconnect"
    );
}

#[tokio::test]
async fn check_reset_and_driver_vars() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::ready(&server.socket).await;
    let card = client.card_in("Emul Reader 0").await.expect("card present");
    assert_eq!(client.take(card, Some(1000)).await, None);

    match client.request(&CardCheck { card_id: card }).await {
        ToClient::CardCheckResponse(r) => assert_eq!(r.outcome.error, None),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        status_word(&client.apdu(card, VERIFY_1234).await.expect("apdu")),
        0x9000
    );
    match client.request(&CardReset { card_id: card }).await {
        ToClient::CardResetResponse(r) => {
            assert_eq!(r.outcome.error, None, "{r:?}");
            assert_eq!(
                r.atr.as_deref().map(hex_upper),
                Some(TEST_ATR.to_string()),
                "reset returns the ATR"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let status = status_word(&client.apdu(card, VERIFY_STATUS).await.expect("apdu"));
    assert_eq!(status & 0xFFF0, 0x63C0, "reset cleared the PIN state");

    match client
        .request(&GetDriverVar {
            card_id: card,
            var_name: "VENDOR".into(),
        })
        .await
    {
        ToClient::GetDriverVarResponse(r) => assert_eq!(r.var_value, "chipcard tests"),
        other => panic!("unexpected {other:?}"),
    }
    match client
        .request(&GetDriverVar {
            card_id: card,
            var_name: "noSuchVar".into(),
        })
        .await
    {
        ToClient::ErrorResponse(e) => assert_eq!(e.error_code(), ErrorCode::NotFound),
        other => panic!("unexpected {other:?}"),
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

async fn next_card_available(client: &mut RawClient) -> CardAvailable {
    loop {
        let (env, msg) = client.next_message().await;
        assert!(env.refid.is_none(), "unexpected response {msg:?}");
        if let ToClient::CardAvailable(c) = msg {
            return c;
        }
    }
}

#[tokio::test]
async fn start_wait_pushes_present_and_inserted_cards_honouring_flags() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut any = RawClient::ready(&server.socket).await;
    let mut keypad = RawClient::ready(&server.socket).await;

    match any.request(&StartWait::default()).await {
        ToClient::StartWaitResponse(r) => assert_eq!(r.outcome.error, None),
        other => panic!("unexpected {other:?}"),
    }
    let present = next_card_available(&mut any).await;
    assert_eq!(present.reader_name, "Emul Reader 0");
    assert_eq!(hex_upper(&present.atr), TEST_ATR);

    // Only readers with a keypad: flags=KEYPAD within mask=KEYPAD.
    let wait = StartWait {
        flags: vec!["KEYPAD".into()],
        mask: vec!["KEYPAD".into()],
    };
    assert!(matches!(
        keypad.request(&wait).await,
        ToClient::StartWaitResponse(_)
    ));
    let present = next_card_available(&mut keypad).await;
    assert_eq!(present.reader_name, "Emul Reader 0");

    // A card into reader 1 (no keypad) reaches `any` only.
    assert_eq!(
        server.control(&format!("insert Emul Reader 1 0 {DDV0_ATR}")),
        "ok"
    );
    let inserted = next_card_available(&mut any).await;
    assert_eq!(inserted.reader_name, "Emul Reader 1");
    assert!(
        inserted.card_types.iter().any(|t| t == "ddv0"),
        "{:?}",
        inserted.card_types
    );
    assert!(
        inserted.card_types.iter().any(|t| t == "ProcessorCard"),
        "{:?}",
        inserted.card_types
    );
    assert_eq!(
        inserted.card_type,
        chipcard_ipc::message::CardType::Processor
    );

    // The keypad client got nothing for it: its next message is the answer to this request.
    match keypad.request(&StopWait {}).await {
        ToClient::StopWaitResponse(r) => assert_eq!(r.outcome.error, None),
        other => panic!("keypad client got {other:?}"),
    }

    // After StopWait no more pushes: remove and re-insert, then a request's answer comes first.
    assert!(matches!(
        any.request(&StopWait {}).await,
        ToClient::StopWaitResponse(_)
    ));
    assert_eq!(server.control("remove Emul Reader 1 0"), "ok");
    assert_eq!(
        server.control(&format!("insert Emul Reader 1 0 {TEST_ATR}")),
        "ok"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = any.send(&ListReaders {}).await;
    let (env, msg) = any.next_message().await;
    assert_eq!(env.refid, Some(id), "no push after StopWait, got {msg:?}");
}

#[tokio::test]
async fn notifications_for_card_events() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut watcher = RawClient::ready(&server.socket).await;
    match watcher
        .request(&SetNotify {
            flags: vec!["card:*".into()],
        })
        .await
    {
        ToClient::SetNotifyResponse(r) => assert_eq!(r.outcome.error, None),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        server.control(&format!("insert Emul Reader 1 0 {TEST_ATR}")),
        "ok"
    );
    assert_eq!(server.control("remove Emul Reader 1 0"), "ok");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (env, msg) = watcher.next_message().await;
        assert!(env.refid.is_none());
        if let ToClient::Notification(n) = msg {
            assert_eq!(n.ntype, "card");
            seen.push(n.ncode);
        }
    }
    assert_eq!(seen, vec!["inserted".to_string(), "removed".to_string()]);

    // A client without SetNotify gets none.
    let mut quiet = RawClient::ready(&server.socket).await;
    assert_eq!(
        server.control(&format!("insert Emul Reader 1 0 {TEST_ATR}")),
        "ok"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = quiet.send(&ListReaders {}).await;
    let (env, _) = quiet.next_message().await;
    assert_eq!(env.refid, Some(id));
}

#[tokio::test]
async fn bad_notify_pattern_is_rejected() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::ready(&server.socket).await;
    match client
        .request(&SetNotify {
            flags: vec!["no-colon".into()],
        })
        .await
    {
        ToClient::SetNotifyResponse(r) => {
            assert_eq!(r.outcome.error, Some(ErrorCode::InvalidArgument))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_by_refid() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::ready(&server.socket).await;
    let card = client.card_in("Emul Reader 0").await.expect("card present");
    assert_eq!(client.take(card, Some(1000)).await, None);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            client
                .send(&CommandCard {
                    card_id: card,
                    data: Bytes::from_static(SELECT_MF),
                    target: None,
                })
                .await,
        );
        ids.push(client.send(&ListReaders {}).await);
    }
    let mut answered = Vec::new();
    while answered.len() < ids.len() {
        let (env, msg) = client.next_message().await;
        let refid = env.refid.expect("only responses expected");
        match msg {
            ToClient::CommandCardResponse(r) => {
                assert_eq!(r.outcome.error, None);
                assert_eq!(r.data.as_deref(), Some(&[0x90, 0x00][..]));
            }
            ToClient::ListReadersResponse(_) => {}
            other => panic!("unexpected {other:?}"),
        }
        answered.push(refid);
    }
    answered.sort_unstable();
    assert_eq!(answered, ids);
}

#[tokio::test]
async fn removed_card_ids_are_never_reused_and_answer_code_7() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::ready(&server.socket).await;
    assert_eq!(
        server.control(&format!("insert Emul Reader 1 0 {TEST_ATR}")),
        "ok"
    );
    let first = client.wait_for_card("Emul Reader 1").await;
    assert_eq!(client.take(first, Some(1000)).await, None);

    assert_eq!(server.control("remove Emul Reader 1 0"), "ok");
    wait_for_no_card(&mut client, "Emul Reader 1").await;
    assert_eq!(
        client.apdu(first, SELECT_MF).await,
        Err(ErrorCode::CardRemoved)
    );
    match client.request(&CardCheck { card_id: first }).await {
        ToClient::CardCheckResponse(r) => assert_eq!(r.outcome.error, Some(ErrorCode::CardRemoved)),
        other => panic!("unexpected {other:?}"),
    }

    assert_eq!(
        server.control(&format!("insert Emul Reader 1 0 {TEST_ATR}")),
        "ok"
    );
    let second = client.wait_for_card("Emul Reader 1").await;
    assert_ne!(first, second, "a new card gets a new id");
    assert_eq!(
        client.apdu(first, SELECT_MF).await,
        Err(ErrorCode::CardRemoved)
    );
}

async fn wait_for_no_card(client: &mut RawClient, reader: &str) {
    let deadline = Instant::now() + chipcard_tests::TIMEOUT;
    while client.card_in(reader).await.is_some() {
        assert!(Instant::now() < deadline, "card stayed in {reader}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn control_socket_errors_are_reported() {
    let server = Server::start(EMUL_TWO_READERS);
    assert!(server
        .control("remove Emul Reader 1 0")
        .starts_with("error:"));
    assert!(server
        .control(&format!("insert Emul Reader 0 0 {TEST_ATR}"))
        .starts_with("error:"));
    assert!(server
        .control("insert No Such Reader 0 3B00")
        .starts_with("error:"));
    assert!(server.control("dance").starts_with("error:"));
}
