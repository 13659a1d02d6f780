//! Runs the benchmark suite in its quick mode, so that CI exercises it. It needs chipcardd
//! and chipcard-driver-emul beside chipcard-bench (`cargo build --workspace --bins`, which
//! CI runs before the tests); part c runs when pcscd and vpcd are installed and is skipped
//! otherwise.

use std::path::Path;
use std::process::Command;

#[test]
fn quick_mode_runs_and_prints_the_table() {
    let bench = Path::new(env!("CARGO_BIN_EXE_chipcard-bench"));
    let dir = bench.parent().expect("the bench's directory");
    assert!(
        dir.join("chipcardd").is_file() && dir.join("chipcard-driver-emul").is_file(),
        "chipcardd and chipcard-driver-emul must be built beside {}: run \
         `cargo build --workspace --bins` first",
        bench.display()
    );
    let out_dir = tempfile::tempdir().expect("temporary directory");
    let doc = out_dir.path().join("performance.md");
    std::fs::write(&doc, "# Performance\n\n## Group format\n\nkept\n").expect("write");
    let output = Command::new(bench)
        .arg("--quick")
        .arg("--bin-dir")
        .arg(dir)
        .arg("--write")
        .arg(&doc)
        .output()
        .expect("chipcard-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chipcard-bench --quick failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for part in ["| b |", "| c |", "| d |", "| e |", "| f |", "| a |"] {
        assert!(stdout.contains(part), "no row for {part}:\n{stdout}");
    }
    assert!(stdout.contains("APDU round trip p50"), "{stdout}");
    // Part a is measured here, one row per message and direction, not pointed elsewhere.
    for case in ["command_card", "card_available", "list_readers_16", "mix"] {
        for direction in ["read (typed)", "write"] {
            let row = format!("| a | {case} {direction}: group format vs serde_json");
            assert!(stdout.contains(&row), "no row {row}:\n{stdout}");
        }
    }
    assert!(!stdout.contains("cargo bench -p chipcard-ipc"), "{stdout}");
    // Part c runs where pcscd and vpcd are installed (CI installs them), else says why not.
    let c_ran = !stdout.contains("| c | skipped");
    assert!(
        !c_ran || stdout.contains("vpcd reader → CardAvailable"),
        "part c ran without its insert row:\n{stdout}"
    );
    for p in ["p50", "p90", "p99"] {
        let row = format!("| c | via pcscd {p} (n=200)");
        assert!(!c_ran || stdout.contains(&row), "no row {row}:\n{stdout}");
    }
    let text = std::fs::read_to_string(&doc).expect("read back");
    assert!(
        text.starts_with("# Performance\n\n## Group format\n\nkept\n"),
        "{text}"
    );
    assert!(text.contains("## End to end"), "{text}");
    let svg = std::fs::read_to_string(out_dir.path().join("performance-latency.svg"))
        .expect("the plot is written");
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
    assert!(text.contains("](performance-latency.svg)"), "{text}");
    if c_ran {
        let svg = std::fs::read_to_string(out_dir.path().join("performance-latency-pcscd.svg"))
            .expect("part c's plot is written");
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
        assert!(text.contains("](performance-latency-pcscd.svg)"), "{text}");
    }
}
