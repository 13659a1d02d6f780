//! Running the built tool in tests.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs chipcard-tool with `args`, feeding `stdin`, and waits for it.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_with_env(args, stdin, &[])
}

/// Like [`run`] with extra environment variables.
pub fn run_with_env(args: &[&str], stdin: &[u8], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chipcard-tool"));
    cmd.args(args)
        .env_remove("CHIPCARD_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("chipcard-tool starts");
    if let Some(mut input) = child.stdin.take() {
        // The tool may exit without reading its input (a broken pipe then is fine).
        let _ = input.write_all(stdin);
    }
    child.wait_with_output().expect("chipcard-tool ends")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
