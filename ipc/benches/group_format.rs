//! The group format against serde_json, on the messages that matter (criterion).
//!
//! Content (see `content/mod.rs`): a `CommandCard` with a 255-byte APDU, a `CardAvailable`
//! push, and a `ListReadersResponse` with 16 readers, each a whole envelope; and the three in
//! a row ("mix").
//!
//! - group format: `Received::decode` (each envelope's frame body → its typed message, through
//!   the borrowing view), `write_pretty` and `write_compact` (document → text); also `parse`
//!   (text → document model), for reference.
//! - serde_json: `from_str` into serde structs mirroring the same content (bin fields as hex
//!   strings, decoded to bytes, as the group format does) and `to_vec` of those structs; also
//!   `from_str` into `serde_json::Value`, its document model, for reference.
//!
//! The read comparison is typed against typed (`group_format_typed` / `serde_json`), and
//! document model against document model (`group_format_document` / `serde_json_value`).
//!
//! Run: `cargo bench -p chipcard-ipc --bench group_format`. On a busy machine prefer
//! `--bench group_format_min`. Figures: docs/performance.md.
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

mod content;

use std::hint::black_box;

use chipcard_ipc::{parse, write_compact, write_pretty};
use content::cases;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench_read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    for case in cases() {
        // Check the texts before timing them.
        let parsed = parse(&case.compact).expect("compact parses");
        assert_eq!(parsed.entries.len(), 2 * case.docs.len());
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::new("group_format_typed", case.name),
            &case.bodies,
            |b, bodies| b.iter(|| (case.typed_read)(black_box(bodies))),
        );
        g.bench_with_input(
            BenchmarkId::new("group_format_document", case.name),
            &case.compact,
            |b, text| b.iter(|| parse(black_box(text)).expect("parses")),
        );
        g.bench_with_input(
            BenchmarkId::new("serde_json", case.name),
            &case.json,
            |b, text| b.iter(|| (case.json_read)(black_box(text))),
        );
        // For reference: serde_json into its own document model.
        g.bench_with_input(
            BenchmarkId::new("serde_json_value", case.name),
            &case.json,
            |b, text| {
                b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(text)).expect("JSON"))
            },
        );
    }
    g.finish();
}

fn bench_write(c: &mut Criterion) {
    let mut g = c.benchmark_group("write");
    for case in cases() {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::new("group_format_compact", case.name),
            &case.docs,
            |b, docs| {
                b.iter(|| {
                    let mut out = Vec::new();
                    for d in docs {
                        write_compact(black_box(d), &mut out);
                    }
                    out
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("group_format_pretty", case.name),
            &case.docs,
            |b, docs| {
                b.iter(|| {
                    docs.iter()
                        .map(|d| write_pretty(black_box(d)))
                        .collect::<Vec<_>>()
                })
            },
        );
        g.bench_function(BenchmarkId::new("serde_json", case.name), |b| {
            b.iter(|| black_box((case.json_write)()))
        });
    }
    g.finish();
}

fn sizes(c: &mut Criterion) {
    // Not a benchmark: prints the sizes of the texts once, for docs/performance.md.
    let _ = c;
    for case in cases() {
        let pretty: usize = case.docs.iter().map(|d| write_pretty(d).len()).sum();
        println!(
            "size {}: compact {} B, pretty {} B, json {} B",
            case.name,
            case.compact.len(),
            pretty,
            case.json.len()
        );
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = sizes, bench_read, bench_write
}
criterion_main!(benches);
