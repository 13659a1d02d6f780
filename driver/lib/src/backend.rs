//! The interface a driver implements: a synchronous backend, and the sink for its events.

use bytes::Bytes;
use chipcard_ipc::message::{
    CardInserted, CardRemoved, CardType, DriverReader, FromDriver, ReaderAdd, ReaderDel,
    ReaderError,
};
use std::sync::Arc;

use chipcard_ipc::{Group, ReaderId};
use tokio::sync::mpsc;

use crate::error::{DriverError, Error};
use crate::writer::Writer;

/// The hardware (or software) side of a driver.
///
/// Every method is called on the driver's IPC thread and may block as long as the hardware
/// needs: a watcher thread keeps answering `Ping` meanwhile. Calls come one at a time, in
/// the order the server sent the requests (`stop` comes on a thread of its own). Threads
/// the backend starts itself (for example to poll for card insertion) report through the
/// [`EventSink`] passed to [`Backend::start`].
///
/// A backend whose readers can work at the same time also offers a [`CardIo`]
/// ([`Backend::card_io`]): card requests then go there, and a long call on one reader does
/// not hold up the others.
pub trait Backend: Send + 'static {
    /// Starts the backend with the driver's configuration group (the `config {}` of
    /// `DriverStart`: `type`, `name`, `vars {}`, driver-specific groups such as
    /// `reader {}`) and returns its readers. Cards already present are reported as
    /// [`Event::CardInserted`] through `events`; the driver sends them after `DriverReady`.
    fn start(
        &mut self,
        config: &Group,
        events: EventSink,
    ) -> Result<Vec<DriverReader>, DriverError>;

    /// Sends a command APDU to the card in `slot` of `reader` and returns the response APDU.
    /// An empty slot is [`DriverError::card_removed`]; an unknown reader or slot
    /// [`DriverError::not_found`].
    fn transmit(
        &mut self,
        reader: ReaderId,
        slot: i32,
        apdu: &[u8],
    ) -> Result<Vec<u8>, DriverError>;

    /// Sends a command to the reader itself (`CardCommand` with `target="reader"`), for
    /// readers with a keypad or display. The default answers "not supported".
    fn reader_command(
        &mut self,
        reader: ReaderId,
        slot: i32,
        apdu: &[u8],
    ) -> Result<Vec<u8>, DriverError> {
        let _ = (slot, apdu);
        Err(no_reader_commands(reader))
    }

    /// Resets the card in `slot` of `reader` and returns its answer to reset.
    fn reset(&mut self, reader: ReaderId, slot: i32) -> Result<Vec<u8>, DriverError>;

    /// Stops the backend: ends its threads and releases the hardware. Called once, when the
    /// server sends `StopDriver` or goes away.
    fn stop(&mut self);

    /// The backend's card I/O for use from several threads at once, if it has one. Asked
    /// once, after a successful [`Backend::start`]. With it, every `CardCommand` and
    /// `ResetCard` goes to the [`CardIo`] instead of [`Backend::transmit`],
    /// [`Backend::reader_command`] and [`Backend::reset`], and calls for different readers
    /// may run at the same time. The default (`None`) keeps every call on the IPC thread,
    /// one at a time.
    fn card_io(&self) -> Option<Arc<dyn CardIo>> {
        None
    }
}

/// Card requests served concurrently ([`Backend::card_io`]): calls for different readers
/// may run at the same time on different threads; calls for one reader come one at a
/// time, in the order the server sent them. Each may block as long as the hardware needs.
pub trait CardIo: Send + Sync + 'static {
    /// As [`Backend::transmit`].
    fn transmit(&self, reader: ReaderId, slot: i32, apdu: &[u8]) -> Result<Vec<u8>, DriverError>;

    /// As [`Backend::reader_command`]; the default answers "not supported".
    fn reader_command(&self, reader: ReaderId, _: i32, _: &[u8]) -> Result<Vec<u8>, DriverError> {
        Err(no_reader_commands(reader))
    }

    /// As [`Backend::reset`].
    fn reset(&self, reader: ReaderId, slot: i32) -> Result<Vec<u8>, DriverError>;
}

