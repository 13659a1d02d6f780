//! What a card is made of: a plain Rust description, validated when the card is built.

use std::fmt;

/// Why a [`CardConfig`] cannot become a card.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The ATR must be 2 to 33 bytes long.
    #[error("ATR of {0} bytes: an ATR is 2 to 33 bytes long")]
    AtrLength(usize),
    /// A PIN must be 1 to 64 bytes long.
    #[error("PIN of {0} bytes: a PIN is 1 to 64 bytes long")]
    PinLength(usize),
    /// The PIN retry counter must be 1 to 15 (it is reported as the `x` of `63Cx`).
    #[error("PIN retries {0}: must be 1 to 15")]
    PinRetries(u8),
    /// A file id that ISO 7816-4 reserves (`3F00` is the MF; `3FFF`, `FFFF` are reserved).
    #[error("file id {0:04X} is reserved")]
    ReservedFid(u16),
    /// Two files in the same DF have the same id.
    #[error("file id {fid:04X} appears twice in DF {parent:04X}")]
    DuplicateFid {
        /// The duplicated id.
        fid: u16,
        /// The DF holding both.
        parent: u16,
    },
    /// An EF larger than a transparent EF can be addressed (offsets are 15 bits).
    #[error("EF {fid:04X} of {size} bytes is over the limit of 32768 bytes")]
    FileTooLarge {
        /// The EF.
        fid: u16,
        /// Its size.
        size: usize,
    },
    /// DFs nested deeper than 8 levels below the MF.
    #[error("DF {0:04X} is nested deeper than 8 levels")]
    TooDeep(u16),
}

/// A PIN: its bytes as VERIFY compares them. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(Vec<u8>);

impl Pin {
    /// The largest PIN accepted.
    pub const MAX_LEN: usize = 64;

    /// A PIN of raw bytes (1 to 64).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Pin, ConfigError> {
        let bytes = bytes.into();
        if bytes.is_empty() || bytes.len() > Pin::MAX_LEN {
            return Err(ConfigError::PinLength(bytes.len()));
        }
        Ok(Pin(bytes))
    }

    /// A PIN given as text, compared as its ASCII/UTF-8 bytes: `"1234"` is `31 32 33 34`.
    pub fn from_text(text: &str) -> Result<Pin, ConfigError> {
        Pin::new(text.as_bytes())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Compares without stopping at the first difference.
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        if candidate.len() != self.0.len() {
            return false;
        }
        self.0
            .iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(REDACTED)")
    }
}

/// Who may read or update an EF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Access {
    /// Anyone.
    #[default]
    Always,
    /// Only after a successful VERIFY of the card's PIN (else `6982`).
    Pin,
    /// No one (`6982`).
    Never,
}

impl Access {
    /// Parses `always`, `pin` or `never` (any case).
    pub fn from_word(word: &str) -> Option<Access> {
        match word.to_ascii_lowercase().as_str() {
            "always" => Some(Access::Always),
            "pin" => Some(Access::Pin),
            "never" => Some(Access::Never),
            _ => None,
        }
    }
}

/// A file below the MF: a DF holding files, or a transparent EF holding bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileConfig {
    /// A dedicated file (directory).
    Df {
        /// Its file id.
        fid: u16,
        /// The files in it.
        files: Vec<FileConfig>,
    },
    /// A transparent elementary file. Its size is fixed: the length of `data`.
    Ef {
        /// Its file id.
        fid: u16,
        /// Its contents.
        data: Vec<u8>,
        /// Who may READ BINARY.
        read: Access,
        /// Who may UPDATE BINARY.
        update: Access,
    },
}

impl FileConfig {
    /// An EF anyone may read and update.
    pub fn ef(fid: u16, data: impl Into<Vec<u8>>) -> FileConfig {
        FileConfig::Ef {
            fid,
            data: data.into(),
            read: Access::Always,
            update: Access::Always,
        }
    }

    /// A DF holding `files`.
    pub fn df(fid: u16, files: Vec<FileConfig>) -> FileConfig {
        FileConfig::Df { fid, files }
    }

    /// The same EF with other access conditions (a DF is returned unchanged).
    pub fn with_access(self, read: Access, update: Access) -> FileConfig {
        match self {
            FileConfig::Ef { fid, data, .. } => FileConfig::Ef {
                fid,
                data,
                read,
                update,
            },
            df => df,
        }
    }

    /// The file id.
    pub fn fid(&self) -> u16 {
        match self {
            FileConfig::Df { fid, .. } | FileConfig::Ef { fid, .. } => *fid,
        }
    }
}

/// The historical bytes of [`default_atr`]: `chipcard` in ASCII.
const DEFAULT_HISTORICAL: &[u8] = b"chipcard";

/// The ATR a card gets when none is configured:
/// `3B 88 80 01 63 68 69 70 63 61 72 64 0F` (direct convention, T=0 and T=1 offered, the
/// historical bytes `chipcard`, and the check byte T=1 requires).
pub fn default_atr() -> Vec<u8> {
    let mut atr = vec![0x3B, 0x80 | DEFAULT_HISTORICAL.len() as u8, 0x80, 0x01];
    atr.extend_from_slice(DEFAULT_HISTORICAL);
    let tck = atr[1..].iter().fold(0u8, |acc, b| acc ^ b);
    atr.push(tck);
    atr
}

