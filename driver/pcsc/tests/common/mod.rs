//! Test harness: an isolated pcscd per test with chipcard's virtual cards (from
//! `chipcard-testlab`), and the built `chipcard-driver-pcsc` with the test playing chipcardd
//! (as driver/emul/tests/emul_process.rs does).

#![allow(dead_code)]

pub use chipcard_testlab::pcscd::*;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chipcard_ipc::message::{
    CardCommand, DriverReady, DriverReadyResponse, DriverStart, FromDriver, ResetCard, StopDriver,
};
use chipcard_ipc::{
    DriverId, Envelope, EnvelopeCodec, Group, IdCounter, Outcome, Outgoing, ReaderId,
};
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// The built driver, and the test as its chipcardd.
pub struct Driver {
    framed: Framed<UnixStream, EnvelopeCodec>,
    ids: IdCounter,
    child: Child,
}

impl Driver {
    /// Starts `chipcard-driver-pcsc --ipc-fd 0` on a socketpair. Its log goes to standard
    /// error, filtered by `CHIPCARD_TEST_DRIVER_LOG` (default: the driver's debug messages).
    pub fn spawn() -> Driver {
        let (ours, theirs) = StdUnixStream::pair().expect("socketpair");
        let filter = std::env::var("CHIPCARD_TEST_DRIVER_LOG")
            .unwrap_or_else(|_| "chipcard_driver_pcsc=debug,info".to_owned());
        let child = Command::new(env!("CARGO_BIN_EXE_chipcard-driver-pcsc"))
            .args(["--ipc-fd", "0", "--driver-id", "0x00000001"])
            .args(["--log-level", &filter])
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the driver starts");
        ours.set_nonblocking(true).expect("nonblocking");
        let ours = UnixStream::from_std(ours).expect("tokio stream");
        Driver {
            framed: Framed::new(ours, EnvelopeCodec::new()),
            ids: IdCounter::new(),
            child,
        }
    }

    /// Sends a message; returns its id.
    pub async fn send(&mut self, message: &impl Outgoing) -> u32 {
        let id = self.ids.next_id();
        self.framed
            .send(Envelope::new(id, None, message))
            .await
            .expect("send to the driver");
        id
    }

    /// The next message, within `timeout`.
    pub async fn recv_within(&mut self, timeout: Duration) -> (Envelope, FromDriver) {
        let env = tokio::time::timeout(timeout, self.framed.next())
            .await
            .unwrap_or_else(|_| panic!("nothing from the driver within {timeout:?}"))
            .expect("connection open")
            .expect("valid frame")
            .expect("valid envelope");
        let msg = FromDriver::decode(&env.cmd, &env.data).expect("a driver message");
        (env, msg)
    }

    /// The next message, within 10 s.
    pub async fn recv(&mut self) -> (Envelope, FromDriver) {
        self.recv_within(Duration::from_secs(10)).await
    }

    /// The next pushed event (no refid), within `timeout`.
    pub async fn event(&mut self, timeout: Duration) -> FromDriver {
        let (env, msg) = self.recv_within(timeout).await;
        assert_eq!(env.refid, None, "an event, not a response: {msg:?}");
        msg
    }

    /// `DriverStart` → `DriverReady`, answered with `DriverReadyResponse` OK.
    pub async fn start(&mut self, config: Group) -> DriverReady {
        self.send(&DriverStart {
            driver_id: DriverId(1),
            config,
        })
        .await;
        let (_, msg) = self.recv().await;
        let FromDriver::DriverReady(ready) = msg else {
            panic!("expected DriverReady: {msg:?}")
        };
        if ready.outcome.is_ok() {
            self.send(&DriverReadyResponse {
                outcome: Outcome::ok("welcome"),
            })
            .await;
        }
        ready
    }

    /// `CardCommand` → the response's outcome and data.
    pub async fn command(
        &mut self,
        reader: ReaderId,
        slot: i32,
        apdu: &[u8],
    ) -> (Outcome, Vec<u8>) {
        let id = self
            .send(&CardCommand {
                reader_id: reader,
                slot,
                data: Bytes::copy_from_slice(apdu),
                target: None,
            })
            .await;
        let (env, msg) = self.recv().await;
        assert_eq!(env.refid, Some(id), "{msg:?}");
        let FromDriver::CardCommandResponse(r) = msg else {
            panic!("expected CardCommandResponse: {msg:?}")
        };
        (r.outcome, r.data.map(|d| d.to_vec()).unwrap_or_default())
    }

    /// A successful APDU's response.
    pub async fn apdu(&mut self, reader: ReaderId, apdu: &[u8]) -> Vec<u8> {
        let (outcome, data) = self.command(reader, 0, apdu).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        data
    }

    /// `ResetCard` → outcome and ATR.
    pub async fn reset(&mut self, reader: ReaderId) -> (Outcome, Vec<u8>) {
        let id = self
            .send(&ResetCard {
                reader_id: reader,
                slot: 0,
            })
            .await;
        let (env, msg) = self.recv().await;
        assert_eq!(env.refid, Some(id), "{msg:?}");
        let FromDriver::ResetCardResponse(r) = msg else {
            panic!("expected ResetCardResponse: {msg:?}")
        };
        (r.outcome, r.atr.map(|d| d.to_vec()).unwrap_or_default())
    }

    /// `StopDriver`, and the exit status within 10 s.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        self.send(&StopDriver {}).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the driver did not exit");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether a Debian package is installed.
pub fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Percentiles of durations in microseconds: (p50, p99, mean).
pub fn percentiles(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        us(samples[i.min(samples.len() - 1)])
    };
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
    (at(0.50), at(0.99), mean)
}
