//! What every chipcard driver is written on.
//!
//! A driver is a process that chipcardd starts as
//! `chipcard-driver-TYPE --ipc-fd N --driver-id 0x0000000N`, with its end of a socketpair as
//! descriptor `N` (chipcardd passes standard input, `--ipc-fd 0`). This crate speaks the
//! driver side of PROTOCOL §5 on that socket; a driver only implements [`Backend`] and
//! calls [`run`]:
//!
//! ```no_run
//! use chipcard_driver::{Backend, DriverError, EventSink};
//! use chipcard_ipc::message::DriverReader;
//! use chipcard_ipc::{Group, ReaderId};
//!
//! struct Nothing;
//!
//! impl Backend for Nothing {
//!     fn start(&mut self, _: &Group, _: EventSink) -> Result<Vec<DriverReader>, DriverError> {
//!         Ok(Vec::new())
//!     }
//!     fn transmit(&mut self, r: ReaderId, _: i32, _: &[u8]) -> Result<Vec<u8>, DriverError> {
//!         Err(DriverError::not_found(format!("no reader {r}")))
//!     }
//!     fn reset(&mut self, r: ReaderId, _: i32) -> Result<Vec<u8>, DriverError> {
//!         Err(DriverError::not_found(format!("no reader {r}")))
//!     }
//!     fn stop(&mut self) {}
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     chipcard_driver::run(Nothing)
//! }
//! ```
//!
//! # The conversation
//!
//! 1. The server sends `DriverStart { DriverId; config {...} }`; the driver calls
//!    [`Backend::start`] with the `config` group and answers `DriverReady` (`Code="OK"` and
//!    the readers, or `Code="ERROR"`, `ErrorCode` and the text); the server answers
//!    `DriverReadyResponse`.
//! 2. `CardCommand` → [`Backend::transmit`] (or [`Backend::reader_command`] for
//!    `target="reader"`) → `CardCommandResponse`; `ResetCard` → [`Backend::reset`] →
//!    `ResetCardResponse`. A [`DriverError`] becomes the response's failed outcome with its
//!    code. `Ping` → `PingResponse`.
//! 3. [`Event`]s sent through the [`EventSink`] go out as `CardInserted`, `CardRemoved`,
//!    `ReaderAdd`, `ReaderDel`, `ReaderError` pushes (no `refid`), after `DriverReady`.
//! 4. `StopDriver`, or the server closing the socket: [`Backend::stop`], then exit 0.
//!
//! Every message sent has a strictly increasing id; a server message whose id does not
//! increase, that does not parse, or that is unknown or malformed gets an `Error` reply with
//! code 11, 2 or 5 and the driver goes on. A broken frame is answered with code 11 and ends
//! the driver (exit 1).
//!
//! # Threads
//!
//! - The IPC thread (the process's main thread under [`run`]) reads the server's messages
//!   from the socket, blocking in `read` itself, and serves them in order, calling the
//!   [`Backend`] directly: one request at a time, in the order the requests arrived. Its
//!   methods may block (PC/SC and CT-API calls do).
//! - A watcher thread stands by during backend calls: when one lasts more than 100 ms it
//!   reads the server's messages meanwhile, answers `Ping` (the server's liveness check) and
//!   leaves the rest for the IPC thread, in order. Short calls cost it nothing.
//! - A backend whose readers can work at the same time offers a [`CardIo`]
//!   ([`Backend::card_io`]). Then, while a card call is long, the watcher hands the card
//!   requests for the other readers to a worker thread per reader, which calls the
//!   [`CardIo`] and writes the answer itself; a request for a reader whose worker still has
//!   work goes there too, so each reader's requests are served in order. Answers for
//!   different readers may then leave out of order (PROTOCOL §3: responses carry the
//!   refid). With nothing long in flight every request is still served inline. A panic in
//!   a worker's call is answered like a failure and ends the driver ([`Error::BackendGone`])
//!   as soon as the IPC thread is done with its current call or message.
//! - Messages are numbered and written under one lock by whichever thread sends them, so
//!   ids increase in the order they are written.
//! - Threads the backend starts (hotplug or card polling) hold clones of the [`EventSink`];
//!   sending writes the event to the server (it waits only while the server is behind).
//! - If the backend does not return from [`Backend::stop`] within [`STOP_TIMEOUT`] the
//!   process exits anyway; so it does when a backend call outlasts the server's
//!   `StopDriver` (or the end of the connection) by that long. Workers are not waited
//!   for: [`Backend::stop`] is called while their calls may still run (it may make them
//!   return), and the process ends after it.
//!
//! # Logs
//!
//! [`run`] logs to standard error with `tracing`, filtered by `--log-level` or else
//! `RUST_LOG` (default `info`), in a span carrying the `driver_id`. APDUs are logged at
//! `trace`, with the data of PIN commands left out.
#![forbid(unsafe_code)]

mod args;
mod backend;
mod error;
mod reader;
mod request;
mod serve;
mod watch;
mod workers;
mod writer;

use std::process::ExitCode;

use tracing::info_span;

pub use args::Args;
pub use backend::{Backend, CardIo, Event, EventReceiver, EventSink};
pub use chipcard_child::{adopt_ipc_fd, init_logging};
pub use error::{DriverError, Error, Result};
pub use serve::{serve, Exit, STOP_TIMEOUT};

pub use chipcard_child::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// The whole life of a driver process: parses [`Args`] from the command line, sets up
/// logging, adopts the IPC socket and [`serve`]s until the server stops the driver.
///
/// Returns the process's exit code: [`EXIT_OK`], [`EXIT_FAILURE`] (after one error line on
/// standard error) or [`EXIT_USAGE`].
pub fn run<B: Backend>(backend: B) -> ExitCode {
    chipcard_child::run_child(|args: &Args| run_with(args, backend))
}

/// [`run`] without argument parsing and logging setup: adopts `args.ipc_fd` and serves on
/// the calling thread.
pub fn run_with<B: Backend>(args: &Args, backend: B) -> Result<Exit> {
    let stream = adopt_ipc_fd(args.ipc_fd)?;
    let span = info_span!("driver", driver_id = %args.id);
    span.in_scope(|| serve::serve_on(stream, args.id, backend, true))
}
