//! The crate's error type, and the error a backend reports for one request.

/// What a [`Backend`](crate::Backend) reports when a request fails: a protocol error code
/// (PROTOCOL §3) and a text. It becomes the failed outcome of the response.
pub type DriverError = chipcard_child::RequestError;

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
