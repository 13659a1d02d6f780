//! From command-line options to a [`Setup`]: which configuration file, the built-in
//! default with PC/SC detection, the socket path, the driver directory and the card
//! definitions.

use std::path::{Path, PathBuf};

use chipcard_ipc::Group;
use tracing::info;

use crate::cardtypes::CardTypeRegistry;
use crate::config::{Config, DriverConfig, DEFAULT_CARD_DIR, DEFAULT_CONFIG_PATH};
use crate::error::{Error, Result};
use crate::server::Setup;
use crate::supervisor::driver_program;

/// The pcscd socket used when `PCSCLITE_CSOCK_NAME` is not set.
pub const PCSCD_SOCKET: &str = "/run/pcscd/pcscd.comm";

/// What the command line chose.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--socket PATH`.
    pub socket: Option<PathBuf>,
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file.
    File(PathBuf),
    /// The built-in default.
    Embedded,
}

/// Reads `--config FILE`, else [`DEFAULT_CONFIG_PATH`] if it exists, else the built-in
/// configuration (plus a PC/SC driver when pcscd and its driver program are there).
pub fn load_config(explicit: Option<&Path>) -> Result<(Config, ConfigSource)> {
    if let Some(path) = explicit {
        return Ok((
            Config::from_file(path)?,
            ConfigSource::File(path.to_owned()),
        ));
    }
    let default = Path::new(DEFAULT_CONFIG_PATH);
    if default.exists() {
        return Ok((
            Config::from_file(default)?,
            ConfigSource::File(default.to_owned()),
        ));
    }
    info!("{DEFAULT_CONFIG_PATH} does not exist; using the built-in configuration");
    let mut config = Config::embedded()?;
    let driver_dir = driver_dir(&config)?;
    if let Some(pcsc) = detect_pcsc(&driver_dir, &config.drivers) {
        config.drivers.push(pcsc);
    }
    Ok((config, ConfigSource::Embedded))
}

/// The built-in PC/SC driver, if pcscd runs and `chipcard-driver-pcsc` is installed.
fn detect_pcsc(driver_dir: &Path, existing: &[DriverConfig]) -> Option<DriverConfig> {
    let socket = std::env::var_os("PCSCLITE_CSOCK_NAME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PCSCD_SOCKET));
    if !socket.exists() {
        info!(socket = %socket.display(), "no pcscd socket; not adding a PC/SC driver");
        return None;
    }
    let program = driver_program(driver_dir, "pcsc");
    if !program.exists() {
        info!(program = %program.display(), "pcscd runs but its driver program is not installed; not adding a PC/SC driver");
        return None;
    }
    if existing.iter().any(|d| d.name.eq_ignore_ascii_case("pcsc")) {
        return None;
    }
    info!(socket = %socket.display(), "pcscd found; adding a PC/SC driver");
    Some(DriverConfig {
        driver_type: "pcsc".to_owned(),
        name: "pcsc".to_owned(),
        group: Group::new("config")
            .with_char("type", "pcsc")
            .with_char("name", "pcsc"),
    })
}

/// `driverDir`, or the directory of the running executable.
pub fn driver_dir(config: &Config) -> Result<PathBuf> {
    if let Some(dir) = &config.server.driver_dir {
        return Ok(dir.clone());
    }
    let exe =
        std::env::current_exe().map_err(|e| Error::io("cannot find chipcardd's own path", e))?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

/// The card definitions: `cardDir`, else [`DEFAULT_CARD_DIR`] if it exists, else built in.
pub fn card_types(config: &Config) -> Result<CardTypeRegistry> {
    let dir = match &config.card_dir {
        Some(dir) => dir.clone(),
        None if Path::new(DEFAULT_CARD_DIR).is_dir() => PathBuf::from(DEFAULT_CARD_DIR),
        None => return Ok(CardTypeRegistry::embedded()),
    };
    CardTypeRegistry::load_dir(&dir).map_err(|e| Error::CardTypes {
        path: dir.clone(),
        message: e.to_string(),
    })
}

/// Everything the server needs, from the options.
pub fn resolve(options: &Options) -> Result<Setup> {
    let (config, source) = load_config(options.config.as_deref())?;
    if let ConfigSource::File(path) = &source {
        info!(config = %path.display(), "configuration read");
    }
    let socket = options
        .socket
        .clone()
        .or_else(|| config.server.socket.clone())
        .unwrap_or_else(crate::socket::default_path);
    let driver_dir = driver_dir(&config)?;
    let cardtypes = card_types(&config)?;
    Ok(Setup {
        config,
        socket,
        driver_dir,
        cardtypes,
    })
}

/// A few lines describing a valid configuration (for `check-config`).
pub fn summary(config: &Config) -> String {
    let s = &config.server;
    let mut out = String::new();
    let socket = s.socket.as_ref().map_or_else(
        || format!("{} (default)", crate::socket::default_path().display()),
        |p| p.display().to_string(),
    );
    out.push_str(&format!("socket: {socket}, mode {:04o}", s.socket_mode));
    if let Some(g) = &s.socket_group {
        out.push_str(&format!(", group {g}"));
    }
    out.push('\n');
    out.push_str(&format!(
        "driverDir: {}\n",
        s.driver_dir.as_ref().map_or_else(
            || "(directory of chipcardd)".to_owned(),
            |p| p.display().to_string()
        )
    ));
    out.push_str(&format!(
        "timeouts: driverStart {} ms, ping every {} ms (timeout {} ms), command {} ms\n",
        s.driver_start_timeout.as_millis(),
        s.ping_interval.as_millis(),
        s.ping_timeout.as_millis(),
        s.command_timeout.as_millis()
    ));
    out.push_str(&format!(
        "cardDir: {}\n",
        config
            .card_dir
            .as_ref()
            .map_or_else(|| "(default)".to_owned(), |p| p.display().to_string())
    ));
    out.push_str(&format!("drivers: {}\n", config.drivers.len()));
    for d in &config.drivers {
        let readers = d.group.groups("reader").count();
        out.push_str(&format!(
            "  {} (type {}, {} reader group{})\n",
            d.name,
            d.driver_type,
            readers,
            if readers == 1 { "" } else { "s" }
        ));
    }
    out.push_str(&format!("services: {}\n", config.services.len()));
    for s in &config.services {
        let flags = s.flags.words();
        out.push_str(&format!(
            "  {} (type {}, {})\n",
            s.name,
            s.service_type,
            if flags.is_empty() {
                format!(
                    "started on demand, idle timeout {} ms",
                    s.idle_timeout.as_millis()
                )
            } else {
                format!("flags {}", flags.join(", "))
            }
        ));
    }
    out
}
