//! Command APDUs the tests send to chipcard's emulated cards again and again.

/// `SELECT MF` (`00 A4 00 0C 02 3F 00`), which every emulated card answers with `90 00`.
pub const SELECT_MF: [u8; 7] = [0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00];

/// `VERIFY` without data (`00 20 00 80`): asks whether the PIN is verified (`90 00`) or how
/// many tries are left (`63 Cx`).
pub const VERIFY_STATUS: [u8; 4] = [0x00, 0x20, 0x00, 0x80];

/// `VERIFY` of `pin` against the card's PIN (reference `80`).
pub fn verify(pin: &[u8]) -> Vec<u8> {
    let mut apdu = VERIFY_STATUS.to_vec();
    apdu.push(u8::try_from(pin.len()).expect("a short PIN"));
    apdu.extend_from_slice(pin);
    apdu
}
