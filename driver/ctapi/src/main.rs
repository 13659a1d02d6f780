//! `chipcard-driver-ctapi`: chipcard's driver for CT-API card terminals.
//!
//! chipcardd starts it as `chipcard-driver-ctapi --ipc-fd 0 --driver-id 0x...`; the
//! CT-API library (`libraryFile`) and the terminals (`reader { ctn port }`) come from the
//! driver's group in chipcardd.conf (see README.md).
//!
//! Every CT-API call runs on a thread of its own terminal and is waited for at most
//! `callTimeout`: a library that blocks (or never returns from `CT_init`) puts only its
//! reader out of service, reported with `ReaderError`, while the driver keeps serving.
#![deny(unsafe_code)]

mod backend;
mod config;
mod ffi;
mod terminal;

use std::process::ExitCode;

fn main() -> ExitCode {
    // A terminal thread stuck in the library does not keep the process alive: returning
    // from main ends it with every other thread.
    chipcard_driver::run(backend::CtapiBackend::default())
}
