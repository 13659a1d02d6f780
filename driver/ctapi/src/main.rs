//! `chipcard-driver-ctapi`: chipcard's driver for CT-API card terminals.
//!
//! chipcardd starts it as `chipcard-driver-ctapi --ipc-fd 0 --driver-id 0x...`; the
//! CT-API library (`libraryFile`) and the terminals (`reader { ctn port }`) come from the
//! driver's group in chipcardd.conf (see README.md).
//!
//! Every CT-API call runs on a thread of its own terminal and is waited for at most
//! `callTimeout`: a call that blocks (a `CT_init` that never returns) is reported with
//! `ReaderError` while the driver keeps serving, and then the driver exits with a failure so
//! that chipcardd restarts it with a fresh copy of the library (src/ending.rs).
#![deny(unsafe_code)]

mod backend;
mod config;
mod ending;
mod ffi;
mod terminal;

use std::process::ExitCode;

fn main() -> ExitCode {
    // A terminal thread stuck in the library does not keep the process alive: returning
    // from main ends it with every other thread.
    chipcard_driver::run(backend::CtapiBackend::default())
}
