//! Any bytes → the cardinfo service's two parsers of outside input: the ATR decoder (a
//! card's answer to reset) and pcsc-tools' ATR list (a file). Neither may panic; what the
//! decoder reports must hold together, and every listed pattern must be usable on the ATR.
#![no_main]

use chipcard_cardinfo::atr::{Atr, Tck};
use chipcard_cardinfo::list::AtrList;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 40 bytes (at most) as an ATR; all of it as a list.
    let atr_bytes = &data[..data.len().min(40)];
    let atr = Atr::decode(atr_bytes);
    assert!(atr.length <= atr_bytes.len());
    assert!(atr.historical.len() <= atr.historical_len);
    if let Tck::Correct(tck) = atr.tck {
        assert_eq!(atr_bytes[atr.length - 1], tck);
        assert_eq!(atr_bytes[1..atr.length].iter().fold(0u8, |a, b| a ^ b), 0);
    }
    let _ = atr.historical_meaning();
    let list = AtrList::parse(&String::from_utf8_lossy(data));
    let _ = list.lookup(atr_bytes);
});
