//! What the driver knows about readers and cards, shared by the monitor thread (which
//! changes it and reports every change as an event) and the backend thread (which looks
//! readers up for `CardCommand` and `ResetCard`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chipcard_driver::{DriverError, Event, EventSink};
use chipcard_ipc::message::{CardType, DriverReader};
use chipcard_ipc::ReaderId;
use tracing::{debug, info};

/// The reader type reported for every reader.
pub const READER_TYPE: &str = "pcsc";

/// A card the monitor has seen in a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardEntry {
    /// Its answer to reset, from the reader state (updated by `ResetCard`).
    pub atr: Vec<u8>,
    /// pcscd's card event counter for the reader when the card was seen.
    pub event_count: u32,
    /// Which insertion this is: unique within the process, so a connection made for one
    /// card is never used for the next one.
    pub generation: u64,
}

#[derive(Debug)]
struct ReaderEntry {
    name: String,
    card: Option<CardEntry>,
}

/// The readers pcscd has (those the configuration selects) and their cards.
#[derive(Debug)]
pub struct Registry {
    events: EventSink,
    /// Every name ever seen and its id: a reader that comes back keeps its id, and an id
    /// never names another reader.
    ids: HashMap<String, ReaderId>,
    next_id: u32,
    readers: BTreeMap<ReaderId, ReaderEntry>,
    generations: u64,
}

/// The registry, shared between threads.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<Registry>>);

impl Shared {
    /// An empty registry reporting to `events`.
    pub fn new(events: EventSink) -> Shared {
        Shared(Arc::new(Mutex::new(Registry {
            events,
            ids: HashMap::new(),
            next_id: 0,
            readers: BTreeMap::new(),
            generations: 0,
        })))
    }

    /// Locks it. A panic on another thread while it held the lock leaves the data usable
    /// (every change is a single step), so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Registry> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Registry {
    fn send(&self, event: Event) {
        if self.events.send(event).is_err() {
            debug!("the driver is stopping; event dropped");
        }
    }

