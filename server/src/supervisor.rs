//! Keeping a configured driver or service running: start, register, serve, and restart
//! with exponential backoff (`restartBackoff`, default 1 s, doubling to
//! `restartBackoffMax`, default 60 s) when it exits, closes its connection, sends garbage,
//! fails to get ready or stops answering. After `restartMaxFailures` (default 5) failures
//! in a row it gives up and says so (`driver:error` for a driver). A failure is a start
//! that never got ready, or a run that ended less than `restartBackoffMax` after it was
//! started: a driver that gets ready and dies at once is not restarted forever.
//!
//! [`keep_running`] is the loop both share; a [`Supervised`] unit says how one run goes
//! (drivers: [`supervise`] here; services: [`crate::service::supervise`]).

use std::path::PathBuf;
use std::sync::Arc;

use chipcard_ipc::message::DriverReadyResponse;
use chipcard_ipc::{DriverId, Outcome};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::DriverConfig;
use crate::driver::{self, DriverProcess, Ending, Pinging};
use crate::server::{Settings, Shared};

/// How one run of a driver or service went.
#[derive(Debug)]
pub enum Run {
    /// It never got ready; why.
    FailedStart(String),
    /// It got ready and later ended; why.
    Ended(String),
    /// It was stopped for being idle, or ended while nobody needed it: the next run waits
    /// until it is wanted, without a restart delay.
    Idle,
    /// The server is stopping (or the unit was removed).
    Shutdown,
}

/// A driver or service as [`keep_running`] sees it.
pub trait Supervised {
    /// `driver` or `service`, for logs.
    fn kind(&self) -> &'static str;
    /// One run: start the process and serve it until it ends.
    fn run_once(
        &mut self,
        settled: driver::Settled,
        stop: &CancellationToken,
    ) -> impl std::future::Future<Output = Run> + Send;
    /// A start failed (`why`).
    fn failed_start(&self, why: &str);
    /// It is restarted after `delay_ms` (it ended or failed to start: `why`).
    fn restarting(&self, why: &str);
    /// It failed to start too often and is given up.
    fn given_up(&self, why: &str);
    /// The server stopped it.
    fn stopped(&self);
}

