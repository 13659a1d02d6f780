//! `chipcard-tool fmt` as a process.

#[path = "support/process.rs"]
mod common;

use common::{run, stderr, stdout};

const INPUT: &str = "# a comment\nreader {\n  name = \"emul 0\"\n  int slots = 1\n  bin atr = 3b00\n  flags = KEYPAD, DISPLAY\n  card {\n    CardId = 0x0000002a\n  }\n}\n";

fn temp_file(contents: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("input.conf");
    std::fs::write(&path, contents).expect("written");
    (dir, path)
}

#[test]
fn pretty_form_of_a_file_is_what_gwenhywfar_writes() {
    let (_dir, path) = temp_file("a {\n  b = x\n  int n = 5\n}\n");
    let out = run(&["fmt", path.to_str().expect("utf-8 path")], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "a {\n  char b=\"x\"\n  int  n=\"5\"\n} #a\n");
    assert_eq!(stderr(&out), "");
}

#[test]
fn pretty_and_compact_match_the_library_writers() {
    let doc = chipcard_ipc::parse(INPUT).expect("valid input");
    let (_dir, path) = temp_file(INPUT);
    let path = path.to_str().expect("utf-8 path");

    let out = run(&["fmt", path], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), chipcard_ipc::write_pretty(&doc));

    let out = run(&["fmt", "--compact", path], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut compact = Vec::new();
    chipcard_ipc::write_compact(&doc, &mut compact);
    assert_eq!(out.stdout, compact);
    // The compact form reads back to the same document.
    assert_eq!(
        chipcard_ipc::parse_bytes(&out.stdout, &Default::default()).ok(),
        Some(doc)
    );
}

#[test]
fn standard_input_is_read_for_dash_and_for_nothing() {
    let doc = chipcard_ipc::parse(INPUT).expect("valid input");
    for args in [&["fmt", "-"][..], &["fmt"][..]] {
        let out = run(args, INPUT.as_bytes());
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), chipcard_ipc::write_pretty(&doc));
    }
}

#[test]
fn invalid_file_gives_file_line_col_and_exit_1() {
    let bad = "a {\n  b = x\n  int n = five\n}\n";
    let error = chipcard_ipc::parse(bad).expect_err("not an int");
    let (_dir, path) = temp_file(bad);
    let path = path.to_str().expect("utf-8 path");
    let out = run(&["fmt", path], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "{path}:{}:{}: {}\n",
            error.line, error.column, error.message
        )
    );
    assert_eq!(error.line, 3, "{error}");
}

#[test]
fn invalid_standard_input_is_named_stdin() {
    let out = run(&["fmt", "-"], b"a {\n");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("<stdin>:"), "{err}");
    let mut parts = err.trim_end().splitn(4, ':');
    assert_eq!(parts.next(), Some("<stdin>"));
    assert!(
        parts.next().is_some_and(|l| l.parse::<usize>().is_ok()),
        "{err}"
    );
    assert!(
        parts.next().is_some_and(|c| c.parse::<usize>().is_ok()),
        "{err}"
    );
    assert!(parts.next().is_some_and(|m| !m.trim().is_empty()), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn missing_file_is_one_error_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent.conf");
    let out = run(&["fmt", path.to_str().expect("utf-8 path")], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("chipcard-tool: cannot read {}: ", path.display())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn json_view_matches_the_library() {
    let doc = chipcard_ipc::parse(INPUT).expect("valid input");
    let out = run(&["fmt", "--json", "-"], INPUT.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed, chipcard_ipc::json::to_json(&doc));
}

#[test]
fn compact_and_json_exclude_each_other() {
    let out = run(&["fmt", "--compact", "--json", "-"], INPUT.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "chipcard-tool: --compact and --json exclude each other\n"
    );
}
