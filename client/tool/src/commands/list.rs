//! `list`: readers and the cards in them.
//!
//! ```text
//! reader 0x00000001 "emul 0": up, type emul, driver emul 0x00000001, 1 slot, flags KEYPAD DISPLAY
//!   card 0x00000003 in slot 0: PROCESSOR (processorcard), ATR 3B021450, free
//! ```
//!
//! With `--json`: `{"readers": [{"reader_id", "name", "type", "driver_id", "driver_type",
//! "flags", "status", "slots", "cards": [{"card_id", "atr", "card_type", "card_types",
//! "slot", "taken"}]}]}`.

use std::io::Write;

use chipcard_client::hex_upper;
use serde_json::json;

use crate::output::{print_json, reader_json};
use crate::Global;

/// Arguments of `list`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `list`.
pub async fn run(global: &Global, _args: &Args) -> anyhow::Result<()> {
    let client = super::connect(global).await?;
    let readers = client.readers().await?;
    if global.json {
        return print_json(&json!({
            "readers": readers.iter().map(reader_json).collect::<Vec<_>>(),
        }));
    }
    let mut out = std::io::stdout().lock();
    if readers.is_empty() {
        writeln!(out, "no readers")?;
    }
    for r in &readers {
        let flags = if r.reader_flags.is_empty() {
            String::new()
        } else {
            format!(", flags {}", r.reader_flags.join(" "))
        };
        writeln!(
            out,
            "reader {} {:?}: {}, type {}, driver {} {}, {} slot{}{flags}",
            r.reader_id,
            r.reader_name,
            r.status.as_str(),
            r.reader_type,
            r.driver_type,
            r.driver_id,
            r.slots,
            if r.slots == 1 { "" } else { "s" },
        )?;
        if r.cards.is_empty() {
            writeln!(out, "  no card")?;
        }
        for c in &r.cards {
            let types = if c.card_types.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.card_types.join(", "))
            };
            writeln!(
                out,
                "  card {} in slot {}: {}{types}, ATR {}, {}",
                c.card_id,
                c.slot,
                c.card_type.as_str(),
                hex_upper(&c.atr),
                if c.taken { "taken" } else { "free" },
            )?;
        }
    }
    Ok(())
}
