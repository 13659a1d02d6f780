//! Decoding an answer to reset (ISO/IEC 7816-3 §8): TS, T0, the interface bytes, the
//! protocols they announce, the historical bytes and the check byte TCK.
//!
//! [`Atr::decode`] takes any bytes and never fails or panics: what cannot be read (a
//! truncated ATR, bytes after the end, a wrong TCK) is reported in [`Atr::problems`] and
//! [`Atr::tck`], and everything that could be read is kept.

/// The maximum length of an ATR (TS plus 32 bytes).
pub const MAX_ATR_LEN: usize = 33;

/// The transmission convention TS announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// `3B`: direct convention.
    Direct,
    /// `3F`: inverse convention.
    Inverse,
    /// Any other byte: not a valid TS.
    Invalid(u8),
}

impl Convention {
    fn of(ts: u8) -> Convention {
        match ts {
            0x3B => Convention::Direct,
            0x3F => Convention::Inverse,
            other => Convention::Invalid(other),
        }
    }

    /// A word for people: `direct`, `inverse` or `invalid`.
    pub fn as_str(self) -> &'static str {
        match self {
            Convention::Direct => "direct",
            Convention::Inverse => "inverse",
            Convention::Invalid(_) => "invalid",
        }
    }
}

/// One interface byte: its name (`TA1`, `TD2`, ...), value and meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceByte {
    /// `TA1`, `TB1`, `TC1`, `TD1`, `TA2`, ...
    pub name: String,
    /// The byte.
    pub value: u8,
    /// What it says.
    pub meaning: String,
}

/// What the check byte TCK says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tck {
    /// Only T=0 is announced, so there is no TCK (and none was found).
    NotNeeded,
    /// A TCK is required but the ATR ends before it.
    Missing,
    /// The TCK is present and correct.
    Correct(u8),
    /// The TCK is present and wrong: the XOR of T0 to TCK is not zero.
    Wrong {
        /// The byte found.
        found: u8,
        /// The byte that would be correct.
        expected: u8,
    },
}

impl Tck {
    /// A short description for people.
    pub fn describe(self) -> String {
        match self {
            Tck::NotNeeded => "absent (only T=0 is announced, so none is needed)".to_owned(),
            Tck::Missing => "missing (required, but the ATR ends before it)".to_owned(),
            Tck::Correct(b) => format!("{b:02X} (correct)"),
            Tck::Wrong { found, expected } => {
                format!("{found:02X} (wrong: should be {expected:02X})")
            }
        }
    }

    /// True when the TCK is as ISO 7816-3 wants it (correct, or rightly absent).
    pub fn is_good(self) -> bool {
        matches!(self, Tck::NotNeeded | Tck::Correct(_))
    }
}

/// A decoded answer to reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Atr {
    /// The bytes as given.
    pub bytes: Vec<u8>,
    /// The initial character TS (absent for an empty ATR).
    pub ts: Option<u8>,
    /// The convention TS announces.
    pub convention: Option<Convention>,
    /// The format byte T0.
    pub t0: Option<u8>,
    /// K, the number of historical bytes T0 announces.
    pub historical_len: usize,
    /// The interface bytes, in order.
    pub interface: Vec<InterfaceByte>,
    /// The protocols announced (`T=0` when no TD1 is present), without T=15.
    pub protocols: Vec<u8>,
    /// Whether T=15 (global interface bytes) appears.
    pub global_bytes: bool,
    /// The historical bytes present (fewer than K when truncated).
    pub historical: Vec<u8>,
    /// The check byte.
    pub tck: Tck,
    /// How many of the bytes belong to the ATR (the rest, if any, came after its end).
    pub length: usize,
    /// What is wrong with the ATR, one sentence each.
    pub problems: Vec<String>,
}

