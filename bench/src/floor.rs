//! The floor: the same bytes over the same three-process socket path, with no parsing.
//!
//! `chipcard-bench relay` plays chipcardd: it listens on a Unix socket, starts
//! `chipcard-bench echo-driver` on a socketpair (its standard input, as chipcardd starts a
//! driver), accepts one client and copies bytes both ways, one thread per direction.
//! The echo driver reads a request of known length and answers fixed bytes. Both are this
//! program re-executed, so the floor pays for the same kind of processes.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use chipcard_ipc::message::{CommandCard, CommandCardResponse};
use chipcard_ipc::{CardId, Envelope, EnvelopeCodec, Outcome};
use tokio_util::codec::Encoder;

/// SELECT MF without FCI: the APDU every latency part sends.
pub const SELECT_MF: [u8; 7] = [0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00];

/// The framed bytes a client sends for one SELECT, and the framed answer (`90 00`).
pub fn wire_bytes() -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut codec = EnvelopeCodec::new();
    let mut request = BytesMut::new();
    let command = CommandCard {
        card_id: CardId(0x0100_0001),
        data: Bytes::from_static(&SELECT_MF),
        target: None,
    };
    codec.encode(Envelope::new(1000, None, &command), &mut request)?;
    let mut reply = BytesMut::new();
    let response = CommandCardResponse {
        outcome: Outcome::ok("ok"),
        data: Some(Bytes::from_static(&[0x90, 0x00])),
    };
    codec.encode(Envelope::new(2000, Some(1000), &response), &mut reply)?;
    Ok((request.to_vec(), reply.to_vec()))
}

/// Descriptor 0 as a Unix stream (the socketpair end the parent passed).
fn stdin_stream() -> anyhow::Result<UnixStream> {
    let fd: OwnedFd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicate descriptor 0")?;
    Ok(UnixStream::from(fd))
}

/// `echo-driver`: for each request of `request_len` bytes on descriptor 0, write `reply`.
pub fn echo_driver(request_len: usize, reply: &[u8]) -> anyhow::Result<()> {
    let mut stream = stdin_stream()?;
    let mut buf = vec![0u8; request_len];
    loop {
        match stream.read_exact(&mut buf) {
            Ok(()) => stream.write_all(reply)?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Copies until end of file or an error, then shuts the writer down.
fn pump(mut from: UnixStream, mut to: UnixStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// `relay`: start the echo driver, listen on `socket`, relay one client.
pub fn relay(socket: &Path, request_len: usize, reply_hex: &str) -> anyhow::Result<()> {
    let (ours, theirs) = UnixStream::pair().context("socketpair")?;
    let exe = std::env::current_exe().context("own program")?;
    let mut driver = Command::new(exe)
        .args(["echo-driver", "--request-len", &request_len.to_string()])
        .args(["--reply", reply_hex])
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()
        .context("start the echo driver")?;
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).context("bind the relay socket")?;
    let (client, _) = listener.accept().context("accept")?;
    let up = (client.try_clone()?, ours.try_clone()?);
    let t = std::thread::spawn(move || pump(up.0, up.1));
    pump(ours, client);
    let _ = t.join();
    let _ = driver.wait();
    Ok(())
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lower- or upper-case hex.
pub fn from_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(text.len() % 2 == 0, "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("bad hex"))
        .collect()
}
