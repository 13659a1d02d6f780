//! The requests tests make again and again, as methods of [`RawClient`]: each sends one
//! request, waits for its answer and panics (failing the test) on an answer of the wrong kind.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chipcard_ipc::message::{
    CommandCard, CommandCardResponse, ListReaders, ListReadersResponse, ReaderInfo, ReleaseCard,
    SetNotify, TakeCard, ToClient,
};
use chipcard_ipc::{CardId, ErrorCode, Group};

use crate::link::ANSWER_TIMEOUT as TIMEOUT;
use crate::raw_client::RawClient;

/// `SELECT MF` (`00 A4 00 0C 02 3F 00`), which every emulated card answers with `90 00`.
pub const SELECT_MF: &[u8] = &crate::apdus::SELECT_MF;

/// The status word (last two bytes) of a response APDU.
pub fn status_word(response: &[u8]) -> u16 {
    match response {
        [.., sw1, sw2] => u16::from_be_bytes([*sw1, *sw2]),
        _ => panic!("response APDU without a status word: {response:02X?}"),
    }
}

impl RawClient {
    /// `ListReaders`.
    pub async fn list_readers(&mut self) -> ListReadersResponse {
        match self.request(&ListReaders {}).await {
            ToClient::ListReadersResponse(r) => r,
            other => panic!("ListReaders answered {other:?}"),
        }
    }

    /// The ids of all cards the server lists, reader by reader.
    pub async fn card_ids(&mut self) -> Vec<CardId> {
        self.list_readers()
            .await
            .readers
            .iter()
            .flat_map(|r| r.cards.iter().map(|c| c.card_id))
            .collect()
    }

    /// The first card the server lists; fails the test when there is none.
    pub async fn first_card(&mut self) -> CardId {
        *self
            .card_ids()
            .await
            .first()
            .expect("the configuration has a card")
    }

    /// The names of the readers the server lists, in its order.
    pub async fn reader_names(&mut self) -> Vec<String> {
        self.list_readers()
            .await
            .readers
            .into_iter()
            .map(|r| r.reader_name)
            .collect()
    }

    /// The reader named `name`, if the server lists it.
    pub async fn reader(&mut self, name: &str) -> Option<ReaderInfo> {
        self.list_readers()
            .await
            .readers
            .into_iter()
            .find(|r| r.reader_name == name)
    }

    /// The first card in the reader named `name`, if there is one.
    pub async fn card_in(&mut self, reader: &str) -> Option<CardId> {
        self.reader(reader)
            .await
            .and_then(|r| r.cards.first().map(|c| c.card_id))
    }

    /// Polls `ListReaders` until `pred` holds for the list, up to the timeout; `what` says
    /// what was awaited when it never does.
    pub async fn readers_until(
        &mut self,
        what: &str,
        pred: impl Fn(&ListReadersResponse) -> bool,
    ) -> ListReadersResponse {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let list = self.list_readers().await;
            if pred(&list) {
                return list;
            }
            assert!(Instant::now() < deadline, "never {what}: {list:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `ListReaders` until the reader named `reader` holds a card that `accept`s.
    pub async fn wait_for_card_where(
        &mut self,
        reader: &str,
        accept: impl Fn(CardId) -> bool,
    ) -> CardId {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(card) = self.card_in(reader).await.filter(|c| accept(*c)) {
                return card;
            }
            assert!(
                Instant::now() < deadline,
                "no card appeared in reader {reader}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `ListReaders` until the reader named `reader` holds a card.
    pub async fn wait_for_card(&mut self, reader: &str) -> CardId {
        self.wait_for_card_where(reader, |_| true).await
    }

    /// `TakeCard` with `Timeout` in ms (`None`: the server's default); the error, if any.
    pub async fn take(&mut self, card: CardId, timeout_ms: Option<i32>) -> Option<ErrorCode> {
        match self
            .request(&TakeCard {
                card_id: card,
                timeout: timeout_ms,
            })
            .await
        {
            ToClient::TakeCardResponse(r) => r.outcome.error,
            other => panic!("TakeCard answered {other:?}"),
        }
    }

    /// `ReleaseCard`; the error, if any.
    pub async fn release(&mut self, card: CardId) -> Option<ErrorCode> {
        match self.request(&ReleaseCard { card_id: card }).await {
            ToClient::ReleaseCardResponse(r) => r.outcome.error,
            other => panic!("ReleaseCard answered {other:?}"),
        }
    }

    /// `CommandCard`: the response APDU, or the error code of a `CommandCardResponse` or an
    /// `Error`.
    pub async fn apdu(&mut self, card: CardId, apdu: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        match self
            .request(&CommandCard {
                card_id: card,
                data: Bytes::copy_from_slice(apdu),
                target: None,
            })
            .await
        {
            ToClient::CommandCardResponse(r) => match r.outcome.error {
                None => Ok(r.data.map(|d| d.to_vec()).unwrap_or_default()),
                Some(e) => Err(e),
            },
            ToClient::ErrorResponse(e) => Err(e.error_code()),
            other => panic!("CommandCard answered {other:?}"),
        }
    }

    /// `CommandCard` with `apdu` to `card`: the whole `CommandCardResponse` (an `Error`
    /// answer fails the test).
    pub async fn command_card(&mut self, card: CardId, apdu: &[u8]) -> CommandCardResponse {
        self.call(&CommandCard {
            card_id: card,
            data: Bytes::copy_from_slice(apdu),
            target: None,
        })
        .await
    }

    /// `SetNotify` with `patterns`, which the server must accept.
    pub async fn subscribe(&mut self, patterns: &[&str]) {
        match self
            .request(&SetNotify {
                flags: patterns.iter().map(|f| f.to_string()).collect(),
            })
            .await
        {
            ToClient::SetNotifyResponse(r) => assert_eq!(r.outcome.error, None, "SetNotify"),
            other => panic!("SetNotify answered {other:?}"),
        }
    }

    /// Waits for a notification `ntype:ncode` whose data satisfy `check`, skipping other
    /// pushes; returns its data. A response arriving meanwhile fails the test.
    pub async fn notification(
        &mut self,
        ntype: &str,
        ncode: &str,
        check: impl Fn(&Group) -> bool,
    ) -> Group {
        loop {
            let (env, msg) = self.next_message().await;
            assert!(env.refid.is_none(), "unexpected response {msg:?}");
            if let ToClient::Notification(n) = msg {
                if n.ntype == ntype && n.ncode == ncode && check(&n.data) {
                    return n.data;
                }
            }
        }
    }
}
