//! The measured parts (letters as in docs/performance.md's "End to end" section).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chipcard_client::{CardId, Client};
use chipcard_ipc::message::{ClientReady, CommandCard, TakeCard};
use chipcard_ipc::{Envelope, EnvelopeCodec, Outgoing};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::floor::{to_hex, wire_bytes, SELECT_MF};
use crate::report::Row;
use crate::server::{Chipcardd, EmulDriver};
use crate::stats::{ms, ratio, us, Samples};

/// Sizes of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The quick mode (CI): small counts, no thresholds.
    pub quick: bool,
    /// Where chipcardd and the drivers are.
    pub bin_dir: std::path::PathBuf,
}

impl Plan {
    fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// Whether a target was met, `None` in the quick mode (targets not judged).
    pub fn met(&self, ok: bool) -> Option<bool> {
        (!self.quick).then_some(ok)
    }
}

/// Readers per emulated driver in the throughput server.
const READERS_PER_DRIVER: usize = 64;

/// Drivers with `n` readers in all, up to 64 each, each reader holding a card.
pub fn card_drivers(n: usize) -> Vec<EmulDriver> {
    (0..n.div_ceil(READERS_PER_DRIVER))
        .map(|i| {
            let readers = (n - i * READERS_PER_DRIVER).min(READERS_PER_DRIVER);
            EmulDriver::with_cards(&format!("emul{i}"), readers)
        })
        .collect()
}

/// The card ids in reader order.
async fn card_ids(client: &Client) -> anyhow::Result<Vec<CardId>> {
    Ok(client
        .readers()
        .await?
        .iter()
        .flat_map(|r| r.cards.iter().map(|c| c.card_id))
        .collect())
}

/// A client speaking frames itself (no chipcard-client): the server and driver without
/// the client library, for part b's breakdown. Its socket is set up as chipcard-client's
/// and the floor's are (chipcard_sock halves).
struct RawClient {
    reader: FramedRead<chipcard_sock::ReadHalf, EnvelopeCodec>,
    writer: FramedWrite<chipcard_sock::WriteHalf, EnvelopeCodec>,
    next_id: u32,
}

impl RawClient {
    async fn connect(socket: &Path, card: CardId) -> anyhow::Result<RawClient> {
        let (read, write) = chipcard_sock::split_tokio(UnixStream::connect(socket).await?)?;
        let mut raw = RawClient {
            reader: FramedRead::new(read, EnvelopeCodec::new()),
            writer: FramedWrite::new(write, EnvelopeCodec::new()),
            next_id: 0,
        };
        raw.call(&ClientReady {
            application: "bench raw".to_owned(),
            chipcard_version: "5.1".to_owned(),
            system: "Linux".to_owned(),
            gwen_version: None,
        })
        .await?;
        let env = raw
            .call(&TakeCard {
                card_id: card,
                timeout: Some(5000),
            })
            .await?;
        anyhow::ensure!(env.cmd == "TakeCardResponse", "TakeCard: {}", env.cmd);
        Ok(raw)
    }

    /// Sends a request and returns its response.
    async fn call(&mut self, msg: &impl Outgoing) -> anyhow::Result<Envelope> {
        self.next_id += 1;
        let id = self.next_id;
        self.writer.send(Envelope::new(id, None, msg)).await?;
        loop {
            let env = self.reader.next().await.context("connection closed")???;
            if env.refid == Some(id) {
                return Ok(env);
            }
        }
    }
}

/// Part b's result: rows and the two sample sets for the plot.
pub struct RoundTrip {
    /// The table rows.
    pub rows: Vec<Row>,
    /// chipcardd's round trips.
    pub chipcard: Samples,
    /// The relay floor's.
    pub floor: Samples,
}

