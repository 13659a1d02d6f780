//! The driver half of the protocol as chipcardd speaks it over a [`Link`]: start a driver,
//! send it card commands and resets.

use std::process::ExitStatus;

use bytes::Bytes;
use chipcard_ipc::message::{
    CardCommand, DriverReady, DriverReadyResponse, DriverStart, FromDriver, ResetCard, StopDriver,
};
use chipcard_ipc::{DriverId, Group, Outcome, ReaderId};

use crate::child::LinkedChild;
use crate::link::{Link, ANSWER_TIMEOUT};

/// The driver id chipcardd gives the drivers the tests start ([`crate::child::child_command`]
/// passes it as `--driver-id`).
pub const TEST_DRIVER_ID: DriverId = DriverId(1);

impl Link<FromDriver> {
    /// `DriverStart` (driver id [`TEST_DRIVER_ID`]) → the `DriverReady` push, answered with a
    /// `DriverReadyResponse` OK (after which a driver that failed to start exits 1).
    pub async fn start_driver(&mut self, config: Group) -> DriverReady {
        self.send(&DriverStart {
            driver_id: TEST_DRIVER_ID,
            config,
        })
        .await;
        let (env, msg) = self.recv().await;
        assert_eq!(env.refid, None, "DriverReady is a push: {msg:?}");
        let FromDriver::DriverReady(ready) = msg else {
            panic!("expected DriverReady: {msg:?}")
        };
        self.send(&DriverReadyResponse {
            outcome: Outcome::ok("welcome"),
        })
        .await;
        ready
    }

    /// `CardCommand` with `apdu` to `reader`'s `slot` → the response's outcome and data.
    pub async fn card_command(
        &mut self,
        reader: ReaderId,
        slot: i32,
        apdu: &[u8],
    ) -> (Outcome, Vec<u8>) {
        let (_, msg) = self.request(&card_command(reader, slot, apdu)).await;
        let FromDriver::CardCommandResponse(r) = msg else {
            panic!("expected CardCommandResponse: {msg:?}")
        };
        (r.outcome, r.data.map(|d| d.to_vec()).unwrap_or_default())
    }

    /// A successful APDU's response; an error outcome fails the test.
    pub async fn apdu(&mut self, reader: ReaderId, slot: i32, apdu: &[u8]) -> Vec<u8> {
        let (outcome, data) = self.card_command(reader, slot, apdu).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        data
    }

    /// `ResetCard` of `reader`'s `slot` → the response's outcome and ATR.
    pub async fn reset_card(&mut self, reader: ReaderId, slot: i32) -> (Outcome, Vec<u8>) {
        let (_, msg) = self
            .request(&ResetCard {
                reader_id: reader,
                slot,
            })
            .await;
        let FromDriver::ResetCardResponse(r) = msg else {
            panic!("expected ResetCardResponse: {msg:?}")
        };
        (r.outcome, r.atr.map(|d| d.to_vec()).unwrap_or_default())
    }
}

impl LinkedChild<FromDriver> {
    /// `StopDriver`, and the exit status within [`ANSWER_TIMEOUT`].
    pub async fn stop(&mut self) -> ExitStatus {
        self.send(&StopDriver {}).await;
        self.wait_exit(ANSWER_TIMEOUT)
    }
}

/// A `CardCommand` carrying `apdu` to `reader`'s `slot`.
pub fn card_command(reader: ReaderId, slot: i32, apdu: &[u8]) -> CardCommand {
    CardCommand {
        reader_id: reader,
        slot,
        data: Bytes::copy_from_slice(apdu),
        target: None,
    }
}
