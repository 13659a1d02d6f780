//! The running server: the shared state, the accept loop, and shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chipcard_ipc::DriverId;
use tokio::sync::Semaphore;
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
    /// The first restart delay of a driver.
    pub restart_backoff: Duration,
    /// The longest restart delay.
    pub restart_backoff_max: Duration,
    /// Failed starts in a row after which a driver is given up.
    pub restart_max_failures: u32,
    /// Requests of one client in progress at once.
    pub max_requests_per_client: usize,
    /// How long a client may stall mid-frame or leave a full queue unread.
    pub client_idle_timeout: Duration,
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
    /// Shared state from settings and a registry (the server builds it in
    /// [`Server::bind`]; tests and fuzz targets build their own).
    pub fn new(settings: Settings, registry: CardRegistry) -> Shared {
        Shared {
            settings,
            state: Mutex::new(registry),
            shutdown: CancellationToken::new(),
        }
    }

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

/// Accepts clients, one task each, until `stop` completes. Over `maxClients` a new
/// connection is answered `Error` (code 1, "too many clients") and closed.
async fn accept_until(
    shared: &Arc<Shared>,
    socket: &BoundSocket,
    max_clients: usize,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let slots = Arc::new(Semaphore::new(max_clients));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        tokio::spawn(crate::client::serve(shared.clone(), stream, slot));
                    }
                    Err(_) => {
                        warn!(max_clients, "too many clients; refusing a connection");
                        tokio::spawn(crate::client::refuse(stream, "too many clients"));
                    }
                },
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Reloading the configuration on request (SIGHUP): `requests` says when, `load` reads it.
pub struct Reload {
    /// One message per reload request.
    pub requests: tokio::sync::mpsc::Receiver<()>,
    /// Reads the configuration anew.
    pub load: Box<dyn Fn() -> Result<Config> + Send>,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload").finish_non_exhaustive()
    }
}

/// A running driver supervisor.
struct Running {
    id: DriverId,
    config: DriverConfig,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

fn start_driver(
    shared: &Arc<Shared>,
    id: DriverId,
    config: DriverConfig,
    settled: crate::driver::Settled,
) -> Running {
    let stop = shared.shutdown.child_token();
    let handle = tokio::spawn(crate::supervisor::supervise(
        shared.clone(),
        id,
        config.clone(),
        settled,
        stop.clone(),
    ));
    Running {
        id,
        config,
        stop,
        handle,
    }
}

async fn stop_driver(running: Running) {
    running.stop.cancel();
    let mut handle = running.handle;
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut handle)
        .await
        .is_err()
    {
        warn!(driver = %running.id, "driver did not stop in time; abandoning it");
        handle.abort();
    }
}

/// Applies a new configuration's drivers: drivers whose group is unchanged keep running,
/// changed ones are restarted (same id), removed ones stopped and forgotten, new ones
/// started. Settings in `server {}` and `cardDir` need a restart.
async fn apply_reload(shared: &Arc<Shared>, running: &mut Vec<Running>, config: Config) {
    let old = std::mem::take(running);
    let mut kept_names = Vec::new();
    for r in old {
        let new = config
            .drivers
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(&r.config.name));
        match new {
            Some(d) if *d == r.config => {
                kept_names.push(d.name.clone());
                running.push(r);
            }
            Some(d) => {
                info!(driver = %r.id, name = %d.name, "driver configuration changed; restarting it");
                let id = r.id;
                stop_driver(r).await;
                shared.lock().update_driver(id, d);
                kept_names.push(d.name.clone());
                running.push(start_driver(shared, id, d.clone(), None));
            }
            None => {
                info!(driver = %r.id, name = %r.config.name, "driver removed from the configuration");
                let id = r.id;
                stop_driver(r).await;
                shared.lock().remove_driver(id);
            }
        }
    }
    for d in &config.drivers {
        if !kept_names.iter().any(|n| n.eq_ignore_ascii_case(&d.name)) {
            let id = shared.lock().add_driver(d);
            info!(driver = %id, name = %d.name, "driver added to the configuration");
            running.push(start_driver(shared, id, d.clone(), None));
        }
    }
}

