//! Faults against real processes: drivers killed, stopped or talking garbage, and the
//! server's own stop. Driver processes are found as the children of chipcardd in /proc.

use std::path::Path;
use std::time::{Duration, Instant};

use chipcard_ipc::message::{ReaderStatus, TakeCard, ToClient};
use chipcard_ipc::{CardId, ErrorCode};
use chipcard_tests::procs::{children_of, driver_pid, signal, ChildProcess};
use chipcard_tests::requests::SELECT_MF;
use chipcard_tests::{bin, RawClient, Server, TIMEOUT};

/// Two emulated drivers, "a" (reader "A0" with a card) and "b" (reader "B0" with a card);
/// quick restarts and pings.
const TWO_DRIVERS: &str = r#"
server {
  socket="{socket}"
  pingInterval="200"
  pingTimeout="300"
  restartBackoff="100"
  restartBackoffMax="400"
  restartMaxFailures="3"
}
driver {
  type="emul"
  name="a"
  controlSocket="{dir}/a.ctl"
  reader {
    name="A0"
    slots="1"
    card {
      slot="0"
      atr="3B8880010000000000000000"
    }
  }
}
driver {
  type="emul"
  name="b"
  controlSocket="{dir}/b.ctl"
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

/// Polls `f` until it returns `Some`, up to [`TIMEOUT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_gone_or_not_child(server: u32, pid: u32) -> bool {
    !children_of(server).iter().any(|c| c.pid == pid)
}

/// The reader named `name`: (driver id, status, first card).
async fn reader(client: &mut RawClient, name: &str) -> (String, ReaderStatus, Option<CardId>) {
    let readers = client.list_readers().await.readers;
    let r = readers
        .iter()
        .find(|r| r.reader_name == name)
        .unwrap_or_else(|| panic!("no reader {name} in {readers:?}"));
    (
        r.driver_id.to_string(),
        r.status,
        r.cards.first().map(|c| c.card_id),
    )
}

/// Waits until reader `name` is up with a card other than `old`; returns the new card.
async fn back_with_new_card(client: &mut RawClient, name: &str, old: CardId) -> CardId {
    client.wait_for_card_where(name, |card| card != old).await
}

/// Waits until `watcher` (subscribed to `card:removed`) is told that `card` was removed.
async fn card_removed_notified(watcher: &mut RawClient, card: CardId) {
    let card_text = card.to_string();
    watcher
        .notification("card", "removed", |d| {
            d.get_char("cardId").ok() == Some(card_text.as_str())
        })
        .await;
}

/// A command of `taker` on its removed `card` fails with code 7 or 8.
async fn assert_card_gone(taker: &mut RawClient, card: CardId) {
    let err = taker
        .apdu(card, SELECT_MF)
        .await
        .expect_err("the card is gone");
    assert!(
        matches!(err, ErrorCode::CardRemoved | ErrorCode::DriverError),
        "got {err:?}"
    );
}

/// The server runs, and reader `name` is up with a card that can be taken and used; no
/// zombies.
async fn server_and_reader_are_fine(server: &mut Server, name: &str) {
    assert!(server.is_running());
    let mut client = RawClient::ready(&server.socket).await;
    let (_, status, card) = reader(&mut client, name).await;
    assert_eq!(status, ReaderStatus::Up);
    let card = card.unwrap_or_else(|| panic!("card in {name}"));
    assert_eq!(client.take(card, Some(1000)).await, None);
    assert!(client.apdu(card, SELECT_MF).await.is_ok());
    no_zombies(server.pid());
}

/// A new client, subscribed to `driver:error`, is told that driver `name` was given up.
async fn given_up_is_notified(server: &Server, name: &str) {
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["driver:error"]).await;
    let data = watcher
        .notification("driver", "error", |d| {
            d.get_char("info").is_ok_and(|i| i.contains("given up"))
        })
        .await;
    assert_eq!(data.get_char("driverName").ok(), Some(name));
}

fn no_zombies(server: u32) {
    let zombies: Vec<ChildProcess> = children_of(server)
        .into_iter()
        .filter(|c| c.state == 'Z')
        .collect();
    assert!(zombies.is_empty(), "zombie children: {zombies:?}");
}

