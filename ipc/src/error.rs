//! The crate's error type and the detail types it carries.

use std::fmt;

use crate::model::Value;

/// Everything that can go wrong in `chipcard-ipc`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not a valid group-format document.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A message field is missing or malformed.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// A frame is malformed or over a limit; the connection cannot continue.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// A message body is not a valid envelope.
    #[error("envelope: {0}")]
    Envelope(String),
    /// A message's id is not greater than the previous one on the connection.
    #[error("message id {id} is not greater than the previous id {last}")]
    IdOrder {
        /// The id received.
        id: u32,
        /// The last id accepted.
        last: u32,
    },
    /// A command this side does not know.
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    /// An I/O error of the underlying stream.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The protocol error code (PROTOCOL §3) a peer should be answered with.
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            Error::Field(_) => ErrorCode::InvalidArgument,
            Error::UnknownCommand(_) => ErrorCode::NotSupported,
            Error::Io(_) => ErrorCode::Generic,
            Error::Parse(_) | Error::Frame(_) | Error::Envelope(_) | Error::IdOrder { .. } => {
                ErrorCode::Protocol
            }
        }
    }
}

/// A group-format syntax error, with its position (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What was wrong or expected.
    pub message: String,
}

/// A problem with one field of a message: its path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FieldError {
    /// Where the field is, e.g. `data/CardId`.
    pub path: String,
    /// What is wrong with it.
    pub reason: FieldProblem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldProblem {
    /// It is not there.
    Missing,
    /// It is there but its value is not acceptable.
    Invalid(String),
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::Missing => f.write_str("missing"),
            FieldProblem::Invalid(why) => f.write_str(why),
        }
    }
}

impl FieldError {
    /// The field `name` is missing.
    pub fn missing(name: &str) -> Self {
        FieldError {
            path: name.to_owned(),
            reason: FieldProblem::Missing,
        }
    }

    /// The field `name` has an unacceptable value.
    pub fn invalid(name: &str, why: impl Into<String>) -> Self {
        FieldError {
            path: name.to_owned(),
            reason: FieldProblem::Invalid(why.into()),
        }
    }

    /// The field `name` has a value of the wrong type.
    pub fn wrong_type(name: &str, expected: &str, got: &Value) -> Self {
        FieldError::invalid(
            name,
            format!("expected {expected}, got {}", got.value_type().keyword()),
        )
    }

    /// The same error, seen from the enclosing group `group`.
    pub fn within(mut self, group: &str) -> Self {
        self.path = format!("{group}/{}", self.path);
        self
    }
}

/// A framing problem (PROTOCOL §2). Any of these ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header block is longer than the limit.
    #[error("header block over {limit} bytes")]
    HeaderTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is longer than the limit.
    #[error("body of {length} bytes is over the limit of {limit} bytes")]
    BodyTooLarge {
        /// The declared Content-Length.
        length: u64,
        /// The limit in bytes.
        limit: usize,
    },
    /// The header block is malformed.
    #[error("malformed header: {0}")]
    MalformedHeader(String),
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame")]
    Truncated,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
