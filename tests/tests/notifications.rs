//! Every notification chipcardd sends, end to end: a client subscribes with `SetNotify`, the
//! test makes the event happen (through the emulated driver's control socket, by killing a
//! driver, by a driver that cannot start, by clients coming and going), and the notification
//! arrives with its type, code and the data fields docs/protocol.md promises.
//!
//! `service:up`/`service:down` are covered in services.rs.

use chipcard_ipc::message::ReaderStatus;
use chipcard_ipc::{CardId, ErrorCode, Group};
use chipcard_tests::configs::{EMUL_TWO_READERS, TEST_ATR};
use chipcard_tests::procs::{driver_pid, signal};
use chipcard_tests::{RawClient, Server};

/// [`EMUL_TWO_READERS`] with quick driver restarts.
fn quick_restarts() -> String {
    EMUL_TWO_READERS.replace(
        "socket=\"{socket}\"",
        "socket=\"{socket}\"\n  restartBackoff=\"100\"\n  restartBackoffMax=\"400\"",
    )
}

/// [`EMUL_TWO_READERS`] plus a driver `broken` whose configuration it refuses, restarted
/// quickly and never given up.
fn with_a_broken_driver() -> String {
    format!(
        "{}\ndriver {{\n  type=\"emul\"\n  name=\"broken\"\n  reader {{\n    slots=\"99\"\n  }}\n}}\n",
        quick_restarts().replace(
            "restartBackoff=\"100\"",
            "restartBackoff=\"100\"\n  restartMaxFailures=\"1000\""
        )
    )
}

/// Fails the test unless each of `names` is a text field of `data`.
fn has_chars(data: &Group, names: &[&str]) {
    for name in names {
        assert!(data.get_char(name).is_ok(), "no {name} in {data:?}");
    }
}

/// Fails the test unless `data` has the driver fields of the emulated driver.
fn is_emul_driver(data: &Group) {
    has_chars(data, &["driverId", "driverType", "driverName"]);
    assert_eq!(data.get_char("driverType").ok(), Some("emul"));
}

/// Fails the test unless `data` has the reader fields for reader `name` of the emulated
/// driver (`readerType` `emul`, `shortDescr` as the driver reports it).
fn is_emul_reader(data: &Group, name: &str) {
    is_emul_driver(data);
    has_chars(
        data,
        &["readerId", "readerType", "readerName", "shortDescr"],
    );
    assert_eq!(data.get_char("readerName").ok(), Some(name), "{data:?}");
    assert_eq!(data.get_char("readerType").ok(), Some("emul"), "{data:?}");
}

fn named<'a>(name: &'a str) -> impl Fn(&Group) -> bool + 'a {
    move |d| d.get_char("readerName").ok() == Some(name)
}

fn test_atr() -> Vec<u8> {
    (0..TEST_ATR.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&TEST_ATR[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test]
async fn client_up_and_down_name_the_client_and_its_application() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["client:*"]).await;
    let (other, hello) = RawClient::ready_with_response(&server.socket).await;
    let id = hello.client_id.to_string();
    let is_it = |d: &Group| d.get_char("clientId").ok() == Some(id.as_str());
    let up = watcher.notification("client", "up", is_it).await;
    assert_eq!(up.get_char("application").ok(), Some("chipcard-tests"));
    drop(other);
    let down = watcher.notification("client", "down", is_it).await;
    assert_eq!(down.get_char("application").ok(), Some("chipcard-tests"));
}

#[tokio::test]
async fn a_killed_driver_is_down_then_start_and_up_again() {
    let server = Server::start(&quick_restarts());
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["driver:*"]).await;
    let mut lister = RawClient::ready(&server.socket).await;
    let driver = lister
        .reader("Emul Reader 0")
        .await
        .expect("listed")
        .driver_id
        .to_string();
    let pid = driver_pid(server.pid(), &driver).expect("the driver runs");
    signal(pid, "KILL");
    let is_it = |d: &Group| d.get_char("driverId").ok() == Some(driver.as_str());
    let down = watcher.notification("driver", "down", is_it).await;
    is_emul_driver(&down);
    assert_eq!(down.get_char("driverName").ok(), Some("emul"));
    assert!(down.get_char("info").is_ok(), "down says why: {down:?}");
    is_emul_driver(&watcher.notification("driver", "start", is_it).await);
    is_emul_driver(&watcher.notification("driver", "up", is_it).await);
}