/// b: one client's SELECT round trip through chipcardd and the emulated driver, against
/// the relay floor, alternating batches so that both see the same machine load.
pub async fn round_trip(plan: &Plan, server: &Chipcardd) -> anyhow::Result<RoundTrip> {
    let n: usize = plan.pick(10_000, 500);
    let rounds = 10;
    let client = Client::connect(server.options("bench b")).await?;
    let card = *card_ids(&client).await?.first().context("no card")?;
    let guard = client.take_card(card, Duration::from_secs(5)).await?;

    let (request, reply) = wire_bytes()?;
    let relay_dir = tempfile::tempdir()?;
    let relay_sock = relay_dir.path().join("relay.sock");
    let mut relay = std::process::Command::new(std::env::current_exe()?)
        .arg("relay")
        .arg("--socket")
        .arg(&relay_sock)
        .args(["--request-len", &request.len().to_string()])
        .args(["--reply", &to_hex(&reply)])
        .spawn()
        .context("start the relay")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let stream = loop {
        match UnixStream::connect(&relay_sock).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => return Err(e).context("connect to the relay"),
        }
    };
    // The same socket set-up as chipcard-client's (see chipcard_sock).
    let (mut stream_rd, mut stream_wr) = chipcard_sock::split_tokio(stream)?;
    let mut buf = vec![0u8; reply.len()];
    let raw_card = *card_ids(&client).await?.get(1).context("no second card")?;
    let mut raw = RawClient::connect(&server.socket, raw_card).await?;
    let raw_command = CommandCard {
        card_id: raw_card,
        data: bytes::Bytes::from_static(&SELECT_MF),
        target: None,
    };

    let mut cc = Vec::with_capacity(n);
    let mut fl = Vec::with_capacity(n);
    let mut rw = Vec::with_capacity(n);
    for round in 0..=rounds {
        // Round 0 warms both paths up and is not counted.
        let count = if round == 0 { n / 20 } else { n / rounds };
        for _ in 0..count {
            let t = Instant::now();
            let r = guard.transmit(&SELECT_MF).await?;
            let d = t.elapsed();
            if r.status().0 != 0x9000 {
                bail!("SELECT 3F00 answered {}", r.status());
            }
            if round > 0 {
                cc.push(d);
            }
        }
        for _ in 0..count {
            let t = Instant::now();
            let env = raw.call(&raw_command).await?;
            let d = t.elapsed();
            anyhow::ensure!(env.cmd == "CommandCardResponse", "CommandCard: {}", env.cmd);
            if round > 0 {
                rw.push(d);
            }
        }
        for _ in 0..count {
            let t = Instant::now();
            stream_wr.write_all(&request).await?;
            stream_rd.read_exact(&mut buf).await?;
            if round > 0 {
                fl.push(t.elapsed());
            }
        }
    }
    drop((stream_rd, stream_wr));
    let _ = relay.wait();
    guard.release().await?;

    drop(raw);
    let chipcard = Samples::new(cc);
    let floor = Samples::new(fl);
    let raw = Samples::new(rw);
    let r50 = ratio(chipcard.pct(50.0), floor.pct(50.0));
    let mut rows = Vec::new();
    for p in [50.0, 90.0, 99.0] {
        rows.push(Row::new(
            "b",
            format!("APDU round trip p{p} (n={})", chipcard.len()),
            us(chipcard.pct(p)),
            us(floor.pct(p)),
            Some(ratio(chipcard.pct(p), floor.pct(p))),
            if p == 50.0 { "≤ 1.3× floor" } else { "" },
            if p == 50.0 {
                plan.met(r50 <= 1.3)
            } else {
                None
            },
        ));
    }
    rows.push(Row::new(
        "b",
        format!(
            "breakdown: p50 with a raw-frame client instead of chipcard-client (n={})",
            raw.len()
        ),
        us(raw.pct(50.0)),
        us(floor.pct(50.0)),
        Some(ratio(raw.pct(50.0), floor.pct(50.0))),
        "",
        None,
    ));
    Ok(RoundTrip {
        rows,
        chipcard,
        floor,
    })
}

