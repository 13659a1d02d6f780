//! A virtual smart card for vsmartcard's `vpcd` reader, backed by chipcard's emulated card.
//!
//! `vpcd` is an IFD handler for pcscd (Debian package `vsmartcard-vpcd`): each of its readers
//! listens on a TCP port, and whatever connects to that port is the card in the reader. This
//! crate is such a card: [`VirtualCard::connect`] connects a
//! [`chipcard_emulcard::EmulCard`] to the port, [`VirtualCard::serve`] answers the reader
//! until the connection closes, and [`VirtualCard::spawn`] does that on a thread of its
//! own, so that a test can insert a card (connect) and remove it again
//! ([`RunningCard::remove`], which closes the connection).
//!
//! ```no_run
//! use chipcard_emulcard::CardConfig;
//! use chipcard_vpcd_card::VirtualCard;
//!
//! # fn main() -> Result<(), chipcard_vpcd_card::Error> {
//! // Insert a card into the reader listening on port 35963 ...
//! let card = VirtualCard::connect(("127.0.0.1", 35963), CardConfig::default())?.spawn()?;
//! // ... let pcscd's clients use it, then take it out again.
//! let emul = card.remove()?;
//! assert!(!emul.is_verified());
//! # Ok(())
//! # }
//! ```
//!
//! # The vpcd protocol
//!
//! Both directions carry messages of a 2-byte big-endian length and that many bytes. The
//! reader sends either a 1-byte control message or a command APDU:
//!
//! | message | meaning | the card's answer |
//! |---|---|---|
//! | `00` | power off | none; the card forgets its volatile state (as on a reset) |
//! | `01` | power on | none; the card is reset |
//! | `02` | reset | none; the card is reset |
//! | `04` | get the ATR | the ATR |
//! | 2 bytes or more | a command APDU | the response APDU (data, SW1 SW2) |
//!
//! Other 1-byte messages and empty messages are ignored (logged at `debug`). A reset keeps
//! the card's files and PIN retry counter and forgets the verified PIN and the selection
//! (see [`chipcard_emulcard::EmulCard::reset`]).
//!
//! # Latency
//!
//! vpcd writes the length and the payload of a message in two `send` calls without
//! `TCP_NODELAY`, so the payload waits for the ACK of the length: with the peer's delayed
//! ACK that is about 40 ms per APDU. The card therefore sets `TCP_QUICKACK` before every
//! read (the kernel clears it again by itself) and `TCP_NODELAY` on its own side, and it
//! writes each answer with one `write` call. A round trip through pcscd then takes tens of
//! microseconds.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::thread::{self, JoinHandle};

use chipcard_emulcard::{CardConfig, ConfigError, EmulCard};
use socket2::SockRef;
use tracing::{debug, info, trace};

/// The examples of README.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The vpcd control message "power off".
pub const POWER_OFF: u8 = 0x00;
/// The vpcd control message "power on".
pub const POWER_ON: u8 = 0x01;
/// The vpcd control message "reset".
pub const RESET: u8 = 0x02;
/// The vpcd control message "get ATR".
pub const GET_ATR: u8 = 0x04;

/// The TCP port of vpcd's first reader in Debian's `/etc/reader.conf.d/vpcd`.
pub const DEFAULT_PORT: u16 = 35963;

