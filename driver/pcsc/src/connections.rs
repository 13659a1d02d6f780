//! The card connections: one per reader, each on a PC/SC context of its own, so that calls
//! on different readers run at the same time (pcsc-lite serialises the calls on one
//! context: a PIN pad waiting for a PIN in `SCardTransmit` would hold up every other reader
//! sharing its context). Calls on one reader take its lock, one at a time.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chipcard_driver::{CardIo, DriverError};
use chipcard_ipc::ReaderId;
use pcsc::{Card, Context, Disposition, Protocols, Scope, ShareMode};
use tracing::{debug, info, warn};

use crate::errors::{connection_lost, service_lost, to_driver_error};
use crate::features;
use crate::registry::Shared;

/// The protocols a card connection accepts.
fn protocols() -> Protocols {
    Protocols::T0 | Protocols::T1
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The card connections of every reader ([`CardIo`] for the driver library).
pub struct Connections {
    registry: Shared,
    lanes: Mutex<HashMap<ReaderId, Arc<Mutex<Lane>>>>,
}

/// One reader's context, connection and response buffer.
#[derive(Default)]
struct Lane {
    ctx: Option<Context>,
    conn: Option<Connection>,
    buffer: Vec<u8>,
}

/// An open connection to the card in a reader.
struct Connection {
    card: Card,
    /// The card (insertion) it was made for.
    generation: u64,
    name: String,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("readers", &lock(&self.lanes).len())
            .finish()
    }
}

impl Connections {
    /// No connection yet; cards and their readers are looked up in `registry`.
    pub fn new(registry: Shared) -> Connections {
        Connections {
            registry,
            lanes: Mutex::new(HashMap::new()),
        }
    }

    fn lane(&self, reader: ReaderId) -> Arc<Mutex<Lane>> {
        lock(&self.lanes).entry(reader).or_default().clone()
    }

    /// Resets the cards and closes every connection and context (no verified PIN outlives
    /// the driver). Waits for a call still running on a reader.
    pub fn close(&self) {
        let lanes: Vec<_> = lock(&self.lanes).drain().map(|(_, lane)| lane).collect();
        for lane in lanes {
            let mut lane = lock(&lane);
            if let Some(conn) = lane.conn.take() {
                if let Err((card, e)) = conn.card.disconnect(Disposition::ResetCard) {
                    debug!(reader = %conn.name, error = %e, "disconnect");
                    features::leave(card);
                }
            }
            lane.ctx = None;
        }
    }
}

impl CardIo for Connections {
    fn transmit(&self, reader: ReaderId, slot: i32, apdu: &[u8]) -> Result<Vec<u8>, DriverError> {
        let lane = self.lane(reader);
        let mut lane = lock(&lane);
        lane.transmit(&self.registry, reader, slot, apdu)
    }

    fn reset(&self, reader: ReaderId, slot: i32) -> Result<Vec<u8>, DriverError> {
        let lane = self.lane(reader);
        let mut lane = lock(&lane);
        lane.reset(&self.registry, reader, slot)
    }
}

impl Lane {
    fn transmit(
        &mut self,
        registry: &Shared,
        reader: ReaderId,
        slot: i32,
        apdu: &[u8],
    ) -> Result<Vec<u8>, DriverError> {
        if self.buffer.len() < pcsc::MAX_BUFFER_SIZE_EXTENDED {
            self.buffer = vec![0; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        }
        self.connect(registry, reader, slot)?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(DriverError::reader("no connection"));
        };
        let mut result = conn
            .card
            .transmit(apdu, &mut self.buffer)
            .map(<[u8]>::to_vec);
        if result == Err(pcsc::Error::ResetCard) {
            // Another PC/SC client reset the card: its state (a verified PIN) is gone; take
            // the card as it is now and send the command again.
            warn!(reader = %conn.name, "the card was reset by another PC/SC client");
            result = conn
                .card
                .reconnect(ShareMode::Shared, protocols(), Disposition::LeaveCard)
                .and_then(|()| {
                    conn.card
                        .transmit(apdu, &mut self.buffer)
                        .map(<[u8]>::to_vec)
                });
        }
        result.map_err(|e| self.failed(reader, e, "transmit"))
    }

    fn reset(
        &mut self,
        registry: &Shared,
        reader: ReaderId,
        slot: i32,
    ) -> Result<Vec<u8>, DriverError> {
        self.connect(registry, reader, slot)?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(DriverError::reader("no connection"));
        };
        debug!(reader = %conn.name, "reset");
        let result = conn
            .card
            .reconnect(ShareMode::Shared, protocols(), Disposition::ResetCard)
            .and_then(|()| conn.card.status2_owned())
            .map(|status| status.atr().to_vec());
        match result {
            Ok(atr) => {
                info!(reader = %conn.name, atr = %hex::encode_upper(&atr), "card reset");
                registry.lock().set_atr(reader, conn.generation, &atr);
                Ok(atr)
            }
            Err(e) => Err(self.failed(reader, e, "reset")),
        }
    }

    /// Makes sure there is a connection to the card in `reader` (the card the driver last
    /// reported there), connecting on first use.
    fn connect(
        &mut self,
        registry: &Shared,
        reader: ReaderId,
        slot: i32,
    ) -> Result<(), DriverError> {
        let looked_up = registry.lock().card(reader, slot);
        let (name, generation) = match looked_up {
            Ok(found) => found,
            Err(e) => {
                // The card or the reader is gone: so is any connection to it.
                if let Some(old) = self.conn.take() {
                    features::leave(old.card);
                }
                return Err(e);
            }
        };
        if let Some(conn) = &self.conn {
            if conn.generation == generation {
                return Ok(());
            }
        }
        // No connection, or one to an earlier card in this reader.
        if let Some(old) = self.conn.take() {
            features::leave(old.card);
        }
        let cname = CString::new(name.as_str())
            .map_err(|_| DriverError::reader(format!("reader name '{name}' holds a NUL")))?;
        let card = self
            .connect_card(&cname)
            .map_err(|e| to_driver_error(e, &name, "connect"))?;
        debug!(reader = %name, "connected to the card");
        self.conn = Some(Connection {
            card,
            generation,
            name,
        });
        Ok(())
    }

    /// `SCardConnect` shared, T=0 or T=1, on the reader's context; once more with a new
    /// context when pcscd was restarted since the last call.
    fn connect_card(&mut self, reader: &CString) -> Result<Card, pcsc::Error> {
        let mut retried = false;
        loop {
            let ctx = match &self.ctx {
                Some(ctx) => ctx.clone(),
                None => {
                    let ctx = Context::establish(Scope::User)?;
                    self.ctx = Some(ctx.clone());
                    ctx
                }
            };
            match ctx.connect(reader, ShareMode::Shared, protocols()) {
                Ok(card) => return Ok(card),
                Err(e) if service_lost(e) && !retried => {
                    debug!(error = %e, "the reader's context is stale; establishing a new one");
                    self.ctx = None;
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The error for a failed call; forgets a connection (or context) that is no longer
    /// usable.
    fn failed(&mut self, reader: ReaderId, e: pcsc::Error, what: &str) -> DriverError {
        let name = self
            .conn
            .as_ref()
            .map_or_else(|| format!("{reader}"), |c| c.name.clone());
        if connection_lost(e) {
            if let Some(conn) = self.conn.take() {
                features::leave(conn.card);
            }
        }
        if service_lost(e) {
            self.ctx = None;
        }
        let error = to_driver_error(e, &name, what);
        debug!(reader = %name, error = %error, "{what} failed");
        error
    }
}
