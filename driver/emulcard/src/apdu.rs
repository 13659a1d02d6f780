//! Command APDU parsing (ISO/IEC 7816-3 §12.1.3, ISO/IEC 7816-4 §5.1).
//!
//! A command APDU is a four-byte header `CLA INS P1 P2` followed by an optional body. The
//! body's length alone decides which of the four cases it is, short or extended:
//!
//! | case | body |
//! |---|---|
//! | 1 | empty |
//! | 2S | `Le` (1 byte, `00` = 256) |
//! | 3S | `Lc` (1 byte, not `00`) + `Lc` data bytes |
//! | 4S | `Lc` + data + `Le` (1 byte, `00` = 256) |
//! | 2E | `00` + `Le` (2 bytes, `0000` = 65536) |
//! | 3E | `00` + `Lc` (2 bytes, not `0000`) + data |
//! | 4E | `00` + `Lc` (2 bytes) + data + `Le` (2 bytes, `0000` = 65536) |
//!
//! Any other body is malformed; a card answers it with `6700` (wrong length).

use std::fmt;

/// The four ISO 7816 command cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Case {
    /// No command data, no response data expected.
    Case1,
    /// No command data, response data expected (`Le`).
    Case2,
    /// Command data (`Lc`), no response data expected.
    Case3,
    /// Command data and response data expected.
    Case4,
}

/// A parsed command APDU, borrowing its data from the input.
#[derive(Clone, PartialEq, Eq)]
pub struct Command<'a> {
    /// The class byte.
    pub cla: u8,
    /// The instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// The command data (`Lc` bytes; empty for cases 1 and 2).
    pub data: &'a [u8],
    /// `Ne`, the most response bytes expected: `None` for cases 1 and 3, else 1..=256
    /// (short) or 1..=65536 (extended).
    pub ne: Option<usize>,
    /// Which case the APDU is.
    pub case: Case,
    /// True when the APDU uses extended length fields.
    pub extended: bool,
}

impl fmt::Debug for Command<'_> {
    /// Prints the header and lengths, never the data: it may hold a PIN.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("cla", &format_args!("{:02X}", self.cla))
            .field("ins", &format_args!("{:02X}", self.ins))
            .field("p1", &format_args!("{:02X}", self.p1))
            .field("p2", &format_args!("{:02X}", self.p2))
            .field("lc", &self.data.len())
            .field("ne", &self.ne)
            .field("case", &self.case)
            .field("extended", &self.extended)
            .finish()
    }
}

/// Why a byte string is not a command APDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ApduError {
    /// Fewer than the four header bytes.
    #[error("command APDU of {0} bytes is shorter than its 4-byte header")]
    TooShort(usize),
    /// The body's length matches none of the seven case encodings.
    #[error("command APDU body of {0} bytes matches no ISO 7816 case")]
    BadLength(usize),
}

