//! The server's state: clients, drivers, readers and cards, and the events that change them.
//!
//! One [`CardRegistry`] lives behind one `std::sync::Mutex` in [`crate::server::Shared`].
//! Its methods never wait: they change the state and queue what clients must hear
//! (notifications, `CardAvailable`) with [`Outbox::push`]. Anything that talks to a driver
//! takes what it needs out of the registry (a [`CardTarget`]), drops the lock, and comes
//! back with the result.

use std::collections::BTreeMap;

use bytes::Bytes;
use chipcard_ipc::message::{
    CardAvailable, CardInfo, CardInserted, CardType, DriverReader, ListReadersResponse,
    Notification, ReaderInfo, ReaderStatus, ServiceCard,
};
use chipcard_ipc::{CardId, ClientId, DriverId, ErrorCode, Group, ReaderId, ServiceId};
use tracing::{info, warn};

use crate::access::{DriverAccess, Peer};
use crate::cardtypes::CardTypeRegistry;
use crate::config::DriverConfig;
use crate::driver::DriverLink;
use crate::lock::{CardLock, Take, TakeResult};
use crate::notify::{Kind, NotifyPatterns};
use crate::outbox::Outbox;
use crate::services::{Availability, ServiceTable};
use crate::wait::WaitFilter;

/// The most readers one driver may have; further `ReaderAdd`s are ignored with a warning.
pub const MAX_READERS_PER_DRIVER: usize = 256;

/// A request that cannot be done: the code and text the client is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The PROTOCOL §3 code.
    pub code: ErrorCode,
    /// What went wrong.
    pub text: String,
}

impl Failure {
    /// A failure with a code and a text.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        Failure {
            code,
            text: text.into(),
        }
    }
}

/// Hands out ids 1, 2, 3, ...; never the same twice.
#[derive(Debug, Default)]
struct Counter(u32);

impl Counter {
    fn next(&mut self) -> u32 {
        self.0 = self.0.saturating_add(1);
        self.0
    }
    fn has_issued(&self, id: u32) -> bool {
        id != 0 && id <= self.0
    }
}

/// A connected client.
#[derive(Debug)]
pub struct ClientEntry {
    outbox: Outbox,
    /// The socket's peer credentials, taken at connect.
    peer: Option<Peer>,
    ready: bool,
    application: String,
    /// The user name of `peer`, once a service request looked it up.
    user_name: Option<String>,
    notify: NotifyPatterns,
    wait: Option<WaitFilter>,
}

/// Who a client is, as services are told (seed 5: `clientId`, `appName`, `userName`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The application name from `ClientReady`.
    pub application: String,
    /// The user id of its peer credentials, if known.
    pub uid: Option<u32>,
    /// The user name, if looked up already.
    pub user_name: Option<String>,
}

/// A driver's life as the registry sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriverState {
    Starting,
    Up,
    Down,
}

/// A configured driver.
#[derive(Debug)]
struct DriverEntry {
    name: String,
    driver_type: String,
    vars: Group,
    access: DriverAccess,
    link: Option<DriverLink>,
    state: DriverState,
}

/// A reader, under its global id.
#[derive(Debug)]
struct ReaderEntry {
    driver_id: DriverId,
    /// The driver's own id for it.
    local_id: ReaderId,
    name: String,
    reader_type: Option<String>,
    flags: Vec<String>,
    slots: i32,
    port: Option<String>,
    short_descr: Option<String>,
    status: ReaderStatus,
}

/// A card present in a reader.
#[derive(Debug)]
struct CardEntry {
    reader_id: ReaderId,
    slot: i32,
    atr: Bytes,
    card_type: CardType,
    card_types: Vec<String>,
    lock: CardLock,
}

/// Where a card command goes: the driver connection, the driver's reader id and the slot.
#[derive(Debug, Clone)]
pub struct CardTarget {
    /// The card.
    pub card_id: CardId,
    /// Its driver.
    pub driver_id: DriverId,
    /// The driver's connection.
    pub link: DriverLink,
    /// The driver's own reader id.
    pub reader: ReaderId,
    /// The slot.
    pub slot: i32,
}

/// All the server's state.
pub struct CardRegistry {
    client_ids: Counter,
    driver_ids: Counter,
    reader_ids: Counter,
    card_ids: Counter,
    clients: BTreeMap<ClientId, ClientEntry>,
    drivers: BTreeMap<DriverId, DriverEntry>,
    readers: BTreeMap<ReaderId, ReaderEntry>,
    cards: BTreeMap<CardId, CardEntry>,
    cardtypes: CardTypeRegistry,
    services: ServiceTable,
}

impl std::fmt::Debug for CardRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardRegistry")
            .field("clients", &self.clients.len())
            .field("drivers", &self.drivers)
            .field("readers", &self.readers)
            .field("cards", &self.cards)
            .finish_non_exhaustive()
    }
}

impl CardRegistry {
    /// An empty registry matching ATRs with `cardtypes`.
    pub fn new(cardtypes: CardTypeRegistry) -> Self {
        CardRegistry {
            client_ids: Counter::default(),
            driver_ids: Counter::default(),
            reader_ids: Counter::default(),
            card_ids: Counter::default(),
            clients: BTreeMap::new(),
            drivers: BTreeMap::new(),
            readers: BTreeMap::new(),
            cards: BTreeMap::new(),
            cardtypes,
            services: ServiceTable::default(),
        }
    }

