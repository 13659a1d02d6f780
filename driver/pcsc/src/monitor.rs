//! The monitor thread: follows pcscd's readers and cards with `SCardGetStatusChange`
//! (readers through the `\\?PnP?\Notification` pseudo reader) and survives pcscd going
//! away and coming back.

use std::ffi::CString;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chipcard_ipc::message::DriverReader;
use chipcard_ipc::ReaderId;
use pcsc::{Context, ReaderState, Scope, State};
use tracing::{debug, info, trace, warn};

use crate::config::{PcscConfig, FIRST_RECONNECT_DELAY};
use crate::errors::service_lost;
use crate::features;
use crate::registry::Shared;

/// How long [`MonitorHandle::stop`] waits for the thread.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// The context the monitor uses right now, so that another thread can cancel its wait.
type ContextSlot = Arc<Mutex<Option<Context>>>;

/// pcscd cannot be used (it is not running, or it went away): the context is dropped and
/// established again later.
#[derive(Debug)]
struct Lost(pcsc::Error);

/// Follows pcscd's readers and cards and keeps the [`Shared`] registry up to date.
pub struct Monitor {
    config: Arc<PcscConfig>,
    registry: Shared,
    stop: Receiver<()>,
    slot: ContextSlot,
    ctx: Option<Context>,
    /// `states[0]` is the PnP pseudo reader; `states[i + 1]` is the reader `ids[i]`.
    states: Vec<ReaderState>,
    ids: Vec<ReaderId>,
    relist: bool,
    /// Whether pcscd was reachable at the last attempt (to log changes once).
    reachable: Option<bool>,
    delay: Duration,
}

