//! The PC/SC path end to end: clients → chipcardd → chipcard-driver-pcsc → a real, isolated
//! pcscd → vsmartcard's vpcd reader → chipcard's virtual card.

use std::time::{Duration, Instant};

use chipcard_emulcard::{CardConfig, Pin};
use chipcard_ipc::message::{ReleaseCard, SetNotify, StartWait, ToClient};
use chipcard_ipc::{CardId, ErrorCode};
use chipcard_testlab::pcscd::{Pcscd, READER_0, READER_1};
use chipcard_tests::requests::{status_word, SELECT_MF};
use chipcard_tests::{RawClient, Server, TIMEOUT};

const VERIFY_1234: &[u8] = &[0x00, 0x20, 0x00, 0x01, 0x04, 0x31, 0x32, 0x33, 0x34];
const VERIFY_STATUS: &[u8] = &[0x00, 0x20, 0x00, 0x01];

fn config(pcscd: &Pcscd) -> String {
    format!(
        r#"
server {{
  socket="{{socket}}"
  pingInterval="1000"
}}
driver {{
  type="pcsc"
  name="pcsc"
  pcscdSocket="{}"
  vars {{
    kind="real pcscd"
  }}
}}
"#,
        pcscd.socket.display()
    )
}

fn card_with_pin() -> CardConfig {
    CardConfig::default().with_pin(Pin::from_text("1234").expect("valid PIN"), 3)
}

/// Sends an APDU; the status word of the response, or the error.
async fn apdu(client: &mut RawClient, card: CardId, apdu: &[u8]) -> Result<u16, ErrorCode> {
    client.apdu(card, apdu).await.map(|r| status_word(&r))
}

#[tokio::test]
async fn readers_cards_apdus_and_pin_reset_through_pcscd() {
    let pcscd = Pcscd::start();
    let server = Server::start(&config(&pcscd));
    let mut a = RawClient::ready(&server.socket).await;
    let mut b = RawClient::ready(&server.socket).await;

    let names = a.reader_names().await;
    assert!(names.iter().any(|n| n == READER_0), "{names:?}");
    assert!(names.iter().any(|n| n == READER_1), "{names:?}");

    // Insert → CardAvailable at a waiting client.
    assert!(matches!(
        a.request(&StartWait::default()).await,
        ToClient::StartWaitResponse(_)
    ));
    let inserted_at = Instant::now();
    let card = pcscd.insert(card_with_pin());
    let available = loop {
        if let (env, ToClient::CardAvailable(c)) = a.next_message().await {
            assert!(env.refid.is_none());
            break c;
        }
    };
    eprintln!(
        "card insert → CardAvailable through pcscd: {:?}",
        inserted_at.elapsed()
    );
    assert_eq!(available.reader_name, READER_0);
    assert_eq!(available.driver_type, "pcsc");
    assert_eq!(available.atr.to_vec(), chipcard_emulcard::default_atr());
    let id = available.card_id;

    // A's session verifies the PIN; B must not inherit it.
    assert_eq!(a.take(id, Some(5000)).await, None);
    assert_eq!(apdu(&mut a, id, SELECT_MF).await, Ok(0x9000));
    assert_eq!(apdu(&mut a, id, VERIFY_1234).await, Ok(0x9000));
    assert_eq!(apdu(&mut a, id, VERIFY_STATUS).await, Ok(0x9000));
    match a.request(&ReleaseCard { card_id: id }).await {
        ToClient::ReleaseCardResponse(r) => assert_eq!(r.outcome.error, None, "{r:?}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(b.take(id, Some(5000)).await, None);
    let status = apdu(&mut b, id, VERIFY_STATUS).await.expect("status query");
    assert_eq!(
        status & 0xFFF0,
        0x63C0,
        "the release reset the card through PC/SC"
    );

    // Removal: B's next command answers 7.
    card.remove().expect("card removed from vpcd");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match apdu(&mut b, id, SELECT_MF).await {
            Err(ErrorCode::CardRemoved) => break,
            Ok(_) | Err(_) => {
                assert!(Instant::now() < deadline, "removal not noticed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn chipcardd_survives_pcscd_restart() {
    let mut pcscd = Pcscd::start();
    let server = Server::start(&config(&pcscd));
    let mut watcher = RawClient::ready(&server.socket).await;
    assert!(matches!(
        watcher
            .request(&SetNotify {
                flags: vec!["card:*".into()]
            })
            .await,
        ToClient::SetNotifyResponse(_)
    ));
    let _card = pcscd.insert(card_with_pin());
    let first = watcher.wait_for_card(READER_0).await;

    pcscd.kill();
    // The card goes away with pcscd.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, msg) = watcher.next_message().await;
        if let ToClient::Notification(n) = msg {
            if n.ncode == "removed" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no card:removed after pcscd died"
        );
    }
    pcscd.launch();
    let _card = pcscd.insert(card_with_pin());
    let second = watcher.wait_for_card(READER_0).await;
    assert_ne!(first, second, "a card seen again gets a new id");
    assert_eq!(watcher.take(second, Some(5000)).await, None);
    assert_eq!(apdu(&mut watcher, second, SELECT_MF).await, Ok(0x9000));
    assert_eq!(
        apdu(&mut watcher, first, SELECT_MF).await,
        Err(ErrorCode::CardRemoved)
    );
}