/// What can go wrong with a virtual card.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The card description is not valid.
    #[error("card configuration: {0}")]
    Config(#[from] ConfigError),
    /// The reader's address did not resolve.
    #[error("{addr}: {source}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Connecting to the reader failed (is pcscd running with the vpcd reader?).
    #[error("connecting to vpcd at {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Reading from or writing to the reader failed.
    #[error("talking to vpcd at {addr}: {source}")]
    Io {
        /// The reader's address.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// An answer larger than a vpcd message can carry (65535 bytes).
    #[error("an answer of {0} bytes does not fit a vpcd message (at most 65535)")]
    TooLong(usize),
    /// The thread serving the card panicked.
    #[error("the card's thread panicked")]
    Panicked,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A card connected to a vpcd reader: inserted, from pcscd's point of view, as soon as
/// pcscd next polls the reader (about every 400 ms).
#[derive(Debug)]
pub struct VirtualCard {
    stream: TcpStream,
    peer: SocketAddr,
    card: EmulCard,
}

impl VirtualCard {
    /// Builds an [`EmulCard`] from `config` and connects it to the vpcd reader at `addr`
    /// (for example `("127.0.0.1", 35963)`).
    pub fn connect(addr: impl ToSocketAddrs + std::fmt::Debug, config: CardConfig) -> Result<Self> {
        VirtualCard::connect_card(addr, EmulCard::new(config)?)
    }

    /// Connects an existing card (for example one taken out with [`RunningCard::remove`],
    /// with its files as they were) to the vpcd reader at `addr`.
    pub fn connect_card(
        addr: impl ToSocketAddrs + std::fmt::Debug,
        card: EmulCard,
    ) -> Result<Self> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| Error::Resolve {
                addr: format!("{addr:?}"),
                source,
            })?
            .collect();
        let mut last = Err(Error::Resolve {
            addr: format!("{addr:?}"),
            source: io::Error::new(io::ErrorKind::NotFound, "the name has no address"),
        });
        for candidate in addrs {
            match TcpStream::connect(candidate) {
                Ok(stream) => {
                    let io = |source| Error::Io {
                        addr: candidate,
                        source,
                    };
                    // Sticky: our answers go out at once.
                    stream.set_nodelay(true).map_err(io)?;
                    info!(reader = %candidate, atr = %hex::encode_upper(card.atr()), "card inserted");
                    return Ok(VirtualCard {
                        stream,
                        peer: candidate,
                        card,
                    });
                }
                Err(source) => {
                    last = Err(Error::Connect {
                        addr: candidate.to_string(),
                        source,
                    })
                }
            }
        }
        last
    }

    /// The reader's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The card.
    pub fn card(&self) -> &EmulCard {
        &self.card
    }

    /// Answers the reader until it closes the connection (or the connection is shut down,
    /// see [`RunningCard::remove`]), then returns the card.
    pub fn serve(mut self) -> Result<EmulCard> {
        let peer = self.peer;
        let io = |source| Error::Io { addr: peer, source };
        let mut out = Vec::with_capacity(2 + 258);
        loop {
            let Some(message) = self.read_message().map_err(io)? else {
                info!(reader = %peer, "the reader closed the connection; card removed");
                return Ok(self.card);
            };
            let answer = self.answer(&message);
            if let Some(answer) = answer {
                let len = u16::try_from(answer.len()).map_err(|_| Error::TooLong(answer.len()))?;
                out.clear();
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&answer);
                // One write: length and payload travel in one segment.
                self.stream.write_all(&out).map_err(io)?;
            }
        }
    }

    /// Runs [`VirtualCard::serve`] on a thread of its own.
    pub fn spawn(self) -> Result<RunningCard> {
        let peer = self.peer;
        let control = self
            .stream
            .try_clone()
            .map_err(|source| Error::Io { addr: peer, source })?;
        let thread = thread::Builder::new()
            .name(format!("vpcd-card {peer}"))
            .spawn(move || self.serve())
            .map_err(|source| Error::Io { addr: peer, source })?;
        Ok(RunningCard {
            control,
            peer,
            thread: Some(thread),
        })
    }

    /// The card's answer to one message from the reader, if it gets one.
    fn answer(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        match message {
            [POWER_OFF] => {
                debug!(reader = %self.peer, "power off");
                self.card.reset();
                None
            }
            [POWER_ON] => {
                debug!(reader = %self.peer, "power on");
                self.card.reset();
                None
            }
            [RESET] => {
                debug!(reader = %self.peer, "reset");
                self.card.reset();
                None
            }
            [GET_ATR] => Some(self.card.atr().to_vec()),
            [] | [_] => {
                debug!(reader = %self.peer, message = %hex::encode_upper(message), "unknown control message ignored");
                None
            }
            apdu => {
                trace!(reader = %self.peer, apdu = %hex::encode_upper(redact(apdu)), "C-APDU");
                let response = self.card.transmit(apdu);
                trace!(reader = %self.peer, rapdu = %hex::encode_upper(&response), "R-APDU");
                Some(response)
            }
        }
    }

    /// Reads one message; `None` when the reader closed the connection.
    fn read_message(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 2];
        if !self.read_full(&mut len)? {
            return Ok(None);
        }
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !self.read_full(&mut message)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed inside a message",
            ));
        }
        Ok(Some(message))
    }

    /// Fills `buf`; false when the connection closed before the first byte.
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            // Not permanent: the kernel may leave quick-ACK mode after any read.
            set_quickack(&self.stream)?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed inside a message",
                    ))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A connection shut down by RunningCard::remove, or reset by the reader:
                // the card is out.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset && filled == 0 => {
                    return Ok(false)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

fn set_quickack(stream: &TcpStream) -> io::Result<()> {
    SockRef::from(stream).set_tcp_quickack(true)
}

/// The part of a command APDU that may be logged: VERIFY and CHANGE REFERENCE DATA carry
/// PINs, so only their header is shown.
fn redact(apdu: &[u8]) -> &[u8] {
    match apdu.get(1) {
        Some(0x20 | 0x21 | 0x24 | 0x2C) => &apdu[..apdu.len().min(4)],
        _ => apdu,
    }
}

/// A card being served on its own thread ([`VirtualCard::spawn`]). Dropping it removes
/// the card, like [`RunningCard::remove`] without the result.
#[derive(Debug)]
pub struct RunningCard {
    control: TcpStream,
    peer: SocketAddr,
    thread: Option<JoinHandle<Result<EmulCard>>>,
}

