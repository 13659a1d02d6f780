//! One service process: starting it on a socketpair ([`crate::child`]) as
//! `chipcard-service-TYPE --ipc-fd 0 --service-id 0x...`, the `ServiceStart`/`ServiceReady`
//! handshake, the connection loop that routes responses by refid and pings the service, and
//! the supervisor that keeps it running ([`supervise`]).
//!
//! A service with `autoload` is started with the server and restarted with backoff when it
//! ends (like a driver). One without is started when a client opens it (the opener waits
//! for `ServiceReady`), stopped after `idleTimeout` without contexts, and, when it ends on
//! its own, started again at the next open. In both cases a failed start is retried with
//! backoff and given up after `restartMaxFailures` failures in a row. When a service ends
//! its contexts are lost (see [`crate::services`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chipcard_ipc::message::{
    ErrorResponse, FromService, Ping, ServiceReadyResponse, ServiceStart, StopService, ToService,
};
use chipcard_ipc::{ErrorCode, Group, Outcome, Outgoing, ServiceId};
use futures::StreamExt;
use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::child::{self, sleep_until_some, Conn, LinkEnd, Pending, Pinging};
use crate::config::ServiceConfig;
use crate::driver::Settled;
use crate::server::Shared;
use crate::services::{Availability, ServiceLink};
use crate::supervisor::{keep_running, Run, Supervised};

/// The program that runs a service of `service_type`.
pub fn service_program(dir: &Path, service_type: &str) -> PathBuf {
    dir.join(format!("chipcard-service-{service_type}"))
}

/// How a service's connection ended.
#[derive(Debug)]
enum Ending {
    /// The server is stopping; the service was told to stop.
    Shutdown,
    /// It was idle for `idleTimeout` and was told to stop.
    Idle,
    /// It exited, closed its connection, broke the protocol or stopped answering pings.
    Ended(String),
}

/// A started service process and its connection.
#[derive(Debug)]
struct ServiceProcess {
    child: Child,
    conn: Conn<FromService>,
}

impl ServiceProcess {
    fn spawn(program: &Path, id: ServiceId, run_as: Option<(u32, u32)>) -> Result<Self, String> {
        let (child, conn) = child::spawn(program, "--service-id", &id.to_string(), run_as)
            .map_err(|e| format!("cannot start service {}: {e}", program.display()))?;
        Ok(ServiceProcess { child, conn })
    }

    async fn send(&mut self, refid: Option<u32>, msg: &impl Outgoing) -> Result<u32, String> {
        self.conn
            .send(refid, msg)
            .await
            .map_err(|e| format!("cannot write to service: {e}"))
    }

    /// Sends `ServiceStart` and waits for `ServiceReady` (the caller bounds the time); the
    /// id of `ServiceReady`.
    async fn handshake(&mut self, id: ServiceId, config: Group) -> Result<u32, String> {
        let start = ServiceStart {
            service_id: id,
            config,
        };
        self.send(None, &start).await?;
        loop {
            let received = self
                .conn
                .next_before_ready("service", "ServiceReady")
                .await?;
            match received.message {
                Ok(FromService::ServiceReady(ready)) => {
                    if let Some(code) = ready.outcome.error {
                        return Err(format!(
                            "service failed to start: {} ({code})",
                            ready.outcome.text
                        ));
                    }
                    info!(text = %ready.outcome.text, "service ready");
                    return Ok(received.id);
                }
                Ok(other) => warn!(cmd = other.cmd(), "message before ServiceReady ignored"),
                Err(e) => return Err(format!("bad ServiceReady: {e}")),
            }
        }
    }

    /// Asks the service to stop, and kills it if it does not within a grace period.
    async fn stop(&mut self) {
        let _ = self.send(None, &StopService {}).await;
        child::await_exit_or_kill(&mut self.child).await;
    }

