//! `chipcard-driver-pcsc` against a real, isolated pcscd with vpcd readers and chipcard's
//! virtual cards (see tests/common/mod.rs). pcscd and vsmartcard-vpcd must be installed:
//! without them these tests fail and say what to install.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use chipcard_emulcard::{default_files, CardConfig, EmulCard, FileConfig, Pin};
use chipcard_ipc::message::{CardType, FromDriver};
use chipcard_ipc::{ErrorCode, Group, ReaderId};
use chipcard_testlab::apdus::{verify, SELECT_MF, VERIFY_STATUS};
use chipcard_testlab::driver::card_command;
use chipcard_vpcd_card::{VirtualCard, GET_ATR};
use common::{spawn_driver, Driver, Pcscd, CARD_TIMEOUT, READER_0, READER_1};

const R0: ReaderId = ReaderId(0);
const R1: ReaderId = ReaderId(1);

const OK: [u8; 2] = [0x90, 0x00];

/// The default card with PIN 1234 and an EF 5000 of 1000 bytes (for extended APDUs).
fn card_config() -> CardConfig {
    let mut files = default_files();
    files.push(FileConfig::ef(
        0x5000,
        (0..1000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
    ));
    CardConfig::default()
        .with_pin(Pin::from_text("1234").expect("valid PIN"), 3)
        .with_files(files)
}

/// Waits for `CardInserted` in `reader` and returns its ATR and how long it took.
async fn inserted(driver: &mut Driver, reader: ReaderId, since: Instant) -> (Vec<u8>, Duration) {
    match driver.event(CARD_TIMEOUT).await {
        FromDriver::CardInserted(c) => {
            assert_eq!((c.reader_id, c.slot), (reader, 0));
            assert_eq!(c.card_type, CardType::Processor);
            (c.atr.to_vec(), since.elapsed())
        }
        other => panic!("expected CardInserted: {other:?}"),
    }
}

async fn removed(driver: &mut Driver, reader: ReaderId, since: Instant) -> Duration {
    match driver.event(CARD_TIMEOUT).await {
        FromDriver::CardRemoved(c) => {
            assert_eq!((c.reader_id, c.slot), (reader, 0));
            since.elapsed()
        }
        other => panic!("expected CardRemoved: {other:?}"),
    }
}

#[tokio::test]
async fn readers_cards_apdus_reset_and_removal() {
    let pcscd = Pcscd::start();
    let mut driver = spawn_driver();
    let ready = driver.start_driver(pcscd.driver_config()).await;
    assert!(ready.outcome.is_ok(), "{:?}", ready.outcome);
    let readers = &ready.readers.0;
    let names: Vec<&str> = readers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [READER_0, READER_1]);
    assert_eq!(
        readers.iter().map(|r| r.reader_id).collect::<Vec<_>>(),
        [R0, R1]
    );
    assert_eq!(readers[0].slots, Some(1));
    assert_eq!(readers[0].reader_type.as_deref(), Some("pcsc"));
    assert!(
        readers[0].reader_flags.is_empty(),
        "vpcd reports no PC/SC part 10 features"
    );

    // Insert.
    let config = card_config();
    let atr = config.atr.clone();
    let t = Instant::now();
    let card = pcscd.insert(config);
    let (got, took) = inserted(&mut driver, R0, t).await;
    assert_eq!(got, atr);
    eprintln!("CardInserted after {took:?}");

    // APDUs: SELECT, the VERIFY flow.
    assert_eq!(driver.apdu(R0, 0, &SELECT_MF).await, OK);
    assert_eq!(driver.apdu(R0, 0, &VERIFY_STATUS).await, [0x63, 0xC3]);
    assert_eq!(driver.apdu(R0, 0, &verify(b"0000")).await, [0x63, 0xC2]);
    assert_eq!(driver.apdu(R0, 0, &verify(b"1234")).await, OK);
    assert_eq!(driver.apdu(R0, 0, &VERIFY_STATUS).await, OK);

    // Extended APDUs both ways: READ BINARY of 1000 bytes, UPDATE BINARY of 600 bytes.
    assert_eq!(
        driver
            .apdu(R0, 0, &[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x50, 0x00])
            .await,
        OK
    );
    let read = driver
        .apdu(R0, 0, &[0x00, 0xB0, 0x00, 0x00, 0x00, 0x03, 0xE8])
        .await;
    assert_eq!(read.len(), 1002);
    assert_eq!(&read[1000..], OK);
    assert_eq!(read[251], 0);
    let mut update = vec![0x00, 0xD6, 0x00, 0x00, 0x00, 0x02, 0x58];
    update.extend(std::iter::repeat(0xA5).take(600));
    assert_eq!(driver.apdu(R0, 0, &update).await, OK);
    let read = driver
        .apdu(R0, 0, &[0x00, 0xB0, 0x00, 0x00, 0x00, 0x03, 0xE8])
        .await;
    assert!(read[..600].iter().all(|b| *b == 0xA5));

    // Reset: the ATR comes back, the PIN is no longer verified, no card events.
    let (outcome, reset_atr) = driver.reset_card(R0, 0).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(reset_atr, atr);
    assert_eq!(driver.apdu(R0, 0, &VERIFY_STATUS).await, [0x63, 0xC3]);

    // Errors: empty reader 7, unknown reader 3, unknown slot 3.
    let (outcome, _) = driver.card_command(R1, 0, &SELECT_MF).await;
    assert_eq!(outcome.error, Some(ErrorCode::CardRemoved), "{outcome:?}");
    let (outcome, _) = driver.card_command(ReaderId(9), 0, &SELECT_MF).await;
    assert_eq!(outcome.error, Some(ErrorCode::NotFound), "{outcome:?}");
    let (outcome, _) = driver.card_command(R0, 1, &SELECT_MF).await;
    assert_eq!(outcome.error, Some(ErrorCode::NotFound), "{outcome:?}");
    let (outcome, _) = driver.reset_card(R1, 0).await;
    assert_eq!(outcome.error, Some(ErrorCode::CardRemoved), "{outcome:?}");

    // Remove: CardRemoved, then commands answer 7.
    let t = Instant::now();
    let emul = card.remove().expect("the card comes out");
    let took = removed(&mut driver, R0, t).await;
    eprintln!("CardRemoved after {took:?}");
    let (outcome, _) = driver.card_command(R0, 0, &SELECT_MF).await;
    assert_eq!(outcome.error, Some(ErrorCode::CardRemoved), "{outcome:?}");

    // The same card again: a new connection; files kept, PIN state gone.
    let t = Instant::now();
    let card = pcscd.insert_card(emul);
    inserted(&mut driver, R0, t).await;
    assert_eq!(driver.apdu(R0, 0, &VERIFY_STATUS).await, [0x63, 0xC3]);
    assert_eq!(driver.apdu(R0, 0, &verify(b"1234")).await, OK);

    let status = driver.stop().await;
    assert_eq!(status.code(), Some(0));
    // The driver reset the card on its way out.
    let emul = card.remove().expect("the card comes out");
    assert!(!emul.is_verified(), "StopDriver resets the cards");
}