/// Fi and f max (MHz) by the high nibble of TA1 (ISO 7816-3 table 7); `None` = RFU.
const FI_FMAX: [Option<(u16, &str)>; 16] = [
    Some((372, "4")),
    Some((372, "5")),
    Some((558, "6")),
    Some((744, "8")),
    Some((1116, "12")),
    Some((1488, "16")),
    Some((1860, "20")),
    None,
    None,
    Some((512, "5")),
    Some((768, "7.5")),
    Some((1024, "10")),
    Some((1536, "15")),
    Some((2048, "20")),
    None,
    None,
];

/// Di by the low nibble of TA1 (ISO 7816-3 table 8); `None` = RFU.
const DI: [Option<u8>; 16] = [
    None,
    Some(1),
    Some(2),
    Some(4),
    Some(8),
    Some(16),
    Some(32),
    Some(64),
    Some(12),
    Some(20),
    None,
    None,
    None,
    None,
    None,
    None,
];

impl Atr {
    /// Decodes `bytes`. Never fails: problems are reported in the result.
    pub fn decode(bytes: &[u8]) -> Atr {
        let mut atr = Atr {
            bytes: bytes.to_vec(),
            ts: bytes.first().copied(),
            convention: bytes.first().map(|&b| Convention::of(b)),
            t0: bytes.get(1).copied(),
            historical_len: 0,
            interface: Vec::new(),
            protocols: Vec::new(),
            global_bytes: false,
            historical: Vec::new(),
            tck: Tck::NotNeeded,
            length: bytes.len(),
            problems: Vec::new(),
        };
        let Some(ts) = atr.ts else {
            atr.problems.push("the ATR is empty".to_owned());
            return atr;
        };
        if let Some(Convention::Invalid(_)) = atr.convention {
            atr.problems.push(format!(
                "TS {ts:02X} is neither 3B (direct) nor 3F (inverse convention)"
            ));
        }
        let Some(t0) = atr.t0 else {
            atr.problems
                .push("truncated: the ATR ends before T0".to_owned());
            return atr;
        };
        atr.historical_len = usize::from(t0 & 0x0F);
        let mut pos = 2;
        let mut y = t0 >> 4;
        // The protocol that the bytes of the current group belong to (the T of the previous
        // TD); group 1 is global.
        let mut group_protocol: Option<u8> = None;
        let mut needs_tck = false;
        let mut truncated = false;
        let mut group = 1usize;
        loop {
            let mut td = None;
            for (bit, letter) in [(0x1, 'A'), (0x2, 'B'), (0x4, 'C'), (0x8, 'D')] {
                if y & bit == 0 {
                    continue;
                }
                let Some(&value) = bytes.get(pos) else {
                    truncated = true;
                    break;
                };
                pos += 1;
                let name = format!("T{letter}{group}");
                let meaning = interface_meaning(letter, group, group_protocol, value);
                atr.interface.push(InterfaceByte {
                    name,
                    value,
                    meaning,
                });
                if letter == 'D' {
                    td = Some(value);
                }
            }
            if truncated {
                break;
            }
            let Some(td) = td else { break };
            let t = td & 0x0F;
            if t != 0 {
                needs_tck = true;
            }
            if t == 15 {
                atr.global_bytes = true;
            } else if !atr.protocols.contains(&t) {
                atr.protocols.push(t);
            }
            group_protocol = Some(t);
            y = td >> 4;
            group += 1;
        }
        if atr.protocols.is_empty() {
            // Without TD1 (or with only T=15 announced) the card speaks T=0.
            atr.protocols.push(0);
        }
        if truncated {
            atr.problems.push(format!(
                "truncated: the ATR ends within the interface bytes (after {} bytes)",
                bytes.len()
            ));
            atr.tck = if needs_tck {
                Tck::Missing
            } else {
                Tck::NotNeeded
            };
            return atr;
        }
        let end_historical = pos + atr.historical_len;
        atr.historical = bytes[pos.min(bytes.len())..end_historical.min(bytes.len())].to_vec();
        if bytes.len() < end_historical {
            atr.problems.push(format!(
                "truncated: T0 announces {} historical bytes, {} are present",
                atr.historical_len,
                atr.historical.len()
            ));
            atr.tck = if needs_tck {
                Tck::Missing
            } else {
                Tck::NotNeeded
            };
            return atr;
        }
        let mut end = end_historical;
        if needs_tck {
            match bytes.get(end_historical) {
                None => atr.tck = Tck::Missing,
                Some(&found) => {
                    let expected = bytes[1..end_historical].iter().fold(0u8, |a, b| a ^ b);
                    atr.tck = if found == expected {
                        Tck::Correct(found)
                    } else {
                        Tck::Wrong { found, expected }
                    };
                    end += 1;
                }
            }
            if atr.tck == Tck::Missing {
                atr.problems.push(
                    "truncated: a TCK is required (a protocol other than T=0 is announced) but missing"
                        .to_owned(),
                );
            }
        }
        if let Tck::Wrong { found, expected } = atr.tck {
            atr.problems.push(format!(
                "wrong TCK {found:02X}: the XOR of T0 to the last historical byte is {expected:02X}"
            ));
        }
        atr.length = end;
        if bytes.len() > end {
            atr.problems.push(format!(
                "{} byte(s) after the end of the ATR",
                bytes.len() - end
            ));
        }
        if bytes.len() > MAX_ATR_LEN {
            atr.problems.push(format!(
                "{} bytes: longer than the {MAX_ATR_LEN} bytes an ATR may have",
                bytes.len()
            ));
        }
        atr
    }

