//! Starts the built `chipcard-driver-emul` the way chipcardd does (a socketpair end as its
//! standard input, `--ipc-fd 0`) and plays the server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chipcard_ipc::message::{
    CardType, DriverReadyResponse, DriverStart, FromDriver, Ping, ResetCard, StopDriver,
};
use chipcard_ipc::{DriverId, Envelope, ErrorCode, Group, Outcome, ReaderId};
use chipcard_testlab::apdus::{verify, VERIFY_STATUS};
use chipcard_testlab::child::{child_command, LinkedChild};
use chipcard_testlab::driver::card_command;
use chipcard_testlab::emul_control::control_line;

/// The built driver, and the test as its chipcardd.
type Server = LinkedChild<FromDriver>;

fn spawn() -> Server {
    Server::spawn(child_command(
        env!("CARGO_BIN_EXE_chipcard-driver-emul"),
        "driver-id",
        "debug",
    ))
}

/// Sends a SELECT to reader 0's empty `slot`; the answer must be "card removed" (7).
/// Returns the answer's envelope.
async fn select_in_an_empty_slot(server: &mut Server, slot: i32) -> Envelope {
    let id = server
        .send(&card_command(ReaderId(0), slot, &[0x00, 0xA4, 0x00, 0x0C]))
        .await;
    let (env, msg) = server.recv().await;
    assert_eq!(env.refid, Some(id));
    let FromDriver::CardCommandResponse(r) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(r.outcome.error, Some(ErrorCode::CardRemoved));
    env
}

fn config(control: &Path) -> Group {
    let mut reader1 = Group::new("reader")
        .with_char("name", "Emul Reader 1")
        .with_char("slots", "2")
        .with_char("pin", "4321");
    reader1.set_chars("flags", &["KEYPAD", "DISPLAY"]);
    let reader1 = reader1.with_group(
        Group::new("card")
            .with_char("slot", "0")
            .with_char("atr", "3B8180018080")
            .with_char("pin", "1234")
            .with_char("pinRetries", "3"),
    );
    Group::new("config")
        .with_char("type", "emul")
        .with_char("name", "emul-test")
        .with_char("controlSocket", control.display().to_string())
        .with_group(Group::new("vars").with_char("x", "y"))
        .with_group(reader1)
        .with_group(Group::new("reader").with_char("name", "Second"))
}

