//! The pcsc driver's configuration group (README.md documents the keys).

use std::path::PathBuf;
use std::time::Duration;

use chipcard_ipc::Group;

/// Default for `pollInterval`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(1000);
/// Default for `reconnectInterval`.
pub const DEFAULT_RECONNECT_INTERVAL: Duration = Duration::from_millis(2000);
/// The first wait before trying to reach pcscd again; it doubles up to `reconnectInterval`.
pub const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);

const MIN_INTERVAL_MS: i32 = 10;
const MAX_INTERVAL_MS: i32 = 600_000;

/// The driver's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcscConfig {
    /// pcscd's socket; `None`: libpcsclite's default (or `PCSCLITE_CSOCK_NAME` inherited).
    pub pcscd_socket: Option<PathBuf>,
    /// Reader name patterns; empty: every reader.
    pub readers: Vec<Pattern>,
    /// How long one `SCardGetStatusChange` waits at most.
    pub poll_interval: Duration,
    /// The longest wait between attempts to reach pcscd.
    pub reconnect_interval: Duration,
    /// Whether readers are asked for their PC/SC part 10 features (reader flags).
    pub features: bool,
}

impl Default for PcscConfig {
    fn default() -> Self {
        PcscConfig {
            pcscd_socket: None,
            readers: Vec::new(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            reconnect_interval: DEFAULT_RECONNECT_INTERVAL,
            features: true,
        }
    }
}

impl PcscConfig {
    /// Reads the driver's `config {}` group. Unknown keys (`type`, `name`, `vars`, ...) are
    /// left to chipcardd.
    pub fn from_group(group: &Group) -> Result<PcscConfig, String> {
        let mut config = PcscConfig::default();
        if let Some(path) = group.opt_char("pcscdSocket").map_err(|e| e.to_string())? {
            if path.is_empty() {
                return Err("pcscdSocket: empty path".into());
            }
            config.pcscd_socket = Some(PathBuf::from(path));
        }
        config.readers = group
            .get_chars("readers")
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|p| {
                if p.is_empty() {
                    Err("readers: empty pattern".to_owned())
                } else {
                    Ok(Pattern::new(p))
                }
            })
            .collect::<Result<_, _>>()?;
        if let Some(d) = interval(group, "pollInterval")? {
            config.poll_interval = d;
        }
        if let Some(d) = interval(group, "reconnectInterval")? {
            config.reconnect_interval = d;
        }
        if let Some(word) = group
            .opt_char("readerFeatures")
            .map_err(|e| e.to_string())?
        {
            config.features = match word.to_ascii_lowercase().as_str() {
                "yes" | "true" | "1" | "on" => true,
                "no" | "false" | "0" | "off" => false,
                _ => return Err(format!("readerFeatures: '{word}': expected yes or no")),
            };
        }
        Ok(config)
    }

    /// True when the reader called `name` is this driver's.
    pub fn wants(&self, name: &str) -> bool {
        self.readers.is_empty() || self.readers.iter().any(|p| p.matches(name))
    }
}

fn interval(group: &Group, name: &str) -> Result<Option<Duration>, String> {
    match group.opt_int(name).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(ms) if (MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) => {
            Ok(Some(Duration::from_millis(u64::from(ms.unsigned_abs()))))
        }
        Some(ms) => Err(format!(
            "{name}: {ms}: expected milliseconds from {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}"
        )),
    }
}

/// A reader name pattern: `*` stands for any run of characters, `?` for one character;
/// everything else matches itself (case-sensitive), and the whole name must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<char>);

impl Pattern {
    /// The pattern of this text.
    pub fn new(text: &str) -> Pattern {
        Pattern(text.chars().collect())
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let pattern = &self.0;
        // Iterative wildcard matching with one backtrack point (the last `*`).
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match pattern.get(p) {
                Some('*') => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(&c) if c == '?' || c == name[n] => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        p = sp + 1;
                        n = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let cases = [
            ("*", "anything", true),
            ("*", "", true),
            ("Test Virtual PCD 00 00", "Test Virtual PCD 00 00", true),
            ("Test Virtual PCD 00 00", "Test Virtual PCD 00 01", false),
            ("Test*", "Test Virtual PCD 00 01", true),
            ("*00 00", "Test Virtual PCD 00 00", true),
            ("*00 00", "Test Virtual PCD 00 01", false),
            ("*PCD*", "Test Virtual PCD 00 01", true),
            ("*pcd*", "Test Virtual PCD 00 01", false),
            (
                "REINER SCT cyberJack ?? 00",
                "REINER SCT cyberJack RFID 00",
                false,
            ),
            (
                "REINER SCT cyberJack ???? 00",
                "REINER SCT cyberJack RFID 00",
                true,
            ),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a**", "a", true),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(name),
                expected,
                "'{pattern}' against '{name}'"
            );
        }
    }

    #[test]
    fn reads_the_group() {
        let mut group = Group::new("config")
            .with_char("type", "pcsc")
            .with_char("pcscdSocket", "/tmp/x/pcscd.comm")
            .with_int("pollInterval", 250)
            .with_char("reconnectInterval", "500")
            .with_char("readerFeatures", "no");
        group.set_chars("readers", &["Test*", "*00 01"]);
        let config = PcscConfig::from_group(&group).expect("valid");
        assert_eq!(
            config.pcscd_socket.as_deref(),
            Some(std::path::Path::new("/tmp/x/pcscd.comm"))
        );
        assert_eq!(config.poll_interval, Duration::from_millis(250));
        assert_eq!(config.reconnect_interval, Duration::from_millis(500));
        assert!(!config.features);
        assert!(config.wants("Test Virtual PCD 00 00"));
        assert!(config.wants("Other 00 01"));
        assert!(!config.wants("Other 00 00"));

        let defaults = PcscConfig::from_group(&Group::new("config")).expect("valid");
        assert_eq!(defaults, PcscConfig::default());
        assert!(defaults.wants("any reader"));
    }

    #[test]
    fn rejects_bad_values() {
        let bad = [
            Group::new("config").with_char("pollInterval", "fast"),
            Group::new("config").with_int("pollInterval", 0),
            Group::new("config").with_int("reconnectInterval", 700_000),
            Group::new("config").with_char("pcscdSocket", ""),
            Group::new("config").with_char("readers", ""),
            Group::new("config").with_char("readerFeatures", "maybe"),
            Group::new("config").with_bin("pcscdSocket", vec![1, 2]),
        ];
        for group in bad {
            let e = PcscConfig::from_group(&group).expect_err("invalid");
            assert!(!e.is_empty());
        }
    }
}
