//! The configuration file: a group-format document read into [`Config`].
//!
//! ```text
//! server { socket="..." socketMode="0660" socketGroup="..." driverDir="..."
//!          driverStartTimeout="10000" pingInterval="5000" pingTimeout="5000"
//!          commandTimeout="60000" restartBackoff="1000" restartBackoffMax="60000"
//!          restartMaxFailures="5" maxClients="256" maxRequestsPerClient="64"
//!          clientIdleTimeout="30000" clientReadyTimeout="10000" }
//! cardDir="/etc/chipcard/cards"
//! driver { type="emul" name="..." vars { ... } reader { ... } }   # repeated
//! service { type="cardinfo" name="..." flags="autoload", "silent" idleTimeout="60000" ... }
//! ```
//!
//! Unknown keys at the top and in `server {}` are errors (they are most often typos); a
//! `driver {}` or `service {}` group belongs to its program and is passed to it whole, so
//! only the keys the server itself reads (`type`, `name`; for services also `flags` and
//! `idleTimeout`) are checked here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chipcard_ipc::error::FieldProblem;
use chipcard_ipc::{FieldError, Group};

use crate::error::{Error, Result};

/// The built-in configuration (`etc/chipcardd.conf`).
pub const DEFAULT_CONFIG: &str = include_str!("../../etc/chipcardd.conf");

/// The configuration file read when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/chipcard/chipcardd.conf";

/// The card definitions directory used when `cardDir` is not set and it exists.
pub const DEFAULT_CARD_DIR: &str = "/etc/chipcard/cards";

/// The name used in messages for the built-in configuration.
pub const EMBEDDED_NAME: &str = "<built-in configuration>";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The `server {}` group.
    pub server: ServerConfig,
    /// `cardDir`: where the card definitions are; `None` = the default.
    pub card_dir: Option<PathBuf>,
    /// The `driver {}` groups, in order.
    pub drivers: Vec<DriverConfig>,
    /// The `service {}` groups, in order.
    pub services: Vec<ServiceConfig>,
}

/// The `server {}` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `socket`: the client socket; `None` = the default for this user.
    pub socket: Option<PathBuf>,
    /// `socketMode`: the socket's permission bits (octal in the file), default 0660.
    pub socket_mode: u32,
    /// `socketGroup`: the group the socket is given to, if any.
    pub socket_group: Option<String>,
    /// `driverDir`: where `chipcard-driver-TYPE` programs are; `None` = next to chipcardd.
    pub driver_dir: Option<PathBuf>,
    /// `driverStartTimeout` (ms): how long a driver may take to send `DriverReady`.
    pub driver_start_timeout: Duration,
    /// `pingInterval` (ms): how often drivers are pinged; zero turns pinging off.
    pub ping_interval: Duration,
    /// `pingTimeout` (ms): how long a driver may take to answer a ping.
    pub ping_timeout: Duration,
    /// `commandTimeout` (ms): how long a card command or reset may take in the driver.
    pub command_timeout: Duration,
    /// `restartBackoff` (ms): the first delay before a stopped driver is restarted.
    pub restart_backoff: Duration,
    /// `restartBackoffMax` (ms): the longest restart delay (the delay doubles up to it).
    pub restart_backoff_max: Duration,
    /// `restartMaxFailures`: failures in a row (failed starts, or runs shorter than
    /// `restartBackoffMax`) after which a driver is given up.
    pub restart_max_failures: u32,
    /// `maxClients`: connections served at once; more are answered `Error` 1 and closed.
    pub max_clients: usize,
    /// `maxRequestsPerClient`: requests of one client in progress at once; the client's
    /// further requests are not read until one is answered (back-pressure).
    pub max_requests_per_client: usize,
    /// `clientIdleTimeout` (ms): how long a client may stall in the middle of a frame, or
    /// leave its full queue of answers unread, before it is disconnected.
    pub client_idle_timeout: Duration,
    /// `clientReadyTimeout` (ms): how long a new connection may take to send `ClientReady`
    /// before it is answered `Error` 12 and closed; zero = no limit.
    pub client_ready_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket: None,
            socket_mode: 0o660,
            socket_group: None,
            driver_dir: None,
            driver_start_timeout: Duration::from_millis(10_000),
            ping_interval: Duration::from_millis(5_000),
            ping_timeout: Duration::from_millis(5_000),
            command_timeout: Duration::from_millis(60_000),
            restart_backoff: Duration::from_millis(1_000),
            restart_backoff_max: Duration::from_millis(60_000),
            restart_max_failures: 5,
            max_clients: 256,
            max_requests_per_client: 64,
            client_idle_timeout: Duration::from_millis(30_000),
            client_ready_timeout: Duration::from_millis(10_000),
        }
    }
}

