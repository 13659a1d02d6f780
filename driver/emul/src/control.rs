//! The control socket: insert and remove cards, add, delete and fail readers while the
//! driver runs.
//!
//! A Unix stream socket taking one command per line and answering each with one line,
//! `ok` or `error: WHY`:
//!
//! ```text
//! insert READER SLOT ATRHEX
//! remove READER SLOT
//! addreader READER SLOTS
//! delreader READER
//! readererror READER | TEXT
//! ```
//!
//! READER is the reader's name and may contain blanks: the last tokens are SLOT (and ATR)
//! or SLOTS; `readererror` splits at the first `|`, so there READER cannot contain one.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use tracing::{debug, info, warn};

use crate::config::parse_hex;
use crate::state::Shared;

/// The longest command line accepted.
const MAX_LINE: u64 = 4096;

/// A command read from the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Put a card with this ATR into a slot.
    Insert {
        /// The reader's name.
        reader: String,
        /// The slot.
        slot: i32,
        /// The card's ATR.
        atr: Vec<u8>,
    },
    /// Take the card out of a slot.
    Remove {
        /// The reader's name.
        reader: String,
        /// The slot.
        slot: i32,
    },
    /// Add an empty reader (the driver sends `ReaderAdd`).
    AddReader {
        /// The new reader's name.
        reader: String,
        /// How many slots it has.
        slots: i32,
    },
    /// Delete a reader and its cards (the driver sends `ReaderDel`).
    DelReader {
        /// The reader's name.
        reader: String,
    },
    /// Report a reader failure (the driver sends `ReaderError`).
    ReaderError {
        /// The reader's name.
        reader: String,
        /// What went wrong.
        text: String,
    },
}

/// The command words, for error messages.
const COMMANDS: &str = "insert, remove, addreader, delreader or readererror";

/// Splits off the last blank-separated token.
fn last_token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_end();
    let (head, tail) = s.rsplit_once(char::is_whitespace)?;
    Some((head.trim_end(), tail))
}

/// A reader name: `text` without its outer blanks, not empty.
fn reader_name(text: &str, usage: &str) -> Result<String, String> {
    let reader = text.trim();
    if reader.is_empty() {
        return Err(format!("usage: {usage}"));
    }
    Ok(reader.to_owned())
}

/// READER followed by a number (`what` names the number in errors).
fn reader_and_number(rest: &str, what: &str, usage: &str) -> Result<(String, i32), String> {
    let (reader, number) = last_token(rest).ok_or_else(|| format!("usage: {usage}"))?;
    let reader = reader_name(reader, usage)?;
    let number = number
        .parse::<i32>()
        .map_err(|_| format!("{what} '{number}' is not a number"))?;
    Ok((reader, number))
}

/// Parses one command line.
pub fn parse_line(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    match word.to_ascii_lowercase().as_str() {
        "insert" => {
            const USAGE: &str = "insert READER SLOT ATRHEX";
            if rest.split_whitespace().count() < 3 {
                return Err(format!("usage: {USAGE}"));
            }
            let (rest, atr) = last_token(rest).ok_or_else(|| format!("usage: {USAGE}"))?;
            let atr = parse_hex(atr).ok_or_else(|| format!("ATR '{atr}' is not hex"))?;
            let (reader, slot) = reader_and_number(rest, "slot", USAGE)?;
            Ok(Command::Insert { reader, slot, atr })
        }
        "remove" => {
            let (reader, slot) = reader_and_number(rest, "slot", "remove READER SLOT")?;
            Ok(Command::Remove { reader, slot })
        }
        "addreader" => {
            let (reader, slots) = reader_and_number(rest, "slots", "addreader READER SLOTS")?;
            Ok(Command::AddReader { reader, slots })
        }
        "delreader" => Ok(Command::DelReader {
            reader: reader_name(rest, "delreader READER")?,
        }),
        "readererror" => {
            const USAGE: &str = "readererror READER | TEXT";
            let (reader, text) = rest
                .split_once('|')
                .ok_or_else(|| format!("usage: {USAGE}"))?;
            let text = text.trim();
            if text.is_empty() {
                return Err(format!("usage: {USAGE}"));
            }
            Ok(Command::ReaderError {
                reader: reader_name(reader, USAGE)?,
                text: text.to_owned(),
            })
        }
        "" => Err(format!("empty command; expected {COMMANDS}")),
        other => Err(format!("unknown command '{other}'; expected {COMMANDS}")),
    }
}

