//! The call log: every CT-API call, one line each, appended to the file named by
//! [`ENV_CALLS`], so that a test can check what an application sent.

use std::io::Write;

/// The environment variable naming the call log. Unset: nothing is logged.
pub const ENV_CALLS: &str = "CHIPCARD_CTAPI_EMUL_CALLS";

/// Appends `line` to the call log, if there is one. A log that cannot be written is
/// skipped: a CT-API library has nowhere to report it.
pub(crate) fn record(line: &str) {
    let Some(path) = std::env::var_os(ENV_CALLS) else {
        return;
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: lines from several threads do not interleave.
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}
