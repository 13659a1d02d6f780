//! Writing to the server, shared by the IPC task and the backend thread.
//!
//! Each message is numbered and encoded under one lock, so ids increase in the order the
//! bytes go out, and whichever thread sends it writes it to the socket right away: the
//! backend thread writes its own responses instead of handing them to the IPC task (that
//! would wake the IPC thread for every response, a context switch each). When the server is
//! behind, the IPC task writes what is left as room appears ([`Writer::drain`]).

use std::io;
use std::os::unix::net::UnixStream;

use chipcard_ipc::{Envelope, EnvelopeCodec, IdCounter, Outgoing};
use chipcard_sock::{SharedWriter, Writable};
use tokio_util::codec::Encoder;

use crate::error::Error;

/// The write side of the connection to the server.
#[derive(Debug)]
pub(crate) struct Writer {
    out: SharedWriter<(IdCounter, EnvelopeCodec)>,
}

impl Writer {
    /// A writer on a duplicate of `stream`'s descriptor.
    pub(crate) fn new(stream: &UnixStream) -> io::Result<Writer> {
        Ok(Writer {
            out: SharedWriter::new(stream, (IdCounter::new(), EnvelopeCodec::new()))?,
        })
    }

    /// Numbers and sends a message now (behind whatever is still waiting to be written).
    /// Returns its id.
    pub(crate) fn send(&self, refid: Option<u32>, message: &impl Outgoing) -> Result<u32, Error> {
        let mut locked = self.out.lock();
        let id = encode(&mut locked, refid, message)?;
        locked.write_out()?;
        Ok(id)
    }

    /// Numbers and encodes a message without writing it: [`Writer::flush`] (or the next
    /// [`Writer::send`]) writes it. For a thread that has more to send right away.
    pub(crate) fn queue(&self, refid: Option<u32>, message: &impl Outgoing) -> Result<u32, Error> {
        encode(&mut self.out.lock(), refid, message)
    }

    /// Writes what [`Writer::queue`] left in the buffer.
    pub(crate) fn flush(&self) -> Result<(), Error> {
        Ok(self.out.lock().write_out()?)
    }

    /// How many bytes are waiting to be written.
    pub(crate) fn buffered(&self) -> usize {
        self.out.lock().buffered()
    }

    /// The IPC task's part: writes what is left whenever a write got stuck. Returns only
    /// when writing fails (or after [`Writer::close`], once everything is written).
    pub(crate) async fn drain(&self, waiting: &mut Option<Writable>) -> io::Result<()> {
        self.out.drain(waiting).await
    }

    /// No more messages: the server sees the end of the stream once the buffer is written.
    pub(crate) fn close(&self) {
        self.out.close();
    }
}

fn encode(
    locked: &mut chipcard_sock::Locked<'_, (IdCounter, EnvelopeCodec)>,
    refid: Option<u32>,
    message: &impl Outgoing,
) -> Result<u32, Error> {
    let ((ids, codec), buf) = locked.parts();
    let id = ids.next_id();
    codec.encode(Envelope::new(id, refid, message), buf)?;
    Ok(id)
}
