//! Unix stream sockets on tokio, split into a read half and a write half, that never
//! ask the kernel to report writability unless a write is blocked.
//!
//! # Why
//!
//! `tokio::net::UnixStream` registers its socket for readability *and* writability, and
//! edge-triggered. On a Unix socket every read by the peer that frees buffer space signals
//! "writable" to the writer's epoll, so each message received by one side wakes the other
//! side's thread out of `epoll_wait` for nothing. With chipcard's request/response traffic
//! that is one useless wake-up (a context switch and two system calls) per message and per
//! process, measured as about a quarter of the CPU time of a round trip
//! (docs/performance.md, "Profile and fixes").
//!
//! Here the read half is registered for readability only. The write half writes straight
//! to the socket; only when the socket buffer is full (`WouldBlock`) does it register a
//! duplicate descriptor for writability, wait, and drop that registration again at the next
//! flush. A peer that reads its messages never causes a registration.
//!
//! Both halves implement tokio's `AsyncRead`/`AsyncWrite`, so tokio-util's `FramedRead`
//! and `FramedWrite` work on them as on tokio's own halves. Dropping the write half shuts
//! the socket down for writing, as dropping tokio's `OwnedWriteHalf` does.
//!
//! [`SharedWriter`] is the other way to write: a buffer under a lock that any thread or
//! task writes to the socket directly, for a connection whose messages come from several
//! threads (a driver's backend thread and its IPC task, a client's callers).

mod shared;

pub use shared::{Locked, SharedWriter};

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// The most bytes one read asks for. The part of the buffer a read is given is zeroed
/// first (safe code cannot read into uninitialised memory), so this bounds that cost.
const READ_CHUNK: usize = 8 * 1024;

/// Splits a connected stream into its halves, switching it to non-blocking mode. Both
/// halves use the one descriptor. Must be called within a tokio runtime with I/O enabled.
pub fn split(stream: UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
    let stream = Arc::new(stream);
    let read = read_half(stream.clone())?;
    let write = WriteHalf {
        stream,
        waiter: None,
    };
    Ok((read, write))
}

/// Registers a socket with the runtime's reactor for `interest`.
#[allow(unsafe_code)]
fn register<T: AsRawFd>(stream: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: the contract is that the descriptor stays open, and the same, for as long as
    // the `AsyncFd` lives. Every `T` here is a `UnixStream` or an `Arc` of one, which owns
    // its descriptor: it is closed only when the (last) stream is dropped, and the
    // `AsyncFd` holds it (deregistering before it drops it); `as_raw_fd` always returns
    // that one descriptor.
    let fd = unsafe { AsyncFd::register_with_interest(stream, interest) }?;
    Ok(fd)
}

/// [`split`] for a stream tokio has registered already (it is registered anew).
pub fn split_tokio(stream: tokio::net::UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
    split(stream.into_std()?)
}

/// Only the read half of a connected stream, for code that writes to the socket in its own
/// way (a [`SharedWriter`] on the same `Arc`). Switches the stream to non-blocking mode;
/// must be called within a tokio runtime with I/O enabled.
pub fn read_half(stream: Arc<UnixStream>) -> io::Result<ReadHalf> {
    stream.set_nonblocking(true)?;
    Ok(ReadHalf {
        fd: register(stream, Interest::READABLE)?,
    })
}

/// The reading half: registered for readability only.
#[derive(Debug)]
pub struct ReadHalf {
    fd: AsyncFd<Arc<UnixStream>>,
}

impl ReadHalf {
    /// The socket.
    pub fn get_ref(&self) -> &UnixStream {
        self.fd.get_ref()
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let want = buf.remaining().min(READ_CHUNK);
            let dst = buf.initialize_unfilled_to(want);
            match guard.try_io(|fd| (&**fd.get_ref()).read(dst)) {
                Ok(Ok(n)) => {
                    // A short read drained the socket: wait for the next edge instead of
                    // learning that from a read that fails with `WouldBlock` (as tokio does).
                    if n > 0 && n < want {
                        guard.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // `WouldBlock`: the readiness was cleared; wait for it again.
                Err(_) => {}
            }
        }
    }
}

/// A duplicate of a socket registered for writability: the way to wait for room in its
/// send buffer. Made when a write would block, dropped when the writing has caught up (a
/// duplicate descriptor, because one descriptor cannot be registered twice with the same
/// reactor; it exists only while a write is blocked).
#[derive(Debug)]
pub struct Writable {
    fd: AsyncFd<UnixStream>,
}

impl Writable {
    /// Registers a duplicate of `stream` for writability (within a tokio runtime).
    pub fn new(stream: &UnixStream) -> io::Result<Writable> {
        Ok(Writable {
            fd: register(stream.try_clone()?, Interest::WRITABLE)?,
        })
    }

    /// Calls `write` whenever the socket is writable until it returns anything but
    /// `WouldBlock`, and returns that.
    pub async fn write_with<R>(&self, mut write: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        self.fd.async_io(Interest::WRITABLE, |_| write()).await
    }
}

/// The writing half: writes directly, and waits for writability only while blocked.
#[derive(Debug)]
pub struct WriteHalf {
    stream: Arc<UnixStream>,
    /// Registered while a write is blocked.
    waiter: Option<Writable>,
}

impl WriteHalf {
    /// The socket.
    pub fn get_ref(&self) -> &UnixStream {
        &self.stream
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if let Some(waiter) = &this.waiter {
                let mut guard = ready!(waiter.fd.poll_write_ready(cx))?;
                match guard.try_io(|fd| fd.get_ref().write(buf)) {
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(result) => return Poll::Ready(result),
                    Err(_would_block) => continue,
                }
            }
            match (&*this.stream).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The peer is behind: wait for room, until the next flush.
                    this.waiter = Some(Writable::new(&this.stream)?);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Everything given to `poll_write` is in the kernel: stop watching writability.
        self.get_mut().waiter = None;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.waiter = None;
        Poll::Ready(this.stream.shutdown(Shutdown::Write))
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_pass_both_ways_and_drop_ends_the_stream() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (mut ar, mut aw) = split(a).expect("split a");
        let (mut br, bw) = split(b).expect("split b");
        aw.write_all(b"hello").await.expect("write");
        aw.flush().await.expect("flush");
        let mut got = [0u8; 5];
        br.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hello");
        drop(bw);
        let mut rest = Vec::new();
        ar.read_to_end(&mut rest).await.expect("end of stream");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_blocked_writer_waits_for_the_reader() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (_ar, mut aw) = split(a).expect("split a");
        let (mut br, _bw) = split(b).expect("split b");
        // Far more than the socket buffers hold: the writer must block and be woken.
        let data: Vec<u8> = (0..4_000_000u32).map(|i| i as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            aw.write_all(&data).await.expect("write");
            aw.flush().await.expect("flush");
            aw
        });
        let mut got = vec![0u8; expected.len()];
        br.read_exact(&mut got).await.expect("read");
        assert!(got == expected);
        let aw = writer.await.expect("writer");
        assert!(
            aw.waiter.is_none(),
            "the flush dropped the writability registration"
        );
    }
}
