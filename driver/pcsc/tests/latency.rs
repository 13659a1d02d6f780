//! APDU round trips: through `chipcard-driver-pcsc` (chipcardd's side of the socketpair →
//! driver → pcscd → vpcd → chipcard-vpcd-card and back) against the pcsc crate calling the
//! same card directly. A measurement, not a check:
//!
//! ```text
//! cargo test -p chipcard-driver-pcsc --release --test latency -- --ignored --nocapture
//! ```
//!
//! `LATENCY_APDUS` sets the number of APDUs per run (default 2000).

mod common;

use std::time::{Duration, Instant};

use chipcard_emulcard::CardConfig;
use chipcard_ipc::message::FromDriver;
use chipcard_ipc::ReaderId;
use common::{percentiles, spawn_driver, Pcscd, CARD_TIMEOUT, READER_0};
use pcsc::{Context, Protocols, ReaderState, Scope, ShareMode, State};

/// SELECT EF 2F02, no FCI: a short command with a status-only answer.
const SELECT: [u8; 7] = [0x00, 0xA4, 0x00, 0x0C, 0x02, 0x2F, 0x02];
const WARM_UP: usize = 50;

fn report(what: &str, samples: &mut [Duration]) {
    let n = samples.len();
    let (p50, p99, mean) = percentiles(samples);
    println!("{what:<40} n={n:<6} p50={p50:>8.1} µs  p99={p99:>8.1} µs  mean={mean:>8.1} µs");
}

#[tokio::test]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn apdu_round_trips() {
    let count: usize = std::env::var("LATENCY_APDUS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let pcscd = Pcscd::start();
    let _card = pcscd.insert(CardConfig::default());

    // Directly with the pcsc crate. This process talks to one pcscd only: libpcsclite
    // reads PCSCLITE_CSOCK_NAME once.
    std::env::set_var("PCSCLITE_CSOCK_NAME", &pcscd.socket);
    let ctx = Context::establish(Scope::User).expect("context");
    let reader = std::ffi::CString::new(READER_0).expect("name");
    let mut states = [ReaderState::new(reader.clone(), State::UNAWARE)];
    let deadline = Instant::now() + CARD_TIMEOUT;
    loop {
        ctx.get_status_change(Duration::from_millis(500), &mut states)
            .or_else(|e| match e {
                pcsc::Error::Timeout => Ok(()),
                e => Err(e),
            })
            .expect("status");
        if states[0].event_state().contains(State::PRESENT) {
            break;
        }
        states[0].sync_current_state();
        assert!(Instant::now() < deadline, "the card did not appear");
    }
    let card = ctx
        .connect(&reader, ShareMode::Shared, Protocols::T0 | Protocols::T1)
        .expect("connect");
    let mut buf = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
    let mut direct = Vec::with_capacity(count);
    for i in 0..WARM_UP + count {
        let t = Instant::now();
        let r = card.transmit(&SELECT, &mut buf).expect("transmit");
        let took = t.elapsed();
        assert_eq!(r, [0x90, 0x00]);
        if i >= WARM_UP {
            direct.push(took);
        }
    }
    drop(card);

    // Through the driver.
    let mut driver = spawn_driver();
    let mut config = pcscd.driver_config();
    config.set_chars("readers", &[READER_0]);
    driver.start_driver(config).await;
    match driver.event(CARD_TIMEOUT).await {
        FromDriver::CardInserted(_) => {}
        other => panic!("expected CardInserted: {other:?}"),
    }
    let mut through = Vec::with_capacity(count);
    for i in 0..WARM_UP + count {
        let t = Instant::now();
        let r = driver.apdu(ReaderId(0), 0, &SELECT).await;
        let took = t.elapsed();
        assert_eq!(r, [0x90, 0x00]);
        if i >= WARM_UP {
            through.push(took);
        }
    }
    assert_eq!(driver.stop().await.code(), Some(0));

    println!();
    report("pcsc crate → pcscd → vpcd card", &mut direct);
    report("IPC → chipcard-driver-pcsc → same path", &mut through);
}
