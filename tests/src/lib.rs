//! The harness of chipcard's end-to-end tests: real binaries over real sockets.
//!
//! [`Server::start`] writes a configuration into a fresh temporary directory, starts the
//! `chipcardd` built by `cargo build --workspace --bins` (which `scripts/test` runs first) and
//! waits until its socket answers. [`RawClient`] speaks the wire protocol directly, for tests
//! that send what a well-behaved client never would.
#![forbid(unsafe_code)]

pub mod configs;
pub mod procs;
pub mod requests;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chipcard_ipc::message::{ClientReady, Outgoing, ToClient};
use chipcard_ipc::{Envelope, EnvelopeCodec, Group, IdCounter};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::{Encoder, Framed};

/// How long a test waits for anything before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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

/// Sends `line` to an emulator control socket and returns the answer line.
pub fn control_line(path: &Path, line: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect to control socket {}: {e}", path.display()));
    stream.set_read_timeout(Some(TIMEOUT)).expect("set timeout");
    writeln!(stream, "{line}").expect("write control line");
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .expect("read control answer");
    answer.trim_end().to_owned()
}

/// A client that speaks the wire protocol directly.
pub struct RawClient {
    framed: Framed<UnixStream, EnvelopeCodec>,
    ids: IdCounter,
}

impl RawClient {
    /// Connects without sending anything.
    pub async fn connect(socket: &Path) -> RawClient {
        let stream = UnixStream::connect(socket)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        RawClient {
            framed: Framed::new(stream, EnvelopeCodec::new()),
            ids: IdCounter::new(),
        }
    }

    /// Connects and completes `ClientReady`.
    pub async fn ready(socket: &Path) -> RawClient {
        let mut client = RawClient::connect(socket).await;
        let reply = client
            .request(&ClientReady {
                application: "chipcard-tests".into(),
                chipcard_version: chipcard_ipc::PROTOCOL_VERSION.into(),
                system: "Linux".into(),
                gwen_version: None,
            })
            .await;
        assert!(
            matches!(reply, ToClient::ClientReadyResponse(_)),
            "ClientReady answered {reply:?}"
        );
        client
    }

    /// Sends a message and returns its id.
    pub async fn send(&mut self, message: &impl Outgoing) -> u32 {
        let id = self.ids.next_id();
        self.send_with_id(id, message).await;
        id
    }

    /// Sends a message with a chosen id (for id-order tests).
    pub async fn send_with_id(&mut self, id: u32, message: &impl Outgoing) {
        self.framed
            .send(Envelope::new(id, None, message))
            .await
            .expect("send message");
    }

    /// Sends raw bytes on the socket.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.framed
            .get_mut()
            .write_all(bytes)
            .await
            .expect("send raw bytes");
    }

    /// Sends a frame whose body is `body`.
    pub async fn send_body(&mut self, body: &[u8]) {
        let mut buf = BytesMut::new();
        chipcard_ipc::FrameCodec::new()
            .encode(body, &mut buf)
            .expect("frame the body");
        self.send_raw(&buf).await;
    }

    /// Sends a message with any command name and data.
    pub async fn send_cmd(&mut self, cmd: &str, data: Group) -> u32 {
        let id = self.ids.next_id();
        let env = Envelope {
            id,
            refid: None,
            cmd: cmd.to_owned(),
            data,
        };
        self.framed.send(env).await.expect("send message");
        id
    }

    /// The next envelope, or `None` when the server closed the connection.
    pub async fn next_envelope(&mut self) -> Option<Envelope> {
        match tokio::time::timeout(TIMEOUT, self.framed.next()).await {
            Err(_) => panic!("no message from the server within {TIMEOUT:?}"),
            Ok(None) => None,
            Ok(Some(Err(e))) => panic!("bad frame from the server: {e}"),
            Ok(Some(Ok(Err(e)))) => panic!("bad message from the server: {e}"),
            Ok(Some(Ok(Ok(env)))) => Some(env),
        }
    }

    /// The next message, decoded; panics on close.
    pub async fn next_message(&mut self) -> (Envelope, ToClient) {
        let env = self
            .next_envelope()
            .await
            .expect("server closed the connection");
        let msg = ToClient::decode(&env.cmd, &env.data)
            .unwrap_or_else(|e| panic!("undecodable {}: {e}", env.cmd));
        (env, msg)
    }

    /// Sends a request and returns the response to it, skipping pushes.
    pub async fn request(&mut self, message: &impl Outgoing) -> ToClient {
        let id = self.send(message).await;
        self.response_to(id).await
    }

    /// The response to request `id`, skipping pushes (which have no refid).
    pub async fn response_to(&mut self, id: u32) -> ToClient {
        loop {
            let (env, msg) = self.next_message().await;
            if env.refid == Some(id) {
                return msg;
            }
            assert!(
                env.refid.is_none(),
                "response to an unexpected request: {env:?}"
            );
        }
    }

    /// True once the server has closed the connection (reads until close, up to the timeout).
    pub async fn is_closed_by_server(&mut self) -> bool {
        loop {
            match tokio::time::timeout(TIMEOUT, self.framed.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}
