//! What every chipcard service is written on.
//!
//! A service is a helper process behind chipcardd that clients open, command and close
//! (PROTOCOL §6, seed sections 4 and 5). chipcardd starts it as
//! `chipcard-service-TYPE --ipc-fd N --service-id 0x0000000N`, with its end of a socketpair
//! as descriptor `N` (chipcardd passes standard input, `--ipc-fd 0`). This crate speaks the
//! service side of the protocol on that socket; a service only implements [`Service`] and
//! calls [`run`]:
//!
//! ```no_run
//! use chipcard_service::{Context, Reply, Request, Service, ServiceError};
//! use chipcard_ipc::Group;
//!
//! /// Answers `Echo` with the text it was sent.
//! struct Echo;
//!
//! impl Service for Echo {
//!     fn start(&mut self, _config: &Group) -> Result<(), ServiceError> {
//!         Ok(())
//!     }
//!     fn command(&mut self, _: &Context, request: &Request) -> Result<Reply, ServiceError> {
//!         match request.name() {
//!             "Echo" => {
//!                 let text = request.char_arg("text")?.unwrap_or_default();
//!                 Ok(Reply::new("EchoResponse", Group::new("command").with_char("text", text)))
//!             }
//!             other => Err(ServiceError::not_supported(format!("no command '{other}'"))),
//!         }
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     chipcard_service::run(Echo)
//! }
//! ```
//!
//! # The conversation
//!
//! 1. The server sends `ServiceStart { ServiceId; config {...} }`; the library calls
//!    [`Service::start`] with the `config` group (the service's group of the server's
//!    configuration) and answers `ServiceReady` (`Code="OK"`, or `Code="ERROR"`, `ErrorCode`
//!    and the text); the server answers `ServiceReadyResponse`.
//! 2. `ServiceOpen` (with the context id the server chose, the client's id, application and
//!    user name) → [`Service::open`] → `ServiceOpenResponse` (`int code`, `text`,
//!    `contextId`, `service {}` with what `open` returned). The library remembers the
//!    context.
//! 3. `ServiceCommand` on a context it knows → [`Service::command`] →
//!    `ServiceCommandResponse { name; command {...} }`; a [`ServiceError`] is answered with
//!    `Error { code; text }` (seed 5.3.2.1). An unknown context is answered code 3.
//! 4. `ServiceClose` → [`Service::close`] → `ServiceCloseResponse`; the context is
//!    forgotten whatever `close` returns.
//! 5. `Ping` → `PingResponse`. `StopService`, or the server closing the socket:
//!    [`Service::stop`], then exit 0.
//!
//! When a request names a card (`command/CardId`) the client may use, the server adds what
//! it knows about the card — ATR, card types, reader — as [`Request::card`].
//!
//! # Threads
//!
//! The IPC side runs on a current-thread tokio runtime in the process's main thread; the
//! [`Service`] lives on a thread of its own and is called there, one request at a time, in
//! the order the requests arrived, so its methods may block. The IPC side keeps answering
//! `Ping` meanwhile.
//!
//! # Logs
//!
//! [`run`] logs to standard error with `tracing`, filtered by `--log-level` or else
//! `RUST_LOG` (default `info`), in a span carrying the `service_id`; each request is logged
//! with its `context` and `client` ids.
#![forbid(unsafe_code)]

mod args;
mod error;
mod serve;

use std::process::ExitCode;

use chipcard_ipc::message::ServiceCard;
use chipcard_ipc::{ClientId, ContextId, Group, ServiceId};
use tracing::{info_span, Instrument};

pub use args::Args;
pub use chipcard_child::{adopt_ipc_fd, init_logging};
pub use error::{Error, Result, ServiceError};
pub use serve::{serve, Exit, STOP_TIMEOUT};

