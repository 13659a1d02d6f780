//! Starts the built `chipcard-driver-ctapi` the way chipcardd does (a socketpair end as its
//! standard input, `--ipc-fd 0`) and plays the server: against chipcard's own emulated
//! CT-API library (`libchipcard_ctapi_emul.so`, built as this crate's dev-dependency), and
//! against Debian's real `libctapimkt1`, whose `CT_init` blocks with no serial terminal.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chipcard_ipc::message::{CardType, FromDriver, Ping, ResetCard, StopDriver};
use chipcard_ipc::{ErrorCode, Group, ReaderId};
use chipcard_testlab::apdus::{verify, SELECT_MF, VERIFY_STATUS};
use chipcard_testlab::child::{child_command, LinkedChild};
use chipcard_testlab::link::Link;
use common::{emul_library, mkt_library};

/// The built driver, and the test as its chipcardd.
type Server = LinkedChild<FromDriver>;

/// Starts the driver; `cards` is the emulated library's card file (`CHIPCARD_CTAPI_EMUL`).
fn spawn(cards: Option<&Path>) -> Server {
    spawn_recording(cards, None)
}

/// As [`spawn`], the emulated library appending every call to `calls`
/// (`CHIPCARD_CTAPI_EMUL_CALLS`).
fn spawn_recording(cards: Option<&Path>, calls: Option<&Path>) -> Server {
    let mut command = child_command(
        env!("CARGO_BIN_EXE_chipcard-driver-ctapi"),
        "driver-id",
        "debug",
    );
    match cards {
        Some(file) => command.env("CHIPCARD_CTAPI_EMUL", file),
        None => command.env_remove("CHIPCARD_CTAPI_EMUL"),
    };
    match calls {
        Some(file) => command.env("CHIPCARD_CTAPI_EMUL_CALLS", file),
        None => command.env_remove("CHIPCARD_CTAPI_EMUL_CALLS"),
    };
    Server::spawn(command)
}

/// What these tests ask of the driver, on top of the test lab's link.
trait CtapiDriver {
    /// An APDU to `reader`'s slot 0: the response, or the error code.
    async fn try_apdu(&mut self, reader: u32, apdu: &[u8]) -> Result<Vec<u8>, ErrorCode>;
    /// An APDU to `reader`'s slot 0: the response, or the error code and text.
    async fn try_apdu_text(
        &mut self,
        reader: u32,
        apdu: &[u8],
    ) -> Result<Vec<u8>, (ErrorCode, String)>;
    /// A `Ping` round trip.
    async fn ping(&mut self) -> Duration;
}

impl CtapiDriver for Link<FromDriver> {
    async fn try_apdu(&mut self, reader: u32, apdu: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        self.try_apdu_text(reader, apdu)
            .await
            .map_err(|(code, _)| code)
    }

    async fn try_apdu_text(
        &mut self,
        reader: u32,
        apdu: &[u8],
    ) -> Result<Vec<u8>, (ErrorCode, String)> {
        let (outcome, data) = self.card_command(ReaderId(reader), 0, apdu).await;
        match outcome.error {
            None => Ok(data),
            Some(code) => Err((code, outcome.text)),
        }
    }

    async fn ping(&mut self) -> Duration {
        let started = Instant::now();
        let (_, msg) = self.request(&Ping {}).await;
        assert!(matches!(msg, FromDriver::PingResponse(_)), "{msg:?}");
        started.elapsed()
    }
}

const ATR: [u8; 6] = [0x3B, 0x81, 0x80, 0x01, 0x80, 0x80];

/// Starts the driver over the emulated library with the card file `cards` (kept in the
/// returned directory), `pollInterval` 50 ms, `callTimeout` 800 ms and one reader per
/// `(ctn, port)`; returns how long `DriverReady` took, which must be `OK`.
async fn start_emul(
    cards: &str,
    readers: &[(&str, &str)],
) -> (tempfile::TempDir, Server, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cards");
    std::fs::write(&file, cards).expect("card file");
    let mut server = spawn(Some(&file));
    let mut config = Group::new("config")
        .with_char("libraryFile", emul_library().display().to_string())
        .with_char("pollInterval", "50")
        .with_char("callTimeout", "800");
    for (ctn, port) in readers {
        config = config.with_group(
            Group::new("reader")
                .with_char("ctn", *ctn)
                .with_char("port", *port),
        );
    }
    let started = Instant::now();
    let ready = server.start_driver(config).await;
    let ready_after = started.elapsed();
    assert!(ready.outcome.is_ok(), "{:?}", ready.outcome);
    (dir, server, ready_after)
}

