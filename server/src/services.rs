//! The services' part of the server's state: the configured services, whether each runs,
//! and the contexts clients have open with them.
//!
//! A [`ServiceTable`] lives inside the [`crate::registry::CardRegistry`], behind the same
//! mutex, so that a context and its client come and go together. Like the rest of the
//! registry its methods never wait: the requests themselves travel in
//! [`crate::service_requests`].
//!
//! Context ids come from one counter, starting at `0x00000001`, never reused (PROTOCOL §3:
//! the server assigns them). A context belongs to the client that opened it: other clients
//! are told it does not exist (code 3). When its service stops, a context is *lost*: the
//! client's next command on it gets code 8 with the reason, and closing it succeeds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chipcard_ipc::message::{FromService, ToService};
use chipcard_ipc::{ClientId, ContextId, ErrorCode, ServiceId};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::child::Link;
use crate::config::ServiceConfig;
use crate::registry::Failure;

/// The way to send requests to a running service; cheap to clone.
pub type ServiceLink = Link<ToService, FromService>;

/// Whether a service can take requests.
#[derive(Debug, Clone)]
pub enum Availability {
    /// Not running, and started when a client opens it (services without `autoload`).
    Idle,
    /// Its process is starting.
    Starting,
    /// Running: requests go through the link.
    Up(ServiceLink),
    /// It stopped or failed to start; it is restarted after a delay.
    Restarting(String),
    /// It failed to start too often and is not restarted until chipcardd restarts.
    GivenUp(String),
    /// The server stopped it (shutdown, or it left the configuration).
    Stopped,
}

impl Availability {
    /// Why requests cannot go to the service now; `None` when it is up or will be soon.
    pub fn unavailable(&self, name: &str) -> Option<Failure> {
        let why = match self {
            Availability::Idle | Availability::Starting | Availability::Up(_) => return None,
            Availability::Restarting(why) => format!("service '{name}' is restarting ({why})"),
            Availability::GivenUp(why) => format!("service '{name}' is not available ({why})"),
            Availability::Stopped => format!("service '{name}' was stopped"),
        };
        Some(Failure::new(ErrorCode::DriverError, why))
    }
}

/// A configured service.
#[derive(Debug)]
pub struct ServiceEntry {
    /// Its configuration.
    pub config: ServiceConfig,
    state: watch::Sender<Availability>,
    /// Told when a client wants the service and it is [`Availability::Idle`].
    pub demand: Arc<Notify>,
    /// The last time a request went to it or came back.
    last_active: Instant,
}

impl ServiceEntry {
    /// Whether it can take requests now.
    pub fn availability(&self) -> Availability {
        self.state.borrow().clone()
    }

    /// Follows its availability (for a request waiting for a start).
    pub fn watch(&self) -> watch::Receiver<Availability> {
        self.state.subscribe()
    }
}

/// The state of a context.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ContextState {
    /// `ServiceOpen` is on its way to the service.
    Opening,
    /// Open.
    Open,
    /// Its service stopped; the text says why.
    Lost(String),
}

/// An open context.
#[derive(Debug, Clone)]
struct ContextEntry {
    client: ClientId,
    service: ServiceId,
    state: ContextState,
}

/// A context that was open when its client left, to be closed in its service.
#[derive(Debug)]
pub struct Orphan {
    /// The service.
    pub service: ServiceId,
    /// The context.
    pub context: ContextId,
    /// The service's link, if it runs.
    pub link: Option<ServiceLink>,
}

/// Services and contexts.
#[derive(Debug, Default)]
pub struct ServiceTable {
    service_ids: u32,
    context_ids: u32,
    services: BTreeMap<ServiceId, ServiceEntry>,
    contexts: BTreeMap<ContextId, ContextEntry>,
}

impl ServiceTable {
    /// A configured service; its id stays the same across restarts.
    pub fn add(&mut self, config: &ServiceConfig) -> ServiceId {
        self.service_ids = self.service_ids.saturating_add(1);
        let id = ServiceId(self.service_ids);
        let initial = if config.flags.autoload {
            Availability::Starting
        } else {
            Availability::Idle
        };
        self.services.insert(
            id,
            ServiceEntry {
                config: config.clone(),
                state: watch::Sender::new(initial),
                demand: Arc::new(Notify::new()),
                last_active: Instant::now(),
            },
        );
        id
    }

    /// A service's configuration changed (on reload); its id stays.
    pub fn update(&mut self, id: ServiceId, config: &ServiceConfig) {
        if let Some(s) = self.services.get_mut(&id) {
            s.config = config.clone();
        }
    }

    /// A service left the configuration (on reload); it must be stopped already.
    pub fn remove(&mut self, id: ServiceId) {
        self.services.remove(&id);
    }