    /// True when nothing is wrong with the ATR.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    /// The protocols as words: `T=0`, `T=1`.
    pub fn protocol_names(&self) -> Vec<String> {
        self.protocols.iter().map(|t| format!("T={t}")).collect()
    }

    /// The historical bytes as text: printable ASCII as it is, other bytes as `.`.
    pub fn historical_text(&self) -> String {
        self.historical
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '.'
                }
            })
            .collect()
    }

    /// What the historical bytes say (ISO 7816-4 §8.1.1), one line each.
    pub fn historical_meaning(&self) -> Vec<String> {
        describe_historical(&self.historical)
    }
}

fn interface_meaning(letter: char, group: usize, protocol: Option<u8>, value: u8) -> String {
    let hi = value >> 4;
    let lo = value & 0x0F;
    match (letter, group) {
        ('D', _) => {
            let next: Vec<String> = [(0x1, "TA"), (0x2, "TB"), (0x4, "TC"), (0x8, "TD")]
                .into_iter()
                .filter(|(bit, _)| hi & bit != 0)
                .map(|(_, name)| format!("{name}{}", group + 1))
                .collect();
            let protocol = if lo == 15 {
                "T=15: global interface bytes".to_owned()
            } else {
                format!("protocol T={lo}")
            };
            if next.is_empty() {
                format!("{protocol}; no more interface bytes")
            } else {
                format!("{protocol}; {} follow", next.join(", "))
            }
        }
        ('A', 1) => {
            let fi_fmax = FI_FMAX[usize::from(hi)];
            let di = DI[usize::from(lo)];
            let mut parts = vec![
                fi_fmax.map_or_else(|| format!("Fi: RFU ({hi:X})"), |(fi, _)| format!("Fi={fi}")),
                di.map_or_else(|| format!("Di: RFU ({lo:X})"), |di| format!("Di={di}")),
            ];
            if let Some((_, fmax)) = fi_fmax {
                parts.push(format!("f max={fmax} MHz"));
            }
            if let (Some((fi, _)), Some(di)) = (fi_fmax, di) {
                parts.push(format!("{:.1} cycles/ETU", f64::from(fi) / f64::from(di)));
            }
            parts.join(", ")
        }
        ('B', 1) => {
            if value == 0 {
                "VPP is not connected (deprecated byte)".to_owned()
            } else {
                format!(
                    "programming voltage PI1={} and current II={} (deprecated)",
                    value & 0x1F,
                    (value >> 5) & 0x03
                )
            }
        }
        ('C', 1) => match value {
            255 => "extra guard time N=255: minimum character spacing (12 ETU; 11 ETU for T=1)"
                .to_owned(),
            n => format!("extra guard time N={n} ETU"),
        },
        ('A', 2) => format!(
            "specific mode, protocol T={lo}; {}; {}",
            if value & 0x80 != 0 {
                "the mode cannot be changed"
            } else {
                "the mode can be changed"
            },
            if value & 0x10 != 0 {
                "parameters implicit, not defined by TA1"
            } else {
                "parameters defined by TA1"
            }
        ),
        ('B', 2) => format!("programming voltage PI2={value} (deprecated)"),
        ('C', 2) if protocol == Some(0) => {
            format!("T=0 work waiting integer WI={value} (work waiting time 960 x {value} x Fi/f)")
        }
        (_, _) => match protocol {
            Some(1) => t1_meaning(letter, value),
            Some(15) => global_meaning(letter, value),
            Some(t) => format!("specific to T={t}"),
            None => "global".to_owned(),
        },
    }
}

