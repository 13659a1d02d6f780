//! Smoke tests: chipcardd as a process, with the real `chipcard-driver-emul`, spoken to with
//! the raw envelope codec over its Unix socket.
//!
//! The emul driver must be built next to chipcardd (`cargo build --workspace --bins`, which
//! scripts/test runs); without it these tests fail saying so.
//! chipcardd logs at `warn` to standard error; set `CHIPCARD_TEST_LOG=chipcardd=debug` to see
//! more.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chipcard_ipc::message::*;
use chipcard_ipc::{CardId, EnvelopeCodec, Group, Message};
use chipcard_testlab::chipcardd::Chipcardd;
use chipcard_testlab::emul_control::control_line;
use chipcard_testlab::raw_client::RawClient;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

const SELECT_MF: &[u8] = &[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00];
const VERIFY_1234: &[u8] = &[0x00, 0x20, 0x00, 0x00, 0x04, 0x31, 0x32, 0x33, 0x34];
const VERIFY_STATUS: &[u8] = &[0x00, 0x20, 0x00, 0x00];
const STEP: Duration = Duration::from_secs(10);

fn chipcardd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chipcardd"))
}

fn driver_dir() -> PathBuf {
    let dir = chipcardd()
        .parent()
        .expect("chipcardd has a directory")
        .to_path_buf();
    assert!(
        dir.join("chipcard-driver-emul").exists(),
        "chipcard-driver-emul is not built in {}: run `cargo build --workspace --bins` first \
         (scripts/test does)",
        dir.display()
    );
    dir
}

/// chipcardd with the emul driver, and the driver's control socket.
struct Daemon {
    chipcardd: Chipcardd,
    control: PathBuf,
}

impl Daemon {
    async fn start(driver_dir: &Path, extra_server: &str) -> Daemon {
        let chipcardd = Chipcardd::start(&chipcardd(), |socket, dir| {
            format!(
                r#"
server {{
  socket="{socket}"
  socketMode="0600"
  driverDir="{driver_dir}"
  pingInterval="500"
  pingTimeout="2000"
  {extra_server}
}}
driver {{
  type="emul"
  name="emul"
  controlSocket="{control}"
  vars {{
    testVar="Answer"
  }}
  reader {{
    name="Keypad Reader"
    flags="KEYPAD", "DISPLAY"
    slots="2"
    pin="1234"
    card {{
      slot="0"
      pin="1234"
    }}
  }}
  reader {{
    name="Plain Reader"
  }}
}}
"#,
                socket = socket.display(),
                driver_dir = driver_dir.display(),
                control = dir.join("emul.ctl").display(),
            )
        })
        .await;
        let control = chipcardd.dir().join("emul.ctl");
        Daemon { chipcardd, control }
    }

    fn control(&self, line: &str) -> String {
        control_line(&self.control, line)
    }

    fn driver_pids(&self) -> Vec<i32> {
        self.chipcardd.child_pids()
    }

    async fn stop(self) {
        let socket = self.chipcardd.socket.clone();
        self.chipcardd.stop(STEP).await;
        assert!(!socket.exists(), "the socket file is removed");
    }
}

/// A client past `ClientReady`; the server says it runs on Linux.
async fn ready(socket: &Path) -> RawClient {
    let (client, response) = RawClient::ready_with_response(socket).await;
    assert_eq!(response.system, "Linux");
    client
}

/// chipcardd with the emul driver, a ready client, and the reader list once the card the
/// driver starts with is in it.
async fn daemon_with_a_card() -> (Daemon, RawClient, ListReadersResponse) {
    let daemon = Daemon::start(&driver_dir(), "").await;
    let mut client = ready(&daemon.chipcardd.socket).await;
    let list = client
        .readers_until("a card in the first reader", |l| {
            l.readers.first().is_some_and(|r| !r.cards.is_empty())
        })
        .await;
    (daemon, client, list)
}

fn sw(r: &CommandCardResponse) -> Vec<u8> {
    let data = r.data.clone().unwrap_or_default();
    data[data.len().saturating_sub(2)..].to_vec()
}

fn first_card(list: &ListReadersResponse) -> CardId {
    list.readers[0].cards[0].card_id
}

