//! The watcher: while the IPC thread is inside a backend call that lasts (a slow card, a
//! PIN pad waiting for a finger), this thread reads the server's messages, answers `Ping`
//! at once (the server's liveness check) and leaves everything else for the IPC thread, in
//! order.
//!
//! A short call costs nothing: the IPC thread only stores the call's number in an atomic
//! when it starts and zero when it ends. The watcher looks at that number [`TAKEOVER`]
//! after it saw a call running; the same number then means one call has run at least that
//! long, and the watcher reads until it ends. With no call in progress the watcher sleeps
//! until the next one starts (one wake-up per busy period, not per call).
//!
//! When the server asks the driver to stop, or goes away, during such a call, the IPC
//! thread can act only once the call returns. In a driver process ([`crate::run`]) the
//! watcher then gives the call [`STOP_TIMEOUT`] and ends the process if it is still
//! running, as a driver whose backend does not stop in time always has.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use std::time::Instant;

use chipcard_ipc::message::{PingResponse, ToDriver};
use tracing::{debug, error, warn};

use crate::reader::{FromServer, Incoming, Reader};
use crate::serve::STOP_TIMEOUT;
use crate::writer::Writer;
use crate::{EXIT_FAILURE, EXIT_OK};

/// How long a backend call runs before the watcher reads for the IPC thread.
pub(crate) const TAKEOVER: Duration = Duration::from_millis(100);

/// How long one read of the watcher waits, so that it notices soon when the call ends.
const SLICE: Duration = Duration::from_millis(5);

/// The IPC thread's handle on the watcher.
pub(crate) struct Watch {
    inner: Arc<Inner>,
    /// The number of the last call started.
    calls: u64,
    thread: Option<JoinHandle<()>>,
}

struct Inner {
    /// The call in progress (its number), zero when none.
    call: AtomicU64,
    /// The watcher waits for a call to start: the next one must wake it.
    parked: AtomicBool,
    /// Whether the watcher must end.
    stop: Mutex<bool>,
    wake: Condvar,
    /// End the process when a call outlasts a stop request by [`STOP_TIMEOUT`].
    exit_stuck: bool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.stop.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Watch {
    /// Starts the watcher thread. With `exit_stuck` (a driver process) it ends the process
    /// when a backend call outlasts the server's stop request (or its going away) by
    /// [`STOP_TIMEOUT`].
    pub(crate) fn start(
        reader: Arc<Reader>,
        writer: Arc<Writer>,
        exit_stuck: bool,
    ) -> std::io::Result<Watch> {
        let inner = Arc::new(Inner {
            call: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            exit_stuck,
        });
        let theirs = inner.clone();
        let span = tracing::Span::current();
        let thread = thread::Builder::new()
            .name("ipc-watch".into())
            .spawn(move || span.in_scope(|| watch(&theirs, &reader, &writer)))?;
        Ok(Watch {
            inner,
            calls: 0,
            thread: Some(thread),
        })
    }

    /// Runs a backend call, with the watcher standing by.
    pub(crate) fn call<R>(&mut self, call: impl FnOnce() -> R) -> R {
        self.calls += 1;
        self.inner.call.store(self.calls, Ordering::SeqCst);
        if self.inner.parked.load(Ordering::SeqCst) {
            let _guard = self.inner.lock();
            self.inner.wake.notify_one();
        }
        let result = call();
        self.inner.call.store(0, Ordering::SeqCst);
        result
    }

    /// Ends the watcher.
    pub(crate) fn stop(&mut self) {
        *self.inner.lock() = true;
        self.inner.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch(inner: &Inner, reader: &Reader, writer: &Writer) {
    loop {
        // Wait for a call to start.
        let call = {
            let mut stop = inner.lock();
            loop {
                if *stop {
                    return;
                }
                let call = inner.call.load(Ordering::SeqCst);
                if call != 0 {
                    break call;
                }
                // Parked first, then looked again: a call that starts in between either
                // is seen here or sees `parked` and wakes us.
                inner.parked.store(true, Ordering::SeqCst);
                if inner.call.load(Ordering::SeqCst) == 0 {
                    stop = inner
                        .wake
                        .wait(stop)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                inner.parked.store(false, Ordering::SeqCst);
            }
        };
        // Give it time to end.
        {
            let stop = inner.lock();
            if *stop {
                return;
            }
            let (stop, _) = inner
                .wake
                .wait_timeout(stop, TAKEOVER)
                .unwrap_or_else(PoisonError::into_inner);
            if *stop {
                return;
            }
        }
        if inner.call.load(Ordering::SeqCst) != call {
            continue;
        }
        debug!("a backend call takes long; the watcher answers pings meanwhile");
        let mut locked = reader.lock();
        let mut open = true;
        // When the server asked to stop (or went away), and the exit code for that.
        let mut told_to_stop: Option<(Instant, u8)> = None;
        while inner.call.load(Ordering::SeqCst) == call && !*inner.lock() {
            if !open {
                // Nothing more to read; only the stop deadline is left to watch.
                thread::sleep(SLICE);
            } else {
                open = locked.read_for(SLICE, |item| match item {
                    Incoming::Message(message) if is_ping(&message) => {
                        if let Err(e) = writer.send(Some(message.id), &PingResponse {}) {
                            warn!(error = %e, "cannot answer a ping");
                        }
                        None
                    }
                    other => {
                        if told_to_stop.is_none() {
                            told_to_stop = stop_request(&other).map(|code| (Instant::now(), code));
                        }
                        Some(other)
                    }
                });
                if !open && told_to_stop.is_none() {
                    told_to_stop = Some((Instant::now(), EXIT_OK));
                }
            }
            if let Some((since, code)) = told_to_stop {
                if inner.exit_stuck && since.elapsed() >= STOP_TIMEOUT {
                    error!(
                        "a backend call did not return within {STOP_TIMEOUT:?} of the server's \
                         stop request (or end); exiting anyway"
                    );
                    std::process::exit(i32::from(code));
                }
            }
        }
    }
}

/// Whether a message the watcher leaves for the IPC thread ends the driver, and with which
/// exit code.
fn stop_request(item: &Incoming) -> Option<u8> {
    match item {
        Incoming::Message(message)
            if message.refid.is_none()
                && matches!(message.message, Ok(ToDriver::StopDriver(_))) =>
        {
            Some(EXIT_OK)
        }
        Incoming::Broken(_) => Some(EXIT_FAILURE),
        Incoming::End(Some(_)) => Some(EXIT_FAILURE),
        Incoming::End(None) => Some(EXIT_OK),
        _ => None,
    }
}

/// A `Ping` request (not a response, and well-formed).
fn is_ping(message: &FromServer) -> bool {
    message.refid.is_none() && matches!(message.message, Ok(ToDriver::Ping(_)))
}
