//! The fastest batch's time per operation, shared by `group_format_min.rs` and chipcard-bench's
//! part a (`bench/src/formats.rs` includes this file). Other processes can only make a batch
//! slower, so on a shared machine the minimum is a steadier figure than a mean.

use std::time::{Duration, Instant};

/// How a measurement is batched.
pub struct Batches {
    /// A batch runs at least this long (the calls per batch double until it does).
    pub min_len: Duration,
    /// How many batches are timed; the fastest counts.
    pub count: usize,
}

impl Batches {
    /// The fastest time per call of `f`, in ns.
    pub fn min_ns(&self, mut f: impl FnMut()) -> f64 {
        let mut iters = 1u32;
        loop {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            if t.elapsed() >= self.min_len || iters >= 1 << 24 {
                break;
            }
            iters *= 2;
        }
        (0..self.count)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..iters {
                    f();
                }
                t.elapsed().as_nanos() as f64 / f64::from(iters)
            })
            .fold(f64::MAX, f64::min)
    }
}