fn t1_meaning(letter: char, value: u8) -> String {
    match letter {
        'A' => format!("T=1 information field size of the card IFSC={value}"),
        'B' => format!(
            "T=1 block waiting integer BWI={}, character waiting integer CWI={}",
            value >> 4,
            value & 0x0F
        ),
        _ => format!(
            "T=1 error detection: {}",
            if value & 0x01 != 0 { "CRC" } else { "LRC" }
        ),
    }
}

fn global_meaning(letter: char, value: u8) -> String {
    match letter {
        'A' => {
            let clock = match value >> 6 {
                0 => "clock stop not supported",
                1 => "clock stop in state L",
                2 => "clock stop in state H",
                _ => "clock stop without preference",
            };
            let mut classes = Vec::new();
            for (bit, class) in [(0x01, "A (5 V)"), (0x02, "B (3 V)"), (0x04, "C (1.8 V)")] {
                if value & bit != 0 {
                    classes.push(class);
                }
            }
            let classes = if classes.is_empty() {
                "no class indicated".to_owned()
            } else {
                format!("class {}", classes.join(", "))
            };
            format!("{clock}; {classes}")
        }
        'B' => {
            if value == 0 {
                "standard or proprietary use contact SPU not used".to_owned()
            } else {
                format!("SPU: {value:02X}")
            }
        }
        _ => "global (T=15)".to_owned(),
    }
}

