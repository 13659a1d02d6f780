//! chipcardd as a process with a `ctapi` driver, spoken to over its Unix socket with the
//! raw envelope codec: over chipcard's emulated CT-API library (working, and with an APDU
//! that hangs, after which chipcardd restarts the driver), and over Debian's real
//! libctapimkt1 whose `CT_init` blocks.
//!
//! chipcardd must be built in the same target directory (`cargo build --workspace --bins`,
//! which scripts/test runs); without it these tests fail saying so.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chipcard_ipc::message::*;
use chipcard_ipc::Group;
use chipcard_testlab::chipcardd::Chipcardd;
use chipcard_testlab::raw_client::RawClient;
use chipcard_testlab::requests::SELECT_MF;
use common::{emul_library, mkt_library, MKT_LIBRARY};

/// The directory holding chipcard-driver-ctapi, and chipcardd beside it.
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_chipcard-driver-ctapi"))
        .parent()
        .expect("a directory")
        .to_path_buf();
    assert!(
        dir.join("chipcardd").is_file(),
        "chipcardd is not built in {}: run `cargo build --workspace --bins` first (scripts/test does)",
        dir.display()
    );
    dir
}

/// Starts chipcardd with one ctapi driver; `driver_body` is the inside of its group.
async fn start_chipcardd(driver_body: &str) -> Chipcardd {
    start_chipcardd_with("", driver_body).await
}

/// As [`start_chipcardd`], with `server_keys` (lines) added to the server group.
async fn start_chipcardd_with(server_keys: &str, driver_body: &str) -> Chipcardd {
    let bins = bin_dir();
    Chipcardd::start(&bins.join("chipcardd"), |socket, _| {
        format!(
            "server {{\n  socket=\"{}\"\n  socketMode=\"0600\"\n  driverDir=\"{}\"\n  pingInterval=\"500\"\n  pingTimeout=\"2000\"\n{server_keys}}}\ndriver {{\n  type=\"ctapi\"\n  name=\"ctapi\"\n{driver_body}\n}}\n",
            socket.display(),
            bins.display(),
        )
    })
    .await
}

/// A card file for the emulated library holding `text`: the directory (keep it for the
/// test's length), the card file and a path for the call log beside it.
fn card_file(text: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cards = dir.path().join("cards");
    std::fs::write(&cards, text).expect("card file");
    let calls = dir.path().join("calls");
    (dir, cards, calls)
}

/// The inside of a driver group over the emulated library with `cards`, polling every
/// 50 ms, then `rest` (more keys, the `reader { }` groups). With `calls` the library logs
/// every call there.
fn emul_driver(cards: &Path, calls: Option<&Path>, rest: &str) -> String {
    let calls = calls
        .map(|c| format!("    CHIPCARD_CTAPI_EMUL_CALLS=\"{}\"\n", c.display()))
        .unwrap_or_default();
    format!(
        "  libraryFile=\"{}\"\n  pollInterval=\"50\"\n  libraryEnv {{\n    CHIPCARD_CTAPI_EMUL=\"{}\"\n{calls}  }}\n{rest}",
        emul_library().display(),
        cards.display()
    )
}

/// The `info` text of a notification's data (empty without one).
fn info(data: &Group) -> String {
    data.get_char("info").unwrap_or_default().to_owned()
}

#[tokio::test]
async fn take_command_reset_release_through_chipcardd() {
    let (cards_dir, cards, _) = card_file("1 3B8180018080 1234\n");
    let daemon = start_chipcardd(&emul_driver(
        &cards,
        None,
        "  reader {\n    name=\"CT-API Emul\"\n    ctn=\"1\"\n    port=\"1\"\n    flags=\"KEYPAD\"\n  }",
    ))
    .await;
    let started = Instant::now();
    let mut client = RawClient::ready(&daemon.socket).await;
    let list = client
        .readers_until("a card", |l| {
            l.readers.first().is_some_and(|r| !r.cards.is_empty())
        })
        .await;
    eprintln!("chipcardd start to card listed: {:?}", started.elapsed());
    let reader = &list.readers[0];
    assert_eq!(reader.reader_name, "CT-API Emul");
    assert_eq!(reader.driver_type, "ctapi");
    assert_eq!(reader.status, ReaderStatus::Up);
    assert_eq!(reader.reader_flags, vec!["KEYPAD"]);
    let card = reader.cards[0].card_id;
    assert_eq!(
        &reader.cards[0].atr[..],
        &[0x3B, 0x81, 0x80, 0x01, 0x80, 0x80]
    );

    let taken = client.take(card, None).await;
    assert!(taken.is_none(), "{taken:?}");
    let r = client.command_card(card, SELECT_MF).await;
    assert!(r.outcome.is_ok(), "{r:?}");
    assert_eq!(r.data.as_deref(), Some(&[0x90, 0x00][..]));
    let r = client
        .command_card(
            card,
            &[0x00, 0x20, 0x00, 0x80, 0x04, b'1', b'2', b'3', b'4'],
        )
        .await;
    assert_eq!(r.data.as_deref(), Some(&[0x90, 0x00][..]));
    let reset: CardResetResponse = client.call(&CardReset { card_id: card }).await;
    assert!(reset.outcome.is_ok(), "{reset:?}");
    assert_eq!(
        reset.atr.as_deref(),
        Some(&[0x3B, 0x81, 0x80, 0x01, 0x80, 0x80][..])
    );
    let r = client.command_card(card, &[0x00, 0x20, 0x00, 0x80]).await;
    assert_eq!(
        r.data.as_deref(),
        Some(&[0x63, 0xC3][..]),
        "reset forgot the PIN"
    );
    let released: ReleaseCardResponse = client.call(&ReleaseCard { card_id: card }).await;
    assert!(released.outcome.is_ok(), "{released:?}");

    // Taking the card out is noticed by polling; chipcardd drops it.
    std::fs::write(&cards, "").expect("card file");
    client
        .readers_until("the card gone", |l| {
            l.readers.first().is_some_and(|r| r.cards.is_empty())
        })
        .await;
    let took = daemon.stop(Duration::from_secs(10)).await;
    eprintln!("SIGTERM to chipcardd exit: {took:?}");
    drop(cards_dir);
}

