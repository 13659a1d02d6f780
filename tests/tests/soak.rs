//! A bounded soak: 100 clients × 500 APDUs over 20 cards of two drivers, pipelined, with
//! random disconnects, and one driver killed midway. Every response must reach the request
//! it answers (refid) and carry that request's answer (SELECT of different files: the FCI
//! names the file selected), and the server's memory must not grow.
//!
//! `CHIPCARD_SOAK_CLIENTS` and `CHIPCARD_SOAK_APDUS` (per client) change the size:
//! `scripts/soak` runs the long variant (500 clients × 2,000 APDUs, release build; see
//! docs/operations.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chipcard_ipc::message::{CommandCard, ListReaders, ReleaseCard, TakeCard, ToClient};
use chipcard_ipc::ErrorCode;
use chipcard_tests::procs::{driver_pid, vm_rss_kib};
use chipcard_tests::{RawClient, Server};

const BATCH: usize = 10;
const READERS_PER_DRIVER: usize = 10;

/// How many clients and APDUs per client: from the environment, else 100 × 500.
fn size() -> (usize, usize) {
    let var = |name: &str, default: usize| match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: not a count: {e}")),
        Err(_) => default,
    };
    (
        var("CHIPCARD_SOAK_CLIENTS", 100),
        var("CHIPCARD_SOAK_APDUS", 500),
    )
}

fn config(clients: usize) -> String {
    let mut text = format!(
        "server {{\n  socket=\"{{socket}}\"\n  restartBackoff=\"100\"\n  maxClients=\"{}\"\n}}\n",
        clients + 16
    );
    for driver in ["a", "b"] {
        text.push_str(&format!(
            "driver {{\n  type=\"emul\"\n  name=\"{driver}\"\n"
        ));
        for r in 0..READERS_PER_DRIVER {
            text.push_str(&format!(
                "  reader {{\n    name=\"{driver}{r}\"\n    slots=\"1\"\n    card {{\n      slot=\"0\"\n      atr=\"3B8880010000000000000000\"\n    }}\n  }}\n"
            ));
        }
        text.push_str("}\n");
    }
    text
}

/// A tiny deterministic generator (no dependencies).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// SELECT with FCI of one of two files that exist from the MF: `3F00` itself or EF `2F02`.
fn select(fid: u16) -> Bytes {
    let [hi, lo] = fid.to_be_bytes();
    Bytes::from(vec![0x00, 0xA4, 0x00, 0x00, 0x02, hi, lo])
}

fn names_fid(response: &[u8], fid: u16) -> bool {
    let [hi, lo] = fid.to_be_bytes();
    response.ends_with(&[0x90, 0x00]) && response.windows(4).any(|w| w == [0x83, 0x02, hi, lo])
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    card_gone: AtomicUsize,
    disconnects: AtomicUsize,
}

