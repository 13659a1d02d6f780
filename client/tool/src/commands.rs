//! The subcommands, one file each, and what they share.

use std::time::Duration;

use anyhow::{anyhow, bail};
use chipcard_client::{CardId, CardInfo, Client, ConnectOptions, ReaderInfo};

use crate::Global;

pub mod apdu;
pub mod atr;
pub mod check;
pub mod fmt;
pub mod info;
pub mod list;
pub mod monitor;
pub mod reset;
pub mod service;
pub mod wait;

/// How long a subcommand lets the server wait for a card another client holds.
pub const TAKE_TIMEOUT: Duration = chipcard_client::DEFAULT_TAKE_TIMEOUT;

/// The arguments of the subcommands that act on one card (`atr`, `check`, `reset`).
#[derive(Debug, clap::Args)]
pub struct CardArgs {
    /// The card (e.g. 0x00000003); default: the first card present.
    #[arg(value_parser = parse_card_id)]
    pub card: Option<CardId>,
}

/// Connects to the server the global options name.
pub async fn connect(global: &Global) -> anyhow::Result<Client> {
    let mut options = ConnectOptions::new(format!("chipcard-tool {}", env!("CARGO_PKG_VERSION")));
    if let Some(socket) = &global.socket {
        options = options.socket(socket);
    }
    Ok(Client::connect(options).await?)
}

/// Parses a card id as given on the command line (`0x0000002a`, `2a`).
pub fn parse_card_id(s: &str) -> Result<CardId, String> {
    s.parse::<CardId>()
        .map_err(|_| format!("'{s}' is not a card id (hex, e.g. 0x0000002a)"))
}

/// The card `wanted`, or the first card present (one not taken by another client if there
/// is one), with its reader.
pub async fn find_card(
    client: &Client,
    wanted: Option<CardId>,
) -> anyhow::Result<(ReaderInfo, CardInfo)> {
    let readers = client.readers().await?;
    let all = readers
        .iter()
        .flat_map(|r| r.cards.iter().map(move |c| (r, c)));
    let found = match wanted {
        Some(id) => all
            .into_iter()
            .find(|(_, c)| c.card_id == id)
            .ok_or_else(|| anyhow!("card {id} is not present"))?,
        None => {
            let cards: Vec<_> = all.collect();
            match cards.iter().find(|(_, c)| !c.taken).or(cards.first()) {
                Some(found) => *found,
                None => bail!("no card present; insert one (chipcard-tool wait waits for it)"),
            }
        }
    };
    Ok((found.0.clone(), found.1.clone()))
}

/// The card `wanted`, or the first card present.
pub async fn card_id_or_first(client: &Client, wanted: Option<CardId>) -> anyhow::Result<CardId> {
    match wanted {
        Some(id) => Ok(id),
        None => Ok(find_card(client, None).await?.1.card_id),
    }
}
