//! Any bytes → a card definition file (`etc/cards/*.conf`, group format with `cardType`
//! groups and ATR patterns) read into chipcardd's card-type registry, then every pattern
//! matched against an ATR the input chooses. Nothing may panic or loop (`extends` may form
//! cycles); a match names each type at most once.
#![no_main]

use std::path::Path;

use chipcardd::cardtypes::{AtrPattern, CardTypeRegistry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte says how many of the last bytes are the ATR to match.
    let Some((&atr_len, rest)) = data.split_first() else {
        return;
    };
    let atr_len = usize::from(atr_len % 34).min(rest.len());
    let (text, atr) = rest.split_at(rest.len() - atr_len);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    // A single pattern, as `atr="..."` holds it.
    if let Ok(pattern) = AtrPattern::parse(text) {
        let _ = pattern.matches(atr);
    }
    let mut registry = CardTypeRegistry::default();
    if registry.add_text(Path::new("fuzz.conf"), text).is_ok() {
        let found = registry.matches(atr);
        for (i, name) in found.names.iter().enumerate() {
            assert!(
                !found.names[..i].iter().any(|n| n.eq_ignore_ascii_case(name)),
                "{name} matched twice"
            );
        }
    }
});
