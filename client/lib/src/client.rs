//! The async client: connecting, readers, waiting for cards, taking them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chipcard_ipc::message::{
    CardAvailable, CardCheck, CardReset, ClientReady, CommandCard, FromClient, GetDriverVar,
    ListReaders, Notification, ReaderInfo, ReleaseCard, SetNotify, StartWait, StopWait, TakeCard,
    ToClient,
};
use chipcard_ipc::{CardId, ClientId, ErrorCode, Outgoing};
use futures::Stream;
use tokio::net::UnixStream;

use crate::apdu::{hex_upper, Atr, Response};
use crate::conn::Connection;
use crate::error::{Error, Result};

/// How long a request waits for its answer unless told otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many pushes of each kind are kept for the application by default.
pub const DEFAULT_PUSH_CAPACITY: usize = 64;

/// How long [`Client::take_card`] lets the server wait for a busy card by default
/// (the server's own default).
pub const DEFAULT_TAKE_TIMEOUT: Duration = Duration::from_millis(10_000);

/// The socket path a client uses: `explicit` if given, else `$CHIPCARD_SOCKET` if set and
/// not empty, else [`chipcard_ipc::paths::client_socket_path`] for this process's effective
/// user id and `$XDG_RUNTIME_DIR`: the user's own server when one listens there, else the
/// system server (`/run/chipcard/chipcardd.sock`).
pub fn resolve_socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    if let Some(path) = std::env::var_os(chipcard_ipc::paths::SOCKET_ENV) {
        if !path.is_empty() {
            return PathBuf::from(path);
        }
    }
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    chipcard_ipc::paths::client_socket_path(
        nix::unistd::geteuid().as_raw(),
        runtime_dir.as_deref(),
        Path::exists,
    )
}

/// How to connect: socket, application name, timeouts, queue sizes.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    socket: Option<PathBuf>,
    application: String,
    request_timeout: Duration,
    push_capacity: usize,
}

impl ConnectOptions {
    /// Options for the application called `application` (sent to the server in
    /// `ClientReady`), with the default socket and limits.
    pub fn new(application: impl Into<String>) -> Self {
        ConnectOptions {
            socket: None,
            application: application.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            push_capacity: DEFAULT_PUSH_CAPACITY,
        }
    }

    /// Connects to the socket at `path` instead of the default (see [`resolve_socket_path`]).
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// How long a request waits for its answer (default 30 s). [`Client::take_card`] waits
    /// this long on top of the time it lets the server wait for the card.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How many `CardAvailable` pushes, and separately how many `Notification` pushes, are
    /// kept until the application reads them (default 64, at least 1). See
    /// [`Client::available_cards`] for what happens beyond that.
    pub fn push_capacity(mut self, capacity: usize) -> Self {
        self.push_capacity = capacity.max(1);
        self
    }

    /// The socket path these options connect to.
    pub fn socket_path(&self) -> PathBuf {
        resolve_socket_path(self.socket.as_deref())
    }
}

/// What the server said about itself when the client connected.
#[derive(Debug)]
struct Session {
    client_id: ClientId,
    server_version: String,
    server_system: String,
    socket: PathBuf,
}

/// A connection to chipcardd.
///
/// Cloning gives another handle to the same connection; requests from all handles may run
/// at the same time (they are pipelined). The connection closes when the last handle and the
/// last [`CardGuard`] are dropped.
#[derive(Clone)]
pub struct Client {
    conn: Arc<Connection>,
    session: Arc<Session>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.session.client_id)
            .field("socket", &self.session.socket)
            .finish_non_exhaustive()
    }
}

/// Matches a reply against the response type a request expects.
macro_rules! expect_reply {
    ($reply:expr, $variant:ident, $request:literal) => {
        match $reply {
            ToClient::$variant(r) => r,
            other => {
                return Err(Error::protocol(format!(
                    "{} was answered with {}",
                    $request,
                    other.cmd()
                )))
            }
        }
    };
}

