//! Card types by ATR: libchipcard's card definitions, matched against a card's answer to reset.
//!
//! A definition (group format, one or more per file) names a card type, its base type
//! (`processor`, `memory`), the type it extends and its ATR patterns:
//!
//! ```text
//! cardType {
//!   name="ddv0"
//!   extends="ProcessorCard"
//!   type="processor"
//!   atr="3b ef 00 ff 81 31 ?? 45 65 63 *"
//! }
//! ```
//!
//! In a pattern `??` is any byte, `?` any nibble, `*` any rest; blanks are ignored and hex
//! digits may be of either case. A pattern without `*` matches ATRs of exactly its length.
//! A card's type names are every definition whose patterns match, followed by what each
//! extends (transitively), each name once, in definition order.

use std::fmt;
use std::path::{Path, PathBuf};

use chipcard_ipc::message::CardType;
use chipcard_ipc::Group;

/// The definitions shipped with chipcard (`etc/cards/`), used when no card directory exists.
const EMBEDDED: &[(&str, &str)] = &[
    ("card.conf", include_str!("../../etc/cards/card.conf")),
    (
        "processorcard.conf",
        include_str!("../../etc/cards/processorcard.conf"),
    ),
    (
        "memorycard.conf",
        include_str!("../../etc/cards/memorycard.conf"),
    ),
    ("ddv0.conf", include_str!("../../etc/cards/ddv0.conf")),
    ("ddv1.conf", include_str!("../../etc/cards/ddv1.conf")),
    (
        "geldkarte.conf",
        include_str!("../../etc/cards/geldkarte.conf"),
    ),
    ("kvkcard.conf", include_str!("../../etc/cards/kvkcard.conf")),
    ("egk.conf", include_str!("../../etc/cards/egk.conf")),
    (
        "starcoscard.conf",
        include_str!("../../etc/cards/starcoscard.conf"),
    ),
    ("zkacard.conf", include_str!("../../etc/cards/zkacard.conf")),
    (
        "chiptanusb.conf",
        include_str!("../../etc/cards/chiptanusb.conf"),
    ),
];

/// A card definition that cannot be used, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", .file.display())]
pub struct CardDefinitionError {
    /// The file (or embedded name) holding the definition.
    pub file: PathBuf,
    /// What is wrong, with line and column for syntax errors.
    pub message: String,
}

/// One byte of an ATR pattern: the bits that must match and their value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PatternByte {
    value: u8,
    mask: u8,
}

/// An ATR pattern such as `3b 9? ?? 81 b1 fe 45 1f *`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtrPattern {
    bytes: Vec<PatternByte>,
    any_rest: bool,
}

impl AtrPattern {
    /// Parses a pattern; the error says what is wrong.
    pub fn parse(text: &str) -> Result<AtrPattern, String> {
        let chars: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
        let mut bytes = Vec::with_capacity(chars.len() / 2);
        let mut i = 0;
        while i < chars.len() {
            if chars[i] == '*' {
                if i + 1 != chars.len() {
                    return Err(format!("'*' must end the pattern '{text}'"));
                }
                return Ok(AtrPattern {
                    bytes,
                    any_rest: true,
                });
            }
            let (Some(&hi), Some(&lo)) = (chars.get(i), chars.get(i + 1)) else {
                return Err(format!("odd number of digits in '{text}'"));
            };
            let bad = |c: char| format!("'{c}' is not hex, '?' or '*' in '{text}'");
            let (hv, hm) = nibble(hi).ok_or_else(|| bad(hi))?;
            let (lv, lm) = nibble(lo).ok_or_else(|| bad(lo))?;
            bytes.push(PatternByte {
                value: hv << 4 | lv,
                mask: hm << 4 | lm,
            });
            i += 2;
        }
        if bytes.is_empty() {
            return Err("empty ATR pattern".to_owned());
        }
        Ok(AtrPattern {
            bytes,
            any_rest: false,
        })
    }

    /// True when `atr` matches.
    pub fn matches(&self, atr: &[u8]) -> bool {
        let length_ok = if self.any_rest {
            atr.len() >= self.bytes.len()
        } else {
            atr.len() == self.bytes.len()
        };
        length_ok
            && self
                .bytes
                .iter()
                .zip(atr)
                .all(|(p, &b)| b & p.mask == p.value)
    }
}

