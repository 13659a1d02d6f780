//! `service open|command|close`: talk to a service of chipcardd.
//!
//! A context belongs to the connection that opened it, and the server closes it when the
//! connection ends; so each run of the tool opens its own context:
//!
//! - `service open SERVICE [ARG...]` opens a context and prints the answer, then runs the
//!   steps it reads from standard input, one per line — `command NAME [ARG...]` or
//!   `close` — printing each answer, and closes the context at the end of the input.
//! - `service command SERVICE NAME [ARG...]` opens a context, sends one command, prints its
//!   answer and closes the context.
//! - `service close SERVICE` opens a context and closes it, printing what the service says
//!   when a context closes.
//!
//! SERVICE is a name (`cardinfo`) or an id (`0x00000001`). An ARG is `KEY=VALUE` (char),
//! `KEY:bin=HEX` or `KEY:int=N`; together they form the `command {}` group.
//!
//! Text output: each answer's group in the group format; with `--json` one JSON object per
//! answer: `{"step", "service_id", "service_name", "context_id", "name", "data"}`.

use std::io::{BufRead, Write};

use anyhow::{anyhow, bail, Context as _};
use chipcard_client::ipc::{write_pretty, Group};
use chipcard_client::{Client, ServiceContext, ServiceRef};
use serde_json::json;

use crate::output::{doc_json, print_json_line};
use crate::Global;

/// Arguments of `service`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The steps.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Open a context, then run `command NAME [ARG...]` / `close` lines from standard input.
    Open {
        /// The service: a name (cardinfo) or an id (0x00000001).
        service: String,
        /// Data for the open: KEY=VALUE, KEY:bin=HEX, KEY:int=N.
        args: Vec<String>,
    },
    /// Open a context, send one command, print its answer, close the context.
    Command {
        /// The service: a name (cardinfo) or an id (0x00000001).
        service: String,
        /// The command's name, e.g. Describe.
        name: String,
        /// The command's data: KEY=VALUE, KEY:bin=HEX, KEY:int=N.
        args: Vec<String>,
    },
    /// Open a context and close it, printing the service's answer to the close.
    Close {
        /// The service: a name (cardinfo) or an id (0x00000001).
        service: String,
    },
}

/// Parses `KEY=VALUE`, `KEY:bin=HEX`, `KEY:int=N` into a group.
pub fn parse_args(name: &str, args: &[String]) -> anyhow::Result<Group> {
    let mut g = Group::new(name);
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| anyhow!("'{arg}': expected KEY=VALUE, KEY:bin=HEX or KEY:int=N"))?;
        match key.split_once(':') {
            None => {
                g.set_char(key, value);
            }
            Some((key, "bin")) => {
                let bytes = crate::hexarg::parse_hex(value).map_err(|e| anyhow!("'{arg}': {e}"))?;
                g.set_bin(key, bytes);
            }
            Some((key, "int")) => {
                let n: i32 = value
                    .parse()
                    .map_err(|_| anyhow!("'{arg}': '{value}' is not a 32-bit integer"))?;
                g.set_int(key, n);
            }
            Some((_, other)) => bail!("'{arg}': unknown type '{other}' (bin, int)"),
        }
    }
    Ok(g)
}

/// Runs `service`.
pub async fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    match &args.action {
        Action::Open { service, args } => {
            let data = parse_args("command", args)?;
            let client = super::connect(global).await?;
            let context = open(global, &client, service, Some(data)).await?;
            let mut closed = false;
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let line = line.context("reading standard input")?;
                let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
                match words.split_first() {
                    None => continue,
                    Some((verb, rest)) if verb == "command" => {
                        let (name, rest) = rest
                            .split_first()
                            .ok_or_else(|| anyhow!("'{line}': command NAME [ARG...]"))?;
                        command(global, &client, &context, name, rest).await?;
                    }
                    Some((verb, [])) if verb == "close" => {
                        close(global, &client, &context).await?;
                        closed = true;
                        break;
                    }
                    Some(_) => bail!("'{line}': expected `command NAME [ARG...]` or `close`"),
                }
            }
            if !closed {
                close(global, &client, &context).await?;
            }
            Ok(())
        }
        Action::Command {
            service,
            name,
            args,
        } => {
            let client = super::connect(global).await?;
            let context = client
                .service_open(&ServiceRef::parse(service), None)
                .await?;
            command(global, &client, &context, name, args).await?;
            client.service_close(&context).await?;
            Ok(())
        }
        Action::Close { service } => {
            let client = super::connect(global).await?;
            let context = client
                .service_open(&ServiceRef::parse(service), None)
                .await?;
            close(global, &client, &context).await
        }
    }
}

async fn open(
    global: &Global,
    client: &Client,
    service: &str,
    data: Option<Group>,
) -> anyhow::Result<ServiceContext> {
    let context = client
        .service_open(&ServiceRef::parse(service), data)
        .await?;
    print_answer(
        global,
        "open",
        &context,
        "ServiceOpenResponse",
        &context.data,
    )?;
    Ok(context)
}

async fn command(
    global: &Global,
    client: &Client,
    context: &ServiceContext,
    name: &str,
    args: &[String],
) -> anyhow::Result<()> {
    let data = parse_args("command", args)?;
    let reply = client.service_command(context, name, data).await?;
    print_answer(global, "command", context, &reply.name, &reply.data)
}

async fn close(global: &Global, client: &Client, context: &ServiceContext) -> anyhow::Result<()> {
    let data = client.service_close(context).await?;
    print_answer(global, "close", context, "ServiceCloseResponse", &data)
}

fn print_answer(
    global: &Global,
    step: &str,
    context: &ServiceContext,
    name: &str,
    data: &Group,
) -> anyhow::Result<()> {
    if global.json {
        return print_json_line(&json!({
            "step": step,
            "service_id": context.service_id.to_string(),
            "service_name": context.service_name,
            "context_id": context.context_id.to_string(),
            "name": name,
            "data": doc_json(data),
        }));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# {step}: {name} (service {} {}, context {})",
        context.service_name, context.service_id, context.context_id
    )?;
    let mut doc = Group::root();
    let mut named = data.clone();
    named.name = if step == "command" {
        "command"
    } else {
        "service"
    }
    .to_owned();
    doc.add_group(named);
    write!(out, "{}", write_pretty(&doc))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_become_a_group() {
        let args: Vec<String> = ["CardId=0x00000003", "ATR:bin=3B00", "n:int=-4"]
            .map(String::from)
            .to_vec();
        let g = parse_args("command", &args).expect("valid");
        assert_eq!(g.get_char("CardId").ok(), Some("0x00000003"));
        assert_eq!(
            g.get_bin("ATR").ok().map(|b| b.to_vec()),
            Some(vec![0x3B, 0x00])
        );
        assert_eq!(g.get_int("n").ok(), Some(-4));
        for bad in ["novalue", "x:bin=3G", "x:int=many", "x:float=1"] {
            assert!(parse_args("command", &[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
