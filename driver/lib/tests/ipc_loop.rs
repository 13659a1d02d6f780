//! The driver's IPC loop over a socketpair, with a fake backend and the test as the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use chipcard_driver::{serve, Backend, DriverError, Error, EventSink, Exit};
use chipcard_ipc::message::{
    CardType, DriverReader, DriverReadyResponse, DriverStart, ErrorResponse, FromDriver, Ping,
    ResetCard, StopDriver,
};
use chipcard_ipc::{DriverId, Envelope, ErrorCode, Group, Outcome, ReaderId};
use chipcard_testlab::driver::card_command;
use chipcard_testlab::link::Link;
use futures::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

const APDU_SLOW: &[u8] = &[0x00, 0xFF, 0x00, 0x00];
const APDU_PANIC: &[u8] = &[0x00, 0xEE, 0x00, 0x00];

/// A backend with one reader (id 1) holding a card in slot 0; `APDU_SLOW` blocks until the
/// test opens the gate.
struct Fake {
    gate: Option<mpsc::Receiver<()>>,
    stopped: Arc<AtomicBool>,
    fail_start: bool,
    seen_config: Arc<Mutex<Option<Group>>>,
}

impl Backend for Fake {
    fn start(
        &mut self,
        config: &Group,
        events: EventSink,
    ) -> Result<Vec<DriverReader>, DriverError> {
        *self.seen_config.lock().expect("lock") = Some(config.clone());
        if self.fail_start {
            return Err(DriverError::invalid("reader 'x': bad flags"));
        }
        events
            .card_inserted(ReaderId(1), 0, vec![0x3B, 0x00], CardType::Processor)
            .expect("driver running");
        Ok(vec![DriverReader {
            reader_id: ReaderId(1),
            name: "fake reader".into(),
            reader_flags: vec!["KEYPAD".into()],
            slots: Some(1),
            ..Default::default()
        }])
    }

    fn transmit(
        &mut self,
        reader: ReaderId,
        slot: i32,
        apdu: &[u8],
    ) -> Result<Vec<u8>, DriverError> {
        if reader != ReaderId(1) {
            return Err(DriverError::not_found("no such reader"));
        }
        if slot != 0 {
            return Err(DriverError::card_removed("slot empty"));
        }
        if apdu == APDU_SLOW {
            if let Some(gate) = &self.gate {
                gate.recv_timeout(Duration::from_secs(10))
                    .expect("test opens the gate");
            }
        }
        if apdu == APDU_PANIC {
            panic!("backend bug");
        }
        let mut out = apdu.to_vec();
        out.extend_from_slice(&[0x90, 0x00]);
        Ok(out)
    }

    fn reset(&mut self, _: ReaderId, _: i32) -> Result<Vec<u8>, DriverError> {
        Ok(vec![0x3B, 0x00])
    }

    fn stop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

struct Server {
    link: Link<FromDriver>,
    driver: JoinHandle<Result<Exit, Error>>,
    stopped: Arc<AtomicBool>,
    gate: mpsc::Sender<()>,
    seen_config: Arc<Mutex<Option<Group>>>,
}

fn start_driver(fail_start: bool) -> Server {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let (gate, gate_rx) = mpsc::channel();
    let stopped = Arc::new(AtomicBool::new(false));
    let seen_config = Arc::new(Mutex::new(None));
    let fake = Fake {
        gate: Some(gate_rx),
        stopped: stopped.clone(),
        fail_start,
        seen_config: seen_config.clone(),
    };
    let driver = tokio::spawn(serve(theirs, DriverId(7), fake));
    Server {
        link: Link::new(ours),
        driver,
        stopped,
        gate,
        seen_config,
    }
}

/// A driver past `DriverStart`, accepted by the server ([`Server::start`]).
async fn running_driver() -> Server {
    let mut server = start_driver(false);
    server.start().await;
    server
}

impl Server {
    async fn start(&mut self) {
        let config = Group::new("config")
            .with_char("type", "fake")
            .with_char("name", "f1");
        self.send_driver_start(config).await;
        let (env, msg) = self.link.recv().await;
        let FromDriver::DriverReady(ready) = msg else {
            panic!("expected DriverReady, got {msg:?}");
        };
        assert_eq!(env.refid, None);
        assert!(ready.outcome.is_ok());
        assert_eq!(ready.driver_id, DriverId(7));
        assert_eq!(ready.readers.0.len(), 1);
        assert_eq!(ready.readers.0[0].name, "fake reader");
        let (env, msg) = self.link.recv().await;
        assert_eq!(env.refid, None, "events are pushes");
        assert!(
            matches!(msg, FromDriver::CardInserted(ref c) if c.reader_id == ReaderId(1) && c.card_type == CardType::Processor),
            "{msg:?}"
        );
        self.link
            .send(&DriverReadyResponse {
                outcome: Outcome::ok("ok"),
            })
            .await;
    }

    /// Sends `DriverStart` for driver 7 with `config`; returns the message's id.
    async fn send_driver_start(&mut self, config: Group) -> u32 {
        self.link
            .send(&DriverStart {
                driver_id: DriverId(7),
                config,
            })
            .await
    }

