//! `wait`: waits for a card and prints it.
//!
//! ```text
//! card:   0x00000003
//! atr:    3B021450
//! type:   PROCESSOR
//! types:  processorcard
//! reader: 0x00000001 "emul 0" (driver emul)
//! ```
//!
//! With `--json`: `{"card_id", "atr", "card_type", "card_types", "reader_id",
//! "reader_name", "reader_flags", "driver_type"}`. A card already present counts.

use std::io::Write;
use std::time::Duration;

use chipcard_client::hex_upper;

use crate::output::{card_available_json, print_json};
use crate::Global;

/// Arguments of `wait`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long to wait, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub timeout: u64,
}

/// Runs `wait`.
pub async fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let client = super::connect(global).await?;
    let card = client
        .wait_for_card(Duration::from_millis(args.timeout))
        .await?;
    if global.json {
        return print_json(&card_available_json(&card));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "card:   {}", card.card_id)?;
    writeln!(out, "atr:    {}", hex_upper(&card.atr))?;
    writeln!(out, "type:   {}", card.card_type.as_str())?;
    writeln!(out, "types:  {}", card.card_types.join(", "))?;
    writeln!(
        out,
        "reader: {} {:?} (driver {})",
        card.reader_id, card.reader_name, card.driver_type
    )?;
    Ok(())
}
