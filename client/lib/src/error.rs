//! The crate's one error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chipcard_ipc::ErrorCode;

/// Everything that can go wrong when talking to chipcardd.
///
/// The type is `Clone` (sources are kept behind [`Arc`]) because one failure of the
/// connection is handed to every request that was waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket could not be connected (no server, wrong path, no permission).
    #[error("cannot connect to chipcardd at {}: {source}; is chipcardd running?", path.display())]
    Connect {
        /// The socket path that was tried.
        path: PathBuf,
        /// Why the connection failed.
        #[source]
        source: Arc<io::Error>,
    },
    /// Reading from or writing to the connection failed.
    #[error("i/o error on the connection to chipcardd: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The server sent something that breaks the protocol (PROTOCOL §2–4).
    #[error("protocol error: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
        /// The decoding error, when there is one.
        #[source]
        source: Option<Arc<chipcard_ipc::Error>>,
    },
    /// The server refused a request, either with an `Error` message or with a failed
    /// `code`/`text` in the request's own response. Both shapes become this variant.
    #[error("{request} failed: {code}: {text}")]
    Server {
        /// The command of the request that failed, e.g. `TakeCard`.
        request: &'static str,
        /// The error code (PROTOCOL §3).
        code: ErrorCode,
        /// The server's description.
        text: String,
    },
    /// Nothing arrived in time.
    #[error("timed out after {} ms waiting for {what}", after.as_millis())]
    Timeout {
        /// What was being waited for, e.g. `the answer to ListReaders` or `a card`.
        what: String,
        /// How long was waited.
        after: Duration,
    },
    /// The connection is gone; no more requests can be made on it.
    #[error("connection to chipcardd closed: {reason}")]
    Closed {
        /// Why, e.g. `the server closed the connection`.
        reason: String,
    },
    /// An argument given to this library is not acceptable (e.g. an APDU too short or too
    /// large for a frame). Nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The protocol error code, for [`Error::Server`]; `None` for every other variant.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the server answered with `code`.
    pub fn is_server(&self, code: ErrorCode) -> bool {
        self.server_code() == Some(code)
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Protocol {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn protocol_from(message: impl Into<String>, source: chipcard_ipc::Error) -> Self {
        Error::Protocol {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_clear_line() {
        let e = Error::Connect {
            path: PathBuf::from("/run/x.sock"),
            source: Arc::new(io::Error::from(io::ErrorKind::NotFound)),
        };
        assert_eq!(
            e.to_string(),
            "cannot connect to chipcardd at /run/x.sock: entity not found; is chipcardd running?"
        );
        let e = Error::Server {
            request: "TakeCard",
            code: ErrorCode::Busy,
            text: "taken by another client".into(),
        };
        assert_eq!(
            e.to_string(),
            "TakeCard failed: busy (10): taken by another client"
        );
        assert!(e.is_server(ErrorCode::Busy));
        assert_eq!(
            Error::Timeout {
                what: "a card".into(),
                after: Duration::from_millis(1500)
            }
            .to_string(),
            "timed out after 1500 ms waiting for a card"
        );
    }
}
