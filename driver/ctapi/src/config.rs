//! The ctapi driver's configuration group (README.md documents the keys).

use std::path::PathBuf;
use std::time::Duration;

use chipcard_ipc::Group;

/// Default for `pollInterval`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Default for `callTimeout`.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(5000);

const MIN_MS: i32 = 10;
const MAX_MS: i32 = 600_000;
const MAX_SLOTS: i32 = 14;

/// The driver's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtapiConfig {
    /// The CT-API library to load.
    pub library: PathBuf,
    /// The card terminals.
    pub readers: Vec<ReaderConfig>,
    /// How often each terminal is asked GET STATUS.
    pub poll_interval: Duration,
    /// How long one CT-API call may take.
    pub call_timeout: Duration,
    /// Environment variables set before the library is loaded (`libraryEnv { }`).
    pub library_env: Vec<(String, String)>,
}

/// One `reader { }` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderConfig {
    /// The reader's name.
    pub name: String,
    /// The CT-API logical terminal number (`ctn`).
    pub ctn: u16,
    /// The CT-API port number (`pn`).
    pub port: u16,
    /// Reader flags, upper-cased.
    pub flags: Vec<String>,
    /// How many card slots.
    pub slots: i32,
}

fn field<T>(r: Result<T, chipcard_ipc::FieldError>, place: &str) -> Result<T, String> {
    r.map_err(|e| format!("{place}: {e}"))
}

fn number(
    group: &Group,
    name: &str,
    place: &str,
    range: (i32, i32),
) -> Result<Option<i32>, String> {
    match field(group.opt_int(name), place)? {
        None => Ok(None),
        Some(n) if (range.0..=range.1).contains(&n) => Ok(Some(n)),
        Some(n) => Err(format!(
            "{place}{name}: {n}: expected {} to {}",
            range.0, range.1
        )),
    }
}

fn millis(group: &Group, name: &str) -> Result<Option<Duration>, String> {
    Ok(number(group, name, "", (MIN_MS, MAX_MS))?
        .map(|ms| Duration::from_millis(u64::from(ms.unsigned_abs()))))
}

impl CtapiConfig {
    /// Reads the driver's `config {}` group. Keys chipcardd reads (`type`, `name`, `vars`)
    /// are ignored.
    pub fn from_group(group: &Group) -> Result<CtapiConfig, String> {
        let library = match field(group.opt_char("libraryFile"), "libraryFile")? {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => return Err("libraryFile: required (the path of the CT-API library)".into()),
        };
        let poll_interval = millis(group, "pollInterval")?.unwrap_or(DEFAULT_POLL_INTERVAL);
        let call_timeout = millis(group, "callTimeout")?.unwrap_or(DEFAULT_CALL_TIMEOUT);
        let mut library_env = Vec::new();
        if let Some(env) = group.group("libraryEnv") {
            for var in env.variables() {
                let value = var.values.first().map(|v| v.as_text().into_owned());
                let name = &var.name;
                if name.is_empty() || name.contains('=') {
                    return Err(format!("libraryEnv/{name}: not a variable name"));
                }
                match value {
                    Some(v) if !v.contains('\0') => library_env.push((name.clone(), v)),
                    _ => return Err(format!("libraryEnv/{name}: expected one text value")),
                }
            }
        }
        let mut readers: Vec<ReaderConfig> = Vec::new();
        for (index, g) in group.groups("reader").enumerate() {
            let place = format!("reader[{index}]/");
            let name = match field(g.opt_char("name"), &place)? {
                Some(n) if !n.is_empty() => n.to_owned(),
                _ => format!("ctapi-{index}"),
            };
            let default_ctn = i32::try_from(index + 1).unwrap_or(i32::MAX);
            let ctn = number(g, "ctn", &place, (0, 65_535))?.unwrap_or(default_ctn);
            let port = number(g, "port", &place, (0, 65_535))?.unwrap_or(1);
            let slots = number(g, "slots", &place, (1, MAX_SLOTS))?.unwrap_or(1);
            let flags = field(g.get_chars("flags"), &place)?
                .into_iter()
                .map(str::to_ascii_uppercase)
                .collect();
            let ctn = u16::try_from(ctn).map_err(|_| format!("{place}ctn: out of range"))?;
            let port = u16::try_from(port).map_err(|_| format!("{place}port: out of range"))?;
            if readers.iter().any(|r| r.ctn == ctn) {
                return Err(format!("{place}ctn: {ctn} is used by another reader"));
            }
            if readers.iter().any(|r| r.name == name) {
                return Err(format!("{place}name: '{name}' is used by another reader"));
            }
            readers.push(ReaderConfig {
                name,
                ctn,
                port,
                flags,
                slots,
            });
        }
        Ok(CtapiConfig {
            library,
            readers,
            poll_interval,
            call_timeout,
            library_env,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_defaults_and_errors() {
        let mut r = Group::new("reader")
            .with_char("name", "A")
            .with_char("port", "3");
        r.set_chars("flags", &["keypad"]);
        let g = Group::new("config")
            .with_char("libraryFile", "/x.so")
            .with_char("callTimeout", "700")
            .with_group(Group::new("libraryEnv").with_char("CT_DEBUG", "1"))
            .with_group(r)
            .with_group(Group::new("reader").with_char("slots", "2"));
        let c = CtapiConfig::from_group(&g).expect("valid");
        assert_eq!(c.library, PathBuf::from("/x.so"));
        assert_eq!(c.poll_interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(c.call_timeout, Duration::from_millis(700));
        assert_eq!(c.library_env, vec![("CT_DEBUG".to_owned(), "1".to_owned())]);
        assert_eq!(
            c.readers[0],
            ReaderConfig {
                name: "A".into(),
                ctn: 1,
                port: 3,
                flags: vec!["KEYPAD".into()],
                slots: 1
            }
        );
        assert_eq!(
            (
                c.readers[1].name.as_str(),
                c.readers[1].ctn,
                c.readers[1].slots
            ),
            ("ctapi-1", 2, 2)
        );

        let e = CtapiConfig::from_group(&Group::new("config")).expect_err("no library");
        assert!(e.starts_with("libraryFile"), "{e}");
        let g = Group::new("config")
            .with_char("libraryFile", "/x.so")
            .with_group(Group::new("reader").with_char("ctn", "1"))
            .with_group(Group::new("reader").with_char("ctn", "1"));
        let e = CtapiConfig::from_group(&g).expect_err("same ctn");
        assert!(e.starts_with("reader[1]/ctn"), "{e}");
        let g = Group::new("config")
            .with_char("libraryFile", "/x.so")
            .with_char("pollInterval", "1");
        assert!(CtapiConfig::from_group(&g).is_err());
    }
}