/// A hex digit's value and mask, or `?` (any).
fn nibble(c: char) -> Option<(u8, u8)> {
    if c == '?' {
        return Some((0, 0));
    }
    c.to_digit(16).map(|d| (d as u8, 0x0f))
}

impl fmt::Display for AtrPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for b in &self.bytes {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            for shift in [4u8, 0] {
                if (b.mask >> shift) & 0x0f == 0 {
                    f.write_str("?")?;
                } else {
                    write!(f, "{:x}", (b.value >> shift) & 0x0f)?;
                }
            }
        }
        if self.any_rest {
            f.write_str(if first { "*" } else { " *" })?;
        }
        Ok(())
    }
}

/// One card type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardDefinition {
    /// Its name, as libchipcard spells it (`ddv0`, `ProcessorCard`).
    pub name: String,
    /// The type it extends, if any.
    pub extends: Option<String>,
    /// Processor, memory or unknown.
    pub card_type: CardType,
    /// Its ATR patterns (none for base types, which are known by what extends them).
    pub atrs: Vec<AtrPattern>,
}

impl CardDefinition {
    fn from_group(g: &Group) -> Result<CardDefinition, String> {
        let name = g.get_char("name").map_err(|e| e.to_string())?;
        if name.trim().is_empty() {
            return Err("name: empty".to_owned());
        }
        let extends = g
            .opt_char("extends")
            .map_err(|e| e.to_string())?
            .map(str::to_owned);
        let card_type = match g.opt_char("type").map_err(|e| e.to_string())? {
            None => CardType::Unknown,
            Some(t) if t.eq_ignore_ascii_case("processor") => CardType::Processor,
            Some(t) if t.eq_ignore_ascii_case("memory") => CardType::Memory,
            Some(t) if t.eq_ignore_ascii_case("unknown") => CardType::Unknown,
            Some(t) => {
                return Err(format!(
                    "type: expected processor, memory or unknown, got '{t}'"
                ))
            }
        };
        let atrs = g
            .get_chars("atr")
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|p| AtrPattern::parse(p).map_err(|e| format!("atr: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(CardDefinition {
            name: name.to_owned(),
            extends,
            card_type,
            atrs,
        })
    }
}

/// What the registry says about one ATR.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CardMatch {
    /// Processor or memory card, from the first matching definition (or ancestor) that says
    /// so, else [`CardType::Unknown`].
    pub card_type: CardType,
    /// Every matching type name, then what they extend; each once.
    pub names: Vec<String>,
}

/// All known card types.
#[derive(Debug, Clone, Default)]
pub struct CardTypeRegistry {
    definitions: Vec<CardDefinition>,
}

impl CardTypeRegistry {
    /// The definitions shipped with chipcard.
    pub fn embedded() -> CardTypeRegistry {
        let mut registry = CardTypeRegistry::default();
        for (name, text) in EMBEDDED {
            // The embedded files are checked by the tests below; a broken one is skipped
            // with a log line rather than taking the server down.
            if let Err(e) = registry.add_text(Path::new(name), text) {
                tracing::error!(error = %e, "embedded card definition is invalid");
            }
        }
        registry
    }

    /// Every `*.conf` file of `dir`, in file-name order.
    pub fn load_dir(dir: &Path) -> Result<CardTypeRegistry, CardDefinitionError> {
        let read_error = |file: &Path, e: std::io::Error| CardDefinitionError {
            file: file.to_owned(),
            message: e.to_string(),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| read_error(dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        files.sort();
        let mut registry = CardTypeRegistry::default();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| read_error(&file, e))?;
            registry.add_text(&file, &text)?;
        }
        Ok(registry)
    }

    /// Adds the definitions of one file's text; a later definition of a name replaces an
    /// earlier one.
    pub fn add_text(&mut self, file: &Path, text: &str) -> Result<(), CardDefinitionError> {
        let error = |message: String| CardDefinitionError {
            file: file.to_owned(),
            message,
        };
        let doc = chipcard_ipc::parse(text).map_err(|e| error(e.to_string()))?;
        for g in doc.groups("cardType") {
            let def = CardDefinition::from_group(g).map_err(|m| error(format!("cardType: {m}")))?;
            self.definitions
                .retain(|d| !d.name.eq_ignore_ascii_case(&def.name));
            self.definitions.push(def);
        }
        Ok(())
    }