/// The owner's handle: stops the thread.
pub struct MonitorHandle {
    stop: Option<std::sync::mpsc::Sender<()>>,
    slot: ContextSlot,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// A monitor that reports to `registry`; it stops when `stop`'s sender is dropped.
    fn new(config: Arc<PcscConfig>, registry: Shared, stop: Receiver<()>) -> Monitor {
        Monitor {
            config,
            registry,
            stop,
            slot: Arc::new(Mutex::new(None)),
            ctx: None,
            states: vec![ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE)],
            ids: Vec::new(),
            relist: true,
            reachable: None,
            delay: FIRST_RECONNECT_DELAY,
        }
    }

    /// Looks at pcscd once, on the calling thread, and returns the readers for
    /// `DriverReady`; cards already present are reported as `CardInserted` events. Then
    /// follows pcscd on a thread of its own. If pcscd cannot be reached there are no
    /// readers yet; the thread keeps trying, and readers arrive as `ReaderAdd`.
    pub fn start(
        config: Arc<PcscConfig>,
        registry: Shared,
    ) -> std::io::Result<(Vec<DriverReader>, MonitorHandle)> {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let mut monitor = Monitor::new(config, registry, stop_rx);
        let readers = match monitor.first_look() {
            Ok(readers) => readers,
            Err(Lost(e)) => {
                monitor.lose(e);
                Vec::new()
            }
        };
        let slot = monitor.slot.clone();
        let span = tracing::Span::current();
        let thread = thread::Builder::new()
            .name("pcsc-monitor".into())
            .spawn(move || span.in_scope(|| monitor.run()))?;
        Ok((
            readers,
            MonitorHandle {
                stop: Some(stop_tx),
                slot,
                thread: Some(thread),
            },
        ))
    }

    fn first_look(&mut self) -> Result<Vec<DriverReader>, Lost> {
        self.ensure_context()?;
        let readers = self.update_readers(false)?;
        self.wait_for_change(Duration::ZERO)?;
        Ok(readers)
    }

    fn stopping(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Waits `d` unless stopped meanwhile; false when stopped.
    fn sleep(&self, d: Duration) -> bool {
        matches!(self.stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
    }

    fn run(mut self) {
        debug!("monitor running");
        while !self.stopping() {
            let step = self.ctx_step();
            match step {
                Ok(()) => self.delay = FIRST_RECONNECT_DELAY,
                Err(Lost(e)) => {
                    self.lose(e);
                    let delay = self.delay;
                    self.delay = (self.delay * 2).min(self.config.reconnect_interval);
                    if !self.sleep(delay) {
                        break;
                    }
                }
            }
        }
        self.set_context(None);
        debug!("monitor stopped");
    }

    fn ctx_step(&mut self) -> Result<(), Lost> {
        self.ensure_context()?;
        if self.relist {
            self.update_readers(true)?;
        }
        self.wait_for_change(self.config.poll_interval)
    }

    fn set_context(&mut self, ctx: Option<Context>) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.clone_from(&ctx);
        self.ctx = ctx;
    }

    fn ensure_context(&mut self) -> Result<(), Lost> {
        if self.ctx.is_some() {
            return Ok(());
        }
        let socket = self.config.pcscd_socket.as_ref().map_or_else(
            || "the default socket".to_owned(),
            |p| p.display().to_string(),
        );
        match Context::establish(Scope::User) {
            Ok(ctx) => {
                info!(%socket, "connected to pcscd");
                self.reachable = Some(true);
                self.set_context(Some(ctx));
                self.relist = true;
                Ok(())
            }
            Err(e) => {
                if self.reachable != Some(false) {
                    warn!(%socket, error = %e, "pcscd is not reachable; trying again every {:?} at most", self.config.reconnect_interval);
                    self.reachable = Some(false);
                }
                Err(Lost(e))
            }
        }
    }

    /// pcscd went away: every reader is gone (`CardRemoved`, `ReaderDel`), the context is
    /// dropped.
    fn lose(&mut self, e: pcsc::Error) {
        if self.ctx.is_some() {
            warn!(error = %e, "lost pcscd; its readers are gone until it is back");
        }
        self.set_context(None);
        self.states.truncate(1);
        self.ids.clear();
        self.relist = true;
        self.registry.lock().remove_all();
    }

    /// Brings the reader list in line with pcscd's: `ReaderDel` for readers gone,
    /// `ReaderAdd` (when `announce`) for new ones. Returns the new readers.
    fn update_readers(&mut self, announce: bool) -> Result<Vec<DriverReader>, Lost> {
        let Some(ctx) = self.ctx.clone() else {
            return Err(Lost(pcsc::Error::InvalidHandle));
        };
        let names = match ctx.list_readers_owned() {
            Ok(names) => names,
            Err(e) if service_lost(e) => return Err(Lost(e)),
            Err(e) => {
                warn!(error = %e, "listing the readers failed");
                return Ok(Vec::new());
            }
        };
        self.relist = false;
        let names: Vec<(CString, String)> = names
            .into_iter()
            .map(|c| {
                let s = c.to_string_lossy().into_owned();
                (c, s)
            })
            .filter(|(_, s)| self.config.wants(s))
            .collect();

        // Gone.
        let mut i = 0;
        while i < self.ids.len() {
            let state_name = self.states[i + 1].name().to_owned();
            if names.iter().any(|(c, _)| *c == state_name) {
                i += 1;
            } else {
                let id = self.ids.remove(i);
                self.states.remove(i + 1);
                self.registry.lock().remove_reader(id);
            }
        }
        // New.
        let mut added = Vec::new();
        for (cname, name) in names {
            if self.states[1..]
                .iter()
                .any(|s| s.name() == cname.as_c_str())
            {
                continue;
            }
            let flags = if self.config.features {
                features::reader_flags(&ctx, &cname)
            } else {
                Vec::new()
            };
            let reader = self.registry.lock().add_reader(&name, flags, announce);
            self.ids.push(reader.reader_id);
            self.states.push(ReaderState::new(cname, State::UNAWARE));
            added.push(reader);
        }
        Ok(added)
    }

    /// One `SCardGetStatusChange` of at most `timeout`, and what follows from its answer.
    fn wait_for_change(&mut self, timeout: Duration) -> Result<(), Lost> {
        let Some(ctx) = self.ctx.clone() else {
            return Err(Lost(pcsc::Error::InvalidHandle));
        };
        for state in &mut self.states {
            state.sync_current_state();
        }
        let started = Instant::now();
        match ctx.get_status_change(timeout, &mut self.states) {
            Ok(()) => {
                self.changed();
                Ok(())
            }
            Err(pcsc::Error::Timeout) => {
                trace!("no change within {timeout:?}");
                Ok(())
            }
            Err(pcsc::Error::Cancelled) => Ok(()),
            Err(pcsc::Error::UnknownReader) => {
                // A reader vanished before we waited on it.
                self.relist = true;
                Ok(())
            }
            Err(e) if service_lost(e) => Err(Lost(e)),
            Err(e) => {
                warn!(error = %e, "SCardGetStatusChange failed; listing the readers again");
                self.relist = true;
                // Never spin on an error that comes back at once.
                let rest = self.config.poll_interval.saturating_sub(started.elapsed());
                self.sleep(rest);
                Ok(())
            }
        }
    }

    fn changed(&mut self) {
        if self.states[0].event_state().contains(State::CHANGED) {
            debug!("the reader list changed");
            self.relist = true;
        }
        let mut registry = self.registry.lock();
        for (state, id) in self.states[1..].iter().zip(&self.ids) {
            let event = state.event_state();
            if !event.contains(State::CHANGED) {
                continue;
            }
            if event.intersects(State::UNKNOWN | State::IGNORE | State::UNAVAILABLE) {
                self.relist = true;
                continue;
            }
            if event.contains(State::PRESENT) && event.contains(State::MUTE) {
                warn!(reader = %state.name().to_string_lossy(), "a card that does not answer (mute); ignored until it does");
            }
            let present = event.contains(State::PRESENT) && !event.contains(State::MUTE);
            let card = present.then(|| (state.atr(), state.event_count()));
            registry.card_state(*id, card);
        }
    }
}

impl MonitorHandle {
    /// Stops the thread: wakes it from `SCardGetStatusChange` with `SCardCancel` and waits
    /// for it (at most a few seconds).
    pub fn stop(&mut self) {
        drop(self.stop.take());
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + STOP_WAIT;
        // The thread may be between its stop check and the wait, so cancel until it ends.
        while !thread.is_finished() && Instant::now() < deadline {
            if let Some(ctx) = self.slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                if let Err(e) = ctx.cancel() {
                    debug!(error = %e, "SCardCancel");
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            if thread.join().is_err() {
                warn!("the monitor thread panicked");
            }
        } else {
            warn!("the monitor thread did not stop within {STOP_WAIT:?}");
        }
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