/// The listening control socket and its thread.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Removes a stale socket at `path`; refuses a live one or anything that is not a socket.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a socket",
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is listening on it",
        ));
    }
    std::fs::remove_file(path)
}

impl ControlServer {
    /// Creates the socket at `path` (removing a stale one) and serves it on a thread.
    pub fn bind(path: &Path, state: Shared) -> io::Result<ControlServer> {
        clear_stale(path)?;
        let listener = UnixListener::bind(path)?;
        info!(path = %path.display(), "control socket ready");
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = shutdown.clone();
        let thread = thread::Builder::new().name("control".into()).spawn({
            let span = tracing::Span::current();
            move || span.in_scope(|| accept_loop(listener, state, flag))
        })?;
        Ok(ControlServer {
            path: path.to_owned(),
            shutdown,
            thread: Some(thread),
        })
    }

    /// Stops listening and removes the socket file.
    pub fn shutdown(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Wake the accept call; if that fails the thread ends with the process.
        if UnixStream::connect(&self.path).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        if let Err(e) = std::fs::remove_file(&self.path).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        }) {
            warn!(path = %self.path.display(), error = %e, "cannot remove the control socket");
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

fn accept_loop(listener: UnixListener, state: Shared, shutdown: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if shutdown.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => {
                let state = state.clone();
                let span = tracing::Span::current();
                let spawned = thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        let _entered = span.enter();
                        if let Err(e) = serve_connection(stream, &state) {
                            debug!(error = %e, "control connection ended");
                        }
                    });
                if let Err(e) = spawned {
                    warn!(error = %e, "cannot start a control connection thread");
                }
            }
            Err(e) => warn!(error = %e, "control socket accept failed"),
        }
    }
}

