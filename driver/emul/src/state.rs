//! The readers and the cards in them, shared by the backend thread and the control socket.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chipcard_driver::{DriverError, EventSink};
use chipcard_emulcard::EmulCard;
use chipcard_ipc::message::CardType;
use chipcard_ipc::ReaderId;
use tracing::{info, warn};

use crate::config::ReaderConfig;

/// One reader: its configuration and what is in its slots.
#[derive(Debug)]
pub struct Reader {
    /// The configuration it was built from.
    pub config: ReaderConfig,
    /// One entry per slot.
    pub slots: Vec<Option<EmulCard>>,
}

/// All readers, and where events go.
#[derive(Debug, Default)]
pub struct State {
    readers: Vec<Reader>,
    events: Option<EventSink>,
}

/// [`State`] behind a lock, shared between threads.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<State>>);

impl Shared {
    /// The state, locked. A panic of another holder does not make it unusable: every
    /// change leaves it consistent.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn reader_id(index: usize) -> ReaderId {
    ReaderId(u32::try_from(index).unwrap_or(u32::MAX))
}

impl State {
    /// Replaces the readers and sets the event sink; reports the cards already present.
    pub fn start(&mut self, readers: Vec<Reader>, events: EventSink) {
        for (index, reader) in readers.iter().enumerate() {
            for (slot, card) in reader.slots.iter().enumerate() {
                if let Some(card) = card {
                    let slot = i32::try_from(slot).unwrap_or(i32::MAX);
                    let _ = events.card_inserted(
                        reader_id(index),
                        slot,
                        card.atr(),
                        CardType::Processor,
                    );
                }
            }
        }
        self.readers = readers;
        self.events = Some(events);
    }

    /// Forgets the event sink: later changes are not reported.
    pub fn stop(&mut self) {
        self.events = None;
    }

    fn slot_mut(
        &mut self,
        reader: ReaderId,
        slot: i32,
    ) -> Result<&mut Option<EmulCard>, DriverError> {
        let r = usize::try_from(reader.0)
            .ok()
            .and_then(|i| self.readers.get_mut(i))
            .ok_or_else(|| DriverError::not_found(format!("no reader {reader}")))?;
        let name = &r.config.name;
        let count = r.slots.len();
        usize::try_from(slot)
            .ok()
            .and_then(|s| r.slots.get_mut(s))
            .ok_or_else(|| {
                DriverError::not_found(format!(
                    "reader '{name}' has no slot {slot} (it has {count})"
                ))
            })
    }

    /// The card in a slot, or code 7 for an empty slot.
    pub fn card_mut(&mut self, reader: ReaderId, slot: i32) -> Result<&mut EmulCard, DriverError> {
        let name = usize::try_from(reader.0)
            .ok()
            .and_then(|i| self.readers.get(i))
            .map(|r| r.config.name.clone())
            .unwrap_or_default();
        self.slot_mut(reader, slot)?.as_mut().ok_or_else(|| {
            DriverError::card_removed(format!("no card in slot {slot} of reader '{name}'"))
        })
    }

    fn find(&self, name: &str) -> Result<usize, String> {
        self.readers
            .iter()
            .position(|r| r.config.name == name)
            .ok_or_else(|| format!("no reader named '{name}'"))
    }

    fn check_slot(&self, index: usize, slot: i32) -> Result<usize, String> {
        let reader = &self.readers[index];
        usize::try_from(slot)
            .ok()
            .filter(|s| *s < reader.slots.len())
            .ok_or_else(|| {
                format!(
                    "reader '{}' has slots 0 to {}",
                    reader.config.name,
                    reader.slots.len() - 1
                )
            })
    }

    /// Inserts a default card with `atr` into a slot (control socket `insert`).
    pub fn insert(&mut self, name: &str, slot: i32, atr: Vec<u8>) -> Result<(), String> {
        if self.events.is_none() {
            return Err("the driver is not running".into());
        }
        let index = self.find(name)?;
        let s = self.check_slot(index, slot)?;
        let reader = &mut self.readers[index];
        if reader.slots[s].is_some() {
            return Err(format!("slot {slot} of reader '{name}' is occupied"));
        }
        let card =
            EmulCard::new(reader.config.inserted_card(atr.clone())).map_err(|e| e.to_string())?;
        reader.slots[s] = Some(card);
        info!(reader = name, slot, "card inserted");
        if let Some(events) = &self.events {
            if events
                .card_inserted(reader_id(index), slot, atr, CardType::Processor)
                .is_err()
            {
                warn!("the driver is stopping; CardInserted not sent");
            }
        }
        Ok(())
    }

    /// Removes the card from a slot (control socket `remove`).
    pub fn remove(&mut self, name: &str, slot: i32) -> Result<(), String> {
        if self.events.is_none() {
            return Err("the driver is not running".into());
        }
        let index = self.find(name)?;
        let s = self.check_slot(index, slot)?;
        if self.readers[index].slots[s].take().is_none() {
            return Err(format!("slot {slot} of reader '{name}' is empty"));
        }
        info!(reader = name, slot, "card removed");
        if let Some(events) = &self.events {
            if events.card_removed(reader_id(index), slot).is_err() {
                warn!("the driver is stopping; CardRemoved not sent");
            }
        }
        Ok(())
    }
}
