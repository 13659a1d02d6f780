//! Reader flags from the PC/SC part 10 features a reader reports.
//!
//! `SCardControl(CM_IOCTL_GET_FEATURE_REQUEST)` answers a list of TLVs: a 1-byte feature
//! tag, a length (4) and the control code for that feature, big-endian. The tags that say
//! something about the reader's hardware become chipcard reader flags.

use pcsc::{Card, Context, Protocols, ShareMode};
use tracing::debug;

/// `CM_IOCTL_GET_FEATURE_REQUEST`: `SCARD_CTL_CODE(3400)`, 0x42000D48 with pcsc-lite.
pub const GET_FEATURE_REQUEST: pcsc::ffi::DWORD = 3400;

/// PC/SC part 10 feature tags.
pub mod tag {
    /// FEATURE_VERIFY_PIN_START
    pub const VERIFY_PIN_START: u8 = 0x01;
    /// FEATURE_MODIFY_PIN_START
    pub const MODIFY_PIN_START: u8 = 0x03;
    /// FEATURE_VERIFY_PIN_DIRECT
    pub const VERIFY_PIN_DIRECT: u8 = 0x06;
    /// FEATURE_MODIFY_PIN_DIRECT
    pub const MODIFY_PIN_DIRECT: u8 = 0x07;
    /// FEATURE_WRITE_DISPLAY
    pub const WRITE_DISPLAY: u8 = 0x0F;
    /// FEATURE_IFD_DISPLAY_PROPERTIES
    pub const IFD_DISPLAY_PROPERTIES: u8 = 0x11;
}

/// The reader flag of a PIN pad.
pub const KEYPAD: &str = "KEYPAD";
/// The reader flag of a reader with a display.
pub const DISPLAY: &str = "DISPLAY";

/// The feature tags in a GET_FEATURE_REQUEST answer. A truncated last entry is ignored.
pub fn parse_tlv(answer: &[u8]) -> Vec<u8> {
    let mut tags = Vec::new();
    let mut rest = answer;
    while let [tag, len, tail @ ..] = rest {
        let len = usize::from(*len);
        if tail.len() < len {
            break;
        }
        tags.push(*tag);
        rest = &tail[len..];
    }
    tags
}

/// chipcard's reader flags for these feature tags: `KEYPAD` for PIN verification or
/// modification on the reader, `DISPLAY` for a display.
pub fn flags_of(tags: &[u8]) -> Vec<String> {
    let mut flags = Vec::new();
    if tags.iter().any(|t| {
        matches!(
            *t,
            tag::VERIFY_PIN_START
                | tag::VERIFY_PIN_DIRECT
                | tag::MODIFY_PIN_START
                | tag::MODIFY_PIN_DIRECT
        )
    }) {
        flags.push(KEYPAD.to_owned());
    }
    if tags
        .iter()
        .any(|t| matches!(*t, tag::IFD_DISPLAY_PROPERTIES | tag::WRITE_DISPLAY))
    {
        flags.push(DISPLAY.to_owned());
    }
    flags
}

/// Asks the reader for its features over a direct connection (no card needed, the card is
/// not powered) and returns its flags. Any failure means no flags.
pub fn reader_flags(ctx: &Context, reader: &std::ffi::CStr) -> Vec<String> {
    let name = reader.to_string_lossy();
    let card = match ctx.connect(reader, ShareMode::Direct, Protocols::UNDEFINED) {
        Ok(card) => card,
        Err(e) => {
            debug!(reader = %name, error = %e, "no direct connection for the feature request; no flags");
            return Vec::new();
        }
    };
    let mut buf = [0u8; 256];
    let flags = match card.control(pcsc::ctl_code(GET_FEATURE_REQUEST), &[], &mut buf) {
        Ok(answer) => {
            let tags = parse_tlv(answer);
            debug!(reader = %name, features = %hex::encode_upper(&tags), "PC/SC part 10 features");
            flags_of(&tags)
        }
        Err(e) => {
            debug!(reader = %name, error = %e, "the reader reports no features");
            Vec::new()
        }
    };
    leave(card);
    flags
}

/// Disconnects without touching the card (dropping a [`Card`] would reset it).
pub fn leave(card: Card) {
    if let Err((card, e)) = card.disconnect(pcsc::Disposition::LeaveCard) {
        debug!(error = %e, "disconnect failed");
        // The handle is dead anyway (pcscd or the reader went away); dropping it tries a
        // disconnect once more.
        drop(card);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_code_is_pcsc_lites() {
        assert_eq!(pcsc::ctl_code(GET_FEATURE_REQUEST), 0x4200_0D48);
    }

    #[test]
    fn parses_features() {
        // A cyberJack-like answer: VERIFY_PIN_DIRECT, MODIFY_PIN_DIRECT, IFD_PIN_PROPERTIES,
        // IFD_DISPLAY_PROPERTIES.
        let answer = [
            0x06, 4, 0x42, 0x33, 0x00, 0x06, 0x07, 4, 0x42, 0x33, 0x00, 0x07, 0x0A, 4, 0x42, 0x33,
            0x00, 0x0A, 0x11, 4, 0x42, 0x33, 0x00, 0x11,
        ];
        let tags = parse_tlv(&answer);
        assert_eq!(tags, [0x06, 0x07, 0x0A, 0x11]);
        assert_eq!(flags_of(&tags), ["KEYPAD", "DISPLAY"]);
        assert_eq!(flags_of(&[0x01]), ["KEYPAD"]);
        assert_eq!(flags_of(&[0x0F]), ["DISPLAY"]);
        assert!(flags_of(&[0x12, 0x13, 0x0A]).is_empty());
        assert!(parse_tlv(&[]).is_empty());
        assert_eq!(
            parse_tlv(&[0x06, 4, 0x42, 0x33]),
            Vec::<u8>::new(),
            "truncated"
        );
        assert_eq!(
            parse_tlv(&[0x06, 0, 0x11]),
            [0x06],
            "a lone tag byte is ignored"
        );
    }
}