    // ----- notifications -----

    fn notify(&self, kind: Kind, code: &str, data: Group) {
        self.notify_about(kind, code, data, None);
    }

    /// Notifies the clients that asked for `kind:code` and (for a reader's or card's event)
    /// may see `reader`.
    fn notify_about(&self, kind: Kind, code: &str, data: Group, reader: Option<ReaderId>) {
        for (id, client) in &self.clients {
            let visible = match reader {
                None => true,
                Some(rid) => self.may_use(client, rid),
            };
            if client.ready && visible && client.notify.wants(kind, code) {
                client.outbox.push(Notification {
                    client_id: *id,
                    ntype: kind.as_str().to_owned(),
                    ncode: code.to_owned(),
                    data: data.clone(),
                });
            }
        }
    }

    fn driver_data(&self, id: DriverId, info: Option<&str>) -> Group {
        let mut g = Group::new("data");
        g.set_char("driverId", id.to_string());
        if let Some(d) = self.drivers.get(&id) {
            g.set_char("driverType", d.driver_type.clone());
            g.set_char("driverName", d.name.clone());
        }
        if let Some(info) = info {
            g.set_char("info", info);
        }
        g
    }

    fn reader_data(&self, id: ReaderId, info: Option<&str>) -> Group {
        let mut g = Group::new("data");
        g.set_char("readerId", id.to_string());
        if let Some(r) = self.readers.get(&id) {
            g.set_char("driverId", r.driver_id.to_string());
            if let Some(d) = self.drivers.get(&r.driver_id) {
                g.set_char("driverType", d.driver_type.clone());
                g.set_char("driverName", d.name.clone());
            }
            g.set_char("readerType", self.reader_type(r));
            g.set_char("readerName", r.name.clone());
            if let Some(port) = &r.port {
                g.set_char("readerPort", port.clone());
            }
            g.set_chars("readerFlags", &r.flags);
            if let Some(descr) = &r.short_descr {
                g.set_char("shortDescr", descr.clone());
            }
        }
        if let Some(info) = info {
            g.set_char("info", info);
        }
        g
    }

    fn card_data(&self, id: CardId, card: &CardEntry, info: Option<&str>) -> Group {
        let mut g = self.reader_data(card.reader_id, None);
        g.set_char("cardId", id.to_string());
        g.set_bin("atr", card.atr.to_vec());
        g.set_char("cardType", card.card_type.as_str());
        g.set_chars("cardTypes", &card.card_types);
        g.set_int("slot", card.slot);
        if let Some(info) = info {
            g.set_char("info", info);
        }
        g
    }

    fn reader_type(&self, r: &ReaderEntry) -> String {
        match &r.reader_type {
            Some(t) => t.clone(),
            None => self
                .drivers
                .get(&r.driver_id)
                .map(|d| d.driver_type.clone())
                .unwrap_or_default(),
        }
    }

    fn card_available(&self, id: CardId, card: &CardEntry) -> Option<CardAvailable> {
        let reader = self.readers.get(&card.reader_id)?;
        Some(CardAvailable {
            card_id: id,
            card_type: card.card_type,
            card_types: card.card_types.clone(),
            reader_flags: reader.flags.clone(),
            atr: card.atr.clone(),
            reader_id: card.reader_id,
            reader_name: reader.name.clone(),
            driver_type: self
                .drivers
                .get(&reader.driver_id)
                .map(|d| d.driver_type.clone())
                .unwrap_or_default(),
        })
    }

    // ----- clients -----

    /// A new connection; it is not ready until `ClientReady`.
    pub fn add_client(&mut self, outbox: Outbox, peer: Option<Peer>) -> ClientId {
        let id = ClientId(self.client_ids.next());
        self.clients.insert(
            id,
            ClientEntry {
                outbox,
                peer,
                ready: false,
                application: String::new(),
                user_name: None,
                notify: NotifyPatterns::default(),
                wait: None,
            },
        );
        id
    }

    /// True once the client has sent `ClientReady`.
    pub fn is_ready(&self, client: ClientId) -> bool {
        self.clients.get(&client).is_some_and(|c| c.ready)
    }

    /// The client sent `ClientReady`.
    pub fn client_ready(&mut self, client: ClientId, application: &str) {
        let Some(entry) = self.clients.get_mut(&client) else {
            return;
        };
        let first = !entry.ready;
        entry.ready = true;
        entry.application = application.to_owned();
        if first {
            info!(client = %client, application, "client ready");
            let data = client_data(client, application);
            self.notify(Kind::Client, "up", data);
        }
    }

    /// Who the client is, for the services it talks to.
    pub fn client_identity(&self, client: ClientId) -> Option<ClientIdentity> {
        self.clients.get(&client).map(|c| ClientIdentity {
            application: c.application.clone(),
            uid: c.peer.as_ref().map(|p| p.uid),
            user_name: c.user_name.clone(),
        })
    }

