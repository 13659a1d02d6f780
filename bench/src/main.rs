//! chipcard-bench: end-to-end benchmarks of chipcard, each against a reference measured in
//! the same run (see docs/performance.md, "End to end", and `scripts/bench`).
//!
//! Without a subcommand it runs the suite and prints a markdown table (with `--write FILE`,
//! also into FILE's "End to end" section). The subcommands
//! `relay` and `echo-driver` are the floor's processes (this program re-executed).

mod floor;
mod formats;
mod parts;
mod report;
mod server;
mod stats;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::parts::Plan;
use crate::report::Row;
use crate::server::Chipcardd;

/// chipcard's end-to-end benchmarks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Small counts for CI: seconds, targets not judged.
    #[arg(long)]
    quick: bool,
    /// Replace the "## End to end" section of this markdown file, and write the plots
    /// beside it: performance-latency.svg (part b) and performance-latency-pcscd.svg (part c).
    /// `scripts/bench --write docs/performance.md` is the run that writes the docs.
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,
    /// Where chipcardd and the chipcard-driver-* programs are [default: this program's
    /// directory].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// The parts to run, comma-separated (a group format vs serde_json, b round trip,
    /// c pcscd, d throughput and memory, e insert, f start-up).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e,f")]
    parts: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The floor's relay: listen on SOCKET, start an echo driver, relay one client.
    #[command(hide = true)]
    Relay {
        /// The socket to listen on.
        #[arg(long)]
        socket: PathBuf,
        /// The length of one request.
        #[arg(long)]
        request_len: usize,
        /// The reply, hex.
        #[arg(long)]
        reply: String,
    },
    /// Load for profiling: CLIENTS clients on the first cards of a running chipcardd send
    /// SELECTs for SECONDS and the rate is printed.
    #[command(hide = true)]
    Load {
        /// The chipcardd socket.
        #[arg(long)]
        socket: PathBuf,
        /// How many clients (each takes a card of its own).
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// How long.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// The floor's driver: answers each request of REQUEST_LEN bytes on descriptor 0.
    #[command(hide = true)]
    EchoDriver {
        /// The length of one request.
        #[arg(long)]
        request_len: usize,
        /// The reply, hex.
        #[arg(long)]
        reply: String,
    },
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chipcard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Relay {
            socket,
            request_len,
            reply,
        }) => {
            floor::from_hex(reply)?;
            floor::relay(socket, *request_len, reply)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::EchoDriver { request_len, reply }) => {
            floor::echo_driver(*request_len, &floor::from_hex(reply)?)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Load {
            socket,
            clients,
            seconds,
        }) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let rate = rt.block_on(parts::load(
                socket,
                *clients,
                std::time::Duration::from_secs_f64(*seconds),
            ))?;
            println!("{rate:.0} APDU/s");
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this program's directory")?
            .to_path_buf(),
    };
    let run = |p: &str| cli.parts.iter().any(|x| x == p);
    // Part a runs in this process; the others start chipcardd and its drivers.
    let needs_server = cli.parts.iter().any(|p| p != "a");
    for program in ["chipcardd", "chipcard-driver-emul"] {
        anyhow::ensure!(
            !needs_server || bin_dir.join(program).is_file(),
            "{} not found in {} (build with `cargo build --release --workspace --bins`, or \
             pass --bin-dir)",
            program,
            bin_dir.display()
        );
    }
    raise_nofile();
    let plan = Plan {
        quick: cli.quick,
        bin_dir,
    };
    let mut rows = Vec::new();
    let mut failed = false;
    let mut plot = None;
    let mut pcscd_plot = None;

    if run("a") {
        // First, before any server runs: the fastest batches of a quiet process.
        eprintln!("a: group format vs serde_json");
        rows.extend(formats::group_format_vs_json(&plan));
    }

    if run("b") || run("d") {
        let n_cards = 512;
        let single = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        eprintln!("starting chipcardd with {n_cards} emulated cards");
        let server = single.block_on(Chipcardd::start(
            &plan.bin_dir,
            &parts::card_drivers(n_cards),
            "",
            n_cards,
        ))?;
        if run("b") {
            eprintln!("b: round trip vs floor");
            match single.block_on(parts::round_trip(&plan, &server)) {
                Ok(rt) => {
                    rows.extend(rt.rows);
                    plot = Some((rt.chipcard, rt.floor));
                }
                Err(e) => fail(&mut rows, &mut failed, "b", e),
            }
        }
        if run("d") {
            eprintln!("d: throughput");
            collect(
                &mut rows,
                &mut failed,
                "d",
                &multi,
                parts::throughput(&plan, &server),
            );
        }
        drop(server);
        if run("d") {
            eprintln!("d: memory per idle client");
            collect(&mut rows, &mut failed, "d", &multi, parts::memory(&plan));
        }
    }
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if run("e") {
        eprintln!("e: insert → CardAvailable");
        collect(
            &mut rows,
            &mut failed,
            "e",
            &single,
            parts::insert_latency(&plan),
        );
    }
    if run("f") {
        eprintln!("f: start-up");
        collect(&mut rows, &mut failed, "f", &single, parts::startup(&plan));
    }
    if run("c") {
        eprintln!("c: through pcscd");
        match single.block_on(parts::through_pcscd(&plan)) {
            Ok(c) => {
                rows.extend(c.rows);
                pcscd_plot = c.samples;
            }
            Err(e) => fail(&mut rows, &mut failed, "c", e),
        }
    }

    if let Some(file) = &cli.write {
        let dir = file.parent().unwrap_or(Path::new("."));
        let mut plots = Vec::new();
        if let Some((cc, fl)) = &plot {
            let svg = report::cdf_svg(&[
                ("chipcardd", "#c0392b", cc),
                ("floor (relay)", "#2471a3", fl),
            ]);
            plots.push(write_plot(dir, report::PLOT_B, &svg)?);
        }
        if let Some((via, direct)) = &pcscd_plot {
            let svg = report::cdf_svg(&[
                ("chipcardd + pcsc driver", "#c0392b", via),
                ("pcsc crate direct", "#2471a3", direct),
            ]);
            plots.push(write_plot(dir, report::PLOT_C, &svg)?);
        }
        let section = report::section(&rows, plan.quick, &plots);
        report::write_section(file, &section)?;
    }
    println!("{}", report::table(&rows));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes the plot `name` into `dir`; returns `name`.
fn write_plot<'a>(dir: &Path, name: &'a str, svg: &str) -> anyhow::Result<&'a str> {
    let path = dir.join(name);
    std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    Ok(name)
}

/// Runs a part on `rt`, adding its rows or its failure.
fn collect(
    rows: &mut Vec<Row>,
    failed: &mut bool,
    part: &'static str,
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = anyhow::Result<Vec<Row>>>,
) {
    match rt.block_on(fut) {
        Ok(r) => rows.extend(r),
        Err(e) => fail(rows, failed, part, e),
    }
}

fn fail(rows: &mut Vec<Row>, failed: &mut bool, part: &'static str, e: anyhow::Error) {
    eprintln!("part {part} failed: {e:#}");
    *failed = true;
    rows.push(Row::skipped(part, format!("failed: {e:#}")));
}

/// Raises the soft limit of open files to the hard limit (10,000 clients need as many
/// descriptors here and in chipcardd, which inherits the limit).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
