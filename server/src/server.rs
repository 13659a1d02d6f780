//! The running server: the shared state, the accept loop, and shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chipcard_ipc::DriverId;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cardtypes::CardTypeRegistry;
use crate::config::{Config, DriverConfig};
use crate::error::Result;
use crate::registry::CardRegistry;
use crate::socket::{self, BoundSocket};

/// How long shutdown waits for drivers to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Timeouts and paths every task needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where `chipcard-driver-TYPE` programs are.
    pub driver_dir: PathBuf,
    /// How long a driver may take to send `DriverReady`.
    pub driver_start_timeout: Duration,
    /// How often drivers are pinged (zero: never).
    pub ping_interval: Duration,
    /// How long a ping may take.
    pub ping_timeout: Duration,
    /// How long a card command or reset may take.
    pub command_timeout: Duration,
}

/// What every task shares: settings, the registry behind its one mutex, and the
/// shutdown switch.
#[derive(Debug)]
pub struct Shared {
    /// Timeouts and paths.
    pub settings: Settings,
    state: Mutex<CardRegistry>,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
}

impl Shared {
    /// Locks the registry. Never hold the guard across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, CardRegistry> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Everything needed to start: the configuration and what was resolved around it.
pub struct Setup {
    /// The configuration (drivers and timeouts).
    pub config: Config,
    /// The client socket's path.
    pub socket: PathBuf,
    /// Where the driver programs are.
    pub driver_dir: PathBuf,
    /// The card definitions.
    pub cardtypes: CardTypeRegistry,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("config", &self.config)
            .field("socket", &self.socket)
            .field("driver_dir", &self.driver_dir)
            .finish_non_exhaustive()
    }
}

/// Accepts clients, one task each, until `stop` completes.
async fn accept_until(shared: &Arc<Shared>, socket: &BoundSocket, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(crate::client::serve(shared.clone(), stream));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// A server with its socket bound, ready to run.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    socket: BoundSocket,
    drivers: Vec<(DriverId, DriverConfig)>,
}

impl Server {
    /// Binds the socket and registers the configured drivers (they start in [`Server::run`]).
    /// Must be called within a tokio runtime.
    pub fn bind(setup: Setup) -> Result<Server> {
        let server_config = &setup.config.server;
        let socket = socket::bind(
            &setup.socket,
            server_config.socket_mode,
            server_config.socket_group.as_deref(),
        )?;
        let settings = Settings {
            driver_dir: setup.driver_dir,
            driver_start_timeout: server_config.driver_start_timeout,
            ping_interval: server_config.ping_interval,
            ping_timeout: server_config.ping_timeout,
            command_timeout: server_config.command_timeout,
        };
        let mut registry = CardRegistry::new(setup.cardtypes);
        let drivers = setup
            .config
            .drivers
            .into_iter()
            .map(|d| (registry.add_driver(&d), d))
            .collect();
        Ok(Server {
            shared: Arc::new(Shared {
                settings,
                state: Mutex::new(registry),
                shutdown: CancellationToken::new(),
            }),
            socket,
            drivers,
        })
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// Starts the drivers and serves clients until `stop` completes; then stops the drivers
    /// and removes the socket file.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<()> {
        let Server {
            shared,
            socket,
            drivers,
        } = self;
        let mut supervisors = JoinSet::new();
        let mut settling = Vec::new();
        for (id, config) in drivers {
            let (tx, rx) = tokio::sync::oneshot::channel();
            settling.push(rx);
            supervisors.spawn(crate::supervisor::supervise(
                shared.clone(),
                id,
                config,
                Some(tx),
            ));
        }
        tokio::pin!(stop);
        // Clients are accepted once every driver's first start has settled or failed, so the
        // first ListReaders already shows the configured readers and cards. Connections made
        // meanwhile wait in the socket's backlog.
        let settle_limit = shared.settings.driver_start_timeout + shared.settings.ping_timeout;
        let stopped_early = tokio::select! {
            _ = &mut stop => true,
            _ = tokio::time::timeout(settle_limit, futures::future::join_all(settling)) => false,
        };
        if !stopped_early {
            info!("accepting clients");
            accept_until(&shared, &socket, stop).await;
        }
        info!("shutting down");
        shared.shutdown.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while supervisors.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("drivers did not stop in time; killing them");
            supervisors.abort_all();
        }
        drop(socket);
        Ok(())
    }
}