#[tokio::test]
async fn killed_driver_is_restarted_and_the_other_is_untouched() {
    let server = Server::start(TWO_DRIVERS);
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["card:removed"]).await;
    let mut taker = RawClient::ready(&server.socket).await;

    let (a_driver, _, a_card) = reader(&mut taker, "A0").await;
    let (b_driver, _, b_card) = reader(&mut taker, "B0").await;
    let a_card = a_card.expect("card in A0");
    let b_card = b_card.expect("card in B0");
    assert_eq!(taker.take(a_card, Some(1000)).await, None);
    assert!(taker.apdu(a_card, SELECT_MF).await.is_ok());

    let a_pid = driver_pid(server.pid(), &a_driver).expect("driver a runs");
    let b_pid = driver_pid(server.pid(), &b_driver).expect("driver b runs");
    signal(a_pid, "KILL");

    // Its card is removed, and the taker learns it.
    card_removed_notified(&mut watcher, a_card).await;
    assert_card_gone(&mut taker, a_card).await;

    // The driver comes back with its reader and a (new) card.
    let new_card = back_with_new_card(&mut taker, "A0", a_card).await;
    let new_pid = driver_pid(server.pid(), &a_driver).expect("driver a runs again");
    assert_ne!(new_pid, a_pid);
    assert!(is_gone_or_not_child(server.pid(), a_pid));
    assert_eq!(taker.take(new_card, Some(1000)).await, None);
    assert!(taker.apdu(new_card, SELECT_MF).await.is_ok());

    // The other driver was not touched.
    assert_eq!(driver_pid(server.pid(), &b_driver), Some(b_pid));
    assert_eq!(reader(&mut taker, "B0").await.2, Some(b_card));
    no_zombies(server.pid());
}

#[tokio::test]
async fn stopped_driver_is_detected_by_ping_and_restarted() {
    let server = Server::start(TWO_DRIVERS);
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["card:removed"]).await;
    let mut client = RawClient::ready(&server.socket).await;
    let (a_driver, _, a_card) = reader(&mut client, "A0").await;
    let (b_driver, _, b_card) = reader(&mut client, "B0").await;
    let a_card = a_card.expect("card in A0");
    let b_card = b_card.expect("card in B0");
    assert_eq!(client.take(a_card, Some(1000)).await, None);
    assert_eq!(client.take(b_card, Some(1000)).await, None);
    let a_pid = driver_pid(server.pid(), &a_driver).expect("driver a runs");
    let b_pid = driver_pid(server.pid(), &b_driver).expect("driver b runs");
    signal(a_pid, "STOP");

    // The outage, as clients see it: the card is removed (notification), the taker's next
    // command fails with 7 or 8, and the other driver's card keeps working.
    card_removed_notified(&mut watcher, a_card).await;
    assert_card_gone(&mut client, a_card).await;
    assert!(client.apdu(b_card, SELECT_MF).await.is_ok());

    let new_card = back_with_new_card(&mut client, "A0", a_card).await;
    let new_pid = driver_pid(server.pid(), &a_driver).expect("driver a runs again");
    assert_ne!(new_pid, a_pid);
    // The stopped process was killed and reaped.
    eventually("the stopped driver to be reaped", || async {
        is_gone_or_not_child(server.pid(), a_pid).then_some(())
    })
    .await;
    assert_eq!(client.take(new_card, Some(1000)).await, None);
    assert!(client.apdu(new_card, SELECT_MF).await.is_ok());
    assert_eq!(driver_pid(server.pid(), &b_driver), Some(b_pid));
    assert!(client.apdu(b_card, SELECT_MF).await.is_ok());
    no_zombies(server.pid());
}

