//! The emul driver's configuration group, read into plain structs.
//!
//! The keys are documented in README.md beside this crate.

use std::fmt;
use std::path::PathBuf;

use chipcard_emulcard::{Access, CardConfig, FileConfig, Pin};
use chipcard_ipc::{Group, Value};

/// A configuration problem, with where it is (`reader[0]/card[1]/file[2]/fid: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    path: String,
    message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }

    fn within(mut self, group: &str) -> Self {
        self.path = if self.path.is_empty() {
            group.to_owned()
        } else {
            format!("{group}/{}", self.path)
        };
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

type Result<T> = std::result::Result<T, ConfigError>;

/// The most slots a reader may have.
pub const MAX_SLOTS: i32 = 16;

/// A reader's type when its group names none.
const DEFAULT_READER_TYPE: &str = "emul";

/// PIN tries when the group sets none.
const DEFAULT_PIN_RETRIES: u8 = 3;

/// The whole driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulConfig {
    /// Where the control socket is created, if anywhere.
    pub control_socket: Option<PathBuf>,
    /// The readers, in order; a reader's id is its index.
    pub readers: Vec<ReaderConfig>,
}

/// One emulated reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderConfig {
    /// Its name (unique within the driver).
    pub name: String,
    /// `KEYPAD`, `DISPLAY`, ...
    pub flags: Vec<String>,
    /// Its reader type.
    pub reader_type: String,
    /// How many slots it has.
    pub slots: i32,
    /// The PIN of cards inserted through the control socket.
    pub pin: Option<Pin>,
    /// The PIN retries of cards inserted through the control socket.
    pub pin_retries: u8,
    /// The cards present at start, with their slots.
    pub cards: Vec<(i32, CardConfig)>,
}

impl ReaderConfig {
    /// A reader added through the control socket (`addreader`): no flags, type `emul`, no
    /// PIN, the default PIN tries, no cards.
    pub fn added(name: &str, slots: i32) -> ReaderConfig {
        ReaderConfig {
            name: name.to_owned(),
            flags: Vec::new(),
            reader_type: DEFAULT_READER_TYPE.to_owned(),
            slots,
            pin: None,
            pin_retries: DEFAULT_PIN_RETRIES,
            cards: Vec::new(),
        }
    }

    /// The card a control-socket `insert` creates: the default file tree, the reader's PIN.
    pub fn inserted_card(&self, atr: Vec<u8>) -> CardConfig {
        CardConfig {
            atr,
            pin: self.pin.clone(),
            pin_retries: self.pin_retries,
            ..CardConfig::default()
        }
    }
}

impl EmulConfig {
    /// Reads the driver's `config {}` group.
    pub fn from_group(config: &Group) -> Result<EmulConfig> {
        let control_socket = opt_text(config, "controlSocket")?.map(PathBuf::from);
        let readers = config
            .groups("reader")
            .enumerate()
            .map(|(i, g)| {
                ReaderConfig::from_group(g, i).map_err(|e| e.within(&format!("reader[{i}]")))
            })
            .collect::<Result<Vec<_>>>()?;
        for (i, r) in readers.iter().enumerate() {
            if readers[..i].iter().any(|o| o.name == r.name) {
                return Err(ConfigError::new(
                    format!("reader[{i}]/name"),
                    format!("'{}' is the name of another reader", r.name),
                ));
            }
        }
        Ok(EmulConfig {
            control_socket,
            readers,
        })
    }
}

