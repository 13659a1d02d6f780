//! `chipcard-vpcd-card`: inserts chipcard's emulated card into a vsmartcard vpcd reader and
//! serves it until the reader closes the connection.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use chipcard_emulcard::{CardConfig, Pin};
use chipcard_vpcd_card::{VirtualCard, DEFAULT_PORT};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Connects an emulated ISO 7816-4 card (chipcard-emulcard's default file tree) to a vpcd
/// reader, that is, inserts it into the reader; exits when the reader closes the connection
/// (pcscd stopped) or on Ctrl-C (the card is removed).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The host where pcscd with the vpcd reader runs.
    #[arg(short = 'H', long, default_value = "127.0.0.1")]
    host: String,

    /// The reader's TCP port (the CHANNELID of its reader.conf entry; Debian's first vpcd
    /// reader listens on 35963).
    #[arg(short = 'P', long, default_value_t = DEFAULT_PORT)]
    port: u16,

    /// The card's ATR in hex (blanks and `:` allowed); default 3B 88 80 01 63 68 69 70 63 61 72 64 0F.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    atr: Option<Hex>,

    /// The PIN VERIFY checks, as text (`1234` is 31 32 33 34); without it VERIFY answers 6A88.
    #[arg(long)]
    pin: Option<String>,

    /// PIN tries before it is blocked (1 to 15).
    #[arg(long, default_value_t = 3)]
    pin_retries: u8,

    /// A tracing filter such as `debug` or `trace` (APDUs); overrides RUST_LOG.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

/// Bytes given in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hex(Vec<u8>);

fn parse_hex(s: &str) -> Result<Hex, String> {
    let digits: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    hex::decode(&digits)
        .map(Hex)
        .map_err(|e| format!("'{s}': {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = match args.log_level.as_deref() {
        Some(f) => EnvFilter::try_new(f).unwrap_or_else(|e| {
            eprintln!("--log-level '{f}': {e}; using 'info'");
            EnvFilter::new("info")
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chipcard-vpcd-card: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), chipcard_vpcd_card::Error> {
    let mut config = match &args.atr {
        Some(Hex(atr)) => CardConfig::with_atr(atr.clone()),
        None => CardConfig::default(),
    };
    if let Some(pin) = &args.pin {
        config = config.with_pin(Pin::from_text(pin)?, args.pin_retries);
    } else {
        config.pin_retries = args.pin_retries;
    }
    let card = VirtualCard::connect((args.host.as_str(), args.port), config)?;
    card.serve()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let args = Args::try_parse_from(["c", "-P", "35979", "--atr", "3B:02 14", "--pin", "1"])
            .expect("valid");
        assert_eq!(args.port, 35979);
        assert_eq!(args.host, "127.0.0.1");
        assert_eq!(args.atr, Some(Hex(vec![0x3B, 0x02, 0x14])));
        assert!(Args::try_parse_from(["c", "--atr", "3G"]).is_err());
    }
}
