//! Differential test against libgwenhywfar 5, the library whose format this is.
//!
//! `tests/gwen/gwen_rewrite.c` is compiled once per test run (with `cc` and
//! `pkg-config --cflags --libs gwenhywfar`) into Cargo's temporary directory. It reads many
//! length-prefixed records from stdin and answers each with what libgwenhywfar wrote
//! (`GWEN_DB_WriteToBuffer(db, buf, GWEN_DB_FLAGS_DEFAULT)`), in one of two modes:
//!
//! - `build`: the record is a list of operations that build the document with the DB API
//!   (`GWEN_DB_Group_new`/`AddGroup`, `GWEN_DB_Set{Char,Int,Bin}Value`), so the writer is
//!   compared on exactly our document, whatever its names and values.
//! - `read`: the record is group-format text, read with `GWEN_DB_ReadFromString`
//!   (`GWEN_DB_FLAGS_DEFAULT | GWEN_PATH_FLAGS_CREATE_GROUP`, the latter so that groups of the
//!   same name are kept apart as PROTOCOL §1 wants) and written back.
//!
//! For every generated document (generator: `common/mod.rs`; hostile names and values, mixed
//! and empty variables, groups of the same name, deep nesting, long values), in batches of 64
//! documents per process:
//!
//! 1. `write_pretty(doc)` equals what Gwen writes for the same document built with its API.
//! 2. If our parser reads `write_compact(doc)` back as `doc2`, Gwen reads it too and writes
//!    `write_pretty(doc2)`; the same for `write_pretty(doc)`. (So Gwen reads both our forms
//!    to the same document as we do.) Left out of this step are documents with group names
//!    that Gwen's reader cannot take back from its own writer (see [`gwen_cannot_read`]).
//!
//! Further, the seed's example blocks and a table of hand-written documents are read by both
//! parsers and must give the same document.
//!
//! Without libgwenhywfar's development files this test fails (it does not skip): install them
//! with `apt-get install libgwenhywfar-core-dev`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use chipcard_ipc::{parse, write_pretty, Entry, Group, Value};
use common::{any_group_name, compact, document, Shape};
use proptest::prelude::*;

/// The compiled helper, built once per test binary.
fn helper() -> &'static Path {
    static HELPER: OnceLock<PathBuf> = OnceLock::new();
    HELPER.get_or_init(build_helper)
}

fn build_helper() -> PathBuf {
    const INSTALL: &str = "libgwenhywfar's development files are needed for this test: \
                           apt-get install libgwenhywfar-core-dev (and pkg-config, cc)";
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "gwenhywfar"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run pkg-config ({e}); {INSTALL}"));
    assert!(
        flags.status.success(),
        "pkg-config does not know gwenhywfar ({}); {INSTALL}",
        String::from_utf8_lossy(&flags.stderr).trim()
    );
    let flags = String::from_utf8(flags.stdout).expect("pkg-config output is UTF-8");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gwen/gwen_rewrite.c");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gwen");
    std::fs::create_dir_all(&dir).expect("create the helper's directory");
    // Built under a name of its own, then renamed: concurrent test runs do not collide.
    let exe = dir.join("gwen_rewrite");
    let building = dir.join(format!("gwen_rewrite.{}", std::process::id()));
    let status = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&building)
        .arg(&source)
        .args(flags.split_whitespace())
        .status()
        .unwrap_or_else(|e| panic!("cannot run cc ({e}); {INSTALL}"));
    assert!(
        status.success(),
        "compiling {} failed; {INSTALL}",
        source.display()
    );
    std::fs::rename(&building, &exe).expect("move the helper into place");
    exe
}