#[tokio::test]
async fn a_client_waiting_in_take_card_is_told_when_the_driver_dies() {
    let server = Server::start(TWO_DRIVERS);
    let mut holder = RawClient::ready(&server.socket).await;
    let mut waiter = RawClient::ready(&server.socket).await;
    let (a_driver, _, a_card) = reader(&mut holder, "A0").await;
    let a_card = a_card.expect("card in A0");
    assert_eq!(holder.take(a_card, Some(1000)).await, None);
    let take = TakeCard {
        card_id: a_card,
        timeout: Some(20_000),
    };
    let asked = waiter.send(&take).await;
    // The take waits behind the holder.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a_pid = driver_pid(server.pid(), &a_driver).expect("driver a runs");
    signal(a_pid, "KILL");

    let started = Instant::now();
    match waiter.response_to(asked).await {
        ToClient::TakeCardResponse(r) => assert!(
            matches!(
                r.outcome.error,
                Some(ErrorCode::DriverError | ErrorCode::CardRemoved)
            ),
            "got {r:?}"
        ),
        other => panic!("TakeCard answered {other:?}"),
    }
    // Told at once, not at the end of its 20 s wait.
    assert!(started.elapsed() < Duration::from_secs(5));
    no_zombies(server.pid());
}

/// A driver directory holding the real emulated driver and `chipcard-driver-garbage`, a
/// script that logs its pid to `starts` and writes junk to the server.
fn garbage_driver_dir(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let drivers = dir.join("drivers");
    std::fs::create_dir_all(&drivers).expect("driver dir");
    std::os::unix::fs::symlink(
        bin("chipcard-driver-emul"),
        drivers.join("chipcard-driver-emul"),
    )
    .expect("link the emul driver");
    let script = drivers.join("chipcard-driver-garbage");
    let starts = dir.join("starts");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ >> '{}'\nprintf 'GARBAGE \\001\\002\\003\\r\\n\\r\\nmore junk' >&0\nexec sleep 30\n",
            starts.display()
        ),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    drivers
}

#[tokio::test]
async fn garbage_driver_is_restarted_then_given_up_and_the_server_stays_up() {
    let scratch = tempfile::tempdir().expect("temporary directory");
    let drivers = garbage_driver_dir(scratch.path());
    let config = format!(
        r#"
server {{
  socket="{{socket}}"
  driverDir="{}"
  driverStartTimeout="2000"
  restartBackoff="300"
  restartBackoffMax="600"
  restartMaxFailures="3"
}}
driver {{
  type="garbage"
  name="junk"
}}
driver {{
  type="emul"
  name="a"
  controlSocket="{{dir}}/a.ctl"
  reader {{
    name="A0"
    slots="1"
    card {{
      slot="0"
      atr="3B8880010000000000000000"
    }}
  }}
}}
"#,
        drivers.display()
    );
    let mut server = Server::start(&config);
    given_up_is_notified(&server, "junk").await;

    let starts = std::fs::read_to_string(scratch.path().join("starts")).expect("starts log");
    assert_eq!(starts.lines().count(), 3, "started: {starts}");
    // Every garbage process was torn down and reaped.
    for pid in starts.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        eventually("the garbage driver to be reaped", || async {
            is_gone_or_not_child(server.pid(), pid).then_some(())
        })
        .await;
    }
    // Given up means no more starts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = std::fs::read_to_string(scratch.path().join("starts")).expect("starts log");
    assert_eq!(again.lines().count(), 3);

    // The server and the other driver are fine.
    server_and_reader_are_fine(&mut server, "A0").await;
}

#[tokio::test]
async fn sigterm_stops_drivers_removes_the_socket_and_exits_zero() {
    for sig in ["TERM", "INT"] {
        let mut server = Server::start(TWO_DRIVERS);
        let mut client = RawClient::ready(&server.socket).await;
        let (a_driver, _, _) = reader(&mut client, "A0").await;
        let (b_driver, _, _) = reader(&mut client, "B0").await;
        let pids = [
            driver_pid(server.pid(), &a_driver).expect("driver a"),
            driver_pid(server.pid(), &b_driver).expect("driver b"),
        ];
        signal(server.pid(), sig);
        let status = server
            .wait_exit(TIMEOUT)
            .unwrap_or_else(|| panic!("chipcardd still runs after SIG{sig}"));
        assert_eq!(status.code(), Some(0), "exit after SIG{sig}: {status}");
        assert!(!server.socket.exists(), "socket left behind after SIG{sig}");
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "driver {pid} survived SIG{sig}"
            );
        }
        assert!(client.is_closed_by_server().await);
    }
}

