//! The running server: the shared state, the accept loop, and shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chipcard_ipc::{DriverId, ServiceId};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cardtypes::CardTypeRegistry;
use crate::config::{Config, DriverConfig, ServiceConfig};
use crate::error::Result;
use crate::registry::CardRegistry;
use crate::socket::{self, BoundSocket};

/// How long shutdown waits for drivers to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Timeouts and paths every task needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where `chipcard-driver-TYPE` and `chipcard-service-TYPE` programs are.
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
    /// Failures in a row (failed starts, runs shorter than `restart_backoff_max`) after
    /// which a driver is given up.
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
/// connection is answered `Error` (code 1, "too many clients") and closed; a connection
/// that sends no `ClientReady` within `clientReadyTimeout` is closed (see
/// [`crate::client`]).
async fn accept_until(
    shared: &Arc<Shared>,
    socket: &BoundSocket,
    limits: ClientLimits,
    stop: impl Future<Output = ()>,
) {
    let ClientLimits {
        max_clients,
        ready_timeout,
    } = limits;
    tokio::pin!(stop);
    let slots = Arc::new(Semaphore::new(max_clients));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        tokio::spawn(crate::client::serve(
                            shared.clone(),
                            stream,
                            slot,
                            ready_timeout,
                        ));
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

/// A driver or service as the configuration has it, and how the server runs one.
trait Unit: Clone + PartialEq + Send + 'static {
    /// Its id (the same across restarts and reloads).
    type Id: Copy + std::fmt::Display + Send + 'static;
    /// `driver` or `service`, for logs.
    const KIND: &'static str;
    /// Its name in the configuration.
    fn name(&self) -> &str;
    /// The configured units of this kind.
    fn configured(config: &Config) -> &[Self];
    /// Adds it to the registry.
    fn register(&self, reg: &mut CardRegistry) -> Self::Id;
    /// Its configuration changed.
    fn update(&self, reg: &mut CardRegistry, id: Self::Id);
    /// It left the configuration (it is stopped).
    fn forget(reg: &mut CardRegistry, id: Self::Id);
    /// Runs its supervisor until `stop`.
    fn supervise(
        shared: Arc<Shared>,
        id: Self::Id,
        config: Self,
        settled: crate::driver::Settled,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()>;
}

impl Unit for DriverConfig {
    type Id = DriverId;
    const KIND: &'static str = "driver";
    fn name(&self) -> &str {
        &self.name
    }
    fn configured(config: &Config) -> &[Self] {
        &config.drivers
    }
    fn register(&self, reg: &mut CardRegistry) -> DriverId {
        reg.add_driver(self)
    }
    fn update(&self, reg: &mut CardRegistry, id: DriverId) {
        reg.update_driver(id, self);
    }
    fn forget(reg: &mut CardRegistry, id: DriverId) {
        reg.remove_driver(id);
    }
    fn supervise(
        shared: Arc<Shared>,
        id: DriverId,
        config: Self,
        settled: crate::driver::Settled,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::supervisor::supervise(
            shared, id, config, settled, stop,
        ))
    }
}

impl Unit for ServiceConfig {
    type Id = ServiceId;
    const KIND: &'static str = "service";
    fn name(&self) -> &str {
        &self.name
    }
    fn configured(config: &Config) -> &[Self] {
        &config.services
    }
    fn register(&self, reg: &mut CardRegistry) -> ServiceId {
        reg.services_mut().add(self)
    }
    fn update(&self, reg: &mut CardRegistry, id: ServiceId) {
        reg.services_mut().update(id, self);
    }
    fn forget(reg: &mut CardRegistry, id: ServiceId) {
        reg.services_mut().remove(id);
    }
    fn supervise(
        shared: Arc<Shared>,
        id: ServiceId,
        config: Self,
        settled: crate::driver::Settled,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::service::supervise(shared, id, config, settled, stop))
    }
}

/// A running driver or service supervisor.
struct Running<U: Unit> {
    id: U::Id,
    config: U,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

fn start_unit<U: Unit>(
    shared: &Arc<Shared>,
    id: U::Id,
    config: U,
    settled: crate::driver::Settled,
) -> Running<U> {
    let stop = shared.shutdown.child_token();
    let handle = U::supervise(shared.clone(), id, config.clone(), settled, stop.clone());
    Running {
        id,
        config,
        stop,
        handle,
    }
}

async fn stop_unit<U: Unit>(running: Running<U>) {
    running.stop.cancel();
    let mut handle = running.handle;
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut handle)
        .await
        .is_err()
    {
        warn!(id = %running.id, "{} did not stop in time; abandoning it", U::KIND);
        handle.abort();
    }
}

