//! The card file: which terminal (port) holds which card.

use std::path::Path;

/// The environment variable naming the card file. Unset: every terminal is empty.
pub const ENV_CARDS: &str = "CHIPCARD_CTAPI_EMUL";

/// The most card slots (ICCs) a terminal has: CT-API addresses ICC 1 to ICC 14.
pub const MAX_ICC: u8 = 14;

/// One card from the card file: `PORT[:ICC] ATRHEX [PIN]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardLine {
    /// The port number (`pn` of `CT_init`) of the terminal holding the card.
    pub port: u16,
    /// The slot holding it: ICC 1 to [`MAX_ICC`] (`PORT:ICC`; 1 without `:ICC`).
    pub icc: u8,
    /// The card's answer to reset.
    pub atr: Vec<u8>,
    /// The PIN VERIFY checks, if any.
    pub pin: Option<String>,
}

/// A fault the card file asks for, to test how applications cope with hanging terminals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hang {
    /// `hang-init PORT`: `CT_init` for the port never returns.
    Init(u16),
    /// `hang-apdu PORT`: `CT_data` with an APDU for the card never returns.
    Apdu(u16),
}

/// What the card file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardFile {
    /// The cards, at most one per port.
    pub cards: Vec<CardLine>,
    /// The faults asked for.
    pub hangs: Vec<Hang>,
}

/// Parses the card file: one card per line, `PORT[:ICC] ATRHEX [PIN]`, or a fault,
/// `hang-init PORT` or `hang-apdu PORT`; blank lines and lines starting with `#` are
/// ignored. A malformed line is skipped (a CT-API library has nowhere to report it); a later
/// card line for the same port and ICC replaces an earlier one.
pub fn parse_cards(text: &str) -> CardFile {
    let mut file = CardFile::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(port), Some(atr)) = (words.next(), words.next()) else {
            continue;
        };
        let hang = match port {
            "hang-init" => Some(Hang::Init as fn(u16) -> Hang),
            "hang-apdu" => Some(Hang::Apdu as fn(u16) -> Hang),
            _ => None,
        };
        if let Some(hang) = hang {
            if let Ok(port) = atr.parse::<u16>() {
                file.hangs.push(hang(port));
            }
            continue;
        }
        let (Some((port, icc)), Ok(atr)) = (parse_place(port), hex::decode(atr)) else {
            continue;
        };
        let pin = words.next().map(str::to_owned);
        file.cards.retain(|c| (c.port, c.icc) != (port, icc));
        file.cards.push(CardLine {
            port,
            icc,
            atr,
            pin,
        });
    }
    file
}

/// `PORT` or `PORT:ICC` (ICC 1 to [`MAX_ICC`]).
fn parse_place(word: &str) -> Option<(u16, u8)> {
    let (port, icc) = match word.split_once(':') {
        Some((port, icc)) => (port, icc.parse::<u8>().ok()?),
        None => (word, 1),
    };
    let port = port.parse::<u16>().ok()?;
    (1..=MAX_ICC).contains(&icc).then_some((port, icc))
}

/// The card file named by [`ENV_CARDS`] now. A missing or unreadable file is empty.
fn read_file() -> CardFile {
    std::env::var_os(ENV_CARDS)
        .and_then(|path| std::fs::read_to_string(Path::new(&path)).ok())
        .map(|text| parse_cards(&text))
        .unwrap_or_default()
}

/// The cards in terminal `port` now.
pub(crate) fn cards_for_port(port: u16) -> Vec<CardLine> {
    read_file()
        .cards
        .into_iter()
        .filter(|c| c.port == port)
        .collect()
}

/// Whether the card file asks for `hang` now.
pub(crate) fn hangs(hang: Hang) -> bool {
    read_file().hangs.contains(&hang)
}

/// Blocks the calling thread for good, as a terminal that never answers does.
pub(crate) fn hang_forever() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_bad_lines() {
        let file = parse_cards(
            "# comment\n\n1 3B8180018080 1234\n2 3b00\nx 3B00\n3 zz\n4\n2 3B0102\n\
             hang-init 5\nhang-apdu 6\nhang-init x\n2:2 3B00\n2:0 3B00\n2:15 3B00\n2: 3B00\n",
        );
        assert_eq!(file.hangs, vec![Hang::Init(5), Hang::Apdu(6)]);
        assert_eq!(
            file.cards,
            vec![
                CardLine {
                    port: 1,
                    icc: 1,
                    atr: vec![0x3B, 0x81, 0x80, 0x01, 0x80, 0x80],
                    pin: Some("1234".into())
                },
                CardLine {
                    port: 2,
                    icc: 1,
                    atr: vec![0x3B, 0x01, 0x02],
                    pin: None
                },
                CardLine {
                    port: 2,
                    icc: 2,
                    atr: vec![0x3B, 0x00],
                    pin: None
                },
            ]
        );
    }
}