/// Compact-TLV tag names (ISO 7816-4 §8.1.1.2).
fn tlv_tag_name(tag: u8) -> &'static str {
    match tag {
        0x1 => "country code",
        0x2 => "issuer identification number",
        0x3 => "card service data",
        0x4 => "initial access data",
        0x5 => "card issuer's data",
        0x6 => "pre-issuing data",
        0x7 => "card capabilities",
        0x8 => "status indicator",
        0xF => "application identifier",
        _ => "RFU tag",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_historical(h: &[u8]) -> Vec<String> {
    let Some((&category, rest)) = h.split_first() else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    match category {
        0x00 => {
            lines.push("category 00: compact-TLV objects, then a status indicator".to_owned());
            if rest.len() < 3 {
                lines.push("the status indicator (3 bytes) is missing".to_owned());
                lines.extend(compact_tlv(rest));
            } else {
                let (objects, status) = rest.split_at(rest.len() - 3);
                lines.extend(compact_tlv(objects));
                lines.push(format!(
                    "status indicator: life cycle {:02X}, SW {:02X}{:02X}",
                    status[0], status[1], status[2]
                ));
            }
        }
        0x10 => match rest.first() {
            Some(r) => lines.push(format!("category 10: DIR data reference {r:02X}")),
            None => lines.push("category 10: the DIR data reference is missing".to_owned()),
        },
        0x80 => match pcsc_part3(rest) {
            Some(line) => {
                lines.push("category 80: an application identifier (PC/SC part 3)".to_owned());
                lines.push(line);
            }
            None => {
                lines.push("category 80: compact-TLV objects".to_owned());
                lines.extend(compact_tlv(rest));
            }
        },
        0x81..=0x8F => lines.push(format!("category {category:02X}: RFU")),
        _ => lines.push(format!("category {category:02X}: proprietary")),
    }
    lines
}

/// The contactless storage-card form of PC/SC part 3: `4F len AID ...`, the AID starting
/// with the PC/SC RID `A0 00 00 03 06`, then the standard byte and two card-name bytes.
fn pcsc_part3(rest: &[u8]) -> Option<String> {
    let (&0x4F, rest) = rest.split_first()? else {
        return None;
    };
    let (&len, rest) = rest.split_first()?;
    let aid = rest.get(..usize::from(len))?;
    let info = aid.strip_prefix(&[0xA0, 0x00, 0x00, 0x03, 0x06][..])?;
    let standard = match info.first()? {
        0x01 => "ISO 14443 A, part 1",
        0x02 => "ISO 14443 A, part 2",
        0x03 => "ISO 14443 A, part 3",
        0x05 => "ISO 14443 B, part 1",
        0x06 => "ISO 14443 B, part 2",
        0x07 => "ISO 14443 B, part 3",
        0x09 => "ISO 15693, part 1",
        0x0B => "ISO 15693, part 3",
        0x0C => "ISO 15693, part 4",
        0x11 => "FeliCa",
        _ => "another standard",
    };
    let name = info.get(1..3)?;
    Some(format!(
        "PC/SC storage card: {standard}, card name {:02X}{:02X}",
        name[0], name[1]
    ))
}

fn compact_tlv(mut data: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some((&tl, rest)) = data.split_first() {
        let tag = tl >> 4;
        let len = usize::from(tl & 0x0F);
        if rest.len() < len {
            lines.push(format!(
                "tag {tag:X} ({}): {len} bytes announced, {} present",
                tlv_tag_name(tag),
                rest.len()
            ));
            break;
        }
        let (value, next) = rest.split_at(len);
        lines.push(format!(
            "tag {tag:X} ({}): {}",
            tlv_tag_name(tag),
            hex(value)
        ));
        data = next;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn names(atr: &Atr) -> Vec<&str> {
        atr.interface.iter().map(|b| b.name.as_str()).collect()
    }

    fn meanings(atr: &Atr) -> Vec<&str> {
        atr.interface.iter().map(|b| b.meaning.as_str()).collect()
    }

    /// A T=1 card (German eGK, Starcos 3): TA1, TC1, T=1 parameters, T=15 global bytes, TCK.
    const EGK: &str = "3B DD 97 FF 81 B1 FE 45 1F 03 00 64 04 05 08 03 73 96 21 D0 00 90 00 C8";

    #[test]
    fn t0_card_without_interface_bytes_needs_no_tck() {
        // Schlumberger Multiflex 3k.
        let atr = Atr::decode(&bytes("3B 02 14 50"));
        assert_eq!(atr.convention, Some(Convention::Direct));
        assert_eq!(atr.t0, Some(0x02));
        assert_eq!(atr.historical_len, 2);
        assert!(atr.interface.is_empty());
        assert_eq!(atr.protocols, vec![0]);
        assert_eq!(atr.protocol_names(), ["T=0"]);
        assert_eq!(atr.historical, vec![0x14, 0x50]);
        assert_eq!(atr.tck, Tck::NotNeeded);
        assert!(atr.is_valid(), "{:?}", atr.problems);
        assert_eq!(atr.historical_text(), ".P");
    }

    #[test]
    fn t0_card_with_tb1_tc1() {
        let atr = Atr::decode(&bytes("3B 65 00 00 9C 11 01 01 03"));
        assert_eq!(names(&atr), ["TB1", "TC1"]);
        assert_eq!(
            meanings(&atr),
            [
                "VPP is not connected (deprecated byte)",
                "extra guard time N=0 ETU"
            ]
        );
        assert_eq!(atr.historical, bytes("9C 11 01 01 03"));
        assert_eq!(atr.protocols, vec![0]);
        assert_eq!(atr.tck, Tck::NotNeeded);
        assert!(atr.is_valid());
    }

    #[test]
    fn t1_card_with_correct_tck() {
        let atr = Atr::decode(&bytes(EGK));
        assert_eq!(
            names(&atr),
            ["TA1", "TC1", "TD1", "TD2", "TA3", "TB3", "TD3", "TA4"]
        );
        assert_eq!(
            meanings(&atr),
            [
                "Fi=512, Di=64, f max=5 MHz, 8.0 cycles/ETU",
                "extra guard time N=255: minimum character spacing (12 ETU; 11 ETU for T=1)",
                "protocol T=1; TD2 follow",
                "protocol T=1; TA3, TB3, TD3 follow",
                "T=1 information field size of the card IFSC=254",
                "T=1 block waiting integer BWI=4, character waiting integer CWI=5",
                "T=15: global interface bytes; TA4 follow",
                "clock stop not supported; class A (5 V), B (3 V)",
            ]
        );
        assert_eq!(atr.protocols, vec![1]);
        assert!(atr.global_bytes);
        assert_eq!(atr.historical_len, 13);
        assert_eq!(
            atr.historical,
            bytes("00 64 04 05 08 03 73 96 21 D0 00 90 00")
        );
        assert_eq!(atr.tck, Tck::Correct(0xC8));
        assert_eq!(atr.tck.describe(), "C8 (correct)");
        assert!(atr.is_valid(), "{:?}", atr.problems);
    }

    #[test]
    fn t0_card_with_global_bytes_needs_a_tck() {
        // giffgaff UK 3G SIM: T=0 announced in TD1, T=15 in TD2.
        let atr = Atr::decode(&bytes(
            "3B 9F 96 80 1F C7 80 31 E0 73 FE 21 1B 63 40 41 91 83 07 90 00 50",
        ));
        assert_eq!(names(&atr), ["TA1", "TD1", "TD2", "TA3"]);
        assert_eq!(
            meanings(&atr),
            [
                "Fi=512, Di=32, f max=5 MHz, 16.0 cycles/ETU",
                "protocol T=0; TD2 follow",
                "T=15: global interface bytes; TA3 follow",
                "clock stop without preference; class A (5 V), B (3 V), C (1.8 V)",
            ]
        );
        assert_eq!(atr.protocols, vec![0]);
        assert_eq!(atr.tck, Tck::Correct(0x50));
        assert!(atr.is_valid(), "{:?}", atr.problems);
        assert_eq!(
            atr.historical_meaning(),
            [
                "category 80: compact-TLV objects",
                "tag 3 (card service data): E0",
                "tag 7 (card capabilities): FE 21 1B",
                "tag 6 (pre-issuing data): 40 41 91",
                "tag 8 (status indicator): 07 90 00",
            ]
        );
    }

    #[test]
    fn t0_and_t1_with_tc2() {
        // TD1 T=0 with TC2 (WI), TD2 T=1 with IFSC.
        let mut raw = bytes("3B 90 96 C0 0A 11 12");
        let tck = raw[1..].iter().fold(0u8, |a, b| a ^ b);
        raw.push(tck);
        let atr = Atr::decode(&raw);
        assert_eq!(names(&atr), ["TA1", "TD1", "TC2", "TD2", "TA3"]);
        assert_eq!(
            atr.interface[2].meaning,
            "T=0 work waiting integer WI=10 (work waiting time 960 x 10 x Fi/f)"
        );
        assert_eq!(
            atr.interface[4].meaning,
            "T=1 information field size of the card IFSC=18"
        );
        assert_eq!(atr.protocols, vec![0, 1]);
        assert_eq!(atr.tck, Tck::Correct(tck));
        assert!(atr.is_valid(), "{:?}", atr.problems);
    }

    #[test]
    fn wrong_tck_is_reported_with_the_right_value() {
        let mut raw = bytes(EGK);
        let last = raw.len() - 1;
        raw[last] = 0x00;
        let atr = Atr::decode(&raw);
        assert_eq!(
            atr.tck,
            Tck::Wrong {
                found: 0x00,
                expected: 0xC8
            }
        );
        assert!(!atr.tck.is_good());
        assert_eq!(atr.tck.describe(), "00 (wrong: should be C8)");
        assert_eq!(
            atr.problems,
            ["wrong TCK 00: the XOR of T0 to the last historical byte is C8"]
        );
    }

    #[test]
    fn missing_tck_is_a_truncation() {
        let raw = bytes("3B 80 80 01 01");
        let atr = Atr::decode(&raw[..4]);
        assert_eq!(atr.protocols, vec![0, 1]);
        assert_eq!(atr.tck, Tck::Missing);
        assert!(!atr.is_valid());
        let full = Atr::decode(&raw);
        assert_eq!(full.tck, Tck::Correct(0x01));
        assert!(full.is_valid(), "{:?}", full.problems);
    }

    #[test]
    fn truncated_atrs_keep_what_was_read() {
        let full = bytes(EGK);
        // Every prefix decodes without panicking and says it is truncated.
        for n in 0..full.len() {
            let atr = Atr::decode(&full[..n]);
            assert!(!atr.is_valid(), "prefix of {n} bytes");
            assert!(
                atr.problems
                    .iter()
                    .any(|p| p.contains("truncated") || p.contains("empty")),
                "{n}: {:?}",
                atr.problems
            );
        }
        let atr = Atr::decode(&full[..6]);
        assert_eq!(names(&atr), ["TA1", "TC1", "TD1", "TD2"]);
        assert_eq!(
            atr.problems,
            ["truncated: the ATR ends within the interface bytes (after 6 bytes)"]
        );
        assert_eq!(atr.tck, Tck::Missing);
        let atr = Atr::decode(&full[..12]);
        assert_eq!(atr.historical, bytes("00 64"));
        assert_eq!(
            atr.problems,
            ["truncated: T0 announces 13 historical bytes, 2 are present"]
        );
    }

    #[test]
    fn bad_ts_and_extra_bytes() {
        let atr = Atr::decode(&bytes("3A 00 00"));
        assert_eq!(atr.convention, Some(Convention::Invalid(0x3A)));
        assert_eq!(
            atr.problems,
            [
                "TS 3A is neither 3B (direct) nor 3F (inverse convention)",
                "1 byte(s) after the end of the ATR"
            ]
        );
        let inverse = Atr::decode(&bytes("3F 00"));
        assert_eq!(inverse.convention, Some(Convention::Inverse));
        assert!(inverse.is_valid());
        assert_eq!(Atr::decode(&[]).problems, ["the ATR is empty"]);
        assert_eq!(
            Atr::decode(&[0x3B]).problems,
            ["truncated: the ATR ends before T0"]
        );
    }

    #[test]
    fn historical_bytes_are_explained() {
        // NXP MIFARE Classic 1K as PC/SC part 3 presents it.
        let atr = Atr::decode(&bytes(
            "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A",
        ));
        assert_eq!(atr.protocols, vec![0, 1]);
        assert_eq!(atr.tck, Tck::Correct(0x6A));
        assert_eq!(
            atr.historical_meaning(),
            [
                "category 80: an application identifier (PC/SC part 3)",
                "PC/SC storage card: ISO 14443 A, part 3, card name 0001",
            ]
        );
        assert_eq!(
            describe_historical(&bytes("00 31 C0 01 90 00")),
            [
                "category 00: compact-TLV objects, then a status indicator",
                "tag 3 (card service data): C0",
                "status indicator: life cycle 01, SW 9000",
            ]
        );
        assert_eq!(
            describe_historical(&bytes("80 45 01")),
            [
                "category 80: compact-TLV objects",
                "tag 4 (initial access data): 5 bytes announced, 1 present"
            ]
        );
        assert_eq!(
            describe_historical(&bytes("10 21")),
            ["category 10: DIR data reference 21"]
        );
        assert_eq!(
            describe_historical(&bytes("4A 42")),
            ["category 4A: proprietary"]
        );
        assert!(describe_historical(&[]).is_empty());
    }
}
