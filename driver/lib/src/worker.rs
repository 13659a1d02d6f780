//! The backend's thread. Requests arrive over a channel, in the order the server sent them;
//! the thread calls the backend and writes each response to the server itself, so the IPC
//! task never waits on the hardware and is not woken for answers.
//!
//! Responses to requests that were already queued behind each other are written together
//! when the queue runs empty (or after [`HOLD_LIMIT`], so a slow backend does not hold back
//! answers it has).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chipcard_ipc::message::{CardCommandResponse, DriverReader, ResetCardResponse};
use chipcard_ipc::{Group, Outcome, Outgoing, ReaderId};
use tokio::sync::oneshot;
use tracing::{debug, error, trace, warn};

use crate::backend::{Backend, EventSink};
use crate::error::DriverError;
use crate::writer::Writer;

/// The longest a response waits in the buffer for the ones after it.
const HOLD_LIMIT: Duration = Duration::from_micros(100);

/// The most response bytes held back for one write.
const HOLD_BYTES: usize = 32 * 1024;

/// One request for the backend.
pub(crate) enum Job {
    Start {
        config: Group,
        events: EventSink,
        reply: oneshot::Sender<Result<Vec<DriverReader>, DriverError>>,
    },
    /// `CardCommand`: answered with `CardCommandResponse` to `refid`.
    Transmit {
        refid: u32,
        reader: ReaderId,
        slot: i32,
        apdu: Bytes,
        to_reader: bool,
    },
    /// `ResetCard`: answered with `ResetCardResponse` to `refid`.
    Reset {
        refid: u32,
        reader: ReaderId,
        slot: i32,
    },
    Stop {
        done: oneshot::Sender<()>,
    },
}

/// The IPC side's handle on the backend thread; dropping it tells the thread to finish.
pub(crate) struct Worker {
    jobs: Arc<Jobs>,
}

impl Worker {
    /// Starts the thread that owns `backend` and writes its answers through `writer`.
    /// `alive` is dropped when the thread ends, normally or because the backend panicked.
    pub(crate) fn spawn<B: Backend>(
        backend: B,
        writer: Arc<Writer>,
        alive: oneshot::Sender<()>,
    ) -> std::io::Result<Worker> {
        let jobs = Arc::new(Jobs::default());
        let theirs = jobs.clone();
        // The backend's logs carry the driver's span (driver_id).
        let span = tracing::Span::current();
        thread::Builder::new()
            .name("backend".into())
            .spawn(move || {
                let _alive = alive;
                span.in_scope(|| serve_jobs(backend, &theirs, &writer));
            })?;
        Ok(Worker { jobs })
    }

    /// Queues a job; false when the thread is gone.
    pub(crate) fn submit(&self, job: Job) -> bool {
        self.jobs.push(job)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs.close();
    }
}

/// The queue of jobs for the backend thread.
///
/// Not `std::sync::mpsc`: its sender wakes the receiving thread while still holding a lock
/// the receiver needs next. The woken backend thread usually preempts the IPC thread right
/// there (same CPU), runs the job, then blocks on that lock, and two more context switches
/// follow for every request. Here the lock is released before the wake-up.
#[derive(Default)]
struct Jobs {
    state: Mutex<JobState>,
    ready: Condvar,
}

#[derive(Default)]
struct JobState {
    queue: VecDeque<Job>,
    /// The IPC side is gone: no more jobs.
    closed: bool,
    /// The backend thread ended.
    ended: bool,
    /// The backend thread waits for a job.
    waiting: bool,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a job; false when the backend thread has ended.
    fn push(&self, job: Job) -> bool {
        let mut st = self.lock();
        if st.ended {
            return false;
        }
        st.queue.push_back(job);
        let wake = st.waiting;
        drop(st);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The next job, waiting for one; `None` once the IPC side is gone.
    fn pop(&self) -> Option<Job> {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.queue.pop_front() {
                return Some(job);
            }
            if st.closed {
                return None;
            }
            st.waiting = true;
            st = self.ready.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.waiting = false;
        }
    }

    /// The next job if one is queued.
    fn try_pop(&self) -> Option<Job> {
        self.lock().queue.pop_front()
    }

    /// The thread is ending: later jobs are refused, queued ones dropped.
    fn end(&self) {
        let mut st = self.lock();
        st.ended = true;
        st.queue.clear();
    }
}

/// Responses encoded but not yet written, and since when.
struct Held {
    since: Option<Instant>,
}

