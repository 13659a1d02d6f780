//! pcsc-tools' ATR list (`smartcard_list.txt`): ATR patterns and the cards they describe.
//!
//! The file is lines of text. A line that starts with a tab (or a blank) is a description
//! of the pattern above it; `#` starts a comment line; any other non-empty line is an ATR
//! pattern: upper-case hex bytes separated by single blanks, written as a regular
//! expression (`3B 8F 80 01 80 4F 0C A0 00 00 03 06 .. 00 .. 00 00 00 00 ..`).
//!
//! The patterns use a small part of regular-expression syntax, and that is what this module
//! understands: `.` (any character), `[...]` sets (ranges `0-5`, negation `[^...]`),
//! and the quantifiers `*`, `+` and `?`. A pattern must match the whole ATR, written the
//! same way (`3B 02 14 50`), case ignored. A pattern with anything else (groups,
//! alternatives, escapes) is skipped and counted in [`AtrList::skipped`]. Matching is a
//! linear-time simulation of the pattern, so no pattern can make it slow.

use std::fmt;

/// What one element of a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    /// One given character (upper case).
    Char(u8),
    /// Any character.
    Any,
    /// A set of characters: the inclusive ranges, and whether the set is negated.
    Set {
        ranges: Vec<(u8, u8)>,
        negated: bool,
    },
}

impl Atom {
    fn matches(&self, c: u8) -> bool {
        match self {
            Atom::Char(x) => *x == c,
            Atom::Any => true,
            Atom::Set { ranges, negated } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// How often an atom may occur.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Once,
    /// `?`
    Optional,
    /// `*`
    Any,
}

/// A compiled ATR pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    items: Vec<(Atom, Repeat)>,
}

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct PatternError {
    /// Where (1-based, in characters of the pattern).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl Pattern {
    /// Compiles a pattern as the list writes it. `^` at the start and `$` at the end are
    /// allowed (the match is always of the whole ATR).
    pub fn compile(text: &str) -> Result<Pattern, PatternError> {
        let bytes = text.trim().as_bytes();
        let bytes = bytes.strip_prefix(b"^").unwrap_or(bytes);
        let bytes = bytes.strip_suffix(b"$").unwrap_or(bytes);
        let err = |i: usize, message: String| PatternError {
            column: i + 1,
            message,
        };
        let mut items: Vec<(Atom, Repeat)> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            let atom = match c {
                b'.' => Atom::Any,
                b'[' => {
                    let (set, next) = compile_set(bytes, i).map_err(|m| err(i, m))?;
                    i = next;
                    set
                }
                b'*' | b'+' | b'?' => {
                    let Some((atom, repeat)) = items.last_mut() else {
                        return Err(err(i, format!("'{}' follows nothing", char::from(c))));
                    };
                    match (c, *repeat) {
                        (b'*', Repeat::Once | Repeat::Optional) => *repeat = Repeat::Any,
                        (b'?', Repeat::Once) => *repeat = Repeat::Optional,
                        // X+ is X followed by X*.
                        (b'+', Repeat::Once) => {
                            let again = atom.clone();
                            items.push((again, Repeat::Any));
                        }
                        _ => return Err(err(i, "a quantifier on a quantifier".to_owned())),
                    }
                    i += 1;
                    continue;
                }
                b'(' | b')' | b'|' | b'\\' | b'{' | b'}' | b'^' | b'$' | b']' => {
                    return Err(err(
                        i,
                        format!("'{}' is not supported in ATR patterns", char::from(c)),
                    ))
                }
                c if c.is_ascii_graphic() || c == b' ' => Atom::Char(c.to_ascii_uppercase()),
                c => return Err(err(i, format!("unexpected byte {c:#04x}"))),
            };
            items.push((atom, Repeat::Once));
            i += 1;
        }
        Ok(Pattern { items })
    }