#[tokio::test]
async fn a_driver_that_cannot_start_is_an_error_with_the_reason() {
    let server = Server::start(&with_a_broken_driver());
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["driver:start", "driver:error"]).await;
    let broken = |d: &Group| d.get_char("driverName").ok() == Some("broken");
    // It is restarted after 100 to 400 ms, failing each time.
    let start = watcher.notification("driver", "start", broken).await;
    is_emul_driver(&start);
    let error = watcher.notification("driver", "error", broken).await;
    is_emul_driver(&error);
    assert_eq!(error.get_char("driverId"), start.get_char("driverId"));
    let info = error.get_char("info").expect("error says why");
    assert!(!info.is_empty());
    // The good driver is untouched.
    let mut lister = RawClient::ready(&server.socket).await;
    assert_eq!(
        lister.reader_names().await,
        vec!["Emul Reader 0", "Emul Reader 1"]
    );
}

#[tokio::test]
async fn readers_go_down_with_their_driver_and_come_up_with_its_restart() {
    let server = Server::start(&quick_restarts());
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["reader:down", "reader:up"]).await;
    let mut lister = RawClient::ready(&server.socket).await;
    let before = lister.reader("Emul Reader 0").await.expect("listed");
    let pid = driver_pid(server.pid(), &before.driver_id.to_string()).expect("driver runs");
    signal(pid, "KILL");
    let down = watcher
        .notification("reader", "down", named("Emul Reader 0"))
        .await;
    is_emul_reader(&down, "Emul Reader 0");
    assert_eq!(
        down.get_chars("readerFlags").expect("flags"),
        vec!["KEYPAD"]
    );
    assert!(down.get_char("info").is_ok(), "down says why: {down:?}");
    let up = watcher
        .notification("reader", "up", named("Emul Reader 0"))
        .await;
    is_emul_reader(&up, "Emul Reader 0");
    // Same name, same id.
    assert_eq!(up.get_char("readerId"), down.get_char("readerId"));
    assert_eq!(
        up.get_char("readerId").ok(),
        Some(before.reader_id.to_string().as_str())
    );
}

#[tokio::test]
async fn an_added_reader_is_announced_and_listed() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["reader:add"]).await;
    assert_eq!(server.control("addreader Hot Plug Reader 2"), "ok");
    let add = watcher
        .notification("reader", "add", named("Hot Plug Reader"))
        .await;
    is_emul_reader(&add, "Hot Plug Reader");
    let mut lister = RawClient::ready(&server.socket).await;
    let listed = lister.reader("Hot Plug Reader").await.expect("listed");
    assert_eq!(
        add.get_char("readerId").ok(),
        Some(listed.reader_id.to_string().as_str())
    );
    assert_eq!(listed.slots, 2);
    assert_eq!(listed.status, ReaderStatus::Up);
    assert!(listed.cards.is_empty());
    // Its slots take cards.
    assert_eq!(
        server.control(&format!("insert Hot Plug Reader 1 {TEST_ATR}")),
        "ok"
    );
    lister.wait_for_card("Hot Plug Reader").await;
    assert_eq!(
        server.control("addreader Hot Plug Reader 1"),
        "error: a reader named 'Hot Plug Reader' exists"
    );
}

/// A server on [`EMUL_TWO_READERS`], a watcher subscribed to `patterns`, another client,
/// and the id of the card configured in "Emul Reader 0".
async fn watching_reader_0(patterns: &[&str]) -> (Server, RawClient, RawClient, CardId) {
    let server = Server::start(EMUL_TWO_READERS);
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(patterns).await;
    let mut lister = RawClient::ready(&server.socket).await;
    let card = lister
        .card_in("Emul Reader 0")
        .await
        .expect("configured card");
    (server, watcher, lister, card)
}

