//! Any bytes → `parse_bytes`. A document that parses must survive both writers:
//! compact → parse gives the same document, and so does pretty → parse unless one of
//! libgwenhywfar's pretty-form quirks applies (a group name holding a line feed is written raw
//! in the closing comment; a variable with mixed value types is written with the first type).
//!
//! And the view reads what the document model reads, errors included; typed messages read
//! through it (`Received`, as `MessageCodec` reads them) are what the envelope path reads,
//! errors included; and a message read is written straight from its fields (`Addressed`, as
//! `MessageCodec` writes) byte for byte as through the document model (`Envelope::new`).
#![no_main]

use chipcard_ipc::message::{FromClient, FromDriver, MessageSet, Outgoing, ToClient, ToDriver};
use chipcard_ipc::parse::{parse_view_bytes, parse_with};
use chipcard_ipc::{
    parse_bytes, write_compact, write_pretty, Addressed, Envelope, Error, Group, Limits, Received,
};
use libfuzzer_sys::fuzz_target;

/// `Received::<M>` of `body` and the envelope path, as text to compare.
fn typed<M: MessageSet + Outgoing + std::fmt::Debug>(
    body: &[u8],
    decode: fn(&str, &Group) -> Result<M, Error>,
) -> (String, String) {
    let received = match Received::<M>::decode(body) {
        Ok(r) => {
            let mut direct = Vec::new();
            Addressed { id: r.id, refid: r.refid, message: &r.message }.encode_into(&mut direct);
            let through_model = Envelope::new(r.id, r.refid, &r.message).encode();
            assert_eq!(direct, through_model.to_vec(), "typed write");
            format!("{} {:?} {:?}", r.id, r.refid, r.message)
        }
        Err(e) => format!("error {e}"),
    };
    let envelope = match Envelope::decode(body).and_then(|e| Ok((e.id, e.refid, decode(&e.cmd, &e.data)?))) {
        Ok((id, refid, m)) => format!("{id} {refid:?} {m:?}"),
        Err(e) => format!("error {e}"),
    };
    (received, envelope)
}

/// True when the pretty form of `g`'s entries does not read back exactly.
fn pretty_is_lossy(g: &Group) -> bool {
    g.variables().any(|v| {
        v.values
            .windows(2)
            .any(|w| w[0].value_type() != w[1].value_type())
    }) || g
        .all_groups()
        .any(|s| s.name.contains('\n') || pretty_is_lossy(s))
}

/// No limits: the writers' output may be a little longer than the input.
const UNLIMITED: Limits = Limits {
    max_depth: usize::MAX,
    max_line: usize::MAX,
    max_document: usize::MAX,
};

fuzz_target!(|data: &[u8]| {
    let parsed = parse_bytes(data, &Limits::default());
    let view = parse_view_bytes(data, &Limits::default()).map(|v| v.to_group());
    assert_eq!(view, parsed, "view");
    for (received, envelope) in [
        typed::<FromClient>(data, |c, d| FromClient::decode(c, d)),
        typed::<ToClient>(data, |c, d| ToClient::decode(c, d)),
        typed::<ToDriver>(data, |c, d| ToDriver::decode(c, d)),
        typed::<FromDriver>(data, |c, d| FromDriver::decode(c, d)),
    ] {
        assert_eq!(received, envelope, "typed");
    }
    let Ok(doc) = parsed else {
        return;
    };
    let mut compact = Vec::new();
    write_compact(&doc, &mut compact);
    let again =
        parse_bytes(&compact, &UNLIMITED).expect("compact output of a parsed document parses");
    assert_eq!(again, doc, "compact round trip");
    if !pretty_is_lossy(&doc) {
        let pretty = write_pretty(&doc);
        let again =
            parse_with(&pretty, &UNLIMITED).expect("pretty output of a parsed document parses");
        assert_eq!(again, doc, "pretty round trip");
    }
});