#[tokio::test]
async fn pcscd_restarts_are_survived() {
    let mut pcscd = Pcscd::start();
    let mut driver = spawn_driver();
    let mut config = pcscd.driver_config();
    config.set_chars("readers", &["*00 00"]);
    let ready = driver.start_driver(config).await;
    assert!(ready.outcome.is_ok(), "{:?}", ready.outcome);
    let names: Vec<&str> = ready.readers.0.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [READER_0], "the readers pattern selects one reader");

    let t = Instant::now();
    let card = pcscd.insert(card_config());
    inserted(&mut driver, R0, t).await;
    assert_eq!(driver.apdu(R0, 0, &verify(b"1234")).await, OK);

    // pcscd dies: the card is removed and the reader goes.
    let t = Instant::now();
    pcscd.kill();
    removed(&mut driver, R0, t).await;
    match driver.event(CARD_TIMEOUT).await {
        FromDriver::ReaderDel(d) => assert_eq!(d.reader_id, R0),
        other => panic!("expected ReaderDel: {other:?}"),
    }
    eprintln!("reader gone {:?} after pcscd was killed", t.elapsed());
    let (outcome, _) = driver.card_command(R0, 0, &SELECT_MF).await;
    assert_eq!(outcome.error, Some(ErrorCode::NotFound), "{outcome:?}");
    // vpcd closed the card's connection with pcscd.
    let emul = card.remove().expect("the card's connection ended cleanly");

    // pcscd is back: the reader comes back with its id, then the card.
    let t = Instant::now();
    pcscd.launch();
    match driver.event(Duration::from_secs(6)).await {
        FromDriver::ReaderAdd(a) => {
            assert_eq!((a.reader.reader_id, a.reader.name.as_str()), (R0, READER_0));
        }
        other => panic!("expected ReaderAdd: {other:?}"),
    }
    eprintln!("reader back {:?} after pcscd was restarted", t.elapsed());
    let t = Instant::now();
    let card = pcscd.insert_card(emul);
    inserted(&mut driver, R0, t).await;
    assert_eq!(driver.apdu(R0, 0, &VERIFY_STATUS).await, [0x63, 0xC3]);
    assert_eq!(driver.apdu(R0, 0, &verify(b"1234")).await, OK);
    assert_eq!(driver.apdu(R0, 0, &SELECT_MF).await, OK);

    assert_eq!(driver.stop().await.code(), Some(0));
    drop(card);
}