#[tokio::test]
async fn a_hanging_ctapi_library_does_not_hold_up_chipcardd() {
    mkt_library();
    let daemon = start_chipcardd(&format!(
        "  libraryFile=\"{MKT_LIBRARY}\"\n  callTimeout=\"1500\"\n  reader {{\n    name=\"MKT\"\n    ctn=\"1\"\n    port=\"1\"\n  }}"
    ))
    .await;
    let started = Instant::now();
    let mut watcher = RawClient::ready(&daemon.socket).await;
    watcher.subscribe(&["reader:*", "driver:*"]).await;
    let mut client = RawClient::ready(&daemon.socket).await;
    let t = Instant::now();
    let list: ListReadersResponse = client.call(&ListReaders {}).await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "ListReaders took {:?}",
        t.elapsed()
    );
    eprintln!("first ListReaders: {} readers", list.readers.len());
    // As root CT_init blocks (the driver's callTimeout ends the wait); as a user who may not
    // open /dev/ttyS0 it fails at once. The reader is in error either way.
    let list = client
        .readers_until("the reader in error", |l| {
            l.readers
                .first()
                .is_some_and(|r| r.status == ReaderStatus::Error)
        })
        .await;
    let error_after = started.elapsed();
    assert_eq!(list.readers[0].reader_name, "MKT");
    assert!(
        error_after < Duration::from_secs(6),
        "error after {error_after:?}"
    );
    // The reader:error notification says which call failed and why: as root the CT_init that
    // did not return within callTimeout, else the CT_init that failed.
    let error = info(
        &watcher
            .notification("reader", "error", |d| {
                d.get_char("readerName").ok() == Some("MKT")
            })
            .await,
    );
    eprintln!("reader:error info: {error}");
    assert!(error.starts_with("CT_init(ctn=1, pn=1) "), "{error}");
    let hung = error.contains("did not return within 1500 ms (callTimeout)");
    assert!(hung || error.contains(" failed: "), "{error}");
    // chipcardd keeps answering while CT_init stays blocked in the driver.
    for _ in 0..3 {
        let t = Instant::now();
        let _: ListReadersResponse = client.call(&ListReaders {}).await;
        assert!(t.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if hung {
        // The hung call ended the driver; chipcardd restarted it (restartBackoff 1 s), and the
        // new driver's CT_init hangs as well.
        watcher.notification("driver", "up", |_| true).await;
        let again = info(
            &watcher
                .notification("reader", "error", |d| {
                    d.get_char("readerName").ok() == Some("MKT")
                })
                .await,
        );
        assert_eq!(again, error);
        eprintln!("restarted and in error again after {:?}", started.elapsed());
    }
    let took = daemon.stop(Duration::from_secs(10)).await;
    eprintln!("reader error after {error_after:?}; SIGTERM to chipcardd exit: {took:?}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
}

/// An APDU that never returns: the client gets a failed answer, the reader goes to error with
/// a text naming the call, chipcardd restarts the driver (a new process), and the reader
/// comes back up with its card and serves APDUs again.
#[tokio::test]
async fn a_hanging_apdu_restarts_the_driver_and_the_reader_comes_back() {
    let (cards_dir, cards, _) = card_file("1 3B8180018080\nhang-apdu 1\n");
    let daemon = start_chipcardd_with(
        "  restartBackoff=\"300\"\n",
        &emul_driver(
            &cards,
            None,
            "  callTimeout=\"500\"\n  reader {\n    name=\"CT-API Emul\"\n    ctn=\"1\"\n    port=\"1\"\n  }",
        ),
    )
    .await;
    let mut watcher = RawClient::ready(&daemon.socket).await;
    watcher.subscribe(&["reader:*", "driver:*"]).await;
    let mut client = RawClient::ready(&daemon.socket).await;
    let list = client
        .readers_until("a card", |l| {
            l.readers.first().is_some_and(|r| !r.cards.is_empty())
        })
        .await;
    let card = list.readers[0].cards[0].card_id;
    let first_driver = daemon.child_pids();
    assert_eq!(first_driver.len(), 1, "{first_driver:?}");

    assert!(client.take(card, None).await.is_none());
    let t = Instant::now();
    let r = client.command_card(card, SELECT_MF).await;
    let failed_after = t.elapsed();
    assert!(!r.outcome.is_ok(), "{r:?}");
    // The terminal answers again from now on (the card file is read at each call).
    std::fs::write(&cards, "1 3B8180018080\n").expect("card file");

    let error = info(
        &watcher
            .notification("reader", "error", |d| {
                d.get_char("readerName").ok() == Some("CT-API Emul")
            })
            .await,
    );
    assert_eq!(
        error,
        "CT_data(APDU, ctn=1, dad=0) did not return within 500 ms (callTimeout); the driver restarts"
    );
    let restarted = Instant::now();
    watcher.notification("driver", "up", |_| true).await;
    watcher
        .notification("reader", "up", |d| {
            d.get_char("readerName").ok() == Some("CT-API Emul")
        })
        .await;
    let up_after = restarted.elapsed();
    let second_driver = daemon.child_pids();
    assert_eq!(second_driver.len(), 1, "{second_driver:?}");
    assert_ne!(first_driver, second_driver, "a new driver process");

    let list = client
        .readers_until("the card back", |l| {
            l.readers
                .first()
                .is_some_and(|r| r.status == ReaderStatus::Up && !r.cards.is_empty())
        })
        .await;
    let card = list.readers[0].cards[0].card_id;
    assert!(client.take(card, None).await.is_none());
    let r = client.command_card(card, SELECT_MF).await;
    assert!(r.outcome.is_ok(), "{r:?}");
    assert_eq!(r.data.as_deref(), Some(&[0x90, 0x00][..]));
    let took = daemon.stop(Duration::from_secs(10)).await;
    eprintln!(
        "hung APDU failed after {failed_after:?}; driver and reader up {up_after:?} after the \
         reader error; SIGTERM to chipcardd exit: {took:?}"
    );
    drop(cards_dir);
}

/// A terminal with two slots: the card in slot 1 is found by GET STATUS, activated with
/// REQUEST ICC for unit 2 and reached at DAD 2 (ctapi.h's ICC2), through chipcardd.
#[tokio::test]
async fn an_apdu_to_the_second_slot_through_chipcardd() {
    let (_dir, cards, calls) = card_file("1 3B8180018080\n1:2 3B0102 1234\n");
    let daemon = start_chipcardd(&emul_driver(
        &cards,
        Some(&calls),
        "  reader {\n    name=\"Two slots\"\n    ctn=\"1\"\n    port=\"1\"\n    slots=\"2\"\n  }",
    ))
    .await;
    let mut client = RawClient::ready(&daemon.socket).await;
    let list = client
        .readers_until("two cards", |l| {
            l.readers.first().is_some_and(|r| r.cards.len() == 2)
        })
        .await;
    let reader = &list.readers[0];
    assert_eq!(reader.slots, 2);
    let second = reader
        .cards
        .iter()
        .find(|c| c.slot == 1)
        .expect("a card in slot 1");
    assert_eq!(&second.atr[..], &[0x3B, 0x01, 0x02]);
    let card = second.card_id;

    assert!(client.take(card, None).await.is_none());
    let r = client
        .command_card(
            card,
            &[0x00, 0x20, 0x00, 0x80, 0x04, b'1', b'2', b'3', b'4'],
        )
        .await;
    assert_eq!(r.data.as_deref(), Some(&[0x90, 0x00][..]), "{r:?}");
    let reset: CardResetResponse = client.call(&CardReset { card_id: card }).await;
    assert_eq!(reset.atr.as_deref(), Some(&[0x3B, 0x01, 0x02][..]));
    let took = daemon.stop(Duration::from_secs(10)).await;

    // The library saw the slot's unit (2) in CT-BCS and its DAD (2) for the APDU; stopping
    // ejected both cards.
    let calls = std::fs::read_to_string(&calls).expect("call log");
    for line in [
        "CT_data ctn=1 dad=1 2012020100",
        "CT_data ctn=1 dad=2 002000800431323334",
        "CT_data ctn=1 dad=1 2015020000",
        "CT_data ctn=1 dad=1 2015010000",
    ] {
        assert!(calls.lines().any(|l| l == line), "{line} missing:\n{calls}");
    }
    eprintln!("SIGTERM to chipcardd exit: {took:?}");
}
