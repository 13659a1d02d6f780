//! `info [CARD]`: what the cardinfo service says about a card: its ATR decoded, the card
//! types chipcard matched, and pcsc-tools' descriptions of the ATR.
//!
//! It opens the service (`--service`, default `cardinfo`), sends `Describe` with the card's
//! id and closes the service. Without CARD, the first card present. Text: one line per
//! fact, interface bytes with their meaning; with `--json`:
//! `{"card_id", "service", "data"}` where `data` is the service's answer (`command {}`) in
//! the ipc crate's JSON view.

use std::io::Write;

use chipcard_client::ipc::Group;
use chipcard_client::{CardId, ServiceRef};
use serde_json::json;

use crate::output::{doc_json, print_json};
use crate::Global;

/// Arguments of `info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The card (e.g. 0x00000003); default: the first card present.
    #[arg(value_parser = super::parse_card_id)]
    pub card: Option<CardId>,
    /// The service to ask.
    #[arg(long, default_value = "cardinfo", value_name = "SERVICE")]
    pub service: String,
}

/// Runs `info`.
pub async fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let client = super::connect(global).await?;
    let card_id = super::card_id_or_first(&client, args.card).await?;
    let context = client
        .service_open(&ServiceRef::parse(&args.service), None)
        .await?;
    let request = Group::new("command").with_char("CardId", card_id.to_string());
    let reply = client.service_command(&context, "Describe", request).await;
    let closed = client.service_close(&context).await;
    let reply = reply?;
    closed?;
    if global.json {
        return print_json(&json!({
            "card_id": card_id.to_string(),
            "service": context.service_name,
            "data": doc_json(&reply.data),
        }));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text(&reply.data).as_bytes())?;
    Ok(())
}

/// The answer of `Describe` as lines of text.
pub fn text(d: &Group) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: String| lines.push((k.to_owned(), v));
    let chars = |g: &Group, k: &str| g.get_chars(k).unwrap_or_default().join(", ");
    let char1 = |g: &Group, k: &str| g.get_char(k).unwrap_or_default().to_owned();
    if d.var("CardId").is_some() {
        add(
            "card",
            format!("{} in {}", char1(d, "CardId"), char1(d, "ReaderName")),
        );
        let types = match chars(d, "CardTypes") {
            t if t.is_empty() => "none matched".to_owned(),
            t => t,
        };
        add("card types", format!("{types} ({})", char1(d, "CardType")));
    }
    let atr_bytes = d.get_bin("ATR").map(|b| b.to_vec()).unwrap_or_default();
    add("ATR", spaced(&atr_bytes));
    if let Some(atr) = d.group("atr") {
        add(
            "TS",
            format!(
                "{} ({} convention)",
                char1(atr, "TS"),
                char1(atr, "convention")
            ),
        );
        if atr.var("T0").is_some() {
            let k = atr.get_int("historicalLength").unwrap_or_default();
            add("T0", format!("{} ({k} historical bytes)", char1(atr, "T0")));
        }
        for b in atr.groups("interface") {
            add(
                &char1(b, "name"),
                format!("{}  {}", char1(b, "value"), char1(b, "meaning")),
            );
        }
        add("protocols", chars(atr, "protocols"));
        let hist = atr
            .get_bin("historical")
            .map(|b| b.to_vec())
            .unwrap_or_default();
        if !hist.is_empty() {
            add(
                "historical",
                format!("{}  \"{}\"", spaced(&hist), char1(atr, "historicalText")),
            );
            for line in atr.get_chars("historicalMeaning").unwrap_or_default() {
                add("", line.to_owned());
            }
        }
        add("TCK", char1(atr, "TCKStatus"));
        add(
            "valid",
            match atr.get_char("valid").unwrap_or_default() {
                "yes" => "yes".to_owned(),
                _ => format!(
                    "no: {}",
                    atr.get_chars("problems").unwrap_or_default().join("; ")
                ),
            },
        );
    }
    if let Some(desc) = d.group("descriptions") {
        match desc.get_char("status").unwrap_or_default() {
            "ok" => {
                let texts: Vec<String> = desc
                    .groups("entry")
                    .flat_map(|e| {
                        e.get_chars("text")
                            .unwrap_or_default()
                            .into_iter()
                            .map(str::to_owned)
                    })
                    .collect();
                if texts.is_empty() {
                    add("pcsc-tools", "no description of this ATR".to_owned());
                }
                for t in texts {
                    add("pcsc-tools", t);
                }
            }
            status => add("pcsc-tools", format!("{status}: {}", char1(desc, "text"))),
        }
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines
        .into_iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

fn spaced(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_reads_as_lines() {
        let atr = Group::new("atr")
            .with_char("TS", "3B")
            .with_char("convention", "direct")
            .with_char("T0", "02")
            .with_int("historicalLength", 2)
            .with_char("protocols", "T=0")
            .with_bin("historical", vec![0x14, 0x50])
            .with_char("historicalText", ".P")
            .with_char("TCKStatus", "absent")
            .with_char("valid", "yes");
        let desc = Group::new("descriptions")
            .with_char("status", "not installed")
            .with_char("text", "the ATR list x is not installed");
        let d = Group::new("command")
            .with_bin("ATR", vec![0x3B, 0x02, 0x14, 0x50])
            .with_group(atr)
            .with_group(desc);
        assert_eq!(
            text(&d),
            "ATR         3B 02 14 50\n\
             TS          3B (direct convention)\n\
             T0          02 (2 historical bytes)\n\
             protocols   T=0\n\
             historical  14 50  \".P\"\n\
             TCK         absent\n\
             valid       yes\n\
             pcsc-tools  not installed: the ATR list x is not installed\n"
        );
    }
}