async fn run_client(socket: std::path::PathBuf, n: usize, apdus: usize, tally: Arc<Tally>) {
    let mut rng = Lcg(n as u64 + 1);
    let mut client = RawClient::ready(&socket).await;
    let mut attempted = 0;
    while attempted < apdus {
        let present = client.card_ids().await;
        if present.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let card = present[(rng.next() as usize) % present.len()];
        match client
            .request(&TakeCard {
                card_id: card,
                timeout: Some(20_000),
            })
            .await
        {
            ToClient::TakeCardResponse(r) if r.outcome.error.is_none() => {}
            ToClient::TakeCardResponse(r) => {
                // The card went away (driver killed) or stayed busy: pick again.
                assert!(
                    matches!(
                        r.outcome.error,
                        Some(
                            ErrorCode::CardRemoved
                                | ErrorCode::NotFound
                                | ErrorCode::Busy
                                | ErrorCode::DriverError
                        )
                    ),
                    "TakeCard: {r:?}"
                );
                continue;
            }
            other => panic!("unexpected {other:?}"),
        }
        // A batch of pipelined SELECTs of alternating files.
        let mut expected: HashMap<u32, u16> = HashMap::new();
        for _ in 0..BATCH {
            let fid = if rng.next() % 2 == 0 { 0x3F00 } else { 0x2F02 };
            let id = client
                .send(&CommandCard {
                    card_id: card,
                    data: select(fid),
                    target: None,
                })
                .await;
            expected.insert(id, fid);
        }
        attempted += BATCH;
        // Sometimes leave without reading or releasing: the server resets the card.
        if rng.next() % 10 == 0 {
            tally.disconnects.fetch_add(1, Ordering::Relaxed);
            client = RawClient::ready(&socket).await;
            continue;
        }
        while !expected.is_empty() {
            let (env, msg) = client.next_message().await;
            let Some(refid) = env.refid else { continue };
            let fid = expected.remove(&refid).unwrap_or_else(|| {
                panic!("client {n}: response to {refid}, not a pending request")
            });
            match msg {
                ToClient::CommandCardResponse(r) => match r.outcome.error {
                    None => {
                        let data = r.data.expect("a successful response has data");
                        assert!(
                            names_fid(&data, fid),
                            "client {n}: SELECT {fid:04X} answered {data:02X?}"
                        );
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(ErrorCode::CardRemoved | ErrorCode::DriverError) => {
                        tally.card_gone.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(e) => panic!("client {n}: CommandCard failed with {e:?}"),
                },
                other => panic!("client {n}: unexpected {other:?}"),
            }
        }
        match client.request(&ReleaseCard { card_id: card }).await {
            ToClient::ReleaseCardResponse(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// `clients` clients of [`run_client`], `apdus` APDUs each, counting into `tally`.
fn spawn_clients(
    socket: &std::path::Path,
    clients: usize,
    apdus: usize,
    tally: &Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|n| tokio::spawn(run_client(socket.to_owned(), n, apdus, tally.clone())))
        .collect()
}

/// Waits for every client, each within `limit`; a client's panic fails the test.
async fn join_clients(tasks: Vec<tokio::task::JoinHandle<()>>, limit: Duration) {
    for task in tasks {
        tokio::time::timeout(limit, task)
            .await
            .expect("a client finished in time")
            .expect("a client did not panic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_pipelining_with_disconnects_and_a_driver_killed() {
    let (clients, apdus) = size();
    let server = Server::start(&config(clients));
    let mut probe = RawClient::ready(&server.socket).await;
    assert_eq!(probe.card_ids().await.len(), 2 * READERS_PER_DRIVER);
    let driver_a = match probe.request(&ListReaders {}).await {
        ToClient::ListReadersResponse(r) => r
            .readers
            .iter()
            .find(|r| r.reader_name == "a0")
            .map(|r| r.driver_id.to_string())
            .expect("reader a0"),
        other => panic!("unexpected {other:?}"),
    };
    let before = vm_rss_kib(server.pid());
    let started = Instant::now();

    let tally = Arc::new(Tally::default());
    let tasks = spawn_clients(&server.socket, clients, apdus, &tally);
    // Midway (by APDUs answered), kill driver a.
    let total = clients * apdus;
    // Generous for a debug build on a loaded two-core machine; a stalled server fails.
    let slack = Duration::from_secs(60 + (total / 5_000) as u64);
    let deadline = Instant::now() + slack;
    while tally.ok.load(Ordering::Relaxed) < total / 3 {
        assert!(Instant::now() < deadline, "the soak makes no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = driver_pid(server.pid(), &driver_a).expect("driver a runs");
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");

    join_clients(tasks, 2 * slack).await;
    let ok = tally.ok.load(Ordering::Relaxed);
    let gone = tally.card_gone.load(Ordering::Relaxed);
    let disconnects = tally.disconnects.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    eprintln!(
        "soak: {clients} clients: {ok} APDUs answered, {gone} on cards that went away, \
         {disconnects} abrupt disconnects, in {elapsed:.1?} ({:.0} APDU/s)",
        ok as f64 / elapsed.as_secs_f64()
    );
    assert!(ok > total / 2, "only {ok} of {total} APDUs answered");
    assert!(disconnects > 0);
    // Driver a came back: all 20 cards are there again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe.card_ids().await.len() < 2 * READERS_PER_DRIVER {
        assert!(
            Instant::now() < deadline,
            "driver a's cards did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = vm_rss_kib(server.pid());
    eprintln!("soak: chipcardd RSS {before} KiB before, {after} KiB after");
    // What the allocator keeps of the peak with every client connected is bounded ...
    assert!(
        after < before + 24 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // ... and does not grow with the work done: a second round of the same clients (half
    // the APDUs, disconnects, no driver killed) ends where the first did.
    let again = Arc::new(Tally::default());
    join_clients(
        spawn_clients(&server.socket, clients, apdus / 2, &again),
        2 * slack,
    )
    .await;
    assert!(again.ok.load(Ordering::Relaxed) > total / 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = vm_rss_kib(server.pid());
    eprintln!("soak: chipcardd RSS {second} KiB after a second round");
    assert!(
        second < after + 2 * 1024,
        "RSS grew from {after} KiB to {second} KiB over a second round of the same load"
    );
}
