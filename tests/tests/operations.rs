//! Operating the server: SIGHUP reloads, systemd readiness notification.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chipcard_ipc::message::{CommandCard, ToClient};
use chipcard_ipc::{CardId, ErrorCode};
use chipcard_tests::procs::{driver_pid, live_children, signal};
use chipcard_tests::{bin, RawClient, Server, TIMEOUT};

const DRIVER_A: &str = r#"
driver {
  type="emul"
  name="a"
  reader {
    name="A0"
    slots="1"
    card {
      slot="0"
      atr="3B8880010000000000000000"
    }
  }
}
"#;

const DRIVER_B: &str = r#"
driver {
  type="emul"
  name="b"
  reader {
    name="B0"
    slots="1"
    card {
      slot="0"
      atr="3B8880010000000000000000"
    }
  }
}
"#;

fn server_group(socket: &str) -> String {
    format!("server {{\n  socket=\"{socket}\"\n}}\n")
}

async fn select_mf(client: &mut RawClient, card: CardId) -> Option<ErrorCode> {
    match client
        .request(&CommandCard {
            card_id: card,
            data: Bytes::from_static(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00]),
            target: None,
        })
        .await
    {
        ToClient::CommandCardResponse(r) => r.outcome.error,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn sighup_starts_new_drivers_and_keeps_the_others_and_the_clients() {
    let server = Server::start(&format!("{}{DRIVER_A}", server_group("{socket}")));
    let mut holder = RawClient::ready(&server.socket).await;
    let card = holder.card_in("A0").await.expect("card in A0");
    assert_eq!(holder.take(card, Some(1000)).await, None);
    let before = live_children(server.pid());
    assert_eq!(before.len(), 1);

    let socket = server.socket.display().to_string();
    let config = server.dir.path().join("chipcardd.conf");
    std::fs::write(
        &config,
        format!("{}{DRIVER_A}{DRIVER_B}", server_group(&socket)),
    )
    .expect("rewrite config");
    signal(server.pid(), "HUP");

    let deadline = Instant::now() + TIMEOUT;
    let b_card = loop {
        if let Some(card) = holder.card_in("B0").await {
            break card;
        }
        assert!(Instant::now() < deadline, "B0 did not appear after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let after = live_children(server.pid());
    assert_eq!(after.len(), 2);
    assert!(after.contains(&before[0]), "driver a was restarted");
    // The held card is still held by the same connection.
    assert_eq!(select_mf(&mut holder, card).await, None);
    let mut other = RawClient::ready(&server.socket).await;
    assert_eq!(other.take(card, Some(100)).await, Some(ErrorCode::Busy));
    assert_eq!(other.take(b_card, Some(1000)).await, None);
    assert_eq!(select_mf(&mut other, b_card).await, None);

    // Removing driver a: its reader goes, its card with it; b stays.
    std::fs::write(&config, format!("{}{DRIVER_B}", server_group(&socket))).expect("rewrite");
    signal(server.pid(), "HUP");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let names = other.reader_names().await;
        if names == ["B0"] {
            break;
        }
        assert!(Instant::now() < deadline, "A0 still listed: {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b_pid = *after.iter().find(|p| **p != before[0]).expect("b's pid");
    assert_eq!(live_children(server.pid()), vec![b_pid]);
    assert!(select_mf(&mut holder, card).await.is_some());
    assert_eq!(select_mf(&mut other, b_card).await, None);

    // A broken file is not applied; the server goes on.
    std::fs::write(&config, "server {\n").expect("rewrite");
    signal(server.pid(), "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(select_mf(&mut other, b_card).await, None);
}

fn recv_state(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn readiness_is_notified_on_notify_socket() {
    for abstract_name in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("chipcardd.sock");
        let config = dir.path().join("chipcardd.conf");
        std::fs::write(
            &config,
            format!("{}{DRIVER_A}", server_group(&socket.display().to_string())),
        )
        .expect("write config");
        let (notify, target) = if abstract_name {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("chipcard-test-{}", std::process::id());
            let addr =
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
            (
                UnixDatagram::bind_addr(&addr).expect("bind"),
                format!("@{name}"),
            )
        } else {
            let path = dir.path().join("notify");
            (
                UnixDatagram::bind(&path).expect("bind"),
                path.display().to_string(),
            )
        };
        notify.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut child = Command::new(bin("chipcardd"))
            .arg("--config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &target)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start chipcardd");
        assert_eq!(recv_state(&notify), "READY=1");
        // Ready means: the socket accepts and the drivers' readers and cards are there.
        let mut client = RawClient::ready(&socket).await;
        assert!(client.card_in("A0").await.is_some());
        signal(child.id(), "HUP");
        assert_eq!(recv_state(&notify), "RELOADING=1");
        assert_eq!(recv_state(&notify), "READY=1");
        signal(child.id(), "TERM");
        assert_eq!(recv_state(&notify), "STOPPING=1");
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(0));
    }
}

#[tokio::test]
async fn a_socket_passed_by_socket_activation_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let activated = dir.path().join("activated.sock");
    let configured = dir.path().join("configured.sock");
    let config = dir.path().join("chipcardd.conf");
    std::fs::write(
        &config,
        format!(
            "{}{DRIVER_A}",
            server_group(&configured.display().to_string())
        ),
    )
    .expect("write config");
    let listener = std::os::unix::net::UnixListener::bind(&activated).expect("bind");
    // The listener becomes fd 3 of a shell that execs chipcardd (same pid, as systemd does).
    let mut child = {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(
                r#"exec 3<&0 0</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" --config "$1""#,
            )
            .arg(bin("chipcardd"))
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)));
        command.spawn().expect("start chipcardd")
    };
    let deadline = Instant::now() + TIMEOUT;
    let mut client = loop {
        // The socket accepts at once (the backlog); ClientReady is answered once ready.
        if let Ok(stream) = std::os::unix::net::UnixStream::connect(&activated) {
            drop(stream);
            break RawClient::ready(&activated).await;
        }
        assert!(
            Instant::now() < deadline,
            "no answer on the activated socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(client.card_in("A0").await.is_some());
    assert!(
        !configured.exists(),
        "the configured socket was bound as well"
    );
    // The environment was cleaned: drivers do not see LISTEN_*.
    for pid in live_children(child.id()) {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        assert!(!String::from_utf8_lossy(&environ).contains("LISTEN_"));
    }
    signal(child.id(), "TERM");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(
        activated.exists(),
        "the manager's socket file is left alone"
    );
}

#[tokio::test]
async fn socket_activation_refuses_a_descriptor_that_is_not_a_listening_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("chipcardd.conf");
    let socket = dir.path().join("s.sock");
    std::fs::write(
        &config,
        format!("{}{DRIVER_A}", server_group(&socket.display().to_string())),
    )
    .expect("write config");
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"exec 3</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" --config "$1""#)
        .arg(bin("chipcardd"))
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("run chipcardd");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("fd 3 is not a socket"), "{stderr}");
}

