//! chipcardd: the chipcard server.
//!
//! ```text
//! chipcardd [--config FILE] [--socket PATH] [--foreground] [--log-level LEVEL]
//! chipcardd check-config FILE
//! ```
//!
//! The server always runs in the foreground (a service manager such as systemd runs it);
//! `--foreground` is accepted for clarity. Exit status: 0 after a clean shutdown (SIGTERM,
//! SIGINT) or a valid `check-config`; 1 on any error, printed as one line on stderr.
//!
//! SIGHUP reloads the configuration file: drivers whose group changed are restarted, new
//! ones started, removed ones stopped; clients stay connected. With `$NOTIFY_SOCKET` set
//! (systemd `Type=notify`) readiness is reported, and with `$LISTEN_PID`/`$LISTEN_FDS`
//! (socket activation) the client socket is fd 3 (see `chipcardd::systemd`).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chipcardd::config::Config;
use chipcardd::server::Reload;
use chipcardd::setup::{self, Options};
use chipcardd::{systemd, Server};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The chipcard server: brokers clients and out-of-process card drivers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file [default: /etc/chipcard/chipcardd.conf, else built in].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The client socket (overrides server/socket).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Stay in the foreground (the only mode: chipcardd never daemonizes).
    #[arg(long)]
    foreground: bool,
    /// Log filter, e.g. `info` or `chipcardd=debug` [default: $RUST_LOG, else info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks a configuration file and prints a summary (exit status 1 when invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chipcardd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return Ok(check_config(file));
    }
    init_logging(cli.log_level.as_deref())?;
    // Before any other thread exists: adopting fd 3 and clearing LISTEN_* need that.
    let activated = systemd::activated_listener()?;
    let _ = cli.foreground;
    let options = Options {
        config: cli.config,
        socket: cli.socket,
    };
    // One thread: a request is a few microseconds of work between socket reads and writes,
    // and handing tasks between worker threads (wake-ups, shared queues, the registry lock
    // bouncing between CPUs) cost more than a second thread gains, on a machine the clients
    // and drivers share (docs/performance.md, "Profile and fixes").
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let setup = setup::resolve(&options)?;
        let server = Server::bind_with(setup, activated)?;
        let reload = Reload {
            requests: reload_requests(),
            load: Box::new(move || Ok(setup::resolve(&options)?.config)),
        };
        let ready: Box<dyn FnOnce() + Send> = Box::new(|| systemd::notify_or_warn("READY=1"));
        server
            .run_with(
                async {
                    shutdown_signal().await;
                    systemd::notify_or_warn("STOPPING=1");
                },
                Some(reload),
                Some(ready),
            )
            .await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn check_config(file: &Path) -> ExitCode {
    match Config::from_file(file) {
        Ok(config) => {
            println!("{}: ok", file.display());
            print!("{}", setup::summary(&config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => {
            EnvFilter::try_new(level).with_context(|| format!("bad --log-level '{level}'"))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// A message for every SIGHUP (several pending ones count as one).
fn reload_requests() -> tokio::sync::mpsc::Receiver<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    systemd::notify_or_warn("RELOADING=1");
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot watch SIGHUP; no reloads"),
    }
    rx
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}