/// Applies a new configuration's drivers or services: those whose group is unchanged keep
/// running, changed ones are restarted (same id), removed ones stopped and forgotten, new
/// ones started. Settings in `server {}` and `cardDir` need a restart.
async fn apply_reload<U: Unit>(
    shared: &Arc<Shared>,
    running: &mut Vec<Running<U>>,
    config: &Config,
) {
    let configured = U::configured(config);
    let old = std::mem::take(running);
    let mut kept_names = Vec::new();
    for r in old {
        let new = configured
            .iter()
            .find(|d| d.name().eq_ignore_ascii_case(r.config.name()));
        match new {
            Some(d) if *d == r.config => {
                kept_names.push(d.name().to_owned());
                running.push(r);
            }
            Some(d) => {
                info!(id = %r.id, name = %d.name(), "{} configuration changed; restarting it", U::KIND);
                let id = r.id;
                stop_unit(r).await;
                d.update(&mut shared.lock(), id);
                kept_names.push(d.name().to_owned());
                running.push(start_unit(shared, id, d.clone(), None));
            }
            None => {
                info!(id = %r.id, name = %r.config.name(), "{} removed from the configuration", U::KIND);
                let id = r.id;
                stop_unit(r).await;
                U::forget(&mut shared.lock(), id);
            }
        }
    }
    for d in configured {
        if !kept_names.iter().any(|n| n.eq_ignore_ascii_case(d.name())) {
            let id = d.register(&mut shared.lock());
            info!(id = %id, name = %d.name(), "{} added to the configuration", U::KIND);
            running.push(start_unit(shared, id, d.clone(), None));
        }
    }
}

/// What runs: the drivers' and the services' supervisors.
struct Units {
    drivers: Vec<Running<DriverConfig>>,
    services: Vec<Running<ServiceConfig>>,
}

/// Owns the running drivers and services: applies reloads until shutdown, then hands
/// them back.
async fn manage_units(shared: Arc<Shared>, mut units: Units, reload: Option<Reload>) -> Units {
    let Some(mut reload) = reload else {
        shared.shutdown.cancelled().await;
        return units;
    };
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return units,
            request = reload.requests.recv() => {
                if request.is_none() {
                    shared.shutdown.cancelled().await;
                    return units;
                }
                match (reload.load)() {
                    Ok(config) => {
                        info!("reloading the configuration");
                        apply_reload(&shared, &mut units.drivers, &config).await;
                        apply_reload(&shared, &mut units.services, &config).await;
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
    services: Vec<(ServiceId, ServiceConfig)>,
    clients: ClientLimits,
}

/// The limits on client connections that the accept loop applies.
#[derive(Debug, Clone, Copy)]
struct ClientLimits {
    /// `maxClients`.
    max_clients: usize,
    /// `clientReadyTimeout` (zero: none).
    ready_timeout: Duration,
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
        let services = setup
            .config
            .services
            .into_iter()
            .map(|s| (registry.services_mut().add(&s), s))
            .collect();
        Ok(Server {
            shared: Arc::new(Shared::new(settings, registry)),
            socket,
            drivers,
            services,
            clients: ClientLimits {
                max_clients: server_config.max_clients,
                ready_timeout: server_config.client_ready_timeout,
            },
        })
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// Starts the drivers and services and serves clients until `stop` completes; then stops
    /// them and removes the socket file.
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
            services,
            clients,
        } = self;
        let mut units = Units {
            drivers: Vec::new(),
            services: Vec::new(),
        };
        let mut settling = Vec::new();
        for (id, config) in drivers {
            let (tx, rx) = tokio::sync::oneshot::channel();
            settling.push(rx);
            units
                .drivers
                .push(start_unit(&shared, id, config, Some(tx)));
        }
        for (id, config) in services {
            let (tx, rx) = tokio::sync::oneshot::channel();
            settling.push(rx);
            units
                .services
                .push(start_unit(&shared, id, config, Some(tx)));
        }
        tokio::pin!(stop);
        // Clients are accepted once every driver's (and autoload service's) first start has
        // settled or failed, so the first ListReaders already shows the configured readers
        // and cards. Connections made meanwhile wait in the socket's backlog.
        let settle_limit = shared.settings.driver_start_timeout + shared.settings.ping_timeout;
        let stopped_early = tokio::select! {
            _ = &mut stop => true,
            _ = tokio::time::timeout(settle_limit, futures::future::join_all(settling)) => false,
        };
        let manager = tokio::spawn(manage_units(shared.clone(), units, reload));
        if !stopped_early {
            info!("accepting clients");
            if let Some(ready) = ready {
                ready();
            }
            accept_until(&shared, &socket, clients, stop).await;
        }
        info!("shutting down");
        shared.shutdown.cancel();
        let mut supervisors: JoinSet<()> = JoinSet::new();
        if let Ok(units) = manager.await {
            let handles = units
                .drivers
                .into_iter()
                .map(|r| r.handle)
                .chain(units.services.into_iter().map(|r| r.handle));
            for handle in handles {
                supervisors.spawn(async move {
                    let _ = handle.await;
                });
            }
        }
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while supervisors.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("drivers and services did not stop in time; killing them");
            supervisors.abort_all();
        }
        drop(socket);
        Ok(())
    }
}