    /// Remembers the user name of the client's peer credentials.
    pub fn set_user_name(&mut self, client: ClientId, name: String) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.user_name = Some(name);
        }
    }

    /// The client chose its notifications.
    pub fn set_notify(&mut self, client: ClientId, patterns: NotifyPatterns) {
        if let Some(entry) = self.clients.get_mut(&client) {
            entry.notify = patterns;
        }
    }

    /// The client starts waiting for cards: it hears about every present card that matches
    /// now, and about each matching card inserted later.
    pub fn start_wait(&mut self, client: ClientId, filter: WaitFilter) {
        let Some(entry) = self.clients.get(&client) else {
            return;
        };
        for (id, card) in &self.cards {
            let matches = self
                .readers
                .get(&card.reader_id)
                .is_some_and(|r| filter.matches(&r.flags))
                && self.may_use(entry, card.reader_id);
            if matches {
                if let Some(msg) = self.card_available(*id, card) {
                    entry.outbox.push(msg);
                }
            }
        }
        if let Some(entry) = self.clients.get_mut(&client) {
            entry.wait = Some(filter);
        }
    }

    /// The client stops waiting for cards.
    pub fn stop_wait(&mut self, client: ClientId) {
        if let Some(entry) = self.clients.get_mut(&client) {
            entry.wait = None;
        }
    }

    /// The client disconnected: it leaves every queue, and the cards it held are returned
    /// for resetting (they stay unavailable until [`CardRegistry::reset_done`]).
    pub fn remove_client(&mut self, client: ClientId) -> Vec<CardTarget> {
        let Some(entry) = self.clients.remove(&client) else {
            return Vec::new();
        };
        let mut held = Vec::new();
        for (id, card) in self.cards.iter_mut() {
            if card.lock.drop_client(client) {
                held.push(*id);
            }
        }
        let mut targets = Vec::new();
        for id in held {
            match self.target_of(id) {
                Ok(target) => targets.push(target),
                Err(f) => self.reset_failed(id, &f.text),
            }
        }
        if entry.ready {
            info!(client = %client, "client gone");
            self.notify(
                Kind::Client,
                "down",
                client_data(client, &entry.application),
            );
        }
        targets
    }

    // ----- drivers -----

    /// A configured driver; its id stays the same across restarts.
    pub fn add_driver(&mut self, config: &DriverConfig) -> DriverId {
        let id = DriverId(self.driver_ids.next());
        self.drivers.insert(
            id,
            DriverEntry {
                name: config.name.clone(),
                driver_type: config.driver_type.clone(),
                vars: config.vars(),
                access: DriverAccess::from_config(&config.group),
                link: None,
                state: DriverState::Down,
            },
        );
        id
    }

    /// A driver's configuration changed (on reload); its id stays.
    pub fn update_driver(&mut self, id: DriverId, config: &DriverConfig) {
        if let Some(d) = self.drivers.get_mut(&id) {
            d.name = config.name.clone();
            d.driver_type = config.driver_type.clone();
            d.vars = config.vars();
            d.access = DriverAccess::from_config(&config.group);
        }
    }

    /// A driver left the configuration (on reload): its readers are deleted and it is
    /// forgotten. It must be down already.
    pub fn remove_driver(&mut self, id: DriverId) {
        let readers: Vec<ReaderId> = self
            .readers
            .iter()
            .filter(|(_, r)| r.driver_id == id)
            .map(|(rid, _)| *rid)
            .collect();
        for rid in readers {
            self.remove_cards_in(rid, None, ErrorCode::CardRemoved, "driver removed");
            self.notify_about(Kind::Reader, "del", self.reader_data(rid, None), Some(rid));
            self.readers.remove(&rid);
        }
        self.drivers.remove(&id);
    }

    /// The driver's process was started.
    pub fn driver_starting(&mut self, id: DriverId) {
        if let Some(d) = self.drivers.get_mut(&id) {
            d.state = DriverState::Starting;
        }
        self.notify(Kind::Driver, "start", self.driver_data(id, None));
    }

    /// The driver sent `DriverReady`: its readers come up (a reader with a name seen before
    /// from this driver keeps its id).
    pub fn driver_ready(&mut self, id: DriverId, link: DriverLink, readers: Vec<DriverReader>) {
        if let Some(d) = self.drivers.get_mut(&id) {
            d.state = DriverState::Up;
            d.link = Some(link);
        }
        self.notify(Kind::Driver, "up", self.driver_data(id, None));
        for reader in readers {
            self.add_reader(id, reader, "up");
        }
    }

    fn add_reader(&mut self, driver_id: DriverId, reader: DriverReader, code: &str) {
        let known = self
            .readers
            .iter()
            .find(|(_, r)| r.driver_id == driver_id && r.name == reader.name)
            .map(|(id, _)| *id);
        if known.is_none()
            && self
                .readers
                .values()
                .filter(|r| r.driver_id == driver_id)
                .count()
                >= MAX_READERS_PER_DRIVER
        {
            warn!(driver = %driver_id, name = %reader.name, limit = MAX_READERS_PER_DRIVER,
                "too many readers from one driver; this one is ignored");
            return;
        }
        let id = known.unwrap_or_else(|| ReaderId(self.reader_ids.next()));
        info!(driver = %driver_id, reader = %id, name = %reader.name, "reader up");
        self.readers.insert(
            id,
            ReaderEntry {
                driver_id,
                local_id: reader.reader_id,
                name: reader.name,
                reader_type: reader.reader_type,
                flags: reader.reader_flags,
                slots: reader.slots.unwrap_or(1),
                port: reader.port,
                short_descr: reader.short_descr,
                status: ReaderStatus::Up,
            },
        );
        self.notify_about(Kind::Reader, code, self.reader_data(id, None), Some(id));
    }

    /// The driver's process ended or its connection closed: its readers go down and its
    /// cards are removed.
    pub fn driver_down(&mut self, id: DriverId, info: &str) {
        let was_up = match self.drivers.get_mut(&id) {
            Some(d) => {
                d.link = None;
                std::mem::replace(&mut d.state, DriverState::Down) != DriverState::Down
            }
            None => false,
        };
        let readers: Vec<ReaderId> = self
            .readers
            .iter()
            .filter(|(_, r)| r.driver_id == id && r.status != ReaderStatus::Down)
            .map(|(rid, _)| *rid)
            .collect();
        for rid in readers {
            self.remove_cards_in(rid, None, ErrorCode::DriverError, "driver down");
            if let Some(r) = self.readers.get_mut(&rid) {
                r.status = ReaderStatus::Down;
            }
            self.notify_about(
                Kind::Reader,
                "down",
                self.reader_data(rid, Some(info)),
                Some(rid),
            );
        }
        if was_up {
            self.notify(Kind::Driver, "down", self.driver_data(id, Some(info)));
        }
    }

    /// The driver failed (to start, to answer pings, or for good).
    pub fn driver_error(&mut self, id: DriverId, info: &str) {
        self.notify(Kind::Driver, "error", self.driver_data(id, Some(info)));
    }

    fn reader_of(&self, driver_id: DriverId, local: ReaderId) -> Option<ReaderId> {
        self.readers
            .iter()
            .find(|(_, r)| {
                r.driver_id == driver_id && r.local_id == local && r.status != ReaderStatus::Down
            })
            .map(|(id, _)| *id)
    }

    /// Driver event `ReaderAdd`.
    pub fn reader_add(&mut self, driver_id: DriverId, reader: DriverReader) {
        self.add_reader(driver_id, reader, "add");
    }

    /// Driver event `ReaderDel`: the reader and its cards are gone.
    pub fn reader_del(&mut self, driver_id: DriverId, local: ReaderId) {
        let Some(rid) = self.reader_of(driver_id, local) else {
            warn!(driver = %driver_id, local_reader = %local, "ReaderDel for an unknown reader");
            return;
        };
        self.remove_cards_in(rid, None, ErrorCode::CardRemoved, "reader removed");
        info!(driver = %driver_id, reader = %rid, "reader removed");
        self.notify_about(Kind::Reader, "del", self.reader_data(rid, None), Some(rid));
        self.readers.remove(&rid);
    }

    /// Driver event `ReaderError`: the reader is in error and its cards are removed.
    pub fn reader_error(&mut self, driver_id: DriverId, local: ReaderId, text: &str) {
        let Some(rid) = self.reader_of(driver_id, local) else {
            warn!(driver = %driver_id, local_reader = %local, "ReaderError for an unknown reader");
            return;
        };
        warn!(driver = %driver_id, reader = %rid, error = text, "reader error");
        self.remove_cards_in(rid, None, ErrorCode::DriverError, text);
        if let Some(r) = self.readers.get_mut(&rid) {
            r.status = ReaderStatus::Error;
        }
        self.notify_about(
            Kind::Reader,
            "error",
            self.reader_data(rid, Some(text)),
            Some(rid),
        );
    }

    /// Driver event `CardInserted`: a new card id, and `CardAvailable` to matching waiters.
    pub fn card_inserted(&mut self, driver_id: DriverId, ev: CardInserted) {
        let Some(rid) = self.reader_of(driver_id, ev.reader_id) else {
            warn!(driver = %driver_id, local_reader = %ev.reader_id, "CardInserted for an unknown reader");
            return;
        };
        // A driver that missed a removal: the old card is gone.
        self.remove_cards_in(rid, Some(ev.slot), ErrorCode::CardRemoved, "replaced");
        if let Some(r) = self.readers.get_mut(&rid) {
            if r.status == ReaderStatus::Error {
                r.status = ReaderStatus::Up;
            }
        }
        let matched = self.cardtypes.matches(&ev.atr);
        let card_type = match ev.card_type {
            CardType::Unknown => matched.card_type,
            known => known,
        };
        let id = CardId(self.card_ids.next());
        let card = CardEntry {
            reader_id: rid,
            slot: ev.slot,
            atr: ev.atr,
            card_type,
            card_types: matched.names,
            lock: CardLock::default(),
        };
        info!(driver = %driver_id, reader = %rid, card = %id, slot = ev.slot,
              atr = %hex_upper(&card.atr), "card inserted");
        self.notify_about(
            Kind::Card,
            "inserted",
            self.card_data(id, &card, None),
            Some(rid),
        );
        let flags = self
            .readers
            .get(&rid)
            .map(|r| r.flags.clone())
            .unwrap_or_default();
        if let Some(msg) = self.card_available(id, &card) {
            for client in self.clients.values() {
                if client.wait.as_ref().is_some_and(|w| w.matches(&flags))
                    && self.may_use(client, rid)
                {
                    client.outbox.push(msg.clone());
                }
            }
        }
        self.cards.insert(id, card);
    }

    /// Driver event `CardRemoved`.
    pub fn card_removed(&mut self, driver_id: DriverId, local: ReaderId, slot: i32) {
        let Some(rid) = self.reader_of(driver_id, local) else {
            warn!(driver = %driver_id, local_reader = %local, "CardRemoved for an unknown reader");
            return;
        };
        self.remove_cards_in(rid, Some(slot), ErrorCode::CardRemoved, "removed");
    }

    fn remove_cards_in(
        &mut self,
        reader: ReaderId,
        slot: Option<i32>,
        code: ErrorCode,
        info: &str,
    ) {
        let ids: Vec<CardId> = self
            .cards
            .iter()
            .filter(|(_, c)| c.reader_id == reader && slot.map_or(true, |s| s == c.slot))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove_card(id, code, info);
        }
    }

    fn remove_card(&mut self, id: CardId, code: ErrorCode, info: &str) {
        let Some(mut card) = self.cards.remove(&id) else {
            return;
        };
        card.lock.fail_all(code);
        info!(card = %id, reader = %card.reader_id, why = info, "card removed");
        self.notify_about(
            Kind::Card,
            "removed",
            self.card_data(id, &card, Some(info)),
            Some(card.reader_id),
        );
    }

    // ----- cards -----

    fn card(&self, id: CardId) -> Result<&CardEntry, Failure> {
        match self.cards.get(&id) {
            Some(card) => Ok(card),
            None if self.card_ids.has_issued(id.0) => Err(Failure::new(
                ErrorCode::CardRemoved,
                format!("card {id} was removed"),
            )),
            None => Err(Failure::new(ErrorCode::NotFound, format!("no card {id}"))),
        }
    }

    fn card_mut(&mut self, id: CardId) -> Result<&mut CardEntry, Failure> {
        self.card(id)?;
        self.cards
            .get_mut(&id)
            .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no card {id}")))
    }

    fn target_of(&self, id: CardId) -> Result<CardTarget, Failure> {
        let card = self.card(id)?;
        let reader = self
            .readers
            .get(&card.reader_id)
            .ok_or_else(|| Failure::new(ErrorCode::DriverError, "the card's reader is gone"))?;
        let link = self
            .drivers
            .get(&reader.driver_id)
            .and_then(|d| d.link.clone())
            .ok_or_else(|| Failure::new(ErrorCode::DriverError, "the card's driver is down"))?;
        Ok(CardTarget {
            card_id: id,
            driver_id: reader.driver_id,
            link,
            reader: reader.local_id,
            slot: card.slot,
        })
    }

    /// Where commands for a card go, if `client` holds it.
    pub fn owned_target(&self, id: CardId, client: ClientId) -> Result<CardTarget, Failure> {
        let card = self.card(id)?;
        if card.lock.owner() != Some(client) {
            return Err(Failure::new(
                ErrorCode::NotOwner,
                format!("card {id} is not taken by this client"),
            ));
        }
        self.target_of(id)
    }

    /// Whether a card is present: `Ok`, or the failure (removed, not found).
    pub fn check_card(&self, id: CardId) -> Result<(), Failure> {
        self.card(id).map(|_| ())
    }

    /// `client` asks for the card (see [`CardLock::take`]).
    pub fn take(&mut self, id: CardId, client: ClientId, may_wait: bool) -> Result<Take, Failure> {
        Ok(self.card_mut(id)?.lock.take(client, may_wait))
    }

    /// A queued take timed out (see [`CardLock::timed_out`]).
    pub fn take_timed_out(&mut self, id: CardId, client: ClientId, ticket: u64) -> TakeResult {
        match self.card_mut(id) {
            Ok(card) => card.lock.timed_out(client, ticket),
            Err(f) => Err(f.code),
        }
    }

    /// `client` gives the card back; the caller resets it, then calls
    /// [`CardRegistry::reset_done`] or [`CardRegistry::reset_failed`].
    pub fn release(&mut self, id: CardId, client: ClientId) -> Result<CardTarget, Failure> {
        let target = self.owned_target(id, client)?;
        self.card_mut(id)?
            .lock
            .release(client)
            .map_err(|code| Failure::new(code, "not taken by this client"))?;
        Ok(target)
    }

    /// A reset after a release worked: the new ATR is kept and the next waiter gets the card.
    pub fn reset_done(&mut self, id: CardId, atr: Option<Bytes>) {
        if let Ok(card) = self.card_mut(id) {
            if let Some(atr) = atr.filter(|a| !a.is_empty()) {
                card.atr = atr;
            }
            card.lock.finish_reset();
        }
    }

    /// A reset after a release failed: the card's state is unknown, so nobody gets it; it
    /// is removed (waiters get code 8) until it is inserted again.
    pub fn reset_failed(&mut self, id: CardId, why: &str) {
        warn!(card = %id, error = why, "reset after release failed; removing the card");
        self.remove_card(id, ErrorCode::DriverError, &format!("reset failed: {why}"));
    }

    /// A `CardReset` by the owner gave a new ATR.
    pub fn set_atr(&mut self, id: CardId, atr: Bytes) {
        if let Ok(card) = self.card_mut(id) {
            if !atr.is_empty() {
                card.atr = atr;
            }
        }
    }

    /// A variable of the `vars {}` group of the driver serving a card (its first value).
    pub fn driver_var(&self, id: CardId, name: &str) -> Result<String, Failure> {
        let card = self.card(id)?;
        let vars = self
            .readers
            .get(&card.reader_id)
            .and_then(|r| self.drivers.get(&r.driver_id))
            .map(|d| &d.vars)
            .ok_or_else(|| Failure::new(ErrorCode::DriverError, "the card's driver is gone"))?;
        vars.var(name)
            .and_then(|v| v.values.first())
            .map(|v| v.as_text().into_owned())
            .ok_or_else(|| {
                Failure::new(ErrorCode::NotFound, format!("no driver variable '{name}'"))
            })
    }

    /// Every reader `client` may use, with its cards.
    pub fn list_readers(&self, client: ClientId) -> ListReadersResponse {
        let entry = self.clients.get(&client);
        self.list_where(|rid| entry.is_some_and(|c| self.may_use(c, rid)))
    }

    /// Every reader, with its cards (for tests).
    #[cfg(test)]
    fn list_all(&self) -> ListReadersResponse {
        self.list_where(|_| true)
    }

    fn list_where(&self, keep: impl Fn(ReaderId) -> bool) -> ListReadersResponse {
        let readers = self
            .readers
            .iter()
            .filter(|(rid, _)| keep(**rid))
            .map(|(rid, r)| ReaderInfo {
                reader_id: *rid,
                reader_name: r.name.clone(),
                reader_type: self.reader_type(r),
                driver_id: r.driver_id,
                driver_type: self
                    .drivers
                    .get(&r.driver_id)
                    .map(|d| d.driver_type.clone())
                    .unwrap_or_default(),
                reader_flags: r.flags.clone(),
                status: r.status,
                slots: r.slots,
                cards: self
                    .cards
                    .iter()
                    .filter(|(_, c)| c.reader_id == *rid)
                    .map(|(cid, c)| CardInfo {
                        card_id: *cid,
                        atr: c.atr.clone(),
                        card_type: c.card_type,
                        card_types: c.card_types.clone(),
                        slot: c.slot,
                        taken: c.lock.is_taken(),
                    })
                    .collect(),
            })
            .collect();
        ListReadersResponse { readers }
    }

    /// True when `client` may use the reader `rid` (see [`crate::access`]).
    fn may_use(&self, client: &ClientEntry, rid: ReaderId) -> bool {
        let Some(reader) = self.readers.get(&rid) else {
            return false;
        };
        self.drivers
            .get(&reader.driver_id)
            .is_some_and(|d| d.access.allows(&reader.name, client.peer.as_ref()))
    }

    /// Whether `client` may use card `id`: `Ok` also for unknown cards (the request itself
    /// then says "not found" or "removed"); code 9 for a card in a reader it may not use.
    pub fn check_access(&self, id: CardId, client: ClientId) -> Result<(), Failure> {
        let (Some(card), Some(entry)) = (self.cards.get(&id), self.clients.get(&client)) else {
            return Ok(());
        };
        if self.may_use(entry, card.reader_id) {
            Ok(())
        } else {
            Err(Failure::new(
                ErrorCode::PermissionDenied,
                "permission denied for this card's reader",
            ))
        }
    }

    // ----- services -----

    /// The services and contexts.
    pub fn services(&self) -> &ServiceTable {
        &self.services
    }

    /// The services and contexts, to change.
    pub fn services_mut(&mut self) -> &mut ServiceTable {
        &mut self.services
    }

    /// A service's availability changed: `service:up` when it came up, `service:down`
    /// (with `info`) when it was up and is no longer, unless it is `silent`. A service that
    /// goes down loses its contexts.
    pub fn service_availability(&mut self, id: ServiceId, state: Availability, info: &str) {
        let up = matches!(state, Availability::Up(_));
        let Some(previous) = self.services.set_availability(id, state) else {
            return;
        };
        let was_up = matches!(previous, Availability::Up(_));
        if was_up && !up {
            let lost = self.services.lose_contexts(id, info);
            if lost > 0 {
                warn!(service = %id, contexts = lost, why = info, "service down; its contexts are lost");
            }
        }
        let Some(entry) = self.services.get(id) else {
            return;
        };
        if entry.config.flags.silent || was_up == up {
            return;
        }
        let mut data = Group::new("data");
        data.set_char("serviceId", id.to_string());
        data.set_char("serviceType", entry.config.service_type.clone());
        data.set_char("serviceName", entry.config.name.clone());
        if !info.is_empty() {
            data.set_char("info", info);
        }
        self.notify(Kind::Service, if up { "up" } else { "down" }, data);
    }

    /// What a service is told about a card a client names (`command/CardId`): the card must
    /// be present and in a reader the client may use.
    pub fn service_card(&self, id: CardId, client: ClientId) -> Result<ServiceCard, Failure> {
        self.check_access(id, client)?;
        let card = self.card(id)?;
        let reader = self
            .readers
            .get(&card.reader_id)
            .ok_or_else(|| Failure::new(ErrorCode::DriverError, "the card's reader is gone"))?;
        Ok(ServiceCard {
            card_id: id,
            atr: card.atr.clone(),
            card_type: card.card_type,
            card_types: card.card_types.clone(),
            reader_id: card.reader_id,
            reader_name: reader.name.clone(),
            driver_type: self
                .drivers
                .get(&reader.driver_id)
                .map(|d| d.driver_type.clone())
                .unwrap_or_default(),
            slot: card.slot,
        })
    }

    /// The links of all running drivers.
    pub fn driver_links(&self) -> Vec<DriverLink> {
        self.drivers
            .values()
            .filter_map(|d| d.link.clone())
            .collect()
    }
}