/// Sends `records` to the helper in `mode`; Gwen's output per record, or its error code.
fn gwen(mode: &str, records: &[Vec<u8>]) -> Vec<Result<String, i32>> {
    let mut input = Vec::new();
    for r in records {
        input.extend_from_slice(format!("{}\n", r.len()).as_bytes());
        input.extend_from_slice(r);
    }
    let mut child = Command::new(helper())
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the helper");
    let mut stdin = child.stdin.take().expect("helper stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("helper output");
    writer
        .join()
        .expect("writer thread")
        .expect("write to the helper");
    assert!(
        out.status.success(),
        "helper failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut results = Vec::new();
    let mut rest = &out.stdout[..];
    while !rest.is_empty() {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .expect("a result header");
        let head = std::str::from_utf8(&rest[..nl]).expect("header is ASCII");
        rest = &rest[nl + 1..];
        if let Some(code) = head.strip_prefix("ERR ") {
            results.push(Err(code.parse().expect("error code")));
        } else {
            let len: usize = head
                .strip_prefix("OK ")
                .and_then(|n| n.parse().ok())
                .expect("OK <len>");
            let text = String::from_utf8(rest[..len].to_vec()).expect("Gwen wrote UTF-8");
            results.push(Ok(text));
            rest = &rest[len..];
        }
    }
    assert_eq!(results.len(), records.len(), "one result per record");
    results
}

fn hex_or_dash(b: &[u8]) -> String {
    if b.is_empty() {
        "-".to_owned()
    } else {
        hex::encode(b)
    }
}

/// The `build` operations that make `g`'s entries with the DB API.
fn build_ops(g: &Group, out: &mut String) {
    for e in &g.entries {
        match e {
            Entry::Group(sub) => {
                out.push_str(&format!("G {}\n", hex_or_dash(sub.name.as_bytes())));
                build_ops(sub, out);
                out.push_str("E\n");
            }
            Entry::Var(v) => {
                let name = hex_or_dash(v.name.as_bytes());
                if v.values.is_empty() {
                    out.push_str(&format!("Z {name}\n"));
                }
                for value in &v.values {
                    out.push_str(&match value {
                        Value::Char(s) => format!("C {name} {}\n", hex_or_dash(s.as_bytes())),
                        Value::Int(i) => format!("I {name} {i}\n"),
                        Value::Bin(b) => format!("B {name} {}\n", hex_or_dash(b)),
                    });
                }
            }
        }
    }
}

/// Group names that libgwenhywfar writes but cannot read back:
///
/// - `,` is written as it is, and its reader stops the name at a `,` ("Unexpected delimiter").
/// - After `&XX` decoding, its reader takes the name as a path (`GWEN_DB_GetGroup`): `/` and
///   `\` separate nested groups (a name of only slashes crashes it on an assertion), `[`
///   starts an index, and leading blanks are skipped.
fn gwen_cannot_read(name: &str) -> bool {
    name.contains([',', '/', '\\', '['])
        || name.starts_with(|c: char| c.is_ascii_whitespace() || c == '\x0b')
}

/// Checks 1 and 2 of the module documentation on a batch of documents.
fn check_batch(docs: &[Group]) -> Result<(), TestCaseError> {
    // 1. The writer, on the very same document.
    let ops: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| {
            let mut s = String::new();
            build_ops(d, &mut s);
            s.into_bytes()
        })
        .collect();
    for (doc, built) in docs.iter().zip(gwen("build", &ops)) {
        prop_assert_eq!(
            Ok(write_pretty(doc)),
            built,
            "pretty differs from Gwen for {:?}",
            doc
        );
    }

    // 2. The reader: what we read from our output, Gwen reads the same.
    let mut texts = Vec::new();
    let mut expected = Vec::new();
    for doc in docs {
        if any_group_name(doc, gwen_cannot_read) {
            continue;
        }
        for text in [compact(doc), write_pretty(doc)] {
            if let Ok(ours) = parse(&text) {
                expected.push(write_pretty(&ours));
                texts.push(text.into_bytes());
            }
        }
    }
    for ((text, want), got) in texts.iter().zip(&expected).zip(gwen("read", &texts)) {
        prop_assert_eq!(
            Ok(want),
            got.as_ref(),
            "Gwen reads this differently:\n{}",
            String::from_utf8_lossy(text)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn pretty_writer_and_reader_match_libgwenhywfar(
        docs in prop::collection::vec(document(Shape::ANYTHING), 1..=64)
    ) {
        check_batch(&docs)?;
    }
}

/// Documents that both parsers must read alike (Gwen's output for them is compared with our
/// pretty form of what we read).
const HAND_WRITTEN: &[&str] = &[
    "a {\n  char x=\"v1\", \"v2\"\n  int n=5\n  bin b=00ff10\n}\n",
    "x=1\na {\n}\ny=2\nb {\nz=3\n}\n",
    "r {\na=1\n}\nR {\nb=2\n}\nr {\nc=3\n}\n",
    "r {\na=1\nr {\nb=2\n}\n}\nx=1\nx=2\nX=3\n",
    "char x=\"a b%25c\\\"\nchar y=\"%c3%a4&<>/:;#{}'\"\n",
    "x=,a\n",
    "x=;\n",
    "x=# only a comment\n",
    "x : \"a\"\n",
    "int x=\" 12 \"\n",
    "int x=\"%31\"\n",
    "bin x=\"\"\n",
    "a&20b&25%*?.-_ {\n}\n",
    "&C3&A4 {\nx=1\n}\n",
    "a {x=1 is ignored\n}junk\n",
    "a{\n}\n",
    " \t  # c\r\n\r\nx=\"1\"\r\n",
    "x=a%41\n",
    "\tx\t=\t1\n",
    "char x = \"a\" ; junk\n",
    "x = \"a\",  \"b\"  ,c\n",
    "CHAR x=\"1\"\nInt y=\"2\"\n",
    "char=\"x\"\nint char=7\n",
    "StopWait {\n}\n",
    "Readers {\n  Reader {\n    char Name=\"reader1\"\n  } # Reader\n} # Readers\n",
];

fn seed_blocks() -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/libchipcard-ipc-reference.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the seed {} is needed: {e}", path.display()));
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match current.as_mut() {
            None if line.starts_with(|c: char| c.is_ascii_alphabetic())
                && line.trim_end().ends_with('{') =>
            {
                current = Some(format!("{line}\n"));
            }
            None => {}
            Some(block) => {
                block.push_str(line);
                block.push('\n');
                if line.starts_with('}') {
                    blocks.extend(current.take());
                }
            }
        }
    }
    blocks
}

#[test]
fn both_parsers_read_the_seed_and_hand_written_documents_alike() {
    let mut texts: Vec<String> = HAND_WRITTEN.iter().map(|s| (*s).to_owned()).collect();
    let seed = seed_blocks();
    assert_eq!(seed.len(), 35, "the seed's example blocks");
    texts.extend(seed);
    let records: Vec<Vec<u8>> = texts.iter().map(|t| t.clone().into_bytes()).collect();
    for (text, got) in texts.iter().zip(gwen("read", &records)) {
        let ours = parse(text).unwrap_or_else(|e| panic!("we cannot read {text:?}: {e}"));
        assert_eq!(Ok(write_pretty(&ours)), got, "for {text:?}");
    }
}

/// Where libgwenhywfar's reader and ours part ways on purpose (see the `parse` module).
#[test]
fn documented_reader_differences() {
    let cases: &[&str] = &[
        // Gwen keeps the trailing blanks of an unquoted value; we trim them.
        "x=abc   ,def  \n",
        // Gwen reads "%zz" as some byte; we refuse it.
        "x=\"%zz\"\n",
        // Gwen's sscanf reads 12abc as 12 and wraps overflows; we refuse both.
        "int x=12abc\n",
        "int x=99999999999\n",
        // Gwen takes a lone '&' in a group name literally; we want two hex digits.
        "a&zz {\n}\n",
        // Gwen takes '/' in a name as a path; we refuse it.
        "a/b=\"1\"\n",
        // Gwen needs a blank before ':'; we do not.
        "char x:\"a\"\n",
    ];
    let records: Vec<Vec<u8>> = cases.iter().map(|c| c.as_bytes().to_vec()).collect();
    let gwen_results = gwen("read", &records);
    let summary: Vec<(bool, bool)> = cases
        .iter()
        .zip(&gwen_results)
        .map(|(c, g)| (g.is_ok(), parse(c).is_ok()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (true, true),
            (true, false),
            (true, false),
            (true, false),
            (true, false),
            (true, false),
            (false, true),
        ]
    );
    assert_eq!(
        gwen_results[0],
        Ok("char x=\"abc   \", \"def  \"\n".to_owned())
    );
    let ours = parse(cases[0]).expect("parses");
    assert_eq!(write_pretty(&ours), "char x=\"abc\", \"def\"\n");
}

/// Where libgwenhywfar's reader cannot read what its writer wrote.
#[test]
fn gwen_cannot_read_commas_in_group_names() {
    let doc = Group::root().with_group(Group::new("a,b"));
    let text = write_pretty(&doc);
    assert_eq!(text, "a,b {\n} #a,b\n");
    let got = gwen("read", &[text.clone().into_bytes()]);
    assert!(got[0].is_err(), "Gwen refuses 'a,b {{'");
    assert_eq!(parse(&text), Ok(doc));
}