    /// The id of the reader called `name`, assigned on first sight.
    fn id_for(&mut self, name: &str) -> ReaderId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = ReaderId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        self.ids.insert(name.to_owned(), id);
        id
    }

    /// Adds a reader; sends `ReaderAdd` when `announce` (not for the readers `DriverReady`
    /// lists). Returns its description.
    pub fn add_reader(&mut self, name: &str, flags: Vec<String>, announce: bool) -> DriverReader {
        let id = self.id_for(name);
        let reader = DriverReader {
            reader_id: id,
            name: name.to_owned(),
            reader_flags: flags,
            reader_type: Some(READER_TYPE.to_owned()),
            slots: Some(1),
            port: None,
            short_descr: Some("PC/SC reader".to_owned()),
        };
        info!(reader = %name, %id, flags = ?reader.reader_flags, "reader added");
        self.readers.insert(
            id,
            ReaderEntry {
                name: name.to_owned(),
                card: None,
            },
        );
        if announce {
            self.send(Event::ReaderAdd(reader.clone()));
        }
        reader
    }

    /// Removes a reader: `CardRemoved` for its card, then `ReaderDel`.
    pub fn remove_reader(&mut self, id: ReaderId) {
        let Some(entry) = self.readers.remove(&id) else {
            return;
        };
        if entry.card.is_some() {
            info!(reader = %entry.name, %id, "card removed (reader gone)");
            self.send(Event::CardRemoved {
                reader: id,
                slot: 0,
            });
        }
        info!(reader = %entry.name, %id, "reader removed");
        self.send(Event::ReaderDel(id));
    }

    /// Removes every reader (pcscd went away).
    pub fn remove_all(&mut self) {
        let ids: Vec<ReaderId> = self.readers.keys().copied().collect();
        for id in ids {
            self.remove_reader(id);
        }
    }

    /// What pcscd reports for a reader's slot: a card with this ATR and event counter, or
    /// none. Sends `CardInserted` / `CardRemoved` for the difference to what was known; a
    /// card swapped between two looks (the event counter moved on) is both.
    pub fn card_state(&mut self, id: ReaderId, present: Option<(&[u8], u32)>) {
        let Some(entry) = self.readers.get(&id) else {
            return;
        };
        let name = entry.name.clone();
        match (&entry.card, present) {
            (None, None) => {}
            (Some(card), Some((_, count))) if card.event_count == count => {}
            (Some(_), None) => {
                self.clear_card(id, &name);
            }
            (Some(_), Some((atr, count))) => {
                debug!(reader = %name, "the card was swapped between two looks");
                self.clear_card(id, &name);
                self.insert_card(id, &name, atr, count);
            }
            (None, Some((atr, count))) => self.insert_card(id, &name, atr, count),
        }
    }

    fn clear_card(&mut self, id: ReaderId, name: &str) {
        if let Some(entry) = self.readers.get_mut(&id) {
            entry.card = None;
        }
        info!(reader = %name, %id, "card removed");
        self.send(Event::CardRemoved {
            reader: id,
            slot: 0,
        });
    }

    fn insert_card(&mut self, id: ReaderId, name: &str, atr: &[u8], event_count: u32) {
        self.generations += 1;
        let card = CardEntry {
            atr: atr.to_vec(),
            event_count,
            generation: self.generations,
        };
        if let Some(entry) = self.readers.get_mut(&id) {
            entry.card = Some(card);
        }
        info!(reader = %name, %id, atr = %hex::encode_upper(atr), "card inserted");
        self.send(Event::CardInserted {
            reader: id,
            slot: 0,
            atr: atr.to_vec(),
            card_type: CardType::Processor,
        });
    }

    /// The reader's name and the generation of its card, for a command to slot `slot`.
    /// Unknown readers and slots are "not found" (3), an empty slot "card removed" (7).
    pub fn card(&self, id: ReaderId, slot: i32) -> Result<(String, u64), DriverError> {
        let entry = self
            .readers
            .get(&id)
            .ok_or_else(|| DriverError::not_found(format!("no reader {id}")))?;
        if slot != 0 {
            return Err(DriverError::not_found(format!(
                "reader '{}' has one slot (0), not {slot}",
                entry.name
            )));
        }
        match &entry.card {
            Some(card) => Ok((entry.name.clone(), card.generation)),
            None => Err(DriverError::card_removed(format!(
                "no card in reader '{}'",
                entry.name
            ))),
        }
    }

    /// Records a new ATR after a reset of the card of `generation`.
    pub fn set_atr(&mut self, id: ReaderId, generation: u64, atr: &[u8]) {
        if let Some(card) = self
            .readers
            .get_mut(&id)
            .and_then(|e| e.card.as_mut())
            .filter(|c| c.generation == generation)
        {
            card.atr = atr.to_vec();
        }
    }

    /// The ids and names of the readers, in id order.
    #[cfg(test)]
    pub fn readers(&self) -> Vec<(ReaderId, String)> {
        self.readers
            .iter()
            .map(|(id, e)| (*id, e.name.clone()))
            .collect()
    }

    /// The card known in a reader.
    #[cfg(test)]
    pub fn card_entry(&self, id: ReaderId) -> Option<&CardEntry> {
        self.readers.get(&id).and_then(|e| e.card.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use chipcard_driver::EventReceiver;
    use chipcard_ipc::ErrorCode;

    use super::*;

    fn drain(rx: &mut EventReceiver) -> Vec<Event> {
        std::iter::from_fn(|| rx.try_recv()).collect()
    }

    #[test]
    fn ids_are_stable_and_events_follow_changes() {
        let (sink, mut rx) = EventSink::channel();
        let shared = Shared::new(sink);
        let mut reg = shared.lock();
        let a = reg.add_reader("A", vec![], false).reader_id;
        let b = reg.add_reader("B", vec!["KEYPAD".into()], true).reader_id;
        assert_eq!((a, b), (ReaderId(0), ReaderId(1)));
        assert!(
            matches!(&drain(&mut rx)[..], [Event::ReaderAdd(r)] if r.reader_id == b && r.reader_flags == ["KEYPAD"])
        );

        assert_eq!(
            reg.card(a, 0).expect_err("empty").code,
            ErrorCode::CardRemoved
        );
        assert_eq!(reg.card(a, 1).expect_err("slot").code, ErrorCode::NotFound);
        assert_eq!(
            reg.card(ReaderId(9), 0).expect_err("reader").code,
            ErrorCode::NotFound
        );

        reg.card_state(a, Some((&[0x3B, 0x00], 1)));
        reg.card_state(a, Some((&[0x3B, 0x00], 1)));
        let (name, gen1) = reg.card(a, 0).expect("card");
        assert_eq!(name, "A");
        // Swapped between two looks: removed, then inserted with a new generation.
        reg.card_state(a, Some((&[0x3B, 0x01], 3)));
        let (_, gen2) = reg.card(a, 0).expect("card");
        assert_ne!(gen1, gen2);
        reg.set_atr(a, gen2, &[0x3B, 0x02]);
        assert_eq!(
            reg.card_entry(a).map(|c| c.atr.clone()),
            Some(vec![0x3B, 0x02])
        );
        reg.card_state(a, None);
        reg.card_state(a, None);
        let events = drain(&mut rx);
        assert_eq!(
            events,
            [
                Event::CardInserted {
                    reader: a,
                    slot: 0,
                    atr: vec![0x3B, 0x00],
                    card_type: CardType::Processor
                },
                Event::CardRemoved { reader: a, slot: 0 },
                Event::CardInserted {
                    reader: a,
                    slot: 0,
                    atr: vec![0x3B, 0x01],
                    card_type: CardType::Processor
                },
                Event::CardRemoved { reader: a, slot: 0 },
            ]
        );

        reg.card_state(b, Some((&[0x3B, 0x00], 1)));
        reg.remove_all();
        assert_eq!(
            &drain(&mut rx)[1..],
            [
                Event::ReaderDel(a),
                Event::CardRemoved { reader: b, slot: 0 },
                Event::ReaderDel(b),
            ]
        );
        assert!(reg.readers().is_empty());
        // Back again: the same ids; a new reader gets a new one.
        assert_eq!(reg.add_reader("B", vec![], true).reader_id, b);
        assert_eq!(reg.add_reader("C", vec![], true).reader_id, ReaderId(2));
        assert_eq!(reg.add_reader("A", vec![], true).reader_id, a);
    }
}
