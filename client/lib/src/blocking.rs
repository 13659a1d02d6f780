//! A blocking API over the async one, for programs without a runtime of their own.
//!
//! [`Client`] owns a small tokio runtime (one worker thread) that runs the connection in the
//! background, so pushes are read and a dropped [`CardGuard`]'s release is sent even while
//! the program is not calling the client. Its methods must not be called from within an
//! async runtime (tokio panics on a nested `block_on`): use [`crate::Client`] there.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chipcard_ipc::message::{CardAvailable, FromClient, Notification, ReaderInfo, ToClient};
use chipcard_ipc::{CardId, ClientId};
use tokio::runtime::Runtime;

use crate::apdu::{Atr, Response};
use crate::client::ConnectOptions;
use crate::error::{Error, Result};

/// A blocking connection to chipcardd. See [`crate::Client`] for what each method does.
#[derive(Debug)]
pub struct Client {
    // Declared first so it is dropped before the runtime it runs on.
    inner: crate::Client,
    rt: Arc<Runtime>,
}

impl Client {
    /// Starts a runtime, connects and introduces the client with `ClientReady`.
    pub fn connect(options: ConnectOptions) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chipcard-client")
            .enable_all()
            .build()
            .map_err(|e| Error::Io(Arc::new(e)))?;
        let inner = rt.block_on(crate::Client::connect(options))?;
        Ok(Client {
            inner,
            rt: Arc::new(rt),
        })
    }

    /// The async client underneath, e.g. to clone it into another thread's runtime.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// The id the server gave this client.
    pub fn client_id(&self) -> ClientId {
        self.inner.client_id()
    }

    /// The version the server reported.
    pub fn server_version(&self) -> &str {
        self.inner.server_version()
    }

    /// The socket this client is connected to.
    pub fn socket_path(&self) -> &Path {
        self.inner.socket_path()
    }

    /// Sends any request; see [`crate::Client::request`].
    pub fn request(&self, message: impl Into<FromClient>) -> Result<ToClient> {
        self.rt.block_on(self.inner.request(message))
    }

    /// Opens a context with a service; see [`crate::Client::service_open`].
    pub fn service_open(
        &self,
        service: &crate::ServiceRef,
        command: Option<chipcard_ipc::Group>,
    ) -> Result<crate::ServiceContext> {
        self.rt.block_on(self.inner.service_open(service, command))
    }

    /// Sends a command to an open context; see [`crate::Client::service_command`].
    pub fn service_command(
        &self,
        context: &crate::ServiceContext,
        name: &str,
        args: chipcard_ipc::Group,
    ) -> Result<crate::ServiceReply> {
        self.rt
            .block_on(self.inner.service_command(context, name, args))
    }

    /// Closes a context; see [`crate::Client::service_close`].
    pub fn service_close(&self, context: &crate::ServiceContext) -> Result<chipcard_ipc::Group> {
        self.rt.block_on(self.inner.service_close(context))
    }

    /// Every reader and the cards in it.
    pub fn readers(&self) -> Result<Vec<ReaderInfo>> {
        self.rt.block_on(self.inner.readers())
    }

    /// Starts `CardAvailable` pushes; see [`crate::Client::start_wait`].
    pub fn start_wait(&self, flags: &[&str], mask: &[&str]) -> Result<()> {
        self.rt.block_on(self.inner.start_wait(flags, mask))
    }

    /// Stops `CardAvailable` pushes.
    pub fn stop_wait(&self) -> Result<()> {
        self.rt.block_on(self.inner.stop_wait())
    }

    /// The next `CardAvailable` push, waiting up to `timeout` (`None`: as long as it takes).
    /// `Ok(None)` when the time ran out; [`Error::Closed`] when the connection is gone.
    pub fn next_available_card(&self, timeout: Option<Duration>) -> Result<Option<CardAvailable>> {
        self.rt
            .block_on(next_with_timeout(timeout, self.inner.next_available_card()))
            .map(|got| got.ok_or_else(|| self.inner.closed_error()))
            .transpose()
    }

    /// Waits up to `timeout` for a card; see [`crate::Client::wait_for_card`].
    pub fn wait_for_card(&self, timeout: Duration) -> Result<CardAvailable> {
        self.rt.block_on(self.inner.wait_for_card(timeout))
    }

    /// Chooses notifications; see [`crate::Client::set_notify`].
    pub fn set_notify(&self, patterns: &[&str]) -> Result<()> {
        self.rt.block_on(self.inner.set_notify(patterns))
    }

    /// The next `Notification` push, waiting up to `timeout` (`None`: as long as it takes).
    /// `Ok(None)` when the time ran out; [`Error::Closed`] when the connection is gone.
    pub fn next_notification(&self, timeout: Option<Duration>) -> Result<Option<Notification>> {
        self.rt
            .block_on(next_with_timeout(timeout, self.inner.next_notification()))
            .map(|got| got.ok_or_else(|| self.inner.closed_error()))
            .transpose()
    }

    /// Takes a card; see [`crate::Client::take_card`].
    pub fn take_card(&self, card_id: CardId, timeout: Duration) -> Result<CardGuard> {
        let inner = self.rt.block_on(self.inner.take_card(card_id, timeout))?;
        Ok(CardGuard {
            inner,
            rt: self.rt.clone(),
        })
    }

    /// Asks whether a card is still present.
    pub fn check_card(&self, card_id: CardId) -> Result<bool> {
        self.rt.block_on(self.inner.check_card(card_id))
    }

    /// A variable of the driver serving `card_id`.
    pub fn driver_var(&self, card_id: CardId, name: &str) -> Result<String> {
        self.rt.block_on(self.inner.driver_var(card_id, name))
    }
}

/// `Some(item)` / `None` (closed) from `next`, or `Ok(None)`-like timeout as `None` outer.
async fn next_with_timeout<T>(
    timeout: Option<Duration>,
    next: impl std::future::Future<Output = Option<T>>,
) -> Option<Option<T>> {
    match timeout {
        None => Some(next.await),
        Some(t) => tokio::time::timeout(t, next).await.ok(),
    }
}

/// A card taken by a blocking [`Client`]; dropping it releases the card (best effort) like
/// [`crate::CardGuard`].
#[derive(Debug)]
pub struct CardGuard {
    inner: crate::CardGuard,
    rt: Arc<Runtime>,
}

impl CardGuard {
    /// The card.
    pub fn card_id(&self) -> CardId {
        self.inner.card_id()
    }

    /// Sends a command APDU and returns the response APDU.
    pub fn transmit(&self, apdu: &[u8]) -> Result<Response> {
        self.rt.block_on(self.inner.transmit(apdu))
    }

    /// Resets the card and returns its new ATR.
    pub fn reset(&self) -> Result<Atr> {
        self.rt.block_on(self.inner.reset())
    }

    /// Asks whether the card is still present.
    pub fn check(&self) -> Result<bool> {
        self.rt.block_on(self.inner.check())
    }

    /// A variable of the driver serving the card.
    pub fn driver_var(&self, name: &str) -> Result<String> {
        self.rt.block_on(self.inner.driver_var(name))
    }

    /// Gives the card back and waits for the server to confirm.
    pub fn release(self) -> Result<()> {
        self.rt.block_on(self.inner.release())
    }
}