    /// Sends `apdu` to reader 1, slot 0; returns the request's id.
    async fn send_apdu(&mut self, apdu: &[u8]) -> u32 {
        self.link.send(&card_command(ReaderId(1), 0, apdu)).await
    }

    /// Sends a `Ping`, whose answer must be the next message.
    async fn ping_answered_next(&mut self) {
        let ping = self.link.send(&Ping {}).await;
        let (env, msg) = self.link.recv().await;
        assert!(matches!(msg, FromDriver::PingResponse(_)), "{msg:?}");
        assert_eq!(env.refid, Some(ping));
    }

    /// Waits for a clean stop (after `StopDriver`) that called the backend's `stop`.
    async fn finish_stopped(self) {
        let stopped = self.stopped.clone();
        assert_eq!(self.finish().await.expect("clean stop"), Exit::Stopped);
        assert!(stopped.load(Ordering::SeqCst), "backend stop was called");
    }

    async fn finish(self) -> Result<Exit, Error> {
        let result = tokio::time::timeout(Duration::from_secs(10), self.driver)
            .await
            .expect("driver ends in time")
            .expect("driver task did not panic");
        result
    }
}

#[tokio::test]
async fn start_commands_reset_and_stop() {
    let mut server = running_driver().await;
    let config = server
        .seen_config
        .lock()
        .expect("lock")
        .clone()
        .expect("start saw config");
    assert_eq!(config.get_char("name").ok(), Some("f1"));

    let id = server.send_apdu(&[0x00, 0xA4, 0x00, 0x0C]).await;
    let (env, msg) = server.link.recv().await;
    assert_eq!(env.refid, Some(id));
    let FromDriver::CardCommandResponse(r) = msg else {
        panic!("{msg:?}")
    };
    assert!(r.outcome.is_ok());
    assert_eq!(
        r.data.as_deref(),
        Some(&[0x00, 0xA4, 0x00, 0x0C, 0x90, 0x00][..])
    );

    // Backend errors become failed outcomes with their codes.
    for (reader, slot, code) in [(1, 1, ErrorCode::CardRemoved), (9, 0, ErrorCode::NotFound)] {
        let id = server
            .link
            .send(&card_command(
                ReaderId(reader),
                slot,
                &[0x00, 0xA4, 0x00, 0x0C],
            ))
            .await;
        let (env, msg) = server.link.recv().await;
        assert_eq!(env.refid, Some(id));
        let FromDriver::CardCommandResponse(r) = msg else {
            panic!("{msg:?}")
        };
        assert_eq!(r.outcome.error, Some(code));
        assert_eq!(env.data.get_int("code").ok(), Some(code.number()));
        assert!(r.data.is_none());
    }

    // Reader commands are not supported by default.
    let mut to_reader = card_command(ReaderId(1), 0, &[0x20, 0x10, 0x00, 0x00]);
    to_reader.target = Some("reader".into());
    server.link.send(&to_reader).await;
    let (_, msg) = server.link.recv().await;
    let FromDriver::CardCommandResponse(r) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(r.outcome.error, Some(ErrorCode::NotSupported));

    let id = server
        .link
        .send(&ResetCard {
            reader_id: ReaderId(1),
            slot: 0,
        })
        .await;
    let (env, msg) = server.link.recv().await;
    assert_eq!(env.refid, Some(id));
    let FromDriver::ResetCardResponse(r) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(r.atr.as_deref(), Some(&[0x3B, 0x00][..]));

    server.link.send(&StopDriver {}).await;
    server.finish_stopped().await;
}

#[tokio::test]
async fn ping_is_answered_while_a_transmit_blocks() {
    let mut server = running_driver().await;
    let slow = server.send_apdu(APDU_SLOW).await;
    server.ping_answered_next().await;
    server.gate.send(()).expect("backend waits at the gate");
    let (env, msg) = server.link.recv().await;
    assert!(matches!(msg, FromDriver::CardCommandResponse(_)), "{msg:?}");
    assert_eq!(env.refid, Some(slow));
    // Every id the driver sent so far was increasing: DriverReady 1, CardInserted 2, ...
    assert!(env.id > 3);
    server.link.hang_up();
    assert_eq!(server.finish().await.expect("clean"), Exit::ServerGone);
}

#[tokio::test]
async fn stop_during_a_long_call_waits_for_it_and_keeps_the_order() {
    let mut server = running_driver().await;
    let slow = server.send_apdu(APDU_SLOW).await;
    // Long enough for the watcher to read for the busy IPC thread.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = server.send_apdu(&[0x00, 0xB0, 0x00, 0x00]).await;
    server.ping_answered_next().await;
    server.link.send(&StopDriver {}).await;
    server.gate.send(()).expect("backend waits at the gate");
    // The slow command's answer, then the one queued behind it, then the stop.
    let (env, _) = server.link.recv().await;
    assert_eq!(env.refid, Some(slow));
    let (env, msg) = server.link.recv().await;
    assert_eq!(env.refid, Some(after));
    assert!(matches!(msg, FromDriver::CardCommandResponse(_)), "{msg:?}");
    server.finish_stopped().await;
}

#[tokio::test]
async fn malformed_messages_get_error_replies() {
    let mut server = start_driver(false);

    // A command before DriverStart.
    let id = server.send_apdu(&[0, 0, 0, 0]).await;
    let (env, msg) = server.link.recv().await;
    assert_eq!(env.refid, Some(id));
    assert!(
        matches!(msg, FromDriver::ErrorResponse(ref e) if e.error_code() == ErrorCode::Protocol),
        "{msg:?}"
    );

    server.start().await;

    // Unknown command: 5.
    let id = server.link.send_cmd("StopWait", Group::new("data")).await;
    let (env, msg) = server.link.recv().await;
    assert_eq!(env.refid, Some(id));
    assert!(
        matches!(msg, FromDriver::ErrorResponse(ref e) if e.error_code() == ErrorCode::NotSupported),
        "{msg:?}"
    );

    // Missing field: 2.
    let id = server
        .link
        .send_cmd(
            "CardCommand",
            Group::new("data")
                .with_char("ReaderId", "0x00000001")
                .with_int("Slot", 0),
        )
        .await;
    let (env, msg) = server.link.recv().await;
    assert_eq!(env.refid, Some(id));
    let FromDriver::ErrorResponse(e) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(e.error_code(), ErrorCode::InvalidArgument);
    assert!(e.text.contains("data"), "{}", e.text);

    // An id that does not increase: 11.
    server.link.send_with_id(id, &Ping {}).await;
    let (env, msg) = server.link.recv().await;
    assert_eq!(env.refid, Some(id));
    assert!(
        matches!(msg, FromDriver::ErrorResponse(ref e) if e.error_code() == ErrorCode::Protocol),
        "{msg:?}"
    );

    // A frame whose body is not a group document: 11, no refid, and the driver goes on.
    let body = b"ipc {\n char id=\"99\"\n";
    let frame = format!(
        "POST /chipcard HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let raw = server.link.framed().get_mut();
    raw.write_all(frame.as_bytes()).await.expect("write");
    raw.write_all(body).await.expect("write");
    let (env, msg) = server.link.recv().await;
    assert_eq!(env.refid, None);
    assert!(
        matches!(msg, FromDriver::ErrorResponse(ref e) if e.error_code() == ErrorCode::Protocol),
        "{msg:?}"
    );

    // DriverStart twice: 11.
    let id = server.send_driver_start(Group::new("config")).await;
    let (env, msg) = server.link.recv().await;
    assert_eq!(env.refid, Some(id));
    assert!(
        matches!(msg, FromDriver::ErrorResponse(ref e) if e.error_code() == ErrorCode::Protocol),
        "{msg:?}"
    );

    // An Error reply from the server (a response: it has a refid) is not answered.
    let id = server.link.next_id();
    server
        .link
        .framed()
        .send(Envelope::new(
            id,
            Some(2),
            &ErrorResponse::new(ErrorCode::Generic, "no"),
        ))
        .await
        .expect("send");

    // Still serving; the Ping's answer is the next message.
    let id = server.link.send(&Ping {}).await;
    let (env, _) = server.link.recv().await;
    assert_eq!(env.refid, Some(id));

    // A broken frame: 11, then the driver ends with an error.
    server
        .link
        .framed()
        .get_mut()
        .write_all(b"GARBAGE\r\n\r\n")
        .await
        .expect("write");
    let (_, msg) = server.link.recv().await;
    assert!(
        matches!(msg, FromDriver::ErrorResponse(ref e) if e.error_code() == ErrorCode::Protocol),
        "{msg:?}"
    );
    let stopped = server.stopped.clone();
    assert!(matches!(server.finish().await, Err(Error::Ipc(_))));
    assert!(stopped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn eof_stops_the_backend() {
    let mut server = start_driver(false);
    let stopped = server.stopped.clone();
    server.link.hang_up();
    assert_eq!(server.finish().await.expect("clean"), Exit::ServerGone);
    assert!(stopped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn failed_start_is_reported_and_ends_the_driver() {
    let mut server = start_driver(true);
    server.send_driver_start(Group::new("config")).await;
    let (env, msg) = server.link.recv().await;
    let FromDriver::DriverReady(ready) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(ready.outcome.error, Some(ErrorCode::InvalidArgument));
    assert_eq!(env.data.get_char("Code").ok(), Some("ERROR"));
    assert!(ready.outcome.text.contains("bad flags"));
    server
        .link
        .send(&DriverReadyResponse {
            outcome: Outcome::ok("noted"),
        })
        .await;
    assert!(matches!(server.finish().await, Err(Error::Start(_))));
}

#[tokio::test]
async fn a_panicking_backend_ends_the_driver() {
    let mut server = running_driver().await;
    let id = server.send_apdu(APDU_PANIC).await;
    let (env, msg) = server.link.recv().await;
    assert_eq!(env.refid, Some(id));
    let FromDriver::CardCommandResponse(r) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(r.outcome.error, Some(ErrorCode::DriverError));
    assert!(matches!(server.finish().await, Err(Error::BackendGone)));
}