impl Client {
    /// Connects and introduces the client with `ClientReady`.
    ///
    /// Must be called within a tokio runtime (the connection runs two tasks on it).
    /// A missing server gives [`Error::Connect`], whose message names the socket path.
    pub async fn connect(options: ConnectOptions) -> Result<Client> {
        let socket = options.socket_path();
        let stream = UnixStream::connect(&socket)
            .await
            .map_err(|e| Error::Connect {
                path: socket.clone(),
                source: Arc::new(e),
            })?;
        let conn = Arc::new(
            Connection::start(stream, options.push_capacity).map_err(|e| Error::Io(Arc::new(e)))?,
        );
        let ready = ClientReady {
            application: options.application.clone(),
            chipcard_version: chipcard_ipc::PROTOCOL_VERSION.to_owned(),
            system: std::env::consts::OS.to_owned(),
            gwen_version: None,
        };
        let reply = conn.request(ready.into(), options.request_timeout).await?;
        let r = expect_reply!(reply, ClientReadyResponse, "ClientReady");
        tracing::debug!(client_id = %r.client_id, socket = %socket.display(), "connected");
        Ok(Client {
            conn,
            session: Arc::new(Session {
                client_id: r.client_id,
                server_version: r.chipcard_version,
                server_system: r.system,
                socket,
            }),
            request_timeout: options.request_timeout,
        })
    }

    /// The id the server gave this client.
    pub fn client_id(&self) -> ClientId {
        self.session.client_id
    }

    /// The version the server reported (`ChipcardVersion`).
    pub fn server_version(&self) -> &str {
        &self.session.server_version
    }

    /// The operating system the server reported (`System`).
    pub fn server_system(&self) -> &str {
        &self.session.server_system
    }

    /// The socket this client is connected to.
    pub fn socket_path(&self) -> &Path {
        &self.session.socket
    }

    /// True once the connection has failed or the server has closed it.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// How many pushes were dropped so far because the application did not read them.
    pub fn dropped_pushes(&self) -> u64 {
        self.conn.dropped_pushes()
    }

    /// Sends any request and returns its answer. An `Error` answer or a failed
    /// `code`/`text` becomes [`Error::Server`]; the typed methods are built on this.
    pub async fn request(&self, message: impl Into<FromClient>) -> Result<ToClient> {
        self.conn
            .request(message.into(), self.request_timeout)
            .await
    }

    /// Every reader and the cards in it.
    pub async fn readers(&self) -> Result<Vec<ReaderInfo>> {
        let reply = self.request(ListReaders {}).await?;
        Ok(expect_reply!(reply, ListReadersResponse, "ListReaders").readers)
    }

    /// Starts `CardAvailable` pushes: once for each card present now, then for each card
    /// inserted, in readers where (reader flags AND `mask`) = (`flags` AND `mask`). Empty
    /// `flags` and `mask` match every reader. Read them with [`Client::available_cards`] or
    /// [`Client::next_available_card`].
    pub async fn start_wait(&self, flags: &[&str], mask: &[&str]) -> Result<()> {
        let msg = StartWait {
            flags: flags.iter().map(|s| (*s).to_owned()).collect(),
            mask: mask.iter().map(|s| (*s).to_owned()).collect(),
        };
        let reply = self.request(msg).await?;
        expect_reply!(reply, StartWaitResponse, "StartWait");
        Ok(())
    }

    /// Stops `CardAvailable` pushes. Pushes already queued stay readable.
    pub async fn stop_wait(&self) -> Result<()> {
        let reply = self.request(StopWait {}).await?;
        expect_reply!(reply, StopWaitResponse, "StopWait");
        Ok(())
    }