#[tokio::test]
async fn sighup_restarts_only_a_driver_whose_group_changed() {
    let server = Server::start(&format!("{}{DRIVER_A}{DRIVER_B}", server_group("{socket}")));
    let mut holder = RawClient::ready(&server.socket).await;
    let a_card = holder.card_in("A0").await.expect("card in A0");
    let b_card = holder.card_in("B0").await.expect("card in B0");
    assert_eq!(holder.take(b_card, Some(1000)).await, None);
    let driver_of = |name: &str, readers: &[chipcard_ipc::message::ReaderInfo]| {
        readers
            .iter()
            .find(|r| r.reader_name == name)
            .map(|r| r.driver_id.to_string())
            .unwrap_or_else(|| panic!("no reader {name}"))
    };
    let readers = holder.list_readers().await.readers;
    let (a_driver, b_driver) = (driver_of("A0", &readers), driver_of("B0", &readers));
    let a_pid = driver_pid(server.pid(), &a_driver).expect("driver a runs");
    let b_pid = driver_pid(server.pid(), &b_driver).expect("driver b runs");

    // Driver a's group changes (a driver variable); b's does not.
    let changed_a = DRIVER_A.replace(
        "  reader {",
        "  vars {\n    vendor=\"changed\"\n  }\n  reader {",
    );
    let socket = server.socket.display().to_string();
    std::fs::write(
        server.dir.path().join("chipcardd.conf"),
        format!("{}{changed_a}{DRIVER_B}", server_group(&socket)),
    )
    .expect("rewrite config");
    signal(server.pid(), "HUP");

    // a is restarted: a new process under the same driver id, its card under a new id.
    let deadline = Instant::now() + TIMEOUT;
    let new_a_card = loop {
        if let Some(card) = holder.card_in("A0").await.filter(|c| *c != a_card) {
            break card;
        }
        assert!(
            Instant::now() < deadline,
            "A0 did not come back after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let readers = holder.list_readers().await.readers;
    assert_eq!(driver_of("A0", &readers), a_driver);
    let new_a_pid = driver_pid(server.pid(), &a_driver).expect("driver a runs again");
    assert_ne!(new_a_pid, a_pid);
    assert!(!live_children(server.pid()).contains(&a_pid), "old a left");
    assert_eq!(
        select_mf(&mut holder, a_card).await,
        Some(ErrorCode::CardRemoved)
    );

    // b was not touched: same process, same card, still held and usable.
    assert_eq!(driver_pid(server.pid(), &b_driver), Some(b_pid));
    assert_eq!(holder.card_in("B0").await, Some(b_card));
    assert_eq!(select_mf(&mut holder, b_card).await, None);
    let mut other = RawClient::ready(&server.socket).await;
    assert_eq!(other.take(b_card, Some(100)).await, Some(ErrorCode::Busy));
    assert_eq!(other.take(new_a_card, Some(1000)).await, None);
    assert_eq!(select_mf(&mut other, new_a_card).await, None);
}
