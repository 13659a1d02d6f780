//! `fmt [FILE|-] [--compact]`: reads a group-format document and prints it in the pretty
//! form (as libgwenhywfar writes files), the compact wire form (`--compact`), or the JSON
//! view of the ipc crate (`--json`). Needs no server.
//!
//! A syntax error is printed as `FILE:LINE:COL: message` (`<stdin>` for standard input)
//! and the exit status is 1.

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use chipcard_ipc::{parse::Limits, ParseError};

use crate::output::print_json;
use crate::Global;

/// The largest file `fmt` reads (a configuration file, not a frame body).
const MAX_FILE: usize = 16 * 1024 * 1024;

/// Arguments of `fmt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to read; `-` or nothing for standard input.
    #[arg(value_name = "FILE|-")]
    pub file: Option<PathBuf>,
    /// Print the compact wire form instead of the pretty form.
    #[arg(long)]
    pub compact: bool,
}

/// A syntax error in the input, reported as `FILE:LINE:COL: message`.
#[derive(Debug)]
pub struct SyntaxError {
    /// The file's name as given (`<stdin>` for standard input).
    pub file: String,
    /// The parser's error.
    pub error: ParseError,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.error.line, self.error.column, self.error.message
        )
    }
}

impl std::error::Error for SyntaxError {}

/// Runs `fmt`.
pub fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    if args.compact && global.json {
        bail!("--compact and --json exclude each other");
    }
    let (name, bytes) = match &args.file {
        None => read_stdin()?,
        Some(path) if path.as_os_str() == "-" => read_stdin()?,
        Some(path) => {
            let name = path.display().to_string();
            let bytes = read_limited(
                std::fs::File::open(path).with_context(|| format!("cannot read {name}"))?,
            )
            .with_context(|| format!("cannot read {name}"))?;
            (name, bytes)
        }
    };
    let limits = Limits {
        max_document: MAX_FILE,
        ..Limits::default()
    };
    let doc = chipcard_ipc::parse_bytes(&bytes, &limits)
        .map_err(|error| SyntaxError { file: name, error })?;
    if global.json {
        return print_json(&crate::output::doc_json(&doc));
    }
    let mut out = std::io::stdout().lock();
    if args.compact {
        let mut text = Vec::new();
        chipcard_ipc::write_compact(&doc, &mut text);
        out.write_all(&text)?;
    } else {
        out.write_all(chipcard_ipc::write_pretty(&doc).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn read_stdin() -> anyhow::Result<(String, Vec<u8>)> {
    let bytes = read_limited(std::io::stdin().lock()).context("cannot read standard input")?;
    Ok(("<stdin>".to_owned(), bytes))
}

/// Reads everything, refusing more than [`MAX_FILE`] bytes.
fn read_limited(input: impl Read) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.take(MAX_FILE as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > MAX_FILE {
        bail!("larger than {MAX_FILE} bytes");
    }
    Ok(bytes)
}
