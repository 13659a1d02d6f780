//! The harness of chipcard's end-to-end tests: real binaries over real sockets.
//!
//! [`Server::start`] writes a configuration into a fresh temporary directory, starts the
//! `chipcardd` built by `cargo build --workspace --bins` (which `scripts/test` runs first) and
//! waits until its socket answers. [`RawClient`] speaks the wire protocol directly, for tests
//! that send what a well-behaved client never would.
#![forbid(unsafe_code)]

pub mod configs;
pub mod procs;

pub use chipcard_testlab::emul_control::control_line;
pub use chipcard_testlab::raw_client::RawClient;
pub use chipcard_testlab::requests;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chipcard_ipc::message::ClientReady;
use chipcard_ipc::{Envelope, EnvelopeCodec};
use tokio_util::codec::Encoder;

/// How long a test waits for anything before it fails.
pub const TIMEOUT: Duration = chipcard_testlab::link::ANSWER_TIMEOUT;

/// The directory holding the workspace's built binaries (`target/debug` or `target/release`,
/// the profile the tests were built with).
pub fn bin_dir() -> PathBuf {
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("the test knows its own path");
    let deps = exe.parent().expect("test binary has a directory");
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// The path of a workspace binary, checked to exist.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, \
         which scripts/test runs)",
        path.display()
    );
    path
}

/// A running chipcardd with its own directory, socket and emulator control socket.
pub struct Server {
    child: Child,
    /// The temporary directory holding the configuration and sockets.
    pub dir: tempfile::TempDir,
    /// The client socket.
    pub socket: PathBuf,
    /// The control socket of the emulated driver (if the configuration uses `{control}`).
    pub control: PathBuf,
}

impl Server {
    /// Starts chipcardd on `config`, in which `{socket}`, `{control}` and `{dir}` are
    /// replaced by paths in a fresh temporary directory.
    pub fn start(config: &str) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("chipcardd.sock");
        let control = dir.path().join("emul.ctl");
        let text = config
            .replace("{socket}", &socket.display().to_string())
            .replace("{control}", &control.display().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let config_path = dir.path().join("chipcardd.conf");
        std::fs::write(&config_path, text).expect("write config");
        let child = Command::new(bin("chipcardd"))
            .arg("--config")
            .arg(&config_path)
            .arg("--foreground")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("start chipcardd");
        let mut server = Server {
            child,
            dir,
            socket,
            control,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chipcardd exited during start: {status}");
            }
            if Self::client_ready_blocking(&self.socket) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("chipcardd did not open {} in time", self.socket.display());
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the server to exit; its exit status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Connects, sends `ClientReady` and waits for its answer: true when the server answered.
    fn client_ready_blocking(socket: &Path) -> bool {
        use std::io::{Read, Write};
        use tokio_util::codec::Decoder;
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
            return false;
        };
        let hello = Envelope::new(
            1,
            None,
            &ClientReady {
                application: "chipcard-tests".into(),
                chipcard_version: chipcard_ipc::PROTOCOL_VERSION.into(),
                system: "Linux".into(),
                gwen_version: None,
            },
        );
        let mut codec = EnvelopeCodec::new();
        let mut out = BytesMut::new();
        if codec.encode(hello, &mut out).is_err() || stream.write_all(&out).is_err() {
            return false;
        }
        if stream.set_read_timeout(Some(TIMEOUT)).is_err() {
            return false;
        }
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 4096];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Ok(env))) => return env.cmd == "ClientReadyResponse",
                Ok(Some(Err(_))) | Err(_) => return false,
                Ok(None) => {}
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends one line to the emulated driver's control socket and returns its answer.
    pub fn control(&self, line: &str) -> String {
        control_line(&self.control, line)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