impl RunningCard {
    /// The reader's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// True while the connection is open (the reader has not closed it).
    pub fn is_inserted(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Takes the card out: closes the connection and waits for the thread. Returns the card,
    /// or the error that ended the thread earlier.
    pub fn remove(mut self) -> Result<EmulCard> {
        self.stop()
    }

    fn stop(&mut self) -> Result<EmulCard> {
        // Shutting down both directions wakes the blocked read; vpcd sees the card gone at
        // its next poll. NotConnected: the reader closed the connection first.
        match self.control.shutdown(Shutdown::Both) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(source) => {
                return Err(Error::Io {
                    addr: self.peer,
                    source,
                })
            }
        }
        let thread = self.thread.take().ok_or(Error::Panicked)?;
        let card = thread.join().map_err(|_| Error::Panicked)??;
        info!(reader = %self.peer, "card removed");
        Ok(card)
    }
}

impl Drop for RunningCard {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use chipcard_emulcard::Pin;

    use super::*;

    /// Plays vpcd: accepts the card and exchanges messages with it.
    struct Reader {
        stream: TcpStream,
    }

    impl Reader {
        fn send(&mut self, payload: &[u8]) {
            let len = u16::try_from(payload.len()).expect("short payload");
            // As vpcd does: length and payload in separate writes.
            self.stream.write_all(&len.to_be_bytes()).expect("write");
            self.stream.write_all(payload).expect("write");
        }

        fn recv(&mut self) -> Vec<u8> {
            let mut len = [0u8; 2];
            self.stream.read_exact(&mut len).expect("length");
            let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
            self.stream.read_exact(&mut payload).expect("payload");
            payload
        }

        fn exchange(&mut self, payload: &[u8]) -> Vec<u8> {
            self.send(payload);
            self.recv()
        }
    }

    fn reader_and_card(config: CardConfig) -> (Reader, RunningCard) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let card = VirtualCard::connect(addr, config)
            .expect("connects")
            .spawn()
            .expect("spawns");
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (Reader { stream }, card)
    }

    #[test]
    fn speaks_the_vpcd_protocol() {
        let config = CardConfig::default().with_pin(Pin::from_text("1234").expect("valid pin"), 3);
        let atr = config.atr.clone();
        let (mut reader, card) = reader_and_card(config);
        assert!(card.is_inserted());
        reader.send(&[POWER_ON]);
        assert_eq!(reader.exchange(&[GET_ATR]), atr);
        assert_eq!(
            reader.exchange(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00]),
            [0x90, 0x00]
        );
        assert_eq!(
            reader.exchange(&[0x00, 0x20, 0x00, 0x80, 0x04, b'1', b'2', b'3', b'4']),
            [0x90, 0x00]
        );
        assert_eq!(reader.exchange(&[0x00, 0x20, 0x00, 0x80]), [0x90, 0x00]);
        // Unknown control messages get no answer; reset forgets the PIN.
        reader.send(&[0x03]);
        reader.send(&[RESET]);
        assert_eq!(reader.exchange(&[0x00, 0x20, 0x00, 0x80]), [0x63, 0xC3]);
        reader.exchange(&[0x00, 0x20, 0x00, 0x80, 0x04, b'1', b'2', b'3', b'4']);
        reader.send(&[POWER_OFF]);
        reader.send(&[POWER_ON]);
        assert_eq!(reader.exchange(&[0x00, 0x20, 0x00, 0x80]), [0x63, 0xC3]);

        // An extended APDU: READ BINARY with a 3-byte Le of the 26-byte EF 2F02.
        reader.exchange(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x2F, 0x02]);
        let long = reader.exchange(&[0x00, 0xB0, 0x00, 0x00, 0x00, 0x01, 0x00]);
        assert_eq!(long.len(), 26 + 2);
        assert_eq!(&long[26..], [0x62, 0x82]);

        let card = card.remove().expect("removed cleanly");
        assert!(!card.is_verified());
        let mut rest = Vec::new();
        reader.stream.read_to_end(&mut rest).expect("eof");
        assert!(rest.is_empty(), "the card closed the connection");
    }

    #[test]
    fn the_card_ends_when_the_reader_closes() {
        let (reader, card) = reader_and_card(CardConfig::default());
        drop(reader);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while card.is_inserted() {
            assert!(std::time::Instant::now() < deadline, "card thread ends");
            thread::sleep(Duration::from_millis(5));
        }
        card.remove().expect("a closed connection is a normal end");
    }

    #[test]
    fn errors_are_clear() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        let e = VirtualCard::connect(addr, CardConfig::default()).expect_err("nobody listens");
        assert!(e.to_string().starts_with("connecting to vpcd at"), "{e}");
        let e = VirtualCard::connect(addr, CardConfig::with_atr(vec![0x3B])).expect_err("bad ATR");
        assert!(matches!(e, Error::Config(ConfigError::AtrLength(1))), "{e}");
    }

    #[test]
    fn redacts_pins() {
        assert_eq!(
            redact(&[0x00, 0x20, 0x00, 0x80, 0x02, 0x31, 0x32]),
            [0x00, 0x20, 0x00, 0x80]
        );
        assert_eq!(redact(&[0x00, 0xA4, 0x00]), [0x00, 0xA4, 0x00]);
    }
}