/// One `driver {}` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// `type`: the program is `chipcard-driver-TYPE`.
    pub driver_type: String,
    /// `name`: unique among drivers; default the type (with `-2`, `-3`, ... when repeated).
    pub name: String,
    /// The whole group, sent to the driver as `DriverStart.config`.
    pub group: Group,
}

impl DriverConfig {
    /// The driver's `vars {}` group (empty when absent), read by `GetDriverVar`.
    pub fn vars(&self) -> Group {
        self.group
            .group("vars")
            .cloned()
            .unwrap_or_else(|| Group::new("vars"))
    }
}

/// One `service {}` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// `type`: the program is `chipcard-service-TYPE`.
    pub service_type: String,
    /// `name`: unique among services; default the type (with `-2`, `-3`, ... when repeated).
    pub name: String,
    /// `flags`: `autoload` (started with the server and kept running; otherwise started
    /// at its first `ServiceOpen` and stopped when idle) and `silent` (no `service`
    /// notifications).
    pub flags: ServiceFlags,
    /// `idleTimeout` (ms): how long a service without `autoload` runs without an open
    /// context before it is stopped.
    pub idle_timeout: Duration,
    /// The whole group, sent to the service as `ServiceStart.config`.
    pub group: Group,
}

/// The flags of a service (seed section 4: `client`, `autoload`, `silent`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceFlags {
    /// Started with the server and kept running.
    pub autoload: bool,
    /// No `service:up`/`service:down` notifications.
    pub silent: bool,
}

impl ServiceFlags {
    /// The flag words, as `serviceFlags` carries them.
    pub fn words(self) -> Vec<String> {
        let mut words = Vec::new();
        if self.autoload {
            words.push("autoload".to_owned());
        }
        if self.silent {
            words.push("silent".to_owned());
        }
        words
    }
}

/// The default `idleTimeout` of a service.
pub const DEFAULT_SERVICE_IDLE_TIMEOUT: Duration = Duration::from_millis(60_000);

/// A configuration value that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key as a path from the top (`server/socketMode`, `driver[1]/type`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }

    fn within(mut self, group: &str) -> Self {
        self.key = format!("{group}/{}", self.key);
        self
    }

    /// The error as the crate's error, for the file `path` whose text is `text`: with the
    /// line and column of the key, or else of the nearest group on its path that exists.
    pub fn in_file(self, path: &Path, text: &str) -> Error {
        let mut key = self.key.as_str();
        let position = loop {
            if let Some(found) = chipcard_ipc::locate::position(text, key) {
                break Some(found);
            }
            match key.rsplit_once('/') {
                Some((parent, _)) => key = parent,
                None => break None,
            }
        };
        Error::Config {
            path: path.to_owned(),
            position,
            key: self.key,
            message: self.message,
        }
    }
}

impl From<FieldError> for ConfigError {
    fn from(e: FieldError) -> Self {
        let message = match e.reason {
            FieldProblem::Missing => "missing".to_owned(),
            FieldProblem::Invalid(why) => why,
        };
        ConfigError::new(e.path, message)
    }
}

const TOP_KEYS: &[&str] = &["cardDir"];
const TOP_GROUPS: &[&str] = &["server", "driver", "service"];
const SERVER_KEYS: &[&str] = &[
    "socket",
    "socketMode",
    "socketGroup",
    "driverDir",
    "driverStartTimeout",
    "pingInterval",
    "pingTimeout",
    "commandTimeout",
    "restartBackoff",
    "restartBackoffMax",
    "restartMaxFailures",
    "maxClients",
    "maxRequestsPerClient",
    "clientIdleTimeout",
    "clientReadyTimeout",
];

impl Config {
    /// Parses and checks a configuration text; `path` is used in error messages.
    pub fn from_text(text: &str, path: &Path) -> Result<Config> {
        let doc = chipcard_ipc::parse(text).map_err(|source| Error::ConfigSyntax {
            path: path.to_owned(),
            source,
        })?;
        Config::from_group(&doc).map_err(|e| e.in_file(path, text))
    }