/// Parses a command APDU.
///
/// ```
/// use chipcard_emulcard::apdu::{parse, Case};
/// let cmd = parse(&[0x00, 0xB0, 0x00, 0x10, 0x08]).expect("case 2 short");
/// assert_eq!((cmd.case, cmd.ne, cmd.p2), (Case::Case2, Some(8), 0x10));
/// ```
pub fn parse(apdu: &[u8]) -> Result<Command<'_>, ApduError> {
    let (header, body) = match apdu {
        [cla, ins, p1, p2, body @ ..] => ([*cla, *ins, *p1, *p2], body),
        _ => return Err(ApduError::TooShort(apdu.len())),
    };
    let bad = || ApduError::BadLength(body.len());
    let short_ne = |b: u8| if b == 0 { 256 } else { usize::from(b) };
    let extended_ne = |hi: u8, lo: u8| match u16::from_be_bytes([hi, lo]) {
        0 => 65536,
        n => usize::from(n),
    };
    let (data, ne, case, extended): (&[u8], Option<usize>, Case, bool) = match body {
        [] => (&[], None, Case::Case1, false),
        [le] => (&[], Some(short_ne(*le)), Case::Case2, false),
        [0, hi, lo] => (&[], Some(extended_ne(*hi, *lo)), Case::Case2, true),
        [0, hi, lo, rest @ ..] => {
            let lc = usize::from(u16::from_be_bytes([*hi, *lo]));
            if lc == 0 {
                return Err(bad());
            }
            if rest.len() == lc {
                (rest, None, Case::Case3, true)
            } else if rest.len() == lc + 2 {
                let (data, le) = rest.split_at(lc);
                (data, Some(extended_ne(le[0], le[1])), Case::Case4, true)
            } else {
                return Err(bad());
            }
        }
        [lc, rest @ ..] => {
            let lc = usize::from(*lc);
            if lc == 0 {
                return Err(bad());
            }
            if rest.len() == lc {
                (rest, None, Case::Case3, false)
            } else if rest.len() == lc + 1 {
                let (data, le) = rest.split_at(lc);
                (data, Some(short_ne(le[0])), Case::Case4, false)
            } else {
                return Err(bad());
            }
        }
    };
    let [cla, ins, p1, p2] = header;
    Ok(Command {
        cla,
        ins,
        p1,
        p2,
        data,
        ne,
        case,
        extended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, expected case, Lc, Ne, extended), or an error.
    type Row = (
        &'static [u8],
        Result<(Case, usize, Option<usize>, bool), ApduError>,
    );

    const TABLE: &[Row] = &[
        (&[], Err(ApduError::TooShort(0))),
        (&[0x00, 0xA4, 0x00], Err(ApduError::TooShort(3))),
        (&[0x00, 0xA4, 0x00, 0x0C], Ok((Case::Case1, 0, None, false))),
        (
            &[0x00, 0xB0, 0x00, 0x00, 0x10],
            Ok((Case::Case2, 0, Some(16), false)),
        ),
        (
            &[0x00, 0xB0, 0x00, 0x00, 0x00],
            Ok((Case::Case2, 0, Some(256), false)),
        ),
        (
            &[0x00, 0xB0, 0x00, 0x00, 0x00, 0x01, 0x00],
            Ok((Case::Case2, 0, Some(256), true)),
        ),
        (
            &[0x00, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x00],
            Ok((Case::Case2, 0, Some(65536), true)),
        ),
        (
            &[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00],
            Ok((Case::Case3, 2, None, false)),
        ),
        (
            &[0x00, 0xA4, 0x00, 0x00, 0x02, 0x3F, 0x00, 0x00],
            Ok((Case::Case4, 2, Some(256), false)),
        ),
        (
            &[0x00, 0xA4, 0x00, 0x00, 0x02, 0x3F, 0x00, 0x20],
            Ok((Case::Case4, 2, Some(32), false)),
        ),
        (
            &[0x00, 0xD6, 0x00, 0x00, 0x00, 0x00, 0x02, 0xAA, 0xBB],
            Ok((Case::Case3, 2, None, true)),
        ),
        (
            &[
                0x00, 0xA4, 0x00, 0x00, 0x00, 0x00, 0x02, 0x3F, 0x00, 0x00, 0x00,
            ],
            Ok((Case::Case4, 2, Some(65536), true)),
        ),
        (
            &[
                0x00, 0xA4, 0x00, 0x00, 0x00, 0x00, 0x02, 0x3F, 0x00, 0x01, 0x02,
            ],
            Ok((Case::Case4, 2, Some(258), true)),
        ),
        // Lc says 2, one data byte present.
        (
            &[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F],
            Err(ApduError::BadLength(2)),
        ),
        // Lc says 1, three bytes follow.
        (
            &[0x00, 0xA4, 0x00, 0x0C, 0x01, 0x3F, 0x00, 0x00],
            Err(ApduError::BadLength(4)),
        ),
        // Two-byte body: 00 then one byte is neither short nor extended.
        (
            &[0x00, 0xB0, 0x00, 0x00, 0x00, 0x10],
            Err(ApduError::BadLength(2)),
        ),
        // Extended Lc of zero is not allowed.
        (
            &[0x00, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            Err(ApduError::BadLength(5)),
        ),
        // Extended Lc 2 but 3 data bytes.
        (
            &[0x00, 0xD6, 0x00, 0x00, 0x00, 0x00, 0x02, 1, 2, 3],
            Err(ApduError::BadLength(6)),
        ),
    ];

    #[test]
    fn known_answers() {
        for (input, expected) in TABLE {
            let got = parse(input).map(|c| (c.case, c.data.len(), c.ne, c.extended));
            assert_eq!(&got, expected, "input {input:02X?}");
        }
    }

    #[test]
    fn header_and_data_are_split_out() {
        let cmd = parse(&[0x80, 0x20, 0x01, 0x81, 0x04, 1, 2, 3, 4, 0x00]).expect("case 4S");
        assert_eq!((cmd.cla, cmd.ins, cmd.p1, cmd.p2), (0x80, 0x20, 0x01, 0x81));
        assert_eq!(cmd.data, &[1, 2, 3, 4]);
        assert!(!format!("{cmd:?}").contains("01, 02"), "Debug hides data");
    }
}