fn serve_connection(stream: UnixStream, state: &Shared) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let n = reader.by_ref().take(MAX_LINE).read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && n as u64 >= MAX_LINE {
            writeln!(writer, "error: line longer than {MAX_LINE} bytes")?;
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let answer = parse_line(&line).and_then(|command| {
            let mut state = state.lock();
            match command {
                Command::Insert { reader, slot, atr } => state.insert(&reader, slot, atr),
                Command::Remove { reader, slot } => state.remove(&reader, slot),
                Command::AddReader { reader, slots } => state.add_reader(&reader, slots),
                Command::DelReader { reader } => state.del_reader(&reader),
                Command::ReaderError { reader, text } => state.reader_error(&reader, &text),
            }
        });
        match answer {
            Ok(()) => writeln!(writer, "ok")?,
            Err(why) => {
                debug!(command = line.trim(), error = %why, "control command refused");
                writeln!(writer, "error: {why}")?
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let insert = |reader: &str, slot, atr: &[u8]| {
            Ok(Command::Insert {
                reader: reader.into(),
                slot,
                atr: atr.to_vec(),
            })
        };
        let remove = |reader: &str, slot| {
            Ok(Command::Remove {
                reader: reader.into(),
                slot,
            })
        };
        let table: Vec<(&str, Result<Command, String>)> = vec![
            ("insert r 0 3B00", insert("r", 0, &[0x3B, 0x00])),
            (
                "insert Emul Reader 1 1 3b0102\n",
                insert("Emul Reader 1", 1, &[0x3B, 1, 2]),
            ),
            (
                "  INSERT   two  blanks   0   3B00  ",
                insert("two  blanks", 0, &[0x3B, 0]),
            ),
            ("remove Emul Reader 1 0", remove("Emul Reader 1", 0)),
            ("remove r -1", remove("r", -1)),
            ("insert r 0", Err("usage: insert READER SLOT ATRHEX".into())),
            ("insert r x 3B00", Err("slot 'x' is not a number".into())),
            ("insert r 0 3BZ", Err("ATR '3BZ' is not hex".into())),
            ("insert", Err("usage: insert READER SLOT ATRHEX".into())),
            ("remove 0", Err("usage: remove READER SLOT".into())),
            (
                "addreader Hot Plug 2",
                Ok(Command::AddReader {
                    reader: "Hot Plug".into(),
                    slots: 2,
                }),
            ),
            ("addreader r", Err("usage: addreader READER SLOTS".into())),
            ("addreader r two", Err("slots 'two' is not a number".into())),
            (
                "DELREADER  Hot  Plug ",
                Ok(Command::DelReader {
                    reader: "Hot  Plug".into(),
                }),
            ),
            ("delreader", Err("usage: delreader READER".into())),
            (
                "readererror Emul Reader 1 | bus error: 6 | lost",
                Ok(Command::ReaderError {
                    reader: "Emul Reader 1".into(),
                    text: "bus error: 6 | lost".into(),
                }),
            ),
            (
                "readererror r no bar",
                Err("usage: readererror READER | TEXT".into()),
            ),
            (
                "readererror r |  ",
                Err("usage: readererror READER | TEXT".into()),
            ),
            (
                "readererror | why",
                Err("usage: readererror READER | TEXT".into()),
            ),
            (
                "eject r 0",
                Err(format!("unknown command 'eject'; expected {COMMANDS}")),
            ),
        ];
        for (line, expected) in table {
            assert_eq!(parse_line(line), expected, "{line:?}");
        }
    }

    proptest::proptest! {
        /// Any line gets a command or a reason, never a panic.
        #[test]
        fn any_line_is_answered(line in "\\PC{0,80}") {
            let _ = parse_line(&line);
        }

        /// What a test or a user writes (a reader name with inner blanks, any slot, an ATR
        /// in either case) reads back as the command it was written from.
        #[test]
        fn written_commands_read_back(
            reader in "[A-Za-z0-9_.-]{1,8}( [A-Za-z0-9_.-]{1,8}){0,3}",
            slot in proptest::prelude::any::<i32>(),
            atr in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..34),
            upper in proptest::prelude::any::<bool>(),
        ) {
            let hex: String = atr
                .iter()
                .map(|b| if upper { format!("{b:02X}") } else { format!("{b:02x}") })
                .collect();
            let insert = parse_line(&format!("insert {reader} {slot} {hex}\n"));
            proptest::prop_assert_eq!(
                insert,
                Ok(Command::Insert { reader: reader.clone(), slot, atr })
            );
            let remove = parse_line(&format!("remove {reader} {slot}"));
            proptest::prop_assert_eq!(remove, Ok(Command::Remove { reader: reader.clone(), slot }));
            let add = parse_line(&format!("addreader {reader} {slot}\n"));
            proptest::prop_assert_eq!(add, Ok(Command::AddReader { reader: reader.clone(), slots: slot }));
            let del = parse_line(&format!("delreader {reader}"));
            proptest::prop_assert_eq!(del, Ok(Command::DelReader { reader }));
        }

        /// A reader error's text is everything after the first `|`, blanks and further
        /// bars included (trimmed at its ends).
        #[test]
        fn reader_errors_read_back(
            reader in "[A-Za-z0-9_.:-]{1,8}( [A-Za-z0-9_.:-]{1,8}){0,3}",
            text in "[!-~]([ -~]{0,40}[!-~])?",
        ) {
            let line = format!("readererror {reader} | {text}\n");
            proptest::prop_assert_eq!(
                parse_line(&line),
                Ok(Command::ReaderError { reader, text })
            );
        }
    }

    #[test]
    fn stale_sockets_are_replaced_and_files_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl");
        // A stale socket: bound, then its listener dropped.
        drop(UnixListener::bind(&path).expect("bind"));
        let mut server = ControlServer::bind(&path, Shared::default()).expect("stale removed");
        // A live one is refused.
        assert!(ControlServer::bind(&path, Shared::default()).is_err());
        server.shutdown();
        assert!(!path.exists(), "socket removed on shutdown");
        std::fs::write(&path, b"not a socket").expect("write");
        let e = ControlServer::bind(&path, Shared::default()).expect_err("a file");
        assert!(e.to_string().contains("not a socket"));
    }
}
