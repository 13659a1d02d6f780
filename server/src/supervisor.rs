//! Keeping a configured driver running: start, register, serve, and restart with
//! exponential backoff (`restartBackoff`, default 1 s, doubling to `restartBackoffMax`,
//! default 60 s) when it exits, closes its connection, sends garbage, fails to get ready or
//! stops answering pings. After `restartMaxFailures` (default 5) failed starts in a row it
//! gives up and says so with a `driver:error` notification.

use std::path::PathBuf;
use std::sync::Arc;

use chipcard_ipc::message::DriverReadyResponse;
use chipcard_ipc::{DriverId, Outcome};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::DriverConfig;
use crate::driver::{self, DriverProcess, Ending, Pinging};
use crate::server::Shared;

/// How one run of the driver went.
#[derive(Debug)]
enum Run {
    /// It never got ready.
    FailedStart(String),
    /// It got ready and later ended.
    Ended(Ending),
    /// The server is stopping.
    Shutdown,
}

/// The program that runs a driver of `driver_type`.
pub fn driver_program(driver_dir: &std::path::Path, driver_type: &str) -> PathBuf {
    driver_dir.join(format!("chipcard-driver-{driver_type}"))
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
    mut settled: driver::Settled,
    stop: CancellationToken,
) {
    let span = info_span!("driver", driver = %id, name = %config.name, kind = %config.driver_type);
    async move {
        let program = driver_program(&shared.settings.driver_dir, &config.driver_type);
        let first_backoff = shared.settings.restart_backoff;
        let max_backoff = shared.settings.restart_backoff_max.max(first_backoff);
        let max_failed_starts = shared.settings.restart_max_failures.max(1);
        let mut failed_starts = 0;
        let mut backoff = first_backoff;
        loop {
            let started = Instant::now();
            match run_once(&shared, id, &config, &program, settled.take(), &stop).await {
                Run::Shutdown => {
                    shared
                        .lock()
                        .driver_down(id, "driver stopped by the server");
                    return;
                }
                Run::FailedStart(why) => {
                    failed_starts += 1;
                    error!(attempt = failed_starts, error = %why, "driver failed to start");
                    let mut reg = shared.lock();
                    reg.driver_error(id, &why);
                    reg.driver_down(id, &why);
                }
                Run::Ended(ending) => {
                    failed_starts = 0;
                    if started.elapsed() >= max_backoff {
                        backoff = first_backoff;
                    }
                    // The connection loop has marked the driver down already.
                    warn!(reason = %ending, "driver stopped");
                }
            }
            if failed_starts >= max_failed_starts {
                error!("driver failed to start {max_failed_starts} times in a row; giving up");
                shared.lock().driver_error(
                    id,
                    &format!("failed to start {max_failed_starts} times in a row; given up"),
                );
                return;
            }
            info!(
                delay_ms = backoff.as_millis() as u64,
                "restarting driver after a delay"
            );
            tokio::select! {
                _ = stop.cancelled() => {
                    shared.lock().driver_down(id, "driver stopped by the server");
                    return;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = backoff.saturating_mul(2).min(max_backoff);
        }
    }
    .instrument(span)
    .await
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
        other => Run::Ended(other),
    }
}
