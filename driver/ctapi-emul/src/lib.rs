//! A CT-API library whose card terminals hold chipcard's emulated cards.
//!
//! Built as a shared object (`libchipcard_ctapi_emul.so`) it exports the three CT-API 1.1
//! functions of `ctapi.h` — `CT_init`, `CT_data`, `CT_close` — so any CT-API application,
//! chipcard's own CT-API driver included, can load it and talk to a software card
//! ([`chipcard_emulcard::EmulCard`]) instead of a serial terminal. Which cards are in which
//! terminal comes from a small text file named by the environment variable
//! [`ENV_CARDS`], re-read on every `GET STATUS`, `REQUEST ICC` and `RESET CT`, so a test
//! inserts and removes cards by rewriting the file. With [`ENV_CALLS`] set every call is
//! appended to that file, so a test can check what was sent. README.md has the format and
//! the CT-BCS commands understood.
//!
//! The Rust side ([`ct_init`], [`ct_data`], [`ct_close`]) is safe code; only the small
//! `ffi` module, which adapts the C calling convention, uses `unsafe`.
#![deny(unsafe_code)]

mod calls;
mod cards;
mod ffi;
mod terminal;

pub use calls::ENV_CALLS;
pub use cards::{parse_cards, CardFile, CardLine, Hang, ENV_CARDS, MAX_ICC};
pub use terminal::{ct_close, ct_data, ct_init, Response};

/// CT-API return code: success.
pub const OK: i8 = 0;
/// CT-API return code: invalid parameter or value.
pub const ERR_INVALID: i8 = -1;
/// CT-API return code: card terminal error.
pub const ERR_CT: i8 = -8;
/// CT-API return code: transmission error.
pub const ERR_TRANS: i8 = -10;
/// CT-API return code: memory error (the response buffer is too small).
pub const ERR_MEMORY: i8 = -11;
/// CT-API return code: host error (also: the library failed internally).
pub const ERR_HOST: i8 = -127;
/// CT-API return code: HTSI error.
pub const ERR_HTSI: i8 = -128;

/// CT-API address of the host (the application), the SAD of every command.
pub const HOST: u8 = 0x02;
/// CT-API address of the card terminal itself (CT-BCS commands).
pub const CT: u8 = 0x01;
/// CT-API address of the first card slot.
pub const ICC1: u8 = 0x00;
