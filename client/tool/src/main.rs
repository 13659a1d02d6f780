//! chipcard-tool: a command-line client of chipcardd.
//!
//! Lists readers and cards, waits for a card, sends APDUs, resets and checks cards,
//! monitors events, talks to services (`service`, and `info` for the cardinfo service),
//! and formats group-format files. Every subcommand takes `--json` for
//! machine-readable output and `--socket PATH` for a server other than the default.
//!
//! Exit status: 0 on success, 1 on failure (one line `chipcard-tool: <reason>` on stderr;
//! `fmt` reports a syntax error as `FILE:LINE:COL: message`), 2 on a usage error.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod hexarg;
mod output;

/// Talk to chipcardd, the chipcard server: readers, cards, APDUs, events; format
/// group-format files.
#[derive(Debug, Parser)]
#[command(name = "chipcard-tool", version, about, long_about = None)]
#[command(after_help = "Exit status: 0 success, 1 failure, 2 usage error.\n\
The socket is --socket, else $CHIPCARD_SOCKET, else $XDG_RUNTIME_DIR/chipcard/chipcardd.sock \
(non-root) or /run/chipcard/chipcardd.sock.")]
pub struct Cli {
    /// Options for every subcommand.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options for every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// The server's socket.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List readers and the cards in them.
    List(commands::list::Args),
    /// Wait for a card and print its id, ATR, types and reader.
    Wait(commands::wait::Args),
    /// Print a card's ATR.
    Atr(commands::CardArgs),
    /// Take a card and send it one or more APDUs in one session.
    Apdu(commands::apdu::Args),
    /// Ask whether a card is still present.
    Check(commands::CardArgs),
    /// Take and reset a card and print its new ATR.
    Reset(commands::CardArgs),
    /// Print notifications and card events as they happen.
    Monitor(commands::monitor::Args),
    /// Open a service, send it commands, close it.
    Service(commands::service::Args),
    /// Describe a card: its ATR decoded, its card types, pcsc-tools' descriptions.
    Info(commands::info::Args),
    /// Read a group-format file and print it pretty, compact or as JSON.
    Fmt(commands::fmt::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match try_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut stderr = std::io::stderr().lock();
            let _ = match e.downcast_ref::<commands::fmt::SyntaxError>() {
                Some(syntax) => writeln!(stderr, "{syntax}"),
                None => writeln!(stderr, "chipcard-tool: {}", output::one_line(&e)),
            };
            ExitCode::FAILURE
        }
    }
}

/// Runs the subcommand `cli` asks for.
fn try_main(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    if let Command::Fmt(args) = &cli.command {
        // No server and no runtime needed.
        return commands::fmt::run(&global, args);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match &cli.command {
            Command::List(args) => commands::list::run(&global, args).await,
            Command::Wait(args) => commands::wait::run(&global, args).await,
            Command::Atr(args) => commands::atr::run(&global, args).await,
            Command::Apdu(args) => commands::apdu::run(&global, args).await,
            Command::Check(args) => commands::check::run(&global, args).await,
            Command::Reset(args) => commands::reset::run(&global, args).await,
            Command::Monitor(args) => commands::monitor::run(&global, args).await,
            Command::Service(args) => commands::service::run(&global, args).await,
            Command::Info(args) => commands::info::run(&global, args).await,
            Command::Fmt(args) => commands::fmt::run(&global, args),
        }
    })
}
