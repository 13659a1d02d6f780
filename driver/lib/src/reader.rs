//! Reading the server's messages: by the IPC thread, or by the watcher while the IPC
//! thread is busy in a long backend call ([`crate::watch`]). One buffer under one lock:
//! whoever reads holds it, so every frame is decoded once, in order, and its id checked in
//! that order.
//!
//! The socket is blocking; the IPC thread waits in `read` itself, with no poller between
//! it and the socket. The watcher reads with a timeout, so that it notices when the call it
//! covers ends.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use chipcard_ipc::message::ToDriver;
use chipcard_ipc::{IdOrder, MessageCodec};
use tokio_util::codec::Decoder;

/// How much one `read` asks for.
const READ_CHUNK: usize = 8 * 1024;

/// A message from the server, read straight into its typed form (which is an `Err` when
/// the command is unknown or a field is bad).
pub(crate) type FromServer = chipcard_ipc::Incoming<ToDriver>;

/// What came from the server.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A message whose id increases.
    Message(FromServer),
    /// A message whose id does not increase.
    OutOfOrder(FromServer, chipcard_ipc::Error),
    /// A frame whose body is not a valid envelope; the connection goes on.
    Malformed(chipcard_ipc::Error),
    /// A broken frame; the connection cannot go on.
    Broken(chipcard_ipc::Error),
    /// The server closed the connection, or reading failed.
    End(Option<io::Error>),
}

/// The read side of the connection.
#[derive(Debug)]
pub(crate) struct Reader {
    stream: UnixStream,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    buf: BytesMut,
    codec: MessageCodec<ToDriver>,
    order: IdOrder,
    /// Messages the watcher read and left for the IPC thread, in order.
    deferred: VecDeque<Incoming>,
    /// The end of the stream (or a broken frame) was reached: nothing more to read.
    ended: bool,
}

/// The reader, locked by one thread.
pub(crate) struct Locked<'a> {
    reader: &'a Reader,
    state: MutexGuard<'a, State>,
}

impl Reader {
    /// A reader on `stream`, which it switches to blocking mode.
    pub(crate) fn new(stream: UnixStream) -> io::Result<Reader> {
        stream.set_nonblocking(false)?;
        Ok(Reader {
            stream,
            state: Mutex::new(State {
                buf: BytesMut::with_capacity(READ_CHUNK),
                codec: MessageCodec::new(),
                order: IdOrder::new(),
                deferred: VecDeque::new(),
                ended: false,
            }),
        })
    }

    /// Locks the reader (waits while the watcher reads).
    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked {
            reader: self,
            state: self.state.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

impl Locked<'_> {
    /// The next message: a deferred one, one already buffered, or one read from the
    /// socket, waiting as long as it takes. `before_wait` runs before the thread blocks
    /// in `read` (to write what is held back, say).
    pub(crate) fn next(&mut self, mut before_wait: impl FnMut()) -> Incoming {
        if let Some(item) = self.state.deferred.pop_front() {
            return item;
        }
        loop {
            if let Some(item) = self.decode() {
                return item;
            }
            before_wait();
            match self.read() {
                Ok(true) => {}
                Ok(false) => return self.end(None),
                Err(e) => return self.end(Some(e)),
            }
        }
    }

    /// Whether more has arrived already: a message left by the watcher, or bytes in the
    /// buffer (at least the start of the next message).
    pub(crate) fn has_input(&self) -> bool {
        !self.state.deferred.is_empty() || !self.state.buf.is_empty()
    }

    /// For the watcher: reads for at most `slice` and hands every message it gets to
    /// `each` (which may keep it, returning `None`, or give it back to be left for the IPC
    /// thread). False once the stream has ended.
    pub(crate) fn read_for(
        &mut self,
        slice: Duration,
        mut each: impl FnMut(Incoming) -> Option<Incoming>,
    ) -> bool {
        while let Some(item) = self.decode() {
            if let Some(left) = each(item) {
                self.state.deferred.push_back(left);
            }
        }
        if self.state.ended {
            return false;
        }
        if self.reader.stream.set_read_timeout(Some(slice)).is_err() {
            return true;
        }
        let result = self.read();
        let _ = self.reader.stream.set_read_timeout(None);
        match result {
            Ok(true) => true,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Ok(false) => {
                let end = self.end(None);
                self.state.deferred.push_back(end);
                false
            }
            Err(e) => {
                let end = self.end(Some(e));
                self.state.deferred.push_back(end);
                false
            }
        }
    }

    /// Decodes one message from the buffer, checking its id.
    fn decode(&mut self) -> Option<Incoming> {
        let state = &mut *self.state;
        if state.ended {
            return None;
        }
        match state.codec.decode(&mut state.buf) {
            Ok(None) => None,
            Ok(Some(Ok(message))) => Some(match state.order.check(message.id) {
                Ok(()) => Incoming::Message(message),
                Err(e) => Incoming::OutOfOrder(message, e),
            }),
            Ok(Some(Err(e))) => Some(Incoming::Malformed(e)),
            Err(e) => {
                state.ended = true;
                Some(Incoming::Broken(e))
            }
        }
    }

    /// One `read` into the buffer; false at the end of the stream.
    fn read(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match (&self.reader.stream).read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.state.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The end of the stream: a frame cut short is a broken frame.
    fn end(&mut self, error: Option<io::Error>) -> Incoming {
        let state = &mut *self.state;
        state.ended = true;
        // Every complete frame was decoded before the read that found the end: what is
        // left, if anything, is a frame cut short.
        if error.is_none() && !state.buf.is_empty() {
            if let Err(e) = state.codec.decode_eof(&mut state.buf) {
                return Incoming::Broken(e);
            }
        }
        Incoming::End(error)
    }
}
