//! Access control end to end: peer credentials, per-reader and per-driver allow lists,
//! drivers' scrubbed environment and their `user`. Denials need a second user, so those
//! tests run `chipcard-tool` as `nobody` and skip themselves unless the tests run as root.

use std::os::unix::process::CommandExt;
use std::process::Command;

use chipcard_ipc::message::{ListReaders, ToClient};
use chipcard_tests::procs::live_children;
use chipcard_tests::{bin, RawClient, Server};

const CONFIG: &str = r#"
server {
  socket="{socket}"
  socketMode="0666"
}
driver {
  type="emul"
  name="a"
  reader {
    name="Open"
    slots="1"
    card {
      slot="0"
      atr="3B8880010000000000000000"
    }
  }
  reader {
    name="Locked"
    slots="1"
    allowUsers="root"
    card {
      slot="0"
      atr="3B8880010000000000000000"
    }
  }
}
driver {
  type="emul"
  name="b"
  allowGroups="nogroup", "12345"
  reader {
    name="Group"
    slots="1"
    card {
      slot="0"
      atr="3B8880010000000000000000"
    }
  }
}
"#;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs chipcard-tool as `uid`/`gid`; returns (success, stdout, stderr).
fn tool_as(uid: u32, gid: u32, server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("chipcard-tool"))
        .arg("--socket")
        .arg(&server.socket)
        .args(args)
        .uid(uid)
        .gid(gid)
        .output()
        .expect("run chipcard-tool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn open_dir_to_all(server: &Server) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(server.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the test directory");
}

async fn cards_by_reader(client: &mut RawClient) -> Vec<(String, String)> {
    match client.request(&ListReaders {}).await {
        ToClient::ListReadersResponse(r) => r
            .readers
            .iter()
            .filter_map(|r| {
                r.cards
                    .first()
                    .map(|c| (r.reader_name.clone(), c.card_id.to_string()))
            })
            .collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn readers_are_hidden_and_cards_denied_to_users_not_allowed() {
    if !is_root() {
        eprintln!("skipped: needs root to act as a second user");
        return;
    }
    let server = Server::start(CONFIG);
    open_dir_to_all(&server);
    // Root sees everything.
    let mut root = RawClient::ready(&server.socket).await;
    let cards = cards_by_reader(&mut root).await;
    let mut names: Vec<&str> = cards.iter().map(|(r, _)| r.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["Group", "Locked", "Open"]);
    let card_of = |name: &str| {
        cards
            .iter()
            .find(|(r, _)| r == name)
            .map(|(_, c)| c.clone())
            .expect("card")
    };
    let locked = &card_of("Locked");
    let group = &card_of("Group");

    // nobody (group nogroup): not the Locked reader.
    let (ok, out, err) = tool_as(65534, 65534, &server, &["list"]);
    assert!(ok, "list as nobody: {err}");
    assert!(out.contains("Open") && out.contains("Group"), "{out}");
    assert!(!out.contains("Locked"), "{out}");
    // Another user in no listed group sees only the open reader.
    let (ok, out, err) = tool_as(54321, 54321, &server, &["list"]);
    assert!(ok, "list as 54321: {err}");
    assert!(out.contains("Open") && !out.contains("Group") && !out.contains("Locked"));
    let (ok, _, err) = tool_as(54321, 54321, &server, &["check", group]);
    assert!(!ok && err.to_lowercase().contains("permission"), "{err}");

    // Requests on the locked card are refused with code 9.
    for args in [
        vec!["check", locked.as_str()],
        vec!["reset", locked.as_str()],
        vec!["apdu", "--card", locked.as_str(), "00A4000C023F00"],
    ] {
        let (ok, out, err) = tool_as(65534, 65534, &server, &args);
        assert!(!ok, "{args:?} as nobody succeeded: {out}");
        assert!(
            err.to_lowercase().contains("permission"),
            "{args:?} as nobody: {err}"
        );
    }
    // The tool's `atr` reads ListReaders, where the card is hidden.
    let (ok, _, err) = tool_as(65534, 65534, &server, &["atr", locked]);
    assert!(!ok && err.contains("not present"), "{err}");
    // An allowed card works for nobody.
    let (ok, out, err) = tool_as(
        65534,
        65534,
        &server,
        &["apdu", "--card", group, "00A4000C023F00"],
    );
    assert!(ok, "apdu on an allowed card: {out} {err}");
}

#[tokio::test]
async fn drivers_get_a_scrubbed_environment() {
    let server = Server::start(CONFIG);
    let drivers = live_children(server.pid());
    assert_eq!(drivers.len(), 2, "two driver processes");
    for pid in drivers {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        for var in environ.split(|b| *b == 0).filter(|v| !v.is_empty()) {
            let var = String::from_utf8_lossy(var);
            let key = var.split('=').next().unwrap_or_default();
            assert!(
                [
                    "PATH",
                    "LANG",
                    "LC_ALL",
                    "RUST_LOG",
                    "RUST_BACKTRACE",
                    "PCSCLITE_CSOCK_NAME"
                ]
                .contains(&key),
                "driver {pid} inherited {key}"
            );
        }
    }
}

#[tokio::test]
async fn a_driver_runs_as_its_configured_user() {
    if !is_root() {
        eprintln!("skipped: needs root to change a driver's user");
        return;
    }
    let server = Server::start(
        r#"
server {
  socket="{socket}"
}
driver {
  type="emul"
  name="a"
  user="nobody"
  reader {
    name="Open"
    slots="1"
  }
}
"#,
    );
    let drivers = live_children(server.pid());
    assert_eq!(drivers.len(), 1);
    let status = std::fs::read_to_string(format!("/proc/{}/status", drivers[0])).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), "65534 65534 65534 65534");
    assert_eq!(field("Gid:"), "65534 65534 65534 65534");
    assert_eq!(field("Groups:"), "");
    let mut client = RawClient::ready(&server.socket).await;
    match client.request(&ListReaders {}).await {
        ToClient::ListReadersResponse(r) => assert_eq!(r.readers.len(), 1),
        other => panic!("unexpected {other:?}"),
    }
}
