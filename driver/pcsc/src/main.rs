//! `chipcard-driver-pcsc`: chipcard's driver for PC/SC readers, through pcscd.
//!
//! chipcardd starts it as `chipcard-driver-pcsc --ipc-fd 0 --driver-id 0x...` and sends the
//! driver's group from chipcardd.conf (keys in README.md). Every PC/SC reader pcscd has (or
//! those the `readers` patterns select) becomes a chipcard reader with one slot; readers
//! and cards come and go with pcscd's, and pcscd may be restarted underneath.
#![forbid(unsafe_code)]

mod backend;
mod config;
mod connections;
mod errors;
mod features;
mod monitor;
mod registry;

use std::process::ExitCode;

fn main() -> ExitCode {
    chipcard_driver::run(backend::PcscBackend::default())
}