    /// True when the pattern matches all of `text` (case ignored).
    pub fn matches_text(&self, text: &str) -> bool {
        let n = self.items.len();
        // states[k]: the pattern's first k items can match the text read so far.
        let mut states = vec![false; n + 1];
        states[0] = true;
        self.close(&mut states);
        for c in text.bytes().map(|c| c.to_ascii_uppercase()) {
            let mut next = vec![false; n + 1];
            for (k, (atom, repeat)) in self.items.iter().enumerate() {
                if states[k] && atom.matches(c) {
                    match repeat {
                        Repeat::Any => next[k] = true,
                        Repeat::Once | Repeat::Optional => next[k + 1] = true,
                    }
                }
            }
            self.close(&mut next);
            if !next.iter().any(|&s| s) {
                return false;
            }
            states = next;
        }
        states[n]
    }

    /// True when the pattern matches the ATR `atr` (written `3B 02 14 50`).
    pub fn matches(&self, atr: &[u8]) -> bool {
        self.matches_text(&atr_text(atr))
    }

    /// Adds the states reachable by skipping optional items.
    fn close(&self, states: &mut [bool]) {
        for (k, (_, repeat)) in self.items.iter().enumerate() {
            if states[k] && *repeat != Repeat::Once {
                states[k + 1] = true;
            }
        }
    }
}

/// `[...]` starting at `bytes[start]`: the set and the index of its `]`.
fn compile_set(bytes: &[u8], start: usize) -> Result<(Atom, usize), String> {
    let mut i = start + 1;
    let negated = bytes.get(i) == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = bytes.get(i) else {
            return Err("'[' without ']'".to_owned());
        };
        if c == b']' && !first {
            break;
        }
        first = false;
        if c == b'\\' || c == b'[' {
            return Err(format!("'{}' inside a set is not supported", char::from(c)));
        }
        let lo = c.to_ascii_uppercase();
        match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'-'), Some(&hi)) if hi != b']' => {
                let hi = hi.to_ascii_uppercase();
                if hi < lo {
                    return Err(format!(
                        "the range {}-{} is reversed",
                        char::from(lo),
                        char::from(hi)
                    ));
                }
                ranges.push((lo, hi));
                i += 3;
            }
            _ => {
                ranges.push((lo, lo));
                i += 1;
            }
        }
    }
    Ok((Atom::Set { ranges, negated }, i))
}

/// An ATR as the list writes it: upper-case hex bytes separated by blanks.
pub fn atr_text(atr: &[u8]) -> String {
    atr.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One pattern of the list with its descriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The pattern as written.
    pub pattern: String,
    /// The description lines, without the leading tab.
    pub descriptions: Vec<String>,
    /// Its line in the file (1-based).
    pub line: usize,
    compiled: Pattern,
}

/// A line of the list that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The line (1-based).
    pub line: usize,
    /// Why it was skipped.
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The parsed list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AtrList {
    /// The usable entries, in file order.
    pub entries: Vec<Entry>,
    /// Lines that were not used.
    pub skipped: Vec<Skipped>,
}