/// `chipcard-driver-late`: answers `DriverStart` with a proper `DriverReady` (one reader,
/// "Late0"), then writes junk; each start appends its pid to `late-starts`.
const LATE_GARBAGE_SCRIPT: &str = r#"#!/bin/sh
echo $$ >> 'STARTS'
# Arguments: --ipc-fd 0 --driver-id ID
body="ipc {
char id=\"1\"
char refid=\"1\"
char cmd=\"DriverReady\"
}
data {
char DriverId=\"$4\"
char Code=\"OK\"
char Text=\"fake\"
Readers {
Reader {
char ReaderId=\"0x00000001\"
char Name=\"Late0\"
}
}
}
"
printf 'POST /chipcard HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s' "${#body}" "$body" >&0
sleep 0.5
printf 'NOT A FRAME\r\n\r\n' >&0
exec sleep 30
"#;

#[tokio::test]
async fn a_driver_that_sends_garbage_after_ready_is_torn_down_and_restarted() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().expect("temporary directory");
    let drivers = scratch.path().join("drivers");
    std::fs::create_dir_all(&drivers).expect("driver dir");
    let starts = scratch.path().join("late-starts");
    let script = drivers.join("chipcard-driver-late");
    std::fs::write(
        &script,
        LATE_GARBAGE_SCRIPT.replace("STARTS", &starts.display().to_string()),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = format!(
        r#"
server {{
  socket="{{socket}}"
  driverDir="{}"
  pingInterval="0"
  restartBackoff="200"
  restartBackoffMax="200"
}}
driver {{
  type="late"
  name="late"
}}
"#,
        drivers.display()
    );
    let mut server = Server::start(&config);
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["driver:error", "reader:up"]).await;
    // Garbage after ready: a driver error naming the protocol, then a restart whose reader
    // comes up again.
    watcher
        .notification("driver", "error", |d| {
            d.get_char("info")
                .is_ok_and(|i| i.contains("protocol") || i.contains("frame"))
        })
        .await;
    watcher
        .notification("reader", "up", |d| {
            d.get_char("readerName").ok() == Some("Late0")
        })
        .await;
    let log = std::fs::read_to_string(&starts).expect("starts");
    let pids: Vec<u32> = log.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(pids.len() >= 2, "restarted: {pids:?}");
    eventually("the first instance to be reaped", || async {
        is_gone_or_not_child(server.pid(), pids[0]).then_some(())
    })
    .await;
    assert!(server.is_running());
    no_zombies(server.pid());
}

/// A driver directory holding the real emulated driver and the tests' faulty driver
/// (`chipcard-driver-faulty`, see tests/src/bin).
fn faulty_driver_dir(dir: &Path) -> std::path::PathBuf {
    let drivers = dir.join("drivers");
    std::fs::create_dir_all(&drivers).expect("driver dir");
    for name in ["chipcard-driver-emul", "chipcard-driver-faulty"] {
        std::os::unix::fs::symlink(bin(name), drivers.join(name)).expect("link a driver");
    }
    drivers
}

/// A faulty driver "f" (mode `{mode}`, its extra keys `{extra}`, starts logged to
/// `{starts}`); `{server}` holds the restart delays (see [`QUICK_RESTARTS`]) and other
/// server keys, one a line. Quick pings. [`start_faulty`] adds driver "b" of
/// [`TWO_DRIVERS`].
const FAULTY_DRIVER: &str = r#"
server {
  socket="{socket}"
  driverDir="{drivers}"
  pingInterval="200"
  pingTimeout="300"
  restartMaxFailures="3"
  {server}
}
driver {
  type="faulty"
  name="f"
  mode="{mode}"
  starts="{starts}"
  {extra}
}
"#;

