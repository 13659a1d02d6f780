//! chipcardd: the chipcard server. It owns the readers and cards that out-of-process drivers
//! report, and lets clients use them one at a time over a Unix socket (PROTOCOL.md). It
//! also runs services — helper processes clients open, command and close — and routes
//! those requests to them (docs/services.md).
//!
//! # Modules
//!
//! - [`config`]: the configuration file read into typed settings.
//! - [`access`]: peer credentials and the per-reader allow lists.
//! - [`setup`]: from command-line options to a [`server::Setup`] (default config, PC/SC
//!   detection, socket path, driver directory, card definitions).
//! - [`socket`]: binding the client socket (stale files, mode, group).
//! - [`server`]: the shared state and the accept loop.
//! - [`client`]: one client connection (reader loop and writer task).
//! - [`outbox`]: the bounded queue of messages to one client.
//! - [`dispatch`]: what each client request does.
//! - [`registry`]: the state — clients, drivers, readers, cards — and the events that change it.
//! - [`lock`]: card ownership and the first-come-first-served queue of takers.
//! - [`notify`]: `SetNotify` patterns and notification kinds.
//! - [`wait`]: `StartWait` flag/mask matching.
//! - [`child`]: what driver and service processes share: spawning on a socketpair,
//!   killing, the request [`child::Link`].
//! - [`driver`]: one driver process: spawn, handshake, connection loop, request routing.
//! - [`supervisor`]: keeping a driver or service running (restart with backoff, give up).
//! - [`service`]: one service process: spawn, handshake, connection loop, idle stop.
//! - [`services`]: the services and the clients' contexts (part of the registry).
//! - [`service_requests`]: `ServiceOpen`/`ServiceCommand`/`ServiceClose` checked, forwarded
//!   and answered.
//! - [`systemd`]: readiness notification (`$NOTIFY_SOCKET`).
//! - `cardtypes`: which card definitions match an ATR.
//!
//! # Concurrency
//!
//! All state is one [`registry::CardRegistry`] behind one `std::sync::Mutex`
//! ([`server::Shared::lock`]). It is never held across an `.await`: registry methods only
//! change state and queue pushed messages without waiting. Tasks: one accept loop; per
//! client a reader loop and a writer task, plus one task per request that must wait (a
//! queued `TakeCard`, a reset; not `CommandCard`); per driver and per service a supervisor
//! task that runs its connection loop.
//!
//! # A message's path, socket to driver and back
//!
//! A `CommandCard` frame arrives on the client's socket; [`client`]'s reader loop decodes
//! it straight into a typed request with `MessageCodec`, checks the id order, reserves an
//! answer slot in the client's [`outbox::Outbox`] and calls [`dispatch::handle_request`]. That looks the card up in the
//! registry ([`registry::CardRegistry::owned_target`]: present? taken by this client?)
//! and gets a [`registry::CardTarget`] — the driver's [`driver::DriverLink`], the driver's
//! own reader id and the slot — then releases the lock and hands a `CardCommand` to
//! [`driver::DriverLink::send`] together with an answer callback that owns the reserved
//! slot. The driver's connection loop ([`driver::DriverProcess::serve`]) gives it an id,
//! remembers the callback under it and writes it to the driver's socketpair (requests that
//! arrive together leave in one write). The driver's `CardCommandResponse` comes back with
//! that id as refid; the loop calls the callback, which builds the `CommandCardResponse`
//! and puts it in the reserved slot; the client's writer task numbers it and writes it with
//! the request's id as refid. No task, channel or timer is made per APDU: one timer per
//! driver connection watches the requests' deadlines (`commandTimeout`).
//!
//! The runtime has one thread (see `main.rs`); the sockets are `chipcard_sock` halves,
//! which do not wake the server when a peer reads.
//!
//! Driver events (`CardInserted`, ...) take the other way: the driver's connection loop
//! decodes them and calls the registry, which queues `Notification` and `CardAvailable`
//! messages into the outboxes of the clients that asked for them.
//!
//! # Limits and faults
//!
//! Clients: `maxClients` in the accept loop; per client at most `maxRequestsPerClient`
//! requests in progress (back-pressure), 256 queued messages, and `clientIdleTimeout` for a
//! stalled frame or unread answers ([`client`]). Drivers: restarted with backoff when they
//! die, hang or break the protocol ([`supervisor`]). Readers may be restricted to users and
//! groups ([`access`]). SIGHUP reloads the drivers ([`server::Reload`]). docs/security.md
//! lists every limit and where it is enforced.

// One function (`systemd::adopt_listen_fd`) needs `unsafe` to take ownership of the
// socket-activation descriptor; everything else is safe code.
#![deny(unsafe_code)]

pub mod access;
pub mod cardtypes;
pub mod child;
pub mod client;
pub mod config;
pub mod dispatch;
pub mod driver;
pub mod error;
#[doc(hidden)]
pub mod harness;
pub mod lock;
pub mod notify;
pub mod outbox;
pub mod registry;
pub mod server;
pub mod service;
pub mod service_requests;
pub mod services;
pub mod setup;
pub mod socket;
pub mod supervisor;
pub mod systemd;
pub mod wait;

pub use error::{Error, Result};
pub use server::{Server, Setup};
