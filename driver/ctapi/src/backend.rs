//! The ctapi driver's [`Backend`]: one [`Terminal`] per configured reader, one polling
//! thread per terminal for card insertion and removal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chipcard_driver::{Backend, DriverError, EventSink};
use chipcard_ipc::message::{CardType, DriverReader};
use chipcard_ipc::{Group, ReaderId};
use tracing::{debug, info, warn};

use crate::config::CtapiConfig;
use crate::ffi::CtApi;
use crate::terminal::{Terminal, CT};

/// How long stopping waits for all `EJECT ICC` and `CT_close` calls together.
const CLOSE_BUDGET: Duration = Duration::from_secs(2);

/// One reader: its terminal and what the poller knows about its slots.
struct Reader {
    terminal: Arc<Terminal>,
    /// `Some(atr)` for a slot holding an activated card.
    slots: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
}

/// CT-API card terminals.
#[derive(Default)]
pub struct CtapiBackend {
    readers: Vec<Reader>,
    stopping: Arc<AtomicBool>,
}

/// The CT-BCS functional unit of a slot: 1 for ICC 1 (slot 0), ...
fn unit(slot: i32) -> u8 {
    u8::try_from(slot + 1).unwrap_or(0)
}

/// The CT-API DAD of a slot: ICC 1 is 0, ICC n (n ≥ 2) is n.
fn dad(slot: i32) -> u8 {
    match slot {
        0 => 0,
        n => u8::try_from(n + 1).unwrap_or(0xFF),
    }
}

/// Splits a response into data and status word; `None` if shorter than two bytes.
fn split_sw(response: &[u8]) -> Option<(&[u8], u16)> {
    let at = response.len().checked_sub(2)?;
    let (data, sw) = response.split_at(at);
    Some((data, u16::from_be_bytes([sw[0], sw[1]])))
}

/// REQUEST ICC (`20 12 unit 01 00`): the ATR, or `None` when the slot is empty.
fn request_icc(terminal: &Terminal, slot: i32) -> Result<Option<Vec<u8>>, DriverError> {
    let response = terminal.data(CT, &[0x20, 0x12, unit(slot), 0x01, 0x00], "REQUEST ICC")?;
    match split_sw(&response) {
        Some((atr, 0x9000 | 0x9001)) if !atr.is_empty() => Ok(Some(atr.to_vec())),
        Some((_, 0x6200 | 0x6400 | 0x6401 | 0x9000 | 0x9001)) => Ok(None),
        _ => Err(DriverError::reader(format!(
            "REQUEST ICC answered {}",
            hex::encode_upper(&response)
        ))),
    }
}

/// GET STATUS (`20 13 00 80 00`): whether each slot holds a card.
fn get_status(terminal: &Terminal, slots: usize) -> Result<Vec<bool>, DriverError> {
    let response = terminal.data(CT, &[0x20, 0x13, 0x00, 0x80, 0x00], "GET STATUS")?;
    parse_status(&response, slots)
}

/// The answer to GET STATUS: a slot holds a card when bit 0 of its status byte is set. The
/// bytes come in the ICC status DO `80` or, from terminals that omit the tag, bare.
fn parse_status(response: &[u8], slots: usize) -> Result<Vec<bool>, DriverError> {
    let bytes = match split_sw(response) {
        Some((data, 0x9000)) => data,
        _ => {
            return Err(DriverError::reader(format!(
                "GET STATUS answered {}",
                hex::encode_upper(response)
            )))
        }
    };
    let status = match bytes {
        [0x80, len, rest @ ..] if usize::from(*len) <= rest.len() => &rest[..usize::from(*len)],
        other => other,
    };
    Ok((0..slots)
        .map(|i| status.get(i).is_some_and(|s| s & 0x01 != 0))
        .collect())
}

