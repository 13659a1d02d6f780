//! The `ipc { id refid cmd }` / `data {}` envelope (PROTOCOL §3), the error code table and
//! the per-connection id rules.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use crate::error::{Error, FieldError, Result};
use crate::field::FieldSource;
use crate::message::{MessageSet, Outgoing};
use crate::model::Group;
use crate::parse::Limits;
use crate::view::GroupView;

/// The error codes of PROTOCOL §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    /// Generic failure.
    Generic = 1,
    /// Invalid argument (missing or malformed field).
    InvalidArgument = 2,
    /// Unknown card, reader, driver, service or context.
    NotFound = 3,
    /// The card is not taken by this client.
    NotOwner = 4,
    /// Unknown command.
    NotSupported = 5,
    /// Timeout.
    Timeout = 6,
    /// The card was removed.
    CardRemoved = 7,
    /// Driver or reader error.
    DriverError = 8,
    /// Permission denied.
    PermissionDenied = 9,
    /// Taken by another client.
    Busy = 10,
    /// Framing, envelope or order.
    Protocol = 11,
    /// A command before `ClientReady`.
    NotReady = 12,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::Generic,
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::NotOwner,
        ErrorCode::NotSupported,
        ErrorCode::Timeout,
        ErrorCode::CardRemoved,
        ErrorCode::DriverError,
        ErrorCode::PermissionDenied,
        ErrorCode::Busy,
        ErrorCode::Protocol,
        ErrorCode::NotReady,
    ];

    /// The number on the wire.
    pub fn number(self) -> i32 {
        self as i32
    }

    /// The code for a number; unknown numbers are [`ErrorCode::Generic`].
    pub fn from_number(n: i32) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.number() == n)
            .unwrap_or(ErrorCode::Generic)
    }

    /// A short description.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::Generic => "generic failure",
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::NotFound => "not found",
            ErrorCode::NotOwner => "not owner",
            ErrorCode::NotSupported => "not supported",
            ErrorCode::Timeout => "timeout",
            ErrorCode::CardRemoved => "card removed",
            ErrorCode::DriverError => "driver or reader error",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::Busy => "busy",
            ErrorCode::Protocol => "protocol error",
            ErrorCode::NotReady => "not ready",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.description(), self.number())
    }
}

/// One message: who it answers, what it is, and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sender's id for this message, increasing per connection and direction.
    pub id: u32,
    /// For a response: the id of the request it answers.
    pub refid: Option<u32>,
    /// The command name, e.g. `TakeCard`.
    pub cmd: String,
    /// The message's fields.
    pub data: Group,
}

impl Envelope {
    /// An envelope for a typed message.
    pub fn new(id: u32, refid: Option<u32>, message: &(impl Outgoing + ?Sized)) -> Envelope {
        Envelope {
            id,
            refid,
            cmd: message.cmd().to_owned(),
            data: message.to_data(),
        }
    }

    /// The message as a group-format document (`ipc {}` and `data {}`).
    pub fn to_document(&self) -> Group {
        let mut ipc = Group::new("ipc");
        ipc.set_char("id", self.id.to_string());
        if let Some(refid) = self.refid {
            ipc.set_char("refid", refid.to_string());
        }
        ipc.set_char("cmd", self.cmd.clone());
        let mut data = self.data.clone();
        data.name = "data".to_owned();
        Group::root().with_group(ipc).with_group(data)
    }

    /// Reads an envelope from a parsed document.
    pub fn from_document(mut doc: Group) -> Result<Envelope> {
        let (Head { id, refid }, cmd) = Head::read(&doc, |head, cmd| Ok((head, cmd.to_owned())))?;
        let data_pos = doc.entries.iter().position(
            |e| matches!(e, crate::model::Entry::Group(g) if g.name.eq_ignore_ascii_case("data")),
        );
        let data = match data_pos.map(|p| doc.entries.swap_remove(p)) {
            Some(crate::model::Entry::Group(g)) => g,
            _ => Group::new("data"),
        };
        Ok(Envelope {
            id,
            refid,
            cmd,
            data,
        })
    }

