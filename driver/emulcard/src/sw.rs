//! The status words the emulated card answers with (ISO/IEC 7816-4 §5.6).

/// Normal processing.
pub const OK: u16 = 0x9000;
/// End of file reached before reading `Ne` bytes.
pub const END_OF_FILE: u16 = 0x6282;
/// Wrong PIN; the low nibble of `63Cx` is the number of tries left.
pub const RETRIES_BASE: u16 = 0x63C0;
/// Wrong length (malformed APDU, missing or unexpected data or `Le`).
pub const WRONG_LENGTH: u16 = 0x6700;
/// Logical channel not supported (CLA bits 1-2).
pub const LOGICAL_CHANNEL_NOT_SUPPORTED: u16 = 0x6881;
/// Secure messaging not supported (CLA bits 3-4).
pub const SECURE_MESSAGING_NOT_SUPPORTED: u16 = 0x6882;
/// Command chaining not supported (CLA bit 5).
pub const CHAINING_NOT_SUPPORTED: u16 = 0x6884;
/// Command incompatible with the file structure.
pub const INCOMPATIBLE_FILE_STRUCTURE: u16 = 0x6981;
/// Security status not satisfied (the PIN must be verified first).
pub const SECURITY_STATUS_NOT_SATISFIED: u16 = 0x6982;
/// Authentication method blocked (no PIN tries left).
pub const AUTH_METHOD_BLOCKED: u16 = 0x6983;
/// Command not allowed (no current EF).
pub const NO_CURRENT_EF: u16 = 0x6986;
/// Function not supported.
pub const FUNCTION_NOT_SUPPORTED: u16 = 0x6A81;
/// File or application not found.
pub const FILE_NOT_FOUND: u16 = 0x6A82;
/// Not enough memory space in the file.
pub const NOT_ENOUGH_SPACE: u16 = 0x6A84;
/// Incorrect parameters P1-P2.
pub const INCORRECT_P1P2: u16 = 0x6A86;
/// Referenced data (the PIN) not found.
pub const REFERENCED_DATA_NOT_FOUND: u16 = 0x6A88;
/// Wrong parameters P1-P2: offset outside the EF.
pub const WRONG_OFFSET: u16 = 0x6B00;
/// Wrong `Le`; `6Cxx` gives the exact length.
pub const WRONG_LE_BASE: u16 = 0x6C00;
/// Instruction not supported.
pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
/// Class not supported.
pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
