//! The pcsc driver's [`Backend`]: commands go to cards through pcscd.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::Arc;

use chipcard_driver::{Backend, DriverError, EventSink};
use chipcard_ipc::message::DriverReader;
use chipcard_ipc::{Group, ReaderId};
use pcsc::{Card, Context, Disposition, Protocols, Scope, ShareMode};
use tracing::{debug, info, warn};

use crate::config::PcscConfig;
use crate::errors::{connection_lost, service_lost, to_driver_error};
use crate::features;
use crate::monitor::{Monitor, MonitorHandle};
use crate::registry::Shared;

/// The environment variable libpcsclite reads (once per process) to find pcscd's socket.
pub const SOCKET_ENV: &str = "PCSCLITE_CSOCK_NAME";

/// The protocols a card connection accepts.
fn protocols() -> Protocols {
    Protocols::T0 | Protocols::T1
}

/// An open connection to the card in a reader.
struct Connection {
    card: Card,
    /// The card (insertion) it was made for.
    generation: u64,
    name: String,
}

/// PC/SC readers through pcscd.
///
/// The monitor thread owns one PC/SC context and follows readers and cards; this backend
/// owns another one, on the backend thread, for the card connections (pcsc-lite serialises
/// calls on one context, so a blocked `SCardGetStatusChange` must not share it).
#[derive(Default)]
pub struct PcscBackend {
    registry: Option<Shared>,
    monitor: Option<MonitorHandle>,
    ctx: Option<Context>,
    connections: HashMap<ReaderId, Connection>,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for PcscBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscBackend")
            .field("started", &self.registry.is_some())
            .field("connections", &self.connections.len())
            .finish()
    }
}

impl Backend for PcscBackend {
    fn start(
        &mut self,
        config: &Group,
        events: EventSink,
    ) -> Result<Vec<DriverReader>, DriverError> {
        let config = PcscConfig::from_group(config)
            .map_err(|e| DriverError::invalid(format!("configuration: {e}")))?;
        if let Some(socket) = &config.pcscd_socket {
            // libpcsclite reads it when the first context is established and keeps it for
            // the life of the process; no PC/SC call has been made yet. The only other
            // thread is the driver library's watcher, which reads no environment variables,
            // so setting it here does not race a C getenv.
            std::env::set_var(SOCKET_ENV, socket);
            info!(socket = %socket.display(), "using pcscd at this socket");
        }
        let registry = Shared::new(events);
        let (readers, monitor) = Monitor::start(Arc::new(config), registry.clone())
            .map_err(|e| DriverError::reader(format!("starting the monitor thread: {e}")))?;
        self.registry = Some(registry);
        self.monitor = Some(monitor);
        self.buffer = vec![0; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        Ok(readers)
    }

    fn transmit(
        &mut self,
        reader: ReaderId,
        slot: i32,
        apdu: &[u8],
    ) -> Result<Vec<u8>, DriverError> {
        if self.buffer.len() < pcsc::MAX_BUFFER_SIZE_EXTENDED {
            self.buffer = vec![0; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        }
        self.connect(reader, slot)?;
        let Some(conn) = self.connections.get_mut(&reader) else {
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

    fn reset(&mut self, reader: ReaderId, slot: i32) -> Result<Vec<u8>, DriverError> {
        self.connect(reader, slot)?;
        let Some(conn) = self.connections.get_mut(&reader) else {
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
                let generation = conn.generation;
                info!(reader = %conn.name, atr = %hex::encode_upper(&atr), "card reset");
                if let Some(registry) = &self.registry {
                    registry.lock().set_atr(reader, generation, &atr);
                }
                Ok(atr)
            }
            Err(e) => Err(self.failed(reader, e, "reset")),
        }
    }

    fn stop(&mut self) {
        if let Some(mut monitor) = self.monitor.take() {
            monitor.stop();
        }
        // Reset the cards on the way out: no verified PIN outlives the driver.
        for (_, conn) in self.connections.drain() {
            if let Err((card, e)) = conn.card.disconnect(Disposition::ResetCard) {
                debug!(reader = %conn.name, error = %e, "disconnect");
                features::leave(card);
            }
        }
        self.ctx = None;
        info!("stopped");
    }
}

impl PcscBackend {
    /// Makes sure there is a connection to the card in `reader` (the card the driver last
    /// reported there), connecting on first use.
    fn connect(&mut self, reader: ReaderId, slot: i32) -> Result<(), DriverError> {
        let registry = self
            .registry
            .as_ref()
            .ok_or_else(|| DriverError::reader("the driver is not started"))?;
        let looked_up = registry.lock().card(reader, slot);
        let (name, generation) = match looked_up {
            Ok(found) => found,
            Err(e) => {
                // The card or the reader is gone: so is any connection to it.
                if let Some(old) = self.connections.remove(&reader) {
                    features::leave(old.card);
                }
                return Err(e);
            }
        };
        if let Some(conn) = self.connections.get(&reader) {
            if conn.generation == generation {
                return Ok(());
            }
            // A connection to an earlier card in this reader.
            if let Some(old) = self.connections.remove(&reader) {
                features::leave(old.card);
            }
        }
        let cname = CString::new(name.as_str())
            .map_err(|_| DriverError::reader(format!("reader name '{name}' holds a NUL")))?;
        let card = self
            .connect_card(&cname)
            .map_err(|e| to_driver_error(e, &name, "connect"))?;
        debug!(reader = %name, "connected to the card");
        self.connections.insert(
            reader,
            Connection {
                card,
                generation,
                name,
            },
        );
        Ok(())
    }

    /// `SCardConnect` shared, T=0 or T=1, on the backend's context; once more with a new
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
                    debug!(error = %e, "the backend's context is stale; establishing a new one");
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
            .connections
            .get(&reader)
            .map_or_else(|| format!("{reader}"), |c| c.name.clone());
        if connection_lost(e) {
            if let Some(conn) = self.connections.remove(&reader) {
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
