//! `monitor [--count N]`: prints notifications (`SetNotify *:*`) and card events
//! (`CardAvailable`, after `StartWait`) as they come, until Ctrl-C or N events.
//!
//! Text, one line per event:
//!
//! ```text
//! card inserted: CardId=0x00000003 ReaderId=0x00000001
//! available 0x00000003 in 0x00000001 "emul 0": PROCESSOR (processorcard), ATR 3B021450
//! ```
//!
//! With `--json`, one JSON object per line: `{"event": "notification", "client_id",
//! "ntype", "ncode", "data"}` or `{"event": "card-available", "card_id", ...}`.

use std::io::Write;

use chipcard_client::hex_upper;
use futures::StreamExt;

use crate::output::{card_available_json, group_line, notification_json, print_json_line};
use crate::Global;

/// Arguments of `monitor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// Runs `monitor`.
pub async fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let client = super::connect(global).await?;
    let mut notes = client.notifications();
    let mut cards = client.available_cards();
    client.set_notify(&["*:*"]).await?;
    client.start_wait(&[], &[]).await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut seen = 0u64;
    while args.count.map_or(true, |n| seen < n) {
        tokio::select! {
            note = notes.next() => {
                let Some(note) = note else { break };
                if global.json {
                    print_json_line(&notification_json(&note))?;
                } else {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{} {}: {}", note.ntype, note.ncode, group_line(&note.data))?;
                    out.flush()?;
                }
            }
            card = cards.next() => {
                let Some(card) = card else { break };
                if global.json {
                    let mut value = card_available_json(&card);
                    if let Some(obj) = value.as_object_mut() {
                        obj.insert("event".into(), "card-available".into());
                    }
                    print_json_line(&value)?;
                } else {
                    let mut out = std::io::stdout().lock();
                    let types = if card.card_types.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", card.card_types.join(", "))
                    };
                    writeln!(
                        out,
                        "available {} in {} {:?}: {}{types}, ATR {}",
                        card.card_id,
                        card.reader_id,
                        card.reader_name,
                        card.card_type.as_str(),
                        hex_upper(&card.atr),
                    )?;
                    out.flush()?;
                }
            }
            _ = &mut ctrl_c => return Ok(()),
        }
        seen += 1;
    }
    if args.count.is_some_and(|n| seen >= n) {
        return Ok(());
    }
    // A stream ended: the connection is gone.
    Err(client
        .readers()
        .await
        .err()
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("the server stopped sending events")))
}
