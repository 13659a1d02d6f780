//! The emulated card terminals: CT-BCS for DAD 1, APDUs for DAD 0 (ICC 1) and 2 to 14
//! (ICC 2 to 14), state per `ctn`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use chipcard_emulcard::{CardConfig, EmulCard, Pin};

use crate::calls::record;
use crate::cards::{cards_for_port, hang_forever, hangs, CardLine, Hang, MAX_ICC};
use crate::{CT, ERR_CT, ERR_INVALID, ERR_MEMORY, ERR_TRANS, HOST, ICC1, OK};

/// The card in a terminal's slot.
struct Slot {
    /// The line it came from: a changed line is a new card.
    line: CardLine,
    card: EmulCard,
    /// Activated by REQUEST ICC (or RESET CT for the ICC), until EJECT ICC.
    powered: bool,
}

impl Slot {
    /// An unpowered card for `line`; `None` if the line's card cannot be made.
    fn new(line: CardLine) -> Option<Slot> {
        let mut config = CardConfig::with_atr(line.atr.clone());
        if let Some(pin) = &line.pin {
            config = config.with_pin(Pin::from_text(pin).ok()?, 3);
        }
        let card = EmulCard::new(config).ok()?;
        Some(Slot {
            line,
            card,
            powered: false,
        })
    }
}

/// One open terminal (`CT_init` until `CT_close`).
struct Terminal {
    port: u16,
    /// The cards by ICC number (1 to [`MAX_ICC`]).
    slots: BTreeMap<u8, Slot>,
}

/// The ICC that CT-BCS functional unit `p1` names: 00 and 01 are ICC 1, n is ICC n.
fn unit_icc(p1: u8) -> Option<u8> {
    match p1 {
        0x00 => Some(1),
        n if n <= MAX_ICC => Some(n),
        _ => None,
    }
}

/// The ICC that CT-API address `dad` names: 0 is ICC 1, 2 to 14 are ICC 2 to 14.
fn dad_icc(dad: u8) -> Option<u8> {
    match dad {
        ICC1 => Some(1),
        n if (2..=MAX_ICC).contains(&n) => Some(n),
        _ => None,
    }
}

static TERMINALS: Mutex<BTreeMap<u16, Terminal>> = Mutex::new(BTreeMap::new());

fn terminals() -> MutexGuard<'static, BTreeMap<u16, Terminal>> {
    // A panic while the lock was held (caught at the FFI boundary) leaves consistent data:
    // every update is a single assignment.
    TERMINALS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A successful `CT_data`: the response with the addresses it goes back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The response's destination: the command's source.
    pub dad: u8,
    /// The response's source: the command's destination.
    pub sad: u8,
    /// The response bytes (data, SW1, SW2).
    pub data: Vec<u8>,
}

/// `CT_init`: opens terminal `ctn` on port `pn`. [`ERR_INVALID`] if `ctn` is open already.
pub fn ct_init(ctn: u16, pn: u16) -> i8 {
    record(&format!("CT_init ctn={ctn} pn={pn}"));
    if hangs(Hang::Init(pn)) {
        hang_forever();
    }
    let mut terminals = terminals();
    if terminals.contains_key(&ctn) {
        return ERR_INVALID;
    }
    terminals.insert(
        ctn,
        Terminal {
            port: pn,
            slots: BTreeMap::new(),
        },
    );
    OK
}

/// `CT_close`: closes terminal `ctn`. [`ERR_INVALID`] if it is not open.
pub fn ct_close(ctn: u16) -> i8 {
    record(&format!("CT_close ctn={ctn}"));
    match terminals().remove(&ctn) {
        Some(_) => OK,
        None => ERR_INVALID,
    }
}

/// `CT_data`: sends `command` from `sad` to `dad` of terminal `ctn`; the response may hold
/// at most `capacity` bytes. Errors are CT-API return codes: [`ERR_INVALID`] (unknown
/// terminal, address or empty command), [`ERR_MEMORY`] (response longer than `capacity`),
/// [`ERR_TRANS`] (an APDU to a slot without an activated card). DAD 0 is ICC 1, DAD 2 to 14
/// ICC 2 to 14 (as ctapi.h: `ICC2` is 2, the value of `HOST`, told apart by direction).
///
/// With `hang-apdu PORT` in the card file an APDU for a card never returns; it blocks
/// without holding the lock, so other terminals go on working.
pub fn ct_data(
    ctn: u16,
    dad: u8,
    sad: u8,
    command: &[u8],
    capacity: usize,
) -> Result<Response, i8> {
    record(&format!(
        "CT_data ctn={ctn} dad={dad} {}",
        hex::encode_upper(command)
    ));
    if dad != CT {
        let port = terminals().get(&ctn).map(|t| t.port);
        if port.is_some_and(|port| hangs(Hang::Apdu(port))) {
            hang_forever();
        }
    }
    let mut terminals = terminals();
    let terminal = terminals.get_mut(&ctn).ok_or(ERR_INVALID)?;
    if sad != HOST || command.is_empty() {
        return Err(ERR_INVALID);
    }
    let data = match (dad, dad_icc(dad)) {
        (CT, _) => terminal.bcs(command),
        (_, Some(icc)) => terminal.icc(icc, command)?,
        (_, None) => return Err(ERR_INVALID),
    };
    if data.len() > capacity {
        return Err(ERR_MEMORY);
    }
    Ok(Response {
        dad: sad,
        sad: dad,
        data,
    })
}

