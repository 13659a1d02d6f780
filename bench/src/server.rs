//! A chipcardd of the bench's own, on a temporary configuration.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chipcard_client::{Client, ConnectOptions};

/// chipcardd's `maxClients` for the bench: above the 10,000 idle clients of part d.
const MAX_CLIENTS: u32 = 20_000;

/// One emulated driver: its name, readers (each with a card unless `empty`) and an
/// optional control socket.
#[derive(Debug, Clone)]
pub struct EmulDriver {
    /// The driver's name.
    pub name: String,
    /// How many readers.
    pub readers: usize,
    /// Whether the readers start without cards.
    pub empty: bool,
    /// Whether to create a control socket (`DIR/NAME.ctl`).
    pub control: bool,
}

impl EmulDriver {
    /// `readers` readers, each holding a card.
    pub fn with_cards(name: &str, readers: usize) -> EmulDriver {
        EmulDriver {
            name: name.to_owned(),
            readers,
            empty: false,
            control: false,
        }
    }
}

/// A running chipcardd, killed on drop.
pub struct Chipcardd {
    child: Child,
    /// Its client socket.
    pub socket: PathBuf,
    /// The temporary directory with the configuration and sockets.
    pub dir: tempfile::TempDir,
    /// When the process was started.
    pub started: Instant,
}

/// The configuration text for `drivers` (emulated) plus `extra` driver groups.
pub fn config(dir: &Path, bin_dir: &Path, drivers: &[EmulDriver], extra: &str) -> String {
    let mut text = format!(
        "server {{\n  socket=\"{}\"\n  driverDir=\"{}\"\n  pingInterval=\"0\"\n  \
         maxClients=\"{MAX_CLIENTS}\"\n  clientIdleTimeout=\"3600000\"\n}}\n",
        dir.join("chipcardd.sock").display(),
        bin_dir.display()
    );
    for d in drivers {
        let _ = writeln!(text, "driver {{\n  type=\"emul\"\n  name=\"{}\"", d.name);
        if d.control {
            let _ = writeln!(
                text,
                "  controlSocket=\"{}\"",
                dir.join(format!("{}.ctl", d.name)).display()
            );
        }
        for r in 0..d.readers {
            let _ = writeln!(text, "  reader {{\n    name=\"{}-{r}\"", d.name);
            if !d.empty {
                text.push_str("    card {\n      slot=\"0\"\n    }\n");
            }
            text.push_str("  }\n");
        }
        text.push_str("}\n");
    }
    text.push_str(extra);
    text
}

impl Chipcardd {
    /// Writes the configuration and starts chipcardd (without waiting for it).
    pub fn spawn(bin_dir: &Path, drivers: &[EmulDriver], extra: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("chipcard-bench-")
            .tempdir()
            .context("temporary directory")?;
        let conf = dir.path().join("chipcardd.conf");
        std::fs::write(&conf, config(dir.path(), bin_dir, drivers, extra))?;
        let program = bin_dir.join("chipcardd");
        let started = Instant::now();
        let child = Command::new(&program)
            .arg("--config")
            .arg(&conf)
            .args(["--log-level", "warn"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Chipcardd {
            child,
            socket: dir.path().join("chipcardd.sock"),
            dir,
            started,
        })
    }

    /// Starts chipcardd and waits until `readers` readers are listed.
    pub async fn start(
        bin_dir: &Path,
        drivers: &[EmulDriver],
        extra: &str,
        readers: usize,
    ) -> anyhow::Result<Self> {
        let mut server = Chipcardd::spawn(bin_dir, drivers, extra)?;
        server.wait_ready(readers, Duration::from_secs(30)).await?;
        Ok(server)
    }

    /// Polls until the socket answers `ClientReady` and `ListReaders` shows `readers`
    /// readers; returns the connected client.
    pub async fn wait_ready(&mut self, readers: usize, limit: Duration) -> anyhow::Result<Client> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("chipcardd exited: {status}");
            }
            if let Ok(client) = Client::connect(self.options("bench ready")).await {
                loop {
                    if client.readers().await?.len() >= readers {
                        return Ok(client);
                    }
                    if Instant::now() > deadline {
                        bail!("chipcardd did not list {readers} readers in time");
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            if Instant::now() > deadline {
                bail!("chipcardd's socket did not answer in time");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Connect options for this server.
    pub fn options(&self, app: &str) -> ConnectOptions {
        ConnectOptions::new(app).socket(&self.socket)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A driver's control socket.
    pub fn control_socket(&self, driver: &str) -> PathBuf {
        self.dir.path().join(format!("{driver}.ctl"))
    }

    /// VmRSS of chipcardd in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

impl Drop for Chipcardd {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
