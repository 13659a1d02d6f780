//! The decoder and the list parser take outside input (a card's ATR, a file): whatever the
//! bytes, they must not panic, and what they report must hold together.

use chipcard_cardinfo::atr::{Atr, Tck};
use chipcard_cardinfo::list::{atr_text, AtrList, Pattern};
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_bytes_decode(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let atr = Atr::decode(&bytes);
        prop_assert_eq!(&atr.bytes, &bytes);
        prop_assert!(atr.historical.len() <= atr.historical_len);
        prop_assert!(!atr.protocols.is_empty() || bytes.len() < 2);
        if atr.is_valid() {
            prop_assert!(atr.tck.is_good());
            prop_assert!(bytes.len() <= chipcard_cardinfo::atr::MAX_ATR_LEN);
        }
        prop_assert!(atr.length <= bytes.len());
        if let Tck::Correct(tck) = atr.tck {
            // TCK is the ATR's last byte, and the XOR of T0 up to and including it is zero.
            prop_assert_eq!(bytes[atr.length - 1], tck);
            prop_assert_eq!(bytes[1..atr.length].iter().fold(0u8, |a, b| a ^ b), 0);
        }
    }

    #[test]
    fn a_valid_atr_with_its_tck_recomputed_is_correct(
        k in 0u8..16,
        hist in proptest::collection::vec(any::<u8>(), 15),
        ta1 in any::<u8>(),
    ) {
        // TA1 and TD1 (T=1), K historical bytes, then the right TCK.
        let mut raw = vec![0x3B, 0x90 | k, ta1, 0x01];
        raw.extend_from_slice(&hist[..usize::from(k)]);
        let tck = raw[1..].iter().fold(0u8, |a, b| a ^ b);
        raw.push(tck);
        let atr = Atr::decode(&raw);
        prop_assert_eq!(atr.tck, Tck::Correct(tck));
        prop_assert!(atr.is_valid(), "{:?}", atr.problems);
        prop_assert_eq!(atr.protocols, vec![1]);
        prop_assert_eq!(atr.historical.len(), usize::from(k));
    }

    #[test]
    fn any_text_parses_as_a_list(text in "[ -~\t\n\\[\\]\\.\\*]{0,400}", atr in proptest::collection::vec(any::<u8>(), 0..34)) {
        let list = AtrList::parse(&text);
        let _ = list.lookup(&atr);
    }

    #[test]
    fn an_atr_matches_itself_as_a_pattern(atr in proptest::collection::vec(any::<u8>(), 1..34)) {
        let text = atr_text(&atr);
        let pattern = Pattern::compile(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(pattern.matches(&atr));
        let wild = Pattern::compile(&text.replace(|c: char| c.is_ascii_hexdigit(), ".")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(wild.matches(&atr));
    }
}