/// Owns the running drivers: applies reloads until shutdown, then hands them back.
async fn manage_drivers(
    shared: Arc<Shared>,
    mut running: Vec<Running>,
    reload: Option<Reload>,
) -> Vec<Running> {
    let Some(mut reload) = reload else {
        shared.shutdown.cancelled().await;
        return running;
    };
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return running,
            request = reload.requests.recv() => {
                if request.is_none() {
                    shared.shutdown.cancelled().await;
                    return running;
                }
                match (reload.load)() {
                    Ok(config) => {
                        info!("reloading the configuration");
                        apply_reload(&shared, &mut running, config).await;
                        info!("configuration reloaded");
                    }
                    Err(e) => warn!(error = %e, "configuration not reloaded"),
                }
                if let Err(e) = crate::systemd::notify("READY=1") {
                    warn!(error = %e, "cannot notify the service manager");
                }
            }
        }
    }
}

/// A server with its socket bound, ready to run.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    socket: BoundSocket,
    drivers: Vec<(DriverId, DriverConfig)>,
    max_clients: usize,
}

impl Server {
    /// Binds the socket and registers the configured drivers (they start in [`Server::run`]).
    /// Must be called within a tokio runtime.
    pub fn bind(setup: Setup) -> Result<Server> {
        Server::bind_with(setup, None)
    }

    /// [`Server::bind`], or with `activated` (a listening socket passed by socket
    /// activation) serving on that instead of binding `setup.socket`.
    pub fn bind_with(
        setup: Setup,
        activated: Option<std::os::unix::net::UnixListener>,
    ) -> Result<Server> {
        let server_config = &setup.config.server;
        let socket = match activated {
            Some(listener) => socket::adopt(listener)?,
            None => socket::bind(
                &setup.socket,
                server_config.socket_mode,
                server_config.socket_group.as_deref(),
            )?,
        };
        let settings = Settings {
            driver_dir: setup.driver_dir,
            driver_start_timeout: server_config.driver_start_timeout,
            ping_interval: server_config.ping_interval,
            ping_timeout: server_config.ping_timeout,
            command_timeout: server_config.command_timeout,
            restart_backoff: server_config.restart_backoff,
            restart_backoff_max: server_config.restart_backoff_max,
            restart_max_failures: server_config.restart_max_failures,
            max_requests_per_client: server_config.max_requests_per_client,
            client_idle_timeout: server_config.client_idle_timeout,
        };
        let mut registry = CardRegistry::new(setup.cardtypes);
        let drivers = setup
            .config
            .drivers
            .into_iter()
            .map(|d| (registry.add_driver(&d), d))
            .collect();
        Ok(Server {
            shared: Arc::new(Shared::new(settings, registry)),
            socket,
            drivers,
            max_clients: server_config.max_clients,
        })
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// Starts the drivers and serves clients until `stop` completes; then stops the drivers
    /// and removes the socket file.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<()> {
        self.run_with(stop, None, None).await
    }

    /// [`Server::run`], reloading the configuration when `reload` asks, and calling `ready`
    /// once the drivers have settled and clients are accepted.
    pub async fn run_with(
        self,
        stop: impl Future<Output = ()>,
        reload: Option<Reload>,
        ready: Option<Box<dyn FnOnce() + Send>>,
    ) -> Result<()> {
        let Server {
            shared,
            socket,
            drivers,
            max_clients,
        } = self;
        let mut running = Vec::new();
        let mut settling = Vec::new();
        for (id, config) in drivers {
            let (tx, rx) = tokio::sync::oneshot::channel();
            settling.push(rx);
            running.push(start_driver(&shared, id, config, Some(tx)));
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
        let manager = tokio::spawn(manage_drivers(shared.clone(), running, reload));
        if !stopped_early {
            info!("accepting clients");
            if let Some(ready) = ready {
                ready();
            }
            accept_until(&shared, &socket, max_clients, stop).await;
        }
        info!("shutting down");
        shared.shutdown.cancel();
        let running = manager.await.unwrap_or_default();
        let mut supervisors: JoinSet<()> = JoinSet::new();
        for r in running {
            supervisors.spawn(async move {
                let _ = r.handle.await;
            });
        }
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