/// The polling thread of one reader: CT_init, then GET STATUS every `interval`.
fn poll(
    terminal: Arc<Terminal>,
    slots: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    events: EventSink,
    interval: Duration,
    stopping: Arc<AtomicBool>,
) {
    if terminal.init().is_err() {
        return; // reported as ReaderError by the terminal
    }
    // RESET CT brings the terminal into a known state; a refusal is not fatal.
    if let Err(e) = terminal.data(CT, &[0x20, 0x11, 0x00, 0x00, 0x00], "RESET CT") {
        warn!(reader = %terminal.reader, "RESET CT: {e}");
    }
    let count = slots.lock().map(|s| s.len()).unwrap_or(1);
    while !stopping.load(Ordering::SeqCst) && terminal.failure().is_none() {
        match get_status(&terminal, count) {
            Ok(present) => {
                for (index, present) in present.into_iter().enumerate() {
                    let slot = i32::try_from(index).unwrap_or(0);
                    let known = slots
                        .lock()
                        .map(|s| s.get(index).is_some_and(Option::is_some))
                        .unwrap_or(false);
                    if present && !known {
                        match request_icc(&terminal, slot) {
                            Ok(Some(atr)) => {
                                info!(reader = %terminal.reader, slot, atr = %hex::encode_upper(&atr), "card inserted");
                                if let Ok(mut s) = slots.lock() {
                                    if let Some(place) = s.get_mut(index) {
                                        *place = Some(atr.clone());
                                    }
                                }
                                let _ = events.card_inserted(
                                    terminal.reader,
                                    slot,
                                    atr,
                                    CardType::Processor,
                                );
                            }
                            Ok(None) => {}
                            Err(e) => warn!(reader = %terminal.reader, slot, "{e}"),
                        }
                    } else if !present && known {
                        info!(reader = %terminal.reader, slot, "card removed");
                        if let Ok(mut s) = slots.lock() {
                            if let Some(place) = s.get_mut(index) {
                                *place = None;
                            }
                        }
                        let _ = events.card_removed(terminal.reader, slot);
                    }
                }
            }
            Err(e) => warn!(reader = %terminal.reader, "{e}"),
        }
        thread::sleep(interval);
    }
    debug!(reader = %terminal.reader, "polling ends");
}

impl CtapiBackend {
    fn reader(&self, reader: ReaderId, slot: i32) -> Result<&Reader, DriverError> {
        let r = usize::try_from(reader.0)
            .ok()
            .and_then(|i| self.readers.get(i))
            .ok_or_else(|| DriverError::not_found(format!("no reader {reader}")))?;
        if let Some(text) = r.terminal.failure() {
            return Err(DriverError::reader(text));
        }
        let present = r
            .slots
            .lock()
            .map_err(|_| DriverError::reader("poisoned"))?;
        match usize::try_from(slot).ok().and_then(|s| present.get(s)) {
            None => Err(DriverError::not_found(format!(
                "reader {reader} has no slot {slot}"
            ))),
            Some(None) => Err(DriverError::card_removed(format!(
                "no card in reader {reader} slot {slot}"
            ))),
            Some(Some(_)) => Ok(r),
        }
    }
}

impl Backend for CtapiBackend {
    fn start(
        &mut self,
        config: &Group,
        events: EventSink,
    ) -> Result<Vec<DriverReader>, DriverError> {
        let config = CtapiConfig::from_group(config)
            .map_err(|e| DriverError::invalid(format!("configuration: {e}")))?;
        // CT-API libraries read their settings from the environment (this is how the
        // emulated library finds its card file). Set here, on the backend thread, before
        // the library and any thread that could read the environment concurrently exist:
        // the IPC thread does not read it after start-up.
        for (name, value) in &config.library_env {
            debug!(%name, %value, "libraryEnv");
            std::env::set_var(name, value);
        }
        let api = CtApi::load(&config.library).map_err(|e| {
            DriverError::invalid(format!("libraryFile '{}': {e}", config.library.display()))
        })?;
        let api = Arc::new(api);
        let mut described = Vec::new();
        for (index, rc) in config.readers.iter().enumerate() {
            let reader = ReaderId(u32::try_from(index).unwrap_or(u32::MAX));
            let terminal = Terminal::spawn(
                api.clone(),
                reader,
                rc.ctn,
                rc.port,
                config.call_timeout,
                events.clone(),
                self.stopping.clone(),
            )
            .map(Arc::new)
            .map_err(|e| DriverError::reader(format!("reader '{}': thread: {e}", rc.name)))?;
            let slot_count = usize::try_from(rc.slots).unwrap_or(1);
            let slots = Arc::new(Mutex::new(vec![None; slot_count]));
            {
                let (terminal, slots, events) = (terminal.clone(), slots.clone(), events.clone());
                let (interval, stopping) = (config.poll_interval, self.stopping.clone());
                // The poller's logs carry the driver's span (driver_id).
                let span = tracing::Span::current();
                thread::Builder::new()
                    .name(format!("poll-{}", rc.ctn))
                    .spawn(move || {
                        span.in_scope(|| poll(terminal, slots, events, interval, stopping));
                    })
                    .map_err(|e| {
                        DriverError::reader(format!("reader '{}': thread: {e}", rc.name))
                    })?;
            }
            info!(%reader, name = %rc.name, ctn = rc.ctn, port = rc.port, "reader");
            described.push(DriverReader {
                reader_id: reader,
                name: rc.name.clone(),
                reader_flags: rc.flags.clone(),
                reader_type: Some("ctapi".to_owned()),
                slots: Some(rc.slots),
                port: Some(rc.port.to_string()),
                short_descr: Some(format!("CT-API terminal ctn {} port {}", rc.ctn, rc.port)),
            });
            self.readers.push(Reader { terminal, slots });
        }
        Ok(described)
    }

