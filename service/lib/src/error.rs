//! The crate's error type, and the error a service reports for one request.

/// What a [`Service`](crate::Service) reports when a request fails: a protocol error code
/// (PROTOCOL §3) and a text. The server passes both on to the client.
pub type ServiceError = chipcard_child::RequestError;

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
