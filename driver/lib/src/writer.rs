//! Writing to the server, from the IPC thread, the watcher and the backend's own threads
//! (events).
//!
//! Each message is numbered and encoded under one lock, so ids increase in the order the
//! bytes go out, and written by whichever thread sends it: nothing is handed to another
//! thread to write. The socket is blocking: a server that is behind holds the writer up,
//! which is what the protocol expects of a driver.
//!
//! Responses can be held back briefly ([`Writer::hold`]) so that answers to requests that
//! arrived together leave in one write; [`Writer::flush`] sends them.
//!
//! Events (`CardInserted`, ...) are written only once `DriverReady` is out; the ones sent
//! before wait here until [`Writer::ready`].

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::BytesMut;
use chipcard_ipc::message::{FromDriver, ToDriver};
use chipcard_ipc::{Addressed, IdCounter, MessageCodec, Outgoing};
use tokio_util::codec::Encoder;

use crate::error::Error;

/// The write side of the connection to the server.
#[derive(Debug)]
pub(crate) struct Writer {
    stream: UnixStream,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    ids: IdCounter,
    codec: MessageCodec<ToDriver>,
    /// Encoded messages not written yet (held back responses).
    buf: BytesMut,
    /// Since when the oldest held back message waits.
    held_since: Option<Instant>,
    /// `DriverReady` is out: events are written as they come.
    ready: bool,
    /// Events sent before `DriverReady`.
    early_events: Vec<FromDriver>,
    /// The driver has stopped: events are refused.
    closed: bool,
    /// A write failed: the connection is broken.
    broken: Option<io::ErrorKind>,
}

impl Writer {
    /// A writer on a duplicate of `stream`'s descriptor.
    pub(crate) fn new(stream: &UnixStream) -> io::Result<Writer> {
        Ok(Writer {
            stream: stream.try_clone()?,
            state: Mutex::new(State {
                ids: IdCounter::new(),
                codec: MessageCodec::new(),
                buf: BytesMut::with_capacity(8 * 1024),
                held_since: None,
                ready: false,
                early_events: Vec::new(),
                closed: false,
                broken: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers and sends a message, after whatever is held back. Returns its id.
    pub(crate) fn send(&self, refid: Option<u32>, message: &impl Outgoing) -> Result<u32, Error> {
        let mut st = self.lock();
        let id = encode(&mut st, refid, message)?;
        self.write_out(&mut st)?;
        Ok(id)
    }

    /// Numbers and encodes a message but holds it back until [`Writer::flush`] (or the
    /// next [`Writer::send`]). Returns since when the oldest held message waits.
    pub(crate) fn hold(
        &self,
        refid: Option<u32>,
        message: &impl Outgoing,
    ) -> Result<Instant, Error> {
        let mut st = self.lock();
        encode(&mut st, refid, message)?;
        Ok(*st.held_since.get_or_insert_with(Instant::now))
    }

    /// How many bytes are held back.
    pub(crate) fn held(&self) -> usize {
        self.lock().buf.len()
    }

    /// Writes what is held back.
    pub(crate) fn flush(&self) -> Result<(), Error> {
        let mut st = self.lock();
        if st.buf.is_empty() {
            return Ok(());
        }
        self.write_out(&mut st)
    }

    /// `DriverReady` is out: writes the events that came before it, and from now on
    /// events as they come.
    pub(crate) fn ready(&self) -> Result<(), Error> {
        let mut st = self.lock();
        st.ready = true;
        for event in std::mem::take(&mut st.early_events) {
            encode(&mut st, None, &event)?;
        }
        self.write_out(&mut st)
    }

    /// Sends an event (a push, no refid), or keeps it until `DriverReady` is out.
    pub(crate) fn event(&self, event: FromDriver) -> Result<(), Error> {
        let mut st = self.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        if !st.ready {
            st.early_events.push(event);
            return Ok(());
        }
        encode(&mut st, None, &event)?;
        self.write_out(&mut st)
    }

    /// The driver stops: later events are refused, and the server sees the end of the
    /// stream.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        let _ = self.write_out(&mut st);
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn write_out(&self, st: &mut State) -> Result<(), Error> {
        if let Some(kind) = st.broken {
            return Err(Error::Io(io::Error::new(kind, "the connection is broken")));
        }
        st.held_since = None;
        let result = (&self.stream).write_all(&st.buf);
        st.buf.clear();
        result.map_err(|e| {
            st.broken = Some(e.kind());
            Error::Io(e)
        })
    }
}

fn encode(st: &mut State, refid: Option<u32>, message: &impl Outgoing) -> Result<u32, Error> {
    let id = st.ids.next_id();
    let State { codec, buf, .. } = st;
    let message = Addressed { id, refid, message };
    codec.encode(message, buf)?;
    Ok(id)
}
