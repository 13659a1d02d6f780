//! Test harness: an isolated pcscd per test with chipcard's virtual cards (from
//! `chipcard-testlab`), and the built `chipcard-driver-pcsc` with the test playing chipcardd
//! (as driver/emul/tests/emul_process.rs does).

#![allow(dead_code)]

pub use chipcard_testlab::pcscd::*;

use std::process::Command;
use std::time::Duration;

use chipcard_ipc::message::FromDriver;
use chipcard_testlab::child::{child_command, LinkedChild};

/// The built driver, and the test as its chipcardd.
pub type Driver = LinkedChild<FromDriver>;

/// Starts `chipcard-driver-pcsc --ipc-fd 0` on a socketpair. Its log goes to standard
/// error, filtered by `CHIPCARD_TEST_DRIVER_LOG` (default: the driver's debug messages).
pub fn spawn_driver() -> Driver {
    let filter = std::env::var("CHIPCARD_TEST_DRIVER_LOG")
        .unwrap_or_else(|_| "chipcard_driver_pcsc=debug,info".to_owned());
    Driver::spawn(child_command(
        env!("CARGO_BIN_EXE_chipcard-driver-pcsc"),
        "driver-id",
        &filter,
    ))
}

/// Whether a Debian package is installed.
pub fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Percentiles of durations in microseconds: (p50, p99, mean).
pub fn percentiles(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        us(samples[i.min(samples.len() - 1)])
    };
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
    (at(0.50), at(0.99), mean)
}
