//! Software smart cards that behave like ISO/IEC 7816-4 cards.
//!
//! An [`EmulCard`] is built from a plain [`CardConfig`] (ATR, optional PIN, a tree of DFs and
//! transparent EFs below the MF `3F00`) and answers command APDUs through
//! [`EmulCard::transmit`]: bytes in, response bytes (data, SW1, SW2) out. It does no I/O and
//! needs no runtime, so chipcard's emulated-reader driver, a virtual card for vpcd or a
//! CT-API library can all wrap it.
//!
//! # What the card does
//!
//! | command | INS | behaviour |
//! |---|---|---|
//! | SELECT | `A4` | P1=`00` by file id (empty data selects the MF); P2=`0C` no data, `00` FCI `6F`, `04` FCP `62` (tags `80`/`81` size, `82` descriptor, `83` file id); P1=`04` (by name) finds nothing: `6A82` |
//! | READ BINARY | `B0` | offset P1P2 (15 bits), `Le` bytes; `6B00` offset past the end, `6282` end reached before `Le` bytes |
//! | UPDATE BINARY | `D6` | offset P1P2; `6A84` data past the end of the EF |
//! | GET CHALLENGE | `84` | `Le` random bytes |
//! | VERIFY | `20` | P2 `00`, `01`, `80` or `81`; data is the PIN as configured; `63Cx` wrong (x tries left), `6983` blocked; without data: `9000` verified, else `63Cx` |
//!
//! Other answers: `6700` malformed APDU or wrong case, `6D00` unknown INS, `6E00` CLA outside
//! `00`–`1F`, `6881`/`6882`/`6884` logical channels, secure messaging or chaining requested
//! (not supported), `6A82` file not found, `6986` no current EF, `6982` access condition
//! not met, `6A86` wrong P1/P2, `6A88` no PIN configured or unknown PIN reference.
//! [`EmulCard::reset`] forgets the verified PIN and the selection (file contents and the
//! retry counter stay, as in a card's EEPROM).
#![forbid(unsafe_code)]

pub mod apdu;
mod card;
mod config;
pub mod sw;

pub use card::EmulCard;
pub use config::{default_atr, default_files, Access, CardConfig, ConfigError, FileConfig, Pin};

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use crate::{CardConfig, EmulCard, Pin};

    proptest! {
        #[test]
        fn transmit_never_panics_and_always_ends_with_a_status(
            apdus in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8)
        ) {
            let config = CardConfig::default().with_pin(Pin::from_text("1234").expect("pin"), 3);
            let mut card = EmulCard::new(config).expect("valid");
            for apdu in &apdus {
                let response = card.transmit(apdu);
                prop_assert!(response.len() >= 2);
            }
        }

        #[test]
        fn transmit_never_panics_on_known_instructions(
            cla in prop_oneof![Just(0u8), any::<u8>()],
            ins in prop_oneof![Just(0xA4u8), Just(0xB0), Just(0xD6), Just(0x84), Just(0x20)],
            p1 in any::<u8>(),
            p2 in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut card = EmulCard::new(CardConfig::default()).expect("valid");
            // Make an EF current first so READ/UPDATE reach their offset checks.
            card.transmit(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x2F, 0x02]);
            let mut apdu = vec![cla, ins, p1, p2];
            apdu.extend_from_slice(&body);
            prop_assert!(card.transmit(&apdu).len() >= 2);
        }
    }
}