fn sw(sw: u16) -> Vec<u8> {
    sw.to_be_bytes().to_vec()
}

impl Terminal {
    /// Brings the slots in line with the card file: a vanished or changed line removes the
    /// card, a new line inserts an unpowered one.
    fn sync(&mut self) {
        let lines = cards_for_port(self.port);
        self.slots
            .retain(|icc, slot| lines.iter().any(|l| l.icc == *icc && *l == slot.line));
        for line in lines {
            if !self.slots.contains_key(&line.icc) {
                let icc = line.icc;
                if let Some(slot) = Slot::new(line) {
                    self.slots.insert(icc, slot);
                }
            }
        }
    }

    /// How many ICCs the terminal has now: the highest one holding a card, at least 1.
    fn iccs(&self) -> u8 {
        self.slots.keys().max().copied().unwrap_or(1)
    }

    /// A CT-BCS command to the terminal (DAD 1).
    fn bcs(&mut self, command: &[u8]) -> Vec<u8> {
        let [cla, ins, p1, p2, ..] = *command else {
            return sw(0x6700);
        };
        if cla != 0x20 {
            return sw(0x6E00);
        }
        match ins {
            // RESET CT: P1 00 the terminal, n the ICC n.
            0x11 => {
                self.sync();
                match p1 {
                    0x00 => {
                        for slot in self.slots.values_mut() {
                            slot.powered = false;
                        }
                        sw(0x9000)
                    }
                    n if n <= MAX_ICC => self.activate(n, p2).unwrap_or_else(|| sw(0x6400)),
                    _ => sw(0x6A00),
                }
            }
            // REQUEST ICC: P1 n = ICC n (00 = any ICC: ICC 1 here).
            0x12 => {
                self.sync();
                match unit_icc(p1) {
                    Some(icc) => self.activate(icc, p2).unwrap_or_else(|| sw(0x6200)),
                    None => sw(0x6A00),
                }
            }
            // GET STATUS: P1 00, P2 80 = the ICC status DO, one byte per ICC.
            0x13 => {
                self.sync();
                if p1 != 0x00 || p2 != 0x80 {
                    return sw(0x6A00);
                }
                let count = self.iccs();
                let mut response = vec![0x80, count];
                response.extend((1..=count).map(|icc| match self.slots.get(&icc) {
                    None => 0x00,
                    Some(slot) if slot.powered => 0x05,
                    Some(_) => 0x01,
                }));
                response.extend_from_slice(&[0x90, 0x00]);
                response
            }
            // EJECT ICC: P1 n = ICC n (00 = ICC 1).
            0x15 => {
                let Some(icc) = unit_icc(p1) else {
                    return sw(0x6A00);
                };
                if let Some(slot) = self.slots.get_mut(&icc) {
                    slot.powered = false;
                }
                sw(0x9000)
            }
            _ => sw(0x6D00),
        }
    }

    /// Powers (resets) the card in `icc`: `P2` low nibble 01 = answer with the ATR, 00 =
    /// without. `None` without a card.
    fn activate(&mut self, icc: u8, p2: u8) -> Option<Vec<u8>> {
        let slot = self.slots.get_mut(&icc)?;
        let atr = slot.card.reset();
        slot.powered = true;
        let mut response = if p2 & 0x0F == 0x01 { atr } else { Vec::new() };
        response.extend_from_slice(&[0x90, 0x01]);
        Some(response)
    }

