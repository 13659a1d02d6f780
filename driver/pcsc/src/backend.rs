//! The pcsc driver's [`Backend`]: commands go to cards through pcscd.

use std::sync::Arc;

use chipcard_driver::{Backend, CardIo, DriverError, EventSink};
use chipcard_ipc::message::DriverReader;
use chipcard_ipc::{Group, ReaderId};
use tracing::info;

use crate::config::PcscConfig;
use crate::connections::Connections;
use crate::monitor::{Monitor, MonitorHandle};
use crate::registry::Shared;

/// The environment variable libpcsclite reads (once per process) to find pcscd's socket.
pub const SOCKET_ENV: &str = "PCSCLITE_CSOCK_NAME";

/// PC/SC readers through pcscd.
///
/// The monitor thread owns one PC/SC context and follows readers and cards; the card
/// connections ([`Connections`]) have a context per reader, so that the driver library can
/// serve several readers at once ([`Backend::card_io`]) and a blocked
/// `SCardGetStatusChange` or a PIN pad's long `SCardTransmit` holds up no other reader
/// (pcsc-lite serialises the calls on one context).
#[derive(Default)]
pub struct PcscBackend {
    registry: Option<Shared>,
    monitor: Option<MonitorHandle>,
    connections: Option<Arc<Connections>>,
}

impl std::fmt::Debug for PcscBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscBackend")
            .field("started", &self.registry.is_some())
            .field("connections", &self.connections)
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
        self.connections = Some(Arc::new(Connections::new(registry.clone())));
        self.registry = Some(registry);
        self.monitor = Some(monitor);
        Ok(readers)
    }

    fn transmit(
        &mut self,
        reader: ReaderId,
        slot: i32,
        apdu: &[u8],
    ) -> Result<Vec<u8>, DriverError> {
        self.started()?.transmit(reader, slot, apdu)
    }

    fn reset(&mut self, reader: ReaderId, slot: i32) -> Result<Vec<u8>, DriverError> {
        self.started()?.reset(reader, slot)
    }

    fn card_io(&self) -> Option<Arc<dyn CardIo>> {
        let connections = self.connections.clone()?;
        Some(connections)
    }

    fn stop(&mut self) {
        if let Some(mut monitor) = self.monitor.take() {
            monitor.stop();
        }
        // Reset the cards on the way out: no verified PIN outlives the driver.
        if let Some(connections) = self.connections.take() {
            connections.close();
        }
        info!("stopped");
    }
}

impl PcscBackend {
    /// The card connections, once started.
    fn started(&self) -> Result<&Connections, DriverError> {
        self.connections
            .as_deref()
            .ok_or_else(|| DriverError::reader("the driver is not started"))
    }
}
