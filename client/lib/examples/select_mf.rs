//! Lists the readers, waits for a card, takes it, selects the master file (3F00) and prints
//! the status word.
//!
//! ```text
//! cargo run -p chipcard-client --example select_mf [SOCKET]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use chipcard_client::{hex_upper, Client, ConnectOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("select_mf: {e}");
        std::process::exit(1);
    }
}

async fn run() -> chipcard_client::Result<()> {
    let mut options = ConnectOptions::new("select_mf example");
    if let Some(socket) = std::env::args_os().nth(1) {
        options = options.socket(PathBuf::from(socket));
    }
    let client = Client::connect(options).await?;
    println!(
        "connected to {} as client {}",
        client.socket_path().display(),
        client.client_id()
    );

    for reader in client.readers().await? {
        println!(
            "reader {} {:?} ({}), {} card(s)",
            reader.reader_id,
            reader.reader_name,
            reader.status.as_str(),
            reader.cards.len()
        );
    }

    println!("waiting up to 30 s for a card...");
    let card = client.wait_for_card(Duration::from_secs(30)).await?;
    println!(
        "card {} in {:?}, ATR {}",
        card.card_id,
        card.reader_name,
        hex_upper(&card.atr)
    );

    let guard = client
        .take_card(card.card_id, Duration::from_secs(10))
        .await?;
    // SELECT MF: CLA 00, INS A4, P1 00, P2 0C (no response data), Lc 02, 3F00.
    let response = guard
        .transmit(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00])
        .await?;
    println!(
        "SELECT 3F00: SW {} ({}), {} data byte(s)",
        response.status(),
        response.status().meaning(),
        response.data().len()
    );
    guard.release().await?;
    Ok(())
}