/// Runs `unit` until `stop` or until it is given up, restarting it with backoff.
pub async fn keep_running<U: Supervised>(
    unit: &mut U,
    settings: &Settings,
    mut settled: driver::Settled,
    stop: &CancellationToken,
) {
    let kind = unit.kind();
    let first_backoff = settings.restart_backoff;
    let max_backoff = settings.restart_backoff_max.max(first_backoff);
    let max_failures = settings.restart_max_failures.max(1);
    // Failed starts and short runs in a row.
    let mut failures = 0;
    let mut backoff = first_backoff;
    loop {
        let started = Instant::now();
        let why = match unit.run_once(settled.take(), stop).await {
            Run::Shutdown => {
                unit.stopped();
                return;
            }
            Run::Idle => {
                failures = 0;
                backoff = first_backoff;
                continue;
            }
            Run::FailedStart(why) => {
                failures += 1;
                error!(attempt = failures, error = %why, "{kind} failed to start");
                unit.failed_start(&why);
                why
            }
            Run::Ended(why) => {
                let ran = started.elapsed();
                if ran >= max_backoff {
                    failures = 0;
                    backoff = first_backoff;
                } else {
                    failures += 1;
                }
                warn!(
                    reason = %why,
                    ran_ms = ran.as_millis() as u64,
                    attempt = failures,
                    "{kind} stopped"
                );
                why
            }
        };
        if failures >= max_failures {
            error!("{kind} failed {max_failures} times in a row; giving up");
            unit.given_up(&format!(
                "failed {max_failures} times in a row (failed to start or ended within \
                 restartBackoffMax); given up"
            ));
            return;
        }
        info!(
            delay_ms = backoff.as_millis() as u64,
            "restarting {kind} after a delay"
        );
        unit.restarting(&why);
        tokio::select! {
            _ = stop.cancelled() => {
                unit.stopped();
                return;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = backoff.saturating_mul(2).min(max_backoff);
    }
}

/// The program that runs a driver of `driver_type`.
pub fn driver_program(driver_dir: &std::path::Path, driver_type: &str) -> PathBuf {
    driver_dir.join(format!("chipcard-driver-{driver_type}"))
}

/// A configured driver, supervised.
struct DriverUnit {
    shared: Arc<Shared>,
    id: DriverId,
    config: DriverConfig,
    program: PathBuf,
}

/// Runs the driver `id` until the server stops or the driver is given up.
///
/// `settled` is told when the first start has settled (see [`driver::Settled`]); dropping it
/// unsent (a failed first start) tells the same to whoever waits.
///
/// `stop` ends it (the driver is asked to stop); it is a child of the server's shutdown
/// token, so shutdown stops every driver, and a reload can stop one.
pub async fn supervise(
    shared: Arc<Shared>,
    id: DriverId,
    config: DriverConfig,
    settled: driver::Settled,
    stop: CancellationToken,
) {
    let span = info_span!("driver", driver = %id, name = %config.name, kind = %config.driver_type);
    async move {
        let program = driver_program(&shared.settings.driver_dir, &config.driver_type);
        let settings = shared.settings.clone();
        let mut unit = DriverUnit {
            shared,
            id,
            config,
            program,
        };
        keep_running(&mut unit, &settings, settled, &stop).await;
    }
    .instrument(span)
    .await
}

impl Supervised for DriverUnit {
    fn kind(&self) -> &'static str {
        "driver"
    }

    fn run_once(
        &mut self,
        settled: driver::Settled,
        stop: &CancellationToken,
    ) -> impl std::future::Future<Output = Run> + Send {
        run_once(
            &self.shared,
            self.id,
            &self.config,
            &self.program,
            settled,
            stop,
        )
    }

    fn failed_start(&self, why: &str) {
        let mut reg = self.shared.lock();
        reg.driver_error(self.id, why);
        reg.driver_down(self.id, why);
    }

    fn restarting(&self, _why: &str) {
        // The connection loop (or `failed_start`) has marked the driver down already.
    }

    fn given_up(&self, why: &str) {
        self.shared.lock().driver_error(self.id, why);
    }

    fn stopped(&self) {
        self.shared
            .lock()
            .driver_down(self.id, "driver stopped by the server");
    }
}

async fn run_once(
    shared: &Shared,
    id: DriverId,
    config: &DriverConfig,
    program: &std::path::Path,
    settled: driver::Settled,
    stop: &CancellationToken,
) -> Run {
    if stop.is_cancelled() {
        return Run::Shutdown;
    }
    let run_as = match crate::access::run_as(&config.group) {
        Ok(run_as) => run_as,
        Err(why) => return Run::FailedStart(why),
    };
    let mut process = match DriverProcess::spawn(program, id, run_as) {
        Ok(p) => p,
        Err(e) => return Run::FailedStart(e.to_string()),
    };
    info!(pid = process.pid(), program = %program.display(), "driver process started");
    shared.lock().driver_starting(id);

    let limit = shared.settings.driver_start_timeout;
    let handshake = tokio::select! {
        _ = stop.cancelled() => {
            process.kill().await;
            return Run::Shutdown;
        }
        r = tokio::time::timeout(limit, process.handshake(id, config.group.clone())) => r,
    };
    let ready = match handshake {
        Ok(Ok(ready)) => ready,
        Ok(Err(why)) => {
            process.kill().await;
            return Run::FailedStart(why);
        }
        Err(_) => {
            process.kill().await;
            return Run::FailedStart(format!("no DriverReady within {} ms", limit.as_millis()));
        }
    };
    info!(readers = ready.readers.len(), text = %ready.text, "driver ready");

    let (link, mut link_end) = driver::link();
    shared.lock().driver_ready(id, link, ready.readers);
    let answer = DriverReadyResponse {
        outcome: Outcome::ok("Driver registered"),
    };
    let ending = match process.send(Some(ready.id), &answer).await {
        Err(e) => {
            let ending = Ending::Protocol(format!("cannot write to driver: {e}"));
            shared.lock().driver_down(id, &ending.to_string());
            ending
        }
        Ok(_) => {
            let pinging = Pinging {
                interval: shared.settings.ping_interval,
                timeout: shared.settings.ping_timeout,
            };
            process
                .serve(shared, id, &mut link_end, pinging, settled, stop)
                .await
        }
    };
    if !matches!(ending, Ending::Shutdown) {
        process.kill().await;
    }
    match ending {
        Ending::Shutdown => Run::Shutdown,
        other => Run::Ended(other.to_string()),
    }
}