/// Waits for `card:removed` about `card`; returns its data.
async fn card_removed(watcher: &mut RawClient, card: CardId) -> Group {
    let card = card.to_string();
    watcher
        .notification("card", "removed", |d| {
            d.get_char("cardId").ok() == Some(card.as_str())
        })
        .await
}

#[tokio::test]
async fn a_deleted_reader_is_announced_its_cards_removed_and_it_is_unlisted() {
    let (server, mut watcher, mut lister, card) =
        watching_reader_0(&["reader:del", "card:removed"]).await;
    let id = lister
        .reader("Emul Reader 0")
        .await
        .expect("listed")
        .reader_id
        .to_string();
    assert_eq!(server.control("delreader Emul Reader 0"), "ok");
    let removed = card_removed(&mut watcher, card).await;
    assert_eq!(removed.get_char("info").ok(), Some("reader removed"));
    let del = watcher
        .notification("reader", "del", named("Emul Reader 0"))
        .await;
    is_emul_reader(&del, "Emul Reader 0");
    assert_eq!(del.get_char("readerId").ok(), Some(id.as_str()));
    assert_eq!(lister.reader_names().await, vec!["Emul Reader 1"]);
    assert_eq!(
        lister.apdu(card, &[0x00, 0xA4, 0x00, 0x0C]).await,
        Err(ErrorCode::CardRemoved)
    );
    assert_eq!(
        server.control("delreader Emul Reader 0"),
        "error: no reader named 'Emul Reader 0'"
    );
}

#[tokio::test]
async fn a_reader_error_is_announced_with_its_text_and_an_insert_brings_it_back() {
    let (server, mut watcher, mut lister, card) =
        watching_reader_0(&["reader:error", "card:*"]).await;
    assert_eq!(
        server.control("readererror Emul Reader 0 | USB bus error: -71"),
        "ok"
    );
    card_removed(&mut watcher, card).await;
    let error = watcher
        .notification("reader", "error", named("Emul Reader 0"))
        .await;
    is_emul_reader(&error, "Emul Reader 0");
    assert_eq!(error.get_char("info").ok(), Some("USB bus error: -71"));
    let listed = lister.reader("Emul Reader 0").await.expect("still listed");
    assert_eq!(listed.status, ReaderStatus::Error);
    assert!(listed.cards.is_empty());
    // The next card brings it back up.
    assert_eq!(
        server.control(&format!("insert Emul Reader 0 0 {TEST_ATR}")),
        "ok"
    );
    watcher
        .notification("card", "inserted", named("Emul Reader 0"))
        .await;
    let listed = lister.reader("Emul Reader 0").await.expect("listed");
    assert_eq!(listed.status, ReaderStatus::Up);
}

#[tokio::test]
async fn card_inserted_and_removed_carry_the_card_and_reader_fields() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["card:inserted", "card:removed"]).await;
    assert_eq!(
        server.control(&format!("insert Emul Reader 1 0 {TEST_ATR}")),
        "ok"
    );
    let inserted = watcher
        .notification("card", "inserted", named("Emul Reader 1"))
        .await;
    is_emul_reader(&inserted, "Emul Reader 1");
    has_chars(&inserted, &["cardId", "cardType"]);
    assert_eq!(inserted.get_bin("atr").expect("atr").to_vec(), test_atr());
    assert_eq!(inserted.get_int("slot").ok(), Some(0));
    assert!(inserted.get_chars("cardTypes").is_ok(), "{inserted:?}");
    assert_eq!(server.control("remove Emul Reader 1 0"), "ok");
    let removed = watcher
        .notification("card", "removed", named("Emul Reader 1"))
        .await;
    assert_eq!(removed.get_char("cardId"), inserted.get_char("cardId"));
    assert_eq!(removed.get_char("info").ok(), Some("removed"));
    assert_eq!(removed.get_int("slot").ok(), Some(0));
}
