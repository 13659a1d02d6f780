//! `chipcard-driver-pcsc` with a third-party virtual card: vsmartcard's Python `vicc`.
//!
//! Needs the Debian packages vsmartcard-vpicc, python3-virtualsmartcard and
//! python3-pycryptodome (besides pcscd and vsmartcard-vpcd); without them the test prints
//! "skipped: ..." and passes.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chipcard_ipc::message::FromDriver;
use chipcard_ipc::ReaderId;
use common::{installed, spawn_driver, Pcscd};

const PACKAGES: [&str; 3] = [
    "vsmartcard-vpicc",
    "python3-virtualsmartcard",
    "python3-pycryptodome",
];
/// vicc's ISO 7816 card.
const VICC_ATR: [u8; 11] = [
    0x3B, 0x95, 0x13, 0x81, 0x01, 0x80, 0x73, 0xFF, 0x01, 0x00, 0x0B,
];

struct Vicc(Child);

impl Drop for Vicc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_python_vicc_card_through_the_driver() {
    let missing: Vec<&str> = PACKAGES.into_iter().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        println!(
            "skipped: vicc needs the packages {} (apt-get install {})",
            missing.join(", "),
            PACKAGES.join(" ")
        );
        return;
    }
    let pcscd = Pcscd::start();
    let mut driver = spawn_driver();
    let mut config = pcscd.driver_config();
    config.set_chars("readers", &["*00 00"]);
    let ready = driver.start_driver(config).await;
    assert_eq!(ready.readers.0.len(), 1);

    // Debian's packaging: the module is not on sys.path, and vicc imports `Crypto` while
    // Debian ships pycryptodome as `Cryptodome`.
    let shim = tempfile::tempdir().expect("temporary directory");
    std::os::unix::fs::symlink(
        "/usr/lib/python3/dist-packages/Cryptodome",
        shim.path().join("Crypto"),
    )
    .expect("Crypto symlink");
    let pythonpath = format!(
        "/usr/lib/python3/site-packages/virtualsmartcard:{}",
        shim.path().display()
    );
    let t = Instant::now();
    let _vicc = Vicc(
        Command::new("vicc")
            .args(["-t", "iso7816", "-H", "127.0.0.1", "-P"])
            .arg(pcscd.port.to_string())
            .env("PYTHONPATH", pythonpath)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vicc starts"),
    );
    match driver.event(Duration::from_secs(10)).await {
        FromDriver::CardInserted(c) => {
            assert_eq!(c.reader_id, ReaderId(0));
            assert_eq!(&c.atr[..], VICC_ATR);
        }
        other => panic!("expected CardInserted: {other:?}"),
    }
    eprintln!("vicc inserted after {:?}", t.elapsed());
    // SELECT MF without FCI (vicc crashes on P2=00 under Python 3).
    let t = Instant::now();
    assert_eq!(
        driver
            .apdu(ReaderId(0), 0, &[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00])
            .await,
        [0x90, 0x00]
    );
    eprintln!("SELECT through vicc took {:?}", t.elapsed());
    let (outcome, atr) = driver.reset_card(ReaderId(0), 0).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(atr, VICC_ATR);

    drop(_vicc);
    match driver.event(Duration::from_secs(3)).await {
        FromDriver::CardRemoved(c) => assert_eq!(c.reader_id, ReaderId(0)),
        other => panic!("expected CardRemoved: {other:?}"),
    }
    assert_eq!(driver.stop().await.code(), Some(0));
}