#[tokio::test]
async fn pcscd_missing_at_start_then_started() {
    let mut pcscd = Pcscd::prepare();
    let mut driver = spawn_driver();
    let ready = driver.start_driver(pcscd.driver_config()).await;
    assert!(ready.outcome.is_ok(), "{:?}", ready.outcome);
    assert!(ready.readers.0.is_empty(), "no pcscd, no readers yet");

    let t = Instant::now();
    pcscd.launch();
    let mut added = Vec::new();
    for _ in 0..2 {
        match driver.event(Duration::from_secs(6)).await {
            FromDriver::ReaderAdd(a) => added.push((a.reader.reader_id, a.reader.name)),
            other => panic!("expected ReaderAdd: {other:?}"),
        }
    }
    assert_eq!(
        added,
        [(R0, READER_0.to_owned()), (R1, READER_1.to_owned())]
    );
    eprintln!("readers added {:?} after pcscd started", t.elapsed());

    let t = Instant::now();
    let _card = pcscd.insert(card_config());
    inserted(&mut driver, R0, t).await;
    assert_eq!(driver.apdu(R0, 0, &SELECT_MF).await, OK);
    assert_eq!(driver.stop().await.code(), Some(0));
}

#[tokio::test]
async fn a_card_present_at_start_is_reported_after_driver_ready() {
    let pcscd = Pcscd::start();
    let config = card_config();
    let atr = config.atr.clone();
    let _card = pcscd.insert(config);
    // Let pcscd see it before the driver starts.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut driver = spawn_driver();
    let ready = driver.start_driver(pcscd.driver_config()).await;
    assert_eq!(ready.readers.0.len(), 2);
    let (got, _) = inserted(&mut driver, R0, Instant::now()).await;
    assert_eq!(got, atr);
    assert_eq!(driver.apdu(R0, 0, &SELECT_MF).await, OK);
    assert_eq!(driver.stop().await.code(), Some(0));
}

#[tokio::test]
async fn a_pcscd_without_readers() {
    let pcscd = Pcscd::start_without_readers();
    let mut driver = spawn_driver();
    let ready = driver.start_driver(pcscd.driver_config()).await;
    assert!(ready.outcome.is_ok(), "{:?}", ready.outcome);
    assert!(ready.readers.0.is_empty());
    let quiet = tokio::time::timeout(Duration::from_millis(1500), driver.recv()).await;
    assert!(quiet.is_err(), "no events: {quiet:?}");
    let (outcome, _) = driver.card_command(R0, 0, &SELECT_MF).await;
    assert_eq!(outcome.error, Some(ErrorCode::NotFound), "{outcome:?}");
    let t = Instant::now();
    assert_eq!(driver.stop().await.code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(1), "stops at once");
}

#[tokio::test]
async fn a_bad_configuration_is_reported() {
    let mut driver = spawn_driver();
    let ready = driver
        .start_driver(Group::new("config").with_char("pollInterval", "soon"))
        .await;
    assert_eq!(ready.outcome.error, Some(ErrorCode::InvalidArgument));
    assert!(
        ready.outcome.text.contains("pollInterval"),
        "{}",
        ready.outcome.text
    );
}

/// The driver, started on `pcscd`.
async fn started(pcscd: &Pcscd) -> Driver {
    let mut driver = spawn_driver();
    let ready = driver.start_driver(pcscd.driver_config()).await;
    assert!(ready.outcome.is_ok(), "{:?}", ready.outcome);
    driver
}

/// How long the slow card takes to answer an APDU.
const SLOW: Duration = Duration::from_secs(2);

/// A vpcd card that answers every APDU with 90 00 after [`SLOW`]; it ends when the reader
/// closes the connection.
fn slow_card(addr: SocketAddr, atr: Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("the slow card connects to vpcd");
    thread::spawn(move || loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut message).is_err() {
            return;
        }
        let answer = match message.as_slice() {
            [GET_ATR] => atr.clone(),
            [_] => continue,
            _ => {
                thread::sleep(SLOW);
                vec![0x90, 0x00]
            }
        };
        let mut out = u16::try_from(answer.len())
            .expect("short")
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(&answer);
        if stream.write_all(&out).is_err() {
            return;
        }
    });
}

#[tokio::test]
async fn a_slow_card_holds_up_no_other_reader() {
    let pcscd = Pcscd::start();
    let mut driver = started(&pcscd).await;
    slow_card(pcscd.card_addr(), CardConfig::default().atr);
    inserted(&mut driver, R0, Instant::now()).await;
    let reader_1 = SocketAddr::from(([127, 0, 0, 1], pcscd.port + 1));
    let _card = VirtualCard::connect_card(
        reader_1,
        EmulCard::new(CardConfig::default()).expect("valid card"),
    )
    .expect("the card connects to vpcd")
    .spawn()
    .expect("the card's thread starts");
    inserted(&mut driver, R1, Instant::now()).await;

    let started = Instant::now();
    let slow = driver.send(&card_command(R0, 0, &SELECT_MF)).await;
    let quick = driver.send(&card_command(R1, 0, &SELECT_MF)).await;
    let (env, msg) = driver.recv().await;
    assert_eq!(env.refid, Some(quick), "reader 1 answers first: {msg:?}");
    let took = started.elapsed();
    assert!(took < SLOW / 2, "reader 1 answered after {took:?}");
    let (env, msg) = driver.recv().await;
    assert_eq!(env.refid, Some(slow), "{msg:?}");
    assert!(started.elapsed() >= SLOW);

    let status = driver.stop().await;
    assert_eq!(status.code(), Some(0));
}
