//! Every example block of the seed (libchipcard's IPC description) must parse (PROTOCOL §1).
//!
//! A block starts with a line `Name {` in column 0 and ends with the next line starting with
//! `}` in column 0. A copy of the seed lives in `tests/data/`; if it is missing, this test fails
//! rather than skipping.

use std::path::PathBuf;

use chipcard_ipc::{parse, write_compact, write_pretty, Group, Value};

fn seed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/libchipcard-ipc-reference.txt")
}

fn seed_text() -> String {
    let path = seed_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the seed {} is needed by this test and could not be read: {e}",
            path.display()
        )
    })
}

/// The example blocks of the seed: (line number of the opening line, text).
fn blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match current.as_mut() {
            None => {
                let opens = line.starts_with(|c: char| c.is_ascii_alphabetic())
                    && line.trim_end().ends_with('{');
                if opens {
                    current = Some((n + 1, format!("{line}\n")));
                }
            }
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
                if line.starts_with('}') {
                    out.extend(current.take());
                }
            }
        }
    }
    assert!(current.is_none(), "the seed ends inside a block");
    out
}

fn parsed_blocks() -> Vec<(usize, Group)> {
    let text = seed_text();
    blocks(&text)
        .into_iter()
        .map(|(line, block)| {
            let doc = parse(&block).unwrap_or_else(|e| {
                panic!("seed block at line {line} does not parse: {e}\n{block}")
            });
            (line, doc)
        })
        .collect()
}

/// The top-level group of the first block called `name`.
fn block<'a>(docs: &'a [(usize, Group)], name: &str) -> &'a Group {
    docs.iter()
        .find_map(|(_, d)| d.group(name))
        .unwrap_or_else(|| panic!("no seed block {name}"))
}

fn chars(v: &[&str]) -> Vec<Value> {
    v.iter().map(|s| Value::Char((*s).to_owned())).collect()
}

#[test]
fn every_seed_block_parses() {
    let docs = parsed_blocks();
    assert_eq!(docs.len(), 35, "the seed has 35 example blocks");
    for (line, doc) in &docs {
        assert_eq!(doc.entries.len(), 1, "block at line {line} is one group");
    }
    // The whole seed's blocks as one document, too.
    let text = seed_text();
    let all: String = blocks(&text).into_iter().map(|(_, b)| b).collect();
    let doc = parse(&all).expect("all blocks as one document");
    assert_eq!(doc.all_groups().count(), 35);
    assert_eq!(doc.groups("Notification").count(), 3);
}

#[test]
fn seed_blocks_have_the_expected_content() {
    let docs = parsed_blocks();

    let ready = block(&docs, "ClientReady");
    assert_eq!(ready.get_char("Application").ok(), Some("Hbcicard v1.0"));
    assert_eq!(ready.get_char("System").ok(), Some("Linux"));

    let take = block(&docs, "TakeCardResponse");
    assert_eq!(take.get_char("Code").ok(), Some("OK"));
    assert_eq!(take.get_char("Text").ok(), Some("Command ok"));

    let avail = block(&docs, "CardAvailable");
    assert_eq!(avail.get_char("CardId").ok(), Some("0x12345678"));
    assert_eq!(avail.get_char("CardType").ok(), Some("PROCESSOR"));
    assert_eq!(avail.get_char("CardTypes").ok(), Some("DDV1"));
    assert_eq!(
        avail.var("ReaderFlags").map(|v| v.values.clone()),
        Some(chars(&["DISPLAY", "KEYPAD"]))
    );
    assert_eq!(
        avail.get_bin("ATR").ok().as_deref(),
        Some(&[1u8, 2, 3, 4][..])
    );
    assert_eq!(avail.entries.len(), 5);

    let wait = block(&docs, "StartWait");
    assert_eq!(wait.get_chars("mask").ok(), Some(vec!["KEYPAD", "DISPLAY"]));
    let wait_r = block(&docs, "StartWaitResponse");
    assert_eq!(wait_r.get_char("code").ok(), Some("OK"));
    assert_eq!(wait_r.get_char("text").ok(), Some("ok"));

    let stop = block(&docs, "StopWait");
    assert!(stop.is_empty());

    let var = block(&docs, "GetDriverVarResponse");
    assert_eq!(var.get_char("varName").ok(), Some("testVar"));
    assert_eq!(var.get_char("varValue").ok(), Some("Answer"));

    let notes: Vec<&Group> = docs
        .iter()
        .filter_map(|(_, d)| d.group("Notification"))
        .collect();
    assert_eq!(notes.len(), 3);
    assert_eq!(notes[0].get_char("clientId").ok(), Some("0x12345"));
    assert_eq!(
        notes[0].get_group("data").map(Group::is_empty).ok(),
        Some(true)
    );
    let data = notes[2].get_group("data").expect("data");
    assert_eq!(
        data.get_char("shortDescr").ok(),
        Some("Towitoko Chip Drive Micro")
    );
    assert_eq!(data.entries.len(), 8);

    let driver = block(&docs, "DriverReady");
    assert_eq!(driver.get_char("DriverId").ok(), Some("0x12345678"));
    assert_eq!(driver.get_char("Text").ok(), Some("Driver ready"));
    let reader = driver
        .get_group("Readers")
        .and_then(|r| r.get_group("Reader"))
        .expect("Readers/Reader");
    assert_eq!(reader.get_char("Name").ok(), Some("reader1"));
    assert_eq!(
        reader.get_chars("ReaderFlags").ok(),
        Some(vec!["DISPLAY", "KEYPAD"])
    );

    let open = block(&docs, "ServiceOpenResponse");
    assert_eq!(open.get_int("code").ok(), Some(0));
    assert_eq!(
        open.var("code").map(|v| v.values.clone()),
        Some(vec![Value::Int(0)])
    );
    assert_eq!(
        open.get_chars("serviceFlags").ok(),
        Some(vec!["client", "autoload", "silent"])
    );
    assert!(open
        .get_group("service")
        .map(Group::is_empty)
        .unwrap_or(false));

    let cmd = block(&docs, "ServiceCommand");
    assert_eq!(
        cmd.get_group("command")
            .and_then(|c| c.get_char("name"))
            .ok(),
        Some("CommandName")
    );
    let err = block(&docs, "Error");
    assert_eq!(err.get_int("code").ok(), Some(1));
    assert_eq!(err.get_char("text").ok(), Some("error text"));
}

#[test]
fn seed_blocks_round_trip_through_both_writers() {
    for (line, doc) in parsed_blocks() {
        let pretty = write_pretty(&doc);
        assert_eq!(
            parse(&pretty).as_ref(),
            Ok(&doc),
            "pretty, block at line {line}"
        );
        let mut compact = Vec::new();
        write_compact(&doc, &mut compact);
        let compact = String::from_utf8(compact).expect("compact output is UTF-8");
        assert_eq!(
            parse(&compact).as_ref(),
            Ok(&doc),
            "compact, block at line {line}"
        );
    }
}
