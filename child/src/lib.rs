//! The child side of chipcardd's socketpair, shared by the driver library
//! (`chipcard-driver`) and the service library (`chipcard-service`).
//!
//! chipcardd starts drivers and services the same way: a socketpair, the child's end as
//! standard input, and `--ipc-fd 0` on the command line. This crate takes that descriptor
//! over ([`adopt_ipc_fd`]), parses the command line ([`ChildArgs`], with the
//! server-assigned object id as [`ChildId`]), sets up logging to standard error
//! ([`init_logging`]) and runs the process's serve loop on a current-thread runtime
//! ([`serve_on_fd`]); [`run_child`] is that whole life with its exit code. A failed request
//! of either is a [`RequestError`].
#![deny(unsafe_code)]

mod args;
mod fd;
mod request_error;

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

pub use args::{ChildArgs, ChildId};
pub use fd::adopt_ipc_fd;
pub use request_error::RequestError;

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

/// The exit code after the server stopped the process or went away.
pub const EXIT_OK: u8 = 0;
/// The exit code after a failure (start failed, protocol error, worker thread lost).
pub const EXIT_FAILURE: u8 = 1;
/// The exit code for a bad command line (as clap reports it).
pub const EXIT_USAGE: u8 = 2;

/// Parses the command line into `A`. A bad one is reported on standard error and gives
/// `Err(EXIT_USAGE)`; `--help` and `--version` print and give `Err(EXIT_OK)`.
pub fn parse_args<A: clap::Parser>() -> Result<A, ExitCode> {
    A::try_parse().map_err(|e| {
        let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        let _ = e.print();
        ExitCode::from(code)
    })
}

/// The whole life of a driver or service process: parses [`ChildArgs`] from the command line
/// ([`parse_args`]), sets up logging ([`init_logging`]) and runs `serve` with them.
///
/// Returns the process's exit code: [`EXIT_OK`], [`EXIT_FAILURE`] (after one error line on
/// standard error, naming the child by its id) or [`EXIT_USAGE`].
pub fn run_child<Id, T, E>(serve: impl FnOnce(&ChildArgs<Id>) -> Result<T, E>) -> ExitCode
where
    Id: ChildId,
    E: std::fmt::Display,
{
    let args: ChildArgs<Id> = match parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    init_logging(args.log_level.as_deref());
    match serve(&args) {
        Ok(_) => ExitCode::from(EXIT_OK),
        Err(e) => {
            tracing::error!("{} {}: {e}", Id::KIND, args.id);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Adopts `ipc_fd` ([`adopt_ipc_fd`]) and runs `serve` on it to the end, on a
/// current-thread tokio runtime.
pub fn serve_on_fd<T, E, F, Fut>(ipc_fd: std::os::fd::RawFd, serve: F) -> Result<T, E>
where
    F: FnOnce(tokio::net::UnixStream) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: From<IpcFdError> + From<std::io::Error>,
{
    let stream = adopt_ipc_fd(ipc_fd)?;
    stream.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stream = tokio::net::UnixStream::from_std(stream)?;
        serve(stream).await
    })
}
