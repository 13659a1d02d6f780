//! What the ctapi driver's tests share: the CT-API libraries they load.

use std::path::PathBuf;

/// Where Debian's libctapimkt1 puts the library.
pub const MKT_LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/libctapimkt.so.1";

/// The emulated CT-API library: Cargo builds the dev-dependency's cdylib into `deps/`
/// beside this test; `cargo build -p chipcard-ctapi-emul` puts one in `target/debug`.
pub fn emul_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let deps = exe.parent().expect("deps dir");
    let candidates = [
        deps.join("libchipcard_ctapi_emul.so"),
        deps.parent()
            .map(|d| d.join("libchipcard_ctapi_emul.so"))
            .unwrap_or_default(),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!("libchipcard_ctapi_emul.so not found in {candidates:?}; run `cargo build -p chipcard-ctapi-emul`")
        })
}

/// Debian's real CT-API library; the test fails with what to install when it is missing.
pub fn mkt_library() -> PathBuf {
    let path = PathBuf::from(MKT_LIBRARY);
    assert!(
        path.is_file(),
        "{MKT_LIBRARY} is missing: install it with `apt-get install libctapimkt1` (scripts/install-deps does)"
    );
    path
}