#[tokio::test]
async fn take_command_release_with_the_emul_driver() {
    let (daemon, mut a, list) = daemon_with_a_card().await;
    assert_eq!(list.readers.len(), 2);
    assert_eq!(list.readers[0].reader_name, "Keypad Reader");
    assert_eq!(list.readers[0].driver_type, "emul");
    assert_eq!(list.readers[0].slots, 2);
    assert_eq!(list.readers[0].status, ReaderStatus::Up);
    let card = first_card(&list);

    let taken = a.take(card, None).await;
    assert!(taken.is_none(), "{taken:?}");
    let r = a.command_card(card, SELECT_MF).await;
    assert!(r.outcome.is_ok(), "{r:?}");
    assert_eq!(r.data.as_deref(), Some(&[0x90, 0x00][..]));

    let var: GetDriverVarResponse = a
        .call(&GetDriverVar {
            card_id: card,
            var_name: "testvar".into(),
        })
        .await;
    assert_eq!(var.var_value, "Answer");
    let e = a
        .call::<ErrorResponse>(&GetDriverVar {
            card_id: card,
            var_name: "nope".into(),
        })
        .await;
    assert_eq!(e.code, 3);

    // A second client: busy, not owner.
    let mut b = ready(&daemon.chipcardd.socket).await;
    let busy = b.take(card, Some(0)).await;
    assert_eq!(busy.map(|c| c.number()), Some(10));
    let r = b.command_card(card, SELECT_MF).await;
    assert_eq!(r.outcome.error.map(|c| c.number()), Some(4));

    // The PIN verified by the holder does not pass to the next one.
    assert_eq!(
        sw(&a.command_card(card, VERIFY_1234).await),
        vec![0x90, 0x00]
    );
    assert_eq!(
        sw(&a.command_card(card, VERIFY_STATUS).await),
        vec![0x90, 0x00]
    );
    // b waits (pipelined with a ListReaders, which is answered meanwhile).
    let take_id = b
        .send(&TakeCard {
            card_id: card,
            timeout: Some(5000),
        })
        .await;
    let list_id = b.send(&ListReaders {}).await;
    let first = b.next_envelope().await.expect("connection open");
    assert_eq!(
        first.refid,
        Some(list_id),
        "ListReaders is not held up by a waiting TakeCard"
    );
    let released: ReleaseCardResponse = a.call(&ReleaseCard { card_id: card }).await;
    assert!(released.outcome.is_ok(), "{released:?}");
    let took = b.response_envelope(take_id).await;
    let took = TakeCardResponse::read_data(&took.data).expect("valid");
    assert!(took.outcome.is_ok(), "{took:?}");
    let status = sw(&b.command_card(card, VERIFY_STATUS).await);
    assert_eq!(
        status[0], 0x63,
        "the PIN is not verified for the next client: {status:02X?}"
    );

    // A waiting take times out with busy.
    let t0 = std::time::Instant::now();
    let busy = a.take(card, Some(300)).await;
    assert_eq!(busy.map(|c| c.number()), Some(10));
    assert!(t0.elapsed() >= Duration::from_millis(300));

    // b disconnects: a can take the card (after its reset).
    drop(b);
    let taken = a.take(card, Some(5000)).await;
    assert!(taken.is_none(), "{taken:?}");
    let reset: CardResetResponse = a.call(&CardReset { card_id: card }).await;
    assert!(reset.outcome.is_ok(), "{reset:?}");
    assert!(reset.atr.is_some_and(|atr| atr.first() == Some(&0x3B)));

    daemon.stop().await;
}