    /// Runs the connection until it ends: requests out, responses in, pings, and (with
    /// `idle`) the idle check. Requests still waiting then fail with `Gone`.
    async fn serve(
        &mut self,
        shared: &Shared,
        id: ServiceId,
        link: &mut LinkEnd<ToService, FromService>,
        pinging: Pinging,
        idle: Option<Duration>,
        stop: &CancellationToken,
    ) -> Ending {
        let mut pending = Pending::default();
        let ending = self
            .serve_loop(shared, id, link, pinging, idle, &mut pending, stop)
            .await;
        link.close();
        pending.fail_all();
        ending
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve_loop(
        &mut self,
        shared: &Shared,
        id: ServiceId,
        link: &mut LinkEnd<ToService, FromService>,
        pinging: Pinging,
        idle: Option<Duration>,
        pending: &mut Pending<FromService>,
        stop: &CancellationToken,
    ) -> Ending {
        let ping_every = if pinging.interval.is_zero() {
            Duration::from_secs(24 * 3600)
        } else {
            pinging.interval
        };
        let mut ping_timer = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping: Option<(u32, Instant)> = None;
        let idle_every = idle.map_or(Duration::from_secs(3600), |limit| {
            (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
        });
        let mut idle_timer = tokio::time::interval(idle_every);
        loop {
            let wake_at = child::earliest(ping.map(|(_, at)| at), pending.next_expiry);
            tokio::select! {
                _ = stop.cancelled() => {
                    self.stop().await;
                    return Ending::Shutdown;
                }
                status = self.child.wait() => {
                    return Ending::Ended(match status {
                        Ok(s) => format!("service exited ({s})"),
                        Err(e) => format!("service exited ({e})"),
                    });
                }
                frame = self.conn.reader.next() => match frame {
                    None => return Ending::Ended("service closed its connection".into()),
                    Some(Err(e)) => {
                        let _ = self.send(None, &ErrorResponse::new(ErrorCode::Protocol, e.to_string())).await;
                        return Ending::Ended(format!("service broke the protocol: {e}"));
                    }
                    Some(Ok(Err(e))) => warn!(error = %e, "bad message from service ignored"),
                    Some(Ok(Ok(received))) => {
                        if let Err(e) = self.conn.order.check(received.id) {
                            return Ending::Ended(format!("service broke the protocol: {e}"));
                        }
                        match received.refid {
                            Some(refid) if ping.is_some_and(|(p, _)| p == refid) => ping = None,
                            Some(refid) => {
                                shared.lock().services_mut().touch(id);
                                pending.answer(refid, received, |e| {
                                    FromService::ErrorResponse(ErrorResponse::new(
                                        ErrorCode::DriverError,
                                        format!("the service sent a bad response: {e}"),
                                    ))
                                });
                            }
                            None => warn!(cmd = %received.cmd, "unexpected message from service ignored"),
                        }
                    }
                },
                Some(call) = link.rx.recv() => {
                    match self.send(None, &call.msg).await {
                        Ok(msg_id) => pending.insert(msg_id, call),
                        Err(e) => return Ending::Ended(e),
                    }
                }
                _ = ping_timer.tick(), if !pinging.interval.is_zero() && ping.is_none() => {
                    match self.send(None, &Ping {}).await {
                        Ok(msg_id) => ping = Some((msg_id, Instant::now() + pinging.timeout)),
                        Err(e) => return Ending::Ended(e),
                    }
                }
                _ = sleep_until_some(wake_at) => {
                    let now = Instant::now();
                    if ping.is_some_and(|(_, at)| at <= now) {
                        return Ending::Ended("service did not answer a ping in time".into());
                    }
                    pending.expire(now);
                }
                _ = idle_timer.tick(), if idle.is_some() && pending.is_empty() => {
                    let limit = idle.unwrap_or_default();
                    let idled = {
                        let mut reg = shared.lock();
                        let idle = reg.services().is_idle(id, limit);
                        if idle {
                            reg.service_availability(id, Availability::Idle, "stopped after idleTimeout");
                        }
                        idle
                    };
                    if idled {
                        info!(idle_ms = limit.as_millis() as u64, "service idle; stopping it");
                        self.stop().await;
                        return Ending::Idle;
                    }
                }
            }
        }
    }
}

/// A configured service, supervised.
struct ServiceUnit {
    shared: Arc<Shared>,
    id: ServiceId,
    config: ServiceConfig,
    program: PathBuf,
}

/// Runs the service `id` until the server stops, the service is removed from the
/// configuration (`stop`), or it is given up. `settled` is told once an `autoload` service's
/// first start has settled; a service without `autoload` settles at once.
pub async fn supervise(
    shared: Arc<Shared>,
    id: ServiceId,
    config: ServiceConfig,
    mut settled: Settled,
    stop: CancellationToken,
) {
    let span =
        info_span!("service", service = %id, name = %config.name, kind = %config.service_type);
    async move {
        let program = service_program(&shared.settings.driver_dir, &config.service_type);
        let settings = shared.settings.clone();
        if !config.flags.autoload {
            settled = None;
        }
        let mut unit = ServiceUnit {
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

impl Supervised for ServiceUnit {
    fn kind(&self) -> &'static str {
        "service"
    }

    fn run_once(
        &mut self,
        settled: Settled,
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
        let state = Availability::Restarting(why.to_owned());
        self.shared.lock().service_availability(self.id, state, why);
    }

    fn restarting(&self, why: &str) {
        let state = Availability::Restarting(why.to_owned());
        self.shared.lock().service_availability(self.id, state, why);
    }

    fn given_up(&self, why: &str) {
        let state = Availability::GivenUp(why.to_owned());
        self.shared.lock().service_availability(self.id, state, why);
    }

    fn stopped(&self) {
        self.shared.lock().service_availability(
            self.id,
            Availability::Stopped,
            "service stopped by the server",
        );
    }
}

async fn run_once(
    shared: &Shared,
    id: ServiceId,
    config: &ServiceConfig,
    program: &Path,
    settled: Settled,
    stop: &CancellationToken,
) -> Run {
    if stop.is_cancelled() {
        return Run::Shutdown;
    }
    if !config.flags.autoload {
        let demand = {
            let mut reg = shared.lock();
            reg.service_availability(id, Availability::Idle, "");
            reg.services().get(id).map(|s| s.demand.clone())
        };
        let Some(demand) = demand else {
            return Run::Shutdown;
        };
        tokio::select! {
            _ = stop.cancelled() => return Run::Shutdown,
            _ = demand.notified() => info!("service wanted; starting it"),
        }
    }
    let run_as = match crate::access::run_as(&config.group) {
        Ok(run_as) => run_as,
        Err(why) => return Run::FailedStart(why),
    };
    shared
        .lock()
        .service_availability(id, Availability::Starting, "");
    let mut process = match ServiceProcess::spawn(program, id, run_as) {
        Ok(p) => p,
        Err(why) => return Run::FailedStart(why),
    };
    info!(pid = process.child.id(), program = %program.display(), "service process started");
    let limit = shared.settings.driver_start_timeout;
    let handshake = tokio::select! {
        _ = stop.cancelled() => {
            child::kill(&mut process.child).await;
            return Run::Shutdown;
        }
        r = tokio::time::timeout(limit, process.handshake(id, config.group.clone())) => r,
    };
    let ready_id = match handshake {
        Ok(Ok(ready_id)) => ready_id,
        Ok(Err(why)) => {
            child::kill(&mut process.child).await;
            return Run::FailedStart(why);
        }
        Err(_) => {
            child::kill(&mut process.child).await;
            return Run::FailedStart(format!("no ServiceReady within {} ms", limit.as_millis()));
        }
    };
    let answer = ServiceReadyResponse {
        outcome: Outcome::ok("Service registered"),
    };
    if let Err(why) = process.send(Some(ready_id), &answer).await {
        child::kill(&mut process.child).await;
        return Run::FailedStart(why);
    }
    let (link, mut link_end): (ServiceLink, _) = child::link();
    shared
        .lock()
        .service_availability(id, Availability::Up(link), "");
    if let Some(tx) = settled {
        let _ = tx.send(());
    }
    let pinging = Pinging {
        interval: shared.settings.ping_interval,
        timeout: shared.settings.ping_timeout,
    };
    let idle = (!config.flags.autoload).then_some(config.idle_timeout);
    let ending = process
        .serve(shared, id, &mut link_end, pinging, idle, stop)
        .await;
    match ending {
        Ending::Shutdown => Run::Shutdown,
        Ending::Idle => Run::Idle,
        Ending::Ended(why) => {
            child::kill(&mut process.child).await;
            if config.flags.autoload {
                let state = Availability::Restarting(why.clone());
                shared.lock().service_availability(id, state, &why);
                Run::Ended(why)
            } else {
                warn!(reason = %why, "service stopped; it starts again when it is opened");
                shared
                    .lock()
                    .service_availability(id, Availability::Idle, &why);
                Run::Idle
            }
        }
    }
}
