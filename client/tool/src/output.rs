//! Text and JSON output shared by the subcommands.

use std::io::Write;

use chipcard_client::ipc::model::{Entry, Group};
use chipcard_client::{hex_upper, CardAvailable, CardInfo, Notification, ReaderInfo};
use serde_json::{json, Value};

/// An error and its causes as one line, leaving out a cause whose text the line already
/// holds (many messages include their source's text).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// Prints `value` as pretty JSON and a newline.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Prints `value` as one line of JSON and flushes (for streams of events).
pub fn print_json_line(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// A reader and its cards as JSON.
pub fn reader_json(r: &ReaderInfo) -> Value {
    json!({
        "reader_id": r.reader_id.to_string(),
        "name": r.reader_name,
        "type": r.reader_type,
        "driver_id": r.driver_id.to_string(),
        "driver_type": r.driver_type,
        "flags": r.reader_flags,
        "status": r.status.as_str(),
        "slots": r.slots,
        "cards": r.cards.iter().map(card_info_json).collect::<Vec<_>>(),
    })
}

/// A card of a reader listing as JSON.
pub fn card_info_json(c: &CardInfo) -> Value {
    json!({
        "card_id": c.card_id.to_string(),
        "atr": hex_upper(&c.atr),
        "card_type": c.card_type.as_str(),
        "card_types": c.card_types,
        "slot": c.slot,
        "taken": c.taken,
    })
}

/// A `CardAvailable` push as JSON.
pub fn card_available_json(c: &CardAvailable) -> Value {
    json!({
        "card_id": c.card_id.to_string(),
        "atr": hex_upper(&c.atr),
        "card_type": c.card_type.as_str(),
        "card_types": c.card_types,
        "reader_id": c.reader_id.to_string(),
        "reader_name": c.reader_name,
        "reader_flags": c.reader_flags,
        "driver_type": c.driver_type,
    })
}

/// A notification as JSON; its `data {}` group in the faithful JSON view of the ipc crate.
pub fn notification_json(n: &Notification) -> Value {
    json!({
        "event": "notification",
        "client_id": n.client_id.to_string(),
        "ntype": n.ntype,
        "ncode": n.ncode,
        "data": doc_json(&n.data),
    })
}

/// The faithful JSON view of a document or group (the ipc crate's).
pub fn doc_json(g: &Group) -> Value {
    chipcard_client::ipc::json::to_json(g)
}

/// A group's contents on one line: `name=v1,v2 sub{name=v}`.
pub fn group_line(g: &Group) -> String {
    let mut parts = Vec::new();
    for entry in &g.entries {
        match entry {
            Entry::Var(v) => {
                let values: Vec<String> =
                    v.values.iter().map(|x| x.as_text().into_owned()).collect();
                parts.push(format!("{}={}", v.name, values.join(",")));
            }
            Entry::Group(sub) => parts.push(format!("{}{{{}}}", sub.name, group_line(sub))),
        }
    }
    parts.join(" ")
}