/// The group of driver "b" (reader "B0" with a card) in [`TWO_DRIVERS`].
fn driver_b_group() -> &'static str {
    let at = TWO_DRIVERS
        .find("driver {\n  type=\"emul\"\n  name=\"b\"")
        .expect("TWO_DRIVERS has driver b");
    &TWO_DRIVERS[at..]
}

/// Restarts after 100 ms, at most 400 ms.
const QUICK_RESTARTS: &str = "restartBackoff=\"100\"\nrestartBackoffMax=\"400\"";

/// Starts chipcardd on [`FAULTY_DRIVER`] and driver "b"; also returns the scratch directory (kept alive)
/// and the path of the faulty driver's start log.
fn start_faulty(
    mode: &str,
    extra: &str,
    server_keys: &str,
) -> (Server, tempfile::TempDir, std::path::PathBuf) {
    let scratch = tempfile::tempdir().expect("temporary directory");
    let drivers = faulty_driver_dir(scratch.path());
    let starts = scratch.path().join("starts");
    let config = (FAULTY_DRIVER.to_owned() + driver_b_group())
        .replace("{drivers}", &drivers.display().to_string())
        .replace("{starts}", &starts.display().to_string())
        .replace("{mode}", mode)
        .replace("{extra}", extra)
        .replace("{server}", server_keys);
    (Server::start(&config), scratch, starts)
}

/// The pids the faulty driver logged, one per start.
fn logged_starts(starts: &Path) -> Vec<u32> {
    std::fs::read_to_string(starts)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test]
async fn a_driver_that_answers_pings_but_not_a_card_command_is_torn_down_and_restarted() {
    let (server, _scratch, starts) = start_faulty(
        "mute",
        "",
        &format!("{QUICK_RESTARTS}\ncommandTimeout=\"600\""),
    );
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["card:removed", "driver:error"]).await;
    let mut taker = RawClient::ready(&server.socket).await;
    let (f_driver, _, f_card) = reader(&mut taker, "Faulty0").await;
    let (b_driver, _, b_card) = reader(&mut taker, "B0").await;
    let f_card = f_card.expect("card in Faulty0");
    let b_card = b_card.expect("card in B0");
    let b_pid = driver_pid(server.pid(), &b_driver).expect("driver b runs");
    assert_eq!(taker.take(f_card, Some(1000)).await, None);
    assert_eq!(taker.take(b_card, Some(1000)).await, None);

    // Pings are answered all along (several intervals pass): only the command is not.
    let asked = Instant::now();
    let err = taker
        .apdu(f_card, SELECT_MF)
        .await
        .expect_err("the driver never answers");
    assert_eq!(err, ErrorCode::Timeout);
    assert!(asked.elapsed() >= Duration::from_millis(500), "{asked:?}");

    // The driver is torn down as hung: an error naming it, its card removed.
    watcher
        .notification("driver", "error", |d| {
            d.get_char("info")
                .is_ok_and(|i| i.contains("did not answer") && i.contains("request"))
        })
        .await;
    card_removed_notified(&mut watcher, f_card).await;
    assert_card_gone(&mut taker, f_card).await;

    // It is restarted (a new process; the old one killed and reaped) and its reader is back.
    back_with_new_card(&mut taker, "Faulty0", f_card).await;
    let pids = logged_starts(&starts);
    assert!(pids.len() >= 2, "restarted: {pids:?}");
    assert_eq!(driver_pid(server.pid(), &f_driver), pids.last().copied());
    eventually("the mute driver to be reaped", || async {
        is_gone_or_not_child(server.pid(), pids[0]).then_some(())
    })
    .await;

    // The other driver was not touched: same process, same card, still taken and usable.
    assert_eq!(driver_pid(server.pid(), &b_driver), Some(b_pid));
    assert_eq!(reader(&mut taker, "B0").await.2, Some(b_card));
    assert!(taker.apdu(b_card, SELECT_MF).await.is_ok());
    no_zombies(server.pid());
}

