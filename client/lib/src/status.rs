//! ISO 7816-4 status words (SW1 SW2) and what they mean.

use std::borrow::Cow;
use std::fmt;

/// The status word that ends every response APDU: SW1 in the high byte, SW2 in the low.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusWord(pub u16);

/// The broad class of a status word (ISO 7816-4 §5.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// `9000` and `61xx`: the command was processed.
    Normal,
    /// `62xx`, `63xx`: processed, with a warning.
    Warning,
    /// `64xx`–`66xx`: the card failed while executing the command.
    ExecutionError,
    /// `67xx`–`6Fxx`: the card refused the command as malformed or not allowed.
    CheckingError,
    /// Anything else, including proprietary `9xxx` codes.
    Other,
}

impl StatusWord {
    /// `9000`: success.
    pub const SUCCESS: StatusWord = StatusWord(0x9000);

    /// The status word from SW1 and SW2.
    pub const fn new(sw1: u8, sw2: u8) -> Self {
        StatusWord(((sw1 as u16) << 8) | sw2 as u16)
    }

    /// The status word at the end of a response APDU; `None` if it is shorter than 2 bytes.
    pub fn from_response(rapdu: &[u8]) -> Option<Self> {
        match rapdu {
            [.., sw1, sw2] => Some(StatusWord::new(*sw1, *sw2)),
            _ => None,
        }
    }

    /// SW1.
    pub const fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// SW2.
    pub const fn sw2(self) -> u8 {
        (self.0 & 0xff) as u8
    }

    /// True for `9000` only.
    pub const fn is_success(self) -> bool {
        self.0 == 0x9000
    }

    /// The broad class of the status word.
    pub fn class(self) -> StatusClass {
        match self.sw1() {
            0x90 if self.sw2() == 0 => StatusClass::Normal,
            0x61 => StatusClass::Normal,
            0x62 | 0x63 => StatusClass::Warning,
            0x64..=0x66 => StatusClass::ExecutionError,
            0x67..=0x6F => StatusClass::CheckingError,
            _ => StatusClass::Other,
        }
    }

    /// What the status word means according to ISO 7816-4, in a few words.
    pub fn meaning(self) -> Cow<'static, str> {
        let (sw1, sw2) = (self.sw1(), self.sw2());
        let text: &'static str = match (sw1, sw2) {
            (0x90, 0x00) => "success",
            (0x61, 0x00) => return "success, 256 or more bytes available (GET RESPONSE)".into(),
            (0x61, n) => {
                return format!("success, {n} bytes available (GET RESPONSE)").into();
            }
            (0x62, 0x00) => "warning: state unchanged, no information given",
            (0x62, 0x02..=0x80) => "warning: state unchanged, triggering by the card",
            (0x62, 0x81) => "warning: part of the returned data may be corrupted",
            (0x62, 0x82) => "warning: end of file or record reached before reading Ne bytes",
            (0x62, 0x83) => "warning: selected file deactivated",
            (0x62, 0x84) => "warning: file control information not formatted",
            (0x62, 0x85) => "warning: selected file in termination state",
            (0x62, 0x86) => "warning: no input data available from a sensor",
            (0x62, _) => "warning: state unchanged",
            (0x63, 0x00) => "warning: state changed, no information given (verification failed)",
            (0x63, 0x81) => "warning: file filled up by the last write",
            (0x63, 0xC0..=0xCF) => {
                let left = sw2 & 0x0f;
                return format!(
                    "warning: verification failed, {left} {} left",
                    if left == 1 { "try" } else { "tries" }
                )
                .into();
            }
            (0x63, _) => "warning: state changed",
            (0x64, 0x00) => "execution error: state unchanged",
            (0x64, 0x01) => "execution error: immediate response required by the card",
            (0x64, _) => "execution error: state unchanged",
            (0x65, 0x81) => "execution error: memory failure",
            (0x65, _) => "execution error: state changed",
            (0x66, _) => "execution error: security-related issue",
            (0x67, 0x00) => "wrong length",
            (0x67, _) => "wrong length",
            (0x68, 0x81) => "logical channel not supported",
            (0x68, 0x82) => "secure messaging not supported",
            (0x68, 0x83) => "last command of the chain expected",
            (0x68, 0x84) => "command chaining not supported",
            (0x68, _) => "functions in CLA not supported",
            (0x69, 0x81) => "command incompatible with file structure",
            (0x69, 0x82) => "security status not satisfied",
            (0x69, 0x83) => "authentication method blocked",
            (0x69, 0x84) => "reference data not usable",
            (0x69, 0x85) => "conditions of use not satisfied",
            (0x69, 0x86) => "command not allowed (no current EF)",
            (0x69, 0x87) => "expected secure messaging data objects missing",
            (0x69, 0x88) => "incorrect secure messaging data objects",
            (0x69, _) => "command not allowed",
            (0x6A, 0x80) => "incorrect parameters in the command data field",
            (0x6A, 0x81) => "function not supported",
            (0x6A, 0x82) => "file or application not found",
            (0x6A, 0x83) => "record not found",
            (0x6A, 0x84) => "not enough memory space in the file",
            (0x6A, 0x85) => "Nc inconsistent with TLV structure",
            (0x6A, 0x86) => "incorrect parameters P1-P2",
            (0x6A, 0x87) => "Nc inconsistent with parameters P1-P2",
            (0x6A, 0x88) => "referenced data or reference data not found",
            (0x6A, 0x89) => "file already exists",
            (0x6A, 0x8A) => "DF name already exists",
            (0x6A, _) => "wrong parameters P1-P2",
            (0x6B, _) => "wrong parameters P1-P2 (offset outside the EF)",
            (0x6C, n) => {
                return format!("wrong Le field: {n} bytes available (resend with Le={n:02X})")
                    .into();
            }
            (0x6D, _) => "instruction code not supported or invalid",
            (0x6E, _) => "class not supported",
            (0x6F, _) => "no precise diagnosis",
            (0x90..=0x9F, _) => "application-specific status",
            _ => "unknown status word",
        };
        Cow::Borrowed(text)
    }
}

