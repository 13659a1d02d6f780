//! chipcard's test lab: real card stacks without hardware, and the test playing chipcardd,
//! shared by the tests of the drivers and services, the end-to-end tests and the benchmarks.
//!
//! - [`apdus`]: command APDUs the tests send again and again.
//! - [`pcscd`]: an isolated pcscd (own socket, own reader configuration, own ports, no root
//!   paths) with vsmartcard's vpcd readers, and chipcard's virtual cards inserted into them.
//! - [`link`]: the test as chipcardd on its end of a socketpair to a driver or service.
//! - [`child`]: a driver or service binary started the way chipcardd starts it.
//! - [`driver`]: the driver half of the protocol over a [`link::Link`].
//! - [`emul_control`]: the emulated driver's control socket.
//! - [`chipcardd`]: chipcardd as a process on a configuration the test writes.
//! - [`raw_client`]: a client speaking the wire protocol directly, with the usual
//!   [`requests`] as its methods.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // a test harness: failing loudly is its job

pub mod apdus;
pub mod child;
pub mod chipcardd;
pub mod driver;
pub mod emul_control;
pub mod link;
pub mod pcscd;
pub mod raw_client;
pub mod requests;