    /// Reads a configuration file.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Config::from_text(&text, path)
    }

    /// The built-in configuration, without the PC/SC driver detection.
    pub fn embedded() -> Result<Config> {
        Config::from_text(DEFAULT_CONFIG, Path::new(EMBEDDED_NAME))
    }

    /// Reads the typed configuration from a parsed document.
    pub fn from_group(doc: &Group) -> Result<Config, ConfigError> {
        for var in doc.variables() {
            if !TOP_KEYS.iter().any(|k| k.eq_ignore_ascii_case(&var.name)) {
                return Err(ConfigError::new(&var.name, "unknown key"));
            }
        }
        for group in doc.all_groups() {
            if !TOP_GROUPS
                .iter()
                .any(|k| k.eq_ignore_ascii_case(&group.name))
            {
                return Err(ConfigError::new(&group.name, "unknown group"));
            }
        }
        let mut servers = doc.groups("server");
        let server = match servers.next() {
            Some(g) => ServerConfig::from_group(g).map_err(|e| e.within("server"))?,
            None => ServerConfig::default(),
        };
        if servers.next().is_some() {
            return Err(ConfigError::new("server", "given more than once"));
        }
        let card_dir = non_empty_path(doc, "cardDir")?;
        let mut drivers: Vec<DriverConfig> = Vec::new();
        for (i, g) in doc.groups("driver").enumerate() {
            let driver = DriverConfig::from_group(g, &drivers)
                .map_err(|e| e.within(&format!("driver[{i}]")))?;
            drivers.push(driver);
        }
        let mut services: Vec<ServiceConfig> = Vec::new();
        for (i, g) in doc.groups("service").enumerate() {
            let service = ServiceConfig::from_group(g, &services)
                .map_err(|e| e.within(&format!("service[{i}]")))?;
            services.push(service);
        }
        Ok(Config {
            server,
            card_dir,
            drivers,
            services,
        })
    }
}

impl ServerConfig {
    fn from_group(g: &Group) -> Result<ServerConfig, ConfigError> {
        if let Some(group) = g.all_groups().next() {
            return Err(ConfigError::new(&group.name, "unknown group"));
        }
        for var in g.variables() {
            if !SERVER_KEYS
                .iter()
                .any(|k| k.eq_ignore_ascii_case(&var.name))
            {
                return Err(ConfigError::new(&var.name, "unknown key"));
            }
        }
        let defaults = ServerConfig::default();
        let socket_mode = match g.var("socketMode") {
            None => defaults.socket_mode,
            Some(v) => {
                let text = v.values.first().map(|v| v.as_text()).unwrap_or_default();
                parse_mode(&text).ok_or_else(|| {
                    ConfigError::new("socketMode", format!("not an octal mode: '{text}'"))
                })?
            }
        };
        let restart_backoff = millis(g, "restartBackoff", defaults.restart_backoff, false)?;
        let restart_backoff_max =
            millis(g, "restartBackoffMax", defaults.restart_backoff_max, false)?;
        if restart_backoff_max < restart_backoff {
            return Err(ConfigError::new(
                "restartBackoffMax",
                "less than restartBackoff",
            ));
        }
        let restart_max_failures = count(g, "restartMaxFailures", defaults.restart_max_failures)?;
        let max_clients = count(g, "maxClients", defaults.max_clients as u32)? as usize;
        let max_requests_per_client = count(
            g,
            "maxRequestsPerClient",
            defaults.max_requests_per_client as u32,
        )? as usize;
        Ok(ServerConfig {
            socket: non_empty_path(g, "socket")?,
            socket_mode,
            socket_group: g
                .opt_char("socketGroup")?
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            driver_dir: non_empty_path(g, "driverDir")?,
            driver_start_timeout: millis(
                g,
                "driverStartTimeout",
                defaults.driver_start_timeout,
                false,
            )?,
            ping_interval: millis(g, "pingInterval", defaults.ping_interval, true)?,
            ping_timeout: millis(g, "pingTimeout", defaults.ping_timeout, false)?,
            command_timeout: millis(g, "commandTimeout", defaults.command_timeout, false)?,
            restart_backoff,
            restart_backoff_max,
            restart_max_failures,
            max_clients,
            max_requests_per_client,
            client_idle_timeout: millis(
                g,
                "clientIdleTimeout",
                defaults.client_idle_timeout,
                false,
            )?,
            client_ready_timeout: millis(
                g,
                "clientReadyTimeout",
                defaults.client_ready_timeout,
                true,
            )?,
        })
    }
}