impl ReaderConfig {
    fn from_group(g: &Group, index: usize) -> Result<ReaderConfig> {
        let name = opt_text(g, "name")?.unwrap_or_else(|| format!("emul-{index}"));
        if name.trim().is_empty() {
            return Err(ConfigError::new("name", "empty"));
        }
        let flags = g
            .get_chars("flags")
            .map_err(|e| ConfigError::new("", e.to_string()))?
            .into_iter()
            .map(|f| f.trim().to_ascii_uppercase())
            .filter(|f| !f.is_empty())
            .collect();
        let reader_type = opt_text(g, "type")?.unwrap_or_else(|| DEFAULT_READER_TYPE.to_owned());
        let slots = opt_int(g, "slots")?.unwrap_or(1);
        if !(1..=MAX_SLOTS).contains(&slots) {
            return Err(ConfigError::new(
                "slots",
                format!("{slots}: must be 1 to {MAX_SLOTS}"),
            ));
        }
        let pin = opt_pin(g)?;
        let pin_retries = opt_retries(g)?.unwrap_or(DEFAULT_PIN_RETRIES);
        let mut cards: Vec<(i32, CardConfig)> = Vec::new();
        for (i, card) in g.groups("card").enumerate() {
            let within = |e: ConfigError| e.within(&format!("card[{i}]"));
            let slot = opt_int(card, "slot").map_err(within)?.unwrap_or(0);
            if !(0..slots).contains(&slot) {
                return Err(within(ConfigError::new(
                    "slot",
                    format!("{slot}: the reader has slots 0 to {}", slots - 1),
                )));
            }
            if cards.iter().any(|(s, _)| *s == slot) {
                return Err(within(ConfigError::new(
                    "slot",
                    format!("{slot}: another card is in this slot"),
                )));
            }
            let config = card_config(card, pin.as_ref(), pin_retries).map_err(within)?;
            cards.push((slot, config));
        }
        Ok(ReaderConfig {
            name,
            flags,
            reader_type,
            slots,
            pin,
            pin_retries,
            cards,
        })
    }
}

fn card_config(g: &Group, reader_pin: Option<&Pin>, reader_retries: u8) -> Result<CardConfig> {
    let mut config = CardConfig::default();
    if let Some(atr) = opt_hex(g, "atr")? {
        config.atr = atr;
    }
    config.pin = match opt_pin(g)? {
        Some(pin) => Some(pin),
        None => reader_pin.cloned(),
    };
    config.pin_retries = opt_retries(g)?.unwrap_or(reader_retries);
    if g.group("file").is_some() {
        config.files = files(g)?;
    }
    config
        .validate()
        .map_err(|e| ConfigError::new("", e.to_string()))?;
    Ok(config)
}

fn files(g: &Group) -> Result<Vec<FileConfig>> {
    g.groups("file")
        .enumerate()
        .map(|(i, f)| file(f).map_err(|e| e.within(&format!("file[{i}]"))))
        .collect()
}

fn file(g: &Group) -> Result<FileConfig> {
    let fid_text = opt_text(g, "fid")?.ok_or_else(|| ConfigError::new("fid", "missing"))?;
    let fid = parse_fid(&fid_text).ok_or_else(|| {
        ConfigError::new(
            "fid",
            format!("'{fid_text}': expected 4 hex digits such as 2F02"),
        )
    })?;
    let has_children = g.group("file").is_some();
    let kind = opt_text(g, "type")?.map(|t| t.to_ascii_uppercase());
    let is_df = match kind.as_deref() {
        None => has_children,
        Some("DF") => true,
        Some("EF") => false,
        Some(other) => {
            return Err(ConfigError::new(
                "type",
                format!("'{other}': expected EF or DF"),
            ))
        }
    };
    if is_df {
        for key in ["data", "text", "size", "read", "update"] {
            if g.var(key).is_some() {
                return Err(ConfigError::new(key, "a DF has no contents"));
            }
        }
        return Ok(FileConfig::df(fid, files(g)?));
    }
    if has_children {
        return Err(ConfigError::new("file", "an EF cannot hold files"));
    }
    let mut data = match (opt_hex(g, "data")?, opt_text(g, "text")?) {
        (Some(_), Some(_)) => return Err(ConfigError::new("text", "give data or text, not both")),
        (Some(data), None) => data,
        (None, Some(text)) => text.into_bytes(),
        (None, None) => Vec::new(),
    };
    if let Some(size) = opt_int(g, "size")? {
        let size = usize::try_from(size)
            .map_err(|_| ConfigError::new("size", format!("{size}: negative")))?;
        if size < data.len() {
            return Err(ConfigError::new(
                "size",
                format!("{size}: smaller than the {} bytes of data", data.len()),
            ));
        }
        data.resize(size, 0);
    }
    let read = opt_access(g, "read")?.unwrap_or(Access::Always);
    let update = opt_access(g, "update")?.unwrap_or(Access::Always);
    Ok(FileConfig::ef(fid, data).with_access(read, update))
}

fn parse_fid(text: &str) -> Option<u16> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.len() != 4 {
        return None;
    }
    u16::from_str_radix(t, 16).ok()
}

