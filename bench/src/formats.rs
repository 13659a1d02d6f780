//! a: the group format against serde_json on the same content as the ipc crate's benches
//! (`ipc/benches/content/mod.rs`, included here, so both measure the same messages): a
//! `CommandCard` with a 255-byte APDU, a `CardAvailable` push, a `ListReadersResponse` with 16
//! readers, and the three in a row ("mix").
//!
//! Read: each envelope's frame body into its typed message (`Received<FromClient>` /
//! `Received<ToClient>`, through the borrowing view, as the hot paths read) against
//! `serde_json::from_str` into serde structs of the same content. Write: the documents as
//! compact text (what goes into a frame) against `serde_json::to_vec` of those structs. Each
//! figure is the fastest batch's time per operation (as `group_format_min` measures): other
//! processes can only make a batch slower.

use std::hint::black_box;
use std::time::Duration;

use chipcard_ipc::write_compact;

use crate::parts::Plan;
use crate::report::Row;

// The content lives beside the ipc crate's benches, which it was written for; this crate
// includes the same file instead of a copy. (Not in chipcard-testlab: ipc's benches would
// then dev-depend on a crate that depends on chipcard-ipc, a second chipcard-ipc whose types
// are not the ones under test. Not in chipcard-ipc behind a feature: `cargo bench -p
// chipcard-ipc` would need the feature named, and the library would carry bench code.)
#[path = "../../ipc/benches/content/mod.rs"]
mod content;
// How group_format_min measures, likewise.
#[path = "../../ipc/benches/fastest/mod.rs"]
mod fastest;

use fastest::Batches;

/// a: per message and direction, group format and serde_json in ns per operation, and the
/// ratio serde_json / group format (≥ 1.0: the group format is at least as fast).
pub fn group_format_vs_json(plan: &Plan) -> Vec<Row> {
    let batches = if plan.quick {
        Batches {
            min_len: Duration::from_micros(200),
            count: 5,
        }
    } else {
        Batches {
            min_len: Duration::from_millis(2),
            count: 200,
        }
    };
    let mut rows = Vec::new();
    for case in content::cases() {
        let group_read = batches.min_ns(|| (case.typed_read)(black_box(&case.bodies)));
        let json_read = batches.min_ns(|| (case.json_read)(black_box(&case.json)));
        let group_write = batches.min_ns(|| {
            let mut out = Vec::new();
            for d in &case.docs {
                write_compact(black_box(d), &mut out);
            }
            black_box(out);
        });
        let json_write = batches.min_ns(|| {
            black_box((case.json_write)());
        });
        for (direction, group, json) in [
            ("read (typed)", group_read, json_read),
            ("write", group_write, json_write),
        ] {
            let ratio = if group > 0.0 { json / group } else { 0.0 };
            rows.push(Row::new(
                "a",
                format!(
                    "{} {direction}: group format vs serde_json (ratio serde_json / group format)",
                    case.name
                ),
                format!("{group:.0} ns"),
                format!("{json:.0} ns"),
                Some(ratio),
                "≥ 1.0",
                plan.met(ratio >= 1.0),
            ));
        }
    }
    rows
}
