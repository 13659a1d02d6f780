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
pub(crate) enum CardRequest {
    /// `CardCommand`: an APDU for the card, or for the reader with `target="reader"`.
    Command {
        reader: ReaderId,
        slot: i32,
        to_reader: bool,
        apdu: Bytes,
    },
    /// `ResetCard`.
    Reset { reader: ReaderId, slot: i32 },
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
            ToDriver::CardCommand(command) => Some(CardRequest::Command {
                reader: command.reader_id,
                slot: command.slot,
                to_reader: command
                    .target
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case("reader")),
                apdu: command.data.clone(),
            }),
            ToDriver::ResetCard(reset) => Some(CardRequest::Reset {
                reader: reset.reader_id,
                slot: reset.slot,
            }),
            _ => None,
        }
    }

    /// The reader the request is for.
    pub(crate) fn reader(&self) -> ReaderId {
        match self {
            CardRequest::Command { reader, .. } | CardRequest::Reset { reader, .. } => *reader,
        }
    }

    /// Serves the request with the backend itself.
    pub(crate) fn call_backend<B: Backend>(&self, backend: &mut B) -> Result<Vec<u8>, DriverError> {
        self.log_command();
        match self {
            CardRequest::Command {
                reader,
                slot,
                to_reader: true,
                apdu,
            } => backend.reader_command(*reader, *slot, apdu),
            CardRequest::Command {
                reader, slot, apdu, ..
            } => backend.transmit(*reader, *slot, apdu),
            CardRequest::Reset { reader, slot } => backend.reset(*reader, *slot),
        }
    }

    /// Serves the request with the backend's concurrent card I/O.
    pub(crate) fn call_io(&self, io: &dyn CardIo) -> Result<Vec<u8>, DriverError> {
        self.log_command();
        match self {
            CardRequest::Command {
                reader,
                slot,
                to_reader: true,
                apdu,
            } => io.reader_command(*reader, *slot, apdu),
            CardRequest::Command {
                reader, slot, apdu, ..
            } => io.transmit(*reader, *slot, apdu),
            CardRequest::Reset { reader, slot } => io.reset(*reader, *slot),
        }
    }

    /// The response to the request, from the backend call's result.
    pub(crate) fn answer(&self, result: Result<Vec<u8>, DriverError>) -> CardAnswer {
        match (self, result) {
            (CardRequest::Command { reader, slot, .. }, Ok(rapdu)) => {
                trace!(%reader, slot, rapdu = %hex::encode_upper(&rapdu), "R-APDU");
                CardAnswer::Command(CardCommandResponse {
                    outcome: Outcome::ok("ok"),
                    data: Some(Bytes::from(rapdu)),
                })
            }
            (CardRequest::Command { reader, slot, .. }, Err(e)) => {
                debug!(%reader, slot, error = %e, "transmit failed");
                CardAnswer::Command(CardCommandResponse {
                    outcome: Outcome::failed(e.code, e.text),
                    data: None,
                })
            }
            (CardRequest::Reset { .. }, Ok(atr)) => CardAnswer::Reset(ResetCardResponse {
                outcome: Outcome::ok("ok"),
                atr: Some(Bytes::from(atr)),
            }),
            (CardRequest::Reset { reader, slot }, Err(e)) => {
                debug!(%reader, slot, error = %e, "reset failed");
                CardAnswer::Reset(ResetCardResponse {
                    outcome: Outcome::failed(e.code, e.text),
                    atr: None,
                })
            }
        }
    }

    fn log_command(&self) {
        if let CardRequest::Command {
            reader, slot, apdu, ..
        } = self
        {
            trace!(%reader, slot, apdu = %hex::encode_upper(redact(apdu)), "C-APDU");
        }
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