/// `type` and `name` of a driver or service group (`what`: "driver", "service"), checked
/// against the names of the groups before it; and the group renamed `config`.
fn type_and_name(
    g: &Group,
    what: &str,
    earlier: &[&str],
) -> Result<(String, String, Group), ConfigError> {
    let kind = g.get_char("type")?.to_owned();
    if kind.is_empty()
        || !kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ConfigError::new(
            "type",
            format!("'{kind}' is not a {what} type (letters, digits, '-', '_')"),
        ));
    }
    let taken = |name: &str| earlier.iter().any(|d| d.eq_ignore_ascii_case(name));
    let name = match g.opt_char("name")? {
        Some("") => return Err(ConfigError::new("name", "empty")),
        Some(name) if taken(name) => {
            return Err(ConfigError::new(
                "name",
                format!("'{name}' is used by another {what}"),
            ))
        }
        Some(name) => name.to_owned(),
        None => {
            let mut name = kind.clone();
            let mut n = 1;
            while taken(&name) {
                n += 1;
                name = format!("{kind}-{n}");
            }
            name
        }
    };
    let mut group = g.clone();
    group.name = "config".to_owned();
    Ok((kind, name, group))
}

impl DriverConfig {
    fn from_group(g: &Group, earlier: &[DriverConfig]) -> Result<DriverConfig, ConfigError> {
        let names: Vec<&str> = earlier.iter().map(|d| d.name.as_str()).collect();
        let (driver_type, name, group) = type_and_name(g, "driver", &names)?;
        Ok(DriverConfig {
            driver_type,
            name,
            group,
        })
    }
}

impl ServiceConfig {
    fn from_group(g: &Group, earlier: &[ServiceConfig]) -> Result<ServiceConfig, ConfigError> {
        let names: Vec<&str> = earlier.iter().map(|d| d.name.as_str()).collect();
        let (service_type, name, group) = type_and_name(g, "service", &names)?;
        let mut flags = ServiceFlags::default();
        for word in g.get_chars("flags").unwrap_or_default() {
            match word.trim().to_ascii_lowercase().as_str() {
                "autoload" => flags.autoload = true,
                "silent" => flags.silent = true,
                "client" => {
                    return Err(ConfigError::new(
                        "flags",
                        "'client' marks a service provided by a client connection; it is \
                         set by the server, never configured (use autoload, silent)",
                    ))
                }
                "" => {}
                other => {
                    return Err(ConfigError::new(
                        "flags",
                        format!("unknown flag '{other}' (autoload, silent)"),
                    ))
                }
            }
        }
        let idle_timeout = millis(g, "idleTimeout", DEFAULT_SERVICE_IDLE_TIMEOUT, false)?;
        Ok(ServiceConfig {
            service_type,
            name,
            flags,
            idle_timeout,
            group,
        })
    }
}

