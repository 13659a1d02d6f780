//! The crate's error type, and the error a backend reports for one request.

use chipcard_ipc::ErrorCode;

/// What a [`Backend`](crate::Backend) reports when a request fails: a protocol error code
/// (PROTOCOL §3) and a text. It becomes the failed outcome of the response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text} ({code})")]
pub struct DriverError {
    /// The code the server and its client see.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub text: String,
}

impl DriverError {
    /// An error with any code.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        DriverError {
            code,
            text: text.into(),
        }
    }

    /// Code 7: there is no card (any more) in the slot.
    pub fn card_removed(text: impl Into<String>) -> Self {
        DriverError::new(ErrorCode::CardRemoved, text)
    }

    /// Code 8: the reader or the driver failed.
    pub fn reader(text: impl Into<String>) -> Self {
        DriverError::new(ErrorCode::DriverError, text)
    }

    /// Code 3: no such reader or slot.
    pub fn not_found(text: impl Into<String>) -> Self {
        DriverError::new(ErrorCode::NotFound, text)
    }

    /// Code 2: a request's arguments are unacceptable (also: a bad configuration).
    pub fn invalid(text: impl Into<String>) -> Self {
        DriverError::new(ErrorCode::InvalidArgument, text)
    }

    /// Code 5: the backend does not do this.
    pub fn not_supported(text: impl Into<String>) -> Self {
        DriverError::new(ErrorCode::NotSupported, text)
    }
}

/// Everything that can end a driver process with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--ipc-fd` descriptor cannot be used.
    #[error(transparent)]
    IpcFd(#[from] chipcard_child::IpcFdError),
    /// The connection to the server failed: framing, encoding or I/O.
    #[error("connection to the server: {0}")]
    Ipc(#[from] chipcard_ipc::Error),
    /// An I/O error outside the connection (runtime, descriptors).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The backend could not start; the server was told with `DriverReady` `ERROR`.
    #[error("the backend did not start: {0}")]
    Start(#[source] DriverError),
    /// The server answered `DriverReady` with an error.
    #[error("the server refused the driver: {0}")]
    Refused(String),
    /// The backend thread ended (it panicked) while requests were open.
    #[error("the backend thread ended unexpectedly")]
    BackendGone,
    /// The driver has stopped; events can no longer be sent.
    #[error("the driver has stopped; the event was dropped")]
    Closed,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