impl From<u16> for StatusWord {
    fn from(sw: u16) -> Self {
        StatusWord(sw)
    }
}

impl From<StatusWord> for u16 {
    fn from(sw: StatusWord) -> Self {
        sw.0
    }
}

/// Four upper-case hex digits, e.g. `6A82`.
impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusWord({:04X})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let table: &[(u16, &str)] = &[
            (0x9000, "success"),
            (0x6110, "success, 16 bytes available (GET RESPONSE)"),
            (
                0x6100,
                "success, 256 or more bytes available (GET RESPONSE)",
            ),
            (
                0x6C08,
                "wrong Le field: 8 bytes available (resend with Le=08)",
            ),
            (0x63C2, "warning: verification failed, 2 tries left"),
            (0x63C1, "warning: verification failed, 1 try left"),
            (0x6700, "wrong length"),
            (0x6982, "security status not satisfied"),
            (0x6983, "authentication method blocked"),
            (0x6A82, "file or application not found"),
            (0x6B00, "wrong parameters P1-P2 (offset outside the EF)"),
            (0x6D00, "instruction code not supported or invalid"),
            (0x6E00, "class not supported"),
            (0x6F00, "no precise diagnosis"),
            (0x9240, "application-specific status"),
            (0x1234, "unknown status word"),
        ];
        for (sw, meaning) in table {
            assert_eq!(StatusWord(*sw).meaning(), *meaning, "{sw:04X}");
        }
    }

    #[test]
    fn parts_and_classes() {
        let sw = StatusWord::new(0x6A, 0x82);
        assert_eq!((sw.sw1(), sw.sw2()), (0x6A, 0x82));
        assert_eq!(sw.to_string(), "6A82");
        assert_eq!(sw.class(), StatusClass::CheckingError);
        assert!(!sw.is_success());
        assert!(StatusWord::SUCCESS.is_success());
        assert_eq!(StatusWord(0x9000).class(), StatusClass::Normal);
        assert_eq!(StatusWord(0x9001).class(), StatusClass::Other);
        assert_eq!(StatusWord(0x63C0).class(), StatusClass::Warning);
        assert_eq!(StatusWord(0x6581).class(), StatusClass::ExecutionError);
        assert_eq!(
            StatusWord::from_response(&[1, 2, 0x90, 0x00]),
            Some(StatusWord::SUCCESS)
        );
        assert_eq!(StatusWord::from_response(&[0x90]), None);
        for raw in [0u16, 0x9000, 0xFFFF, 0x6A82] {
            assert_eq!(u16::from(StatusWord::from(raw)), raw);
        }
    }
}
