//! Any bytes → `parse_bytes`. A document that parses must survive both writers:
//! compact → parse gives the same document, and so does pretty → parse unless one of
//! libgwenhywfar's pretty-form quirks applies (a group name holding a line feed is written raw
//! in the closing comment; a variable with mixed value types is written with the first type).
#![no_main]

use chipcard_ipc::parse::parse_with;
use chipcard_ipc::{parse_bytes, write_compact, write_pretty, Group, Limits};
use libfuzzer_sys::fuzz_target;

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
    let Ok(doc) = parse_bytes(data, &Limits::default()) else {
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