    /// Parses a frame body into an envelope.
    pub fn decode(body: &[u8]) -> Result<Envelope> {
        let doc = crate::parse::parse_bytes(body, &crate::parse::Limits::default())?;
        Envelope::from_document(doc)
    }

    /// The compact group-format body of this message, ready to frame.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        Bytes::from(out)
    }

    /// Appends the compact group-format body of this message to `out`: byte for byte
    /// `write_compact(&self.to_document())`, written from the envelope as it is, without
    /// building (and cloning the data into) a document first.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(48 + self.cmd.len() + crate::write::estimate_compact(&self.data));
        write_head(self.id, self.refid, &self.cmd, out);
        crate::write::write_compact_entries(&self.data, out);
        out.extend_from_slice(b"}\n");
    }
}

/// The `ipc {}` group and the opening line of `data {}`, in the compact form.
fn write_head(id: u32, refid: Option<u32>, cmd: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"ipc {\nchar id=\"");
    crate::write::write_u32(id, out);
    if let Some(refid) = refid {
        out.extend_from_slice(b"\"\nchar refid=\"");
        crate::write::write_u32(refid, out);
    }
    out.extend_from_slice(b"\"\nchar cmd=\"");
    crate::write::write_char_value(cmd, out);
    out.extend_from_slice(b"\"\n}\ndata {\n");
}

/// A typed message to send, with its ids: what a [`MessageCodec`](crate::codec::MessageCodec)
/// frames.
///
/// ```
/// use chipcard_ipc::message::Ping;
/// use chipcard_ipc::{Addressed, Envelope};
/// let mut out = Vec::new();
/// Addressed { id: 3, refid: Some(1), message: &Ping {} }.encode_into(&mut out);
/// assert_eq!(out, Envelope::new(3, Some(1), &Ping {}).encode());
/// ```
#[derive(Debug)]
pub struct Addressed<'a, O: ?Sized> {
    /// The sender's id for this message.
    pub id: u32,
    /// For a response: the id of the request it answers.
    pub refid: Option<u32>,
    /// The message.
    pub message: &'a O,
}

impl<O: Outgoing + ?Sized> Addressed<'_, O> {
    /// Appends the compact group-format body: byte for byte what
    /// `Envelope::new(id, refid, message).encode()` gives.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write_head(self.id, self.refid, self.message.cmd(), out);
        self.message.encode_data(out);
        out.extend_from_slice(b"}\n");
    }
}

/// The `ipc {}` group of a document: the fields every message has.
struct Head {
    id: u32,
    refid: Option<u32>,
}

impl Head {
    /// Reads the `ipc {}` group of `doc` (a [`Group`] or a [`GroupView`]), and gives it and
    /// the command name to `then`.
    fn read<G: FieldSource, R>(doc: &G, then: impl FnOnce(Head, &str) -> Result<R>) -> Result<R> {
        let ipc = doc
            .group("ipc")
            .ok_or_else(|| Error::Envelope("no ipc group".into()))?;
        let in_ipc = |e: FieldError| Error::Envelope(e.within("ipc").to_string());
        let id = parse_id(&ipc, "id").map_err(in_ipc)?;
        let refid = match ipc.has_var("refid") {
            false => None,
            true => Some(parse_id(&ipc, "refid").map_err(in_ipc)?),
        };
        let cmd = ipc.get_char("cmd").map_err(in_ipc)?;
        if cmd.is_empty() {
            return Err(Error::Envelope("ipc/cmd: empty".into()));
        }
        then(Head { id, refid }, &cmd)
    }
}

fn parse_id<G: FieldSource>(g: &G, name: &str) -> std::result::Result<u32, FieldError> {
    let text = g.get_char(name)?;
    text.trim()
        .parse::<u32>()
        .map_err(|_| FieldError::invalid(name, format!("not a decimal id: '{text}'")))
}