#[tokio::test]
async fn protocol_errors_are_answered_and_bad_frames_close_only_their_connection() {
    let dir = driver_dir();
    let daemon = Daemon::start(&dir, "").await;
    let mut early = RawClient::connect(&daemon.chipcardd.socket).await;
    let e = early.call::<ErrorResponse>(&ListReaders {}).await;
    assert_eq!(e.code, 12, "{e:?}");

    let mut a = ready(&daemon.chipcardd.socket).await;
    let id = a.send(&StopDriver {}).await; // not a client command
    let env = a.response_envelope(id).await;
    assert_eq!(
        ErrorResponse::read_data(&env.data).map(|e| e.code).ok(),
        Some(5)
    );
    let bad_id = a.send_cmd("TakeCard", Group::new("data")).await;
    let env = a.response_envelope(bad_id).await;
    let e = ErrorResponse::read_data(&env.data).expect("an Error");
    assert_eq!((e.code, e.text.as_str()), (2, "data/CardId: missing"));
    // A ServiceOpen naming no service: its own response, code 2.
    let r: ServiceOpenResponse = a.call(&ServiceOpen::default()).await;
    assert_eq!(
        r.outcome.error,
        Some(chipcard_ipc::ErrorCode::InvalidArgument)
    );
    // Repeated id: code 11, and the connection goes on.
    a.send_with_id(bad_id, &ListReaders {}).await;
    let env = a.response_envelope(bad_id).await;
    assert_eq!(
        ErrorResponse::read_data(&env.data).map(|e| e.code).ok(),
        Some(11)
    );
    let r: SetNotifyResponse = a
        .call(&SetNotify {
            flags: vec!["card:exploded".into()],
        })
        .await;
    assert_eq!(r.outcome.error.map(|c| c.number()), Some(2));
    let r: CardCheckResponse = a
        .call(&CardCheck {
            card_id: CardId(0x7777),
        })
        .await;
    assert_eq!(r.outcome.error.map(|c| c.number()), Some(3));

    // Garbage and an oversized frame: Error 11, then the connection closes.
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /chipcard HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
    ] {
        let mut raw = UnixStream::connect(&daemon.chipcardd.socket)
            .await
            .expect("connects");
        raw.write_all(garbage).await.expect("writes");
        let mut conn = Framed::new(raw, EnvelopeCodec::new());
        let env = tokio::time::timeout(STEP, conn.next())
            .await
            .expect("answered")
            .expect("an answer")
            .expect("a frame")
            .expect("an envelope");
        assert_eq!(
            ErrorResponse::read_data(&env.data).map(|e| e.code).ok(),
            Some(11)
        );
        let end = tokio::time::timeout(STEP, conn.next())
            .await
            .expect("closed");
        assert!(end.is_none(), "the connection is closed");
    }
    // Everyone else still works.
    let list: ListReadersResponse = a.call(&ListReaders {}).await;
    assert_eq!(list.readers.len(), 2);
    daemon.stop().await;
}