fn opt_text(g: &Group, name: &str) -> Result<Option<String>> {
    match g.var(name).and_then(|v| v.values.first()) {
        None => Ok(None),
        Some(Value::Bin(_)) => Err(ConfigError::new(name, "expected text, got bin")),
        Some(v) => Ok(Some(v.as_text().into_owned())),
    }
}

fn opt_int(g: &Group, name: &str) -> Result<Option<i32>> {
    g.opt_int(name)
        .map_err(|e| ConfigError::new("", e.to_string()))
}

/// Hex bytes: a bin value, or text of hex digits where blanks and `:` are ignored.
fn opt_hex(g: &Group, name: &str) -> Result<Option<Vec<u8>>> {
    match g.var(name).and_then(|v| v.values.first()) {
        None => Ok(None),
        Some(Value::Bin(b)) => Ok(Some(b.clone())),
        Some(Value::Int(_)) => Err(ConfigError::new(name, "expected hex digits, got int")),
        Some(Value::Char(s)) => parse_hex(s)
            .map(Some)
            .ok_or_else(|| ConfigError::new(name, format!("'{s}': not hex bytes"))),
    }
}

/// Parses hex digits, ignoring blanks and `:`.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    hex::decode(digits).ok()
}

fn opt_pin(g: &Group) -> Result<Option<Pin>> {
    match opt_text(g, "pin")? {
        None => Ok(None),
        Some(text) => Pin::from_text(&text)
            .map(Some)
            .map_err(|e| ConfigError::new("pin", e.to_string())),
    }
}

fn opt_retries(g: &Group) -> Result<Option<u8>> {
    match opt_int(g, "pinRetries")? {
        None => Ok(None),
        Some(n) => u8::try_from(n)
            .ok()
            .filter(|n| (1..=15).contains(n))
            .map(Some)
            .ok_or_else(|| ConfigError::new("pinRetries", format!("{n}: must be 1 to 15"))),
    }
}

