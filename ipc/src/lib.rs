//! chipcard IPC: the language every part of chipcard speaks.
//!
//! - [`model`]: the group-format document ([`Group`], [`Variable`], [`Value`]).
//! - [`parse`](mod@parse) and [`write`](mod@write): the group-format parser and its two writers (pretty, compact).
//! - [`sink`]: where typed fields are written: a [`Group`], or straight into compact text.
//! - [`view`]: a parsed document borrowing from its text, which typed messages are read from.
//! - [`codec`]: the HTTP-like frames of PROTOCOL §2 as a tokio-util codec.
//! - [`envelope`]: the `ipc {}` / `data {}` envelope, error codes and id rules.
//! - [`message`]: typed messages and the sets each side receives.
//!
//! This crate does no I/O of its own and needs no runtime.
#![forbid(unsafe_code)]

pub mod codec;
pub mod envelope;
pub mod error;
pub mod field;
pub mod ids;
#[cfg(feature = "json")]
pub mod json;
pub mod locate;
pub mod message;
pub mod model;
pub mod parse;
pub mod paths;
pub mod sink;
pub mod view;
pub mod write;

pub use codec::{EnvelopeCodec, FrameCodec, MessageCodec};
pub use envelope::{Addressed, Envelope, ErrorCode, IdCounter, IdOrder, Incoming, Received};
pub use error::{Error, FieldError, FrameError, ParseError, Result};
pub use ids::{CardId, ClientId, ContextId, DriverId, ReaderId, ServiceId};
pub use message::{Message, Outcome, Outgoing};
pub use model::{Entry, Group, Value, ValueType, Variable};
pub use parse::{parse, parse_bytes, parse_view, Limits};
pub use view::GroupView;
pub use write::{write_compact, write_pretty};

/// The protocol version this crate speaks, sent as `ChipcardVersion`.
pub const PROTOCOL_VERSION: &str = "1";