/// d: APDUs/s with `clients` concurrent clients, each on its own card.
pub async fn throughput(plan: &Plan, server: &Chipcardd) -> anyhow::Result<Vec<Row>> {
    let warm = plan.pick(Duration::from_millis(500), Duration::from_millis(100));
    let window = plan.pick(Duration::from_secs(3), Duration::from_millis(300));
    let probe = Client::connect(server.options("bench d")).await?;
    let cards = card_ids(&probe).await?;
    let mut rows = Vec::new();
    for clients in [1usize, 8, 64, 512] {
        if clients > cards.len() {
            bail!("only {} cards for {clients} clients", cards.len());
        }
        let mut guards = Vec::with_capacity(clients);
        for card in &cards[..clients] {
            let c = Client::connect(server.options("bench d")).await?;
            let g = c.take_card(*card, Duration::from_secs(10)).await?;
            guards.push((c, g));
        }
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now() + Duration::from_millis(20);
        let from = start + warm;
        let until = from + window;
        let mut tasks = tokio::task::JoinSet::new();
        for (c, g) in guards {
            let done = done.clone();
            tasks.spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                loop {
                    g.transmit(&SELECT_MF).await?;
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    if now >= from {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                g.release().await?;
                drop(c);
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let rate = done.load(Ordering::Relaxed) as f64 / window.as_secs_f64();
        let (target, met) = if clients == 64 {
            ("≥ 50,000 APDU/s", plan.met(rate >= 50_000.0))
        } else {
            ("", None)
        };
        rows.push(Row::new(
            "d",
            format!("throughput, {clients} client(s)"),
            format!("{rate:.0} APDU/s"),
            String::new(),
            None,
            target,
            met,
        ));
    }
    Ok(rows)
}

/// `load`: `clients` clients on the first cards of the server at `socket` send SELECTs
/// for `duration`; returns APDUs/s.
pub async fn load(socket: &Path, clients: usize, duration: Duration) -> anyhow::Result<f64> {
    let options = || chipcard_client::ConnectOptions::new("bench load").socket(socket);
    let probe = Client::connect(options()).await?;
    let cards = card_ids(&probe).await?;
    anyhow::ensure!(cards.len() >= clients, "only {} cards", cards.len());
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for card in &cards[..clients] {
        let c = Client::connect(options()).await?;
        let g = c.take_card(*card, Duration::from_secs(10)).await?;
        let done = done.clone();
        tasks.spawn(async move {
            while Instant::now() < until {
                g.transmit(&SELECT_MF).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            g.release().await?;
            drop(c);
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64())
}

/// d: chipcardd's memory per connected idle client.
pub async fn memory(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let wanted: usize = plan.pick(10_000, 200);
    let server =
        Chipcardd::start(&plan.bin_dir, &[EmulDriver::with_cards("emul0", 1)], "", 1).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = server.rss_kib()?;
    let mut clients = Vec::with_capacity(wanted);
    let mut stopped = None;
    for _ in 0..wanted {
        match Client::connect(server.options("bench idle")).await {
            Ok(c) => clients.push(c),
            Err(e) => {
                stopped = Some(e.to_string());
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = server.rss_kib()?;
    let n = clients.len().max(1);
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    let what = match &stopped {
        None => format!("memory per idle client ({n} connected)"),
        Some(e) => format!("memory per idle client ({n} connected; stopped: {e})"),
    };
    drop(clients);
    Ok(vec![Row::new(
        "d",
        what,
        format!("{per:.2} KiB"),
        format!("RSS {before} → {after} KiB"),
        None,
        "≤ 16 KiB",
        plan.met(per <= 16.0),
    )])
}

/// e: insert through the control socket → `CardAvailable` at a waiting client.
pub async fn insert_latency(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let n: usize = plan.pick(200, 20);
    let driver = EmulDriver {
        name: "ins".to_owned(),
        readers: 1,
        empty: true,
        control: true,
    };
    let server = Chipcardd::start(&plan.bin_dir, &[driver], "", 1).await?;
    let client = Client::connect(server.options("bench e")).await?;
    client.start_wait(&[], &[]).await?;
    let ctl = UnixStream::connect(server.control_socket("ins")).await?;
    let (rd, mut wr) = ctl.into_split();
    let mut lines = BufReader::new(rd).lines();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let t = Instant::now();
        wr.write_all(b"insert ins-0 0 3B0102\n").await?;
        let card = tokio::time::timeout(Duration::from_secs(5), client.next_available_card())
            .await
            .context("no CardAvailable within 5 s")?
            .context("connection closed")?;
        let d = t.elapsed();
        if i >= 5 {
            samples.push(d);
        }
        let _ = card;
        let ok = lines.next_line().await?.unwrap_or_default();
        anyhow::ensure!(ok == "ok", "insert: {ok}");
        wr.write_all(b"remove ins-0 0\n").await?;
        let ok = lines.next_line().await?.unwrap_or_default();
        anyhow::ensure!(ok == "ok", "remove: {ok}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let s = Samples::new(samples);
    Ok(vec![Row::new(
        "e",
        format!("insert → CardAvailable p50 / p99 (n={})", s.len()),
        format!("{} / {}", ms(s.pct(50.0)), ms(s.pct(99.0))),
        String::new(),
        None,
        "≤ 5 ms",
        plan.met(
            s.pct(50.0) <= Duration::from_millis(5) && s.pct(99.0) <= Duration::from_millis(5),
        ),
    )])
}

/// f: start → 10 emulated drivers ready and the socket answering with all readers.
pub async fn startup(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let reps: usize = plan.pick(10, 2);
    let drivers: Vec<EmulDriver> = (0..10)
        .map(|i| EmulDriver::with_cards(&format!("emul{i}"), 4))
        .collect();
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut server = Chipcardd::spawn(&plan.bin_dir, &drivers, "")?;
        let client = server.wait_ready(40, Duration::from_secs(30)).await?;
        samples.push(server.started.elapsed());
        drop(client);
    }
    let s = Samples::new(samples);
    Ok(vec![Row::new(
        "f",
        format!(
            "start → 10 drivers, 40 readers listed: p50 / max (n={})",
            s.len()
        ),
        format!("{} / {}", ms(s.pct(50.0)), ms(s.pct(100.0))),
        String::new(),
        None,
        "",
        None,
    )])
}

/// Why part c cannot run, if it cannot.
pub fn pcsc_missing() -> Option<String> {
    let pcscd = ["/usr/sbin/pcscd", "/sbin/pcscd", "/usr/local/sbin/pcscd"]
        .iter()
        .any(|p| Path::new(p).is_file());
    if !pcscd {
        return Some("pcscd not installed".to_owned());
    }
    if !Path::new(chipcard_testlab::pcscd::VPCD_DRIVER).exists() {
        return Some(format!("{} missing", chipcard_testlab::pcscd::VPCD_DRIVER));
    }
    None
}

/// c (direct half): the pcsc crate connected (shared) to the card in
/// [`chipcard_testlab::pcscd::READER_0`].
struct PcscDirect {
    card: pcsc::Card,
    // Declared after `card`: the card is disconnected before its context is released.
    _ctx: pcsc::Context,
}

impl PcscDirect {
    /// Connects to the card behind the pcscd at `socket` (blocking).
    fn connect(socket: &Path) -> anyhow::Result<PcscDirect> {
        use chipcard_testlab::pcscd::READER_0;
        // libpcsclite reads this once, at the first call; nothing else in this process uses it.
        std::env::set_var("PCSCLITE_CSOCK_NAME", socket);
        let ctx = pcsc::Context::establish(pcsc::Scope::User)?;
        let reader = std::ffi::CString::new(READER_0)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let card = loop {
            match ctx.connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY) {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).context("connect to the card"),
            }
        };
        Ok(PcscDirect { card, _ctx: ctx })
    }

    /// `count` SELECT round trips (blocking).
    fn batch(&self, count: usize) -> anyhow::Result<Vec<Duration>> {
        let mut buf = [0u8; 258];
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            let r = self.card.transmit(&SELECT_MF, &mut buf)?;
            let d = t.elapsed();
            anyhow::ensure!(r == [0x90, 0x00], "SELECT answered {r:02X?}");
            out.push(d);
        }
        Ok(out)
    }
}

/// Part c's result: rows and, when it ran, the two sample sets for the plot.
pub struct ThroughPcscd {
    /// The table rows.
    pub rows: Vec<Row>,
    /// Through chipcardd and the pcsc driver, and the pcsc crate direct.
    pub samples: Option<(Samples, Samples)>,
}

/// c: through chipcardd and the pcsc driver to a virtual card behind an isolated pcscd,
/// against the pcsc crate on the same card. Both are connected to the card at once (the
/// driver connects shared, as does the direct side) and measured in alternating batches, as
/// part b is, so that drift in the machine's load hits both alike.
pub async fn through_pcscd(plan: &Plan) -> anyhow::Result<ThroughPcscd> {
    if let Some(why) = pcsc_missing() {
        return Ok(ThroughPcscd {
            rows: vec![Row::skipped("c", format!("skipped: {why}"))],
            samples: None,
        });
    }
    let n: usize = plan.pick(10_000, 200);
    let rounds = 10;
    let pcscd = chipcard_testlab::pcscd::Pcscd::start();
    let inserted = pcscd.insert(chipcard_emulcard::CardConfig::default());

    let extra = format!(
        "driver {{\n  type=\"pcsc\"\n  name=\"pcsc\"\n  pcscdSocket=\"{}\"\n  readers=\"{}\"\n}}\n",
        pcscd.socket.display(),
        chipcard_testlab::pcscd::READER_0
    );
    let server = Chipcardd::start(&plan.bin_dir, &[], &extra, 1).await?;
    let client = Client::connect(server.options("bench c")).await?;
    let card = client.wait_for_card(Duration::from_secs(10)).await?;
    let guard = client
        .take_card(card.card_id, Duration::from_secs(5))
        .await?;
    let socket = pcscd.socket.clone();
    let mut direct = tokio::task::spawn_blocking(move || PcscDirect::connect(&socket)).await??;

    let mut via_out = Vec::with_capacity(n);
    let mut direct_out = Vec::with_capacity(n);
    for round in 0..=rounds {
        // Round 0 warms both paths up and is not counted.
        let count = if round == 0 { n / 20 + 5 } else { n / rounds };
        let (back, batch) = tokio::task::spawn_blocking(move || {
            let batch = direct.batch(count);
            (direct, batch)
        })
        .await?;
        direct = back;
        let batch = batch.context("pcsc crate direct")?;
        let mut via_batch = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            let r = guard.transmit(&SELECT_MF).await?;
            let d = t.elapsed();
            anyhow::ensure!(r.status().0 == 0x9000, "SELECT answered {}", r.status());
            via_batch.push(d);
        }
        if round > 0 {
            direct_out.extend(batch);
            via_out.extend(via_batch);
        }
    }
    tokio::task::spawn_blocking(move || drop(direct)).await?;
    guard.release().await?;
    let insert = pcscd_insert_latency(plan, &pcscd, inserted, &client).await?;
    let via = Samples::new(via_out);
    let direct = Samples::new(direct_out);
    let r50 = ratio(via.pct(50.0), direct.pct(50.0));
    let mut rows: Vec<Row> = [50.0, 90.0, 99.0]
        .iter()
        .map(|&p| {
            Row::new(
                "c",
                format!("via pcscd p{p} (n={}) vs pcsc crate direct", via.len()),
                us(via.pct(p)),
                us(direct.pct(p)),
                Some(ratio(via.pct(p), direct.pct(p))),
                if p == 50.0 { "≤ 1.25× direct" } else { "" },
                if p == 50.0 {
                    plan.met(r50 <= 1.25)
                } else {
                    None
                },
            )
        })
        .collect();
    rows.push(Row::new(
        "c",
        format!(
            "card into the vpcd reader → CardAvailable p50 / max (n={})",
            insert.len()
        ),
        format!("{} / {}", ms(insert.pct(50.0)), ms(insert.pct(100.0))),
        String::new(),
        None,
        "",
        None,
    ));
    Ok(ThroughPcscd {
        rows,
        samples: Some((via, direct)),
    })
}

/// c: a card put into the vpcd reader → `CardAvailable` at a waiting client, through pcscd
/// and the pcsc driver. pcscd polls a vpcd reader for a card about every 400 ms, so this is
/// mostly that polling: the pcsc driver is told by `SCardGetStatusChange` when pcscd sees it.
async fn pcscd_insert_latency(
    plan: &Plan,
    pcscd: &chipcard_testlab::pcscd::Pcscd,
    card: chipcard_vpcd_card::RunningCard,
    client: &Client,
) -> anyhow::Result<Samples> {
    // Long enough for pcscd to poll the emptied reader (and the driver to report it).
    const SETTLE: Duration = Duration::from_millis(1_200);
    let n: usize = plan.pick(10, 2);
    let addr = pcscd.card_addr();
    let remove = |card: chipcard_vpcd_card::RunningCard| async move {
        tokio::task::spawn_blocking(move || card.remove())
            .await?
            .context("take the card out of the vpcd reader")?;
        tokio::time::sleep(SETTLE).await;
        anyhow::Ok(())
    };
    remove(card).await?;
    client.start_wait(&[], &[]).await?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let card = tokio::task::spawn_blocking(move || {
            chipcard_vpcd_card::VirtualCard::connect(
                addr,
                chipcard_emulcard::CardConfig::default(),
            )?
            .spawn()
        })
        .await?
        .context("put a card into the vpcd reader")?;
        tokio::time::timeout(Duration::from_secs(5), client.next_available_card())
            .await
            .context("no CardAvailable within 5 s of the insert")?
            .context("connection closed")?;
        samples.push(t.elapsed());
        remove(card).await?;
    }
    Ok(Samples::new(samples))
}
