//! Notifications: the `ntype:ncode` patterns a client chooses with `SetNotify`, and the
//! kinds of event the server reports.

use std::fmt;

/// What a notification is about (`ntype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A driver process.
    Driver,
    /// A reader.
    Reader,
    /// A card.
    Card,
    /// A client connection.
    Client,
    /// A service process.
    Service,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Driver,
        Kind::Reader,
        Kind::Card,
        Kind::Client,
        Kind::Service,
    ];

    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Driver => "driver",
            Kind::Reader => "reader",
            Kind::Card => "card",
            Kind::Client => "client",
            Kind::Service => "service",
        }
    }

    /// The codes (`ncode`) this kind has.
    pub fn codes(self) -> &'static [&'static str] {
        match self {
            Kind::Driver => &["start", "up", "down", "error"],
            Kind::Reader => &["up", "down", "error", "add", "del"],
            Kind::Card => &["inserted", "removed"],
            Kind::Client => &["up", "down"],
            Kind::Service => &["up", "down"],
        }
    }

    fn from_word(word: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(word))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One pattern: a kind or any kind, a code or any code.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    kind: Option<Kind>,
    code: Option<String>,
}

/// The notifications one client asked for. Empty: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyPatterns {
    patterns: Vec<Pattern>,
}

impl NotifyPatterns {
    /// Reads `SetNotify` flags: `ntype:ncode`, either part `*`; `ntype` alone means
    /// `ntype:*`, `*` alone means everything. Case does not matter. Unknown types and
    /// codes are refused with the offending flag in the message.
    pub fn parse<S: AsRef<str>>(flags: &[S]) -> Result<NotifyPatterns, String> {
        let mut patterns = Vec::new();
        for flag in flags {
            let flag = flag.as_ref().trim();
            let (ntype, ncode) = flag.split_once(':').unwrap_or((flag, "*"));
            let (ntype, ncode) = (ntype.trim(), ncode.trim());
            let kind = if ntype == "*" {
                None
            } else {
                Some(Kind::from_word(ntype).ok_or_else(|| {
                    format!("'{flag}': unknown notification type '{ntype}' (driver, reader, card, client, service or *)")
                })?)
            };
            let code = if ncode == "*" {
                None
            } else {
                let known = match kind {
                    Some(k) => k.codes().iter().any(|c| c.eq_ignore_ascii_case(ncode)),
                    None => Kind::ALL
                        .iter()
                        .any(|k| k.codes().iter().any(|c| c.eq_ignore_ascii_case(ncode))),
                };
                if !known {
                    return Err(format!("'{flag}': unknown notification code '{ncode}'"));
                }
                Some(ncode.to_ascii_lowercase())
            };
            // Repeats are dropped: the patterns a client keeps are few, whatever it sends.
            let pattern = Pattern { kind, code };
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        Ok(NotifyPatterns { patterns })
    }

    /// True when a notification `kind`:`code` is wanted.
    pub fn wants(&self, kind: Kind, code: &str) -> bool {
        self.patterns.iter().any(|p| {
            p.kind.map_or(true, |k| k == kind) && p.code.as_deref().map_or(true, |c| c == code)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_type_code_and_wildcards() {
        let p = NotifyPatterns::parse(&["card:inserted", "READER:*", "*:down"]).expect("valid");
        assert!(p.wants(Kind::Card, "inserted"));
        assert!(!p.wants(Kind::Card, "removed"));
        assert!(p.wants(Kind::Reader, "add"));
        assert!(p.wants(Kind::Driver, "down"));
        assert!(p.wants(Kind::Client, "down"));
        assert!(!p.wants(Kind::Client, "up"));
    }

    #[test]
    fn bare_type_and_star() {
        let p = NotifyPatterns::parse(&["driver"]).expect("valid");
        assert!(p.wants(Kind::Driver, "error"));
        assert!(!p.wants(Kind::Card, "inserted"));
        let all = NotifyPatterns::parse(&["*"]).expect("valid");
        assert!(all.wants(Kind::Client, "up"));
        let none = NotifyPatterns::parse::<&str>(&[]).expect("valid");
        assert!(!none.wants(Kind::Card, "inserted"));
    }

    #[test]
    fn repeated_patterns_are_kept_once() {
        let flags = vec!["card:inserted"; 10_000];
        let p = NotifyPatterns::parse(&flags).expect("valid");
        assert_eq!(p.patterns.len(), 1);
        assert!(p.wants(Kind::Card, "inserted"));
    }

    #[test]
    fn unknown_types_and_codes_are_refused() {
        assert!(NotifyPatterns::parse(&["cards:inserted"])
            .expect_err("unknown type")
            .contains("unknown notification type 'cards'"));
        assert!(NotifyPatterns::parse(&["card:up"])
            .expect_err("unknown code")
            .contains("unknown notification code 'up'"));
        assert!(NotifyPatterns::parse(&["*:exploded"]).is_err());
        assert!(NotifyPatterns::parse(&["*:inserted"]).is_ok());
    }
}
