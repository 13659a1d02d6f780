//! A socket's write side shared by threads and tasks: whoever has a message encodes it
//! into the buffer under the lock and writes it to the socket at once, without handing it
//! to another thread or task (each hand-over costs a wake-up).
//!
//! The socket is non-blocking. When a write would block, the bytes stay in the buffer,
//! later messages queue up behind them, and [`SharedWriter::drain`], run by one task of the
//! owner's, writes them as room appears. No thread ever blocks on a write.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Buf, BytesMut};
use tokio::sync::Notify;

use crate::Writable;

/// The write side of a socket, with state `S` that is changed under the same lock as the
/// buffer (for example the counter that numbers messages, so that numbers increase in the
/// order the bytes are written).
#[derive(Debug)]
pub struct SharedWriter<S> {
    /// The socket (shared with its reader), non-blocking.
    stream: Arc<UnixStream>,
    inner: Mutex<Inner<S>>,
    /// Told when a write got stuck, and when the writer is closed.
    wake: Notify,
}

#[derive(Debug)]
struct Inner<S> {
    state: S,
    /// Encoded bytes not written yet.
    buf: BytesMut,
    /// A write would block: `drain` writes the buffer when the socket has room.
    stuck: bool,
    /// A write failed; the connection is broken.
    broken: Option<io::ErrorKind>,
    /// No more messages: shut the socket down for writing once the buffer is written.
    closed: bool,
}

/// The writer, locked: its state and buffer, and writing the buffer out.
#[derive(Debug)]
pub struct Locked<'a, S> {
    inner: MutexGuard<'a, Inner<S>>,
    writer: &'a SharedWriter<S>,
}

impl<S> SharedWriter<S> {
    /// A writer on `stream` (which it makes non-blocking).
    pub fn new(stream: Arc<UnixStream>, state: S) -> io::Result<SharedWriter<S>> {
        stream.set_nonblocking(true)?;
        Ok(SharedWriter {
            stream,
            inner: Mutex::new(Inner {
                state,
                buf: BytesMut::with_capacity(4 * 1024),
                stuck: false,
                broken: None,
                closed: false,
            }),
            wake: Notify::new(),
        })
    }

    /// Locks the state and the buffer.
    pub fn lock(&self) -> Locked<'_, S> {
        Locked {
            inner: self.inner.lock().unwrap_or_else(PoisonError::into_inner),
            writer: self,
        }
    }

    /// Closes the writer: the socket is shut down for writing as soon as the buffer is
    /// written (now, or by [`SharedWriter::drain`]), so the peer sees the end of the stream.
    pub fn close(&self) {
        let mut locked = self.lock();
        locked.inner.closed = true;
        // What is buffered goes now, or (if the socket is full) is left to `drain`.
        let _ = locked.write_out();
        if locked.inner.buf.is_empty() {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        drop(locked);
        self.wake.notify_one();
    }

    /// Whenever a write got stuck, waits for room and writes the buffer. Returns `Ok` once
    /// the writer is closed and the buffer written, an error when writing fails. Cancel
    /// safe: the bytes stay in the buffer. `waiting` keeps the writability registration
    /// between calls; it is dropped whenever the writing has caught up.
    pub async fn drain(&self, waiting: &mut Option<Writable>) -> io::Result<()> {
        loop {
            // Decided under the lock, waited for without it.
            let stuck = {
                let locked = self.lock();
                if let Some(kind) = locked.inner.broken {
                    return Err(kind.into());
                }
                if !locked.inner.stuck && locked.inner.closed {
                    return Ok(());
                }
                locked.inner.stuck
            };
            if !stuck {
                *waiting = None;
                self.wake.notified().await;
                continue;
            }
            let writable = match waiting {
                Some(w) => w,
                None => waiting.insert(Writable::new(&self.stream)?),
            };
            writable
                .write_with(|| {
                    let mut locked = self.lock();
                    let result = locked.write_some();
                    match &result {
                        Ok(()) => locked.inner.stuck = false,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => locked.inner.broken = Some(e.kind()),
                    }
                    result
                })
                .await?;
            if self.lock().inner.closed {
                let _ = self.stream.shutdown(Shutdown::Write);
            }
        }
    }
}

impl<S> Locked<'_, S> {
    /// The state.
    pub fn state(&mut self) -> &mut S {
        &mut self.inner.state
    }

    /// The state and the buffer, to encode a message into the buffer.
    pub fn parts(&mut self) -> (&mut S, &mut BytesMut) {
        let inner = &mut *self.inner;
        (&mut inner.state, &mut inner.buf)
    }

    /// How many bytes wait to be written.
    pub fn buffered(&self) -> usize {
        self.inner.buf.len()
    }

    /// Whether [`SharedWriter::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed
    }

    /// Writes the buffer until it is empty, or until the socket is full: then the rest is
    /// left to [`SharedWriter::drain`]. An error means the connection is broken.
    pub fn write_out(&mut self) -> io::Result<()> {
        if let Some(kind) = self.inner.broken {
            return Err(kind.into());
        }
        if self.inner.stuck {
            return Ok(());
        }
        match self.write_some() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.inner.stuck = true;
                self.writer.wake.notify_one();
                Ok(())
            }
            Err(e) => {
                self.inner.broken = Some(e.kind());
                self.writer.wake.notify_one();
                Err(e)
            }
        }
    }

    /// Writes from the front of the buffer until it is empty; `WouldBlock` when the socket
    /// is full with bytes left.
    fn write_some(&mut self) -> io::Result<()> {
        let inner = &mut *self.inner;
        while !inner.buf.is_empty() {
            match (&*self.writer.stream).write(&inner.buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => inner.buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Empty: the next message starts at the front again, without reallocating.
        inner.buf.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test]
    async fn stuck_bytes_are_drained_in_order_then_the_stream_ends() {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let writer = Arc::new(SharedWriter::new(Arc::new(ours), 0u32).expect("writer"));
        // Far more than the socket holds: the writes get stuck and the drain task finishes.
        let chunk = vec![7u8; 64 * 1024];
        for n in 0..64u32 {
            let mut locked = writer.lock();
            *locked.state() = n;
            let (_, buf) = locked.parts();
            buf.extend_from_slice(&chunk);
            locked.write_out().expect("not broken");
        }
        assert!(writer.lock().buffered() > 0, "the socket filled up");
        writer.close();
        let drain = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.drain(&mut None).await })
        };
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            (&theirs).read_to_end(&mut all).expect("read to the end");
            all.len()
        });
        drain.await.expect("drain task").expect("drained");
        assert_eq!(reader.join().expect("reader"), 64 * chunk.len());
        assert_eq!(*writer.lock().state(), 63);
    }
}
