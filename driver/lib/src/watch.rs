//! The watcher: while the IPC thread is inside a backend call that lasts (a slow card, a
//! PIN pad waiting for a finger), this thread reads the server's messages, answers `Ping`
//! at once (the server's liveness check) and leaves everything else for the IPC thread, in
//! order. When the backend has concurrent card I/O ([`crate::workers`]), it hands the card
//! requests for other readers than the busy one to their readers' workers meanwhile, so a
//! slow reader does not hold up the others.
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
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use std::time::Instant;

use chipcard_ipc::message::{PingResponse, ToDriver};
use chipcard_ipc::ReaderId;
use tracing::{debug, error, warn};

use crate::reader::{FromServer, Incoming, Reader};
use crate::request::CardRequest;
use crate::serve::STOP_TIMEOUT;
use crate::workers::Workers;
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
    /// The reader of the card call in progress, plus one; zero for any other call.
    busy_reader: AtomicU64,
    /// The reader workers, once the backend started with concurrent card I/O.
    workers: OnceLock<Arc<Workers>>,
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
            busy_reader: AtomicU64::new(0),
            workers: OnceLock::new(),
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

    /// From now on the watcher hands card requests for readers other than the busy one to
    /// `workers`.
    pub(crate) fn set_workers(&self, workers: Arc<Workers>) {
        let _ = self.inner.workers.set(workers);
    }

    /// Runs a backend call (a card call for `reader`, or another one), with the watcher
    /// standing by.
    pub(crate) fn call<R>(&mut self, reader: Option<ReaderId>, call: impl FnOnce() -> R) -> R {
        let busy = reader.map_or(0, |r| u64::from(r.0) + 1);
        self.inner.busy_reader.store(busy, Ordering::SeqCst);
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
        let busy_reader = inner.busy_reader.load(Ordering::SeqCst);
        let workers = inner.workers.get();
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
                    Incoming::Message(message)
                        if told_to_stop.is_none()
                            && handed_over(workers, &message, busy_reader) =>
                    {
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

/// Hands `message` to its reader's worker when it is a card request for another reader
/// than `busy_reader` (the busy reader plus one, zero for none); whether it did.
fn handed_over(workers: Option<&Arc<Workers>>, message: &FromServer, busy_reader: u64) -> bool {
    let Some(workers) = workers else {
        return false;
    };
    other_reader(message, busy_reader)
        .is_some_and(|request| workers.hand_over(message.id, request).is_ok())
}

/// The card request `message` is, when it is one for another reader than `busy_reader`
/// (the busy reader plus one, zero for none).
fn other_reader(message: &FromServer, busy_reader: u64) -> Option<CardRequest> {
    if message.refid.is_some() {
        return None;
    }
    let request = CardRequest::from_message(message.message.as_ref().ok()?)?;
    (u64::from(request.reader().0) + 1 != busy_reader).then_some(request)
}

/// A `Ping` request (not a response, and well-formed).
fn is_ping(message: &FromServer) -> bool {
    message.refid.is_none() && matches!(message.message, Ok(ToDriver::Ping(_)))
}
