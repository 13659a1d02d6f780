//! The child side of chipcardd's socketpair, shared by the driver library
//! (`chipcard-driver`) and the service library (`chipcard-service`).
//!
//! chipcardd starts drivers and services the same way: a socketpair, the child's end as
//! standard input, and `--ipc-fd 0` on the command line. This crate takes that descriptor
//! over ([`adopt_ipc_fd`]), parses the server-assigned object id given on the command line
//! ([`parse_object_id_arg`]) and sets up logging to standard error ([`init_logging`]).
#![deny(unsafe_code)]

mod fd;

use tracing_subscriber::EnvFilter;

pub use fd::adopt_ipc_fd;

/// A descriptor given as `--ipc-fd N` that cannot carry the connection to the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--ipc-fd {fd}: {reason}")]
pub struct IpcFdError {
    /// The descriptor given.
    pub fd: std::os::fd::RawFd,
    /// Why it was refused.
    pub reason: String,
}

/// Parses an object id from the command line (`0x00000007`, `7`), for clap's
/// `value_parser`: `--driver-id`, `--service-id`.
pub fn parse_object_id_arg<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>().map_err(|e| e.to_string())
}

/// Logs to standard error: `filter` if given, else `RUST_LOG`, else `info`. Does nothing if
/// a global subscriber is already set.
pub fn init_logging(filter: Option<&str>) {
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).unwrap_or_else(|e| {
            eprintln!("--log-level '{f}': {e}; using 'info'");
            EnvFilter::new("info")
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
