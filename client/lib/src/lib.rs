//! chipcard-client: talk to chipcardd, the chipcard server, from Rust.
//!
//! A [`Client`] connects to the server's Unix socket (see [`resolve_socket_path`]: an
//! explicit path, else `$CHIPCARD_SOCKET`, else the per-user or system default), introduces
//! itself with `ClientReady`, and then offers the requests of PROTOCOL §4 as methods: list
//! readers, wait for cards, take a card, send it APDUs, reset it, release it, follow
//! notifications, and open, command and close service contexts
//! ([`Client::service_open`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use chipcard_client::{Client, ConnectOptions};
//!
//! # async fn example() -> chipcard_client::Result<()> {
//! let client = Client::connect(ConnectOptions::new("example 1.0")).await?;
//! for reader in client.readers().await? {
//!     println!("{} {}", reader.reader_id, reader.reader_name);
//! }
//! let card = client.wait_for_card(Duration::from_secs(30)).await?;
//! let guard = client.take_card(card.card_id, Duration::from_secs(10)).await?;
//! let response = guard.transmit(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00]).await?;
//! println!("SW {}: {}", response.status(), response.status().meaning());
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # How the connection works
//!
//! One task writes requests, one reads everything the server sends. Requests from any
//! number of tasks (or clones of the [`Client`]) are pipelined: each gets an increasing id,
//! and the reader hands each response to the request its `refid` names, whatever the order
//! the server answers in. Pushes (`CardAvailable`, `Notification`) go into two bounded
//! queues, read with [`Client::available_cards`] / [`Client::notifications`]; when a queue
//! is full the newest push is dropped rather than stalling responses (see
//! [`ConnectOptions::push_capacity`]).
//!
//! Failures of a request have one type whatever shape the server used: an `Error` message
//! and a failed `code`/`text` in the response itself both become [`Error::Server`] with
//! the [`ErrorCode`] and text. When the connection ends, every waiting request fails with
//! [`Error::Closed`] (or [`Error::Io`] / [`Error::Protocol`], saying why).
//!
//! # Threads and runtimes
//!
//! [`Client`] is async (tokio) and `Send + Sync`; it must be created inside a tokio runtime.
//! [`blocking::Client`] wraps it with a runtime of its own for plain threads. A
//! [`CardGuard`] releases its card when dropped (best effort, without waiting and without
//! needing a runtime); [`CardGuard::release`] does it and reports the result.
#![forbid(unsafe_code)]

mod apdu;
pub mod blocking;
mod client;
mod conn;
mod error;
mod service;
mod status;

pub use apdu::{hex_upper, Atr, Response};
pub use client::{
    resolve_socket_path, CardGuard, Client, ConnectOptions, DEFAULT_PUSH_CAPACITY,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_TAKE_TIMEOUT,
};
pub use error::{Error, Result};
pub use service::{ServiceContext, ServiceRef, ServiceReply};
pub use status::{StatusClass, StatusWord};

/// The IPC crate this client speaks, for the message types and ids below and more.
pub use chipcard_ipc as ipc;
pub use chipcard_ipc::message::{
    CardAvailable, CardInfo, CardType, Notification, ReaderInfo, ReaderStatus,
};
pub use chipcard_ipc::{CardId, ClientId, ContextId, DriverId, ErrorCode, ReaderId, ServiceId};