#[tokio::test]
async fn a_driver_that_exits_right_after_ready_is_given_up() {
    // Each run ends 100 ms after the start, well within restartBackoffMax (2 s): a failure.
    let (mut server, _scratch, starts) = start_faulty(
        "exit",
        r#"exitAfter="100""#,
        "restartBackoff=\"300\"\nrestartBackoffMax=\"2000\"",
    );
    given_up_is_notified(&server, "f").await;
    assert_eq!(logged_starts(&starts).len(), 3);
    // Given up means no more starts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(logged_starts(&starts).len(), 3);

    // The server and the other driver are fine.
    server_and_reader_are_fine(&mut server, "B0").await;
}

#[tokio::test]
async fn connections_without_client_ready_are_closed_and_free_their_places() {
    let server = Server::start(
        r#"
server {
  socket="{socket}"
  maxClients="2"
  clientReadyTimeout="400"
}
"#,
    );
    // Let the start probe's connection leave first (the server notices its close).
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Two silent connections fill maxClients: a third is refused.
    let connected = Instant::now();
    let mut silent = [
        RawClient::connect(&server.socket).await,
        RawClient::connect(&server.socket).await,
    ];
    let mut refused = RawClient::connect(&server.socket).await;
    match refused.next_message().await.1 {
        ToClient::ErrorResponse(e) => assert_eq!(e.error_code(), ErrorCode::Generic),
        other => panic!("a third connection got {other:?}"),
    }

    // At the deadline each silent connection is told (code 12) and closed.
    for client in &mut silent {
        match client.next_message().await.1 {
            ToClient::ErrorResponse(e) => {
                assert_eq!(e.error_code(), ErrorCode::NotReady);
                assert!(e.text.contains("ClientReady"), "{}", e.text);
            }
            other => panic!("a silent connection got {other:?}"),
        }
        assert!(client.is_closed_by_server().await);
    }
    assert!(connected.elapsed() >= Duration::from_millis(350));

    // Their places are free again; a ready client is not timed out while idle.
    let mut client = RawClient::ready(&server.socket).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(client.list_readers().await.readers.is_empty());
}

#[tokio::test]
async fn a_driver_that_exits_on_its_own_is_restarted_and_its_reader_comes_back() {
    // Each run lasts 1.5 s, longer than restartBackoffMax (400 ms): no failure, no give-up.
    let (server, _scratch, starts) = start_faulty("exit", r#"exitAfter="1500""#, QUICK_RESTARTS);
    let mut watcher = RawClient::ready(&server.socket).await;
    watcher.subscribe(&["card:removed", "driver:down"]).await;
    let mut client = RawClient::ready(&server.socket).await;
    let f_card = client.card_in("Faulty0").await.expect("card in Faulty0");
    let (b_driver, _, b_card) = reader(&mut client, "B0").await;
    let b_pid = driver_pid(server.pid(), &b_driver).expect("driver b runs");

    // Its card is removed first, then the driver is reported down for having exited.
    card_removed_notified(&mut watcher, f_card).await;
    let data = watcher
        .notification("driver", "down", |d| {
            d.get_char("driverName").ok() == Some("f")
        })
        .await;
    assert!(
        // Whichever the server notices first: the exit or the closed socket.
        data.get_char("info")
            .is_ok_and(|i| i.contains("exited") || i.contains("closed its connection")),
        "{data:?}"
    );
    back_with_new_card(&mut client, "Faulty0", f_card).await;
    let pids = logged_starts(&starts);
    assert!(pids.len() >= 2, "restarted: {pids:?}");
    eventually("the exited driver to be reaped", || async {
        is_gone_or_not_child(server.pid(), pids[0]).then_some(())
    })
    .await;
    // Restarted again and again (it is never given up), the other driver untouched.
    eventually("a third start", || async {
        (logged_starts(&starts).len() >= 3).then_some(())
    })
    .await;
    assert_eq!(driver_pid(server.pid(), &b_driver), Some(b_pid));
    assert_eq!(reader(&mut client, "B0").await.2, b_card);
    // An exited driver is reaped at once: no zombie stays (one may exist for an instant).
    eventually("no zombies", || async {
        children_of(server.pid())
            .iter()
            .all(|c| !c.is_zombie())
            .then_some(())
    })
    .await;
}