#[tokio::test]
async fn inserts_removals_notifications_and_driver_restart() {
    let (daemon, mut a, list) = daemon_with_a_card().await;
    let first = first_card(&list);
    let r: SetNotifyResponse = a
        .call(&SetNotify {
            flags: vec!["card:*".into(), "reader:*".into(), "driver:*".into()],
        })
        .await;
    assert!(r.outcome.is_ok());
    // StartWait: the present card now (keypad readers only), later inserts as they come.
    let r: StartWaitResponse = a
        .call(&StartWait {
            flags: vec!["KEYPAD".into()],
            mask: vec!["keypad".into()],
        })
        .await;
    assert!(r.outcome.is_ok());
    let avail = a.wait_push("CardAvailable").await;
    let avail = CardAvailable::read_data(&avail.data).expect("valid");
    assert_eq!(avail.card_id, first);
    assert_eq!(daemon.control("insert Plain Reader 0 3B0102"), "ok");
    assert_eq!(daemon.control("insert Keypad Reader 1 3B0203"), "ok");
    let avail = a.wait_push("CardAvailable").await;
    let avail = CardAvailable::read_data(&avail.data).expect("valid");
    assert_eq!(
        avail.atr.as_ref(),
        &[0x3B, 0x02, 0x03],
        "only the keypad reader's card"
    );
    let note = a.wait_push("Notification").await;
    let note = Notification::read_data(&note.data).expect("valid");
    assert_eq!(
        (note.ntype.as_str(), note.ncode.as_str()),
        ("card", "inserted")
    );

    // Removal: the holder gets 7.
    let taken = a.take(avail.card_id, None).await;
    assert!(taken.is_none());
    assert_eq!(daemon.control("remove Keypad Reader 1"), "ok");
    let _ = a
        .readers_until("the removed card gone", |l| {
            l.readers[0]
                .cards
                .iter()
                .all(|c| c.card_id != avail.card_id)
        })
        .await;
    let r = a.command_card(avail.card_id, SELECT_MF).await;
    assert_eq!(r.outcome.error.map(|c| c.number()), Some(7));
    let r: CardCheckResponse = a
        .call(&CardCheck {
            card_id: avail.card_id,
        })
        .await;
    assert_eq!(r.outcome.error.map(|c| c.number()), Some(7));

    // The driver dies: readers down, cards gone, then it is restarted.
    a.clear_pushes();
    let pids = daemon.driver_pids();
    assert_eq!(pids.len(), 1, "one driver process: {pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kills the driver");
    let note = a.wait_push("Notification").await;
    let note = Notification::read_data(&note.data).expect("valid");
    assert!(
        (note.ntype.as_str(), note.ncode.as_str()) == ("card", "removed") || note.ntype == "reader",
        "{note:?}"
    );
    let r = a.command_card(first, SELECT_MF).await;
    assert_eq!(
        r.outcome.error.map(|c| c.number()),
        Some(7),
        "the card went with its driver"
    );
    let list = a
        .readers_until("the restarted reader up with its card", |l| {
            l.readers[0].status == ReaderStatus::Up && !l.readers[0].cards.is_empty()
        })
        .await;
    let again = first_card(&list);
    assert!(again > first, "a card id is never reused");
    assert_eq!(
        list.readers[0].reader_id, avail.reader_id,
        "the reader keeps its id"
    );
    assert!(
        !daemon.driver_pids().contains(&pids[0]),
        "the dead driver was reaped"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_hung_driver_is_killed_and_restarted() {
    let (daemon, mut a, list) = daemon_with_a_card().await;
    let first = first_card(&list);
    let taken = a.take(first, None).await;
    assert!(taken.is_none());
    let r: SetNotifyResponse = a
        .call(&SetNotify {
            flags: vec!["driver:*".into()],
        })
        .await;
    assert!(r.outcome.is_ok());
    let pids = daemon.driver_pids();
    assert_eq!(pids.len(), 1, "one driver process: {pids:?}");
    let pid = nix::unistd::Pid::from_raw(pids[0]);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("stops the driver");
    // A command to the frozen driver fails once the ping timeout ends the driver.
    let r = a.command_card(first, SELECT_MF).await;
    assert_eq!(r.outcome.error.map(|c| c.number()), Some(7), "{r:?}");
    let mut codes = Vec::new();
    while !codes.contains(&"up".to_owned()) {
        let note = a.wait_push("Notification").await;
        let note = Notification::read_data(&note.data).expect("valid");
        assert_eq!(note.ntype, "driver");
        codes.push(note.ncode);
    }
    assert!(codes.contains(&"error".to_owned()), "{codes:?}");
    assert!(codes.contains(&"down".to_owned()), "{codes:?}");
    let list = a
        .readers_until("the card back after the restart", |l| {
            !l.readers[0].cards.is_empty()
        })
        .await;
    assert!(first_card(&list) > first);
    assert!(
        !daemon.driver_pids().contains(&pids[0]),
        "the hung driver was killed and reaped"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_driver_that_refuses_to_start_is_reported() {
    let dir = driver_dir();
    let daemon = Chipcardd::start(&chipcardd(), |socket, _| {
        format!(
            "server {{\n socket=\"{}\"\n driverDir=\"{}\"\n}}\ndriver {{\n type=\"emul\"\n reader {{\n  slots=\"99\"\n }}\n}}\n",
            socket.display(),
            dir.display()
        )
    })
    .await;
    let mut a = ready(&daemon.socket).await;
    let r: SetNotifyResponse = a
        .call(&SetNotify {
            flags: vec!["driver:error".into()],
        })
        .await;
    assert!(r.outcome.is_ok());
    // The next attempt (after the 1 s backoff) fails again, and is reported.
    let note = a.wait_push("Notification").await;
    let note = Notification::read_data(&note.data).expect("valid");
    let info = note.data.get_char("info").unwrap_or_default().to_owned();
    assert!(
        info.contains("slots"),
        "the driver's reason is passed on: {info}"
    );
    let list: ListReadersResponse = a.call(&ListReaders {}).await;
    assert!(list.readers.is_empty());
}
