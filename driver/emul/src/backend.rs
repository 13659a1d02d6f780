//! The emul driver's [`Backend`]: readers from the configuration holding software cards.

use chipcard_driver::{Backend, DriverError, EventSink};
use chipcard_emulcard::EmulCard;
use chipcard_ipc::message::DriverReader;
use chipcard_ipc::{Group, ReaderId};
use tracing::{debug, info};

use crate::config::EmulConfig;
use crate::control::ControlServer;
use crate::state::{describe, reader_id, Reader, Shared};

/// Emulated readers and cards, and the optional control socket.
#[derive(Debug, Default)]
pub struct EmulBackend {
    state: Shared,
    control: Option<ControlServer>,
}

impl Backend for EmulBackend {
    fn start(
        &mut self,
        config: &Group,
        events: EventSink,
    ) -> Result<Vec<DriverReader>, DriverError> {
        let config = EmulConfig::from_group(config)
            .map_err(|e| DriverError::invalid(format!("configuration: {e}")))?;
        let mut readers = Vec::with_capacity(config.readers.len());
        let mut described = Vec::with_capacity(config.readers.len());
        for (index, reader) in config.readers.into_iter().enumerate() {
            let mut slots: Vec<Option<EmulCard>> = (0..reader.slots).map(|_| None).collect();
            for (slot, card) in &reader.cards {
                let card = EmulCard::new(card.clone()).map_err(|e| {
                    DriverError::invalid(format!("reader '{}' slot {slot}: {e}", reader.name))
                })?;
                if let Some(place) = usize::try_from(*slot).ok().and_then(|s| slots.get_mut(s)) {
                    *place = Some(card);
                }
            }
            described.push(describe(&reader, reader_id(index)));
            info!(reader = %reader.name, slots = reader.slots, cards = reader.cards.len(), "reader");
            readers.push(Reader {
                config: reader,
                slots,
            });
        }
        if let Some(path) = &config.control_socket {
            let control = ControlServer::bind(path, self.state.clone()).map_err(|e| {
                DriverError::invalid(format!("controlSocket '{}': {e}", path.display()))
            })?;
            self.control = Some(control);
        }
        self.state.lock().start(readers, events);
        Ok(described)
    }

    fn transmit(
        &mut self,
        reader: ReaderId,
        slot: i32,
        apdu: &[u8],
    ) -> Result<Vec<u8>, DriverError> {
        let mut state = self.state.lock();
        let card = state.card_mut(reader, slot)?;
        Ok(card.transmit(apdu))
    }

    fn reset(&mut self, reader: ReaderId, slot: i32) -> Result<Vec<u8>, DriverError> {
        let mut state = self.state.lock();
        let card = state.card_mut(reader, slot)?;
        debug!(%reader, slot, "reset");
        Ok(card.reset())
    }

    fn stop(&mut self) {
        if let Some(mut control) = self.control.take() {
            control.shutdown();
        }
        self.state.lock().stop();
        info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chipcard_driver::Event;
    use chipcard_ipc::ErrorCode;

    #[test]
    fn readers_cards_and_errors() {
        let config = Group::new("config")
            .with_group(
                Group::new("reader")
                    .with_char("name", "one")
                    .with_char("slots", "2")
                    .with_group(
                        Group::new("card")
                            .with_char("slot", "1")
                            .with_char("pin", "1234"),
                    ),
            )
            .with_group(Group::new("reader").with_char("name", "two"));
        let (events, mut rx) = EventSink::channel();
        let mut backend = EmulBackend::default();
        let readers = backend.start(&config, events).expect("starts");
        assert_eq!(readers.len(), 2);
        assert_eq!(readers[0].slots, Some(2));
        assert!(matches!(
            rx.try_recv(),
            Some(Event::CardInserted {
                reader: ReaderId(0),
                slot: 1,
                ..
            })
        ));
        assert_eq!(
            backend
                .transmit(ReaderId(0), 1, &[0x00, 0x20, 0x00, 0x80])
                .expect("card present"),
            vec![0x63, 0xC3]
        );
        let code = |r: Result<Vec<u8>, DriverError>| r.expect_err("fails").code;
        assert_eq!(
            code(backend.transmit(ReaderId(0), 0, &[0, 0xA4, 0, 0x0C])),
            ErrorCode::CardRemoved
        );
        assert_eq!(
            code(backend.transmit(ReaderId(0), 2, &[0, 0xA4, 0, 0x0C])),
            ErrorCode::NotFound
        );
        assert_eq!(
            code(backend.transmit(ReaderId(5), 0, &[0, 0xA4, 0, 0x0C])),
            ErrorCode::NotFound
        );
        assert_eq!(code(backend.reset(ReaderId(1), 0)), ErrorCode::CardRemoved);
        assert_eq!(
            backend.reset(ReaderId(0), 1).expect("atr"),
            chipcard_emulcard::default_atr()
        );

        {
            let mut state = backend.state.lock();
            state
                .insert("two", 0, vec![0x3B, 0x00])
                .expect("empty slot");
            assert!(
                state.insert("two", 0, vec![0x3B, 0x00]).is_err(),
                "occupied"
            );
            assert!(
                state.insert("three", 0, vec![0x3B, 0x00]).is_err(),
                "no such reader"
            );
            assert!(
                state.insert("two", 1, vec![0x3B, 0x00]).is_err(),
                "no such slot"
            );
            assert!(state.insert("one", 0, vec![0x3B]).is_err(), "ATR too short");
            state.remove("two", 0).expect("occupied slot");
            assert!(state.remove("two", 0).is_err(), "empty");
        }
        assert!(matches!(
            rx.try_recv(),
            Some(Event::CardInserted {
                reader: ReaderId(1),
                slot: 0,
                ..
            })
        ));
        assert!(matches!(
            rx.try_recv(),
            Some(Event::CardRemoved {
                reader: ReaderId(1),
                slot: 0
            })
        ));
        backend.stop();
    }

    #[test]
    fn a_bad_configuration_is_invalid_argument() {
        let config = Group::new("config").with_group(Group::new("reader").with_char("slots", "x"));
        let (events, _rx) = EventSink::channel();
        let e = EmulBackend::default()
            .start(&config, events)
            .expect_err("bad slots");
        assert_eq!(e.code, chipcard_ipc::ErrorCode::InvalidArgument);
        assert!(e.text.starts_with("configuration: reader[0]"), "{}", e.text);
    }
}