    /// An APDU to the card in `icc`: [`ERR_TRANS`] without a card, [`ERR_CT`] without an
    /// activated one.
    fn icc(&mut self, icc: u8, command: &[u8]) -> Result<Vec<u8>, i8> {
        // A card taken out since the last status poll is gone for APDUs too.
        self.sync();
        match self.slots.get_mut(&icc) {
            Some(slot) if slot.powered => Ok(slot.card.transmit(command)),
            Some(_) => Err(ERR_CT),
            None => Err(ERR_TRANS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_with_and_without_a_card() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cards");
        std::env::set_var(crate::ENV_CARDS, &file);
        assert_eq!(ct_init(7, 3), OK);
        assert_eq!(ct_init(7, 3), ERR_INVALID, "already open");
        let bcs = |command: &[u8]| ct_data(7, CT, HOST, command, 258).expect("ok").data;
        assert_eq!(bcs(&[0x20, 0x11, 0x00, 0x00, 0x00]), [0x90, 0x00]);
        assert_eq!(
            bcs(&[0x20, 0x13, 0x00, 0x80, 0x00]),
            [0x80, 0x01, 0x00, 0x90, 0x00]
        );
        assert_eq!(bcs(&[0x20, 0x12, 0x01, 0x01, 0x00]), [0x62, 0x00]);
        assert_eq!(
            ct_data(7, ICC1, HOST, &[0, 0xA4, 0, 0x0C], 258),
            Err(ERR_TRANS)
        );

        std::fs::write(&file, "3 3B0102 1234\n").expect("write");
        assert_eq!(
            bcs(&[0x20, 0x13, 0x00, 0x80, 0x00]),
            [0x80, 0x01, 0x01, 0x90, 0x00]
        );
        assert_eq!(
            ct_data(7, ICC1, HOST, &[0, 0xA4, 0, 0x0C], 258),
            Err(ERR_CT)
        );
        let r = ct_data(7, CT, HOST, &[0x20, 0x12, 0x01, 0x01, 0x00], 258).expect("ok");
        assert_eq!((r.dad, r.sad), (HOST, CT));
        assert_eq!(r.data, [0x3B, 0x01, 0x02, 0x90, 0x01]);
        assert_eq!(
            bcs(&[0x20, 0x13, 0x00, 0x80, 0x00]),
            [0x80, 0x01, 0x05, 0x90, 0x00]
        );
        let r = ct_data(7, ICC1, HOST, &[0, 0xA4, 0, 0x0C, 2, 0x3F, 0], 258).expect("ok");
        assert_eq!((r.dad, r.sad, r.data), (HOST, ICC1, vec![0x90, 0x00]));
        assert_eq!(
            ct_data(
                7,
                ICC1,
                HOST,
                &[0, 0x20, 0, 0x80, 4, b'1', b'2', b'3', b'4'],
                258
            ),
            Ok(Response {
                dad: HOST,
                sad: ICC1,
                data: vec![0x90, 0x00]
            })
        );
        assert_eq!(
            ct_data(7, CT, HOST, &[0x20, 0x12, 0x01, 0x01, 0x00], 4),
            Err(ERR_MEMORY)
        );
        assert_eq!(
            ct_data(7, 15, HOST, &[0x20, 0x13, 0x00, 0x80], 258),
            Err(ERR_INVALID)
        );
        assert_eq!(
            ct_data(7, 9, HOST, &[0, 0xA4, 0, 0x0C], 258),
            Err(ERR_TRANS),
            "ICC 9 is empty"
        );
        assert_eq!(bcs(&[0x20, 0x15, 0x01, 0x00, 0x00]), [0x90, 0x00]);
        assert_eq!(
            bcs(&[0x20, 0x13, 0x00, 0x80, 0x00]),
            [0x80, 0x01, 0x01, 0x90, 0x00]
        );
        assert_eq!(bcs(&[0x20, 0x99, 0x00, 0x00]), [0x6D, 0x00]);
        assert_eq!(bcs(&[0x80, 0x12, 0x00, 0x00]), [0x6E, 0x00]);

        // A second card in ICC 2: two status bytes, CT-BCS unit 2, DAD 2.
        std::fs::write(&file, "3 3B0102 1234\n3:2 3B00\n").expect("write");
        assert_eq!(
            bcs(&[0x20, 0x13, 0x00, 0x80, 0x00]),
            [0x80, 0x02, 0x01, 0x01, 0x90, 0x00]
        );
        assert_eq!(
            bcs(&[0x20, 0x12, 0x02, 0x01, 0x00]),
            [0x3B, 0x00, 0x90, 0x01]
        );
        assert_eq!(
            bcs(&[0x20, 0x13, 0x00, 0x80, 0x00]),
            [0x80, 0x02, 0x01, 0x05, 0x90, 0x00]
        );
        let r = ct_data(7, 2, HOST, &[0, 0xA4, 0, 0x0C, 2, 0x3F, 0], 258).expect("ok");
        assert_eq!((r.dad, r.sad, r.data), (HOST, 2, vec![0x90, 0x00]));
        assert_eq!(
            ct_data(7, ICC1, HOST, &[0, 0xA4, 0, 0x0C], 258),
            Err(ERR_CT),
            "ICC 1 not activated"
        );
        assert_eq!(bcs(&[0x20, 0x15, 0x02, 0x00, 0x00]), [0x90, 0x00]);
        assert_eq!(ct_data(7, 2, HOST, &[0, 0xA4, 0, 0x0C], 258), Err(ERR_CT));

        std::fs::remove_file(&file).expect("remove");
        assert_eq!(
            bcs(&[0x20, 0x13, 0x00, 0x80, 0x00]),
            [0x80, 0x01, 0x00, 0x90, 0x00]
        );
        assert_eq!(ct_close(7), OK);
        assert_eq!(ct_close(7), ERR_INVALID);
        assert_eq!(
            ct_data(7, CT, HOST, &[0x20, 0x13, 0x00, 0x80], 258),
            Err(ERR_INVALID)
        );
    }
}
