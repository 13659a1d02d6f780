//! The emulated card: a file system, a PIN and the commands that use them.

use rand::RngCore;

use crate::apdu::{self, Case, Command};
use crate::config::{Access, CardConfig, ConfigError, FileConfig, Pin};
use crate::sw;

/// The MF's file id.
const MF: u16 = 0x3F00;

#[derive(Debug, Clone)]
enum Body {
    Df {
        children: Vec<usize>,
    },
    Ef {
        data: Vec<u8>,
        read: Access,
        update: Access,
    },
}

#[derive(Debug, Clone)]
struct Node {
    fid: u16,
    parent: Option<usize>,
    body: Body,
}

/// A software card behaving like an ISO 7816-4 card with transparent EFs and one PIN.
///
/// ```
/// use chipcard_emulcard::{CardConfig, EmulCard, Pin};
/// let config = CardConfig::default().with_pin(Pin::from_text("1234").expect("pin"), 3);
/// let mut card = EmulCard::new(config).expect("valid config");
/// // SELECT EF 2F02, READ BINARY 4 bytes
/// assert_eq!(card.transmit(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x2F, 0x02]), [0x90, 0x00]);
/// assert_eq!(card.transmit(&[0x00, 0xB0, 0x00, 0x00, 0x04]), b"chip\x90\x00");
/// // VERIFY with a wrong PIN: two tries left
/// assert_eq!(card.transmit(&[0x00, 0x20, 0x00, 0x80, 0x04, b'0', b'0', b'0', b'0']), [0x63, 0xC2]);
/// ```
#[derive(Debug, Clone)]
pub struct EmulCard {
    atr: Vec<u8>,
    pin: Option<Pin>,
    max_retries: u8,
    retries: u8,
    verified: bool,
    nodes: Vec<Node>,
    current_df: usize,
    current_ef: Option<usize>,
}

/// A response APDU from data and a status word.
fn respond(mut data: Vec<u8>, status: u16) -> Vec<u8> {
    data.extend_from_slice(&status.to_be_bytes());
    data
}

fn status(status: u16) -> Vec<u8> {
    status.to_be_bytes().to_vec()
}

impl EmulCard {
    /// Builds a card, powered and freshly reset, from its description.
    pub fn new(config: CardConfig) -> Result<EmulCard, ConfigError> {
        config.validate()?;
        let mut nodes = vec![Node {
            fid: MF,
            parent: None,
            body: Body::Df {
                children: Vec::new(),
            },
        }];
        add_files(&mut nodes, 0, config.files);
        Ok(EmulCard {
            atr: config.atr,
            pin: config.pin,
            max_retries: config.pin_retries,
            retries: config.pin_retries,
            verified: false,
            nodes,
            current_df: 0,
            current_ef: None,
        })
    }

    /// The answer to reset, without resetting.
    pub fn atr(&self) -> &[u8] {
        &self.atr
    }

    /// PIN tries left (the retry counter survives resets, as on a real card).
    pub fn pin_retries_left(&self) -> u8 {
        self.retries
    }

    /// True after a successful VERIFY, until the next reset or failed VERIFY.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// A warm reset: forgets the verified PIN and the file selection (the MF is current,
    /// no EF is), and returns the ATR. File contents and the retry counter are kept.
    pub fn reset(&mut self) -> Vec<u8> {
        self.verified = false;
        self.current_df = 0;
        self.current_ef = None;
        self.atr.clone()
    }