    /// The service.
    pub fn get(&self, id: ServiceId) -> Option<&ServiceEntry> {
        self.services.get(&id)
    }

    /// The service a `ServiceOpen` names: by id or by name (case ignored), exactly one.
    pub fn find(&self, id: Option<ServiceId>, name: Option<&str>) -> Result<ServiceId, Failure> {
        match (id, name) {
            (Some(_), Some(_)) => Err(Failure::new(
                ErrorCode::InvalidArgument,
                "data/serviceId, data/serviceName: give one of them, not both",
            )),
            (None, None) => Err(Failure::new(
                ErrorCode::InvalidArgument,
                "data/serviceId, data/serviceName: one of them is needed",
            )),
            (Some(id), None) => self
                .services
                .contains_key(&id)
                .then_some(id)
                .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no service {id}"))),
            (None, Some(name)) => self
                .services
                .iter()
                .find(|(_, s)| s.config.name.eq_ignore_ascii_case(name))
                .map(|(id, _)| *id)
                .ok_or_else(|| {
                    Failure::new(ErrorCode::NotFound, format!("no service named '{name}'"))
                }),
        }
    }

    /// Changes a service's availability; the previous one.
    pub fn set_availability(&mut self, id: ServiceId, state: Availability) -> Option<Availability> {
        let entry = self.services.get_mut(&id)?;
        entry.last_active = Instant::now();
        Some(entry.state.send_replace(state))
    }

    /// A request went to the service or came back: it is not idle.
    pub fn touch(&mut self, id: ServiceId) {
        if let Some(s) = self.services.get_mut(&id) {
            s.last_active = Instant::now();
        }
    }

    /// True when the service has had no context (opening or open) and no request for
    /// `limit`: its process may be stopped.
    pub fn is_idle(&self, id: ServiceId, limit: Duration) -> bool {
        let busy = self.contexts.values().any(|c| {
            c.service == id && matches!(c.state, ContextState::Opening | ContextState::Open)
        });
        !busy
            && self
                .services
                .get(&id)
                .is_some_and(|s| s.last_active.elapsed() >= limit)
    }

    /// How many contexts (opening or open) `client` has.
    pub fn contexts_of(&self, client: ClientId) -> usize {
        self.contexts
            .values()
            .filter(|c| c.client == client)
            .count()
    }

    /// A new context of `client` with `service`, opening.
    pub fn open_context(&mut self, service: ServiceId, client: ClientId) -> ContextId {
        self.context_ids = self.context_ids.saturating_add(1);
        let id = ContextId(self.context_ids);
        self.contexts.insert(
            id,
            ContextEntry {
                client,
                service,
                state: ContextState::Opening,
            },
        );
        self.touch(service);
        id
    }

    /// The service accepted the context. False when it is gone meanwhile (its client left
    /// or the service stopped): the caller closes it in the service.
    pub fn context_opened(&mut self, id: ContextId) -> bool {
        match self.contexts.get_mut(&id) {
            Some(c) if c.state == ContextState::Opening => {
                c.state = ContextState::Open;
                true
            }
            _ => false,
        }
    }

    /// The open failed: the context is forgotten.
    pub fn forget_context(&mut self, id: ContextId) {
        self.contexts.remove(&id);
    }

    /// Checks that `client` has `context` open with `service`; a lost context is code 8,
    /// anything else that is not right code 3.
    pub fn check_context(
        &self,
        client: ClientId,
        service: ServiceId,
        context: ContextId,
    ) -> Result<(), Failure> {
        let not_found = || {
            Failure::new(
                ErrorCode::NotFound,
                format!("no open context {context} of service {service}"),
            )
        };
        let entry = self.contexts.get(&context).ok_or_else(not_found)?;
        if entry.client != client || entry.service != service {
            return Err(not_found());
        }
        match &entry.state {
            ContextState::Open => Ok(()),
            ContextState::Opening => Err(not_found()),
            ContextState::Lost(why) => Err(Failure::new(
                ErrorCode::DriverError,
                format!("context {context} was lost: {why}"),
            )),
        }
    }

    /// `client` closes `context`: it is forgotten. `Ok(true)` when it was open (the
    /// service is to be told), `Ok(false)` when it was lost already.
    pub fn close_context(
        &mut self,
        client: ClientId,
        service: ServiceId,
        context: ContextId,
    ) -> Result<bool, Failure> {
        match self.check_context(client, service, context) {
            Ok(()) => {
                self.contexts.remove(&context);
                self.touch(service);
                Ok(true)
            }
            Err(f) if f.code == ErrorCode::DriverError => {
                self.contexts.remove(&context);
                Ok(false)
            }
            Err(f) => Err(f),
        }
    }

