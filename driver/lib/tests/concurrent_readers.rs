//! Readers served concurrently: a backend with [`CardIo`] and two readers, where a slow
//! call on one reader must not hold up the other, and each reader's requests stay in order.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use chipcard_driver::{serve, Backend, CardIo, DriverError, Error, EventSink, Exit};
use chipcard_ipc::message::{
    DriverReader, DriverReadyResponse, DriverStart, FromDriver, Ping, StopDriver,
};
use chipcard_ipc::{DriverId, Group, Outcome, ReaderId};
use chipcard_testlab::driver::card_command;
use chipcard_testlab::link::Link;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// Blocks its reader's call until the test opens the reader's gate.
const APDU_SLOW: &[u8] = &[0x00, 0xFF, 0x00, 0x00];

/// Panics in the backend.
const APDU_PANIC: &[u8] = &[0x00, 0xEE, 0x00, 0x00];

/// How soon a request for a free reader is answered while another reader is busy.
const PROMPT: Duration = Duration::from_millis(300);

/// Readers 0 and 1, each with a card in slot 0, each with a gate for `APDU_SLOW`.
struct Gated {
    gates: [Mutex<mpsc::Receiver<()>>; 2],
}

impl CardIo for Gated {
    fn transmit(&self, reader: ReaderId, _: i32, apdu: &[u8]) -> Result<Vec<u8>, DriverError> {
        let gate = usize::try_from(reader.0)
            .ok()
            .and_then(|r| self.gates.get(r))
            .ok_or_else(|| DriverError::not_found("no such reader"))?;
        if apdu == APDU_PANIC {
            panic!("backend bug");
        }
        if apdu == APDU_SLOW {
            gate.lock()
                .expect("lock")
                .recv_timeout(Duration::from_secs(10))
                .expect("test opens the gate");
        }
        let mut out = apdu.to_vec();
        out.extend_from_slice(&[0x90, 0x00]);
        Ok(out)
    }

    fn reset(&self, _: ReaderId, _: i32) -> Result<Vec<u8>, DriverError> {
        Ok(vec![0x3B, 0x00])
    }
}

struct TwoReaders {
    io: Arc<Gated>,
}

impl Backend for TwoReaders {
    fn start(&mut self, _: &Group, _: EventSink) -> Result<Vec<DriverReader>, DriverError> {
        Ok((0..2)
            .map(|r| DriverReader {
                reader_id: ReaderId(r),
                name: format!("reader {r}"),
                slots: Some(1),
                ..Default::default()
            })
            .collect())
    }

    fn transmit(&mut self, r: ReaderId, slot: i32, apdu: &[u8]) -> Result<Vec<u8>, DriverError> {
        self.io.transmit(r, slot, apdu)
    }

    fn reset(&mut self, r: ReaderId, slot: i32) -> Result<Vec<u8>, DriverError> {
        self.io.reset(r, slot)
    }

    fn stop(&mut self) {}

    fn card_io(&self) -> Option<Arc<dyn CardIo>> {
        Some(self.io.clone())
    }
}

struct Server {
    link: Link<FromDriver>,
    driver: JoinHandle<Result<Exit, Error>>,
    gates: [mpsc::Sender<()>; 2],
}

async fn running_driver() -> Server {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let (gate0, rx0) = mpsc::channel();
    let (gate1, rx1) = mpsc::channel();
    let backend = TwoReaders {
        io: Arc::new(Gated {
            gates: [Mutex::new(rx0), Mutex::new(rx1)],
        }),
    };
    let mut link = Link::new(ours);
    let driver = tokio::spawn(serve(theirs, DriverId(3), backend));
    link.send(&DriverStart {
        driver_id: DriverId(3),
        config: Group::new("config"),
    })
    .await;
    let (_, msg) = link.recv().await;
    assert!(
        matches!(msg, FromDriver::DriverReady(ref r) if r.outcome.is_ok()),
        "{msg:?}"
    );
    link.send(&DriverReadyResponse {
        outcome: Outcome::ok("ok"),
    })
    .await;
    Server {
        link,
        driver,
        gates: [gate0, gate1],
    }
}

