//! `chipcard-driver-faulty`: the end-to-end tests' misbehaving driver, written on
//! `chipcard-driver`. It has one reader, `Faulty0`, holding a card, and misbehaves as the
//! `mode` key of its driver group says:
//!
//! - `mute`: answers `Ping` (the library's watcher does) but never a `CardCommand` or
//!   `ResetCard`: the backend call never returns;
//! - `exit`: exits with status 0 `exitAfter` ms (default 0) after it started, on its own.
//!
//! Each start appends the process id to the file named by `starts`, if given.
#![forbid(unsafe_code)]

use std::io::Write;
use std::time::Duration;

use chipcard_driver::{Backend, DriverError, EventSink};
use chipcard_ipc::message::{CardType, DriverReader};
use chipcard_ipc::{Group, ReaderId};

/// The card's answer to reset (a generic T=1 processor card).
const ATR: [u8; 12] = [
    0x3B, 0x88, 0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

#[derive(Default)]
struct Faulty;

impl Faulty {
    /// Never returns: the request it serves is never answered.
    fn hang() -> ! {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

impl Backend for Faulty {
    fn start(
        &mut self,
        config: &Group,
        events: EventSink,
    ) -> Result<Vec<DriverReader>, DriverError> {
        let field = |e: chipcard_ipc::FieldError| DriverError::invalid(e.to_string());
        if let Some(path) = config.opt_char("starts").map_err(field)? {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| DriverError::invalid(format!("{path}: {e}")))?;
            writeln!(log, "{}", std::process::id())
                .map_err(|e| DriverError::invalid(format!("{path}: {e}")))?;
        }
        match config.opt_char("mode").map_err(field)? {
            Some("mute") => {}
            Some("exit") => {
                let after = config.opt_int("exitAfter").map_err(field)?.unwrap_or(0);
                let after = Duration::from_millis(u64::try_from(after).unwrap_or(0));
                std::thread::spawn(move || {
                    std::thread::sleep(after);
                    std::process::exit(0);
                });
            }
            other => {
                return Err(DriverError::invalid(format!(
                    "mode must be mute or exit, not {other:?}"
                )))
            }
        }
        let reader = ReaderId(0);
        events
            .card_inserted(reader, 0, ATR, CardType::Processor)
            .map_err(|e| DriverError::reader(e.to_string()))?;
        Ok(vec![DriverReader {
            reader_id: reader,
            name: "Faulty0".to_owned(),
            reader_flags: Vec::new(),
            reader_type: Some("faulty".to_owned()),
            slots: Some(1),
            port: None,
            short_descr: Some("chipcard tests' faulty reader".to_owned()),
        }])
    }

    fn transmit(&mut self, _: ReaderId, _: i32, _: &[u8]) -> Result<Vec<u8>, DriverError> {
        Self::hang()
    }

    fn reset(&mut self, _: ReaderId, _: i32) -> Result<Vec<u8>, DriverError> {
        Self::hang()
    }

    fn stop(&mut self) {}
}

fn main() -> std::process::ExitCode {
    chipcard_driver::run(Faulty)
}
