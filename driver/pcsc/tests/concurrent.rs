//! Two readers at once through `chipcard-driver-pcsc` and a real pcscd: a card that takes
//! seconds to answer in one vpcd reader (as a PIN pad waiting for its PIN) does not hold up
//! the card in the other. pcscd and vsmartcard-vpcd must be installed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use chipcard_emulcard::CardConfig;
use chipcard_ipc::message::FromDriver;
use chipcard_ipc::ReaderId;
use chipcard_testlab::apdus::SELECT_MF;
use chipcard_testlab::driver::card_command;
use chipcard_vpcd_card::{VirtualCard, GET_ATR};
use common::{spawn_driver, Driver, Pcscd, CARD_TIMEOUT};

const R0: ReaderId = ReaderId(0);
const R1: ReaderId = ReaderId(1);

/// How long the slow card takes to answer an APDU.
const SLOW: Duration = Duration::from_secs(2);

/// A vpcd card that answers every APDU with 90 00 after [`SLOW`]; it ends when the reader
/// closes the connection.
fn slow_card(addr: SocketAddr, atr: Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("the slow card connects to vpcd");
    thread::spawn(move || loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut message).is_err() {
            return;
        }
        let answer = match message.as_slice() {
            [GET_ATR] => atr.clone(),
            [_] => continue,
            _ => {
                thread::sleep(SLOW);
                vec![0x90, 0x00]
            }
        };
        let mut out = u16::try_from(answer.len())
            .expect("short")
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(&answer);
        if stream.write_all(&out).is_err() {
            return;
        }
    });
}

async fn inserted(driver: &mut Driver, reader: ReaderId) {
    match driver.event(CARD_TIMEOUT).await {
        FromDriver::CardInserted(c) => assert_eq!(c.reader_id, reader),
        other => panic!("expected CardInserted: {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_card_holds_up_no_other_reader() {
    let pcscd = Pcscd::start();
    let mut driver = spawn_driver();
    let ready = driver.start_driver(pcscd.driver_config()).await;
    assert!(ready.outcome.is_ok(), "{:?}", ready.outcome);

    slow_card(pcscd.card_addr(), CardConfig::default().atr);
    inserted(&mut driver, R0).await;
    let reader_1 = SocketAddr::from(([127, 0, 0, 1], pcscd.port + 1));
    let _card = VirtualCard::connect_card(
        reader_1,
        chipcard_emulcard::EmulCard::new(CardConfig::default()).expect("valid card"),
    )
    .expect("the card connects to vpcd")
    .spawn()
    .expect("the card's thread starts");
    inserted(&mut driver, R1).await;

    let started = Instant::now();
    let slow = driver.send(&card_command(R0, 0, &SELECT_MF)).await;
    let quick = driver.send(&card_command(R1, 0, &SELECT_MF)).await;
    let (env, msg) = driver.recv().await;
    assert_eq!(env.refid, Some(quick), "reader 1 answers first: {msg:?}");
    let took = started.elapsed();
    assert!(took < SLOW / 2, "reader 1 answered after {took:?}");
    let (env, msg) = driver.recv().await;
    assert_eq!(env.refid, Some(slow), "{msg:?}");
    assert!(started.elapsed() >= SLOW);

    let status = driver.stop().await;
    assert_eq!(status.code(), Some(0));
}