    /// The definitions, in order.
    pub fn definitions(&self) -> &[CardDefinition] {
        &self.definitions
    }

    fn find(&self, name: &str) -> Option<&CardDefinition> {
        self.definitions
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
    }

    /// The card types whose patterns match `atr`, with what they extend.
    pub fn matches(&self, atr: &[u8]) -> CardMatch {
        let direct: Vec<&CardDefinition> = self
            .definitions
            .iter()
            .filter(|d| d.atrs.iter().any(|p| p.matches(atr)))
            .collect();
        let mut chain: Vec<&CardDefinition> = direct.clone();
        for def in direct {
            let mut next = def.extends.as_deref();
            // Each step adds a new name or stops, so a cycle (a extends b extends a) ends.
            while let Some(parent) = next.and_then(|name| self.find(name)) {
                if chain.iter().any(|d| std::ptr::eq(*d, parent)) {
                    break;
                }
                chain.push(parent);
                next = parent.extends.as_deref();
            }
        }
        CardMatch {
            card_type: chain
                .iter()
                .map(|d| d.card_type)
                .find(|t| *t != CardType::Unknown)
                .unwrap_or(CardType::Unknown),
            names: chain.into_iter().map(|d| d.name.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("test ATR is hex"))
            .collect()
    }

    #[test]
    fn pattern_known_answers() {
        let cases: &[(&str, &str, bool)] = &[
            (
                "3b 9? ?? 81 b1 fe 45 1f *",
                "3b 95 13 81 b1 fe 45 1f 07 00",
                true,
            ),
            (
                "3b 9? ?? 81 b1 fe 45 1f *",
                "3b a5 13 81 b1 fe 45 1f 07",
                false,
            ),
            ("3b 9? ?? 81 b1 fe 45 1f *", "3b 95 13 81 b1 fe 45", false),
            ("?? 13 10 ??", "a2 13 10 91", true),
            ("?? 13 10 ??", "a2 13 10 91 00", false),
            ("3B FF ?? 00", "3b ff 42 00", true),
            ("3bff??00", "3b ff 42 00", true),
            ("*", "", true),
        ];
        for (pattern, atr, expected) in cases {
            let p = AtrPattern::parse(pattern).expect("valid pattern");
            assert_eq!(p.matches(&hex(atr)), *expected, "{pattern} vs {atr}");
        }
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for bad in ["", "3", "3b *00", "zz", "3b x?"] {
            assert!(AtrPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pattern_display_round_trips() {
        let p = AtrPattern::parse("3B 9? ?? 81 *").expect("valid");
        assert_eq!(p.to_string(), "3b 9? ?? 81 *");
        assert_eq!(AtrPattern::parse(&p.to_string()).ok(), Some(p));
    }

    #[test]
    fn embedded_definitions_all_load() {
        let mut registry = CardTypeRegistry::default();
        for (name, text) in EMBEDDED {
            registry
                .add_text(Path::new(name), text)
                .unwrap_or_else(|e| panic!("embedded {name}: {e}"));
        }
        assert_eq!(registry.definitions().len(), EMBEDDED.len());
    }

    /// libchipcard's definitions (Debian's `libchipcard-data`), read the simple way: comments
    /// dropped, then the `<card>` tag's attributes and every `<atr>` element.
    fn libchipcard_cards(xml: &str) -> Vec<(String, Option<String>, CardType, Vec<AtrPattern>)> {
        let mut text = String::new();
        let mut rest = xml;
        while let Some(start) = rest.find("<!--") {
            text.push_str(&rest[..start]);
            rest = rest[start..]
                .find("-->")
                .map_or("", |end| &rest[start + end + 3..]);
        }
        text.push_str(rest);
        let attr = |tag: &str, name: &str| {
            let key = format!("{name}=\"");
            tag.find(&key).map(|i| {
                let value = &tag[i + key.len()..];
                value[..value.find('"').unwrap_or(value.len())].to_owned()
            })
        };
        let mut cards = Vec::new();
        for part in text.split("<card ").skip(1) {
            let tag = &part[..part.find('>').unwrap_or(part.len())];
            let card_type = match attr(tag, "type").as_deref() {
                Some("processor") => CardType::Processor,
                Some("memory") => CardType::Memory,
                _ => CardType::Unknown,
            };
            let atrs = part
                .split("<atr>")
                .skip(1)
                .map(|a| &a[..a.find("</atr>").unwrap_or(a.len())])
                .map(|a| AtrPattern::parse(a).unwrap_or_else(|e| panic!("{a:?}: {e}")))
                .collect();
            cards.push((
                attr(tag, "name").expect("a card has a name"),
                attr(tag, "extends"),
                card_type,
                atrs,
            ));
        }
        cards
    }

    /// Every card type of libchipcard's data is shipped, with the same base, type and ATR
    /// patterns, in the same order.
    #[test]
    fn embedded_definitions_are_libchipcards() {
        let dir = Path::new("/usr/share/chipcard/cards");
        let Ok(entries) = std::fs::read_dir(dir) else {
            eprintln!(
                "skipped: {} not installed (Debian package libchipcard-data)",
                dir.display()
            );
            return;
        };
        let registry = CardTypeRegistry::embedded();
        let mut compared = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension() != Some(std::ffi::OsStr::new("xml")) {
                continue;
            }
            let xml = std::fs::read_to_string(&path).expect("read a card definition");
            for (name, extends, card_type, atrs) in libchipcard_cards(&xml) {
                let ours = registry
                    .find(&name)
                    .unwrap_or_else(|| panic!("{}: card type {name} not shipped", path.display()));
                assert_eq!(ours.extends, extends, "{name}: extends");
                assert_eq!(ours.card_type, card_type, "{name}: type");
                assert_eq!(ours.atrs, atrs, "{name}: ATR patterns");
                compared += 1;
            }
        }
        assert!(
            compared >= 10,
            "only {compared} card types in {}",
            dir.display()
        );
    }

    #[test]
    fn ddv0_atr_lists_matches_and_ancestors() {
        let registry = CardTypeRegistry::embedded();
        let m = registry.matches(&hex("3b ef 00 ff 81 31 fe 45 65 63 0d 02 31 02 50 00 10"));
        assert_eq!(m.card_type, CardType::Processor);
        assert_eq!(
            m.names,
            vec![
                "ddv0",
                "geldkarte",
                "ChiptanusbCard",
                "ProcessorCard",
                "card"
            ]
        );
    }

    #[test]
    fn egk_and_kvk_and_unknown() {
        let registry = CardTypeRegistry::embedded();
        let egk = registry.matches(&hex("3b 95 13 81 b1 fe 45 1f 07"));
        assert_eq!(egk.names, vec!["egk", "ProcessorCard", "card"]);
        let kvk = registry.matches(&hex("a2 13 10 91"));
        assert_eq!(kvk.card_type, CardType::Memory);
        assert_eq!(kvk.names, vec!["kvk", "card"]);
        let none = registry.matches(&hex("3b 00"));
        assert_eq!(none, CardMatch::default());
    }

    #[test]
    fn extends_cycles_end() {
        let mut registry = CardTypeRegistry::default();
        let text = "cardType {\n name=\"a\"\n extends=\"b\"\n atr=\"3b *\"\n}\n\
                    cardType {\n name=\"b\"\n extends=\"a\"\n}\n";
        registry
            .add_text(Path::new("cycle.conf"), text)
            .expect("valid");
        assert_eq!(registry.matches(&[0x3b]).names, vec!["a", "b"]);
    }

    #[test]
    fn load_dir_reports_file_and_position() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("a.conf"),
            "cardType {\n  name=\"x\"\n  atr=\"3b zz\"\n}\n",
        )
        .expect("write");
        let e = CardTypeRegistry::load_dir(dir.path()).expect_err("bad atr");
        assert!(e.to_string().contains("a.conf: cardType: atr:"), "{e}");
        std::fs::write(dir.path().join("a.conf"), "cardType {\n  name=\"x\"\n").expect("write");
        let e = CardTypeRegistry::load_dir(dir.path()).expect_err("unclosed group");
        assert!(e.to_string().contains("a.conf: 3:"), "{e}");
    }
}
