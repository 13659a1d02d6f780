//! The readers and the cards in them, shared by the backend thread and the control socket.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chipcard_driver::{DriverError, Event, EventSink};
use chipcard_emulcard::EmulCard;
use chipcard_ipc::message::{CardType, DriverReader};
use chipcard_ipc::ReaderId;
use tracing::{info, warn};

use crate::config::{ReaderConfig, MAX_SLOTS};

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
    /// Indexed by reader id; `None` where a reader was deleted (ids are not reused).
    readers: Vec<Option<Reader>>,
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

/// The id of the reader at `index`.
pub fn reader_id(index: usize) -> ReaderId {
    ReaderId(u32::try_from(index).unwrap_or(u32::MAX))
}

/// How a reader is described to the server (`DriverReady`, `ReaderAdd`).
pub fn describe(config: &ReaderConfig, id: ReaderId) -> DriverReader {
    DriverReader {
        reader_id: id,
        name: config.name.clone(),
        reader_flags: config.flags.clone(),
        reader_type: Some(config.reader_type.clone()),
        slots: Some(config.slots),
        port: None,
        short_descr: Some("chipcard emulated reader".to_owned()),
    }
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
        self.readers = readers.into_iter().map(Some).collect();
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
            .and_then(Option::as_mut)
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
            .and_then(Option::as_ref)
            .map(|r| r.config.name.clone())
            .unwrap_or_default();
        self.slot_mut(reader, slot)?.as_mut().ok_or_else(|| {
            DriverError::card_removed(format!("no card in slot {slot} of reader '{name}'"))
        })
    }

    /// The index of the reader named `name`, and the reader.
    fn find(&mut self, name: &str) -> Result<(usize, &mut Reader), String> {
        self.readers
            .iter_mut()
            .enumerate()
            .find_map(|(i, r)| r.as_mut().filter(|r| r.config.name == name).map(|r| (i, r)))
            .ok_or_else(|| format!("no reader named '{name}'"))
    }

    fn running(&self) -> Result<&EventSink, String> {
        self.events
            .as_ref()
            .ok_or_else(|| "the driver is not running".to_owned())
    }

    /// Sends `event` if the driver runs; a stopping driver only logs it.
    fn report(&self, event: Event) {
        if let Some(events) = &self.events {
            if events.send(event.clone()).is_err() {
                warn!(?event, "the driver is stopping; event not sent");
            }
        }
    }

    fn check_slot(reader: &Reader, slot: i32) -> Result<usize, String> {
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
        self.running()?;
        let (index, reader) = self.find(name)?;
        let s = Self::check_slot(reader, slot)?;
        if reader.slots[s].is_some() {
            return Err(format!("slot {slot} of reader '{name}' is occupied"));
        }
        let card =
            EmulCard::new(reader.config.inserted_card(atr.clone())).map_err(|e| e.to_string())?;
        reader.slots[s] = Some(card);
        info!(reader = name, slot, "card inserted");
        self.report(Event::CardInserted {
            reader: reader_id(index),
            slot,
            atr,
            card_type: CardType::Processor,
        });
        Ok(())
    }

    /// Removes the card from a slot (control socket `remove`).
    pub fn remove(&mut self, name: &str, slot: i32) -> Result<(), String> {
        self.running()?;
        let (index, reader) = self.find(name)?;
        let s = Self::check_slot(reader, slot)?;
        if reader.slots[s].take().is_none() {
            return Err(format!("slot {slot} of reader '{name}' is empty"));
        }
        info!(reader = name, slot, "card removed");
        self.report(Event::CardRemoved {
            reader: reader_id(index),
            slot,
        });
        Ok(())
    }

    /// Adds an empty reader with the next id (control socket `addreader`).
    pub fn add_reader(&mut self, name: &str, slots: i32) -> Result<(), String> {
        self.running()?;
        if self.find(name).is_ok() {
            return Err(format!("a reader named '{name}' exists"));
        }
        if !(1..=MAX_SLOTS).contains(&slots) {
            return Err(format!("{slots} slots: must be 1 to {MAX_SLOTS}"));
        }
        let config = ReaderConfig::added(name, slots);
        let id = reader_id(self.readers.len());
        let described = describe(&config, id);
        self.readers.push(Some(Reader {
            slots: (0..slots).map(|_| None).collect(),
            config,
        }));
        info!(reader = name, %id, slots, "reader added");
        self.report(Event::ReaderAdd(described));
        Ok(())
    }

    /// Deletes a reader and the cards in it (control socket `delreader`).
    pub fn del_reader(&mut self, name: &str) -> Result<(), String> {
        self.running()?;
        let (index, _) = self.find(name)?;
        self.readers[index] = None;
        info!(reader = name, "reader deleted");
        self.report(Event::ReaderDel(reader_id(index)));
        Ok(())
    }

    /// Reports a reader failure: its cards are gone, as the server takes them to be; a
    /// later `insert` brings the reader back (control socket `readererror`).
    pub fn reader_error(&mut self, name: &str, text: &str) -> Result<(), String> {
        self.running()?;
        let (index, reader) = self.find(name)?;
        reader.slots.iter_mut().for_each(|slot| *slot = None);
        warn!(reader = name, error = text, "reader error");
        self.report(Event::ReaderError {
            reader: reader_id(index),
            text: text.to_owned(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> (State, chipcard_driver::EventReceiver) {
        let (events, rx) = EventSink::channel();
        let mut state = State::default();
        let reader = ReaderConfig::added("Emul Reader 0", 1);
        state.start(
            vec![Reader {
                slots: vec![None],
                config: reader,
            }],
            events,
        );
        (state, rx)
    }

    #[test]
    fn added_readers_get_the_next_id_and_deleted_ids_are_not_reused() {
        let (mut state, mut rx) = running();
        state.add_reader("Hot Plug", 2).expect("new name");
        assert_eq!(
            rx.try_recv(),
            Some(Event::ReaderAdd(describe(
                &ReaderConfig::added("Hot Plug", 2),
                ReaderId(1)
            )))
        );
        assert!(state.add_reader("Hot Plug", 1).is_err(), "name taken");
        assert!(state.add_reader("Other", 0).is_err(), "no slots");
        assert!(
            state.add_reader("Other", MAX_SLOTS + 1).is_err(),
            "too many"
        );
        state
            .insert("Hot Plug", 1, vec![0x3B, 0x00])
            .expect("slot 1 exists");
        assert!(matches!(
            rx.try_recv(),
            Some(Event::CardInserted {
                reader: ReaderId(1),
                slot: 1,
                ..
            })
        ));
        state.del_reader("Hot Plug").expect("exists");
        assert_eq!(rx.try_recv(), Some(Event::ReaderDel(ReaderId(1))));
        assert!(state.del_reader("Hot Plug").is_err(), "gone");
        assert!(
            state.card_mut(ReaderId(1), 1).is_err(),
            "its card went with it"
        );
        state
            .add_reader("Hot Plug", 1)
            .expect("the name is free again");
        assert!(matches!(
            rx.try_recv(),
            Some(Event::ReaderAdd(DriverReader {
                reader_id: ReaderId(2),
                ..
            }))
        ));
    }

    #[test]
    fn a_reader_error_empties_the_reader_until_the_next_insert() {
        let (mut state, mut rx) = running();
        state
            .insert("Emul Reader 0", 0, vec![0x3B, 0x00])
            .expect("empty slot");
        let _inserted = rx.try_recv();
        state
            .reader_error("Emul Reader 0", "bus error")
            .expect("exists");
        assert_eq!(
            rx.try_recv(),
            Some(Event::ReaderError {
                reader: ReaderId(0),
                text: "bus error".into()
            })
        );
        assert!(state.card_mut(ReaderId(0), 0).is_err(), "card gone");
        assert!(state.reader_error("Nobody", "x").is_err());
        state
            .insert("Emul Reader 0", 0, vec![0x3B, 0x00])
            .expect("the slot is free");
    }

    #[test]
    fn nothing_changes_before_the_driver_runs() {
        let mut state = State::default();
        assert!(state.add_reader("r", 1).is_err());
        assert!(state.del_reader("r").is_err());
        assert!(state.reader_error("r", "x").is_err());
    }
}
