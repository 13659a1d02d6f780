//! `chipcard-driver-emul`: chipcard's driver for emulated readers holding software cards.
//!
//! chipcardd starts it as `chipcard-driver-emul --ipc-fd 0 --driver-id 0x...`; the readers
//! and cards come from the driver's group in chipcardd.conf (see README.md), and a control
//! socket can insert and remove cards, and add, delete and fail readers, while it runs.
#![forbid(unsafe_code)]

mod backend;
mod config;
mod control;
mod state;

use std::process::ExitCode;

fn main() -> ExitCode {
    chipcard_driver::run(backend::EmulBackend::default())
}