    /// The `CardAvailable` pushes, as a stream that ends when the connection closes.
    ///
    /// Pushes are queued from the moment the client connects, up to the push capacity of
    /// [`ConnectOptions::push_capacity`] (default 64). The connection never waits for the
    /// application: when the queue is full, a new push is dropped (and counted in
    /// [`Client::dropped_pushes`]), so an application that never reads loses pushes but
    /// its requests and responses keep working. All streams and
    /// [`Client::next_available_card`] share one queue: each push reaches one reader.
    pub fn available_cards(&self) -> impl Stream<Item = CardAvailable> + Send + Unpin + 'static {
        let rx = self.conn.cards.clone();
        Box::pin(futures::stream::unfold(rx, |rx| async move {
            let item = rx.lock().await.recv().await;
            item.map(|card| (card, rx))
        }))
    }

    /// The next `CardAvailable` push; `None` once the connection has closed.
    pub async fn next_available_card(&self) -> Option<CardAvailable> {
        self.conn.cards.lock().await.recv().await
    }

    /// Waits up to `timeout` for a card: drops `CardAvailable` pushes queued before,
    /// starts waiting (every reader), takes the first push and stops waiting. A card already
    /// present counts. Fails with [`Error::Timeout`] when no card comes.
    ///
    /// It reads the same queue as [`Client::available_cards`]: while another task waits on
    /// that stream, this call waits for it to let go of the queue first.
    pub async fn wait_for_card(&self, timeout: Duration) -> Result<CardAvailable> {
        let mut rx = self.conn.cards.lock().await;
        while rx.try_recv().is_ok() {}
        self.start_wait(&[], &[]).await?;
        let got = tokio::time::timeout(timeout, rx.recv()).await;
        drop(rx);
        let stopped = self.stop_wait().await;
        match got {
            Err(_) => {
                stopped?;
                Err(Error::Timeout {
                    what: "a card".into(),
                    after: timeout,
                })
            }
            Ok(None) => Err(self.closed_error()),
            Ok(Some(card)) => {
                if let Err(e) = stopped {
                    tracing::debug!(error = %e, "StopWait after a card failed");
                }
                Ok(card)
            }
        }
    }

    /// Chooses the notifications this client gets: `ntype:ncode` patterns such as
    /// `card:inserted`, `reader:*` or `*:*`. An empty list stops them. Read them with
    /// [`Client::notifications`] or [`Client::next_notification`].
    pub async fn set_notify(&self, patterns: &[&str]) -> Result<()> {
        let msg = SetNotify {
            flags: patterns.iter().map(|s| (*s).to_owned()).collect(),
        };
        let reply = self.request(msg).await?;
        expect_reply!(reply, SetNotifyResponse, "SetNotify");
        Ok(())
    }

    /// The `Notification` pushes, as a stream that ends when the connection closes.
    /// Queued and dropped like [`Client::available_cards`], in a queue of their own.
    pub fn notifications(&self) -> impl Stream<Item = Notification> + Send + Unpin + 'static {
        let rx = self.conn.notifications.clone();
        Box::pin(futures::stream::unfold(rx, |rx| async move {
            let item = rx.lock().await.recv().await;
            item.map(|note| (note, rx))
        }))
    }

    /// The next `Notification` push; `None` once the connection has closed.
    pub async fn next_notification(&self) -> Option<Notification> {
        self.conn.notifications.lock().await.recv().await
    }

    /// Takes the card for this client alone. If another client has it, the server waits up
    /// to `timeout` (rounded down to ms) for it and then fails with [`ErrorCode::Busy`].
    /// The card is given back by [`CardGuard::release`] or, best effort, when the guard is
    /// dropped.
    pub async fn take_card(&self, card_id: CardId, timeout: Duration) -> Result<CardGuard> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let msg = TakeCard {
            card_id,
            timeout: Some(ms),
        };
        let reply = self
            .conn
            .request(msg.into(), self.request_timeout.saturating_add(timeout))
            .await?;
        let r = expect_reply!(reply, TakeCardResponse, "TakeCard");
        if r.card_id != card_id {
            // We hold some card now; give it back before complaining.
            self.conn
                .send_and_forget(&FromClient::ReleaseCard(ReleaseCard { card_id: r.card_id }));
            return Err(Error::protocol(format!(
                "TakeCard {card_id} was answered for card {}",
                r.card_id
            )));
        }
        tracing::debug!(card = %card_id, "card taken");
        Ok(CardGuard {
            conn: self.conn.clone(),
            card_id,
            request_timeout: self.request_timeout,
            released: false,
        })
    }

    /// Asks whether a card is still present: `Ok(true)` present, `Ok(false)` removed.
    /// The card need not be taken.
    pub async fn check_card(&self, card_id: CardId) -> Result<bool> {
        check_card(&self.conn, card_id, self.request_timeout).await
    }

    /// A variable of the driver serving `card_id`, e.g. `ReaderName`.
    pub async fn driver_var(&self, card_id: CardId, name: &str) -> Result<String> {
        driver_var(&self.conn, card_id, name, self.request_timeout).await
    }

    pub(crate) fn closed_error(&self) -> Error {
        self.conn.closed_error()
    }
}

