//! chipcard's test lab: real card stacks without hardware, shared by the tests of the pcsc
//! driver, the end-to-end tests and the benchmarks.
//!
//! - [`pcscd`]: an isolated pcscd (own socket, own reader configuration, own ports, no root
//!   paths) with vsmartcard's vpcd readers, and chipcard's virtual cards inserted into them.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // a test harness: failing loudly is its job

pub mod pcscd;