/// Parses an octal permission mode such as `0660` or `660`.
fn parse_mode(text: &str) -> Option<u32> {
    let text = text.trim();
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

fn non_empty_path(g: &Group, key: &str) -> Result<Option<PathBuf>, ConfigError> {
    Ok(g.opt_char(key)?
        .filter(|s| !s.is_empty())
        .map(PathBuf::from))
}

/// A positive count (at least 1).
fn count(g: &Group, key: &str, default: u32) -> Result<u32, ConfigError> {
    match g.opt_int(key)? {
        None => Ok(default),
        Some(n) if n >= 1 => Ok(n.unsigned_abs()),
        Some(n) => Err(ConfigError::new(
            key,
            format!("{n} is not a positive count"),
        )),
    }
}

fn millis(g: &Group, key: &str, default: Duration, zero_ok: bool) -> Result<Duration, ConfigError> {
    match g.opt_int(key)? {
        None => Ok(default),
        Some(ms) if ms < 0 || (ms == 0 && !zero_ok) => Err(ConfigError::new(
            key,
            format!("{ms} is not a positive number of milliseconds"),
        )),
        Some(ms) => Ok(Duration::from_millis(u64::from(ms.unsigned_abs()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chipcard_ipc::Value;

    fn doc() -> Group {
        Group::root()
    }

    #[test]
    fn the_built_in_configuration_is_valid() {
        let c = Config::embedded().expect("valid");
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].service_type, "cardinfo");
        assert_eq!(c.drivers.len(), 1);
        assert_eq!(c.drivers[0].driver_type, "emul");
        assert_eq!(c.drivers[0].group.groups("reader").count(), 1);
        assert_eq!(c.server.socket, None);
        assert_eq!(c.server.socket_mode, 0o660);
    }

    #[test]
    fn syntax_errors_carry_file_line_and_column() {
        let e = Config::from_text("server {\n  socket=\"x\n}\n", Path::new("c.conf"))
            .expect_err("unterminated quote");
        assert!(e.to_string().starts_with("c.conf:2:"), "{e}");
        let e = Config::from_text("server {\n  sockte=\"/x\"\n}\n", Path::new("c.conf"))
            .expect_err("unknown key");
        assert_eq!(e.to_string(), "c.conf:2:3: server/sockte: unknown key");
    }

    #[test]
    fn value_errors_carry_file_line_and_column_too() {
        let text = "server {\n  socketMode=\"abc\"\n}\n";
        let e = Config::from_text(text, Path::new("c.conf")).expect_err("bad mode");
        assert_eq!(
            e.to_string(),
            "c.conf:2:3: server/socketMode: not an octal mode: 'abc'"
        );
        // A missing key: where the group that lacks it begins.
        let text = "driver {\n  type=\"emul\"\n  name=\"a\"\n}\n\ndriver {\n  name=\"b\"\n}\n";
        let e = Config::from_text(text, Path::new("c.conf")).expect_err("no type");
        assert_eq!(e.to_string(), "c.conf:6:1: driver[1]/type: missing");
    }

    #[test]
    fn empty_document_gives_defaults() {
        let c = Config::from_group(&doc()).expect("valid");
        assert_eq!(c.server, ServerConfig::default());
        assert_eq!(c.server.client_ready_timeout, Duration::from_secs(10));
        assert!(c.drivers.is_empty());
        assert_eq!(c.card_dir, None);
    }

    #[test]
    fn server_keys_are_read() {
        let server = Group::new("server")
            .with_char("socket", "/tmp/x.sock")
            .with_char("SOCKETMODE", "0600")
            .with_char("socketGroup", "scard")
            .with_char("driverDir", "/usr/lib/chipcard")
            .with_int("driverStartTimeout", 2000)
            .with_char("pingInterval", "0")
            .with_char("clientReadyTimeout", "0");
        let c = Config::from_group(&doc().with_group(server).with_char("cardDir", "/c"))
            .expect("valid");
        assert_eq!(c.server.socket, Some(PathBuf::from("/tmp/x.sock")));
        assert_eq!(c.server.socket_mode, 0o600);
        assert_eq!(c.server.socket_group.as_deref(), Some("scard"));
        assert_eq!(
            c.server.driver_dir,
            Some(PathBuf::from("/usr/lib/chipcard"))
        );
        assert_eq!(c.server.driver_start_timeout, Duration::from_secs(2));
        assert_eq!(c.server.ping_interval, Duration::ZERO);
        assert_eq!(c.server.client_ready_timeout, Duration::ZERO);
        assert_eq!(c.card_dir, Some(PathBuf::from("/c")));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                doc().with_group(Group::new("server").with_char("socketMode", "0999")),
                "server/socketMode",
                "not an octal mode: '0999'",
            ),
            (
                doc().with_group(Group::new("server").with_char("sockte", "/x")),
                "server/sockte",
                "unknown key",
            ),
            (
                doc().with_group(Group::new("server").with_char("pingTimeout", "soon")),
                "server/pingTimeout",
                "not an int: 'soon'",
            ),
            (
                doc().with_group(Group::new("server").with_int("driverStartTimeout", 0)),
                "server/driverStartTimeout",
                "0 is not a positive number of milliseconds",
            ),
            (doc().with_char("cardDri", "/x"), "cardDri", "unknown key"),
            (
                doc().with_group(Group::new("driver").with_char("name", "x")),
                "driver[0]/type",
                "missing",
            ),
            (
                doc().with_group(Group::new("driver").with_char("type", "../evil")),
                "driver[0]/type",
                "'../evil' is not a driver type (letters, digits, '-', '_')",
            ),
        ];
        for (d, key, message) in cases {
            let e = Config::from_group(&d).expect_err("invalid");
            assert_eq!((e.key.as_str(), e.message.as_str()), (key, message));
        }
    }

    #[test]
    fn driver_names_default_to_the_type_and_stay_unique() {
        let mut d = doc();
        for _ in 0..2 {
            d.add_group(Group::new("driver").with_char("type", "emul"));
        }
        d.add_group(
            Group::new("driver")
                .with_char("type", "pcsc")
                .with_group(Group::new("vars").with_char("a", "b")),
        );
        let c = Config::from_group(&d).expect("valid");
        let names: Vec<&str> = c.drivers.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, vec!["emul", "emul-2", "pcsc"]);
        assert_eq!(c.drivers[2].vars().get_char("a").ok(), Some("b"));
        assert_eq!(c.drivers[2].group.name, "config");

        let dup = doc()
            .with_group(
                Group::new("driver")
                    .with_char("type", "emul")
                    .with_char("name", "x"),
            )
            .with_group(
                Group::new("driver")
                    .with_char("type", "emul")
                    .with_char("name", "X"),
            );
        let e = Config::from_group(&dup).expect_err("duplicate");
        assert_eq!(e.key, "driver[1]/name");
    }

    #[test]
    fn service_groups_are_read_and_checked() {
        let d = doc()
            .with_group(
                Group::new("service")
                    .with_char("type", "cardinfo")
                    .with_char("flags", "AUTOLOAD")
                    .with_char("atrList", "/x"),
            )
            .with_group(
                Group::new("service")
                    .with_char("type", "cardinfo")
                    .with_int("idleTimeout", 250),
            );
        let c = Config::from_group(&d).expect("valid");
        assert_eq!(c.services[0].name, "cardinfo");
        assert_eq!(c.services[1].name, "cardinfo-2");
        assert!(c.services[0].flags.autoload && !c.services[0].flags.silent);
        assert_eq!(c.services[0].flags.words(), ["autoload"]);
        assert_eq!(c.services[0].idle_timeout, DEFAULT_SERVICE_IDLE_TIMEOUT);
        assert_eq!(c.services[1].idle_timeout, Duration::from_millis(250));
        assert_eq!(c.services[0].group.get_char("atrList").ok(), Some("/x"));
        let bad = [
            (
                Group::new("service")
                    .with_char("type", "x")
                    .with_char("flags", "client"),
                "service[0]/flags",
            ),
            (
                Group::new("service")
                    .with_char("type", "x")
                    .with_char("flags", "loud"),
                "service[0]/flags",
            ),
            (
                Group::new("service").with_char("type", "../x"),
                "service[0]/type",
            ),
            (
                Group::new("service")
                    .with_char("type", "x")
                    .with_int("idleTimeout", 0),
                "service[0]/idleTimeout",
            ),
        ];
        for (g, key) in bad {
            let e = Config::from_group(&doc().with_group(g)).expect_err("invalid");
            assert_eq!(e.key, key, "{e:?}");
        }
    }

    #[test]
    fn restart_keys_are_read_and_checked() {
        let server = Group::new("server")
            .with_int("restartBackoff", 50)
            .with_int("restartBackoffMax", 200)
            .with_int("restartMaxFailures", 2);
        let c = Config::from_group(&doc().with_group(server)).expect("valid");
        assert_eq!(c.server.restart_backoff, Duration::from_millis(50));
        assert_eq!(c.server.restart_backoff_max, Duration::from_millis(200));
        assert_eq!(c.server.restart_max_failures, 2);
        let limits = Group::new("server")
            .with_int("maxClients", 3)
            .with_int("maxRequestsPerClient", 4)
            .with_int("clientIdleTimeout", 500);
        let c = Config::from_group(&doc().with_group(limits)).expect("valid");
        assert_eq!(c.server.max_clients, 3);
        assert_eq!(c.server.max_requests_per_client, 4);
        assert_eq!(c.server.client_idle_timeout, Duration::from_millis(500));
        let bad = [
            Group::new("server").with_int("restartMaxFailures", 0),
            Group::new("server")
                .with_int("restartBackoff", 500)
                .with_int("restartBackoffMax", 100),
            Group::new("server").with_int("restartBackoff", 0),
            Group::new("server").with_int("maxClients", 0),
            Group::new("server").with_int("maxRequestsPerClient", -1),
            Group::new("server").with_int("clientIdleTimeout", 0),
        ];
        for g in bad {
            assert!(Config::from_group(&doc().with_group(g)).is_err());
        }
    }

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("0660"), Some(0o660));
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("0o755"), Some(0o755));
        assert_eq!(parse_mode("8"), None);
        assert_eq!(parse_mode(""), None);
        let g = Group::new("server").with_values_for_test("socketMode", Value::Int(660));
        assert_eq!(
            ServerConfig::from_group(&g).map(|s| s.socket_mode).ok(),
            Some(0o660)
        );
    }

    trait WithValues {
        fn with_values_for_test(self, name: &str, v: Value) -> Self;
    }
    impl WithValues for Group {
        fn with_values_for_test(mut self, name: &str, v: Value) -> Self {
            self.set_values(name, vec![v]);
            self
        }
    }
}
