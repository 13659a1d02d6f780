//! Any bytes → a sequence of command APDUs, as clients send them, to the emulated card engine
//! (`chipcard-emulcard`, behind the emul driver, the vpcd card and the CT-API library). Each
//! APDU is a length byte and that many bytes; a length of 0 resets the card. Nothing may
//! panic, every response ends in a status word, no response is longer than a short or an
//! extended APDU allows, and a reset gives the ATR back and forgets the verified PIN.
#![no_main]

use chipcard_emulcard::{CardConfig, EmulCard, Pin};
use libfuzzer_sys::fuzz_target;

/// The longest response: 65,536 data bytes (extended Le of 0000) and SW1 SW2.
const MAX_RESPONSE: usize = 65_536 + 2;

fuzz_target!(|data: &[u8]| {
    let Ok(pin) = Pin::from_text("1234") else {
        return;
    };
    let Ok(mut card) = EmulCard::new(CardConfig::default().with_pin(pin, 3)) else {
        return;
    };
    let atr = card.atr().to_vec();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        if len == 0 {
            assert_eq!(card.reset(), atr);
            assert!(!card.is_verified());
            rest = tail;
            continue;
        }
        let (apdu, tail) = tail.split_at(usize::from(len).min(tail.len()));
        let response = card.transmit(apdu);
        assert!(response.len() >= 2, "response without a status word");
        assert!(response.len() <= MAX_RESPONSE, "response of {} bytes", response.len());
        assert!(card.pin_retries_left() <= 3);
        rest = tail;
    }
});