fn opt_access(g: &Group, name: &str) -> Result<Option<Access>> {
    match opt_text(g, name)? {
        None => Ok(None),
        Some(word) => Access::from_word(&word).map(Some).ok_or_else(|| {
            ConfigError::new(name, format!("'{word}': expected always, pin or never"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chipcard_emulcard::default_files;

    fn reader(name: &str) -> Group {
        Group::new("reader").with_char("name", name)
    }

    #[test]
    fn defaults() {
        let config = Group::new("config")
            .with_char("type", "emul")
            .with_group(Group::new("reader").with_group(Group::new("card")));
        let c = EmulConfig::from_group(&config).expect("valid");
        assert_eq!(c.control_socket, None);
        let r = &c.readers[0];
        assert_eq!(
            (r.name.as_str(), r.slots, r.reader_type.as_str()),
            ("emul-0", 1, "emul")
        );
        assert_eq!(r.cards.len(), 1);
        assert_eq!(r.cards[0].0, 0);
        assert_eq!(r.cards[0].1, CardConfig::default());
        assert_eq!(r.cards[0].1.files, default_files());
    }

    #[test]
    fn full_reader_and_file_tree() {
        let mut flags = reader("Emul Reader 1");
        flags.set_chars("flags", &["keypad", "DISPLAY"]);
        let config = Group::new("config")
            .with_char("controlSocket", "/tmp/x.sock")
            .with_group(
                flags
                    .with_char("slots", "2")
                    .with_char("pin", "0000")
                    .with_group(
                        Group::new("card")
                            .with_char("slot", "1")
                            .with_char("atr", "3B 02 14 50")
                            .with_char("pin", "1234")
                            .with_char("pinRetries", "5")
                            .with_group(
                                Group::new("file")
                                    .with_char("fid", "2F02")
                                    .with_char("text", "hi")
                                    .with_char("size", "4"),
                            )
                            .with_group(
                                Group::new("file").with_char("fid", "5000").with_group(
                                    Group::new("file")
                                        .with_char("fid", "5001")
                                        .with_bin("data", vec![1, 2])
                                        .with_char("update", "pin"),
                                ),
                            ),
                    )
                    .with_group(Group::new("card").with_char("slot", "0")),
            );
        let c = EmulConfig::from_group(&config).expect("valid");
        assert_eq!(c.control_socket, Some(PathBuf::from("/tmp/x.sock")));
        let r = &c.readers[0];
        assert_eq!(r.flags, vec!["KEYPAD", "DISPLAY"]);
        let (slot, card) = &r.cards[0];
        assert_eq!(*slot, 1);
        assert_eq!(card.atr, vec![0x3B, 0x02, 0x14, 0x50]);
        assert_eq!(card.pin, Some(Pin::from_text("1234").expect("pin")));
        assert_eq!(card.pin_retries, 5);
        assert_eq!(
            card.files,
            vec![
                FileConfig::ef(0x2F02, *b"hi\0\0"),
                FileConfig::df(
                    0x5000,
                    vec![FileConfig::ef(0x5001, [1, 2]).with_access(Access::Always, Access::Pin)]
                ),
            ]
        );
        // The second card takes the reader's PIN.
        assert_eq!(r.cards[1].1.pin, Some(Pin::from_text("0000").expect("pin")));
        assert_eq!(
            r.inserted_card(vec![0x3B, 0]).pin,
            Some(Pin::from_text("0000").expect("pin"))
        );
    }

    #[test]
    fn the_readme_example_is_valid() {
        let readme = include_str!("../README.md");
        let start = readme.find("## Configuration").expect("section");
        let block = &readme[start..];
        let open = block.find("```\n").expect("code block") + 4;
        let close = open + block[open..].find("```").expect("block end");
        let doc = chipcard_ipc::parse(&block[open..close]).expect("the example parses");
        let driver = doc.group("driver").expect("driver group");
        let c = EmulConfig::from_group(driver).expect("the example is a valid configuration");
        assert_eq!(c.readers.len(), 2);
        assert_eq!(
            c.readers[0].cards[0].1.atr,
            chipcard_emulcard::default_atr()
        );
        assert_eq!(c.readers[0].cards[0].1.files.len(), 2);
    }

    #[test]
    fn errors_name_the_place() {
        let cases: Vec<(Group, &str)> = vec![
            (
                Group::new("c")
                    .with_group(reader("a"))
                    .with_group(reader("a")),
                "reader[1]/name: 'a' is the name of another reader",
            ),
            (
                Group::new("c").with_group(reader("a").with_char("slots", "0")),
                "reader[0]/slots: 0: must be 1 to 16",
            ),
            (
                Group::new("c")
                    .with_group(reader("a").with_group(Group::new("card").with_char("slot", "1"))),
                "reader[0]/card[0]/slot: 1: the reader has slots 0 to 0",
            ),
            (
                Group::new("c").with_group(
                    reader("a").with_group(Group::new("card").with_char("atr", "3BZZ")),
                ),
                "reader[0]/card[0]/atr: '3BZZ': not hex bytes",
            ),
            (
                Group::new("c").with_group(reader("a").with_group(
                    Group::new("card").with_group(Group::new("file").with_char("fid", "12")),
                )),
                "reader[0]/card[0]/file[0]/fid: '12': expected 4 hex digits such as 2F02",
            ),
            (
                Group::new("c").with_group(
                    reader("a").with_group(
                        Group::new("card").with_group(
                            Group::new("file")
                                .with_char("fid", "1234")
                                .with_char("data", "0102")
                                .with_char("size", "1"),
                        ),
                    ),
                ),
                "reader[0]/card[0]/file[0]/size: 1: smaller than the 2 bytes of data",
            ),
            (
                Group::new("c").with_group(reader("a").with_char("pinRetries", "16")),
                "reader[0]/pinRetries: 16: must be 1 to 15",
            ),
            (
                Group::new("c").with_group(
                    reader("a").with_group(
                        Group::new("card").with_group(
                            Group::new("file")
                                .with_char("fid", "1234")
                                .with_char("read", "maybe"),
                        ),
                    ),
                ),
                "reader[0]/card[0]/file[0]/read: 'maybe': expected always, pin or never",
            ),
            (
                Group::new("c").with_group(reader("a").with_group(
                    Group::new("card").with_group(Group::new("file").with_char("fid", "3F00")),
                )),
                "reader[0]/card[0]: file id 3F00 is reserved",
            ),
        ];
        for (group, expected) in cases {
            let e = EmulConfig::from_group(&group).expect_err(expected);
            assert_eq!(e.to_string(), expected);
        }
    }
}