    /// The client left: its contexts are forgotten; the open ones are returned, to be
    /// closed in their services.
    pub fn remove_client(&mut self, client: ClientId) -> Vec<Orphan> {
        let ids: Vec<ContextId> = self
            .contexts
            .iter()
            .filter(|(_, c)| c.client == client)
            .map(|(id, _)| *id)
            .collect();
        let mut orphans = Vec::new();
        for id in ids {
            if let Some(c) = self.contexts.remove(&id) {
                if c.state == ContextState::Open {
                    let link = match self.services.get(&c.service).map(|s| s.availability()) {
                        Some(Availability::Up(link)) => Some(link),
                        _ => None,
                    };
                    orphans.push(Orphan {
                        service: c.service,
                        context: id,
                        link,
                    });
                }
            }
        }
        orphans
    }

    /// The service stopped: its contexts are lost (`why`); how many.
    pub fn lose_contexts(&mut self, service: ServiceId, why: &str) -> usize {
        let mut n = 0;
        for c in self.contexts.values_mut() {
            if c.service == service && !matches!(c.state, ContextState::Lost(_)) {
                c.state = ContextState::Lost(why.to_owned());
                n += 1;
            }
        }
        n
    }

    /// Every service, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (ServiceId, &ServiceEntry)> {
        self.services.iter().map(|(id, s)| (*id, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServiceFlags;
    use chipcard_ipc::Group;

    fn config(name: &str, autoload: bool) -> ServiceConfig {
        ServiceConfig {
            service_type: "cardinfo".into(),
            name: name.into(),
            flags: ServiceFlags {
                autoload,
                silent: false,
            },
            idle_timeout: Duration::from_secs(60),
            group: Group::new("config"),
        }
    }

    #[test]
    fn services_are_found_by_exactly_one_of_id_and_name() {
        let mut t = ServiceTable::default();
        let a = t.add(&config("cardinfo", false));
        let b = t.add(&config("other", true));
        assert_eq!(t.find(None, Some("CARDINFO")).ok(), Some(a));
        assert_eq!(t.find(Some(b), None).ok(), Some(b));
        let code = |r: Result<ServiceId, Failure>| r.map_err(|f| f.code);
        assert_eq!(
            code(t.find(Some(a), Some("cardinfo"))),
            Err(ErrorCode::InvalidArgument)
        );
        assert_eq!(code(t.find(None, None)), Err(ErrorCode::InvalidArgument));
        assert_eq!(
            code(t.find(Some(ServiceId(9)), None)),
            Err(ErrorCode::NotFound)
        );
        assert_eq!(code(t.find(None, Some("nope"))), Err(ErrorCode::NotFound));
        assert!(matches!(
            t.get(a).map(|s| s.availability()),
            Some(Availability::Idle)
        ));
        assert!(matches!(
            t.get(b).map(|s| s.availability()),
            Some(Availability::Starting)
        ));
    }

    #[test]
    fn contexts_belong_to_their_client_and_are_lost_with_their_service() {
        let mut t = ServiceTable::default();
        let s = t.add(&config("cardinfo", true));
        let (alice, bob) = (ClientId(1), ClientId(2));
        let c1 = t.open_context(s, alice);
        assert_eq!(
            t.check_context(alice, s, c1).map_err(|f| f.code),
            Err(ErrorCode::NotFound),
            "not before the service accepted it"
        );
        assert!(t.context_opened(c1));
        assert!(t.check_context(alice, s, c1).is_ok());
        assert_eq!(
            t.check_context(bob, s, c1).map_err(|f| f.code),
            Err(ErrorCode::NotFound)
        );
        assert_eq!(
            t.check_context(alice, ServiceId(7), c1).map_err(|f| f.code),
            Err(ErrorCode::NotFound)
        );
        assert!(
            !t.is_idle(s, Duration::ZERO),
            "an open context keeps it busy"
        );
        assert_eq!(t.lose_contexts(s, "service crashed"), 1);
        assert_eq!(t.lose_contexts(s, "again"), 0);
        let lost = t.check_context(alice, s, c1).expect_err("lost");
        assert_eq!(lost.code, ErrorCode::DriverError);
        assert!(lost.text.contains("service crashed"), "{}", lost.text);
        assert_eq!(t.close_context(alice, s, c1).ok(), Some(false));
        assert!(t.is_idle(s, Duration::ZERO));
        let c2 = t.open_context(s, bob);
        assert!(c2 > c1, "ids are not reused");
        assert!(t.context_opened(c2));
        let c3 = t.open_context(s, bob);
        let orphans = t.remove_client(bob);
        assert_eq!(
            orphans.len(),
            1,
            "only open contexts are closed in the service"
        );
        assert_eq!(orphans[0].context, c2);
        assert!(!t.context_opened(c3), "gone with its client");
    }
}
