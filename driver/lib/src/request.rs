//! A card request (`CardCommand`, `ResetCard`): the reader it is for, the backend call
//! that serves it and its answer, the same whichever thread serves it.

use bytes::Bytes;
use chipcard_ipc::message::{CardCommandResponse, ResetCardResponse, ToDriver};
use chipcard_ipc::{Outcome, ReaderId};
use tracing::{debug, trace};

use crate::backend::{Backend, CardIo};
use crate::error::DriverError;

/// A request for a card (or its reader).
#[derive(Debug, Clone)]
pub(crate) struct CardRequest {
    op: Op,
    reader: ReaderId,
    slot: i32,
    /// The command APDU (empty for a reset).
    apdu: Bytes,
}

/// What a [`CardRequest`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `CardCommand` for the card.
    Transmit,
    /// `CardCommand` with `target="reader"`.
    ReaderCommand,
    /// `ResetCard`.
    Reset,
}

/// The answer to a [`CardRequest`].
#[derive(Debug)]
pub(crate) enum CardAnswer {
    Command(CardCommandResponse),
    Reset(ResetCardResponse),
}

impl CardRequest {
    /// The card request a server message is, if it is one.
    pub(crate) fn from_message(message: &ToDriver) -> Option<CardRequest> {
        match message {
            ToDriver::CardCommand(command) => {
                let to_reader = command
                    .target
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case("reader"));
                Some(CardRequest {
                    op: if to_reader {
                        Op::ReaderCommand
                    } else {
                        Op::Transmit
                    },
                    reader: command.reader_id,
                    slot: command.slot,
                    apdu: command.data.clone(),
                })
            }
            ToDriver::ResetCard(reset) => Some(CardRequest {
                op: Op::Reset,
                reader: reset.reader_id,
                slot: reset.slot,
                apdu: Bytes::new(),
            }),
            _ => None,
        }
    }

    /// The reader the request is for.
    pub(crate) fn reader(&self) -> ReaderId {
        self.reader
    }

    /// Serves the request with the backend itself.
    pub(crate) fn call_backend<B: Backend>(&self, backend: &mut B) -> Result<Vec<u8>, DriverError> {
        let (reader, slot, apdu) = self.log_command();
        match self.op {
            Op::Transmit => backend.transmit(reader, slot, apdu),
            Op::ReaderCommand => backend.reader_command(reader, slot, apdu),
            Op::Reset => backend.reset(reader, slot),
        }
    }

    /// Serves the request with the backend's concurrent card I/O.
    pub(crate) fn call_io(&self, io: &dyn CardIo) -> Result<Vec<u8>, DriverError> {
        let (reader, slot, apdu) = self.log_command();
        match self.op {
            Op::Transmit => io.transmit(reader, slot, apdu),
            Op::ReaderCommand => io.reader_command(reader, slot, apdu),
            Op::Reset => io.reset(reader, slot),
        }
    }

    /// The response to the request, from the backend call's result.
    pub(crate) fn answer(&self, result: Result<Vec<u8>, DriverError>) -> CardAnswer {
        let (reader, slot) = (self.reader, self.slot);
        match (self.op, result) {
            (Op::Reset, Ok(atr)) => CardAnswer::Reset(ResetCardResponse {
                outcome: Outcome::ok("ok"),
                atr: Some(Bytes::from(atr)),
            }),
            (Op::Reset, Err(e)) => {
                debug!(%reader, slot, error = %e, "reset failed");
                CardAnswer::Reset(ResetCardResponse {
                    outcome: Outcome::failed(e.code, e.text),
                    atr: None,
                })
            }
            (_, Ok(rapdu)) => {
                trace!(%reader, slot, rapdu = %hex::encode_upper(&rapdu), "R-APDU");
                CardAnswer::Command(CardCommandResponse {
                    outcome: Outcome::ok("ok"),
                    data: Some(Bytes::from(rapdu)),
                })
            }
            (_, Err(e)) => {
                debug!(%reader, slot, error = %e, "transmit failed");
                CardAnswer::Command(CardCommandResponse {
                    outcome: Outcome::failed(e.code, e.text),
                    data: None,
                })
            }
        }
    }

    /// Logs a command APDU; returns the call's arguments.
    fn log_command(&self) -> (ReaderId, i32, &[u8]) {
        if self.op != Op::Reset {
            let (reader, slot) = (self.reader, self.slot);
            trace!(%reader, slot, apdu = %hex::encode_upper(redact(&self.apdu)), "C-APDU");
        }
        (self.reader, self.slot, &self.apdu)
    }
}

/// The part of a command APDU that may be logged: VERIFY and CHANGE REFERENCE DATA
/// (INS 20, 24, 2C) carry PINs, so only their header is shown.
fn redact(apdu: &[u8]) -> &[u8] {
    match apdu.get(1) {
        Some(0x20 | 0x21 | 0x24 | 0x2C) => &apdu[..apdu.len().min(4)],
        _ => apdu,
    }
}
