//! The emulated card terminals: CT-BCS for DAD 1, APDUs for DAD 0, state per `ctn`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use chipcard_emulcard::{CardConfig, EmulCard, Pin};

use crate::calls::record;
use crate::cards::{card_for_port, hang_forever, hangs, CardLine, Hang};
use crate::{CT, ERR_CT, ERR_INVALID, ERR_MEMORY, ERR_TRANS, HOST, ICC1, OK};

/// The card in a terminal's slot.
struct Slot {
    /// The line it came from: a changed line is a new card.
    line: CardLine,
    card: EmulCard,
    /// Activated by REQUEST ICC (or RESET CT for the ICC), until EJECT ICC.
    powered: bool,
}

/// One open terminal (`CT_init` until `CT_close`).
struct Terminal {
    port: u16,
    slot: Option<Slot>,
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
            slot: None,
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
/// [`ERR_TRANS`] (an APDU to a slot without an activated card).
///
/// With `hang-apdu PORT` in the card file an APDU for the card never returns; it blocks
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
    if dad == ICC1 {
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
    let data = match dad {
        CT => terminal.bcs(command),
        ICC1 => terminal.icc(command)?,
        _ => return Err(ERR_INVALID),
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
    /// Brings the slot in line with the card file: a vanished or changed line removes the
    /// card, a new line inserts an unpowered one.
    fn sync(&mut self) {
        let line = card_for_port(self.port);
        if self.slot.as_ref().map(|s| &s.line) == line.as_ref() {
            return;
        }
        self.slot = line.and_then(|line| {
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
        });
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
            // RESET CT: P1 00 the terminal, 01 the ICC in slot 1.
            0x11 => {
                self.sync();
                match p1 {
                    0x00 => {
                        if let Some(slot) = &mut self.slot {
                            slot.powered = false;
                        }
                        sw(0x9000)
                    }
                    0x01 => self.activate(p2),
                    _ => sw(0x6A00),
                }
            }
            // REQUEST ICC: P1 01 = ICC 1 (00 = any ICC; the terminal has one).
            0x12 => {
                self.sync();
                match p1 {
                    0x00 | 0x01 => match self.slot {
                        Some(_) => self.activate(p2),
                        None => sw(0x6200),
                    },
                    _ => sw(0x6A00),
                }
            }
            // GET STATUS: P1 00, P2 80 = the ICC status DO.
            0x13 => {
                self.sync();
                if p1 != 0x00 || p2 != 0x80 {
                    return sw(0x6A00);
                }
                let status = match &self.slot {
                    None => 0x00,
                    Some(slot) if slot.powered => 0x05,
                    Some(_) => 0x01,
                };
                vec![0x80, 0x01, status, 0x90, 0x00]
            }
            // EJECT ICC: P1 01 = ICC 1.
            0x15 => {
                if !matches!(p1, 0x00 | 0x01) {
                    return sw(0x6A00);
                }
                if let Some(slot) = &mut self.slot {
                    slot.powered = false;
                }
                sw(0x9000)
            }
            _ => sw(0x6D00),
        }
    }

    /// Powers (resets) the card: `P2` low nibble 01 = answer with the ATR, 00 = without.
    fn activate(&mut self, p2: u8) -> Vec<u8> {
        let Some(slot) = &mut self.slot else {
            return sw(0x6400);
        };
        let atr = slot.card.reset();
        slot.powered = true;
        let mut response = if p2 & 0x0F == 0x01 { atr } else { Vec::new() };
        response.extend_from_slice(&[0x90, 0x01]);
        response
    }

    /// An APDU to the card in slot 1 (DAD 0): [`ERR_TRANS`] without an activated card.
    fn icc(&mut self, command: &[u8]) -> Result<Vec<u8>, i8> {
        // A card taken out since the last status poll is gone for APDUs too.
        self.sync();
        match &mut self.slot {
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
            ct_data(7, 9, HOST, &[0x20, 0x13, 0x00, 0x80], 258),
            Err(ERR_INVALID)
        );
        assert_eq!(bcs(&[0x20, 0x15, 0x01, 0x00, 0x00]), [0x90, 0x00]);
        assert_eq!(
            bcs(&[0x20, 0x13, 0x00, 0x80, 0x00]),
            [0x80, 0x01, 0x01, 0x90, 0x00]
        );
        assert_eq!(bcs(&[0x20, 0x99, 0x00, 0x00]), [0x6D, 0x00]);
        assert_eq!(bcs(&[0x80, 0x12, 0x00, 0x00]), [0x6E, 0x00]);

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
