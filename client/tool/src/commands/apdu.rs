//! `apdu [--card CARD] HEX...`: takes a card and sends it APDUs in one session.
//!
//! Text, per APDU:
//!
//! ```text
//! > 00A4000C023F00
//! < 9000 (success)
//! > 00B0000004
//! < 01020304 9000 (success)
//! ```
//!
//! (`<` response data, if any, then the status word and its meaning.) With `--json`:
//! `{"card_id", "responses": [{"command", "data", "sw", "meaning", "success"}]}`.
//! A status word other than 9000 is printed, not treated as a failure.

use std::io::Write;

use chipcard_client::{hex_upper, CardId};
use serde_json::json;

use crate::output::print_json;
use crate::Global;

/// Arguments of `apdu`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "HEX: one APDU as single-byte words (00 A4 00 0C 02 3F 00) or as one \
word (00A4000C023F00 or \"00 A4 00 0C 02 3F 00\"); several APDUs as one word each \
(00A4000C023F00 00B0000000) or separated by ',' or ';'."
)]
pub struct Args {
    /// The card (e.g. 0x00000003); default: the first card present.
    #[arg(long, value_parser = super::parse_card_id)]
    pub card: Option<CardId>,
    /// The command APDUs in hex.
    #[arg(required = true, value_name = "HEX")]
    pub hex: Vec<String>,
}

/// Runs `apdu`.
pub async fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    // Check the arguments before touching the server.
    let apdus = crate::hexarg::parse_apdus(&args.hex).map_err(anyhow::Error::msg)?;
    let client = super::connect(global).await?;
    let card_id = super::card_id_or_first(&client, args.card).await?;
    let guard = client.take_card(card_id, super::TAKE_TIMEOUT).await?;
    let mut results = Vec::new();
    for apdu in &apdus {
        let response = guard.transmit(apdu).await?;
        if global.json {
            results.push(json!({
                "command": hex_upper(apdu),
                "data": hex_upper(response.data()),
                "sw": response.status().to_string(),
                "meaning": response.status().meaning(),
                "success": response.is_success(),
            }));
        } else {
            let mut out = std::io::stdout().lock();
            writeln!(out, "> {}", hex_upper(apdu))?;
            let data = if response.data().is_empty() {
                String::new()
            } else {
                format!("{} ", hex_upper(response.data()))
            };
            writeln!(
                out,
                "< {data}{} ({})",
                response.status(),
                response.status().meaning()
            )?;
            out.flush()?;
        }
    }
    guard.release().await?;
    if global.json {
        print_json(&json!({ "card_id": card_id.to_string(), "responses": results }))?;
    }
    Ok(())
}