/// The file tree a card gets when none is configured:
///
/// ```text
/// MF 3F00
/// ├── EF 2F02   "chipcard demo card" + 8-byte serial number 01..08 (26 bytes)
/// └── DF 4100
///     └── EF 4101   32 bytes 00..1F; read always, update after VERIFY
/// ```
pub fn default_files() -> Vec<FileConfig> {
    let mut gdo = b"chipcard demo card".to_vec();
    gdo.extend(1u8..=8);
    vec![
        FileConfig::ef(0x2F02, gdo),
        FileConfig::df(
            0x4100,
            vec![FileConfig::ef(0x4101, (0u8..32).collect::<Vec<u8>>())
                .with_access(Access::Always, Access::Pin)],
        ),
    ]
}

/// Everything about one card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardConfig {
    /// The answer to reset.
    pub atr: Vec<u8>,
    /// The PIN VERIFY checks; `None`: VERIFY answers `6A88`.
    pub pin: Option<Pin>,
    /// Tries before the PIN is blocked, 1 to 15.
    pub pin_retries: u8,
    /// The files below the MF (`3F00`, which always exists).
    pub files: Vec<FileConfig>,
}

impl Default for CardConfig {
    /// [`default_atr`], no PIN, 3 retries, [`default_files`].
    fn default() -> Self {
        CardConfig {
            atr: default_atr(),
            pin: None,
            pin_retries: 3,
            files: default_files(),
        }
    }
}

impl CardConfig {
    /// The default card with this ATR.
    pub fn with_atr(atr: impl Into<Vec<u8>>) -> CardConfig {
        CardConfig {
            atr: atr.into(),
            ..CardConfig::default()
        }
    }

    /// The same card with a PIN.
    pub fn with_pin(mut self, pin: Pin, retries: u8) -> CardConfig {
        self.pin = Some(pin);
        self.pin_retries = retries;
        self
    }

    /// The same card with these files below the MF.
    pub fn with_files(mut self, files: Vec<FileConfig>) -> CardConfig {
        self.files = files;
        self
    }

    /// Checks everything [`crate::EmulCard::new`] checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(2..=33).contains(&self.atr.len()) {
            return Err(ConfigError::AtrLength(self.atr.len()));
        }
        if !(1..=15).contains(&self.pin_retries) {
            return Err(ConfigError::PinRetries(self.pin_retries));
        }
        validate_files(&self.files, 0x3F00, 0)
    }
}

fn validate_files(files: &[FileConfig], parent: u16, depth: usize) -> Result<(), ConfigError> {
    for (i, file) in files.iter().enumerate() {
        let fid = file.fid();
        if matches!(fid, 0x3F00 | 0x3FFF | 0xFFFF) {
            return Err(ConfigError::ReservedFid(fid));
        }
        if files[..i].iter().any(|f| f.fid() == fid) {
            return Err(ConfigError::DuplicateFid { fid, parent });
        }
        match file {
            FileConfig::Ef { data, .. } if data.len() > 0x8000 => {
                return Err(ConfigError::FileTooLarge {
                    fid,
                    size: data.len(),
                })
            }
            FileConfig::Ef { .. } => {}
            FileConfig::Df { files, .. } => {
                if depth >= 8 {
                    return Err(ConfigError::TooDeep(fid));
                }
                validate_files(files, fid, depth + 1)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_atr_has_a_correct_check_byte() {
        let atr = default_atr();
        assert_eq!(
            atr,
            [0x3B, 0x88, 0x80, 0x01, 0x63, 0x68, 0x69, 0x70, 0x63, 0x61, 0x72, 0x64, 0x0F]
        );
        assert_eq!(
            atr[1..].iter().fold(0u8, |a, b| a ^ b),
            0,
            "T0..TCK XOR to zero"
        );
    }

    #[test]
    fn validation_table() {
        let base = CardConfig::default();
        let cases: Vec<(CardConfig, Result<(), ConfigError>)> = vec![
            (base.clone(), Ok(())),
            (
                CardConfig::with_atr(vec![0x3B]),
                Err(ConfigError::AtrLength(1)),
            ),
            (
                CardConfig {
                    pin_retries: 0,
                    ..base.clone()
                },
                Err(ConfigError::PinRetries(0)),
            ),
            (
                base.clone().with_files(vec![FileConfig::ef(0x3F00, [])]),
                Err(ConfigError::ReservedFid(0x3F00)),
            ),
            (
                base.clone().with_files(vec![FileConfig::df(
                    0x1000,
                    vec![FileConfig::ef(0x1001, []), FileConfig::ef(0x1001, [])],
                )]),
                Err(ConfigError::DuplicateFid {
                    fid: 0x1001,
                    parent: 0x1000,
                }),
            ),
            (
                base.with_files(vec![FileConfig::ef(0x1001, vec![0; 0x8001])]),
                Err(ConfigError::FileTooLarge {
                    fid: 0x1001,
                    size: 0x8001,
                }),
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate(), expected);
        }
        assert_eq!(Pin::from_text(""), Err(ConfigError::PinLength(0)));
    }

    #[test]
    fn pin_debug_is_redacted() {
        let pin = Pin::from_text("1234").expect("valid pin");
        assert_eq!(format!("{pin:?}"), "Pin(REDACTED)");
        assert!(pin.matches(b"1234"));
        assert!(!pin.matches(b"1235"));
        assert!(!pin.matches(b"123"));
    }
}