impl Held {
    /// Sends a response: held back while more requests wait, written otherwise.
    fn respond(&mut self, writer: &Writer, refid: u32, response: &impl Outgoing, more: bool) {
        let sent = if more {
            let since = *self.since.get_or_insert_with(Instant::now);
            writer.queue(Some(refid), response).and_then(|_| {
                if since.elapsed() >= HOLD_LIMIT || writer.buffered() >= HOLD_BYTES {
                    self.since = None;
                    writer.flush()
                } else {
                    Ok(())
                }
            })
        } else {
            self.since = None;
            writer.send(Some(refid), response).map(|_| ())
        };
        // A broken connection ends the IPC task too; nothing more to do here.
        if let Err(e) = sent {
            debug!(refid, error = %e, "cannot send a response");
        }
    }

    /// Writes what is held back.
    fn flush(&mut self, writer: &Writer) {
        if self.since.take().is_some() {
            if let Err(e) = writer.flush() {
                debug!(error = %e, "cannot send responses");
            }
        }
    }
}

fn serve_jobs<B: Backend>(backend: B, jobs: &Jobs, writer: &Writer) {
    // However the thread ends (a panic in `start` included), later jobs are refused.
    struct End<'a>(&'a Jobs);
    impl Drop for End<'_> {
        fn drop(&mut self) {
            self.0.end();
        }
    }
    let _end = End(jobs);
    run_jobs(backend, jobs, writer);
}

fn run_jobs<B: Backend>(mut backend: B, jobs: &Jobs, writer: &Writer) {
    let mut held = Held { since: None };
    // The job after the current one, if it had arrived by the time the current one was
    // done: its presence is what holds the current response back.
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => {
                // Nothing else to do: what is held back goes out before we wait.
                held.flush(writer);
                match jobs.pop() {
                    Some(job) => job,
                    None => break,
                }
            }
        };
        // A requester that went away (the driver is stopping) is not an error: send results
        // are ignored.
        match job {
            Job::Start {
                config,
                events,
                reply,
            } => {
                let _ = reply.send(backend.start(&config, events));
            }
            Job::Transmit {
                refid,
                reader,
                slot,
                apdu,
                to_reader,
            } => {
                trace!(%reader, slot, apdu = %hex::encode_upper(redact(&apdu)), "C-APDU");
                let (result, panicked) = guarded(|| {
                    if to_reader {
                        backend.reader_command(reader, slot, &apdu)
                    } else {
                        backend.transmit(reader, slot, &apdu)
                    }
                });
                let response = match result {
                    Ok(rapdu) => {
                        trace!(%reader, slot, rapdu = %hex::encode_upper(&rapdu), "R-APDU");
                        CardCommandResponse {
                            outcome: Outcome::ok("ok"),
                            data: Some(Bytes::from(rapdu)),
                        }
                    }
                    Err(e) => {
                        debug!(%reader, slot, error = %e, "transmit failed");
                        CardCommandResponse {
                            outcome: Outcome::failed(e.code, e.text),
                            data: None,
                        }
                    }
                };
                if panicked {
                    held.respond(writer, refid, &response, false);
                    return;
                }
                next = jobs.try_pop();
                held.respond(writer, refid, &response, next.is_some());
            }
            Job::Reset {
                refid,
                reader,
                slot,
            } => {
                let (result, panicked) = guarded(|| backend.reset(reader, slot));
                let response = match result {
                    Ok(atr) => ResetCardResponse {
                        outcome: Outcome::ok("ok"),
                        atr: Some(Bytes::from(atr)),
                    },
                    Err(e) => ResetCardResponse {
                        outcome: Outcome::failed(e.code, e.text),
                        atr: None,
                    },
                };
                if panicked {
                    held.respond(writer, refid, &response, false);
                    return;
                }
                next = jobs.try_pop();
                held.respond(writer, refid, &response, next.is_some());
            }
            Job::Stop { done } => {
                held.flush(writer);
                backend.stop();
                let _ = done.send(());
                return;
            }
        }
    }
    warn!("the IPC side went away without StopDriver; stopping the backend");
    backend.stop();
}

/// Calls the backend; a panic becomes an error answer, and `true`: the backend's state is
/// unknown after a panic, so the thread ends (the IPC task then ends the driver).
fn guarded(
    call: impl FnOnce() -> Result<Vec<u8>, DriverError>,
) -> (Result<Vec<u8>, DriverError>, bool) {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => (result, false),
        Err(_) => {
            error!("the backend panicked");
            (
                Err(DriverError::reader("the backend thread ended unexpectedly")),
                true,
            )
        }
    }
}

/// The part of a command APDU that may be logged: VERIFY and CHANGE REFERENCE DATA
/// (INS 20, 24, 2C) carry PINs, so only their header is shown.
fn redact(apdu: &[u8]) -> &[u8] {
    match apdu.get(1) {
        Some(0x20 | 0x21 | 0x24 | 0x2C) => &apdu[..apdu.len().min(4)],
        _ => apdu,
    }
}