/// The answer of a reader that takes no reader commands.
fn no_reader_commands(reader: ReaderId) -> DriverError {
    DriverError::not_supported(format!("reader {reader} takes no reader commands"))
}

/// Something a backend reports without being asked (PROTOCOL §5 driver events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A card was inserted into a slot.
    CardInserted {
        /// The driver's own reader id.
        reader: ReaderId,
        /// The slot.
        slot: i32,
        /// The card's answer to reset.
        atr: Vec<u8>,
        /// Processor or memory card.
        card_type: CardType,
    },
    /// A card was removed from a slot.
    CardRemoved {
        /// The driver's own reader id.
        reader: ReaderId,
        /// The slot.
        slot: i32,
    },
    /// A reader appeared (hotplug).
    ReaderAdd(DriverReader),
    /// A reader vanished (hotplug).
    ReaderDel(ReaderId),
    /// A reader failed.
    ReaderError {
        /// The driver's own reader id.
        reader: ReaderId,
        /// What went wrong.
        text: String,
    },
}

impl Event {
    /// The driver message that carries this event.
    pub fn to_message(&self) -> FromDriver {
        match self {
            Event::CardInserted {
                reader,
                slot,
                atr,
                card_type,
            } => FromDriver::CardInserted(CardInserted {
                reader_id: *reader,
                slot: *slot,
                atr: Bytes::copy_from_slice(atr),
                card_type: *card_type,
            }),
            Event::CardRemoved { reader, slot } => FromDriver::CardRemoved(CardRemoved {
                reader_id: *reader,
                slot: *slot,
            }),
            Event::ReaderAdd(reader) => FromDriver::ReaderAdd(ReaderAdd {
                reader: reader.clone(),
            }),
            Event::ReaderDel(reader) => FromDriver::ReaderDel(ReaderDel { reader_id: *reader }),
            Event::ReaderError { reader, text } => FromDriver::ReaderError(ReaderError {
                reader_id: *reader,
                text: text.clone(),
            }),
        }
    }
}

/// Where a backend and its threads send [`Event`]s. Cheap to clone, usable from any thread.
/// Events keep their order per sender. In a driver the sending thread writes the event to
/// the server itself (waiting only while the server is behind); events sent before
/// `DriverReady` wait until it is out.
#[derive(Debug, Clone)]
pub struct EventSink {
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    /// A test's receiver ([`EventSink::channel`]).
    Channel(mpsc::UnboundedSender<Event>),
    /// The driver's connection.
    Driver(Arc<Writer>),
}

/// The receiving end of an [`EventSink`], for tests of a backend outside a driver.
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl EventSink {
    /// A sink and its receiver. The driver makes its own; use this to test a backend alone.
    pub fn channel() -> (EventSink, EventReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            EventSink {
                target: Target::Channel(tx),
            },
            EventReceiver { rx },
        )
    }

    pub(crate) fn to_writer(writer: Arc<Writer>) -> EventSink {
        EventSink {
            target: Target::Driver(writer),
        }
    }

    /// Sends an event; [`Error::Closed`] once the driver has stopped.
    pub fn send(&self, event: Event) -> Result<(), Error> {
        match &self.target {
            Target::Channel(tx) => tx.send(event).map_err(|_| Error::Closed),
            Target::Driver(writer) => writer.event(event.to_message()),
        }
    }

    /// Sends [`Event::CardInserted`].
    pub fn card_inserted(
        &self,
        reader: ReaderId,
        slot: i32,
        atr: impl Into<Vec<u8>>,
        card_type: CardType,
    ) -> Result<(), Error> {
        self.send(Event::CardInserted {
            reader,
            slot,
            atr: atr.into(),
            card_type,
        })
    }

    /// Sends [`Event::CardRemoved`].
    pub fn card_removed(&self, reader: ReaderId, slot: i32) -> Result<(), Error> {
        self.send(Event::CardRemoved { reader, slot })
    }

    /// Sends [`Event::ReaderError`].
    pub fn reader_error(&self, reader: ReaderId, text: impl Into<String>) -> Result<(), Error> {
        self.send(Event::ReaderError {
            reader,
            text: text.into(),
        })
    }
}

impl EventReceiver {
    /// The next event, waiting for it; `None` when every sink is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// The next event, blocking the thread (not for use on a runtime thread).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }
}
