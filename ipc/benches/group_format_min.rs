//! The same comparison as `group_format.rs`, measured as the minimum over many batches.
//!
//! Read: "gf typed" reads each envelope's frame body into its typed message
//! (`Received<FromClient>` / `Received<ToClient>`), the counterpart of serde_json reading into
//! serde structs ("json"); the read ratio is theirs. For reference: "gf parse" reads the same
//! text into the document model (`Group`), the counterpart of "json Val" (`serde_json::Value`),
//! and "doc" is the ratio json / gf parse.
//!
//! Each operation runs in batches of at least 2 ms; the figure is the fastest batch's time
//! per operation, over 200 batches. Other processes can only make a batch slower, so on a
//! shared machine the minimum is a steadier figure than criterion's mean. Prints a table
//! (ns per operation and serde_json / group format ratios, above 1 = group format faster).
//! The "clone" column clones the parsed document: the same allocations as parsing it, and no
//! parsing, so it is the floor the document model sets for `parse`.
//!
//! Then, without a filter or with `hot_path`, the per-message cost of an APDU round trip's four
//! messages read and written the old way and through `MessageCodec` ([`hot_path`]).
//!
//! Run: `cargo bench -p chipcard-ipc --bench group_format_min`.

mod content;
mod fastest;
mod hot_path;

use std::hint::black_box;
use std::time::Duration;

use chipcard_ipc::{parse, write_compact, write_pretty};
use fastest::Batches;

/// The fastest time per call of `f`, in ns: batches of at least 2 ms, the fastest of 200.
fn min_ns(f: impl FnMut()) -> f64 {
    Batches {
        min_len: Duration::from_millis(2),
        count: 200,
    }
    .min_ns(f)
}

fn main() {
    // `cargo bench` passes `--bench`; a further argument filters the cases by name.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    if filter.as_deref().map_or(true, |f| "hot_path".contains(f)) {
        hot_path::table(&|f| min_ns(f));
    }
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} | {:>9} {:>9} {:>9} {:>7} {:>6}",
        "ns per op",
        "gf typed",
        "gf parse",
        "clone",
        "json",
        "json Val",
        "ratio",
        "doc",
        "gf cmpct",
        "gf prty",
        "json",
        "ratio c",
        "p"
    );
    for case in content::cases() {
        if filter.as_deref().is_some_and(|f| !case.name.contains(f)) {
            continue;
        }
        let typed = min_ns(|| (case.typed_read)(black_box(&case.bodies)));
        let text = &case.compact;
        let parsed = min_ns(|| {
            black_box(parse(black_box(text)).expect("parses"));
        });
        let doc = parse(text).expect("parses");
        let clone = min_ns(|| {
            black_box(black_box(&doc).clone());
        });
        let json_read = min_ns(|| (case.json_read)(black_box(&case.json)));
        let json_value = min_ns(|| {
            black_box(
                serde_json::from_str::<serde_json::Value>(black_box(&case.json)).expect("JSON"),
            );
        });
        let compact = min_ns(|| {
            let mut out = Vec::new();
            for d in &case.docs {
                write_compact(black_box(d), &mut out);
            }
            black_box(out);
        });
        let pretty = min_ns(|| {
            black_box(
                case.docs
                    .iter()
                    .map(|d| write_pretty(black_box(d)))
                    .collect::<Vec<_>>(),
            );
        });
        let json_write = min_ns(|| {
            black_box((case.json_write)());
        });
        println!(
            "{:<16} {typed:>9.0} {parsed:>9.0} {clone:>9.0} {json_read:>9.0} {json_value:>9.0} \
             {:>6.2} {:>6.2} | {compact:>9.0} {pretty:>9.0} {json_write:>9.0} {:>7.2} {:>6.2}",
            case.name,
            json_read / typed,
            json_read / parsed,
            json_write / compact,
            json_write / pretty
        );
    }
}
