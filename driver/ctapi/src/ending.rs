//! Ending the driver process after a CT-API call did not return.
//!
//! The thread stuck in the library can be neither joined nor cancelled, and the library
//! may hold a lock or a port that it never gives back: only a new process frees it. So once
//! a hung call has been reported (`ReaderError`) the driver exits with a failure, and
//! chipcardd's supervisor restarts it with its backoff (`restartBackoff`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use chipcard_driver::EXIT_FAILURE;
use tracing::error;

/// How long the process lives on after the hang was reported, so that the failed response
/// to a request in flight (an APDU that hung) still reaches the server.
pub const GRACE: Duration = Duration::from_millis(200);

/// Set once the process is ending, so that a second hang does not start a second exit.
static ENDING: AtomicBool = AtomicBool::new(false);

/// Ends the process with [`EXIT_FAILURE`] after [`GRACE`], because `what` did not return;
/// nothing when the driver is `stopping` already (it then exits on its own).
pub fn end_after_hang(what: &str, stopping: &Arc<AtomicBool>) {
    if stopping.load(Ordering::SeqCst) || ENDING.swap(true, Ordering::SeqCst) {
        return;
    }
    error!(
        call = what,
        "a CT-API call did not return: the driver ends so that chipcardd restarts it"
    );
    let stopping = stopping.clone();
    let span = tracing::Span::current();
    let ender = move || {
        let _span = span.enter();
        thread::sleep(GRACE);
        if !stopping.load(Ordering::SeqCst) {
            std::process::exit(i32::from(EXIT_FAILURE));
        }
    };
    if thread::Builder::new()
        .name("ending".to_owned())
        .spawn(ender)
        .is_err()
    {
        // Without a thread for the grace period, end at once.
        std::process::exit(i32::from(EXIT_FAILURE));
    }
}
