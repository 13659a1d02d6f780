//! The backend's thread: requests arrive over a channel, answers go back over one-shot
//! channels, so the IPC task never waits on the hardware.

use std::sync::mpsc;
use std::thread;

use chipcard_ipc::message::DriverReader;
use chipcard_ipc::{Group, ReaderId};
use tokio::sync::oneshot;
use tracing::{debug, trace, warn};

use crate::backend::{Backend, EventSink};
use crate::error::DriverError;

type Reply<T> = oneshot::Sender<Result<T, DriverError>>;

/// One request for the backend.
pub(crate) enum Job {
    Start {
        config: Group,
        events: EventSink,
        reply: Reply<Vec<DriverReader>>,
    },
    Transmit {
        reader: ReaderId,
        slot: i32,
        apdu: Vec<u8>,
        to_reader: bool,
        reply: Reply<Vec<u8>>,
    },
    Reset {
        reader: ReaderId,
        slot: i32,
        reply: Reply<Vec<u8>>,
    },
    Stop {
        done: oneshot::Sender<()>,
    },
}

/// The IPC side's handle on the backend thread.
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts the thread that owns `backend`.
    pub(crate) fn spawn<B: Backend>(backend: B) -> std::io::Result<Worker> {
        let (jobs, rx) = mpsc::channel();
        // The backend's logs carry the driver's span (driver_id).
        let span = tracing::Span::current();
        thread::Builder::new()
            .name("backend".into())
            .spawn(move || span.in_scope(|| serve_jobs(backend, rx)))?;
        Ok(Worker { jobs })
    }

    /// Queues a job; false when the thread is gone.
    pub(crate) fn submit(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }
}

fn serve_jobs<B: Backend>(mut backend: B, jobs: mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
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
                reader,
                slot,
                apdu,
                to_reader,
                reply,
            } => {
                trace!(%reader, slot, apdu = %hex::encode_upper(redact(&apdu)), "C-APDU");
                let result = if to_reader {
                    backend.reader_command(reader, slot, &apdu)
                } else {
                    backend.transmit(reader, slot, &apdu)
                };
                match &result {
                    Ok(rapdu) => trace!(%reader, slot, rapdu = %hex::encode_upper(rapdu), "R-APDU"),
                    Err(e) => debug!(%reader, slot, error = %e, "transmit failed"),
                }
                let _ = reply.send(result);
            }
            Job::Reset {
                reader,
                slot,
                reply,
            } => {
                let _ = reply.send(backend.reset(reader, slot));
            }
            Job::Stop { done } => {
                backend.stop();
                let _ = done.send(());
                return;
            }
        }
    }
    warn!("the IPC side went away without StopDriver; stopping the backend");
    backend.stop();
}

/// The part of a command APDU that may be logged: VERIFY and CHANGE REFERENCE DATA
/// (INS 20, 24, 2C) carry PINs, so only their header is shown.
fn redact(apdu: &[u8]) -> &[u8] {
    match apdu.get(1) {
        Some(0x20 | 0x21 | 0x24 | 0x2C) => &apdu[..apdu.len().min(4)],
        _ => apdu,
    }
}