    fn transmit(
        &mut self,
        reader: ReaderId,
        slot: i32,
        apdu: &[u8],
    ) -> Result<Vec<u8>, DriverError> {
        let r = self.reader(reader, slot)?;
        let response = r.terminal.data(dad(slot), apdu, "APDU")?;
        if response.len() < 2 {
            return Err(DriverError::reader(format!(
                "the terminal answered {} bytes, no status word",
                response.len()
            )));
        }
        Ok(response)
    }

    fn reset(&mut self, reader: ReaderId, slot: i32) -> Result<Vec<u8>, DriverError> {
        let r = self.reader(reader, slot)?;
        // EJECT ICC powers the card off (a motorised reader would eject it: none is known
        // to CT-API libraries in use); REQUEST ICC powers it up again and gives the ATR.
        let eject = r
            .terminal
            .data(CT, &[0x20, 0x15, unit(slot), 0x00, 0x00], "EJECT ICC")?;
        debug!(%reader, slot, answer = %hex::encode_upper(&eject), "EJECT ICC");
        match request_icc(&r.terminal, slot)? {
            Some(atr) => {
                if let Ok(mut s) = r.slots.lock() {
                    if let Some(place) = usize::try_from(slot).ok().and_then(|i| s.get_mut(i)) {
                        *place = Some(atr.clone());
                    }
                }
                Ok(atr)
            }
            None => Err(DriverError::card_removed(format!(
                "no card in reader {reader} slot {slot} after reset"
            ))),
        }
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + CLOSE_BUDGET;
        let left = || deadline.saturating_duration_since(Instant::now());
        for r in &self.readers {
            // The poller may still be in a call; the terminal's thread queues ours after it.
            let holding: Vec<i32> = r
                .slots
                .lock()
                .map(|s| {
                    s.iter()
                        .enumerate()
                        .filter(|(_, atr)| atr.is_some())
                        .filter_map(|(i, _)| i32::try_from(i).ok())
                        .collect()
                })
                .unwrap_or_default();
            for slot in holding {
                r.terminal.eject_stopping(unit(slot), left());
            }
            r.terminal.close(left());
        }
        info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_per_slot() {
        assert_eq!((dad(0), dad(1), dad(2)), (0, 2, 3));
        assert_eq!((unit(0), unit(1)), (1, 2));
    }

    #[test]
    fn status_answers() {
        let ok = |r: &[u8], n| parse_status(r, n).expect("valid");
        assert_eq!(ok(&[0x80, 0x01, 0x05, 0x90, 0x00], 1), [true]);
        assert_eq!(ok(&[0x80, 0x01, 0x00, 0x90, 0x00], 1), [false]);
        assert_eq!(ok(&[0x80, 0x02, 0x00, 0x01, 0x90, 0x00], 2), [false, true]);
        assert_eq!(ok(&[0x05, 0x90, 0x00], 2), [true, false], "without the tag");
        assert_eq!(ok(&[0x90, 0x00], 1), [false]);
        assert!(parse_status(&[0x6D, 0x00], 1).is_err());
        assert!(parse_status(&[0x90], 1).is_err());
    }
}
