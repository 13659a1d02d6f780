//! The crate's error type, and the error a service reports for one request.

use chipcard_ipc::ErrorCode;

/// What a [`Service`](crate::Service) reports when a request fails: a protocol error code
/// (PROTOCOL §3) and a text. The server passes both on to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text} ({code})")]
pub struct ServiceError {
    /// The code the client sees.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub text: String,
}

impl ServiceError {
    /// An error with any code.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        ServiceError {
            code,
            text: text.into(),
        }
    }

    /// Code 2: the request's arguments are unacceptable (also: a bad configuration).
    pub fn invalid(text: impl Into<String>) -> Self {
        ServiceError::new(ErrorCode::InvalidArgument, text)
    }

    /// Code 3: something the request names does not exist.
    pub fn not_found(text: impl Into<String>) -> Self {
        ServiceError::new(ErrorCode::NotFound, text)
    }

    /// Code 5: the service does not know this command.
    pub fn not_supported(text: impl Into<String>) -> Self {
        ServiceError::new(ErrorCode::NotSupported, text)
    }

    /// Code 1: anything else.
    pub fn failed(text: impl Into<String>) -> Self {
        ServiceError::new(ErrorCode::Generic, text)
    }
}

/// Everything that can end a service process with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--ipc-fd` descriptor cannot be used.
    #[error(transparent)]
    IpcFd(#[from] chipcard_child::IpcFdError),
    /// The connection to the server failed: framing, encoding or I/O.
    #[error("connection to the server: {0}")]
    Ipc(#[from] chipcard_ipc::Error),
    /// An I/O error outside the connection (runtime, threads).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The service could not start; the server was told with `ServiceReady` `ERROR`.
    #[error("the service did not start: {0}")]
    Start(#[source] ServiceError),
    /// The server answered `ServiceReady` with an error.
    #[error("the server refused the service: {0}")]
    Refused(String),
    /// The service's thread ended (it panicked).
    #[error("the service thread ended unexpectedly")]
    ServiceGone,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