async fn check_card(conn: &Connection, card_id: CardId, timeout: Duration) -> Result<bool> {
    match conn.request(CardCheck { card_id }.into(), timeout).await {
        Ok(ToClient::CardCheckResponse(_)) => Ok(true),
        Ok(other) => Err(Error::protocol(format!(
            "CardCheck was answered with {}",
            other.cmd()
        ))),
        Err(e) if e.is_server(ErrorCode::CardRemoved) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn driver_var(
    conn: &Connection,
    card_id: CardId,
    name: &str,
    timeout: Duration,
) -> Result<String> {
    let msg = GetDriverVar {
        card_id,
        var_name: name.to_owned(),
    };
    let reply = conn.request(msg.into(), timeout).await?;
    Ok(expect_reply!(reply, GetDriverVarResponse, "GetDriverVar").var_value)
}

/// A card taken by this client. Only its holder may send it commands or reset it.
///
/// Call [`CardGuard::release`] to give it back and learn whether that worked. Dropping the
/// guard instead queues a `ReleaseCard` without waiting for its answer: this never blocks,
/// needs no runtime and never panics; if the connection is gone by then, the server has
/// already released the card (it does that for every disconnected client).
pub struct CardGuard {
    conn: Arc<Connection>,
    card_id: CardId,
    request_timeout: Duration,
    released: bool,
}

impl std::fmt::Debug for CardGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardGuard")
            .field("card_id", &self.card_id)
            .finish_non_exhaustive()
    }
}

impl CardGuard {
    /// The card.
    pub fn card_id(&self) -> CardId {
        self.card_id
    }

    /// Sends a command APDU to the card and returns its response APDU.
    /// A status word other than `9000` is not an error here: look at
    /// [`Response::status`].
    pub async fn transmit(&self, apdu: &[u8]) -> Result<Response> {
        self.command(apdu, None).await
    }

    /// Sends a command to the reader holding the card (`target="reader"`), e.g. for
    /// keypad or display commands the driver supports.
    pub async fn transmit_to_reader(&self, apdu: &[u8]) -> Result<Response> {
        self.command(apdu, Some("reader")).await
    }

    async fn command(&self, apdu: &[u8], target: Option<&str>) -> Result<Response> {
        if apdu.len() < 4 {
            return Err(Error::InvalidArgument(format!(
                "an APDU has at least 4 bytes (CLA INS P1 P2), got {}",
                apdu.len()
            )));
        }
        tracing::trace!(card = %self.card_id, apdu = %hex_upper(apdu), "command");
        let msg = CommandCard {
            card_id: self.card_id,
            data: Bytes::copy_from_slice(apdu),
            target: target.map(str::to_owned),
        };
        let reply = self.conn.request(msg.into(), self.request_timeout).await?;
        let r = expect_reply!(reply, CommandCardResponse, "CommandCard");
        let raw = r
            .data
            .ok_or_else(|| Error::protocol("CommandCardResponse without data"))?;
        tracing::trace!(card = %self.card_id, response = %hex_upper(&raw), "response");
        Response::from_bytes(raw).ok_or_else(|| {
            Error::protocol("CommandCardResponse data is shorter than the status word")
        })
    }

    /// Resets the card and returns its new answer to reset.
    pub async fn reset(&self) -> Result<Atr> {
        let reply = self
            .conn
            .request(
                CardReset {
                    card_id: self.card_id,
                }
                .into(),
                self.request_timeout,
            )
            .await?;
        let r = expect_reply!(reply, CardResetResponse, "CardReset");
        r.atr
            .map(Atr::new)
            .ok_or_else(|| Error::protocol("CardResetResponse without ATR"))
    }

    /// Asks whether the card is still present: `Ok(true)` present, `Ok(false)` removed.
    pub async fn check(&self) -> Result<bool> {
        check_card(&self.conn, self.card_id, self.request_timeout).await
    }

    /// A variable of the driver serving the card, e.g. `ReaderName`.
    pub async fn driver_var(&self, name: &str) -> Result<String> {
        driver_var(&self.conn, self.card_id, name, self.request_timeout).await
    }

    /// Gives the card back and waits for the server to confirm. The server resets the card
    /// before anyone else gets it.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        let reply = self
            .conn
            .request(
                ReleaseCard {
                    card_id: self.card_id,
                }
                .into(),
                self.request_timeout,
            )
            .await?;
        expect_reply!(reply, ReleaseCardResponse, "ReleaseCard");
        tracing::debug!(card = %self.card_id, "card released");
        Ok(())
    }
}

impl Drop for CardGuard {
    fn drop(&mut self) {
        if !self.released {
            self.conn
                .send_and_forget(&FromClient::ReleaseCard(ReleaseCard {
                    card_id: self.card_id,
                }));
        }
    }
}
