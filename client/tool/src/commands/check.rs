//! `check [CARD]`: whether a card is still present.
//!
//! Text: `0x00000003 present` or `0x00000003 removed`. With `--json`:
//! `{"card_id", "present": bool}`. Without CARD, the first card present.

use std::io::Write;

use serde_json::json;

use super::CardArgs;
use crate::output::print_json;
use crate::Global;

/// Runs `check`.
pub async fn run(global: &Global, args: &CardArgs) -> anyhow::Result<()> {
    let client = super::connect(global).await?;
    let card_id = super::card_id_or_first(&client, args.card).await?;
    let present = client.check_card(card_id).await?;
    if global.json {
        return print_json(&json!({ "card_id": card_id.to_string(), "present": present }));
    }
    writeln!(
        std::io::stdout().lock(),
        "{card_id} {}",
        if present { "present" } else { "removed" }
    )?;
    Ok(())
}