impl AtrList {
    /// Parses the text of a `smartcard_list.txt`. Never fails: unusable lines are skipped
    /// and listed in [`AtrList::skipped`].
    pub fn parse(text: &str) -> AtrList {
        let mut list = AtrList::default();
        // The entry being read, if its pattern compiled; `None` after a skipped pattern, so
        // that its descriptions are skipped too.
        let mut current: Option<usize> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
                continue;
            }
            if raw.starts_with('\t') || raw.starts_with(' ') {
                let text = raw.trim();
                match current {
                    Some(k) => list.entries[k].descriptions.push(text.to_owned()),
                    None if list.entries.is_empty() && list.skipped.is_empty() => {
                        list.skipped.push(Skipped {
                            line,
                            reason: "a description before any ATR pattern".to_owned(),
                        })
                    }
                    // The description of a skipped pattern.
                    None => {}
                }
                continue;
            }
            let pattern = raw.trim();
            match Pattern::compile(pattern) {
                Ok(compiled) => {
                    list.entries.push(Entry {
                        pattern: pattern.to_owned(),
                        descriptions: Vec::new(),
                        line,
                        compiled,
                    });
                    current = Some(list.entries.len() - 1);
                }
                Err(e) => {
                    list.skipped.push(Skipped {
                        line,
                        reason: format!("pattern '{pattern}': {e}"),
                    });
                    current = None;
                }
            }
        }
        list
    }

    /// The entries whose pattern matches `atr`, in file order.
    pub fn lookup(&self, atr: &[u8]) -> Vec<&Entry> {
        let text = atr_text(atr);
        self.entries
            .iter()
            .filter(|e| e.compiled.matches_text(&text))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, atr: &str) -> bool {
        Pattern::compile(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .matches_text(atr)
    }

    #[test]
    fn literal_patterns_match_the_whole_atr_only() {
        assert!(matches("3B 02 14 50", "3B 02 14 50"));
        assert!(matches("3b 02 14 50", "3B 02 14 50"));
        assert!(!matches("3B 02 14 50", "3B 02 14 50 11"));
        assert!(!matches("3B 02 14 50 11", "3B 02 14 50"));
        assert!(!matches("3B 02 14 50", "3B 02 14 51"));
    }

    #[test]
    fn dots_sets_and_stars_as_the_list_uses_them() {
        let p = "3B 8F 80 01 80 4F 0C A0 00 00 03 06 .. 00 .. 00 00 00 00 ..";
        assert!(matches(
            p,
            "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A"
        ));
        assert!(!matches(
            p,
            "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 01 01 00 00 00 00 6A"
        ));
        // A single-character wildcard inside a byte, and sets with commas and ranges.
        assert!(matches(
            "3B 3B .. 00 80 6. A[FE] 03 0[CD] .. .. 83 .. 90 00",
            "3B 3B 94 00 80 65 AF 03 0D 01 74 83 0F 90 00"
        ));
        assert!(!matches(
            "3B 3B .. 00 80 6. A[FE] 03 0[CD] .. .. 83 .. 90 00",
            "3B 3B 94 00 80 65 AD 03 0D 01 74 83 0F 90 00"
        ));
        assert!(matches(
            "3B 39 19 00 53 4F 4D 41 44 53 33 30 3[1,3]",
            "3B 39 19 00 53 4F 4D 41 44 53 33 30 33"
        ));
        assert!(!matches(
            "3B 39 19 00 53 4F 4D 41 44 53 33 30 3[1,3]",
            "3B 39 19 00 53 4F 4D 41 44 53 33 30 32"
        ));
        assert!(matches(
            "3B 6F 00 00 80 5A .. 0[1-5] .. 82 90 00",
            "3B 6F 00 00 80 5A 11 04 22 82 90 00"
        ));
        assert!(!matches(
            "3B 6F 00 00 80 5A .. 0[1-5] .. 82 90 00",
            "3B 6F 00 00 80 5A 11 06 22 82 90 00"
        ));
        // `.*` takes any rest, including nothing.
        assert!(matches(
            "3B EF 00 FF 81 31 42 45 .* 38",
            "3B EF 00 FF 81 31 42 45 65 63 38"
        ));
        // The blanks around `.*` are literal, as in the regular expression.
        assert!(!matches(
            "3B EF 00 FF 81 31 42 45 .* 38",
            "3B EF 00 FF 81 31 42 45 38"
        ));
        assert!(matches("3B FF 90 00.*", "3B FF 90 00"));
        assert!(matches("3B FF 90 00.*", "3B FF 90 00 12 34"));
        assert!(matches("^3B 0[^0-2] 14 50$", "3B 04 14 50"));
        assert!(!matches("^3B 0[^0-2] 14 50$", "3B 02 14 50"));
        assert!(matches("3B 0?2 14 50", "3B 2 14 50"));
        assert!(matches("3B 0+2 14 50", "3B 0002 14 50"));
        assert!(!matches("3B 0+2 14 50", "3B 2 14 50"));
    }

    #[test]
    fn unsupported_syntax_is_refused_with_its_column() {
        let e = Pattern::compile("3B (02|03) 14").expect_err("groups");
        assert_eq!(e.column, 4);
        assert!(e.message.contains("'(' is not supported"));
        assert!(Pattern::compile("3B [02").is_err());
        assert!(Pattern::compile("*3B").is_err());
        assert!(Pattern::compile("3B**").is_err());
        assert!(Pattern::compile("3B [5-1]").is_err());
        assert!(Pattern::compile("3B \\x").is_err());
    }

    #[test]
    fn a_long_pattern_of_stars_stays_fast() {
        let p = Pattern::compile(&".*".repeat(200)).expect("valid");
        let text = "3B ".repeat(33);
        assert!(p.matches_text(&text));
        let p = Pattern::compile(&format!("{}X", ".*".repeat(200))).expect("valid");
        assert!(!p.matches_text(&text));
    }

    const LIST: &str = "#\n# smartcard_list.txt (test extract)\n#\n\n\
3B 02 14 50\n\tSchlumberger Multiflex 3k\n\n\
3B 02 14 50 11\n\tMaste visa card (Bank)\n\n\
3B 8F 80 01 80 4F 0C A0 00 00 03 06 .. 00 .. 00 00 00 00 ..\n\
\tRFID - ISO 14443 Type A - (PC/SC part 3 storage card)\n\
\thttp://example.invalid/mifare\n\n\
3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A\r\n\
\tNXP/Philips MIFARE Classic 1K (as per PCSC std part3)\n\n\
3B (BAD\n\tnever used\n\n\
3B 02 14 5.\n\tany Multiflex\n";

    #[test]
    fn the_list_parses_with_descriptions_and_skips_bad_patterns() {
        let list = AtrList::parse(LIST);
        let patterns: Vec<&str> = list.entries.iter().map(|e| e.pattern.as_str()).collect();
        assert_eq!(
            patterns,
            [
                "3B 02 14 50",
                "3B 02 14 50 11",
                "3B 8F 80 01 80 4F 0C A0 00 00 03 06 .. 00 .. 00 00 00 00 ..",
                "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A",
                "3B 02 14 5.",
            ]
        );
        assert_eq!(list.entries[2].descriptions.len(), 2);
        assert_eq!(list.entries[0].line, 5);
        assert_eq!(list.skipped.len(), 1);
        assert_eq!(
            list.skipped[0].to_string(),
            "line 18: pattern '3B (BAD': column 4: '(' is not supported in ATR patterns"
        );
        let mifare = [
            0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, 0x03, 0x00,
            0x01, 0x00, 0x00, 0x00, 0x00, 0x6A,
        ];
        let found: Vec<usize> = list.lookup(&mifare).iter().map(|e| e.line).collect();
        assert_eq!(found, [11, 15]);
        let found: Vec<&str> = list
            .lookup(&[0x3B, 0x02, 0x14, 0x50])
            .iter()
            .flat_map(|e| e.descriptions.iter().map(String::as_str))
            .collect();
        assert_eq!(found, ["Schlumberger Multiflex 3k", "any Multiflex"]);
        assert!(list.lookup(&[0x3B, 0x00]).is_empty());
    }

    #[test]
    fn a_description_first_is_skipped() {
        let list = AtrList::parse("\torphan\n3B 00\n\tempty card\n");
        assert_eq!(list.skipped[0].line, 1);
        assert_eq!(list.entries.len(), 1);
        assert_eq!(list.entries[0].descriptions, ["empty card"]);
    }

    #[test]
    fn the_installed_list_parses_if_present() {
        let Ok(text) = std::fs::read_to_string(crate::DEFAULT_ATR_LIST) else {
            return;
        };
        let list = AtrList::parse(&text);
        assert!(list.entries.len() > 1000, "{} entries", list.entries.len());
        assert!(
            list.skipped.len() * 100 < list.entries.len(),
            "too many skipped: {:?}",
            &list.skipped[..list.skipped.len().min(5)]
        );
        let found = list.lookup(&[0x3B, 0x02, 0x14, 0x50]);
        assert!(found
            .iter()
            .any(|e| e.descriptions.iter().any(|d| d.contains("Multiflex"))));
    }
}