/// A message read from its frame body straight into its typed form: the envelope's ids and
/// the message of the set `M` ([`FromClient`](crate::message::FromClient),
/// [`ToClient`](crate::message::ToClient), ...).
///
/// The same as [`Envelope::decode`] followed by `M::decode(&env.cmd, &env.data)`, with the
/// same results and errors, but without the document model in between: the body is read into
/// a [`DocumentView`](crate::view::DocumentView) that borrows from it, and the message takes
/// what it keeps from there.
///
/// ```
/// use chipcard_ipc::message::{FromClient, TakeCard};
/// use chipcard_ipc::{CardId, Envelope, Received};
/// let body = Envelope::new(5, None, &TakeCard { card_id: CardId(42), timeout: None }).encode();
/// let got = Received::<FromClient>::decode(&body)?;
/// assert_eq!((got.id, got.refid), (5, None));
/// assert!(matches!(got.message, FromClient::TakeCard(TakeCard { card_id: CardId(42), .. })));
/// # Ok::<(), chipcard_ipc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<M> {
    /// The sender's id for this message.
    pub id: u32,
    /// For a response: the id of the request it answers.
    pub refid: Option<u32>,
    /// The message.
    pub message: M,
}

impl<M: MessageSet> Received<M> {
    /// Reads a frame body with the default limits.
    pub fn decode(body: &[u8]) -> Result<Self> {
        Received::decode_with(body, &Limits::default())
    }

    /// Reads a frame body with the given limits.
    pub fn decode_with(body: &[u8], limits: &Limits) -> Result<Self> {
        let received = Received::decode_keeping_ids(body, limits)?;
        Ok(Received {
            id: received.id,
            refid: received.refid,
            message: received.message?,
        })
    }

    /// Like [`Received::decode_with`], but a message that does not decode (an unknown
    /// command, a bad field) is an `Err` inside the `Received`, which keeps the ids: so that
    /// the error can be answered with the request's id. The outer `Err` is for a body that is
    /// not a document, or not an envelope.
    pub fn decode_keeping_ids(body: &[u8], limits: &Limits) -> Result<Received<Result<M>>> {
        let incoming = Incoming::<M>::decode(body, limits)?;
        Ok(Received {
            id: incoming.id,
            refid: incoming.refid,
            message: incoming.message,
        })
    }
}

/// A message read from its frame body straight into the set `M`, kept with its ids and its
/// command name whether or not it decoded: what a peer's reading loop gets per frame
/// ([`MessageCodec`](crate::codec::MessageCodec)), so that a message that does not decode can
/// be answered with its id and named as the peer named it.
///
/// ```
/// use chipcard_ipc::message::{FromClient, TakeCard};
/// use chipcard_ipc::{CardId, Envelope, Incoming, Limits};
/// let body = Envelope::new(5, None, &TakeCard { card_id: CardId(42), timeout: None }).encode();
/// let got = Incoming::<FromClient>::decode(&body, &Limits::default())?;
/// assert_eq!((got.id, got.refid, &*got.cmd), (5, None, "TakeCard"));
/// assert!(matches!(got.message, Ok(FromClient::TakeCard(_))));
/// # Ok::<(), chipcard_ipc::Error>(())
/// ```
#[derive(Debug)]
pub struct Incoming<M> {
    /// The sender's id for this message.
    pub id: u32,
    /// For a response: the id of the request it answers.
    pub refid: Option<u32>,
    /// The command name as the peer wrote it (borrowed from the message set when it is
    /// written exactly so, the usual case).
    pub cmd: Cow<'static, str>,
    /// The message, or why it does not decode (an unknown command, a bad field): the same
    /// as `M::decode(&env.cmd, &env.data)` of the [`Envelope`].
    pub message: Result<M>,
}