pub use chipcard_child::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// The logic of a service. Every method runs on the service's own thread and may block.
pub trait Service: Send + 'static {
    /// Starts the service with its configuration group (the whole `service {}` group of
    /// chipcardd's configuration, renamed `config`). An error is reported to the server with
    /// `ServiceReady` `ERROR`, and the process exits.
    fn start(&mut self, config: &Group) -> Result<(), ServiceError>;

    /// A client opens a context. What is returned becomes the `service {}` group of the
    /// answer. The default accepts every open and returns nothing.
    fn open(&mut self, context: &Context, request: &Request) -> Result<Group, ServiceError> {
        let _ = (context, request);
        Ok(Group::new("service"))
    }

    /// A command on an open context.
    fn command(&mut self, context: &Context, request: &Request) -> Result<Reply, ServiceError>;

    /// A context is closed, by its client or because the client disconnected. What is
    /// returned becomes the `service {}` group of the answer. The default returns nothing.
    fn close(&mut self, context: &Context, request: &Request) -> Result<Group, ServiceError> {
        let _ = (context, request);
        Ok(Group::new("service"))
    }

    /// The service is stopping (`StopService` or the server went away).
    fn stop(&mut self) {}
}

/// An open context: who opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// This service's id.
    pub service_id: ServiceId,
    /// The context's id (chosen by the server).
    pub context_id: ContextId,
    /// The client that opened it.
    pub client_id: ClientId,
    /// The client's application name (from its `ClientReady`).
    pub app_name: String,
    /// The client's user name, from its socket's peer credentials.
    pub user_name: String,
}

/// What a request carries besides its context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The request's `command {}` group (empty when the client sent none).
    pub command: Group,
    /// The card `command/CardId` names, as the server knows it (only for a card the client
    /// may use; the server refuses the request otherwise).
    pub card: Option<ServiceCard>,
}

impl Request {
    /// A request with a command group and no card.
    pub fn new(command: Group) -> Request {
        Request {
            command,
            card: None,
        }
    }

    /// The command's name (`command/name`), empty when absent.
    pub fn name(&self) -> &str {
        self.command.opt_char("name").ok().flatten().unwrap_or("")
    }

    /// A char argument of the command; a value of another type is code 2.
    pub fn char_arg(&self, name: &str) -> Result<Option<String>, ServiceError> {
        self.command
            .opt_char(name)
            .map(|v| v.map(str::to_owned))
            .map_err(|e| ServiceError::invalid(format!("command/{e}")))
    }

    /// A bin argument of the command; a value that is not hex is code 2.
    pub fn bin_arg(&self, name: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        self.command
            .opt_bin(name)
            .map(|v| v.map(|b| b.into_owned()))
            .map_err(|e| ServiceError::invalid(format!("command/{e}")))
    }
}

/// A command's answer: the response's name and its data (`command {}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response's name (`name` in the client's `ServiceCommandResponse`).
    pub name: String,
    /// The data.
    pub data: Group,
}

impl Reply {
    /// A reply named `name` carrying `data` (its group name does not matter).
    pub fn new(name: impl Into<String>, data: Group) -> Reply {
        Reply {
            name: name.into(),
            data,
        }
    }
}

/// The whole life of a service process: parses [`Args`] from the command line, sets up
/// logging, adopts the IPC socket and [`serve`]s until the server stops the service.
///
/// Returns the process's exit code: [`EXIT_OK`], [`EXIT_FAILURE`] (after one error line on
/// standard error) or [`EXIT_USAGE`].
pub fn run<S: Service>(service: S) -> ExitCode {
    chipcard_child::run_child(|args: &Args| run_with(args, service))
}

/// [`run`] without argument parsing and logging setup: adopts `args.ipc_fd` and serves on a
/// current-thread runtime.
pub fn run_with<S: Service>(args: &Args, service: S) -> Result<Exit> {
    let span = info_span!("service", service_id = %args.id);
    chipcard_child::serve_on_fd(args.ipc_fd, |stream| {
        serve(stream, args.id, service).instrument(span)
    })
}
