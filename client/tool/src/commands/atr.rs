//! `atr [CARD]`: a card's answer to reset, as the server last saw it.
//!
//! Text: `0x00000003 3B021450` (card id, ATR). With `--json`: `{"card_id", "atr"}`.
//! Without CARD, the first card present.

use std::io::Write;

use chipcard_client::hex_upper;
use serde_json::json;

use super::CardArgs;
use crate::output::print_json;
use crate::Global;

/// Runs `atr`.
pub async fn run(global: &Global, args: &CardArgs) -> anyhow::Result<()> {
    let client = super::connect(global).await?;
    let (_, card) = super::find_card(&client, args.card).await?;
    let atr = hex_upper(&card.atr);
    if global.json {
        return print_json(&json!({ "card_id": card.card_id.to_string(), "atr": atr }));
    }
    writeln!(std::io::stdout().lock(), "{} {atr}", card.card_id)?;
    Ok(())
}
