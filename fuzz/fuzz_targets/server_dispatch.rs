//! Any bytes, as a client would send them (split in two pieces at a point the input
//! chooses) → chipcardd's framing, envelope decoding, id-order check and request dispatcher,
//! with a registry that has no drivers (`chipcardd::harness::dispatch_bytes`). Nothing may
//! panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    else {
        return;
    };
    let split = data.first().map_or(0, |&b| usize::from(b));
    runtime.block_on(chipcardd::harness::dispatch_bytes(data, split));
});