#[tokio::test]
async fn the_ctapi_driver_over_the_emulated_library() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cards = dir.path().join("cards");
    std::fs::write(&cards, "1 3B8180018080 1234\n").expect("card file");
    let calls = dir.path().join("calls");
    let mut server = spawn_recording(Some(&cards), Some(&calls));
    let mut reader1 = Group::new("reader")
        .with_char("name", "CT one")
        .with_char("ctn", "1")
        .with_char("port", "1");
    reader1.set_chars("flags", &["keypad"]);
    let config = Group::new("config")
        .with_char("type", "ctapi")
        .with_char("libraryFile", emul_library().display().to_string())
        .with_char("pollInterval", "50")
        .with_char("callTimeout", "2000")
        .with_group(reader1)
        .with_group(
            Group::new("reader")
                .with_char("name", "CT two")
                .with_char("ctn", "7")
                .with_char("port", "2"),
        );
    let started = Instant::now();
    let ready = server.start_driver(config).await;
    assert!(ready.outcome.is_ok(), "{:?}", ready.outcome);
    let readers = &ready.readers.0;
    assert_eq!(readers.len(), 2);
    assert_eq!(
        (readers[0].reader_id, readers[0].name.as_str()),
        (ReaderId(0), "CT one")
    );
    assert_eq!(readers[0].reader_flags, vec!["KEYPAD"]);
    assert_eq!(readers[1].port.as_deref(), Some("2"));

    // The card present at start: CT_init, GET STATUS, REQUEST ICC.
    let FromDriver::CardInserted(inserted) = server.event(Duration::from_secs(5)).await else {
        panic!("CardInserted expected")
    };
    assert_eq!((inserted.reader_id, inserted.slot), (ReaderId(0), 0));
    assert_eq!(&inserted.atr[..], &ATR);
    assert_eq!(inserted.card_type, CardType::Processor);
    eprintln!("start to CardInserted: {:?}", started.elapsed());

    let t = Instant::now();
    assert_eq!(server.try_apdu(0, &SELECT_MF).await, Ok(vec![0x90, 0x00]));
    eprintln!("one APDU through CT_data: {:?}", t.elapsed());
    assert_eq!(
        server.try_apdu(0, &verify(b"0000")).await,
        Ok(vec![0x63, 0xC2])
    );
    assert_eq!(
        server.try_apdu(0, &verify(b"1234")).await,
        Ok(vec![0x90, 0x00])
    );
    assert_eq!(
        server.try_apdu(0, &VERIFY_STATUS).await,
        Ok(vec![0x90, 0x00])
    );

    // ResetCard: EJECT ICC + REQUEST ICC; the PIN is forgotten.
    let (_, msg) = server
        .request(&ResetCard {
            reader_id: ReaderId(0),
            slot: 0,
        })
        .await;
    let FromDriver::ResetCardResponse(reset) = msg else {
        panic!("{msg:?}")
    };
    assert!(reset.outcome.is_ok(), "{:?}", reset.outcome);
    assert_eq!(reset.atr.as_deref(), Some(&ATR[..]));
    assert_eq!(
        server.try_apdu(0, &VERIFY_STATUS).await,
        Ok(vec![0x63, 0xC3])
    );

    // No card in the second terminal yet.
    assert_eq!(
        server.try_apdu(1, &SELECT_MF).await,
        Err(ErrorCode::CardRemoved)
    );
    assert_eq!(
        server.try_apdu(5, &SELECT_MF).await,
        Err(ErrorCode::NotFound)
    );

    // Insert into port 2, take the card out of port 1: found by polling.
    let t = Instant::now();
    std::fs::write(&cards, "1 3B8180018080 1234\n2 3B0102\n").expect("card file");
    let FromDriver::CardInserted(inserted) = server.event(Duration::from_secs(5)).await else {
        panic!("CardInserted expected")
    };
    assert_eq!(
        (inserted.reader_id, &inserted.atr[..]),
        (ReaderId(1), &[0x3B, 0x01, 0x02][..])
    );
    eprintln!("insert noticed after {:?}", t.elapsed());
    assert_eq!(server.try_apdu(1, &SELECT_MF).await, Ok(vec![0x90, 0x00]));
    std::fs::write(&cards, "2 3B0102\n").expect("card file");
    let FromDriver::CardRemoved(removed) = server.event(Duration::from_secs(5)).await else {
        panic!("CardRemoved expected")
    };
    assert_eq!((removed.reader_id, removed.slot), (ReaderId(0), 0));
    assert_eq!(
        server.try_apdu(0, &SELECT_MF).await,
        Err(ErrorCode::CardRemoved)
    );
    server.ping().await;

    server.send(&StopDriver {}).await;
    let t = Instant::now();
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "StopDriver exits 0");
    eprintln!("StopDriver to exit: {:?}", t.elapsed());

    // Stopping ejected the card still in terminal 7 (slot 0: unit 1), then closed it; the
    // empty terminal 1 was only closed.
    let calls = std::fs::read_to_string(&calls).expect("call log");
    let last = |ctn: &str, n: usize| -> Vec<&str> {
        let lines: Vec<&str> = calls
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == ctn))
            .collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    };
    assert_eq!(
        last("ctn=7", 2),
        ["CT_data ctn=7 dad=1 2015010000", "CT_close ctn=7"],
        "{calls}"
    );
    assert_ne!(
        last("ctn=1", 2)[0],
        "CT_data ctn=1 dad=1 2015010000",
        "{calls}"
    );
    assert_eq!(last("ctn=1", 1), ["CT_close ctn=1"], "{calls}");
}