impl Server {
    async fn send_apdu(&mut self, reader: u32, apdu: &[u8]) -> u32 {
        self.link
            .send(&card_command(ReaderId(reader), 0, apdu))
            .await
    }

    /// The next message, which must answer `refid` with `apdu` 90 00.
    async fn answered(&mut self, refid: u32, apdu: &[u8]) {
        let (env, msg) = self.link.recv().await;
        assert_eq!(env.refid, Some(refid), "{msg:?}");
        let FromDriver::CardCommandResponse(r) = msg else {
            panic!("{msg:?}")
        };
        let mut expected = apdu.to_vec();
        expected.extend_from_slice(&[0x90, 0x00]);
        assert_eq!(r.data.as_deref(), Some(&expected[..]));
    }

    fn open(&self, reader: usize) {
        self.gates[reader]
            .send(())
            .expect("backend waits at the gate");
    }

    async fn stop(mut self) {
        self.link.send(&StopDriver {}).await;
        let result = tokio::time::timeout(Duration::from_secs(10), self.driver)
            .await
            .expect("driver ends in time")
            .expect("driver task did not panic");
        assert_eq!(result.expect("clean stop"), Exit::Stopped);
    }
}

#[tokio::test]
async fn a_slow_reader_does_not_hold_up_another() {
    let mut server = running_driver().await;
    let slow = server.send_apdu(0, APDU_SLOW).await;
    let behind_slow = server.send_apdu(0, &[0x00, 0xB0, 0x00, 0x01]).await;
    let sent = Instant::now();
    let first = server.send_apdu(1, &[0x00, 0xB0, 0x00, 0x02]).await;
    let second = server.send_apdu(1, &[0x00, 0xB0, 0x00, 0x03]).await;

    // Reader 1's answers come first, in order, while reader 0 is still busy.
    server.answered(first, &[0x00, 0xB0, 0x00, 0x02]).await;
    server.answered(second, &[0x00, 0xB0, 0x00, 0x03]).await;
    assert!(sent.elapsed() < PROMPT, "took {:?}", sent.elapsed());
    let ping = server.link.send(&Ping {}).await;
    let (env, msg) = server.link.recv().await;
    assert!(matches!(msg, FromDriver::PingResponse(_)), "{msg:?}");
    assert_eq!(env.refid, Some(ping));

    // Reader 0's answers, in order, once its slow call ends.
    server.open(0);
    server.answered(slow, APDU_SLOW).await;
    server
        .answered(behind_slow, &[0x00, 0xB0, 0x00, 0x01])
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_reader_whose_worker_is_busy_keeps_its_order() {
    let mut server = running_driver().await;
    let slow0 = server.send_apdu(0, APDU_SLOW).await;
    // Reader 0 has been busy long enough: reader 1's slow command goes to its worker.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let slow1 = server.send_apdu(1, APDU_SLOW).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.open(0);
    server.answered(slow0, APDU_SLOW).await;

    // Reader 1's next command waits behind its slow one although the IPC thread is free.
    let after = server.send_apdu(1, &[0x00, 0xB0, 0x00, 0x04]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.open(1);
    server.answered(slow1, APDU_SLOW).await;
    server.answered(after, &[0x00, 0xB0, 0x00, 0x04]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_panic_on_a_worker_is_answered_and_ends_the_driver() {
    let mut server = running_driver().await;
    let slow = server.send_apdu(0, APDU_SLOW).await;
    let bug = server.send_apdu(1, APDU_PANIC).await;
    let (env, msg) = server.link.recv().await;
    assert_eq!(env.refid, Some(bug), "{msg:?}");
    let FromDriver::CardCommandResponse(r) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(r.outcome.error, Some(chipcard_ipc::ErrorCode::DriverError));
    server.open(0);
    server.answered(slow, APDU_SLOW).await;
    let result = tokio::time::timeout(Duration::from_secs(10), server.driver)
        .await
        .expect("driver ends in time")
        .expect("driver task did not panic");
    assert!(matches!(result, Err(Error::BackendGone)), "{result:?}");
}
