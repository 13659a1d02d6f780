//! An isolated pcscd with vpcd readers, and chipcard's virtual cards in them.
//!
//! pcscd 1.9.9 serves on its compiled-in socket and ignores `PCSCLITE_CSOCK_NAME`, but it
//! accepts a listening socket through systemd socket activation (`LISTEN_FDS=1`,
//! `LISTEN_PID`, descriptor 3). [`Pcscd`] binds and listens on a Unix socket in a temporary
//! directory and starts pcscd through `/bin/sh`, which moves the socket from its standard
//! input to descriptor 3, sets `LISTEN_PID=$$` and `exec`s pcscd, so the pid is pcscd's
//! (no `unsafe` pre-exec hook and no `systemd-socket-activate` needed). `-c DIR` points
//! pcscd at a reader.conf directory with one vpcd entry; vpcd makes two readers of it,
//! "Test Virtual PCD 00 00" on TCP port P and "Test Virtual PCD 00 01" on P+1. Clients,
//! the pcsc driver included, find this pcscd with `PCSCLITE_CSOCK_NAME` (the driver's
//! `pcscdSocket`).

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chipcard_emulcard::{CardConfig, EmulCard};
use chipcard_ipc::Group;
use chipcard_vpcd_card::{RunningCard, VirtualCard};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// vsmartcard's IFD handler for pcscd.
pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
/// The reader entry's friendly name; pcscd appends " 00 00" and " 00 01".
pub const FRIENDLY_NAME: &str = "Test Virtual PCD";
/// The first reader, the one cards are inserted into.
pub const READER_0: &str = "Test Virtual PCD 00 00";
/// The second reader (no card).
pub const READER_1: &str = "Test Virtual PCD 00 01";
/// How long pcscd may take to notice a card (it polls about every 400 ms).
pub const CARD_TIMEOUT: Duration = Duration::from_secs(3);

const INSTALL: &str = "install pcscd vsmartcard-vpcd (scripts/install-deps does; CI runs it)";

/// pcscd's path; fails the test with what to install when pcscd or vpcd is missing.
pub fn require_pcscd() -> PathBuf {
    let pcscd = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("pcscd"))
        .find(|p| p.is_file());
    let Some(pcscd) = pcscd else {
        panic!("pcscd not found (PATH, /usr/sbin): {INSTALL}");
    };
    assert!(
        Path::new(VPCD_DRIVER).exists(),
        "{VPCD_DRIVER} not found: {INSTALL}"
    );
    pcscd
}

/// A TCP port P with P+1 free as well (vpcd listens on both), on all addresses.
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind("0.0.0.0:0").expect("bind a free port");
        let port = first.local_addr().expect("local address").port();
        if port == u16::MAX {
            continue;
        }
        if TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of TCP ports")
}

/// True when something listens on TCP `port` (read from /proc, without connecting: a
/// connection to vpcd's port would be a card).
fn listening(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&wanted) && fields[3] == "0A"
            })
        })
    })
}

/// One pcscd of the test's own.
pub struct Pcscd {
    dir: tempfile::TempDir,
    pcscd: PathBuf,
    /// The socket clients use (`PCSCLITE_CSOCK_NAME`, the driver's `pcscdSocket`).
    pub socket: PathBuf,
    /// vpcd's port for [`READER_0`] (P+1 is [`READER_1`]'s).
    pub port: u16,
    child: Option<Child>,
    starts: u32,
    /// Whether reader.conf has the vpcd entry.
    with_readers: bool,
}

impl Pcscd {
    /// Writes the configuration and starts pcscd; returns when its readers listen.
    pub fn start() -> Pcscd {
        let mut pcscd = Pcscd::prepare();
        pcscd.launch();
        pcscd
    }

    /// Starts a pcscd whose reader.conf directory is empty: it has no readers.
    pub fn start_without_readers() -> Pcscd {
        let mut pcscd = Pcscd::prepare();
        fs::write(pcscd.dir.path().join("reader.conf.d").join("vpcd"), "").expect("reader.conf");
        pcscd.with_readers = false;
        pcscd.launch();
        pcscd
    }

    /// Writes the configuration without starting pcscd.
    pub fn prepare() -> Pcscd {
        let pcscd = require_pcscd();
        let dir = tempfile::Builder::new()
            .prefix("chipcard-pcscd-")
            .tempdir()
            .expect("temporary directory");
        let port = free_port_pair();
        let conf = dir.path().join("reader.conf.d");
        fs::create_dir(&conf).expect("reader.conf.d");
        fs::write(
            conf.join("vpcd"),
            format!(
                "FRIENDLYNAME \"{FRIENDLY_NAME}\"\nDEVICENAME   /dev/null:0x{port:04X}\nLIBPATH      {VPCD_DRIVER}\nCHANNELID    0x{port:04X}\n"
            ),
        )
        .expect("reader.conf");
        Pcscd {
            socket: dir.path().join("pcscd.comm"),
            dir,
            pcscd,
            port,
            child: None,
            starts: 0,
            with_readers: true,
        }
    }

    /// Starts pcscd (again) on the same socket and ports.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "pcscd is running already");
        let _ = fs::remove_file(&self.socket);
        let listener = UnixListener::bind(&self.socket).expect("bind pcscd's socket");
        self.starts += 1;
        let log = fs::File::create(self.log_path()).expect("pcscd log");
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"exec 3<&0 0</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -f -c "$1""#)
            .arg(&self.pcscd)
            .arg(self.dir.path().join("reader.conf.d"))
            .env_remove("LISTEN_FDNAMES")
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.pcscd.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.with_readers && !(listening(self.port) && listening(self.port + 1)) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("pcscd exited ({status}); its log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "pcscd's vpcd readers do not listen on {} and {}; log:\n{}",
                self.port,
                self.port + 1,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // A client must be able to talk to it.
        StdUnixStream::connect(&self.socket).expect("pcscd's socket accepts");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("pcscd-{}.log", self.starts))
    }

    /// What pcscd wrote.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills pcscd with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops pcscd with SIGTERM (SIGKILL after 3 s).
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The address a virtual card connects to for [`READER_0`].
    pub fn card_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Inserts a card into [`READER_0`].
    pub fn insert(&self, config: CardConfig) -> RunningCard {
        self.insert_card(EmulCard::new(config).expect("valid card"))
    }

    /// Inserts an existing card into [`READER_0`].
    pub fn insert_card(&self, card: EmulCard) -> RunningCard {
        VirtualCard::connect_card(self.card_addr(), card)
            .expect("the card connects to vpcd")
            .spawn()
            .expect("the card's thread starts")
    }

    /// The driver configuration for this pcscd.
    pub fn driver_config(&self) -> Group {
        Group::new("config")
            .with_char("type", "pcsc")
            .with_char("name", "pcsc-test")
            .with_char("pcscdSocket", self.socket.display().to_string())
    }
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        self.terminate();
    }
}