#[tokio::test]
async fn a_missing_library_is_a_start_error() {
    let mut server = spawn(None);
    let ready = server
        .start_driver(
            Group::new("config")
                .with_char("libraryFile", "/nonexistent/libctapi.so")
                .with_group(Group::new("reader")),
        )
        .await;
    assert_eq!(ready.outcome.error, Some(ErrorCode::InvalidArgument));
    assert!(
        ready.outcome.text.contains("/nonexistent/libctapi.so"),
        "{}",
        ready.outcome.text
    );
    assert_eq!(server.wait_exit(Duration::from_secs(5)).code(), Some(1));

    let mut server = spawn(None);
    let ready = server.start_driver(Group::new("config")).await;
    assert!(
        ready.outcome.text.contains("libraryFile"),
        "{}",
        ready.outcome.text
    );
}

/// Debian's libctapimkt1: as root `CT_init` opens /dev/ttyS0 and blocks for more than 30 s
/// with no terminal attached; a user who may not open the port gets `ERR_INVALID` at once.
/// Either way the driver must stay responsive and put only that reader out of service.
#[tokio::test]
async fn a_hanging_ct_init_puts_only_its_reader_out_of_service() {
    let library = mkt_library();
    let mut server = spawn(None);
    let started = Instant::now();
    let ready = server
        .start_driver(
            Group::new("config")
                .with_char("libraryFile", library.display().to_string())
                .with_char("callTimeout", "1500")
                .with_group(
                    Group::new("reader")
                        .with_char("name", "MKT")
                        .with_char("ctn", "1")
                        .with_char("port", "1"),
                ),
        )
        .await;
    let ready_after = started.elapsed();
    assert!(ready.outcome.is_ok(), "{:?}", ready.outcome);
    assert_eq!(ready.readers.0.len(), 1);
    assert!(
        ready_after < Duration::from_secs(1),
        "DriverReady took {ready_after:?}"
    );

    // CT_init is blocked now; the driver still answers Ping at once.
    let ping = server.ping().await;
    assert!(ping < Duration::from_millis(500), "Ping took {ping:?}");

    let FromDriver::ReaderError(error) = server.event(Duration::from_secs(5)).await else {
        panic!("ReaderError expected")
    };
    let error_after = started.elapsed();
    assert_eq!(error.reader_id, ReaderId(0));
    assert!(
        error.text.starts_with("CT_init(ctn=1, pn=1)"),
        "{}",
        error.text
    );
    assert!(
        error.text.contains("did not return within 1500 ms") || error.text.contains("failed: "),
        "{}",
        error.text
    );
    eprintln!("libctapimkt1: {}", error.text);
    assert!(
        error_after < Duration::from_secs(4),
        "ReaderError after {error_after:?}"
    );

    if error.text.contains("did not return") {
        // As root: the hung CT_init ends the driver with a failure, so that chipcardd
        // restarts it with a fresh library.
        assert_eq!(
            error.text,
            "CT_init(ctn=1, pn=1) did not return within 1500 ms (callTimeout); the driver restarts"
        );
        let t = Instant::now();
        let status = server.wait_exit(Duration::from_secs(3));
        assert_eq!(status.code(), Some(1), "a hung call ends the driver with 1");
        eprintln!(
            "DriverReady {ready_after:?}, Ping {ping:?}, ReaderError {error_after:?}, exit {:?} after it",
            t.elapsed()
        );
        return;
    }
    // CT_init failed: requests for the reader fail at once with code 8.
    let t = Instant::now();
    assert_eq!(
        server.try_apdu(0, &SELECT_MF).await,
        Err(ErrorCode::DriverError)
    );
    assert!(t.elapsed() < Duration::from_millis(500));
    server.ping().await;

    server.send(&StopDriver {}).await;
    let t = Instant::now();
    let status = server.wait_exit(Duration::from_secs(7));
    assert_eq!(status.code(), Some(0));
    eprintln!(
        "DriverReady {ready_after:?}, Ping {ping:?}, ReaderError {error_after:?}, exit {:?} after StopDriver",
        t.elapsed()
    );
}