#[tokio::test]
async fn the_emul_driver_as_chipcardd_sees_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control_path = dir.path().join("emul.ctl");
    let mut server = spawn();

    server
        .send(&DriverStart {
            driver_id: DriverId(1),
            config: config(&control_path),
        })
        .await;
    let (env, msg) = server.recv().await;
    let FromDriver::DriverReady(ready) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(env.refid, None);
    assert!(ready.outcome.is_ok(), "{:?}", ready.outcome);
    assert_eq!(env.data.get_char("Code").ok(), Some("OK"));
    assert_eq!(ready.driver_id, DriverId(1));
    let readers = &ready.readers.0;
    assert_eq!(readers.len(), 2);
    assert_eq!(readers[0].reader_id, ReaderId(0));
    assert_eq!(readers[0].name, "Emul Reader 1");
    assert_eq!(readers[0].reader_flags, vec!["KEYPAD", "DISPLAY"]);
    assert_eq!(readers[0].slots, Some(2));
    assert_eq!(
        (readers[1].reader_id, readers[1].name.as_str()),
        (ReaderId(1), "Second")
    );

    let (env, msg) = server.recv().await;
    assert_eq!(env.refid, None);
    let FromDriver::CardInserted(inserted) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!((inserted.reader_id, inserted.slot), (ReaderId(0), 0));
    assert_eq!(&inserted.atr[..], &[0x3B, 0x81, 0x80, 0x01, 0x80, 0x80]);
    assert_eq!(inserted.card_type, CardType::Processor);
    server
        .send(&DriverReadyResponse {
            outcome: Outcome::ok("welcome"),
        })
        .await;

    // SELECT, READ BINARY, VERIFY on the default file tree.
    assert_eq!(
        server
            .apdu(ReaderId(0), 0, &[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x2F, 0x02])
            .await,
        [0x90, 0x00]
    );
    assert_eq!(
        server
            .apdu(ReaderId(0), 0, &[0x00, 0xB0, 0x00, 0x00, 0x04])
            .await,
        b"chip\x90\x00"
    );
    assert_eq!(
        server.apdu(ReaderId(0), 0, &verify(b"0000")).await,
        [0x63, 0xC2]
    );
    assert_eq!(
        server.apdu(ReaderId(0), 0, &verify(b"1234")).await,
        [0x90, 0x00]
    );
    assert_eq!(
        server.apdu(ReaderId(0), 0, &VERIFY_STATUS).await,
        [0x90, 0x00]
    );

    // ResetCard returns the ATR and forgets the PIN.
    let id = server
        .send(&ResetCard {
            reader_id: ReaderId(0),
            slot: 0,
        })
        .await;
    let (env, msg) = server.recv().await;
    assert_eq!(env.refid, Some(id));
    let FromDriver::ResetCardResponse(reset) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(
        reset.atr.as_deref(),
        Some(&[0x3B, 0x81, 0x80, 0x01, 0x80, 0x80][..])
    );
    assert_eq!(
        server.apdu(ReaderId(0), 0, &VERIFY_STATUS).await,
        [0x63, 0xC3]
    );

    let id = server.send(&Ping {}).await;
    let (env, msg) = server.recv().await;
    assert_eq!(env.refid, Some(id));
    assert!(matches!(msg, FromDriver::PingResponse(_)));

    // An empty slot: card removed (7).
    select_in_an_empty_slot(&mut server, 1).await;

    // The control socket.
    assert_eq!(
        control_line(&control_path, "insert Emul Reader 1 1 3B0102"),
        "ok"
    );
    let (env, msg) = server.recv().await;
    assert_eq!(env.refid, None);
    let FromDriver::CardInserted(inserted) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!((inserted.reader_id, inserted.slot), (ReaderId(0), 1));
    assert_eq!(&inserted.atr[..], &[0x3B, 0x01, 0x02]);
    // The inserted card has the reader's PIN and the default tree.
    assert_eq!(
        server.apdu(ReaderId(0), 1, &verify(b"4321")).await,
        [0x90, 0x00]
    );
    assert!(
        control_line(&control_path, "insert Emul Reader 1 1 3B00").starts_with("error: "),
        "occupied"
    );
    assert!(
        control_line(&control_path, "remove Second 0").starts_with("error: "),
        "empty"
    );
    assert!(
        control_line(&control_path, "remove Nobody 0").starts_with("error: "),
        "no reader"
    );
    assert!(
        control_line(&control_path, "frobnicate").starts_with("error: "),
        "unknown"
    );
    assert_eq!(control_line(&control_path, "remove Emul Reader 1 0"), "ok");
    let (_, msg) = server.recv().await;
    let FromDriver::CardRemoved(removed) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!((removed.reader_id, removed.slot), (ReaderId(0), 0));

    let env = select_in_an_empty_slot(&mut server, 0).await;
    assert_eq!(env.data.get_int("code").ok(), Some(7));

    server.send(&StopDriver {}).await;
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "StopDriver exits 0");
    assert!(!control_path.exists(), "the control socket is removed");
}

#[tokio::test]
async fn a_bad_configuration_is_reported_in_driver_ready() {
    let mut server = spawn();
    server
        .send(&DriverStart {
            driver_id: DriverId(1),
            config: Group::new("config").with_group(
                Group::new("reader")
                    .with_char("name", "r")
                    .with_char("slots", "99"),
            ),
        })
        .await;
    let (env, msg) = server.recv().await;
    let FromDriver::DriverReady(ready) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(env.data.get_char("Code").ok(), Some("ERROR"));
    assert_eq!(ready.outcome.error, Some(ErrorCode::InvalidArgument));
    assert!(
        ready.outcome.text.contains("slots"),
        "{}",
        ready.outcome.text
    );
    server
        .send(&DriverReadyResponse {
            outcome: Outcome::ok("noted"),
        })
        .await;
    assert_eq!(server.wait_exit(Duration::from_secs(10)).code(), Some(1));
}

#[tokio::test]
async fn the_driver_exits_when_the_server_goes_away() {
    let mut server = spawn();
    server.hang_up();
    assert_eq!(server.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn bad_arguments_exit_2() {
    let status = Command::new(env!("CARGO_BIN_EXE_chipcard-driver-emul"))
        .args(["--ipc-fd", "0", "--driver-id", "nonsense"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runs");
    assert_eq!(status.code(), Some(2));
    // fd 0 that is not a socket: a clear failure, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_chipcard-driver-emul"))
        .args(["--ipc-fd", "0", "--driver-id", "0x1"])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--ipc-fd 0: not a socket"), "{stderr}");
}
