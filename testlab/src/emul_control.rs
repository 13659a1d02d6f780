//! The emulated driver's control socket (`controlSocket`): one line in, one line out.

use std::path::Path;

use crate::link::ANSWER_TIMEOUT as TIMEOUT;

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
