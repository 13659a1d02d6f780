//! Reader workers: one thread per reader serves the card requests handed to it, through the
//! backend's [`CardIo`], and writes their answers itself.
//!
//! Requests are handed over only while another call is long (the watcher hands over the
//! requests for other readers than the busy one) or while the reader's worker still has
//! requests queued (so one reader's requests stay in order). Otherwise the IPC thread serves
//! them inline, which is cheaper: the check costs one atomic load while no worker has work.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread;

use chipcard_ipc::ReaderId;
use tracing::{debug, error, warn};

use crate::backend::CardIo;
use crate::error::DriverError;
use crate::request::{CardAnswer, CardRequest};
use crate::writer::Writer;

/// The reader workers of one driver.
pub(crate) struct Workers {
    io: Arc<dyn CardIo>,
    writer: Arc<Writer>,
    /// Requests handed over and not answered yet, over every reader.
    pending: Arc<AtomicUsize>,
    /// A call on a worker panicked: the driver must end.
    panicked: Arc<AtomicBool>,
    lanes: Mutex<HashMap<ReaderId, Lane>>,
}

/// One reader's worker: its queue and how many requests wait there or run.
struct Lane {
    jobs: mpsc::Sender<Job>,
    pending: Arc<AtomicUsize>,
}

struct Job {
    refid: u32,
    request: CardRequest,
}

impl Workers {
    /// Workers calling `io`, writing to `writer`; no thread starts before the first
    /// request is handed over.
    pub(crate) fn new(io: Arc<dyn CardIo>, writer: Arc<Writer>) -> Workers {
        Workers {
            io,
            writer,
            pending: Arc::new(AtomicUsize::new(0)),
            panicked: Arc::new(AtomicBool::new(false)),
            lanes: Mutex::new(HashMap::new()),
        }
    }

    fn lanes(&self) -> MutexGuard<'_, HashMap<ReaderId, Lane>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The backend's card I/O, for the IPC thread's own calls.
    pub(crate) fn io(&self) -> &dyn CardIo {
        &*self.io
    }

    /// Whether `reader`'s worker has requests queued or running: a later request for the
    /// reader must then go there too.
    pub(crate) fn busy(&self, reader: ReaderId) -> bool {
        if self.pending.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.lanes()
            .get(&reader)
            .is_some_and(|lane| lane.pending.load(Ordering::SeqCst) > 0)
    }

    /// Whether a call on a worker panicked.
    pub(crate) fn panicked(&self) -> bool {
        self.panicked.load(Ordering::SeqCst)
    }

    /// Queues `request` on its reader's worker, starting the worker on first use. Gives the
    /// request back when no thread can be started.
    pub(crate) fn hand_over(&self, refid: u32, request: CardRequest) -> Result<(), CardRequest> {
        let reader = request.reader();
        let mut lanes = self.lanes();
        let lane = match lanes.entry(reader) {
            Entry::Occupied(lane) => lane.into_mut(),
            Entry::Vacant(place) => match self.spawn(reader) {
                Ok(lane) => place.insert(lane),
                Err(e) => {
                    warn!(%reader, error = %e, "cannot start a reader worker");
                    return Err(request);
                }
            },
        };
        lane.pending.fetch_add(1, Ordering::SeqCst);
        self.pending.fetch_add(1, Ordering::SeqCst);
        debug!(%reader, refid, "handed to the reader's worker");
        if let Err(mpsc::SendError(job)) = lane.jobs.send(Job { refid, request }) {
            lane.pending.fetch_sub(1, Ordering::SeqCst);
            self.pending.fetch_sub(1, Ordering::SeqCst);
            lanes.remove(&reader);
            return Err(job.request);
        }
        Ok(())
    }

    /// Ends the workers once their queues are empty; nothing more is handed over.
    pub(crate) fn close(&self) {
        self.lanes().clear();
    }

    fn spawn(&self, reader: ReaderId) -> std::io::Result<Lane> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let lane_pending = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            io: self.io.clone(),
            writer: self.writer.clone(),
            pending: self.pending.clone(),
            lane_pending: lane_pending.clone(),
            panicked: self.panicked.clone(),
        };
        let span = tracing::Span::current();
        thread::Builder::new()
            .name(format!("reader-{reader}"))
            .spawn(move || span.in_scope(|| worker.run(&queue)))?;
        Ok(Lane {
            jobs,
            pending: lane_pending,
        })
    }
}

/// What a worker thread holds.
struct Worker {
    io: Arc<dyn CardIo>,
    writer: Arc<Writer>,
    pending: Arc<AtomicUsize>,
    lane_pending: Arc<AtomicUsize>,
    panicked: Arc<AtomicBool>,
}

impl Worker {
    fn run(&self, queue: &mpsc::Receiver<Job>) {
        for Job { refid, request } in queue {
            let result = catch_unwind(AssertUnwindSafe(|| request.call_io(&*self.io)))
                .unwrap_or_else(|_| {
                    error!(reader = %request.reader(), "the backend panicked");
                    self.panicked.store(true, Ordering::SeqCst);
                    Err(DriverError::reader("the backend thread ended unexpectedly"))
                });
            let sent = match request.answer(result) {
                CardAnswer::Command(response) => self.writer.send(Some(refid), &response),
                CardAnswer::Reset(response) => self.writer.send(Some(refid), &response),
            };
            if let Err(e) = sent {
                debug!(refid, error = %e, "cannot answer the server");
            }
            // Counted down only once the answer is out: a later request for the reader,
            // served inline, answers after it.
            self.lane_pending.fetch_sub(1, Ordering::SeqCst);
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