fn client_data(client: ClientId, application: &str) -> Group {
    Group::new("data")
        .with_char("clientId", client.to_string())
        .with_char("application", application)
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use chipcard_ipc::message::ToClient;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::outbox::Outbound;

    fn driver_config() -> DriverConfig {
        DriverConfig {
            driver_type: "emul".into(),
            name: "emul".into(),
            group: Group::new("config").with_group(Group::new("vars").with_char("answer", "42")),
        }
    }

    fn reader(local: u32, name: &str, flags: &[&str]) -> DriverReader {
        DriverReader {
            reader_id: ReaderId(local),
            name: name.into(),
            reader_flags: flags.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn inserted(local: u32, atr: &[u8]) -> CardInserted {
        CardInserted {
            reader_id: ReaderId(local),
            slot: 0,
            atr: Bytes::copy_from_slice(atr),
            card_type: CardType::Unknown,
        }
    }

    fn ready_client(reg: &mut CardRegistry) -> (ClientId, mpsc::Receiver<Outbound>) {
        let (outbox, rx) = Outbox::new(CancellationToken::new());
        let id = reg.add_client(outbox, None);
        reg.client_ready(id, "test");
        (id, rx)
    }

    fn drain(rx: &mut mpsc::Receiver<Outbound>) -> Vec<ToClient> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(*m.msg);
        }
        out
    }

    fn setup() -> (CardRegistry, DriverId) {
        let mut reg = CardRegistry::new(CardTypeRegistry::embedded());
        let d = reg.add_driver(&driver_config());
        let (link, _end) = crate::driver::link();
        reg.driver_starting(d);
        reg.driver_ready(
            d,
            link,
            vec![reader(0, "keypad", &["KEYPAD"]), reader(1, "plain", &[])],
        );
        (reg, d)
    }

    #[test]
    fn a_driver_gets_at_most_max_readers() {
        let (mut reg, d) = setup();
        for local in 2..MAX_READERS_PER_DRIVER as u32 + 10 {
            reg.reader_add(d, reader(local, &format!("r{local}"), &[]));
        }
        let (client, _rx) = ready_client(&mut reg);
        assert_eq!(
            reg.list_readers(client).readers.len(),
            MAX_READERS_PER_DRIVER
        );
        // A reader it already has may come back (same name, same id) at the limit.
        reg.reader_add(d, reader(0, "keypad", &["KEYPAD"]));
        assert_eq!(
            reg.list_readers(client).readers.len(),
            MAX_READERS_PER_DRIVER
        );
    }

    #[test]
    fn readers_a_client_may_not_use_are_hidden_and_their_cards_denied() {
        let mut reg = CardRegistry::new(CardTypeRegistry::embedded());
        let config = DriverConfig {
            driver_type: "emul".into(),
            name: "emul".into(),
            group: Group::new("config").with_group(
                Group::new("reader")
                    .with_char("name", "locked")
                    .with_char("allowUsers", "1000"),
            ),
        };
        let d = reg.add_driver(&config);
        let (link, _end) = crate::driver::link();
        reg.driver_ready(
            d,
            link,
            vec![reader(0, "locked", &[]), reader(1, "open", &[])],
        );
        let client = |reg: &mut CardRegistry, uid| {
            let (outbox, rx) = Outbox::new(CancellationToken::new());
            let peer = Peer {
                uid,
                gid: uid,
                pid: None,
                groups: Vec::new(),
            };
            let id = reg.add_client(outbox, Some(peer));
            reg.client_ready(id, "test");
            reg.set_notify(id, NotifyPatterns::parse(&["card:*"]).expect("valid"));
            reg.start_wait(id, WaitFilter::new(&[] as &[&str], &[] as &[&str]));
            (id, rx)
        };
        let (alice, mut alice_rx) = client(&mut reg, 1000);
        let (bob, mut bob_rx) = client(&mut reg, 1001);
        let (root, mut root_rx) = client(&mut reg, 0);
        reg.card_inserted(d, inserted(0, &[0x3b]));
        let card = reg.list_all().readers[0].cards[0].card_id;
        // alice and root hear of it (notification + CardAvailable); bob does not.
        assert_eq!(drain(&mut alice_rx).len(), 2);
        assert_eq!(drain(&mut root_rx).len(), 2);
        assert!(drain(&mut bob_rx).is_empty());
        let names = |reg: &CardRegistry, c| -> Vec<String> {
            reg.list_readers(c)
                .readers
                .into_iter()
                .map(|r| r.reader_name)
                .collect()
        };
        assert_eq!(names(&reg, alice), ["locked", "open"]);
        assert_eq!(names(&reg, root), ["locked", "open"]);
        assert_eq!(names(&reg, bob), ["open"]);
        assert_eq!(
            reg.check_access(card, bob).map_err(|f| f.code),
            Err(ErrorCode::PermissionDenied)
        );
        assert!(reg.check_access(card, alice).is_ok());
        assert!(reg.check_access(CardId(999), bob).is_ok());
    }

    #[test]
    fn inserted_cards_reach_matching_waiters_and_subscribers() {
        let (mut reg, d) = setup();
        let (keypad_waiter, mut rx1) = ready_client(&mut reg);
        let (subscriber, mut rx2) = ready_client(&mut reg);
        reg.start_wait(keypad_waiter, WaitFilter::new(&["KEYPAD"], &["KEYPAD"]));
        reg.set_notify(
            subscriber,
            NotifyPatterns::parse(&["card:*"]).expect("valid"),
        );
        reg.card_inserted(d, inserted(1, &[0x3b, 0x01]));
        reg.card_inserted(d, inserted(0, &[0x3b, 0x02]));
        let got = drain(&mut rx1);
        assert_eq!(got.len(), 1, "{got:?}");
        match &got[0] {
            ToClient::CardAvailable(c) => {
                assert_eq!(c.atr.as_ref(), &[0x3b, 0x02]);
                assert_eq!(c.reader_name, "keypad");
                assert_eq!(c.driver_type, "emul");
            }
            other => panic!("expected CardAvailable, got {other:?}"),
        }
        let got = drain(&mut rx2);
        assert_eq!(got.len(), 2);
        assert!(
            matches!(&got[0], ToClient::Notification(n) if n.ntype == "card" && n.ncode == "inserted" && n.client_id == subscriber)
        );
        // A later StartWait hears about the cards already present.
        reg.start_wait(subscriber, WaitFilter::default());
        assert_eq!(drain(&mut rx2).len(), 2);
    }

    #[test]
    fn a_driver_going_down_removes_its_cards_and_ids_are_not_reused() {
        let (mut reg, d) = setup();
        reg.card_inserted(d, inserted(0, &[0x3b]));
        let list = reg.list_all();
        assert_eq!(list.readers.len(), 2);
        let card = list.readers[0].cards[0].card_id;
        let reader_id = list.readers[0].reader_id;
        assert_eq!(reg.driver_var(card, "ANSWER").ok().as_deref(), Some("42"));
        assert_eq!(
            reg.driver_var(card, "other").map_err(|f| f.code),
            Err(ErrorCode::NotFound)
        );
        reg.driver_down(d, "crashed");
        assert_eq!(
            reg.check_card(card).map_err(|f| f.code),
            Err(ErrorCode::CardRemoved)
        );
        assert_eq!(
            reg.check_card(CardId(999)).map_err(|f| f.code),
            Err(ErrorCode::NotFound)
        );
        let list = reg.list_all();
        assert!(list
            .readers
            .iter()
            .all(|r| r.status == ReaderStatus::Down && r.cards.is_empty()));
        // Restarted: the reader keeps its id, the card gets a new one.
        let (link, _end) = crate::driver::link();
        reg.driver_ready(d, link, vec![reader(7, "keypad", &["KEYPAD"])]);
        reg.card_inserted(d, inserted(7, &[0x3b]));
        let list = reg.list_all();
        assert_eq!(list.readers[0].reader_id, reader_id);
        assert_eq!(list.readers[0].status, ReaderStatus::Up);
        assert!(list.readers[0].cards[0].card_id > card);
    }

    #[test]
    fn a_disconnected_holder_hands_on_only_after_the_reset() {
        let (mut reg, d) = setup();
        reg.card_inserted(d, inserted(0, &[0x3b]));
        let card = reg.list_all().readers[0].cards[0].card_id;
        let (a, _rx_a) = ready_client(&mut reg);
        let (b, _rx_b) = ready_client(&mut reg);
        assert!(matches!(reg.take(card, a, true), Ok(Take::Granted)));
        assert_eq!(
            reg.owned_target(card, b).map(|_| ()).map_err(|f| f.code),
            Err(ErrorCode::NotOwner)
        );
        let waiting = reg.take(card, b, true);
        assert!(matches!(waiting, Ok(Take::Queued(_))));
        let targets = reg.remove_client(a);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].card_id, card);
        assert!(reg.owned_target(card, b).is_err(), "not before the reset");
        reg.reset_done(card, Some(Bytes::from_static(&[0x3b, 0x99])));
        assert!(reg.owned_target(card, b).is_ok());
        assert_eq!(
            reg.list_all().readers[0].cards[0].atr.as_ref(),
            &[0x3b, 0x99]
        );
    }
}
