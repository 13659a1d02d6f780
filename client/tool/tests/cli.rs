//! Argument handling and errors of the server subcommands, without a server.

#[path = "support/process.rs"]
mod common;

use common::{run, run_with_env, stderr, stdout};

#[test]
fn bad_apdu_hex_is_refused_before_connecting() {
    // No server exists at this socket; the hex error must come first.
    let out = run(
        &[
            "--socket",
            "/nonexistent/chipcardd.sock",
            "apdu",
            "00",
            "A4",
            "0G",
            "00",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "chipcard-tool: APDU 1 '00 A4 0G 00': 'G' is not a hex digit\n"
    );
    let out = run(&["apdu", "00A4000C023F00", "00B0"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "chipcard-tool: APDU 2 '00B0': 2 byte(s); an APDU has at least 4 (CLA INS P1 P2)\n"
    );
}

#[test]
fn missing_server_is_one_clear_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("chipcardd.sock");
    let socket_arg = socket.to_str().expect("utf-8 path");
    for sub in [
        &["list"][..],
        &["wait", "--timeout", "10"],
        &["atr"],
        &["apdu", "00A4000C"],
        &["check", "0x1"],
        &["reset"],
        &["monitor", "--count", "1"],
    ] {
        let mut args = vec!["--socket", socket_arg];
        args.extend_from_slice(sub);
        let out = run(&args, b"");
        assert_eq!(out.status.code(), Some(1), "{sub:?}");
        assert_eq!(stdout(&out), "", "{sub:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!(
                "chipcard-tool: cannot connect to chipcardd at {socket_arg}: "
            )),
            "{sub:?}: {err}"
        );
        assert!(err.ends_with("; is chipcardd running?\n"), "{sub:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{sub:?}: {err}");
    }
}

#[test]
fn socket_comes_from_the_environment_and_json_flag_is_global() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("env.sock");
    let out = run_with_env(&["list", "--json"], b"", &[("CHIPCARD_SOCKET", &socket)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("at {}: ", socket.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["apdu"][..],
        &["check", "not-a-card"],
        &["frobnicate"],
        &[],
    ] {
        let out = run(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let out = run(&["check", "zz"], b"");
    assert!(
        stderr(&out).contains("'zz' is not a card id"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_lists_every_subcommand() {
    let out = run(&["--help"], b"");
    assert!(out.status.success());
    let help = stdout(&out);
    for sub in [
        "list", "wait", "atr", "apdu", "check", "reset", "monitor", "fmt",
    ] {
        assert!(help.contains(sub), "{sub} missing from\n{help}");
    }
}