/// The emulated library's faults: a terminal whose `CT_init` never returns beside a
/// working one. The hang is reported, then the driver ends with a failure (chipcardd
/// restarts it).
#[tokio::test]
async fn a_hanging_ct_init_is_reported_and_ends_the_driver() {
    let started = Instant::now();
    let (_dir, mut server, ready_after) =
        start_emul("1 3B8180018080\nhang-init 3\n", &[("1", "1"), ("2", "3")]).await;
    // Neither DriverReady nor a Ping waits for the CT_init that hangs (800 ms): the bounds
    // stay under that, with room for a loaded two-core machine running tests in parallel.
    assert!(
        ready_after < Duration::from_millis(750),
        "DriverReady after {ready_after:?}"
    );
    let ping = server.ping().await;
    assert!(ping < Duration::from_millis(750), "Ping took {ping:?}");

    let mut inserted = Vec::new();
    let mut errors = Vec::new();
    while errors.is_empty() {
        match server.event(Duration::from_secs(5)).await {
            FromDriver::CardInserted(c) => inserted.push(c.reader_id),
            FromDriver::ReaderError(e) => errors.push((e.reader_id, e.text, started.elapsed())),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(inserted, [ReaderId(0)], "the working terminal worked");
    let (reader_id, text, after) = &errors[0];
    assert_eq!(*reader_id, ReaderId(1));
    assert_eq!(
        text,
        "CT_init(ctn=2, pn=3) did not return within 800 ms (callTimeout); the driver restarts"
    );
    assert!(
        *after < Duration::from_millis(2000),
        "ReaderError after {after:?}"
    );
    let t = Instant::now();
    assert_eq!(server.wait_exit(Duration::from_secs(3)).code(), Some(1));
    eprintln!(
        "DriverReady {ready_after:?}, Ping {ping:?}, CT_init ReaderError {after:?}, exit 1 {:?} after it",
        t.elapsed()
    );
}

/// An APDU that never returns: the request fails with code 8 and the call's text, the
/// reader is reported in error, then the driver ends with a failure.
#[tokio::test]
async fn a_hanging_apdu_is_answered_reported_and_ends_the_driver() {
    let (_dir, mut server, _) = start_emul("4 3B0102\nhang-apdu 4\n", &[("3", "4")]).await;
    let FromDriver::CardInserted(c) = server.event(Duration::from_secs(5)).await else {
        panic!("CardInserted expected")
    };
    assert_eq!(c.reader_id, ReaderId(0));

    let t = Instant::now();
    let (code, text) = server
        .try_apdu_text(0, &SELECT_MF)
        .await
        .expect_err("hangs");
    let hung_after = t.elapsed();
    assert_eq!(code, ErrorCode::DriverError);
    assert_eq!(
        text,
        "CT_data(APDU, ctn=3, dad=0) did not return within 800 ms (callTimeout); the driver restarts"
    );
    assert!(hung_after >= Duration::from_millis(800) && hung_after < Duration::from_millis(2000));
    let FromDriver::ReaderError(e) = server.event(Duration::from_secs(5)).await else {
        panic!("ReaderError expected")
    };
    assert_eq!((e.reader_id, e.text.as_str()), (ReaderId(0), text.as_str()));
    assert_eq!(server.wait_exit(Duration::from_secs(3)).code(), Some(1));
    eprintln!("hung APDU answered after {hung_after:?}");
}