impl<M: MessageSet> Incoming<M> {
    /// Reads a frame body. `Err` for a body that is not a document, or not an envelope, as
    /// [`Envelope::decode`] (with these limits) would give it.
    pub fn decode(body: &[u8], limits: &Limits) -> Result<Incoming<M>> {
        let doc = crate::parse::parse_view_bytes(body, limits)?;
        let root = doc.root();
        Head::read(&root, |Head { id, refid }, cmd| {
            // As `Envelope::from_document`: the first `data` group, or none (an empty one).
            let data = root.group("data").unwrap_or(GroupView::empty());
            let message = M::decode_data(cmd, &data);
            let cmd = match &message {
                Ok(m) if m.cmd() == cmd => Cow::Borrowed(m.cmd()),
                _ => Cow::Owned(cmd.to_owned()),
            };
            Ok(Incoming {
                id,
                refid,
                cmd,
                message,
            })
        })
    }
}

/// Hands out the ids of the messages one side sends on a connection: 1, 2, 3, ...
#[derive(Debug, Default)]
pub struct IdCounter {
    last: u32,
}

impl IdCounter {
    /// A counter whose first id is 1.
    pub fn new() -> Self {
        IdCounter::default()
    }

    /// The next id.
    pub fn next_id(&mut self) -> u32 {
        self.last = self.last.wrapping_add(1);
        self.last
    }
}

/// Checks that the ids a peer sends strictly increase (PROTOCOL §3).
#[derive(Debug, Default)]
pub struct IdOrder {
    last: Option<u32>,
}

impl IdOrder {
    /// A checker that has seen nothing yet.
    pub fn new() -> Self {
        IdOrder::default()
    }

    /// Accepts `id` if it is greater than every id before it.
    pub fn check(&mut self, id: u32) -> Result<()> {
        match self.last {
            Some(last) if id <= last => Err(Error::IdOrder { id, last }),
            _ => {
                self.last = Some(id);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_number(c.number()), c);
        }
        assert_eq!(ErrorCode::from_number(99), ErrorCode::Generic);
    }

    #[test]
    fn id_order_rejects_repeats_and_decreases() {
        let mut order = IdOrder::new();
        assert!(order.check(1).is_ok());
        assert!(order.check(5).is_ok());
        assert!(order.check(5).is_err());
        assert!(order.check(4).is_err());
        assert!(order.check(6).is_ok());
    }

    #[test]
    fn envelope_document_round_trip() {
        let env = Envelope {
            id: 7,
            refid: Some(3),
            cmd: "TakeCard".into(),
            data: Group::new("data").with_char("CardId", "0x0000002a"),
        };
        let back = Envelope::from_document(env.to_document()).expect("valid envelope");
        assert_eq!(back, env);
    }

    #[test]
    fn received_keeps_the_ids_of_a_message_that_does_not_decode() {
        use crate::message::FromClient;
        let env = Envelope {
            id: 7,
            refid: Some(3),
            cmd: "TakeCard".into(),
            data: Group::new("data").with_char("CardId", "card"),
        };
        let got = Received::<FromClient>::decode_keeping_ids(&env.encode(), &Limits::default())
            .expect("an envelope");
        assert_eq!((got.id, got.refid), (7, Some(3)));
        let e = got.message.expect_err("a bad id");
        assert_eq!(e.to_string(), "data/CardId: not an id: 'card'");
        assert_eq!(
            Received::<FromClient>::decode(&env.encode())
                .expect_err("a bad id")
                .to_string(),
            e.to_string()
        );
        assert!(Received::<FromClient>::decode_keeping_ids(b"x {", &Limits::default()).is_err());
    }

    #[test]
    fn envelope_errors_name_the_field() {
        let doc =
            Group::root().with_group(Group::new("ipc").with_char("id", "x").with_char("cmd", "A"));
        let e = Envelope::from_document(doc).expect_err("bad id");
        assert_eq!(e.to_string(), "envelope: ipc/id: not a decimal id: 'x'");
        let e = Envelope::from_document(Group::root()).expect_err("no ipc");
        assert_eq!(e.code(), ErrorCode::Protocol);
    }
}