    /// Processes one command APDU and returns the response APDU (data, then SW1 SW2).
    /// Never panics; anything malformed gets an ISO status word.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        let [cla, ins, ..] = *apdu else {
            return status(sw::WRONG_LENGTH);
        };
        if let Err(sw) = check_cla(cla) {
            return status(sw);
        }
        if !matches!(ins, 0xA4 | 0xB0 | 0xD6 | 0x84 | 0x20) {
            return status(sw::INS_NOT_SUPPORTED);
        }
        let cmd = match apdu::parse(apdu) {
            Ok(cmd) => cmd,
            Err(_) => return status(sw::WRONG_LENGTH),
        };
        match cmd.ins {
            0xA4 => self.select(&cmd),
            0xB0 => self.read_binary(&cmd),
            0xD6 => self.update_binary(&cmd),
            0x84 => get_challenge(&cmd),
            _ => self.verify(&cmd),
        }
    }

    fn children(&self, df: usize) -> &[usize] {
        match &self.nodes[df].body {
            Body::Df { children } => children,
            Body::Ef { .. } => &[],
        }
    }

    /// Finds `fid` as SELECT with P1=00 does: the MF, the current DF, its children, its
    /// parent, and the parent's children (the current DF's siblings).
    fn find(&self, fid: u16) -> Option<usize> {
        if fid == MF {
            return Some(0);
        }
        let current = self.current_df;
        if self.nodes[current].fid == fid {
            return Some(current);
        }
        let in_df = |df: usize| {
            self.children(df)
                .iter()
                .copied()
                .find(|&n| self.nodes[n].fid == fid)
        };
        if let Some(n) = in_df(current) {
            return Some(n);
        }
        let parent = self.nodes[current].parent?;
        if self.nodes[parent].fid == fid {
            return Some(parent);
        }
        in_df(parent)
    }

    fn select(&mut self, cmd: &Command<'_>) -> Vec<u8> {
        let fid = match (cmd.p1, cmd.data) {
            (0x00, []) => MF,
            (0x00, [hi, lo]) => u16::from_be_bytes([*hi, *lo]),
            (0x00, _) => return status(sw::WRONG_LENGTH),
            // Selection by DF name: this card has no named DFs.
            (0x04, _) => return status(sw::FILE_NOT_FOUND),
            _ => return status(sw::INCORRECT_P1P2),
        };
        // P2: bits 1-2 choose the occurrence (only "first" here), bits 3-4 the answer.
        let template = match cmd.p2 {
            0x00 => Some(0x6F),
            0x04 => Some(0x62),
            0x0C => None,
            _ => return status(sw::INCORRECT_P1P2),
        };
        let Some(node) = self.find(fid) else {
            return status(sw::FILE_NOT_FOUND);
        };
        let fci = template.map(|tag| self.fci(node, tag));
        if let (Some(fci), Some(ne)) = (&fci, cmd.ne) {
            if ne < fci.len() {
                // Not executed: the selection stays as it was.
                return status(sw::WRONG_LE_BASE | fci.len() as u16);
            }
        }
        match self.nodes[node].body {
            Body::Df { .. } => {
                self.current_df = node;
                self.current_ef = None;
            }
            Body::Ef { .. } => {
                self.current_df = self.nodes[node].parent.unwrap_or(0);
                self.current_ef = Some(node);
            }
        }
        respond(fci.unwrap_or_default(), sw::OK)
    }

    /// The FCI (`6F`) or FCP (`62`) template of a file: `80`/`81` sizes and `82` descriptor
    /// for EFs, `82` for DFs, and `83` the file id.
    fn fci(&self, node: usize, tag: u8) -> Vec<u8> {
        let node = &self.nodes[node];
        let [hi, lo] = node.fid.to_be_bytes();
        let mut body = Vec::with_capacity(16);
        match &node.body {
            Body::Ef { data, .. } => {
                // A transparent EF is at most 32768 bytes, so the size fits in two bytes.
                let [shi, slo] = (data.len() as u16).to_be_bytes();
                body.extend_from_slice(&[0x80, 0x02, shi, slo]);
                body.extend_from_slice(&[0x81, 0x02, shi, slo]);
                body.extend_from_slice(&[0x82, 0x01, 0x01]);
            }
            Body::Df { .. } => body.extend_from_slice(&[0x82, 0x01, 0x38]),
        }
        body.extend_from_slice(&[0x83, 0x02, hi, lo]);
        let mut out = vec![tag, body.len() as u8];
        out.extend_from_slice(&body);
        out
    }

    /// The current EF's data and access conditions, or the status word explaining why not.
    fn current_ef(&mut self, p1: u8) -> Result<(&mut Vec<u8>, Access, Access), u16> {
        if p1 & 0x80 != 0 {
            // Short EF identifiers are not supported.
            return Err(sw::FUNCTION_NOT_SUPPORTED);
        }
        let ef = self.current_ef.ok_or(sw::NO_CURRENT_EF)?;
        match &mut self.nodes[ef].body {
            Body::Ef { data, read, update } => Ok((data, *read, *update)),
            Body::Df { .. } => Err(sw::NO_CURRENT_EF),
        }
    }

    fn read_binary(&mut self, cmd: &Command<'_>) -> Vec<u8> {
        let Some(ne) = cmd.ne.filter(|_| cmd.case == Case::Case2) else {
            return status(sw::WRONG_LENGTH);
        };
        let offset = usize::from(u16::from_be_bytes([cmd.p1, cmd.p2]) & 0x7FFF);
        let verified = self.verified;
        let (data, read, _) = match self.current_ef(cmd.p1) {
            Ok(ef) => ef,
            Err(sw) => return status(sw),
        };
        let allowed = access_ok(read, verified);
        if !allowed {
            return status(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if offset > data.len() {
            return status(sw::WRONG_OFFSET);
        }
        let end = data.len().min(offset + ne);
        let chunk = data[offset..end].to_vec();
        let sw = if chunk.len() < ne {
            sw::END_OF_FILE
        } else {
            sw::OK
        };
        respond(chunk, sw)
    }

    fn update_binary(&mut self, cmd: &Command<'_>) -> Vec<u8> {
        if cmd.case != Case::Case3 {
            return status(sw::WRONG_LENGTH);
        }
        let offset = usize::from(u16::from_be_bytes([cmd.p1, cmd.p2]) & 0x7FFF);
        let verified = self.verified;
        let (data, _, update) = match self.current_ef(cmd.p1) {
            Ok(ef) => ef,
            Err(sw) => return status(sw),
        };
        let allowed = access_ok(update, verified);
        if !allowed {
            return status(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if offset > data.len() {
            return status(sw::WRONG_OFFSET);
        }
        if offset + cmd.data.len() > data.len() {
            return status(sw::NOT_ENOUGH_SPACE);
        }
        data[offset..offset + cmd.data.len()].copy_from_slice(cmd.data);
        status(sw::OK)
    }

    fn verify(&mut self, cmd: &Command<'_>) -> Vec<u8> {
        if cmd.p1 != 0x00 {
            return status(sw::INCORRECT_P1P2);
        }
        // One PIN, addressed as global (00, 01) or specific (80, 81) reference.
        if !matches!(cmd.p2, 0x00 | 0x01 | 0x80 | 0x81) {
            return status(sw::REFERENCED_DATA_NOT_FOUND);
        }
        if cmd.ne.is_some() {
            return status(sw::WRONG_LENGTH);
        }
        let Some(pin) = &self.pin else {
            return status(sw::REFERENCED_DATA_NOT_FOUND);
        };
        if cmd.data.is_empty() {
            // Status query (ISO 7816-4 §11.5.6): no try is used.
            return status(if self.verified {
                sw::OK
            } else if self.retries == 0 {
                sw::AUTH_METHOD_BLOCKED
            } else {
                sw::RETRIES_BASE | u16::from(self.retries)
            });
        }
        if self.retries == 0 {
            return status(sw::AUTH_METHOD_BLOCKED);
        }
        if pin.matches(cmd.data) {
            self.verified = true;
            self.retries = self.max_retries;
            status(sw::OK)
        } else {
            self.verified = false;
            self.retries -= 1;
            status(sw::RETRIES_BASE | u16::from(self.retries))
        }
    }
}

/// Checks the class byte: interindustry classes `0x` and `1x` only, without logical channels,
/// secure messaging or chaining, which this card does not do.
fn check_cla(cla: u8) -> Result<(), u16> {
    if cla & 0xE0 != 0 {
        return Err(sw::CLA_NOT_SUPPORTED);
    }
    if cla & 0x03 != 0 {
        return Err(sw::LOGICAL_CHANNEL_NOT_SUPPORTED);
    }
    if cla & 0x0C != 0 {
        return Err(sw::SECURE_MESSAGING_NOT_SUPPORTED);
    }
    if cla & 0x10 != 0 {
        return Err(sw::CHAINING_NOT_SUPPORTED);
    }
    Ok(())
}

fn access_ok(access: Access, verified: bool) -> bool {
    match access {
        Access::Always => true,
        Access::Pin => verified,
        Access::Never => false,
    }
}

fn get_challenge(cmd: &Command<'_>) -> Vec<u8> {
    if cmd.p1 != 0 || cmd.p2 != 0 {
        return status(sw::INCORRECT_P1P2);
    }
    let Some(ne) = cmd.ne.filter(|_| cmd.case == Case::Case2) else {
        return status(sw::WRONG_LENGTH);
    };
    let mut challenge = vec![0u8; ne];
    rand::thread_rng().fill_bytes(&mut challenge);
    respond(challenge, sw::OK)
}

fn add_files(nodes: &mut Vec<Node>, parent: usize, files: Vec<FileConfig>) {
    for file in files {
        let index = nodes.len();
        match file {
            FileConfig::Ef {
                fid,
                data,
                read,
                update,
            } => nodes.push(Node {
                fid,
                parent: Some(parent),
                body: Body::Ef { data, read, update },
            }),
            FileConfig::Df { fid, files } => {
                nodes.push(Node {
                    fid,
                    parent: Some(parent),
                    body: Body::Df {
                        children: Vec::new(),
                    },
                });
                add_files(nodes, index, files);
            }
        }
        if let Body::Df { children } = &mut nodes[parent].body {
            children.push(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> EmulCard {
        let config = CardConfig::default().with_pin(Pin::from_text("1234").expect("pin"), 3);
        EmulCard::new(config).expect("valid default card")
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
            .collect()
    }

    /// Runs (command, expected response) pairs in order on one card.
    fn run(card: &mut EmulCard, script: &[(&str, &str)]) {
        for (i, (command, expected)) in script.iter().enumerate() {
            let got = card.transmit(&hex(command));
            assert_eq!(got, hex(expected), "step {i}: {command}");
        }
    }

    #[test]
    fn class_and_instruction_checks() {
        run(
            &mut card(),
            &[
                ("", "6700"),
                ("00A4", "6700"),
                ("80A4000C023F00", "6E00"),
                ("FFA4000C023F00", "6E00"),
                ("01A4000C023F00", "6881"),
                ("0CA4000C023F00", "6882"),
                ("10A4000C023F00", "6884"),
                ("00CA00000000", "6D00"),
                ("00B1000000", "6D00"),
                ("00A4000C023F", "6700"),
                ("00A4000C0102", "6700"),
            ],
        );
    }

    #[test]
    fn select_known_answers() {
        run(
            &mut card(),
            &[
                ("00A4000C023F00", "9000"),
                ("00A4000C", "9000"),
                ("00A4000C022F02", "9000"),
                (
                    "00A40000022F0200",
                    "6F0F 80 02 001A 81 02 001A 82 01 01 83 02 2F02 9000",
                ),
                (
                    "00A40004022F0200",
                    "620F 80 02 001A 81 02 001A 82 01 01 83 02 2F02 9000",
                ),
                ("00A4000002410000", "6F07 82 01 38 83 02 4100 9000"),
                ("00A40000022F0205", "6C11"),
                ("00A4000C024101", "9000"),
                // 2F02 sits beside the current DF 4100: found.
                ("00A4000C022F02", "9000"),
                ("00A4000C024100", "9000"),
                ("00A4000C024101", "9000"),
                // 4101 from the MF: not a child of the MF.
                ("00A4000C", "9000"),
                ("00A4000C024101", "6A82"),
                ("00A4000C023F00", "9000"),
                ("00A4000C02DEAD", "6A82"),
                ("00A4000C03123456", "6700"),
                ("00A4010C024100", "6A86"),
                ("00A4040C04A00000", "6700"),
                ("00A4040C03A00000", "6A82"),
                ("00A40002022F02", "6A86"),
            ],
        );
    }

    #[test]
    fn read_and_update_binary() {
        run(
            &mut card(),
            &[
                ("00B0000004", "6986"),
                ("00A4000C022F02", "9000"),
                ("00B0000004", "63686970 9000"),
                ("00B0001208", "0102030405060708 9000"),
                ("00B0001410", "030405060708 6282"),
                ("00B0001A01", "6282"),
                ("00B0001B01", "6B00"),
                ("00B00000", "6700"),
                ("00B000000101", "6700"),
                ("00B00000000004", "63686970 9000"),
                ("00B0810004", "6A81"),
                ("00D6000002CAFE", "9000"),
                ("00B0000002", "CAFE 9000"),
                ("00D6001902AABB", "6A84"),
                ("00D6001B01AA", "6B00"),
                ("00D60000", "6700"),
                ("00A4000C024100", "9000"),
                ("00B0000001", "6986"),
            ],
        );
    }

    #[test]
    fn pin_protected_update_and_verify() {
        run(
            &mut card(),
            &[
                ("0020008000", "6700"),
                ("00200080", "63C3"),
                ("00A4000C024100", "9000"),
                ("00A4000C024101", "9000"),
                ("00B0000002", "0001 9000"),
                ("00D6000001FF", "6982"),
                ("002000800431323335", "63C2"),
                ("002000800431323334", "9000"),
                ("00200080", "9000"),
                ("00D6000001FF", "9000"),
                ("00B0000002", "FF01 9000"),
                ("002000820431323334", "6A88"),
                ("002001800431323334", "6A86"),
            ],
        );
    }

    #[test]
    fn retries_block_and_reset_clears_state() {
        let mut card = card();
        run(
            &mut card,
            &[
                ("002000800430303030", "63C2"),
                ("002000800430303030", "63C1"),
                ("002000800431323334", "9000"),
                ("00200080", "9000"),
                ("002000800430303030", "63C2"),
                ("00200080", "63C2"),
                ("002000800430303030", "63C1"),
                ("002000800430303030", "63C0"),
                ("002000800431323334", "6983"),
                ("00200080", "6983"),
            ],
        );
        assert_eq!(card.pin_retries_left(), 0);

        let mut card = card_with_verified_selection();
        assert!(card.is_verified());
        assert_eq!(card.reset(), crate::default_atr());
        assert!(!card.is_verified());
        run(&mut card, &[("00B0000001", "6986"), ("00200080", "63C3")]);
    }

    fn card_with_verified_selection() -> EmulCard {
        let mut c = card();
        run(
            &mut c,
            &[("002000800431323334", "9000"), ("00A4000C022F02", "9000")],
        );
        c
    }

    #[test]
    fn no_pin_configured() {
        let mut card = EmulCard::new(CardConfig::default()).expect("valid");
        run(
            &mut card,
            &[("00200080", "6A88"), ("002000800431323334", "6A88")],
        );
    }

    #[test]
    fn get_challenge() {
        let mut card = card();
        let a = card.transmit(&hex("0084000008"));
        let b = card.transmit(&hex("0084000008"));
        assert_eq!(a.len(), 10);
        assert_eq!(&a[8..], &[0x90, 0x00]);
        assert_ne!(a, b, "two challenges differ");
        assert_eq!(card.transmit(&hex("0084000000")).len(), 258);
        assert_eq!(card.transmit(&hex("00840000000100")).len(), 258);
        run(
            &mut card,
            &[
                ("00840000", "6700"),
                ("0084010008", "6A86"),
                ("008400000101", "6700"),
            ],
        );
    }

    #[test]
    fn nested_dfs_select_parent_and_siblings() {
        let config = CardConfig::default().with_files(vec![
            FileConfig::df(
                0x1000,
                vec![FileConfig::df(0x1100, vec![FileConfig::ef(0x1101, [1])])],
            ),
            FileConfig::df(0x2000, vec![]),
        ]);
        let mut card = EmulCard::new(config).expect("valid");
        run(
            &mut card,
            &[
                ("00A4000C021000", "9000"),
                ("00A4000C021100", "9000"),
                ("00A4000C021101", "9000"),
                ("00B0000001", "01 9000"),
                // parent of the current DF
                ("00A4000C021000", "9000"),
                // sibling of the current DF
                ("00A4000C022000", "9000"),
                ("00A4000C021101", "6A82"),
            ],
        );
    }
}
