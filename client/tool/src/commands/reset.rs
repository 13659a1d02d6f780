//! `reset [CARD]`: takes a card, resets it and prints its new ATR.
//!
//! Text: `0x00000003 3B021450` (card id, new ATR). With `--json`: `{"card_id", "atr"}`.
//! Without CARD, the first card present.

use std::io::Write;

use serde_json::json;

use super::CardArgs;
use crate::output::print_json;
use crate::Global;

/// Runs `reset`.
pub async fn run(global: &Global, args: &CardArgs) -> anyhow::Result<()> {
    let client = super::connect(global).await?;
    let card_id = super::card_id_or_first(&client, args.card).await?;
    let guard = client.take_card(card_id, super::TAKE_TIMEOUT).await?;
    let atr = guard.reset().await?;
    guard.release().await?;
    if global.json {
        return print_json(&json!({ "card_id": card_id.to_string(), "atr": atr.to_string() }));
    }
    writeln!(std::io::stdout().lock(), "{card_id} {atr}")?;
    Ok(())
}
